"""The contracts every component kind meets.

Two are protocols (:class:`Backbone`, :class:`Readout`). The others are base classes that carry the defaults of
the optional members the run reads, in the style of torchmetrics' ``Metric``: :class:`BackboneModule` (trainable
or frozen), :class:`ReadoutModule`, :class:`AttributionMethod` and :class:`PairwiseAttribution`, :class:`Metric`
(its :data:`MetricFamily`, direction, masks, undefined cases), :class:`Matcher` (the top-k step and the factored
similarity), :class:`Synthesizer` and :class:`Energy`. A plugin's class need not subclass them: :func:`declared` is
the one place that reads those members, with the same defaults, so nothing downstream probes a component or decides
by its name.

Shapes: images ``[B, C, H, W]`` float in [0, 1]; latents ``[B, C', H', W']`` or ``[B, D]``;
responses ``[B, N]``; pooled latents ``z`` ``[B, N, D]``; readout weights ``w`` ``[N, D]``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import FunctionType, MethodType, SimpleNamespace
from typing import Any, ClassVar, Literal, NamedTuple, Protocol, runtime_checkable

import torch
from captum.attr import Attribution
from torch import Tensor, nn


@runtime_checkable
class Backbone(Protocol):
    """A frozen, eval-mode network cut at a layer (an ``nn.Module``: the pipeline moves it to a device)."""

    input_size: tuple[int, int]
    in_channels: int

    def preprocess(self, images: Tensor) -> Tensor:
        """Images ``[B, C, H, W]`` in [0, 1] at ``input_size`` → the network's normalised input."""

    def __call__(self, x: Tensor) -> Tensor:
        """Preprocessed images ``[B, C, H, W]`` → latents ``[B, C', H', W']`` or ``[B, D]``."""

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """Shape of one image's latents, without the batch dimension."""


@runtime_checkable
class Readout(Protocol):
    """Per-neuron readout meeting ``r_n(x) = φ(⟨w_n, z_n(x)⟩ + b_n)`` (an ``nn.Module``)."""

    def initialize(self, latent_shape: tuple[int, ...], n_neurons: int) -> None:
        """Allocate parameters for latents of ``latent_shape`` (no batch dim) and ``n_neurons``.

        After this, ``load_state_dict`` of a fitted readout of the same spec restores it exactly.
        """

    def fit(self, latents: Tensor, responses: Tensor) -> Readout:
        """Initialize, then fit in place to latents ``[B, ...]`` and responses ``[B, N]`` (NaN = missing); returns
        self. (The optional members, ``fit_rows`` among them, and their defaults: :class:`ReadoutModule`.)"""

    def __call__(self, latents: Tensor) -> Tensor:
        """Latents ``[B, ...]`` → responses ``[B, N]``."""

    def pooled(self, latents: Tensor) -> Tensor:
        """``z``: each neuron's pooled latent vector, ``[B, N, D]`` (may be an expanded view)."""

    @property
    def weight(self) -> Tensor:
        """``w`` ``[N, D]``."""

    @property
    def bias(self) -> Tensor:
        """``b`` ``[N]``."""

    def nonlinearity(self, x: Tensor) -> Tensor:
        """``φ``, applied elementwise to ``⟨w_n, z_n⟩ + b_n``."""


class BackboneModule(nn.Module):
    """Base of a backbone: an ``nn.Module`` meeting :class:`Backbone`, with the defaults of the optional members the
    fit stage reads (through :func:`declared`, so a plugin's backbone need not subclass it):

    - ``trainable = False``: a frozen backbone; its latents are extracted once (and cached) and the readout fits on
      them. A trainable one (``stacked_core``) is fitted jointly with the readout on the images
      (``fit_with_backbone`` of :class:`ReadoutModule`), its latents are never cached, and its weights are saved
      with the readout's. It defines ``regularizer() -> scalar``, the penalty added to the training loss, and is
      left in eval mode with no gradients to its weights outside training;
    - ``readout_defaults = {}``: the readout params it changes the defaults of (those the readout's params model
      has; a config's own values win), e.g. a Poisson loss for a trainable core.
    """

    optional: ClassVar[tuple[str, ...]] = ("trainable", "readout_defaults")
    trainable: ClassVar[bool] = False
    readout_defaults: ClassVar[dict[str, Any]] = {}


