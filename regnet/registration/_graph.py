"""CUDA-graph replay of an optimisation iteration.

An iteration of a registration on small images is a few hundred short kernels plus autograd's
and the optimiser's Python work; on a GPU the launches, not the arithmetic, set its time.
:class:`IterationRunner` runs an iteration body (forward, backward, optimiser step) eagerly for
:data:`WARMUP` iterations on a side stream, then captures one iteration in a
``torch.cuda.CUDAGraph`` and replays it for the rest of the level: one graph launch per
iteration and no Python in between.

What the body must allow, and regnet's registrations do:

- **Static tensors.** The images and parameters of a level keep their storage (Adam updates
  the parameters in place); the body's outputs (the loss, per-item losses) are the graph's
  static outputs, cloned after every replay so that a loss log keeps each iteration's value.
- **No host synchronisation** inside the body. regnet's ops and losses read no tensor values on
  the host, and the few constant tensors they need come from :mod:`regnet.ops._constants`,
  created during the eager warm-up and reused by the capture.
- **A capturable optimiser**: torch's Adam / AdamW are created with ``capturable=True``
  (:func:`regnet.registration._levels.make_optimizer`); gradients are set to ``None`` before
  the capture, so the captured backward writes them (no accumulation across replays).

``cuda_graph=None`` (auto) turns the graph on for CUDA tensors when the optimiser is torch's
Adam or AdamW and every loss is one of regnet's modules (which satisfy the above; a user's
function could synchronise or keep Python state that a replay would not update). ``True``
forces it on CUDA; off CUDA there is nothing to capture and it is ignored. If the capture
fails (a function that synchronises, an op that cannot be captured), a warning names the
error and the level goes on eagerly: a failed capture runs no kernel, so the parameters and
the optimiser's state are those of the last eager iteration.

Not measured yet: no GPU was available while this was written (see ``docs/triton.md``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable

import torch

from regnet.registration.descent import NormalisedDescent

#: Eager iterations (on a side stream) before the capture: lazy initialisation (Triton's
#: compilation and caches, the optimiser's state, cached constants) happens in them.
WARMUP = 3

CAPTURABLE_OPTIMIZERS = (torch.optim.Adam, torch.optim.AdamW, NormalisedDescent)


def graph_wanted(setting: bool | None, device: torch.device, optimizer, functions: Iterable) -> bool:
    """Whether to replay iterations from a CUDA graph (see the module docstring).

    ``setting``: ``True`` / ``False`` as given (``True`` only on CUDA), ``None``: on CUDA
    with torch's Adam / AdamW and only regnet's loss modules among ``functions`` (``None``
    entries are skipped)."""
    if setting is not None and not isinstance(setting, bool):
        raise TypeError(f"cuda_graph must be None (auto), True or False, got {setting!r}")
    if device.type != "cuda":
        return False
    if setting is not None:
        return setting
    own = all(f is None or type(f).__module__.startswith("regnet.") for f in functions)
    return own and optimizer in CAPTURABLE_OPTIMIZERS


def _on_side_stream(fn: Callable):
    """``fn()`` on a fresh CUDA stream, ordered after and before the current stream's work."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        out = fn()
    torch.cuda.current_stream().wait_stream(stream)
    return out


def _capture(fn: Callable, optimizer: torch.optim.Optimizer):
    """``(graph, outputs)``: ``fn`` captured in a new CUDA graph (no kernel runs). The
    gradients are set to ``None`` first, so that the captured backward writes them afresh:
    every replay overwrites them instead of accumulating."""
    optimizer.zero_grad(set_to_none=True)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        outputs = fn()
    return graph, outputs


class IterationRunner:
    """Calls ``body()`` (forward, backward, optimiser step; returns a tuple of detached
    tensors or ``None``) once per iteration, eagerly or replayed from a CUDA graph.

    Each call is one iteration and returns that iteration's outputs (clones when replayed).
    Gradients are set to ``None`` before each eager iteration and before the capture. A
    failed capture warns and leaves the runner eager for good."""

    def __init__(self, body: Callable[[], tuple], optimizer: torch.optim.Optimizer, graph: bool):
        self.body = body
        self.optimizer = optimizer
        self.graph_on = bool(graph)
        self.warmed = 0
        self.graph = None
        self.outputs: tuple | None = None

    def __call__(self) -> tuple:
        if not self.graph_on:
            return self._eager()
        if self.graph is None:
            if self.warmed < WARMUP:
                self.warmed += 1
                return _on_side_stream(self._eager)
            if not self._capture():
                return self._eager()
        self.graph.replay()
        return tuple(None if t is None else t.clone() for t in self.outputs)

    def _eager(self) -> tuple:
        self.optimizer.zero_grad(set_to_none=True)
        return self.body()

    def _capture(self) -> bool:
        try:
            self.graph, self.outputs = _capture(self.body, self.optimizer)
        except Exception as error:  # noqa: BLE001 - whatever broke the capture: go on eagerly
            warnings.warn(
                f"CUDA graph capture of the registration iteration failed ({type(error).__name__}: {error}); "
                f"running the iterations eagerly (pass cuda_graph=False to skip the attempt)",
                RuntimeWarning,
                stacklevel=3,
            )
            self.graph_on = False
            self.graph = self.outputs = None
            self.optimizer.zero_grad(set_to_none=True)
            return False
        return True
