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


# ---------------------------------------------------------------- SDlogJ (usual and Learn2Reg's)

def numpy_det(u):
    """det(I + grad u) of one field (ndim, *spatial) with numpy.gradient (central inside, one-sided at the ends)."""
    ndim = u.shape[0]
    J = np.empty((ndim, ndim, *u.shape[1:]))
    for i in range(ndim):
        grads = np.gradient(u[i], axis=tuple(range(ndim)))
        grads = grads if isinstance(grads, (list, tuple)) else [grads]
        for j in range(ndim):
            J[i, j] = grads[j] + (i == j)
    return np.linalg.det(np.moveaxis(J, (0, 1), (-2, -1)))


def learn2reg_reference(u, mask=None):
    """The Learn2Reg evaluation's SDlogJ (MDL-UzL/L2R, evaluation/utils.py + evaluation.py), written
    out again: scipy.ndimage.correlate with [-0.5, 0, 0.5] (zero padding), crop 2, log(clip(det + 3))."""
    disp = u[None]  # (1, 3, H, W, D)
    kernels = [np.array([-0.5, 0, 0.5]).reshape(s) for s in ((1, 3, 1, 1), (1, 1, 3, 1), (1, 1, 1, 3))]
    grad = np.concatenate([
        np.stack([ndimage.correlate(disp[:, c], k, mode="constant", cval=0.0) for c in range(3)], axis=1)
        for k in kernels
    ], 0)
    jac = (grad + np.eye(3).reshape(3, 3, 1, 1, 1))[:, :, 2:-2, 2:-2, 2:-2]
    det = (jac[0, 0] * (jac[1, 1] * jac[2, 2] - jac[1, 2] * jac[2, 1])
           - jac[1, 0] * (jac[0, 1] * jac[2, 2] - jac[0, 2] * jac[2, 1])
           + jac[2, 0] * (jac[0, 1] * jac[1, 2] - jac[0, 2] * jac[1, 1]))
    log_det = np.log((det + 3).clip(1e-9, 1e9))
    if mask is None:
        return log_det.std()
    return np.ma.MaskedArray(log_det, 1 - mask[2:-2, 2:-2, 2:-2]).std()


def smooth_field(spatial, seed, amplitude):
    rng = np.random.default_rng(seed)
    u = np.stack([ndimage.gaussian_filter(rng.standard_normal(spatial), 1.5) for _ in spatial])
    return amplitude * u / np.abs(u).max()


@pytest.mark.parametrize("spatial", [(13, 11), (9, 10, 8)])
def test_sdlogj_matches_numpy_gradient_with_and_without_mask(spatial):
    from regnet.metrics import sdlogj

    u = smooth_field(spatial, 11, 4.0)  # strong enough to fold somewhere
    det = numpy_det(u)
    assert (det <= 0).any() and (det > 0).any()
    assert sdlogj(torch.from_numpy(u)[None]) == pytest.approx(np.log(det[det > 0]).std(), rel=1e-10)
    mask = np.zeros(spatial, dtype=bool)
    mask[2:-3, 1:-2] = True
    inside = det[mask & (det > 0)]
    for m in (torch.from_numpy(mask), torch.from_numpy(mask)[None, None].int(), torch.from_numpy(mask).double()):
        assert sdlogj(torch.from_numpy(u)[None], mask=m) == pytest.approx(np.log(inside).std(), rel=1e-10)
    # jacobian_stats with the same mask: every statistic inside the mask only
    stats = jacobian_stats(torch.from_numpy(u)[None], mask=torch.from_numpy(mask))
    assert stats["std_log"] == pytest.approx(np.log(inside).std(), rel=1e-10)
    assert stats["fraction_nonpositive"] == pytest.approx((det[mask] <= 0).mean())
    assert (stats["min"], stats["max"], stats["mean"]) == pytest.approx(
        (det[mask].min(), det[mask].max(), det[mask].mean()))


