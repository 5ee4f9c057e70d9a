"""Metrics: Dice per label (numpy and MONAI), Jacobian statistics (analytic fields), HD95 (MONAI)."""

import math

import numpy as np
import pytest
import torch

from regnet import ops
from regnet.metrics import dice_per_label, hausdorff95, jacobian_stats, mean_dice

monai_metrics = pytest.importorskip("monai.metrics")
ndimage = pytest.importorskip("scipy.ndimage")
from monai.networks.utils import one_hot  # noqa: E402

pytestmark = [
    pytest.mark.filterwarnings("ignore:the (ground truth|prediction) of class"),
    pytest.mark.filterwarnings("ignore:monai.metrics.utils get_mask_edges:FutureWarning"),
]

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def blobs(spatial, n_labels, seed, batch=1):
    """Random smooth label map (batch, 1, *spatial) with labels 0..n_labels."""
    rng = np.random.default_rng(seed)
    maps = []
    for _ in range(batch):
        noise = np.stack([ndimage.gaussian_filter(rng.standard_normal(spatial), 1.5) for _ in range(n_labels + 1)])
        maps.append(noise.argmax(0))
    return torch.from_numpy(np.stack(maps))[:, None]


def numpy_dice(a, b, label):
    a, b = np.asarray(a) == label, np.asarray(b) == label
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


# ---------------------------------------------------------------- Dice

@pytest.mark.parametrize("spatial", [(20, 17), (9, 10, 8)])
@pytest.mark.parametrize("device", DEVICES)
def test_dice_per_label_matches_numpy_and_monai(spatial, device):
    pred, target = blobs(spatial, 4, 1), blobs(spatial, 4, 2)
    scores = dice_per_label(pred.to(device), target.to(device))
    present = sorted(set(np.unique(pred)) & set(np.unique(target)) - {0})
    assert list(scores) == present
    for label, value in scores.items():
        assert value == pytest.approx(numpy_dice(pred, target, label), rel=1e-12)
    ref = monai_metrics.compute_dice(one_hot(pred, 5), one_hot(target, 5), include_background=False)[0]
    for label, value in scores.items():
        assert value == pytest.approx(ref[label - 1].item(), rel=1e-6)
    assert mean_dice(pred, target) == pytest.approx(np.mean(list(scores.values())))


def test_dice_skips_labels_absent_from_either_image():
    pred = torch.tensor([[1, 1, 2, 0], [3, 3, 0, 0], [0, 0, 0, 0]])
    target = torch.tensor([[1, 0, 0, 0], [0, 3, 3, 0], [4, 0, 0, 0]])
    # label 2 only in pred, 4 only in target, 5 in neither: skipped.
    scores = dice_per_label(pred, target, labels=[5, 3, 1, 2, 4])
    assert scores == {3: pytest.approx(0.5), 1: pytest.approx(2 / 3)}
    assert list(scores) == [3, 1]  # the order of `labels`
    assert mean_dice(pred, target, [5, 3, 1, 2, 4]) == pytest.approx((0.5 + 2 / 3) / 2)
    assert math.isnan(mean_dice(pred, target, [2, 4, 5]))
    assert dice_per_label(pred, target, labels=[0]) == {0: pytest.approx(2 * 5 / (7 + 8))}


def test_dice_batch_is_mean_over_pairs_where_present():
    pred, target = blobs((12, 11), 3, 3, batch=3), blobs((12, 11), 3, 4, batch=3)
    pred[1][pred[1] == 2] = 0  # label 2 absent from pair 1
    scores = dice_per_label(pred, target)
    for label, value in scores.items():
        per_pair = [numpy_dice(p, t, label) for p, t in zip(pred, target) if (p == label).any() and (t == label).any()]
        assert value == pytest.approx(np.mean(per_pair), rel=1e-12)
    # Unbatched (*spatial) input and float label maps are accepted.
    assert dice_per_label(pred[0, 0], target[0, 0].float()) == dice_per_label(pred[:1], target[:1])


