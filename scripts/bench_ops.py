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

Output: a markdown table on stdout and one JSON file per device, by default
``benchmarks/results/bench_ops_<device>.json`` (``cpu`` or ``cuda``). With ``--out PATH`` and
one device the JSON goes to PATH; with several devices to ``PATH`` with ``_<device>`` added
before the suffix. The JSON holds the device name, torch/monai versions, thread count, shape,
batch, repeats, load average, timestamp and, per op, all the numbers of the table plus the
raw times.

No timing is asserted anywhere; this only measures.

Usage::

    python scripts/bench_ops.py                       # cpu, plus cuda when available
    python scripts/bench_ops.py --device cpu --threads 2
    python scripts/bench_ops.py --device cuda --shape 128 128 128 --batch 2
    python scripts/bench_ops.py --quick --device cpu  # 32 x 40 x 48, 2 repeats (smoke test)
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run from a checkout without installing

import regnet.ops as rops  # noqa: E402
from regnet.ops._backend import select  # noqa: E402

BRAIN = REPO.parent / "shared" / "data" / "brain3d" / "subject_a_t1.nii.gz"
OPS = ("warp", "exp", "grid_sample")
SIDES = ("regnet", "peer")
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
RESULT_TAG = "BENCH_CASE_RESULT "

warnings.filterwarnings("ignore", message="monai.networks.blocks.Warp: Using PyTorch native grid_sample")


# --- inputs ---------------------------------------------------------------------------------

def _image(shape, batch: int, gen: torch.Generator) -> tuple[torch.Tensor, str]:
    """``(batch, 1, *shape)`` float32 on the CPU: the brain if available, else uniform noise."""
    if BRAIN.exists():
        try:
            import nibabel as nib
            import numpy as np

            vol = torch.from_numpy(np.asarray(nib.load(str(BRAIN)).get_fdata(dtype=np.float32)))
            vol = vol[None, None]
            if tuple(vol.shape[2:]) != tuple(shape):
                vol = F.interpolate(vol, size=tuple(shape), mode="trilinear", align_corners=True)
            return vol.expand(batch, -1, -1, -1, -1).contiguous(), f"brain3d/{BRAIN.name}"
        except Exception as err:  # fall back to noise, but say so
            print(f"bench_ops: could not load {BRAIN} ({err}); using a random image", file=sys.stderr)
    return torch.rand((batch, 1, *shape), generator=gen), "random"


def _smooth_field(shape, batch: int, gen: torch.Generator) -> torch.Tensor:
    """``(batch, 3, *shape)`` smooth random displacement, max |value| = MAX_DISPLACEMENT voxels."""
    coarse = tuple(max(2, s // 8) for s in shape)
    noise = torch.randn((batch, len(shape), *coarse), generator=gen)
    field = F.interpolate(noise, size=tuple(shape), mode="trilinear", align_corners=True)
    return field * (MAX_DISPLACEMENT / field.abs().amax())


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
    image, source = _image(shape, batch, gen)
    field = _smooth_field(shape, batch, gen)
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


# --- measurement ----------------------------------------------------------------------------

def _time_once(fn, device: torch.device) -> float:
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(device)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize(device)
        return start.elapsed_time(end) / 1000
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def time_case(fns: dict, repeats: int, warmup: int, device: torch.device) -> dict[str, list[float]]:
    """Time the closures of a case (``{side: fn}``): ``warmup`` untimed runs of each, then
    ``repeats`` timed rounds running every side once, the order alternating from round to
    round, so that changes in machine load hit all sides alike. Seconds per run, per side."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {side: [] for side in fns}
    order = list(fns)
    for i in range(repeats):
        for side in (order if i % 2 == 0 else order[::-1]):
            times[side].append(_time_once(fns[side], device))
    return times


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def _peak_rss_bytes() -> int:
    """Peak RSS of this process's memory since the last reset: ``VmHWM`` (the same kernel
    high-water mark as ``ru_maxrss``, but without the parent's peak that ``ru_maxrss`` inherits
    across fork/vfork + exec), falling back to ``ru_maxrss``."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark (what ``ru_maxrss`` reports) to the current RSS."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def run_side(op: str, side: str, args, device: torch.device) -> dict:
    """Build fresh inputs, then measure the peak extra memory of ``side`` of ``op`` over
    ``warmup`` + ``repeats`` runs (timed too: the ``*_alone_times_s`` of the JSON).

    On CPU this is meant to run in a fresh process (``--case``); see ``measure_cpu_case``.
    The code paths are first run once on a small volume, so that mapping the library code
    they execute (file-backed pages, counted in the RSS) happens before the baseline.
    """
    prime = make_inputs(op, [min(s, PRIME_SIZE) for s in args.shape], args.batch, device, args.image_grad)
    CASES[op](prime, args.backend)[side]()
    del prime
    inputs = make_inputs(op, args.shape, args.batch, device, args.image_grad)
    fn = CASES[op](inputs, args.backend)[side]
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        baseline = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        times = time_case({side: fn}, args.repeats, args.warmup, device)[side]
        peak = torch.cuda.max_memory_allocated(device) - baseline
        peak_reset = True
    else:
        peak_reset = _reset_peak_rss()
        baseline = _rss_bytes()
        times = time_case({side: fn}, args.repeats, args.warmup, device)[side]
        peak = _peak_rss_bytes() - baseline
    return {
        "times_s": times,
        "median_s": statistics.median(times),
        "peak_extra_mib": peak / 2**20,
        "baseline_mib": baseline / 2**20,
        "peak_reset": peak_reset,
        "image_source": inputs["image_source"],
    }


def _case_argv(op: str, side: str, args) -> list[str]:
    argv = [sys.executable, str(Path(__file__).resolve()), "--case", f"{op}:{side}", "--device", "cpu",
            "--shape", *map(str, args.shape), "--batch", str(args.batch), "--repeats", str(args.repeats),
            "--warmup", str(args.warmup), "--backend", args.backend]
    if args.threads:
        argv += ["--threads", str(args.threads)]
    if args.image_grad:
        argv.append("--image-grad")
    return argv


def measure_cpu_case(op: str, side: str, args) -> dict:
    """Run one (op, side) on the CPU in a fresh child process; return ``run_side``'s dict."""
    env = dict(os.environ)
    env.setdefault("MALLOC_MMAP_THRESHOLD_", "65536")
    proc = subprocess.run(_case_argv(op, side, args), cwd=REPO, env=env, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_TAG)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"bench_ops: case {op}:{side} failed (exit {proc.returncode}):\n"
                           f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1][len(RESULT_TAG):])


