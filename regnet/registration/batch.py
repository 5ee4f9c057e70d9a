"""Batched world-space registration: B pairs whose fixed images share one grid, registered as
one batch (what ``regnet register-many`` and ``regnet template`` run, and where GPUs win).

The steps per pair are exactly those of :func:`regnet.registration.world.register_images`
(its module docstring): intensities normalised per image, each moving image brought onto the
common fixed grid through the headers, started at the world translation that superposes the
centres of mass; then one :class:`~regnet.registration.affine.AffineRegistration` and one
:class:`~regnet.registration.syn.SyNRegistration` over the whole batch ``(B, C, *fixed)``.
Both classes keep the pairs independent (per-item losses, gradients scaled by
``batch * voxels`` so that Adam's steps do not couple them), so each pair's result equals its
unbatched one up to the early stop: the affine stage stops when every pair has converged,
SyN when the batch's summed loss has (a pair may run a few more iterations than alone).

Each pair gets its own :class:`~regnet.registration.world.Registration`, ready for
:func:`regnet.pipeline.outputs.write_outputs`; its report is the one-pair report plus
``"batch": {"size": B, "index": b}``; loss histories and stage times are the batch's.

Example::

    >>> results = register_batch([atlas] * 3, [m1, m2, m3], "affine+syn", device="cuda", verbose=False)
    >>> results[1].ddf.shape          # (1, ndim, *atlas.spatial_shape), fixed voxels, float64
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from regnet import __version__, ops
from regnet.geometry import theta_to_world, world_to_theta
from regnet.io import Image
from regnet.metrics import global_ncc, mse
from regnet.registration._levels import cpu_threads_for
from regnet.registration.config import load_config
from regnet.registration.initialisation import world_centre_of_mass
from regnet.registration.world import (
    TRANSFORMS,
    Registration,
    check_device,
    grid_info,
    intensity_range,
    normalise,
    total_ddf,
)

__all__ = ["grid_key", "register_batch", "same_grid"]

#: Affines closer than this (mm, element-wise) are the same grid.
GRID_ATOL = 1e-4


def same_grid(a: Image, b: Image) -> bool:
    """Whether two images lie on one grid: same spatial shape and affine (within :data:`GRID_ATOL`)."""
    return a.spatial_shape == b.spatial_shape and np.allclose(a.affine, b.affine, atol=GRID_ATOL, rtol=0)


def grid_key(image: Image) -> tuple:
    """A hashable key of an image's grid and channel count; images with equal keys batch together."""
    return (image.spatial_shape, int(image.data.shape[1]), tuple(np.round(image.affine, 4).ravel().tolist()))


class _Pair:
    """One pair's tensors on the device: normalised fixed and moving images and their ranges."""

    def __init__(self, fixed: Image, moving: Image, dev: torch.device):
        self.fixed, self.moving = fixed, moving
        self.ranges = {"fixed": intensity_range(fixed.data), "moving": intensity_range(moving.data)}
        self.fixed_n = normalise(fixed.data.to(dev, torch.float32), *self.ranges["fixed"])
        self.moving_n = normalise(moving.data.to(dev, torch.float32), *self.ranges["moving"])

    def through(self, matrix) -> torch.Tensor:
        """The normalised moving image on the fixed grid through the world matrix ``matrix``."""
        shape, fixed, moving = self.fixed.spatial_shape, self.fixed, self.moving
        theta = world_to_theta(matrix, shape, fixed.affine, moving.spatial_shape, moving.affine, True)
        return ops.affine_transform(self.moving_n, theta.to(self.moving_n.device, torch.float32), shape=shape,
                                    padding_mode="zeros", align_corners=True)


def _check(fixed: Sequence[Image], moving: Sequence[Image]) -> None:
    fn = "register_batch"
    if not isinstance(fixed, Sequence) or not isinstance(moving, Sequence):
        raise TypeError(f"{fn}: fixed and moving must be sequences of regnet.io.Image")
    if len(fixed) != len(moving) or not fixed:
        raise ValueError(f"{fn}: fixed and moving must hold the same number (>= 1) of images, got "
                         f"{len(fixed)} and {len(moving)}")
    for b, (f, m) in enumerate(zip(fixed, moving, strict=True)):
        for name, image in (("fixed", f), ("moving", m)):
            if not isinstance(image, Image):
                raise TypeError(f"{fn}: {name}[{b}] must be a regnet.io.Image, got {type(image).__name__}")
        if f.ndim != m.ndim:
            raise ValueError(f"{fn}: pair {b}: the fixed image is {f.ndim}D {f.spatial_shape} but the moving "
                             f"image is {m.ndim}D {m.spatial_shape}")
        if f.data.shape[1] != m.data.shape[1] or f.data.shape[1] != fixed[0].data.shape[1]:
            raise ValueError(f"{fn}: pair {b}: every image must have {fixed[0].data.shape[1]} channel(s), got "
                             f"fixed {f.data.shape[1]} and moving {m.data.shape[1]}")
        if not same_grid(f, fixed[0]):
            raise ValueError(f"{fn}: fixed[{b}] ({f.spatial_shape}) is not on the grid of fixed[0] "
                             f"({fixed[0].spatial_shape}, same affine): batch only pairs on one fixed grid")
    if min(fixed[0].spatial_shape) < 2:
        raise ValueError(f"{fn}: the fixed grid must have at least 2 voxels along every axis, got "
                         f"{fixed[0].spatial_shape}")


