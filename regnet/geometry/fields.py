"""Displacement fields made from matrices, fields in world units, and fields on another grid.

Fields are regnet DDFs ``(B, ndim, *spatial)`` in voxels of their grid, channel ``i`` along
array axis ``i``, pull: ``warped(x) = moving(x + u(x))`` (``docs/conventions.md``).

Example::

    >>> theta = torch.tensor([[[1.0, 0.0, 0.5], [0.0, 1.0, 0.0]]])   # shift x by half the extent
    >>> theta_to_ddf(theta, (5, 9))[0, :, 0, 0]                     # 2 voxels along the last axis
    tensor([0., 2.])
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from regnet import _checks, ops
from regnet.geometry.coordinates import apply_matrix, voxel_grid
from regnet.geometry.matrices import theta_to_voxel
from regnet.ops._constants import constant

__all__ = ["ddf_to_world", "invert_ddf", "matrix_to_ddf", "resize_field", "theta_to_ddf", "world_ddf_to_voxel"]


def matrix_to_ddf(matrix, shape: Sequence[int], ddf: torch.Tensor | None = None, *,
                  dtype: torch.dtype = torch.float64, device: torch.device | str | None = None) -> torch.Tensor:
    """The DDF of ``x -> V (x + u(x))`` on a grid of ``shape``, ``(B, ndim, *shape)``.

    Args:
        matrix: voxel matrix ``V`` ``(ndim+1, ndim+1)`` (numpy or tensor) or ``(B, ndim+1, ndim+1)``
            tensor (fixed voxel -> moving voxel; e.g. from
            :func:`~regnet.geometry.matrices.world_to_voxel` or
            :func:`~regnet.geometry.matrices.theta_to_voxel`).
        shape: the grid's spatial shape.
        ddf: ``u`` ``(B, ndim, *shape)`` applied before the matrix (``None``: 0).
        dtype, device: of the result without ``ddf`` (with it: ``ddf``'s). Differentiable
            w.r.t. a tensor ``matrix`` and ``ddf``.
    """
    if ddf is not None:
        dtype, device = ddf.dtype, ddf.device
    elif isinstance(matrix, torch.Tensor):
        device = matrix.device if device is None else device
    x = voxel_grid(shape, device, dtype)
    points = x if ddf is None else x + ddf
    out = apply_matrix(matrix, points) - x
    return out if out.dim() == len(shape) + 2 else out[None]


def theta_to_ddf(theta: torch.Tensor, shape: Sequence[int], align_corners: bool = True) -> torch.Tensor:
    """Voxel DDF ``(B, ndim, *shape)`` of the affine map ``theta`` (normalised) on a grid of
    ``shape``: ``ddf(x) = V x - x`` in voxels, so that ``regnet.ops.warp(moving, ddf)`` equals
    ``affine_transform(moving, theta, align_corners=True)`` for a moving image on the same grid.
    In ``theta``'s dtype, differentiable w.r.t. ``theta``."""
    return matrix_to_ddf(theta_to_voxel(theta, shape, align_corners=align_corners), shape, dtype=theta.dtype,
                         device=theta.device)


def resize_field(u: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Resize a voxel-unit field ``(B, ndim, *spatial)`` to ``shape`` (linear, corner voxels
    aligned), rescaling each channel to the new voxel size ``(new - 1) / (old - 1)``."""
    old = u.shape[2:]
    if tuple(old) == tuple(shape):
        return u
    scale = constant([(n - 1) / max(o - 1, 1) for o, n in zip(old, shape, strict=True)], u.dtype, u.device)
    scale = scale.view(1, -1, *[1] * len(shape))
    mode = "trilinear" if len(shape) == 3 else "bilinear"
    return F.interpolate(u, size=tuple(shape), mode=mode, align_corners=True) * scale


def invert_ddf(ddf: torch.Tensor, iterations: int = 30, padding_mode: str = "border") -> torch.Tensor:
    """Numerical inverse of a DDF ``(B, ndim, *spatial)`` on its own grid, by fixed-point iteration.

    Finds ``v`` with ``x + v(x) = y`` where ``y + u(y) = x``: ``v <- -warp(u, v)``, so that
    ``warp(warp(img, u), v) ~= img`` where the inverse exists (invertible, ``|grad u|`` well
    below 1 for the iteration to contract).
    """
    v = -ddf
    for _ in range(iterations):
        v = -ops.warp(ddf, v, mode="bilinear", padding_mode=padding_mode)
    return v


def _linear_part(fn: str, fixed_affine, ddf):
    affine = _checks.affine_matrix(fn, "fixed_affine", fixed_affine)
    ndim = affine.shape[0] - 1
    if not isinstance(ddf, (torch.Tensor, np.ndarray)):
        raise TypeError(f"{fn}: ddf must be a torch.Tensor or numpy.ndarray, got {type(ddf).__name__}")
    if ddf.ndim != ndim + 2 or ddf.shape[1] != ndim:
        raise ValueError(
            f"{fn}: ddf must have shape (B, {ndim}, *spatial) for a {ndim + 1}x{ndim + 1} fixed_affine, "
            f"got {tuple(ddf.shape)}"
        )
    return affine[:ndim, :ndim]


def _apply_linear(matrix: np.ndarray, ddf):
    if isinstance(ddf, torch.Tensor):
        dtype = ddf.dtype if ddf.is_floating_point() else torch.float32
        m = torch.as_tensor(matrix, dtype=dtype, device=ddf.device)
        return torch.einsum("ij,bj...->bi...", m, ddf.to(dtype))
    return np.einsum("ij,bj...->bi...", matrix, ddf.astype(np.float64, copy=False))


def ddf_to_world(ddf, fixed_affine):
    """Voxel displacement (regnet's DDF) -> world displacement in mm.

    Args:
        ddf: ``(B, ndim, *spatial)`` tensor or array, voxels of the fixed grid, channel ``i``
            along array axis ``i``.
        fixed_affine: the fixed grid's voxel -> world (RAS mm) matrix.

    Returns:
        ``(B, ndim, *spatial)`` of the same kind, channel ``k`` = world axis ``k`` (R, A[, S])
        in mm: ``A[:ndim, :ndim] @ u``. The fixed world point ``p`` of voxel ``x`` maps to
        ``p + d(x)``. Differentiable for tensors.
    """
    return _apply_linear(_linear_part("ddf_to_world", fixed_affine, ddf), ddf)


def world_ddf_to_voxel(ddf_world, fixed_affine):
    """Inverse of :func:`ddf_to_world`: world displacement (mm, RAS axes) -> voxels of the
    fixed grid, ``A[:ndim, :ndim]^-1 @ d``. Same shapes as :func:`ddf_to_world`."""
    linear = _linear_part("world_ddf_to_voxel", fixed_affine, ddf_world)
    return _apply_linear(np.linalg.inv(linear), ddf_world)
