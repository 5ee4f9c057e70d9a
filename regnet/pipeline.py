"""File-to-file registration: what ``regnet register`` and ``regnet apply`` run.

**Register** (:func:`register_files`). Both images are read with their world geometry
(:func:`regnet.io.load_image`), their intensities normalised for the optimisation, and the
moving image brought onto the fixed grid through the headers (:mod:`regnet.io.world`). Then,
on the fixed grid:

1. ``affine`` (``"affine"``, ``"affine+syn"``): the moving image is first translated in
   world space so that the two intensity centres of mass coincide (``M0``, ANTs' default
   start; :func:`world_centre_of_mass` on the full images, so headers that barely overlap do
   not crop the moving image), resampled through ``M0`` onto the fixed grid, and registered
   there with :class:`~regnet.registration.affine.AffineRegistration`. Its ``theta`` becomes
   a world matrix ``T`` (:func:`regnet.io.world.theta_to_world`) and ``M = M0 @ T`` (fixed
   world -> moving world) is the whole linear part.
2. ``syn`` (``"syn"``, ``"affine+syn"``): :class:`~regnet.registration.syn.SyNRegistration`
   of the moving image resampled once through ``M`` onto the fixed image, giving the DDF
   ``u`` (fixed voxels) and its inverse.

The total transform maps fixed voxel ``x`` to the moving world point ``M A_f (x + u(x))``
(``A_f``: fixed affine). It is stored as the forward displacement field ``ddf.nii.gz`` on
the fixed grid (:func:`regnet.io.save_ddf`: ITK/ANTs layout, world mm, LPS, pull), with
``affine.txt`` = ``M`` when there is an affine part. ``inverse_ddf.nii.gz`` (with SyN) is
SyN's inverse field, also on the fixed grid and in the same layout: the fixed image warped by
it lines up with the moving image resampled through ``M`` alone. Every output image is sampled from the
*original* moving image (its own grid and intensities) at those world points, in one
interpolation (:func:`sample_moving`), exactly as :func:`apply_transform` does; the warped
image is computed from the field read back from ``ddf.nii.gz``, so ``regnet apply`` of the
moving image reproduces it.

**Output folder.** Everything is written into a temporary sibling folder
(``.DIR.xxxxxxxx.tmp``) that is renamed to ``DIR`` once complete; a failed run removes it
(and any parent folders it created) and leaves an existing ``DIR`` untouched. An existing
``DIR`` is replaced as a whole, but only on success and only when it is empty or an earlier
regnet output (a regnet ``report.json`` and nothing but the names regnet writes,
:data:`OUTPUT_NAMES`); any other existing folder is refused, so a mistyped ``--out`` cannot
delete unrelated files.

**Intensities.** For the optimisation each image is mapped linearly from its 0.5 and 99.5
percentiles to [0, 1] and clipped (:data:`PERCENTILES`); the reported global NCC and MSE are
computed on those normalised images. Written images keep the moving image's own intensities.
Outside the moving image's field of view samples are 0.

**Config** (:func:`load_config`): a YAML file (or a dict) with sections ``affine:`` and
``syn:`` whose keys are the constructor arguments of the two registration classes. Losses and
optimisers are given by name (``dissimilarity_function: mse | lncc | mi``, or a mapping
``{name: lncc, kernel_size: 9}``; ``regularization_function: diffusion | bending | elastic``;
``optimizer: adam | adamw | sgd | rmsprop``). Unknown keys raise :class:`ConfigError`
naming the key.
"""

from __future__ import annotations

import contextlib
import difflib
import inspect
import json
import math
import os
import secrets
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from regnet import __version__, ops
from regnet.io import (
    Image,
    load_affine,
    load_ddf,
    load_image,
    save_affine,
    save_ddf,
    save_image,
    theta_to_world,
    voxel_to_normalised,
    world_to_theta,
)
from regnet.io.image import IMAGE_2D_SUFFIXES, _suffix
from regnet.metrics import jacobian_stats
from regnet.registration._common import cpu_threads_for
from regnet.registration.affine import AffineRegistration
from regnet.registration.syn import SyNRegistration

TRANSFORMS = ("affine", "syn", "affine+syn")
INTERPOLATIONS = ("linear", "nearest")
#: Percentiles mapped to 0 and 1 by the intensity normalisation used for the optimisation.
PERCENTILES = (0.5, 99.5)
REPORT_NAME = "report.json"


class ConfigError(ValueError):
    """A registration config (YAML file or dict) with an unknown key or a bad value."""


# --- config ---------------------------------------------------------------------------------

