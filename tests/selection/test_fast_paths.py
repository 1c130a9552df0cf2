"""The fast paths give the same results as the general ones: shared readout vectors, factored matching."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sharedattr.attribution.parallel_backprop import ParallelBackprop, neuron_latents
from sharedattr.encoding.model import EncodingModel
from sharedattr.encoding.readouts.ridge import RidgeReadout
from sharedattr.plugins.contracts import Matcher
from sharedattr.selection.matchers import (
    CosineMatcher,
    DotMatcher,
    EuclideanMatcher,
    PearsonMatcher,
)
from sharedattr.selection.matching import MatchOptions, match_drivers, shared_latents
from sharedattr.testing import TinyBackbone, tiny_model


def ridge(weight: torch.Tensor) -> RidgeReadout:
    readout = RidgeReadout(pooling="avg")
    readout.initialize((weight.shape[1],), weight.shape[0])
    readout.load_state_dict(
        {
            "_weight": weight,
            "_bias": torch.zeros(weight.shape[0]),
            "alpha": torch.ones(weight.shape[0], dtype=torch.float64),
        }
    )
    return readout


class Materialised(nn.Module):
    """The same linear readout, but ``pooled`` a contiguous ``[B, N, D]`` tensor: nothing recognisably shared."""

    def __init__(self, readout: RidgeReadout) -> None:
        super().__init__()
        self.inner = readout

    @property
    def weight(self) -> torch.Tensor:
        return self.inner.weight

    @property
    def bias(self) -> torch.Tensor:
        return self.inner.bias

    def nonlinearity(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def pooled(self, latents: torch.Tensor) -> torch.Tensor:
        return self.inner.pooled(latents).contiguous()

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.inner(latents)


def matching_problem(seed: int = 0, g: int = 5, q: int = 7, k: int = 30, d: int = 24):
    gen = torch.Generator().manual_seed(seed)
    latents = torch.randn(q + k + 5, d, generator=gen).relu()
    latents[3] = 0  # an all-zero vector: the eps guards
    readout = ridge(torch.randn(g, d, generator=gen))
    drivers = torch.stack([torch.randperm(q + 5, generator=gen)[:q] for _ in range(g)])  # some drivers repeat
    return readout, latents, drivers, torch.arange(q + 5, q + 5 + k), torch.arange(g)


@pytest.mark.parametrize(
    "matcher", [CosineMatcher(), DotMatcher(), PearsonMatcher(), EuclideanMatcher()], ids=lambda m: type(m).__name__
)
def test_factored_matching_equals_matching_the_formed_contributions(matcher):
    readout, latents, drivers, cand, neurons = matching_problem()
    fast = match_drivers(readout, latents, matcher, drivers, cand, neurons, 4)
    slow = match_drivers(Materialised(readout), latents, matcher, drivers, cand, neurons, 4)
    torch.testing.assert_close(fast[0], slow[0], rtol=1e-5, atol=1e-5)
    assert torch.equal(fast[1], slow[1])


def test_factored_matching_in_chunks_equals_one_chunk():
    readout, latents, drivers, cand, neurons = matching_problem(seed=1)
    whole = match_drivers(readout, latents, CosineMatcher(), drivers, cand, neurons, 3)
    chunked = match_drivers(
        readout, latents, CosineMatcher(), drivers, cand, neurons, 3, MatchOptions(batch_size=4, memory_bytes=1)
    )  # one neuron per chunk
    torch.testing.assert_close(whole[0], chunked[0])
    assert torch.equal(whole[1], chunked[1])


def test_a_subclass_that_changes_the_similarity_is_not_given_the_parents_shortcut():
    class NegatedCosine(CosineMatcher):
        def similarity(self, a, b):
            return -super().similarity(a, b)

    class Plain(Matcher):  # only similarity: the base similarity_factored forms the contributions
        def similarity(self, a, b):
            return -torch.cdist(a, b, p=1)

    readout, latents, drivers, cand, neurons = matching_problem(seed=2)
    for matcher in (NegatedCosine(), Plain()):
        fast = match_drivers(readout, latents, matcher, drivers, cand, neurons, 2)
        slow = match_drivers(Materialised(readout), latents, matcher, drivers, cand, neurons, 2)
        torch.testing.assert_close(fast[0], slow[0], rtol=1e-5, atol=1e-5)
        assert torch.equal(fast[1], slow[1])


def test_a_matcher_that_does_not_subclass_the_base_gets_its_factored_default():
    """declared() gives a duck-typed matcher Matcher's similarity_factored: the shared latents are pooled once (the
    readout's pooled is never called) and the references are those of the formed contributions."""

    class Duck:  # a plugin's matcher: similarity only, no base class
        def similarity(self, a, b):
            return -torch.cdist(a, b, p=1)

    class CountingRidge(RidgeReadout):
        calls = 0

        def pooled(self, latents):
            CountingRidge.calls += 1
            return super().pooled(latents)

    readout, latents, drivers, cand, neurons = matching_problem(seed=3)
    counting = CountingRidge(pooling="avg")
    counting.initialize((readout.weight.shape[1],), readout.weight.shape[0])
    counting.load_state_dict(readout.state_dict())
    fast = match_drivers(counting, latents, Duck(), drivers, cand, neurons, 2)
    assert CountingRidge.calls == 0
    slow = match_drivers(Materialised(readout), latents, Duck(), drivers, cand, neurons, 2)
    torch.testing.assert_close(fast[0], slow[0], rtol=1e-5, atol=1e-5)
    assert torch.equal(fast[1], slow[1])


