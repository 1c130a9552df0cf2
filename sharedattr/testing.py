"""Conformance checks that any registered component meets its kind's contract, each check named.

In the spirit of scikit-learn's ``parametrize_with_checks``, every check is a test of its own::

    from sharedattr.testing import parametrize_with_checks

    @parametrize_with_checks([("matcher", "l1", {"p": 1.0}), ("metric", "my_metric")])
    def test_my_components(check):
        check()  # e.g. matcher:l1:self_is_most_similar

``check_component(kind, name, params)`` runs every check of one registered component, and ``checks_for(kind, build,
label)`` gives the checks of a component you build yourself (``build()``, or ``build(model)`` for a method). Each
check builds a fresh component, exercises it on tiny random tensors (CPU, a few milliseconds, torch's global
generator seeded) and raises ``AssertionError`` naming the broken part of the contract.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MethodType
from typing import Any

import torch
from torch import Tensor, nn

from sharedattr.attribution.engine import reduce_channels
from sharedattr.encoding.model import EncodingModel
from sharedattr.encoding.readouts.ridge import RidgeReadout
from sharedattr.plugins.contracts import (
    AttributionBatch,
    AttributionMethod,
    BackboneModule,
    Energy,
    Matcher,
    ReadoutModule,
    Synthesizer,
    declared,
    is_pairwise,
    match_references,
    neurons_per_loop,
    single_image_value,
)
from sharedattr.plugins.loading import get_registry
from sharedattr.plugins.registry import Registry
from sharedattr.runtime.numerics import seeded_global_rng


class TinyBackbone(nn.Module):
    """A frozen 2-layer CNN meeting the backbone contract: ``[B, 3, 16, 16]`` → ``[B, 6, 4, 4]``."""

    input_size = (16, 16)
    in_channels = 3

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        with seeded_global_rng(seed):
            self.net = nn.Sequential(
                nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.ReLU()
            )
        self.requires_grad_(False).eval()

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return (6, 4, 4)

    def preprocess(self, images: Tensor) -> Tensor:
        return images * 2 - 1

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def train(self, mode: bool = True) -> TinyBackbone:
        return super().train(False)


def _planted(n_neurons: int, seed: int) -> tuple[TinyBackbone, Tensor, Tensor]:
    """A ``TinyBackbone``, its latents ``[48, 6, 4, 4]`` of random images and linear responses ``[48, N]`` (seeded)."""
    g = torch.Generator().manual_seed(seed)
    backbone = TinyBackbone(seed)
    images = torch.rand(48, 3, 16, 16, generator=g)
    with torch.no_grad():
        latents = backbone(backbone.preprocess(images))
    w = torch.randn(n_neurons, latents[0].numel(), generator=g)
    responses = latents.flatten(1) @ w.T + 0.1 * torch.randn(48, n_neurons, generator=g)
    return backbone, latents, responses


def tiny_model(readout: nn.Module | None = None, n_neurons: int = 3, seed: int = 0) -> EncodingModel:
    """A fitted encoding model (``TinyBackbone`` + readout, ridge by default) on planted data: images → ``[B, N]``."""
    backbone, latents, responses = _planted(n_neurons, seed)
    readout = readout if readout is not None else RidgeReadout(folds=3)
    readout.fit(latents, responses)
    return EncodingModel(backbone, readout).eval()


def _overrides(member: Any, default: Any) -> bool:
    """Whether ``member`` (a method that :func:`declared` gave) is a component's own, not the base's ``default``."""
    return (member.__func__ if isinstance(member, MethodType) else member) is not default


# -- the checks, kind by kind: each takes a fresh component ------------------------------------
def backbone_shape(backbone: Any) -> None:
    """``input_size`` is ``(H, W)``, ``in_channels`` a positive int, and it is an ``nn.Module``."""
    assert isinstance(backbone, nn.Module), "a backbone must be an nn.Module"
    size = tuple(backbone.input_size)
    assert len(size) == 2 and all(isinstance(s, int) and s > 0 for s in size), f"input_size must be (H, W), got {size}"
    channels = backbone.in_channels
    assert isinstance(channels, int) and channels > 0, f"in_channels must be a positive int, got {channels!r}"


def backbone_frozen(backbone: Any) -> None:
    """It stays in eval mode and its parameters need no gradient."""
    backbone.train()
    assert not backbone.training, "a backbone must stay in eval mode (override train())"
    assert not any(p.requires_grad for p in backbone.parameters()), "a backbone must be frozen (requires_grad off)"


def backbone_latents(backbone: Any) -> None:
    """``preprocess`` keeps the images' shape, the latents have ``latent_shape`` and are finite, and gradients flow
    back to the pixels."""
    images = torch.rand(2, backbone.in_channels, *tuple(backbone.input_size), requires_grad=True)
    x = backbone.preprocess(images)
    assert x.shape[0] == 2 and x.shape[-2:] == images.shape[-2:], f"preprocess changed the shape to {tuple(x.shape)}"
    latents = backbone(x)
    assert tuple(latents.shape[1:]) == tuple(backbone.latent_shape), (
        f"latents {tuple(latents.shape[1:])} do not match latent_shape {tuple(backbone.latent_shape)}"
    )
    assert torch.isfinite(latents).all(), "latents must be finite"
    latents.sum().backward()
    assert images.grad is not None and torch.isfinite(images.grad).all(), "gradients must flow back to the pixels"


def backbone_trainable(backbone: Any) -> None:
    """A trainable backbone (it declares ``trainable``) trains once its weights require gradients: ``train()`` then
    sets training mode, and its ``regularizer()`` is a finite scalar with gradients to its weights. (Nothing to check
    for a frozen one.)"""
    if not declared(backbone, BackboneModule).trainable:
        return
    backbone.requires_grad_(True)
    try:
        backbone.train()
        assert backbone.training, "a trainable backbone must enter training mode while its weights require gradients"
        penalty = backbone.regularizer()
        assert isinstance(penalty, Tensor) and penalty.dim() == 0, "regularizer() must return a scalar tensor"
        assert torch.isfinite(penalty), "regularizer() must be finite"
        penalty.backward()
    finally:
        backbone.requires_grad_(False).eval()


def _fitted_readout(readout: Any) -> tuple[Any, Tensor]:
    """``readout`` fitted on planted data, and latents ``[5, ...]`` of new images."""
    assert isinstance(readout, nn.Module), "a readout must be an nn.Module"
    model = tiny_model(readout)
    return readout, model.latents(torch.rand(5, 3, 16, 16))


def readout_contract(readout: Any) -> None:
    """``[B, ...]`` latents → ``[B, N]``, with ``pooled`` ``[B, N, D]``, ``weight`` ``[N, D]`` and ``bias`` ``[N]``
    meeting ``r_n = φ(⟨w_n, z_n⟩ + b_n)``."""
    readout, latents = _fitted_readout(readout)
    out = readout(latents)
    n = out.shape[1]
    assert out.shape == (5, n), f"a readout maps [B, ...] latents to [B, N]; got {tuple(out.shape)}"
    z, w, b = readout.pooled(latents), readout.weight, readout.bias
    assert z.dim() == 3 and z.shape[:2] == (5, n), f"pooled() must be [B, N, D]; got {tuple(z.shape)}"
    assert w.shape == (n, z.shape[2]), f"weight must be [N, D] = {(n, z.shape[2])}; got {tuple(w.shape)}"
    assert b.shape == (n,), f"bias must be [N]; got {tuple(b.shape)}"
    contract = readout.nonlinearity((z * w).sum(-1) + b)
    torch.testing.assert_close(out, contract, atol=1e-4, rtol=1e-4, msg="the readout breaks r_n = φ(⟨w_n, z_n⟩ + b_n)")


def readout_restores(readout: Any) -> None:
    """``initialize`` + ``load_state_dict`` restore the fitted readout exactly (how a saved model loads)."""
    readout, latents = _fitted_readout(readout)
    with torch.no_grad():
        out = readout(latents)
    fresh = copy.deepcopy(readout)
    fresh.initialize(tuple(latents.shape[1:]), out.shape[1])
    fresh.load_state_dict(readout.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(
            fresh(latents), out, rtol=0, atol=0, msg="initialize() + load_state_dict() must restore the fitted readout"
        )


def readout_options(readout: Any) -> None:
    """The optional members (:class:`ReadoutModule`): ``shared_pooled`` equals ``pooled`` for every neuron,
    ``dimension_channels`` gives each dimension's channel, and an own ``fit_rows`` fits as ``fit`` on a copy."""
    readout, latents = _fitted_readout(readout)
    members = declared(readout, ReadoutModule)
    with torch.no_grad():
        z = readout.pooled(latents)
        if members.shared_pooled is not None:
            shared = members.shared_pooled(latents)
            assert shared.shape == (z.shape[0], z.shape[2]), f"shared_pooled() must be [B, D]; got {shared.shape}"
            torch.testing.assert_close(
                z, shared[:, None].expand_as(z), msg="shared_pooled(latents) must equal pooled(latents)[:, n] for all n"
            )
    channels = members.dimension_channels()
    assert channels.shape == (z.shape[2],) and not channels.is_floating_point() and (channels >= 0).all(), (
        f"dimension_channels() must be [D] = ({z.shape[2]},) non-negative channel indices; got {channels!r}"
    )
    if _overrides(members.fit_rows, ReadoutModule.fit_rows):  # its own: the same fit as fit() on a copy of the rows
        _, planted, responses = _planted(readout.weight.shape[0], 0)
        rows = torch.arange(1, planted.shape[0], 2)
        in_place, copied = copy.deepcopy(readout), copy.deepcopy(readout)
        declared(in_place, ReadoutModule).fit_rows(planted, responses, rows)
        copied.fit(planted[rows], responses[rows])
        with torch.no_grad():
            torch.testing.assert_close(
                in_place(latents), copied(latents), msg="fit_rows(x, y, rows) must equal fit(x[rows], y[rows])"
            )


