"""SIGINT / SIGTERM at each phase of the node (loading models, profiling, running with a camera): the node
stops promptly with exit code 0, says which start-up phase it stopped in, and leaves nothing behind: no
child process, nothing in its session (process group), no shared memory segment it had open (Fast DDS's
/dev/shm segments) unless another live process still uses it (issue 8, item 5)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from reliability_helpers import children, session_processes, shm_entries, shm_in_use_by_others, shm_of, start_node

pytestmark = [pytest.mark.ros, pytest.mark.slow]

# Loading: several distinct (model, input size) pairs, each built and made resident in turn (> 1 s).
LOADING = """
daris_scheduler:
  ros__parameters:
    backend: cpu
    profile_runs: 1
    feasibility: warn  # a one-run profile on CI's loaded CPU can be far too slow (test_feasibility.py covers refusal)
    task_names: [a, b, c, d, e, f]
    tasks:
      a: {topic: /sd/a, rate: 1.0, model: inception_v3, input_size: [299, 299]}
      b: {topic: /sd/b, rate: 1.0, model: inception_v3, input_size: [320, 320]}
      c: {topic: /sd/c, rate: 1.0, model: resnet50, input_size: [224, 224]}
      d: {topic: /sd/d, rate: 1.0, model: resnet50, input_size: [256, 256]}
      e: {topic: /sd/e, rate: 1.0, model: unet, input_size: [128, 128]}
      f: {topic: /sd/f, rate: 1.0, model: inception_v3, input_size: [340, 340]}
"""
# Profiling: many profile runs of one small model (tens of seconds if not interrupted).
PROFILING = """
daris_scheduler:
  ros__parameters:
    backend: cpu
    profile_runs: 1000
    task_names: [a]
    tasks:
      a: {topic: /sd/a, rate: 5.0, model: resnet18, input_size: [96, 96]}
"""
RUNNING = """
daris_scheduler:
  ros__parameters:
    backend: cpu
    n_contexts: 2
    profile_runs: 1
    feasibility: warn  # a one-run profile on CI's loaded CPU can be far too slow (test_feasibility.py covers refusal)
    stats_period: 0.2
    task_names: [a, b]
    tasks:
      a: {topic: /sd/cam, priority: HP, rate: 20.0, model: resnet18, input_size: [64, 64]}
      b: {topic: /sd/cam2, priority: LP, rate: 20.0, model: resnet18, input_size: [64, 64]}
"""
# The log line that starts each phase (the node's, and test/reliability/engine_shutdown_run.py's on the GPU)
MARKERS = {"loading": "loading ", "profiling": "profiling the initial AFET", "running": "running:"}
PHASES = {"loading": (LOADING, MARKERS["loading"]), "profiling": (PROFILING, MARKERS["profiling"]),
          "running": (RUNNING, MARKERS["running"])}


def signal_at_phase(install_prefix: Path, workdir: Path, phase: str, sig: signal.Signals) -> dict[str, Any]:
    """Start the node, send ``sig`` in ``phase``, and measure what is left (also used by shutdown_run.py)."""
    params, marker = PHASES[phase]
    shm_before = shm_entries()
    node = start_node(install_prefix, params, workdir)
    camera = None
    try:
        node.wait_for(marker)
        if phase == "running":
            camera = subprocess.Popen([str(install_prefix / "lib" / "daris_ros" / "camera_publisher"), "--ros-args",
                                       "-p", "topic:=/sd/cam", "-p", "rate:=30.0", "-p", "width:=64",
                                       "-p", "height:=48"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
            time.sleep(1.0)  # frames flowing, jobs in flight
        else:
            time.sleep(0.2)
        alive_at_signal = node.proc.poll() is None
        kids = children(node.pid)
        shm_node = shm_of(node.pid)
        t_sig = time.monotonic()
        rc = node.stop(sig, timeout=20)
        stop_s = time.monotonic() - t_sig
    finally:
        if camera is not None:
            camera.send_signal(signal.SIGINT)
            camera.wait(timeout=20)
        if node.proc.poll() is None:
            node.stop(signal.SIGKILL)
    out = node.output()
    # Segments that existed before the node (e.g. LTTng-UST's per-user lttng-ust-wait-*) are not its own. New
    # entries of other processes are not looked at: other DDS programs on this machine come and go (and Fast
    # DDS keeps its sem.fastdds_port*_mutex semaphores by design).
    left = (shm_node & shm_entries()) - shm_before - shm_in_use_by_others(shm_node, exclude=node.pid)
    return {"phase": phase, "signal": sig.name, "alive_at_signal": alive_at_signal, "exit_code": rc,
            "stop_seconds": round(stop_s, 3), "traceback": "Traceback" in out,
            "phase_reported": phase == "running" or f"{sig.name} during start-up ({phase}): stopped" in out,
            "orphan_processes": len(session_processes(node.pid))
            + sum(subprocess.run(["kill", "-0", str(k)], capture_output=True).returncode == 0 for k in kids),
            "node_shm_segments": sorted(shm_node), "shm_segments_left": sorted(left), "log_tail": out[-3000:]}


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("phase", list(PHASES))
def test_signal_at_phase_leaves_nothing_behind(install_prefix, tmp_path, phase, sig):
    r = signal_at_phase(install_prefix, tmp_path, phase, sig)
    assert r["alive_at_signal"], r["log_tail"]
    if phase == "running":
        assert any(n.startswith("fastdds") for n in r["node_shm_segments"]), r  # the check sees DDS's segments
    assert r["exit_code"] == 0, f"exit code {r['exit_code']} after {sig.name} while {phase}:\n{r['log_tail']}"
    assert not r["traceback"], r["log_tail"]
    assert r["phase_reported"], r["log_tail"]
    assert r["stop_seconds"] < 10.0
    assert r["orphan_processes"] == 0
    assert r["shm_segments_left"] == [], f"shared memory left by the node: {r['shm_segments_left']}"


BACKEND_UNAVAILABLE = """
daris_scheduler:
  ros__parameters:
    backend: mps
    profile_runs: 1
    feasibility: warn  # a one-run profile on CI's loaded CPU can be far too slow (test_feasibility.py covers refusal)
    task_names: [a]
    tasks:
      a: {topic: /sd/a, rate: 5.0, model: resnet18, input_size: [32, 32]}
"""


@pytest.mark.skipif(os.path.exists("/dev/nvidiactl"), reason="a GPU machine: the mps backend may start here")
def test_backend_that_cannot_run_is_a_clear_error(install_prefix, tmp_path):
    node = start_node(install_prefix, BACKEND_UNAVAILABLE, tmp_path)
    rc = node.proc.wait(timeout=120)
    out = node.output()
    assert rc == 3, out[-3000:]
    assert "[daris_scheduler] the execution backend cannot run (loading): backend 'mps'" in out, out[-3000:]
    assert "Traceback" not in out
    assert session_processes(node.pid) == []
