"""Camera frames taken by processes of their own (``intake_processes``), not by the scheduler node's process.

Why: rclpy's executor runs Python at every received message: it rebuilds its wait set from every entity of the
node (each subscription, timer, service, and each publisher's and subscription's event handler) and walks it. At 48
JPEG cameras at 30 Hz on an H100 that held the node's interpreter lock (the GIL) about two thirds of the time
(py-spy ``--gil``, docs/benchmarks/node_e2e/README.md, session 15), and the engine's loop, which needs the GIL back
after every CUDA call, got about a tenth of it: 0.03% of HP frames served.

How: :class:`ProcessIntake` (in the node) starts ``processes`` children (``python -m daris_ros.ros.intake_process``),
each an rclpy node ``<node>_intake_<k>`` in the node's namespace that subscribes, raw, to its share of the camera
topics (fully resolved by the node, so remappings hold). A child checks each frame as the node would
(:func:`~daris_ros.ros.frame_checks.check_frame`: header, size, format, stamp; no pixel decoded) and writes it to
a pipe: the CDR bytes of a good frame with when it arrived, or the reason a bad one is dropped. In the node, one
thread per child reads the pipe and hands each frame to the node (``on_frame``: into the engine's inbox) or its
drop (``on_drop``: counted by reason, like any frame dropped at arrival). So the node's process runs a few lines of
Python per frame, and its executor wakes only for its timers and services.

Children are told what to do on their stdin, one JSON object per line (``sub``, ``unsub``, ``checks``, ``stop``).
A child that dies is started again with its subscriptions (``restarts`` counts them); frames sent to it meanwhile
are not received (lost in transport, as for a node that restarts). A child whose stdin closes (the node died) stops.

Wire format, child to node: records of ``ros/frame_pipe.py`` (a frame with its subscription id, arrival times and
CDR bytes; a frame refused with its reason; an error, such as a subscription that could not be made).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, TextIO

from daris_ros.ros.frame_checks import FrameChecks, check_frame
from daris_ros.ros.frame_pipe import DROP, ERROR, FRAME, FrameReader, widen_pipe, write_record
from daris_ros.runtime.frames import FrameError

log = logging.getLogger(__name__)

#: A child that died is started again at most this often (s).
RESTART_INTERVAL = 1.0


@dataclass(frozen=True, slots=True)
class CameraSubscription:
    """One camera topic as a child subscribes to it."""

    topic: str  # fully resolved
    compressed: bool  # sensor_msgs/CompressedImage, else sensor_msgs/Image
    depth: int
    reliable: bool


# -- the node's side ----------------------------------------------------------------------------------------------
class _Child:
    """One intake process, the pipe its frames come on and the thread that reads it."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.proc: subprocess.Popen[str] | None = None
        self.frames: FrameReader | None = None
        self.reader: threading.Thread | None = None
        self.subscriptions: dict[int, CameraSubscription] = {}
        self.started_at = 0.0


