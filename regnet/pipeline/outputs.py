"""Writing a registration's output folder: regnet's files and ANTs' (README, "Command line"), the
warped images with the fixed image's header, and ``report.json``.

The large files are written by two worker threads while the main thread samples the warped
image, computes the metrics and draws the figure (gzip releases the GIL): at 1 mm the writes
take about as long as the figure. Files:

- ``affine.txt`` (regnet's RAS world matrix) and ``affine.mat`` (the same map as ANTs writes
  ``0GenericAffine.mat``), with an affine part;
- ``ddf.nii.gz``: the total forward displacement (headers, affine and SyN) in the ITK/ANTs
  layout;
- with SyN: ``warp.nii.gz`` (SyN's forward field alone, on the fixed grid: ANTs' ``1Warp``) and
  ``inverse_warp.nii.gz`` (its inverse, on the fixed grid: ANTs' ``1InverseWarp``), so that
  ANTs' lists ``[warp.nii.gz, affine.mat]`` and ``[[affine.mat, 1], inverse_warp.nii.gz]`` map
  like regnet; ``inverse_ddf.nii.gz`` is the same file as ``inverse_warp.nii.gz`` (a hard link
  where the file system has them);
- ``warped.nii.gz`` / ``warped.png``, ``overview.png``, ``report.json`` (last); with labels
  ``warped_labels.nii.gz`` (label-wise linear interpolation, ANTs' ``GenericLabel``) and
  per-structure Dice and HD95 in the report.

Example::

    >>> report = write_outputs(register_images(fixed, moving), folder)
"""

from __future__ import annotations

import json
import math
import os
import secrets
import shutil
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from regnet import ops
from regnet.io import Image, save_affine, save_ddf, save_image
from regnet.io.displacement import as_saved
from regnet.io.image import IMAGE_2D_SUFFIXES, _suffix
from regnet.io.itk_transforms import save_itk_affine
from regnet.metrics import SCORED_LABELS, dice_per_label, global_ncc, hausdorff95, jacobian_stats, mean_dice, mse
from regnet.pipeline.figures import save_overview
from regnet.pipeline.outdir import REPORT_NAME
from regnet.registration.config import jsonable
from regnet.registration.world import Registration, normalise, sample_moving


def warped_name(fixed: Image, moving: Image) -> str:
    """``warped.png`` when both inputs are 2D image files (PNG/JPEG/TIFF), else ``warped.nii.gz``."""
    def is_picture(image):
        return image.path is not None and _suffix(Path(image.path)) in IMAGE_2D_SUFFIXES

    return "warped.png" if is_picture(fixed) and is_picture(moving) else "warped.nii.gz"


def save_warped(path: Path, data: torch.Tensor, fixed: Image, moving: Image, nearest: bool = False) -> None:
    """Save a resampled moving-subject image on the fixed grid (header of ``fixed``)."""
    like = fixed if fixed.header is not None else None
    if path.name.lower().endswith(".png"):
        dtype = moving.dtype if moving.dtype in (np.dtype(np.uint8), np.dtype(np.uint16)) else None
    else:
        dtype = moving.dtype if nearest and moving.dtype is not None else np.float32
    save_image(path, data.detach().cpu(), fixed.affine, like=like, dtype=dtype)


