"""Shared pieces of the Triton kernel tests (``tests/triton_kernels/``, ``tests/test_broadcast.py``).

The kernels run on CPU tensors through the Triton interpreter. Triton decides "interpreted
or compiled" when a function is decorated, i.e. when ``triton.language`` and
``regnet.ops._triton`` are first imported, so ``TRITON_INTERPRET=1`` must be set before the
first ``import triton`` of the process: ``tests/conftest.py`` sets it (``setdefault``), and so
do ``tests/triton_kernels/conftest.py`` and this module, for runs that bypass the root conftest.
The per-test set-up of the kernel tests (small blocks, poisoned buffers, deterministic mode
off, the interpreter's warnings) is ``tests/triton_kernels/conftest.py``.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

MODES = ("bilinear", "nearest")
PADDINGS = ("zeros", "border", "reflection")
DTYPES = (torch.float32, torch.float64)

# Triton 3.6's interpreter turns a one-element array into a loop bound with a NumPy deprecation.
INTERPRETER_WARNINGS = pytest.mark.filterwarnings("ignore:Conversion of an array with ndim > 0:DeprecationWarning")


def _interpreted(fn) -> bool:
    return type(fn).__name__ == "InterpretedFunction"


def triton_device() -> torch.device:
    """Where the kernels run: the CPU under the interpreter, CUDA when compiled; skips the
    calling test module when the kernels are compiled and there is no CUDA device."""
    import triton.language as tl

    from regnet.ops._triton import sampling

    kernel = sampling._sample_forward_kernel
    if _interpreted(kernel) and _interpreted(tl.zeros):
        return torch.device("cpu")
    if not _interpreted(kernel) and torch.cuda.is_available():
        return torch.device("cuda")
    pytest.skip(  # pragma: no cover - depends on how the process imported Triton
        "the Triton kernels are compiled (Triton was imported before TRITON_INTERPRET=1 was set, or it is 0) "
        "and there is no CUDA device to run them", allow_module_level=True,
    )


def poison(shape, dtype, device):
    """A buffer a kernel must fill completely: NaN (-7 for integer dtypes)."""
    return torch.full(tuple(shape), float("nan") if dtype.is_floating_point else -7, dtype=dtype, device=device)


def small_blocks_and_poisoned_buffers(monkeypatch, block=16):
    """Shrink every kernel module's ``BLOCK`` (several programs per batch item and a partial
    last block) and make the buffers the kernels must fill poisoned (:func:`poison` in place
    of ``regnet.ops._triton._common.empty``)."""
    from regnet.ops._triton import _common, fields, gaussian, joint_histogram, local_ncc, sampling, scatter

    for module in (sampling, fields, scatter, gaussian, local_ncc, joint_histogram):
        monkeypatch.setattr(module, "BLOCK", block)
    monkeypatch.setattr(_common, "empty", poison)


def cycle(options, *indices):
    """One of ``options`` chosen by the sum of ``indices``: spreads a secondary option (a dtype)
    over the combinations of the primary ones so that each value meets each primary option,
    without the full product (see the parametrisations of the kernel tests)."""
    return options[sum(indices) % len(options)]


def far(x, every, low, high):
    """Move every ``every``-th entry of ``x`` to a random distance in [low, high], either sign."""
    flat = x.view(-1)
    idx = torch.arange(0, flat.numel(), every, device=x.device)
    sign = torch.randint(0, 2, idx.shape, device=x.device) * 2 - 1
    flat[idx] = sign * (low + (high - low) * torch.rand(idx.shape, dtype=x.dtype, device=x.device))
    return x


def run_weighted(fn, inputs, backend, weight):
    """``fn(*inputs, backend=backend)`` and the gradients of ``sum(out * weight)`` w.r.t. every input."""
    leaves = [x.detach().clone().requires_grad_() for x in inputs]
    out = fn(*leaves, backend=backend)
    (out * weight).sum().backward()
    return [out.detach(), *(x.grad for x in leaves)]


def compare_with_reference(fn, inputs, tol, *, overrides=None, reference_dtype=None):
    """Triton against the reference: the output of ``fn(*inputs, backend=...)`` and the
    gradient of ``sum(out * weight)`` (a random weight) w.r.t. every input. ``tol``
    (``{"rtol", "atol"}``) for each result, ``overrides`` per result name (``"output"``,
    ``"grad[i]"``); ``reference_dtype``: the reference runs on the inputs cast to it (the oracle
    of half-precision kernels). Checks the dtype, the shape and that no element is NaN (buffers
    start poisoned). Returns the Triton results."""
    dtype = inputs[0].dtype
    ref_inputs = inputs if reference_dtype is None else [x.to(reference_dtype) for x in inputs]
    with torch.no_grad():
        shape = fn(*ref_inputs, backend="torch").shape
    weight = torch.randn(shape, dtype=ref_inputs[0].dtype, device=ref_inputs[0].device)
    expected = run_weighted(fn, ref_inputs, "torch", weight)
    actual = run_weighted(fn, inputs, "triton", weight.to(dtype))
    for name, a, e in zip(("output", *(f"grad[{i}]" for i in range(len(inputs)))), actual, expected):
        assert a.dtype == dtype and a.shape == e.shape, name
        assert not a.isnan().any(), f"{name}: NaN (an element the kernel did not write)"
        torch.testing.assert_close(a.to(e.dtype), e, **(overrides or {}).get(name, tol),
                                   msg=lambda m, name=name: f"{name}: {m}")
    return actual


def run_pair(op, pred, target, backend, weight, needs=(True, True), **options):
    """``op(pred, target, backend=backend, **options)`` (detached copies, requiring the gradients
    ``needs`` asks for) and the gradients of ``sum(out * weight)``: ``(out, grad_pred, grad_target)``."""
    a = pred.detach().clone().requires_grad_(needs[0])
    b = target.detach().clone().requires_grad_(needs[1])
    out = op(a, b, backend=backend, **options)
    (out * weight).sum().backward()
    return out.detach(), a.grad, b.grad


def compare_pair(op, names, pred, target, tol, needs=(True, True), reference_dtype=None, **options):
    """A two-image op (``local_ncc``, ``joint_histogram``) on Triton against the reference:
    :func:`run_pair` under one random weight, checked with :func:`assert_like_reference`
    (``names``: of the output and the two gradients). Returns the Triton results."""
    ref_pred = pred if reference_dtype is None else pred.to(reference_dtype)
    ref_target = target if reference_dtype is None else target.to(reference_dtype)
    with torch.no_grad():
        shape = op(ref_pred, ref_target, backend="torch", **options).shape
    weight = torch.randn(shape, dtype=ref_pred.dtype, device=pred.device)
    expected = run_pair(op, ref_pred, ref_target, "torch", weight, needs, **options)
    actual = run_pair(op, pred, target, "triton", weight.to(pred.dtype), needs, **options)
    assert_like_reference(names, actual, expected, pred.dtype, tol)
    return actual


def assert_like_reference(names, actual, expected, dtype, tol, label=""):
    """Each kernel output against the reference's: ``None`` where the reference has ``None``;
    else ``dtype``, the reference's shape, no NaN (an element or partial sum the kernel did not
    write: buffers start poisoned) and values within ``tol`` (``{"rtol", "atol"}``, ``atol``
    relative to the largest reference value: gradients scale with the weights)."""
    for name, a, e in zip(names, actual, expected):
        if e is None:
            assert a is None, name
            continue
        assert a.dtype == dtype and a.shape == e.shape, name
        assert not a.isnan().any(), f"{label}{name}: NaN (an element or partial sum the kernel did not write)"
        scaled = {"rtol": tol["rtol"], "atol": tol["atol"] * max(1.0, e.abs().max().item())}
        torch.testing.assert_close(a.to(e.dtype), e, **scaled, msg=lambda m, name=name: f"{label}{name}: {m}")
