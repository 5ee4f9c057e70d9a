"""joint_histogram / global mutual information: parity with MONAI, gradients, chunking, edge cases."""

import math

import pytest
import torch
from monai.losses import GlobalMutualInformationLoss

from regnet import ops
from regnet.losses.mutual_information import GlobalMILoss, global_mutual_information
from regnet.ops._torch import joint_histogram as reference

REDUCTIONS = ("none", "mean", "sum")


def _value_and_grads(loss_fn, pred, target):
    pred = pred.detach().clone().requires_grad_()
    target = target.detach().clone().requires_grad_()
    value = loss_fn(pred, target)
    grads = torch.autograd.grad(value.sum(), (pred, target), allow_unused=True)
    return value.detach(), [torch.zeros_like(pred) if g is None else g for g in grads]


def _assert_close_grads(ours, theirs, rtol):
    for g, h in zip(ours, theirs):
        scale = h.abs().max().item() or 1.0
        torch.testing.assert_close(g, h, rtol=0, atol=rtol * scale)


def _compare_with_monai(pred, target, kernel, num_bins, sigma_ratio=0.5):
    # MONAI's b-spline target marginal is a float32 mean even for float64 inputs.
    f64 = pred.dtype == torch.float64 and kernel == "gaussian"
    for reduction in REDUCTIONS:
        monai = GlobalMutualInformationLoss(kernel_type=kernel, num_bins=num_bins, sigma_ratio=sigma_ratio,
                                            reduction=reduction)
        ours = GlobalMILoss(num_bins=num_bins, kernel=kernel, sigma_ratio=sigma_ratio, reduction=reduction)
        if reduction == "mean":  # the gradients of the other reductions follow from the values
            value, grads = _value_and_grads(ours, pred, target)
            expected, expected_grads = _value_and_grads(monai, pred, target)
            _assert_close_grads(grads, expected_grads, 1e-9 if f64 else 2e-4)
        else:
            value, expected = ours(pred, target), monai(pred, target)
        assert value.shape == expected.shape
        torch.testing.assert_close(value, expected, rtol=1e-10 if f64 else 2e-5, atol=1e-12 if f64 else 2e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(1, 1, 12, 13), (2, 1, 7, 8, 9), (2, 2, 10, 11), (1, 1, 6, 7, 5)])
def test_gaussian_matches_monai(dtype, shape):
    # Some intensities outside [0, 1] exercise the clamp (zero gradient there, as MONAI).
    pred = torch.rand(shape, dtype=dtype) * 1.2 - 0.1
    target = 0.6 * pred + 0.4 * torch.rand(shape, dtype=dtype)
    _compare_with_monai(pred, target, "gaussian", num_bins=16)


def test_gaussian_matches_monai_other_bins_and_sigma():
    pred = torch.rand(2, 1, 9, 10, dtype=torch.float64)
    target = (pred + 0.3 * torch.rand_like(pred)).clamp(0, 1)
    _compare_with_monai(pred, target, "gaussian", num_bins=23, sigma_ratio=1.3)
    _compare_with_monai(pred, target, "gaussian", num_bins=7, sigma_ratio=0.25)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(1, 1, 14, 15), (1, 1, 7, 8, 9), (1, 2, 9, 8)])
def test_bspline_matches_monai(dtype, shape):
    # Any intensity range; the b-spline bins follow the image min and max.
    pred = torch.randn(shape, dtype=dtype) * 40 + 100
    target = 0.5 * pred + 20 * torch.randn(shape, dtype=dtype)
    _compare_with_monai(pred, target, "b-spline", num_bins=12)


def test_bspline_default_bins_matches_monai():
    pred = torch.rand(1, 1, 9, 8, 7, dtype=torch.float64)
    target = torch.sin(4 * pred) + 0.1 * torch.rand_like(pred)
    _compare_with_monai(pred, target, "b-spline", num_bins=32)


def test_bspline_ties_at_min_and_max_match_monai():
    """Tied extremes share the min/max gradient evenly, as torch.min()/torch.max() in MONAI."""
    pred = torch.rand(1, 1, 8, 9, dtype=torch.float64) * 0.8 + 0.1
    pred[0, 0, 0, :3] = 0.0  # three tied minima (min 0: MONAI's bin origin is exact there)
    pred[0, 0, 5, 2] = pred[0, 0, 7, 7] = 1.0  # two tied maxima
    target = pred**2 + 0.2 * torch.rand_like(pred)
    _compare_with_monai(pred, target, "b-spline", num_bins=10)


