"""Train (or load) the prostate MR -> ultrasound network and score the held-out pairs.

Trains ``configs/prostate_mr_us.yaml`` with ``regnet train fit`` (in this process, plus any
``--set KEY=VALUE`` overrides, e.g. a CPU-sized grid and a time limit), then evaluates the
*last* checkpoint (never the one chosen on validation: the validation cases are the held-out
cases) on the held-out cases (``data.val_cases`` of the config, the test split):

- before: the MR labels resized onto the ultrasound grid (same field of view, normalised
  coordinates; the data README's protocol), no registration;
- after: the same labels warped by the predicted DDF, brought from the training grid to the
  ultrasound grid (trilinear resampling of the field, displacements scaled by the grid ratio).

Scores on the original ultrasound grid (44 x 59 x 41): gland Dice (channel 0, masks at 0.5) and
landmark centroid distance (channels 1..): the centroid ``p`` of each ultrasound landmark mask is
mapped by the field (``p + ddf(p)``, the pull convention) and compared with the centroid of the
corresponding MR landmark mask (resized onto the ultrasound grid); before registration the
distance of the two centroids. In mm of the header spacing (0.4 mm, which the data README says
to treat as grid-relative) and in voxels. Also folding (share of voxels with a non-positive
Jacobian determinant) and how many warped landmark masks vanished (empty after warping).
Writes JSON (temporary file, then rename).

    OMP_NUM_THREADS=1 python scripts/eval_prostate.py --max-minutes 10 \\
        --set data.spatial_size=[32,48,32] --set data.num_workers=0
    python scripts/eval_prostate.py --ckpt runs/.../last.ckpt      # evaluate only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(REPO / "configs" / "prostate_mr_us.yaml"))
    p.add_argument("--ckpt", help="evaluate this checkpoint instead of training")
    p.add_argument("--work-dir", default=str(REPO / "runs" / "prostate_eval"), help="trainer.default_root_dir")
    p.add_argument("--max-minutes", type=float, default=10.0, help="training time limit (trainer.max_time)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="LightningCLI override, e.g. data.spatial_size=[32,48,32] (repeatable)")
    p.add_argument("--instance-steps", type=int, default=0,
                   help="also score test-time instance optimisation with this many Adam steps (0: skip)")
    p.add_argument("--train-seconds", type=float,
                   help="with --ckpt: the wall time of the run that wrote it (recorded in the JSON)")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "prostate_mr_us_cpu.json"))
    return p.parse_args(argv)


def train(args) -> tuple[Path, float]:
    from regnet.lightning.cli import main as cli_main

    argv = ["fit", "--config", args.config, "--trainer.default_root_dir", args.work_dir,
            "--trainer.max_time", _max_time(args.max_minutes), "--trainer.enable_progress_bar", "false"]
    for item in args.set:
        key, _, value = item.partition("=")
        argv += [f"--{key}", value]
    before = set(Path(args.work_dir).rglob("last.ckpt")) if Path(args.work_dir).exists() else set()
    start = time.perf_counter()
    status = cli_main(argv)
    seconds = time.perf_counter() - start
    if status:
        raise SystemExit(f"training failed (status {status})")
    found = sorted(set(Path(args.work_dir).rglob("last.ckpt")) - before, key=lambda p: p.stat().st_mtime)
    if not found:
        found = sorted(Path(args.work_dir).rglob("last.ckpt"), key=lambda p: p.stat().st_mtime)
    return found[-1], seconds


def _max_time(minutes: float) -> str:
    total = int(round(minutes * 60))
    return f"00:{total // 3600:02d}:{total % 3600 // 60:02d}:{total % 60:02d}"


def evaluate(ckpt: Path, instance_steps: int) -> dict:
    import torch
    import torch.nn.functional as F
    from monai.transforms import LoadImage, Resize

    from regnet import metrics, ops
    from regnet.lightning import PairDataModule, RegistrationModule
    from regnet.lightning.evaluation import centroids, mask_dice

    def sample_at(ddf, points):
        """ddf (1, 3, *grid) at voxel points (L, 3) (trilinear, align_corners=True as regnet.ops.warp)."""
        sizes = torch.tensor(ddf.shape[2:], dtype=torch.float64)
        norm = (2 * points / (sizes - 1) - 1).flip(-1).to(ddf.dtype)  # (x, y, z) = reversed array axes
        values = F.grid_sample(ddf, norm.view(1, -1, 1, 1, 3), mode="bilinear", align_corners=True)
        return values.view(3, -1).T.double()

    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    model = RegistrationModule.load_from_checkpoint(ckpt, map_location="cpu").eval()
    import inspect

    accepted = inspect.signature(PairDataModule).parameters
    data_hparams = {k: v for k, v in state["datamodule_hyper_parameters"].items() if k in accepted}
    data = PairDataModule(**data_hparams)
    data.setup("test")
    load = LoadImage(image_only=True, ensure_channel_first=True, dtype=None)
    results = {"cases": {}, "checkpoint": os.path.relpath(ckpt, REPO), "epoch": state.get("epoch"),
               "global_step": state.get("global_step")}
    rows = {"before": [], "after": []} | ({"after_instance_opt": []} if instance_steps else {})
    infer_seconds = []
    for index in range(len(data.test_set)):
        pair = data.test_set.pairs[index]
        item = data.test_set[index]
        fixed_img = load(str(pair["fixed"]))
        spacing = [float(s) for s in fixed_img.pixdim[:3]]
        grid = tuple(int(s) for s in fixed_img.shape[1:])
        fixed_label = torch.as_tensor(load(str(pair["fixed_label"]))).as_subclass(torch.Tensor).float()[None]
        moving_label = load(str(pair["moving_label"]))
        moving_label = Resize(grid, mode="trilinear")(moving_label).as_subclass(torch.Tensor).float()[None]
        moving, fixed = item["moving"][None], item["fixed"][None]
        with torch.no_grad():
            start = time.perf_counter()
            out = model(moving, fixed)
            infer_seconds.append(time.perf_counter() - start)
        fields = {"after": out}
        if instance_steps:
            fields["after_instance_opt"] = model.instance_optimise(moving, fixed, out, steps=instance_steps)
        case = {"grid": list(grid), "spacing_mm": spacing, "train_grid": list(moving.shape[2:])}

        fixed_points = centroids(fixed_label[:, 1:])[0]  # (L, 3) voxels of the US grid, NaN if absent
        moving_points = centroids(moving_label[:, 1:])[0]
        keep = ~torch.isnan(fixed_points).any(-1) & ~torch.isnan(moving_points).any(-1)
        fixed_points, moving_points = fixed_points[keep], moving_points[keep]
        mm = torch.tensor(spacing, dtype=torch.float64)

        def score(warped_label, ddf_grid=None, ddf_train=None):
            dice = mask_dice(warped_label[:, :1], fixed_label[:, :1])[0, 0].item()
            # landmark error: the fixed centroid p maps to p + ddf(p) in the moving image (pull
            # convention); compare with the moving landmark's centroid
            mapped = fixed_points.clone()
            if ddf_grid is not None:
                mapped = mapped + sample_at(ddf_grid, fixed_points)
            error = mapped - moving_points
            row = {"gland_dice": dice, "landmark_mm": [float(v) for v in (error * mm).norm(dim=-1)],
                   "landmark_voxels": [float(v) for v in error.norm(dim=-1)]}
            if ddf_train is not None:
                row["folding"] = metrics.jacobian_stats(ddf_train)["fraction_nonpositive"]
                present = (warped_label[0, 1:].flatten(1).sum(-1) > 0)[keep]
                row["warped_landmark_masks_empty"] = int((~present).sum())
            return row

        case["before"] = score(moving_label)
        for name, field in fields.items():
            ddf = field["ddf"].detach()
            scale = torch.tensor([g / s for g, s in zip(grid, ddf.shape[2:])], dtype=ddf.dtype).view(1, -1, 1, 1, 1)
            ddf_grid = F.interpolate(ddf, size=grid, mode="trilinear", align_corners=False) * scale
            warped = ops.warp(moving_label, ddf_grid, padding_mode="zeros")
            case[name] = score(warped, ddf_grid, ddf)
        results["cases"][pair["case"]] = case
        for name in rows:
            rows[name].append(case[name])
    summary = {}
    for name, values in rows.items():
        dice = [r["gland_dice"] for r in values]
        mm = [d for r in values for d in r["landmark_mm"]]
        vox = [d for r in values for d in r["landmark_voxels"]]
        summary[name] = {
            "gland_dice_mean": sum(dice) / len(dice),
            "landmark_mm_mean": sum(mm) / len(mm) if mm else None,
            "landmark_voxels_mean": sum(vox) / len(vox) if vox else None,
            "landmarks": len(mm),
        }
        if "folding" in values[0]:
            summary[name]["folding_mean"] = sum(r["folding"] for r in values) / len(values)
            summary[name]["warped_landmark_masks_empty"] = sum(r["warped_landmark_masks_empty"] for r in values)
    results["summary"] = summary
    results["inference_s_per_pair"] = sum(infer_seconds) / len(infer_seconds)
    results["model"] = dict(model.hparams)
    results["model"] = {k: v for k, v in results["model"].items() if not k.startswith("_")}
    results["data"] = data_hparams
    return results


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    train_seconds = None
    if args.ckpt:
        ckpt, train_seconds = Path(args.ckpt), args.train_seconds
    else:
        ckpt, train_seconds = train(args)
    results = evaluate(ckpt, args.instance_steps)
    results["train_seconds"] = train_seconds
    logged = ckpt.parent.parent / "metrics.csv"  # <version>/checkpoints/last.ckpt -> <version>/metrics.csv
    if logged.exists():
        import csv

        with open(logged) as f:
            steps = [int(row["step"]) for row in csv.DictReader(f) if row.get("step")]
        # the checkpoint should hold the latest weights, not the best on validation (= the held-out cases)
        results["last_logged_step"] = max(steps) if steps else None
    results["overrides"] = args.set
    results["config"] = os.path.relpath(args.config, REPO)
    results["environment"] = {"device": "cpu", "torch_threads": torch.get_num_threads(),
                              "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
                              "torch": torch.__version__, "python": platform.python_version(),
                              "machine": platform.machine(), "cpus": os.cpu_count()}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(results, indent=2, default=str) + "\n")
    tmp.replace(out)
    s = results["summary"]
    for name, row in s.items():
        mm = row["landmark_mm_mean"]
        print(f"{name:>20}: gland Dice {row['gland_dice_mean']:.3f}, landmark centroid distance "
              f"{mm:.2f} mm ({row['landmark_voxels_mean']:.2f} voxels, {row['landmarks']} landmarks)"
              + (f", folding {row['folding_mean']:.2e}" if "folding_mean" in row else ""))
    if train_seconds is not None:
        print(f"training: {train_seconds:.0f} s, epoch {results['epoch']}, step {results['global_step']}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
