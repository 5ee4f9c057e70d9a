#!/usr/bin/env python
"""Benchmark regnet's core ops against the PyTorch/MONAI code they replace.

What it measures
----------------
For each op pair, the time and the peak extra memory of one forward + backward pass
(backward of ``(out * weight).sum()`` with a fixed random ``weight``, so the gradients are
not trivial), 3D, default volume 160 x 192 x 224, batch 1:

=============  ==================================  ==============================================
op             regnet                              peer (run in the same invocation)
=============  ==================================  ==============================================
warp           ``regnet.ops.warp(image, ddf)``     ``monai.networks.blocks.Warp()(image, ddf)``
exp            ``regnet.ops.exp(svf, steps=7)``    ``monai.networks.blocks.DVF2DDF(num_steps=7)``
grid_sample    ``regnet.ops.grid_sample``          ``torch.nn.functional.grid_sample``
=============  ==================================  ==============================================

Inputs: a 1-channel image (the real brain ``../shared/data/brain3d/subject_a_t1.nii.gz``
relative to the repository root when it exists, resampled to ``--shape`` if needed; random
otherwise) and a smooth random 3-channel field (noise on a grid 8x coarser, trilinearly
upsampled, scaled to at most 2 voxels) used as the DDF of ``warp`` and the SVF of ``exp``.
For ``grid_sample`` the sampling grid is materialised as PyTorch users do (identity + that
displacement, normalised to [-1, 1], channel-last, ``align_corners=True``) and the same grid
tensor (a leaf requiring grad) is given to both sides. Gradients are taken w.r.t. the field /
grid; the image is data (no grad) unless ``--image-grad`` is given. Both sides of a pair see
identical inputs (fixed seed), and the script checks that they compute the same thing: the
table's ``max|dout|`` / ``max|dgrad|`` columns are the largest absolute differences between
regnet's and the peer's output and input gradients.

Time: median over ``--repeats`` timed runs after ``--warmup`` untimed ones, on CUDA with
``torch.cuda.Event`` pairs (synchronised), on CPU with ``time.perf_counter``. The table's
times come from one process that runs regnet and its peer on the same inputs, alternating
(regnet, peer, peer, regnet, ...), so that a change in machine load (other processes) hits
both alike. The memory runs below are timed too, each side alone; the JSON keeps those
times as ``*_alone_times_s``. CPU timings are sensitive to other load on the machine,
multi-threaded runs most (OpenMP threads wait for each other); the JSON records the load
average before and after.

Memory ("peak extra", MiB): the peak above what the inputs already hold, over the warm-up and
timed runs (so caches an op builds on first use, e.g. MONAI ``Warp``'s reference grid, count).
 * CUDA: ``torch.cuda.max_memory_allocated()`` after ``reset_peak_memory_stats()``, minus
   ``memory_allocated()`` once the inputs exist.
 * CPU: every (op, side) runs in a fresh child process (this script with the hidden
   ``--case OP:SIDE``). The child first runs the case once on a
   small volume (so that the library code it executes is mapped, which counts in the RSS),
   builds the full-size inputs, resets the kernel's RSS high-water mark
   (``/proc/self/clear_refs``, when allowed) so temporaries of input creation do not count,
   reads the current RSS from ``/proc/self/statm`` as the baseline, runs, and reports the
   peak RSS minus the baseline. The peak is ``VmHWM`` from ``/proc/self/status``: the same
   high-water mark as ``getrusage(RUSAGE_SELF).ru_maxrss``, which is not usable here because
   it also keeps the parent's peak RSS, inherited across (v)fork + exec (``ru_maxrss`` is only
   the fallback). Children run with glibc's ``MALLOC_MMAP_THRESHOLD_=65536`` (unless already
   set), so every tensor above 64 KiB is its own mapping and goes back to the OS when freed:
   the RSS then follows live tensor memory rather than the allocator's caching (the timed
   comparison runs in the parent, with the default allocator settings).

Ratios: ``speed x = peer time / regnet time`` and ``mem x = peer memory / regnet memory``
(> 1: regnet is faster / leaner).

Also in the same run (for the GPU comparison; see ``docs/triton.md``):

* ``compiled ref``: ``torch.compile`` of the reference computation in plain PyTorch
  (``grid_sample`` of the DDF's grid, the squaring loop for ``exp``; autograd's backward), timed
  alternating with the two sides; ``--compile auto`` (default) runs it on CUDA only, ``on``
  also on the CPU. A compile failure is reported as ``n/a`` with its reason
  (``compiled_note``), never fatal.
* ``fwd GB/s``: the achieved bandwidth of regnet's sampling forward (``warp``,
  ``grid_sample``; no grad): image + field/grid read once and the output written once, over
  the median time, next to the device's measured copy bandwidth (``dst.copy_(src)`` on a
  1 GiB float32 tensor on CUDA, 256 MiB on CPU; ``copy_gbps`` in the JSON).

On CUDA the default JSON name carries the GPU's name (``bench_ops_cuda_<gpu>.json``) and a
batch other than 1 (``bench_ops_b4_cuda_<gpu>.json``). The GPU runs the project wants::

    python scripts/bench_ops.py --device cuda --batch 1
    python scripts/bench_ops.py --device cuda --batch 4

Output: a markdown table on stdout and one JSON file per device, by default
``benchmarks/results/bench_ops_<device>.json`` (``cpu`` or ``cuda``). With ``--out PATH`` and
one device the JSON goes to PATH; with several devices to ``PATH`` with ``_<device>`` added
before the suffix. The JSON holds the device name, torch/monai versions, thread count, shape,
batch, repeats, load average, timestamp and, per op, all the numbers of the table plus the
raw times.

No timing is asserted anywhere; this only measures. The machinery shared with
``bench_losses.py`` (timing, child-process memory, table, JSON, common options) is in
``scripts/benchlib.py``.

Usage::

    python scripts/bench_ops.py                       # cpu, plus cuda when available
    python scripts/bench_ops.py --device cpu --threads 2
    python scripts/bench_ops.py --device cuda --shape 128 128 128 --batch 2
    python scripts/bench_ops.py --quick --device cpu  # 32 x 40 x 48, 2 repeats (smoke test)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run from a checkout without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchlib, also when imported from elsewhere

import benchlib  # noqa: E402
import regnet.ops as rops  # noqa: E402
from regnet.ops._backend import select  # noqa: E402

PROG = "bench_ops"
OPS = ("warp", "exp", "grid_sample")
SIDES = benchlib.SIDES
PEERS = {
    "warp": "monai.networks.blocks.Warp()",
    "exp": "monai.networks.blocks.DVF2DDF(num_steps=7)",
    "grid_sample": "torch.nn.functional.grid_sample",
}
SEED = 0
MAX_DISPLACEMENT = 2.0  # voxels
EXP_STEPS = 7
QUICK_SHAPE = (32, 40, 48)
QUICK_REPEATS = 2
PRIME_SIZE = 40  # per axis, for the untimed first run on a small volume (see run_side)

warnings.filterwarnings("ignore", message="monai.networks.blocks.Warp: Using PyTorch native grid_sample")


# --- inputs ---------------------------------------------------------------------------------

def pytorch_style_grid(ddf: torch.Tensor) -> torch.Tensor:
    """Sampling grid as PyTorch users build it: identity + displacement, normalised to
    [-1, 1] (``align_corners=True``), channel-last with ``(x, y, z)`` = reversed array axes."""
    spatial = ddf.shape[2:]
    identity = torch.stack(torch.meshgrid(*[torch.arange(n, dtype=ddf.dtype) for n in spatial], indexing="ij"))
    pos = identity[None] + ddf
    scale = torch.tensor([2 / max(n - 1, 1) for n in spatial], dtype=ddf.dtype).view(1, -1, *[1] * len(spatial))
    pos = pos * scale - 1
    return pos.permute(0, *range(2, 2 + len(spatial)), 1).flip(-1).contiguous()


def make_inputs(op: str, shape, batch: int, device, image_grad: bool = False) -> dict:
    """Identical inputs for both sides of ``op`` (fixed seed, built on the CPU, then moved).

    Returns ``image``, ``field`` (DDF/SVF) or ``grid``, the output ``weight``, ``leaves`` (the
    tensors whose gradients are compared) and ``image_source``.
    """
    gen = torch.Generator().manual_seed(SEED)
    image, source = benchlib.brain_image(shape, batch, gen, PROG)
    field = benchlib.smooth_field(shape, batch, gen, MAX_DISPLACEMENT)
    inputs = {"image_source": source}
    if op == "grid_sample":
        inputs["grid"] = pytorch_style_grid(field).to(device).requires_grad_()
        out_channels = image.shape[1]
    else:
        inputs["field"] = field.to(device).requires_grad_()
        out_channels = image.shape[1] if op == "warp" else field.shape[1]
    inputs["weight"] = torch.randn((batch, out_channels, *shape), generator=gen).to(device)
    inputs["image"] = image.to(device).requires_grad_(image_grad)
    del image, field
    leaves = [inputs["field" if op != "grid_sample" else "grid"]]
    if image_grad and op != "exp":
        leaves.append(inputs["image"])
    inputs["leaves"] = leaves
    return inputs


# --- cases: each returns {"regnet": fn, "peer": fn}; fn() runs forward + backward ----------

def _fwd_bwd(forward, inputs: dict):
    leaves, weight = inputs["leaves"], inputs["weight"]

    def run():
        for leaf in leaves:
            leaf.grad = None
        out = forward()
        (out * weight).sum().backward()
        return out.detach()

    return run


def case_warp(inputs: dict, backend: str = "auto") -> dict:
    from monai.networks.blocks import Warp

    image, ddf = inputs["image"], inputs["field"]
    monai_warp = Warp()  # defaults: bilinear, border; keeps its reference grid between calls
    return {
        "regnet": _fwd_bwd(lambda: rops.warp(image, ddf, backend=backend), inputs),
        "peer": _fwd_bwd(lambda: monai_warp(image, ddf), inputs),
    }


def case_exp(inputs: dict, backend: str = "auto") -> dict:
    from monai.networks.blocks import DVF2DDF

    svf = inputs["field"]
    dvf2ddf = DVF2DDF(num_steps=EXP_STEPS)  # defaults: bilinear, zeros
    return {
        "regnet": _fwd_bwd(lambda: rops.exp(svf, steps=EXP_STEPS, backend=backend), inputs),
        "peer": _fwd_bwd(lambda: dvf2ddf(svf), inputs),
    }


def case_grid_sample(inputs: dict, backend: str = "auto") -> dict:
    image, grid = inputs["image"], inputs["grid"]
    options = dict(mode="bilinear", padding_mode="zeros", align_corners=True)
    return {
        "regnet": _fwd_bwd(lambda: rops.grid_sample(image, grid, **options, backend=backend), inputs),
        "peer": _fwd_bwd(lambda: F.grid_sample(image, grid, **options), inputs),
    }


CASES = {"warp": case_warp, "exp": case_exp, "grid_sample": case_grid_sample}


def reference_forward(op: str, inputs: dict):
    """The reference computation of ``op`` in plain differentiable PyTorch (what
    ``regnet.ops._torch`` computes, with autograd's backward instead of its hand-written one):
    the function ``torch.compile`` is given for the ``compiled`` column."""
    from regnet.ops._torch.sampling import ddf_to_grid

    image = inputs["image"]
    if op == "warp":
        ddf = inputs["field"]
        return lambda: F.grid_sample(image, ddf_to_grid(ddf), mode="bilinear", padding_mode="border",
                                     align_corners=True)
    if op == "exp":
        svf = inputs["field"]

        def exp():
            u = svf / 2**EXP_STEPS
            for _ in range(EXP_STEPS):
                u = u + F.grid_sample(u, ddf_to_grid(u), mode="bilinear", padding_mode="zeros", align_corners=True)
            return u
        return exp
    grid = inputs["grid"]
    return lambda: F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def compile_enabled(args, device: torch.device) -> bool:
    return args.compile == "on" or (args.compile == "auto" and device.type == "cuda")


def forward_bandwidth(op: str, inputs: dict, args, device: torch.device) -> dict | None:
    """Achieved memory bandwidth of regnet's sampling forward (no grad): the bytes it must
    move at least (image + field or grid read once, output written once) over its median
    time. Sampling ops only (``warp``, ``grid_sample``)."""
    if op not in ("warp", "grid_sample"):
        return None
    image = inputs["image"]
    src = inputs["field"] if op == "warp" else inputs["grid"]
    with torch.no_grad():
        if op == "warp":
            fn = lambda: rops.warp(image, src, backend=args.backend)  # noqa: E731
        else:
            fn = lambda: rops.grid_sample(image, src, "bilinear", "zeros", True, backend=args.backend)  # noqa: E731
        out = fn()
        times = benchlib.time_case({"fwd": fn}, args.repeats, max(1, args.warmup), device)["fwd"]
    size = lambda t: t.numel() * t.element_size()  # noqa: E731
    nbytes = size(image) + size(src) + size(out)
    median = statistics.median(times)
    return {"forward_times_s": times, "forward_time_s": median, "forward_min_bytes": nbytes,
            "forward_gbps": nbytes / median / 1e9}


# --- measurement ----------------------------------------------------------------------------

def run_side(op: str, side: str, args, device: torch.device) -> dict:
    """Build fresh inputs, then measure the peak extra memory of ``side`` of ``op`` over
    ``warmup`` + ``repeats`` runs (timed too: the ``*_alone_times_s`` of the JSON).

    On CPU this is meant to run in a fresh process (``--case``); see ``benchlib.run_child``.
    The code paths are first run once on a small volume, so that mapping the library code
    they execute (file-backed pages, counted in the RSS) happens before the baseline.
    """
    prime = make_inputs(op, [min(s, PRIME_SIZE) for s in args.shape], args.batch, device, args.image_grad)
    CASES[op](prime, args.backend)[side]()
    del prime
    inputs = make_inputs(op, args.shape, args.batch, device, args.image_grad)
    fn = CASES[op](inputs, args.backend)[side]
    result = benchlib.measure_alone(fn, args.repeats, args.warmup, device)
    result["image_source"] = inputs["image_source"]
    return result


def _case_argv(op: str, side: str, args) -> list[str]:
    argv = [sys.executable, str(Path(__file__).resolve()), "--case", f"{op}:{side}", "--device", "cpu",
            "--shape", *map(str, args.shape), "--batch", str(args.batch), "--repeats", str(args.repeats),
            "--warmup", str(args.warmup), "--backend", args.backend]
    if args.threads:
        argv += ["--threads", str(args.threads)]
    if args.image_grad:
        argv.append("--image-grad")
    return argv


def compare_case(op: str, args, device: torch.device) -> dict:
    """Check and time both sides of ``op`` in this process, on one set of inputs, with the
    ``torch.compile``d reference as a third side when enabled (``compiled_*``: None and a
    ``compiled_note`` when disabled or failing), and the sampling forward's bandwidth."""
    inputs = make_inputs(op, args.shape, args.batch, device, args.image_grad)
    fns = CASES[op](inputs, args.backend)
    result = benchlib.check_pair(fns, inputs["leaves"])
    compiled, note = benchlib.compile_or_none(reference_forward(op, inputs), device, compile_enabled(args, device),
                                              wrap=lambda f: _fwd_bwd(f, inputs))
    timed = dict(fns)
    if compiled is not None:
        timed["compiled"] = compiled
        check = benchlib.check_pair({"compiled": timed["compiled"], "peer": fns["peer"]}, inputs["leaves"],
                                    sides=("compiled", "peer"))
        result["compiled_max_abs_diff_out"] = check["max_abs_diff_out"]
        result["compiled_max_abs_diff_grad"] = check["max_abs_diff_grad"]
    times = benchlib.time_case(timed, args.repeats, args.warmup, device)
    result.update({f"{side}_times_s": times[side] for side in SIDES})
    result["compiled_times_s"] = times.get("compiled")
    result["compiled_time_s"] = statistics.median(times["compiled"]) if compiled is not None else None
    result["compiled_note"] = note
    del timed, fns, compiled
    bandwidth = forward_bandwidth(op, inputs, args, device)
    if bandwidth is not None:
        result.update(bandwidth)
    return result


# --- reporting ------------------------------------------------------------------------------

def print_table(report: dict) -> None:
    benchlib.print_header(report, [f"shape {tuple(report['shape'])} x B={report['batch']}",
                                   f"median of {report['repeats']}"])
    fmt = benchlib.fmt
    copy = report.get("copy_gbps")
    rows = [[op, r["peer"], f"{r['regnet_time_s']:.4f}", f"{r['peer_time_s']:.4f}", fmt(r["speed_ratio"], ".2f"),
             fmt(r.get("compiled_time_s"), ".4f"),
             f"{r['regnet_peak_mib']:.1f}", f"{r['peer_peak_mib']:.1f}", fmt(r["memory_ratio"], ".2f"),
             fmt(r.get("forward_gbps"), ".1f")
             + ("" if r.get("forward_gbps") is None or not copy else f" ({r['forward_gbps'] / copy:.0%})"),
             f"{r['max_abs_diff_out']:.2e}", f"{r['max_abs_diff_grad']:.2e}"]
            for op, r in report["results"].items()]
    benchlib.print_markdown_table(["op", "peer", "regnet s", "peer s", "speed x", "compiled ref s", "regnet MiB",
                                   "peer MiB", "mem x", "fwd GB/s (of copy)", "max abs dout", "max abs dgrad"], rows)
    print("\nspeed x = peer time / regnet time; mem x = peer peak extra memory / regnet's (> 1: regnet better);"
          f"\ncompiled ref = torch.compile of the reference computation in plain PyTorch (n/a: not run or failed);"
          f"\nfwd GB/s = regnet sampling forward, minimal bytes / time; device copy: {fmt(copy, '.1f')} GB/s")
    sys.stdout.flush()


def bench_device(device: torch.device, args) -> dict:
    results, image_source = {}, None
    load_start = benchlib.loadavg()
    benchlib.warn_if_loaded(load_start, device, PROG)
    memory = {}  # first the memory, each (op, side) alone: CPU children / CUDA allocator stats
    for op in args.ops:
        memory[op] = {}
        for side in SIDES:
            m = benchlib.measure_memory(device, lambda: run_side(op, side, args, device),
                                        _case_argv(op, side, args), op, side, PROG)
            memory[op][side], image_source = m, m["image_source"]
    # then check and time both sides together in this process (after the CPU children, so that
    # this process stays small while they run)
    for op in args.ops:
        r, p = memory[op]["regnet"], memory[op]["peer"]
        cmp = compare_case(op, args, device)
        benchlib.free_cuda(device)
        t_r, t_p = statistics.median(cmp["regnet_times_s"]), statistics.median(cmp["peer_times_s"])
        print(f"  {device.type} {op:12s} timed together: regnet {t_r:.4f} s, peer {t_p:.4f} s",
              file=sys.stderr, flush=True)
        results[op] = {
            "peer": PEERS[op],
            "regnet_backend": getattr(select(op, device, args.backend), "NAME", "?"),
            "regnet_time_s": t_r,
            "peer_time_s": t_p,
            "speed_ratio": benchlib.ratio(t_p, t_r),
            "regnet_peak_mib": r["peak_extra_mib"],
            "peer_peak_mib": p["peak_extra_mib"],
            "memory_ratio": benchlib.ratio(p["peak_extra_mib"], r["peak_extra_mib"]),
            **cmp,
            "regnet_alone_times_s": r["times_s"],
            "peer_alone_times_s": p["times_s"],
            "peak_reset": r["peak_reset"] and p["peak_reset"],
        }
    copy = benchlib.copy_bandwidth(device, mib=64 if args.quick else None)
    for r in results.values():
        if r.get("forward_gbps") is not None:
            r["forward_fraction_of_copy"] = r["forward_gbps"] / copy["copy_gbps"]
    return {
        **benchlib.environment("bench_ops", device),
        "loadavg_start": load_start,
        "loadavg_end": benchlib.loadavg(),
        "shape": list(args.shape),
        "batch": args.batch,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "image_source": image_source,
        "image_requires_grad": args.image_grad,
        "field_max_abs_voxels": MAX_DISPLACEMENT,
        "exp_steps": EXP_STEPS,
        "memory_method": benchlib.memory_method(device),
        "compile": compile_enabled(args, device),
        **copy,
        "results": results,
    }


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    benchlib.add_common_args(parser, "bench_ops", default_repeats=5, default_warmup=1,
                             quick_help=f"shape {QUICK_SHAPE}, {QUICK_REPEATS} repeats")
    parser.add_argument("--shape", type=int, nargs=3, metavar=("H", "W", "D"), default=None,
                        help="volume size (default 160 192 224)")
    parser.add_argument("--ops", nargs="+", choices=OPS, default=list(OPS), help="ops to run (default all)")
    parser.add_argument("--backend", choices=("auto", "torch", "triton"), default="auto",
                        help="regnet backend= for every call (default auto)")
    parser.add_argument("--compile", choices=("auto", "on", "off"), default="auto",
                        help="also time torch.compile of the reference computation (auto: on CUDA only)")
    parser.add_argument("--image-grad", action="store_true",
                        help="also differentiate w.r.t. the image (warp, grid_sample)")
    args = parser.parse_args(argv)
    if args.shape is None:
        args.shape = list(QUICK_SHAPE) if args.quick else [160, 192, 224]
    if args.repeats is None:
        args.repeats = QUICK_REPEATS if args.quick else 5
    if args.repeats < 1 or args.warmup < 0 or args.batch < 1 or min(args.shape) < 2:
        parser.error("need --repeats >= 1, --warmup >= 0, --batch >= 1 and every --shape size >= 2")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.case is not None:  # child process: one (op, side) on the CPU
        benchlib.apply_data_limit()
        op, side = args.case.split(":")
        benchlib.child_report(run_side(op, side, args, torch.device(args.device if args.device != "all" else "cpu")))
        return 0

    devices = benchlib.select_devices(args.device, PROG)
    if devices is None:
        return 2
    paths = benchlib.out_paths(args.out, devices, "bench_ops" if args.batch == 1 else f"bench_ops_b{args.batch}")
    for device in devices:
        print(f"bench_ops: {device.type}, shape {tuple(args.shape)}, batch {args.batch}, "
              f"{args.warmup} warm-up + {args.repeats} timed runs per case", file=sys.stderr, flush=True)
        report = bench_device(device, args)
        print_table(report)
        benchlib.write_json(paths[device.type], report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
