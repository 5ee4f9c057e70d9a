"""Iterative registration inside a MONAI chain (instance optimisation as a transform).

The moving and fixed images may live on different grids (shape, spacing, orientation): the
registration runs in world space (:func:`regnet.registration.register_images`, the same code
as ``regnet register``) and every result is on the grid it belongs to, with that grid's affine.

Two fields describe the result, both in the same convention, which generalises regnet's DDF
to two grids (``G`` a grid with affine ``A_G``, ``d`` a field ``(ndim, *G.shape)`` in voxels
of ``G``): *grid voxel* ``x`` *corresponds to the world point* ``A_G (x + d(x))`` *of the other
subject*. When both grids are the same this is exactly regnet's pull DDF
(``warped = regnet.ops.warp(moving, ddf)``); :func:`apply_registration` samples any image
(any grid, its own affine) through such a field.

- **ddf** (forward), on the fixed grid, ``(ndim, *fixed)``: fixed voxel ``x`` <-> moving world
  point ``A_f (x + ddf(x))``. Warped moving-subject images are the moving images sampled there
  (one interpolation from the original data).
- **inverse_ddf**, on the moving grid, ``(ndim, *moving)``: moving voxel ``y`` <-> fixed world
  point ``A_m (y + inverse_ddf(y))``; fixed-subject images sampled through it land on the
  moving grid. For ``affine`` it is the exact matrix inverse; with SyN it uses SyN's inverse
  field (numerically inverse to the forward one, up to the optimisation's symmetry).
- **affine**: the world matrix ``M`` ``(ndim+1, ndim+1)``, float64, fixed world -> moving world
  (``affine.txt`` of ``regnet register``: a pull transform); the identity for ``syn``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Transform
from monai.utils import TransformBackends

from regnet import _checks
from regnet.geometry import apply_matrix, sample_at_voxels, sample_at_world, voxel_grid
from regnet.io import Image
from regnet.registration.config import load_config
from regnet.registration.world import TRANSFORMS, register_images
from regnet.transforms._common import (
    affine_nd,
    check_field,
    check_image,
    device_of,
    like,
    output_dtype,
    plain,
    spatial_shape,
)

__all__ = ["RegisterImages", "RegistrationResult", "apply_registration", "filename", "register_pair",
           "sample_world", "check_transform"]


def filename(x):
    """``filename_or_obj`` of a MetaTensor (``None`` otherwise)."""
    return x.meta.get("filename_or_obj") if isinstance(x, MetaTensor) else None


def sample_world(image: torch.Tensor, image_affine: np.ndarray, world: torch.Tensor, mode: str,
                 padding_mode: str) -> torch.Tensor:
    """``image`` ``(C, *s)`` (affine ``image_affine``) sampled at world points ``(ndim, *out)``;
    ``nearest`` keeps the input dtype, ``bilinear`` gives float (:func:`output_dtype`)."""
    out = sample_at_world(plain(image)[None], image_affine, world, mode, padding_mode)[0]
    return out.to(output_dtype(image, mode, out.dtype))


def apply_registration(image, ddf, mode: str = "bilinear", padding_mode: str = "zeros", device=None,
                       template=None) -> torch.Tensor:
    """Sample ``image`` (any grid, its own affine) through a registration field onto the field's grid.

    ``out(x) = image(A_i^-1 A_d (x + ddf(x)))`` with ``A_i`` the image's affine and ``A_d`` the
    field's: e.g. ``ddf`` = a registration's forward field (fixed grid) maps any image of the
    moving subject onto the fixed grid; its ``inverse_ddf`` (moving grid) maps fixed-subject
    images onto the moving grid (module docstring). Same-grid fields give
    ``regnet.ops.warp(image, ddf)`` (with ``padding_mode``).

    Args:
        image: ``(C, *spatial)`` MetaTensor (plain tensors: identity affine).
        ddf: ``(ndim, *grid)`` MetaTensor with the output grid's affine, voxels of that grid.
        mode: ``"bilinear"`` or ``"nearest"`` (labels: dtype and values kept).
        padding_mode: ``"zeros"`` (default: outside the image's field of view is 0),
            ``"border"``, ``"reflection"``.
        device: compute device (default: the field's).
        template: a MetaTensor on the output grid whose meta the output copies (default the
            field's); ``filename_or_obj`` and applied operations come from ``image``.

    Returns:
        ``(C, *grid)``: a MetaTensor on the field's grid (its affine) when the inputs are.
    """
    fn = "apply_registration"
    _checks.string_choice(fn, "mode", mode, _checks.SAMPLING_MODES)
    _checks.string_choice(fn, "padding_mode", padding_mode, _checks.PADDING_MODES)
    image = check_image(f"{fn}: image", image)
    ddf = check_field(f"{fn}: ddf", ddf)
    ndim = ddf.shape[0]
    if image.dim() - 1 != ndim:
        raise ValueError(f"{fn}: image is {image.dim() - 1}D (shape {tuple(image.shape)}) but ddf is {ndim}D "
                         f"(shape {tuple(ddf.shape)})")
    dev = device_of(device, ddf.device)
    grid = voxel_grid(spatial_shape(ddf), dev) + plain(ddf).detach().to(dev, torch.float64)
    world = apply_matrix(affine_nd(ddf, ndim), grid)
    with torch.no_grad():
        out = sample_world(plain(image).detach().to(dev), affine_nd(image, ndim), world, mode, padding_mode)
    template = ddf if template is None else template
    return like(out, template, getattr(image, "applied_operations", None), filename(image))


class RegistrationResult(NamedTuple):
    """What :class:`RegisterImages` returns (module docstring for the two fields).

    Attributes:
        warped: moving image on the fixed grid ``(C, *fixed)`` (fixed's meta and affine).
        ddf: forward field ``(ndim, *fixed)``, float32, fixed voxels, fixed's meta.
        inverse_ddf: inverse field ``(ndim, *moving)``, float32, moving voxels, moving's meta.
        matrix: world matrix fixed -> moving ``(ndim+1, ndim+1)`` float64 (identity for ``syn``).
        report: :func:`regnet.registration.register_images`'s report (settings, loss history, times).
    """

    warped: torch.Tensor
    ddf: torch.Tensor
    inverse_ddf: torch.Tensor
    matrix: torch.Tensor
    report: dict[str, Any]


def inverse_field(matrix, syn_inverse, fixed_affine, fixed_shape, grid_affine, grid_shape, device) -> torch.Tensor:
    """Field ``(ndim, *grid)`` on a moving-side grid: grid voxel ``y`` <-> fixed world point
    ``A_g (y + w(y))``, from ``M^-1`` and SyN's inverse field (on the fixed grid)."""
    y = voxel_grid(grid_shape, device)
    ndim = len(grid_shape)
    to_fixed = np.linalg.inv(fixed_affine) @ (np.eye(ndim + 1) if matrix is None else np.linalg.inv(matrix))
    z = apply_matrix(to_fixed @ grid_affine, y)  # fixed voxels (the affine-aligned moving space)
    if syn_inverse is not None:
        z = z + sample_at_voxels(syn_inverse.to(device, torch.float64), z, None, "bilinear", "border")[0]
    return apply_matrix(np.linalg.inv(grid_affine) @ fixed_affine, z) - y


def register_pair(fn: str, moving, fixed, transform: str, config, device, verbose: bool, moving_name: str,
                  fixed_name: str, fixed_mask=None, moving_mask=None, mask_names=("fixed_mask", "moving_mask")):
    """Run :func:`regnet.registration.register_images` on two channel-first (Meta)Tensors (and
    optional binary masks ``(1, *spatial)`` on their grids); returns ``(moving, fixed, result,
    inverse_field, matrix)``."""
    moving = check_image(moving_name, moving)
    fixed = check_image(fixed_name, fixed)
    if moving.dim() != fixed.dim():
        raise ValueError(f"{fn}: {moving_name} is {moving.dim() - 1}D (shape {tuple(moving.shape)}) but "
                         f"{fixed_name} is {fixed.dim() - 1}D (shape {tuple(fixed.shape)})")
    if moving.shape[0] != fixed.shape[0]:
        raise ValueError(f"{fn}: {moving_name} has {moving.shape[0]} channels (shape {tuple(moving.shape)}) but "
                         f"{fixed_name} has {fixed.shape[0]} (shape {tuple(fixed.shape)}); give both the same channels")
    ndim = moving.dim() - 1
    dev = device_of(device, moving.device)
    # instance optimisation needs autograd, also when the chain runs under no_grad / inference_mode
    with torch.inference_mode(False), torch.enable_grad():

        def to_image(x):  # a normal (not an inference-mode) tensor, (1, C, *spatial)
            return Image(plain(x).detach().clone()[None], affine_nd(x, ndim))

        moving_image, fixed_image = to_image(moving), to_image(fixed)
        masks = {}
        for key, mask, name in (("fixed_mask", fixed_mask, mask_names[0]), ("moving_mask", moving_mask, mask_names[1])):
            if mask is not None:
                mask = check_image(name, mask)
                if mask.dim() != moving.dim() or mask.shape[0] != 1:
                    raise ValueError(f"{name} must be a one-channel mask (1, *spatial) of the images' dimension, got "
                                     f"shape {tuple(mask.shape)}")
                masks[key] = to_image(mask)
        result = register_images(fixed_image, moving_image, transform, config, dev, verbose, **masks)
    inverse = inverse_field(result.matrix, result.syn_inverse, fixed_image.affine, fixed_image.spatial_shape,
                             moving_image.affine, moving_image.spatial_shape, dev)
    matrix = torch.as_tensor(np.eye(ndim + 1) if result.matrix is None else result.matrix, dtype=torch.float64)
    return moving, fixed, result, inverse, matrix


def check_transform(fn: str, transform: str) -> str:
    return _checks.string_choice(fn, "transform", transform, TRANSFORMS)


class RegisterImages(Transform):
    """Register a moving image onto a fixed image (array form): ``__call__(moving, fixed)``.

    Both are channel-first ``(C, *spatial)`` MetaTensors (plain tensors: identity affine) on any
    grids, with the same channels. Returns a :class:`RegistrationResult`: the moving image
    warped onto the fixed grid, the forward and inverse fields and the world matrix (module
    docstring). Use :func:`apply_registration` to map more images through the fields.

    Args:
        transform: ``"affine"``, ``"syn"`` or ``"affine+syn"``.
        config: ``None``, a mapping or a YAML path with sections ``affine:`` / ``syn:``
            (:func:`regnet.registration.load_config`: constructor arguments of
            :class:`~regnet.registration.AffineRegistration` / ``SyNRegistration``, e.g.
            ``{"syn": {"scales": [2, 1], "iterations": [40, 20]}}``).
        mode, padding_mode: sampling of the warped image (``"bilinear"``, ``"zeros"``).
        device: where to register (default: the moving image's device).
        verbose: progress bars.
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, transform: str = "affine+syn", config=None, mode: str = "bilinear",
                 padding_mode: str = "zeros", device=None, verbose: bool = False) -> None:
        fn = type(self).__name__
        self.transform = check_transform(fn, transform)
        self.config = load_config(config)
        self.mode = _checks.string_choice(fn, "mode", mode, _checks.SAMPLING_MODES)
        self.padding_mode = _checks.string_choice(fn, "padding_mode", padding_mode, _checks.PADDING_MODES)
        self.device = device
        self.verbose = bool(verbose)

    def __call__(self, moving, fixed, fixed_mask=None, moving_mask=None) -> RegistrationResult:
        """Register; ``fixed_mask`` / ``moving_mask`` ``(1, *spatial)``: binary masks on the fixed /
        moving grid restricting the similarity to a region (ANTs' ``-x``)."""
        fn = type(self).__name__
        moving, fixed, result, inverse, matrix = register_pair(
            fn, moving, fixed, self.transform, self.config, self.device, self.verbose, f"{fn}: moving", f"{fn}: fixed",
            fixed_mask, moving_mask, (f"{fn}: fixed_mask", f"{fn}: moving_mask"))
        ddf = like(result.ddf[0].float(), fixed, [], filename(fixed))
        inverse_ddf = like(inverse.float(), moving, [], filename(moving))
        warped = apply_registration(moving, ddf, self.mode, self.padding_mode, template=fixed)
        return RegistrationResult(warped, ddf, inverse_ddf, matrix, result.report)