_CLASSES = {"affine": AffineRegistration, "syn": SyNRegistration}
# Constructor arguments a config file cannot set, and why.
_NOT_IN_CONFIG = {
    "verbose": "progress output is set on the command line (--quiet)",
    "is_3d": "the dimension follows the images",
    "init_translation": "initial parameters are tensors; use 'init'",
    "init_rotation": "initial parameters are tensors; use 'init'",
    "init_zoom": "initial parameters are tensors; use 'init'",
    "init_shear": "initial parameters are tensors; use 'init'",
}


def _loss_classes() -> dict[str, Any]:
    from regnet import losses

    return {
        "mse": losses.MSELoss,
        "lncc": losses.LocalNCCLoss,
        "local_ncc": losses.LocalNCCLoss,
        "mi": losses.GlobalMILoss,
        "diffusion": losses.DiffusionLoss,
        "bending": losses.BendingEnergyLoss,
        "elastic": losses.LinearElasticityLoss,
    }


_SIMILARITIES = ("mse", "lncc", "local_ncc", "mi")
_REGULARISERS = ("diffusion", "bending", "elastic")
_OPTIMIZERS = {"adam": "Adam", "adamw": "AdamW", "sgd": "SGD", "rmsprop": "RMSprop"}


def _named_object(where: str, key: str, value, names: tuple[str, ...]):
    """``"lncc"`` or ``{"name": "lncc", **kwargs}`` -> the loss module."""
    if isinstance(value, str):
        name, kwargs = value, {}
    elif isinstance(value, Mapping) and "name" in value:
        kwargs = dict(value)
        name = kwargs.pop("name")
    else:
        raise ConfigError(f"{where}: '{key}' must be one of {', '.join(names)} or a mapping with 'name' "
                          f"and its arguments, got {value!r}")
    if not isinstance(name, str) or name.lower() not in names:
        raise ConfigError(f"{where}: '{key}' has unknown name {name!r}; expected one of {', '.join(names)}")
    cls = _loss_classes()[name.lower()]
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{where}: '{key}' ({name}): {error}") from None


def _convert(where: str, section: str, key: str, value):
    full = f"{section}.{key}"
    if key == "dissimilarity_function":
        return _named_object(where, full, value, _SIMILARITIES)
    if key == "regularization_function":
        return _named_object(where, full, value, _REGULARISERS)
    if key == "optimizer":
        if not isinstance(value, str) or value.lower() not in _OPTIMIZERS:
            raise ConfigError(f"{where}: '{full}' must be one of {', '.join(_OPTIMIZERS)}, got {value!r}")
        return getattr(torch.optim, _OPTIMIZERS[value.lower()])
    if isinstance(value, list):
        return tuple(value)
    return value


def _jsonable(value):
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if inspect.isclass(value):
        return value.__name__
    return repr(value)


@dataclass
class Config:
    """A validated config: constructor keyword arguments per stage, and what to report."""

    kwargs: dict[str, dict[str, Any]] = field(default_factory=lambda: {"affine": {}, "syn": {}})
    source: str | None = None
    given: dict[str, dict[str, Any]] = field(default_factory=lambda: {"affine": {}, "syn": {}})

    def build(self, stage: str, verbose: bool):
        return _CLASSES[stage](verbose=verbose, **self.kwargs[stage])

    def settings(self, stage: str) -> dict[str, Any]:
        """Every constructor argument of ``stage`` (given or default), JSON-ready."""
        params = inspect.signature(_CLASSES[stage].__init__).parameters
        built = self.build(stage, verbose=False)
        out = {}
        for name, param in params.items():
            if name == "self" or name in _NOT_IN_CONFIG:
                continue
            value = self.given[stage][name] if name in self.given[stage] else param.default
            if value is None and name.endswith("_function"):  # a default the class fills in
                value = getattr(built, name, None)
            out[name] = _jsonable(value)
        return out


