"""``affine.txt``: a world-space affine as plain text, one row a line.

The matrix ``M`` ``(ndim + 1)`` square (float64, RAS mm) maps fixed world points to moving
world points, ``moving_world = M @ fixed_world`` (a pull transform, as ``theta`` is; see
:func:`regnet.geometry.theta_to_world`). It is not an ITK/ANTs ``.mat`` (those are LPS).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

from regnet import _checks
from regnet.io._files import atomic_write

__all__ = ["load_affine", "save_affine"]


def save_affine(path: str | os.PathLike, matrix: ArrayLike) -> Path:
    """Write a world-space affine (``affine.txt``) atomically as plain text, one row a line.

    ``matrix`` ``(ndim+1, ndim+1)`` maps fixed world points (RAS mm) to moving world points:
    ``moving_world = matrix @ fixed_world`` (pull convention, see
    :func:`regnet.geometry.theta_to_world`).
    """
    path = Path(path)
    m = _checks.affine_matrix("save_affine", "matrix", matrix)

    def write(tmp: Path) -> None:
        np.savetxt(tmp, m, fmt="%.17g")

    atomic_write(path, write)
    return path


def load_affine(path: str | os.PathLike) -> np.ndarray:
    """Read an ``affine.txt`` written by :func:`save_affine`: float64 ``(ndim+1, ndim+1)``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"load_affine: {path}: no such file")
    try:
        m = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except ValueError as error:
        raise ValueError(f"load_affine: {path}: not a numeric matrix ({error})") from error
    m = _checks.affine_matrix("load_affine", f"{path}", m)
    if not np.allclose(m[-1], np.eye(m.shape[0])[-1]):
        raise ValueError(f"load_affine: {path}: last row must be (0, ..., 0, 1), got {m[-1].tolist()}")
    return m
