"""Argument checks shared by the metrics: label maps, masks, label lists, voxel spacing."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from regnet import _checks


def as_label_map(fn: str, name: str, x) -> torch.Tensor:
    """A label map ``(B, 1, *spatial)`` or ``(*spatial)`` (2D or 3D) as a ``(B, *spatial)`` integer tensor.

    Integer and bool tensors are taken as they are; float tensors must hold whole numbers.
    """
    _checks.tensor(fn, name, x, floating=False)
    if x.dim() in (2, 3):
        x = x[None]
    elif x.dim() in (4, 5):
        if x.shape[1] != 1:
            raise ValueError(f"{fn}: {name} must have shape (B, 1, *spatial) or (*spatial), got {tuple(x.shape)}")
        x = x[:, 0]
    else:
        raise ValueError(f"{fn}: {name} must have shape (B, 1, H, W[, D]) or (H, W[, D]), got {tuple(x.shape)}")
    if x.is_complex():
        raise TypeError(f"{fn}: {name} must be an integer label map, got {x.dtype}")
    if x.is_floating_point():
        if not torch.equal(x, torch.round(x)):
            raise ValueError(f"{fn}: {name} is a float tensor with non-integer values; label maps hold whole numbers")
        x = x.long()
    elif x.dtype == torch.bool:
        x = x.long()
    return x


def label_maps(fn: str, pred, target) -> tuple[torch.Tensor, torch.Tensor]:
    """Both label maps as ``(B, *spatial)`` integer tensors of one shape, on one device."""
    pred = as_label_map(fn, "pred_labels", pred)
    target = as_label_map(fn, "target_labels", target)
    if pred.shape != target.shape:
        raise ValueError(
            f"{fn}: pred_labels and target_labels must have the same shape, "
            f"got {tuple(pred.shape)} and {tuple(target.shape)} (as (B, *spatial))"
        )
    if pred.device != target.device:
        raise ValueError(
            f"{fn}: target_labels is on {target.device} but pred_labels is on {pred.device}; move both to one device"
        )
    return pred, target


def field_mask(fn: str, mask, ddf: torch.Tensor) -> torch.Tensor | None:
    """``mask`` (``None``, ``(*spatial)`` or ``(B or 1, 1, *spatial)``, non-zero = inside) as a bool
    tensor ``(B or 1, 1, *spatial)`` on ``ddf``'s device, matching ``ddf (B, ndim, *spatial)``."""
    if mask is None:
        return None
    spatial = tuple(ddf.shape[2:])
    m = as_label_map(fn, "mask", mask)  # (B', *spatial): whole numbers, any integer / bool dtype
    if tuple(m.shape[1:]) != spatial or m.shape[0] not in (1, ddf.shape[0]):
        raise ValueError(
            f"{fn}: mask must have shape {spatial} or ({ddf.shape[0]} or 1, 1, *{spatial}) to match ddf "
            f"{tuple(ddf.shape)}, got {tuple(mask.shape)}"
        )
    return (m != 0)[:, None].to(ddf.device)


def labels(fn: str, labels, pred: torch.Tensor, target: torch.Tensor) -> list[int]:
    """The labels to evaluate: ``labels`` checked, or every non-zero value present in either map."""
    if labels is None:
        values = torch.unique(torch.cat([pred.flatten(), target.flatten()])).tolist()
        return [int(v) for v in values if v != 0]
    if isinstance(labels, torch.Tensor):
        labels = labels.tolist()
    if isinstance(labels, (str, bytes)) or not isinstance(labels, Sequence):
        raise TypeError(f"{fn}: labels must be a sequence of ints or None, got {type(labels).__name__}")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in labels):
        raise ValueError(f"{fn}: labels must be ints, got {labels!r}")
    if len(set(labels)) != len(labels):
        raise ValueError(f"{fn}: labels must not repeat a value, got {labels!r}")
    return list(labels)


def spacing(fn: str, spacing, ndim: int) -> list[float]:
    """Voxel size per spatial axis: ``None`` (1), a number (isotropic) or ``ndim`` positive numbers."""
    if spacing is None:
        return [1.0] * ndim
    if isinstance(spacing, (int, float)) and not isinstance(spacing, bool):
        spacing = [float(spacing)] * ndim
    if isinstance(spacing, torch.Tensor):
        spacing = spacing.tolist()
    try:
        spacing = [float(s) for s in spacing]
    except (TypeError, ValueError):
        raise TypeError(f"{fn}: spacing must be None, a number or {ndim} numbers, got {spacing!r}") from None
    if len(spacing) != ndim or not all(s > 0 and math.isfinite(s) for s in spacing):
        raise ValueError(f"{fn}: spacing must be {ndim} positive numbers (one per spatial axis), got {spacing!r}")
    return spacing
