"""The ``insilico_cnn`` backbone: shipped weights and their record, weights options, training, attribution."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sharedattr.data.insilico.render import PARTS, render_set
from sharedattr.encoding.backbones.frozen import load_state_dict_file
from sharedattr.encoding.backbones.insilico_cnn import (
    LAYERS,
    METADATA_KEY,
    InsilicoCNN,
    InsilicoCNNBackbone,
    read_metadata,
    shipped_record,
    shipped_weights_path,
)
from sharedattr.encoding.model import EncodingModel
from sharedattr.encoding.readouts.ridge import RidgeReadout
from sharedattr.plugins.loading import get_registry
from sharedattr.runtime.errors import SpecError, UserError
from trainers.insilico_cnn import (
    SetSpec,
    TrainConfig,
    evaluate,
    normalise,
    part_presence,
    save,
    set_digest,
    to_tensor,
    train,
)

pytestmark = [
    pytest.mark.filterwarnings("ignore:Setting (forward, )?backward hooks:UserWarning"),
    pytest.mark.filterwarnings("ignore:Input Tensor 0 did not already require gradients:UserWarning"),
]


def build(**params) -> InsilicoCNNBackbone:
    return get_registry().build("backbone", "insilico_cnn", **params)


def pixels(n: int = 2, size: int = 32, seed: int = 1) -> Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def latents(backbone: nn.Module, x: Tensor) -> Tensor:
    with torch.no_grad():
        return backbone(backbone.preprocess(x))


class PresenceModel(nn.Module):
    """A registry-built backbone cut at block4 + the shipped training head: normalised images → part logits."""

    def __init__(self, backbone: nn.Module, head: nn.Linear) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone(x).mean(dim=(2, 3)))


# -- (a), (b): the shipped weights and their record ------------------------------------------
@pytest.fixture(scope="module", params=["insilico-v1", "insilico-resnet18-v1"])
def record(request) -> dict:
    return shipped_record(request.param)


def test_shipped_weights_reproduce_the_recorded_test_accuracy(record):
    name = record["weights"]
    backbone = build(layer="block4", weights=name)
    assert backbone.weights_source == name and backbone.input_size == (64, 64)
    assert backbone.architecture == {k: v for k, v in record["architecture"].items() if k in backbone.architecture}
    norm = record["normalisation"]
    torch.testing.assert_close(backbone.mean.flatten(), torch.tensor(norm["mean"]))
    torch.testing.assert_close(backbone.std.flatten(), torch.tensor(norm["std"]))
    with shipped_weights_path(name) as path:
        state = load_state_dict_file(path)
    head = nn.Linear(*state["head.weight"].shape[::-1])
    head.load_state_dict({"weight": state["head.weight"], "bias": state["head.bias"]})
    model = PresenceModel(backbone, head).eval()
    assert record["task"]["min_part_pixels"] >= 1 and record["task"]["parts"] == list(PARTS)
    for check in record["check"]["sets"]:
        spec = SetSpec(**check["spec"])
        subset = spec.render(check["n_per_category"])
        assert set_digest(subset, record["task"]["min_part_pixels"]) == check["digest"], (
            f"the renderer no longer draws test set {check['spec']} as when the weights were trained: retrain them "
            "with `uv run python scripts/train_insilico_cnn.py` (and bump the weights name if they change)"
        )
        result = evaluate(
            model, subset, mean=norm["mean"], std=norm["std"], min_pixels=record["task"]["min_part_pixels"]
        )
        for part in PARTS:  # float summation order may differ across machines: one image of slack
            assert abs(result["correct"][part] - check["correct"][part]) <= 1, (part, check["spec"], result["correct"])
    # the preprocessing the backbone applies is the training's normalisation
    x = to_tensor(subset.images[:2])
    torch.testing.assert_close(backbone.preprocess(x.float() / 255), normalise(x, norm["mean"], norm["std"]))


def test_record_matches_the_shipped_file(record):
    with shipped_weights_path(record["weights"]) as path:
        data = path.read_bytes()
        metadata = read_metadata(path)
    assert hashlib.sha256(data).hexdigest() == record["file"]["sha256"]
    assert len(data) == record["file"]["bytes"] < 3_000_000
    assert metadata["architecture"] == {k: record["architecture"][k] for k in metadata["architecture"]}
    assert metadata["mean"] == record["normalisation"]["mean"] and metadata["std"] == record["normalisation"]["std"]
    overall = record["test"]["overall"]
    assert overall["mean_accuracy"] >= 0.95, overall
    assert {s["spec"]["seed"] for s in record["test"]["sets"]}.isdisjoint(
        {s["seed"] for s in record["training"]["train_sets"]}
    ), "test sets must be rendered with other seeds"
    assert record["training"]["epochs"] >= 1 and record["wall_time_s"]["total"] > 0


# -- (c) … (e): weights and params ---------------------------------------------------------------
def test_random_init_is_seeded():
    x = pixels()
    a, b, c = (latents(build(weights=None, seed=s, input_size=32), x) for s in (0, 0, 1))
    assert a.shape == (2, 128, 4, 4)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, c)
    assert not torch.allclose(a, latents(build(input_size=32), x)), "random weights must differ from the shipped ones"


def test_layers_and_input_sizes():
    channels = shipped_record()["architecture"]["channels"]
    for k, layer in enumerate(LAYERS):
        backbone = build(layer=layer, input_size=(48, 80))
        assert backbone.latent_shape == (channels[k], 48 >> (k + 1), 80 >> (k + 1))
        assert [name for name, _ in backbone.body.named_children()] == list(LAYERS[: k + 1])
    assert not any(p.requires_grad for p in backbone.parameters())
    assert "head" not in dict(backbone.named_modules())
    gray = torch.rand(2, 1, 40, 40)
    backbone = build(input_size=40)
    torch.testing.assert_close(latents(backbone, gray), latents(backbone, gray.expand(-1, 3, -1, -1)))


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_weights_file_loads_a_state_dict(tmp_path, suffix):
    from safetensors.torch import save_file

    torch.manual_seed(5)
    net = InsilicoCNN().eval()
    with torch.no_grad():
        for module in net.modules():  # non-trivial BatchNorm statistics
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2)
    path = tmp_path / f"net{suffix}"
    if suffix == ".safetensors":
        save_file(net.state_dict(), str(path))
    else:
        torch.save(net.state_dict(), path)
    backbone = build(weights_file=str(path), layer="block2", input_size=32)  # 'weights' defaults to the shipped ones
    assert backbone.weights_source == str(path) and backbone.metadata == {}
    x = pixels()
    with torch.no_grad():
        expected = net.trunk("block2")(backbone.preprocess(x))
    torch.testing.assert_close(latents(backbone, x), expected, rtol=0, atol=0)
    # a state dict of the blocks up to the cut layer is enough
    partial = {k: v for k, v in net.state_dict().items() if k.startswith(("block1.", "block2."))}
    torch.save(partial, tmp_path / "partial.pt")
    build(weights_file=str(tmp_path / "partial.pt"), layer="block2", input_size=32)
    with pytest.raises(UserError, match=r"does not fit the insilico_cnn network up to block3.*missing tensors"):
        build(weights_file=str(tmp_path / "partial.pt"), layer="block3", input_size=32)


def test_weights_file_rejects_a_bad_state_dict(tmp_path):
    state = InsilicoCNN().state_dict()
    wrong_shape = dict(state, **{"block1.0.weight": torch.zeros(16, 3, 3, 3)})
    torch.save(wrong_shape, tmp_path / "shape.pt")
    with pytest.raises(
        UserError,
        match=r"1 tensors of the wrong shape.*"
        r"block1\.0\.weight \(16, 3, 3, 3\) \(expected \(32, 3, 3, 3\)\)",
    ):
        build(weights_file=str(tmp_path / "shape.pt"))
    foreign = {"conv1.weight": torch.zeros(64, 3, 7, 7), **state}
    torch.save(foreign, tmp_path / "foreign.pt")
    with pytest.raises(UserError, match=r"1 unexpected tensors \(e\.g\. \['conv1\.weight'\]\)"):
        build(weights_file=str(tmp_path / "foreign.pt"))
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(UserError, match="cannot load weights file .*junk.safetensors: .*header"):  # as validate says
        build(weights_file=str(tmp_path / "junk.safetensors"))
    torch.save({"model": InsilicoCNN}, tmp_path / "pickle.pt")  # code, not tensors: refused by weights_only
    with pytest.raises(UserError, match="cannot load weights file"):
        build(weights_file=str(tmp_path / "pickle.pt"))
    with pytest.raises(SpecError, match="not both"):
        build(weights="insilico-v1", weights_file=str(tmp_path / "shape.pt"))
    with pytest.raises(SpecError, match="file not found"):
        build(weights_file=str(tmp_path / "missing.safetensors"))


def test_unknown_layer_and_weights_are_clear_errors():
    with pytest.raises(
        SpecError,
        match=r"layer: .*unknown layer 'blok3'; did you mean 'block3'\? "
        r"Choose one of block1, block2, block3, block4",
    ):
        build(layer="blok3")
    with pytest.raises(SpecError, match=r"weights: .*'insilico-v1'"):
        build(weights="imagenet")
    with pytest.raises(SpecError, match="input_size"):
        build(input_size=4)
    with pytest.raises(SpecError, match="1 or 3 values"):
        build(mean=[0.5, 0.5])


# -- (f): training ---------------------------------------------------------------------------------
def test_part_presence_counts_visible_pixels():
    rendered = render_set(3, 32, seed=4)
    labels = part_presence(rendered.parts)
    assert labels.shape == (6, len(PARTS)) and labels.dtype == bool
    bodies = [i for i, c in enumerate(rendered.categories) if c == "bodies"]
    assert labels[bodies][:, [PARTS.index("head"), PARTS.index("torso")]].all()
    assert not labels[bodies][:, PARTS.index("shape")].any()
    assert not part_presence(rendered.parts, min_pixels=10**6).any()


@pytest.mark.parametrize("residual", [False, True], ids=["plain", "residual"])
def test_a_tiny_training_run_writes_loadable_weights_and_record(tmp_path, residual):
    architecture = {"in_channels": 3, "channels": [4, 8, 8, 8], "convs": [2, 2, 1, 1], "n_outputs": 4}
    config = TrainConfig(
        architecture={**architecture, "residual": True} if residual else architecture,
        train_sets=(SetSpec(6, 24, 1, seed=1), SetSpec(4, 32, 3, seed=2)),
        test_sets=(SetSpec(3, 24, 3, seed=9),),
        check_n_per_category=2,
        epochs=1,
        batch_size=8,
        threads=1,
    )
    model, record = train(config)
    assert not model.training and record["training"]["n_train_images"] == 20
    assert [h["batch_norm"] for h in record["training"]["history"]] == ["batch statistics", "frozen"]
    assert record["training"]["torch_threads"] == 1
    (test_set,) = record["test"]["sets"]
    assert test_set["n_images"] == 6 and set(test_set["accuracy"]) == set(PARTS)
    assert record["check"]["sets"][0]["n_per_category"] == 2
    written = save(model, record, tmp_path / "w.safetensors", tmp_path / "w.json")
    data = (tmp_path / "w.safetensors").read_bytes()
    assert json.loads((tmp_path / "w.json").read_text()) == json.loads(json.dumps(written))
    assert written["file"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert read_metadata(tmp_path / "w.safetensors")["architecture"] == model.architecture
    backbone = build(weights_file=str(tmp_path / "w.safetensors"), layer="block2", input_size=24)
    x = pixels(2, 24)
    with torch.no_grad():
        torch.testing.assert_close(latents(backbone, x), model.trunk("block2")(backbone.preprocess(x)))
    # the same config trains the same weights (deterministic on the CPU)
    again, _ = train(config)
    for (name, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    from safetensors import safe_open

    with safe_open(str(tmp_path / "w.safetensors"), framework="pt") as f:
        assert list(f.metadata()) == [METADATA_KEY]  # one key: the file's bytes do not depend on a map's order


# -- (g): attribution ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model() -> EncodingModel:
    """The shipped backbone at block3 (32 px) + a ridge readout fitted to responses planted in its latents."""
    backbone = InsilicoCNNBackbone(layer="block3", input_size=32)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(40, 3, 32, 32, generator=g)
    z = latents(backbone, x)
    weights = torch.randn(3, z[0].numel(), generator=g)
    readout = RidgeReadout(folds=3).fit(z, z.flatten(1) @ weights.T)
    return EncodingModel(backbone, readout).eval()


def test_grad_cam_at_an_inner_block_equals_a_hand_computation(model):
    x, target = pixels(3), torch.tensor([0, 2, 1])
    maps = get_registry().build("method", "grad_cam", model, layer="block2").attribute(x, target=target)
    acts = []
    x = x.clone().requires_grad_(True)
    hook = model.backbone.body.block2.register_forward_hook(lambda m, i, out: acts.append(out))
    try:
        out = model(x)
    finally:
        hook.remove()
    (grad,) = torch.autograd.grad(out[torch.arange(3), target].sum(), acts[0])
    cam = F.relu((grad.mean((2, 3), keepdim=True) * acts[0]).sum(1, keepdim=True))
    expected = F.interpolate(cam, (32, 32), mode="bilinear").detach()
    assert maps.shape == (3, 1, 32, 32) and expected.abs().max() > 0
    torch.testing.assert_close(maps, expected, rtol=1e-4, atol=1e-6)
    with pytest.raises(UserError, match=r"did you mean 'block2'"):
        get_registry().build("method", "grad_cam", model, layer="blok2")


METHODS = [
    ("saliency", {}),
    ("integrated_gradients", {"n_steps": 4}),
    ("guided_backprop", {}),
    ("deconvolution", {}),
    ("deep_lift", {}),
    ("gradient_shap", {"n_samples": 4}),
    ("guided_grad_cam", {"layer": "block2.3"}),
    ("grad_cam", {"layer": "block1"}),
]


@pytest.mark.parametrize(("name", "params"), METHODS, ids=[n for n, _ in METHODS])
def test_captum_methods_run_and_leave_the_model_alone(model, name, params):
    x, target = pixels(2), torch.tensor([0, 2])
    with torch.no_grad():
        before = model(x)
    maps = get_registry().build("method", name, model, **params).attribute(x, target=target)
    assert maps.shape == (2, 1 if name == "grad_cam" else 3, 32, 32)
    assert torch.isfinite(maps).all() and maps.abs().sum() > 0
    assert not any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks for m in model.modules())
    with torch.no_grad():
        torch.testing.assert_close(model(x), before, rtol=0, atol=0)


def test_the_residual_network_is_resnet18_shaped():
    """17 3×3 convolutions (a stem, then 2 basic blocks of 2 per block), shortcuts where the shape changes."""
    backbone = build(layer="block4", weights="insilico-resnet18-v1")
    convs = [m for m in backbone.modules() if isinstance(m, nn.Conv2d)]
    assert sum(c.kernel_size == (3, 3) for c in convs) == 17
    assert sum(c.kernel_size == (1, 1) for c in convs) == 4  # one projection shortcut per block
    assert latents(backbone, pixels(1, 64)).shape == (1, 128, 4, 4)
    relus = [m for m in backbone.modules() if isinstance(m, nn.ReLU)]
    assert len(relus) == 17 and len({id(r) for r in relus}) == 17 and not any(r.inplace for r in relus)


def test_deep_lift_is_complete_on_the_residual_network():
    """Residual sums are linear: DeepLift stays complete through the shortcuts."""
    backbone = build(layer="block3", weights="insilico-resnet18-v1", input_size=32)
    g = torch.Generator().manual_seed(0)
    z = latents(backbone, torch.rand(40, 3, 32, 32, generator=g))
    readout = RidgeReadout(folds=3).fit(z, z.flatten(1) @ torch.randn(2, z[0].numel(), generator=g).T)
    model = EncodingModel(backbone, readout).eval()
    x, target = pixels(2), torch.tensor([1, 0])
    maps = get_registry().build("method", "deep_lift", model, baseline=0.5).attribute(x, target=target)
    with torch.no_grad():
        delta = (model(x) - model(torch.full_like(x, 0.5)))[torch.arange(2), target]
    torch.testing.assert_close(maps.sum((1, 2, 3)), delta, rtol=1e-3, atol=1e-4)


def test_deep_lift_is_complete(model):
    """No max pooling, no shared or in-place ReLUs: DeepLift's attributions sum to the response difference."""
    x, target = pixels(2), torch.tensor([1, 0])
    maps = get_registry().build("method", "deep_lift", model, baseline=0.5).attribute(x, target=target)
    with torch.no_grad():
        delta = (model(x) - model(torch.full_like(x, 0.5)))[torch.arange(2), target]
    torch.testing.assert_close(maps.sum((1, 2, 3)), delta, rtol=1e-3, atol=1e-4)
