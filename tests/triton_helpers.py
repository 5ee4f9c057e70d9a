"""Shared pieces of the Triton kernel tests (``tests/test_triton_*.py``).

The kernels run on CPU tensors through the Triton interpreter. Triton decides "interpreted
or compiled" when a function is decorated, i.e. when ``triton.language`` and
``regnet.ops._triton`` are first imported, so ``TRITON_INTERPRET=1`` must be set before the
first ``import triton`` of the process: ``tests/conftest.py`` sets it (``setdefault``), each
test module does too (for runs that bypass the conftest), and so does this module.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

MODES = ("bilinear", "nearest")
PADDINGS = ("zeros", "border", "reflection")

# Triton 3.6's interpreter turns a one-element array into a loop bound with a NumPy deprecation.
INTERPRETER_WARNINGS = pytest.mark.filterwarnings("ignore:Conversion of an array with ndim > 0:DeprecationWarning")


def _interpreted(fn) -> bool:
    return type(fn).__name__ == "InterpretedFunction"


def triton_device(kernel) -> torch.device:
    """Where ``kernel`` runs: the CPU under the interpreter, CUDA when compiled; skips the
    calling test module when the kernels are compiled and there is no CUDA device."""
    import triton.language as tl

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
    return torch.full(shape, float("nan") if dtype.is_floating_point else -7, dtype=dtype, device=device)


def small_blocks_and_poisoned_buffers(monkeypatch, *modules, block=16):
    """Shrink each module's ``BLOCK`` (several programs per batch item and a partial last
    block) and make its ``_empty`` buffers poisoned (:func:`poison`)."""
    for module in modules:
        monkeypatch.setattr(module, "BLOCK", block)
        monkeypatch.setattr(module, "_empty", poison)


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
