#!/usr/bin/env python
"""Benchmark whole registrations: regnet against ANTsPy and torchreg, on the same inputs.

What it measures
----------------
Each method registers the same moving image onto the same fixed image, in one process, and
is scored with the same code (this script's :func:`evaluate`) on the voxel displacement field
(DDF, fixed grid, pull: ``warped(x) = moving(x + u(x))``) it produced.

Case ``2d``: the real slices ``../shared/data/brain2d/r16slice.jpg`` (moving) onto
``r64slice.jpg`` (fixed), two subjects, 256 x 256, intensities divided by 255 (the bundled
copies in ``regnet/data`` when the shared folder is absent). No ground truth: scored by the
global NCC (Pearson correlation over the whole image) of the warped moving image with the
fixed one, and the folding fraction of the deformable field.

=====================  ==========================================================================
method                 call (timed)
=====================  ==========================================================================
ants-affine            ``ants.registration(fixed, moving, type_of_transform="Affine")``
ants-syn               ``ants.registration(fixed, moving, type_of_transform="SyN")`` (its own
                       affine stage first, then SyN; ANTsPy's defaults)
torchreg-affine        ``torchreg.AffineRegistration(is_3d=False)`` (its defaults)
torchreg-syn           n/a in 2D: torchreg's ``SyNRegistration`` is 3D-only (``conv3d``
                       smoothing, 3-channel flows, ``permute(0, 2, 3, 4, 1)``)
regnet-affine          ``regnet.registration.AffineRegistration()`` (its defaults)
regnet-affine+syn      ``regnet.registration.register_images(fixed, moving, "affine+syn")``: what
                       ``regnet register --transform affine+syn`` runs, with its defaults (no
                       ``--config``: the class defaults of AffineRegistration/SyNRegistration)
regnet-syn_brain       the same with ``--config configs/syn_brain.yaml`` (only when named in
                       ``--methods``)
=====================  ==========================================================================

Case ``3d``: the real brain ``../shared/data/brain3d/subject_a_t1.nii.gz`` (160 x 192 x 224,
1 mm; ``--scale S`` averages S^3 blocks, the labels take the middle voxel of each block) is the
fixed image. The moving image is the same brain deformed by a known random diffeomorphism:
a smooth stationary velocity field ``v`` (Gaussian noise on a 5 x 5 x 5 control grid,
trilinearly upsampled, scaled to at most :data:`MAX_VELOCITY_MM` mm; fixed seed
:data:`SEED`), exponentiated with ``regnet.ops.exp`` (``d = exp(v)``, ``moving(x) =
fixed(x + d(x))``), times a smooth multiplicative bias ``1 + 0.1 * noise`` (3 x 3 x 3 control
grid) plus Gaussian noise (sigma :data:`NOISE`). The label map ``subject_a_aseg`` is deformed
alike (nearest). The true registration is then the inverse deformation ``exp(-v)`` (its
accuracy, the residual of ``compose(d, exp(-v))`` inside the brain, is in the JSON). Scores:
mean Dice over the 30 FreeSurfer labels usually scored (those present in both label maps;
moving labels warped with nearest), the displacement error ``|u - exp(-v)|`` in mm averaged
over the brain mask (``aseg > 0`` of the fixed image), the global NCC, and the folding
fraction (share of voxels with ``det(I + grad u) <= 0``, ``regnet.metrics.jacobian_stats``).
Methods: ``ants-syn``, ``torchreg-syn`` (its defaults, no affine stage: the pair differs by a
deformation only) and ``regnet-affine+syn`` (pipeline defaults), plus ``regnet-syn_brain`` when
named.

Fields of the peers: ANTs writes its transforms to files during the call (part of the timed
call; the files go to a temporary folder). The total ANTs transform is rebuilt from them
after the timed call: the warp NIfTI (``fwdtransforms[0]`` for SyN; vectors in LPS mm) is read
with ``regnet.io.load_ddf``, which converts it to fixed voxels, and the ``.mat`` affine
(``T(p) = M (p - c) + c + t`` in physical mm, the images being built from arrays with identity
direction and zero origin) is applied after it, as ``ants.apply_transforms`` applies the
list ``[warp, affine]``. The JSON keeps, as a check of that conversion, the NCC between
ANTs' own ``warpedmovout`` and the moving image resampled through the rebuilt field
(``ants_field_check_ncc``, expected > 0.999) and the NCC of ANTs' own output. torchreg's
affine ``theta`` and its normalised channel-last SyN flow are converted to voxel DDFs the same
way as regnet's ``theta`` (for SyN the same check against torchreg's own moved image:
``field_check_ncc``). Folding is counted on each method's total field (affine and deformable
parts composed); the affine part has a positive determinant, so the sign of the Jacobian
determinant is the deformable part's.

Time: wall time of the registration call only (no file reading or scoring); ANTs' call
includes writing its transform files, which is inherent to it. Before the timed calls each
method runs once on a tiny version of the case (2D 32 x 32, 3D about 20 x 24 x 28, quick
settings), so that one-time costs (imports, ``torch.optim`` set-up, ITK factories) are paid
outside the timing. ``--repeats`` (2D, default 3) and ``--repeats-3d`` (default 1) timed calls
per method; the table shows the median, the JSON every time; the methods of a case alternate
order from one repeat to the next. One thread count for all: ``--threads`` (default 2) sets
``torch.set_num_threads`` and ``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS`` (read by ANTs when it
is imported, which happens after the variable is set); ``process_cpu_s`` in the JSON (CPU time
of the process during the call, all threads) shows how many threads each library kept busy.
ANTs samples its metrics randomly: ``ANTS_RANDOM_SEED`` is set to 1 unless already set
(deterministic with one thread; with several ITK threads results may still vary a little).
CPU only.

Output: a markdown table on stdout and the JSON ``benchmarks/results/bench_registration_cpu.json``
(``--out`` to change): CPU, threads, versions (torch, monai, ANTsPy, torchreg, regnet,
numpy), load average before and after each case, the settings, and per method all the
numbers of the table plus the raw times and the details of the checks.

Usage::

    python scripts/bench_registration.py --threads 2            # full: 2D + 3D at 160x192x224
    python scripts/bench_registration.py --threads 2 --scale 2  # 3D case at 80x96x112, 2 mm
    python scripts/bench_registration.py --methods regnet torchreg --quick --threads 1  # smoke test
    python scripts/bench_registration.py --methods ants-syn regnet-affine+syn --cases 3d
    python scripts/bench_registration.py --cases process --repeats 5   # whole processes, r16 -> r64

``--quick``: 2D at 64 x 64, 3D at 53 x 64 x 74 (``--scale 3``) and a few iterations for every
method: a smoke test of the machinery, not a measurement. Requires ``antspyx`` for the ANTs
methods (``pip install antspyx``, or ``pip install -e .[bench]``) and ``torchreg`` for
torchreg's; ``--methods`` selects libraries (``ants``, ``torchreg``, ``regnet``) or single
methods.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run from a checkout without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchlib

import benchlib  # noqa: E402
from regnet import ops  # noqa: E402
from regnet.io import Image, load_ddf, load_image  # noqa: E402
from regnet.metrics import jacobian_stats, mean_dice  # noqa: E402
from regnet.metrics import SCORED_LABELS, global_ncc  # noqa: E402
from regnet.registration import load_config  # noqa: E402
from regnet.registration.world import register_images, sample_moving  # noqa: E402

PROG = "bench_registration"
# torchreg's smooth_kernel calls torch.meshgrid without indexing= (harmless, once per level)
warnings.filterwarnings("ignore", message="torch.meshgrid: in an upcoming release")
SHARED = REPO.parent / "shared" / "data"
BUNDLED = REPO / "regnet" / "data"
#: Seed of the synthetic 3D deformation, bias and noise.
SEED = 0
#: ``ANTS_RANDOM_SEED`` (ANTs samples its metric randomly; unset it varies from call to call).
ANTS_SEED = 1
#: Largest velocity of the synthetic deformation, mm.
MAX_VELOCITY_MM = 8.0
#: Control points per axis of the velocity / bias noise.
VELOCITY_CONTROL = 5
BIAS_CONTROL = 3
#: Amplitude of the multiplicative bias, standard deviation of the additive noise.
BIAS = 0.1
NOISE = 0.02
#: Scaling-and-squaring steps of the true deformation and its inverse.
TRUTH_STEPS = 10
QUICK_2D_FACTOR = 4
QUICK_3D_SCALE = 3
SYN_BRAIN = REPO / "configs" / "syn_brain.yaml"

# Quick (smoke-test) settings: a few iterations everywhere.
QUICK_REGNET = {"affine": {"iterations": [30, 10]}, "syn": {"iterations": [5, 3, 1]}}
QUICK_TORCHREG_AFFINE = {"iterations": (30, 10)}
QUICK_TORCHREG_SYN = {"iterations": (5, 3, 1)}
QUICK_ANTS = {"Affine": {"aff_iterations": (30, 10, 0, 0)},
              "SyN": {"aff_iterations": (30, 10, 0, 0), "reg_iterations": (5, 3, 0)}}


# --- inputs ---------------------------------------------------------------------------------

@dataclass
class Case:
    """One registration problem, every tensor on the CPU, batch 1."""

    name: str
    fixed: torch.Tensor  # (1, 1, *S) float32
    moving: torch.Tensor  # (1, 1, *S) float32
    spacing: float  # mm, isotropic
    source: str
    fixed_labels: torch.Tensor | None = None  # (1, 1, *S) int64
    moving_labels: torch.Tensor | None = None
    true_ddf: torch.Tensor | None = None  # (1, ndim, *S) float64, the registration sought
    mask: torch.Tensor | None = None  # (*S) bool, where the displacement error is averaged
    labels: list[int] = field(default_factory=list)
    info: dict = field(default_factory=dict)

    @property
    def ndim(self) -> int:
        return self.fixed.dim() - 2

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.fixed.shape[2:])

    @property
    def affine(self) -> np.ndarray:
        return np.diag([self.spacing] * self.ndim + [1.0])


def _pool(x: torch.Tensor, factor: int) -> torch.Tensor:
    if factor == 1:
        return x
    pool = F.avg_pool2d if x.dim() == 4 else F.avg_pool3d
    return pool(x, factor)


def _subsample(labels: torch.Tensor, factor: int, shape) -> torch.Tensor:
    """The middle voxel of each ``factor``-block (labels cannot be averaged)."""
    if factor == 1:
        return labels
    index = (slice(None), slice(None)) + tuple(slice(factor // 2, factor // 2 + factor * n, factor) for n in shape)
    return labels[index].contiguous()


def case_2d(quick: bool) -> Case:
    folder = SHARED / "brain2d"
    if not (folder / "r16slice.jpg").exists():
        folder = BUNDLED
    fixed = load_image(folder / "r64slice.jpg").data / 255.0
    moving = load_image(folder / "r16slice.jpg").data / 255.0
    factor = QUICK_2D_FACTOR if quick else 1
    fixed, moving = _pool(fixed, factor), _pool(moving, factor)
    source = f"{folder.relative_to(REPO.parent) if folder.is_relative_to(REPO.parent) else folder}: r16 -> r64"
    return Case("2d", fixed.float().contiguous(), moving.float().contiguous(), float(factor), source)


def _smooth_noise(channels: int, shape, gen: torch.Generator, control: int) -> torch.Tensor:
    coarse = torch.randn(1, channels, *[control] * len(shape), generator=gen, dtype=torch.float64)
    field_ = F.interpolate(coarse, size=tuple(shape), mode="trilinear", align_corners=True)
    return field_ / field_.abs().amax()


def case_3d(scale: int) -> Case:
    """The brain (``--scale`` x downsampled) and its deformed copy, with the true inverse."""
    t1, aseg = benchlib.BRAIN, benchlib.BRAIN.with_name("subject_a_aseg.nii.gz")
    if t1.exists() and aseg.exists():
        fixed_img, labels_img, source = load_image(t1), load_image(aseg, dtype=torch.int64), "brain3d/subject_a"
    else:  # the bundled 54 x 64 x 75, 3 mm copy
        fixed_img = load_image(BUNDLED / "brain3d_t1.nii.gz")
        labels_img = load_image(BUNDLED / "brain3d_aseg.nii.gz", dtype=torch.int64)
        source = "regnet/data/brain3d (shared data absent)"
    base_spacing = float(np.mean(fixed_img.spacing))
    factor = max(1, round(scale / base_spacing))  # voxels of about `scale` mm (1 mm, 3 mm bundled)
    fixed = _pool(fixed_img.data.float(), factor).contiguous()
    labels = _subsample(labels_img.data.long(), factor, fixed.shape[2:])
    spacing = base_spacing * factor
    shape = tuple(fixed.shape[2:])

    gen = torch.Generator().manual_seed(SEED)
    velocity = _smooth_noise(3, shape, gen, VELOCITY_CONTROL) * (MAX_VELOCITY_MM / spacing)
    forward = ops.exp(velocity, TRUTH_STEPS, padding_mode="border")
    inverse = ops.exp(-velocity, TRUTH_STEPS, padding_mode="border")
    bias = 1 + BIAS * _smooth_noise(1, shape, gen, BIAS_CONTROL)
    noise = NOISE * torch.randn((1, 1, *shape), generator=gen, dtype=torch.float64)
    moving = (ops.warp(fixed.double(), forward) * bias + noise).float()
    moving_labels = ops.warp(labels.double(), forward, mode="nearest").round().long()

    mask = labels[0, 0] > 0
    residual = (ops.compose(forward, inverse).norm(dim=1)[0] * spacing)[mask]  # 0 for an exact inverse
    truth_norm = (inverse.norm(dim=1)[0] * spacing)[mask]
    present = [v for v in SCORED_LABELS if bool((labels == v).any()) and bool((moving_labels == v).any())]
    info = {
        "source": source,
        "scale": scale,
        "shape": list(shape),
        "spacing_mm": spacing,
        "seed": SEED,
        "max_velocity_mm": MAX_VELOCITY_MM,
        "velocity_control_points": VELOCITY_CONTROL,
        "bias_amplitude": BIAS,
        "noise_sigma": NOISE,
        "exp_steps": TRUTH_STEPS,
        "true_displacement_mm_in_mask": {"mean": truth_norm.mean().item(), "max": truth_norm.max().item()},
        "true_forward_max_mm": (forward.norm(dim=1) * spacing).max().item(),
        "true_folding_fraction": jacobian_stats(forward)["fraction_nonpositive"],
        "inverse_residual_mm_in_mask": {"mean": residual.mean().item(), "max": residual.max().item()},
        "mask_voxels": int(mask.sum()),
        "labels_scored": present,
    }
    return Case("3d", fixed, moving, spacing, source, labels, moving_labels, inverse, mask, present, info)


def tiny(case: Case) -> Case:
    """A small copy of a case's images for the warm-up calls (no labels, no truth)."""
    factor = max(1, min(case.shape) // (32 if case.ndim == 2 else 20))
    fixed, moving = _pool(case.fixed, factor), _pool(case.moving, factor)
    return Case(case.name + "-warmup", fixed.contiguous(), moving.contiguous(), case.spacing * factor, "warm-up")


# --- field conversions ----------------------------------------------------------------------

def _identity(shape, dtype=torch.float64) -> torch.Tensor:
    axes = [torch.arange(n, dtype=dtype) for n in shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"))[None]


def grid_to_ddf(grid: torch.Tensor) -> torch.Tensor:
    """Normalised sampling grid ``(1, *S, ndim)`` (``grid_sample``'s, ``align_corners=True``;
    last axis x, y[, z] = array axes reversed) -> voxel DDF ``(1, ndim, *S)`` float64."""
    shape = grid.shape[1:-1]
    ndim = len(shape)
    grid = grid.double()
    pos = torch.stack([(grid[..., ndim - 1 - i] + 1) * (shape[i] - 1) / 2 for i in range(ndim)], dim=1)
    return pos - _identity(shape)


def theta_to_ddf(theta: torch.Tensor, shape) -> torch.Tensor:
    """``affine_grid`` theta ``(1, ndim, ndim+1)`` (``align_corners=True``) -> voxel DDF."""
    grid = F.affine_grid(theta.double(), [1, 1, *shape], align_corners=True)
    return grid_to_ddf(grid)


def flow_to_ddf(flow: torch.Tensor) -> torch.Tensor:
    """torchreg's flow ``(1, *S, ndim)`` (normalised displacement, channel-last, x y z =
    array axes reversed, ``align_corners=True``) -> voxel DDF ``(1, ndim, *S)`` float64."""
    shape = flow.shape[1:-1]
    ndim = len(shape)
    flow = flow.double()
    return torch.stack([flow[..., ndim - 1 - i] * (shape[i] - 1) / 2 for i in range(ndim)], dim=1)


def ants_transforms_to_ddf(transforms: list[str], shape, spacing: float) -> torch.Tensor:
    """The total ANTs forward transform (``fwdtransforms``, as ``ants.apply_transforms``
    applies it: the fixed point goes through the list in order, e.g. warp then affine) as a
    voxel DDF ``(1, ndim, *S)`` float64 of the fixed grid.

    The images were built from arrays with identity direction, zero origin and isotropic
    ``spacing``, so ITK's physical point of voxel ``x`` is ``spacing * x``. Warps are read
    with :func:`regnet.io.load_ddf` (LPS mm -> voxels through the file's header)."""
    import ants

    ndim = len(shape)
    identity = _identity(shape)
    points = identity.clone()  # voxel positions, (1, ndim, *S)
    for path in transforms:
        if path.endswith(".mat"):
            tx = ants.read_transform(path)
            params = np.asarray(tx.parameters, dtype=np.float64)
            centre = torch.as_tensor(np.asarray(tx.fixed_parameters, dtype=np.float64)).view(1, ndim, *[1] * ndim)
            matrix = torch.as_tensor(params[: ndim * ndim].reshape(ndim, ndim))
            offset = torch.as_tensor(params[ndim * ndim:]).view(1, ndim, *[1] * ndim)
            physical = points * spacing
            physical = torch.einsum("ij,bj...->bi...", matrix, physical - centre) + centre + offset
            points = physical / spacing
        else:
            warp, affine = load_ddf(path, dtype=torch.float64)
            if tuple(warp.shape[2:]) != tuple(shape):
                raise ValueError(f"ANTs warp {path} is on a {tuple(warp.shape[2:])} grid, expected {tuple(shape)}")
            expected = np.abs(np.diag(affine)[:ndim])
            if not np.allclose(expected, spacing, rtol=1e-4):
                raise ValueError(f"ANTs warp {path}: spacing {expected} is not {spacing}")
            # the warp at the current points (exact at the grid points: it is applied first)
            points = points + ops.warp(warp, points - identity, padding_mode="border")
    return points - identity


# --- methods --------------------------------------------------------------------------------

@dataclass
class Method:
    """A registration method: ``build(case, quick) -> (call, finish)``; ``call()`` is what
    is timed, ``finish(call())`` returns ``{"ddf": voxel DDF, "deformable": bool, ...}``."""

    id: str
    library: str
    label: str
    dims: tuple[int, ...]
    build: Callable
    default: bool = True
    not_available: dict = field(default_factory=dict)  # ndim -> reason


def _ants_build(kind: str):
    def build(case: Case, quick: bool):
        import ants

        n = case.ndim
        geometry = dict(origin=(0.0,) * n, spacing=(case.spacing,) * n)
        fixed = ants.from_numpy(np.ascontiguousarray(case.fixed[0, 0].numpy()), **geometry)
        moving = ants.from_numpy(np.ascontiguousarray(case.moving[0, 0].numpy()), **geometry)
        kwargs = QUICK_ANTS[kind] if quick else {}
        folders = []  # one temporary folder per call, all removed by finish()

        def call():
            folders.append(Path(tempfile.mkdtemp(prefix="bench_ants_")))
            return ants.registration(fixed, moving, type_of_transform=kind, outprefix=str(folders[-1] / "reg_"),
                                     **kwargs)

        def finish(out):
            try:
                ddf = ants_transforms_to_ddf(list(out["fwdtransforms"]), case.shape, case.spacing)
                own = torch.from_numpy(np.asarray(out["warpedmovout"].numpy(), dtype=np.float32))[None, None]
            finally:
                for folder in folders:
                    shutil.rmtree(folder, ignore_errors=True)
            ours = sample_moving(Image(case.moving, case.affine), ddf, case.affine).float()
            return {"ddf": ddf, "deformable": kind != "Affine",
                    "details": {"global_ncc_own_output": global_ncc(own, case.fixed),
                                "ants_field_check_ncc": global_ncc(own, ours),
                                "transforms": [Path(p).name for p in out["fwdtransforms"]],
                                "settings": {"type_of_transform": kind, **kwargs} if kwargs else
                                f'type_of_transform="{kind}", ANTsPy defaults'}}

        return call, finish

    return build


def _torchreg_affine_build(case: Case, quick: bool):
    import torchreg

    kwargs = QUICK_TORCHREG_AFFINE if quick else {}
    reg = torchreg.AffineRegistration(is_3d=case.ndim == 3, verbose=False, **kwargs)

    def call():
        reg(case.moving, case.fixed, return_moved=False)
        return reg.get_affine()

    def finish(theta):
        return {"ddf": theta_to_ddf(theta, case.shape), "deformable": False,
                "details": {"settings": kwargs or "torchreg defaults"}}

    return call, finish


def _torchreg_syn_build(case: Case, quick: bool):
    import torchreg

    kwargs = QUICK_TORCHREG_SYN if quick else {}
    reg = torchreg.SyNRegistration(verbose=False, **kwargs)

    def call():
        moved, _, flow_xy, _ = reg(case.moving, case.fixed)
        return moved, flow_xy

    def finish(out):
        moved, flow = out
        ddf = flow_to_ddf(flow)
        ours = sample_moving(Image(case.moving, case.affine), ddf, case.affine).float()
        return {"ddf": ddf, "deformable": True,
                "details": {"settings": {k: list(v) for k, v in kwargs.items()} or "torchreg defaults",
                            "global_ncc_own_output": global_ncc(moved, case.fixed),
                            "field_check_ncc": global_ncc(moved, ours)}}

    return call, finish


def _regnet_affine_build(case: Case, quick: bool):
    from regnet.registration import AffineRegistration

    kwargs = {"iterations": QUICK_REGNET["affine"]["iterations"]} if quick else {}
    reg = AffineRegistration(verbose=False, **kwargs)

    def call():
        reg(case.moving, case.fixed, return_moved=False)
        return reg.get_affine()

    def finish(theta):
        return {"ddf": theta_to_ddf(theta, case.shape), "deformable": False,
                "details": {"settings": kwargs or "regnet defaults",
                            "iterations": [len(level) for level in reg.loss_history]}}

    return call, finish


def _regnet_pipeline_build(config_path: Path | None):
    def build(case: Case, quick: bool):
        config = load_config(config_path)
        if quick:  # the same settings with a few iterations
            given = {section: dict(values) for section, values in config.given.items()}
            for section, values in QUICK_REGNET.items():
                given[section].update(values)
                if "scales" in given[section]:
                    given[section]["iterations"] = given[section]["iterations"][: len(given[section]["scales"])]
            config = load_config(given)
        fixed, moving = Image(case.fixed, case.affine), Image(case.moving, case.affine)

        def call():
            return register_images(fixed, moving, "affine+syn", config, "cpu", verbose=False)

        def finish(result):
            report = result.report
            iterations = {stage: [len(level) for level in report["loss_history"][stage]]
                          for stage in report["loss_history"]}
            return {"ddf": result.ddf, "deformable": True,
                    "details": {"config": None if config_path is None else str(config_path.relative_to(REPO)),
                                "settings": report["settings"], "iterations": iterations,
                                "stage_time_s": {stage: report["time_s"][stage]["total"]
                                                 for stage in ("affine", "syn")}}}

        return call, finish

    return build


METHODS = [
    Method("ants-affine", "ants", 'ANTsPy registration "Affine"', (2,), _ants_build("Affine")),
    Method("ants-syn", "ants", 'ANTsPy registration "SyN" (affine + SyN)', (2, 3), _ants_build("SyN")),
    Method("torchreg-affine", "torchreg", "torchreg AffineRegistration", (2,), _torchreg_affine_build),
    Method("torchreg-syn", "torchreg", "torchreg SyNRegistration", (3,), _torchreg_syn_build,
           not_available={2: "torchreg SyNRegistration is 3D-only (conv3d smoothing, 3-channel flows)"}),
    Method("regnet-affine", "regnet", "regnet AffineRegistration", (2,), _regnet_affine_build),
    Method("regnet-affine+syn", "regnet", "regnet register affine+syn (defaults)", (2, 3),
           _regnet_pipeline_build(None)),
    Method("regnet-syn_brain", "regnet", "regnet register affine+syn --config syn_brain.yaml", (2, 3),
           _regnet_pipeline_build(SYN_BRAIN), default=False),
]
BY_ID = {m.id: m for m in METHODS}
LIBRARIES = ("ants", "torchreg", "regnet")


def select_methods(names: list[str]) -> list[Method]:
    chosen = set()
    for name in names:
        if name in LIBRARIES:
            chosen |= {m.id for m in METHODS if m.library == name and m.default}
        else:
            chosen.add(name)
    return [m for m in METHODS if m.id in chosen]


def library_version(library: str) -> str | None:
    try:
        if library == "ants":
            import ants

            return ants.__version__
        if library == "torchreg":
            from importlib.metadata import version

            return version("torchreg")
        import regnet

        return regnet.__version__
    except Exception:  # noqa: BLE001 - a missing library is reported, not fatal here
        return None


# --- scoring --------------------------------------------------------------------------------

def evaluate(case: Case, ddf: torch.Tensor, deformable: bool) -> dict:
    """Scores of a voxel DDF ``(1, ndim, *S)`` of the fixed grid (see the module docstring)."""
    ddf = ddf.double()
    affine = case.affine
    with torch.no_grad():
        warped = sample_moving(Image(case.moving, affine), ddf, affine).float()
        out: dict = {"global_ncc": global_ncc(warped, case.fixed)}
        if deformable:
            stats = jacobian_stats(ddf)
            out["folding_fraction"] = stats["fraction_nonpositive"]
            out["jacobian"] = stats
        if case.moving_labels is not None:
            warped_labels = sample_moving(Image(case.moving_labels, affine), ddf, affine, "nearest").round().long()
            out["dice"] = mean_dice(warped_labels, case.fixed_labels, labels=case.labels)
        if case.true_ddf is not None:
            err = ((ddf - case.true_ddf).norm(dim=1)[0] * case.spacing)[case.mask]
            out["displacement_error_mm"] = {"mean": err.mean().item(), "median": err.median().item(),
                                            "p95": torch.quantile(err.float(), 0.95).item(),
                                            "max": err.max().item()}
    return out


def run_case(case: Case, methods: list[Method], repeats: int, quick: bool) -> dict:
    """Warm up every method on a tiny copy, then time ``repeats`` calls of each (order
    alternating) and score the last result of each."""
    load_start = benchlib.loadavg()
    results: dict[str, dict] = {"identity": {"label": "none (identity)", "library": None, "status": "ok",
                                             **evaluate(case, torch.zeros(1, case.ndim, *case.shape), False)}}
    runnable = []
    for m in methods:
        if case.ndim not in m.dims:
            if case.ndim in m.not_available:
                results[m.id] = {"label": m.label, "library": m.library, "status": "n/a",
                                 "reason": m.not_available[case.ndim]}
            continue
        runnable.append(m)
    small = tiny(case)
    for m in runnable:
        start = time.perf_counter()
        call, finish = m.build(small, True)
        finish(call())
        size = "x".join(map(str, small.shape))
        print(f"  {case.name} warm-up {m.id}: {time.perf_counter() - start:.2f} s (tiny {size})",
              file=sys.stderr, flush=True)
    times: dict[str, list[float]] = {m.id: [] for m in runnable}
    cpu: dict[str, list[float]] = {m.id: [] for m in runnable}  # process CPU time: all threads
    raw: dict[str, object] = {}
    builds = {m.id: m.build(case, quick) for m in runnable}
    for r in range(repeats):
        for m in (runnable if r % 2 == 0 else runnable[::-1]):
            call, _ = builds[m.id]
            raw.pop(m.id, None)  # free the previous result first
            c0, t0 = time.process_time(), time.perf_counter()
            raw[m.id] = call()
            times[m.id].append(time.perf_counter() - t0)
            cpu[m.id].append(time.process_time() - c0)
            print(f"  {case.name} {m.id}: {times[m.id][-1]:.2f} s (process CPU {cpu[m.id][-1]:.2f} s)",
                  file=sys.stderr, flush=True)
    for m in runnable:
        _, finish = builds[m.id]
        out = finish(raw.pop(m.id))
        scores = evaluate(case, out["ddf"], out["deformable"])
        results[m.id] = {"label": m.label, "library": m.library, "status": "ok",
                         "time_s": statistics.median(times[m.id]), "times_s": times[m.id],
                         "process_cpu_s": cpu[m.id], **scores,
                         **({"details": out["details"]} if "details" in out else {})}
    order = ["identity"] + [m.id for m in METHODS]
    results = {k: results[k] for k in order if k in results}
    out = {"source": case.source, "shape": list(case.shape), "spacing_mm": case.spacing, "repeats": repeats,
           "loadavg_start": load_start, "loadavg_end": benchlib.loadavg()}
    if case.info:
        out["synthetic"] = case.info
    out["results"] = results
    return out


# --- reporting ------------------------------------------------------------------------------

def run_processes(args) -> dict:
    """Whole ``regnet register`` processes vs ANTsPy processes on r16 -> r64 (``whole_process.py``)."""
    import whole_process

    folder = SHARED / "brain2d" if (SHARED / "brain2d" / "r16slice.jpg").exists() else BUNDLED
    fixed, moving = folder / "r64slice.jpg", folder / "r16slice.jpg"
    print(f"{PROG}: case process (whole processes, {args.threads} threads, {args.repeats} each)", file=sys.stderr,
          flush=True)
    load_start = benchlib.loadavg()
    result = whole_process.compare(fixed, moving, args.threads, args.repeats)
    return {**result, "loadavg_start": load_start, "loadavg_end": benchlib.loadavg()}


def print_table(report: dict) -> None:
    details = [f"ITK threads {report['itk_threads']}"] + [
        f"{lib} {v}" for lib, v in report["versions"].items() if v is not None and lib != "regnet"]
    benchlib.print_header(report, details)
    fmt = benchlib.fmt
    rows = []
    for name, case in report["cases"].items():
        if name == "process":
            continue
        size = "x".join(map(str, case["shape"]))
        for mid, r in case["results"].items():
            if r["status"] != "ok":
                rows.append([f"{name} {size}", mid, "n/a", "n/a", "n/a", "n/a", f"n/a: {r.get('reason', r['status'])}"])
                continue
            err = r.get("displacement_error_mm")
            fold = r.get("folding_fraction")
            rows.append([f"{name} {size}", mid, fmt(r.get("time_s"), ".2f"), f"{r['global_ncc']:.4f}",
                         fmt(r.get("dice"), ".3f"), fmt(None if err is None else err["mean"], ".2f"),
                         "n/a" if fold is None else f"{100 * fold:.3f}%"])
    benchlib.print_markdown_table(["case", "method", "time s", "global NCC", "Dice", "disp err mm", "folding"], rows)
    if "process" in report["cases"]:
        proc = report["cases"]["process"]
        print(f"\nwhole processes, r16 -> r64 (import, read, register, write; median of {proc['repeats']}): "
              f"regnet register {proc['median_s']['regnet']:.2f} s, ANTsPy {proc['median_s']['ants']:.2f} s "
              f"({proc['ants_over_regnet']:.2f}x)")
    print("\ntime: median wall time of the registration call; Dice: mean over the scored FreeSurfer labels; "
          "disp err: mean |u - true| in the brain mask; folding: share of voxels with det <= 0 (deformable "
          "fields only)")
    sys.stdout.flush()


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=list(LIBRARIES),
                        choices=list(LIBRARIES) + [m.id for m in METHODS],
                        help="libraries (all their default methods) or single methods (default: ants torchreg regnet)")
    parser.add_argument("--cases", nargs="+", choices=("2d", "3d", "process"), default=["2d", "3d"],
                        help="2d / 3d: in-process registration calls; process: whole processes, r16 -> r64 "
                             "(regnet register vs an ANTsPy script doing the same job)")
    parser.add_argument("--scale", type=int, default=None,
                        help="3D downsampling factor (default 1: 160x192x224; --quick: 3)")
    parser.add_argument("--threads", type=int, default=2, help="torch and ITK threads (default 2)")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per method, 2D (default 3; quick 1)")
    parser.add_argument("--repeats-3d", type=int, default=1, help="timed calls per method, 3D (default 1)")
    parser.add_argument("--out", default=None,
                        help="JSON path (default benchmarks/results/bench_registration_cpu.json)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: 2D 64x64, 3D --scale 3, a few iterations for every method")
    args = parser.parse_args(argv)
    if args.scale is None:
        args.scale = QUICK_3D_SCALE if args.quick else 1
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    if args.scale < 1 or args.threads < 1 or args.repeats < 1 or args.repeats_3d < 1:
        parser.error("need --scale, --threads, --repeats and --repeats-3d >= 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(args.threads)  # before ANTs is imported
    # seeds ANTs' random metric sampling (ants.config's seed did not reach antsRegistration here)
    os.environ.setdefault("ANTS_RANDOM_SEED", str(ANTS_SEED))
    torch.set_num_threads(args.threads)
    methods = select_methods(args.methods)
    libraries = sorted({m.library for m in methods})
    missing = [lib for lib in libraries if library_version(lib) is None]
    if missing:
        hint = {"ants": "pip install antspyx", "torchreg": "pip install torchreg"}
        print(f"{PROG}: {', '.join(missing)} not importable ({'; '.join(hint.get(x, x) for x in missing)}), "
              f"or leave it out with --methods", file=sys.stderr)
        return 2
    device = torch.device("cpu")
    load_start = benchlib.loadavg()
    benchlib.warn_if_loaded(load_start, device, PROG)
    report = {
        **benchlib.environment(PROG, device),
        "itk_threads": int(os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"]),
        "ants_random_seed": os.environ["ANTS_RANDOM_SEED"],
        "versions": {lib: library_version(lib) for lib in LIBRARIES} | {"numpy": np.__version__},
        "command": "python scripts/bench_registration.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "quick": args.quick,
        "scale_3d": args.scale,
        "methods": [m.id for m in methods],
        "loadavg_start": load_start,
        "cases": {},
    }
    for name in args.cases:
        if name == "process":
            report["cases"]["process"] = run_processes(args)
            continue
        start = time.perf_counter()
        case = case_2d(args.quick) if name == "2d" else case_3d(args.scale)
        print(f"{PROG}: case {name} {'x'.join(map(str, case.shape))} ({case.source}), "
              f"{args.threads} threads", file=sys.stderr, flush=True)
        repeats = args.repeats if name == "2d" else args.repeats_3d
        report["cases"][name] = run_case(case, methods, repeats, args.quick)
        report["cases"][name]["wall_s"] = time.perf_counter() - start
    report["loadavg_end"] = benchlib.loadavg()
    print_table(report)
    path = benchlib.out_paths(args.out, [device], "bench_registration")["cpu"]
    benchlib.write_json(path, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
