"""``gaussian_smooth``: separable Gaussian filtering, as ``scipy.ndimage.gaussian_filter``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.autograd.function import once_differentiable

from regnet import _checks
from regnet.ops._backend import select

BOUNDARY_MODES = ("reflect", "nearest", "mirror", "wrap", "constant")


class GaussianSmoothFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, sigma, mode, truncate, impl):
        ctx.options = (sigma, mode, truncate)
        ctx.impl = impl
        return impl.gaussian_smooth_forward(x, sigma, mode, truncate)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        return ctx.impl.gaussian_smooth_backward(grad, *ctx.options), None, None, None, None


def _check_sigma(sigma, ndim: int) -> tuple[float, ...]:
    if isinstance(sigma, (int, float)) and not isinstance(sigma, bool):
        sigma = (float(sigma),) * ndim
    elif isinstance(sigma, Sequence) and len(sigma) == ndim and all(
        isinstance(s, (int, float)) and not isinstance(s, bool) for s in sigma
    ):
        sigma = tuple(float(s) for s in sigma)
    else:
        raise ValueError(f"gaussian_smooth: sigma must be a number or {ndim} numbers (voxels), got {sigma!r}")
    if any(not (s >= 0 and s < float("inf")) for s in sigma):
        raise ValueError(f"gaussian_smooth: sigma must be finite and >= 0, got {sigma!r}")
    return sigma


def gaussian_smooth(
    x: torch.Tensor,
    sigma: float | Sequence[float],
    mode: str = "reflect",
    truncate: float = 4.0,
    *,
    backend: str | None = None,
) -> torch.Tensor:
    """Gaussian smoothing of every channel, separable over the spatial axes.

    Same numbers as ``scipy.ndimage.gaussian_filter(x[b, c], sigma, mode=mode,
    truncate=truncate)`` for each batch entry and channel.

    Args:
        x: ``(B, C, *spatial)`` with 1, 2 or 3 spatial axes; any channel count.
        sigma: standard deviation in voxels, one number or one per spatial axis; 0 leaves an
            axis unsmoothed.
        mode: SciPy boundary mode: ``"reflect"`` (``d c b a | a b c d``, default),
            ``"nearest"``, ``"mirror"`` (``d c b | a b c d``), ``"wrap"``, ``"constant"`` (zeros).
        truncate: kernel radius in standard deviations (radius ``int(truncate * sigma + 0.5)``).

    Returns:
        ``(B, C, *spatial)``, differentiable w.r.t. ``x``.
    """
    fn = "gaussian_smooth"
    _checks.tensor(fn, "x", x, ndims=(3, 4, 5))
    sigma = _check_sigma(sigma, x.dim() - 2)
    _checks.choice(fn, "mode", mode, BOUNDARY_MODES)
    if isinstance(truncate, bool) or not isinstance(truncate, (int, float)) or not truncate > 0:
        raise ValueError(f"{fn}: truncate must be a positive number, got {truncate!r}")
    impl = select("gaussian_smooth", x.device, backend)
    return GaussianSmoothFunction.apply(x, sigma, mode, float(truncate), impl)