def test_a_readout_that_sets_shared_pooled_to_none_is_matched_through_pooled():
    class Unshared(RidgeReadout):  # pooled no longer one shared vector: the documented opt-out
        shared_pooled = None

        def pooled(self, latents):
            return self.features(latents)[:, None, :].repeat(1, self.weight.shape[0], 1)

    readout, latents, drivers, cand, neurons = matching_problem(seed=4)
    unshared = Unshared(pooling="avg")
    unshared.initialize((readout.weight.shape[1],), readout.weight.shape[0])
    unshared.load_state_dict(readout.state_dict())
    assert shared_latents(unshared, latents, torch.tensor([0, 1]), 2) is None
    fast = match_drivers(readout, latents, CosineMatcher(), drivers, cand, neurons, 2)
    slow = match_drivers(unshared, latents, CosineMatcher(), drivers, cand, neurons, 2)
    torch.testing.assert_close(fast[0], slow[0], rtol=1e-5, atol=1e-5)
    assert torch.equal(fast[1], slow[1])


def test_shared_latents_are_recognised_only_where_every_neuron_shares_them():
    readout, latents, *_ = matching_problem()
    rows = torch.tensor([0, 5, 9])
    torch.testing.assert_close(shared_latents(readout, latents, rows, 2), latents[rows])
    assert shared_latents(Materialised(readout), latents, rows, 2) is None

    class ExpandedOnly(Materialised):  # no shared_pooled, but pooled is an expanded view
        def pooled(self, latents):
            return self.inner.pooled(latents)

    torch.testing.assert_close(shared_latents(ExpandedOnly(readout), latents, rows, 2), latents[rows])


def test_parallel_backprop_through_the_shared_vector_equals_indexing_pooled():
    model = tiny_model(n_neurons=3)
    slow_model = EncodingModel(TinyBackbone(), Materialised(model.readout)).eval()
    g = torch.Generator().manual_seed(3)
    x_a, x_b = torch.rand(4, 3, 16, 16, generator=g), torch.rand(4, 3, 16, 16, generator=g)
    targets = torch.tensor([0, 2, 1, 2])
    torch.testing.assert_close(neuron_latents(model, x_a, targets), neuron_latents(slow_model, x_a, targets))
    for params in (
        {},
        {"path": "gradient"},
        {"variant": "positive", "path": "ig", "n_steps": 4},
        {"internal_batch_size": 3},
    ):
        fast = ParallelBackprop(model, **params).attribute((x_a, x_b), target=targets)
        slow = ParallelBackprop(slow_model, **params).attribute((x_a, x_b), target=targets)
        for a, b in zip(fast, slow):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_parallel_backprop_leaves_the_callers_images_alone():
    model = tiny_model(n_neurons=3)
    g = torch.Generator().manual_seed(4)
    x_a, x_b = torch.rand(2, 3, 16, 16, generator=g), torch.rand(2, 3, 16, 16, generator=g)
    copies = x_a.clone(), x_b.clone()
    for path in ("layer", "gradient", "ig"):
        ParallelBackprop(model, path=path, n_steps=2).attribute((x_a, x_b), target=1)
    assert not x_a.requires_grad and not x_b.requires_grad
    assert torch.equal(x_a, copies[0]) and torch.equal(x_b, copies[1])