def test_bspline_batch_items_are_independent():
    """regnet places the b-spline bins per item: B=2 equals two B=1 calls (MONAI: whole batch)."""
    pred = torch.rand(2, 1, 9, 10, dtype=torch.float64)
    pred[1] = pred[1] * 30 - 5  # a different intensity range in the second item
    target = pred + 0.5 * torch.rand_like(pred) * pred.amax(dim=(1, 2, 3), keepdim=True)
    loss = GlobalMILoss(num_bins=12, kernel="b-spline", reduction="none")
    value, grads = _value_and_grads(loss, pred, target)
    for b in range(2):
        value_b, grads_b = _value_and_grads(loss, pred[b : b + 1], target[b : b + 1])
        torch.testing.assert_close(value[b : b + 1], value_b, rtol=1e-12, atol=1e-14)
        _assert_close_grads([g[b : b + 1] for g in grads], grads_b, 1e-12)
    monai = GlobalMutualInformationLoss(kernel_type="b-spline", num_bins=12, reduction="none")(pred, target)
    assert not torch.allclose(monai, value)  # the documented deviation: MONAI shares one range


def test_joint_histogram_is_a_distribution_with_monai_marginals():
    pred = torch.rand(2, 1, 10, 9, dtype=torch.float64)
    target = torch.rand_like(pred)
    monai = GlobalMutualInformationLoss(kernel_type="gaussian", num_bins=16)
    _, pa, _, pb = monai.parzen_windowing(pred, target)
    pab = ops.joint_histogram(pred, target, 16)
    assert pab.shape == (2, 16, 16)
    torch.testing.assert_close(pab.sum(dim=(1, 2)), torch.ones(2, dtype=torch.float64))
    torch.testing.assert_close(pab.sum(2), pa[:, 0])
    torch.testing.assert_close(pab.sum(1), pb[:, 0])


@pytest.mark.parametrize("kernel", ["gaussian", "b-spline"])
def test_gradcheck(kernel):
    """float64 gradcheck on tiny inputs, both inputs, B=2 (b-spline: per-item min/max routing)."""
    pred = (torch.rand(2, 1, 3, 4, dtype=torch.float64) * 0.9 + 0.05).requires_grad_()
    target = (torch.rand(2, 1, 3, 4, dtype=torch.float64) * 0.9 + 0.05).requires_grad_()
    weights = torch.randn(2, 8, 8, dtype=torch.float64)

    def fn(p, t):
        weighted = (ops.joint_histogram(p, t, 8, kernel) * weights).sum(dim=(1, 2))
        return torch.cat([weighted, global_mutual_information(p, t, 8, kernel, sigma_ratio=0.8)])

    assert torch.autograd.gradcheck(fn, (pred, target))


