"""Whole processes, as a user times them: ``regnet register`` against an ANTsPy script doing the same.

Each side is one fresh Python process that imports its library, reads the two images, registers
them (affine + SyN) and writes its outputs: ``regnet register --fixed F --moving M --out DIR
--quiet`` (regnet's whole output folder: affine.txt/.mat, ddf, warp, inverse_warp, warped,
overview.png, report.json) and :data:`ANTS_SCRIPT` (``ants.registration(type_of_transform="SyN")``,
its warp and inverse warp and affine copied into the output folder, the warped image written).
Both get the same thread count (``OMP_NUM_THREADS`` / torch, ``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS``)
and are run alternately, ``repeats`` times each; the wall clock of each process is measured from
outside (``time.perf_counter`` around ``subprocess.run``). Used by ``bench_registration.py --cases
process`` (2D r16 -> r64) and for the 3D pairs of ``bench_brain_pairs.py``.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ANTS_SCRIPT = r"""
import shutil, sys
from pathlib import Path
import ants
fixed, moving, out = ants.image_read(sys.argv[1]), ants.image_read(sys.argv[2]), Path(sys.argv[3])
result = ants.registration(fixed, moving, type_of_transform="SyN")
out.mkdir(parents=True, exist_ok=True)
for i, name in enumerate(result["fwdtransforms"]):
    shutil.copy(name, out / f"fwd{i}_{Path(name).name[-20:]}")
for i, name in enumerate(result["invtransforms"]):
    if not (out / f"fwd{i}_{Path(name).name[-20:]}").exists():
        shutil.copy(name, out / f"inv{i}_{Path(name).name[-20:]}")
ants.image_write(result["warpedmovout"], str(out / "warped.nii.gz"))
"""


def environment(threads: int) -> dict:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=str(threads), ANTS_RANDOM_SEED=env.get("ANTS_RANDOM_SEED", "1"))
    return env


def run_regnet(fixed: Path, moving: Path, out: Path, threads: int, extra: list[str] | None = None) -> float:
    """Wall seconds of one ``regnet register`` process (raises on failure)."""
    command = [sys.executable, "-m", "regnet", "register", "--fixed", str(fixed), "--moving", str(moving),
               "--out", str(out), "--quiet", *(extra or [])]
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env=environment(threads))
    return time.perf_counter() - start


def run_ants(fixed: Path, moving: Path, out: Path, threads: int) -> float:
    """Wall seconds of one ANTsPy process doing the same job (raises on failure)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", ANTS_SCRIPT, str(fixed), str(moving), str(out)], check=True,
                   capture_output=True, env=environment(threads))
    return time.perf_counter() - start


def compare(fixed: Path, moving: Path, threads: int, repeats: int, regnet_args: list[str] | None = None) -> dict:
    """Median wall seconds of both whole processes (alternating, ``repeats`` each) and their ratio."""
    times: dict[str, list[float]] = {"regnet": [], "ants": []}
    with tempfile.TemporaryDirectory(prefix="whole-process-") as work:
        for repeat in range(repeats):
            order = ("regnet", "ants") if repeat % 2 == 0 else ("ants", "regnet")
            for side in order:
                out = Path(work) / f"{side}{repeat}"
                if side == "regnet":
                    times[side].append(run_regnet(fixed, moving, out, threads, regnet_args))
                else:
                    times[side].append(run_ants(fixed, moving, out, threads))
                shutil.rmtree(out, ignore_errors=True)
    median = {side: statistics.median(values) for side, values in times.items()}
    return {"fixed": str(fixed), "moving": str(moving), "threads": threads, "repeats": repeats,
            "times_s": times, "median_s": median, "ants_over_regnet": median["ants"] / median["regnet"]}
