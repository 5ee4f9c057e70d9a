"""regnet.pipeline (``regnet register`` / ``regnet apply``): outputs on the fixed grid, world
space across different grids, atomic output folders, config checks, ``apply`` reproducing
``warped``. Inputs are tiny (64 x 64 PNGs, 3D volumes of ~20^3) and iterations few."""

from __future__ import annotations

import inspect
import json
import os
from importlib import resources

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from regnet.io import load_affine, load_ddf, load_image
from regnet.pipeline import (
    ConfigError,
    apply_transform,
    load_config,
    register_files,
    total_ddf,
)

TINY_CONFIG = """\
affine:
  scales: [2, 1]
  iterations: [20, 5]
syn:
  scales: [2, 1]
  iterations: [6, 2]
"""
REPORT_KEYS = {"regnet_version", "transform", "device", "config", "settings", "fixed", "moving",
               "intensity_range", "metrics", "loss_history", "time_s", "jacobian", "files"}


def _bundled(name):
    return resources.files("regnet").joinpath("data", name)


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_CONFIG)
    return path


@pytest.fixture
def pngs(tmp_path):
    """The bundled slices r64 (fixed) and r16 (moving) downsampled to 64 x 64 PNGs."""
    paths = []
    for name in ("r64slice.jpg", "r16slice.jpg"):
        with _bundled(name).open("rb") as file:
            image = PILImage.open(file).convert("L").resize((64, 64), PILImage.BILINEAR)
        path = tmp_path / name.replace(".jpg", "_64.png")
        image.save(path)
        paths.append(path)
    return paths


def _write(path, array, affine):
    image = nib.Nifti1Image(array, affine)
    image.set_sform(affine, code=1)
    image.set_qform(affine, code=1)
    nib.save(image, str(path))
    return path


@pytest.fixture
def volumes(tmp_path):
    """The bundled 3D brain (and labels) on two different grids: fixed 27 x 32 x 38 at 6 mm;
    moving cropped, 6 x 6 x 9 mm voxels (another shape, spacing and origin) and shifted in
    world space by 4 mm along x (a misalignment for the affine part to find)."""
    with resources.as_file(_bundled("brain3d_t1.nii.gz")) as path:
        t1 = nib.load(str(path))
        image, affine = np.asarray(t1.dataobj), t1.affine
    with resources.as_file(_bundled("brain3d_aseg.nii.gz")) as path:
        labels = np.asarray(nib.load(str(path)).dataobj)

    def grid(start, step):
        index = tuple(slice(a, None, s) for a, s in zip(start, step))
        m = np.eye(4)
        m[:3, :3] = np.diag(step)
        m[:3, 3] = start
        return index, affine @ m

    fixed_index, fixed_affine = grid((0, 0, 0), (2, 2, 2))
    moving_index, moving_affine = grid((3, 1, 2), (2, 2, 3))
    moving_affine = moving_affine.copy()
    moving_affine[0, 3] += 4.0
    return {
        "fixed": _write(tmp_path / "fixed.nii.gz", image[fixed_index], fixed_affine),
        "moving": _write(tmp_path / "moving.nii.gz", image[moving_index], moving_affine),
        "moving_labels": _write(tmp_path / "moving_labels.nii.gz", labels[moving_index], moving_affine),
        "fixed_shape": image[fixed_index].shape,
        "fixed_affine": fixed_affine,
        "moving_affine": moving_affine,
        "moving_array": image[moving_index],
    }


def _listing(folder):
    return sorted(p.name for p in folder.iterdir())


def _expected_files(transform, warped):
    files = {"ddf.nii.gz", warped, "overview.png", "report.json"}
    if "affine" in transform:
        files |= {"affine.txt", "affine.mat"}  # regnet's and ANTs' (0GenericAffine.mat) affine files
    if "syn" in transform:
        files |= {"inverse_ddf.nii.gz", "warp.nii.gz", "inverse_warp.nii.gz"}  # + ANTs' deformable pair
    return files


# --- 2D pictures ----------------------------------------------------------------------------