class ProcessIntake:
    """``processes`` intake children of one node. ``on_frame(key, cdr, arrival_monotonic_s, ros_now_ns)`` gets every
    checked frame, ``on_drop(key, reason, message)`` every frame a child refused; both are called from the
    readers' threads. :meth:`close` (idempotent) stops the children."""

    def __init__(self, *, processes: int, node_name: str, namespace: str, sim_time: bool, checks: FrameChecks,
                 on_frame: Callable[[str, memoryview, float, int], None],
                 on_drop: Callable[[str, str, str], None], on_error: Callable[[str], object] | None = None) -> None:
        if processes < 1:
            raise ValueError(f"intake_processes must be >= 1, got {processes}")
        self._node_name = node_name
        self._namespace = namespace or "/"
        self._sim_time = sim_time
        self._checks = checks
        self._on_frame = on_frame
        self._on_drop = on_drop
        self._on_error: Callable[[str], object] = on_error if on_error is not None else log.error
        self._lock = threading.Lock()
        self._children = [_Child(i) for i in range(processes)]
        self._keys: dict[int, str] = {}  # subscription id -> key (the node's task)
        self._ids: dict[str, tuple[int, int]] = {}  # key -> (child index, subscription id)
        self._next_id = 1
        self._closing = False
        self.restarts = 0

    def subscribe(self, key: str, sub: CameraSubscription) -> None:
        """Frames of ``sub.topic`` from now on, as ``key`` (replaces an earlier subscription of ``key``)."""
        self.unsubscribe(key)
        with self._lock:
            if self._closing:
                raise RuntimeError("the camera intake is closed")
            child = min(self._children, key=lambda c: len(c.subscriptions))
            sub_id = self._next_id
            self._next_id = 1 + self._next_id % 65535
            child.subscriptions[sub_id] = sub
            self._keys[sub_id] = key
            self._ids[key] = (child.index, sub_id)
            if child.proc is None:
                self._start(child)
            else:
                self._tell(child, {"op": "sub", "id": sub_id, **asdict(sub)})

    def unsubscribe(self, key: str) -> None:
        """No frame of ``key`` is handed out after this returns."""
        with self._lock:
            entry = self._ids.pop(key, None)
            if entry is None:
                return
            index, sub_id = entry
            self._keys.pop(sub_id, None)
            child = self._children[index]
            child.subscriptions.pop(sub_id, None)
            if child.proc is not None:
                self._tell(child, {"op": "unsub", "id": sub_id})

    def set_checks(self, checks: FrameChecks) -> None:
        with self._lock:
            self._checks = checks
            for child in self._children:
                if child.proc is not None:
                    self._tell(child, {"op": "checks", **asdict(checks)})

    def close(self, timeout: float = 3.0) -> None:
        with self._lock:
            if self._closing:
                return
            self._closing = True
            children = [c for c in self._children if c.proc is not None]
            for child in children:
                self._tell(child, {"op": "stop"})
        for child in children:
            assert child.proc is not None
            try:
                child.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                child.proc.kill()
                child.proc.wait()
            if child.proc.stdin is not None:
                child.proc.stdin.close()
            if child.reader is not None and child.reader is not threading.current_thread():
                child.reader.join(timeout)

    # (with the lock held)
    def _start(self, child: _Child) -> None:
        read_fd, write_fd = os.pipe()
        widen_pipe(write_fd)
        ns = self._namespace
        cmd = [sys.executable, "-P", "-m", __name__, "--name", f"{self._node_name}_intake_{child.index}",
               "--namespace", ns, "--frames-fd", str(write_fd)]
        if self._sim_time:
            cmd.append("--sim-time")
        try:
            child.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, pass_fds=(write_fd,), text=True)
        finally:
            os.close(write_fd)
        child.frames = FrameReader(read_fd)
        child.started_at = time.monotonic()
        self._tell(child, {"op": "checks", **asdict(self._checks)})
        for sub_id, sub in child.subscriptions.items():
            self._tell(child, {"op": "sub", "id": sub_id, **asdict(sub)})
        child.reader = threading.Thread(target=self._read, args=(child, child.proc, child.frames),
                                        name=f"daris-intake-{child.index}", daemon=True)
        child.reader.start()

    @staticmethod
    def _tell(child: _Child, command: dict[str, Any]) -> None:
        assert child.proc is not None
        stdin = child.proc.stdin
        if stdin is None:
            return
        try:
            stdin.write(json.dumps(command) + "\n")
            stdin.flush()
        except (BrokenPipeError, OSError, ValueError):  # (dead: its reader starts it again)
            pass

    # (the reader threads)
    def _read(self, child: _Child, proc: subprocess.Popen[str], frames: FrameReader) -> None:
        keys = self._keys
        on_frame, on_drop = self._on_frame, self._on_drop
        try:
            while True:
                record = frames.read()
                if record.kind == FRAME:
                    key = keys.get(record.sub_id)
                    if key is not None:
                        on_frame(key, record.payload, record.arrival, record.ros_ns)
                elif record.kind == DROP:
                    key = keys.get(record.sub_id)
                    if key is not None:
                        reason, _, message = str(record.payload, "utf-8", "replace").partition("\0")
                        on_drop(key, reason, message)
                else:
                    self._on_error(f"camera intake {child.index}: {str(record.payload, 'utf-8', 'replace')}")
        except EOFError:
            pass
        except OSError as exc:
            if not self._closing:
                self._on_error(f"camera intake {child.index}: reading its pipe failed: {exc}")
        except Exception as exc:  # noqa: BLE001 - a callback's bug: say it, the child is started again below
            self._on_error(f"camera intake {child.index}: handing a frame to the node failed: "
                           f"{type(exc).__name__}: {exc}")
            proc.kill()
        frames.close()
        code = proc.poll()
        if code is None:
            try:
                code = proc.wait(2.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
        with self._lock:
            if self._closing or child.proc is not proc:
                return
            self._on_error(f"camera intake {child.index} (pid {proc.pid}) stopped with exit code {code}; starting it "
                           f"again with its {len(child.subscriptions)} subscription(s)")
            wait = RESTART_INTERVAL - (time.monotonic() - child.started_at)
        if wait > 0:
            time.sleep(wait)
        with self._lock:
            if self._closing or child.proc is not proc:
                return
            self.restarts += 1
            self._start(child)


# -- the child ----------------------------------------------------------------------------------------------------
class _Intake:
    """The child: an rclpy node whose camera subscriptions write checked frames to the node's pipe."""

    def __init__(self, node: Any, frames_fd: int) -> None:
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CompressedImage, Image

        self._qos = (QoSProfile, DurabilityPolicy, HistoryPolicy, ReliabilityPolicy)
        self._types = {True: CompressedImage, False: Image}
        self.node = node
        self.frames_fd = frames_fd
        self.checks = FrameChecks(0, 0.0, 0.0)
        self.subscriptions: dict[int, Any] = {}
        self._commands: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._guard = node.create_guard_condition(self._apply)  # (commands run in the executor's thread)
        self.broken = False

    def command(self, command: dict[str, Any]) -> None:
        """From the stdin thread: run ``command`` in the executor's thread."""
        with self._lock:
            self._commands.append(command)
        self._guard.trigger()

    def _apply(self) -> None:
        with self._lock:
            commands, self._commands = self._commands, []
        for command in commands:
            op = command.get("op")
            if op == "checks":
                self.checks = FrameChecks(int(command["max_pixels"]), float(command["stamp_future_tolerance"]),
                                          float(command["stamp_past_tolerance"]))
            elif op == "sub":
                self._subscribe(int(command["id"]), CameraSubscription(
                    str(command["topic"]), bool(command["compressed"]), int(command["depth"]),
                    bool(command["reliable"])))
            elif op == "unsub":
                sub = self.subscriptions.pop(int(command["id"]), None)
                if sub is not None:
                    self.node.destroy_subscription(sub)

    def _subscribe(self, sub_id: int, sub: CameraSubscription) -> None:
        qos_profile, durability, history, reliability = self._qos
        qos = qos_profile(depth=sub.depth, history=history.KEEP_LAST, durability=durability.VOLATILE,
                          reliability=reliability.RELIABLE if sub.reliable else reliability.BEST_EFFORT)

        def on_frame(raw: bytes, sub_id: int = sub_id, compressed: bool = sub.compressed) -> None:
            self._on_frame(sub_id, compressed, raw)

        try:
            self.subscriptions[sub_id] = self.node.create_subscription(
                self._types[sub.compressed], sub.topic, on_frame, qos, raw=True)
        except Exception as exc:  # noqa: BLE001 - an invalid topic name: the node hears why
            self._send(ERROR, sub_id, f"cannot subscribe to {sub.topic!r}: {exc}".encode())

    def _on_frame(self, sub_id: int, compressed: bool, raw: bytes) -> None:
        arrival = time.monotonic()
        now_ns = self.node.get_clock().now().nanoseconds
        try:
            check_frame(raw, compressed, self.checks, now_ns)
        except FrameError as exc:
            self._send(DROP, sub_id, f"{exc.reason}\0{exc}".encode())
            return
        except Exception as exc:  # noqa: BLE001 - whatever a frame holds, it is counted, not fatal
            self._send(DROP, sub_id, f"invalid\0{type(exc).__name__}: {exc}".encode())
            return
        self._send(FRAME, sub_id, raw, arrival, now_ns)

    def _send(self, kind: int, sub_id: int, payload: bytes, arrival: float = 0.0, ros_ns: int = 0) -> None:
        if self.broken:
            return
        try:
            write_record(self.frames_fd, kind, sub_id, payload, arrival, ros_ns)
        except OSError:  # the node is gone
            self.broken = True


def _read_commands(stdin: TextIO, intake: _Intake, stop: Callable[[], None]) -> None:
    for line in stdin:
        line = line.strip()
        if not line:
            continue
        command = json.loads(line)
        if command.get("op") == "stop":
            break
        intake.command(command)
    stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m daris_ros.ros.intake_process",
                                description="A camera intake process of the scheduler node (started by it).")
    p.add_argument("--name", required=True)
    p.add_argument("--namespace", default="/")
    p.add_argument("--frames-fd", type=int, required=True)
    p.add_argument("--sim-time", action="store_true")
    args = p.parse_args(argv)
    import signal

    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from rclpy.parameter import Parameter
    from rclpy.signals import SignalHandlerOptions

    # Ctrl-C reaches the whole process group: the node stops its children itself (stop, or stdin closed)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    rclpy.init(args=[], signal_handler_options=SignalHandlerOptions.NO)
    try:
        node = rclpy.create_node(args.name, namespace=args.namespace, parameter_overrides=[
            Parameter("use_sim_time", Parameter.Type.BOOL, args.sim_time)])
        intake = _Intake(node, args.frames_fd)
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        threading.Thread(target=_read_commands, args=(sys.stdin, intake, rclpy.try_shutdown), daemon=True,
                         name="commands").start()
        try:
            while rclpy.ok() and not intake.broken:
                executor.spin_once(timeout_sec=0.5)
        except (KeyboardInterrupt, ExternalShutdownException):
            pass
        executor.shutdown()
        node.destroy_node()
    finally:
        rclpy.try_shutdown()
        os.close(args.frames_fd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
