"""Starting points of a registration: centres of mass and principal axes of the intensities.

- :func:`initial_candidates`: the starting affine parameters of
  :class:`~regnet.registration.affine.AffineRegistration` (``init="com"`` / ``"moments"`` /
  ``None``), in normalised coordinates;
- :func:`moments` / :func:`principal_axes_rotations`: the intensity moments behind them;
- :func:`world_centre_of_mass`: the centre of mass in world mm, the start of a world-space
  registration (:func:`regnet.registration.world.register_images`, ANTs' default start).

Example::

    >>> centre, _ = moments(image, align_corners=True, with_cov=False)   # (B, ndim), (x, y[, z])
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import torch

from regnet import ops
from regnet.geometry import normalised_coordinates


def initial_candidates(fn: str, moving: torch.Tensor, static: torch.Tensor, init: str | None, given: Sequence,
                       align_corners: bool) -> list[list[torch.Tensor]]:
    """Starting ``[translation, rotation, zoom, shear]`` of an affine registration, one set per
    candidate (several with ``init="moments"``: no rotation and each principal-axes rotation).

    ``given``: the user's ``(init_translation, init_rotation, init_zoom, init_shear)`` (each
    ``None`` or a tensor, checked here); each one given replaces what ``init`` would choose.
    ``init``: ``"com"`` (the static centre of mass goes onto the moving one), ``"moments"``
    (also principal axes) or ``None`` (identity). Normalised coordinates, ``align_corners`` as
    the registration's.
    """
    batch, ndim = static.shape[0], static.dim() - 2
    like = dict(dtype=static.dtype, device=static.device)
    shapes = {"init_translation": (batch, ndim), "init_rotation": (batch, ndim, ndim),
              "init_zoom": (batch, ndim), "init_shear": (batch, ndim)}
    values = []
    for (name, want), value in zip(shapes.items(), given, strict=True):
        if value is not None:
            if tuple(value.shape) != want:
                raise ValueError(f"{fn}: {name} must have shape {want} (batch size {batch}, {ndim}D), "
                                 f"got {tuple(value.shape)}")
            if not value.is_floating_point():
                raise TypeError(f"{fn}: {name} must have a floating dtype, got {value.dtype}")
            value = value.detach().to(**like).clone()
            if not bool(torch.isfinite(value).all()):
                raise ValueError(f"{fn}: {name} contains NaN or infinite values")
        values.append(value)
    translation, rotation, zoom, shear = values
    rotations = [rotation]
    if rotation is None:
        rotations = [torch.eye(ndim, **like).expand(batch, ndim, ndim).clone()]
    if zoom is None:
        zoom = torch.ones(batch, ndim, **like)
    if shear is None:
        shear = torch.zeros(batch, ndim, **like)
    if init is None:
        if translation is None:
            translation = torch.zeros(batch, ndim, **like)
        return [[translation, rotations[0], zoom, shear]]

    with torch.no_grad():
        with_cov = init == "moments" and rotation is None
        c_moving, cov_moving = moments(moving, align_corners, with_cov)
        c_static, cov_static = moments(static, align_corners, with_cov)
        if init == "moments" and rotation is None:
            rotations += principal_axes_rotations(cov_moving, cov_static, static, align_corners)
        candidates = []
        for r in rotations:
            t = translation
            if t is None:  # the static centre of mass goes onto the moving one
                linear = ops.compose_affine(torch.zeros_like(zoom), r, zoom, shear)[..., :ndim]
                t = c_moving - (linear @ c_static[..., None])[..., 0]
            candidates.append([t, r, zoom, shear])
    return candidates


def moments(image: torch.Tensor, align_corners: bool, with_cov: bool = True):
    """Centre of mass ``(B, ndim)`` and second central moments ``(B, ndim, ndim)`` of the
    intensities (summed over channels, shifted to a minimum of 0), in normalised
    coordinates ordered ``(x, y[, z])``; ``None`` for the moments unless ``with_cov``. An
    empty (constant) image has its centre at 0."""
    batch, ndim = image.shape[0], image.dim() - 2
    dtype = image.dtype
    image = _precise(image)  # sums over millions of voxels
    weight = image.sum(1)
    weight = weight - weight.reshape(batch, -1).amin(1).view(batch, *[1] * ndim)
    mass = weight.reshape(batch, -1).sum(1)
    safe = torch.where(mass > 0, mass, torch.ones_like(mass))
    coords = list(reversed(normalised_coordinates(image.shape[2:], align_corners, image)))  # (x, y[, z])
    centre = torch.stack([(weight * c).reshape(batch, -1).sum(1) / safe for c in coords], dim=1)
    centre = torch.where((mass > 0)[:, None], centre, torch.zeros_like(centre))
    if not with_cov:
        return centre.to(dtype), None
    cov = torch.zeros(batch, ndim, ndim, dtype=image.dtype, device=image.device)
    for i in range(ndim):
        di = coords[i] - centre[:, i].view(batch, *[1] * ndim)
        for j in range(i, ndim):
            dj = coords[j] - centre[:, j].view(batch, *[1] * ndim)
            value = (weight * di * dj).reshape(batch, -1).sum(1) / safe
            cov[:, i, j] = value
            cov[:, j, i] = value
    return centre.to(dtype), cov.to(dtype)


def _precise(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float64 where the device has it (not MPS)."""
    return x.float() if x.device.type == "mps" else x.double()


