"""``PairDataModule``: image pairs for learning-based registration, built from MONAI transforms.

Sources (``pairing``):

- ``"paired"``: a folder ``data_dir`` with ``moving_images/``, ``fixed_images/`` and optionally
  ``moving_labels/``, ``fixed_labels/`` holding files of the same names (one case per name),
  e.g. ``prostate_mr_us``.
- ``"random"``: a list of ``images`` (optional ``labels``); training draws every ordered pair of
  two different training images (shuffled), validation pairs each validation image with the next.
- ``"atlas"``: every image of ``images`` (moving) against one ``atlas`` (fixed).
- ``"deform"``: synthetic pairs from single scans: fixed = the scan, moving = the scan deformed
  by :class:`regnet.transforms.RandSVFDeformd` (a random smooth diffeomorphism; with
  ``deform_fixed`` the fixed image is an independently deformed copy too).

Files become tensors in :mod:`regnet.lightning.datasets` (:class:`Preprocess`: loaded
channel-first, intensity-scaled (``intensity``) and resized onto the common grid
``spatial_size``; labels as ``"masks"`` or ``"index"``; :class:`PairDataset`). Random
augmentation (training only): ``RandAffined`` on each side independently and
``RandSVFDeformd`` on the moving side.

Items are dicts: ``"case"`` (str), ``"moving"`` / ``"fixed"`` ``(C, *spatial)`` float32 and,
with labels, ``"moving_label"`` / ``"fixed_label"``; batches add the batch dimension.

Relative paths are resolved against the data root: ``$REGNET_DATA`` if set, else the shared
data folder next to the repository (``<repo>/../shared/data``).
"""

from __future__ import annotations

import glob
import random
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from regnet import _checks
from regnet._checks import ConfigError
from regnet.lightning.datasets import PairDataset, Preprocess, case_name, list_name, resolve

__all__ = ["INTENSITIES", "LABEL_TYPES", "PAIRINGS", "PairDataModule"]

PAIRINGS = ("paired", "random", "atlas", "deform")
INTENSITIES = ("minmax", "percentile", "none")
LABEL_TYPES = ("masks", "index")
_OWNER = "PairDataModule"


def _rand_svf_deformd():
    try:
        from regnet.transforms import RandSVFDeformd
    except ImportError:
        from regnet.transforms.random import RandSVFDeformd
    return RandSVFDeformd


