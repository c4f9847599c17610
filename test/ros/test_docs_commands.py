"""Every shell command in README.md and docs/ is run here or checked to parse (issue 15, item 7).

The commands are the logical lines of the ```bash / ```sh / ```shell / ```console blocks (backslash
continuations joined, a heredoc kept with its command, comments dropped). Each is listed below in exactly
one class, by its file and its text:

- ``RUN``: runnable on the CPU in CI. It runs in a scratch directory (``config/``, ``daris_ros/``,
  ``scripts/``, ``test/`` linked from the repository) with the install space on ``PATH``, in the order of its
  file (later commands use what earlier ones wrote), and must exit 0 (or a listed code) and print
  ``expect``. Arguments are shortened only through ``replace``/``append``, each with ``why``.
- ``CHECK``: needs a GPU, a ROS install (``ros2``), a vehicle or minutes. It is parsed instead: the executable
  or module exists, every ``--flag`` is accepted by that tool's argparse parser, every repository path it
  names exists, every ``config/*.yaml`` parameter file it names validates with the settings code; ``ros2
  launch`` arguments are declared by the launch file, ``ros2 param set`` names a declared parameter,
  ``ros2 topic echo`` a topic the node publishes, ``make`` a Makefile target.

A command in the docs that is in neither table fails ``test_every_command_is_classified`` with its file and
line; an entry whose command left the docs fails too. Files under docs/ that are records of one GPU run (the
command line that produced them, kept as run) are listed in ``RECORDS`` and not read. Untagged fenced blocks
fail: commands are tagged ``bash``, output ``text``.

Run with ``scripts/run_in_install.sh pytest -q test/ros/test_docs_commands.py`` (the install space on PATH).
"""

from __future__ import annotations

import argparse
import configparser
import importlib
import importlib.util
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from unittest import mock

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SHELL_LANGS = {"bash", "sh", "shell", "console"}

# Files under docs/ that are records of a run (their command is the one that produced them, kept as run, and
# may name options that have since gone): not user instructions, so not read here.
RECORDS: dict[str, str] = {
    "docs/benchmarks/**/summary.md": "a bench run's summary as printed, with its command line at the top",
    "docs/benchmarks/**/batching_results*.md": "a batching bench run's result, with its command line at the top",
    "docs/benchmarks/engine/*/engine_load.md": "a daris-engine-load run's result, with its command line",
    "docs/benchmarks/engine/instant/*/engine_load.md": "daris-engine-load runs on the instant backend, with their "
                                                       "command lines",
    "docs/benchmarks/**/session6/*.md": "session 6 GPU runs' results, with their command lines",
    "docs/benchmarks/**/session13/*.md": "session 13 GPU runs' results, with their command lines",
    "docs/benchmarks/intake/intake_cost.md": "a bench.intake_cost run's result, with its command line",
    "docs/benchmarks/intake/intake_pipe.md": "a bench.intake_pipe run's result, with its command line",
    "docs/benchmarks/perception/vehicle_run*.md": "daris-node-e2e runs of the vehicle perception set, with their "
                                                  "command lines",
    "docs/benchmarks/batching.md": "'Commands, as run on the device machine' for the committed batching results",
    "docs/benchmarks/mps.md": "session 2's MPS runs; the page says their options no longer exist (history)",
    "docs/benchmarks/upper/README.md": "the command of the committed upper-baseline run",
}


def doc_files() -> list[Path]:
    records = {p for pattern in RECORDS for p in REPO.glob(pattern)}
    files = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
    return [f for f in files if f not in records]


@dataclass(frozen=True, slots=True)
class DocCommand:
    file: str  # relative to the repository
    line: int  # first line of the command
    text: str  # the logical command: continuations joined with single spaces, comments dropped


@dataclass(frozen=True, slots=True)
class Block:
    file: str
    line: int  # line of the opening fence
    lang: str
    lines: tuple[str, ...]


def fenced_blocks(path: Path) -> Iterator[Block]:
    rel = str(path.relative_to(REPO))
    opening: tuple[int, str, str] | None = None  # line, indent, lang
    body: list[str] = []
    for i, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        m = re.match(r"^(\s*)```(\S*)\s*$", raw)
        if opening is None:
            if m:
                opening, body = (i, m.group(1), m.group(2)), []
        elif m and not m.group(2):
            yield Block(rel, opening[0], opening[2], tuple(body))
            opening = None
        else:
            body.append(raw[len(opening[1]):] if raw.startswith(opening[1]) else raw.lstrip())
    assert opening is None, f"{rel}:{opening and opening[0]}: fenced block never closed"


def _strip_comment(line: str) -> str:
    """The line without a trailing ``# comment`` (a ``#`` outside quotes that starts a word)."""
    quote = ""
    for j, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (j == 0 or line[j - 1].isspace()):
            return line[:j].rstrip()
    return line.rstrip()


