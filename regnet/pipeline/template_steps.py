"""The steps of ``regnet template`` between two rounds of registrations (``docs/cohorts.md``):
the initial average, the average of the warped subjects, the template's shape update and the
sharpening. Images are ``(1, 1, *spatial)`` float32 tensors on the template grid, intensities
normalised to [0, 1] (:func:`regnet.registration.world.normalise`).

The shape update (ANTs' ``antsMultivariateTemplateConstruction2.sh``, regnet's choices):
every subject ``s`` maps the template to itself by ``x -> M_s (x + u_s(x))`` (``u_s``: SyN's
forward field ``warp.nii.gz`` in template voxels; ``M_s``: ``affine.txt``, world). The new
template is the average ``T'`` of the warped subjects pulled through the inverse of the mean
map, ``T_new(x) = T'(psi(x))`` with ``psi = exp(-step * mean_s u_s) o B^-1``:

- **deformable part**: the negative mean SyN field exponentiated as a stationary velocity
  (:func:`regnet.ops.exp`) -- ANTs scales the mean warp by ``-0.25`` and applies it four
  times, the same scaling and squaring with two squarings; it is the exact inverse of
  ``exp(mean u)``, a diffeomorphism whatever the size of the mean, and to first order the
  inverse of the mean displacement (the log-Euclidean mean of the subjects' maps);
- **affine part** ``B``: the mean *stretch* of the subjects' affines (the symmetric factor
  ``P_s`` of the polar decomposition ``L_s = R_s P_s`` of each linear part: scaling and
  shear), applied about the template's centre of mass; rotations and translations are left
  out, as ANTs' ``AverageAffineTransformNoRigid`` does, so the template keeps the pose of the
  initial average instead of drifting with the subjects' scanner positions.

Example::

    >>> psi = update_field(mean_u, mean_stretch(matrices), centre, affine, step=1.0)
    >>> template = ops.warp(average, psi)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from regnet import ops
from regnet.geometry import matrix_to_ddf, resample_to, world_to_voxel
from regnet.io import Image
from regnet.registration.initialisation import world_centre_of_mass
from regnet.registration.world import intensity_range, normalise

__all__ = ["initial_average", "laplacian_sharpen", "mean_stretch", "stretch", "update_field"]


def normalised(image: Image) -> torch.Tensor:
    """The first channel of ``image`` in [0, 1] (0.5 / 99.5 percentiles), ``(1, 1, *spatial)``."""
    data = image.data[:, :1].float()
    return normalise(data, *intensity_range(data))


def initial_average(images: Sequence[Image], reference: Image) -> torch.Tensor:
    """Mean of the normalised images resampled onto ``reference``'s grid through their headers,
    each first translated so that its intensity centre of mass lies on the reference's (the
    start ``register_images`` uses), so that images whose headers disagree still overlap."""
    shape, affine = reference.spatial_shape, reference.affine
    target = world_centre_of_mass(normalised(reference), affine)
    total = torch.zeros((1, 1, *shape))
    for image in images:
        data = normalised(image)
        shift = np.eye(image.ndim + 1)
        shift[:-1, -1] = world_centre_of_mass(data, image.affine) - target  # fixed world -> moving world
        moved = Image(data, np.linalg.inv(shift) @ image.affine)  # its centre of mass on the target
        total += resample_to(moved, shape, affine)
    return total / len(images)


def stretch(matrix: np.ndarray) -> np.ndarray:
    """The symmetric positive definite factor ``P`` of the polar decomposition ``L = R P`` of a
    world matrix's linear part (``L = U S V^T`` -> ``P = V S V^T``): its scaling and shear."""
    ndim = matrix.shape[0] - 1
    _, s, vt = np.linalg.svd(np.asarray(matrix, dtype=np.float64)[:ndim, :ndim])
    return vt.T @ np.diag(s) @ vt


def mean_stretch(matrices: Sequence[np.ndarray]) -> np.ndarray:
    """The mean :func:`stretch` of the subjects' affines (``(ndim, ndim)``; identity without any)."""
    if not matrices:
        raise ValueError("mean_stretch: no matrices")
    return np.mean([stretch(m) for m in matrices], axis=0)


def update_field(mean_u: torch.Tensor | None, mean_p: np.ndarray | None, centre: np.ndarray, affine: np.ndarray,
                 shape: Sequence[int], step: float = 1.0, steps: int = 7) -> torch.Tensor:
    """The DDF ``psi`` (``(1, ndim, *shape)``, template voxels) of the shape update (module docstring).

    Args:
        mean_u: the mean SyN field ``(1, ndim, *shape)`` in template voxels (``None``: no SyN).
        mean_p: the mean stretch ``(ndim, ndim)`` (``None``: no affine part).
        centre: the world point (mm) about which the stretch is removed.
        affine: the template grid's voxel -> world matrix.
        step: fraction of the update (1: the whole inverse; ANTs' script: 4 x 0.25).
        steps: scaling-and-squaring steps of the exponential.
    """
    ndim = len(shape)
    psi = torch.zeros((1, ndim, *shape), dtype=torch.float64)
    if mean_p is not None:
        scaled = np.eye(ndim) + step * (np.asarray(mean_p) - np.eye(ndim))
        b = np.eye(ndim + 1)
        b[:ndim, :ndim] = scaled
        b[:ndim, ndim] = centre - scaled @ centre
        psi = matrix_to_ddf(world_to_voxel(np.linalg.inv(b), affine), shape)  # x -> B^-1 x, template voxels
    if mean_u is not None:
        inverse = ops.exp(-step * mean_u.double(), steps, padding_mode="border")
        psi = ops.compose(inverse, psi.to(inverse))  # B^-1 first, then exp(-step u)
    return psi.float()


def laplacian_sharpen(image: torch.Tensor, spacing: Sequence[float] | None = None) -> torch.Tensor:
    """Laplacian sharpening (ANTs' ``ImageMath Sharpen``, ITK's LaplacianSharpeningImageFilter
    up to its output rescaling): ``image - laplacian(image)``, the Laplacian from second
    differences in voxels (weighted by ``1 / spacing^2`` relative to the finest axis), replicated
    borders, clipped to the image's range. ``image`` ``(1, 1, *spatial)``."""
    ndim = image.dim() - 2
    spacing = [1.0] * ndim if spacing is None else list(spacing)
    finest = min(spacing)
    padded = F.pad(image, [1, 1] * ndim, mode="replicate")
    laplacian = torch.zeros_like(image)
    for axis in range(ndim):
        dim = 2 + axis
        inner = [slice(None), slice(None)] + [slice(1, -1)] * ndim
        ahead, behind = list(inner), list(inner)
        ahead[dim], behind[dim] = slice(2, None), slice(0, -2)
        weight = (finest / spacing[axis]) ** 2
        laplacian += weight * (padded[tuple(ahead)] + padded[tuple(behind)] - 2 * image)
    return (image - laplacian).clamp(float(image.min()), float(image.max()))
