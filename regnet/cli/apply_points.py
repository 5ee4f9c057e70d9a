"""``regnet apply-points``: map a CSV of points through a saved transform, as
``antsApplyTransformsToPoints`` does."""

from __future__ import annotations

import argparse
import time

from regnet.cli._common import failure, transform_argument

COMMAND = "apply-points"


def add(commands) -> None:
    parser = commands.add_parser(
        COMMAND,
        help="map a CSV of points (ANTs' x,y,z,t in LPS mm) with a saved transform",
        description=(
            "Map the points of a CSV file (header row; columns x,y[,z] in LPS mm as "
            "antsApplyTransformsToPoints reads them, or RAS with --ras; other columns such as t are "
            "kept) through a transform: the folder written by 'regnet register' or ANTs/ITK transform "
            "files in ANTs' order. By default fixed-space points go into the moving space (the "
            "direction of the pull mapping, ANTs' forward list); --inverse takes moving-space points "
            "(e.g. landmarks on the moving image) into the fixed space."
        ),
    )
    parser.add_argument("--points", metavar="CSV", required=True, help="input points (CSV with a header row)")
    transform_argument(parser)
    parser.add_argument("--out", metavar="CSV", required=True, help="output CSV (same columns)")
    parser.add_argument("--inverse", action="store_true", help="moving-space points -> fixed space")
    parser.add_argument("--ras", action="store_true", help="coordinates in RAS mm (NIfTI) instead of LPS (ANTs)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, start: float) -> int:
    from regnet.pipeline import apply_points

    try:
        path = apply_points(args.points, args.transform, args.out, inverse=args.inverse, ras=args.ras)
    except (ValueError, TypeError, OSError) as problem:
        return failure(COMMAND, problem)
    print(f"regnet apply-points: wrote {path} ({'inverse, ' if args.inverse else ''}"
          f"{'RAS' if args.ras else 'LPS'}, {time.perf_counter() - start:.1f} s)")
    return 0
