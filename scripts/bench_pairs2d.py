#!/usr/bin/env python
"""Real inter-subject 2D registrations: regnet against ANTsPy SyN on every brain2d pair.

Each of ``r16``, ``r27``, ``r30``, ``r62``, ``r85`` (``../shared/data/brain2d``, five
subjects) is registered onto ``r64`` (a sixth subject), 256 x 256, intensities / 255:

* ``regnet``: ``regnet.registration.register_images(fixed, moving, "affine+syn")`` with its
  defaults: what ``regnet register --transform affine+syn`` runs;
* ``ants``: ``ants.registration(fixed, moving, type_of_transform="SyN")``, ANTsPy's defaults
  (its own affine stage, then SyN).

Both are timed (wall clock, median of ``--repeats`` calls after one warm-up call per
method) in the same process with the same thread count (torch and ITK, ``--threads``), and
scored with the same code: global NCC (Pearson correlation over the image) of the warped
moving image with the fixed one, regnet's image sampled through its total DDF
(``regnet.registration.world.sample_moving``), ANTs' its own ``warpedmovout``. Prints a table with the
ratio ANTs time / regnet time and writes JSON (default
``benchmarks/results/bench_pairs2d_cpu.json``). No ground truth exists for real pairs: the
similarity is the score, as in the issue's r16 -> r64 numbers.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data" / "brain2d"
FIXED = "r64"
MOVING = ("r16", "r27", "r30", "r62", "r85")


def _load(name: str):
    import numpy as np
    from PIL import Image as Picture

    path = DATA / f"{name}slice.jpg"
    return np.asarray(Picture.open(path).convert("L"), dtype=np.float32) / 255


def _time(call, repeats: int):
    call()  # warm-up: one-time imports and allocations
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = call()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times, out


def run(repeats: int, pairs) -> dict:
    import ants
    import numpy as np
    import torch

    from regnet.io import Image
    from regnet.metrics import global_ncc
    from regnet.registration.world import register_images, sample_moving

    fixed = _load(FIXED)
    fixed_t = torch.from_numpy(fixed)[None, None]
    identity = np.eye(3)
    rows = {}
    for name in pairs:
        moving = _load(name)
        moving_t = torch.from_numpy(moving)[None, None]
        fixed_img, moving_img = Image(fixed_t, identity), Image(moving_t, identity)
        t_regnet, times_regnet, result = _time(
            lambda: register_images(fixed_img, moving_img, "affine+syn", verbose=False), repeats)
        warped = sample_moving(moving_img, result.ddf, identity).float()
        fa, ma = ants.from_numpy(fixed), ants.from_numpy(moving)
        t_ants, times_ants, out = _time(lambda: ants.registration(fa, ma, type_of_transform="SyN"), repeats)
        warped_ants = torch.from_numpy(out["warpedmovout"].numpy())[None, None]
        rows[name] = {
            "ncc_before": global_ncc(moving_t, fixed_t),
            "regnet": {"time_s": t_regnet, "times_s": times_regnet, "global_ncc": global_ncc(warped, fixed_t)},
            "ants": {"time_s": t_ants, "times_s": times_ants, "global_ncc": global_ncc(warped_ants, fixed_t)},
            "speed_ratio": t_ants / t_regnet,
        }
        print(f"  {name} -> {FIXED}: regnet {t_regnet:.3f} s, ants {t_ants:.3f} s", flush=True)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch and ITK threads (default 2)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per method and pair (default 3)")
    parser.add_argument("--pairs", nargs="+", default=list(MOVING), choices=MOVING)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "bench_pairs2d_cpu.json"))
    args = parser.parse_args(argv)
    if not DATA.is_dir():
        print(f"bench_pairs2d: {DATA} is missing; nothing to measure", file=sys.stderr)
        return 2
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(args.threads)  # before ANTs is imported
    import torch

    torch.set_num_threads(args.threads)
    print(f"bench_pairs2d: {len(args.pairs)} pairs onto {FIXED}, {args.threads} threads, {args.repeats} repeats")
    rows = run(args.repeats, args.pairs)
    print("\n| pair | NCC before | regnet NCC | ANTs NCC | regnet s | ANTs s | ANTs / regnet time |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in rows.items():
        print(f"| {name} -> {FIXED} | {r['ncc_before']:.4f} | {r['regnet']['global_ncc']:.4f} | "
              f"{r['ants']['global_ncc']:.4f} | {r['regnet']['time_s']:.3f} | {r['ants']['time_s']:.3f} | "
              f"{r['speed_ratio']:.2f}x |")
    import ants

    import regnet

    report = {
        "benchmark": "bench_pairs2d",
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "threads": args.threads,
        "repeats": args.repeats,
        "versions": {"regnet": regnet.__version__, "torch": torch.__version__, "ants": ants.__version__},
        "loadavg": list(os.getloadavg()),
        "fixed": FIXED,
        "pairs": rows,
    }
    import benchlib  # scripts/ is on sys.path when run as python scripts/NAME.py

    benchlib.write_json(Path(args.out), report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
