"""Random smooth diffeomorphic deformations from a stationary velocity field.

Recipe (one draw): white noise ``(ndim, *spatial)`` (standard normal, from the transform's own
``numpy.random.RandomState`` ``self.R``) -> :func:`regnet.ops.gaussian_smooth` with ``sigma``
voxels (SciPy ``reflect`` boundary) -> scaled so that its largest vector norm is
``magnitude * f`` voxels, ``f ~ U[0.5, 1]`` drawn after the noise -> :func:`regnet.ops.exp`
(``steps`` squarings, ``border`` padding) -> the DDF ``u`` (voxels, pull convention:
``warped(x) = img(x + u(x))``). The flow of a velocity bounded by ``m`` moves no point further
than ``m``, so ``max |u| <= magnitude * f <= magnitude`` (up to float rounding); ``exp`` of
any velocity is a diffeomorphism (positive Jacobian determinant, up to discretisation), and
``exp(-v)`` is its inverse.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import InvertibleTransform, MapTransform, RandomizableTransform
from monai.utils import TransformBackends

from regnet import _checks, ops
from regnet.transforms._common import (
    check_image,
    device_of,
    like,
    spatial_shape,
    warp_back,
    where,
)
from regnet.transforms.fields import warp_image

__all__ = ["RandSVFDeform", "RandSVFDeformd", "random_velocity"]


def random_velocity(R: np.random.RandomState, shape: Sequence[int], magnitude: float, sigma: float,
                    device=None) -> torch.Tensor:
    """One random smooth velocity field ``(ndim, *shape)`` (float32, voxels) from ``R``.

    Draws, in this order, ``R.standard_normal((ndim, *shape))`` and ``f = R.uniform(0.5, 1)``;
    smooths the noise by ``sigma`` voxels and scales it to a largest vector norm of
    ``magnitude * f`` (all zeros when ``magnitude`` is 0).
    """
    shape = tuple(int(s) for s in shape)
    noise = R.standard_normal((len(shape), *shape)).astype(np.float32)
    factor = float(R.uniform(0.5, 1.0))
    v = torch.from_numpy(noise).to(device)
    v = ops.gaussian_smooth(v[None], sigma)[0] if sigma > 0 else v
    largest = v.norm(dim=0).max()
    if magnitude == 0 or not bool(largest > 0):
        return torch.zeros_like(v)
    return v * (magnitude * factor / largest)


def _check_options(fn: str, prob, magnitude, sigma, steps) -> tuple[float, float, float, int]:
    prob = _checks.number(fn, "prob", prob, low=0.0, high=1.0)
    magnitude = _checks.number(fn, "magnitude", magnitude, low=0.0)
    sigma = _checks.number(fn, "sigma", sigma, low=0.0)
    return prob, magnitude, sigma, _checks.non_negative_int(fn, "steps", steps)


def _exp(v: torch.Tensor, steps: int) -> torch.Tensor:
    with torch.no_grad():
        return ops.exp(v[None], steps=steps, padding_mode="border")[0]


class RandSVFDeform(RandomizableTransform):
    """Array form of :class:`RandSVFDeformd`: warp an image ``(C, *spatial)`` by a random smooth
    diffeomorphism (module docstring for the recipe).

    ``__call__(img, randomize=True)`` draws a new field for ``img``'s grid (with probability
    ``prob``; otherwise the field is zero and ``img`` is returned unchanged) and warps ``img``;
    ``randomize=False`` reuses the last field (to warp a label map of the same subject with
    ``mode="nearest"``). After a call, :attr:`ddf` holds the field ``(ndim, *spatial)``
    (voxels) and :attr:`velocity` its velocity (``None`` when not applied).

    Args: as :class:`RandSVFDeformd` (``mode`` and ``padding_mode`` single values), and
        ``device`` (default: the image's).
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, mode: str = "bilinear", padding_mode: str = "zeros", prob: float = 1.0,
                 magnitude: float = 4.0, sigma: float = 6.0, steps: int = 7, device=None) -> None:
        fn = type(self).__name__
        prob, self.magnitude, self.sigma, self.steps = _check_options(fn, prob, magnitude, sigma, steps)
        RandomizableTransform.__init__(self, prob)
        self.mode = _checks.string_choice(fn, "mode", mode, _checks.SAMPLING_MODES)
        self.padding_mode = _checks.string_choice(fn, "padding_mode", padding_mode, _checks.PADDING_MODES)
        self.device = device
        self.velocity: torch.Tensor | None = None
        self.ddf: torch.Tensor | None = None

    def randomize(self, spatial_size: Sequence[int], device=None) -> None:  # type: ignore[override]
        """Draw whether to apply and, if so, the field for a grid of ``spatial_size``."""
        super().randomize(None)
        shape = tuple(int(s) for s in spatial_size)
        dev = device_of(self.device, torch.device(device) if device is not None else torch.device("cpu"))
        if self._do_transform:
            self.velocity = random_velocity(self.R, shape, self.magnitude, self.sigma, dev)
            self.ddf = _exp(self.velocity, self.steps)
        else:
            self.velocity = None
            self.ddf = torch.zeros((len(shape), *shape), device=dev)

    def __call__(self, img, randomize: bool = True, mode: str | None = None) -> torch.Tensor:
        fn = type(self).__name__
        img = check_image(f"{fn}: img", img)
        if randomize:
            self.randomize(spatial_shape(img), img.device)
        elif self.ddf is None:
            raise RuntimeError(f"{fn}: randomize=False needs an earlier call that drew a field")
        if not self._do_transform:
            return img
        return warp_image(img, self.ddf, mode or self.mode, self.padding_mode, self.device, name=f"{fn}: img",
                          ddf_name=f"{fn}: the drawn field")


