#!/usr/bin/env python
"""Compile every regnet Triton kernel for a GPU target without a GPU (no kernel runs).

For a machine without a GPU (like CI's and this project's): the interpreter tests
(``tests/triton_kernels/``) check what the kernels compute, but not that Triton's compiler
accepts them (the interpreter is more lenient: types, constexpr use, pointer arithmetic).
This script makes Triton compile instead of interpret: it installs a stand-in for Triton's
active driver that reports an NVIDIA target (default sm_90, the H100 / H200) and turns every
kernel launch into a warm-up (compile only, no launch), then calls the ops on small CPU
tensors with ``backend="triton"`` in every configuration that selects a different kernel
specialisation: sampling sources x modes x paddings x alignment x rank x dtype, batch
broadcast and deterministic mode, the fused ``affine_transform_params``; compose / exp (modes,
paddings, deterministic); Gaussian smoothing; local NCC (map, mean, sum; one or both
gradients; with a voxel weight); joint histogram (Gaussian, B-spline, deterministic; with
sample weights). The ops' results are
garbage (nothing ran); only the compilation counts.

``--level subset`` (what the test suite runs, ~20 s on a clean Triton cache) compiles every
kernel with each of its options at least once, spread over a few configurations; ``quick``
the product of the options in float32; ``full`` (the default; ``tests/test_bench_scripts.py``
runs it marked ``slow``) in every dtype. Every level fails if some kernel of
``regnet.ops._triton`` was not compiled at all.

It compiles with the installed Triton (CI's newest, not necessarily the GPUs' 3.6); PTX is
assembled by the ptxas bundled with Triton. Exit status 1 if any kernel failed to compile, 3
if this Triton's internals (its driver and ``JITFunction.run``) cannot be driven this way.

Usage::

    python scripts/check_triton_compile.py [--arch 90] [--level subset|quick|full] [--match TEXT] [--resources]
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


#: What to compile: ``subset`` (the test suite's default): every kernel, each option of each
#: kernel (rank, source, mode, padding, alignment, dtype, deterministic, broadcast, reduction,
#: gradients) at least once, spread over few configurations instead of their product;
#: ``quick``: the product in float32; ``full``: the product in every dtype.
LEVELS = ("subset", "quick", "full")


def configurations(level: str = "full"):
    """``(label, fn)`` pairs; each fn calls ops on small CPU tensors with the Triton backend."""
    import torch

    from regnet import ops
    from regnet.ops import _backend

    every_dtype = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
    dtypes = every_dtype if level == "full" else (torch.float32,)
    subset = level == "subset"

    def pick(options, *indices):
        """The subset's choice: one of ``options``, spread by the indices of the other options."""
        return options[sum(indices) % len(options)]

    def grads(out, *leaves):
        torch.autograd.grad(out.float().sum(), [x for x in leaves if x.requires_grad], allow_unused=True)

    def deterministic(det, fn):
        _backend.set_deterministic(det)
        try:
            fn()
        finally:
            _backend.set_deterministic(False)

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
        elif op == "affine_transform":
            src = torch.eye(ndim, ndim + 1, dtype=dtype).repeat(batch, 1, 1).requires_grad_()
            out = ops.affine_transform(image, src, None, mode, padding, align, backend="triton")
        else:  # affine_transform_params: the theta source, through the fused op's namespace
            src = torch.eye(ndim, dtype=dtype).repeat(batch, 1, 1).requires_grad_()
            params = (torch.zeros(batch, ndim, dtype=dtype), src, torch.ones(batch, ndim, dtype=dtype),
                      torch.zeros(batch, ndim, dtype=dtype))
            out = ops.affine_transform_params(image, *params, None, mode, padding, align, backend="triton")
        deterministic(det, lambda: grads(out, image, src))

    sampling_ops = ("grid_sample", "warp", "affine_transform")
    modes, paddings = ("bilinear", "nearest"), ("zeros", "border", "reflection")
    if subset:  # each op x rank once (the source's branches); modes, paddings, alignments, dtypes spread
        cases = [(op, ndim, pick(modes, i, ndim), pick(paddings, i, ndim), op == "warp" or bool((i + ndim) % 2),
                  pick(every_dtype, i, ndim)) for i, op in enumerate(sampling_ops) for ndim in (2, 3)]
    else:
        cases = [case for case in itertools.product(sampling_ops, (2, 3), modes, paddings, (False, True), dtypes)
                 if case[0] != "warp" or case[4]]
    for op, ndim, mode, padding, align, dtype in cases:
        yield f"{op} {ndim}D {mode} {padding} align={align} {dtype}", \
            lambda a=(op, ndim, mode, padding, align, dtype, False, False): sampling(*a)
    broadcast = itertools.product(sampling_ops, (2, 3), (False, True), (False, True))
    if subset:  # each op once shared and once deterministic, in other ranks
        broadcast = [(op, 2 + (i + det) % 2, not det, det) for i, op in enumerate(sampling_ops) for det in (False, True)]
    for op, ndim, shared, det in broadcast:
        yield f"{op} {ndim}D broadcast={shared} deterministic={det}", \
            lambda a=(op, ndim, "bilinear", "border", True, torch.float32, shared, det): sampling(*a)
    yield "affine_transform_params 2D", \
        lambda: sampling("affine_transform_params", 2, "bilinear", "border", True, torch.float32, False, False)

    def fields(ndim, dtype, det, mode, padding):
        spatial = (5, 6, 4)[:ndim]
        u1 = torch.rand((2, ndim, *spatial), dtype=dtype, requires_grad=True)
        u2 = torch.rand((2, ndim, *spatial), dtype=dtype, requires_grad=True)
        deterministic(det, lambda: (grads(ops.compose(u1, u2, mode, padding, backend="triton"), u1, u2),
                                    grads(ops.exp(u1, 3, mode, padding, backend="triton"), u1)))

    cases = itertools.product((2, 3), dtypes, (False, True), modes, paddings)
    if subset:  # each rank x mode once, deterministic or not, paddings and dtypes spread (half inputs
        # add a specialisation per step kind: not in the deterministic cases, which add the plan and gather)
        cases = [(2, torch.float16, False, "bilinear", "reflection"), (2, torch.float32, True, "nearest", "zeros"),
                 (3, torch.float32, True, "bilinear", "border"), (3, torch.float64, False, "nearest", "zeros")]
    for args in cases:
        yield "compose/exp {}D {} deterministic={} {} {}".format(*args), lambda a=args: fields(*a)

    def gaussian(ndim, mode, dtype):
        x = torch.rand((2, 3, *(7, 6, 5)[:ndim]), dtype=dtype, requires_grad=True)
        grads(ops.gaussian_smooth(x, 1.0, mode=mode, backend="triton"), x)

    boundaries = ("reflect", "nearest", "mirror", "wrap", "constant")
    cases = itertools.product((1, 2, 3), boundaries, dtypes)
    if subset:  # each boundary mode once, ranks and dtypes spread
        cases = [(1 + j % 3, mode, pick(every_dtype, j)) for j, mode in enumerate(boundaries)]
    for ndim, mode, dtype in cases:
        yield f"gaussian_smooth {ndim}D {mode} {dtype}", lambda a=(ndim, mode, dtype): gaussian(*a)

    def lncc(ndim, kernel_type, convention, reduction, dtype, both, weighted=False):
        p = torch.rand((2, 1, *(9, 8, 7)[:ndim]), dtype=dtype, requires_grad=True)
        t = torch.rand((2, 1, *(9, 8, 7)[:ndim]), dtype=dtype, requires_grad=both)
        w = torch.rand((1, 1, *(9, 8, 7)[:ndim]), dtype=dtype) if weighted else None
        out = ops.local_ncc(p, t, 5, kernel_type, convention=convention, reduction=reduction, weight=w,
                            backend="triton")
        grads(out, p, t)

    windows, conventions, reductions = ("rectangular", "gaussian", "triangular"), ("monai", "torchreg"), \
        ("none", "mean", "sum")
    cases = itertools.product((1, 2, 3), windows, conventions, reductions, dtypes, (False, True))
    if subset:  # each rank and each reduction once (the window and convention are data, not specialisations)
        cases = [(ndim, windows[j], conventions[j % 2], reductions[j], every_dtype[j], bool(j % 2))
                 for j, ndim in enumerate((1, 2, 3))]
    for args in cases:
        yield "local_ncc " + " ".join(map(str, args)), lambda a=args: lncc(*a)
    # The voxel weight (masked losses): each reduction with one or both gradients, every dtype.
    cases = itertools.product((1, 2, 3), reductions, dtypes, (False, True))
    if subset:  # each reduction once, ranks, dtypes and gradients spread
        cases = [(3 - j, reduction, every_dtype[(j + 1) % 4], bool(j % 2)) for j, reduction in enumerate(reductions)]
    for ndim, reduction, dtype, both in cases:
        yield f"local_ncc weighted {ndim} {reduction} {dtype} {both}", \
            lambda a=(ndim, "rectangular", "monai", reduction, dtype, both, True): lncc(*a)

    def histogram(ndim, kernel, dtype, det, weighted=False):
        p = torch.rand((2, 1, *(9, 8, 7)[:ndim]), dtype=dtype, requires_grad=True)
        t = torch.rand((2, 1, *(9, 8, 7)[:ndim]), dtype=dtype, requires_grad=True)
        w = torch.rand((2, 1, *(9, 8, 7)[:ndim]), dtype=dtype) if weighted else None
        deterministic(det, lambda: grads(ops.joint_histogram(p, t, 16, kernel, weight=w, backend="triton"), p, t))

    kernels = ("gaussian", "b-spline")
    cases = itertools.product((1, 2, 3), kernels, dtypes, (False, True))
    if subset:  # each Parzen kernel deterministic or not, ranks and dtypes spread
        cases = [(1 + (j + det) % 3, kernel, pick(every_dtype, j, det), det)
                 for j, kernel in enumerate(kernels) for det in (False, True)]
    for args in cases:
        yield "joint_histogram " + " ".join(map(str, args)), lambda a=args: histogram(*a)
    cases = itertools.product((1, 2, 3), kernels, dtypes, (False, True))
    if subset:  # the sample weights: each Parzen kernel once, deterministic or not, dtypes spread
        cases = [(2 + j, kernel, pick(every_dtype, j, 2), bool(j)) for j, kernel in enumerate(kernels)]
    for args in cases:
        yield "joint_histogram weighted " + " ".join(map(str, args)), lambda a=args: histogram(*a, weighted=True)


