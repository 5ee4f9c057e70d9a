"""Learning-based registration with PyTorch Lightning on regnet's kernels.

:class:`RegistrationModule` (a ``LightningModule``: MONAI backbone -> velocity or displacement
field -> :func:`regnet.ops.exp` / :func:`regnet.ops.warp` -> regnet losses),
:class:`PairDataModule` (a ``LightningDataModule`` of image pairs built from MONAI transforms)
and :mod:`regnet.lightning.cli` (``regnet train``, a ``LightningCLI``); :mod:`regnet.lightning.many`
spreads ``regnet register-many`` / ``regnet template`` over processes. Needs the ``train``
extra (``pytorch-lightning``, ``jsonargparse[signatures]``). See ``docs/lightning.md``.

The classes are imported when first used, so that :mod:`regnet.lightning.many` (which every
process of a distributed ``register-many`` imports) does not pay for MONAI's networks.
"""

from importlib import import_module

from regnet._checks import ConfigError

_LAZY = {"PairDataModule": "regnet.lightning.data", "RegistrationModule": "regnet.lightning.module"}

__all__ = ["ConfigError", "PairDataModule", "RegistrationModule"]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'regnet.lightning' has no attribute {name!r}")
    value = getattr(import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
