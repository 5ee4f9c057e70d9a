#!/usr/bin/env python
"""Benchmark regnet's similarity losses against the MONAI losses they replace.

What it measures
----------------
For each loss pair, the time and the peak extra memory of one forward + backward pass
(``loss(pred, target).backward()``, gradient w.r.t. ``pred``; ``target`` is data), 3D,
batch 1, by default at 160 x 192 x 224 and at 96 x 96 x 96 in the same run:

======  ===============================================  =====================================================
loss    regnet                                           peer (run in the same invocation)
======  ===============================================  =====================================================
lncc7   ``regnet.losses.LocalNCCLoss(7)``                ``monai.losses.LocalNormalizedCrossCorrelationLoss(``
                                                         ``spatial_dims=3, kernel_size=7,``
                                                         ``kernel_type="rectangular")``
lncc9   ``regnet.losses.LocalNCCLoss(9)``                the same with ``kernel_size=9``
mi      ``regnet.losses.GlobalMILoss(num_bins=32,``      ``monai.losses.GlobalMutualInformationLoss(``
        ``kernel="gaussian")``                           ``num_bins=32, kernel_type="gaussian")``
======  ===============================================  =====================================================

(rectangular windows, mean reduction; the pairs compute the same value.)

Inputs: ``target`` is the real brain ``../shared/data/brain3d/subject_a_t1.nii.gz`` (relative
to the repository root), trilinearly resampled to the shape and min-max scaled to [0, 1]
(uniform noise when the file is absent); ``pred`` is ``target`` warped by a smooth random
displacement (noise on a grid 8x coarser, upsampled, at most 4 voxels) plus Gaussian noise
(sigma 0.02), clamped to [0, 1]: a leaf requiring grad. Fixed seed: both sides see identical
inputs. The table's ``max abs dvalue`` / ``max abs dgrad`` are the largest absolute
differences between regnet's and MONAI's loss value and gradient w.r.t. ``pred``; ``rel
dgrad`` is ``max abs dgrad`` over MONAI's largest gradient entry (the gradients of a
mean-reduced loss are O(1 / voxels)).

Time: median of ``--repeats`` timed runs (``--mi-repeats`` for MI, default 3: MONAI's MI
takes tens of seconds per pass at 160 x 192 x 224 on two CPU threads), in one process that
runs regnet and MONAI on the same inputs alternating (regnet, peer, peer, regnet, ...), so
that a change in machine load hits both alike. The first run of each side checks the values
(above) and is the warm-up; ``--warmup`` adds untimed runs (default 0). On CUDA,
``torch.cuda.Event`` pairs (synchronised); on CPU ``time.perf_counter``.

Memory ("peak extra", MiB): the peak above what the inputs already hold during
``--mem-runs`` (default 1) passes of one side alone, measured as in ``bench_ops.py`` (see
``scripts/benchlib.py``): on CUDA ``max_memory_allocated`` minus ``memory_allocated`` once the
inputs exist; on CPU in a fresh child process per (shape, loss, side) (this script with the
hidden ``--case``), after a first pass on a small volume, from the RSS high-water mark
(``VmHWM`` after ``/proc/self/clear_refs``) with ``MALLOC_MMAP_THRESHOLD_=65536``. Those
passes are timed too (``*_alone_times_s`` in the JSON), but are not comparable with the
table's times: under that malloc setting every tensor above 64 KiB is freshly mapped and
page-faulted, which makes code with many temporaries (chunked loops) several times slower
(10x or more seen on CPU), and a single pass includes first-call costs.

Memory guard: MONAI's MI holds several ``(B, voxels, num_bins)`` float32 tensors (about
7 x 881 MiB = 6 GiB at 160 x 192 x 224, 32 bins). Before each case the script estimates the
larger side's footprint (``ESTIMATE_BYTES_PER_VOXEL``) and skips the case, saying so in the
table and the JSON, when 1.25 x that exceeds the memory available (``MemAvailable`` on CPU,
``torch.cuda.mem_get_info`` on CUDA). CPU children also run under an ``RLIMIT_DATA`` cap of
90 % of ``MemAvailable``, so that a case that still outgrows the machine fails alone (recorded
as an error) instead of waking the OOM killer.

Ratios: ``speed x = peer time / regnet time``, ``mem x = peer memory / regnet memory``
(> 1: regnet is faster / leaner).

``compiled peer``: ``torch.compile`` of MONAI's loss module (plain PyTorch), timed in the same
alternation; ``--compile auto`` (default) runs it on CUDA only. A failure is reported as
``n/a`` with its reason (``compiled_note``). ``--channels C`` gives ``C``-channel images
(MI is skipped then). On CUDA the default JSON name carries the GPU's name, and the batch
and channel count when not 1. The GPU runs the project wants::

    python scripts/bench_losses.py --device cuda --shapes 160x192x224 --batch 1
    python scripts/bench_losses.py --device cuda --shapes 160x192x224 --batch 4
    python scripts/bench_losses.py --device cuda --shapes 128x128x128 --batch 2 --channels 16 --losses lncc7

Output: a markdown table on stdout and one JSON file per device, by default
``benchmarks/results/bench_losses_<device>.json`` (``--out`` as in ``bench_ops.py``), with the
device, versions, threads, shapes, repeats, load average, input recipe and, per shape and
loss, the numbers of the table plus the raw times.

Expected duration of the default CPU run on 2 threads: roughly 5-10 minutes, most of it the
160 x 192 x 224 cases (MI above all, including regnet's MI in its memory child, slowed down by
the malloc setting above). No timing is asserted anywhere; this only measures.

Usage::

    python scripts/bench_losses.py                          # both shapes, cpu (+ cuda when available)
    python scripts/bench_losses.py --device cpu --threads 2 --shapes 96x96x96
    python scripts/bench_losses.py --losses mi --shapes 160 192 224 --mi-repeats 5
    python scripts/bench_losses.py --quick --device cpu     # 20 x 24 x 28 only, 2 repeats (smoke test)
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run from a checkout without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchlib

import benchlib  # noqa: E402

PROG = "bench_losses"
LOSSES = ("lncc7", "lncc9", "mi")
SIDES = benchlib.SIDES
NUM_BINS = 32
REGNET = {
    "lncc7": 'regnet.losses.LocalNCCLoss(kernel_size=7, kernel_type="rectangular")',
    "lncc9": 'regnet.losses.LocalNCCLoss(kernel_size=9, kernel_type="rectangular")',
    "mi": f'regnet.losses.GlobalMILoss(num_bins={NUM_BINS}, kernel="gaussian")',
}
PEERS = {
    "lncc7": 'monai.losses.LocalNormalizedCrossCorrelationLoss(spatial_dims=3, kernel_size=7, '
             'kernel_type="rectangular")',
    "lncc9": 'monai.losses.LocalNormalizedCrossCorrelationLoss(spatial_dims=3, kernel_size=9, '
             'kernel_type="rectangular")',
    "mi": f'monai.losses.GlobalMutualInformationLoss(num_bins={NUM_BINS}, kernel_type="gaussian")',
}
PEERS_SHORT = {"lncc7": "MONAI LNCC k=7", "lncc9": "MONAI LNCC k=9", "mi": f"MONAI MI gaussian {NUM_BINS} bins"}
REGNET_OP = {"lncc7": "local_ncc", "lncc9": "local_ncc", "mi": "joint_histogram"}  # for the backend name
SEED = 0
MAX_DISPLACEMENT = 4.0  # voxels
NOISE_STD = 0.02
DEFAULT_SHAPES = [(160, 192, 224), (96, 96, 96)]
DEFAULT_REPEATS = 5
DEFAULT_MI_REPEATS = 3
QUICK_SHAPES = [(24, 28, 32)]  # one: each (loss, side) runs in its own child process (MONAI import ~2-4 s);
# a volume of 86 KB: above the 64 KiB mmap threshold, so every temporary shows in the RSS peak
QUICK_REPEATS = 2
PRIME_SIZE = 24  # per axis, for the untimed first pass of a child on a small volume
# Generous peak-memory estimates (bytes per voxel per batch item, the larger side), for the
# memory guard. Measured on CPU at 96^3: MONAI MI ~7.1 x (num_bins x 4 B) per voxel, MONAI
# LNCC ~128 B per voxel; regnet's are smaller.
ESTIMATE_BYTES_PER_VOXEL = {"lncc7": 48 * 4, "lncc9": 48 * 4, "mi": 8 * NUM_BINS * 4}
MEMORY_HEADROOM = 1.25
CHILD_DATA_LIMIT_FRACTION = 0.9


# --- inputs ---------------------------------------------------------------------------------

def make_inputs(shape, batch: int, device, channels: int = 1) -> dict:
    """``target`` (data) and ``pred`` (leaf requiring grad), ``(batch, channels, *shape)`` in
    [0, 1], built on the CPU with a fixed seed, then moved to ``device``; and ``image_source``.
    Channel ``c`` of both is the one-channel image to the power ``1 + 0.15 c`` (distinct
    channels, same geometry)."""
    import regnet.ops as rops

    gen = torch.Generator().manual_seed(SEED)
    image, source = benchlib.brain_image(shape, batch, gen, PROG)
    lo, hi = image.amin(), image.amax()
    target = (image - lo) / (hi - lo) if hi > lo else image
    del image
    ddf = benchlib.smooth_field(shape, batch, gen, MAX_DISPLACEMENT)
    with torch.no_grad():
        pred = rops.warp(target, ddf)
    del ddf
    pred = (pred + NOISE_STD * torch.randn(pred.shape, generator=gen)).clamp_(0, 1)
    if channels > 1:
        gammas = (1 + 0.15 * torch.arange(channels, dtype=torch.float32)).view(1, -1, *[1] * len(shape))
        target, pred = target.pow(gammas), pred.pow(gammas)
    return {
        "target": target.to(device),
        "pred": pred.to(device).requires_grad_(),
        "image_source": source,
    }


# --- cases ----------------------------------------------------------------------------------

def make_loss(loss: str, side: str) -> torch.nn.Module:
    """The loss module of one side (imports only that side's library: regnet children do not
    pay for importing MONAI)."""
    if side == "regnet":
        from regnet.losses import GlobalMILoss, LocalNCCLoss

        if loss == "mi":
            return GlobalMILoss(num_bins=NUM_BINS, kernel="gaussian")
        return LocalNCCLoss(kernel_size=int(loss[4:]), kernel_type="rectangular")
    from monai.losses import GlobalMutualInformationLoss, LocalNormalizedCrossCorrelationLoss

    if loss == "mi":
        return GlobalMutualInformationLoss(num_bins=NUM_BINS, kernel_type="gaussian")
    return LocalNormalizedCrossCorrelationLoss(spatial_dims=3, kernel_size=int(loss[4:]), kernel_type="rectangular")


def make_fn(loss: str, side: str, inputs: dict):
    """Closure: clear ``pred.grad``, forward + backward, return the detached loss value."""
    module = make_loss(loss, side).to(inputs["pred"].device)
    pred, target = inputs["pred"], inputs["target"]

    def run():
        pred.grad = None
        value = module(pred, target)
        value.backward()
        return value.detach()

    return run


# --- measurement ----------------------------------------------------------------------------

def run_side(loss: str, side: str, shape, args, device: torch.device) -> dict:
    """Peak extra memory (and times) of ``side`` of ``loss`` alone over ``warmup`` +
    ``repeats`` passes on fresh inputs, after a first pass on a small volume (so that the
    library code it runs is already mapped). On CPU meant for a fresh process (``--case``)."""
    prime = make_inputs([min(s, PRIME_SIZE) for s in shape], args.batch, device, args.channels)
    make_fn(loss, side, prime)()
    del prime
    inputs = make_inputs(shape, args.batch, device, args.channels)
    fn = make_fn(loss, side, inputs)
    result = benchlib.measure_alone(fn, args.repeats, args.warmup, device)
    result["image_source"] = inputs["image_source"]
    return result


def _case_argv(loss: str, side: str, shape, args) -> list[str]:
    argv = [sys.executable, str(Path(__file__).resolve()), "--case", f"{loss}:{side}", "--device", "cpu",
            "--shapes", "x".join(map(str, shape)), "--batch", str(args.batch),
            "--repeats", str(args.mem_runs), "--warmup", "0", "--channels", str(args.channels)]
    if args.threads:
        argv += ["--threads", str(args.threads)]
    if args.backend != "auto":
        argv += ["--backend", args.backend]
    return argv


def compare_case(loss: str, shape, repeats: int, args, device: torch.device) -> dict:
    """Check (first run of each side, also the warm-up) and time both sides of ``loss`` in
    this process, on one set of inputs; with ``torch.compile`` of MONAI's loss as a third side
    when enabled (``compiled_*``; None and a ``compiled_note`` when disabled or failing)."""
    inputs = make_inputs(shape, args.batch, device, args.channels)
    values = {}

    def recording(side, fn):
        def run():
            values[side] = fn()
            return values[side]
        return run

    fns = {side: recording(side, make_fn(loss, side, inputs)) for side in SIDES}
    result = benchlib.check_pair(fns, [inputs["pred"]])
    result.update({f"{side}_value": values[side].item() for side in SIDES})
    enabled = args.compile == "on" or (args.compile == "auto" and device.type == "cuda")
    module = make_loss(loss, "peer").to(device)
    pred, target = inputs["pred"], inputs["target"]

    def fwd_bwd(forward):
        def run():
            pred.grad = None
            value = forward()
            value.backward()
            return value.detach()
        return run

    compiled, note = benchlib.compile_or_none(lambda: module(pred, target), device, enabled, wrap=fwd_bwd)
    timed = dict(fns)
    if compiled is not None:
        timed["compiled"] = compiled
    times = benchlib.time_case(timed, repeats, args.warmup, device)
    result.update({f"{side}_times_s": times[side] for side in SIDES})
    result["compiled_times_s"] = times.get("compiled")
    result["compiled_time_s"] = statistics.median(times["compiled"]) if compiled is not None else None
    result["compiled_note"] = note
    return result


def memory_check(loss: str, shape, batch: int, device: torch.device, channels: int = 1) -> str | None:
    """None if the case should fit in memory, else why it is skipped."""
    if loss == "mi" and channels != 1:
        return "skipped: MI is benchmarked on one channel (--channels 1)"
    need = ESTIMATE_BYTES_PER_VOXEL[loss] * batch * channels
    for s in shape:
        need *= s
    need *= MEMORY_HEADROOM
    if device.type == "cuda":
        available = torch.cuda.mem_get_info(device)[0]
    else:
        available = benchlib.mem_available_bytes()
    if available is not None and need > available:
        return (f"skipped: needs about {need / 2**30:.1f} GiB (estimate x {MEMORY_HEADROOM}), "
                f"{available / 2**30:.1f} GiB available")
    return None


def shape_key(shape) -> str:
    return "x".join(map(str, shape))


def bench_device(device: torch.device, args) -> dict:
    from regnet.ops._backend import select

    results, image_source = {}, None
    load_start = benchlib.loadavg()
    benchlib.warn_if_loaded(load_start, device, PROG)
    for shape in args.shapes:
        key = shape_key(shape)
        results[key] = {}
        memory, problems = {}, {}
        # first the memory, each (loss, side) alone: CPU children / CUDA allocator stats
        for loss in args.losses:
            problem = memory_check(loss, shape, args.batch, device, args.channels)
            if problem is not None:
                problems[loss] = problem
                print(f"  {device.type} {key} {loss}: {problem}", file=sys.stderr, flush=True)
                continue
            memory[loss] = {}
            available = benchlib.mem_available_bytes()
            limit = int(available * CHILD_DATA_LIMIT_FRACTION) if available else None
            for side in SIDES:
                try:
                    m = benchlib.measure_memory(
                        device, lambda: run_side(loss, side, shape, args, device),
                        _case_argv(loss, side, shape, args), f"{key} {loss}", side, PROG, width=18,
                        data_limit_bytes=limit)
                except (RuntimeError, MemoryError) as err:  # e.g. out of memory: record, go on
                    problems[loss] = f"error ({side}): {str(err).strip().splitlines()[-1][:300]}"
                    print(f"  {device.type} {key} {loss} {side}: {err}", file=sys.stderr, flush=True)
                    benchlib.free_cuda(device)
                    break
                memory[loss][side], image_source = m, m["image_source"]
        # then check and time both sides together in this process
        for loss in args.losses:
            entry = {"peer": PEERS[loss], "regnet": REGNET[loss],
                     "regnet_backend": getattr(select(REGNET_OP[loss], device), "NAME", "?")}
            if loss in problems:
                entry["skipped"] = problems[loss]
                results[key][loss] = entry
                continue
            repeats = args.mi_repeats if loss == "mi" else args.repeats
            r, p = memory[loss]["regnet"], memory[loss]["peer"]
            cmp = compare_case(loss, shape, repeats, args, device)
            benchlib.free_cuda(device)
            t_r, t_p = statistics.median(cmp["regnet_times_s"]), statistics.median(cmp["peer_times_s"])
            print(f"  {device.type} {key + ' ' + loss:18s} timed together: regnet {t_r:.4f} s, peer {t_p:.4f} s",
                  file=sys.stderr, flush=True)
            entry.update({
                "repeats": repeats,
                "regnet_time_s": t_r,
                "peer_time_s": t_p,
                "speed_ratio": benchlib.ratio(t_p, t_r),
                "regnet_peak_mib": r["peak_extra_mib"],
                "peer_peak_mib": p["peak_extra_mib"],
                "memory_ratio": benchlib.ratio(p["peak_extra_mib"], r["peak_extra_mib"]),
                **cmp,
                "rel_diff_grad": cmp["max_abs_diff_grad"] / cmp["max_abs_grad"] if cmp["max_abs_grad"] > 0 else None,
                "regnet_alone_times_s": r["times_s"],
                "peer_alone_times_s": p["times_s"],
                "peak_reset": r["peak_reset"] and p["peak_reset"],
            })
            results[key][loss] = entry
    return {
        **benchlib.environment("bench_losses", device),
        "loadavg_start": load_start,
        "loadavg_end": benchlib.loadavg(),
        "shapes": [list(s) for s in args.shapes],
        "batch": args.batch,
        "channels": args.channels,
        "compile": args.compile,
        "repeats": args.repeats,
        "mi_repeats": args.mi_repeats,
        "warmup": args.warmup,
        "mem_runs": args.mem_runs,
        "backend": args.backend,
        "image_source": image_source,
        "target": "image min-max scaled to [0, 1]",
        "pred": (f"target warped by a smooth random displacement (max {MAX_DISPLACEMENT} voxels) "
                 f"+ N(0, {NOISE_STD}^2) noise, clamped to [0, 1]; requires grad"),
        "num_bins": NUM_BINS,
        "memory_method": benchlib.memory_method(device),
        "results": results,
    }


# --- reporting ------------------------------------------------------------------------------

def print_table(report: dict) -> None:
    benchlib.print_header(report, [f"B={report['batch']}",
                                   f"median of {report['repeats']} (MI {report['mi_repeats']})",
                                   f"input {report['image_source']}"])
    fmt = benchlib.fmt
    rows, notes = [], []
    for key, per_loss in report["results"].items():
        for loss, r in per_loss.items():
            if "skipped" in r:
                rows.append([key, loss, PEERS_SHORT[loss], *["n/a"] * 11])
                notes.append(f"{key} {loss}: {r['skipped']}")
                continue
            rows.append([key, loss, PEERS_SHORT[loss], f"{r['regnet_time_s']:.4f}", f"{r['peer_time_s']:.4f}",
                         fmt(r["speed_ratio"], ".2f"), fmt(r.get("compiled_time_s"), ".4f"),
                         f"{r['regnet_peak_mib']:.1f}", f"{r['peer_peak_mib']:.1f}",
                         fmt(r["memory_ratio"], ".2f"), f"{r['peer_value']:.6f}", f"{r['max_abs_diff_out']:.2e}",
                         f"{r['max_abs_diff_grad']:.2e}", fmt(r["rel_diff_grad"], ".2e")])
    benchlib.print_markdown_table(["shape", "loss", "peer", "regnet s", "peer s", "speed x", "compiled peer s",
                                   "regnet MiB",
                                   "peer MiB", "mem x", "loss value", "max abs dvalue", "max abs dgrad",
                                   "rel dgrad"], rows, left=3)
    print("\nspeed x = peer time / regnet time; mem x = peer peak extra memory / regnet's (> 1: regnet better); "
          "loss value = MONAI's; rel dgrad = max abs dgrad / max abs MONAI gradient; "
          "compiled peer = torch.compile(MONAI loss) (n/a: not run or failed)")
    for note in notes:
        print(f"n/a: {note}")
    sys.stdout.flush()


# --- CLI ------------------------------------------------------------------------------------

def _parse_shapes(tokens: list[str]) -> list[tuple[int, ...]]:
    """``160x192x224 96x96x96`` or ``160 192 224 96 96 96`` (groups of three)."""
    if all("x" in t for t in tokens):
        shapes = [tuple(int(v) for v in t.split("x")) for t in tokens]
    elif all(t.isdigit() for t in tokens) and len(tokens) % 3 == 0:
        shapes = [tuple(int(v) for v in tokens[i:i + 3]) for i in range(0, len(tokens), 3)]
    else:
        raise ValueError(tokens)
    if any(len(s) != 3 for s in shapes):
        raise ValueError(tokens)
    return shapes


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    benchlib.add_common_args(parser, "bench_losses", default_repeats=DEFAULT_REPEATS, default_warmup=0,
                             quick_help=f"shape {QUICK_SHAPES[0]} only, {QUICK_REPEATS} repeats (smoke test)",
                             warmup_help="untimed runs after the checking run, which is the first warm-up")
    parser.add_argument("--shapes", nargs="+", default=None, metavar="SHAPE",
                        help="volume sizes, HxWxD each or groups of three ints "
                             "(default 160x192x224 96x96x96)")
    parser.add_argument("--losses", nargs="+", choices=LOSSES, default=list(LOSSES),
                        help="losses to run (default all)")
    parser.add_argument("--mi-repeats", type=int, default=None,
                        help=f"timed runs of the MI cases (default min(--repeats, {DEFAULT_MI_REPEATS}))")
    parser.add_argument("--mem-runs", type=int, default=1,
                        help="full-size passes of each side alone for the memory measurement (default 1)")
    parser.add_argument("--backend", choices=("auto", "torch", "triton"), default="auto",
                        help="regnet.set_backend for the regnet losses (default auto)")
    parser.add_argument("--channels", type=int, default=1,
                        help="image channels (default 1; MI is skipped for more than one)")
    parser.add_argument("--compile", choices=("auto", "on", "off"), default="auto",
                        help="also time torch.compile of MONAI's loss (auto: on CUDA only)")
    args = parser.parse_args(argv)
    if args.shapes is None:
        args.shapes = list(QUICK_SHAPES) if args.quick else list(DEFAULT_SHAPES)
    else:
        try:
            args.shapes = _parse_shapes(args.shapes)
        except ValueError:
            parser.error(f"--shapes: expected HxWxD tokens or groups of three ints, got {' '.join(args.shapes)}")
    if args.repeats is None:
        args.repeats = QUICK_REPEATS if args.quick else DEFAULT_REPEATS
    if args.mi_repeats is None:
        args.mi_repeats = min(args.repeats, DEFAULT_MI_REPEATS)
    if (args.repeats < 1 or args.mi_repeats < 1 or args.mem_runs < 1 or args.warmup < 0 or args.batch < 1
            or args.channels < 1
            or min(min(s) for s in args.shapes) < 2):
        parser.error("need --repeats, --mi-repeats, --mem-runs, --batch >= 1, --warmup >= 0 "
                     "--channels >= 1 and every shape size >= 2")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.backend != "auto":
        import regnet

        regnet.set_backend(args.backend)

    if args.case is not None:  # child process: one (loss, side) at one shape on the CPU
        benchlib.apply_data_limit()
        loss, side = args.case.split(":")
        device = torch.device(args.device if args.device != "all" else "cpu")
        benchlib.child_report(run_side(loss, side, args.shapes[0], args, device))
        return 0

    devices = benchlib.select_devices(args.device, PROG)
    if devices is None:
        return 2
    stem = "bench_losses" + (f"_b{args.batch}" if args.batch != 1 else "") + (
        f"_c{args.channels}" if args.channels != 1 else "")
    paths = benchlib.out_paths(args.out, devices, stem)
    for device in devices:
        print(f"{PROG}: {device.type}, shapes {[shape_key(s) for s in args.shapes]}, batch {args.batch}, "
              f"check/warm-up run + {args.warmup} warm-up + {args.repeats} timed runs per case "
              f"({args.mi_repeats} for MI), {args.mem_runs} memory run(s) alone", file=sys.stderr, flush=True)
        report = bench_device(device, args)
        print_table(report)
        benchlib.write_json(paths[device.type], report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
