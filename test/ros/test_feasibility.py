"""Feasibility at start-up (issue 15, item 2): the real scheduler node (install space, cpu backend) on an HP task
set that cannot fit. Deterministic: the AFETs come from an ``afet_cache`` file with made-up values (the engine
reads a cached AFET instead of profiling), and no camera publishes, so no job runs and no MRET replaces them.

Task set (ResNet18, 4 stages of 20 ms each: AFET 80 ms), MPS 2 x 1:
  HP a, b, c at 10 Hz: u = 0.08 / 0.1 = 0.8 each; LP d at 5 Hz: u = 0.08 / 0.2 = 0.4.
  Algorithm 1: a -> 0, b -> 1, c -> 0 (tie: lowest index), d -> 1 (0.8 < 1.6).
  Context 0: eq. 4 = 1.6 > N_s = 1: infeasible; eq. 11 left: -0.6.
  Context 1: eq. 4 = 0.8, left 0.2; LP 0.4 > 0.2: expected rejection 1 - 0.2 / 0.4 = 50 %.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.node import Node
from ros_helpers import Spinner, start_scheduler, stop_scheduler

from daris_ros.core import Priority, TaskShare, check_feasibility

pytestmark = [pytest.mark.ros, pytest.mark.slow]

PARAMS = """
daris_scheduler:
  ros__parameters:
    policy: MPS
    backend: cpu
    device: cpu
    n_contexts: 2
    n_streams: 1
    stats_period: 0.5
    afet_cache: {cache}
    task_names: [a, b, c, d]
    tasks:
      a: {{topic: /feas/a/image_raw, priority: HP, rate: 10.0, model: resnet18, input_size: [32, 32]}}
      b: {{topic: /feas/b/image_raw, priority: HP, rate: 10.0, model: resnet18, input_size: [32, 32]}}
      c: {{topic: /feas/c/image_raw, priority: HP, rate: 10.0, model: resnet18, input_size: [32, 32]}}
      d: {{topic: /feas/d/image_raw, priority: LP, rate: 5.0, model: resnet18, input_size: [32, 32]}}