def register_batch(fixed: Sequence[Image], moving: Sequence[Image], transform: str = "affine+syn", config=None,
                   device="cpu", verbose: bool = True) -> list[Registration]:
    """Register ``moving[b]`` onto ``fixed[b]`` for every ``b`` as one batch.

    Args:
        fixed: B :class:`regnet.io.Image` s on one grid (:func:`same_grid`), e.g. one atlas B
            times; same channel count.
        moving: B images of the same dimension and channels, each on any grid.
        transform: ``"affine"``, ``"syn"`` or ``"affine+syn"``.
        config: ``None``, a mapping, a YAML path or a :class:`~regnet.registration.config.Config`.
        device: torch device of the optimisation.
        verbose: progress bars per level.

    Returns:
        B :class:`Registration` s, as :func:`~regnet.registration.world.register_images`
        returns for each pair alone (module docstring: what is shared).
    """
    if transform not in TRANSFORMS:
        raise ValueError(f"register_batch: transform must be one of {', '.join(TRANSFORMS)}, got {transform!r}")
    _check(fixed, moving)
    with cpu_threads_for(fixed[0].data):
        return _register_batch(list(fixed), list(moving), transform, config, device, verbose)


def _register_batch(fixed: list[Image], moving: list[Image], transform: str, config, device,
                    verbose: bool) -> list[Registration]:
    start = time.perf_counter()
    config = load_config(config)
    dev = check_device(device)
    batch = len(fixed)
    shape, ndim, affine = fixed[0].spatial_shape, fixed[0].ndim, fixed[0].affine
    pairs = [_Pair(f, m, dev) for f, m in zip(fixed, moving, strict=True)]
    identity = np.eye(ndim + 1)
    with torch.no_grad():
        headers = [p.through(identity) for p in pairs]
    static = torch.cat([p.fixed_n for p in pairs])
    reports: list[dict[str, Any]] = [{
        "regnet_version": __version__,
        "transform": transform,
        "device": str(dev),
        "config": config.source,
        "settings": {},
        "fixed": grid_info(p.fixed),
        "moving": grid_info(p.moving),
        "intensity_range": {k: list(v) for k, v in p.ranges.items()},
        "metrics": {"global_ncc": {"before": global_ncc(p.fixed_n, h)}, "mse": {"before": mse(p.fixed_n, h)}},
        "loss_history": {},
        "time_s": {},
        "batch": {"size": batch, "index": b},
    } for b, (p, h) in enumerate(zip(pairs, headers, strict=True))]
    prepare = time.perf_counter() - start
    shared: dict[str, Any] = {"settings": {}, "loss_history": {}, "time_s": {"prepare": prepare}}

    matrices: list[np.ndarray | None] = [None] * batch
    if "affine" in transform:
        starts = []
        for p in pairs:  # ANTs' default start: superpose the centres of mass (world.py)
            m = np.eye(ndim + 1)
            m[:ndim, ndim] = world_centre_of_mass(p.moving_n, p.moving.affine) - world_centre_of_mass(
                p.fixed_n, p.fixed.affine)
            starts.append(m)
        with torch.no_grad():
            started = torch.cat([p.through(m) for p, m in zip(pairs, starts, strict=True)])
        reg = config.build("affine", verbose)
        reg(started, static, return_moved=False)
        theta = reg.get_affine().double()
        for b in range(batch):
            found = theta_to_world(theta[b:b + 1], shape, affine, shape, affine, reg.align_corners)
            matrices[b] = starts[b] @ found
            reports[b]["start_translation_mm"] = starts[b][:ndim, ndim].tolist()
        shared["settings"]["affine"] = config.settings("affine")
        shared["loss_history"]["affine"] = reg.loss_history
        shared["time_s"]["affine"] = {"init": reg.init_time, "levels": reg.level_times,
                                      "total": reg.init_time + sum(reg.level_times)}
    syn_ddf = syn_inverse = None
    if "syn" in transform:
        start_syn = time.perf_counter()
        with torch.no_grad():
            affined = torch.cat([h if m is None else p.through(m)
                                 for p, h, m in zip(pairs, headers, matrices, strict=True)])
        prepare_syn = time.perf_counter() - start_syn
        reg = config.build("syn", verbose)
        start_syn = time.perf_counter()
        reg(affined, static, return_moved=False)
        syn_ddf, syn_inverse = reg.fields()
        fields_time = time.perf_counter() - start_syn - sum(reg.level_times)
        shared["settings"]["syn"] = config.settings("syn", ndim)
        shared["loss_history"]["syn"] = reg.loss_history
        shared["time_s"]["syn"] = {"levels": reg.level_times,
                                   "total": prepare_syn + sum(reg.level_times) + fields_time}
    elapsed = time.perf_counter() - start
    results = []
    for b, (p, h, report) in enumerate(zip(pairs, headers, reports, strict=True)):
        u = None if syn_ddf is None else syn_ddf[b:b + 1]
        ddf = total_ddf(matrices[b], u, shape, p.fixed.affine, device=dev)
        report["settings"] = dict(shared["settings"])
        report["loss_history"] = dict(shared["loss_history"])
        report["time_s"] = {**shared["time_s"], "registration": elapsed}
        results.append(Registration(p.fixed, p.moving, transform, matrices[b], ddf,
                                    None if syn_inverse is None else syn_inverse[b:b + 1], p.ranges, report,
                                    syn_ddf=u, headers=h))
    return results
