"""Normalised gradient descent for displacement and velocity fields (ANTs' gradient step).

Adam normalises every element of the gradient by its own running magnitude, so at the first
steps every voxel of a field moves by about the step size, whatever its gradient, even where
the gradient is noise: the fields come out rough. ANTs' SyN instead scales the whole update
so that its largest displacement equals the gradient step: the update keeps the gradient's
spatial shape (smooth, where the similarity says so) and only its overall size is fixed.
:class:`NormalisedDescent` does that per batch item, with a robust norm (a high quantile of
the per-voxel vector length instead of the maximum, so one outlier voxel does not shrink every
step):

    p <- p - lr * g / q(|g|),   q = the ``quantile`` of ``|g(x)|`` over the voxels of the item

``|g(x)|`` is the length over the channels (the ``ndim`` components of a field). One step moves
the parameters by at most about ``lr`` (in their own units, e.g. voxels of the velocity grid)
at the ``quantile``'s voxels. No state, no host synchronisation (CUDA-graph capturable). On the
brain pairs it halves the roughness of SyN's fields (SDlogJ) for the same accuracy
(``docs/registration.md``).

Example::

    >>> v = torch.nn.Parameter(torch.zeros(1, 3, 8, 8, 8))
    >>> step = NormalisedDescent([v], lr=0.5)
    >>> v.grad = torch.randn_like(v); step.step()
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from regnet import _checks


def zero_grads(params: Iterable[torch.Tensor], set_to_none: bool = True) -> None:
    """``optimizer.zero_grad`` of regnet's own optimisers: drop (or zero) every ``.grad``."""
    for p in params:
        if set_to_none:
            p.grad = None
        elif p.grad is not None:
            p.grad.zero_()


class NormalisedDescent:
    """Gradient descent with steps normalised per batch item (see the module docstring).

    Args:
        params: tensors ``(B, C, *spatial)`` (fields: ``C = ndim``), each with ``.grad`` set
            before :meth:`step` (a parameter without a gradient is skipped).
        lr: the step: the displacement of the voxels at the ``quantile`` of the gradient's
            length (> 0).
        quantile: in ``(0, 1]``; 1 normalises by the largest vector (ANTs exactly).

    Interface of the registrations' optimisers: ``step()``, ``zero_grad(set_to_none=True)``,
    ``param_groups``.
    """

    def __init__(self, params: Iterable[torch.Tensor], lr: float, quantile: float = 0.99) -> None:
        fn = "NormalisedDescent"
        self.params = list(params)
        if not self.params:
            raise ValueError(f"{fn}: params must hold at least one tensor, got none")
        for p in self.params:
            if not isinstance(p, torch.Tensor) or not p.is_floating_point() or p.dim() < 2:
                raise TypeError(f"{fn}: params must be floating tensors (B, C, ...), got "
                                f"{getattr(p, 'dtype', type(p).__name__)} of shape {tuple(getattr(p, 'shape', ()))}")
        _checks.number(fn, "lr", lr, low=0.0, low_open=True)
        self.quantile = _checks.number(fn, "quantile", quantile, low=0.0, low_open=True, high=1.0)
        self.param_groups = [{"params": self.params, "lr": float(lr)}]
        self.state: dict = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        zero_grads(self.params, set_to_none)

    @torch.no_grad()
    def step(self) -> None:
        lr = self.param_groups[0]["lr"]
        for p in self.params:
            if p.grad is not None:
                p.addcmul_(p.grad, self.scale(p.grad).reciprocal_(), value=-lr)

    def scale(self, grad: torch.Tensor) -> torch.Tensor:
        """``q(|g|)`` per batch item, shaped to broadcast over ``grad`` (never below 1e-12)."""
        squared = grad[:, 0].square()  # |g(x)|^2 over the channels (torch's norm(dim=1) is slow on the CPU)
        for channel in range(1, grad.shape[1]):
            squared.addcmul_(grad[:, channel], grad[:, channel])
        squared = squared.reshape(grad.shape[0], -1)
        if self.quantile >= 1:
            q = squared.amax(dim=1)
        else:
            rank = max(1, round((1 - self.quantile) * squared.shape[1]))
            q = squared.topk(rank, dim=1, sorted=False).values.amin(dim=1)
        return q.sqrt().clamp_min(1e-12).view(-1, *[1] * (grad.dim() - 1))
