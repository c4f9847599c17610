"""Builders of hand-made run records for the report tests (no ROS, no bag)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from daris_ros.report.extract import (
    InputFrame,
    ResultRecord,
    RunData,
    StageRow,
    StatsSnapshot,
    TaskSnapshot,
)

T0 = 1_700_000_000 * 10**9  # ns


def ns(seconds: float) -> int:
    return T0 + round(seconds * 1e9)


def result(task: str, job_id: int, *, priority: str = "HP", release: float = 0.0, response: float = 0.02,
           exec_time: float = 0.01, met: bool = True, mret: float = 0.012, stamp: float | None = None,
           frame_id: str | None = None, context: int = 0, stream: int = 0, n_stages: int = 2) -> ResultRecord:
    """A result released at ``release`` s (after T0), finished ``response`` s later, with ``n_stages``
    back-to-back stages sharing the execution time."""
    share = exec_time / n_stages
    stages = tuple(StageRow(j, context, stream, j, j * share, (j + 1) * share, share, response)
                   for j in range(n_stages))
    stamp_ns = ns(release - 0.01 if stamp is None else stamp)
    return ResultRecord(
        topic=f"/daris/{task}/result", log_ns=ns(release + response), task=task, job_id=job_id, priority=priority,
        model="resnet18", stamp_ns=stamp_ns, frame_id=frame_id or f"{task}_optical_frame",
        receive_ns=stamp_ns, release_ns=ns(release), start_ns=ns(release), finish_ns=ns(release + response),
        deadline_ns=ns(release + 0.1), response_time=response, exec_time=exec_time, met=met, mret=mret,
        context=context, stream=stream, stages=stages,
    )


def task_snap(task: str, *, priority: str = "HP", frames: int = 0, superseded: int = 0, released: int = 0,
              admitted: int | None = None, rejected: int = 0, completed: int | None = None, missed: int = 0,
              stale: int = 0, dropped: int = 0, topic: str | None = None, deadline: float = 0.1) -> TaskSnapshot:
    admitted = released - rejected if admitted is None else admitted
    completed = admitted if completed is None else completed
    return TaskSnapshot(
        task=task, topic=topic or f"/cam/{task}", model="resnet18", priority=priority, context=0, period=0.1,
        deadline=deadline, frames=frames, superseded=superseded, released=released, admitted=admitted,
        rejected=rejected, completed=completed, missed=missed, stale=stale, dropped=dropped, migrations=0,
        jps=0.0, miss_rate=0.0, response_p50=0.0, response_p99=0.0, response_max=0.0, mret=0.01,
    )


def stats(log_s: float, tasks: Sequence[TaskSnapshot], n_contexts: int = 2) -> StatsSnapshot:
    return StatsSnapshot(
        log_ns=ns(log_s), stamp_ns=ns(log_s), node="/daris_scheduler", policy="MPS", backend="cpu", device="cpu",
        n_contexts=n_contexts, n_streams=1, oversubscription=1.0, sm_per_context=66, uptime=log_s,
        tasks={t.task: t for t in tasks},
    )


def make_run(path: Path | str = "run/output") -> RunData:
    """Two tasks: ``hp`` (10 jobs, 1 missed) and ``lp`` (4 jobs, 2 rejected), consistent counters."""
    hp = [result("hp", i, release=0.1 * i, response=0.01 * (i + 1), exec_time=0.005 + 0.001 * i, met=i != 9,
                 mret=0.006 + 0.001 * i, context=0)
          for i in range(10)]
    lp = [result("lp", j, priority="LP", release=0.2 * j + 0.05, response=0.03, exec_time=0.02, context=1)
          for j in (0, 1, 3, 5)]
    first = stats(0.0, [task_snap("hp", stale=3), task_snap("lp", priority="LP", stale=2)])
    mid = stats(0.5, [task_snap("hp", frames=6, superseded=1, released=5, stale=3),
                      task_snap("lp", priority="LP", frames=4, released=3, rejected=1, stale=3)])
    final_hp = task_snap("hp", frames=13, superseded=3, released=10, missed=1, stale=4)
    final_lp = task_snap("lp", priority="LP", frames=7, superseded=0, released=6, rejected=2, stale=4)
    done = stats(1.5, [final_hp, final_lp])
    after = stats(2.0, [task_snap("hp", frames=13, superseded=3, released=10, missed=1, stale=9),
                        task_snap("lp", priority="LP", frames=7, released=6, rejected=2, stale=6)])
    run = RunData(path=Path(path), results={"hp": hp, "lp": lp}, stats=[first, mid, done, after])
    run.replay = {"published": {"/cam/hp": 13, "/cam/lp": 7}, "input_bag": "/bags/in", "config": "a.yaml",
                  "parameters": {"n_contexts": 2, "policy": "MPS"}, "drained": True, "rate": 1.0}
    run.inputs = {"/cam/hp": [InputFrame("/cam/hp", r.stamp_ns, r.stamp_ns, r.frame_id) for r in hp],
                  "/cam/lp": [InputFrame("/cam/lp", r.stamp_ns, r.stamp_ns, r.frame_id) for r in lp]}
    return run


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def is_png(path: Path) -> bool:
    """A non-trivial PNG file."""
    return path.is_file() and path.stat().st_size > 1000 and path.read_bytes()[:8] == PNG_MAGIC
