"""Iterative affine registration: torchreg's ``AffineRegistration`` on ``regnet.ops``.

The affine map is ``theta = compose_affine(translation, rotation, zoom, shear)``
(``[R @ S | t]``, torchreg's formula) in normalised coordinates, ``affine_grid``'s
convention: output grid = the static image, input = the moving image. Every iteration
resamples the moving image with the fused :func:`regnet.ops.affine_transform` (no sampling
grid is built here or kept for the backward pass) and takes one optimiser step.
"""

from __future__ import annotations

import copy
import itertools
import math
import time
from collections.abc import Callable, Sequence

import torch
from torch.autograd.function import once_differentiable

from regnet import _checks, ops
from regnet.losses import MSELoss
from regnet.ops import _torch as _reference
from regnet.ops._backend import select
from regnet.ops._torch.sampling import separable_affine_grid
from regnet.registration._common import LossLog, check_pair, cpu_threads_for, downsample, level_shape, make_optimizer
from regnet.registration._graph import IterationRunner, graph_wanted

INITS = ("com", "moments", None)
INTERP_MODES = (None, "bilinear", "trilinear", "nearest")
#: Default iteration limits (``iterations=None``) and step sizes (``learning_rate=None``):
#: torchreg's ``(500, 100)`` and 1e-2 for its two levels, see :class:`AffineRegistration`.
#: torchreg's default loss; it holds only configuration, so one instance serves every registration.
DEFAULT_DISSIMILARITY = MSELoss()
COARSE_ITERATIONS = 500
FINE_ITERATIONS = 100
COARSE_LEARNING_RATE = 1e-2
FINE_LEARNING_RATE = 3e-3


