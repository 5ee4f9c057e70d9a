"""Mean squared error, optionally restricted to (or weighted by) a mask."""

from __future__ import annotations

import torch

from regnet import _checks
from regnet.losses._reduce import check_reduction, masked_mean, reduce


def mse(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Squared error ``(pred - target)^2`` of two images ``(B, C, *spatial)``, reduced.

    Without a mask this equals ``torch.nn.functional.mse_loss(pred, target, reduction=...)``.

    With a mask ``(B or 1, C or 1, *spatial)`` (bool, 0/1 or soft non-negative weights,
    broadcast over the batch and channels of ``pred``; the convention of every masked loss, see
    ``docs/conventions.md``), ``err = mask * (pred - target)^2`` and

    - ``"mean"``: ``sum(err) / sum(mask broadcast to pred's shape)``: the mean over the masked
      voxels (the weighted mean for soft weights). An all-zero mask gives ``0`` (not NaN), with
      a zero gradient.
    - ``"sum"``: ``sum(err)``.
    - ``"none"``: ``err``, shaped like ``pred``.

    Args:
        pred, target: tensors of one shape ``(B, C, *spatial)`` (any number of dimensions >= 2),
            floating, on one device. No broadcasting between them.
        mask: optional mask as above, on the same device; finite values ``>= 0`` (checked once
            per mask tensor). A constant: no gradient flows to it (e.g. through a moving mask
            warped by the field being optimised), as ANTs treats its masks.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
    """
    fn = "mse"
    _checks.tensor(fn, "pred", pred)
    _checks.tensor(fn, "target", target)
    check_reduction(fn, reduction)
    if pred.shape != target.shape:
        raise ValueError(
            f"{fn}: pred and target must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}"
        )
    _checks.same_device_dtype(fn, pred=pred, target=target)
    if mask is None:  # ATen's fused op: one autograd node (the affine loop's hot path)
        return torch.nn.functional.mse_loss(pred, target, reduction=reduction)
    weight = _checks.mask(fn, "mask", mask, pred)
    err = (pred - target) ** 2 * weight
    if reduction != "mean":
        return reduce(err, reduction)
    return masked_mean(err.sum(), weight, err.numel())


class MSELoss(torch.nn.Module):
    """Mean squared error as a module; ``forward(pred, target, mask=None)``, see :func:`mse`.

    Without a mask equal to ``torch.nn.MSELoss(reduction=...)``.
    """

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        check_reduction("MSELoss", reduction)
        self.reduction = reduction

    def forward(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return mse(pred, target, mask, self.reduction)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"
