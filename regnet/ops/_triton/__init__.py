"""Fused Triton kernels, registered per op in ``KERNELS`` (``{op_name: namespace}``).

Each namespace exposes the same ``<op>_forward`` / ``<op>_backward`` functions as the
reference backend :mod:`regnet.ops._torch` for the ops it lists. ``"auto"`` takes them for
CUDA tensors; ``backend="triton"`` takes them on any device, which is how the tests run
them on the CPU with ``TRITON_INTERPRET=1``. Without Triton, ``KERNELS`` is empty and every
op falls back to the reference (or ``backend="triton"`` raises a clear error).

Nothing here imports the dispatcher (:mod:`regnet.ops._backend`): the kernels read the
global state (deterministic mode) from :mod:`regnet.ops._state`. The shared pieces live in
``_common.py`` (host side: buffers, dtypes) and ``_interpolation.py`` (sample points,
padding, interpolation corners of the sampling family).
"""

from types import ModuleType

KERNELS: dict[str, ModuleType]
try:
    import triton  # noqa: F401
except ImportError:  # pragma: no cover - depends on the environment
    KERNELS = {}
else:
    from regnet.ops._triton import affine, fields, gaussian, joint_histogram, local_ncc, sampling

    KERNELS = {
        "grid_sample": sampling,
        "warp": sampling,
        "affine_transform": sampling,
        "affine_transform_params": affine,
        "compose": fields,
        "exp": fields,
        "gaussian_smooth": gaussian,
        "joint_histogram": joint_histogram,
        "local_ncc": local_ncc,
    }

NAME = "triton"
