"""The MPS control daemon dying mid-run (issue 8, item 2), on a machine without a GPU.

NVIDIA's ``nvidia-cuda-mps-control`` exists only on the GPU machine, so these tests run the backend's daemon
supervision against a stand-in program of the same name and protocol (``-d`` starts a detached daemon that
creates ``<pipe>/control``; commands on stdin: ``get_server_list`` answers while the daemon lives, ``quit``
stops it). The workers are the ``mps`` backend's real worker processes with CPU workers. What is tested is
our side: the daemon found dead before a worker is replaced is started again in the same pipe directory,
counted, and the daemon we started is stopped at close; a daemon launched while a signal interrupts the
start is stopped too; a worker whose CUDA context died with the MPS server exits (a stand-in for the
context: CPU workers have none), so that the engine replaces it (test/gpu/test_gpu_reliability_more.py
kills the real daemon and server on the GPU)."""

from __future__ import annotations

import os
import signal
import stat
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from daris_ros.runtime.backends import mps_pool
from daris_ros.runtime.backends.mps import MpsBackend
from daris_ros.runtime.backends.mps_daemon import MpsDaemon, mps_processes
from daris_ros.runtime.backends.mps_worker import EXIT_CONTEXT_LOST
from daris_ros.runtime.models import build_staged_model

pytestmark = [pytest.mark.slow]

FAKE = '''#!{python}
"""Stand-in for nvidia-cuda-mps-control (tests only)."""
import os, signal, subprocess, sys, time
pipe = os.environ.get("CUDA_MPS_PIPE_DIRECTORY", "/tmp/nvidia-mps")
pidfile = os.path.join(pipe, "fake-daemon.pid")

def alive():
    try:
        pid = int(open(pidfile).read())
    except (OSError, ValueError):
        return None
    try:
        state = open(f"/proc/{{pid}}/stat").read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None
    return None if state == "Z" else pid

if sys.argv[1:] == ["-d"]:
    os.makedirs(pipe, exist_ok=True)
    subprocess.Popen(["nvidia-cuda-mps-control", __file__, "--serve"], executable=sys.executable,
                     start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL)
    time.sleep(float(os.environ.get("FAKE_MPS_START_DELAY", "0")))  # a slow front-end (the daemon runs)
    sys.exit(0)
if sys.argv[1:] == ["--serve"]:
    open(pidfile, "w").write(str(os.getpid()))
    open(os.path.join(pipe, "control"), "w").close()
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    while True:
        time.sleep(1)
cmd = sys.stdin.read().strip()
pid = alive()
if pid is None:
    sys.exit(1)
if cmd == "quit":
    os.kill(pid, signal.SIGTERM)
    os.remove(os.path.join(pipe, "control"))
sys.exit(0)
'''


@pytest.fixture
def fake_control(tmp_path: Path) -> Iterator[str]:
    exe = tmp_path / "bin" / "nvidia-cuda-mps-control"
    exe.parent.mkdir()
    exe.write_text(FAKE.format(python=sys.executable))
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    yield str(exe)
    for pid in _daemon_pids(str(tmp_path / "pipe")):  # a failed test leaves no stand-in daemon running
        os.kill(pid, signal.SIGKILL)


def _daemon_pids(pipe: str) -> list[int]:
    return [p for p, _ in mps_processes(pipe)]


def _notice_death(b: MpsBackend, context: int, timeout: float = 10.0) -> None:
    """Launch a stage on the dead worker of ``context`` (it starts the reader thread, which notices the death and
    drops the launch: never reported, the engine's watchdog would retry it) and wait until ``worker_alive`` says
    the worker is dead, as the watchdog does."""
    b.launch(context, 0, "r", 0, 1, [(torch.randn(1, 3, 32, 32), 0)])
    t0 = time.monotonic()
    while b.worker_alive(context, 0):
        assert time.monotonic() - t0 < timeout, "the dead worker was not noticed"
        time.sleep(0.01)


