"""``regnet register-many`` (regnet.pipeline.many, .pairs, .chunk) and batched world-space
registration (regnet.registration.batch): batched = one by one, resumability, bad input row by
row, the command line. Inputs are tiny synthetic 2D NIfTI images (32 x 32) and few iterations;
the two-process (DDP) run is in tests/test_cohort_ddp.py."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from regnet.cli import main
from regnet.io import load_image
from regnet.pipeline.chunk import METRIC_COLUMNS
from regnet.pipeline.many import default_batch_size, register_many, write_summary
from regnet.pipeline.outdir import OUTPUT_NAMES
from regnet.pipeline.pairs import PairsError, pairs_from_folder, plan_chunks, read_pairs_csv
from regnet.registration import register_images
from regnet.registration.batch import register_batch
from regnet.registration.world import normalise, sample_moving

REPO = Path(__file__).resolve().parents[1]
TINY = {"affine": {"scales": [2, 1], "iterations": [20, 5]}, "syn": {"scales": [2, 1], "iterations": [6, 2]}}
TINY_YAML = "affine:\n  scales: [2, 1]\n  iterations: [20, 5]\nsyn:\n  scales: [2, 1]\n  iterations: [6, 2]\n"


def blob_image(centre, radii, shape=(32, 32), spacing=2.0, seed=0, noise=0.5) -> tuple[np.ndarray, np.ndarray]:
    """A smooth bright ellipse with an inner dark one (some structure for the registration)."""
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij"))
    c = np.asarray(centre, dtype=np.float64).reshape(-1, *[1] * len(shape))
    r = np.asarray(radii, dtype=np.float64).reshape(-1, *[1] * len(shape))
    d2 = (((grid - c) / r) ** 2).sum(0)
    image = 100 / (1 + np.exp(8 * (d2 - 1))) - 40 / (1 + np.exp(8 * (4 * d2 - 1)))
    image += np.random.default_rng(seed).normal(0, noise, shape)
    affine = np.diag([spacing] * len(shape) + [1.0] * (4 - len(shape)))
    return image.astype(np.float32), affine


def write_nifti(path: Path, image: np.ndarray, affine: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(image, affine), str(path))
    return path


@pytest.fixture
def images(tmp_path) -> dict[str, Path]:
    """``atlas`` and four moving 2D images (``m1`` .. ``m4``) in ``tmp_path/data``."""
    folder = tmp_path / "data"
    folder.mkdir()
    out = {"atlas": write_nifti(folder / "atlas.nii.gz", *blob_image((16, 16), (9, 7)))}
    for i, (centre, radii) in enumerate([((15, 17), (8, 7)), ((17, 15), (10, 7)), ((16, 14), (9, 8)),
                                         ((14, 16), (9, 6))], start=1):
        out[f"m{i}"] = write_nifti(folder / f"m{i}.nii.gz", *blob_image(centre, radii, seed=i))
    return out


def _inside(data: np.ndarray) -> np.ndarray:
    """The region inside the bright ring of a :func:`blob_image` (its convex hull, roughly)."""
    ring = data > 30
    rows, cols = ring.any(1), ring.any(0)
    out = np.zeros_like(ring)
    out[np.ix_(rows, cols)] = True
    return out


def write_csv(path: Path, rows: list[list[str]], header=("fixed", "moving", "out")) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def read_summary(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


# --- batched registration = one by one -------------------------------------------------------

def _ncc_after(result) -> float:
    from regnet.metrics import global_ncc

    warped = sample_moving(result.moving, result.ddf.float(), result.fixed.affine)
    return global_ncc(normalise(result.fixed.data, *result.ranges["fixed"]),
                      normalise(warped, *result.ranges["moving"]))


def test_batched_equals_one_by_one(images):
    """Three pairs as one batch and one by one: with every iteration run (no early stop), the
    same transforms; with the default early stop, the same accuracy."""
    fixed = load_image(images["atlas"])
    moving = [load_image(images[f"m{i}"]) for i in (1, 2, 3)]
    exact = {"affine": {"scales": [2, 1], "iterations": [15, 5], "tolerance": 0},
             "syn": {"scales": [2, 1], "iterations": [6, 3], "tolerance": 0}}
    alone = [register_images(fixed, m, "affine+syn", exact, "cpu", False) for m in moving]
    batch = register_batch([fixed] * 3, moving, "affine+syn", exact, "cpu", False)
    for a, b in zip(alone, batch, strict=True):
        assert b.report["batch"]["size"] == 3
        np.testing.assert_allclose(b.matrix, a.matrix, atol=2e-3)  # mm: Adam's eps sees 1/B gradients
        assert float((a.ddf - b.ddf).abs().max()) < 0.02  # voxels
        assert float((a.syn_inverse - b.syn_inverse).abs().max()) < 0.02
        assert b.report["metrics"]["global_ncc"]["before"] == pytest.approx(a.report["metrics"]["global_ncc"]["before"])
    alone = [register_images(fixed, m, "affine+syn", TINY, "cpu", False) for m in moving]
    batch = register_batch([fixed] * 3, moving, "affine+syn", TINY, "cpu", False)
    for a, b in zip(alone, batch, strict=True):
        assert _ncc_after(b) == pytest.approx(_ncc_after(a), abs=5e-3)
        assert _ncc_after(b) > a.report["metrics"]["global_ncc"]["before"] + 0.05


def test_register_batch_rejects_mixed_grids(images, tmp_path):
    fixed = load_image(images["atlas"])
    other = load_image(write_nifti(tmp_path / "other.nii.gz", *blob_image((16, 16), (9, 7), spacing=3.0)))
    with pytest.raises(ValueError, match="not on the grid of fixed"):
        register_batch([fixed, other], [fixed, fixed], "affine", TINY, "cpu", False)
    with pytest.raises(ValueError, match="same number"):
        register_batch([fixed], [], "affine")


# --- planning --------------------------------------------------------------------------------

def test_plan_chunks_groups_by_grid_and_feeds_every_rank():
    keys = ["a", "a", "b", "a", None, "a", "a"]
    assert plan_chunks(keys, 4) == [[0, 1, 3], [5, 6], [2], [4]]  # 5 pairs on 'a' at B = 4: 3 + 2
    assert plan_chunks(keys, 8) == [[0, 1, 3, 5, 6], [2], [4]]
    chunks = plan_chunks(["a"] * 3, 8, world_size=2)
    assert sorted(map(len, chunks)) == [1, 2] and sorted(sum(chunks, [])) == [0, 1, 2]
    assert plan_chunks(["a"], 8, world_size=4) == [[0]]
    assert default_batch_size(256 * 256) == 16 and default_batch_size(160 * 192 * 224) == 1
    assert default_batch_size(60 * 72 * 60) == 4 and default_batch_size(60 * 72 * 60, "cuda") == 16


# --- end to end, resumability ----------------------------------------------------------------

def test_register_many_writes_register_folders_and_resumes(images, tmp_path):
    for name in ("atlas", "m1"):  # label maps of the two subjects: outer ring 2, inner dark blob 17
        data = load_image(images[name]).data[0, 0].numpy()
        seg = np.where(data > 30, 2, 0) + np.where((data < 10) & (data > -30) & _inside(data), 17, 0)
        write_nifti(tmp_path / "data" / f"{name}_seg.nii.gz", seg.astype(np.int16), np.diag([2, 2, 1, 1.]))
    pairs_csv = write_csv(tmp_path / "data" / "pairs.csv", [
        ["atlas.nii.gz", "m1.nii.gz", "../out/m1", "atlas_seg.nii.gz", "m1_seg.nii.gz", "a"],
        ["atlas.nii.gz", "m2.nii.gz", "../out/m2", "", "", "b"],
        ["atlas.nii.gz", "m3.nii.gz", "../out/m3", "", "", "c"],
    ], header=("fixed", "moving", "out", "fixed_labels", "moving_labels", "subject"))
    summary = tmp_path / "summary.csv"
    rows = register_many(read_pairs_csv(pairs_csv), "affine+syn", summary=summary, config=TINY, verbose=False)
    assert [r["status"] for r in rows] == ["done"] * 3
    table = read_summary(summary)
    assert list(table[0])[:7] == ["row", "fixed", "moving", "out", "fixed_labels", "moving_labels", "subject"]
    assert list(table[0])[7:] == list(METRIC_COLUMNS)
    assert [r["subject"] for r in table] == ["a", "b", "c"] and {r["batch_size"] for r in table} == {"3"}
    assert float(table[0]["dice_after"]) > max(0.6, float(table[0]["dice_before"]))
    assert float(table[0]["hd95_mm"]) >= 0 and not table[1]["dice_after"]
    for r in table:
        assert float(r["ncc_after"]) > float(r["ncc_before"]) and float(r["folding"]) == 0 and r["sdlogj"]
    folder = tmp_path / "out" / "m1"
    report = json.loads((folder / "report.json").read_text())
    assert set(report["files"]) == {p.name for p in folder.iterdir()} <= OUTPUT_NAMES
    assert {"warp.nii.gz", "inverse_warp.nii.gz", "affine.mat", "warped_labels.nii.gz"} <= set(report["files"])
    assert report["batch"] == {"size": 3, "index": 0}
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no temporary folders

    # a rerun skips the complete folders; an incomplete one is redone
    (tmp_path / "out" / "m2" / "overview.png").unlink()
    before = (folder / "report.json").stat().st_mtime_ns
    rows = register_many(read_pairs_csv(pairs_csv), "affine+syn", summary=summary, config=TINY, verbose=False)
    assert [r["status"] for r in rows] == ["skipped", "done", "skipped"]
    assert (folder / "report.json").stat().st_mtime_ns == before
    assert read_summary(summary)[0]["ncc_after"] == table[0]["ncc_after"]  # metrics of skipped pairs kept
    # another transform is another job: redone
    rows = register_many(read_pairs_csv(pairs_csv)[1:2], "affine", config=TINY, verbose=False)
    assert rows[0]["status"] == "done"


def test_bad_rows_are_reported_by_row_and_never_stop_the_others(images, tmp_path):
    d = tmp_path / "data"
    write_nifti(d / "volume.nii.gz", np.random.default_rng(0).random((12, 12, 12)).astype(np.float32), np.eye(4))
    bad = load_image(images["m2"]).data[0, 0].numpy().copy()
    bad[3, 3] = np.nan
    write_nifti(d / "nan.nii.gz", bad, np.diag([2, 2, 1, 1.]))
    foreign = tmp_path / "out" / "foreign"
    foreign.mkdir(parents=True)
    (foreign / "notes.txt").write_text("mine")
    pairs_csv = d / "pairs.csv"
    pairs_csv.write_text(textwrap.dedent("""\
        fixed,moving,out
        # a comment line
        atlas.nii.gz,m1.nii.gz,../out/m1
        atlas.nii.gz,m2.nii.gz
        atlas.nii.gz,missing.nii.gz,../out/missing
        atlas.nii.gz,m3.nii.gz,../out/same
        atlas.nii.gz,m4.nii.gz,../out/same
        atlas.nii.gz,volume.nii.gz,../out/mixed
        atlas.nii.gz,nan.nii.gz,../out/nan
        atlas.nii.gz,m2.nii.gz,../out/foreign
        atlas.nii.gz,m2.nii.gz,../out/m2
        """))
    summary = tmp_path / "summary.csv"
    rows = register_many(read_pairs_csv(pairs_csv), "affine", summary=summary, config=TINY, verbose=False)
    status = {r["row"]: (r["status"], r["error"]) for r in read_summary(summary)}
    assert status["3"][0] == "done" and status["11"][0] == "done"
    assert "unreadable row" in status["4"][1]
    assert "FileNotFoundError" in status["5"][1] and "missing.nii.gz" in status["5"][1]
    assert "duplicate output folder" in status["6"][1] and "row(s) 7" in status["6"][1]
    assert "duplicate output folder" in status["7"][1]
    assert "mixed 2D and 3D" in status["8"][1]
    assert status["9"][0] == "failed" and "NaN" in status["9"][1]
    assert status["10"][0] == "failed" and "not a regnet output" in status["10"][1]
    assert len(rows) == 9
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["foreign", "m1", "m2"]  # nothing half-written
    assert (foreign / "notes.txt").read_text() == "mine"

    # a rerun retries the failed pairs: the missing file is there now
    write_nifti(d / "missing.nii.gz", *blob_image((15, 16), (9, 7), seed=9))
    rows = register_many(read_pairs_csv(pairs_csv), "affine", summary=summary, config=TINY, verbose=False)
    assert [r["status"] for r in rows if r["row"] in (3, 5, 11)] == ["skipped", "done", "skipped"]


def test_unusable_lists_raise(tmp_path, images):
    header_only = write_csv(tmp_path / "empty.csv", [])
    with pytest.raises(PairsError, match="no pairs"):
        read_pairs_csv(header_only)
    (tmp_path / "blank.csv").write_text("\n\n")
    with pytest.raises(PairsError, match="empty file"):
        read_pairs_csv(tmp_path / "blank.csv")
    with pytest.raises(PairsError, match="lacks the column"):
        read_pairs_csv(write_csv(tmp_path / "no_out.csv", [["a", "b"]], header=("fixed", "moving")))
    with pytest.raises(PairsError, match="did you mean 'fixed_labels'"):
        read_pairs_csv(write_csv(tmp_path / "typo.csv", [["a", "b", "c", "d"]],
                                 header=("fixed", "moving", "out", "fixed_label")))
    with pytest.raises(PairsError, match="no such file"):
        read_pairs_csv(tmp_path / "nope.csv")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(PairsError, match="no image files"):
        pairs_from_folder(images["atlas"], tmp_path / "empty_dir", tmp_path / "out")
    with pytest.raises(PairsError, match="no pairs"):
        register_many([], "affine")


def test_masks_are_carried_and_used(images, tmp_path):
    image, affine = blob_image((16, 16), (9, 7))
    write_nifti(tmp_path / "data" / "mask.nii.gz", (image > 20).astype(np.uint8), affine)
    pairs_csv = write_csv(tmp_path / "data" / "pairs.csv",
                          [["atlas.nii.gz", "m1.nii.gz", "../out/m1", "mask.nii.gz"],
                           ["atlas.nii.gz", "m2.nii.gz", "../out/m2", "atlas.nii.gz"]],
                          header=("fixed", "moving", "out", "fixed_mask"))
    pairs = read_pairs_csv(pairs_csv)
    assert pairs[0].fixed_mask == str(tmp_path / "data" / "mask.nii.gz") and pairs[0].masks
    rows = register_many(pairs, "affine", config=TINY, verbose=False)
    assert rows[0]["status"] == "done", rows[0]
    # an intensity image given as a mask fails its own row with the reason, not the cohort
    assert rows[1]["status"] == "failed" and "fixed_mask must be binary" in rows[1]["error"]


def test_write_summary_is_atomic_and_complete(tmp_path):
    path = write_summary(tmp_path / "s" / "summary.csv", [{"row": 2, "fixed": "f", "status": "done", "x": 1},
                                                          {"row": 3, "moving": "m", "status": "failed"}])
    table = read_summary(path)
    assert list(table[0])[:4] == ["row", "fixed", "x", "moving"] and table[1]["status"] == "failed"
    assert [p.name for p in path.parent.iterdir()] == ["summary.csv"]


# --- command line ----------------------------------------------------------------------------

def test_cli_atlas_and_folder(images, tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_YAML)
    moving = tmp_path / "data"
    status = main(["register-many", "--fixed", str(images["atlas"]), "--moving-dir", str(moving), "--out-dir",
                   str(tmp_path / "out"), "--transform", "affine", "--config", str(config), "--quiet",
                   "--batch-size", "2"])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "4 pairs: 4 done, 0 skipped, 0 failed" in out
    table = read_summary(tmp_path / "out" / "summary.csv")
    assert [Path(r["out"]).name for r in table] == ["m1", "m2", "m3", "m4"]  # the atlas itself is left out
    assert {r["batch_size"] for r in table} == {"2"}
    # the reverse: the atlas onto every image
    status = main(["register-many", "--moving", str(images["atlas"]), "--fixed-dir", str(moving), "--out-dir",
                   str(tmp_path / "rev"), "--transform", "affine", "--config", str(config), "--quiet"])
    assert status == 0
    report = json.loads((tmp_path / "rev" / "m3" / "report.json").read_text())
    assert report["fixed"]["path"] == str(images["m3"]) and report["moving"]["path"] == str(images["atlas"])


def test_cli_exit_statuses(images, tmp_path, capsys):
    header_only = write_csv(tmp_path / "pairs.csv", [])
    assert main(["register-many", "--pairs", str(header_only)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("regnet register-many: error:") and "no pairs" in err and len(err.splitlines()) == 1
    assert main(["register-many", "--pairs", str(header_only), "--fixed", "a"]) == 2
    assert "exactly one list" in capsys.readouterr().err
    assert main(["register-many", "--fixed", "a", "--moving-dir", "d"]) == 2
    assert "--out-dir" in capsys.readouterr().err
    failing = write_csv(tmp_path / "data" / "failing.csv", [["atlas.nii.gz", "nope.nii.gz", "../out/x"]])
    assert main(["register-many", "--pairs", str(failing), "--transform", "affine", "--quiet"]) == 1
    out = capsys.readouterr().out
    assert "1 failed (rows 2)" in out
    assert read_summary(tmp_path / "data" / "failing_summary.csv")[0]["status"] == "failed"


def test_help_imports_no_torch(tmp_path):
    code = ("import sys\nfrom regnet.cli import main\n"
            "for argv in (['register-many', '--help'], ['template', '--help']):\n"
            "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
            "print(sorted(m for m in ('torch', 'pytorch_lightning') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                            env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert "--pairs" in result.stdout and "--images" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.slow
def test_brain2d_pairs_batched_as_accurate_as_register(tmp_path):
    """The five real brain2d pairs (onto r64, 256 x 256, regnet's defaults): one batch gives the
    accuracy of five single registrations (global NCC after within 0.003 per pair)."""
    from conftest import data_file

    fixed = load_image(data_file("brain2d/r64slice.jpg"))
    moving = [load_image(data_file(f"brain2d/r{n}slice.jpg")) for n in (16, 27, 30, 62, 85)]
    alone = [register_images(fixed, m, "affine+syn", None, "cpu", False) for m in moving]
    batch = register_batch([fixed] * 5, moving, "affine+syn", None, "cpu", False)
    for a, b in zip(alone, batch, strict=True):
        assert _ncc_after(b) == pytest.approx(_ncc_after(a), abs=3e-3)
        assert _ncc_after(b) > 0.98
