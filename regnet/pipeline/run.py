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

import os
import time
from pathlib import Path

import numpy as np
import torch

from regnet.io import load_image
from regnet.io._files import suffix
from regnet.io.itk_transforms import ITK_SUFFIXES
from regnet.pipeline.outdir import REPORT_NAME, check_out_dir, output_folder
from regnet.pipeline.outputs import save_warped, write_outputs, write_report
from regnet.pipeline.transform_list import ArgumentError, Field, field_grid, parse_item, read_affine, read_transforms
from regnet.registration.config import load_config
from regnet.registration.world import TRANSFORMS, check_device, check_mask, register_images, sample_moving

INTERPOLATIONS = ("linear", "nearest", "label")


def register_files(fixed_path, moving_path, transform: str, out_dir, config=None, device="cpu",
                   verbose: bool = True, labels: tuple | None = None, initial_transform=None, fixed_mask=None,
                   moving_mask=None) -> dict:
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
        initial_transform: an affine to start from instead of the centres of mass (ANTs'
            ``--initial-moving-transform``): regnet's ``affine.txt``, an ANTs/ITK ``.mat`` /
            ``.txt``, ``"FILE,1"`` for its inverse (:func:`read_initial_transform`).
        fixed_mask, moving_mask: paths of binary masks on the fixed / moving image's grid that
            restrict the similarity to a region (ANTs' ``-x [fixed, moving]``).

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
    initial = None if initial_transform is None else read_initial_transform(initial_transform, fixed.ndim)
    masks = {name: _load_mask(name, path, image, which) for name, path, image, which in
             (("fixed_mask", fixed_mask, fixed, "fixed"), ("moving_mask", moving_mask, moving, "moving"))}
    load_time = time.perf_counter() - start
    with output_folder(out_dir) as tmp:
        result = register_images(fixed, moving, transform, config, device, verbose, initial_matrix=initial, **masks)
        result.report["time_s"]["load"] = load_time
        report = write_outputs(result, tmp, labels=label_images)
        report["time_s"]["total"] = time.perf_counter() - start
        write_report(tmp / REPORT_NAME, report)
    report["out_dir"] = str(Path(out_dir).absolute())
    return report


def read_initial_transform(initial_transform, ndim: int | None = None) -> np.ndarray:
    """The world matrix (RAS, fixed -> moving) of an initial transform: ``affine.txt``, an
    ANTs/ITK ``.mat`` / ``.txt``, or ``"FILE,1"`` / ``(FILE, True)`` for its inverse.
    :class:`~regnet.pipeline.transform_list.ArgumentError` (``initial_transform``) otherwise."""
    argument = "initial_transform"
    path, invert = parse_item(initial_transform, argument)
    if path.is_dir():
        path = next((path / name for name in ("affine.mat", "affine.txt") if (path / name).is_file()), path)
    if not path.is_file():
        raise ArgumentError(argument, f"no such file '{path}'")
    if suffix(path) not in ITK_SUFFIXES:
        raise ArgumentError(argument, f"'{path}': an initial transform is an affine file (regnet's affine.txt, an "
                                      f"ANTs/ITK .mat or .txt), got {suffix(path)!r}")
    matrix = read_affine(path, ndim, argument)
    return np.linalg.inv(matrix) if invert else matrix


def _load_mask(argument: str, path, image, which: str):
    """A mask file read and checked (binary, on ``image``'s grid), or ``None``; problems name the
    argument (the command line prints them as ``--fixed-mask`` / ``--moving-mask``, status 2)."""
    if path is None:
        return None
    mask = load_image(path, dtype=None)
    try:
        check_mask("register_files", argument, mask, image, which)
    except (ValueError, TypeError) as problem:
        raise ArgumentError(argument, f"'{path}': {str(problem).split(': ', 2)[-1]}") from None
    return mask


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


def apply_transform(fixed_path, moving_path, transform, out_path, interp: str = "linear", device="cpu", *,
                    reference=None, inverse: bool = False) -> Path:
    """``regnet apply``: map an image through a saved transform onto an output grid, as
    ``antsApplyTransforms -i moving_path -r reference -t transform`` does.

    Args:
        fixed_path: the fixed image of the registration: its grid and header are the output's
            (with a regnet folder it must be that registration's fixed grid); ``None`` when
            ``reference`` is given.
        moving_path: the image or label map to map, on any grid (its own affine): of the moving
            subject, or with ``inverse`` of the fixed subject.
        transform: a ``regnet register`` folder, a transform file, or a list in ANTs' order
            (:func:`~regnet.pipeline.transform_list.read_transforms`: ``.mat`` / ``.txt``
            affines, ``"FILE,1"`` to invert one, displacement fields ``.nii.gz``).
        out_path: ``.nii.gz``, ``.nii`` or ``.png`` (2D).
        interp: ``"linear"`` (float32 output), ``"label"`` (label maps, label-wise linear: ANTs'
            ``GenericLabel``; the input file's dtype and values) or ``"nearest"`` (label maps: the input file's
            dtype and values are kept).
        reference: any image whose grid and header the output takes (ANTs' ``-r``), instead
            of ``fixed_path``; with ``inverse`` an image of the moving subject (e.g. the moving
            image).
        inverse: map an image of the fixed subject onto the moving subject: a folder's inverse
            list (``[affine.mat,1, inverse_warp.nii.gz]``), or the given list reversed with its
            affines inverted (a list with a displacement field is refused: give its inverse).

    Returns:
        ``Path(out_path)``.
    """
    if interp not in INTERPOLATIONS:
        raise ValueError(f"interp must be one of {', '.join(INTERPOLATIONS)}, got {interp!r}")
    if (fixed_path is None) == (reference is None):
        raise ValueError("give the output grid as either fixed_path (--fixed) or reference (--reference), "
                         f"got {'both' if reference is not None else 'neither'}")
    if inverse and fixed_path is not None:
        raise ValueError("inverse maps onto the moving subject: give its grid as reference (--reference, e.g. the "
                         "moving image), not as the fixed image (--fixed)")
    dev = check_device(device)
    grid_image = load_image(fixed_path if reference is None else reference)
    grid = (grid_image.spatial_shape, grid_image.affine)
    transforms = read_transforms(transform, inverse=inverse, ndim=grid_image.ndim, grid=grid)
    if fixed_path is not None:
        _check_fixed_grid(transform, transforms, grid_image, fixed_path)
    # linear: float32, exactly as `register` samples the moving image; nearest: the stored type
    moving = load_image(moving_path, dtype=None if interp in ("nearest", "label") else torch.float32)
    if moving.ndim != grid_image.ndim:
        raise ValueError(f"--moving '{moving_path}' is {moving.ndim}D but the transform is {grid_image.ndim}D")
    if moving.data.is_complex():
        raise ValueError(f"--moving '{moving_path}' has complex values")
    with torch.no_grad():
        ddf = transforms.ddf(*grid, device=dev)
        out = sample_moving(moving, ddf, grid_image.affine, {"linear": "bilinear"}.get(interp, interp))
    if interp == "linear":
        out = out.float()
    out_path = Path(out_path)
    save_warped(out_path, out, grid_image, moving, nearest=interp in ("nearest", "label"))
    return out_path


def _check_fixed_grid(transform, transforms, fixed, fixed_path) -> None:
    """With a regnet folder and ``--fixed``: the fixed image must be that registration's (the grid
    of its ``ddf.nii.gz``)."""
    items = [transform] if isinstance(transform, (str, os.PathLike)) else list(transform)
    folder = Path(items[0]) if len(items) == 1 and isinstance(items[0], (str, os.PathLike)) else None
    if folder is None or not (folder / "ddf.nii.gz").is_file():
        return
    steps = transforms.steps
    if len(steps) == 1 and isinstance(steps[0], Field) and steps[0].path.name == "ddf.nii.gz":
        return  # folder_list chose ddf.nii.gz: it lies on the fixed grid
    ddf_shape, affine = field_grid(folder / "ddf.nii.gz", fixed.ndim) or ((), np.eye(fixed.ndim + 1))
    raise ValueError(
        f"the transform in '{folder}' is on a {'x'.join(map(str, ddf_shape))} grid with affine "
        f"{np.round(affine, 4).tolist()}, but --fixed '{fixed_path}' is {'x'.join(map(str, fixed.spatial_shape))} "
        f"with affine {np.round(fixed.affine, 4).tolist()}: pass the fixed image of that registration, or give "
        f"another output grid with --reference"
    )
