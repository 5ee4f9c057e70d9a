"""The ``regnet`` command line and ``regnet demo``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HEAVY_MODULES = ("torch", "numpy", "monai", "matplotlib", "PIL", "tqdm")


def run_python(args, cwd, **kwargs) -> subprocess.CompletedProcess:
    """Run ``python ARGS`` with this checkout first on the import path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300, **kwargs
    )


# --- help and entry points: no torch -------------------------------------------------------

@pytest.mark.parametrize("argv", [["--help"], ["demo", "--help"], ["register", "--help"], ["apply", "--help"],
                                  ["apply-points", "--help"]])
def test_help_does_not_import_torch(argv, tmp_path):
    code = textwrap.dedent(f"""
        import json, sys
        from regnet.cli import main
        try:
            status = main({argv!r})
        except SystemExit as exit:
            status = exit.code
        heavy = [m for m in {HEAVY_MODULES!r} if m in sys.modules]
        print(json.dumps({{"status": status, "heavy": heavy}}))
    """)
    result = run_python(["-c", code], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    *help_lines, last = result.stdout.strip().splitlines()
    summary = json.loads(last)
    assert summary["status"] in (0, None)
    assert summary["heavy"] == [], f"--help imported {summary['heavy']}"
    help_text = "\n".join(help_lines)
    assert "usage: regnet" in help_text
    if argv[0] == "--help":
        assert all(command in help_text for command in ("register", "apply", "demo"))
    else:
        assert "--out" in help_text


@pytest.mark.parametrize("module", ["regnet", "regnet.cli"])
def test_module_entry_points(module, tmp_path):
    result = run_python(["-m", module, "--help"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "demo" in result.stdout and "register" in result.stdout and "apply" in result.stdout
    version = run_python(["-m", module, "--version"], cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.startswith("regnet ")


def test_usage_errors_exit_2(tmp_path):
    for argv in ([], ["nonsense"], ["demo", "--device", "tpu"], ["register", "--fixed", "f.nii.gz"],
                 ["register", "--fixed", "f", "--moving", "m", "--out", "o", "--transform", "rigid"],
                 ["apply", "--fixed", "f", "--moving", "m", "--transform", "d", "--out", "o", "--interp", "cubic"]):
        result = run_python(["-m", "regnet", *argv], cwd=tmp_path)
        assert result.returncode == 2, (argv, result.stderr)
        assert "error:" in result.stderr and "Traceback" not in result.stderr


# --- regnet demo, end to end ----------------------------------------------------------------

@pytest.fixture(scope="module")
def fast_demo(tmp_path_factory):
    import torch

    from regnet.demo import run_demo

    out = tmp_path_factory.mktemp("demo") / "nested" / "out"  # missing parents are created
    threads = torch.get_num_threads()
    summary = run_demo(out, verbose=False, fast=True)
    assert torch.get_num_threads() == threads
    return out, summary


CASE_FILES = {"affine.txt", "affine.mat", "ddf.nii.gz", "warp.nii.gz", "inverse_warp.nii.gz", "inverse_ddf.nii.gz",
              "overview.png", "report.json"}


def test_demo_writes_all_outputs(fast_demo):
    import nibabel as nib
    import numpy as np
    import torch
    from PIL import Image

    from regnet.demo import FAST_CONFIG
    from regnet.io import load_ddf

    out, summary = fast_demo
    assert sorted(os.listdir(out)) == ["2d", "3d", "report.json"]  # no temporary files left over
    assert sorted(os.listdir(out.parent)) == ["out"]
    assert set(os.listdir(out / "2d")) == CASE_FILES | {"warped.png"}
    assert set(os.listdir(out / "3d")) == CASE_FILES | {"warped.nii.gz", "warped_labels.nii.gz"}
    assert summary["out_dir"] == str(out.absolute())

    with Image.open(out / "2d" / "warped.png") as warped:
        assert warped.mode == "L" and warped.size == (256, 256)
    with Image.open(out / "2d" / "overview.png") as overview:
        assert overview.format == "PNG" and overview.size[0] > overview.size[1] > 200
    ddf, _ = load_ddf(out / "2d" / "ddf.nii.gz")
    assert ddf.shape == (1, 2, 256, 256) and torch.isfinite(ddf).all()
    fixed3d = nib.load(str(out / "3d" / "warped.nii.gz"))
    labels3d = nib.load(str(out / "3d" / "warped_labels.nii.gz"))
    assert fixed3d.shape == labels3d.shape == (54, 64, 75)
    np.testing.assert_allclose(fixed3d.affine, labels3d.affine)
    assert labels3d.get_data_dtype() == np.int16

    saved = json.loads((out / "report.json").read_text())
    assert saved == {k: v for k, v in summary.items() if k not in ("out_dir", "reports")}
    assert saved["fast"] is True and sorted(saved["cases"]) == ["2d", "3d"]
    for name, case in saved["cases"].items():
        report = json.loads((out / name / "report.json").read_text())
        assert report == summary["reports"][name]
        assert report["transform"] == "affine+syn"
        syn = FAST_CONFIG[name]["syn"]["iterations"]
        assert [len(level) for level in report["loss_history"]["syn"]] == syn
        assert 0.0 <= case["folding_fraction"] <= 1.0
        assert case["time_s"]["total"] >= case["time_s"]["registration"] > 0
    ncc, mse = saved["cases"]["2d"]["global_ncc"], saved["cases"]["2d"]["mse"]
    assert ncc["after"] > ncc["before"] + 0.2 and mse["after"] < mse["before"]
    dice = saved["cases"]["3d"]["dice"]
    assert 0.5 < dice["before"] < 1 and 0.5 < dice["after"] < 1


def test_demo_ddf_reproduces_warped_png(fast_demo, tmp_path):
    """``regnet apply`` of the moving slice with the demo's 2D transform gives warped.png."""
    import numpy as np
    from PIL import Image

    from regnet.demo import FIXED_2D, MOVING_2D
    from regnet.pipeline import apply_transform

    out, _ = fast_demo
    data = REPO / "regnet" / "data"
    applied = apply_transform(data / FIXED_2D, data / MOVING_2D, out / "2d", tmp_path / "applied.png")
    np.testing.assert_array_equal(np.asarray(Image.open(applied)), np.asarray(Image.open(out / "2d" / "warped.png")))


def test_demo_3d_moving_is_a_known_deformation():
    import torch

    from regnet.demo import IMAGE_3D, LABELS_3D, deformed_copy
    from regnet.io import load_image

    data = REPO / "regnet" / "data"
    image, labels = load_image(data / IMAGE_3D), load_image(data / LABELS_3D, dtype=None)
    assert image.spatial_shape == labels.spatial_shape == (54, 64, 75) and labels.data.dtype == torch.int16
    moving, moving_labels, ddf = deformed_copy(image, labels)
    again, _, _ = deformed_copy(image, labels)
    assert torch.equal(moving.data, again.data)  # fixed seed
    assert moving.data.shape == image.data.shape and moving_labels.data.dtype == labels.data.dtype
    assert 2.0 < float(ddf.abs().max()) < 8.0
    assert set(moving_labels.data.unique().tolist()) <= set(labels.data.unique().tolist())


def test_cli_demo_prints_summary(tmp_path, monkeypatch, capsys):
    import functools

    import regnet.demo
    from regnet.cli import main

    monkeypatch.setattr(regnet.demo, "run_demo", functools.partial(regnet.demo.run_demo, fast=True))
    out = tmp_path / "cli-out"
    assert main(["demo", "--out", str(out), "--quiet"]) == 0
    captured = capsys.readouterr()
    for text in ("NCC before", "NCC after", "MSE", "Dice before", "folding", "2d", "3d", str(out.absolute())):
        assert text in captured.out
    assert captured.err == ""  # --quiet: no progress bars
    assert sorted(os.listdir(out)) == ["2d", "3d", "report.json"]
    assert main(["demo", "--out", str(out), "--quiet"]) == 0  # an earlier demo output is replaced


# --- errors: one line, non-zero status, nothing left behind --------------------------------

@pytest.mark.parametrize("target", ["file", "file/sub", "file/sub/deeper"])
def test_cli_demo_invalid_out_dir(target, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = run_python(["-m", "regnet", "demo", "--out", str(tmp_path / target), "--quiet"], cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("regnet demo: error:") and "not a directory" in lines[0]
    assert sorted(os.listdir(tmp_path)) == ["file"] and blocker.read_text() == "not a folder"


def test_cli_demo_unwritable_out_dir(tmp_path, monkeypatch, capsys):
    """A folder the user may not write to (simulated: the suite may run as root)."""
    from regnet.cli import main

    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if str(path) == str(locked) else real_access(path, mode))
    assert main(["demo", "--out", str(locked / "out"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not writable" in err
    assert os.listdir(locked) == []


def test_cli_demo_cuda_unavailable(tmp_path, capsys, monkeypatch):
    import torch

    from regnet.cli import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "out"
    assert main(["demo", "--out", str(out), "--device", "cuda", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "CUDA is not available" in err
    assert not out.exists()


def test_failed_demo_leaves_nothing_behind(tmp_path, monkeypatch):
    import regnet.demo
    import regnet.pipeline.outputs

    def broken(*args, **kwargs):
        raise RuntimeError("simulated failure while drawing")

    monkeypatch.setattr(regnet.pipeline.outputs, "save_overview", broken)

    new = tmp_path / "new" / "out"  # a folder the run creates, parents included
    with pytest.raises(RuntimeError, match="simulated failure"):
        regnet.demo.run_demo(new, verbose=False, fast=True)
    assert os.listdir(tmp_path) == []

    existing = tmp_path / "existing"  # a folder from an earlier run: kept as it was
    existing.mkdir()
    (existing / "report.json").write_text('{"regnet_version": "0.1.0"}')
    (existing / "warped.png").write_bytes(b"earlier result")
    with pytest.raises(RuntimeError, match="simulated failure"):
        regnet.demo.run_demo(existing, verbose=False, fast=True)
    assert sorted(os.listdir(existing)) == ["report.json", "warped.png"]
    assert (existing / "warped.png").read_bytes() == b"earlier result"
    assert os.listdir(tmp_path) == ["existing"]


def test_demo_refuses_to_replace_a_foreign_folder(tmp_path, capsys):
    from regnet.cli import main

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    assert main(["demo", "--out", str(mine), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "refusing to replace" in err
    assert os.listdir(mine) == ["notes.txt"]


def test_run_demo_rejects_bad_arguments(tmp_path):
    from regnet.demo import run_demo

    with pytest.raises(ValueError, match="device"):
        run_demo(tmp_path / "a", verbose=False, device="tpu:0")
    assert os.listdir(tmp_path) == []
