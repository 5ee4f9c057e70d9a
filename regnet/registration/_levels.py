"""The skeleton of an iterative registration: input checks, one optimisation level, the loss log.

Every registration class runs its pyramid levels through :func:`run_level`: an iteration body
(forward, backward, optimiser step; returns ``(loss, per_item_losses or None)``) called up to
``iterations`` times, eagerly or replayed from a CUDA graph (:mod:`._graph`), with the early
stop of :meth:`LossLog.converged` tested every ``check`` iterations.

The loss of every iteration stays on the device (a detached 0-d tensor); the host reads
values only when the progress bar refreshes (every ``refresh`` iterations) or a convergence
check runs (every ``check`` iterations), and once at the end of a level.

Example::

    >>> log = LossLog(total=100, description="level 1", verbose=False)
    >>> run_level(body, optimizer, graph=False, log=log, iterations=100, check=10, tolerance=1e-4)
    >>> history = log.values()     # the level's losses as floats (one host sync)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch

from regnet import _checks
from regnet.registration._adam import FusedAdam
from regnet.registration._graph import IterationRunner


def check_pair(fn: str, moving, static) -> None:
    """``moving`` and ``static``: ``(B, C, *spatial)`` float tensors, 2D or 3D, same batch,
    channels, device and dtype; spatial shapes may differ."""
    for name, x in (("moving", moving), ("static", static)):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{fn}: {name} must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() not in (4, 5):
            raise ValueError(f"{fn}: {name} must be (B, C, H, W) or (B, C, H, W, D), got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"{fn}: {name} must have a floating dtype, got {x.dtype}")
    if moving.dim() != static.dim() or moving.shape[:2] != static.shape[:2]:
        raise ValueError(
            f"{fn}: moving {tuple(moving.shape)} and static {tuple(static.shape)} must have the same "
            f"rank, batch size and channel count"
        )
    if moving.device != static.device or moving.dtype != static.dtype:
        raise ValueError(
            f"{fn}: moving ({moving.dtype}, {moving.device}) and static ({static.dtype}, {static.device}) "
            f"must share one dtype and device"
        )
    for name, x in (("moving", moving), ("static", static)):
        _checks.finite(fn, name, x)  # one host sync per registration, before the loop


def check_masks(fn: str, static_mask, static: torch.Tensor, moving_mask, moving: torch.Tensor) -> list:
    """``[static_mask, moving_mask]`` checked (``(B or 1, 1, *spatial)`` of their image, values
    >= 0, finite) and in the images' dtype, or ``None`` where not given."""
    out = []
    for name, mask, image in (("static_mask", static_mask, static), ("moving_mask", moving_mask, moving)):
        if mask is None:
            out.append(None)
            continue
        mask = _checks.mask(fn, name, mask, image, "its image")
        if mask.shape[1] != 1:
            raise ValueError(f"{fn}: {name} must have one channel, (B or 1, 1, *spatial), got {tuple(mask.shape)}")
        out.append(mask)
    return out


#: Below this many voxels per image a CPU registration runs on one thread (see
#: :func:`cpu_threads_for`).
SMALL_LEVEL_VOXELS = 1 << 18


@contextlib.contextmanager
def cpu_threads_for(x: torch.Tensor):
    """Run a registration, or one of its levels, on one intra-op thread when its (static)
    images are small (fewer than :data:`SMALL_LEVEL_VOXELS` voxels per image).

    A registration of small images is thousands of small ops; each parallel op pays the thread pool's
    hand-off, and on cores shared with other work the waits dominate: the 2D r16 -> r64 SyN
    took 1.1-1.4 s on two threads of a busy 2-core machine and 0.39 s on one (same result).
    Registrations wrap each pyramid level in it, so the coarse levels of a large image run on
    one thread too. Large levels keep torch's thread count. The previous count is restored on
    exit. (On shared cores, OpenMP's spin-waiting is the larger cost: see
    :func:`regnet._openmp.prefer_passive_waiting`.)
    """
    threads = torch.get_num_threads()
    small = x.device.type == "cpu" and x[0, 0].numel() < SMALL_LEVEL_VOXELS and threads > 1
    if small:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if small:
            torch.set_num_threads(threads)


