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
