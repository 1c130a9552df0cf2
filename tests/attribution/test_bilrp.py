"""bilrp, the BiLRP baseline (LRP-0 rule), against the full pixel-pair relevance matrix of a tiny model."""

from __future__ import annotations

import pytest
import torch

from sharedattr.attribution.bilrp import BiLRP
from sharedattr.runtime.errors import SpecError
from sharedattr.testing import tiny_model


@pytest.fixture(scope="module")
def model():
    return tiny_model(n_neurons=3)


def images(b=3, seed=2):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, 16, 16, generator=g), torch.rand(b, 3, 16, 16, generator=g)


def relevance_matrix(model, x_a, x_b, n, features):
    """R_{ii'} = Σ_m (x_a ⊙ ∂φ_m/∂x)(a)_i (x_b ⊙ ∂φ_m/∂x)(b)_{i'} [C·H·W, C·H·W] from the full Jacobians of φ."""
    w = model.readout.weight[n] if features == "contributions" else 1.0

    def phi(x):
        return model.readout.features(model.latents(x[None]))[0] * w

    r_a = (torch.autograd.functional.jacobian(phi, x_a) * x_a).flatten(1)  # [D, C·H·W]
    r_b = (torch.autograd.functional.jacobian(phi, x_b) * x_b).flatten(1)
    return r_a.T @ r_b


@pytest.mark.parametrize("features", ["contributions", "latents"])
def test_maps_are_the_marginals_of_the_pixel_pair_relevance(model, features):
    x_a, x_b = images()
    t = torch.tensor([0, 2, 1])
    result = BiLRP(model, features=features).attribute((x_a, x_b), target=t)
    assert result.ooc.shape == x_a.shape
    for i, n in enumerate(t.tolist()):
        matrix = relevance_matrix(model, x_a[i], x_b[i], n, features)
        torch.testing.assert_close(result.ooc[i], matrix.sum(1).view_as(x_a[i]), atol=1e-6, rtol=1e-4)
        torch.testing.assert_close(result.ref[i], matrix.sum(0).view_as(x_b[i]), atol=1e-6, rtol=1e-4)
        torch.testing.assert_close(result.ooc[i].sum(), matrix.sum(), atol=1e-6, rtol=1e-4)  # both sum to ⟨S_a, S_b⟩


def test_symmetric_batch_invariant_deterministic_and_registered(model, registry):
    x_a, x_b = images(4)
    t = torch.tensor([0, 1, 2, 0])
    method = BiLRP(model)
    batched = method.attribute((x_a, x_b), target=t)
    looped = [method.attribute((x_a[i : i + 1], x_b[i : i + 1]), target=t[i]) for i in range(4)]
    torch.testing.assert_close(batched.ooc, torch.cat([r.ooc for r in looped]), atol=1e-6, rtol=1e-5)
    chunked = BiLRP(model, internal_batch_size=3).attribute((x_a, x_b), target=t)
    torch.testing.assert_close(chunked.ref, batched.ref, atol=1e-6, rtol=1e-5)
    swapped = method.attribute((x_b, x_a), target=t)
    torch.testing.assert_close(swapped.ref, batched.ooc, atol=1e-6, rtol=1e-5)
    assert all(torch.equal(u, v) for u, v in zip(method.attribute((x_a, x_b), target=t), batched))
    from sharedattr.plugin import is_pairwise

    assert "bilrp" in registry.names("method") and is_pairwise(BiLRP)
    with pytest.raises(SpecError, match="features"):
        registry.build("method", "bilrp", model, features="pixels")
