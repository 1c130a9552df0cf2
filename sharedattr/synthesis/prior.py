"""Diffusion priors for energy-guided synthesis (EGG): loading a diffusers ``UNet2DModel``, and the one sampler.

A :class:`DiffusionPrior` is an unconditional, frozen ``diffusers.UNet2DModel`` together with
the config of the noise scheduler it was trained with. The UNet works on images in
``[-1, 1]`` (:attr:`DiffusionPrior.value_range`); :func:`to_unit` and :func:`from_unit` convert
to and from the ``[0, 1]`` images the rest of sharedattr uses.

Sources (:func:`load_prior`):

* ``"insilico-ddpm-v1"``, the shipped prior (``sharedattr/assets/diffusion_prior/``): a small
  grayscale 32 × 32 DDPM trained on the in-silico stimuli by
  ``scripts/train_diffusion_prior.py`` (:mod:`trainers.diffusion_prior`); its
  ``prior.json`` records how and how well.
* any folder in diffusers format: a pipeline folder (``model_index.json``, ``unet/``,
  ``scheduler/``, as written by ``DDPMPipeline.save_pretrained``) or a bare UNet folder
  (``config.json`` + ``diffusion_pytorch_model.safetensors``, optionally with a
  ``scheduler_config.json`` beside them; otherwise the scheduler is DDPM with 1000 linear
  steps, diffusers' default).
* a Hugging Face hub id of such a pipeline (``"google/ddpm-cifar10-32"``): downloaded into the hub cache when there
  is a network, else read from the cache (``HF_HUB_OFFLINE=1`` never connects), as torchvision weights are; a
  missing cache is a :class:`PriorError` naming its folder (:func:`hub_prior_folder`).

Before sampling, :func:`check_prior` compares a prior's samples with the stimuli (channels, resolution, mean and
std); a synthesis run warns once per mismatched prior and records it.

Only safetensors weights are read (never pickles). Weights stored in float16 are cast to
float32 on loading.

The one sampler, :func:`sample`, runs the reverse diffusion on a scheduler made by the one factory,
:func:`make_scheduler` (DDIM or ancestral DDPM, respaced), one :func:`denoise_step` per timestep. A
:class:`Guide` steers it, as a diffusers pipeline's guidance does: it sees each denoiser pass and returns an
update of ``x_{t−1}`` (EGG's energy guidance, :class:`~sharedattr.synthesis.egg.EnergyGuidance`); without one the
samples are the prior's own. :func:`sample_prior` draws such unguided samples: sample ``i``
depends only on ``seed`` and ``i`` (its own generator), not on ``n`` or the batch size. With the
shipped prior, deterministic DDIM (``eta=0``) draws every background mid-grey, while stochastic
sampling (``scheduler="ddpm"`` or DDIM with ``eta=1``) gives backgrounds from black to white like
the training stimuli (``prior.json``, ``quality``).
"""

from __future__ import annotations

import contextlib
import importlib.resources
import inspect
import os
import re
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple, Protocol

import numpy as np
import torch
from torch import Tensor

from sharedattr.runtime.errors import UserError
from sharedattr.runtime.json_files import DamagedJSON, read_json

_DIFFUSERS_LOCK = threading.Lock()
Generators = torch.Generator | list[torch.Generator] | None


def diffusers_import(module: str, *names: str) -> Any:
    """``from <module> import <names>`` for diffusers, imported lazily (it takes seconds) and under a lock: its lazy
    top-level module fails ("cannot import name ...") when two threads import it for the first time side by side,
    as synthesis loops on several workers do. One name gives the object, several a tuple."""
    with _DIFFUSERS_LOCK:
        found = importlib.import_module(module)
        objects = tuple(getattr(found, name) for name in names)
    return objects[0] if len(objects) == 1 else objects


SHIPPED_PRIORS: dict[str, str] = {"insilico-ddpm-v1": "diffusion_prior", "insilico-ddpm-v2": "diffusion_prior_v2"}
"""Shipped prior name → its folder under ``sharedattr/assets/``."""
DEFAULT_PRIOR = "insilico-ddpm-v1"
RECORD_NAME = "prior.json"
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
SCHEDULERS = ("ddim", "ddpm")

