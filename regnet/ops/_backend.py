"""Backend selection (the dispatcher) for the ops in ``regnet.ops``.

Every op has a vectorised PyTorch reference backend (``"torch"``, any device). Fused Triton
kernels (``"triton"``) plug in per op through ``regnet.ops._triton.KERNELS``, a mapping from
op name to a backend namespace with the same functions as the reference one. What a
namespace implements for each family of ops is fixed by the protocols in
:mod:`regnet.ops._protocols`; :func:`select` returns the op's protocol type.

The backend is chosen, in order of precedence, by the ``backend=`` argument of a call, by
``set_backend(...)``, and by the ``REGNET_BACKEND`` environment variable; ``"auto"`` (the
default) takes Triton for tensors on :data:`~regnet.ops._state.AUTO_TRITON_DEVICES` (CUDA)
when Triton imports and has a kernel for the op, and the reference otherwise.

The global state (backend name, deterministic flag) lives in :mod:`regnet.ops._state`, which
the kernels read without importing this module; its functions are re-exported here.

Example::

    >>> import torch
    >>> from regnet.ops._backend import select
    >>> select("warp", torch.device("cpu")).NAME
    'torch'
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, overload

import torch

from regnet.ops import _state, _torch
from regnet.ops._protocols import (
    AffineCompositionBackend,
    AffineCompositionOp,
    AffineGridBackend,
    AffineGridOp,
    AffineParamsBackend,
    AffineParamsOp,
    FieldBackend,
    FieldOp,
    JacobianBackend,
    JacobianOp,
    JointHistogramBackend,
    JointHistogramOp,
    LocalNCCBackend,
    LocalNCCOp,
    SamplingBackend,
    SamplingOp,
    SmoothingBackend,
    SmoothingOp,
)
from regnet.ops._state import (
    AUTO_TRITON_DEVICES,
    BACKENDS,
    get_backend,
    is_deterministic,
    set_backend,
    set_deterministic,
)

__all__ = [
    "AUTO_TRITON_DEVICES",
    "BACKENDS",
    "get_backend",
    "is_deterministic",
    "select",
    "set_backend",
    "set_deterministic",
]


def _triton_kernels() -> dict[str, Any]:
    """``regnet.ops._triton.KERNELS``, imported on first use (Triton is slow to import and
    ``auto`` off CUDA never needs it); empty without Triton."""
    try:
        return importlib.import_module("regnet.ops._triton").KERNELS
    except ImportError:
        return {}


@overload
def select(op: SamplingOp, device: torch.device, backend: str | None = None) -> SamplingBackend: ...
@overload
def select(op: FieldOp, device: torch.device, backend: str | None = None) -> FieldBackend: ...
@overload
def select(op: SmoothingOp, device: torch.device, backend: str | None = None) -> SmoothingBackend: ...
@overload
def select(op: LocalNCCOp, device: torch.device, backend: str | None = None) -> LocalNCCBackend: ...
@overload
def select(op: JointHistogramOp, device: torch.device, backend: str | None = None) -> JointHistogramBackend: ...
@overload
def select(op: AffineGridOp, device: torch.device, backend: str | None = None) -> AffineGridBackend: ...
@overload
def select(op: AffineCompositionOp, device: torch.device, backend: str | None = None) -> AffineCompositionBackend:
    ...
@overload
def select(op: AffineParamsOp, device: torch.device, backend: str | None = None) -> AffineParamsBackend: ...
@overload
def select(op: JacobianOp, device: torch.device, backend: str | None = None) -> JacobianBackend: ...


def select(op: str, device: torch.device, backend: str | None = None) -> Any:
    """Return the backend namespace that computes ``op`` for tensors on ``device``."""
    name = get_backend() if backend is None else _state.check_name(backend, f"{op}(backend=...)")
    if name == "auto":
        kernels = _triton_kernels() if device.type in _state.AUTO_TRITON_DEVICES else {}
        return kernels.get(op) or _torch
    if name == "torch":
        return _torch
    kernels = _triton_kernels()
    if op not in kernels:
        raise ValueError(
            f"{op}(backend='triton'): no Triton kernel is available for {op} "
            f"(Triton not importable, or no kernel for this op); use backend='torch' or 'auto'"
        )
    return kernels[op]


if TYPE_CHECKING:  # each namespace satisfies its families' contracts: checked by mypy, nothing runs
    from regnet.ops._triton import affine as _t_affine
    from regnet.ops._triton import fields as _t_fields
    from regnet.ops._triton import gaussian as _t_gaussian
    from regnet.ops._triton import joint_histogram as _t_joint_histogram
    from regnet.ops._triton import local_ncc as _t_local_ncc
    from regnet.ops._triton import sampling as _t_sampling

    _torch_sampling: SamplingBackend = _torch
    _torch_fields: FieldBackend = _torch
    _torch_smoothing: SmoothingBackend = _torch
    _torch_local_ncc: LocalNCCBackend = _torch
    _torch_joint_histogram: JointHistogramBackend = _torch
    _torch_affine_grid: AffineGridBackend = _torch
    _torch_compose_affine: AffineCompositionBackend = _torch
    _torch_affine_params: AffineParamsBackend = _torch
    _torch_jacobian: JacobianBackend = _torch
    _triton_sampling: SamplingBackend = _t_sampling
    _triton_fields: FieldBackend = _t_fields
    _triton_smoothing: SmoothingBackend = _t_gaussian
    _triton_local_ncc: LocalNCCBackend = _t_local_ncc
    _triton_joint_histogram: JointHistogramBackend = _t_joint_histogram
    _triton_affine_params: AffineParamsBackend = _t_affine
