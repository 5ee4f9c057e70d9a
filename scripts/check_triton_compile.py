#!/usr/bin/env python
"""Compile every regnet Triton kernel for a GPU target without a GPU (no kernel runs).

For a machine without a GPU (like CI's and this project's): the interpreter tests
(``tests/test_triton_*.py``) check what the kernels compute, but not that Triton's compiler
accepts them (the interpreter is more lenient: types, constexpr use, pointer arithmetic).
This script makes Triton compile instead of interpret: it installs a stand-in for Triton's
active driver that reports an NVIDIA target (default sm_90, the H100 / H200) and turns every
kernel launch into a warm-up (compile only, no launch), then calls the ops on small CPU
tensors with ``backend="triton"`` in every configuration that selects a different kernel
specialisation: sampling sources x modes x paddings x alignment x rank x dtype, batch
broadcast and deterministic mode; compose / exp; Gaussian smoothing; local NCC (map, mean,
sum; one or both gradients); joint histogram (Gaussian, B-spline, deterministic). The ops'
results are garbage (nothing ran); only the compilation counts.

It compiles with the installed Triton (CI's newest, not necessarily the GPUs' 3.6); PTX is
assembled by the ptxas bundled with Triton. Exit status 1 if any kernel failed to compile, 3
if this Triton's internals (its driver and ``JITFunction.run``) cannot be driven this way.

Usage::

    python scripts/check_triton_compile.py [--arch 90] [--quick] [--resources]
"""

from __future__ import annotations

import argparse
import collections
import itertools
import os
import sys
import time
import warnings

os.environ["TRITON_INTERPRET"] = "0"  # before Triton is imported: compile, do not interpret


#: Exit status when this Triton's internals cannot be driven this way (tests skip on it).
UNSUPPORTED = 3


def install_fake_driver(arch: int) -> tuple[collections.Counter, list, dict]:
    """Make Triton compile (only) for ``sm_<arch>``; returns (compiled per kernel, failures,
    ``{hash: (kernel name, CompiledKernel)}`` of the distinct specialisations)."""
    from triton.backends.compiler import GPUTarget
    from triton.runtime import driver
    from triton.runtime.jit import JITFunction

    class CompileOnlyDriver:
        """Just what JITFunction's warm-up path asks of the active driver."""

        target = GPUTarget("cuda", arch, 32)

        def get_current_target(self):
            return self.target

        def get_current_device(self):
            return 0

        def get_current_stream(self, device=None):
            return 0

        def get_active_torch_device(self):
            import torch

            return torch.device("cpu")

        def map_python_to_cpp_type(self, ty):
            from triton.backends.nvidia.driver import ty_to_cpp

            return ty_to_cpp(ty)

    driver.set_active(CompileOnlyDriver())
    compiled, failures, distinct = collections.Counter(), [], {}
    run = JITFunction.run

    def compile_only(self, *args, grid, warmup, **kwargs):
        try:
            kernel = run(self, *args, grid=grid, warmup=True, **kwargs)
        except Exception as error:  # noqa: BLE001 - report every failure, go on
            failures.append((self.fn.__name__, f"{type(error).__name__}: {str(error)[:1500]}"))
            raise
        compiled[self.fn.__name__] += 1
        distinct[kernel.hash] = (self.fn.__name__, kernel)
        return kernel

    JITFunction.run = compile_only
    return compiled, failures, distinct


