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

@pytest.mark.parametrize("argv", [["--help"], ["demo", "--help"]])
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
    assert ("--out" in help_text) if argv[0] == "demo" else ("demo" in help_text)


@pytest.mark.parametrize("module", ["regnet", "regnet.cli"])
def test_module_entry_points(module, tmp_path):
    result = run_python(["-m", module, "--help"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "demo" in result.stdout
    version = run_python(["-m", module, "--version"], cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.startswith("regnet ")


def test_usage_errors_exit_2(tmp_path):
    for argv in ([], ["nonsense"], ["demo", "--device", "tpu"]):
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
    report = run_demo(out, verbose=False, fast=True)
    assert torch.get_num_threads() == threads  # the demo's thread setting is undone
    return out, report


def test_demo_writes_all_outputs(fast_demo):
    import numpy as np
    from PIL import Image

    from regnet.demo import FAST_ITERATIONS, OUTPUT_FILES

    out, report = fast_demo
    assert sorted(os.listdir(out)) == sorted(OUTPUT_FILES)  # no temporary files left over
    assert report["out_dir"] == str(out.absolute())
    assert set(report["files"]) == set(OUTPUT_FILES)

    with Image.open(out / "warped.png") as warped:
        assert warped.mode == "L" and warped.size == (256, 256)
    with Image.open(out / "overview.png") as overview:
        assert overview.format == "PNG" and overview.size[0] > overview.size[1] > 200
    ddf = np.load(out / "ddf.npy")
    assert ddf.shape == (2, 256, 256) and ddf.dtype == np.float32 and np.isfinite(ddf).all()

    saved = json.loads((out / "report.json").read_text())
    assert saved == {k: v for k, v in report.items() if k not in ("out_dir", "files")}
    assert saved["settings"]["iterations"] == list(FAST_ITERATIONS)
    assert [len(losses) for losses in saved["loss_history"]] == list(FAST_ITERATIONS)
    first = saved["loss_history"][0]
    assert first[-1] < first[0]  # the coarse level makes progress
    ncc, mse = saved["metrics"]["global_ncc"], saved["metrics"]["mse"]
    assert ncc["after"] > ncc["before"] + 0.2
    assert mse["after"] < mse["before"]
    assert 0.0 <= saved["folding_fraction"] <= 1.0
    assert saved["time_s"]["registration"] > 0 and saved["time_s"]["total"] >= saved["time_s"]["registration"]


def test_demo_ddf_reproduces_warped_png(fast_demo):
    """``ddf.npy`` is the forward displacement in regnet's convention: warping the moving
    slice by it gives ``warped.png``."""
    import numpy as np
    import torch
    from PIL import Image

    from regnet.demo import MOVING_NAME, _load_slice
    from regnet.ops import warp

    out, _ = fast_demo
    ddf = torch.from_numpy(np.load(out / "ddf.npy"))[None]
    warped = warp(_load_slice(MOVING_NAME, "cpu"), ddf)[0, 0].numpy()
    png = np.asarray(Image.open(out / "warped.png"), dtype=np.float32) / 255
    assert np.abs(warped - png).max() <= 0.5 / 255 + 1e-6


def test_cli_demo_prints_summary(tmp_path, monkeypatch, capsys):
    import functools

    import regnet.demo
    from regnet.cli import main

    monkeypatch.setattr(regnet.demo, "run_demo", functools.partial(regnet.demo.run_demo, fast=True))
    out = tmp_path / "cli-out"
    assert main(["demo", "--out", str(out), "--quiet"]) == 0
    captured = capsys.readouterr()
    for text in ("global NCC", "MSE", "before", "after", "folding", str(out.absolute())):
        assert text in captured.out
    assert captured.err == ""  # --quiet: no progress bars
    assert sorted(os.listdir(out)) == sorted(regnet.demo.OUTPUT_FILES)


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

    def broken(*args, **kwargs):
        raise RuntimeError("simulated failure while drawing")

    monkeypatch.setattr(regnet.demo, "_save_overview", broken)

    new = tmp_path / "new" / "out"  # a folder the run creates, parents included
    with pytest.raises(RuntimeError, match="simulated failure"):
        regnet.demo.run_demo(new, verbose=False, iterations=0)
    assert not (tmp_path / "new").exists()

    existing = tmp_path / "existing"  # a folder from an earlier run: kept as it was
    existing.mkdir()
    (existing / "warped.png").write_bytes(b"earlier result")
    (existing / "notes.txt").write_text("mine")
    with pytest.raises(RuntimeError, match="simulated failure"):
        regnet.demo.run_demo(existing, verbose=False, iterations=0)
    assert sorted(os.listdir(existing)) == ["notes.txt", "warped.png"]
    assert (existing / "warped.png").read_bytes() == b"earlier result"


def test_run_demo_rejects_bad_arguments(tmp_path):
    from regnet.demo import run_demo

    with pytest.raises(ValueError, match="iterations"):
        run_demo(tmp_path / "a", verbose=False, iterations=(1, 2))
    with pytest.raises(ValueError, match="num_threads"):
        run_demo(tmp_path / "b", verbose=False, num_threads=0)
    assert os.listdir(tmp_path) == []
