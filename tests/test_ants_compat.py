"""ANTs compatibility, with ANTsPy (antspyx) as the oracle: regnet's output files read by ANTs,
ANTs' files read by regnet, transform lists in ANTs' order, inverse mappings and points.

Synthetic subjects (``docs/conventions.md``, "Files and world space"): smooth blobs and a label
map defined in world space, the moving subject under a known affine + smooth deformation, on
small fixed and moving grids that differ in shape, spacing, orientation (oblique, LPS and RAS
headers) and origin; 2D and 3D. Registrations run with a few iterations (seconds): the tests
check that the *same* transform files map alike in regnet and in ANTs, not registration quality.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

ants = pytest.importorskip("ants", reason="antspyx is not installed (pip install antspyx)")
pd = pytest.importorskip("pandas")
nib = pytest.importorskip("nibabel")

from regnet.io import load_affine  # noqa: E402
from regnet.io.itk_transforms import load_itk_affine  # noqa: E402
from regnet.pipeline import apply_points, apply_transform, map_points, register_files  # noqa: E402

TINY = {"affine": {"scales": [2, 1], "iterations": [15, 5]}, "syn": {"scales": [2, 1], "iterations": [8, 4]}}
LPS = {2: np.array([-1.0, -1.0]), 3: np.array([-1.0, -1.0, 1.0])}


# --- synthetic subjects -----------------------------------------------------------------------

def _rotation(ndim, degrees):
    a = np.deg2rad(degrees)
    if ndim == 2:
        return np.array([[np.cos(a[0]), -np.sin(a[0])], [np.sin(a[0]), np.cos(a[0])]])
    rx = np.array([[1, 0, 0], [0, np.cos(a[0]), -np.sin(a[0])], [0, np.sin(a[0]), np.cos(a[0])]])
    rz = np.array([[np.cos(a[1]), -np.sin(a[1]), 0], [np.sin(a[1]), np.cos(a[1]), 0], [0, 0, 1]])
    return rz @ rx


def _grid_affine(shape, spacing, rotation, flips, centre):
    """Voxel -> world (RAS) with the grid's centre at ``centre``."""
    ndim = len(shape)
    linear = rotation @ np.diag(np.asarray(spacing) * np.asarray(flips))
    affine = np.eye(ndim + 1)
    affine[:ndim, :ndim] = linear
    affine[:ndim, ndim] = np.asarray(centre) - linear @ ((np.asarray(shape) - 1) / 2)
    return affine


def _world(shape, affine):
    """World points (RAS) of every voxel, ``(*shape, ndim)``."""
    ndim = len(shape)
    index = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).astype(np.float64)
    return index @ affine[:ndim, :ndim].T + affine[:ndim, ndim]


BLOBS = {  # centre (mm), sigma (mm), weight; the labels are the three largest blobs
    2: [((-8.0, -6.0), 6.0, 1.0), ((9.0, 4.0), 5.0, 0.8), ((0.0, 10.0), 4.0, 0.6), ((3.0, -9.0), 3.0, 0.5)],
    3: [((-7.0, -5.0, -3.0), 6.0, 1.0), ((8.0, 4.0, 2.0), 5.0, 0.8), ((0.0, 9.0, -2.0), 4.5, 0.6),
        ((2.0, -8.0, 4.0), 3.5, 0.5)],
}


def _subject(points):
    """Intensity and labels of the synthetic subject at world points ``(..., ndim)``."""
    ndim = points.shape[-1]
    intensity = np.zeros(points.shape[:-1])
    memberships = []
    for centre, sigma, weight in BLOBS[ndim]:
        g = np.exp(-np.sum((points - np.asarray(centre)) ** 2, -1) / (2 * sigma**2))
        intensity += weight * g
        memberships.append(g)
    m = np.stack(memberships[:3], -1)
    labels = np.where(m.max(-1) > 0.35, m.argmax(-1) + 1, 0).astype(np.int16)
    return (100 * intensity).astype(np.float32), labels


def _to_subject(points):
    """Moving-space world points -> subject points: a small rotation, shift and smooth wave."""
    ndim = points.shape[-1]
    rotation = _rotation(ndim, [4.0] * (ndim - 1))
    wave = 1.2 * np.sin(points[..., ::-1] / 7.0)
    return points @ rotation.T + np.array([2.0, -1.5, 1.0][:ndim]) + wave


