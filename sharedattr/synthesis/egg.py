"""Built-in synthesizer: Energy Guided Diffusion (EGG, Pierzchlewicz et al., NeurIPS 2023).

A pretrained unconditional diffusion model (a diffusers ``UNet2DModel`` and its DDPM/DDIM
scheduler, loaded by :func:`~.prior.load_prior`) is the image prior; it is never trained
here. EGG runs the one sampler of :mod:`~.prior` (:func:`~.prior.sample`) and supplies only the
guidance (:class:`EnergyGuidance`), as a diffusers pipeline drives a scheduler. All seeds are
sampled as one batch over the respaced timesteps, seed ``i`` drawing its initial and sampler noise
from its own generator (as :func:`~.prior.sample_prior`: at λ = 0 the images are the prior's own
samples); at each step ``t`` (:func:`~.prior.denoise_step`, guided; :func:`guidance_step`):

1. ``out = unet(x_t, t)``; ``x0_hat`` from the scheduler's ``ᾱ_t`` (epsilon prediction:
   ``(x_t − √(1−ᾱ_t)·out)/√ᾱ_t``), **not** clamped (as the reference, ``clip_denoised=False``:
   a clamp would zero the gradient of every saturated pixel);
2. ``x_{t−1}`` = the scheduler's own ``step(out, t, x_t, generator=...)`` on detached
   tensors (DDIM with ``eta``, or DDPM ancestral; the scheduler clips its own ``x0`` if its
   config says ``clip_sample``);
3. ``g = ∂/∂x_t Σ_i E((x0_hat_i + 1)/2)``, through the denoiser (the guidance);
4. ``g`` normalised per sample (``g_i/‖g_i‖``) or over the whole batch (``g/‖g‖``, the
   reference implementation);
5. ``x_{t−1} ← x_{t−1} − λ·g``.

The final ``x_0`` (after the last step's update) is mapped to [0, 1] and clamped: those are
the prior-resolution images (``SynthesisResult.prior_images``); they are then fitted to the
model's input (size, channels, and the energy's ``grayscale``/``norm``) and scored once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, NamedTuple

import torch
from pydantic import AfterValidator, Field, ValidationInfo
from torch import Tensor, nn

from sharedattr.plugins.contracts import Energy, EnergyValue, SynthesisResult, Synthesizer, declared, neuron_references
from sharedattr.plugins.hookspecs import hookimpl
from sharedattr.plugins.params import (
    BASE_DIR_KEY,
    CHECK_FILES_KEY,
    MAX_SEEDS,
    Configurable,
    Params,
    Seed,
    register_components,
)
from sharedattr.plugins.specs import EnergySpec
from sharedattr.synthesis.cost import CallCounter, Stopwatch, cost_record
from sharedattr.synthesis.energies import EnergyParam, bind_many, build_energy, take_energy
from sharedattr.synthesis.preprocess import fit_to_model
from sharedattr.synthesis.prior import (
    DEFAULT_PRIOR,
    HUB_ID,
    SHIPPED_PRIORS,
    Denoised,
    Generators,
    Sample,
    Sampling,
    denoise_step,
    load_prior,
    make_scheduler,
    predict_x0,
    sample,
    sample_generators,
    to_unit,
    unclamped_unit,
    unguided_samples,
)

__all__ = [
    "EGG",
    "EGGParams",
    "EnergyGuidance",
    "GuidanceStep",
    "guidance_step",
    "make_scheduler",
    "normalise_gradient",
    "predict_x0",
    "unclamped_unit",
]


def _check_prior_source(value: str, info: ValidationInfo) -> str:
    """A shipped prior's name stays as is; a folder resolves against the config's folder and must exist; a hub id
    (``owner/name``) that is no such folder stays as is (loaded from the hub cache, :func:`~.prior.load_prior`)."""
    if value in SHIPPED_PRIORS:
        return value
    context = info.context or {}
    path = Path(value).expanduser()
    base = context.get(BASE_DIR_KEY)
    if base is not None and not path.is_absolute():
        path = Path(base) / path
    if not path.is_dir() and HUB_ID.match(value):
        return value
    if context.get(CHECK_FILES_KEY, True) and not path.is_dir():
        where = " (relative paths are resolved against the config file's folder)" if base is not None else ""
        raise ValueError(
            f"unknown diffusion prior {value!r}: neither a shipped prior ({', '.join(SHIPPED_PRIORS)}), "
            f"an existing diffusers folder{where} nor a hub id (owner/name)"
        )
    return str(path)


PriorSource = Annotated[str, AfterValidator(_check_prior_source)]


class EGGParams(Params):
    """Params of the ``egg`` synthesizer."""

    prior: PriorSource = Field(
        DEFAULT_PRIOR,
        description="The diffusion prior: a shipped prior's name (insilico-ddpm-v1; insilico-ddpm-v2, 64 px), a "
        "folder with a diffusers UNet2DModel and its scheduler config, or a Hugging Face hub id of a diffusers "
        "pipeline (e.g. google/ddpm-cifar10-32; read from the local hub cache without a network).",
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


# -- the guidance ---------------------------------------------------------------------------
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


StepScale = Callable[[Any, Any, Tensor, Tensor], Any]
"""``step_scale(λ, scheduler, t, x)``: the guidance step's length at timestep ``t`` for one group's samples ``x``."""


class EnergyGuidance:
    """EGG's guidance, which the one sampler (:func:`~.prior.sample`) calls at every step (a :class:`~.prior.Guide`).

    At each step it evaluates ``energy_fn`` (images ``[B, C, H, W]`` in [0, 1] → :class:`EnergyValue`; None: no
    energy, nothing evaluated) at ``unclamped_unit(x0_hat)``; when it is ``differentiable`` (an energy and λ =
    ``scale`` > 0; a number, or a tensor broadcastable to ``x``) it differentiates the summed energy through the
    denoiser with respect to ``x_t``, normalises that gradient (:func:`normalise_gradient` with ``normalize`` over
    ``groups`` consecutive groups, one neuron's seeds each) and returns ``λ_t · g``, the update the sampler subtracts
    from ``x_{t−1}``; ``λ_t`` is ``step_scale(λ, scheduler, t, x_t of one group)`` (None: λ at every step).

    After each step it holds that step's ``value`` (detached; None without an energy) and ``g`` (zeros when
    unguided); ``responses`` holds the response ``[B]`` (float32, CPU) of every step so far.
    """

    def __init__(
        self,
        energy_fn: Callable[[Tensor], EnergyValue] | None,
        scale: float | Tensor,
        normalize: str = "sample",
        groups: int = 1,
        step_scale: StepScale | None = None,
    ) -> None:
        self.energy_fn, self.scale, self.normalize, self.groups = energy_fn, scale, normalize, groups
        self.step_scale = step_scale
        self.differentiable = energy_fn is not None and bool(torch.as_tensor(scale).gt(0).any())
        self.value: EnergyValue | None = None
        self.g: Tensor | None = None
        self.responses: list[Tensor] = []

    def __call__(self, scheduler: Any, denoised: Denoised) -> Tensor | None:
        """The update of ``x_{t−1}`` at this step (None when not differentiable), from the denoiser's pass."""
        x = denoised.x_t
        self.value, self.g = None, torch.zeros_like(x).detach()
        if self.energy_fn is None:
            return None
        value = self.energy_fn(unclamped_unit(denoised.x0_hat))
        update = None
        if self.differentiable:
            (grad,) = torch.autograd.grad(value.energy.sum(), x)
            self.g = normalise_gradient(grad, self.normalize, self.groups).detach()
            scale = self.scale
            if self.step_scale is not None:
                scale = self.step_scale(scale, scheduler, denoised.t, x[: len(x) // self.groups])
            update = scale * self.g  # scale: a number, or a tensor broadcastable to x (per-step, per-pixel units)
        self.value = EnergyValue(value.energy.detach(), value.response.detach())
        self.responses.append(self.value.response.float().cpu())
        return update


class GuidanceStep(NamedTuple):
    """One guided step: ``x_prev`` (guided), ``x0_hat``, the energy at ``x0_hat`` (``None`` without
    an energy), and ``g`` the normalised gradient that was applied (``x_prev = step − scale·g``)."""

    x_prev: Tensor
    x0_hat: Tensor
    value: EnergyValue | None
    g: Tensor


def guidance_step(
    unet: nn.Module,
    scheduler: Any,
    x_t: Tensor,
    t: Tensor | int,
    guidance: EnergyGuidance,
    generator: Generators = None,
    eta: float = 0.0,
) -> GuidanceStep:
    """One EGG step from ``x_t`` (``[B, C, H, W]`` in the prior's [-1, 1] space) at timestep ``t``: the sampler's
    step (:func:`~.prior.denoise_step`) with ``guidance``, and what the guidance saw.

    With ``guidance.scale == 0`` the energy is only evaluated (no gradient, no denoiser backward); without an
    energy neither. The scheduler draws its noise from ``generator`` (one, or one per sample; DDPM, or DDIM with
    ``eta > 0``).
    """
    x_prev, x0_hat = denoise_step(unet, scheduler, x_t, t, generator, eta, guidance)
    return GuidanceStep(x_prev, x0_hat, guidance.value, guidance.g)


# -- priors --------------------------------------------------------------------------------
_PRIORS: dict[tuple[str, str], Any] = {}
_PRIORS_LOCK = threading.Lock()
_UNGUIDED: dict[tuple[Any, ...], Tensor] = {}
"""Unguided samples ``[n, C, H, W]`` (CPU) per (prior, sampling settings, output, n, seed): computed once a process."""


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
class EGG(Synthesizer, Configurable):
    """Energy Guided Diffusion for one neuron of an images → ``[B, N]`` model (or several, :meth:`synthesize_many`).

    Built from its validated :class:`EGGParams` (``EGG(params)``, as the registry does, passing the energy they name
    built as ``energy``) or from keywords validated by them (``EGG(steps=20, energy="meni")``). ``prior`` may also be
    given as a keyword and is then taken as is: a shipped prior's name, a diffusers folder, or an already loaded
    prior (an object with ``unet``, ``scheduler_config``, ``sample_size`` and ``channels``, as
    :class:`~.prior.DiffusionPrior`). Loaded priors are cached per (source, device). The fields the preset fills
    are resolved once: :attr:`sampling` (scheduler, steps, eta, spacing, clipping), :attr:`normalize` and
    :attr:`output`.
    """

    name = "egg"
    params_model = EGGParams
    description = (
        "Energy Guided Diffusion: a pretrained diffusion prior (DDIM/DDPM) steered at every step by the normalised "
        "gradient of an energy of its x0 estimate (mei, meni, reconstruction)."
    )
    own_generators: ClassVar[bool] = True  # every random draw from its own seeded torch.Generator
    thread_safe: ClassVar[bool] = True  # no process-global side effects: loops run side by side

    def __init__(self, params: EGGParams | None = None, **overrides: Any) -> None:
        prior = overrides.pop("prior", None)
        energy = take_energy(overrides)
        self.params = self.resolve_params(params, overrides)
        self.prior = self.params.prior if prior is None else prior
        self.energy = build_energy(self.params.energy if energy is None else energy)
        p = self.params
        chosen = {k: PRESETS[p.preset][k] if getattr(p, k) is None else getattr(p, k) for k in PRESETS[p.preset]}
        self.sampling = Sampling(chosen["scheduler"], p.steps, p.eta, chosen["timestep_spacing"], chosen["clip_x0"])
        self.normalize, self.output = chosen["normalize"], chosen["output"]

    @property
    def neuron_batch(self) -> int:
        """Neurons sampled together in one loop (:meth:`synthesize_many`)."""
        return self.params.neuron_batch

    @property
    def scheduler(self) -> str:
        """The sampler's scheduler, ``"ddim"`` or ``"ddpm"`` (the preset's where the params leave it null)."""
        return self.sampling.scheduler

    @property
    def timestep_spacing(self) -> str | None:
        return self.sampling.spacing

    @property
    def clip_x0(self) -> bool | None:
        return self.sampling.clip_x0

    def load_prior(self, device: torch.device | str = "cpu") -> Any:
        """The prior on ``device`` (cached when named by a string)."""
        if isinstance(self.prior, (str, Path)):
            return cached_prior(str(self.prior), device)
        self.prior.unet.to(device)
        return self.prior

    def step_scale(self, scale: float, scheduler: Any, t: Tensor | int, x: Tensor) -> float:
        """The guidance step's length at timestep ``t`` for one neuron's samples ``x`` ``[B, C, H, W]``: λ, times
        √D in ``"pixel"`` units (√(B·D) with batch normalisation: the unit-norm gradient spans the batch), times
        √(1 − ᾱ_t) with ``use_alpha_bar``."""
        if self.params.guidance_units == "pixel":
            scale = scale * float(x[0].numel() * (x.shape[0] if self.normalize == "batch" else 1)) ** 0.5
        if self.params.use_alpha_bar:
            scale = scale * float(1 - scheduler.alphas_cumprod[int(t)]) ** 0.5
        return scale

    def guidance(self, energy_fn: Callable[[Tensor], EnergyValue] | None, groups: int) -> EnergyGuidance:
        """This synthesizer's guidance of ``groups`` neurons' samples by ``energy_fn`` (λ = ``guidance_scale``)."""
        return EnergyGuidance(energy_fn, self.params.guidance_scale, self.normalize, groups, self.step_scale)

    def chosen_output(self, sampled: Sample) -> Tensor:
        """The returned image of a sampling run: the final sample, or the last x0 estimate (``output``)."""
        return sampled.x0_estimate if self.output == "x0_estimate" else sampled.sample

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
        references = neuron_references(neurons, references)
        n_seeds = self.params.n_seeds
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        prior = self.load_prior(device)  # once per (source, device): not part of wall_s
        stopwatch = Stopwatch()
        model_counter, unet_counter = CallCounter(model), CallCounter(prior.unet)
        guidance = self.guidance(bind_many(self.energy, model_counter, neurons, references, n_seeds), len(neurons))
        generators = [g for _ in neurons for g in sample_generators(self.params.seed, range(n_seeds))]
        prior_images = to_unit(self.chosen_output(sample(unet_counter, prior, generators, self.sampling, guidance)))
        prior_images = prior_images.float()  # clamped to [0, 1]
        fitting = declared(self.energy, Energy)
        images = fit_to_model(prior_images, model, grayscale=fitting.grayscale, norm=fitting.norm)
        index = torch.tensor(neurons, device=images.device).repeat_interleave(n_seeds)
        with torch.no_grad():
            responses = model_counter(images).gather(1, index[:, None]).squeeze(1).detach().cpu()
        cost = {k: v / len(neurons) for k, v in cost_record(model_counter, stopwatch, unet_counter).items()}
        cost |= {"steps": float(self.params.steps), "neurons_per_loop": float(len(neurons))}
        history = torch.stack(guidance.responses) if guidance.responses else torch.zeros(0, len(images))
        return [
            SynthesisResult(
                images[rows].detach().cpu(), responses[rows], history[:, rows], dict(cost), prior_images[rows].cpu()
            )
            for rows in (slice(k * n_seeds, (k + 1) * n_seeds) for k in range(len(neurons)))
        ]

    def prior_samples(self, n: int, seed: int = 0, device: torch.device | str = "cpu") -> Tensor:
        """``n`` unguided samples ``[n, C, H, W]`` in [0, 1] on the CPU: the same sampler with no energy (same
        scheduler, steps, eta, spacing, clipping and returned image; :func:`~.prior.unguided_samples`).

        Seed ``seed``'s sample ``i`` starts from the same noise as seed ``i`` of
        :meth:`synthesize` with ``seed = seed``: the unguided counterpart of each guided image.
        """
        device = torch.device(device)
        if not isinstance(self.prior, (str, Path)):  # a prior object: no name to cache its samples by
            return unguided_samples(self.load_prior(device), n, seed, self.sampling, output=self.output)
        key = (_cache_key(str(self.prior), device), self.sampling, self.output, n, seed)
        with _PRIORS_LOCK:
            cached = _UNGUIDED.get(key)
        if cached is None:  # the guidance plays no part: EGG entries that differ only in their energy share them
            cached = unguided_samples(self.load_prior(device), n, seed, self.sampling, output=self.output)
            with _PRIORS_LOCK:
                _UNGUIDED[key] = cached
        return cached.clone()


@hookimpl
def register_synthesizers(register):
    register_components(register, [EGG])
