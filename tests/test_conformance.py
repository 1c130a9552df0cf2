"""Every registered component, built-in or from a workspace plugin, meets its kind's contract."""

from __future__ import annotations

import pytest

from sharedattr.plugins.hookspecs import KINDS
from sharedattr.plugins.loading import load_registry
from sharedattr.testing import check_component, checks, parametrize_with_checks

# Params for components whose params have no defaults, or whose defaults are slow in a test.
EXAMPLE_PARAMS = {
    ("backbone", "torchvision"): {"model": "resnet18", "layer": "layer1", "input_size": 32},
    ("backbone", "timm"): {"model": "resnet18", "stage": 1, "input_size": 32},
    ("method", "integrated_gradients"): {"n_steps": 8},
    ("metric", "deletion"): {"steps": 4},
    ("metric", "insertion"): {"steps": 4},
    ("synthesizer", "gradient_ascent"): {"steps": 3, "n_seeds": 2},
    ("synthesizer", "egg"): {"steps": 3, "n_seeds": 2},
}

CASES = [(kind, name, EXAMPLE_PARAMS.get((kind, name))) for kind in KINDS for name in load_registry().names(kind)]


@parametrize_with_checks(CASES, registry=load_registry())
def test_component_meets_its_contract(check):
    """One test per named check of every registered component (``<kind>:<name>:<check>``)."""
    check()


def test_every_kind_has_named_checks_and_check_component_runs_them_all():
    names = {kind: [c.name for c in checks(kind, name, params)] for kind, name, params in CASES}
    assert set(names) == set(KINDS) and all(names.values())
    assert names["matcher"] == ["shapes", "self_is_most_similar", "factored"]
    check_component("matcher", "cosine")


def test_checks_catch_a_broken_component():
    class Plugin:
        from sharedattr import hookimpl

        @hookimpl
        def register_matchers(self, register):
            class Distance:  # returns a distance: lower = more similar, against the contract
                def similarity(self, a, b):
                    import torch

                    return torch.cdist(a, b)

            register("distance", Distance)

    registry = load_registry(extra_plugins=[("p", Plugin())])
    with pytest.raises(AssertionError, match="most similar to itself"):
        check_component("matcher", "distance", registry=registry)


def test_a_metric_that_misdeclares_its_single_image_value_fails_its_check():
    """A pairwise-only metric must give single-image maps the value it declares (the report leaves single-image
    methods out of its ranking on that word)."""

    class Plugin:
        from sharedattr import hookimpl

        @hookimpl
        def register_metrics(self, register):
            class Mass:  # scores single-image maps too, yet declares they all score 0
                higher_is_better = True
                single_image_value = 0.0

                def __call__(self, batch):
                    return batch.maps.clamp(min=0).flatten(1).sum(1)

            register("claims_zero", Mass)

    registry = load_registry(extra_plugins=[("p", Plugin())])
    with pytest.raises(AssertionError, match="declares single_image_value = 0.0"):
        check_component("metric", "claims_zero", registry=registry)
    assert [c.name for c in checks("metric", "reference_sensitivity")][-1] == "single_image_value"
    check_component("metric", "reference_sensitivity")
