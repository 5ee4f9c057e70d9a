"""Global state of the ops: the backend name and the deterministic flag.

A leaf module (it imports nothing from regnet), so that the dispatcher
(:mod:`regnet.ops._backend`) and the kernels (:mod:`regnet.ops._triton`, which read
:func:`is_deterministic` when a backward pass runs) can both use it without importing each
other.

- **Backend name** (:func:`set_backend` / :func:`get_backend`): ``"auto"``, ``"torch"`` or
  ``"triton"``; precedence: the call's ``backend=``, then :func:`set_backend`, then the
  ``REGNET_BACKEND`` environment variable, then ``"auto"``.
- **Deterministic mode** (:func:`set_deterministic` / :func:`is_deterministic`): the Triton
  kernels avoid float atomics (backward passes, the joint-histogram forward) so that results
  repeat bit for bit; ``torch.use_deterministic_algorithms(True)`` has the same effect while
  it is on.

Example::

    >>> from regnet.ops import _state
    >>> _state.set_backend("torch"); _state.get_backend()
    'torch'
    >>> _state.set_backend(None)
"""

from __future__ import annotations

import os

#: Backend names accepted by ``backend=``, :func:`set_backend` and ``REGNET_BACKEND``.
BACKENDS = ("auto", "torch", "triton")

#: Device types on which ``auto`` takes the Triton kernels (tests add ``"cpu"`` to run the
#: CUDA code path through Triton's interpreter).
AUTO_TRITON_DEVICES: tuple[str, ...] = ("cuda",)

_global_backend: str | None = None
_deterministic = False


def check_name(name: object, source: str) -> str:
    """``name`` lower-cased if it is one of :data:`BACKENDS`; ``ValueError`` naming ``source``."""
    if not isinstance(name, str) or name.lower() not in BACKENDS:
        raise ValueError(f"{source} must be one of {BACKENDS}, got {name!r}")
    return name.lower()


def set_backend(name: str | None) -> None:
    """Set the backend used by every op call that passes no ``backend=``.

    ``name`` is ``"auto"``, ``"torch"``, ``"triton"``, or ``None`` to fall back to the
    ``REGNET_BACKEND`` environment variable (and then ``"auto"``).
    """
    global _global_backend
    _global_backend = None if name is None else check_name(name, "set_backend(name)")


def get_backend() -> str:
    """The backend name in force when a call passes no ``backend=``."""
    if _global_backend is not None:
        return _global_backend
    env = os.environ.get("REGNET_BACKEND")
    return check_name(env, "the REGNET_BACKEND environment variable") if env else "auto"


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
    import torch  # here: `import regnet` must not import torch

    return torch.are_deterministic_algorithms_enabled()
