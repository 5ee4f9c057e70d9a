"""Fused Triton kernels for displacement fields: ``compose`` and ``exp`` (scaling and squaring).

Both are built on one step, ``out = s*u2 + sample(s*u1, x + s*u2)`` per voxel, with MONAI's
``Warp`` convention (voxel units, ``align_corners=True``, channel ``a`` along array axis ``a``;
an axis of one voxel samples at 0): ``compose(u1, u2)`` is one step with ``s = 1``; each
squaring ``u <- u + warp(u, u)`` of ``exp`` is one step with ``u1 = u2 = u``. The first
squaring reads the velocity itself with ``s = 2**-steps``, so ``svf / 2**steps`` is never
materialised (a power-of-two factor is exact: same numbers). The sample point comes straight
from the field (no grid tensor) through the sampling kernels' helpers
(:mod:`regnet.ops._triton._interpolation`: padding, reflection, rounding, weights and the
corner gather / scatter are the sampling kernels').

Backward of one step, given ``G = d loss / d out``:

- w.r.t. the sampled field ``u1``: ``G`` scattered through the interpolation weights
  (``tl.atomic_add`` into a float32/float64 buffer; in deterministic mode the gather of
  :mod:`regnet.ops._triton.scatter` instead);
- w.r.t. the displacement ``u2``: ``G`` itself plus the gradient of the sample point,
  gathered per voxel (``sum_c G_c * d sample(u1_c) / d point``), with the padding's factors.

``exp`` backward does not keep the ``steps`` intermediate fields between forward and backward:
the forward saves only ``svf`` (an input, so nothing extra). The backward recomputes the
chain with checkpoints every ``c = ceil(sqrt(steps))`` squarings and replays each segment
just before going back through it: ``steps / c + c`` fields alive at most (7 steps: 4
instead of 7) for about two forward passes of extra work; a forward squaring reads ``ndim``
channels and costs a fraction of a backward step with its atomics.

Arithmetic is float32 for float16/bfloat16/float32 and float64 for float64. ``exp`` keeps
its intermediate fields and the gradient in float32 for float16/bfloat16 inputs, and rounds
only the result to the input dtype.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from regnet.ops import _state
from regnet.ops._modes import MODE_CODE, PADDING_CODE
from regnet.ops._triton import _common, scatter
from regnet.ops._triton._interpolation import (
    NUM_WARPS,
    SIZE_ARGS,
    SOURCE_DDF,
    check_int32,
    interpolate_backward,
    interpolate_forward,
    padded_point,
    sizes,
)

BLOCK = 256
_MAX_FUSED_STEPS = 100  # 2**-steps stays a normal float32 number; beyond, svf is divided first


# --- kernels --------------------------------------------------------------------------------

@triton.jit(do_not_specialize=SIZE_ARGS)
def _step_forward_kernel(
    out_ptr, u1_ptr, u2_ptr, scale, S0, S1, S2,
    NDIM: tl.constexpr, MODE: tl.constexpr, PADDING: tl.constexpr, CDT: tl.constexpr, BLOCK: tl.constexpr,
):
    """``out = s*u2 + sample(s*u1, x + s*u2)``; fields ``(B, NDIM, S0, S1[, S2])``."""
    b, offs, lane, n, n_in, p0, p1, p2, g0, g1, g2, m0, m1, m2, x, y, z = padded_point(
        u2_ptr, scale, S0, S1, S2, S0, S1, S2, NDIM, 1, PADDING, True, CDT, BLOCK)  # source 1: the DDF
    u1_b = u1_ptr + b * NDIM * n
    u2_b = u2_ptr + b * NDIM * n + offs
    out_b = out_ptr + b * NDIM * n + offs
    interpolate_forward(out_b, u1_b, u2_b, NDIM, n, n, p0, p1, p2, S0, S1, S2, lane, scale,
                        NDIM, MODE, True, CDT)


@triton.jit
def _emit_displacement_grad(gout_b, g2_b, n, lane, gp0, gp1, gp2, NDIM: tl.constexpr, G2_ATOMIC: tl.constexpr):
    """``d loss / d u2 = G + point gradient``: stored (``g2 = G + gp``, every element once),
    or (``G2_ATOMIC``) added onto a buffer that already holds ``G`` and receives the scatter."""
    if G2_ATOMIC:
        tl.atomic_add(g2_b, gp0, mask=lane)
        tl.atomic_add(g2_b + n, gp1, mask=lane)
        if NDIM == 3:
            tl.atomic_add(g2_b + 2 * n, gp2, mask=lane)
    else:
        dtype = g2_b.dtype.element_ty
        cdt = gp0.dtype
        tl.store(g2_b, (tl.load(gout_b, mask=lane, other=0.0).to(cdt) + gp0).to(dtype), mask=lane)
        tl.store(g2_b + n, (tl.load(gout_b + n, mask=lane, other=0.0).to(cdt) + gp1).to(dtype), mask=lane)
        if NDIM == 3:
            tl.store(g2_b + 2 * n, (tl.load(gout_b + 2 * n, mask=lane, other=0.0).to(cdt) + gp2).to(dtype),
                     mask=lane)


@triton.jit(do_not_specialize=SIZE_ARGS)
def _step_backward_kernel(
    gout_ptr, u1_ptr, u2_ptr, g1_ptr, g2_ptr, scale, S0, S1, S2,
    NDIM: tl.constexpr, MODE: tl.constexpr, PADDING: tl.constexpr, CDT: tl.constexpr,
    NEED_1: tl.constexpr, NEED_2: tl.constexpr, G2_ATOMIC: tl.constexpr, BLOCK: tl.constexpr,
):
    """Backward of ``out = s*u2 + sample(s*u1, x + s*u2)`` w.r.t. ``s*u1`` (``NEED_1``: atomic
    scatter into ``g1``) and ``s*u2`` (``NEED_2``: see :func:`_emit_displacement_grad`)."""
    b, offs, lane, n, n_in, p0, p1, p2, g0, g1, g2, m0, m1, m2, x, y, z = padded_point(
        u2_ptr, scale, S0, S1, S2, S0, S1, S2, NDIM, 1, PADDING, True, CDT, BLOCK)  # source 1: the DDF
    gout_b = gout_ptr + b * NDIM * n + offs
    u1_b = u1_ptr + b * NDIM * n
    g1_b = g1_ptr + b * NDIM * n
    g2_b = g2_ptr + b * NDIM * n + offs
    d0, d1, d2 = interpolate_backward(gout_b, u1_b, g1_b, NDIM, n, n, p0, p1, p2, S0, S1, S2, lane,
                                      NDIM, MODE, NEED_1, NEED_2, CDT, BLOCK)
    if NEED_2:
        if MODE == 1:  # nearest: the sample point has zero gradient
            zero = tl.zeros([BLOCK], CDT)
            _emit_displacement_grad(gout_b, g2_b, n, lane, zero, zero, zero, NDIM, G2_ATOMIC)
        else:
            _emit_displacement_grad(gout_b, g2_b, n, lane, d0 * (m0 * g0) * scale, d1 * (m1 * g1) * scale,
                                    d2 * (m2 * g2) * scale, NDIM, G2_ATOMIC)


# --- launchers ------------------------------------------------------------------------------

def _launch(u: torch.Tensor) -> tuple[int, int]:
    return (triton.cdiv(math.prod(u.shape[2:]), BLOCK), u.shape[0])


def _step(u1: torch.Tensor, u2: torch.Tensor, scale: float, mode: str, padding_mode: str,
          out_dtype: torch.dtype) -> torch.Tensor:
    """One fused step ``s*u2 + sample(s*u1, x + s*u2)`` into a new ``out_dtype`` field."""
    out = _common.empty(u2.shape, out_dtype, u2.device)
    if out.numel() == 0:
        return out
    cdt, _ = _common.compute_dtype(u2.dtype)
    _step_forward_kernel[_launch(u2)](
        out, u1, u2, scale, *sizes(u2.shape[2:]),
        NDIM=u2.dim() - 2, MODE=MODE_CODE[mode], PADDING=PADDING_CODE[padding_mode], CDT=cdt,
        BLOCK=BLOCK, num_warps=NUM_WARPS,
    )
    return out


def _step_backward(grad: torch.Tensor, u1: torch.Tensor, u2: torch.Tensor, scale: float, mode: str, padding_mode: str,
                   g1: torch.Tensor | None, g2: torch.Tensor | None, need_1: bool, need_2: bool,
                   g2_atomic: bool) -> None:
    if not (need_1 or need_2) or grad.numel() == 0:
        return
    cdt, _ = _common.compute_dtype(u2.dtype)
    _step_backward_kernel[_launch(u2)](
        grad, u1, u2, g1 if g1 is not None else grad, g2 if g2 is not None else grad, scale,
        *sizes(u2.shape[2:]),
        NDIM=u2.dim() - 2, MODE=MODE_CODE[mode], PADDING=PADDING_CODE[padding_mode], CDT=cdt,
        NEED_1=bool(need_1), NEED_2=bool(need_2), G2_ATOMIC=bool(g2_atomic), BLOCK=BLOCK, num_warps=NUM_WARPS,
    )


def _scatter_det(grad: torch.Tensor, u1: torch.Tensor, u2: torch.Tensor, scale: float, mode: str, padding_mode: str,
                 acc: torch.dtype, out: torch.Tensor | None = None) -> torch.Tensor:
    """Deterministic gradient w.r.t. the sampled field (gather formulation), onto ``out``."""
    return scatter.image_grad(grad, u2, u1.shape, SOURCE_DDF, mode, padding_mode, True,
                              acc_dtype=acc, scale=scale, out=out)


# --- backend namespace (same names and signatures as regnet.ops._torch) ----------------------

def compose_forward(u1: torch.Tensor, u2: torch.Tensor, mode: str, padding_mode: str) -> torch.Tensor:
    u1, u2 = u1.contiguous(), u2.contiguous()
    check_int32(u1)
    return _step(u1, u2, 1.0, mode, padding_mode, u1.dtype)


def compose_backward(grad: torch.Tensor, u1: torch.Tensor, u2: torch.Tensor, mode: str, padding_mode: str,
                     needs_u1: bool, needs_u2: bool) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Return ``(grad_u1, grad_u2)``; an entry is ``None`` when not needed."""
    if not (needs_u1 or needs_u2):
        return None, None
    grad, u1, u2 = grad.contiguous(), u1.contiguous(), u2.contiguous()
    check_int32(u1)
    _, acc = _common.compute_dtype(u1.dtype)
    det = _state.is_deterministic()
    grad_u1 = torch.zeros(u1.shape, dtype=acc, device=u1.device) if needs_u1 and not det else None
    grad_u2 = _common.empty(u2.shape, u2.dtype, u2.device) if needs_u2 else None
    _step_backward(grad, u1, u2, 1.0, mode, padding_mode, grad_u1, grad_u2,
                   needs_u1 and not det, needs_u2, False)
    if needs_u1 and det:
        grad_u1 = _scatter_det(grad, u1, u2, 1.0, mode, padding_mode, acc)
    if grad_u1 is not None:
        grad_u1 = grad_u1.to(u1.dtype)
    return grad_u1, grad_u2


