"""Selection and matching on planted data where the right drivers and references are known."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from sharedattr.runtime.errors import UserError
from sharedattr.selection.matchers import (
    CosineMatcher,
    DotMatcher,
    EuclideanMatcher,
    PearsonMatcher,
)
from sharedattr.selection.matching import MatchOptions, MatchSettings, match_drivers, match_pairs
from sharedattr.selection.neurons import (
    preferred_categories,
    select_neurons,
    top_drivers,
)


class SharedLatentReadout(nn.Module):
    """``z_n(x) = x`` for every neuron (like ridge on flat latents) with given weights ``[N, D]``."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("weight", weight)

    def pooled(self, latents: torch.Tensor) -> torch.Tensor:
        return latents[:, None, :].expand(-1, self.weight.shape[0], -1)


def planted(matcher: str, seed: int = 0):
    """Latents of 12 candidates (rows 0-11) and 3 drivers (rows 12-14); driver q is built from candidate 3q+1."""
    g = torch.Generator().manual_seed(seed)
    d = 16
    w = torch.rand(1, d, generator=g) + 0.5
    cand = torch.randn(12, d, generator=g)
    answers = [1, 4, 7]
    drivers = []
    for k in answers:
        c = w[0] * cand[k]
        if matcher == "cosine":  # same direction, another length
            c = 2.5 * c
        elif matcher == "pearson":  # an affine copy of the contribution vector
            c = 2.0 * c + 1.0
        elif matcher == "euclidean":  # nearly the same vector
            c = c + 0.01 * torch.randn(d, generator=g)
        drivers.append(c / w[0])
    if matcher == "dot":  # the right reference has by far the largest projection on the driver
        for q, k in enumerate(answers):
            drivers[q] = torch.randn(d, generator=g)
            cand[k] = 10 * drivers[q] / w[0]
    latents = torch.cat([cand, torch.stack(drivers)])
    return SharedLatentReadout(w), latents, torch.tensor(answers)


@pytest.mark.parametrize(
    "name,matcher",
    [
        ("cosine", CosineMatcher()),
        ("pearson", PearsonMatcher()),
        ("euclidean", EuclideanMatcher()),
        ("dot", DotMatcher()),
    ],
)
def test_every_matcher_finds_the_planted_reference(name, matcher):
    readout, latents, answers = planted(name)
    drivers = torch.tensor([[12, 13, 14]])
    scores, refs = match_drivers(readout, latents, matcher, drivers, torch.arange(12), torch.tensor([0]), top_k=3)
    assert refs.shape == scores.shape == (1, 3, 3)
    assert refs[0, :, 0].tolist() == answers.tolist()
    assert (scores[..., :-1] >= scores[..., 1:]).all()  # most similar first


def test_matching_is_neuron_specific():
    """The same driver matches different references for neurons that weight different latent dimensions."""
    d = 10
    w = torch.zeros(2, d)
    w[0, :5] = 1.0
    w[1, 5:] = 1.0
    g = torch.Generator().manual_seed(1)
    a, b, driver = torch.randn(3, d, generator=g)
    a[:5] = driver[:5]  # candidate 0 shares the driver's dimensions 0-4
    b[5:] = driver[5:]  # candidate 1 shares dimensions 5-9
    latents = torch.stack([a, b, driver])
    _, refs = match_drivers(
        SharedLatentReadout(w),
        latents,
        CosineMatcher(),
        torch.tensor([[2], [2]]),
        torch.tensor([0, 1]),
        torch.tensor([0, 1]),
        top_k=1,
    )
    assert refs[:, 0, 0].tolist() == [0, 1]


def test_chunked_matching_equals_one_batch():
    g = torch.Generator().manual_seed(2)
    readout = SharedLatentReadout(torch.randn(7, 32, generator=g))
    latents = torch.randn(60, 32, generator=g)
    drivers = torch.randint(40, 60, (7, 3), generator=g)
    args = (readout, latents, CosineMatcher(), drivers, torch.arange(40), torch.arange(7), 4)
    whole = match_drivers(*args, MatchOptions(batch_size=64))
    chunked = match_drivers(*args, MatchOptions(batch_size=5, memory_bytes=40 * 32 * 4 * 2))  # 2 neurons per chunk
    torch.testing.assert_close(whole[0], chunked[0])
    assert torch.equal(whole[1], chunked[1])


