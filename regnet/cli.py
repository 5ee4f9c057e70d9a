"""The ``regnet`` command line.

Commands import torch (and the parts of regnet built on it) only when they run, so that
``regnet --help`` and ``regnet COMMAND --help`` answer at once. Expected errors (a bad
argument, an output folder that cannot be written) print one line to stderr and give exit
status 2 (usage) or 1 (anything else); no traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from regnet import __version__

PROG = "regnet"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Fast differentiable medical image registration on PyTorch and MONAI.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = commands.add_parser(
        "demo",
        help="register the bundled 2D brain slices and write the results",
        description=(
            "Register the bundled brain slice r16 (moving) onto r64 (fixed) with a multi-resolution "
            "diffeomorphic (stationary velocity field) registration built from regnet.ops, print "
            "global NCC and MSE before and after, and write warped.png, ddf.npy, overview.png and "
            "report.json into the output folder."
        ),
    )
    demo.add_argument(
        "--out", metavar="DIR", default="regnet-demo",
        help="output folder, created if missing (default: ./regnet-demo)",
    )
    demo.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="torch device (default: cpu)")
    demo.add_argument("--quiet", action="store_true", help="no progress bars; only the summary is printed")
    demo.set_defaults(run=_run_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``regnet`` command line with ``argv`` (default ``sys.argv[1:]``); return the
    exit status. ``--help``, ``--version`` and usage errors raise :class:`SystemExit` as
    :mod:`argparse` does (status 0, 0 and 2)."""
    start = time.perf_counter()
    args = build_parser().parse_args(argv)
    try:
        return args.run(args, start)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


def _error(command: str, message: str) -> None:
    print(f"{PROG} {command}: error: {message}", file=sys.stderr)


# --- regnet demo ----------------------------------------------------------------------------

def _run_demo(args: argparse.Namespace, start: float) -> int:
    out = Path(args.out)
    problem = _out_dir_problem(out)  # checked before the slow imports
    if problem:
        _error("demo", problem)
        return 1

    import torch

    from regnet.demo import run_demo

    if args.device == "cuda" and not torch.cuda.is_available():
        _error("demo", "--device cuda: CUDA is not available to this torch build or machine; use --device cpu")
        return 2
    try:
        report = run_demo(out, device=args.device, verbose=not args.quiet)
    except OSError as error:
        _error("demo", f"cannot write the results to '{out}': {_describe(error)}")
        return 1
    print(_demo_summary(report, time.perf_counter() - start))
    return 0


def _out_dir_problem(out: Path) -> str | None:
    """Why ``out`` cannot serve as the output folder, or ``None`` if it looks fine."""
    if out.exists():
        if not out.is_dir():
            return f"output path '{out}' exists and is not a directory"
        if not os.access(out, os.W_OK | os.X_OK):
            return f"output folder '{out}' is not writable"
        return None
    parent = out.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        return f"cannot create output folder '{out}': '{parent}' is not a directory"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot create output folder '{out}': '{parent}' is not writable"
    return None


def _describe(error: OSError) -> str:
    reason = error.strerror or str(error)
    return f"{reason} ('{error.filename}')" if error.filename else reason


def _demo_summary(report: dict, wall_seconds: float) -> str:
    ncc, err = report["metrics"]["global_ncc"], report["metrics"]["mse"]
    shape = "x".join(map(str, report["shape"]))
    rows = [
        ("metric", "before", "after"),
        ("global NCC", f"{ncc['before']:.4f}", f"{ncc['after']:.4f}"),
        ("MSE", f"{err['before']:.5f}", f"{err['after']:.5f}"),
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    table = [" | ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    table.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join([
        f"regnet demo: {report['moving']} (moving) -> {report['fixed']} (fixed), {shape}, {report['device']}",
        "",
        *table,
        "",
        f"time: registration {report['time_s']['registration']:.1f} s, total {wall_seconds:.1f} s",
        f"folding: {100 * report['folding_fraction']:.3f}% of pixels with Jacobian determinant <= 0",
        f"files: {', '.join(report['files'])} in {report['out_dir']}",
    ])


if __name__ == "__main__":
    raise SystemExit(main())
