"""The sharedattr-quantus workspace plugin: discovered through its entry point, and Quantus 0.6
agrees with sharedattr's own metrics, except where the definitions are known to differ."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from linear_neurons import LinearNeurons, linear_batch
from sharedattr.plugins.contracts import AttributionBatch

QUANTUS_METRICS = [
    "quantus_pointing_game",
    "quantus_relevance_mass",
    "quantus_relevance_rank",
    "quantus_sparseness",
    "quantus_faithfulness_correlation",
]


@pytest.fixture
def batch() -> AttributionBatch:
    """Random continuous maps (no ties) and masks; map 3 has an empty mask."""
    g = torch.Generator().manual_seed(0)
    maps = torch.randn(6, 12, 12, generator=g)
    masks = torch.rand(6, 12, 12, generator=g) > 0.6
    masks[3] = False
    return AttributionBatch(
        torch.nn.Identity(), torch.rand(6, 3, 12, 12, generator=g), maps, torch.zeros(6, dtype=torch.long), masks
    )


def both(registry, ours: str, theirs: str, batch: AttributionBatch, **params) -> tuple[torch.Tensor, torch.Tensor]:
    return registry.build("metric", ours, **params)(batch), registry.build("metric", theirs, **params)(batch)


def test_plugin_is_discovered_through_its_entry_point(registry):
    assert registry.entry_points["sharedattr-quantus"] == "quantus = sharedattr_quantus"
    for name in QUANTUS_METRICS:
        assert registry.get("metric", name).source == "sharedattr-quantus"


@pytest.mark.parametrize(
    ("ours", "theirs", "params"),
    [
        ("pointing_game", "quantus_pointing_game", {}),
        ("relevance_mass", "quantus_relevance_mass", {"relevance": "positive"}),
        ("relevance_mass", "quantus_relevance_mass", {"relevance": "absolute"}),
        ("relevance_rank", "quantus_relevance_rank", {}),
    ],
)
def test_localisation_agrees_with_quantus(registry, batch, ours, theirs, params):
    mine, quantus = both(registry, ours, theirs, batch, **params)
    torch.testing.assert_close(quantus, mine, equal_nan=True)
    assert torch.isnan(mine[3]) and torch.isfinite(mine[[0, 1, 2, 4, 5]]).all()


def test_sparseness_is_gini_up_to_quantus_offset(registry, batch):
    batch.maps[2] = 0.0  # an all-zero map: Gini 0 in both
    mine = registry.build("metric", "gini")(batch)
    torch.testing.assert_close(registry.build("metric", "quantus_sparseness")(batch), mine, atol=1e-6, rtol=0)


def test_known_differences(registry, batch):
    from sharedattr_quantus import PointingGame, as_numpy, quantus_module, quiet

    # Quantus writes NaN for an empty mask into a boolean array, which reads back as True:
    # raw Quantus scores map 3 as a hit; the plugin restores the NaN Quantus meant.
    with quiet():
        raw = quantus_module().PointingGame(normalise=False, abs=False, disable_warnings=True)(
            model=None, **as_numpy(batch), channel_first=True
        )
    assert bool(raw[3]) is True and torch.isnan(PointingGame()(batch)[3])

    # Ties at the maximum: Quantus counts a hit if any maximal pixel is inside, sharedattr the first one.
    mask = batch.masks[0].flatten()
    outside = int((~mask).nonzero()[0, 0])
    inside = outside + 1 + int(mask[outside + 1 :].nonzero()[0, 0])  # a later pixel, inside the mask
    batch.maps[0].view(-1)[[outside, inside]] = 10.0
    mine, quantus = both(registry, "pointing_game", "quantus_pointing_game", batch)
    assert mine[0] == 0 and quantus[0] == 1

    # Quantus' default relevance mass counts signed relevance: the ratio of signed sums, unbounded.
    signed = registry.build("metric", "quantus_relevance_mass", relevance="signed")(batch)
    m, s = batch.maps.flatten(1), batch.masks.flatten(1)
    torch.testing.assert_close(signed[[0, 1, 2, 4, 5]], ((m * s).sum(1) / m.sum(1))[[0, 1, 2, 4, 5]])
    assert (signed.nan_to_num() - registry.build("metric", "relevance_mass")(batch).nan_to_num()).abs().max() > 0.5


def test_faithfulness_correlation_agrees_on_one_channel_only(registry):
    """Quantus removes single channel values, sharedattr whole pixels: they coincide for C = 1.

    On a linear model the gradient × input map predicts the drop exactly: r = 1 in both
    for C = 1. For C = 3 Quantus' random channel values no longer carry the pixel's
    summed relevance, so its correlation drops while sharedattr's stays 1.
    """
    params = {"n_runs": 50, "subset_size": 20}
    for channels in (1, 3):
        batch = linear_batch("true", c=channels)
        assert isinstance(batch.model, LinearNeurons)
        mine, quantus = both(registry, "faithfulness_correlation", "quantus_faithfulness_correlation", batch, **params)
        torch.testing.assert_close(mine, torch.ones(4), atol=1e-5, rtol=0)
        if channels == 1:
            torch.testing.assert_close(quantus, torch.ones(4), atol=1e-5, rtol=0)
        else:
            assert (quantus < 0.95).all()


def test_quantus_faithfulness_is_seeded_and_leaves_numpy_alone(registry):
    batch = linear_batch("random", c=1)
    metric = registry.build("metric", "quantus_faithfulness_correlation", n_runs=20, subset_size=10)
    np.random.seed(123)
    expected_next = np.random.rand()
    np.random.seed(123)
    first = metric(batch)
    assert np.random.rand() == expected_next
    torch.testing.assert_close(metric(batch), first)


def test_degenerate_batch_scores_nan_instead_of_quantus_assert(registry, batch):
    batch.maps.zero_()
    assert torch.isnan(registry.build("metric", "quantus_relevance_rank")(batch)).all()