def _save(path, array, affine):
    ndim = affine.shape[0] - 1
    affine4 = affine
    if ndim == 2:
        affine4 = np.eye(4)
        affine4[:2, :2], affine4[:2, 3] = affine[:2, :2], affine[:2, 2]
    image = nib.Nifti1Image(array, affine4)
    image.set_sform(affine4, code=1)
    image.set_qform(affine4, code=1)
    nib.save(image, str(path))
    return path


GRIDS = {  # (shape, spacing, rotation degrees, axis flips); fixed LPS-like, moving RAS, both oblique
    2: {"fixed": ((32, 40), (1.2, 1.0), [10.0], (-1, -1)), "moving": ((36, 34), (1.1, 1.3), [-7.0], (1, 1))},
    3: {"fixed": ((12, 14, 10), (2.6, 2.4, 3.0), [8.0, 12.0], (-1, -1, 1)),
        "moving": ((14, 12, 11), (2.5, 2.8, 2.7), [-6.0, 5.0], (1, 1, 1))},
}


def _make_pair(folder, ndim):
    files = {}
    for role in ("fixed", "moving"):
        shape, spacing, degrees, flips = GRIDS[ndim][role]
        affine = _grid_affine(shape, spacing, _rotation(ndim, degrees), flips, [1.0, -0.5, 0.5][:ndim])
        points = _world(shape, affine)
        intensity, labels = _subject(points if role == "fixed" else _to_subject(points))
        files[role] = _save(folder / f"{role}.nii.gz", intensity, affine)
        files[f"{role}_labels"] = _save(folder / f"{role}_labels.nii.gz", labels, affine)
        files[f"{role}_affine"] = affine
    return files


@pytest.fixture(scope="module", params=[2, 3], ids=["2d", "3d"])
def case(request, tmp_path_factory):
    """A pair, its regnet registration (affine+syn) and an ANTsPy registration of the same pair."""
    ndim = request.param
    folder = tmp_path_factory.mktemp(f"ants{ndim}d")
    files = _make_pair(folder, ndim)
    files["ndim"] = ndim
    files["regnet"] = folder / "regnet"
    register_files(files["fixed"], files["moving"], "affine+syn", files["regnet"], config=TINY, verbose=False)
    fixed, moving = ants.image_read(str(files["fixed"])), ants.image_read(str(files["moving"]))
    reg = ants.registration(fixed, moving, "SyN", aff_iterations=(20, 10), aff_shrink_factors=(2, 1),
                            aff_smoothing_sigmas=(1, 0), reg_iterations=(10, 5), outprefix=str(folder / "ants_"))
    files["ants_fwd"], files["ants_inv"] = reg["fwdtransforms"], reg["invtransforms"]
    return files


# --- helpers ---------------------------------------------------------------------------------

def _ants_apply(reference, image, transforms, invert, interpolator):
    out = ants.apply_transforms(ants.image_read(str(reference)), ants.image_read(str(image)),
                                [str(t) for t in transforms], interpolator=interpolator, whichtoinvert=invert)
    return out.numpy()


def _regnet_apply(tmp_path, name, image, transform, reference, interp, inverse=False):
    out = apply_transform(None, image, transform, tmp_path / f"{name}.nii.gz", interp, reference=reference,
                          inverse=inverse)
    return np.asarray(nib.load(str(out)).dataobj)


def _agree_labels(a, b, fraction=0.999):
    assert a.shape == b.shape
    equal = float(np.mean(a.astype(np.int64) == np.round(b).astype(np.int64)))
    assert equal >= fraction, f"{100 * equal:.2f}% of voxels equal"


def _agree_images(a, b, inside, scale=100.0):
    """Equal within float32 interpolation where the sample points lie inside the input grid.
    In the outer half voxel around it ITK takes the border value and regnet blends linearly
    towards 0 (``grid_sample``'s zeros padding); beyond, both give 0."""
    assert a.shape == b.shape and inside.mean() > 0.3, inside.mean()
    np.testing.assert_allclose(a[inside], b[inside], atol=1e-4 * scale)


def _inside(tmp_path, image, transform, reference, inverse=False):
    """Voxels of the output grid whose sample points lie within the input image's grid."""
    ones = tmp_path / "ones.nii.gz"
    source = nib.load(str(image))
    nib.save(nib.Nifti1Image(np.ones(source.shape, np.float32), source.affine), str(ones))
    return _regnet_apply(tmp_path, "inside", ones, transform, reference, "linear", inverse) > 1 - 1e-6