class AffineRegistration:
    """Multi-resolution affine registration of a batch of image pairs.

    Drop-in for ``torchreg.AffineRegistration`` (same arguments, same order, same parameters
    and ``theta``; with ``init=None``, ``tolerance=0``, ``learning_rate=1e-2`` it takes
    torchreg's optimisation steps, identical at full resolution; on coarser levels regnet's
    pyramid is anti-aliased, torchreg's is not), plus: initialisation from the centres of mass or
    the principal axes, early stopping, per-level loss history and timing, batches of pairs,
    moving and static images of different shapes, 2D and 3D from the input rank.

    Usage::

        reg = AffineRegistration()
        moved = reg(moving, static)          # (B, C, *static.shape[2:])
        theta = reg.get_affine()             # (B, ndim, ndim + 1)
        labels_moved = reg.transform(labels, mode="nearest")

    **Coordinates.** ``theta`` maps normalised coordinates of the static grid to normalised
    coordinates of the moving image (``torch.nn.functional.affine_grid``), with
    ``align_corners`` as given. The moving image may have another shape than the static one:
    it is sampled directly through ``theta`` at every level (torchreg first resizes it to the
    static shape; the result is the same map). Normalised coordinates align the two images'
    *extents*; images with different voxel spacings or orientations are brought into a
    common world frame outside, by :mod:`regnet.io.world`, before or after this class.

    **Batches.** ``moving`` and ``static`` ``(B, C, ...)`` hold B independent pairs; every
    parameter has batch dimension B. The loss optimised is the mean over items of per-item
    losses, so each item's gradient depends on its own pair only, and Adam (per-element
    steps) moves each item as if it were registered alone. The early stop waits for every
    item to converge. Per-item losses come from ``dissimilarity_function`` evaluated with
    ``reduction="none"`` when it is an ``nn.Module`` with a ``reduction`` of ``"mean"`` or
    ``"sum"`` (regnet's and ``torch.nn``'s losses), or from a callable that returns ``(B,)``;
    a callable that returns a scalar is used as it is (convergence is then judged on it).

    **Defaults and the measurement behind them.** torchreg's scales ``(4, 2)`` and
    iteration counts ``(500, 100)``, now upper bounds, plus ``init="com"``, early stopping
    (``tolerance=1e-2`` over windows of ``check_every=10`` iterations) and step sizes 1e-2 at
    the coarsest level and 3e-3 at the finer ones. Measured on r16slice -> r64slice
    (``regnet/data``, two subjects, 256 x 256, intensities in [0, 1]; global NCC, the Pearson
    correlation over the image, 0.566 before registration), torch 2.13 CPU, one thread,
    ``verbose=False``, median of 5 calls after a first one (the first call in a process also
    pays ~0.7 s of one-time imports inside ``torch.optim``, torchreg too)::

        torchreg, its defaults (identity start, lr 1e-2)     0.21-0.23 s CPU    NCC 0.9634  600 iterations
        regnet, defaults                                      0.020-0.021 s CPU  NCC 0.9632  50 + 10 iterations
        regnet, check_every=5                                 0.015 s CPU        NCC 0.9628  25 + 6 iterations
        ANTsPy Affine (2 threads, measured elsewhere)         0.18-0.21 s wall   NCC 0.9631

    So about 11x less CPU time than torchreg at equal NCC (4th decimal: regnet's pyramid
    is anti-aliased, torchreg's is not), from needing ~10x fewer iterations at a similar
    cost per iteration: torchreg's unfused Adam step (~0.27 ms for four small tensors) is
    most of its iteration; regnet uses fused Adam (~0.1 ms), one autograd node for
    ``compose_affine`` + ``affine_transform`` that keeps its small sampling grid for the
    backward, builds that grid from per-axis parts instead of ATen's
    ``affine_grid_generator``, takes the ``theta`` gradient with a cached base grid, and
    computes the unmasked MSE with ATen's fused ``mse_loss`` (one autograd node).
    Finer levels start from a converged estimate and are judged on windows of
    ``check_every // 2`` iterations. More where host synchronisation is costly: torchreg
    reads ``loss.item()`` every iteration, regnet every ``check_every``.

    Alternatives measured on five 2D pairs (r16, r27, r30, r62, r85 -> r64) and six
    synthetic ones (r16 rotated by up to 45 degrees, zoomed by 0.9-1.25, shifted by up to
    0.2): ``tolerance`` 1e-3 / 3e-3 gave the same NCC (+-0.0003) with 1.4x / 1.2x the time;
    ``check_every=5`` was 30% faster but stopped on the plateau of a 30-degree rotation
    (NCC 0.910 instead of 0.964); scales ``(8, 4)`` lost up to 0.001 NCC, ``(8, 4, 2)`` was 25%
    slower; a single level ``(4,)`` with 40 iterations took 0.024 s for NCC 0.9626; the
    same step size 1e-2 at the fine level took 20% more iterations. The centre-of-mass start
    alone fixed a 30-degree rotation that torchreg's identity start misses (NCC 0.964 vs
    0.899); only ``init="moments"`` recovered a 45-degree rotation (0.9642; torchreg 0.9647
    after 600 iterations, ``"com"`` 0.898), at 1.4x the time of ``"com"``.
    3D check: the T1 volume of ``brain3d`` at 80 x 96 x 112, moved by a known theta (rotations
    of 8 and -5 degrees, zooms 1.05 / 0.95, a translation): theta recovered to 3e-4 in
    0.53-0.57 s (torchreg 1.11-1.21 s, 4e-4). A batch of four such pairs (rotations of 50 degrees, 40 + 20,
    8 - 5 with zoom, 45 - 30 degrees): ``"com"`` recovered three (errors <= 1.3e-3, the
    45/-30 one not: 0.81) in 4.1 s, ``"moments"`` all four (<= 7e-4) in 6.2 s.

    Args:
        scales: downsampling factor of each level, coarse to fine (1 = full resolution).
        iterations: optimiser iterations of each level (an upper bound with early stopping);
            one int per scale, one int for all levels, or ``None``: 500 at the coarsest
            level and 100 at each finer one (torchreg's ``(500, 100)`` for two levels).
        is_3d: ``None`` (infer from the input rank) or a bool that the input must match.
        learning_rate: optimiser step size; one float for all levels, one per level, or
            ``None``: 1e-2 (torchreg's) at the coarsest level and 3e-3 at the finer ones, which
            start from a converged estimate (Adam's first steps move every parameter by about
            the step size, whatever its gradient).
        verbose: a tqdm bar per level with the loss; ``False`` prints nothing.
        dissimilarity_function: ``loss(moved, static)`` to minimise (default MSE).
        optimizer: optimiser class, called as ``optimizer(params, learning_rate)`` at each level.
        init_translation, init_rotation, init_zoom, init_shear: starting parameters
            ``(B, ndim)``, ``(B, ndim, ndim)``, ``(B, ndim)``, ``(B, ndim)``; each one given
            replaces what ``init`` would have chosen for it.
        with_translation, with_rotation, with_zoom, with_shear: which parameters are optimised.
        align_corners: as in ``grid_sample``; the convention of ``theta``.
        interp_mode: sampling of the moving image: ``None`` (linear), ``"bilinear"``,
            ``"trilinear"`` (both linear) or ``"nearest"``.
        padding_mode: ``grid_sample`` padding outside the moving image (``"border"``).
        init: ``"com"`` (translation aligning the intensity centres of mass, as ANTs does by
            default), ``"moments"`` (centres of mass and principal axes: the rotation that
            takes the static image's axes onto the moving one's; the sign of each axis is
            ambiguous, so each proper flip, and no rotation, is optimised at the coarsest level,
            side by side as a batch, and the one with the lowest loss there kept: 3 candidates
            in 2D, 5 in 3D) or ``None`` (identity, torchreg).
        tolerance: stop a level when the mean loss of the last ``check_every`` iterations
            improved on the mean of the ``check_every`` before by less than this fraction
            (every item of the batch); 0 runs every iteration.
        check_every: length of the window, and how often (iterations) the host reads the
            losses to test convergence.
        cuda_graph: replay each level's iterations from a CUDA graph after three eager ones
            (:mod:`regnet.registration._graph`): ``None`` (auto) on CUDA with torch's Adam /
            AdamW and one of regnet's losses, ``True`` on CUDA whatever the loss (it must not
            synchronise with the host), ``False`` never. Ignored off CUDA.

    Attributes (after a call):
        parameters: ``[translation, rotation, zoom, shear]`` as ``nn.Parameter`` s of batch
            size B (``None`` before a call or after :meth:`reset`).
        loss_history: ``list[list[float]]``, the loss of every iteration, per level.
        level_times: seconds spent in each level (pyramid, optimisation, one sync at its end).
        init_time: seconds spent computing the starting parameters (the candidates of
            ``init="moments"`` are optimised, and chosen, within the first level).
    """

    def __init__(
        self,
        scales: Sequence[float] = (4, 2),
        iterations: Sequence[int] | int | None = None,
        is_3d: bool | None = None,
        learning_rate: float | Sequence[float] | None = None,
        verbose: bool = True,
        dissimilarity_function: Callable = DEFAULT_DISSIMILARITY,
        optimizer: Callable = torch.optim.Adam,
        init_translation: torch.Tensor | None = None,
        init_rotation: torch.Tensor | None = None,
        init_zoom: torch.Tensor | None = None,
        init_shear: torch.Tensor | None = None,
        with_translation: bool = True,
        with_rotation: bool = True,
        with_zoom: bool = True,
        with_shear: bool = False,
        align_corners: bool = True,
        interp_mode: str | None = None,
        padding_mode: str = "border",
        *,
        init: str | None = "com",
        tolerance: float = 1e-2,
        check_every: int = 10,
        cuda_graph: bool | None = None,
    ) -> None:
        fn = "AffineRegistration"
        self.scales = _check_scales(fn, scales)
        levels = len(self.scales)
        if iterations is None:
            iterations = (COARSE_ITERATIONS,) + (FINE_ITERATIONS,) * (levels - 1)
        self.iterations = _per_level(fn, "iterations", iterations, levels, _is_count, "non-negative ints")
        if learning_rate is None:
            learning_rate = (COARSE_LEARNING_RATE,) + (FINE_LEARNING_RATE,) * (levels - 1)
        self.learning_rate = _per_level(fn, "learning_rate", learning_rate, levels, _is_positive, "positive floats")
        if is_3d is not None and not isinstance(is_3d, bool):
            raise TypeError(f"{fn}: is_3d must be None or a bool, got {is_3d!r}")
        self.is_3d = is_3d
        self.verbose = _check_bool(fn, "verbose", verbose)
        if not callable(dissimilarity_function):
            raise TypeError(f"{fn}: dissimilarity_function must be callable(moved, static), "
                            f"got {type(dissimilarity_function).__name__}")
        self.dissimilarity_function = dissimilarity_function
        if not callable(optimizer):
            raise TypeError(f"{fn}: optimizer must be an optimiser class such as torch.optim.Adam, "
                            f"got {type(optimizer).__name__}")
        self.optimizer = optimizer
        for name, value in (("init_translation", init_translation), ("init_rotation", init_rotation),
                            ("init_zoom", init_zoom), ("init_shear", init_shear)):
            if value is not None and not isinstance(value, torch.Tensor):
                raise TypeError(f"{fn}: {name} must be a torch.Tensor or None, got {type(value).__name__}")
        self.inits = (init_translation, init_rotation, init_zoom, init_shear)
        self.withs = tuple(
            _check_bool(fn, name, value)
            for name, value in (("with_translation", with_translation), ("with_rotation", with_rotation),
                                ("with_zoom", with_zoom), ("with_shear", with_shear))
        )
        self.align_corners = _check_bool(fn, "align_corners", align_corners)
        self.interp_mode = _checks.choice(fn, "interp_mode", interp_mode, INTERP_MODES)
        self.padding_mode = _checks.choice(fn, "padding_mode", padding_mode, _checks.PADDING_MODES)
        self.init = _checks.choice(fn, "init", init, INITS)
        if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not (
            math.isfinite(tolerance) and tolerance >= 0
        ):
            raise ValueError(f"{fn}: tolerance must be a finite number >= 0 (0 disables early stopping), "
                             f"got {tolerance!r}")
        self.tolerance = float(tolerance)
        if not _is_count(check_every) or check_every < 1:
            raise ValueError(f"{fn}: check_every must be a positive int, got {check_every!r}")
        self.check_every = check_every
        if cuda_graph is not None and not isinstance(cuda_graph, bool):
            raise TypeError(f"{fn}: cuda_graph must be None (auto), True or False, got {cuda_graph!r}")
        self.cuda_graph = cuda_graph
        self.reset()

    # --- state ---------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget the last registration (parameters, histories, shapes)."""
        self.parameters: list[torch.nn.Parameter] | None = None
        self.loss_history: list[list[float]] = []
        self.level_times: list[float] = []
        self.init_time: float = 0.0
        self._static_shape: tuple[int, ...] | None = None

    def _fitted(self, fn: str) -> list[torch.nn.Parameter]:
        if self.parameters is None:
            raise RuntimeError(f"AffineRegistration.{fn}: no registration yet; call reg(moving, static) first")
        return self.parameters

    # --- registration --------------------------------------------------------------------

    def __call__(self, moving: torch.Tensor, static: torch.Tensor, return_moved: bool = True):
        """Register ``moving`` onto ``static``, both ``(B, C, *spatial)`` (spatial shapes may
        differ). Returns the moved image ``(B, C, *static.shape[2:])`` (detached), or ``None``
        with ``return_moved=False``."""
        check_pair("AffineRegistration", moving, static)
        with cpu_threads_for(static):
            return self._register(moving, static, return_moved)

    def _register(self, moving: torch.Tensor, static: torch.Tensor, return_moved: bool):
        fn = "AffineRegistration"
        ndim = static.dim() - 2
        if self.is_3d is not None and self.is_3d != (ndim == 3):
            raise ValueError(
                f"{fn}: is_3d={self.is_3d} expects {'(B, C, H, W, D)' if self.is_3d else '(B, C, H, W)'} inputs, "
                f"got moving {tuple(moving.shape)} and static {tuple(static.shape)}"
            )
        if self.interp_mode == "trilinear" and ndim != 3:
            raise ValueError(f"{fn}: interp_mode='trilinear' needs 3D images, got static {tuple(static.shape)}")
        self.reset()
        self._static_shape = tuple(static.shape[2:])
        batch = static.shape[0]
        loss_fn = _ItemLoss(self.dissimilarity_function, batch)

        start = time.perf_counter()
        candidates = self._initial_parameters(moving, static)
        count = len(candidates)  # > 1: principal-axes candidates, optimised side by side at level 0
        self.parameters = [
            torch.nn.Parameter(torch.cat([c[i] for c in candidates]), requires_grad=w)
            for i, w in enumerate(self.withs)
        ]
        self.init_time = time.perf_counter() - start

        for level, (scale, iterations, lr) in enumerate(zip(self.scales, self.iterations, self.learning_rate)):
            start = time.perf_counter()
            moving_l = downsample(moving, level_shape(moving.shape[2:], scale), self.align_corners)
            static_l = downsample(static, level_shape(static.shape[2:], scale), self.align_corners)
            level_loss = loss_fn
            if level == 0 and count > 1:
                moving_l = moving_l.repeat(count, *[1] * (moving_l.dim() - 1))
                static_l = static_l.repeat(count, *[1] * (static_l.dim() - 1))
                level_loss = _ItemLoss(self.dissimilarity_function, count * batch)
            description = f"affine {level + 1}/{len(self.scales)} {tuple(static_l.shape[2:])}"
            log = LossLog(iterations, description, self.verbose)
            trainable = [p for p in self.parameters if p.requires_grad]
            if trainable and iterations > 0:
                with torch.enable_grad():  # also inside a caller's no_grad block
                    # finer levels start from a converged estimate: judge them on half windows
                    check = self.check_every if level == 0 else max(1, self.check_every // 2)
                    self._fit_level(moving_l, static_l, iterations, lr, trainable, level_loss, log, check)
            history = log.values()  # one sync: the level's time is complete
            if level == 0 and count > 1:
                history = self._keep_best_candidate(moving_l, static_l, level_loss, log, count, batch) or history
            self.loss_history.append(history)
            self.level_times.append(time.perf_counter() - start)
        if not return_moved:
            return None
        return self.transform(moving)

    def _keep_best_candidate(self, moving, static, loss_fn, log, count, batch) -> list[float] | None:
        """Keep, for each pair, the starting candidate with the lowest loss after the coarsest
        level; return that level's loss history of the kept candidates (``None`` when the loss
        gives no per-item values)."""
        with torch.no_grad():
            moved = self._sample(moving, self.get_affine(), tuple(static.shape[2:]), None)
            final = loss_fn.per_item(moved, static).view(count, batch)
            index = final.argmin(0) * batch + torch.arange(batch, device=final.device)
        self.parameters = [torch.nn.Parameter(p.detach()[index], requires_grad=p.requires_grad)
                           for p in self.parameters]
        if not log.items or len(log.items) != len(log.losses):
            return None
        return loss_fn.combine(torch.stack(log.items)[:, index]).cpu().tolist()

    def _fit_level(self, moving, static, iterations, lr, trainable, loss_fn, log: LossLog, check: int) -> None:
        graph = graph_wanted(self.cuda_graph, static.device, self.optimizer, [self.dissimilarity_function])
        optimizer = make_optimizer(self.optimizer, trainable, lr, capturable=graph)
        shape = tuple(static.shape[2:])
        # The inputs were checked once by __call__: call the two autograd Functions directly
        # (the public ops' argument checks cost as much as the sampling at 64 x 64).
        impls = (select("compose_affine", moving.device), select("affine_transform", moving.device))
        mode = "bilinear" if self.interp_mode in (None, "trilinear") else self.interp_mode
        options = (shape, mode, self.padding_mode, self.align_corners, impls)

        def iteration():
            moved = _TransformByParameters.apply(moving, *self.parameters, *options)
            loss, items = loss_fn(moved, static)
            loss.backward()
            optimizer.step()
            return loss.detach(), None if items is None else items.detach()

        runner = IterationRunner(iteration, optimizer, graph)
        for it in range(1, iterations + 1):
            loss, items = runner()
            log.log(loss, items)
            if it % check == 0 and it < iterations and log.converged(check, self.tolerance):
                break

    def _sample(self, image, theta, shape, mode):
        mode = mode or self.interp_mode or "bilinear"
        mode = "bilinear" if mode == "trilinear" else mode
        return ops.affine_transform(image, theta, shape, mode, self.padding_mode, self.align_corners)

    # --- results -------------------------------------------------------------------------

    def get_affine(self, with_grad: bool = False) -> torch.Tensor:
        """``theta`` ``(B, ndim, ndim + 1)``: normalised static coordinates -> moving ones."""
        theta = ops.compose_affine(*self._fitted("get_affine"))
        return theta if with_grad else theta.detach()

    def transform(
        self,
        image: torch.Tensor,
        shape: Sequence[int] | None = None,
        with_grad: bool = False,
        mode: str | None = None,
    ) -> torch.Tensor:
        """Resample ``image`` (on the moving image's extent) through the registration.

        Args:
            image: ``(B, C, *spatial)`` with the registration's batch size and rank; any
                spatial shape (its extent is the moving image's). Integer images (label
                maps) are sampled with ``"nearest"`` and returned in their dtype.
            shape: output spatial shape; default the static image's (torchreg: the image's
                own, the same thing when moving and static share a shape).
            with_grad: keep the result differentiable w.r.t. the parameters.
            mode: ``"bilinear"`` / ``"trilinear"`` (linear), ``"nearest"``; default the
                registration's ``interp_mode`` (``"nearest"`` for integer images).
        """
        fn = "AffineRegistration.transform"
        params = self._fitted("transform")
        if not isinstance(image, torch.Tensor):
            raise TypeError(f"{fn}: image must be a torch.Tensor, got {type(image).__name__}")
        batch, ndim = params[1].shape[0], params[1].shape[1]
        if image.dim() != ndim + 2 or image.shape[0] != batch:
            raise ValueError(f"{fn}: image must have shape (B, C, *spatial) with B = {batch} and {ndim} spatial "
                             f"dimensions, as the registration, got {tuple(image.shape)}")
        if image.device != params[1].device:
            raise ValueError(f"{fn}: image is on {image.device} but the registration is on {params[1].device}")
        _checks.choice(fn, "mode", mode, INTERP_MODES)
        if shape is None:
            shape = self._static_shape
        integer = not image.is_floating_point()
        if integer:
            if image.is_complex():
                raise TypeError(f"{fn}: image must be real (floating, integer or bool), got {image.dtype}")
            if mode not in (None, "nearest"):
                raise ValueError(f"{fn}: an integer image (label map) can only be sampled with mode='nearest', "
                                 f"got {mode!r}; convert it to float for linear sampling")
            mode = "nearest"
            work = image.to(torch.float64 if image.dtype in (torch.int64, torch.int32) else torch.float32)
        else:
            work = image
        theta = self.get_affine(with_grad).to(work.dtype)
        out = self._sample(work, theta, tuple(shape), mode)
        if integer:
            return out.round().to(image.dtype)
        return out

    # --- initialisation ------------------------------------------------------------------

    def _initial_parameters(self, moving, static) -> list[list[torch.Tensor]]:
        """Starting ``[translation, rotation, zoom, shear]``, one set per candidate (several
        with ``init="moments"``: no rotation and each principal-axes rotation)."""
        fn = "AffineRegistration"
        batch, ndim = static.shape[0], static.dim() - 2
        like = dict(dtype=static.dtype, device=static.device)
        shapes = {"init_translation": (batch, ndim), "init_rotation": (batch, ndim, ndim),
                  "init_zoom": (batch, ndim), "init_shear": (batch, ndim)}
        given = []
        for (name, want), value in zip(shapes.items(), self.inits):
            if value is not None:
                if tuple(value.shape) != want:
                    raise ValueError(f"{fn}: {name} must have shape {want} (batch size {batch}, {ndim}D), "
                                     f"got {tuple(value.shape)}")
                if not value.is_floating_point():
                    raise TypeError(f"{fn}: {name} must have a floating dtype, got {value.dtype}")
                value = value.detach().to(**like).clone()
                if not bool(torch.isfinite(value).all()):
                    raise ValueError(f"{fn}: {name} contains NaN or infinite values")
            given.append(value)
        translation, rotation, zoom, shear = given
        rotations = [rotation]
        if rotation is None:
            rotations = [torch.eye(ndim, **like).expand(batch, ndim, ndim).clone()]
        if zoom is None:
            zoom = torch.ones(batch, ndim, **like)
        if shear is None:
            shear = torch.zeros(batch, ndim, **like)
        if self.init is None:
            if translation is None:
                translation = torch.zeros(batch, ndim, **like)
            return [[translation, rotations[0], zoom, shear]]

        with torch.no_grad():
            with_cov = self.init == "moments" and rotation is None
            c_moving, cov_moving = _moments(moving, self.align_corners, with_cov)
            c_static, cov_static = _moments(static, self.align_corners, with_cov)
            if self.init == "moments" and rotation is None:
                rotations += _principal_axes_rotations(cov_moving, cov_static, static, self.align_corners)
            candidates = []
            for r in rotations:
                t = translation
                if t is None:  # the static centre of mass goes onto the moving one
                    linear = ops.compose_affine(torch.zeros_like(zoom), r, zoom, shear)[..., :ndim]
                    t = c_moving - (linear @ c_static[..., None])[..., 0]
                candidates.append([t, r, zoom, shear])
        return candidates


# --- per-item losses -----------------------------------------------------------------------

class _TransformByParameters(torch.autograd.Function):
    """``affine_transform(image, compose_affine(t, R, z, s))`` as one autograd node: the
    optimisation loop's only differentiable step before the loss. Same numbers as the two
    public ops. One node instead of two, and on the reference backend the sampling grid of
    the forward pass is kept for the backward (the levels of an affine pyramid are small:
    at most ~10 MB at half resolution of a 160 x 192 x 224 volume): at 64 x 64 on the CPU,
    where Python overhead is most of an iteration, each saves ~10% of it. ``image`` gets no
    gradient."""

    @staticmethod
    def forward(ctx, image, translation, rotation, zoom, shear, shape, mode, padding_mode, align_corners, impls):
        compose_impl, sample_impl = impls
        theta = compose_impl.compose_affine_forward(translation, rotation, zoom, shear)
        ctx.options = (shape, mode, padding_mode, align_corners)
        ctx.impls = impls
        if sample_impl is _reference:
            grid = separable_affine_grid(theta, shape, align_corners)
            ctx.save_for_backward(image, theta, grid, translation, rotation, zoom, shear)
            return _reference.grid_sample_forward(image, grid, mode, padding_mode, align_corners)
        ctx.save_for_backward(image, theta, None, translation, rotation, zoom, shear)
        return sample_impl.affine_transform_forward(image, theta, shape, mode, padding_mode, align_corners)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        image, theta, grid, *parameters = ctx.saved_tensors
        compose_impl, sample_impl = ctx.impls
        shape, mode, padding_mode, align_corners = ctx.options
        if grid is not None:
            _, grad_grid = _reference.grid_sample_backward(grad, image, grid, mode, padding_mode, align_corners,
                                                           False, True)
            grad_theta = _reference.affine_grid_backward(grad_grid, theta, (*image.shape[:2], *shape), align_corners)
        else:
            _, grad_theta = sample_impl.affine_transform_backward(grad, image, theta, *ctx.options, False, True)
        grads = compose_impl.compose_affine_backward(grad_theta, *parameters, ctx.needs_input_grad[1:5])
        return (None, *grads, None, None, None, None, None)


class _ItemLoss:
    """``loss(moved, static) -> (total, per_item or None)``; see the class docstring."""

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

    def __call__(self, moved, static):
        if self.items_fn is not None:
            values = self.items_fn(moved, static)
            if isinstance(values, torch.Tensor) and values.dim() >= 1 and values.shape[0] == self.batch:
                items = values.reshape(self.batch, -1)
                items = items.mean(1) if self.reduction == "mean" else items.sum(1)
                return (items.mean() if self.reduction == "mean" else items.sum()), items
            self.items_fn = None  # not a per-element loss after all: use the function as it is
        value = self.fn(moved, static)
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

    def per_item(self, moved, static) -> torch.Tensor:
        """Per-item losses ``(B,)``, item by item when the function gives only a total."""
        _, items = self(moved, static)
        if items is None:
            items = torch.stack([self.fn(moved[b:b + 1], static[b:b + 1]).reshape(()) for b in range(self.batch)])
        return items.detach()


# --- moments -------------------------------------------------------------------------------

def _coordinates(shape, align_corners: bool, like: torch.Tensor) -> list[torch.Tensor]:
    """Normalised coordinate of every voxel along each array axis, as broadcastable views."""
    lines = []
    for axis, n in enumerate(shape):
        if n <= 1:
            line = torch.zeros(1, dtype=like.dtype, device=like.device)
        else:
            line = torch.linspace(-1, 1, n, dtype=like.dtype, device=like.device)
            if not align_corners:
                line = line * (n - 1) / n
        view = [1] * len(shape)
        view[axis] = n
        lines.append(line.view(view))
    return lines


def _moments(image: torch.Tensor, align_corners: bool, with_cov: bool = True):
    """Centre of mass ``(B, ndim)`` and second central moments ``(B, ndim, ndim)`` of the
    intensities (summed over channels, shifted to a minimum of 0), in normalised
    coordinates ordered ``(x, y[, z])``; ``None`` for the moments unless ``with_cov``. An
    empty (constant) image has its centre at 0."""
    batch, ndim = image.shape[0], image.dim() - 2
    dtype = image.dtype
    image = _precise(image)  # sums over millions of voxels
    weight = image.sum(1)
    weight = weight - weight.reshape(batch, -1).amin(1).view(batch, *[1] * ndim)
    mass = weight.reshape(batch, -1).sum(1)
    safe = torch.where(mass > 0, mass, torch.ones_like(mass))
    coords = list(reversed(_coordinates(image.shape[2:], align_corners, image)))  # (x, y[, z])
    centre = torch.stack([(weight * c).reshape(batch, -1).sum(1) / safe for c in coords], dim=1)
    centre = torch.where((mass > 0)[:, None], centre, torch.zeros_like(centre))
    if not with_cov:
        return centre.to(dtype), None
    cov = torch.zeros(batch, ndim, ndim, dtype=image.dtype, device=image.device)
    for i in range(ndim):
        di = coords[i] - centre[:, i].view(batch, *[1] * ndim)
        for j in range(i, ndim):
            dj = coords[j] - centre[:, j].view(batch, *[1] * ndim)
            value = (weight * di * dj).reshape(batch, -1).sum(1) / safe
            cov[:, i, j] = value
            cov[:, j, i] = value
    return centre.to(dtype), cov.to(dtype)


def _precise(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float64 where the device has it (not MPS)."""
    return x.float() if x.device.type == "mps" else x.double()


def _principal_axes_rotations(cov_moving, cov_static, static, align_corners) -> list[torch.Tensor]:
    """The proper rotations ``(B, ndim, ndim)`` (normalised coordinates) that take the static
    image's principal axes onto the moving image's, one per sign choice of the axes.

    The axes are computed in the static image's voxel units (normalised coordinates times
    the half extent), where a rotation is a rotation, and converted back."""
    ndim = cov_moving.shape[-1]
    half = [(n - 1) / 2 if align_corners else n / 2 for n in reversed(static.shape[2:])]
    h = torch.tensor(half, dtype=cov_moving.dtype, device=cov_moving.device)
    to_voxels = h[:, None] * h[None, :]
    _, axes_moving = torch.linalg.eigh(_precise(cov_moving * to_voxels))
    _, axes_static = torch.linalg.eigh(_precise(cov_static * to_voxels))
    h = _precise(h)
    # det(R) = det(U_m) det(D) det(U_s) must be +1: the last sign follows from the others.
    parity = torch.linalg.det(axes_moving) * torch.linalg.det(axes_static)  # (B,), +-1
    rotations = []
    for signs in itertools.product((1.0, -1.0), repeat=ndim - 1):
        first = torch.tensor(signs, dtype=h.dtype, device=h.device).expand(parity.shape[0], ndim - 1)
        last = parity.sign() * first.prod(1)
        d = torch.diag_embed(torch.cat([first, last[:, None]], dim=1))
        r = axes_moving @ d @ axes_static.transpose(1, 2)
        r = r / h[:, None] * h[None, :]  # H^-1 R H
        rotations.append(r.to(cov_moving.dtype))
    return rotations


# --- argument checks -----------------------------------------------------------------------

def _check_bool(fn: str, name: str, value) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{fn}: {name} must be a bool, got {value!r}")
    return value


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_positive(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def _check_scales(fn: str, scales) -> tuple[float, ...]:
    if isinstance(scales, (int, float)) and not isinstance(scales, bool):
        scales = (scales,)
    if isinstance(scales, (str, bytes)) or not isinstance(scales, Sequence) or len(scales) == 0:
        raise ValueError(f"{fn}: scales must be a non-empty sequence of downsampling factors >= 1, got {scales!r}")
    if not all(_is_positive(s) and s >= 1 for s in scales):
        raise ValueError(f"{fn}: scales must be downsampling factors >= 1 (1 = full resolution), got {tuple(scales)!r}")
    return tuple(scales)


def _per_level(fn: str, name: str, value, levels: int, ok, what: str) -> tuple:
    if not isinstance(value, (str, bytes)) and isinstance(value, Sequence):
        values = tuple(value)
        if len(values) != levels:
            raise ValueError(f"{fn}: {name} must have one entry per scale ({levels}), got {values!r}")
    else:
        values = (value,) * levels
    if not all(ok(v) for v in values):
        raise ValueError(f"{fn}: {name} must be {what} (one, or one per scale), got {value!r}")
    return values
