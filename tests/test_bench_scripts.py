"""Smoke test of the benchmark scripts: they run end to end and write well-formed JSON.

Nothing here looks at how fast anything is; only that the numbers exist and are positive. The
quick runs' time goes into the child processes that measure peak memory (one per case and
side, each importing torch and MONAI; smaller inputs would not save time and would measure 0
MiB), so cases that repeat a code path are left out; the Triton compile check runs its
every-kernel subset (the full product of options: ``-m slow``).
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def test_bench_ops_quick_cpu(tmp_path):
    out = tmp_path / "x.json"
    # One thread: the quick run is tiny, and multi-threaded runs crawl when other processes
    # share the (2-core) machine.
    cmd = [sys.executable, "scripts/bench_ops.py", "--quick", "--device", "cpu", "--out", str(out), "--threads", "1"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    report = json.loads(out.read_text())
    assert report["device"] == "cpu"
    assert report["shape"] == [32, 40, 48] and report["batch"] == 1 and report["repeats"] == 2
    assert report["threads"] == 1
    assert set(report["results"]) == {"warp", "exp", "grid_sample"}
    for op, r in report["results"].items():
        for key in ("regnet_time_s", "peer_time_s", "speed_ratio", "regnet_peak_mib", "peer_peak_mib", "memory_ratio"):
            assert isinstance(r[key], (int, float)) and r[key] > 0, (op, key, r[key])
        assert len(r["regnet_times_s"]) == len(r["peer_times_s"]) == 2
        # apples to apples: regnet computes what its peer computes
        assert r["max_abs_diff_out"] <= 1e-4 * max(1.0, r["max_abs_out"]), (op, r)
        assert r["max_abs_diff_grad"] <= 1e-4 * max(1.0, r["max_abs_grad"]), (op, r)


def test_bench_losses_quick_cpu(tmp_path):
    out = tmp_path / "losses.json"
    # lncc9 is lncc7's code path with another window size: left out (one child process less per side)
    cmd = [sys.executable, "scripts/bench_losses.py", "--quick", "--device", "cpu", "--out", str(out),
           "--threads", "1", "--losses", "lncc7", "mi"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    report = json.loads(out.read_text())
    assert report["benchmark"] == "bench_losses" and report["device"] == "cpu"
    assert report["shapes"] == [[24, 28, 32]] and report["batch"] == 1
    assert report["repeats"] == 2 and report["mi_repeats"] == 2 and report["threads"] == 1
    assert set(report["results"]) == {"24x28x32"}
    per_loss = report["results"]["24x28x32"]
    assert set(per_loss) == {"lncc7", "mi"}
    for loss, r in per_loss.items():
        assert "skipped" not in r, (loss, r)
        for key in ("regnet_time_s", "peer_time_s", "speed_ratio", "regnet_peak_mib", "peer_peak_mib", "memory_ratio"):
            assert isinstance(r[key], (int, float)) and r[key] > 0, (loss, key, r[key])
        assert len(r["regnet_times_s"]) == len(r["peer_times_s"]) == 2
        # apples to apples: regnet's loss and its gradient w.r.t. pred are MONAI's
        assert r["max_abs_diff_out"] <= 1e-4 * max(1.0, r["max_abs_out"]), (loss, r)
        assert r["max_abs_diff_grad"] <= 1e-4 * max(1.0, r["max_abs_grad"]), (loss, r)
        assert r["max_abs_grad"] > 0, (loss, r)


def test_bench_registration_quick_cpu(tmp_path):
    # regnet and torchreg only: the ANTs methods need the optional antspyx (the `bench` extra)
    out = tmp_path / "registration.json"
    cmd = [sys.executable, "scripts/bench_registration.py", "--methods", "regnet", "torchreg", "--quick",
           "--threads", "1", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    report = json.loads(out.read_text())
    assert report["benchmark"] == "bench_registration" and report["device"] == "cpu"
    assert report["threads"] == 1 and report["itk_threads"] == 1 and report["quick"] is True
    assert report["methods"] == ["torchreg-affine", "torchreg-syn", "regnet-affine", "regnet-affine+syn"]
    assert set(report["cases"]) == {"2d", "3d"}

    two = report["cases"]["2d"]["results"]
    assert list(two) == ["identity", "torchreg-affine", "torchreg-syn", "regnet-affine", "regnet-affine+syn"]
    assert two["torchreg-syn"]["status"] == "n/a" and "3D-only" in two["torchreg-syn"]["reason"]
    for name in ("torchreg-affine", "regnet-affine", "regnet-affine+syn"):
        r = two[name]
        assert r["status"] == "ok" and r["time_s"] > 0 and len(r["times_s"]) == 1, (name, r)
        # even a few iterations align the two slices better than nothing
        assert r["global_ncc"] > two["identity"]["global_ncc"], (name, r)
    assert 0 <= two["regnet-affine+syn"]["folding_fraction"] <= 1
    assert "folding_fraction" not in two["regnet-affine"]  # affine: no deformable field

    case = report["cases"]["3d"]
    synthetic = case["synthetic"]
    assert synthetic["true_folding_fraction"] == 0
    assert synthetic["inverse_residual_mm_in_mask"]["mean"] < 0.1 * synthetic["true_displacement_mm_in_mask"]["mean"]
    three = case["results"]
    assert list(three) == ["identity", "torchreg-syn", "regnet-affine+syn"]
    assert 0 < three["identity"]["dice"] < 1
    # the identity's error is the size of the true displacement
    assert abs(three["identity"]["displacement_error_mm"]["mean"]
               - synthetic["true_displacement_mm_in_mask"]["mean"]) < 1e-6
    for name in ("torchreg-syn", "regnet-affine+syn"):
        r = three[name]
        assert r["status"] == "ok" and r["time_s"] > 0, (name, r)
        assert 0 <= r["dice"] <= 1 and r["displacement_error_mm"]["mean"] >= 0 and 0 <= r["folding_fraction"] <= 1


def test_bench_syn_iteration_quick_cpu(tmp_path):
    """The reference side on the CPU, and the Triton side through the interpreter (a smoke test
    of a whole SyN iteration on the Triton kernels; its time means nothing)."""
    import os

    out = tmp_path / "syn.json"
    cmd = [sys.executable, "scripts/bench_syn_iteration.py", "--device", "cpu", "--threads", "1", "--out", str(out),
           "--shapes", "16x16", "--iterations", "1", "--extra", "1", "--repeats", "1"]
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    (case,) = report["results"]
    assert case["shape"] == [16, 16] and case["iterations"] == [1, 2]
    reference, triton, graph = (case["sides"][s] for s in ("reference", "triton", "triton+graph"))
    assert reference["iteration_time_s"] > 0 and triton["iteration_time_s"] > 0
    assert graph["iteration_time_s"] is None and "CUDA" in graph["note"]
    # same first loss (same forward pass); then the backends may take other paths (the
    # one-sided derivative at voxel centres, see the script's docstring) to as good a fit
    assert len(triton["losses"]) == len(reference["losses"]) == 2
    assert abs(triton["losses"][0] - reference["losses"][0]) < 1e-5
    assert triton["losses"][1] < triton["losses"][0] and reference["losses"][1] < reference["losses"][0]


def _compile_for_sm90(level: str) -> None:
    import os

    import pytest

    pytest.importorskip("triton")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    cmd = [sys.executable, "scripts/check_triton_compile.py", "--level", level]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=3600, env=env)
    if proc.returncode == 3:
        pytest.skip(f"this Triton cannot compile without a GPU this way: {proc.stderr.strip()[-300:]}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert " 0 failed" in proc.stdout and "not compiled" not in proc.stderr


def test_every_triton_kernel_compiles_for_sm90():
    """Triton's compiler (not the interpreter) accepts every kernel regnet launches, each of its
    options at least once (rank, source, mode, padding, alignment, dtype, deterministic, ...), for
    the H100/H200 target (scripts/check_triton_compile.py --level subset; no GPU needed)."""
    _compile_for_sm90("subset")


@pytest.mark.slow
def test_every_triton_kernel_specialisation_compiles_for_sm90():
    """Every specialisation: the product of the options in every dtype (--level full)."""
    _compile_for_sm90("full")
