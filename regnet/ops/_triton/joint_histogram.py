"""Triton kernels for ``joint_histogram``: Parzen joint histogram without per-voxel weights.

Same numbers as the reference (:mod:`regnet.ops._torch.joint_histogram`, which states the
weights and their derivatives): MONAI's Gaussian kernel (intensities clamped to [0, 1],
exponents shifted by the nearest centre's) and the Mattes B-spline kernel (cubic for pred,
order 0 for target, bins placed from each batch item's own min / max with 2 padding bins).

Forward: a ``(P, B)`` grid; program ``(p, b)`` takes the voxel blocks ``p, p + P, ...`` of
item ``b``, forms both images' normalised weights for a block in registers (``(BLOCK, BINS)``
rows, ``BINS`` = the bin count rounded up to a power of two >= 16, padded bins and lanes
zero), and accumulates the block's joint histogram ``wa^T wb`` with ``tl.dot`` (IEEE float32,
no TF32; float64 for float64). At the end the program adds its ``bins x bins`` partial
histogram to the item's with one atomic add per bin; in deterministic mode
(:func:`regnet.ops._state.is_deterministic`) it stores the partial into a
``(B, P, bins, bins)`` buffer that torch sums in a fixed order. ``P`` is capped
(``PROGRAMS`` over the batch), so that buffer stays small. No ``(B, N, bins)`` tensor exists.

Backward: the same grid recomputes the weights per block; the histogram gradient tile
``G / N`` (``bins x bins``, loaded once per program) gives ``dL/dwa = wb G^T`` and ``dL/dwb =
wa G`` by ``tl.dot``, chained per voxel through the weights' derivatives and stored once.
B-spline pred: the bin size and origin depend on the item's min and max, so each program
also stores its partial sums ``sum r (x - m)``, ``sum r (M - x)`` and the tie counts; torch
reduces them (``(B, P, 4)``) and a small kernel adds the min / max terms at the extreme
voxels (zero gradient for a constant item). B-spline target (order 0): zero gradient.

Weighted samples (``weight`` ``(B or 1, C or 1, *spatial)``, read in place through its batch /
channel strides, 0 where broadcast): the pred rows ``wa`` of each block are multiplied by the
samples' weights before ``tl.dot`` and the histogram is divided by each item's total weight
(torch; the reference's ``weight_totals``); backward multiplies each voxel's gradient by its
weight and divides ``G`` by the total weight. The B-spline min / max (torch) and the tie counts
(kernels) use only the samples of weight > 0.

Arithmetic is float32 for float16/bfloat16/float32 and float64 for float64; results are
returned in the input dtype.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from regnet.ops import _state
from regnet.ops._constants import constant
from regnet.ops._torch.joint_histogram import PADDING, weight_totals
from regnet.ops._triton import _common

BLOCK = 64
NUM_WARPS = 4
PROGRAMS = 2048  # programs over the whole batch (per item: PROGRAMS // B, at least 1)
GAUSSIAN, BSPLINE = 0, 1


# --- jit helpers ----------------------------------------------------------------------------

@triton.jit
def _round_half_even(y):
    """``torch.round`` (ties to even) of non-negative ``y``."""
    r = tl.floor(y + 0.5)
    odd = (r.to(tl.int64) % 2) != 0
    return tl.where((r - y == 0.5) & odd, r - 1.0, r)


@triton.jit
def _load_block(p_ptr, t_ptr, b, N, start, CDT: tl.constexpr, BLOCK: tl.constexpr):
    """The block of item ``b``'s samples from ``start``: offsets, lanes, pred and target values."""
    offs = start + tl.arange(0, BLOCK)
    lane = offs < N
    x = tl.load(p_ptr + b * N + offs, mask=lane, other=0.0).to(CDT)
    y = tl.load(t_ptr + b * N + offs, mask=lane, other=0.0).to(CDT)
    return offs, lane, x, y


@triton.jit
def _load_weight(w_ptr, b, offs, lane, SP, WB, WC, CDT: tl.constexpr):
    """The weights of item ``b``'s samples ``offs`` (channel ``offs // SP``, voxel ``offs % SP``)
    from a ``(B or 1, C or 1, *spatial)`` tensor with batch / channel strides ``WB`` / ``WC``
    (0 where broadcast); 0 on padded lanes."""
    c = offs // SP
    return tl.load(w_ptr + b * WB + c * WC + (offs - c * SP), mask=lane, other=0.0).to(CDT)


