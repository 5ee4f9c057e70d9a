#!/usr/bin/env python
"""Regenerate the bundled 3D demo data ``regnet/data/brain3d_t1.nii.gz`` and
``regnet/data/brain3d_aseg.nii.gz`` from the voxelmorph brain in ``../shared/data/brain3d``.

Source: ``subject_a_t1.nii.gz`` (160 x 192 x 224, 1 mm, float in [0, 1], identity affine)
and ``subject_a_aseg.nii.gz`` (FreeSurfer-style labels, int16), from the voxelmorph
repository (Apache-2.0, licence copied to ``regnet/data/LICENSE-brain3d``).

Downsampling by ``--factor`` (default 3) per axis, with the grids kept consistent:

- the volume is first zero-padded at the high end of every axis to a multiple of the factor
  (162 x 192 x 225 for 3; the padding is background);
- the T1 image is the mean of each ``factor**3`` block, scaled to 0..255 and stored as uint8;
- the label map is the most frequent label of each block (ties: the smallest label), stored
  as int16;
- the affine is the source affine times ``diag(f, f, f) + (f - 1) / 2`` translation, so that
  new voxel ``i`` sits at the centre of the block of source voxels ``f i .. f i + f - 1``
  (world positions are kept: registration and Dice in millimetres are unchanged).

Usage (from the repository root)::

    python scripts/make_demo_data.py [--source ../shared/data/brain3d] [--factor 3]

The output is deterministic (gzip without a time stamp), so a rerun reproduces the files.
"""

from __future__ import annotations

import argparse
import gzip
from pathlib import Path

import nibabel as nib
import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = REPO.parent / "shared" / "data" / "brain3d"
OUT_DIR = REPO / "regnet" / "data"
IMAGE_NAME = "brain3d_t1.nii.gz"
LABELS_NAME = "brain3d_aseg.nii.gz"


def _pad(volume: np.ndarray, factor: int) -> np.ndarray:
    pad = [(0, (-n) % factor) for n in volume.shape]
    return np.pad(volume, pad, mode="constant", constant_values=0)


def _blocks(volume: np.ndarray, factor: int) -> np.ndarray:
    """``(X, Y, Z)`` (multiples of factor) -> ``(X/f, Y/f, Z/f, f**3)``."""
    x, y, z = (n // factor for n in volume.shape)
    b = volume.reshape(x, factor, y, factor, z, factor).transpose(0, 2, 4, 1, 3, 5)
    return b.reshape(x, y, z, factor**3)


def downsample_image(volume: np.ndarray, factor: int) -> np.ndarray:
    mean = _blocks(_pad(volume.astype(np.float64), factor), factor).mean(-1)
    scale = 255.0 / max(float(mean.max()), 1e-12)
    return np.clip(np.rint(mean * scale), 0, 255).astype(np.uint8)


def downsample_labels(labels: np.ndarray, factor: int) -> np.ndarray:
    blocks = _blocks(_pad(labels, factor), factor)
    flat = np.sort(blocks.reshape(-1, blocks.shape[-1]), axis=1)  # sorted: ties go to the smallest
    out = np.empty(flat.shape[0], dtype=labels.dtype)
    chunk = 65536
    for start in range(0, flat.shape[0], chunk):
        part = flat[start:start + chunk]
        counts = (part[:, :, None] == part[:, None, :]).sum(1)  # how often each entry occurs in its block
        out[start:start + chunk] = part[np.arange(part.shape[0]), counts.argmax(1)]
    return out.reshape(blocks.shape[:3])


def block_affine(affine: np.ndarray, factor: int) -> np.ndarray:
    step = np.eye(4)
    step[:3, :3] *= factor
    step[:3, 3] = (factor - 1) / 2.0
    return affine @ step


def _save(path: Path, data: np.ndarray, affine: np.ndarray, description: str) -> None:
    img = nib.Nifti1Image(data, affine)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    img.header["descrip"] = description.encode()[:79]
    img.set_data_dtype(data.dtype)
    path.write_bytes(gzip.compress(img.to_bytes(), compresslevel=9, mtime=0))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="folder with subject_a_*.nii.gz")
    parser.add_argument("--factor", type=int, default=3, help="downsampling factor per axis (default 3)")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="output folder (default regnet/data)")
    args = parser.parse_args(argv)
    if args.factor < 1:
        parser.error("--factor must be >= 1")

    t1 = nib.load(str(args.source / "subject_a_t1.nii.gz"))
    aseg = nib.load(str(args.source / "subject_a_aseg.nii.gz"))
    if t1.shape != aseg.shape or not np.allclose(t1.affine, aseg.affine):
        raise SystemExit("make_demo_data: image and labels are not on one grid")
    affine = block_affine(np.asarray(t1.affine, dtype=np.float64), args.factor)
    image = downsample_image(np.asarray(t1.dataobj, dtype=np.float32), args.factor)
    labels = downsample_labels(np.asarray(aseg.dataobj).astype(np.int16), args.factor)
    args.out.mkdir(parents=True, exist_ok=True)
    note = f"voxelmorph test_scan, block {args.factor}"
    _save(args.out / IMAGE_NAME, image, affine, f"{note} mean, 0..255")
    _save(args.out / LABELS_NAME, labels, affine, f"{note} majority label")
    for name in (IMAGE_NAME, LABELS_NAME):
        path = args.out / name
        print(f"{path}: {nib.load(str(path)).shape}, {path.stat().st_size / 1024:.0f} KiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
