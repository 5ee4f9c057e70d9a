"""Shared machinery of the benchmark scripts (``bench_ops.py``, ``bench_losses.py``).

Not a benchmark itself. What lives here:

* inputs: :func:`brain_image` (the real brain ``../shared/data/brain3d/subject_a_t1.nii.gz``
  relative to the repository root, resampled, random fallback), :func:`smooth_field`;
* timing: :func:`time_case` runs the closures of a case alternating (A, B, B, A, ...) so
  that a change in machine load hits every side alike; CUDA events on GPU,
  ``time.perf_counter`` on CPU;
* memory: :func:`measure_alone` (peak extra memory of one closure over its runs:
  ``max_memory_allocated`` on CUDA, the RSS high-water mark ``VmHWM`` after
  ``/proc/self/clear_refs`` on CPU), :func:`run_child` (runs one case in a fresh child process
  of the calling script, with glibc's ``MALLOC_MMAP_THRESHOLD_=65536`` so that freed tensors
  go back to the OS, and optionally an ``RLIMIT_DATA`` cap so that a case that would need
  more memory than the machine has fails alone instead of pushing it into the OOM killer),
  :func:`measure_memory` (child on CPU, in process on CUDA);
* checks: :func:`check_pair` (max abs difference of output and gradients of two sides);
* reporting: :func:`environment` (device, versions, threads, commit), :func:`print_header`,
  :func:`print_markdown_table`, :func:`out_paths`, :func:`write_json`;
* CLI: :func:`add_common_args`, :func:`select_devices`.

The scripts put ``scripts/`` on ``sys.path`` implicitly (they run as ``python scripts/X.py``),
so ``import benchlib`` works from them.
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
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
BRAIN = REPO.parent / "shared" / "data" / "brain3d" / "subject_a_t1.nii.gz"
SIDES = ("regnet", "peer")
RESULT_TAG = "BENCH_CASE_RESULT "
MMAP_THRESHOLD = "65536"
DATA_LIMIT_ENV = "REGNET_BENCH_DATA_LIMIT_BYTES"


# --- inputs ---------------------------------------------------------------------------------

def brain_image(shape, batch: int, gen: torch.Generator, prog: str = "bench") -> tuple[torch.Tensor, str]:
    """``(batch, 1, *shape)`` float32 on the CPU: the brain (trilinearly resampled to
    ``shape`` if needed) if available, else uniform noise in [0, 1) from ``gen``."""
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
            print(f"{prog}: could not load {BRAIN} ({err}); using a random image", file=sys.stderr)
    return torch.rand((batch, 1, *shape), generator=gen), "random"


def smooth_field(shape, batch: int, gen: torch.Generator, max_abs: float) -> torch.Tensor:
    """``(batch, ndim, *shape)`` smooth random displacement (noise on a grid 8x coarser,
    trilinearly upsampled), scaled so that its largest absolute value is ``max_abs`` voxels."""
    coarse = tuple(max(2, s // 8) for s in shape)
    noise = torch.randn((batch, len(shape), *coarse), generator=gen)
    field = F.interpolate(noise, size=tuple(shape), mode="trilinear", align_corners=True)
    return field * (max_abs / field.abs().amax())


# --- timing ---------------------------------------------------------------------------------

def time_once(fn, device: torch.device) -> float:
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
            times[side].append(time_once(fns[side], device))
    return times


# --- memory ---------------------------------------------------------------------------------

def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def peak_rss_bytes() -> int:
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


def reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark (what ``ru_maxrss`` reports) to the current RSS."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def mem_available_bytes() -> int | None:
    """``MemAvailable`` of ``/proc/meminfo`` (None where unreadable)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def measure_alone(fn, repeats: int, warmup: int, device: torch.device) -> dict:
    """Peak extra memory of ``fn`` (a built closure whose inputs already exist) over
    ``warmup`` + ``repeats`` runs, which are timed too (the ``times_s``).

    CUDA: ``max_memory_allocated`` after ``reset_peak_memory_stats`` minus
    ``memory_allocated`` now. CPU: ``VmHWM`` after resetting it minus the RSS now; meant to
    run in a fresh process (see :func:`run_child`)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        baseline = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        times = time_case({"fn": fn}, repeats, warmup, device)["fn"]
        peak = torch.cuda.max_memory_allocated(device) - baseline
        peak_reset = True
    else:
        peak_reset = reset_peak_rss()
        baseline = rss_bytes()
        times = time_case({"fn": fn}, repeats, warmup, device)["fn"]
        peak = peak_rss_bytes() - baseline
    return {
        "times_s": times,
        "median_s": statistics.median(times),
        "peak_extra_mib": peak / 2**20,
        "baseline_mib": baseline / 2**20,
        "peak_reset": peak_reset,
    }


def apply_data_limit() -> int | None:
    """In a child started by :func:`run_child` with ``data_limit_bytes``: cap this process's
    ``RLIMIT_DATA`` (private writable memory: every tensor allocation), so that running out
    of it raises an allocation error here instead of exhausting the machine. No-op otherwise."""
    value = os.environ.get(DATA_LIMIT_ENV)
    if not value:
        return None
    limit = int(value)
    try:
        _, hard = resource.getrlimit(resource.RLIMIT_DATA)
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))
    except (OSError, ValueError):
        return None
    return limit


def child_report(result: dict) -> None:
    """Child side of :func:`run_child`: print the result where the parent looks for it."""
    print(RESULT_TAG + json.dumps(result), flush=True)


def run_child(argv: list[str], label: str, prog: str, data_limit_bytes: int | None = None) -> dict:
    """Run ``argv`` (the calling script in its child mode) in a fresh process with
    ``MALLOC_MMAP_THRESHOLD_=65536`` (unless already set) and return the dict it reported
    with :func:`child_report`. ``data_limit_bytes``: cap for :func:`apply_data_limit`.
    Raises ``RuntimeError`` with the child's output tail when it fails."""
    env = dict(os.environ)
    env.setdefault("MALLOC_MMAP_THRESHOLD_", MMAP_THRESHOLD)
    if data_limit_bytes is not None:
        env[DATA_LIMIT_ENV] = str(int(data_limit_bytes))
    proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_TAG)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{prog}: case {label} failed (exit {proc.returncode}):\n"
                           f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1][len(RESULT_TAG):])