def block_commands(block: Block) -> Iterator[DocCommand]:
    lines = list(block.lines)
    i = 0
    while i < len(lines):
        start = i
        text = _strip_comment(lines[i])
        while text.endswith("\\") and i + 1 < len(lines):
            i += 1
            text = text[:-1].rstrip() + " " + _strip_comment(lines[i]).strip()
        i += 1
        heredoc = re.search(r"<<-?\s*'?\"?(\w+)'?\"?", text)
        if heredoc:  # keep the heredoc's body with its command, verbatim
            end = heredoc.group(1)
            body: list[str] = []
            while i < len(lines) and lines[i].strip() != end:
                body.append(lines[i])
                i += 1
            i += 1
            text = "\n".join([text, *body, end])
        if text.strip():
            yield DocCommand(block.file, block.line + 1 + start, text.strip())


def doc_commands() -> list[DocCommand]:
    return [c for f in doc_files() for b in fenced_blocks(f) if b.lang in SHELL_LANGS for c in block_commands(b)]


# ----------------------------------------------------------------------------------------------- the classes


@dataclass(frozen=True, slots=True)
class Run:
    expect: str  # a regular expression the command's output (stdout + stderr) must match
    replace: tuple[tuple[str, str], ...] = ()  # (text in the documented command, what runs instead)
    append: str = ""  # arguments added at the end
    why: str = ""  # why the command is changed (required with replace/append)
    rc: tuple[int, ...] = (0,)
    timeout: float = 180.0

    def command(self, text: str) -> str:
        for old, new in self.replace:
            assert old in text, f"override {old!r} no longer in the command {text!r}"
            text = text.replace(old, new)
        return f"{text} {self.append}" if self.append else text


@dataclass(frozen=True, slots=True)
class Check:
    why: str  # why it is not run here
    files: tuple[str, ...] = ()  # repository files it relies on without naming them as a path
    renames: tuple[tuple[str, str], ...] = ()  # (path as written, the repository path it is)


_SIM_EXPECT = r"throughput [\d.]+ JPS"
_DEMO_BAG = ("--rate 30 --duration 10", "--rate 30 --duration 1 --width 64 --height 48")
_BAG_WHY = "1 s of 64x48 frames instead of 10 s of 640x480 (1.1 GB): the same tool and code path, CI-sized"

