"""Field transforms on one grid: warp by a DDF, exponentiate a velocity field, compose two
DDFs, Jacobian-determinant statistics. Array forms take channel-first tensors without a batch
dimension (image ``(C, *spatial)``, field ``(ndim, *spatial)`` in voxels); dictionary forms
(``...d``) read and write keys of a data dictionary. All of them call :mod:`regnet.ops`.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import torch
from monai.config import KeysCollection
from monai.transforms import InvertibleTransform, MapTransform, Transform
from monai.utils import TransformBackends

from regnet import _checks, geometry, ops
from regnet.metrics import jacobian_stats
from regnet.transforms._common import (
    check_field,
    check_image,
    device_of,
    output_dtype,
    plain,
    same_grid_output,
    spatial_shape,
    warp_back,
    where,
)
from regnet.transforms._common import (
    output_keys as resolve_output_keys,
)

__all__ = [
    "ComposeDDF",
    "ComposeDDFd",
    "ExpSVF",
    "ExpSVFd",
    "JacobianStats",
    "JacobianStatsd",
    "Warp",
    "Warpd",
    "warp_image",
]


def warp_image(img, ddf, mode: str = "bilinear", padding_mode: str = "border", device=None, *,
               name: str = "warp_image: img", ddf_name: str = "warp_image: ddf") -> torch.Tensor:
    """``out(x) = img(x + ddf(x))`` on the image's own grid (:func:`regnet.ops.warp`).

    Args:
        img: ``(C, H, W)`` or ``(C, H, W, D)`` (MetaTensor, tensor or numpy array).
        ddf: ``(ndim, *spatial)`` with the image's spatial shape, voxels of that grid.
        mode: ``"bilinear"`` or ``"nearest"`` (labels: the output keeps the input's dtype and
            values; integer labels are sampled in float64, exact).
        padding_mode: ``"border"`` (as :func:`regnet.ops.warp` and MONAI ``Warp``), ``"zeros"``
            or ``"reflection"``.
        device: where to compute (default: the image's device).

    Returns:
        ``(C, *spatial)`` on ``device``; a MetaTensor with ``img``'s meta (same grid, same affine)
        when ``img`` is one. Float inputs keep their dtype, integer inputs give float32 with
        ``bilinear``.
    """
    _checks.string_choice(name.split(":")[0], "mode", mode, _checks.SAMPLING_MODES)
    _checks.string_choice(name.split(":")[0], "padding_mode", padding_mode, _checks.PADDING_MODES)
    img = check_image(name, img)
    ddf = check_field(ddf_name, ddf, spatial_shape(img))
    dev = device_of(device, img.device)
    dtype = geometry.sampling_dtype(img, mode)
    x = plain(img).to(dev, dtype)[None]
    u = plain(ddf).to(dev, dtype)[None]
    out = ops.warp(x, u, mode=mode, padding_mode=padding_mode)[0]
    return same_grid_output(out.to(output_dtype(img, mode, dtype)), img)


class Warp(Transform):
    """Warp an image by a displacement field on its own grid: ``out(x) = img(x + ddf(x))``.

    MONAI-style array transform around :func:`regnet.ops.warp` (same numbers as MONAI's
    ``monai.networks.blocks.Warp``): image ``(C, *spatial)``, DDF ``(ndim, *spatial)`` in voxels,
    channel ``i`` along spatial axis ``i``. The output lives on the input grid: a MetaTensor keeps
    its affine and meta.

    Args:
        mode: ``"bilinear"`` or ``"nearest"`` (label maps keep dtype and values).
        padding_mode: ``"border"`` (default, as MONAI ``Warp``), ``"zeros"``, ``"reflection"``.
        device: compute device (default: the image's).
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, mode: str = "bilinear", padding_mode: str = "border", device=None) -> None:
        self.mode = _checks.string_choice("Warp", "mode", mode, _checks.SAMPLING_MODES)
        self.padding_mode = _checks.string_choice("Warp", "padding_mode", padding_mode, _checks.PADDING_MODES)
        self.device = device

    def __call__(self, img, ddf, mode: str | None = None, padding_mode: str | None = None) -> torch.Tensor:
        return warp_image(img, ddf, mode or self.mode, padding_mode or self.padding_mode, self.device,
                          name="Warp: img", ddf_name="Warp: ddf")


class Warpd(MapTransform, InvertibleTransform):
    """Warp the images under ``keys`` by the DDF stored under ``ddf_key`` (dictionary :class:`Warp`).

    Every key must have the DDF's spatial shape; the outputs replace the inputs (same grid,
    same affine). Invertible: :meth:`inverse` warps each key back with the field under
    ``inverse_ddf_key`` when that key is given and present, otherwise with a numerical inverse
    of ``data[ddf_key]`` (fixed-point iteration ``v <- -warp(u, v)``, accurate for smooth,
    invertible fields). Either way the inverse is a second interpolation (blurrier) and
    values pulled from outside the grid follow ``padding_mode``.

    Args:
        keys: image keys to warp.
        ddf_key: key of the DDF ``(ndim, *spatial)`` (voxels, pull convention).
        mode: one mode or one per key (``"bilinear"``, ``"nearest"`` for labels).
        padding_mode: one or one per key (``"border"`` default, ``"zeros"``, ``"reflection"``).
        inverse_ddf_key: key of the inverse field, used by :meth:`inverse` (optional).
        device: compute device (default: each image's).
        allow_missing_keys: skip missing image keys (and everything when ``ddf_key`` is missing).
    """

    backend = Warp.backend

    def __init__(self, keys: KeysCollection, ddf_key: Hashable = "ddf", mode="bilinear", padding_mode="border",
                 inverse_ddf_key: Hashable | None = None, device=None, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        name = type(self).__name__
        self.ddf_key = _checks.key(name, "ddf_key", ddf_key)
        self.inverse_ddf_key = _checks.key(name, "inverse_ddf_key", inverse_ddf_key, optional=True)
        if self.ddf_key in self.keys:
            raise ValueError(f"{name}: ddf_key {self.ddf_key!r} must not be one of the keys to warp {list(self.keys)}")
        self.mode = _checks.per_key(name, "mode", mode, self.keys, _checks.SAMPLING_MODES)
        self.padding_mode = _checks.per_key(name, "padding_mode", padding_mode, self.keys, _checks.PADDING_MODES)
        self.device = device

    def _field(self, d: Mapping, key: Hashable) -> torch.Tensor | None:
        if key in d:
            return d[key]
        if self.allow_missing_keys:
            return None
        raise KeyError(f"{type(self).__name__}: key {key!r} (the displacement field) is missing from the data; "
                       f"present keys: {list(d)}")

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        name = type(self).__name__
        ddf = self._field(d, self.ddf_key)
        if ddf is None:
            return d
        for key, mode, padding_mode in self.key_iterator(d, self.mode, self.padding_mode):
            out = warp_image(d[key], ddf, mode, padding_mode, self.device, name=where(name, key),
                             ddf_name=where(name, self.ddf_key))
            d[key] = self.push_transform(out, extra_info={"mode": mode, "padding_mode": padding_mode})
        return d

    def inverse(self, data: Mapping) -> dict:
        return warp_back(self, dict(data), warp_image)


# --- velocity fields ------------------------------------------------------------------------

def _exp(svf, steps, mode, padding_mode, device, name) -> torch.Tensor:
    svf = check_field(name, svf)
    dev = device_of(device, svf.device)
    dtype = svf.dtype if svf.dtype in (torch.float32, torch.float64) else torch.float32
    ddf = ops.exp(plain(svf).to(dev, dtype)[None], steps=steps, mode=mode, padding_mode=padding_mode)[0]
    return same_grid_output(ddf, svf)


class ExpSVF(Transform):
    """Velocity field -> displacement field by scaling and squaring (:func:`regnet.ops.exp`).

    ``svf`` ``(ndim, *spatial)`` in voxels -> DDF ``(ndim, *spatial)`` in voxels on the same grid
    (a MetaTensor keeps its meta). ``u = svf / 2**steps``, then ``steps`` times
    ``u <- u + warp(u, u)``; the same numbers as MONAI's ``DVF2DDF(num_steps=steps)``.

    Args:
        steps: squarings (7; 0 returns the velocity itself).
        mode: ``"bilinear"`` or ``"nearest"``.
        padding_mode: ``"zeros"`` (default, as :func:`regnet.ops.exp` and ``DVF2DDF``),
            ``"border"``, ``"reflection"``.
        device: compute device (default: the field's).
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, steps: int = 7, mode: str = "bilinear", padding_mode: str = "zeros", device=None) -> None:
        self.steps = _checks.non_negative_int("ExpSVF", "steps", steps)
        self.mode = _checks.string_choice("ExpSVF", "mode", mode, _checks.SAMPLING_MODES)
        self.padding_mode = _checks.string_choice("ExpSVF", "padding_mode", padding_mode, _checks.PADDING_MODES)
        self.device = device

    def __call__(self, svf) -> torch.Tensor:
        return _exp(svf, self.steps, self.mode, self.padding_mode, self.device, "ExpSVF: svf")


class ExpSVFd(MapTransform):
    """Dictionary :class:`ExpSVF`: the velocity fields under ``keys`` become displacement fields,
    written under ``output_keys`` (default: in place).

    Args:
        keys: velocity-field keys, each ``(ndim, *spatial)`` in voxels.
        steps, mode, padding_mode, device: as :class:`ExpSVF`.
        output_keys: one output key per key (``None``: overwrite the velocity).
        allow_missing_keys: skip missing keys.
    """

    backend = ExpSVF.backend

    def __init__(self, keys: KeysCollection, steps: int = 7, mode: str = "bilinear", padding_mode: str = "zeros",
                 output_keys: KeysCollection | None = None, device=None, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.exp = ExpSVF(steps, mode, padding_mode, device)
        self.output_keys = resolve_output_keys(type(self).__name__, self.keys, output_keys)

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        name = type(self).__name__
        for key, out_key in self.key_iterator(d, self.output_keys):
            e = self.exp
            d[out_key] = _exp(d[key], e.steps, e.mode, e.padding_mode, e.device, where(name, key))
        return d


# --- composition ----------------------------------------------------------------------------

def _compose(u1, u2, mode, padding_mode, device, name1, name2) -> torch.Tensor:
    u1 = check_field(name1, u1)
    u2 = check_field(name2, u2, spatial_shape(u1))
    dev = device_of(device, u1.device)
    dtype = torch.float64 if torch.float64 in (u1.dtype, u2.dtype) else torch.float32
    out = ops.compose(plain(u1).to(dev, dtype)[None], plain(u2).to(dev, dtype)[None], mode=mode,
                      padding_mode=padding_mode)[0]
    return same_grid_output(out, u1)


class ComposeDDF(Transform):
    """Compose two DDFs on one grid: ``compose(u1, u2)(x) = u2(x) + u1(x + u2(x))``
    (:func:`regnet.ops.compose`).

    Warping by the result equals warping by ``u1`` and then warping that result by ``u2``:
    ``Warp()(Warp()(img, u1), u2) ~= Warp()(img, ComposeDDF()(u1, u2))``.

    Args:
        mode: ``"bilinear"`` or ``"nearest"``.
        padding_mode: ``"border"`` (default: ``u1`` is extended constantly outside the grid),
            ``"zeros"``, ``"reflection"``.
        device: compute device (default: ``u1``'s).
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, mode: str = "bilinear", padding_mode: str = "border", device=None) -> None:
        self.mode = _checks.string_choice("ComposeDDF", "mode", mode, _checks.SAMPLING_MODES)
        self.padding_mode = _checks.string_choice("ComposeDDF", "padding_mode", padding_mode, _checks.PADDING_MODES)
        self.device = device

    def __call__(self, u1, u2) -> torch.Tensor:
        """``u1``, ``u2``: ``(ndim, *spatial)`` voxel DDFs on the same grid -> ``(ndim, *spatial)``."""
        return _compose(u1, u2, self.mode, self.padding_mode, self.device, "ComposeDDF: u1", "ComposeDDF: u2")


class ComposeDDFd(MapTransform):
    """Dictionary :class:`ComposeDDF`: ``data[output_key] = compose(data[keys[0]], data[keys[1]])``.

    Args:
        keys: exactly two DDF keys ``(u1, u2)``, in :func:`regnet.ops.compose`'s order: warping by
            the output equals ``Warpd`` with ``keys[0]`` followed by ``Warpd`` with ``keys[1]``.
        output_key: where the composed DDF goes (``(ndim, *spatial)``, voxels, ``u1``'s meta).
        mode, padding_mode, device: as :class:`ComposeDDF`.
        allow_missing_keys: when either field is missing, return the data unchanged.
    """

    backend = ComposeDDF.backend

    def __init__(self, keys: KeysCollection, output_key: Hashable = "ddf", mode: str = "bilinear",
                 padding_mode: str = "border", device=None, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        name = type(self).__name__
        if len(self.keys) != 2:
            raise ValueError(f"{name}: keys must be exactly two DDF keys (u1, u2), got {list(self.keys)}")
        self.output_key = _checks.key(name, "output_key", output_key)
        self.compose = ComposeDDF(mode, padding_mode, device)

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        name = type(self).__name__
        missing = [k for k in self.keys if k not in d]
        if missing:
            if self.allow_missing_keys:
                return d
            raise KeyError(f"{name}: key {missing[0]!r} is missing from the data; present keys: {list(d)}")
        k1, k2 = self.keys
        c = self.compose
        d[self.output_key] = _compose(d[k1], d[k2], c.mode, c.padding_mode, c.device, where(name, k1),
                                      where(name, k2))
        return d


# --- Jacobian statistics --------------------------------------------------------------------

def _jacobian(ddf, name) -> tuple[dict[str, float], torch.Tensor]:
    ddf = check_field(name, ddf)
    if min(ddf.shape[1:]) < 2:
        raise ValueError(f"{name} must have at least 2 voxels along every spatial axis, got shape {tuple(ddf.shape)}")
    u = plain(ddf).detach()
    u = u if u.dtype in (torch.float32, torch.float64) else u.float()
    with torch.no_grad():
        return jacobian_stats(u[None]), ops.jacobian_det(u[None])[0]


class JacobianStats(Transform):
    """Jacobian-determinant statistics of a DDF ``(ndim, *spatial)`` (voxels):
    :func:`regnet.metrics.jacobian_stats` of ``det(I + grad u)``.

    Returns a dict of Python floats: ``fraction_nonpositive`` (share of voxels with det <= 0,
    i.e. folding), ``std_log`` (std of ``log det`` over det > 0), ``min``, ``max``, ``mean``.
    """

    backend = [TransformBackends.TORCH]

    def __call__(self, ddf) -> dict[str, float]:
        return _jacobian(ddf, "JacobianStats: ddf")[0]


class JacobianStatsd(MapTransform):
    """Dictionary :class:`JacobianStats`: for each DDF key, the statistics dict goes to
    ``data[f"{key}_{output_postfix}"]`` (default ``data["ddf_jacobian"]``), next to the field;
    the field itself is unchanged.

    Args:
        keys: DDF keys, ``(ndim, *spatial)`` voxels.
        output_postfix: name suffix of the statistics entry (``"jacobian"``).
        det_postfix: if given, also store the determinant map ``(1, *spatial)`` (the DDF's meta)
            under ``f"{key}_{det_postfix}"``, e.g. for ``SaveImaged``.
        allow_missing_keys: skip missing keys.
    """

    backend = JacobianStats.backend

    def __init__(self, keys: KeysCollection, output_postfix: str = "jacobian", det_postfix: str | None = None,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        name = type(self).__name__
        if not isinstance(output_postfix, str) or not output_postfix:
            raise ValueError(f"{name}: output_postfix must be a non-empty str, got {output_postfix!r}")
        if det_postfix is not None and (not isinstance(det_postfix, str) or not det_postfix):
            raise ValueError(f"{name}: det_postfix must be None or a non-empty str, got {det_postfix!r}")
        self.output_postfix = output_postfix
        self.det_postfix = det_postfix

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            stats, det = _jacobian(d[key], where(type(self).__name__, key))
            d[f"{key}_{self.output_postfix}"] = stats
            if self.det_postfix is not None:
                out = same_grid_output(det, d[key])
                if hasattr(out, "applied_operations"):
                    out.applied_operations = []
                d[f"{key}_{self.det_postfix}"] = out
        return d