def _context_0_serves(b: MpsBackend) -> None:
    """A stage runs on context 0 (``run_now``'s context: the replaced worker's in these tests)."""
    y, dt = b.run_now("r", 0, 1, [(torch.randn(1, 3, 32, 32), 0)])
    assert dt > 0 and y.context == 0
    assert all(f.error is None for f in b.poll())  # the launch on the dead worker was dropped, or ran after


def test_daemon_started_found_dead_and_started_again(fake_control: str, tmp_path: Path) -> None:
    pipe, logd = str(tmp_path / "pipe"), str(tmp_path / "log")
    d = MpsDaemon(pipe, logd, control=fake_control, start_timeout=10.0)
    assert not d.running()
    d.ensure()
    assert d.started and d.running() and len(_daemon_pids(pipe)) == 1
    (pid,) = _daemon_pids(pipe)
    os.kill(pid, signal.SIGKILL)
    t0 = time.monotonic()
    while d.running():
        assert time.monotonic() - t0 < 5
        time.sleep(0.05)
    d.ensure()  # what the backend does before replacing a worker
    assert d.running() and _daemon_pids(pipe) != [pid]
    assert d.stop() and not d.running() and _daemon_pids(pipe) == []


def test_worker_replacement_after_the_daemon_died_restarts_it(fake_control: str, tmp_path: Path) -> None:
    pipe, logd = str(tmp_path / "pipe"), str(tmp_path / "log")
    b = MpsBackend(n_contexts=2, n_streams=1, cpu_workers=True, spares=0)
    b.daemon = MpsDaemon(pipe, logd, control=fake_control, start_timeout=10.0)  # the stand-in daemon
    model = build_staged_model("resnet18", input_size=(32, 32))
    try:
        b.start({"r": model})
        assert b.daemon.started and b.daemon.running()
        (daemon_pid,) = _daemon_pids(pipe)
        os.kill(daemon_pid, signal.SIGKILL)  # the daemon dies mid-run...
        old = b.worker_pid(0)
        os.kill(old, signal.SIGKILL)  # ...and (as MPS clients do) a worker with it
        _notice_death(b, 0)
        b.restart_worker(0, 0)  # what the engine's watchdog calls
        assert b.daemon_restarts == 1 and b.daemon.running()
        assert _daemon_pids(pipe) and _daemon_pids(pipe) != [daemon_pid]
        assert b.worker_alive(0, 0) and b.worker_pid(0) != old
        _context_0_serves(b)  # the replacement serves
        b.restart_worker(1, 0)  # a live worker: nothing to do, and the daemon answers: no second restart
        assert b.daemon_restarts == 1
    finally:
        b.close()
    assert _daemon_pids(pipe) == []  # the daemon we (re)started is stopped at close