@pytest.mark.parametrize("kernel", ["gaussian", "b-spline"])
def test_chunking_changes_nothing(kernel, monkeypatch):
    pred = torch.rand(2, 2, 6, 7, 5, dtype=torch.float64)
    target = (pred + 0.4 * torch.rand_like(pred)) / 1.4
    weights = torch.randn(2, 10, 10, dtype=torch.float64)

    def run():
        p, t = pred.clone().requires_grad_(), target.clone().requires_grad_()
        pab = ops.joint_histogram(p, t, 10, kernel)
        grads = torch.autograd.grad((pab * weights).sum(), (p, t))
        return pab, grads

    one_chunk = run()
    monkeypatch.setattr(reference, "CHUNK", 7)  # 3 samples per item and chunk, a ragged last chunk
    many_chunks = run()
    torch.testing.assert_close(many_chunks[0], one_chunk[0], rtol=1e-12, atol=1e-15)
    for g, h in zip(many_chunks[1], one_chunk[1]):
        torch.testing.assert_close(g, h, rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("kernel", ["gaussian", "b-spline"])
@pytest.mark.parametrize("which", ["pred", "target", "both"])
def test_constant_images_give_no_nan(kernel, which):
    shape = (2, 1, 6, 7)
    pred = torch.rand(shape) * 0.8 + 0.1
    target = torch.rand(shape) * 0.8 + 0.1
    if which in ("pred", "both"):
        pred = torch.full(shape, 0.3)
    if which in ("target", "both"):
        target = torch.full(shape, 0.7)
    value, grads = _value_and_grads(GlobalMILoss(num_bins=12, kernel=kernel, reduction="none"), pred, target)
    assert torch.isfinite(value).all() and all(torch.isfinite(g).all() for g in grads)
    # One constant image is independent of anything: MI = 0 (up to the smoothing terms).
    torch.testing.assert_close(value, torch.zeros(2), rtol=0, atol=1e-5)
    if kernel == "b-spline" and which != "target":
        assert (grads[0] == 0).all()  # no bin size to differentiate through


@pytest.mark.parametrize("kernel", ["gaussian", "b-spline"])
def test_nan_propagates_to_its_own_item_only(kernel):
    """No finiteness checks in ops: a NaN gives a NaN MI for its item (as MONAI), never a bad index."""
    pred = torch.rand(2, 1, 5, 6)
    pred[0, 0, 1, 1] = math.nan
    value, grads = _value_and_grads(GlobalMILoss(num_bins=8, kernel=kernel, reduction="none"),
                                    pred, torch.rand(2, 1, 5, 6))
    assert value[0].isnan() and value[1].isfinite() and grads[0][1].isfinite().all()


def test_small_sigma_does_not_underflow():
    """MONAI's float32 gaussian weights all underflow for sigma_ratio=0.02 (NaN); ours do not."""
    pred, target = torch.rand(1, 1, 8, 9), torch.rand(1, 1, 8, 9)
    monai = GlobalMutualInformationLoss(num_bins=32, sigma_ratio=0.02)
    assert monai(pred, target).isnan()
    expected = monai(pred.double(), target.double())  # float64 does not underflow here
    ours = GlobalMILoss(num_bins=32, sigma_ratio=0.02)(pred, target)
    torch.testing.assert_close(ours.double(), expected, rtol=1e-5, atol=1e-6)


def test_bspline_offset_and_scale_invariance():
    # Dyadic intensities (steps 2**-12, 2**-13): the shifted and scaled images below are exact in float32.
    pred = torch.randint(0, 4096, (1, 1, 12, 11, 10)).float() / 4096
    target = torch.randint(0, 4096, (1, 1, 12, 11, 10)).float() / 4096
    target = (target + pred) / 2
    loss = GlobalMILoss(num_bins=16, kernel="b-spline")
    value, grads = _value_and_grads(loss, pred, target)
    shifted, shifted_grads = _value_and_grads(loss, pred + 1024, target - 512)
    torch.testing.assert_close(shifted, value, rtol=1e-6, atol=1e-7)
    _assert_close_grads(shifted_grads, grads, 1e-5)
    scaled, scaled_grads = _value_and_grads(loss, 8 * pred + 512, target)
    torch.testing.assert_close(scaled, value, rtol=1e-6, atol=1e-7)
    _assert_close_grads([8 * scaled_grads[0]], [grads[0]], 1e-5)
    # float64 with an arbitrary offset.
    p64, t64 = pred.double(), target.double()
    torch.testing.assert_close(
        global_mutual_information(p64 + 12345.678, t64 - 987.654, 16, "b-spline"),
        global_mutual_information(p64, t64, 16, "b-spline"),
        rtol=1e-9, atol=0,
    )


def test_identical_images_mi_is_the_entropy():
    """With one-hot weights (intensities on the bin centres, narrow gaussian) MI(x, x) = H(x)."""
    num_bins = 8
    labels = torch.randint(0, num_bins, (2, 1, 9, 10))
    image = labels.double() / (num_bins - 1)
    mi = global_mutual_information(image, image, num_bins, "gaussian", sigma_ratio=0.05,
                                   smooth_nr=1e-12, smooth_dr=1e-12)
    counts = torch.stack([torch.bincount(labels[b].flatten(), minlength=num_bins) for b in range(2)]).double()
    p = counts / counts.sum(1, keepdim=True)
    entropy = -(p * torch.log(torch.where(p > 0, p, 1))).sum(1)
    torch.testing.assert_close(mi, entropy, rtol=1e-8, atol=0)


@pytest.mark.parametrize("kernel", ["gaussian", "b-spline"])
def test_identical_images_mi_is_bounded_by_the_marginal_entropies(kernel):
    x = torch.rand(1, 1, 12, 12, 12, dtype=torch.float64)
    pab = ops.joint_histogram(x, x, 16, kernel)
    mi = global_mutual_information(x, x, 16, kernel, smooth_nr=0.0, smooth_dr=1e-30)
    for p in (pab.sum(2), pab.sum(1)):
        entropy = -(p * torch.log(torch.where(p > 0, p, 1))).sum(1)
        assert (mi <= entropy + 1e-12).all()
    shuffled = x.flatten()[torch.randperm(x.numel())].reshape(x.shape)
    assert (mi > 5 * global_mutual_information(x, shuffled, 16, kernel)).all()


def test_half_precision_is_accumulated_in_float32():
    pred = torch.rand(1, 1, 10, 10)
    target = (pred + torch.rand_like(pred)) / 2
    expected = ops.joint_histogram(pred, target, 8)
    pab = ops.joint_histogram(pred.bfloat16(), target.bfloat16(), 8)
    assert pab.dtype == torch.bfloat16
    torch.testing.assert_close(pab.float(), expected, rtol=0.02, atol=2e-3)


def test_backward_saves_only_the_inputs():
    pred = torch.rand(1, 1, 16, 16, 16, requires_grad=True)
    target = torch.rand(1, 1, 16, 16, 16)
    saved = []

    def pack(t):
        saved.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        GlobalMILoss(num_bins=32)(pred, target)
    # the two images, then a few (B, bins, bins) tensors of the MI formula
    assert sum(saved) <= 2 * pred.numel() + 20 * 32 * 32


def test_module_holds_only_configuration():
    loss = GlobalMILoss(num_bins=20, kernel="b-spline", reduction="sum")
    assert not list(loss.parameters()) and not list(loss.buffers()) and not loss.state_dict()
    assert "num_bins=20" in repr(loss)


def test_backend_choice():
    x = torch.rand(1, 1, 5, 5)
    torch.testing.assert_close(ops.joint_histogram(x, x, backend="torch"), ops.joint_histogram(x, x))
    # the Triton kernel (run by the interpreter on the CPU) gives the same histogram
    torch.testing.assert_close(ops.joint_histogram(x, x, backend="triton"), ops.joint_histogram(x, x),
                               rtol=1e-5, atol=1e-6)


_X = torch.zeros(1, 1, 4, 4)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"pred": _X, "target": torch.zeros(1, 1, 4, 5)}, ValueError, "target must have the shape"),
        ({"pred": _X.numpy(), "target": _X}, TypeError, "pred must be a torch.Tensor"),
        ({"pred": torch.zeros(4, 4), "target": torch.zeros(4, 4)}, ValueError, "pred must have 3, 4 or 5"),
        ({"pred": _X.int(), "target": _X.int()}, TypeError, "pred must have a floating dtype"),
        ({"pred": _X, "target": _X.double()}, TypeError, "target has dtype"),
        ({"pred": _X, "target": _X.to("meta")}, ValueError, "target is on meta"),
        ({"pred": _X, "target": _X, "num_bins": 1}, ValueError, "num_bins must be an int >= 2"),
        ({"pred": _X, "target": _X, "num_bins": 8.0}, ValueError, "num_bins"),
        ({"pred": _X, "target": _X, "num_bins": 4, "kernel": "b-spline"}, ValueError, "num_bins must be an int >= 5"),
        ({"pred": _X, "target": _X, "kernel": "parzen"}, ValueError, "kernel must be one of"),
        ({"pred": _X, "target": _X, "sigma_ratio": 0}, ValueError, "sigma_ratio"),
        ({"pred": _X, "target": _X, "sigma_ratio": math.nan}, ValueError, "sigma_ratio"),
    ],
)
def test_bad_inputs(kwargs, error, match):
    with pytest.raises(error, match=match):
        ops.joint_histogram(**kwargs)
    if "pred" in kwargs and isinstance(kwargs["pred"], torch.Tensor) and kwargs["pred"].dim() == 4:
        options = {k: v for k, v in kwargs.items() if k not in ("pred", "target")}
        with pytest.raises(error, match=match.split()[0]):
            GlobalMILoss(**options)(kwargs["pred"], kwargs["target"])


@pytest.mark.parametrize(
    "kwargs,match",
    [({"reduction": "max"}, "reduction"), ({"smooth_nr": -1.0}, "smooth_nr"), ({"smooth_dr": math.inf}, "smooth_dr")],
)
def test_bad_loss_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GlobalMILoss(**kwargs)
    if "reduction" not in kwargs:
        with pytest.raises(ValueError, match=match):
            global_mutual_information(_X, _X, **kwargs)
