"""regnet.io.image: NIfTI / PNG / JPEG / TIFF loading and atomic saving with world affines,
displacement fields on disk (ITK/ANTs layout) and affine.txt."""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from regnet import io as rio
from regnet.io import Image, load_affine, load_ddf, load_image, save_affine, save_ddf, save_image
from conftest import data_file


def _affine3d():
    """An oblique, anisotropic, LAS-like affine with a non-zero origin."""
    c, s = np.cos(0.3), np.sin(0.3)
    a = np.eye(4)
    a[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ np.diag([-0.8, 1.2, 2.5])
    a[:3, 3] = [40.0, -12.5, 7.25]
    return a


def _listing(folder):
    return sorted(p.name for p in folder.iterdir())


# --- NIfTI ------------------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_nifti_3d_round_trip(tmp_path, suffix):
    rng = np.random.default_rng(0)
    array = rng.random((5, 6, 7)).astype(np.float32)
    affine = _affine3d()
    nib.save(nib.Nifti1Image(array, affine), str(tmp_path / f"a{suffix}"))

    img = load_image(tmp_path / f"a{suffix}")
    assert img.data.shape == (1, 1, 5, 6, 7) and img.data.dtype == torch.float32
    np.testing.assert_array_equal(img.data[0, 0].numpy(), array)  # axes in file order, never flipped
    np.testing.assert_allclose(img.affine, affine, atol=1e-6)
    assert img.affine.dtype == np.float64 and img.dtype == np.float32 and img.ndim == 3
    assert img.spatial_shape == (5, 6, 7)
    np.testing.assert_allclose(img.spacing, [0.8, 1.2, 2.5], atol=1e-6)

    out = tmp_path / f"b{suffix}"
    assert save_image(out, img.data, img.affine) == out
    back = nib.load(str(out))
    assert back.shape == (5, 6, 7) and back.get_data_dtype() == np.float32
    np.testing.assert_array_equal(np.asanyarray(back.dataobj), array)
    np.testing.assert_allclose(back.affine, affine, atol=1e-6)
    assert back.header.get_xyzt_units()[0] == "mm"
    assert _listing(tmp_path) == sorted([f"a{suffix}", f"b{suffix}"])


def test_nifti_stored_dtype_and_values(tmp_path):
    array = np.arange(60, dtype=np.uint8).reshape(3, 4, 5)
    nib.save(nib.Nifti1Image(array, np.eye(4)), str(tmp_path / "u8.nii.gz"))
    img = load_image(tmp_path / "u8.nii.gz")
    assert img.dtype == np.uint8 and img.data.dtype == torch.float32
    assert float(img.data.max()) == 59.0  # values as stored, not rescaled
    raw = load_image(tmp_path / "u8.nii.gz", dtype=None)
    assert raw.data.dtype == torch.uint8
    np.testing.assert_array_equal(raw.data[0, 0].numpy(), array)
    img64 = load_image(tmp_path / "u8.nii.gz", dtype=torch.float64)
    assert img64.data.dtype == torch.float64


def test_nifti_scaling_applied(tmp_path):
    array = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    nii = nib.Nifti1Image(array, np.eye(4))
    nii.header.set_slope_inter(0.5, 10.0)
    nib.save(nii, str(tmp_path / "s.nii"))
    img = load_image(tmp_path / "s.nii", dtype=torch.float64)
    np.testing.assert_allclose(img.data[0, 0].numpy(), array * 0.5 + 10.0)


def test_nifti_4d_channel_last(tmp_path):
    array = np.random.default_rng(1).random((4, 5, 6, 3)).astype(np.float32)
    affine = _affine3d()
    nib.save(nib.Nifti1Image(array, affine), str(tmp_path / "c.nii.gz"))
    img = load_image(tmp_path / "c.nii.gz")
    assert img.data.shape == (1, 3, 4, 5, 6)
    for c in range(3):
        np.testing.assert_array_equal(img.data[0, c].numpy(), array[..., c])
    save_image(tmp_path / "d.nii.gz", img.data, img.affine)
    back = nib.load(str(tmp_path / "d.nii.gz"))
    assert back.shape == (4, 5, 6, 3)
    np.testing.assert_array_equal(np.asanyarray(back.dataobj), array)
    # (C, *spatial) and (*spatial) inputs, numpy or torch
    save_image(tmp_path / "e.nii.gz", img.data[0].numpy(), img.affine)
    assert nib.load(str(tmp_path / "e.nii.gz")).shape == (4, 5, 6, 3)
    save_image(tmp_path / "f.nii.gz", img.data[0, 1], img.affine)
    np.testing.assert_array_equal(load_image(tmp_path / "f.nii.gz").data[0, 0].numpy(), array[..., 1])


def test_itk_vector_layout_loads_as_channels(tmp_path):
    array = np.random.default_rng(2).random((4, 5, 6, 1, 3)).astype(np.float32)
    nib.save(nib.Nifti1Image(array, np.eye(4)), str(tmp_path / "v.nii.gz"))
    img = load_image(tmp_path / "v.nii.gz")
    assert img.data.shape == (1, 3, 4, 5, 6)
    np.testing.assert_array_equal(img.data[0, 2].numpy(), array[:, :, :, 0, 2])


def test_real_prostate_labels_are_channel_first():
    path = data_file("prostate_mr_us/fixed_labels/case000000.nii.gz")
    nii = nib.load(str(path))
    img = load_image(path)
    assert nii.shape == (44, 59, 41, 3)
    assert img.data.shape == (1, 3, 44, 59, 41)
    np.testing.assert_array_equal(img.data[0, 0].numpy(), np.asanyarray(nii.dataobj)[..., 0].astype(np.float32))
    np.testing.assert_allclose(img.affine, nii.affine)


def test_nifti_2d_loads_as_2d(tmp_path):
    array = np.random.default_rng(3).random((6, 7, 1)).astype(np.float32)
    affine = np.diag([0.5, 2.0, 3.0, 1.0])
    affine[:3, 3] = [1.0, 2.0, -30.0]
    nib.save(nib.Nifti1Image(array, affine), str(tmp_path / "s.nii.gz"))
    img = load_image(tmp_path / "s.nii.gz")
    assert img.data.shape == (1, 1, 6, 7) and img.ndim == 2
    np.testing.assert_array_equal(img.data[0, 0].numpy(), array[..., 0])
    np.testing.assert_allclose(img.affine, [[0.5, 0, 1], [0, 2, 2], [0, 0, 1]], atol=1e-6)

    # like= keeps the 4x4 (slice position z = -30, 3 mm thickness)
    save_image(tmp_path / "t.nii.gz", img.data * 2, img.affine, like=img)
    back = nib.load(str(tmp_path / "t.nii.gz"))
    assert back.shape == (6, 7)
    np.testing.assert_allclose(back.affine, affine, atol=1e-6)
    again = load_image(tmp_path / "t.nii.gz")
    np.testing.assert_allclose(again.data[0, 0].numpy(), 2 * array[..., 0], rtol=1e-6)
    np.testing.assert_allclose(again.affine, img.affine, atol=1e-6)

    # without like: the 3x3 is embedded with world z = 0
    save_image(tmp_path / "u.nii", img.data, img.affine)
    np.testing.assert_allclose(load_image(tmp_path / "u.nii").affine, img.affine, atol=1e-6)

    # a plain (X, Y) NIfTI and a 2D multi-channel one (X, Y, 1, C)
    nib.save(nib.Nifti1Image(array[..., 0], np.eye(4)), str(tmp_path / "p.nii"))
    assert load_image(tmp_path / "p.nii").data.shape == (1, 1, 6, 7)
    two = np.stack([array[..., 0], 1 - array[..., 0]])  # (2, 6, 7)
    save_image(tmp_path / "m.nii.gz", two, np.eye(3))
    assert nib.load(str(tmp_path / "m.nii.gz")).shape == (6, 7, 1, 2)
    m = load_image(tmp_path / "m.nii.gz")
    assert m.data.shape == (1, 2, 6, 7)
    np.testing.assert_allclose(m.data[0].numpy(), two, rtol=1e-6)


def test_nifti_2d_coronal_slice_keeps_an_invertible_affine(tmp_path):
    # array axes 0, 1 along world x and z (a coronal slice stored as (X, Z, 1))
    affine = np.array([[1.0, 0, 0, -5], [0, 0, 2.0, 7], [0, 1.5, 0, 3], [0, 0, 0, 1]])
    nib.save(nib.Nifti1Image(np.ones((4, 5, 1), np.float32), affine), str(tmp_path / "c.nii"))
    img = load_image(tmp_path / "c.nii")
    np.testing.assert_allclose(img.affine, [[1, 0, -5], [0, 1.5, 3], [0, 0, 1]], atol=1e-6)
    save_image(tmp_path / "d.nii", img.data, img.affine, like=img)
    np.testing.assert_allclose(nib.load(str(tmp_path / "d.nii")).affine, affine, atol=1e-6)


def test_save_like_keeps_header_not_dtype(tmp_path):
    affine = _affine3d()
    nii = nib.Nifti1Image(np.zeros((4, 5, 6), np.uint8), affine)
    nii.set_sform(affine, code=4)
    nii.set_qform(affine, code=4)
    nii.header["descrip"] = b"fixed image"
    nib.save(nii, str(tmp_path / "fixed.nii.gz"))
    fixed = load_image(tmp_path / "fixed.nii.gz")

    warped = torch.full((1, 1, 4, 5, 6), 0.4)
    save_image(tmp_path / "w.nii.gz", warped, fixed.affine, like=fixed)
    back = nib.load(str(tmp_path / "w.nii.gz"))
    assert back.header["sform_code"] == 4 and back.header["qform_code"] == 4
    assert back.header["descrip"].tobytes().startswith(b"fixed image")
    assert back.get_data_dtype() == np.float32  # intensities are not rounded to like's uint8
    np.testing.assert_allclose(np.asanyarray(back.dataobj), 0.4, rtol=1e-6)
    np.testing.assert_allclose(back.affine, affine, atol=1e-6)

    # explicit dtype: rounded and clipped, no scaling
    save_image(tmp_path / "u.nii.gz", torch.tensor([[-3.0, 0.6], [254.5, 300.0]])[..., None].expand(2, 2, 3),
               np.eye(4), like=fixed, dtype=fixed.dtype)
    u = nib.load(str(tmp_path / "u.nii.gz"))
    assert u.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asanyarray(u.dataobj)[..., 0], [[0, 1], [254, 255]])

    # affine=None takes like's affine
    save_image(tmp_path / "v.nii.gz", warped, like=fixed, dtype=torch.int16)
    v = nib.load(str(tmp_path / "v.nii.gz"))
    np.testing.assert_allclose(v.affine, affine, atol=1e-6)
    assert v.get_data_dtype() == np.int16


