"""Argument checks for every layer of regnet: clear errors at the boundary.

The one home of validation helpers (ops, geometry, io, registration, transforms, pipeline and
lightning all use these). Each check names the function (``fn``, e.g. ``"warp"`` or
``"SyNRegistration"``) and the argument (``name``), states what was expected and what was
given, and raises ``TypeError`` for a wrong kind of value and ``ValueError`` (or the ``error``
class passed in, e.g. :class:`ConfigError`) for a wrong value. A leaf module: it imports
nothing from regnet, so that every layer may use it.

Example::

    >>> from regnet import _checks
    >>> _checks.choice("warp", "mode", "bilinear", ("bilinear", "nearest"))
    'bilinear'
    >>> _checks.per_level("SyN", "iterations", 20, 3, _checks.is_count, "non-negative ints")
    (20, 20, 20)
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

#: Interpolation and padding modes of ``grid_sample`` and the ops built on it.
SAMPLING_MODES = ("bilinear", "nearest")
PADDING_MODES = ("zeros", "border", "reflection")


class ConfigError(ValueError):
    """A setting that cannot be used, from a YAML config, a mapping or the command line: an
    unknown key or section (named in the message) or a bad value. A ``ValueError``, so callers
    that catch ``ValueError`` catch it too; the command line exits with status 2 on it."""


def either(values: Sequence[Any]) -> str:
    """``"a, b or c"``: the alternatives of an error message."""
    words = [str(v) for v in values]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


# --- kinds of values ------------------------------------------------------------------------

def is_count(value) -> bool:
    """A non-negative int (not a bool)."""
    return bool(isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 0)


def is_positive(value) -> bool:
    """A finite number > 0 (not a bool)."""
    return bool(isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
                and math.isfinite(value) and value > 0)


def boolean(fn: str, name: str, value) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{fn}: {name} must be a bool, got {value!r}")
    return value


def optional_boolean(fn: str, name: str, value, meaning: str = "None") -> bool | None:
    """``None`` or a bool; ``meaning`` says what ``None`` stands for in the message."""
    if value is not None and not isinstance(value, bool):
        raise TypeError(f"{fn}: {name} must be {meaning}, True or False, got {value!r}")
    return value


def choice(fn: str, name: str, value, choices: Sequence[Any], error: type[Exception] = ValueError):
    """``value`` if it is one of ``choices`` (compared with ``==``; ``None`` may be a choice)."""
    if value not in choices:
        raise error(f"{fn}: {name} must be one of {tuple(choices)}, got {value!r}")
    return value


def string_choice(fn: str, name: str, value, choices: Sequence[str], error: type[Exception] = ValueError) -> str:
    """A str among ``choices``."""
    if not isinstance(value, str) or value not in choices:
        raise error(f"{fn}: {name} must be one of {tuple(choices)}, got {value!r}")
    return value


def number(fn: str, name: str, value, *, low: float | None = None, low_open: bool = False,
           high: float | None = None, error: type[Exception] = ValueError) -> float:
    """A finite real number within ``[low, high]`` (``(low, high]`` with ``low_open``), as float.
    A non-number raises ``TypeError`` (or ``error`` when that is a :class:`ConfigError`)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        kind = error if issubclass(error, ConfigError) else TypeError
        raise kind(f"{fn}: {name} must be a number, got {type(value).__name__} {value!r}")
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
        raise error(f"{fn}: {name} must be a finite number{' ' if bounds else ''}{' and '.join(bounds)}, "
                    f"got {value!r}")
    return value


