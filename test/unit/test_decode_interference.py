"""bench.decode_interference's CPU parts: the frame it decodes, the batch sizes per variant, its arguments."""

from __future__ import annotations

import io
import random
from pathlib import Path

import pytest
from PIL import Image

from daris_ros.bench.decode_interference import VARIANTS, batch_size_of, main, make_jpeg


def test_the_frame_is_a_jpeg_of_the_asked_size() -> None:
    data = make_jpeg(320, 240, 8)
    with Image.open(io.BytesIO(data)) as im:
        assert (im.format, im.size, im.mode) == ("JPEG", (320, 240), "RGB")


def test_batch_sizes_per_variant() -> None:
    rng = random.Random(0)
    varying = {batch_size_of("gpu_varying", rng) for _ in range(500)}
    assert varying == set(range(1, 9))  # the engine's decode parts: 1..DECODE_PART
    assert batch_size_of("gpu_fixed8", rng) == 8
    assert {batch_size_of(v, rng) for v in ("gpu_single", "cpu", "cuda_free")} == {1}


def test_an_unknown_variant_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--variants", "none,gpu_batched", "--out", str(tmp_path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "unknown gpu_batched" in err and all(v in err for v in VARIANTS)