def test_save_dtypes(tmp_path):
    save_image(tmp_path / "b.nii", torch.ones(2, 3, 4, dtype=torch.bool), np.eye(4))
    assert nib.load(str(tmp_path / "b.nii")).get_data_dtype() == np.uint8
    save_image(tmp_path / "i.nii", torch.arange(24).reshape(2, 3, 4), np.eye(4))
    assert nib.load(str(tmp_path / "i.nii")).get_data_dtype() == np.int32
    save_image(tmp_path / "d.nii", np.zeros((2, 3, 4)), np.eye(4))
    assert nib.load(str(tmp_path / "d.nii")).get_data_dtype() == np.float64
    with pytest.raises(ValueError, match="NaN"):
        save_image(tmp_path / "n.nii", torch.full((2, 3, 4), float("nan")), np.eye(4), dtype="uint8")
    assert not (tmp_path / "n.nii").exists()


# --- 2D formats -------------------------------------------------------------------------------

def test_real_jpeg_slices_load_as_stored():
    for name in ("r16slice.jpg", "r64slice.jpg"):
        path = data_file(f"brain2d/{name}")
        img = load_image(path)
        expected = np.asarray(PILImage.open(path).convert("L"))
        assert img.data.shape == (1, 1, 256, 256) and img.data.dtype == torch.float32
        np.testing.assert_array_equal(img.data[0, 0].numpy(), expected)
        assert float(img.data.max()) > 1.0  # 0..255, not rescaled
        np.testing.assert_array_equal(img.affine, np.eye(3))
        assert img.dtype == np.uint8 and img.header is None


