"""Built-in synthesizer: most exciting inputs (MEIs) by gradient ascent (after sinzlab/mei).

Each step: random transform of the images (jitter, crop), energy (``mei`` by default:
``−r_n(x)``) summed over the seeds plus total-variation and Lp regularisers, backward,
precondition the gradient (Gaussian blur or Fourier 1/f damping), optimiser step, then
post-process outside autograd (fixed L2 norm around mid-grey, then clip to [0, 1]).
Optionally stops early when the objective reaches a plateau.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from sharedattr.plugins.contracts import SynthesisResult, Synthesizer, neuron_references
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
from sharedattr.synthesis.energies import EnergyParam, bind_many, build_energy, take_energy
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
    neuron_batch: int = Field(
        1,
        ge=1,
        le=1024,
        description="Neurons optimised together in one loop (their n_seeds images share every model pass), as egg's "
        "neuron_batch; 1 = one neuron at a time. The results equal one at a time up to float rounding of the larger "
        "batch.",
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

    @property
    def neuron_batch(self) -> int:
        """Neurons optimised together in one loop (:meth:`synthesize_many`)."""
        return self.params.neuron_batch

    def _postprocess(self, x: Tensor) -> Tensor:
        if self.params.norm is not None:
            x = fix_norm(x, self.params.norm)
        if self.params.clip:
            x = x.clamp(0.0, 1.0)
        return x

    def _group_losses(self, energy: Tensor, images: Tensor, groups: int) -> Tensor:
        """The objective ``[groups]`` of each neuron's seeds: the summed energy ``[groups · S]`` plus the TV and Lp
        regularisers of their images ``[groups · S, C, H, W]`` (what one neuron alone minimises)."""
        p = self.params
        loss = energy.view(groups, -1).sum(1)
        if p.tv_weight > 0:
            loss = loss + p.tv_weight * total_variation(images).view(groups, -1).sum(1)
        if p.lp_weight > 0:
            loss = loss + p.lp_weight * lp_norm(images, p.lp_p).view(groups, -1).sum(1)
        return loss

    def _start(self, model: nn.Module) -> tuple[Tensor, RandomTransform, torch.optim.Optimizer]:
        """The first iterate ``[n_seeds, C, H, W]`` (mid-grey plus seeded noise, post-processed, on the model's
        device, requiring grad), the random transform drawing from the same generator, and the optimiser.
        Every neuron starts from its own call: the same start, draws and optimiser state as alone."""
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
        return self.synthesize_many(model, [neuron], references=[reference])[0]

    def synthesize_many(
        self, model: nn.Module, neurons: Sequence[int], *, references: Sequence[Tensor | None] | None = None
    ) -> list[SynthesisResult]:
        """:meth:`synthesize` for several neurons in one optimisation loop: every step forwards (and backpropagates)
        their ``n_seeds`` images each as one batch ``[len(neurons) · n_seeds, C, H, W]``.

        Each neuron keeps its own iterate, optimiser, random transforms (from its own generator seeded ``seed``)
        and plateau counter, so its images equal :meth:`synthesize` of that neuron alone up to float rounding of
        the larger batch (images do not interact: the model is in eval mode). A neuron that reaches its plateau
        stops: its iterate is frozen, its history ends, and it is still forwarded (not backpropagated) until the
        loop's last neuron stops. Each result's cost is the loop's divided by the number of neurons (as ``egg``);
        ``steps`` is the neuron's own.

        Example::

            ga = GradientAscent(steps=100, n_seeds=3, neuron_batch=8)
            results = ga.synthesize_many(model, [0, 4, 7])   # one loop, 9 images per step
            results[1].images.shape                           # [3, C, H, W], neuron 4's
        """
        return self._optimise(model, [int(n) for n in neurons], neuron_references(neurons, references), None)

    def iterates_at(
        self, model: nn.Module, neuron: int, steps: Sequence[int], *, reference: Tensor | None = None
    ) -> Tensor:
        """The iterates ``[n_seeds, C, H, W]`` of :meth:`synthesize` of ``neuron``, seed ``s`` after ``steps[s]``
        updates (0: the start): the images whose response ``history[steps[s], s]`` records (before that step's
        random transform). Runs the same loop again (alone) until the largest of ``steps``, keeping one image per
        seed; a seed asked past the plateau stop gets the last iterate."""
        if len(steps) != self.params.n_seeds:
            raise ValueError(f"{self.params.n_seeds} seeds but {len(steps)} steps")
        return self._optimise(model, [int(neuron)], [reference], [int(k) for k in steps])

    def _optimise(
        self, model: nn.Module, neurons: list[int], references: list[Tensor | None], capture: list[int] | None
    ) -> Any:
        """The loop of :meth:`synthesize_many`; with ``capture`` (one neuron), the iterate of seed ``s`` after
        ``capture[s]`` updates ``[n_seeds, C, H, W]`` instead, the loop ending at the largest."""
        p = self.params
        stopwatch = Stopwatch()
        counter = CallCounter(model)
        energy_fn = bind_many(self.energy, counter, neurons, references, p.n_seeds)
        loops = [self._start(model) for _ in neurons]
        histories: list[list[Tensor]] = [[] for _ in neurons]
        plateaus = [_Plateau(p.patience, p.min_delta) for _ in neurons]
        kept = None if capture is None else loops[0][0].detach().clone()
        last = p.steps if capture is None else min(p.steps, max(capture))
        for step in range(last):
            if kept is not None:
                for s, k in enumerate(capture):
                    if k == step:
                        kept[s] = loops[0][0].detach()[s]
            active = [not plateau.stopped for plateau in plateaus]
            if not any(active):
                break
            for (_, _, opt), on in zip(loops, active):
                if on:
                    opt.zero_grad(set_to_none=True)
            current = [x if on else x.detach() for (x, _, _), on in zip(loops, active)]  # a stopped one: frozen
            value = energy_fn(torch.cat([t(x) if on else x for x, (_, t, _), on in zip(current, loops, active)]))
            losses = self._group_losses(value.energy, torch.cat(current), len(neurons))
            losses.sum().backward()
            responses = value.response.detach().cpu().view(len(neurons), -1)
            for k, ((x, _, opt), on) in enumerate(zip(loops, active)):
                if not on:
                    continue
                histories[k].append(responses[k])
                with torch.no_grad():
                    x.grad = self.precondition(x.grad)
                opt.step()
                with torch.no_grad():
                    x.copy_(self._postprocess(x))
                plateaus[k].update(losses[k].item())
        if kept is not None:
            for s, k in enumerate(capture):
                if k >= len(histories[0]):
                    kept[s] = loops[0][0].detach()[s]
            return kept.cpu()

        images = torch.cat([x.detach() for x, _, _ in loops])
        index = torch.tensor(neurons, device=images.device).repeat_interleave(p.n_seeds)
        with torch.no_grad():
            responses = counter(images).gather(1, index[:, None]).squeeze(1).detach().cpu()
        cost = {k: v / len(neurons) for k, v in cost_record(counter, stopwatch).items()}
        cost["neurons_per_loop"] = float(len(neurons))
        rows = [slice(k * p.n_seeds, (k + 1) * p.n_seeds) for k in range(len(neurons))]
        return [
            SynthesisResult(images[r].cpu(), responses[r], torch.stack(h), cost | {"steps": float(len(h))})
            for r, h in zip(rows, histories)
        ]


class _Plateau:
    """The plateau stop of one neuron: ``stopped`` after ``patience`` consecutive objectives without an improvement
    of ``min_delta`` relative to the best (never with ``patience`` None)."""

    def __init__(self, patience: int | None, min_delta: float) -> None:
        self.patience, self.min_delta = patience, min_delta
        self.best, self.stale, self.stopped = float("inf"), 0, False

    def update(self, current: float) -> None:
        if self.patience is None:
            return
        if self.best == float("inf") or current < self.best - self.min_delta * abs(self.best):
            self.best, self.stale = current, 0
        else:
            self.stale += 1
            self.stopped = self.stale >= self.patience


@hookimpl
def register_synthesizers(register):
    register_components(register, [GradientAscent])
