"""``regnet train``: the LightningCLI of :mod:`regnet.lightning` (everything after ``train`` is its)."""

from __future__ import annotations

from regnet.cli._common import error

COMMAND = "train"


def add(commands) -> None:
    commands.add_parser(
        COMMAND,
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


def run(argv: list[str]) -> int:
    from importlib.util import find_spec

    missing = [name for name in ("pytorch_lightning", "jsonargparse") if find_spec(name) is None]
    if missing:
        error(COMMAND, f"{' and '.join(missing)} not installed; 'regnet train' needs the train extra: "
                       f"pip install 'regnet[train]' (pytorch-lightning, jsonargparse[signatures])")
        return 2
    from regnet.lightning.cli import main as train_main

    return train_main(argv)