def test_png_round_trip_and_rows_first(tmp_path):
    array = np.random.default_rng(4).integers(0, 256, size=(5, 8)).astype(np.uint8)
    save_image(tmp_path / "a.png", torch.from_numpy(array.astype(np.float32))[None, None], np.eye(3))
    pil = PILImage.open(tmp_path / "a.png")
    assert pil.size == (8, 5) and pil.mode == "L"  # width = columns, height = rows
    img = load_image(tmp_path / "a.png")
    assert img.data.shape == (1, 1, 5, 8)
    np.testing.assert_array_equal(img.data[0, 0].numpy(), array)


def test_png_clip_round_and_16_bit(tmp_path):
    save_image(tmp_path / "a.png", np.array([[-5.0, 0.4, 0.6], [127.5, 254.6, 255.0]]))
    np.testing.assert_array_equal(np.asarray(PILImage.open(tmp_path / "a.png")), [[0, 0, 1], [128, 255, 255]])
    save_image(tmp_path / "b.png", np.array([[0.0, 1000.0], [70000.0, 3.0]]))
    img = load_image(tmp_path / "b.png", dtype=None)
    assert img.dtype in (np.uint16, np.int32)
    np.testing.assert_array_equal(img.data[0, 0].numpy(), [[0, 1000], [65535, 3]])
    save_image(tmp_path / "c.png", np.array([[0.0, 1000.0]]), dtype=torch.uint8)
    np.testing.assert_array_equal(np.asarray(PILImage.open(tmp_path / "c.png")), [[0, 255]])
    with pytest.raises(ValueError, match="uint8 or uint16"):
        save_image(tmp_path / "d.png", np.zeros((2, 2)), dtype="float32")
    with pytest.raises(ValueError, match="one 2D channel"):
        save_image(tmp_path / "e.png", np.zeros((2, 4, 4)), np.eye(3))
    with pytest.raises(ValueError, match="one 2D channel"):
        save_image(tmp_path / "f.png", np.zeros((4, 4, 4)), np.eye(4))
    assert _listing(tmp_path) == ["a.png", "b.png", "c.png"]


