"""Shared pieces of the GPU tests: one dispatch on a backend, waited for through its launch/poll protocol."""

from __future__ import annotations

import time
from typing import Any

from daris_ros.runtime.backends.base import Backend, Finished


def run_sync(b: Backend, context: int, stream: int, model: str, stage: int, size: int, rows: Any,
             timeout: float = 10.0) -> Finished:
    """Launch one dispatch and poll until it finished (other tickets finishing meanwhile are dropped)."""
    ticket = b.launch(context, stream, model, stage, size, rows)
    t_end = time.monotonic() + timeout
    while True:
        for f in b.poll():
            if f.ticket == ticket:
                if f.error is not None:
                    raise f.error
                return f
        assert time.monotonic() < t_end, f"dispatch {ticket} did not finish within {timeout} s"
        time.sleep(0.0002)
