"""``regnet demo``: the ``regnet register`` pipeline on bundled real data, no files needed.

Two cases, each registered with ``affine+syn`` (:class:`~regnet.registration.affine.AffineRegistration`
then :class:`~regnet.registration.syn.SyNRegistration`, through :mod:`regnet.pipeline`) and
written as ``regnet register`` writes its output folder:

- ``2d/``: the brain slice ``r16slice.jpg`` (moving) onto ``r64slice.jpg`` (fixed), two
  subjects, 256 x 256 (the classic ANTs 2D example);
- ``3d/``: the voxelmorph brain ``brain3d_t1.nii.gz`` (54 x 64 x 75, 3 mm; made by
  ``scripts/make_demo_data.py``) as the fixed image, and as the moving image the same brain
  deformed by a random smooth diffeomorphism (fixed seed: ``exp`` of a smooth random
  velocity field, at most :data:`MAX_VELOCITY` voxels) times a smooth intensity bias
  (+-:data:`BIAS` ); its label map ``brain3d_aseg.nii.gz`` is deformed alike, so the
  demo reports the mean Dice of the 30 usual FreeSurfer structures before and after
  (``warped_labels.nii.gz`` holds the registered labels).

``DIR/report.json`` summarises both cases (the table :func:`summary_table` prints);
``DIR/2d/report.json`` and ``DIR/3d/report.json`` are the full reports. The whole folder is
written atomically (:func:`regnet.pipeline.output_folder`).

Schedules are passed explicitly (:data:`DEMO_CONFIG`); the numbers and times of a run are in
the README ("Two commands"). The command line makes OpenMP threads wait passively
(:mod:`regnet._openmp`), so the demo keeps its speed on a machine whose cores are busy.
"""

from __future__ import annotations

import contextlib
import math
import time
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from regnet import __version__, ops
from regnet.io import Image, load_image
from regnet.pipeline.outdir import REPORT_NAME, check_out_dir, output_folder
from regnet.pipeline.outputs import write_outputs, write_report
from regnet.registration.world import check_device, register_images

FIXED_2D = "r64slice.jpg"
MOVING_2D = "r16slice.jpg"
IMAGE_3D = "brain3d_t1.nii.gz"
LABELS_3D = "brain3d_aseg.nii.gz"
TRANSFORM = "affine+syn"
#: Seed of the random deformation and bias of the 3D case.
SEED = 2024
#: Largest velocity of the 3D deformation, in voxels (3 mm each).
MAX_VELOCITY = 4.0
#: Amplitude of the multiplicative intensity bias of the 3D moving image.
BIAS = 0.1

_AFFINE = {"scales": [4, 2], "iterations": [300, 100], "init": "com"}
#: Explicit schedules per case (``--config`` sections, see :func:`regnet.registration.load_config`);
#: every other SyN setting is the default. Measured: 2D global NCC 0.566 -> 0.993, 3D Dice
#: 0.711 -> 0.895, no folding (with the 3D volume-change regulariser and 5 exponential steps;
#: 0.870 before them).
DEMO_CONFIG: dict[str, dict[str, Any]] = {
    "2d": {"affine": _AFFINE, "syn": {"scales": [4, 2, 1], "iterations": [60, 40, 20]}},
    "3d": {"affine": _AFFINE, "syn": {"scales": [4, 2, 1], "iterations": [60, 40, 8]}},
}
#: ``fast=True`` (tests): a few iterations, coarse levels only in 3D.
FAST_CONFIG: dict[str, dict[str, Any]] = {
    "2d": {"affine": {"scales": [4, 2], "iterations": [30, 5]},
           "syn": {"scales": [4, 2, 1], "iterations": [15, 5, 1]}},
    "3d": {"affine": {"scales": [4, 2], "iterations": [20, 5]},
           "syn": {"scales": [4, 2], "iterations": [10, 3]}},
}


def _bundled(stack: contextlib.ExitStack, name: str) -> Path:
    return stack.enter_context(resources.as_file(resources.files("regnet").joinpath("data", name)))


def _smooth_noise(channels: int, shape, generator: torch.Generator, control: int) -> torch.Tensor:
    coarse = torch.randn(1, channels, *[control] * len(shape), generator=generator, dtype=torch.float64)
    field = F.interpolate(coarse, size=tuple(shape), mode="trilinear" if len(shape) == 3 else "bilinear",
                          align_corners=True)
    return field / field.abs().amax()


