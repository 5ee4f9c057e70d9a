"""Smoke test of the benchmark scripts: they run end to end and write well-formed JSON.

Nothing here looks at how fast anything is; only that the numbers exist and are positive.
"""

import json
import subprocess
import sys
from pathlib import Path

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
    cmd = [sys.executable, "scripts/bench_losses.py", "--quick", "--device", "cpu", "--out", str(out),
           "--threads", "1"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    report = json.loads(out.read_text())
    assert report["benchmark"] == "bench_losses" and report["device"] == "cpu"
    assert report["shapes"] == [[20, 24, 28]] and report["batch"] == 1
    assert report["repeats"] == 2 and report["mi_repeats"] == 2 and report["threads"] == 1
    assert set(report["results"]) == {"20x24x28"}
    per_loss = report["results"]["20x24x28"]
    assert set(per_loss) == {"lncc7", "lncc9", "mi"}
    for loss, r in per_loss.items():
        assert "skipped" not in r, (loss, r)
        for key in ("regnet_time_s", "peer_time_s", "speed_ratio", "regnet_peak_mib", "peer_peak_mib", "memory_ratio"):
            assert isinstance(r[key], (int, float)) and r[key] > 0, (loss, key, r[key])
        assert len(r["regnet_times_s"]) == len(r["peer_times_s"]) == 2
        # apples to apples: regnet's loss and its gradient w.r.t. pred are MONAI's
        assert r["max_abs_diff_out"] <= 1e-4 * max(1.0, r["max_abs_out"]), (loss, r)
        assert r["max_abs_diff_grad"] <= 1e-4 * max(1.0, r["max_abs_grad"]), (loss, r)
        assert r["max_abs_grad"] > 0, (loss, r)