def load_config(config=None) -> Config:
    """Read and check a registration config.

    Args:
        config: ``None`` (every default), a :class:`Config`, a mapping, or the path of a YAML
            file with the optional sections ``affine:`` and ``syn:``; their keys are the
            constructor arguments of :class:`AffineRegistration` and :class:`SyNRegistration`
            (see the module docstring for losses and optimisers given by name).

    Raises:
        ConfigError: unreadable YAML, an unknown section or key (named in the message), or a
            value the registration class rejects.
        FileNotFoundError: no such config file.
    """
    if isinstance(config, Config):
        return config
    where = "config"
    if config is None:
        data = {}
    elif isinstance(config, Mapping):
        data = dict(config)
    elif isinstance(config, (str, os.PathLike)):
        import yaml

        path = Path(config)
        where = f"config {path}"
        if not path.is_file():
            raise FileNotFoundError(f"{where}: no such file")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as error:
            raise ConfigError(f"{where}: not valid YAML ({error})") from None
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where}: expected a mapping with sections 'affine:' and/or 'syn:', "
                              f"got {type(data).__name__}")
    else:
        raise TypeError(f"load_config: config must be None, a mapping or a YAML path, got {type(config).__name__}")

    result = Config(source=None if isinstance(config, Mapping) or config is None else str(config))
    for section, values in data.items():
        if section not in _CLASSES:
            hint = difflib.get_close_matches(str(section), list(_CLASSES), n=1)
            raise ConfigError(
                f"{where}: unknown key '{section}' (expected the sections 'affine' and 'syn')"
                + (f"; did you mean '{hint[0]}'?" if hint else "")
            )
        if values is None:
            continue
        if not isinstance(values, Mapping):
            raise ConfigError(f"{where}: section '{section}' must be a mapping of arguments, got {values!r}")
        cls = _CLASSES[section]
        allowed = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
        for key, value in values.items():
            if key in _NOT_IN_CONFIG:
                raise ConfigError(f"{where}: key '{section}.{key}' cannot be set in a config: {_NOT_IN_CONFIG[key]}")
            if key not in allowed:
                settable = [p for p in allowed if p not in _NOT_IN_CONFIG]
                hint = difflib.get_close_matches(str(key), settable, n=1)
                raise ConfigError(
                    f"{where}: unknown key '{section}.{key}'"
                    + (f" (did you mean '{hint[0]}'?)" if hint else "")
                    + f"; {cls.__name__} takes: {', '.join(settable)}"
                )
            result.kwargs[section][key] = _convert(where, section, key, value)
            result.given[section][key] = value
        try:  # let the class check the values now, not after loading the images
            result.build(section, verbose=False)
        except (TypeError, ValueError) as error:
            raise ConfigError(f"{where}: section '{section}': {error}") from None
    return result


# --- geometry and sampling ------------------------------------------------------------------