def test_drivers_are_the_strongest_out_of_category_images_and_nan_ranks_last():
    drive = torch.tensor([[9.0, 0.0], [1.0, 5.0], [3.0, float("nan")], [2.0, 4.0], [8.0, 1.0]])
    ooc = torch.tensor([1, 2, 3])  # rows 0 and 4 are in the preferred category
    assert top_drivers(drive, ooc, torch.tensor([0, 1]), 2).tolist() == [[2, 3], [1, 3]]


def test_match_pairs_groups_by_preferred_category():
    g = torch.Generator().manual_seed(3)
    readout = SharedLatentReadout(torch.rand(2, 8, generator=g))
    latents = torch.randn(10, 8, generator=g)
    categories = ["a"] * 5 + ["b"] * 5
    drive = torch.randn(10, 2, generator=g)
    pairs = match_pairs(
        readout,
        latents,
        CosineMatcher(),
        categories,
        drive,
        [1, 0],
        ["a", "b"],
        MatchSettings(drivers_per_neuron=2, references_per_driver=2),
    )
    assert [p.neuron for p in pairs] == [1, 1, 1, 1, 0, 0, 0, 0]  # in the order asked for
    for p in pairs:
        pref = "a" if p.neuron == 1 else "b"
        assert categories[p.reference] == pref and categories[p.driver] != pref
    assert [p.rank for p in pairs[:4]] == [0, 1, 0, 1]


def test_neuron_selection_and_preferred_categories():
    ids = ["n0", "n1", "n2"]
    r = torch.tensor([0.2, 0.9, float("nan")])
    assert select_neurons(ids, r, top_k=2) == [1, 0]
    assert select_neurons(ids, r, min_r=0.5) == [1]
    assert select_neurons(ids, r, neurons=["n2"]) == [2]
    with pytest.raises(UserError, match=r"unknown neuron id\(s\) \['n9'\]"):
        select_neurons(ids, r, neurons=["n9"])
    with pytest.raises(UserError, match="no neuron has held-out r ≥ 0.95"):
        select_neurons(ids, r, min_r=0.95)
    drive = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 2.0], [0.0, math.nan]])
    assert preferred_categories(["x", "x", "y", "y"], drive, [0, 1]) == ["x", "y"]
    with pytest.raises(UserError, match="not one of"):
        preferred_categories(["x", "y"], drive[:2], [0], "z")


def test_channel_matching_compares_contributions_summed_within_each_channel():
    """on = "channels": the similarity of Σ_positions w ⊙ z per channel, so a reference with the driver's channel
    activity at other positions is found."""
    from sharedattr.encoding.readouts.ridge import RidgeReadout
    from sharedattr.selection.matchers import CosineMatcher
    from sharedattr.selection.matching import match_drivers

    g = torch.Generator().manual_seed(0)
    c, h, w = 3, 2, 2
    readout = RidgeReadout()
    readout.initialize((c, h, w), 1)
    readout.load_state_dict(
        {"_weight": torch.ones(1, c * h * w), "_bias": torch.zeros(1), "alpha": torch.ones(1, dtype=torch.float64)}
    )
    driver = torch.zeros(c, h, w)
    driver[0, 0, 0], driver[1, 0, 0] = 1.0, 2.0
    moved = torch.zeros(c, h, w)
    moved[0, 1, 1], moved[1, 1, 1] = 1.0, 2.0  # the same channels, elsewhere
    other = torch.rand(c, h, w, generator=g)
    other[:, 0, 0] = driver[:, 0, 0] * 0.9  # close position by position, other channels elsewhere
    other[2] += 2.0
    latents = torch.stack([driver, moved, other])
    drivers, candidates, neurons = torch.tensor([[0]]), torch.tensor([1, 2]), torch.tensor([0])
    _, by_dimension = match_drivers(readout, latents, CosineMatcher(), drivers, candidates, neurons, 1)
    channel = MatchOptions(on="channels")
    _, by_channel = match_drivers(readout, latents, CosineMatcher(), drivers, candidates, neurons, 1, channel)
    assert by_dimension.item() == 2 and by_channel.item() == 1