def all_kernels() -> set[str]:
    """The names of every ``@triton.jit`` kernel (a launched function: ``*_kernel``) in
    ``regnet.ops._triton``."""
    import importlib
    import pkgutil

    from triton.runtime.jit import JITFunction

    import regnet.ops._triton as package

    names = set()
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        names.update(name for name, value in vars(module).items()
                     if isinstance(value, JITFunction) and name.endswith("_kernel"))
    return names


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", type=int, default=90, help="compute capability x 10 (default 90: H100/H200)")
    parser.add_argument("--level", choices=LEVELS, default="full",
                        help="subset: every kernel and every option once (the test suite's); quick: the product of "
                             "the options in float32; full (default): in every dtype")
    parser.add_argument("--quick", action="store_const", const="quick", dest="level", help="same as --level quick")
    parser.add_argument("--match", default="", metavar="TEXT", help="only configurations whose label contains TEXT")
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
    for label, fn in configurations(args.level):
        if args.match not in label:
            continue
        configs += 1
        before = len(failures)
        try:
            fn()
        except Exception as error:  # noqa: BLE001
            broken += 1
            if len(failures) == before:  # failed outside a kernel compilation
                failures.append(("(host code)", f"{type(error).__name__}: {str(error)[:500]}"))
            print(f"FAILED {label}: {failures[-1][0]}: {failures[-1][1][:300]}", file=sys.stderr)
    missing = set() if args.match else all_kernels() - set(compiled)
    print(f"Triton {triton.__version__}, sm_{args.arch}, {args.level}: {configs} configurations, "
          f"{sum(compiled.values())} kernel launches compiled ({len(distinct)} distinct specialisations of "
          f"{len(compiled)} kernels), {broken} failed, "
          f"{time.perf_counter() - start:.0f} s")
    usage = resources(distinct, args.arch) if args.resources else {}
    for name, count in sorted(compiled.items()):
        extra = ""
        if name in usage:
            u = usage[name]
            extra = (f", {u['specialisations']} specialisations, <= {u['max_registers']} registers, "
                     f"<= {u['max_spill_bytes']} bytes spilled")
        print(f"  {name}: {count} launches{extra}")
    if missing:
        print(f"not compiled by any configuration: {', '.join(sorted(missing))}", file=sys.stderr)
    return 1 if broken or missing else 0


if __name__ == "__main__":
    sys.exit(main())
