"""warp vs MONAI Warp, exp vs MONAI DVF2DDF, compose: analytic cases, gradients, gradcheck."""

import pytest
import torch
from monai.networks.blocks import DVF2DDF, Warp

from regnet import ops

SPATIAL = {2: (9, 7), 3: (6, 5, 7)}


def smooth_field(batch, ndim, spatial, scale=2.0, dtype=torch.float32):
    """A smooth random field: coarse noise upsampled (trilinear), ``scale`` voxels."""
    coarse = torch.randn(batch, ndim, *([3] * ndim), dtype=dtype)
    mode = "bilinear" if ndim == 2 else "trilinear"
    return scale * torch.nn.functional.interpolate(coarse, size=spatial, mode=mode, align_corners=True)


def _run(fn, inputs, weight):
    leaves = [x.clone().requires_grad_() for x in inputs]
    out = fn(*leaves)
    (out * weight).sum().backward()
    return [out, *[x.grad for x in leaves]]


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
@pytest.mark.parametrize("padding_mode", ["border", "zeros", "reflection"])
def test_warp_matches_monai(ndim, mode, padding_mode):
    spatial = SPATIAL[ndim]
    image = torch.randn(2, 3, *spatial)
    ddf = 3 * torch.randn(2, ndim, *spatial)  # rough, large: many points fall outside
    weight = torch.randn(2, 3, *spatial)
    ours = _run(lambda x, u: ops.warp(x, u, mode, padding_mode), (image, ddf), weight)
    theirs = _run(Warp(mode, padding_mode), (image, ddf), weight)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_warp_default_is_monai_default(brain_slice):
    ddf = smooth_field(1, 2, brain_slice.shape[2:], scale=8.0, dtype=torch.float64)
    torch.testing.assert_close(ops.warp(brain_slice, ddf), Warp()(brain_slice, ddf), rtol=0, atol=0)


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("padding_mode", ["border", "zeros", "reflection"])
def test_warp_gradcheck(ndim, padding_mode):
    spatial = SPATIAL[ndim]
    image = torch.randn(1, 2, *spatial, dtype=torch.float64, requires_grad=True)
    ddf = smooth_field(1, ndim, spatial, scale=2.5, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, u: ops.warp(x, u, padding_mode=padding_mode), (image, ddf))


def test_warp_translation_is_a_shift():
    image = torch.randn(1, 1, 10, 12, dtype=torch.float64)
    ddf = torch.zeros(1, 2, 10, 12, dtype=torch.float64)
    ddf[:, 0] = 2.0  # move along axis 0 (rows): out[i, j] = image[i + 2, j]
    ddf[:, 1] = -1.0  # and along axis 1: out[i, j] = image[i + 2, j - 1]
    out = ops.warp(image, ddf, padding_mode="zeros")
    torch.testing.assert_close(out[0, 0, :8, 1:], image[0, 0, 2:, :-1])
    assert torch.all(out[0, 0, 8:] == 0) and torch.all(out[0, 0, :, 0] == 0)


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("steps", [0, 1, 7])
@pytest.mark.parametrize("padding_mode", ["zeros", "border", "reflection"])
def test_exp_matches_monai(ndim, steps, padding_mode):
    spatial = SPATIAL[ndim]
    svf = smooth_field(2, ndim, spatial, scale=3.0)
    weight = torch.randn(2, ndim, *spatial)
    ours = _run(lambda v: ops.exp(v, steps, padding_mode=padding_mode), (svf,), weight)
    if steps == 0:
        torch.testing.assert_close(ours[0], svf)
        torch.testing.assert_close(ours[1], weight)
        return
    theirs = _run(DVF2DDF(steps, padding_mode=padding_mode), (svf,), weight)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_exp_default_is_monai_default():
    svf = smooth_field(1, 3, (8, 9, 7), scale=4.0, dtype=torch.float64)
    torch.testing.assert_close(ops.exp(svf), DVF2DDF()(svf), rtol=0, atol=0)


@pytest.mark.parametrize("ndim", [2, 3])
def test_exp_gradcheck(ndim):
    svf = smooth_field(1, ndim, SPATIAL[ndim], scale=3.0, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda v: ops.exp(v, steps=4), (svf,))


def test_exp_of_constant_velocity_is_the_translation():
    svf = torch.zeros(1, 3, 6, 7, 8, dtype=torch.float64)
    svf[:, 0], svf[:, 1], svf[:, 2] = 1.5, -0.75, 0.25
    torch.testing.assert_close(ops.exp(svf, padding_mode="border"), svf)


