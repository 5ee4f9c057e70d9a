"""Learning-based registration with PyTorch Lightning on regnet's kernels.

:class:`RegistrationModule` (a ``LightningModule``: MONAI backbone -> velocity or displacement
field -> :func:`regnet.ops.exp` / :func:`regnet.ops.warp` -> regnet losses),
:class:`PairDataModule` (a ``LightningDataModule`` of image pairs built from MONAI transforms)
and :mod:`regnet.lightning.cli` (``regnet train``, a ``LightningCLI``). Needs the ``train``
extra (``pytorch-lightning``, ``jsonargparse[signatures]``). See ``docs/lightning.md``.
"""

from regnet._checks import ConfigError
from regnet.lightning.data import PairDataModule
from regnet.lightning.module import RegistrationModule

__all__ = ["ConfigError", "PairDataModule", "RegistrationModule"]
