"""``regnet apply-points``: map a CSV of points through a transform list, as
``antsApplyTransformsToPoints`` does.

Points map in the direction of the pull mapping: the forward list of a registration (``[warp,
affine]``, ANTs' ``fwdtransforms``) takes points of the fixed space into the moving space;
``inverse=True`` (a folder's ``[affine.mat,1, inverse_warp.nii.gz]``, ANTs' ``invtransforms``)
takes points of the moving space into the fixed space, so that points follow the images: a
landmark on the moving image lands where ``regnet apply`` puts that structure.

Example::

    >>> apply_points("moving_landmarks.csv", "out/", "on_fixed.csv", inverse=True)
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from regnet.io.points import read_points, write_points
from regnet.pipeline.transform_list import ArgumentError, read_transforms

__all__ = ["apply_points", "map_points"]


def map_points(points, transform, inverse: bool = False) -> np.ndarray:
    """Points ``(N, ndim)`` (world RAS mm) through a transform: a ``regnet register`` folder, a
    transform file or a list in ANTs' order (:func:`~regnet.pipeline.transform_list.read_transforms`).
    Forward: fixed-space points -> moving space; ``inverse``: moving-space points -> fixed space.
    Returns float64 ``(N, ndim)``."""
    array = np.asarray(points, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] not in (2, 3) or not np.all(np.isfinite(array)):
        raise ValueError(f"map_points: points must be a finite (N, 2) or (N, 3) array, got shape {array.shape}")
    return read_transforms(transform, inverse=inverse, ndim=array.shape[1]).map_points(array)


def apply_points(points_path, transform, out_path, inverse: bool = False, ras: bool = False) -> Path:
    """``regnet apply-points``: read a CSV of points (ANTs' columns ``x, y[, z]`` in LPS mm, or
    RAS with ``ras``; other columns kept), map them (:func:`map_points`) and write ``out_path``
    in the same layout and convention (atomically).

    Raises:
        ArgumentError: ``points`` (missing or malformed file) or ``transform`` (see
            :func:`~regnet.pipeline.transform_list.read_transforms`).
    """
    transforms = read_transforms(transform, inverse=inverse)
    try:
        table = read_points(points_path, transforms.ndim, ras=ras)
    except FileNotFoundError:
        raise ArgumentError("points", f"no such file '{points_path}'") from None
    except (OSError, ValueError) as error:
        raise ArgumentError("points", str(error)) from None
    moved = transforms.map_points(table.points) if len(table.rows) else table.points
    return write_points(Path(os.fspath(out_path)), table, moved)