# ---------------------------------------------------------------- Jacobian statistics

def _affine_field(A, spatial):
    coords = torch.stack(torch.meshgrid(*[torch.arange(n, dtype=torch.float64) for n in spatial], indexing="ij"))
    return torch.einsum("ij,j...->i...", A, coords)[None] + 0.7


@pytest.mark.parametrize("ndim", [2, 3])
def test_jacobian_stats_of_affine_field(ndim):
    A = torch.diag(torch.tensor([0.2, -0.1, 0.3][:ndim], dtype=torch.float64))
    A[0, 1] = 0.05
    stats = jacobian_stats(_affine_field(A, (5, 6, 4)[:ndim]))
    det = torch.linalg.det(torch.eye(ndim, dtype=torch.float64) + A).item()
    assert stats["min"] == pytest.approx(det) and stats["max"] == pytest.approx(det)
    assert stats["mean"] == pytest.approx(det)
    assert stats["fraction_nonpositive"] == 0.0
    assert stats["std_log"] == pytest.approx(0.0, abs=1e-12)


def test_jacobian_stats_of_folding_fields():
    folded = jacobian_stats(_affine_field(torch.diag(torch.tensor([-2.0, 0.0], dtype=torch.float64)), (5, 5)))
    assert folded["fraction_nonpositive"] == 1.0 and math.isnan(folded["std_log"])
    assert folded["min"] == pytest.approx(-1.0)
    # A random field with some folding: compare with the statistics of jacobian_det directly.
    u = 0.8 * torch.randn(2, 3, 6, 5, 7, dtype=torch.float64)
    det = ops.jacobian_det(u)
    stats = jacobian_stats(u)
    assert 0 < stats["fraction_nonpositive"] < 1
    assert stats["fraction_nonpositive"] == pytest.approx((det <= 0).double().mean().item())
    assert stats["std_log"] == pytest.approx(np.std(np.log(det[det > 0].numpy())))
    assert (stats["min"], stats["max"], stats["mean"]) == pytest.approx(
        (det.min().item(), det.max().item(), det.mean().item())
    )


def test_jacobian_stats_bad_input():
    with pytest.raises(ValueError, match=r"jacobian_stats: ddf must have shape \(B, ndim, \*spatial\)"):
        jacobian_stats(torch.zeros(1, 3, 4, 4))
    with pytest.raises(ValueError, match="jacobian_stats: every spatial size of ddf must be >= 2"):
        jacobian_stats(torch.zeros(1, 2, 4, 1))


# ---------------------------------------------------------------- Hausdorff 95

def monai_hd(pred, target, labels, n_classes, **kwargs):
    """MONAI's HD95 per pair and label: (B, len(labels))."""
    hd = monai_metrics.compute_hausdorff_distance(
        one_hot(pred, n_classes), one_hot(target, n_classes), include_background=True, percentile=95, **kwargs
    )
    return hd[:, labels]


@pytest.mark.parametrize(
    "spatial, spacing", [((24, 21), None), ((24, 21), (0.7, 1.6)), ((12, 10, 11), None), ((12, 10, 11), 1.3)]
)
@pytest.mark.parametrize("device", DEVICES)
def test_hausdorff95_matches_monai(spatial, spacing, device):
    pred, target = blobs(spatial, 4, 5), blobs(spatial, 4, 6)
    result = hausdorff95(pred.to(device), target.to(device), spacing=spacing)
    labels = list(result)
    assert labels == [1, 2, 3, 4]
    ref = monai_hd(pred, target, labels, 5, spacing=spacing)[0]
    np.testing.assert_allclose(list(result.values()), ref.numpy(), rtol=1e-5)


