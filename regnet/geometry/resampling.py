"""Sampling an image at points given in another frame: through a matrix, through world space,
onto another grid.

The one place where point sets (voxels of some grid, world mm) become ``grid_sample`` grids:
points are taken to the image's voxels by a matrix, then to its normalised coordinates, then
sampled with :func:`regnet.ops.grid_sample` (``align_corners=True``, voxel centres exact).

Example::

    >>> image = torch.arange(12.0).view(1, 1, 3, 4)
    >>> points = voxel_grid((3, 4)) + 0.5                     # half a voxel along both axes
    >>> sample_at_voxels(image, points, padding_mode="border")[0, 0, 0, 0]
    tensor(2.5000)
"""

from __future__ import annotations

import numpy as np
import torch

from regnet import _checks, ops
from regnet.geometry.coordinates import apply_matrix, voxel_to_normalised
from regnet.geometry.matrices import world_theta

__all__ = ["resample_to", "sample_at_voxels", "sample_at_world", "sampling_dtype"]


def sampling_dtype(x: torch.Tensor, mode: str) -> torch.dtype:
    """The dtype ``x`` is sampled in: float32/float64 keep theirs; integers sample in float64
    with ``nearest`` (exact labels) and float32 with ``bilinear``; half precision in float32."""
    if x.dtype in (torch.float32, torch.float64):
        return x.dtype
    if not x.is_floating_point() and mode == "nearest":
        return torch.float64
    return torch.float32


def sample_at_voxels(image: torch.Tensor, points: torch.Tensor, to_voxels=None, mode: str = "bilinear",
                     padding_mode: str = "zeros") -> torch.Tensor:
    """Sample ``image`` at the points ``to_voxels @ points`` (voxels of ``image``).

    Args:
        image: ``(B, C, *in_spatial)``; sampled in :func:`sampling_dtype` (the result's dtype).
        points: ``(ndim, *out_spatial)`` float64 (one point set for every item) or
            ``(B, ndim, *out_spatial)``.
        to_voxels: ``(ndim+1, ndim+1)`` matrix from the points' frame to ``image``'s voxels
            (``None``: the points are ``image`` voxels already).
        mode, padding_mode: as :func:`regnet.ops.grid_sample`.

    Returns:
        ``(B, C, *out_spatial)`` on ``points``' device.
    """
    dtype = sampling_dtype(image, mode)
    data = image.to(points.device, dtype)
    matrix = voxel_to_normalised(tuple(image.shape[2:]), True)
    if to_voxels is not None:
        matrix = matrix @ np.asarray(to_voxels, dtype=np.float64)
    grid = apply_matrix(matrix, points).movedim(-len(image.shape[2:]) - 1, -1)
    if grid.dim() == image.dim() - 1:
        grid = grid[None]
    return ops.grid_sample(data, grid.to(dtype), mode=mode, padding_mode=padding_mode, align_corners=True)


def sample_at_world(image: torch.Tensor, image_affine, world: torch.Tensor, mode: str = "bilinear",
                    padding_mode: str = "zeros") -> torch.Tensor:
    """Sample ``image`` ``(B, C, *spatial)`` (voxel -> world matrix ``image_affine``) at world
    points ``world`` ``(ndim, *out)`` (mm): :func:`sample_at_voxels` through ``A^-1``."""
    inverse = np.linalg.inv(np.asarray(image_affine, dtype=np.float64))
    return sample_at_voxels(image, world, inverse, mode, padding_mode)


def resample_to(
    moving,
    fixed_shape,
    fixed_affine=None,
    mode: str = "bilinear",
    padding_mode: str = "zeros",
    align_corners: bool = True,
) -> torch.Tensor:
    """Resample ``moving`` onto a fixed grid through world coordinates.

    Args:
        moving: an image with world geometry (:class:`regnet.io.Image`: ``data`` ``(1, C,
            *spatial)`` floating, ``affine``).
        fixed_shape: the fixed grid's spatial shape, or a fixed image (then ``fixed_affine``
            is taken from it).
        fixed_affine: the fixed grid's voxel -> world matrix.
        mode: ``"bilinear"`` (trilinear in 3D) or ``"nearest"`` (labels).
        padding_mode: ``"zeros"``, ``"border"`` or ``"reflection"`` (``grid_sample``'s).

    Returns:
        ``(1, C, *fixed_shape)`` in ``moving.data``'s dtype and device: at every fixed voxel,
        the moving image at the same world point (:func:`regnet.ops.affine_transform` with
        :func:`~regnet.geometry.matrices.world_theta`).
    """
    fn = "resample_to"
    if _is_image(fixed_shape):
        if fixed_affine is not None:
            raise ValueError(f"{fn}: pass either a fixed Image or fixed_shape and fixed_affine, not both")
        fixed_shape, fixed_affine = fixed_shape.spatial_shape, fixed_shape.affine
    if not _is_image(moving):
        raise TypeError(f"{fn}: moving must be a regnet.io.Image, got {type(moving).__name__}")
    if fixed_affine is None:
        raise ValueError(f"{fn}: fixed_affine is required with fixed_shape")
    data = moving.data
    if not isinstance(data, torch.Tensor) or data.dim() not in (4, 5) or not data.is_floating_point():
        raise TypeError(
            f"{fn}: moving.data must be a floating tensor (B, C, *spatial), got "
            f"{getattr(data, 'dtype', type(data).__name__)} of shape {tuple(getattr(data, 'shape', ()))}"
        )
    theta = world_theta(fixed_shape, fixed_affine, tuple(data.shape[2:]), moving.affine, align_corners)
    theta = theta.to(device=data.device, dtype=data.dtype).expand(data.shape[0], -1, -1)
    shape = _checks.spatial_shape(fn, "fixed_shape", fixed_shape)
    return ops.affine_transform(data, theta, shape=shape, mode=mode, padding_mode=padding_mode,
                                align_corners=align_corners)


def _is_image(x) -> bool:
    """An image with world geometry (duck-typed :class:`regnet.io.Image`: ``data``, ``affine``,
    ``spatial_shape``): geometry sits below :mod:`regnet.io` and does not import it."""
    return all(hasattr(x, name) for name in ("data", "affine", "spatial_shape"))