def make_optimizer(optimizer, params: list, lr: float, capturable: bool = False):
    """``optimizer(params, lr)``, except torch's Adam and AdamW: they become :class:`FusedAdam`
    (the same fused ATen kernel as ``fused=True``, bit for bit: one kernel for all parameters,
    2.7x less time per step on the CPU for the four small affine parameters), which does not
    import ``torch._dynamo`` as ``torch.optim.Optimizer.__init__`` does (1-10 s, once per
    process) and keeps its step counts on the device (CUDA-graph capturable).

    ``capturable``: the step will be captured in a CUDA graph (:mod:`._graph`): another class
    is tried with ``capturable=True``, and without it if it does not take the argument."""
    if optimizer in (torch.optim.Adam, torch.optim.AdamW):
        if all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params):
            return FusedAdam(params, lr, decoupled=optimizer is torch.optim.AdamW)
        return optimizer(params, lr, capturable=True) if capturable else optimizer(params, lr)
    if capturable:
        try:
            return optimizer(params, lr, capturable=True)
        except TypeError:
            pass
    return optimizer(params, lr)


class LossLog:
    """Per-level loss history with a tqdm bar; host reads only every ``refresh`` iterations.

    ``log(loss)`` stores ``loss.detach()`` (no sync); ``log(loss, items)`` also stores the
    per-item losses ``(B,)`` of a batch of B registrations, which ``converged`` then judges
    item by item. ``values()`` returns the level's losses as floats (one sync).
    ``converged(...)`` compares windowed means every ``check_every`` iterations (one sync
    each time).
    """

    def __init__(self, total: int, description: str, verbose: bool, refresh: int = 10):
        self.losses: list[torch.Tensor] = []
        self.items: list[torch.Tensor] = []
        self.refresh = max(1, refresh)
        self.bar = None
        if verbose:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=description, leave=False, dynamic_ncols=True)

    def log(self, loss: torch.Tensor, items: torch.Tensor | None = None) -> None:
        self.losses.append(loss.detach())
        if items is not None:
            self.items.append(items.detach().reshape(-1))
        if self.bar is not None:
            self.bar.update(1)
            if len(self.losses) % self.refresh == 0:
                self.bar.set_postfix(loss=f"{float(self.losses[-1]):.5g}")

    def converged(self, window: int, tolerance: float) -> bool:
        """True when the mean loss of the last ``window`` iterations improved on the window
        before by less than ``tolerance`` (relative). Call every ``window`` iterations.

        With per-item losses logged (``log(loss, items)`` at every iteration) every item must
        have converged: a batch goes on while one of its registrations still improves."""
        if tolerance <= 0 or len(self.losses) < 2 * window:
            return False
        history = self.items if len(self.items) == len(self.losses) else self.losses
        recent = torch.stack(history[-2 * window:]).reshape(2, window, -1).mean(dim=1)
        before, after = recent.double().cpu()  # one sync
        return bool((before - after < tolerance * before.abs().clamp_min(1e-12)).all())

    def values(self) -> list[float]:
        if self.bar is not None:
            self.bar.close()
        if not self.losses:
            return []
        return torch.stack(self.losses).cpu().tolist()


def run_level(body: Callable[[], tuple], optimizer: torch.optim.Optimizer, graph: bool, log: LossLog,
              iterations: int, check: int, tolerance: float) -> int:
    """Run one pyramid level: ``body()`` up to ``iterations`` times (eagerly, or replayed from
    a CUDA graph when ``graph``), logging ``(loss, items)``; every ``check`` iterations stop
    when the windowed loss improved by less than ``tolerance`` (relative). Returns the number
    of iterations run."""
    runner = IterationRunner(body, optimizer, graph)
    done = 0
    for done in range(1, iterations + 1):
        loss, items = runner()
        log.log(loss, items)
        if done % check == 0 and done < iterations and log.converged(check, tolerance):
            break
    return done
