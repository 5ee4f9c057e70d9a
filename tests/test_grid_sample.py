"""grid_sample against torch.nn.functional.grid_sample: values, gradients, gradcheck."""

import itertools

import pytest
import torch
import torch.nn.functional as F

from regnet import ops

PADDINGS = ("zeros", "border", "reflection")
MODES = ("bilinear", "nearest")


def _inputs(ndim, dtype, batch=2, channels=3, spread=3.0):
    spatial = (5, 6, 4)[:ndim]
    out_spatial = (3, 7, 2)[:ndim]
    image = torch.randn(batch, channels, *spatial, dtype=dtype)
    # Points well inside, on the border and far outside the image.
    grid = (torch.rand(batch, *out_spatial, ndim, dtype=dtype) * 2 - 1) * spread
    return image, grid


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("mode,padding_mode,align_corners", itertools.product(MODES, PADDINGS, [True, False]))
def test_matches_torch_forward_and_backward(ndim, mode, padding_mode, align_corners):
    image, grid = _inputs(ndim, torch.float32)
    weight = torch.randn(image.shape[:2] + grid.shape[1:-1])
    results = []
    for sample in (ops.grid_sample, F.grid_sample):
        x, g = image.clone().requires_grad_(), grid.clone().requires_grad_()
        out = sample(x, g, mode=mode, padding_mode=padding_mode, align_corners=align_corners)
        (out * weight).sum().backward()
        results.append((out, x.grad, g.grad))
    for ours, theirs in zip(*results):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("padding_mode,align_corners", itertools.product(PADDINGS, [True, False]))
def test_gradcheck_bilinear(ndim, padding_mode, align_corners):
    image, grid = _inputs(ndim, torch.float64, batch=1, channels=2, spread=1.6)
    image.requires_grad_()
    grid.requires_grad_()
    assert torch.autograd.gradcheck(
        lambda x, g: ops.grid_sample(x, g, "bilinear", padding_mode, align_corners), (image, grid)
    )


@pytest.mark.parametrize("ndim", [2, 3])
def test_gradcheck_nearest_image(ndim):
    image, grid = _inputs(ndim, torch.float64, batch=1, channels=2)
    image.requires_grad_()
    assert torch.autograd.gradcheck(lambda x: ops.grid_sample(x, grid, "nearest", "reflection", False), (image,))


def test_grads_only_where_needed():
    image, grid = _inputs(2, torch.float32)
    image.requires_grad_()
    ops.grid_sample(image, grid).sum().backward()
    assert image.grad is not None and grid.grad is None


def test_identity_grid_reproduces_image(brain_slice):
    theta = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]], dtype=torch.float64)
    for align_corners in (True, False):
        grid = F.affine_grid(theta, brain_slice.shape, align_corners=align_corners)
        out = ops.grid_sample(brain_slice, grid, align_corners=align_corners)
        torch.testing.assert_close(out, brain_slice)


@pytest.mark.parametrize(
    "image,grid,error,match",
    [
        (torch.zeros(1, 1, 4, 4), torch.zeros(1, 3, 3, 3), ValueError, "grid must have shape"),
        (torch.zeros(3, 1, 4, 4), torch.zeros(2, 3, 3, 2), ValueError, "input has batch size 3 and grid 2"),
        (torch.zeros(1, 1, 4, 4), torch.zeros(1, 3, 3, 3, 3), ValueError, "grid must have 4 dimensions"),
        (torch.zeros(1, 4, 4), torch.zeros(1, 3, 2), ValueError, "input must have 4 or 5"),
        (torch.zeros(1, 1, 4, 4), torch.zeros(1, 3, 3, 2, dtype=torch.float64), TypeError, "dtype"),
        (torch.zeros(1, 1, 4, 4, dtype=torch.int64), torch.zeros(1, 3, 3, 2), TypeError, "floating"),
        ("image", torch.zeros(1, 3, 3, 2), TypeError, "torch.Tensor"),
    ],
)
def test_bad_input(image, grid, error, match):
    with pytest.raises(error, match=match):
        ops.grid_sample(image, grid)


def test_bad_options():
    image, grid = _inputs(2, torch.float32)
    with pytest.raises(ValueError, match="mode"):
        ops.grid_sample(image, grid, mode="bicubicc")
    with pytest.raises(ValueError, match="padding_mode"):
        ops.grid_sample(image, grid, padding_mode="wrap")