@pytest.mark.parametrize("transform", ["affine", "syn", "affine+syn"])
def test_register_2d_pngs(transform, pngs, config, tmp_path):
    fixed, moving = pngs
    out = tmp_path / "out"
    report = register_files(fixed, moving, transform, out, config=config, verbose=False)
    assert set(_listing(out)) == _expected_files(transform, "warped.png")
    assert _listing(tmp_path) == sorted([fixed.name, moving.name, "tiny.yaml", "out"])  # no temporary folders

    with PILImage.open(out / "warped.png") as warped:
        assert warped.mode == "L" and warped.size == (64, 64)
    ddf, affine = load_ddf(out / "ddf.nii.gz")
    assert ddf.shape == (1, 2, 64, 64) and np.allclose(affine, np.eye(3))
    if "affine" in transform:
        assert load_affine(out / "affine.txt").shape == (3, 3)

    saved = json.loads((out / "report.json").read_text())
    assert REPORT_KEYS <= set(saved)
    assert saved["transform"] == transform and saved["config"] == str(config)
    stages = [s for s in ("affine", "syn") if s in transform]
    assert sorted(saved["loss_history"]) == sorted(stages) and sorted(saved["settings"]) == sorted(stages)
    for stage in stages:
        assert len(saved["loss_history"][stage]) == len(saved["time_s"][stage]["levels"]) == 2
    if "syn" in transform:
        assert [len(level) for level in saved["loss_history"]["syn"]] == [6, 2]
        assert saved["settings"]["syn"]["iterations"] == [6, 2]
    assert set(saved["jacobian"]) == {"fraction_nonpositive", "std_log", "min", "max", "mean"}
    ncc = saved["metrics"]["global_ncc"]
    assert ncc["after"] > ncc["before"] + 0.1
    assert report["out_dir"] == str(out.absolute())

    # apply of the moving image itself reproduces warped.png exactly
    applied = apply_transform(fixed, moving, out, tmp_path / "applied.png", "linear")
    np.testing.assert_array_equal(np.asarray(PILImage.open(applied)), np.asarray(PILImage.open(out / "warped.png")))


def test_overview_and_2d_ddf_on_disk(pngs, config, tmp_path):
    fixed, moving = pngs
    out = tmp_path / "out"
    register_files(fixed, moving, "affine+syn", out, config=config, verbose=False)
    with PILImage.open(out / "overview.png") as overview:
        assert overview.format == "PNG" and overview.size[0] > 3 * overview.size[1] > 0
    stored = nib.load(str(out / "ddf.nii.gz"))
    assert stored.shape == (64, 64, 1, 1, 2) and stored.header["intent_code"] == 1007


# --- 3D, different grids --------------------------------------------------------------------

@pytest.mark.parametrize("transform", ["affine", "syn", "affine+syn"])
def test_register_3d_different_grids(transform, volumes, config, tmp_path):
    out = tmp_path / "out"
    report = register_files(volumes["fixed"], volumes["moving"], transform, out, config=config, verbose=False)
    assert set(_listing(out)) == _expected_files(transform, "warped.nii.gz")

    warped = nib.load(str(out / "warped.nii.gz"))  # on the fixed grid, with the fixed affine
    assert warped.shape == volumes["fixed_shape"]
    np.testing.assert_allclose(warped.affine, volumes["fixed_affine"], atol=1e-5)
    assert warped.get_data_dtype() == np.float32
    values = np.asarray(warped.dataobj)
    assert values.min() >= 0 and values.max() <= volumes["moving_array"].max() + 1e-3  # moving's intensities
    if "affine" in transform:
        matrix = load_affine(out / "affine.txt")
        assert matrix.shape == (4, 4) and np.allclose(matrix[3], [0, 0, 0, 1])
    ddf, affine = load_ddf(out / "ddf.nii.gz")
    assert ddf.shape == (1, 3, *volumes["fixed_shape"])
    np.testing.assert_allclose(affine, volumes["fixed_affine"], atol=1e-5)
    assert report["moving"]["shape"] != report["fixed"]["shape"]
    ncc = report["metrics"]["global_ncc"]
    assert ncc["after"] > ncc["before"]

    applied = apply_transform(volumes["fixed"], volumes["moving"], out, tmp_path / "applied.nii.gz", "linear")
    np.testing.assert_allclose(np.asarray(nib.load(str(applied)).dataobj), values, atol=1e-5)

    labels = apply_transform(volumes["fixed"], volumes["moving_labels"], out, tmp_path / "labels.nii.gz", "nearest")
    mapped = nib.load(str(labels))
    assert mapped.get_data_dtype() == np.int16 and mapped.shape == volumes["fixed_shape"]
    source = set(np.unique(np.asarray(nib.load(str(volumes["moving_labels"])).dataobj)).tolist())
    assert set(np.unique(np.asarray(mapped.dataobj)).tolist()) <= source


