"""Images on disk with world affines, displacement fields and affine transform files.

- :mod:`regnet.io.image`: :func:`load_image` / :func:`save_image` (NIfTI, PNG/JPEG/TIFF),
  :func:`save_ddf` / :func:`load_ddf` (ITK/ANTs displacement fields),
  :func:`save_affine` / :func:`load_affine` (``affine.txt``).
- :mod:`regnet.io.world`: geometry between two grids (world-space ``theta``, resampling
  through the headers, world <-> voxel displacement fields).

See ``docs/conventions.md``, "Files and world space".
"""

from regnet.io.image import Image, load_affine, load_ddf, load_image, save_affine, save_ddf, save_image
from regnet.io.world import (
    ddf_to_world,
    resample_to,
    theta_to_world,
    voxel_to_normalised,
    world_ddf_to_voxel,
    world_theta,
    world_to_theta,
)

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
