"""``regnet register-many``: register a list of pairs, batched, resumable, on one process or
sharded over many by an engine (``docs/cohorts.md``).

:func:`register_many` checks the list (:mod:`regnet.pipeline.pairs`), skips the pairs whose
output folder is already a complete regnet output of that pair (resumability; ``force``
redoes them), plans the others into chunks of at most ``batch_size`` pairs on one fixed grid,
hands the chunks to an engine and writes the summary CSV. The engine runs
:func:`regnet.pipeline.chunk.run_chunk` on each chunk:

- :class:`LocalEngine` (the default): this process, one chunk after the other, one tqdm bar
  over the pairs; no launcher, no Lightning;
- :class:`regnet.lightning.many.LightningEngine`: ``Trainer.predict`` over the chunks, which
  Lightning shards over the ranks of any strategy (DDP on CPUs, GPUs, nodes; ``torchrun``;
  SLURM); the summary is gathered on rank 0.

An engine has ``is_main`` (only the main process plans, writes the summary and returns the
rows) and ``run(plan, work)``: ``plan(world_size) -> (rows, chunks)`` is called on the main
process only (the rows of the pairs not to run, and the chunks), then every chunk is run with
``work(chunk, device=..., rank=...)`` on the process that owns it; ``run`` returns all rows on
the main process and ``None`` on the others.

Example::

    >>> rows = register_many(read_pairs_csv("pairs.csv"), "affine+syn", summary="summary.csv")
    >>> sum(r["status"] == "failed" for r in rows)
"""

from __future__ import annotations

import csv
import functools
import io
import math
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from regnet import _checks
from regnet.pipeline.chunk import METRIC_COLUMNS, run_chunk, summary_row
from regnet.pipeline.pairs import Pair, PairsError, check_duplicates, finished_report, header_key, plan_chunks
from regnet.registration.config import load_config
from regnet.registration.world import TRANSFORMS, check_device

__all__ = ["LocalEngine", "default_batch_size", "register_many", "write_summary"]

#: ``batch_size=None``: as many pairs per batch as fit this many fixed voxels in all, at most
#: :data:`MAX_AUTO_BATCH` (measured: ``docs/cohorts.md``).
AUTO_BATCH_VOXELS = {"cpu": 1 << 20, "cuda": 1 << 24}
MAX_AUTO_BATCH = 16


