"""The pair list of ``regnet register-many``: read from a CSV file or made from a folder, checked
row by row, and planned into batches.

A **pairs CSV** has a header with the columns ``fixed``, ``moving``, ``out`` and optionally
``fixed_mask``, ``moving_mask``, ``fixed_labels``, ``moving_labels``; any other column is
carried into the summary unchanged (a column whose name is close to a known one, e.g.
``fixed_label``, is an error: a typo would otherwise drop the labels silently). Blank lines and
lines starting with ``#`` are ignored. Relative paths are relative to the CSV file's folder, so
a list means the same files wherever the command runs (``srun``, ``torchrun`` and schedulers
may start it elsewhere).

Problems of one row (a wrong number of fields, an empty path, labels without their partner, an
output folder that another row names too) are recorded on that row's :class:`Pair`
(``error``); the row is reported as failed and the others run. A list that cannot be used at
all (no such file, no header, a required column missing, no rows) raises :class:`PairsError`.

Example::

    >>> pairs = read_pairs_csv("pairs.csv")                      # [Pair(row=2, fixed=..., ...), ...]
    >>> pairs = pairs_from_folder("atlas.nii.gz", "scans/", "out/", atlas_side="fixed")
    >>> chunks = plan_chunks([header_key(p.fixed) for p in pairs], batch_size=4)
"""

from __future__ import annotations

import csv
import difflib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from regnet._checks import ConfigError
from regnet.io._files import IMAGE_2D_SUFFIXES, NIFTI_SUFFIXES, suffix
from regnet.pipeline.outdir import REPORT_NAME

__all__ = ["COLUMNS", "OPTIONAL_COLUMNS", "Pair", "PairsError", "check_duplicates", "finished_report",
           "header_key", "pairs_from_folder", "plan_chunks", "read_pairs_csv"]

COLUMNS = ("fixed", "moving", "out")
OPTIONAL_COLUMNS = ("fixed_mask", "moving_mask", "fixed_labels", "moving_labels")
_KNOWN = COLUMNS + OPTIONAL_COLUMNS


class PairsError(ConfigError):
    """The pair list as a whole cannot be used (the command line: one line, exit status 2)."""


@dataclass
class Pair:
    """One registration of the list.

    ``row`` is the line number in the CSV file (the header is line 1), or the position (from 1)
    in a folder's list; paths are absolute strings (``None`` for an optional column left
    empty); ``given`` holds the row's columns as written (the summary's first columns);
    ``error`` a problem found while reading the list (the pair is then not run).
    """

    row: int
    fixed: str
    moving: str
    out: str
    fixed_mask: str | None = None
    moving_mask: str | None = None
    fixed_labels: str | None = None
    moving_labels: str | None = None
    given: dict[str, str] = field(default_factory=dict)
    error: str | None = None

    @property
    def labels(self) -> tuple[str, str] | None:
        """``(moving_labels, fixed_labels)`` when both are given (``register_files``' order)."""
        if self.fixed_labels and self.moving_labels:
            return self.moving_labels, self.fixed_labels
        return None

    @property
    def masks(self) -> bool:
        return bool(self.fixed_mask or self.moving_mask)


def _absolute(value: str, base: Path) -> str:
    path = Path(os.path.expandvars(os.path.expanduser(value)))
    return str(path if path.is_absolute() else (base / path).absolute())


