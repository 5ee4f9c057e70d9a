"""``regnet train``: a ``LightningCLI`` over :class:`RegistrationModule` and :class:`PairDataModule`.

Usage (also ``python -m regnet.lightning.cli ...``)::

    regnet train fit --config configs/tiny_cpu.yaml --trainer.max_epochs 2
    regnet train validate --config configs/prostate_mr_us.yaml --ckpt_path runs/.../last.ckpt
    regnet train test|predict ...
    regnet train --config configs/prostate_mr_us.yaml      # no subcommand: fit

Config files are LightningCLI YAML (sections ``model:``, ``data:``, ``trainer:``,
``seed_everything:``); any key can be overridden on the command line (``--model.lr 3e-4``).
Multi-GPU / multi-node: ``--trainer.devices N --trainer.strategy ddp`` (two CPU processes:
``--trainer.accelerator cpu --trainer.devices 2 --trainer.strategy ddp``, gloo backend).
A configuration value the classes reject prints one line ``regnet train: error: ...`` and
exits with status 2.
"""

from __future__ import annotations

import sys
import warnings

from pytorch_lightning.cli import LightningCLI

from regnet._checks import ConfigError
from regnet.lightning._distributed import end_process_group
from regnet.lightning.data import PairDataModule
from regnet.lightning.module import RegistrationModule

SUBCOMMANDS = ("fit", "validate", "test", "predict")
PROG = "regnet train"


class RegNetCLI(LightningCLI):
    """LightningCLI whose class-construction errors (``ValueError`` / ``TypeError`` raised by
    the classes' own checks) become :class:`ConfigError` (one line, exit status 2 in :func:`main`)."""

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except ConfigError:
            raise
        except (ValueError, TypeError) as error:
            raise ConfigError(str(error)) from error


def _with_subcommand(argv: list[str]) -> list[str]:
    """``argv`` with ``fit`` put first when no subcommand is given (``--help`` left alone)."""
    if not argv or argv[0] in SUBCOMMANDS or argv[0] in ("-h", "--help", "--version") \
            or argv[0].startswith("--print"):
        return argv
    return ["fit", *argv]


def main(argv: list[str] | None = None) -> int:
    """Run ``regnet train`` with ``argv`` (default ``sys.argv[1:]``); return the exit status.
    ``--help`` and usage errors raise :class:`SystemExit` as jsonargparse does. The
    ``torch.distributed`` process group, if any, is destroyed on the way out (the command's
    processes end here)."""
    argv = _with_subcommand(list(sys.argv[1:] if argv is None else argv))
    try:
        with warnings.catch_warnings():
            # sys.argv is left as it is (DDP's launcher re-runs it in every process); argv is parsed
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
            RegNetCLI(
                RegistrationModule,
                PairDataModule,
                args=argv,
                seed_everything_default=0,
                save_config_kwargs={"overwrite": True},
                parser_kwargs={"prog": PROG, "description": "Train, validate, test or apply a registration "
                               "network (regnet.lightning.RegistrationModule on regnet.lightning.PairDataModule)."},
            )
    except ConfigError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    finally:
        end_process_group()  # DDP on CPUs: Lightning leaves the gloo group to the exit, which can abort
    return 0

if __name__ == "__main__":
    raise SystemExit(main())
