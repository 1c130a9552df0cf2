"""Built-in components against independent computations and planted ground truth."""

from __future__ import annotations

import math
import os
import pickle

import pytest
import torch
from captum.attr import IntegratedGradients, Saliency
from torch import nn

from sharedattr.plugins.contracts import AttributionBatch
from sharedattr.encoding.scores import pearson_columns
from sharedattr.runtime.errors import UserError
from sharedattr.metrics.faithfulness import DeletionMetric, InsertionMetric
from sharedattr.metrics.complexity import gini
from sharedattr.encoding.model import EncodingModel
from sharedattr.encoding.readouts.ridge import RidgeReadout


# -- ridge -----------------------------------------------------------------------------
def planted(n=300, d=40, neurons=6, noise=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    w = torch.randn(neurons, d, generator=g)
    y = x @ w.T + 0.5
    if noise is not None:
        y = y + torch.randn(n, neurons, generator=g) * torch.tensor(noise)
    return x, w, y


def test_ridge_recovers_planted_weights():
    x, w, y = planted()
    readout = RidgeReadout(alphas=(1e-3, 1e-1, 10.0), folds=4).fit(x[:200], y[:200])
    r = pearson_columns(readout(x[200:]), y[200:])
    assert (r > 0.99).all()
    torch.testing.assert_close(readout.weight, w, atol=2e-2, rtol=0)
    torch.testing.assert_close(readout.bias, torch.full((6,), 0.5), atol=2e-2, rtol=0)


def test_ridge_picks_larger_penalty_for_noisier_neurons():
    x, _, y = planted(n=120, d=60, neurons=4, noise=[0.01, 1.0, 10.0, 100.0])
    readout = RidgeReadout(alphas=tuple(10.0**k for k in range(-3, 6)), folds=5).fit(x, y)
    alpha = readout.alpha.tolist()
    assert alpha == sorted(alpha) and alpha[-1] > alpha[0]


def test_ridge_leaves_out_nan_per_neuron():
    x, _, y = planted(n=200)
    y_nan = y.clone()
    y_nan[:50, 0] = math.nan
    full = RidgeReadout(alphas=(1e-3,), folds=3).fit(x[50:], y[50:])
    masked = RidgeReadout(alphas=(1e-3,), folds=3).fit(x, y_nan)
    torch.testing.assert_close(masked.weight[0], full.weight[0], atol=1e-4, rtol=1e-4)
    assert torch.isfinite(masked.weight).all()


def test_ridge_meets_the_linear_contract():
    latents = torch.randn(50, 4, 3, 3)
    y = torch.randn(50, 5)
    for pooling in ("none", "avg", "max"):
        readout = RidgeReadout(pooling=pooling, folds=3).fit(latents, y)
        z = readout.pooled(latents)  # [B, N, D]
        contract = readout.nonlinearity((z * readout.weight).sum(-1) + readout.bias)
        torch.testing.assert_close(readout(latents), contract)


# -- matchers --------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["cosine", "pearson", "euclidean", "dot"])
def test_matchers_find_the_planted_reference(registry, name):
    g = torch.Generator().manual_seed(1)
    candidates = torch.randn(3, 50, 32, generator=g)  # [G neurons, K candidates, D]
    candidates = candidates / candidates.norm(dim=-1, keepdim=True)
    truth = torch.randint(0, 50, (3, 7), generator=g)  # [G, Q]
    query = torch.gather(candidates, 1, truth[..., None].expand(-1, -1, 32))
    query = query + 0.05 * torch.randn(query.shape, generator=g)
    matcher = registry.build("matcher", name)
    scores, index = matcher.match(query, candidates, top_k=2)
    assert index.shape == (3, 7, 2) and scores.shape == (3, 7, 2)
    assert torch.equal(index[..., 0], truth)
    assert (scores[..., 0] >= scores[..., 1]).all()


def test_cosine_and_pearson_against_direct_formulas(registry):
    a, b = torch.randn(4, 10), torch.randn(6, 10)
    cos = registry.build("matcher", "cosine").similarity(a, b)
    torch.testing.assert_close(cos, torch.nn.functional.cosine_similarity(a[:, None], b[None], dim=-1))
    pear = registry.build("matcher", "pearson").similarity(a, b)
    direct = torch.corrcoef(torch.cat([a, b]))[:4, 4:]
    torch.testing.assert_close(pear, direct, atol=1e-5, rtol=1e-5)


# -- metrics ---------------------------------------------------------------------------
def test_gini_extremes():
    n = 100
    uniform = torch.ones(1, 10, 10)
    one_hot = torch.zeros(1, 10, 10)
    one_hot[0, 3, 4] = -5.0
    assert gini(uniform).item() == pytest.approx(0.0, abs=1e-6)
    assert gini(one_hot).item() == pytest.approx(1 - 1 / n)
    assert gini(torch.zeros(1, 4, 4)).item() == 0.0


class RegionNeuron(nn.Module):
    """Neuron 0 = summed intensity inside a fixed square; neuron 1 = everywhere."""

    def __init__(self, size=8):
        super().__init__()
        mask = torch.zeros(size, size)
        mask[2:5, 2:5] = 1
        self.register_buffer("mask", mask)

    def forward(self, x):
        return torch.stack([(x.sum(1) * self.mask).sum((1, 2)), x.sum((1, 2, 3))], dim=1)


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


# -- captum wrappers -------------------------------------------------------------------
def test_captum_wrappers_equal_direct_captum_calls(registry):
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 5))
    x = torch.rand(3, 3, 8, 8, requires_grad=True)
    target = torch.tensor([0, 2, 4])
    sal = registry.build("method", "saliency", model).attribute(x, target=target)
    torch.testing.assert_close(sal, Saliency(model).attribute(x, target=target, abs=True))
    ig = registry.build("method", "integrated_gradients", model, n_steps=8, baseline=0.5).attribute(x, target=target)
    direct = IntegratedGradients(model).attribute(x, baselines=torch.full_like(x, 0.5), target=target, n_steps=8)
    torch.testing.assert_close(ig, direct)


