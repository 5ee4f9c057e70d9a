"""``regnet template``: unbiased groupwise template construction in the manner of ANTs'
``antsMultivariateTemplateConstruction2.sh`` (``docs/cohorts.md``), on
:func:`regnet.pipeline.many.register_many` (batched, resumable, distributed by its engine).

1. **Initial average**: the images on the reference grid (the first image's, or
   ``reference``'s) through their headers, each centred on the reference's centre of mass.
2. **Round 0** (affine): every image registered affinely onto it; the average of the warped
   images, reshaped by the inverse of the subjects' mean stretch, sharpened: the template.
3. **Rounds 1..N** (``transform``, SyN by default): every image registered onto the current
   template; the average of the warped images pulled through the inverse of the mean map
   (negative mean SyN field exponentiated, inverse mean stretch:
   :mod:`regnet.pipeline.template_steps`), sharpened: the next template.
4. **Final round** (``final_registration``): every image registered onto the final template
   into ``subjects/<name>/`` (its transforms map to ``template.nii.gz``) and scored.

Files in ``out_dir``: ``template.nii.gz``, ``initial_average.nii.gz``, ``template.json``
(settings, subjects), ``convergence.csv`` / ``convergence.json`` (per round: mean global NCC of
the warped subjects to the template they were registered to, RMS length of the mean SyN
field (mm) and deviation of the mean stretch from the identity, change of the template,
time), ``round_NN/`` (``template.nii.gz`` made by the round, ``overview.png``,
``summary.csv``, one ``regnet register`` folder per subject), ``subjects/``. Templates are
saved in the subjects' mean intensity range. A rerun with the same settings resumes (finished
registrations are skipped); other settings need another ``out_dir`` or ``force``.

Example::

    >>> log = build_template("scans/", "template_out/", iterations=4)
    >>> log["rounds"][-1]["mean_ncc"]
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch

from regnet import __version__, _checks, ops
from regnet.geometry import ddf_to_world
from regnet.io import load_affine, load_ddf, load_image, save_image
from regnet.pipeline.many import LocalEngine, register_many
from regnet.pipeline.outdir import REPORT_NAME
from regnet.pipeline.pairs import Pair, PairsError, is_image_file, stem
from regnet.pipeline.template_figure import save_round_figure
from regnet.pipeline.template_steps import initial_average, laplacian_sharpen, mean_stretch, normalised, update_field
from regnet.registration.config import jsonable, load_config
from regnet.registration.initialisation import world_centre_of_mass
from regnet.registration.world import TRANSFORMS, check_device, intensity_range, normalise

__all__ = ["build_template", "round_statistics", "template_inputs"]

SETTINGS_NAME = "template.json"
LOG_COLUMNS = ("round", "kind", "subjects", "failed", "mean_ncc_before", "mean_ncc", "mean_warp_mm",
               "stretch_deviation", "template_change", "time_s")


def template_inputs(images) -> list[Path]:
    """The image files of ``images``: a folder (its image files, sorted), a text file (one path
    a line, relative to its folder; blank lines and ``#`` comments ignored) or a sequence of
    paths. :class:`PairsError` when fewer than two, a file is missing, two share a name, or
    2D and 3D images are mixed."""
    items = [images] if isinstance(images, (str, os.PathLike)) else list(images)
    paths: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            paths += sorted(p.absolute() for p in path.iterdir() if is_image_file(p))
        elif path.is_file() and path.suffix.lower() in (".txt", ".csv", ".lst"):
            lines = [ln.strip() for ln in path.read_text().splitlines()]
            paths += [(path.absolute().parent / ln).absolute() for ln in lines if ln and not ln.startswith("#")]
        else:
            paths.append(path.absolute())
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise PairsError(f"--images: no such file(s): {', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}")
    if len(paths) < 2:
        raise PairsError(f"--images: a template needs at least two images, got {len(paths)}")
    names = [stem(p) for p in paths]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise PairsError(f"--images: several images are named {', '.join(repeated)} (output folders are named after "
                         f"the files): rename them")
    dims = {p: _header_ndim(p) for p in paths}
    if len(set(dims.values())) > 1:
        raise PairsError("--images: mixed 2D and 3D images: " + ", ".join(f"{p.name} {d}D" for p, d in dims.items()))
    return paths


def _header_ndim(path: Path) -> int:
    """2 or 3 from the header (as :func:`regnet.io.load_image` reads the array)."""
    if path.name.lower().endswith((".nii", ".nii.gz")):
        import nibabel as nib

        try:
            shape = nib.load(str(path)).shape
        except Exception as error:
            raise PairsError(f"--images: cannot read '{path}' ({error})") from None
        return 2 if len(shape) < 3 or shape[2] == 1 else 3
    return 2


def _check_folder(out: Path, settings: dict, force: bool) -> None:
    if not out.exists():
        return
    if not out.is_dir():
        raise NotADirectoryError(f"--out '{out}' exists and is not a folder")
    if not any(out.iterdir()):
        return
    try:
        old = json.loads((out / SETTINGS_NAME).read_text())
    except (OSError, ValueError):
        raise FileExistsError(f"--out '{out}' is not empty and holds no regnet {SETTINGS_NAME}: choose a new or empty "
                              f"folder") from None
    if not force and old.get("settings") != settings:
        raise FileExistsError(f"--out '{out}' holds a template built with other settings or images; use another "
                              f"folder, or --force to redo every registration")


def build_template(images, out_dir, iterations: int = 4, transform: str = "affine+syn", config=None,
                   gradient_step: float = 1.0, sharpen: float = 0.25, reference=None, batch_size: int | None = None,
                   device="cpu", verbose: bool = True, final_registration: bool = True, force: bool = False,
                   engine=None) -> dict | None:
    """Build a template (module docstring); return the convergence log on the main process.

    Args:
        images: a folder, a list file or paths (:func:`template_inputs`), 2D or 3D.
        out_dir: the output folder (created; resumed when it holds a template of the same settings).
        iterations: rounds of ``transform`` registrations after the affine round.
        transform: ``"affine+syn"`` or ``"syn"`` (``"affine"``: affine rounds only).
        config: registration settings (YAML path, mapping or ``None``), as ``regnet register``.
        gradient_step: fraction of the shape update per round (1: the whole inverse mean map).
        sharpen: weight of the Laplacian-sharpened template in the new one (ANTsPy's
            ``build_template``: 1 - blending_weight = 0.25); 0 turns it off.
        reference: the image whose grid the template takes (default: the first image).
        batch_size, device, verbose, force, engine: as :func:`register_many`.
        final_registration: register every image onto the final template (``subjects/``).
    """
    fn = "build_template"
    iterations = _checks.integer(fn, "iterations", iterations, low=0)
    step = _checks.number(fn, "gradient_step", gradient_step, low=0.0, low_open=True, high=2.0)
    sharpen = _checks.number(fn, "sharpen", sharpen, low=0.0, high=1.0)
    if transform not in TRANSFORMS:
        raise ValueError(f"transform must be one of {', '.join(TRANSFORMS)}, got {transform!r}")
    config = load_config(config)
    check_device(device)
    paths = template_inputs(images)
    reference = Path(reference).absolute() if reference is not None else paths[0]
    out = Path(out_dir).absolute()
    settings = {"images": [str(p) for p in paths], "reference": str(reference), "iterations": iterations,
                "transform": transform, "config": jsonable(config.given), "gradient_step": step, "sharpen": sharpen}
    engine = engine or LocalEngine(device, verbose)
    main = engine.is_main
    if main:
        _check_folder(out, settings, force)
        out.mkdir(parents=True, exist_ok=True)
        _write_json(out / SETTINGS_NAME, {"regnet_version": __version__, "settings": settings})
        ref_image = load_image(reference)
        subjects = [load_image(p) for p in paths]
        scale = _intensity_scale(subjects)
        _save(out / "initial_average.nii.gz", initial_average(subjects, ref_image), ref_image, scale)
        del subjects
    names = [stem(p) for p in paths]
    rounds = [("affine", "affine")] + [("affine" if transform == "affine" else "deformable", transform)] * iterations
    fixed, log = out / "initial_average.nii.gz", []
    common = dict(config=config, device=device, batch_size=batch_size, verbose=verbose, force=force, engine=engine)
    for number, (kind, how) in enumerate(rounds):
        start = time.perf_counter()
        folder = out / f"round_{number:02d}"
        pairs = _pairs(paths, names, fixed, folder)
        register_many(pairs, how, summary=folder / "summary.csv", **common)
        new = folder / "template.nii.gz"
        if main:
            entry = _update(folder, names, fixed, new, ref_image, scale, step, sharpen, number, kind)
            entry["time_s"] = time.perf_counter() - start
            log.append(entry)
            _write_log(out, settings, log)
        fixed = new
    if main:
        _save(out / "template.nii.gz", normalised(load_image(fixed)), ref_image, scale)
    if final_registration:
        start = time.perf_counter()
        register_many(_pairs(paths, names, out / "template.nii.gz", out / "subjects"), transform,
                             summary=out / "subjects" / "summary.csv", **common)
        if main:
            stats = round_statistics(out / "subjects", names, out / "template.nii.gz")
            for key in ("mean_u", "mean_p", "warped"):
                stats.pop(key)
            log.append({"round": len(rounds), "kind": "final", **stats, "template_change": None,
                        "time_s": time.perf_counter() - start})
    if not main:
        return None
    return _write_log(out, settings, log)


def _pairs(paths: list[Path], names: list[str], fixed: Path, folder: Path) -> list[Pair]:
    return [Pair(row=i, fixed=str(fixed), moving=str(p), out=str(folder / n),
                 given={"subject": n, "fixed": str(fixed), "moving": str(p), "out": str(folder / n)})
            for i, (p, n) in enumerate(zip(paths, names, strict=True), start=1)]


def _intensity_scale(images) -> tuple[float, float]:
    """``(low, high)``: the subjects' mean robust intensity range (templates are saved in it)."""
    ranges = [intensity_range(image.data[:, :1]) for image in images]
    return float(np.mean([r[0] for r in ranges])), float(np.mean([r[1] for r in ranges]))


def _save(path: Path, data: torch.Tensor, reference, scale: tuple[float, float]) -> None:
    low, high = scale
    like = reference if reference.header is not None else None
    save_image(path, (data.float() * (high - low) + low).cpu(), reference.affine, like=like, dtype=np.float32)


def round_statistics(folder: Path, names: list[str], template: Path) -> dict:
    """Scores of a round of registrations onto ``template`` (``folder/<name>/`` of each subject):
    ``subjects`` (registered), ``failed``, ``mean_ncc_before`` / ``mean_ncc`` (global NCC of the
    subjects through the headers / warped, to the template), ``mean_warp_mm`` (RMS over the
    template's foreground, intensity > 10 % of its maximum, of the length in mm of the mean SyN
    field ``warp.nii.gz``: 0 for a centred template), ``stretch_deviation`` (Frobenius norm of
    the mean stretch minus the identity) and, for the update, ``mean_u``, ``mean_p``, ``warped``
    (the normalised warped images)."""
    image = load_image(template)
    reports, warped, fields, matrices = {}, [], [], []
    for name in names:
        sub = folder / name
        try:
            report = json.loads((sub / REPORT_NAME).read_text())
        except (OSError, ValueError):
            continue
        reports[name] = report
        data = load_image(sub / "warped.nii.gz").data[:, :1].float()
        warped.append(normalise(data, *report["intensity_range"]["moving"]))
        if (sub / "warp.nii.gz").is_file():
            fields.append(load_ddf(sub / "warp.nii.gz")[0].double())
        if (sub / "affine.txt").is_file():
            matrices.append(load_affine(sub / "affine.txt"))
    if not reports:
        raise RuntimeError(f"every registration onto '{template}' failed: see {folder / 'summary.csv'}")
    mean_u = torch.stack(fields).mean(0) if len(fields) == len(reports) else None
    mean_p = mean_stretch(matrices) if len(matrices) == len(reports) else None
    template_n = normalised(image)
    foreground = template_n[0, 0] > 0.1 * float(template_n.max())
    warp_mm = 0.0
    if mean_u is not None:
        length = ddf_to_world(mean_u, image.affine).norm(dim=1)[0]
        inside = length[foreground] if bool(foreground.any()) else length.flatten()
        warp_mm = float(inside.square().mean().sqrt())

    def mean(key):
        values = [r["metrics"]["global_ncc"].get(key) for r in reports.values()]
        values = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
        return float(np.mean(values)) if values else None

    return {"subjects": len(reports), "failed": len(names) - len(reports), "mean_ncc_before": mean("before"),
            "mean_ncc": mean("after"), "mean_warp_mm": warp_mm,
            "stretch_deviation": None if mean_p is None else float(np.linalg.norm(mean_p - np.eye(len(mean_p)))),
            "mean_u": mean_u, "mean_p": mean_p, "warped": warped}


def _update(folder: Path, names, fixed: Path, new: Path, ref_image, scale, step: float, sharpen: float,
            number: int, kind: str) -> dict:
    """Average the round's warped subjects, reshape and sharpen: write ``new`` and the figure."""
    stats = round_statistics(folder, names, fixed)
    warped = torch.cat(stats.pop("warped"))
    mean_u, mean_p = stats.pop("mean_u"), stats.pop("mean_p")
    average = warped.mean(0, keepdim=True)
    shape, affine = ref_image.spatial_shape, ref_image.affine
    centre = world_centre_of_mass(average, affine)
    psi = update_field(mean_u, mean_p, centre, affine, shape, step)
    template = ops.warp(average, psi, padding_mode="zeros")
    if sharpen > 0:
        template = (1 - sharpen) * template + sharpen * laplacian_sharpen(template, ref_image.spacing)
    before = normalised(load_image(fixed))
    change = float((template - before).square().mean().sqrt())
    _save(new, template, ref_image, scale)
    panels = [("registered to", before), (f"average of {warped.shape[0]} warped", average), ("new template", template),
              ("std of warped", warped.std(0, keepdim=True) if warped.shape[0] > 1 else torch.zeros_like(average))]
    if mean_u is not None:
        length = ddf_to_world(mean_u, affine).norm(dim=1, keepdim=True)
        panels.append((f"|mean SyN field|\nmax {float(length.max()):.2f} mm", length))
    title = (f"round {number} ({kind}): {stats['subjects']} subjects, mean NCC {stats['mean_ncc'] or 0:.4f}, "
             f"mean SyN field {stats['mean_warp_mm']:.3f} mm, template change {change:.4f}")
    save_round_figure(folder / "overview.png", panels, title, picture=ref_image.header is None)
    return {"round": number, "kind": kind, **stats, "template_change": change}


def _write_json(path: Path, data) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)


def _write_log(out: Path, settings: dict, log: list[dict]) -> dict:
    clean = [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in e.items()} for e in log]
    result = {"regnet_version": __version__, "settings": settings, "rounds": clean,
              "template": str(out / "template.nii.gz")}
    _write_json(out / "convergence.json", result)
    tmp = out / ".convergence.csv.tmp"
    with open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=LOG_COLUMNS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for entry in clean:
            writer.writerow({k: "" if entry.get(k) is None else entry[k] for k in LOG_COLUMNS})
    os.replace(tmp, out / "convergence.csv")
    return result
