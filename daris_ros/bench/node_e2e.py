"""The scheduler node end to end over DDS (issue 14's acceptance), judged from outside, against per-camera nodes.

    daris-node-e2e --cameras 48 --precision fp16 --out DIR                  one run of the scheduler node
    daris-node-e2e --sweep 12,24,36,48 --systems node,per-camera --out DIR  the largest camera count each serves
    daris-node-e2e --combine A/node_e2e.json B/node_e2e.json --out DIR      runs of several calls in one report

Scenario: N cameras in groups (default per 12: 4 HP front cameras on ResNet50, 4 LP side cameras on ResNet18, 4 LP
rear cameras on UNet; ``--group PRIORITY:MODEL:COUNT[:HxW],...``, any model the node runs: classifiers, segmenters,
detectors; ``HxW`` the group's model input size, else ``--input-size``, else the model's), every camera a JPEG
``CompressedImage`` of ``--width`` x ``--height`` at ``--rate`` Hz, the task's rate the camera's and its deadline
the period. Every task publishes an ``InferenceResult`` per job (detectors and segmenters too, besides their
detections and masks), which is what the readers read. The vehicle perception set (config/vehicle_perception.yaml)::

    daris-node-e2e --cameras 6 --lp-rate 15 --backend str --policy STR --contexts 1 --streams 3 --os 1 \
        --precision fp16 --channels-last --batching --batch-sizes 1,2,4 \
        --group HP:ssdlite320_mobilenet_v3_large:2:320x320,LP:lraspp_mobilenet_v3_large:2:288x512,LP:resnet18:2

Systems under test (``--system(s)``):

- ``node``: the installed ``scheduler_node`` with a parameter file written to the run's folder (backend, contexts,
  OS, batching, precision, launch-ahead: options);
- ``per-camera``: one process per camera (:mod:`daris_ros.bench.per_camera_node`) running its model on every frame.

Every other part runs in processes of its own, as on a vehicle: camera publishers (``--cameras-per-publisher``
cameras each, pre-encoded frames, ``header.stamp`` = ROS time at publish, each camera on its own phase) and result
readers (``--topics-per-reader`` result topics each, a SingleThreadedExecutor; one more for ``/daris/stats``). All of
them use ``config/fastdds_large_frames.xml`` unless Fast DDS is configured already. The publishers start together
once the system has subscribed; they publish for ``--warmup`` + ``--seconds``; the window is the last ``--seconds``.

Judged from outside, the same for both systems: an HP frame is served when its result reaches a reader within 2 task
periods of the image stamp. ``hp_served`` = served HP results / HP frames published in the window (stamps in it);
``hp_missed`` = HP results read with ``met`` false (the system's own flag); ``hp_e2e_p99_ms`` = p99 of receipt -
stamp over HP results in the window; ``lp_dmr`` (``hp_dmr``) = LP (HP) results read with ``met`` false / LP (HP)
jobs released (the node's own TaskStats ``released``, summed over the tasks; per-camera nodes: their results), both
over the whole run (warm-up included; an LP release that admission rejected has no result and counts as released
but not missed: ``lp_rejected``); ``frames_lost_in_transport`` = frames published - frames the system received;
``frames_uncounted`` = received frames not accounted for: for the node, from its final TaskStats (read after the
publishers stopped, before it stops), ``frames - (released + superseded + dropped + pending)`` per task, summed as
absolute values; for per-camera nodes, received - processed - failed. ``reader_delay_p99_ms`` (receipt - the
result's finish time) says whether the readers kept up; ``cpu_cores`` is the CPU time of the system's processes
(the node and its children, or every per-camera process) over the window, per second; ``gpu_mem_gb`` the device
memory they use (per process from nvidia-smi where it shows the processes, else the device's used memory against
the value before the system started; 0 without a GPU).

Each run's folder (``--out``/runs/<system>_<N>) keeps the parameter file, every process's log and output, and
``run.json``; ``node_e2e.json`` (every run, the command, commit, device, date, the largest count at which each
system serves >= ``--served-target`` of HP frames) and ``node_e2e.md`` are rewritten after every run, and each run
prints one JSON line.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import queue
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import yaml

DEFAULT_GROUP = "HP:resnet50:4,LP:resnet18:4,LP:unet:4"
SYSTEMS = ("node", "per-camera")
NS = 1_000_000_000


# -- scenario ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Camera:
    index: int
    task: str
    priority: str  # HP | LP
    model: str
    rate: float
    topic: str
    result_topic: str
    input_size: tuple[int, int] | None = None  # the group's model input (H, W); None: --input-size or the model's

    @property
    def period(self) -> float:
        return 1.0 / self.rate


class GroupEntry(NamedTuple):
    """One entry of ``--group``: ``cameras`` cameras of ``priority`` running ``model`` (at ``input_size``)."""

    priority: str  # HP | LP
    model: str
    cameras: int
    input_size: tuple[int, int] | None = None  # (H, W); None: --input-size, else the model's default


def parse_group(spec: str) -> list[GroupEntry]:
    """``"HP:ssdlite320_mobilenet_v3_large:2:320x320,LP:resnet18:4"`` -> [GroupEntry, ...] (the input size
    ``HxW`` is optional)."""
    out = []
    for part in spec.split(","):
        fields = part.strip().split(":")
        if len(fields) not in (3, 4):
            raise ValueError(f"group entry {part!r}: expected PRIORITY:MODEL:COUNT or PRIORITY:MODEL:COUNT:HxW")
        prio, model, count = fields[0].upper(), fields[1].strip(), int(fields[2])
        if prio not in ("HP", "LP") or not model or count < 1:
            raise ValueError(f"group entry {part!r}: priority HP or LP, a model, a count >= 1")
        size = parse_size(fields[3]) if len(fields) == 4 else None
        if len(fields) == 4 and size is None:
            raise ValueError(f"group entry {part!r}: the input size is HxW, e.g. 320x320")
        out.append(GroupEntry(prio, model, count, None if size is None else (size[0], size[1])))
    return out


def make_cameras(n: int, group: Sequence[GroupEntry], rate: float, lp_rate: float | None = None,
                 prefix: str = "/e2e") -> list[Camera]:
    """``n`` cameras, whole groups only; task ``cam07_lp_resnet18`` reads ``/e2e/cam07/image/compressed``."""
    size = sum(g.cameras for g in group)
    if n < 1 or n % size:
        raise ValueError(f"--cameras {n} must be a positive multiple of the group size {size}")
    cams: list[Camera] = []
    for _ in range(n // size):
        for g in group:
            for _ in range(g.cameras):
                i = len(cams)
                name = f"cam{i:02d}_{g.priority.lower()}_{g.model.lower()}"
                cams.append(Camera(i, name, g.priority, g.model, rate if g.priority == "HP" or not lp_rate else lp_rate,
                                   f"{prefix}/cam{i:02d}/image/compressed", f"/daris/{name}/result", g.input_size))
    return cams


def parse_size(text: str | None) -> list[int] | None:
    """``"224x224"`` (height x width) -> [224, 224]; empty: the model's default."""
    if not text:
        return None
    h, _, w = text.lower().partition("x")
    try:
        size = [int(h), int(w or h)]
    except ValueError:
        raise ValueError(f"input size {text!r}: expected HxW, e.g. 224x224") from None
    if min(size) < 1:
        raise ValueError(f"input size {text!r}: both sides must be >= 1")
    return size