# -- backbone weights ------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch's note about the hostile file
def test_weights_file_round_trip_and_pickle_refused(registry, tmp_path):
    from safetensors.torch import save_file

    spec = {"model": "resnet18", "layer": "layer1", "input_size": 32}
    import torchvision

    a = registry.build("backbone", "torchvision", seed=1, **spec)
    source = registry.build("backbone", "torchvision", seed=2, **spec)

    torch.manual_seed(2)
    net = torchvision.models.resnet18()
    save_file(net.state_dict(), str(tmp_path / "w.safetensors"))
    torch.save(net.state_dict(), tmp_path / "w.pt")
    b = registry.build("backbone", "torchvision", weights_file=tmp_path / "w.safetensors", **spec)
    c = registry.build("backbone", "torchvision", weights_file=tmp_path / "w.pt", **spec)
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(b(x), c(x)) and not torch.equal(a(x), b(x))
    assert torch.equal(source(x), b(x))  # seed 2 init == the saved seed-2 network

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"conv1.weight": Evil()}, f)
    with pytest.raises(UserError, match="Only safetensors files or plain tensor state dicts"):
        registry.build("backbone", "torchvision", weights_file=tmp_path / "evil.pt", **spec)
    assert not marker.exists()


def test_unknown_weights_name_lists_options(registry):
    with pytest.raises(UserError, match=r"'IMAGENET9K' is not a weights name of resnet18; choose one of DEFAULT, "):
        registry.build("backbone", "torchvision", model="resnet18", layer="layer1", weights="IMAGENET9K")


