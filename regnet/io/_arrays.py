"""Arrays between torch and the file formats: tensors in and out of numpy, the on-disk dtype,
and the ``(1, C, *spatial)`` layout of data to be saved."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from numpy.typing import DTypeLike

__all__ = ["as_np_dtype", "cast_to", "channels_first", "default_dtype", "to_numpy", "to_tensor"]

# torch has no (or little) support for these; widen them losslessly.
_WIDEN = {np.dtype(np.uint16): np.int32, np.dtype(np.uint32): np.int64}


def to_numpy(fn: str, name: str, x: object) -> np.ndarray:
    """A tensor (detached, on the CPU; half precision as float32) or an array, as numpy."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.dtype in (torch.float16, torch.bfloat16):
            x = x.float()
        return x.numpy()
    if isinstance(x, np.ndarray):
        return x
    raise TypeError(f"{fn}: {name} must be a torch.Tensor or numpy.ndarray, got {type(x).__name__}")


def to_tensor(arr: np.ndarray, dtype: torch.dtype | None) -> torch.Tensor:
    """A loaded array as a tensor of ``dtype`` (``None``: the stored type, uint16 -> int32,
    uint32 -> int64; native byte order)."""
    if arr.dtype in _WIDEN:
        arr = arr.astype(_WIDEN[arr.dtype])
    if arr.dtype.byteorder not in ("=", "|"):
        arr = arr.astype(arr.dtype.newbyteorder("="))
    tensor = torch.from_numpy(np.ascontiguousarray(arr))
    return tensor if dtype is None else tensor.to(dtype)


def channels_first(fn: str, data: object, ndim: int) -> np.ndarray:
    """``(1, C, *spatial)``, ``(C, *spatial)`` or ``(*spatial)`` -> ``(C, *spatial)``."""
    arr = to_numpy(fn, "data", data)
    extra = arr.ndim - ndim
    if extra == 0:
        arr = arr[None]
    elif extra == 2:
        if arr.shape[0] != 1:
            raise ValueError(f"{fn}: data must have batch size 1 to be saved, got shape {arr.shape}")
        arr = arr[0]
    elif extra != 1:
        raise ValueError(
            f"{fn}: data of shape {arr.shape} does not fit a {ndim}D affine; expected (1, C, *spatial), "
            f"(C, *spatial) or (*spatial) with {ndim} spatial axes"
        )
    if arr.shape[0] < 1 or any(s < 1 for s in arr.shape[1:]):
        raise ValueError(f"{fn}: data must not be empty, got shape {arr.shape}")
    return arr


def cast_to(fn: str, path: Path, arr: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Cast to ``dtype``; integer targets are rounded and clipped to their range."""
    if arr.dtype == dtype:
        return arr
    if np.issubdtype(dtype, np.integer) or dtype == np.bool_:
        if arr.dtype.kind == "f":
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"{fn}: {path}: data contains NaN or infinite values; cannot store them as {dtype}")
            arr = np.rint(arr)
        if dtype != np.bool_:
            info = np.iinfo(dtype)
            arr = np.clip(arr, info.min, info.max)
    return arr.astype(dtype)


def default_dtype(arr: np.ndarray) -> np.dtype:
    """The on-disk dtype of data saved without ``dtype=``: its own (bool -> uint8, float16 ->
    float32, int64 -> int32 where the values fit)."""
    if arr.dtype == np.bool_:
        return np.dtype(np.uint8)
    if arr.dtype == np.float16:
        return np.dtype(np.float32)
    if arr.dtype == np.int64:
        return np.dtype(np.int32) if arr.size == 0 or (arr.min() >= -(2**31) and arr.max() < 2**31) else arr.dtype
    return arr.dtype


def as_np_dtype(fn: str, dtype: DTypeLike | torch.dtype) -> np.dtype:
    """A numpy dtype from a numpy/torch dtype or a name."""
    if isinstance(dtype, torch.dtype):
        dtype = torch.empty((), dtype=dtype).numpy().dtype
    try:
        return np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{fn}: dtype must be a numpy/torch dtype or its name, got {dtype!r}") from None
