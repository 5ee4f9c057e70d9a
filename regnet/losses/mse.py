"""Mean squared error, optionally restricted to (or weighted by) a mask."""

from __future__ import annotations

import torch

from regnet import _checks
from regnet.losses._reduce import check_reduction, reduce


def mse(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Squared error ``(pred - target)^2`` of two images ``(B, C, *spatial)``, reduced.

    Without a mask this equals ``torch.nn.functional.mse_loss(pred, target, reduction=...)``.

    With a mask ``(B or 1, C or 1, *spatial)`` (bool, 0/1 or soft non-negative weights,
    broadcast over the batch and channels of ``pred``), ``err = mask * (pred - target)^2`` and

    - ``"mean"``: ``sum(err) / sum(mask broadcast to pred's shape)``: the mean over the masked
      voxels (the weighted mean for soft weights). An all-zero mask gives ``0`` (not NaN), with
      a zero gradient.
    - ``"sum"``: ``sum(err)``.
    - ``"none"``: ``err``, shaped like ``pred``.

    Args:
        pred, target: tensors of one shape ``(B, C, *spatial)`` (any number of dimensions >= 2),
            floating, on one device. No broadcasting between them.
        mask: optional mask as above, on the same device.
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
    err = (pred - target) ** 2
    weight = _mask(fn, mask, pred)
    err = err * weight
    if reduction != "mean":
        return reduce(err, reduction)
    count = weight.sum() * (err.numel() // weight.numel())
    # An all-zero mask gives 0 / 1 = 0: no NaN in the value or in the gradient.
    return err.sum() / torch.where(count > 0, count, torch.ones_like(count))


def _mask(fn: str, mask, pred: torch.Tensor) -> torch.Tensor:
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{fn}: mask must be a torch.Tensor or None, got {type(mask).__name__}")
    if pred.dim() < 2:
        raise ValueError(f"{fn}: a mask needs pred of shape (B, C, *spatial), got shape {tuple(pred.shape)}")
    spatial = ", ".join(map(str, pred.shape[2:]))
    expected = f"(B or 1, C or 1, *spatial) = ({pred.shape[0]} or 1, {pred.shape[1]} or 1, {spatial})"
    if (
        mask.dim() != pred.dim()
        or mask.shape[0] not in (1, pred.shape[0])
        or mask.shape[1] not in (1, pred.shape[1])
        or mask.shape[2:] != pred.shape[2:]
    ):
        raise ValueError(f"{fn}: mask must have shape {expected}, got {tuple(mask.shape)}")
    if mask.device != pred.device:
        raise ValueError(f"{fn}: mask is on {mask.device} but pred is on {pred.device}; move both to one device")
    if mask.is_complex():
        raise TypeError(f"{fn}: mask must be bool, integer or floating, got {mask.dtype}")
    return mask.to(pred.dtype)


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
