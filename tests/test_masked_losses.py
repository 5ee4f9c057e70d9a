"""Masked similarity losses (ANTs' ``-x``): MSE, local NCC and MI with ``mask=``, on the
reference backend (the Triton kernels' weighted paths: ``tests/triton_kernels/test_triton_masked.py``).

Gradcheck in float64 (2D, 3D) of each masked loss w.r.t. both images; independent oracles:
masked MSE by hand, masked LNCC from MONAI's map (``reduction="none"``) weighted by hand, masked
MI from the voxels inside gathered into a 1-voxel-thick image (regnet's unmasked MI and MONAI's
``GlobalMutualInformationLoss``), integer soft weights as repeated voxels; all-zero masks;
masks broadcast over the batch and channels; per-item values for ``reduction="none"``; bad
masks and bad op weights.
"""

import pytest
import torch
from monai.losses import GlobalMutualInformationLoss, LocalNormalizedCrossCorrelationLoss

from regnet import _checks, ops
from regnet.losses import GlobalMILoss, LocalNCCLoss, MSELoss
from regnet.losses._reduce import masked_item_means
from regnet.losses.functional import global_mutual_information, local_ncc_loss, mse

SPATIAL = {2: (5, 6), 3: (4, 3, 5)}


def _pair(shape, dtype=torch.float64, kernel="gaussian"):
    pred = torch.rand(shape, dtype=dtype)
    target = 0.6 * pred + 0.4 * torch.rand(shape, dtype=dtype)
    if kernel == "b-spline":
        pred, target = pred * 30 - 7, target * 5 + 100
    return pred, target


def _hard_mask(shape, fraction=0.6):
    mask = torch.rand(shape) < fraction
    mask.view(-1)[0] = True  # never empty
    return mask


def _value_and_grads(fn, pred, target, mask, weight=None):
    a, b = pred.clone().requires_grad_(), target.clone().requires_grad_()
    value = fn(a, b, mask)
    if weight is None:
        weight = torch.linspace(0.5, 1.5, value.numel(), dtype=value.dtype).reshape(value.shape)
    (value * weight).sum().backward()
    return value.detach(), a.grad, b.grad


LOSSES = {
    "mse": MSELoss(),
    "lncc": LocalNCCLoss(kernel_size=3),
    "mi-gaussian": GlobalMILoss(num_bins=6),
    "mi-b-spline": GlobalMILoss(num_bins=7, kernel="b-spline"),
}


# ------------------------------------------------------------------------------- gradcheck

@pytest.mark.parametrize("ndim", (2, 3))
@pytest.mark.parametrize("name", tuple(LOSSES))
def test_gradcheck(name, ndim):
    loss = LOSSES[name]
    shape = (2, 1, *SPATIAL[ndim]) if ndim == 2 else (1, 2, *SPATIAL[ndim])
    pred, target = _pair(shape, kernel="b-spline" if "b-spline" in name else "gaussian")
    # soft weights with zeros, one per item (2D) / one for every channel (3D)
    mask = torch.rand(shape[0], 1, *SPATIAL[ndim], dtype=torch.float64) * _hard_mask((shape[0], 1, *SPATIAL[ndim]))
    a, b = pred.clone().requires_grad_(), target.clone().requires_grad_("b-spline" not in name)
    assert torch.autograd.gradcheck(lambda x, y: loss(x, y, mask), (a, b), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("reduction", ("none", "sum"))
def test_gradcheck_lncc_other_reductions(reduction):
    pred, target = _pair((1, 1, 5, 4))
    mask = _hard_mask((1, 1, 5, 4)).double()
    a, b = pred.clone().requires_grad_(), target.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda x, y: local_ncc_loss(x, y, 3, reduction=reduction, mask=mask), (a, b))


# ------------------------------------------------------------------------------- oracles

@pytest.mark.parametrize("mask_shape", [(2, 1, 5, 6), (2, 3, 5, 6), (1, 1, 5, 6)])
def test_mse_matches_formula(mask_shape):
    pred, target = _pair((2, 3, 5, 6))
    mask = torch.rand(mask_shape, dtype=torch.float64) * _hard_mask(mask_shape)
    w = mask.expand(pred.shape)
    err = (pred - target) ** 2
    torch.testing.assert_close(mse(pred, target, mask), (w * err).sum() / w.sum())
    torch.testing.assert_close(mse(pred, target, mask, "sum"), (w * err).sum())
    torch.testing.assert_close(mse(pred, target, mask, "none"), w * err)