def integer(fn: str, name: str, value, *, low: int | None = None, error: type[Exception] = ValueError) -> int:
    """An int (not a bool) ``>= low``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or (low is not None and value < low):
        bound = "" if low is None else f" >= {low}"
        raise error(f"{fn}: {name} must be an integer{bound}, got {value!r}")
    return int(value)


def non_negative_int(fn: str, name: str, value) -> int:
    if not is_count(value):
        raise ValueError(f"{fn}: {name} must be a non-negative int, got {value!r}")
    return int(value)


def callable_(fn: str, name: str, value, what: str) -> Callable:
    if not callable(value):
        raise TypeError(f"{fn}: {name} must be {what}, got {type(value).__name__}")
    return value


def key(fn: str, name: str, value, optional: bool = False):
    """A dictionary key (hashable, not ``None`` unless ``optional``)."""
    if value is None and optional:
        return None
    if not isinstance(value, Hashable) or value is None:
        raise TypeError(f"{fn}: {name} must be a dictionary key (e.g. a str), got {value!r}")
    return value


# --- per-level and per-key options ----------------------------------------------------------

def scales(fn: str, value) -> tuple[float, ...]:
    """Pyramid downsampling factors ``>= 1``, coarse to fine (one number is one level)."""
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        value = (value,)
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) == 0:
        raise ValueError(f"{fn}: scales must be a non-empty sequence of downsampling factors >= 1, got {value!r}")
    if not all(is_positive(s) and s >= 1 for s in value):
        raise ValueError(f"{fn}: scales must be downsampling factors >= 1 (1 = full resolution), got {tuple(value)!r}")
    return tuple(value)


def per_level(fn: str, name: str, value, levels: int, ok: Callable[[Any], bool], what: str) -> tuple:
    """One value for every level, or a sequence with one value per level; each must pass ``ok``."""
    if not isinstance(value, (str, bytes)) and isinstance(value, Sequence):
        values = tuple(value)
        if len(values) != levels:
            raise ValueError(f"{fn}: {name} must have one entry per scale ({levels}), got {values!r}")
    else:
        values = (value,) * levels
    if not all(ok(v) for v in values):
        raise ValueError(f"{fn}: {name} must be {what} (one, or one per scale), got {value!r}")
    return values


def per_key(fn: str, name: str, value, keys: Sequence[Hashable], choices: Sequence[str]) -> tuple[str, ...]:
    """One option per key: a str (shared) or a sequence with one entry per key."""
    if isinstance(value, str):
        values: tuple = (value,) * len(keys)
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
        string_choice(fn, name, v, choices)
    return values


def weights(fn: str, name: str, value, options: Sequence[str], *, allow_empty: bool = True,
            error: type[Exception] = ValueError) -> dict[str, float]:
    """A ``{term: weight}`` mapping with terms from ``options`` and weights >= 0."""
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        raise error(f"{fn}: {name} must be a mapping {{term: weight}} with terms from {tuple(options)}, got {value!r}")
    out = {}
    for term, weight in value.items():
        if term not in options:
            raise error(f"{fn}: {name} has unknown term {term!r}; expected terms from {tuple(options)}")
        out[term] = number(fn, f"{name}.{term}", weight, low=0.0, error=error)
    if not allow_empty and not any(out.values()):
        raise error(f"{fn}: {name} must give at least one term a weight > 0, got {value!r}")
    return out


def int_sequence(fn: str, name: str, value, *, length: int | None = None, minimum: int = 1, min_length: int = 1,
                 error: type[Exception] = ValueError) -> list[int]:
    """A list of ints ``>= minimum`` (``length`` entries, or at least ``min_length``)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise error(f"{fn}: {name} must be a list of integers, got {value!r}")
    if length is not None and len(value) != length:
        raise error(f"{fn}: {name} must have {length} entries, got {list(value)!r}")
    if len(value) < min_length:
        raise error(f"{fn}: {name} must have at least {min_length} entries, got {list(value)!r}")
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum:
            raise error(f"{fn}: {name} must hold integers >= {minimum}, got {list(value)!r}")
    return [int(v) for v in value]


# --- tensors --------------------------------------------------------------------------------

