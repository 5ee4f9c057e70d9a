"""Iterative registration inside a MONAI chain (instance optimisation as a transform).

The moving and fixed images may live on different grids (shape, spacing, orientation): the
registration runs in world space (:func:`regnet.pipeline.register_images`, the same code as
``regnet register``) and every result is on the grid it belongs to, with that grid's affine.

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

from collections.abc import Hashable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import InvertibleTransform, MapTransform, Transform
from monai.utils import TransformBackends
from monai.utils.enums import TraceKeys

from regnet.io import Image
from regnet.transforms._common import (
    PADDING_MODES,
    SAMPLING_MODES,
    affine_nd,
    apply_matrix,
    check_choice,
    check_field,
    check_image,
    check_key,
    device_of,
    full_affine,
    like,
    output_dtype,
    per_key,
    plain,
    sample_at_voxels,
    spatial_shape,
    traced,
    voxel_grid,
    where,
)
from regnet.transforms._common import output_keys as resolve_output_keys

__all__ = [
    "RegisterAffineSyNd",
    "RegisterAffined",
    "RegisterImages",
    "RegisterImagesd",
    "RegisterSyNd",
    "RegistrationResult",
    "apply_registration",
]

TRANSFORMS = ("affine", "syn", "affine+syn")


def _pipeline():
    from regnet import pipeline  # heavy (registration classes, losses): imported when first used

    return pipeline


def _filename(x):
    return x.meta.get("filename_or_obj") if isinstance(x, MetaTensor) else None


def _sample(image: torch.Tensor, image_affine: np.ndarray, world: torch.Tensor, mode: str,
            padding_mode: str) -> torch.Tensor:
    """``image`` ``(C, *s)`` (affine ``image_affine``) sampled at world points ``(ndim, *out)``."""
    points = apply_matrix(np.linalg.inv(image_affine), world)
    out = sample_at_voxels(image, points, mode, padding_mode)
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
    check_choice(fn, "mode", mode, SAMPLING_MODES)
    check_choice(fn, "padding_mode", padding_mode, PADDING_MODES)
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
        out = _sample(plain(image).detach().to(dev), affine_nd(image, ndim), world, mode, padding_mode)
    template = ddf if template is None else template
    return like(out, template, getattr(image, "applied_operations", None), _filename(image))


class RegistrationResult(NamedTuple):
    """What :class:`RegisterImages` returns (module docstring for the two fields).

    Attributes:
        warped: moving image on the fixed grid ``(C, *fixed)`` (fixed's meta and affine).
        ddf: forward field ``(ndim, *fixed)``, float32, fixed voxels, fixed's meta.
        inverse_ddf: inverse field ``(ndim, *moving)``, float32, moving voxels, moving's meta.
        matrix: world matrix fixed -> moving ``(ndim+1, ndim+1)`` float64 (identity for ``syn``).
        report: :func:`regnet.pipeline.register_images`'s report (settings, loss history, times).
    """

    warped: torch.Tensor
    ddf: torch.Tensor
    inverse_ddf: torch.Tensor
    matrix: torch.Tensor
    report: dict[str, Any]


def _inverse_field(matrix, syn_inverse, fixed_affine, fixed_shape, grid_affine, grid_shape, device) -> torch.Tensor:
    """Field ``(ndim, *grid)`` on a moving-side grid: grid voxel ``y`` <-> fixed world point
    ``A_g (y + w(y))``, from ``M^-1`` and SyN's inverse field (on the fixed grid)."""
    y = voxel_grid(grid_shape, device)
    ndim = len(grid_shape)
    to_fixed = np.linalg.inv(fixed_affine) @ (np.eye(ndim + 1) if matrix is None else np.linalg.inv(matrix))
    z = apply_matrix(to_fixed @ grid_affine, y)  # fixed voxels (the affine-aligned moving space)
    if syn_inverse is not None:
        z = z + sample_at_voxels(syn_inverse[0].to(device, torch.float64), z, "bilinear", "border")
    return apply_matrix(np.linalg.inv(grid_affine) @ fixed_affine, z) - y


def _register(fn: str, moving, fixed, transform: str, config, device, verbose: bool, moving_name: str,
              fixed_name: str):
    """Run :func:`regnet.pipeline.register_images` on two channel-first (Meta)Tensors."""
    pipeline = _pipeline()
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
        result = pipeline.register_images(fixed_image, moving_image, transform, config, dev, verbose)
    inverse = _inverse_field(result.matrix, result.syn_inverse, fixed_image.affine, fixed_image.spatial_shape,
                             moving_image.affine, moving_image.spatial_shape, dev)
    matrix = torch.as_tensor(np.eye(ndim + 1) if result.matrix is None else result.matrix, dtype=torch.float64)
    return moving, fixed, result, inverse, matrix


def _check_transform(fn: str, transform: str) -> str:
    return check_choice(fn, "transform", transform, TRANSFORMS)


def _check_config(config):
    return _pipeline().load_config(config)


class RegisterImages(Transform):
    """Register a moving image onto a fixed image (array form): ``__call__(moving, fixed)``.

    Both are channel-first ``(C, *spatial)`` MetaTensors (plain tensors: identity affine) on any
    grids, with the same channels. Returns a :class:`RegistrationResult`: the moving image
    warped onto the fixed grid, the forward and inverse fields and the world matrix (module
    docstring). Use :func:`apply_registration` to map more images through the fields.

    Args:
        transform: ``"affine"``, ``"syn"`` or ``"affine+syn"``.
        config: ``None``, a mapping or a YAML path with sections ``affine:`` / ``syn:``
            (:func:`regnet.pipeline.load_config`: constructor arguments of
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
        self.transform = _check_transform(fn, transform)
        self.config = _check_config(config)
        self.mode = check_choice(fn, "mode", mode, SAMPLING_MODES)
        self.padding_mode = check_choice(fn, "padding_mode", padding_mode, PADDING_MODES)
        self.device = device
        self.verbose = bool(verbose)

    def __call__(self, moving, fixed) -> RegistrationResult:
        fn = type(self).__name__
        moving, fixed, result, inverse, matrix = _register(
            fn, moving, fixed, self.transform, self.config, self.device, self.verbose, f"{fn}: moving", f"{fn}: fixed")
        ddf = like(result.ddf[0].float(), fixed, [], _filename(fixed))
        inverse_ddf = like(inverse.float(), moving, [], _filename(moving))
        warped = apply_registration(moving, ddf, self.mode, self.padding_mode, template=fixed)
        return RegistrationResult(warped, ddf, inverse_ddf, matrix, result.report)


class RegisterImagesd(MapTransform, InvertibleTransform):
    """Register ``data[moving_key]`` onto ``data[fixed_key]`` and map every key onto the fixed grid.

    The registration (:func:`regnet.pipeline.register_images`) runs once per call; then each
    key in ``keys`` (the moving image and any other image or label map of the moving subject,
    each on its own grid with its own affine) is sampled once from its original data onto the
    fixed grid (one interpolation), with its ``mode`` (``nearest`` for labels keeps dtype and
    values). Outputs are MetaTensors with the fixed image's meta (affine, spatial shape,
    pixdim; ``filename_or_obj`` stays the key's own), so ``SaveImaged`` writes files that line
    up with the fixed image in a viewer.

    Written keys (each skipped when set to ``None``):

    - ``output_keys`` (default: ``keys``, replaced in place): the warped images ``(C, *fixed)``.
    - ``ddf_key``: forward field ``(ndim, *fixed)`` float32, fixed voxels, fixed's meta: fixed voxel
      ``x`` <-> moving world point ``A_f (x + ddf(x))`` (regnet's pull DDF when both grids agree).
    - ``inverse_ddf_key``: inverse field ``(ndim, *moving)`` float32 on the moving image's grid
      and meta: moving voxel ``y`` <-> fixed world point ``A_m (y + inv(y))``.
    - ``affine_key``: world matrix fixed -> moving, ``(ndim+1, ndim+1)`` float64 tensor (identity
      for ``syn``).
    - ``report_key`` (default ``None``): the registration report dict.

    ``inverse()`` (MONAI ``InvertibleTransform``, e.g. ``Compose.inverse``): each output key
    is sampled from its current fixed-grid data back onto that key's *original* grid (shape
    and affine before this transform) through the inverse transform: original-grid voxel ``g``
    at world ``p = A_g g`` takes the value at the fixed world point ``A_m (y + inv(y))``,
    ``y = A_m^-1 p`` (``inv`` interpolated, ``border``), read from ``data[inverse_ddf_key]``; for
    ``affine`` without that key, at ``M^-1 p``. Exact for the affine part, approximate with
    SyN (its inverse is numerical), a second interpolation (blurrier), and 0 (``padding_mode``)
    where the point falls outside the fixed field of view: the moving image comes back only
    where the fixed grid covered it. Needs MetaTensors (the trace lives in
    ``applied_operations``).

    Args:
        keys: moving-subject keys to map onto the fixed grid.
        fixed_key: the fixed image ``(C, *fixed)``.
        moving_key: the image that drives the registration (default ``keys[0]``); it may be
            outside ``keys`` (then it is only read).
        transform: ``"affine"``, ``"syn"`` or ``"affine+syn"``.
        mode: ``"bilinear"`` / ``"nearest"``, or one per key.
        padding_mode: ``"zeros"`` (default), ``"border"``, ``"reflection"``, or one per key.
        output_keys, ddf_key, inverse_ddf_key, affine_key, report_key: see above.
        config: ``None``, a mapping or a YAML path (:func:`regnet.pipeline.load_config`), e.g.
            ``{"syn": {"scales": [2, 1], "iterations": [40, 20]}}``.
        device: where to register and sample (default: the moving image's device).
        verbose: progress bars.
        allow_missing_keys: skip missing keys; return the data unchanged when ``moving_key`` is
            missing (``fixed_key`` must be present when the moving image is).
    """

    backend = [TransformBackends.TORCH]

    def __init__(
        self,
        keys: KeysCollection,
        fixed_key: Hashable,
        moving_key: Hashable | None = None,
        transform: str = "affine+syn",
        mode: str | Sequence[str] = "bilinear",
        padding_mode: str | Sequence[str] = "zeros",
        output_keys: KeysCollection | None = None,
        ddf_key: Hashable | None = "ddf",
        inverse_ddf_key: Hashable | None = "inverse_ddf",
        affine_key: Hashable | None = "affine",
        report_key: Hashable | None = None,
        config=None,
        device=None,
        verbose: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        fn = type(self).__name__
        self.fixed_key = check_key(fn, "fixed_key", fixed_key)
        self.moving_key = self.keys[0] if moving_key is None else check_key(fn, "moving_key", moving_key)
        self.transform = _check_transform(fn, transform)
        self.mode = per_key(fn, "mode", mode, self.keys, SAMPLING_MODES)
        self.padding_mode = per_key(fn, "padding_mode", padding_mode, self.keys, PADDING_MODES)
        self.output_keys = resolve_output_keys(fn, self.keys, output_keys)
        self.ddf_key = check_key(fn, "ddf_key", ddf_key, optional=True)
        self.inverse_ddf_key = check_key(fn, "inverse_ddf_key", inverse_ddf_key, optional=True)
        self.affine_key = check_key(fn, "affine_key", affine_key, optional=True)
        self.report_key = check_key(fn, "report_key", report_key, optional=True)
        self.config = _check_config(config)
        self.device = device
        self.verbose = bool(verbose)
        if self.fixed_key in self.keys or self.fixed_key in self.output_keys:
            raise ValueError(f"{fn}: fixed_key {self.fixed_key!r} must not be one of the keys {list(self.keys)} "
                             f"or output_keys {list(self.output_keys)}")
        if len(set(self.output_keys)) != len(self.output_keys):
            raise ValueError(f"{fn}: output_keys must be distinct, got {list(self.output_keys)}")
        written = {"ddf_key": self.ddf_key, "inverse_ddf_key": self.inverse_ddf_key,
                   "affine_key": self.affine_key, "report_key": self.report_key}
        taken = {*self.keys, *self.output_keys, self.fixed_key, self.moving_key}
        seen = set()
        for name, key in written.items():
            if key is None:
                continue
            if key in taken or key in seen:
                raise ValueError(f"{fn}: {name} {key!r} collides with another key (keys {list(self.keys)}, "
                                 f"output_keys {list(self.output_keys)}, fixed_key {self.fixed_key!r}, "
                                 f"moving_key {self.moving_key!r}, or another output)")
            seen.add(key)

    def __call__(self, data: Mapping) -> dict:
        fn = type(self).__name__
        d = dict(data)
        if self.moving_key not in d:
            if self.allow_missing_keys:
                return d
            raise KeyError(f"{fn}: moving_key {self.moving_key!r} is missing from the data; present keys: {list(d)}")
        if self.fixed_key not in d:
            raise KeyError(f"{fn}: fixed_key {self.fixed_key!r} is missing from the data; present keys: {list(d)}")
        # check every key before the (long) registration
        present = list(self.key_iterator(d, self.output_keys, self.mode, self.padding_mode))
        moving_dim = check_image(where(fn, self.moving_key), d[self.moving_key]).dim()
        for key, *_ in present:
            image = check_image(where(fn, key), d[key])
            if image.dim() != moving_dim:
                raise ValueError(f"{where(fn, key)} is {image.dim() - 1}D (shape {tuple(image.shape)}) but the moving "
                                 f"image data[{self.moving_key!r}] is {moving_dim - 1}D")
        moving, fixed, result, inverse, matrix = _register(
            fn, d[self.moving_key], d[self.fixed_key], self.transform, self.config, self.device, self.verbose,
            where(fn, self.moving_key), where(fn, self.fixed_key))
        ddf = like(result.ddf[0].float(), fixed, [], _filename(fixed))
        outputs = {}
        for key, out_key, mode, padding_mode in present:
            image = check_image(where(fn, key), d[key])
            out = apply_registration(image, ddf, mode, padding_mode, template=fixed)
            info = {"transform": self.transform, "mode": mode, "padding_mode": padding_mode,
                    "src_affine": full_affine(image, image.dim() - 1), "matrix": matrix.clone()}
            outputs[out_key] = self.push_transform(out, orig_size=spatial_shape(image), extra_info=info)
        d.update(outputs)
        if self.ddf_key is not None:
            d[self.ddf_key] = ddf
        if self.inverse_ddf_key is not None:
            d[self.inverse_ddf_key] = like(inverse.float(), moving, [], _filename(moving))
        if self.affine_key is not None:
            d[self.affine_key] = matrix
        if self.report_key is not None:
            d[self.report_key] = result.report
        return d

    def inverse(self, data: Mapping) -> dict:
        fn = f"{type(self).__name__}.inverse"
        d = dict(data)
        for out_key in self.output_keys:
            if out_key not in d:
                if self.allow_missing_keys:
                    continue
                raise KeyError(f"{fn}: key {out_key!r} is missing from the data; present keys: {list(d)}")
            image = check_image(where(fn, out_key), d[out_key])
            xform = self.pop_transform(traced(where(fn, out_key), image))
            info = xform[TraceKeys.EXTRA_INFO]
            shape = tuple(int(s) for s in xform[TraceKeys.ORIG_SIZE])
            ndim = len(shape)
            src_affine = info["src_affine"]
            grid_affine = affine_nd(src_affine, ndim)
            dev = device_of(self.device, image.device)
            world = apply_matrix(grid_affine, voxel_grid(shape, dev))
            if self.inverse_ddf_key is not None and self.inverse_ddf_key in d:
                field = check_field(where(fn, self.inverse_ddf_key), d[self.inverse_ddf_key])
                if field.shape[0] != ndim:
                    raise ValueError(f"{where(fn, self.inverse_ddf_key)} is a {field.shape[0]}D field (shape "
                                     f"{tuple(field.shape)}) but data[{out_key!r}] was {ndim}D")
                field_affine = affine_nd(field, ndim)
                y = apply_matrix(np.linalg.inv(field_affine), world)
                w = sample_at_voxels(plain(field).detach().to(dev, torch.float64), y, "bilinear", "border")
                a = torch.as_tensor(field_affine[:ndim, :ndim], device=dev)
                target = world + torch.einsum("ij,j...->i...", a, w)
            elif info["transform"] == "affine":
                target = apply_matrix(np.linalg.inv(np.asarray(info["matrix"], dtype=np.float64)), world)
            else:
                raise KeyError(f"{fn}: inverting a {info['transform']!r} registration needs its inverse field under "
                               f"inverse_ddf_key {self.inverse_ddf_key!r}, which is not in the data "
                               f"(present keys: {list(d)})")
            with torch.no_grad():
                out = _sample(plain(image).detach().to(dev), affine_nd(image, ndim), target, info["mode"],
                              info["padding_mode"])
            if isinstance(image, MetaTensor):
                restored = MetaTensor(out, meta=dict(image.meta))
                restored.affine = src_affine.clone()
                restored.meta["spatial_shape"] = np.asarray(shape)
                restored.applied_operations = image.applied_operations
                out = restored
            d[out_key] = out
        return d


def _fixed(transform: str):
    def init(self, keys: KeysCollection, fixed_key: Hashable, moving_key: Hashable | None = None,
             mode: str | Sequence[str] = "bilinear", padding_mode: str | Sequence[str] = "zeros",
             output_keys: KeysCollection | None = None, ddf_key: Hashable | None = "ddf",
             inverse_ddf_key: Hashable | None = "inverse_ddf", affine_key: Hashable | None = "affine",
             report_key: Hashable | None = None, config=None, device=None, verbose: bool = False,
             allow_missing_keys: bool = False) -> None:
        RegisterImagesd.__init__(self, keys, fixed_key, moving_key, transform, mode, padding_mode, output_keys,
                                 ddf_key, inverse_ddf_key, affine_key, report_key, config, device, verbose,
                                 allow_missing_keys)

    return init


class RegisterAffined(RegisterImagesd):
    """:class:`RegisterImagesd` with ``transform="affine"`` (same arguments, without ``transform``).

    Config section ``affine:`` (:class:`~regnet.registration.AffineRegistration`'s arguments)."""

    __init__ = _fixed("affine")


class RegisterSyNd(RegisterImagesd):
    """:class:`RegisterImagesd` with ``transform="syn"``: deformable (symmetric diffeomorphic)
    registration only, the images aligned through their headers first.

    Config section ``syn:`` (:class:`~regnet.registration.SyNRegistration`'s arguments)."""

    __init__ = _fixed("syn")


class RegisterAffineSyNd(RegisterImagesd):
    """:class:`RegisterImagesd` with ``transform="affine+syn"``: affine, then SyN on the
    affinely aligned images; one total field. Config sections ``affine:`` and ``syn:``."""

    __init__ = _fixed("affine+syn")