RUN: dict[tuple[str, str], Run] = {
    ("README.md", "make demo"): Run(
        expect=r"promise: 0 HP deadline misses[\s\S]*RESULT: ",
        replace=(("make demo", "daris-demo --duration 2"),),
        why="make demo = colcon build (done: the tests run in the built install space) + daris-demo; 2 s of "
            "measurement instead of 30. Exit 3 (an HP miss) is accepted: CI's loaded cores are not the demo's "
            "promise to check (no latency asserts in CI); the demo must run and print its verdict",
        rc=(0, 3)),
    # docs/replay.md, the walkthrough and its sections, in order
    ("docs/replay.md", "daris-make-bag bags/demo4 --cameras 4 --names front_left,front_right,left,right "
                       "--prefix /demo --rate 30 --duration 10 --jitter-ms 2 --drop-prob 0.01"): Run(
        expect=r"/demo/front_left/image_raw", replace=(_DEMO_BAG,), why=_BAG_WHY),
    ("docs/replay.md", "daris-replay bags/demo4 --config my.yaml --out runs/base"): Run(
        expect=r"report", why=""),
    ("docs/replay.md", "daris-make-bag bags/cams4 --cameras 4 --width 640 --height 480 --encoding rgb8 --rate 30 "
                       "--duration 10 --jitter-ms 2 --drop-prob 0.01 --seed 0"): Run(
        expect=r"/cameras/cam3/image_raw",
        replace=(("--width 640 --height 480", "--width 64 --height 48"), ("--duration 10", "--duration 1")),
        why=_BAG_WHY),
    ("docs/replay.md", "python - <<'EOF'\nfrom rosbags.rosbag2 import Reader\nwith Reader(\"bags/cams4\") as r:\n"
                       "    for c in r.connections:\n        print(c.topic, c.msgtype, c.msgcount)\nEOF"): Run(
        expect=r"/cameras/cam0/image_raw sensor_msgs/msg/Image \d+"),
    ("docs/replay.md", "daris-play bags/cams4"): Run(expect=r"/cameras/cam0/image_raw"),
    ("docs/replay.md", "daris-play bags/cams4 --rate 0.5 --loop"): Run(
        expect=r"/cameras/cam0/image_raw", append="--loops 1",
        why="--loop plays until Ctrl-C: one pass here"),
    ("docs/replay.md", "daris-play bags/cams4 --start-offset 2 --duration 5"): Run(
        expect=r"/cameras/cam0/image_raw",
        replace=(("--start-offset 2 --duration 5", "--start-offset 0.5 --duration 0.3"),),
        why="the bag here is 1 s long (see daris-make-bag above)"),
    ("docs/replay.md", "daris-play bags/cams4 --remap /cameras/cam0/image_raw:=/front/image_raw"): Run(
        expect=r"/front/image_raw"),
    ("docs/replay.md", "daris-play bags/cams4 --topics /cameras/cam0/image_raw /cameras/cam1/image_raw"): Run(
        expect=r"/cameras/cam1/image_raw"),
    ("docs/replay.md", "daris-play bags/cams4 --clock"): Run(expect=r"/cameras/cam0/image_raw"),
    ("docs/replay.md", "daris-record out/run1 /daris/front/result /daris/rear/result /daris/stats /diagnostics "
                       "--use-sim-time"): Run(
        expect=r"out/run1", append="--duration 1", why="it records until Ctrl-C: 1 s here"),
    ("docs/replay.md", "daris-record out/run1 /daris/front/result=daris_ros/msg/InferenceResult --duration 60 "
                       "--storage sqlite3"): Run(
        expect=r"out/run2", replace=(("out/run1", "out/run2"), ("--duration 60", "--duration 1")),
        why="1 s instead of 60; out/run1 was written by the command above (the output must not exist)"),
    ("docs/replay.md", "daris-report runs/base/output --out runs/base [--strict] [--zoom S] [--pictures N] "
                       "[--frames INPUT_BAG]"): Run(
        expect=r"report", replace=((" [--strict] [--zoom S] [--pictures N] [--frames INPUT_BAG]", ""),),
        why="the bracketed options are optional (a synopsis); runs/base/output is the daris-replay run above"),
    ("docs/replay.md", "daris-report runs/base/output --out runs/base"): Run(expect=r"report"),
    ("docs/replay.md", "daris-compare --outputs runs/base/output runs/tuned/output --out runs/base_vs_tuned"): Run(
        expect=r"compare", replace=(("runs/tuned/output", "runs/base/output"),),
        why="one replay run here (a second needs another ~15 s of node start-up): it is compared with itself"),
    # docs/simulator.md
    ("docs/simulator.md", "daris-sim config/sim/resnet18_150.yaml"): Run(expect=_SIM_EXPECT),
    ("docs/simulator.md", "python -m daris_ros.sim.cli config/sim/resnet18_150.yaml"): Run(expect=_SIM_EXPECT),
    ("docs/simulator.md", "python -m daris_ros.sim.cli config/sim/resnet18_150.yaml --seed 3 --json /tmp/r150.json"):
        Run(expect=_SIM_EXPECT, replace=(("/tmp/r150.json", "r150.json"),),
            why="the scratch directory, not a /tmp file shared with other runs"),
    ("docs/simulator.md", "python -m daris_ros.sim.cli config/sim/resnet18_150.yaml --set scheduler.no_last=true "
                          "--set duration=5"): Run(expect=_SIM_EXPECT),
    ("docs/simulator.md", "python -m daris_ros.sim.cli config/sim/resnet18_100.yaml --per-task"): Run(
        expect=_SIM_EXPECT),
    ("docs/simulator.md", "time PYTHONPATH=. python -m daris_ros.sim.cli config/sim/scale_1000.yaml"): Run(
        expect=_SIM_EXPECT, append="--set duration=3",
        why="3 of its 60 simulated seconds (all 60 take ~7 s of CPU): the same 1,000 tasks"),
}

_GPU = "needs an NVIDIA GPU"
_ROS2 = "needs the ros2 command line (a ROS install); here only PyPI wheels without ros2cli/launch_ros"
_SETUP = "sets up a ROS workspace on a machine with ROS (clone, pip, colcon): what scripts/build.sh does here"
_REPLAY_ROS2 = "the daris tools' walkthrough without them: ros2 bag and ros2 run (a ROS install)"

