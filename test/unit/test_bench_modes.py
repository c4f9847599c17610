"""daris-bench --batching modes spelled from their parts (no GPU needed to parse them)."""

from __future__ import annotations

import pytest

from daris_ros.bench.batching import MODES, Mode


def test_mode_parts() -> None:
    m = Mode.parse("batch-fp16-cl-3s-m0.5-ahead1.5")
    assert (m.batching, m.precision, m.channels_last, m.n_streams, m.lp_margin, m.margin_given, m.ahead_ms) == (
        True, "fp16", True, 3, 0.5, True, 1.5)
    m = Mode.parse("batch-fp16-cl-3s-max256-lpmax12.5")
    assert (m.max_size, m.lp_max_ms, m.ahead_ms) == (256, 12.5, None)
    assert Mode.parse("batch-fp16-3s-pad0").pad_limit == 0.0 and Mode.parse("batch-pad0.05").pad_limit == 0.05
    assert Mode.parse("batch-cl").pad_limit is None
    assert Mode.parse("batch-cl").ahead_ms is None and Mode.parse("batch-ahead0").ahead_ms == 0.0
    assert Mode.parse("b1-staged") is MODES["b1-staged"]
    assert Mode.parse("b1-staged-fp16").n_streams == 8 and not Mode.parse("b1-fp16").batching
    m = Mode.parse("b1-staged-ahead0.5")  # launch-ahead works with batching off too (SchedulerConfig.launch_ahead)
    assert (m.batching, m.staged, m.ahead_ms) == (False, True, 0.5)


@pytest.mark.parametrize("bad", ["batch-ahead", "batch-ahead-1", "b1-ahead", "batch-4x", "x-fp16", "batch-m0",
                                 "batch-max0", "batch-lpmax0", "b1-max64", "batch-pad1",
                                 "batch-pad-0.1", "b1-pad0"])
def test_bad_mode_names_say_which_part(bad: str) -> None:
    with pytest.raises(ValueError, match="mode"):
        Mode.parse(bad)