def test_sdlogj_hand_computed():
    from regnet.metrics import sdlogj, sdlogj_learn2reg

    # u_0 = a x^2 / 2 along axis 0: central differences of a quadratic are exact, det = 1 + a x.
    a, n = 0.05, 12
    x = np.arange(n, dtype=np.float64)
    u = np.zeros((3, n, 7, 6))
    u[0] = (a * x**2 / 2)[:, None, None]
    mask = np.zeros((n, 7, 6), dtype=bool)
    mask[1:-1] = True  # inside: central differences; at x = 0 and n - 1 numpy.gradient is one-sided
    expected = np.log(1 + a * x[1:-1]).std()
    assert sdlogj(torch.from_numpy(u)[None], mask=torch.from_numpy(mask)) == pytest.approx(expected, rel=1e-12)
    # Learn2Reg: x = 2 .. n - 3 only, log(det + 3)
    assert sdlogj_learn2reg(torch.from_numpy(u)[None]) == pytest.approx(np.log(4 + a * x[2:-2]).std(), rel=1e-12)
    # An affine field has one determinant everywhere: both are 0.
    A = torch.tensor([[0.1, 0.02, 0.0], [0.0, -0.2, 0.05], [0.03, 0.0, 0.15]], dtype=torch.float64)
    field = _affine_field(A, (7, 8, 6))
    assert sdlogj(field) == pytest.approx(0.0, abs=1e-12)
    assert sdlogj_learn2reg(field) == pytest.approx(0.0, abs=1e-12)
    # Learn2Reg's +3 keeps folded voxels (det down to -3) in the statistic; sdlogj leaves them out.
    folded = torch.zeros(1, 2, 12, 9, dtype=torch.float64)
    folded[0, 0] = torch.from_numpy(-3.0 * x)[:, None]  # det = -2 everywhere
    assert math.isnan(sdlogj(folded)) and jacobian_stats(folded)["fraction_nonpositive"] == 1.0
    assert sdlogj_learn2reg(folded) == pytest.approx(0.0, abs=1e-12)


def test_sdlogj_learn2reg_matches_learn2reg_code_and_numpy_gradient():
    from regnet.metrics import learn2reg_jacobian_det, sdlogj_learn2reg

    u = smooth_field((14, 12, 11), 12, 6.0)
    det = numpy_det(u)[2:-2, 2:-2, 2:-2]  # central differences everywhere inside the crop
    assert (det <= 0).any()
    torch.testing.assert_close(learn2reg_jacobian_det(torch.from_numpy(u)[None])[0, 0], torch.from_numpy(det))
    value = sdlogj_learn2reg(torch.from_numpy(u)[None])
    assert value == pytest.approx(learn2reg_reference(u), rel=1e-12)
    assert value == pytest.approx(np.log(np.clip(det + 3, 1e-9, 1e9)).std(), rel=1e-12)
    mask = (ndimage.gaussian_filter(np.random.default_rng(3).standard_normal(u.shape[1:]), 2) > 0).astype(np.uint8)
    assert sdlogj_learn2reg(torch.from_numpy(u)[None].float(), mask=torch.from_numpy(mask)) == pytest.approx(
        learn2reg_reference(u.astype(np.float32).astype(np.float64), mask), rel=1e-6)
    # 2D: the 2x2 determinant on the cropped grid
    u2 = smooth_field((11, 10), 13, 1.0)
    det2 = numpy_det(u2)[2:-2, 2:-2]
    assert sdlogj_learn2reg(torch.from_numpy(u2)[None]) == pytest.approx(np.log(det2 + 3).std(), rel=1e-12)


