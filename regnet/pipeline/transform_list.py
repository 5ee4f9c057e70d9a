"""Transform lists as ANTs reads them (``antsApplyTransforms -t``, ``antsApplyTransformsToPoints``),
and regnet output folders read as such lists.

A list ``[T1, T2, ..., Tn]`` of transform files maps a point ``p`` of the reference (fixed)
space to ``Tn(...T2(T1(p)))`` in the moving space: **the first listed acts first on the
points** (verified with ANTsPy: ``[warp, affine]`` maps ``p`` to ``affine(warp(p))``; the moving
image is thereby resampled as if transformed by the last listed first, ANTs' "the last
transform is applied first"). Each file maps points in ITK's direction (fixed -> moving):

- an affine (``.mat``, ITK ``.txt`` / ``.tfm``: :func:`regnet.io.itk_transforms.load_itk_affine`;
  regnet's ``affine.txt``), optionally inverted (``FILE,1`` or ``[FILE,1]`` as ANTs writes it);
- a displacement field (``.nii.gz`` / ``.nii``, :func:`regnet.io.load_ddf`): ``p -> p + d(p)``
  with ``d`` interpolated linearly at ``p`` on the field's grid, constant within the outer half
  voxel, and **zero** farther outside, as ITK's ``DisplacementFieldTransform`` (checked against
  ANTs). A field cannot be inverted (ANTs cannot either): list its inverse field instead.

A ``regnet register`` folder is the list ``[warp.nii.gz, affine.mat]`` (forward) or
``[affine.mat,1 ; inverse_warp.nii.gz]`` (inverse), as an ANTs output folder is
``[1Warp.nii.gz, 0GenericAffine.mat]`` / ``[[0GenericAffine.mat,1], 1InverseWarp.nii.gz]``
(:func:`folder_list`).

Example::

    >>> forward = read_transforms("out/")                                  # a regnet folder
    >>> forward = read_transforms(["1Warp.nii.gz", "0GenericAffine.mat"])  # an ANTs list
    >>> inverse = read_transforms(["0GenericAffine.mat,1", "1InverseWarp.nii.gz"])
    >>> ddf = forward.ddf(fixed.spatial_shape, fixed.affine)               # voxel DDF on a grid
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from regnet._checks import ConfigError
from regnet.geometry import apply_matrix, ddf_to_world, sample_at_voxels, voxel_grid
from regnet.io import load_affine, load_ddf
from regnet.io._files import NIFTI_SUFFIXES, suffix
from regnet.io.itk_transforms import ITK_SUFFIXES, load_itk_affine

__all__ = ["Affine", "ArgumentError", "Field", "TransformList", "field_grid", "folder_list", "parse_item",
           "read_affine", "read_transforms"]


class ArgumentError(ConfigError):
    """A transform list, point file or initial transform that cannot be used. ``argument`` is
    the Python argument (``transform``, ``points``, ``initial_transform``); the message starts
    with it, and the command line prints it as the option (``--transform: ...``) with exit
    status 2 (a :class:`~regnet._checks.ConfigError`)."""

    def __init__(self, argument: str, detail: str):
        self.argument, self.detail = argument, detail
        super().__init__(f"{argument}: {detail}")


@dataclass(frozen=True)
class Affine:
    """An affine step: points ``p -> matrix @ p`` (RAS mm; already inverted when listed so)."""

    matrix: np.ndarray
    path: Path
    inverted: bool = False


@dataclass(frozen=True)
class Field:
    """A displacement-field step on its own grid: ``ddf`` ``(1, ndim, *shape)`` float32 in voxels
    (as :func:`regnet.io.load_ddf` reads it), ``affine`` the grid's voxel -> world matrix."""

    ddf: torch.Tensor
    affine: np.ndarray
    path: Path

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.ddf.shape[2:])

    def on_grid(self, shape, affine) -> bool:
        return self.shape == tuple(shape) and np.allclose(self.affine, affine, atol=1e-4)


def _name(step) -> str:
    return f"[{step.path.name},1]" if getattr(step, "inverted", False) else step.path.name