"""
AFET = [0.02, 0.02, 0.02, 0.02]  # seconds per ResNet18 stage: 80 ms a job
TASK = "80.0 ms every 100.0 ms"
EXPECTED = (f"[daris_scheduler] infeasible: context 0: HP utilization 1.60 > 1 (N_s = 1): tasks a (u=0.80: {TASK}), "
            f"c (u=0.80: {TASK})")


@pytest.fixture
def params(tmp_path):
    from daris_ros.runtime.profiling import cache_key

    cache = tmp_path / "afet.json"
    # the engine's key (Engine.afet_cache_key) on the cpu backend: device "cpu", layout N_c x N_s, OS, cuda_graphs
    # (default true), the model key "<model>@<h>x<w>:<weights>" and the profiling mode (auto = isolated on the CPU)
    key = cache_key("cpu", "cpu", "2x1", 1.0, True, "resnet18@32x32:", "isolated")
    cache.write_text(json.dumps({key: AFET}))
    path = tmp_path / "params.yaml"
    path.write_text(PARAMS.format(cache=cache))
    return path, cache, key


def _cache_untouched(cache, key) -> None:
    data = json.loads(cache.read_text())
    assert data == {key: AFET}, f"the node profiled instead of reading the cache (key mismatch?): {list(data)}"


def test_infeasible_hp_set_stops_the_node_with_exit_code_2_naming_tasks_and_figures(install_prefix, params):
    path, cache, key = params
    exe = install_prefix / "lib" / "daris_ros" / "scheduler_node"
    p = subprocess.run([str(exe), "--ros-args", "--params-file", str(path)], capture_output=True, text=True,
                       timeout=180)
    out = p.stdout + p.stderr
    _cache_untouched(cache, key)
    assert p.returncode == 2, out
    lines = [line for line in p.stderr.splitlines() if line.startswith("[daris_scheduler]")]
    assert len(lines) == 1, out  # one clear line
    assert lines[0].startswith(EXPECTED), lines[0]
    assert "feasibility: warn" in lines[0]
    # the per-context figures were logged first, one line per context
    assert "feasibility: context 0 (N_s = 1): HP utilization 1.60" in out
    assert "feasibility: context 1 (N_s = 1): HP utilization 0.80" in out
    assert "LP over-subscribed: context 1: LP utilization 0.40 > 0.20 left" in out  # the LP WARN comes first
    assert "running:" not in out  # never subscribed nor ran


def test_warn_runs_and_reports_the_figures_on_diagnostics(install_prefix, params):
    path, cache, key = params
    proc = start_scheduler(install_prefix, path, args=["-p", "feasibility:=warn"], env=dict(os.environ))
    rclpy.init()
    node = Node("feasibility_harness")
    got: list = []

    def on_diag(msg: DiagnosticArray) -> None:
        for st in msg.status:
            values = {kv.key: kv.value for kv in st.values}
            if st.name == "/daris_scheduler: scheduler" and values.get("lifecycle_state") == "active":  # (running)
                got.append(st)

    node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)
    spin = Spinner(node)
    out = ""
    try:
        t0 = time.monotonic()
        while len(got) < 2:
            assert proc.poll() is None, f"scheduler exited ({proc.returncode}):\n{proc.stdout.read()}"
            assert time.monotonic() - t0 < 120, "no /diagnostics within 120 s"
            time.sleep(0.1)
    finally:
        out = stop_scheduler(proc)
        spin.stop()
        node.destroy_node()
        rclpy.shutdown()
    assert proc.returncode == 0, out
    _cache_untouched(cache, key)
    assert "infeasible HP task set, running anyway (feasibility: warn): context 0: HP utilization 1.60 > 1" in out
    assert "LP over-subscribed: " in out and "expected LP rejection 50% without migration" in out
    st = got[-1]
    assert st.level == DiagnosticStatus.ERROR, st.message
    assert "infeasible: context 0 HP utilization 1.60 > 1 (N_s)" in st.message
    assert "LP over-subscribed: context 1 0.40 > 0.20 left (expected rejection 50%)" in st.message
    v = {kv.key: kv.value for kv in st.values}
    assert v["feasible"] == "false" and v["feasible_at_start"] == "false"
    assert float(v["hp_utilization_0"]) == pytest.approx(1.6)
    assert float(v["lp_left_0"]) == pytest.approx(-0.6)
    assert float(v["lp_expected_rejection_0"]) == 0.0  # no LP task in context 0
    assert float(v["hp_utilization_1"]) == pytest.approx(0.8)
    assert float(v["lp_utilization_1"]) == pytest.approx(0.4)
    assert float(v["lp_left_1"]) == pytest.approx(0.2)
    assert float(v["lp_expected_rejection_1"]) == pytest.approx(0.5)
    assert float(v["lp_expected_rejection"]) == pytest.approx(0.5)


def test_scheduler_diagnostic_levels_from_the_report():
    from daris_ros.ros.messages import scheduler_diagnostic

    def report(hp: float, lp: float):  # two HP tasks of hp / 2 each, one LP task; T_i = D_i = 1 s
        return check_feasibility([TaskShare("h1", Priority.HP, 0, hp / 2, hp / 2, 1.0, 1.0),
                                  TaskShare("h2", Priority.HP, 0, hp / 2, hp / 2, 1.0, 1.0),
                                  TaskShare("l", Priority.LP, 0, lp, lp, 1.0, 1.0)], 1, 1)

    ok = scheduler_diagnostic("/n", "cpu", {"policy": "MPS"}, [], feasibility=report(0.5, 0.25))
    assert ok.level == DiagnosticStatus.OK and ok.message == "OK"
    v = {kv.key: kv.value for kv in ok.values}
    assert v["policy"] == "MPS" and v["feasible"] == "true" and "feasible_at_start" not in v
    assert (v["hp_utilization_0"], v["lp_left_0"], v["lp_expected_rejection_0"]) == ("0.5", "0.5", "0")
    warn = scheduler_diagnostic("/n", "cpu", {}, [], feasibility=report(0.5, 1.0),
                                feasibility_at_start=report(0.5, 0.25))
    assert warn.level == DiagnosticStatus.WARN
    assert warn.message == "LP over-subscribed: context 0 1.00 > 0.50 left (expected rejection 50%)"
    assert {kv.key: kv.value for kv in warn.values}["feasible_at_start"] == "true"
    err = scheduler_diagnostic("/n", "cpu", {}, [], feasibility=report(1.5, 0.0))
    assert err.level == DiagnosticStatus.ERROR and err.message == "infeasible: context 0 HP utilization 1.50 > 1 (N_s)"
    # without a report: as before (no feasibility keys)
    plain = scheduler_diagnostic("/n", "cpu", {"policy": "MPS"}, [])
    assert [kv.key for kv in plain.values] == ["policy"] and plain.level == DiagnosticStatus.OK
