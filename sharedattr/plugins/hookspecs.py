"""Hook specifications: the whole plugin API of sharedattr.

A plugin is a module (or object) with functions marked ``@hookimpl``. There is one
``register_<kind>s(register)`` hook per component kind. Each receives a ``register``
callable with the signature::

    register(name: str, factory: Callable, *, params: type[BaseModel] | None = None,
             description: str = "")

``factory`` is called with the validated params as keyword arguments (plus the
positional arguments listed for its kind below); ``params`` is a pydantic model of
those keyword arguments, validated with ``extra="forbid"``; ``description`` is one line
shown by ``sharedattr plugins``. Built-in components register through these very hooks.

Shapes follow the conventions of the whole package: images ``[B, C, H, W]`` (float in
[0, 1]), latents ``[B, C', H', W']`` or ``[B, D]``, responses ``[B, N]``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

PROJECT_NAME = "sharedattr"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

Register = Callable[..., Any]

# Component kinds, in the order they appear in a pipeline. Each maps to its hook name.
KINDS: dict[str, str] = {
    "backbone": "register_backbones",
    "readout": "register_readouts",
    "matcher": "register_matchers",
    "method": "register_methods",
    "metric": "register_metrics",
    "synthesizer": "register_synthesizers",
    "energy": "register_energies",
}


@hookspec
def register_backbones(register: Register) -> None:
    """Register backbones: frozen networks cut at a layer.

    ``factory(**params)`` returns a :class:`sharedattr.plugins.contracts.Backbone`: a frozen,
    eval-mode ``nn.Module`` mapping preprocessed images ``[B, C, H, W]`` to latents
    ``[B, C', H', W']`` (or ``[B, D]``). It exposes ``preprocess(images)`` (float images
    in [0, 1] ``[B, C, H, W]`` → the network's normalised input), ``input_size`` ``(H, W)``,
    ``in_channels`` and ``latent_shape``.
    """


@hookspec
def register_readouts(register: Register) -> None:
    """Register readouts: per-neuron maps from latents to responses ``[B, N]``.

    ``factory(**params)`` returns a :class:`sharedattr.plugins.contracts.Readout`, an
    ``nn.Module``. ``initialize(latent_shape, n_neurons)`` allocates its parameters (so a
    saved ``state_dict`` can be loaded); after ``fit(latents, responses)`` (which
    initializes, then fits in place) it meets the linear contract
    ``r_n(x) = φ(⟨w_n, z_n(x)⟩ + b_n)`` by exposing ``pooled(latents) -> z [B, N, D]``,
    ``weight -> w [N, D]``, ``bias -> b [N]`` and ``nonlinearity`` (φ).
    """


@hookspec
def register_matchers(register: Register) -> None:
    """Register matching metrics (similarities between contribution vectors).

    ``factory(**params)`` returns a :class:`sharedattr.plugins.contracts.Matcher` whose
    ``similarity(a [..., Q, D], b [..., K, D]) -> [..., Q, K]`` is higher for more
    similar vectors; :func:`sharedattr.plugins.contracts.match_references` turns it into
    the top-k references.
    """


@hookspec
def register_methods(register: Register) -> None:
    """Register attribution methods.

    ``factory(model, **params)`` receives the encoding model (images ``[B, C, H, W]`` →
    responses ``[B, N]``) and returns an object with Captum's interface:
    ``attribute(inputs, target=..., **kwargs)``. Methods that explain a pair of images
    (out-of-category driver, reference) subclass
    :class:`sharedattr.plugins.contracts.PairwiseAttribution` (or declare ``pairwise = True``) and
    take ``inputs=(x_ooc, x_ref)``.
    """


@hookspec
def register_metrics(register: Register) -> None:
    """Register evaluation metrics for attribution maps.

    ``factory(**params)`` returns a :class:`sharedattr.plugins.contracts.Metric` with
    ``higher_is_better: bool``, optionally ``family`` (one of
    :data:`~sharedattr.plugins.contracts.METRIC_FAMILIES`, default ``"other"``) and
    ``requires_masks: bool`` (default False: the metric is skipped on stimulus sets without
    ground-truth masks when True), and ``__call__(batch: AttributionBatch) -> Tensor [B]``.
    """


@hookspec
def register_synthesizers(register: Register) -> None:
    """Register stimulus synthesizers (most exciting inputs and friends).

    ``factory(**params)`` returns a :class:`sharedattr.plugins.contracts.Synthesizer` with
    ``synthesize(model, neuron: int, *, reference: Tensor | None = None) -> SynthesisResult``;
    ``reference`` ``[C, H, W]`` is the neuron's best natural image when the caller has one
    (the target of reconstruction energies).
    """


@hookspec
def register_energies(register: Register) -> None:
    """Register energies: what a synthesizer minimises (``mei``, ``reconstruction``, ...).

    ``factory(**params)`` returns a :class:`sharedattr.plugins.contracts.Energy` whose
    ``bind(model, neuron, reference=None)`` gives a function from images ``[B, C, H, W]``
    in [0, 1] (any size: the energy fits them to the model) to an
    :class:`~sharedattr.plugins.contracts.EnergyValue`: energies ``[B]`` (lower is better) and the
    neuron's responses ``[B]``.
    """