@dataclass(frozen=True)
class TransformList:
    """Steps in ANTs' order: a point goes through ``steps[0]`` first."""

    steps: tuple
    ndim: int
    argument: str = "transform"

    def __str__(self) -> str:
        return "[" + ", ".join(_name(step) for step in self.steps) + "]"

    def map_world(self, points: torch.Tensor, grid_name: str | None = None) -> torch.Tensor:
        """World points ``(ndim, *S)`` (RAS mm, float64; ``S`` of ``ndim`` axes, a grid) through
        every step.

        ``grid_name``: the points are an output grid of that name; then a field that none of
        them reaches (all outside its grid) is an error: the list is in the wrong order or the
        grid is not the reference the list was made for.
        """
        for step in self.steps:
            if isinstance(step, Affine):
                points = apply_matrix(step.matrix, points)
                continue
            to_voxels = np.linalg.inv(step.affine)
            voxels = apply_matrix(to_voxels, points)
            size = torch.tensor(step.shape, dtype=points.dtype, device=points.device)
            size = size.view(self.ndim, *[1] * self.ndim)
            inside = ((voxels >= -0.5) & (voxels < size - 0.5)).all(0)  # ITK's IsInsideBuffer
            if grid_name is not None and not bool(inside.any()):
                raise ArgumentError(self.argument, (
                    f"no point of the {grid_name} reaches the grid of the displacement field {step.path.name} "
                    f"({'x'.join(map(str, step.shape))}) in the list {self}: the list is in the wrong order or "
                    f"made for another reference grid. ANTs' order: the first listed acts first on the "
                    f"output grid's points, e.g. [warp.nii.gz, affine.mat], and [affine.mat,1, "
                    f"inverse_warp.nii.gz] for the inverse"))
            world = ddf_to_world(step.ddf.to(points.device, torch.float64), step.affine)
            points = points + sample_at_voxels(world, voxels, None, "bilinear", "border")[0] * inside
        return points

    def ddf(self, shape: Sequence[int], affine, device=None) -> torch.Tensor:
        """The total pull mapping on a grid as a voxel DDF ``(1, ndim, *shape)`` of that grid
        (float64; a single field on this very grid is returned as stored, float32)."""
        shape = tuple(int(n) for n in shape)
        affine = np.asarray(affine, dtype=np.float64)
        if len(self.steps) == 1 and isinstance(self.steps[0], Field) and self.steps[0].on_grid(shape, affine):
            return self.steps[0].ddf.to(device)
        x = voxel_grid(shape, device)
        world = self.map_world(apply_matrix(affine, x), f"{'x'.join(map(str, shape))} output grid")
        return apply_matrix(np.linalg.inv(affine), world)[None] - x[None]

    def map_points(self, points) -> np.ndarray:
        """Points ``(N, ndim)`` (RAS mm) through the list; float64 ``(N, ndim)``."""
        array = np.asarray(points, dtype=np.float64)
        if array.ndim != 2 or array.shape[1] != self.ndim:
            raise ValueError(f"map_points: points must have shape (N, {self.ndim}), got {array.shape}")
        grid = torch.as_tensor(array.T.copy()).view(self.ndim, -1, *[1] * (self.ndim - 1))  # a point set as a grid
        return self.map_world(grid).reshape(self.ndim, -1).T.numpy()

    def inverse(self) -> TransformList:
        """The inverse list: reversed, each affine inverted; a field cannot be."""
        fields = [step.path.name for step in self.steps if isinstance(step, Field)]
        if fields:
            raise ArgumentError(self.argument, (
                f"the inverse of the list {self} needs the inverse of the displacement field {fields[0]}, which "
                f"cannot be computed from it (ANTs cannot either): give the inverse list explicitly, e.g. "
                f"[affine.mat,1, inverse_warp.nii.gz] (ANTs: [0GenericAffine.mat,1, 1InverseWarp.nii.gz]), "
                f"without --inverse"))
        steps = tuple(Affine(np.linalg.inv(step.matrix), step.path, not step.inverted) for step in reversed(self.steps))
        return TransformList(steps, self.ndim, self.argument)


# --- reading --------------------------------------------------------------------------------

_ITEM = re.compile(r"^\s*\[?\s*(?P<path>.+?)\s*,\s*(?P<flag>[01])\s*\]?\s*$")


