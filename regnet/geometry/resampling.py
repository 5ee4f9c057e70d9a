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

__all__ = ["resample_to", "sample_at_voxels", "sample_at_world", "sample_labels_at_voxels", "sampling_dtype"]

#: Points per chunk of :func:`sample_labels_at_voxels` (bounds its temporaries to ~0.5 GB).
LABEL_CHUNK = 1 << 20


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


@torch.no_grad()
def sample_labels_at_voxels(labels: torch.Tensor, points: torch.Tensor, to_voxels=None) -> torch.Tensor:
    """Label-wise linear interpolation of a label map (ITK's ``GenericLabelInterpolator``,
    ANTs' ``-n GenericLabel``): at each point, the label whose indicator has the largest linear
    interpolation weight, i.e. the label carrying the most of the ``2**ndim`` corner weights
    (ties: the first corner's in ``(i, j[, k])`` order). Smoother boundaries than nearest
    neighbour, and every output value is one of the input labels. Corners outside the map
    count as label 0 (zero padding, as nearest's).

    Args:
        labels: ``(1, C, *in_spatial)`` integer (or whole-number float) label maps.
        points: ``(ndim, *out_spatial)`` float64.
        to_voxels: as in :func:`sample_at_voxels`.

    Returns:
        ``(1, C, *out_spatial)`` in ``labels``' dtype on ``points``' device.
    """
    spatial = tuple(labels.shape[2:])
    ndim = len(spatial)
    voxels = points if to_voxels is None else apply_matrix(np.asarray(to_voxels, dtype=np.float64), points)
    voxels = voxels.reshape(ndim, -1)
    device = points.device
    maps = labels.to(device)[0]  # (C, *in_spatial)
    out = torch.empty((labels.shape[1], voxels.shape[1]), dtype=labels.dtype, device=device)
    sizes = torch.tensor(spatial, device=device).view(ndim, 1)
    strides = torch.tensor([int(np.prod(spatial[a + 1:])) for a in range(ndim)], device=device).view(ndim, 1)
    corners = torch.tensor(list(np.ndindex(*(2,) * ndim)), device=device).T  # (ndim, 2**ndim)
    for channel, label_map in enumerate(maps):
        flat = label_map.reshape(-1)
        uniform = _uniform_blocks(label_map).reshape(-1)
        for start in range(0, voxels.shape[1], LABEL_CHUNK):
            p = voxels[:, start:start + LABEL_CHUNK]
            low = p.floor()
            first = low.long()
            ok = ((first >= 0) & (first < sizes)).all(0)
            first_offset = (first.clamp_min(0).minimum(sizes - 1) * strides).sum(0)
            chosen = torch.where(ok, flat[first_offset], torch.zeros((), dtype=flat.dtype))
            mixed = (~(ok & uniform[first_offset])).nonzero()[:, 0]  # points whose 2**ndim corners differ
            if mixed.numel():
                frac = (p[:, mixed] - low[:, mixed])[:, None, :]  # (ndim, 1, m)
                index = first[:, None, mixed] + corners[:, :, None]  # (ndim, 2**ndim, m)
                weight = torch.where(corners[:, :, None].bool(), frac, 1 - frac).prod(0)  # (2**ndim, m)
                inside = ((index >= 0) & (index < sizes[:, :, None])).all(0)
                offset = (index.clamp_min(0).minimum(sizes[:, :, None] - 1) * strides[:, :, None]).sum(0)
                lab = torch.where(inside, flat[offset], torch.zeros((), dtype=flat.dtype))
                score = ((lab[:, None, :] == lab[None, :, :]) * weight[None, :, :]).sum(1)  # each label's weight
                chosen[mixed] = lab.gather(0, score.argmax(0)[None])[0]
            out[channel, start:start + LABEL_CHUNK] = chosen
    return out.reshape(1, labels.shape[1], *points.shape[1:])


def _uniform_blocks(label_map: torch.Tensor) -> torch.Tensor:
    """``(*spatial)`` bool: the ``2**ndim`` block of voxels starting at each voxel holds one label
    (blocks reaching past the upper edge count the outside as label 0)."""
    padded = torch.nn.functional.pad(label_map[None].float() if not label_map.is_floating_point() else
                                     label_map[None], (0, 1) * label_map.dim())[0].to(label_map.dtype)
    uniform = torch.ones(label_map.shape, dtype=torch.bool, device=label_map.device)
    for corner in np.ndindex(*(2,) * label_map.dim()):
        if any(corner):
            shifted = padded[tuple(slice(c, c + n) for c, n in zip(corner, label_map.shape, strict=True))]
            uniform &= shifted == label_map
    return uniform


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


