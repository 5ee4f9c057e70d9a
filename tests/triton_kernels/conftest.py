"""Set-up shared by every Triton kernel test module in this folder.

The kernels are compared with the reference backend on CPU tensors through Triton's
interpreter (``TRITON_INTERPRET=1``; with ``TRITON_INTERPRET=0`` on a CUDA machine the same
tests run the compiled kernels against ATen's CUDA code). The variable must be set before the
process first imports Triton: ``tests/conftest.py`` sets it, and so does this file for runs
that start here. Without Triton the folder is not collected.

Every test here runs with:

- every kernel module's ``BLOCK`` shrunk to 16, so that a batch item spans several programs
  with a partial last block (modules lower other limits, e.g. ``PROGRAMS``, themselves);
- the buffers the kernels must fill completely poisoned (NaN; -7 for integer buffers):
  ``regnet.ops._triton._common.empty`` replaced by :func:`triton_helpers.poison`;
- deterministic mode off before and after (tests that want it switch it on);
- the Triton 3.6 interpreter's NumPy deprecation warning ignored;
- dtypes named in the test ids (``float32``, not ``dtype0``).

The folder is a package (``__init__.py``): its modules import as ``triton_kernels.<name>``, so
this file does not replace ``tests/conftest.py`` as the module ``conftest`` that other test
modules import from. It is not called ``triton``, which would shadow the Triton package.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import importlib.util  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from triton_helpers import INTERPRETER_WARNINGS, small_blocks_and_poisoned_buffers  # noqa: E402

HERE = Path(__file__).resolve().parent

if importlib.util.find_spec("triton") is None:  # pragma: no cover - depends on the environment
    collect_ignore_glob = ["test_*.py"]


def pytest_collection_modifyitems(config, items):
    for item in items:
        if HERE in Path(item.path).resolve().parents:
            item.add_marker(INTERPRETER_WARNINGS)


def pytest_make_parametrize_id(config, val, argname):
    """``float32`` rather than ``dtype0`` in the test ids."""
    import torch

    return str(val).removeprefix("torch.") if isinstance(val, torch.dtype) else None


@pytest.fixture(autouse=True)
def _kernel_test_setup(monkeypatch):
    from regnet.ops import _state

    small_blocks_and_poisoned_buffers(monkeypatch)
    _state.set_deterministic(False)
    yield
    _state.set_deterministic(False)
