#!/usr/bin/env python
"""Multi-subject 3D brain registration benchmark: regnet against ANTsPy, same inputs, same scoring.

Pairs (moving -> fixed)
-----------------------
* ``synthseg``: subject ``i`` onto subject ``i % 10 + 1`` for ``i = 1 .. --pairs`` (10 pairs of
  different real anatomies), synthetic skull-stripped T1-like images made from the real label
  maps of ``../shared/data/synthseg`` by ``scripts/brain_pairs.py`` (tissue means, bias field,
  noise, blur, cropped to the brain plus 10 voxels; cached under ``benchmarks/cache/``).
  ``--moving-contrast t2`` registers the T2-like image of the moving subject instead
  (multimodal); ``--fixed-contrast t1real --moving-contrast t1real`` registers T1 images with the
  tissue contrast and texture measured on a real scan (``brain_pairs.T1_REAL``: low subcortical
  contrast, as in real T1 scans), a harder check of defaults chosen on ``t1``. Scored on the
  30 FreeSurfer structures of ``regnet.metrics.SCORED_LABELS`` present in both label maps.
* ``subject_a -> mni152`` (unless ``--no-mni``): the real T1 ``brain3d/subject_a`` (with the
  anatomical affine of ``bench_intersubject3d.py``; its stored identity affine is not its
  orientation) onto the MNI152 template. The template has no label map: scored by the Dice of
  cerebral white matter (labels 2, 41) and cortex (3, 42) against its WM / GM probability maps
  thresholded at 0.5, as ``bench_intersubject3d.py`` does.

``--spacing S`` (whole mm) runs everything on S-mm versions of the inputs (block means, label
mode; ``brain_pairs.block_reduce``) for quick runs; 1 is the real benchmark.

Methods (each a fresh process, ``--threads`` threads: ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS``
for regnet, ``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS`` for ANTs, ``ANTS_RANDOM_SEED=1``)
-------------------------------------------------------------------------------------------
* ``regnet``: ``python -m regnet register --fixed F --moving M --transform affine+syn --out DIR
  --quiet`` (defaults; ``--regnet-config YAML`` adds ``--config YAML``, ``--regnet-arg A``
  passes ``A`` on, repeatable). Time: the process wall clock (import, read, register, write
  ddf / inverse_ddf / warped / overview / report) and ``report.json``'s
  ``time_s.registration``. Labels: ``regnet.pipeline.apply_transform(..., "label")`` (what
  ``regnet apply --interp label`` runs: label-wise linear, as ANTs' ``genericLabel``), field:
  ``ddf.nii.gz`` through ``regnet.io.load_ddf``.
* ``ants_syn``: ``ants.registration(fixed, moving, type_of_transform="SyN")`` (ANTsPy's
  defaults: its affine stage, then SyN 40x20x0 with Mattes MI) in a child process. Time: the
  ``ants.registration`` call, and the process from its start to the moment the warped image
  is written (import, read, register with its transform files, write). Labels:
  ``ants.apply_transforms(..., interpolator="genericLabel")``; field: the composed forward
  transform (``ants.apply_transforms(..., compose=prefix)``, a displacement field on the fixed
  grid, read with ``regnet.io.load_ddf``).
* ``ants_syncc``: ``type_of_transform="antsRegistrationSyN[s,4]"``: ANTsPy's recreation of
  ``antsRegistrationSyN.sh`` (rigid + affine, MI; SyN with CC, here radius 4 as the shell
  script's default, 100x70x50x20, shrink 8x4x2x1). About an hour per pair at 1 mm on this
  machine, so only on the first ``--syncc-pairs`` synthseg pairs (default 2) and with
  ``--syncc-spacing S``: registered at S mm, its transform applied to the labels and composed
  on the ``--spacing`` grid (so it is scored like the others). The table says which.

Scores (one function, :func:`score_structures`, for every method)
----------------------------------------------------------------
Per pair: Dice of each structure present in both the fixed and the (unwarped) moving label map
(Learn2Reg's rule: a structure that vanishes after warping scores 0), their mean; HD95 of each
(``regnet.metrics.hausdorff95``, mm with the fixed image's voxel size), their mean over the
finite values; from the total forward displacement on the fixed grid (the Jacobian of the
whole fixed -> moving mapping, affine included, in the fixed grid's voxel frame):
``sdlogj`` (std of log det J over det > 0, ``regnet.metrics.sdlogj``) on the whole grid and in
the fixed brain mask (labels 1..499), ``sdlogj_l2r`` (``regnet.metrics.sdlogj_learn2reg``,
Learn2Reg's exact formula, whole grid), the folding fraction (det <= 0) on the whole grid and in
the brain. Also ``dice_nearest``: the mean Dice with the moving labels sampled through the
method's field by one common nearest-neighbour sampler (``regnet``'s), a check that the field
is the one the method applied (label-wise interpolation scores a little higher than nearest).
Per method: means over the synthseg pairs that succeeded, ``dice30`` (mean of the lowest 30% of
all (pair, structure) Dice values, ``regnet.metrics.dice30``) and ``dice30_l2r_quantile`` (the
30th percentile of the per-pair mean Dice, what Learn2Reg's evaluation code aggregates).

A method failing on a pair is recorded (``status``, ``error``) and the run goes on. Writes
``benchmarks/results/bench_brain_pairs_cpu.json`` (``--out``) and prints Markdown tables.

Usage::

    python scripts/bench_brain_pairs.py                                  # 1 mm, 10 pairs + MNI, all methods
    python scripts/bench_brain_pairs.py --spacing 2 --syncc-pairs 2      # quick: everything at 2 mm
    python scripts/bench_brain_pairs.py --methods regnet --regnet-config configs/syn_brain.yaml --pairs 3
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))  # run from a checkout without installing
sys.path.insert(0, str(HERE))  # benchlib, brain_pairs

import brain_pairs

PROG = "bench_brain_pairs"
METHODS = ("regnet", "ants_syn", "ants_syncc")
ANTS_TYPES = {"ants_syn": "SyN", "ants_syncc": "antsRegistrationSyN[s,4]"}
ANTS_SEED = 1
WM_LABELS, GM_LABELS = (2, 41), (3, 42)
#: Tiny settings (smoke tests, warm-up): a few iterations.
QUICK_REGNET_CONFIG = {"affine": {"iterations": [30, 10]}, "syn": {"iterations": [5, 3, 1]}}
QUICK_ANTS = {"aff_iterations": (30, 10, 0, 0), "reg_iterations": (5, 3, 0)}
DEFAULT_OUT = REPO / "benchmarks" / "results" / "bench_brain_pairs_cpu.json"


# --- pairs ----------------------------------------------------------------------------------

@dataclass
class Pair:
    """One registration problem: files on the scoring grid, and (optionally) coarser copies
    for a method registered at another spacing (``reg_files[spacing] = (fixed, moving)``)."""

    name: str
    kind: str  # "synthseg" (30 structures) or "tissue" (MNI: WM / GM probability maps)
    fixed: Path
    moving: Path
    moving_seg: Path
    fixed_seg: Path | None = None
    fixed_wm: Path | None = None
    fixed_gm: Path | None = None
    reg_files: dict = field(default_factory=dict)


def synthseg_pairs(n: int, spacing: int, contrast: str = "t1", syncc_spacing: int | None = None,
                   fixed_contrast: str = "t1") -> list[Pair]:
    """Subject ``i`` (moving, ``contrast``) onto subject ``i % 10 + 1`` (fixed, ``fixed_contrast``),
    ``i = 1 .. n``."""
    pairs = []
    wanted = tuple(dict.fromkeys((fixed_contrast, contrast)))
    for i in range(1, n + 1):
        j = i % len(brain_pairs.SUBJECTS) + 1
        fixed, moving = brain_pairs.subject_files(j, spacing, wanted), brain_pairs.subject_files(i, spacing, wanted)
        pair = Pair(f"sub{i:02d}->sub{j:02d}", "synthseg", fixed[fixed_contrast], moving[contrast], moving["seg"],
                    fixed_seg=fixed["seg"])
        if syncc_spacing and syncc_spacing != spacing:
            f2 = brain_pairs.subject_files(j, syncc_spacing, wanted)
            m2 = brain_pairs.subject_files(i, syncc_spacing, wanted)
            pair.reg_files[syncc_spacing] = (f2[fixed_contrast], m2[contrast])
        pairs.append(pair)
    return pairs


def mni_pair(spacing: int, syncc_spacing: int | None = None) -> Pair:
    files = brain_pairs.mni_pair_files(spacing)
    pair = Pair("subject_a->mni152", "tissue", files["mni_t1"], files["t1"], files["seg"],
                fixed_wm=files["mni_wm"], fixed_gm=files["mni_gm"])
    if syncc_spacing and syncc_spacing != spacing:
        coarse = brain_pairs.mni_pair_files(syncc_spacing)
        pair.reg_files[syncc_spacing] = (coarse["mni_t1"], coarse["t1"])
    return pair


# --- running the methods --------------------------------------------------------------------

def child_env(threads: int) -> dict:
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"):
        env[name] = str(threads)
    env.setdefault("ANTS_RANDOM_SEED", str(ANTS_SEED))
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _tail(text: str, n: int = 3000) -> str:
    return text[-n:] if text else ""


def run_regnet(pair: Pair, work: Path, threads: int, config: Path | None, extra: list[str]) -> dict:
    """``regnet register`` as a whole process, then the labels through the saved transform."""
    out = work / "regnet"
    cmd = [sys.executable, "-m", "regnet", "register", "--fixed", str(pair.fixed), "--moving", str(pair.moving),
           "--transform", "affine+syn", "--out", str(out), "--quiet"]
    if config is not None:
        cmd += ["--config", str(config)]
    cmd += list(extra)
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=child_env(threads), capture_output=True, text=True, check=False)
    process_s = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"regnet register exited {proc.returncode}: {_tail(proc.stderr or proc.stdout)}")
    report = json.loads((out / "report.json").read_text())
    from regnet.pipeline import apply_transform

    labels = apply_transform(pair.fixed, pair.moving_seg, out, work / "regnet_labels.nii.gz", "label")
    times = report.get("time_s", {})
    return {"process_s": process_s, "registration_s": times.get("registration"), "write_s": times.get("write"),
            "labels": labels, "ddf": out / "ddf.nii.gz", "command": " ".join(cmd[1:])}


def run_ants(pair: Pair, work: Path, threads: int, method: str, quick: bool, reg_spacing: int | None) -> dict:
    """ANTsPy in a child process (:func:`ants_worker`): registration, labels, composed field."""
    fixed, moving = pair.reg_files.get(reg_spacing, (pair.fixed, pair.moving))
    spec = {"fixed": str(fixed), "moving": str(moving), "fixed_ref": str(pair.fixed),
            "moving_seg": str(pair.moving_seg), "prefix": str(work / f"{method}_"),
            "type_of_transform": ANTS_TYPES[method], "kwargs": dict(QUICK_ANTS) if quick else {}}
    spec_path = work / f"{method}_spec.json"
    spec_path.write_text(json.dumps(spec))
    start_epoch, start = time.time(), time.perf_counter()
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--ants-worker", str(spec_path)],
                          env=child_env(threads), capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    lines = [line for line in proc.stdout.splitlines() if line.startswith("ANTS_RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"ANTs worker exited {proc.returncode}: {_tail(proc.stderr or proc.stdout)}")
    result = json.loads(lines[-1][len("ANTS_RESULT "):])
    return {"process_s": result["written_epoch"] - start_epoch, "registration_s": result["registration_s"],
            "worker_total_s": wall, "labels": Path(result["labels"]), "ddf": Path(result["ddf"]),
            "type_of_transform": spec["type_of_transform"], "ants_kwargs": spec["kwargs"],
            "registered_on": f"{fixed.name}, {moving.name}"}


def ants_worker(spec_path: str) -> int:
    """Child mode: one ANTsPy registration. Prints ``ANTS_RESULT {json}``."""
    spec = json.loads(Path(spec_path).read_text())
    import ants

    fixed, moving = ants.image_read(spec["fixed"]), ants.image_read(spec["moving"])
    start = time.perf_counter()
    out = ants.registration(fixed, moving, type_of_transform=spec["type_of_transform"],
                            outprefix=spec["prefix"], **spec["kwargs"])
    registration_s = time.perf_counter() - start
    ants.image_write(out["warpedmovout"], spec["prefix"] + "warped.nii.gz")
    written = time.time()  # the end of what a user's ANTsPy process does: import, read, register, write
    reference = ants.image_read(spec["fixed_ref"]) if spec["fixed_ref"] != spec["fixed"] else fixed
    labels = ants.image_read(spec["moving_seg"])
    warped = ants.apply_transforms(reference, labels, out["fwdtransforms"], interpolator="genericLabel")
    labels_path = spec["prefix"] + "labels.nii.gz"
    ants.image_write(warped, labels_path)
    ddf_path = ants.apply_transforms(reference, moving, out["fwdtransforms"], compose=spec["prefix"])
    if not ddf_path:
        raise RuntimeError("ants.apply_transforms(compose=...) wrote no composite field")
    print("ANTS_RESULT " + json.dumps({"registration_s": registration_s, "written_epoch": written,
                                       "labels": labels_path, "ddf": ddf_path}), flush=True)
    return 0


# --- scoring --------------------------------------------------------------------------------

def _load_labels(path: Path):
    import torch

    from regnet.io import load_image

    return load_image(path, dtype=torch.int64)


def field_scores(ddf, brain) -> dict:
    """SDlogJ (both definitions) and folding of a voxel DDF ``(1, 3, *S)`` on the fixed grid."""
    from regnet.metrics import jacobian_stats, sdlogj, sdlogj_learn2reg

    whole = jacobian_stats(ddf)
    inside = jacobian_stats(ddf, mask=brain) if brain is not None else whole
    return {
        "sdlogj": whole["std_log"],
        "sdlogj_brain": inside["std_log"],
        "sdlogj_l2r": sdlogj_learn2reg(ddf),
        "folding_fraction": whole["fraction_nonpositive"],
        "folding_fraction_brain": inside["fraction_nonpositive"],
        "det_min": whole["min"],
        "det_max": whole["max"],
        "check_sdlogj": sdlogj(ddf),
    }


def _finite_mean(values) -> float:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(values)) if values else math.nan


def score_structures(fixed_seg, moving_seg, warped_seg, spacing) -> dict:
    """Dice and HD95 (mm) per scored structure present in both input label maps (Learn2Reg's rule)."""
    import torch

    from regnet.metrics import SCORED_LABELS, dice_per_label, hausdorff95

    present = [v for v in SCORED_LABELS if bool((fixed_seg == v).any()) and bool((moving_seg == v).any())]
    dice = dice_per_label(warped_seg, fixed_seg, labels=present)
    dice = {v: dice.get(v, 0.0) for v in present}  # vanished after warping: 0
    hd95 = hausdorff95(warped_seg, fixed_seg, labels=present, spacing=spacing)
    vanished = [v for v in present if not bool(torch.any(warped_seg == v))]
    return {"structures": present, "dice_per_structure": {str(k): v for k, v in dice.items()},
            "hd95_per_structure": {str(k): v for k, v in hd95.items()},
            "dice": float(np.mean(list(dice.values()))) if dice else math.nan,
            "hd95_mm": _finite_mean(hd95.values()), "vanished": vanished}


def _dice(a, b) -> float:
    total = int(a.sum()) + int(b.sum())
    return 2.0 * int((a & b).sum()) / total if total else math.nan


def score_tissue(fixed_wm, fixed_gm, warped_seg, spacing) -> dict:
    """MNI pair: cerebral WM (2, 41) and cortex (3, 42) against the template's maps > 0.5."""
    import torch

    from regnet.metrics import hausdorff95

    wm, gm = fixed_wm > 0.5, fixed_gm > 0.5
    w_wm = torch.isin(warped_seg, torch.tensor(WM_LABELS))
    w_gm = torch.isin(warped_seg, torch.tensor(GM_LABELS))
    tissue_fixed = wm.long() + 2 * (gm & ~wm).long()
    tissue_warped = w_wm.long() + 2 * (w_gm & ~w_wm).long()
    hd = hausdorff95(tissue_warped, tissue_fixed, labels=[1, 2], spacing=spacing)
    dice_wm, dice_gm = _dice(w_wm, wm), _dice(w_gm, gm)
    return {"dice_wm": dice_wm, "dice_gm": dice_gm, "dice": (dice_wm + dice_gm) / 2,
            "hd95_wm_mm": hd[1], "hd95_gm_mm": hd[2], "hd95_mm": _finite_mean(hd.values())}


class Scorer:
    """The fixed-side data of a pair, loaded once and shared by every method."""

    def __init__(self, pair: Pair):
        from regnet.io import load_image

        self.pair = pair
        ref = load_image(pair.fixed)
        self.affine, self.shape = ref.affine, ref.spatial_shape
        self.spacing = [float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0)]
        self.moving_seg = _load_labels(pair.moving_seg)
        if pair.kind == "synthseg":
            self.fixed_seg = _load_labels(pair.fixed_seg).data[0, 0]
            self.brain = (self.fixed_seg > 0) & (self.fixed_seg <= brain_pairs.BRAIN_MAX_LABEL)
        else:
            self.wm = load_image(pair.fixed_wm).data[0, 0]
            self.gm = load_image(pair.fixed_gm).data[0, 0]
            self.brain = (self.wm + self.gm + 0.0) > 0.5  # the template's brain (no CSF map here)
            self.fixed_seg = None
        self.moving_values = self.moving_seg.data[0, 0]

    def labels_score(self, warped) -> dict:
        if self.pair.kind == "synthseg":
            return score_structures(self.fixed_seg, self.moving_values, warped, self.spacing)
        return score_tissue(self.wm, self.gm, warped, self.spacing)

    def __call__(self, labels_path: Path, ddf_path: Path) -> dict:
        import torch

        from regnet.io import load_ddf
        from regnet.registration.world import sample_moving

        warped = _load_labels(labels_path)
        if tuple(warped.spatial_shape) != tuple(self.shape):
            raise ValueError(f"warped labels {warped.spatial_shape} are not on the fixed grid {self.shape}")
        row = self.labels_score(warped.data[0, 0])
        ddf, affine = load_ddf(ddf_path)
        if tuple(ddf.shape[2:]) != tuple(self.shape) or not np.allclose(affine, self.affine, atol=1e-3):
            raise ValueError(f"{ddf_path}: the field is not on the fixed grid")
        row.update(field_scores(ddf, self.brain[None, None]))
        with torch.no_grad():
            nearest = sample_moving(self.moving_seg, ddf, self.affine, "nearest")[0, 0].round().long()
        row["dice_nearest"] = self.labels_score(nearest)["dice"]
        return row


