"""Training of the shipped diffusion prior ``insilico-ddpm-v1`` on the in-silico stimuli.

``scripts/train_diffusion_prior.py`` runs :func:`train_prior` with the default
:class:`PriorTrainConfig` and :func:`save_prior` writes ``sharedattr/assets/diffusion_prior/``,
a ``DDPMPipeline`` folder in diffusers format (``model_index.json``, ``unet/``,
``scheduler/``) plus ``prior.json``, the record of its training and of its sample quality.
:mod:`sharedattr.synthesis.prior` loads it.

The model is a small unconditional ``diffusers.UNet2DModel`` (grayscale, 32 × 32,
``block_out_channels`` (16, 32, 64), one ResNet per down block, self-attention at 8 × 8 only,
GroupNorm with 8 groups; 686,769 parameters, 2.8 MB float32) trained with the standard epsilon-prediction DDPM loss
(MSE on the noise, 1000 linear-beta timesteps) and AdamW (warm-up then cosine decay, gradient
clipping); the weights shipped are an exponential moving average. Data: freshly rendered
in-silico stimuli (:func:`sharedattr.data.insilico.render.render_set`, bodies and objects 50/50,
grayscale) drawn at 64 px and averaged 2 × 2 down to 32 px (anti-aliased), scaled to
``[-1, 1]``, mirrored at random. 32 px rather than the stimuli's 64 px because a training step
at 64 px costs about 3 × more on the CPU, which would leave too few steps in the
20-minute budget; a sampler resizes for the model.

Reproduce (CPU, deterministic for a given machine and thread count)::

    uv run python scripts/train_diffusion_prior.py --threads 2

measured at 1115 s (18.6 min: 23 s rendering, 1050 s for 1200 steps of batch 64 at ~0.88 s
per step, 26 s measuring quality) on 2 CPU cores shared with other work; final loss (mean of the
last 10 % of the logged curve) 0.026. Everything, including the loss curve, is in ``prior.json``.

Sample quality (:func:`sample_quality`): 64 unguided samples (DDIM 50 steps with eta 0, and
ancestral DDPM 50 steps) and 64 real stimuli (processed like the training data: 32 px, then
resized to 64 px) are scored by the shipped ``insilico_cnn`` part-presence classifier; the record
holds, for each, the mean presence probability and the fraction predicted present of every part,
the mean per-image pixel standard deviation and the spread of background luminance. Measured:
torso (≈ "a body") in 20 % of DDIM samples and 19 % of DDPM samples against 50 % of real images,
shape in 80 % / 83 % against 50 %; pixel std 0.09 / 0.10 against 0.14. The samples are single
dark or light figures with ragged, blotchy outlines, some recognisably stick-figure-like, none
with clean geometric shapes or textures; DDIM with eta 0 gives mid-grey backgrounds only
(background luminance std 0.04 against 0.26 real), DDPM restores their range (0.31).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from sharedattr.data.insilico.render import CATEGORIES, PARTS, render_set
from sharedattr.encoding.readouts.training import reproducible_training
from sharedattr.runtime.io import atomic_write_json
from sharedattr.synthesis.prior import (
    DEFAULT_PRIOR,
    RECORD_NAME,
    WEIGHTS_NAME,
    DiffusionPrior,
    PatchedUNet,
    from_unit,
    inner_unet,
    sample_prior,
)

FORMAT = "sharedattr.diffusion_prior.record"
FORMAT_VERSION = 1
REPRODUCE = "uv run python scripts/train_diffusion_prior.py --threads 2"


def default_unet() -> dict[str, Any]:
    """The shipped prior's ``UNet2DModel`` arguments (besides ``sample_size`` and the channels)."""
    return {
        "block_out_channels": [16, 32, 64],
        "down_block_types": ["DownBlock2D", "DownBlock2D", "AttnDownBlock2D"],
        "up_block_types": ["AttnUpBlock2D", "UpBlock2D", "UpBlock2D"],
        "layers_per_block": 1,
        "norm_num_groups": 8,
        "attention_head_dim": 8,
    }


