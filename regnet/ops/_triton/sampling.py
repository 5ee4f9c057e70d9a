"""Fused Triton kernels for the sampling family: ``grid_sample``, ``warp``, ``affine_transform``.

One forward and one backward kernel serve all three ops. Each program handles ``BLOCK``
output voxels of one batch item (``program_id(1)``) and computes each voxel's sample point
on the fly from its *source* (a grid, a DDF or ``theta``: see
:mod:`regnet.ops._triton._interpolation`, which holds the sample points, padding and
interpolation shared with ``fields.py`` and ``scatter.py``). No sampling grid is ever
materialised. The interpolation weights, corner offsets and masks are computed once per
voxel; the channels are a loop inside the kernel.

Semantics are those of ATen's grid sampler (the CUDA/scalar code path), see
:mod:`~regnet.ops._triton._interpolation`.

Backward: the image gradient is scattered with ``tl.atomic_add`` into a float32 (float64
for float64 inputs) buffer; the gradient of the sample point is gathered per voxel (one
accumulator per corner summed over channels) and chained to the grid, the DDF, or
``theta`` (reduced over the program's voxels, then one atomic add per entry per program).
Arithmetic is float32 for float16/bfloat16/float32 inputs and float64 for float64 inputs.

Deterministic mode (:func:`regnet.ops._state.is_deterministic`): no float atomics. The
image gradient comes from :func:`regnet.ops._triton.scatter.image_grad` (sort + gather), the
``theta`` gradient from per-program partial sums (``DET``) that torch adds up.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import triton
import triton.language as tl

from regnet.ops import _state
from regnet.ops._modes import MODE_CODE, PADDING_CODE
from regnet.ops._triton import _common, scatter
from regnet.ops._triton._interpolation import (
    NUM_WARPS,
    SIZE_ARGS,
    SOURCE_AFFINE,
    SOURCE_DDF,
    SOURCE_GRID,
    check_int32,
    interpolate_backward,
    interpolate_forward,
    padded_point,
    sizes,
)

BLOCK = 256

Grads2 = tuple[torch.Tensor | None, torch.Tensor | None]


# --- kernels --------------------------------------------------------------------------------

@triton.jit(do_not_specialize=SIZE_ARGS)
def _sample_forward_kernel(
    out_ptr, img_ptr, src_ptr,
    C, S0, S1, S2, O0, O1, O2,
    NDIM: tl.constexpr, SOURCE: tl.constexpr, MODE: tl.constexpr, PADDING: tl.constexpr,
    ALIGN: tl.constexpr, CDT: tl.constexpr, BLOCK: tl.constexpr, IMG_BATCHED: tl.constexpr,
):
    b, offs, lane, n_out, n_in, p0, p1, p2, g0, g1, g2, m0, m1, m2, x, y, z = padded_point(
        src_ptr, 1.0, S0, S1, S2, O0, O1, O2, NDIM, SOURCE, PADDING, ALIGN, CDT, BLOCK)
    img_b = img_ptr + b * IMG_BATCHED * C * n_in  # IMG_BATCHED 0: one image for every item
    out_b = out_ptr + b * C * n_out + offs
    interpolate_forward(out_b, img_b, out_b, C, n_out, n_in, p0, p1, p2, S0, S1, S2, lane, 1.0,
                        NDIM, MODE, False, CDT)


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


@triton.jit(do_not_specialize=SIZE_ARGS)
def _sample_backward_kernel(
    gout_ptr, img_ptr, src_ptr, gimg_ptr, gsrc_ptr,
    C, S0, S1, S2, O0, O1, O2,
    NDIM: tl.constexpr, SOURCE: tl.constexpr, MODE: tl.constexpr, PADDING: tl.constexpr,
    ALIGN: tl.constexpr, CDT: tl.constexpr, NEED_IMAGE: tl.constexpr, NEED_SOURCE: tl.constexpr,
    DET: tl.constexpr, BLOCK: tl.constexpr, IMG_BATCHED: tl.constexpr,
):
    """``NEED_SOURCE`` only for linear modes (the nearest sample point has zero gradient)."""
    b, offs, lane, n_out, n_in, p0, p1, p2, g0, g1, g2, m0, m1, m2, x, y, z = padded_point(
        src_ptr, 1.0, S0, S1, S2, O0, O1, O2, NDIM, SOURCE, PADDING, ALIGN, CDT, BLOCK)
    img_b = img_ptr + b * IMG_BATCHED * C * n_in  # IMG_BATCHED 0: every item adds into one gradient
    gimg_b = gimg_ptr + b * IMG_BATCHED * C * n_in
    gout_b = gout_ptr + b * C * n_out + offs
    d0, d1, d2 = interpolate_backward(gout_b, img_b, gimg_b, C, n_out, n_in, p0, p1, p2, S0, S1, S2, lane,
                                      NDIM, MODE, NEED_IMAGE, NEED_SOURCE, CDT, BLOCK)
    if NEED_SOURCE:
        _emit_point_grad(gsrc_ptr, b, offs, lane, d0 * (m0 * g0), d1 * (m1 * g1), d2 * (m2 * g2), x, y, z,
                         O0, O1, O2, NDIM, SOURCE, DET)


# --- launchers ------------------------------------------------------------------------------

def _forward(image: torch.Tensor, src: torch.Tensor, out_spatial: Sequence[int], source: int, mode: str,
             padding_mode: str, align_corners: bool) -> torch.Tensor:
    image = image.contiguous()
    src = src.contiguous()
    batch, channels = src.shape[0], image.shape[1]  # image batch: the source's or 1 (broadcast)
    ndim = image.dim() - 2
    out = _common.empty((batch, channels, *out_spatial), image.dtype, image.device)
    if out.numel() == 0:
        return out
    check_int32(image, out)
    cdt, _ = _common.compute_dtype(image.dtype)
    n_out = math.prod(out_spatial)
    launch = (triton.cdiv(n_out, BLOCK), batch)
    _sample_forward_kernel[launch](
        out, image, src, channels, *sizes(image.shape[2:]), *sizes(out_spatial),
        NDIM=ndim, SOURCE=source, MODE=MODE_CODE[mode], PADDING=PADDING_CODE[padding_mode],
        ALIGN=bool(align_corners), CDT=cdt, BLOCK=BLOCK, IMG_BATCHED=int(image.shape[0] == batch),
        num_warps=NUM_WARPS,
    )
    return out


def _backward(grad: torch.Tensor, image: torch.Tensor, src: torch.Tensor, out_spatial: Sequence[int], source: int,
              mode: str, padding_mode: str, align_corners: bool, needs_image: bool, needs_source: bool,
              source_grad_shape: Sequence[int], source_grad_dtype: torch.dtype) -> Grads2:
    """Return ``(grad_image, grad_source)``, ``None`` where not needed.

    In deterministic mode (:func:`regnet.ops._state.is_deterministic`) no float atomics
    are used: the image gradient is gathered (:mod:`regnet.ops._triton.scatter`) and the
    ``theta`` gradient is summed by torch from per-program partial sums."""
    need_source = needs_source and mode == "bilinear"  # nearest: zero gradient, no kernel work
    grad_source = None
    if needs_source and not need_source:
        grad_source = torch.zeros(source_grad_shape, dtype=source_grad_dtype, device=image.device)
    if not (needs_image or need_source):
        return None, grad_source
    det = _state.is_deterministic()
    grad = grad.contiguous()
    image = image.contiguous()
    src = src.contiguous()
    batch, channels = src.shape[0], image.shape[1]
    batched = image.shape[0] == batch  # else one image sampled by every item: gradients summed
    ndim = image.dim() - 2
    cdt, acc = _common.compute_dtype(image.dtype)
    check_int32(image, grad)
    n_out = math.prod(out_spatial)
    programs = triton.cdiv(n_out, BLOCK)
    grad_image = None
    if needs_image and not det:
        grad_image = torch.zeros(image.shape, dtype=acc, device=image.device)
    if need_source:
        if source == SOURCE_AFFINE and det:  # per-program partial sums, summed below
            grad_source = _common.empty((batch, programs, source_grad_shape[1] * source_grad_shape[2]), acc,
                                        image.device)
        elif source == SOURCE_AFFINE:  # per-program partial sums are added atomically
            grad_source = torch.zeros(source_grad_shape, dtype=acc, device=image.device)
        else:  # every element written exactly once
            grad_source = _common.empty(source_grad_shape, source_grad_dtype, image.device)
    kernel_image = needs_image and not det
    if n_out > 0 and batch > 0 and (kernel_image or need_source):
        _sample_backward_kernel[(programs, batch)](
            grad, image, src,
            grad_image if grad_image is not None else image,
            grad_source if need_source else image,
            channels, *sizes(image.shape[2:]), *sizes(out_spatial),
            NDIM=ndim, SOURCE=source, MODE=MODE_CODE[mode], PADDING=PADDING_CODE[padding_mode],
            ALIGN=bool(align_corners), CDT=cdt, NEED_IMAGE=kernel_image, NEED_SOURCE=need_source,
            DET=det, BLOCK=BLOCK, IMG_BATCHED=int(batched), num_warps=NUM_WARPS,
        )
    if needs_image and det:
        shape = image.shape if batched else (batch, *image.shape[1:])
        grad_image = scatter.image_grad(grad, src, shape, source, mode, padding_mode, align_corners,
                                        acc_dtype=acc)
        if not batched:  # per-item gradients, summed in a fixed order
            grad_image = grad_image.sum(0, keepdim=True)
    if grad_source is not None and need_source and source == SOURCE_AFFINE and det:  # the partials, summed
        grad_source = grad_source.sum(dim=1).view(tuple(source_grad_shape))
    if grad_image is not None:
        grad_image = grad_image.to(image.dtype)
    if grad_source is not None:
        grad_source = grad_source.to(source_grad_dtype)
    return grad_image, grad_source


# --- backend namespace (same names and signatures as regnet.ops._torch) ----------------------

def grid_sample_forward(input: torch.Tensor, grid: torch.Tensor, mode: str, padding_mode: str,
                        align_corners: bool) -> torch.Tensor:
    return _forward(input, grid, tuple(grid.shape[1:-1]), SOURCE_GRID, mode, padding_mode, align_corners)


def grid_sample_backward(grad: torch.Tensor, input: torch.Tensor, grid: torch.Tensor, mode: str, padding_mode: str,
                         align_corners: bool, needs_input: bool, needs_grid: bool) -> Grads2:
    """Return ``(grad_input, grad_grid)``; an entry is ``None`` when not needed."""
    return _backward(grad, input, grid, tuple(grid.shape[1:-1]), SOURCE_GRID, mode, padding_mode,
                     align_corners, needs_input, needs_grid, grid.shape, grid.dtype)


def warp_forward(image: torch.Tensor, ddf: torch.Tensor, mode: str, padding_mode: str) -> torch.Tensor:
    return _forward(image, ddf, tuple(ddf.shape[2:]), SOURCE_DDF, mode, padding_mode, True)


def warp_backward(grad: torch.Tensor, image: torch.Tensor, ddf: torch.Tensor, mode: str, padding_mode: str,
                  needs_image: bool, needs_ddf: bool) -> Grads2:
    return _backward(grad, image, ddf, tuple(ddf.shape[2:]), SOURCE_DDF, mode, padding_mode,
                     True, needs_image, needs_ddf, ddf.shape, ddf.dtype)


def _theta(theta: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    _, acc = _common.compute_dtype(image.dtype)
    return theta.to(acc).contiguous()


def affine_transform_forward(image: torch.Tensor, theta: torch.Tensor, shape: Sequence[int], mode: str,
                             padding_mode: str, align_corners: bool) -> torch.Tensor:
    return _forward(image, _theta(theta, image), tuple(shape), SOURCE_AFFINE, mode, padding_mode, align_corners)


def affine_transform_backward(grad: torch.Tensor, image: torch.Tensor, theta: torch.Tensor, shape: Sequence[int],
                              mode: str, padding_mode: str, align_corners: bool, needs_image: bool,
                              needs_theta: bool) -> Grads2:
    return _backward(grad, image, _theta(theta, image), tuple(shape), SOURCE_AFFINE, mode, padding_mode,
                     align_corners, needs_image, needs_theta, theta.shape, theta.dtype)


NAME = "triton"