class PairDataModule(pl.LightningDataModule):
    """Image pairs for :class:`~regnet.lightning.RegistrationModule` (see the module docstring).

    Args:
        data_dir: ``pairing="paired"``: folder with ``moving_images/``, ``fixed_images/``
            (``moving_labels/``, ``fixed_labels/`` optional); relative to the data root.
        images: other pairings: image files (glob patterns allowed), relative to the data root.
        labels: label files parallel to ``images`` (``None`` entries for images without labels).
        pairing: ``"paired"``, ``"random"``, ``"atlas"`` or ``"deform"``.
        atlas, atlas_label: the fixed image (and its labels) of ``pairing="atlas"``.
        spatial_size: common grid ``[H, W(, D)]`` every image and label is resized onto
            (normalised coordinates); ``None``: the fixed image's grid.
        intensity: ``"minmax"`` (each image to [0, 1]), ``"percentile"`` (1st-99th percentile
            to [0, 1], clipped) or ``"none"``.
        label_type: ``"masks"`` (float channels; channel 0 e.g. an organ, further channels
            landmarks) or ``"index"`` (one integer label map, e.g. FreeSurfer aseg).
        label_channels: pad mask labels with empty channels to this many (so that cases with
            different numbers of landmarks batch together); ``None``: as stored.
        val_cases: names of the validation cases (file names without extension for
            ``paired``; paths under the data root without extension for lists); overrides
            ``val_fraction``.
        val_fraction: share of the cases held out for validation, drawn with ``seed``
            (deterministic); at least one case when > 0 and there are >= 2 cases.
        train_cases: train on these cases only (default: every case not in validation/test;
            may overlap ``val_cases`` when given explicitly).
        test_cases: cases for ``test``/``predict`` (excluded from training and validation);
            default: the validation cases.
        val_repeats: ``deform`` pairing: deformed copies per validation scan (fixed draws).
        train_repeats: ``deform`` pairing: pairs per training scan and epoch (fresh draws).
        rand_affine_prob, rotate_range, scale_range, translate_range: ``RandAffined``
            augmentation of each side independently (radians, fraction, voxels).
        deform_prob: probability of a random diffeomorphic deformation of the moving side
            (augmentation; ``deform`` pairing: always applied).
        deform_magnitude, deform_sigma: largest displacement and smoothing (voxels) of
            ``RandSVFDeformd``.
        deform_fixed: deform the fixed side too (independently): "two deformed copies".
        batch_size, num_workers: DataLoader settings (validation uses the same batch size).
        seed: seed of the split, the shuffling and the augmentation streams (each worker and
            each DDP rank gets its own stream, reproducibly).
        cache: keep loaded, resized images in memory (per process).
    """

    def __init__(
        self,
        data_dir: str | None = None,
        images: list[str] | None = None,
        labels: list[str | None] | None = None,
        pairing: str = "paired",
        atlas: str | None = None,
        atlas_label: str | None = None,
        spatial_size: list[int] | None = None,
        intensity: str = "minmax",
        label_type: str = "masks",
        label_channels: int | None = None,
        val_cases: list[str] | None = None,
        val_fraction: float = 0.2,
        train_cases: list[str] | None = None,
        test_cases: list[str] | None = None,
        val_repeats: int = 1,
        train_repeats: int = 1,
        rand_affine_prob: float = 0.0,
        rotate_range: float = 0.0,
        scale_range: float = 0.0,
        translate_range: float = 0.0,
        deform_prob: float = 0.0,
        deform_magnitude: float = 4.0,
        deform_sigma: float = 6.0,
        deform_fixed: bool = False,
        batch_size: int = 1,
        num_workers: int = 0,
        seed: int = 0,
        cache: bool = True,
    ) -> None:
        super().__init__()
        o = _OWNER
        _checks.string_choice(o, "pairing", pairing, PAIRINGS, error=ConfigError)
        _checks.string_choice(o, "intensity", intensity, INTENSITIES, error=ConfigError)
        _checks.string_choice(o, "label_type", label_type, LABEL_TYPES, error=ConfigError)
        if spatial_size is not None:
            spatial_size = _checks.int_sequence(o, "spatial_size", spatial_size, minimum=2, min_length=2,
                                                error=ConfigError)
            if len(spatial_size) > 3:
                raise ConfigError(f"{o}: spatial_size must have 2 or 3 entries, got {spatial_size!r}")
        if label_channels is not None:
            _checks.integer(o, "label_channels", label_channels, low=1, error=ConfigError)
        v = _checks.number(o, "val_fraction", val_fraction, low=0.0, error=ConfigError)
        if v >= 1:
            raise ConfigError(f"{o}: val_fraction must be in [0, 1), got {val_fraction!r}")
        _checks.integer(o, "val_repeats", val_repeats, low=1, error=ConfigError)
        _checks.integer(o, "train_repeats", train_repeats, low=1, error=ConfigError)
        for key in ("rand_affine_prob", "deform_prob"):
            p = _checks.number(o, key, locals()[key], low=0.0, error=ConfigError)
            if p > 1:
                raise ConfigError(f"{o}: {key} must be a probability in [0, 1], got {p!r}")
        for key in ("rotate_range", "scale_range", "translate_range", "deform_magnitude", "deform_sigma"):
            _checks.number(o, key, locals()[key], low=0.0, error=ConfigError)
        _checks.integer(o, "batch_size", batch_size, low=1, error=ConfigError)
        _checks.integer(o, "num_workers", num_workers, low=0, error=ConfigError)
        _checks.integer(o, "seed", seed, error=ConfigError)
        self.save_hyperparameters()
        self.spatial_size = spatial_size
        self.cases = self._find_cases()  # {name: {"image", "label"} or a pair}, sorted by name
        self.split = self._split()
        self.train_set = self.val_set = self.test_set = None

    # --- cases and split ----------------------------------------------------------------------

    def _find_cases(self) -> dict[str, dict]:
        h, o = self.hparams, _OWNER
        if h.pairing == "paired":
            if h.data_dir is None:
                raise ConfigError(f"{o}: pairing 'paired' needs data_dir (a folder with moving_images/ and "
                                  f"fixed_images/), got data_dir=None")
            if h.images is not None:
                raise ConfigError(f"{o}: pairing 'paired' reads data_dir; images must be None, got {h.images!r}")
            root = resolve(h.data_dir)
            if not (root / "fixed_images").is_dir() or not (root / "moving_images").is_dir():
                raise ConfigError(f"{o}: data_dir {h.data_dir!r} (resolved to '{root}') must be a folder with "
                                  f"moving_images/ and fixed_images/ (set REGNET_DATA for relative paths)")
            cases = {}
            for path in sorted((root / "fixed_images").iterdir()):
                name = case_name(path)
                moving = root / "moving_images" / path.name
                if not moving.exists():
                    continue
                case = {"moving": moving, "fixed": path, "moving_label": None, "fixed_label": None}
                ml, fl = root / "moving_labels" / path.name, root / "fixed_labels" / path.name
                if ml.exists() and fl.exists():
                    case["moving_label"], case["fixed_label"] = ml, fl
                cases[name] = case
            if not cases:
                raise ConfigError(f"{o}: data_dir '{root}' holds no case: no file of fixed_images/ has a "
                                  f"namesake in moving_images/")
            return cases
        if h.data_dir is not None:
            raise ConfigError(f"{o}: pairing {h.pairing!r} reads images; data_dir must be None, got {h.data_dir!r}")
        if not h.images:
            raise ConfigError(f"{o}: pairing {h.pairing!r} needs images (a list of files or glob patterns), "
                              f"got {h.images!r}")
        paths = []
        for pattern in h.images:
            p = resolve(pattern)
            found = sorted(Path(m) for m in glob.glob(str(p))) if glob.has_magic(str(p)) else [p]
            if not found or not all(f.exists() for f in found):
                raise ConfigError(f"{o}: images entry {pattern!r} (resolved to '{p}') matches no file")
            paths += found
        labels = [None] * len(paths)
        if h.labels is not None:
            if len(h.labels) != len(paths):
                raise ConfigError(f"{o}: labels must have one entry per image ({len(paths)} images), "
                                  f"got {len(h.labels)} entries")
            labels = [None if x is None else resolve(x) for x in h.labels]
            for given, p in zip(h.labels, labels, strict=True):
                if p is not None and not p.exists():
                    raise ConfigError(f"{o}: labels entry {given!r} (resolved to '{p}') does not exist")
        cases = {}
        for path, label in zip(paths, labels, strict=True):
            cases[list_name(path)] = {"image": path, "label": label}
        if h.pairing == "atlas":
            if h.atlas is None:
                raise ConfigError(f"{o}: pairing 'atlas' needs atlas (the fixed image), got atlas=None")
            self.atlas = resolve(h.atlas)
            self.atlas_label = None if h.atlas_label is None else resolve(h.atlas_label)
            for key, p in (("atlas", self.atlas), ("atlas_label", self.atlas_label)):
                if p is not None and not p.exists():
                    raise ConfigError(f"{o}: {key} {getattr(h, key)!r} (resolved to '{p}') does not exist")
        if h.pairing == "random" and len(cases) < 2:
            raise ConfigError(f"{o}: pairing 'random' needs at least 2 images, got {len(cases)}")
        return dict(sorted(cases.items()))

    def _names(self, key: str) -> list[str] | None:
        given = getattr(self.hparams, key)
        if given is None:
            return None
        unknown = [n for n in given if n not in self.cases]
        if unknown:
            raise ConfigError(f"{_OWNER}: {key} names unknown cases {unknown!r}; expected names from "
                              f"{list(self.cases)!r}")
        return list(given)

    def _split(self) -> dict[str, list[str]]:
        names = list(self.cases)
        test = self._names("test_cases") or []
        pool = [n for n in names if n not in test]
        val = self._names("val_cases")
        if val is None:
            n_val = round(self.hparams.val_fraction * len(pool))
            if self.hparams.val_fraction > 0 and len(pool) >= 2:
                n_val = min(max(n_val, 1), len(pool) - 1)
            val = sorted(random.Random(self.hparams.seed).sample(pool, n_val))
        train = self._names("train_cases") or [n for n in pool if n not in val]
        if not train:
            raise ConfigError(f"{_OWNER}: no training case left: {len(names)} cases, val_cases={val!r}, "
                              f"test_cases={test!r}")
        return {"train": train, "val": val, "test": test or val}

    def pairs(self, stage: str) -> list[dict]:
        """The pairs (paths) of ``stage`` (``"train"``, ``"val"`` or ``"test"``)."""
        h, names = self.hparams, self.split[stage]
        if h.pairing == "paired":
            return [{"case": n, **self.cases[n]} for n in names]

        def side(name):
            c = self.cases[name]
            return c["image"], c["label"]

        out = []
        if h.pairing == "atlas":
            for n in names:
                image, label = side(n)
                out.append({"case": n, "moving": image, "moving_label": label, "fixed": self.atlas,
                            "fixed_label": self.atlas_label})
        elif h.pairing == "deform":
            repeats = h.train_repeats if stage == "train" else h.val_repeats
            for n in names:
                image, label = side(n)
                for r in range(repeats):
                    out.append({"case": n if repeats == 1 else f"{n}#{r}", "moving": image, "moving_label": label,
                                "fixed": image, "fixed_label": label})
        else:  # random
            if stage == "train":
                partners = [(a, b) for a in names for b in names if a != b]
            else:
                others = names if len(names) >= 2 else self.split["train"]
                partners = [(n, others[(others.index(n) + 1) % len(others)] if n in others else others[0])
                            for n in names]
            for a, b in partners:
                (mi, ml), (fi, fl) = side(a), side(b)
                out.append({"case": f"{a}->{b}", "moving": mi, "moving_label": ml, "fixed": fi, "fixed_label": fl})
        if stage == "train" and not out:
            raise ConfigError(f"{_OWNER}: pairing {h.pairing!r} gives no training pair from {names!r}")
        return out

    # --- transforms -----------------------------------------------------------------------------

    def _label_mode(self) -> str:
        return "nearest" if self.hparams.label_type == "index" else "bilinear"

    def random_transform(self, train: bool):
        """The MONAI dict transforms applied to each pair (``None`` if there is nothing random)."""
        from monai.transforms import Compose, RandAffined

        h = self.hparams
        steps = []
        if train and h.rand_affine_prob > 0:
            for side in ("moving", "fixed"):
                steps.append(RandAffined(
                    keys=(side, f"{side}_label"), prob=h.rand_affine_prob, rotate_range=h.rotate_range,
                    scale_range=h.scale_range, translate_range=h.translate_range,
                    mode=("bilinear", self._label_mode()), padding_mode="zeros", allow_missing_keys=True))
        deform_moving = h.pairing == "deform" or (train and h.deform_prob > 0)
        if deform_moving:
            RandSVFDeformd = _rand_svf_deformd()
            prob = 1.0 if h.pairing == "deform" else h.deform_prob
            sides = ["moving"] + (["fixed"] if h.deform_fixed else [])
            for side in sides:
                steps.append(RandSVFDeformd(
                    keys=(side, f"{side}_label"), mode=("bilinear", self._label_mode()), padding_mode="zeros",
                    prob=prob, magnitude=h.deform_magnitude, sigma=h.deform_sigma, ddf_key=f"_{side}_ddf",
                    allow_missing_keys=True))
        return Compose(steps) if steps else None

    # --- Lightning hooks ------------------------------------------------------------------------

    def setup(self, stage: str | None = None) -> None:
        h = self.hparams
        rank = self.trainer.global_rank if self.trainer is not None else 0
        if getattr(self, "preprocess", None) is None:
            self.preprocess = Preprocess(h.intensity, h.label_type, h.label_channels, h.cache)
        size = self.spatial_size
        if stage in (None, "fit"):
            train_transform = self.random_transform(train=True)
            if train_transform is not None:
                train_transform.set_random_state(seed=(h.seed + 1000003 * rank) % (2**32))
            self.train_set = PairDataset(self.pairs("train"), self.preprocess, size, train_transform)
        if stage in (None, "fit", "validate"):
            self.val_set = PairDataset(self.pairs("val"), self.preprocess, size, self.random_transform(train=False),
                                       seed=h.seed + 7919)
        if stage in (None, "test", "predict"):
            self.test_set = PairDataset(self.pairs("test"), self.preprocess, size, self.random_transform(train=False),
                                        seed=h.seed + 104729)

    def _loader(self, dataset, shuffle: bool) -> DataLoader:
        from monai.data.utils import worker_init_fn

        h = self.hparams
        generator = torch.Generator()
        generator.manual_seed(h.seed)
        return DataLoader(dataset, batch_size=h.batch_size, shuffle=shuffle, num_workers=h.num_workers,
                          worker_init_fn=worker_init_fn if h.num_workers else None, generator=generator,
                          persistent_workers=h.num_workers > 0, drop_last=False)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False)
