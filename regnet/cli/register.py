"""``regnet register``: register a moving image onto a fixed image and write an output folder."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from regnet.cli._common import cuda_missing, device_and_quiet, failure, out_problem

COMMAND = "register"


def add(commands) -> None:
    parser = commands.add_parser(
        COMMAND,
        help="register a moving image onto a fixed image (affine, SyN or both)",
        description=(
            "Register MOVING onto FIXED (NIfTI 2D/3D, or 2D PNG/JPEG/TIFF) through their world "
            "geometry and write into DIR: warped.nii.gz (or warped.png for 2D pictures), "
            "affine.txt (world matrix) and affine.mat (the same, as ANTs' 0GenericAffine.mat), "
            "ddf.nii.gz (total forward displacement on the fixed grid, ITK/ANTs layout), with SyN "
            "warp.nii.gz and inverse_warp.nii.gz (ANTs' 1Warp / 1InverseWarp; inverse_ddf.nii.gz "
            "is the latter), overview.png and report.json. DIR is built as a temporary sibling "
            "folder and renamed when complete: a failed run leaves no DIR, and an existing DIR "
            "(empty, or an earlier regnet output) is replaced only on success."
        ),
    )
    parser.add_argument("--fixed", metavar="FIXED", required=True, help="fixed (target) image")
    parser.add_argument("--moving", metavar="MOVING", required=True, help="moving image")
    parser.add_argument(
        "--transform", choices=("affine", "syn", "affine+syn"), default="affine+syn",
        help="transform model (default: affine+syn)",
    )
    parser.add_argument("--out", metavar="DIR", required=True, help="output folder")
    parser.add_argument(
        "--config", metavar="YAML",
        help="settings file with sections 'affine:' and 'syn:' (constructor arguments of "
             "AffineRegistration / SyNRegistration); presets in configs/",
    )
    parser.add_argument("--initial-transform", metavar="FILE", help="affine to start from instead of the centres "
                        "of mass: regnet's affine.txt or an ANTs/ITK .mat/.txt (FILE,1: its inverse), as ANTs' "
                        "--initial-moving-transform")
    parser.add_argument("--fixed-mask", metavar="MASK", help="binary mask on the fixed grid: the similarity "
                        "counts only voxels inside it (ANTs' -x)")
    parser.add_argument("--moving-mask", metavar="MASK", help="binary mask on the moving grid: voxels whose "
                        "point falls outside it do not count")
    parser.add_argument("--fixed-labels", metavar="SEG", help="label map of the fixed image: per-structure Dice "
                        "and HD95 (mm) before/after in report.json, with --moving-labels")
    parser.add_argument("--moving-labels", metavar="SEG", help="label map of the moving image (any grid); "
                        "written warped as warped_labels.nii.gz")
    device_and_quiet(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, start: float) -> int:
    out = Path(args.out)
    if out_problem(COMMAND, out):
        return 1
    if (args.fixed_labels is None) != (args.moving_labels is None):
        from regnet.cli._common import error

        error(COMMAND, "--fixed-labels and --moving-labels go together: give both label maps or neither")
        return 2
    if cuda_missing(COMMAND, args.device):
        return 2
    from regnet.pipeline import register_files

    labels = None if args.fixed_labels is None else (args.moving_labels, args.fixed_labels)
    try:
        report = register_files(args.fixed, args.moving, args.transform, out, config=args.config,
                                device=args.device, verbose=not args.quiet, labels=labels,
                                initial_transform=args.initial_transform, fixed_mask=args.fixed_mask,
                                moving_mask=args.moving_mask)
    except (ValueError, TypeError, OSError) as problem:
        return failure(COMMAND, problem)
    print(summary(report, time.perf_counter() - start))
    return 0


def summary(report: dict, wall_seconds: float) -> str:
    ncc, err = report["metrics"]["global_ncc"], report["metrics"]["mse"]
    times = report["time_s"]
    stages = ", ".join(f"{stage} {times[stage]['total']:.1f} s" for stage in ("affine", "syn") if stage in times)
    fixed, moving = report["fixed"], report["moving"]
    lines = [
        f"regnet register ({report['transform']}, {report['device']}): {moving['path']} "
        f"({'x'.join(map(str, moving['shape']))}) -> {fixed['path']} ({'x'.join(map(str, fixed['shape']))})",
        f"global NCC {ncc['before']:.4f} -> {ncc['after']:.4f}, MSE {err['before']:.5f} -> {err['after']:.5f}",
    ]
    if "dice" in report["metrics"]:
        dice = report["metrics"]["dice"]
        lines.append(f"mean Dice ({len(dice['labels'])} FreeSurfer structures) {dice['before']:.4f} -> "
                     f"{dice['after']:.4f}")
    lines += [
        f"folding: {100 * report['jacobian']['fraction_nonpositive']:.3f}% of voxels with Jacobian determinant <= 0",
        f"time: registration {times['registration']:.1f} s ({stages}), total {wall_seconds:.1f} s",
        f"files: {', '.join(report['files'])} in {report['out_dir']}",
    ]
    return "\n".join(lines)