def _voxel_grid(shape, device) -> torch.Tensor:
    """Voxel indices ``(ndim, *shape)`` in float64."""
    axes = [torch.arange(n, dtype=torch.float64, device=device) for n in shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"))


def _apply_matrix(matrix: np.ndarray, points: torch.Tensor) -> torch.Tensor:
    """``(ndim+1)`` square ``matrix`` applied to points ``(ndim, *spatial)`` (float64)."""
    ndim = points.shape[0]
    m = torch.as_tensor(matrix, dtype=torch.float64, device=points.device)
    out = torch.einsum("ij,j...->i...", m[:ndim, :ndim], points)
    return out + m[:ndim, ndim].view(ndim, *[1] * ndim)


def total_ddf(matrix: np.ndarray | None, syn_ddf: torch.Tensor | None, fixed_shape, fixed_affine,
              device=None) -> torch.Tensor:
    """The DDF ``(1, ndim, *fixed_shape)`` (fixed voxels, float64) of ``x -> M A_f (x + u(x))``.

    ``matrix`` ``M`` (world, fixed -> moving; ``None`` = identity) and ``syn_ddf`` ``u``
    (``(1, ndim, *fixed_shape)`` voxels; ``None`` = 0). Saved with
    :func:`regnet.io.save_ddf` it maps fixed world point ``p`` to moving world point
    ``p + d(p)``.
    """
    fixed_affine = np.asarray(fixed_affine, dtype=np.float64)
    if device is None:
        device = syn_ddf.device if syn_ddf is not None else "cpu"
    x = _voxel_grid(fixed_shape, device)
    points = x if syn_ddf is None else x + syn_ddf[0].to(device, torch.float64)
    if matrix is not None:
        voxel_map = np.linalg.inv(fixed_affine) @ np.asarray(matrix, dtype=np.float64) @ fixed_affine
        points = _apply_matrix(voxel_map, points)
    return (points - x)[None]


def sample_moving(moving: Image, ddf: torch.Tensor, fixed_affine, mode: str = "bilinear",
                  padding_mode: str = "zeros") -> torch.Tensor:
    """Sample the moving image at the world points of a total DDF on the fixed grid.

    Fixed voxel ``x`` -> world ``A_f (x + ddf(x))`` -> moving voxel (``A_m^-1``) ->
    normalised (``align_corners=True``) -> :func:`regnet.ops.grid_sample`. This is how
    ``regnet apply`` maps any image of the moving subject, on any grid.

    Args:
        moving: :class:`regnet.io.Image` with ``data`` ``(1, C, *spatial)``; float32/float64
            data is sampled in its dtype, integer data in float64 (exact labels with
            ``mode="nearest"``), half precision in float32.
        ddf: ``(1, ndim, *fixed_shape)`` voxels of the fixed grid (:func:`regnet.io.load_ddf`).
        fixed_affine: the fixed grid's voxel -> world matrix.
        mode: ``"bilinear"`` or ``"nearest"``.

    Returns:
        ``(1, C, *fixed_shape)`` on ``ddf``'s device, in the sampling dtype.
    """
    ndim = ddf.shape[1]
    if moving.ndim != ndim:
        raise ValueError(f"sample_moving: the moving image is {moving.ndim}D but the transform is {ndim}D")
    device = ddf.device
    data = moving.data.to(device)
    if not data.is_floating_point() or data.dtype not in (torch.float32, torch.float64):
        data = data.to(torch.float64 if not data.is_floating_point() else torch.float32)
    to_moving = voxel_to_normalised(moving.spatial_shape, True) @ np.linalg.inv(moving.affine) @ np.asarray(
        fixed_affine, dtype=np.float64)
    points = _voxel_grid(ddf.shape[2:], device) + ddf[0].to(torch.float64)
    grid = _apply_matrix(to_moving, points).movedim(0, -1)[None].to(data.dtype)
    return ops.grid_sample(data, grid, mode=mode, padding_mode=padding_mode, align_corners=True)


def world_centre_of_mass(image: torch.Tensor, affine) -> np.ndarray:
    """Intensity-weighted centre ``(ndim,)`` in world mm of ``image`` ``(1, C, *spatial)``
    (negative values weigh 0; the channels are summed), from the per-axis marginals."""
    weights = image[0].double().clamp(min=0).sum(0)
    ndim = weights.dim()
    total = float(weights.sum())
    if total <= 0:
        voxel = (np.array(weights.shape, dtype=np.float64) - 1) / 2  # no mass: the grid centre
    else:
        voxel = np.empty(ndim)
        for axis in range(ndim):
            marginal = weights.sum(dim=tuple(a for a in range(ndim) if a != axis))
            index = torch.arange(marginal.numel(), dtype=torch.float64, device=marginal.device)
            voxel[axis] = float((marginal * index).sum()) / total
    affine = np.asarray(affine, dtype=np.float64)
    return affine[:ndim, :ndim] @ voxel + affine[:ndim, ndim]


# --- intensities and similarity -------------------------------------------------------------

def intensity_range(image: torch.Tensor) -> tuple[float, float]:
    """The robust range (:data:`PERCENTILES`) of an image; min/max when that is empty."""
    values = image.detach().to("cpu", torch.float64).numpy().ravel()
    if not np.all(np.isfinite(values)):
        raise ValueError("the image contains NaN or infinite values")
    low, high = (float(v) for v in np.percentile(values, PERCENTILES))
    if not high > low:
        low, high = float(values.min()), float(values.max())
    return low, high


def normalise(image: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """``(image - low) / (high - low)`` clipped to [0, 1] (constant image: zeros)."""
    if not high > low:
        return torch.zeros_like(image)
    return ((image - low) / (high - low)).clamp(0, 1)


def global_ncc(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson correlation of all voxels of two images."""
    a, b = a.double().flatten(), b.double().flatten()
    a, b = a - a.mean(), b - b.mean()
    denominator = float(a.norm() * b.norm())
    return float((a * b).sum()) / denominator if denominator > 0 else math.nan


def mse(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a.double() - b.double()) ** 2).mean())


# --- registration in memory -----------------------------------------------------------------

@dataclass
class Registration:
    """What :func:`register_images` found; :func:`write_outputs` writes it."""

    fixed: Image
    moving: Image
    transform: str
    matrix: np.ndarray | None  # world, fixed -> moving (None: no affine part)
    ddf: torch.Tensor  # total forward DDF (1, ndim, *fixed), fixed voxels, float64
    syn_inverse: torch.Tensor | None  # SyN inverse DDF on the fixed grid (None without SyN)
    ranges: dict[str, tuple[float, float]]
    report: dict[str, Any]
    saved_ddf: torch.Tensor | None = None  # the DDF as read back from ddf.nii.gz


def _device(device) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"invalid device {device!r}: {error}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but CUDA is not available to torch")
    return dev


def _grid_info(image: Image) -> dict[str, Any]:
    return {
        "path": None if image.path is None else str(image.path),
        "shape": list(image.spatial_shape),
        "channels": int(image.data.shape[1]),
        "spacing": [round(s, 6) for s in image.spacing],
        "affine": image.affine.tolist(),
    }


def register_images(fixed: Image, moving: Image, transform: str = "affine+syn", config=None,
                    device="cpu", verbose: bool = True) -> Registration:
    """Register two :class:`regnet.io.Image` s in memory (see the module docstring).

    Returns a :class:`Registration` with the world matrix, the total forward DDF on the fixed
    grid (float64, fixed voxels), the SyN inverse DDF, and the report so far (settings,
    loss history and time per level, intensity ranges, similarity before registration).
    """
    if not isinstance(fixed, Image):
        raise TypeError(f"register_images: fixed must be a regnet.io.Image, got {type(fixed).__name__}")
    with cpu_threads_for(fixed.data):  # small images: one intra-op thread (see there)
        return _register_images(fixed, moving, transform, config, device, verbose)


def _register_images(fixed: Image, moving: Image, transform: str, config, device, verbose: bool) -> Registration:
    start = time.perf_counter()
    if transform not in TRANSFORMS:
        raise ValueError(f"transform must be one of {', '.join(TRANSFORMS)}, got {transform!r}")
    config = load_config(config)
    dev = _device(device)
    for name, image in (("fixed", fixed), ("moving", moving)):
        if not isinstance(image, Image):
            raise TypeError(f"register_images: {name} must be a regnet.io.Image, got {type(image).__name__}")
    if fixed.ndim != moving.ndim:
        raise ValueError(f"the fixed image is {fixed.ndim}D {fixed.spatial_shape} but the moving image is "
                         f"{moving.ndim}D {moving.spatial_shape}")
    if fixed.data.shape[1] != moving.data.shape[1]:
        raise ValueError(f"the fixed image has {fixed.data.shape[1]} channels but the moving image has "
                         f"{moving.data.shape[1]}")
    if min(fixed.spatial_shape) < 2:
        raise ValueError(f"the fixed grid must have at least 2 voxels along every axis, got {fixed.spatial_shape}")
    shape, ndim = fixed.spatial_shape, fixed.ndim

    ranges = {"fixed": intensity_range(fixed.data), "moving": intensity_range(moving.data)}
    fixed_n = normalise(fixed.data.to(dev, torch.float32), *ranges["fixed"])
    moving_n = normalise(moving.data.to(dev, torch.float32), *ranges["moving"])
    identity = np.eye(ndim + 1)

    def through(matrix) -> torch.Tensor:  # normalised moving on the fixed grid through `matrix`
        theta = world_to_theta(matrix, shape, fixed.affine, moving.spatial_shape, moving.affine, True)
        return ops.affine_transform(moving_n, theta.to(dev, torch.float32), shape=shape,
                                    padding_mode="zeros", align_corners=True)

    with torch.no_grad():
        headers = through(identity)
    report: dict[str, Any] = {
        "regnet_version": __version__,
        "transform": transform,
        "device": str(dev),
        "config": config.source,
        "settings": {},
        "fixed": _grid_info(fixed),
        "moving": _grid_info(moving),
        "intensity_range": {k: list(v) for k, v in ranges.items()},
        "metrics": {"global_ncc": {"before": global_ncc(fixed_n, headers)},
                    "mse": {"before": mse(fixed_n, headers)}},
        "loss_history": {},
        "time_s": {"prepare": time.perf_counter() - start},
    }

    matrix = None
    if "affine" in transform:
        # Start from the world translation that superposes the two centres of mass (ANTs'
        # default start): images whose headers barely overlap would otherwise be cropped on
        # the fixed grid before the affine stage sees them.
        start_matrix = np.eye(ndim + 1)
        start_matrix[:ndim, ndim] = (world_centre_of_mass(moving_n, moving.affine)
                                     - world_centre_of_mass(fixed_n, fixed.affine))
        with torch.no_grad():
            started = through(start_matrix)
        reg = config.build("affine", verbose)
        reg(started, fixed_n, return_moved=False)
        theta = reg.get_affine()
        found = theta_to_world(theta.double(), shape, fixed.affine, shape, fixed.affine, reg.align_corners)
        matrix = start_matrix @ found
        report["start_translation_mm"] = start_matrix[:ndim, ndim].tolist()
        report["settings"]["affine"] = config.settings("affine")
        report["loss_history"]["affine"] = reg.loss_history
        report["time_s"]["affine"] = {"init": reg.init_time, "levels": reg.level_times,
                                      "total": reg.init_time + sum(reg.level_times)}
    syn_ddf = syn_inverse = None
    if "syn" in transform:
        with torch.no_grad():
            start_syn = time.perf_counter()
            affined = headers if matrix is None else through(matrix)
            prepare = time.perf_counter() - start_syn
        reg = config.build("syn", verbose)
        start_syn = time.perf_counter()
        reg(affined, fixed_n, return_moved=False)
        syn_ddf, syn_inverse = reg.fields()
        fields_time = time.perf_counter() - start_syn - sum(reg.level_times)
        report["settings"]["syn"] = config.settings("syn")
        report["loss_history"]["syn"] = reg.loss_history
        report["time_s"]["syn"] = {"levels": reg.level_times, "total": prepare + sum(reg.level_times) + fields_time}
    ddf = total_ddf(matrix, syn_ddf, shape, fixed.affine, device=dev)
    report["time_s"]["registration"] = time.perf_counter() - start
    return Registration(fixed, moving, transform, matrix, ddf, syn_inverse, ranges, report)


# --- writing --------------------------------------------------------------------------------

def warped_name(fixed: Image, moving: Image) -> str:
    """``warped.png`` when both inputs are 2D image files (PNG/JPEG/TIFF), else ``warped.nii.gz``."""
    def is_picture(image):
        return image.path is not None and _suffix(Path(image.path)) in IMAGE_2D_SUFFIXES

    return "warped.png" if is_picture(fixed) and is_picture(moving) else "warped.nii.gz"


def _save_warped(path: Path, data: torch.Tensor, fixed: Image, moving: Image, nearest: bool = False) -> None:
    """Save a resampled moving-subject image on the fixed grid (header of ``fixed``)."""
    like = fixed if fixed.header is not None else None
    if path.name.lower().endswith(".png"):
        dtype = moving.dtype if moving.dtype in (np.dtype(np.uint8), np.dtype(np.uint16)) else None
    else:
        dtype = moving.dtype if nearest and moving.dtype is not None else np.float32
    save_image(path, data.detach().cpu(), fixed.affine, like=like, dtype=dtype)


def write_outputs(result: Registration, folder: str | os.PathLike, labels: tuple[Image, Image] | None = None) -> dict:
    """Write a :class:`Registration` into ``folder`` (created if missing; its parent must exist).

    Files: ``affine.txt`` (with an affine part), ``ddf.nii.gz``, ``inverse_ddf.nii.gz``
    (with SyN), ``warped.nii.gz`` or ``warped.png``, ``overview.png`` and ``report.json``
    (last). With ``labels=(moving_labels, fixed_labels)`` also ``warped_labels.nii.gz`` and
    the mean Dice before and after (``metrics.dice``). Returns the report.
    """
    from regnet.metrics import mean_dice

    start = time.perf_counter()
    folder = Path(folder)
    folder.mkdir(exist_ok=True)
    fixed, moving, report = result.fixed, result.moving, result.report
    files = []
    if result.matrix is not None:
        save_affine(folder / "affine.txt", result.matrix)
        files.append("affine.txt")
    save_ddf(folder / "ddf.nii.gz", result.ddf.cpu(), fixed.affine)
    files.append("ddf.nii.gz")
    ddf, _ = load_ddf(folder / "ddf.nii.gz")  # what `regnet apply` will read
    ddf = ddf.to(result.ddf.device)
    result.saved_ddf = ddf
    if result.syn_inverse is not None:
        save_ddf(folder / "inverse_ddf.nii.gz", result.syn_inverse.cpu(), fixed.affine)
        files.append("inverse_ddf.nii.gz")

    with torch.no_grad():
        warped = sample_moving(moving, ddf, fixed.affine, "bilinear")
        name = warped_name(fixed, moving)
        _save_warped(folder / name, warped, fixed, moving)
        files.append(name)
        fixed_n = normalise(fixed.data.to(ddf.device, torch.float32), *result.ranges["fixed"])
        warped_n = normalise(warped.float(), *result.ranges["moving"])
        identity = torch.zeros_like(ddf)
        headers_n = normalise(sample_moving(moving, identity, fixed.affine, "bilinear").float(),
                              *result.ranges["moving"])
        report["metrics"]["global_ncc"]["after"] = global_ncc(fixed_n, warped_n)
        report["metrics"]["mse"]["after"] = mse(fixed_n, warped_n)
        report["jacobian"] = {k: _jsonable(v) for k, v in jacobian_stats(ddf).items()}
        det = ops.jacobian_det(ddf)[0, 0]
        if labels is not None:
            moving_labels, fixed_labels = labels
            warped_labels = sample_moving(moving_labels, ddf, fixed.affine, "nearest")
            _save_warped(folder / "warped_labels.nii.gz", warped_labels, fixed, moving_labels, nearest=True)
            files.append("warped_labels.nii.gz")
            target = fixed_labels.data.to(ddf.device).long()
            before = sample_moving(moving_labels, identity, fixed.affine, "nearest").long()
            which = [v for v in SCORED_LABELS if bool((target == v).any())]
            report["metrics"]["dice"] = {
                "before": mean_dice(before, target, labels=which),
                "after": mean_dice(warped_labels.long(), target, labels=which),
                "labels": which,
            }

    save_overview(folder / "overview.png", fixed_n, headers_n, warped_n, det, report,
                  picture=fixed.header is None)
    files.append("overview.png")
    files.append(REPORT_NAME)
    report["files"] = files
    report["time_s"]["write"] = time.perf_counter() - start
    _write_report(folder / REPORT_NAME, report)
    return report


#: FreeSurfer labels scored in brain registration (voxelmorph's list, 30 structures).
SCORED_LABELS = (2, 3, 4, 7, 8, 10, 11, 12, 13, 14, 15, 16, 17, 18, 24, 28, 31, 41, 42, 43, 46, 47, 49, 50,
                 51, 52, 53, 54, 60, 63)


def _write_report(path: Path, report: dict) -> None:
    text = json.dumps(_jsonable(report), indent=2, allow_nan=False)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    tmp.write_text(text + "\n")
    os.replace(tmp, path)


# --- overview figure ------------------------------------------------------------------------

def _checkerboard(a: np.ndarray, b: np.ndarray, tiles: int = 8) -> np.ndarray:
    index = np.indices(a.shape)
    cells = sum((index[i] * tiles // a.shape[i]) for i in range(a.ndim))
    return np.where(cells % 2 == 0, a, b)


def _slices(volume: np.ndarray, picture: bool) -> list[tuple[str, np.ndarray]]:
    """2D: the image (pictures as stored; NIfTI transposed, to be drawn with origin lower).
    3D: the middle slice across each array axis."""
    if volume.ndim == 2:
        return [("", volume if picture else volume.T)]
    out = []
    for axis in range(3):
        index = volume.shape[axis] // 2
        out.append((f"axis {axis} = {index}", np.take(volume, index, axis=axis).T))
    return out


def save_overview(path: Path, fixed, moving, warped, det, report: dict, picture: bool = False) -> None:
    """Figure: fixed, moving (through the headers), warped, checkerboard fixed / warped,
    Jacobian determinant; one row per middle slice for 3D. Images in [0, 1]."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import TwoSlopeNorm
    from matplotlib.figure import Figure

    def array(x):  # first channel of an image (1, C, *spatial), or a map (*spatial)
        x = x.detach().to("cpu", torch.float32)
        return (x if x.dim() == det.dim() else x[0, 0]).numpy()

    fixed, moving, warped, det_np = array(fixed), array(moving), array(warped), array(det)
    ncc, err = report["metrics"]["global_ncc"], report["metrics"]["mse"]
    jac = report["jacobian"]
    rows = list(zip(*(_slices(v, picture) for v in (fixed, moving, warped, _checkerboard(fixed, warped), det_np))))
    fig = Figure(figsize=(17.5, 3.6 * len(rows) + 0.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = np.atleast_2d(fig.subplots(len(rows), 5))
    low, high = float(det_np.min()), float(det_np.max())
    norm = TwoSlopeNorm(vcenter=1.0, vmin=min(low, 0.99), vmax=max(high, 1.01))
    titles = [
        "fixed",
        f"moving (through headers)\nNCC {ncc['before']:.3f}, MSE {err['before']:.4f}",
        f"warped ({report['transform']})\nNCC {ncc['after']:.3f}, MSE {err['after']:.4f}",
        "checkerboard fixed / warped",
        f"Jacobian determinant [{low:.2f}, {high:.2f}]\nfolding: {100 * jac['fraction_nonpositive']:.3f}%",
    ]
    origin = "upper" if picture and fixed.ndim == 2 else "lower"
    for r, row in enumerate(rows):
        for c, (label, image) in enumerate(row):
            ax = axes[r, c]
            if c < 4:
                ax.imshow(image, cmap="gray", vmin=0, vmax=1, interpolation="nearest", origin=origin)
            else:
                shown = ax.imshow(image, cmap="RdBu_r", norm=norm, interpolation="nearest", origin=origin)
                fig.colorbar(shown, ax=ax, shrink=0.8)
            ax.set_title(titles[c] if r == 0 else "", fontsize=10)
            if c == 0 and label:
                ax.set_ylabel(label)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.savefig(path, format="png", dpi=80)


# --- output folder --------------------------------------------------------------------------

def _is_regnet_output(folder: Path) -> bool:
    try:
        report = json.loads((folder / REPORT_NAME).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(report, dict) and "regnet_version" in report


#: What regnet writes into an output folder (``2d``/``3d``: the demo's cases).
OUTPUT_NAMES = frozenset({REPORT_NAME, "warped.nii.gz", "warped.png", "affine.txt", "ddf.nii.gz",
                          "inverse_ddf.nii.gz", "overview.png", "warped_labels.nii.gz", "2d", "3d"})


def check_out_dir(out: str | os.PathLike) -> None:
    """Raise if ``out`` exists and may not be replaced: it must be a folder that is empty, or
    an earlier regnet output (a regnet ``report.json`` and nothing but regnet's file names)."""
    out = Path(out)
    if not out.exists() and not out.is_symlink():
        return
    if out.is_symlink():
        raise NotADirectoryError(f"output path '{out}' is a symbolic link; give the folder itself")
    if not out.is_dir():
        raise NotADirectoryError(f"output path '{out}' exists and is not a directory")
    names = sorted(p.name for p in out.iterdir())
    if not names:
        return
    if not _is_regnet_output(out):
        raise FileExistsError(
            f"output folder '{out}' exists, is not empty and is not a regnet output (no regnet {REPORT_NAME}); "
            f"refusing to replace it: choose a new or empty folder"
        )
    foreign = [name for name in names if name not in OUTPUT_NAMES]
    if foreign:
        raise FileExistsError(
            f"output folder '{out}' holds files regnet did not write ({', '.join(foreign[:5])}"
            f"{', ...' if len(foreign) > 5 else ''}); refusing to replace it: move them or choose another folder"
        )


@contextlib.contextmanager
def output_folder(out: str | os.PathLike):
    """Yield a new temporary folder next to ``out``; rename it to ``out`` when the block
    succeeds (replacing an existing ``out``, see :func:`check_out_dir`), remove it (and the
    parent folders made for it) when the block raises."""
    out = Path(out).absolute()
    check_out_dir(out)
    missing, parent = [], out.parent
    while not parent.exists() and not parent.is_symlink():
        missing.append(parent)
        parent = parent.parent
    if not parent.is_dir():
        raise NotADirectoryError(f"cannot create output folder '{out}': '{parent}' is not a directory")
    out.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = out.parent / f".{out.name}.{secrets.token_hex(4)}.tmp"
        try:
            tmp.mkdir()  # mode 0o777 minus the umask, as the final folder should have
            break
        except FileExistsError:
            continue
    try:
        yield tmp
        _install(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for folder in missing:  # deepest first; only the empty ones we made
            try:
                folder.rmdir()
            except OSError:
                break
        raise


def _install(tmp: Path, out: Path) -> None:
    if not out.exists() and not out.is_symlink():
        os.rename(tmp, out)
        return
    check_out_dir(out)
    old = out.parent / f".{out.name}.{secrets.token_hex(4)}.old"
    os.rename(out, old)
    try:
        os.rename(tmp, out)
    except BaseException:
        os.rename(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


# --- entry points ---------------------------------------------------------------------------

def register_files(fixed_path, moving_path, transform: str, out_dir, config=None, device="cpu",
                   verbose: bool = True) -> dict:
    """``regnet register``: register ``moving_path`` onto ``fixed_path`` and write ``out_dir``.

    Args:
        fixed_path, moving_path: NIfTI (2D or 3D) or 2D PNG/JPEG/TIFF files.
        transform: ``"affine"``, ``"syn"`` or ``"affine+syn"``.
        out_dir: output folder (see the module docstring: written atomically, replaced only
            on success and only if it is empty or an earlier regnet output).
        config: YAML path, mapping or ``None`` (:func:`load_config`).
        device: torch device.
        verbose: progress bars per level (stderr).

    Returns:
        The report (also ``out_dir/report.json``) with ``out_dir`` added.
    """
    start = time.perf_counter()
    if transform not in TRANSFORMS:
        raise ValueError(f"transform must be one of {', '.join(TRANSFORMS)}, got {transform!r}")
    config = load_config(config)
    _device(device)
    check_out_dir(out_dir)
    fixed = load_image(fixed_path)
    moving = load_image(moving_path)
    load_time = time.perf_counter() - start
    with output_folder(out_dir) as tmp:
        result = register_images(fixed, moving, transform, config, device, verbose)
        result.report["time_s"]["load"] = load_time
        report = write_outputs(result, tmp)
        report["time_s"]["total"] = time.perf_counter() - start
        _write_report(tmp / REPORT_NAME, report)
    report["out_dir"] = str(Path(out_dir).absolute())
    return report


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
    dev = _device(device)
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
    _save_warped(out_path, out, fixed, moving, nearest=interp == "nearest")
    return out_path