def test_affine_finds_the_header_shift(volumes, tmp_path):
    """The moving header is shifted by +4 mm along x: through the headers the brains are 4 mm
    apart, and affine.txt (fixed world -> moving world) translates by about +4 mm."""
    out = tmp_path / "out"
    cfg = {"affine": {"scales": [2, 1], "iterations": [100, 30]}}
    register_files(volumes["fixed"], volumes["moving"], "affine", out, config=cfg, verbose=False)
    matrix = load_affine(out / "affine.txt")
    centre = np.append(volumes["fixed_affine"][:3, :3] @ (np.array(volumes["fixed_shape"]) / 2)
                       + volumes["fixed_affine"][:3, 3], 1)
    shift = (matrix @ centre - centre)[:3]
    assert abs(shift[0] - 4.0) < 1.5 and np.abs(shift[1:]).max() < 1.5


def test_affine_starts_from_the_world_centres_of_mass(volumes, tmp_path):
    """A header 50 mm off (the brains barely overlap on the fixed grid through the headers):
    the centre-of-mass start in world space brings them together before the affine stage."""
    array, affine = volumes["moving_array"], volumes["moving_affine"].copy()
    affine[0, 3] += 46.0  # +4 mm already in the fixture: 50 mm in all
    moving = _write(tmp_path / "far.nii.gz", array, affine)
    out = tmp_path / "out"
    cfg = {"affine": {"scales": [2, 1], "iterations": [100, 30]}}
    report = register_files(volumes["fixed"], moving, "affine", out, config=cfg, verbose=False)
    matrix = load_affine(out / "affine.txt")
    centre = np.append(volumes["fixed_affine"][:3, :3] @ (np.array(volumes["fixed_shape"]) / 2)
                       + volumes["fixed_affine"][:3, 3], 1)
    shift = (matrix @ centre - centre)[:3]
    assert abs(shift[0] - 50.0) < 2.0 and np.abs(shift[1:]).max() < 2.0
    assert abs(report["start_translation_mm"][0] - 50.0) < 10.0
    assert report["metrics"]["global_ncc"]["after"] > 0.9


def test_apply_is_world_space(volumes, config, tmp_path):
    """apply reads the moving image on its own grid: the same image stored flipped along an
    axis (array reversed, affine adjusted) maps to the same result."""
    out = tmp_path / "out"
    register_files(volumes["fixed"], volumes["moving"], "affine+syn", out, config=config, verbose=False)
    array, affine = volumes["moving_array"], volumes["moving_affine"]
    flip = np.eye(4)
    flip[0, 0], flip[0, 3] = -1, array.shape[0] - 1
    flipped = _write(tmp_path / "flipped.nii.gz", np.ascontiguousarray(array[::-1]), affine @ flip)
    a = apply_transform(volumes["fixed"], volumes["moving"], out, tmp_path / "a.nii.gz", "linear")
    b = apply_transform(volumes["fixed"], flipped, out, tmp_path / "b.nii.gz", "linear")
    np.testing.assert_allclose(np.asarray(nib.load(str(b)).dataobj), np.asarray(nib.load(str(a)).dataobj),
                               atol=1e-3)


