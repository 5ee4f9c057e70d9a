"""Iterative registration: affine (torchreg's API, fused sampling) and symmetric
diffeomorphic SyN, 2D and 3D, one pair or a batch of pairs at once."""

from regnet.registration.affine import AffineRegistration
from regnet.registration.syn import SyNRegistration

__all__ = ["AffineRegistration", "SyNRegistration"]
