"""In-silico ground truth: procedural stimuli with part masks, and model neurons tuned to those parts.

- :mod:`~sharedattr.data.insilico.render`: seeded bodies and objects with pixel-exact part masks;
- :mod:`~sharedattr.data.insilico.neurons`: neurons whose responses are known functions of the parts;
- :mod:`~sharedattr.data.insilico.pairs`: driver/reference pairs whose shared parts are known by construction;
- :mod:`~sharedattr.data.insilico.dataset`: writes them as a normal stimulus set + responses + ground truth.
"""

from sharedattr.data.insilico.dataset import InSilicoFiles, write_insilico, write_pair_set
from sharedattr.data.insilico.neurons import DEFAULT_NEURONS, GroundTruthNeuron, neuron_population, simulate_responses
from sharedattr.data.insilico.render import (
    CATEGORIES,
    PARTS,
    PLAIN_SCENES,
    VARIED_ATTACHMENTS,
    VARIED_MISSING,
    VARIED_SCENES,
    RenderedSet,
    Scene,
    SceneOptions,
    render_scene,
    render_set,
)

__all__ = [
    "CATEGORIES",
    "DEFAULT_NEURONS",
    "PARTS",
    "PLAIN_SCENES",
    "VARIED_ATTACHMENTS",
    "VARIED_MISSING",
    "VARIED_SCENES",
    "GroundTruthNeuron",
    "InSilicoFiles",
    "RenderedSet",
    "Scene",
    "SceneOptions",
    "neuron_population",
    "render_scene",
    "render_set",
    "simulate_responses",
    "write_insilico",
    "write_pair_set",
]
