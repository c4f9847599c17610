"""Memory held per model and per context (issue 8: "Show the memory use per context and model in the stats").

``model_bytes`` counts a model's parameters and buffers (what residency costs per copy). A backend may
offer ``memory_by_context() -> ContextMemory``; where it does not, the engine reports the model bytes
resident in each context (every model is resident in every context).
"""

from __future__ import annotations

import gc
import re
import sys
from dataclasses import dataclass
from typing import Any

#: How ``ContextMemory.bytes`` was obtained.
SOURCE_WORKER = "cuda_worker"  # mps: torch.cuda.memory_reserved() reported by the context's own worker process
SOURCE_PROCESS = "cuda_process"  # str / green: the node process's reserved device memory, shared by every context
SOURCE_MODELS = "model_bytes"  # cpu: parameters + buffers of the resident models (host memory)


@dataclass(frozen=True, slots=True)
class ContextMemory:
    """Bytes held per context; ``shared``: one figure for all contexts (one process, one allocator)."""

    bytes: tuple[int, ...]
    source: str
    shared: bool


def model_bytes(model: Any) -> int:
    """Bytes of a torch module's parameters and buffers (each tensor counted once)."""
    seen: set[int] = set()
    total = 0
    for t in (*model.parameters(), *model.buffers()):
        key = t.data_ptr() if t.numel() else id(t)
        if key in seen:
            continue
        seen.add(key)
        total += t.numel() * t.element_size()
    return total


def cuda_reserved(device: str) -> int:
    """``torch.cuda.memory_reserved`` of ``device`` (0 when CUDA is not initialised)."""
    import torch

    if not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return 0
    return int(torch.cuda.memory_reserved(torch.device(device)))


def release_device_memory() -> None:
    """After an engine was closed and dropped (a managed node's cleanup): collect what it held, the objects
    :func:`~daris_ros.runtime.engine.tune_process_for_latency` froze at its start included (``gc.unfreeze``;
    the next engine's start freezes again), and give the CUDA caching allocator's free blocks back to the device."""
    gc.unfreeze()
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
        clear_cublas = getattr(torch._C, "_cuda_clearCublasWorkspaces", None)  # (held per handle and stream)
        if clear_cublas is not None:
            clear_cublas()
        torch.cuda.empty_cache()


def is_cuda_oom(exc: BaseException) -> bool:
    """Whether ``exc`` is the device running out of memory: ``torch.OutOfMemoryError`` (the caching
    allocator), or a CUDA runtime "out of memory" error (``torch.AcceleratorError`` from stream or context
    creation, cuBLAS workspaces...), or a backend error carrying either from a worker process."""
    if type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc)
    return "CUDA out of memory" in text or "CUDA error: out of memory" in text or "OutOfMemoryError" in text


_EXC_LINE = re.compile(r"^(?:[A-Za-z_][\w]*\.)*[A-Za-z_]\w*(?:Error|Exception|Interrupt|Exit)\b(?::|$)")


def traceback_summary(tb: str) -> str:
    """The exception line of a formatted traceback (``torch.OutOfMemoryError: CUDA out of memory...``):
    the last line that starts with an exception type (CUDA errors append advice lines after it), else the
    last non-empty line."""
    lines = [line.rstrip() for line in tb.strip().splitlines() if line.strip()]
    for line in reversed(lines):
        if _EXC_LINE.match(line):
            return line
    return lines[-1].strip() if lines else ""
