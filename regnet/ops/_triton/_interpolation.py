"""Triton helpers of the sampling family (``sampling.py``, ``fields.py``, ``scatter.py``):
sample points, padding, interpolation corners, and the corner gather / scatter blocks.

Semantics are those of ATen's grid sampler (the CUDA/scalar code path): unnormalisation,
``border`` clipping and ``reflection`` (``fmod``-based, exact for points far outside) with
their gradient factors, ``nearest`` rounding half to even (``nearbyint``), bilinear and
trilinear weights, coordinates outside the int range or non-finite sent to -100 (zero).

Coordinates: array axes ``0, 1[, 2]`` of an input of spatial size ``(S0, S1[, S2])``, sampled
at the output voxels of ``(O0, O1[, O2])``; in 2D the third size is 1 and the third entries
of every tuple are placeholders. A sample point comes from its *source* (``SOURCE``):

- ``SOURCE_GRID``: read from a sampling grid ``(B, *out_spatial, ndim)`` (``grid_sample``);
- ``SOURCE_DDF``: voxel index + displacement, read from a field ``(B, ndim, *spatial)``
  (``warp``, ``compose``, ``exp``; MONAI's ``Warp`` convention, ``align_corners=True``);
- ``SOURCE_AFFINE``: ``theta`` applied to the voxel's normalised coordinates
  (``affine_transform``; ``affine_grid``'s base grid, ``torch.linspace``'s arithmetic).

Corners: the bilinear corner ``(i, j)`` of a 2D point is at flat offset ``o<ij>`` (mask
``q<ij>``) with weight ``wc_j * wa_i``; the trilinear corner ``(i, j, k)`` is at
``r<ij> + c<k>`` (mask ``q<ijk>``) with weight ``wc_k * wb_j * wa_i``. The value and backward
helpers take these as returned by :func:`bilinear_corners` / :func:`trilinear_corners`, so
that a kernel computes them once per voxel and loops over its channels.

The host-side helpers at the end (sizes, int32 offsets) serve the same launchers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import triton
import triton.language as tl

SOURCE_GRID, SOURCE_DDF, SOURCE_AFFINE = 0, 1, 2
#: Size arguments of the sampling-family kernels, never specialised (a size of 1 would
#: otherwise become a compile-time constant and multiply the compiled variants).
SIZE_ARGS = ["C", "S0", "S1", "S2", "O0", "O1", "O2"]
_INT_LIMIT = 2**31 - 1
#: Warps of the sampling and compose / exp kernels (not of ``scatter.py``'s): one voxel per
#: thread at their ``BLOCK`` of 256. Chosen from ptxas's register counts (sm_90a, Triton 3.9;
#: see docs/triton.md), not yet from GPU timings: at 4 warps (two voxels per thread) the
#: float32 backward kernels need 112-174 registers (2-4 blocks, 8-16 warps per SM); at 8 warps
#: 64 (4 blocks, 32 warps), and the forward kernels 40-48 instead of 72-80.
NUM_WARPS = 8


# --- coordinate helpers ---------------------------------------------------------------------

@triton.jit
def unnormalize(g, size, ALIGN: tl.constexpr):
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
def clip(p, size):
    """ATen's clip_coordinates(_set_grad): clamp to [0, size - 1]; gradient 0 at and beyond."""
    hi = tl.cast(size, p.dtype) - 1
    grad = tl.where((p <= 0) | (p >= hi), 0.0, 1.0)
    p = tl.minimum(tl.maximum(p, 0.0), hi)
    return p, grad


@triton.jit
def reflect(p, twice_low, twice_high):
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
def pad(p, size, PADDING: tl.constexpr, ALIGN: tl.constexpr):
    """Padding transform of a voxel coordinate; returns (coordinate, gradient factor)."""
    if PADDING == 1:  # border
        p, grad = clip(p, size)
    elif PADDING == 2:  # reflection
        s = tl.cast(size, p.dtype)
        if ALIGN:
            p, grad = reflect(p, s * 0, 2 * (s - 1))
        else:
            p, grad = reflect(p, s * 0 - 1, 2 * s - 1)
        p, clip_grad = clip(p, size)
        grad = grad * clip_grad
    else:  # zeros
        grad = tl.zeros_like(p) + 1
    # ATen's safe_downgrade_to_int_range: out of int range or non-finite -> -100 (outside).
    p = tl.where((p < 2147483646.0) & (p > -2147483648.0), p, -100.0)
    return p, grad


