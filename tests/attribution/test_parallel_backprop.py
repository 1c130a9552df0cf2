"""parallel_backprop against independent autograd computations on tiny models."""

from __future__ import annotations

import pytest
import torch

from sharedattr.attribution.parallel_backprop import (
    ParallelBackprop,
    clip_percentile,
    gaussian_smooth,
    shared_weights,
)
from sharedattr.encoding.readouts.attention import AttentionReadout
from sharedattr.encoding.readouts.factorized import FactorizedReadout
from sharedattr.encoding.readouts.gaussian import Gaussian2dReadout
from sharedattr.runtime.errors import SpecError
from sharedattr.testing import tiny_model

QUICK = {"max_epochs": 3, "patience": 2}


def pair(b=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, 16, 16, generator=g), torch.rand(b, 3, 16, 16, generator=g)


def grad_of(fn, x):
    """An independent per-image gradient: d fn(x_i) / d x_i, one image at a time."""
    out = []
    for i in range(x.shape[0]):
        xi = x[i : i + 1].clone().requires_grad_(True)
        (g,) = torch.autograd.grad(fn(xi, i), xi)
        out.append(g)
    return torch.cat(out)


@pytest.fixture(scope="module")
def model():
    return tiny_model(n_neurons=3)


def test_shared_weights_equal_to_the_readout_weights_give_the_neurons_gradient(model):
    x_a, x_b = pair()
    targets = torch.tensor([0, 1, 2, 1])
    w = model.readout.weight[targets]
    result = ParallelBackprop(model, path="gradient").attribute((x_a, x_b), target=targets, shared_weights=w)
    expected_a = grad_of(lambda x, i: model(x)[0, targets[i]], x_a)
    expected_b = grad_of(lambda x, i: model(x)[0, targets[i]], x_b)
    torch.testing.assert_close(result.ooc, expected_a, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(result.ref, expected_b, atol=1e-6, rtol=1e-5)


def test_product_variant_equals_an_independent_autograd_computation(model):
    x_a, x_b = pair()
    targets = torch.tensor([2, 0, 1, 2])
    result = ParallelBackprop(model, path="gradient").attribute((x_a, x_b), target=targets)
    for i, n in enumerate(targets.tolist()):
        with torch.no_grad():
            z_a = model.readout.features(model.latents(x_a[i : i + 1]))[0]
            z_b = model.readout.features(model.latents(x_b[i : i + 1]))[0]
        s = model.readout.weight[n] * z_a * z_b
        torch.testing.assert_close(result.shared[i], s)
        for x, got in ((x_a, result.ooc), (x_b, result.ref)):
            xi = x[i : i + 1].clone().requires_grad_(True)
            (g,) = torch.autograd.grad((model.readout.features(model.latents(xi))[0] * s).sum(), xi)
            torch.testing.assert_close(got[i : i + 1], g, atol=1e-6, rtol=1e-5)


def test_the_shared_objective_differs_from_the_plain_gradient(model):
    x_a, x_b = pair()
    shared = ParallelBackprop(model, path="gradient").attribute((x_a, x_b), target=0).ooc
    plain = grad_of(lambda x, i: model(x)[0, 0], x_a)
    cos = torch.nn.functional.cosine_similarity(shared.flatten(1), plain.flatten(1))
    assert (cos < 0.99).all()  # s re-weights the latents: not a rescaled gradient


@pytest.mark.parametrize("variant", ["product", "positive", "min", "mask"])
@pytest.mark.parametrize("path", ["gradient", "ig", "layer"])
def test_batched_equals_looped_and_swapping_the_pair_swaps_the_maps(model, variant, path):
    x_a, x_b = pair(5)
    targets = torch.tensor([0, 1, 2, 0, 1])
    method = ParallelBackprop(model, variant=variant, path=path, n_steps=4, baseline=0.5, mask_threshold=0.1)
    batched = method.attribute((x_a, x_b), target=targets)
    looped = [method.attribute((x_a[i : i + 1], x_b[i : i + 1]), target=targets[i]) for i in range(5)]
    for field in ("ooc", "ref", "shared"):
        torch.testing.assert_close(
            getattr(batched, field), torch.cat([getattr(r, field) for r in looped]), atol=1e-6, rtol=1e-5
        )
    chunked = ParallelBackprop(
        model, variant=variant, path=path, n_steps=4, baseline=0.5, mask_threshold=0.1, internal_batch_size=2
    ).attribute((x_a, x_b), target=targets)
    torch.testing.assert_close(chunked.ooc, batched.ooc, atol=1e-6, rtol=1e-5)
    swapped = method.attribute((x_b, x_a), target=targets)
    torch.testing.assert_close(swapped.ooc, batched.ref, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(swapped.ref, batched.ooc, atol=1e-6, rtol=1e-5)


def test_ig_path_is_complete(model):
    """IG of the shared objective sums to ⟨s, z(x)⟩ − ⟨s, z(x₀)⟩ (completeness) for each image."""
    x_a, x_b = pair(3)
    result = ParallelBackprop(model, path="ig", n_steps=48, baseline=0.5).attribute((x_a, x_b), target=1)
    with torch.no_grad():
        for x, maps in ((x_a, result.ooc), (x_b, result.ref)):
            objective = (model.readout.features(model.latents(x)) * result.shared).sum(1)
            at_base = (model.readout.features(model.latents(torch.full_like(x, 0.5))) * result.shared).sum(1)
            torch.testing.assert_close(maps.flatten(1).sum(1), objective - at_base, atol=1e-3, rtol=2e-2)


@pytest.mark.parametrize(
    "readout",
    [FactorizedReadout(**QUICK), Gaussian2dReadout(**QUICK), AttentionReadout(**QUICK)],
    ids=["factorized", "gaussian2d", "attention"],
)
def test_every_readout_works_and_s_equal_to_w_gives_the_gradient(readout):
    model = tiny_model(readout)
    x_a, x_b = pair(3)
    targets = torch.tensor([2, 0, 1])
    result = ParallelBackprop(model, path="gradient").attribute((x_a, x_b), target=targets)
    assert result.shared.shape == (3, model.readout.weight.shape[1])
    looped = torch.cat(
        [
            ParallelBackprop(model, path="gradient").attribute((x_a[i : i + 1], x_b[i : i + 1]), target=int(t)).ooc
            for i, t in enumerate(targets)
        ]
    )
    torch.testing.assert_close(result.ooc, looped, atol=1e-6, rtol=1e-5)
    w = model.readout.weight[targets].detach()
    via_w = ParallelBackprop(model, path="gradient").attribute((x_a, x_b), target=targets, shared_weights=w).ooc
    expected = grad_of(lambda x, i: model(x)[0, targets[i]], x_a)  # identity φ: ∂r_n/∂x = ∂⟨w, z⟩/∂x
    torch.testing.assert_close(via_w, expected, atol=1e-6, rtol=1e-5)


def test_shared_weight_variants_on_planted_vectors():
    w = torch.tensor([[1.0, -1.0, 2.0, 1.0, 1.0]])
    z_a = torch.tensor([[2.0, 1.0, 1.0, -1.0, 0.0]])
    z_b = torch.tensor([[3.0, 1.0, -2.0, -3.0, 5.0]])
    torch.testing.assert_close(shared_weights(w, z_a, z_b, "product"), torch.tensor([[6.0, -1.0, -4.0, 3.0, 0.0]]))
    # positive: both contributions w ⊙ z > 0 only in dimension 0
    torch.testing.assert_close(shared_weights(w, z_a, z_b, "positive"), torch.tensor([[6.0, 0.0, 0.0, 0.0, 0.0]]))
    # min: same sign in dims 0, 1, 3 → w·sign·min(|a|, |b|)
    torch.testing.assert_close(shared_weights(w, z_a, z_b, "min"), torch.tensor([[2.0, -1.0, 0.0, -1.0, 0.0]]))
    torch.testing.assert_close(shared_weights(w, z_a, z_b, "mask"), torch.tensor([[1.0, 0.0, 0.0, 0.0, 0.0]]))
    # with a threshold of 0.5 of the largest contribution (2 for a, 3 for b), dim 0 (2 and 3) still passes
    torch.testing.assert_close(shared_weights(w, z_a, z_b, "mask", 0.5), torch.tensor([[1.0, 0.0, 0.0, 0.0, 0.0]]))


def test_post_processing_reduces_smooths_and_clips(model):
    x_a, x_b = pair(2)
    raw = ParallelBackprop(model, path="gradient").attribute((x_a, x_b), target=0)
    summed = ParallelBackprop(model, path="gradient", reduce="sum").attribute((x_a, x_b), target=0)
    torch.testing.assert_close(summed.ooc, raw.ooc.sum(1, keepdim=True))
    absolute = ParallelBackprop(model, path="gradient", reduce="abs_sum").attribute((x_a, x_b), target=0)
    torch.testing.assert_close(absolute.ref, raw.ref.abs().sum(1, keepdim=True))
    constant = torch.full((1, 2, 9, 9), 3.0)
    torch.testing.assert_close(gaussian_smooth(constant, 1.5), constant)
    impulse = torch.zeros(1, 1, 15, 15)
    impulse[0, 0, 7, 7] = 1.0
    blurred = gaussian_smooth(impulse, 1.0)
    assert abs(float(blurred.sum()) - 1.0) < 1e-5 and float(blurred.max()) < 0.2
    maps = torch.arange(100.0).view(1, 1, 10, 10) - 50
    clipped = clip_percentile(maps, 90)
    assert float(clipped.abs().max()) <= float(torch.quantile(maps.abs().flatten(), 0.9)) + 1e-6


def test_params_are_validated_and_errors_are_clear(registry, model):
    with pytest.raises(SpecError, match="variant"):
        registry.build("method", "parallel_backprop", model, variant="sum")
    with pytest.raises(SpecError, match="clip_percentile"):
        registry.build("method", "parallel_backprop", model, clip_percentile=120)
    method = registry.build("method", "parallel_backprop", model, reduce="sum")
    x_a, x_b = pair(2)
    with pytest.raises(ValueError, match="target"):
        method.attribute((x_a, x_b))
    with pytest.raises(ValueError, match="one shape"):
        method.attribute((x_a, x_b[:, :, :8]), target=0)


def test_smoothing_is_a_gaussian_truncated_at_three_sigma():
    import torch.nn.functional as F

    maps = torch.randn(2, 1, 12, 10, generator=torch.Generator().manual_seed(0))
    sigma, radius = 1.5, 4  # round(4.5) = 4
    t = torch.arange(-radius, radius + 1, dtype=maps.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    padded = F.pad(maps, (radius,) * 4, mode="reflect")
    expected = F.conv2d(F.conv2d(padded, k.view(1, 1, -1, 1)), k.view(1, 1, 1, -1))
    torch.testing.assert_close(gaussian_smooth(maps, sigma), expected, atol=1e-6, rtol=0)
    assert torch.equal(gaussian_smooth(maps, 0.1), maps)  # round(0.3) = 0: no kernel to apply


def test_parallel_backprop_declares_the_pairwise_contract():
    from sharedattr.plugin import PairwiseAttribution, is_pairwise

    assert issubclass(ParallelBackprop, PairwiseAttribution) and is_pairwise(ParallelBackprop)


# -- position-tolerant (channel) sharing and the own-objective control ----------------------------------------
def test_channel_sharing_pools_each_channels_contribution_over_positions(model):
    """s_d = w_d · g_k with g_k from C_k = Σ_{positions} w z of channel k, computed here by reshaping [C, H·W]."""
    from sharedattr.attribution.parallel_backprop import neuron_latents

    x_a, x_b = pair()
    t = torch.tensor([0, 1, 2, 0])
    method = ParallelBackprop(model, variant="positive", sharing="channel", path="gradient")
    result = method.attribute((x_a, x_b), target=t)
    with torch.no_grad():
        za, zb = neuron_latents(model, x_a, t), neuron_latents(model, x_b, t)
    w = model.readout.weight[t]
    c, hw = 6, 16  # TinyBackbone latents [6, 4, 4], flattened by the ridge readout
    ca, cb = (w * za).view(4, c, hw).sum(-1), (w * zb).view(4, c, hw).sum(-1)
    g = torch.where((ca > 0) & (cb > 0), ca * cb, torch.zeros_like(ca))
    expected = (w.view(4, c, hw) * g[..., None]).reshape(4, -1)
    torch.testing.assert_close(result.shared, expected)

    def objective(x, i):
        return (neuron_latents(model, x, t[i : i + 1]) * expected[i]).sum()

    torch.testing.assert_close(result.ooc, grad_of(objective, x_a), atol=1e-6, rtol=1e-5)


def test_channel_sharing_does_not_care_where_a_channel_is_active():
    from sharedattr.attribution.parallel_backprop import channel_shared_weights, shared_weights

    g = torch.Generator().manual_seed(0)
    w, z_a, z_b = torch.randn(2, 12, generator=g), torch.rand(2, 12, generator=g), torch.rand(2, 12, generator=g)
    channels = torch.arange(12) // 4  # 3 channels of 4 positions
    moved = z_b.view(2, 3, 4).roll(1, dims=2).reshape(2, 12)  # the reference's activity at other positions
    w_flat = w.view(2, 3, 4).mean(-1, keepdim=True).expand(2, 3, 4).reshape(2, 12)  # weights equal over positions
    for variant in ("product", "positive", "min", "mask"):
        same = channel_shared_weights(w_flat, z_a, z_b, channels, variant)
        torch.testing.assert_close(channel_shared_weights(w_flat, z_a, moved, channels, variant), same)
    assert not torch.allclose(
        shared_weights(w_flat, z_a, moved, "product"), shared_weights(w_flat, z_a, z_b, "product")
    )


def test_the_own_variant_is_the_neurons_own_gradient(model):
    x_a, x_b = pair()
    t = torch.tensor([2, 0, 1, 1])
    for sharing in ("dimension", "channel"):
        result = ParallelBackprop(model, variant="own", sharing=sharing, path="gradient").attribute(
            (x_a, x_b), target=t
        )
        expected = grad_of(lambda x, i: model(x)[0, t[i]], x_a)  # a linear readout: d r_n / dx
        torch.testing.assert_close(result.ooc, expected, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("readout", [FactorizedReadout, Gaussian2dReadout, AttentionReadout])
def test_channel_sharing_works_on_pooled_readouts(readout):
    model = tiny_model(readout(**QUICK))
    x_a, x_b = pair()
    result = ParallelBackprop(model, variant="positive", sharing="channel", path="gradient").attribute(
        (x_a, x_b), target=1
    )
    assert result.ooc.shape == x_a.shape and torch.isfinite(result.ooc).all() and result.shared.abs().sum() > 0


def test_layer_path_is_each_positions_share_of_the_shared_objective_upsampled(model):
    """path = 'layer': Σ_k (∂⟨s, z⟩/∂F ⊙ F)_k at the backbone output, bilinearly upsampled; for a linear readout on
    flattened latents ∂⟨s, z⟩/∂F = s, so the map is Σ_k s_k,p F_k,p, and before upsampling it sums to ⟨s, z⟩."""
    x_a, x_b = pair()
    t = torch.tensor([0, 2, 1, 1])
    result = ParallelBackprop(model, variant="positive", path="layer").attribute((x_a, x_b), target=t)
    assert result.ooc.shape == (4, 1, 16, 16)
    with torch.no_grad():
        for x, got in ((x_a, result.ooc), (x_b, result.ref)):
            latents = model.latents(x)  # [B, K, h, w]
            cam = (result.shared.view_as(latents) * latents).sum(1, keepdim=True)
            torch.testing.assert_close(
                (cam.flatten(1).sum(1)), (model.readout.features(latents) * result.shared).sum(1)
            )
            up = torch.nn.functional.interpolate(cam, size=(16, 16), mode="bilinear", align_corners=False)
            torch.testing.assert_close(got, up, atol=1e-6, rtol=1e-5)
    own = ParallelBackprop(model, variant="own", path="layer").attribute((x_a, x_b), target=t)
    torch.testing.assert_close(own.shared, model.readout.weight[t])


def test_layer_path_needs_spatial_latents():
    from torch import nn

    class Flat(nn.Module):
        def latents(self, x):
            return x.flatten(1)

    method = ParallelBackprop(Flat(), path="layer")
    with pytest.raises(ValueError, match=r"path = 'layer' needs latents \[B, K, h, w\].*got shape \(4, 12\)"):
        method.attribute((torch.rand(2, 3, 2, 2), torch.rand(2, 3, 2, 2)), target=0)


def test_the_default_is_the_product_on_the_layer_path(model):
    """The default chosen by benchmarks/shared_parts.py: s = w ⊙ z(a) ⊙ z(b), mapped at the backbone output."""
    x_a, x_b = pair()
    t = torch.tensor([1, 0, 2, 1])
    default = ParallelBackprop(model).attribute((x_a, x_b), target=t)
    explicit = ParallelBackprop(model, variant="product", path="layer").attribute((x_a, x_b), target=t)
    assert default.ooc.shape == (4, 1, 16, 16)
    torch.testing.assert_close(default.ooc, explicit.ooc)
    with torch.no_grad():
        z_a, z_b = model.readout.features(model.latents(x_a)), model.readout.features(model.latents(x_b))
    torch.testing.assert_close(default.shared, model.readout.weight[t] * z_a * z_b)


@pytest.mark.parametrize("readout", [FactorizedReadout, Gaussian2dReadout, AttentionReadout])
def test_layer_path_works_on_pooled_readouts_and_sums_to_the_shared_objective(readout):
    """For pooled readouts z_n is a (learned) pooling of F; the map before upsampling is Σ_k ∂⟨s, z_n⟩/∂F ⊙ F."""
    from sharedattr.attribution.parallel_backprop import pooled_for_targets

    model = tiny_model(readout(**QUICK))
    x_a, x_b = pair(3)
    t = torch.tensor([0, 2, 1])
    result = ParallelBackprop(model, path="layer").attribute((x_a, x_b), target=t)
    assert result.ooc.shape == (3, 1, 16, 16) and torch.isfinite(result.ooc).all()
    latents = model.latents(x_a).detach().requires_grad_(True)
    objective = (pooled_for_targets(model, latents, t) * result.shared).sum()
    (grad,) = torch.autograd.grad(objective, latents)
    cam = (grad * latents).sum(1, keepdim=True).detach()
    expected = torch.nn.functional.interpolate(cam, size=(16, 16), mode="bilinear", align_corners=False)
    torch.testing.assert_close(result.ooc, expected, atol=1e-6, rtol=1e-5)
