"""Reference backend for ``joint_histogram``: Parzen joint intensity histogram, chunked.

Every batch item ``(C, *spatial)`` is a set of ``N`` samples ``x_i`` (pred) and ``y_i``
(target). Each sample spreads over the bins with normalised Parzen weights ``wa_i``
(pred) and ``wb_i`` (target), and::

    pab = (1 / N) * sum_i wa_i^T wb_i                              (B, bins, bins)

Weights (as MONAI's ``GlobalMutualInformationLoss``):

- ``"gaussian"``: ``x`` clamped to ``[0, 1]``, centres ``c = linspace(0, 1, bins)``,
  ``u_a = exp(-preterm * (x - c_a)^2)``, ``w = u / sum(u)``. Evaluated with the nearest
  centre's exponent subtracted first, which changes nothing but keeps the largest weight
  from underflowing for small sigmas.
- ``"b-spline"``: bins placed from the item's min ``m`` and max ``M`` with padding 2:
  ``h = (M - m) / (bins - 4)``, position ``t = (x - m) / h + 2`` clamped to
  ``c in [2, bins - 3]``; pred uses the cubic B-spline of ``|a - c|`` (nonzero at the 4
  bins ``floor(c) - 1 .. floor(c) + 2``), target the box (order 0) kernel (bin
  ``floor(c)`` or ``floor(c) + 1``; both with 1/2 at a tie), each normalised over the bins.
  Only these taps are evaluated; ``|a - c|`` is exact in floating point for them, so the
  weights are MONAI's.

Nothing of size ``(B, N, bins)`` is formed: samples are processed ``CHUNK`` at a time (over
the whole batch) and the backward pass recomputes the weights chunk by chunk. With ``G`` the
incoming gradient ``(B, bins, bins)``::

    dL/dwa_i = (1 / N) G wb_i,   dL/dwb_i = (1 / N) G^T wa_i

chained through the weight derivatives (for the b-spline taps, ``G`` is gathered at the
tap pairs). For the b-spline kernel the bin size and origin depend on ``m`` and ``M``: with
``r_i = dL/dt_i`` and ``t = (bins - 4) (x - m) / (M - m) + 2``, ``dL/dm = -sum_i r_i (M - x_i) /
(h (M - m))`` and ``dL/dM = -sum_i r_i (x_i - m) / (h (M - m))``, accumulated over the
chunks and sent to the argmin / argmax samples, split evenly among ties as ``torch.min()`` /
``torch.max()`` do.
Target weights of order 0 are piecewise constant: their gradient is zero.

Weighted samples (``weight`` ``(B or 1, C or 1, *spatial)``, read chunk by chunk without
expanding it): ``pab = sum_i v_i wa_i^T wb_i / sum_i v_i`` per item (an item of total weight 0
keeps an all-zero histogram), the per-voxel gradients are multiplied by ``v_i``, ``G`` is divided
by the total weight instead of ``N``, and the b-spline min / max (and their ties) are taken over
the samples with ``v_i > 0``.
"""

from __future__ import annotations

import torch

# Samples (summed over the batch) handled at once; the peak extra memory is a few
# ``CHUNK * bins`` tensors. Tests lower it to check that chunking changes nothing.
CHUNK = 32768
PADDING = 2  # b-spline: bins kept free at each end of the histogram


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Half precision inputs are histogrammed in float32."""
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def _chunks(batch: int, n: int):
    step = max(1, CHUNK // max(batch, 1))
    for start in range(0, n, step):
        yield start, min(n, start + step)


class _Image:
    """One image as ``(B, N)`` samples, read chunk by chunk in the compute dtype."""

    def __init__(self, image: torch.Tensor, dtype: torch.dtype):
        self.x = image.reshape(image.shape[0], -1)
        self.dtype = dtype

    def chunk(self, start: int, stop: int) -> torch.Tensor:
        return self.x[:, start:stop].to(self.dtype)


class _Weight:
    """Sample weights ``(B or 1, n)`` of an image's ``(B, N)`` samples, read chunk by chunk from a
    ``(B or 1, C or 1, *spatial)`` tensor (broadcast over the batch and channels, never expanded)."""

    def __init__(self, weight: torch.Tensor, channels: int, dtype: torch.dtype):
        rows, own_channels = int(weight.shape[0]), int(weight.shape[1])
        self.voxels = weight[0, 0].numel()
        self.w = weight.reshape(rows, own_channels * self.voxels)
        self.repeat = channels // own_channels  # > 1: one weight map for every channel
        self.dtype = dtype

    def chunk(self, start: int, stop: int) -> torch.Tensor:
        if self.repeat == 1:
            return self.w[:, start:stop].to(self.dtype)
        index = torch.arange(start, stop, device=self.w.device) % self.voxels
        return self.w[:, index].to(self.dtype)

    def totals(self, batch: int) -> torch.Tensor:
        """``(B,)`` total weight of each item, 1 where it is 0 (an all-zero histogram stays 0)."""
        return weight_totals(self.w, self.repeat, batch, self.dtype)


def weight_totals(w: torch.Tensor, repeat: int, batch: int, dtype: torch.dtype) -> torch.Tensor:
    """``(B,)`` sums of the rows of ``w`` ``(B or 1, C_w * voxels)`` times ``repeat`` (the channels
    it stands for), in ``dtype``; 1 where a total is 0 (shared with the Triton backend)."""
    total = w.to(dtype).sum(1) * repeat
    total = torch.where(total > 0, total, torch.ones_like(total))
    return total.expand(batch).contiguous()


# ----------------------------------------------------------------------------- gaussian


def _centres(num_bins, like):
    """MONAI's centres: float32 ``linspace(0, 1, bins)`` cast to the compute dtype."""
    return torch.linspace(0.0, 1.0, num_bins, dtype=torch.float32).to(device=like.device, dtype=like.dtype)