# --- ANTs' order and ITK's field domain ----------------------------------------------------------

def test_list_order_and_field_domain_as_ants(tmp_path):
    """A list [T1, T2] maps p to T2(T1(p)) (the first listed acts first on points), in
    antsApplyTransformsToPoints and in antsApplyTransforms alike, and a displacement field is 0
    beyond half a voxel outside its grid: regnet = ANTs on a translation and a nonlinear field."""
    from regnet.io import save_ddf
    from regnet.io.itk_transforms import save_itk_affine

    affine = _grid_affine((12, 14, 10), (2.0, 2.0, 2.0), _rotation(3, [0.0, 20.0]), (1, 1, 1), (0.0, 0.0, 0.0))
    u = torch.zeros(1, 3, 12, 14, 10, dtype=torch.float64)
    u[0, 1] = 0.25 * (torch.arange(12.0, dtype=torch.float64).view(-1, 1, 1) + 2) ** 1.5  # nonlinear along axis 0
    save_ddf(tmp_path / "warp.nii.gz", u, affine)
    shift = np.eye(4)
    shift[:3, 3] = [5.0, -3.0, 1.0]
    save_itk_affine(tmp_path / "shift.mat", shift)
    index = np.array([[-2.0, 3, 3], [-0.7, 3, 3], [-0.3, 3, 3], [5.5, 6.2, 4.1], [11.3, 3, 3], [11.7, 3, 3],
                      [4.0, -0.4, 9.4], [4.0, 13.6, 2.0]])
    ras = index @ affine[:3, :3].T + affine[:3, 3]
    frame = pd.DataFrame(ras * LPS[3], columns=list("xyz"))
    warp, mat = str(tmp_path / "warp.nii.gz"), str(tmp_path / "shift.mat")
    for transforms in ([warp, mat], [mat, warp], [warp]):
        expected = ants.apply_transforms_to_points(3, frame, transforms, whichtoinvert=[False] * len(transforms))
        np.testing.assert_allclose(map_points(ras, transforms), expected[list("xyz")].values * LPS[3], atol=1e-4)
    # images: a moving image whose value is its world y coordinate (exact under linear interpolation)
    moving_affine = _grid_affine((40, 40, 36), (1.5, 1.5, 1.5), np.eye(3), (1, 1, 1), (0.0, 0.0, 0.0))
    values = _world((40, 40, 36), moving_affine)[..., 1].astype(np.float32) + 100
    moving = _save(tmp_path / "moving.nii.gz", values, moving_affine)
    reference = _save(tmp_path / "reference.nii.gz", np.zeros((12, 14, 10), np.float32), affine)
    for transforms in ([warp, mat], [mat, warp]):
        ours = _regnet_apply(tmp_path, "y", moving, transforms, reference, "linear")
        theirs = _ants_apply(reference, moving, transforms, [False, False], "linear")
        _agree_images(ours, theirs, _inside(tmp_path, moving, transforms, reference))


# --- regnet's files read by ANTs --------------------------------------------------------------

def test_affine_mat_reads_in_simpleitk(case):
    sitk = pytest.importorskip("SimpleITK")
    ndim, folder = case["ndim"], case["regnet"]
    transform = sitk.ReadTransform(str(folder / "affine.mat"))
    lps = np.eye(ndim + 1)
    lps[:ndim, :ndim] = np.asarray(transform.GetMatrix()).reshape(ndim, ndim)
    centre = np.asarray(transform.GetCenter())
    lps[:ndim, ndim] = np.asarray(transform.GetTranslation()) + centre - lps[:ndim, :ndim] @ centre
    flip = np.diag([*LPS[ndim], 1.0])
    np.testing.assert_allclose(flip @ lps @ flip, load_affine(folder / "affine.txt"), atol=1e-9)
    np.testing.assert_allclose(load_itk_affine(folder / "affine.mat"), load_affine(folder / "affine.txt"), atol=1e-12)


