"""Iterative registration: affine (torchreg's API, fused sampling) and symmetric
diffeomorphic SyN, 2D and 3D, one pair or a batch of pairs at once; and the registration of
two images with world geometry (:func:`register_images`).

Layout: ``_options`` (options every registration validates), ``_levels`` (the level loop and
loss log), ``_pyramid``, ``_graph`` (CUDA graphs), ``initialisation`` (centres of mass,
principal axes), ``affine``, ``syn`` with ``syn_fields``, ``config`` (settings by name from
YAML or a mapping), ``world`` (world-space registration of two images).
"""

from regnet.registration.affine import AffineRegistration
from regnet.registration.config import Config, load_config
from regnet.registration.syn import SyNRegistration
from regnet.registration.world import Registration, register_images

__all__ = ["AffineRegistration", "Config", "Registration", "SyNRegistration", "load_config", "register_images"]
