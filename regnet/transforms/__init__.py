"""MONAI transforms for registration: regnet's operations inside ``monai.transforms.Compose``.

Every transform has an array form (channel-first tensors *without* a batch dimension, like all
MONAI array transforms) and a dictionary form (``...d``: ``keys``, ``allow_missing_keys``,
per-key ``mode`` so label maps use ``"nearest"``). Inputs and outputs are
:class:`monai.data.MetaTensor` s whose ``affine`` (voxel -> world, RAS mm as MONAI's
``LoadImage`` / nibabel give it) is kept right for the grid each output lives on, so
``SaveImaged`` writes files that line up with the inputs in a viewer. Plain tensors and numpy
arrays are accepted (identity affine). Computation runs on the input's device (CPU or CUDA)
or on ``device=``; the operations are those of :mod:`regnet.ops`.

Conventions (``docs/conventions.md``):

- image ``(C, H, W)`` or ``(C, H, W, D)``, array order, never permuted;
- displacement field (DDF) ``(ndim, *spatial)`` in voxels of its grid, channel ``i`` along spatial
  axis ``i``, pull convention ``warped(x) = moving(x + u(x))`` (MONAI ``Warp``);
- velocity field (SVF) as a DDF, ``exp`` by scaling and squaring;
- ``compose(u1, u2)(x) = u2(x) + u1(x + u2(x))``: warping by it = warping by ``u1``, then by ``u2``.

Transforms (see ``docs/transforms.md`` for the reference and an example chain):

- :class:`Warp` / :class:`Warpd`: warp images by a DDF on their own grid
  (:func:`regnet.ops.warp`); ``Warpd`` is invertible.
- :class:`ExpSVF` / :class:`ExpSVFd`: velocity -> displacement (:func:`regnet.ops.exp`).
- :class:`ComposeDDF` / :class:`ComposeDDFd`: compose two DDFs (:func:`regnet.ops.compose`).
- :class:`JacobianStats` / :class:`JacobianStatsd`: Jacobian-determinant statistics of a DDF,
  a dict of floats written to ``data[f"{key}_jacobian"]``.
- :class:`RandSVFDeform` / :class:`RandSVFDeformd`: random smooth diffeomorphism with its
  ground-truth DDF (augmentation, synthetic pairs with a known answer); invertible.
- :class:`RegisterImages` (array form, returns a :class:`RegistrationResult`) and
  :class:`RegisterImagesd` (``transform="affine" | "syn" | "affine+syn"``), with the fixed
  forms :class:`RegisterAffined`, :class:`RegisterSyNd`, :class:`RegisterAffineSyNd`:
  iterative registration inside the chain, moving and fixed on any grids; invertible.
- :func:`apply_registration`: sample any image (any grid) through a registration field.

MONAI is imported here only: ``import regnet`` does not import it.
"""

from regnet.transforms.fields import (
    ComposeDDF,
    ComposeDDFd,
    ExpSVF,
    ExpSVFd,
    JacobianStats,
    JacobianStatsd,
    Warp,
    Warpd,
    warp_image,
)
from regnet.transforms.random import RandSVFDeform, RandSVFDeformd, random_velocity
from regnet.transforms.registration import RegisterImages, RegistrationResult, apply_registration
from regnet.transforms.registration_dict import RegisterAffined, RegisterAffineSyNd, RegisterImagesd, RegisterSyNd

__all__ = [
    "ComposeDDF",
    "ComposeDDFd",
    "ExpSVF",
    "ExpSVFd",
    "JacobianStats",
    "JacobianStatsd",
    "RandSVFDeform",
    "RandSVFDeformd",
    "RegisterAffineSyNd",
    "RegisterAffined",
    "RegisterImages",
    "RegisterImagesd",
    "RegisterSyNd",
    "RegistrationResult",
    "Warp",
    "Warpd",
    "apply_registration",
    "random_velocity",
    "warp_image",
]
