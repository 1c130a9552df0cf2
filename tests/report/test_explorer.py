"""The explorer's map data: quantised greyscale PNGs, each stored once, within a bounded number of pixels."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import torch
from PIL import Image

from sharedattr.report.explorer import (
    BITS,
    LEVELS,
    MAP_PIXEL_BUDGET,
    MAP_SIDE,
    MIN_MAP_SIDE,
    NEUTRAL,
    b64,
    map_png,
    map_side,
    quantise,
)


def decoded(png: bytes) -> np.ndarray:
    """The stored samples of a map's PNG (a decoder scales 4-bit samples to 8 bits: × 17, as browsers do)."""
    assert png[24:26] == bytes([BITS, 0]), "IHDR: 4-bit greyscale"
    image = Image.open(io.BytesIO(png))
    assert image.mode == "L"
    return np.asarray(image) // (255 // (2**BITS - 1))


def test_quantise_is_symmetric_around_zero_and_clips():
    q = quantise(torch.tensor([[-3.0, -1.0, -0.5, 0.0, 0.5, 1.0, 3.0, float("nan")]]), 1.0)
    assert q.dtype == np.uint8
    assert q.tolist() == [[1, 1, 4, NEUTRAL, 12, 15, 15, NEUTRAL]]
    assert NEUTRAL - LEVELS == 1 and NEUTRAL + LEVELS == 2**BITS - 1
    assert quantise(torch.tensor([[2.0]]), 0.0).tolist() == [[15]], "a zero scale reads as 1"


def test_a_map_round_trips_through_its_png():
    m = torch.linspace(-2, 2, 48 * 40).reshape(48, 40)
    png = map_png(m, 2.0)
    assert np.array_equal(decoded(png), quantise(m, 2.0)), "a map within MAP_SIDE keeps every pixel"
    assert base64.b64decode(b64(png)) == png


def test_a_large_map_is_shrunk_keeping_its_aspect():
    m = torch.zeros(224, 112)
    m[:112] = 1.0  # top half positive
    image = decoded(map_png(m, 1.0, side=MAP_SIDE))
    assert image.shape == (MAP_SIDE, MAP_SIDE // 2)
    assert (image[: MAP_SIDE // 2] == NEUTRAL + LEVELS).all() and (image[MAP_SIDE // 2 :] == NEUTRAL).all()


@pytest.mark.parametrize("n_maps", [1, 24, 6_600, 66_000, 10_000_000])
def test_the_maps_raw_pixels_stay_within_the_budget(n_maps):
    side = map_side(n_maps, 224)
    assert MIN_MAP_SIDE <= side <= MAP_SIDE
    assert n_maps * side**2 <= MAP_PIXEL_BUDGET or side == MIN_MAP_SIDE
    assert map_side(n_maps, 8) == 8, "a small map keeps its size"


def test_the_demo_and_a_100_neuron_run_keep_64_px_maps():
    assert map_side(4 * 3 * 11 * 2, 64) == 64
    assert map_side(100 * 3 * 11 * 2, 64) == 64
