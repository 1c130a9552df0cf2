"""Captum method wrappers against direct Captum calls, hook safety on torchvision, Grad-CAM layers."""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from captum.attr import (
    Deconvolution,
    DeepLift,
    GradientShap,
    GuidedBackprop,
    GuidedGradCam,
    InputXGradient,
    IntegratedGradients,
    LayerAttribution,
    LayerGradCam,
    NoiseTunnel,
    Occlusion,
    Saliency,
)
from torch import Tensor, nn

from sharedattr.attribution.captum_methods import UpsampledGradCam
from sharedattr.attribution.hook_safety import (
    CallSiteRouter,
    calls_per_module,
    hook_safe_copy,
    private_copy,
)
from sharedattr.encoding.model import EncodingModel
from sharedattr.encoding.readouts.ridge import RidgeReadout
from sharedattr.plugins.loading import load_registry
from sharedattr.runtime.errors import SpecError, UserError
from sharedattr.testing import checks_for, tiny_model

pytestmark = [
    pytest.mark.filterwarnings("ignore:Setting (forward, )?backward hooks:UserWarning"),
    pytest.mark.filterwarnings("ignore:Input Tensor 0 did not already require gradients:UserWarning"),
    pytest.mark.usefixtures("one_thread"),
]  # tiny networks: one thread is fastest

TARGET = torch.tensor([0, 2, 1])


def images(n: int = 3, size: int = 16, seed: int = 1) -> Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def seeded(seed: int, compute: Callable[[], Tensor]) -> Tensor:
    """``compute()`` with torch's and numpy's global generators seeded (as a user would call Captum)."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    return compute()


def fit_model(backbone: nn.Module, n_neurons: int = 3, seed: int = 0) -> EncodingModel:
    """``backbone`` + a ridge readout fitted to responses planted linearly in random latents."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        latents = torch.randn(
            40, *backbone(backbone.preprocess(torch.zeros(1, 3, *backbone.input_size))).shape[1:], generator=g
        )
    weights = torch.randn(n_neurons, latents[0].numel(), generator=g)
    readout = RidgeReadout(folds=3).fit(latents, latents.flatten(1) @ weights.T)
    return EncodingModel(backbone, readout).eval()


@pytest.fixture(scope="module")
def tiny() -> EncodingModel:
    """The conformance checks' tiny model (shared: no method may modify it)."""
    return tiny_model()


def target_responses(model: nn.Module, x: Tensor, target: Tensor) -> Tensor:
    return model(x)[torch.arange(len(target)), target]


# -- every wrapper equals the direct Captum call -------------------------------------------
def nt(method, **kw):
    return NoiseTunnel(method).attribute(**kw)


