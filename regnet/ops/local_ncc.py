"""``local_ncc``: map of the local squared normalised cross-correlation of two images."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from regnet import _checks
from regnet.ops._backend import select
from regnet.ops._constants import constant

KERNEL_TYPES = ("rectangular", "gaussian", "triangular")
CONVENTIONS = ("monai", "torchreg")
REDUCTIONS = ("none", "mean", "sum")


def window(kernel_size: int, kernel_type: str) -> torch.Tensor:
    """1D window weights in float32 on the CPU, as MONAI's ``make_<type>_kernel`` (unnormalised)."""
    if kernel_type == "rectangular":
        k = torch.ones(kernel_size, dtype=torch.float32)
    elif kernel_type == "gaussian":
        sigma = kernel_size / 3.0
        x = torch.arange(-(kernel_size // 2), kernel_size // 2 + 1, dtype=torch.float32)
        k = torch.exp(-0.5 / (sigma * sigma) * x**2)
    else:  # triangular
        size = (kernel_size + 1) // 2
        size -= 1 if size % 2 == 0 else 0
        f = torch.ones((1, 1, size), dtype=torch.float32).div(size)
        k = F.conv1d(f, f, padding=(kernel_size - size) // 2 + size // 2).reshape(-1)
    return k


def window_volume(k: torch.Tensor, ndim: int) -> float:
    """Sum of the ``ndim``-D window, formed as MONAI does (float32 outer products)."""
    volume = k
    for _ in range(ndim - 1):
        volume = volume.unsqueeze(-1) @ k.unsqueeze(0)
    return float(volume.sum())


@functools.lru_cache(maxsize=64)
def _window_weights(kernel_size: int, kernel_type: str, ndim: int) -> tuple[tuple[float, ...], float]:
    """The window's weights and MONAI's volume for ``ndim`` axes (computed once per setting)."""
    k = window(kernel_size, kernel_type)
    return tuple(k.tolist()), window_volume(k, ndim)


class LocalNCCFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pred, target, kernel, weight, volume, smooth_nr, floor, eps, reduction, impl):
        ctx.save_for_backward(pred, target, kernel, *(() if weight is None else (weight,)))
        ctx.options = (volume, smooth_nr, floor, eps)
        ctx.reduction = reduction
        ctx.impl = impl
        return impl.local_ncc_forward(pred, target, kernel, volume, smooth_nr, floor, eps, reduction=reduction,
                                      weight=weight)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        pred, target, kernel, *weight = ctx.saved_tensors
        grad_pred, grad_target = ctx.impl.local_ncc_backward(
            grad, pred, target, kernel, *ctx.options, *ctx.needs_input_grad[:2], reduction=ctx.reduction,
            weight=weight[0] if weight else None,
        )
        return grad_pred, grad_target, None, None, None, None, None, None, None, None


def local_ncc(
    pred: torch.Tensor,
    target: torch.Tensor,
    kernel_size: int = 7,
    kernel_type: str = "rectangular",
    smooth_nr: float = 0.0,
    smooth_dr: float = 1e-5,
    convention: str = "monai",
    *,
    reduction: str = "none",
    weight: torch.Tensor | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """Local squared zero-normalised cross-correlation in a sliding window, per voxel or reduced.

    ``convention="monai"`` gives MONAI's ``LocalNormalizedCrossCorrelationLoss`` map (before
    its negation and reduction): ``(cross^2 + smooth_nr) / (max(var_p, smooth_dr) *
    max(var_t, smooth_dr))``. ``convention="torchreg"`` gives torchreg's ``NCC`` map:
    ``(cross^2 + smooth_nr) / (relu(var_p) * relu(var_t) + smooth_dr)`` (use
    ``smooth_nr=smooth_dr=1e-5`` for torchreg's defaults). The window is zero-padded at the
    image border, as in both.

    Args:
        pred, target: ``(B, C, *spatial)`` with 1, 2 or 3 spatial axes, same shape.
        kernel_size: odd window width in voxels (the same along every axis).
        kernel_type: ``"rectangular"``, ``"gaussian"`` (sigma = kernel_size / 3) or
            ``"triangular"``, MONAI's windows.
        reduction: ``"none"`` returns the map; ``"mean"`` / ``"sum"`` its mean / sum over all
            elements (batch and channels included), reduced inside the op: the Triton backend
            never writes the map and its backward reads the scalar gradient from the device.
        weight: optional per-voxel weight ``(B or 1, C or 1, *spatial)`` (pred's dtype and
            device, broadcast over the batch and channels) that multiplies the map before the
            reduction: ``"none"`` returns ``weight * map``, ``"sum"`` ``sum(weight * map)``,
            ``"mean"`` ``mean(weight * map)`` (divided by the element count, not by the
            weights' sum; a masked mean divides the ``"sum"`` by the weights' total). The
            windowed sums still see every voxel; only the map is weighted (a masked loss:
            each voxel's local NCC counts with its weight). Both backends, forward and
            backward (the incoming gradient is scaled per voxel by the weight); no gradient
            w.r.t. the weight. ``None``: today's numbers, bit for bit.

    Returns:
        ``"none"``: ``(B, C, *spatial)``, values in about ``[0, 1]`` (1: locally linearly
        related). ``"mean"`` / ``"sum"``: a 0-d tensor. Always in the inputs' dtype.
        Differentiable w.r.t. both images; the backward keeps only the two inputs.
    """
    fn = "local_ncc"
    _checks.tensor(fn, "pred", pred, ndims=(3, 4, 5))
    _checks.tensor(fn, "target", target)
    if target.shape != pred.shape:
        raise ValueError(f"{fn}: target must have the shape of pred {tuple(pred.shape)}, got {tuple(target.shape)}")
    _checks.same_device_dtype(fn, pred=pred, target=target)
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"{fn}: kernel_size must be a positive odd int, got {kernel_size!r}")
    _checks.choice(fn, "kernel_type", kernel_type, KERNEL_TYPES)
    _checks.choice(fn, "convention", convention, CONVENTIONS)
    _checks.choice(fn, "reduction", reduction, REDUCTIONS)
    for name, value in (("smooth_nr", smooth_nr), ("smooth_dr", smooth_dr)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise ValueError(f"{fn}: {name} must be a number >= 0, got {value!r}")
    if weight is not None:
        _checks.voxel_weight(fn, "weight", weight, pred)
    impl = select("local_ncc", pred.device, backend)
    weights, volume = _window_weights(kernel_size, kernel_type, pred.dim() - 2)
    kernel = constant(weights, pred.dtype, pred.device)  # cached on the device: no host copy per call
    floor, eps = (float(smooth_dr), 0.0) if convention == "monai" else (0.0, float(smooth_dr))
    return LocalNCCFunction.apply(pred, target, kernel, weight, volume, float(smooth_nr), floor, eps, reduction,
                                   impl)
