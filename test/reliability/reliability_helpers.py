"""Shared by the reliability tests and scripts: start the scheduler node from the install space as its own
process group, wait for a log line, stop it with a signal, and look for what it could leave behind
(child processes, its process group, shared memory segments)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class NodeProcess:
    proc: subprocess.Popen
    log: Path
    shm_before: set[str] = field(default_factory=set)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_for(self, text: str, timeout: float = 120.0) -> float:
        """Wait until ``text`` appears in the node's output; returns when (monotonic)."""
        t0 = time.monotonic()
        while text not in self.output():
            if self.proc.poll() is not None:
                raise AssertionError(f"node exited ({self.proc.returncode}) before {text!r}:\n{self.output()[-3000:]}")
            if time.monotonic() - t0 > timeout:
                raise AssertionError(f"no {text!r} within {timeout:g} s:\n{self.output()[-3000:]}")
            time.sleep(0.01)
        return time.monotonic()

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.pid, signal.SIGKILL)
            self.proc.wait()
            raise AssertionError(f"node did not exit within {timeout:g} s of {signal.Signals(sig).name}") from None

    def rss_kb(self) -> int:
        with open(f"/proc/{self.pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS")


def start_node(install_prefix: Path, params: str, workdir: Path, env: Mapping[str, str] | None = None,
               extra_args: tuple[str, ...] = ()) -> NodeProcess:
    """The installed scheduler_node in a new session (its pid is its process group), output to a file."""
    pfile = workdir / "params.yaml"
    pfile.write_text(params)
    log = workdir / "scheduler.log"
    exe = install_prefix / "lib" / "daris_ros" / "scheduler_node"
    shm = shm_entries()
    e = {**os.environ, "RCUTILS_LOGGING_BUFFERED_STREAM": "0", **(env or {})}
    with open(log, "w") as out:
        proc = subprocess.Popen([str(exe), "--ros-args", "--params-file", str(pfile), *extra_args],
                                start_new_session=True, stdout=out, stderr=subprocess.STDOUT, env=e)
    return NodeProcess(proc, log, shm)


def shm_entries() -> set[str]:
    return set(os.listdir("/dev/shm"))


def shm_of(pid: int) -> set[str]:
    """/dev/shm entries a running process has mapped or open."""
    out: set[str] = set()
    try:
        with open(f"/proc/{pid}/maps") as fh:
            for line in fh:
                if "/dev/shm/" in line:
                    out.add(line.split("/dev/shm/", 1)[1].split()[0])
    except OSError:
        pass
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("/dev/shm/"):
                out.add(target[len("/dev/shm/"):].split()[0])
    except OSError:
        pass
    return out


def shm_in_use_by_others(names: set[str], exclude: int) -> set[str]:
    """Those of ``names`` that another live process (not ``exclude``) maps or holds open."""
    used: set[str] = set()
    for d in os.listdir("/proc"):
        if d.isdigit() and int(d) != exclude:
            used |= shm_of(int(d)) & names
    return used


def session_processes(sid: int) -> list[int]:
    """Live processes whose session id is ``sid`` (the node was started in its own session)."""
    out = subprocess.run(["ps", "-e", "-o", "pid=,sid=,stat="], capture_output=True, text=True).stdout
    pids = []
    for line in out.splitlines():
        pid, s, stat = line.split()[:3]
        if int(s) == sid and not stat.startswith("Z"):
            pids.append(int(pid))
    return pids


def children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def lstsq_slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys over xs."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx if sxx else 0.0
