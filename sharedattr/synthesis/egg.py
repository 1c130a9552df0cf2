"""Built-in synthesizer: Energy Guided Diffusion (EGG, Pierzchlewicz et al., NeurIPS 2023).

A pretrained unconditional diffusion model (a diffusers ``UNet2DModel`` and its DDPM/DDIM
scheduler, loaded by :func:`~.prior.load_prior`) is the image prior; it is never trained
here. All seeds are sampled as one batch over the respaced timesteps, seed ``i`` drawing its
initial and sampler noise from its own generator (as :func:`~.prior.sample_prior`: at λ = 0
the images are the prior's own samples); at each step ``t`` (:func:`guidance_step`):

1. ``out = unet(x_t, t)``; ``x0_hat`` from the scheduler's ``ᾱ_t`` (epsilon prediction:
   ``(x_t − √(1−ᾱ_t)·out)/√ᾱ_t``), **not** clamped (as the reference, ``clip_denoised=False``:
   a clamp would zero the gradient of every saturated pixel);
2. ``x_{t−1}`` = the scheduler's own ``step(out, t, x_t, generator=...)`` on detached
   tensors (DDIM with ``eta``, or DDPM ancestral; the scheduler clips its own ``x0`` if its
   config says ``clip_sample``);
3. ``g = ∂/∂x_t Σ_i E((x0_hat_i + 1)/2)``, through the denoiser;
4. ``g`` normalised per sample (``g_i/‖g_i‖``) or over the whole batch (``g/‖g‖``, the
   reference implementation);
5. ``x_{t−1} ← x_{t−1} − λ·g``.

The final ``x_0`` (after the last step's update) is mapped to [0, 1] and clamped: those are
the prior-resolution images (``SynthesisResult.prior_images``); they are then fitted to the
model's input (size, channels, and the energy's ``grayscale``/``norm``) and scored once.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, NamedTuple

import torch
from pydantic import AfterValidator, Field, ValidationInfo
from torch import Tensor, nn

from sharedattr.plugins.contracts import EnergyValue, SynthesisResult
from sharedattr.plugins.hookspecs import hookimpl
from sharedattr.plugins.params import BASE_DIR_KEY, CHECK_FILES_KEY, MAX_SEEDS, Params, Seed
from sharedattr.plugins.specs import EnergySpec
from sharedattr.synthesis.cost import CallCounter, Stopwatch, cost_record
from sharedattr.synthesis.energies import EnergyParam, bind_many, build_energy
from sharedattr.synthesis.preprocess import fit_to_model
from sharedattr.synthesis.prior import (
    DEFAULT_PRIOR,
    SHIPPED_PRIORS,
    diffusers_import,
    load_prior,
    sample_generators,
    sample_prior,
    to_unit,
)

__all__ = [
    "EGG",
    "EGGParams",
    "GuidanceStep",
    "guidance_step",
    "make_scheduler",
    "normalise_gradient",
    "predict_x0",
    "unclamped_unit",
]

Generators = torch.Generator | list[torch.Generator] | None


def _check_prior_source(value: str, info: ValidationInfo) -> str:
    """A shipped prior's name stays as is; a folder resolves against the config's folder and must exist."""
    if value in SHIPPED_PRIORS:
        return value
    context = info.context or {}
    path = Path(value).expanduser()
    base = context.get(BASE_DIR_KEY)
    if base is not None and not path.is_absolute():
        path = Path(base) / path
    if context.get(CHECK_FILES_KEY, True) and not path.is_dir():
        where = " (relative paths are resolved against the config file's folder)" if base is not None else ""
        raise ValueError(
            f"unknown diffusion prior {value!r}: neither a shipped prior ({', '.join(SHIPPED_PRIORS)}) "
            f"nor an existing diffusers folder{where}"
        )
    return str(path)


PriorSource = Annotated[str, AfterValidator(_check_prior_source)]


class EGGParams(Params):
    """Params of the ``egg`` synthesizer."""

    prior: PriorSource = Field(
        DEFAULT_PRIOR,
        description="The diffusion prior: a shipped prior's name (insilico-ddpm-v1; insilico-ddpm-v2, 64 px) or a "
        "folder with a diffusers UNet2DModel and its scheduler config.",
    )
    preset: Literal["project", "reference"] = Field(
        "project",
        description="Defaults of the sampling fields left null: 'project' (DDIM, the prior's timestep spacing and x0 "
        "clipping, the final sample, per-sample normalisation) or 'reference', the sinzlab energy-guided-diffusion "
        "code the paper ran (ancestral DDPM, evenly spaced timesteps including the last, no x0 clipping, the last x0 "
        "estimate, normalisation over the batch). See docs/synthesis.md.",
    )
    scheduler: Literal["ddim", "ddpm"] | None = Field(
        None,
        description="Sampler over the respaced timesteps: DDIM (with eta) or DDPM ancestral sampling (null: the "
        "preset's).",
    )
    timestep_spacing: Literal["leading", "linspace", "trailing"] | None = Field(
        None,
        description="How the prior's training timesteps are respaced to 'steps' (diffusers' timestep_spacing; "
        "'linspace' is the reference's: evenly spaced, the first and the last included). null: the preset's.",
    )
    clip_x0: bool | None = Field(
        None,
        description="Clip the sampler's x0 estimate to [-1, 1] (the prior's clip_sample when the preset leaves it "
        "to the prior; the reference never clips).",
    )
    output: Literal["sample", "x0_estimate"] | None = Field(
        None,
        description="The returned image: the final sample, after the last guidance update ('sample'), or the last x0 "
        "estimate, before it ('x0_estimate', the reference's). null: the preset's.",
    )
    use_alpha_bar: bool = Field(
        False,
        description="Scale the guidance step by sqrt(1 − ᾱ_t) (the reference's option; its code computes this and "
        "then overwrites it, so the reference runs without it).",
    )
    guidance_units: Literal["image", "pixel"] = Field(
        "image",
        description="'image': λ multiplies the unit-norm gradient (a step of λ/√D per pixel, D = C·H·W); 'pixel': "
        "λ is the root-mean-square step per pixel, the same at any prior resolution (λ_pixel = λ_image/√D).",
    )
    steps: int = Field(50, ge=1, description="Sampling steps (the prior's training timesteps respaced to this many).")
    eta: float = Field(
        0.0,
        ge=0,
        le=1,
        description="DDIM noise: 0 = deterministic DDIM, 1 = ancestral (DDPM-like) sampling (scheduler = ddim only).",
    )
    guidance_scale: float = Field(
        5.0, ge=0, description="λ: each step moves x_{t-1} by λ along the normalised energy gradient (0 = unguided)."
    )
    normalize: Literal["sample", "batch"] | None = Field(
        None,
        description="Normalise the energy gradient per sample (g_i/‖g_i‖: each seed independent of n_seeds) or over "
        "the whole batch of seeds (g/‖g‖, as the reference implementation). null: the preset's.",
    )
    energy: EnergyParam = Field(
        EnergySpec(name="mei"),
        description="The energy minimised: a registered energy's name or {name = ..., **params} (default mei).",
    )
    n_seeds: int = Field(1, ge=1, le=MAX_SEEDS, description="Independent samples, generated as one batch.")
    neuron_batch: int = Field(
        8,
        ge=1,
        le=1024,
        description="Neurons sampled together in one loop (their n_seeds samples share every UNet and model pass); "
        "1 = one neuron at a time. The results equal one at a time up to float rounding of the larger batch.",
    )
    seed: Seed = Field(0, description="Seed of the initial noise and of the sampler's noise.")


PRESETS: dict[str, dict[str, Any]] = {
    "project": {
        "scheduler": "ddim",
        "timestep_spacing": None,
        "clip_x0": None,
        "output": "sample",
        "normalize": "sample",
    },
    "reference": {
        "scheduler": "ddpm",
        "timestep_spacing": "linspace",
        "clip_x0": False,
        "output": "x0_estimate",
        "normalize": "batch",
    },
}
"""The sampling settings each preset gives the fields left null (``None`` here: the prior's scheduler config)."""


# -- the guidance step -------------------------------------------------------------------
def unclamped_unit(x: Tensor) -> Tensor:
    """A diffusion model's [-1, 1] → [0, 1] *without* a clamp (``prior.to_unit`` clamps): for ``x0_hat``."""
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


def normalise_gradient(g: Tensor, how: str = "sample", groups: int = 1) -> Tensor:
    """``g_i/‖g_i‖`` per sample (``"sample"``) or ``g/‖g‖`` over the batch (``"batch"``); zero stays zero.

    With ``groups > 1`` the batch is that many consecutive groups of equal size (one neuron's seeds each) and
    ``"batch"`` normalises each group over itself, as if it were sampled alone.
    """
    if how == "sample":
        norms = g.flatten(1).norm(dim=1).clamp(min=1e-12)
        return g / norms.view(-1, *([1] * (g.dim() - 1)))
    if how == "batch":
        norms = g.reshape(groups, -1).norm(dim=1).clamp(min=1e-12)
        return (g.reshape(groups, -1) / norms[:, None]).view_as(g)
    raise ValueError(f"unknown normalisation {how!r}; use 'sample' or 'batch'")


class GuidanceStep(NamedTuple):
    """One guided step: ``x_prev`` (guided), ``x0_hat``, the energy at ``x0_hat`` (``None`` without
    an energy), and ``g`` the normalised gradient that was applied (``x_prev = step − scale·g``)."""

    x_prev: Tensor
    x0_hat: Tensor
    value: EnergyValue | None
    g: Tensor


def _step_kwargs(scheduler: Any, eta: float) -> dict[str, Any]:
    return {"eta": eta} if "eta" in inspect.signature(scheduler.step).parameters else {}


def guidance_step(
    unet: nn.Module,
    scheduler: Any,
    x_t: Tensor,
    t: Tensor | int,
    energy_fn: Callable[[Tensor], EnergyValue] | None,
    scale: float | Tensor,
    normalize: str = "sample",
    generator: Generators = None,
    eta: float = 0.0,
    groups: int = 1,
) -> GuidanceStep:
    """One EGG step from ``x_t`` (``[B, C, H, W]`` in the prior's [-1, 1] space) at timestep ``t``.

    ``energy_fn`` maps images in [0, 1] to an :class:`EnergyValue`; it is evaluated at
    ``unclamped_unit(x0_hat)``. With ``scale == 0`` the energy is only evaluated (no gradient,
    no denoiser backward); with ``energy_fn=None`` neither. The scheduler draws its noise
    from ``generator`` (one, or one per sample; DDPM, or DDIM with ``eta > 0``). ``groups``: the batch is that
    many consecutive groups (one neuron's seeds each), normalised separately (:func:`normalise_gradient`).
    """
    x = x_t.detach()
    guided = bool(torch.as_tensor(scale).gt(0).any()) and energy_fn is not None
    channels = x.shape[1]
    alpha_bar = scheduler.alphas_cumprod[int(t)].to(device=x.device, dtype=x.dtype)
    prediction_type = scheduler.config.get("prediction_type", "epsilon")
    value = None
    g = torch.zeros_like(x)
    with torch.enable_grad() if guided else torch.no_grad():
        x_in = x.clone().requires_grad_(guided)
        out = unet(scheduler.scale_model_input(x_in, t), t).sample
        x0_hat = predict_x0(out[:, :channels], x_in, alpha_bar, prediction_type)  # [:, :C]: a learned variance
        if energy_fn is not None:
            value = energy_fn(unclamped_unit(x0_hat))
        if guided:
            (grad,) = torch.autograd.grad(value.energy.sum(), x_in)
            g = normalise_gradient(grad, normalize, groups)
    model_output = out.detach()
    if "eta" in _step_kwargs(scheduler, eta):  # DDIM has no learned variance: pass the prediction only
        model_output = model_output[:, :channels]
    x_prev = scheduler.step(model_output, t, x, generator=generator, **_step_kwargs(scheduler, eta)).prev_sample
    if guided:
        x_prev = x_prev - scale * g  # scale: a number, or a tensor broadcastable to x (per-step, per-pixel units)
    if value is not None:
        value = EnergyValue(value.energy.detach(), value.response.detach())
    return GuidanceStep(x_prev.detach(), x0_hat.detach(), value, g.detach())


def make_scheduler(
    kind: str, config: dict[str, Any], steps: int, spacing: str | None = None, clip_x0: bool | None = None
) -> Any:
    """A fresh diffusers DDIM/DDPM scheduler from a prior's scheduler config, respaced to ``steps``; ``spacing``
    and ``clip_x0`` override the config's ``timestep_spacing`` and ``clip_sample`` (None: keep them)."""
    DDIMScheduler, DDPMScheduler = diffusers_import("diffusers", "DDIMScheduler", "DDPMScheduler")

    cls = DDIMScheduler if kind == "ddim" else DDPMScheduler
    overrides = {k: v for k, v in (("timestep_spacing", spacing), ("clip_sample", clip_x0)) if v is not None}
    scheduler = cls.from_config({**dict(config), **overrides})
    n_train = scheduler.config.num_train_timesteps
    if steps > n_train:
        raise ValueError(f"egg: steps = {steps} exceeds the prior's {n_train} training timesteps")
    scheduler.set_timesteps(steps)
    return scheduler


# -- priors --------------------------------------------------------------------------------
_PRIORS: dict[tuple[str, str], Any] = {}
_PRIORS_LOCK = threading.Lock()


def _cache_key(source: str, device: torch.device) -> tuple[str, str]:
    path = Path(source).expanduser()
    return (str(path.resolve()) if path.exists() else source, str(device))


def cached_prior(source: str, device: torch.device | str = "cpu") -> Any:
    """The prior ``source`` (shipped name or folder) on ``device``, loaded once per (source, device)."""
    device = torch.device(device)
    key = _cache_key(source, device)
    with _PRIORS_LOCK:  # synthesis loops side by side load it once
        if key not in _PRIORS:
            _PRIORS[key] = load_prior(source, device=device)
        return _PRIORS[key]


# -- the synthesizer -------------------------------------------------------------------------
class EGG:
    """Energy Guided Diffusion for one neuron of an images → ``[B, N]`` model.

    ``prior`` is a shipped prior's name, a diffusers folder, or an already loaded prior
    (an object with ``unet``, ``scheduler_config``, ``sample_size`` and ``channels``, as
    :class:`~.prior.DiffusionPrior`). Loaded priors are cached per (source, device).
    """

    own_generators: ClassVar[bool] = True  # every random draw from its own seeded torch.Generator
    thread_safe: ClassVar[bool] = True  # no process-global side effects: loops run side by side

    def __init__(
        self,
        prior: Any = DEFAULT_PRIOR,
        scheduler: str | None = None,
        steps: int = 50,
        eta: float = 0.0,
        guidance_scale: float = 5.0,
        normalize: str | None = None,
        energy: EnergySpec | str | dict[str, Any] = "mei",
        n_seeds: int = 1,
        seed: int = 0,
        *,
        neuron_batch: int = 8,
        preset: str = "project",
        timestep_spacing: str | None = None,
        clip_x0: bool | None = None,
        output: str | None = None,
        use_alpha_bar: bool = False,
        guidance_units: str = "image",
    ) -> None:
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; use {' or '.join(map(repr, PRESETS))}")
        given = {
            "scheduler": scheduler,
            "timestep_spacing": timestep_spacing,
            "clip_x0": clip_x0,
            "output": output,
            "normalize": normalize,
        }
        chosen = {k: PRESETS[preset][k] if v is None else v for k, v in given.items()}
        scheduler, normalize = chosen["scheduler"], chosen["normalize"]
        if chosen["output"] not in ("sample", "x0_estimate"):
            raise ValueError(f"unknown output {chosen['output']!r}; use 'sample' or 'x0_estimate'")
        if guidance_units not in ("image", "pixel"):
            raise ValueError(f"unknown guidance_units {guidance_units!r}; use 'image' or 'pixel'")
        self.preset, self.timestep_spacing, self.clip_x0 = preset, chosen["timestep_spacing"], chosen["clip_x0"]
        self.output, self.use_alpha_bar, self.guidance_units = chosen["output"], use_alpha_bar, guidance_units
        if scheduler not in ("ddim", "ddpm"):
            raise ValueError(f"unknown scheduler {scheduler!r}; use 'ddim' or 'ddpm'")
        if normalize not in ("sample", "batch"):
            raise ValueError(f"unknown normalize {normalize!r}; use 'sample' or 'batch'")
        if guidance_scale < 0:
            raise ValueError(f"guidance_scale must be ≥ 0, got {guidance_scale}")
        self.prior, self.scheduler, self.steps, self.eta = prior, scheduler, steps, eta
        self.guidance_scale, self.normalize = guidance_scale, normalize
        self.energy = build_energy(energy)
        self.n_seeds, self.seed = n_seeds, seed
        if neuron_batch < 1:
            raise ValueError(f"neuron_batch must be ≥ 1, got {neuron_batch}")
        self.neuron_batch = int(neuron_batch)

    def load_prior(self, device: torch.device | str = "cpu") -> Any:
        """The prior on ``device`` (cached when named by a string)."""
        if isinstance(self.prior, (str, Path)):
            return cached_prior(str(self.prior), device)
        self.prior.unet.to(device)
        return self.prior

    def _sample(
        self,
        unet: nn.Module,
        prior: Any,
        n: int,
        seed: int,
        device: torch.device,
        energy_fn: Callable[[Tensor], EnergyValue] | None,
        scale: float,
        groups: int = 1,
    ) -> tuple[Tensor, list[Tensor]]:
        """Run the sampler from seeded noise; ``x_0`` in [-1, 1] space and the per-step responses.

        The batch is ``groups`` groups of ``n`` samples (one neuron's seeds each). Sample ``i`` of
        every group draws its initial and sampler noise from its own generator
        (:func:`~.prior.sample_generators`), as :func:`~.prior.sample_prior` does: with
        per-sample normalisation it does not depend on ``n``, and at λ = 0 it is the prior's
        own sample ``i``.
        """
        randn_tensor = diffusers_import("diffusers.utils.torch_utils", "randn_tensor")

        scheduler = make_scheduler(
            self.scheduler, prior.scheduler_config, self.steps, self.timestep_spacing, self.clip_x0
        )
        generator = [g for _ in range(groups) for g in sample_generators(seed, range(n))]
        size = prior.sample_size
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        dtype = next(prior.unet.parameters()).dtype
        x = randn_tensor((n * groups, prior.channels, h, w), generator=generator, device=device, dtype=dtype)
        x = x * scheduler.init_noise_sigma
        responses = []
        x0_hat = x
        for t in scheduler.timesteps:
            step_scale = self.step_scale(scale, scheduler, t, x[:n])
            step = guidance_step(
                unet, scheduler, x, t, energy_fn, step_scale, self.normalize, generator, self.eta, groups
            )
            x, x0_hat = step.x_prev, step.x0_hat
            if step.value is not None:
                responses.append(step.value.response.detach().float().cpu())
        return (x0_hat if self.output == "x0_estimate" else x), responses

    def step_scale(self, scale: float, scheduler: Any, t: Tensor | int, x: Tensor) -> float:
        """The guidance step's length at timestep ``t`` for one neuron's samples ``x`` ``[B, C, H, W]``: λ, times
        √D in ``"pixel"`` units (√(B·D) with batch normalisation: the unit-norm gradient spans the batch), times
        √(1 − ᾱ_t) with ``use_alpha_bar``."""
        if self.guidance_units == "pixel":
            scale = scale * float(x[0].numel() * (x.shape[0] if self.normalize == "batch" else 1)) ** 0.5
        if self.use_alpha_bar:
            scale = scale * float(1 - scheduler.alphas_cumprod[int(t)]) ** 0.5
        return scale

    def synthesize(self, model: nn.Module, neuron: int, *, reference: Tensor | None = None) -> SynthesisResult:
        """Images ``[n_seeds, C, H, W]`` at the model's input size; ``prior_images`` at the prior's."""
        return self.synthesize_many(model, [neuron], references=[reference])[0]

    def synthesize_many(
        self, model: nn.Module, neurons: Sequence[int], *, references: Sequence[Tensor | None] | None = None
    ) -> list[SynthesisResult]:
        """:meth:`synthesize` for several neurons in one sampling loop: their ``n_seeds`` samples each share every
        UNet and model pass (``[len(neurons) · n_seeds, C, H, W]``).

        Neuron ``k``'s samples draw the same noise as :meth:`synthesize` of that neuron alone, and batch
        normalisation runs over each neuron's samples, so the results equal one neuron at a time up to float
        rounding of the larger batch. Each result's cost is the loop's divided by the number of neurons.
        """
        neurons = [int(n) for n in neurons]
        references = list(references) if references is not None else [None] * len(neurons)
        if len(references) != len(neurons):
            raise ValueError(f"{len(neurons)} neurons but {len(references)} references")
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        prior = self.load_prior(device)  # once per (source, device): not part of wall_s
        stopwatch = Stopwatch()
        model_counter, unet_counter = CallCounter(model), CallCounter(prior.unet)
        energy_fn = bind_many(self.energy, model_counter, neurons, references, self.n_seeds)
        x0, history = self._sample(
            unet_counter, prior, self.n_seeds, self.seed, device, energy_fn, self.guidance_scale, len(neurons)
        )
        prior_images = to_unit(x0).float()  # clamped to [0, 1]
        images = fit_to_model(
            prior_images,
            model,
            grayscale=getattr(self.energy, "grayscale", False),
            norm=getattr(self.energy, "norm", None),
        )
        index = torch.tensor(neurons, device=images.device).repeat_interleave(self.n_seeds)
        with torch.no_grad():
            responses = model_counter(images).gather(1, index[:, None]).squeeze(1).detach().cpu()
        cost = {k: v / len(neurons) for k, v in cost_record(model_counter, stopwatch, unet_counter).items()}
        cost |= {"steps": float(self.steps), "neurons_per_loop": float(len(neurons))}
        steps = torch.stack(history) if history else torch.zeros(0, len(images))
        out = []
        for k in range(len(neurons)):
            rows = slice(k * self.n_seeds, (k + 1) * self.n_seeds)
            out.append(
                SynthesisResult(
                    images[rows].detach().cpu(),
                    responses[rows],
                    steps[:, rows],
                    dict(cost),
                    prior_images=prior_images[rows].cpu(),
                )
            )
        return out

    def prior_samples(self, n: int, seed: int = 0, device: torch.device | str = "cpu") -> Tensor:
        """``n`` unguided samples ``[n, C, H, W]`` in [0, 1] on the CPU (same scheduler, steps, eta, spacing,
        clipping and returned image; λ = 0).

        Seed ``seed``'s sample ``i`` starts from the same noise as seed ``i`` of
        :meth:`synthesize` with ``seed = seed``: the unguided counterpart of each guided image.
        """
        prior = self.load_prior(torch.device(device))
        if (self.timestep_spacing, self.clip_x0, self.output) == (None, None, "sample"):
            return sample_prior(prior, n, steps=self.steps, scheduler=self.scheduler, seed=seed, eta=self.eta)
        x, _ = self._sample(prior.unet, prior, n, seed, torch.device(device), None, 0.0)  # this sampler, unguided
        return to_unit(x).float().cpu()


@hookimpl
def register_synthesizers(register):
    register(
        "egg",
        EGG,
        params=EGGParams,
        description="Energy Guided Diffusion: a pretrained diffusion prior (DDIM/DDPM) steered at every step by "
        "the normalised gradient of an energy of its x0 estimate (mei, meni, reconstruction).",
    )
