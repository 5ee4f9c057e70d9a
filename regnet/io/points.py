"""Point sets as CSV files, in the layout ``antsApplyTransformsToPoints`` reads and writes.

A header row names the columns; the coordinates are the columns ``x``, ``y`` (2D) and ``z``
(3D) in millimetres, **LPS** by default as ANTs and ITK use them (``ras=True``: RAS, as NIfTI
and regnet use them). Every other column (ANTs' ``t``, labels, comments) is kept as written,
in its place. On reading, the coordinates come back in RAS either way.

Example::

    >>> table = read_points("landmarks.csv", ndim=3)      # table.points: (N, 3) float64, RAS mm
    >>> write_points("moved.csv", table, table.points + 1.0)
"""

from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from regnet.io._files import atomic_write

__all__ = ["COORDINATES", "PointTable", "read_points", "write_points"]

#: The coordinate columns per dimension.
COORDINATES = {2: ("x", "y"), 3: ("x", "y", "z")}


@dataclass
class PointTable:
    """A CSV point file in memory: ``header`` and ``rows`` (strings, as read), ``points``
    ``(N, ndim)`` float64 in RAS mm, and whether the file was LPS (``lps``)."""

    header: list[str]
    rows: list[list[str]]
    points: np.ndarray
    lps: bool


def _flip(points: np.ndarray) -> np.ndarray:
    """RAS <-> LPS: x and y negated (its own inverse)."""
    out = np.array(points, dtype=np.float64, copy=True)
    out[:, :2] *= -1.0
    return out


def read_points(path: str | os.PathLike, ndim: int, ras: bool = False) -> PointTable:
    """Read a CSV of points (header row; columns ``x, y[, z]``; LPS mm unless ``ras``).

    Raises:
        FileNotFoundError: no such file.
        ValueError: naming the file, and the row and column where it applies: not a CSV with a
            header, a coordinate column missing or repeated, a row of another length, or a
            coordinate that is not a finite number.
    """
    path = Path(path)
    if ndim not in COORDINATES:
        raise ValueError(f"read_points: ndim must be 2 or 3, got {ndim!r}")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text (CSV) file") from None
    table = [row for row in csv.reader(io.StringIO(text)) if any(cell.strip() for cell in row)]
    if not table:
        raise ValueError(f"{path}: empty file; expected a header row with columns {', '.join(COORDINATES[ndim])}")
    header = [name.strip() for name in table[0]]
    names = COORDINATES[ndim]
    missing = [name for name in names if name not in header]
    if missing:
        raise ValueError(f"{path}: a {ndim}D point file needs the columns {', '.join(names)} in its header row; "
                         f"missing {', '.join(missing)} (header: {','.join(header)})")
    repeated = [name for name in names if header.count(name) > 1]
    if repeated:
        raise ValueError(f"{path}: column {repeated[0]!r} appears more than once in the header")
    columns = [header.index(name) for name in names]
    rows, points = table[1:], np.zeros((len(table) - 1, ndim))
    for number, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise ValueError(f"{path}: row {number} has {len(row)} values but the header has {len(header)} columns")
        for axis, (name, column) in enumerate(zip(names, columns, strict=True)):
            try:
                value = float(row[column])
            except ValueError:
                value = math.nan
            if not math.isfinite(value):
                raise ValueError(f"{path}: row {number}, column {name!r}: {row[column]!r} is not a finite number")
            points[number - 2, axis] = value
    return PointTable(header, rows, points if ras else _flip(points), lps=not ras)


def write_points(path: str | os.PathLike, table: PointTable, points: np.ndarray) -> Path:
    """Write ``table`` with its coordinate columns replaced by ``points`` ``(N, ndim)`` (RAS mm;
    written in the table's convention, LPS unless it was read with ``ras=True``), atomically."""
    path = Path(path)
    points = np.asarray(points, dtype=np.float64)
    ndim = points.shape[1] if points.ndim == 2 else 0
    if ndim not in COORDINATES or points.shape[0] != len(table.rows):
        raise ValueError(f"write_points: points must have shape ({len(table.rows)}, 2 or 3), got {points.shape}")
    values = _flip(points) if table.lps else points
    columns = [table.header.index(name) for name in COORDINATES[ndim]]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(table.header)
    for row, point in zip(table.rows, values, strict=True):
        out = list(row)
        for column, value in zip(columns, point, strict=True):
            out[column] = repr(float(value))
        writer.writerow(out)
    atomic_write(path, lambda tmp: Path(tmp).write_text(buffer.getvalue()))
    return path
