"""Does a diffusion prior fit the stimuli? The check before EGG samples, its one warning and its record; and priors
given as Hugging Face hub ids, read from the local hub cache (no network)."""

from __future__ import annotations

import csv
import shutil
import warnings

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler, UNet2DModel
from PIL import Image

from sharedattr.config.validation import validate_experiment
from sharedattr.experiment.synthesize import synthesize_experiment
from sharedattr.plugins.loading import load_registry
from sharedattr.synthesis import egg as egg_module
from sharedattr.synthesis.prior import PriorError, check_prior, load_prior

HUB_ID = "google/ddpm-cifar10-32"


def tiny_unet(channels: int = 1) -> UNet2DModel:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return UNet2DModel(
            sample_size=16,
            in_channels=channels,
            out_channels=channels,
            block_out_channels=(8, 16),
            layers_per_block=1,
            down_block_types=("DownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "UpBlock2D"),
            norm_num_groups=4,
        ).eval()


def save_pipeline(folder, channels: int = 1):
    """A diffusers pipeline folder (model_index.json, unet/, scheduler/) of a tiny random UNet."""
    tiny_unet(channels).save_pretrained(folder / "unet", safe_serialization=True)
    DDPMScheduler(num_train_timesteps=100).save_pretrained(folder / "scheduler")
    (folder / "model_index.json").write_text('{"_class_name": "DDPMPipeline", "unet": ["diffusers", "UNet2DModel"]}')
    return folder


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# -- the check ----------------------------------------------------------------------------------------
def test_a_grey_prior_does_not_fit_colour_stimuli():
    g = torch.Generator().manual_seed(0)
    grey_prior = 0.5 + 0.2 * torch.randn(8, 1, 32, 32, generator=g)
    colour = 0.5 + 0.2 * torch.randn(8, 3, 32, 32, generator=g)
    check = check_prior("insilico-ddpm-v1", grey_prior, colour)
    assert len(check.mismatches) == 1 and check.mismatches[0].startswith("channels: the prior draws grey images")
    message = check.warning("egg")
    assert "'insilico-ddpm-v1'" in message and "prior = " in message and "[[synthesis]] table of egg" in message
    assert check_prior("p", grey_prior, grey_prior[:, :1]).mismatches == ()  # the same kind of images: it fits


def test_resolution_mean_and_std_mismatches_are_named():
    g = torch.Generator().manual_seed(1)
    stimuli = 0.5 + 0.2 * torch.randn(8, 1, 96, 96, generator=g)
    assert check_prior("p", 0.5 + 0.2 * torch.randn(8, 1, 48, 48, generator=g), stimuli).mismatches == ()  # 2×: fine
    small = check_prior("p", 0.5 + 0.2 * torch.randn(8, 1, 32, 32, generator=g), stimuli)
    assert [m.split(":")[0] for m in small.mismatches] == ["resolution"] and "(3×)" in small.mismatches[0]
    dark_flat = check_prior("p", torch.full((8, 1, 96, 96), 0.1), stimuli)
    assert [m.split(":")[0] for m in dark_flat.mismatches] == [
        "mean pixel value",
        "contrast (pixel std within an image)",
    ]


def _colour_copy(tiny_data, tmp_path):
    """tiny_data with every stimulus image tinted to colour (RGB)."""
    data = tmp_path / "colour"
    shutil.copytree(tiny_data, data)
    for path in (data / "stimuli" / "images").glob("*.png"):
        grey = np.asarray(Image.open(path).convert("L"), dtype=np.float32)
        rgb = np.stack([grey, 0.3 * grey + 60, 255 - grey], axis=2).clip(0, 255).astype(np.uint8)
        Image.fromarray(rgb, "RGB").save(path)
    return data


def test_a_synthesis_run_warns_once_and_records_the_mismatch(tiny_config, tiny_data, tmp_path, monkeypatch):
    monkeypatch.setattr(egg_module, "_PRIORS", {})
    data = _colour_copy(tiny_data, tmp_path)
    prior = save_pipeline(tmp_path / "grey-prior")
    tiny_config["data"] = {**tiny_config["data"], "stimuli": str(data / "stimuli" / "manifest.csv")}
    tiny_config["synthesis"] = [
        {"name": "egg", "prior": str(prior), "steps": 2, "n_seeds": 1},
        {"name": "gradient_ascent", "steps": 2, "n_seeds": 1},
    ]
    tiny_config["selection"] = {"top_k": 1, "drivers_per_neuron": 1}
    tiny_config["output"] = {"figures": False}
    out = tmp_path / "out"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        synthesize_experiment(validate_experiment(tiny_config), out, progress=False)
    prior_warnings = [w for w in caught if "does not fit the stimuli" in str(w.message)]
    assert len(prior_warnings) == 1
    message = str(prior_warnings[0].message)
    assert str(prior) in message and "grey images (1 channel), the stimuli are colour (3)" in message
    summary = read_csv(out / "summary.csv")
    egg_rows = [r for r in summary if r["synthesizer"] == "egg"]
    assert egg_rows and all(r["prior_mismatch"].startswith("channels: ") for r in egg_rows)
    assert all(r["prior_mismatch"] == "" for r in summary if r["synthesizer"] == "gradient_ascent")
    (row,) = read_csv(out / "priors.csv")
    assert (row["synthesizer"], row["prior"], row["prior_channels"], row["stimuli_channels"]) == (
        "egg",
        str(prior),
        "1",
        "3",
    )
    assert row["mismatch"] == egg_rows[0]["prior_mismatch"]


# -- hub ids ------------------------------------------------------------------------------------------
@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty Hugging Face hub cache in tmp_path, offline: nothing may reach the network."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def test_a_hub_id_loads_from_the_local_hub_cache(hub_cache):
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = hub_cache / f"models--{HUB_ID.replace('/', '--')}"
    save_pipeline(repo / "snapshots" / commit, channels=3)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    prior = load_prior(HUB_ID)
    assert (prior.channels, prior.sample_size, prior.source) == (3, 16, HUB_ID)
    assert prior.scheduler_config["num_train_timesteps"] == 100
    component = load_registry().get("synthesizer", "egg")
    assert component.validate_params({"prior": HUB_ID}).prior == HUB_ID


def test_a_hub_id_missing_from_the_cache_names_the_folder_and_the_fix(hub_cache):
    with pytest.raises(PriorError) as err:
        load_prior(HUB_ID)
    message = str(err.value)
    assert str(hub_cache / "models--google--ddpm-cifar10-32") in message
    assert f"hf download {HUB_ID}" in message and "HF_HUB_OFFLINE" in message