def resources(distinct: dict, arch: int) -> dict[str, dict]:
    """Per kernel: registers and spill bytes of each specialisation, from ``ptxas -v`` (Triton's
    bundled ptxas) on its PTX. Returns ``{name: {"specialisations", "max_registers",
    "max_spill_bytes"}}`` (-1 registers: ptxas reported none)."""
    import re
    import subprocess
    import tempfile

    from triton.backends.nvidia.compiler import get_ptxas

    ptxas = get_ptxas(arch).path  # the one Triton itself assembles this target's PTX with
    out: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for key, (name, kernel) in distinct.items():
            path = os.path.join(tmp, f"{key}.ptx")
            with open(path, "w") as f:
                f.write(kernel.asm["ptx"])
            log = subprocess.run([ptxas, f"-arch=sm_{arch}a" if arch >= 90 else f"-arch=sm_{arch}", "-v", path,
                                  "-o", os.devnull], capture_output=True, text=True).stderr
            registers = max((int(v) for v in re.findall(r"Used (\d+) registers", log)), default=-1)
            spills = sum(int(v) for v in re.findall(r"(\d+) bytes spill stores", log))
            entry = out.setdefault(name, {"specialisations": 0, "max_registers": 0, "max_spill_bytes": 0})
            entry["specialisations"] += 1
            entry["max_registers"] = max(entry["max_registers"], registers)
            entry["max_spill_bytes"] = max(entry["max_spill_bytes"], spills)
    return out