def default_batch_size(voxels: int, device="cpu") -> int:
    """The batch size of ``batch_size=None`` for fixed images of ``voxels`` voxels: the most
    pairs whose images hold at most :data:`AUTO_BATCH_VOXELS` voxels together (1 MiVoxel on
    the CPU, 16 on CUDA), between 1 and :data:`MAX_AUTO_BATCH`."""
    budget = AUTO_BATCH_VOXELS["cuda" if str(device).startswith("cuda") else "cpu"]
    return max(1, min(MAX_AUTO_BATCH, budget // max(1, int(voxels))))


class LocalEngine:
    """Runs every chunk in this process, in order, with one tqdm bar over the pairs."""

    is_main = True

    def __init__(self, device="cpu", verbose: bool = True):
        self.device = device
        self.verbose = verbose

    def run(self, plan: Callable[[int], tuple[dict, list[list[Pair]]]],
            work: Callable[..., list[dict]]) -> list[dict]:
        planned, chunks = plan(1)
        total = sum(len(c) for c in chunks)
        bar = None
        if self.verbose and total:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, desc="register-many", unit="pair", dynamic_ncols=True)
        rows = list(planned.values())
        try:
            for chunk in chunks:
                rows += work(chunk, device=self.device, rank=0)
                if bar is not None:
                    bar.update(len(chunk))
                    bar.set_postfix(failed=sum(r["status"] == "failed" for r in rows), refresh=False)
        finally:
            if bar is not None:
                bar.close()
        return rows


def register_many(pairs: list[Pair], transform: str = "affine+syn", summary: str | os.PathLike | None = None,
                  config=None, device="cpu", batch_size: int | None = None, verbose: bool = True,
                  force: bool = False, engine=None) -> list[dict[str, Any]]:
    """Register every pair of ``pairs`` and write each one's output folder (``regnet register``'s).

    Args:
        pairs: from :func:`~regnet.pipeline.pairs.read_pairs_csv` or
            :func:`~regnet.pipeline.pairs.pairs_from_folder`.
        transform: ``"affine"``, ``"syn"`` or ``"affine+syn"``.
        summary: path of the summary CSV (one row per pair: its columns, ``status`` ``done`` |
            ``skipped`` | ``failed``, ``error``, time, metrics; written atomically by the
            main process); ``None`` writes none.
        config: YAML path, mapping or ``None`` (:func:`~regnet.registration.config.load_config`).
        device: torch device of the registrations (a Lightning engine uses its ranks' devices).
        batch_size: pairs per batched registration (pairs on one fixed grid only); ``None``:
            :func:`default_batch_size`.
        verbose: a progress bar over the pairs.
        force: redo pairs whose output folder is already complete.
        engine: :class:`LocalEngine` (default) or :class:`regnet.lightning.many.LightningEngine`.

    Returns:
        The summary rows in the order of ``pairs`` on the main process (``[]`` on the others).

    Raises:
        PairsError: no pairs. ConfigError: a bad config or batch size. ValueError: a bad device
        or transform.
    """
    if transform not in TRANSFORMS:
        raise ValueError(f"transform must be one of {', '.join(TRANSFORMS)}, got {transform!r}")
    if batch_size is not None:
        batch_size = _checks.integer("register_many", "batch_size", batch_size, low=1, error=_checks.ConfigError)
    config = load_config(config)
    check_device(device)
    if not pairs:
        raise PairsError("no pairs to register")
    engine = engine or LocalEngine(device, verbose)
    plan = functools.partial(_plan, pairs, transform, batch_size, device, force)
    work = functools.partial(run_chunk, transform=transform, config=config, verbose=False)
    ran = engine.run(plan, work)
    if not engine.is_main:
        return []
    rows = {row["row"]: row for row in ran}
    by_row = {pair.row: pair for pair in pairs}
    ordered = [rows.get(row) or summary_row(by_row[row], "failed", "not run: its process returned no result")
               for row in by_row]
    if summary is not None:
        write_summary(summary, ordered)
    return ordered


def _plan(pairs: list[Pair], transform: str, batch_size: int | None, device, force: bool, world_size: int):
    """``(rows, chunks)``: summary rows of the pairs not to run (list errors, finished), and the
    chunks of the others."""
    rows: dict[int, dict] = {}
    pending: list[Pair] = []
    for pair in check_duplicates(pairs):
        if pair.error is not None:
            rows[pair.row] = summary_row(pair, "failed", pair.error)
            continue
        report = None if force else finished_report(pair, transform)
        if report is not None:
            rows[pair.row] = summary_row(pair, "skipped", report=report)
        else:
            pending.append(pair)
    keys = [header_key(p.fixed) for p in pending]
    if batch_size is None:
        voxels = [_voxels(k) for k in keys if k is not None]
        batch_size = default_batch_size(max(voxels) if voxels else 1, device)
    chunks = [[pending[i] for i in chunk] for chunk in plan_chunks(keys, batch_size, world_size)]
    return rows, chunks


def _voxels(key: tuple) -> int:
    """Voxels of a grid from its :func:`~regnet.pipeline.pairs.header_key` (pictures: pixels)."""
    return math.prod(key[1][:2] if key[0] == "picture" else key[1][:3])


def write_summary(path: str | os.PathLike, rows: list[dict[str, Any]]) -> Path:
    """Write the summary rows as CSV atomically: ``row``, the pairs' columns (in order of first
    appearance), then the metric columns; empty cells for missing values."""
    path = Path(path)
    columns = ["row"]
    for row in rows:
        columns += [k for k in row if k not in columns and k not in METRIC_COLUMNS]
    columns += list(METRIC_COLUMNS)
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    tmp.write_text(text.getvalue())
    os.replace(tmp, path)
    return path