DIRECT = [
    ("saliency", {}, lambda m, x, t: Saliency(m).attribute(x, target=t, abs=True)),
    ("input_x_gradient", {}, lambda m, x, t: InputXGradient(m).attribute(x, target=t)),
    (
        "integrated_gradients",
        {"n_steps": 8, "baseline": 0.5},
        lambda m, x, t: IntegratedGradients(m).attribute(x, baselines=torch.full_like(x, 0.5), target=t, n_steps=8),
    ),
    ("guided_backprop", {}, lambda m, x, t: GuidedBackprop(m).attribute(x, target=t)),
    ("deconvolution", {}, lambda m, x, t: Deconvolution(m).attribute(x, target=t)),
    ("deep_lift", {"baseline": 0.25}, lambda m, x, t: DeepLift(m).attribute(x, baselines=0.25, target=t)),
    (
        "deep_lift",
        {"multiply_by_inputs": False},
        lambda m, x, t: DeepLift(m, multiply_by_inputs=False).attribute(x, baselines=0.0, target=t),
    ),
    (
        "gradient_shap",
        {"n_samples": 4, "stdevs": 0.1, "seed": 3},
        lambda m, x, t: seeded(
            3,
            lambda: GradientShap(m).attribute(
                x,
                baselines=torch.stack([torch.zeros_like(x[0]), torch.ones_like(x[0])]),
                n_samples=4,
                stdevs=0.1,
                target=t,
            ),
        ),
    ),
    (
        "occlusion",
        {"window": 4, "stride": 4, "baseline": 0.5, "perturbations_per_eval": 3},
        lambda m, x, t: Occlusion(m).attribute(
            x, sliding_window_shapes=(3, 4, 4), strides=(3, 4, 4), baselines=0.5, target=t, perturbations_per_eval=3
        ),
    ),
    (
        "grad_cam",
        {"layer": "net.1"},
        lambda m, x, t: LayerAttribution.interpolate(
            LayerGradCam(m, m.backbone.net[1]).attribute(x, target=t, relu_attributions=True),
            (16, 16),
            interpolate_mode="bilinear",
        ),
    ),
    (
        "grad_cam",
        {"relu_attributions": False, "interpolate_mode": "nearest"},
        lambda m, x, t: LayerAttribution.interpolate(LayerGradCam(m, m.backbone).attribute(x, target=t), (16, 16)),
    ),
    (
        "guided_grad_cam",
        {"layer": "net.2"},
        lambda m, x, t: GuidedGradCam(m, m.backbone.net[2]).attribute(x, target=t, interpolate_mode="bilinear"),
    ),
    (
        "smoothgrad",
        {"samples": 4, "stdevs": 0.2, "seed": 5},
        lambda m, x, t: seeded(
            5, lambda: nt(Saliency(m), inputs=x, nt_type="smoothgrad", nt_samples=4, stdevs=0.2, target=t, abs=True)
        ),
    ),
    (
        "saliency",
        {"abs": False, "noise_tunnel": {"type": "vargrad", "samples": 3, "seed": 7}},
        lambda m, x, t: seeded(
            7, lambda: nt(Saliency(m), inputs=x, nt_type="vargrad", nt_samples=3, stdevs=0.15, target=t, abs=False)
        ),
    ),
    (
        "guided_backprop",
        {"noise_tunnel": {"type": "smoothgrad_sq", "samples": 3, "samples_batch_size": 2, "seed": 1}},
        lambda m, x, t: seeded(
            1,
            lambda: nt(
                GuidedBackprop(m),
                inputs=x,
                nt_type="smoothgrad_sq",
                nt_samples=3,
                nt_samples_batch_size=2,
                stdevs=0.15,
                target=t,
            ),
        ),
    ),
    (
        "deep_lift",
        {"noise_tunnel": {"samples": 2, "stdevs": 0.3, "seed": 4}},
        lambda m, x, t: seeded(
            4,
            lambda: nt(DeepLift(m), inputs=x, nt_type="smoothgrad", nt_samples=2, stdevs=0.3, baselines=0.0, target=t),
        ),
    ),
    (
        "integrated_gradients",
        {"n_steps": 4, "noise_tunnel": {"samples": 2}},
        lambda m, x, t: seeded(
            0,
            lambda: nt(
                IntegratedGradients(m),
                inputs=x,
                nt_type="smoothgrad",
                nt_samples=2,
                stdevs=0.15,
                n_steps=4,
                baselines=0.0,
                target=t,
            ),
        ),
    ),
    (
        "occlusion",
        {"noise_tunnel": {"samples": 2, "seed": 2}},
        lambda m, x, t: seeded(
            2,
            lambda: nt(
                Occlusion(m),
                inputs=x,
                nt_type="smoothgrad",
                nt_samples=2,
                stdevs=0.15,
                sliding_window_shapes=(3, 8, 8),
                strides=(3, 4, 4),
                baselines=0.0,
                target=t,
            ),
        ),
    ),
    (
        "grad_cam",
        {"noise_tunnel": {"samples": 2, "seed": 6}},
        lambda m, x, t: seeded(
            6,
            lambda: nt(
                UpsampledGradCam(m, m.backbone), inputs=x, nt_type="smoothgrad", nt_samples=2, stdevs=0.15, target=t
            ),
        ),
    ),
]