class ReadoutModule(nn.Module):
    """Base of a readout: an ``nn.Module`` meeting :class:`Readout`, with the defaults of the optional members the
    run reads (through :func:`declared`, so a plugin's readout need not subclass it):

    - ``fit_rows(latents, responses, rows)``: fit on the images ``rows [n]`` of latents ``[S, ...]`` and responses
      ``[S, N]`` (all of them when None); the default fits on their copy, ``fit(latents[rows], responses[rows])``
      (ridge reads the rows in place, without the copy);
    - ``shared_pooled = None``: a readout whose neurons all share one pooled vector defines ``shared_pooled(latents)
      -> z [B, D]``, equal to ``pooled(latents)[:, n]`` for every ``n`` (ridge does): attribution then backpropagates
      through ``z`` instead of indexing ``pooled`` (whose gradient would fill a ``[B, N, D]`` buffer), and matching
      pools each image once. A subclass whose ``pooled`` no longer shares one vector sets it back to None;
    - ``dimension_channels() -> [D]``: the latent channel of each of the ``D`` readout dimensions (position-tolerant
      sharing and matching sum contributions within a channel); the default makes each dimension its own channel,
      as for pooled latents;
    - ``fit_with_backbone = None``: a readout that can train jointly with a trainable backbone
      (:class:`BackboneModule`) defines ``fit_with_backbone(backbone, images, responses, progress=False)`` on images
      ``[S, C, H, W]`` in [0, 1] and responses ``[S, N]`` (the trained readouts do); ridge does not.
    """

    optional: ClassVar[tuple[str, ...]] = ("fit_rows", "shared_pooled", "dimension_channels", "fit_with_backbone")
    shared_pooled: ClassVar[Callable[[Tensor], Tensor] | None] = None
    fit_with_backbone: ClassVar[Callable[..., Any] | None] = None

    def fit_rows(self, latents: Tensor, responses: Tensor, rows: Tensor | None) -> Any:
        """``fit(latents[rows], responses[rows])`` (``fit(latents, responses)`` when ``rows`` is None)."""
        if rows is None:
            return self.fit(latents, responses)
        return self.fit(latents[rows], responses[rows])

    def dimension_channels(self) -> Tensor:
        """``[D]``: each of the ``weight [N, D]``'s dimensions is its own channel, ``arange(D)``."""
        weight = self.weight
        return torch.arange(weight.shape[1], device=weight.device)


def match_references(matcher: Any, query: Tensor, candidates: Tensor, top_k: int = 1) -> tuple[Tensor, Tensor]:
    """Top-k candidates per query by ``matcher.similarity`` (the only method a matcher must have).

    ``query [..., Q, D]``, ``candidates [..., K, D]`` → scores and indices ``[..., Q, min(k, K)]``,
    most similar first.
    """
    sim = matcher.similarity(query, candidates)
    expected = (*query.shape[:-1], candidates.shape[-2])
    if tuple(sim.shape) != expected:
        raise TypeError(f"{type(matcher).__name__}.similarity returned shape {tuple(sim.shape)}, expected {expected}")
    return sim.topk(min(top_k, sim.shape[-1]), dim=-1)