@pytest.mark.parametrize("ndim", [2, 3])
def test_compose_translations_add(ndim):
    spatial = SPATIAL[ndim]
    t1 = torch.randn(2, ndim, *([1] * ndim), dtype=torch.float64) * 3
    t2 = torch.randn(2, ndim, *([1] * ndim), dtype=torch.float64) * 3
    u1, u2 = t1.expand(2, ndim, *spatial), t2.expand(2, ndim, *spatial)
    torch.testing.assert_close(ops.compose(u1, u2), (t1 + t2).expand_as(u1))


@pytest.mark.parametrize("ndim", [2, 3])
def test_compose_with_zero_is_identity(ndim):
    u = smooth_field(2, ndim, SPATIAL[ndim], dtype=torch.float64)
    zero = torch.zeros_like(u)
    torch.testing.assert_close(ops.compose(u, zero), u)
    torch.testing.assert_close(ops.compose(zero, u), u)


@pytest.mark.parametrize("ndim", [2, 3])
def test_compose_exp_v_with_exp_minus_v_is_near_zero(ndim):
    spatial = (40, 44) if ndim == 2 else (24, 26, 22)
    v = smooth_field(1, ndim, spatial, scale=1.0, dtype=torch.float64)
    residual = ops.compose(ops.exp(v, padding_mode="border"), ops.exp(-v, padding_mode="border"))
    inner = residual[(slice(None), slice(None)) + (slice(4, -4),) * ndim]  # away from the padding
    assert inner.abs().max() < 0.03 * v.abs().max()
    assert residual.abs().mean() < 0.01 * v.abs().max()


def test_compose_matches_sequential_warps(brain_slice):
    """warp(warp(img, u1), u2) ~= warp(img, compose(u1, u2)) for smooth small fields."""
    u1 = smooth_field(1, 2, brain_slice.shape[2:], scale=4.0, dtype=torch.float64)
    u2 = smooth_field(1, 2, brain_slice.shape[2:], scale=4.0, dtype=torch.float64)
    sequential = ops.warp(ops.warp(brain_slice, u1), u2)
    composed = ops.warp(brain_slice, ops.compose(u1, u2))
    inner = (slice(None), slice(None), slice(16, -16), slice(16, -16))
    assert (sequential - composed)[inner].abs().mean() < 0.01


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("padding_mode", ["border", "zeros"])
def test_compose_gradcheck(ndim, padding_mode):
    spatial = SPATIAL[ndim]
    u1 = smooth_field(1, ndim, spatial, scale=2.0, dtype=torch.float64).requires_grad_()
    u2 = smooth_field(1, ndim, spatial, scale=2.0, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: ops.compose(a, b, padding_mode=padding_mode), (u1, u2))


def test_compose_matches_autograd_of_its_definition():
    u1 = smooth_field(2, 3, (6, 5, 7), scale=2.0)
    u2 = smooth_field(2, 3, (6, 5, 7), scale=2.0)
    weight = torch.randn_like(u1)
    ours = _run(ops.compose, (u1, u2), weight)
    warp = Warp(padding_mode="border")
    theirs = _run(lambda a, b: b + warp(a, b), (u1, u2), weight)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "call,error,match",
    [
        (lambda: ops.warp(torch.zeros(1, 1, 4, 4), torch.zeros(1, 3, 4, 4)), ValueError, r"ddf must have shape"),
        (lambda: ops.warp(torch.zeros(1, 1, 4, 4), torch.zeros(1, 2, 4, 5)), ValueError, r"\(1, 2, 4, 4\)"),
        (lambda: ops.warp(torch.zeros(2, 1, 4, 4), torch.zeros(3, 2, 4, 4)), ValueError, "image has batch size 2 and ddf 3"),
        (lambda: ops.warp(torch.zeros(1, 1, 4, 4), torch.zeros(1, 2, 4, 4).double()), TypeError, "dtype"),
        (lambda: ops.warp(torch.zeros(1, 1, 4, 4), torch.zeros(1, 2, 4, 4), mode="cubic"), ValueError, "mode"),
        (lambda: ops.warp(torch.zeros(1, 1, 4), torch.zeros(1, 1, 4)), ValueError, "image must have 4 or 5"),
        (lambda: ops.exp(torch.zeros(1, 2, 4, 4, 4)), ValueError, "svf must have shape"),
        (lambda: ops.exp(torch.zeros(1, 2, 4, 4), steps=-1), ValueError, "steps"),
        (lambda: ops.exp(torch.zeros(1, 2, 4, 4), steps=2.5), ValueError, "steps"),
        (lambda: ops.compose(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 3)), ValueError, "u2 must have shape"),
        (lambda: ops.compose(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 4)), ValueError, "u1 must have shape"),
        (lambda: ops.compose(torch.zeros(1, 2, 4, 4), [0]), TypeError, "u2 must be a torch.Tensor"),
    ],
)
def test_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()