@pytest.mark.parametrize(
    ("name", "params", "direct"), DIRECT, ids=[f"{n}-{'-'.join(p) or 'defaults'}" for n, p, _ in DIRECT]
)
def test_wrappers_equal_direct_captum_calls(registry, tiny, name, params, direct):
    model, x = tiny, images()
    maps = registry.build("method", name, model, **params).attribute(x, target=TARGET)
    expected = direct(model, x.clone().requires_grad_(True), TARGET)
    assert maps.shape == (3, 1 if "grad_cam" == name else 3, 16, 16)
    torch.testing.assert_close(maps, expected.detach())


def test_keyword_arguments_override_params_like_captum(registry, tiny):
    model, x = tiny, images()
    maps = registry.build("method", "deep_lift", model).attribute(x, target=TARGET, baselines=0.5)
    torch.testing.assert_close(maps, DeepLift(model).attribute(x, baselines=0.5, target=TARGET))


def test_stochastic_methods_are_seeded_and_leave_global_generators_alone(registry, tiny):
    model, x = tiny, images()
    method = registry.build("method", "gradient_shap", model, n_samples=4, seed=1)
    assert not method.batch_invariant
    torch.manual_seed(123)
    np.random.seed(123)
    first = method.attribute(x, target=TARGET)
    after = (torch.rand(2), np.random.rand(2))
    torch.manual_seed(123)
    np.random.seed(123)
    torch.testing.assert_close(after[0], torch.rand(2), rtol=0, atol=0)
    assert np.array_equal(after[1], np.random.rand(2))
    torch.testing.assert_close(method.attribute(x, target=TARGET), first, rtol=0, atol=0)
    other = registry.build("method", "gradient_shap", model, n_samples=4, seed=2).attribute(x, target=TARGET)
    assert not torch.allclose(other, first)


def test_noise_tunnel_makes_an_instance_stochastic(registry, tiny):
    model = tiny
    assert registry.build("method", "saliency", model).batch_invariant
    assert not registry.build("method", "saliency", model, noise_tunnel={"samples": 2}).batch_invariant
    assert not registry.build("method", "smoothgrad", model).batch_invariant


def test_method_check_demands_determinism_of_stochastic_methods():
    class Unseeded:
        batch_invariant = False

        def __init__(self, model):
            self.model = model

        def attribute(self, inputs, target=None):
            return torch.rand_like(inputs)

    class Seeded(Unseeded):  # noise drawn per batch: reproducible, yet not equal to a per-item loop
        def attribute(self, inputs, target=None):
            return torch.rand(inputs.shape, generator=torch.Generator().manual_seed(0))

    class SeededButClaimsInvariance(Seeded):
        batch_invariant = True

    def check(method: type) -> None:  # the method's named checks, as a plugin author runs them
        for named in checks_for("method", method, method.__name__):
            named()

    with pytest.raises(AssertionError, match="must be seeded"):
        check(Unseeded)
    check(Seeded)
    with pytest.raises(AssertionError, match="looped"):
        check(SeededButClaimsInvariance)


# -- params --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("occlusion", {"window": 0}, r"window: Input should be greater than or equal to 1"),
        ("occlusion", {"stride": 2.5}, r"stride: Input should be a valid integer"),
        ("saliency", {"noise_tunnel": {"type": "gauss"}}, r"noise_tunnel\.type: Input should be 'smoothgrad'"),
        ("deep_lift", {"noise_tunnel": {"samples": 0}}, r"noise_tunnel\.samples: Input should be greater"),
        ("guided_backprop", {"noise_tunnel": {"sample": 4}}, r"noise_tunnel\.sample: unknown parameter"),
        ("gradient_shap", {"baselines": []}, r"baselines: List should have at least 1 item"),
        ("gradient_shap", {"noise_tunnel": {"samples": 2}}, r"noise_tunnel: unknown parameter"),
        ("smoothgrad", {"seed": -1}, r"seed: Input should be greater than or equal to 0"),
        ("grad_cam", {"interpolate_mode": "linear"}, r"interpolate_mode: Input should be 'nearest'"),
        ("guided_grad_cam", {"layer": ""}, r"layer: String should have at least 1 character"),
    ],
)
def test_bad_params_are_spec_errors_with_field_paths(registry, tiny, name, params, message):
    with pytest.raises(SpecError, match=message):
        registry.build("method", name, tiny, **params)