@pytest.mark.parametrize("ndim", (2, 3))
@pytest.mark.parametrize("mask_shape", ["item", "channel", "shared"])
def test_lncc_matches_monai_map_weighted_by_hand(ndim, mask_shape):
    shape = (2, 2, *SPATIAL[ndim])
    pred, target = _pair(shape)
    mshape = {"item": (2, 1), "channel": (2, 2), "shared": (1, 1)}[mask_shape] + SPATIAL[ndim]
    mask = _hard_mask(mshape)
    w = mask.expand(shape).double()
    for kernel_type in ("rectangular", "gaussian"):
        monai_map = LocalNormalizedCrossCorrelationLoss(ndim, 3, kernel_type, reduction="none")(pred, target)
        for reduction, expected in (("mean", (w * monai_map).sum() / w.sum()), ("sum", (w * monai_map).sum()),
                                    ("none", w * monai_map)):
            value = LocalNCCLoss(3, kernel_type, reduction)(pred, target, mask)
            torch.testing.assert_close(value, expected, rtol=1e-9, atol=1e-12)


def test_lncc_window_sees_voxels_outside_the_mask():
    """Changing the image outside the mask changes the local NCC of masked voxels near the
    edge (the windowed sums see every voxel) but not far from it."""
    pred, target = _pair((1, 1, 9, 9))
    mask = torch.zeros(1, 1, 9, 9, dtype=torch.bool)
    mask[..., :4, :] = True
    changed = pred.clone()
    changed[..., 6:, :] = torch.rand(1, 1, 3, 9, dtype=torch.float64)
    loss = LocalNCCLoss(3, reduction="none")
    torch.testing.assert_close(loss(pred, target, mask), loss(changed, target, mask))  # rows 6.. are 3 rows away
    changed[..., 4, :] += 0.5
    assert not torch.allclose(loss(pred, target, mask)[..., 3, :], loss(changed, target, mask)[..., 3, :])


def _gathered(x, mask, item=0):
    """The voxels of item ``item`` inside a 0/1 mask (broadcast), as a (1, 1, n) image."""
    return x[item][mask.expand(x.shape)[item]].reshape(1, 1, -1)


@pytest.mark.parametrize("kernel", ("gaussian", "b-spline"))
@pytest.mark.parametrize("mask_shape", [(2, 1, 6, 7), (2, 2, 6, 7), (1, 1, 6, 7)])
def test_mi_equals_mi_of_the_voxels_inside(kernel, mask_shape):
    pred, target = _pair((2, 2, 6, 7), kernel=kernel)
    mask = _hard_mask(mask_shape)
    options = dict(num_bins=9, kernel=kernel)
    value, grad_pred, _ = _value_and_grads(lambda a, b, m: global_mutual_information(a, b, mask=m, **options),
                                           pred, target, mask)
    inside = mask.expand(pred.shape)
    for item in range(2):
        a = _gathered(pred, mask, item).requires_grad_()
        expected = global_mutual_information(a, _gathered(target, mask, item), **options)
        torch.testing.assert_close(value[item], expected[0], rtol=1e-10, atol=1e-12)
        weight = torch.linspace(0.5, 1.5, 2, dtype=torch.float64)[item]
        (grad,) = torch.autograd.grad(expected[0] * weight, a)
        torch.testing.assert_close(grad_pred[item][inside[item]], grad.reshape(-1), rtol=1e-9, atol=1e-12)
        assert (grad_pred[item][~inside[item]] == 0).all()


@pytest.mark.parametrize("kernel", ("gaussian", "b-spline"))
def test_mi_matches_monai_on_the_voxels_inside(kernel):
    pred, target = _pair((1, 1, 7, 8), kernel=kernel)
    mask = _hard_mask((1, 1, 7, 8))
    ours = GlobalMILoss(num_bins=10, kernel=kernel)(pred, target, mask)
    monai = GlobalMutualInformationLoss(kernel_type=kernel, num_bins=10)
    theirs = monai(_gathered(pred, mask), _gathered(target, mask))
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-9)


def test_integer_soft_weights_are_repeated_voxels():
    """Weights 0..3: MI as if each voxel appeared that many times; MSE / LNCC weighted means."""
    pred, target = _pair((1, 1, 6, 5))
    mask = torch.randint(0, 4, (1, 1, 6, 5))
    mask.view(-1)[0] = 2
    repeats = mask.reshape(-1)
    for kernel in ("gaussian", "b-spline"):
        p, t = (pred, target) if kernel == "gaussian" else (pred * 20 - 3, target)
        expected = global_mutual_information(p.reshape(-1).repeat_interleave(repeats)[None, None],
                                             t.reshape(-1).repeat_interleave(repeats)[None, None], 8, kernel)
        torch.testing.assert_close(global_mutual_information(p, t, 8, kernel, mask=mask), expected)
        torch.testing.assert_close(global_mutual_information(p, t, 8, kernel, mask=mask * 0.25), expected)
    w = mask.double()
    torch.testing.assert_close(mse(pred, target, mask), (w * (pred - target) ** 2).sum() / w.sum())
    ncc = ops.local_ncc(pred, target, 3)
    torch.testing.assert_close(local_ncc_loss(pred, target, 3, mask=mask), -(w * ncc).sum() / w.sum())


