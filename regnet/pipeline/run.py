"""File-to-file registration: what ``regnet register`` and ``regnet apply`` run.

:func:`register_files` reads both images with their world geometry, registers them in memory
(:func:`regnet.registration.register_images`) and writes the output folder atomically
(:mod:`regnet.pipeline.outdir`, :mod:`regnet.pipeline.outputs`); :func:`apply_transform` maps
another image of the moving subject through a saved transform.

Example::

    >>> report = register_files("fixed.nii.gz", "moving.nii.gz", "affine+syn", "out/")
    >>> apply_transform("fixed.nii.gz", "moving_aseg.nii.gz", "out/", "aseg_on_fixed.nii.gz", "nearest")
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from regnet.io import load_affine, load_ddf, load_image
from regnet.pipeline.outdir import REPORT_NAME, check_out_dir, output_folder
from regnet.pipeline.outputs import save_warped, write_outputs, write_report
from regnet.registration.config import load_config
from regnet.registration.world import TRANSFORMS, check_device, register_images, sample_moving, total_ddf

INTERPOLATIONS = ("linear", "nearest")


def register_files(fixed_path, moving_path, transform: str, out_dir, config=None, device="cpu",
                   verbose: bool = True, labels: tuple | None = None) -> dict:
    """``regnet register``: register ``moving_path`` onto ``fixed_path`` and write ``out_dir``.

    Args:
        fixed_path, moving_path: NIfTI (2D or 3D) or 2D PNG/JPEG/TIFF files.
        transform: ``"affine"``, ``"syn"`` or ``"affine+syn"``.
        out_dir: output folder (see the module docstring: written atomically, replaced only
            on success and only if it is empty or an earlier regnet output).
        config: YAML path, mapping or ``None`` (:func:`load_config`).
        device: torch device.
        verbose: progress bars per level (stderr).
        labels: ``(moving_labels_path, fixed_labels_path)``: label maps of the two subjects
            (the fixed one on the fixed image's grid; the moving one on any grid); adds
            ``warped_labels.nii.gz`` and per-structure Dice and HD95 (mm) to the report.

    Returns:
        The report (also ``out_dir/report.json``) with ``out_dir`` added.
    """
    start = time.perf_counter()
    if transform not in TRANSFORMS:
        raise ValueError(f"transform must be one of {', '.join(TRANSFORMS)}, got {transform!r}")
    config = load_config(config)
    check_device(device)
    check_out_dir(out_dir)
    fixed = load_image(fixed_path)
    moving = load_image(moving_path)
    label_images = None if labels is None else _load_labels(labels, fixed)
    load_time = time.perf_counter() - start
    with output_folder(out_dir) as tmp:
        result = register_images(fixed, moving, transform, config, device, verbose)
        result.report["time_s"]["load"] = load_time
        report = write_outputs(result, tmp, labels=label_images)
        report["time_s"]["total"] = time.perf_counter() - start
        write_report(tmp / REPORT_NAME, report)
    report["out_dir"] = str(Path(out_dir).absolute())
    return report


def _load_labels(labels: tuple, fixed) -> tuple:
    """``(moving_labels, fixed_labels)`` images in their stored dtypes; the fixed labels must lie
    on the fixed image's grid."""
    if not isinstance(labels, (tuple, list)) or len(labels) != 2:
        raise TypeError(f"labels must be (moving_labels_path, fixed_labels_path), got {labels!r}")
    moving_labels, fixed_labels = (load_image(path, dtype=None) for path in labels)
    for name, image in (("--moving-labels", moving_labels), ("--fixed-labels", fixed_labels)):
        if image.data.is_floating_point() and not bool((image.data == image.data.round()).all()):
            raise ValueError(f"{name} '{image.path}' is not a label map: it holds non-integer values")
        if image.ndim != fixed.ndim:
            raise ValueError(f"{name} '{image.path}' is {image.ndim}D but --fixed is {fixed.ndim}D")
    if fixed_labels.spatial_shape != fixed.spatial_shape or not np.allclose(fixed_labels.affine, fixed.affine,
                                                                              atol=1e-4):
        raise ValueError(f"--fixed-labels '{fixed_labels.path}' must lie on the fixed image's grid "
                         f"({'x'.join(map(str, fixed.spatial_shape))}, same affine), got "
                         f"{'x'.join(map(str, fixed_labels.spatial_shape))}")
    return moving_labels, fixed_labels


def apply_transform(fixed_path, moving_path, transform_dir, out_path, interp: str = "linear",
                    device="cpu") -> Path:
    """``regnet apply``: map an image of the moving subject through a saved transform.

    Args:
        fixed_path: the fixed image of the registration (its grid and header are the output's).
        moving_path: any image or label map of the moving subject, on any grid (its own affine).
        transform_dir: a ``regnet register`` output folder (``ddf.nii.gz``, or ``affine.txt``
            alone).
        out_path: ``.nii.gz``, ``.nii`` or ``.png`` (2D).
        interp: ``"linear"`` (float32 output) or ``"nearest"`` (label maps: the moving file's
            dtype and values are kept).

    Returns:
        ``Path(out_path)``.
    """
    if interp not in INTERPOLATIONS:
        raise ValueError(f"interp must be one of {', '.join(INTERPOLATIONS)}, got {interp!r}")
    dev = check_device(device)
    transform_dir = Path(transform_dir)
    if not transform_dir.is_dir():
        raise FileNotFoundError(f"transform folder '{transform_dir}' does not exist")
    fixed = load_image(fixed_path)
    # linear: float32, exactly as `register` samples the moving image; nearest: the stored type
    moving = load_image(moving_path, dtype=None if interp == "nearest" else torch.float32)
    if (transform_dir / "ddf.nii.gz").is_file():
        ddf, affine = load_ddf(transform_dir / "ddf.nii.gz")
        if tuple(ddf.shape[2:]) != fixed.spatial_shape or not np.allclose(affine, fixed.affine, atol=1e-4):
            grid, fixed_grid = "x".join(map(str, ddf.shape[2:])), "x".join(map(str, fixed.spatial_shape))
            raise ValueError(
                f"the transform in '{transform_dir}' is on a {grid} grid with affine {np.round(affine, 4).tolist()}, "
                f"but --fixed '{fixed_path}' is {fixed_grid} with affine {np.round(fixed.affine, 4).tolist()}: "
                f"pass the fixed image of that registration"
            )
    elif (transform_dir / "affine.txt").is_file():
        matrix = load_affine(transform_dir / "affine.txt")
        if matrix.shape[0] != fixed.ndim + 1:
            raise ValueError(f"'{transform_dir / 'affine.txt'}' is a {matrix.shape[0] - 1}D transform but "
                             f"--fixed is {fixed.ndim}D")
        ddf = total_ddf(matrix, None, fixed.spatial_shape, fixed.affine).float()
    else:
        raise FileNotFoundError(f"'{transform_dir}' holds neither ddf.nii.gz nor affine.txt (not a regnet "
                                f"register output)")
    if moving.ndim != fixed.ndim:
        raise ValueError(f"--moving '{moving_path}' is {moving.ndim}D but the transform is {fixed.ndim}D")
    if moving.data.is_complex():
        raise ValueError(f"--moving '{moving_path}' has complex values")
    with torch.no_grad():
        out = sample_moving(moving, ddf.to(dev), fixed.affine, "nearest" if interp == "nearest" else "bilinear")
    if interp == "linear":
        out = out.float()
    out_path = Path(out_path)
    save_warped(out_path, out, fixed, moving, nearest=interp == "nearest")
    return out_path
