"""ITK / ANTs affine transform files (``.mat``, ``.txt``), converted to and from regnet's world matrix.

regnet's world matrix ``M`` ``(ndim+1, ndim+1)`` (``affine.txt``) maps fixed world points to
moving world points in RAS millimetres (pull). ITK and ANTs use the same direction (a transform
maps points of the fixed / reference space to the moving space) in **LPS** millimetres:
``M_lps = D M D`` with ``D = diag(-1, -1, 1, 1)`` (2D: ``diag(-1, -1, 1)``).

On disk, as ``antsRegistration`` writes ``0GenericAffine.mat`` and ``itk::TransformFileWriter``
writes any affine:

- ``.mat``: a MATLAB v4 file with two column vectors, ``AffineTransform_double_3_3`` (the
  matrix row by row, then the translation: 12 values; 2D ``AffineTransform_double_2_2``: 6)
  and ``fixed`` (the centre ``c``, 3 or 2 values); the point map is ``p -> A (p - c) + c + t``.
  Read: little- or big-endian, float64 or float32 (``AffineTransform_float_3_3``).
- ``.txt``: ITK's text format (``#Insight Transform File V1.0``, ``Transform:``,
  ``Parameters:``, ``FixedParameters:``).

Transform types read: ``AffineTransform``, ``MatrixOffsetTransformBase`` (same parameters) and
``IdentityTransform``; any other type is refused with its name.

Example::

    >>> save_itk_affine("affine.mat", matrix)          # regnet's RAS matrix -> ANTs' file
    >>> np.allclose(load_itk_affine("affine.mat"), matrix)
    True
"""

from __future__ import annotations

import os
import re
import struct
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

from regnet import _checks
from regnet.io._files import atomic_write

__all__ = ["ITK_SUFFIXES", "load_itk_affine", "save_itk_affine"]

ITK_SUFFIXES = (".mat", ".txt", ".tfm")
_AFFINE_TYPES = ("AffineTransform", "MatrixOffsetTransformBase")


def _lps(ndim: int) -> np.ndarray:
    """``D``: RAS <-> LPS in homogeneous coordinates (its own inverse)."""
    return np.diag([-1.0, -1.0] + [1.0] * (ndim - 1))


