"""File formats: images with their world affines, displacement fields and affine transform files.

- :mod:`regnet.io.image`: :class:`Image`, :func:`load_image` / :func:`save_image` (dispatch to
  :mod:`regnet.io.nifti`, NIfTI 2D/3D with channels, and :mod:`regnet.io.pictures`,
  PNG/JPEG/TIFF);
- :mod:`regnet.io.displacement`: :func:`save_ddf` / :func:`load_ddf` (ITK/ANTs displacement
  fields, world mm, LPS);
- :mod:`regnet.io.affine_text`: :func:`save_affine` / :func:`load_affine` (``affine.txt``);
- :mod:`regnet.io.itk_transforms`: ITK/ANTs affine files (``affine.mat``, ``0GenericAffine.mat``);
- :mod:`regnet.io.points`: point CSV files as ``antsApplyTransformsToPoints`` reads them.

Geometry between two grids (world-space ``theta``, resampling through the headers, world <->
voxel displacement fields) lives in :mod:`regnet.geometry`; its file-facing functions are
re-exported here (``from regnet.io import resample_to`` keeps working).

See ``docs/conventions.md``, "Files and world space".
"""

from regnet.geometry import (
    ddf_to_world,
    resample_to,
    theta_to_world,
    voxel_to_normalised,
    world_ddf_to_voxel,
    world_theta,
    world_to_theta,
)
from regnet.io.affine_text import load_affine, save_affine
from regnet.io.displacement import load_ddf, save_ddf
from regnet.io.image import Image, load_image, save_image

__all__ = [
    "Image",
    "ddf_to_world",
    "load_affine",
    "load_ddf",
    "load_image",
    "resample_to",
    "save_affine",
    "save_ddf",
    "save_image",
    "theta_to_world",
    "voxel_to_normalised",
    "world_ddf_to_voxel",
    "world_theta",
    "world_to_theta",
]
