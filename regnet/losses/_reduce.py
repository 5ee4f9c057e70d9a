"""Reduction of per-voxel or per-item loss values, as ``torch.nn`` losses do, and the masked mean."""

from __future__ import annotations

import torch

REDUCTIONS = ("mean", "sum", "none")


def check_reduction(fn: str, reduction: str) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(f"{fn}: reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return reduction


def reduce(values: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return values.mean()
    if reduction == "sum":
        return values.sum()
    return values


def mask_total(weight: torch.Tensor, numel: int) -> torch.Tensor:
    """The sum of a mask ``(B or 1, C or 1, *spatial)`` broadcast to an input of ``numel``
    elements (0-d, float32 at least, so that a half-precision count cannot overflow)."""
    dtype = torch.promote_types(weight.dtype, torch.float32)
    return weight.sum(dtype=dtype) * (numel // max(weight.numel(), 1))


def masked_mean(total: torch.Tensor, weight: torch.Tensor, numel: int) -> torch.Tensor:
    """``total / mask_total(weight, numel)``: the (weighted) mean over the masked voxels of a
    masked sum. An all-zero mask gives ``total / 1`` (0 for a masked sum): no NaN in the value
    or in the gradient."""
    count = mask_total(weight, numel)
    count = torch.where(count > 0, count, torch.ones_like(count))
    return (total.to(count.dtype) / count).to(total.dtype)


def masked_item_means(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-item masked means ``(B,)`` of a masked loss's ``reduction="none"`` values ``(B, C,
    *spatial)`` (already multiplied by ``mask``, as :func:`regnet.losses.functional.mse` and
    :func:`regnet.losses.functional.local_ncc_loss` return them): for item ``b``,
    ``sum(values[b]) / sum(mask broadcast to values[b])`` (0 for an item with an all-zero mask).
    The per-item counterpart of ``reduction="mean"`` (equal to its mean over the items when every
    item's mask has the same total, e.g. one mask for the whole batch)."""
    batch = values.shape[0]
    dtype = torch.promote_types(values.dtype, torch.float32)
    sums = values.reshape(batch, -1).sum(1, dtype=dtype)
    per_mask = mask.reshape(mask.shape[0], -1).sum(1, dtype=dtype) * (values[0].numel() // max(mask[0].numel(), 1))
    counts = per_mask.expand(batch)
    counts = torch.where(counts > 0, counts, torch.ones_like(counts))
    return (sums / counts).to(values.dtype)
