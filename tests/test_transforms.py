"""regnet.transforms: MONAI transforms (array and dictionary forms) on MetaTensors.

Real data from ../shared/data (skipped with the reason when absent), downsampled: the 3D brain
on 5-6 mm grids (~33 x 39 x 45), the 2D slices at 64 x 64. Registrations use few iterations.
"""

from __future__ import annotations

import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import torch

monai = pytest.importorskip("monai")

from monai.data import MetaTensor  # noqa: E402
from monai.transforms import (  # noqa: E402
    Compose,
    CopyItemsd,
    EnsureChannelFirstd,
    LoadImaged,
    Orientationd,
    SaveImaged,
    ScaleIntensityRangePercentilesd,
    Spacingd,
)

from regnet import ops  # noqa: E402
from regnet.io import Image, load_image  # noqa: E402
from regnet.metrics import jacobian_stats, mean_dice  # noqa: E402
from regnet.pipeline import SCORED_LABELS, ConfigError, register_images, sample_moving  # noqa: E402
from regnet.transforms import (  # noqa: E402
    ComposeDDF,
    ComposeDDFd,
    ExpSVF,
    ExpSVFd,
    JacobianStats,
    JacobianStatsd,
    RandSVFDeform,
    RandSVFDeformd,
    RegisterAffined,
    RegisterAffineSyNd,
    RegisterImages,
    RegisterImagesd,
    RegisterSyNd,
    Warp,
    Warpd,
    apply_registration,
)
from tests.conftest import data_file  # noqa: E402

SYN_3D = {"syn": {"scales": [2, 1], "iterations": [30, 10]}}
AFFINE_2D = {"affine": {"scales": [2, 1], "iterations": [60, 20]}}
SYN_2D = {"affine": {"scales": [2, 1], "iterations": [60, 20]}, "syn": {"scales": [2, 1], "iterations": [40, 20]}}


def _corr(a, b) -> float:
    a, b = torch.as_tensor(a).double().flatten(), torch.as_tensor(b).double().flatten()
    return float(torch.corrcoef(torch.stack([a, b]))[0, 1])


def _slice(name: str, factor: int = 4, shift=(0.0, 0.0)) -> MetaTensor:
    """A brain2d slice as a (1, H/f, W/f) MetaTensor in [0, 1] with an f-mm 3x3 affine."""
    image = load_image(data_file(f"brain2d/{name}slice.jpg"))
    data = torch.nn.functional.avg_pool2d(image.data, factor)[0] / 255.0
    affine = torch.diag(torch.tensor([float(factor), float(factor), 1.0], dtype=torch.float64))
    affine[:2, 2] = torch.tensor(shift, dtype=torch.float64)
    return MetaTensor(data, affine=affine)