def _unit_candidates() -> tuple[Tensor, Tensor, torch.Generator]:
    """Unit candidates ``[G=2, K=9, D=16]``, queries ``[2, 3, 16]`` among them (rows 4, 1, 7), and a generator."""
    g = torch.Generator().manual_seed(0)
    candidates = torch.randn(2, 9, 16, generator=g)
    candidates = candidates / candidates.norm(dim=-1, keepdim=True)
    return candidates, candidates[:, [4, 1, 7]], g


def matcher_shapes(matcher: Any) -> None:
    """``similarity([G, Q, D], [G, K, D])`` is ``[G, Q, K]``, the same batched and unbatched."""
    candidates, query, _ = _unit_candidates()
    sim = matcher.similarity(query, candidates)
    assert sim.shape == (2, 3, 9), f"similarity([G, Q, D], [G, K, D]) must be [G, Q, K]; got {tuple(sim.shape)}"
    torch.testing.assert_close(
        sim[1], matcher.similarity(query[1], candidates[1]), msg="similarity must be the same batched and unbatched"
    )


def matcher_self_is_most_similar(matcher: Any) -> None:
    """Higher is more similar: a vector is its own best match."""
    candidates, query, _ = _unit_candidates()
    _, index = match_references(matcher, query, candidates, top_k=1)
    assert index[..., 0].tolist() == [[4, 1, 7]] * 2, "a vector must be most similar to itself (higher = more similar)"


