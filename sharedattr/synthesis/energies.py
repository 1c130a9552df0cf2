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

from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any

import torch
from pydantic import AfterValidator, Field, ValidationInfo
from torch import Tensor, nn

from sharedattr.plugins.contracts import Energy, EnergyValue, declared
from sharedattr.plugins.hookspecs import hookimpl
from sharedattr.plugins.loading import get_registry
from sharedattr.plugins.params import Configurable, Params, register_components
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


def build_energy(energy: Energy | EnergySpec | str | Mapping[str, Any]) -> Energy:
    """An energy: built from its spec (a name, a mapping or an :class:`EnergySpec`) by the process-wide registry, or
    ``energy`` itself when it is already built."""
    if isinstance(energy, (str, Mapping, EnergySpec)):
        return EnergySpec.model_validate(energy).build(get_registry())
    return energy


def take_energy(overrides: dict[str, Any]) -> Energy | None:
    """The built energy among a synthesizer's keyword ``overrides`` (removed from them), or None.

    The registry passes the energy a synthesizer's params name built, as ``energy``; a Python caller may pass one
    too. A spec there (a name, a mapping or an :class:`EnergySpec`) stays, for the params model to validate.
    """
    energy = overrides.get("energy")
    if energy is None or isinstance(energy, (str, Mapping, EnergySpec)):
        return None
    return overrides.pop("energy")


def bind_many(
    energy: Energy, model: nn.Module, neurons: Sequence[int], references: Sequence[Tensor | None], group: int
) -> Callable[[Tensor], EnergyValue]:
    """The energy of a batch of ``len(neurons)`` consecutive groups of ``group`` images, group ``k`` for output
    ``neurons[k]`` (with ``references[k]``): the energy's own ``bind_many`` (e.g. :class:`MEIEnergy`: one model pass
    for every group), else :meth:`Energy.bind_many`'s default (bound once per neuron), for a plugin's energy that does
    not subclass :class:`Energy` too (:func:`~sharedattr.plugins.contracts.declared` binds it to the energy)."""
    return declared(energy, Energy).bind_many(model, neurons, references, group)


class PreprocessParams(Params):
    """How images are fitted to the model before the energy is evaluated."""

    grayscale: bool = Field(False, description="Reduce colour images to luminance before the model sees them.")
    norm: float | None = Field(
        None, gt=0, description="Fix the contrast norm ‖x − 0.5‖₂ of the model's input (pixel units; null = off)."
    )


class FittingEnergy(Energy, Configurable):
    """Base of the built-in energies: params with :class:`PreprocessParams`' fields, which say how images are fitted
    to the model (``grayscale``, ``norm``, read by :func:`~.preprocess.fit_to_model`)."""

    params_model = PreprocessParams

    def __init__(self, params: PreprocessParams | None = None, **overrides: Any) -> None:
        self.params = self.resolve_params(params, overrides)

    @property
    def grayscale(self) -> bool:
        return self.params.grayscale

    @property
    def norm(self) -> float | None:
        return self.params.norm

    def fit(self, images: Tensor, model: nn.Module) -> Tensor:
        """Images ``[B, C, H, W]`` in [0, 1] → the model's input (:func:`~.preprocess.fit_to_model`)."""
        return fit_to_model(images, model, grayscale=self.grayscale, norm=self.norm)


class MEIEnergy(FittingEnergy):
    """``E(x) = −r_n(fit(x))``: lower energy, stronger response."""

    name = "mei"
    description = "−r_n(x): the most exciting input (after resize, optional grayscale and fixed norm)."

    def bind(self, model: nn.Module, neuron: int, reference: Tensor | None = None) -> Callable[[Tensor], EnergyValue]:
        def energy(images: Tensor) -> EnergyValue:
            response = model(self.fit(images, model))[:, neuron]
            return EnergyValue(-response, response)

        return energy

    def bind_many(
        self, model: nn.Module, neurons: Sequence[int], references: Sequence[Tensor | None], group: int
    ) -> Callable[[Tensor], EnergyValue]:
        """:func:`bind_many`: one model pass for all groups, row ``i`` scored for neuron ``neurons[i // group]``."""
        index = torch.tensor([int(n) for n in neurons]).repeat_interleave(group)

        def energy(images: Tensor) -> EnergyValue:
            responses = model(self.fit(images, model))
            response = responses.gather(1, index.to(responses.device)[:, None]).squeeze(1)
            return EnergyValue(-response, response)

        return energy


class MENIEnergy(MEIEnergy):
    """``mei``'s energy under the name ``meni``: meant for a diffusion prior at low guidance (1–10)."""

    name = "meni"
    description = "−r_n(x) with a diffusion prior at low guidance (1–10): the most exciting natural image."


class ReconstructionParams(PreprocessParams):
    neurons: list[int] | None = Field(
        None, description="Output indices of the population to match (null = every output of the model)."
    )


class ReconstructionEnergy(FittingEnergy):
    """``E(x) = mean_k (r_k(fit(x)) − r_k(fit(x_ref)))²`` over the population ``k``."""

    name = "reconstruction"
    params_model = ReconstructionParams
    description = "Mean squared error between the population's responses and those to a reference image."

    @property
    def neurons(self) -> list[int] | None:
        return self.params.neurons

    def bind(self, model: nn.Module, neuron: int, reference: Tensor | None = None) -> Callable[[Tensor], EnergyValue]:
        if reference is None:
            raise ValueError(
                "the reconstruction energy needs a reference image: the caller passes the neuron's "
                "best natural image (sharedattr run/synthesize do)"
            )
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        with torch.no_grad():
            target = model(self.fit(reference[None].to(device), model))[0]
        n = target.shape[0]
        if self.neurons is not None and not all(0 <= k < n for k in self.neurons):
            raise ValueError(f"reconstruction neurons {self.neurons} must be output indices in [0, {n})")
        index = torch.tensor(self.neurons if self.neurons is not None else range(n), device=device)
        target = target[index]

        def energy(images: Tensor) -> EnergyValue:
            responses = model(self.fit(images, model))
            return EnergyValue(((responses[:, index] - target) ** 2).mean(1), responses[:, neuron])

        return energy


@hookimpl
def register_energies(register):
    register_components(register, [MEIEnergy, MENIEnergy, ReconstructionEnergy])
