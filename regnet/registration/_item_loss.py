"""Per-item losses of a batch of registrations, so that early stopping and the choice among
starting candidates judge each pair on its own.

Example::

    >>> loss = ItemLoss(MSELoss(), batch=2)
    >>> total, items = loss(moved, static)      # 0-d mean, and (2,) per pair
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch

from regnet.losses._reduce import masked_item_means


class ItemLoss:
    """``loss(moved, static) -> (total, per_item or None)`` for a batch of ``batch`` pairs.

    Per-item losses ``(B,)`` come from ``fn`` evaluated with ``reduction="none"`` when it is an
    ``nn.Module`` with a ``reduction`` of ``"mean"`` or ``"sum"`` (regnet's and ``torch.nn``'s
    losses), or from a callable that returns ``(B,)``; a callable that returns a scalar is used
    as it is (per-item values are then ``None``)."""

    def __init__(self, fn: Callable, batch: int):
        self.fn = fn
        self.batch = batch
        self.items_fn = None
        self.reduction = None
        reduction = getattr(fn, "reduction", None)
        if batch > 1 and isinstance(fn, torch.nn.Module) and reduction in ("mean", "sum"):
            self.items_fn = copy.copy(fn)
            self.items_fn.reduction = "none"
            self.reduction = reduction

    def __call__(self, moved, static, mask: torch.Tensor | None = None):
        if self.items_fn is not None:
            values = similarity(self.items_fn, moved, static, mask)
            if isinstance(values, torch.Tensor) and values.dim() >= 1 and values.shape[0] == self.batch:
                if values.dim() == 1:  # already per item (MI)
                    items = values
                elif mask is not None and self.reduction == "mean":
                    items = masked_item_means(values, mask)  # values are mask * per-voxel losses
                else:
                    items = values.reshape(self.batch, -1)
                    items = items.mean(1) if self.reduction == "mean" else items.sum(1)
                return (items.mean() if self.reduction == "mean" else items.sum()), items
            self.items_fn = None  # not a per-element loss after all: use the function as it is
        value = similarity(self.fn, moved, static, mask)
        per_item_ok = isinstance(value, torch.Tensor) and (value.dim() == 0 or tuple(value.shape) == (self.batch,))
        if not per_item_ok:
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(f"AffineRegistration: dissimilarity_function must return a scalar tensor or per-item "
                             f"losses of shape ({self.batch},), got {got}")
        if value.dim() == 1:
            return value.mean(), value
        return value, None

    def combine(self, items: torch.Tensor) -> torch.Tensor:
        """The total loss from per-item losses ``(..., B)``, as the function reduces them."""
        return items.sum(-1) if self.reduction == "sum" else items.mean(-1)

    def per_item(self, moved, static, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Per-item losses ``(B,)``, item by item when the function gives only a total."""
        _, items = self(moved, static, mask)
        if items is None:
            items = torch.stack([
                similarity(self.fn, moved[b:b + 1], static[b:b + 1],
                           None if mask is None else mask[b:b + 1] if mask.shape[0] > 1 else mask).reshape(())
                for b in range(self.batch)])
        return items.detach()


def similarity(fn: Callable, moved: torch.Tensor, static: torch.Tensor, mask: torch.Tensor | None):
    """``fn(moved, static)``, or ``fn(moved, static, mask=mask)`` with a mask (a clear error when
    ``fn`` takes no ``mask``: regnet's losses do)."""
    if mask is None:
        return fn(moved, static)
    try:
        return fn(moved, static, mask=mask)
    except TypeError as error:
        if "mask" not in str(error):
            raise
        raise TypeError(f"dissimilarity_function {fn!r} does not take mask=: masks need a loss that does "
                        f"(regnet's MSELoss, LocalNCCLoss, GlobalMILoss)") from None
