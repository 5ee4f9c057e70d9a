"""``regnet apply``: map another image or label map of the moving subject with a saved transform."""

from __future__ import annotations

import argparse
import time

from regnet.cli._common import cuda_missing, failure

COMMAND = "apply"


def add(commands) -> None:
    parser = commands.add_parser(
        COMMAND,
        help="map another image or label map of the moving subject with a saved transform",
        description=(
            "Resample MOVING (any image of the moving subject, on any grid) onto the FIXED grid "
            "with the transform saved by 'regnet register' in DIR (ddf.nii.gz). Use --interp "
            "nearest for label maps (their values and file type are kept)."
        ),
    )
    parser.add_argument("--fixed", metavar="FIXED", required=True, help="the fixed image of the registration")
    parser.add_argument("--moving", metavar="IMAGE", required=True, help="image or label map to map")
    parser.add_argument("--transform", metavar="DIR", required=True, help="output folder of 'regnet register'")
    parser.add_argument(
        "--interp", choices=("linear", "nearest"), default="linear",
        help="interpolation: linear for images, nearest for label maps (default: linear)",
    )
    parser.add_argument("--out", metavar="OUT", required=True, help="output file (.nii.gz, .nii or .png)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="torch device (default: cpu)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, start: float) -> int:
    if cuda_missing(COMMAND, args.device):
        return 2
    from regnet.pipeline import apply_transform

    try:
        path = apply_transform(args.fixed, args.moving, args.transform, args.out, args.interp, device=args.device)
    except (ValueError, TypeError, OSError) as problem:
        return failure(COMMAND, problem)
    print(f"regnet apply: wrote {path} ({args.interp}, {time.perf_counter() - start:.1f} s)")
    return 0
