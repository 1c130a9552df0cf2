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