def test_occlusion_window_larger_than_the_image_is_a_user_error(registry, tiny):
    method = registry.build("method", "occlusion", tiny, window=20)
    with pytest.raises(UserError, match="window 20 is larger than the 16×16 images"):
        method.attribute(images(), target=TARGET)


# -- Grad-CAM --------------------------------------------------------------------------------
def grad_cam_by_hand(x: Tensor, target: Tensor, run: Callable[[Tensor, list[Tensor]], Tensor]) -> Tensor:
    """ReLU(Σ_k mean(∂r/∂A_k) A_k), bilinearly upsampled; ``run(x, acts)`` returns ``[B, N]`` and appends A."""
    x = x.clone().requires_grad_(True)
    acts: list[Tensor] = []
    out = run(x, acts)
    a = acts[0]
    grad = torch.autograd.grad(out[torch.arange(len(target)), target].sum(), a)[0]
    cam = F.relu((grad.mean((2, 3), keepdim=True) * a).sum(1, keepdim=True))
    return F.interpolate(cam, tuple(x.shape[-2:]), mode="bilinear").detach()


def test_grad_cam_at_the_backbone_output_equals_a_hand_computation(registry, tiny):
    model, x = tiny, images()

    def run(inputs, acts):
        acts.append(model.backbone(model.backbone.preprocess(inputs)))
        return model.readout(acts[0])

    maps = registry.build("method", "grad_cam", model).attribute(x, target=TARGET)
    torch.testing.assert_close(maps, grad_cam_by_hand(x, TARGET, run))


def test_unknown_layer_is_a_user_error_naming_the_modules(registry, tiny, resnet_model):
    with pytest.raises(UserError, match=r"'net\.9' is not a module.*did you mean 'net\.\d'.*Modules: net, net\.0"):
        registry.build("method", "grad_cam", tiny, layer="net.9")
    with pytest.raises(UserError, match=r"did you mean 'layer1'\?.*Modules: conv1, bn1, relu, maxpool, layer1"):
        registry.build("method", "guided_grad_cam", resnet_model, layer="layr1")
    with pytest.raises(UserError, match=r"'layer3' is not a module.*past the backbone's cut layer"):
        registry.build("method", "grad_cam", resnet_model, layer="layer3")


# -- torchvision: hook safety ------------------------------------------------------------------
@pytest.fixture(scope="module")
def resnet_model() -> EncodingModel:
    """resnet18 cut at layer2 (32 px; in-place ReLUs, each block's ReLU module called twice) + a ridge readout."""
    backbone = load_registry().build("backbone", "torchvision", model="resnet18", layer="layer2", input_size=32)
    return fit_model(backbone)


RESNET_METHODS = [
    ("guided_backprop", {}),
    ("deconvolution", {}),
    ("deep_lift", {}),
    ("guided_grad_cam", {"layer": "layer1"}),
    ("grad_cam", {"layer": "layer1"}),
]


@pytest.mark.parametrize(("name", "params"), RESNET_METHODS, ids=[n for n, _ in RESNET_METHODS])
def test_hook_based_methods_run_on_resnet_and_leave_the_model_alone(registry, resnet_model, name, params):
    x, target = images(2, 32), torch.tensor([0, 2])
    with torch.no_grad():
        before = resnet_model(x)
    maps = registry.build("method", name, resnet_model, **params).attribute(x, target=target)
    assert maps.shape == (2, 1 if name == "grad_cam" else 3, 32, 32)
    assert torch.isfinite(maps).all() and maps.abs().sum() > 0
    relus = [m for m in resnet_model.modules() if isinstance(m, nn.ReLU)]
    assert relus and all(relu.inplace for relu in relus)
    graph = resnet_model.backbone.body.graph
    assert [n.target for n in graph.nodes if n.op == "call_module"].count("layer1.0.relu") == 2
    assert not any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks for m in resnet_model.modules())
    assert not any(m.training for m in resnet_model.backbone.body.modules())
    with torch.no_grad():
        torch.testing.assert_close(resnet_model(x), before, rtol=0, atol=0)


