#!/usr/bin/env python3
"""Two scheduler nodes on two GPUs over real DDS: /gpu0 on cuda:0, /gpu1 on cuda:1 (docs/scale_out.md).

    scripts/device_ros.sh && python3 scripts/two_gpu_run.py --out $OUT        # the 2-GPU machine
    python3 scripts/two_gpu_run.py --device cpu --seconds 10 --out /tmp/two   # dry run, both nodes on the CPU

Starts ``lib/daris_ros/scheduler_node`` twice from the install space (``-r __ns:=/gpu0`` / ``/gpu1``, parameter
files config/two_gpu_gpu0.yaml and config/two_gpu_gpu1.yaml: six cameras each, two HP and four LP), publishes
synthetic rgb8 camera frames on the twelve topics from this process, subscribes to every result topic (also
the other node's namespace, which must stay silent), the stats and /diagnostics, measures ``--seconds`` after
both nodes run, samples nvidia-smi (which process is on which GPU), then SIGINTs both nodes and checks exit
codes and that no process of theirs is left. Writes two_gpu.json, two_gpu.log, the node logs and the
parameter files used into --out; exit code 0 only when every check passed.

The environment: if DARIS_ROS_ROOT/env.json exists (written by scripts/device_ros.sh; default root
/tmp/daris_ros) this script re-executes itself in it (its Python with the ROS wheels, the install space);
``--ros-root none`` uses the current environment as it is (e.g. under scripts/run_in_install.sh).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
NAMESPACES = ("gpu0", "gpu1")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "/tmp/two_gpu_out")),
                    help="output directory (default $OUT, else /tmp/two_gpu_out)")
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                    help="cuda: node gpuN on cuda:N with the files' backend; cpu: both nodes on the CPU backend "
                    "(a dry run of the whole flow)")
    ap.add_argument("--seconds", type=float, default=20.0, help="measurement window (default 20)")
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds after both nodes run, before measuring")
    ap.add_argument("--startup-timeout", type=float, default=240.0, help="seconds for both nodes to start")
    ap.add_argument("--config0", type=Path, default=REPO / "config" / "two_gpu_gpu0.yaml")
    ap.add_argument("--config1", type=Path, default=REPO / "config" / "two_gpu_gpu1.yaml")
    ap.add_argument("--width", type=int, default=None, help="camera frame width (default 320; cpu: 160)")
    ap.add_argument("--height", type=int, default=None, help="camera frame height (default 240; cpu: 120)")
    ap.add_argument("--rate", type=float, default=None,
                    help="override every task's rate in Hz (default: the files' 30 Hz; cpu: 3 Hz)")
    ap.add_argument("--input-size", type=int, default=None,
                    help="override every task's model input size (default: the files'; cpu: 64)")
    ap.add_argument("--isolate", action="store_true",
                    help="give node gpuN only GPU N (CUDA_VISIBLE_DEVICES=N, device cuda:0) instead of device cuda:N")
    ap.add_argument("--default-transport", action="store_true",
                    help="keep Fast DDS's default transports (else: the package's large-frame profile, "
                    "config/fastdds_large_frames.xml, as `make demo` uses)")
    ap.add_argument("--ros-root", default=os.environ.get("DARIS_ROS_ROOT", "/tmp/daris_ros"),
                    help="where scripts/device_ros.sh prepared ROS + the install space ('none': use the current "
                    "environment)")
    return ap.parse_args(argv)


def reexec_in_ros_env(root: str) -> None:
    """Re-execute this script with the Python and environment that scripts/device_ros.sh prepared."""
    if os.environ.get("_DARIS_TWO_GPU_ENV") == "1" or root.lower() in ("", "none"):
        return
    env_file = Path(root) / "env.json"
    if not env_file.is_file():
        return
    cfg = json.loads(env_file.read_text())
    env = dict(os.environ)
    for key, value in cfg["prepend"].items():
        env[key] = value + (os.pathsep + env[key] if env.get(key) else "")
    env.update(cfg["set"])
    env["_DARIS_TWO_GPU_ENV"] = "1"
    print(f"[two_gpu] re-executing in the environment of {env_file} ({cfg['python']})", flush=True)
    os.execve(cfg["python"], [cfg["python"], str(Path(__file__).resolve()), *sys.argv[1:]], env)


# -- small helpers (no ROS) ------------------------------------------------------------------------------------
class Log:
    """Lines to stdout and to the run's log file."""

    def __init__(self, path: Path) -> None:
        self.fh = path.open("w", encoding="utf-8")
        self.t0 = time.monotonic()

    def __call__(self, msg: str) -> None:
        line = f"[two_gpu {time.monotonic() - self.t0:7.1f} s] {msg}"
        print(line, flush=True)
        self.fh.write(line + "\n")
        self.fh.flush()

    def block(self, text: str) -> None:
        print(text, flush=True)
        self.fh.write(text + "\n")
        self.fh.flush()


