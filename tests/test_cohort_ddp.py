"""``regnet register-many`` and ``regnet template`` on two gloo processes on the CPU (Lightning's
DDP, as tests/test_lightning.py's training test): every pair is done exactly once, by the rank
that owns it, and the summary gathered on rank 0 is complete."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("pytorch_lightning")

from test_register_many import TINY_YAML, blob_image, write_csv, write_nifti  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    try:
        return subprocess.run([sys.executable, "-m", "regnet", *args], cwd=cwd, env=env, capture_output=True,
                              text=True, timeout=240)
    except subprocess.TimeoutExpired as error:  # pragma: no cover - a hang is the failure
        pytest.fail(f"two-process run did not finish in 240 s: {error}")


def test_register_many_on_two_gloo_processes(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    write_nifti(data / "atlas.nii.gz", *blob_image((16, 16), (9, 7)))
    rows = []
    for i in range(5):
        write_nifti(data / f"m{i}.nii.gz", *blob_image((15 + i % 3, 16), (8 + i % 2, 7), seed=i))
        rows.append(["atlas.nii.gz", f"m{i}.nii.gz", f"out/m{i}"])
    rows.append(["atlas.nii.gz", "missing.nii.gz", "out/missing"])
    pairs = write_csv(data / "pairs.csv", rows)
    (tmp_path / "tiny.yaml").write_text(TINY_YAML)
    args = ["register-many", "--pairs", str(pairs), "--summary", str(tmp_path / "summary.csv"), "--config",
            str(tmp_path / "tiny.yaml"), "--batch-size", "2", "--quiet", "--accelerator", "cpu", "--devices", "2",
            "--strategy", "ddp"]
    result = _run(args, tmp_path)
    out = result.stdout + result.stderr
    assert result.returncode == 1, out[-3000:]  # one pair failed (its file is missing)
    assert "MEMBER: 2/2" in out and "distributed_backend=gloo" in out
    assert out.count("regnet register-many: 6 pairs: 5 done, 0 skipped, 1 failed") == 1  # printed by rank 0 only
    with open(tmp_path / "summary.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert [r["row"] for r in table] == ["2", "3", "4", "5", "6", "7"]  # every pair exactly once, in order
    assert [r["status"] for r in table] == ["done"] * 5 + ["failed"]
    assert {r["rank"] for r in table} == {"0", "1"}  # both ranks worked
    for r in table[:5]:
        report = json.loads((data / r["out"] / "report.json").read_text())
        assert report["moving"]["path"].endswith(r["moving"])
    # a rerun on two processes skips everything that is done
    result = _run(args, tmp_path)
    assert "6 pairs: 0 done, 5 skipped, 1 failed" in result.stdout, result.stdout + result.stderr[-2000:]


@pytest.mark.slow
def test_template_on_two_gloo_processes(tmp_path):
    data = tmp_path / "images"
    data.mkdir()
    for i in range(4):
        write_nifti(data / f"s{i}.nii.gz", *blob_image((15 + i % 3, 16 - i % 2), (8 + i % 2, 7), seed=i))
    (tmp_path / "tiny.yaml").write_text(TINY_YAML)
    result = _run(["template", "--images", str(data), "--out", str(tmp_path / "t"), "--iterations", "1", "--config",
                   str(tmp_path / "tiny.yaml"), "--quiet", "--accelerator", "cpu", "--devices", "2"], tmp_path)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    log = json.loads((tmp_path / "t" / "convergence.json").read_text())
    assert [e["kind"] for e in log["rounds"]] == ["affine", "deformable", "final"]
    with open(tmp_path / "t" / "round_01" / "summary.csv", newline="") as handle:
        assert {r["rank"] for r in csv.DictReader(handle)} == {"0", "1"}


def test_engine_close_ends_the_process_group():
    """``LightningEngine.close`` (and leaving its ``with`` block) destroys the process group, so
    that no process exits with a live gloo group (an abort in its C++ teardown, exit status -6,
    after the work was done); without a group it does nothing."""
    import socket

    import torch.distributed as dist

    from regnet.lightning.many import LightningEngine

    engine = LightningEngine(accelerator="cpu", devices=1, verbose=False)
    engine.close()  # no group: nothing to do
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        with LightningEngine(accelerator="cpu", devices=1, verbose=False) as engine:
            assert dist.is_initialized()
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
