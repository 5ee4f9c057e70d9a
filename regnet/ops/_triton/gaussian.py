"""Triton kernels for ``gaussian_smooth``: separable Gaussian filtering as SciPy's, fused over
channels.

Same numbers as the reference (:mod:`regnet.ops._torch.gaussian`): per spatial axis with
``sigma > 0``, a correlation with the normalised sampled Gaussian of radius
``int(truncate * sigma + 0.5)``, the boundary extended by SciPy's ``mode`` (``reflect``,
``nearest``, ``mirror``, ``wrap``, ``constant`` = zeros), also for radii wider than the axis.

Forward: one launch per smoothed axis. The tensor is viewed as ``(outer, n, inner)`` around
the axis, with batch and channels folded into ``outer``, so that one launch covers every
channel; each lane computes one output voxel from its ``2r + 1`` taps, mapping the padded
index to the input index in the kernel (no padded copy).

Backward (the adjoint, axes in reverse order), two launches per axis, no atomics:

1. the same correlation kernel on the gradient zero-extended by ``2r``: ``H[q]`` for every
   padded position ``q`` in ``[-r, n + r)`` (the kernel is symmetric, so the transposed
   correlation is a correlation);
2. a fold: ``grad[m] = sum of H[q] over the q whose boundary index is m``, enumerated per
   mode (``q = m`` always; the borders' run for ``nearest``; the images ``m + t P`` and the
   mirror partner's for ``wrap`` / ``reflect`` / ``mirror`` with period ``P``).

Intermediate passes are float32 for float16/bfloat16/float32 inputs (float64 for float64);
the result is rounded to the input dtype once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import triton
import triton.language as tl

from regnet.ops._torch.gaussian import kernel1d, radius
from regnet.ops._triton import _common

BLOCK = 256
NUM_WARPS = 4
MODE_CODE = {"constant": 0, "nearest": 1, "reflect": 2, "mirror": 3, "wrap": 4}
_ARGS = ["N_IN", "N_OUT", "INNER", "TAPS", "SHIFT", "total"]


@triton.jit
def _boundary_index(q, n, MODE: tl.constexpr):
    """SciPy's boundary extension: index into an axis of ``n`` for position ``q``, and whether
    it is inside (only ``constant`` has positions outside)."""
    valid = q == q
    if MODE == 0:  # constant
        valid = (q >= 0) & (q < n)
        i = tl.minimum(tl.maximum(q, 0), n - 1)
    elif MODE == 1:  # nearest
        i = tl.minimum(tl.maximum(q, 0), n - 1)
    elif MODE == 2:  # reflect: d c b a | a b c d | d c b a
        p = 2 * n
        i = ((q % p) + p) % p
        i = tl.where(i >= n, p - 1 - i, i)
    elif MODE == 3:  # mirror: d c b | a b c d | c b a  (n > 1; n == 1 is passed as nearest)
        p = 2 * n - 2
        i = ((q % p) + p) % p
        i = tl.where(i >= n, p - i, i)
    else:  # wrap
        i = ((q % n) + n) % n
    return i, valid


@triton.jit
def _lanes(N, INNER, total, BLOCK: tl.constexpr):
    """This program's flat offsets into an ``(outer, N, inner)`` view, their mask, and the
    offsets split into ``(o, i, s)``."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    lane = offs < total
    s = offs % INNER
    rest = offs // INNER
    i = rest % N
    o = rest // N
    return offs, lane, o, i, s


@triton.jit(do_not_specialize=_ARGS)
def _correlate_kernel(
    y_ptr, x_ptr, k_ptr, N_IN, N_OUT, INNER, TAPS, SHIFT, total,
    MODE: tl.constexpr, CDT: tl.constexpr, BLOCK: tl.constexpr,
):
    """``y[o, i, s] = sum_j k[j] x[o, boundary(i + j - SHIFT), s]`` for ``i < N_OUT``."""
    offs, lane, o, i, s = _lanes(N_OUT, INNER, total, BLOCK)
    x_b = x_ptr + o * N_IN * INNER + s
    acc = tl.zeros([BLOCK], CDT)
    for j in range(0, TAPS):
        w = tl.load(k_ptr + j).to(CDT)
        idx, valid = _boundary_index(i + j - SHIFT, N_IN, MODE)
        acc += w * tl.load(x_b + idx * INNER, mask=lane & valid, other=0.0).to(CDT)
    tl.store(y_ptr + offs, acc.to(y_ptr.dtype.element_ty), mask=lane)