def _to_parameters(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ITK ``(parameters, fixed parameters)`` of an LPS homogeneous matrix: centre 0."""
    ndim = matrix.shape[0] - 1
    return np.concatenate([matrix[:ndim, :ndim].ravel(), matrix[:ndim, ndim]]), np.zeros(ndim)


def _from_parameters(fn: str, name: str, parameters: np.ndarray, fixed: np.ndarray, ndim: int) -> np.ndarray:
    """LPS homogeneous matrix of ``p -> A (p - c) + c + t``."""
    if parameters.size != ndim * ndim + ndim or fixed.size not in (0, ndim):
        raise ValueError(f"{fn}: {name}: a {ndim}D affine needs {ndim * ndim + ndim} parameters and {ndim} fixed "
                         f"parameters, got {parameters.size} and {fixed.size}")
    linear = parameters[: ndim * ndim].reshape(ndim, ndim)
    translation = parameters[ndim * ndim:]
    centre = fixed if fixed.size else np.zeros(ndim)
    matrix = np.eye(ndim + 1)
    matrix[:ndim, :ndim] = linear
    matrix[:ndim, ndim] = translation + centre - linear @ centre
    return matrix


def save_itk_affine(path: str | os.PathLike, matrix: ArrayLike) -> Path:
    """Write regnet's world matrix (RAS, fixed -> moving) as an ITK/ANTs affine file.

    Args:
        path: ``.mat`` (MATLAB v4, as ``antsRegistration`` writes ``0GenericAffine.mat``) or
            ``.txt`` / ``.tfm`` (ITK text).
        matrix: ``(ndim+1, ndim+1)``, ndim 2 or 3, last row ``(0, .., 0, 1)``.
    """
    fn = "save_itk_affine"
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in ITK_SUFFIXES:
        raise ValueError(f"{fn}: {path}: an ITK transform file ends in {', '.join(ITK_SUFFIXES)}, got {suffix!r}")
    m = _checks.affine_matrix(fn, "matrix", matrix)
    ndim = m.shape[0] - 1
    if not np.allclose(m[-1], np.eye(ndim + 1)[-1]):
        raise ValueError(f"{fn}: matrix must have last row (0, ..., 0, 1), got {m[-1].tolist()}")
    lps = _lps(ndim) @ m @ _lps(ndim)
    parameters, fixed = _to_parameters(lps)
    name = f"AffineTransform_double_{ndim}_{ndim}"
    if suffix == ".mat":
        blob = _mat_variable(name, parameters) + _mat_variable("fixed", fixed)
        atomic_write(path, lambda tmp: Path(tmp).write_bytes(blob))
    else:
        text = ("#Insight Transform File V1.0\n#Transform 0\n"
                f"Transform: {name}\n"
                f"Parameters: {' '.join(repr(float(v)) for v in parameters)}\n"
                f"FixedParameters: {' '.join(repr(float(v)) for v in fixed)}\n")
        atomic_write(path, lambda tmp: Path(tmp).write_text(text))
    return path


def load_itk_affine(path: str | os.PathLike, ndim: int | None = None) -> np.ndarray:
    """Read an ITK/ANTs affine file as regnet's world matrix (RAS, fixed -> moving).

    Args:
        path: ``.mat`` (MATLAB v4) or ``.txt`` / ``.tfm`` (ITK text) holding one affine.
        ndim: the expected dimension (2 or 3); ``None`` takes the file's.

    Returns:
        float64 ``(ndim+1, ndim+1)``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a readable transform file, an unsupported transform type (named), or
            another dimension than ``ndim``.
    """
    fn = "load_itk_affine"
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{fn}: {path}: no such file")
    suffix = path.suffix.lower()
    if suffix not in ITK_SUFFIXES:
        raise ValueError(f"{fn}: {path}: expected an ITK transform file ({', '.join(ITK_SUFFIXES)}), got {suffix!r}")
    if suffix == ".mat":
        variables = _read_mat(fn, path)
        names = [n for n in variables if n != "fixed"]
        if len(names) != 1:
            raise ValueError(f"{fn}: {path}: expected one transform and 'fixed' in the MATLAB file, "
                             f"got {list(variables)}")
        kind, parameters, fixed = names[0], variables[names[0]], variables.get("fixed", np.zeros(0))
    else:
        kind, parameters, fixed = _read_text(fn, path)
    match = re.fullmatch(r"(\w+?)_(double|float)_(\d)_(\d)", kind)
    if match is None:
        raise ValueError(f"{fn}: {path}: cannot read the transform type {kind!r}")
    base, file_ndim = match.group(1), int(match.group(3))
    if file_ndim not in (2, 3) or int(match.group(4)) != file_ndim:
        raise ValueError(f"{fn}: {path}: only 2D and 3D square transforms are supported, got {kind!r}")
    if ndim is not None and file_ndim != ndim:
        raise ValueError(f"{fn}: {path}: a {file_ndim}D transform ({kind}) where a {ndim}D one is needed")
    if base == "IdentityTransform":
        return np.eye(file_ndim + 1)
    if base not in _AFFINE_TYPES:
        raise ValueError(f"{fn}: {path}: unsupported transform type {kind!r}; regnet reads affine transforms "
                         f"({', '.join(_AFFINE_TYPES)}) and displacement fields")
    lps = _from_parameters(fn, str(path), parameters, fixed, file_ndim)
    if not np.all(np.isfinite(lps)) or abs(np.linalg.det(lps[:file_ndim, :file_ndim])) < 1e-12:
        raise ValueError(f"{fn}: {path}: the transform is not invertible or not finite: {lps.tolist()}")
    return _lps(file_ndim) @ lps @ _lps(file_ndim)


# --- MATLAB v4 ------------------------------------------------------------------------------

def _mat_variable(name: str, values: np.ndarray) -> bytes:
    """One MATLAB v4 variable: a float64 little-endian column vector (MOPT 0)."""
    encoded = name.encode("ascii") + b"\0"
    header = struct.pack("<5i", 0, values.size, 1, 0, len(encoded))
    return header + encoded + np.ascontiguousarray(values, dtype="<f8").tobytes()


def _read_mat(fn: str, path: Path) -> dict[str, np.ndarray]:
    data = path.read_bytes()
    out: dict[str, np.ndarray] = {}
    offset = 0
    while offset < len(data):
        if len(data) - offset < 20:
            raise ValueError(f"{fn}: {path}: truncated MATLAB v4 header at byte {offset}")
        little = struct.unpack("<i", data[offset:offset + 4])[0]
        order = "<" if 0 <= little < 5000 else ">"
        mopt, rows, cols, imaginary, length = struct.unpack(f"{order}5i", data[offset:offset + 20])
        precision = (mopt // 10) % 10  # mopt = 1000 M (byte order) + 100 O (0) + 10 P (precision) + T (0: full matrix)
        if (mopt // 1000 not in (0, 1) or (mopt // 100) % 10 or precision not in (0, 1) or mopt % 10 or imaginary
                or rows < 0 or cols < 0 or length <= 0):
            raise ValueError(f"{fn}: {path}: not a MATLAB v4 transform file (header {mopt, rows, cols, imaginary})")
        offset += 20
        name = data[offset:offset + length].split(b"\0")[0].decode("ascii", errors="replace")
        offset += length
        dtype = np.dtype(f"{order}f8" if precision == 0 else f"{order}f4")
        size = rows * cols * dtype.itemsize
        if offset + size > len(data):
            raise ValueError(f"{fn}: {path}: truncated MATLAB v4 variable {name!r}")
        out[name] = np.frombuffer(data[offset:offset + size], dtype=dtype).astype(np.float64)
        offset += size
    if not out:
        raise ValueError(f"{fn}: {path}: empty MATLAB file")
    return out


def _read_text(fn: str, path: Path) -> tuple[str, np.ndarray, np.ndarray]:
    try:
        lines = path.read_text().splitlines()
    except UnicodeDecodeError:
        raise ValueError(f"{fn}: {path}: not an ITK text transform file") from None
    fields: dict[str, list[str]] = {}
    kinds = []
    for line in lines:
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "Transform":
            kinds.append(value.strip())
        elif key in ("Parameters", "FixedParameters"):
            fields[key] = value.split()
    if len(kinds) != 1 or "Parameters" not in fields:
        raise ValueError(f"{fn}: {path}: expected one transform in an ITK text file "
                         f"('#Insight Transform File V1.0'), found {len(kinds)}")
    try:
        parameters = np.array([float(v) for v in fields["Parameters"]])
        fixed = np.array([float(v) for v in fields.get("FixedParameters", [])])
    except ValueError:
        raise ValueError(f"{fn}: {path}: parameters are not numbers") from None
    return kinds[0], parameters, fixed
