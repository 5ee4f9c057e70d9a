#!/usr/bin/env python
"""Time one SyN iteration on the reference backend, the Triton kernels, and a CUDA graph.

What it measures
----------------
One iteration of :class:`regnet.SyNRegistration` at one pyramid level: both velocity fields
smoothed, ``exp`` of both (7 squarings, on the velocity grid: 1.5x coarser than the images in
3D, 2x in 2D, regnet's defaults), upsampling, warping both images half-way, local NCC (kernel
9), the diffusion regulariser of both half-way fields, the backward pass through all of it and
the Adam step. The iteration is what ``SyNRegistration`` runs, through its public API: a
single-level registration (``scales=(1,)``, ``tolerance=0``) of ``n`` and of ``n + k``
iterations, timed as a whole (``level_times``, which ends with a synchronisation); the time
per iteration is the difference of the two medians over ``k``, so set-up, warm-up and the
graph capture cancel.

Sides, in the same run, alternating (so that load changes hit all alike):

=================  ===========================================================
``reference``      ``regnet.set_backend("torch")``: ATen's grid sampler etc.
``triton``         the fused Triton kernels (``auto`` on CUDA), eager iterations
``triton+graph``   the same, iterations replayed from a CUDA graph
=================  ===========================================================

The last two need CUDA ('n/a' on the CPU; with ``TRITON_INTERPRET=1`` the ``triton`` side runs
on the CPU through Triton's interpreter: a smoke test, not a timing). Ratios: ``reference time / side time``. Peak memory
(CUDA: ``max_memory_allocated`` above the inputs over an ``n + k`` run; CPU: not measured here).
``last loss``: the loss of the last iteration of the longer run (same images, same start);
``max|dv|``: largest difference of the fitted velocity from the reference side's. The sides
take different paths from the first Adam step on (not a rounding-level agreement): at the
first iteration every sample point lies exactly on a voxel centre (zero field), where
linear interpolation has no derivative; the Triton kernels take the one-sided derivative
towards the next voxel, ATen's sampler (reached through normalised coordinates) whichever
side float rounding lands on, and Adam's first step is ``lr * sign(gradient)``. Compare the
losses, not the fields.

Cases (``--shapes``): 160x192x224 (the issue's "full SyN iteration", the image grid of a
full-resolution level), 80x96x112 and 40x48x56 (regnet's default 3D levels, where launch
overhead grows), and 2D 256x256. Images: the brain of ``../shared/data/brain3d`` (resampled;
its middle slice in 2D) and the same brain warped by a smooth random field of at most 3 voxels.

Usage::

    python scripts/bench_syn_iteration.py --device cuda          # the GPU comparison
    python scripts/bench_syn_iteration.py --device cpu --quick   # smoke test
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

import benchlib

PROG = "bench_syn_iteration"
DEFAULT_SHAPES = ("160x192x224", "80x96x112", "40x48x56", "256x256")
QUICK_SHAPES = ("16x20x24", "32x32")
SIDES = ("reference", "triton", "triton+graph")
DEFAULT_REPEATS, QUICK_REPEATS = 5, 2


def make_pair(shape: tuple[int, ...], gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, str]:
    """``(moving, static, source)`` ``(1, 1, *shape)`` float32 on the CPU."""
    from regnet import ops

    if len(shape) == 3:
        static, source = benchlib.brain_image(shape, 1, gen, PROG)
    else:
        volume, source = benchlib.brain_image((shape[0], shape[1], 32), 1, gen, PROG)
        static = volume[..., 16].contiguous()
        source += " (middle slice)"
    ddf = benchlib.smooth_field(shape, 1, gen, 3.0) if len(shape) == 3 else _smooth_field_2d(shape, gen, 3.0)
    moving = ops.warp(static, ddf, backend="torch")
    return moving, static, source


def _smooth_field_2d(shape, gen, max_abs):
    coarse = tuple(max(2, s // 8) for s in shape)
    field = F.interpolate(torch.randn((1, 2, *coarse), generator=gen), size=shape, mode="bilinear",
                          align_corners=True)
    return field * (max_abs / field.abs().amax())


def interpreted() -> bool:
    """Triton's interpreter is on (``TRITON_INTERPRET=1``): the ``triton`` side also runs on the
    CPU (a smoke test of that path; its times mean nothing)."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def run_side(side: str, moving, static, iterations: int):
    """One single-level registration; returns ``(level time s, fitted v_xy, loss history)``."""
    import regnet

    regnet.set_backend("torch" if side == "reference" else "triton")
    try:
        reg = regnet.SyNRegistration(scales=(1,), iterations=iterations, tolerance=0, verbose=False,
                                     cuda_graph=side == "triton+graph")
        reg(moving, static, return_moved=False)
    finally:
        regnet.set_backend(None)
    return reg.level_times[0], reg.v_xy, reg.loss_history[0]