def test_chunked_nearest_distances_match_brute_force():
    from regnet.metrics import _nearest_distances

    a, b = torch.randint(0, 20, (13, 3)).float(), torch.randint(0, 20, (23, 3)).float()
    d = ((a[:, None] - b[None]) ** 2).sum(-1).sqrt()
    for max_elements in (1, 100, 10**6):  # 1 row per chunk, 4 rows per chunk, one chunk
        a_to_b, b_to_a = _nearest_distances(a, b, max_elements)
        torch.testing.assert_close(a_to_b, d.min(1).values)
        torch.testing.assert_close(b_to_a, d.min(0).values)


def test_hausdorff_percentile_100_is_monai_max_and_labels_touching_border():
    pred, target = blobs((16, 15), 2, 7), blobs((16, 15), 2, 8)  # blobs reach the image border
    result = hausdorff95(pred, target, percentile=100)
    ref = monai_metrics.compute_hausdorff_distance(one_hot(pred, 3), one_hot(target, 3))[0]
    np.testing.assert_allclose(list(result.values()), ref.numpy(), rtol=1e-6)


def test_hausdorff95_empty_labels_and_batch():
    pred, target = blobs((14, 13), 3, 9, batch=3), blobs((14, 13), 3, 10, batch=3)
    pred[0][pred[0] == 1] = 0  # label 1 absent from pred of pair 0 -> inf there
    pred[1][pred[1] == 2] = 0
    target[1][target[1] == 2] = 0  # label 2 absent from both maps of pair 1 -> NaN there, skipped
    labels = [1, 2, 3, 5]  # 5 in no map -> NaN
    ref = monai_hd(pred, target, [1, 2, 3], 4)
    assert math.isnan(ref[1, 1])
    # MONAI quirk: a label in one map only gives inf without `percentile` but NaN with one
    # (torch.quantile of its all-inf distances); regnet gives inf.
    assert math.isnan(ref[0, 0])
    assert math.isinf(monai_metrics.compute_hausdorff_distance(one_hot(pred, 4), one_hot(target, 4))[0, 0])
    assert math.isinf(hausdorff95(pred[0, 0], target[0, 0], labels=[1])[1])
    result = hausdorff95(pred, target, labels=labels)
    assert math.isinf(result[1])
    assert result[2] == pytest.approx((ref[0, 1].item() + ref[2, 1].item()) / 2, rel=1e-5)
    assert result[3] == pytest.approx(ref[:, 2].mean().item(), rel=1e-5)
    assert math.isnan(result[5])
    # Per pair, the values are MONAI's.
    single = hausdorff95(pred[2, 0], target[2, 0], labels=[1, 2, 3])
    np.testing.assert_allclose(list(single.values()), ref[2].numpy(), rtol=1e-5)


def test_metrics_bad_input():
    a = torch.zeros(1, 1, 5, 5, dtype=torch.long)
    with pytest.raises(ValueError, match=r"hausdorff95: pred_labels and target_labels must have the same shape"):
        hausdorff95(a, torch.zeros(1, 1, 5, 6, dtype=torch.long))
    with pytest.raises(ValueError, match=r"dice_per_label: pred_labels must have shape \(B, 1, \*spatial\)"):
        dice_per_label(torch.zeros(1, 2, 5, 5, dtype=torch.long), a)
    with pytest.raises(ValueError, match="dice_per_label: target_labels is a float tensor with non-integer values"):
        dice_per_label(a, torch.full((1, 1, 5, 5), 0.5))
    with pytest.raises(ValueError, match="hausdorff95: spacing must be 2 positive numbers"):
        hausdorff95(a, a, spacing=(1.0, 0.0))
    with pytest.raises(ValueError, match=r"hausdorff95: every spatial size must be >= 2.*\(1, 5, 5\)"):
        hausdorff95(a[0], a[0])  # (1, H, W) is read as a 3D map of depth 1
    with pytest.raises(ValueError, match="hausdorff95: percentile must be a number in"):
        hausdorff95(a, a, percentile=150)
    with pytest.raises(ValueError, match="mean_dice|dice_per_label: labels must not repeat"):
        mean_dice(a, a, [1, 1])
