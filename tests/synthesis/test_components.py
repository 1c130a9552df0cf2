"""Synthesizers and energies as components: built from their params model, and the contract bases' defaults."""

from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn

from sharedattr.experiment.synthesize import neuron_loops
from sharedattr.plugins.contracts import (
    Energy,
    EnergyValue,
    SynthesisResult,
    Synthesizer,
    declared,
    neurons_per_loop,
)
from sharedattr.plugins.loading import load_registry
from sharedattr.synthesis.egg import EGG, EGGParams
from sharedattr.synthesis.energies import MEIEnergy, MENIEnergy, ReconstructionEnergy, bind_many, build_energy
from sharedattr.synthesis.gradient_ascent import GradientAscent, GradientAscentParams
from sharedattr.testing import tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(
    "cls", [GradientAscent, EGG, MEIEnergy, MENIEnergy, ReconstructionEnergy], ids=lambda c: c.__name__
)
def test_a_component_class_is_registered_with_its_params_model_and_no_default_in_its_signature(cls):
    kind = "energy" if issubclass(cls, Energy) else "synthesizer"
    component = load_registry().get(kind, cls.name)
    assert component.factory is cls and component.params is cls.params_model
    assert component.description == cls.description
    parameters = inspect.signature(cls.__init__).parameters
    assert list(parameters) == ["self", "params", "overrides"]  # every default lives in the params model


def test_params_keywords_and_the_registry_build_the_same_synthesizer(registry):
    by_model = GradientAscent(GradientAscentParams(steps=3, precondition="fourier"))
    by_keywords = GradientAscent(steps=3, precondition="fourier")
    by_registry = registry.build("synthesizer", "gradient_ascent", steps=3, precondition="fourier")
    assert by_model.params == by_keywords.params == by_registry.params
    assert GradientAscent().params == GradientAscentParams()
    assert EGG(prior="unused").params.model_dump(exclude={"prior"}) == EGGParams().model_dump(exclude={"prior"})
    with pytest.raises(ValueError, match="lr"):  # the params model's constraint, checked once
        GradientAscent(lr=-1.0)
    with pytest.raises(TypeError, match="GradientAscentParams"):
        GradientAscent(EGGParams())


def test_an_energy_named_by_the_params_arrives_built(registry):
    synth = registry.build("synthesizer", "gradient_ascent", energy={"name": "reconstruction", "neurons": [0, 2]})
    assert isinstance(synth.energy, ReconstructionEnergy) and synth.energy.neurons == [0, 2]
    assert synth.params.energy.name == "reconstruction"
    egg = registry.build("synthesizer", "egg", energy={"name": "meni", "norm": 3.0})
    assert isinstance(egg.energy, MENIEnergy) and egg.energy.norm == 3.0
    mine = MEIEnergy(grayscale=True)
    assert GradientAscent(energy=mine).energy is mine  # a built energy passed from Python is used as is
    assert isinstance(GradientAscent(energy="reconstruction").energy, ReconstructionEnergy)  # a spec is built
    assert isinstance(build_energy({"name": "mei", "norm": 2.0}), MEIEnergy) and build_energy(mine) is mine


class PlainSynthesizer:
    """A plugin's synthesizer that subclasses nothing: the bases' defaults apply through ``declared``."""

    neuron_batch = 4  # without a synthesize_many of its own, it still samples one neuron at a time

    def synthesize(self, model, neuron, *, reference=None):
        images = torch.full((1, 3, 16, 16), 0.5)
        with torch.no_grad():
            responses = model(images)[:, neuron]
        return SynthesisResult(images, responses, responses[None], {"steps": 1.0})


class BatchingSynthesizer(PlainSynthesizer):
    def synthesize_many(self, model, neurons, *, references=None):
        return [self.synthesize(model, n) for n in neurons]


def test_plugin_synthesizers_get_the_bases_defaults():
    plain, batching = PlainSynthesizer(), BatchingSynthesizer()
    assert neurons_per_loop(plain) == 1 and neuron_loops(plain, [5, 1, 7]) == [[5], [1], [7]]
    assert neurons_per_loop(batching) == 4 and neuron_loops(batching, [5, 1, 7, 3, 9]) == [[5, 1, 7, 3], [9]]
    members = declared(plain, Synthesizer)
    assert (members.own_generators, members.thread_safe, members.prior_samples) == (False, False, None)
    model = tiny_model()
    results = members.synthesize_many(model, [2, 0])  # the base's default: synthesize, neuron by neuron
    assert [float(r.responses[0]) for r in results] == [float(plain.synthesize(model, n).responses[0]) for n in (2, 0)]
    assert neurons_per_loop(EGG(prior="unused", neuron_batch=3)) == 3 and neurons_per_loop(GradientAscent()) == 1
    assert declared(GradientAscent(), Synthesizer).prior_samples is None
    assert callable(declared(EGG(prior="unused"), Synthesizer).prior_samples)


class PlainEnergy:
    """A plugin's energy that subclasses nothing and has no bind_many."""

    def bind(self, model: nn.Module, neuron: int, reference=None):
        def energy(images):
            response = model(images)[:, neuron]
            return EnergyValue(-response, response)

        return energy


@pytest.mark.parametrize("energy", [PlainEnergy(), ReconstructionEnergy(), MEIEnergy()], ids=type)
def test_bind_many_scores_each_group_for_its_neuron(energy):
    model = tiny_model()
    images = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    references = [torch.rand(3, 16, 16), torch.rand(3, 16, 16), torch.rand(3, 16, 16)]
    together = bind_many(energy, model, [2, 0, 1], references, 2)(images)
    for k, neuron in enumerate([2, 0, 1]):
        alone = energy.bind(model, neuron, references[k])(images[2 * k : 2 * k + 2])
        torch.testing.assert_close(together.energy[2 * k : 2 * k + 2], alone.energy)
        torch.testing.assert_close(together.response[2 * k : 2 * k + 2], alone.response)
    fitting = declared(PlainEnergy(), Energy)
    assert (fitting.grayscale, fitting.norm) == (False, None)
    assert (MEIEnergy(grayscale=True, norm=2.0).grayscale, MEIEnergy(norm=2.0).norm) == (True, 2.0)
