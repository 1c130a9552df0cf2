"""The sharedattr-timm workspace plugin: discovered through its entry point, meets the backbone contract."""

from __future__ import annotations

import pytest
import torch

from sharedattr.runtime.errors import SpecError, UserError


def test_timm_backbone_contract(registry):
    component = registry.get("backbone", "timm")
    assert component.source == "sharedattr-timm"
    backbone = registry.build("backbone", "timm", model="resnet18", stage=1, input_size=32)
    x = torch.rand(2, 3, 32, 32)
    latents = backbone(backbone.preprocess(x))
    assert latents.shape[1:] == backbone.latent_shape == (64, 8, 8)
    assert not any(p.requires_grad for p in backbone.parameters())
    backbone.train()
    assert not backbone.training


def test_timm_params_are_validated(registry):
    with pytest.raises(SpecError, match="unknown timm model 'resnet181'"):
        registry.build("backbone", "timm", model="resnet181")
    with pytest.raises(UserError, match=r"backbone.stage: resnet18 has stages 0..4; got 7"):
        registry.build("backbone", "timm", model="resnet18", stage=7, input_size=32)