class Matcher:
    """A similarity between contribution vectors ``c_n(x) = w_n ⊙ z_n(x)``; higher is more similar.

    The contract is ``similarity(a [..., Q, D], b [..., K, D]) -> [..., Q, K]`` (one batched call
    for many neurons and drivers); a matcher need not subclass this base, which adds the top-k
    step (:meth:`match`) and a default :meth:`similarity_factored` (its one optional member: :func:`declared` gives a
    plugin's matcher that defines none this default).
    """

    optional: ClassVar[tuple[str, ...]] = ("similarity_factored",)

    def __init__(self, eps: float = 1e-12) -> None:
        self.eps = eps

    def similarity(self, a: Tensor, b: Tensor) -> Tensor:  # pragma: no cover - abstract
        """``a [..., Q, D]``, ``b [..., K, D]`` → ``[..., Q, K]``."""
        raise NotImplementedError

    def similarity_factored(self, query: Tensor, weight: Tensor, latents: Tensor) -> Tensor:
        """``similarity(query, weight[:, None] * latents[None])``: candidates given as factors.

        ``query`` ``[G, Q, D]`` (contribution vectors), ``weight`` ``[G, D]`` and shared candidate
        latents ``latents`` ``[K, D]`` → ``[G, Q, K]``. ``query`` is a scratch tensor the method may
        overwrite. This default forms the candidates' contributions ``[G, K, D]``; matchers whose
        similarity factorises override it.
        """
        return self.similarity(query, weight[:, None, :] * latents[None])

    def match(self, query: Tensor, candidates: Tensor, top_k: int = 1) -> tuple[Tensor, Tensor]:
        """Top-k candidates per query: ``query [..., Q, D]``, ``candidates [..., K, D]`` → scores, indices
        ``[..., Q, k]``."""
        return match_references(self, query, candidates, top_k)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def declared(component: Any, contract: type) -> SimpleNamespace:
    """What ``component`` (an instance or a class) declares of the optional members of ``contract``, a base class
    below: each member in ``contract.optional``, from the component, or ``contract``'s default where it declares
    none. A plugin's class need not subclass the base; this is the one place that reads its optional members, so
    the run reads ``declared(metric, Metric).requires_masks`` and never probes. A default that is a method of
    ``contract`` comes bound to ``component`` (an instance), so ``declared(readout, ReadoutModule).fit_rows(...)``
    calls the base's default on a readout that defines none."""
    return SimpleNamespace(**{name: _member(component, contract, name) for name in contract.optional})


def _member(component: Any, contract: type, name: str) -> Any:
    """``component``'s member ``name``, else ``contract``'s default (a method bound to an instance ``component``)."""
    default = getattr(contract, name)
    value = getattr(component, name, default)
    if value is default and isinstance(default, FunctionType) and not isinstance(component, type):
        return MethodType(default, component)
    return value


ControlReach = Literal["same", "any_pairwise"]
CONTROL_REACHES: tuple[str, ...] = ("same", "any_pairwise")
"""What a control controls (:attr:`AttributionMethod.controls`): the other instances of its own component, or every
pairwise method."""


class AttributionMethod(Attribution):
    """Base of an attribution method (a :class:`captum.attr.Attribution`): ``attribute(inputs, target=...)``, and
    what it declares, with these defaults:

    - ``pairwise = False``: it explains one image (see :class:`PairwiseAttribution`);
    - ``batch_invariant = True``: a batch gives the maps a per-item loop gives (False for methods that draw noise
      per batch);
    - ``thread_safe = False``: whether it may compute beside other work (runtime.numerics: no process-wide side
      effects); one that does not declare it computes alone;
    - ``limit_images_per_pass(images)``: told how many images one forward/backward pass may hold (the memory
      budget); the default ignores it (a method that holds one batch per pass);
    - ``control_of(params) -> str | None``: a class-level rule that says, from an instance's validated params,
      whether that instance is a *control* of the method, and of what (in words); None (the default) for a real
      method. A run records it in ``components.json`` and the report marks such methods as controls and compares
      the methods they control with them (``parallel_backprop`` with ``variant = "own"`` is one);
    - ``controls = "same"``: which methods such a control controls: ``"same"``, the other instances of its own
      component; ``"any_pairwise"``, every pairwise method of the run that is no control itself (the co-location
      control ``colocation``). The report compares a pairwise method on the sharing and pairwise-only metrics with
      each of its controls;
    - ``control_noun = "control"``: how the report names a control of ``"any_pairwise"`` reach beside its label
      (``"co-location control"``: "the co-location control colocation"); a same-component control is "its own
      control";
    - ``scope = None``: what the method's own benchmarks established, in one or two sentences; the report repeats
      it beside the method's verdict, so that a run's verdict is read within it.
    """

    optional: ClassVar[tuple[str, ...]] = (
        "pairwise",
        "batch_invariant",
        "thread_safe",
        "limit_images_per_pass",
        "control_of",
        "controls",
        "control_noun",
        "scope",
    )
    pairwise: ClassVar[bool] = False
    batch_invariant: ClassVar[bool] = True
    thread_safe: ClassVar[bool] = False
    controls: ClassVar[ControlReach] = "same"
    control_noun: ClassVar[str] = "control"
    scope: ClassVar[str | None] = None

    def limit_images_per_pass(self, images: int) -> None:
        """Hold at most ``images`` images per pass (the default holds one batch: nothing to do)."""

    @classmethod
    def control_of(cls, params: Any) -> str | None:
        """What an instance with validated ``params`` is a control of, in words; None: it is no control (the
        default). Example: ``ParallelBackprop.control_of(ParallelBackpropParams(variant="own"))`` says it is the
        control without sharing."""
        return None