def camera_input_size(c: Camera, default: list[int] | None) -> list[int] | None:
    """A camera's model input [H, W]: its group's, else ``--input-size``'s (``default``), else None (the model's)."""
    return list(c.input_size) if c.input_size is not None else (list(default) if default else None)


def node_params(args: argparse.Namespace, cams: Sequence[Camera]) -> dict[str, Any]:
    """The scheduler node's parameter file (``/**/daris_scheduler: ros__parameters:``)."""
    p: dict[str, Any] = {
        "policy": args.policy, "backend": args.backend, "device": args.device, "n_contexts": args.contexts,
        "n_streams": args.streams, "oversubscription": args.os, "stats_period": args.stats_period,
        "profile_runs": args.profile_runs, "batching": args.batching, "launch_ahead": args.launch_ahead,
    }
    if args.batch_sizes:
        p["batch_sizes"] = [int(v) for v in args.batch_sizes.split(",")]
    for item in args.param or ():
        key, _, value = item.partition("=")
        p[key.strip()] = yaml.safe_load(value)
    default_size = parse_size(args.input_size)
    tasks = {}
    for c in cams:
        t: dict[str, Any] = {"topic": c.topic, "priority": c.priority, "rate": c.rate, "model": c.model,
                             "input_type": "compressed", "precision": args.precision, "output_topic": c.result_topic}
        if args.channels_last:
            t["channels_last"] = True
        size = camera_input_size(c, default_size)  # (a new list per task: no YAML anchors in the parameter file)
        if size:
            t["input_size"] = size
        tasks[c.task] = t
    p["task_names"] = [c.task for c in cams]
    p["tasks"] = tasks
    return {"/**/daris_scheduler": {"ros__parameters": p}}


def chunks(items: Sequence[Any], size: int) -> list[list[Any]]:
    size = max(1, size)
    return [list(items[i:i + size]) for i in range(0, len(items), size)]


def percentile(values: Iterable[float], p: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    s = sorted(values)
    if not s:
        return None
    return s[max(0, math.ceil(p / 100.0 * len(s)) - 1)]


def _ms(ns: float | None) -> float | None:
    return None if ns is None else round(ns / 1e6, 2)


# -- child processes -------------------------------------------------------------------------------------------
def child_env() -> dict[str, str]:
    """This process's environment, with the package's large-frame Fast DDS profile unless one is configured."""
    env = dict(os.environ)
    if not (env.get("FASTDDS_DEFAULT_PROFILES_FILE") or env.get("FASTDDS_BUILTIN_TRANSPORTS")):
        from ament_index_python.packages import get_package_share_directory

        env["FASTDDS_DEFAULT_PROFILES_FILE"] = os.path.join(get_package_share_directory("daris_ros"), "config",
                                                            "fastdds_large_frames.xml")
    env.setdefault("RCUTILS_LOGGING_BUFFERED_STREAM", "1")
    return env


class Child:
    """A process of the harness: ``@@WORD`` lines on its stdout are events, everything else goes to its log;
    commands go to its stdin."""

    def __init__(self, name: str, cmd: list[str], log: Path, env: dict[str, str], cwd: Path) -> None:
        self.name = name
        self.log_path = log
        self._log = open(log, "w")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
                                     text=True, bufsize=1, env=env, cwd=cwd, start_new_session=True)
        self.events: queue.Queue[str] = queue.Queue()
        self.seen: set[str] = set()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("@@"):
                self.events.put(line[2:].strip())
            else:
                self._log.write(line)
        self.events.put("EXIT")

    def wait(self, event: str, deadline: float) -> bool:
        """Whether ``event`` came (before the monotonic ``deadline``); False also when the process ended."""
        while event not in self.seen:
            try:
                e = self.events.get(timeout=max(0.0, min(0.2, deadline - time.monotonic())))
            except queue.Empty:
                if time.monotonic() >= deadline:
                    return False
                continue
            self.seen.add(e)
            if e == "EXIT" and event != "EXIT":
                return False
        return True

    def send(self, line: str) -> None:
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            pass

    def close(self, timeout: float = 10.0) -> int | None:
        if self.proc.poll() is None:
            self.send("STOP")
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(2)
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        self._thread.join(2.0)
        self._log.close()
        return self.proc.returncode

    def tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def _module_cmd(module: str, spec: Path) -> list[str]:
    # -P: the working tree's daris_ros (no generated messages) must not shadow the installed one
    return [sys.executable, "-P", "-m", module, "--spec", str(spec)]


def _stdin_lines() -> queue.Queue[str]:
    """Lines of stdin (commands of the orchestrator), read by a thread; EOF reads as STOP."""
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        for line in sys.stdin:
            lines.put(line.strip())
        lines.put("STOP")

    threading.Thread(target=read, daemon=True).start()
    return lines


def _next_command(lines: queue.Queue[str]) -> list[str]:
    while True:
        words = lines.get().split()
        if words:
            return words


