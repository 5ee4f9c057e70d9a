"""local_ncc / LocalNCCLoss against MONAI and torchreg: values, gradients, gradcheck,
constant images and large intensity offsets; the op's own reduction (reference backend)."""

import pytest
import torch
from monai.losses import LocalNormalizedCrossCorrelationLoss
from torchreg.metrics import NCC

from regnet import ops
from regnet.losses.local_ncc import LocalNCCLoss, local_ncc_loss

SPATIAL = {1: (23,), 2: (14, 13), 3: (9, 10, 8)}


def _pair(ndim, dtype=torch.float32, batch=2, channels=2):
    pred = torch.rand(batch, channels, *SPATIAL[ndim], dtype=dtype)
    target = 0.6 * pred + 0.4 * torch.rand_like(pred)
    return pred, target


def _value_and_grads(loss, pred, target):
    p, t = pred.clone().requires_grad_(), target.clone().requires_grad_()
    value = loss(p, t)
    weight = torch.linspace(0.5, 1.5, value.numel(), dtype=value.dtype).reshape(value.shape)
    (value * weight).sum().backward()
    return value, p.grad, t.grad


@pytest.mark.parametrize("ndim", [1, 2, 3])
@pytest.mark.parametrize("kernel_type", ["rectangular", "gaussian", "triangular"])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_matches_monai(ndim, kernel_type, reduction):
    pred, target = _pair(ndim)
    ours = _value_and_grads(LocalNCCLoss(5, kernel_type, reduction), pred, target)
    monai = LocalNormalizedCrossCorrelationLoss(ndim, 5, kernel_type, reduction)
    theirs = _value_and_grads(monai, pred, target)
    for a, b in zip(ours, theirs):  # both float32, summed in different orders
        torch.testing.assert_close(a, b, rtol=1e-4, atol=3e-5)


@pytest.mark.parametrize("kernel_size", [7, 9])
def test_matches_monai_on_real_brain_float64(brain_slice, kernel_size):
    moving = torch.roll(brain_slice, shifts=(3, -2), dims=(2, 3))
    ours = _value_and_grads(LocalNCCLoss(kernel_size, "gaussian", "sum"), moving, brain_slice)
    theirs = _value_and_grads(LocalNormalizedCrossCorrelationLoss(2, kernel_size, "gaussian", "sum"), moving, brain_slice)
    # Near-constant background voxels sit on MONAI's variance clamp; there the two float64
    # computations (centred vs raw sums) may fall on different sides of it.
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_matches_torchreg_ncc():
    pred, target = _pair(3, batch=1, channels=1)
    ours = _value_and_grads(LocalNCCLoss(7, convention="torchreg"), pred, target)
    theirs = _value_and_grads(NCC(kernel_size=7), pred, target)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("convention", ["monai", "torchreg"])
@pytest.mark.parametrize("kernel_type", ["rectangular", "gaussian"])
@pytest.mark.parametrize("ndim", [2, 3])
def test_gradcheck(convention, kernel_type, ndim):
    pred, target = _pair(ndim, torch.float64, batch=1, channels=1)
    crop = (Ellipsis,) + (slice(0, 5),) * ndim
    pred = pred[crop].clone().requires_grad_()
    target = target[crop].clone().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda p, t: ops.local_ncc(p, t, 3, kernel_type, 1e-6, 1e-5, convention), (pred, target)
    )


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_op_reduction_equals_the_reduced_map(ndim, reduction):
    """``local_ncc(..., reduction=)`` equals ``map.mean()`` / ``map.sum()`` and its gradients
    equal autograd through them (the backward expands the scalar gradient)."""
    for dtype, tol in ((torch.float32, {"rtol": 1e-6, "atol": 1e-7}), (torch.float64, {"rtol": 1e-12, "atol": 1e-14})):
        pred, target = _pair(ndim, dtype)
        options = {"kernel_size": 5, "kernel_type": "gaussian", "backend": "torch"}
        results = []
        for fused in (True, False):
            p, t = pred.clone().requires_grad_(), target.clone().requires_grad_()
            if fused:
                value = ops.local_ncc(p, t, reduction=reduction, **options)
            else:
                value = getattr(ops.local_ncc(p, t, **options), reduction)()
            (value * -1.7).backward()
            results.append((value.detach(), p.grad, t.grad))
        assert results[0][0].shape == () and results[0][0].dtype == dtype
        for a, b in zip(*results):
            torch.testing.assert_close(a, b, **tol)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_gradcheck_reduced(reduction):
    pred, target = _pair(2, torch.float64, batch=2, channels=1)
    pred = pred[..., :5, :4].clone().requires_grad_()
    target = target[..., :5, :4].clone().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda p, t: ops.local_ncc(p, t, 3, "triangular", 1e-6, 1e-5, reduction=reduction), (pred, target)
    )


