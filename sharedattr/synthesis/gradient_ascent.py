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

from sharedattr.plugins.contracts import SynthesisResult
from sharedattr.plugins.hookspecs import hookimpl
from sharedattr.plugins.params import MAX_OPTIMISATION_STEPS, MAX_SEEDS, Params, Seed
from sharedattr.plugins.specs import EnergySpec
from sharedattr.synthesis.cost import CallCounter, Stopwatch, cost_record
from sharedattr.synthesis.energies import EnergyParam, build_energy
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


class GradientAscent:
    """Gradient-ascent MEI synthesis for one neuron of an images → ``[B, N]`` model.

    Returns images ``[n_seeds, C, H, W]`` at the model's ``input_size``/``in_channels``
    (the last iterate), their responses, the neuron's response at every step
    ``[steps_run, n_seeds]`` and the cost (forward/backward calls, wall time, ``steps``).
    """

    own_generators: ClassVar[bool] = True  # every random draw from its own seeded torch.Generator
    thread_safe: ClassVar[bool] = True  # no process-global side effects: loops run side by side

    def __init__(
        self,
        steps: int = 200,
        lr: float = 0.05,
        optimizer: str = "adamw",
        energy: EnergySpec | str | dict[str, Any] = "mei",
        precondition: str = "blur",
        blur_sigma: float = 1.0,
        fourier_decay: float = 1.0,
        jitter: int = 0,
        crop_scale: float | None = None,
        tv_weight: float = 0.0,
        lp_weight: float = 0.0,
        lp_p: float = 2.0,
        norm: float | None = None,
        clip: bool = True,
        patience: int | None = None,
        min_delta: float = 1e-3,
        n_seeds: int = 1,
        seed: int = 0,
        init_std: float = 0.1,
    ) -> None:
        self.steps, self.lr, self.optimizer = steps, lr, optimizer
        self.energy = build_energy(energy)
        self.precondition = make_preconditioner(precondition, blur_sigma=blur_sigma, fourier_decay=fourier_decay)
        self.jitter, self.crop_scale = jitter, crop_scale
        self.tv_weight, self.lp_weight, self.lp_p = tv_weight, lp_weight, lp_p
        self.norm, self.clip = norm, clip
        self.patience, self.min_delta = patience, min_delta
        self.n_seeds, self.seed, self.init_std = n_seeds, seed, init_std

    def _postprocess(self, x: Tensor) -> Tensor:
        if self.norm is not None:
            x = fix_norm(x, self.norm)
        if self.clip:
            x = x.clamp(0.0, 1.0)
        return x

    def _objective(self, energy: Tensor, images: Tensor) -> Tensor:
        loss = energy.sum()
        if self.tv_weight > 0:
            loss = loss + self.tv_weight * total_variation(images).sum()
        if self.lp_weight > 0:
            loss = loss + self.lp_weight * lp_norm(images, self.lp_p).sum()
        return loss

    def synthesize(self, model: nn.Module, neuron: int, *, reference: Tensor | None = None) -> SynthesisResult:
        """Images ``[n_seeds, C, H, W]`` that minimise the energy for output ``neuron`` of ``model``."""
        stopwatch = Stopwatch()
        counter = CallCounter(model)
        energy_fn = self.energy.bind(counter, neuron, reference)
        channels, h, w = model_input_shape(model)
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        generator = torch.Generator().manual_seed(self.seed)
        x0 = GREY + self.init_std * torch.randn(self.n_seeds, channels, h, w, generator=generator)
        x = self._postprocess(x0).to(device).requires_grad_(True)
        transform = RandomTransform(self.jitter, self.crop_scale, generator)
        if self.optimizer == "adamw":
            opt: torch.optim.Optimizer = torch.optim.AdamW([x], lr=self.lr, weight_decay=0.0)
        else:
            opt = torch.optim.SGD([x], lr=self.lr)

        history: list[Tensor] = []
        best, stale = float("inf"), 0
        for _ in range(self.steps):
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
            if self.patience is not None:
                current = loss.item()
                if best == float("inf") or current < best - self.min_delta * abs(best):
                    best, stale = current, 0
                else:
                    stale += 1
                    if stale >= self.patience:
                        break

        images = x.detach()
        with torch.no_grad():
            responses = counter(images)[:, neuron].detach().cpu()
        cost = cost_record(counter, stopwatch) | {"steps": float(len(history))}
        return SynthesisResult(images.cpu(), responses, torch.stack(history), cost)


@hookimpl
def register_synthesizers(register):
    register(
        "gradient_ascent",
        GradientAscent,
        params=GradientAscentParams,
        description="MEI by gradient ascent on an energy: AdamW/SGD, blur or Fourier preconditioning, "
        "jitter/crop, TV and Lp regularisers, fixed norm, clipping, early stopping.",
    )
