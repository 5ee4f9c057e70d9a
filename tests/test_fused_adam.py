"""regnet's FusedAdam against torch.optim.Adam / AdamW, step for step, and the start-up it saves."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from regnet.registration._adam import FusedAdam
from regnet.registration._levels import make_optimizer


def _run(make, steps=25, dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(5, 4, dtype=dtype)), torch.nn.Parameter(torch.randn(3, dtype=dtype))]
    optimizer = make(params)
    history = []
    for i in range(steps):
        optimizer.zero_grad(set_to_none=True)
        loss = sum(((p - 0.1 * i) ** 2 * (k + 1)).sum() for k, p in enumerate(params))
        loss.backward()
        optimizer.step()
        history.append([p.detach().clone() for p in params])
    return history


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("torch_class,decoupled", [(torch.optim.Adam, False), (torch.optim.AdamW, True)])
def test_equals_torch_fused_bit_for_bit(torch_class, decoupled, dtype):
    ours = _run(lambda ps: FusedAdam(ps, 0.05, decoupled=decoupled), dtype=dtype)
    theirs = _run(lambda ps: torch_class(ps, 0.05, fused=True), dtype=dtype)
    for a, b in zip(ours, theirs, strict=True):
        for x, y in zip(a, b, strict=True):
            assert torch.equal(x, y)


@pytest.mark.parametrize("torch_class,decoupled", [(torch.optim.Adam, False), (torch.optim.AdamW, True)])
def test_matches_torch_default_implementation(torch_class, decoupled):
    ours = _run(lambda ps: FusedAdam(ps, 0.05, decoupled=decoupled), dtype=torch.float64)
    theirs = _run(lambda ps: torch_class(ps, 0.05), dtype=torch.float64)  # foreach, not fused
    for a, b in zip(ours, theirs, strict=True):
        for x, y in zip(a, b, strict=True):
            torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-12)


def test_parameters_without_gradient_are_skipped_and_zero_grad():
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    adam = FusedAdam([a, b], 0.1)
    a.grad = torch.ones(2)
    adam.step()
    assert torch.allclose(a, torch.full((2,), -0.1)) and torch.equal(b, torch.zeros(2))
    assert b not in adam.state and float(adam.state[a]["step"]) == 1.0
    adam.zero_grad(set_to_none=False)
    assert torch.equal(a.grad, torch.zeros(2))
    adam.zero_grad()
    assert a.grad is None


def test_make_optimizer_uses_it_for_adam_and_adamw():
    p = [torch.nn.Parameter(torch.zeros(2))]
    assert isinstance(make_optimizer(torch.optim.Adam, p, 0.1), FusedAdam)
    adamw = make_optimizer(torch.optim.AdamW, p, 0.1)
    assert adamw.decoupled and adamw.param_groups[0]["weight_decay"] == 1e-2
    assert isinstance(make_optimizer(torch.optim.SGD, p, 0.1), torch.optim.SGD)


def test_bad_arguments():
    with pytest.raises(ValueError, match="params must hold"):
        FusedAdam([], 0.1)
    with pytest.raises(TypeError, match="floating tensors"):
        FusedAdam([torch.zeros(2, dtype=torch.int64)], 0.1)
    with pytest.raises(ValueError, match="lr"):
        FusedAdam([torch.zeros(2)], 0.0)


def test_a_registration_does_not_import_dynamo():
    code = ("import sys, torch\n"
            "from regnet import AffineRegistration, SyNRegistration\n"
            "m, s = torch.rand(1, 1, 24, 24), torch.rand(1, 1, 24, 24)\n"
            "AffineRegistration(scales=(2, 1), iterations=3, verbose=False)(m, s)\n"
            "SyNRegistration(scales=(2, 1), iterations=3, verbose=False)(m, s)\n"
            "print('torch._dynamo' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
