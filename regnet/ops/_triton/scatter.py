"""Deterministic image gradient of the sampling kernels: a gather instead of float atomics.

The gradient of ``out = sample(image, points)`` w.r.t. ``image`` is the transpose of the
interpolation: every output voxel adds ``weight * grad_out`` to its ``2**ndim`` corners (one
for ``nearest``). The fast path scatters these with ``tl.atomic_add``, whose order (and so
whose float rounding) changes from run to run on a GPU. In deterministic mode
(``regnet.set_deterministic(True)`` or ``torch.use_deterministic_algorithms(True)``) the
transpose is built explicitly instead, as a sparse matrix in CSR form, and applied as a gather
in which each input voxel sums its own contributions in a fixed order:

1. ``_plan_kernel``: for each output voxel and corner, the flat input index
   ``b * n_in + corner`` (a sentinel ``B * n_in`` for a corner outside the image, or a
   masked lane) and the interpolation weight: ``(B * n_out * K)`` keys and weights.
2. ``torch.sort(keys, stable=True)``: a stable sort has a unique result (ties stay in output
   voxel order), so it does not matter how the sort is implemented. ``torch.searchsorted``
   turns the sorted keys into row offsets.
3. ``_csr_gather_kernel``: one program lane per input voxel (and one program column per
   channel) sums ``weight * grad_out`` over its row, in row order, in float32 (float64 for
   float64 inputs), optionally on top of an initial value, and stores the result once.

Cost: ``K * n_out`` keys (int32 while ``B * n_in < 2**31``, else int64), weights, the sort's
output and permutation (int64): about ``K * n_out * 24`` bytes, i.e. ~1.3 GB for one
160x192x224 volume in 3D, against none for the atomic path; and a sort. Rows of very
different lengths (many points clamped onto the border) make a program loop to its longest
row. This is the price of bitwise repeatable gradients; the default path stays atomic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import triton
import triton.language as tl

from regnet.ops._modes import MODE_CODE, PADDING_CODE
from regnet.ops._triton import _common
from regnet.ops._triton._interpolation import (
    SIZE_ARGS,
    bilinear_corners,
    nearest_offset,
    padded_point,
    sizes,
    trilinear_corners,
)

BLOCK = 256
NUM_WARPS = 4


@triton.jit
def _put_corner(key_ptr, w_ptr, j, key, valid, w, sentinel, lane):
    tl.store(key_ptr + j, tl.where(valid, key, sentinel).to(key_ptr.dtype.element_ty), mask=lane)
    tl.store(w_ptr + j, tl.where(valid, w, 0.0).to(w_ptr.dtype.element_ty), mask=lane)


@triton.jit(do_not_specialize=SIZE_ARGS + ["sentinel"])
def _plan_kernel(
    key_ptr, w_ptr, src_ptr, scale, sentinel,
    S0, S1, S2, O0, O1, O2,
    NDIM: tl.constexpr, SOURCE: tl.constexpr, MODE: tl.constexpr, PADDING: tl.constexpr,
    ALIGN: tl.constexpr, CDT: tl.constexpr, K: tl.constexpr, BLOCK: tl.constexpr,
):
    b, offs, lane, n_out, n_in, p0, p1, p2, g0, g1, g2, m0, m1, m2, x, y, z = padded_point(
        src_ptr, scale, S0, S1, S2, O0, O1, O2, NDIM, SOURCE, PADDING, ALIGN, CDT, BLOCK)
    j = (b * n_out + offs) * K
    base = b * n_in
    if MODE == 1:
        off, valid = nearest_offset(p0, p1, p2, S0, S1, S2, lane, NDIM)
        _put_corner(key_ptr, w_ptr, j, base + off, valid, tl.zeros_like(p0) + 1, sentinel, lane)
    elif NDIM == 2:
        o00, o01, o10, o11, q00, q01, q10, q11, wa0, wa1, wc0, wc1 = bilinear_corners(p0, p1, S0, S1, lane)
        _put_corner(key_ptr, w_ptr, j + 0, base + o00, q00, wc0 * wa0, sentinel, lane)
        _put_corner(key_ptr, w_ptr, j + 1, base + o01, q01, wc1 * wa0, sentinel, lane)
        _put_corner(key_ptr, w_ptr, j + 2, base + o10, q10, wc0 * wa1, sentinel, lane)
        _put_corner(key_ptr, w_ptr, j + 3, base + o11, q11, wc1 * wa1, sentinel, lane)
    else:
        (r00, r01, r10, r11, c0, c1, q000, q001, q010, q011, q100, q101, q110, q111,
         wa0, wa1, wb0, wb1, wc0, wc1) = trilinear_corners(p0, p1, p2, S0, S1, S2, lane)
        _put_corner(key_ptr, w_ptr, j + 0, base + r00 + c0, q000, wc0 * wb0 * wa0, sentinel, lane)
        _put_corner(key_ptr, w_ptr, j + 1, base + r00 + c1, q001, wc1 * wb0 * wa0, sentinel, lane)
        _put_corner(key_ptr, w_ptr, j + 2, base + r01 + c0, q010, wc0 * wb1 * wa0, sentinel, lane)
        _put_corner(key_ptr, w_ptr, j + 3, base + r01 + c1, q011, wc1 * wb1 * wa0, sentinel, lane)
        _put_corner(key_ptr, w_ptr, j + 4, base + r10 + c0, q100, wc0 * wb0 * wa1, sentinel, lane)
        _put_corner(key_ptr, w_ptr, j + 5, base + r10 + c1, q101, wc1 * wb0 * wa1, sentinel, lane)
        _put_corner(key_ptr, w_ptr, j + 6, base + r11 + c0, q110, wc0 * wb1 * wa1, sentinel, lane)
        _put_corner(key_ptr, w_ptr, j + 7, base + r11 + c1, q111, wc1 * wb1 * wa1, sentinel, lane)


@triton.jit(do_not_specialize=["C", "n_in", "n_out", "total"])
def _csr_gather_kernel(
    out_ptr, gout_ptr, row_ptr, perm_ptr, w_ptr,
    C, n_in, n_out, total,
    K: tl.constexpr, HAS_INIT: tl.constexpr, CDT: tl.constexpr, BLOCK: tl.constexpr,
):
    """``out[b, c, i] (+)= sum_rows weight * grad_out[b, c, o]``, rows in a fixed order."""
    c = tl.program_id(1).to(tl.int64)
    v = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    lane = v < total
    start = tl.load(row_ptr + v, mask=lane, other=0)
    count = tl.load(row_ptr + v + 1, mask=lane, other=0) - start
    acc = tl.zeros([BLOCK], CDT)
    for t in range(0, tl.max(count, axis=0)):
        live = lane & (t < count)
        j = tl.load(perm_ptr + start + t, mask=live, other=0)
        w = tl.load(w_ptr + j, mask=live, other=0.0).to(CDT)
        o = j // K  # b * n_out + output voxel
        ob = o // n_out
        g = tl.load(gout_ptr + (ob * C + c) * n_out + (o - ob * n_out), mask=live, other=0.0).to(CDT)
        acc += w * g
    b = v // n_in
    dst = out_ptr + (b * C + c) * n_in + (v - b * n_in)
    if HAS_INIT:
        acc = tl.load(dst, mask=lane, other=0.0).to(CDT) + acc
    tl.store(dst, acc.to(out_ptr.dtype.element_ty), mask=lane)


def image_grad(grad: torch.Tensor, src: torch.Tensor, image_shape: Sequence[int], source: int, mode: str,
               padding_mode: str, align_corners: bool, *, acc_dtype: torch.dtype, scale: float = 1.0,
               out: torch.Tensor | None = None) -> torch.Tensor:
    """Deterministic ``d loss / d image`` of a sampling kernel.

    Args:
        grad: ``(B, C, *out_spatial)`` contiguous gradient of the output.
        src: the contiguous point source of the sampling kernel (grid, DDF, or theta in the
            compute dtype), ``SOURCE`` code ``source``.
        image_shape: ``(B, C, *spatial)`` of the sampled image.
        acc_dtype: dtype of the result (float32, float64 for float64 inputs).
        scale: the DDF source's displacement factor (see ``_interpolation.sample_point``).
        out: ``(B, C, *spatial)`` contiguous ``acc_dtype`` tensor to add the gradient onto in
            place (each element read and written once, by one program); a new tensor if None.
    """
    batch, channels = int(image_shape[0]), int(image_shape[1])
    spatial = tuple(int(s) for s in image_shape[2:])
    out_spatial = tuple(grad.shape[2:])
    ndim = len(spatial)
    n_in, n_out = math.prod(spatial), math.prod(out_spatial)
    device = grad.device
    has_init = out is not None
    if out is None:
        out = _common.empty(image_shape, acc_dtype, device)
    if out.numel() == 0:
        return out
    if n_out == 0:
        return out if has_init else out.zero_()
    k = 1 if mode == "nearest" else 2**ndim
    total = batch * n_in
    key_dtype = torch.int32 if total < 2**31 - 1 else torch.int64
    cdt, _ = _common.compute_dtype(acc_dtype)
    keys = _common.empty((batch * n_out * k,), key_dtype, device)
    weights = _common.empty((batch * n_out * k,), acc_dtype, device)
    _plan_kernel[(triton.cdiv(n_out, BLOCK), batch)](
        keys, weights, src, scale, total, *sizes(spatial), *sizes(out_spatial),
        NDIM=ndim, SOURCE=source, MODE=MODE_CODE[mode], PADDING=PADDING_CODE[padding_mode],
        ALIGN=bool(align_corners), CDT=cdt, K=k, BLOCK=BLOCK, num_warps=NUM_WARPS,
    )
    sorted_keys, perm = torch.sort(keys, stable=True)
    del keys
    rows = torch.searchsorted(sorted_keys, torch.arange(total + 1, dtype=key_dtype, device=device))
    del sorted_keys
    _csr_gather_kernel[(triton.cdiv(total, BLOCK), channels)](
        out, grad, rows, perm, weights, channels, n_in, n_out, total,
        K=k, HAS_INIT=has_init, CDT=cdt, BLOCK=BLOCK, num_warps=NUM_WARPS,
    )
    return out