def _gaussian_weights(x, centres, preterm):
    """Normalised weights ``(B, n, bins)`` of samples ``x`` ``(B, n)`` (clamped to [0, 1] here)."""
    x = x.clamp(0, 1)
    # Shift every exponent by the nearest centre's, so the largest weight is about exp(0) = 1.
    last = centres.numel() - 1
    nearest = centres[(x * last).round_().long().clamp_(0, last)]  # clamp: NaN samples stay NaN, no bad index
    shift = (x - nearest).square_().mul_(preterm).unsqueeze(-1)
    d = x.unsqueeze(-1) - centres
    u = torch.addcmul(shift, d, d, value=-preterm).exp_()
    return u.div_(u.sum(-1, keepdim=True))


def _gaussian_grad(x, w, q, centres, preterm):
    """``sum_a q_a dw_a/dx`` for gaussian weights: ``dw_a/dx = 2 p w_a (c_a - cbar)``.

    Since ``sum_a dw_a/dx = 0``, ``q`` is first centred on its ``w``-mean (as autograd's
    derivative of the normalisation does), which keeps float32 digits. ``q`` is overwritten.
    """
    cbar = (w @ centres).unsqueeze(-1)
    q.sub_((q * w).sum(-1, keepdim=True))
    g = q.mul_(w).mul_(centres - cbar).sum(-1).mul_(2 * preterm)
    inside = (x >= 0) & (x <= 1)  # clamp's gradient passes on the boundary, as torch.clamp
    return torch.where(inside, g, 0)


def _gaussian_forward(P, T, num_bins, preterm, pab, W=None):
    batch, n = P.x.shape
    centres = _centres(num_bins, pab)
    for start, stop in _chunks(batch, n):
        wa = _gaussian_weights(P.chunk(start, stop), centres, preterm)
        wb = _gaussian_weights(T.chunk(start, stop), centres, preterm)
        if W is not None:
            wa.mul_(W.chunk(start, stop).unsqueeze(-1))
        pab.baddbmm_(wa.transpose(1, 2), wb)


def _gaussian_backward(G, P, T, num_bins, preterm, grad_pred, grad_target, W=None):
    batch, n = P.x.shape
    centres = _centres(num_bins, G)
    for start, stop in _chunks(batch, n):
        x, y = P.chunk(start, stop), T.chunk(start, stop)
        wa = _gaussian_weights(x, centres, preterm)
        wb = _gaussian_weights(y, centres, preterm)
        v = None if W is None else W.chunk(start, stop)
        if grad_pred is not None:
            q = torch.bmm(wb, G.transpose(1, 2))  # dL/dwa, (B, n, bins)
            g = _gaussian_grad(x, wa, q, centres, preterm)
            grad_pred[:, start:stop] = g if v is None else g * v
        if grad_target is not None:
            q = torch.bmm(wa, G)  # dL/dwb
            g = _gaussian_grad(y, wb, q, centres, preterm)
            grad_target[:, start:stop] = g if v is None else g * v


# ----------------------------------------------------------------------------- b-spline


class _Placement:
    """Per item min ``m``, max ``M`` and bin size ``h`` (1 for a constant item) of one image;
    with weights, over the samples of weight > 0 (``m = M = 0``, constant, where there is none)."""

    def __init__(self, image: _Image, num_bins: int, W: _Weight | None = None):
        if W is None:
            self.m = image.x.amin(1).to(image.dtype)
            self.M = image.x.amax(1).to(image.dtype)
        else:
            self.m, self.M = _weighted_extremes(image, W)
        h = (self.M - self.m) / (num_bins - 2 * PADDING)
        self.constant = h <= 0  # every sample then lands on bin 2
        self.h = torch.where(self.constant, torch.ones_like(h), h)
        self.num_bins = num_bins

    def position(self, x):
        """Unclamped bin position ``t = (x - m) / h + 2`` of samples ``x`` ``(B, n)``."""
        return (x - self.m[:, None]) / self.h[:, None] + PADDING

    def clamp(self, t):
        return t.clamp(PADDING, self.num_bins - PADDING - 1)


