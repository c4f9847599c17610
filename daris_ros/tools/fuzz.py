"""``daris-fuzz``: publish seeded malformed camera frames to a running scheduler node and check its counts.

The node under test needs one task on an Image topic and/or one on a CompressedImage topic, with reliable
QoS and a deep queue (so no frame is lost on the way: every frame sent must be counted), and the limits
the fuzzer is told (``--max-pixels``, ``--future-tolerance``, ``--past-tolerance``)::

    daris_scheduler:
      ros__parameters:
        max_pixels: 100000
        stamp_future_tolerance: 1.0
        stamp_past_tolerance: 5.0
        task_names: [img, jpg]
        tasks:
          img: {topic: /fuzz/image_raw, rate: 20.0, model: resnet18, input_size: [32, 32],
                qos_reliability: reliable, qos_depth: 1000}
          jpg: {topic: /fuzz/image_raw/compressed, input_type: compressed, rate: 20.0, model: resnet18,
                input_size: [32, 32], qos_reliability: reliable, qos_depth: 1000}

    daris-fuzz --image-topic /fuzz/image_raw --image-task img \\
        --compressed-topic /fuzz/image_raw/compressed --compressed-task jpg --count 10000 --json fuzz.json

``--count`` malformed frames (every kind in turn, seeded order) are mixed with good frames and frame_id
changes. At the end the node's ``daris/stats`` must show, per task: every frame received, each malformed
frame counted under its reason (``drop_reasons``/``drop_counts``, and ``dropped.<reason>`` on
/diagnostics), the frame_id changes counted, ``frames == released + superseded + dropped + pending``, and
good frames still completed. Exit code 0 when every check passes. A frame that only decoding finds malformed
is left alone until the node's stats show it released, so that no newer frame supersedes it on a slow host.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from daris_ros.tools.fuzz_frames import COMPRESSED, GOOD_FRAME_ID, IMAGE, FrameFactory, FuzzFrame, FuzzLimits

RELIABLE_DEPTH = 1000


@dataclass(slots=True)
class FuzzConfig:
    image_topic: str = ""
    image_task: str = ""
    compressed_topic: str = ""
    compressed_task: str = ""
    count: int = 10_000  # malformed frames
    seed: int = 0
    rate: float = 400.0  # messages per second
    good_ratio: float = 0.3  # share of good frames among the messages
    release_pause: float = 0.3  # s left alone at least after a frame only a release can find malformed
    release_timeout: float = 10.0  # s at most waiting for the node's stats to show that frame released
    stats_topic: str = "/daris/stats"
    node: str = "/daris_scheduler"  # its /diagnostics statuses are "<node>: task <name>"
    settle_timeout: float = 60.0
    limits: FuzzLimits = field(default_factory=FuzzLimits)

    def topics(self) -> dict[str, tuple[str, str]]:
        """input type -> (topic, task) for the enabled inputs."""
        out = {}
        if self.image_topic:
            out[IMAGE] = (self.image_topic, self.image_task)
        if self.compressed_topic:
            out[COMPRESSED] = (self.compressed_topic, self.compressed_task)
        return out


def plan(cfg: FuzzConfig) -> list[FuzzFrame]:
    """The seeded message sequence: ``cfg.count`` malformed frames, every kind in turn (shuffled per round),
    with good frames and frame_id changes in between."""
    factory = FrameFactory(cfg.seed, cfg.limits)
    inputs = cfg.topics()
    if not inputs:
        raise ValueError("give --image-topic and/or --compressed-topic")
    kinds = {name: make for name, make in factory.all_kinds().items()
             if (IMAGE if name.startswith("image") else COMPRESSED) in inputs}
    names = sorted(kinds)
    types = sorted(inputs)
    out: list[FuzzFrame] = []
    malformed = 0
    while malformed < cfg.count:
        for i in factory.rng.permutation(len(names)):
            if malformed >= cfg.count:
                break
            while factory.rng.random() < cfg.good_ratio:
                out.append(factory.good(types[int(factory.rng.integers(len(types)))]))
            f = kinds[names[int(i)]]()
            out.append(f)
            malformed += f.reason is not None
    return out


def expected_counts(frames: list[FuzzFrame]) -> dict[str, dict[str, Any]]:
    """Per input type: frames sent, malformed per reason, frame_id changes the node must count (the node
    saw a good frame with ``GOOD_FRAME_ID`` before)."""
    out: dict[str, dict[str, Any]] = {}
    last: dict[str, str] = {}
    for f in frames:
        e = out.setdefault(f.input_type, {"frames": 0, "dropped": Counter(), "frame_id_changes": 0, "kinds": Counter()})
        e["frames"] += 1
        e["kinds"][f.kind] += 1
        if f.reason is not None:
            e["dropped"][f.reason] += 1
        if f.good_at_receipt:
            fid = f.msg.header.frame_id
            if fid != last.get(f.input_type, GOOD_FRAME_ID):
                e["frame_id_changes"] += 1
            last[f.input_type] = fid
    return out


class _Harness:
    """Publishers and the stats / diagnostics subscriptions on an rclpy node."""

    def __init__(self, node: Any, cfg: FuzzConfig) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CompressedImage, Image

        from daris_ros.msg import SchedulerStats

        qos = QoSProfile(depth=RELIABLE_DEPTH, history=HistoryPolicy.KEEP_LAST,
                         reliability=ReliabilityPolicy.RELIABLE)
        self.node = node
        self.pubs = {t: node.create_publisher(Image if t == IMAGE else CompressedImage, topic, qos)
                     for t, (topic, _) in cfg.topics().items()}
        self._lock = threading.Lock()
        self.stats: Any = None
        self.stats_at = 0.0
        self.diag: dict[str, dict[str, str]] = {}
        node.create_subscription(SchedulerStats, cfg.stats_topic, self._on_stats, 10)
        node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        self._node_name = cfg.node

    def _on_stats(self, m: Any) -> None:
        with self._lock:
            self.stats, self.stats_at = m, time.monotonic()

    def _on_diag(self, m: Any) -> None:
        with self._lock:
            for s in m.status:
                if s.name.startswith(f"{self._node_name}: task "):
                    self.diag[s.name.split(": task ", 1)[1]] = {kv.key: kv.value for kv in s.values}

    def task(self, name: str) -> Any:
        with self._lock:
            for t in (self.stats.tasks if self.stats is not None else []):
                if t.task == name:
                    return t
        return None

    def publish(self, f: FuzzFrame) -> None:
        if f.raw is not None:
            self.pubs[f.input_type].publish(f.raw)
            return
        if f.stamp_offset is not None:
            ns = self.node.get_clock().now().nanoseconds + int(f.stamp_offset * 1e9)
            ns = max(ns, 1)  # a stamp before the epoch is clamped to 1 ns (still "from the past")
            f.msg.header.stamp.sec, f.msg.header.stamp.nanosec = ns // 10**9, ns % 10**9
        self.pubs[f.input_type].publish(f.msg)


def _counts(t: Any) -> dict[str, Any]:
    return {"frames": t.frames, "released": t.released, "superseded": t.superseded, "dropped": t.dropped,
            "pending": t.pending, "completed": t.completed, "frame_id_changes": t.frame_id_changes,
            "drops": dict(zip(t.drop_reasons, (int(n) for n in t.drop_counts), strict=True))}


def _wait_for_release(h: _Harness, task: str, frames: int, timeout: float) -> bool:
    """Wait up to ``timeout`` s until the node's stats show ``frames`` frames received on ``task`` and none held
    unreleased; whether they did (a frame superseded after all shows up in the report's checks)."""
    def released() -> bool:
        stats = h.task(task)
        return stats is not None and stats.frames >= frames and stats.pending == 0

    try:
        _wait(released, timeout, f"task {task} to release its frame {frames}")
    except TimeoutError:
        return False
    return True


def _wait(cond: Any, timeout: float, what: str) -> None:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


def run_fuzz(node: Any, cfg: FuzzConfig, node_pid: int | None = None) -> dict[str, Any]:
    """Fuzz the node (``node`` is an rclpy node spun by the caller); returns the report (``ok`` and why)."""
    h = _Harness(node, cfg)
    inputs = cfg.topics()
    frames = plan(cfg)
    expected = expected_counts(frames)
    factory = FrameFactory(cfg.seed + 1, cfg.limits)
    _wait(lambda: all(p.get_subscription_count() > 0 for p in h.pubs.values()), 60, "the node's subscriptions")
    _wait(lambda: all(h.task(task) is not None for _, task in inputs.values()), 60, "stats of the fuzzed tasks")
    for t in inputs:  # one good frame first: the node's last good frame_id is now GOOD_FRAME_ID
        h.publish(factory.good(t))
    first = {t: h.task(task).frames + 1 for t, (_, task) in inputs.items()}
    _wait(lambda: all(h.task(task).frames >= first[t] for t, (_, task) in inputs.items()), 30, "the first frames")
    time.sleep(0.5)
    base = {t: _counts(h.task(task)) for t, (_, task) in inputs.items()}

    sent = dict.fromkeys(inputs, 0)
    t_start = t0 = time.monotonic()
    for i, f in enumerate(frames):
        due = t0 + i / cfg.rate
        if (d := due - time.monotonic()) > 0:
            time.sleep(d)
        h.publish(f)
        sent[f.input_type] += 1
        if f.release_only:  # leave it alone until a release has decoded it (a newer frame would supersede it)
            paused_at = time.monotonic()
            time.sleep(cfg.release_pause)
            _wait_for_release(h, inputs[f.input_type][1], base[f.input_type]["frames"] + sent[f.input_type],
                              cfg.release_timeout)
            t0 += time.monotonic() - paused_at
    sent_s = time.monotonic() - t_start

    def all_received() -> bool:
        return all(h.task(task).frames - base[t]["frames"] >= expected[t]["frames"] for t, (_, task) in inputs.items())

    received = True
    try:
        _wait(all_received, cfg.settle_timeout, "the node to receive every frame")
    except TimeoutError:
        received = False
    time.sleep(1.5)  # a few stats periods: the last releases and the last stats
    report: dict[str, Any] = {"config": {**asdict(cfg), "limits": asdict(cfg.limits)}, "tasks": {},
                              "publish_seconds": round(sent_s, 2), "all_received": received}
    ok = received
    for t, (topic, task) in inputs.items():
        now = _counts(h.task(task))
        exp = expected[t]
        delta_drops = {r: now["drops"].get(r, 0) - base[t]["drops"].get(r, 0)
                       for r in set(now["drops"]) | set(base[t]["drops"])}
        delta_drops = {r: n for r, n in delta_drops.items() if n}
        malformed_sent = sum(exp["dropped"].values())
        identity = now["frames"] == now["released"] + now["superseded"] + now["dropped"] + now["pending"]
        diag = h.diag.get(task, {})
        diag_drops = {k[len("dropped."):]: int(v) for k, v in diag.items() if k.startswith("dropped.")}
        checks = {
            "every_frame_received": now["frames"] - base[t]["frames"] == exp["frames"],
            "every_malformed_counted_by_reason": delta_drops == dict(exp["dropped"]),
            "frame_id_changes_counted": now["frame_id_changes"] - base[t]["frame_id_changes"]
            == exp["frame_id_changes"],
            "accounting_identity": identity,
            "good_frames_completed": now["completed"] > base[t]["completed"],
            "diagnostics_match_stats": diag_drops == now["drops"],
        }
        ok = ok and all(checks.values())
        report["tasks"][task] = {
            "topic": topic, "input_type": t, "frames_sent": exp["frames"], "malformed_sent": malformed_sent,
            "malformed_counted": sum(delta_drops.values()), "expected_drops": dict(exp["dropped"]),
            "counted_drops": delta_drops, "frame_id_changes_sent": exp["frame_id_changes"],
            "frame_id_changes_counted": now["frame_id_changes"] - base[t]["frame_id_changes"],
            "kinds_sent": dict(sorted(exp["kinds"].items())), "before": base[t], "after": now, "checks": checks}
    alive = time.monotonic() - h.stats_at < 5.0
    if node_pid is not None:
        alive = alive and _process_alive(node_pid)
    report["node_alive"] = alive
    report["malformed_frames_sent"] = sum(r["malformed_sent"] for r in report["tasks"].values())
    report["malformed_frames_counted"] = sum(r["malformed_counted"] for r in report["tasks"].values())
    report["ok"] = bool(ok and alive)
    return report


def _process_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _print(report: dict[str, Any]) -> None:
    for task, r in report["tasks"].items():
        print(f"task {task} ({r['input_type']}, {r['topic']}): sent {r['frames_sent']} frames, "
              f"{r['malformed_sent']} malformed -> counted {r['malformed_counted']}; frame_id changes "
              f"{r['frame_id_changes_sent']} -> {r['frame_id_changes_counted']}")
        for reason in sorted(set(r["expected_drops"]) | set(r["counted_drops"])):
            print(f"  {reason:22s} sent {r['expected_drops'].get(reason, 0):6d}  counted "
                  f"{r['counted_drops'].get(reason, 0):6d}")
        for name, passed in r["checks"].items():
            print(f"  {'ok  ' if passed else 'FAIL'} {name}")
    print(f"node alive: {report['node_alive']}; malformed sent {report['malformed_frames_sent']}, counted "
          f"{report['malformed_frames_counted']}; {'PASS' if report['ok'] else 'FAIL'}")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="daris-fuzz", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image-topic", default="")
    ap.add_argument("--image-task", default="", help="the node's task on --image-topic")
    ap.add_argument("--compressed-topic", default="")
    ap.add_argument("--compressed-task", default="", help="the node's task on --compressed-topic")
    ap.add_argument("--count", type=int, default=10_000, help="malformed frames to send (default 10000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rate", type=float, default=400.0, help="messages per second (default 400)")
    ap.add_argument("--good-ratio", type=float, default=0.3, help="share of good frames (default 0.3)")
    ap.add_argument("--release-pause", type=float, default=0.3,
                    help="seconds a frame that only decoding finds malformed is left alone at least; then the "
                         "fuzzer waits until the node's stats show it released (no newer frame supersedes it)")
    ap.add_argument("--release-timeout", type=float, default=10.0,
                    help="seconds at most to wait for that release (default 10)")
    ap.add_argument("--max-pixels", type=int, default=100_000, help="the node's max_pixels")
    ap.add_argument("--future-tolerance", type=float, default=1.0, help="the node's stamp_future_tolerance")
    ap.add_argument("--past-tolerance", type=float, default=5.0, help="the node's stamp_past_tolerance (0: off)")
    ap.add_argument("--stats-topic", default="/daris/stats")
    ap.add_argument("--node", default="/daris_scheduler", help="fully qualified name of the node")
    ap.add_argument("--node-pid", type=int, default=None, help="also check that this process is alive at the end")
    ap.add_argument("--settle-timeout", type=float, default=60.0)
    ap.add_argument("--json", default="", help="write the report here")
    return ap


def config_from_args(a: argparse.Namespace) -> FuzzConfig:
    return FuzzConfig(image_topic=a.image_topic, image_task=a.image_task, compressed_topic=a.compressed_topic,
                      compressed_task=a.compressed_task, count=a.count, seed=a.seed, rate=a.rate,
                      good_ratio=a.good_ratio, release_pause=a.release_pause,
                      release_timeout=a.release_timeout, stats_topic=a.stats_topic,
                      node=a.node, settle_timeout=a.settle_timeout,
                      limits=FuzzLimits(a.max_pixels, a.future_tolerance, a.past_tolerance))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = config_from_args(args)
    if (cfg.image_topic and not cfg.image_task) or (cfg.compressed_topic and not cfg.compressed_task):
        print("daris-fuzz: give the node's task name for each topic (--image-task, --compressed-task)",
              file=sys.stderr)
        return 2
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node

    rclpy.init()
    node = Node(f"daris_fuzz_{os.getpid()}")
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    spin = threading.Thread(target=ex.spin, daemon=True)
    spin.start()
    try:
        report = run_fuzz(node, cfg, args.node_pid)
    except TimeoutError as exc:
        print(f"daris-fuzz: {exc}", file=sys.stderr)
        return 1
    finally:
        ex.shutdown()
        spin.join(timeout=5.0)  # the spin thread must leave rcl before the node and context go away
        node.destroy_node()
        rclpy.try_shutdown()
    _print(report)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(report, fh, indent=1, sort_keys=True)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
