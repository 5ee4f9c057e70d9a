"""``warp``: pull an image through a voxel-unit displacement field (MONAI ``Warp``)."""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from regnet import _checks
from regnet.ops import _broadcast
from regnet.ops._backend import select


class WarpFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, image, ddf, mode, padding_mode, impl):
        ctx.save_for_backward(image, ddf)
        ctx.options = (mode, padding_mode)
        ctx.impl = impl
        return impl.warp_forward(image, ddf, mode, padding_mode)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        image, ddf = ctx.saved_tensors
        grad_image, grad_ddf = ctx.impl.warp_backward(grad, image, ddf, *ctx.options, *ctx.needs_input_grad[:2])
        return grad_image, grad_ddf, None, None, None


def check_sampling(fn: str, mode: str, padding_mode: str) -> None:
    _checks.choice(fn, "mode", mode, _checks.SAMPLING_MODES)
    _checks.choice(fn, "padding_mode", padding_mode, _checks.PADDING_MODES)


def warp(
    image: torch.Tensor,
    ddf: torch.Tensor,
    mode: str = "bilinear",
    padding_mode: str = "border",
    *,
    backend: str | None = None,
) -> torch.Tensor:
    """Warp ``image`` by the displacement field ``ddf``: ``out(x) = image(x + ddf(x))``.

    Same convention and numbers as :class:`monai.networks.blocks.Warp` (PyTorch path):
    displacements in voxels of the image grid, channel ``i`` along spatial axis ``i``,
    voxel centres at integer positions (``align_corners=True``).

    Args:
        image: ``(B, C, H, W)`` or ``(B, C, H, W, D)``.
        ddf: ``(B, ndim, *spatial)`` with the image's spatial shape. The batch sizes are equal,
            or one of them is 1: one image warped by ``B`` fields, or ``B`` images by one field
            (see :mod:`regnet.ops._broadcast`).
        mode: ``"bilinear"`` or ``"nearest"`` (label maps).
        padding_mode: ``"border"`` (MONAI's default), ``"zeros"`` or ``"reflection"``.

    Returns:
        ``(B, C, *spatial)``, differentiable w.r.t. ``image`` and ``ddf``.
    """
    fn = "warp"
    _checks.tensor(fn, "image", image, ndims=(4, 5))
    _checks.tensor(fn, "ddf", ddf)
    _checks.spatial_field(fn, "ddf", ddf, ddf.shape[0], image.shape[2:])
    _broadcast.output_batch(fn, "image", image, "ddf", ddf)
    _checks.same_device_dtype(fn, image=image, ddf=ddf)
    check_sampling(fn, mode, padding_mode)
    impl = select("warp", image.device, backend)
    image, folded = _broadcast.fold(image, ddf)
    return _broadcast.unfold(WarpFunction.apply(image, ddf, mode, padding_mode, impl), folded)