def check_case(fns: dict, inputs: dict) -> dict:
    """Run both sides once on the same inputs; max abs differences of output and gradients."""
    results = {}
    for side in SIDES:
        out = fns[side]()
        results[side] = (out, [leaf.grad.clone() for leaf in inputs["leaves"]])
    (out_r, grads_r), (out_p, grads_p) = results["regnet"], results["peer"]
    return {
        "max_abs_diff_out": (out_r - out_p).abs().max().item(),
        "max_abs_diff_grad": max((a - b).abs().max().item() for a, b in zip(grads_r, grads_p)),
        "max_abs_out": out_p.abs().max().item(),
        "max_abs_grad": max(g.abs().max().item() for g in grads_p),
    }


def compare_case(op: str, args, device: torch.device) -> dict:
    """Check and time both sides of ``op`` in this process, on one set of inputs."""
    inputs = make_inputs(op, args.shape, args.batch, device, args.image_grad)
    fns = CASES[op](inputs, args.backend)
    result = check_case(fns, inputs)
    times = time_case(fns, args.repeats, args.warmup, device)
    result.update({f"{side}_times_s": times[side] for side in SIDES})
    return result


# --- reporting ------------------------------------------------------------------------------

def _ratio(num: float, den: float) -> float | None:
    return num / den if den > 0 and num > 0 else None


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _fmt(x, spec: str) -> str:
    return "n/a" if x is None else format(x, spec)


