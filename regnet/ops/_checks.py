"""Argument checks shared by the public ops: clear errors at the boundary.

Each check names the function and the argument, states what was expected and what was
given (shape, dtype, device), so that no bad input reaches a kernel.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

SAMPLING_MODES = ("bilinear", "nearest")
PADDING_MODES = ("zeros", "border", "reflection")
# Enum values of ATen's grid sampler.
MODE_CODE = {"bilinear": 0, "nearest": 1}
PADDING_CODE = {"zeros": 0, "border": 1, "reflection": 2}


def tensor(fn: str, name: str, x, ndims: Sequence[int] | None = None, floating: bool = True):
    """Check that ``x`` is a tensor with one of ``ndims`` dimensions and a floating dtype."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{fn}: {name} must be a torch.Tensor, got {type(x).__name__}")
    if ndims is not None and x.dim() not in ndims:
        raise ValueError(
            f"{fn}: {name} must have {_either(ndims)} dimensions, "
            f"got shape {tuple(x.shape)} ({x.dim()} dimensions)"
        )
    if floating and not x.is_floating_point():
        raise TypeError(f"{fn}: {name} must have a floating dtype (float16/bfloat16/float32/float64), got {x.dtype}")
    return x


def _either(values) -> str:
    values = [str(v) for v in values]
    return values[0] if len(values) == 1 else ", ".join(values[:-1]) + " or " + values[-1]


def same_device_dtype(fn: str, **tensors):
    """Check that all named tensors share one device and one dtype."""
    (first_name, first), *rest = tensors.items()
    for name, x in rest:
        if x.device != first.device:
            raise ValueError(f"{fn}: {name} is on {x.device} but {first_name} is on {first.device}; move both to one device")
        if x.dtype != first.dtype:
            raise TypeError(f"{fn}: {name} has dtype {x.dtype} but {first_name} has dtype {first.dtype}; use one dtype")


def choice(fn: str, name: str, value, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"{fn}: {name} must be one of {tuple(choices)}, got {value!r}")
    return value


def spatial_field(fn: str, name: str, field: torch.Tensor, batch: int, spatial: Sequence[int]):
    """Check a displacement/velocity field of shape ``(batch, ndim, *spatial)``."""
    expected = (batch, len(spatial), *spatial)
    if tuple(field.shape) != expected:
        raise ValueError(
            f"{fn}: {name} must have shape (B, ndim, *spatial) = {expected}, got {tuple(field.shape)}"
        )


def field(fn: str, name: str, x) -> torch.Tensor:
    """Check a displacement/velocity field ``(B, ndim, *spatial)`` with ndim 2 or 3."""
    tensor(fn, name, x, ndims=(4, 5))
    if x.shape[1] != x.dim() - 2:
        raise ValueError(
            f"{fn}: {name} must have shape (B, ndim, *spatial) with ndim = {x.dim() - 2} channels "
            f"for {x.dim() - 2}D, got shape {tuple(x.shape)}"
        )
    return x


def non_negative_int(fn: str, name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{fn}: {name} must be a non-negative int, got {value!r}")
    return value
