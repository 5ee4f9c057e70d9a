"""Local normalised cross-correlation loss (MONAI's or torchreg's convention)."""

from __future__ import annotations

import torch

from regnet import _checks, ops
from regnet.losses._reduce import check_reduction, masked_mean

# (smooth_nr, smooth_dr) defaults of each convention's reference implementation.
_DEFAULT_SMOOTHING = {"monai": (0.0, 1e-5), "torchreg": (1e-5, 1e-5)}


def local_ncc_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    kernel_size: int = 7,
    kernel_type: str = "rectangular",
    reduction: str = "mean",
    smooth_nr: float | None = None,
    smooth_dr: float | None = None,
    convention: str = "monai",
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Negative local squared NCC of ``pred`` and ``target`` ``(B, C, *spatial)``, optionally masked.

    ``-ops.local_ncc(..., reduction=reduction)``: about -1 for locally linearly related
    images, 0 for unrelated ones. ``convention="monai"`` equals MONAI's
    ``LocalNormalizedCrossCorrelationLoss`` (smoothing defaults ``0, 1e-5``);
    ``convention="torchreg"`` equals torchreg's ``NCC`` (defaults ``1e-5, 1e-5``).
    ``reduction``: ``"mean"``, ``"sum"`` or ``"none"`` (the negated map). The op reduces
    itself (on the Triton backend no map is written and backward reads a scalar gradient).

    ``mask``: optional ``(B or 1, C or 1, *spatial)`` (bool, 0/1 or soft weights ``>= 0``,
    broadcast over the batch and channels; :func:`regnet.losses.functional.mse`'s convention)
    restricting the similarity to a region (ANTs' ``-x``). The windowed sums still see every
    voxel (as ANTs' CC near a mask edge); each voxel's local NCC counts with its mask value:
    ``"mean"`` is ``-sum(mask * map) / sum(mask broadcast to pred's shape)`` (the weighted mean
    over the masked voxels; an all-zero mask gives 0 with a zero gradient, never NaN),
    ``"sum"`` ``-sum(mask * map)``, ``"none"`` ``-mask * map``. The op applies the mask as its
    ``weight`` (fused on the Triton backend: still no map written, the kernels' backward scales
    the gradient per voxel). No gradient flows to the mask.
    """
    check_reduction("local_ncc_loss", reduction)
    if convention not in _DEFAULT_SMOOTHING:
        raise ValueError(f"local_ncc_loss: convention must be one of {tuple(_DEFAULT_SMOOTHING)}, got {convention!r}")
    nr, dr = _DEFAULT_SMOOTHING[convention]
    nr = nr if smooth_nr is None else smooth_nr
    dr = dr if smooth_dr is None else smooth_dr
    if mask is None:
        return ops.local_ncc(pred, target, kernel_size, kernel_type, nr, dr, convention, reduction=reduction).neg()
    _checks.tensor("local_ncc_loss", "pred", pred, ndims=(3, 4, 5))
    weight = _checks.mask("local_ncc_loss", "mask", mask, pred)
    op_reduction = "sum" if reduction == "mean" else reduction
    value = ops.local_ncc(pred, target, kernel_size, kernel_type, nr, dr, convention, reduction=op_reduction,
                          weight=weight)
    if reduction == "mean":
        value = masked_mean(value, weight, pred.numel())
    return value.neg()


class LocalNCCLoss(torch.nn.Module):
    """Local NCC loss as an ``nn.Module``; ``forward(pred, target, mask=None)``, see
    :func:`local_ncc_loss` for the arguments.

    Local sums are separable windowed sums; the custom backward keeps only the two input
    images (MONAI's autograd keeps about a dozen full-size temporaries).
    """

    def __init__(
        self,
        kernel_size: int = 7,
        kernel_type: str = "rectangular",
        reduction: str = "mean",
        smooth_nr: float | None = None,
        smooth_dr: float | None = None,
        convention: str = "monai",
    ) -> None:
        super().__init__()
        check_reduction("LocalNCCLoss", reduction)
        self.kernel_size = kernel_size
        self.kernel_type = kernel_type
        self.reduction = reduction
        self.smooth_nr = smooth_nr
        self.smooth_dr = smooth_dr
        self.convention = convention

    def forward(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return local_ncc_loss(
            pred, target, self.kernel_size, self.kernel_type, self.reduction,
            self.smooth_nr, self.smooth_dr, self.convention, mask,
        )

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, kernel_type={self.kernel_type!r}, convention={self.convention!r}"