def read_pairs_csv(path: str | os.PathLike) -> list[Pair]:
    """Read a pairs CSV (module docstring); raise :class:`PairsError` when it is unusable."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            lines = list(enumerate(csv.reader(handle), start=1))
    except FileNotFoundError:
        raise PairsError(f"--pairs '{path}': no such file") from None
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise PairsError(f"--pairs '{path}': cannot read it as CSV ({error})") from None
    lines = [(n, row) for n, row in lines if any(c.strip() for c in row) and not row[0].lstrip().startswith("#")]
    if not lines:
        raise PairsError(f"--pairs '{path}': empty file (expected a header with the columns {', '.join(COLUMNS)})")
    header_line, header = lines[0]
    names = [c.strip().lower() for c in header]
    missing = [c for c in COLUMNS if c not in names]
    if missing:
        raise PairsError(f"--pairs '{path}': the header (line {header_line}) lacks the column(s) {', '.join(missing)}; "
                         f"got {', '.join(names)}")
    repeated = sorted({c for c in names if names.count(c) > 1})
    if repeated:
        raise PairsError(f"--pairs '{path}': column(s) {', '.join(repeated)} appear more than once in the header")
    for name in names:
        close = difflib.get_close_matches(name, _KNOWN, n=1, cutoff=0.8)
        if name not in _KNOWN and close:
            raise PairsError(f"--pairs '{path}': unknown column '{name}' (did you mean '{close[0]}'?); known columns: "
                             f"{', '.join(_KNOWN)}")
    base = path.absolute().parent
    pairs = [_pair_from_row(n, row, names, base) for n, row in lines[1:]]
    if not pairs:
        raise PairsError(f"--pairs '{path}': no pairs (only a header)")
    return pairs


def _pair_from_row(line: int, row: list[str], names: list[str], base: Path) -> Pair:
    values = [c.strip() for c in row]
    given = dict(zip(names, values, strict=False))
    pair = Pair(row=line, fixed="", moving="", out="", given=given)
    if len(values) != len(names):
        pair.error = f"row {line}: {len(values)} field(s) but the header has {len(names)}: unreadable row"
        return pair
    empty = [c for c in COLUMNS if not given[c]]
    if empty:
        pair.error = f"row {line}: empty {', '.join(repr(c) for c in empty)}"
        return pair
    for name in _KNOWN:
        value = given.get(name)
        setattr(pair, name, _absolute(value, base) if value else None)
    if bool(pair.fixed_labels) != bool(pair.moving_labels):
        pair.error = f"row {line}: fixed_labels and moving_labels go together: give both label maps or neither"
    return pair


def is_image_file(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and suffix(path) in NIFTI_SUFFIXES + IMAGE_2D_SUFFIXES


def stem(path: Path) -> str:
    """The file name without its image suffix (``a.nii.gz`` -> ``a``)."""
    kind = suffix(path)
    return path.name[: -len(kind)] if kind and path.name.lower().endswith(kind) else path.stem


def pairs_from_folder(atlas: str | os.PathLike, folder: str | os.PathLike, out_dir: str | os.PathLike,
                      atlas_side: str = "fixed") -> list[Pair]:
    """Pairs of ``atlas`` with every image file in ``folder`` (sorted by name, hidden files and
    the atlas itself left out): ``atlas_side="fixed"`` registers each image onto the atlas,
    ``"moving"`` the atlas onto each image. Output folders ``out_dir/<image name without
    suffix>``."""
    if atlas_side not in ("fixed", "moving"):
        raise ValueError(f"pairs_from_folder: atlas_side must be 'fixed' or 'moving', got {atlas_side!r}")
    other = "moving" if atlas_side == "fixed" else "fixed"
    folder, atlas_path = Path(folder), Path(atlas).absolute()
    if not folder.is_dir():
        raise PairsError(f"--{other}-dir '{folder}': no such folder")
    if not atlas_path.is_file():
        raise PairsError(f"--{atlas_side} '{atlas}': no such file")
    images = sorted(p.absolute() for p in folder.iterdir() if is_image_file(p) and p.absolute() != atlas_path)
    if not images:
        raise PairsError(f"--{other}-dir '{folder}': no image files (NIfTI, PNG, JPEG, TIFF) in it")
    out_dir = Path(out_dir).absolute()
    pairs = []
    for index, image in enumerate(images, start=1):
        fixed, moving = (str(atlas_path), str(image)) if atlas_side == "fixed" else (str(image), str(atlas_path))
        out = str(out_dir / stem(image))
        pairs.append(Pair(row=index, fixed=fixed, moving=moving, out=out,
                          given={"fixed": fixed, "moving": moving, "out": out}))
    return pairs


def check_duplicates(pairs: list[Pair]) -> list[Pair]:
    """Mark every pair whose output folder another pair names too (all of them: which one was
    meant cannot be known, and none may overwrite another's results). Returns ``pairs``."""
    rows: dict[str, list[int]] = {}
    for pair in pairs:
        if pair.error is None:
            rows.setdefault(os.path.normpath(pair.out), []).append(pair.row)
    for pair in pairs:
        same = rows.get(os.path.normpath(pair.out), []) if pair.error is None else []
        if len(same) > 1:
            others = ", ".join(str(r) for r in same if r != pair.row)
            pair.error = f"duplicate output folder '{pair.out}': also the output of row(s) {others}"
    return pairs


def finished_report(pair: Pair, transform: str) -> dict | None:
    """The report of ``pair.out`` when it is a complete, valid output of this pair (a regnet
    ``report.json`` for the same fixed and moving files and transform, every file it lists
    present, labels scored when the pair has labels), else ``None``."""
    folder = Path(pair.out)
    try:
        report = json.loads((folder / REPORT_NAME).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(report, dict) or "regnet_version" not in report or not isinstance(report.get("files"), list):
        return None
    try:
        same = (report["transform"] == transform and report["fixed"]["path"] == pair.fixed
                and report["moving"]["path"] == pair.moving)
    except (KeyError, TypeError):
        return None
    if not same or (pair.labels is not None and "dice" not in report.get("metrics", {})):
        return None
    if not all(isinstance(name, str) and (folder / name).is_file() for name in report["files"]):
        return None
    return report


def header_key(path: str) -> tuple | None:
    """A cheap key of an image file's grid (shape and affine from the header, or a picture's
    size) for planning batches; ``None`` when the header cannot be read (the pair then fails
    when it is loaded, alone)."""
    try:
        if suffix(Path(path)) in NIFTI_SUFFIXES:
            import nibabel as nib

            image = nib.load(path)
            return ("nifti", tuple(image.shape), tuple(round(float(v), 4) for v in image.affine.ravel()))
        from PIL import Image as PILImage

        with PILImage.open(path) as picture:
            return ("picture", picture.size)
    except Exception:  # any unreadable header: decided when the pair is loaded
        return None


def plan_chunks(keys: list, batch_size: int, world_size: int = 1) -> list[list[int]]:
    """Indices of the pairs in batches: pairs with equal grid keys (:func:`header_key`; ``None``
    is never batched) in chunks of at most ``batch_size``, in the order of their first
    appearance; then the largest chunks are halved until there are at least ``world_size``
    chunks (or every chunk holds one pair), so that every rank has work."""
    if batch_size < 1 or world_size < 1:
        raise ValueError(f"plan_chunks: batch_size and world_size must be >= 1, got {batch_size}, {world_size}")
    groups: dict[object, list[int]] = {}
    for index, key in enumerate(keys):
        groups.setdefault(("alone", index) if key is None else key, []).append(index)
    chunks = []
    for members in groups.values():
        count = math.ceil(len(members) / batch_size)
        size = math.ceil(len(members) / count)  # even chunks: 5 pairs at B = 4 -> 3 + 2
        chunks += [members[i:i + size] for i in range(0, len(members), size)]
    while len(chunks) < world_size and any(len(c) > 1 for c in chunks):
        largest = max(range(len(chunks)), key=lambda i: len(chunks[i]))
        chunk = chunks.pop(largest)
        half = (len(chunk) + 1) // 2
        chunks[largest:largest] = [chunk[:half], chunk[half:]]
    return chunks
