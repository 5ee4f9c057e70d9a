"""2D pictures through Pillow: PNG, JPEG and TIFF in (one luminance channel, rows first), PNG out
(8- or 16-bit, never rescaled). Their world geometry is the identity (1 mm pixels)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from numpy.typing import DTypeLike

from regnet.io._arrays import as_np_dtype, cast_to
from regnet.io._files import atomic_write

__all__ = ["read_picture", "write_png"]

_COLOUR_MODES = ("RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV", "P", "PA", "LA", "La")


def read_picture(path: Path) -> tuple[np.ndarray, np.dtype]:
    """``(array (H, W), stored dtype)`` of a one-frame picture; colour becomes luminance
    (ITU-R 601-2, Pillow's ``"L"``), bool becomes uint8. ``ValueError`` naming ``path`` for
    unreadable or multi-frame files."""
    from PIL import Image as PILImage

    frames = 1
    try:
        with PILImage.open(path) as pil:
            frames = getattr(pil, "n_frames", 1)
            if frames == 1:
                arr = np.array(pil.convert("L") if pil.mode in _COLOUR_MODES else pil)
    except Exception as error:  # Pillow raises UnidentifiedImageError, OSError, ValueError, ...
        raise ValueError(f"load_image: {path}: cannot read as an image ({error})") from error
    if frames != 1:
        raise ValueError(f"load_image: {path}: multi-frame images ({frames} frames) are not supported")
    if arr.ndim != 2:
        raise ValueError(f"load_image: {path}: expected a grayscale or RGB image, got array shape {arr.shape}")
    stored = np.dtype(arr.dtype)
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)
    return arr, stored


def write_png(fn: str, path: Path, arr: np.ndarray, dtype: DTypeLike | torch.dtype = None) -> None:
    """Write ``arr`` ``(1, H, W)`` atomically as a PNG: rounded, clipped, 8-bit when ``dtype``
    is uint8 or (``None``) every value is <= 255, else 16-bit."""
    from PIL import Image as PILImage

    if arr.ndim != 3 or arr.shape[0] != 1:
        raise ValueError(f"{fn}: {path}: PNG holds one 2D channel, got data (C, *spatial) = {arr.shape}")
    arr = arr[0]
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{fn}: {path}: data contains NaN or infinite values")
    if dtype is None:
        out = np.dtype(np.uint8) if arr.size == 0 or np.rint(arr.max()) <= 255 else np.dtype(np.uint16)
    else:
        out = as_np_dtype(fn, dtype)
        if out not in (np.dtype(np.uint8), np.dtype(np.uint16)):
            raise ValueError(f"{fn}: {path}: PNG dtype must be uint8 or uint16, got {out}")
    arr = cast_to(fn, path, arr, out)
    pil = PILImage.fromarray(arr)
    atomic_write(path, lambda tmp: pil.save(tmp, format="PNG"))
