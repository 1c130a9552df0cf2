"""Backbones: local weights files (safetensors, never a pickle), torchvision weight names, and the encoding model."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from sharedattr.encoding.model import EncodingModel
from sharedattr.encoding.readouts.ridge import RidgeReadout
from sharedattr.runtime.errors import UserError


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
        torch.testing.assert_close(
            model.contributions(images).sum(-1) + readout.bias, model(images), atol=1e-4, rtol=1e-4
        )


def test_a_torchvision_without_its_private_tracer_settings_still_works(monkeypatch):
    """torchvision_node_names uses torchvision's private ``_set_default_tracer_kwargs``; a torchvision without it
    still builds backbones, and hook-safe copies and Grad-CAM layers fall back to module paths."""
    import sys
    import types

    import torchvision.models.feature_extraction as feature_extraction
    from torch import nn

    from sharedattr.attribution.hook_safety import node_scopes
    from sharedattr.encoding.backbones.torchvision_models import TorchvisionBackbone, torchvision_node_names

    without = types.ModuleType(feature_extraction.__name__)  # the module as a torchvision without the helper has it
    without.__dict__.update({k: v for k, v in vars(feature_extraction).items() if k != "_set_default_tracer_kwargs"})
    monkeypatch.setitem(sys.modules, feature_extraction.__name__, without)
    torchvision_node_names.cache_clear()
    try:
        backbone = TorchvisionBackbone(model="resnet18", layer="layer2", input_size=32)
        assert backbone.qualified_node_names() is None
        with torch.no_grad():
            assert backbone(backbone.preprocess(torch.rand(2, 3, 32, 32))).shape == (2, *backbone.latent_shape)
        assert node_scopes(backbone.body, backbone) == node_scopes(backbone.body, nn.Module())  # module paths
    finally:
        torchvision_node_names.cache_clear()  # the names of the real torchvision for later tests


def test_backbones_are_built_from_their_params_model(registry):
    """Keywords are validated by the params model, which holds every default; a built backbone keeps its params."""
    from pydantic import ValidationError

    from sharedattr.encoding.backbones.insilico_cnn import InsilicoCNNBackbone, InsilicoCNNParams

    by_keyword = InsilicoCNNBackbone(layer="block2", input_size=32)
    assert by_keyword.params == InsilicoCNNParams(layer="block2", input_size=32)
    assert by_keyword.params.weights == "insilico-v1" and by_keyword.weights_source == "insilico-v1"
    by_registry = registry.build("backbone", "insilico_cnn", layer="block2", input_size=32)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(by_keyword(by_keyword.preprocess(x)), by_registry(by_registry.preprocess(x)))
    with pytest.raises(ValidationError, match="layer"):
        InsilicoCNNBackbone(layer="block9")
