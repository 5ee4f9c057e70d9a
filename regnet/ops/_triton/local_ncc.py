"""Triton kernels for ``local_ncc``: local squared NCC with fused separable window sums.

Same numbers as the reference (:mod:`regnet.ops._torch.local_ncc`, which states the formulas):
images shifted by their own (detached) per-(batch, channel) minimum ``cp``, ``ct``; zero-padded
separable windowed sums ``S_P, S_T, S_PP, S_TT, S_PT``; MONAI's or torchreg's map through
``(V, smooth_nr, floor, eps)``; the exact border correction ``e = 1 - N / V``.

Forward (``ndim`` launches, all batch items and channels in each):

- pass along spatial axis 0 reads ``pred`` and ``target``, shifts them, forms the five
  products at every tap and writes the five windowed sums into a ``(5, voxels)`` float32
  (float64 for float64) stack; passes along the next axes read and write the five-map stack;
- the last pass does not store its sums: it forms ``cross``, ``var_p``, ``var_t`` and the NCC
  map in registers and stores only the map (a 1D image: the one pass does both); with
  ``reduction="mean"`` / ``"sum"`` it stores no map either, only one partial sum of the map per
  program (float32, float64 for float64) into a ``(programs,)`` buffer that torch sums (a
  fixed-order reduction: deterministic, no atomics), divided by the element count for ``mean``.

The border correction needs ``N`` (the window weight inside the image) per voxel; it is
separable, ``N = prod_a n_a(i_a)``, and each factor is summed in the kernel from the window
taps (no count volume is formed). ``e = 1 - N / V`` with the op's ``V`` (MONAI's float32 window
volume), as the reference, computed as ``(V - N) / V`` (exactly 0 where ``N = V``, also under
compiled Triton's approximate float32 division): for the rectangular window ``N = V`` exactly
away from the border, so ``e = 0`` there; for Gaussian / triangular windows ``N`` and ``V``
differ by rounding in the interior in the reference too, and with it MONAI's own float64
values.

Backward (saves nothing but the inputs, as the reference): the forward passes run again, the
last one now forming the per-voxel coefficient maps (``g_cross``, and ``c_p``, ``g_vp`` /
``c_t``, ``g_vt`` for the inputs whose gradient is needed: 3 or 5 maps) instead of the map;
then the (symmetric, hence self-adjoint) window sums of those maps, one launch per axis over
the whole stack; the last launch combines them with the shifted images into the gradients,
``grad_p = F[c_p] + 2 P F[g_vp] + T F[g_cross]`` and ``grad_t = F[c_t] + 2 T F[g_vt] +
P F[g_cross]``. Every element is written once: no atomics (deterministic as it is). For a
reduced forward the gradient is a 0-d tensor: each program loads it through its pointer (no
host synchronisation; CUDA-graph friendly) and divides it by the element count for ``mean``
(as autograd's ``mean`` does), instead of loading a gradient map.

A voxel weight ``(B or 1, C or 1, *spatial)`` (``weight=``) is read by the last forward pass
through its batch / channel strides (0 where broadcast): the map is multiplied by it before it
is stored or summed into the partial sums; in backward the coefficient pass multiplies the
incoming gradient (map or 0-d) by it. The windowed sums are untouched (they see every voxel).

Arithmetic and intermediate stacks are float32 for float16/bfloat16/float32 inputs and
float64 for float64; the map, the reduced value and the gradients are returned in the input
dtype.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from regnet.ops._constants import constant
from regnet.ops._triton import _common

BLOCK = 256
NUM_WARPS = 4
QUANTITIES = 5  # S_P, S_T, S_PP, S_TT, S_PT
OUT_SUMS, OUT_MAP, OUT_COEFFICIENTS, OUT_PARTIAL = 0, 1, 2, 3
GRAD_MAP, GRAD_SUM, GRAD_MEAN = 0, 1, 2  # the gradient: a map, or 0-d for a sum / a mean
_GRAD_MODES = {"none": GRAD_MAP, "sum": GRAD_SUM, "mean": GRAD_MEAN}
_ARGS = ["AX_N", "INNER", "M", "SP", "S0", "S1", "S2", "TAPS", "R", "C", "WB", "WC"]


# --- jit helpers ----------------------------------------------------------------------------

@triton.jit
def _axis_position(offs, AX_N, INNER):
    """Index ``i`` along the filtered axis and the flat offset of index 0 on that line."""
    i = (offs // INNER) % AX_N
    return i, offs - i * INNER


@triton.jit
def _tap_sum(src_ptr, base, i, lane, AX_N, INNER, k_ptr, TAPS, R, CDT: tl.constexpr, BLOCK: tl.constexpr):
    """Zero-padded windowed sum along the axis of one map: ``sum_j k[j] src[i + j - R]``."""
    acc = tl.zeros([BLOCK], CDT)
    for j in range(0, TAPS):
        w = tl.load(k_ptr + j).to(CDT)
        q = i + j - R
        ok = lane & (q >= 0) & (q < AX_N)
        acc += w * tl.load(src_ptr + base + q * INNER, mask=ok, other=0.0).to(CDT)
    return acc


@triton.jit
def _coverage(i, n, k_ptr, TAPS, R, CDT: tl.constexpr, BLOCK: tl.constexpr):
    """``n_a(i) = sum_j k[j] [0 <= i + j - R < n]``: the 1D window weight inside an axis of ``n``."""
    inside = tl.zeros([BLOCK], CDT)
    for j in range(0, TAPS):
        w = tl.load(k_ptr + j).to(CDT)
        q = i + j - R
        inside += tl.where((q >= 0) & (q < n), w, 0.0)
    return inside


@triton.jit
def _count(offs, S0, S1, S2, k_ptr, TAPS, R, NDIM: tl.constexpr, CDT: tl.constexpr, BLOCK: tl.constexpr):
    """``N = S_1 = prod_a n_a(i_a)`` per voxel of a ``(BC, S0[, S1[, S2]])`` tensor."""
    i2 = offs % S2
    rest = offs // S2
    i1 = rest % S1
    i0 = (rest // S1) % S0
    count = _coverage(i0, S0, k_ptr, TAPS, R, CDT, BLOCK)
    if NDIM >= 2:
        count = count * _coverage(i1, S1, k_ptr, TAPS, R, CDT, BLOCK)
    if NDIM >= 3:
        count = count * _coverage(i2, S2, k_ptr, TAPS, R, CDT, BLOCK)
    return count


@triton.jit
def _voxel_weight(w_ptr, offs, bc, lane, SP, C, WB, WC, CDT: tl.constexpr):
    """The weight of each voxel of the flat ``(B * C, *spatial)`` layout, read from a
    ``(B or 1, C or 1, *spatial)`` tensor through its batch and channel strides ``WB``, ``WC``
    (0 where broadcast)."""
    c = bc % C
    return tl.load(w_ptr + (bc // C) * WB + c * WC + (offs - bc * SP), mask=lane, other=0.0).to(CDT)


@triton.jit(do_not_specialize=_ARGS)
def _statistics_kernel(
    out_ptr, src_ptr, p_ptr, t_ptr, cp_ptr, ct_ptr, g_ptr, k_ptr, par_ptr, w_ptr,
    AX_N, INNER, M, SP, S0, S1, S2, TAPS, R, C, WB, WC,
    FIRST: tl.constexpr, OUT: tl.constexpr, NDIM: tl.constexpr,
    NEED_P: tl.constexpr, NEED_T: tl.constexpr, GRAD: tl.constexpr, HAS_W: tl.constexpr, CDT: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """One axis pass of the five local sums, over the ``M`` voxels of all (batch, channel)s.

    ``FIRST``: the sums' inputs are the shifted images (else the ``(5, M)`` stack ``src``).
    ``OUT``: 0 stores the five sums to the ``(5, M)`` stack ``out``; 1 stores the NCC map;
    2 stores the backward coefficient maps (``g_cross``, then ``c_p, g_vp`` if ``NEED_P``,
    then ``c_t, g_vt`` if ``NEED_T``) given the map's gradient, ``GRAD`` 0: the map ``g``,
    1: ``g[0]`` at every voxel (a sum's), 2: ``g[0] / M`` (a mean's); 3 stores the program's
    sum of the map to ``out[pid]``. ``HAS_W``: the map is multiplied by the voxel weight ``w``
    (:func:`_voxel_weight`) before it is stored or summed, and the gradient by it in backward.
    """
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    lane = offs < M
    i, base = _axis_position(offs, AX_N, INNER)
    bc = offs // SP
    cp = tl.load(cp_ptr + bc, mask=lane, other=0.0).to(CDT)
    ct = tl.load(ct_ptr + bc, mask=lane, other=0.0).to(CDT)
    if FIRST:
        s_p = tl.zeros([BLOCK], CDT)
        s_t = tl.zeros([BLOCK], CDT)
        s_pp = tl.zeros([BLOCK], CDT)
        s_tt = tl.zeros([BLOCK], CDT)
        s_pt = tl.zeros([BLOCK], CDT)
        for j in range(0, TAPS):
            w = tl.load(k_ptr + j).to(CDT)
            q = i + j - R
            ok = lane & (q >= 0) & (q < AX_N)
            at = base + q * INNER
            a = tl.where(ok, tl.load(p_ptr + at, mask=ok, other=0.0).to(CDT) - cp, 0.0)
            b = tl.where(ok, tl.load(t_ptr + at, mask=ok, other=0.0).to(CDT) - ct, 0.0)
            wa = w * a
            wb = w * b
            s_p += wa
            s_t += wb
            s_pp += wa * a
            s_tt += wb * b
            s_pt += wa * b
    else:
        s_p = _tap_sum(src_ptr, base, i, lane, AX_N, INNER, k_ptr, TAPS, R, CDT, BLOCK)
        s_t = _tap_sum(src_ptr + M, base, i, lane, AX_N, INNER, k_ptr, TAPS, R, CDT, BLOCK)
        s_pp = _tap_sum(src_ptr + 2 * M, base, i, lane, AX_N, INNER, k_ptr, TAPS, R, CDT, BLOCK)
        s_tt = _tap_sum(src_ptr + 3 * M, base, i, lane, AX_N, INNER, k_ptr, TAPS, R, CDT, BLOCK)
        s_pt = _tap_sum(src_ptr + 4 * M, base, i, lane, AX_N, INNER, k_ptr, TAPS, R, CDT, BLOCK)
    if OUT == 0:
        tl.store(out_ptr + offs, s_p, mask=lane)
        tl.store(out_ptr + M + offs, s_t, mask=lane)
        tl.store(out_ptr + 2 * M + offs, s_pp, mask=lane)
        tl.store(out_ptr + 3 * M + offs, s_tt, mask=lane)
        tl.store(out_ptr + 4 * M + offs, s_pt, mask=lane)
    else:
        volume = tl.load(par_ptr).to(CDT)
        smooth_nr = tl.load(par_ptr + 1).to(CDT)
        floor = tl.load(par_ptr + 2).to(CDT)
        eps = tl.load(par_ptr + 3).to(CDT)
        count = _count(offs, S0, S1, S2, k_ptr, TAPS, R, NDIM, CDT, BLOCK)
        # (V - N) / V, not 1 - N / V: compiled Triton divides float32 approximately (2 ulp), and
        # 1 - 25 / 25 could be 6e-8 instead of 0; times count * cp * ct (images offset by 1000:
        # 2.5e7) that is a whole unit in the interior. V - N is exact, and 0 / V is 0.
        e = (volume - count) / volume
        inv = 1.0 / volume
        cross = s_pt - s_p * s_t * inv + e * (cp * s_t + ct * s_p + count * (cp * ct))
        var_p = s_pp - s_p * s_p * inv + e * (cp * s_p + cp * s_p + count * (cp * cp))
        var_t = s_tt - s_t * s_t * inv + e * (ct * s_t + ct * s_t + count * (ct * ct))
        vp = tl.maximum(var_p, floor, propagate_nan=tl.PropagateNan.ALL)
        vt = tl.maximum(var_t, floor, propagate_nan=tl.PropagateNan.ALL)
        den = vp * vt + eps
        num = cross * cross + smooth_nr
        if OUT == 1:
            ncc = num / den
            if HAS_W:
                ncc = _voxel_weight(w_ptr, offs, bc, lane, SP, C, WB, WC, CDT) * ncc
            tl.store(out_ptr + offs, ncc.to(out_ptr.dtype.element_ty), mask=lane)
        elif OUT == 3:
            ncc = num / den
            if HAS_W:
                ncc = _voxel_weight(w_ptr, offs, bc, lane, SP, C, WB, WC, CDT) * ncc
            tl.store(out_ptr + tl.program_id(0), tl.sum(tl.where(lane, ncc, 0.0), axis=0))
        else:
            if GRAD == 0:
                g = tl.load(g_ptr + offs, mask=lane, other=0.0).to(CDT)
            else:  # d(reduced)/d(map): the same at every voxel, read on the device
                g = tl.load(g_ptr).to(CDT)
                if GRAD == 2:
                    g = g / M.to(CDT)  # as autograd's mean: the gradient divided by the count
            if HAS_W:  # d(weight * map) / d(map) = weight, per voxel
                g = g * _voxel_weight(w_ptr, offs, bc, lane, SP, C, WB, WC, CDT)
            scaled = num / den * g / den
            g_cross = 2.0 * cross / den * g
            tl.store(out_ptr + offs, g_cross, mask=lane)
            if NEED_P:
                g_vp = tl.where(var_p > floor, -(scaled * vt), 0.0)
                c_p = -(g_cross * s_t + 2.0 * g_vp * s_p) * inv + e * (2.0 * cp * g_vp + ct * g_cross)
                tl.store(out_ptr + M + offs, c_p, mask=lane)
                tl.store(out_ptr + 2 * M + offs, g_vp, mask=lane)
            if NEED_T:
                g_vt = tl.where(var_t > floor, -(scaled * vp), 0.0)
                c_t = -(g_cross * s_p + 2.0 * g_vt * s_t) * inv + e * (2.0 * ct * g_vt + cp * g_cross)
                tl.store(out_ptr + (1 + 2 * NEED_P) * M + offs, c_t, mask=lane)
                tl.store(out_ptr + (2 + 2 * NEED_P) * M + offs, g_vt, mask=lane)


@triton.jit(do_not_specialize=["AX_N", "INNER", "M", "TAPS", "R", "Q"])
def _window_kernel(out_ptr, src_ptr, k_ptr, AX_N, INNER, M, TAPS, R, Q, CDT: tl.constexpr, BLOCK: tl.constexpr):
    """Windowed sums along one axis of every map of a ``(Q, M)`` stack."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    lane = offs < M
    i, base = _axis_position(offs, AX_N, INNER)
    for q in range(0, Q):
        acc = _tap_sum(src_ptr + q * M, base, i, lane, AX_N, INNER, k_ptr, TAPS, R, CDT, BLOCK)
        tl.store(out_ptr + q * M + offs, acc, mask=lane)