def configurations(quick: bool):
    """``(label, fn)`` pairs; each fn calls ops on small CPU tensors with the Triton backend."""
    import torch

    from regnet import ops
    from regnet.ops import _backend

    dtypes = (torch.float32,) if quick else (torch.float32, torch.float64, torch.float16, torch.bfloat16)

    def grads(out, *leaves):
        torch.autograd.grad(out.float().sum(), [x for x in leaves if x.requires_grad], allow_unused=True)

    def sampling(op, ndim, mode, padding, align, dtype, shared, det):
        spatial = (5, 6, 4)[:ndim]
        batch = 2
        image = torch.rand((1 if shared else batch, 2, *spatial), dtype=dtype, requires_grad=True)
        if op == "grid_sample":
            src = torch.rand((batch, *spatial, ndim), dtype=dtype, requires_grad=True)
            out = ops.grid_sample(image, src, mode, padding, align, backend="triton")
        elif op == "warp":
            src = torch.rand((batch, ndim, *spatial), dtype=dtype, requires_grad=True)
            out = ops.warp(image, src, mode, padding, backend="triton")
        else:
            src = torch.eye(ndim, ndim + 1, dtype=dtype).repeat(batch, 1, 1).requires_grad_()
            out = ops.affine_transform(image, src, None, mode, padding, align, backend="triton")
        _backend.set_deterministic(det)
        try:
            grads(out, image, src)
        finally:
            _backend.set_deterministic(False)

    for op, ndim, mode, padding, align, dtype in itertools.product(
        ("grid_sample", "warp", "affine_transform"), (2, 3), ("bilinear", "nearest"),
        ("zeros", "border", "reflection"), (False, True), dtypes,
    ):
        if op == "warp" and not align:
            continue
        yield f"{op} {ndim}D {mode} {padding} align={align} {dtype}", \
            lambda a=(op, ndim, mode, padding, align, dtype, False, False): sampling(*a)
    for op, ndim, shared, det in itertools.product(("grid_sample", "warp", "affine_transform"), (2, 3),
                                                   (False, True), (False, True)):
        yield f"{op} {ndim}D broadcast={shared} deterministic={det}", \
            lambda a=(op, ndim, "bilinear", "border", True, torch.float32, shared, det): sampling(*a)

    def fields(ndim, dtype, det):
        spatial = (5, 6, 4)[:ndim]
        u1 = torch.rand((2, ndim, *spatial), dtype=dtype, requires_grad=True)
        u2 = torch.rand((2, ndim, *spatial), dtype=dtype, requires_grad=True)
        _backend.set_deterministic(det)
        try:
            grads(ops.compose(u1, u2, backend="triton"), u1, u2)
            grads(ops.exp(u1, 3, backend="triton"), u1)
        finally:
            _backend.set_deterministic(False)

    for ndim, dtype, det in itertools.product((2, 3), dtypes, (False, True)):
        yield f"compose/exp {ndim}D {dtype} deterministic={det}", lambda a=(ndim, dtype, det): fields(*a)

    def gaussian(ndim, mode, dtype):
        x = torch.rand((2, 3, *(7, 6, 5)[:ndim]), dtype=dtype, requires_grad=True)
        grads(ops.gaussian_smooth(x, 1.0, mode=mode, backend="triton"), x)

    for ndim, mode, dtype in itertools.product((1, 2, 3), ("reflect", "nearest", "mirror", "wrap", "constant"),
                                               dtypes):
        yield f"gaussian_smooth {ndim}D {mode} {dtype}", lambda a=(ndim, mode, dtype): gaussian(*a)

    def lncc(ndim, kernel_type, convention, reduction, dtype, both):
        p = torch.rand((2, 1, *(9, 8, 7)[:ndim]), dtype=dtype, requires_grad=True)
        t = torch.rand((2, 1, *(9, 8, 7)[:ndim]), dtype=dtype, requires_grad=both)
        out = ops.local_ncc(p, t, 5, kernel_type, convention=convention, reduction=reduction, backend="triton")
        grads(out, p, t)

    for args in itertools.product((1, 2, 3), ("rectangular", "gaussian", "triangular"), ("monai", "torchreg"),
                                  ("none", "mean", "sum"), dtypes, (False, True)):
        yield "local_ncc " + " ".join(map(str, args)), lambda a=args: lncc(*a)

    def histogram(ndim, kernel, dtype, det):
        p = torch.rand((2, 1, *(9, 8, 7)[:ndim]), dtype=dtype, requires_grad=True)
        t = torch.rand((2, 1, *(9, 8, 7)[:ndim]), dtype=dtype, requires_grad=True)
        _backend.set_deterministic(det)
        try:
            grads(ops.joint_histogram(p, t, 16, kernel, backend="triton"), p, t)
        finally:
            _backend.set_deterministic(False)

    for args in itertools.product((1, 2, 3), ("gaussian", "b-spline"), dtypes, (False, True)):
        yield "joint_histogram " + " ".join(map(str, args)), lambda a=args: histogram(*a)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", type=int, default=90, help="compute capability x 10 (default 90: H100/H200)")
    parser.add_argument("--quick", action="store_true", help="float32 only")
    parser.add_argument("--resources", action="store_true",
                        help="also report registers and spills per kernel (ptxas -v on each specialisation)")
    args = parser.parse_args(argv)
    import triton

    try:
        compiled, failures, distinct = install_fake_driver(args.arch)
    except (ImportError, AttributeError) as error:  # Triton's internals moved: say so, distinctly
        print(f"check_triton_compile: cannot drive Triton {triton.__version__}'s compiler without a GPU "
              f"({type(error).__name__}: {error})", file=sys.stderr)
        return UNSUPPORTED
    warnings.filterwarnings("ignore", category=UserWarning, module="triton")
    start = time.perf_counter()
    configs = broken = 0
    for label, fn in configurations(args.quick):
        configs += 1
        before = len(failures)
        try:
            fn()
        except Exception as error:  # noqa: BLE001
            broken += 1
            if len(failures) == before:  # failed outside a kernel compilation
                failures.append(("(host code)", f"{type(error).__name__}: {str(error)[:500]}"))
            print(f"FAILED {label}: {failures[-1][0]}: {failures[-1][1][:300]}", file=sys.stderr)
    print(f"Triton {triton.__version__}, sm_{args.arch}: {configs} configurations, "
          f"{sum(compiled.values())} kernel compilations ({len(compiled)} kernels), {broken} failed, "
          f"{time.perf_counter() - start:.0f} s")
    usage = resources(distinct, args.arch) if args.resources else {}
    for name, count in sorted(compiled.items()):
        extra = ""
        if name in usage:
            u = usage[name]
            extra = (f", {u['specialisations']} specialisations, <= {u['max_registers']} registers, "
                     f"<= {u['max_spill_bytes']} bytes spilled")
        print(f"  {name}: {count} launches{extra}")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
