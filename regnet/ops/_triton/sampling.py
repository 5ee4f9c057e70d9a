"""Fused Triton kernels for the sampling family: ``grid_sample``, ``warp``, ``affine_transform``.

One forward and one backward kernel serve all three ops. Each program handles ``BLOCK``
output voxels of one batch item (``program_id(1)``) and computes each voxel's sample point
on the fly from its *source*:

- ``grid``: read from the sampling grid ``(B, *out_spatial, ndim)`` (``grid_sample``);
- ``ddf``: voxel index + displacement, read from the field's channels ``(B, ndim, *spatial)``
  (``warp``; MONAI's ``Warp`` convention, ``align_corners=True``);
- ``affine``: ``theta`` applied to the voxel's normalised coordinates (``affine_transform``;
  ``affine_grid``'s base grid, ``torch.linspace``'s arithmetic).

No sampling grid is ever materialised. The interpolation weights, corner offsets and masks
are computed once per voxel; the channels are a loop inside the kernel.

Semantics are those of ATen's grid sampler (the CUDA/scalar code path): unnormalisation,
``border`` clipping and ``reflection`` (``fmod``-based, exact for points far outside) with
their gradient factors, ``nearest`` rounding half to even (``nearbyint``), bilinear and
trilinear weights, coordinates outside the int range or non-finite sent to -100 (zero).

Backward: the image gradient is scattered with ``tl.atomic_add`` into a float32 (float64
for float64 inputs) buffer; the gradient of the sample point is gathered per voxel (one
accumulator per corner summed over channels) and chained to the grid, the DDF, or
``theta`` (reduced over the program's voxels, then one atomic add per entry per program).
Arithmetic is float32 for float16/bfloat16/float32 inputs and float64 for float64 inputs.

Deterministic mode (:func:`regnet.ops._backend.is_deterministic`): no float atomics. The
image gradient comes from :func:`regnet.ops._triton.scatter.image_grad` (sort + gather), the
``theta`` gradient from per-program partial sums (``DET``) that torch adds up.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from regnet.ops._backend import is_deterministic
from regnet.ops._modes import MODE_CODE, PADDING_CODE

SOURCE_GRID, SOURCE_DDF, SOURCE_AFFINE = 0, 1, 2
BLOCK = 256
#: One voxel per thread. Chosen from ptxas's register counts (sm_90a, Triton 3.9; see
#: docs/triton.md), not yet from GPU timings: at 4 warps (two voxels per thread) the float32
#: backward kernels need 112-174 registers (2-4 blocks, 8-16 warps per SM); at 8 warps 64
#: (4 blocks, 32 warps), and the forward kernels 40-48 instead of 72-80.
NUM_WARPS = 8
_INT_LIMIT = 2**31 - 1

# Sizes are never specialised (a size of 1 would otherwise become a compile-time constant).
_SIZE_ARGS = ["C", "S0", "S1", "S2", "O0", "O1", "O2"]


# --- coordinate helpers ---------------------------------------------------------------------

@triton.jit
def _unnormalize(g, size, ALIGN: tl.constexpr):
    """Normalised coordinate -> voxel coordinate, and d(voxel)/d(normalised)."""
    s = tl.cast(size, g.dtype)
    if ALIGN:
        p = ((g + 1) / 2) * (s - 1)
        m = (s - 1) / 2
    else:
        p = ((g + 1) * s - 1) / 2
        m = s / 2
    return p, m


@triton.jit
def _clip(p, size):
    """ATen's clip_coordinates(_set_grad): clamp to [0, size - 1]; gradient 0 at and beyond."""
    hi = tl.cast(size, p.dtype) - 1
    grad = tl.where((p <= 0) | (p >= hi), 0.0, 1.0)
    p = tl.minimum(tl.maximum(p, 0.0), hi)
    return p, grad


@triton.jit
def _reflect(p, twice_low, twice_high):
    """ATen's reflect_coordinates(_set_grad) with exact ``fmod`` (any distance outside)."""
    lo = twice_low / 2
    span = (twice_high - twice_low) / 2
    x = p - lo
    sign = tl.where(x < 0, -1.0, 1.0)
    x = tl.abs(x)
    safe_span = tl.where(span > 0, span, 1.0)
    extra = x % safe_span
    flips = tl.floor(x / safe_span)
    odd = (flips % 2) != 0
    out = tl.where(odd, span - extra + lo, extra + lo)
    grad = tl.where(odd, -sign, sign)
    empty = span <= 0  # twice_low == twice_high: a single voxel with align_corners=True
    return tl.where(empty, 0.0, out), tl.where(empty, 0.0, grad)


