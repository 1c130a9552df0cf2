"""Driver/reference pairs whose shared parts are known before any method runs: the discriminating ground truth.

Each pair is a *reference* body and a *driver* object built from it: a shape that carries exact
copies of some of the body's pieces (one of its arms, and optionally its head), so the parts the
two images share are known by construction. The reference comes in variants that differ only
where a piece is left out (the same pose, colours, textures and noise; the piece's pixels show
the background), e.g. the same body intact and headless. So, for a neuron tuned to heads and
limbs:

- driver (arm + head) with the headless body: the limbs are shared, the driver's head is a
  driving part the reference lacks;
- the same driver with the intact body: head and limbs are shared;
- driver (arm only) with the intact body: the limbs are shared, the body's head (and torso) are
  driving parts the driver lacks.

Position is a controlled factor: with ``position="matched"`` the copied pieces sit exactly where
they are in the body; with ``"mismatched"`` they are moved by :data:`SHIFT` pixels in a random
direction, rotated by up to :data:`ROTATION` radians and scaled by :data:`SCALE` (within the
image), so a method that compares the two images position by position finds nothing in common.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sharedattr.data.insilico.render import (
    CATEGORIES,
    OBJECT_KINDS,
    Affine,
    Canvas,
    Scene,
    draw_body,
    paint_scene,
    shape_outline,
)

POSITIONS = ("matched", "mismatched")
SHIFT = (12.0, 20.0)
"""Range of the shift of the copied pieces in the mismatched condition, in pixels (at 64 px: 1.5–2.5 block3 cells)."""
ROTATION = 0.6
SCALE = (0.8, 1.25)
MARGIN = 3.0
"""Copied pieces stay at least this many pixels inside the image."""


@dataclass(frozen=True)
class StimulusPair:
    """One driver and the variants of its reference body (``references["intact"]``, ``["headless"]`` …).

    ``carried`` names the body pieces the driver carries (``arm_left`` or ``arm_right``, and
    ``head``); ``position`` is ``matched`` or ``mismatched``; ``transform`` maps the pieces'
    positions on the body to their positions on the driver.
    """

    driver: Scene
    references: dict[str, Scene]
    carried: tuple[str, ...]
    position: str
    transform: Affine


def _variants(
    canvas: Canvas, rng: np.random.Generator, channels: int, noise_std: float, omit: dict[str, Sequence[str]]
) -> dict[str, Scene]:
    """The body painted once per variant, each with the same colours, textures and noise (one generator state)."""
    state = rng.bit_generator.state
    out = {}
    for name, pieces in omit.items():
        paint_rng = np.random.default_rng()
        paint_rng.bit_generator.state = state
        out[name] = paint_scene(canvas.without(pieces), paint_rng, channels, noise_std, "bodies", "body")
    rng.bit_generator.state = paint_rng.bit_generator.state  # move on as if painted once
    return out


def _piece_transform(rng: np.random.Generator, pieces: Sequence, size: int, position: str) -> Affine:
    """Identity (matched), or a random shift, rotation and scale that keeps every copied point inside the image."""
    points = [p for shape in pieces for p in shape.points]
    pivot = (float(np.mean([p[0] for p in points])), float(np.mean([p[1] for p in points])))
    if position == "matched":
        return Affine(pivot)
    if position != "mismatched":
        raise ValueError(f"position must be one of {', '.join(POSITIONS)}, got {position!r}")
    for attempt in range(200):
        length = rng.uniform(*SHIFT) * (1.0 if attempt < 100 else 0.75)
        direction = rng.uniform(0, 2 * math.pi)
        transform = Affine(
            pivot,
            rng.uniform(-ROTATION, ROTATION),
            rng.uniform(*SCALE),
            (length * math.cos(direction), length * math.sin(direction)),
        )
        moved = [transform(p) for p in points]
        if all(MARGIN <= x <= size - MARGIN and MARGIN <= y <= size - MARGIN for x, y in moved):
            return transform
    raise RuntimeError("could not place the copied pieces inside the image; use a larger size")


def render_pair(
    rng: np.random.Generator,
    size: int = 64,
    *,
    carry_head: bool = True,
    position: str = "matched",
    variants: dict[str, Sequence[str]] | None = None,
    channels: int = 1,
    noise_std: float = 4.0,
) -> StimulusPair:
    """One pair: a random body, and an object carrying a copy of one of its arms (and, with ``carry_head``, of its
    head), placed by ``position``. ``variants`` maps reference names to the body pieces they leave out (default:
    ``intact`` and ``headless``)."""
    variants = {"intact": (), "headless": ("head",)} if variants is None else variants
    canvas = Canvas(size)
    scale = size * rng.uniform(0.6, 0.95)
    centre = (size / 2 + rng.uniform(-0.12, 0.12) * size, size / 2 + rng.uniform(-0.08, 0.08) * size)
    draw_body(canvas, rng, centre, scale, rng.uniform(-0.35, 0.35))
    references = _variants(canvas, rng, channels, noise_std, variants)
    by_name = {shape.name: shape for shape in canvas.shapes}
    arm = by_name[str(rng.choice(["arm_left", "arm_right"]))]
    carried = [arm] + ([by_name["head"]] if carry_head else [])  # the arm first: the object's shape sits at its root
    transform = _piece_transform(rng, carried, size, position)
    moved = [shape.moved(transform) for shape in carried]
    # the object's shape sits where the arm leaves it, pointing away from the arm's direction
    (x0, y0), (x1, y1) = moved[0].points[0], moved[0].points[1]
    along = math.atan2(y1 - y0, x1 - x0)
    kind = str(rng.choice(OBJECT_KINDS))
    w, h = rng.uniform(0.12, 0.2) * scale, rng.uniform(0.12, 0.2) * scale
    shape_centre = (x0 - 0.75 * w * math.cos(along), y0 - 0.75 * w * math.sin(along))
    outline = shape_outline(kind, rng, w, h)
    c, s = math.cos(along), math.sin(along)
    driver = Canvas(size)
    driver.polygon("shape", [(shape_centre[0] + c * x - s * y, shape_centre[1] + s * x + c * y) for x, y in outline])
    for shape in moved[::-1]:  # the body's z-order: the head below the arms
        driver.draw(shape)
    scene = paint_scene(driver, rng, channels, noise_std, CATEGORIES[1], kind, "both" if carry_head else "limb")
    return StimulusPair(scene, references, tuple(shape.name for shape in carried), position, transform)


def render_pairs(
    n: int,
    size: int = 64,
    *,
    seed: int = 0,
    carry_head: bool = True,
    position: str = "matched",
    variants: dict[str, Sequence[str]] | None = None,
    channels: int = 1,
    noise_std: float = 4.0,
) -> list[StimulusPair]:
    """``n`` pairs (:func:`render_pair`); pair ``i`` depends only on ``seed``, ``i`` and the arguments."""
    key = [seed, int(carry_head), POSITIONS.index(position)]
    return [
        render_pair(
            np.random.default_rng([*key, i]),
            size,
            carry_head=carry_head,
            position=position,
            variants=variants,
            channels=channels,
            noise_std=noise_std,
        )
        for i in range(n)
    ]
