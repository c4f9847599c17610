"""From the payloads of a release burst to the stage-0 inputs of its jobs.

A producer puts payloads in the inbox (raw ROS messages, arrays...). At a release burst the engine's loop hands
the payloads of every task released in it to a :class:`FrameDecoder` at once (so a decoder can batch: nvJPEG
decodes a list of JPEGs in one call), which returns per payload an HxWx3 RGB uint8 frame (numpy or torch, host
or device) or a :class:`FrameError` naming what is wrong. The engine then preprocesses the frames of each model
as one batch (:func:`~daris_ros.runtime.preprocess.preprocess_batch`).

:class:`ArrayDecoder`, the default, takes payloads that already are frames (the bench, engine-load, tests).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np


class FrameError(ValueError):
    """A frame that cannot be converted; ``reason`` is a short counter key (``dropped.<reason>``)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class FrameDecoder(Protocol):
    #: > 0: the engine decodes bursts in a pool of this many threads, off its loop (decoding costs CPU time);
    #: 0: in its loop (payloads that are frames already).
    threads: int

    def decode(self, tasks: Sequence[Any], payloads: Sequence[Any]) -> list[Any]:
        """Per payload (of task ``tasks[i]``, a TaskSettings): an HxWx3 RGB uint8 frame, or a FrameError."""


class ArrayDecoder:
    """Payloads that are frames already: HxWx3 uint8 numpy arrays or torch tensors."""

    threads = 0

    def decode(self, tasks: Sequence[Any], payloads: Sequence[Any]) -> list[Any]:
        out: list[Any] = []
        for p in payloads:
            shape = getattr(p, "shape", None)
            if shape is None or len(shape) != 3 or shape[2] != 3:
                out.append(FrameError("invalid", f"expected an HxWx3 frame, got {type(p).__name__} of shape "
                                                 f"{shape}"))
            elif isinstance(p, np.ndarray) and p.dtype != np.uint8:
                out.append(FrameError("invalid", f"expected a uint8 frame, got {p.dtype}"))
            else:
                out.append(p)
        return out