@triton.jit
def _gaussian_weights(x, lane, cen_ptr, NB, preterm, CDT: tl.constexpr, BINS: tl.constexpr):
    """Normalised Gaussian weights ``(BLOCK, BINS)`` of samples ``x`` (clamped to [0, 1]) and
    the centres row ``(1, BINS)``; zero on padded bins and lanes."""
    bins = tl.arange(0, BINS)
    has_bin = bins < NB
    centres = tl.load(cen_ptr + bins, mask=has_bin, other=0.0).to(CDT)[None, :]
    xc = tl.minimum(tl.maximum(x, 0.0), 1.0)
    last = NB - 1
    idx = tl.minimum(tl.maximum(_round_half_even(xc * last), 0.0), last * 1.0).to(tl.int32)
    nearest = tl.load(cen_ptr + idx, mask=lane, other=0.0).to(CDT)
    shift = (xc - nearest) * (xc - nearest) * preterm
    d = xc[:, None] - centres
    u = tl.exp(shift[:, None] - preterm * d * d)
    u = tl.where(lane[:, None] & has_bin[None, :], u, 0.0)
    total = tl.sum(u, axis=1)
    total = tl.where(lane, total, 1.0)
    return u / total[:, None], centres


@triton.jit
def _bspline_position(x, m, h, NB):
    """Unclamped bin position ``t = (x - m) / h + 2`` and its clamp to ``[2, bins - 3]``."""
    t = (x - m) / h + 2.0
    c = tl.minimum(tl.maximum(t, 2.0), NB - 3.0)
    return t, c


@triton.jit
def _bspline_weights(c, lane, NB, ORDER: tl.constexpr, SLOPE: tl.constexpr, CDT: tl.constexpr, BINS: tl.constexpr):
    """Normalised B-spline weights ``(BLOCK, BINS)`` at clamped positions ``c`` (dense rows:
    zero outside the 4 (cubic) or 2 (order 0) taps), and for the cubic ``dw/dc``."""
    bins = tl.arange(0, BINS)
    ok = lane[:, None] & (bins < NB)[None, :]
    d = bins.to(CDT)[None, :] - c[:, None]  # exact on the taps
    s = tl.abs(d)
    if ORDER == 0:
        u = (tl.where(s < 0.5, 1.0, 0.0) + tl.where(s == 0.5, 0.5, 0.0)).to(CDT)
        u = tl.where(ok, u, 0.0)
        total = tl.where(lane, tl.sum(u, axis=1), 1.0)
        return u / total[:, None], u
    s2 = s * s
    inner = s < 1.0
    outer = (s >= 1.0) & (s < 2.0)
    two = 2.0 - s
    u = tl.where(inner, (4.0 - 6.0 * s2 + 3.0 * s2 * s) / 6.0, tl.where(outer, two * two * two / 6.0, 0.0))
    u = tl.where(ok, u, 0.0)
    total = tl.where(lane, tl.sum(u, axis=1), 1.0)
    w = u / total[:, None]
    if SLOPE:
        slope = tl.where(inner, 1.5 * s2 - 2.0 * s, tl.where(outer, -0.5 * two * two, 0.0))
        sign = tl.where(d > 0.0, 1.0, tl.where(d < 0.0, -1.0, 0.0))
        du = tl.where(ok, -slope * sign, 0.0)
        dw = (du - w * tl.sum(du, axis=1)[:, None]) / total[:, None]
        return w, dw
    return w, w


@triton.jit
def _gaussian_grad(x, w, q, centres, preterm):
    """``sum_a q_a dw_a/dx = 2 p sum_a (q_a - qbar) w_a (c_a - cbar)``, 0 where ``x`` was clamped."""
    cbar = tl.sum(w * centres, axis=1)
    q = q - tl.sum(q * w, axis=1)[:, None]
    g = tl.sum(q * w * (centres - cbar[:, None]), axis=1) * (2.0 * preterm)
    return tl.where((x >= 0.0) & (x <= 1.0), g, 0.0)


# --- kernels --------------------------------------------------------------------------------