class GuidedReLU(torch.autograd.Function):
    """ReLU whose backward passes ``max(g, 0)`` where the input was positive (guided backpropagation)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad.clamp(min=0) * (x > 0)


class DeconvReLU(torch.autograd.Function):
    """ReLU whose backward passes ``max(g, 0)`` regardless of the input (deconvolution)."""

    @staticmethod
    def forward(ctx, x):
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        return grad.clamp(min=0)


class FunctionModule(nn.Module):
    def __init__(self, function: type[torch.autograd.Function]) -> None:
        super().__init__()
        self.function = function

    def forward(self, x):
        return self.function.apply(x)


def gradient_with_relus_replaced(
    model: nn.Module, function: type[torch.autograd.Function], x: Tensor, target: Tensor
) -> Tensor:
    """∂r/∂x of a plain copy of ``model`` whose every ``nn.ReLU`` module is ``function`` (no hooks)."""
    reference = copy.deepcopy(model).eval()
    for name, module in list(reference.named_modules()):
        if isinstance(module, nn.ReLU):
            reference.set_submodule(name, FunctionModule(function))
    x = x.clone().requires_grad_(True)
    return torch.autograd.grad(target_responses(reference, x, target).sum(), x)[0]


@pytest.mark.parametrize(("name", "function"), [("guided_backprop", GuidedReLU), ("deconvolution", DeconvReLU)])
def test_modified_backprop_on_resnet_equals_an_autograd_reimplementation(registry, resnet_model, name, function):
    x, target = images(2, 32), torch.tensor([1, 2])
    maps = registry.build("method", name, resnet_model).attribute(x, target=target)
    expected = gradient_with_relus_replaced(resnet_model, function, x, target)
    assert expected.abs().max() > 0
    torch.testing.assert_close(maps, expected, rtol=1e-4, atol=1e-6)


def test_deep_lift_fails_on_raw_resnet_but_is_complete_on_the_safe_copy(registry, resnet_model):
    # Captum's max-pool rule does not sum to the output difference; an average pool is linear.
    model = copy.deepcopy(resnet_model).eval()
    model.backbone.body.maxpool = nn.AvgPool2d(3, 2, 1)
    x, target = images(2, 32), torch.tensor([0, 1])
    maps = registry.build("method", "deep_lift", model, baseline=0.5).attribute(x, target=target)
    with torch.no_grad():
        delta = target_responses(model, x, target) - target_responses(model, torch.full_like(x, 0.5), target)
    torch.testing.assert_close(maps.sum((1, 2, 3)), delta, rtol=1e-3, atol=1e-4)
    with pytest.raises(RuntimeError, match="more than once"):
        DeepLift(model).attribute(x.clone(), baselines=0.5, target=target)


def recorded_activation(model: nn.Module, module: str, call: int, of_input: bool):
    """A runner for :func:`grad_cam_by_hand`: the ``call``-th input or output of a body module."""

    def run(x, acts):
        seen: list[Tensor] = []
        sub = model.backbone.body.get_submodule(module)
        hook = (
            sub.register_forward_pre_hook(lambda m, inp: seen.append(inp[0]))
            if of_input
            else sub.register_forward_hook(lambda m, inp, out: seen.append(out))
        )
        try:
            out = model(x)
        finally:
            hook.remove()
        acts.append(seen[call])
        return out

    return run


@pytest.mark.parametrize(
    ("layer", "module", "call", "of_input"),
    [
        ("layer1", "layer1.1.relu", 1, False),  # a container: the output of its last node
        ("body.layer1", "layer1.1.relu", 1, False),
        ("layer1.0.add", "layer1.0.relu", 1, True),  # a functional graph node (torchvision node name)
        ("layer1.0.relu", "layer1.0.relu", 0, False),  # a module called twice: its first call, as in torchvision
    ],
)
def test_grad_cam_taps_torchvision_layers(registry, resnet_model, layer, module, call, of_input):
    x, target = images(2, 32), torch.tensor([2, 0])
    reference = copy.deepcopy(resnet_model).eval()
    for m in reference.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False  # the recorded activations must not be overwritten later
    expected = grad_cam_by_hand(x, target, recorded_activation(reference, module, call, of_input))
    maps = registry.build("method", "grad_cam", resnet_model, layer=layer).attribute(x, target=target)
    torch.testing.assert_close(maps, expected, rtol=1e-4, atol=1e-5)


def test_private_copy_keeps_torchvision_backbones_in_eval_mode(resnet_model):
    # torchvision's DualGraphModule.__deepcopy__ re-runs its constructor, which switches to training mode.
    clone = private_copy(resnet_model)
    assert not any(m.training for m in clone.backbone.body.modules())
    x = images(2, 32)
    with torch.no_grad():
        torch.testing.assert_close(clone(x), resnet_model(x), rtol=0, atol=0)


# -- hook safety on plain modules ----------------------------------------------------------
class TwinBranch(nn.Module):
    """A plain (non-FX) backbone that calls one in-place ReLU three times, twice in parallel branches."""

    input_size = (12, 12)
    in_channels = 3

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.a, self.b = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(3, 4, 5, padding=2)
        self.c = nn.Conv2d(4, 5, 3, stride=2, padding=1)
        for p in self.parameters():
            p.data = torch.randn(p.shape, generator=g) * 0.3
        self.act = nn.ReLU(inplace=True)
        self.requires_grad_(False).eval()

    def preprocess(self, images: Tensor) -> Tensor:
        return images - 0.5

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.c(self.act(self.a(x)) - self.act(self.b(x))))


def test_hook_safe_copy_routes_each_call_of_a_shared_module_to_its_own_copy():
    model = fit_model(TwinBranch())
    x = images(2, 12)
    safe = hook_safe_copy(model)
    router = safe.backbone.act
    assert isinstance(router, CallSiteRouter) and len(router.copies) == 3
    assert max(calls_per_module(safe, x).values()) == 1
    calls = [0, 0, 0]
    for i, relu in enumerate(router.copies):
        relu.register_forward_pre_hook(lambda m, inp, i=i: calls.__setitem__(i, calls[i] + 1))
    with torch.no_grad():
        torch.testing.assert_close(safe(x), model(x), rtol=0, atol=0)
        safe(x)
    assert calls == [2, 2, 2]
    assert isinstance(model.backbone.act, nn.ReLU) and model.backbone.act.inplace


def test_deep_lift_on_a_plain_module_with_a_shared_relu_is_complete(registry):
    model = fit_model(TwinBranch())
    x, target = images(3, 12), TARGET
    with pytest.raises(RuntimeError, match="more than once"):
        DeepLift(model).attribute(x.clone(), target=target)
    maps = registry.build("method", "deep_lift", model).attribute(x, target=target)
    with torch.no_grad():
        delta = target_responses(model, x, target) - target_responses(model, torch.zeros_like(x), target)
    torch.testing.assert_close(maps.sum((1, 2, 3)), delta, rtol=1e-4, atol=1e-5)


def test_hook_safe_copy_refuses_a_model_that_relies_on_in_place_mutation():
    class Mutating(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.act = nn.Conv2d(3, 2, 3), nn.ReLU(inplace=True)

        def forward(self, x):
            h = self.conv(x)
            self.act(h)  # the result is used through h
            return h.sum((1, 2, 3))

    with pytest.raises(RuntimeError, match="in-place activation"):
        hook_safe_copy(Mutating(), example=images(1, 8))


class FxBackbone(nn.Module):
    """A backbone whose body is a plain ``torch.fx`` trace: block ``2`` calls one in-place ReLU twice."""

    input_size = (12, 12)
    in_channels = 3

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(4)
        act = nn.ReLU(inplace=True)
        net = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), act, nn.Conv2d(4, 5, 3, stride=2), act),
        )
        for p in net.parameters():
            p.data = torch.randn(p.shape, generator=g) * 0.3
        self.body = torch.fx.symbolic_trace(net)
        self.requires_grad_(False).eval()

    def preprocess(self, images: Tensor) -> Tensor:
        return images - 0.5

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


def test_grad_cam_taps_a_container_of_a_plain_fx_graph(registry):
    model = fit_model(FxBackbone())
    x, target = images(3, 12), TARGET
    reference = copy.deepcopy(model).eval()
    reference.backbone.body.get_submodule("2.1").inplace = False
    expected = grad_cam_by_hand(x, target, recorded_activation(reference, "2.1", 1, False))
    maps = registry.build("method", "grad_cam", model, layer="2").attribute(x, target=target)
    torch.testing.assert_close(maps, expected, rtol=1e-4, atol=1e-6)
    assert model.backbone.body.get_submodule("2.1").inplace


class FunctionalNet(nn.Module):
    """Two convolutions with functional ReLUs (``relu`` is swappable for a reference computation)."""

    def __init__(self, relu: Callable[[Tensor], Tensor] = F.relu) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(5)
        self.c1, self.c2 = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 5, 3, stride=2, padding=1)
        for p in self.parameters():
            p.data = torch.randn(p.shape, generator=g) * 0.3
        self.relu = relu

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.c2(self.relu(self.c1(x))))


class FunctionalBackbone(nn.Module):
    input_size = (12, 12)
    in_channels = 3

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body
        self.requires_grad_(False).eval()

    def preprocess(self, images: Tensor) -> Tensor:
        return images - 0.5

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


def test_functional_relus_of_fx_graphs_become_hookable_modules(registry):
    model = fit_model(FunctionalBackbone(torch.fx.symbolic_trace(FunctionalNet())))
    x, target = images(3, 12), TARGET
    safe = hook_safe_copy(model)
    assert sum(isinstance(m, nn.ReLU) for m in safe.backbone.body.modules()) == 2
    assert not any(isinstance(m, nn.ReLU) for m in model.backbone.body.modules())
    reference = copy.deepcopy(model)
    reference.backbone.body = FunctionalNet(relu=GuidedReLU.apply)
    reference.backbone.body.load_state_dict(model.backbone.body.state_dict())
    x_ref = x.clone().requires_grad_(True)
    expected = torch.autograd.grad(target_responses(reference, x_ref, target).sum(), x_ref)[0]
    torch.testing.assert_close(registry.build("method", "guided_backprop", model).attribute(x, target=target), expected)
    plain = Saliency(model).attribute(x, target=target, abs=False)  # what Captum's hooks give on the raw graph
    torch.testing.assert_close(GuidedBackprop(model).attribute(x, target=target), plain)
    assert not torch.allclose(plain, expected, atol=1e-4)


def test_an_observable_in_place_functional_relu_is_left_alone():
    class Mutating(nn.Module):
        def forward(self, x):
            h = x * 2 - 1
            torch.relu_(h)  # the result is used through h
            return h.sum((1, 2, 3))

    graph = torch.fx.symbolic_trace(Mutating())
    safe = hook_safe_copy(graph, example=images(1, 8))  # raises if the copy computed something else
    assert [n.op for n in safe.graph.nodes if "relu" in str(n.target)] == ["call_function"]


def test_graph_node_names_come_from_the_backbone_not_its_class():
    """hook_safety asks the backbone (duck typing) for its graph's qualified node names: any backbone that
    offers ``qualified_node_names`` gets the exact scopes, whatever its class; one without gets module paths."""
    from sharedattr.attribution.hook_safety import node_scopes
    from sharedattr.plugins.loading import load_registry

    torchvision_backbone = load_registry(entry_points=False).build(
        "backbone", "torchvision", model="resnet18", layer="layer2", input_size=32
    )
    graph = torchvision_backbone.body

    class Other(nn.Module):  # not a TorchvisionBackbone
        def __init__(self, body, names):
            super().__init__()
            self.body, self._names = body, names

        def qualified_node_names(self):
            return self._names

    exact = node_scopes(graph, torchvision_backbone)
    assert node_scopes(graph, Other(graph, torchvision_backbone.qualified_node_names())) == exact
    assert any(v.endswith(".add") for v in exact.values())  # functional nodes are named too
    plain = node_scopes(graph, nn.Module())
    assert not any(v.endswith(".add") for v in plain.values())  # module paths only


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