def test_bad_reduction():
    pred, target = _pair(2)
    with pytest.raises(ValueError, match=r"local_ncc: reduction must be one of \('none', 'mean', 'sum'\), got 'max'"):
        ops.local_ncc(pred, target, reduction="max")
    with pytest.raises(ValueError, match="reduction must be one of"):
        ops.local_ncc(pred, target, reduction=None)


def _relative_errors(pred, target, kernel_size=7):
    """Errors of regnet's float32 loss and gradient against MONAI in float64 on the same inputs."""
    exact = _value_and_grads(LocalNormalizedCrossCorrelationLoss(pred.dim() - 2, kernel_size), pred.double(), target.double())
    ours = _value_and_grads(LocalNCCLoss(kernel_size), pred, target)
    value_error = abs(float(ours[0].detach()) - float(exact[0].detach()))
    grad_error = float((ours[1].double() - exact[1]).abs().max() / exact[1].abs().max())
    return value_error, grad_error


@pytest.mark.parametrize("offset", [0.0, 100.0, 1000.0])
def test_float32_accuracy_on_a_real_brain_with_intensity_offsets(brain_slice, offset):
    """Zero background (skull-stripped MRI) and large offsets (CT-like): MONAI's float32 sums
    cancel catastrophically at +100 already; regnet stays close to float64."""
    target = brain_slice.float() + offset
    pred = torch.roll(brain_slice.float(), shifts=(2, -1), dims=(2, 3)) + offset
    pred = pred + 0.01 * torch.randn_like(pred)
    value_error, grad_error = _relative_errors(pred, target)
    assert value_error < 1e-6 and grad_error < 1e-3


@pytest.mark.parametrize("offset", [100.0, 1000.0])
def test_large_intensity_offsets_stay_accurate_in_float32(offset):
    pred, target = _pair(3, batch=1, channels=1)
    exact = LocalNormalizedCrossCorrelationLoss(3, 7, reduction="none")((pred + offset).double(), (target + offset).double())
    ours = local_ncc_loss(pred + offset, target + offset, 7, reduction="none")
    torch.testing.assert_close(ours.double(), exact, rtol=1e-4, atol=1e-4)


def test_constant_images_give_finite_values_and_gradients():
    constant = torch.full((1, 1, 10, 11, 9), 0.7)
    moving = torch.rand(1, 1, 10, 11, 9, requires_grad=True)
    for pred, target in ((moving, constant), (constant.clone().requires_grad_(), constant)):
        value = local_ncc_loss(pred, target)
        value.backward()
        assert torch.isfinite(value) and torch.isfinite(pred.grad).all()


def test_identical_images_reach_minus_one_inside():
    image = torch.rand(1, 1, 20, 20)
    value = local_ncc_loss(image, image, 5, reduction="none")
    torch.testing.assert_close(value, torch.full_like(value, -1.0), rtol=1e-4, atol=1e-4)


def test_backward_keeps_only_the_inputs():
    pred, target = _pair(3)
    pred.requires_grad_()
    ncc = ops.local_ncc(pred, target)
    big = [t for t in ncc.grad_fn.saved_tensors if t.numel() == pred.numel()]
    assert len(big) == 2


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"kernel_size": 4}, ValueError, "kernel_size must be a positive odd int"),
        ({"kernel_type": "box"}, ValueError, "kernel_type"),
        ({"convention": "voxelmorph"}, ValueError, "convention"),
        ({"reduction": "max"}, ValueError, "reduction"),
        ({"smooth_dr": -1.0}, ValueError, "smooth_dr"),
    ],
)
def test_bad_options(kwargs, error, match):
    pred, target = _pair(2)
    with pytest.raises(error, match=match):
        local_ncc_loss(pred, target, **kwargs)


def test_bad_inputs():
    pred, target = _pair(2)
    with pytest.raises(ValueError, match="target must have the shape"):
        local_ncc_loss(pred, target[..., :-1])
    with pytest.raises(TypeError, match="dtype"):
        local_ncc_loss(pred, target.double())
    with pytest.raises(ValueError, match="pred must have 3, 4 or 5"):
        local_ncc_loss(pred[0, 0], target[0, 0])