class PairwiseAttribution(AttributionMethod):
    """The pairwise contract: a method that explains an out-of-category driver and its reference together.

    ``attribute((x_ooc, x_ref), target=...)`` takes both images ``[B, C, H, W]`` and returns a
    tuple whose first two entries are their maps (``[B, C, H, W]`` or ``[B, H, W]``). The run
    explains both images of every pair with such a method and never runs it on one image alone.
    A method that cannot subclass this declares ``pairwise = True`` instead; :func:`is_pairwise`
    reads either.
    """

    pairwise: ClassVar[bool] = True

    def attribute(self, inputs: tuple[Tensor, Tensor], target: Any = None, **kwargs: Any) -> Any:  # pragma: no cover
        raise NotImplementedError


def is_pairwise(method: Any) -> bool:
    """Whether ``method`` (an instance or its class) explains a pair of images (:class:`PairwiseAttribution`)."""
    return bool(declared(method, AttributionMethod).pairwise)


def control_of(method: Any, params: Any) -> str | None:
    """What ``method`` (an instance or its class) with validated ``params`` is a control of, as it declares
    (:meth:`AttributionMethod.control_of`); None when it is no control.

    >>> control_of(AttributionMethod, None) is None
    True
    """
    rule = declared(method, AttributionMethod).control_of
    what = rule(params)
    if what is not None and not (isinstance(what, str) and what.strip()):
        owner = method if isinstance(method, type) else type(method)
        raise TypeError(f"{owner.__name__}.control_of returned {what!r}; return None or a non-empty string")
    return what


def control_reach(method: Any) -> tuple[ControlReach, str]:
    """Which methods ``method`` (an instance or its class), when an instance is a control, controls, and how the
    report names it: ``(controls, control_noun)`` as it declares them (:attr:`AttributionMethod.controls`,
    :attr:`AttributionMethod.control_noun`); TypeError for a value of neither kind.

    >>> control_reach(AttributionMethod)
    ('same', 'control')
    """
    found = declared(method, AttributionMethod)
    owner = method if isinstance(method, type) else type(method)
    if found.controls not in CONTROL_REACHES:
        raise TypeError(f"{owner.__name__}.controls is {found.controls!r}; declare one of {CONTROL_REACHES}")
    if not (isinstance(found.control_noun, str) and found.control_noun.strip()):
        raise TypeError(f"{owner.__name__}.control_noun is {found.control_noun!r}; declare a non-empty string")
    return found.controls, found.control_noun


def method_scope(method: Any) -> str | None:
    """The scope ``method`` (an instance or its class) declares (:attr:`AttributionMethod.scope`); None: none.

    >>> method_scope(AttributionMethod) is None
    True
    """
    scope = declared(method, AttributionMethod).scope
    return scope if isinstance(scope, str) and scope.strip() else None