def run_cmd(cmd: list[str], timeout: float = 20.0) -> tuple[int, str]:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        return p.returncode, p.stdout + p.stderr
    except FileNotFoundError:
        return 127, f"{cmd[0]}: not found"
    except subprocess.TimeoutExpired:
        return 124, f"{' '.join(cmd)}: timed out after {timeout} s"


def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[max(0, int(-(-len(s) * p // 100)) - 1)]


def session_processes(sid: int) -> list[dict[str, Any]]:
    """Processes of session ``sid`` still alive (a node starts its own session; its children inherit it)."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[3]) == sid:  # state ppid pgrp session ...
            found.append({"pid": int(d.name), "ppid": int(fields[1]), "state": fields[0], "comm": comm})
    return found


class GpuSampler(threading.Thread):
    """nvidia-smi every ``period`` s: the GPUs (memory, utilisation) and the compute processes on each."""

    GPU_QUERY = ["nvidia-smi", "--query-gpu=index,uuid,name,memory.used,memory.total,utilization.gpu",
                 "--format=csv,noheader,nounits"]
    APPS_QUERY = ["nvidia-smi", "--query-compute-apps=pid,gpu_uuid,used_memory", "--format=csv"]

    def __init__(self, period: float = 2.0) -> None:
        super().__init__(daemon=True)
        self.period = period
        self.samples: list[dict[str, Any]] = []
        self.stop_event = threading.Event()
        self.available = run_cmd(["nvidia-smi", "-L"])[0] == 0

    def sample(self, label: str = "") -> dict[str, Any] | None:
        if not self.available:
            return None
        rc, gpus_txt = run_cmd(self.GPU_QUERY)
        rc2, apps_txt = run_cmd(self.APPS_QUERY)
        gpus = []
        for line in gpus_txt.strip().splitlines() if rc == 0 else []:
            parts = [p.strip() for p in line.split(",")]
            if len(parts) >= 6:
                gpus.append({"index": int(parts[0]), "uuid": parts[1], "name": parts[2],
                             "memory_used_mib": _num(parts[3]), "memory_total_mib": _num(parts[4]),
                             "utilization_pct": _num(parts[5])})
        by_uuid = {g["uuid"]: g["index"] for g in gpus}
        apps = []
        for line in apps_txt.strip().splitlines()[1:] if rc2 == 0 else []:
            parts = [p.strip() for p in line.split(",")]
            if len(parts) >= 3 and parts[0].isdigit():
                apps.append({"pid": int(parts[0]), "gpu_uuid": parts[1], "gpu_index": by_uuid.get(parts[1]),
                             "used_memory_mib": _num(parts[2].split()[0])})
        s = {"t": time.time(), "label": label, "gpus": gpus, "compute_apps": apps, "compute_apps_csv": apps_txt}
        self.samples.append(s)
        return s

    def run(self) -> None:
        while not self.stop_event.wait(self.period):
            self.sample("running")


def _num(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


# -- the run -----------------------------------------------------------------------------------------------------
@dataclass
class NodeRun:
    ns: str
    gpu: int
    device: str  # the node's `device` parameter
    params: Path
    settings: Any
    proc: subprocess.Popen | None = None
    log_path: Path | None = None
    drain: threading.Thread | None = None
    started: float = 0.0
    ready_after: float | None = None
    stats: list[tuple[float, Any]] = field(default_factory=list)  # (monotonic time, SchedulerStats)
    exit_code: int | None = None
    leftover: list[dict[str, Any]] = field(default_factory=list)


def effective_params(args: argparse.Namespace, src: Path, gpu: int) -> dict[str, Any]:
    import yaml

    doc = yaml.safe_load(src.read_text())
    key = next((k for k in doc if k.endswith("daris_scheduler")), None)
    if key is None or "ros__parameters" not in doc[key]:
        raise SystemExit(f"{src}: no '/**/daris_scheduler: ros__parameters:' section")
    p = doc[key]["ros__parameters"]
    if args.device == "cpu":
        p["backend"], p["device"] = "cpu", "cpu"
    else:
        p["device"] = "cuda:0" if args.isolate else f"cuda:{gpu}"
    rate = args.rate if args.rate is not None else (3.0 if args.device == "cpu" else None)
    size = args.input_size if args.input_size is not None else (64 if args.device == "cpu" else None)
    for t in p.get("tasks", {}).values():
        if rate is not None:
            t.pop("period", None)
            t["rate"] = float(rate)
        if size is not None:
            t["input_size"] = [size, size]
    return {"/**/daris_scheduler": {"ros__parameters": p}}


def start_node(run: NodeRun, install: Path, env: dict[str, str], log: Log) -> None:
    from ros_helpers import start_scheduler

    run.log_path = run.params.parent / f"node_{run.ns}.log"
    run.started = time.monotonic()
    run.proc = start_scheduler(install, run.params, args=("-r", f"__ns:=/{run.ns}"), env=env)
    fh = run.log_path.open("w", encoding="utf-8")

    def drain() -> None:  # keep the pipe empty: a full pipe would block the node
        assert run.proc is not None and run.proc.stdout is not None
        for line in run.proc.stdout:
            fh.write(line)
            fh.flush()
        fh.close()

    run.drain = threading.Thread(target=drain, daemon=True)
    run.drain.start()
    log(f"started {run.ns}: pid {run.proc.pid}, device {run.device}"
        f"{' (CUDA_VISIBLE_DEVICES=' + env['CUDA_VISIBLE_DEVICES'] + ')' if 'CUDA_VISIBLE_DEVICES' in env else ''}"
        f", params {run.params.name}, log {run.log_path.name}")


def tail(path: Path | None, n: int = 30) -> str:
    if path is None or not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    reexec_in_ros_env(args.ros_root)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    log = Log(out / "two_gpu.log")
    cpu = args.device == "cpu"
    width = args.width or (160 if cpu else 320)
    height = args.height or (120 if cpu else 240)

    # before anything initialises rclpy or CUDA: an own DDS domain, the node logs into --out
    os.environ.setdefault("ROS_DOMAIN_ID", str(100 + os.getpid() % 100))
    os.environ.setdefault("RCUTILS_LOGGING_BUFFERED_STREAM", "1")
    os.environ.setdefault("ROS_LOG_DIR", str(out / "ros_log"))
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")  # cuda:N == nvidia-smi index N
    if cpu:
        os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        import rclpy
        from ament_index_python.packages import PackageNotFoundError, get_package_prefix
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.node import Node

        from daris_ros.msg import InferenceResult, SchedulerStats
        from daris_ros.settings import load_parameter_file, settings_from_mapping
    except ImportError as exc:
        log(f"error: {exc}. Run scripts/device_ros.sh first (it prepares {args.ros_root}), or run this under "
            "scripts/run_in_install.sh with --ros-root none")
        return 2
    try:
        install = Path(get_package_prefix("daris_ros"))
    except PackageNotFoundError:
        log("error: daris_ros is not in AMENT_PREFIX_PATH (scripts/device_ros.sh prepares it)")
        return 2
    sys.path.insert(0, str(REPO / "test" / "ros"))
    import yaml
    from ros_helpers import Spinner, rgb8_cameras

    if not args.default_transport and not os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE"):
        os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(install / "share/daris_ros/config/fastdds_large_frames.xml")

    gpu_sampler = GpuSampler()
    env_info = collect_environment(args, install, gpu_sampler, width, height)
    log(f"environment: {json.dumps(env_info)}")
    if not cpu and not gpu_sampler.available:
        log("warning: nvidia-smi is not available: no GPU placement check")

    runs: list[NodeRun] = []
    for gpu, (ns, src) in enumerate(zip(NAMESPACES, (args.config0, args.config1), strict=True)):
        params = out / f"params_{ns}.yaml"
        params.write_text(yaml.safe_dump(effective_params(args, src, gpu), sort_keys=False))
        settings = settings_from_mapping(load_parameter_file(params))
        runs.append(NodeRun(ns=ns, gpu=gpu, device=settings.device, params=params, settings=settings))

    checks: dict[str, dict[str, Any]] = {}
    warnings: list[str] = []

    def check(name: str, ok: bool | None, detail: str) -> None:
        checks[name] = {"ok": ok, "detail": detail}
        log(f"check {name}: {'PASS' if ok else 'SKIP' if ok is None else 'FAIL'}: {detail}")

    # result topics: own (expected) and the other namespace's (must stay silent)
    own = {f"/{r.ns}/{t.output_topic}": (r.ns, t) for r in runs for t in r.settings.tasks}
    foreign = {f"/{o.ns}/{t.output_topic}" for r in runs for t in r.settings.tasks for o in runs if o is not r}
    foreign -= set(own)
    results: dict[str, list[tuple[float, float, float, bool]]] = {t: [] for t in own}  # (t, response, exec, met)
    unexpected: dict[str, int] = {}
    diags: dict[str, dict[str, Any]] = {}

    node_env = dict(os.environ)
    for r in runs:
        env = dict(node_env)
        if args.isolate and not cpu:
            env["CUDA_VISIBLE_DEVICES"] = str(r.gpu)
        start_node(r, install, env, log)

    rclpy.init()
    harness = Node("two_gpu_harness")
    spin = None
    counters: list[dict[str, int]] = []
    sent0: dict[str, int] = {}
    sent1: dict[str, int] = {}
    t_window = (0.0, 0.0)
    gpu_thread_started = False
    try:
        for topic in own:
            harness.create_subscription(
                InferenceResult, topic,
                lambda m, tp=topic: results[tp].append((time.monotonic(), m.response_time, m.exec_time, m.met)), 100)
        for topic in foreign:
            harness.create_subscription(
                InferenceResult, topic, lambda m, tp=topic: unexpected.__setitem__(tp, unexpected.get(tp, 0) + 1), 10)
        for r in runs:
            harness.create_subscription(SchedulerStats, f"/{r.ns}/daris/stats",
                                        lambda m, run=r: run.stats.append((time.monotonic(), m)), 10)

        def on_diag(m: Any) -> None:
            for s in m.status:
                diags[s.name] = {"level": int.from_bytes(s.level, "little") if isinstance(s.level, bytes)
                                 else int(s.level), "message": s.message}

        harness.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 50)
        by_rate: dict[float, list[str]] = {}
        for r in runs:
            for t in r.settings.tasks:
                by_rate.setdefault(t.rate, []).append(t.topic)
        for rate, topics in sorted(by_rate.items()):  # live counters, read at the end
            counters.append(rgb8_cameras(harness, sorted(set(topics)), 1.0 / rate, width, height))
        published = {k: v for c in counters for k, v in c.items()}
        log(f"publishing {len(published)} cameras ({width}x{height} rgb8, "
            f"{', '.join(f'{k:g} Hz' for k in by_rate)}) on {', '.join(sorted(published))}")
        spin = Spinner(harness)

        # 1. both nodes up (first stats message)
        t0 = time.monotonic()
        while any(not r.stats for r in runs):
            for r in runs:
                if r.stats and r.ready_after is None:
                    r.ready_after = r.stats[0][0] - r.started
                    log(f"{r.ns} running after {r.ready_after:.1f} s")
                assert r.proc is not None
                if r.proc.poll() is not None:
                    raise RuntimeError(f"{r.ns} exited with code {r.proc.returncode} while starting:\n"
                                       + tail(r.log_path))
            if time.monotonic() - t0 > args.startup_timeout:
                raise RuntimeError(f"nodes not running after {args.startup_timeout:.0f} s: "
                                   + ", ".join(r.ns for r in runs if not r.stats))
            time.sleep(0.2)
        for r in runs:
            if r.ready_after is None:
                r.ready_after = r.stats[0][0] - r.started
                log(f"{r.ns} running after {r.ready_after:.1f} s")
        gpu_sampler.sample("ready")
        gpu_sampler.start()
        gpu_thread_started = True
        # 2. warm-up, then the measurement window
        time.sleep(args.warmup)
        w0 = time.monotonic()
        sent0 = {k: v for c in counters for k, v in c.items()}
        log(f"measuring for {args.seconds:.0f} s")
        deadline = w0 + args.seconds
        while time.monotonic() < deadline:
            for r in runs:
                assert r.proc is not None
                if r.proc.poll() is not None:
                    raise RuntimeError(f"{r.ns} exited with code {r.proc.returncode} while running:\n"
                                       + tail(r.log_path))
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
        w1 = time.monotonic()
        sent1 = {k: v for c in counters for k, v in c.items()}
        t_window = (w0, w1)
        # one stats message from after the window of each node
        t_wait = time.monotonic()
        while any(r.stats[-1][0] < w1 for r in runs) and time.monotonic() - t_wait < 5.0:
            time.sleep(0.1)
        gpu_sampler.sample("end of window")
    except RuntimeError as exc:
        log(f"error: {exc}")
        check("run", False, str(exc).splitlines()[0])
    except KeyboardInterrupt:
        check("run", False, "interrupted")
    finally:
        gpu_sampler.stop_event.set()
        if gpu_thread_started:
            gpu_sampler.join(10.0)
        for r in runs:  # SIGINT both, then wait
            if r.proc is not None and r.proc.poll() is None:
                r.proc.send_signal(signal.SIGINT)
        log("SIGINT sent to both nodes")
        for r in runs:
            if r.proc is None:
                continue
            try:
                r.exit_code = r.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                log(f"{r.ns} did not exit 60 s after SIGINT: killing its session")
                os.killpg(r.proc.pid, signal.SIGKILL)
                r.exit_code = r.proc.wait()
            if r.drain is not None:
                r.drain.join(5.0)
            time.sleep(0.5)
            r.leftover = session_processes(r.proc.pid)
            log(f"{r.ns} exited with code {r.exit_code}; processes of its session left: {len(r.leftover)}")
        gpu_sampler.sample("after exit")
        if spin is not None:
            spin.stop()
        harness.destroy_node()
        rclpy.try_shutdown()

    published = {k: (v, sent1.get(k, 0) - sent0.get(k, 0)) for c in counters for k, v in c.items()}
    summary = summarize(args, runs, results, unexpected, published, diags, t_window, gpu_sampler, env_info)
    for line in format_table(summary):
        log.block(line)

    # -- checks -------------------------------------------------------------------------------------------------
    if "run" not in checks:
        check("run", True, f"both nodes ran, {args.seconds:.0f} s measured")
    check("nodes_running", all(r.stats for r in runs),
          ", ".join(f"{r.ns}: {len(r.stats)} stats messages" for r in runs))
    res = summary["results"]
    missing = [t for t, v in res.items() if v["window_count"] == 0]
    hp_missing = [t for t in missing if res[t]["priority"] == "HP"]
    per_node = {ns: sum(v["window_count"] for v in res.values() if v["node"] == ns) for ns in NAMESPACES}
    check("results_on_own_topics", bool(res) and not hp_missing and all(per_node.values()),
          f"{sum(per_node.values())} results in the window ({per_node}) on {len(res) - len(missing)} of "
          f"{len(res)} topics" + (f"; none on {missing}" if missing else ""))
    if missing and not hp_missing:
        warnings.append(f"no results in the window on LP topics {missing} (rejected by admission?)")
    check("no_results_in_other_namespace", not unexpected,
          f"{sum(unexpected.values())} results on the other node's topics {sorted(unexpected)}" if unexpected
          else f"{len(foreign)} foreign result topics silent")
    want = {f"/{r.ns}/daris_scheduler: scheduler" for r in runs}
    check("diagnostics_per_node", want <= set(diags), f"/diagnostics scheduler statuses: {sorted(want & set(diags))}")
    devs = {ns: n.get("stats_device") for ns, n in summary["nodes"].items()}
    check("stats_device", all(devs[r.ns] == r.device for r in runs), f"SchedulerStats.device: {devs}")
    check("exit_codes_zero", all(r.exit_code == 0 for r in runs),
          ", ".join(f"{r.ns}: {r.exit_code}" for r in runs))
    check("no_processes_left", all(not r.leftover for r in runs),
          "; ".join(f"{r.ns}: {r.leftover}" for r in runs if r.leftover) or "none")
    if cpu:
        check("gpu_placement", None, "device cpu: no GPU")
    else:
        place = summary["gpu_placement"]
        seen = {r.ns: place[r.ns]["gpu_indices"] for r in runs}
        if not any(seen.values()):
            check("gpu_placement", None, "nvidia-smi shows none of the node pids (no nvidia-smi, or PIDs hidden "
                  f"in this container); per-GPU memory: {place.get('gpu_memory_delta_mib')}")
        else:
            check("gpu_placement", all(seen[r.ns] == [r.gpu] for r in runs),
                  "GPU indices per node (nvidia-smi --query-compute-apps): "
                  + ", ".join(f"{ns}: {v}" for ns, v in seen.items()))
    for ns, n in summary["nodes"].items():
        if n.get("hp_missed"):
            warnings.append(f"{ns}: {n['hp_missed']} HP deadline misses in the window")
    for w in warnings:
        log(f"warning: {w}")
    ok = all(c["ok"] is not False for c in checks.values())
    summary.update(ok=ok, checks=checks, warnings=warnings)
    (out / "two_gpu.json").write_text(json.dumps(summary, indent=1, default=str))
    log(f"{'OK' if ok else 'FAILED'}: wrote {out / 'two_gpu.json'}, {out / 'two_gpu.log'}, node logs and params")
    return 0 if ok else 1


def collect_environment(args: argparse.Namespace, install: Path, gpus: GpuSampler, width: int,
                        height: int) -> dict[str, Any]:
    from importlib import metadata

    from rclpy.utilities import get_rmw_implementation_identifier

    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    info: dict[str, Any] = {
        "host": socket.gethostname(), "python": sys.version.split()[0], "executable": sys.executable,
        "torch": version("torch"), "torchvision": version("torchvision"), "numpy": version("numpy"),
        "rclpy": version("ros-rclpy"), "rmw": get_rmw_implementation_identifier(),
        "ROS_DOMAIN_ID": os.environ.get("ROS_DOMAIN_ID"), "install": str(install),
        "FASTDDS_DEFAULT_PROFILES_FILE": os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE"),
        "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "CUDA_DEVICE_ORDER": os.environ.get("CUDA_DEVICE_ORDER"),
        "device_mode": args.device, "isolate": args.isolate, "frame": f"{width}x{height} rgb8",
        "cpu_count": os.cpu_count(),
    }
    rc, shm = run_cmd(["df", "-m", "/dev/shm"])
    info["dev_shm"] = shm.strip().splitlines()[-1] if rc == 0 and shm.strip() else shm.strip()
    if gpus.available:
        s = gpus.sample("before start")
        info["gpus"] = s["gpus"] if s else []
        rc, drv = run_cmd(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
        info["driver"] = drv.strip().splitlines()[0] if rc == 0 and drv.strip() else None
    return info


def _stats_at(run: NodeRun, t: float, after: bool) -> Any:
    """The last stats message at or before ``t`` (after=False), or the first one at or after it."""
    if not run.stats:
        return None
    if after:
        return next((m for ts, m in run.stats if ts >= t), run.stats[-1][1])
    before = [m for ts, m in run.stats if ts <= t]
    return before[-1] if before else run.stats[0][1]


def summarize(args: argparse.Namespace, runs: list[NodeRun], results: dict[str, list], unexpected: dict[str, int],
              published: dict[str, tuple[int, int]], diags: dict[str, Any], window: tuple[float, float],
              gpus: GpuSampler, env_info: dict[str, Any]) -> dict[str, Any]:
    """The run as a JSON-able dict (``published``: camera topic -> (frames in all, frames in the window))."""
    w0, w1 = window
    dur = max(w1 - w0, 1e-9)
    res_out: dict[str, Any] = {}
    nodes: dict[str, Any] = {}
    for r in runs:
        a, b = _stats_at(r, w0, after=False), _stats_at(r, w1, after=True)
        ta = {t.task: t for t in a.tasks} if a is not None else {}
        tb = {t.task: t for t in b.tasks} if b is not None else {}
        span = (b.uptime - a.uptime) if a is not None and b is not None else 0.0
        rows = []
        for t in r.settings.tasks:
            topic = f"/{r.ns}/{t.output_topic}"
            inwin = [x for x in results.get(topic, []) if w0 <= x[0] <= w1]
            resp = [x[1] for x in inwin]
            res_out[topic] = {
                "node": r.ns, "task": t.name, "priority": t.priority, "rate_hz": t.rate, "model": t.model,
                "camera_topic": t.topic, "camera_published_total": published.get(t.topic, (0, 0))[0],
                "camera_published_window": published.get(t.topic, (0, 0))[1],
                "total_count": len(results.get(topic, [])), "window_count": len(inwin),
                "jobs_per_s": len(inwin) / dur, "missed": sum(1 for x in inwin if not x[3]),
                "response_p50_ms": _ms(pct(resp, 50)), "response_p99_ms": _ms(pct(resp, 99)),
                "response_max_ms": _ms(max(resp) if resp else None),
                "exec_mean_ms": _ms(sum(x[2] for x in inwin) / len(inwin) if inwin else None),
            }
            sa, sb = ta.get(t.name), tb.get(t.name)
            row = {"task": t.name, "priority": t.priority}
            for f in ("frames", "released", "admitted", "rejected", "completed", "missed", "stale", "dropped",
                      "superseded"):
                row[f] = (int(getattr(sb, f)) - (int(getattr(sa, f)) if sa is not None else 0)) if sb is not None \
                    else None
            row["jobs_per_s"] = row["completed"] / span if span > 0 and row["completed"] is not None else None
            rows.append(row)

        def total(field_: str, prio: str | None = None, rows_: list = rows) -> int:
            return sum(x[field_] or 0 for x in rows_ if prio is None or x["priority"] == prio)

        nodes[r.ns] = {
            "pid": r.proc.pid if r.proc else None, "device_param": r.device, "gpu": r.gpu,
            "params_file": r.params.name, "log_file": r.log_path.name if r.log_path else None,
            "startup_s": r.ready_after, "exit_code": r.exit_code, "processes_left": r.leftover,
            "stats_messages": len(r.stats),
            "stats_device": b.device if b is not None else None, "backend": b.backend if b is not None else None,
            "policy": b.policy if b is not None else None,
            "layout": f"{b.n_contexts}x{b.n_streams}" if b is not None else None,
            "memory_source": b.memory_source if b is not None else None,
            "context_memory_mib": [round(c.memory_bytes / 2**20, 1) for c in b.contexts] if b is not None else [],
            "stats_span_s": span,
            "jobs_per_s": total("completed") / span if span > 0 else None,
            "completed": total("completed"), "missed": total("missed"), "rejected": total("rejected"),
            "released": total("released"), "frames": total("frames"), "stale": total("stale"),
            "dropped": total("dropped"),
            "hp_completed": total("completed", "HP"), "hp_missed": total("missed", "HP"),
            "lp_completed": total("completed", "LP"), "lp_missed": total("missed", "LP"),
            "miss_rate": total("missed") / total("completed") if total("completed") else None,
            "results_jobs_per_s": sum(v["window_count"] for v in res_out.values() if v["node"] == r.ns) / dur,
            "tasks": rows,
        }
    placement: dict[str, Any] = {}
    for r in runs:
        pid = r.proc.pid if r.proc else -1
        seen = sorted({a["gpu_index"] for s in gpus.samples if s["label"] != "after exit"
                       for a in s["compute_apps"] if a["pid"] == pid and a["gpu_index"] is not None})
        mem = max((a["used_memory_mib"] or 0 for s in gpus.samples for a in s["compute_apps"] if a["pid"] == pid),
                  default=None)
        placement[r.ns] = {"pid": pid, "expected_gpu": r.gpu, "gpu_indices": seen, "max_used_memory_mib": mem}
    before = next((s for s in gpus.samples if s["label"] == "before start"), None)
    during = [s for s in gpus.samples if s["label"] in ("ready", "running", "end of window")]
    if before and during:
        placement["gpu_memory_delta_mib"] = {
            g["index"]: max((x["memory_used_mib"] or 0) for s in during for x in s["gpus"] if x["index"] == g["index"])
            - (g["memory_used_mib"] or 0) for g in before["gpus"]}
        placement["gpu_utilization_max_pct"] = {
            g["index"]: max((x["utilization_pct"] or 0) for s in during for x in s["gpus"] if x["index"] == g["index"])
            for g in before["gpus"]}
    after = next((s for s in gpus.samples if s["label"] == "after exit"), None)
    if after is not None:
        pids = {r.proc.pid for r in runs if r.proc}
        placement["node_pids_on_gpus_after_exit"] = [a for a in after["compute_apps"] if a["pid"] in pids]
    return {
        "what": "two daris_ros scheduler nodes (namespaces /gpu0, /gpu1), cameras over DDS (scripts/two_gpu_run.py)",
        "window_s": dur if w1 > w0 else 0.0, "environment": env_info, "nodes": nodes, "results": res_out,
        "unexpected_results": unexpected, "gpu_placement": placement,
        "diagnostics": diags, "nvidia_smi": gpus.samples,
    }


def _ms(v: float | None) -> float | None:
    return None if v is None else round(v * 1e3, 3)


def format_table(s: dict[str, Any]) -> list[str]:
    hdr = (f"{'topic':<26}{'prio':<5}{'Hz':>5}{'sent':>7}{'frames':>7}{'results':>8}{'JPS':>7}{'missed':>7}"
           f"{'rejected':>9}{'p50 ms':>8}{'p99 ms':>8}")
    lines = [hdr, "-" * len(hdr)]
    for ns, n in s["nodes"].items():
        rows = {row["task"]: row for row in n["tasks"]}
        for topic, v in s["results"].items():
            if v["node"] != ns:
                continue
            row = rows.get(v["task"], {})

            def f(x: Any, spec: str) -> str:
                return format(x, spec) if isinstance(x, int | float) else "-"

            lines.append(f"{topic:<26}{v['priority']:<5}{v['rate_hz']:>5.0f}{v['camera_published_window']:>7}"
                         f"{f(row.get('frames'), 'd'):>7}{v['window_count']:>8}{v['jobs_per_s']:>7.1f}{v['missed']:>7}"
                         f"{f(row.get('rejected'), 'd'):>9}{f(v['response_p50_ms'], '.1f'):>8}"
                         f"{f(v['response_p99_ms'], '.1f'):>8}")
        jps = n["jobs_per_s"]
        lines.append(f"  {ns}: device {n['stats_device']} ({n['backend']} {n['policy']} {n['layout']}), "
                     f"{jps:.1f} jobs/s (node stats over {n['stats_span_s']:.1f} s)" if jps is not None else
                     f"  {ns}: no stats")
        lines.append(f"  {ns}: completed {n['completed']}, missed {n['missed']} (HP {n['hp_missed']}), rejected "
                     f"{n['rejected']}, started in {n['startup_s'] or 0:.1f} s, exit code {n['exit_code']}, "
                     f"memory {n['context_memory_mib']} MiB ({n['memory_source']})")
    p = s["gpu_placement"]
    for ns in ("gpu0", "gpu1"):
        if ns in p and s["nvidia_smi"]:
            lines.append(f"  nvidia-smi: {ns} pid {p[ns]['pid']} on GPU(s) {p[ns]['gpu_indices'] or '-'} "
                         f"(expected {p[ns]['expected_gpu']}), max {p[ns]['max_used_memory_mib']} MiB")
    if "gpu_memory_delta_mib" in p:
        lines.append(f"  per-GPU memory used during the run (MiB over the idle GPU): {p['gpu_memory_delta_mib']}, "
                     f"max utilisation %: {p['gpu_utilization_max_pct']}")
    return lines


if __name__ == "__main__":
    sys.exit(main())
