"""Small constant tensors cached per (values, dtype, device).

A tensor built from Python numbers on a CUDA device is a host-to-device copy from pageable
memory: it waits for the copy (a synchronisation point) and is not allowed while a CUDA graph
is being captured. Ops and losses that need a few numbers as a tensor (per-axis scales, a
kernel's parameters, a window) take them from here: the copy happens once, on first use (in
an optimisation loop: its eager warm-up iterations), and later calls, captured ones too,
reuse the same tensor. The tensors are shared: never write into them.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch


@functools.lru_cache(maxsize=512)
def _cached(values: tuple, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype, device=device)


def constant(values: Sequence[float], dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    """The 1-D tensor ``values`` on ``device`` in ``dtype``, created once and then shared
    (read-only by convention; do not modify it in place)."""
    return _cached(tuple(float(v) for v in values), dtype, torch.device(device))
