"""Images on disk with their world affines: NIfTI (2D/3D, channels) and 2D PNG/JPEG/TIFF.

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

Every writer here is atomic: it writes a hidden temporary file in the destination folder
and renames it over the destination (``os.replace``), so an error leaves neither a partial
file nor a changed destination behind.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch

NIFTI_SUFFIXES = (".nii.gz", ".nii")
IMAGE_2D_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
SAVE_SUFFIXES = (*NIFTI_SUFFIXES, ".png")

# NIfTI intent codes used for displacement fields.
INTENT_DISPVECT = 1006  # displacement vectors; ITK >= 5.4 reads their components as RAS
INTENT_VECTOR = 1007  # generic vectors; what ITK/ANTs write for a displacement field (LPS)

# torch has no (or little) support for these; widen them losslessly.
_WIDEN = {np.dtype(np.uint16): np.int32, np.dtype(np.uint32): np.int64}


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
    header: Any = field(default=None, repr=False)

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


# --- helpers --------------------------------------------------------------------------------

def _suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in (*NIFTI_SUFFIXES, *IMAGE_2D_SUFFIXES):
        if name.endswith(suffix):
            return suffix
    return path.suffix.lower()


def _to_numpy(fn: str, name: str, x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.dtype in (torch.float16, torch.bfloat16):
            x = x.float()
        return x.numpy()
    if isinstance(x, np.ndarray):
        return x
    raise TypeError(f"{fn}: {name} must be a torch.Tensor or numpy.ndarray, got {type(x).__name__}")


def _check_affine(fn: str, name: str, affine, ndim: int | None = None) -> np.ndarray:
    if isinstance(affine, torch.Tensor):
        affine = affine.detach().cpu().numpy()
    try:
        a = np.asarray(affine, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{fn}: {name} must be a square matrix, got {type(affine).__name__}") from None
    if a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape[0] not in (3, 4):
        raise ValueError(f"{fn}: {name} must be 3x3 (2D) or 4x4 (3D), got shape {a.shape}")
    if ndim is not None and a.shape[0] != ndim + 1:
        raise ValueError(f"{fn}: {name} must be {ndim + 1}x{ndim + 1} for {ndim}D data, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{fn}: {name} contains NaN or infinite values")
    return a


def _torch_array(arr: np.ndarray, dtype: torch.dtype | None) -> torch.Tensor:
    if arr.dtype in _WIDEN:
        arr = arr.astype(_WIDEN[arr.dtype])
    if arr.dtype.byteorder not in ("=", "|"):
        arr = arr.astype(arr.dtype.newbyteorder("="))
    tensor = torch.from_numpy(np.ascontiguousarray(arr))
    return tensor if dtype is None else tensor.to(dtype)


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


def _reduce_2d(affine4: np.ndarray) -> np.ndarray:
    rows = _rows_2d(affine4)
    return affine4[np.ix_([*rows, 3], [0, 1, 3])].copy()


def _embed_2d(affine3: np.ndarray, like4: np.ndarray | None) -> np.ndarray:
    """4x4 NIfTI affine of a 2D image: ``like4`` (default identity) with the in-plane part replaced."""
    base = np.eye(4) if like4 is None else np.array(like4, dtype=np.float64)
    rows = [0, 1] if like4 is None else _rows_2d(base)
    base[np.ix_([*rows, 3], [0, 1, 3])] = affine3
    return base


# --- loading --------------------------------------------------------------------------------

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
    suffix = _suffix(path)
    if suffix not in NIFTI_SUFFIXES + IMAGE_2D_SUFFIXES:
        raise ValueError(
            f"load_image: {path}: unsupported file type {suffix or '(no extension)'!r}; "
            f"expected one of {', '.join(NIFTI_SUFFIXES + IMAGE_2D_SUFFIXES)}"
        )
    if not path.is_file():
        raise FileNotFoundError(f"load_image: {path}: no such file")
    if suffix in NIFTI_SUFFIXES:
        return _load_nifti(path, dtype)
    return _load_2d(path, dtype)


def _load_nifti(path: Path, dtype) -> Image:
    try:
        img = nib.load(str(path))
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
    if len(shape) == 3:
        arr = arr[None]  # (1, X, Y, Z)
    else:
        arr = np.moveaxis(arr, -1, 0)  # (C, X, Y, Z)
    if arr.shape[3] == 1:  # (X, Y, 1[, C]) is a 2D image
        arr = arr[..., 0]
        affine = _reduce_2d(affine4)
    else:
        affine = affine4
    return Image(
        data=_torch_array(arr, dtype)[None],
        affine=affine,
        path=path,
        dtype=np.dtype(img.get_data_dtype()),
        header=img.header.copy(),
    )


def _load_2d(path: Path, dtype) -> Image:
    from PIL import Image as PILImage

    frames = 1
    try:
        with PILImage.open(path) as pil:
            frames = getattr(pil, "n_frames", 1)
            if frames == 1:
                if pil.mode in ("RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV", "P", "PA", "LA", "La"):
                    pil = pil.convert("L")
                arr = np.array(pil)
    except Exception as error:  # Pillow raises UnidentifiedImageError, OSError, ValueError, ...
        raise ValueError(f"load_image: {path}: cannot read as an image ({error})") from error
    if frames != 1:
        raise ValueError(f"load_image: {path}: multi-frame images ({frames} frames) are not supported")
    if arr.ndim != 2:
        raise ValueError(f"load_image: {path}: expected a grayscale or RGB image, got array shape {arr.shape}")
    stored = arr.dtype
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)
    return Image(data=_torch_array(arr, dtype)[None, None], affine=np.eye(3), path=path, dtype=np.dtype(stored))


# --- saving ---------------------------------------------------------------------------------

def _atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)`` on a fresh hidden file next to ``path``, then rename it."""
    folder = path.parent
    if not folder.is_dir():
        raise FileNotFoundError(f"{path}: folder {folder} does not exist")
    suffix = _suffix(path)
    tmp = folder / f".{path.name[: -len(suffix)] if suffix else path.name}.{uuid.uuid4().hex[:12]}.tmp{suffix}"
    # O_EXCL: never touch someone else's file; mode 0o666 lets the umask decide, as open() would.
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _split_data(fn: str, data, ndim: int) -> np.ndarray:
    """``(1, C, *spatial)``, ``(C, *spatial)`` or ``(*spatial)`` -> ``(C, *spatial)``."""
    arr = _to_numpy(fn, "data", data)
    extra = arr.ndim - ndim
    if extra == 0:
        arr = arr[None]
    elif extra == 2:
        if arr.shape[0] != 1:
            raise ValueError(f"{fn}: data must have batch size 1 to be saved, got shape {arr.shape}")
        arr = arr[0]
    elif extra != 1:
        raise ValueError(
            f"{fn}: data of shape {arr.shape} does not fit a {ndim}D affine; expected (1, C, *spatial), "
            f"(C, *spatial) or (*spatial) with {ndim} spatial axes"
        )
    if arr.shape[0] < 1 or any(s < 1 for s in arr.shape[1:]):
        raise ValueError(f"{fn}: data must not be empty, got shape {arr.shape}")
    return arr