_FIX = (
    f"give a diffusers-format folder (model_index.json with unet/ and scheduler/, or a UNet2DModel folder "
    f"with config.json and {WEIGHTS_NAME}), a hub id (owner/name) or the shipped name {DEFAULT_PRIOR!r}"
)


class PriorError(UserError, ValueError):
    """A diffusion prior cannot be found or loaded (a :class:`ValueError` and a sharedattr :class:`UserError`)."""


def to_unit(x: Tensor) -> Tensor:
    """The UNet's value range ``[-1, 1]`` → ``[0, 1]`` (clamped)."""
    return ((x + 1) / 2).clamp(0, 1)


def from_unit(x: Tensor) -> Tensor:
    """``[0, 1]`` images → the UNet's value range ``[-1, 1]``."""
    return x * 2 - 1


@dataclass
class DiffusionPrior:
    """A frozen unconditional diffusion model and its noise schedule.

    ``unet`` (eval mode, parameters with ``requires_grad`` False, float32) maps a noisy image
    ``[B, channels, sample_size, sample_size]`` in ``value_range`` and timesteps ``[B]`` to
    the scheduler's prediction (``scheduler_config["prediction_type"]``, ``"epsilon"`` for the
    shipped prior): ``unet(x, t).sample``. ``scheduler_config`` builds the scheduler:
    ``DDPMScheduler.from_config(prior.scheduler_config)`` or ``DDIMScheduler.from_config(...)``
    (or :meth:`make_scheduler`). ``record`` is the folder's ``prior.json`` ({} if it has none).
    """

    unet: Any  # diffusers.UNet2DModel
    scheduler_config: dict[str, Any]
    sample_size: int
    channels: int
    source: str
    value_range: tuple[float, float] = (-1.0, 1.0)
    record: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def num_train_timesteps(self) -> int:
        return int(self.scheduler_config["num_train_timesteps"])

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    def make_scheduler(self, kind: Literal["ddim", "ddpm"] = "ddim"):  # noqa: ANN201 - a diffusers scheduler
        """A fresh ``DDIMScheduler`` or ``DDPMScheduler`` with this prior's training schedule (not respaced):
        :func:`make_scheduler` of this prior's config."""
        return make_scheduler(kind, self.scheduler_config)

    to_unit = staticmethod(to_unit)
    from_unit = staticmethod(from_unit)


class PatchedUNet(torch.nn.Module):
    """A UNet that denoises space-to-depth patches of the image (the "patching" of Hoogeboom et al. 2023).

    ``forward(sample [B, C, H, W], t [B])`` folds every ``patch_size × patch_size`` block of pixels into
    channels (``pixel_unshuffle``: ``[B, C p², H / p, W / p]``), runs ``unet`` there and unfolds its
    prediction back (``pixel_shuffle``), so the diffusion itself stays in pixel space at ``H × W``
    while the network costs what it costs at ``H / p``. Returns an object with ``.sample``
    ``[B, C, H, W]``, like ``UNet2DModel``.
    """

    def __init__(self, unet: torch.nn.Module, patch_size: int) -> None:
        super().__init__()
        self.unet = unet
        self.patch_size = int(patch_size)

    @property
    def config(self) -> Any:
        return self.unet.config

    def forward(self, sample: Tensor, timestep: Tensor | int, **kwargs: Any) -> Any:
        UNet2DOutput = diffusers_import("diffusers.models.unets.unet_2d", "UNet2DOutput")

        p = self.patch_size
        out = self.unet(torch.nn.functional.pixel_unshuffle(sample, p), timestep, **kwargs).sample
        return UNet2DOutput(sample=torch.nn.functional.pixel_shuffle(out, p))


def inner_unet(unet: torch.nn.Module) -> torch.nn.Module:
    """The ``UNet2DModel`` of a :class:`PatchedUNet` (or ``unet`` itself): what a diffusers folder stores."""
    return unet.unet if isinstance(unet, PatchedUNet) else unet