# ------------------------------------------------------------------------------- edge cases

@pytest.mark.parametrize("name", tuple(LOSSES))
def test_all_zero_mask_gives_zero_without_nan(name):
    loss = LOSSES[name]
    pred, target = _pair((2, 1, 5, 6), kernel="b-spline" if "b-spline" in name else "gaussian")
    mask = torch.zeros(1, 1, 5, 6)
    value, grad_pred, grad_target = _value_and_grads(loss, pred, target, mask)
    assert value.item() == 0.0
    assert torch.equal(grad_pred, torch.zeros_like(grad_pred))
    assert torch.equal(grad_target, torch.zeros_like(grad_target))
    # One empty item in a batch: it scores 0 with zero gradients, the other is unaffected.
    per_item = torch.stack([torch.zeros(1, 5, 6), torch.ones(1, 5, 6)])
    values = {}
    for reduction in ("none", "sum"):
        module = type(loss)(**{**_config(loss), "reduction": reduction})
        value, grad_pred, _ = _value_and_grads(module, pred, target, per_item, weight=1.0)
        assert grad_pred[0].abs().max() == 0 and grad_pred[1].abs().max() > 0 and not value.isnan().any()
        values[reduction] = value
    alone = type(loss)(**{**_config(loss), "reduction": "sum"})(pred[1:], target[1:])
    torch.testing.assert_close(values["sum"], alone)


def _config(loss):
    keys = {"MSELoss": (), "LocalNCCLoss": ("kernel_size",), "GlobalMILoss": ("num_bins", "kernel")}
    return {key: getattr(loss, key) for key in keys[type(loss).__name__]}


@pytest.mark.parametrize("name", tuple(LOSSES))
def test_masks_broadcast_over_batch_and_channels(name):
    loss = LOSSES[name]
    pred, target = _pair((2, 3, 5, 4), kernel="b-spline" if "b-spline" in name else "gaussian")
    mask = torch.rand(1, 1, 5, 4, dtype=torch.float64) * _hard_mask((1, 1, 5, 4))
    expected = _value_and_grads(loss, pred, target, mask.expand(2, 3, 5, 4).clone())
    for broadcast in (mask, mask.expand(2, 1, 5, 4).clone(), mask.expand(1, 3, 5, 4).clone()):
        for a, e in zip(_value_and_grads(loss, pred, target, broadcast), expected, strict=True):
            torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", tuple(LOSSES))
def test_mask_of_ones_equals_no_mask(name):
    loss = LOSSES[name]
    pred, target = _pair((2, 2, 4, 5), kernel="b-spline" if "b-spline" in name else "gaussian")
    for a, e in zip(_value_and_grads(loss, pred, target, torch.ones(1, 1, 4, 5, dtype=torch.bool)),
                    _value_and_grads(lambda p, t, m: loss(p, t), pred, target, None), strict=True):
        torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-14)


def test_mask_is_not_differentiated():
    pred, target = _pair((1, 1, 5, 5))
    mask = torch.rand(1, 1, 5, 5, dtype=torch.float64, requires_grad=True)
    for loss in LOSSES.values():
        a = pred.clone().requires_grad_()
        loss(a, target, mask).backward()
        assert a.grad is not None and mask.grad is None


def test_per_item_values_of_reduction_none():
    """What per-item losses of a batch (``regnet.registration._item_loss``) are built from:
    MI ``"none"`` gives ``(B,)``; MSE / LNCC ``"none"`` give ``mask * values`` per voxel, whose
    per-item masked means (:func:`masked_item_means`) equal the loss of each item alone."""
    pred, target = _pair((3, 2, 5, 4))
    mask = _hard_mask((3, 1, 5, 4))
    for loss in (LocalNCCLoss(3, reduction="none"), MSELoss("none")):
        items = masked_item_means(loss(pred, target, mask), mask)
        mean = type(loss)(**{**_config(loss), "reduction": "mean"})
        alone = torch.stack([mean(pred[i:i + 1], target[i:i + 1], mask[i:i + 1]) for i in range(3)])
        torch.testing.assert_close(items, alone)
        shared = mask[:1]
        torch.testing.assert_close(masked_item_means(loss(pred, target, shared), shared).mean(),
                                   mean(pred, target, shared))
    values = GlobalMILoss(8, reduction="none")(pred, target, mask)
    assert values.shape == (3,)
    torch.testing.assert_close(values[1], GlobalMILoss(8)(pred[1:2], target[1:2], mask[1:2]))


