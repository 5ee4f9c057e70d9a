"""``scripts/bench_brain_pairs.py`` and its inputs (``scripts/brain_pairs.py``).

The smoke test runs the benchmark's core on two tiny synthetic pairs made from the real
synthseg label maps (every 5th voxel, a tiny regnet config, ANTsPy SyN with a few iterations)
and checks the rows, the summary, the tables and the JSON; it skips when ``../shared/data`` or
antspyx is missing. The other tests check the scoring rules and the geometry of the input
pipeline on small hand-made arrays. Nothing here looks at speed or accuracy.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import data_file

from regnet.metrics import SCORED_LABELS

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
sys.path.insert(0, str(SCRIPTS))

import bench_brain_pairs as bench
import brain_pairs

ROW_KEYS = ("dice", "dice_per_structure", "hd95_mm", "hd95_per_structure", "sdlogj", "sdlogj_brain", "sdlogj_l2r",
            "folding_fraction", "folding_fraction_brain", "dice_nearest", "registration_s", "process_s")


@pytest.fixture(scope="module")
def tiny_pairs(tmp_path_factory):
    """sub01 -> sub02 and sub02 -> sub03, every 5th voxel of the cropped maps (about 34 x 46 x 41)."""
    pytest.importorskip("scipy")
    for s in (1, 2, 3):
        data_file(f"synthseg/training_seg_{s:02d}.nii.gz")
    folder = tmp_path_factory.mktemp("brain_pairs")
    files = {s: brain_pairs.quick_subject_files(s, 5, folder) for s in (1, 2, 3)}
    return folder, [bench.Pair(f"sub{i:02d}->sub{i + 1:02d}", "synthseg", files[i + 1]["t1"], files[i]["t1"],
                               files[i]["seg"], fixed_seg=files[i + 1]["seg"]) for i in (1, 2)]


def test_bench_brain_pairs_smoke(tiny_pairs, tmp_path):
    pytest.importorskip("ants", reason="antspyx is not installed (pip install antspyx)")
    yaml = pytest.importorskip("yaml")
    _, pairs = tiny_pairs
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(bench.QUICK_REGNET_CONFIG))
    settings = bench.Settings(methods=("regnet", "ants_syn"), threads=1, spacing=5, regnet_config=config,
                              quick=True, warmup=False)
    report = bench.run_benchmark(pairs, settings)

    assert [(r["pair"], r["method"]) for r in report["rows"]] == [
        ("sub01->sub02", "regnet"), ("sub01->sub02", "ants_syn"),
        ("sub02->sub03", "ants_syn"), ("sub02->sub03", "regnet")]  # the order alternates
    for r in report["rows"]:
        assert r["status"] == "ok", r.get("traceback", r)
        for key in ROW_KEYS:
            assert key in r, key
        assert 0.2 < r["dice"] < 1 and 0 < r["hd95_mm"] < 60
        assert set(r["dice_per_structure"]) == set(r["hd95_per_structure"]) == {str(v) for v in r["structures"]}
        assert set(r["structures"]) <= set(SCORED_LABELS) and len(r["structures"]) >= 20
        assert 0 <= r["folding_fraction"] < 0.05 and 0 < r["sdlogj_l2r"] < r["sdlogj"] < 1
        assert 0 < r["registration_s"] <= r["process_s"]
        # the field scored is the one the method applied: both warp labels label-wise (GenericLabel);
        # one common nearest-neighbour sampler of the same field agrees up to the interpolation
        assert abs(r["dice_nearest"] - r["dice"]) < 0.05
    for method in ("regnet", "ants_syn"):
        s = report["summary"][method]
        assert s["pairs"] == 2 and s["failed_pairs"] == []
        ok = [r for r in report["rows"] if r["method"] == method]
        assert s["dice"] == pytest.approx(np.mean([r["dice"] for r in ok]))
        all_dice = sorted(v for r in ok for v in r["dice_per_structure"].values())
        k = math.ceil(round(0.3 * len(all_dice), 9))
        assert s["dice30"] == pytest.approx(np.mean(all_dice[:k])) and s["dice30"] < s["dice"]
    assert report["threads"] == 1 and report["settings"]["threads"] == 1
    assert report["versions"]["antspyx"] and report["device"] == "cpu"

    text = "\n".join(bench.tables(report))
    assert "| regnet (tiny.yaml) | 2 |" in text and "| ANTsPy SyN (quick) | 2 |" in text
    assert "| sub02->sub03 | regnet (tiny.yaml) |" in text
    out = tmp_path / "bench.json"
    import benchlib

    benchlib.write_json(out, bench._jsonable(report))
    loaded = json.loads(out.read_text())
    assert loaded["summary"]["regnet"]["pairs"] == 2 and len(loaded["rows"]) == 4


def test_failing_method_is_recorded_not_fatal(tiny_pairs, tmp_path):
    _, pairs = tiny_pairs
    bad = tmp_path / "bad.yaml"
    bad.write_text("syn: {no_such_option: 1}\n")
    settings = bench.Settings(methods=("regnet",), threads=1, regnet_config=bad, warmup=False)
    report = bench.run_benchmark(pairs[:1], settings)
    (row,) = report["rows"]
    assert row["status"] == "failed" and "no_such_option" in row["error"]
    assert report["summary"]["regnet"]["pairs"] == 0 and report["summary"]["regnet"]["failed_pairs"] == [row["pair"]]
    assert "failed:" in "\n".join(bench.tables(report))


def test_score_structures_learn2reg_rule():
    fixed = torch.zeros(6, 6, 6, dtype=torch.long)
    moving = torch.zeros_like(fixed)
    fixed[1:3, 1:3, 1:3] = 2
    moving[1:3, 1:3, 1:3] = 2
    fixed[4:6, 4:6, 4:6] = 17
    moving[3:5, 3:5, 3:5] = 17
    fixed[0, 5, 0] = 41  # only in the fixed map: not scored
    warped = fixed.clone()
    warped[4:6, 4:6, 4:6] = 0  # 17 vanished after warping: scores 0, HD95 inf (left out of the mean)
    result = bench.score_structures(fixed, moving, warped, [1.0, 1.0, 2.0])
    assert result["structures"] == [2, 17] and result["vanished"] == [17]
    assert result["dice_per_structure"] == {"2": 1.0, "17": 0.0} and result["dice"] == 0.5
    assert result["hd95_per_structure"]["2"] == 0.0 and math.isinf(result["hd95_per_structure"]["17"])
    assert result["hd95_mm"] == 0.0


def test_score_tissue_against_thresholded_maps():
    wm = torch.zeros(5, 5, 5)
    gm = torch.zeros(5, 5, 5)
    wm[1:3] = 0.9
    gm[3:5] = 0.7
    gm[0] = 0.4  # below 0.5: not grey matter
    warped = torch.zeros(5, 5, 5, dtype=torch.long)
    warped[1:3] = 2  # left cerebral WM exactly on wm
    warped[3] = 42  # right cortex: half of gm
    result = bench.score_tissue(wm, gm, warped, [1.0, 1.0, 1.0])
    assert result["dice_wm"] == 1.0 and result["dice_gm"] == pytest.approx(2 * 25 / (25 + 50))
    assert result["dice"] == pytest.approx((1.0 + 2 / 3) / 2) and result["hd95_wm_mm"] == 0.0


def test_crop_keeps_world_coordinates_and_block_reduce_centres():
    labels = np.zeros((30, 28, 26), dtype=np.int16)
    labels[10:15, 8:20, 5:9] = 3
    labels[2, 2, 2] = 510  # extra-cerebral: not brain
    affine = np.array([[-1.0, 0, 0, 128], [0, 0, 1, -128], [0, -1, 0, 128], [0, 0, 0, 1]])
    box = brain_pairs.crop_box(labels, margin=3)
    assert box == (slice(7, 18), slice(5, 23), slice(2, 12))
    cropped = brain_pairs.shifted_affine(affine, box)
    # voxel (0, 0, 0) of the crop is voxel (7, 5, 2) of the source, at the same world point
    np.testing.assert_allclose(cropped @ [0, 0, 0, 1], affine @ [7, 5, 2, 1])
    # block reduction: the mean of each block at its centre; labels by majority, ties to the smaller
    image = np.arange(4 * 4 * 2, dtype=np.float32).reshape(4, 4, 2)
    reduced, new_affine = brain_pairs.block_reduce(image, affine, 2, labels=False)
    assert reduced.shape == (2, 2, 1) and reduced[0, 0, 0] == pytest.approx(image[:2, :2, :2].mean())
    np.testing.assert_allclose(new_affine @ [1, 0, 0, 1], affine @ [2.5, 0.5, 0.5, 1])
    seg = np.zeros((2, 2, 2), dtype=np.int16)
    seg[0, :, :] = 4
    seg[1, 0, 0] = 7
    assert brain_pairs.block_reduce(seg, affine, 2, labels=True)[0][0, 0, 0] == 4  # 4 x 4, 3 x 0, 1 x 7
    seg[1] = 7
    assert brain_pairs.block_reduce(seg, affine, 2, labels=True)[0][0, 0, 0] == 4  # 4 x 4, 4 x 7: tie


def test_synthetic_image_is_deterministic_and_skull_stripped():
    pytest.importorskip("scipy")
    labels = np.zeros((12, 10, 9), dtype=np.int16)
    labels[2:10, 2:8, 2:7] = 2
    labels[4:8, 4:6, 3:6] = 4
    labels[0] = 511  # skull
    a = brain_pairs.intensity_image(labels, "t1", 3)
    assert np.array_equal(a, brain_pairs.intensity_image(labels, "t1", 3))
    assert not np.array_equal(a, brain_pairs.intensity_image(labels, "t1", 4))
    assert (a[labels == 0] == 0).all() and (a[labels == 511] == 0).all() and a.dtype == np.float32
    t2 = brain_pairs.intensity_image(labels, "t2", 3)
    assert a[5, 4, 4] < a[3, 3, 3] and t2[5, 4, 4] > t2[3, 3, 3]  # ventricle dark in T1, bright in T2
