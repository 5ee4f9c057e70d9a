"""Options shared by ``regnet register-many`` and ``regnet template``: the registration
(``--transform``, ``--config``, ``--batch-size``), the device, and the Lightning options that
spread the pairs over processes (``--devices``, ``--num-nodes``, ``--strategy``,
``--accelerator``). Without any of the latter the work runs in this process (no Lightning).
Imports no torch at module level.
"""

from __future__ import annotations

import argparse

from regnet.cli._common import cuda_missing as _cuda_missing
from regnet.cli._common import device_and_quiet, error

DISTRIBUTED = ("devices", "num_nodes", "strategy", "accelerator")


def _devices(text: str):
    return text if text == "auto" else int(text)


def add_options(parser: argparse.ArgumentParser, transform_default: str = "affine+syn") -> None:
    parser.add_argument("--transform", choices=("affine", "syn", "affine+syn"), default=transform_default,
                        help=f"transform model, as in 'regnet register' (default: {transform_default})")
    parser.add_argument("--config", metavar="YAML", help="settings file with sections 'affine:' and 'syn:', as in "
                        "'regnet register'")
    parser.add_argument("--batch-size", type=int, metavar="B", help="pairs registered as one batch (pairs on one "
                        "fixed grid); default: as many as hold 1 Mi voxels together on the CPU (16 Mi on CUDA), "
                        "at most 16")
    device_and_quiet(parser)
    group = parser.add_argument_group("distribution over processes (Lightning Trainer; any of these turns it on)")
    group.add_argument("--devices", type=_devices, metavar="N", help="processes (devices) per node, or 'auto'")
    group.add_argument("--num-nodes", type=int, metavar="N", help="nodes (SLURM, torchrun)")
    group.add_argument("--strategy", metavar="NAME", help="Lightning strategy (default: ddp when more than one "
                       "process)")
    group.add_argument("--accelerator", metavar="NAME", help="Lightning accelerator: cpu, gpu, auto (default: from "
                       "--device)")


def check(command: str, args: argparse.Namespace) -> int:
    """0, or the exit status after reporting a bad option or a missing CUDA device (before the
    slow imports)."""
    if args.batch_size is not None and args.batch_size < 1:
        error(command, f"--batch-size must be >= 1, got {args.batch_size}")
        return 2
    if isinstance(args.devices, int) and args.devices < 1 or args.num_nodes is not None and args.num_nodes < 1:
        error(command, "--devices and --num-nodes must be >= 1")
        return 2
    if any(getattr(args, name) is not None for name in DISTRIBUTED):
        from importlib.util import find_spec

        if find_spec("pytorch_lightning") is None:
            error(command, "--devices/--num-nodes/--strategy/--accelerator need pytorch-lightning: "
                           "pip install 'regnet[train]'")
            return 2
    return 2 if cuda_missing(command, args) else 0


def cuda_missing(command: str, args: argparse.Namespace) -> bool:
    """``--device cuda`` without CUDA, reported (only when the work runs in this process or on
    the device Lightning is told to use by ``--device``)."""
    return args.accelerator is None and _cuda_missing(command, args.device)


def close(engine) -> None:
    """End a Lightning engine's process group (see :meth:`LightningEngine.close`); ``None``: nothing."""
    if engine is not None:
        engine.close()


def engine(args: argparse.Namespace):
    """``None`` (this process) or a :class:`regnet.lightning.many.LightningEngine`."""
    if all(getattr(args, name) is None for name in DISTRIBUTED):
        return None
    from regnet.lightning.many import LightningEngine

    devices = 1 if args.devices is None else args.devices
    nodes = 1 if args.num_nodes is None else args.num_nodes
    strategy = args.strategy or ("ddp" if devices == "auto" or devices > 1 or nodes > 1 else "auto")
    accelerator = args.accelerator or ("gpu" if args.device == "cuda" else "cpu")
    try:
        return LightningEngine(accelerator=accelerator, devices=devices, num_nodes=nodes, strategy=strategy,
                               verbose=not args.quiet)
    except Exception as problem:  # Lightning's MisconfigurationException and the like: a usage error
        from regnet._checks import ConfigError

        raise ConfigError(f"Lightning Trainer(accelerator={accelerator!r}, devices={devices!r}, num_nodes={nodes}, "
                          f"strategy={strategy!r}): {problem}") from None