@triton.jit(do_not_specialize=["N", "NB", "P", "SP", "WB", "WC"])
def _histogram_kernel(
    hist_ptr, p_ptr, t_ptr, cen_ptr, pp_ptr, pt_ptr, par_ptr, w_ptr, N, NB, P, SP, WB, WC,
    KERNEL: tl.constexpr, DET: tl.constexpr, HAS_W: tl.constexpr, CDT: tl.constexpr, BLOCK: tl.constexpr,
    BINS: tl.constexpr,
):
    """Joint histogram (unnormalised sums of ``wa^T wb``; ``HAS_W``: of ``v wa^T wb`` with the
    sample weights ``v``) of item ``program_id(1)``."""
    pid = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    preterm = tl.load(par_ptr).to(CDT)
    if KERNEL == 1:
        m_p = tl.load(pp_ptr + b * 4).to(CDT)
        h_p = tl.load(pp_ptr + b * 4 + 2).to(CDT)
        m_t = tl.load(pt_ptr + b * 4).to(CDT)
        h_t = tl.load(pt_ptr + b * 4 + 2).to(CDT)
    acc = tl.zeros([BINS, BINS], CDT)
    for start in range(pid * BLOCK, N, P * BLOCK):
        offs, lane, x, y = _load_block(p_ptr, t_ptr, b, N, start, CDT, BLOCK)
        if KERNEL == 0:
            wa, _ = _gaussian_weights(x, lane, cen_ptr, NB, preterm, CDT, BINS)
            wb, _ = _gaussian_weights(y, lane, cen_ptr, NB, preterm, CDT, BINS)
        else:
            _, ca = _bspline_position(x, m_p, h_p, NB)
            _, cb = _bspline_position(y, m_t, h_t, NB)
            wa, _ = _bspline_weights(ca, lane, NB, 3, False, CDT, BINS)
            wb, _ = _bspline_weights(cb, lane, NB, 0, False, CDT, BINS)
        if HAS_W:
            wa = wa * _load_weight(w_ptr, b, offs, lane, SP, WB, WC, CDT)[:, None]
        acc += tl.dot(tl.trans(wa), wb, input_precision="ieee")
    rows = tl.arange(0, BINS)[:, None]
    cols = tl.arange(0, BINS)[None, :]
    inside = (rows < NB) & (cols < NB)
    if DET:
        base = hist_ptr + (b * P + pid) * NB * NB
        tl.store(base + rows * NB + cols, acc, mask=inside)
    else:
        tl.atomic_add(hist_ptr + b * NB * NB + rows * NB + cols, acc, mask=inside)


