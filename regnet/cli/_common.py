"""What every ``regnet`` command shares: one-line errors, exit statuses, common options.

Expected errors (a bad argument or config, a missing or unreadable file, an output that cannot
be written) print one line to stderr, ``regnet COMMAND: error: ...``, and give exit status 2
(usage: argparse errors, a bad ``--config``, a bad option value, a missing, unreadable or
unusable ``--transform`` / ``--points`` / ``--initial-transform``, named as the option; no CUDA
for ``--device cuda``) or 1 (anything else); no traceback. Imports no torch at module level.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from regnet.pipeline.outdir import out_dir_problem

PROG = "regnet"


def error(command: str, message: str) -> None:
    print(f"{PROG} {command}: error: {message}", file=sys.stderr)


def cuda_missing(command: str, device: str) -> bool:
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        error(command, "--device cuda: CUDA is not available to this torch build or machine; use --device cpu")
        return True
    return False


def describe(problem: OSError) -> str:
    reason = problem.strerror or str(problem)
    return f"{reason} ('{problem.filename}')" if problem.filename else reason


def failure(command: str, problem: Exception) -> int:
    """Report an expected failure in one line; exit status 2 for a bad config or usage
    (``ConfigError``), else 1."""
    from regnet._checks import ConfigError

    message = describe(problem) if isinstance(problem, OSError) else str(problem)
    argument = getattr(problem, "argument", None)  # regnet.pipeline.ArgumentError: name the option
    if isinstance(argument, str) and isinstance(getattr(problem, "detail", None), str):
        message = f"--{argument.replace('_', '-')}: {problem.detail}"
    error(command, message)
    return 2 if isinstance(problem, ConfigError) else 1


def out_problem(command: str, out: Path) -> bool:
    """Report (and return ``True``) when ``out`` cannot serve as an output folder; checked before
    the slow imports."""
    problem = out_dir_problem(out)
    if problem:
        error(command, problem)
        return True
    return False


def transform_argument(parser: argparse.ArgumentParser) -> None:
    """``--transform DIR | FILE [FILE ...]`` (repeatable, like ANTs' ``-t``)."""
    parser.add_argument(
        "--transform", metavar="DIR|FILE", nargs="+", action="extend", required=True,
        help="output folder of 'regnet register', or transform files in ANTs' order (repeat or list them; "
             "FILE,1 inverts an affine: .mat, .txt; displacement fields .nii.gz)",
    )


def device_and_quiet(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="torch device (default: cpu)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars; only the summary is printed")