@dataclass
class AttributionBatch:
    """Everything a metric may need about a batch of attribution maps.

    ``inputs`` ``[B, C, H, W]``; ``maps`` ``[B, H, W]`` (channel-reduced, signed);
    ``targets`` ``[B]`` neuron indices into the model output ``[B, N]``; ``masks``
    ``[B, H, W]`` bool ground truth, when the stimulus set has it: with part annotations and
    ``neuron_parts``, the driving parts both images of the pair show.

    Part ground truth (empty or None without it): ``unshared_masks`` ``[B, H, W]`` the driving
    parts this image shows and its partner lacks; ``shared_parts`` each shared part's own mask
    on this image, and ``partner_parts`` the same parts on the partner (``{part: [B, H, W]}``, all
    False in rows whose pair does not share the part); ``partners`` ``[B, C, H, W]`` the other
    image of each pair.

    ``explain``, when given, recomputes these very maps with another encoding model:
    the same method, params, images (and pair partners), targets and channel reduction;
    ``explain(other_model) -> [B, H, W]``. Metrics that re-run the method (the model
    parameter randomisation check) declare ``requires_explainer = True`` and are skipped
    where it is missing. ``explain_with_partners(other_partners [B, C, H, W]) -> [B, H, W]``
    recomputes them with other partner images; it is None for a single-image method, whose
    maps cannot depend on the partner.
    """

    model: nn.Module
    inputs: Tensor
    maps: Tensor
    targets: Tensor
    masks: Tensor | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    explain: Callable[[nn.Module], Tensor] | None = None
    unshared_masks: Tensor | None = None
    shared_parts: dict[str, Tensor] = field(default_factory=dict)
    partner_parts: dict[str, Tensor] = field(default_factory=dict)
    partners: Tensor | None = None
    explain_with_partners: Callable[[Tensor], Tensor] | None = None


MetricFamily = Literal["sharing", "localisation", "faithfulness", "complexity", "sanity", "other"]
"""What a metric measures: whether the map shows what the two images of a pair share rather than what drives the
neuron in one of them (``sharing``), agreement with ground-truth masks (``localisation``), whether the map predicts
the model's response to perturbations (``faithfulness``), how concentrated the map is (``complexity``), whether
it depends on the model at all (``sanity``, e.g. the randomisation check), or ``other``."""
METRIC_FAMILIES: tuple[str, ...] = ("sharing", "localisation", "faithfulness", "complexity", "sanity", "other")


class Metric:
    """Base of a metric: scores attribution maps, one per map (``__call__(batch) -> [B]``), in the style of
    torchmetrics' ``Metric``. A metric must declare ``higher_is_better`` (the direction of rankings; it may be a
    property); the rest are optional, with these defaults:

    - ``family = "other"``: the group the report reads it in (:data:`MetricFamily`);
    - ``requires_masks = False``: skipped where the stimulus set has no ground-truth masks;
    - ``requires_explainer = False``: needs ``batch.explain`` (it re-runs the method), skipped without it;
    - ``requires_part_truth = False``: needs ``unshared_masks`` and the part masks;
    - ``undefined_when = None``: when a score is NaN, in words (the run's warning names it);
    - ``thread_safe = False``: whether it may compute beside other work (see :class:`AttributionMethod`);
    - ``single_image_value = None``: the score every single-image method gets *by construction* (e.g. 0 for
      ``reference_sensitivity``: a map that does not depend on the partner cannot change when the partner does).
      A metric that declares one is *pairwise-only*: it ranks pairwise methods among themselves (each against its
      control) and never a pairwise method against single-image ones; None: it compares every method.

    A plugin's metric need not subclass it: :func:`declared` reads the same members, with the same defaults.
    """

    optional: ClassVar[tuple[str, ...]] = (
        "family",
        "requires_masks",
        "requires_explainer",
        "requires_part_truth",
        "undefined_when",
        "thread_safe",
        "single_image_value",
    )
    higher_is_better: ClassVar[bool]
    family: ClassVar[MetricFamily] = "other"
    requires_masks: ClassVar[bool] = False
    requires_explainer: ClassVar[bool] = False
    requires_part_truth: ClassVar[bool] = False
    undefined_when: ClassVar[str | None] = None
    thread_safe: ClassVar[bool] = False
    single_image_value: ClassVar[float | None] = None

    def __call__(self, batch: AttributionBatch) -> Tensor:  # pragma: no cover - abstract
        """One score per map, ``[B]`` (NaN only where the metric is undefined, e.g. no mask)."""
        raise NotImplementedError


