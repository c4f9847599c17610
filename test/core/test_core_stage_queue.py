"""Section IV-B2: the eight fixed levels, EDF inside a level, ablations (docs/policy.md)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daris_ros.core import LEVEL_NAMES, N_LEVELS, Priority, StageQueue, stage_level

HP, LP = Priority.HP, Priority.LP

# the documented order, highest first: (priority, is_last, delayed)
DOCUMENTED_ORDER = [
    (HP, True, True),
    (HP, True, False),
    (HP, False, True),
    (HP, False, False),
    (LP, True, True),
    (LP, True, False),
    (LP, False, True),
    (LP, False, False),
]


def test_eight_levels_exact_order() -> None:
    assert N_LEVELS == 8
    assert [stage_level(p, last, late) for p, last, late in DOCUMENTED_ORDER] == list(range(8))
    assert LEVEL_NAMES[0] == "HP-last-delayed" and LEVEL_NAMES[7] == "LP-normal"


def test_every_hp_level_ranks_above_every_lp_level() -> None:
    for hp_flags, lp_flags in itertools.product(itertools.product((True, False), repeat=2), repeat=2):
        assert stage_level(HP, *hp_flags) < stage_level(LP, *lp_flags)


def test_ablation_no_last_drops_last_stage_raise() -> None:
    assert stage_level(HP, True, False, no_last=True) == stage_level(HP, False, False) == 3
    assert stage_level(LP, True, True, no_last=True) == stage_level(LP, False, True) == 6


def test_ablation_no_prior_drops_missed_predecessor_raise() -> None:
    assert stage_level(HP, False, True, no_prior=True) == 3
    assert stage_level(LP, True, True, no_prior=True) == 5


def test_ablation_no_fixed_is_one_edf_level() -> None:
    assert {stage_level(p, a, b, no_fixed=True) for p, a, b in DOCUMENTED_ORDER} == {0}


def test_queue_pops_by_level_then_edf_then_release_task_job() -> None:
    q: StageQueue[str] = StageQueue()
    q.push(3, 5.0, 0.0, "a", 0, "hp-normal-late-deadline")
    q.push(7, 1.0, 0.0, "a", 1, "lp-normal-early-deadline")
    q.push(3, 2.0, 0.0, "b", 0, "hp-normal-early")
    q.push(1, 9.0, 0.0, "c", 0, "hp-last")
    q.push(3, 2.0, 0.0, "a", 2, "tie-name-a")  # same deadline and release as b/0: name a < b
    q.push(3, 2.0, -1.0, "z", 0, "tie-earlier-release")
    q.push(3, 2.0, 0.0, "a", 1, "tie-job-1")  # same deadline, release and name as a/2: job 1 < 2
    assert len(q) == 7 and q.level_len(3) == 5
    assert q.peek() == (1, "hp-last")
    order = [q.pop()[1] for _ in range(7)]
    assert order == [
        "hp-last",
        "tie-earlier-release",
        "tie-job-1",
        "tie-name-a",
        "hp-normal-early",
        "hp-normal-late-deadline",
        "lp-normal-early-deadline",
    ]
    assert not q
    with pytest.raises(IndexError):
        q.pop()
    with pytest.raises(ValueError):
        q.push(8, 0.0, 0.0, "x", 0, "bad")


entry = st.tuples(
    st.integers(0, 7),
    st.floats(0, 100, allow_nan=False),
    st.floats(0, 100, allow_nan=False),
    st.sampled_from(["a", "b", "c"]),
    st.integers(0, 5),
)


@given(st.lists(st.one_of(entry, st.just(None)), max_size=60))
def test_property_edf_order_within_a_level(ops: list) -> None:
    """Every pop returns the minimum (level, deadline, release, task, job) of what is queued."""
    q: StageQueue[tuple] = StageQueue()
    shadow: list[tuple] = []
    seq = 0
    for op in ops:
        if op is None:
            if not shadow:
                continue
            level, item = q.pop()
            best = min(shadow)
            shadow.remove(best)
            assert (level,) + item[:4] == best[:5]
        else:
            seq += 1
            level, vdl, rel, task, job = op
            q.push(level, vdl, rel, task, job, (vdl, rel, task, job, seq))
            shadow.append((level, vdl, rel, task, job, seq))
    assert len(q) == len(shadow)
    popped = [q.pop() for _ in range(len(shadow))]
    for (l1, a), (l2, b) in itertools.pairwise(popped):
        assert l1 <= l2
        if l1 == l2:
            assert a[0] <= b[0]  # EDF inside a level
