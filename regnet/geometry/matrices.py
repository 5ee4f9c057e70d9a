"""Affine maps between two grids in each coordinate system: normalised ``theta`` <-> voxel
matrix <-> world matrix.

A normalised ``theta`` ``(B, ndim, ndim + 1)`` (``regnet.ops.affine_transform(moving, theta,
shape=fixed_shape)``) maps fixed normalised points to moving normalised points (pull). Its
voxel counterpart ``V = N_m^-1 [theta] N_f`` maps fixed voxels to moving voxels, and its world
counterpart ``M = A_m V A_f^-1`` (``affine.txt``) maps fixed world points to moving world
points: ``moving_world = M @ fixed_world``, so the warped image at fixed world point ``p`` is
the moving image at ``M p``. Identity ``M`` means "resample through the headers".

``N`` is :func:`~regnet.geometry.coordinates.voxel_to_normalised` of a grid, ``A`` its affine.
World matrices are float64 numpy; ``theta`` and voxel matrices of a batch are float64 tensors.

Example::

    >>> theta = world_theta((64, 64), np.eye(3), (32, 32), np.diag([2.0, 2.0, 1.0]))
    >>> theta.shape
    torch.Size([1, 2, 3])
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from regnet import _checks
from regnet.geometry.coordinates import voxel_to_normalised

__all__ = ["square", "theta_to_voxel", "theta_to_world", "world_theta", "world_to_theta", "world_to_voxel"]


def _pair(fn, fixed_shape, fixed_affine, moving_shape, moving_affine):
    fixed_shape, fixed_affine = _checks.grid(fn, "fixed", fixed_shape, fixed_affine)
    moving_shape, moving_affine = _checks.grid(fn, "moving", moving_shape, moving_affine)
    if len(fixed_shape) != len(moving_shape):
        raise ValueError(
            f"{fn}: fixed grid is {len(fixed_shape)}D ({fixed_affine.shape[0]}x{fixed_affine.shape[0]} affine) "
            f"but moving grid is {len(moving_shape)}D"
        )
    return fixed_shape, fixed_affine, moving_shape, moving_affine


def _batched(fn: str, name: str, m) -> np.ndarray:
    """``m`` as a float64 ``(B, r, c)`` array (a single matrix gets ``B = 1``)."""
    if isinstance(m, torch.Tensor):
        m = m.detach().cpu().double().numpy()
    m = np.asarray(m, dtype=np.float64)
    if m.ndim == 2:
        m = m[None]
    if m.ndim != 3 or m.shape[0] < 1:
        raise ValueError(f"{fn}: {name} must be 2D or batched 3D, got shape {m.shape}")
    if not np.all(np.isfinite(m)):
        raise ValueError(f"{fn}: {name} contains NaN or infinite values")
    return m


def square(theta: torch.Tensor) -> torch.Tensor:
    """``(B, ndim, ndim + 1)`` -> homogeneous ``(B, ndim + 1, ndim + 1)`` (last row ``0 .. 0 1``),
    differentiable."""
    ndim = theta.shape[1]
    bottom = torch.zeros(theta.shape[0], 1, ndim + 1, dtype=theta.dtype, device=theta.device)
    bottom[:, 0, ndim] = 1
    return torch.cat([theta, bottom], dim=1)


def theta_to_voxel(theta: torch.Tensor, fixed_shape: Sequence[int], moving_shape: Sequence[int] | None = None,
                   align_corners: bool = True) -> torch.Tensor:
    """Voxel matrix ``(B, ndim+1, ndim+1)`` (fixed voxel -> moving voxel) of ``theta``, in
    ``theta``'s dtype and device; differentiable w.r.t. ``theta``. ``moving_shape`` defaults to
    ``fixed_shape`` (both images on one grid)."""
    moving_shape = fixed_shape if moving_shape is None else moving_shape
    to_fixed = torch.as_tensor(voxel_to_normalised(fixed_shape, align_corners), dtype=theta.dtype,
                               device=theta.device)
    from_moving = torch.as_tensor(np.linalg.inv(voxel_to_normalised(moving_shape, align_corners)),
                                  dtype=theta.dtype, device=theta.device)
    return from_moving @ square(theta) @ to_fixed


def world_to_voxel(matrix, fixed_affine, moving_affine=None) -> np.ndarray:
    """Voxel map ``A_m^-1 M A_f`` (fixed voxel -> moving voxel) of a world matrix ``M`` (fixed
    world -> moving world; ``None`` is the identity); ``moving_affine`` defaults to
    ``fixed_affine``. float64 numpy, batched if ``matrix`` is."""
    fixed_affine = np.asarray(fixed_affine, dtype=np.float64)
    moving_affine = fixed_affine if moving_affine is None else np.asarray(moving_affine, dtype=np.float64)
    m = np.eye(fixed_affine.shape[0]) if matrix is None else np.asarray(matrix, dtype=np.float64)
    return np.linalg.inv(moving_affine) @ m @ fixed_affine


def world_to_theta(
    matrix,
    fixed_shape: Sequence[int],
    fixed_affine,
    moving_shape: Sequence[int],
    moving_affine,
    align_corners: bool = True,
) -> torch.Tensor:
    """Normalised ``theta`` of the world-space map ``matrix`` (fixed world -> moving world).

    ``theta = (N_m A_m^-1 M A_f N_f^-1)[:ndim]``. Use it as
    ``regnet.ops.affine_transform(moving, theta.to(moving.dtype), shape=fixed_shape,
    align_corners=align_corners)``.

    Args:
        matrix: ``(ndim+1, ndim+1)`` or ``(B, ndim+1, ndim+1)``, array or tensor.

    Returns:
        float64 tensor ``(B, ndim, ndim + 1)`` (``B = 1`` for an unbatched ``matrix``).
    """
    fn = "world_to_theta"
    fixed_shape, fixed_affine, moving_shape, moving_affine = _pair(
        fn, fixed_shape, fixed_affine, moving_shape, moving_affine
    )
    ndim = len(fixed_shape)
    m = _batched(fn, "matrix", matrix)
    if m.shape[1:] != (ndim + 1, ndim + 1):
        raise ValueError(f"{fn}: matrix must be {ndim + 1}x{ndim + 1} for {ndim}D grids, got shape {m.shape}")
    left = voxel_to_normalised(moving_shape, align_corners) @ np.linalg.inv(moving_affine)
    right = fixed_affine @ np.linalg.inv(voxel_to_normalised(fixed_shape, align_corners))
    theta = left[None] @ m @ right[None]
    return torch.from_numpy(np.ascontiguousarray(theta[:, :ndim, :]))


def world_theta(
    fixed_shape: Sequence[int],
    fixed_affine,
    moving_shape: Sequence[int],
    moving_affine,
    align_corners: bool = True,
) -> torch.Tensor:
    """``theta`` that resamples the moving image onto the fixed grid through world space
    (fixed voxel -> world -> moving voxel -> moving normalised): ``world_to_theta`` of the
    identity. float64 tensor ``(1, ndim, ndim + 1)``."""
    affine = _checks.affine_matrix("world_theta", "fixed_affine", fixed_affine)
    return world_to_theta(np.eye(affine.shape[0]), fixed_shape, fixed_affine, moving_shape, moving_affine,
                          align_corners)


def theta_to_world(
    theta,
    fixed_shape: Sequence[int],
    fixed_affine,
    moving_shape: Sequence[int],
    moving_affine,
    align_corners: bool = True,
) -> np.ndarray:
    """World-space matrix ``M`` of a normalised ``theta``: ``moving_world = M @ fixed_world``.

    ``theta`` is used as ``regnet.ops.affine_transform(moving, theta, shape=fixed_shape,
    align_corners=align_corners)`` does (output grid = fixed grid, input = moving image):
    ``M = A_m N_m^-1 [theta; 0 .. 0 1] N_f A_f^-1``. This is the matrix a registration
    writes as ``affine.txt`` (pull convention: it maps fixed world points to moving world
    points; its inverse moves the moving image's points onto the fixed image).

    Args:
        theta: ``(ndim, ndim+1)`` or ``(B, ndim, ndim+1)``, array or tensor.

    Returns:
        float64 numpy ``(ndim+1, ndim+1)``; ``(B, ndim+1, ndim+1)`` when ``B > 1``.
    """
    fn = "theta_to_world"
    fixed_shape, fixed_affine, moving_shape, moving_affine = _pair(
        fn, fixed_shape, fixed_affine, moving_shape, moving_affine
    )
    ndim = len(fixed_shape)
    t = _batched(fn, "theta", theta)
    if t.shape[1:] != (ndim, ndim + 1):
        raise ValueError(f"{fn}: theta must be ({ndim}, {ndim + 1}) or (B, {ndim}, {ndim + 1}), got shape {t.shape}")
    bottom = np.broadcast_to(np.eye(ndim + 1)[ndim], (t.shape[0], 1, ndim + 1))
    homogeneous = np.concatenate([t, bottom], axis=1)
    left = moving_affine @ np.linalg.inv(voxel_to_normalised(moving_shape, align_corners))
    right = voxel_to_normalised(fixed_shape, align_corners) @ np.linalg.inv(fixed_affine)
    m = left[None] @ homogeneous @ right[None]
    return m[0] if m.shape[0] == 1 else m
