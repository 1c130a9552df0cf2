"""benchmarks/run.py: each parallel_backprop path is timed against a floor doing the same work (no timings here)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import get_args

import pytest
import torch
from torch import nn

from sharedattr.attribution.parallel_backprop import ParallelBackprop, ParallelBackpropParams
from sharedattr.attribution.parallel_backprop import Path as BackpropPath
from sharedattr.encoding.model import EncodingModel

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("run_benchmark", BENCHMARKS / "run.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass resolves its annotations through sys.modules
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


class CountPixelGrads(torch.autograd.Function):
    """Identity whose backward counts the images whose gradient reached the pixels."""

    images = 0

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        CountPixelGrads.images += grad.shape[0]
        return grad


class TinyBackbone(nn.Module):
    """A 3×3 convolution → latents ``[B, 4, 4, 4]`` from 8 px RGB images, counting pixel gradients."""

    input_size = (8, 8)
    in_channels = 3
    latent_shape = (4, 4, 4)

    def __init__(self) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            self.conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.requires_grad_(False)

    def preprocess(self, images):
        return images

    def forward(self, x):
        return self.conv(CountPixelGrads.apply(x))


@pytest.fixture
def model(bench):
    return EncodingModel(TinyBackbone(), bench.fitted_ridge(4, 3)).eval()


def pixel_grads(floor, model, items: int) -> tuple[int, torch.Tensor]:
    """Images whose gradient reached the pixels in one call of ``floor`` on ``items`` items (2 images each)."""
    images = torch.rand(2 * items, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    CountPixelGrads.images = 0
    grad = floor.run(model, images, torch.arange(2 * items) % 3)
    return CountPixelGrads.images, grad


def test_each_path_uses_the_floor_that_does_its_work(bench, model):
    floors = {path: bench.floor_for(ParallelBackprop(model, path=path)) for path in get_args(BackpropPath)}
    assert floors["layer"].run is bench.latent_floor and "latents" in floors["layer"].label
    assert floors["gradient"].run is bench.pixel_floor and "pixels" in floors["gradient"].label
    ig = bench.floor_for(ParallelBackprop(model, path="ig", n_steps=5))
    assert ig.run.func is bench.stepped_pixel_floor and ig.run.keywords == {"n_steps": 5}
    assert "× 5 steps" in ig.label


def test_the_layer_floor_stops_at_the_latents_and_the_others_reach_the_pixels(bench, model):
    reached, grad = pixel_grads(bench.floor_for(ParallelBackprop(model, path="layer")), model, 3)
    assert reached == 0 and grad.shape == (6, 4, 4, 4)  # ∂r/∂latents only: no backward through the backbone
    reached, grad = pixel_grads(bench.floor_for(ParallelBackprop(model, path="gradient")), model, 3)
    assert reached == 6 and grad.shape == (6, 3, 8, 8)
    reached, grad = pixel_grads(bench.floor_for(ParallelBackprop(model, path="ig", n_steps=4)), model, 3)
    assert reached == 4 * 6 and grad.shape == (24, 3, 8, 8)


def test_each_floor_does_the_backward_pass_its_path_does(bench, model):
    """The method's own backward reaches the pixels exactly as often as its floor's (and never on the layer path)."""
    x_a, x_b = torch.rand(2, 3, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    for path, floor_images in (("layer", 0), ("gradient", 6), ("ig", 4 * 6)):
        CountPixelGrads.images = 0
        ParallelBackprop(model, path=path, n_steps=4).attribute((x_a, x_b), target=torch.tensor([0, 1, 2]))
        assert CountPixelGrads.images == floor_images, path


def test_a_negative_engine_overhead_is_printed_as_measured_and_called_noise(bench):
    assert bench.engine_overhead(2.5, "bare fwd + bwd to the latents") == (
        "engine overhead +2.5 ms per item over the bare fwd + bwd to the latents, one item at a time"
    )
    text = bench.engine_overhead(-0.3, "bare fwd + bwd to the latents")
    assert "-0.3 ms per item" in text and "within timing noise" in text


def test_the_default_path_is_timed_first_and_unknown_paths_are_refused(bench):
    import argparse

    parser = argparse.ArgumentParser()
    paths = bench.parse_paths(parser, None)
    assert paths[0] == ParallelBackpropParams().path and sorted(paths) == sorted(get_args(BackpropPath))
    assert bench.parse_paths(parser, "ig, gradient") == ("ig", "gradient")
    with pytest.raises(SystemExit):
        bench.parse_paths(parser, "pixels")
