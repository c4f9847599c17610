"""Figures and checks of daris_ros.report.metrics from hand-made records."""

from __future__ import annotations

import dataclasses
import math

import pytest
from report_records import result, stats, task_snap

from daris_ros.report.extract import RunData
from daris_ros.report.metrics import active_stale, compute, run_window


def test_task_figures_from_results_and_counters(run: RunData) -> None:
    fig = compute(run)
    hp, lp = fig.tasks["hp"], fig.tasks["lp"]
    # results
    assert (hp.completed, hp.missed, hp.met) == (10, 1, 9)
    assert (lp.completed, lp.missed) == (4, 0)
    # responses 10..100 ms: nearest rank p50 = 5th = 50 ms, p99 = 10th = 100 ms
    assert hp.response.p50 == pytest.approx(0.05)
    assert hp.response.p99 == pytest.approx(0.10)
    assert hp.response.max == pytest.approx(0.10)
    assert hp.response.mean == pytest.approx(0.055)
    assert hp.exec_mean == pytest.approx(0.0095)
    assert hp.mret_last == pytest.approx(0.015)  # MRET at the latest release
    # node counters (last stats)
    assert (hp.frames, hp.superseded, hp.released, hp.admitted, hp.rejected) == (13, 3, 10, 10, 0)
    assert (lp.frames, lp.released, lp.admitted, lp.rejected) == (7, 6, 4, 2)
    assert (hp.in_flight, hp.pending, lp.in_flight, lp.pending) == (0, 0, 0, 1)
    assert hp.stale_total == 9 and lp.stale_total == 6
    assert hp.stale == 1 and lp.stale == 2  # active span only
    # DMR = missed / admitted
    assert hp.dmr == pytest.approx(0.1)
    assert lp.dmr == 0.0
    # window: first release (hp job 0 at 0.0 s) to the last finish (lp job 5: 1.05 + 0.03 s)
    assert fig.window_s == pytest.approx(1.08)
    assert hp.jps == pytest.approx(10 / 1.08) and lp.jps == pytest.approx(4 / 1.08)
    assert hp.input_frames == 13 and lp.input_frames == 7
    assert hp.stamps_unmatched == 0 and hp.stamps_checked == 10


def test_priority_and_total_figures(run: RunData) -> None:
    fig = compute(run)
    hp, lp, total = fig.priorities["HP"], fig.priorities["LP"], fig.totals
    assert (hp.tasks, hp.completed, hp.missed, hp.released, hp.admitted, hp.rejected) == (1, 10, 1, 10, 10, 0)
    assert (lp.tasks, lp.completed, lp.released, lp.admitted, lp.rejected, lp.stale) == (1, 4, 6, 4, 2, 2)
    assert total.completed == 14 and total.released == 16 and total.frames == 20 and total.stale == 3
    assert total.dmr == pytest.approx(1 / 14)
    assert total.jps == pytest.approx(14 / 1.08)
    # pooled nearest-rank percentiles over both tasks' 14 responses
    pooled = sorted([0.01 * (i + 1) for i in range(10)] + [0.03] * 4)
    assert total.response.p50 == pytest.approx(pooled[6])
    assert total.response.p99 == pytest.approx(pooled[13])
    assert lp.response.p50 == pytest.approx(0.03)


def test_consistent_run_passes_every_check(run: RunData) -> None:
    fig = compute(run)
    assert fig.ok, [c for c in fig.checks if not c.ok]
    names = {c.name for c in fig.checks if c.task == "hp"}
    assert "frames received = frames published" in names
    assert "result stamps are input stamps" in names


@pytest.mark.parametrize(
    ("change", "failing"),
    [
        ("lost_result", "results recorded = completed (node)"),
        ("lost_frame", "frames received = frames published"),
        ("foreign_stamp", "result stamps are input stamps"),
        ("duplicate", "job ids unique"),
    ],
)
def test_inconsistencies_fail_the_named_check(run: RunData, change: str, failing: str) -> None:
    hp = run.results["hp"]
    if change == "lost_result":
        del hp[3]
    elif change == "lost_frame":
        assert run.replay is not None
        run.replay["published"]["/cam/hp"] = 14
    elif change == "foreign_stamp":
        hp[2] = dataclasses.replace(hp[2], stamp_ns=hp[2].stamp_ns + 1)
    else:
        hp.append(hp[-1])
    fig = compute(run)
    failed = {(c.task, c.name) for c in fig.checks if c.ok is False}
    assert ("hp", failing) in failed
    assert not fig.ok


