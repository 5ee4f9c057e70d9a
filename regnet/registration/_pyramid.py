"""Image pyramids of a registration: level shapes, anti-aliased downsampling, linear resizing.

Example::

    >>> level_shape((160, 192, 224), 4)
    (40, 48, 56)
    >>> downsample(image, level_shape(image.shape[2:], 2)).shape[2:]   # Gaussian, then linear
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from regnet import ops


def interp_mode(ndim: int) -> str:
    return "trilinear" if ndim == 3 else "bilinear"


def resize(x: torch.Tensor, shape: Sequence[int], align_corners: bool = True) -> torch.Tensor:
    """Linear resize of ``(B, C, *spatial)`` to ``shape`` (corner voxels aligned by default;
    ``align_corners=False`` aligns the image extents instead)."""
    if tuple(x.shape[2:]) == tuple(shape):
        return x
    return F.interpolate(x, size=tuple(shape), mode=interp_mode(x.dim() - 2), align_corners=align_corners)


def level_shape(shape: Sequence[int], scale: float) -> tuple[int, ...]:
    """Spatial shape of a pyramid level ``scale`` times coarser (at least 4 voxels per axis)."""
    return tuple(max(4, round(s / scale)) for s in shape)


def downsample(x: torch.Tensor, shape: Sequence[int], align_corners: bool = True) -> torch.Tensor:
    """Anti-aliased downsampling: Gaussian smoothing with sigma ``0.5 * factor`` voxels per
    axis (factor = old / new size; none where the factor is <= 1), then a linear resize
    (``align_corners`` as in :func:`resize`)."""
    factors = [old / new for old, new in zip(x.shape[2:], shape, strict=True)]
    sigma = [0.5 * f if f > 1 else 0.0 for f in factors]
    if any(s > 0 for s in sigma):
        x = ops.gaussian_smooth(x, sigma, mode="nearest")
    return resize(x, shape, align_corners)