@triton.jit
def _pad(p, size, PADDING: tl.constexpr, ALIGN: tl.constexpr):
    """Padding transform of a voxel coordinate; returns (coordinate, gradient factor)."""
    if PADDING == 1:  # border
        p, grad = _clip(p, size)
    elif PADDING == 2:  # reflection
        s = tl.cast(size, p.dtype)
        if ALIGN:
            p, grad = _reflect(p, s * 0, 2 * (s - 1))
        else:
            p, grad = _reflect(p, s * 0 - 1, 2 * s - 1)
        p, clip_grad = _clip(p, size)
        grad = grad * clip_grad
    else:  # zeros
        grad = tl.zeros_like(p) + 1
    # ATen's safe_downgrade_to_int_range: out of int range or non-finite -> -100 (outside).
    p = tl.where((p < 2147483646.0) & (p > -2147483648.0), p, -100.0)
    return p, grad


@triton.jit
def _linspace(k, n, ALIGN: tl.constexpr, CDT: tl.constexpr):
    """``affine_grid``'s base coordinate of index ``k`` on an axis of ``n`` voxels
    (``torch.linspace(-1, 1, n)``, times ``(n - 1) / n`` without align_corners)."""
    kf = k.to(CDT)
    nf = tl.cast(n, CDT)
    step = 2 / tl.maximum(nf - 1, 1.0)
    v = tl.where(k < n // 2, -1 + step * kf, 1 - step * (nf - 1 - kf))
    if not ALIGN:
        v = v * (nf - 1) / nf
    return tl.where(n > 1, v, 0.0)


@triton.jit
def _sample_point(src_ptr, scale, b, offs, lane, k0, k1, k2, S0, S1, S2, O0, O1, O2,
                  NDIM: tl.constexpr, SOURCE: tl.constexpr, ALIGN: tl.constexpr, CDT: tl.constexpr):
    """Sample point of each output voxel in input voxel coordinates ``(p0, p1, p2)`` along the
    array axes, the factors ``(m0, m1, m2)`` d(p)/d(source value), and the voxel's normalised
    base coordinates ``(x, y, z)`` (only meaningful for the affine source).
    ``scale`` multiplies the displacements of the DDF source (a power of two: ``exp``'s
    ``svf / 2**steps`` without a scaled copy; 1 otherwise). In 2D the third entries are
    placeholders."""
    n_out = O0 * O1 * O2
    if SOURCE == 0:  # grid (B, *out, NDIM), last dim (x, y[, z])
        gptr = src_ptr + b * n_out * NDIM + offs * NDIM
        gx = tl.load(gptr, mask=lane, other=0.0).to(CDT)
        gy = tl.load(gptr + 1, mask=lane, other=0.0).to(CDT)
        if NDIM == 3:
            gz = tl.load(gptr + 2, mask=lane, other=0.0).to(CDT)
            p0, m0 = _unnormalize(gz, S0, ALIGN)
            p1, m1 = _unnormalize(gy, S1, ALIGN)
            p2, m2 = _unnormalize(gx, S2, ALIGN)
        else:
            p0, m0 = _unnormalize(gy, S0, ALIGN)
            p1, m1 = _unnormalize(gx, S1, ALIGN)
            p2, m2 = p0, m0
        x, y, z = gx, gy, gx
    elif SOURCE == 1:  # ddf (B, NDIM, *spatial), channel a along array axis a, voxel units
        dptr = src_ptr + b * n_out * NDIM + offs
        u0 = tl.load(dptr, mask=lane, other=0.0).to(CDT) * scale
        u1 = tl.load(dptr + n_out, mask=lane, other=0.0).to(CDT) * scale
        # An axis of one voxel samples at 0 whatever the displacement (MONAI's normalisation).
        p0 = tl.where(S0 > 1, k0.to(CDT) + u0, 0.0)
        p1 = tl.where(S1 > 1, k1.to(CDT) + u1, 0.0)
        m0 = tl.where(S0 > 1, 1.0, 0.0)
        m1 = tl.where(S1 > 1, 1.0, 0.0)
        if NDIM == 3:
            u2 = tl.load(dptr + 2 * n_out, mask=lane, other=0.0).to(CDT) * scale
            p2 = tl.where(S2 > 1, k2.to(CDT) + u2, 0.0)
            m2 = tl.where(S2 > 1, 1.0, 0.0)
        else:
            p2, m2 = p0, m0
        x, y, z = p0, p0, p0
    else:  # affine: theta (B, NDIM, NDIM + 1) in CDT applied to (x, y[, z], 1)
        tptr = src_ptr + b * (NDIM * (NDIM + 1))
        if NDIM == 3:
            x = _linspace(k2, O2, ALIGN, CDT)
            y = _linspace(k1, O1, ALIGN, CDT)
            z = _linspace(k0, O0, ALIGN, CDT)
            gx = x * tl.load(tptr + 0) + y * tl.load(tptr + 1) + z * tl.load(tptr + 2) + tl.load(tptr + 3)
            gy = x * tl.load(tptr + 4) + y * tl.load(tptr + 5) + z * tl.load(tptr + 6) + tl.load(tptr + 7)
            gz = x * tl.load(tptr + 8) + y * tl.load(tptr + 9) + z * tl.load(tptr + 10) + tl.load(tptr + 11)
            p0, m0 = _unnormalize(gz, S0, ALIGN)
            p1, m1 = _unnormalize(gy, S1, ALIGN)
            p2, m2 = _unnormalize(gx, S2, ALIGN)
        else:
            x = _linspace(k1, O1, ALIGN, CDT)
            y = _linspace(k0, O0, ALIGN, CDT)
            z = x
            gx = x * tl.load(tptr + 0) + y * tl.load(tptr + 1) + tl.load(tptr + 2)
            gy = x * tl.load(tptr + 3) + y * tl.load(tptr + 4) + tl.load(tptr + 5)
            p0, m0 = _unnormalize(gy, S0, ALIGN)
            p1, m1 = _unnormalize(gx, S1, ALIGN)
            p2, m2 = p0, m0
    return p0, p1, p2, m0, m1, m2, x, y, z


@triton.jit
def _padded_point(src_ptr, scale, S0, S1, S2, O0, O1, O2, NDIM: tl.constexpr, SOURCE: tl.constexpr,
                  PADDING: tl.constexpr, ALIGN: tl.constexpr, CDT: tl.constexpr, BLOCK: tl.constexpr):
    """The part both kernels share: this program's output voxels, their sample points in
    voxels of the input, padded, with the padding's gradient factors (``g2`` is 1 in 2D)."""
    pid = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    n_out = O0 * O1 * O2
    n_in = S0 * S1 * S2
    lane = offs < n_out
    k2 = offs % O2
    rest = offs // O2
    k1 = rest % O1
    k0 = rest // O1

    p0, p1, p2, m0, m1, m2, x, y, z = _sample_point(
        src_ptr, scale, b, offs, lane, k0, k1, k2, S0, S1, S2, O0, O1, O2, NDIM, SOURCE, ALIGN, CDT)
    p0, g0 = _pad(p0, S0, PADDING, ALIGN)
    p1, g1 = _pad(p1, S1, PADDING, ALIGN)
    if NDIM == 3:
        p2, g2 = _pad(p2, S2, PADDING, ALIGN)
    else:
        g2 = tl.zeros_like(p0) + 1
    return b, offs, lane, n_out, n_in, p0, p1, p2, g0, g1, g2, m0, m1, m2, x, y, z


@triton.jit
def _linear_axis(p, size):
    """Lower/upper indices (clamped in range), weights and in-bounds masks along one axis."""
    f = tl.floor(p)
    hi = tl.cast(size, p.dtype) - 1
    w1 = p - f
    w0 = (f + 1) - p
    v0 = (f >= 0) & (f <= hi)
    v1 = (f >= -1) & (f <= hi - 1)
    i0 = tl.minimum(tl.maximum(f, 0.0), hi).to(tl.int32)
    i1 = tl.minimum(tl.maximum(f + 1, 0.0), hi).to(tl.int32)
    return i0, i1, w0, w1, v0, v1


@triton.jit
def _nearest_axis(p, size):
    """Index rounded half to even (``nearbyint``), clamped in range, and its in-bounds mask."""
    f = tl.floor(p)
    d = p - f
    r = tl.where(d > 0.5, f + 1, f)
    r = tl.where((d == 0.5) & ((f % 2) != 0), f + 1, r)
    hi = tl.cast(size, p.dtype) - 1
    valid = (r >= 0) & (r <= hi)
    return tl.minimum(tl.maximum(r, 0.0), hi).to(tl.int32), valid


@triton.jit
def _nearest_offset(p0, p1, p2, S0, S1, S2, lane, NDIM: tl.constexpr):
    """Flat offset of the nearest input voxel and its mask (``lane`` and in bounds)."""
    i0, v0 = _nearest_axis(p0, S0)
    i1, v1 = _nearest_axis(p1, S1)
    off = i0 * S1 + i1
    valid = lane & v0 & v1
    if NDIM == 3:
        i2, v2 = _nearest_axis(p2, S2)
        off = off * S2 + i2
        valid = valid & v2
    return off, valid


@triton.jit
def _bilinear_corners(p0, p1, S0, S1, lane):
    """The four corners of a 2D sample point: flat offsets ``o<ij>`` and masks ``q<ij>``
    (``lane`` and in bounds) of corner ``(a_i, c_j)``, and the weights ``wa`` along axis 0
    and ``wc`` along axis 1 (corner ``(i, j)`` weighs ``wc_j * wa_i``)."""
    a0, a1, wa0, wa1, va0, va1 = _linear_axis(p0, S0)
    c0, c1, wc0, wc1, vc0, vc1 = _linear_axis(p1, S1)
    o00 = a0 * S1 + c0
    o01 = a0 * S1 + c1
    o10 = a1 * S1 + c0
    o11 = a1 * S1 + c1
    q00 = lane & va0 & vc0
    q01 = lane & va0 & vc1
    q10 = lane & va1 & vc0
    q11 = lane & va1 & vc1
    return o00, o01, o10, o11, q00, q01, q10, q11, wa0, wa1, wc0, wc1


@triton.jit
def _trilinear_corners(p0, p1, p2, S0, S1, S2, lane):
    """The eight corners of a 3D sample point: row offsets ``r<ij>`` of ``(a_i, b_j)`` (corner
    ``(a_i, b_j, c_k)`` is at ``r<ij> + c<k>``), masks ``q<ijk>`` (``lane`` and in bounds), and
    the weights ``wa``, ``wb``, ``wc`` along axes 0, 1, 2 (corner weight ``wc_k * wb_j * wa_i``)."""
    a0, a1, wa0, wa1, va0, va1 = _linear_axis(p0, S0)
    b0, b1, wb0, wb1, vb0, vb1 = _linear_axis(p1, S1)
    c0, c1, wc0, wc1, vc0, vc1 = _linear_axis(p2, S2)
    r00 = (a0 * S1 + b0) * S2
    r01 = (a0 * S1 + b1) * S2
    r10 = (a1 * S1 + b0) * S2
    r11 = (a1 * S1 + b1) * S2
    q000 = lane & va0 & vb0 & vc0
    q001 = lane & va0 & vb0 & vc1
    q010 = lane & va0 & vb1 & vc0
    q011 = lane & va0 & vb1 & vc1
    q100 = lane & va1 & vb0 & vc0
    q101 = lane & va1 & vb0 & vc1
    q110 = lane & va1 & vb1 & vc0
    q111 = lane & va1 & vb1 & vc1
    return (r00, r01, r10, r11, c0, c1, q000, q001, q010, q011, q100, q101, q110, q111,
            wa0, wa1, wb0, wb1, wc0, wc1)


@triton.jit
def _bilinear_point_grad(s00, s01, s10, s11, wa0, wa1, wc0, wc1):
    """d(sample)/d(point) along axes 0 and 1 from the corner sums ``s<ij>`` (the values at the
    corners, or their sums weighted by the output gradient over channels)."""
    d1 = wa0 * (s01 - s00) + wa1 * (s11 - s10)
    d0 = wc0 * (s10 - s00) + wc1 * (s11 - s01)
    return d0, d1


@triton.jit
def _trilinear_point_grad(s000, s001, s010, s011, s100, s101, s110, s111, wa0, wa1, wb0, wb1, wc0, wc1):
    """d(sample)/d(point) along axes 0, 1 and 2 from the corner sums ``s<ijk>``."""
    d2 = (wa0 * (wb0 * (s001 - s000) + wb1 * (s011 - s010))
          + wa1 * (wb0 * (s101 - s100) + wb1 * (s111 - s110)))
    d1 = (wa0 * (wc0 * (s010 - s000) + wc1 * (s011 - s001))
          + wa1 * (wc0 * (s110 - s100) + wc1 * (s111 - s101)))
    d0 = (wb0 * (wc0 * (s100 - s000) + wc1 * (s101 - s001))
          + wb1 * (wc0 * (s110 - s010) + wc1 * (s111 - s011)))
    return d0, d1, d2


# --- kernels --------------------------------------------------------------------------------

@triton.jit(do_not_specialize=_SIZE_ARGS)
def _sample_forward_kernel(
    out_ptr, img_ptr, src_ptr,
    C, S0, S1, S2, O0, O1, O2,
    NDIM: tl.constexpr, SOURCE: tl.constexpr, MODE: tl.constexpr, PADDING: tl.constexpr,
    ALIGN: tl.constexpr, CDT: tl.constexpr, BLOCK: tl.constexpr, IMG_BATCHED: tl.constexpr,
):
    b, offs, lane, n_out, n_in, p0, p1, p2, g0, g1, g2, m0, m1, m2, x, y, z = _padded_point(
        src_ptr, 1.0, S0, S1, S2, O0, O1, O2, NDIM, SOURCE, PADDING, ALIGN, CDT, BLOCK)

    out_dtype = out_ptr.dtype.element_ty
    img_b = img_ptr + b * IMG_BATCHED * C * n_in  # IMG_BATCHED 0: one image for every item
    out_b = out_ptr + b * C * n_out + offs
    if MODE == 1:  # nearest
        off, valid = _nearest_offset(p0, p1, p2, S0, S1, S2, lane, NDIM)
        for c in range(C):
            val = tl.load(img_b + c * n_in + off, mask=valid, other=0.0)
            tl.store(out_b + c * n_out, val.to(out_dtype), mask=lane)
    elif NDIM == 2:
        o00, o01, o10, o11, q00, q01, q10, q11, wa0, wa1, wc0, wc1 = _bilinear_corners(p0, p1, S0, S1, lane)
        w00 = wc0 * wa0
        w01 = wc1 * wa0
        w10 = wc0 * wa1
        w11 = wc1 * wa1
        for c in range(C):
            base = img_b + c * n_in
            acc = tl.load(base + o00, mask=q00, other=0.0).to(CDT) * w00
            acc += tl.load(base + o01, mask=q01, other=0.0).to(CDT) * w01
            acc += tl.load(base + o10, mask=q10, other=0.0).to(CDT) * w10
            acc += tl.load(base + o11, mask=q11, other=0.0).to(CDT) * w11
            tl.store(out_b + c * n_out, acc.to(out_dtype), mask=lane)
    else:
        (r00, r01, r10, r11, c0, c1, q000, q001, q010, q011, q100, q101, q110, q111,
         wa0, wa1, wb0, wb1, wc0, wc1) = _trilinear_corners(p0, p1, p2, S0, S1, S2, lane)
        for c in range(C):
            base = img_b + c * n_in
            acc = tl.load(base + r00 + c0, mask=q000, other=0.0).to(CDT) * (wc0 * wb0 * wa0)
            acc += tl.load(base + r00 + c1, mask=q001, other=0.0).to(CDT) * (wc1 * wb0 * wa0)
            acc += tl.load(base + r01 + c0, mask=q010, other=0.0).to(CDT) * (wc0 * wb1 * wa0)
            acc += tl.load(base + r01 + c1, mask=q011, other=0.0).to(CDT) * (wc1 * wb1 * wa0)
            acc += tl.load(base + r10 + c0, mask=q100, other=0.0).to(CDT) * (wc0 * wb0 * wa1)
            acc += tl.load(base + r10 + c1, mask=q101, other=0.0).to(CDT) * (wc1 * wb0 * wa1)
            acc += tl.load(base + r11 + c0, mask=q110, other=0.0).to(CDT) * (wc0 * wb1 * wa1)
            acc += tl.load(base + r11 + c1, mask=q111, other=0.0).to(CDT) * (wc1 * wb1 * wa1)
            tl.store(out_b + c * n_out, acc.to(out_dtype), mask=lane)


@triton.jit
def _put(ptr, value, DET: tl.constexpr):
    """Add a program's partial sum to a ``theta`` gradient entry: atomically, or (``DET``)
    stored into the program's own slot of a partials buffer that torch sums afterwards."""
    if DET:
        tl.store(ptr, value)
    else:
        tl.atomic_add(ptr, value)


@triton.jit
def _emit_point_grad(gsrc_ptr, b, offs, lane, gp0, gp1, gp2, x, y, z, O0, O1, O2,
                     NDIM: tl.constexpr, SOURCE: tl.constexpr, DET: tl.constexpr):
    """Chain d(loss)/d(sample point, per source value) to the grid, the DDF or theta."""
    n_out = O0 * O1 * O2
    if SOURCE == 0:  # grid (B, *out, NDIM): component NDIM - 1 - a belongs to array axis a
        gptr = gsrc_ptr + b * n_out * NDIM + offs * NDIM
        dtype = gsrc_ptr.dtype.element_ty
        if NDIM == 3:
            tl.store(gptr, gp2.to(dtype), mask=lane)
            tl.store(gptr + 1, gp1.to(dtype), mask=lane)
            tl.store(gptr + 2, gp0.to(dtype), mask=lane)
        else:
            tl.store(gptr, gp1.to(dtype), mask=lane)
            tl.store(gptr + 1, gp0.to(dtype), mask=lane)
    elif SOURCE == 1:  # ddf (B, NDIM, *spatial)
        dptr = gsrc_ptr + b * n_out * NDIM + offs
        dtype = gsrc_ptr.dtype.element_ty
        tl.store(dptr, gp0.to(dtype), mask=lane)
        tl.store(dptr + n_out, gp1.to(dtype), mask=lane)
        if NDIM == 3:
            tl.store(dptr + 2 * n_out, gp2.to(dtype), mask=lane)
    else:  # theta (B, NDIM, NDIM + 1): grad[r, c] = sum_voxels d/d(grid_r) * base_c
        if DET:  # partials (B, programs, NDIM * (NDIM + 1))
            tptr = gsrc_ptr + (b * tl.num_programs(0) + tl.program_id(0)) * (NDIM * (NDIM + 1))
        else:
            tptr = gsrc_ptr + b * (NDIM * (NDIM + 1))
        if NDIM == 3:
            gx = tl.where(lane, gp2, 0.0)
            gy = tl.where(lane, gp1, 0.0)
            gz = tl.where(lane, gp0, 0.0)
            _put(tptr + 0, tl.sum(gx * x, axis=0), DET)
            _put(tptr + 1, tl.sum(gx * y, axis=0), DET)
            _put(tptr + 2, tl.sum(gx * z, axis=0), DET)
            _put(tptr + 3, tl.sum(gx, axis=0), DET)
            _put(tptr + 4, tl.sum(gy * x, axis=0), DET)
            _put(tptr + 5, tl.sum(gy * y, axis=0), DET)
            _put(tptr + 6, tl.sum(gy * z, axis=0), DET)
            _put(tptr + 7, tl.sum(gy, axis=0), DET)
            _put(tptr + 8, tl.sum(gz * x, axis=0), DET)
            _put(tptr + 9, tl.sum(gz * y, axis=0), DET)
            _put(tptr + 10, tl.sum(gz * z, axis=0), DET)
            _put(tptr + 11, tl.sum(gz, axis=0), DET)
        else:
            gx = tl.where(lane, gp1, 0.0)
            gy = tl.where(lane, gp0, 0.0)
            _put(tptr + 0, tl.sum(gx * x, axis=0), DET)
            _put(tptr + 1, tl.sum(gx * y, axis=0), DET)
            _put(tptr + 2, tl.sum(gx, axis=0), DET)
            _put(tptr + 3, tl.sum(gy * x, axis=0), DET)
            _put(tptr + 4, tl.sum(gy * y, axis=0), DET)
            _put(tptr + 5, tl.sum(gy, axis=0), DET)


@triton.jit(do_not_specialize=_SIZE_ARGS)
def _sample_backward_kernel(
    gout_ptr, img_ptr, src_ptr, gimg_ptr, gsrc_ptr,
    C, S0, S1, S2, O0, O1, O2,
    NDIM: tl.constexpr, SOURCE: tl.constexpr, MODE: tl.constexpr, PADDING: tl.constexpr,
    ALIGN: tl.constexpr, CDT: tl.constexpr, NEED_IMAGE: tl.constexpr, NEED_SOURCE: tl.constexpr,
    DET: tl.constexpr, BLOCK: tl.constexpr, IMG_BATCHED: tl.constexpr,
):
    b, offs, lane, n_out, n_in, p0, p1, p2, g0, g1, g2, m0, m1, m2, x, y, z = _padded_point(
        src_ptr, 1.0, S0, S1, S2, O0, O1, O2, NDIM, SOURCE, PADDING, ALIGN, CDT, BLOCK)

    img_b = img_ptr + b * IMG_BATCHED * C * n_in  # IMG_BATCHED 0: every item adds into one gradient
    gimg_b = gimg_ptr + b * IMG_BATCHED * C * n_in
    gout_b = gout_ptr + b * C * n_out + offs
    if MODE == 1:  # nearest: the sample point has zero gradient; only the image gets one
        if NEED_IMAGE:
            off, valid = _nearest_offset(p0, p1, p2, S0, S1, S2, lane, NDIM)
            for c in range(C):
                go = tl.load(gout_b + c * n_out, mask=lane, other=0.0).to(CDT)
                tl.atomic_add(gimg_b + c * n_in + off, go, mask=valid)
    elif NDIM == 2:
        o00, o01, o10, o11, q00, q01, q10, q11, wa0, wa1, wc0, wc1 = _bilinear_corners(p0, p1, S0, S1, lane)
        # s_corner = sum over channels of grad_out * image value at the corner
        s00 = tl.zeros([BLOCK], CDT)
        s01 = tl.zeros([BLOCK], CDT)
        s10 = tl.zeros([BLOCK], CDT)
        s11 = tl.zeros([BLOCK], CDT)
        for c in range(C):
            go = tl.load(gout_b + c * n_out, mask=lane, other=0.0).to(CDT)
            if NEED_IMAGE:
                gbase = gimg_b + c * n_in
                tl.atomic_add(gbase + o00, go * (wc0 * wa0), mask=q00)
                tl.atomic_add(gbase + o01, go * (wc1 * wa0), mask=q01)
                tl.atomic_add(gbase + o10, go * (wc0 * wa1), mask=q10)
                tl.atomic_add(gbase + o11, go * (wc1 * wa1), mask=q11)
            if NEED_SOURCE:
                base = img_b + c * n_in
                s00 += go * tl.load(base + o00, mask=q00, other=0.0).to(CDT)
                s01 += go * tl.load(base + o01, mask=q01, other=0.0).to(CDT)
                s10 += go * tl.load(base + o10, mask=q10, other=0.0).to(CDT)
                s11 += go * tl.load(base + o11, mask=q11, other=0.0).to(CDT)
        if NEED_SOURCE:
            d0, d1 = _bilinear_point_grad(s00, s01, s10, s11, wa0, wa1, wc0, wc1)
            gp1 = d1 * (m1 * g1)
            gp0 = d0 * (m0 * g0)
            _emit_point_grad(gsrc_ptr, b, offs, lane, gp0, gp1, gp1, x, y, z, O0, O1, O2, NDIM, SOURCE, DET)
    else:
        (r00, r01, r10, r11, c0, c1, q000, q001, q010, q011, q100, q101, q110, q111,
         wa0, wa1, wb0, wb1, wc0, wc1) = _trilinear_corners(p0, p1, p2, S0, S1, S2, lane)
        s000 = tl.zeros([BLOCK], CDT)
        s001 = tl.zeros([BLOCK], CDT)
        s010 = tl.zeros([BLOCK], CDT)
        s011 = tl.zeros([BLOCK], CDT)
        s100 = tl.zeros([BLOCK], CDT)
        s101 = tl.zeros([BLOCK], CDT)
        s110 = tl.zeros([BLOCK], CDT)
        s111 = tl.zeros([BLOCK], CDT)
        for c in range(C):
            go = tl.load(gout_b + c * n_out, mask=lane, other=0.0).to(CDT)
            if NEED_IMAGE:
                gbase = gimg_b + c * n_in
                tl.atomic_add(gbase + r00 + c0, go * (wc0 * wb0 * wa0), mask=q000)
                tl.atomic_add(gbase + r00 + c1, go * (wc1 * wb0 * wa0), mask=q001)
                tl.atomic_add(gbase + r01 + c0, go * (wc0 * wb1 * wa0), mask=q010)
                tl.atomic_add(gbase + r01 + c1, go * (wc1 * wb1 * wa0), mask=q011)
                tl.atomic_add(gbase + r10 + c0, go * (wc0 * wb0 * wa1), mask=q100)
                tl.atomic_add(gbase + r10 + c1, go * (wc1 * wb0 * wa1), mask=q101)
                tl.atomic_add(gbase + r11 + c0, go * (wc0 * wb1 * wa1), mask=q110)
                tl.atomic_add(gbase + r11 + c1, go * (wc1 * wb1 * wa1), mask=q111)
            if NEED_SOURCE:
                base = img_b + c * n_in
                s000 += go * tl.load(base + r00 + c0, mask=q000, other=0.0).to(CDT)
                s001 += go * tl.load(base + r00 + c1, mask=q001, other=0.0).to(CDT)
                s010 += go * tl.load(base + r01 + c0, mask=q010, other=0.0).to(CDT)
                s011 += go * tl.load(base + r01 + c1, mask=q011, other=0.0).to(CDT)
                s100 += go * tl.load(base + r10 + c0, mask=q100, other=0.0).to(CDT)
                s101 += go * tl.load(base + r10 + c1, mask=q101, other=0.0).to(CDT)
                s110 += go * tl.load(base + r11 + c0, mask=q110, other=0.0).to(CDT)
                s111 += go * tl.load(base + r11 + c1, mask=q111, other=0.0).to(CDT)
        if NEED_SOURCE:
            d0, d1, d2 = _trilinear_point_grad(s000, s001, s010, s011, s100, s101, s110, s111,
                                               wa0, wa1, wb0, wb1, wc0, wc1)
            gp2 = d2 * (m2 * g2)
            gp1 = d1 * (m1 * g1)
            gp0 = d0 * (m0 * g0)
            _emit_point_grad(gsrc_ptr, b, offs, lane, gp0, gp1, gp2, x, y, z, O0, O1, O2, NDIM, SOURCE, DET)


# --- launchers ------------------------------------------------------------------------------

def _compute_dtype(dtype: torch.dtype):
    """(triton, torch) dtype of the arithmetic and of the accumulation buffers."""
    if dtype == torch.float64:
        return tl.float64, torch.float64
    return tl.float32, torch.float32


def _empty(shape, dtype, device) -> torch.Tensor:
    """A buffer the kernel writes completely (tests replace this with a NaN-filled one)."""
    return torch.empty(shape, dtype=dtype, device=device)


def _sizes(spatial) -> list[int]:
    sizes = [int(s) for s in spatial]
    return sizes + [1] * (3 - len(sizes))


def _check_int32(*tensors) -> None:
    # Offsets inside one (batch, channel) slice are int32; batch/channel bases are int64.
    for t in tensors:
        if t is not None and t.dim() > 2 and math.prod(t.shape[2:]) > _INT_LIMIT:
            raise ValueError(f"sampling kernels: a spatial size of {tuple(t.shape[2:])} exceeds 2**31 - 1 voxels")


def _forward(image, src, out_spatial, source, mode, padding_mode, align_corners):
    image = image.contiguous()
    src = src.contiguous()
    batch, channels = src.shape[0], image.shape[1]  # image batch: the source's or 1 (broadcast)
    ndim = image.dim() - 2
    out = _empty((batch, channels, *out_spatial), image.dtype, image.device)
    if out.numel() == 0:
        return out
    _check_int32(image, out)
    cdt, _ = _compute_dtype(image.dtype)
    n_out = math.prod(out_spatial)
    launch = (triton.cdiv(n_out, BLOCK), batch)
    _sample_forward_kernel[launch](
        out, image, src, channels, *_sizes(image.shape[2:]), *_sizes(out_spatial),
        NDIM=ndim, SOURCE=source, MODE=MODE_CODE[mode], PADDING=PADDING_CODE[padding_mode],
        ALIGN=bool(align_corners), CDT=cdt, BLOCK=BLOCK, IMG_BATCHED=int(image.shape[0] == batch),
        num_warps=NUM_WARPS,
    )
    return out


def _backward(grad, image, src, out_spatial, source, mode, padding_mode, align_corners,
              needs_image, needs_source, source_grad_shape, source_grad_dtype):
    """Return ``(grad_image, grad_source)``, ``None`` where not needed.

    In deterministic mode (:func:`regnet.ops._backend.is_deterministic`) no float atomics
    are used: the image gradient is gathered (:mod:`regnet.ops._triton.scatter`) and the
    ``theta`` gradient is summed by torch from per-program partial sums."""
    need_source = needs_source and mode == "bilinear"  # nearest: zero gradient, no kernel work
    grad_source = None
    if needs_source and not need_source:
        grad_source = torch.zeros(source_grad_shape, dtype=source_grad_dtype, device=image.device)
    if not (needs_image or need_source):
        return None, grad_source
    det = is_deterministic()
    grad = grad.contiguous()
    image = image.contiguous()
    src = src.contiguous()
    batch, channels = src.shape[0], image.shape[1]
    batched = image.shape[0] == batch  # else one image sampled by every item: gradients summed
    ndim = image.dim() - 2
    cdt, acc = _compute_dtype(image.dtype)
    _check_int32(image, grad)
    n_out = math.prod(out_spatial)
    programs = triton.cdiv(n_out, BLOCK)
    grad_image = None
    if needs_image and not det:
        grad_image = torch.zeros(image.shape, dtype=acc, device=image.device)
    if need_source:
        if source == SOURCE_AFFINE and det:  # per-program partial sums, summed below
            grad_source = _empty((batch, programs, source_grad_shape[1] * source_grad_shape[2]), acc, image.device)
        elif source == SOURCE_AFFINE:  # per-program partial sums are added atomically
            grad_source = torch.zeros(source_grad_shape, dtype=acc, device=image.device)
        else:  # every element written exactly once
            grad_source = _empty(source_grad_shape, source_grad_dtype, image.device)
    kernel_image = needs_image and not det
    if n_out > 0 and batch > 0 and (kernel_image or need_source):
        _sample_backward_kernel[(programs, batch)](
            grad, image, src,
            grad_image if grad_image is not None else image,
            grad_source if need_source else image,
            channels, *_sizes(image.shape[2:]), *_sizes(out_spatial),
            NDIM=ndim, SOURCE=source, MODE=MODE_CODE[mode], PADDING=PADDING_CODE[padding_mode],
            ALIGN=bool(align_corners), CDT=cdt, NEED_IMAGE=kernel_image, NEED_SOURCE=need_source,
            DET=det, BLOCK=BLOCK, IMG_BATCHED=int(batched), num_warps=NUM_WARPS,
        )
    if needs_image and det:
        from regnet.ops._triton import scatter

        shape = image.shape if batched else (batch, *image.shape[1:])
        grad_image = scatter.image_grad(grad, src, shape, source, mode, padding_mode, align_corners,
                                        acc_dtype=acc)
        if not batched:  # per-item gradients, summed in a fixed order
            grad_image = grad_image.sum(0, keepdim=True)
    if need_source and source == SOURCE_AFFINE and det:
        grad_source = grad_source.sum(dim=1).view(source_grad_shape)
    if grad_image is not None:
        grad_image = grad_image.to(image.dtype)
    if grad_source is not None:
        grad_source = grad_source.to(source_grad_dtype)
    return grad_image, grad_source


# --- backend namespace (same names and signatures as regnet.ops._torch) ----------------------

def grid_sample_forward(input, grid, mode, padding_mode, align_corners):
    return _forward(input, grid, tuple(grid.shape[1:-1]), SOURCE_GRID, mode, padding_mode, align_corners)


def grid_sample_backward(grad, input, grid, mode, padding_mode, align_corners, needs_input, needs_grid):
    """Return ``(grad_input, grad_grid)``; an entry is ``None`` when not needed."""
    return _backward(grad, input, grid, tuple(grid.shape[1:-1]), SOURCE_GRID, mode, padding_mode,
                     align_corners, needs_input, needs_grid, grid.shape, grid.dtype)


def warp_forward(image, ddf, mode, padding_mode):
    return _forward(image, ddf, tuple(ddf.shape[2:]), SOURCE_DDF, mode, padding_mode, True)


def warp_backward(grad, image, ddf, mode, padding_mode, needs_image, needs_ddf):
    return _backward(grad, image, ddf, tuple(ddf.shape[2:]), SOURCE_DDF, mode, padding_mode,
                     True, needs_image, needs_ddf, ddf.shape, ddf.dtype)


def _theta(theta, image):
    _, acc = _compute_dtype(image.dtype)
    return theta.to(acc).contiguous()


def affine_transform_forward(image, theta, shape, mode, padding_mode, align_corners):
    return _forward(image, _theta(theta, image), tuple(shape), SOURCE_AFFINE, mode, padding_mode, align_corners)


def affine_transform_backward(grad, image, theta, shape, mode, padding_mode, align_corners, needs_image,
                              needs_theta):
    return _backward(grad, image, _theta(theta, image), tuple(shape), SOURCE_AFFINE, mode, padding_mode,
                     align_corners, needs_image, needs_theta, theta.shape, theta.dtype)


NAME = "triton"
