"""Batch broadcasting of grid_sample / warp / affine_transform (regnet/ops/_broadcast.py).

Oracle: the same op on explicitly expanded inputs (``x.expand(B, ...)``, a batch of copies),
whose gradient autograd sums over the copies. Both backends (Triton through the interpreter),
both directions (one image and B sources, B images and one source), 2D and 3D, both modes,
and the deterministic Triton path.
"""

import pytest
import torch
from triton_helpers import INTERPRETER_WARNINGS, small_blocks_and_poisoned_buffers, triton_device

from regnet import ops
from regnet.ops import _backend

BATCH = 3


def _sources(op, ndim, batch, dtype, gen):
    spatial = (5, 6, 4)[:ndim]
    if op == "grid_sample":
        return (torch.rand((batch, 4, 3, 5)[: ndim + 1] + (ndim,), generator=gen, dtype=dtype) * 2.4 - 1.2), spatial
    if op == "warp":
        return torch.randn((batch, ndim, *spatial), generator=gen, dtype=dtype) * 1.5, spatial
    theta = torch.eye(ndim, ndim + 1, dtype=dtype).repeat(batch, 1, 1)
    return theta + 0.15 * torch.randn(theta.shape, generator=gen, dtype=dtype), spatial


def _apply(op, image, source, mode, backend):
    if op == "grid_sample":
        return ops.grid_sample(image, source, mode, "border", True, backend=backend)
    if op == "warp":
        return ops.warp(image, source, mode, "zeros", backend=backend)
    return ops.affine_transform(image, source, (4, 3, 5)[: image.dim() - 2], mode, "reflection", False,
                                backend=backend)


def _check(op, ndim, mode, shared, backend, dtype=torch.float64, device="cpu", tol=1e-10):
    gen = torch.Generator().manual_seed(ndim * 7 + len(op))
    image_batch, source_batch = (1, BATCH) if shared == "image" else (BATCH, 1)
    source, spatial = _sources(op, ndim, source_batch, dtype, gen)
    image = torch.rand((image_batch, 2, *spatial), generator=gen, dtype=dtype)
    image, source = image.to(device).requires_grad_(), source.to(device).requires_grad_()
    out = _apply(op, image, source, mode, backend)
    assert out.shape[:2] == (BATCH, 2)
    weight = torch.randn(out.shape, generator=gen, dtype=dtype).to(device)
    grads = torch.autograd.grad((out * weight).sum(), (image, source))

    leaves = image.detach().clone().requires_grad_(), source.detach().clone().requires_grad_()
    big_image, big_source = (x.expand(BATCH, *x.shape[1:]) for x in leaves)  # autograd sums the copies
    expected = _apply(op, big_image.contiguous(), big_source.contiguous(), mode, "torch")
    expected_grads = torch.autograd.grad((expected * weight).sum(), leaves)
    torch.testing.assert_close(out, expected, atol=tol, rtol=tol)
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want, atol=tol, rtol=tol)


@pytest.mark.parametrize("op", ["grid_sample", "warp", "affine_transform"])
@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("shared", ["image", "source"])
def test_reference_backend_broadcasts(op, ndim, shared):
    for mode in ("bilinear", "nearest"):
        _check(op, ndim, mode, shared, "torch")


# One image for B sources: the kernels' zero batch stride, atomics or (deterministic) per-item
# gradients summed, for every op and rank. B images for one source: the batch folded into the
# channels before the kernels (an ordinary batch-1 call), deterministic or not spread.
OPS = ("grid_sample", "warp", "affine_transform")
TRITON_CASES = ([(op, ndim, "image", det) for op in OPS for ndim in (2, 3) for det in (False, True)]
                + [(op, ndim, "source", (i + ndim) % 2 == 1) for i, op in enumerate(OPS) for ndim in (2, 3)])


@INTERPRETER_WARNINGS
@pytest.mark.parametrize("op,ndim,shared,deterministic", TRITON_CASES)
def test_triton_backend_broadcasts(monkeypatch, op, ndim, shared, deterministic):
    pytest.importorskip("triton")
    device = triton_device()
    small_blocks_and_poisoned_buffers(monkeypatch)
    previous = _backend.is_deterministic()
    _backend.set_deterministic(deterministic)
    try:
        _check(op, ndim, "bilinear", shared, "triton", torch.float32, device, tol=2e-5)
    finally:
        _backend.set_deterministic(previous)


def test_bad_batches_name_both_arguments():
    with pytest.raises(ValueError, match=r"warp: image has batch size 2 and ddf 3"):
        ops.warp(torch.zeros(2, 1, 4, 4), torch.zeros(3, 2, 4, 4))
    with pytest.raises(ValueError, match=r"grid_sample: input has batch size 2 and grid 3"):
        ops.grid_sample(torch.zeros(2, 1, 4, 4), torch.zeros(3, 4, 4, 2))
    with pytest.raises(ValueError, match=r"ddf must have shape \(B, ndim, \*spatial\) = \(3, 2, 4, 4\)"):
        ops.warp(torch.zeros(1, 1, 4, 4), torch.zeros(3, 2, 4, 5))