def test_ants_applies_regnet_forward(case, tmp_path):
    """ANTs with [warp.nii.gz, affine.mat] and with [ddf.nii.gz] = regnet apply (images, labels)."""
    folder, fixed = case["regnet"], case["fixed"]
    ours = _regnet_apply(tmp_path, "labels", case["moving_labels"], folder, fixed, "nearest")
    image = _regnet_apply(tmp_path, "image", case["moving"], folder, fixed, "linear")
    inside = _inside(tmp_path, case["moving"], folder, fixed)
    for transforms in ([folder / "warp.nii.gz", folder / "affine.mat"], [folder / "ddf.nii.gz"]):
        invert = [False] * len(transforms)
        _agree_labels(ours, _ants_apply(fixed, case["moving_labels"], transforms, invert, "nearestNeighbor"))
        # genericLabel votes between neighbours (linear per label): ~2% of these coarse voxels differ from nearest
        _agree_labels(ours, _ants_apply(fixed, case["moving_labels"], transforms, invert, "genericLabel"), 0.95)
        _agree_images(image, _ants_apply(fixed, case["moving"], transforms, invert, "linear"), inside)
    np.testing.assert_allclose(image, np.asarray(nib.load(str(folder / "warped.nii.gz")).dataobj), atol=1e-5)


def test_ants_applies_regnet_inverse(case, tmp_path):
    """ANTs with [[affine.mat, 1], inverse_warp.nii.gz] = regnet apply --inverse, onto the moving grid."""
    folder, moving = case["regnet"], case["moving"]
    transforms, invert = [folder / "affine.mat", folder / "inverse_warp.nii.gz"], [True, False]
    ours = _regnet_apply(tmp_path, "labels", case["fixed_labels"], folder, moving, "nearest", inverse=True)
    _agree_labels(ours, _ants_apply(moving, case["fixed_labels"], transforms, invert, "nearestNeighbor"))
    image = _regnet_apply(tmp_path, "image", case["fixed"], folder, moving, "linear", inverse=True)
    inside = _inside(tmp_path, case["fixed"], folder, moving, inverse=True)
    _agree_images(image, _ants_apply(moving, case["fixed"], transforms, invert, "linear"), inside)
    # the same list spelled out, as ANTs takes it
    listed = _regnet_apply(tmp_path, "listed", case["fixed_labels"], [f"{transforms[0]},1", transforms[1]], moving,
                           "nearest")
    np.testing.assert_array_equal(listed, ours)


# --- ANTs' files read by regnet ----------------------------------------------------------------

def test_regnet_applies_ants_registration(case, tmp_path):
    """ANTsPy's fwdtransforms / invtransforms given to regnet apply = ANTsPy's apply_transforms."""
    fwd, inv = case["ants_fwd"], case["ants_inv"]
    assert [t.endswith(".mat") for t in fwd] == [False, True]  # [1Warp.nii.gz, 0GenericAffine.mat]
    ours = _regnet_apply(tmp_path, "fwd", case["moving_labels"], fwd, case["fixed"], "nearest")
    _agree_labels(ours, _ants_apply(case["fixed"], case["moving_labels"], fwd, [False, False], "nearestNeighbor"))
    image = _regnet_apply(tmp_path, "fwd_image", case["moving"], fwd, case["fixed"], "linear")
    inside = _inside(tmp_path, case["moving"], fwd, case["fixed"])
    _agree_images(image, _ants_apply(case["fixed"], case["moving"], fwd, [False, False], "linear"), inside)
    spelled = [f"{inv[0]},1", inv[1]]  # ANTs' invtransforms: [0GenericAffine.mat (inverted), 1InverseWarp]
    back = _regnet_apply(tmp_path, "inv", case["fixed_labels"], spelled, case["moving"], "nearest")
    _agree_labels(back, _ants_apply(case["moving"], case["fixed_labels"], inv, [True, False], "nearestNeighbor"))
    image = _regnet_apply(tmp_path, "inv_image", case["fixed"], spelled, case["moving"], "linear")
    inside = _inside(tmp_path, case["fixed"], spelled, case["moving"])
    _agree_images(image, _ants_apply(case["moving"], case["fixed"], inv, [True, False], "linear"), inside)


# --- points ----------------------------------------------------------------------------------

def _points_csv(path, ras_points, extra=True):
    lps = ras_points * LPS[ras_points.shape[1]]
    frame = pd.DataFrame(lps, columns=list("xyz")[: ras_points.shape[1]])
    if extra:
        frame["t"] = 0.0
        frame["label"] = [f"p{i}" for i in range(len(frame))]
    frame.to_csv(path, index=False)
    return frame


