"""Backend selection for the ops in ``regnet.ops``.

Every op has a vectorised PyTorch reference backend (``"torch"``, any device). Fused Triton
kernels (``"triton"``) plug in per op through ``regnet.ops._triton.KERNELS``, a mapping from
op name to a backend namespace with the same functions as the reference one.

The backend is chosen, in order of precedence, by the ``backend=`` argument of a call, by
``set_backend(...)``, and by the ``REGNET_BACKEND`` environment variable; ``"auto"`` (the
default) takes Triton for CUDA tensors when Triton imports and has a kernel for the op, and
the reference otherwise.

Deterministic mode (``set_deterministic(True)``, or ``torch.use_deterministic_algorithms(True)``)
makes the Triton kernels avoid float atomics (backward passes, and the joint-histogram
forward), so that results repeat bit for bit (see ``docs/triton.md``). It is read when
such a kernel runs.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

BACKENDS = ("auto", "torch", "triton")
_global_backend: str | None = None
_deterministic = False


def _check_name(name, source: str) -> str:
    if not isinstance(name, str) or name.lower() not in BACKENDS:
        raise ValueError(f"{source} must be one of {BACKENDS}, got {name!r}")
    return name.lower()


def set_backend(name: str | None) -> None:
    """Set the backend used by every op call that passes no ``backend=``.

    ``name`` is ``"auto"``, ``"torch"``, ``"triton"``, or ``None`` to fall back to the
    ``REGNET_BACKEND`` environment variable (and then ``"auto"``).
    """
    global _global_backend
    _global_backend = None if name is None else _check_name(name, "set_backend(name)")


def get_backend() -> str:
    """The backend name in force when a call passes no ``backend=``."""
    if _global_backend is not None:
        return _global_backend
    env = os.environ.get("REGNET_BACKEND")
    return _check_name(env, "the REGNET_BACKEND environment variable") if env else "auto"


def set_deterministic(flag: bool) -> None:
    """Make the Triton kernels' gradients bitwise repeatable (no float atomics), at some cost in
    speed and memory; ``False`` restores the default fast path. ``torch.use_deterministic_algorithms
    (True)`` has the same effect while it is on."""
    global _deterministic
    if not isinstance(flag, bool):
        raise TypeError(f"set_deterministic(flag) must be a bool, got {type(flag).__name__}")
    _deterministic = flag


def is_deterministic() -> bool:
    """Whether deterministic mode is on: ``set_deterministic(True)`` or
    ``torch.are_deterministic_algorithms_enabled()``."""
    if _deterministic:
        return True
    import torch

    return torch.are_deterministic_algorithms_enabled()


#: Device types on which ``auto`` takes the Triton kernels (tests add ``"cpu"`` to run the
#: CUDA code path through Triton's interpreter).
AUTO_TRITON_DEVICES = ("cuda",)


def _triton_kernels() -> dict:
    try:
        return importlib.import_module("regnet.ops._triton").KERNELS
    except ImportError:
        return {}


def select(op: str, device, backend: str | None = None) -> ModuleType:
    """Return the backend namespace that computes ``op`` for tensors on ``device``."""
    name = get_backend() if backend is None else _check_name(backend, f"{op}(backend=...)")
    if name == "auto":
        kernels = _triton_kernels() if device.type in AUTO_TRITON_DEVICES else {}
        return kernels.get(op) or _reference()
    if name == "torch":
        return _reference()
    kernels = _triton_kernels()
    if op not in kernels:
        raise ValueError(
            f"{op}(backend='triton'): no Triton kernel is available for {op} "
            f"(Triton not importable, or no kernel for this op); use backend='torch' or 'auto'"
        )
    return kernels[op]


def _reference() -> ModuleType:
    from regnet.ops import _torch

    return _torch