def parse_item(item, argument: str = "transform") -> tuple[Path, bool]:
    """One list entry: a path, ``"FILE,1"`` / ``"[FILE,1]"`` (``,0``: not inverted), or a
    ``(path, invert)`` pair. Returns ``(path, invert)``."""
    if isinstance(item, (tuple, list)):
        if len(item) != 2 or not isinstance(item[1], (bool, int, np.integer)) or item[1] not in (0, 1):
            raise ArgumentError(argument, f"an entry (path, invert) needs invert True/False or 1/0, got {item!r}")
        return Path(item[0]), bool(item[1])
    if not isinstance(item, (str, os.PathLike)):
        raise ArgumentError(argument, f"entries must be paths, 'FILE,1' or (path, invert), got {type(item).__name__}")
    text = os.fspath(item)
    match = _ITEM.match(text)
    if match and not Path(text).exists():
        return Path(match.group("path")), match.group("flag") == "1"
    return Path(text.strip()[1:-1] if text.strip().startswith("[") else text), False


def folder_list(folder: str | os.PathLike, inverse: bool = False, grid=None) -> list[tuple[Path, bool]]:
    """The ANTs transform list of a ``regnet register`` folder.

    Forward (fixed-space points -> moving space): ``[warp.nii.gz, affine.mat]`` (each where the
    folder has it); on the registration's own fixed grid (``grid = (shape, affine)`` equal to
    ``ddf.nii.gz``'s) ``[ddf.nii.gz]``, the same map as one field (what ``warped`` was sampled
    with). Inverse: ``[affine.mat,1, inverse_warp.nii.gz]``. Folders written before ANTs' files
    existed use ``affine.txt``, ``ddf.nii.gz`` and ``inverse_ddf.nii.gz``.
    """
    folder = Path(folder)

    def first(*names):
        return next((folder / name for name in names if (folder / name).is_file()), None)

    affine = first("affine.mat", "affine.txt")
    ddf, warp = first("ddf.nii.gz"), first("warp.nii.gz")
    inverse_warp = first("inverse_warp.nii.gz", "inverse_ddf.nii.gz")
    if ddf is None and affine is None:
        raise ArgumentError("transform", f"'{folder}' holds neither ddf.nii.gz nor affine.txt / affine.mat "
                                         f"(not a regnet register output)")
    syn = warp is not None or inverse_warp is not None or affine is None
    if inverse:
        if syn and inverse_warp is None:
            raise ArgumentError("transform", f"'{folder}' holds no inverse field (inverse_warp.nii.gz)")
        return [(affine, True)] * (affine is not None) + [(inverse_warp, False)] * syn
    if ddf is not None and (grid is not None and _field_on(ddf, grid) or (syn and warp is None)):
        return [(ddf, False)]  # the fixed grid itself, or an older folder (the total field only)
    return [(warp, False)] * (warp is not None) + [(affine, False)] * (affine is not None)


def field_grid(path: Path, ndim: int) -> tuple[tuple[int, ...], np.ndarray] | None:
    """``(shape, affine)`` of a displacement field file from its header alone (``None`` if
    unreadable)."""
    import nibabel as nib

    from regnet.io.nifti import reduce_2d

    try:
        header = nib.load(str(path))
        affine = np.asarray(header.affine, dtype=np.float64)
        shape = tuple(int(n) for n in header.shape[:ndim])
    except Exception:
        return None
    return shape, (reduce_2d(affine) if ndim == 2 else affine)


def _field_on(path: Path, grid) -> bool:
    shape, affine = grid
    found = field_grid(path, len(shape))
    return found is not None and found[0] == tuple(shape) and np.allclose(found[1], affine, atol=1e-4)


def read_affine(path: Path, ndim: int | None, argument: str = "transform") -> np.ndarray:
    """An affine transform file as regnet's world matrix (RAS, fixed -> moving): ITK/ANTs
    ``.mat``, ITK text (``.txt``/``.tfm`` beginning ``#Insight Transform File``) or regnet's
    ``affine.txt``."""
    try:
        if suffix(path) == ".txt" and not _is_itk_text(path):
            matrix = load_affine(path)
            if ndim is not None and matrix.shape[0] != ndim + 1:
                raise ValueError(f"{path}: a {matrix.shape[0] - 1}D transform where a {ndim}D one is needed")
            return matrix
        return load_itk_affine(path, ndim)
    except FileNotFoundError:
        raise ArgumentError(argument, f"no such file '{path}'") from None
    except (OSError, ValueError) as error:
        raise ArgumentError(argument, _strip(str(error))) from None


