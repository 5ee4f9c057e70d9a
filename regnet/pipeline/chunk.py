"""One chunk of ``regnet register-many``'s pairs: read, batched registration, output folders.

:func:`run_chunk` is the unit of work every engine runs (the plain loop of
:func:`regnet.pipeline.many.register_many`, or one ``predict_step`` of
:mod:`regnet.lightning.many` on the rank that owns the chunk). It never raises for a pair's
problem: each pair gets a summary row (:func:`summary_row`), ``done`` or ``failed`` with the
error. Pairs whose fixed images share a grid (after reading) are registered as one batch
(:func:`regnet.registration.batch.register_batch`); when a batch fails as a whole (e.g. out
of memory), its pairs are retried one by one, so one bad pair never fails the others. Every
output folder is written atomically (:func:`regnet.pipeline.outdir.output_folder`): a failed
pair leaves nothing behind.

Example::

    >>> rows = run_chunk(pairs, "affine+syn", config=None, device="cpu")
    >>> [r["status"] for r in rows]          # 'done' or 'failed', one row per pair, in order
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from regnet.io import load_image
from regnet.pipeline.outdir import REPORT_NAME, check_out_dir, output_folder
from regnet.pipeline.outputs import write_outputs, write_report
from regnet.pipeline.pairs import Pair
from regnet.pipeline.run import _load_labels
from regnet.registration.batch import grid_key, register_batch
from regnet.registration.world import register_images

__all__ = ["METRIC_COLUMNS", "error_message", "run_chunk", "summary_row"]

#: The summary's columns after the pair's own ones.
METRIC_COLUMNS = ("status", "error", "time_s", "batch_size", "rank", "ncc_before", "ncc_after", "dice_before",
                  "dice_after", "hd95_mm", "folding", "sdlogj")


def error_message(problem: BaseException) -> str:
    """One line: the exception's class and message (an ``OSError``'s reason and file)."""
    if isinstance(problem, OSError) and problem.strerror:
        text = f"{problem.strerror} ('{problem.filename}')" if problem.filename else problem.strerror
    else:
        text = str(problem) or repr(problem)
    return f"{type(problem).__name__}: {' '.join(text.split())}"


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def summary_row(pair: Pair, status: str, error: str | None = None, report: dict | None = None,
                seconds: float | None = None, rank: int | None = None) -> dict[str, Any]:
    """The summary row of a pair: ``row``, its columns as given, then :data:`METRIC_COLUMNS`
    (metrics from its ``report.json``: global NCC before/after, mean Dice over the scored
    FreeSurfer structures before/after and the mean HD95 (mm) over the labels of both maps
    when labels were given, folding (fraction of voxels with Jacobian determinant <= 0) and
    SDlogJ)."""
    row: dict[str, Any] = {"row": pair.row, **pair.given, "status": status, "error": error or "",
                           "time_s": None if seconds is None else round(seconds, 3), "rank": rank}
    if report:
        metrics = report.get("metrics", {})
        row["batch_size"] = report.get("batch", {}).get("size", 1)
        row["ncc_before"] = _number(metrics.get("global_ncc", {}).get("before"))
        row["ncc_after"] = _number(metrics.get("global_ncc", {}).get("after"))
        if "dice" in metrics:
            row["dice_before"] = _number(metrics["dice"].get("before"))
            row["dice_after"] = _number(metrics["dice"].get("after"))
            hd95 = [_number(v.get("hd95_mm")) for v in metrics.get("labels", {}).values()]
            hd95 = [v for v in hd95 if v is not None]
            row["hd95_mm"] = sum(hd95) / len(hd95) if hd95 else None
        jacobian = report.get("jacobian", {})
        row["folding"] = _number(jacobian.get("fraction_nonpositive"))
        row["sdlogj"] = _number(jacobian.get("std_log"))
        if seconds is None:
            row["time_s"] = _number(report.get("time_s", {}).get("pair"))
    return row


class _Loaded:
    """A pair read from disk, ready to register."""

    def __init__(self, pair: Pair):
        start = time.perf_counter()
        self.pair = pair
        self.fixed = load_image(pair.fixed)
        self.moving = load_image(pair.moving)
        if self.fixed.ndim != self.moving.ndim:
            raise ValueError(f"mixed 2D and 3D inputs: the fixed image is {self.fixed.ndim}D "
                             f"{self.fixed.spatial_shape}, the moving image {self.moving.ndim}D "
                             f"{self.moving.spatial_shape}")
        if self.fixed.data.shape[1] != self.moving.data.shape[1]:
            raise ValueError(f"the fixed image has {self.fixed.data.shape[1]} channel(s), the moving image "
                             f"{self.moving.data.shape[1]}")
        self.labels = None if pair.labels is None else _load_labels(pair.labels, self.fixed)
        self.masks = None
        if pair.masks:
            self.masks = tuple(None if p is None else load_image(p, dtype=None)
                               for p in (pair.fixed_mask, pair.moving_mask))
        check_out_dir(pair.out)  # an existing folder that is not a regnet output: refused before the work
        self.seconds = time.perf_counter() - start

    def key(self) -> tuple:
        return ("masks", self.pair.row) if self.masks is not None else grid_key(self.fixed)


def _register_one(item: _Loaded, transform, config, device, verbose):
    if item.masks is None:
        return register_batch([item.fixed], [item.moving], transform, config, device, verbose)[0]
    fixed_mask, moving_mask = item.masks  # pairs with masks run one by one (their own batch key)
    return register_images(item.fixed, item.moving, transform, config, device, verbose, fixed_mask=fixed_mask,
                           moving_mask=moving_mask)


def run_chunk(pairs: list[Pair], transform: str, config, device="cpu", verbose: bool = False,
              rank: int | None = None) -> list[dict[str, Any]]:
    """Register and write every pair of ``pairs``; one summary row per pair, in order.

    Args:
        pairs: :class:`~regnet.pipeline.pairs.Pair` s without a list error.
        transform, config, device, verbose: as :func:`regnet.pipeline.register_files` takes them
            (``config`` loaded once by the caller).
        rank: the process that runs them (recorded in the rows).
    """
    rows: dict[int, dict[str, Any]] = {}
    loaded: list[_Loaded] = []
    for pair in pairs:
        try:
            loaded.append(_Loaded(pair))
        except Exception as problem:  # one pair's problem never stops the others
            rows[pair.row] = summary_row(pair, "failed", error_message(problem), rank=rank)
    groups: dict[tuple, list[_Loaded]] = {}
    for item in loaded:
        groups.setdefault(item.key(), []).append(item)
    for group in groups.values():
        for item, result, seconds in _registered(group, transform, config, device, verbose):
            rows[item.pair.row] = _written(item, result, seconds, rank)
    return [rows[pair.row] for pair in pairs]


def _registered(group: list[_Loaded], transform, config, device, verbose):
    """``(item, Registration or the exception, seconds of registration per pair)`` for a group
    on one grid: one batch, or one by one when the batch fails as a whole."""
    start = time.perf_counter()
    if len(group) > 1:
        try:
            results = register_batch([i.fixed for i in group], [i.moving for i in group], transform, config, device,
                                     verbose)
            share = (time.perf_counter() - start) / len(group)
            return [(item, result, share) for item, result in zip(group, results, strict=True)]
        except Exception:  # retried alone below: the bad pair fails, the others run
            _free(device)
    out = []
    for item in group:
        start = time.perf_counter()
        try:
            result: object = _register_one(item, transform, config, device, verbose)
        except Exception as problem:
            result = problem
            _free(device)
        out.append((item, result, time.perf_counter() - start))
    return out


def _free(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


def _written(item: _Loaded, result, seconds: float, rank: int | None) -> dict[str, Any]:
    if isinstance(result, BaseException):
        return summary_row(item.pair, "failed", error_message(result), seconds=item.seconds + seconds, rank=rank)
    start = time.perf_counter()
    try:
        with output_folder(item.pair.out) as tmp:
            report = write_outputs(result, tmp, labels=item.labels)
            report["time_s"]["load"] = item.seconds
            report["time_s"]["pair"] = item.seconds + seconds + time.perf_counter() - start
            write_report(tmp / REPORT_NAME, report)
    except Exception as problem:
        return summary_row(item.pair, "failed", error_message(problem), seconds=item.seconds + seconds, rank=rank)
    return summary_row(item.pair, "done", report=report, seconds=report["time_s"]["pair"], rank=rank)