def _weighted_extremes(image: _Image, W: _Weight):
    batch, n = image.x.shape
    low = torch.full((batch,), float("inf"), dtype=image.dtype, device=image.x.device)
    high = torch.full_like(low, float("-inf"))
    seen = torch.zeros(batch, dtype=torch.bool, device=image.x.device)
    for start, stop in _chunks(batch, n):
        x, selected = image.chunk(start, stop), W.chunk(start, stop) > 0
        low = torch.minimum(low, torch.where(selected, x, float("inf")).amin(1))
        high = torch.maximum(high, torch.where(selected, x, float("-inf")).amax(1))
        seen |= selected.any(1)
    return torch.where(seen, low, 0), torch.where(seen, high, 0)


def _cubic(s):
    """Cubic B-spline of ``s >= 0`` and its derivative."""
    s2 = s * s
    inner = s < 1
    outer = (s >= 1) & (s < 2)
    two = 2 - s
    value = torch.where(inner, (4 - 6 * s2 + 3 * s2 * s) / 6, torch.where(outer, two * two * two / 6, 0))
    slope = torch.where(inner, 1.5 * s2 - 2 * s, torch.where(outer, -0.5 * two * two, 0))
    return value, slope


def _taps(c, order, num_bins, with_slope=False):
    """Bins ``(B, n, k)`` (long), normalised weights and, for order 3, ``dw/dc`` at clamped positions ``c``.

    The bin indices are clamped to the histogram so that a NaN sample gives NaN weights
    (as MONAI) rather than an out-of-range index.
    """
    base = c.floor()
    first, count = (-1, 4) if order == 3 else (0, 2)
    bins = base.unsqueeze(-1) + torch.arange(first, first + count, dtype=c.dtype, device=c.device)
    d = bins - c.unsqueeze(-1)  # exact: a small integer minus a value within 2 of it
    s = d.abs()
    if order == 0:
        u = (s < 0.5).to(c.dtype) + (s == 0.5).to(c.dtype) * 0.5
        return bins.long().clamp_(0, num_bins - 1), u.div_(u.sum(-1, keepdim=True)), None
    u, slope = _cubic(s)
    total = u.sum(-1, keepdim=True)
    w = u / total
    dw = None
    if with_slope:
        du = -slope * torch.sign(d)  # d|a - c|/dc = -sgn(a - c), zero at a == c as torch.abs
        dw = (du - w * du.sum(-1, keepdim=True)) / total
    return bins.long().clamp_(0, num_bins - 1), w, dw


def _dense(bins, w, num_bins):
    return torch.zeros(*w.shape[:-1], num_bins, dtype=w.dtype, device=w.device).scatter_(-1, bins, w)


def _bspline_forward(P, T, num_bins, pab, W=None):
    batch, n = P.x.shape
    place_p, place_t = _Placement(P, num_bins, W), _Placement(T, num_bins, W)
    for start, stop in _chunks(batch, n):
        ia, wa, _ = _taps(place_p.clamp(place_p.position(P.chunk(start, stop))), 3, num_bins)
        ib, wb, _ = _taps(place_t.clamp(place_t.position(T.chunk(start, stop))), 0, num_bins)
        if W is not None:
            wa = wa * W.chunk(start, stop).unsqueeze(-1)
        # Scattered into dense rows so that the sum over samples is a (blocked) matmul.
        pab.baddbmm_(_dense(ia, wa, num_bins).transpose(1, 2), _dense(ib, wb, num_bins))