def single_image_value(metric: Any) -> float | None:
    """The score a metric (an instance or its class) gives every single-image method by construction, as it
    declares (:attr:`Metric.single_image_value`); None when it compares every method.

    >>> single_image_value(Metric) is None
    True
    """
    value = declared(metric, Metric).single_image_value
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        owner = metric if isinstance(metric, type) else type(metric)
        raise TypeError(f"{owner.__name__}.single_image_value is {value!r}; use a number or None")
    return float(value)


def metric_family(metric: Any) -> str:
    """A metric's declared ``family`` (one of :data:`METRIC_FAMILIES`), ``other`` when it declares none."""
    family = declared(metric, Metric).family
    if family not in METRIC_FAMILIES:
        raise ValueError(f"{type(metric).__name__}.family is {family!r}; use one of {', '.join(METRIC_FAMILIES)}")
    return family


@dataclass
class SynthesisResult:
    """Synthesised images ``[S, C, H, W]`` in [0, 1], their responses ``[S]`` and the cost.

    ``prior_images``: a generative prior's own images ``[S, C', H', W']`` in [0, 1] (its
    resolution and channels), before they were fitted to the model; ``None`` without a prior.
    """

    images: Tensor
    responses: Tensor
    history: Tensor  # [steps, S] response of the target neuron per step
    cost: dict[str, float]
    prior_images: Tensor | None = None


class Synthesizer:
    """Base of a synthesizer: makes images that drive one neuron at a time (:meth:`synthesize`), in the style of the
    bases above. What it declares, with these defaults:

    - ``neuron_batch = 1``: how many neurons one :meth:`synthesize_many` call samples together. A synthesizer with a
      ``synthesize_many`` of its own (as ``egg``) is called on fixed chunks of ``neuron_batch`` selected neurons
      (:func:`neurons_per_loop`); any other one neuron at a time;
    - ``synthesize_many(model, neurons, *, references) -> list[SynthesisResult]``: one result per neuron, in order;
      the default calls :meth:`synthesize` for each;
    - ``own_generators = False``: a run starts torch's global generator from the spec's ``seed`` before each call,
      under a lock, so calls side by side never share its draws. A synthesizer that draws every random number from
      its own seeded ``torch.Generator`` declares ``own_generators = True`` (the built-ins do); its calls then run
      side by side;
    - ``thread_safe = False``: whether it may compute beside other work (see :class:`AttributionMethod`);
    - ``prior_samples = None``: a synthesizer with a generative prior gives ``prior_samples(n, seed=0,
      device="cpu") -> [n, C, H, W]`` in [0, 1], its prior's unguided samples (a run shows them beside the images,
      and compares them with the stimuli before sampling: :func:`~sharedattr.synthesis.prior.check_prior`);
    - ``iterates_at = None``: an iterative synthesizer whose ``history`` row ``t`` is the response to its iterate
      after ``t`` updates gives ``iterates_at(model, neuron, steps, *, reference=None) -> [S, C, H, W]``, seed
      ``s``'s iterate after ``steps[s]`` updates (``gradient_ascent`` replays its run). A run then also scores
      that iterate at the step where it first reaches each other synthesizer's train activation (the comparison
      at equal train activation, docs/synthesis.md).

    A plugin's synthesizer need not subclass it: :func:`declared` reads the same members, with the same defaults.
    """

    optional: ClassVar[tuple[str, ...]] = (
        "neuron_batch",
        "synthesize_many",
        "own_generators",
        "thread_safe",
        "prior_samples",
        "iterates_at",
    )
    neuron_batch: int = 1
    own_generators: ClassVar[bool] = False
    thread_safe: ClassVar[bool] = False
    prior_samples: ClassVar[Callable[..., Tensor] | None] = None
    iterates_at: ClassVar[Callable[..., Tensor] | None] = None

    def synthesize(self, model: nn.Module, neuron: int, *, reference: Tensor | None = None) -> SynthesisResult:
        """Synthesise images that drive output ``neuron`` of ``model`` (images → ``[B, N]``).

        ``reference`` ``[C, H, W]`` in [0, 1] is the neuron's best natural image, when known.
        The returned images are what the model was evaluated on: ``responses`` equal
        ``model(images)[:, neuron]``.
        """
        raise NotImplementedError  # pragma: no cover - abstract

    def synthesize_many(
        self, model: nn.Module, neurons: Sequence[int], *, references: Sequence[Tensor | None] | None = None
    ) -> list[SynthesisResult]:
        """:meth:`synthesize` of each of ``neurons`` (with ``references[k]``, or None), one result per neuron."""
        references = neuron_references(neurons, references)
        return [self.synthesize(model, int(n), reference=r) for n, r in zip(neurons, references)]