@triton.jit(do_not_specialize=["N", "NB", "P", "SP", "WB", "WC"])
def _histogram_backward_kernel(
    gp_ptr, gt_ptr, part_ptr, g_ptr, p_ptr, t_ptr, cen_ptr, pp_ptr, pt_ptr, par_ptr, w_ptr, N, NB, P, SP, WB, WC,
    KERNEL: tl.constexpr, NEED_P: tl.constexpr, NEED_T: tl.constexpr, HAS_W: tl.constexpr,
    CDT: tl.constexpr, BLOCK: tl.constexpr, BINS: tl.constexpr,
):
    """Per-voxel gradients from ``G`` (``(B, bins, bins)``, already divided by ``N``, or by the
    total weight with ``HAS_W``, where each voxel's gradient is also multiplied by its weight).

    B-spline pred: ``gp`` gets ``r / h`` and ``part`` (``(B, P, 4)``) the program's
    ``sum r (x - m)``, ``sum r (M - x)``, ``#(x == m)``, ``#(x == M)`` (with ``HAS_W``, ties
    among the samples of weight > 0 only)."""
    pid = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    preterm = tl.load(par_ptr).to(CDT)
    rows = tl.arange(0, BINS)[:, None]
    cols = tl.arange(0, BINS)[None, :]
    G = tl.load(g_ptr + b * NB * NB + rows * NB + cols, mask=(rows < NB) & (cols < NB), other=0.0).to(CDT)
    if KERNEL == 1:
        m_p = tl.load(pp_ptr + b * 4).to(CDT)
        M_p = tl.load(pp_ptr + b * 4 + 1).to(CDT)
        h_p = tl.load(pp_ptr + b * 4 + 2).to(CDT)
        m_t = tl.load(pt_ptr + b * 4).to(CDT)
        h_t = tl.load(pt_ptr + b * 4 + 2).to(CDT)
        above = tl.zeros([BLOCK], CDT)
        below = tl.zeros([BLOCK], CDT)
        ties_min = tl.zeros([BLOCK], CDT)
        ties_max = tl.zeros([BLOCK], CDT)
    for start in range(pid * BLOCK, N, P * BLOCK):
        offs, lane, x, y = _load_block(p_ptr, t_ptr, b, N, start, CDT, BLOCK)
        if HAS_W:
            v = _load_weight(w_ptr, b, offs, lane, SP, WB, WC, CDT)
        if KERNEL == 0:
            wa, centres = _gaussian_weights(x, lane, cen_ptr, NB, preterm, CDT, BINS)
            wb, _ = _gaussian_weights(y, lane, cen_ptr, NB, preterm, CDT, BINS)
            if NEED_P:
                q = tl.dot(wb, tl.trans(G), input_precision="ieee")  # dL/dwa
                g = _gaussian_grad(x, wa, q, centres, preterm)
                if HAS_W:
                    g = g * v
                tl.store(gp_ptr + b * N + offs, g.to(gp_ptr.dtype.element_ty), mask=lane)
            if NEED_T:
                q = tl.dot(wa, G, input_precision="ieee")  # dL/dwb
                g = _gaussian_grad(y, wb, q, centres, preterm)
                if HAS_W:
                    g = g * v
                tl.store(gt_ptr + b * N + offs, g.to(gt_ptr.dtype.element_ty), mask=lane)
        else:
            t, ca = _bspline_position(x, m_p, h_p, NB)
            _, cb = _bspline_position(y, m_t, h_t, NB)
            wa, dwa = _bspline_weights(ca, lane, NB, 3, True, CDT, BINS)
            wb, _ = _bspline_weights(cb, lane, NB, 0, False, CDT, BINS)
            q = tl.dot(wb, tl.trans(G), input_precision="ieee")  # dL/dwa
            q = q - tl.sum(q * wa, axis=1)[:, None]  # sum_a dwa/dc = 0: centring keeps digits
            r = tl.where((t == ca) & lane, tl.sum(q * dwa, axis=1), 0.0)  # dL/dt
            counted = lane
            if HAS_W:
                r = r * v
                counted = lane & (v > 0.0)
            tl.store(gp_ptr + b * N + offs, r / h_p, mask=lane)
            above += r * (x - m_p)
            below += r * (M_p - x)
            ties_min += tl.where(counted & (x == m_p), 1.0, 0.0)
            ties_max += tl.where(counted & (x == M_p), 1.0, 0.0)
    if KERNEL == 1:
        base = part_ptr + (b * P + pid) * 4
        tl.store(base, tl.sum(above, axis=0))
        tl.store(base + 1, tl.sum(below, axis=0))
        tl.store(base + 2, tl.sum(ties_min, axis=0))
        tl.store(base + 3, tl.sum(ties_max, axis=0))


@triton.jit(do_not_specialize=["N", "SP", "WB", "WC"])
def _extremes_kernel(out_ptr, r_ptr, p_ptr, pp_ptr, ext_ptr, w_ptr, N, SP, WB, WC, HAS_W: tl.constexpr,
                     CDT: tl.constexpr, BLOCK: tl.constexpr):
    """B-spline pred: ``out = r / h + d_min [x == m] + d_max [x == M]`` (``HAS_W``: at the
    samples of weight > 0 only), 0 for a constant item."""
    b = tl.program_id(1).to(tl.int64)
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    lane = offs < N
    x = tl.load(p_ptr + b * N + offs, mask=lane, other=0.0).to(CDT)
    g = tl.load(r_ptr + b * N + offs, mask=lane, other=0.0).to(CDT)
    m = tl.load(pp_ptr + b * 4).to(CDT)
    M = tl.load(pp_ptr + b * 4 + 1).to(CDT)
    constant = tl.load(pp_ptr + b * 4 + 3).to(CDT)
    d_min = tl.load(ext_ptr + b * 2).to(CDT)
    d_max = tl.load(ext_ptr + b * 2 + 1).to(CDT)
    counted = lane
    if HAS_W:
        counted = lane & (_load_weight(w_ptr, b, offs, lane, SP, WB, WC, CDT) > 0.0)
    g = g + tl.where(counted & (x == m), d_min, 0.0)
    g = g + tl.where(counted & (x == M), d_max, 0.0)
    g = tl.where(constant != 0.0, 0.0, g)
    tl.store(out_ptr + b * N + offs, g.to(out_ptr.dtype.element_ty), mask=lane)