# -- loading ---------------------------------------------------------------------------------------
@contextlib.contextmanager
def shipped_prior_path(name: str = DEFAULT_PRIOR) -> Iterator[Path]:
    """The folder of the shipped prior ``name`` (package data), as a real path while the context lasts."""
    if name not in SHIPPED_PRIORS:
        raise PriorError(f"unknown diffusion prior {name!r}: no such shipped prior or folder; {_FIX}")
    resource = importlib.resources.files("sharedattr").joinpath("assets", SHIPPED_PRIORS[name])
    with importlib.resources.as_file(resource) as path:
        path = Path(path)
        if not (path / "unet" / WEIGHTS_NAME).is_file():
            raise PriorError(
                f"the shipped diffusion prior {name!r} is missing from the sharedattr installation "
                f"({path / 'unet' / WEIGHTS_NAME}); reinstall sharedattr or retrain it with "
                "`uv run python scripts/train_diffusion_prior.py`"
            )
        yield path


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = read_json(path)  # bounded: a deep, huge or non-UTF-8 file is an error naming it, not a traceback
    except (OSError, DamagedJSON) as err:
        raise PriorError(f"cannot read {path}: {type(err).__name__}: {err}; {_FIX}") from None
    if not isinstance(data, dict):
        raise PriorError(f"{path} is not a JSON object; {_FIX}")
    return data


def _layout(folder: Path) -> tuple[Path, Path | None]:
    """``(UNet folder, scheduler config file or None)`` of a diffusers folder; PriorError if it has no UNet."""
    if not folder.exists():
        raise PriorError(f"diffusion prior folder {folder} does not exist; {_FIX}")
    if not folder.is_dir():
        raise PriorError(f"diffusion prior {folder} is not a folder; {_FIX}")
    if (folder / "model_index.json").is_file() or (folder / "unet").is_dir():
        unet_dir = folder / "unet"
        scheduler = folder / "scheduler" / "scheduler_config.json"
        if not scheduler.is_file():
            raise PriorError(f"diffusion prior folder {folder} has no scheduler/scheduler_config.json; {_FIX}")
    else:
        unet_dir = folder
        scheduler = folder / "scheduler_config.json"
        scheduler = scheduler if scheduler.is_file() else None
    if not (unet_dir / "config.json").is_file():
        raise PriorError(
            f"diffusion prior folder {folder} holds no UNet ({unet_dir / 'config.json'} is missing); {_FIX}"
        )
    if not (unet_dir / WEIGHTS_NAME).is_file():
        others = sorted(p.name for p in unet_dir.glob("diffusion_pytorch_model*"))
        hint = (
            (
                f" (it has {', '.join(others)}: only {WEIGHTS_NAME} is read, never pickled weights; convert them "
                "with UNet2DModel.from_pretrained(folder).save_pretrained(folder, safe_serialization=True) "
                "if you trust the file)"
            )
            if others
            else ""
        )
        raise PriorError(f"diffusion prior folder {folder}: {unet_dir / WEIGHTS_NAME} is missing{hint}; {_FIX}")
    return unet_dir, scheduler


def _sample_size(config: dict[str, Any], unet_dir: Path) -> int:
    size = config.get("sample_size")
    if isinstance(size, (list, tuple)) and len(size) == 2 and size[0] == size[1]:
        size = size[0]
    if not isinstance(size, int) or size < 1:
        raise PriorError(
            f"{unet_dir / 'config.json'}: sample_size {size!r} is not one positive image size (square images only)"
        )
    return size


def scheduler_config_of(path: Path | None) -> dict[str, Any]:
    """The DDPM scheduler config of a ``scheduler_config.json`` (diffusers' defaults for None), as a plain dict."""
    DDPMScheduler = diffusers_import("diffusers", "DDPMScheduler")

    raw = _read_json(path) if path is not None else {}
    try:
        config = DDPMScheduler.from_config(raw).config
    except Exception as err:  # noqa: BLE001 - a config diffusers cannot use
        raise PriorError(f"{path}: not a usable scheduler config: {type(err).__name__}: {err}") from None
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in config.items() if not k.startswith("_")}


HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
"""A Hugging Face hub repository id, ``owner/name``."""
HUB_FILES = (
    "model_index.json",
    "unet/config.json",
    f"unet/{WEIGHTS_NAME}",
    "scheduler/scheduler_config.json",
    "config.json",
    WEIGHTS_NAME,
    "scheduler_config.json",
)
"""The files of a hub prior that are fetched: a pipeline's UNet and scheduler, or a bare UNet (safetensors only)."""