def test_value_check_reads_a_mask_once_per_version(monkeypatch):
    pred, target = _pair((1, 1, 4, 4))
    mask = torch.ones(1, 1, 4, 4)
    reads = []
    original = torch.isfinite
    monkeypatch.setattr(torch, "isfinite", lambda x: reads.append(1) or original(x))
    for _ in range(3):
        local_ncc_loss(pred, target, 3, mask=mask)
    assert len(reads) == 1
    mask[0, 0, 0, 0] = -1.0  # an in-place change is checked again
    with pytest.raises(ValueError, match="local_ncc_loss: mask must hold finite values >= 0"):
        local_ncc_loss(pred, target, 3, mask=mask)


# ------------------------------------------------------------------------------- bad input

BAD_MASKS = [
    (torch.ones(2, 1, 5, 4), ValueError, r"mask must have shape \(B or 1, C or 1, \*spatial\) = \(2 or 1, 3 or 1, "
                                         r"5, 5\) to go with pred \(2, 3, 5, 5\), got \(2, 1, 5, 4\)"),
    (torch.ones(3, 1, 5, 5), ValueError, r"mask must have shape .*, got \(3, 1, 5, 5\)"),
    (torch.ones(5, 5), ValueError, r"mask must have shape .*, got \(5, 5\)"),
    (torch.ones(1, 2, 5, 5), ValueError, r"mask must have shape .*, got \(1, 2, 5, 5\)"),
    (torch.ones(1, 1, 5, 5, device="meta"), ValueError, "mask is on meta but pred is on cpu"),
    (-torch.ones(1, 1, 5, 5), ValueError, r"mask must hold finite values >= 0 .*got a minimum of -1"),
    (torch.full((1, 1, 5, 5), float("nan")), ValueError, r"mask must hold finite values >= 0 .*got 25 NaN"),
    (torch.full((1, 1, 5, 5), float("inf")), ValueError, r"mask must hold finite values >= 0 .*got 25 NaN or inf"),
    (torch.ones(1, 1, 5, 5, dtype=torch.complex64), TypeError, "mask must be bool, integer or floating"),
    (torch.ones(1, 1, 5, 5).numpy(), TypeError, "mask must be a torch.Tensor or None, got ndarray"),
]


@pytest.mark.parametrize("mask, error, message", BAD_MASKS, ids=range(len(BAD_MASKS)))
def test_bad_masks(mask, error, message):
    pred, target = torch.rand(2, 3, 5, 5), torch.rand(2, 3, 5, 5)
    for fn, name in ((lambda p, t, m: mse(p, t, m), "mse"), (lambda p, t, m: local_ncc_loss(p, t, 3, mask=m),
                     "local_ncc_loss"), (lambda p, t, m: global_mutual_information(p, t, 8, mask=m),
                                         "global_mutual_information")):
        with pytest.raises(error, match=f"{name}: {message}"):
            fn(pred, target, mask)


def test_bad_op_weights():
    pred, target = torch.rand(2, 1, 5, 5), torch.rand(2, 1, 5, 5)
    for op in (ops.local_ncc, ops.joint_histogram):
        name = op.__name__
        with pytest.raises(TypeError, match=f"{name}: weight has dtype torch.float64 but pred has dtype torch.float32"):
            op(pred, target, weight=torch.ones(1, 1, 5, 5, dtype=torch.float64))
        with pytest.raises(ValueError, match=rf"{name}: weight must have shape .*, got \(1, 1, 5\)"):
            op(pred, target, weight=torch.ones(1, 1, 5))
        with pytest.raises(ValueError, match=f"{name}: weight requires grad"):
            op(pred, target, weight=torch.ones(1, 1, 5, 5, requires_grad=True))
        with pytest.raises(TypeError, match=f"{name}: weight must be a torch.Tensor or None"):
            op(pred, target, weight=1.0)
    assert _checks.voxel_weight("f", "w", torch.ones(1, 1, 5, 5), pred) is not None


def test_op_weight_multiplies_the_map_and_normalises_the_histogram():
    pred, target = _pair((2, 2, 5, 4))
    w = torch.rand(2, 1, 5, 4, dtype=torch.float64)
    ncc = ops.local_ncc(pred, target, 3)
    torch.testing.assert_close(ops.local_ncc(pred, target, 3, weight=w), ncc * w)
    torch.testing.assert_close(ops.local_ncc(pred, target, 3, reduction="mean", weight=w), (ncc * w).mean())
    pab = ops.joint_histogram(pred, target, 6, weight=w)
    torch.testing.assert_close(pab.sum((1, 2)), torch.ones(2, dtype=torch.float64))
    torch.testing.assert_close(ops.joint_histogram(pred, target, 6, weight=w * 7), pab)
