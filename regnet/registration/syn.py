"""Symmetric diffeomorphic registration (SyN-style), torchreg's scheme on regnet's ops.

Two stationary velocity fields are optimised at once, ``v_xy`` on the moving side and
``v_yx`` on the static side; each half-way map is ``exp(v)`` and the full maps are::

    xy_full = compose(exp(v_xy), exp(-v_yx))   # static grid -> moving: warps moving onto static
    yx_full = compose(exp(v_yx), exp(-v_xy))   # moving grid -> static: warps static onto moving

The loss is ``sim(static, moving o xy_full) + sim(moving, static o yx_full)
+ sim(moving o exp(v_xy), static o exp(v_yx)) + lambda_ * (reg(xy_full) + reg(yx_full))``,
as torchreg's ``SyNRegistration``. All fields are regnet DDFs ``(B, ndim, *spatial)`` in
voxels of the static grid (torchreg returns normalised, channel-last flows instead:
``flow_torchreg[..., k] = 2 * ddf[:, ndim - 1 - k] / (n - 1)`` permuted to channel-last).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch

from regnet import ops
from regnet.losses import DiffusionLoss, LocalNCCLoss
from regnet.registration._common import LossLog, check_pair, downsample, level_shape, resize, resize_field


def _as_levels(name: str, value, n: int, kind=float) -> list:
    values = list(value) if isinstance(value, Sequence) else [value] * n
    if len(values) != n:
        raise ValueError(f"SyNRegistration: {name} must be one value or {n} values (one per scale), got {value!r}")
    return [kind(v) for v in values]


class SyNRegistration:
    """Symmetric diffeomorphic registration of ``moving`` onto ``static``, 2D or 3D, batched.

    Args (torchreg's, with regnet's defaults; measured on the r16 -> r64 brain slices):
        scales: pyramid factors, coarse to fine.
        iterations: iterations per scale (the last level may stop early, see ``tolerance``).
        learning_rate: Adam step in voxels of each level (one value or one per scale).
        dissimilarity_function: ``f(a, b) -> scalar``; local NCC by default.
        regularization_function: ``f(ddf) -> scalar`` of a voxel DDF; diffusion by default.
        sigma_img: Gaussian smoothing of both images at each level, in voxels of that level.
        sigma_flow: Gaussian smoothing of the velocity parameters (voxels of each level);
            the smoothed field is the velocity (greedy-SyN style update smoothing).
        lambda_: weight of the regulariser.
        time_steps: scaling-and-squaring steps of ``exp``.
        tolerance: relative loss improvement over ``check_every`` iterations below which a
            level stops early (0 disables).
        verbose: tqdm bar per level with the loss.

    After ``__call__``: ``v_xy``, ``v_yx`` (velocities on the static grid, voxels),
    ``loss_history`` (per level), ``level_times`` (s).
    """

    def __init__(
        self,
        scales: Sequence[float] = (4, 2, 1),
        iterations: Sequence[int] = (30, 20, 5),
        learning_rate: float | Sequence[float] = 0.3,
        verbose: bool = True,
        dissimilarity_function=None,
        regularization_function=None,
        optimizer=torch.optim.Adam,
        sigma_img: float = 0.0,
        sigma_flow: float = 1.5,
        lambda_: float = 0.1,
        time_steps: int = 7,
        tolerance: float = 1e-4,
        check_every: int = 10,
    ) -> None:
        if len(scales) == 0 or any(s <= 0 for s in scales):
            raise ValueError(f"SyNRegistration: scales must be positive numbers, got {scales!r}")
        self.scales = [float(s) for s in scales]
        self.iterations = _as_levels("iterations", iterations, len(scales), int)
        self.learning_rates = _as_levels("learning_rate", learning_rate, len(scales))
        self.verbose = verbose
        self.dissimilarity_function = dissimilarity_function or LocalNCCLoss(kernel_size=9)
        self.regularization_function = regularization_function or DiffusionLoss()
        self.optimizer = optimizer
        self.sigma_img = float(sigma_img)
        self.sigma_flow = float(sigma_flow)
        self.lambda_ = float(lambda_)
        self.time_steps = int(time_steps)
        self.tolerance = float(tolerance)
        self.check_every = int(check_every)
        self.reset()

    def reset(self) -> None:
        """Forget the fields of an earlier call."""
        self.v_xy = self.v_yx = None
        self.loss_history: list[list[float]] = []
        self.level_times: list[float] = []

    # --- fields --------------------------------------------------------------------------

    def _exp(self, v: torch.Tensor) -> torch.Tensor:
        return ops.exp(v, self.time_steps, padding_mode="border")

    def apply_flows(self, x, y, v_xy, v_yx):
        """Half-way and full images and fields for velocities ``v_xy``, ``v_yx`` (torchreg's
        ``apply_flows``, regnet DDFs). Returns ``(images, flows)`` dicts with keys
        ``xy_half, yx_half, xy_full, yx_full``."""
        batch = v_xy.shape[0]
        half = self._exp(torch.cat([v_xy, v_yx, -v_xy, -v_yx]))  # one exp for all four
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

        Returns ``(moved, moved_static, ddf, inverse_ddf)``: moving warped onto static,
        static warped onto moving, the forward DDF (static grid, pull: ``moved(x) =
        moving(x + ddf(x))``) and the inverse DDF; ``None`` if ``return_moved`` is false.
        """
        check_pair("SyNRegistration", moving, static)
        if moving.shape != static.shape:
            raise ValueError(
                f"SyNRegistration: moving {tuple(moving.shape)} and static {tuple(static.shape)} must be on one "
                f"grid; resample moving onto the static grid first (regnet.io.world.resample_to, or an affine)"
            )
        ndim = static.dim() - 2
        shape = static.shape[2:]
        zeros = static.new_zeros((static.shape[0], ndim, *shape))
        self.v_xy = zeros if v_xy is None else v_xy.detach().to(static)
        self.v_yx = zeros.clone() if v_yx is None else v_yx.detach().to(static)
        self.loss_history, self.level_times = [], []
        for scale, iterations, lr in zip(self.scales, self.iterations, self.learning_rates):
            start = time.perf_counter()
            level = level_shape(shape, scale)
            x, y = downsample(moving, level), downsample(static, level)
            if self.sigma_img > 0:
                x, y = ops.gaussian_smooth(x, self.sigma_img), ops.gaussian_smooth(y, self.sigma_img)
            self._fit(x, y, iterations, lr, f"SyN {'x'.join(map(str, level))}")
            self.level_times.append(time.perf_counter() - start)
        if not return_moved:
            return None
        with torch.no_grad():
            images, flows = self.apply_flows(moving, static, self.v_xy, self.v_yx)
        return images["xy_full"], images["yx_full"], flows["xy_full"], flows["yx_full"]

    def _fit(self, x, y, iterations, lr, description):
        shape = x.shape[2:]
        # Parameters are unsmoothed; velocities are their smoothed version. Between levels the
        # smoothed velocity is carried over (resized, in voxels of the new level).
        p_xy = torch.nn.Parameter(resize_field(self.v_xy, shape).clone())
        p_yx = torch.nn.Parameter(resize_field(self.v_yx, shape).clone())
        optimizer = self.optimizer([p_xy, p_yx], lr)
        log = LossLog(iterations, description, self.verbose)
        # Losses are means over voxels (and pairs): per-voxel gradients of ~1/voxels would sit
        # near Adam's eps, which would then set the step size and couple the pairs of a batch.
        # Scaling by batch * voxels (Adam is otherwise scale-invariant) removes both effects.
        gradient_scale = float(x.shape[0] * x[0, 0].numel())
        for i in range(iterations):
            optimizer.zero_grad(set_to_none=True)
            images, flows = self.apply_flows(x, y, self._velocity(p_xy), self._velocity(p_yx))
            loss = (
                self.dissimilarity_function(images["xy_full"], y)
                + self.dissimilarity_function(images["yx_full"], x)
                + self.dissimilarity_function(images["xy_half"], images["yx_half"])
            )
            if self.lambda_:
                loss = loss + self.lambda_ * (
                    self.regularization_function(flows["xy_full"]) + self.regularization_function(flows["yx_full"])
                )
            (loss * gradient_scale).backward()
            optimizer.step()
            log.log(loss)
            if (i + 1) % self.check_every == 0 and log.converged(self.check_every, self.tolerance):
                break
        self.loss_history.append(log.values())
        with torch.no_grad():
            full = self.v_xy.shape[2:]
            self.v_xy = resize_field(self._velocity(p_xy.detach()), full)
            self.v_yx = resize_field(self._velocity(p_yx.detach()), full)

    # --- using the result ----------------------------------------------------------------

    def fields(self):
        """``(ddf, inverse_ddf)`` on the static grid from the fitted velocities."""
        if self.v_xy is None:
            raise RuntimeError("SyNRegistration: call the registration before asking for its fields")
        with torch.no_grad():
            half = self._exp(torch.cat([self.v_xy, self.v_yx, -self.v_xy, -self.v_yx]))
            b = self.v_xy.shape[0]
            forward = half[: 2 * b]
            inverse_swapped = torch.cat([half[3 * b:], half[2 * b: 3 * b]])
            full = ops.compose(forward, inverse_swapped)
        return full[:b], full[b:]

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
        return ops.warp(image.to(field.dtype) if mode == "bilinear" else image.to(field.dtype), field, mode=mode)