def test_rgb_png_and_tiff_become_luminance(tmp_path):
    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[..., 0] = 200
    rgb[1, 2] = [10, 250, 30]
    PILImage.fromarray(rgb).save(tmp_path / "c.png")
    img = load_image(tmp_path / "c.png")
    expected = np.asarray(PILImage.fromarray(rgb).convert("L"))
    np.testing.assert_array_equal(img.data[0, 0].numpy(), expected)
    assert img.data.shape == (1, 1, 4, 6)

    grey = np.random.default_rng(5).random((3, 5)).astype(np.float32) * 1000
    PILImage.fromarray(grey).save(tmp_path / "g.tif")
    tif = load_image(tmp_path / "g.tif")
    np.testing.assert_array_equal(tif.data[0, 0].numpy(), grey)
    assert tif.dtype == np.float32

    PILImage.fromarray(rgb).save(tmp_path / "j.jpeg", quality=95)
    assert load_image(tmp_path / "j.jpeg").data.shape == (1, 1, 4, 6)


# --- errors and atomicity ---------------------------------------------------------------------

def test_load_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.nii.gz"):
        load_image(tmp_path / "missing.nii.gz")
    (tmp_path / "x.mha").write_bytes(b"")
    with pytest.raises(ValueError, match=r"x\.mha.*unsupported file type '\.mha'"):
        load_image(tmp_path / "x.mha")
    nib.save(nib.Nifti1Image(np.zeros((2, 2, 2, 2, 2), np.float32), np.eye(4)), str(tmp_path / "t.nii"))
    with pytest.raises(ValueError, match=r"t\.nii.*5D NIfTI"):
        load_image(tmp_path / "t.nii")
    nib.save(nib.Nifti1Image(np.zeros((2, 2, 2, 1, 2, 2), np.float32), np.eye(4)), str(tmp_path / "six.nii"))
    with pytest.raises(ValueError, match=r"six\.nii.*6D NIfTI"):
        load_image(tmp_path / "six.nii")
    (tmp_path / "bad.nii.gz").write_bytes(b"not a nifti")
    with pytest.raises(ValueError, match=r"bad\.nii\.gz.*cannot read"):
        load_image(tmp_path / "bad.nii.gz")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"bad\.png.*cannot read"):
        load_image(tmp_path / "bad.png")
    with pytest.raises(TypeError, match="dtype"):
        load_image(tmp_path / "t.nii", dtype="float32")