CHECK: dict[tuple[str, str], Check] = {
    ("README.md", "make test"): Check("the whole test suite, this test included (CI runs it)"),
    ("README.md", "export FASTDDS_DEFAULT_PROFILES_FILE=$(ros2 pkg prefix daris_ros)/share/daris_ros/config/"
                  "fastdds_large_frames.xml"): Check(_ROS2, files=("config/fastdds_large_frames.xml",)),
    ("README.md", "mkdir -p ~/ws/src && cd ~/ws/src && git clone <this repository> daris_ros"): Check(_SETUP),
    ("README.md", "pip install -r daris_ros/requirements/torch.txt"): Check(
        _SETUP, renames=(("daris_ros/requirements/torch.txt", "requirements/torch.txt"),)),
    ("README.md", "cd ~/ws && colcon build --packages-select daris_ros && source install/setup.bash"): Check(
        _SETUP, files=("package.xml",)),
    ("README.md", "ros2 launch daris_ros daris.launch.py"): Check(_ROS2),
    ("README.md", "ros2 launch daris_ros daris.launch.py config:=/path/to/my_tasks.yaml namespace:=vehicle1"): Check(
        _ROS2),
    ("README.md", "ros2 topic echo /daris/front/detections"): Check(_ROS2),
    ("README.md", "ros2 topic echo /daris/front/result"): Check(_ROS2),
    ("README.md", "scripts/run_in_install.sh scheduler_node --ros-args --params-file config/vehicle_perception.yaml"):
        Check(_GPU),
    ("README.md", "ros2 topic echo /daris/stats"): Check(_ROS2),
    ("README.md", "ros2 topic echo /diagnostics"): Check(_ROS2),
    ("README.md", "ros2 param set /daris_scheduler mret_window 7"): Check(_ROS2),
    ("README.md", "ros2 param set /daris_scheduler tasks.rear.rate 30.0"): Check(_ROS2),
    ("README.md", "ros2 param set /daris_scheduler tasks.rear.priority HP"): Check(_ROS2),
    ("README.md", 'ros2 param set /daris_scheduler task_names "[front, rear, left]"'): Check(_ROS2),
    ("README.md", "ros2 param set /daris_scheduler tasks.left.topic /camera/left/image_raw"): Check(_ROS2),
    ("README.md", "ros2 param set /daris_scheduler tasks.left.model resnet18"): Check(_ROS2),
    ("README.md", "ros2 param set /daris_scheduler tasks.left.rate 15.0"): Check(_ROS2),
    ("docs/gpu_runtime.md", "DARIS_STALL_PROBE=/tmp/stalls.json DARIS_STALL_PROBE_MS=10 ros2 run daris_ros "
     "scheduler_node --ros-args --params-file my.yaml"): Check(
        _ROS2 + "; test/unit/test_stall_probe.py runs the probe on an engine's loop"),
    ("docs/gpu_runtime.md", "PYTHONPATH=$PWD python -m daris_ros.bench.cli --models resnet18,unet,inception_v3,mixed "
                            "--quick --ablations resnet18 --seconds 3 --baseline-seconds 1.5"): Check(
        _GPU + " (the bench sweep; test/unit/test_bench_engine.py runs the bench on the cpu backend)"),
    ("docs/benchmarks/node_e2e/README.md", "df -h /dev/shm; scripts/device_ros.sh "
     "/tmp/daris_ros/install/lib/daris_ros/daris-node-e2e --systems node --sweep 12,24,36,48 --precision fp16 "
     "--param afet_cache=/tmp/daris_afet.json --budget 480 --commit <sha> --out $OUT/node_e2e_node"): Check(_GPU),
    ("docs/benchmarks/node_e2e/README.md", "scripts/device_ros.sh /tmp/daris_ros/install/lib/daris_ros/daris-node-e2e "
     "--systems per-camera --sweep 12,24,36,48 --precision fp16 --budget 480 --commit <sha> "
     "--out $OUT/node_e2e_per_camera"): Check(_GPU),
    ("docs/benchmarks/node_e2e/README.md", ".venv/bin/python -m daris_ros.bench.node_e2e --combine "
     "<files_at>/node_e2e_node/node_e2e.json <files_at>/node_e2e_per_camera/node_e2e.json "
     "--out docs/benchmarks/node_e2e"): Check("combines the two GPU runs' files above"),
    ("docs/benchmarks/node_e2e/README.md", "scripts/run_in_install.sh install/daris_ros/lib/daris_ros/daris-node-e2e "
     "--sweep 3 --systems node,per-camera --group HP:resnet18:1,LP:resnet18:1,LP:unet:1 --rate 2 --width 64 "
     "--height 48 --seconds 4 --warmup 1 --backend cpu --device cpu --contexts 1 --os 1 --input-size 32x32 "
     "--profile-runs 1 --out /tmp/node_e2e"): Check(
        "six node runs of ~15 s each (minutes on CI); test/ros/test_node_e2e.py runs this sweep"),
    ("docs/benchmarks/decode_priority/README.md", "scripts/cpu_decode_priority.sh 5fc8db6 5 --seconds 8 --warmup 2 "
     "--hp 1 --lp 8 --rate 15"): Check(
        "ten 8 s runs on two trees (minutes); test/runtime/test_engine_decode_priority.py checks the decode order"),
    ("docs/reliability/README.md", "scripts/reliability_fuzz.sh 10000 0 docs/reliability/fuzz_10k.json"): Check(
        "10,000 malformed frames at 400 msg/s (minutes); test/reliability/test_fuzz.py runs the fuzzer briefly"),
    ("docs/reliability/README.md", "scripts/run_in_install.sh python test/reliability/worker_kill_run.py "
     "--kills 50 --json docs/reliability/worker_kill_cpu.json"): Check(
        "50 kills 0.5 s apart; test/reliability/test_worker_fault.py kills workers in CI"),
    ("docs/reliability/README.md", "scripts/run_in_install.sh python test/reliability/shutdown_run.py --repeat 3 "
     "--json docs/reliability/shutdown_cpu.json"): Check(
        "18 node runs (minutes); test/reliability/test_shutdown.py signals the node in CI"),
    ("docs/reliability/README.md", 'GPU_TESTS="test/gpu/test_gpu_reliability_more.py test/gpu/test_gpu_jpeg.py '
     'test/gpu/test_gpu_reliability.py" TEST_TIMEOUT=500 scripts/gpu_session.sh'): Check(_GPU),
    ("docs/reliability/README.md", "python3 test/reliability/engine_soak_run.py --backend mps --contexts 2 --hp 4 "
     "--lp 8 --duration 360 --warmup 60 --window 60 --json $OUT/soak_gpu.json"): Check(_GPU + " (MPS), 6 min"),
    ("docs/benchmarks/sm_limit/README.md", "python -m daris_ros.bench.sm_limit --limits 0,16 --configs "
     "green:MPS:2x1:1,str:STR:1x3:1 --precision fp16 --channels-last --seconds 10 --warmup 2 --commit f170324 "
     "--out $OUT/sm_limit"): Check(_GPU),
    ("docs/benchmarks/sm_limit/sm_limit.md", "python -m daris_ros.bench.sm_limit --limits 0,16 --configs "
     "green:MPS:2x1:1,str:STR:1x3:1 --precision fp16 --channels-last --seconds 10 --warmup 2 --commit f170324 "
     "--out /root/out/sm_limit"): Check(_GPU + " (the bench's own record of the command above)"),
    ("docs/replay.md", "daris-compare bags/demo4 my.yaml tuned.yaml --out runs/base_vs_tuned"): Check(
        "two node runs (~40 s on CI); daris-replay and daris-compare --outputs are run above"),
    ("docs/replay.md", "ros2 run daris_ros scheduler_node --ros-args -p use_sim_time:=true ..."): Check(_ROS2),
    ("docs/replay.md", "daris-play bags/cams4 --clock --fast --wait-subscribers 1 --wait-clock-subscribers 1"): Check(
        "waits for a subscriber (a scheduler node); test/bags/test_bags_player.py plays --fast to subscribers"),
    ("docs/replay.md", "daris-replay BAG --config PARAMS.yaml --out DIR [--rate R | --fast] [--clock] "
     "[--remap OLD:=NEW ...] [--duration S] [--start-offset S] [--namespace NS] [--best-effort] "
     "[--record-inputs auto|yes|no] [--ready-timeout S] [--drain-timeout S] [--storage mcap|sqlite3] [--zoom S] "
     "[--overwrite] [--no-report] [-q]"): Check("a synopsis with placeholders"),
    ("docs/replay.md", "daris-compare BAG CONFIG_A CONFIG_B --out DIR [--labels A B] [any daris-replay option]"):
        Check("a synopsis with placeholders"),
    ("docs/replay.md", "daris-compare --outputs runs/a/output runs/b/output --out DIR"): Check(
        "placeholders; the same with real runs is run above"),
    ("docs/replay.md", "ros2 bag info bags/cams4"): Check(_REPLAY_ROS2),
    ("docs/replay.md", "ros2 run daris_ros scheduler_node --ros-args --params-file my.yaml"): Check(_REPLAY_ROS2),
    ("docs/replay.md", "ros2 bag record -o runs/base/output -s mcap /daris/front/result /daris/rear/result "
     "/daris/stats /diagnostics /camera/front/image_raw /camera/rear/image_raw"): Check(_REPLAY_ROS2),
    ("docs/replay.md", "ros2 bag play bags/cams4 --remap /cameras/cam0/image_raw:=/camera/front/image_raw "
     "/cameras/cam1/image_raw:=/camera/rear/image_raw --qos-profile-overrides-path reliable.yaml"): Check(_REPLAY_ROS2),
    ("docs/replay.md", "ros2 bag play bags/cams4 --rate 0.5 --loop --start-offset 2 --playback-duration 5 "
     "--remap /cameras/cam0/image_raw:=/front/image_raw --clock 100"): Check(_REPLAY_ROS2),
    ("docs/scale_out.md", "ros2 launch daris_ros multi_gpu.launch.py config_gpu0:=front.yaml "
     "config_gpu1:=surround.yaml"): Check(_ROS2),
    ("docs/scale_out.md", "ros2 launch daris_ros multi_gpu.launch.py devices:=cuda:0,cuda:1,cuda:2 "
     "configs:=a.yaml,b.yaml,c.yaml"): Check(_ROS2),
    ("docs/scale_out.md", "ros2 launch daris_ros multi_gpu.launch.py devices:=cpu configs:=front.yaml"): Check(_ROS2),
    ("docs/scale_out.md", "scripts/device_ros.sh && python3 scripts/two_gpu_run.py --out $OUT"): Check(
        "two GPUs, on the device machine"),
    ("docs/scale_out.md", "scripts/fetch_device_wheels.sh 3.11 /tmp/wheels311"): Check(
        "downloads ~100 wheels from PyPI (CI has no network)"),
    ("docs/scale_out.md", "DARIS_BASE_PYTHON=/path/to/python-with-torch DARIS_WHEELS=/tmp/wheels311 "
     "scripts/device_ros.sh"): Check("builds a second ROS environment from the wheels above (minutes)"),
    ("docs/scale_out.md", "python3 scripts/two_gpu_run.py --device cpu --seconds 10 --out /tmp/two_gpu_cpu"): Check(
        "needs the environment scripts/device_ros.sh builds; test/ros/test_scale_out.py runs two nodes on the cpu"),
    ("docs/simulator.md", "DARIS_SIM_SCALE=1 PYTHONPATH=. python -m pytest test/sim/test_sim_scale.py -q"): Check(
        "a CPU-time budget test (10 s): a timing assert, not for CI's shared cores"),
}