class RandSVFDeformd(RandomizableTransform, MapTransform, InvertibleTransform):
    """Random smooth diffeomorphic deformation of image and label keys, with its ground truth.

    One field is drawn per call (module docstring: smoothed white-noise velocity, scaled,
    exponentiated) and applied to every key; the keys must share one spatial shape. Use it
    for augmentation, and for synthetic pairs with a known answer: deform a copy of a subject
    (``CopyItemsd`` first); registering the original (moving) onto the deformed copy (fixed)
    should recover ``data[ddf_key]``, and registering the copy onto the original its inverse
    ``data[inverse_ddf_key]``.

    Args:
        keys: image / label keys, each ``(C, *spatial)`` with one shared spatial shape.
        mode: ``"bilinear"`` / ``"nearest"``, or one per key (e.g. ``("bilinear", "nearest")``);
            ``nearest`` outputs keep the input dtype and values (label maps).
        padding_mode: ``"zeros"`` (default), ``"border"`` or ``"reflection"``, or one per key: what
            is pulled in from outside the grid.
        prob: probability of applying the deformation. When not applied the images are returned
            unchanged and ``data[ddf_key]`` is a zero field.
        magnitude: largest displacement in voxels: the velocity's largest vector norm is
            ``magnitude * f`` with ``f ~ U[0.5, 1]`` drawn per call, and the displacement's
            largest norm is at most that.
        sigma: Gaussian smoothing of the white-noise velocity, in voxels (larger: smoother,
            more global deformations). 0 gives unsmoothed noise (rough).
        steps: scaling-and-squaring steps of :func:`regnet.ops.exp`.
        ddf_key: where the field goes: ``(ndim, *spatial)`` float32, voxels, regnet convention
            (``deformed(x) = original(x + ddf(x))``), a MetaTensor with the first key's meta
            (affine) and no applied operations.
        allow_missing_keys: skip missing keys (no field is written when all are missing).
        inverse_ddf_key: also store the inverse field ``exp(-v)`` there (optional; the inverse
            of the flow up to discretisation: ``original(x) ~= deformed(x + inv(x))``).
        device: where the field is computed (default: the first key's device).

    Reproducible with ``set_random_state(seed)`` or ``Compose(...).set_random_state(seed)``.
    Invertible: :meth:`inverse` warps each key back with ``data[inverse_ddf_key]`` when present,
    else with a numerical inverse of ``data[ddf_key]``.
    """

    backend = RandSVFDeform.backend

    def __init__(
        self,
        keys: KeysCollection,
        mode: str | Sequence[str] = "bilinear",
        padding_mode: str | Sequence[str] = "zeros",
        prob: float = 1.0,
        magnitude: float = 4.0,
        sigma: float = 6.0,
        steps: int = 7,
        ddf_key: Hashable = "ddf",
        allow_missing_keys: bool = False,
        inverse_ddf_key: Hashable | None = None,
        device=None,
    ) -> None:
        fn = type(self).__name__
        MapTransform.__init__(self, keys, allow_missing_keys)
        prob, self.magnitude, self.sigma, self.steps = _check_options(fn, prob, magnitude, sigma, steps)
        RandomizableTransform.__init__(self, prob)
        self.mode = _checks.per_key(fn, "mode", mode, self.keys, _checks.SAMPLING_MODES)
        self.padding_mode = _checks.per_key(fn, "padding_mode", padding_mode, self.keys, _checks.PADDING_MODES)
        self.ddf_key = _checks.key(fn, "ddf_key", ddf_key)
        self.inverse_ddf_key = _checks.key(fn, "inverse_ddf_key", inverse_ddf_key, optional=True)
        for name, key in (("ddf_key", self.ddf_key), ("inverse_ddf_key", self.inverse_ddf_key)):
            if key is not None and key in self.keys:
                raise ValueError(f"{fn}: {name} {key!r} must not be one of the keys to deform {list(self.keys)}")
        self.device = device
        self.velocity: torch.Tensor | None = None

    def randomize(self, spatial_size: Sequence[int], device=None) -> None:  # type: ignore[override]
        """Draw whether to apply (``prob``) and, if so, the velocity for ``spatial_size``."""
        super().randomize(None)
        self.velocity = None
        if self._do_transform:
            self.velocity = random_velocity(self.R, spatial_size, self.magnitude, self.sigma, device)

    def __call__(self, data: Mapping) -> dict:
        fn = type(self).__name__
        d = dict(data)
        present = list(self.key_iterator(d))
        if not present:
            return d
        images = {key: check_image(where(fn, key), d[key]) for key in present}
        first = present[0]
        shape = spatial_shape(images[first])
        for key in present[1:]:
            if spatial_shape(images[key]) != shape:
                raise ValueError(f"{fn}: all keys share one field, so they need one spatial shape: data[{first!r}] is "
                                 f"{shape} but data[{key!r}] is {spatial_shape(images[key])} "
                                 f"(full shapes {tuple(images[first].shape)} and {tuple(images[key].shape)})")
        dev = device_of(self.device, images[first].device)
        self.randomize(shape, dev)
        if self._do_transform:
            ddf = _exp(self.velocity, self.steps)
        else:
            ddf = torch.zeros((len(shape), *shape), dtype=torch.float32, device=dev)
        for key, mode, padding_mode in self.key_iterator(d, self.mode, self.padding_mode):
            out = images[key]
            if self._do_transform:
                out = warp_image(out, ddf, mode, padding_mode, dev, name=where(fn, key),
                                 ddf_name=f"{fn}: the drawn field")
            d[key] = self.push_transform(out, extra_info={"mode": mode, "padding_mode": padding_mode})
        d[self.ddf_key] = like(ddf, images[first])
        if self.inverse_ddf_key is not None:
            inverse = _exp(-self.velocity, self.steps) if self._do_transform else torch.zeros_like(ddf)
            d[self.inverse_ddf_key] = like(inverse, images[first])
        return d

    def inverse(self, data: Mapping) -> dict:
        return warp_back(self, dict(data), warp_image, skip_not_applied=True)
