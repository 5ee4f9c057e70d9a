"""Output folders written atomically: built as a hidden temporary sibling and renamed when
complete; an existing folder is replaced only on success, and only when it is empty or an
earlier regnet output.

A failed or interrupted run leaves no ``DIR`` (nor the parent folders it created) and an
existing ``DIR`` untouched. An existing ``DIR`` may be replaced only when it is empty or holds
a regnet ``report.json`` and nothing but the names regnet writes (:data:`OUTPUT_NAMES`), so a
mistyped ``--out`` cannot delete unrelated files. Imports no torch (the command line checks
``--out`` before its slow imports).

Example::

    >>> with output_folder("results/pair01") as tmp:     # tmp: results/.pair01.1a2b3c4d.tmp
    ...     (tmp / "report.json").write_text("{}")
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
from pathlib import Path

__all__ = ["OUTPUT_NAMES", "REPORT_NAME", "check_out_dir", "out_dir_problem", "output_folder"]

REPORT_NAME = "report.json"
#: What regnet writes into an output folder (``2d``/``3d``: the demo's cases).
OUTPUT_NAMES = frozenset({REPORT_NAME, "warped.nii.gz", "warped.png", "affine.txt", "affine.mat", "ddf.nii.gz",
                          "warp.nii.gz", "inverse_warp.nii.gz", "inverse_ddf.nii.gz", "overview.png",
                          "warped_labels.nii.gz", "2d", "3d"})


def _is_regnet_output(folder: Path) -> bool:
    try:
        report = json.loads((folder / REPORT_NAME).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(report, dict) and "regnet_version" in report


def check_out_dir(out: str | os.PathLike) -> None:
    """Raise if ``out`` exists and may not be replaced: it must be a folder that is empty, or
    an earlier regnet output (a regnet ``report.json`` and nothing but regnet's file names)."""
    out = Path(out)
    if not out.exists() and not out.is_symlink():
        return
    if out.is_symlink():
        raise NotADirectoryError(f"output path '{out}' is a symbolic link; give the folder itself")
    if not out.is_dir():
        raise NotADirectoryError(f"output path '{out}' exists and is not a directory")
    names = sorted(p.name for p in out.iterdir())
    if not names:
        return
    if not _is_regnet_output(out):
        raise FileExistsError(
            f"output folder '{out}' exists, is not empty and is not a regnet output (no regnet {REPORT_NAME}); "
            f"refusing to replace it: choose a new or empty folder"
        )
    foreign = [name for name in names if name not in OUTPUT_NAMES]
    if foreign:
        raise FileExistsError(
            f"output folder '{out}' holds files regnet did not write ({', '.join(foreign[:5])}"
            f"{', ...' if len(foreign) > 5 else ''}); refusing to replace it: move them or choose another folder"
        )


@contextlib.contextmanager
def output_folder(out: str | os.PathLike):
    """Yield a new temporary folder next to ``out``; rename it to ``out`` when the block
    succeeds (replacing an existing ``out``, see :func:`check_out_dir`), remove it (and the
    parent folders made for it) when the block raises."""
    out = Path(out).absolute()
    check_out_dir(out)
    missing, parent = [], out.parent
    while not parent.exists() and not parent.is_symlink():
        missing.append(parent)
        parent = parent.parent
    if not parent.is_dir():
        raise NotADirectoryError(f"cannot create output folder '{out}': '{parent}' is not a directory")
    out.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = out.parent / f".{out.name}.{secrets.token_hex(4)}.tmp"
        try:
            tmp.mkdir()  # mode 0o777 minus the umask, as the final folder should have
            break
        except FileExistsError:
            continue
    try:
        yield tmp
        _install(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for folder in missing:  # deepest first; only the empty ones we made
            try:
                folder.rmdir()
            except OSError:
                break
        raise


def _install(tmp: Path, out: Path) -> None:
    if not out.exists() and not out.is_symlink():
        os.rename(tmp, out)
        return
    check_out_dir(out)
    old = out.parent / f".{out.name}.{secrets.token_hex(4)}.old"
    os.rename(out, old)
    try:
        os.rename(tmp, out)
    except BaseException:
        os.rename(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def out_dir_problem(out: Path) -> str | None:
    """Why ``out`` cannot serve as the output folder, or ``None`` if it looks fine."""
    if out.exists():
        if not out.is_dir():
            return f"output path '{out}' exists and is not a directory"
        if not os.access(out, os.W_OK | os.X_OK):
            return f"output folder '{out}' is not writable"
    parent = out.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        return f"cannot create output folder '{out}': '{parent}' is not a directory"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot create output folder '{out}': '{parent}' is not writable"
    return None
