"""Built-in synthesizer: most exciting inputs (MEIs) by gradient ascent (after sinzlab/mei).

Each step: random transform of the images (jitter, crop), energy (``mei`` by default:
``−r_n(x)``) summed over the seeds plus total-variation and Lp regularisers, backward,
precondition the gradient (Gaussian blur or Fourier 1/f damping), optimiser step, then
post-process outside autograd (fixed L2 norm around mid-grey, then clip to [0, 1]).
Optionally stops early when the objective reaches a plateau.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from sharedattr.plugins.contracts import SynthesisResult, Synthesizer
from sharedattr.plugins.hookspecs import hookimpl
from sharedattr.plugins.params import (
    MAX_OPTIMISATION_STEPS,
    MAX_SEEDS,
    Configurable,
    Params,
    Seed,
    register_components,
)
from sharedattr.plugins.specs import EnergySpec
from sharedattr.synthesis.cost import CallCounter, Stopwatch, cost_record
from sharedattr.synthesis.energies import EnergyParam, build_energy, take_energy
from sharedattr.synthesis.preconditioning import fourier_precondition, gaussian_blur, make_preconditioner
from sharedattr.synthesis.preprocess import GREY, fix_norm, model_input_shape
from sharedattr.synthesis.regularizers import lp_norm, total_variation
from sharedattr.synthesis.transforms import RandomTransform

__all__ = ["GradientAscent", "GradientAscentParams", "fourier_precondition", "gaussian_blur"]


class GradientAscentParams(Params):
    """Params of the ``gradient_ascent`` synthesizer (pixel units: images in [0, 1])."""

    steps: int = Field(200, ge=1, le=MAX_OPTIMISATION_STEPS, description="Maximum number of optimisation steps.")
    lr: float = Field(0.05, gt=0, description="Learning rate (images are in [0, 1] pixel units).")
    optimizer: Literal["adamw", "sgd"] = Field("adamw", description="Optimiser (AdamW without weight decay, or SGD).")
    energy: EnergyParam = Field(
        EnergySpec(name="mei"),
        description="The energy minimised: a registered energy's name or {name = ..., **params} (default mei).",
    )
    precondition: Literal["blur", "fourier", "none"] = Field(
        "blur", description="Gradient preconditioning: Gaussian blur, Fourier 1/f^decay damping, or none."
    )
    blur_sigma: float = Field(
        1.0, ge=0, description="Std of the gradient blur in pixels (precondition = blur; 0 = off)."
    )
    fourier_decay: float = Field(
        1.0, ge=0, description="Exponent of the Fourier damping 1/f^decay (precondition = fourier; 0 = off)."
    )
    jitter: int = Field(0, ge=0, description="Random shift (roll) of the images by up to this many pixels each step.")
    crop_scale: float | None = Field(
        None,
        gt=0,
        le=1,
        description="Random crop of this fraction of the height and width each step, resized back (null = off).",
    )
    tv_weight: float = Field(
        0.0, ge=0, description="Weight of the total-variation regulariser (mean |neighbour diff|)."
    )
    lp_weight: float = Field(0.0, ge=0, description="Weight of the regulariser ‖x − 0.5‖_p.")
    lp_p: float = Field(2.0, ge=1, description="The p of the Lp regulariser.")
    norm: float | None = Field(None, gt=0, description="Fix the L2 norm of (x − 0.5) after every step (null = off).")
    clip: bool = Field(True, description="Clip pixels to [0, 1] after every step (after the norm).")
    patience: int | None = Field(
        None,
        ge=1,
        description="Stop early after this many consecutive steps without improvement of the objective (null = off).",
    )
    min_delta: float = Field(
        1e-3, ge=0, description="Smallest improvement of the objective that counts, relative to |best objective|."
    )
    n_seeds: int = Field(
        1, ge=1, le=MAX_SEEDS, description="Independent random initialisations, optimised as one batch."
    )
    seed: Seed = Field(0, description="Seed of the initialisation and of the random transforms.")
    init_std: float = Field(0.1, ge=0, description="Std of the random-normal initialisation around mid-grey.")


class GradientAscent(Synthesizer, Configurable):
    """Gradient-ascent MEI synthesis for one neuron of an images → ``[B, N]`` model.

    Built from its validated :class:`GradientAscentParams` (``GradientAscent(params)``, as the registry does,
    passing the energy they name built as ``energy``) or from keywords validated by them
    (``GradientAscent(steps=50, precondition="fourier")``). Returns images ``[n_seeds, C, H, W]`` at the model's
    ``input_size``/``in_channels`` (the last iterate), their responses, the neuron's response at every step
    ``[steps_run, n_seeds]`` and the cost (forward/backward calls, wall time, ``steps``).
    """

    name = "gradient_ascent"
    params_model = GradientAscentParams
    description = (
        "MEI by gradient ascent on an energy: AdamW/SGD, blur or Fourier preconditioning, jitter/crop, TV and Lp "
        "regularisers, fixed norm, clipping, early stopping."
    )
    own_generators: ClassVar[bool] = True  # every random draw from its own seeded torch.Generator
    thread_safe: ClassVar[bool] = True  # no process-global side effects: loops run side by side

    def __init__(self, params: GradientAscentParams | None = None, **overrides: Any) -> None:
        energy = take_energy(overrides)
        self.params = self.resolve_params(params, overrides)
        self.energy = build_energy(self.params.energy if energy is None else energy)
        p = self.params
        self.precondition = make_preconditioner(p.precondition, blur_sigma=p.blur_sigma, fourier_decay=p.fourier_decay)

    def _postprocess(self, x: Tensor) -> Tensor:
        if self.params.norm is not None:
            x = fix_norm(x, self.params.norm)
        if self.params.clip:
            x = x.clamp(0.0, 1.0)
        return x

    def _objective(self, energy: Tensor, images: Tensor) -> Tensor:
        p = self.params
        loss = energy.sum()
        if p.tv_weight > 0:
            loss = loss + p.tv_weight * total_variation(images).sum()
        if p.lp_weight > 0:
            loss = loss + p.lp_weight * lp_norm(images, p.lp_p).sum()
        return loss

    def _start(self, model: nn.Module) -> tuple[Tensor, RandomTransform, torch.optim.Optimizer]:
        """The first iterate ``[n_seeds, C, H, W]`` (mid-grey plus seeded noise, post-processed, on the model's
        device, requiring grad), the random transform drawing from the same generator, and the optimiser."""
        p = self.params
        channels, h, w = model_input_shape(model)
        device = next((q.device for q in model.parameters()), torch.device("cpu"))
        generator = torch.Generator().manual_seed(p.seed)
        x0 = GREY + p.init_std * torch.randn(p.n_seeds, channels, h, w, generator=generator)
        x = self._postprocess(x0).to(device).requires_grad_(True)
        transform = RandomTransform(p.jitter, p.crop_scale, generator)
        if p.optimizer == "adamw":
            return x, transform, torch.optim.AdamW([x], lr=p.lr, weight_decay=0.0)
        return x, transform, torch.optim.SGD([x], lr=p.lr)

    def synthesize(self, model: nn.Module, neuron: int, *, reference: Tensor | None = None) -> SynthesisResult:
        """Images ``[n_seeds, C, H, W]`` that minimise the energy for output ``neuron`` of ``model``."""
        p = self.params
        stopwatch = Stopwatch()
        counter = CallCounter(model)
        energy_fn = self.energy.bind(counter, neuron, reference)
        x, transform, opt = self._start(model)
        history: list[Tensor] = []
        best, stale = float("inf"), 0
        for _ in range(p.steps):
            opt.zero_grad(set_to_none=True)
            value = energy_fn(transform(x))
            loss = self._objective(value.energy, x)
            loss.backward()
            history.append(value.response.detach().cpu())
            with torch.no_grad():
                x.grad = self.precondition(x.grad)
            opt.step()
            with torch.no_grad():
                x.copy_(self._postprocess(x))
            if p.patience is not None:
                current = loss.item()
                if best == float("inf") or current < best - p.min_delta * abs(best):
                    best, stale = current, 0
                else:
                    stale += 1
                    if stale >= p.patience:
                        break

        images = x.detach()
        with torch.no_grad():
            responses = counter(images)[:, neuron].detach().cpu()
        cost = cost_record(counter, stopwatch) | {"steps": float(len(history))}
        return SynthesisResult(images.cpu(), responses, torch.stack(history), cost)


@hookimpl
def register_synthesizers(register):
    register_components(register, [GradientAscent])
