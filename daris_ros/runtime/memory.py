"""Memory held per model and per context (issue 8: "Show the memory use per context and model in the stats").

``model_bytes`` counts a model's parameters and buffers (what residency costs per copy). A backend may
offer ``memory_by_context() -> ContextMemory``; where it does not, the engine reports the model bytes
resident in each context (every model is resident in every context).
"""

from __future__ import annotations

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
