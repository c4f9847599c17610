"""Loading weights from a file path (nothing is ever downloaded).

A weights file is a ``state_dict`` of the UNSTAGED model (``torch.save(model.state_dict(), path)``),
read with ``torch.load(..., weights_only=True)``. Two common wrappings are accepted: a dict whose only
entry is ``"state_dict"``/``"model_state_dict"``/``"model"`` holding the state_dict, and keys that all
start with ``"module."`` (saved from ``nn.DataParallel``/DDP).
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Mapping, Sequence
from os import PathLike
from pathlib import Path

import torch
from torch import Tensor, nn

log = logging.getLogger("daris_ros.models")

_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")
_SHOW = 5  # how many offending keys an error message lists


def warn_random_init(model_name: str) -> None:
    log.warning("%s: no weights file given; the model is randomly initialised (its outputs are meaningless)",
                model_name)


def load_state_dict_file(path: str | PathLike[str]) -> dict[str, Tensor]:
    """Read a state_dict from ``path`` (FileNotFoundError naming the path; ValueError if unreadable)."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(errno.ENOENT, "weights file not found", str(file))
    try:
        obj = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 (pickle/zip/torch errors of many types)
        raise ValueError(f"cannot read weights file {file}: {exc}") from exc
    if isinstance(obj, Mapping) and len(obj) == 1:
        (key, inner), = obj.items()
        if key in _WRAPPER_KEYS and isinstance(inner, Mapping):
            obj = inner
    if not isinstance(obj, Mapping) or not all(
            isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items()):
        raise ValueError(f"weights file {file} does not hold a state_dict (a mapping of names to tensors)")
    return dict(obj)


def _shorten(keys: Sequence[str]) -> str:
    shown = ", ".join(repr(k) for k in keys[:_SHOW])
    return f"[{shown}{', ...' if len(keys) > _SHOW else ''}] ({len(keys)} in all)"


def apply_state_dict(
    model: nn.Module,
    state_dict: Mapping[str, Tensor],
    *,
    model_name: str,
    source: str,
    ignore_prefixes: Sequence[str] = (),
) -> None:
    """Load ``state_dict`` into ``model`` strictly; ValueError listing a few mismatched keys.

    Keys under ``ignore_prefixes`` (e.g. an auxiliary classifier the staged model drops) are skipped;
    a missing BatchNorm ``num_batches_tracked`` is tolerated (old checkpoints lack it; it is unused in eval).
    """
    sd = dict(state_dict)
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    sd = {k: v for k, v in sd.items() if not any(k.startswith(p) for p in ignore_prefixes)}
    expected = model.state_dict()
    missing = [k for k in expected if k not in sd and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in sd if k not in expected]
    wrong_shape = [f"{k}: file {tuple(sd[k].shape)} vs model {tuple(expected[k].shape)}"
                   for k in expected if k in sd and sd[k].shape != expected[k].shape]
    if missing or unexpected or wrong_shape:
        parts = []
        if missing:
            parts.append(f"missing keys {_shorten(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_shorten(unexpected)}")
        if wrong_shape:
            parts.append(f"shape mismatches {_shorten(wrong_shape)}")
        raise ValueError(f"{model_name}: weights from {source} do not match the unstaged model: "
                         + "; ".join(parts))
    model.load_state_dict(sd, strict=False)
    log.info("%s: loaded %d tensors from %s", model_name, len(sd), source)