def deformed_copy(image: Image, labels: Image, seed: int = SEED, max_velocity: float = MAX_VELOCITY,
                  bias: float = BIAS) -> tuple[Image, Image, torch.Tensor]:
    """The image and labels deformed by ``exp(v)`` (``v``: smooth random velocity, at most
    ``max_velocity`` voxels), the image also multiplied by ``1 + bias * smooth noise``.

    Returns ``(moving, moving_labels, ddf)`` on the same grid and header; ``ddf`` is the
    deformation (``moving(x) = image(x + ddf(x))``).
    """
    generator = torch.Generator().manual_seed(seed)
    shape = image.spatial_shape
    velocity = max_velocity * _smooth_noise(image.ndim, shape, generator, control=4)
    ddf = ops.exp(velocity, padding_mode="border")
    gain = 1 + bias * _smooth_noise(1, shape, generator, control=3)
    moving = (ops.warp(image.data.double(), ddf) * gain).float()
    moving_labels = ops.warp(labels.data.double(), ddf, mode="nearest").round().to(labels.data.dtype)
    return (
        Image(moving, image.affine.copy(), None, np.dtype(np.float32), image.header),
        Image(moving_labels, labels.affine.copy(), None, labels.dtype, labels.header),
        ddf.float(),
    )


def run_demo(out_dir="regnet-demo", device="cpu", verbose: bool = True, *, fast: bool = False) -> dict:
    """Run both demo cases and write ``out_dir`` (``2d/``, ``3d/``, ``report.json``).

    Args:
        out_dir: output folder; written atomically, and an existing one is replaced only on
            success and only if it is empty or an earlier regnet output.
        device: torch device.
        verbose: progress bars per registration level.
        fast: :data:`FAST_CONFIG` (a few seconds; for tests) instead of :data:`DEMO_CONFIG`.

    Returns:
        The summary written to ``out_dir/report.json`` plus ``reports`` (the full report of
        each case) and ``out_dir``.
    """
    start = time.perf_counter()
    dev = check_device(device)
    check_out_dir(out_dir)
    configs = FAST_CONFIG if fast else DEMO_CONFIG
    reports: dict[str, dict] = {}
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(output_folder(out_dir))

        case_start = time.perf_counter()
        fixed = load_image(_bundled(stack, FIXED_2D))
        moving = load_image(_bundled(stack, MOVING_2D))
        result = register_images(fixed, moving, TRANSFORM, configs["2d"], dev, verbose)
        reports["2d"] = _finish(write_outputs(result, tmp / "2d"), tmp / "2d", case_start)

        case_start = time.perf_counter()
        fixed = load_image(_bundled(stack, IMAGE_3D))
        fixed_labels = load_image(_bundled(stack, LABELS_3D), dtype=None)
        moving, moving_labels, _ = deformed_copy(fixed, fixed_labels)
        result = register_images(fixed, moving, TRANSFORM, configs["3d"], dev, verbose)
        result.report["moving"]["path"] = f"{IMAGE_3D} deformed (seed {SEED}, velocity <= {MAX_VELOCITY} voxels, " \
                                          f"bias +-{BIAS})"
        report = write_outputs(result, tmp / "3d", labels=(moving_labels, fixed_labels))
        reports["3d"] = _finish(report, tmp / "3d", case_start)

        summary = {
            "regnet_version": __version__,
            "demo": True,
            "fast": bool(fast),
            "device": str(dev),
            "torch_version": torch.__version__,
            "cpu_threads": torch.get_num_threads() if dev.type == "cpu" else None,
            "cases": {name: _case_summary(name, r) for name, r in reports.items()},
            "time_s": {"total": time.perf_counter() - start},
        }
        write_report(tmp / REPORT_NAME, summary)
    summary["reports"] = reports
    summary["out_dir"] = str(Path(out_dir).absolute())
    return summary


def _finish(report: dict, folder: Path, start: float) -> dict:
    report["time_s"]["total"] = time.perf_counter() - start
    write_report(folder / REPORT_NAME, report)
    return report


def _case_summary(name: str, report: dict) -> dict:
    metrics = report["metrics"]
    out = {
        "fixed": Path(report["fixed"]["path"]).name,
        "moving": Path(report["moving"]["path"]).name,
        "shape": report["fixed"]["shape"],
        "transform": report["transform"],
        "global_ncc": metrics["global_ncc"],
        "mse": metrics["mse"],
        "folding_fraction": report["jacobian"]["fraction_nonpositive"],
        "time_s": {"registration": report["time_s"]["registration"], "total": report["time_s"]["total"]},
        "files": [f"{name}/{f}" for f in report["files"]],
    }
    if "dice" in metrics:
        out["dice"] = {k: metrics["dice"][k] for k in ("before", "after")}
    return out


def summary_table(summary: dict) -> str:
    """The demo's result table (what ``regnet demo`` prints)."""
    header = ("case", "size", "NCC before", "NCC after", "MSE before", "MSE after", "Dice before", "Dice after",
              "folding", "time s")
    rows = [header]
    for name, case in summary["cases"].items():
        dice = case.get("dice")

        def number(value, digits):
            return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"

        rows.append((
            name,
            "x".join(map(str, case["shape"])),
            number(case["global_ncc"]["before"], 3),
            number(case["global_ncc"]["after"], 3),
            number(case["mse"]["before"], 4),
            number(case["mse"]["after"], 4),
            number(dice["before"], 3) if dice else "-",
            number(dice["after"], 3) if dice else "-",
            f"{100 * case['folding_fraction']:.2f}%",
            f"{case['time_s']['total']:.1f}",
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
