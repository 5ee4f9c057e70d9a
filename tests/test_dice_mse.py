"""MSE (torch parity, masks) and Dice (torchreg and MONAI parity, label maps, empty labels, bad input)."""

import pytest
import torch

from regnet.losses.dice import DiceLoss, dice_loss, dice_score
from regnet.losses.mse import MSELoss, mse

monai_losses = pytest.importorskip("monai.losses")
torchreg_metrics = pytest.importorskip("torchreg.metrics")
from monai.networks.utils import one_hot  # noqa: E402


def _grad(value, x, weight=None):
    weight = torch.randn_like(value) if weight is None else weight
    (grad,) = torch.autograd.grad((value * weight).sum(), x)
    return grad, weight


# ---------------------------------------------------------------- MSE

@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape", [(2, 3, 5, 6), (2, 1, 4, 5, 3)])
def test_mse_equals_torch_without_mask(reduction, shape):
    pred = torch.randn(shape, requires_grad=True)
    target = torch.randn(shape)
    value = mse(pred, target, reduction=reduction)
    ref = torch.nn.MSELoss(reduction=reduction)(pred, target)
    torch.testing.assert_close(value, ref)
    grad, weight = _grad(value, pred)
    torch.testing.assert_close(grad, _grad(ref, pred, weight)[0])
    torch.testing.assert_close(MSELoss(reduction)(pred, target), ref)


@pytest.mark.parametrize("mask_shape", [(2, 1, 5, 6), (2, 3, 5, 6), (1, 1, 5, 6)])
def test_mse_masked_mean_is_mean_over_masked_voxels(mask_shape):
    pred = torch.randn(2, 3, 5, 6, dtype=torch.float64)
    target = torch.randn(2, 3, 5, 6, dtype=torch.float64)
    mask = torch.rand(mask_shape) > 0.5
    full = mask.expand(pred.shape)
    expected = ((pred - target) ** 2)[full].mean()
    torch.testing.assert_close(mse(pred, target, mask), expected)
    torch.testing.assert_close(mse(pred, target, mask.double()), expected)
    torch.testing.assert_close(mse(pred, target, mask, reduction="sum"), ((pred - target) ** 2)[full].sum())
    none = MSELoss("none")(pred, target, mask)
    torch.testing.assert_close(none, (pred - target) ** 2 * full)


def test_mse_soft_mask_is_weighted_mean():
    pred, target = torch.randn(2, 2, 4, 5), torch.randn(2, 2, 4, 5)
    w = torch.rand(2, 1, 4, 5)
    expected = (w * (pred - target) ** 2).sum() / (w.sum() * 2)
    torch.testing.assert_close(mse(pred, target, w), expected)


def test_mse_all_zero_mask_gives_zero_without_nan():
    pred = torch.randn(1, 1, 4, 4, requires_grad=True)
    value = mse(pred, torch.randn(1, 1, 4, 4), torch.zeros(1, 1, 4, 4))
    (grad,) = torch.autograd.grad(value, pred)
    assert value.item() == 0.0
    assert torch.equal(grad, torch.zeros_like(grad))


def test_mse_bad_input():
    x = torch.zeros(2, 1, 4, 4)
    with pytest.raises(ValueError, match=r"mse: pred and target must have the same shape, got \(2, 1, 4, 4\)"):
        mse(x, torch.zeros(1, 1, 4, 4))
    with pytest.raises(ValueError, match=r"mse: mask must have shape \(B or 1, C or 1, \*spatial\).*got \(2, 1, 4, 3"):
        mse(x, x, torch.ones(2, 1, 4, 3))
    with pytest.raises(ValueError, match=r"mse: mask must have shape.*got \(4, 4\)"):
        mse(x, x, torch.ones(4, 4))
    with pytest.raises(TypeError, match="mse: mask must be a torch.Tensor or None"):
        mse(x, x, 1.0)
    with pytest.raises(TypeError, match="mse: target has dtype torch.float64 but pred has dtype torch.float32"):
        mse(x, x.double())
    with pytest.raises(ValueError, match="MSELoss: reduction must be one of"):
        MSELoss("max")


# ---------------------------------------------------------------- Dice: torchreg parity

