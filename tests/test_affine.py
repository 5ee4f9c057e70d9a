"""affine_grid vs F.affine_grid, affine_transform vs grid_sample(affine_grid), compose_affine
vs torchreg: values, gradients through the oracles, gradcheck."""

import pytest
import torch
import torch.nn.functional as F
from torchreg.affine import compose_affine as torchreg_compose_affine

from regnet import ops


def _theta(ndim, batch=2, dtype=torch.float32):
    eye = torch.eye(ndim, ndim + 1, dtype=dtype)
    return eye + 0.3 * torch.randn(batch, ndim, ndim + 1, dtype=dtype)


SIZES = {2: (2, 3, 5, 7), 3: (2, 3, 4, 5, 3)}


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("align_corners", [True, False])
def test_affine_grid_matches_torch(ndim, align_corners):
    size = SIZES[ndim]
    theta = _theta(ndim)
    weight = torch.randn(size[0], *size[2:], ndim)
    grads = []
    for fn in (ops.affine_grid, F.affine_grid):
        t = theta.clone().requires_grad_()
        grid = fn(t, size, align_corners=align_corners)
        (grid * weight).sum().backward()
        grads.append((grid, t.grad))
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=0, atol=0)
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("size", [(1, 1, 1, 6), (1, 1, 4, 1, 1), (2, 1, 1, 1)])
def test_affine_grid_singleton_axes(size):
    theta = _theta(len(size) - 2, batch=size[0], dtype=torch.float64).requires_grad_()
    torch.testing.assert_close(ops.affine_grid(theta, size), F.affine_grid(theta, size, align_corners=False))
    assert torch.autograd.gradcheck(lambda t: ops.affine_grid(t, size), (theta,))


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("align_corners", [True, False])
def test_affine_grid_gradcheck(ndim, align_corners):
    theta = _theta(ndim, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: ops.affine_grid(t, SIZES[ndim], align_corners), (theta,))


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
@pytest.mark.parametrize("padding_mode", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("align_corners", [True, False])
def test_affine_transform_matches_grid_sample_of_affine_grid(ndim, mode, padding_mode, align_corners):
    image = torch.randn(*SIZES[ndim])
    theta = _theta(ndim)
    shape = (6, 3, 5)[:ndim]
    weight = torch.randn(image.shape[0], image.shape[1], *shape)
    results = []
    for fused in (True, False):
        x, t = image.clone().requires_grad_(), theta.clone().requires_grad_()
        if fused:
            out = ops.affine_transform(x, t, shape, mode, padding_mode, align_corners)
        else:
            grid = F.affine_grid(t, (x.shape[0], x.shape[1], *shape), align_corners=align_corners)
            out = F.grid_sample(x, grid, mode=mode, padding_mode=padding_mode, align_corners=align_corners)
        (out * weight).sum().backward()
        results.append((out, x.grad, t.grad))
    for ours, theirs in zip(*results):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("padding_mode", ["zeros", "border", "reflection"])
def test_affine_transform_gradcheck(ndim, padding_mode):
    image = torch.randn(1, 2, *(4, 5, 3)[:ndim], dtype=torch.float64, requires_grad=True)
    theta = _theta(ndim, batch=1, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda x, t: ops.affine_transform(x, t, (3, 4, 2)[:ndim], padding_mode=padding_mode, align_corners=True),
        (image, theta),
    )


def test_affine_transform_keeps_no_grid_for_backward():
    image = torch.randn(1, 1, 8, 9, 10, requires_grad=True)
    theta = _theta(3, batch=1).requires_grad_()
    out = ops.affine_transform(image, theta)
    saved = out.grad_fn.saved_tensors
    assert len(saved) == 2 and {tuple(s.shape) for s in saved} == {tuple(image.shape), tuple(theta.shape)}


def test_affine_transform_default_shape_and_identity(brain_slice):
    theta = torch.eye(2, 3, dtype=torch.float64)[None]
    out = ops.affine_transform(brain_slice, theta, align_corners=True)
    torch.testing.assert_close(out, brain_slice)


def _affine_params(ndim, batch=3, dtype=torch.float32):
    return (
        torch.randn(batch, ndim, dtype=dtype),
        torch.randn(batch, ndim, ndim, dtype=dtype),
        1 + 0.2 * torch.randn(batch, ndim, dtype=dtype),
        0.2 * torch.randn(batch, ndim, dtype=dtype),
    )


@pytest.mark.parametrize("ndim", [2, 3])
def test_compose_affine_matches_torchreg(ndim):
    params = _affine_params(ndim)
    weight = torch.randn(params[0].shape[0], ndim, ndim + 1)
    results = []
    for fn in (ops.compose_affine, torchreg_compose_affine):
        leaves = [p.clone().requires_grad_() for p in params]
        theta = fn(*leaves)
        (theta * weight).sum().backward()
        results.append((theta, *[p.grad for p in leaves]))
    for ours, theirs in zip(*results):
        torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("ndim", [2, 3])
def test_compose_affine_gradcheck(ndim):
    params = [p.requires_grad_() for p in _affine_params(ndim, dtype=torch.float64)]
    assert torch.autograd.gradcheck(ops.compose_affine, params)


def test_compose_affine_identity_and_structure():
    batch = 2
    t = torch.tensor([[0.1, -0.2, 0.3]]).repeat(batch, 1)
    r = torch.eye(3).repeat(batch, 1, 1)
    z = torch.tensor([[2.0, 3.0, 4.0]]).repeat(batch, 1)
    s = torch.tensor([[0.5, 0.6, 0.7]]).repeat(batch, 1)
    theta = ops.compose_affine(t, r, z, s)
    expected = torch.tensor([[2.0, 0.5, 0.6, 0.1], [0.0, 3.0, 0.7, -0.2], [0.0, 0.0, 4.0, 0.3]])
    torch.testing.assert_close(theta, expected.repeat(batch, 1, 1))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"theta": torch.zeros(2, 3, 3), "size": (2, 1, 4, 4)}, "theta must have shape"),
        ({"theta": torch.zeros(2, 2, 3), "size": (2, 1, 4, 4, 4)}, "size must be"),
        ({"theta": torch.zeros(2, 2, 3), "size": (3, 1, 4, 4)}, "batch size"),
        ({"theta": torch.zeros(2, 2, 3), "size": (2, 1, 0, 4)}, "positive ints"),
    ],
)
def test_affine_grid_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ops.affine_grid(**kwargs)


def test_affine_transform_and_compose_affine_bad_input():
    with pytest.raises(ValueError, match=r"theta must have shape \(B, 3, 4\)"):
        ops.affine_transform(torch.zeros(1, 1, 4, 4, 4), torch.zeros(1, 2, 3))
    with pytest.raises(ValueError, match="image has batch size 3 and theta 2"):
        ops.affine_transform(torch.zeros(3, 1, 4, 4), torch.zeros(2, 2, 3))
    with pytest.raises(ValueError, match="shape must be 2 positive ints"):
        ops.affine_transform(torch.zeros(1, 1, 4, 4), torch.zeros(1, 2, 3), shape=(4, 4, 4))
    with pytest.raises(TypeError, match="dtype"):
        ops.affine_transform(torch.zeros(1, 1, 4, 4), torch.zeros(1, 2, 3, dtype=torch.float64))
    t, r, z, s = _affine_params(3, batch=2)
    with pytest.raises(ValueError, match=r"zoom must have shape \(2, 3\)"):
        ops.compose_affine(t, r, z[:, :2], s)
    with pytest.raises(ValueError, match="rotation must have shape"):
        ops.compose_affine(t, r[:, :2], z, s)
