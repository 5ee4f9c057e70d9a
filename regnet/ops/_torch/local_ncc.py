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

``reduction="mean"`` / ``"sum"`` reduce the map with torch (a 0-d tensor in the input dtype);
their backward expands the 0-d gradient (divided by the element count for ``mean``, as
autograd's ``mean`` does) to the map's shape without a copy and runs the map's backward.

An optional ``weight`` ``(B or 1, C or 1, *spatial)`` multiplies the map before the reduction
(the local sums still see every voxel); backward multiplies the incoming gradient by it.
"""

from __future__ import annotations

import torch


def local_sum(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Separable windowed sum with zero padding of ``x`` ``(B, C, *spatial)``.

    Each axis pass adds shifted views of its input onto the overlapping part of the output,
    so the zero padding is implicit: no padded copy is made.
    """
    r = k.numel() // 2
    weights = k.tolist()
    y = x
    for axis in range(2, x.dim()):
        n = x.shape[axis]
        out = y * weights[r]
        for j in range(1, min(r, n - 1) + 1):
            out.narrow(axis, j, n - j).add_(y.narrow(axis, 0, n - j), alpha=weights[r - j])
            out.narrow(axis, 0, n - j).add_(y.narrow(axis, j, n - j), alpha=weights[r + j])
        y = out
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


def _border_term(e, N, a, sa, b, sb):
    """``e * (a * S_b + b * S_a + a * b * N)``: the exact correction of the centred sums,
    non-zero only within a window's reach of the border."""
    term = sb * a
    term.addcmul_(sa, b)
    term.add_(N * (a * b))
    return term.mul_(e)


def _statistics(pred, target, k, V):
    """Centred images, local sums and the NCC terms (see the module docstring), built with
    in-place updates so that few full-size temporaries are alive at once."""
    P, cp = _centre(pred)
    T, ct = _centre(target)
    N = _count(k, pred.shape[2:])
    e = 1 - N / V
    s_p, s_t = local_sum(P, k), local_sum(T, k)
    cross = local_sum(P * T, k).addcmul_(s_p, s_t, value=-1 / V).add_(_border_term(e, N, cp, s_p, ct, s_t))
    var_p = local_sum(P * P, k).addcmul_(s_p, s_p, value=-1 / V).add_(_border_term(e, N, cp, s_p, cp, s_p))
    var_t = local_sum(T * T, k).addcmul_(s_t, s_t, value=-1 / V).add_(_border_term(e, N, ct, s_t, ct, s_t))
    return P, T, cp, ct, e, s_p, s_t, cross, var_p, var_t


def local_ncc_forward(pred: torch.Tensor, target: torch.Tensor, k: torch.Tensor, V: float, smooth_nr: float,
                      floor: float, eps: float, reduction: str = "none",
                      weight: torch.Tensor | None = None) -> torch.Tensor:
    *_, cross, var_p, var_t = _statistics(pred, target, k, V)
    denominator = var_p.clamp_min_(floor).mul_(var_t.clamp_min_(floor)).add_(eps)
    ncc = cross.square_().add_(smooth_nr).div_(denominator)
    if weight is not None:  # (B or 1, C or 1, *spatial), broadcast
        ncc.mul_(weight)
    if reduction == "mean":
        return ncc.mean()
    if reduction == "sum":
        return ncc.sum()
    return ncc


def local_ncc_backward(grad: torch.Tensor, pred: torch.Tensor, target: torch.Tensor, k: torch.Tensor, V: float,
                       smooth_nr: float, floor: float, eps: float, needs_pred: bool, needs_target: bool,
                       reduction: str = "none",
                       weight: torch.Tensor | None = None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    if reduction != "none":  # a 0-d gradient: the same value at every voxel, expanded (no copy)
        grad = (grad / pred.numel() if reduction == "mean" else grad).expand(pred.shape)
    if weight is not None:  # the map was multiplied by the weight
        grad = grad * weight
    P, T, cp, ct, e, s_p, s_t, cross, var_p, var_t = _statistics(pred, target, k, V)
    active_p, active_t = var_p > floor, var_t > floor
    vp, vt = var_p.clamp_min_(floor), var_t.clamp_min_(floor)
    denominator = vp * vt
    denominator.add_(eps)
    # ncc / denominator * grad, then the three coefficient maps, all per voxel:
    #   g_cross = grad * 2 cross / den,  g_vp = -grad * ncc * vt / den,  g_vt = -grad * ncc * vp / den
    scaled = (cross * cross).add_(smooth_nr).div_(denominator).mul_(grad).div_(denominator)  # grad*ncc/den
    g_vp = torch.where(active_p, scaled * vt, 0.0).neg_()
    g_vt = torch.where(active_t, scaled.mul_(vp), 0.0).neg_()
    del scaled, vp, vt, var_p, var_t, active_p, active_t
    g_cross = cross.mul_(2).div_(denominator).mul_(grad)
    del denominator
    f_cross = local_sum(g_cross, k)
    grad_pred = grad_target = None
    if needs_pred:
        grad_pred = _input_gradient(P, T, cp, ct, e, s_p, s_t, g_cross, g_vp, f_cross, k, V)
    del g_vp
    if needs_target:
        grad_target = _input_gradient(T, P, ct, cp, e, s_t, s_p, g_cross, g_vt, f_cross, k, V)
    return grad_pred, grad_target


def _input_gradient(A, B, ca, cb, e, s_a, s_b, g_cross, g_va, f_cross, k, V):
    """``d ncc / d a = F[c] + 2 A F[g_va] + B F[g_cross]`` with the coefficient map
    ``c = -g_cross S_b / V - 2 g_va S_a / V + e (2 ca g_va + cb g_cross)``."""
    c = (g_cross * s_b).addcmul_(g_va, s_a, value=2.0).mul_(-1 / V)
    border = g_va * (2 * ca)
    border.addcmul_(g_cross, cb.expand_as(g_cross)).mul_(e)
    c.add_(border)
    del border
    grad = local_sum(c, k)
    del c
    grad.addcmul_(A, local_sum(g_va, k), value=2.0)
    return grad.addcmul_(B, f_cross)
