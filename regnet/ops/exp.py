"""``exp``: displacement field of a stationary velocity field by scaling and squaring."""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from regnet import _checks
from regnet.ops._backend import select
from regnet.ops.warp import check_sampling


class ExpFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, svf, steps, mode, padding_mode, impl):
        ddf, saved = impl.exp_forward(svf, steps, mode, padding_mode)
        ctx.save_for_backward(*saved)
        ctx.options = (steps, mode, padding_mode)
        ctx.impl = impl
        return ddf

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        grad_svf = ctx.impl.exp_backward(grad, list(ctx.saved_tensors), *ctx.options)
        return grad_svf, None, None, None, None


def exp(
    svf: torch.Tensor,
    steps: int = 7,
    mode: str = "bilinear",
    padding_mode: str = "zeros",
    *,
    backend: str | None = None,
) -> torch.Tensor:
    """Exponentiate a stationary velocity field: ``u = svf / 2**steps``, then ``steps``
    times ``u <- u + warp(u, u)``.

    Same numbers as :class:`monai.networks.blocks.DVF2DDF` ``(num_steps=steps, mode,
    padding_mode)``, including its default ``padding_mode="zeros"``.

    Args:
        svf: ``(B, ndim, *spatial)`` velocity in voxels (regnet's DDF convention).
        steps: number of squarings (``0`` returns ``svf`` itself as the displacement).

    Returns:
        DDF ``(B, ndim, *spatial)``, differentiable w.r.t. ``svf``.
    """
    fn = "exp"
    _checks.field(fn, "svf", svf)
    _checks.non_negative_int(fn, "steps", steps)
    check_sampling(fn, mode, padding_mode)
    impl = select("exp", svf.device, backend)
    return ExpFunction.apply(svf, steps, mode, padding_mode, impl)