@pytest.mark.parametrize("shape", [(2, 3, 6, 7), (2, 2, 4, 5, 6)])
def test_dice_equals_torchreg_without_smoothing(shape):
    x1 = torch.rand(shape, dtype=torch.float64, requires_grad=True)
    x2 = torch.rand(shape, dtype=torch.float64)
    score = dice_score(x1, x2, smooth_nr=0, smooth_dr=0)
    ref = torchreg_metrics.dice_score(x1, x2)
    torch.testing.assert_close(score, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(_grad(score, x1, 1.0)[0], _grad(ref, x1, 1.0)[0], rtol=1e-12, atol=1e-12)
    loss = DiceLoss(smooth_nr=0, smooth_dr=0)(x1, x2)
    torch.testing.assert_close(loss, torchreg_metrics.dice_loss(x1, x2), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dice_loss(x1, x2, smooth_nr=0, smooth_dr=0), loss)


def test_empty_channel_scores_one_where_torchreg_gives_nan():
    x1 = torch.rand(1, 2, 5, 5)
    x1[:, 1] = 0
    x2 = x1.clone()
    assert torch.isnan(torchreg_metrics.dice_score(x1, x2))
    per_channel = dice_score(x1, x2, smooth_nr=0, smooth_dr=0, reduction="none")
    assert per_channel[0, 1].item() == 1.0
    assert not torch.isnan(per_channel).any()
    assert dice_score(x1, x2, reduction="none")[0, 1].item() == 1.0  # MONAI smoothing: 1e-5 / 1e-5


# ---------------------------------------------------------------- Dice: MONAI parity

@pytest.mark.parametrize("include_background", [True, False])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("smooth", [(1e-5, 1e-5), (0.5, 1.0)])
@pytest.mark.parametrize("spatial", [(6, 7), (4, 5, 3)])
def test_dice_loss_equals_monai_on_probabilities_and_one_hot(include_background, reduction, smooth, spatial):
    logits = torch.randn(2, 4, *spatial, requires_grad=True)
    target = torch.randint(0, 4, (2, 1, *spatial))
    target[:, :, 0] = 0  # some labels may be absent
    kwargs = dict(include_background=include_background, smooth_nr=smooth[0], smooth_dr=smooth[1], reduction=reduction)
    ref = monai_losses.DiceLoss(**kwargs)(torch.softmax(logits, 1), one_hot(target, 4))
    ref_grad, weight = _grad(ref, logits)
    if reduction == "none":
        ref = ref.flatten(1)  # MONAI keeps singleton spatial dims: (B, C, 1, ..., 1)
    for target_form in (one_hot(target, 4), target):  # one-hot, or a label map one-hot encoded (to_onehot_y)
        value = DiceLoss(**kwargs)(torch.softmax(logits, 1), target_form)
        torch.testing.assert_close(value, ref)
        torch.testing.assert_close(_grad(value, logits, weight.view(value.shape))[0], ref_grad)
    prob = torch.softmax(logits, 1).detach()
    with_onehot_y = monai_losses.DiceLoss(to_onehot_y=True, **kwargs)(prob, target)
    torch.testing.assert_close(dice_loss(prob, target, **kwargs).flatten(), with_onehot_y.flatten())


@pytest.mark.parametrize("include_background", [True, False])
def test_integer_label_maps_equal_monai_on_one_hot(include_background):
    pred = torch.randint(0, 5, (2, 1, 6, 5, 4))
    target = torch.randint(0, 4, (2, 1, 6, 5, 4))
    target[target == 2] = 7
    labels = [0, 1, 2, 3, 4, 7, 9]  # 2 only in pred, 7 only in target, 9 in neither
    onehot_p, onehot_t = one_hot(pred, 10)[:, labels], one_hot(target, 10)[:, labels]
    ref = monai_losses.DiceLoss(include_background=include_background, reduction="none")(onehot_p, onehot_t)
    value = dice_loss(pred, target, include_background=include_background, labels=labels, reduction="none")
    torch.testing.assert_close(value, ref.flatten(1))
    assert not torch.isnan(value).any()
    assert torch.all(value[:, -1] == 0)  # label 9, absent from both, scores 1
    # Default labels: every value present in either map, sorted.
    present = sorted(set(pred.unique().tolist()) | set(target.unique().tolist()))
    torch.testing.assert_close(
        dice_score(pred, target, include_background=include_background),
        dice_score(pred, target, include_background=include_background, labels=present),
    )


def test_label_map_first_and_explicit_channel_labels():
    prob = torch.softmax(torch.randn(1, 3, 5, 6), 1)
    target = torch.randint(0, 3, (1, 1, 5, 6)) * 2  # labels 0, 2, 4
    value = dice_score(prob, target, labels=[0, 2, 4], reduction="none")
    ref = 1 - monai_losses.DiceLoss(reduction="none")(prob, one_hot(target // 2, 3)).flatten(1)
    torch.testing.assert_close(value, ref)
    torch.testing.assert_close(dice_score(target, prob, labels=[0, 2, 4], reduction="none"), value)
    # A one-channel float map: the label map is a binary mask, as MONAI.
    fg = torch.rand(1, 1, 5, 6)
    mask = torch.rand(1, 1, 5, 6) > 0.5
    torch.testing.assert_close(dice_loss(fg, mask), monai_losses.DiceLoss()(fg, mask.float()))


def test_dice_bad_input():
    prob = torch.rand(1, 3, 4, 4)
    labels = torch.randint(0, 3, (1, 1, 4, 4))
    with pytest.raises(ValueError, match="dice_score: labels applies to integer label maps only"):
        dice_score(prob, prob, labels=[0, 1, 2])
    with pytest.raises(ValueError, match=r"dice_loss: pred is an integer label map, so it must have shape \(B, 1,"):
        dice_loss(torch.randint(0, 3, (1, 2, 4, 4)), labels)
    with pytest.raises(ValueError, match="dice_score: labels must give the label of each of the 3 channels"):
        dice_score(prob, labels, labels=[0, 1])
    with pytest.raises(ValueError, match=r"dice_score: float pred and target must have the same shape"):
        dice_score(prob, torch.rand(1, 2, 4, 4))
    with pytest.raises(ValueError, match=r"dice_score: pred and target must have the same batch size and spatial"):
        dice_score(prob, torch.randint(0, 3, (1, 1, 4, 5)))
    with pytest.raises(ValueError, match="dice_score: pred must have shape \\(B, C, \\*spatial\\) with 2 or 3 spatial"):
        dice_score(torch.rand(4, 4), torch.rand(4, 4))
    with pytest.raises(ValueError, match="dice_score: no label to score"):
        dice_score(torch.zeros(1, 1, 4, 4, dtype=torch.long), torch.zeros(1, 1, 4, 4, dtype=torch.long),
                   include_background=False)
    with pytest.raises(ValueError, match="DiceLoss: labels must not repeat a value"):
        DiceLoss(labels=[1, 1])
    with pytest.raises(ValueError, match="dice_score: reduction must be one of"):
        dice_score(prob, prob, reduction="batch")