# ----------------------------------------------------------------------------------------------- the checks


def _console_scripts() -> dict[str, str]:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    out = {}
    for line in cfg["options.entry_points"]["console_scripts"].strip().splitlines():
        name, target = (s.strip() for s in line.split("="))
        out[name] = target.split(":")[0]
    return out


class _Captured(Exception):
    pass


def parser_of(mod: ModuleType) -> argparse.ArgumentParser:
    """The tool's parser: its ``build_parser()``, else the parser its ``parse_args``/``main`` builds, caught
    when it starts parsing (nothing after that runs)."""
    if hasattr(mod, "build_parser"):
        return mod.build_parser()
    caught: list[argparse.ArgumentParser] = []

    def grab(self: argparse.ArgumentParser, *args: object, **kwargs: object) -> None:
        caught.append(self)
        raise _Captured

    entry = getattr(mod, "parse_args", None) or mod.main
    with mock.patch.object(argparse.ArgumentParser, "parse_args", grab), \
            mock.patch.object(argparse.ArgumentParser, "parse_known_args", grab):
        with pytest.raises(_Captured):
            entry([])
    return caught[0]


def _load_script(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"_docs_tool_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(path.parent))
    return mod


_REPO_DIRS = ("config/", "scripts/", "test/", "docs/", "requirements/", "launch/", "msg/", "install/", "daris_ros/",
              ".venv/")


def _words(text: str) -> list[str]:
    return shlex.split(text.split("\n")[0], comments=True)


def _simple_commands(words: list[str]) -> list[list[str]]:
    out: list[list[str]] = [[]]
    depth = 0  # inside a synopsis' [...], where | means "or"
    for w in words:
        depth += w.count("[") - w.count("]")
        if w in {"&&", "||", ";", "|"} and depth <= 0:
            out.append([])
        elif w.endswith(";"):
            out[-1].append(w[:-1])
            out.append([])
        else:
            out[-1].append(w)
    return [c for c in out if c]


def _check_path(word: str, renames: dict[str, str], problems: list[str]) -> None:
    word = renames.get(word, word)
    if not word.startswith(_REPO_DIRS) or any(ch in word for ch in "<$*"):
        return
    path = REPO / word
    if not path.exists():
        problems.append(f"path {word} does not exist in the repository")
    elif path.suffix == ".yaml" and word.startswith("config/") and not word.startswith("config/sim/"):
        from daris_ros.settings import load_parameter_file, settings_from_mapping

        try:
            settings_from_mapping(load_parameter_file(path))
        except Exception as exc:  # noqa: BLE001 - any failure is the finding
            problems.append(f"parameter file {word} does not validate: {exc}")
    elif word.startswith("config/sim/") and path.suffix == ".yaml":
        from daris_ros.sim.scenario import load_scenario

        try:
            load_scenario(path)
        except Exception as exc:  # noqa: BLE001
            problems.append(f"scenario {word} does not load: {exc}")


def _check_flags(tool: str, parser: argparse.ArgumentParser, args: list[str], problems: list[str]) -> None:
    known = parser._option_string_actions
    for a in args:
        a = a.strip("[]")
        if a == "--ros-args":
            break
        if re.match(r"^--?[A-Za-z]", a) and a.split("=")[0] not in known:
            problems.append(f"{tool} does not accept {a.split('=')[0]}")


def _scheduler_param_names() -> tuple[dict[str, bool], set[str]]:
    from daris_ros.parameter_table import SCHEDULER_PARAMETERS, TASK_PARAMETERS, Runtime

    return ({p.name: p.runtime is Runtime.READ_ONLY for p in SCHEDULER_PARAMETERS},
            {p.name for p in TASK_PARAMETERS})


def _check_ros_args(args: list[str], renames: dict[str, str], problems: list[str]) -> None:
    sched, task_fields = _scheduler_param_names()
    for i, a in enumerate(args):
        if a == "--params-file" and i + 1 < len(args):
            _check_path(args[i + 1], renames, problems)
        if a == "-p" and i + 1 < len(args):
            name = args[i + 1].split(":=")[0]
            if name not in sched and name not in {"use_sim_time", "task_names"} and not (
                    name.startswith("tasks.") and name.split(".")[-1] in task_fields):
                problems.append(f"-p {name}: not a scheduler_node parameter")


def _check_python_tool(module: str | None, script: Path | None, args: list[str], problems: list[str],
                       label: str = "") -> None:
    label = label or module or str(script.relative_to(REPO))  # type: ignore[union-attr]
    try:
        mod = importlib.import_module(module) if module else _load_script(script)  # type: ignore[arg-type]
    except ImportError as exc:
        problems.append(f"{label} does not import: {exc}")
        return
    _check_flags(label, parser_of(mod), args, problems)


def _check_ros2(args: list[str], renames: dict[str, str], problems: list[str]) -> None:
    verb = args[0] if args else ""
    if verb == "launch":
        assert args[1] == "daris_ros", args
        launch = REPO / "launch" / args[2]
        if not launch.is_file():
            problems.append(f"launch file {args[2]} does not exist")
            return
        declared = set(re.findall(r'DeclareLaunchArgument\(\s*"(\w+)"', launch.read_text()))
        for a in args[3:]:
            name, _, value = a.partition(":=")
            if name not in declared:
                problems.append(f"{args[2]} declares no launch argument {name!r} (it has {sorted(declared)})")
            _check_path(value, renames, problems)
    elif verb == "run":
        assert args[1] == "daris_ros", args
        _check_tool([args[2], *args[3:]], renames, problems)
    elif verb == "param":
        assert args[1] == "set" and args[2] == "/daris_scheduler", args
        sched, task_fields = _scheduler_param_names()
        name = args[3]
        if name in sched:
            if sched[name]:
                problems.append(f"parameter {name} is read-only: ros2 param set is refused")
        elif name != "task_names" and not (name.startswith("tasks.") and name.split(".")[-1] in task_fields):
            problems.append(f"{name} is not a scheduler_node parameter")
    elif verb == "topic":
        if not re.fullmatch(r"/(daris/\w+/(result|detections|mask|labels)|daris/stats|diagnostics)", args[2]):
            problems.append(f"{args[2]} is not a topic the scheduler node publishes")
    elif verb == "bag":
        for a in args[2:]:
            _check_path(a, renames, problems)
    else:
        problems.append(f"ros2 {verb}: no check for this verb")


def _check_tool(words: list[str], renames: dict[str, str], problems: list[str]) -> None:
    """One simple command (no && ; |)."""
    while words and (re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]) or words[0] == "time"):
        for v in re.findall(r"[^\s=\"]+", words[0].split("=", 1)[1]):
            _check_path(v, renames, problems)
        words = words[1:]
    if not words:
        return
    exe, args = words[0], words[1:]
    scripts = _console_scripts()
    for a in args:
        for part in re.split(r"[=,]|:=", a.strip("[]")):
            _check_path(part, renames, problems)
    if exe in {"scripts/run_in_install.sh", "scripts/device_ros.sh"}:
        _check_path(exe, renames, problems)
        if args:
            _check_tool(args, renames, problems)
        return
    name = exe.rsplit("/lib/daris_ros/", 1)[-1] if "/lib/daris_ros/" in exe else exe
    if name in scripts:
        if exe.startswith("install/") and not (REPO / exe).is_file():
            problems.append(f"{exe} is not in the install space (run scripts/build.sh)")
        if name in {"scheduler_node", "camera_publisher"}:
            _check_ros_args(args[args.index("--ros-args") + 1:] if "--ros-args" in args else [], renames, problems)
        else:
            _check_python_tool(scripts[name], None, args, problems, label=name)
    elif exe in {"python", "python3", ".venv/bin/python"}:
        if args[:1] == ["-m"]:
            if args[1] != "pytest":
                _check_python_tool(args[1], None, args[2:], problems)
        elif args and args[0].endswith(".py"):
            _check_python_tool(None, REPO / args[0], args[1:], problems)
        else:
            problems.append(f"python {' '.join(args)}: no module or script")
    elif exe.startswith("scripts/"):
        _check_path(exe, renames, problems)
    elif exe == "ros2":
        _check_ros2(args, renames, problems)
    elif exe == "make":
        targets = set(re.findall(r"^([\w-]+):", (REPO / "Makefile").read_text(), re.M))
        problems += [f"Makefile has no target {t}" for t in args if t not in targets]
    elif exe == "bash" and args[:1] == ["-c"]:
        for c in _simple_commands(shlex.split(args[1])):
            _check_tool(c, renames, problems)
    elif exe not in {"mkdir", "cd", "git", "pip", "colcon", "source", "export", "df"}:
        problems.append(f"unknown executable {exe!r}: add a check for it")