def test_a_signal_while_the_daemon_starts_still_stops_it(fake_control: str, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGINT/SIGTERM at start-up can interrupt ``nvidia-cuda-mps-control -d`` after the daemon forked (the
    node turns the signal into an exception): the daemon must count as started here, so stop() stops it."""
    pipe, logd = str(tmp_path / "pipe"), str(tmp_path / "log")
    monkeypatch.setenv("FAKE_MPS_START_DELAY", "5")
    d = MpsDaemon(pipe, logd, control=fake_control, start_timeout=10.0)

    class Interrupted(BaseException):
        pass

    def interrupt(_signum: int, _frame: object) -> None:
        raise Interrupted

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 1.5)
    try:
        with pytest.raises(Interrupted):
            d.ensure()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    t0 = time.monotonic()
    while not _daemon_pids(pipe):  # (the stand-in daemon runs before its front-end returns)
        assert time.monotonic() - t0 < 5, "the stand-in daemon did not start"
        time.sleep(0.05)
    assert d.stop() and _daemon_pids(pipe) == []


# A stand-in for a CUDA context that dies with the MPS server (CPU workers have no CUDA context): the worker
# entry below is started by the worker pool instead of mps_worker.worker_main (monkeypatched; spawned workers
# import this module by name). While the file named by $DARIS_TEST_WORKER_STATE holds "stage", the stages
# of a first-generation worker fail on their own (the context still works: a bad input); while it holds
# "lost", they fail as an MPS client's do once its server is gone, and so does the worker's context probe.
# Replacements (generation >= 1) are healthy.
STATE_ENV = "DARIS_TEST_WORKER_STATE"
MPS_RPC_FAILED = "CUDA error: the remote procedural call between the MPS server and the MPS client failed"


def context_lost_worker_main(cfg: object, ctrl: object, req_wake: object, done_wake: object) -> None:
    from daris_ros.runtime.backends import mps_worker as mw

    path = Path(os.environ[STATE_ENV])

    def state() -> str:
        try:
            return path.read_text().strip()
        except OSError:
            return ""

    if cfg.generation == 0:  # type: ignore[attr-defined]
        launch = mw._Worker._launch

        def failing_launch(self: object, *args: object, **kwargs: object) -> object:
            now = state()
            if now == "stage":
                raise ValueError("bad input")
            if now == "lost":
                raise RuntimeError(MPS_RPC_FAILED)
            return launch(self, *args, **kwargs)

        def context_error(self: object) -> str | None:
            return "AcceleratorError: cudaErrorMpsRpcFailure" if state() == "lost" else None

        mw._Worker._launch = failing_launch  # type: ignore[method-assign]
        mw._Worker.context_error = context_error  # type: ignore[method-assign]
    mw.worker_main(cfg, ctrl, req_wake, done_wake)  # type: ignore[arg-type]


def test_workers_whose_context_died_with_the_daemon_exit_and_are_replaced(
        fake_control: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine with the ``mps`` backend's worker processes and the stand-in daemon. A stage failing on its
    own fails its job and leaves the worker serving. Then the daemon dies and takes both workers' contexts
    with it: their stages fail and their probes too, so each worker exits with EXIT_CONTEXT_LOST (before: it
    lived on, failing every stage, and was never replaced); the engine detects both deaths, the backend starts
    the daemon again before the first replacement, both contexts serve again and HP meets its deadlines."""
    from daris_ros.runtime.driver import SyntheticCameras, drain
    from daris_ros.runtime.engine import Engine, JobResult
    from daris_ros.settings import SchedulerSettings, TaskSettings

    state = tmp_path / "worker_state"
    state.write_text("")
    monkeypatch.setenv(STATE_ENV, str(state))
    monkeypatch.setattr(mps_pool, "worker_main", context_lost_worker_main)
    pipe, logd = str(tmp_path / "pipe"), str(tmp_path / "log")
    period, deadline = 0.1, 0.4  # (deadline: generous on the shared CI cores, as in test_worker_fault_process)
    tasks = tuple(TaskSettings(n, f"/{n}", p, period, deadline, "resnet18", input_size=(32, 32))
                  for n, p in (("hp", "HP"), ("lp", "LP")))
    s = SchedulerSettings(policy="MPS", backend="mps", n_contexts=2, n_streams=1, profile_runs=3, tasks=tasks,
                          worker_stage_timeout=10.0)
    results: list[JobResult] = []
    lock = threading.Lock()

    def on_result(r: JobResult) -> None:
        with lock:
            results.append(r)

    b = MpsBackend(n_contexts=2, n_streams=1, cpu_workers=True, spares=0)
    b.daemon = MpsDaemon(pipe, logd, control=fake_control, start_timeout=10.0)
    eng = Engine(s, on_result=on_result, backend=b)
    driver = SyntheticCameras(eng, [t.name for t in tasks], np.zeros((24, 32, 3), np.uint8))
    try:
        eng.load_models()
        eng.profile()
        eng.start()
        old = [b.worker_pid(c) for c in range(2)]
        old_slots = list(b.workers)
        driver.start()
        time.sleep(1.0)
        state.write_text("stage")  # stages fail on their own
        time.sleep(0.6)
        state.write_text("")
        time.sleep(0.6)
        assert not eng.faults.records and [b.worker_pid(c) for c in range(2)] == old
        assert all(b.worker_alive(c, 0) for c in range(2))
        with lock:
            bad_input = [r for r in results if "bad input" in r.error]
        (daemon_pid,) = _daemon_pids(pipe)
        os.kill(daemon_pid, signal.SIGKILL)  # the daemon (and with it the server) dies...
        t_kill = time.monotonic()
        state.write_text("lost")  # ...and the workers' contexts with it
        t0 = time.monotonic()
        while {r.context for r in list(eng.faults.records) if r.replaced is not None} != {0, 1}:
            assert time.monotonic() - t0 < 90, ("the workers were not replaced after their contexts died: "
                                                f"{[r.as_dict() for r in eng.faults.records]}")
            time.sleep(0.02)
        t_back = max(r.replaced for r in eng.faults.records)
        time.sleep(2.0)
        driver.stop()
        drain(eng, 20.0)
    finally:
        driver.stop()
        eng.close()
    assert bad_input and all(not r.met for r in bad_input)
    assert [s.process.exitcode for s in old_slots] == [EXIT_CONTEXT_LOST] * 2
    recs = list(eng.faults.records)
    assert sorted(r.context for r in recs) == [0, 1] and {r.reason for r in recs} == {"died"}
    assert all(r.detected - t_kill < 5.0 for r in recs)
    assert b.daemon_restarts == 1 and len(b.daemon_restart_s) == 1
    assert all(n != o for n, o in zip([b.worker_pid(c) for c in range(2)], old, strict=True))
    after = [r for r in results if r.release_time > t_back]
    hp_after = [r for r in after if r.task == "hp"]
    assert len(hp_after) >= 10 and all(r.met and not r.error for r in hp_after), [
        (r.job_id, r.met, r.error) for r in hp_after]
    assert {r.context for r in after if not r.error} == {0, 1}
    assert _daemon_pids(pipe) == []  # the daemon started again is stopped at close


def failing_restart_worker_main(cfg: object, ctrl: object, req_wake: object, done_wake: object) -> None:
    """mps_worker.worker_main whose first replacement (generation 1) fails to start, as a client does while a
    new MPS server is not ready yet."""
    from daris_ros.runtime.backends import mps_worker as mw

    if cfg.generation == 1:  # type: ignore[attr-defined]
        def setup(self: object) -> dict:
            raise RuntimeError("CUDA error: MPS server is not ready to accept new MPS client requests")

        mw._Worker.setup = setup  # type: ignore[method-assign]
    mw.worker_main(cfg, ctrl, req_wake, done_wake)  # type: ignore[arg-type]


def test_a_replacement_that_fails_to_start_leaves_nothing_and_the_next_one_serves(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import multiprocessing

    from daris_ros.runtime.backends.base import BackendError

    monkeypatch.setattr(mps_pool, "worker_main", failing_restart_worker_main)
    b = MpsBackend(n_contexts=1, n_streams=1, cpu_workers=True, spares=0)
    try:
        b.start({"r": build_staged_model("resnet18", input_size=(32, 32))})
        old = b.worker_pid(0)
        os.kill(old, signal.SIGKILL)
        _notice_death(b, 0)
        shm_before = {n for n in os.listdir("/dev/shm") if n.startswith("psm_")}
        with pytest.raises(BackendError, match="not ready"):
            b.restart_worker(0, 0)  # generation 1 fails to start
        assert {n for n in os.listdir("/dev/shm") if n.startswith("psm_")} <= shm_before  # its channel is gone
        assert [p for p in multiprocessing.active_children() if p.name.startswith("daris-mps-c0g1")] == []
        b.restart_worker(0, 0)  # what the watchdog does at its next poll: generation 2 serves
        assert b.worker_alive(0, 0) and b.worker_pid(0) != old and b.workers[0].generation == 2
        _context_0_serves(b)
    finally:
        b.close()