def tensor(fn: str, name: str, x, ndims: Sequence[int] | None = None, floating: bool = True) -> torch.Tensor:
    """A ``torch.Tensor`` with one of ``ndims`` dimensions and (``floating``) a floating dtype."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{fn}: {name} must be a torch.Tensor, got {type(x).__name__}")
    if ndims is not None and x.dim() not in ndims:
        raise ValueError(
            f"{fn}: {name} must have {either(ndims)} dimensions, got shape {tuple(x.shape)} ({x.dim()} dimensions)"
        )
    if floating and not x.is_floating_point():
        raise TypeError(f"{fn}: {name} must have a floating dtype (float16/bfloat16/float32/float64), got {x.dtype}")
    return x


def same_device_dtype(fn: str, **tensors: torch.Tensor) -> None:
    """All named tensors share one device and one dtype."""
    (first_name, first), *rest = tensors.items()
    for name, x in rest:
        if x.device != first.device:
            raise ValueError(f"{fn}: {name} is on {x.device} but {first_name} is on {first.device}; "
                             f"move both to one device")
        if x.dtype != first.dtype:
            raise TypeError(f"{fn}: {name} has dtype {x.dtype} but {first_name} has dtype {first.dtype}; use one dtype")


def spatial_field(fn: str, name: str, field: torch.Tensor, batch: int, spatial: Sequence[int]) -> None:
    """A displacement/velocity field of shape ``(batch, ndim, *spatial)``."""
    expected = (batch, len(spatial), *spatial)
    if tuple(field.shape) != expected:
        raise ValueError(f"{fn}: {name} must have shape (B, ndim, *spatial) = {expected}, got {tuple(field.shape)}")


def field(fn: str, name: str, x) -> torch.Tensor:
    """A displacement/velocity field ``(B, ndim, *spatial)`` with ndim 2 or 3."""
    tensor(fn, name, x, ndims=(4, 5))
    if x.shape[1] != x.dim() - 2:
        raise ValueError(
            f"{fn}: {name} must have shape (B, ndim, *spatial) with ndim = {x.dim() - 2} channels "
            f"for {x.dim() - 2}D, got shape {tuple(x.shape)}"
        )
    return x


def finite(fn: str, name: str, x: torch.Tensor) -> torch.Tensor:
    """No NaN or infinite value (one host synchronisation: for entry points, not ops)."""
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{fn}: {name} contains NaN or infinite values")
    return x


# --- masks and voxel weights ----------------------------------------------------------------

def _per_voxel_shape(fn: str, name: str, x: torch.Tensor, like: torch.Tensor, like_name: str) -> None:
    """``x`` has shape ``(B or 1, C or 1, *spatial)`` of ``like`` ``(B, C, *spatial)``."""
    if (
        x.dim() != like.dim()
        or x.shape[0] not in (1, like.shape[0])
        or x.shape[1] not in (1, like.shape[1])
        or x.shape[2:] != like.shape[2:]
    ):
        spatial = ", ".join(map(str, like.shape[2:]))
        expected = f"(B or 1, C or 1, *spatial) = ({like.shape[0]} or 1, {like.shape[1]} or 1, {spatial})"
        raise ValueError(f"{fn}: {name} must have shape {expected} to go with {like_name} "
                         f"{tuple(like.shape)}, got {tuple(x.shape)}")
    if x.device != like.device:
        raise ValueError(f"{fn}: {name} is on {x.device} but {like_name} is on {like.device}; move both to one device")


def voxel_weight(fn: str, name: str, x, like: torch.Tensor, like_name: str = "pred") -> torch.Tensor:
    """An op's per-voxel weight for ``like`` ``(B, C, *spatial)``: a tensor of ``like``'s dtype and
    device, shape ``(B or 1, C or 1, *spatial)``, not requiring grad (ops do not differentiate
    it). Values are not checked (that would synchronise the device; ops never do)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{fn}: {name} must be a torch.Tensor or None, got {type(x).__name__}")
    _per_voxel_shape(fn, name, x, like, like_name)
    if x.dtype != like.dtype:
        raise TypeError(f"{fn}: {name} has dtype {x.dtype} but {like_name} has dtype {like.dtype}; use one dtype")
    if x.requires_grad and torch.is_grad_enabled():
        raise ValueError(f"{fn}: {name} requires grad, but no gradient is computed for it; pass {name}.detach()")
    return x


# Masks whose values were checked, by id: (a weak reference, the tensor's version counter), so that
# a registration loop passing the same mask every iteration synchronises once, not per iteration.
_CHECKED_VALUES: dict[int, tuple[weakref.ref, int]] = {}