def check_command(cmd: DocCommand, spec: Check) -> list[str]:
    problems: list[str] = []
    renames = dict(spec.renames)
    for c in _simple_commands(_words(cmd.text)):
        _check_tool(c, renames, problems)
    for f in spec.files:
        if not (REPO / f).exists():
            problems.append(f"{f} does not exist")
    return problems


# ----------------------------------------------------------------------------------------------- the tests


def _key(c: DocCommand) -> tuple[str, str]:
    return (c.file, c.text)


def test_every_fenced_block_is_tagged() -> None:
    untagged = [f"{b.file}:{b.line}" for f in doc_files() for b in fenced_blocks(f) if not b.lang]
    assert not untagged, ("untagged fenced blocks (tag commands `bash`, output `text`, code its language): "
                          + ", ".join(untagged))


def test_every_command_is_classified() -> None:
    cmds = doc_commands()
    assert len(cmds) > 50, "the extraction found almost no commands"
    found = {_key(c) for c in cmds}
    problems = [f"unclassified command in {c.file} line {c.line}: {c.text}" for c in cmds
                if _key(c) not in RUN and _key(c) not in CHECK]
    problems += [f"in both RUN and CHECK: {k}" for k in RUN.keys() & CHECK.keys()]
    problems += [f"listed but no longer in the docs: {k}" for k in (RUN.keys() | CHECK.keys()) - found]
    problems += [f"changed without a reason: {k}" for k, r in RUN.items() if (r.replace or r.append) and not r.why]
    assert not problems, "\n".join(problems)


