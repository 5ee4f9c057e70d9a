"""Reference backend for ``local_ncc``: local squared zero-normalised cross-correlation.

Local sums use a separable window with zero padding (MONAI's ``separable_filtering``):
``S_f(x) = sum_y w(y - x) f(y)``, window volume ``V = sum w``. With pred ``p``, target ``t``::

    cross = S_pt - S_p S_t / V,   var_p = S_pp - S_p^2 / V,   var_t = S_tt - S_t^2 / V
    ncc   = (cross^2 + smooth_nr) / (max(var_p, floor) * max(var_t, floor) + eps)

(``floor = smooth_dr, eps = 0`` for MONAI's convention; ``floor = 0, eps = smooth_dr`` for
torchreg's). The sums are formed from images centred on their (detached) mean, with the
exact correction ``e = 1 - N / V`` (``N = S_1``, zero away from the border) for the padding,
so that a large intensity offset does not cancel catastrophically in ``S_pp - S_p^2 / V``.
The shift is each image's minimum, not its mean: a background at the minimum then stays
exactly zero, where MONAI's own sums are exact too (centring on the mean turns it into a
constant whose rounding noise, divided by the clamped variances, spoils float32 gradients).

Only ``pred`` and ``target`` are saved; the backward pass recomputes the five local sums and
filters five coefficient maps (the window filter is self-adjoint).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from regnet.ops._torch._filters import correlate

def local_sum(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Separable windowed sum with zero padding of ``x`` ``(B, C, *spatial)``."""
    r = k.numel() // 2
    weights = k.tolist()
    y = x
    for axis in range(2, x.dim()):
        pad = [0, 0] * (x.dim() - 1 - axis) + [r, r]
        y = correlate(F.pad(y, pad), weights, axis, x.shape[axis])
    return y


def _count(k: torch.Tensor, spatial) -> torch.Tensor:
    """``N = S_1``: the window weight that falls inside the image, ``(1, 1, *spatial)``."""
    ones = torch.ones((1, 1, *spatial), dtype=k.dtype, device=k.device)
    return local_sum(ones, k)


def _centre(x: torch.Tensor):
    """Shift each (batch, channel) image by its (detached) minimum: a constant background at
    the minimum (zero-background MRI, air in CT) becomes exactly zero, where sums cancel
    exactly, and large intensity offsets are removed."""
    ndim = x.dim() - 2
    low = x.detach().amin(dim=tuple(range(2, 2 + ndim)), keepdim=True)
    return x - low, low


def _statistics(pred, target, k, V):
    """Local sums and the NCC terms, all from centred images (see the module docstring)."""
    P, cp = _centre(pred)
    T, ct = _centre(target)
    e = 1 - _count(k, pred.shape[2:]) / V
    s = {"p": local_sum(P, k), "t": local_sum(T, k)}
    N = V * (1 - e)
    cross = local_sum(P * T, k) - s["p"] * s["t"] / V + e * (cp * s["t"] + ct * s["p"] + cp * ct * N)
    var_p = local_sum(P * P, k) - s["p"] ** 2 / V + e * (2 * cp * s["p"] + cp**2 * N)
    var_t = local_sum(T * T, k) - s["t"] ** 2 / V + e * (2 * ct * s["t"] + ct**2 * N)
    return P, T, cp, ct, V, e, s, cross, var_p, var_t


def local_ncc_forward(pred, target, k, V, smooth_nr, floor, eps):
    *_, cross, var_p, var_t = _statistics(pred, target, k, V)
    return (cross * cross + smooth_nr) / (var_p.clamp_min(floor) * var_t.clamp_min(floor) + eps)


def local_ncc_backward(grad, pred, target, k, V, smooth_nr, floor, eps, needs_pred, needs_target):
    P, T, cp, ct, V, e, s, cross, var_p, var_t = _statistics(pred, target, k, V)
    vp, vt = var_p.clamp_min(floor), var_t.clamp_min(floor)
    denominator = vp * vt + eps
    ncc = (cross * cross + smooth_nr) / denominator
    g_cross = grad * 2 * cross / denominator  # d ncc / d cross, times the incoming gradient
    g_vp = torch.where(var_p > floor, -grad * ncc * vt / denominator, 0.0)
    g_vt = torch.where(var_t > floor, -grad * ncc * vp / denominator, 0.0)
    del cross, var_p, var_t, vp, vt, denominator, ncc
    f_cross = local_sum(g_cross, k)
    grad_pred = grad_target = None
    if needs_pred:
        a = -g_cross * s["t"] / V - 2 * g_vp * s["p"] / V + e * (2 * cp * g_vp + ct * g_cross)
        grad_pred = local_sum(a, k) + 2 * P * local_sum(g_vp, k) + T * f_cross
    if needs_target:
        a = -g_cross * s["p"] / V - 2 * g_vt * s["t"] / V + e * (2 * ct * g_vt + cp * g_cross)
        grad_target = local_sum(a, k) + 2 * T * local_sum(g_vt, k) + P * f_cross
    return grad_pred, grad_target