# --- the benchmark --------------------------------------------------------------------------

@dataclass
class Settings:
    methods: tuple = ("regnet", "ants_syn", "ants_syncc")
    threads: int = 2
    spacing: int = 1
    regnet_config: Path | None = None
    regnet_args: list = field(default_factory=list)
    quick: bool = False  # tiny ANTs iterations (smoke tests); regnet takes quick settings via regnet_config
    syncc_pairs: int = 2
    syncc_spacing: int | None = None
    warmup: bool = True
    keep: Path | None = None


def _versions() -> dict:
    import importlib.metadata as md

    out = {}
    for name in ("antspyx", "numpy", "scipy", "nibabel", "regnet"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def _method_label(method: str, settings: Settings) -> str:
    if method == "regnet":
        return f"regnet ({settings.regnet_config.name})" if settings.regnet_config else "regnet (defaults)"
    if method == "ants_syn":
        return "ANTsPy SyN" + (" (quick)" if settings.quick else "")
    at = settings.syncc_spacing or settings.spacing
    return f"ANTsPy SyN-CC (antsRegistrationSyN[s,4], registered at {at} mm)"


def run_pair(pair: Pair, methods: list[str], settings: Settings, work: Path) -> list[dict]:
    scorer = Scorer(pair)
    rows = []
    for method in methods:
        row = {"pair": pair.name, "kind": pair.kind, "method": method}
        start = time.perf_counter()
        try:
            if method == "regnet":
                out = run_regnet(pair, work, settings.threads, settings.regnet_config, settings.regnet_args)
            else:
                reg_spacing = settings.syncc_spacing if method == "ants_syncc" else None
                out = run_ants(pair, work, settings.threads, method, settings.quick, reg_spacing)
            labels, ddf = out.pop("labels"), out.pop("ddf")
            row.update(out)
            row.update(scorer(labels, ddf))
            row["status"] = "ok"
        except Exception as error:  # noqa: BLE001 - recorded, the benchmark goes on
            row.update({"status": "failed", "error": f"{type(error).__name__}: {error}"[:4000],
                        "traceback": traceback.format_exc()[-4000:]})
        row["bench_s"] = time.perf_counter() - start
        status = (f"Dice {_f(row['dice'], '.3f')}, registration {_f(row['registration_s'], '.1f')} s, "
                  f"process {_f(row['process_s'], '.1f')} s" if row["status"] == "ok" else row["error"][:300])
        print(f"  {pair.name:18s} {method:10s} {status}", file=sys.stderr, flush=True)
        rows.append(row)
    return rows


def summarise(rows: list[dict], method: str, pair_names: list[str] | None = None) -> dict:
    """Means over the synthseg pairs of ``method`` that succeeded (``pair_names``: only those)."""
    from regnet.metrics import dice30

    ok = [r for r in rows if r["method"] == method and r["kind"] == "synthseg" and r["status"] == "ok"
          and (pair_names is None or r["pair"] in pair_names)]
    failed = [r["pair"] for r in rows if r["method"] == method and r["kind"] == "synthseg" and r["status"] != "ok"]
    keys = ("dice", "dice_nearest", "hd95_mm", "sdlogj", "sdlogj_brain", "sdlogj_l2r", "folding_fraction",
            "folding_fraction_brain", "registration_s", "process_s")
    out = {"pairs": len(ok), "failed_pairs": failed}
    for key in keys:
        out[key] = _finite_mean(r.get(key) for r in ok)
    for key in ("registration_s", "process_s"):  # robust to a pair slowed by other work on the machine
        values = [r[key] for r in ok if r.get(key) is not None]
        out[f"{key}_median"] = float(np.median(values)) if values else math.nan
    all_dice = [v for r in ok for v in r["dice_per_structure"].values()]
    out["dice30"] = dice30(all_dice) if all_dice else math.nan
    out["dice30_l2r_quantile"] = dice30([r["dice"] for r in ok], method="quantile") if ok else math.nan
    out["folded_voxels_any_pair"] = any(r.get("folding_fraction", 0) > 0 for r in ok)
    return out


def run_benchmark(pairs: list[Pair], settings: Settings, syncc_names: list[str] | None = None) -> dict:
    """Run every method on every pair (``ants_syncc`` only on ``syncc_names``) and summarise."""
    import benchlib
    import torch

    torch.set_num_threads(settings.threads)
    report = {**benchlib.environment(PROG, torch.device("cpu")), "versions": _versions(),
              "loadavg_start": benchlib.loadavg()}
    report["settings"] = {
        "methods": {m: _method_label(m, settings) for m in settings.methods},
        "threads": settings.threads, "spacing_mm": settings.spacing,
        "regnet_config": settings.regnet_config.read_text() if settings.regnet_config else None,
        "regnet_config_path": str(settings.regnet_config) if settings.regnet_config else None,
        "regnet_args": settings.regnet_args, "ants_types": ANTS_TYPES, "ants_quick": settings.quick,
        "ants_quick_kwargs": QUICK_ANTS if settings.quick else None,
        "syncc_pairs": syncc_names, "syncc_spacing_mm": settings.syncc_spacing or settings.spacing,
        "ants_random_seed": os.environ.get("ANTS_RANDOM_SEED", str(ANTS_SEED)),
        "data": {"generator": "scripts/brain_pairs.py", "version": brain_pairs.VERSION, "blur_vox": brain_pairs.BLUR,
                 "bias": brain_pairs.BIAS, "noise": brain_pairs.NOISE, "margin_vox": brain_pairs.MARGIN},
    }
    report["pairs"] = [{"name": p.name, "kind": p.kind, "fixed": str(p.fixed), "moving": str(p.moving)}
                       for p in pairs]
    rows: list[dict] = []
    root = Path(tempfile.mkdtemp(prefix="bench_brain_pairs_")) if settings.keep is None else Path(settings.keep)
    try:
        if settings.warmup and pairs:
            warm_up(pairs[0], settings, root / "warmup")
        for index, pair in enumerate(pairs):
            methods = [m for m in settings.methods
                       if m != "ants_syncc" or (syncc_names is not None and pair.name in syncc_names)]
            if index % 2:
                methods = methods[::-1]  # alternate the order: load changes hit every method alike
            work = root / pair.name.replace(">", "")
            work.mkdir(parents=True, exist_ok=True)
            rows.extend(run_pair(pair, methods, settings, work))
            if settings.keep is None:
                shutil.rmtree(work, ignore_errors=True)
    finally:
        if settings.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    report["loadavg_end"] = benchlib.loadavg()
    report["rows"] = rows
    report["summary"] = {m: summarise(rows, m) for m in settings.methods}
    if syncc_names and "ants_syncc" in settings.methods:
        report["summary_syncc_pairs"] = {m: summarise(rows, m, syncc_names) for m in settings.methods}
    return report


def warm_up(pair: Pair, settings: Settings, work: Path) -> None:
    """One tiny run of each library first, so that cold file caches (and, with ``--device cuda``
    among regnet's arguments, Triton's kernel cache) are not charged to pair 1."""
    work.mkdir(parents=True, exist_ok=True)
    import yaml

    config = work / "quick.yaml"
    config.write_text(yaml.safe_dump(QUICK_REGNET_CONFIG))
    for method in settings.methods:
        try:
            if method == "regnet":
                run_regnet(pair, work, settings.threads, config, settings.regnet_args)
            elif method == "ants_syn":
                run_ants(pair, work, settings.threads, method, True, None)
        except Exception as error:  # noqa: BLE001 - the real runs will report it
            print(f"  warm-up {method}: {type(error).__name__}: {str(error)[:200]}", file=sys.stderr)


# --- tables ---------------------------------------------------------------------------------

def _f(x, spec: str) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


def tables(report: dict) -> list[str]:
    labels = report["settings"]["methods"]
    lines = [(f"3D brain pairs at {report['settings']['spacing_mm']} mm, {report['device_name']}, "
              f"{report['settings']['threads']} threads each, load avg {report['loadavg_start']} -> "
              f"{report['loadavg_end']}"), ""]

    def summary_table(summary: dict, title: str):
        lines.extend([title, "",
                      ("| method | pairs | Dice | Dice (nearest) | Dice30 | HD95 mm | SDlogJ brain | SDlogJ L2R | "
                       "folding % | registration s mean (median) | process s mean (median) |"),
                      "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"])
        for m, s in summary.items():
            lines.append(f"| {labels[m]} | {s['pairs']} | {_f(s['dice'], '.3f')} | {_f(s['dice_nearest'], '.3f')} | "
                         f"{_f(s['dice30'], '.3f')} | "
                         f"{_f(s['hd95_mm'], '.2f')} | {_f(s['sdlogj_brain'], '.3f')} | {_f(s['sdlogj_l2r'], '.4f')} | "
                         f"{_f(100 * s['folding_fraction'], '.4f')} | {_f(s['registration_s'], '.1f')} "
                         f"({_f(s['registration_s_median'], '.1f')}) | {_f(s['process_s'], '.1f')} "
                         f"({_f(s['process_s_median'], '.1f')}) |")
        lines.append("")

    summary_table(report["summary"], "Mean over the synthseg pairs (Dice / HD95 over the 30 FreeSurfer structures, "
                                     "labels warped by each method's own tool; Dice (nearest): warped by one common "
                                     "nearest-neighbour sampler through each method's field; Dice30: mean of the "
                                     "lowest 30% of all (pair, structure) Dice values):")
    if "summary_syncc_pairs" in report:
        summary_table(report["summary_syncc_pairs"], f"The same on the SyN-CC pairs only "
                                                     f"({', '.join(report['settings']['syncc_pairs'])}):")
    lines.extend(["Per pair:", "",
                  ("| pair | method | Dice | HD95 mm | SDlogJ brain | SDlogJ L2R | folding % | registration s | "
                   "process s |"), "|---|---|---:|---:|---:|---:|---:|---:|---:|"])
    for r in report["rows"]:
        if r["status"] != "ok":
            lines.append(f"| {r['pair']} | {labels[r['method']]} | failed: {r['error'][:80]} | | | | | | |")
            continue
        dice, hd95 = _f(r["dice"], ".3f"), _f(r["hd95_mm"], ".2f")
        if r["kind"] == "tissue":  # template tissue maps vs aseg labels: HD95 measures their definitions
            dice, hd95 = f"WM {_f(r['dice_wm'], '.3f')} / GM {_f(r['dice_gm'], '.3f')}", "n/a"
        lines.append(f"| {r['pair']} | {labels[r['method']]} | {dice} | {hd95} | "
                     f"{_f(r['sdlogj_brain'], '.3f')} | {_f(r['sdlogj_l2r'], '.4f')} | "
                     f"{_f(100 * r['folding_fraction'], '.4f')} | {_f(r['registration_s'], '.1f')} | "
                     f"{_f(r['process_s'], '.1f')} |")
    return lines


# --- command line ---------------------------------------------------------------------------

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=10, help="synthseg pairs i -> i %% 10 + 1 (1..10, default 10)")
    parser.add_argument("--spacing", type=int, default=1, help="whole mm; inputs block-reduced first (default 1)")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated from {','.join(METHODS)}")
    parser.add_argument("--threads", type=int, default=2, help="threads of every method (default 2)")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="JSON path")
    parser.add_argument("--regnet-config", default=None, help="YAML passed as regnet register --config")
    parser.add_argument("--regnet-arg", action="append", default=[], help="extra regnet register argument "
                        "(repeatable; e.g. --regnet-arg=--device --regnet-arg=cuda)")
    parser.add_argument("--syncc-pairs", type=int, default=2, help="synthseg pairs for ants_syncc (default 2)")
    parser.add_argument("--syncc-spacing", type=int, default=None, help="register ants_syncc at this spacing "
                        "(mm; scored on the --spacing grid); default: --spacing")
    parser.add_argument("--fixed-contrast", choices=brain_pairs.ALL_CONTRASTS, default="t1",
                        help="contrast of the fixed synthseg images (t1real: real T1 contrast and texture)")
    parser.add_argument("--moving-contrast", choices=brain_pairs.ALL_CONTRASTS,
                        help="contrast of the moving synthseg image (default: the fixed images' contrast; t2: "
                             "multimodal with a T1 fixed image)")
    parser.add_argument("--no-mni", action="store_true", help="leave out subject_a -> MNI152")
    parser.add_argument("--quick", action="store_true", help="tiny iterations for every method (smoke test)")
    parser.add_argument("--no-warmup", action="store_true", help="no tiny warm-up run of each library first")
    parser.add_argument("--keep", default=None, help="keep every output under this folder")
    parser.add_argument("--ants-worker", default=None, help=argparse.SUPPRESS)  # internal: child mode
    args = parser.parse_args(argv)
    if args.ants_worker:
        return ants_worker(args.ants_worker)
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        parser.error(f"--methods: unknown {unknown}; choose from {','.join(METHODS)}")
    if not 1 <= args.pairs <= len(brain_pairs.SUBJECTS) or args.threads < 1 or args.spacing < 1:
        parser.error("need 1 <= --pairs <= 10, --threads >= 1, --spacing >= 1")
    reason = brain_pairs.available()
    if reason:
        print(f"{PROG}: {reason}; nothing to measure", file=sys.stderr)
        return 2
    config = Path(args.regnet_config) if args.regnet_config else None
    if args.quick and config is None:
        import yaml

        config = Path(tempfile.mkdtemp(prefix="bench_brain_pairs_cfg_")) / "quick.yaml"
        config.write_text(yaml.safe_dump(QUICK_REGNET_CONFIG))
    settings = Settings(methods=methods, threads=args.threads, spacing=args.spacing, regnet_config=config,
                        regnet_args=args.regnet_arg, quick=args.quick, syncc_pairs=args.syncc_pairs,
                        syncc_spacing=args.syncc_spacing, warmup=not args.no_warmup,
                        keep=Path(args.keep) if args.keep else None)
    os.environ.setdefault("ANTS_RANDOM_SEED", str(ANTS_SEED))
    args.moving_contrast = args.moving_contrast or args.fixed_contrast
    pairs = synthseg_pairs(args.pairs, args.spacing, args.moving_contrast, args.syncc_spacing, args.fixed_contrast)
    if not args.no_mni:
        pairs.append(mni_pair(args.spacing, args.syncc_spacing))
    syncc_names = [p.name for p in pairs if p.kind == "synthseg"][: args.syncc_pairs]
    print(f"{PROG}: {len(pairs)} pairs at {args.spacing} mm, methods {', '.join(methods)}, {args.threads} threads",
          file=sys.stderr, flush=True)
    report = run_benchmark(pairs, settings, syncc_names)
    report["settings"]["moving_contrast"] = args.moving_contrast
    report["settings"]["fixed_contrast"] = args.fixed_contrast
    text = tables(report)
    print("\n".join(text))
    report["table_markdown"] = "\n".join(text)
    import benchlib

    benchlib.write_json(Path(args.out), _jsonable(report))
    return 0


def _jsonable(x):
    """NaN / inf as strings JSON can hold (``"nan"``, ``"inf"``), Paths as str."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if isinstance(x, Path):
        return str(x)
    if isinstance(x, np.generic):
        return _jsonable(x.item())
    return x


if __name__ == "__main__":
    sys.exit(main())
