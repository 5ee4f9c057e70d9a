"""The ``regnet`` command line: one module per command (``register``, ``register-many``,
``template``, ``apply``, ``apply-points``, ``demo``, ``train``), each with ``add(commands)``
(its argparse sub-parser) and ``run(args, start)``.

A thin :mod:`argparse` layer over :mod:`regnet.pipeline` and :mod:`regnet.demo`. Commands
import torch (and the parts of regnet built on it) only when they run, so that ``regnet
--help`` and ``regnet COMMAND --help`` answer at once; ``regnet train ARGS...`` hands ``ARGS``
to the LightningCLI of :mod:`regnet.lightning.cli`. OpenMP is told to wait passively before
torch is imported (:mod:`regnet._openmp`). Errors: :mod:`regnet.cli._common`.

Example::

    $ regnet register --fixed F.nii.gz --moving M.nii.gz --out DIR
"""

from __future__ import annotations

import argparse
import sys
import time

from regnet import __version__
from regnet._openmp import prefer_passive_waiting
from regnet.cli import apply, apply_points, demo, register, register_many, template, train
from regnet.cli._common import PROG

COMMANDS = (register, register_many, template, apply, apply_points, demo, train)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Fast differentiable medical image registration on PyTorch and MONAI.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.add(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``regnet`` command line with ``argv`` (default ``sys.argv[1:]``); return the
    exit status. ``--help``, ``--version`` and usage errors raise :class:`SystemExit` as
    :mod:`argparse` does (status 0, 0 and 2)."""
    start = time.perf_counter()
    prefer_passive_waiting()  # before torch is imported (regnet._openmp)
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == train.COMMAND:  # everything after 'train' belongs to the LightningCLI
        return train.run(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return args.run(args, start)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
