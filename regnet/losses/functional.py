"""Functional forms of regnet's losses (``torch.nn.functional`` style).

Each function takes tensors and configuration and returns a tensor; the ``nn.Module``s in
:mod:`regnet.losses` are thin wrappers that hold the configuration.
"""

from regnet.losses.dice import dice_loss, dice_score
from regnet.losses.local_ncc import local_ncc_loss
from regnet.losses.mse import mse
from regnet.losses.mutual_information import global_mutual_information
from regnet.losses.regularisers import bending_energy, diffusion, linear_elasticity

__all__ = [
    "bending_energy",
    "dice_loss",
    "dice_score",
    "diffusion",
    "global_mutual_information",
    "linear_elasticity",
    "local_ncc_loss",
    "mse",
]
