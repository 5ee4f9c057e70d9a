"""``regnet demo``: register the bundled brain data and print a summary."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from regnet.cli._common import cuda_missing, device_and_quiet, failure, out_problem

COMMAND = "demo"


def add(commands) -> None:
    parser = commands.add_parser(
        COMMAND,
        help="register the bundled brain data (2D slices and a small 3D volume) and write the results",
        description=(
            "Run 'regnet register' (affine+syn) on bundled real data: the brain slice r16 (moving) "
            "onto r64 (fixed), and a small 3D brain onto a randomly deformed copy of itself (with "
            "labels for Dice). Writes DIR/2d/ and DIR/3d/ as 'regnet register' writes DIR, and "
            "prints global NCC and MSE before and after, Dice, folding and timings."
        ),
    )
    parser.add_argument(
        "--out", metavar="DIR", default="regnet-demo",
        help="output folder, created if missing (default: ./regnet-demo)",
    )
    device_and_quiet(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, start: float) -> int:
    out = Path(args.out)
    if out_problem(COMMAND, out):
        return 1
    if cuda_missing(COMMAND, args.device):
        return 2
    from regnet.demo import run_demo, summary_table

    try:
        summary = run_demo(out, device=args.device, verbose=not args.quiet)
    except (ValueError, TypeError, OSError) as problem:
        return failure(COMMAND, problem)
    print(text(summary, summary_table(summary), time.perf_counter() - start))
    return 0


def text(summary: dict, table: str, wall_seconds: float) -> str:
    return "\n".join([
        f"regnet demo ({summary['device']}): affine+syn on bundled brains "
        f"(2d: {summary['cases']['2d']['moving']} -> {summary['cases']['2d']['fixed']}; "
        f"3d: {summary['cases']['3d']['fixed']} deformed -> itself)",
        "",
        table,
        "",
        "NCC/MSE: global, on intensities normalised to [0, 1]; Dice: mean over the FreeSurfer structures; "
        "folding: Jacobian determinant <= 0",
        f"time: total {wall_seconds:.1f} s",
        f"files: 2d/ and 3d/ (warped, ddf.nii.gz, affine.txt and ANTs' affine.mat, warp.nii.gz, inverse_warp.nii.gz, "
        f"overview.png, report.json) in {summary['out_dir']}",
    ])