def link_or_copy(source: Path, target: Path) -> None:
    """``target`` as a hard link to ``source`` (no second write), or a copy where links fail."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def write_outputs(result: Registration, folder: str | os.PathLike, labels: tuple[Image, Image] | None = None) -> dict:
    """Write a :class:`Registration` into ``folder`` (created if missing; its parent must exist).

    Files as in the module docstring. With ``labels=(moving_labels, fixed_labels)`` also
    ``warped_labels.nii.gz``, the mean Dice before and after over the scored FreeSurfer
    structures present in the fixed labels (``report["metrics"]["dice"]``) and per label
    present in both maps the Dice and the HD95 in mm (``report["metrics"]["labels"]``).
    Returns the report.
    """
    start = time.perf_counter()
    folder = Path(folder)
    folder.mkdir(exist_ok=True)
    fixed, moving, report = result.fixed, result.moving, result.report
    files: list[str] = []
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="regnet-write") as pool:
        pending: list[Future] = []

        def later(name: str, write, *args) -> None:
            files.append(name)
            pending.append(pool.submit(write, folder / name, *args))

        if result.matrix is not None:
            save_affine(folder / "affine.txt", result.matrix)
            save_itk_affine(folder / "affine.mat", result.matrix)
            files += ["affine.txt", "affine.mat"]
        later("ddf.nii.gz", save_ddf, result.ddf.cpu(), fixed.affine)
        if result.syn_ddf is not None:
            later("warp.nii.gz", save_ddf, result.syn_ddf.cpu(), fixed.affine)
        if result.syn_inverse is not None:
            later("inverse_warp.nii.gz", save_ddf, result.syn_inverse.cpu(), fixed.affine)
        ddf = as_saved(result.ddf, fixed.affine)  # what `regnet apply` will read from ddf.nii.gz
        result.saved_ddf = ddf

        with torch.no_grad():
            warped = sample_moving(moving, ddf, fixed.affine, "bilinear")
            later(warped_name(fixed, moving), save_warped, warped, fixed, moving)
            fixed_n = normalise(fixed.data.to(ddf.device, torch.float32), *result.ranges["fixed"])
            warped_n = normalise(warped.float(), *result.ranges["moving"])
            headers_n = result.headers
            if headers_n is None:
                headers = sample_moving(moving, torch.zeros_like(ddf), fixed.affine, "bilinear")
                headers_n = normalise(headers.float(), *result.ranges["moving"])
            report["metrics"]["global_ncc"]["after"] = global_ncc(fixed_n, warped_n)
            report["metrics"]["mse"]["after"] = mse(fixed_n, warped_n)
            det = ops.jacobian_det(ddf)
            report["jacobian"] = {k: jsonable(v) for k, v in jacobian_stats(ddf, det=det).items()}
            if labels is not None:
                warped_labels = _score_labels(report, labels, ddf, fixed)
                later("warped_labels.nii.gz", save_warped, warped_labels, fixed, labels[0], True)

        save_overview(folder / "overview.png", fixed_n, headers_n, warped_n, det[0, 0], report,
                      picture=fixed.header is None)
        files.append("overview.png")
        for job in pending:
            job.result()  # re-raises a failed write
    if result.syn_inverse is not None:
        link_or_copy(folder / "inverse_warp.nii.gz", folder / "inverse_ddf.nii.gz")
        files.append("inverse_ddf.nii.gz")
    files.append(REPORT_NAME)
    report["files"] = files
    report["time_s"]["write"] = time.perf_counter() - start
    write_report(folder / REPORT_NAME, report)
    return report


def _score_labels(report: dict, labels: tuple[Image, Image], ddf: torch.Tensor, fixed: Image) -> torch.Tensor:
    """Warp the moving labels, add Dice / HD95 to the report; return the warped labels."""
    moving_labels, fixed_labels = labels
    warped = sample_moving(moving_labels, ddf, fixed.affine, "label")
    target = fixed_labels.data.to(ddf.device).long()
    before = sample_moving(moving_labels, torch.zeros_like(ddf), fixed.affine, "label").long()
    after = warped.long()
    which = [v for v in SCORED_LABELS if bool((target == v).any())]
    report["metrics"]["dice"] = {
        "before": mean_dice(before, target, labels=which),
        "after": mean_dice(after, target, labels=which),
        "labels": which,
    }
    source = moving_labels.data.to(ddf.device).long()
    present = sorted(set(torch.unique(target).tolist()) & set(torch.unique(source).tolist()) - {0})
    dice = dice_per_label(after, target, labels=present)
    hd95 = hausdorff95(after, target, labels=present, spacing=fixed.spacing)
    # a structure absent after warping has no finite HD95: ``None`` (JSON null) in memory as on disk
    report["metrics"]["labels"] = {
        str(v): {"dice": dice.get(v, 0.0), "hd95_mm": _finite_or_none(hd95.get(v))} for v in present
    }
    return warped


def _finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def write_report(path: Path, report: dict) -> None:
    """Write ``report`` as JSON (non-finite numbers as ``null``) atomically."""
    text = json.dumps(jsonable(report), indent=2, allow_nan=False)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    tmp.write_text(text + "\n")
    os.replace(tmp, path)
