"""Evaluation metrics for registration: label overlap, surface distance, Jacobian statistics,
landmark error, image similarity.

Plain functions returning Python numbers, computed without autograd on the tensors' own
device (CPU or CUDA), for 2D and 3D. Label maps are integer tensors ``(B, 1, *spatial)`` or
``(*spatial)`` (float tensors holding whole numbers are accepted too); label 0 is the
background. Displacement fields are regnet voxel DDFs ``(B, ndim, *spatial)``.

=====================================  ===============================================================
:mod:`~regnet.metrics.overlap`         :func:`dice_per_label`, :func:`mean_dice`, :func:`dice30`
                                       (Learn2Reg's robustness score), :data:`SCORED_LABELS`
:mod:`~regnet.metrics.surface`         :func:`hausdorff95` (HD95, mm with the voxel size)
:mod:`~regnet.metrics.jacobian`        :func:`jacobian_stats`, :func:`sdlogj` (std of log det J,
                                       optionally in a mask), :func:`sdlogj_learn2reg` (Learn2Reg's
                                       exact formula)
:mod:`~regnet.metrics.points`          :func:`tre` (target registration error of landmarks)
:mod:`~regnet.metrics.similarity`      :func:`global_ncc`, :func:`mse`
=====================================  ===============================================================

Batches: a value per label is the mean over the image pairs of the batch for which it is
defined; field statistics pool the voxels of all batch items (see each function).

Example::

    >>> from regnet.metrics import dice_per_label, dice30, hausdorff95, sdlogj_learn2reg
    >>> dice = dice_per_label(warped_labels, fixed_labels, labels=SCORED_LABELS)
    >>> hd95 = hausdorff95(warped_labels, fixed_labels, labels=list(dice), spacing=(1.0, 1.0, 1.2))
    >>> dice30(all_pair_structure_dice)                 # mean of the lowest 30 %
"""

from regnet.metrics.jacobian import jacobian_stats, learn2reg_jacobian_det, sdlogj, sdlogj_learn2reg
from regnet.metrics.overlap import DICE30_METHODS, SCORED_LABELS, dice30, dice_per_label, mean_dice
from regnet.metrics.points import tre
from regnet.metrics.similarity import global_ncc, mse
from regnet.metrics.surface import _nearest_distances, hausdorff95  # noqa: F401 (_nearest_distances: tests)

__all__ = [
    "DICE30_METHODS",
    "SCORED_LABELS",
    "dice30",
    "dice_per_label",
    "global_ncc",
    "hausdorff95",
    "jacobian_stats",
    "learn2reg_jacobian_det",
    "mean_dice",
    "mse",
    "sdlogj",
    "sdlogj_learn2reg",
    "tre",
]