def test_total_ddf_composes_matrix_and_syn():
    """x -> M A_f (x + u(x)) in fixed voxels."""
    fixed_affine = np.diag([2.0, 3.0, 1.0])
    fixed_affine[:2, 2] = [5.0, -1.0]
    matrix = np.array([[1.0, 0.1, 2.0], [0.0, 0.9, -3.0], [0, 0, 1]])
    u = torch.randn(1, 2, 5, 6, dtype=torch.float64)
    ddf = total_ddf(matrix, u, (5, 6), fixed_affine)
    i, j = 3, 4
    x = np.array([i + float(u[0, 0, i, j]), j + float(u[0, 1, i, j]), 1.0])
    target = np.linalg.inv(fixed_affine) @ matrix @ fixed_affine @ x
    np.testing.assert_allclose(ddf[0, :, i, j].numpy(), target[:2] - [i, j], atol=1e-10)


# --- output folder: atomic, replaced only on success ----------------------------------------

def test_failed_run_leaves_no_folder(pngs, config, tmp_path, monkeypatch):
    import regnet.pipeline.outputs

    def broken(*args, **kwargs):
        raise RuntimeError("simulated failure while drawing")

    monkeypatch.setattr(regnet.pipeline.outputs, "save_overview", broken)
    fixed, moving = pngs
    before = _listing(tmp_path)
    with pytest.raises(RuntimeError, match="simulated failure"):
        register_files(fixed, moving, "affine+syn", tmp_path / "new" / "deeper" / "out", config=config,
                       verbose=False)
    assert _listing(tmp_path) == before  # no DIR, no parents, no temporary sibling

    existing = tmp_path / "existing"  # an earlier regnet output: kept as it was
    existing.mkdir()
    (existing / "report.json").write_text(json.dumps({"regnet_version": "0"}))
    (existing / "warped.png").write_bytes(b"earlier result")
    with pytest.raises(RuntimeError, match="simulated failure"):
        register_files(fixed, moving, "affine", existing, config=config, verbose=False)
    assert _listing(existing) == ["report.json", "warped.png"]
    assert (existing / "warped.png").read_bytes() == b"earlier result"
    assert _listing(tmp_path) == sorted(before + ["existing"])


def test_existing_output_replaced_on_success(pngs, config, tmp_path):
    fixed, moving = pngs
    out = tmp_path / "out"
    register_files(fixed, moving, "affine+syn", out, config=config, verbose=False)
    assert "inverse_ddf.nii.gz" in _listing(out)
    register_files(fixed, moving, "affine", out, config=config, verbose=False)  # replaced as a whole
    assert set(_listing(out)) == _expected_files("affine", "warped.png")
    empty = tmp_path / "empty"
    empty.mkdir()
    register_files(fixed, moving, "affine", empty, config=config, verbose=False)
    assert "report.json" in _listing(empty)


def test_foreign_folder_is_not_replaced(pngs, config, tmp_path):
    fixed, moving = pngs
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="refusing to replace"):
        register_files(fixed, moving, "affine", mine, config=config, verbose=False)
    assert _listing(mine) == ["notes.txt"]

    out = tmp_path / "out"  # a regnet output with a file of the user's in it
    register_files(fixed, moving, "affine", out, config=config, verbose=False)
    (out / "fixed_copy.nii.gz").write_bytes(b"mine")
    with pytest.raises(FileExistsError, match=r"files regnet did not write \(fixed_copy.nii.gz\)"):
        register_files(fixed, moving, "affine", out, config=config, verbose=False)
    assert (out / "fixed_copy.nii.gz").read_bytes() == b"mine"


# --- config -----------------------------------------------------------------------------------