@dataclass(frozen=True)
class PriorTrainConfig:
    """Everything that determines the trained prior (and how its sample quality is measured)."""

    size: int = 32  # the model's image size
    render_size: int = 64  # stimuli are rendered at this size, then average-pooled to ``size``
    channels: int = 1
    patch_size: int = 1  # > 1: the UNet denoises patch_size² space-to-depth patches (PatchedUNet)
    unet: Mapping[str, Any] = field(default_factory=default_unet)
    num_train_timesteps: int = 1000
    beta_schedule: str = "linear"
    n_per_category: int = 8000  # training images per category (bodies, objects)
    data_seed: int = 11  # render_set seed of the training images
    noise_std: float = 4.0  # the renderer's sensor noise (grey levels)
    hflip: bool = True
    steps: int = 1200
    batch_size: int = 64
    lr: float = 1.5e-3  # peak; linear warm-up, then cosine decay to lr * min_lr_fraction
    warmup_steps: int = 100
    min_lr_fraction: float = 0.05
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    ema_decay: float = 0.995  # with warm-up: min(ema_decay, (1 + step) / (10 + step)); None: no EMA
    seed: int = 0  # weight initialisation, batches, noise, timesteps
    device: str = "cpu"
    threads: int | None = None  # torch CPU threads (None: torch's default)
    log_every: int = 50
    # sample quality
    quality_samples: int = 64
    quality_steps: int = 50  # DDIM (eta 0) and ancestral DDPM, each
    quality_seed: int = 0
    quality_real_seed: int = 1_000_003  # render_set seed of the real images compared (not a training seed)
    name: str = DEFAULT_PRIOR

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["unet"] = dict(self.unet)
        return out

    def unet_config(self) -> dict[str, Any]:
        if self.size % self.patch_size:
            raise ValueError(f"size {self.size} must be a multiple of patch_size {self.patch_size}")
        return {
            "sample_size": self.size // self.patch_size,
            "in_channels": self.channels * self.patch_size**2,
            "out_channels": self.channels * self.patch_size**2,
            **{k: (tuple(v) if isinstance(v, list) else v) for k, v in self.unet.items()},
        }


