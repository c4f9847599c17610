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


def test_a_mode_becomes_the_engines_parameters() -> None:
    from daris_ros.bench.batching import mode_params

    sizes = (1, 2, 4, 8, 16, 32, 64, 128, 192, 256)
    p = mode_params(Mode.parse("batch-fp16-cl-3s-m0.5-ahead2-max192"), sizes)
    assert p == {"policy": "STR", "backend": "str", "n_contexts": 1, "n_streams": 3, "no_staging": True,
                 "batching": True, "batch_sizes": (1, 2, 4, 8, 16, 32, 64, 128, 192), "batch_lp_admit_margin": 0.5,
                 "launch_ahead": 1, "ahead_lead": pytest.approx(0.002)}
    assert mode_params(Mode.parse("batch-pad0"), sizes)["batch_pad_limit"] == 0.0
    assert "batch_pad_limit" not in mode_params(Mode.parse("batch"), sizes)  # the engine's default
    b1 = mode_params(MODES["b1-staged"], sizes)
    assert (b1["batching"], b1["no_staging"], b1["n_streams"], b1["launch_ahead"]) == (False, False, 8, 0)
    # --lp-margin overrides a margin the mode does not spell, not one it does
    assert mode_params(Mode.parse("batch-fp16"), sizes, lp_margin=0.7)["batch_lp_admit_margin"] == 0.7
    assert mode_params(Mode.parse("batch-m0.5"), sizes, lp_margin=0.7)["batch_lp_admit_margin"] == 0.5


def test_a_mode_part_the_engine_cannot_run_is_refused_by_name() -> None:
    from daris_ros.bench.batching import mode_params

    with pytest.raises(ValueError, match="lpmax"):
        mode_params(Mode.parse("batch-lpmax10"), (1, 2, 4))