def test_extraction_joins_continuations_and_keeps_heredocs(tmp_path: Path) -> None:
    block = Block("x.md", 1, "bash", (
        "# a comment", "daris-play bags/b \\", "    --rate 2   # half", "python - <<'EOF'", "print(1)  # not cut",
        "EOF", "make demo"))
    got = [(c.line, c.text) for c in block_commands(block)]
    assert got == [(3, "daris-play bags/b --rate 2"), (5, "python - <<'EOF'\nprint(1)  # not cut\nEOF"),
                   (8, "make demo")]


def test_check_finds_wrong_flags_paths_and_parameters() -> None:
    """The parse check is not vacuous: each kind of mistake it is meant to find is found."""
    bad = {
        "daris-play bags/x --speed 2": "daris-play does not accept --speed",
        "python -m daris_ros.sim.cli config/sim/nope.yaml": "path config/sim/nope.yaml does not exist",
        "ros2 param set /daris_scheduler policy STR": "parameter policy is read-only",
        "ros2 launch daris_ros daris.launch.py cfg:=a.yaml": "declares no launch argument 'cfg'",
        "ros2 topic echo /daris/front/results": "is not a topic",
        "make dmeo": "Makefile has no target dmeo",
        "ros2 run daris_ros scheduler_node --ros-args -p use_sim_tme:=true": "not a scheduler_node parameter",
        "daris-bench --model resnet18": "does not accept --model",  # parser caught from parse_args()
        "python3 scripts/two_gpu_run.py --gpus 2": "does not accept --gpus",  # a script's main()
        "frobnicate --x": "unknown executable",
    }
    for text, expected in bad.items():
        problems = check_command(DocCommand("x.md", 1, text), Check("test"))
        assert any(expected in p for p in problems), (text, problems)


