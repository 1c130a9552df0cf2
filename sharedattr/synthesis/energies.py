"""Built-in energies: what synthesizers minimise.

Every energy fits the images to the model first (:func:`~.preprocess.fit_to_model`:
resize, optional grayscale, optional fixed contrast norm), so a diffusion prior's
64 × 64 grey samples can drive a 224 × 224 RGB model.

- ``mei``: ``E(x) = −r_n(x)``, the most exciting input.
- ``meni``: the same energy, meant for a low guidance scale (1–10) so that a diffusion
  prior keeps the images natural: the most exciting *natural* image.
- ``reconstruction``: ``E(x) = mean_k (r_k(x) − r_k(x_ref))²`` over the population (or the
  neurons listed), the images whose predicted responses match those to a reference image
  (by default the neuron's best natural image).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Any

import torch
from pydantic import AfterValidator, Field, ValidationInfo
from torch import Tensor, nn

from sharedattr.plugins.contracts import Energy, EnergyValue
from sharedattr.plugins.hookspecs import hookimpl
from sharedattr.plugins.loading import get_registry
from sharedattr.plugins.params import Params
from sharedattr.plugins.specs import REGISTRY_KEY, EnergySpec
from sharedattr.runtime.errors import SpecError
from sharedattr.synthesis.preprocess import fit_to_model


def _check_energy_spec(spec: EnergySpec, info: ValidationInfo) -> EnergySpec:
    """Validate a nested energy spec (its name and its params) against the registry the outer spec is validated
    with (the process-wide one outside a validation)."""
    registry = (info.context or {}).get(REGISTRY_KEY) or get_registry()
    try:
        spec.validated_params(registry)
    except SpecError as err:
        raise ValueError("; ".join(str(i) for i in err.issues)) from None
    return spec


EnergyParam = Annotated[EnergySpec, AfterValidator(_check_energy_spec)]
"""A synthesizer param naming a registered energy: ``"mei"`` or ``{name = "reconstruction", neurons = [0, 2]}``.
Built through the registry, the synthesizer receives the energy built."""


def build_energy(energy: Energy | EnergySpec | str | dict[str, Any]) -> Energy:
    """An energy: ``energy`` itself when already built (it has ``bind``), else built from its spec (a name, a
    mapping or an :class:`EnergySpec`) by the process-wide registry."""
    if callable(getattr(energy, "bind", None)):
        return energy
    return EnergySpec.model_validate(energy).build(get_registry())


def bind_many(
    energy: Energy, model: nn.Module, neurons: Sequence[int], references: Sequence[Tensor | None], group: int
) -> Callable[[Tensor], EnergyValue]:
    """The energy of a batch of ``len(neurons)`` consecutive groups of ``group`` images, group ``k`` for output
    ``neurons[k]`` (with ``references[k]``).

    An energy with its own ``bind_many`` (e.g. :class:`MEIEnergy`: one model pass for every group) is used as is;
    any other is bound once per neuron and evaluated on its group's rows.
    """
    if callable(getattr(energy, "bind_many", None)):
        return energy.bind_many(model, neurons, references, group)
    bound = [energy.bind(model, n, r) for n, r in zip(neurons, references)]
    if len(bound) == 1:
        return bound[0]

    def evaluate(images: Tensor) -> EnergyValue:
        values = [fn(images[k * group : (k + 1) * group]) for k, fn in enumerate(bound)]
        return EnergyValue(torch.cat([v.energy for v in values]), torch.cat([v.response for v in values]))

    return evaluate


class PreprocessParams(Params):
    """How images are fitted to the model before the energy is evaluated."""

    grayscale: bool = Field(False, description="Reduce colour images to luminance before the model sees them.")
    norm: float | None = Field(
        None, gt=0, description="Fix the contrast norm ‖x − 0.5‖₂ of the model's input (pixel units; null = off)."
    )


class MEIEnergy:
    """``E(x) = −r_n(fit(x))``: lower energy, stronger response."""

    def __init__(self, grayscale: bool = False, norm: float | None = None) -> None:
        self.grayscale, self.norm = grayscale, norm

    def bind(self, model: nn.Module, neuron: int, reference: Tensor | None = None) -> Callable[[Tensor], EnergyValue]:
        def energy(images: Tensor) -> EnergyValue:
            response = model(fit_to_model(images, model, grayscale=self.grayscale, norm=self.norm))[:, neuron]
            return EnergyValue(-response, response)

        return energy

    def bind_many(
        self, model: nn.Module, neurons: Sequence[int], references: Sequence[Tensor | None], group: int
    ) -> Callable[[Tensor], EnergyValue]:
        """:func:`bind_many`: one model pass for all groups, row ``i`` scored for neuron ``neurons[i // group]``."""
        index = torch.tensor([int(n) for n in neurons]).repeat_interleave(group)

        def energy(images: Tensor) -> EnergyValue:
            responses = model(fit_to_model(images, model, grayscale=self.grayscale, norm=self.norm))
            response = responses.gather(1, index.to(responses.device)[:, None]).squeeze(1)
            return EnergyValue(-response, response)

        return energy


class ReconstructionParams(PreprocessParams):
    neurons: list[int] | None = Field(
        None, description="Output indices of the population to match (null = every output of the model)."
    )


class ReconstructionEnergy:
    """``E(x) = mean_k (r_k(fit(x)) − r_k(fit(x_ref)))²`` over the population ``k``."""

    def __init__(self, grayscale: bool = False, norm: float | None = None, neurons: list[int] | None = None) -> None:
        self.grayscale, self.norm, self.neurons = grayscale, norm, neurons

    def bind(self, model: nn.Module, neuron: int, reference: Tensor | None = None) -> Callable[[Tensor], EnergyValue]:
        if reference is None:
            raise ValueError(
                "the reconstruction energy needs a reference image: the caller passes the neuron's "
                "best natural image (sharedattr run/synthesize do)"
            )
        fit = lambda x: fit_to_model(x, model, grayscale=self.grayscale, norm=self.norm)  # noqa: E731
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        with torch.no_grad():
            target = model(fit(reference[None].to(device)))[0]
        n = target.shape[0]
        if self.neurons is not None and not all(0 <= k < n for k in self.neurons):
            raise ValueError(f"reconstruction neurons {self.neurons} must be output indices in [0, {n})")
        index = torch.tensor(self.neurons if self.neurons is not None else range(n), device=device)
        target = target[index]

        def energy(images: Tensor) -> EnergyValue:
            responses = model(fit(images))
            return EnergyValue(((responses[:, index] - target) ** 2).mean(1), responses[:, neuron])

        return energy


@hookimpl
def register_energies(register):
    register(
        "mei",
        MEIEnergy,
        params=PreprocessParams,
        description="−r_n(x): the most exciting input (after resize, optional grayscale and fixed norm).",
    )
    register(
        "meni",
        MEIEnergy,
        params=PreprocessParams,
        description="−r_n(x) with a diffusion prior at low guidance (1–10): the most exciting natural image.",
    )
    register(
        "reconstruction",
        ReconstructionEnergy,
        params=ReconstructionParams,
        description="Mean squared error between the population's responses and those to a reference image.",
    )
