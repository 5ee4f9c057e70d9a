"""``jacobian_det``: Jacobian determinant of the map ``x -> x + u(x)``."""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from regnet import _checks
from regnet.ops._backend import select


class JacobianDetFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, ddf, impl):
        ctx.save_for_backward(ddf)
        ctx.impl = impl
        return impl.jacobian_det_forward(ddf)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        (ddf,) = ctx.saved_tensors
        return ctx.impl.jacobian_det_backward(grad, ddf), None


def jacobian_det(ddf: torch.Tensor, *, backend: str | None = None) -> torch.Tensor:
    """Jacobian determinant ``det(I + grad u)`` of a voxel-unit displacement field.

    Derivatives along each axis as ``numpy.gradient`` with unit spacing: central differences
    inside, one-sided differences at the first and last voxel. An affine field
    ``u(x) = A x + b`` gives ``det(I + A)`` everywhere; values ``<= 0`` mark folding.

    Args:
        ddf: ``(B, ndim, *spatial)`` with ndim 2 or 3 and every spatial size >= 2.

    Returns:
        ``(B, 1, *spatial)`` (an image: channel-first, one channel), differentiable w.r.t. ``ddf``.
    """
    fn = "jacobian_det"
    _checks.field(fn, "ddf", ddf)
    if min(ddf.shape[2:]) < 2:
        raise ValueError(f"{fn}: every spatial size of ddf must be >= 2, got shape {tuple(ddf.shape)}")
    impl = select("jacobian_det", ddf.device, backend)
    return JacobianDetFunction.apply(ddf, impl)