def _first(svf: torch.Tensor, steps: int) -> tuple[torch.Tensor, float]:
    """The first squaring's input as ``(field, scale)``: ``svf`` with ``2**-steps`` (exact), or
    for very many steps ``svf / 2**steps`` materialised, as the reference computes it."""
    svf = svf.contiguous()
    if steps <= _MAX_FUSED_STEPS:
        return svf, 2.0**-steps
    return svf / (2**steps), 1.0


def _buffer_dtype(dtype: torch.dtype) -> torch.dtype:
    """Intermediate fields and gradients: float32 for float16/bfloat16, else the dtype."""
    return _common.compute_dtype(dtype)[1]


def exp_forward(svf: torch.Tensor, steps: int, mode: str, padding_mode: str) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Scaling and squaring. Returns ``(ddf, saved)`` with ``saved = [svf]``: the backward
    recomputes the intermediate fields (see the module docstring)."""
    if steps == 0:
        return svf.clone(), []
    check_int32(svf)
    u, scale = _first(svf, steps)
    dtype = _buffer_dtype(svf.dtype)
    for _ in range(steps):
        u = _step(u, u, scale, mode, padding_mode, dtype)  # the previous field is freed here
        scale = 1.0
    return u.to(svf.dtype), [svf]


def _segment_length(steps: int) -> int:
    """``ceil(sqrt(steps))`` for ``steps >= 1``."""
    return math.isqrt(steps - 1) + 1


def exp_backward(grad: torch.Tensor, saved: list[torch.Tensor], steps: int, mode: str,
                 padding_mode: str) -> torch.Tensor:
    """Back through the ``steps`` squarings ``u' = u + warp(u, u)``, recomputing the fields
    from ``saved = [svf]`` segment by segment. ``saved`` is consumed."""
    if steps == 0:
        return grad.clone()
    svf = saved.pop()
    first, first_scale = _first(svf, steps)
    dtype = _buffer_dtype(svf.dtype)
    det = _state.is_deterministic()
    seg = _segment_length(steps)
    # checkpoints[k] = (u_k, scale): the input of squaring k, for k = 0, seg, 2 seg, ...
    checkpoints = {0: (first, first_scale)}
    u, scale = first, first_scale
    for k in range(1, seg * ((steps - 1) // seg) + 1):
        u, scale = _step(u, u, scale, mode, padding_mode, dtype), 1.0
        if k % seg == 0:
            checkpoints[k] = (u, scale)
    del u
    g = grad.to(dtype, copy=True).contiguous()
    for start in sorted(checkpoints, reverse=True):
        fields = [checkpoints.pop(start)]
        for _ in range(start + 1, min(start + seg, steps)):
            f, s = fields[-1]
            fields.append((_step(f, f, s, mode, padding_mode, dtype), 1.0))
        while fields:
            f, s = fields.pop()
            if det:
                new = _common.empty(g.shape, dtype, g.device)
                _step_backward(g, f, f, s, mode, padding_mode, None, new, False, True, False)
                new = _scatter_det(g, f, f, s, mode, padding_mode, dtype, out=new)
            else:
                new = g.clone()
                # nearest: the point gradient is zero and ``new`` already holds G
                _step_backward(g, f, f, s, mode, padding_mode, new, new, True, mode == "bilinear", True)
            g = new
            del f
    return g.div_(2**steps).to(svf.dtype)


NAME = "triton"