def test_sdlogj_bad_input():
    from regnet.metrics import sdlogj, sdlogj_learn2reg

    u = torch.zeros(1, 3, 6, 5, 4)
    with pytest.raises(ValueError, match=r"sdlogj_learn2reg: every spatial size of ddf must be >= 5"):
        sdlogj_learn2reg(u)
    with pytest.raises(ValueError, match=r"sdlogj: mask must have shape \(6, 5, 4\)"):
        sdlogj(u, mask=torch.ones(6, 5, 5))
    with pytest.raises(ValueError, match=r"jacobian_stats: mask must have shape"):
        jacobian_stats(u, mask=torch.ones(2, 1, 6, 5, 4))
    with pytest.raises(TypeError, match=r"sdlogj: ddf must be a torch.Tensor"):
        sdlogj(np.zeros((1, 3, 6, 5, 4)))
    empty = torch.zeros(6, 5, 4, dtype=torch.bool)
    assert math.isnan(sdlogj(u, mask=empty)) and math.isnan(jacobian_stats(u, mask=empty)["mean"])


# ---------------------------------------------------------------- HD95 in mm (SciPy oracle)

def scipy_hd95(pred, target, label, spacing):
    """Surfaces by binary erosion (cross, zero border); directed distances from SciPy's exact EDT
    with the voxel size; the larger of the two 95th percentiles."""
    p, t = np.asarray(pred) == label, np.asarray(target) == label
    cross = ndimage.generate_binary_structure(p.ndim, 1)
    sp = p & ~ndimage.binary_erosion(p, cross, border_value=0)
    st = t & ~ndimage.binary_erosion(t, cross, border_value=0)
    d_pt = ndimage.distance_transform_edt(~st, sampling=spacing)[sp]
    d_tp = ndimage.distance_transform_edt(~sp, sampling=spacing)[st]
    return max(np.percentile(d_pt, 95), np.percentile(d_tp, 95))


@pytest.mark.parametrize("spacing", [(1.5, 0.7, 2.0), (0.8, 1.0, 1.0), (1.0, 1.0, 1.0)])
def test_hausdorff95_anisotropic_matches_scipy_distance_transform(spacing, monkeypatch):
    from regnet.metrics import surface

    pred, target = blobs((16, 14, 12), 3, 21), blobs((16, 14, 12), 3, 22)
    result = hausdorff95(pred, target, spacing=spacing)
    for label, value in result.items():
        assert value == pytest.approx(scipy_hd95(pred[0, 0], target[0, 0], label, spacing), rel=1e-6)
    # the chunked torch.cdist path (no SciPy, or CUDA) gives the same numbers as the k-d tree
    monkeypatch.setattr(surface, "_nearest_distances_kdtree", lambda a, b: None)
    np.testing.assert_allclose(list(hausdorff95(pred, target, spacing=spacing).values()), list(result.values()),
                               rtol=1e-6)


def test_hausdorff95_hand_computed_spacing():
    pred = torch.zeros(8, 9, 10, dtype=torch.long)
    target = torch.zeros_like(pred)
    pred[2, 3, 4] = 1
    target[5, 3, 4] = 1  # 3 voxels along axis 0
    pred[1, 1, 1] = 2
    target[1, 4, 3] = 2  # 3 voxels along axis 1, 2 along axis 2
    result = hausdorff95(pred, target, spacing=(1.5, 0.7, 2.0))
    assert result[1] == pytest.approx(4.5)
    assert result[2] == pytest.approx(math.hypot(3 * 0.7, 2 * 2.0))
    assert hausdorff95(pred, target, spacing=2.0)[1] == pytest.approx(6.0)


# ---------------------------------------------------------------- Dice30

def test_dice30_hand_computed():
    from regnet.metrics import dice30

    values = [0.9, 0.1, 0.5, 0.7, 0.3, 0.8, 0.6, 0.2, 0.4, 1.0]
    assert dice30(values) == pytest.approx(0.2)  # mean of the lowest 3 of 10
    assert dice30(values, method="quantile") == pytest.approx(0.37)  # 0.1 + 0.3 * 9 * 0.1, as numpy/pandas
    assert dice30(values, method="quantile") == pytest.approx(np.quantile(values, 0.3))
    assert dice30(np.array(values + [np.nan]).reshape(11, 1)) == pytest.approx(0.2)  # NaN ignored, any shape
    assert dice30(torch.tensor(values)) == pytest.approx(0.2)
    assert dice30(values[:7]) == pytest.approx((0.1 + 0.3 + 0.5) / 3)  # ceil(2.1) = 3 values
    assert dice30([0.4, 0.8]) == pytest.approx(0.4)  # at least one value
    assert dice30(values, fraction=1.0) == pytest.approx(np.mean(values))
    assert math.isnan(dice30([])) and math.isnan(dice30([np.nan]))


