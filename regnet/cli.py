"""The ``regnet`` command line: ``register``, ``apply``, ``demo`` and ``train``.

A thin :mod:`argparse` layer over :mod:`regnet.pipeline` (``register_files``,
``apply_transform``) and :mod:`regnet.demo`. Commands import torch (and the parts of regnet
built on it) only when they run, so that ``regnet --help`` and ``regnet COMMAND --help``
answer at once; ``regnet train ARGS...`` hands ``ARGS`` to the LightningCLI of
:mod:`regnet.lightning.cli`, imported only then. Expected errors (a bad argument or config, a
missing or unreadable file, an output folder that cannot be written) print one line to stderr
and give exit status 2 (usage: argparse errors, a bad ``--config``, no CUDA for ``--device
cuda``) or 1 (anything else); no traceback.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from regnet import __version__
from regnet._openmp import prefer_passive_waiting
from regnet.pipeline.outdir import out_dir_problem

PROG = "regnet"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Fast differentiable medical image registration on PyTorch and MONAI.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    register = commands.add_parser(
        "register",
        help="register a moving image onto a fixed image (affine, SyN or both)",
        description=(
            "Register MOVING onto FIXED (NIfTI 2D/3D, or 2D PNG/JPEG/TIFF) through their world "
            "geometry and write into DIR: warped.nii.gz (or warped.png for 2D pictures), "
            "affine.txt (world matrix, with an affine part), ddf.nii.gz (total forward "
            "displacement on the fixed grid, ITK/ANTs layout), inverse_ddf.nii.gz (SyN), "
            "overview.png and report.json. DIR is built as a temporary sibling folder and renamed "
            "when complete: a failed run leaves no DIR, and an existing DIR (empty, or an earlier "
            "regnet output) is replaced only on success."
        ),
    )
    register.add_argument("--fixed", metavar="FIXED", required=True, help="fixed (target) image")
    register.add_argument("--moving", metavar="MOVING", required=True, help="moving image")
    register.add_argument(
        "--transform", choices=("affine", "syn", "affine+syn"), default="affine+syn",
        help="transform model (default: affine+syn)",
    )
    register.add_argument("--out", metavar="DIR", required=True, help="output folder")
    register.add_argument(
        "--config", metavar="YAML",
        help="settings file with sections 'affine:' and 'syn:' (constructor arguments of "
             "AffineRegistration / SyNRegistration); presets in configs/",
    )
    _device_and_quiet(register)
    register.set_defaults(run=_run_register)

    apply = commands.add_parser(
        "apply",
        help="map another image or label map of the moving subject with a saved transform",
        description=(
            "Resample MOVING (any image of the moving subject, on any grid) onto the FIXED grid "
            "with the transform saved by 'regnet register' in DIR (ddf.nii.gz). Use --interp "
            "nearest for label maps (their values and file type are kept)."
        ),
    )
    apply.add_argument("--fixed", metavar="FIXED", required=True, help="the fixed image of the registration")
    apply.add_argument("--moving", metavar="IMAGE", required=True, help="image or label map to map")
    apply.add_argument("--transform", metavar="DIR", required=True, help="output folder of 'regnet register'")
    apply.add_argument(
        "--interp", choices=("linear", "nearest"), default="linear",
        help="interpolation: linear for images, nearest for label maps (default: linear)",
    )
    apply.add_argument("--out", metavar="OUT", required=True, help="output file (.nii.gz, .nii or .png)")
    apply.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="torch device (default: cpu)")
    apply.set_defaults(run=_run_apply)

    demo = commands.add_parser(
        "demo",
        help="register the bundled brain data (2D slices and a small 3D volume) and write the results",
        description=(
            "Run 'regnet register' (affine+syn) on bundled real data: the brain slice r16 (moving) "
            "onto r64 (fixed), and a small 3D brain onto a randomly deformed copy of itself (with "
            "labels for Dice). Writes DIR/2d/ and DIR/3d/ as 'regnet register' writes DIR, and "
            "prints global NCC and MSE before and after, Dice, folding and timings."
        ),
    )
    demo.add_argument(
        "--out", metavar="DIR", default="regnet-demo",
        help="output folder, created if missing (default: ./regnet-demo)",
    )
    _device_and_quiet(demo)
    demo.set_defaults(run=_run_demo)

    commands.add_parser(
        "train",
        help="train / validate / test / apply a registration network (LightningCLI; "
             "'regnet train --help' for its options)",
        description=(
            "regnet train {fit,validate,test,predict} [--config YAML] [--trainer.KEY VALUE ...]: the "
            "LightningCLI of regnet.lightning (RegistrationModule + PairDataModule); without a subcommand, "
            "fit. Configs in configs/ (prostate_mr_us.yaml, brain_unsupervised.yaml, tiny_cpu.yaml). Needs "
            "the 'train' extra (pytorch-lightning, jsonargparse)."
        ),
        add_help=False,
    )
    return parser


def _device_and_quiet(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="torch device (default: cpu)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars; only the summary is printed")


def main(argv: list[str] | None = None) -> int:
    """Run the ``regnet`` command line with ``argv`` (default ``sys.argv[1:]``); return the
    exit status. ``--help``, ``--version`` and usage errors raise :class:`SystemExit` as
    :mod:`argparse` does (status 0, 0 and 2)."""
    start = time.perf_counter()
    prefer_passive_waiting()  # before torch is imported (regnet._openmp)
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "train":  # everything after 'train' belongs to the LightningCLI
        return _run_train(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return args.run(args, start)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


def _error(command: str, message: str) -> None:
    print(f"{PROG} {command}: error: {message}", file=sys.stderr)


def _cuda_missing(command: str, device: str) -> bool:
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        _error(command, "--device cuda: CUDA is not available to this torch build or machine; use --device cpu")
        return True
    return False


def _failure(command: str, error: Exception) -> int:
    """Report an expected failure in one line; exit status 2 for a bad config, else 1."""
    from regnet._checks import ConfigError

    message = _describe(error) if isinstance(error, OSError) else str(error)
    _error(command, message)
    return 2 if isinstance(error, ConfigError) else 1


# --- regnet register ------------------------------------------------------------------------

def _run_register(args: argparse.Namespace, start: float) -> int:
    out = Path(args.out)
    problem = out_dir_problem(out)  # checked before the slow imports
    if problem:
        _error("register", problem)
        return 1
    if _cuda_missing("register", args.device):
        return 2
    from regnet.pipeline import register_files

    try:
        report = register_files(args.fixed, args.moving, args.transform, out, config=args.config,
                                device=args.device, verbose=not args.quiet)
    except (ValueError, TypeError, OSError) as error:
        return _failure("register", error)
    print(_register_summary(report, time.perf_counter() - start))
    return 0


def _register_summary(report: dict, wall_seconds: float) -> str:
    ncc, err = report["metrics"]["global_ncc"], report["metrics"]["mse"]
    times = report["time_s"]
    stages = ", ".join(f"{stage} {times[stage]['total']:.1f} s" for stage in ("affine", "syn") if stage in times)
    fixed, moving = report["fixed"], report["moving"]
    return "\n".join([
        f"regnet register ({report['transform']}, {report['device']}): {moving['path']} "
        f"({'x'.join(map(str, moving['shape']))}) -> {fixed['path']} ({'x'.join(map(str, fixed['shape']))})",
        f"global NCC {ncc['before']:.4f} -> {ncc['after']:.4f}, MSE {err['before']:.5f} -> {err['after']:.5f}",
        f"folding: {100 * report['jacobian']['fraction_nonpositive']:.3f}% of voxels with Jacobian determinant <= 0",
        f"time: registration {times['registration']:.1f} s ({stages}), total {wall_seconds:.1f} s",
        f"files: {', '.join(report['files'])} in {report['out_dir']}",
    ])


# --- regnet apply ---------------------------------------------------------------------------

def _run_apply(args: argparse.Namespace, start: float) -> int:
    if _cuda_missing("apply", args.device):
        return 2
    from regnet.pipeline import apply_transform

    try:
        path = apply_transform(args.fixed, args.moving, args.transform, args.out, args.interp, device=args.device)
    except (ValueError, TypeError, OSError) as error:
        return _failure("apply", error)
    print(f"regnet apply: wrote {path} ({args.interp}, {time.perf_counter() - start:.1f} s)")
    return 0


# --- regnet train ---------------------------------------------------------------------------

def _run_train(argv: list[str]) -> int:
    from importlib.util import find_spec

    missing = [name for name in ("pytorch_lightning", "jsonargparse") if find_spec(name) is None]
    if missing:
        _error("train", f"{' and '.join(missing)} not installed; 'regnet train' needs the train extra: "
                        f"pip install 'regnet[train]' (pytorch-lightning, jsonargparse[signatures])")
        return 2
    from regnet.lightning.cli import main as train_main

    return train_main(argv)


# --- regnet demo ----------------------------------------------------------------------------

def _run_demo(args: argparse.Namespace, start: float) -> int:
    out = Path(args.out)
    problem = out_dir_problem(out)  # checked before the slow imports
    if problem:
        _error("demo", problem)
        return 1
    if _cuda_missing("demo", args.device):
        return 2
    from regnet.demo import run_demo, summary_table

    try:
        summary = run_demo(out, device=args.device, verbose=not args.quiet)
    except (ValueError, TypeError, OSError) as error:
        return _failure("demo", error)
    print(_demo_summary(summary, summary_table(summary), time.perf_counter() - start))
    return 0


def _describe(error: OSError) -> str:
    reason = error.strerror or str(error)
    return f"{reason} ('{error.filename}')" if error.filename else reason


def _demo_summary(summary: dict, table: str, wall_seconds: float) -> str:
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
        f"overview.png, report.json) "
        f"in {summary['out_dir']}",
    ])


if __name__ == "__main__":
    raise SystemExit(main())