def bench_shape(shape, device: torch.device, args) -> dict:
    gen = torch.Generator().manual_seed(0)
    moving, static, source = make_pair(shape, gen)
    moving, static = moving.to(device), static.to(device)
    sides = SIDES if device.type == "cuda" else SIDES[:2] if interpreted() else SIDES[:1]
    short, long_ = args.iterations, args.iterations + args.extra
    for side in sides:  # first use: Triton compilation, caches
        run_side(side, moving, static, 2)
    times = {(s, n): [] for s in sides for n in (short, long_)}
    for r in range(args.repeats):
        order = sides if r % 2 == 0 else tuple(reversed(sides))
        for side in order:
            for n in (short, long_):
                times[(side, n)].append(run_side(side, moving, static, n)[0])
    result = {"shape": list(shape), "image": source, "iterations": [short, long_], "sides": {}}
    velocities, losses = {}, {}
    for side in sides:
        per_iteration = (statistics.median(times[(side, long_)]) - statistics.median(times[(side, short)])) / args.extra
        peak = None
        if device.type == "cuda":
            benchlib.free_cuda(device)
            base = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
            _, velocities[side], losses[side] = run_side(side, moving, static, long_)
            peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20
        else:
            _, velocities[side], losses[side] = run_side(side, moving, static, long_)
        result["sides"][side] = {
            "iteration_time_s": per_iteration,
            "level_times_s": {str(n): times[(side, n)] for n in (short, long_)},
            "peak_extra_mib": peak,
            "losses": losses[side],
            "max_abs_diff_v_vs_reference": float((velocities[side] - velocities["reference"]).abs().max()),
        }
    reference = result["sides"]["reference"]
    for side in SIDES:
        entry = result["sides"].get(side)
        if entry is None:
            result["sides"][side] = {"iteration_time_s": None, "note": "needs CUDA (triton: or TRITON_INTERPRET=1)"}
            continue
        entry["speed_vs_reference"] = benchlib.ratio(reference["iteration_time_s"], entry["iteration_time_s"])
        if entry["peak_extra_mib"] and reference["peak_extra_mib"]:
            entry["memory_vs_reference"] = reference["peak_extra_mib"] / entry["peak_extra_mib"]
    return result


def print_table(report: dict) -> None:
    benchlib.print_header(report, [f"iterations {report['iterations']} + {report['extra']}",
                                   f"{report['repeats']} repeats"])
    rows = []
    for case in report["results"]:
        for side in SIDES:
            entry = case["sides"][side]
            ms = None if entry["iteration_time_s"] is None else entry["iteration_time_s"] * 1e3
            rows.append([
                "x".join(map(str, case["shape"])), side, benchlib.fmt(ms, ".2f"),
                benchlib.fmt(entry.get("speed_vs_reference"), ".2f"),
                benchlib.fmt(entry.get("peak_extra_mib"), ".0f"),
                benchlib.fmt(entry.get("memory_vs_reference"), ".2f"),
                benchlib.fmt(entry["losses"][-1] if entry.get("losses") else None, ".4f"),
                benchlib.fmt(entry.get("max_abs_diff_v_vs_reference"), ".2e"),
            ])
    benchlib.print_markdown_table(["shape", "side", "ms / iteration", "speed x", "peak MiB", "mem x", "last loss",
                                   "max|dv|"], rows)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    benchlib.add_common_args(parser, PROG, default_repeats=DEFAULT_REPEATS,
                             quick_help=f"shapes {' '.join(QUICK_SHAPES)}, {QUICK_REPEATS} repeats (smoke test)")
    parser.add_argument("--shapes", nargs="+", default=None, metavar="SHAPE",
                        help=f"HxW or HxWxD each (default {' '.join(DEFAULT_SHAPES)})")
    parser.add_argument("--iterations", type=int, default=5,
                        help="iterations of the shorter run (default 5: warm-up and graph capture included)")
    parser.add_argument("--extra", type=int, default=10, help="extra iterations of the longer run (default 10)")
    args = parser.parse_args(argv)
    if args.batch != 1:
        parser.error("--batch: only 1 is supported (one pair per registration)")
    tokens = args.shapes or list(QUICK_SHAPES if args.quick else DEFAULT_SHAPES)
    try:
        args.shapes = [tuple(int(v) for v in t.split("x")) for t in tokens]
    except ValueError:
        parser.error(f"--shapes: expected HxW or HxWxD tokens, got {' '.join(tokens)}")
    if any(len(s) not in (2, 3) or min(s) < 8 for s in args.shapes):
        parser.error("--shapes: 2 or 3 sizes each, every size >= 8")
    if args.repeats is None:
        args.repeats = QUICK_REPEATS if args.quick else DEFAULT_REPEATS
    if args.quick:
        args.extra = min(args.extra, 2)
    if args.repeats < 1 or args.iterations < 1 or args.extra < 1:
        parser.error("need --repeats, --iterations, --extra >= 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = benchlib.select_devices(args.device, PROG)
    if devices is None:
        return 2
    paths = benchlib.out_paths(args.out, devices, PROG)
    for device in devices:
        report = benchlib.environment(PROG, device)
        load = benchlib.loadavg()
        benchlib.warn_if_loaded(load, device, PROG)
        report.update(loadavg_start=load, repeats=args.repeats, iterations=args.iterations, extra=args.extra,
                      results=[])
        for shape in args.shapes:
            start = time.perf_counter()
            report["results"].append(bench_shape(shape, device, args))
            print(f"{PROG}: {device.type} {'x'.join(map(str, shape))} done in {time.perf_counter() - start:.0f} s",
                  file=sys.stderr, flush=True)
        report["loadavg_end"] = benchlib.loadavg()
        print_table(report)
        benchlib.write_json(paths[device.type], report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
