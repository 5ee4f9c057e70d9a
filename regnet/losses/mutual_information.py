"""Global mutual information (Parzen windows), memory-lean counterpart of MONAI's loss."""

from __future__ import annotations

import math

import torch

from regnet import _checks, ops
from regnet.losses._reduce import check_reduction, reduce
from regnet.ops.joint_histogram import check_options


def _check_smoothing(fn: str, smooth_nr, smooth_dr) -> None:
    for name, value in (("smooth_nr", smooth_nr), ("smooth_dr", smooth_dr)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (value >= 0 and math.isfinite(value)):
            raise ValueError(f"{fn}: {name} must be a finite number >= 0, got {value!r}")


def global_mutual_information(
    pred: torch.Tensor,
    target: torch.Tensor,
    num_bins: int = 32,
    kernel: str = "gaussian",
    sigma_ratio: float = 0.5,
    smooth_nr: float = 1e-7,
    smooth_dr: float = 1e-7,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mutual information of the intensities of ``pred`` and ``target``, per batch item.

    ``pab = ops.joint_histogram(pred, target, num_bins, kernel, sigma_ratio)``, marginals
    ``pa = pab.sum(2)``, ``pb = pab.sum(1)`` (MONAI's ``pa``/``pb``, since every sample's
    weights sum to 1), and MONAI's formula::

        MI = sum_ab pab * log((pab + smooth_nr) / (pa pb + smooth_dr) + smooth_dr)

    in nats. See :func:`regnet.ops.joint_histogram` for the kernels (``"gaussian"`` expects
    intensities in ``[0, 1]``; ``"b-spline"`` takes any range, with bins placed per batch
    item).

    Args:
        pred, target: ``(B, C, *spatial)`` images, same shape; channels and voxels of an
            item are its samples.
        mask: optional ``(B or 1, C or 1, *spatial)`` (bool, 0/1 or soft weights ``>= 0``,
            broadcast over the batch and channels; :func:`regnet.losses.functional.mse`'s
            convention) restricting MI to a region (ANTs' ``-x``): the joint histogram counts
            each voxel with its mask value and is normalised by the item's total (a 0/1 mask
            gives exactly the MI of the voxels inside; the B-spline bins are placed from their
            min / max). An item whose mask is all zero scores 0 with a zero gradient (never
            NaN). No gradient flows to the mask.

    Returns:
        ``(B,)`` mutual information, ``>= 0`` up to the smoothing terms.
    """
    fn = "global_mutual_information"
    _check_smoothing(fn, smooth_nr, smooth_dr)
    weight = None
    if mask is not None:
        _checks.tensor(fn, "pred", pred, ndims=(3, 4, 5))
        weight = _checks.mask(fn, "mask", mask, pred)
    pab = ops.joint_histogram(pred, target, num_bins, kernel, sigma_ratio, weight=weight)
    pa = pab.sum(2, keepdim=True)  # (B, bins, 1)
    pb = pab.sum(1, keepdim=True)  # (B, 1, bins)
    ratio = (pab + smooth_nr) / (pa * pb + smooth_dr)
    return (pab * torch.log(ratio + smooth_dr)).sum(dim=(1, 2))


class GlobalMILoss(torch.nn.Module):
    """Negative global mutual information, MONAI's ``GlobalMutualInformationLoss``.

    ``forward(pred, target, mask=None)`` returns ``-MI`` reduced over the batch (``"mean"``,
    ``"sum"`` or ``"none"`` for ``(B,)``; with a mask, each item's MI of its masked voxels); see
    :func:`global_mutual_information`. Equal to MONAI's
    loss with the same ``num_bins``, ``kernel`` (MONAI's ``kernel_type``) and
    ``sigma_ratio``, values and gradients, except that the b-spline bins are placed per
    batch item (MONAI: over the whole batch). The joint histogram is accumulated in chunks,
    so memory stays ``O(B * num_bins^2)`` beyond the images instead of MONAI's
    ``(B, voxels, num_bins)`` weight tensors. Holds only configuration.
    """

    def __init__(
        self,
        num_bins: int = 32,
        kernel: str = "gaussian",
        sigma_ratio: float = 0.5,
        reduction: str = "mean",
        smooth_nr: float = 1e-7,
        smooth_dr: float = 1e-7,
    ) -> None:
        super().__init__()
        check_reduction("GlobalMILoss", reduction)
        _check_smoothing("GlobalMILoss", smooth_nr, smooth_dr)
        check_options("GlobalMILoss", num_bins, kernel, sigma_ratio)
        self.num_bins = num_bins
        self.kernel = kernel
        self.sigma_ratio = sigma_ratio
        self.reduction = reduction
        self.smooth_nr = smooth_nr
        self.smooth_dr = smooth_dr

    def forward(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        mi = global_mutual_information(
            pred, target, self.num_bins, self.kernel, self.sigma_ratio, self.smooth_nr, self.smooth_dr, mask
        )
        return reduce(mi, self.reduction).neg()

    def extra_repr(self) -> str:
        return f"num_bins={self.num_bins}, kernel={self.kernel!r}, sigma_ratio={self.sigma_ratio}"
