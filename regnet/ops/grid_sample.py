"""``grid_sample``: exactly ``torch.nn.functional.grid_sample``, with a hand-written backward."""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from regnet import _checks
from regnet.ops import _broadcast
from regnet.ops._backend import select


class GridSampleFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, grid, mode, padding_mode, align_corners, impl):
        ctx.save_for_backward(input, grid)
        ctx.options = (mode, padding_mode, align_corners)
        ctx.impl = impl
        return impl.grid_sample_forward(input, grid, mode, padding_mode, align_corners)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        input, grid = ctx.saved_tensors
        needs_input, needs_grid = ctx.needs_input_grad[:2]
        grad_input, grad_grid = ctx.impl.grid_sample_backward(
            grad, input, grid, *ctx.options, needs_input, needs_grid
        )
        return grad_input, grad_grid, None, None, None, None


def check_grid(fn: str, input: torch.Tensor, grid) -> None:
    """Check ``grid`` ``(B, *out_spatial, ndim)`` against ``input`` ``(B, C, *spatial)`` (or
    one of the two with batch 1)."""
    _checks.tensor(fn, "grid", grid, ndims=(input.dim(),))
    ndim = input.dim() - 2
    if grid.shape[-1] != ndim:
        raise ValueError(
            f"{fn}: grid must have shape (B, *out_spatial, {ndim}) for input {tuple(input.shape)}, "
            f"got {tuple(grid.shape)}"
        )
    _broadcast.output_batch(fn, "input", input, "grid", grid)
    _checks.same_device_dtype(fn, input=input, grid=grid)


def grid_sample(
    input: torch.Tensor,
    grid: torch.Tensor,
    mode: str = "bilinear",
    padding_mode: str = "zeros",
    align_corners: bool = False,
    *,
    backend: str | None = None,
) -> torch.Tensor:
    """Sample ``input`` at the normalised positions of ``grid``.

    Same semantics as :func:`torch.nn.functional.grid_sample`, plus batch broadcasting where
    PyTorch raises: ``input`` or ``grid`` may have batch 1 and is then shared by every item of
    the other (:mod:`regnet.ops._broadcast`).

    Args:
        input: image ``(B, C, H, W)`` or ``(B, C, H, W, D)``.
        grid: positions ``(B, *out_spatial, ndim)``, last dimension ordered ``(x, y[, z])`` =
            reversed array axes, normalised to ``[-1, 1]``; points outside are padded.
        mode: ``"bilinear"`` (trilinear in 3D) or ``"nearest"``.
        padding_mode: ``"zeros"``, ``"border"`` or ``"reflection"``.
        align_corners: ``True``: -1 and 1 are the centres of the corner voxels;
            ``False``: they are the outer edges of the corner voxels.
        backend: ``"auto"``, ``"torch"`` or ``"triton"``; ``None`` uses :func:`regnet.get_backend`.

    Returns:
        ``(B, C, *out_spatial)``. Differentiable w.r.t. ``input`` and ``grid``.
    """
    fn = "grid_sample"
    _checks.tensor(fn, "input", input, ndims=(4, 5))
    check_grid(fn, input, grid)
    _checks.choice(fn, "mode", mode, _checks.SAMPLING_MODES)
    _checks.choice(fn, "padding_mode", padding_mode, _checks.PADDING_MODES)
    impl = select("grid_sample", input.device, backend)
    input, folded = _broadcast.fold(input, grid)
    return _broadcast.unfold(GridSampleFunction.apply(input, grid, mode, padding_mode, bool(align_corners), impl),
                             folded)
