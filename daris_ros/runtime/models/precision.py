"""Reduced precision and channels-last for staged models (an option per model).

``apply_precision(model, "fp16" | "bf16" | "fp32", channels_last=...)`` converts the weights in place
(every stage shares the modules, so the whole staged model follows) and records on the model what its
input must be: ``model.input_dtype`` and ``model.memory_format``. Backends build example inputs and
CUDA-graph static inputs from those, so a captured graph runs entirely in the reduced precision; a
job's fp32 frame is converted by the copy into the static input.

Converted weights rather than autocast: autocast keeps fp32 weights and casts per op (more kernels,
fp32 normalisation), and it would have to be captured into every graph; converted weights give one
dtype end to end. BatchNorm runs in the model's dtype (inference mode: a per-channel affine op).

``output_difference(ref, out)`` is what the bench reports against fp32.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

PRECISIONS: dict[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def parse_precision(name: str) -> torch.dtype:
    try:
        return PRECISIONS[name.strip().lower()]
    except KeyError:
        raise ValueError(f"unknown precision {name!r}; expected one of {sorted(PRECISIONS)}") from None


def apply_precision(model: nn.Module, precision: str = "fp32", channels_last: bool = False) -> nn.Module:
    """Convert ``model`` in place to ``precision`` (and NHWC weights with ``channels_last``); returns it."""
    dtype = parse_precision(precision)
    model.to(dtype=dtype)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    if channels_last:
        # (documented and accepted at run time; the overloads of Module.to in torch's stubs omit memory_format)
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    model.input_dtype = dtype  # type: ignore[assignment]
    model.memory_format = fmt  # type: ignore[assignment]
    model.precision = precision.strip().lower()  # type: ignore[assignment]
    return model


def model_input(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``x`` in the dtype and memory format ``model`` expects."""
    dtype = getattr(model, "input_dtype", torch.float32)
    fmt = getattr(model, "memory_format", torch.contiguous_format)
    return x.to(dtype=dtype).contiguous(memory_format=fmt)


@dataclass(frozen=True, slots=True)
class OutputDifference:
    """A reduced-precision output against the fp32 one (same inputs, same weights)."""

    max_abs: float
    rel_l2: float  # ||out - ref|| / ||ref||
    top1_agree: float | None  # classification: share of rows with the same argmax
    finite: bool

    def as_dict(self) -> dict[str, float | bool | None]:
        return {"max_abs": self.max_abs, "rel_l2": self.rel_l2, "top1_agree": self.top1_agree,
                "finite": self.finite}


def output_difference(ref: torch.Tensor, out: torch.Tensor, classification: bool = True) -> OutputDifference:
    r, o = ref.detach().double(), out.detach().double()
    finite = bool(torch.isfinite(o).all())
    diff = (o - r).nan_to_num(nan=float("inf"))
    top1 = None
    if classification and r.dim() == 2:
        top1 = float((r.argmax(1) == o.argmax(1)).double().mean())
    return OutputDifference(float(diff.abs().max()), float(diff.norm() / r.norm().clamp_min(1e-30)), top1, finite)