def _random_field(shape, magnitude=2.0, seed=0, sigma=2.0, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    v = torch.randn((len(shape), *shape), generator=generator, dtype=dtype)
    v = ops.gaussian_smooth(v[None], sigma)[0]
    return v * (magnitude / v.norm(dim=0).max())


@pytest.fixture(scope="module")
def brain():
    """subject_a (t1 in [0, 1], aseg labels) on a 5 mm grid, MetaTensors."""
    t1, seg = data_file("brain3d/subject_a_t1.nii.gz"), data_file("brain3d/subject_a_aseg.nii.gz")
    load = Compose([
        LoadImaged(["t1", "seg"]),
        EnsureChannelFirstd(["t1", "seg"]),
        Spacingd(["t1", "seg"], pixdim=5.0, mode=("bilinear", "nearest")),
        ScaleIntensityRangePercentilesd("t1", 0.5, 99.5, 0.0, 1.0, clip=True),
    ])
    return load({"t1": str(t1), "seg": str(seg)})


# --- the whole chain ------------------------------------------------------------------------

def test_chain_nifti_known_deformation_different_grids(tmp_path):
    """Load -> 5 mm -> normalise; the fixed copy is deformed by a known field; the moving
    subject is put on another grid (LPS, 6 mm); RegisterSyNd maps image and labels onto the
    fixed grid, SaveImaged writes them; Dice, field error, world geometry, inverse."""
    t1, seg = data_file("brain3d/subject_a_t1.nii.gz"), data_file("brain3d/subject_a_aseg.nii.gz")
    chain = Compose([
        LoadImaged(["t1", "seg"]),
        EnsureChannelFirstd(["t1", "seg"]),
        Spacingd(["t1", "seg"], pixdim=5.0, mode=("bilinear", "nearest")),
        ScaleIntensityRangePercentilesd("t1", 0.5, 99.5, 0.0, 1.0, clip=True),
        CopyItemsd(["t1", "seg"], names=["fixed_t1", "fixed_seg"]),
        RandSVFDeformd(["fixed_t1", "fixed_seg"], mode=("bilinear", "nearest"), magnitude=4.0, sigma=4.0,
                       ddf_key="true_ddf"),
        Orientationd(["t1", "seg"], axcodes="LPS", labels=None),
        Spacingd(["t1", "seg"], pixdim=6.0, mode=("bilinear", "nearest")),
        CopyItemsd(["t1", "seg"], names=["moving_t1", "moving_seg"]),
        RegisterSyNd(["t1", "seg"], fixed_key="fixed_t1", mode=("bilinear", "nearest"), config=SYN_3D),
        SaveImaged(["t1", "seg"], output_dir=tmp_path, output_postfix="warped", separate_folder=False,
                   print_log=False),
        SaveImaged("fixed_t1", output_dir=tmp_path, output_postfix="fixed", separate_folder=False,
                   print_log=False),
    ])
    chain.set_random_state(seed=3)
    d = chain({"t1": str(t1), "seg": str(seg)})
    fixed, moving = d["fixed_t1"], d["moving_t1"]

    # the moving subject really is on another grid; the outputs are on the fixed grid
    assert moving.shape != fixed.shape and not torch.allclose(moving.affine, fixed.affine)
    assert moving.affine[0, 0] < 0  # LPS
    for key in ("t1", "seg"):
        assert d[key].shape[1:] == fixed.shape[1:]
        assert torch.allclose(d[key].affine, fixed.affine)
    assert d["ddf"].shape == (3, *fixed.shape[1:]) and torch.allclose(d["ddf"].affine, fixed.affine)
    assert d["inverse_ddf"].shape == (3, *moving.shape[1:]) and torch.allclose(d["inverse_ddf"].affine, moving.affine)
    assert torch.equal(d["affine"], torch.eye(4, dtype=torch.float64))

    # labels: nearest keeps the values; Dice improves over resampling through the headers
    assert set(torch.unique(d["seg"]).tolist()) <= set(torch.unique(d["moving_seg"]).tolist())
    target = d["fixed_seg"][None].long()
    which = [v for v in SCORED_LABELS if bool((target == v).any())]
    zero = MetaTensor(torch.zeros(d["ddf"].shape), affine=fixed.affine)
    before = apply_registration(d["moving_seg"], zero, mode="nearest")
    dice_before = mean_dice(before[None].long(), target, labels=which)
    dice_after = mean_dice(d["seg"][None].long(), target, labels=which)
    assert dice_after > dice_before + 0.03, (dice_before, dice_after)

    # the known answer: registering the original onto the deformed copy recovers true_ddf
    mask = fixed[0] > 0.1
    error_before = d["true_ddf"].norm(dim=0)[mask].mean()
    error_after = (d["ddf"] - d["true_ddf"]).norm(dim=0)[mask].mean()
    assert error_after < 0.7 * error_before, (float(error_before), float(error_after))

    # the saved files line up with the fixed image (nibabel reads the fixed affine back)
    names = {"subject_a_t1_warped.nii.gz", "subject_a_aseg_warped.nii.gz", "subject_a_t1_fixed.nii.gz"}
    assert {p.name for p in tmp_path.glob("*.nii.gz")} == names
    for name in names:
        saved = nib.load(tmp_path / name)
        np.testing.assert_allclose(saved.affine, fixed.affine.numpy(), atol=1e-5)
        assert saved.shape[:3] == tuple(fixed.shape[1:])
    saved_seg = np.asarray(nib.load(tmp_path / "subject_a_aseg_warped.nii.gz").dataobj)
    np.testing.assert_array_equal(saved_seg.reshape(d["seg"].shape[1:]), d["seg"][0].numpy())

    # inverse: back onto the moving grid (LPS, 6 mm), close to the moving image
    inverted = chain.transforms[-3].inverse({k: d[k] for k in ("t1", "seg", "inverse_ddf")})
    back = inverted["t1"]
    assert back.shape == moving.shape and torch.allclose(back.affine, moving.affine)
    assert _corr(back, d["moving_t1"]) > 0.97
    assert _corr(back, d["moving_t1"]) > _corr(apply_registration(fixed, MetaTensor(
        torch.zeros(3, *moving.shape[1:]), affine=moving.affine)), d["moving_t1"])
    assert inverted["seg"].dtype == d["moving_seg"].dtype
    assert len(back.applied_operations) == len(d["moving_t1"].applied_operations)


def test_chain_subject_onto_mni152(tmp_path):
    """A real inter-subject pair on different grids: subject_a (its header centred on the
    template's centre, since it stores no real affine) onto MNI152, both at 6 mm."""
    t1, mni = data_file("brain3d/subject_a_t1.nii.gz"), data_file("mni152/t1.nii.gz")
    load = Compose([
        LoadImaged(["t1", "mni"]),
        EnsureChannelFirstd(["t1", "mni"]),
        Spacingd(["t1", "mni"], pixdim=6.0),
        ScaleIntensityRangePercentilesd(["t1", "mni"], 0.5, 99.5, 0.0, 1.0, clip=True),
    ])
    d = load({"t1": str(t1), "mni": str(mni)})

    def centre(x):
        n = torch.tensor(x.shape[1:], dtype=torch.float64)
        return x.affine[:3, :3] @ ((n - 1) / 2) + x.affine[:3, 3]

    affine = d["t1"].affine.clone()
    affine[:3, 3] += centre(d["mni"]) - centre(d["t1"])
    d["t1"].affine = affine
    moving = d["t1"]
    config = {"affine": {"scales": [2, 1], "iterations": [100, 30]}, "syn": {"scales": [2, 1], "iterations": [20, 10]}}
    chain = Compose([
        RegisterAffineSyNd("t1", fixed_key="mni", output_keys="warped", config=config),
        SaveImaged("warped", output_dir=tmp_path, output_postfix="to_mni", separate_folder=False, print_log=False),
    ])
    out = chain(dict(d))
    fixed = d["mni"]
    assert out["warped"].shape == fixed.shape and torch.equal(out["warped"].affine, fixed.affine)
    assert out["inverse_ddf"].shape == (3, *moving.shape[1:]) and torch.equal(out["inverse_ddf"].affine, moving.affine)
    header = apply_registration(moving, MetaTensor(torch.zeros(3, *fixed.shape[1:]), affine=fixed.affine))
    assert _corr(out["warped"], fixed) > _corr(header, fixed) + 0.1
    saved = nib.load(tmp_path / "subject_a_t1_to_mni.nii.gz")
    np.testing.assert_allclose(saved.affine, nib.load(mni).affine @ np.diag([6.0, 6.0, 6.0, 1.0]), atol=1e-4)
    np.testing.assert_allclose(saved.affine, fixed.affine.numpy(), atol=1e-5)
    assert saved.shape == tuple(fixed.shape[1:])


def test_inverse_through_compose_restores_grid_and_trace(brain):
    """Compose.inverse pops RegisterAffined's entry and returns the moving image on its grid."""
    moving = Compose([Orientationd("t1", axcodes="LAS", labels=None), Spacingd("t1", pixdim=(6.0, 5.0, 5.5))])(
        {"t1": brain["t1"].clone()})["t1"]
    register = RegisterAffined("t1", fixed_key="fixed", config={"affine": {"scales": [2, 1], "iterations": [20, 5]}})
    chain = Compose([register])
    d = chain({"t1": moving, "fixed": brain["t1"]})
    assert d["t1"].shape == brain["t1"].shape and torch.allclose(d["t1"].affine, brain["t1"].affine)
    assert d["t1"].applied_operations[-1]["class"] == "RegisterAffined"
    for inverse_key in (True, False):  # with the inverse field, and from the matrix alone
        data = dict(d) if inverse_key else {"t1": d["t1"]}
        data["t1"] = d["t1"].clone()
        data["t1"].applied_operations = [dict(op) for op in d["t1"].applied_operations]
        back = chain.inverse(data)["t1"]
        assert back.shape == moving.shape and torch.allclose(back.affine, moving.affine)
        assert len(back.applied_operations) == len(moving.applied_operations)
        assert _corr(back, moving) > 0.97


def test_registration_runs_under_inference_mode(brain):
    """Instance optimisation needs autograd: it must also work inside a no_grad / inference chain."""
    config = {"affine": {"scales": [1], "iterations": [5]}, "syn": {"scales": [1], "iterations": [3]}}
    register = RegisterAffineSyNd("moving", fixed_key="fixed", config=config)
    with torch.inference_mode():
        d = register({"moving": brain["t1"].clone(), "fixed": brain["t1"].clone()})
        back = register.inverse(d)["moving"]
    assert d["moving"].shape == brain["t1"].shape and back.shape == brain["t1"].shape
    assert bool(torch.isfinite(d["ddf"]).all())


# --- agreement with the functional API ------------------------------------------------------

@pytest.mark.parametrize("shape", [(12, 14, 10), (20, 18)])
def test_field_transforms_match_ops(shape):
    image = ops.gaussian_smooth(torch.rand(1, 2, *shape), 1.5)[0]
    labels = torch.randint(0, 5, (1, *shape), dtype=torch.int64)
    u1, u2 = _random_field(shape, 2.0, 1), _random_field(shape, 1.5, 2)
    affine = torch.diag(torch.tensor([2.0] * len(shape) + [1.0], dtype=torch.float64))
    img_mt = MetaTensor(image, affine=affine)

    out = Warp()(img_mt, u1)
    assert isinstance(out, MetaTensor) and torch.equal(out.affine, affine)
    assert torch.equal(out.as_tensor(), ops.warp(image[None], u1[None])[0])
    d = Warpd(["img", "lab"], ddf_key="u", mode=("bilinear", "nearest"), padding_mode="zeros")(
        {"img": img_mt, "lab": labels, "u": u1})
    assert torch.equal(d["img"].as_tensor(), ops.warp(image[None], u1[None], padding_mode="zeros")[0])
    expected = ops.warp(labels[None].double(), u1[None].double(), mode="nearest", padding_mode="zeros")[0]
    assert d["lab"].dtype == torch.int64 and torch.equal(d["lab"], expected.long())

    assert torch.equal(ExpSVF()(u1), ops.exp(u1[None])[0])
    d = ExpSVFd("v", steps=5, padding_mode="border", output_keys="ddf")({"v": MetaTensor(u1, affine=affine)})
    assert torch.equal(d["ddf"].as_tensor(), ops.exp(u1[None], steps=5, padding_mode="border")[0])
    assert torch.equal(d["ddf"].affine, affine) and torch.equal(d["v"].as_tensor(), u1)

    assert torch.equal(ComposeDDF()(u1, u2), ops.compose(u1[None], u2[None])[0])
    d = ComposeDDFd(["a", "b"], output_key="ab")({"a": u1, "b": u2})
    assert torch.equal(d["ab"], ops.compose(u1[None], u2[None])[0])
    # warping by the composition ~ warping by u1, then by u2
    twice = Warp()(Warp()(image, u1), u2)
    once = Warp()(image, d["ab"])
    inner = tuple(slice(3, -3) for _ in shape)
    error = (twice - once)[(slice(None), *inner)].abs().mean()
    assert error < 0.2 * (twice - image)[(slice(None), *inner)].abs().mean()

    stats = JacobianStats()(u1)
    assert stats == jacobian_stats(u1[None])
    d = JacobianStatsd("ddf", det_postfix="det")({"ddf": MetaTensor(u1, affine=affine)})
    assert d["ddf_jacobian"] == stats
    assert d["ddf_det"].shape == (1, *shape) and torch.equal(d["ddf_det"].affine, affine)
    assert torch.equal(d["ddf_det"].as_tensor(), ops.jacobian_det(u1[None])[0])


def test_register_affined_matches_register_images():
    fixed, moving = _slice("r64"), _slice("r16", shift=(3.0, -2.0))
    d = RegisterAffined("moving", fixed_key="fixed", config=AFFINE_2D)({"moving": moving, "fixed": fixed})
    to_image = lambda x: Image(x.as_tensor()[None], x.affine.numpy())  # noqa: E731
    result = register_images(to_image(fixed), to_image(moving), "affine", AFFINE_2D, "cpu", False)
    assert d["ddf"].shape == (2, 64, 64) and d["ddf"].dtype == torch.float32
    torch.testing.assert_close(d["ddf"].as_tensor().double(), result.ddf[0], atol=1e-4, rtol=0)
    np.testing.assert_allclose(d["affine"].numpy(), result.matrix, atol=1e-10)
    expected = sample_moving(to_image(moving), result.ddf, fixed.affine.numpy())[0].float()
    torch.testing.assert_close(d["moving"].as_tensor(), expected, atol=1e-4, rtol=0)
    assert torch.equal(d["moving"].affine, fixed.affine)
    # the array form gives the same
    out = RegisterImages("affine", config=AFFINE_2D)(moving, fixed)
    torch.testing.assert_close(out.ddf.as_tensor(), d["ddf"].as_tensor(), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.warped.as_tensor(), d["moving"].as_tensor(), atol=1e-5, rtol=0)
    assert out.inverse_ddf.shape == (2, 64, 64) and out.report["transform"] == "affine"


def test_register_2d_affine_syn_and_inverse():
    """r16 -> r64 (2D slices, 64 x 64, moving shifted in world): similarity improves; the
    inverse brings the warped slice back onto the moving grid."""
    fixed, moving = _slice("r64"), _slice("r16", factor=4, shift=(4.0, 0.0))
    fine = _slice("r16", factor=2, shift=(4.0, 0.0))  # labels of the moving subject on a finer grid
    labels = MetaTensor((fine.as_tensor() > 0.4).to(torch.uint8), affine=fine.affine)
    register = RegisterAffineSyNd(["moving", "labels"], fixed_key="fixed", mode=("bilinear", "nearest"),
                                  config=SYN_2D, report_key="report", output_keys=["warped", "warped_labels"])
    d = register({"moving": moving, "labels": labels, "fixed": fixed})
    warped_labels = d["warped_labels"]
    assert warped_labels.shape == (1, 64, 64) and warped_labels.dtype == torch.uint8
    assert torch.equal(warped_labels.affine, fixed.affine)
    assert _corr(warped_labels, d["warped"]) > 0.8  # the labels follow the image
    header = apply_registration(moving, MetaTensor(torch.zeros(2, 64, 64), affine=fixed.affine))
    assert _corr(d["warped"], fixed) > _corr(header, fixed) + 0.1
    assert torch.equal(d["warped"].affine, fixed.affine) and d["moving"] is moving
    assert d["report"]["transform"] == "affine+syn" and "syn" in d["report"]["loss_history"]
    assert jacobian_stats(d["ddf"][None])["fraction_nonpositive"] < 0.01
    inverted = register.inverse(d)
    back = inverted["warped"]
    assert back.shape == moving.shape and torch.equal(back.affine, moving.affine)
    inner = (slice(None), slice(8, -8), slice(8, -8))
    assert _corr(back[inner], moving[inner]) > 0.9
    back_labels = inverted["warped_labels"]  # back onto the labels' own (finer) grid
    assert back_labels.shape == labels.shape and torch.equal(back_labels.affine, labels.affine)
    inner = (slice(None), slice(16, -16), slice(16, -16))
    assert float((back_labels[inner] == labels[inner]).float().mean()) > 0.9


# --- RandSVFDeformd -------------------------------------------------------------------------

def test_rand_svf_deformd_properties(brain):
    labels = brain["seg"].to(torch.int32)
    data = {"img": brain["t1"], "seg": labels}
    make = lambda **kw: RandSVFDeformd(["img", "seg"], mode=("bilinear", "nearest"), magnitude=5.0,  # noqa: E731
                                       sigma=4.0, **kw)
    a, b, c = make(), make(), make()
    a.set_random_state(7)
    b.set_random_state(7)
    c.set_random_state(8)
    da, db, dc = a(dict(data)), b(dict(data)), c(dict(data))
    assert torch.equal(da["ddf"], db["ddf"]) and torch.equal(da["img"], db["img"])
    assert not torch.equal(da["ddf"], dc["ddf"])
    ddf = da["ddf"]
    assert ddf.shape == (3, *brain["t1"].shape[1:]) and ddf.dtype == torch.float32
    assert torch.equal(ddf.affine, brain["t1"].affine) and ddf.applied_operations == []
    largest = float(ddf.norm(dim=0).max())
    assert 0.3 * 5.0 < largest <= 5.0 + 1e-4
    assert float(ops.jacobian_det(ddf[None]).min()) > 0
    # labels keep dtype and values; the image is warped by the stored field
    assert da["seg"].dtype == torch.int32
    assert set(torch.unique(da["seg"]).tolist()) <= set(torch.unique(labels).tolist())
    torch.testing.assert_close(da["img"].as_tensor(), Warp(padding_mode="zeros")(brain["t1"], ddf).as_tensor())
    # Compose(...).set_random_state makes a chain reproducible
    chain = lambda: Compose([make()]).set_random_state(seed=11)  # noqa: E731
    assert torch.equal(chain()(dict(data))["ddf"], chain()(dict(data))["ddf"])
    # prob = 0: unchanged data, zero field
    d0 = RandSVFDeformd(["img", "seg"], prob=0.0)(dict(data))
    assert torch.equal(d0["img"], data["img"]) and torch.equal(d0["seg"], labels)
    assert d0["ddf"].shape == ddf.shape and not d0["ddf"].any()
    skip = Compose([RandSVFDeformd("img", prob=0.0)])
    assert torch.equal(skip.inverse(skip(dict(data)))["img"], data["img"])


def test_rand_svf_deformd_inverse_and_2d():
    image = _slice("r16")
    image = MetaTensor(ops.gaussian_smooth(image.as_tensor()[None], 1.0)[0], affine=image.affine)
    transform = RandSVFDeformd("img", magnitude=4.0, sigma=5.0, padding_mode="border", inverse_ddf_key="inv")
    transform.set_random_state(0)
    d = transform({"img": image})
    assert d["img"].applied_operations[-1]["class"] == "RandSVFDeformd"
    inner = (slice(None), slice(6, -6), slice(6, -6))
    moved = float((d["img"] - image)[inner].abs().mean())
    # exact inverse field exp(-v), and numerical inversion of the stored DDF
    for keep in (("img", "ddf", "inv"), ("img", "ddf")):
        data = {k: d[k] for k in keep}
        data["img"] = d["img"].clone()
        data["img"].applied_operations = list(d["img"].applied_operations)
        back = transform.inverse(data)["img"]
        assert back.applied_operations == []
        assert float((back - image)[inner].abs().mean()) < 0.3 * moved
    # the array form draws the same kind of field and reuses it for labels
    array = RandSVFDeform(magnitude=3.0, sigma=5.0)
    array.set_random_state(1)
    warped = array(image)
    labels = (image > 0.3).to(torch.uint8)
    warped_labels = array(labels, randomize=False, mode="nearest")
    assert warped.shape == image.shape and warped_labels.dtype == torch.uint8
    assert array.ddf.shape == (2, 64, 64) and float(array.ddf.norm(dim=0).max()) <= 3.0 + 1e-4


def test_warpd_inverse_round_trip(brain):
    image = brain["t1"]
    image = MetaTensor(ops.gaussian_smooth(image.as_tensor()[None], 1.0)[0], affine=image.affine)
    v = _random_field(tuple(image.shape[1:]), 3.0, seed=4, sigma=4.0)
    u, inv = ops.exp(v[None], padding_mode="border")[0], ops.exp(-v[None], padding_mode="border")[0]
    inner = (slice(None), slice(4, -4), slice(4, -4), slice(4, -4))
    backs = []
    for data in ({"ddf": u, "inv": inv}, {"ddf": u}):  # the given inverse, and a numerical one
        warp = Warpd("img", ddf_key="ddf", inverse_ddf_key="inv")
        d = warp({"img": image, **data})
        moved = float((d["img"] - image)[inner].abs().mean())
        back = Compose([warp]).inverse(d)["img"]
        assert float((back - image)[inner].abs().mean()) < 0.5 * moved  # the rest: two interpolations
        assert torch.equal(back.affine, image.affine) and back.applied_operations == image.applied_operations
        backs.append(back)
    assert float((backs[0] - backs[1])[inner].abs().mean()) < 0.05 * moved


# --- bad input ------------------------------------------------------------------------------

def test_errors_name_key_expected_and_given():
    img, ddf = torch.rand(1, 8, 9, 10), torch.zeros(3, 8, 9, 11)
    with pytest.raises(ValueError, match=r"data\['u'\].*\(3, 8, 9, 10\).*\(3, 8, 9, 11\)"):
        Warpd("img", ddf_key="u")({"img": img, "u": ddf})
    with pytest.raises(KeyError, match="'u'"):
        Warpd("img", ddf_key="u")({"img": img})
    with pytest.raises(KeyError, match="img"):
        Warpd("img", ddf_key="u")({"other": img, "u": ddf})
    assert Warpd("img", ddf_key="u", allow_missing_keys=True)({"x": 1}) == {"x": 1}
    with pytest.raises(ValueError, match=r"data\['img'\].*channel-first.*\(1, 1, 8, 9, 10\)"):
        Warpd("img", ddf_key="u")({"img": torch.rand(8, 9, 10)[None, None], "u": ddf})
    with pytest.raises(ValueError, match="mode"):
        Warpd(["a", "b"], mode=("bilinear", "cubic"))
    with pytest.raises(ValueError, match="one value or 2 values"):
        Warpd(["a", "b"], mode=("bilinear", "nearest", "nearest"))
    with pytest.raises(ValueError, match="ddf_key"):
        Warpd(["ddf"])
    with pytest.raises(ValueError, match=r"ComposeDDFd: data\['b'\].*\(3, 8, 9, 10\).*\(2, 8, 9\)"):
        ComposeDDFd(["a", "b"])({"a": torch.zeros(3, 8, 9, 10), "b": torch.zeros(2, 8, 9)})
    with pytest.raises(ValueError, match="exactly two"):
        ComposeDDFd(["a"])
    with pytest.raises(ValueError, match=r"ExpSVFd: data\['v'\].*ndim = 2 or 3.*\(2, 8, 9, 10\)"):
        ExpSVFd("v")({"v": torch.zeros(2, 8, 9, 10)})
    with pytest.raises(TypeError, match="floating"):
        ExpSVF()(torch.zeros(3, 4, 4, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"data\['a'\] is \(8, 9, 10\) but data\['b'\] is \(8, 9, 11\)"):
        RandSVFDeformd(["a", "b"])({"a": img, "b": torch.rand(1, 8, 9, 11)})
    with pytest.raises(ValueError, match="magnitude must be a finite number >= 0, got -1"):
        RandSVFDeformd("a", magnitude=-1)
    with pytest.raises(ValueError, match="prob"):
        RandSVFDeformd("a", prob=1.5)
    with pytest.raises(TypeError, match="sigma must be a number"):
        RandSVFDeformd("a", sigma="6")
    with pytest.raises(ValueError, match="transform must be one of"):
        RegisterImagesd("m", fixed_key="f", transform="bspline")
    with pytest.raises(ConfigError, match="syn.iteration"):
        RegisterSyNd("m", fixed_key="f", config={"syn": {"iteration": [3]}})
    with pytest.raises(ValueError, match="fixed_key 'm'"):
        RegisterSyNd("m", fixed_key="m")
    with pytest.raises(ValueError, match="ddf_key 'm'"):
        RegisterSyNd("m", fixed_key="f", ddf_key="m")
    with pytest.raises(KeyError, match="fixed_key 'f'"):
        RegisterSyNd("m", fixed_key="f")({"m": img})
    with pytest.raises(ValueError, match=r"data\['m'\] has 1 channels.*data\['f'\] has 2"):
        RegisterAffined("m", fixed_key="f")({"m": img, "f": torch.rand(2, 8, 9, 10)})
    with pytest.raises(ValueError, match=r"data\['m'\] is 3D.*data\['f'\] is 2D"):
        RegisterAffined("m", fixed_key="f")({"m": img, "f": torch.rand(1, 8, 9)})
    with pytest.raises(ValueError, match=r"data\['lab'\] is 2D.*data\['m'\] is 3D"):
        RegisterAffined(["m", "lab"], fixed_key="f")({"m": img, "lab": torch.rand(1, 8, 9), "f": img})
    with pytest.raises(KeyError, match="inverse_ddf"):
        transform = RegisterSyNd("m", fixed_key="f", config={"syn": {"scales": [1], "iterations": [1]}})
        transform.inverse({"m": transform({"m": MetaTensor(img), "f": MetaTensor(img)})["m"]})


def test_import_regnet_does_not_import_monai():
    code = "import sys, regnet, regnet.ops, regnet.pipeline; assert 'monai' not in sys.modules, 'monai imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
def test_cuda_follows_input_device():
    image = MetaTensor(torch.rand(1, 16, 16, 16, device="cuda"), affine=torch.diag(torch.tensor([2.0, 2, 2, 1])))
    u = _random_field((16, 16, 16), 2.0).cuda()
    out = Warpd("img", ddf_key="u")({"img": image, "u": u})["img"]
    assert out.device.type == "cuda" and torch.equal(out.affine, image.affine)
    torch.testing.assert_close(out.as_tensor().cpu(), Warp()(image.cpu(), u.cpu()).as_tensor(), atol=1e-5, rtol=0)
    d = RandSVFDeformd("img", magnitude=3.0, sigma=3.0)({"img": image})
    assert d["img"].device.type == "cuda" and d["ddf"].device.type == "cuda"
    reg = RegisterSyNd("img", fixed_key="fixed", config={"syn": {"scales": [1], "iterations": [3]}})
    d = reg({"img": d["img"], "fixed": image})
    assert d["img"].device.type == "cuda" and d["ddf"].device.type == "cuda"
