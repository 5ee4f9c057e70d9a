"""Files to tensors for :class:`~regnet.lightning.PairDataModule`: paths under the data root,
:class:`Preprocess` (MONAI array transforms, cached) and :class:`PairDataset` (pairs of paths ->
preprocessed tensors -> the pair's random transforms).

Every image is loaded channel-first (``LoadImage(ensure_channel_first=True)``, 4D files are
channel-last: ``(X, Y, Z, C)`` -> ``(C, X, Y, Z)``), intensity-scaled (``intensity``) and
resized onto the common grid ``spatial_size`` (MONAI ``Resize``: normalised coordinates, so
images covering one field of view on different grids line up; ``None``: the fixed image's own
grid). Axes are never flipped or reoriented. Labels are either ``"masks"`` (float channels,
resized linearly, zero-padded to ``label_channels``) or ``"index"`` (one integer label map,
resized and warped with nearest-neighbour sampling).

Relative paths are resolved against the data root: ``$REGNET_DATA`` if set, else the shared
data folder next to the repository (``<repo>/../shared/data``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from regnet._checks import ConfigError

__all__ = ["PairDataset", "Preprocess", "case_name", "data_root", "list_name", "resolve"]

_EXTENSIONS = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd")
_OWNER = "PairDataModule"

def data_root() -> Path:
    """``$REGNET_DATA``, else ``<repo>/../shared/data`` (the folder of the shared real images)."""
    env = os.environ.get("REGNET_DATA")
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[3] / "shared" / "data"


def resolve(path: str | os.PathLike) -> Path:
    """``path`` with ``~`` and ``$VARS`` expanded; relative paths are taken under :func:`data_root`."""
    p = Path(os.path.expandvars(os.path.expanduser(str(path))))
    return p if p.is_absolute() else data_root() / p


def case_name(path: Path) -> str:
    name = path.name
    for ext in _EXTENSIONS:
        if name.endswith(ext):
            return name[: -len(ext)]
    return path.stem


def list_name(path: Path) -> str:
    """Case name of a listed image: its path under the data root without the extension."""
    try:
        rel = path.resolve().relative_to(data_root().resolve())
        return str(rel.parent / case_name(path)) if str(rel.parent) != "." else case_name(path)
    except ValueError:
        return case_name(path)


class Preprocess:
    """Load, scale and resize one file (MONAI ``LoadImage`` / ``ScaleIntensity`` /
    ``ScaleIntensityRangePercentiles`` / ``Resize``), cached per ``(path, size)``.

    ``image(path, size)`` -> float32 ``(C, *size)``; ``label(path, size)`` -> float32 masks
    ``(label_channels or L, *size)`` or int64 ``(1, *size)``; ``size=None`` keeps the file's grid.
    """

    def __init__(self, intensity: str, label_type: str, label_channels: int | None, cache: bool = True) -> None:
        from monai.transforms import LoadImage, ScaleIntensity, ScaleIntensityRangePercentiles

        self.load = LoadImage(image_only=True, ensure_channel_first=True, dtype=np.float32)
        self.scale = {
            "minmax": ScaleIntensity(minv=0.0, maxv=1.0, channel_wise=True),
            "percentile": ScaleIntensityRangePercentiles(1, 99, 0.0, 1.0, clip=True, channel_wise=True),
            "none": None,
        }[intensity]
        self.label_type, self.label_channels = label_type, label_channels
        self.cache = {} if cache else None

    def _cached(self, key, make):
        if self.cache is None:
            return make()
        if key not in self.cache:
            self.cache[key] = make()
        return self.cache[key]

    def shape(self, path: Path) -> tuple[int, ...]:
        return tuple(self._raw(path).shape[1:])

    def _raw(self, path: Path) -> torch.Tensor:
        def make():
            data = self.load(str(path))
            return torch.as_tensor(np.asarray(data), dtype=torch.float32)
        return self._cached(("raw", str(path)), make)

    @staticmethod
    def _resize(x: torch.Tensor, size, mode: str, anti_aliasing: bool) -> torch.Tensor:
        from monai.transforms import Resize

        if size is None or tuple(size) == tuple(x.shape[1:]):
            return x
        if len(size) != x.dim() - 1:
            raise ConfigError(f"{_OWNER}: spatial_size must have one entry per spatial axis of the images "
                              f"({x.dim() - 1}), got {list(size)!r}")
        if mode == "linear":
            mode = "bilinear" if len(size) == 2 else "trilinear"
        out = Resize(tuple(size), mode=mode, anti_aliasing=anti_aliasing)(x)
        return torch.as_tensor(out).as_subclass(torch.Tensor)

    def image(self, path: Path, size=None) -> torch.Tensor:
        def make():
            x = self._raw(path)
            if self.scale is not None:
                x = torch.as_tensor(self.scale(x)).as_subclass(torch.Tensor).float()
            return self._resize(x, size, "linear", anti_aliasing=True).contiguous()
        return self._cached(("image", str(path), None if size is None else tuple(size)), make)

    def label(self, path: Path, size=None) -> torch.Tensor:
        def make():
            x = self._raw(path)
            if self.label_type == "index":
                if x.shape[0] != 1:
                    raise ValueError(f"{_OWNER}: label_type 'index' needs one integer label map per file, got "
                                     f"{x.shape[0]} channels in {path}; use label_type 'masks' for multi-channel masks")
                return self._resize(x, size, "nearest", anti_aliasing=False).round().long().contiguous()
            x = self._resize(x, size, "linear", anti_aliasing=False).clamp(0, 1)
            if self.label_channels is not None:
                if x.shape[0] > self.label_channels:
                    raise ValueError(f"{_OWNER}: label_channels={self.label_channels} but {path} has {x.shape[0]} "
                                     f"label channels; raise label_channels")
                pad = x.new_zeros((self.label_channels - x.shape[0], *x.shape[1:]))
                x = torch.cat([x, pad])
            return x.float().contiguous()
        return self._cached(("label", str(path), None if size is None else tuple(size)), make)


def _plain(x):
    if isinstance(x, torch.Tensor):
        return x.as_subclass(torch.Tensor)
    return x


class PairDataset(Dataset):
    """Pairs ``{"case", "moving", "fixed"[, "moving_label", "fixed_label"]}`` (paths) ->
    preprocessed tensors, then ``transform`` (MONAI dict transforms on the pair).

    ``seed``: when given, the transform's random state is reset to ``seed + index`` before
    each item (a fixed draw per item: validation); otherwise it runs on (its workers' seeded
    streams, see :func:`monai.data.utils.worker_init_fn`).
    """

    def __init__(self, pairs: list[dict], preprocess: Preprocess, spatial_size=None,
                 transform: Callable | None = None, seed: int | None = None) -> None:
        self.pairs, self.preprocess, self.spatial_size = pairs, preprocess, spatial_size
        self.transform, self.seed = transform, seed

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict:
        pair = self.pairs[index]
        prep = self.preprocess
        size = self.spatial_size or prep.shape(pair["fixed"])
        item = {"case": pair["case"], "moving": prep.image(pair["moving"], size),
                "fixed": prep.image(pair["fixed"], size)}
        if pair.get("moving_label") is not None and pair.get("fixed_label") is not None:
            item["moving_label"] = prep.label(pair["moving_label"], size)
            item["fixed_label"] = prep.label(pair["fixed_label"], size)
        if self.transform is not None:
            if self.seed is not None:
                self.transform.set_random_state(seed=(self.seed + index) % (2**32))
            item = self.transform(item)
        return {k: _plain(v) for k, v in item.items() if not str(k).startswith("_")}