def free_cuda(device: torch.device) -> None:
    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()


def measure_memory(device: torch.device, run_local, child_argv, label: str, side: str, prog: str,
                   width: int = 12, data_limit_bytes: int | None = None) -> dict:
    """Peak extra memory of one side of one case alone: on CPU in a fresh child process
    (``child_argv``, see :func:`run_child`), on CUDA in this process (``run_local()``, then
    the caching allocator is emptied). Prints a progress line to stderr."""
    if device.type == "cpu":
        m = run_child(child_argv, f"{label}:{side}", prog, data_limit_bytes)
    else:
        m = run_local()
        free_cuda(device)
    print(f"  {device.type} {label:{width}s} {side:6s}: {m['peak_extra_mib']:8.1f} MiB  (alone: "
          f"{m['median_s']:.4f} s)", file=sys.stderr, flush=True)
    return m


def memory_method(device: torch.device) -> str:
    if device.type == "cuda":
        return "torch.cuda.max_memory_allocated - memory_allocated after inputs"
    return ("fresh child process: VmHWM - RSS after inputs (high-water mark reset), "
            "MALLOC_MMAP_THRESHOLD_=" + os.environ.get("MALLOC_MMAP_THRESHOLD_", MMAP_THRESHOLD))


# --- checks ---------------------------------------------------------------------------------

def check_pair(fns: dict, leaves: list[torch.Tensor], sides=SIDES) -> dict:
    """Run each side once on the same inputs (each closure clears the leaves' gradients,
    runs forward + backward and returns the detached output); max abs differences of output
    and gradients of ``sides[0]`` vs ``sides[1]``, plus the scale of the latter's."""
    results = {}
    for side in sides:
        out = fns[side]()
        results[side] = (out, [leaf.grad.clone() for leaf in leaves])
    (out_r, grads_r), (out_p, grads_p) = results[sides[0]], results[sides[1]]
    return {
        "max_abs_diff_out": (out_r - out_p).abs().max().item(),
        "max_abs_diff_grad": max((a - b).abs().max().item() for a, b in zip(grads_r, grads_p)),
        "max_abs_out": out_p.abs().max().item(),
        "max_abs_grad": max(g.abs().max().item() for g in grads_p),
    }


# --- reporting ------------------------------------------------------------------------------

def ratio(num: float, den: float) -> float | None:
    return num / den if den > 0 and num > 0 else None


def fmt(x, spec: str) -> str:
    return "n/a" if x is None else format(x, spec)


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


def loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def warn_if_loaded(load: list[float] | None, device: torch.device, prog: str) -> None:
    if device.type == "cpu" and load and load[0] > 0.5:
        print(f"{prog}: warning: CPU load average {load[0]:.2f} before starting; other processes "
              f"distort CPU timings (multi-threaded ones most)", file=sys.stderr, flush=True)


def environment(benchmark: str, device: torch.device) -> dict:
    """The leading fields of a report: benchmark name, timestamp, device, versions, commit,
    threads, CPU count (in this order)."""
    import monai

    return {
        "benchmark": benchmark,
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": device.type,
        "device_name": device_name(device),
        "torch_version": torch.__version__,
        "monai_version": monai.__version__,
        "python_version": platform.python_version(),
        "git_commit": git_commit(),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
    }


def print_header(report: dict, details: list[str]) -> None:
    """``### device: name | torch | monai | threads | <details> | load avg`` and a blank line."""
    print(f"\n### {report['device']}: {report['device_name']} | torch {report['torch_version']} | "
          f"monai {report['monai_version']} | {report['threads']} threads | " + " | ".join(details) +
          f" | load avg {report['loadavg_start']} -> {report['loadavg_end']}\n")


