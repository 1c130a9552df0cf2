"""parallel_backprop's move-tolerant sharing against independent computations on a tiny conv model + ridge readout.

- ``sharing = "correspondence"``: each cell matched to its best feature match in the partner, found here by explicit
  Python loops over the cells;
- ``share_at``: the units of a finer layer both images share, gated there; the gated gradient is recomputed by a
  second autograd formulation (the network split by hand at that layer, the vector-Jacobian product of the layer
  with ``gate ⊙ ∂y/∂G``), not by hooks;
- the sign-safe variants, symmetry in the pair, batch invariance, determinism and the errors a user can cause.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sharedattr.attribution.correspondence import best_matches
from sharedattr.attribution.parallel_backprop import (
    ParallelBackprop,
    ParallelBackpropParams,
    correspondence_shared_weights,
    finer_gates,
    shared_weights,
)
from sharedattr.encoding.model import EncodingModel
from sharedattr.encoding.readouts.factorized import FactorizedReadout
from sharedattr.encoding.readouts.ridge import RidgeReadout
from sharedattr.runtime.errors import SpecError, UserError
from sharedattr.runtime.numerics import seeded_global_rng
from sharedattr.testing import TinyBackbone

FINER = "net.1"  # conv → ReLU ([12, 8, 8], the finer layer) → conv → ReLU ([6, 4, 4], the latents)
C, HW = 6, 16  # the latents [6, 4, 4], flattened by the ridge readout


class WiderBackbone(TinyBackbone):
    """TinyBackbone with 12 channels at the finer layer: with 4, ReLU leaves many cells with one active channel,
    whose cosines to each other tie exactly, and which of them wins is decided by rounding."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__(seed)
        with seeded_global_rng(seed):
            self.net = nn.Sequential(
                nn.Conv2d(3, 12, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(12, 6, 3, stride=2, padding=1), nn.ReLU()
            )
        self.requires_grad_(False).eval()


def fitted(backbone: nn.Module, readout: nn.Module | None = None, n_neurons: int = 3) -> EncodingModel:
    """``backbone`` + a readout fitted to planted linear responses of 48 random images."""
    g = torch.Generator().manual_seed(0)
    size = tuple(backbone.input_size)
    with torch.no_grad():
        latents = backbone(backbone.preprocess(torch.rand(48, 3, *size, generator=g)))
    responses = latents.flatten(1) @ torch.randn(latents[0].numel(), n_neurons, generator=g)
    readout = RidgeReadout(folds=3) if readout is None else readout
    return EncodingModel(backbone, readout.fit(latents, responses)).eval()


@pytest.fixture(scope="module")
def model():
    return fitted(WiderBackbone())


def pair(b=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, 16, 16, generator=g), torch.rand(b, 3, 16, 16, generator=g)


def loop_matches(f_a: torch.Tensor, f_b: torch.Tensor) -> tuple[list[list[int]], list[float]]:
    """For each cell i of one item's feature map f_a [K, h, w]: the cells j of f_b whose cos(f_a[:, i], f_b[:, j])
    is the largest up to float32 rounding (within 1e-6 of it; cos = 0 for a zero vector), lowest first, and that
    cosine, by explicit loops in float64 Python arithmetic. ReLU features tie exactly where two cells have one active
    channel each: the method's float32 cosines then pick either."""
    k = f_a.shape[0]
    a, b = f_a.reshape(k, -1).double().tolist(), f_b.reshape(k, -1).double().tolist()
    cells = len(a[0])
    candidates, best = [], []
    for i in range(cells):
        cosines = []
        for j in range(cells):
            dot = sum(a[c][i] * b[c][j] for c in range(k))
            norm_a = math.sqrt(sum(a[c][i] ** 2 for c in range(k)))
            norm_b = math.sqrt(sum(b[c][j] ** 2 for c in range(k)))
            cosines.append(0.0 if norm_a == 0 or norm_b == 0 else dot / (norm_a * norm_b))
        top = max(cosines)
        candidates.append([j for j, cos in enumerate(cosines) if cos >= top - 1e-6])
        best.append(top)
    return candidates, best


def checked_matches(f_a: torch.Tensor, f_b: torch.Tensor) -> tuple[list[int], list[float]]:
    """The method's best matches of one item's cells, each checked to be one of :func:`loop_matches`' best cells
    (the lowest of them where it is the only one or all tie exactly), and the loop's cosines."""
    candidates, best = loop_matches(f_a, f_b)
    index = best_matches(f_a[None], f_b[None]).index[0].tolist()
    for i, (j, near) in enumerate(zip(index, candidates)):
        assert j in near, f"cell {i}: matched {j}, the loop's best are {near}"
    assert sum(len(near) == 1 for near in candidates) > len(candidates) // 2  # most matches are unique
    return index, best


def realigned(f_b: torch.Tensor, index: list[int]) -> torch.Tensor:
    """f̌_b[:, i] = f_b[:, index[i]] for one item's [K, h, w], column by column."""
    flat = f_b.reshape(f_b.shape[0], -1)
    return torch.stack([flat[:, j] for j in index], dim=1).view_as(f_b)


def expected_gate(c_a, c_b, variant, threshold=0.0):
    """contribution gate written out per variant for one item's contributions (any shape)."""
    both = (c_a > 0) & (c_b > 0)
    if variant == "own":
        return torch.ones_like(c_a)
    if variant == "product":
        return c_a * c_b
    if variant == "positive":
        return torch.where(both, c_a * c_b, 0.0)
    if variant == "min":
        return torch.where(both, torch.minimum(c_a, c_b), 0.0)
    t_a, t_b = max(threshold * float(c_a.max()), 0.0), max(threshold * float(c_b.max()), 0.0)
    return ((c_a > t_a) & (c_b > t_b)).float()


def own_gradient(model, x, t):
    out = []
    for i, n in enumerate(t.tolist()):
        xi = x[i : i + 1].clone().requires_grad_(True)
        (g,) = torch.autograd.grad(model(xi)[0, n], xi)
        out.append(g)
    return torch.cat(out)


# -- correspondence sharing at the readout --------------------------------------------------------------------
def test_best_matches_equal_an_explicit_loop_over_cells(model):
    x_a, x_b = pair()
    with torch.no_grad():
        f_a, f_b = model.latents(x_a), model.latents(x_b)
    matches = best_matches(f_a, f_b)
    for i in range(4):
        candidates, cosines = loop_matches(f_a[i], f_b[i])
        assert all(j in near for j, near in zip(matches.index[i].tolist(), candidates))
        assert sum(len(near) == 1 for near in candidates) > len(candidates) // 2  # most matches are unique
        torch.testing.assert_close(matches.cosine[i].double(), torch.tensor(cosines, dtype=torch.float64))
    # ties go to the lowest j: a cell matched against a map of identical cells, and a zero cell against anything
    same = torch.ones(1, 2, 2, 2)
    assert best_matches(same, same).index.tolist() == [[0, 0, 0, 0]]
    dead = torch.zeros(1, 2, 2, 2)
    assert best_matches(dead, torch.rand(1, 2, 2, 2)).index.tolist() == [[0, 0, 0, 0]]


@pytest.mark.parametrize("path", ["gradient", "layer"])
@pytest.mark.parametrize("weight_by_match", [False, True])
def test_correspondence_equals_an_independent_loop_and_autograd(model, path, weight_by_match):
    x_a, x_b = pair()
    t = torch.tensor([0, 2, 1, 1])
    method = ParallelBackprop(model, sharing="correspondence", path=path, weight_by_match=weight_by_match)
    result = method.attribute((x_a, x_b), target=t)
    for i, n in enumerate(t.tolist()):
        w = model.readout.weight[n]
        with torch.no_grad():
            f_a, f_b = model.latents(x_a[i : i + 1])[0], model.latents(x_b[i : i + 1])[0]
        expected = {}
        for side, own, partner in (("a", f_a, f_b), ("b", f_b, f_a)):
            index, cosines = checked_matches(own, partner)
            s = w * own.flatten() * realigned(partner, index).flatten()  # product
            if weight_by_match:
                s = (s.view(C, HW) * torch.tensor(cosines, dtype=s.dtype).clamp(min=0)).flatten()
            expected[side] = s
        torch.testing.assert_close(result.shared[i], expected["a"], atol=1e-6, rtol=1e-5)
        for x, got, s in ((x_a, result.ooc, expected["a"]), (x_b, result.ref, expected["b"])):
            xi = x[i : i + 1].clone().requires_grad_(path == "gradient")
            if path == "gradient":
                (want,) = torch.autograd.grad((model.readout.features(model.latents(xi))[0] * s).sum(), xi)
            else:
                with torch.no_grad():
                    latents = model.latents(xi)
                cam = (s.view_as(latents) * latents).sum(1, keepdim=True)
                want = F.interpolate(cam, size=(16, 16), mode="bilinear", align_corners=False)
            torch.testing.assert_close(got[i : i + 1], want, atol=1e-6, rtol=1e-5)


def test_correspondence_finds_a_moved_part_that_dimension_sharing_misses():
    """The partner is the same feature map moved by one cell (circularly): every cell meets itself again."""
    g = torch.Generator().manual_seed(0)
    f_a = torch.rand(2, 3, 4, 4, generator=g)
    f_b = f_a.roll(1, dims=3)
    w = torch.randn(2, 48, generator=g)
    s_a, s_b = correspondence_shared_weights(w, f_a, f_b, "product")
    torch.testing.assert_close(s_a, w * f_a.flatten(1) ** 2)  # as if the partner were a itself
    torch.testing.assert_close(s_b, w * f_b.flatten(1) ** 2)
    assert not torch.allclose(shared_weights(w, f_a.flatten(1), f_b.flatten(1), "product"), s_a)
    # on identical images correspondence is dimension sharing
    same_a, _ = correspondence_shared_weights(w, f_a, f_a, "min")
    torch.testing.assert_close(same_a, shared_weights(w, f_a.flatten(1), f_a.flatten(1), "min"))


@pytest.mark.parametrize("variant", ["positive", "mask"])
def test_sign_safe_correspondence_gives_no_weight_to_a_negative_contribution(model, variant):
    x_a, x_b = pair(4, seed=5)
    t = torch.tensor([0, 1, 2, 0])
    result = ParallelBackprop(model, variant=variant, sharing="correspondence").attribute((x_a, x_b), target=t)
    excluded = 0
    for i, n in enumerate(t.tolist()):
        w = model.readout.weight[n]
        with torch.no_grad():
            f_a, f_b = model.latents(x_a[i : i + 1])[0], model.latents(x_b[i : i + 1])[0]
        c_a = w * f_a.flatten()
        c_b = w * realigned(f_b, checked_matches(f_a, f_b)[0]).flatten()
        negative = (c_a <= 0) | (c_b <= 0)
        assert (result.shared[i][negative] == 0).all()
        assert (result.shared[i][~negative] != 0).any()
        excluded += int(negative.sum())
    assert excluded > 0  # the readout has weights of both signs: the rule was tested


# -- multi-layer sharing (share_at) -----------------------------------------------------------------------------
def split(model):
    """The tiny model split by hand at the finer layer: G(x) and y_n(G), no hooks."""
    net = model.backbone.net

    def finer(x):
        return net[1](net[0](model.backbone.preprocess(x)))

    def objective(g, n):
        return (model.readout.features(net[3](net[2](g))) * model.readout.weight[n]).sum()

    return finer, objective


def contribution_of(model, x, n):
    """c = ∂y/∂G ⊙ G, ∂y/∂G and G [K', H', W'] of one image [1, C, H, W] for neuron n."""
    finer, objective = split(model)
    with torch.no_grad():
        g = finer(x)
    g.requires_grad_(True)
    (d_g,) = torch.autograd.grad(objective(g, n), g)
    return (d_g * g).detach()[0], d_g[0], g.detach()[0]


def independent_gates(model, x_a, x_b, n, variant, sharing, threshold=0.0):
    c_a, d_a, g_a = contribution_of(model, x_a, n)
    c_b, d_b, g_b = contribution_of(model, x_b, n)
    if sharing == "dimension":
        gate = expected_gate(c_a, c_b, variant, threshold)
        return (gate, gate), (c_a, c_b), (d_a, d_b)
    if sharing == "channel":
        gate = expected_gate(c_a.sum((1, 2)), c_b.sum((1, 2)), variant, threshold)[:, None, None].expand_as(c_a)
        return (gate, gate), (c_a, c_b), (d_a, d_b)
    gate_a = expected_gate(c_a, realigned(c_b, checked_matches(g_a, g_b)[0]), variant, threshold)
    gate_b = expected_gate(c_b, realigned(c_a, checked_matches(g_b, g_a)[0]), variant, threshold)
    return (gate_a, gate_b), (c_a, c_b), (d_a, d_b)


@pytest.mark.parametrize("sharing", ["dimension", "channel", "correspondence"])
@pytest.mark.parametrize("variant", ["product", "positive", "min", "mask", "own"])
def test_share_at_equals_a_second_autograd_formulation(model, sharing, variant):
    """Gradient path: ∂̃y/∂x = (∂G/∂x)ᵀ (gate ⊙ ∂y/∂G), computed on the hand-split network; layer path:
    Σ_k gate ⊙ ∂y/∂G ⊙ G at the finer layer, upsampled."""
    x_a, x_b = pair(3, seed=2)
    t = torch.tensor([1, 0, 2])
    kw = {"variant": variant, "sharing": sharing, "share_at": FINER, "mask_threshold": 0.1}
    pixels = ParallelBackprop(model, path="gradient", **kw).attribute((x_a, x_b), target=t)
    layer = ParallelBackprop(model, path="layer", **kw).attribute((x_a, x_b), target=t)
    finer, _ = split(model)
    for i, n in enumerate(t.tolist()):
        gates, contributions, grads = independent_gates(model, x_a[i : i + 1], x_b[i : i + 1], n, variant, sharing, 0.1)
        for j, (x, got_pixels, got_layer) in enumerate(((x_a, pixels.ooc, layer.ooc), (x_b, pixels.ref, layer.ref))):
            xi = x[i : i + 1].clone().requires_grad_(True)
            vector = (gates[j] * grads[j]).detach()
            (want,) = torch.autograd.grad((finer(xi)[0] * vector).sum(), xi)
            torch.testing.assert_close(got_pixels[i : i + 1], want, atol=1e-6, rtol=1e-4)
            cam = (gates[j] * contributions[j]).sum(0)[None, None]
            up = F.interpolate(cam, size=(16, 16), mode="bilinear", align_corners=False)
            torch.testing.assert_close(got_layer[i : i + 1], up, atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(pixels.shared, model.readout.weight[t])  # the objective: the neuron's own weights


def test_share_at_own_is_the_plain_own_gradient_the_control(model):
    from sharedattr.plugins.contracts import control_of

    x_a, x_b = pair()
    t = torch.tensor([2, 0, 1, 1])
    result = ParallelBackprop(model, variant="own", share_at=FINER, path="gradient").attribute((x_a, x_b), target=t)
    torch.testing.assert_close(result.ooc, own_gradient(model, x_a, t), atol=1e-6, rtol=1e-5)
    control = control_of(ParallelBackprop, ParallelBackpropParams(variant="own", share_at=FINER))
    assert f"without sharing at {FINER}" in control
    assert control_of(ParallelBackprop, ParallelBackpropParams(variant="own", sharing="correspondence"))
    assert control_of(ParallelBackprop, ParallelBackpropParams(variant="positive", share_at=FINER)) is None
    own_corr = ParallelBackprop(model, variant="own", sharing="correspondence", path="gradient")
    torch.testing.assert_close(own_corr.attribute((x_a, x_b), target=t).ooc, result.ooc, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("sharing", ["dimension", "correspondence"])
@pytest.mark.parametrize("variant", ["positive", "min", "mask"])
def test_sign_safe_share_at_gives_no_weight_to_a_unit_with_a_negative_contribution(model, sharing, variant):
    x_a, x_b = pair(3, seed=4)
    for i, n in enumerate([0, 1, 2]):
        c_a, _, g_a = contribution_of(model, x_a[i : i + 1], n)
        c_b, _, g_b = contribution_of(model, x_b[i : i + 1], n)
        params = ParallelBackpropParams(variant=variant, sharing=sharing, share_at=FINER)
        gate_a, _ = finer_gates(c_a[None], c_b[None], g_a[None], g_b[None], params)
        partner = c_b if sharing == "dimension" else realigned(c_b, checked_matches(g_a, g_b)[0])
        negative = (c_a <= 0) | (partner <= 0)
        assert negative.any() and (~negative).any()
        assert (gate_a[0][negative] == 0).all() and (gate_a[0][~negative] > 0).any()


# -- symmetry, batch invariance, determinism, threads --------------------------------------------------------------
CONFIGS = [
    {"sharing": "correspondence", "path": "gradient"},
    {"sharing": "correspondence", "path": "layer", "variant": "positive", "weight_by_match": True},
    {"sharing": "correspondence", "path": "ig", "n_steps": 3, "variant": "min"},
    {"share_at": FINER, "path": "gradient"},
    {"share_at": FINER, "path": "layer", "variant": "positive"},
    {"share_at": FINER, "path": "gradient", "sharing": "correspondence", "variant": "positive"},
    {"share_at": FINER, "path": "layer", "sharing": "channel", "variant": "mask", "mask_threshold": 0.1},
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "-".join(str(v) for v in c.values()))
def test_symmetric_batch_invariant_and_deterministic(model, config):
    x_a, x_b = pair(5)
    t = torch.tensor([0, 1, 2, 0, 1])
    method = ParallelBackprop(model, **config)
    batched = method.attribute((x_a, x_b), target=t)
    looped = [method.attribute((x_a[i : i + 1], x_b[i : i + 1]), target=t[i]) for i in range(5)]
    for field in ("ooc", "ref", "shared"):
        torch.testing.assert_close(
            getattr(batched, field), torch.cat([getattr(r, field) for r in looped]), atol=1e-6, rtol=1e-5
        )
    chunked = ParallelBackprop(model, internal_batch_size=2, **config).attribute((x_a, x_b), target=t)
    torch.testing.assert_close(chunked.ooc, batched.ooc, atol=1e-6, rtol=1e-5)
    swapped = method.attribute((x_b, x_a), target=t)  # the map of a, given as the second image
    torch.testing.assert_close(swapped.ref, batched.ooc, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(swapped.ooc, batched.ref, atol=1e-6, rtol=1e-5)
    again = method.attribute((x_a, x_b), target=t)
    assert all(torch.equal(u, v) for u, v in zip(again, batched))


def test_share_at_is_thread_safe_and_leaves_the_model_alone(model):
    method = ParallelBackprop(model, share_at=FINER, path="gradient", variant="positive")
    inputs = [pair(2, seed=s) for s in range(4)]
    alone = [method.attribute(p, target=1).ooc for p in inputs]
    with ThreadPoolExecutor(2) as pool:
        together = list(pool.map(lambda p: method.attribute(p, target=1).ooc, inputs))
    for a, b in zip(alone, together):
        assert torch.equal(a, b)
    assert not any(m._forward_hooks for m in model.modules())  # the hook lives on a private copy


# -- errors a user can cause ------------------------------------------------------------------------------------
def test_correspondence_needs_a_readout_on_the_flattened_feature_map():
    x_a, x_b = pair(2)
    for readout in (FactorizedReadout(max_epochs=2, patience=1), RidgeReadout(folds=3, pooling="avg")):
        method = ParallelBackprop(fitted(WiderBackbone(), readout), sharing="correspondence")
        with pytest.raises(UserError, match=r"sharing = 'correspondence' needs a readout.*pooling = 'none'"):
            method.attribute((x_a, x_b), target=0)
    pooled = fitted(WiderBackbone(), FactorizedReadout(max_epochs=2, patience=1))  # at a finer layer, any readout works
    result = ParallelBackprop(pooled, sharing="correspondence", share_at=FINER).attribute((x_a, x_b), target=0)
    assert torch.isfinite(result.ooc).all()


def test_share_at_errors_name_the_field_and_the_fix(model, registry):
    with pytest.raises(UserError, match=r"share_at: layer 'block9' is not a module.*Modules: net"):
        ParallelBackprop(model, share_at="block9")
    for last in ("net.3", "net"):  # the backbone's output: the readout layer itself
        with pytest.raises(UserError, match=r"share_at = .* is not a layer before the backbone's output"):
            ParallelBackprop(model, share_at=last)
    with pytest.raises(SpecError, match="share_at works on the gradient and layer paths"):
        registry.build("method", "parallel_backprop", model, share_at=FINER, path="ig")
    with pytest.raises(SpecError, match="weight_by_match applies to sharing = 'correspondence'"):
        registry.build("method", "parallel_backprop", model, weight_by_match=True)


def test_share_at_reaches_named_layers_of_the_shipped_backbone():
    from sharedattr.encoding.backbones.insilico_cnn import InsilicoCNNBackbone
    from sharedattr.encoding.model import EncodingModel

    backbone = InsilicoCNNBackbone(layer="block3", input_size=32)
    images = torch.rand(24, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        latents = backbone(backbone.preprocess(images))
    responses = latents.flatten(1)[:, :2] + 0.1 * torch.randn(24, 2, generator=torch.Generator().manual_seed(1))
    model = EncodingModel(backbone, RidgeReadout(folds=3).fit(latents, responses)).eval()
    result = ParallelBackprop(model, share_at="block2", variant="positive").attribute(
        (images[:2], images[2:4]), target=0
    )
    assert result.ooc.shape == (2, 1, 32, 32) and torch.isfinite(result.ooc).all()
    for layer, why in (("block3", "readout layer"), ("block4", "not a module")):
        with pytest.raises(UserError, match=why):
            ParallelBackprop(model, share_at=layer)


def test_share_at_reaches_graph_nodes_of_a_torchvision_backbone():
    """torchvision backbones are FX graphs: share_at taps a module's last node there (as Grad-CAM's layer does)."""
    from sharedattr.encoding.backbones.torchvision_models import TorchvisionBackbone

    backbone = TorchvisionBackbone(model="resnet18", layer="layer3", input_size=32)
    model = fitted(backbone, n_neurons=2)
    x_a, x_b = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    own = ParallelBackprop(model, share_at="layer2", path="gradient", variant="own").attribute((x_a, x_b), target=1)
    expected = own_gradient(model, x_a, torch.tensor([1, 1]))  # a deep network: float32 sums in other orders
    torch.testing.assert_close(own.ooc, expected, atol=1e-4 * float(expected.abs().max()), rtol=1e-4)
    shared = ParallelBackprop(model, share_at="layer2.1", variant="positive").attribute((x_a, x_b), target=1)
    assert shared.ooc.shape == (2, 1, 32, 32) and torch.isfinite(shared.ooc).all()
    for layer, why in (("layer3", "readout layer"), ("layer4", "did you mean 'layer3'")):
        with pytest.raises(UserError, match=why):
            ParallelBackprop(model, share_at=layer)


def test_a_run_explains_pairs_with_the_new_configurations_and_records_their_controls(tiny_config, tmp_path):
    """Through the whole chain (fit → select → explain → write): correspondence and share_at on a torchvision
    backbone, their own control, and bilrp; components.json says which label is a control."""
    import json

    import pandas as pd

    from sharedattr.config.validation import validate_experiment
    from sharedattr.experiment.run import run_experiment

    tiny_config["selection"] = {"neurons": ["limbs"], "drivers_per_neuron": 2}
    tiny_config["methods"] = [
        {"name": "parallel_backprop", "sharing": "correspondence", "variant": "positive"},
        {"name": "parallel_backprop", "share_at": "layer1.0", "variant": "positive"},
        {"name": "parallel_backprop", "share_at": "layer1.0", "variant": "own"},
        "bilrp",
    ]
    run_experiment(validate_experiment(tiny_config), tmp_path, progress=False)
    results = pd.read_parquet(tmp_path / "results.parquet")
    labels = ["parallel_backprop", "parallel_backprop#2", "parallel_backprop#3", "bilrp"]
    assert sorted(results["method"].unique()) == sorted(labels)
    assert results.groupby("method")["value"].count().min() > 0
    records = json.loads((tmp_path / "components.json").read_text())["methods"]
    assert [records[label]["control"] is not None for label in labels] == [False, False, True, False]
    assert records["parallel_backprop#2"]["params"]["share_at"] == "layer1.0"