def _is_itk_text(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            return file.read(64).lstrip().startswith("#Insight")
    except OSError:
        return False


def _strip(message: str) -> str:
    """Drop a reader's function-name prefix (``load_itk_affine: ``) from its message."""
    return re.sub(r"^(load_itk_affine|load_affine|load_ddf): ", "", message)


def read_transforms(transform, inverse: bool = False, ndim: int | None = None, grid=None,
                    argument: str = "transform") -> TransformList:
    """Read a transform list.

    Args:
        transform: a ``regnet register`` folder, one transform file, or a sequence of entries in
            ANTs' order (paths, ``"FILE,1"`` / ``"[FILE,1]"`` to invert an affine, or
            ``(path, invert)``); a one-entry sequence may be a folder.
        inverse: the inverse mapping: a folder's inverse list (:func:`folder_list`), or a list
            reversed with each affine inverted (a list with a field is refused).
        ndim: the dimension the caller needs (2 or 3); ``None`` takes the files'.
        grid: ``(shape, affine)`` of the output grid: lets a folder use ``ddf.nii.gz`` there.
        argument: the argument's name in error messages.

    Raises:
        ArgumentError: a missing, unreadable or unsupported file (named), an inverted field,
            files of different dimensions, or a folder inside a longer list.
    """
    items = [transform] if isinstance(transform, (str, os.PathLike)) else transform
    if not isinstance(items, Sequence) or isinstance(items, (str, bytes)) or len(items) == 0:
        raise ArgumentError(argument, f"expected a regnet folder, a transform file or a list of them, "
                                      f"got {transform!r}")
    entries = [parse_item(item, argument) for item in items]
    folders = [path for path, _ in entries if path.is_dir()]
    from_folder = False
    if folders:
        if len(entries) > 1 or entries[0][1]:
            raise ArgumentError(argument, f"'{folders[0]}' is a folder: give a regnet register folder alone, or a "
                                          f"list of transform files")
        try:
            entries = folder_list(folders[0], inverse, grid)
        except ArgumentError as error:
            raise ArgumentError(argument, error.detail) from None
        from_folder = True
    steps = []
    for path, invert in entries:
        kind = suffix(path)
        if not path.exists():
            raise ArgumentError(argument, f"no such file '{path}'")
        if kind in NIFTI_SUFFIXES:
            if invert:
                raise ArgumentError(argument, (
                    f"cannot invert the displacement field '{path}' (ANTs cannot either): list its inverse field "
                    f"instead (regnet: inverse_warp.nii.gz; ANTs: 1InverseWarp.nii.gz)"))
            try:
                ddf, affine = load_ddf(path)
            except (OSError, ValueError) as error:
                raise ArgumentError(argument, _strip(str(error))) from None
            steps.append(Field(ddf, affine, path))
        elif kind in ITK_SUFFIXES:
            matrix = read_affine(path, ndim, argument)
            steps.append(Affine(np.linalg.inv(matrix) if invert else matrix, path, invert))
        else:
            raise ArgumentError(argument, (
                f"'{path}': unsupported transform file type {kind!r}; regnet reads affines ({', '.join(ITK_SUFFIXES)}) "
                f"and displacement fields ({', '.join(NIFTI_SUFFIXES)}); an ANTs composite .h5 can be written as "
                f"separate files (antsRegistration --write-composite-transform 0)"))
        step_ndim = (steps[-1].ddf.shape[1] if isinstance(steps[-1], Field) else steps[-1].matrix.shape[0] - 1)
        want = ndim if ndim is not None else step_ndim
        if step_ndim != want:
            raise ArgumentError(argument, f"'{path}' is a {step_ndim}D transform but {want}D is needed")
        ndim = want
    result = TransformList(tuple(steps), int(ndim or 0), argument)
    return result.inverse() if inverse and not from_folder else result