def non_negative_finite(fn: str, name: str, x: torch.Tensor) -> torch.Tensor:
    """All values finite and ``>= 0`` (bool always passes). Reads the device once per tensor and
    version (an in-place change is checked again); skipped while a CUDA graph is being captured
    (the eager warm-up iterations before it checked the same tensor)."""
    if x.dtype == torch.bool:
        return x
    try:
        version = x._version
    except RuntimeError:  # inference tensors keep no version counter: check every time
        version = None
    seen = _CHECKED_VALUES.get(id(x))
    if version is not None and seen is not None and seen[0]() is x and seen[1] == version:
        return x
    if x.is_cuda and torch.cuda.is_current_stream_capturing():
        return x
    values = x.detach()
    if values.is_floating_point() and not bool(torch.isfinite(values).all()):
        count = int((~torch.isfinite(values)).sum())
        raise ValueError(f"{fn}: {name} must hold finite values >= 0 (bool, 0/1 or soft weights), "
                         f"got {count} NaN or infinite value(s)")
    if values.numel() and bool((values < 0).any()):
        raise ValueError(f"{fn}: {name} must hold finite values >= 0 (bool, 0/1 or soft weights), "
                         f"got a minimum of {values.min().item()}")
    if version is not None:
        if len(_CHECKED_VALUES) >= 64:
            _CHECKED_VALUES.clear()
        ident = id(x)

        def forget(_: weakref.ref) -> None:
            _CHECKED_VALUES.pop(ident, None)

        _CHECKED_VALUES[ident] = (weakref.ref(x, forget), version)
    return x


def mask(fn: str, name: str, x, like: torch.Tensor, like_name: str = "pred") -> torch.Tensor:
    """A loss's mask for ``like`` ``(B, C, *spatial)``: a tensor (bool, integer or floating) of shape
    ``(B or 1, C or 1, *spatial)`` on ``like``'s device, with finite values ``>= 0`` (see
    :func:`non_negative_finite`); returned detached (a mask is a constant: no gradient flows to
    it) in ``like``'s dtype."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{fn}: {name} must be a torch.Tensor or None, got {type(x).__name__}")
    if like.dim() < 2:
        raise ValueError(f"{fn}: a {name} needs {like_name} of shape (B, C, *spatial), got shape {tuple(like.shape)}")
    if x.is_complex():
        raise TypeError(f"{fn}: {name} must be bool, integer or floating, got {x.dtype}")
    _per_voxel_shape(fn, name, x, like, like_name)
    non_negative_finite(fn, name, x)
    return x.detach().to(like.dtype)


# --- geometry -------------------------------------------------------------------------------

def spatial_shape(fn: str, name: str, shape, ndim: int | None = None) -> tuple[int, ...]:
    """2 or 3 positive ints (``ndim`` of them when given)."""
    if isinstance(shape, torch.Size):
        shape = tuple(shape)
    ok = isinstance(shape, Sequence) and len(shape) in (2, 3)
    ok = ok and all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s > 0 for s in shape)
    if not ok:
        raise ValueError(f"{fn}: {name} must be 2 or 3 positive ints (spatial shape), got {shape!r}")
    if ndim is not None and len(shape) != ndim:
        raise ValueError(f"{fn}: {name} must have {ndim} spatial sizes to match the affines, got {tuple(shape)}")
    return tuple(int(s) for s in shape)


def affine_matrix(fn: str, name: str, affine, ndim: int | None = None) -> np.ndarray:
    """A finite 3x3 (2D) or 4x4 (3D) matrix as float64 numpy (``ndim + 1`` square when given)."""
    if isinstance(affine, torch.Tensor):
        affine = affine.detach().cpu().numpy()
    try:
        a = np.asarray(affine, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{fn}: {name} must be a square matrix, got {type(affine).__name__}") from None
    if a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape[0] not in (3, 4):
        raise ValueError(f"{fn}: {name} must be 3x3 (2D) or 4x4 (3D), got shape {a.shape}")
    if ndim is not None and a.shape[0] != ndim + 1:
        raise ValueError(f"{fn}: {name} must be {ndim + 1}x{ndim + 1} for {ndim}D data, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{fn}: {name} contains NaN or infinite values")
    return a


def grid(fn: str, prefix: str, shape, affine) -> tuple[tuple[int, ...], np.ndarray]:
    """A grid: spatial shape and an invertible voxel -> world affine with last row ``(0, .., 0, 1)``."""
    affine = affine_matrix(fn, f"{prefix}_affine", affine)
    ndim = affine.shape[0] - 1
    shape = spatial_shape(fn, f"{prefix}_shape", shape, ndim)
    if not np.allclose(affine[-1], np.eye(ndim + 1)[-1]):
        raise ValueError(f"{fn}: {prefix}_affine must have last row (0, ..., 0, 1), got {affine[-1].tolist()}")
    if abs(np.linalg.det(affine[:ndim, :ndim])) < 1e-12 * max(1.0, np.abs(affine[:ndim, :ndim]).max() ** ndim):
        raise ValueError(f"{fn}: {prefix}_affine is singular: {affine.tolist()}")
    return shape, affine
