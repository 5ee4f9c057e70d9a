"""Similarity losses and regularisers as ``nn.Module``s (functional forms in
:mod:`regnet.losses.functional`).

Similarity: :class:`MSELoss`, :class:`DiceLoss`, :class:`LocalNCCLoss`, :class:`GlobalMILoss`.
Regularisers of a displacement field ``(B, ndim, *spatial)`` in voxels:
:class:`BendingEnergyLoss`, :class:`DiffusionLoss`, :class:`LinearElasticityLoss`.
All are minimised (similarities are negated where needed).
"""

from regnet.losses import functional
from regnet.losses.dice import DiceLoss
from regnet.losses.local_ncc import LocalNCCLoss
from regnet.losses.mse import MSELoss
from regnet.losses.mutual_information import GlobalMILoss
from regnet.losses.regularisers import BendingEnergyLoss, DiffusionLoss, LinearElasticityLoss

__all__ = [
    "BendingEnergyLoss",
    "DiceLoss",
    "DiffusionLoss",
    "GlobalMILoss",
    "LinearElasticityLoss",
    "LocalNCCLoss",
    "MSELoss",
    "functional",
]