# -- publisher role ----------------------------------------------------------------------------------------------
def publisher_main(spec: dict[str, Any]) -> int:
    """Cameras of one process: pre-encoded JPEGs, published on each camera's own phase from START's t0 until t1."""
    import array
    import heapq
    import random

    import numpy as np
    import rclpy
    from rclpy.node import Node
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import CompressedImage

    from daris_ros.bags.synth import FrameRenderer, encode_compressed

    rclpy.init(args=[])
    node = Node(f"e2e_publisher_{spec['id']}")
    w, h, n_frames = int(spec["width"]), int(spec["height"]), max(1, int(spec.get("frames", 4)))
    noise = int(spec.get("noise", 0))
    cams = []
    for c in spec["cameras"]:
        renderer = FrameRenderer(w, h, camera=c["index"], seed=int(spec.get("seed", 0)))
        pixels = np.random.default_rng([int(spec.get("seed", 0)), c["index"]])
        msgs = []
        for k in range(n_frames):
            rgb = renderer.rgb(k * 7)
            if noise > 0:  # camera-like detail: a JPEG of about the size a real 720p frame has (--noise)
                rgb = np.clip(rgb.astype(np.int16) + pixels.integers(-noise, noise + 1, rgb.shape, dtype=np.int16),
                              0, 255).astype(np.uint8)
            data = encode_compressed(rgb, "jpeg", quality=int(spec.get("quality", 85)))
            m = CompressedImage(format="jpeg")
            m.header.frame_id = f"{c['task']}_optical_frame"
            m.data = array.array("B", data)
            msgs.append(m)
        pub = node.create_publisher(CompressedImage, c["topic"], qos_profile_sensor_data)
        cams.append({"task": c["task"], "topic": c["topic"], "period": 1.0 / float(c["rate"]), "pub": pub,
                     "msgs": msgs, "bytes": sum(len(m.data) for m in msgs) // n_frames})
    # ready once every camera has its subscriber (the system under test subscribed: models loaded)
    lines = _stdin_lines()
    while any(node.count_subscribers(c["topic"]) < 1 for c in cams):
        if not lines.empty():  # STOP before the system subscribed
            node.destroy_node()
            rclpy.try_shutdown()
            return 0
        time.sleep(0.1)
    print("@@READY", flush=True)
    cmd = _next_command(lines)
    if cmd[:1] != ["START"]:
        node.destroy_node()
        rclpy.try_shutdown()
        return 0
    t0, t1 = float(cmd[1]), float(cmd[2])
    rng = random.Random(int(spec.get("seed", 0)) * 1000 + int(spec["id"]))
    # each camera on its own phase: frame k of camera i is due at first[i] + k * period (no drift)
    first = [t0 + (rng.uniform(0.0, c["period"]) if spec.get("random_phase", True) else 0.0) for c in cams]
    due = [(first[i], i, 0) for i in range(len(cams))]
    heapq.heapify(due)
    stamps: dict[str, list[int]] = {c["task"]: [] for c in cams}
    lags: list[float] = []
    clock = node.get_clock()
    while due:
        t, i, k = heapq.heappop(due)
        wait = t - time.time()
        if wait > 0:
            time.sleep(wait)
        c = cams[i]
        m = c["msgs"][k % len(c["msgs"])]
        now = clock.now()
        m.header.stamp = now.to_msg()
        c["pub"].publish(m)
        stamps[c["task"]].append(now.nanoseconds)
        lags.append(now.nanoseconds / NS - t)
        nxt = first[i] + (k + 1) * c["period"]
        if nxt < t1:
            heapq.heappush(due, (nxt, i, k + 1))
    out = {"published": stamps, "jpeg_bytes": {c["task"]: c["bytes"] for c in cams},
           "lag_p99_ms": _ms(percentile([v * NS for v in lags], 99)),
           "lag_max_ms": _ms(max(lags) * NS if lags else None)}
    Path(spec["result"]).write_text(json.dumps(out))
    print("@@WROTE", flush=True)  # the harness needs only this; the teardown below may hang in DDS under load
    node.destroy_node()
    rclpy.try_shutdown()
    print("@@DONE", flush=True)
    return 0


# -- reader role -------------------------------------------------------------------------------------------------
def message_dict(msg: Any) -> Any:
    """A ROS message as plain JSON values."""
    if hasattr(msg, "get_fields_and_field_types"):
        return {f: message_dict(getattr(msg, f)) for f in msg.get_fields_and_field_types()}
    if isinstance(msg, list | tuple):
        return [message_dict(v) for v in msg]
    if hasattr(msg, "tolist"):
        return msg.tolist()
    return msg


def reader_main(spec: dict[str, Any]) -> int:
    """Result topics (and optionally /daris/stats) of one process, on a SingleThreadedExecutor."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

    from daris_ros.msg import InferenceResult, SchedulerStats

    rclpy.init(args=[])
    node = Node(f"e2e_reader_{spec['id']}")
    clock = node.get_clock()
    results: dict[str, list[list[Any]]] = {}
    qos = QoSProfile(depth=100, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)

    def ns(t: Any) -> int:
        return t.sec * NS + t.nanosec

    def on_result(m: Any) -> None:
        receipt = clock.now().nanoseconds
        results.setdefault(m.task, []).append(
            [m.job_id, int(m.priority), bool(m.met), ns(m.header.stamp), receipt, ns(m.finish_time),
             ns(m.receive_time), ns(m.release_time)])

    topics = [t for _, t in spec["topics"]]
    for _, topic in spec["topics"]:
        node.create_subscription(InferenceResult, topic, on_result, qos)
    stats: dict[str, Any] = {"last": None, "count": 0, "loop": []}

    def on_stats(m: Any) -> None:
        stats["last"] = {"received_ns": clock.now().nanoseconds, "stamp_ns": ns(m.header.stamp),
                         "tasks": {t.task: message_dict(t) for t in m.tasks},
                         **{f: message_dict(getattr(m, f)) for f in ("node", "policy", "backend", "device",
                                                                     "n_contexts", "n_streams", "oversubscription",
                                                                     "uptime", "memory_source", "memory_shared",
                                                                     "models", "model_bytes")}}
        stats["count"] += 1
        # (receipt ns, the loop's busy share, its CPU per release): the host's load over the run
        stats["loop"].append([clock.now().nanoseconds, float(m.loop_busy_share), float(m.host_us_per_release)])
        if stats["count"] == 1:
            print("@@STATS", flush=True)

    if spec.get("stats_topic"):
        node.create_subscription(SchedulerStats, spec["stats_topic"], on_stats, 10)
    from daris_ros.bench.per_camera_node import stop_when_told

    stop = stop_when_told()
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    ready = not topics
    if ready:
        print("@@READY", flush=True)
    while not stop.is_set():
        executor.spin_once(timeout_sec=0.1)
        if not ready and all(node.count_publishers(t) >= 1 for t in topics):
            ready = True
            print("@@READY", flush=True)
    print("stop received, writing results", file=sys.stderr, flush=True)
    Path(spec["result"]).write_text(json.dumps({"results": results, "stats": stats["last"],
                                                "stats_messages": stats["count"], "loop": stats["loop"]}))
    print("@@WROTE", flush=True)  # the harness needs only this; the teardown below may be slow under load
    executor.shutdown()
    node.destroy_node()
    rclpy.try_shutdown()
    print("@@DONE", flush=True)
    return 0


# -- resources ---------------------------------------------------------------------------------------------------
def _proc_table() -> dict[int, tuple[int, float]]:
    """pid -> (ppid, utime + stime in seconds) for every process."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # after "pid (comm)": state ppid ... utime(14th field of the whole line) stime(15th)
        out[int(d)] = (int(rest[1]), (int(rest[11]) + int(rest[12])) / tick)
    return out


def tree_cpu(roots: Iterable[int]) -> dict[int, float]:
    """CPU seconds (user + system) of ``roots`` and all their descendants, per pid."""
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    seen: dict[int, float] = {}
    todo = [p for p in roots if p in table]
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen[pid] = table[pid][1]
        todo.extend(children.get(pid, ()))
    return seen


def cores_used(before: dict[int, float], after: dict[int, float], seconds: float) -> float:
    return round(sum(v - before.get(pid, 0.0) for pid, v in after.items()) / max(seconds, 1e-9), 2)


def _nvidia_smi(*query: str) -> list[list[str]]:
    try:
        out = subprocess.run(["nvidia-smi", *query, "--format=csv,noheader,nounits"], capture_output=True, text=True,
                             timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return []
    if out.returncode != 0:
        return []
    return [[v.strip() for v in line.split(",")] for line in out.stdout.splitlines() if line.strip()]


def gpu_index(device: str) -> int | None:
    if not device.startswith("cuda"):
        return None
    _, _, idx = device.partition(":")
    return int(idx or 0)


def gpu_used_mib(index: int | None) -> float | None:
    if index is None:
        return None
    rows = _nvidia_smi("--query-gpu=index,memory.used")
    for r in rows:
        if r and r[0] == str(index):
            return float(r[1])
    return None


def gpu_apps_mib(pids: Iterable[int]) -> float:
    """Device memory nvidia-smi lists for ``pids`` (0 where it cannot see them, e.g. in a container)."""
    wanted = set(pids)
    return sum(float(r[1]) for r in _nvidia_smi("--query-compute-apps=pid,used_memory")
               if len(r) >= 2 and r[0].isdigit() and int(r[0]) in wanted and r[1].replace(".", "").isdigit())


def device_name(device: str) -> str:
    idx = gpu_index(device)
    if idx is not None:
        for r in _nvidia_smi("--query-gpu=index,name"):
            if r and r[0] == str(idx):
                return r[1]
    import platform

    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def git_commit(path: Path) -> str:
    try:
        sha = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(path), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return (sha + ("-dirty" if dirty else "")) if sha else "unknown"


# -- judging -----------------------------------------------------------------------------------------------------
def loop_load(samples: Sequence[Sequence[float]], window: tuple[int, int]) -> dict[str, float | None]:
    """The node engine loop's load over the measuring window, from its SchedulerStats messages (``samples``: receipt
    ns, busy share, CPU us per release): the mean and the largest busy share of the messages received in the window,
    and the CPU per release of the last of them (None without a message in the window)."""
    inside = [s for s in samples if window[0] <= s[0] <= window[1]]
    if not inside:
        return {"loop_busy_share": None, "loop_busy_share_max": None, "host_us_per_release": None}
    shares = [float(s[1]) for s in inside]
    return {"loop_busy_share": round(sum(shares) / len(shares), 3), "loop_busy_share_max": round(max(shares), 3),
            "host_us_per_release": round(float(inside[-1][2]), 1)}


def judge(cams: Sequence[Camera], published: dict[str, list[int]], results: dict[str, list[list[Any]]],
          window: tuple[int, int], node_stats: dict[str, dict[str, Any]] | None = None,
          camera_counts: dict[str, dict[str, int]] | None = None) -> dict[str, Any]:
    """Figures of one run from what was published, what the readers got, and the system's own counters.

    ``results[task]``: [job_id, priority, met, stamp, receipt, finish, receive, release] (ns); ``window``: the
    stamps (ns) that count; ``node_stats``: the node's final TaskStats per task; ``camera_counts``: per-camera
    processes' received/processed/failed."""
    lo, hi = window
    rows = []
    agg: dict[str, dict[str, Any]] = {p: {"frames": 0, "served": 0, "results": 0, "missed": 0, "e2e": [],
                                          "released": 0, "rejected": 0} for p in ("HP", "LP")}
    split: dict[str, list[int]] = {"intake": [], "sampling": [], "response": [], "delivery": []}
    reader_delay: list[int] = []
    totals = {"published": 0, "received": 0, "lost_in_transport": 0, "uncounted": 0, "unmatched": 0,
              "duplicates": 0, "results": 0, "not_read": 0, "superseded": 0, "released": 0, "dropped": 0,
              "pending": 0, "rejected": 0, "stale": 0, "releases_skipped": 0, "hp_superseded": 0}
    for c in cams:
        stamps = published.get(c.task, [])
        stamp_set = set(stamps)
        in_window = sum(1 for s in stamps if lo <= s <= hi)
        limit = 2 * c.period * NS
        seen: set[int] = set()
        served = n_window = missed = unmatched = dup = 0
        e2e = []
        res = results.get(c.task, [])
        for _job, _prio, met, stamp, receipt, finish, receive, release in res:
            if stamp in seen:
                dup += 1
                continue
            seen.add(stamp)
            reader_delay.append(receipt - finish)
            if stamp not in stamp_set:
                unmatched += 1
            if not met:
                missed += 1
            if not lo <= stamp <= hi:
                continue
            n_window += 1
            lat = receipt - stamp
            e2e.append(lat)
            served += lat <= limit
            if c.priority == "HP":
                split["intake"].append(receive - stamp)
                split["sampling"].append(release - receive)
                split["response"].append(finish - release)
                split["delivery"].append(receipt - finish)
        a = agg[c.priority]
        a["frames"] += in_window
        a["served"] += served
        a["results"] += n_window
        a["missed"] += missed
        a["e2e"].extend(e2e)
        row: dict[str, Any] = {"task": c.task, "priority": c.priority, "model": c.model, "rate": c.rate,
                               "published": len(stamps), "frames_in_window": in_window, "results": len(res),
                               "results_in_window": n_window, "served": served,
                               "served_share": round(served / in_window, 4) if in_window else None,
                               "missed": missed, "unmatched": unmatched, "duplicates": dup,
                               "e2e_p50_ms": _ms(percentile(e2e, 50)), "e2e_p99_ms": _ms(percentile(e2e, 99))}
        if node_stats is not None:
            st = node_stats.get(c.task, {})
            received = int(st.get("frames", 0))
            accounted = sum(int(st.get(k, 0)) for k in ("released", "superseded", "dropped", "pending"))
            row.update({k: int(st.get(k, 0)) for k in ("frames", "released", "superseded", "dropped", "pending",
                                                        "rejected", "completed", "stale", "releases_skipped")})
            row["node_missed"] = int(st.get("missed", 0))
            a["released"] += int(st.get("released", 0))
            a["rejected"] += int(st.get("rejected", 0))
            row["frame_age_mean_ms"] = _ms(float(st.get("frame_age_mean", 0.0)) * NS)
            row["intake_lag_mean_ms"] = _ms(float(st.get("intake_lag_mean", 0.0)) * NS)
            done = int(st.get("completed", 0))
            for k in ("superseded", "released", "dropped", "pending", "rejected", "stale", "releases_skipped"):
                totals[k] += int(st.get(k, 0))
            if c.priority == "HP":
                totals["hp_superseded"] += int(st.get("superseded", 0))
        else:
            cc = (camera_counts or {}).get(c.task, {})
            received = int(cc.get("received", 0))
            accounted = int(cc.get("processed", 0)) + int(cc.get("failed", 0))
            done = int(cc.get("processed", 0))
            a["released"] += done  # a per-camera node runs every frame it takes: its results are its releases
            row.update({k: int(cc.get(k, 0)) for k in ("received", "processed", "failed")})
        row["lost_in_transport"] = len(stamps) - received
        row["uncounted"] = received - accounted
        row["not_read"] = done - len(res) + dup
        totals["published"] += len(stamps)
        totals["received"] += received
        totals["lost_in_transport"] += len(stamps) - received
        totals["uncounted"] += abs(received - accounted)
        totals["unmatched"] += unmatched
        totals["duplicates"] += dup
        totals["results"] += len(res)
        totals["not_read"] += done - len(res) + dup
        rows.append(row)
    hp, lp = agg["HP"], agg["LP"]

    def dmr(a: dict[str, Any]) -> float | None:
        """Results flagged missed by the system / jobs it released (whole run)."""
        return round(a["missed"] / a["released"], 5) if a["released"] else None

    out: dict[str, Any] = {
        "hp_frames": hp["frames"], "hp_results": hp["results"], "hp_served_n": hp["served"],
        "hp_served": round(hp["served"] / hp["frames"], 4) if hp["frames"] else None,
        "hp_missed": hp["missed"],
        "hp_e2e_p50_ms": _ms(percentile(hp["e2e"], 50)), "hp_e2e_p99_ms": _ms(percentile(hp["e2e"], 99)),
        "lp_frames": lp["frames"], "lp_results": lp["results"], "lp_served_n": lp["served"],
        "lp_served": round(lp["served"] / lp["frames"], 4) if lp["frames"] else None,
        "lp_missed": lp["missed"], "lp_e2e_p99_ms": _ms(percentile(lp["e2e"], 99)),
        "hp_released": hp["released"], "hp_dmr": dmr(hp),
        "lp_released": lp["released"], "lp_rejected": lp["rejected"], "lp_dmr": dmr(lp),
        "frames_published": totals["published"], "frames_received": totals["received"],
        "frames_lost_in_transport": totals["lost_in_transport"], "frames_uncounted": totals["uncounted"],
        "results_read": totals["results"], "results_not_read": totals["not_read"],
        "results_unmatched": totals["unmatched"], "results_duplicate": totals["duplicates"],
        "reader_delay_p50_ms": _ms(percentile(reader_delay, 50)),
        "reader_delay_p99_ms": _ms(percentile(reader_delay, 99)),
        "reader_delay_max_ms": _ms(max(reader_delay) if reader_delay else None),
        "hp_split_p50_ms": {k: _ms(percentile(v, 50)) for k, v in split.items()},
        "hp_split_p99_ms": {k: _ms(percentile(v, 99)) for k, v in split.items()},
    }
    if node_stats is not None:
        out.update({f"frames_{k}": totals[k] for k in ("superseded", "released", "dropped", "pending")})
        out.update(releases_rejected=totals["rejected"], periods_stale=totals["stale"],
                   releases_skipped=totals["releases_skipped"], hp_frames_superseded=totals["hp_superseded"],
                   node_stats_tasks=len(node_stats))
    out["tasks"] = rows
    return out


# -- one run -----------------------------------------------------------------------------------------------------
class RunError(RuntimeError):
    pass


def _wait_all(children: Sequence[Child], event: str, deadline: float, sut: Sequence[subprocess.Popen[Any]] = ()
              ) -> None:
    for ch in children:
        while not ch.wait(event, min(deadline, time.monotonic() + 1.0)):
            if ch.proc.poll() is not None:
                raise RunError(f"{ch.name} exited (code {ch.proc.returncode}) before {event}:\n{ch.tail()}")
            for p in sut:
                if p.poll() is not None:
                    raise RunError(f"the system under test exited (code {p.returncode}) before {ch.name} got "
                                   f"{event}")
            if time.monotonic() >= deadline:
                raise RunError(f"{ch.name}: no {event} within the time allowed\n{ch.tail()}")


def start_profiler(template: str, pid: int, seconds: float, run_dir: Path) -> subprocess.Popen[Any] | None:
    """``--profile-cmd``: a command run over the measured window (a sampling profiler attached to the system
    under test), ``{pid}``, ``{seconds}`` and ``{out}`` (the run's folder) filled in; its output goes to
    ``profiler.log`` there. None without a template."""
    if not template:
        return None
    cmd = template.format(pid=pid, seconds=max(1, int(seconds)), out=run_dir)
    with open(run_dir / "profiler.log", "w") as log:
        return subprocess.Popen(shlex.split(cmd), stdout=log, stderr=subprocess.STDOUT, cwd=run_dir)


def wait_profiler(proc: subprocess.Popen[Any], timeout: float) -> int | None:
    """The profiler's exit status (None: still running after ``timeout`` s, then killed)."""
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return None


def run_one(args: argparse.Namespace, system: str, n: int, out: Path) -> dict[str, Any]:
    cams = make_cameras(n, parse_group(args.group), args.rate, args.lp_rate)
    run_dir = out / "runs" / f"{system}_{n}"
    run_dir.mkdir(parents=True, exist_ok=True)
    env = child_env()
    t_launch = time.monotonic()
    gidx = gpu_index(args.device)
    gpu_before = gpu_used_mib(gidx)
    node_proc: subprocess.Popen[Any] | None = None
    node_log = None
    sut: list[Child] = []
    readers: list[Child] = []
    pubs: list[Child] = []
    stats_reader: Child | None = None
    figures: dict[str, Any] = {"system": system, "cameras": n}
    try:
        if system == "node":
            from daris_ros.tools.demo import scheduler_executable

            params = run_dir / "params.yaml"
            params.write_text(yaml.safe_dump(node_params(args, cams), sort_keys=False))
            node_log = open(run_dir / "node.log", "w")  # noqa: SIM115 - closed below
            node_proc = subprocess.Popen([scheduler_executable(), "--ros-args", "--params-file", str(params)],
                                         stdout=node_log, stderr=subprocess.STDOUT, env=env, cwd=run_dir,
                                         start_new_session=True)
            sut_roots = [node_proc.pid]
        else:
            default_size = parse_size(args.input_size)
            for c in cams:
                spec = {"task": c.task, "topic": c.topic, "result_topic": c.result_topic, "model": c.model,
                        "priority": c.priority, "period": c.period, "deadline": c.period,
                        "input_size": camera_input_size(c, default_size),
                        "precision": args.precision, "channels_last": args.channels_last, "device": args.device,
                        "depth": args.per_camera_depth, "width": args.width, "height": args.height,
                        "result": str(run_dir / f"percam_{c.index:02d}.json")}
                path = run_dir / f"percam_{c.index:02d}.spec.json"
                path.write_text(json.dumps(spec))
                sut.append(Child(f"per-camera {c.task}", _module_cmd("daris_ros.bench.per_camera_node", path),
                                 run_dir / f"percam_{c.index:02d}.log", env, run_dir))
            sut_roots = [ch.proc.pid for ch in sut]
        for i, group in enumerate(chunks(cams, args.topics_per_reader)):
            path = run_dir / f"reader_{i}.spec.json"
            path.write_text(json.dumps({"id": i, "topics": [[c.task, c.result_topic] for c in group],
                                        "result": str(run_dir / f"reader_{i}.json")}))
            readers.append(Child(f"reader {i}", _module_cmd("daris_ros.bench.node_e2e", path) + ["--role", "reader"],
                                 run_dir / f"reader_{i}.log", env, run_dir))
        if system == "node":
            path = run_dir / "reader_stats.spec.json"
            path.write_text(json.dumps({"id": "stats", "topics": [], "stats_topic": "/daris/stats",
                                        "result": str(run_dir / "reader_stats.json")}))
            stats_reader = Child("stats reader", _module_cmd("daris_ros.bench.node_e2e", path) + ["--role", "reader"],
                                 run_dir / "reader_stats.log", env, run_dir)
        for i, group in enumerate(chunks(cams, args.cameras_per_publisher)):
            path = run_dir / f"publisher_{i}.spec.json"
            path.write_text(json.dumps({
                "id": i, "width": args.width, "height": args.height, "frames": args.frames, "quality": args.quality,
                "noise": args.noise,
                "seed": args.seed, "random_phase": not args.same_phase, "result": str(run_dir / f"publisher_{i}.json"),
                "cameras": [{"index": c.index, "task": c.task, "topic": c.topic, "rate": c.rate} for c in group]}))
            pubs.append(Child(f"publisher {i}", _module_cmd("daris_ros.bench.node_e2e", path) + ["--role", "publisher"],
                              run_dir / f"publisher_{i}.log", env, run_dir))
        deadline = t_launch + args.ready_timeout
        sut_procs = [node_proc] if node_proc is not None else [ch.proc for ch in sut]
        if stats_reader is not None:
            _wait_all([stats_reader], "STATS", deadline, sut_procs)
        _wait_all(sut, "READY", deadline)
        _wait_all(readers + pubs, "READY", deadline, sut_procs)
        startup = time.monotonic() - t_launch
        time.sleep(args.settle)
        t0 = time.time() + 0.5
        t_meas = t0 + args.warmup
        t1 = t_meas + args.seconds
        for p in pubs:
            p.send(f"START {t0:.6f} {t1:.6f}")
        harness_roots = [ch.proc.pid for ch in readers + pubs] + ([stats_reader.proc.pid] if stats_reader else [])
        time.sleep(max(0.0, t_meas - time.time()))
        profiler = start_profiler(args.profile_cmd, sut_roots[0], args.seconds, run_dir)
        cpu_a, hcpu_a, w_a = tree_cpu(sut_roots), tree_cpu(harness_roots), time.monotonic()
        time.sleep(max(0.0, t1 - time.time()))
        cpu_b, hcpu_b, w_b = tree_cpu(sut_roots), tree_cpu(harness_roots), time.monotonic()
        gpu_after = gpu_used_mib(gidx)
        gpu_apps = gpu_apps_mib(cpu_b)
        if profiler is not None:
            figures["profiler_exit"] = wait_profiler(profiler, 30.0)
        _wait_all(pubs, "WROTE", time.monotonic() + 30.0)
        # results of the last frames, then (node) a stats message taken after the last release
        max_period = max(c.period for c in cams)
        time.sleep(args.drain + 2 * max_period + (2 * args.stats_period if system == "node" else 0.0))
        for r in readers + ([stats_reader] if stats_reader else []):
            r.send("STOP")
        _wait_all(readers + ([stats_reader] if stats_reader else []), "WROTE", time.monotonic() + 60.0)
        published: dict[str, list[int]] = {}
        pub_lag = []
        jpeg_bytes: list[int] = []
        for i in range(len(pubs)):
            data = json.loads((run_dir / f"publisher_{i}.json").read_text())
            published.update(data["published"])
            pub_lag.append(data.get("lag_p99_ms") or 0.0)
            jpeg_bytes.extend(data.get("jpeg_bytes", {}).values())
        results: dict[str, list[list[Any]]] = {}
        for i in range(len(readers)):
            results.update(json.loads((run_dir / f"reader_{i}.json").read_text())["results"])
        node_stats = None
        counts = None
        loop_samples: list[list[float]] = []
        if system == "node":
            stats_file = json.loads((run_dir / "reader_stats.json").read_text())
            stats = stats_file["stats"] or {}
            node_stats = stats.get("tasks", {})
            loop_samples = stats_file.get("loop") or []
            figures["node_stats_age_s"] = round(time.time() - stats.get("received_ns", 0) / NS, 2)
        else:
            for ch in sut:
                ch.send("STOP")
            _wait_all(sut, "DONE", time.monotonic() + 60.0)  # (each writes its counters, then prints DONE)
            counts = {}
            for c in cams:
                counts[c.task] = json.loads((run_dir / f"percam_{c.index:02d}.json").read_text())
        window = (round(t_meas * NS), round(t1 * NS))
        figures.update(judge(cams, published, results, window, node_stats, counts))
        if system == "node":
            figures.update(loop_load(loop_samples, window))
        span = w_b - w_a
        figures.update({
            "cpu_cores": cores_used(cpu_a, cpu_b, span), "harness_cpu_cores": cores_used(hcpu_a, hcpu_b, span),
            "sut_processes": len(cpu_b),
            "gpu_mem_gb": round((gpu_apps if gpu_apps > 0 else max(0.0, (gpu_after or 0.0) - (gpu_before or 0.0)))
                                / 1024.0, 2),
            "gpu_mem_source": "nvidia-smi per process" if gpu_apps > 0
            else ("nvidia-smi device used - before" if gpu_after is not None else "none (no GPU)"),
            "publisher_lag_p99_ms": max(pub_lag) if pub_lag else None,
            "jpeg_kb_mean": round(sum(jpeg_bytes) / len(jpeg_bytes) / 1024, 1) if jpeg_bytes else None,
            "startup_s": round(startup, 1), "window_s": round(args.seconds, 2),
        })
    finally:
        for ch in pubs + readers + ([stats_reader] if stats_reader else []) + sut:
            ch.close()
        if node_proc is not None:
            from daris_ros.tools.demo import stop_process

            figures["node_exit_code"] = stop_process(node_proc, timeout=30.0)
            if node_log is not None:
                node_log.close()
        figures["wall_s"] = round(time.monotonic() - t_launch, 1)
    (run_dir / "run.json").write_text(json.dumps(figures, indent=1))
    return figures


# -- sweep and report --------------------------------------------------------------------------------------------
def max_cameras(runs: Sequence[dict[str, Any]], system: str, target: float) -> int | None:
    ok = [r["cameras"] for r in runs if r.get("system") == system and (r.get("hp_served") or 0.0) >= target]
    return max(ok) if ok else None


def summary_of(runs: Sequence[dict[str, Any]], target: float) -> dict[str, Any]:
    """``engine_acceptance.node_e2e`` of docs/benchmarks/summary.json: the node's run at the most cameras."""
    node_runs = [r for r in runs if r.get("system") == "node" and "hp_served" in r]
    if not node_runs:
        return {}
    top = max(node_runs, key=lambda r: r["cameras"])
    return {"cameras": top["cameras"], "hp_served": top["hp_served"], "hp_missed": top["hp_missed"],
            "frames_uncounted": top["frames_uncounted"], "hp_e2e_p99_ms": top["hp_e2e_p99_ms"],
            "lp_dmr": top.get("lp_dmr"),
            "max_cameras_node": max_cameras(runs, "node", target),
            "max_cameras_per_camera_nodes": max_cameras(runs, "per-camera", target)}


def render_md(report: dict[str, Any]) -> str:
    target = report["served_target"]
    lines = [
        "# The scheduler node end to end over DDS, against per-camera nodes",
        "",
        f"- command: `{report['command']}`",
        f"- commit: `{report['commit']}`; device: {report['device']}; date: {report['date']}",
        f"- scenario: {report['scenario']}",
        f"- an HP frame is served when its result reaches a reader within 2 task periods of its stamp; the largest "
        f"count at which a system serves >= {target:.0%} of HP frames: "
        + ", ".join(f"{s}: {v if v is not None else 'none'}" for s, v in report["max_cameras"].items())
        + (f" (node / per-camera: {report['max_cameras']['node'] / report['max_cameras']['per-camera']:.1f}x)"
           if report["max_cameras"].get("node") and report["max_cameras"].get("per-camera") else ""),
        "",
        "| system | cameras | HP frames | HP served | HP missed (own flag) | HP e2e p50 / p99 ms | HP superseded | "
        "LP served | LP DMR (own flag; rejected) | lost in transport | uncounted | results not read | "
        "reader delay p99 ms | CPU cores | engine loop busy (mean / max) | GPU mem GB | start-up s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def f(v: Any, pct: bool = False) -> str:
        if v is None:
            return "-"
        return f"{v:.2%}" if pct else str(v)

    for r in report["runs"]:
        if "error" in r:
            lines.append(f"| {r['system']} | {r['cameras']} | error: {r['error'][:80]} |" + " |" * 14)
            continue
        lines.append(
            f"| {r['system']} | {r['cameras']} | {r['hp_frames']} | {f(r['hp_served'], True)} | {r['hp_missed']} | "
            f"{f(r['hp_e2e_p50_ms'])} / {f(r['hp_e2e_p99_ms'])} | {f(r.get('hp_frames_superseded'))} | "
            f"{f(r['lp_served'], True)} | {f(r.get('lp_dmr'), True)}; {f(r.get('lp_rejected'))} | "
            f"{r['frames_lost_in_transport']} | {r['frames_uncounted']} | {r['results_not_read']} | "
            f"{f(r['reader_delay_p99_ms'])} | {r['cpu_cores']} | "
            f"{f(r.get('loop_busy_share'), True)} / {f(r.get('loop_busy_share_max'), True)} | {r['gpu_mem_gb']} | "
            f"{r['startup_s']} |")
    s = report.get("node_e2e")
    if s:
        lines += ["", "`engine_acceptance.node_e2e`:", "", "```json", json.dumps(s), "```"]
    lines += ["", "Per run: `runs/<system>_<cameras>/run.json` (per task: published, received, released, "
              "superseded, dropped, pending, results, served, e2e percentiles; HP latency split intake / sampling / "
              "response / delivery), logs of every process.", ""]
    return "\n".join(lines)


def write_report(out: Path, report: dict[str, Any]) -> None:
    runs = report["runs"]
    target = report["served_target"]
    report["max_cameras"] = {s: max_cameras(runs, s, target) for s in sorted({r["system"] for r in runs})}
    report["node_e2e"] = summary_of(runs, target)
    out.mkdir(parents=True, exist_ok=True)
    (out / "node_e2e.json").write_text(json.dumps(report, indent=1))
    (out / "node_e2e.md").write_text(render_md(report))


def combine(files: Sequence[Path], out: Path) -> dict[str, Any]:
    """Runs of several node_e2e.json files in one report (a later file's run replaces an earlier one of the same
    system and count)."""
    reports = [json.loads(Path(f).read_text()) for f in files]
    runs: dict[tuple[str, int], dict[str, Any]] = {}
    for rep in reports:
        for r in rep["runs"]:
            runs[(r["system"], r["cameras"])] = r
    first = reports[0]
    report = {**first, "command": " ; ".join(rep["command"] for rep in reports),
              "commit": ", ".join(sorted({rep["commit"] for rep in reports})),
              "device": ", ".join(sorted({rep["device"] for rep in reports})),
              "date": ", ".join(rep["date"] for rep in reports),
              "runs": [runs[k] for k in sorted(runs, key=lambda k: (k[1], k[0]))]}
    write_report(out, report)
    return report


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="daris-node-e2e", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--cameras", type=int, default=48, help="cameras (a multiple of the group size); one run")
    a("--sweep", default="", help="camera counts, e.g. 12,24,36,48 (instead of --cameras)")
    a("--system", "--systems", dest="systems", default="node",
      help="node, per-camera, or both comma-separated (each count runs each system)")
    a("--group", default=DEFAULT_GROUP, help="one group of cameras: PRIORITY:MODEL:COUNT,...")
    a("--rate", type=float, default=30.0, help="camera and task rate in Hz")
    a("--lp-rate", type=float, default=None, help="LP cameras' rate (default: --rate)")
    a("--width", type=int, default=1280)
    a("--height", type=int, default=720)
    a("--frames", type=int, default=4, help="distinct pre-encoded frames per camera")
    a("--quality", type=int, default=85, help="JPEG quality")
    a("--noise", type=int, default=8,
      help="pixel noise amplitude added to the test picture (8: about 100 KB a 1280x720 JPEG, like a camera's)")
    a("--seed", type=int, default=0)
    a("--same-phase", action="store_true", help="all cameras on one phase (default: each its own, seeded)")
    a("--seconds", type=float, default=20.0, help="measured window")
    a("--warmup", type=float, default=2.0, help="publishing before the window")
    a("--settle", type=float, default=1.0, help="seconds between everything ready and the first frame")
    a("--drain", type=float, default=1.0, help="seconds after the last frame (plus 2 periods) for the last results")
    a("--ready-timeout", type=float, default=300.0, help="seconds for the system, readers and publishers to start")
    a("--cameras-per-publisher", type=int, default=4)
    a("--topics-per-reader", type=int, default=4)
    a("--served-target", type=float, default=0.99)
    a("--stop-after-fail", action="store_true",
      help="sweep: skip a system's larger counts once it served less than the target")
    a("--budget", type=float, default=0.0,
      help="sweep: seconds; a run is not started when the longest run so far would end past it (0: no limit)")
    n = p.add_argument_group("system under test")
    n.add_argument("--backend", default="green")
    n.add_argument("--device", default="cuda:0")
    n.add_argument("--policy", default="MPS")
    n.add_argument("--contexts", type=int, default=3)
    n.add_argument("--streams", type=int, default=1)
    n.add_argument("--os", type=float, default=2.0, help="oversubscription")
    n.add_argument("--batching", action="store_true")
    n.add_argument("--batch-sizes", default="", help="e.g. 1,2,4,8,16")
    n.add_argument("--launch-ahead", type=int, default=0)
    n.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "bf16"))
    n.add_argument("--channels-last", action="store_true")
    n.add_argument("--input-size", default="", help="model input HxW for every task (default: the model's)")
    n.add_argument("--stats-period", type=float, default=0.5)
    n.add_argument("--profile-runs", type=int, default=5)
    n.add_argument("--param", action="append", help="more node parameters, KEY=YAML-VALUE (repeatable)")
    n.add_argument("--per-camera-depth", type=int, default=5,
                   help="per-camera nodes' subscription depth (sensor-data QoS: 5)")
    a("--profile-cmd", default="",
      help="a command run over the measured window, e.g. 'py-spy record --gil -p {pid} -d {seconds} -f raw -o "
           "{out}/gil.txt' ({pid}: the node, or the first per-camera process)")
    a("--out", type=Path, default=Path("docs/benchmarks/node_e2e"))
    a("--commit", default="", help="the commit measured, where the working tree has no .git (default: git's HEAD)")
    a("--combine", nargs="+", type=Path, default=None, help="node_e2e.json files to merge into --out")
    a("--role", choices=("orchestrator", "publisher", "reader"), default="orchestrator", help=argparse.SUPPRESS)
    a("--spec", type=Path, default=None, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.role != "orchestrator":
        spec = json.loads(args.spec.read_text())
        return publisher_main(spec) if args.role == "publisher" else reader_main(spec)
    out = args.out.resolve()
    if args.combine:
        combined = combine(args.combine, out)
        print(json.dumps({"max_cameras": combined["max_cameras"], "node_e2e": combined["node_e2e"]}))
        return 0
    try:
        import daris_ros.msg  # noqa: F401  (generated at build time: the install space must be sourced)
    except ImportError:
        print("daris-node-e2e: daris_ros.msg not found: run it from the install space (scripts/run_in_install.sh, "
              "scripts/device_ros.sh) with `python -P -m daris_ros.bench.node_e2e` or the daris-node-e2e "
              "executable, not with the working tree on sys.path", file=sys.stderr)
        return 2
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    bad = [s for s in systems if s not in SYSTEMS]
    if bad:
        print(f"daris-node-e2e: unknown system(s) {bad}; expected {SYSTEMS}", file=sys.stderr)
        return 2
    counts = [int(v) for v in args.sweep.split(",")] if args.sweep else [args.cameras]
    group = parse_group(args.group)
    for n in counts:
        make_cameras(n, group, args.rate)  # (checks the count before anything starts)
    report: dict[str, Any] = {
        "command": shlex.join(["daris-node-e2e", *argv]), "commit": args.commit or git_commit(Path.cwd()),
        "device": device_name(args.device), "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "served_target": args.served_target,
        "scenario": (f"groups of {sum(g.cameras for g in group)} ({args.group}), JPEG {args.width}x{args.height} at "
                     f"{args.rate:g} Hz" + (f" (LP {args.lp_rate:g} Hz)" if args.lp_rate else "")
                     + f", {args.seconds:g} s window after {args.warmup:g} s; node: {args.backend} {args.device} "
                     f"{args.policy} {args.contexts}x{args.streams} OS {args.os:g}, {args.precision}"
                     + (", channels-last" if args.channels_last else "") + (", batching" if args.batching else "")
                     + (f", launch-ahead {args.launch_ahead}" if args.launch_ahead else "")
                     + (f", input {args.input_size}" if args.input_size else "")),
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                    if k not in ("role", "spec", "combine", "commit")},
        "runs": [],
    }
    t_start = time.monotonic()
    longest = 0.0
    failed: set[str] = set()
    rc = 0
    for n in counts:
        for system in systems:
            if system in failed:
                continue
            if args.budget and time.monotonic() - t_start + longest > args.budget:
                print(f"[node_e2e] budget: {system} at {n} cameras not started", file=sys.stderr, flush=True)
                continue
            print(f"[node_e2e] {system}, {n} cameras ...", file=sys.stderr, flush=True)
            t_run = time.monotonic()
            try:
                fig = run_one(args, system, n, out)
            except Exception as exc:  # noqa: BLE001 - a failed run is reported, the sweep goes on
                fig = {"system": system, "cameras": n, "error": f"{type(exc).__name__}: {exc}"}
                rc = 1
            longest = max(longest, time.monotonic() - t_run)
            report["runs"].append(fig)
            write_report(out, report)
            print(json.dumps({k: v for k, v in fig.items() if k != "tasks"}), flush=True)
            if args.stop_after_fail and (fig.get("hp_served") or 0.0) < args.served_target:
                failed.add(system)
    print(json.dumps({"max_cameras": report["max_cameras"], "node_e2e": report["node_e2e"]}), flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())

