"""regnet.lightning: RegistrationModule, PairDataModule and `regnet train` (LightningCLI).

Tiny runs on CPU (32^3 volumes, a few steps, small networks) on the real prostate MR/US pairs
and small synthetic NIfTI files.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("pytorch_lightning")
pytest.importorskip("jsonargparse")

import pytorch_lightning as pl  # noqa: E402

from conftest import data_file  # noqa: E402
from regnet import ops  # noqa: E402
from regnet.lightning import ConfigError, PairDataModule, RegistrationModule  # noqa: E402
from regnet.lightning.cli import main as train_main  # noqa: E402
from regnet.lightning.networks import theta_to_ddf  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny_cpu.yaml"


def prostate() -> None:
    data_file("prostate_mr_us/fixed_labels/case000019.nii.gz")


def tiny_data(**overrides) -> PairDataModule:
    kwargs = dict(data_dir="prostate_mr_us", spatial_size=[32, 32, 32], label_channels=3,
                  train_cases=["case000000", "case000001"], val_cases=["case000019"], batch_size=2)
    kwargs.update(overrides)
    return PairDataModule(**kwargs)


def tiny_model(**overrides) -> RegistrationModule:
    kwargs = dict(backbone="voxelmorph", channels=[8, 8, 8, 8], integration_steps=4, similarity={"mi": 0.5},
                  regularisation={"bending": 0.1}, label_weight=1.0, mi_num_bins=16, lr=3e-3, log_figure=False)
    kwargs.update(overrides)
    return RegistrationModule(**kwargs)


def tiny_trainer(root: Path, **overrides) -> pl.Trainer:
    kwargs = dict(accelerator="cpu", devices=1, max_steps=2, limit_val_batches=1, num_sanity_val_steps=0,
                  log_every_n_steps=1, enable_progress_bar=False, enable_model_summary=False,
                  default_root_dir=str(root), logger=pl.loggers.CSVLogger(str(root)))
    kwargs.update(overrides)
    return pl.Trainer(**kwargs)


def read_metrics(root: Path) -> list[dict]:
    files = sorted(root.rglob("metrics.csv"))
    assert files, f"no metrics.csv under {root}"
    with open(files[-1]) as f:
        return list(csv.DictReader(f))


def subprocess_env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return env


# --- command line -------------------------------------------------------------------------------

def test_regnet_train_help_via_cli(tmp_path):
    result = subprocess.run([sys.executable, "-m", "regnet", "train", "--help"], cwd=tmp_path, env=subprocess_env(),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "usage: regnet train" in result.stdout
    assert all(command in result.stdout for command in ("fit", "validate", "test", "predict"))


def test_regnet_help_lists_train_without_importing_lightning():
    from regnet.cli import build_parser

    assert "train" in build_parser().format_help()
    code = ("import sys; from regnet.cli import build_parser; build_parser().format_help(); "
            "print(sorted(m for m in ('torch', 'pytorch_lightning', 'monai') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], env=subprocess_env(), capture_output=True, text=True,
                            timeout=60)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr


def test_fit_tiny_config_loss_falls(tmp_path):
    prostate()
    status = train_main(["fit", "--config", str(TINY), "--trainer.default_root_dir", str(tmp_path),
                         "--trainer.max_steps", "6"])
    assert status == 0
    rows = read_metrics(tmp_path)
    val = [float(r["val/loss"]) for r in rows if r.get("val/loss")]
    assert len(val) == 3, rows  # one validation per epoch (2 steps per epoch)
    assert val[-1] < val[0], f"validation loss did not fall: {val}"
    dice = [float(r["val/dice"]) for r in rows if r.get("val/dice")]
    assert all(0 <= d <= 1 for d in dice)
    assert list(tmp_path.rglob("*.ckpt")), "no checkpoint written"
    assert list(tmp_path.rglob("figures/*.png")), "no validation figure written"


def test_fit_without_subcommand_means_fit_and_bad_value_is_one_line(tmp_path, capsys):
    prostate()
    status = train_main(["--config", str(TINY), "--trainer.default_root_dir", str(tmp_path),
                         "--model.backbone", "resnet"])
    assert status == 2
    err = capsys.readouterr().err
    assert "regnet train: error:" in err and "backbone" in err and "'resnet'" in err and "voxelmorph" in err
    assert "Traceback" not in err


def test_ddp_two_cpu_processes(tmp_path):
    prostate()
    cmd = [sys.executable, "-m", "regnet.lightning.cli", "fit", "--config", str(TINY),
           "--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp",
           "--trainer.max_steps", "2", "--trainer.default_root_dir", str(tmp_path)]
    try:
        result = subprocess.run(cmd, cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=240)
    except subprocess.TimeoutExpired as error:  # pragma: no cover - a hang is the failure
        pytest.fail(f"DDP run did not finish in 240 s: {error}")
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    assert "MEMBER: 2/2" in out and "distributed_backend=gloo" in out
    assert list(tmp_path.rglob("*.ckpt"))
    rows = read_metrics(tmp_path)
    assert any(r.get("val/dice") for r in rows)


def test_train_ends_the_process_group():
    """Lightning destroys only NCCL groups at exit; ``regnet train`` ends a gloo group itself
    (a process exiting with one can abort in its teardown, exit status -6), also when the
    command ends early (``--help``)."""
    import socket

    import torch.distributed as dist

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        with pytest.raises(SystemExit):
            train_main(["--help"])
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


# --- checkpoints ----------------------------------------------------------------------------------

def test_checkpoint_save_and_resume(tmp_path):
    prostate()
    data = tiny_data()
    model = tiny_model()
    first = tiny_trainer(tmp_path / "a", max_steps=2)
    first.fit(model, datamodule=data)
    ckpt = first.checkpoint_callback.best_model_path or first.checkpoint_callback.last_model_path
    assert ckpt and Path(ckpt).exists()

    loaded = RegistrationModule.load_from_checkpoint(ckpt)
    assert dict(loaded.hparams) == dict(model.hparams)
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert state["datamodule_hyper_parameters"]["val_cases"] == ["case000019"]

    resumed = tiny_trainer(tmp_path / "b", max_steps=4)
    resumed.fit(tiny_model(), datamodule=tiny_data(), ckpt_path=ckpt)
    assert resumed.global_step == 4
    assert resumed.current_epoch >= 1


# --- predict: regnet's conventions ------------------------------------------------------------------

def _nontrivial(model: RegistrationModule, std: float = 0.5) -> RegistrationModule:
    convs = [m for m in model.backbone.modules() if isinstance(m, torch.nn.Conv3d)]
    torch.nn.init.normal_(convs[-1].weight, 0.0, std)
    return model


def test_predict_returns_warped_and_voxel_ddf(tmp_path):
    prostate()
    from monai.networks.blocks import Warp

    model = _nontrivial(tiny_model()).eval()
    data = tiny_data()
    predictions = tiny_trainer(tmp_path, logger=False).predict(model, datamodule=data)
    assert len(predictions) == 1
    pred = predictions[0]
    data.setup("test")
    batch = next(iter(data.predict_dataloader()))
    assert pred["warped"].shape == (1, 1, 32, 32, 32)
    assert pred["ddf"].shape == (1, 3, 32, 32, 32)
    assert pred["warped_label"].shape == (1, 3, 32, 32, 32)
    assert pred["case"] == ["case000019"]
    assert pred["ddf"].abs().max() > 0.1  # a real field, in voxels
    torch.testing.assert_close(ops.warp(batch["moving"], pred["ddf"]), pred["warped"], atol=1e-5, rtol=1e-5)
    # voxel units and the pull convention are MONAI's Warp
    monai_warped = Warp(mode="bilinear", padding_mode="border")(batch["moving"], pred["ddf"])
    torch.testing.assert_close(monai_warped, pred["warped"], atol=1e-4, rtol=1e-4)
    # the DDF is the exponential of the predicted velocity (diffeomorphic: no folding)
    with torch.no_grad():
        out = model(batch["moving"], batch["fixed"])
    torch.testing.assert_close(out["ddf"], ops.exp(out["field"], 4, padding_mode="border"))
    from regnet.metrics import jacobian_stats

    assert jacobian_stats(pred["ddf"])["fraction_nonpositive"] == 0.0


def test_ddf_is_in_voxels_of_the_fixed_grid():
    model = tiny_model(transform="ddf")
    shift = torch.zeros(1, 3, 32, 32, 32)
    shift[:, 0] = 2.0  # two voxels along the first array axis
    model.backbone.forward = lambda pair: shift
    moving = torch.rand(1, 1, 32, 32, 32)
    out = model(moving, torch.rand(1, 1, 32, 32, 32))
    torch.testing.assert_close(out["warped"][:, :, :-2], moving[:, :, 2:])  # warped(x) = moving(x + 2 e_0)


def test_predict_with_instance_optimisation_under_inference_mode(tmp_path):
    prostate()
    model = tiny_model(instance_steps=3, instance_lr=0.5).eval()
    data = tiny_data()
    pred = tiny_trainer(tmp_path, logger=False).predict(model, datamodule=data)[0]
    data.setup("test")
    batch = next(iter(data.predict_dataloader()))
    assert pred["ddf"].abs().max() > 1e-3  # refined away from the (near-identity) prediction
    torch.testing.assert_close(ops.warp(batch["moving"], pred["ddf"]), pred["warped"], atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        base = model(batch["moving"], batch["fixed"])
    refined = model.instance_optimise(batch["moving"], batch["fixed"], base, steps=3)
    mi = model.objective.terms["mi"]
    assert mi(refined["warped"], batch["fixed"]) < mi(base["warped"], batch["fixed"])


# --- model variants --------------------------------------------------------------------------------

@pytest.mark.parametrize("backbone,channels", [("unet", [8, 8]), ("regunet", [8, 8]), ("localnet", [4, 8]),
                                               ("basicunet", [4, 4, 8, 8, 8, 4])])
def test_backbones_start_near_identity(backbone, channels):
    model = tiny_model(backbone=backbone, channels=channels, transform="ddf")
    x = torch.rand(1, 1, 32, 32, 32)
    out = model(x, x)
    assert out["ddf"].shape == (1, 3, 32, 32, 32)
    assert out["ddf"].abs().max() < 0.05


@pytest.mark.parametrize("affine", ["none", "head"])
def test_2d_pairs(affine):
    model = tiny_model(ndim=2, backbone="unet", channels=[4, 8], similarity={"lncc": 1.0}, label_weight=0.0,
                       affine=affine)
    moving, fixed = torch.rand(2, 1, 32, 24), torch.rand(2, 1, 32, 24)
    out = model(moving, fixed)
    assert out["ddf"].shape == (2, 2, 32, 24) and out["warped"].shape == (2, 1, 32, 24)
    loss = model.training_step({"moving": moving, "fixed": fixed}, 0)
    loss.backward()


def test_affine_head_and_prealign():
    torch.manual_seed(0)
    moving = torch.rand(1, 1, 16, 16, 16)
    model = tiny_model(affine="head", transform="ddf")
    out = model(moving, moving)
    torch.testing.assert_close(out["theta"], torch.eye(3, 4)[None])
    torch.testing.assert_close(out["affine_ddf"], torch.zeros(1, 3, 16, 16, 16), atol=1e-5, rtol=0)
    out["ddf"].sum().backward()
    assert model.affine_head.fc.bias.grad is not None

    fixed = ops.gaussian_smooth(torch.rand(1, 1, 16, 16, 16), 2.0)
    theta_true = torch.tensor([[[1.0, 0, 0, 0.1], [0, 1, 0, 0], [0, 0, 1, 0]]])
    shifted = ops.affine_transform(fixed, theta_true, align_corners=True, padding_mode="border")
    model = tiny_model(affine="prealign", similarity={"mse": 1.0}, label_weight=0.0, prealign_iterations=30)
    with torch.no_grad():
        out = model(fixed, shifted)
    assert out["theta"].shape == (1, 3, 4)
    # warped(x) = moving(theta x) = shifted(x) = fixed(theta_true x): theta recovers theta_true
    assert abs(float(out["theta"][0, 0, 3]) - 0.1) < 0.03
    torch.testing.assert_close(out["affine_ddf"], theta_to_ddf(out["theta"], (16, 16, 16)))


def test_theta_to_ddf_matches_affine_transform():
    theta = torch.tensor([[[0.9, 0.1, 0, 0.1], [0, 1, 0.05, -0.1], [0.02, 0, 1.1, 0.2]]])
    image = torch.rand(1, 1, 12, 10, 8)
    ddf = theta_to_ddf(theta, image.shape[2:])
    torch.testing.assert_close(ops.warp(image, ddf, padding_mode="zeros"),
                               ops.affine_transform(image, theta, align_corners=True), atol=1e-5, rtol=1e-5)


# --- bad configuration ------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,words", [
    (dict(backbone="resnet"), ["backbone", "'resnet'", "voxelmorph"]),
    (dict(transform="affine"), ["transform", "'affine'", "svf"]),
    (dict(affine="rigid"), ["affine", "'rigid'", "prealign"]),
    (dict(similarity={"ncc": 1.0}), ["similarity", "'ncc'", "lncc"]),
    (dict(similarity={"mi": -1.0}), ["similarity.mi", ">= 0", "-1.0"]),
    (dict(regularisation={"tv": 1.0}), ["regularisation", "'tv'", "bending"]),
    (dict(similarity={}, label_weight=0.0), ["nothing to match", "label_weight"]),
    (dict(lr=0.0), ["lr", "> 0", "0.0"]),
    (dict(integration_steps=-1), ["integration_steps", ">= 0", "-1"]),
    (dict(channels=[8, 8, 8]), ["channels", "even", "[8, 8, 8]"]),
    (dict(ndim=4), ["ndim", "2 or 3", "4"]),
    (dict(instance_steps=5, similarity={}, label_weight=1.0), ["instance_steps", "similarity"]),
])
def test_bad_model_config(kwargs, words):
    with pytest.raises(ValueError) as info:
        tiny_model(**kwargs)
    assert isinstance(info.value, ConfigError)
    for word in words:
        assert word in str(info.value), (word, str(info.value))


@pytest.mark.parametrize("kwargs,words", [
    (dict(pairing="pairs"), ["pairing", "'pairs'", "paired"]),
    (dict(data_dir="no/such/folder"), ["data_dir", "no/such/folder", "moving_images"]),
    (dict(val_cases=["case999"]), ["val_cases", "case999", "case000000"]),
    (dict(val_cases=None, val_fraction=1.5), ["val_fraction", "[0, 1)", "1.5"]),
    (dict(spatial_size=[0, 32, 32]), ["spatial_size", ">= 2", "[0, 32, 32]"]),
    (dict(intensity="zscore"), ["intensity", "'zscore'", "minmax"]),
    (dict(rand_affine_prob=2.0), ["rand_affine_prob", "[0, 1]", "2.0"]),
    (dict(batch_size=0), ["batch_size", ">= 1", "0"]),
])
def test_bad_data_config(kwargs, words):
    prostate()
    with pytest.raises(ValueError) as info:
        tiny_data(**kwargs)
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_bad_input_shapes():
    model = tiny_model()
    with pytest.raises(ValueError, match="divisible by 4"):
        model(torch.rand(1, 1, 18, 16, 16), torch.rand(1, 1, 18, 16, 16))
    with pytest.raises(ValueError, match="same shape"):
        model(torch.rand(1, 1, 16, 16, 16), torch.rand(1, 1, 16, 16, 32))
    with pytest.raises(ValueError, match=r"\(B, 1, \*spatial\)"):
        model(torch.rand(1, 2, 16, 16, 16), torch.rand(1, 2, 16, 16, 16))
    with pytest.raises(TypeError, match="moving must be a torch.Tensor"):
        model(np.zeros((1, 1, 16, 16, 16)), torch.rand(1, 1, 16, 16, 16))


# --- data ---------------------------------------------------------------------------------------------

def test_prostate_pairs_on_a_common_grid_and_deterministic_split():
    prostate()
    data = PairDataModule(data_dir="prostate_mr_us", spatial_size=[32, 32, 32], label_channels=3, val_fraction=0.2,
                          seed=3)
    again = PairDataModule(data_dir="prostate_mr_us", spatial_size=[32, 32, 32], label_channels=3, val_fraction=0.2,
                           seed=3)
    assert data.split == again.split
    assert len(data.split["val"]) == 4 and len(data.split["train"]) == 16
    assert not set(data.split["val"]) & set(data.split["train"])
    data.setup("fit")
    item = data.val_set[0]
    assert item["moving"].shape == item["fixed"].shape == (1, 32, 32, 32)  # MR 64x64x60 and US 44x59x41
    assert item["moving_label"].shape == item["fixed_label"].shape == (3, 32, 32, 32)
    assert 0 <= float(item["moving"].min()) and float(item["moving"].max()) <= 1
    gland_only = PairDataModule(data_dir="prostate_mr_us", spatial_size=[32, 32, 32], label_channels=3,
                                val_cases=["case000002"])  # a case with the gland only: padded with empty masks
    gland_only.setup("validate")
    label = gland_only.val_set[0]["fixed_label"]
    assert label[0].sum() > 0 and label[1:].sum() == 0


def test_augmentation_is_seeded():
    prostate()

    def first_batch(seed):
        data = tiny_data(rand_affine_prob=1.0, rotate_range=0.2, translate_range=2.0, seed=seed)
        data.setup("fit")
        return next(iter(data.train_dataloader()))

    a, b, c = first_batch(1), first_batch(1), first_batch(2)
    assert torch.equal(a["moving"], b["moving"]) and a["case"] == b["case"]
    assert not torch.equal(a["moving"], c["moving"])


def _write_volumes(folder: Path, n: int = 3, shape=(16, 16, 16)):
    import nibabel as nib

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    images, labels = [], []
    for k in range(n):
        image = rng.random(shape).astype(np.float32)
        label = np.zeros(shape, np.int16)
        label[4:12, 4:12, 4:12] = 2
        label[6:10, 6:10, 6:10] = 5
        images.append(folder / f"img{k}.nii.gz")
        labels.append(folder / f"img{k}_seg.nii.gz")
        nib.save(nib.Nifti1Image(image, np.eye(4)), images[-1])
        nib.save(nib.Nifti1Image(label, np.eye(4)), labels[-1])
    return [str(p) for p in images], [str(p) for p in labels]


def test_random_and_atlas_pairing(tmp_path):
    images, labels = _write_volumes(tmp_path)
    data = PairDataModule(pairing="random", images=images, labels=labels, label_type="index",
                          val_cases=["img2"])
    assert data.split["train"] == ["img0", "img1"]
    assert [p["case"] for p in data.pairs("train")] == ["img0->img1", "img1->img0"]
    assert [p["case"] for p in data.pairs("val")] == ["img2->img0"]
    data.setup("fit")
    item = data.train_set[0]
    assert item["moving_label"].dtype == torch.int64 and item["moving_label"].shape == (1, 16, 16, 16)
    assert set(item["moving_label"].unique().tolist()) == {0, 2, 5}

    atlas = PairDataModule(pairing="atlas", images=[str(tmp_path / "img?.nii.gz")], atlas=images[0],
                           atlas_label=labels[0], labels=labels, label_type="index", val_fraction=0.0,
                           spatial_size=[8, 8, 8])
    pairs = atlas.pairs("train")
    assert len(pairs) == 3 and all(p["fixed"] == Path(images[0]) for p in pairs)
    atlas.setup("fit")
    assert atlas.train_set[1]["fixed"].shape == (1, 8, 8, 8)


def test_deform_pairing_with_rand_svf_deformd(tmp_path):
    images, labels = _write_volumes(tmp_path, n=2)
    data = PairDataModule(pairing="deform", images=images, labels=labels, label_type="index", val_cases=["img1"],
                          val_repeats=2, deform_magnitude=3.0, deform_sigma=3.0, deform_fixed=True)
    data.setup("fit")
    assert [p["case"] for p in data.pairs("val")] == ["img1#0", "img1#1"]
    first, again = data.val_set[0], data.val_set[0]
    assert torch.equal(first["moving"], again["moving"])  # fixed draws for validation
    assert not torch.equal(first["moving"], first["fixed"])  # two independent deformations
    assert not torch.equal(data.val_set[1]["moving"], first["moving"])
    assert set(first["moving_label"].unique().tolist()) <= {0, 2, 5}  # labels warped with nearest
    model = tiny_model(backbone="unet", channels=[4, 8], similarity={"lncc": 1.0}, regularisation={"diffusion": 1.0},
                       label_weight=0.0)
    batch = {k: (v[None] if torch.is_tensor(v) else [v]) for k, v in first.items()}
    model.validation_step(batch, 1)  # integer label maps: Dice through regnet.metrics


def test_shipped_configs_construct():
    import yaml

    for name in ("tiny_cpu.yaml", "prostate_mr_us.yaml", "brain_unsupervised.yaml"):
        config = yaml.safe_load((REPO / "configs" / name).read_text())
        RegistrationModule(**config["model"])
        if name == "brain_unsupervised.yaml":
            data_file("brain3d/subject_a_t1.nii.gz")
            data_file("mni152/t1.nii.gz")
        else:
            prostate()
        PairDataModule(**config["data"])
