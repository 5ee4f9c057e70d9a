"""Template construction: ``regnet template`` against ANTsPy's ``ants.build_template`` on the same
inputs, in the same run: time, sharpness and centredness of the templates.

Cases:

* ``2d``: the six brain2d slices (``r16, r27, r30, r62, r64, r85``, 256 x 256), written as 2D
  NIfTI files (identity affine) so that both tools read the same world geometry;
* ``3d``: synthetic T1 images of synthseg subjects 1..``--subjects3d`` (default 5) at
  ``--spacing`` mm (default 3; ``scripts/brain_pairs.py``), each on its own cropped grid.

Methods (each a fresh process):

* ``regnet``: ``regnet template --iterations N --no-final-registration`` (an affine round, then
  N rounds of affine+SyN; defaults otherwise), ``OMP_NUM_THREADS=1``; also on two gloo
  processes (``--devices 2 --accelerator cpu``), both cores of this machine;
* ``ANTsPy``: ``ants.build_template(image_list=..., iterations=N)`` (its defaults: SyN, gradient
  step 0.2, blending weight 0.75), ``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=2``,
  ``ANTS_RANDOM_SEED=1``. N = ``--iterations`` (default 3, ANTsPy's default).

Scores of each template, by two scorers so that neither tool judges only itself: every subject
is registered onto the template (``regnet``: ``register-many`` with regnet's defaults;
``ANTs``: ``ants.registration(type_of_transform="SyN")``), then

* **sharpness**: mean over subjects of the global NCC between the warped subject and the template;
* **centredness**: RMS over the template's foreground (intensity > 10 % of its maximum) of the
  length (mm) of the mean deformable field from the template to the subjects (0 for a
  perfectly centred template), and ``stretch_deviation``, the Frobenius norm of the mean
  stretch (symmetric polar factor) of the subjects' affines minus the identity.

The JSON (``benchmarks/results/bench_template_cpu.json``) records the machine's load before
and after each step.

Usage::

    python scripts/bench_template.py                 # both cases, ~10 minutes on 2 cores
    python scripts/bench_template.py --cases 2d --iterations 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import benchlib
import brain_pairs
import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("REGNET_DATA", REPO.parent / "shared" / "data"))
WORK = REPO / "benchmarks" / "cache" / "bench_template"
SLICES = ("r16", "r27", "r30", "r62", "r64", "r85")


def env(threads: int) -> dict:
    out = dict(os.environ, ANTS_RANDOM_SEED="1")
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"):
        out[name] = str(threads)
    out["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), out.get("PYTHONPATH")]))
    return out


def run(cmd: list[str], threads: int) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, env=env(threads), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} failed ({proc.returncode}): {proc.stderr[-3000:]}")
    return proc


# --- inputs ---------------------------------------------------------------------------------

def inputs_2d(folder: Path) -> list[Path]:
    from regnet.io import load_image, save_image

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name in SLICES:
        path = folder / f"{name}.nii.gz"
        if not path.exists():
            image = load_image(DATA / "brain2d" / f"{name}slice.jpg")
            save_image(path, image.data[0], image.affine, dtype=np.float32)
        out.append(path)
    return out


def inputs_3d(folder: Path, count: int, spacing: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for subject in range(1, count + 1):
        source = brain_pairs.subject_files(subject, spacing, contrasts=("t1",))["t1"]
        path = folder / f"sub{subject:02d}.nii.gz"
        if not path.exists():
            shutil.copyfile(source, path)
        out.append(path)
    return out


# --- the methods ----------------------------------------------------------------------------

def regnet_template(images: Path, out: Path, iterations: int, processes: int) -> float:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "regnet", "template", "--images", str(images), "--out", str(out), "--iterations",
           str(iterations), "--quiet", "--no-final-registration"]
    if processes > 1:
        cmd += ["--devices", str(processes), "--accelerator", "cpu", "--strategy", "ddp"]
    start = time.perf_counter()
    run(cmd, 1)
    return time.perf_counter() - start


def ants_template(images: list[Path], out: Path, iterations: int) -> float:
    out.parent.mkdir(parents=True, exist_ok=True)
    spec = json.dumps({"images": [str(p) for p in images], "out": str(out), "iterations": iterations})
    start = time.perf_counter()
    run([sys.executable, __file__, "--ants-child", spec], 2)
    return time.perf_counter() - start


def _ants_child(spec: dict) -> None:
    import ants

    if "template" not in spec:  # build a template
        images = [ants.image_read(p) for p in spec["images"]]
        template = ants.build_template(image_list=images, iterations=spec["iterations"])
        ants.image_write(template, spec["out"])
        return
    # score a template: SyN of every subject onto it
    template = ants.image_read(spec["template"])
    t = template.numpy()
    foreground = t > 0.1 * t.max()
    nccs, fields, stretches = [], [], []
    for path in spec["images"]:
        reg = ants.registration(fixed=template, moving=ants.image_read(path), type_of_transform="SyN")
        w = reg["warpedmovout"].numpy()
        nccs.append(float(np.corrcoef(w.ravel(), t.ravel())[0, 1]))
        fields.append(ants.image_read(reg["fwdtransforms"][0]).numpy())  # (*spatial, ndim), mm
        params = np.asarray(ants.read_transform(reg["fwdtransforms"][1]).parameters)
        ndim = t.ndim
        stretches.append(_stretch(params[: ndim * ndim].reshape(ndim, ndim)))
    mean_field = np.mean(fields, axis=0)
    length = np.linalg.norm(mean_field, axis=-1)
    print("ANTS_SCORE " + json.dumps({
        "mean_ncc": float(np.mean(nccs)), "ncc": nccs,
        "mean_warp_mm": float(np.sqrt(np.mean(length[foreground] ** 2))),
        "stretch_deviation": float(np.linalg.norm(np.mean(stretches, axis=0) - np.eye(t.ndim)))}))


def _stretch(linear: np.ndarray) -> np.ndarray:
    _, s, vt = np.linalg.svd(linear)
    return vt.T @ np.diag(s) @ vt


# --- scoring --------------------------------------------------------------------------------

def score_regnet(template: Path, images: list[Path], folder: Path) -> dict:
    from regnet.pipeline.many import register_many
    from regnet.pipeline.pairs import Pair
    from regnet.pipeline.pairs import stem as file_stem
    from regnet.pipeline.template import round_statistics

    shutil.rmtree(folder, ignore_errors=True)
    names = [file_stem(p) for p in images]
    pairs = [Pair(row=i, fixed=str(template), moving=str(p), out=str(folder / n), given={"subject": n})
             for i, (p, n) in enumerate(zip(images, names, strict=True), start=1)]
    torch.set_num_threads(1)
    register_many(pairs, "affine+syn", summary=folder / "summary.csv", verbose=False)
    stats = round_statistics(folder, names, template)
    return {k: stats[k] for k in ("mean_ncc", "mean_warp_mm", "stretch_deviation", "subjects", "failed")}


def score_ants(template: Path, images: list[Path]) -> dict:
    spec = json.dumps({"images": [str(p) for p in images], "template": str(template)})
    proc = run([sys.executable, __file__, "--ants-child", spec], 2)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("ANTS_SCORE ")][-1]
    return json.loads(line[len("ANTS_SCORE "):])


def run_case(name: str, images: list[Path], iterations: int) -> dict:
    print(f"\n## {name}: {len(images)} images, {iterations} iterations", flush=True)
    folder = WORK / name
    templates, results = {}, {}
    steps = [("regnet", lambda: regnet_template(images[0].parent, folder / "regnet", iterations, 1),
              folder / "regnet" / "template.nii.gz"),
             ("regnet, 2 processes", lambda: regnet_template(images[0].parent, folder / "regnet2", iterations, 2),
              folder / "regnet2" / "template.nii.gz"),
             ("ANTsPy build_template", lambda: ants_template(images, folder / "ants" / "template.nii.gz", iterations),
              folder / "ants" / "template.nii.gz")]
    for method, build, path in steps:
        load = benchlib.loadavg()
        seconds = build()
        templates[method] = path
        results[method] = {"time_s": round(seconds, 2), "loadavg_before": load, "loadavg_after": benchlib.loadavg()}
        print(f"{method:24s} built in {seconds:7.1f} s (load {load} -> {results[method]['loadavg_after']})", flush=True)
    for method in ("regnet", "ANTsPy build_template"):
        load = benchlib.loadavg()
        results[method]["score_regnet"] = score_regnet(templates[method], images, folder / "score" / method[:6])
        results[method]["score_ants"] = score_ants(templates[method], images)
        results[method]["score_loadavg"] = [load, benchlib.loadavg()]
    results["regnet, 2 processes"]["same_template_as_one_process"] = _same(templates["regnet"],
                                                                           templates["regnet, 2 processes"])
    rows = []
    for method in ("regnet", "regnet, 2 processes", "ANTsPy build_template"):
        r = results[method]
        cells = [method, f"{r['time_s']:.1f}"]
        for scorer in ("score_regnet", "score_ants"):
            s = r.get(scorer)
            cells += ["" if s is None else f"{s['mean_ncc']:.4f}", "" if s is None else f"{s['mean_warp_mm']:.3f}",
                      "" if s is None else f"{s['stretch_deviation']:.4f}"]
        rows.append(cells)
    benchlib.print_markdown_table(["method", "time s", "NCC (regnet)", "mean warp mm (regnet)", "stretch (regnet)",
                                   "NCC (ANTs)", "mean warp mm (ANTs)", "stretch (ANTs)"], rows, left=1)
    return {"images": [str(p) for p in images], "iterations": iterations, "methods": results}


def _same(a: Path, b: Path) -> float:
    """Largest absolute difference between two templates, relative to the first one's maximum."""
    from regnet.io import load_image

    x, y = load_image(a).data, load_image(b).data
    return float((x - y).abs().max() / x.abs().max())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", choices=("2d", "3d"), default=["2d", "3d"])
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--subjects3d", type=int, default=5)
    parser.add_argument("--spacing", type=int, default=3)
    parser.add_argument("--out", help="JSON path (default benchmarks/results/bench_template_cpu.json)")
    parser.add_argument("--ants-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.ants_child:
        _ants_child(json.loads(args.ants_child))
        return 0
    reason = brain_pairs.available() if "3d" in args.cases else None
    if reason or not (DATA / "brain2d" / "r64slice.jpg").exists():
        print(f"bench_template: data missing: {reason or DATA / 'brain2d'}", file=sys.stderr)
        return 2
    report = benchlib.environment("bench_template", torch.device("cpu"))
    report["loadavg_start"] = benchlib.loadavg()
    report["cases"] = {}
    if "2d" in args.cases:
        report["cases"]["brain2d"] = run_case("brain2d", inputs_2d(WORK / "inputs_2d"), args.iterations)
    if "3d" in args.cases:
        name = f"synthseg_{args.spacing}mm"
        images = inputs_3d(WORK / f"inputs_{name}", args.subjects3d, args.spacing)
        report["cases"][name] = run_case(name, images, args.iterations)
    report["loadavg_end"] = benchlib.loadavg()
    out = Path(args.out) if args.out else REPO / "benchmarks" / "results" / "bench_template_cpu.json"
    benchlib.write_json(out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
