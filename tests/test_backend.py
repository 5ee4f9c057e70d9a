"""Backend selection: per call, global, environment; clear errors for unknown names."""

import pytest
import torch

import regnet
from regnet import ops
from regnet.ops import _backend, _torch


@pytest.fixture(autouse=True)
def _reset_backend(monkeypatch):
    monkeypatch.delenv("REGNET_BACKEND", raising=False)
    regnet.set_backend(None)
    yield
    regnet.set_backend(None)


def test_auto_on_cpu_is_reference():
    assert regnet.get_backend() == "auto"
    assert _backend.select("warp", torch.device("cpu")) is _torch


def test_precedence_call_over_global_over_env(monkeypatch):
    monkeypatch.setenv("REGNET_BACKEND", "triton")
    assert regnet.get_backend() == "triton"
    regnet.set_backend("torch")
    assert regnet.get_backend() == "torch"
    assert _backend.select("warp", torch.device("cpu"), backend="torch") is _torch


def test_unknown_names_are_rejected(monkeypatch):
    with pytest.raises(ValueError, match="set_backend"):
        regnet.set_backend("cuda")
    with pytest.raises(ValueError, match="backend"):
        ops.warp(torch.zeros(1, 1, 4, 4), torch.zeros(1, 2, 4, 4), backend="numpy")
    monkeypatch.setenv("REGNET_BACKEND", "bogus")
    with pytest.raises(ValueError, match="REGNET_BACKEND"):
        regnet.get_backend()


def test_triton_without_kernel_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(_backend, "_triton_kernels", lambda: {})
    with pytest.raises(ValueError, match="no Triton kernel"):
        ops.exp(torch.zeros(1, 2, 4, 4), backend="triton")


def test_auto_takes_a_registered_kernel_only_on_cuda(monkeypatch):
    fake = object()
    monkeypatch.setattr(_backend, "_triton_kernels", lambda: {"warp": fake})
    assert _backend.select("warp", torch.device("cuda")) is fake
    assert _backend.select("warp", torch.device("cpu")) is _torch
    assert _backend.select("exp", torch.device("cuda")) is _torch
    assert _backend.select("warp", torch.device("cpu"), backend="triton") is fake


def test_import_regnet_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, regnet; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_every_namespace_has_its_family_functions():
    """Each op's backend namespaces (the reference and the registered Triton kernels) have the
    functions of the op's family (regnet/ops/_protocols.py; mypy checks their signatures)."""
    from regnet.ops._protocols import FAMILIES

    for op, family in FAMILIES.items():
        assert isinstance(_backend.select(op, torch.device("cpu"), backend="torch"), family), op
    try:
        from regnet.ops._triton import KERNELS
    except ImportError:  # pragma: no cover - without Triton
        return
    assert set(KERNELS) <= set(FAMILIES)
    for op, namespace in KERNELS.items():
        assert isinstance(namespace, FAMILIES[op]), op


def test_state_is_a_leaf_and_the_dispatcher_reexports_it():
    import ast
    from pathlib import Path

    from regnet.ops import _state

    tree = ast.parse(Path(_state.__file__).read_text())
    imported = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [m for m in imported if m.startswith("regnet")], imported
    for name in ("set_backend", "get_backend", "set_deterministic", "is_deterministic", "BACKENDS",
                 "AUTO_TRITON_DEVICES"):
        assert getattr(_backend, name) is getattr(_state, name), name
    assert regnet.set_backend is _state.set_backend and ops.set_deterministic is _state.set_deterministic
