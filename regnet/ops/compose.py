"""``compose``: composition of two displacement fields, ``u2`` first, then ``u1``."""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from regnet import _checks
from regnet.ops._backend import select
from regnet.ops.warp import check_sampling


class ComposeFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u1, u2, mode, padding_mode, impl):
        ctx.save_for_backward(u1, u2)
        ctx.options = (mode, padding_mode)
        ctx.impl = impl
        return impl.compose_forward(u1, u2, mode, padding_mode)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        u1, u2 = ctx.saved_tensors
        grad_u1, grad_u2 = ctx.impl.compose_backward(grad, u1, u2, *ctx.options, *ctx.needs_input_grad[:2])
        return grad_u1, grad_u2, None, None, None


def compose(
    u1: torch.Tensor,
    u2: torch.Tensor,
    mode: str = "bilinear",
    padding_mode: str = "border",
    *,
    backend: str | None = None,
) -> torch.Tensor:
    """Compose displacement fields: ``compose(u1, u2)(x) = u2(x) + u1(x + u2(x))``.

    Warping by the result equals warping by ``u1`` and then by ``u2``:
    ``warp(warp(img, u1), u2) ~= warp(img, compose(u1, u2))`` (``u2`` moves the sample points
    first, then ``u1``), as torchreg's ``composition_transform(u1, u2)``.

    ``padding_mode="border"`` (default) extends ``u1`` constantly outside the grid, so two
    translations compose to their sum everywhere.

    Args:
        u1, u2: ``(B, ndim, *spatial)`` voxel-unit DDFs on the same grid.

    Returns:
        ``(B, ndim, *spatial)``, differentiable w.r.t. both.
    """
    fn = "compose"
    _checks.field(fn, "u1", u1)
    _checks.tensor(fn, "u2", u2)
    _checks.spatial_field(fn, "u2", u2, u1.shape[0], u1.shape[2:])
    _checks.same_device_dtype(fn, u1=u1, u2=u2)
    check_sampling(fn, mode, padding_mode)
    impl = select("compose", u1.device, backend)
    return ComposeFunction.apply(u1, u2, mode, padding_mode, impl)
