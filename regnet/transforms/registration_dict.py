"""Whole registrations inside a MONAI chain, dictionary form: register ``data[moving_key]`` onto
``data[fixed_key]`` and map every key of the moving subject onto the fixed grid, invertibly.

The fields, conventions and grids are those of :mod:`regnet.transforms.registration` (its module
docstring); this module adds the ``MapTransform`` / ``InvertibleTransform`` forms.

Example::

    >>> register = RegisterAffineSyNd(["t1", "seg"], fixed_key="atlas", mode=("bilinear", "nearest"))
    >>> data = register({"t1": t1, "seg": seg, "atlas": atlas})   # + "ddf", "inverse_ddf", "affine"
    >>> back = register.inverse(data)                               # keys back on their own grids
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import InvertibleTransform, MapTransform
from monai.utils import TransformBackends
from monai.utils.enums import TraceKeys

from regnet import _checks
from regnet.geometry import apply_matrix, sample_at_voxels, voxel_grid
from regnet.registration.config import load_config
from regnet.transforms._common import (
    affine_nd,
    check_field,
    check_image,
    device_of,
    full_affine,
    like,
    plain,
    spatial_shape,
    traced,
    where,
)
from regnet.transforms._common import output_keys as resolve_output_keys
from regnet.transforms.registration import apply_registration, check_transform, filename, register_pair, sample_world

__all__ = ["RegisterAffineSyNd", "RegisterAffined", "RegisterImagesd", "RegisterSyNd"]


class RegisterImagesd(MapTransform, InvertibleTransform):
    """Register ``data[moving_key]`` onto ``data[fixed_key]`` and map every key onto the fixed grid.

    The registration (:func:`regnet.registration.register_images`) runs once per call; then each
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
        config: ``None``, a mapping or a YAML path (:func:`regnet.registration.load_config`), e.g.
            ``{"syn": {"scales": [2, 1], "iterations": [40, 20]}}``.
        device: where to register and sample (default: the moving image's device).
        verbose: progress bars.
        allow_missing_keys: skip missing keys; return the data unchanged when ``moving_key`` is
            missing (``fixed_key`` must be present when the moving image is).
        mask_keys: ``(fixed_mask_key, moving_mask_key)`` (either ``None``): binary masks ``(1,
            *spatial)`` on the fixed / moving grid that restrict the similarity to a region (ANTs'
            ``-x``); they are read, not transformed.
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
        *,
        mask_keys: tuple[Hashable | None, Hashable | None] | None = None,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        fn = type(self).__name__
        if mask_keys is None:
            mask_keys = (None, None)
        if not isinstance(mask_keys, (tuple, list)) or len(mask_keys) != 2:
            raise ValueError(f"{fn}: mask_keys must be (fixed_mask_key, moving_mask_key), either None, got "
                             f"{mask_keys!r}")
        self.mask_keys = tuple(_checks.key(fn, "mask_keys", k, optional=True) for k in mask_keys)
        self.fixed_key = _checks.key(fn, "fixed_key", fixed_key)
        self.moving_key = self.keys[0] if moving_key is None else _checks.key(fn, "moving_key", moving_key)
        self.transform = check_transform(fn, transform)
        self.mode = _checks.per_key(fn, "mode", mode, self.keys, _checks.SAMPLING_MODES)
        self.padding_mode = _checks.per_key(fn, "padding_mode", padding_mode, self.keys, _checks.PADDING_MODES)
        self.output_keys = resolve_output_keys(fn, self.keys, output_keys)
        self.ddf_key = _checks.key(fn, "ddf_key", ddf_key, optional=True)
        self.inverse_ddf_key = _checks.key(fn, "inverse_ddf_key", inverse_ddf_key, optional=True)
        self.affine_key = _checks.key(fn, "affine_key", affine_key, optional=True)
        self.report_key = _checks.key(fn, "report_key", report_key, optional=True)
        self.config = load_config(config)
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
        masks = []
        for key in self.mask_keys:
            if key is not None and key not in d:
                raise KeyError(f"{fn}: mask key {key!r} (mask_keys) is missing from the data; present keys: {list(d)}")
            masks.append(None if key is None else d[key])
        moving, fixed, result, inverse, matrix = register_pair(
            fn, d[self.moving_key], d[self.fixed_key], self.transform, self.config, self.device, self.verbose,
            where(fn, self.moving_key), where(fn, self.fixed_key), *masks,
            tuple(where(fn, k) if k is not None else "" for k in self.mask_keys))
        ddf = like(result.ddf[0].float(), fixed, [], filename(fixed))
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
            d[self.inverse_ddf_key] = like(inverse.float(), moving, [], filename(moving))
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
                w = sample_at_voxels(plain(field).detach().to(dev, torch.float64)[None], y, None, "bilinear",
                                     "border")[0]
                a = torch.as_tensor(field_affine[:ndim, :ndim], device=dev)
                target = world + torch.einsum("ij,j...->i...", a, w)
            elif info["transform"] == "affine":
                target = apply_matrix(np.linalg.inv(np.asarray(info["matrix"], dtype=np.float64)), world)
            else:
                raise KeyError(f"{fn}: inverting a {info['transform']!r} registration needs its inverse field under "
                               f"inverse_ddf_key {self.inverse_ddf_key!r}, which is not in the data "
                               f"(present keys: {list(d)})")
            with torch.no_grad():
                out = sample_world(plain(image).detach().to(dev), affine_nd(image, ndim), target, info["mode"],
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
             allow_missing_keys: bool = False, *, mask_keys=None) -> None:
        RegisterImagesd.__init__(self, keys, fixed_key, moving_key, transform, mode, padding_mode, output_keys,
                                 ddf_key, inverse_ddf_key, affine_key, report_key, config, device, verbose,
                                 allow_missing_keys, mask_keys=mask_keys)

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
