"""CUDA-graph replay of registration iterations (regnet/registration/_graph.py).

Without a GPU the graph itself cannot run; these tests check the decision, the iteration
bookkeeping (warm-up, capture, replay, cloned outputs, fallback) with a stand-in for the CUDA
calls that replays by running the body again, and that the registrations give the same numbers
either way. The last test runs the real capture on CUDA and skips elsewhere.
"""

from __future__ import annotations

import warnings

import pytest
import torch

import regnet.registration.affine as affine_module
import regnet.registration.syn as syn_module
from regnet.geometry import resize_field
from regnet.losses import DiffusionLoss, LocalNCCLoss, MSELoss
from regnet.ops import _backend, _state
from regnet.ops._constants import constant
from regnet.registration import _graph
from regnet.registration.affine import AffineRegistration
from regnet.registration.syn import SyNRegistration

CUDA = torch.device("cuda")


def test_graph_wanted_off_cuda_and_auto_rules():
    cpu = torch.device("cpu")
    assert not _graph.graph_wanted(True, cpu, torch.optim.Adam, [MSELoss()])
    assert not _graph.graph_wanted(None, cpu, torch.optim.Adam, [MSELoss()])
    assert _graph.graph_wanted(None, CUDA, torch.optim.Adam, [LocalNCCLoss(), DiffusionLoss(), None])
    assert _graph.graph_wanted(None, CUDA, torch.optim.AdamW, [MSELoss()])
    assert not _graph.graph_wanted(None, CUDA, torch.optim.SGD, [MSELoss()])  # not known to be capturable
    assert not _graph.graph_wanted(None, CUDA, torch.optim.Adam, [lambda a, b: (a - b).abs().mean()])
    assert not _graph.graph_wanted(None, CUDA, torch.optim.Adam, [torch.nn.MSELoss()])  # not regnet's
    assert _graph.graph_wanted(True, CUDA, torch.optim.SGD, [lambda a, b: 0])
    assert not _graph.graph_wanted(False, CUDA, torch.optim.Adam, [MSELoss()])
    with pytest.raises(TypeError, match="cuda_graph must be None"):
        _graph.graph_wanted("yes", CUDA, torch.optim.Adam, [])


def test_bad_cuda_graph_argument():
    with pytest.raises(TypeError, match="AffineRegistration: cuda_graph"):
        AffineRegistration(cuda_graph=1)
    with pytest.raises(TypeError, match="SyNRegistration: cuda_graph"):
        SyNRegistration(cuda_graph="auto")


class FakeGraph:
    """Stands in for a captured graph: the capture ran the body once (a real capture runs no
    kernel, but a real capture is followed by a replay, which the first fake replay skips);
    each later replay runs it again and copies the results into the static outputs, after
    clearing the gradients as the captured backward would overwrite them."""

    def __init__(self, fn, optimizer, outputs):
        self.fn, self.optimizer, self.outputs = fn, optimizer, outputs
        self.replays = 0

    def replay(self):
        self.replays += 1
        if self.replays == 1:
            return
        self.optimizer.zero_grad(set_to_none=True)
        for static, new in zip(self.outputs, self.fn()):
            if static is not None:
                static.copy_(new)


@pytest.fixture
def fake_cuda(monkeypatch):
    """Graphs on for CPU tensors, with FakeGraph for the capture; returns the graphs made."""
    graphs = []

    def capture(fn, optimizer):
        optimizer.zero_grad(set_to_none=True)
        graph = FakeGraph(fn, optimizer, fn())
        graphs.append(graph)
        return graph, graph.outputs

    monkeypatch.setattr(_graph, "_capture", capture)
    monkeypatch.setattr(_graph, "_on_side_stream", lambda fn: fn())
    for module in (affine_module, syn_module):
        monkeypatch.setattr(module, "graph_wanted", lambda setting, *args: setting is not False)
    return graphs


def _pair_2d():
    torch.manual_seed(0)
    y, x = torch.meshgrid(torch.linspace(-1, 1, 32), torch.linspace(-1, 1, 32), indexing="ij")
    static = torch.exp(-((x - 0.1) ** 2 + (y + 0.05) ** 2) / 0.2) + 0.5 * torch.exp(-((x + 0.4) ** 2 + y**2) / 0.05)
    moving = torch.exp(-((x + 0.05) ** 2 + (y - 0.1) ** 2) / 0.25) + 0.5 * torch.exp(-((x + 0.3) ** 2 + y**2) / 0.04)
    return moving[None, None].double(), static[None, None].double()


