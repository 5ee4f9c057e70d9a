"""World-space geometry between two grids: what makes registration of images on different
grids correct in millimetres.

Three coordinate systems per grid:

- **voxel**: array indices ``(i, j[, k])`` in array axis order;
- **normalised**: torch's ``(x, y[, z])`` in ``[-1, 1]`` = *reversed* array axes, as
  :func:`torch.nn.functional.affine_grid` / ``grid_sample`` use them (``x`` runs along the
  last array axis);
- **world**: millimetres (NIfTI RAS), ``world = A @ voxel`` with the grid's affine ``A``.

A normalised ``theta`` (``regnet.ops.affine_transform(moving, theta, shape=fixed_shape)``)
maps fixed normalised points to moving normalised points (pull). Its world-space
counterpart ``M`` (``affine.txt``) maps fixed world points to moving world points:
``moving_world = M @ fixed_world``, so the warped image at fixed world point ``p`` is the
moving image at world point ``M p``. Identity ``M`` means "resample through the headers".

All matrices here are float64; ``theta`` is returned as a float64 tensor, cast it to the
image's dtype before sampling.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from regnet.io.image import Image, _check_affine
from regnet.ops import affine_transform


def _check_shape(fn: str, name: str, shape, ndim: int | None = None) -> tuple[int, ...]:
    if isinstance(shape, torch.Size):
        shape = tuple(shape)
    ok = isinstance(shape, Sequence) and len(shape) in (2, 3)
    ok = ok and all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s > 0 for s in shape)
    if not ok:
        raise ValueError(f"{fn}: {name} must be 2 or 3 positive ints (spatial shape), got {shape!r}")
    if ndim is not None and len(shape) != ndim:
        raise ValueError(f"{fn}: {name} must have {ndim} spatial sizes to match the affines, got {tuple(shape)}")
    return tuple(int(s) for s in shape)


def _check_grid(fn: str, prefix: str, shape, affine) -> tuple[tuple[int, ...], np.ndarray]:
    affine = _check_affine(fn, f"{prefix}_affine", affine)
    ndim = affine.shape[0] - 1
    shape = _check_shape(fn, f"{prefix}_shape", shape, ndim)
    if not np.allclose(affine[-1], np.eye(ndim + 1)[-1]):
        raise ValueError(f"{fn}: {prefix}_affine must have last row (0, ..., 0, 1), got {affine[-1].tolist()}")
    if abs(np.linalg.det(affine[:ndim, :ndim])) < 1e-12 * max(1.0, np.abs(affine[:ndim, :ndim]).max() ** ndim):
        raise ValueError(f"{fn}: {prefix}_affine is singular: {affine.tolist()}")
    return shape, affine


def _check_pair(fn, fixed_shape, fixed_affine, moving_shape, moving_affine):
    fixed_shape, fixed_affine = _check_grid(fn, "fixed", fixed_shape, fixed_affine)
    moving_shape, moving_affine = _check_grid(fn, "moving", moving_shape, moving_affine)
    if len(fixed_shape) != len(moving_shape):
        raise ValueError(
            f"{fn}: fixed grid is {len(fixed_shape)}D ({fixed_affine.shape[0]}x{fixed_affine.shape[0]} affine) "
            f"but moving grid is {len(moving_shape)}D"
        )
    return fixed_shape, fixed_affine, moving_shape, moving_affine


def voxel_to_normalised(shape: Sequence[int], align_corners: bool = True) -> np.ndarray:
    """Matrix ``N`` ``(ndim+1, ndim+1)`` with ``(x, y[, z], 1) = N @ (i, j[, k], 1)``.

    Array index ``i`` along axis ``a`` (size ``n``) goes to normalised coordinate number
    ``ndim - 1 - a`` (reversed order): ``2 i / (n - 1) - 1`` with ``align_corners=True``,
    ``(2 i + 1) / n - 1`` with ``False``, exactly where ``affine_grid`` / ``grid_sample``
    put voxel centres. An axis of size 1 with ``align_corners=True`` (where ``grid_sample``
    reads index 0 for every coordinate) uses scale 1, offset 0, to stay invertible.
    """
    shape = _check_shape("voxel_to_normalised", "shape", shape)
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


def _batched_square(fn: str, name: str, m, ndim_from: int | None = None) -> tuple[np.ndarray, bool]:
    if isinstance(m, torch.Tensor):
        m = m.detach().cpu().double().numpy()
    m = np.asarray(m, dtype=np.float64)
    batched = m.ndim == 3
    if m.ndim == 2:
        m = m[None]
    if m.ndim != 3 or m.shape[0] < 1:
        raise ValueError(f"{fn}: {name} must be 2D or batched 3D, got shape {m.shape}")
    if not np.all(np.isfinite(m)):
        raise ValueError(f"{fn}: {name} contains NaN or infinite values")
    return m, batched


def world_to_theta(
    matrix,
    fixed_shape: Sequence[int],
    fixed_affine,
    moving_shape: Sequence[int],
    moving_affine,
    align_corners: bool = True,
) -> torch.Tensor:
    """Normalised ``theta`` of the world-space map ``matrix`` (fixed world -> moving world).

    ``theta = (N_m A_m^-1 M A_f N_f^-1)[:ndim]`` with ``N`` from :func:`voxel_to_normalised`
    and ``A`` the grids' affines. Use it as
    ``regnet.ops.affine_transform(moving, theta.to(moving.dtype), shape=fixed_shape,
    align_corners=align_corners)``.

    Args:
        matrix: ``(ndim+1, ndim+1)`` or ``(B, ndim+1, ndim+1)``, array or tensor.

    Returns:
        float64 tensor ``(B, ndim, ndim + 1)`` (``B = 1`` for an unbatched ``matrix``).
    """
    fn = "world_to_theta"
    fixed_shape, fixed_affine, moving_shape, moving_affine = _check_pair(
        fn, fixed_shape, fixed_affine, moving_shape, moving_affine
    )
    ndim = len(fixed_shape)
    m, _ = _batched_square(fn, "matrix", matrix)
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
    affine = _check_affine("world_theta", "fixed_affine", fixed_affine)
    return world_to_theta(np.eye(affine.shape[0]), fixed_shape, fixed_affine, moving_shape, moving_affine, align_corners)


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
    fixed_shape, fixed_affine, moving_shape, moving_affine = _check_pair(
        fn, fixed_shape, fixed_affine, moving_shape, moving_affine
    )
    ndim = len(fixed_shape)
    t, _ = _batched_square(fn, "theta", theta)
    if t.shape[1:] != (ndim, ndim + 1):
        raise ValueError(f"{fn}: theta must be ({ndim}, {ndim + 1}) or (B, {ndim}, {ndim + 1}), got shape {t.shape}")
    bottom = np.broadcast_to(np.eye(ndim + 1)[ndim], (t.shape[0], 1, ndim + 1))
    square = np.concatenate([t, bottom], axis=1)
    left = moving_affine @ np.linalg.inv(voxel_to_normalised(moving_shape, align_corners))
    right = voxel_to_normalised(fixed_shape, align_corners) @ np.linalg.inv(fixed_affine)
    m = left[None] @ square @ right[None]
    return m[0] if m.shape[0] == 1 else m


def resample_to(
    moving: Image,
    fixed_shape,
    fixed_affine=None,
    mode: str = "bilinear",
    padding_mode: str = "zeros",
    align_corners: bool = True,
) -> torch.Tensor:
    """Resample ``moving`` onto a fixed grid through world coordinates.

    Args:
        moving: an :class:`Image` (``data`` ``(1, C, *spatial)`` floating, ``affine``).
        fixed_shape: the fixed grid's spatial shape, or a fixed :class:`Image` (then
            ``fixed_affine`` is taken from it).
        fixed_affine: the fixed grid's voxel -> world matrix.
        mode: ``"bilinear"`` (trilinear in 3D) or ``"nearest"`` (labels).
        padding_mode: ``"zeros"``, ``"border"`` or ``"reflection"`` (``grid_sample``'s).

    Returns:
        ``(1, C, *fixed_shape)`` in ``moving.data``'s dtype and device: at every fixed voxel,
        the moving image at the same world point (:func:`regnet.ops.affine_transform` with
        :func:`world_theta`).
    """
    fn = "resample_to"
    if isinstance(fixed_shape, Image):
        if fixed_affine is not None:
            raise ValueError(f"{fn}: pass either a fixed Image or fixed_shape and fixed_affine, not both")
        fixed_shape, fixed_affine = fixed_shape.spatial_shape, fixed_shape.affine
    if not isinstance(moving, Image):
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
    return affine_transform(
        data, theta, shape=tuple(int(s) for s in fixed_shape), mode=mode, padding_mode=padding_mode,
        align_corners=align_corners,
    )


def _linear_part(fn: str, fixed_affine, ddf):
    affine = _check_affine(fn, "fixed_affine", fixed_affine)
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
