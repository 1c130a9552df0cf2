"""Driver/reference pairs whose shared parts are known before any method runs: the discriminating ground truth.

Each pair is a *reference* body and a *driver* object built from it: a shape that carries
copies of some of the body's pieces (one of its arms, and optionally its head), so the pieces the
two images share are known by construction (the pair set writes a mask per piece, so the truth is
scored at the level of the copied piece). :class:`PairLayout` sets the copy condition
(:data:`COPIES`: ``repainted``, the same shape at the same place in the object's own colours and
texture, or ``pixel``, the reference's own pixels pasted), where the object's shape sits
(:data:`PLACEMENTS`: at the arm's root, or ``beside`` the body, covering none of its head and
torso), and adds a ``decoy`` reference (the object's outline in place of the body's head).
The reference comes in variants that differ only
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
from dataclasses import dataclass, replace

import numpy as np

from sharedattr.data.insilico.render import (
    CATEGORIES,
    OBJECT_KINDS,
    Affine,
    Canvas,
    Scene,
    Shape,
    draw_body,
    paint_scene,
    shape_outline,
)
from sharedattr.data.manifest import PIECE_SEPARATOR

POSITIONS = ("matched", "mismatched")
SHIFT = (12.0, 20.0)
"""Range of the shift of the copied pieces in the mismatched condition, in pixels (at 64 px: 1.5–2.5 block3 cells)."""
ROTATION = 0.6
SCALE = (0.8, 1.25)
MARGIN = 3.0
"""Copied pieces stay at least this many pixels inside the image."""


COPIES = ("repainted", "pixel")
"""How the driver's copies are painted: ``repainted`` (the object's own colours and texture, the same shape at the
same place) or ``pixel`` (the reference's own pixels pasted, noise included: pixel-identical copies)."""
PLACEMENTS = ("shoulder", "beside")
"""Where the object's shape sits: at the copied arm's root (``shoulder``; at matched positions over the reference's
head and torso) or beyond its free end, covering none of the reference's head and torso pixels (``beside``)."""


@dataclass(frozen=True)
class PairLayout:
    """How a pair is drawn, besides its pieces and position: ``copy`` (:data:`COPIES`), ``object_at``
    (:data:`PLACEMENTS`), ``decoy`` (add a reference variant ``decoy``: the body with the object's outline in place
    of its head, painted as the body; piece ``shape/decoy``), ``channels`` and sensor ``noise_std``."""

    copy: str = "repainted"
    object_at: str = "shoulder"
    decoy: bool = False
    channels: int = 1
    noise_std: float = 4.0

    def check(self) -> None:
        """Raise ValueError naming the field for a value outside its choices."""
        if self.copy not in COPIES:
            raise ValueError(f"copy must be one of {', '.join(COPIES)}, got {self.copy!r}")
        if self.object_at not in PLACEMENTS:
            raise ValueError(f"object_at must be one of {', '.join(PLACEMENTS)}, got {self.object_at!r}")


DEFAULT_LAYOUT = PairLayout()


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


def _object_outline(
    rng: np.random.Generator, scale: float, arm: Shape, layout: PairLayout, body: Canvas
) -> tuple[str, list[tuple[float, float]], list[tuple[float, float]]]:
    """The object's kind, its outline in pixels, and its outline about the origin (unit half-size).

    ``shoulder``: at the arm's root, pointing away from the arm. ``beside``: beyond the arm's free end, pointing along
    it, pushed outwards (and then shrunk) until it covers none of the body's head and torso pixels."""
    (x0, y0), (x1, y1) = arm.points[0], arm.points[1]
    along = math.atan2(y1 - y0, x1 - x0)
    kind = str(rng.choice(OBJECT_KINDS))
    w, h = rng.uniform(0.12, 0.2) * scale, rng.uniform(0.12, 0.2) * scale
    outline = shape_outline(kind, rng, w, h)
    unit = [(x / max(w, h), y / max(w, h)) for x, y in outline]
    c, s = math.cos(along), math.sin(along)
    if layout.object_at == "shoulder":
        centre = (x0 - 0.75 * w * c, y0 - 0.75 * w * s)
        return kind, [(centre[0] + c * x - s * y, centre[1] + s * x + c * y) for x, y in outline], unit
    (xe, ye), (xp, yp) = arm.points[-1], arm.points[-2]
    out = math.atan2(ye - yp, xe - xp)
    co, so = math.cos(out), math.sin(out)
    core = np.zeros((body.size, body.size), dtype=bool)
    for part, mask in body.layers:
        core |= mask if part in ("head", "torso") else False
    for attempt in range(40):
        shrink = 1.0 if attempt < 20 else 0.6
        reach = (0.9 + 0.25 * (attempt % 20)) * w * shrink
        centre = (xe + reach * co, ye + reach * so)
        points = [(centre[0] + shrink * (co * x - so * y), centre[1] + shrink * (so * x + co * y)) for x, y in outline]
        trial = Canvas(body.size)
        trial.polygon("shape", points)
        if not (trial.layers[0][1] & core).any():
            return kind, points, unit
    raise RuntimeError("could not place the object beside the body; use a larger size")


def _pasted(scene: Scene, source: Scene, pieces: Sequence[str], transform: Affine) -> Scene:
    """``scene`` with the pixels of its ``pieces`` (visible-piece keys) replaced by ``source``'s pixels at the
    positions ``transform`` maps onto them (nearest pixel): the reference's own pixels, noise included."""
    size = scene.image.shape[0]
    mask = np.zeros(scene.image.shape[:2], dtype=bool)
    for key in pieces:
        mask |= scene.pieces.get(key, False)
    ys, xs = np.nonzero(mask)
    sx, sy = transform.inverse((xs.astype(float), ys.astype(float)))
    sx = np.clip(np.round(sx), 0, size - 1).astype(int)
    sy = np.clip(np.round(sy), 0, size - 1).astype(int)
    image, paint = scene.image.copy(), scene.paint.copy()
    image[ys, xs], paint[ys, xs] = source.image[sy, sx], source.paint[sy, sx]
    return replace(scene, image=image, paint=paint)


def _decoy(canvas: Canvas, unit: Sequence[tuple[float, float]]) -> Canvas:
    """The body of ``canvas`` with its head replaced by the object's outline ``unit`` (scaled to the head's radius,
    part ``shape``, piece ``decoy``) at the head's place, in the head's z-order."""
    out = Canvas(canvas.size)
    for shape in canvas.shapes:
        if shape.name == "head":
            ((hx, hy),), r = shape.points, shape.size
            out.polygon("shape", [(hx + r * x, hy + r * y) for x, y in unit], name="decoy")
        else:
            out.draw(shape)
    return out


def render_pair(
    rng: np.random.Generator,
    size: int = 64,
    *,
    carry_head: bool = True,
    position: str = "matched",
    variants: dict[str, Sequence[str]] | None = None,
    layout: PairLayout = DEFAULT_LAYOUT,
) -> StimulusPair:
    """One pair: a random body, and an object carrying a copy of one of its arms (and, with ``carry_head``, of its
    head), placed by ``position``. ``variants`` maps reference names to the body pieces they leave out (default:
    ``intact`` and ``headless``); ``layout`` (:class:`PairLayout`) says how the copies are painted, where the
    object's shape sits and whether a ``decoy`` reference is added.

    Example::

        pair = render_pair(np.random.default_rng(0), layout=PairLayout(copy="pixel", object_at="beside"))
        pair.driver.image.shape  # (64, 64, 1)
    """
    layout.check()
    variants = {"intact": (), "headless": ("head",)} if variants is None else variants
    canvas = Canvas(size)
    scale = size * rng.uniform(0.6, 0.95)
    centre = (size / 2 + rng.uniform(-0.12, 0.12) * size, size / 2 + rng.uniform(-0.08, 0.08) * size)
    draw_body(canvas, rng, centre, scale, rng.uniform(-0.35, 0.35))
    state = rng.bit_generator.state  # every painting of this body starts here: same colours, textures, noise
    references = _variants(canvas, rng, layout.channels, layout.noise_std, variants)
    by_name = {shape.name: shape for shape in canvas.shapes}
    arm = by_name[str(rng.choice(["arm_left", "arm_right"]))]
    carried = [arm] + ([by_name["head"]] if carry_head else [])  # the arm first: the object's shape sits at its root
    transform = _piece_transform(rng, carried, size, position)
    moved = [shape.moved(transform) for shape in carried]
    body_at = Canvas(size)  # where the object must not go (beside): the body's parts as the driver places them
    for shape in canvas.shapes:
        body_at.draw(shape.moved(transform))
    kind, outline, unit = _object_outline(rng, scale, moved[0], layout, body_at)
    driver = Canvas(size)
    driver.polygon("shape", outline)
    for shape in moved[::-1]:  # the body's z-order: the head below the arms
        driver.draw(shape)
    scene = paint_scene(
        driver, rng, layout.channels, layout.noise_std, CATEGORIES[1], kind, "both" if carry_head else "limb"
    )

    def painted(body: Canvas) -> Scene:
        paint_rng = np.random.default_rng()
        paint_rng.bit_generator.state = state
        return paint_scene(body, paint_rng, layout.channels, layout.noise_std, "bodies", "body")

    if layout.copy == "pixel":
        keys = [f"{shape.part}{PIECE_SEPARATOR}{shape.name}" for shape in carried]
        scene = _pasted(scene, painted(canvas), keys, transform)
    if layout.decoy:
        references = {**references, "decoy": painted(_decoy(canvas, unit))}
    return StimulusPair(scene, references, tuple(shape.name for shape in carried), position, transform)


def render_pairs(
    n: int,
    size: int = 64,
    *,
    seed: int = 0,
    carry_head: bool = True,
    position: str = "matched",
    variants: dict[str, Sequence[str]] | None = None,
    layout: PairLayout = DEFAULT_LAYOUT,
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
            layout=layout,
        )
        for i in range(n)
    ]
