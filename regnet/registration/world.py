"""Registration of two images in world space, in memory: what ``regnet register`` runs between
reading and writing files, and what the MONAI registration transforms run.

Both images carry their world geometry (:class:`regnet.io.Image`: data ``(1, C, *spatial)``
and a voxel -> world affine). Their intensities are normalised for the optimisation
(:func:`intensity_range`, :func:`normalise`) and the moving image is brought onto the fixed
grid through the headers. Then, on the fixed grid:

1. ``affine`` (``"affine"``, ``"affine+syn"``): the moving image is first translated in world
   space so that the two intensity centres of mass coincide (``M0``, ANTs' default start;
   :func:`~regnet.registration.initialisation.world_centre_of_mass` on the full images, so
   headers that barely overlap do not crop the moving image), resampled through ``M0`` onto
   the fixed grid, and registered there with
   :class:`~regnet.registration.affine.AffineRegistration`. Its ``theta`` becomes a world
   matrix ``T`` (:func:`regnet.geometry.theta_to_world`) and ``M = M0 @ T`` (fixed world ->
   moving world) is the whole linear part.
2. ``syn`` (``"syn"``, ``"affine+syn"``): :class:`~regnet.registration.syn.SyNRegistration`
   of the moving image resampled once through ``M`` onto the fixed image, giving the DDF
   ``u`` (fixed voxels) and its inverse.

The total transform maps fixed voxel ``x`` to the moving world point ``M A_f (x + u(x))``
(``A_f``: fixed affine): :func:`total_ddf`. Images of the moving subject are sampled at those
points from their own grids in one interpolation (:func:`sample_moving`).

Example::

    >>> result = register_images(fixed, moving, "affine+syn", config=None, device="cpu", verbose=False)
    >>> result.matrix, result.ddf.shape          # world matrix fixed -> moving, (1, ndim, *fixed)
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from regnet import __version__, _checks, ops
from regnet.geometry import (
    matrix_to_ddf,
    sample_at_voxels,
    sample_labels_at_voxels,
    sampling_dtype,
    theta_to_world,
    voxel_grid,
    world_to_theta,
    world_to_voxel,
)
from regnet.io import Image
from regnet.metrics import global_ncc, mse
from regnet.registration._levels import cpu_threads_for
from regnet.registration.config import load_config
from regnet.registration.initialisation import world_centre_of_mass

TRANSFORMS = ("affine", "syn", "affine+syn")
#: Percentiles mapped to 0 and 1 by the intensity normalisation used for the optimisation.
PERCENTILES = (0.5, 99.5)
SAMPLE_SLAB_VOXELS = 1 << 20  # output voxels per slab in sample_moving


# --- intensities ---------------------------------------------------------------------------

def intensity_range(image: torch.Tensor) -> tuple[float, float]:
    """The robust range (:data:`PERCENTILES`) of an image; min/max when that is empty.

    Equal to ``np.percentile(values in float64, PERCENTILES)`` (its default "linear" method,
    the same formula and rounding), but selects the few order statistics it reads with one
    ``np.partition`` in the image's own float dtype: no float64 copy of the volume (a 1 mm
    brain: 0.03 s instead of 0.1-0.6 s).
    """
    values = image.detach().cpu().numpy().ravel()
    if values.dtype not in (np.float32, np.float64):
        values = values.astype(np.float64)
    if not np.all(np.isfinite(values)):
        raise ValueError("the image contains NaN or infinite values")
    n = values.size
    q = np.asarray(PERCENTILES, dtype=np.float64) / 100
    virtual = n * q + (1 + q * (1 - 1 - 1)) - 1  # numpy's virtual index, alpha = beta = 1
    previous = np.floor(virtual)
    gamma = virtual - previous
    below = previous.astype(np.intp).clip(0, n - 1)
    above = (below + 1).clip(0, n - 1)
    ordered = np.partition(values, np.unique(np.concatenate([below, above])))
    a, b = ordered[below].astype(np.float64), ordered[above].astype(np.float64)
    diff = b - a
    low, high = (float(v) for v in np.where(gamma >= 0.5, b - diff * (1 - gamma), a + diff * gamma))
    if not high > low:
        low, high = float(values.min()), float(values.max())
    return low, high


def normalise(image: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """``(image - low) / (high - low)`` clipped to [0, 1] (constant image: zeros)."""
    if not high > low:
        return torch.zeros_like(image)
    return ((image - low) / (high - low)).clamp(0, 1)


# --- the transform as points ---------------------------------------------------------------

def total_ddf(matrix: np.ndarray | None, syn_ddf: torch.Tensor | None, fixed_shape, fixed_affine,
              device=None) -> torch.Tensor:
    """The DDF ``(1, ndim, *fixed_shape)`` (fixed voxels, float64) of ``x -> M A_f (x + u(x))``.

    ``matrix`` ``M`` (world, fixed -> moving; ``None`` = identity) and ``syn_ddf`` ``u``
    (``(1, ndim, *fixed_shape)`` voxels; ``None`` = 0). Saved with :func:`regnet.io.save_ddf`
    it maps fixed world point ``p`` to moving world point ``p + d(p)``.
    """
    if device is None:
        device = syn_ddf.device if syn_ddf is not None else "cpu"
    u = None if syn_ddf is None else syn_ddf.to(device, torch.float64)
    return matrix_to_ddf(world_to_voxel(matrix, fixed_affine), fixed_shape, u, device=device)


def sample_moving(moving: Image, ddf: torch.Tensor, fixed_affine, mode: str = "bilinear",
                  padding_mode: str = "zeros") -> torch.Tensor:
    """Sample the moving image at the world points of a total DDF on the fixed grid.

    Fixed voxel ``x`` -> world ``A_f (x + ddf(x))`` -> moving voxel (``A_m^-1``), sampled by
    :func:`regnet.geometry.sample_at_voxels`. This is how ``regnet apply`` maps any image of
    the moving subject, on any grid.

    Args:
        moving: :class:`regnet.io.Image` with ``data`` ``(1, C, *spatial)``; float32/float64
            data is sampled in its dtype, integer data in float64 with ``"nearest"`` (exact
            labels), half precision in float32.
        ddf: ``(1, ndim, *fixed_shape)`` voxels of the fixed grid (:func:`regnet.io.load_ddf`).
        fixed_affine: the fixed grid's voxel -> world matrix.
        mode: ``"bilinear"``, ``"nearest"`` or ``"label"`` (label maps: label-wise linear
            interpolation, ANTs' ``GenericLabel``; :func:`regnet.geometry.sample_labels_at_voxels`,
            in the labels' dtype).

    Returns:
        ``(1, C, *fixed_shape)`` on ``ddf``'s device, in the sampling dtype.
    """
    ndim = ddf.shape[1]
    if moving.ndim != ndim:
        raise ValueError(f"sample_moving: the moving image is {moving.ndim}D but the transform is {ndim}D")
    to_voxels = np.linalg.inv(moving.affine) @ np.asarray(fixed_affine, dtype=np.float64)
    shape = tuple(ddf.shape[2:])
    if mode == "label":
        points = voxel_grid(shape, ddf.device) + ddf[0].to(torch.float64)
        return sample_labels_at_voxels(moving.data, points, to_voxels)
    # In slabs along the first axis: the same points and samples, without full-size float64
    # point grids (a 1 mm brain: two 168 MB temporaries).
    data = moving.data.to(ddf.device, sampling_dtype(moving.data, mode))
    rows = max(1, SAMPLE_SLAB_VOXELS // max(1, math.prod(shape[1:])))
    slabs = []
    for start in range(0, shape[0], rows):
        stop = min(shape[0], start + rows)
        points = voxel_grid((stop - start, *shape[1:]), ddf.device)
        points[0] += start
        points += ddf[0, :, start:stop]
        slabs.append(sample_at_voxels(data, points, to_voxels, mode, padding_mode))
    return slabs[0] if len(slabs) == 1 else torch.cat(slabs, dim=2)


# --- registration in memory ----------------------------------------------------------------

@dataclass
class Registration:
    """What :func:`register_images` found (:mod:`regnet.pipeline` writes it)."""

    fixed: Image
    moving: Image
    transform: str
    matrix: np.ndarray | None  # world, fixed -> moving (None: no affine part)
    ddf: torch.Tensor  # total forward DDF (1, ndim, *fixed), fixed voxels, float64
    syn_inverse: torch.Tensor | None  # SyN inverse DDF on the fixed grid (None without SyN)
    ranges: dict[str, tuple[float, float]]
    report: dict[str, Any]
    saved_ddf: torch.Tensor | None = None  # the DDF as read back from ddf.nii.gz
    syn_ddf: torch.Tensor | None = None  # SyN's forward DDF on the fixed grid, without the affine (None without SyN)
    headers: torch.Tensor | None = None  # the normalised moving image on the fixed grid through the headers


def check_device(device) -> torch.device:
    """``torch.device(device)``; ``ValueError`` for an invalid one or CUDA without CUDA."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"invalid device {device!r}: {error}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but CUDA is not available to torch")
    return dev


def grid_info(image: Image) -> dict[str, Any]:
    """Path, shape, channels, spacing and affine of an image, for a report."""
    return {
        "path": None if image.path is None else str(image.path),
        "shape": list(image.spatial_shape),
        "channels": int(image.data.shape[1]),
        "spacing": [round(s, 6) for s in image.spacing],
        "affine": image.affine.tolist(),
    }


def register_images(fixed: Image, moving: Image, transform: str = "affine+syn", config=None,
                    device="cpu", verbose: bool = True, initial_matrix=None, fixed_mask: Image | None = None,
                    moving_mask: Image | None = None) -> Registration:
    """Register two :class:`regnet.io.Image` s in memory (see the module docstring).

    Args:
        fixed, moving: images with world geometry, same dimension and channels, any grids.
        transform: ``"affine"``, ``"syn"`` or ``"affine+syn"``.
        config: ``None``, a mapping or a YAML path (:func:`~regnet.registration.config.load_config`).
        device: torch device of the optimisation.
        verbose: progress bars per level.
        initial_matrix: a world matrix ``(ndim+1, ndim+1)`` (RAS, fixed -> moving; e.g. an
            ``affine.txt`` or an ANTs ``.mat`` read with :func:`regnet.io.load_itk_affine`) to
            start from instead of the centres of mass: the affine stage refines it, and
            ``"syn"`` alone registers the moving image resampled through it (the result then
            has this affine part).
        fixed_mask, moving_mask: binary masks (0/1, on the fixed / moving image's grid) that
            restrict the similarity to a region, as ANTs' ``-x [fixed, moving]``: only fixed
            voxels inside the fixed mask whose point falls inside the moving mask count. The
            transform still covers the whole image.

    Returns:
        A :class:`Registration` with the world matrix, the total forward DDF on the fixed
        grid (float64, fixed voxels), the SyN inverse DDF, and the report so far (settings,
        loss history and time per level, intensity ranges, similarity before registration).
    """
    if not isinstance(fixed, Image):
        raise TypeError(f"register_images: fixed must be a regnet.io.Image, got {type(fixed).__name__}")
    with cpu_threads_for(fixed.data):  # small images: one intra-op thread (see there)
        return _register_images(fixed, moving, transform, config, device, verbose, initial_matrix, fixed_mask,
                                moving_mask)


def _initial(fn: str, initial_matrix, ndim: int) -> np.ndarray | None:
    if initial_matrix is None:
        return None
    matrix = _checks.affine_matrix(fn, "initial_matrix", initial_matrix, ndim)
    if not np.allclose(matrix[-1], np.eye(ndim + 1)[-1]) or abs(np.linalg.det(matrix[:ndim, :ndim])) < 1e-12:
        raise ValueError(f"{fn}: initial_matrix must be an invertible affine with last row (0, ..., 0, 1), "
                         f"got {matrix.tolist()}")
    return matrix


def check_mask(fn: str, name: str, mask, image: Image, image_name: str) -> torch.Tensor | None:
    """A mask :class:`Image` on ``image``'s grid holding only 0 and 1 (and some 1), as float32
    ``(1, 1, *spatial)``; ``None`` when not given."""
    if mask is None:
        return None
    if not isinstance(mask, Image):
        raise TypeError(f"{fn}: {name} must be a regnet.io.Image, got {type(mask).__name__}")
    if mask.spatial_shape != image.spatial_shape or not np.allclose(mask.affine, image.affine, atol=1e-4):
        raise ValueError(f"{fn}: {name} must lie on the {image_name} image's grid "
                         f"({'x'.join(map(str, image.spatial_shape))}, same affine), got "
                         f"{'x'.join(map(str, mask.spatial_shape))} with affine {np.round(mask.affine, 4).tolist()}")
    data = mask.data
    if data.shape[1] != 1:
        raise ValueError(f"{fn}: {name} must have one channel, got {data.shape[1]}")
    values = torch.unique(data)
    if not bool(torch.isin(values, torch.tensor([0, 1], dtype=values.dtype)).all()):
        shown = values[:6].tolist()
        more = " ..." if len(values) > 6 else ""
        raise ValueError(f"{fn}: {name} must be binary (0 and 1), got values {shown}{more}")
    if not bool((data > 0).any()):
        raise ValueError(f"{fn}: {name} is empty (no voxel inside)")
    return data.float()


def _register_images(fixed: Image, moving: Image, transform: str, config, device, verbose: bool,
                     initial_matrix=None, fixed_mask=None, moving_mask=None) -> Registration:
    start = time.perf_counter()
    if transform not in TRANSFORMS:
        raise ValueError(f"transform must be one of {', '.join(TRANSFORMS)}, got {transform!r}")
    config = load_config(config)
    dev = check_device(device)
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
    initial = _initial("register_images", initial_matrix, ndim)
    fixed_m = check_mask("register_images", "fixed_mask", fixed_mask, fixed, "fixed")
    moving_m = check_mask("register_images", "moving_mask", moving_mask, moving, "moving")
    fixed_m = None if fixed_m is None else fixed_m.to(dev)
    moving_m = None if moving_m is None else moving_m.to(dev)

    ranges = {"fixed": intensity_range(fixed.data), "moving": intensity_range(moving.data)}
    fixed_n = normalise(fixed.data.to(dev, torch.float32), *ranges["fixed"])
    moving_n = normalise(moving.data.to(dev, torch.float32), *ranges["moving"])
    identity = np.eye(ndim + 1)

    def through(matrix, image=None) -> torch.Tensor:  # normalised moving (or its mask) on the fixed grid
        theta = world_to_theta(matrix, shape, fixed.affine, moving.spatial_shape, moving.affine, True)
        return ops.affine_transform(moving_n if image is None else image, theta.to(dev, torch.float32), shape=shape,
                                    padding_mode="zeros", align_corners=True)

    def masks(matrix) -> dict:  # the masks on the fixed grid, the moving one through `matrix`
        with torch.no_grad():
            return {"static_mask": fixed_m, "moving_mask": None if moving_m is None else through(matrix, moving_m)}

    with torch.no_grad():
        headers = through(identity)
    report: dict[str, Any] = {
        "regnet_version": __version__,
        "transform": transform,
        "device": str(dev),
        "config": config.source,
        "settings": {},
        "fixed": grid_info(fixed),
        "moving": grid_info(moving),
        "intensity_range": {k: list(v) for k, v in ranges.items()},
        "metrics": {"global_ncc": {"before": global_ncc(fixed_n, headers)},
                    "mse": {"before": mse(fixed_n, headers)}},
        "loss_history": {},
        "time_s": {"prepare": time.perf_counter() - start},
    }
    if fixed_mask is not None or moving_mask is not None:
        report["masks"] = {name: None if m is None else (str(m.path) if m.path is not None else "in memory")
                           for name, m in (("fixed", fixed_mask), ("moving", moving_mask))}

    matrix = initial
    if initial is not None:
        report["initial_matrix"] = initial.tolist()
    if "affine" in transform:
        # Start from the world translation that superposes the two centres of mass (ANTs'
        # default start): images whose headers barely overlap would otherwise be cropped on
        # the fixed grid before the affine stage sees them. A given initial matrix replaces it.
        if initial is not None:
            start_matrix = initial
        else:
            start_matrix = np.eye(ndim + 1)
            start_matrix[:ndim, ndim] = (world_centre_of_mass(moving_n, moving.affine)
                                         - world_centre_of_mass(fixed_n, fixed.affine))
        with torch.no_grad():
            started = through(start_matrix)
        reg = config.build("affine", verbose)
        reg(started, fixed_n, return_moved=False, **masks(start_matrix))
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
        reg(affined, fixed_n, return_moved=False, **masks(identity if matrix is None else matrix))
        syn_ddf, syn_inverse = reg.fields()
        fields_time = time.perf_counter() - start_syn - sum(reg.level_times)
        report["settings"]["syn"] = config.settings("syn", ndim)
        report["loss_history"]["syn"] = reg.loss_history
        report["time_s"]["syn"] = {"levels": reg.level_times, "total": prepare + sum(reg.level_times) + fields_time}
    ddf = total_ddf(matrix, syn_ddf, shape, fixed.affine, device=dev)
    report["time_s"]["registration"] = time.perf_counter() - start
    return Registration(fixed, moving, transform, matrix, ddf, syn_inverse, ranges, report, syn_ddf=syn_ddf,
                        headers=headers)
