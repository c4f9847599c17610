"""The CUDA MPS control daemon: use a running one, or start one and stop it again.

``nvidia-cuda-mps-control -d`` starts the daemon; CUDA clients find it through the pipe directory
(``CUDA_MPS_PIPE_DIRECTORY``, NVIDIA's default ``/tmp/nvidia-mps``), and the daemon starts the MPS server
when the first client connects. ``echo quit | nvidia-cuda-mps-control`` stops daemon and server (once
their clients are gone). :class:`MpsDaemon` wraps this for the ``mps`` backend:

* :meth:`MpsDaemon.ensure` uses a daemon that answers in the pipe directory, or starts one there
  (``started`` tells which) and waits until it answers;
* :meth:`MpsDaemon.stop` stops the daemon only if this object started it, and waits until its
  processes are gone;
* every failure is a :class:`~.base.BackendError` that says why MPS is unavailable (no
  ``nvidia-cuda-mps-control`` on PATH, the daemon did not start, with the tail of its log).

Processes of the daemon are found through ``/proc`` (executable name and ``CUDA_MPS_PIPE_DIRECTORY`` in
their environment, readable by their owner or root).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
from pathlib import Path

from daris_ros.runtime.backends.base import BackendError

log = logging.getLogger("daris_ros.backends.mps")

CONTROL = "nvidia-cuda-mps-control"
DEFAULT_PIPE_DIR = "/tmp/nvidia-mps"  # NVIDIA's default
DEFAULT_LOG_DIR = "/tmp/nvidia-mps-log"


def default_pipe_dir() -> str:
    return os.environ.get("DARIS_MPS_PIPE_DIRECTORY") or os.environ.get("CUDA_MPS_PIPE_DIRECTORY") or DEFAULT_PIPE_DIR


def default_log_dir() -> str:
    return os.environ.get("DARIS_MPS_LOG_DIRECTORY") or os.environ.get("CUDA_MPS_LOG_DIRECTORY") or DEFAULT_LOG_DIR


def mps_processes(pipe_dir: str | None = None) -> list[tuple[int, str]]:
    """``(pid, name)`` of running MPS daemons/servers (``nvidia-cuda-mps-control``/``-server``); with
    ``pipe_dir``, only those whose environment names that pipe directory (default directory: no variable)."""
    out = []
    want = None if pipe_dir is None else os.path.realpath(pipe_dir)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        except OSError:
            continue
        name = os.path.basename(cmd)
        if not name.startswith("nvidia-cuda-mps"):
            continue
        if want is not None:
            try:
                env = (entry / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            dirs = [e.split(b"=", 1)[1].decode(errors="replace") for e in env
                    if e.startswith(b"CUDA_MPS_PIPE_DIRECTORY=")]
            have = os.path.realpath(dirs[0]) if dirs else os.path.realpath(DEFAULT_PIPE_DIR)
            if have != want:
                continue
        out.append((int(entry.name), name))
    return sorted(out)


class MpsDaemon:
    """Use or start the MPS control daemon of ``pipe_dir``; stop it on :meth:`stop` if started here."""

    def __init__(self, pipe_dir: str | None = None, log_dir: str | None = None, *, control: str = CONTROL,
                 start_timeout: float = 15.0) -> None:
        self.pipe_dir = os.path.abspath(pipe_dir or default_pipe_dir())
        self.log_dir = os.path.abspath(log_dir or default_log_dir())
        self.control = control
        self.start_timeout = start_timeout
        self.started = False
        self._exe: str | None = None

    # -- environment ---------------------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        """Variables a client (or the control program) needs to find this daemon."""
        return {"CUDA_MPS_PIPE_DIRECTORY": self.pipe_dir, "CUDA_MPS_LOG_DIRECTORY": self.log_dir}

    def executable(self) -> str:
        if self._exe is None:
            exe = shutil.which(self.control)
            if exe is None:
                raise BackendError(f"MPS is unavailable: {self.control!r} is not on PATH (it ships with the NVIDIA "
                                   "driver's compute utilities; MPS needs Linux and a Volta or newer GPU). Use "
                                   "backend 'green' for SM partitions without MPS, or 'str'")
            self._exe = exe
        return self._exe

    def _query(self, command: str, timeout: float = 5.0) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, **self.env()}
        return subprocess.run([self.executable()], input=command + "\n", capture_output=True, text=True,
                              env=env, timeout=timeout, check=False)

    # -- state ---------------------------------------------------------------------------------------
    def running(self) -> bool:
        """Whether a daemon answers in ``pipe_dir``."""
        if not os.path.exists(os.path.join(self.pipe_dir, "control")):
            return False
        try:
            res = self._query("get_server_list", timeout=5.0)
        except (OSError, subprocess.SubprocessError):
            return False
        return res.returncode == 0

    def processes(self) -> list[tuple[int, str]]:
        return mps_processes(self.pipe_dir)

    def log_tail(self, lines: int = 15) -> str:
        path = Path(self.log_dir) / "control.log"
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return f"(no log at {path})"

    # -- start / stop --------------------------------------------------------------------------------
    def ensure(self) -> None:
        """Use the daemon running in ``pipe_dir``, or start one there."""
        exe = self.executable()
        if self.running():
            log.info("mps: using the running MPS control daemon of %s", self.pipe_dir)
            return
        for d in (self.pipe_dir, self.log_dir):
            try:
                os.makedirs(d, exist_ok=True)
            except OSError as exc:
                raise BackendError(f"MPS is unavailable: cannot create {d}: {exc}") from exc
        env = {**os.environ, **self.env()}
        # Set before the daemon is launched: an exception while '-d' runs (SIGINT/SIGTERM at start-up) may come
        # after the daemon forked, and stop() must then still stop it (stop() of a daemon that never started
        # finds nothing to stop).
        self.started = True
        try:
            res = subprocess.run([exe, "-d"], capture_output=True, text=True, env=env, timeout=self.start_timeout,
                                 check=False)
        except (OSError, subprocess.SubprocessError) as exc:
            self.stop()
            raise BackendError(f"MPS is unavailable: '{exe} -d' failed: {exc}") from exc
        if res.returncode != 0:  # (e.g. another daemon started there meanwhile: not ours to stop)
            self.started = False
            raise BackendError(f"MPS is unavailable: '{exe} -d' exited with {res.returncode}: "
                               f"{(res.stderr or res.stdout).strip()}\n{self.log_tail()}")
        deadline = time.monotonic() + self.start_timeout
        while not self.running():
            if time.monotonic() > deadline:
                self.stop()
                raise BackendError(f"MPS is unavailable: the control daemon started in {self.pipe_dir} does not "
                                   f"answer after {self.start_timeout:.0f} s; its log:\n{self.log_tail()}")
            time.sleep(0.05)
        log.info("mps: started the MPS control daemon (pipe %s, log %s, pids %s)", self.pipe_dir, self.log_dir,
                 [p for p, _ in self.processes()])

    def stop(self, timeout: float = 15.0) -> bool:
        """Stop the daemon if this object started it (its clients must have exited). True when none of its
        processes is left."""
        if not self.started:
            return True
        self.started = False
        pids = [p for p, _ in self.processes()]
        try:
            self._query("quit", timeout=timeout)
        except (OSError, subprocess.SubprocessError) as exc:
            log.warning("mps: 'quit' to the control daemon failed: %s", exc)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            left = [p for p in pids if os.path.exists(f"/proc/{p}")
                    and not _is_zombie(p)]
            if not left and not self.running():
                log.info("mps: stopped the MPS control daemon of %s", self.pipe_dir)
                return True
            time.sleep(0.05)
        log.warning("mps: the MPS control daemon of %s is still running after 'quit' (%s)", self.pipe_dir,
                    self.processes())
        return False


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
