"""Path methods hold at most the images a memory budget allows per pass, whatever their step or sample counts."""

from __future__ import annotations

import contextlib

import pytest
import torch

from sharedattr.attribution.engine import bound_memory
from sharedattr.runtime.memory import ACTIVATION_FACTOR, bytes_per_image, images_per_pass
from sharedattr.testing import tiny_model

pytestmark = [
    pytest.mark.filterwarnings("ignore:Setting (forward, )?backward hooks:UserWarning"),
    pytest.mark.filterwarnings("ignore:Input Tensor 0 did not already require gradients:UserWarning"),
    pytest.mark.usefixtures("one_thread"),
]

LIMIT = 8
X = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
REF = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
TARGET = torch.tensor([0, 2, 1])
PATH_METHODS = {
    "integrated_gradients": {"n_steps": 32},
    "smoothgrad": {"samples": 32},
    "gradient_shap": {"n_samples": 32},
    "occlusion": {"window": 4, "stride": 2},
    "saliency": {"noise_tunnel": {"samples": 32}},
    "integrated_gradients/tunnel": {"n_steps": 8, "noise_tunnel": {"samples": 8}},
}


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@contextlib.contextmanager
def largest_batch(model):
    """Record the largest batch the backbone sees: ``seen[0]``."""
    seen = [0]
    handle = model.backbone.register_forward_pre_hook(lambda _m, args: seen.__setitem__(0, max(seen[0], len(args[0]))))
    try:
        yield seen
    finally:
        handle.remove()


def explain(registry, model, name, params, limit):
    method = registry.build("method", name.split("/")[0], model, **params)
    bound_memory(method, limit)
    with largest_batch(model) as seen:
        if name == "parallel_backprop":
            maps = method.attribute((X, REF), target=TARGET)[0]
        else:
            maps = method.attribute(X.clone().requires_grad_(True), target=TARGET)
    return maps, seen[0]


def test_one_image_costs_its_activations_and_more_pixels_cost_more(model):
    per_image = bytes_per_image(model, (16, 16), 3)
    assert per_image > ACTIVATION_FACTOR * 3 * 16 * 16 * 4  # more than the input alone
    backbone = model.backbone  # the readout is fitted to one size; the backbone takes any
    assert bytes_per_image(backbone, (32, 32), 3) > 3 * bytes_per_image(backbone, (16, 16), 3)  # grows with area
    assert images_per_pass(1, per_image) == (1 << 20) // per_image
    assert images_per_pass(1, 1 << 40) == 1  # never zero


@pytest.mark.parametrize("name", [*PATH_METHODS, "parallel_backprop"])
def test_a_bounded_method_never_holds_more_images_than_it_may(registry, model, name):
    params = PATH_METHODS.get(name, {"path": "ig", "n_steps": 32})
    unbounded, largest = explain(registry, model, name, params, None)
    assert largest > LIMIT  # without a bound one pass holds batch × count images
    bounded, largest = explain(registry, model, name, params, LIMIT)
    assert largest <= LIMIT
    assert bounded.shape == unbounded.shape and torch.isfinite(bounded).all()
    again, _ = explain(registry, model, name, params, LIMIT)
    assert torch.equal(again, bounded)  # deterministic (stochastic methods too: seeded)
    if name in ("integrated_gradients", "occlusion", "parallel_backprop"):  # no draws: chunking changes only rounding
        torch.testing.assert_close(bounded, unbounded, rtol=1e-4, atol=1e-6)


def test_parallel_backprop_ig_does_not_depend_on_its_chunks(registry, model):
    params = {"path": "ig", "n_steps": 12}
    maps = [explain(registry, model, "parallel_backprop", params, limit)[0] for limit in (6, 12, 30, None)]
    for other in maps[1:]:
        torch.testing.assert_close(other, maps[0], rtol=1e-6, atol=1e-8)


def test_the_budget_is_a_validated_spec_field(tiny_config):
    from sharedattr.config.validation import validate_experiment
    from sharedattr.runtime.errors import SpecError

    assert validate_experiment(tiny_config).attribution.memory_mb == 2048
    with pytest.raises(SpecError, match="attribution.memory_mb"):
        validate_experiment({**tiny_config, "attribution": {"memory_mb": 1}})
