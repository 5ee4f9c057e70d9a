"""Inputs of ``bench_brain_pairs.py``: synthetic T1/T2 brain images made from real label maps.

``../shared/data/synthseg/training_seg_01..10.nii.gz`` are ten real whole-head FreeSurfer-style
label maps of ten subjects (256^3, 1 mm, LIA-like affine), without intensity images. This
module turns each into a skull-stripped image of a chosen contrast, deterministically (seeded
per subject and contrast), and caches the NIfTI files under ``benchmarks/cache/`` (gitignored):

1. a mean intensity per label (:data:`T1`, :data:`T2`, on a 0-150 scale; T1-like: white matter
   110, cortex 70, deep grey nuclei 78-95, CSF and ventricles 25-30; T2-like: CSF 140, cortex
   85, white matter 40), each label's mean multiplied by a per-subject factor ``1 + N(0, 0.03)``
   (tissue contrast varies a little between scans); labels >= 500 (skull, skin, other
   extra-cerebral tissue) and 0 are background 0 (skull-stripped);
   ``t1real``: the means of :data:`T1_REAL` (measured on a real T1) plus, inside each label,
   a texture: unit Gaussian noise filtered with sigma :data:`TEXTURE_SIGMA` voxel, scaled by
   :data:`TEXTURE_SHARE` of that label's measured spread above the noise;
2. a slight blur: Gaussian, sigma :data:`BLUR` = 0.6 voxel (partial volume);
3. a smooth multiplicative bias field ``1 + 0.12 f``, ``f`` a 4x4x4 grid of Gaussian noise
   interpolated with cubic splines over the volume and scaled to max |f| = 1 (±12%);
4. Gaussian noise, sigma :data:`NOISE` = 2.5% of the white-matter T1 mean (2.75);
5. everything outside the brain (labels 1..499, which include the extra-cerebral CSF, label 24)
   set to 0, values clipped at 0;
6. cropped to the brain's bounding box plus :data:`MARGIN` = 10 voxels (inside the 256^3
   volume); the affine's origin moves with the crop (``A @ T(lo)``), so world coordinates are
   those of the source map. The label map is cropped the same way (int16).

``spacing`` > 1 (an integer number of mm): the 1-mm files are block-reduced by that factor
(images: the block mean; labels: the most frequent label of the block, ties to the smaller
label), the affine scaled and shifted so that each new voxel centre is its block's centre. The
trailing voxels that do not fill a block are dropped (background margin).

The same module prepares the real pair ``brain3d/subject_a`` -> ``mni152`` for the benchmark:
subject_a's T1 and aseg with the anatomical affine found by ``bench_intersubject3d.py`` (the
stored identity affine is not its orientation), the MNI152 T1 and its white / grey matter
probability maps (block-averaged at coarser spacing, thresholded at 0.5 by the scorer).

Usage::

    python scripts/brain_pairs.py --spacing 1 2      # build the cache (all subjects, both contrasts)
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("REGNET_DATA", REPO.parent / "shared" / "data"))
#: Bump when the generation changes: cached files of another version are never reused.
VERSION = 1
CACHE = REPO / "benchmarks" / "cache" / f"brain_pairs_v{VERSION}"
SUBJECTS = tuple(range(1, 11))
CONTRASTS = ("t1", "t2")
#: Every contrast ``intensity_image`` makes: ``t1real`` (real subcortical contrast and texture,
#: :data:`T1_REAL`) is made on request only, for checks on harder, more realistic images.
ALL_CONTRASTS = (*CONTRASTS, "t1real")
MARGIN = 10
BLUR = 0.6
BIAS = 0.12
BIAS_CONTROL = 4
NOISE = 0.025 * 110.0
LABEL_JITTER = 0.03
BRAIN_MAX_LABEL = 499

#: Mean intensity per FreeSurfer label, T1-like (0-150 scale). Labels not listed: ``DEFAULT``.
T1 = {
    2: 110, 41: 110, 7: 105, 46: 105, 85: 100,            # cerebral / cerebellar WM, optic chiasm
    3: 70, 42: 70, 8: 75, 47: 75,                         # cerebral / cerebellar cortex
    17: 68, 53: 68, 18: 70, 54: 70,                       # hippocampus, amygdala
    10: 92, 49: 92, 11: 78, 50: 78, 12: 82, 51: 82,       # thalamus, caudate, putamen
    13: 95, 52: 95, 26: 74, 58: 74, 28: 95, 60: 95,       # pallidum, accumbens, ventral DC
    16: 100,                                              # brainstem
    4: 25, 43: 25, 5: 25, 44: 25, 14: 25, 15: 25, 72: 25,  # ventricles
    24: 30,                                               # CSF
    31: 55, 63: 55, 136: 45, 137: 45, 163: 45, 164: 45,   # choroid plexus, periventricular labels
    25: 85, 57: 85, 30: 70, 62: 70,                       # lesions (WM hypointensities), vessels
}
#: Mean intensity per label, T2-like: CSF bright, white matter dark.
T2 = {
    2: 40, 41: 40, 7: 45, 46: 45, 85: 45,
    3: 85, 42: 85, 8: 80, 47: 80,
    17: 90, 53: 90, 18: 85, 54: 85,
    10: 60, 49: 60, 11: 75, 50: 75, 12: 65, 51: 65,
    13: 50, 52: 50, 26: 78, 58: 78, 28: 50, 60: 50,
    16: 50,
    4: 145, 43: 145, 5: 145, 44: 145, 14: 145, 15: 145, 72: 145,
    24: 140,
    31: 100, 63: 100, 136: 100, 137: 100, 163: 100, 164: 100,
    25: 110, 57: 110, 30: 60, 62: 60,
}
#: T1 contrast measured on a real scan: mean and standard deviation of ``brain3d/subject_a``'s
#: T1 inside each of its aseg labels, scaled so that cerebral white matter is 110 (the
#: ``t1real`` contrast). Unlike :data:`T1` the pallidum is as bright as white matter, the
#: putamen and thalamus close to it, the cerebellum darker: the low subcortical contrast of
#: real T1 scans. Labels not listed (rare ones: 25, 57, 72, 136, 137, 163, 164): mean
#: ``DEFAULT['t1real']`` (60), standard deviation 10.
T1_REAL = {
    2: (110.2, 10.8), 41: (109.8, 11.0), 7: (92.4, 7.3), 46: (92.1, 7.5), 85: (78.8, 20.5),
    3: (70.3, 12.3), 42: (69.2, 12.2), 8: (64.4, 10.4), 47: (64.4, 10.2),
    17: (73.4, 9.1), 53: (70.8, 9.9), 18: (71.8, 7.7), 54: (70.0, 8.3),
    10: (93.7, 10.4), 49: (92.7, 10.4), 11: (81.3, 11.7), 50: (81.3, 12.2), 12: (92.0, 8.1), 51: (90.8, 7.7),
    13: (110.4, 4.6), 52: (109.3, 4.5), 26: (79.0, 6.5), 58: (81.3, 7.2), 28: (101.9, 11.7), 60: (100.2, 12.3),
    16: (89.0, 11.3),
    4: (25.5, 15.8), 43: (25.7, 16.2), 5: (53.6, 13.6), 44: (42.3, 14.8), 14: (39.5, 14.5), 15: (27.0, 14.6),
    24: (44.4, 14.7),
    31: (55.1, 17.1), 63: (55.4, 17.0), 30: (72.3, 11.7), 62: (74.2, 9.3), 77: (83.6, 18.0),
}
#: ``t1real``: the share of a label's measured standard deviation (above the white noise) given
#: to a spatially correlated texture (Gaussian-filtered noise, sigma :data:`TEXTURE_SIGMA`
#: voxels); the rest of the measured spread is partial volume, bias and noise of that scan.
TEXTURE_SHARE = 0.7
TEXTURE_SIGMA = 1.0
DEFAULT = {"t1": 60.0, "t2": 90.0, "t1real": 60.0}
TABLES = {"t1": T1, "t2": T2, "t1real": {k: v[0] for k, v in T1_REAL.items()}}


# --- files ----------------------------------------------------------------------------------

def _save(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    """Write a NIfTI atomically (a hidden temporary sibling, then a rename)."""
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    image = nib.Nifti1Image(data, affine)
    image.header.set_xyzt_units("mm")
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.nii.gz")
    nib.save(image, str(tmp))
    tmp.replace(path)
    return path


def _load(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import nibabel as nib

    image = nib.load(str(path))
    return np.asarray(image.dataobj), image.affine


def synthseg_path(subject: int) -> Path:
    return DATA / "synthseg" / f"training_seg_{subject:02d}.nii.gz"


def available() -> str | None:
    """``None`` when every source file exists, else what is missing (a reason to skip)."""
    needed = [synthseg_path(s) for s in SUBJECTS] + [
        DATA / "brain3d" / "subject_a_t1.nii.gz", DATA / "brain3d" / "subject_a_aseg.nii.gz",
        DATA / "mni152" / "t1.nii.gz", DATA / "mni152" / "wm.nii.gz", DATA / "mni152" / "gm.nii.gz"]
    missing = [str(p) for p in needed if not p.exists()]
    return f"missing: {', '.join(missing)}" if missing else None


# --- synthesis ------------------------------------------------------------------------------

def crop_box(labels: np.ndarray, margin: int = MARGIN) -> tuple[slice, ...]:
    """Bounding box of the brain (labels 1..499) plus ``margin`` voxels, inside the volume."""
    brain = (labels > 0) & (labels <= BRAIN_MAX_LABEL)
    box = []
    for axis in range(labels.ndim):
        other = tuple(a for a in range(labels.ndim) if a != axis)
        hits = np.nonzero(brain.any(axis=other))[0]
        box.append(slice(max(0, hits[0] - margin), min(labels.shape[axis], hits[-1] + 1 + margin)))
    return tuple(box)


def shifted_affine(affine: np.ndarray, box: tuple[slice, ...]) -> np.ndarray:
    """The affine of ``volume[box]``: voxel 0 of the crop is voxel ``lo`` of the source."""
    shift = np.eye(4)
    shift[:3, 3] = [s.start for s in box]
    return affine @ shift


def bias_field(shape, rng: np.random.Generator) -> np.ndarray:
    """``1 + BIAS f``: f smooth (cubic interpolation of a coarse noise grid), max |f| = 1."""
    from scipy import ndimage

    coarse = rng.standard_normal((BIAS_CONTROL,) * len(shape))
    field = ndimage.zoom(coarse, [n / BIAS_CONTROL for n in shape], order=3, mode="nearest", grid_mode=False)
    assert field.shape == tuple(shape), (field.shape, shape)
    field = field / np.abs(field).max()
    return (1.0 + BIAS * field).astype(np.float32)


def intensity_image(labels: np.ndarray, contrast: str, subject: int) -> np.ndarray:
    """The skull-stripped ``contrast`` image (float32) of a label map (steps 1-5 of the module doc)."""
    from scipy import ndimage

    rng = np.random.default_rng([subject, ALL_CONTRASTS.index(contrast), VERSION])
    table, default = TABLES[contrast], DEFAULT[contrast]
    values = np.unique(labels)
    lut_keys = values.astype(np.int64)
    lut = np.array([0.0 if (v <= 0 or v > BRAIN_MAX_LABEL) else table.get(int(v), default) for v in lut_keys])
    lut = lut * (1.0 + LABEL_JITTER * rng.standard_normal(lut.size))
    index = np.searchsorted(lut_keys, labels)
    image = lut[index].astype(np.float32)
    if contrast == "t1real":  # correlated texture inside each label, its amplitude from T1_REAL
        spread = np.array([T1_REAL.get(int(v), (0.0, 10.0))[1] for v in lut_keys])
        spread = TEXTURE_SHARE * np.sqrt(np.maximum(spread**2 - NOISE**2, 0.0))
        texture = ndimage.gaussian_filter(rng.standard_normal(labels.shape).astype(np.float32), TEXTURE_SIGMA)
        texture /= texture.std()
        image += texture * spread[index].astype(np.float32)
    image = ndimage.gaussian_filter(image, BLUR)
    image *= bias_field(labels.shape, rng)
    image += rng.normal(0.0, NOISE, size=labels.shape).astype(np.float32)
    brain = (labels > 0) & (labels <= BRAIN_MAX_LABEL)
    image[~brain] = 0.0
    return np.clip(image, 0.0, None).astype(np.float32)


def block_reduce(data: np.ndarray, affine: np.ndarray, factor: int, labels: bool) -> tuple[np.ndarray, np.ndarray]:
    """``factor``-times coarser grid: block mean (images) or most frequent label (label maps)."""
    import torch
    import torch.nn.functional as F

    if factor == 1:
        return data, affine
    shape = [n // factor for n in data.shape]
    data = data[tuple(slice(0, n * factor) for n in shape)]
    if labels:
        values = np.unique(data)
        x = torch.from_numpy(np.searchsorted(values, data).astype(np.int64))
        best = torch.full(shape, -1.0)
        index = torch.zeros(shape, dtype=torch.int64)
        for k in range(values.size):  # ascending: a tie keeps the smaller label
            count = F.avg_pool3d((x == k).float()[None, None], factor)[0, 0]
            better = count > best
            best = torch.where(better, count, best)
            index = torch.where(better, torch.tensor(k), index)
        out = values[index.numpy()]
    else:
        out = F.avg_pool3d(torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))[None, None], factor)
        out = out[0, 0].numpy()
    scale = np.eye(4)
    scale[:3, :3] *= factor
    scale[:3, 3] = (factor - 1) / 2.0  # new voxel i is centred on old voxels factor*i .. factor*i + factor-1
    return out, affine @ scale


def _spacing_dir(spacing: int) -> Path:
    return CACHE / f"{spacing}mm"


def _check_spacing(spacing) -> int:
    if isinstance(spacing, float) and spacing.is_integer():
        spacing = int(spacing)
    if not isinstance(spacing, int) or isinstance(spacing, bool) or spacing < 1:
        raise ValueError(f"spacing must be a whole number of mm >= 1 (the sources are 1 mm), got {spacing!r}")
    return spacing


def subject_files(subject: int, spacing: int = 1, contrasts=CONTRASTS) -> dict[str, Path]:
    """``{"seg": path, "t1": path, "t2": path}`` of a synthseg subject at ``spacing`` mm, made if missing."""
    spacing = _check_spacing(spacing)
    if subject not in SUBJECTS:
        raise ValueError(f"subject must be one of {SUBJECTS}, got {subject!r}")
    unknown = [c for c in contrasts if c not in ALL_CONTRASTS]
    if unknown:
        raise ValueError(f"contrasts must be among {ALL_CONTRASTS}, got {unknown}")
    folder = _spacing_dir(spacing)
    paths = {"seg": folder / f"sub{subject:02d}_seg.nii.gz"} | {c: folder / f"sub{subject:02d}_{c}.nii.gz"
                                                                 for c in contrasts}
    if all(p.exists() for p in paths.values()):
        return paths
    if spacing == 1:
        labels, affine = _load(synthseg_path(subject))
        labels = np.rint(labels).astype(np.int16)
        box = crop_box(labels)
        labels, affine = np.ascontiguousarray(labels[box]), shifted_affine(affine, box)
        if not paths["seg"].exists():
            _save(paths["seg"], labels, affine)
        for c in contrasts:
            if not paths[c].exists():
                _save(paths[c], intensity_image(labels, c, subject), affine)
        return paths
    fine = subject_files(subject, 1, contrasts)
    for key, path in paths.items():
        if not path.exists():
            data, affine = _load(fine[key])
            data, affine = block_reduce(data, affine, spacing, labels=key == "seg")
            _save(path, data.astype(np.int16 if key == "seg" else np.float32), affine)
    return paths


def quick_subject_files(subject: int, factor: int, folder: Path, contrasts=("t1",)) -> dict[str, Path]:
    """Small inputs for smoke tests, fast to make: the cropped label map subsampled
    (every ``factor``-th voxel, from ``factor // 2``) and the images synthesised on that grid."""
    folder = Path(folder)
    paths = {"seg": folder / f"quick{factor}_sub{subject:02d}_seg.nii.gz"} | {
        c: folder / f"quick{factor}_sub{subject:02d}_{c}.nii.gz" for c in contrasts}
    if all(p.exists() for p in paths.values()):
        return paths
    labels, affine = _load(synthseg_path(subject))
    labels = np.rint(labels).astype(np.int16)
    box = crop_box(labels)
    affine = shifted_affine(affine, box)
    labels = np.ascontiguousarray(labels[box][tuple(slice(factor // 2, None, factor) for _ in range(3))])
    scale = np.eye(4)
    scale[:3, :3] *= factor
    scale[:3, 3] = factor // 2
    affine = affine @ scale
    _save(paths["seg"], labels, affine)
    for c in contrasts:
        _save(paths[c], intensity_image(labels, c, subject), affine)
    return paths


def subject_a_affine(shape) -> np.ndarray:
    """subject_a's anatomical affine (``bench_intersubject3d.subject_a_affine``)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_intersubject3d import subject_a_affine as affine

    return affine(shape)


def mni_pair_files(spacing: int = 1) -> dict[str, Path]:
    """subject_a (moving: ``t1``, ``seg``) and the MNI152 template (fixed: ``mni_t1``, ``mni_wm``,
    ``mni_gm``, probabilities in [0, 1]) at ``spacing`` mm, made if missing."""
    spacing = _check_spacing(spacing)
    folder = _spacing_dir(spacing)
    paths = {"t1": folder / "subject_a_t1.nii.gz", "seg": folder / "subject_a_seg.nii.gz",
             "mni_t1": folder / "mni152_t1.nii.gz", "mni_wm": folder / "mni152_wm.nii.gz",
             "mni_gm": folder / "mni152_gm.nii.gz"}
    if all(p.exists() for p in paths.values()):
        return paths
    sources = {"t1": DATA / "brain3d" / "subject_a_t1.nii.gz", "seg": DATA / "brain3d" / "subject_a_aseg.nii.gz",
               "mni_t1": DATA / "mni152" / "t1.nii.gz", "mni_wm": DATA / "mni152" / "wm.nii.gz",
               "mni_gm": DATA / "mni152" / "gm.nii.gz"}
    for key, path in paths.items():
        if path.exists():
            continue
        data, affine = _load(sources[key])
        if key in ("t1", "seg"):
            affine = subject_a_affine(data.shape)
        if key == "seg":
            data = np.rint(data).astype(np.int16)
        else:
            data = data.astype(np.float32)
            if key in ("mni_wm", "mni_gm"):
                data = data / 255.0  # stored as uint8 probabilities
        data, affine = block_reduce(data, affine, spacing, labels=key == "seg")
        _save(path, data, affine)
    return paths


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spacing", type=int, nargs="+", default=[1], help="mm (whole numbers), default 1")
    parser.add_argument("--subjects", type=int, nargs="+", default=list(SUBJECTS))
    args = parser.parse_args(argv)
    reason = available()
    if reason:
        print(f"brain_pairs: {reason}", file=sys.stderr)
        return 2
    for spacing in args.spacing:
        for subject in args.subjects:
            print(subject_files(subject, spacing))
        print(mni_pair_files(spacing))
    return 0


if __name__ == "__main__":
    sys.exit(main())
