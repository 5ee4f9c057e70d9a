"""Images on disk with their world affines: :class:`Image`, and :func:`load_image` /
:func:`save_image`, which dispatch on the file type to NIfTI (:mod:`regnet.io.nifti`, 2D/3D,
channels) or 2D pictures (:mod:`regnet.io.pictures`, PNG/JPEG/TIFF).

Layout in memory is regnet's: ``(1, C, *spatial)``, channel first, batch 1, spatial axes in
the file's array order (never flipped or permuted). The world affine maps array indices
``(i, j[, k], 1)`` to world millimetres (NIfTI: RAS, nibabel's ``img.affine``).

=========================  =============================  ===============================
on disk                    ``Image.data``                  ``Image.affine``
=========================  =============================  ===============================
NIfTI ``(X, Y, Z)``        ``(1, 1, X, Y, Z)``             4x4 ``img.affine``
NIfTI ``(X, Y, Z, C)``     ``(1, C, X, Y, Z)``             4x4 ``img.affine``
NIfTI ``(X, Y, Z, 1, C)``  ``(1, C, X, Y, Z)``             4x4 (ITK vector image layout)
NIfTI ``(X, Y)``,          ``(1, 1, X, Y)``                3x3, see below
``(X, Y, 1)``
NIfTI ``(X, Y, 1, C)``     ``(1, C, X, Y)``                3x3
PNG / JPEG / TIFF          ``(1, 1, H, W)``, H = rows      identity 3x3 (1 mm pixels)
=========================  =============================  ===============================

A 2D NIfTI's 3x3 affine is the 4x4 restricted to array axes 0, 1 and the two world axes
those array axes point along most (nibabel's ``io_orientation``; world x and y for an
axial slice). The full 4x4 stays in ``Image.header``; :func:`save_image` with
``like=`` puts it back.

Every writer of :mod:`regnet.io` is atomic: it writes a hidden temporary file in the
destination folder and renames it over the destination (``os.replace``), so an error leaves
neither a partial file nor a changed destination behind.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from numpy.typing import ArrayLike, DTypeLike

from regnet import _checks
from regnet.io._arrays import channels_first, to_numpy, to_tensor
from regnet.io._files import IMAGE_2D_SUFFIXES, NIFTI_SUFFIXES, SAVE_SUFFIXES
from regnet.io._files import suffix as _suffix
from regnet.io.nifti import like_header, read_nifti, write_nifti
from regnet.io.pictures import read_picture, write_png

# IMAGE_2D_SUFFIXES, NIFTI_SUFFIXES, SAVE_SUFFIXES and _suffix stay importable from here.
__all__ = ["IMAGE_2D_SUFFIXES", "NIFTI_SUFFIXES", "SAVE_SUFFIXES", "Image", "load_image", "save_image"]


@dataclass
class Image:
    """An image with its world geometry.

    Attributes:
        data: ``(1, C, *spatial)`` tensor, spatial axes in file order.
        affine: ``(ndim + 1, ndim + 1)`` float64 voxel -> world (mm) matrix.
        path: the file it was loaded from (``None`` if built in memory).
        dtype: the on-disk numpy dtype (e.g. ``uint8``), ``None`` if unknown.
        header: the NIfTI header (``None`` for PNG/JPEG/TIFF); :func:`save_image` reuses it
            through ``like=``.
    """

    data: torch.Tensor
    affine: np.ndarray
    path: Path | None = None
    dtype: np.dtype | None = None
    header: nib.Nifti1Header | None = field(default=None, repr=False)

    @property
    def ndim(self) -> int:
        """Number of spatial dimensions (2 or 3)."""
        return self.data.dim() - 2

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape[2:])

    @property
    def spacing(self) -> tuple[float, ...]:
        """Voxel size in mm along each array axis (column norms of the affine)."""
        n = self.ndim
        return tuple(float(s) for s in np.linalg.norm(self.affine[:n, :n], axis=0))


def load_image(path: str | os.PathLike, dtype: torch.dtype | None = torch.float32) -> Image:
    """Load a NIfTI (``.nii``, ``.nii.gz``) or 2D (``.png``, ``.jpg``, ``.jpeg``, ``.tif``,
    ``.tiff``) image.

    Args:
        path: the file.
        dtype: torch dtype of ``Image.data`` (default float32); ``None`` keeps the stored
            type (uint16 -> int32, uint32 -> int64, which torch handles).

    Returns:
        :class:`Image` with ``data`` ``(1, C, *spatial)`` in the file's array order and
        ``affine`` the voxel -> world matrix: nibabel's ``img.affine`` (RAS mm) for NIfTI,
        identity 3x3 for 2D formats. Values are as stored (NIfTI scaling
        ``scl_slope``/``scl_inter`` applied; 0..255 for 8-bit images, never rescaled).
        RGB(A) 2D images become one luminance channel (ITU-R 601-2, Pillow's ``"L"``).

    Raises:
        FileNotFoundError: no such file.
        ValueError: unsupported extension, unsupported NIfTI shape (1D, 5D+ except ITK's
            ``(X, Y, Z, 1, C)``), unreadable file.
    """
    path = Path(path)
    if dtype is not None and not isinstance(dtype, torch.dtype):
        raise TypeError(f"load_image: dtype must be a torch.dtype or None, got {dtype!r}")
    kind = _suffix(path)
    if kind not in NIFTI_SUFFIXES + IMAGE_2D_SUFFIXES:
        raise ValueError(
            f"load_image: {path}: unsupported file type {kind or '(no extension)'!r}; "
            f"expected one of {', '.join(NIFTI_SUFFIXES + IMAGE_2D_SUFFIXES)}"
        )
    if not path.is_file():
        raise FileNotFoundError(f"load_image: {path}: no such file")
    if kind in NIFTI_SUFFIXES:
        arr, affine, stored, header = read_nifti(path)
        return Image(data=to_tensor(arr, dtype)[None], affine=affine, path=path, dtype=stored, header=header)
    picture, stored = read_picture(path)
    return Image(data=to_tensor(picture, dtype)[None, None], affine=np.eye(3), path=path, dtype=stored)


def save_image(
    path: str | os.PathLike,
    data: torch.Tensor | np.ndarray,
    affine: ArrayLike | None = None,
    like: Image | nib.Nifti1Image | str | os.PathLike | None = None,
    dtype: DTypeLike | torch.dtype = None,
) -> Path:
    """Write an image atomically: NIfTI (``.nii``, ``.nii.gz``) or 2D PNG (``.png``).

    Args:
        path: destination; its folder must exist.
        data: tensor or array ``(1, C, *spatial)``, ``(C, *spatial)`` or ``(*spatial)``;
            the number of spatial axes is that of ``affine`` (3x3 -> 2D, 4x4 -> 3D).
        affine: voxel -> world matrix (3x3 or 4x4). ``None``: ``like``'s affine, or for PNG
            the identity (2D).
        like: an :class:`Image` (or nibabel image / NIfTI path) whose NIfTI header is
            copied (qform/sform codes, units, description, ...) with the new shape, affine
            and dtype. For a 2D image whose ``like`` is a 2D NIfTI, the full 4x4 of ``like``
            is kept with its in-plane part replaced by ``affine``.
        dtype: on-disk dtype (numpy/torch dtype or name). ``None`` keeps the data's own type
            (float16 -> float32, bool -> uint8, int64 -> int32 where it fits); ``like``'s
            dtype is not used implicitly, so that resampled intensities are never rounded
            silently: pass ``dtype=like.dtype`` to keep it. Casting to an integer dtype
            rounds to nearest and clips to its range (NaN/inf raise).

    NIfTI layout: ``(X, Y, Z)`` for one channel, ``(X, Y, Z, C)`` for several, as
    :func:`load_image` reads them; 2D: ``(X, Y)`` and ``(X, Y, 1, C)``.

    PNG: 2D, one channel, values clipped to ``[0, 65535]`` and rounded; written 8-bit when
    ``dtype`` is uint8 or (``dtype=None``) every value is <= 255, else 16-bit. Values are
    never rescaled: an image in ``[0, 1]`` must be multiplied by 255 first.

    Returns:
        ``Path(path)``.
    """
    fn = "save_image"
    path = Path(path)
    kind = _suffix(path)
    if kind not in SAVE_SUFFIXES:
        raise ValueError(
            f"{fn}: {path}: cannot write file type {kind or '(no extension)'!r}; "
            f"expected one of {', '.join(SAVE_SUFFIXES)}"
        )
    header, like4 = like_header(fn, like)
    if affine is None:
        if isinstance(like, Image):
            affine = like.affine
        elif kind == ".png":
            affine = np.eye(3)
        elif like4 is not None and to_numpy(fn, "data", data).ndim in (3, 5):
            affine = like4
        else:
            raise ValueError(f"{fn}: {path}: affine is required (or pass like= an Image)")
    affine = _checks.affine_matrix(fn, "affine", affine)
    arr = channels_first(fn, data, affine.shape[0] - 1)  # (C, *spatial)
    if kind == ".png":
        write_png(fn, path, arr, dtype)
    else:
        write_nifti(fn, path, arr, affine, header, like4, dtype)
    return path