def neuron_references(neurons: Sequence[int], references: Sequence[Tensor | None] | None) -> list[Tensor | None]:
    """``references`` of ``synthesize_many`` as a list, one per neuron (None for each when not given); a
    ValueError when their counts differ."""
    references = list(references) if references is not None else [None] * len(neurons)
    if len(references) != len(neurons):
        raise ValueError(f"{len(neurons)} neurons but {len(references)} references")
    return references


def neurons_per_loop(synthesizer: Any) -> int:
    """How many neurons one loop of ``synthesizer`` samples together: its declared ``neuron_batch`` (at least 1)
    when it has a ``synthesize_many`` of its own, else 1 (the base's loops one neuron at a time anyway)."""
    members = declared(synthesizer, Synthesizer)
    many = members.synthesize_many
    if (many.__func__ if isinstance(many, MethodType) else many) is Synthesizer.synthesize_many:
        return 1
    return max(1, int(members.neuron_batch))


class EnergyValue(NamedTuple):
    """An energy evaluated on a batch: ``energy`` ``[B]`` (lower is better) and the neuron's ``response`` ``[B]``."""

    energy: Tensor
    response: Tensor


class Energy:
    """Base of an energy, what synthesizers minimise: :meth:`bind` gives the energy of images for one neuron. What
    it declares, with these defaults:

    - ``grayscale = False`` and ``norm = None``: how it fits images to the model before the model scores them
      (:func:`~sharedattr.synthesis.preprocess.fit_to_model`); a synthesizer that makes images at another resolution
      (``egg``) fits its final images the same way;
    - ``bind_many(model, neurons, references, group)``: the energy of ``len(neurons)`` consecutive groups of
      ``group`` images, group ``k`` for output ``neurons[k]``; the default binds once per neuron and evaluates each
      group on its own rows (:class:`~sharedattr.synthesis.energies.MEIEnergy` scores every group in one pass).

    A plugin's energy need not subclass it: :func:`declared` reads the same members, with the same defaults.
    """

    optional: ClassVar[tuple[str, ...]] = ("grayscale", "norm", "bind_many")
    grayscale: bool = False
    norm: float | None = None

    def bind(self, model: nn.Module, neuron: int, reference: Tensor | None = None) -> Callable[[Tensor], EnergyValue]:
        """The energy of images ``[B, C, H, W]`` in [0, 1] for output ``neuron`` of ``model``."""
        raise NotImplementedError  # pragma: no cover - abstract

    def bind_many(
        self, model: nn.Module, neurons: Sequence[int], references: Sequence[Tensor | None], group: int
    ) -> Callable[[Tensor], EnergyValue]:
        """Images ``[len(neurons) · group, C, H, W]`` → energies and responses ``[len(neurons) · group]``; rows
        ``k·group … (k+1)·group − 1`` for ``neurons[k]`` (with ``references[k]``)."""
        bound = [self.bind(model, n, r) for n, r in zip(neurons, references)]
        if len(bound) == 1:
            return bound[0]

        def evaluate(images: Tensor) -> EnergyValue:
            values = [fn(images[k * group : (k + 1) * group]) for k, fn in enumerate(bound)]
            return EnergyValue(torch.cat([v.energy for v in values]), torch.cat([v.response for v in values]))

        return evaluate
