"""Throughput of ``regnet register-many`` (pairs per minute) against ``regnet register`` run pair by
pair, with the accuracy of every pair, on the same pairs in the same run.

Cases:

* ``2d``: the five brain2d pairs (``r16, r27, r30, r62, r85`` onto ``r64``, 256 x 256 JPEGs;
  ``../shared/data/brain2d``);
* ``3d``: synthetic T1 images of the synthseg subjects (``scripts/brain_pairs.py``) at
  ``--spacing`` mm (default 3), subjects 2..``1 + --pairs3d`` onto subject 1, with their label
  maps (Dice over the scored FreeSurfer structures).

Modes (each a fresh command, ``OMP_NUM_THREADS=1`` per process; outputs in
``benchmarks/cache/bench_register_many/``, gitignored):

* ``register, sequential``: one ``regnet register`` process per pair, one after the other (a
  shell loop);
* ``register, 2 in parallel``: the same processes, two at a time (``xargs -P 2``);
* ``register-many, B=1``: one process, one pair at a time (no process start per pair);
* ``register-many, batched``: one process, the default batch size (``--batch-size`` auto);
* ``register-many, 2 processes``: the same on two gloo processes (``--devices 2 --accelerator
  cpu``, Lightning DDP), the pairs sharded between them.

Pairs per minute = pairs / wall-clock time of the whole mode (process starts included). The
accuracy of each pair (global NCC after, Dice after, folding) is read from each mode's
``report.json``; the JSON lists it per pair and mode and the largest difference from the
sequential ``regnet register``. The machine's load average is recorded before and after each
mode (the CPUs are shared).

Usage::

    python scripts/bench_register_many.py                      # both cases, ~5 minutes on 2 cores
    python scripts/bench_register_many.py --cases 3d --spacing 2 --pairs3d 4
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import benchlib
import brain_pairs
import torch

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("REGNET_DATA", REPO.parent / "shared" / "data"))
WORK = REPO / "benchmarks" / "cache" / "bench_register_many"
MODES = ("register, sequential", "register, 2 in parallel", "register-many, B=1", "register-many, batched",
         "register-many, 2 processes")


def child_env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def regnet(args: list[str]) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "regnet", *args], env=child_env(), capture_output=True, text=True,
                          check=False)
    if proc.returncode not in (0,):
        raise RuntimeError(f"regnet {' '.join(args[:1])} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return proc


def pairs_2d() -> list[dict]:
    folder = DATA / "brain2d"
    return [{"name": f"r{n}", "fixed": str(folder / "r64slice.jpg"), "moving": str(folder / f"r{n}slice.jpg")}
            for n in (16, 27, 30, 62, 85)]


def pairs_3d(spacing: int, count: int) -> list[dict]:
    atlas = brain_pairs.subject_files(1, spacing, contrasts=("t1",))
    out = []
    for subject in range(2, 2 + count):
        files = brain_pairs.subject_files(subject, spacing, contrasts=("t1",))
        out.append({"name": f"sub{subject:02d}", "fixed": str(atlas["t1"]), "moving": str(files["t1"]),
                    "fixed_labels": str(atlas["seg"]), "moving_labels": str(files["seg"])})
    return out


def write_pairs(pairs: list[dict], folder: Path) -> Path:
    columns = ["fixed", "moving", "out"] + (["fixed_labels", "moving_labels"] if "fixed_labels" in pairs[0] else [])
    path = folder / "pairs.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for p in pairs:
            writer.writerow([p["fixed"], p["moving"], str(folder / "out" / p["name"])] +
                            ([p["fixed_labels"], p["moving_labels"]] if "fixed_labels" in p else []))
    return path


def register_command(pair: dict, out: Path) -> list[str]:
    args = ["register", "--fixed", pair["fixed"], "--moving", pair["moving"], "--out", str(out), "--quiet"]
    if "fixed_labels" in pair:
        args += ["--fixed-labels", pair["fixed_labels"], "--moving-labels", pair["moving_labels"]]
    return args


def run_mode(mode: str, pairs: list[dict], folder: Path) -> float:
    """Run ``mode`` into ``folder/out``; wall-clock seconds."""
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "out").mkdir(parents=True)
    start = time.perf_counter()
    if mode.startswith("register,"):
        jobs = [register_command(p, folder / "out" / p["name"]) for p in pairs]
        workers = 2 if "parallel" in mode else 1
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(regnet, jobs))
    else:
        csv_path = write_pairs(pairs, folder)
        args = ["register-many", "--pairs", str(csv_path), "--summary", str(folder / "summary.csv"), "--quiet"]
        if "B=1" in mode:
            args += ["--batch-size", "1"]
        if "2 processes" in mode:
            args += ["--accelerator", "cpu", "--devices", "2", "--strategy", "ddp"]
        regnet(args)
    return time.perf_counter() - start


def accuracy(pairs: list[dict], folder: Path) -> dict[str, dict]:
    out = {}
    for p in pairs:
        report = json.loads((folder / "out" / p["name"] / "report.json").read_text())
        metrics = report["metrics"]
        out[p["name"]] = {
            "ncc_before": metrics["global_ncc"]["before"], "ncc_after": metrics["global_ncc"]["after"],
            "dice_before": metrics.get("dice", {}).get("before"), "dice_after": metrics.get("dice", {}).get("after"),
            "folding": report["jacobian"]["fraction_nonpositive"], "batch_size": report.get("batch", {}).get("size", 1),
            "registration_s": report["time_s"]["registration"]}
    return out


def run_case(name: str, pairs: list[dict], modes: list[str]) -> dict:
    print(f"\n## {name}: {len(pairs)} pairs", flush=True)
    results = {}
    for mode in modes:
        load_before = benchlib.loadavg()
        folder = WORK / name / mode.replace(", ", "_").replace(" ", "_").replace("=", "")
        seconds = run_mode(mode, pairs, folder)
        results[mode] = {"wall_s": round(seconds, 2), "pairs_per_min": round(60 * len(pairs) / seconds, 2),
                         "loadavg_before": load_before, "loadavg_after": benchlib.loadavg(),
                         "pairs": accuracy(pairs, folder)}
        print(f"{mode:28s} {seconds:7.1f} s  {results[mode]['pairs_per_min']:6.1f} pairs/min  "
              f"load {load_before} -> {results[mode]['loadavg_after']}", flush=True)
    reference = results[modes[0]]["pairs"]
    for mode in modes:
        diffs = {}
        for key in ("ncc_after", "dice_after", "folding"):
            values = [abs(results[mode]["pairs"][p][key] - reference[p][key]) for p in reference
                      if reference[p][key] is not None]
            diffs[key] = max(values) if values else None
        results[mode]["max_abs_difference_from_sequential"] = diffs
        mean = {key: _mean([v[key] for v in results[mode]["pairs"].values()]) for key in ("ncc_after", "dice_after")}
        results[mode]["mean"] = mean
    rows = [[mode, f"{r['wall_s']:.1f}", f"{r['pairs_per_min']:.1f}",
             f"{r['pairs_per_min'] / results[modes[0]]['pairs_per_min']:.2f}x", f"{r['mean']['ncc_after']:.4f}",
             "" if r["mean"]["dice_after"] is None else f"{r['mean']['dice_after']:.4f}",
             f"{r['max_abs_difference_from_sequential']['ncc_after']:.4f}"] for mode, r in results.items()]
    benchlib.print_markdown_table(["mode", "wall s", "pairs/min", "vs sequential", "mean NCC after", "mean Dice after",
                                   "max abs NCC diff"], rows, left=1)
    return {"pairs": [p["name"] for p in pairs], "modes": results}


def _mean(values):
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", choices=("2d", "3d"), default=["2d", "3d"])
    parser.add_argument("--spacing", type=int, default=3, help="mm of the 3D images (default 3)")
    parser.add_argument("--pairs3d", type=int, default=9, help="3D pairs: subjects 2.. onto subject 1 (default 9)")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--out", help="JSON path (default benchmarks/results/bench_register_many_cpu.json)")
    args = parser.parse_args(argv)
    reason = brain_pairs.available() if "3d" in args.cases else None
    if reason or not (DATA / "brain2d" / "r64slice.jpg").exists():
        print(f"bench_register_many: data missing: {reason or DATA / 'brain2d'}", file=sys.stderr)
        return 2
    report = benchlib.environment("bench_register_many", torch.device("cpu"))
    report["loadavg_start"] = benchlib.loadavg()
    report["note"] = ("each mode a fresh command with OMP_NUM_THREADS=1 per process; the two-process modes use both "
                      "cores of this 2-core machine, the others one; regnet's default settings (affine+syn)")
    report["cases"] = {}
    if "2d" in args.cases:
        report["cases"]["brain2d"] = run_case("brain2d", pairs_2d(), args.modes)
    if "3d" in args.cases:
        name = f"synthseg_{args.spacing}mm"
        report["cases"][name] = run_case(name, pairs_3d(args.spacing, args.pairs3d), args.modes)
    report["loadavg_end"] = benchlib.loadavg()
    out = Path(args.out) if args.out else REPO / "benchmarks" / "results" / "bench_register_many_cpu.json"
    benchlib.write_json(out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
