"""bench.decode_priority on a small load (CI-sized: 64x48 JPEGs, 1 s): the figures it writes add up. Its
before/after pairs are in docs/benchmarks/decode_priority/."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from daris_ros.bench import decode_priority

pytestmark = [pytest.mark.slow]


def test_a_short_run_accounts_for_its_frames(tmp_path: Path) -> None:
    out = tmp_path / "runs.jsonl"
    assert decode_priority.main(["--hp", "1", "--lp", "2", "--seconds", "1.5", "--warmup", "0.5", "--width", "64",
                                 "--height", "48", "--label", "t", "--json", str(out)]) == 0
    (line,) = out.read_text().splitlines()
    figures = json.loads(line)
    assert figures["label"] == "t" and figures["cameras"] == {"hp": 1, "lp": 2, "rate_hz": 30.0, "size": "64x48"}
    assert 20 <= figures["hp_sent"] <= 40  # 1 s counted at 30 Hz (the feeder keeps its schedule)
    assert 0 <= figures["hp_served"] <= figures["hp_sent"]
    assert figures["hp_released"] > 0
    assert figures["hp_missed"] + figures["hp_skipped"] <= figures["hp_released"]
    # every LP release ended one way (the run drained): completed, skipped or rejected
    assert figures["lp_completed"] + figures["lp_skipped"] + figures["lp_rejected"] == figures["lp_released"] > 0


def test_jpeg_frame_is_a_jpeg_of_the_size_asked() -> None:
    from io import BytesIO

    from PIL import Image

    data = decode_priority.jpeg_frame(64, 48, seed=1)
    with Image.open(BytesIO(data)) as image:
        assert (image.format, image.size) == ("JPEG", (64, 48))