def matcher_factored(matcher: Any) -> None:
    """``similarity_factored(query, weight, latents)`` equals ``similarity(query, weight ⊙ latents)``."""
    _, query, g = _unit_candidates()
    weight, latents = torch.rand(2, 16, generator=g) + 0.5, torch.randn(9, 16, generator=g)  # candidates as factors
    factored = declared(matcher, Matcher).similarity_factored(query.clone(), weight, latents)
    assert factored.shape == (2, 3, 9), f"similarity_factored must be [G, Q, K]; got {tuple(factored.shape)}"
    torch.testing.assert_close(
        factored,
        matcher.similarity(query, weight[:, None, :] * latents[None]),
        atol=1e-5,
        rtol=1e-4,
        msg="similarity_factored(query, weight, latents) must equal similarity(query, weight ⊙ latents)",
    )


def _method_run(method: Any) -> tuple[Callable[..., Tensor], Tensor, Tensor, Tensor]:
    """``run(images, references, targets) -> maps [B, H, W]`` of a built ``method`` (pairwise or not), and inputs."""
    g = torch.Generator().manual_seed(1)
    x, ref = torch.rand(3, 3, 16, 16, generator=g), torch.rand(3, 3, 16, 16, generator=g)
    target = torch.tensor([0, 2, 1])

    def run(xs: Tensor, refs: Tensor, t: Tensor) -> Tensor:
        xs = xs.clone().requires_grad_(True)
        if is_pairwise(method):
            result = method.attribute((xs, refs.clone().requires_grad_(True)), target=t)
            result = result[0] if isinstance(result, (tuple, list)) else result
        else:
            result = method.attribute(xs, target=t)
        return reduce_channels(result.detach())

    return run, x, ref, target


