"""NIfTI images: reading and writing arrays with their affines, the 2D affine of a 2D NIfTI,
and headers copied from a reference image (``like=``).

On disk (nibabel's array order, never flipped) -> channel-first ``(C, *spatial)``:

=========================  =====================  ============================
on disk                    channel-first array    affine
=========================  =====================  ============================
``(X, Y, Z)``              ``(1, X, Y, Z)``       4x4 ``img.affine``
``(X, Y, Z, C)``           ``(C, X, Y, Z)``       4x4 ``img.affine``
``(X, Y, Z, 1, C)``        ``(C, X, Y, Z)``       4x4 (ITK vector image layout)
``(X, Y)``, ``(X, Y, 1)``  ``(1, X, Y)``          3x3, :func:`reduce_2d`
``(X, Y, 1, C)``           ``(C, X, Y)``          3x3
=========================  =====================  ============================

A 2D NIfTI's 3x3 affine is the 4x4 restricted to array axes 0, 1 and the two world axes those
array axes point along most (nibabel's ``io_orientation``; world x and y for an axial slice);
:func:`embed_2d` puts a 3x3 back into a 4x4.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import cast

import nibabel as nib
import numpy as np
import torch
from numpy.typing import DTypeLike

from regnet.io._arrays import as_np_dtype, cast_to, default_dtype
from regnet.io._files import atomic_write

__all__ = ["embed_2d", "like_header", "read_nifti", "reduce_2d", "write_nifti"]


def _rows_2d(affine4: np.ndarray) -> list[int]:
    """World axes (rows) that array axes 0 and 1 of a 2D NIfTI point along, in order."""
    try:
        ornt = nib.orientations.io_orientation(affine4)
        rows = sorted([int(ornt[0, 0]), int(ornt[1, 0])])
        if len(set(rows)) == 2:
            return rows
    except (ValueError, np.linalg.LinAlgError):
        pass
    return [0, 1]


def reduce_2d(affine4: np.ndarray) -> np.ndarray:
    """The 3x3 affine of a 2D NIfTI from its 4x4."""
    rows = _rows_2d(affine4)
    return affine4[np.ix_([*rows, 3], [0, 1, 3])].copy()


def embed_2d(affine3: np.ndarray, like4: np.ndarray | None) -> np.ndarray:
    """4x4 NIfTI affine of a 2D image: ``like4`` (default identity) with the in-plane part replaced."""
    base = np.eye(4) if like4 is None else np.array(like4, dtype=np.float64)
    rows = [0, 1] if like4 is None else _rows_2d(base)
    base[np.ix_([*rows, 3], [0, 1, 3])] = affine3
    return base


def read_nifti(path: Path) -> tuple[np.ndarray, np.ndarray, np.dtype, nib.Nifti1Header]:
    """``(array (C, *spatial), affine, on-disk dtype, header copy)`` of a NIfTI file (see the
    module docstring); ``ValueError`` naming ``path`` for unreadable files and unsupported shapes."""
    try:
        img = cast(nib.Nifti1Image, nib.load(str(path)))  # .nii / .nii.gz: NIfTI-1 or NIfTI-2
        arr = np.asanyarray(img.dataobj)
    except Exception as error:  # nibabel raises many types for damaged files
        raise ValueError(f"load_image: {path}: cannot read as NIfTI ({error})") from error
    if arr.dtype.names is not None or np.iscomplexobj(arr):
        raise ValueError(f"load_image: {path}: unsupported NIfTI data type {arr.dtype} (RGB or complex)")
    shape = arr.shape
    affine4 = np.asarray(img.affine, dtype=np.float64)
    if len(shape) == 5:  # ITK vector image: (X, Y, Z, 1, C)
        if shape[3] != 1:
            raise ValueError(
                f"load_image: {path}: 5D NIfTI {shape} is only supported as an ITK vector image "
                f"(X, Y, Z, 1, C); a time axis of {shape[3]} is not"
            )
        arr = arr[:, :, :, 0, :]
        shape = arr.shape
    if len(shape) == 2:
        arr, shape = arr[:, :, None], (*shape, 1)
    if len(shape) not in (3, 4):
        raise ValueError(
            f"load_image: {path}: {len(img.shape)}D NIfTI of shape {img.shape} is not supported; "
            f"expected (X, Y), (X, Y, Z), (X, Y, Z, C) or (X, Y, Z, 1, C)"
        )
    arr = arr[None] if len(shape) == 3 else np.moveaxis(arr, -1, 0)  # (1, X, Y, Z) / (C, X, Y, Z)
    if arr.shape[3] == 1:  # (X, Y, 1[, C]) is a 2D image
        arr = arr[..., 0]
        affine = reduce_2d(affine4)
    else:
        affine = affine4
    return arr, affine, np.dtype(img.get_data_dtype()), img.header.copy()


def like_header(fn: str, like: object) -> tuple[nib.Nifti1Header | None, np.ndarray | None]:
    """``(header copy, best 4x4 affine)`` of ``like`` (an object with a ``header``, such as a
    :class:`regnet.io.Image` or a nibabel image, or a NIfTI path); ``(None, None)`` without a
    NIfTI header."""
    if like is None:
        return None, None
    if isinstance(like, (str, os.PathLike)):
        try:
            header = nib.load(str(like)).header
        except Exception as error:
            raise ValueError(f"{fn}: like={like}: cannot read a NIfTI header ({error})") from error
    elif hasattr(like, "header"):
        header = like.header
    else:
        raise TypeError(f"{fn}: like must be an Image, a nibabel image or a NIfTI path, got {type(like).__name__}")
    if header is None or not isinstance(header, nib.Nifti1Header):
        return None, None
    return header.copy(), np.asarray(header.get_best_affine(), dtype=np.float64)


def _is_2d_header(header: nib.Nifti1Header | None) -> bool:
    if header is None:
        return False
    shape = header.get_data_shape()
    return len(shape) == 2 or (len(shape) >= 3 and shape[2] == 1)


def _nifti_image(array: np.ndarray, affine4: np.ndarray, header: nib.Nifti1Header | None) -> nib.Nifti1Image:
    if header is not None:
        img = nib.Nifti1Image(array, affine4, header=header)
        img.header.set_slope_inter(1.0, 0.0)
    else:
        img = nib.Nifti1Image(array, affine4)
        img.header.set_xyzt_units("mm", "sec")
        img.set_sform(affine4, code=1)
        img.set_qform(affine4, code=1)
    img.set_data_dtype(array.dtype)
    return img


def write_nifti(fn: str, path: Path, arr: np.ndarray, affine: np.ndarray, header: nib.Nifti1Header | None = None,
                like4: np.ndarray | None = None, dtype: DTypeLike | torch.dtype = None) -> None:
    """Write ``arr`` ``(C, *spatial)`` atomically as ``(X, Y, Z)`` / ``(X, Y, Z, C)`` (2D:
    ``(X, Y)`` / ``(X, Y, 1, C)``) in ``dtype`` (``None``: the data's own, see
    :func:`~regnet.io._arrays.default_dtype`), with ``header`` (from :func:`like_header`)
    copied; a 2D image keeps a 2D ``like``'s 4x4 (``like4``) with its in-plane part replaced."""
    out_dtype = default_dtype(arr) if dtype is None else as_np_dtype(fn, dtype)
    arr = cast_to(fn, path, arr, out_dtype)
    if affine.shape[0] == 3:
        affine4 = embed_2d(affine, like4 if like4 is not None and _is_2d_header(header) else None)
        arr = arr[0] if arr.shape[0] == 1 else np.moveaxis(arr, 0, -1)[:, :, None, :]  # (X, Y) / (X, Y, 1, C)
    else:
        affine4 = affine
        arr = arr[0] if arr.shape[0] == 1 else np.moveaxis(arr, 0, -1)  # (X, Y, Z) / (X, Y, Z, C)
    img = _nifti_image(np.ascontiguousarray(arr), affine4, header)
    atomic_write(path, lambda tmp: nib.save(img, str(tmp)))
