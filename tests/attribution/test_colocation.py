"""colocation, the co-location control, against independent autograd computations on a tiny model."""

from __future__ import annotations

import pytest
import torch

from sharedattr.attribution.colocation import Colocation, colocation_map
from sharedattr.runtime.errors import SpecError
from sharedattr.testing import tiny_model


@pytest.fixture(scope="module")
def model():
    return tiny_model(n_neurons=3)


def images(b=4, seed=3):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, 16, 16, generator=g), torch.rand(b, 3, 16, 16, generator=g)


def own_gradient(model, x, targets):
    """d r_n(x_i) / d x_i one image at a time, summed over colour channels: the gradient path's own map."""
    out = []
    for i, n in enumerate(targets.tolist()):
        xi = x[i : i + 1].clone().requires_grad_(True)
        (g,) = torch.autograd.grad(model(xi)[0, n], xi)
        out.append(g.sum(1, keepdim=True))
    return torch.cat(out)


def own_layer(model, x, targets):
    """Σ_k w_n ⊙ F at the backbone output (a linear readout on flattened latents), upsampled: the layer path's own
    map, computed from the latents without autograd."""
    with torch.no_grad():
        latents = model.latents(x)
        w = model.readout.weight[targets].view_as(latents)
        cam = (w * latents).sum(1, keepdim=True)
        return torch.nn.functional.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)


@pytest.mark.parametrize("path", ["gradient", "layer"])
def test_colocation_is_the_product_of_the_positive_own_maps(model, path):
    x_a, x_b = images()
    t = torch.tensor([0, 2, 1, 0])
    own = own_gradient if path == "gradient" else own_layer
    o_a, o_b = own(model, x_a, t), own(model, x_b, t)
    expected = torch.where((o_a > 0) & (o_b > 0), o_a * o_b, torch.zeros_like(o_a))
    result = Colocation(model, path=path).attribute((x_a, x_b), target=t)
    assert result.ooc.shape == (4, 1, 16, 16)
    torch.testing.assert_close(result.ooc, expected, atol=1e-7, rtol=1e-4)
    torch.testing.assert_close(result.ref, expected, atol=1e-7, rtol=1e-4)
    assert (result.ooc > 0).any() and (result.ooc == 0).any()  # both signs occurred: the clamp mattered
    swapped = Colocation(model, path=path).attribute((x_b, x_a), target=t)
    torch.testing.assert_close(swapped.ooc, result.ooc)  # symmetric in the pair


def test_colocation_map_clamps_each_map_before_the_product():
    a = torch.tensor([[[[2.0, -1.0, -2.0]], [[1.0, 0.0, 0.0]]]])  # channels sum to 3, -1, -2
    b = torch.tensor([[[[1.0, 4.0, -3.0]], [[0.0, 0.0, 0.0]]]])
    assert colocation_map(a, b).flatten().tolist() == [3.0, 0.0, 0.0]  # (-2)·(-3) would be 6 without the clamp
    with pytest.raises(ValueError, match="one shape"):
        colocation_map(a, b[..., :2])


def test_colocation_is_a_registered_pairwise_control(registry, model):
    from sharedattr.plugin import PairwiseAttribution, is_pairwise
    from sharedattr.plugins.contracts import control_of

    assert "colocation" in registry.names("method")
    method = registry.build("method", "colocation", model, path="gradient")
    from captum.attr import Attribution

    assert isinstance(method, PairwiseAttribution) and isinstance(method, Attribution) and is_pairwise(Colocation)
    assert "co-location" in control_of(Colocation, method.params)
    with pytest.raises(SpecError, match="path"):
        registry.build("method", "colocation", model, path="pixels")
