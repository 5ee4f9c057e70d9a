"""``regnet template`` (regnet.pipeline.template, .template_steps): the shape update's sign and
parts, sharpening, unbiasedness on a case with a known centre, 2D and 3D runs, resuming, bad
input. Tiny synthetic images (2D 32 x 32, 3D 16^3) and few iterations."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_register_many import TINY, TINY_YAML, blob_image, write_nifti

from regnet import ops
from regnet.cli import main
from regnet.geometry import invert_ddf, matrix_to_ddf
from regnet.io import load_image
from regnet.pipeline.pairs import PairsError
from regnet.pipeline.template import build_template, template_inputs
from regnet.pipeline.template_steps import laplacian_sharpen, mean_stretch, stretch, update_field


def _smooth_field(shape, amplitude, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn((1, len(shape), *[4] * len(shape)), generator=g, dtype=torch.float64)
    mode = "bilinear" if len(shape) == 2 else "trilinear"
    field = torch.nn.functional.interpolate(coarse, size=shape, mode=mode, align_corners=True)
    return field * (amplitude / field.abs().max())


# --- the steps -------------------------------------------------------------------------------

def test_update_field_inverts_the_mean_map():
    """A template T0 = B o (id + u) (subjects B, all registered with field u): the update pulls
    the average back through exp(-u), giving B as well as the exact inverse of id + u does (what
    remains is the blur of two interpolations)."""
    image, _ = blob_image((16, 16), (9, 7), noise=0)
    b = torch.from_numpy(image).double()[None, None]
    u = _smooth_field((32, 32), 1.5)
    t0 = ops.warp(b, u)
    psi = update_field(u, None, np.zeros(2), np.eye(3), (32, 32)).double()
    error = float((ops.warp(t0, psi) - b).abs().mean())
    exact = float((ops.warp(t0, invert_ddf(u)) - b).abs().mean())
    error_before = float((t0 - b).abs().mean())
    assert error < 0.6 * error_before and error < 1.05 * exact
    # half a step goes part of the way
    half = ops.warp(t0, update_field(u, None, np.zeros(2), np.eye(3), (32, 32), step=0.5).double())
    assert error < float((half - b).abs().mean()) < 0.9 * error_before


def test_stretch_update_grows_a_too_small_template():
    """Subjects 1.2x larger than the template (affines x -> c + 1.2 R (x - c)): the update
    magnifies the template by 1.2 about its centre; the rotation is left out."""
    angle = 0.3
    r = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    m = np.eye(3)
    m[:2, :2] = 1.2 * r
    np.testing.assert_allclose(stretch(m), 1.2 * np.eye(2), atol=1e-12)
    np.testing.assert_allclose(mean_stretch([m, np.eye(3)]), 1.1 * np.eye(2), atol=1e-12)
    centre = np.array([15.5, 15.5])
    psi = update_field(None, 1.2 * np.eye(2), centre, np.eye(3), (32, 32))
    expected = matrix_to_ddf(np.diag([1 / 1.2, 1 / 1.2, 1]) @ _translate(centre * (1.2 - 1)), (32, 32))
    torch.testing.assert_close(psi.double(), expected, atol=1e-5, rtol=0)


def _translate(t) -> np.ndarray:
    m = np.eye(3)
    m[:2, 2] = t
    return m


def test_laplacian_sharpen():
    flat = torch.full((1, 1, 8, 8), 0.5)
    torch.testing.assert_close(laplacian_sharpen(flat), flat)
    edge = torch.zeros(1, 1, 8, 8)
    edge[..., 4:] = 1.0
    blurred = (edge + torch.roll(edge, 1, -1) + torch.roll(edge, -1, -1)) / 3
    sharp = laplacian_sharpen(blurred)
    assert float(sharp.min()) >= 0 and float(sharp.max()) <= 1  # clipped to the image's range
    steepest = float((blurred[..., 1:] - blurred[..., :-1]).abs().max())
    assert float((sharp[..., 1:] - sharp[..., :-1]).abs().max()) > steepest


# --- whole templates -------------------------------------------------------------------------

def _blob_area(path) -> float:
    data = load_image(path).data[0, 0]
    return float((data > 0.5 * float(data.max())).sum())


def test_template_2d_is_centred_and_resumable(tmp_path):
    """Subjects of radii 0.8x, 1x and 1.25x a base blob; the reference (grid and initial pose)
    is the smallest: the template ends near the middle size, not the reference's."""
    folder = tmp_path / "images"
    folder.mkdir()
    for name, scale in (("a_small", 0.8), ("b_mid", 1.0), ("c_large", 1.25)):
        write_nifti(folder / f"{name}.nii.gz", *blob_image((16, 16), (8 * scale, 6 * scale), seed=int(10 * scale)))
    out = tmp_path / "template"
    log = build_template(folder, out, iterations=1, config=TINY, verbose=False)
    assert [e["kind"] for e in log["rounds"]] == ["affine", "deformable", "final"]
    names = {"template.nii.gz", "initial_average.nii.gz", "template.json", "convergence.csv", "convergence.json",
             "round_00", "round_01", "subjects"}
    assert {p.name for p in out.iterdir()} == names
    for round_ in ("round_00", "round_01"):
        assert {"template.nii.gz", "overview.png", "summary.csv", "a_small", "b_mid", "c_large"} <= {
            p.name for p in (out / round_).iterdir()}
    assert {"warp.nii.gz", "affine.mat"} <= {p.name for p in (out / "subjects" / "b_mid").iterdir()}
    template = load_image(out / "template.nii.gz")
    reference = load_image(folder / "a_small.nii.gz")
    assert template.spatial_shape == reference.spatial_shape
    np.testing.assert_allclose(template.affine, reference.affine)
    areas = {name: _blob_area(folder / f"{name}.nii.gz") for name in ("a_small", "b_mid", "c_large")}
    area = _blob_area(out / "template.nii.gz")
    assert abs(area - areas["b_mid"]) < 0.5 * abs(areas["a_small"] - areas["b_mid"]), (area, areas)
    final = log["rounds"][-1]
    assert final["subjects"] == 3 and final["failed"] == 0 and final["mean_ncc"] > final["mean_ncc_before"]
    assert final["stretch_deviation"] < 0.06  # the mean stretch to the subjects is near the identity

    # a rerun with the same settings resumes (nothing registered again); other settings are refused
    stamp = (out / "round_01" / "b_mid" / "report.json").stat().st_mtime_ns
    build_template(folder, out, iterations=1, config=TINY, verbose=False)
    assert (out / "round_01" / "b_mid" / "report.json").stat().st_mtime_ns == stamp
    with pytest.raises(FileExistsError, match="other settings"):
        build_template(folder, out, iterations=2, config=TINY, verbose=False)


