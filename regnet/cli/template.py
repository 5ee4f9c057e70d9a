"""``regnet template``: build an unbiased template of a group of images (ANTs' template construction)."""

from __future__ import annotations

import argparse
import time

from regnet.cli import _cohort
from regnet.cli._common import error, failure

COMMAND = "template"


def add(commands) -> None:
    parser = commands.add_parser(
        COMMAND,
        help="build an unbiased template of a group of images (affine, then SyN rounds; batched, distributed)",
        description=(
            "Build a template in the manner of ANTs' antsMultivariateTemplateConstruction2.sh: the images averaged on "
            "the reference grid through their headers, registered affinely onto that average, then ITERATIONS rounds "
            "of: register every image onto the current template (batched, distributed as register-many), average the "
            "warped images, pull the average through the inverse of the mean transformation (negative mean SyN field "
            "as a velocity, inverse mean stretch of the affines), sharpen. Writes OUT/template.nii.gz, the per-subject "
            "output folders (regnet's and ANTs' files; OUT/subjects/ for the final template), convergence.csv/json "
            "and round_NN/overview.png. 2D and 3D. A rerun with the same settings resumes. See docs/cohorts.md."
        ),
    )
    parser.add_argument("--images", metavar="DIR|LIST|IMG", nargs="+", required=True,
                        help="a folder of images, a text file with one path a line, or the image files")
    parser.add_argument("--out", metavar="DIR", required=True, help="output folder")
    parser.add_argument("--iterations", type=int, default=4, metavar="N",
                        help="rounds of deformable registration after the affine round (default: 4, as ANTs' script)")
    parser.add_argument("--gradient-step", type=float, default=1.0, metavar="G",
                        help="fraction of the shape update per round (default: 1, the whole inverse mean map, as "
                             "ANTs' script applies -0.25 x the mean warp four times)")
    parser.add_argument("--sharpen", type=float, default=0.25, metavar="W",
                        help="weight of the Laplacian-sharpened template in each new one (default: 0.25, ANTsPy's "
                             "build_template; 0: off)")
    parser.add_argument("--reference", metavar="IMG", help="image whose grid the template takes (default: the first)")
    parser.add_argument("--no-final-registration", action="store_true",
                        help="skip registering every image onto the final template (OUT/subjects/)")
    parser.add_argument("--force", action="store_true", help="redo every registration (also with other settings)")
    _cohort.add_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, start: float) -> int:
    if args.iterations < 0:
        error(COMMAND, f"--iterations must be >= 0, got {args.iterations}")
        return 2
    status = _cohort.check(COMMAND, args)
    if status:
        return status
    from regnet.pipeline.template import build_template

    try:
        engine = _cohort.engine(args)
        try:
            log = build_template(args.images, args.out, iterations=args.iterations, transform=args.transform,
                                 config=args.config, gradient_step=args.gradient_step, sharpen=args.sharpen,
                                 reference=args.reference, batch_size=args.batch_size, device=args.device,
                                 verbose=not args.quiet, final_registration=not args.no_final_registration,
                                 force=args.force, engine=engine)
        finally:
            _cohort.close(engine)
    except (ValueError, TypeError, OSError, RuntimeError) as problem:
        return failure(COMMAND, problem)
    if log is None:  # not the main process
        return 0
    print(summary(log, time.perf_counter() - start))
    return 0


def summary(log: dict, seconds: float) -> str:
    lines = [f"regnet {COMMAND}: {len(log['settings']['images'])} images -> {log['template']} in {seconds:.1f} s"]
    for entry in log["rounds"]:
        ncc = entry.get("mean_ncc")
        change = entry.get("template_change")
        lines.append(f"  round {entry['round']} ({entry['kind']}): {entry['subjects']} subjects"
                     f"{', ' + str(entry['failed']) + ' failed' if entry.get('failed') else ''}, mean NCC "
                     f"{'-' if ncc is None else f'{ncc:.4f}'}, mean SyN field {entry['mean_warp_mm']:.3f} mm"
                     f"{'' if change is None else f', template change {change:.4f}'}, {entry['time_s']:.1f} s")
    return "\n".join(lines)