def _bspline_backward(G, P, T, num_bins, grad_pred, W=None):
    batch, n = P.x.shape
    place_p, place_t = _Placement(P, num_bins, W), _Placement(T, num_bins, W)
    G_flat = G.reshape(batch, num_bins * num_bins)
    sum_above_min = torch.zeros(batch, dtype=G.dtype, device=G.device)  # sum_i dL/dt_i (x_i - m)
    sum_below_max = torch.zeros_like(sum_above_min)  # sum_i dL/dt_i (M - x_i)
    ties_min = torch.zeros(batch, dtype=torch.long, device=G.device)
    ties_max = torch.zeros_like(ties_min)
    m, M, h = place_p.m[:, None], place_p.M[:, None], place_p.h[:, None]
    for start, stop in _chunks(batch, n):
        x = P.chunk(start, stop)
        t = place_p.position(x)
        c = place_p.clamp(t)
        ia, wa, dwa = _taps(c, 3, num_bins, with_slope=True)
        ib, wb, _ = _taps(place_t.clamp(place_t.position(T.chunk(start, stop))), 0, num_bins)
        pairs = (ia.unsqueeze(-1) * num_bins + ib.unsqueeze(-2)).reshape(batch, -1)
        g = G_flat.gather(1, pairs).reshape(*ia.shape, ib.shape[-1])  # G[a, b] at the tap pairs
        q = (g * wb.unsqueeze(-2)).sum(-1)  # dL/dwa at the pred taps, (B, n, 4)
        q -= (q * wa).sum(-1, keepdim=True)  # sum_a dwa/dc = 0: centring q only keeps digits
        r = torch.where(t == c, (q * dwa).sum(-1), 0)  # dL/dt; clamp passes it on the boundary
        if W is None:
            at_min, at_max = x == m, x == M
        else:  # only the samples of weight > 0 count, and place the bins
            v = W.chunk(start, stop)
            r = r * v
            at_min, at_max = (x == m) & (v > 0), (x == M) & (v > 0)
        grad_pred[:, start:stop] = r / h
        sum_above_min += (r * (x - m)).sum(1)
        sum_below_max += (r * (M - x)).sum(1)
        ties_min += at_min.sum(1)
        ties_max += at_max.sum(1)
    # t = (x - m) / h + 2 = (bins - 4) (x - m) / (M - m) + 2: the min and max move every bin,
    # dt/dm = -(M - x) / (h (M - m)) and dt/dM = -(x - m) / (h (M - m)), h (M - m) = h^2 (bins - 4).
    denominator = place_p.h**2 * (num_bins - 2 * PADDING)
    d_min = (-sum_below_max / denominator / ties_min.clamp_min(1))[:, None]
    d_max = (-sum_above_min / denominator / ties_max.clamp_min(1))[:, None]
    for start, stop in _chunks(batch, n):
        x = P.chunk(start, stop)
        part = grad_pred[:, start:stop]
        if W is None:
            at_min, at_max = x == m, x == M
        else:
            selected = W.chunk(start, stop) > 0
            at_min, at_max = (x == m) & selected, (x == M) & selected
        part += torch.where(at_min, d_min, 0)
        part += torch.where(at_max, d_max, 0)
    # A constant item has no bin size to differentiate through: its gradient is zero.
    grad_pred[place_p.constant] = 0


# ----------------------------------------------------------------------------- entry points


def joint_histogram_forward(pred: torch.Tensor, target: torch.Tensor, num_bins: int, kernel: str,
                            preterm: float, weight: torch.Tensor | None = None) -> torch.Tensor:
    dtype = _compute_dtype(pred.dtype)
    P, T = _Image(pred, dtype), _Image(target, dtype)
    W = None if weight is None else _Weight(weight, pred.shape[1], dtype)
    pab = torch.zeros(P.x.shape[0], num_bins, num_bins, dtype=dtype, device=pred.device)
    if kernel == "gaussian":
        _gaussian_forward(P, T, num_bins, preterm, pab, W)
    else:
        _bspline_forward(P, T, num_bins, pab, W)
    if W is None:
        return pab.div_(P.x.shape[1]).to(pred.dtype)
    return pab.div_(W.totals(P.x.shape[0])[:, None, None]).to(pred.dtype)


def joint_histogram_backward(grad: torch.Tensor, pred: torch.Tensor, target: torch.Tensor, num_bins: int, kernel: str,
                             preterm: float, needs_pred: bool, needs_target: bool,
                             weight: torch.Tensor | None = None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    dtype = _compute_dtype(pred.dtype)
    P, T = _Image(pred, dtype), _Image(target, dtype)
    batch, n = P.x.shape
    W = None if weight is None else _Weight(weight, pred.shape[1], dtype)
    G = grad.to(dtype) / n if W is None else grad.to(dtype) / W.totals(batch)[:, None, None]
    grad_pred = torch.empty((batch, n), dtype=dtype, device=pred.device) if needs_pred else None
    grad_target = None
    if kernel == "gaussian":
        grad_target = torch.empty((batch, n), dtype=dtype, device=pred.device) if needs_target else None
        if needs_pred or needs_target:
            _gaussian_backward(G, P, T, num_bins, preterm, grad_pred, grad_target, W)
    else:
        if needs_pred:
            _bspline_backward(G, P, T, num_bins, grad_pred, W)
        if needs_target:  # order 0 weights are piecewise constant
            grad_target = torch.zeros_like(target)
    if grad_pred is not None:
        grad_pred = grad_pred.reshape(pred.shape).to(pred.dtype)
    if grad_target is not None:
        grad_target = grad_target.reshape(target.shape).to(target.dtype)
    return grad_pred, grad_target