@triton.jit(do_not_specialize=["N", "R", "INNER", "total"])
def _fold_kernel(
    g_ptr, h_ptr, N, R, INNER, total,
    MODE: tl.constexpr, CDT: tl.constexpr, BLOCK: tl.constexpr,
):
    """``g[o, m, s] = sum_{q in [-R, N + R), boundary(q) = m} h[o, q + R, s]``."""
    offs, lane, o, m, s = _lanes(N, INNER, total, BLOCK)
    h_b = h_ptr + o * (N + 2 * R) * INNER + s
    acc = tl.load(h_b + (m + R) * INNER, mask=lane, other=0.0).to(CDT)  # q = m
    if MODE == 1:  # nearest: the runs beyond each end fold onto the end voxels
        first = lane & (m == 0)
        last = lane & (m == N - 1)
        for d in range(1, R + 1):
            acc += tl.load(h_b + (R - d) * INNER, mask=first, other=0.0).to(CDT)
            acc += tl.load(h_b + (N - 1 + d + R) * INNER, mask=last, other=0.0).to(CDT)
    elif MODE >= 2:  # periodic images m + t P and (reflect, mirror) the partner's
        if MODE == 2:
            p = 2 * N
            partner = p - 1 - m
            has_partner = lane
        elif MODE == 3:
            p = 2 * N - 2
            partner = p - m
            has_partner = lane & (m != 0) & (m != N - 1)  # partner == m modulo p
        else:
            p = N
            partner = m
            has_partner = lane & (m != m)
        reach = (N + R) // p + 1
        for t in range(-reach, reach + 1):
            q = m + t * p
            ok = lane & (t != 0) & (q >= -R) & (q < N + R)
            acc += tl.load(h_b + (q + R) * INNER, mask=ok, other=0.0).to(CDT)
            q2 = partner + t * p
            ok2 = has_partner & (q2 >= -R) & (q2 < N + R)
            acc += tl.load(h_b + (q2 + R) * INNER, mask=ok2, other=0.0).to(CDT)
    tl.store(g_ptr + offs, acc.to(g_ptr.dtype.element_ty), mask=lane)


def _mode_code(mode: str, n: int) -> int:
    # An axis of one voxel: every position maps to it in all modes but ``constant``.
    return MODE_CODE["nearest"] if n == 1 and mode != "constant" else MODE_CODE[mode]


def _along(x: torch.Tensor, axis: int, n: int, dtype: torch.dtype) -> tuple[torch.Tensor, int]:
    """A new ``dtype`` tensor of ``x``'s shape with ``n`` along ``axis`` (a kernel writes it
    completely), and the stride of ``axis`` in it."""
    shape = list(x.shape)
    shape[axis] = n
    return _common.empty(shape, dtype, x.device), math.prod(shape[axis + 1:])


def _correlate(x: torch.Tensor, axis: int, k: torch.Tensor, n_out: int, shift: int, mode_code: int,
               out_dtype: torch.dtype) -> torch.Tensor:
    """Correlate along ``axis`` of contiguous ``x`` into a new ``out_dtype`` tensor."""
    y, inner = _along(x, axis, n_out, out_dtype)
    if y.numel():
        _correlate_kernel[(triton.cdiv(y.numel(), BLOCK),)](
            y, x, k, x.shape[axis], n_out, inner, k.numel(), shift, y.numel(),
            MODE=mode_code, CDT=_common.compute_dtype(x.dtype)[0], BLOCK=BLOCK, num_warps=NUM_WARPS,
        )
    return y


def _fold(h: torch.Tensor, axis: int, n: int, r: int, mode_code: int, out_dtype: torch.dtype) -> torch.Tensor:
    """Fold the correlated, zero-extended gradient ``h`` back onto the ``n`` boundary indices."""
    g, inner = _along(h, axis, n, out_dtype)
    if g.numel():
        _fold_kernel[(triton.cdiv(g.numel(), BLOCK),)](
            g, h, n, r, inner, g.numel(), MODE=mode_code, CDT=_common.compute_dtype(h.dtype)[0], BLOCK=BLOCK,
            num_warps=NUM_WARPS,
        )
    return g


def _smoothed_axes(x: torch.Tensor, sigma: Sequence[float]) -> tuple[torch.dtype, list[tuple[int, float]]]:
    """The dtype of the intermediate passes and the ``(axis, sigma)`` of each smoothed axis."""
    if x.numel() > 2**62:  # pragma: no cover - offsets are int64
        raise ValueError(f"gaussian_smooth: tensor of {x.numel()} elements is too large")
    return _common.compute_dtype(x.dtype)[1], [(axis, s) for axis, s in enumerate(sigma, start=2) if s > 0]


def gaussian_smooth_forward(x: torch.Tensor, sigma: Sequence[float], mode: str, truncate: float) -> torch.Tensor:
    """``x``: ``(B, C, *spatial)``; ``sigma``: one float per spatial axis (voxels)."""
    acc, axes = _smoothed_axes(x, sigma)
    if not axes:
        return x.clone()
    y = x.contiguous()
    for idx, (axis, s) in enumerate(axes):
        r = radius(s, truncate)
        k = kernel1d(s, truncate, y.new_empty((), dtype=acc))
        out_dtype = x.dtype if idx == len(axes) - 1 else acc
        y = _correlate(y, axis, k, y.shape[axis], r, _mode_code(mode, y.shape[axis]), out_dtype)
    return y


def gaussian_smooth_backward(grad: torch.Tensor, sigma: Sequence[float], mode: str, truncate: float) -> torch.Tensor:
    acc, axes = _smoothed_axes(grad, sigma)
    if not axes:
        return grad.clone()
    g = grad.contiguous()
    for idx, (axis, s) in enumerate(reversed(axes)):
        r = radius(s, truncate)
        n = g.shape[axis]
        k = kernel1d(s, truncate, g.new_empty((), dtype=acc))
        h = _correlate(g, axis, k, n + 2 * r, 2 * r, MODE_CODE["constant"], acc)
        out_dtype = grad.dtype if idx == len(axes) - 1 else acc
        g = _fold(h, axis, n, r, _mode_code(mode, n), out_dtype)
        del h
    return g


NAME = "triton"