def test_encoding_model_contributions_sum_to_response(registry):
    backbone = registry.build("backbone", "torchvision", model="resnet18", layer="layer1", input_size=32)
    images = torch.rand(20, 3, 32, 32)
    with torch.no_grad():
        latents = backbone(backbone.preprocess(images))
    readout = RidgeReadout(folds=3, pooling="avg").fit(latents, torch.randn(20, 3))
    model = EncodingModel(backbone, readout)
    with torch.no_grad():
        torch.testing.assert_close(model.contributions(images).sum(-1) + readout.bias, model(images),
                                   atol=1e-4, rtol=1e-4)


# -- synthesis -------------------------------------------------------------------------
class PixelNeuron(nn.Module):
    input_size = (12, 12)
    in_channels = 1

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(1, 1, 12, 12, generator=torch.Generator().manual_seed(3)),
                              requires_grad=False)

    def forward(self, x):
        return (x * self.w).sum((1, 2, 3))[:, None]


def test_gradient_ascent_raises_response_monotonically_enough(registry):
    model = PixelNeuron()
    synth = registry.build("synthesizer", "gradient_ascent", steps=60, lr=0.05, norm=2.0, clip=False, n_seeds=3)
    result = synth.synthesize(model, 0)
    history = result.history  # [steps, seeds]
    assert history.shape == (60, 3)
    gain = history[-1] - history[0]
    assert (gain > 0).all()
    largest_drop = (history[:-1] - history[1:]).clamp(min=0).amax(0)
    assert (largest_drop < 0.05 * gain).all()
    norms = (result.images - 0.5).flatten(1).norm(dim=1)
    torch.testing.assert_close(norms, torch.full((3,), 2.0))
    assert result.cost["forward_calls"] == 61 and result.cost["backward_calls"] == 60


def test_gradient_ascent_reaches_the_constrained_optimum_with_sgd(registry):
    model = PixelNeuron()
    synth = registry.build("synthesizer", "gradient_ascent", steps=100, lr=0.05, optimizer="sgd", norm=2.0,
                           clip=False, blur_sigma=0.0)
    result = synth.synthesize(model, 0)
    optimum = 0.5 * model.w.sum() + 2.0 * model.w.norm()  # x* = 0.5 + 2 w / |w|
    assert result.responses.item() > 0.99 * optimum.item()


def test_gradient_ascent_clips_to_pixel_range(registry):
    result = registry.build("synthesizer", "gradient_ascent", steps=20, lr=0.5).synthesize(PixelNeuron(), 0)
    assert result.images.min() >= 0 and result.images.max() <= 1


# -- matching contract -----------------------------------------------------------------
def test_a_matcher_needs_only_similarity():
    from sharedattr.plugins.contracts import match_references

    class Dot:  # no base class, no match()
        def similarity(self, a, b):
            return a @ b.transpose(-1, -2)

    candidates = torch.eye(4)[None]  # [1, K=4, D=4]
    scores, index = match_references(Dot(), candidates[:, [2, 0]], candidates, top_k=1)
    assert index.squeeze().tolist() == [2, 0]


# -- data ------------------------------------------------------------------------------
def test_folder_stimulus_set_rejects_clashing_ids(tmp_path):
    from PIL import Image

    from sharedattr.data import DataError, StimulusSet

    for cat, names in {"bodies": ["a.png", "a.jpg", "b.png"], "objects": ["c.png"]}.items():
        (tmp_path / cat).mkdir()
        for n in names:
            Image.new("L", (4, 4)).save(tmp_path / cat / n)
    with pytest.raises(DataError, match=r"a.png and a.jpg in bodies/ both give stimulus id 'bodies/a'"):
        StimulusSet.load(tmp_path)
    (tmp_path / "bodies" / "a.jpg").unlink()
    stimuli = StimulusSet.load(tmp_path)
    assert stimuli.ids == ("bodies/a", "bodies/b", "objects/c") and stimuli.category_names == ["bodies", "objects"]
