"""The one home of coordinate maths: voxel grids, normalised <-> voxel <-> world coordinates,
``theta`` <-> voxel matrix <-> world matrix, matrices as displacement fields, fields in world
units and on other grids, and sampling at points of another frame.

- :mod:`~regnet.geometry.coordinates`: :func:`voxel_grid`, :func:`normalised_line`,
  :func:`normalised_coordinates`, :func:`voxel_to_normalised`, :func:`apply_matrix`;
- :mod:`~regnet.geometry.matrices`: :func:`world_to_theta`, :func:`world_theta`,
  :func:`theta_to_world`, :func:`theta_to_voxel`, :func:`world_to_voxel`, :func:`square`;
- :mod:`~regnet.geometry.fields`: :func:`matrix_to_ddf`, :func:`theta_to_ddf`,
  :func:`resize_field`, :func:`invert_ddf`, :func:`ddf_to_world`, :func:`world_ddf_to_voxel`;
- :mod:`~regnet.geometry.resampling`: :func:`sample_at_voxels`, :func:`sample_labels_at_voxels`,
  :func:`sample_at_world`, :func:`resample_to`, :func:`sampling_dtype`.

Conventions (``docs/conventions.md``, "Files and world space"): voxel indices in array axis
order; normalised ``(x, y[, z])`` = reversed array axes in ``[-1, 1]`` (``affine_grid``);
world = RAS mm through a grid's NIfTI affine; matrices are pull maps (fixed -> moving).

Example::

    >>> from regnet import geometry
    >>> theta = geometry.world_theta((64, 64), np.eye(3), (32, 32), np.diag([2.0, 2.0, 1.0]))
    >>> geometry.theta_to_ddf(theta.float(), (64, 64)).shape
    torch.Size([1, 2, 64, 64])
"""

from regnet.geometry.coordinates import (
    apply_matrix,
    normalised_coordinates,
    normalised_line,
    voxel_grid,
    voxel_to_normalised,
)
from regnet.geometry.fields import (
    ddf_to_world,
    invert_ddf,
    matrix_to_ddf,
    resize_field,
    theta_to_ddf,
    world_ddf_to_voxel,
)
from regnet.geometry.matrices import square, theta_to_voxel, theta_to_world, world_theta, world_to_theta, world_to_voxel
from regnet.geometry.resampling import (
    resample_to,
    sample_at_voxels,
    sample_at_world,
    sample_labels_at_voxels,
    sampling_dtype,
)

__all__ = [
    "apply_matrix",
    "ddf_to_world",
    "invert_ddf",
    "matrix_to_ddf",
    "normalised_coordinates",
    "normalised_line",
    "resample_to",
    "resize_field",
    "sample_at_voxels",
    "sample_at_world",
    "sample_labels_at_voxels",
    "sampling_dtype",
    "square",
    "theta_to_ddf",
    "theta_to_voxel",
    "theta_to_world",
    "voxel_grid",
    "voxel_to_normalised",
    "world_ddf_to_voxel",
    "world_theta",
    "world_to_theta",
    "world_to_voxel",
]
