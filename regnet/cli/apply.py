"""``regnet apply``: map an image or label map through a saved transform (a regnet folder or a
list of ANTs/ITK transform files), forward or inverse, as ``antsApplyTransforms`` does."""

from __future__ import annotations

import argparse
import time

from regnet.cli._common import cuda_missing, error, failure, transform_argument

COMMAND = "apply"


def add(commands) -> None:
    parser = commands.add_parser(
        COMMAND,
        help="map an image or label map with a saved transform (regnet folder or ANTs files), or its inverse",
        description=(
            "Resample IMAGE onto an output grid through a transform: the folder written by 'regnet "
            "register', or ANTs/ITK transform files in ANTs' order (the first listed acts first on the "
            "output grid's points: warp.nii.gz affine.mat; FILE,1 inverts an affine). The output grid "
            "is --fixed (the registration's fixed image) or --reference (any image, ANTs' -r). "
            "--inverse maps an image of the fixed subject onto the moving subject (give the moving "
            "image as --reference). Use --interp nearest for label maps (their values and file type "
            "are kept)."
        ),
    )
    parser.add_argument("--moving", "--input", dest="moving", metavar="IMAGE", required=True,
                        help="image or label map to map (of the moving subject; with --inverse of the fixed subject)")
    grid = parser.add_mutually_exclusive_group(required=True)
    grid.add_argument("--fixed", metavar="FIXED", help="the fixed image of the registration: the output grid")
    grid.add_argument("--reference", metavar="REF", help="any image whose grid and header the output takes "
                      "(ANTs' -r); with --inverse an image of the moving subject")
    transform_argument(parser)
    parser.add_argument("--inverse", action="store_true", help="the inverse mapping: fixed subject -> moving "
                        "subject (a folder's [affine.mat,1, inverse_warp.nii.gz]; a list reversed, affines inverted)")
    parser.add_argument(
        "--interp", choices=("linear", "label", "nearest"), default="linear",
        help="interpolation: linear for images; label (label-wise linear, ANTs' GenericLabel) or nearest for "
             "label maps (default: linear)",
    )
    parser.add_argument("--out", metavar="OUT", required=True, help="output file (.nii.gz, .nii or .png)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="torch device (default: cpu)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, start: float) -> int:
    if args.inverse and args.fixed is not None:
        error(COMMAND, "--reference: --inverse maps onto the moving subject: give its grid with --reference (e.g. "
                       "the moving image) instead of --fixed")
        return 2
    if cuda_missing(COMMAND, args.device):
        return 2
    from regnet.pipeline import apply_transform

    try:
        path = apply_transform(args.fixed, args.moving, args.transform, args.out, args.interp, device=args.device,
                               reference=args.reference, inverse=args.inverse)
    except (ValueError, TypeError, OSError) as problem:
        return failure(COMMAND, problem)
    print(f"regnet apply: wrote {path} ({args.interp}{', inverse' if args.inverse else ''}, "
          f"{time.perf_counter() - start:.1f} s)")
    return 0