def test_runner_warms_up_captures_replays_and_clones(fake_cuda):
    calls = []
    weight = torch.nn.Parameter(torch.zeros(()))
    optimizer = torch.optim.SGD([weight], lr=0.1)

    def body():
        calls.append(1)
        loss = (weight - 1.0) ** 2
        loss.backward()
        optimizer.step()
        return (loss.detach(),)

    runner = _graph.IterationRunner(body, optimizer, graph=True)
    losses = [runner()[0] for _ in range(8)]
    assert len(fake_cuda) == 1 and fake_cuda[0].replays == 8 - _graph.WARMUP
    assert len(calls) == 8  # one body run per iteration (warm-up, capture, replays)
    expected = [0.64**k for k in range(8)]  # w_k = 1 - 0.8**k
    assert torch.allclose(torch.stack(losses), torch.tensor(expected))
    assert len({id(t) for t in losses}) == 8  # clones: the log keeps every iteration's value


@pytest.mark.parametrize("batch", [1, 2])  # 2: per-item losses as a second output
def test_affine_same_numbers_with_graph(fake_cuda, batch):
    moving, static = _pair_2d()
    if batch == 2:
        moving, static = torch.cat([moving, moving.flip(-1)]), torch.cat([static, static])
    results = []
    for cuda_graph in (False, True):
        reg = AffineRegistration(scales=(2, 1), iterations=(30, 12), verbose=False, tolerance=0,
                                 cuda_graph=cuda_graph)
        reg(moving, static, return_moved=False)
        results.append((reg.get_affine(), reg.loss_history))
    assert len(fake_cuda) == 2  # one graph per level
    assert torch.equal(results[0][0], results[1][0])
    assert results[0][1] == results[1][1]


def test_syn_same_numbers_with_graph(fake_cuda):
    moving, static = _pair_2d()
    results = []
    for cuda_graph in (False, True):
        reg = SyNRegistration(scales=(2, 1), iterations=(8, 5), verbose=False, tolerance=0, cuda_graph=cuda_graph)
        reg(moving, static, return_moved=False)
        results.append((reg.v_xy, reg.v_yx, reg.loss_history))
    assert len(fake_cuda) == 2
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])
    assert results[0][2] == results[1][2]
    assert len(set(results[1][2][0])) > 1  # the losses change from iteration to iteration


def test_failed_capture_warns_and_goes_on_eagerly(monkeypatch):
    def capture(fn, optimizer):
        for group in optimizer.param_groups:  # a partial capture may leave garbage gradients
            for p in group["params"]:
                p.grad = torch.full_like(p, float("nan"))
        raise RuntimeError("CUDA error: operation not permitted when stream is capturing")

    monkeypatch.setattr(_graph, "_capture", capture)
    monkeypatch.setattr(_graph, "_on_side_stream", lambda fn: fn())
    monkeypatch.setattr(syn_module, "graph_wanted", lambda setting, *args: setting is not False)
    moving, static = _pair_2d()
    eager = SyNRegistration(scales=(1,), iterations=6, verbose=False, tolerance=0, cuda_graph=False)
    eager(moving, static, return_moved=False)
    reg = SyNRegistration(scales=(1,), iterations=6, verbose=False, tolerance=0, cuda_graph=True)
    with pytest.warns(RuntimeWarning, match="CUDA graph capture of the registration iteration failed"):
        reg(moving, static, return_moved=False)
    assert reg.loss_history == eager.loss_history  # a failed capture runs nothing
    assert torch.equal(reg.v_xy, eager.v_xy)


def test_constants_are_cached_and_resize_field_uses_them():
    a = constant([1.0, 2.0], torch.float32, "cpu")
    assert a is constant((1, 2), torch.float32, torch.device("cpu"))
    assert a is not constant([1.0, 2.0], torch.float64, "cpu")
    u = torch.randn(1, 2, 5, 9, dtype=torch.float64)
    out = resize_field(u, (9, 5))
    expected = torch.nn.functional.interpolate(u, size=(9, 5), mode="bilinear", align_corners=True)
    expected = expected * torch.tensor([8 / 4, 4 / 8], dtype=torch.float64).view(1, 2, 1, 1)
    assert torch.allclose(out, expected, atol=1e-12)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (the CUDA-graph capture itself)")