def is_hub_id(source: str | Path) -> bool:
    """Whether ``source`` reads as a hub id ``owner/name`` (and is not an existing path)."""
    return isinstance(source, str) and bool(HUB_ID.match(source)) and not Path(source).expanduser().exists()


def hub_offline() -> bool:
    """Whether the hub must not be contacted: ``HF_HUB_OFFLINE`` set to a true value (read at each call)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def hub_prior_folder(repo_id: str) -> Path:
    """The local snapshot folder of hub prior ``repo_id``: downloaded into the hub cache with a network (only
    :data:`HUB_FILES`), else the cached one (never a network call when :func:`hub_offline`). A :class:`PriorError`
    names the cache folder and the fix when it is not cached and cannot be downloaded."""
    from huggingface_hub import constants, snapshot_download

    cache = Path(constants.HF_HUB_CACHE).expanduser()
    try:
        return Path(snapshot_download(repo_id, allow_patterns=list(HUB_FILES), local_files_only=hub_offline()))
    except Exception as err:  # noqa: BLE001 - offline and not cached, unknown repo, no network, ...
        folder = cache / f"models--{repo_id.replace('/', '--')}"
        raise PriorError(
            f"diffusion prior {repo_id!r} is no folder, and as a hub id it is not in the local hub cache ({folder}) "
            f"and could not be downloaded ({type(err).__name__}); download it once with a network (`hf download "
            f"{repo_id}`, or unset HF_HUB_OFFLINE), point HF_HUB_CACHE at a cache that holds it, or give an existing "
            "diffusers folder"
        ) from None


def load_prior(source: str | Path = DEFAULT_PRIOR, device: str | torch.device = "cpu") -> DiffusionPrior:
    """Load a frozen :class:`DiffusionPrior` from a shipped name (``"insilico-ddpm-v1"``), a diffusers folder or a
    hub id (``"google/ddpm-cifar10-32"``, :func:`hub_prior_folder`).

    Raises :class:`PriorError` (a ``ValueError``) naming the path and the fix when ``source``
    is neither a shipped name nor a folder holding an unconditional ``UNet2DModel`` with
    safetensors weights, nor a hub id in the cache (or downloadable).

    Example::

        prior = load_prior("google/ddpm-cifar10-32")  # offline: from ~/.cache/huggingface/hub
        prior.channels, prior.sample_size  # (3, 32)
    """
    if isinstance(source, str) and source in SHIPPED_PRIORS:
        with shipped_prior_path(source) as folder:
            return _load_folder(folder, source, device)
    if is_hub_id(source):
        return _load_folder(hub_prior_folder(str(source)), str(source), device)
    folder = Path(source).expanduser()
    if not folder.exists() and isinstance(source, str) and "/" not in source and "\\" not in source:
        raise PriorError(
            f"unknown diffusion prior {source!r}: neither a shipped prior "
            f"({', '.join(SHIPPED_PRIORS)}) nor an existing folder; {_FIX}"
        )
    return _load_folder(folder, str(source), device)


def _load_folder(folder: Path, source: str, device: str | torch.device) -> DiffusionPrior:
    UNet2DModel = diffusers_import("diffusers", "UNet2DModel")

    unet_dir, scheduler_file = _layout(folder)
    config = _read_json(unet_dir / "config.json")
    cls = config.get("_class_name", "UNet2DModel")
    if cls != "UNet2DModel":
        raise PriorError(
            f"{unet_dir / 'config.json'} describes a {cls}; a diffusion prior needs an unconditional "
            f"UNet2DModel; {_FIX}"
        )
    if config.get("class_embed_type") or config.get("num_class_embeds"):
        raise PriorError(
            f"{unet_dir / 'config.json'} describes a class-conditional UNet2DModel; a diffusion prior "
            "must be unconditional"
        )
    size = _sample_size(config, unet_dir)
    scheduler_config = scheduler_config_of(scheduler_file)
    try:
        unet = UNet2DModel.from_pretrained(
            unet_dir, use_safetensors=True, local_files_only=True, torch_dtype=torch.float32, low_cpu_mem_usage=False
        )
    except Exception as err:  # noqa: BLE001 - a corrupt or mismatched weights file
        raise PriorError(f"cannot load the UNet of {folder}: {type(err).__name__}: {err}") from None
    unet = unet.float().to(device).eval().requires_grad_(False)
    record = _read_json(folder / RECORD_NAME) if (folder / RECORD_NAME).is_file() else {}
    patch = record.get("patch_size", 1)
    channels = int(unet.config.in_channels)
    if not isinstance(patch, int) or isinstance(patch, bool) or not 1 <= patch <= 8 or channels % (patch * patch):
        raise PriorError(
            f"{folder / RECORD_NAME}: patch_size {patch!r} must be an integer from 1 to 8 whose square divides the "
            f"UNet's {channels} input channels"
        )
    if patch > 1:
        unet = PatchedUNet(unet, patch).eval().requires_grad_(False)
    return DiffusionPrior(
        unet=unet,
        scheduler_config=scheduler_config,
        sample_size=size * patch,
        channels=channels // (patch * patch),
        source=source,
        record=record,
    )


# -- the sampler ---------------------------------------------------------------------------------
def make_scheduler(
    kind: str,
    config: Mapping[str, Any],
    steps: int | None = None,
    spacing: str | None = None,
    clip_x0: bool | None = None,
) -> Any:
    """The one scheduler factory: a fresh diffusers ``DDIMScheduler`` (``kind="ddim"``) or ``DDPMScheduler``
    (``"ddpm"``) from a prior's scheduler ``config``. ``spacing`` and ``clip_x0`` override the config's
    ``timestep_spacing`` and ``clip_sample`` (None: keep them); ``steps`` respaces the training timesteps to that
    many (None: not respaced; more than the prior was trained with is a ValueError)."""
    if kind not in SCHEDULERS:
        raise PriorError(f"unknown scheduler {kind!r}; choose one of {', '.join(SCHEDULERS)}")
    DDIMScheduler, DDPMScheduler = diffusers_import("diffusers", "DDIMScheduler", "DDPMScheduler")

    overrides = {k: v for k, v in (("timestep_spacing", spacing), ("clip_sample", clip_x0)) if v is not None}
    scheduler = (DDIMScheduler if kind == "ddim" else DDPMScheduler).from_config({**dict(config), **overrides})
    if steps is not None:
        n_train = scheduler.config.num_train_timesteps
        if steps > n_train:
            raise ValueError(f"steps = {steps} exceeds the prior's {n_train} training timesteps")
        scheduler.set_timesteps(steps)
    return scheduler


@dataclass(frozen=True)
class Sampling:
    """How the sampler runs the reverse diffusion: ``scheduler`` (``"ddim"`` or ``"ddpm"``, ancestral) over
    ``steps`` of the prior's training timesteps, respaced by ``spacing`` (diffusers' ``timestep_spacing``; None: the
    prior's), the scheduler's clipping of its x0 estimate ``clip_x0`` (None: the prior's ``clip_sample``) and DDIM's
    noise ``eta`` (0: deterministic given the initial noise)."""

    scheduler: str
    steps: int
    eta: float = 0.0
    spacing: str | None = None
    clip_x0: bool | None = None

    def make_scheduler(self, config: Mapping[str, Any]) -> Any:
        """A fresh scheduler of these settings from a prior's scheduler ``config`` (:func:`make_scheduler`)."""
        return make_scheduler(self.scheduler, config, self.steps, self.spacing, self.clip_x0)


def unclamped_unit(x: Tensor) -> Tensor:
    """A diffusion model's [-1, 1] → [0, 1] *without* a clamp (:func:`to_unit` clamps): for ``x0_hat``."""
    return (x + 1) / 2


def predict_x0(model_output: Tensor, x_t: Tensor, alpha_bar: Tensor, prediction_type: str = "epsilon") -> Tensor:
    """The denoiser's estimate of ``x_0`` from its output at ``x_t`` (``ᾱ_t`` = ``alpha_bar``), unclamped."""
    if prediction_type == "epsilon":
        return (x_t - (1 - alpha_bar).sqrt() * model_output) / alpha_bar.sqrt()
    if prediction_type == "sample":
        return model_output
    if prediction_type == "v_prediction":
        return alpha_bar.sqrt() * x_t - (1 - alpha_bar).sqrt() * model_output
    raise ValueError(f"unsupported prediction_type {prediction_type!r} (epsilon, sample or v_prediction)")


class Denoised(NamedTuple):
    """The denoiser's pass at one step, what a :class:`Guide` sees: the input ``x_t`` ``[B, C, H, W]`` (requiring
    grad when the guide differentiates), the timestep ``t``, the prediction ``model_output`` ``[B, C', H, W]`` (C' =
    2C with a learned variance) and ``x0_hat`` ``[B, C, H, W]``, the estimate of ``x_0`` from it (unclamped)."""

    x_t: Tensor
    t: Tensor
    model_output: Tensor
    x0_hat: Tensor


class Guide(Protocol):
    """The guidance the sampler calls at every step, as a diffusers pipeline calls its guidance around the
    scheduler: ``differentiable`` says whether the denoiser's pass is taken with gradients (``x_t`` requires grad);
    ``guide(scheduler, denoised)`` returns the update subtracted from the scheduler's ``x_{t−1}`` (None: none)."""

    differentiable: bool

    def __call__(self, scheduler: Any, denoised: Denoised) -> Tensor | None: ...


def _step_kwargs(scheduler: Any, eta: float) -> dict[str, Any]:
    return {"eta": eta} if "eta" in inspect.signature(scheduler.step).parameters else {}


def denoise_step(
    unet: Any,
    scheduler: Any,
    x_t: Tensor,
    t: Tensor | int,
    generator: Generators,
    eta: float,
    guide: Guide | None = None,
) -> tuple[Tensor, Tensor]:
    """One step of the reverse diffusion from ``x_t`` ``[B, C, H, W]`` (the prior's [-1, 1]) at timestep ``t``:
    ``(x_{t−1}, x0_hat)``, both detached.

    The denoiser predicts at ``x_t``; ``x0_hat`` is its unclamped estimate of ``x_0`` (:func:`predict_x0`, the
    scheduler's ``ᾱ_t``). ``x_{t−1}`` is the scheduler's own ``step`` on detached tensors (DDIM with ``eta``, or
    ancestral DDPM; its noise from ``generator``: one, or one per sample; the scheduler clips its own x0 if its config
    says ``clip_sample``). A ``guide`` sees the pass (:class:`Denoised`, with gradients when it is
    ``differentiable``), and its update is subtracted from ``x_{t−1}``.
    """
    x = x_t.detach()
    channels = x.shape[1]
    differentiable = guide is not None and guide.differentiable
    alpha_bar = scheduler.alphas_cumprod[int(t)].to(device=x.device, dtype=x.dtype)
    prediction_type = scheduler.config.get("prediction_type", "epsilon")
    update = None
    with torch.enable_grad() if differentiable else torch.no_grad():
        x_in = x.clone().requires_grad_(differentiable)
        out = unet(scheduler.scale_model_input(x_in, t), t).sample
        x0_hat = predict_x0(out[:, :channels], x_in, alpha_bar, prediction_type)  # [:, :C]: a learned variance
        if guide is not None:
            update = guide(scheduler, Denoised(x_in, t, out, x0_hat))
    model_output = out.detach()
    kwargs = _step_kwargs(scheduler, eta)
    if "eta" in kwargs:  # DDIM has no learned variance: pass the prediction only
        model_output = model_output[:, :channels]
    x_prev = scheduler.step(model_output, t, x, generator=generator, **kwargs).prev_sample
    if update is not None:
        x_prev = x_prev - update
    return x_prev.detach(), x0_hat.detach()


def sample_shape(prior: Any) -> tuple[int, int, int]:
    """``(C, H, W)`` of one of ``prior``'s samples (its ``sample_size``: one size, or ``(H, W)``)."""
    size = prior.sample_size
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    return int(prior.channels), int(h), int(w)


class Sample(NamedTuple):
    """What :func:`sample` returns, both ``[B, C, H, W]`` in the prior's [-1, 1] (unclamped): the final ``sample``
    (after the last step) and ``x0_estimate``, the last step's estimate of ``x_0`` (before that step)."""

    sample: Tensor
    x0_estimate: Tensor


def sample(
    unet: Any, prior: Any, generators: list[torch.Generator], sampling: Sampling, guide: Guide | None = None
) -> Sample:
    """The one sampler: ``len(generators)`` samples from seeded noise, guided by ``guide`` (None: unguided).

    ``prior`` gives the scheduler config, ``sample_size`` and ``channels``; ``unet`` is its denoiser (or a wrapper
    that counts its calls), whose device and dtype the samples take. Sample ``i`` draws its initial noise and the
    sampler's noise from ``generators[i]`` only, so it does not depend on the others in the batch; the scheduler is
    made fresh (:meth:`Sampling.make_scheduler`) and every step is :func:`denoise_step`.
    """
    randn_tensor = diffusers_import("diffusers.utils.torch_utils", "randn_tensor")

    scheduler = sampling.make_scheduler(prior.scheduler_config)
    parameter = next(unet.parameters())
    x = randn_tensor(
        (len(generators), *sample_shape(prior)), generator=generators, device=parameter.device, dtype=parameter.dtype
    )
    x = x * scheduler.init_noise_sigma
    x0_hat = x
    for t in scheduler.timesteps:
        x, x0_hat = denoise_step(unet, scheduler, x, t, generators, sampling.eta, guide)
    return Sample(x, x0_hat)


def sample_generators(seed: int, indices: range | list[int]) -> list[torch.Generator]:
    """One CPU generator per sample: sample ``i`` of seed ``seed`` draws only from its own generator."""
    return [
        torch.Generator().manual_seed(int(np.random.SeedSequence([seed, i]).generate_state(1, np.uint64)[0] >> 1))
        for i in indices
    ]


def unguided_samples(
    prior: Any, n: int, seed: int, sampling: Sampling, batch_size: int = 64, output: str = "sample"
) -> Tensor:
    """``n`` unguided samples ``[n, C, H, W]`` float32 in ``[0, 1]`` (clamped) on the CPU: :func:`sample` with no
    guide, ``batch_size`` samples at a time; ``output`` picks the final ``"sample"`` or the last ``"x0_estimate"``.
    Sample ``i`` draws from its own generator (:func:`sample_generators` of ``seed``), so it does not depend on ``n``
    (nor, up to float rounding, on ``batch_size``)."""
    out = []
    for start in range(0, n, batch_size):
        sampled = sample(prior.unet, prior, sample_generators(seed, range(start, min(n, start + batch_size))), sampling)
        out.append(to_unit(sampled.x0_estimate if output == "x0_estimate" else sampled.sample).float().cpu())
    return torch.cat(out) if out else torch.zeros((0, *sample_shape(prior)))


@torch.no_grad()
def sample_prior(
    prior: DiffusionPrior,
    n: int,
    *,
    steps: int = 50,
    scheduler: Literal["ddim", "ddpm"] = "ddim",
    seed: int = 0,
    batch_size: int = 64,
    eta: float = 0.0,
) -> Tensor:
    """``n`` unguided samples ``[n, C, H, W]`` float32 in ``[0, 1]`` on the CPU (:func:`unguided_samples`).

    ``scheduler="ddim"`` runs DDIM with ``eta`` (0: deterministic given the initial noise);
    ``"ddpm"`` runs ancestral DDPM sampling over ``steps`` of the training timesteps.
    """
    if scheduler not in SCHEDULERS:
        raise PriorError(f"unknown scheduler {scheduler!r}; choose one of {', '.join(SCHEDULERS)}")
    if n < 0 or steps < 1 or batch_size < 1:
        raise PriorError(
            f"need n >= 0, steps >= 1 and batch_size >= 1 (got n={n}, steps={steps}, batch_size={batch_size})"
        )
    return unguided_samples(prior, n, seed, Sampling(scheduler, steps, eta), batch_size)


# -- does the prior fit the stimuli? -------------------------------------------------------------
MAX_SIZE_RATIO = 2.0
"""A prior whose samples are more than this many times smaller (or larger) than the model's input is a mismatch (its
images are resized that much)."""
MAX_MEAN_DIFFERENCE = 0.15
"""A difference of mean pixel value (in [0, 1]) between the prior's samples and the stimuli above this is a
mismatch."""
MAX_STD_RATIO = 2.0
"""A ratio of contrast (the pixel std within an image, averaged over images) between the prior's samples and the
stimuli above this (or below its inverse) is a mismatch."""


@dataclass(frozen=True)
class PriorCheck:
    """How a prior's unguided samples compare with the stimuli (:func:`check_prior`).

    ``prior_shape`` ``(C, H, W)`` of its samples; ``stimuli_shape`` ``(C, H, W)`` of the stimuli at the model's input
    (C = 1 when they are grey); the pixel ``mean`` and ``std`` of each (over every pixel and channel, in [0, 1]);
    ``mismatches``: one phrase per mismatch (empty when the prior fits).
    """

    prior: str
    prior_shape: tuple[int, int, int]
    stimuli_shape: tuple[int, int, int]
    prior_mean: float
    prior_std: float
    stimuli_mean: float
    stimuli_std: float
    mismatches: tuple[str, ...]

    def warning(self, synthesizer: str) -> str:
        """One warning naming the prior, every mismatch and how to pass another prior."""
        return (
            f"synthesis {synthesizer}: the diffusion prior {self.prior!r} does not fit the stimuli: "
            f"{'; '.join(self.mismatches)}. Its images will not look like the stimuli. Pass a prior trained on "
            f'images like them: prior = "<diffusers folder or hub id, e.g. google/ddpm-cifar10-32>" in the '
            f"[[synthesis]] table of {synthesizer} (see docs/synthesis.md)"
        )


def check_prior(prior: str, samples: Tensor, stimuli: Tensor) -> PriorCheck:
    """Compare ``samples`` ``[n, C, H, W]`` of ``prior`` (unguided, in [0, 1]) with ``stimuli`` ``[m, C', H', W']``
    in [0, 1] at the model's input (C' = 1 for grey stimuli): channels (a grey prior for colour stimuli or the
    reverse), resolution (more than :data:`MAX_SIZE_RATIO` apart), mean pixel value (more than
    :data:`MAX_MEAN_DIFFERENCE` apart) and contrast, the pixel std within an image averaged over the images (more than
    :data:`MAX_STD_RATIO` times apart).

    Example::

        check = check_prior("insilico-ddpm-v1", torch.full((4, 1, 32, 32), 0.5), torch.rand(4, 3, 64, 64))
        check.mismatches  # ('channels: the prior draws grey images (1 channel), the stimuli are colour (3)', ...)
    """
    prior_shape = tuple(int(s) for s in samples.shape[1:])
    stimuli_shape = tuple(int(s) for s in stimuli.shape[1:])
    samples, stimuli = samples.detach().double(), stimuli.detach().double()
    p_mean, s_mean = float(samples.mean()), float(stimuli.mean())
    p_std, s_std = (float(x.flatten(1).std(1).mean()) if len(x) else 0.0 for x in (samples, stimuli))
    found = []
    (pc, ph, pw), (sc, sh, sw) = prior_shape, stimuli_shape
    if pc != sc:
        colour = {1: "grey", 3: "colour"}
        found.append(
            f"channels: the prior draws {colour.get(pc, 'multichannel')} images ({pc} channel{'s' * (pc > 1)}), "
            f"the stimuli are {colour.get(sc, 'multichannel')} ({sc})"
        )
    ratio = max(ph / sh, sh / ph, pw / sw, sw / pw)
    if ratio > MAX_SIZE_RATIO:
        found.append(f"resolution: the prior draws {ph}×{pw} px, the model's input is {sh}×{sw} px ({ratio:.3g}×)")
    if abs(p_mean - s_mean) > MAX_MEAN_DIFFERENCE:
        found.append(f"mean pixel value: {p_mean:.3f} in the prior's samples, {s_mean:.3f} in the stimuli")
    std_ratio = max(p_std, 1e-6) / max(s_std, 1e-6)
    if not 1 / MAX_STD_RATIO <= std_ratio <= MAX_STD_RATIO:
        found.append(
            f"contrast (pixel std within an image): {p_std:.3f} in the prior's samples, {s_std:.3f} in the stimuli"
        )
    return PriorCheck(prior, prior_shape, stimuli_shape, p_mean, p_std, s_mean, s_std, tuple(found))
