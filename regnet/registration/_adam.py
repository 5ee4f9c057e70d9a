"""Adam and AdamW for the registration loops, on torch's fused kernel, without ``torch.optim``.

``torch.optim.Optimizer.__init__`` imports ``torch._dynamo`` (1-10 s on a first call, paid by
every registration process); :class:`FusedAdam` calls the same ATen kernels as
``torch.optim.Adam(fused=True)`` / ``AdamW(fused=True)`` (``torch._fused_adam_`` /
``torch._fused_adamw_``, CPU and CUDA) with the same state, so its steps are those of torch's
fused optimiser bit for bit, and it imports nothing. The step counts live on the parameters'
device, so a step can be captured in a CUDA graph (:mod:`regnet.registration._graph`).

Example::

    >>> p = torch.nn.Parameter(torch.zeros(3))
    >>> adam = FusedAdam([p], lr=0.1)
    >>> p.grad = torch.ones(3); adam.step(); p
    Parameter containing:
    tensor([-0.1000, -0.1000, -0.1000], requires_grad=True)
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from regnet import _checks
from regnet.registration.descent import zero_grads


class FusedAdam:
    """Adam (``decoupled=False``) or AdamW (``decoupled=True``) over one group of parameters.

    Args:
        params: floating tensors on one device type (CPU or CUDA), each with ``.grad`` set
            before :meth:`step` (a parameter without a gradient is skipped, as torch does).
        lr: step size (> 0).
        betas, eps, weight_decay: as ``torch.optim.Adam`` / ``AdamW`` (their defaults:
            ``weight_decay`` 0 for Adam, 0.01 for AdamW).
        decoupled: AdamW's decoupled weight decay.

    The interface the registrations use: ``step()``, ``zero_grad(set_to_none=True)``,
    ``param_groups`` (one group) and ``state`` (per parameter: ``step``, ``exp_avg``,
    ``exp_avg_sq``, as torch names them).
    """

    def __init__(self, params: Iterable[torch.Tensor], lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float | None = None, decoupled: bool = False) -> None:
        fn = "FusedAdam"
        params = list(params)
        if not params:
            raise ValueError(f"{fn}: params must hold at least one tensor, got none")
        for p in params:
            if not isinstance(p, torch.Tensor) or not p.is_floating_point() or p.device.type not in ("cpu", "cuda"):
                raise TypeError(f"{fn}: params must be floating tensors on the CPU or CUDA, got "
                                f"{getattr(p, 'dtype', type(p).__name__)} on {getattr(p, 'device', '?')}")
        _checks.number(fn, "lr", lr, low=0.0, low_open=True)
        _checks.number(fn, "eps", eps, low=0.0)
        if weight_decay is None:
            weight_decay = 1e-2 if decoupled else 0.0
        _checks.number(fn, "weight_decay", weight_decay, low=0.0)
        self.param_groups = [{"params": params, "lr": float(lr), "betas": tuple(betas), "eps": float(eps),
                              "weight_decay": float(weight_decay)}]
        self.decoupled = bool(decoupled)
        self.state: dict[torch.Tensor, dict[str, torch.Tensor]] = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        zero_grads(self.param_groups[0]["params"], set_to_none)

    @torch.no_grad()
    def step(self) -> None:
        """One Adam step of every parameter that has a gradient (no host synchronisation)."""
        group = self.param_groups[0]
        by_kind: dict[tuple, list[torch.Tensor]] = {}
        for p in group["params"]:
            if p.grad is not None:
                by_kind.setdefault((p.device, p.dtype), []).append(p)
        kernel = torch._fused_adamw_ if self.decoupled else torch._fused_adam_
        beta1, beta2 = group["betas"]
        for params in by_kind.values():
            states = [self._state(p) for p in params]
            steps = [s["step"] for s in states]
            torch._foreach_add_(steps, 1)
            kernel(params, [p.grad for p in params], [s["exp_avg"] for s in states],
                   [s["exp_avg_sq"] for s in states], [], steps, amsgrad=False, lr=group["lr"], beta1=beta1,
                   beta2=beta2, weight_decay=group["weight_decay"], eps=group["eps"], maximize=False,
                   grad_scale=None, found_inf=None)

    def _state(self, p: torch.Tensor) -> dict[str, torch.Tensor]:
        state = self.state.get(p)
        if state is None:
            state = {
                "step": torch.zeros((), dtype=torch.float32, device=p.device),
                "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
            }
            self.state[p] = state
        return state