def principal_axes_rotations(cov_moving, cov_static, static, align_corners) -> list[torch.Tensor]:
    """The proper rotations ``(B, ndim, ndim)`` (normalised coordinates) that take the static
    image's principal axes onto the moving image's, one per sign choice of the axes.

    The axes are computed in the static image's voxel units (normalised coordinates times
    the half extent), where a rotation is a rotation, and converted back."""
    ndim = cov_moving.shape[-1]
    half = [(n - 1) / 2 if align_corners else n / 2 for n in reversed(static.shape[2:])]
    h = torch.tensor(half, dtype=cov_moving.dtype, device=cov_moving.device)
    to_voxels = h[:, None] * h[None, :]
    _, axes_moving = torch.linalg.eigh(_precise(cov_moving * to_voxels))
    _, axes_static = torch.linalg.eigh(_precise(cov_static * to_voxels))
    h = _precise(h)
    # det(R) = det(U_m) det(D) det(U_s) must be +1: the last sign follows from the others.
    parity = torch.linalg.det(axes_moving) * torch.linalg.det(axes_static)  # (B,), +-1
    rotations = []
    for signs in itertools.product((1.0, -1.0), repeat=ndim - 1):
        first = torch.tensor(signs, dtype=h.dtype, device=h.device).expand(parity.shape[0], ndim - 1)
        last = parity.sign() * first.prod(1)
        d = torch.diag_embed(torch.cat([first, last[:, None]], dim=1))
        r = axes_moving @ d @ axes_static.transpose(1, 2)
        r = r / h[:, None] * h[None, :]  # H^-1 R H
        rotations.append(r.to(cov_moving.dtype))
    return rotations


def world_centre_of_mass(image: torch.Tensor, affine) -> np.ndarray:
    """Intensity-weighted centre ``(ndim,)`` in world mm of ``image`` ``(1, C, *spatial)``
    (negative values weigh 0; the channels are summed), from the per-axis marginals."""
    weights = image[0].double().clamp(min=0).sum(0)
    ndim = weights.dim()
    total = float(weights.sum())
    if total <= 0:
        voxel = (np.array(weights.shape, dtype=np.float64) - 1) / 2  # no mass: the grid centre
    else:
        voxel = np.empty(ndim)
        for axis in range(ndim):
            marginal = weights.sum(dim=tuple(a for a in range(ndim) if a != axis))
            index = torch.arange(marginal.numel(), dtype=torch.float64, device=marginal.device)
            voxel[axis] = float((marginal * index).sum()) / total
    affine = np.asarray(affine, dtype=np.float64)
    return affine[:ndim, :ndim] @ voxel + affine[:ndim, ndim]
