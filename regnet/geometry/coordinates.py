"""Coordinates of a grid: voxel indices, torch's normalised coordinates, and points moved by
matrices.

Three coordinate systems per grid (``docs/conventions.md``, "Files and world space"):

- **voxel**: array indices ``(i, j[, k])`` in array axis order;
- **normalised**: torch's ``(x, y[, z])`` in ``[-1, 1]`` = *reversed* array axes, as
  :func:`torch.nn.functional.affine_grid` / ``grid_sample`` use them (``x`` runs along the last
  array axis);
- **world**: millimetres (NIfTI RAS), ``world = A @ voxel`` with the grid's affine ``A``.

Matrices are ``(ndim + 1)`` square homogeneous float64 (numpy, or torch for batches); point
sets are ``(ndim, *spatial)`` (or ``(B, ndim, *spatial)``) float64 tensors, channel ``i`` along
array axis ``i`` like a DDF.

Example::

    >>> x = voxel_grid((2, 3))                      # (2, 2, 3): x[:, i, j] == (i, j)
    >>> apply_matrix(np.diag([2.0, 1.0, 1.0]), x)[0, 1, 2]
    tensor(2., dtype=torch.float64)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from regnet import _checks
from regnet.ops._grid import normalised_line

__all__ = ["apply_matrix", "normalised_coordinates", "normalised_line", "voxel_grid", "voxel_to_normalised"]


def voxel_grid(shape: Sequence[int], device: torch.device | str | None = None,
               dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Voxel indices ``(ndim, *shape)``: ``grid[:, i, j, k] == (i, j, k)``."""
    axes = [torch.arange(int(n), dtype=dtype, device=device) for n in shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"))


def normalised_coordinates(shape: Sequence[int], align_corners: bool, like: torch.Tensor) -> list[torch.Tensor]:
    """Normalised coordinate of every voxel along each *array* axis, as broadcastable views:
    entry ``a`` has shape ``(1, .., n_a, .., 1)`` (:func:`normalised_line` along axis ``a``)."""
    lines = []
    for axis, n in enumerate(shape):
        view = [1] * len(shape)
        view[axis] = int(n)
        lines.append(normalised_line(int(n), align_corners, like.dtype, like.device).view(view))
    return lines


def voxel_to_normalised(shape: Sequence[int], align_corners: bool = True) -> np.ndarray:
    """Matrix ``N`` ``(ndim+1, ndim+1)`` with ``(x, y[, z], 1) = N @ (i, j[, k], 1)``.

    Array index ``i`` along axis ``a`` (size ``n``) goes to normalised coordinate number
    ``ndim - 1 - a`` (reversed order): ``2 i / (n - 1) - 1`` with ``align_corners=True``,
    ``(2 i + 1) / n - 1`` with ``False``, exactly where ``affine_grid`` / ``grid_sample``
    put voxel centres. An axis of size 1 with ``align_corners=True`` (where ``grid_sample``
    reads index 0 for every coordinate) uses scale 1, offset 0, to stay invertible.
    """
    shape = _checks.spatial_shape("voxel_to_normalised", "shape", shape)
    ndim = len(shape)
    matrix = np.zeros((ndim + 1, ndim + 1))
    matrix[ndim, ndim] = 1.0
    for axis, n in enumerate(shape):
        row = ndim - 1 - axis
        if align_corners:
            scale, offset = (2.0 / (n - 1), -1.0) if n > 1 else (1.0, 0.0)
        else:
            scale, offset = 2.0 / n, 1.0 / n - 1.0
        matrix[row, axis] = scale
        matrix[row, ndim] = offset
    return matrix


def apply_matrix(matrix, points: torch.Tensor) -> torch.Tensor:
    """Homogeneous ``matrix`` applied to every point of ``points``.

    Args:
        matrix: ``(ndim+1, ndim+1)`` (numpy or tensor), or ``(B, ndim+1, ndim+1)`` tensor for
            one matrix per batch item.
        points: ``(ndim, *spatial)``, or ``(B, ndim, *spatial)`` with a batched matrix (or to
            apply one matrix to every item).

    Returns:
        Points of the same shape (a batched matrix on unbatched points gives ``(B, ndim,
        *spatial)``), in ``points``' dtype and device; differentiable through a tensor matrix.
    """
    m = torch.as_tensor(matrix if isinstance(matrix, torch.Tensor) else np.asarray(matrix, dtype=np.float64),
                        dtype=points.dtype, device=points.device)
    ndim = m.shape[-1] - 1
    batched_points = points.dim() == ndim + 2  # (B, ndim, *spatial)
    if m.dim() == 2:
        linear, offset = m[:ndim, :ndim], m[:ndim, ndim]
        pattern = "ij,bj...->bi..." if batched_points else "ij,j...->i..."
        shift = offset.view(*([1] if batched_points else []), ndim, *[1] * ndim)
    else:
        linear, offset = m[:, :ndim, :ndim], m[:, :ndim, ndim]
        pattern = "bij,bj...->bi..." if batched_points else "bij,j...->bi..."
        shift = offset.reshape(-1, ndim, *[1] * ndim)
    return torch.einsum(pattern, linear, points) + shift
