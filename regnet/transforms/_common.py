"""Helpers shared by the regnet MONAI transforms: MetaTensor in/out, the world affine of
channel-first MetaTensors, and the inverse of a warping dictionary transform. Argument checks
are :mod:`regnet._checks`' and coordinate maths :mod:`regnet.geometry`'s.

Array layouts here are MONAI's (no batch dimension): images ``(C, *spatial)``, fields
``(ndim, *spatial)`` in voxels (regnet convention, ``docs/conventions.md``).
"""

from __future__ import annotations

import copy
from collections.abc import Hashable, Sequence

import numpy as np
import torch
from monai.data import MetaTensor, get_track_meta
from monai.data.utils import to_affine_nd
from monai.utils import ensure_tuple
from monai.utils.enums import TraceKeys

from regnet import _checks
from regnet.geometry import invert_ddf

SAMPLING_MODES = _checks.SAMPLING_MODES
PADDING_MODES = _checks.PADDING_MODES


def where(fn: str, key: Hashable | None = None, name: str = "img") -> str:
    """``"Warpd: data['t1']"`` or ``"Warp: img"``: how errors name an input."""
    return f"{fn}: data[{key!r}]" if key is not None else f"{fn}: {name}"


# --- argument checks ------------------------------------------------------------------------

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