def test_real_capture_on_cuda_matches_eager():
    moving, static = (t.float().cuda() for t in _pair_2d())
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a failed capture would warn
        out = {}
        for cuda_graph in (False, True):
            affine = AffineRegistration(scales=(2, 1), iterations=(30, 12), verbose=False, tolerance=0,
                                        cuda_graph=cuda_graph)
            affine(moving, static, return_moved=False)
            syn = SyNRegistration(scales=(2, 1), iterations=(10, 5), verbose=False, tolerance=0,
                                  cuda_graph=cuda_graph)
            syn(moving, static, return_moved=False)
            out[cuda_graph] = (affine.get_affine(), syn.v_xy, syn.loss_history)
    assert torch.allclose(out[True][0], out[False][0], atol=1e-5)
    assert torch.allclose(out[True][1], out[False][1], atol=1e-4)
    assert len(out[True][2][0]) == 10


class HostReadSpy(torch.overrides.TorchFunctionMode):
    """Records calls that cannot run inside a CUDA-graph capture when regnet makes them: reads of
    device values on the host (``item``, ``tolist``, ``bool(t)``, ``float(t)``, ``.cpu()``,
    ``.numpy()``) and tensors built from Python data (``torch.tensor``: a host-to-device copy on
    CUDA). Calls made by Triton itself (its interpreter copies arguments to NumPy) are skipped."""

    NAMES = {"item", "tolist", "__bool__", "__float__", "__int__", "cpu", "numpy", "tensor", "as_tensor",
             "from_numpy"}

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in self.NAMES:
            import sys

            caller = sys._getframe(1).f_code.co_filename
            if "triton" not in caller.replace("\\", "/").split("/site-packages/")[-1].split("/")[0]:
                self.calls.append(f"{name} from {caller}:{sys._getframe(1).f_lineno}")
        return func(*args, **(kwargs or {}))


@pytest.mark.filterwarnings("ignore:Conversion of an array with ndim > 0:DeprecationWarning")
@pytest.mark.parametrize("case", ["syn-lncc", "syn-mi", "syn-deterministic", "affine-mse"])
def test_captured_iteration_reads_nothing_back_from_the_device(monkeypatch, case):
    """The iteration that would be captured (after the eager warm-up), on the Triton backend (what
    runs on CUDA; in CI through the interpreter, on a GPU compiled), makes no host read and builds no tensor from
    Python data: on a GPU either would break the capture."""
    pytest.importorskip("triton")
    import regnet
    from regnet.losses import GlobalMILoss

    spies = []

    def capture(fn, optimizer):
        optimizer.zero_grad(set_to_none=True)
        with HostReadSpy() as spy:
            outputs = fn()
        spies.append(spy)
        graph = FakeGraph(fn, optimizer, outputs)
        return graph, outputs

    monkeypatch.setattr(_graph, "_capture", capture)
    monkeypatch.setattr(_graph, "_on_side_stream", lambda fn: fn())
    for module in (affine_module, syn_module):
        monkeypatch.setattr(module, "graph_wanted", lambda setting, *args: setting is not False)
    from triton_helpers import triton_device

    device = triton_device()  # the interpreter's CPU, or CUDA when the kernels are compiled
    moving, static = (t.float()[..., :16, :16].to(device) for t in _pair_2d())
    monkeypatch.setattr(_state, "AUTO_TRITON_DEVICES", ("cuda", "cpu"))  # auto picks what it picks on CUDA
    regnet.set_backend("auto")
    _backend.set_deterministic(case == "syn-deterministic")  # sort + gather image gradients
    try:
        if case == "affine-mse":
            AffineRegistration(scales=(1,), iterations=_graph.WARMUP + 1, verbose=False, tolerance=0)(moving, static)
        else:
            loss = GlobalMILoss(num_bins=8) if case == "syn-mi" else None
            SyNRegistration(scales=(1,), iterations=_graph.WARMUP + 1, verbose=False, tolerance=0,
                            dissimilarity_function=loss)(moving, static, return_moved=False)
    finally:
        regnet.set_backend(None)
        _backend.set_deterministic(False)
    assert len(spies) == 1
    assert spies[0].calls == []
