"""Host-side helpers shared by every Triton launcher: output buffers and compute dtypes.

- :func:`empty` makes every buffer a kernel writes completely. The launchers call it through
  this module (``_common.empty(...)``), so the tests replace it once with a NaN-filled
  (poisoned) version and see any element a kernel forgot to write.
- :func:`compute_dtype`: float32 arithmetic for float16 / bfloat16 / float32 inputs, float64
  for float64, as a Triton dtype (the kernels' ``CDT``) and a torch dtype (accumulation
  buffers, intermediate passes).

Example::

    >>> compute_dtype(torch.bfloat16)
    (triton.language.float32, torch.float32)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import triton.language as tl


def empty(shape: Sequence[int], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A buffer the kernel writes completely (tests replace this with a poisoned one)."""
    return torch.empty(tuple(shape), dtype=dtype, device=device)


def compute_dtype(dtype: torch.dtype) -> tuple[tl.dtype, torch.dtype]:
    """(Triton, torch) dtype of the arithmetic and of the accumulation buffers for inputs of
    ``dtype``: float64 for float64, float32 otherwise."""
    if dtype == torch.float64:
        return tl.float64, torch.float64
    return tl.float32, torch.float32
