"""Symmetric diffeomorphic registration (SyN-style) on regnet's ops, torchreg's interface.

Two stationary velocity fields are optimised at once, ``v_xy`` on the moving side and
``v_yx`` on the static side; the maps they define are :mod:`regnet.registration.syn_fields`'.

**Objective.** ANTs' symmetric one: the two images are compared half-way,
``sim(moving o exp(v_xy), static o exp(v_yx)) + lambda_ * (reg(exp(v_xy)) + reg(exp(v_yx)))``.
torchreg adds the two full-map terms ``sim(static, moving o xy_full) + sim(moving, static o
yx_full)`` and regularises the full maps; that needs the two inverse exponentials and a
composition in every iteration (2.1x the time) and was less accurate here
(``docs/registration.md``).

**Velocity grid.** The velocities live on a grid ``velocity_scale`` (2 in 2D, 1.5 in 3D)
times coarser than each level's image grid; ``exp`` runs on that grid and its displacement is
upsampled linearly to the images (in 3D the finest level is half resolution by default, as
in ANTs' default SyN: a full-resolution iteration costs about ten half-resolution ones). The
exponentials, a costly part (a 3D ``grid_sample`` forward and backward per squaring), then
cost ``velocity_scale ** ndim`` times less.

All fields are regnet DDFs ``(B, ndim, *spatial)`` in voxels of the static grid (torchreg
returns normalised, channel-last flows instead: ``flow_torchreg[..., k] = 2 * ddf[:, ndim - 1 -
k] / (n - 1)`` permuted to channel-last).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch

from regnet import _checks, ops
from regnet.geometry import matrix_to_ddf, resize_field, theta_to_voxel
from regnet.losses import DiffusionLoss, LocalNCCLoss
from regnet.registration._graph import graph_wanted
from regnet.registration._item_loss import similarity
from regnet.registration._levels import LossLog, check_masks, check_pair, cpu_threads_for, make_optimizer, run_level
from regnet.registration._options import LevelOptions, WithLevelOptions
from regnet.registration._pyramid import downsample, level_shape, resize
from regnet.registration.affine import AffineRegistration
from regnet.registration.descent import NormalisedDescent
from regnet.registration.syn_fields import full_maps, half_maps


def default_iterations(scales: Sequence[float], ndim: int) -> list[int]:
    """Iterations per level when none are given: 30 (2D) / 40 (3D) at the coarsest level,
    20 at the others, and at full resolution (scale <= 1, not the only level) 5 in 2D and
    none in 3D, where an iteration costs about 10x a half-resolution one (ANTs' default SyN,
    ``40x20x0``, likewise stops at half resolution). Full-resolution iterations buy Dice for
    time: ``configs/syn_brain_accurate.yaml`` and ``docs/registration.md``."""
    out = []
    for i, scale in enumerate(scales):
        if i == 0:
            out.append(40 if ndim == 3 else 30)
        elif scale <= 1:
            out.append(0 if ndim == 3 else 5)
        else:
            out.append(20)
    return out


def default_regularisation(ndim: int) -> float:
    """The regulariser's weight when none is given: 0.1 in 2D, 0.6 in 3D. Chosen with the
    normalised step and :func:`default_regulariser` on the measurements of
    ``docs/registration.md``: in 3D, 0.6 with the volume-change term keeps the fields smoother
    than ANTs' SyN (SDlogJ) on both the label-map contrast and a real T1's contrast and texture
    (where ANTs' fields are smoother and 0.5 was rougher than ANTs), while staying more
    accurate than it on the brain pairs (0.7 fell below it on one real-T1 pair, 0.6 ties it
    there); in 2D, 0.1 keeps the accuracy of the five brain2d pairs (higher weights cost NCC
    there)."""
    return 0.1 if ndim == 2 else 0.6


DIVERGENCE_WEIGHT_3D = 4.0


def default_regulariser(ndim: int) -> DiffusionLoss:
    """The regulariser when none is given: diffusion, in 3D plus
    :data:`DIVERGENCE_WEIGHT_3D` times ``(div u)^2`` (:func:`regnet.losses.functional.diffusion`),
    which penalises local volume change more than shear and shift: on the brain pairs, fields
    with lower SDlogJ at the same Dice (``docs/registration.md``). 2D keeps MONAI's diffusion
    (the term cost the brain2d pairs a little NCC there)."""
    return DiffusionLoss(divergence_weight=DIVERGENCE_WEIGHT_3D if ndim == 3 else 0.0)


def default_time_steps(ndim: int) -> int:
    """Scaling-and-squaring steps of ``exp`` when none are given: 7 in 2D, 5 in 3D. In 3D each
    step is a ``grid_sample`` forward and backward of both velocity fields in every iteration,
    most of an iteration's time; 5 instead of 7 left the brain pairs' Dice and SDlogJ unchanged
    (pairs 1-5: within 0.001) for about 15% less time (``docs/registration.md``). 2D keeps 7
    (6 or 5 moved the brain2d pairs' NCC by up to 0.0004)."""
    return 7 if ndim == 2 else 5


def default_velocity_scale(ndim: int) -> float:
    """2 in 2D (the full-resolution level runs, velocity every 2 pixels), 1.5 in 3D (the
    finest level is half resolution: velocity every 3 voxels); measurements in
    ``docs/registration.md``."""
    return 2.0 if ndim == 2 else 1.5


class SyNRegistration(WithLevelOptions):
    """Symmetric diffeomorphic registration of ``moving`` onto ``static``, 2D or 3D, batched.

    Example::

        syn = SyNRegistration(affine=True)
        moved, moved_static, ddf, inverse_ddf = syn(moving, static)   # (B, C, ...), (B, ndim, ...)
        labels_moved = syn.transform(labels, mode="nearest")

    Args (torchreg's, with regnet's defaults, plus ``velocity_scale``, ``tolerance``,
    ``check_every``):
        scales: pyramid factors of the images, coarse to fine.
        iterations: iterations per scale (a level may stop early, see ``tolerance``); one int
            for all levels, one per scale, or ``None``: :func:`default_iterations` (ANTs'
            schedule in 3D, ``(40, 20, 0)``: none at full resolution).
        learning_rate: the optimiser's step in voxels of each level's image grid (one value or
            one per scale): with :class:`~regnet.registration.descent.NormalisedDescent`, how far
            a step moves the velocity where its gradient is largest.
        dissimilarity_function: ``f(a, b) -> scalar``; local NCC (kernel 9) by default.
        regularization_function: ``f(ddf) -> scalar`` of a voxel DDF; ``None``:
            :func:`default_regulariser` (diffusion; in 3D plus a volume-change term).
        sigma_img: Gaussian smoothing of both images at each level, in voxels of that level.
        sigma_flow: Gaussian smoothing of the velocity parameters, in voxels of the velocity
            grid; the smoothed field is the velocity (greedy-SyN style update smoothing).
        lambda_: weight of the regulariser; ``None``: :func:`default_regularisation` (0.1 in
            2D, 0.6 in 3D).
        optimizer: optimiser class, called as ``optimizer(params, step)``; default
            :class:`~regnet.registration.descent.NormalisedDescent` (ANTs' normalised gradient
            step: smoother fields than Adam for the same accuracy); torch's Adam / AdamW run as
            :class:`~regnet.registration._adam.FusedAdam`.
        time_steps: scaling-and-squaring steps of ``exp``; ``None``: :func:`default_time_steps`
            (7 in 2D, 5 in 3D).
        velocity_scale: the velocity grid is this many times coarser than each level's image
            grid (``1``: the image grid itself); one value, or one per level (e.g. a
            full-resolution level whose velocity stays on the previous level's grid: ``(1.5,
            1.5, 3)`` with scales ``(4, 2, 1)``); ``None``: :func:`default_velocity_scale` (2
            in 2D, 1.5 in 3D).
        tolerance: relative loss improvement over ``check_every`` iterations below which a
            level stops early (0 disables).
        verbose: tqdm bar per level with the loss.
        affine: affine initialisation: ``True`` runs an
            :class:`~regnet.registration.affine.AffineRegistration` (its defaults) of moving onto
            static first, or pass a configured instance; SyN then registers the affinely
            moved image and every returned field includes the affine part (``theta`` after
            the call; ``None`` without).
        cuda_graph: replay each level's iterations from a CUDA graph after three eager ones
            (:mod:`regnet.registration._graph`): ``None`` (auto) on CUDA with torch's Adam /
            AdamW and regnet's losses, ``True`` on CUDA whatever the functions (they must not
            synchronise with the host), ``False`` never. Ignored off CUDA.

    After ``__call__``: ``v_xy``, ``v_yx`` (velocities on the finest velocity grid, in its
    voxels), ``loss_history`` (per level), ``level_times`` (s). The transformation they
    define is ``resize_field(exp(v), static grid)`` (:meth:`fields`).
    """

    def __init__(
        self,
        scales: Sequence[float] = (4, 2, 1),
        iterations: Sequence[int] | int | None = None,
        learning_rate: float | Sequence[float] = 0.35,
        verbose: bool = True,
        dissimilarity_function: Callable | None = None,
        regularization_function: Callable | None = None,
        optimizer: Callable = NormalisedDescent,
        sigma_img: float = 0.0,
        sigma_flow: float = 1.0,
        lambda_: float | None = None,
        time_steps: int | None = None,
        velocity_scale: float | Sequence[float] | None = None,
        tolerance: float = 1e-4,
        check_every: int = 10,
        affine: bool | AffineRegistration = False,
        cuda_graph: bool | None = None,
    ) -> None:
        fn = "SyNRegistration"
        self.options = LevelOptions.check(fn, scales, iterations, learning_rate, verbose, optimizer, tolerance,
                                          check_every, cuda_graph)
        self.dissimilarity_function = _checks.callable_(
            fn, "dissimilarity_function", dissimilarity_function or LocalNCCLoss(kernel_size=9), "callable(a, b)")
        self.regularization_function = None if regularization_function is None else _checks.callable_(
            fn, "regularization_function", regularization_function, "callable(ddf)")
        self.sigma_img = _checks.number(fn, "sigma_img", sigma_img, low=0.0)
        self.sigma_flow = _checks.number(fn, "sigma_flow", sigma_flow, low=0.0)
        self.lambda_ = None if lambda_ is None else _checks.number(fn, "lambda_", lambda_, low=0.0)
        self.time_steps = None if time_steps is None else _checks.non_negative_int(fn, "time_steps", time_steps)
        if velocity_scale is None:
            self.velocity_scale: float | tuple[float, ...] | None = None
        else:
            factors = _checks.per_level(fn, "velocity_scale", velocity_scale, len(self.scales),
                                        lambda v: _checks.is_positive(v) and v >= 1, "numbers >= 1")
            scalar = isinstance(velocity_scale, (int, float))
            self.velocity_scale = float(factors[0]) if scalar else tuple(float(v) for v in factors)
        if not isinstance(affine, (bool, AffineRegistration)):
            raise TypeError(f"{fn}: affine must be a bool or an AffineRegistration, got {type(affine).__name__}")
        self.affine = affine
        self.reset()

    def default_for(self, name: str, ndim: int):
        """The value that the constructor argument ``name``, left ``None``, takes for ``ndim``-D
        images (``Config.settings(stage, ndim)`` reports it), or ``None`` when the argument has
        no dimension-dependent default."""
        resolve = {"iterations": lambda: default_iterations(self.scales, ndim),
                   "lambda_": lambda: default_regularisation(ndim),
                   "regularization_function": lambda: default_regulariser(ndim),
                   "time_steps": lambda: default_time_steps(ndim),
                   "velocity_scale": lambda: default_velocity_scale(ndim)}.get(name)
        return None if resolve is None else resolve()

    def reset(self) -> None:
        """Forget the fields of an earlier call."""
        self.v_xy = self.v_yx = None
        self.theta = None
        self._static_shape = None
        self.loss_history: list[list[float]] = []
        self.level_times: list[float] = []
        self._masks: list[torch.Tensor | None] = [None, None]

    # --- fields --------------------------------------------------------------------------

    def apply_flows(self, x, y, v_xy, v_yx):
        """Half-way and full images and fields for velocities ``v_xy``, ``v_yx`` (torchreg's
        ``apply_flows``, regnet DDFs on the grid of ``x`` and ``y``; the velocities may be on a
        coarser grid, see the class docstring). Returns ``(images, flows)`` dicts with keys
        ``xy_half, yx_half, xy_full, yx_full``."""
        batch = v_xy.shape[0]
        half = resize_field(half_maps(v_xy, v_yx, self._time_steps(v_xy.dim() - 2)), x.shape[2:])
        fields = torch.cat([half[: 2 * batch], full_maps(half)])
        images = ops.warp(torch.cat([x, y, x, y]), fields)
        names = ("xy_half", "yx_half", "xy_full", "yx_full")
        return (
            {k: images[i * batch:(i + 1) * batch] for i, k in enumerate(names)},
            {k: fields[i * batch:(i + 1) * batch] for i, k in enumerate(names)},
        )

    def _time_steps(self, ndim: int) -> int:
        return default_time_steps(ndim) if self.time_steps is None else self.time_steps

    def _velocity(self, p: torch.Tensor) -> torch.Tensor:
        return ops.gaussian_smooth(p, self.sigma_flow, mode="nearest") if self.sigma_flow > 0 else p

    # --- optimisation --------------------------------------------------------------------

    def __call__(self, moving, static, v_xy=None, v_yx=None, return_moved=True, *, static_mask=None,
                 moving_mask=None):
        """Register ``moving`` onto ``static`` (``(B, C, *spatial)``, same grid shape).

        ``v_xy``, ``v_yx``: optional starting velocities ``(B, ndim, *grid)`` in voxels of
        their own grid (any grid; resized to each level's velocity grid).

        ``static_mask``, ``moving_mask`` ``(B or 1, 1, *spatial)``: restrict the similarity to
        a region (ANTs' ``-x``): each mask follows its image half-way and the similarity counts
        the half-way voxels inside both (0/1 or soft weights, no gradient through them). The
        dissimilarity function must take ``mask=`` (regnet's losses do).

        Returns ``(moved, moved_static, ddf, inverse_ddf)``: moving warped onto static,
        static warped onto moving, the forward DDF (static grid, pull: ``moved(x) =
        moving(x + ddf(x))``) and the inverse DDF; ``None`` if ``return_moved`` is false.
        """
        fn = "SyNRegistration"
        check_pair(fn, moving, static)
        masks = check_masks(fn, static_mask, static, moving_mask, moving)
        with cpu_threads_for(static):
            return self._register(moving, static, v_xy, v_yx, return_moved, masks)

    def _register(self, moving, static, v_xy, v_yx, return_moved, masks=(None, None)):
        if moving.shape != static.shape:
            raise ValueError(
                f"SyNRegistration: moving {tuple(moving.shape)} and static {tuple(static.shape)} must be on one "
                f"grid; resample moving onto the static grid first (regnet.geometry.resample_to, or an affine)"
            )
        ndim = static.dim() - 2
        shape = tuple(static.shape[2:])
        self.theta = None
        original = moving
        if self.affine is not False:
            affine = self.affine
            if not isinstance(affine, AffineRegistration):
                affine = AffineRegistration(verbose=self.verbose)
            moving = affine(moving, static, static_mask=masks[0], moving_mask=masks[1])
            self.theta, self._affine_align_corners = affine.get_affine(), affine.align_corners
            if masks[1] is not None:
                masks = [masks[0], affine.transform(masks[1].expand(moving.shape[0], -1, *masks[1].shape[2:]))]
        factors = self.velocity_scale or default_velocity_scale(ndim)
        self._grid_factors = factors if isinstance(factors, tuple) else (factors,) * len(self.scales)
        self._lambda = default_regularisation(ndim) if self.lambda_ is None else self.lambda_
        self._regulariser = self.regularization_function or default_regulariser(ndim)
        first = level_shape(level_shape(shape, self.scales[0]), self._grid_factors[0])
        zeros = static.new_zeros((static.shape[0], ndim, *first))
        self.v_xy = zeros if v_xy is None else v_xy.detach().to(static)
        self.v_yx = zeros.clone() if v_yx is None else v_yx.detach().to(static)
        self._static_shape = shape
        self.loss_history, self.level_times = [], []
        schedule = self.iterations or default_iterations(self.scales, ndim)
        for scale, iterations, lr, factor in zip(self.scales, schedule, self.learning_rates, self._grid_factors,
                                                 strict=True):
            if iterations == 0:  # nothing to fit: the velocities stay on their grid
                self.loss_history.append([])
                self.level_times.append(0.0)
                continue
            start = time.perf_counter()
            level = level_shape(shape, scale)
            x, y = downsample(moving, level), downsample(static, level)
            self._masks = [None if m is None else resize(m, level) for m in masks]
            if self.sigma_img > 0:
                x, y = ops.gaussian_smooth(x, self.sigma_img), ops.gaussian_smooth(y, self.sigma_img)
            with torch.enable_grad(), cpu_threads_for(y):  # also inside a caller's no_grad block
                self._fit(x, y, iterations, lr, factor, f"SyN {'x'.join(map(str, level))}")
            self.level_times.append(time.perf_counter() - start)
        if not return_moved:
            return None
        ddf, inverse = self.fields()
        with torch.no_grad():
            moved = ops.warp(torch.cat([original, static]), torch.cat([ddf, inverse]))
        batch = moving.shape[0]
        return moved[:batch], moved[batch:], ddf, inverse

    def _fit(self, x, y, iterations, lr, factor, description):
        shape = x.shape[2:]
        grid = level_shape(shape, factor)
        # Parameters are unsmoothed; velocities are their smoothed version. Between levels the
        # smoothed velocity is carried over (resized, in voxels of the new grid).
        # One parameter for both sides, (2B, ndim, *grid): [v_xy; v_yx] (smoothed and
        # exponentiated in one call each; the optimisers treat every batch item on its own).
        velocities = torch.nn.Parameter(resize_field(torch.cat([self.v_xy, self.v_yx]), grid).clone())
        # learning_rate is in image voxels; the parameters are in velocity-grid voxels
        step = lr * (grid[0] - 1) / max(shape[0] - 1, 1)
        functions = [self.dissimilarity_function, self._regulariser if self._lambda else None]
        graph = graph_wanted(self.cuda_graph, x.device, self.optimizer, functions)
        optimizer = make_optimizer(self.optimizer, [velocities], step, capturable=graph)
        log = LossLog(iterations, description, self.verbose)
        # Losses are means over voxels (and pairs): per-voxel gradients of ~1/voxels would sit
        # near Adam's eps, which would then set the step size and couple the pairs of a batch.
        # Scaling by batch * voxels (Adam is otherwise scale-invariant) removes both effects.
        batch = x.shape[0]
        gradient_scale = float(batch * x[0, 0].numel())
        images_xy = torch.cat([x, y])
        steps = self._time_steps(x.dim() - 2)

        def iteration():
            half = resize_field(ops.exp(self._velocity(velocities), steps, padding_mode="border"), shape)
            # split, not [:batch] / [batch:]: the backward of split concatenates the two
            # gradients, where each slice's backward would zero-fill a full-size buffer
            moved_x, moved_y = ops.warp(images_xy, half).split(batch)
            mask = self._halfway_mask(half, batch)
            loss = similarity(self.dissimilarity_function, moved_x, moved_y, mask)
            if self._lambda:
                half_x, half_y = half.split(batch)
                regulariser = self._regulariser(half_x) + self._regulariser(half_y)
                loss = loss + self._lambda * regulariser
            (loss * gradient_scale).backward()
            optimizer.step()
            return loss.detach(), None

        run_level(iteration, optimizer, graph, log, iterations, self.check_every, self.tolerance)
        self.loss_history.append(log.values())
        with torch.no_grad():
            smoothed = self._velocity(velocities.detach())
            self.v_xy, self.v_yx = smoothed[:batch], smoothed[batch:]

    def _halfway_mask(self, half: torch.Tensor, batch: int) -> torch.Tensor | None:
        """The level's masks carried half-way by the current maps (moving by ``half[:B]``, static
        by ``half[B:]``) and multiplied; ``None`` without masks. No gradient."""
        static_mask, moving_mask = self._masks
        if static_mask is None and moving_mask is None:
            return None
        with torch.no_grad():
            out = None
            for mask, field in ((moving_mask, half[:batch]), (static_mask, half[batch:])):
                if mask is not None:
                    moved = ops.warp(mask, field.detach(), padding_mode="zeros")
                    out = moved if out is None else out * moved
        return out

    # --- using the result ----------------------------------------------------------------

    def fields(self):
        """``(ddf, inverse_ddf)`` on the static grid from the fitted velocities (composed on the
        velocity grid, then upsampled), including the affine part when there is one."""
        if self.v_xy is None:
            raise RuntimeError("SyNRegistration: call the registration before asking for its fields")
        with torch.no_grad(), cpu_threads_for(self.v_xy):
            steps = self._time_steps(self.v_xy.dim() - 2)
            full = resize_field(full_maps(half_maps(self.v_xy, self.v_yx, steps)), self._static_shape)
            batch = self.v_xy.shape[0]
            ddf, inverse = full[:batch], full[batch:]
            if self.theta is not None:
                ddf, inverse = self._with_affine(ddf, inverse)
        return ddf, inverse

    def _with_affine(self, ddf, inverse):
        """Total fields of ``x -> A (x + ddf(x))`` and its inverse ``y -> z + inverse(z)``,
        ``z = A^-1 y``, with ``A`` the affine stage's map in voxels of the (common) grid."""
        shape = self._static_shape
        voxel_map = theta_to_voxel(self.theta.double(), shape, align_corners=self._affine_align_corners)
        total = matrix_to_ddf(voxel_map, shape, ddf.double()).to(ddf.dtype)
        to_static = matrix_to_ddf(torch.linalg.inv(voxel_map), shape).to(ddf.dtype)
        return total, ops.compose(inverse, to_static)

    def transform(self, image, direction: str = "forward", mode: str = "bilinear"):
        """Warp ``image`` ``(B, C, *spatial)``: ``"forward"`` maps a moving-space image onto
        the static grid, ``"inverse"`` a static-space image onto the moving grid."""
        if direction not in ("forward", "inverse"):
            raise ValueError(f"SyNRegistration.transform: direction must be 'forward' or 'inverse', got {direction!r}")
        ddf, inverse = self.fields()
        field = ddf if direction == "forward" else inverse
        if image.shape[0] != field.shape[0] or image.shape[2:] != field.shape[2:]:
            raise ValueError(
                f"SyNRegistration.transform: image must have shape (B, C, *spatial) = ({field.shape[0]}, C, "
                f"{', '.join(map(str, field.shape[2:]))}), got {tuple(image.shape)}"
            )
        return ops.warp(image.to(field.dtype), field, mode=mode)