CHECKED = [c for c in doc_commands() if _key(c) in CHECK]


@pytest.mark.parametrize("cmd", CHECKED, ids=[f"{c.file}:{c.line}" for c in CHECKED])
def test_checked_command_parses(cmd: DocCommand) -> None:
    problems = check_command(cmd, CHECK[_key(cmd)])
    assert not problems, f"{cmd.file} line {cmd.line}: {cmd.text}\n" + "\n".join(problems)


def _replay_params(tmp: Path) -> None:
    """docs/replay.md's my.yaml: a copy of config/demo.yaml with reliable camera QoS."""
    doc = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    params = next(iter(doc.values()))["ros__parameters"]
    for t in params["tasks"].values():
        t.update(qos_reliability="reliable", qos_depth=100)  # (the depth docs/replay.md advises)
    (tmp / "my.yaml").write_text(yaml.safe_dump(doc))


SETUP = {"docs/replay.md": _replay_params}
RUN_FILES = sorted({f for f, _ in RUN})


@dataclass
class _Outcome:
    cmd: DocCommand
    command: str
    rc: int
    output: str = field(repr=False)


@pytest.mark.parametrize("doc", RUN_FILES)
def test_runnable_commands_run(doc: str, tmp_path: Path) -> None:
    if not os.environ.get("AMENT_PREFIX_PATH"):
        pytest.fail("run through scripts/run_in_install.sh (the install space must be on PATH)")
    for d in ("config", "daris_ros", "scripts", "test"):
        (tmp_path / d).symlink_to(REPO / d)
    if doc in SETUP:
        SETUP[doc](tmp_path)
    cmds = [c for c in doc_commands() if c.file == doc and _key(c) in RUN]
    assert cmds, doc
    for c in cmds:
        spec = RUN[_key(c)]
        command = spec.command(c.text)
        try:
            proc = subprocess.run(["bash", "-c", command], cwd=tmp_path, capture_output=True, text=True,
                                  timeout=spec.timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"{c.file} line {c.line}: {command!r} ran over {spec.timeout:.0f} s: {exc.output!r}")
        out = _Outcome(c, command, proc.returncode, proc.stdout + proc.stderr)
        where = f"{c.file} line {c.line}: {command!r}"
        assert out.rc in spec.rc, f"{where} exited {out.rc}:\n{out.output[-3000:]}"
        assert re.search(spec.expect, out.output), f"{where}: no {spec.expect!r} in its output:\n{out.output[-3000:]}"