@pytest.mark.parametrize("text, match", [
    ("affine:\n  iteration: [5, 5]\n", r"unknown key 'affine.iteration' \(did you mean 'iterations'\?\)"),
    ("syn:\n  sigma: 1.0\n", r"unknown key 'syn.sigma'"),
    ("sym:\n  scales: [1]\n", r"unknown key 'sym'.*did you mean 'syn'"),
    ("affine:\n  verbose: false\n", r"'affine.verbose' cannot be set.*--quiet"),
    ("syn:\n  dissimilarity_function: ssd\n", r"'syn.dissimilarity_function' has unknown name 'ssd'"),
    ("syn:\n  dissimilarity_function: {name: lncc, width: 3}\n", r"syn.dissimilarity_function"),
    ("affine:\n  optimizer: lbfgs\n", r"'affine.optimizer' must be one of"),
    ("affine:\n  scales: [0.5]\n  iterations: [3]\n", r"section 'affine'.*scales"),
    ("affine: [1, 2]\n", r"section 'affine' must be a mapping"),
    ("- affine\n", r"expected a mapping"),
    ("affine: {scales: [1\n", r"not valid YAML"),
])
def test_bad_config_is_a_clear_error(text, match, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_config(path)


def test_config_names_and_defaults(tmp_path):
    from regnet.losses import GlobalMILoss, LocalNCCLoss

    config = load_config({"affine": {"dissimilarity_function": {"name": "mi", "num_bins": 16}, "optimizer": "sgd",
                                     "init": None},
                          "syn": {"dissimilarity_function": "lncc", "regularization_function": "bending"}})
    affine = config.build("affine", verbose=False)
    assert isinstance(affine.dissimilarity_function, GlobalMILoss) and affine.optimizer is torch.optim.SGD
    assert isinstance(config.build("syn", verbose=False).dissimilarity_function, LocalNCCLoss)
    settings = config.settings("syn")
    assert settings["regularization_function"] == "bending" and settings["scales"] == [4, 2, 1]
    # SyN's default regulariser depends on the dimension: reported resolved when ndim is known
    defaults = load_config(None)
    assert defaults.settings("syn")["regularization_function"] is None
    assert "divergence_weight=4.0" in defaults.settings("syn", 3)["regularization_function"]
    assert "divergence_weight" not in defaults.settings("syn", 2)["regularization_function"]
    three, two = defaults.settings("syn", 3), defaults.settings("syn", 2)
    assert (three["time_steps"], three["lambda_"], three["iterations"]) == (5, 0.6, [40, 20, 0])
    assert (two["time_steps"], two["lambda_"], two["iterations"]) == (7, 0.1, [30, 20, 5])
    assert load_config(None).kwargs == {"affine": {}, "syn": {}}
    (tmp_path / "empty.yaml").write_text("")
    assert load_config(tmp_path / "empty.yaml").kwargs == {"affine": {}, "syn": {}}
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "missing.yaml")


def test_bundled_presets_load():
    from pathlib import Path

    from regnet.registration import SyNRegistration
    from regnet.registration.descent import NormalisedDescent
    from regnet.registration.syn import (
        default_iterations,
        default_regularisation,
        default_regulariser,
        default_time_steps,
        default_velocity_scale,
    )

    configs = Path(__file__).resolve().parents[1] / "configs"
    for name in ("affine.yaml", "syn_brain.yaml", "syn_brain_accurate.yaml"):
        load_config(configs / name)
    # syn_brain.yaml spells out the 3D defaults: it must not drift from the code
    syn = load_config(configs / "syn_brain.yaml").kwargs["syn"]
    assert list(syn["iterations"]) == default_iterations(syn["scales"], 3)
    assert syn["lambda_"] == default_regularisation(3) and syn["velocity_scale"] == default_velocity_scale(3)
    assert repr(syn["regularization_function"]) == repr(default_regulariser(3))
    defaults = inspect.signature(SyNRegistration).parameters
    assert syn["time_steps"] == default_time_steps(3)
    for key in ("learning_rate", "sigma_flow", "sigma_img", "tolerance", "check_every"):
        assert syn[key] == defaults[key].default, key
    assert syn["optimizer"] is NormalisedDescent and defaults["optimizer"].default is NormalisedDescent
    accurate = load_config(configs / "syn_brain_accurate.yaml").kwargs["syn"]
    assert accurate["scales"][-1] == 1 and accurate["iterations"][-1] > 0  # a full-resolution level


def test_bad_config_fails_before_any_output(pngs, tmp_path):
    fixed, moving = pngs
    path = tmp_path / "bad.yaml"
    path.write_text("syn:\n  iteration: 3\n")
    with pytest.raises(ConfigError, match="syn.iteration"):
        register_files(fixed, moving, "syn", tmp_path / "out", config=path, verbose=False)
    assert not (tmp_path / "out").exists()


