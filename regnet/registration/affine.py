"""Iterative affine registration: torchreg's ``AffineRegistration`` on ``regnet.ops``.

The affine map is ``theta = compose_affine(translation, rotation, zoom, shear)``
(``[R @ S | t]``, torchreg's formula) in normalised coordinates, ``affine_grid``'s
convention: output grid = the static image, input = the moving image. Every iteration
resamples the moving image through the parameters with one fused op
(:func:`regnet.ops.affine_transform_params`: no sampling grid built here) and takes one
optimiser step. The measurements behind the defaults are in ``docs/registration.md``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch

from regnet import _checks, ops
from regnet.losses import MSELoss
from regnet.registration._graph import graph_wanted
from regnet.registration._item_loss import ItemLoss
from regnet.registration._levels import LossLog, check_masks, check_pair, cpu_threads_for, make_optimizer, run_level
from regnet.registration._options import LevelOptions, WithLevelOptions
from regnet.registration._pyramid import downsample, level_shape, resize
from regnet.registration.initialisation import initial_candidates

INITS = ("com", "moments", None)
INTERP_MODES = (None, "bilinear", "trilinear", "nearest")
#: torchreg's default loss; it holds only configuration, so one instance serves every registration.
DEFAULT_DISSIMILARITY = MSELoss()
#: Default iteration limits (``iterations=None``) and step sizes (``learning_rate=None``):
#: torchreg's ``(500, 100)`` and 1e-2 at the coarsest level, 3e-3 at the finer ones.
COARSE_ITERATIONS = 500
FINE_ITERATIONS = 100
COARSE_LEARNING_RATE = 1e-2
FINE_LEARNING_RATE = 3e-3


class AffineRegistration(WithLevelOptions):
    """Multi-resolution affine registration of a batch of image pairs.

    Drop-in for ``torchreg.AffineRegistration`` (same arguments, same order, same parameters
    and ``theta``; with ``init=None``, ``tolerance=0``, ``learning_rate=1e-2`` it takes
    torchreg's optimisation steps, identical at full resolution; on coarser levels regnet's
    pyramid is anti-aliased, torchreg's is not), plus: initialisation from the centres of mass or
    the principal axes, early stopping, per-level loss history and timing, batches of pairs,
    moving and static images of different shapes, 2D and 3D from the input rank.

    Example::

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
    common world frame outside (:mod:`regnet.geometry`, :func:`regnet.registration.register_images`).

    **Batches.** ``moving`` and ``static`` ``(B, C, ...)`` hold B independent pairs; every
    parameter has batch dimension B. The loss optimised is the mean over items of per-item
    losses (:class:`~regnet.registration._item_loss.ItemLoss`), so each item's gradient depends
    on its own pair only, and Adam (per-element steps) moves each item as if it were registered
    alone. The early stop waits for every item to converge.

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
            default), ``"moments"`` (centres of mass and principal axes: each proper sign choice
            of the axes, and no rotation, is optimised at the coarsest level side by side as a
            batch and the one with the lowest loss kept: 3 candidates in 2D, 5 in 3D) or
            ``None`` (identity, torchreg); see :mod:`regnet.registration.initialisation`.
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
        init_time: seconds spent computing the starting parameters.
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
        levels = len(_checks.scales(fn, scales))
        if iterations is None:
            iterations = (COARSE_ITERATIONS,) + (FINE_ITERATIONS,) * (levels - 1)
        if learning_rate is None:
            learning_rate = (COARSE_LEARNING_RATE,) + (FINE_LEARNING_RATE,) * (levels - 1)
        self.options = LevelOptions.check(fn, scales, iterations, learning_rate, verbose, optimizer, tolerance,
                                          check_every, cuda_graph)
        self.is_3d = _checks.optional_boolean(fn, "is_3d", is_3d)
        self.dissimilarity_function = _checks.callable_(fn, "dissimilarity_function", dissimilarity_function,
                                                        "callable(moved, static)")
        for name, value in (("init_translation", init_translation), ("init_rotation", init_rotation),
                            ("init_zoom", init_zoom), ("init_shear", init_shear)):
            if value is not None and not isinstance(value, torch.Tensor):
                raise TypeError(f"{fn}: {name} must be a torch.Tensor or None, got {type(value).__name__}")
        self.inits = (init_translation, init_rotation, init_zoom, init_shear)
        self.withs = tuple(
            _checks.boolean(fn, name, value)
            for name, value in (("with_translation", with_translation), ("with_rotation", with_rotation),
                                ("with_zoom", with_zoom), ("with_shear", with_shear))
        )
        self.align_corners = _checks.boolean(fn, "align_corners", align_corners)
        self.interp_mode = _checks.choice(fn, "interp_mode", interp_mode, INTERP_MODES)
        self.padding_mode = _checks.choice(fn, "padding_mode", padding_mode, _checks.PADDING_MODES)
        self.init = _checks.choice(fn, "init", init, INITS)
        self.reset()

    # --- state ---------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget the last registration (parameters, histories, shapes)."""
        self.parameters: list[torch.nn.Parameter] | None = None
        self.loss_history: list[list[float]] = []
        self.level_times: list[float] = []
        self.init_time: float = 0.0
        self._static_shape: tuple[int, ...] | None = None
        self._masks: list[torch.Tensor | None] = [None, None]

    def _fitted(self, fn: str) -> list[torch.nn.Parameter]:
        if self.parameters is None:
            raise RuntimeError(f"AffineRegistration.{fn}: no registration yet; call reg(moving, static) first")
        return self.parameters

    # --- registration --------------------------------------------------------------------

    def __call__(self, moving: torch.Tensor, static: torch.Tensor, return_moved: bool = True, *,
                 static_mask: torch.Tensor | None = None, moving_mask: torch.Tensor | None = None):
        """Register ``moving`` onto ``static``, both ``(B, C, *spatial)`` (spatial shapes may
        differ). Returns the moved image ``(B, C, *static.shape[2:])`` (detached), or ``None``
        with ``return_moved=False``.

        ``static_mask`` ``(B or 1, 1, *static spatial)`` / ``moving_mask`` ``(B or 1, 1, *moving
        spatial)``: restrict the similarity to a region (ANTs' ``-x``): only static voxels inside
        the static mask whose point falls inside the moving mask count (0/1 or soft weights;
        the moving mask follows the current affine). The dissimilarity function must take
        ``mask=`` (regnet's losses do)."""
        fn = "AffineRegistration"
        check_pair(fn, moving, static)
        masks = check_masks(fn, static_mask, static, moving_mask, moving)
        with cpu_threads_for(static):
            return self._register(moving, static, return_moved, masks)

    def _register(self, moving: torch.Tensor, static: torch.Tensor, return_moved: bool, masks=(None, None)):
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
        loss_fn = ItemLoss(self.dissimilarity_function, batch)

        start = time.perf_counter()
        candidates = initial_candidates(fn, moving, static, self.init, self.inits, self.align_corners)
        count = len(candidates)  # > 1: principal-axes candidates, optimised side by side at level 0
        self.parameters = [
            torch.nn.Parameter(torch.cat([c[i] for c in candidates]), requires_grad=w)
            for i, w in enumerate(self.withs)
        ]
        self.init_time = time.perf_counter() - start

        options = self.options
        levels = zip(options.scales, options.iterations, options.learning_rates, strict=True)
        for level, (scale, iterations, lr) in enumerate(levels):
            start = time.perf_counter()
            moving_l = downsample(moving, level_shape(moving.shape[2:], scale), self.align_corners)
            static_l = downsample(static, level_shape(static.shape[2:], scale), self.align_corners)
            masks_l = [None if m is None else resize(m, level_shape(m.shape[2:], scale), self.align_corners)
                       for m in masks]
            level_loss = loss_fn
            if level == 0 and count > 1:
                moving_l = moving_l.repeat(count, *[1] * (moving_l.dim() - 1))
                static_l = static_l.repeat(count, *[1] * (static_l.dim() - 1))
                masks_l = [None if m is None or m.shape[0] == 1 else m.repeat(count, *[1] * (m.dim() - 1))
                           for m in masks_l]
                level_loss = ItemLoss(self.dissimilarity_function, count * batch)
            self._masks = masks_l
            description = f"affine {level + 1}/{len(options.scales)} {tuple(static_l.shape[2:])}"
            log = LossLog(iterations, description, options.verbose)
            trainable = [p for p in self.parameters if p.requires_grad]
            if trainable and iterations > 0:
                with torch.enable_grad(), cpu_threads_for(static_l):  # also inside a caller's no_grad block
                    # finer levels start from a converged estimate: judge them on half windows
                    check = options.check_every if level == 0 else max(1, options.check_every // 2)
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
            final = loss_fn.per_item(moved, static, self._mask(self.parameters, static.shape[2:])).view(count, batch)
            index = final.argmin(0) * batch + torch.arange(batch, device=final.device)
        self.parameters = [torch.nn.Parameter(p.detach()[index], requires_grad=p.requires_grad)
                           for p in self.parameters]
        if not log.items or len(log.items) != len(log.losses):
            return None
        return loss_fn.combine(torch.stack(log.items)[:, index]).cpu().tolist()

    def _fit_level(self, moving, static, iterations, lr, trainable, loss_fn, log: LossLog, check: int) -> None:
        graph = graph_wanted(self.cuda_graph, static.device, self.optimizer, [self.dissimilarity_function])
        optimizer = make_optimizer(self.optimizer, trainable, lr, capturable=graph)
        mode = "bilinear" if self.interp_mode in (None, "trilinear") else self.interp_mode
        options = (tuple(static.shape[2:]), mode, self.padding_mode, self.align_corners)

        def iteration():
            moved = ops.affine_transform_params(moving, *self.parameters, *options)
            loss, items = loss_fn(moved, static, self._mask(self.parameters, options[0]))
            loss.backward()
            optimizer.step()
            return loss.detach(), None if items is None else items.detach()

        run_level(iteration, optimizer, graph, log, iterations, check, self.tolerance)

    def _mask(self, parameters, shape) -> torch.Tensor | None:
        """The level's similarity mask for the current parameters: the static mask times the
        moving mask sampled through the affine (no gradient); ``None`` without masks."""
        static_mask, moving_mask = self._masks
        if moving_mask is None:
            return static_mask
        with torch.no_grad():
            theta = ops.compose_affine(*(p.detach() for p in parameters))
            moved = ops.affine_transform(moving_mask, theta, tuple(shape), "bilinear", "zeros", self.align_corners)
        return moved if static_mask is None else moved * static_mask

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