def print_markdown_table(columns: list[str], rows: list[list[str]], left: int = 2) -> None:
    """Markdown table; the first ``left`` columns left-aligned, the others right-aligned."""
    print("| " + " | ".join(columns) + " |")
    print("|" + "|".join("---" if i < left else "---:" for i in range(len(columns))) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


def device_slug(device: torch.device) -> str:
    """The device's name as a file-name part: ``NVIDIA H100 80GB HBM3`` -> ``nvidia-h100-80gb-hbm3``."""
    name = device_name(device).lower()
    slug = "".join(ch if ch.isalnum() else "-" for ch in name)
    while "--" in slug:
        slug = slug.replace("--", "-")
    return slug.strip("-") or device.type


def out_paths(out: str | None, devices: list[torch.device], stem: str) -> dict[str, Path]:
    """JSON path per device: ``benchmarks/results/<stem>_<device>.json`` by default (for CUDA
    ``<stem>_cuda_<gpu name>.json``, so that runs on different GPUs do not overwrite each
    other); ``out`` for a single device; ``out`` with ``_<device>`` before the suffix for several."""
    if out is None:
        names = {d.type: d.type if d.type != "cuda" else f"cuda_{device_slug(d)}" for d in devices}
        return {d.type: REPO / "benchmarks" / "results" / f"{stem}_{names[d.type]}.json" for d in devices}
    path = Path(out)
    if len(devices) == 1:
        return {devices[0].type: path}
    return {d.type: path.with_name(f"{path.stem}_{d.type}{path.suffix}") for d in devices}


def copy_bandwidth(device: torch.device, mib: int | None = None, repeats: int = 5) -> dict:
    """Measured device memory bandwidth of ``dst.copy_(src)`` on a big float32 tensor (1 GiB on
    CUDA, 256 MiB on CPU by default): bytes read + written over the median time, GB/s."""
    mib = mib or (1024 if device.type == "cuda" else 256)
    n = mib * 2**20 // 4
    src = torch.rand(n, device=device)
    dst = torch.empty_like(src)
    times = time_case({"copy": lambda: dst.copy_(src)}, repeats, 1, device)["copy"]
    median = statistics.median(times)
    src = dst = None  # free before measuring anything else
    free_cuda(device)
    return {"copy_mib": mib, "copy_time_s": median, "copy_gbps": 2 * n * 4 / median / 1e9}


def compile_or_none(fn, device: torch.device, enabled: bool, wrap=None):
    """``(runner, None)`` with ``runner = wrap(torch.compile(fn))`` (or the compiled ``fn``
    itself), called once here, or ``(None, reason)`` when disabled or when compiling or that
    first call fails (the reason goes in the report, the number is 'n/a')."""
    if not enabled:
        return None, "not run (--compile off; auto runs it on CUDA only)"
    try:
        compiled = torch.compile(fn)
        if wrap is not None:
            compiled = wrap(compiled)
        compiled()  # compile now: errors surface here, not in the timed runs
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return compiled, None
    except Exception as err:  # noqa: BLE001 - any failure means "n/a", with the reason
        lines = str(err).strip().splitlines()
        return None, f"{type(err).__name__}: {lines[0][:300] if lines else ''}"


def write_json(path: Path, report: dict) -> None:
    """Write ``report`` to ``path`` atomically (a temporary sibling, then a rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.replace(path)
    print(f"\nwrote {path}")


# --- CLI ------------------------------------------------------------------------------------

def add_common_args(parser: argparse.ArgumentParser, stem: str, default_repeats: int = 5,
                    default_warmup: int = 1, quick_help: str = "smoke test",
                    warmup_help: str = "untimed runs first") -> None:
    """``--device --batch --repeats --warmup --threads --out --quick`` and the hidden
    ``--case``. ``--repeats`` defaults to None: the script fills it in (quick or not)."""
    parser.add_argument("--device", choices=("cpu", "cuda", "all"), default="all",
                        help="cpu, cuda, or all = cpu plus cuda when available (default)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=None,
                        help=f"timed runs, median reported (default {default_repeats})")
    parser.add_argument("--warmup", type=int, default=default_warmup,
                        help=f"{warmup_help} (default {default_warmup})")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: as is)")
    parser.add_argument("--out", default=None, help=f"JSON path (default benchmarks/results/{stem}_<device>.json)")
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--case", default=None, help=argparse.SUPPRESS)  # internal: child mode


def select_devices(choice: str, prog: str) -> list[torch.device] | None:
    """Devices for ``--device``; None (after a message) for cuda without CUDA."""
    if choice == "cuda" and not torch.cuda.is_available():
        print(f"{prog}: --device cuda but torch.cuda.is_available() is False", file=sys.stderr)
        return None
    devices = [torch.device("cpu")] if choice in ("cpu", "all") else []
    if choice == "cuda" or (choice == "all" and torch.cuda.is_available()):
        devices.append(torch.device("cuda"))
    return devices