@triton.jit(do_not_specialize=["AX_N", "INNER", "M", "SP", "TAPS", "R"])
def _gradient_kernel(
    gp_ptr, gt_ptr, src_ptr, p_ptr, t_ptr, cp_ptr, ct_ptr, k_ptr, AX_N, INNER, M, SP, TAPS, R,
    NEED_P: tl.constexpr, NEED_T: tl.constexpr, CDT: tl.constexpr, BLOCK: tl.constexpr,
):
    """Last axis of the coefficient maps' window sums, combined into the input gradients."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    lane = offs < M
    i, base = _axis_position(offs, AX_N, INNER)
    bc = offs // SP
    a = tl.load(p_ptr + offs, mask=lane, other=0.0).to(CDT) - tl.load(cp_ptr + bc, mask=lane, other=0.0).to(CDT)
    b = tl.load(t_ptr + offs, mask=lane, other=0.0).to(CDT) - tl.load(ct_ptr + bc, mask=lane, other=0.0).to(CDT)
    f_cross = _tap_sum(src_ptr, base, i, lane, AX_N, INNER, k_ptr, TAPS, R, CDT, BLOCK)
    if NEED_P:
        f_c = _tap_sum(src_ptr + M, base, i, lane, AX_N, INNER, k_ptr, TAPS, R, CDT, BLOCK)
        f_v = _tap_sum(src_ptr + 2 * M, base, i, lane, AX_N, INNER, k_ptr, TAPS, R, CDT, BLOCK)
        grad = f_c + 2.0 * a * f_v + b * f_cross
        tl.store(gp_ptr + offs, grad.to(gp_ptr.dtype.element_ty), mask=lane)
    if NEED_T:
        first = (1 + 2 * NEED_P) * M
        f_c = _tap_sum(src_ptr + first, base, i, lane, AX_N, INNER, k_ptr, TAPS, R, CDT, BLOCK)
        f_v = _tap_sum(src_ptr + first + M, base, i, lane, AX_N, INNER, k_ptr, TAPS, R, CDT, BLOCK)
        grad = f_c + 2.0 * b * f_v + a * f_cross
        tl.store(gt_ptr + offs, grad.to(gt_ptr.dtype.element_ty), mask=lane)


# --- launchers ------------------------------------------------------------------------------

class _Problem:
    """Contiguous inputs, shifts, window and sizes shared by the forward and backward passes."""

    def __init__(self, pred, target, k, V, smooth_nr, floor, eps, weight=None):
        self.dtype = pred.dtype
        self.device = pred.device
        self.cdt, self.acc = _common.compute_dtype(pred.dtype)
        self.shape = tuple(pred.shape)
        self.spatial = [int(s) for s in pred.shape[2:]]
        self.ndim = len(self.spatial)
        self.M = pred.numel()
        self.SP = math.prod(self.spatial)
        self.p = pred.detach().contiguous()
        self.t = target.detach().contiguous()
        dims = tuple(range(2, 2 + self.ndim))
        # The reference shifts in the input dtype by the minimum in the input dtype.
        self.cp = self.p.amin(dim=dims).reshape(-1).contiguous()
        self.ct = self.t.amin(dim=dims).reshape(-1).contiguous()
        self.k = k.detach().to(device=self.device, dtype=self.acc).contiguous()
        self.taps = self.k.numel()
        self.r = self.taps // 2
        # In the compute dtype (float64 keeps smooth_dr's digits); cached on the device, so
        # that no call copies from the host (CUDA-graph capture).
        self.params = constant([V, smooth_nr, floor, eps], self.acc, self.device)
        self.sizes = self.spatial + [1] * (3 - self.ndim)
        self.grid = (triton.cdiv(self.M, BLOCK),)
        # The voxel weight (B or 1, C or 1, *spatial), read in place through its batch and
        # channel strides (0 where it is broadcast): no (B, C, *spatial) copy.
        batch, self.C = int(pred.shape[0]), int(pred.shape[1])
        self.w = None if weight is None else weight.detach().contiguous()
        if self.w is None:
            self.wb = self.wc = 0
        else:
            wc = self.SP if self.w.shape[1] == self.C and self.C > 1 else 0
            self.wc = wc
            self.wb = self.SP * int(self.w.shape[1]) if self.w.shape[0] == batch and batch > 1 else 0

    def axis(self, a):
        """(length, inner stride) of spatial axis ``a`` in the flat ``(BC, *spatial)`` layout."""
        return self.spatial[a], math.prod(self.spatial[a + 1:])

    def statistics(self, out_mode, out, grad=None, need_p=False, need_t=False, grad_mode=GRAD_MAP):
        """Run the forward passes; the last one writes ``out`` as ``out_mode`` says (the
        coefficients from ``grad``, a map or 0-d as ``grad_mode`` says)."""
        src = self.p
        for a in range(self.ndim):
            last = a == self.ndim - 1
            dst = out if last else _common.empty((QUANTITIES, self.M), self.acc, self.device)
            n, inner = self.axis(a)
            weighted = last and out_mode != OUT_SUMS and self.w is not None
            _statistics_kernel[self.grid](
                dst, src, self.p, self.t, self.cp, self.ct, self.p if grad is None else grad, self.k, self.params,
                self.w if weighted else self.p,
                n, inner, self.M, self.SP, *self.sizes, self.taps, self.r, self.C, self.wb, self.wc,
                FIRST=a == 0, OUT=out_mode if last else OUT_SUMS, NDIM=self.ndim,
                NEED_P=int(need_p), NEED_T=int(need_t), GRAD=grad_mode if last else GRAD_MAP, HAS_W=int(weighted),
                CDT=self.cdt, BLOCK=BLOCK, num_warps=NUM_WARPS,
            )
            src = dst


def local_ncc_forward(pred: torch.Tensor, target: torch.Tensor, k: torch.Tensor, V: float, smooth_nr: float,
                      floor: float, eps: float, reduction: str = "none",
                      weight: torch.Tensor | None = None) -> torch.Tensor:
    """The NCC map ``(B, C, *spatial)``, or its mean / sum (0-d), in ``pred``'s dtype (see the
    reference for the terms); multiplied by ``weight`` per voxel when given."""
    problem = _Problem(pred, target, k, V, smooth_nr, floor, eps, weight)
    if reduction == "none":
        out = _common.empty(problem.shape, pred.dtype, pred.device)
        if problem.M:
            problem.statistics(OUT_MAP, out)
        return out
    partials = _common.empty(problem.grid, problem.acc, problem.device)
    if problem.M:
        problem.statistics(OUT_PARTIAL, partials)
    total = partials.sum()  # fixed order: the same bits every run
    if reduction == "mean":
        total = total / problem.M  # no voxels: 0 / 0 = NaN, as torch's mean of an empty tensor
    return total.to(pred.dtype)


def local_ncc_backward(grad: torch.Tensor, pred: torch.Tensor, target: torch.Tensor, k: torch.Tensor, V: float,
                       smooth_nr: float, floor: float, eps: float, needs_pred: bool, needs_target: bool,
                       reduction: str = "none",
                       weight: torch.Tensor | None = None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Gradients of the (weighted) map (``grad``: ``(B, C, *spatial)``) or of its mean / sum
    (``grad``: 0-d, read by the kernel from the device, never by the host); the coefficient pass
    multiplies the incoming gradient by ``weight`` per voxel."""
    if not (needs_pred or needs_target):
        return None, None
    problem = _Problem(pred, target, k, V, smooth_nr, floor, eps, weight)
    grad_pred = _common.empty(problem.shape, pred.dtype, pred.device) if needs_pred else None
    grad_target = _common.empty(problem.shape, target.dtype, target.device) if needs_target else None
    if not problem.M:
        return grad_pred, grad_target
    maps = 1 + 2 * int(bool(needs_pred)) + 2 * int(bool(needs_target))
    coefficients = _common.empty((maps, problem.M), problem.acc, problem.device)
    grad = grad.contiguous() if reduction == "none" else grad.reshape(())
    problem.statistics(OUT_COEFFICIENTS, coefficients, grad, needs_pred, needs_target, _GRAD_MODES[reduction])
    src = coefficients
    for a in range(problem.ndim):
        n, inner = problem.axis(a)
        if a < problem.ndim - 1:
            dst = _common.empty((maps, problem.M), problem.acc, problem.device)
            _window_kernel[problem.grid](
                dst, src, problem.k, n, inner, problem.M, problem.taps, problem.r, maps,
                CDT=problem.cdt, BLOCK=BLOCK, num_warps=NUM_WARPS,
            )
            src = dst
        else:
            _gradient_kernel[problem.grid](
                grad_pred if needs_pred else problem.p, grad_target if needs_target else problem.t,
                src, problem.p, problem.t, problem.cp, problem.ct, problem.k,
                n, inner, problem.M, problem.SP, problem.taps, problem.r,
                NEED_P=int(bool(needs_pred)), NEED_T=int(bool(needs_target)),
                CDT=problem.cdt, BLOCK=BLOCK, num_warps=NUM_WARPS,
            )
    return grad_pred, grad_target


NAME = "triton"
