"""Batch broadcasting of grid_sample / warp / affine_transform (regnet/ops/_broadcast.py).

Oracle: the same op on explicitly expanded inputs (``x.expand(B, ...)``, a batch of copies),
whose gradient autograd sums over the copies. Both backends (Triton through the interpreter),
both directions (one image and B sources, B images and one source), 2D and 3D, both modes,
and the deterministic Triton path.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from regnet import ops  # noqa: E402
from regnet.ops import _backend  # noqa: E402
from triton_helpers import INTERPRETER_WARNINGS, small_blocks_and_poisoned_buffers, triton_device  # noqa: E402

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


@INTERPRETER_WARNINGS
@pytest.mark.parametrize("op", ["grid_sample", "warp", "affine_transform"])
@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("shared", ["image", "source"])
@pytest.mark.parametrize("deterministic", [False, True])
def test_triton_backend_broadcasts(monkeypatch, op, ndim, shared, deterministic):
    pytest.importorskip("triton")
    from regnet.ops._triton import sampling, scatter

    device = triton_device(sampling._sample_forward_kernel)
    small_blocks_and_poisoned_buffers(monkeypatch, sampling, scatter)
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