def test_counter_identities_fail_when_frames_are_unaccounted(run: RunData) -> None:
    last = run.stats[-1]
    last.tasks["hp"] = dataclasses.replace(last.tasks["hp"], frames=16)  # 3 frames nowhere
    fig = compute(run)
    failed = {c.name for c in fig.checks if c.ok is False and c.task == "hp"}
    assert "frames = released + superseded + dropped + pending" in failed
    assert "frames = met + missed + skipped + rejected + superseded + dropped + in flight + pending" in failed


def test_without_stats_counters_are_unknown_and_dmr_uses_completed(run: RunData) -> None:
    run.stats.clear()
    run.replay = None
    fig = compute(run)
    hp = fig.tasks["hp"]
    assert hp.released is None and hp.frames is None and hp.stale is None
    assert hp.dmr == pytest.approx(0.1)  # 1 of 10 completed
    assert fig.priorities["HP"].released is None
    assert [c.ok for c in fig.checks] == [None, None]
    assert fig.config == {}


def test_active_stale_rules() -> None:
    seq = [task_snap("t", stale=5), task_snap("t", stale=7),
           task_snap("t", frames=3, released=2, stale=8),
           task_snap("t", frames=6, released=5, superseded=1, stale=9),
           task_snap("t", frames=6, released=5, superseded=1, stale=12)]
    assert active_stale(seq) == 9 - 7
    dead = [task_snap("t", stale=2), task_snap("t", stale=10)]
    assert active_stale(dead) == 8
    started = [task_snap("t", frames=2, released=1, stale=1), task_snap("t", frames=2, released=2, stale=4)]
    assert active_stale(started) == 4  # no snapshot before the first frame: counted from node start


def test_empty_run() -> None:
    fig = compute(RunData(path=__import__("pathlib").Path("empty")))
    assert fig.tasks == {} and fig.window_s == 0.0 and fig.t0_ns is None and fig.ok
    assert fig.totals.completed == 0 and math.isnan(fig.totals.response.p50)


def test_run_window_and_tasks_seen_only_in_results() -> None:
    rows = [result("x", 0, release=1.0, response=0.5), result("x", 1, release=2.0, response=0.25)]
    t0, window = run_window(rows)
    assert window == pytest.approx(1.25)
    run = RunData(path=__import__("pathlib").Path("r"), results={"x": rows},
                  stats=[stats(0.0, [task_snap("y", priority="LP")])])
    fig = compute(run)
    assert list(fig.tasks) == ["y", "x"]
    assert fig.tasks["x"].released is None and fig.tasks["x"].completed == 2


def test_to_dict_is_plain(run: RunData) -> None:
    data = compute(run).to_dict()
    assert data["tasks"]["hp"]["response"]["p50"] == pytest.approx(0.05)
    assert data["priorities"]["LP"]["rejected"] == 2
    assert data["config"]["n_contexts"] == 2
    assert isinstance(data["checks"], list) and data["ok"] is True


def test_node_pending_and_drop_reasons_are_used_when_published(run: RunData) -> None:
    last = run.stats[-1]
    last.tasks["lp"] = dataclasses.replace(last.tasks["lp"], pending=1, drop_reasons={})
    last.tasks["hp"] = dataclasses.replace(last.tasks["hp"], frames=15, dropped=2, pending=0,
                                           drop_reasons={"bad_step": 2})
    assert run.replay is not None
    run.replay["published"]["/cam/hp"] = 15
    fig = compute(run)
    assert fig.ok, [c for c in fig.checks if not c.ok]
    assert fig.tasks["hp"].drop_reasons == {"bad_step": 2} and fig.tasks["lp"].pending == 1
    # a node pending count that does not close the identity fails the check
    last.tasks["lp"] = dataclasses.replace(last.tasks["lp"], pending=0)
    failed = {(c.task, c.name) for c in compute(run).checks if c.ok is False}
    assert ("lp", "frames = released + superseded + dropped + pending") in failed
