"""Writing a registration's output folder: the files of ``regnet register`` (``docs`` and
README, "Command line"), the warped images with the fixed image's header, and ``report.json``.

Example::

    >>> report = write_outputs(register_images(fixed, moving), folder)
"""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path

import numpy as np
import torch

from regnet import ops
from regnet.io import Image, load_ddf, save_affine, save_ddf, save_image
from regnet.io.image import IMAGE_2D_SUFFIXES, _suffix
from regnet.metrics import SCORED_LABELS, global_ncc, jacobian_stats, mean_dice, mse
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


def write_outputs(result: Registration, folder: str | os.PathLike, labels: tuple[Image, Image] | None = None) -> dict:
    """Write a :class:`Registration` into ``folder`` (created if missing; its parent must exist).

    Files: ``affine.txt`` (with an affine part), ``ddf.nii.gz``, ``inverse_ddf.nii.gz``
    (with SyN), ``warped.nii.gz`` or ``warped.png``, ``overview.png`` and ``report.json``
    (last). With ``labels=(moving_labels, fixed_labels)`` also ``warped_labels.nii.gz`` and
    the mean Dice before and after (``metrics.dice``). Returns the report.
    """
    start = time.perf_counter()
    folder = Path(folder)
    folder.mkdir(exist_ok=True)
    fixed, moving, report = result.fixed, result.moving, result.report
    files = []
    if result.matrix is not None:
        save_affine(folder / "affine.txt", result.matrix)
        files.append("affine.txt")
    save_ddf(folder / "ddf.nii.gz", result.ddf.cpu(), fixed.affine)
    files.append("ddf.nii.gz")
    ddf, _ = load_ddf(folder / "ddf.nii.gz")  # what `regnet apply` will read
    ddf = ddf.to(result.ddf.device)
    result.saved_ddf = ddf
    if result.syn_inverse is not None:
        save_ddf(folder / "inverse_ddf.nii.gz", result.syn_inverse.cpu(), fixed.affine)
        files.append("inverse_ddf.nii.gz")

    with torch.no_grad():
        warped = sample_moving(moving, ddf, fixed.affine, "bilinear")
        name = warped_name(fixed, moving)
        save_warped(folder / name, warped, fixed, moving)
        files.append(name)
        fixed_n = normalise(fixed.data.to(ddf.device, torch.float32), *result.ranges["fixed"])
        warped_n = normalise(warped.float(), *result.ranges["moving"])
        identity = torch.zeros_like(ddf)
        headers_n = normalise(sample_moving(moving, identity, fixed.affine, "bilinear").float(),
                              *result.ranges["moving"])
        report["metrics"]["global_ncc"]["after"] = global_ncc(fixed_n, warped_n)
        report["metrics"]["mse"]["after"] = mse(fixed_n, warped_n)
        report["jacobian"] = {k: jsonable(v) for k, v in jacobian_stats(ddf).items()}
        det = ops.jacobian_det(ddf)[0, 0]
        if labels is not None:
            moving_labels, fixed_labels = labels
            warped_labels = sample_moving(moving_labels, ddf, fixed.affine, "nearest")
            save_warped(folder / "warped_labels.nii.gz", warped_labels, fixed, moving_labels, nearest=True)
            files.append("warped_labels.nii.gz")
            target = fixed_labels.data.to(ddf.device).long()
            before = sample_moving(moving_labels, identity, fixed.affine, "nearest").long()
            which = [v for v in SCORED_LABELS if bool((target == v).any())]
            report["metrics"]["dice"] = {
                "before": mean_dice(before, target, labels=which),
                "after": mean_dice(warped_labels.long(), target, labels=which),
                "labels": which,
            }

    save_overview(folder / "overview.png", fixed_n, headers_n, warped_n, det, report,
                  picture=fixed.header is None)
    files.append("overview.png")
    files.append(REPORT_NAME)
    report["files"] = files
    report["time_s"]["write"] = time.perf_counter() - start
    write_report(folder / REPORT_NAME, report)
    return report


def write_report(path: Path, report: dict) -> None:
    """Write ``report`` as JSON (non-finite numbers as ``null``) atomically."""
    text = json.dumps(jsonable(report), indent=2, allow_nan=False)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    tmp.write_text(text + "\n")
    os.replace(tmp, path)
