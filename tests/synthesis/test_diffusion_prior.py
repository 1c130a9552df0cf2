"""The diffusion prior: the shipped ``insilico-ddpm-v1``, user diffusers folders, unguided sampling, training."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest
import torch
from diffusers import DDIMScheduler, DDPMPipeline, DDPMScheduler, UNet2DModel

from sharedattr.runtime.errors import UserError
from sharedattr.synthesis.prior import (
    DiffusionPrior,
    PriorError,
    from_unit,
    load_prior,
    sample_prior,
    shipped_prior_path,
    to_unit,
)


@pytest.fixture(scope="module")
def shipped() -> DiffusionPrior:
    return load_prior()


def tiny_unet(seed: int = 0, size: int = 16, channels: int = 1) -> UNet2DModel:
    torch.manual_seed(seed)
    return UNet2DModel(
        sample_size=size,
        in_channels=channels,
        out_channels=channels,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        norm_num_groups=4,
        attention_head_dim=4,
    )


TINY_UNET_CONFIG = {
    "block_out_channels": [8, 16],
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D"],
    "up_block_types": ["AttnUpBlock2D", "UpBlock2D"],
    "layers_per_block": 1,
    "norm_num_groups": 4,
    "attention_head_dim": 4,
}
"""The tiny UNet of the training tests, as PriorTrainConfig.unet takes it."""


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k].float().cpu(), sb[k].float().cpu()) for k in sa)


# -- the shipped prior -----------------------------------------------------------------------------
def test_shipped_prior_loads_frozen(shipped):
    assert isinstance(shipped.unet, UNet2DModel) and shipped.source == "insilico-ddpm-v1"
    assert shipped.sample_size == 32 and shipped.channels == 1 and shipped.value_range == (-1.0, 1.0)
    assert shipped.scheduler_config["num_train_timesteps"] == 1000 == shipped.num_train_timesteps
    assert shipped.scheduler_config["prediction_type"] == "epsilon"
    assert not shipped.unet.training
    assert all(not p.requires_grad and p.dtype == torch.float32 for p in shipped.unet.parameters())
    assert isinstance(shipped.make_scheduler("ddim"), DDIMScheduler)
    assert isinstance(shipped.make_scheduler("ddpm"), DDPMScheduler)
    assert DDIMScheduler.from_config(shipped.scheduler_config).config.num_train_timesteps == 1000
    # gradients still flow to the input (what a guided sampler needs)
    x = torch.zeros(1, 1, 32, 32, requires_grad=True)
    shipped.unet(x, torch.tensor([500])).sample.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.fixture(scope="module", params=["insilico-ddpm-v1", "insilico-ddpm-v2"])
def any_shipped(request) -> DiffusionPrior:
    return load_prior(request.param)


def test_shipped_record_matches_the_files(any_shipped):
    shipped, record = any_shipped, any_shipped.record
    with shipped_prior_path(shipped.source) as folder:
        data = (folder / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
        unet_config = json.loads((folder / "unet" / "config.json").read_text())
        assert json.loads((folder / "model_index.json").read_text())["_class_name"] == "DDPMPipeline"
    assert record["name"] == shipped.source
    assert hashlib.sha256(data).hexdigest() == record["file"]["sha256"]
    assert len(data) == record["file"]["bytes"] <= 4_200_000
    assert unet_config["block_out_channels"] == record["unet"]["block_out_channels"]
    assert record["unet"]["parameters"] == sum(p.numel() for p in shipped.unet.parameters())
    if shipped.source == "insilico-ddpm-v2":  # the prior at the stimuli's resolution, on 2 × 2 patches
        assert shipped.sample_size == 64 and record["patch_size"] == 2 and record["quality"]["samples"]["n"] >= 256
    assert record["training"]["steps"] >= 100 and record["wall_time_s"]["total"] > 0
    quality = record["quality"]
    for key in ("samples", "real"):
        assert set(quality[key]["fraction_present"]) == {"head", "torso", "limbs", "shape"}
        assert quality[key]["n"] >= 64
    assert record.get("patch_size", 1) * unet_config["sample_size"] == shipped.sample_size
    assert quality["samples"]["mean_pixel_std"] > 0.03, "the prior's samples are flat: it collapsed"
    assert record["data"]["seed"] != quality["real"]["render_set_seed"]


def test_shipped_prior_reproduces_its_recorded_samples(any_shipped):
    shipped = any_shipped
    check = shipped.record["quality"]["check"]
    x = sample_prior(shipped, 2, steps=4, scheduler="ddim", seed=check["seed"])
    # float summation order may differ across machines and thread counts: small slack
    torch.testing.assert_close(x.flatten(1).mean(1), torch.tensor(check["mean"]), rtol=0, atol=2e-3)
    torch.testing.assert_close(x[:, 0, 0, :8], torch.tensor(check["first_row"]), rtol=0, atol=2e-2)


def test_value_range_helpers():
    x = torch.tensor([-1.0, 0.0, 1.0, 2.0])
    torch.testing.assert_close(to_unit(x), torch.tensor([0.0, 0.5, 1.0, 1.0]))
    torch.testing.assert_close(from_unit(to_unit(x[:3])), x[:3])


# -- unguided sampling -----------------------------------------------------------------------------
@pytest.mark.parametrize("scheduler", ["ddim", "ddpm"])
def test_sample_prior_shape_range_determinism(shipped, scheduler):
    a = sample_prior(shipped, 2, steps=4, scheduler=scheduler, seed=3)
    assert a.shape == (2, 1, 32, 32) and a.dtype == torch.float32
    assert a.min() >= 0 and a.max() <= 1 and a.std() > 0
    torch.testing.assert_close(sample_prior(shipped, 2, steps=4, scheduler=scheduler, seed=3), a, rtol=0, atol=0)
    assert not torch.allclose(sample_prior(shipped, 2, steps=4, scheduler=scheduler, seed=4), a)
    # sample i depends on (seed, i) only, not on the batching
    torch.testing.assert_close(
        sample_prior(shipped, 2, steps=4, scheduler=scheduler, seed=3, batch_size=1), a, rtol=0, atol=1e-4
    )
    assert not torch.allclose(a[0], a[1])


def test_sample_prior_rejects_bad_arguments(shipped):
    with pytest.raises(ValueError, match="scheduler"):
        sample_prior(shipped, 1, steps=2, scheduler="euler")
    with pytest.raises(ValueError, match="steps"):
        sample_prior(shipped, 1, steps=0)
    assert sample_prior(shipped, 0, steps=2).shape == (0, 1, 32, 32)


# -- user folders ----------------------------------------------------------------------------------
def test_load_pipeline_folder(tmp_path):
    unet = tiny_unet(seed=1, channels=3)
    DDPMPipeline(
        unet=unet, scheduler=DDPMScheduler(num_train_timesteps=400, beta_schedule="squaredcos_cap_v2")
    ).save_pretrained(tmp_path / "pipe", safe_serialization=True)
    prior = load_prior(tmp_path / "pipe")
    assert prior.sample_size == 16 and prior.channels == 3 and prior.source == str(tmp_path / "pipe")
    assert prior.scheduler_config["num_train_timesteps"] == 400
    assert prior.scheduler_config["beta_schedule"] == "squaredcos_cap_v2"
    assert prior.record == {} and not prior.unet.training
    assert same_weights(prior.unet, unet)
    x = sample_prior(prior, 2, steps=3, seed=0)
    assert x.shape == (2, 3, 16, 16) and 0 <= x.min() and x.max() <= 1
    assert load_prior(str(tmp_path / "pipe")).sample_size == 16  # a str path works too


def test_load_bare_unet_folder(tmp_path):
    unet = tiny_unet(seed=2)
    unet.save_pretrained(tmp_path / "bare", safe_serialization=True)
    prior = load_prior(tmp_path / "bare")
    assert prior.sample_size == 16 and prior.channels == 1 and same_weights(prior.unet, unet)
    assert prior.scheduler_config["num_train_timesteps"] == 1000
    assert prior.scheduler_config["beta_schedule"] == "linear"
    # a scheduler_config.json beside the UNet is used
    DDPMScheduler(num_train_timesteps=250).save_pretrained(tmp_path / "bare")
    assert load_prior(tmp_path / "bare").scheduler_config["num_train_timesteps"] == 250


def test_float16_weights_are_cast_to_float32(tmp_path):
    unet = tiny_unet(seed=3)
    unet.half().save_pretrained(tmp_path / "half", safe_serialization=True)
    prior = load_prior(tmp_path / "half")
    assert all(p.dtype == torch.float32 for p in prior.unet.parameters())
    assert same_weights(prior.unet, unet)


def test_bad_sources_raise_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown diffusion prior 'no-such-prior'.*insilico-ddpm-v1"):
        load_prior("no-such-prior")
    with pytest.raises(ValueError, match=f"{tmp_path / 'missing'} does not exist.*model_index.json"):
        load_prior(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PriorError, match="holds no UNet.*model_index.json with unet/ and scheduler/"):
        load_prior(tmp_path / "empty")
    # pickled weights are never read
    pickled = tmp_path / "pickled"
    tiny_unet().save_pretrained(pickled, safe_serialization=False)
    assert (pickled / "diffusion_pytorch_model.bin").is_file()
    with pytest.raises(ValueError, match="only diffusion_pytorch_model.safetensors is read"):
        load_prior(pickled)
    # a pipeline folder without its scheduler
    DDPMPipeline(unet=tiny_unet(), scheduler=DDPMScheduler()).save_pretrained(tmp_path / "pipe")
    shutil.rmtree(tmp_path / "pipe" / "scheduler")
    with pytest.raises(ValueError, match="scheduler_config.json"):
        load_prior(tmp_path / "pipe")
    # not an unconditional UNet2DModel
    conditional = tmp_path / "conditional"
    tiny_unet().save_pretrained(conditional)
    config = json.loads((conditional / "config.json").read_text())
    (conditional / "config.json").write_text(json.dumps({**config, "num_class_embeds": 10}))
    with pytest.raises(ValueError, match="class-conditional"):
        load_prior(conditional)
    with pytest.raises(UserError):  # the CLI reports it as a user error
        load_prior(tmp_path / "empty")


# -- training --------------------------------------------------------------------------------------
def test_tiny_training_run_saves_and_round_trips(tmp_path):
    from trainers.diffusion_prior import PriorTrainConfig, save_prior, train_prior

    config = PriorTrainConfig(
        size=16,
        render_size=32,
        n_per_category=16,
        steps=8,
        batch_size=8,
        lr=2e-3,
        warmup_steps=2,
        log_every=4,
        unet=TINY_UNET_CONFIG,
        quality_samples=4,
        quality_steps=2,
        threads=1,
        name="tiny",
    )
    messages: list[str] = []
    unet, scheduler, record = train_prior(config, log=messages.append)
    history = record["training"]["history"]
    assert [h["step"] for h in history] == [4, 8] and any("step 8/8" in m for m in messages)
    losses = [h["loss"] for h in history]
    assert all(0 < loss < 5 for loss in losses), losses  # epsilon MSE starts near 1
    assert record["data"]["n_images"] == 32 and record["unet"]["sample_size"] == 16
    assert record["quality"]["samples"]["n"] == 4 and record["quality"]["real"]["n"] == 4
    assert not unet.training and scheduler.config.num_train_timesteps == 1000
    # deterministic on the CPU: the same config gives the same weights
    unet2, _, _ = train_prior(config, log=None)
    assert same_weights(unet, unet2)

    folder = tmp_path / "prior"
    folder.mkdir()
    (folder / "stale.txt").write_text("replaced whole")
    written = save_prior(unet, scheduler, record, folder)
    assert sorted(p.name for p in folder.iterdir()) == ["model_index.json", "prior.json", "scheduler", "unet"]
    assert not [p for p in tmp_path.iterdir() if p.name != "prior"], "temporary folders left behind"
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    assert written["file"]["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert json.loads((folder / "prior.json").read_text())["file"] == written["file"]
    prior = load_prior(folder)
    assert prior.sample_size == 16 and prior.channels == 1 and prior.record["name"] == "tiny"
    assert prior.scheduler_config["num_train_timesteps"] == 1000
    assert same_weights(prior.unet, unet)


# -- patched priors (insilico-ddpm-v2) -------------------------------------------------------------
def test_patched_unet_denoises_space_to_depth_patches(tmp_path):
    """A prior whose prior.json says patch_size 2: images of twice the UNet's size, one channel per pixel."""
    from sharedattr.synthesis.prior import PatchedUNet, inner_unet

    unet = tiny_unet(seed=4, size=8, channels=4)
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler()).save_pretrained(tmp_path / "pipe", safe_serialization=True)
    (tmp_path / "pipe" / "prior.json").write_text(json.dumps({"patch_size": 2}))
    prior = load_prior(tmp_path / "pipe")
    assert isinstance(prior.unet, PatchedUNet) and inner_unet(prior.unet) is prior.unet.unet
    assert prior.sample_size == 16 and prior.channels == 1 and not prior.unet.training
    x, t = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(0)), torch.tensor([10, 700])
    with torch.no_grad():
        out = prior.unet(x, t).sample
        # by hand: pixel (2i + a, 2j + b) is channel 2a + b of patch (i, j)
        patches = x.view(2, 1, 8, 2, 8, 2).permute(0, 1, 3, 5, 2, 4).reshape(2, 4, 8, 8)
        expected = unet(patches, t).sample.view(2, 1, 2, 2, 8, 8).permute(0, 1, 4, 2, 5, 3).reshape(2, 1, 16, 16)
    torch.testing.assert_close(out, expected)
    samples = sample_prior(prior, 2, steps=2, seed=0)
    assert samples.shape == (2, 1, 16, 16) and 0 <= samples.min() and samples.max() <= 1
    for bad in (3, 0, "2", True):  # 3² does not divide 4 channels
        (tmp_path / "pipe" / "prior.json").write_text(json.dumps({"patch_size": bad}))
        with pytest.raises(PriorError, match="patch_size"):
            load_prior(tmp_path / "pipe")


def test_a_patched_prior_trains_saves_and_loads(tmp_path):
    from sharedattr.synthesis.prior import PatchedUNet
    from trainers.diffusion_prior import PriorTrainConfig, save_prior, train_prior

    config = PriorTrainConfig(
        size=16,
        render_size=16,
        patch_size=2,
        n_per_category=4,
        steps=2,
        batch_size=4,
        warmup_steps=1,
        log_every=1,
        unet=TINY_UNET_CONFIG,
        quality_samples=2,
        quality_steps=1,
        threads=1,
        name="tiny-patched",
    )
    unet, scheduler, record = train_prior(config, log=None)
    assert isinstance(unet, PatchedUNet) and record["patch_size"] == 2
    assert record["unet"]["sample_size"] == 8 and record["unet"]["in_channels"] == 4
    save_prior(unet, scheduler, record, tmp_path / "prior")
    prior = load_prior(tmp_path / "prior")
    assert isinstance(prior.unet, PatchedUNet) and prior.sample_size == 16 and prior.channels == 1
    assert same_weights(prior.unet.unet, unet.unet)
