"""``regnet register-many``: register a list of pairs (batched, resumable, on one process or many)
into one ``regnet register`` output folder each, with a summary CSV."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from regnet.cli import _cohort
from regnet.cli._common import error, failure

COMMAND = "register-many"


def add(commands) -> None:
    parser = commands.add_parser(
        COMMAND,
        help="register many pairs (a CSV list, or an atlas and a folder): batched, resumable, distributed",
        description=(
            "Register every pair of a list into its own output folder, as 'regnet register' writes it. The list is "
            "--pairs PAIRS.csv (header: fixed,moving,out and optionally fixed_mask,moving_mask,fixed_labels,"
            "moving_labels; relative paths are relative to the CSV's folder), or an atlas and a folder: --fixed "
            "ATLAS --moving-dir DIR (each image onto the atlas) or --moving ATLAS --fixed-dir DIR (the atlas onto "
            "each image), with --out-dir OUT (folders OUT/<image name>). Pairs on one fixed grid are registered as "
            "one batch. A rerun skips the pairs whose folder is complete and retries the failed ones; a failed "
            "pair never stops the others. The summary CSV has one row per pair (status done, skipped or failed, "
            "the error, time, NCC before/after, Dice and HD95 with labels, folding, SDlogJ). Exit status 1 when a "
            "pair failed, 2 when the list or an option cannot be used. See docs/cohorts.md."
        ),
    )
    source = parser.add_argument_group("the pairs (one of)")
    source.add_argument("--pairs", metavar="CSV", help="pairs list (CSV with a header)")
    source.add_argument("--fixed", metavar="ATLAS", help="with --moving-dir: register every image of DIR onto ATLAS")
    source.add_argument("--moving-dir", metavar="DIR", help="folder of moving images (with --fixed)")
    source.add_argument("--moving", metavar="ATLAS", help="with --fixed-dir: register ATLAS onto every image of DIR")
    source.add_argument("--fixed-dir", metavar="DIR", help="folder of fixed images (with --moving)")
    source.add_argument("--out-dir", metavar="OUT", help="parent of the output folders (with --*-dir)")
    parser.add_argument("--summary", metavar="CSV", help="summary file (default: PAIRS_summary.csv next to the "
                        "pairs list, or OUT/summary.csv)")
    parser.add_argument("--force", action="store_true", help="redo pairs whose output folder is already complete")
    _cohort.add_options(parser)
    parser.set_defaults(run=run)


def _source(args: argparse.Namespace) -> str | None:
    """The problem with the chosen list options, or ``None``."""
    atlas_fixed = args.fixed is not None or args.moving_dir is not None
    atlas_moving = args.moving is not None or args.fixed_dir is not None
    chosen = [args.pairs is not None, atlas_fixed, atlas_moving]
    if sum(chosen) != 1:
        return ("give exactly one list: --pairs CSV, or --fixed ATLAS --moving-dir DIR, or --moving ATLAS "
                "--fixed-dir DIR")
    if atlas_fixed and (args.fixed is None or args.moving_dir is None):
        return "--fixed and --moving-dir go together"
    if atlas_moving and (args.moving is None or args.fixed_dir is None):
        return "--moving and --fixed-dir go together"
    if (atlas_fixed or atlas_moving) and args.out_dir is None:
        return "--out-dir OUT is needed with --moving-dir / --fixed-dir"
    if args.pairs is not None and args.out_dir is not None:
        return "--out-dir goes with --moving-dir / --fixed-dir; a pairs list names each output folder"
    return None


def run(args: argparse.Namespace, start: float) -> int:
    problem = _source(args)
    if problem:
        error(COMMAND, problem)
        return 2
    status = _cohort.check(COMMAND, args)
    if status:
        return status
    from regnet.pipeline.many import register_many
    from regnet.pipeline.pairs import pairs_from_folder, read_pairs_csv

    try:
        if args.pairs is not None:
            pairs = read_pairs_csv(args.pairs)
            summary = args.summary or Path(args.pairs).with_name(Path(args.pairs).stem + "_summary.csv")
        elif args.fixed is not None:
            pairs = pairs_from_folder(args.fixed, args.moving_dir, args.out_dir, atlas_side="fixed")
        else:
            pairs = pairs_from_folder(args.moving, args.fixed_dir, args.out_dir, atlas_side="moving")
        if args.pairs is None:
            summary = args.summary or Path(args.out_dir) / "summary.csv"
        engine = _cohort.engine(args)
        try:
            rows = register_many(pairs, args.transform, summary=summary, config=args.config, device=args.device,
                                 batch_size=args.batch_size, verbose=not args.quiet, force=args.force, engine=engine)
        finally:
            _cohort.close(engine)
    except (ValueError, TypeError, OSError) as problem:
        return failure(COMMAND, problem)
    if engine is not None and not engine.is_main:
        return 0
    print(report_line(rows, summary, time.perf_counter() - start))
    return 1 if any(r["status"] == "failed" for r in rows) else 0


def report_line(rows: list[dict], summary, seconds: float) -> str:
    """``regnet register-many: 5 pairs: 3 done, 1 skipped, 1 failed (rows 4) in 9.1 s (19.8 pairs/min); ...``"""
    counts = {s: sum(r["status"] == s for r in rows) for s in ("done", "skipped", "failed")}
    failed = [str(r["row"]) for r in rows if r["status"] == "failed"]
    which = f" (rows {', '.join(failed[:20])}{', ...' if len(failed) > 20 else ''})" if failed else ""
    rate = f", {60 * counts['done'] / seconds:.1f} pairs/min" if counts["done"] and seconds > 0 else ""
    return (f"regnet {COMMAND}: {len(rows)} pairs: {counts['done']} done, {counts['skipped']} skipped, "
            f"{counts['failed']} failed{which} in {seconds:.1f} s{rate}; summary: {summary}")
