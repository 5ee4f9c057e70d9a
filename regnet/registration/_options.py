"""Options every iterative registration takes, validated once, in one place.

:class:`LevelOptions` holds the pyramid schedule and the optimisation options that
:class:`~regnet.registration.affine.AffineRegistration` and
:class:`~regnet.registration.syn.SyNRegistration` share: ``scales``, ``iterations``,
``learning_rate`` (one value, or one per level), ``verbose``, ``optimizer``, ``tolerance``,
``check_every`` and ``cuda_graph``. Each class passes its own defaults; errors name the class
and the argument.

Example::

    >>> options = LevelOptions.check("SyNRegistration", scales=(4, 2, 1), iterations=20,
    ...                              learning_rate=0.3, verbose=False)
    >>> options.iterations, options.learning_rates
    ((20, 20, 20), (0.3, 0.3, 0.3))
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from regnet import _checks


@dataclass(frozen=True)
class LevelOptions:
    """Validated schedule and optimiser options (see the module docstring).

    ``iterations`` is ``None`` when the class chooses per-level iterations at call time (SyN's
    defaults depend on the image dimension)."""

    scales: tuple[float, ...]
    iterations: tuple[int, ...] | None
    learning_rates: tuple[float, ...]
    verbose: bool
    optimizer: Callable
    tolerance: float
    check_every: int
    cuda_graph: bool | None

    @classmethod
    def check(
        cls,
        fn: str,
        scales: Sequence[float],
        iterations: Sequence[int] | int | None,
        learning_rate: float | Sequence[float],
        verbose: bool = True,
        optimizer: Callable = torch.optim.Adam,
        tolerance: float = 0.0,
        check_every: int = 10,
        cuda_graph: bool | None = None,
    ) -> LevelOptions:
        """Validate the shared options of registration class ``fn``."""
        levels_scales = _checks.scales(fn, scales)
        levels = len(levels_scales)
        counts = None
        if iterations is not None:
            counts = _checks.per_level(fn, "iterations", iterations, levels, _checks.is_count, "non-negative ints")
        rates = _checks.per_level(fn, "learning_rate", learning_rate, levels, _checks.is_positive, "positive floats")
        _checks.callable_(fn, "optimizer", optimizer, "an optimiser class such as torch.optim.Adam")
        if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not (
            math.isfinite(tolerance) and tolerance >= 0
        ):
            raise ValueError(f"{fn}: tolerance must be a finite number >= 0 (0 disables early stopping), "
                             f"got {tolerance!r}")
        if not _checks.is_count(check_every) or check_every < 1:
            raise ValueError(f"{fn}: check_every must be a positive int, got {check_every!r}")
        return cls(
            scales=tuple(float(s) for s in levels_scales),
            iterations=None if counts is None else tuple(int(c) for c in counts),
            learning_rates=tuple(float(r) for r in rates),
            verbose=_checks.boolean(fn, "verbose", verbose),
            optimizer=optimizer,
            tolerance=float(tolerance),
            check_every=int(check_every),
            cuda_graph=_checks.optional_boolean(fn, "cuda_graph", cuda_graph, "None (auto)"),
        )


class WithLevelOptions:
    """The shared options of a registration class as attributes (torchreg's names): ``scales``,
    ``iterations``, ``learning_rate`` / ``learning_rates``, ``verbose``, ``optimizer``,
    ``tolerance``, ``check_every`` and ``cuda_graph``, read from ``self.options``."""

    options: LevelOptions

    scales = property(lambda self: self.options.scales)
    iterations = property(lambda self: self.options.iterations)
    learning_rate = property(lambda self: self.options.learning_rates)
    learning_rates = property(lambda self: self.options.learning_rates)
    verbose = property(lambda self: self.options.verbose)
    optimizer = property(lambda self: self.options.optimizer)
    tolerance = property(lambda self: self.options.tolerance)
    check_every = property(lambda self: self.options.check_every)
    cuda_graph = property(lambda self: self.options.cuda_graph)