def test_dice30_bad_input():
    from regnet.metrics import dice30

    with pytest.raises(ValueError, match=r"dice30: values must be Dice scores in \[0, 1\]"):
        dice30([0.5, 1.2])
    with pytest.raises(ValueError, match="dice30: fraction must be a finite number > 0 and <= 1"):
        dice30([0.5], fraction=0.0)
    with pytest.raises(ValueError, match=r"dice30: method must be one of \('lowest_mean', 'quantile'\)"):
        dice30([0.5], method="median")
    with pytest.raises(TypeError, match="dice30: values must be numbers"):
        dice30(["a"])


# ---------------------------------------------------------------- TRE

def test_tre_hand_computed_points():
    from regnet.metrics import tre

    fixed = np.array([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0]])
    moving = np.array([[3.0, 4.0, 0.0], [1.0, 2.0, 1.0]])
    result = tre(fixed, moving)
    assert result["per_point"] == pytest.approx([5.0, 2.0])
    assert (result["mean"], result["median"], result["max"], result["std"]) == pytest.approx((3.5, 3.5, 5.0, 1.5))
    assert tre(fixed, moving, spacing=(2.0, 0.5, 1.5))["per_point"] == pytest.approx([math.hypot(6, 2), 3.0])
    assert tre(torch.tensor([[1.0, 1.0]]), [[4.0, 5.0]], spacing=2.0)["mean"] == pytest.approx(10.0)
    assert math.isnan(tre(np.zeros((0, 3)), np.zeros((0, 3)))["mean"])


def test_tre_through_a_ddf_matches_scipy_linear_interpolation():
    from regnet.metrics import tre

    spatial = (12, 10, 9)
    u = smooth_field(spatial, 31, 2.0)
    rng = np.random.default_rng(4)
    fixed = rng.uniform(0, np.array(spatial) - 1, size=(20, 3))
    moving = fixed + rng.normal(0, 1.5, size=fixed.shape)
    spacing = (1.2, 0.9, 2.0)
    result = tre(fixed, moving, spacing=spacing, ddf=torch.from_numpy(u)[None])
    mapped = fixed + np.stack([ndimage.map_coordinates(u[i], fixed.T, order=1) for i in range(3)], axis=1)
    expected = np.linalg.norm((mapped - moving) * np.array(spacing), axis=1)
    np.testing.assert_allclose(result["per_point"], expected, rtol=1e-6, atol=1e-9)
    # a constant field moves every point by its value
    shift = torch.zeros(1, 2, 6, 7, dtype=torch.float64)
    shift[0, 0], shift[0, 1] = 1.5, -2.0
    assert tre([[2.0, 3.0]], [[3.5, 1.0]], ddf=shift)["per_point"] == pytest.approx([0.0], abs=1e-12)


def test_tre_bad_input():
    from regnet.metrics import tre

    with pytest.raises(ValueError, match="tre: points_fixed and points_moving must hold the same number of points"):
        tre(np.zeros((3, 3)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"tre: points_moving must have shape \(N, 3\)"):
        tre(np.zeros((3, 3)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"tre: points_fixed must have shape \(N, 2\) or \(N, 3\)"):
        tre(np.zeros(3), np.zeros(3))
    with pytest.raises(ValueError, match=r"tre: ddf must have shape \(1, 3, \*spatial\)"):
        tre(np.zeros((3, 3)), np.zeros((3, 3)), ddf=torch.zeros(1, 2, 4, 4))
    with pytest.raises(ValueError, match="tre: points_fixed contains NaN"):
        tre([[np.nan, 0.0]], [[0.0, 0.0]])
