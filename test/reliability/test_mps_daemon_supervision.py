"""The MPS control daemon dying mid-run (issue 8, item 2), on a machine without a GPU.

NVIDIA's ``nvidia-cuda-mps-control`` exists only on the GPU machine, so these tests run the backend's daemon
supervision against a stand-in program of the same name and protocol (``-d`` starts a detached daemon that
creates ``<pipe>/control``; commands on stdin: ``get_server_list`` answers while the daemon lives, ``quit``
stops it). The workers are the ``mps`` backend's real worker processes with CPU workers. What is tested is
our side: the daemon found dead before a worker is replaced is started again in the same pipe directory,
counted, and the daemon we started is stopped at close."""

from __future__ import annotations

import os
import signal
import stat
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from daris_ros.runtime.backends.mps import MpsBackend
from daris_ros.runtime.backends.mps_daemon import MpsDaemon, mps_processes
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
        b.send(0, 0, "r", 0, torch.randn(1, 3, 32, 32))
        lost = b.poll(5.0)
        while not b.workers[0].lost_handled:
            lost += b.poll(0.1)
        assert lost and all(c.error is not None for c in lost)
        b.restart_worker(0, 0)  # what the engine's watchdog calls
        assert b.daemon_restarts == 1 and b.daemon.running()
        assert _daemon_pids(pipe) and _daemon_pids(pipe) != [daemon_pid]
        assert b.worker_alive(0, 0) and b.worker_pid(0) != old
        b.send(0, 0, "r", 0, torch.randn(1, 3, 32, 32))  # the replacement serves
        got: list = []
        t0 = time.monotonic()
        while not got:
            assert time.monotonic() - t0 < 30
            got = b.poll(1.0)
        assert got[0].error is None
        b.restart_worker(1, 0)  # a live worker: nothing to do, and the daemon answers: no second restart
        assert b.daemon_restarts == 1
    finally:
        b.close()
    assert _daemon_pids(pipe) == []  # the daemon we (re)started is stopped at close
