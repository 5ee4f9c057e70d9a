"""``joint_histogram``: Parzen-window joint intensity distribution of two images."""

from __future__ import annotations

import functools
import math

import torch
from torch.autograd.function import once_differentiable

from regnet import _checks
from regnet.ops._backend import select

KERNELS = ("gaussian", "b-spline")


@functools.lru_cache(maxsize=64)
def gaussian_preterm(num_bins: int, sigma_ratio: float) -> float:
    """``1 / (2 sigma^2)`` with ``sigma = mean bin spacing * sigma_ratio``, in float32 as MONAI
    (computed on the CPU once per setting)."""
    centres = torch.linspace(0.0, 1.0, num_bins)
    sigma = torch.mean(centres[1:] - centres[:-1]) * sigma_ratio
    return float(1 / (2 * sigma**2))


def check_options(fn: str, num_bins, kernel, sigma_ratio) -> None:
    """Check the histogram options (shared with the losses that build on this op)."""
    _checks.choice(fn, "kernel", kernel, KERNELS)
    smallest = 5 if kernel == "b-spline" else 2
    if isinstance(num_bins, bool) or not isinstance(num_bins, int) or num_bins < smallest:
        raise ValueError(f"{fn}: num_bins must be an int >= {smallest} for kernel={kernel!r}, got {num_bins!r}")
    if isinstance(sigma_ratio, bool) or not isinstance(sigma_ratio, (int, float)) or not (
        sigma_ratio > 0 and math.isfinite(sigma_ratio)
    ):
        raise ValueError(f"{fn}: sigma_ratio must be a finite number > 0, got {sigma_ratio!r}")


class JointHistogramFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pred, target, weight, num_bins, kernel, preterm, impl):
        ctx.save_for_backward(pred, target, *(() if weight is None else (weight,)))
        ctx.options = (num_bins, kernel, preterm)
        ctx.impl = impl
        if weight is None:
            return impl.joint_histogram_forward(pred, target, num_bins, kernel, preterm)
        return impl.joint_histogram_forward(pred, target, num_bins, kernel, preterm, weight)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        pred, target, *weight = ctx.saved_tensors
        grad_pred, grad_target = ctx.impl.joint_histogram_backward(
            grad, pred, target, *ctx.options, *ctx.needs_input_grad[:2], *weight
        )
        return grad_pred, grad_target, None, None, None, None, None


def joint_histogram(
    pred: torch.Tensor,
    target: torch.Tensor,
    num_bins: int = 32,
    kernel: str = "gaussian",
    sigma_ratio: float = 0.5,
    *,
    weight: torch.Tensor | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """Parzen-window joint probability of the intensities of ``pred`` and ``target``.

    Each batch item is one registration pair; its channels and voxels are its ``N``
    samples (MONAI's reshape to ``(B, -1)``). Sample ``i`` spreads over the bins with
    weights ``wa_i`` (pred) and ``wb_i`` (target), each normalised to sum to 1, and
    ``pab = sum_i wa_i^T wb_i / N``, exactly the ``pab`` of MONAI's
    ``GlobalMutualInformationLoss``. Its marginals ``pab.sum(2)`` and ``pab.sum(1)`` are
    MONAI's ``pa`` and ``pb``.

    Kernels:

    - ``"gaussian"`` (DeepReg): intensities clamped to ``[0, 1]``; bin centres
      ``linspace(0, 1, num_bins)``; ``sigma = mean bin spacing * sigma_ratio``; weights
      ``exp(-(x - c)^2 / (2 sigma^2))``. Rescale images to ``[0, 1]`` first.
    - ``"b-spline"`` (Mattes / ITK): bins span the image's min..max with 2 padding bins at
      each end; pred uses a cubic B-spline window, target a box (order 0) window, so the
      gradient w.r.t. ``target`` is zero. Works on any intensity range and is invariant
      to intensity offsets. ``sigma_ratio`` is unused.

    Deviations from MONAI (b-spline only): the min and max that place the bins are taken
    per batch item, not over the whole batch (the items are independent pairs); with
    ``B = 1`` both agree, values and gradients (which flow through the min and max and are
    split evenly among tied extremes, as ``torch.min()`` / ``torch.max()`` do). A
    constant image, where MONAI divides by a zero bin size and returns NaN, puts all its
    samples in the first unpadded bin and gets a zero gradient.

    Numerics (same function, different rounding): the b-spline position is computed as
    ``(x - min) / bin_size + 2`` (MONAI: ``x / bin_size - (min / bin_size - 2)``), which
    keeps large intensity offsets from costing float32 digits; the gaussian exponents are
    shifted by the nearest centre's before ``exp``, so a small ``sigma_ratio`` cannot
    underflow every weight to 0 (MONAI then returns NaN); in float64 the b-spline target
    weights stay float64 (MONAI forms them in float32).

    Weighted samples (``weight=``, a mask restricting MI to a region, ANTs' ``-x``): sample ``i``
    counts with its weight ``v_i >= 0`` and ``pab = sum_i v_i wa_i^T wb_i / sum_i v_i`` per item,
    so a 0/1 weight gives exactly the histogram of the voxels where it is 1. The B-spline bins
    are placed from the min / max of the voxels of weight ``> 0`` (ties and gradients through
    them as above, among those voxels). An item whose weights are all zero gets an all-zero
    histogram (not NaN) and zero gradients. ``weight=None`` gives the unweighted numbers bit for
    bit.

    Memory: ``(B, N, num_bins)`` weights are never formed; the samples are accumulated in
    chunks and the backward pass recomputes the weights chunk by chunk. Only ``pred`` and
    ``target`` are saved for backward.

    Args:
        pred, target: ``(B, C, *spatial)`` with 1, 2 or 3 spatial axes, same shape,
            device and floating dtype (half precision is accumulated in float32).
        num_bins: number of bins per image, ``>= 2`` (``>= 5`` for ``"b-spline"``).
        kernel: ``"gaussian"`` or ``"b-spline"``.
        sigma_ratio: gaussian width in bin spacings, ``> 0``.
        weight: optional per-voxel sample weights ``(B or 1, C or 1, *spatial)`` in ``pred``'s
            dtype and device (broadcast over the batch and channels), values finite and
            ``>= 0`` (not checked here: that would synchronise the device; the losses check
            their masks). Not differentiated.
        backend: ``"auto"``, ``"torch"`` or ``"triton"``; see :func:`regnet.set_backend`.

    Returns:
        ``(B, num_bins, num_bins)`` joint probabilities (each item sums to 1, or to 0 for an
        item whose weights are all zero), row index
        the pred bin, column index the target bin; dtype of ``pred``.
    """
    fn = "joint_histogram"
    _checks.tensor(fn, "pred", pred, ndims=(3, 4, 5))
    _checks.tensor(fn, "target", target)
    if target.shape != pred.shape:
        raise ValueError(f"{fn}: target must have the shape of pred {tuple(pred.shape)}, got {tuple(target.shape)}")
    _checks.same_device_dtype(fn, pred=pred, target=target)
    if pred.numel() == 0:
        raise ValueError(f"{fn}: pred must have at least one sample per batch item, got shape {tuple(pred.shape)}")
    check_options(fn, num_bins, kernel, sigma_ratio)
    if weight is not None:
        _checks.voxel_weight(fn, "weight", weight, pred)
    impl = select("joint_histogram", pred.device, backend)
    preterm = gaussian_preterm(num_bins, float(sigma_ratio)) if kernel == "gaussian" else 0.0
    return JointHistogramFunction.apply(pred, target, weight, num_bins, kernel, preterm, impl)