# --- launchers ------------------------------------------------------------------------------

@functools.lru_cache(maxsize=64)
def _centre_values(num_bins: int) -> tuple[float, ...]:
    """MONAI's bin centres: float32 ``linspace(0, 1, bins)`` (cast to the compute dtype on use)."""
    return tuple(torch.linspace(0.0, 1.0, num_bins).tolist())


class _Problem:
    def __init__(self, pred, target, num_bins, kernel, preterm, weight=None):
        self.dtype = pred.dtype
        self.cdt, self.acc = _common.compute_dtype(pred.dtype)
        self.device = pred.device
        self.B = pred.shape[0]
        self.p = pred.detach().reshape(self.B, -1).contiguous()
        self.t = target.detach().reshape(self.B, -1).contiguous()
        self.N = self.p.shape[1]
        self.NB = num_bins
        self.kernel = GAUSSIAN if kernel == "gaussian" else BSPLINE
        self.bins = max(16, triton.next_power_of_2(num_bins))
        self.params = constant([preterm], self.acc, self.device)
        self.centres = constant(_centre_values(num_bins), self.acc, self.device)
        self._weights(pred, weight)
        if self.kernel == BSPLINE:
            selected = None
            if self.w is not None:  # (B, N): the samples that place the bins
                selected = (self.w > 0).reshape(self.w.shape[0], int(self.w.shape[1]), -1)
                selected = selected.expand(self.B, int(pred.shape[1]), self.SP).reshape(self.B, self.N)
            self.place_p, self.place_t = self._placement(self.p, selected), self._placement(self.t, selected)
        else:
            self.place_p = self.place_t = self.params
        self.P = max(1, min(triton.cdiv(self.N, BLOCK), PROGRAMS // max(self.B, 1)))
        self.grid = (self.P, self.B)

    def _weights(self, pred, weight):
        """The sample weights read in place (``WB``, ``WC``: batch / channel strides, 0 where
        broadcast) and each item's total weight (``None`` without weights)."""
        self.SP = max(1, pred[0, 0].numel())
        self.w = self.totals = None
        self.wb = self.wc = 0
        if weight is None:
            return
        self.w = weight.detach().contiguous()
        rows, channels = int(self.w.shape[0]), int(self.w.shape[1])
        self.wb = channels * self.SP if rows == self.B and self.B > 1 else 0
        self.wc = self.SP if channels == int(pred.shape[1]) and channels > 1 else 0
        self.totals = weight_totals(self.w.reshape(rows, -1), int(pred.shape[1]) // channels, self.B, self.acc)

    def weight_args(self):
        """The kernels' ``w_ptr, SP, WB, WC`` arguments and ``HAS_W``."""
        return (self.p if self.w is None else self.w, self.SP, self.wb, self.wc), self.w is not None

    def _placement(self, x, selected=None):
        """``(B, 4)``: min, max, bin size (1 for a constant item), constant flag; as the reference
        (``selected``: over those samples only; ``m = M = 0`` for an item with none)."""
        if selected is None:
            m = x.amin(1).to(self.acc)
            M = x.amax(1).to(self.acc)
        else:
            seen = selected.any(1)
            m = torch.where(seen, torch.where(selected, x, float("inf")).amin(1).to(self.acc), 0)
            M = torch.where(seen, torch.where(selected, x, float("-inf")).amax(1).to(self.acc), 0)
        h = (M - m) / (self.NB - 2 * PADDING)
        constant = h <= 0
        h = torch.where(constant, torch.ones_like(h), h)
        return torch.stack([m, M, h, constant.to(self.acc)], dim=1).contiguous()

    def launch_args(self):
        return {"CDT": self.cdt, "BLOCK": BLOCK, "BINS": self.bins, "num_warps": NUM_WARPS}


def joint_histogram_forward(pred: torch.Tensor, target: torch.Tensor, num_bins: int, kernel: str,
                            preterm: float, weight: torch.Tensor | None = None) -> torch.Tensor:
    pr = _Problem(pred, target, num_bins, kernel, preterm, weight)
    det = _state.is_deterministic()
    if det:
        hist = _common.empty((pr.B, pr.P, num_bins, num_bins), pr.acc, pr.device)
    else:
        hist = torch.zeros((pr.B, num_bins, num_bins), dtype=pr.acc, device=pr.device)
    weight_args, has_w = pr.weight_args()
    _histogram_kernel[pr.grid](
        hist, pr.p, pr.t, pr.centres, pr.place_p, pr.place_t, pr.params, weight_args[0], pr.N, num_bins, pr.P,
        *weight_args[1:], KERNEL=pr.kernel, DET=det, HAS_W=has_w, **pr.launch_args(),
    )
    if det:
        hist = hist.sum(1)
    if pr.totals is None:
        return hist.div_(pr.N).to(pred.dtype)
    return hist.div_(pr.totals[:, None, None]).to(pred.dtype)


def joint_histogram_backward(grad: torch.Tensor, pred: torch.Tensor, target: torch.Tensor, num_bins: int, kernel: str,
                             preterm: float, needs_pred: bool, needs_target: bool,
                             weight: torch.Tensor | None = None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    pr = _Problem(pred, target, num_bins, kernel, preterm, weight)
    if pr.totals is None:
        G = (grad.to(pr.acc) / pr.N).contiguous()
    else:
        G = (grad.to(pr.acc) / pr.totals[:, None, None]).contiguous()
    weight_args, has_w = pr.weight_args()
    grad_pred = grad_target = None
    if pr.kernel == GAUSSIAN:
        if not (needs_pred or needs_target):
            return None, None
        grad_pred = _common.empty(pr.p.shape, pred.dtype, pr.device) if needs_pred else None
        grad_target = _common.empty(pr.t.shape, target.dtype, pr.device) if needs_target else None
        _histogram_backward_kernel[pr.grid](
            grad_pred if needs_pred else pr.p, grad_target if needs_target else pr.t, pr.params, G,
            pr.p, pr.t, pr.centres, pr.params, pr.params, pr.params, weight_args[0], pr.N, num_bins, pr.P,
            *weight_args[1:], KERNEL=GAUSSIAN, NEED_P=bool(needs_pred), NEED_T=bool(needs_target), HAS_W=has_w,
            **pr.launch_args(),
        )
    else:
        if needs_pred:
            r = _common.empty(pr.p.shape, pr.acc, pr.device)
            parts = _common.empty((pr.B, pr.P, 4), pr.acc, pr.device)
            _histogram_backward_kernel[pr.grid](
                r, r, parts, G, pr.p, pr.t, pr.centres, pr.place_p, pr.place_t, pr.params, weight_args[0], pr.N,
                num_bins, pr.P, *weight_args[1:], KERNEL=BSPLINE, NEED_P=True, NEED_T=False, HAS_W=has_w,
                **pr.launch_args(),
            )
            above, below, ties_min, ties_max = parts.sum(1).unbind(1)
            h = pr.place_p[:, 2]
            # t = (bins - 4) (x - m) / (M - m) + 2: dt/dm = -(M - x) / (h (M - m)), dt/dM = -(x - m) / (h (M - m)).
            denominator = h**2 * (num_bins - 2 * PADDING)
            extremes = torch.stack(
                [-below / denominator / ties_min.clamp_min(1), -above / denominator / ties_max.clamp_min(1)], dim=1
            ).contiguous()
            grad_pred = r if pred.dtype == pr.acc else _common.empty(pr.p.shape, pred.dtype, pr.device)
            _extremes_kernel[(triton.cdiv(pr.N, BLOCK), pr.B)](
                grad_pred, r, pr.p, pr.place_p, extremes, weight_args[0], pr.N, *weight_args[1:], HAS_W=has_w,
                CDT=pr.cdt, BLOCK=BLOCK, num_warps=NUM_WARPS,
            )
        if needs_target:  # order 0 weights are piecewise constant
            grad_target = torch.zeros_like(target)
    if grad_pred is not None:
        grad_pred = grad_pred.reshape(pred.shape)
    if grad_target is not None:
        grad_target = grad_target.reshape(target.shape)
    return grad_pred, grad_target


NAME = "triton"
