"""What handing one camera frame from an intake process to the node costs the node's reading thread: the
``multiprocessing.connection`` framing the intake pipes used until session 16 against ``ros/frame_pipe.py``.

    python -m daris_ros.bench.intake_pipe --kb 100,200 --frames 4000 --rate 1440
        --variants connection,records,connection,records --out DIR

A child process writes ``--frames`` frames of each size to a pipe, ``--rate`` a second. The reading
thread (this process) does per frame what the node did with each: ``connection``: ``recv_bytes``, the payload cut
out of the message (a copy) and copied again into a writable buffer for nvJPEG (``bytearray``, what
``decode_jpegs_on`` did with read-only bytes); ``records``: ``FrameReader.read`` (head, then the payload read into
a fresh writable buffer that nvJPEG shares). Figures per variant and size: frames per second, and the reading
thread's CPU time per frame (``time.thread_time``: its user time, which holds the GIL, and the system time of its
reads). Writes ``intake_pipe.json`` and ``.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

VARIANTS = ("connection", "records")
HEAD = struct.Struct("<HdQ")  # (the old wire format: subscription id, arrival, ROS time)


def write(variant: str, fd: int, frames: int, size: int, rate: float) -> None:
    """``frames`` frames of ``size`` bytes at ``rate`` a second (as cameras send them: the reader waits between
    frames with either framing)."""
    payload = os.urandom(size)
    if variant == "connection":
        from multiprocessing.connection import Connection

        conn = Connection(fd, readable=False)

        def send() -> None:
            conn.send_bytes(b"F" + HEAD.pack(1, time.monotonic(), 0) + payload)
    else:
        from daris_ros.ros.frame_pipe import FRAME, write_record

        def send() -> None:
            write_record(fd, FRAME, 1, payload, time.monotonic(), 0)
    due = time.monotonic()
    for _ in range(frames):
        due += 1.0 / rate
        wait = due - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        send()
    os.close(fd)


def read(variant: str, fd: int, frames: int) -> tuple[float, float, int]:
    """(wall seconds, thread CPU seconds, bytes) to take ``frames`` frames as the node does."""
    got = 0
    if variant == "connection":
        from multiprocessing.connection import Connection

        conn = Connection(fd, writable=False)
        cut = 1 + HEAD.size
        t0, c0 = time.perf_counter(), time.thread_time()
        for _ in range(frames):
            data = conn.recv_bytes()
            HEAD.unpack_from(data, 1)
            writable = bytearray(data[cut:])
            got += len(writable)
        t1, c1 = time.perf_counter(), time.thread_time()
        conn.close()
        return t1 - t0, c1 - c0, got
    from daris_ros.ros.frame_pipe import FrameReader

    reader = FrameReader(fd)
    t0, c0 = time.perf_counter(), time.thread_time()
    for _ in range(frames):
        got += len(reader.read().payload)
    t1, c1 = time.perf_counter(), time.thread_time()
    reader.close()
    return t1 - t0, c1 - c0, got


def run_once(variant: str, frames: int, size: int, rate: float) -> dict[str, Any]:
    read_fd, write_fd = os.pipe()
    from daris_ros.ros.frame_pipe import widen_pipe

    widen_pipe(write_fd)  # (as the node makes its intake pipes)
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    child = subprocess.Popen([sys.executable, "-m", "daris_ros.bench.intake_pipe", "--write", variant,
                              "--fd", str(write_fd), "--frames", str(frames), "--size", str(size), "--rate", str(rate)],
                             pass_fds=(write_fd,))
    os.close(write_fd)
    try:
        wall, cpu, got = read(variant, read_fd, frames)
    finally:
        if child.wait(30) != 0:
            raise RuntimeError(f"the writer ({variant}) exited with {child.returncode}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    writer_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if got != frames * size:
        raise RuntimeError(f"{variant}: read {got} bytes, expected {frames * size}")
    return {"variant": variant, "kb": size // 1000, "frames": frames, "frames_per_s": round(frames / wall, 1),
            "cpu_us_per_frame": round(cpu / frames * 1e6, 1),
            "writer_cpu_us_per_frame": round(writer_cpu / frames * 1e6, 1)}  # (its start-up included)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m daris_ros.bench.intake_pipe",
                                description=(__doc__ or "").split("\n")[0])
    p.add_argument("--variants", default="connection,records,connection,records")
    p.add_argument("--kb", default="100,200", help="frame sizes in KB (1000 bytes)")
    p.add_argument("--frames", type=int, default=4000)
    p.add_argument("--rate", type=float, default=1440.0, help="frames a second (48 cameras at 30 Hz: 1440)")
    p.add_argument("--commit", default="")
    p.add_argument("--out", type=Path)
    p.add_argument("--write", choices=VARIANTS, help=argparse.SUPPRESS)  # (the child)
    p.add_argument("--fd", type=int, help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.write:
        write(args.write, args.fd, args.frames, args.size, args.rate)
        return 0
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        p.error(f"unknown variant(s) {bad}; known: {', '.join(VARIANTS)}")
    sizes = [int(float(k) * 1000) for k in args.kb.split(",")]
    rows = [run_once(v, args.frames, size, args.rate) for size in sizes for v in variants]
    cmd = "python -m daris_ros.bench.intake_pipe " + " ".join(argv if argv is not None else sys.argv[1:])
    doc = {"command": cmd, "commit": args.commit, "cpus": os.cpu_count(),
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "runs": rows}
    lines = [f"# Handing a frame from an intake process to the node ({doc['date']})", "", f"```bash\n{cmd}\n```", "",
             f"Commit {args.commit or '(not given)'}, {doc['cpus']} CPUs, frames sent at {args.rate:g} a second; the "
             "reading thread's CPU time per frame (user + system), the writer's (its start-up included).", "",
             "| variant | frame KB | frames | frames/s | reading thread CPU us per frame | writer CPU us per frame |",
             "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['variant']} | {r['kb']} | {r['frames']} | {r['frames_per_s']:,.0f} | {r['cpu_us_per_frame']} | "
              f"{r['writer_cpu_us_per_frame']} |" for r in rows]
    text = "\n".join(lines) + "\n"
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "intake_pipe.json").write_text(json.dumps(doc, indent=2) + "\n")
        (args.out / "intake_pipe.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
