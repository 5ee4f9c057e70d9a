"""Helpers shared by the regnet MONAI transforms: argument checks, MetaTensor in/out, world
geometry of channel-first MetaTensors, sampling at world points, numerical field inversion.

Array layouts here are MONAI's (no batch dimension): images ``(C, *spatial)``, fields
``(ndim, *spatial)`` in voxels (regnet convention, ``docs/conventions.md``).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Hashable, Sequence

import numpy as np
import torch
from monai.data import MetaTensor, get_track_meta
from monai.data.utils import to_affine_nd
from monai.utils import ensure_tuple
from monai.utils.enums import TraceKeys

from regnet import ops
from regnet.io import voxel_to_normalised

SAMPLING_MODES = ("bilinear", "nearest")
PADDING_MODES = ("zeros", "border", "reflection")


def where(fn: str, key: Hashable | None = None, name: str = "img") -> str:
    """``"Warpd: data['t1']"`` or ``"Warp: img"``: how errors name an input."""
    return f"{fn}: data[{key!r}]" if key is not None else f"{fn}: {name}"


# --- argument checks ------------------------------------------------------------------------

def check_choice(fn: str, name: str, value, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{fn}: {name} must be one of {tuple(choices)}, got {value!r}")
    return value


def per_key(fn: str, name: str, value, keys: Sequence[Hashable], choices: Sequence[str]) -> tuple[str, ...]:
    """One option per key: a str (shared) or a sequence with one entry per key."""
    if isinstance(value, str):
        values = (value,) * len(keys)
    else:
        try:
            values = tuple(value)
        except TypeError:
            raise TypeError(f"{fn}: {name} must be a str or a sequence of str (one per key), got {value!r}") from None
        if len(values) == 1:
            values = values * len(keys)
        if len(values) != len(keys):
            raise ValueError(f"{fn}: {name} must be one value or {len(keys)} values (one per key in "
                             f"{list(keys)}), got {len(values)}: {value!r}")
    for v in values:
        check_choice(fn, name, v, choices)
    return values


def check_number(fn: str, name: str, value, low: float | None = None, low_open: bool = False,
                 high: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{fn}: {name} must be a number, got {type(value).__name__} {value!r}")
    value = float(value)
    ok = math.isfinite(value)
    if low is not None:
        ok = ok and (value > low if low_open else value >= low)
    if high is not None:
        ok = ok and value <= high
    if not ok:
        bounds = []
        if low is not None:
            bounds.append(f"{'>' if low_open else '>='} {low:g}")
        if high is not None:
            bounds.append(f"<= {high:g}")
        raise ValueError(f"{fn}: {name} must be a finite number {' and '.join(bounds)}, got {value!r}")
    return value


def check_steps(fn: str, steps) -> int:
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
        raise ValueError(f"{fn}: steps must be a non-negative int, got {steps!r}")
    return int(steps)


def check_key(fn: str, name: str, key, optional: bool = False):
    if key is None and optional:
        return None
    if not isinstance(key, Hashable) or key is None:
        raise TypeError(f"{fn}: {name} must be a dictionary key (e.g. a str), got {key!r}")
    return key


def output_keys(fn: str, keys: Sequence[Hashable], output_keys) -> tuple[Hashable, ...]:
    """``None`` -> ``keys`` (in place), else one output key per key."""
    if output_keys is None:
        return tuple(keys)
    out = ensure_tuple(output_keys)
    if len(out) != len(keys):
        raise ValueError(f"{fn}: output_keys must have one key per key in {list(keys)}, got {list(out)}")
    return tuple(out)


def device_of(device, default: torch.device) -> torch.device:
    if device is None:
        return default
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"invalid device {device!r}: {error}") from None


# --- tensors --------------------------------------------------------------------------------

def as_tensor(name: str, x) -> torch.Tensor:
    """A torch tensor (numpy arrays are converted); MetaTensors are kept as they are.
    ``name`` says which input, e.g. ``"Warpd: data['t1']"``."""
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        return torch.as_tensor(x)
    raise TypeError(f"{name} must be a torch.Tensor, MetaTensor or numpy array, got {type(x).__name__}")


def traced(name: str, x) -> MetaTensor:
    """The input of an ``inverse``: a MetaTensor (its ``applied_operations`` hold the trace)."""
    if not isinstance(x, MetaTensor):
        raise TypeError(f"{name} must be a MetaTensor to be inverted (the trace of applied transforms lives in its "
                        f"applied_operations; keep MONAI's set_track_meta(True)), got {type(x).__name__}")
    return x


def plain(x: torch.Tensor) -> torch.Tensor:
    """The data of a (Meta)Tensor as a plain ``torch.Tensor`` (no metadata tracking)."""
    return x.as_tensor() if isinstance(x, MetaTensor) else x


def check_image(name: str, x) -> torch.Tensor:
    """A channel-first image ``(C, H, W)`` or ``(C, H, W, D)``; ``name`` says which input."""
    x = as_tensor(name, x)
    if x.dim() not in (3, 4):
        raise ValueError(f"{name} must be channel-first (C, H, W) or (C, H, W, D) without a batch dimension, "
                         f"got shape {tuple(x.shape)}")
    if x.is_complex():
        raise TypeError(f"{name} must have real values, got dtype {x.dtype}")
    return x


def check_field(name: str, x, spatial: Sequence[int] | None = None) -> torch.Tensor:
    """A field ``(ndim, *spatial)`` (voxels), with ``spatial`` if given."""
    x = as_tensor(name, x)
    if spatial is None:
        if x.dim() not in (3, 4) or x.shape[0] != x.dim() - 1:
            raise ValueError(f"{name} must be a displacement/velocity field (ndim, *spatial) with ndim = 2 or 3 "
                             f"channels (one per spatial axis), got shape {tuple(x.shape)}")
    else:
        expected = (len(spatial), *spatial)
        if tuple(x.shape) != expected:
            raise ValueError(f"{name} must have shape (ndim, *spatial) = {expected} to match the image, "
                             f"got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype (float32/float64), got {x.dtype}")
    return x


def sampling_dtype(x: torch.Tensor, mode: str) -> torch.dtype:
    """float32/float64 data keep their dtype; integers sample in float64 with ``nearest`` (exact
    labels) and float32 with ``bilinear``; half precision in float32."""
    if x.dtype in (torch.float32, torch.float64):
        return x.dtype
    if not x.is_floating_point() and mode == "nearest":
        return torch.float64
    return torch.float32


def output_dtype(x: torch.Tensor, mode: str, computed: torch.dtype) -> torch.dtype:
    """``nearest`` keeps the input dtype (label values); ``bilinear`` keeps float dtypes and
    gives float32 for integer input."""
    if mode == "nearest" or x.is_floating_point():
        return x.dtype
    return computed


def affine_nd(x, ndim: int) -> np.ndarray:
    """The ``(ndim+1)`` square float64 voxel -> world matrix of a MetaTensor (or of an affine
    given as a tensor / array); the identity for a plain image tensor. MONAI keeps 4x4 affines
    for 2D images too; they are reduced to 3x3 (``monai.data.utils.to_affine_nd``)."""
    if isinstance(x, MetaTensor):
        affine = x.affine
    elif isinstance(x, np.ndarray) or (isinstance(x, torch.Tensor) and x.dim() == 2 and x.shape[0] == x.shape[1]
                                       and x.shape[0] in (3, 4)):
        affine = x
    else:
        return np.eye(ndim + 1)
    affine = torch.as_tensor(affine)
    if affine.dim() != 2:
        raise ValueError(f"expected a single (unbatched) affine, got shape {tuple(affine.shape)}")
    return np.asarray(to_affine_nd(ndim, affine.detach().cpu().double().numpy()), dtype=np.float64)


def full_affine(x, ndim: int) -> torch.Tensor:
    """The affine as stored in ``x.meta`` (any size), or the identity of size ``ndim + 1``."""
    if isinstance(x, MetaTensor):
        return x.affine.detach().cpu().clone().to(torch.float64)
    return torch.eye(ndim + 1, dtype=torch.float64)


def like(data: torch.Tensor, template, applied_operations=None, filename=None):
    """``data`` as a MetaTensor carrying a deep copy of ``template``'s meta (affine, spatial
    shape, ...), with the given ``applied_operations`` and ``filename_or_obj``. When
    ``template`` is a plain tensor, ``data`` is returned as is."""
    if not isinstance(template, MetaTensor) or not get_track_meta():
        return data
    meta = copy.deepcopy(template.meta)
    if filename is not None:
        meta["filename_or_obj"] = filename
    out = MetaTensor(data, meta=meta)
    out.affine = template.affine.clone()
    out.applied_operations = copy.deepcopy(list(applied_operations)) if applied_operations is not None else []
    return out


def same_grid_output(data: torch.Tensor, source) -> torch.Tensor:
    """``data`` (on ``source``'s grid) with ``source``'s meta and applied operations."""
    if isinstance(source, MetaTensor) and get_track_meta():
        out = MetaTensor(data, meta=copy.deepcopy(source.meta))
        out.applied_operations = copy.deepcopy(source.applied_operations)
        return out
    return data


# --- geometry -------------------------------------------------------------------------------

def voxel_grid(shape: Sequence[int], device, dtype=torch.float64) -> torch.Tensor:
    """Voxel indices ``(ndim, *shape)``."""
    axes = [torch.arange(n, dtype=dtype, device=device) for n in shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"))


def apply_matrix(matrix, points: torch.Tensor) -> torch.Tensor:
    """``(ndim+1)`` square ``matrix`` applied to points ``(ndim, *spatial)`` (float64)."""
    ndim = points.shape[0]
    m = torch.as_tensor(np.asarray(matrix, dtype=np.float64), device=points.device)
    out = torch.einsum("ij,j...->i...", m[:ndim, :ndim], points)
    return out + m[:ndim, ndim].view(ndim, *[1] * ndim)


def sample_at_voxels(image: torch.Tensor, points: torch.Tensor, mode: str, padding_mode: str) -> torch.Tensor:
    """Sample ``image`` ``(C, *in_spatial)`` at voxel positions ``points`` ``(ndim, *out_spatial)``
    (float64, voxels of ``image``; ``align_corners=True``) -> ``(C, *out_spatial)`` in the
    sampling dtype of ``image`` (:func:`sampling_dtype`)."""
    dtype = sampling_dtype(image, mode)
    data = plain(image).to(points.device, dtype)
    normalised = apply_matrix(voxel_to_normalised(tuple(image.shape[1:]), True), points)
    grid = normalised.movedim(0, -1)[None].to(dtype)
    return ops.grid_sample(data[None], grid, mode=mode, padding_mode=padding_mode, align_corners=True)[0]


def invert_ddf(ddf: torch.Tensor, iterations: int = 30, padding_mode: str = "border") -> torch.Tensor:
    """Numerical inverse of a DDF on its own grid by fixed-point iteration.

    Finds ``v`` with ``x + v(x) = y`` where ``y + u(y) = x``: ``v <- -warp(u, v)``, so that
    ``warp(warp(img, u), v) ~= img`` where the inverse exists (invertible, |grad u| well below 1 per
    iteration's contraction). ``ddf`` ``(B, ndim, *spatial)``.
    """
    u = ddf
    v = -u
    for _ in range(iterations):
        v = -ops.warp(u, v, mode="bilinear", padding_mode=padding_mode)
    return v


def spatial_shape(x: torch.Tensor) -> tuple[int, ...]:
    return tuple(int(s) for s in x.shape[1:])


def warp_back(transform, d: dict, warp, skip_not_applied: bool = False) -> dict:
    """The ``inverse`` of a dictionary transform that warped its keys by the field under
    ``transform.ddf_key``: pops each key's trace and warps it back (with the recorded ``mode``
    and ``padding_mode``) by the inverse field, taken from ``transform.inverse_ddf_key`` when
    present, else computed once by :func:`invert_ddf`. ``warp`` is
    :func:`regnet.transforms.fields.warp_image` (passed in: that module imports this one).
    ``skip_not_applied``: leave keys whose trace says the transform was not applied
    (``DO_TRANSFORM`` false) as they are. ``d`` is changed in place and returned.
    """
    name = type(transform).__name__
    inverse = None
    for key in transform.key_iterator(d):
        xform = transform.pop_transform(traced(where(f"{name}.inverse", key), d[key]))
        if skip_not_applied and not xform[TraceKeys.DO_TRANSFORM]:
            continue
        info = xform[TraceKeys.EXTRA_INFO]
        if inverse is None:
            if transform.inverse_ddf_key is not None and transform.inverse_ddf_key in d:
                inverse = d[transform.inverse_ddf_key]
            elif transform.ddf_key in d:
                u = check_field(where(name, transform.ddf_key), d[transform.ddf_key], spatial_shape(d[key]))
                dev = device_of(transform.device, d[key].device)
                with torch.no_grad():
                    inverse = invert_ddf(plain(u).to(dev, torch.float32)[None])[0]
            else:
                raise KeyError(f"{name}.inverse: needs the field under {transform.ddf_key!r}"
                               + (f" or {transform.inverse_ddf_key!r}" if transform.inverse_ddf_key is not None
                                  else "")
                               + f"; present keys: {list(d)}")
        d[key] = warp(d[key], inverse, info["mode"], info["padding_mode"], transform.device,
                      name=where(f"{name}.inverse", key), ddf_name=f"{name}.inverse: inverse field")
    return d

