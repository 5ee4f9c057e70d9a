"""Symmetric diffeomorphic registration (SyN-style) on regnet's ops, torchreg's interface.

Two stationary velocity fields are optimised at once, ``v_xy`` on the moving side and
``v_yx`` on the static side; each half-way map is ``exp(v)`` and the full maps are::

    xy_full = compose(exp(v_xy), exp(-v_yx))   # static grid -> moving: warps moving onto static
    yx_full = compose(exp(v_yx), exp(-v_xy))   # moving grid -> static: warps static onto moving

**Objective.** ANTs' symmetric one: the two images are compared half-way,
``sim(moving o exp(v_xy), static o exp(v_yx)) + lambda_ * (reg(exp(v_xy)) + reg(exp(v_yx)))``.
torchreg adds the two full-map terms ``sim(static, moving o xy_full) + sim(moving, static o
yx_full)`` and regularises the full maps; that needs the two inverse exponentials and a
composition in every iteration (2.1x the time) and was less accurate here (see the class
docstring).

**Velocity grid.** The velocities live on a grid ``velocity_scale`` (2 in 2D, 1.5 in 3D)
times coarser than each level's image grid; ``exp`` runs on that grid and its displacement is
upsampled linearly to the images (in 3D the finest level is half resolution by default, as
in ANTs' default SyN). The exponentials, the
costly part (a 3D ``grid_sample`` forward and backward per squaring), then cost
``velocity_scale ** ndim`` times less.

All fields are regnet DDFs ``(B, ndim, *spatial)`` in voxels of the static grid (torchreg
returns normalised, channel-last flows instead: ``flow_torchreg[..., k] = 2 * ddf[:, ndim - 1 -
k] / (n - 1)`` permuted to channel-last).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch

from regnet import ops
from regnet.io.world import voxel_to_normalised
from regnet.losses import DiffusionLoss, LocalNCCLoss
from regnet.registration._common import (
    LossLog,
    check_pair,
    cpu_threads_for,
    downsample,
    level_shape,
    make_optimizer,
    resize_field,
)
from regnet.registration._graph import IterationRunner, graph_wanted
from regnet.registration.affine import AffineRegistration


def _as_levels(name: str, value, n: int, kind=float) -> list:
    values = list(value) if isinstance(value, Sequence) else [value] * n
    if len(values) != n:
        raise ValueError(f"SyNRegistration: {name} must be one value or {n} values (one per scale), got {value!r}")
    return [kind(v) for v in values]


def default_iterations(scales: Sequence[float], ndim: int) -> list[int]:
    """Iterations per level when none are given: 30 (2D) / 40 (3D) at the coarsest level,
    20 at the others, and at full resolution (scale <= 1, not the only level) 5 in 2D and
    none in 3D, where an iteration costs 8x the half-resolution one (ANTs' default SyN,
    ``40x20x0``, likewise stops at half resolution)."""
    out = []
    for i, scale in enumerate(scales):
        if i == 0:
            out.append(40 if ndim == 3 else 30)
        elif scale <= 1:
            out.append(0 if ndim == 3 else 5)
        else:
            out.append(20)
    return out


def default_velocity_scale(ndim: int) -> float:
    """2 in 2D (the full-resolution level runs, velocity every 2 pixels), 1.5 in 3D (the
    finest level is half resolution: velocity every 3 voxels). Measured on the real
    subject_a -> MNI152 pair (``scripts/bench_intersubject3d.py``, two threads, SyN
    iterations 40x20x0): factor 2: white / cortical grey matter Dice 0.796 / 0.633 in 10.8 s;
    1.5: 0.818 / 0.658 in 17.2 s; 1: 0.830 / 0.683 in 39.8 s; ANTsPy SyN: 0.782 / 0.634 in
    45.3 s. On the synthetic 3D case (smooth deformation) 2 and 1.5 are alike (Dice 0.941 /
    0.938); in 2D, 1.5 would be ~15% slower than ANTsPy SyN on some real pairs."""
    return 2.0 if ndim == 2 else 1.5


class SyNRegistration:
    """Symmetric diffeomorphic registration of ``moving`` onto ``static``, 2D or 3D, batched.

    Args (torchreg's, with regnet's defaults, plus ``velocity_scale``, ``tolerance``,
    ``check_every``):
        scales: pyramid factors of the images, coarse to fine.
        iterations: iterations per scale (a level may stop early, see ``tolerance``); one int
            for all levels, one per scale, or ``None``: :func:`default_iterations` (ANTs'
            schedule in 3D: none at full resolution).
        learning_rate: Adam step in voxels of each level's image grid (one value or one per
            scale).
        dissimilarity_function: ``f(a, b) -> scalar``; local NCC (kernel 9) by default.
        regularization_function: ``f(ddf) -> scalar`` of a voxel DDF; diffusion by default.
        sigma_img: Gaussian smoothing of both images at each level, in voxels of that level.
        sigma_flow: Gaussian smoothing of the velocity parameters, in voxels of the velocity
            grid; the smoothed field is the velocity (greedy-SyN style update smoothing).
        lambda_: weight of the regulariser.
        time_steps: scaling-and-squaring steps of ``exp``.
        velocity_scale: the velocity grid is this many times coarser than each level's image
            grid (``1``: the image grid itself); ``None``: :func:`default_velocity_scale` (2 in
            2D, 1.5 in 3D).
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

    **Defaults and the measurement behind them** (CPU, one thread; the 3D case is
    ``scripts/bench_registration.py``'s: ``brain3d/subject_a`` at 2 mm, 80 x 96 x 112,
    deformed by a known random diffeomorphism; Dice over 30 labels, error of the recovered
    displacement inside the brain; 2D: r16 -> r64 after regnet's affine, global NCC)::

        objective, velocity grid, iterations              3D Dice  error   time   2D NCC  time
        torchreg's 3 terms, image grid, (30, 20, 5)       0.875    0.70mm  31 s   0.9957  1.15 s
        half-way only, image grid, (30, 20, 5)            0.886    0.68mm  15 s   0.9951  0.56 s
        half-way only, image grid, (60, 40, 0)            0.894    0.64mm  9.5 s
        half-way only, 2x coarser, (60, 40, 20)           0.941    0.40mm  12.5 s  0.9918  0.88 s
        half-way only, 2x coarser, (30, 20, 5)                                     0.9908  0.36 s

    (``sigma_flow=1`` instead of 1.5: Dice 0.914; ``learning_rate=0.5``: 0.835; ``time_steps=5``:
    0.868.) The synthetic deformation is smooth; real pairs need finer fields: in 2D the
    full-resolution level (velocity every 2 pixels) runs 5 iterations; in 3D the finest
    level is half resolution (ANTs' default SyN likewise stops there) with a velocity every
    3 voxels (:func:`default_velocity_scale`).

    With these defaults, through ``regnet register --transform affine+syn`` (two threads):
    the 3D case at full resolution (160 x 192 x 224) reaches Dice 0.939 and a displacement
    error of 0.36 mm in 11.3 s (ANTsPy SyN: 0.918, 0.48 mm, 31.8 s); the real pair subject_a ->
    MNI152 white / cortical grey matter Dice 0.818 / 0.658 in 14.8 s (ANTsPy SyN: 0.785 /
    0.636, 44.9 s); the five real inter-subject pairs of ``brain2d`` global NCC 0.9887-0.9912
    in 0.33-0.35 s (ANTsPy SyN: 0.9838-0.9870 in 0.42-0.53 s). See
    ``scripts/bench_registration.py``, ``scripts/bench_intersubject3d.py`` and
    ``scripts/bench_pairs2d.py``.
    """

    def __init__(
        self,
        scales: Sequence[float] = (4, 2, 1),
        iterations: Sequence[int] | int | None = None,
        learning_rate: float | Sequence[float] = 0.3,
        verbose: bool = True,
        dissimilarity_function=None,
        regularization_function=None,
        optimizer=torch.optim.Adam,
        sigma_img: float = 0.0,
        sigma_flow: float = 1.5,
        lambda_: float = 0.1,
        time_steps: int = 7,
        velocity_scale: float | None = None,
        tolerance: float = 1e-4,
        check_every: int = 10,
        affine=False,
        cuda_graph: bool | None = None,
    ) -> None:
        if len(scales) == 0 or any(s <= 0 for s in scales):
            raise ValueError(f"SyNRegistration: scales must be positive numbers, got {scales!r}")
        if velocity_scale is not None and not velocity_scale >= 1:
            raise ValueError(f"SyNRegistration: velocity_scale must be a number >= 1, got {velocity_scale!r}")
        self.scales = [float(s) for s in scales]
        self.iterations = None if iterations is None else _as_levels("iterations", iterations, len(scales), int)
        self.learning_rates = _as_levels("learning_rate", learning_rate, len(scales))
        self.verbose = verbose
        self.dissimilarity_function = dissimilarity_function or LocalNCCLoss(kernel_size=9)
        self.regularization_function = regularization_function or DiffusionLoss()
        self.optimizer = optimizer
        self.sigma_img = float(sigma_img)
        self.sigma_flow = float(sigma_flow)
        self.lambda_ = float(lambda_)
        self.time_steps = int(time_steps)
        self.velocity_scale = None if velocity_scale is None else float(velocity_scale)
        self.tolerance = float(tolerance)
        self.check_every = int(check_every)
        if not (isinstance(affine, bool) or isinstance(affine, AffineRegistration)):
            raise TypeError(f"SyNRegistration: affine must be a bool or an AffineRegistration, got {type(affine).__name__}")
        self.affine = affine
        if cuda_graph is not None and not isinstance(cuda_graph, bool):
            raise TypeError(f"SyNRegistration: cuda_graph must be None (auto), True or False, got {cuda_graph!r}")
        self.cuda_graph = cuda_graph
        self.reset()

    def reset(self) -> None:
        """Forget the fields of an earlier call."""
        self.v_xy = self.v_yx = None
        self.theta = None
        self._static_shape = None
        self.loss_history: list[list[float]] = []
        self.level_times: list[float] = []

    # --- fields --------------------------------------------------------------------------

    def _exp(self, v: torch.Tensor, shape) -> torch.Tensor:
        """``exp(v)`` on ``v``'s grid, resized to ``shape`` (voxels of ``shape``)."""
        return resize_field(ops.exp(v, self.time_steps, padding_mode="border"), shape)

    def apply_flows(self, x, y, v_xy, v_yx):
        """Half-way and full images and fields for velocities ``v_xy``, ``v_yx`` (torchreg's
        ``apply_flows``, regnet DDFs on the grid of ``x`` and ``y``; the velocities may be on a
        coarser grid, see the class docstring). Returns ``(images, flows)`` dicts with keys
        ``xy_half, yx_half, xy_full, yx_full``."""
        batch = v_xy.shape[0]
        half = self._exp(torch.cat([v_xy, v_yx, -v_xy, -v_yx]), x.shape[2:])  # one exp for all four
        forward, backward = half[: 2 * batch], half[2 * batch:]
        inverse_swapped = torch.cat([backward[batch:], backward[:batch]])  # exp(-v_yx), exp(-v_xy)
        full = ops.compose(forward, inverse_swapped)  # xy_full, yx_full
        images = ops.warp(torch.cat([x, y, x, y]), torch.cat([forward, full]))
        names = ("xy_half", "yx_half", "xy_full", "yx_full")
        fields = torch.cat([forward, full])
        return (
            {k: images[i * batch:(i + 1) * batch] for i, k in enumerate(names)},
            {k: fields[i * batch:(i + 1) * batch] for i, k in enumerate(names)},
        )

    def _velocity(self, p: torch.Tensor) -> torch.Tensor:
        return ops.gaussian_smooth(p, self.sigma_flow, mode="nearest") if self.sigma_flow > 0 else p

    # --- optimisation --------------------------------------------------------------------

    def __call__(self, moving, static, v_xy=None, v_yx=None, return_moved=True):
        """Register ``moving`` onto ``static`` (``(B, C, *spatial)``, same grid shape).

        ``v_xy``, ``v_yx``: optional starting velocities ``(B, ndim, *grid)`` in voxels of
        their own grid (any grid; resized to each level's velocity grid).

        Returns ``(moved, moved_static, ddf, inverse_ddf)``: moving warped onto static,
        static warped onto moving, the forward DDF (static grid, pull: ``moved(x) =
        moving(x + ddf(x))``) and the inverse DDF; ``None`` if ``return_moved`` is false.
        """
        check_pair("SyNRegistration", moving, static)
        with cpu_threads_for(static):
            return self._register(moving, static, v_xy, v_yx, return_moved)

    def _register(self, moving, static, v_xy, v_yx, return_moved):
        if moving.shape != static.shape:
            raise ValueError(
                f"SyNRegistration: moving {tuple(moving.shape)} and static {tuple(static.shape)} must be on one "
                f"grid; resample moving onto the static grid first (regnet.io.world.resample_to, or an affine)"
            )
        ndim = static.dim() - 2
        shape = tuple(static.shape[2:])
        self.theta = None
        original = moving
        if self.affine is not False:
            affine = self.affine if isinstance(self.affine, AffineRegistration) else AffineRegistration(verbose=self.verbose)
            moving = affine(moving, static)
            self.theta, self._affine_align_corners = affine.get_affine(), affine.align_corners
        self._grid_factor = self.velocity_scale or default_velocity_scale(ndim)
        first = level_shape(level_shape(shape, self.scales[0]), self._grid_factor)
        zeros = static.new_zeros((static.shape[0], ndim, *first))
        self.v_xy = zeros if v_xy is None else v_xy.detach().to(static)
        self.v_yx = zeros.clone() if v_yx is None else v_yx.detach().to(static)
        self._static_shape = shape
        self.loss_history, self.level_times = [], []
        schedule = self.iterations or default_iterations(self.scales, ndim)
        for scale, iterations, lr in zip(self.scales, schedule, self.learning_rates):
            if iterations == 0:  # nothing to fit: the velocities stay on their grid
                self.loss_history.append([])
                self.level_times.append(0.0)
                continue
            start = time.perf_counter()
            level = level_shape(shape, scale)
            x, y = downsample(moving, level), downsample(static, level)
            if self.sigma_img > 0:
                x, y = ops.gaussian_smooth(x, self.sigma_img), ops.gaussian_smooth(y, self.sigma_img)
            with torch.enable_grad():  # also inside a caller's no_grad block
                self._fit(x, y, iterations, lr, f"SyN {'x'.join(map(str, level))}")
            self.level_times.append(time.perf_counter() - start)
        if not return_moved:
            return None
        ddf, inverse = self.fields()
        with torch.no_grad():
            moved = ops.warp(torch.cat([original, static]), torch.cat([ddf, inverse]))
        batch = moving.shape[0]
        return moved[:batch], moved[batch:], ddf, inverse

    def _fit(self, x, y, iterations, lr, description):
        shape = x.shape[2:]
        grid = level_shape(shape, self._grid_factor)
        # Parameters are unsmoothed; velocities are their smoothed version. Between levels the
        # smoothed velocity is carried over (resized, in voxels of the new grid).
        p_xy = torch.nn.Parameter(resize_field(self.v_xy, grid).clone())
        p_yx = torch.nn.Parameter(resize_field(self.v_yx, grid).clone())
        # learning_rate is in image voxels; the parameters are in velocity-grid voxels
        step = lr * (grid[0] - 1) / max(shape[0] - 1, 1)
        functions = [self.dissimilarity_function, self.regularization_function if self.lambda_ else None]
        graph = graph_wanted(self.cuda_graph, x.device, self.optimizer, functions)
        optimizer = make_optimizer(self.optimizer, [p_xy, p_yx], step, capturable=graph)
        log = LossLog(iterations, description, self.verbose)
        # Losses are means over voxels (and pairs): per-voxel gradients of ~1/voxels would sit
        # near Adam's eps, which would then set the step size and couple the pairs of a batch.
        # Scaling by batch * voxels (Adam is otherwise scale-invariant) removes both effects.
        batch = x.shape[0]
        gradient_scale = float(batch * x[0, 0].numel())
        images_xy = torch.cat([x, y])

        def iteration():
            half = self._exp(torch.cat([self._velocity(p_xy), self._velocity(p_yx)]), shape)
            moved = ops.warp(images_xy, half)
            loss = self.dissimilarity_function(moved[:batch], moved[batch:])
            if self.lambda_:
                regulariser = self.regularization_function(half[:batch]) + self.regularization_function(half[batch:])
                loss = loss + self.lambda_ * regulariser
            (loss * gradient_scale).backward()
            optimizer.step()
            return (loss.detach(),)

        runner = IterationRunner(iteration, optimizer, graph)
        for i in range(iterations):
            (loss,) = runner()
            log.log(loss)
            if (i + 1) % self.check_every == 0 and log.converged(self.check_every, self.tolerance):
                break
        self.loss_history.append(log.values())
        with torch.no_grad():
            self.v_xy = self._velocity(p_xy.detach())
            self.v_yx = self._velocity(p_yx.detach())

    # --- using the result ----------------------------------------------------------------

    def fields(self):
        """``(ddf, inverse_ddf)`` on the static grid from the fitted velocities."""
        if self.v_xy is None:
            raise RuntimeError("SyNRegistration: call the registration before asking for its fields")
        with torch.no_grad(), cpu_threads_for(self.v_xy):
            v_xy, v_yx = self.v_xy, self.v_yx
            b = v_xy.shape[0]
            half = ops.exp(torch.cat([v_xy, v_yx, -v_xy, -v_yx]), self.time_steps, padding_mode="border")
            forward = half[: 2 * b]
            inverse_swapped = torch.cat([half[3 * b:], half[2 * b: 3 * b]])
            full = ops.compose(forward, inverse_swapped)
            full = resize_field(full, self._static_shape)
            ddf, inverse = full[:b], full[b:]
            if self.theta is not None:
                ddf, inverse = self._with_affine(ddf, inverse)
        return ddf, inverse

    def _with_affine(self, ddf, inverse):
        """Total fields of ``x -> A (x + ddf(x))`` and its inverse ``y -> z + inverse(z)``,
        ``z = A^-1 y``, with ``A`` the affine stage's map in voxels of the (common) grid."""
        shape = self._static_shape
        ndim = len(shape)
        to_normalised = torch.as_tensor(voxel_to_normalised(shape, self._affine_align_corners), dtype=torch.float64,
                                        device=ddf.device)
        square = torch.eye(ndim + 1, dtype=torch.float64, device=ddf.device).repeat(ddf.shape[0], 1, 1)
        square[:, :ndim] = self.theta.double()
        voxel_map = torch.linalg.inv(to_normalised) @ square @ to_normalised  # (B, ndim+1, ndim+1)
        identity = torch.stack(torch.meshgrid(
            *[torch.arange(n, dtype=torch.float64, device=ddf.device) for n in shape], indexing="ij"))[None]

        def apply(matrix, points):  # (B, ndim+1, ndim+1) on (B, ndim, *shape)
            out = torch.einsum("bij,bj...->bi...", matrix[:, :ndim, :ndim], points)
            return out + matrix[:, :ndim, ndim].reshape(-1, ndim, *[1] * ndim)

        total = (apply(voxel_map, identity + ddf.double()) - identity).to(ddf.dtype)
        to_static = (apply(torch.linalg.inv(voxel_map), identity) - identity).to(ddf.dtype)
        total_inverse = ops.compose(inverse, to_static)
        return total, total_inverse

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
