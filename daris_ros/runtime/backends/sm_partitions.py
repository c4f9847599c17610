"""Which SMs each context gets: eq. 9 sizes laid out on the device's SM granules (pure Python).

Green contexts are built from *granules*: the device's SMs split once into groups of ``granularity``
SMs (8 on Hopper). The driver decides how many groups it can make (an H200's 132 SMs give 15 groups
of 8 and a remainder of 12, because groups stay inside a GPC); the remainder can be added to a context.
A context is a run of consecutive granules, wrapping around:

* ``OS = 1``: disjoint runs, the granules spread as evenly as possible (sizes differ by at most one
  granule), the remainder added to the smallest context, so the contexts cover the whole device. Eq. 9
  rounds *up* (``ceil(132 / 4) -> 40``), which cannot stay disjoint, so OS = 1 uses what fits;
* ``OS > 1``: runs of eq. 9's size (``ceil_g(OS * n_sm / N_c)``, capped at every granule) starting at
  evenly spread offsets, so neighbouring contexts overlap and each SM is shared by about OS contexts;
* a context that holds every granule also gets the remainder (it is the whole device).

A node confined to ``sm_limit`` SMs (a GPU shared with other processes) is planned on its first
``sm_limit // granularity`` granules only: ``n_sm = sm_limit`` and ``n_granules`` that many, so there is
no remainder and the other granules stay free for the other processes.
"""

from __future__ import annotations

from dataclasses import dataclass

from daris_ros.core import sm_per_context_eq9

#: SMs per granule of green contexts on Hopper (the driver's smallest SM group there); GreenBackend's default.
GREEN_SM_GRANULARITY = 8


@dataclass(frozen=True, slots=True)
class SmPlan:
    """Granule indices per context, and what that means in SMs."""

    granularity: int
    n_granules: int
    remainder_sms: int
    contexts: tuple[tuple[int, ...], ...]
    with_remainder: tuple[bool, ...]

    def sm_count(self, context: int) -> int:
        return len(self.contexts[context]) * self.granularity + (self.remainder_sms if self.with_remainder[context]
                                                                  else 0)

    def shared_sms(self, a: int, b: int) -> int:
        """SMs that contexts a and b both hold."""
        both = len(set(self.contexts[a]) & set(self.contexts[b])) * self.granularity
        if self.with_remainder[a] and self.with_remainder[b]:
            both += self.remainder_sms
        return both


def plan_sm_partitions(n_contexts: int, oversubscription: float, n_sm: int, granularity: int = 8,
                       n_granules: int | None = None) -> SmPlan:
    """Lay out N_c contexts on the device's granules (see the module docstring).

    ``n_granules`` is how many groups of ``granularity`` SMs the driver's split gave (default: as many
    as fit); the SMs not in a granule are the remainder.
    """
    if n_contexts < 1:
        raise ValueError(f"n_contexts must be >= 1, got {n_contexts}")
    if not 1.0 <= oversubscription <= n_contexts:
        raise ValueError(f"oversubscription must satisfy 1 <= OS <= N_c = {n_contexts}, got {oversubscription}")
    n_gran = n_sm // granularity if n_granules is None else n_granules
    if n_gran < n_contexts:
        raise ValueError(f"{n_contexts} contexts need at least {n_contexts} granules of {granularity} SMs; "
                         f"the device has {n_gran}")
    remainder = n_sm - n_gran * granularity
    if oversubscription <= 1.0:
        bounds = [round(k * n_gran / n_contexts) for k in range(n_contexts + 1)]
        contexts = tuple(tuple(range(bounds[k], bounds[k + 1])) for k in range(n_contexts))
        smallest = min(range(n_contexts), key=lambda k: (len(contexts[k]), -k))
        with_rem = tuple(k == smallest and remainder > 0 for k in range(n_contexts))
        return SmPlan(granularity, n_gran, remainder, contexts, with_rem)
    else:
        size = sm_per_context_eq9(oversubscription, n_sm, n_contexts, granularity)
        per = min(max(size // granularity, 1), n_gran)
        contexts = tuple(
            tuple(sorted((round(k * n_gran / n_contexts) + i) % n_gran for i in range(per)))
            for k in range(n_contexts)
        )
    full = tuple(len(c) == n_gran and remainder > 0 for c in contexts)
    return SmPlan(granularity, n_gran, remainder, contexts, full)
