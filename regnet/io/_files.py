"""File names and atomic writing, shared by every reader and writer of :mod:`regnet.io`.

Every writer writes a hidden temporary file in the destination folder and renames it over the
destination (``os.replace``), so an error leaves neither a partial file nor a changed
destination behind.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable
from pathlib import Path

NIFTI_SUFFIXES = (".nii.gz", ".nii")
IMAGE_2D_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
SAVE_SUFFIXES = (*NIFTI_SUFFIXES, ".png")

__all__ = ["IMAGE_2D_SUFFIXES", "NIFTI_SUFFIXES", "SAVE_SUFFIXES", "atomic_write", "suffix"]


def suffix(path: Path) -> str:
    """The lower-case file type of ``path``: a known (double) suffix such as ``.nii.gz``, else
    the last suffix (``""`` for none)."""
    name = path.name.lower()
    for known in (*NIFTI_SUFFIXES, *IMAGE_2D_SUFFIXES):
        if name.endswith(known):
            return known
    return path.suffix.lower()


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp_path)`` on a fresh hidden file next to ``path``, then rename it."""
    folder = path.parent
    if not folder.is_dir():
        raise FileNotFoundError(f"{path}: folder {folder} does not exist")
    kind = suffix(path)
    tmp = folder / f".{path.name[: -len(kind)] if kind else path.name}.{uuid.uuid4().hex[:12]}.tmp{kind}"
    # O_EXCL: never touch someone else's file; mode 0o666 lets the umask decide, as open() would.
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
