"""Choose SyN settings on many real anatomies: registration configs compared on the synthseg pairs.

Runs :func:`regnet.registration.register_images` (affine + SyN, in this process) for each
config on the pairs of ``bench_brain_pairs.py`` (subject ``i`` -> ``i % 10 + 1``, synthetic T1
from real label maps, ``brain_pairs.py``) and scores each the same way: mean Dice over the 30
FreeSurfer structures, SDlogJ and folding of the total field inside the brain, registration
time. Prints one row per config with the mean over the pairs (and per-pair Dice), and writes
JSON. Defaults are chosen on these means, never on one pair (``docs/registration.md``).

Usage::

    python scripts/tune_brain_syn.py --spacing 2 --pairs 10 --threads 2 \\
        --config default= --config fine='{"syn": {"scales": [4, 2, 1], "iterations": [40, 20, 5]}}'

A config is ``NAME=JSON`` (a ``--config`` mapping; empty: the defaults) or ``NAME=@file.yaml``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the command line (regnet._openmp), before torch
sys.path.insert(0, str(Path(__file__).resolve().parent))
import brain_pairs  # noqa: E402


def _config(text: str):
    name, _, spec = text.partition("=")
    if not spec:
        return name, None
    if spec.startswith("@"):
        import yaml

        return name, yaml.safe_load(Path(spec[1:]).read_text())
    return name, json.loads(spec)


def score(fixed_seg, moving_seg, warped_seg, ddf, brain) -> dict:
    from regnet.metrics import SCORED_LABELS, dice_per_label, jacobian_stats

    present = [v for v in SCORED_LABELS if bool((fixed_seg == v).any()) and bool((moving_seg == v).any())]
    dice = dice_per_label(warped_seg, fixed_seg, labels=present)
    values = [dice.get(v, 0.0) for v in present]
    jac = jacobian_stats(ddf.float(), mask=brain)
    return {"dice": float(np.mean(values)), "dice_values": values, "sdlogj": jac["std_log"],
            "folding": jac["fraction_nonpositive"]}


def run(configs, pairs, spacing: int, threads: int, verbose: bool, contrast: str = "t1") -> dict:
    import torch

    from regnet.io import load_image
    from regnet.registration.world import register_images, sample_moving

    torch.set_num_threads(threads)
    rows = {name: [] for name, _ in configs}
    for fixed_id, moving_id in pairs:
        fixed_files = brain_pairs.subject_files(fixed_id, spacing, (contrast,))
        moving_files = brain_pairs.subject_files(moving_id, spacing, (contrast,))
        fixed, moving = load_image(fixed_files[contrast]), load_image(moving_files[contrast])
        fixed_seg = load_image(fixed_files["seg"], dtype=torch.int64)
        moving_seg = load_image(moving_files["seg"], dtype=None)
        brain = ((fixed_seg.data > 0) & (fixed_seg.data <= brain_pairs.BRAIN_MAX_LABEL))[:, :1]  # as bench_brain_pairs
        for name, config in configs:
            start = time.perf_counter()
            result = register_images(fixed, moving, "affine+syn", config, "cpu", verbose)
            seconds = time.perf_counter() - start
            with torch.no_grad():
                warped = sample_moving(moving_seg, result.ddf.float(), fixed.affine, "label").long()
            row = score(fixed_seg.data, moving_seg.data.long(), warped, result.ddf, brain)
            row.update(pair=f"{moving_id:02d}->{fixed_id:02d}", seconds=seconds,
                       syn_s=result.report["time_s"].get("syn", {}).get("total"))
            rows[name].append(row)
            print(f"  {name:24s} {row['pair']}  Dice {row['dice']:.4f}  SDlogJ {row['sdlogj']:.3f}  "
                  f"fold {100 * row['folding']:.4f}%  {seconds:6.1f} s", flush=True)
    summary = {}
    for name, _ in configs:
        r = rows[name]
        values = sorted(v for row in r for v in row["dice_values"])
        worst = values[: max(1, math.ceil(0.3 * len(values)))]
        summary[name] = {"dice": float(np.mean([x["dice"] for x in r])), "dice30": float(np.mean(worst)),
                         "sdlogj": float(np.mean([x["sdlogj"] for x in r])),
                         "folding": float(np.mean([x["folding"] for x in r])),
                         "seconds": float(np.mean([x["seconds"] for x in r])),
                         "per_pair_dice": [round(x["dice"], 4) for x in r]}
    return {"rows": rows, "summary": summary}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", action="append", default=[], help="NAME=JSON or NAME=@file.yaml (repeatable)")
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--first", type=int, default=1, help="first pair (subject i -> i %% 10 + 1)")
    parser.add_argument("--spacing", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--contrast", default="t1", choices=brain_pairs.ALL_CONTRASTS,
                        help="contrast of both images (t1real: tissue contrast and texture of a real T1)")
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--out", default=None, help="JSON path")
    args = parser.parse_args(argv)
    configs = [_config(c) for c in args.config] or [("default", None)]
    pairs = [((i % 10) + 1, i) for i in range(args.first, args.first + args.pairs)]
    report = run(configs, pairs, args.spacing, args.threads, args.verbose, args.contrast)
    print(f"\n{'config':24s} {'Dice':>7s} {'Dice30':>7s} {'SDlogJ':>7s} {'fold%':>8s} {'time s':>7s}  per pair")
    for name, s in report["summary"].items():
        print(f"{name:24s} {s['dice']:7.4f} {s['dice30']:7.4f} {s['sdlogj']:7.3f} {100 * s['folding']:8.4f} "
              f"{s['seconds']:7.1f}  {s['per_pair_dice']}")
    if args.out:
        Path(args.out).write_text(json.dumps({"spacing": args.spacing, "threads": args.threads,
                                              "contrast": args.contrast, "configs": dict(configs), **report},
                                             indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
