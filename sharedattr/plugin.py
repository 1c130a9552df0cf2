"""Everything a plugin author needs, in one public module: ``from sharedattr.plugin import ...``.

The hook marker, the params base and path types, the contracts of every component kind (and
the base classes that carry behaviour: :class:`Matcher`, :class:`PairwiseAttribution`,
:class:`FrozenBackbone`), the objects components receive and return, the helpers the built-ins
use, and the errors a component raises for its user. The names here are documented in
docs/plugins.md and kept stable; sharedattr's internal modules may move.

A plugin module looks like::

    from sharedattr.plugin import Matcher, Params, hookimpl

    class L1Matcher(Matcher):
        def similarity(self, a, b):
            return -torch.cdist(a, b, p=1)

    @hookimpl
    def register_matchers(register):
        register("l1", L1Matcher, description="Negative L1 distance.")
"""

from __future__ import annotations

from sharedattr.encoding.backbones.frozen import FrozenBackbone, load_state_dict_file
from sharedattr.encoding.model import EncodingModel
from sharedattr.plugins.contracts import (
    METRIC_FAMILIES,
    AttributionBatch,
    AttributionMethod,
    Backbone,
    BackboneModule,
    Energy,
    EnergyValue,
    Matcher,
    Metric,
    MetricFamily,
    PairwiseAttribution,
    Readout,
    ReadoutModule,
    SynthesisResult,
    Synthesizer,
    declared,
    is_pairwise,
    match_references,
)
from sharedattr.plugins.hookspecs import KINDS, hookimpl
from sharedattr.plugins.params import (
    Configurable,
    InputPath,
    NoParams,
    OutputPath,
    Params,
    Seed,
    register_components,
)
from sharedattr.plugins.specs import EnergySpec
from sharedattr.runtime.errors import PluginDefinitionError, SpecError, UserError, closest
from sharedattr.runtime.numerics import seeded_global_rng
from sharedattr.synthesis.cost import CallCounter
from sharedattr.synthesis.energies import EnergyParam, build_energy
from sharedattr.synthesis.preprocess import fit_to_model

__all__ = [
    # hooks
    "hookimpl",
    "KINDS",
    # params
    "Params",
    "NoParams",
    "Seed",
    "InputPath",
    "OutputPath",
    "EnergyParam",
    "EnergySpec",
    # components that carry their registration
    "Configurable",
    "register_components",
    # contracts and base classes
    "Backbone",
    "BackboneModule",
    "FrozenBackbone",
    "Readout",
    "ReadoutModule",
    "Matcher",
    "AttributionMethod",
    "PairwiseAttribution",
    "Metric",
    "MetricFamily",
    "METRIC_FAMILIES",
    "Synthesizer",
    "Energy",
    # what components receive and return
    "EncodingModel",
    "AttributionBatch",
    "SynthesisResult",
    "EnergyValue",
    # helpers
    "load_state_dict_file",
    "match_references",
    "is_pairwise",
    "declared",
    "fit_to_model",
    "build_energy",
    "CallCounter",
    "seeded_global_rng",
    # errors
    "UserError",
    "SpecError",
    "PluginDefinitionError",
    "closest",
]