def print_table(report: dict) -> None:
    print(f"\n### {report['device']}: {report['device_name']} | torch {report['torch_version']} | "
          f"monai {report['monai_version']} | {report['threads']} threads | "
          f"shape {tuple(report['shape'])} x B={report['batch']} | median of {report['repeats']} | "
          f"load avg {report['loadavg_start']} -> {report['loadavg_end']}\n")
    print("| op | peer | regnet s | peer s | speed x | regnet MiB | peer MiB | mem x | max abs dout | max abs dgrad |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for op, r in report["results"].items():
        print(f"| {op} | {r['peer']} | {r['regnet_time_s']:.4f} | {r['peer_time_s']:.4f} | "
              f"{_fmt(r['speed_ratio'], '.2f')} | {r['regnet_peak_mib']:.1f} | {r['peer_peak_mib']:.1f} | "
              f"{_fmt(r['memory_ratio'], '.2f')} | {r['max_abs_diff_out']:.2e} | {r['max_abs_diff_grad']:.2e} |")
    print("\nspeed x = peer time / regnet time; mem x = peer peak extra memory / regnet's (> 1: regnet better)")
    sys.stdout.flush()


def bench_device(device: torch.device, args) -> dict:
    import monai

    results, image_source = {}, None
    load_start = _loadavg()
    if device.type == "cpu" and load_start and load_start[0] > 0.5:
        print(f"bench_ops: warning: CPU load average {load_start[0]:.2f} before starting; other processes "
              f"distort CPU timings (multi-threaded ones most)", file=sys.stderr, flush=True)
    memory = {}  # first the memory, each (op, side) alone: CPU children / CUDA allocator stats
    for op in args.ops:
        memory[op] = {}
        for side in SIDES:
            if device.type == "cpu":
                m = measure_cpu_case(op, side, args)
            else:
                m = run_side(op, side, args, device)
                gc.collect()
                torch.cuda.empty_cache()
            memory[op][side], image_source = m, m["image_source"]
            print(f"  {device.type} {op:12s} {side:6s}: {m['peak_extra_mib']:8.1f} MiB  (alone: "
                  f"{m['median_s']:.4f} s)", file=sys.stderr, flush=True)
    # then check and time both sides together in this process (after the CPU children, so that
    # this process stays small while they run)
    for op in args.ops:
        r, p = memory[op]["regnet"], memory[op]["peer"]
        cmp = compare_case(op, args, device)
        if device.type == "cuda":
            gc.collect()
            torch.cuda.empty_cache()
        t_r, t_p = statistics.median(cmp["regnet_times_s"]), statistics.median(cmp["peer_times_s"])
        print(f"  {device.type} {op:12s} timed together: regnet {t_r:.4f} s, peer {t_p:.4f} s",
              file=sys.stderr, flush=True)
        results[op] = {
            "peer": PEERS[op],
            "regnet_backend": getattr(select(op, device, args.backend), "NAME", "?"),
            "regnet_time_s": t_r,
            "peer_time_s": t_p,
            "speed_ratio": _ratio(t_p, t_r),
            "regnet_peak_mib": r["peak_extra_mib"],
            "peer_peak_mib": p["peak_extra_mib"],
            "memory_ratio": _ratio(p["peak_extra_mib"], r["peak_extra_mib"]),
            **cmp,
            "regnet_alone_times_s": r["times_s"],
            "peer_alone_times_s": p["times_s"],
            "peak_reset": r["peak_reset"] and p["peak_reset"],
        }
    return {
        "benchmark": "bench_ops",
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": device.type,
        "device_name": device_name(device),
        "torch_version": torch.__version__,
        "monai_version": monai.__version__,
        "python_version": platform.python_version(),
        "git_commit": _git_commit(),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "loadavg_start": load_start,
        "loadavg_end": _loadavg(),
        "shape": list(args.shape),
        "batch": args.batch,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "image_source": image_source,
        "image_requires_grad": args.image_grad,
        "field_max_abs_voxels": MAX_DISPLACEMENT,
        "exp_steps": EXP_STEPS,
        "memory_method": ("torch.cuda.max_memory_allocated - memory_allocated after inputs"
                          if device.type == "cuda" else
                          "fresh child process: VmHWM - RSS after inputs (high-water mark reset), "
                          "MALLOC_MMAP_THRESHOLD_=" + os.environ.get("MALLOC_MMAP_THRESHOLD_", "65536")),
        "results": results,
    }


def out_paths(args, devices: list[torch.device]) -> dict[str, Path]:
    if args.out is None:
        return {d.type: REPO / "benchmarks" / "results" / f"bench_ops_{d.type}.json" for d in devices}
    out = Path(args.out)
    if len(devices) == 1:
        return {devices[0].type: out}
    return {d.type: out.with_name(f"{out.stem}_{d.type}{out.suffix}") for d in devices}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda", "all"), default="all",
                        help="cpu, cuda, or all = cpu plus cuda when available (default)")
    parser.add_argument("--shape", type=int, nargs=3, metavar=("H", "W", "D"), default=None,
                        help="volume size (default 160 192 224)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=None, help="timed runs, median reported (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs first (default 1)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: as is)")
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/bench_ops_<device>.json)")
    parser.add_argument("--quick", action="store_true", help=f"shape {QUICK_SHAPE}, {QUICK_REPEATS} repeats")
    parser.add_argument("--ops", nargs="+", choices=OPS, default=list(OPS), help="ops to run (default all)")
    parser.add_argument("--backend", choices=("auto", "torch", "triton"), default="auto",
                        help="regnet backend= for every call (default auto)")
    parser.add_argument("--image-grad", action="store_true",
                        help="also differentiate w.r.t. the image (warp, grid_sample)")
    parser.add_argument("--case", default=None, help=argparse.SUPPRESS)  # OP:SIDE, internal
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
        op, side = args.case.split(":")
        result = run_side(op, side, args, torch.device(args.device if args.device != "all" else "cpu"))
        print(RESULT_TAG + json.dumps(result), flush=True)
        return 0

    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench_ops: --device cuda but torch.cuda.is_available() is False", file=sys.stderr)
        return 2
    devices = [torch.device("cpu")] if args.device in ("cpu", "all") else []
    if args.device == "cuda" or (args.device == "all" and torch.cuda.is_available()):
        devices.append(torch.device("cuda"))

    paths = out_paths(args, devices)
    for device in devices:
        print(f"bench_ops: {device.type}, shape {tuple(args.shape)}, batch {args.batch}, "
              f"{args.warmup} warm-up + {args.repeats} timed runs per case", file=sys.stderr, flush=True)
        report = bench_device(device, args)
        print_table(report)
        path = paths[device.type]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
