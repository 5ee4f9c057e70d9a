"""regnet: differentiable medical image registration on PyTorch and MONAI.

The top-level package imports lazily so that ``regnet --help`` starts without importing
torch or MONAI. ``regnet.ops`` holds the differentiable primitives (``regnet.set_backend``
chooses their compute backend), ``regnet.losses`` the losses, ``regnet.metrics`` the
evaluation metrics, ``regnet.AffineRegistration`` / ``regnet.SyNRegistration`` the iterative
registrations and ``regnet.io`` NIfTI and image files with their world affines.
"""

from importlib import import_module

__version__ = "0.1.0"

_LAZY = {
    "ops": ("regnet.ops", None),
    "losses": ("regnet.losses", None),
    "metrics": ("regnet.metrics", None),
    "io": ("regnet.io", None),
    "registration": ("regnet.registration", None),
    "AffineRegistration": ("regnet.registration", "AffineRegistration"),
    "SyNRegistration": ("regnet.registration", "SyNRegistration"),
    "set_backend": ("regnet.ops._backend", "set_backend"),
    "get_backend": ("regnet.ops._backend", "get_backend"),
    "set_deterministic": ("regnet.ops._backend", "set_deterministic"),
    "is_deterministic": ("regnet.ops._backend", "is_deterministic"),
    "transforms": ("regnet.transforms", None),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'regnet' has no attribute {name!r}")
    module_name, attr = _LAZY[name]
    module = import_module(module_name)
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value
    return value


def __dir__():
    return sorted(__all__)