@triton.jit
def linspace(k, n, ALIGN: tl.constexpr, CDT: tl.constexpr):
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
def sample_point(src_ptr, scale, b, offs, lane, k0, k1, k2, S0, S1, S2, O0, O1, O2,
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
            p0, m0 = unnormalize(gz, S0, ALIGN)
            p1, m1 = unnormalize(gy, S1, ALIGN)
            p2, m2 = unnormalize(gx, S2, ALIGN)
        else:
            p0, m0 = unnormalize(gy, S0, ALIGN)
            p1, m1 = unnormalize(gx, S1, ALIGN)
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
            x = linspace(k2, O2, ALIGN, CDT)
            y = linspace(k1, O1, ALIGN, CDT)
            z = linspace(k0, O0, ALIGN, CDT)
            gx = x * tl.load(tptr + 0) + y * tl.load(tptr + 1) + z * tl.load(tptr + 2) + tl.load(tptr + 3)
            gy = x * tl.load(tptr + 4) + y * tl.load(tptr + 5) + z * tl.load(tptr + 6) + tl.load(tptr + 7)
            gz = x * tl.load(tptr + 8) + y * tl.load(tptr + 9) + z * tl.load(tptr + 10) + tl.load(tptr + 11)
            p0, m0 = unnormalize(gz, S0, ALIGN)
            p1, m1 = unnormalize(gy, S1, ALIGN)
            p2, m2 = unnormalize(gx, S2, ALIGN)
        else:
            x = linspace(k1, O1, ALIGN, CDT)
            y = linspace(k0, O0, ALIGN, CDT)
            z = x
            gx = x * tl.load(tptr + 0) + y * tl.load(tptr + 1) + tl.load(tptr + 2)
            gy = x * tl.load(tptr + 3) + y * tl.load(tptr + 4) + tl.load(tptr + 5)
            p0, m0 = unnormalize(gy, S0, ALIGN)
            p1, m1 = unnormalize(gx, S1, ALIGN)
            p2, m2 = p0, m0
    return p0, p1, p2, m0, m1, m2, x, y, z


@triton.jit
def padded_point(src_ptr, scale, S0, S1, S2, O0, O1, O2, NDIM: tl.constexpr, SOURCE: tl.constexpr,
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

    p0, p1, p2, m0, m1, m2, x, y, z = sample_point(
        src_ptr, scale, b, offs, lane, k0, k1, k2, S0, S1, S2, O0, O1, O2, NDIM, SOURCE, ALIGN, CDT)
    p0, g0 = pad(p0, S0, PADDING, ALIGN)
    p1, g1 = pad(p1, S1, PADDING, ALIGN)
    if NDIM == 3:
        p2, g2 = pad(p2, S2, PADDING, ALIGN)
    else:
        g2 = tl.zeros_like(p0) + 1
    return b, offs, lane, n_out, n_in, p0, p1, p2, g0, g1, g2, m0, m1, m2, x, y, z


@triton.jit
def linear_axis(p, size):
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
def nearest_axis(p, size):
    """Index rounded half to even (``nearbyint``), clamped in range, and its in-bounds mask."""
    f = tl.floor(p)
    d = p - f
    r = tl.where(d > 0.5, f + 1, f)
    r = tl.where((d == 0.5) & ((f % 2) != 0), f + 1, r)
    hi = tl.cast(size, p.dtype) - 1
    valid = (r >= 0) & (r <= hi)
    return tl.minimum(tl.maximum(r, 0.0), hi).to(tl.int32), valid


@triton.jit
def nearest_offset(p0, p1, p2, S0, S1, S2, lane, NDIM: tl.constexpr):
    """Flat offset of the nearest input voxel and its mask (``lane`` and in bounds)."""
    i0, v0 = nearest_axis(p0, S0)
    i1, v1 = nearest_axis(p1, S1)
    off = i0 * S1 + i1
    valid = lane & v0 & v1
    if NDIM == 3:
        i2, v2 = nearest_axis(p2, S2)
        off = off * S2 + i2
        valid = valid & v2
    return off, valid


@triton.jit
def bilinear_corners(p0, p1, S0, S1, lane):
    """The four corners of a 2D sample point: flat offsets ``o<ij>`` and masks ``q<ij>``
    (``lane`` and in bounds) of corner ``(a_i, c_j)``, and the weights ``wa`` along axis 0
    and ``wc`` along axis 1 (corner ``(i, j)`` weighs ``wc_j * wa_i``)."""
    a0, a1, wa0, wa1, va0, va1 = linear_axis(p0, S0)
    c0, c1, wc0, wc1, vc0, vc1 = linear_axis(p1, S1)
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
def trilinear_corners(p0, p1, p2, S0, S1, S2, lane):
    """The eight corners of a 3D sample point: row offsets ``r<ij>`` of ``(a_i, b_j)`` (corner
    ``(a_i, b_j, c_k)`` is at ``r<ij> + c<k>``), masks ``q<ijk>`` (``lane`` and in bounds), and
    the weights ``wa``, ``wb``, ``wc`` along axes 0, 1, 2 (corner weight ``wc_k * wb_j * wa_i``)."""
    a0, a1, wa0, wa1, va0, va1 = linear_axis(p0, S0)
    b0, b1, wb0, wb1, vb0, vb1 = linear_axis(p1, S1)
    c0, c1, wc0, wc1, vc0, vc1 = linear_axis(p2, S2)
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
def bilinear_point_grad(s00, s01, s10, s11, wa0, wa1, wc0, wc1):
    """d(sample)/d(point) along axes 0 and 1 from the corner sums ``s<ij>`` (the values at the
    corners, or their sums weighted by the output gradient over channels)."""
    d1 = wa0 * (s01 - s00) + wa1 * (s11 - s10)
    d0 = wc0 * (s10 - s00) + wc1 * (s11 - s01)
    return d0, d1


@triton.jit
def trilinear_point_grad(s000, s001, s010, s011, s100, s101, s110, s111, wa0, wa1, wb0, wb1, wc0, wc1):
    """d(sample)/d(point) along axes 0, 1 and 2 from the corner sums ``s<ijk>``."""
    d2 = (wa0 * (wb0 * (s001 - s000) + wb1 * (s011 - s010))
          + wa1 * (wb0 * (s101 - s100) + wb1 * (s111 - s110)))
    d1 = (wa0 * (wc0 * (s010 - s000) + wc1 * (s011 - s001))
          + wa1 * (wc0 * (s110 - s100) + wc1 * (s111 - s101)))
    d0 = (wb0 * (wc0 * (s100 - s000) + wc1 * (s101 - s001))
          + wb1 * (wc0 * (s110 - s010) + wc1 * (s111 - s011)))
    return d0, d1, d2


# --- interpolation over the channels: corner gather (forward), scatter and gather (backward) --

@triton.jit
def interpolate_forward(out_b, img_b, own_b, C, n_out, n_in, p0, p1, p2, S0, S1, S2, lane, scale,
                        NDIM: tl.constexpr, MODE: tl.constexpr, ADD_OWN: tl.constexpr, CDT: tl.constexpr):
    """For each channel ``c < C``: ``out[c] = sample(scale * img[c], point)`` (``+ scale *
    own[c]`` with ``ADD_OWN``: the displacement term of a composition step). Channel ``c`` of
    the image is at ``img_b + c * n_in``, of ``out`` / ``own`` at ``<ptr>_b + c * n_out`` (one
    pointer per lane). Pass ``scale=1.0`` for plain sampling (an exact factor)."""
    out_dtype = out_b.dtype.element_ty
    if MODE == 1:  # nearest: a copy of the input value (no arithmetic without ADD_OWN)
        off, valid = nearest_offset(p0, p1, p2, S0, S1, S2, lane, NDIM)
        for c in range(C):
            val = tl.load(img_b + c * n_in + off, mask=valid, other=0.0)
            if ADD_OWN:
                own = tl.load(own_b + c * n_out, mask=lane, other=0.0).to(CDT) * scale
                val = own + val.to(CDT) * scale
            tl.store(out_b + c * n_out, val.to(out_dtype), mask=lane)
    elif NDIM == 2:
        o00, o01, o10, o11, q00, q01, q10, q11, wa0, wa1, wc0, wc1 = bilinear_corners(p0, p1, S0, S1, lane)
        w00 = wc0 * wa0
        w01 = wc1 * wa0
        w10 = wc0 * wa1
        w11 = wc1 * wa1
        for c in range(C):
            base = img_b + c * n_in
            acc = tl.load(base + o00, mask=q00, other=0.0).to(CDT) * scale * w00
            acc += tl.load(base + o01, mask=q01, other=0.0).to(CDT) * scale * w01
            acc += tl.load(base + o10, mask=q10, other=0.0).to(CDT) * scale * w10
            acc += tl.load(base + o11, mask=q11, other=0.0).to(CDT) * scale * w11
            if ADD_OWN:
                acc = tl.load(own_b + c * n_out, mask=lane, other=0.0).to(CDT) * scale + acc
            tl.store(out_b + c * n_out, acc.to(out_dtype), mask=lane)
    else:
        (r00, r01, r10, r11, c0, c1, q000, q001, q010, q011, q100, q101, q110, q111,
         wa0, wa1, wb0, wb1, wc0, wc1) = trilinear_corners(p0, p1, p2, S0, S1, S2, lane)
        for c in range(C):
            base = img_b + c * n_in
            acc = tl.load(base + r00 + c0, mask=q000, other=0.0).to(CDT) * scale * (wc0 * wb0 * wa0)
            acc += tl.load(base + r00 + c1, mask=q001, other=0.0).to(CDT) * scale * (wc1 * wb0 * wa0)
            acc += tl.load(base + r01 + c0, mask=q010, other=0.0).to(CDT) * scale * (wc0 * wb1 * wa0)
            acc += tl.load(base + r01 + c1, mask=q011, other=0.0).to(CDT) * scale * (wc1 * wb1 * wa0)
            acc += tl.load(base + r10 + c0, mask=q100, other=0.0).to(CDT) * scale * (wc0 * wb0 * wa1)
            acc += tl.load(base + r10 + c1, mask=q101, other=0.0).to(CDT) * scale * (wc1 * wb0 * wa1)
            acc += tl.load(base + r11 + c0, mask=q110, other=0.0).to(CDT) * scale * (wc0 * wb1 * wa1)
            acc += tl.load(base + r11 + c1, mask=q111, other=0.0).to(CDT) * scale * (wc1 * wb1 * wa1)
            if ADD_OWN:
                acc = tl.load(own_b + c * n_out, mask=lane, other=0.0).to(CDT) * scale + acc
            tl.store(out_b + c * n_out, acc.to(out_dtype), mask=lane)


@triton.jit
def interpolate_backward(gout_b, img_b, gimg_b, C, n_out, n_in, p0, p1, p2, S0, S1, S2, lane,
                         NDIM: tl.constexpr, MODE: tl.constexpr, NEED_IMAGE: tl.constexpr, NEED_POINT: tl.constexpr,
                         CDT: tl.constexpr, BLOCK: tl.constexpr):
    """Backward of :func:`interpolate_forward` (without its scale) over ``C`` channels, for the
    output gradient ``G`` (channel ``c`` at ``gout_b + c * n_out``, one pointer per lane).

    ``NEED_IMAGE``: ``G * weight`` is added atomically onto each corner of the image
    gradient ``gimg_b`` (channel ``c`` at ``gimg_b + c * n_in``). Returns ``(d0, d1, d2)`` =
    ``sum_c G_c d sample(img_c) / d point`` along array axes 0, 1, 2 (``NEED_POINT``, linear
    modes; zeros otherwise, and ``d2`` a placeholder in 2D), before the padding's factors."""
    s000 = tl.zeros([BLOCK], CDT)
    s001 = tl.zeros([BLOCK], CDT)
    s010 = tl.zeros([BLOCK], CDT)
    s011 = tl.zeros([BLOCK], CDT)
    d0 = tl.zeros([BLOCK], CDT)
    d1 = tl.zeros([BLOCK], CDT)
    d2 = tl.zeros([BLOCK], CDT)
    if MODE == 1:  # nearest: the sample point has zero gradient; only the image gets one
        if NEED_IMAGE:
            off, valid = nearest_offset(p0, p1, p2, S0, S1, S2, lane, NDIM)
            for c in range(C):
                go = tl.load(gout_b + c * n_out, mask=lane, other=0.0).to(CDT)
                tl.atomic_add(gimg_b + c * n_in + off, go, mask=valid)
    elif NDIM == 2:
        o00, o01, o10, o11, q00, q01, q10, q11, wa0, wa1, wc0, wc1 = bilinear_corners(p0, p1, S0, S1, lane)
        # s<ij> = sum over channels of G * image value at corner (i, j)
        for c in range(C):
            go = tl.load(gout_b + c * n_out, mask=lane, other=0.0).to(CDT)
            if NEED_IMAGE:
                gbase = gimg_b + c * n_in
                tl.atomic_add(gbase + o00, go * (wc0 * wa0), mask=q00)
                tl.atomic_add(gbase + o01, go * (wc1 * wa0), mask=q01)
                tl.atomic_add(gbase + o10, go * (wc0 * wa1), mask=q10)
                tl.atomic_add(gbase + o11, go * (wc1 * wa1), mask=q11)
            if NEED_POINT:
                base = img_b + c * n_in
                s000 += go * tl.load(base + o00, mask=q00, other=0.0).to(CDT)
                s001 += go * tl.load(base + o01, mask=q01, other=0.0).to(CDT)
                s010 += go * tl.load(base + o10, mask=q10, other=0.0).to(CDT)
                s011 += go * tl.load(base + o11, mask=q11, other=0.0).to(CDT)
        if NEED_POINT:
            d0, d1 = bilinear_point_grad(s000, s001, s010, s011, wa0, wa1, wc0, wc1)
            d2 = d1
    else:
        (r00, r01, r10, r11, c0, c1, q000, q001, q010, q011, q100, q101, q110, q111,
         wa0, wa1, wb0, wb1, wc0, wc1) = trilinear_corners(p0, p1, p2, S0, S1, S2, lane)
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
            if NEED_POINT:
                base = img_b + c * n_in
                s000 += go * tl.load(base + r00 + c0, mask=q000, other=0.0).to(CDT)
                s001 += go * tl.load(base + r00 + c1, mask=q001, other=0.0).to(CDT)
                s010 += go * tl.load(base + r01 + c0, mask=q010, other=0.0).to(CDT)
                s011 += go * tl.load(base + r01 + c1, mask=q011, other=0.0).to(CDT)
                s100 += go * tl.load(base + r10 + c0, mask=q100, other=0.0).to(CDT)
                s101 += go * tl.load(base + r10 + c1, mask=q101, other=0.0).to(CDT)
                s110 += go * tl.load(base + r11 + c0, mask=q110, other=0.0).to(CDT)
                s111 += go * tl.load(base + r11 + c1, mask=q111, other=0.0).to(CDT)
        if NEED_POINT:
            d0, d1, d2 = trilinear_point_grad(s000, s001, s010, s011, s100, s101, s110, s111,
                                              wa0, wa1, wb0, wb1, wc0, wc1)
    return d0, d1, d2


# --- host side ------------------------------------------------------------------------------

def sizes(spatial: Sequence[int]) -> list[int]:
    """The spatial sizes as three ints (a trailing 1 in 2D): the kernels' ``S*`` / ``O*``."""
    out = [int(s) for s in spatial]
    return out + [1] * (3 - len(out))


def check_int32(*tensors: torch.Tensor | None) -> None:
    """Offsets inside one (batch, channel) slice are int32 (batch and channel bases int64):
    ``ValueError`` for a spatial size of 2**31 voxels or more."""
    for t in tensors:
        if t is not None and t.dim() > 2 and math.prod(t.shape[2:]) > _INT_LIMIT:
            raise ValueError(f"sampling kernels: a spatial size of {tuple(t.shape[2:])} exceeds 2**31 - 1 voxels")
