"""Localisation, faithfulness-correlation and randomisation metrics on planted cases with known answers."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr
from torch import Tensor, nn

from linear_neurons import linear_batch
from sharedattr.metrics.complexity import gini
from sharedattr.metrics.faithfulness import (
    DeletionMetric,
    FaithfulnessCorrelationMetric,
    InsertionMetric,
)
from sharedattr.metrics.localisation import (
    PointingGameMetric,
    RelevanceMassMetric,
    RelevanceRankMetric,
)
from sharedattr.metrics.randomisation import (
    RandomisationMetric,
    randomised_model,
    reset_modules,
    spearman_rows,
)
from sharedattr.plugins.contracts import AttributionBatch, Metric, declared
from sharedattr.testing import tiny_model

NAN = float("nan")


def loc_batch(maps: Tensor, masks: Tensor) -> AttributionBatch:
    b, h, w = maps.shape
    return AttributionBatch(nn.Identity(), torch.zeros(b, 1, h, w), maps, torch.zeros(b, dtype=torch.long), masks)


def square_mask(b: int = 1, size: int = 8) -> Tensor:
    """Masks ``[b, size, size]`` true on rows and columns 2..3 (4 pixels)."""
    mask = torch.zeros(b, size, size, dtype=torch.bool)
    mask[:, 2:4, 2:4] = True
    return mask


def assert_scores(actual: Tensor, expected: list[float]) -> None:
    torch.testing.assert_close(actual, torch.tensor(expected), equal_nan=True)


@pytest.mark.parametrize(
    ("name", "higher", "masks", "explainer"),
    [
        ("pointing_game", True, True, False),
        ("relevance_mass", True, True, False),
        ("relevance_rank", True, True, False),
        ("faithfulness_correlation", True, False, False),
        ("randomisation", False, False, True),
    ],
)
def test_registered_with_direction_and_needs(registry, name, higher, masks, explainer):
    metric = registry.build("metric", name)
    assert metric.higher_is_better is higher
    assert declared(metric, Metric).requires_masks is masks
    assert declared(metric, Metric).requires_explainer is explainer


# -- localisation ----------------------------------------------------------------------
def test_pointing_game_inside_outside_ties_and_empty_mask():
    maps = torch.zeros(5, 8, 8)
    maps[0, 3, 2] = 1.0  # peak inside the mask
    maps[1, 6, 6] = 1.0  # peak outside
    maps[2, 2, 2] = maps[2, 7, 7] = 1.0  # tie: the first (row-major) is inside
    maps[3, 0, 0] = maps[3, 3, 3] = 1.0  # tie: the first is outside
    maps[4, 3, 3] = 1.0
    masks = square_mask(5)
    masks[4] = False
    assert_scores(PointingGameMetric()(loc_batch(maps, masks)), [1.0, 0.0, 1.0, 0.0, NAN])


def test_relevance_mass_known_fractions():
    maps = torch.ones(3, 8, 8)  # 4 of 64 pixels inside: 1/16
    maps[1] = -1.0
    maps[1, 2:4, 2:4] = 3.0  # positive part: all inside; absolute: 12 / (12 + 60)
    maps[2] = -1.0  # no positive relevance at all
    masks = square_mask(3)
    assert_scores(RelevanceMassMetric()(loc_batch(maps, masks)), [1 / 16, 1.0, NAN])
    assert_scores(RelevanceMassMetric(relevance="absolute")(loc_batch(maps, masks)), [1 / 16, 12 / 72, 4 / 64])
    assert_scores(RelevanceMassMetric()(loc_batch(maps, torch.zeros_like(masks))), [NAN] * 3)


def test_relevance_rank_on_constructed_maps():
    maps = torch.linspace(0, 1, 64).view(1, 8, 8).repeat(3, 1, 1) * 0.1  # background below every planted value
    masks = square_mask(3)
    maps[0, 2:4, 2:4] = torch.tensor([[5.0, 4.0], [3.0, 2.0]])  # the top 4 are the mask
    maps[1, 2:4, 2:4] = torch.tensor([[5.0, 4.0], [3.0, 0.0]])
    maps[1, 7, 7] = 2.0  # 3 of the top 4 inside
    maps[2, 2:4, 2:4] = -1.0  # the mask holds the 4 lowest values
    assert_scores(RelevanceRankMetric()(loc_batch(maps, masks)), [1.0, 0.75, 0.0])
    assert_scores(RelevanceRankMetric()(loc_batch(maps, torch.zeros_like(masks))), [NAN] * 3)


def test_localisation_metrics_refuse_missing_masks():
    batch = loc_batch(torch.rand(2, 8, 8), square_mask(2))
    batch.masks = None
    for metric in (PointingGameMetric(), RelevanceMassMetric(), RelevanceRankMetric()):
        with pytest.raises(ValueError, match="needs ground-truth masks"):
            metric(batch)


# -- faithfulness correlation ----------------------------------------------------------
def test_faithfulness_correlation_is_one_for_the_true_map_and_near_zero_for_noise():
    metric = FaithfulnessCorrelationMetric(n_runs=200, subset_size=20)
    torch.testing.assert_close(metric(linear_batch("true")), torch.ones(4), atol=1e-5, rtol=0)
    noise = metric(linear_batch("random"))
    assert noise.abs().max() < 0.25  # |r| of 200 independent samples: sd ≈ 0.07


def test_faithfulness_correlation_batching_and_undefined_cases():
    batch = linear_batch("random")
    whole = FaithfulnessCorrelationMetric(n_runs=30, subset_size=10, batch_size=64)(batch)
    chunked = FaithfulnessCorrelationMetric(n_runs=30, subset_size=10, batch_size=7)(batch)
    alone = FaithfulnessCorrelationMetric(n_runs=30, subset_size=10)(
        AttributionBatch(batch.model, batch.inputs[2:3], batch.maps[2:3], batch.targets[2:3])
    )
    torch.testing.assert_close(chunked, whole)
    torch.testing.assert_close(alone, whole[2:3])  # the same subsets for every map: independent of the batch
    assert not torch.equal(whole, FaithfulnessCorrelationMetric(n_runs=30, subset_size=10, seed=1)(batch))
    batch.maps[1] = 0.5  # a constant map: its subset sums never vary
    assert torch.isnan(FaithfulnessCorrelationMetric(n_runs=30, subset_size=10)(batch)[1])
    with pytest.raises(ValueError, match=r"subset_size must be in \[1, 99\]"):
        FaithfulnessCorrelationMetric(subset_size=100)(batch)


# -- randomisation ---------------------------------------------------------------------
def saliency(model: nn.Module, x: Tensor, targets: Tensor) -> Tensor:
    """``Σ_c |∂r_t/∂x_c|`` ``[B, H, W]``."""
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(x).gather(1, targets[:, None]).sum(), x)
    return grad.abs().sum(1)


def edges(x: Tensor) -> Tensor:
    """Sobel gradient magnitude of the grey image ``[B, H, W]``: an 'explanation' that ignores the model."""
    kx = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]])
    k = torch.stack([kx, kx.T])[:, None]
    return F.conv2d(x.mean(1, keepdim=True), k, padding=1).norm(dim=1)


def rand_batch(explainer) -> AttributionBatch:
    model = tiny_model()
    g = torch.Generator().manual_seed(3)
    x, targets = torch.rand(4, 3, 16, 16, generator=g), torch.tensor([0, 1, 2, 0])
    return AttributionBatch(
        model, x, explainer(model, x, targets), targets, explain=lambda other: explainer(other, x, targets)
    )


@pytest.mark.parametrize("layers", ["readout", "backbone", "all"])
def test_randomisation_separates_model_blind_maps_from_gradients(layers):
    metric = RandomisationMetric(layers=layers)
    blind = metric(rand_batch(lambda model, x, t: edges(x)))
    torch.testing.assert_close(blind, torch.ones(4))  # maps that ignore the model survive randomisation
    assert (metric(rand_batch(saliency)) < 0.75).all()  # gradients change with the parameters


def test_randomised_model_touches_only_the_chosen_part_and_keeps_the_original():
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for layers, changed in [("readout", "readout."), ("backbone", "backbone."), ("all", "")]:
        state = randomised_model(model, layers).state_dict()
        for key, value in state.items():
            if not value.is_floating_point() or before[key].unique().numel() < 2:
                continue  # constant tensors (here the ridge penalties) keep their value: nothing to sample from
            assert torch.equal(value, before[key]) != key.startswith(changed), (layers, key)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])
    again, other = randomised_model(model, seed=4), randomised_model(model, seed=5)
    torch.testing.assert_close(randomised_model(model, seed=4).state_dict(), again.state_dict())
    assert not torch.equal(again.readout.weight, other.readout.weight)


def test_readout_resampling_keeps_each_tensors_mean_and_std():
    model = tiny_model()
    weight = model.readout.weight
    new = randomised_model(model, "readout").readout.weight
    assert abs(new.mean() - weight.mean()) < 0.2 * weight.std() and abs(new.std() / weight.std() - 1) < 0.15
    assert abs(torch.corrcoef(torch.stack([new.flatten(), weight.flatten()]))[0, 1]) < 0.2


def test_reset_reaches_parameters_of_modules_without_reset_parameters():
    class WithEmbedding(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embedding = nn.Parameter(torch.randn(50))  # no reset_parameters() here (like a ViT's pos_embed)
            self.linear = nn.Linear(4, 4)

    module = WithEmbedding()
    old_embedding, old_weight = module.embedding.detach().clone(), module.linear.weight.detach().clone()
    reset_modules(module, seed=0)
    assert not torch.equal(module.embedding, old_embedding) and not torch.equal(module.linear.weight, old_weight)


def test_spearman_with_ties_matches_scipy():
    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, 5, (3, 40), generator=g).float()  # many ties
    b = a + torch.randint(0, 3, (3, 40), generator=g).float()
    expected = torch.tensor([spearmanr(a[i], b[i]).statistic for i in range(3)], dtype=torch.float64)
    torch.testing.assert_close(spearman_rows(a, b), expected)
    assert math.isnan(spearman_rows(torch.ones(1, 5), torch.arange(5.0)[None]).item())


def test_randomisation_needs_an_explainer():
    batch = rand_batch(saliency)
    batch.explain = None
    with pytest.raises(ValueError, match="needs batch.explain"):
        RandomisationMetric()(batch)


def test_faithfulness_reuses_response_drops_across_maps_of_the_same_images():
    from sharedattr.metrics.faithfulness import FaithfulnessCorrelationMetric
    from sharedattr.testing import tiny_model

    model = tiny_model()
    calls = []
    model.register_forward_hook(lambda *a: calls.append(1))
    g = torch.Generator().manual_seed(0)
    x, t = torch.rand(2, 3, 16, 16, generator=g), torch.tensor([0, 1])
    metric = FaithfulnessCorrelationMetric(n_runs=10, subset_size=20, batch_size=8)
    first = metric(AttributionBatch(model, x, torch.randn(2, 16, 16, generator=g), t))
    n_first = len(calls)
    other_maps = torch.randn(2, 16, 16, generator=g)
    second = metric(AttributionBatch(model, x, other_maps, t))
    assert len(calls) == n_first  # no forward pass for another method's maps of the same images
    fresh = FaithfulnessCorrelationMetric(n_runs=10, subset_size=20, batch_size=8)
    torch.testing.assert_close(second, fresh(AttributionBatch(model, x, other_maps, t)))
    assert not torch.equal(first, second)
    metric(AttributionBatch(model, x, other_maps, torch.tensor([1, 0])))  # other neurons: computed again
    assert len(calls) > n_first


def test_randomising_the_readout_leaves_a_torchvision_backbone_exactly_as_it_was(registry):
    from sharedattr.encoding.model import EncodingModel
    from sharedattr.encoding.readouts.ridge import RidgeReadout
    from sharedattr.metrics.randomisation import randomised_model

    backbone = registry.build("backbone", "torchvision", model="resnet18", layer="layer1", input_size=32)
    x = torch.rand(6, 3, 32, 32)
    with torch.no_grad():
        latents = backbone(backbone.preprocess(x))
    model = EncodingModel(backbone, RidgeReadout(folds=2).fit(latents, torch.randn(6, 2))).eval()
    clone = randomised_model(model, layers="readout")
    assert not any(m.training for m in clone.modules())  # deepcopy must not switch BatchNorm to batch statistics
    with torch.no_grad():
        torch.testing.assert_close(clone.latents(x), model.latents(x), rtol=0, atol=0)
        assert not torch.allclose(clone(x), model(x))


class RegionNeuron(nn.Module):
    """Neuron 0 = summed intensity inside a fixed square; neuron 1 = everywhere."""

    def __init__(self, size=8):
        super().__init__()
        mask = torch.zeros(size, size)
        mask[2:5, 2:5] = 1
        self.register_buffer("mask", mask)

    def forward(self, x):
        return torch.stack([(x.sum(1) * self.mask).sum((1, 2)), x.sum((1, 2, 3))], dim=1)


# -- metrics ---------------------------------------------------------------------------
def test_gini_extremes():
    n = 100
    uniform = torch.ones(1, 10, 10)
    one_hot = torch.zeros(1, 10, 10)
    one_hot[0, 3, 4] = -5.0
    assert gini(uniform).item() == pytest.approx(0.0, abs=1e-6)
    assert gini(one_hot).item() == pytest.approx(1 - 1 / n)
    assert gini(torch.zeros(1, 4, 4)).item() == 0.0


def test_deletion_and_insertion_reward_the_true_region():
    model = RegionNeuron()
    x = torch.rand(2, 1, 8, 8) + 0.1
    right = model.mask.expand(2, 8, 8).clone()
    wrong = 1 - right
    targets = torch.zeros(2, dtype=torch.long)
    deletion, insertion = DeletionMetric(steps=16), InsertionMetric(steps=16)
    good = AttributionBatch(model, x, right + 0.01 * torch.rand(2, 8, 8), targets)
    bad = AttributionBatch(model, x, wrong + 0.01 * torch.rand(2, 8, 8), targets)
    assert (deletion(good) < deletion(bad) - 0.5).all()
    assert (insertion(good) > insertion(bad) + 0.5).all()
    curve = deletion.curves(good)
    assert torch.allclose(curve[:, 0], torch.ones(2)) and torch.allclose(curve[:, -1], torch.zeros(2))


class CountingNeurons(nn.Module):
    """Two nonlinear neurons of an image; counts the images it sees."""

    def __init__(self):
        super().__init__()
        self.images = 0
        self.weight = nn.Parameter(torch.randn(2, 1, 6, 6, generator=torch.Generator().manual_seed(0)))

    def forward(self, x):
        self.images += len(x)
        return F.softplus((x * self.weight[None, :, 0]).sum((2, 3)) + x.mean((1, 2, 3))[:, None])


def naive_curves(model, x, maps, targets, steps, baseline, insertion):
    """The perturbation curve by definition: one image per map and step, each scored alone."""
    b, _, h, w = x.shape
    rows = []
    for i in range(b):
        order = maps[i].flatten().argsort(descending=True)
        row = []
        for k in range(steps + 1):
            n = round(k / steps * h * w)
            removed = torch.zeros(h * w, dtype=torch.bool)
            removed[order[:n]] = True
            removed = removed.view(1, h, w)
            image = torch.where(~removed if insertion else removed, torch.full_like(x[i], baseline), x[i])
            row.append(model(image[None])[0, targets[i]])
        rows.append(torch.stack(row))
    r = torch.stack(rows)
    clean = r[:, -1] if insertion else r[:, 0]
    return r / clean[:, None]


@pytest.mark.parametrize("metric_class", [DeletionMetric, InsertionMetric])
def test_perturbation_curves_follow_their_definition_and_share_their_ends(metric_class):
    model = CountingNeurons()
    x = torch.rand(3, 1, 6, 6, generator=torch.Generator().manual_seed(1))
    targets = torch.tensor([0, 1, 0])
    maps = [torch.rand(3, 6, 6, generator=torch.Generator().manual_seed(s)) for s in (2, 3)]
    metric = metric_class(steps=9, baseline=0.25, batch_size=4)
    with torch.no_grad():
        for m in maps:
            expected = naive_curves(model, x, m, targets, 9, 0.25, metric.insertion)
            before = model.images
            curve = metric.curves(AttributionBatch(model, x, m, targets))
            torch.testing.assert_close(curve, expected, rtol=1e-5, atol=1e-6)
            seen = model.images - before
            # steps - 1 images per map, one all-baseline image; the clean images only the first time
            assert seen == 3 * 8 + 1 + (3 if m is maps[0] else 0)
    other = CountingNeurons()  # another model: nothing is reused
    other.load_state_dict(model.state_dict())
    metric.curves(AttributionBatch(other, x, maps[0], targets))
    assert other.images == 3 * 8 + 1 + 3


def test_perturbed_images_per_pass_default_to_the_devices():
    from sharedattr.metrics.faithfulness import perturbed_per_pass

    assert perturbed_per_pass(None, torch.device("cpu")) == 8
    assert perturbed_per_pass(None, torch.device("cuda")) == 64  # a device object needs no GPU
    assert perturbed_per_pass(3, torch.device("cpu")) == 3

    class Widest(CountingNeurons):
        widest = 0

        def forward(self, x):
            self.widest = max(self.widest, len(x))
            return super().forward(x)

    model = Widest()
    x = torch.rand(4, 1, 6, 6, generator=torch.Generator().manual_seed(1))
    DeletionMetric(steps=10).curves(AttributionBatch(model, x, torch.rand(4, 6, 6), torch.zeros(4, dtype=torch.long)))
    assert model.widest == 8 and model.images == 4 * 9 + 1 + 4