# --- errors -----------------------------------------------------------------------------------

def test_register_errors(pngs, volumes, tmp_path):
    fixed, moving = pngs
    with pytest.raises(ValueError, match="transform must be one of"):
        register_files(fixed, moving, "rigid", tmp_path / "a", verbose=False)
    with pytest.raises(ValueError, match="2D.*3D|3D.*2D"):
        register_files(fixed, volumes["moving"], "affine", tmp_path / "b", verbose=False)
    with pytest.raises(FileNotFoundError):
        register_files(fixed, tmp_path / "missing.png", "affine", tmp_path / "c", verbose=False)
    assert not any((tmp_path / name).exists() for name in "abc")


def test_apply_errors(pngs, volumes, config, tmp_path):
    fixed, moving = pngs
    out = tmp_path / "out"
    register_files(fixed, moving, "affine", out, config=config, verbose=False)
    with pytest.raises(ValueError, match="pass the fixed image of that registration"):
        apply_transform(_other_png(tmp_path), moving, out, tmp_path / "x.png")
    with pytest.raises(ValueError, match="interp"):
        apply_transform(fixed, moving, out, tmp_path / "x.png", "cubic")
    with pytest.raises(ValueError, match="neither ddf.nii.gz nor affine.txt"):  # an ArgumentError: exit status 2
        apply_transform(fixed, moving, tmp_path, tmp_path / "x.png")
    with pytest.raises(ValueError, match="3D"):
        apply_transform(fixed, volumes["moving"], out, tmp_path / "x.nii.gz")
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "x.nii.gz").exists()


def _other_png(tmp_path):
    path = tmp_path / "other.png"
    PILImage.fromarray(np.zeros((32, 48), dtype=np.uint8)).save(path)
    return path


def test_apply_with_affine_txt_only(pngs, config, tmp_path):
    fixed, moving = pngs
    out = tmp_path / "out"
    register_files(fixed, moving, "affine", out, config=config, verbose=False)
    only = tmp_path / "only"
    only.mkdir()
    (only / "affine.txt").write_bytes((out / "affine.txt").read_bytes())
    a = apply_transform(fixed, moving, out, tmp_path / "a.nii.gz")
    b = apply_transform(fixed, moving, only, tmp_path / "b.nii.gz")
    np.testing.assert_allclose(load_image(b).data, load_image(a).data, atol=1e-3)


# --- command line -----------------------------------------------------------------------------

def test_cli_register_and_apply(pngs, config, tmp_path, capsys):
    from regnet.cli import main

    fixed, moving = pngs
    out = tmp_path / "out"
    assert main(["register", "--fixed", str(fixed), "--moving", str(moving), "--transform", "affine+syn",
                 "--out", str(out), "--config", str(config), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    for text in ("global NCC", "MSE", "folding", "affine.txt", str(out.absolute())):
        assert text in captured.out
    assert main(["apply", "--fixed", str(fixed), "--moving", str(moving), "--transform", str(out),
                 "--interp", "linear", "--out", str(tmp_path / "applied.png")]) == 0
    np.testing.assert_array_equal(np.asarray(PILImage.open(tmp_path / "applied.png")),
                                  np.asarray(PILImage.open(out / "warped.png")))


def test_cli_bad_config_exit_2(pngs, tmp_path, capsys):
    from regnet.cli import main

    fixed, moving = pngs
    path = tmp_path / "bad.yaml"
    path.write_text("affine:\n  iteratons: 3\n")
    status = main(["register", "--fixed", str(fixed), "--moving", str(moving), "--out", str(tmp_path / "out"),
                   "--config", str(path), "--quiet"])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1
    assert err.startswith("regnet register: error:") and "'affine.iteratons'" in err and "iterations" in err
    assert not (tmp_path / "out").exists()


def test_cli_missing_input_exit_1(tmp_path, capsys):
    from regnet.cli import main

    status = main(["register", "--fixed", str(tmp_path / "none.nii.gz"), "--moving", str(tmp_path / "none.nii.gz"),
                   "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert status == 1 and err.count("\n") == 1 and "no such file" in err
    assert os.listdir(tmp_path) == []
