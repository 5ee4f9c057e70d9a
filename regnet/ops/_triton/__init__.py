"""Fused Triton kernels, registered per op in ``KERNELS`` (``{op_name: namespace}``).

Each namespace exposes the same ``<op>_forward`` / ``<op>_backward`` functions as the
reference backend :mod:`regnet.ops._torch` for the ops it lists. ``"auto"`` takes them for
CUDA tensors; ``backend="triton"`` takes them on any device, which is how the tests run
them on the CPU with ``TRITON_INTERPRET=1``. Without Triton, ``KERNELS`` is empty and every
op falls back to the reference (or ``backend="triton"`` raises a clear error).
"""

try:
    import triton  # noqa: F401
except ImportError:  # pragma: no cover - depends on the environment
    KERNELS: dict = {}
else:
    from regnet.ops._triton import fields, gaussian, joint_histogram, local_ncc, sampling

    KERNELS = {
        "grid_sample": sampling,
        "warp": sampling,
        "affine_transform": sampling,
        "compose": fields,
        "exp": fields,
        "gaussian_smooth": gaussian,
        "joint_histogram": joint_histogram,
        "local_ncc": local_ncc,
    }

NAME = "triton"