def method_attribute(method: Any) -> None:
    """It has ``attribute(inputs, target=...)`` giving finite maps ``[B, C, H, W]`` or ``[B, H, W]``."""
    try:
        attribute = method.attribute
    except AttributeError:
        raise AssertionError("a method must have attribute(inputs, target=...)") from None
    assert callable(attribute), "a method must have attribute(inputs, target=...)"
    run, x, ref, target = _method_run(method)
    maps = run(x, ref, target)
    assert maps.shape == (3, 16, 16), f"attributions must be [B, C, H, W] or [B, H, W]; got maps {tuple(maps.shape)}"
    assert torch.isfinite(maps).all(), "attributions must be finite"


def method_batches(method: Any) -> None:
    """A batch gives the maps a per-item loop gives (``batch_invariant``); a stochastic method (``batch_invariant =
    False``) is seeded: repeated calls give identical maps."""
    run, x, ref, target = _method_run(method)
    maps = run(x, ref, target)
    if not declared(method, AttributionMethod).batch_invariant:  # stochastic: noise drawn per batch, but seeded
        torch.testing.assert_close(
            run(x, ref, target),
            maps,
            atol=0,
            rtol=0,
            msg="a stochastic method (batch_invariant = False) must be seeded: "
            "repeated calls must give identical attributions",
        )
        return
    looped = torch.cat([run(x[i : i + 1], ref[i : i + 1], target[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(maps, looped, atol=1e-5, rtol=1e-4, msg="batched attributions must equal looped ones")


def metric_direction(metric: Any) -> None:
    """It declares ``higher_is_better`` as a bool."""
    assert isinstance(metric.higher_is_better, bool), "a metric declares higher_is_better: bool"


def _metric_batch(partner_dependent: bool = True) -> AttributionBatch:
    """A batch of 4 maps with every field a metric may need; a single-image method's (``explain_with_partners``
    None) unless ``partner_dependent``."""
    model = tiny_model()
    g = torch.Generator().manual_seed(2)
    inputs, targets = torch.rand(4, 3, 16, 16, generator=g), torch.tensor([0, 1, 2, 0])

    def explain(other: nn.Module) -> Tensor:  # the signed gradient, channel-summed, of ``other``
        x = inputs.clone().requires_grad_(True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(other(x).gather(1, targets[:, None]).sum(), x)
        return grad.sum(1)

    def explain_with(partners: Tensor) -> Tensor:  # a map that depends on the partner: the gradient, scaled by it
        return explain(model) * partners.mean(dim=(1, 2, 3))[:, None, None]

    masks = torch.rand(4, 16, 16, generator=g) > 0.5
    head, limbs = masks & (torch.rand(4, 16, 16, generator=g) > 0.5), masks & (torch.rand(4, 16, 16, generator=g) > 0.5)
    partner_head = torch.rand(4, 16, 16, generator=g) > 0.7
    return AttributionBatch(
        model,
        inputs,
        explain(model),
        targets,
        head | limbs,
        explain=explain,
        unshared_masks=~masks & (torch.rand(4, 16, 16, generator=g) > 0.7),
        shared_parts={"head": head, "limbs": limbs},
        partner_parts={"head": partner_head, "limbs": ~partner_head},
        partners=torch.rand(4, 3, 16, 16, generator=g),
        explain_with_partners=explain_with if partner_dependent else None,
    )


def metric_scores(metric: Any) -> None:
    """One score per map ``[B]``, on a batch with every field a metric may need."""
    scores = metric(_metric_batch())
    assert isinstance(scores, Tensor) and scores.shape == (4,), (
        f"a metric returns one score per map, [B]; got {scores!r}"
    )


def metric_single_image_value(metric: Any) -> None:
    """A metric that declares ``single_image_value`` (pairwise-only) gives single-image maps that score (where
    defined); nothing to check for one that declares none."""
    value = single_image_value(metric)
    if value is None:
        return
    scores = metric(_metric_batch(partner_dependent=False))
    finite = scores[torch.isfinite(scores)]
    assert finite.numel(), "no finite score on the check's batch of single-image maps"
    torch.testing.assert_close(
        finite,
        torch.full_like(finite, value),
        msg=f"it declares single_image_value = {value}, but single-image maps score {finite.tolist()}",
    )


def _check_synthesis_result(result: Any, model: nn.Module, neuron: int) -> int:
    """``result`` of ``model``'s output ``neuron`` meets :class:`SynthesisResult`'s shapes; its number of images."""
    s = result.images.shape[0]
    assert result.images.shape[1:] == (3, 16, 16), f"images must be [S, C, H, W]; got {tuple(result.images.shape)}"
    assert result.responses.shape == (s,), f"responses must be [S]; got {tuple(result.responses.shape)}"
    with torch.no_grad():
        actual = model(result.images)[:, neuron]
    torch.testing.assert_close(
        result.responses,
        actual,
        atol=1e-4,
        rtol=1e-4,
        msg="responses must be the neuron's responses to the returned images",
    )
    assert result.history.dim() == 2 and result.history.shape[1] == s, "history must be [steps, S]"
    assert all(isinstance(v, float) for v in result.cost.values()), "cost values must be floats"
    return s


def synthesizer_result(synthesizer: Any) -> None:
    """``synthesize(model, neuron)`` returns what the model saw: images ``[S, C, H, W]``, their responses, the
    history ``[steps, S]`` and float costs."""
    model = tiny_model()
    _check_synthesis_result(synthesizer.synthesize(model, 1), model, 1)


def synthesizer_declarations(synthesizer: Any) -> None:
    """``neuron_batch`` is an int ≥ 1; ``own_generators`` and ``thread_safe`` are bools."""
    members = declared(synthesizer, Synthesizer)
    batch = members.neuron_batch
    assert isinstance(batch, int) and not isinstance(batch, bool) and batch >= 1, (
        f"neuron_batch must be an int >= 1; got {batch!r}"
    )
    assert isinstance(members.own_generators, bool), "own_generators must be a bool"
    assert isinstance(members.thread_safe, bool), "thread_safe must be a bool"


def synthesizer_many(synthesizer: Any) -> None:
    """A synthesizer that samples several neurons together returns one result per neuron, in order."""
    if neurons_per_loop(synthesizer) > 1:
        model = tiny_model()
        results = declared(synthesizer, Synthesizer).synthesize_many(model, [2, 0], references=[None, None])
        assert len(results) == 2, f"synthesize_many of 2 neurons must return 2 results; got {len(results)}"
        for neuron, result in zip([2, 0], results):
            _check_synthesis_result(result, model, neuron)


def synthesizer_prior_samples(synthesizer: Any) -> None:
    """Its ``prior_samples(n, seed=...)``, where it has them, are ``[n, C, H, W]`` in [0, 1]."""
    members = declared(synthesizer, Synthesizer)
    if members.prior_samples is not None:
        samples = members.prior_samples(2, seed=0)
        assert samples.dim() == 4 and samples.shape[0] == 2, f"prior_samples(2) must be [2, C, H, W]; got {samples}"
        assert 0 <= samples.min() and samples.max() <= 1, "prior samples must be in [0, 1]"


def _energy_inputs() -> tuple[Tensor, Tensor]:
    """Images ``[3, 1, 24, 24]`` (another size and channel count than the model's) and a reference ``[3, 16, 16]``."""
    g = torch.Generator().manual_seed(3)
    return torch.rand(3, 1, 24, 24, generator=g, requires_grad=True), torch.rand(3, 16, 16, generator=g)


def energy_value(energy: Any) -> None:
    """``bind(model, neuron, reference)(images)`` gives energies and responses ``[B]``, differentiable in the
    images, at any image size and channel count."""
    model = tiny_model()
    images, reference = _energy_inputs()
    value = energy.bind(model, 1, reference=reference)(images)
    assert value.energy.shape == (3,) and value.response.shape == (3,), (
        f"an energy returns energies [B] and responses [B]; got {tuple(value.energy.shape)}, "
        f"{tuple(value.response.shape)}"
    )
    (grad,) = torch.autograd.grad(value.energy.sum(), images)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0, "an energy must be differentiable in the images"


def energy_declarations(energy: Any) -> None:
    """``grayscale`` is a bool and ``norm`` None or positive."""
    members = declared(energy, Energy)
    assert isinstance(members.grayscale, bool), "grayscale must be a bool"
    assert members.norm is None or members.norm > 0, f"norm must be None or > 0; got {members.norm!r}"


def energy_many(energy: Any) -> None:
    """``bind_many``: consecutive groups of images, one neuron each, scored as ``bind`` scores them neuron by
    neuron."""
    model = tiny_model()
    images, reference = _energy_inputs()
    together = declared(energy, Energy).bind_many(model, [2, 1], [reference, reference.flip(-1)], 2)(
        images[:2].repeat(2, 1, 1, 1)
    )
    for k, (neuron, ref) in enumerate([(2, reference), (1, reference.flip(-1))]):
        alone = energy.bind(model, neuron, reference=ref)(images[:2])
        rows = slice(2 * k, 2 * k + 2)
        torch.testing.assert_close(
            together.energy[rows], alone.energy, atol=1e-4, rtol=1e-4, msg="bind_many must equal bind per neuron"
        )
        torch.testing.assert_close(
            together.response[rows], alone.response, atol=1e-4, rtol=1e-4, msg="bind_many must equal bind per neuron"
        )


CHECKS: dict[str, tuple[Callable[[Any], None], ...]] = {
    "backbone": (backbone_shape, backbone_frozen, backbone_latents, backbone_trainable),
    "readout": (readout_contract, readout_restores, readout_options),
    "matcher": (matcher_shapes, matcher_self_is_most_similar, matcher_factored),
    "method": (method_attribute, method_batches),
    "metric": (metric_direction, metric_scores, metric_single_image_value),
    "synthesizer": (synthesizer_result, synthesizer_declarations, synthesizer_many, synthesizer_prior_samples),
    "energy": (energy_value, energy_declarations, energy_many),
}
"""The checks of each component kind, in order: each a function of a freshly built component."""


# -- the public API ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Check:
    """One named check of one component: calling it builds the component afresh and checks one part of its kind's
    contract (torch's global generator seeded), raising ``AssertionError`` naming what is broken. ``id`` is
    ``<kind>:<label>:<check>`` (e.g. ``matcher:cosine:self_is_most_similar``)."""

    kind: str
    label: str
    function: Callable[[Any], None]
    build: Callable[..., Any]

    @property
    def name(self) -> str:
        return self.function.__name__.removeprefix(f"{self.kind}_")

    @property
    def id(self) -> str:
        return f"{self.kind}:{self.label}:{self.name}"

    def __call__(self) -> None:
        with seeded_global_rng(0):
            self.function(self.build(tiny_model()) if self.kind == "method" else self.build())

    def __repr__(self) -> str:
        return f"Check({self.id})"


def checks_for(kind: str, build: Callable[..., Any], label: str) -> list[Check]:
    """The named checks of a component of ``kind`` that ``build()`` makes (``build(model)`` for a method), labelled
    ``label`` in their ids."""
    if kind not in CHECKS:
        raise ValueError(f"unknown component kind {kind!r}; one of {', '.join(CHECKS)}")
    return [Check(kind, label, function, build) for function in CHECKS[kind]]


def checks(
    kind: str, name: str, params: Mapping[str, Any] | None = None, *, registry: Registry | None = None
) -> list[Check]:
    """The named checks of the registered component ``name`` of ``kind``, built with ``params`` each time."""
    component = (registry or get_registry()).get(kind, name)
    params = dict(params or {})
    return checks_for(kind, lambda *args: component.build(*args, **params), name)


def parametrize_with_checks(
    components: Iterable[Sequence[Any]], *, registry: Registry | None = None
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A pytest decorator: one test per check of every component in ``components`` (``(kind, name)`` or ``(kind,
    name, params)``), its id ``<kind>:<name>:<check>``; the test takes the check as ``check`` and calls it."""
    import pytest

    cases = [c for entry in components for c in checks(*entry[:3], registry=registry)]
    return pytest.mark.parametrize("check", cases, ids=[c.id for c in cases])


def check_component(
    kind: str, name: str, params: Mapping[str, Any] | None = None, *, registry: Registry | None = None
) -> None:
    """Run every check of the registered component ``name`` of ``kind`` built with ``params``; the first broken one
    raises ``AssertionError`` naming the broken part of the contract."""
    for check in checks(kind, name, params, registry=registry):
        check()