def _centroids(labels, affine, values=(1, 2, 3)):
    ndim = affine.shape[0] - 1
    out = []
    for value in values:
        index = np.argwhere(labels == value).astype(np.float64)
        out.append(affine[:ndim, :ndim] @ index.mean(0) + affine[:ndim, ndim])
    return np.array(out)


@pytest.mark.parametrize("which", ["regnet", "ants"])
def test_apply_points_equals_ants(case, which, tmp_path):
    """regnet apply-points = ants.apply_transforms_to_points, forward and inverse, other columns kept."""
    ndim = case["ndim"]
    rng = np.random.default_rng(0)
    ras = _world(GRIDS[ndim]["fixed"][0], case["fixed_affine"]).reshape(-1, ndim)[rng.choice(500, 12)]
    ras[-1] += 200.0  # far outside every field: the affine alone
    frame = _points_csv(tmp_path / "in.csv", ras)
    if which == "regnet":
        folder = case["regnet"]
        forward = ([str(folder / "warp.nii.gz"), str(folder / "affine.mat")], [False, False])
        inverse = ([str(folder / "affine.mat"), str(folder / "inverse_warp.nii.gz")], [True, False])
        spec, inverse_spec = folder, folder
    else:
        forward, inverse = (case["ants_fwd"], [False, False]), (case["ants_inv"], [True, False])
        spec, inverse_spec = case["ants_fwd"], [f"{case['ants_inv'][0]},1", case["ants_inv"][1]]
    for transforms, invert, ours_spec, flag in ((*forward, spec, False), (*inverse, inverse_spec, which == "regnet")):
        expected = ants.apply_transforms_to_points(ndim, frame, transforms, whichtoinvert=invert)
        out = apply_points(tmp_path / "in.csv", ours_spec, tmp_path / "out.csv", inverse=flag)
        got = pd.read_csv(out)
        assert list(got.columns) == list(frame.columns)
        assert list(got["label"]) == list(frame["label"]) and np.all(got["t"] == 0)
        np.testing.assert_allclose(got[list("xyz")[:ndim]].values, expected[list("xyz")[:ndim]].values, atol=1e-3)


def test_points_follow_the_labels(case, tmp_path):
    """Label centroids: the moving centroids taken into the fixed space (--inverse) land at the
    centroids of the labels regnet apply warps onto the fixed grid, and back (forward)."""
    folder = case["regnet"]
    warped = _regnet_apply(tmp_path, "warped", case["moving_labels"], folder, case["fixed"], "nearest")
    on_fixed = _centroids(warped, case["fixed_affine"])
    on_moving = _centroids(np.asarray(nib.load(str(case["moving_labels"])).dataobj), case["moving_affine"])
    voxel = max(GRIDS[case["ndim"]]["fixed"][1])
    assert np.linalg.norm(map_points(on_moving, folder, inverse=True) - on_fixed, axis=1).max() < voxel
    assert np.linalg.norm(map_points(on_fixed, folder) - on_moving, axis=1).max() < voxel
    # the fixed labels carried onto the moving grid (inverse) keep their centroids likewise
    back = _regnet_apply(tmp_path, "back", case["fixed_labels"], folder, case["moving"], "nearest", inverse=True)
    fixed_centroids = _centroids(np.asarray(nib.load(str(case["fixed_labels"])).dataobj), case["fixed_affine"])
    assert np.linalg.norm(map_points(fixed_centroids, folder) - _centroids(back, case["moving_affine"]),
                          axis=1).max() < voxel


def test_points_ras_and_lps(case, tmp_path):
    folder, ndim = case["regnet"], case["ndim"]
    ras = np.array([[1.0, 2.0, 3.0][:ndim], [-4.0, 0.5, -1.0][:ndim]])
    _points_csv(tmp_path / "lps.csv", ras, extra=False)
    pd.DataFrame(ras, columns=list("xyz")[:ndim]).to_csv(tmp_path / "ras.csv", index=False)
    lps_out = pd.read_csv(apply_points(tmp_path / "lps.csv", folder, tmp_path / "a.csv")).values
    ras_out = pd.read_csv(apply_points(tmp_path / "ras.csv", folder, tmp_path / "b.csv", ras=True)).values
    np.testing.assert_allclose(lps_out * LPS[ndim], ras_out, atol=1e-9)
    np.testing.assert_allclose(ras_out, map_points(ras, folder), atol=1e-9)