def _cast(fn: str, path: Path, arr: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Cast to ``dtype``; integer targets are rounded and clipped to their range."""
    if arr.dtype == dtype:
        return arr
    if np.issubdtype(dtype, np.integer) or dtype == np.bool_:
        if arr.dtype.kind == "f":
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"{fn}: {path}: data contains NaN or infinite values; cannot store them as {dtype}")
            arr = np.rint(arr)
        if dtype != np.bool_:
            info = np.iinfo(dtype)
            arr = np.clip(arr, info.min, info.max)
    return arr.astype(dtype)


def _default_dtype(arr: np.ndarray) -> np.dtype:
    if arr.dtype == np.bool_:
        return np.dtype(np.uint8)
    if arr.dtype == np.float16:
        return np.dtype(np.float32)
    if arr.dtype == np.int64:
        return np.dtype(np.int32) if arr.size == 0 or (arr.min() >= -(2**31) and arr.max() < 2**31) else arr.dtype
    return arr.dtype


def _as_np_dtype(fn: str, dtype) -> np.dtype:
    if isinstance(dtype, torch.dtype):
        dtype = torch.empty((), dtype=dtype).numpy().dtype
    try:
        return np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{fn}: dtype must be a numpy/torch dtype or its name, got {dtype!r}") from None


def _like_header(fn: str, like):
    """``(header, best 4x4 affine)`` of ``like`` (Image, nibabel image or NIfTI path)."""
    if like is None:
        return None, None
    if isinstance(like, Image):
        header = like.header
    elif isinstance(like, (str, os.PathLike)):
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


def _nifti_image(array: np.ndarray, affine4: np.ndarray, header) -> nib.Nifti1Image:
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


def save_image(path: str | os.PathLike, data, affine=None, like=None, dtype=None) -> Path:
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
    suffix = _suffix(path)
    if suffix not in SAVE_SUFFIXES:
        raise ValueError(
            f"{fn}: {path}: cannot write file type {suffix or '(no extension)'!r}; "
            f"expected one of {', '.join(SAVE_SUFFIXES)}"
        )
    header, like4 = _like_header(fn, like)
    if affine is None:
        if isinstance(like, Image):
            affine = like.affine
        elif suffix == ".png":
            affine = np.eye(3)
        elif like4 is not None and _to_numpy(fn, "data", data).ndim in (3, 5):
            affine = like4
        else:
            raise ValueError(f"{fn}: {path}: affine is required (or pass like= an Image)")
    affine = _check_affine(fn, "affine", affine)
    ndim = affine.shape[0] - 1
    arr = _split_data(fn, data, ndim)  # (C, *spatial)

    if suffix == ".png":
        _save_png(fn, path, arr, dtype)
        return path

    out_dtype = _default_dtype(arr) if dtype is None else _as_np_dtype(fn, dtype)
    arr = _cast(fn, path, arr, out_dtype)
    if ndim == 2:
        affine4 = _embed_2d(affine, like4 if like4 is not None and _is_2d_header(header) else None)
        arr = arr[0] if arr.shape[0] == 1 else np.moveaxis(arr, 0, -1)[:, :, None, :]  # (X, Y) / (X, Y, 1, C)
    else:
        affine4 = affine
        arr = arr[0] if arr.shape[0] == 1 else np.moveaxis(arr, 0, -1)  # (X, Y, Z) / (X, Y, Z, C)
    img = _nifti_image(np.ascontiguousarray(arr), affine4, header)
    _atomic_write(path, lambda tmp: nib.save(img, str(tmp)))
    return path


def _is_2d_header(header) -> bool:
    if header is None:
        return False
    shape = header.get_data_shape()
    return len(shape) == 2 or (len(shape) >= 3 and shape[2] == 1)


def _save_png(fn: str, path: Path, arr: np.ndarray, dtype) -> None:
    from PIL import Image as PILImage

    if arr.ndim != 3 or arr.shape[0] != 1:
        raise ValueError(f"{fn}: {path}: PNG holds one 2D channel, got data (C, *spatial) = {arr.shape}")
    arr = arr[0]
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{fn}: {path}: data contains NaN or infinite values")
    if dtype is None:
        out = np.dtype(np.uint8) if arr.size == 0 or np.rint(arr.max()) <= 255 else np.dtype(np.uint16)
    else:
        out = _as_np_dtype(fn, dtype)
        if out not in (np.dtype(np.uint8), np.dtype(np.uint16)):
            raise ValueError(f"{fn}: {path}: PNG dtype must be uint8 or uint16, got {out}")
    arr = _cast(fn, path, arr, out)
    pil = PILImage.fromarray(arr)
    _atomic_write(path, lambda tmp: pil.save(tmp, format="PNG"))


# --- displacement fields --------------------------------------------------------------------

_LPS = {2: np.array([-1.0, -1.0]), 3: np.array([-1.0, -1.0, 1.0])}


def save_ddf(path: str | os.PathLike, ddf, fixed_affine) -> Path:
    """Write a regnet DDF as an ITK/ANTs displacement field (NIfTI, world mm, LPS).

    Args:
        path: ``.nii`` or ``.nii.gz``.
        ddf: ``(1, ndim, *spatial)`` or ``(ndim, *spatial)`` displacement in voxels of the
            fixed grid (regnet's convention: channel ``i`` along array axis ``i``, pull:
            ``warped(x) = moving(x + u(x))``).
        fixed_affine: the fixed grid's voxel -> world (RAS mm) matrix, ``(ndim+1, ndim+1)``.

    On disk: float32 ``(X, Y, Z, 1, 3)`` (2D: ``(X, Y, 1, 1, 2)``), intent ``vector``
    (1007), the fixed affine in the header, and each vector the world displacement
    ``A[:ndim, :ndim] @ u`` in millimetres with the x and y components negated (LPS), as
    ITK and ANTs write and read warps (``antsApplyTransforms -t ddf.nii.gz``): the fixed
    world point ``p`` maps to the moving world point ``p + d(p)``.
    """
    fn = "save_ddf"
    path = Path(path)
    if _suffix(path) not in NIFTI_SUFFIXES:
        raise ValueError(f"{fn}: {path}: a DDF is written as NIfTI (.nii or .nii.gz), got {_suffix(path)!r}")
    affine = _check_affine(fn, "fixed_affine", fixed_affine)
    ndim = affine.shape[0] - 1
    arr = _to_numpy(fn, "ddf", ddf).astype(np.float64)
    if arr.ndim == ndim + 2:
        if arr.shape[0] != 1:
            raise ValueError(f"{fn}: ddf must have batch size 1 to be saved, got shape {arr.shape}")
        arr = arr[0]
    if arr.ndim != ndim + 1 or arr.shape[0] != ndim:
        raise ValueError(
            f"{fn}: ddf must have shape (1, {ndim}, *spatial) or ({ndim}, *spatial) for a "
            f"{ndim + 1}x{ndim + 1} fixed_affine, got {tuple(arr.shape)}"
        )
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{fn}: ddf contains NaN or infinite values")
    world = np.tensordot(affine[:ndim, :ndim], arr, axes=(1, 0))  # (ndim, *spatial), RAS mm
    lps = world * _LPS[ndim].reshape((ndim,) + (1,) * ndim)
    vectors = np.moveaxis(lps, 0, -1).astype(np.float32)  # (*spatial, ndim)
    if ndim == 2:
        vectors = vectors[:, :, None, None, :]
        affine4 = _embed_2d(affine, None)
    else:
        vectors = vectors[:, :, :, None, :]
        affine4 = affine
    img = nib.Nifti1Image(np.ascontiguousarray(vectors), affine4)
    img.header.set_xyzt_units("mm", "sec")
    img.set_sform(affine4, code=1)
    img.set_qform(affine4, code=1)
    img.header.set_intent("vector", (), name="")
    img.set_data_dtype(np.float32)
    _atomic_write(path, lambda tmp: nib.save(img, str(tmp)))
    return path


def load_ddf(path: str | os.PathLike, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, np.ndarray]:
    """Read a displacement field written by :func:`save_ddf` (or by ITK/ANTs).

    Accepts ``(X, Y, Z, 1, 3)`` / ``(X, Y, 1, 1, 2)`` NIfTI vector images with intent
    ``vector`` (1007, components in LPS mm: ITK, ANTs, regnet) or ``displacement vector``
    (1006, components in RAS mm, as ITK >= 5.4 reads them).

    Returns:
        ``(ddf, affine)``: ``ddf`` ``(1, ndim, *spatial)`` in voxels of the field's grid
        (regnet's convention, ready for :func:`regnet.ops.warp`), ``affine`` the grid's
        voxel -> world matrix ``(ndim+1, ndim+1)``.
    """
    fn = "load_ddf"
    path = Path(path)
    if _suffix(path) not in NIFTI_SUFFIXES:
        raise ValueError(f"{fn}: {path}: expected a NIfTI file (.nii or .nii.gz), got {_suffix(path)!r}")
    if not path.is_file():
        raise FileNotFoundError(f"{fn}: {path}: no such file")
    try:
        img = nib.load(str(path))
        arr = np.asarray(img.dataobj, dtype=np.float64)
    except Exception as error:
        raise ValueError(f"{fn}: {path}: cannot read as NIfTI ({error})") from error
    shape = arr.shape
    if len(shape) != 5 or shape[3] != 1 or shape[4] not in (2, 3) or (shape[4] == 2 and shape[2] != 1):
        raise ValueError(
            f"{fn}: {path}: expected a displacement field of shape (X, Y, Z, 1, 3) or (X, Y, 1, 1, 2), got {shape}"
        )
    intent = int(img.header["intent_code"])
    if intent not in (INTENT_VECTOR, INTENT_DISPVECT):
        raise ValueError(
            f"{fn}: {path}: NIfTI intent code {intent} is not a displacement field; expected "
            f"{INTENT_VECTOR} (vector, LPS mm) or {INTENT_DISPVECT} (displacement vector, RAS mm)"
        )
    ndim = shape[4]
    affine4 = np.asarray(img.affine, dtype=np.float64)
    if ndim == 2:
        vectors, affine = arr[:, :, 0, 0, :], _reduce_2d(affine4)
    else:
        vectors, affine = arr[:, :, :, 0, :], affine4
    world = np.moveaxis(vectors, -1, 0)  # (ndim, *spatial)
    if intent == INTENT_VECTOR:
        world = world * _LPS[ndim].reshape((ndim,) + (1,) * ndim)  # LPS -> RAS
    voxel = np.tensordot(np.linalg.inv(affine[:ndim, :ndim]), world, axes=(1, 0))
    return torch.from_numpy(np.ascontiguousarray(voxel)).to(dtype)[None], affine


# --- affine transform files -----------------------------------------------------------------

def save_affine(path: str | os.PathLike, matrix) -> Path:
    """Write a world-space affine (``affine.txt``) atomically as plain text, one row a line.

    ``matrix`` ``(ndim+1, ndim+1)`` maps fixed world points (RAS mm) to moving world points:
    ``moving_world = matrix @ fixed_world`` (pull convention, see
    :func:`regnet.io.world.theta_to_world`).
    """
    path = Path(path)
    m = _check_affine("save_affine", "matrix", matrix)

    def write(tmp):
        np.savetxt(tmp, m, fmt="%.17g")

    _atomic_write(path, write)
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
    m = _check_affine("load_affine", f"{path}", m)
    if not np.allclose(m[-1], np.eye(m.shape[0])[-1]):
        raise ValueError(f"load_affine: {path}: last row must be (0, ..., 0, 1), got {m[-1].tolist()}")
    return m