def test_template_3d_cli(tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(*[np.arange(16.0)] * 3, indexing="ij"))
    listing = []
    for i in range(3):
        radii = np.array([5.0, 4.0, 4.5]) * (1 + 0.1 * (i - 1))
        d2 = (((grid - 7.5 - rng.normal(0, 0.5, (3, 1, 1, 1))) / radii.reshape(3, 1, 1, 1)) ** 2).sum(0)
        image = (100 / (1 + np.exp(6 * (d2 - 1))) + rng.normal(0, 0.5, d2.shape)).astype(np.float32)
        listing.append(str(write_nifti(folder / f"s{i}.nii.gz", image, np.diag([3.0, 3.0, 3.0, 1.0]))))
    (tmp_path / "list.txt").write_text("# subjects\n" + "\n".join(listing) + "\n")
    (tmp_path / "tiny.yaml").write_text(TINY_YAML)
    status = main(["template", "--images", str(tmp_path / "list.txt"), "--out", str(tmp_path / "t"), "--iterations",
                   "1", "--config", str(tmp_path / "tiny.yaml"), "--quiet", "--sharpen", "0",
                   "--no-final-registration"])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "round 1 (deformable): 3 subjects" in out
    template = load_image(tmp_path / "t" / "template.nii.gz")
    assert template.spatial_shape == (16, 16, 16) and not (tmp_path / "t" / "subjects").exists()
    log = json.loads((tmp_path / "t" / "convergence.json").read_text())
    assert [e["round"] for e in log["rounds"]] == [0, 1] and log["settings"]["sharpen"] == 0


def test_bad_template_input(tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    write_nifti(folder / "a.nii.gz", *blob_image((16, 16), (8, 6)))
    with pytest.raises(PairsError, match="at least two"):
        template_inputs(folder)
    write_nifti(folder / "b.nii.gz", np.ones((8, 8, 8), np.float32), np.eye(4))
    with pytest.raises(PairsError, match="mixed 2D and 3D"):
        template_inputs(folder)
    with pytest.raises(PairsError, match="no such file"):
        template_inputs([folder / "a.nii.gz", folder / "nope.nii.gz"])
    assert main(["template", "--images", str(folder), "--out", str(tmp_path / "t")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("regnet template: error:") and "mixed 2D and 3D" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "t").exists()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "x.txt").write_text("x")
    (folder / "b.nii.gz").unlink()
    write_nifti(folder / "b.nii.gz", *blob_image((15, 16), (8, 6)))
    with pytest.raises(FileExistsError, match="no regnet template.json"):
        build_template(folder, foreign, iterations=0, config=TINY, verbose=False)