# -- data ------------------------------------------------------------------------------------------
def render_images(
    n_per_category: int, seed: int, size: int, render_size: int, channels: int = 1, noise_std: float = 4.0
) -> Tensor:
    """In-silico stimuli ``[2 n, C, size, size]`` float32 in ``[0, 1]``: bodies then objects.

    Rendered at ``render_size`` and area-averaged down to ``size`` (``render_size`` must be a
    multiple of ``size``).
    """
    if render_size % size:
        raise ValueError(f"render_size {render_size} must be a multiple of size {size}")
    rendered = render_set(n_per_category, render_size, channels=channels, seed=seed, noise_std=noise_std)
    x = torch.from_numpy(rendered.images).permute(0, 3, 1, 2).float() / 255
    return F.avg_pool2d(x, render_size // size) if render_size != size else x


def to_uint8_64(x: Tensor, size: int = 64) -> np.ndarray:
    """``[N, C, h, w]`` in ``[0, 1]`` → ``[N, size, size, C]`` uint8 (bilinear resize), the classifier's input."""
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


# -- quality ---------------------------------------------------------------------------------------
@torch.no_grad()
def presence_probabilities(images: np.ndarray) -> np.ndarray:
    """The shipped ``insilico_cnn`` part-presence probabilities ``[N, len(PARTS)]`` of uint8 images ``[N, H, W, C]``."""
    from sharedattr.encoding.backbones.insilico_cnn import load_weights, shipped_weights_path
    from trainers.insilico_cnn import normalise, to_tensor

    with shipped_weights_path("insilico-v1") as path:
        model, metadata = load_weights(path, "block4")
    model.eval()
    logits = model(normalise(to_tensor(images), metadata.get("mean", (0.5,) * 3), metadata.get("std", (0.25,) * 3)))
    return torch.sigmoid(logits).numpy()


def background_luminance(x: Tensor) -> Tensor:
    """Per image ``[N]``: the median of its top and bottom 3 rows (mostly background), first channel."""
    border = torch.cat([x[:, 0, :3].flatten(1), x[:, 0, -3:].flatten(1)], 1)
    return border.median(1).values


def _summary(x: Tensor, images: np.ndarray) -> dict[str, Any]:
    p = presence_probabilities(images)
    return {
        "n": len(x),
        "mean_presence_probability": {part: round(float(p[:, j].mean()), 4) for j, part in enumerate(PARTS)},
        "fraction_present": {part: round(float((p[:, j] > 0.5).mean()), 4) for j, part in enumerate(PARTS)},
        "fraction_body_like": round(float((p[:, PARTS.index("torso")] > 0.5).mean()), 4),
        "mean_pixel_std": round(float(x.flatten(1).std(1).mean()), 4),
        "background_luminance_std": round(float(background_luminance(x).std()), 4),
        "mean_pixel_value": round(float(x.mean()), 4),
    }


def sample_quality(prior: DiffusionPrior, config: PriorTrainConfig) -> dict[str, Any]:
    """Unguided samples vs real stimuli (processed like the training data), scored by the ``insilico_cnn``
    classifier."""
    samples = sample_prior(
        prior, config.quality_samples, steps=config.quality_steps, scheduler="ddim", seed=config.quality_seed
    )
    samples_ddpm = sample_prior(
        prior, config.quality_samples, steps=config.quality_steps, scheduler="ddpm", seed=config.quality_seed
    )
    check = sample_prior(prior, 2, steps=4, scheduler="ddim", seed=config.quality_seed)
    half = config.quality_samples // 2
    real = render_images(
        half, config.quality_real_seed, config.size, config.render_size, config.channels, config.noise_std
    )
    real_full = render_set(
        half, config.render_size, channels=config.channels, seed=config.quality_real_seed, noise_std=config.noise_std
    ).images
    real_categories = np.repeat(np.arange(len(CATEGORIES)), half)
    real_summary = _summary(real, to_uint8_64(real))
    p_real = presence_probabilities(to_uint8_64(real))
    real_summary["fraction_present_by_category"] = {
        c: {part: round(float((p_real[real_categories == k, j] > 0.5).mean()), 4) for j, part in enumerate(PARTS)}
        for k, c in enumerate(CATEGORIES)
    }
    return {
        "classifier": "insilico_cnn weights insilico-v1 (part-presence head); images resized to 64 px (bilinear); "
        "present when probability > 0.5; body_like = torso present; background_luminance_std = std "
        "over images of the median of the top and bottom 3 rows",
        "samples": {
            "scheduler": "ddim",
            "eta": 0.0,
            "steps": config.quality_steps,
            "seed": config.quality_seed,
            **_summary(samples, to_uint8_64(samples)),
        },
        "samples_ddpm": {
            "scheduler": "ddpm",
            "steps": config.quality_steps,
            "seed": config.quality_seed,
            **_summary(samples_ddpm, to_uint8_64(samples_ddpm)),
        },
        "real": {
            "render_set_seed": config.quality_real_seed,
            "n_per_category": half,
            "processing": f"rendered at {config.render_size} px, averaged to {config.size} px, resized to 64 px",
            **real_summary,
        },
        "real_full_resolution": {
            "note": f"the same real images at {config.render_size} px, unresized",
            **_summary(torch.from_numpy(real_full).permute(0, 3, 1, 2).float() / 255, real_full),
        },
        "check": {
            "note": "sample_prior(prior, 2, steps=4, scheduler='ddim', seed=seed): per-sample pixel means and "
            "first-row values, re-computed by tests/test_diffusion_prior.py",
            "seed": config.quality_seed,
            "mean": [round(float(v), 5) for v in check.flatten(1).mean(1)],
            "first_row": [[round(float(v), 4) for v in row] for row in check[:, 0, 0, :8]],
        },
    }


# -- training --------------------------------------------------------------------------------------
def _patched(unet: torch.nn.Module, patch_size: int) -> torch.nn.Module:
    return PatchedUNet(unet, patch_size) if patch_size > 1 else unet


def prior_v2_config(**overrides: Any) -> PriorTrainConfig:
    """``insilico-ddpm-v2``: the stimuli's 64 px, the v1 UNet on 2 × 2 patches, 5000 steps, 256 quality samples."""
    v2 = {"size": 64, "render_size": 64, "patch_size": 2, "steps": 5000, "quality_samples": 256}
    return dataclasses.replace(PriorTrainConfig(), **{**v2, "name": "insilico-ddpm-v2", **overrides})


def _lr_factor(step: int, config: PriorTrainConfig) -> float:
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.min_lr_fraction + (1 - config.min_lr_fraction) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def train_prior(config: PriorTrainConfig = PriorTrainConfig(), log: Callable[[str], None] | None = print):
    """Train the prior from scratch and measure its sample quality: ``(unet, scheduler, record)``.

    ``unet`` is the EMA ``UNet2DModel`` (eval mode, on the CPU), ``scheduler`` its
    ``DDPMScheduler``; ``record`` holds the config, the loss curve, the sample quality,
    versions and wall times (:func:`save_prior` adds the weights' sha256).
    """
    import diffusers
    from diffusers import DDPMScheduler, UNet2DModel

    log = log or (lambda message: None)
    start = time.perf_counter()
    device = torch.device(config.device)
    with reproducible_training(device, config.seed, config.threads) as threads:
        data = render_images(
            config.n_per_category, config.data_seed, config.size, config.render_size, config.channels, config.noise_std
        )
        data = from_unit(data)
        render_s = time.perf_counter() - start
        log(f"rendered {len(data)} training images ({config.render_size} px → {config.size} px) in {render_s:.1f} s")
        scheduler = DDPMScheduler(
            num_train_timesteps=config.num_train_timesteps,
            beta_schedule=config.beta_schedule,
            prediction_type="epsilon",
        )
        unet = _patched(UNet2DModel(**config.unet_config()).to(device), config.patch_size)
        ema = _patched(UNet2DModel(**config.unet_config()).to(device), config.patch_size).requires_grad_(False)
        ema.load_state_dict(unet.state_dict())
        log(f"UNet2DModel: {parameter_count(unet):,} parameters")
        history = _fit(unet, ema, scheduler, data, config, device, log)
        train_s = time.perf_counter() - start - render_s
        unet = (ema if config.ema_decay is not None else unet).cpu().eval().requires_grad_(False)
        t = time.perf_counter()
        scheduler_config = {k: v for k, v in scheduler.config.items() if not k.startswith("_")}
        prior = DiffusionPrior(
            unet=unet,
            scheduler_config=scheduler_config,
            sample_size=config.size,
            channels=config.channels,
            source="training",
        )
        quality = sample_quality(prior, config)
        quality_s = time.perf_counter() - t
        log(
            f"sample quality ({quality_s:.1f} s): samples {quality['samples']['fraction_present']}, "
            f"real {quality['real']['fraction_present']}"
        )
    tail = [h["loss"] for h in history[-max(1, len(history) // 10) :]]
    record = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": config.name,
        "reproduce": REPRODUCE
        if config.name == DEFAULT_PRIOR
        else f"{REPRODUCE} --prior {config.name.rsplit('-', 1)[-1]}",
        "patch_size": config.patch_size,
        "unet": {
            "class": "UNet2DModel",
            **{k: (list(v) if isinstance(v, tuple) else v) for k, v in config.unet_config().items()},
            "parameters": parameter_count(unet),
        },
        "scheduler": {
            "class": "DDPMScheduler",
            "num_train_timesteps": config.num_train_timesteps,
            "beta_schedule": config.beta_schedule,
            "prediction_type": "epsilon",
        },
        "value_range": [-1.0, 1.0],
        "data": {
            "generator": "sharedattr.insilico.render.render_set",
            "categories": list(CATEGORIES),
            "n_per_category": config.n_per_category,
            "n_images": len(data),
            "seed": config.data_seed,
            "render_size": config.render_size,
            "size": config.size,
            "channels": config.channels,
            "noise_std": config.noise_std,
            "processing": "area-average to size, x / 255 * 2 - 1",
            "hflip": config.hflip,
        },
        "training": {
            **config.as_dict(),
            "loss": "MSE between predicted and true noise (epsilon prediction)",
            "optimizer": "AdamW, linear warm-up then cosine decay, gradient norm clipping",
            "ema": "weights shipped are the EMA, decay min(ema_decay, (1 + step) / (10 + step))",
            "images_seen": config.steps * config.batch_size,
            "torch_threads": threads,
            "final_loss": round(float(np.mean(tail)), 5),
            "history": history,
        },
        "quality": quality,
        "environment": {
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpu_count": os.cpu_count(),
            "device": str(device),
        },
        "wall_time_s": {
            "render": round(render_s, 1),
            "train": round(train_s, 1),
            "quality": round(quality_s, 1),
            "total": round(time.perf_counter() - start, 1),
        },
    }
    return unet, scheduler, record


@torch.no_grad()
def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p, 1 - decay)
    for e, b in zip(ema.buffers(), model.buffers()):
        e.copy_(b)


def _fit(
    unet: torch.nn.Module,
    ema: torch.nn.Module,
    scheduler: Any,
    data: Tensor,
    config: PriorTrainConfig,
    device: torch.device,
    log: Callable[[str], None],
) -> list[dict[str, Any]]:
    """``config.steps`` optimiser steps of the DDPM loss; the loss averaged over every ``log_every`` steps."""
    generator = torch.Generator().manual_seed(config.seed)
    decay_params = [p for p in unet.parameters() if p.dim() > 1]
    other_params = [p for p in unet.parameters() if p.dim() <= 1]
    optimiser = torch.optim.AdamW(
        [{"params": decay_params, "weight_decay": config.weight_decay}, {"params": other_params, "weight_decay": 0.0}],
        lr=config.lr,
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: _lr_factor(step, config))
    history: list[dict[str, Any]] = []
    unet.train()
    order = torch.randperm(len(data), generator=generator)
    cursor, loss_sum, n_seen, t0 = 0, 0.0, 0, time.perf_counter()
    for step in range(config.steps):
        if cursor + config.batch_size > len(order):  # a new epoch
            order, cursor = torch.randperm(len(data), generator=generator), 0
        index = order[cursor : cursor + config.batch_size]
        cursor += config.batch_size
        x0 = data[index]
        if config.hflip:
            flip = torch.rand(len(x0), generator=generator) < 0.5
            x0 = torch.where(flip.view(-1, 1, 1, 1), x0.flip(-1), x0)
        noise = torch.randn(x0.shape, generator=generator)
        t = torch.randint(0, config.num_train_timesteps, (len(x0),), generator=generator)
        x0, noise, t = x0.to(device), noise.to(device), t.to(device)
        loss = F.mse_loss(unet(scheduler.add_noise(x0, noise, t), t).sample, noise)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), config.grad_clip)
        optimiser.step()
        schedule.step()
        if config.ema_decay is not None:
            _ema_update(ema, unet, min(config.ema_decay, (1 + step) / (10 + step)))
        loss_sum += float(loss.detach())
        n_seen += 1
        if (step + 1) % config.log_every == 0 or step + 1 == config.steps:
            seconds = time.perf_counter() - t0
            history.append(
                {
                    "step": step + 1,
                    "loss": round(loss_sum / n_seen, 5),
                    "seconds": round(seconds, 1),
                    "lr": round(optimiser.param_groups[0]["lr"], 7),
                }
            )
            log(
                f"step {step + 1}/{config.steps}: loss {history[-1]['loss']:.4f} "
                f"({seconds / n_seen:.2f} s/step, lr {history[-1]['lr']:.2e})"
            )
            loss_sum, n_seen, t0 = 0.0, 0, time.perf_counter()
    unet.eval()
    if config.ema_decay is None:
        ema.load_state_dict(unet.state_dict())
    return history


# -- files -----------------------------------------------------------------------------------------
def save_prior(unet: Any, scheduler: Any, record: Mapping[str, Any], folder: str | Path) -> dict[str, Any]:
    """Write a diffusers ``DDPMPipeline`` folder (safetensors weights) with ``prior.json``, replacing ``folder`` whole.

    Everything is written into a temporary folder beside ``folder``, which is then renamed
    into place. Returns the record as written (with the weights file's size and sha256).
    """
    from diffusers import DDPMPipeline

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    old = None
    try:
        DDPMPipeline(unet=inner_unet(unet), scheduler=scheduler).save_pretrained(tmp, safe_serialization=True)
        weights = tmp / "unet" / WEIGHTS_NAME
        data = weights.read_bytes()
        written = {
            **record,
            "file": {
                "name": f"unet/{WEIGHTS_NAME}",
                "bytes": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
                "dtype": "float32",
            },
        }
        atomic_write_json(tmp / RECORD_NAME, written)
        mask = _umask()
        for path in [tmp, *tmp.rglob("*")]:  # temporary files are 0o600: give the modes of normally created ones
            os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~mask)
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
            os.replace(folder, old)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not folder.exists():
            os.replace(old, folder)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return written


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