def test_save_errors(tmp_path):
    with pytest.raises(ValueError, match=r"out\.jpg.*cannot write file type '\.jpg'"):
        save_image(tmp_path / "out.jpg", np.zeros((4, 4)), np.eye(3))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        save_image(tmp_path / "nowhere" / "a.nii.gz", np.zeros((2, 2, 2)), np.eye(4))
    with pytest.raises(ValueError, match="does not fit a 3D affine"):
        save_image(tmp_path / "a.nii.gz", np.zeros((2, 2)), np.eye(4))
    with pytest.raises(ValueError, match="batch size 1"):
        save_image(tmp_path / "a.nii.gz", np.zeros((2, 1, 2, 2, 2)), np.eye(4))
    with pytest.raises(ValueError, match="affine must be 3x3"):
        save_image(tmp_path / "a.nii.gz", np.zeros((2, 2, 2)), np.eye(5))
    with pytest.raises(ValueError, match="affine is required"):
        save_image(tmp_path / "a.nii.gz", np.zeros((2, 2, 2)))
    with pytest.raises(TypeError, match="data must be"):
        save_image(tmp_path / "a.nii.gz", [[[0.0]]], np.eye(4))
    assert _listing(tmp_path) == []


def test_save_is_atomic(tmp_path, monkeypatch):
    target = tmp_path / "out.nii.gz"
    save_image(target, np.ones((2, 2, 2), np.float32), np.eye(4))
    before = target.read_bytes()

    def broken_save(img, filename):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(rio.image.nib, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_image(target, np.zeros((2, 2, 2), np.float32), np.eye(4))
    with pytest.raises(OSError, match="disk full"):
        save_image(tmp_path / "new.nii", np.zeros((2, 2, 2), np.float32), np.eye(4))
    monkeypatch.setattr(rio.displacement.nib, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_ddf(tmp_path / "ddf.nii", np.zeros((3, 2, 2, 2)), np.eye(4))

    def broken_gzip(fileobj, **kwargs):  # fields go to .nii.gz as stored gzip blocks, not through nib.save
        fileobj.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(rio.displacement.gzip, "GzipFile", broken_gzip)
    with pytest.raises(OSError, match="disk full"):
        save_ddf(tmp_path / "ddf.nii.gz", np.zeros((3, 2, 2, 2)), np.eye(4))
    assert _listing(tmp_path) == ["out.nii.gz"]  # no temporary file, no partial new file
    assert target.read_bytes() == before  # the old file is untouched

    def broken_png(self, fp, *args, **kwargs):
        with open(fp, "wb") as f:
            f.write(b"partial")
        raise OSError("full")

    monkeypatch.setattr(PILImage.Image, "save", broken_png)
    with pytest.raises(OSError, match="full"):
        save_image(tmp_path / "a.png", np.zeros((2, 2)))
    assert _listing(tmp_path) == ["out.nii.gz"]


def test_saved_file_permissions_follow_umask(tmp_path):
    old = os.umask(0o022)
    try:
        save_image(tmp_path / "a.nii", np.zeros((2, 2, 2), np.float32), np.eye(4))
    finally:
        os.umask(old)
    assert (tmp_path / "a.nii").stat().st_mode & 0o777 == 0o644


# --- displacement fields and affine files -----------------------------------------------------

def test_save_ddf_itk_layout_lps_mm(tmp_path):
    rng = np.random.default_rng(6)
    affine = _affine3d()
    ddf = torch.from_numpy(rng.normal(size=(1, 3, 4, 5, 6)))
    save_ddf(tmp_path / "ddf.nii.gz", ddf, affine)
    nii = nib.load(str(tmp_path / "ddf.nii.gz"))
    assert nii.shape == (4, 5, 6, 1, 3) and nii.get_data_dtype() == np.float32
    assert nii.header.get_intent()[0] == "vector"
    assert nii.header.get_xyzt_units()[0] == "mm"
    np.testing.assert_allclose(nii.affine, affine, atol=1e-6)
    stored = np.asanyarray(nii.dataobj)[:, :, :, 0, :]  # (X, Y, Z, 3)
    world_ras = np.einsum("ij,jxyz->xyzi", affine[:3, :3], ddf[0].numpy())
    np.testing.assert_allclose(stored, world_ras * [-1, -1, 1], rtol=1e-5, atol=1e-5)

    back, back_affine = load_ddf(tmp_path / "ddf.nii.gz", dtype=torch.float64)
    assert back.shape == (1, 3, 4, 5, 6)
    np.testing.assert_allclose(back.numpy(), ddf.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(back_affine, affine, atol=1e-6)


def test_ddf_2d_round_trip(tmp_path):
    affine = np.array([[0.0, -2.0, 5.0], [1.5, 0.0, -3.0], [0, 0, 1]])
    ddf = torch.randn(2, 7, 8)
    save_ddf(tmp_path / "d.nii", ddf, affine)
    nii = nib.load(str(tmp_path / "d.nii"))
    assert nii.shape == (7, 8, 1, 1, 2)
    stored = np.asanyarray(nii.dataobj)[:, :, 0, 0, :]
    np.testing.assert_allclose(stored, -np.einsum("ij,jxy->xyi", affine[:2, :2], ddf.numpy()), rtol=1e-5, atol=1e-5)
    back, back_affine = load_ddf(tmp_path / "d.nii")
    assert back.shape == (1, 2, 7, 8) and back.dtype == torch.float32
    np.testing.assert_allclose(back.numpy()[0], ddf.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(back_affine, affine, atol=1e-6)


def test_load_ddf_dispvect_is_ras(tmp_path):
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    world = np.zeros((3, 3, 3, 1, 3), np.float32)
    world[..., 0] = 4.0  # 4 mm towards R
    nii = nib.Nifti1Image(world, affine)
    nii.header.set_intent("displacement vector", ())
    nib.save(nii, str(tmp_path / "d.nii"))
    ddf, _ = load_ddf(tmp_path / "d.nii")
    np.testing.assert_allclose(ddf[0, 0].numpy(), 2.0)  # 2 voxels along array axis 0
    np.testing.assert_allclose(ddf[0, 1:].numpy(), 0.0)


def test_ddf_errors(tmp_path):
    with pytest.raises(ValueError, match=r"\(1, 3, \*spatial\)"):
        save_ddf(tmp_path / "d.nii", np.zeros((1, 2, 3, 3, 3)), np.eye(4))
    with pytest.raises(ValueError, match="NIfTI"):
        save_ddf(tmp_path / "d.png", np.zeros((2, 3, 3)), np.eye(3))
    nib.save(nib.Nifti1Image(np.zeros((3, 3, 3), np.float32), np.eye(4)), str(tmp_path / "img.nii"))
    with pytest.raises(ValueError, match=r"img\.nii.*\(X, Y, Z, 1, 3\)"):
        load_ddf(tmp_path / "img.nii")
    nib.save(nib.Nifti1Image(np.zeros((3, 3, 3, 1, 3), np.float32), np.eye(4)), str(tmp_path / "noint.nii"))
    with pytest.raises(ValueError, match="intent code 0"):
        load_ddf(tmp_path / "noint.nii")
    with pytest.raises(FileNotFoundError, match="none.nii"):
        load_ddf(tmp_path / "none.nii")


def test_affine_txt_round_trip(tmp_path):
    m = _affine3d()
    save_affine(tmp_path / "affine.txt", m)
    np.testing.assert_array_equal(load_affine(tmp_path / "affine.txt"), m)  # exact (17 digits)
    (tmp_path / "bad.txt").write_text("1 0 0\n0 1 0\n0 1 1\n")
    with pytest.raises(ValueError, match="last row"):
        load_affine(tmp_path / "bad.txt")
    with pytest.raises(FileNotFoundError):
        load_affine(tmp_path / "none.txt")


def test_image_is_a_dataclass_with_defaults():
    img = Image(torch.zeros(1, 1, 2, 3), np.eye(3))
    assert img.path is None and img.ndim == 2 and img.spacing == (1.0, 1.0)
