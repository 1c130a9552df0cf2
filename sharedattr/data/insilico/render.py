"""Procedural stimuli with pixel-exact part masks: stick-figure "bodies" and several kinds of "objects".

A body has a ``head``, a ``torso`` and four two-segment ``limbs`` in a random pose, size,
position, rotation and texture. An object is a ``shape`` (box, ellipse, polygon, star or
triangle) that may carry body-like parts: an elongated, limb-like arm (labelled ``limbs``)
and/or a head-like disc (labelled ``head``), so that a neuron tuned to limbs or heads is
driven by some objects for exactly the reason a body drives it.

Rendering is exact: every figure is painted with one texture over a textured background,
without anti-aliasing, so a pixel differs from the background exactly where one visible
part mask is set (the masks are resolved for occlusion: each pixel belongs to at most one
part). Sensor noise (``noise_std``, grey levels) is added last.

:func:`render_scene` and :func:`render_set` draw random scenes. The drawing API beneath them is public, for stimuli
built another way (such as the pairs of :mod:`~sharedattr.data.insilico.pairs`): a :class:`Canvas` records part
shapes in z-order (:class:`Shape`, each movable by an :class:`Affine`), :func:`draw_body` and :func:`draw_object`
draw a random figure on it (:func:`shape_outline` is an object's outline), and :func:`paint_scene` paints a canvas
into a :class:`Scene`.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from sharedattr.data.manifest import PIECE_SEPARATOR

PARTS = ("head", "torso", "limbs", "shape")
CATEGORIES = ("bodies", "objects")
OBJECT_KINDS = ("box", "ellipse", "polygon", "star", "triangle")
ATTACHMENTS = ("none", "limb", "head", "both")
ATTACHMENT_PROBS = (0.5, 0.2, 0.18, 0.12)
MORE_ATTACHMENTS = ("limbs2", "all")
"""Objects with several body-like parts: two arms (``limbs2``), two arms and a head disc (``all``)."""
VARIED_MISSING = {"head": 0.2, "torso": 0.15, "arm": 0.2, "legs": 0.15}
"""Rates at which bodies lack pieces in ``sharedattr demo`` and the shared-parts benchmark: the parts' drives are
not confounded (every body showing every part would make them so), and pairs differ in which driving parts they
share."""
VARIED_ATTACHMENTS = {"none": 0.4, "limb": 0.15, "head": 0.15, "both": 0.1, "limbs2": 0.1, "all": 0.1}
"""The objects' body-like extras in ``sharedattr demo`` and the shared-parts benchmark, zero to several parts."""
TEXTURES = ("flat", "stripes", "checks", "blotches")
MIN_CONTRAST = 70.0  # grey levels between a figure's base luminance and its background's


@dataclass(frozen=True)
class SceneOptions:
    """How every scene is rendered, besides its size and its random draws.

    ``channels``: 1 (grayscale) or 3 (RGB); ``noise_std``: the sensor noise's std in grey levels (0: none);
    ``missing`` (bodies): the probability that a piece is left out, ``head``, ``torso``, ``arm`` (one arm, either
    side) and ``legs`` (both), each drawn independently, e.g. ``{"head": 0.2}`` makes one body in five headless
    (None: every body whole, and no draws for it); ``attachment_probs`` (objects): the probability of each body-like
    extra, over :data:`ATTACHMENTS` and :data:`MORE_ATTACHMENTS` (None: :data:`ATTACHMENT_PROBS` over
    :data:`ATTACHMENTS`).
    """

    channels: int = 1
    noise_std: float = 4.0
    missing: Mapping[str, float] | None = None
    attachment_probs: Mapping[str, float] | None = None


PLAIN_SCENES = SceneOptions()
"""Grayscale scenes with sensor noise 4, every body whole, objects' extras at :data:`ATTACHMENT_PROBS`."""
VARIED_SCENES = SceneOptions(missing=VARIED_MISSING, attachment_probs=VARIED_ATTACHMENTS)
"""Grayscale scenes with bodies lacking pieces and objects carrying zero to several body-like parts, at the rates
:data:`VARIED_MISSING` and :data:`VARIED_ATTACHMENTS` (``sharedattr demo`` and the shared-parts benchmark)."""


@dataclass
class Scene:
    """One rendered stimulus.

    ``image`` ``[H, W, C]`` uint8 (sensor noise included); ``background`` and ``paint``
    ``[H, W, C]`` float32 grey levels: the noise-free background and the figure's texture;
    ``parts`` maps each part present to its visible mask ``[H, W]`` bool; ``kind`` is
    ``"body"`` or the object kind; ``attachment`` is the object's body-like extra; ``shapes``
    the primitives drawn, in z-order; ``pieces`` each drawn shape's visible mask ``[H, W]`` bool, under
    ``"<part>/<name>"`` (:meth:`Canvas.visible_pieces`).
    """

    image: np.ndarray
    background: np.ndarray
    paint: np.ndarray
    parts: dict[str, np.ndarray]
    category: str
    kind: str
    attachment: str = "none"
    shapes: tuple[Shape, ...] = ()
    pieces: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def mask(self) -> np.ndarray:
        """The union of all part masks ``[H, W]`` bool: where the figure is visible."""
        out = np.zeros(self.image.shape[:2], dtype=bool)
        for m in self.parts.values():
            out |= m
        return out

    def area(self, part: str) -> float:
        """Visible area of ``part`` as a fraction of the image (0 when absent)."""
        m = self.parts.get(part)
        return float(m.mean()) if m is not None else 0.0


@dataclass(frozen=True)
class Shape:
    """One drawn primitive of a figure, in pixel coordinates: a ``polygon`` (``points``), a ``disc``
    (``points = [centre]``, ``size`` = radius) or a ``limb`` (a thick polyline, ``size`` = width).

    ``part`` is the part label it paints (``head``, ``torso``, ``limbs``, ``shape``); ``name``
    says which piece it is (``arm_left``, ``leg_right``, ``head`` ...), so a paired stimulus can
    copy one piece of another figure.
    """

    part: str
    kind: str
    points: tuple[tuple[float, float], ...]
    size: float = 0.0
    name: str = ""

    def moved(self, transform: Affine) -> Shape:
        """The shape mapped by ``transform`` (its size scaled with it)."""
        return Shape(
            self.part, self.kind, tuple(transform(p) for p in self.points), self.size * transform.scale, self.name
        )


@dataclass(frozen=True)
class Affine:
    """Rotate by ``angle`` and scale by ``scale`` about ``pivot``, then shift by ``shift`` (pixels)."""

    pivot: tuple[float, float] = (0.0, 0.0)
    angle: float = 0.0
    scale: float = 1.0
    shift: tuple[float, float] = (0.0, 0.0)

    def __call__(self, point: tuple[float, float]) -> tuple[float, float]:
        c, s = math.cos(self.angle), math.sin(self.angle)
        x, y = point[0] - self.pivot[0], point[1] - self.pivot[1]
        return (
            self.pivot[0] + self.scale * (c * x - s * y) + self.shift[0],
            self.pivot[1] + self.scale * (s * x + c * y) + self.shift[1],
        )

    def inverse(self, point: tuple) -> tuple:
        """The point this transform maps onto ``point`` (coordinates may be numpy arrays)."""
        c, s = math.cos(self.angle), math.sin(self.angle)
        x = (point[0] - self.shift[0] - self.pivot[0]) / self.scale
        y = (point[1] - self.shift[1] - self.pivot[1]) / self.scale
        return self.pivot[0] + c * x + s * y, self.pivot[1] - s * x + c * y


@dataclass
class Canvas:
    """A square of ``size`` pixels on which part shapes are drawn in z-order: later shapes occlude earlier ones.

    ``layers`` holds each drawn shape's part and its mask ``[size, size]`` bool, ``shapes`` the :class:`Shape` itself,
    in drawing order. Coordinates are pixels, x to the right and y down. Nothing is painted here:
    :func:`paint_scene` paints the figure and resolves the parts' visible masks (:meth:`visible_parts`).
    """

    size: int
    layers: list[tuple[str, np.ndarray]] = field(default_factory=list)
    shapes: list[Shape] = field(default_factory=list)

    def without(self, names: Collection[str]) -> Canvas:
        """A copy of this canvas without the shapes called ``names`` (e.g. ``{"head"}``: a headless body)."""
        kept = [(layer, shape) for layer, shape in zip(self.layers, self.shapes) if shape.name not in names]
        return Canvas(self.size, [layer for layer, _ in kept], [shape for _, shape in kept])

    def _new(self):  # noqa: ANN202 - (PIL image, draw)
        from PIL import Image, ImageDraw

        im = Image.new("L", (self.size, self.size), 0)
        return im, ImageDraw.Draw(im)

    def polygon(self, part: str, points: Sequence[tuple[float, float]], name: str = "") -> None:
        """A filled polygon of ``part`` through ``points`` (pixels), called ``name`` (default: the part)."""
        self.draw(Shape(part, "polygon", tuple((float(x), float(y)) for x, y in points), 0.0, name or part))

    def disc(self, part: str, centre: tuple[float, float], radius: float, name: str = "") -> None:
        """A filled disc of ``part`` (pixels), called ``name`` (default: the part)."""
        self.draw(Shape(part, "disc", ((float(centre[0]), float(centre[1])),), float(radius), name or part))

    def limb(self, part: str, points: Sequence[tuple[float, float]], width: float, name: str = "") -> None:
        """A thick polyline of ``part`` through ``points`` with round joints and ends, ``width`` pixels wide, called
        ``name`` (default: the part)."""
        self.draw(Shape(part, "limb", tuple((float(x), float(y)) for x, y in points), float(width), name or part))

    def draw(self, shape: Shape) -> None:
        """Rasterise ``shape`` above everything drawn so far."""
        im, draw = self._new()
        if shape.kind == "polygon":
            draw.polygon(list(shape.points), fill=255)
        elif shape.kind == "disc":
            ((x, y),), r = shape.points, shape.size
            draw.ellipse([x - r, y - r, x + r, y + r], fill=255)
        elif shape.kind == "limb":
            w = max(2, int(round(shape.size)))
            draw.line(list(shape.points), fill=255, width=w, joint="curve")
            r = w / 2
            for x, y in shape.points:
                draw.ellipse([x - r, y - r, x + r, y + r], fill=255)
        else:
            raise ValueError(f"unknown shape kind {shape.kind!r}")
        self.layers.append((shape.part, np.asarray(im) > 0))
        self.shapes.append(shape)

    def visible_parts(self) -> dict[str, np.ndarray]:
        """Each part's visible mask, resolved for occlusion (empty parts dropped)."""
        taken = np.zeros((self.size, self.size), dtype=bool)
        out: dict[str, np.ndarray] = {}
        for part, m in reversed(self.layers):
            visible = m & ~taken
            taken |= m
            out[part] = out.get(part, np.zeros_like(m)) | visible
        return {p: m for p, m in out.items() if m.any()}

    def visible_pieces(self) -> dict[str, np.ndarray]:
        """Each shape's visible mask, resolved for occlusion, under ``"<part>/<name>"`` (e.g. ``limbs/arm_left``;
        shapes of one name and part merge; empty pieces dropped), in drawing order."""
        taken = np.zeros((self.size, self.size), dtype=bool)
        out: dict[str, np.ndarray] = {}
        for (part, m), shape in zip(reversed(self.layers), reversed(self.shapes)):
            key = f"{part}{PIECE_SEPARATOR}{shape.name}"
            out[key] = out.get(key, np.zeros_like(m)) | (m & ~taken)
            taken |= m
        return {k: out[k] for k in reversed(out) if out[k].any()}


def _transform(
    points: Sequence[tuple[float, float]], centre: tuple[float, float], scale: float, angle: float
) -> list[tuple[float, float]]:
    """Figure coordinates (units of ``scale`` pixels, y down) → pixel coordinates, rotated by ``angle``."""
    c, s = math.cos(angle), math.sin(angle)
    return [(centre[0] + scale * (c * x - s * y), centre[1] + scale * (s * x + c * y)) for x, y in points]


def _polar(origin: tuple[float, float], length: float, angle: float) -> tuple[float, float]:
    return origin[0] + length * math.cos(angle), origin[1] + length * math.sin(angle)


def draw_body(
    canvas: Canvas, rng: np.random.Generator, centre: tuple[float, float], scale: float, angle: float
) -> None:
    """Draw a random stick figure about ``scale`` pixels tall, centred at ``centre`` and rotated by ``angle``
    (radians) on ``canvas``: legs, torso, head, then arms (in front). Its shapes are named ``leg_left``,
    ``leg_right``, ``torso``, ``head``, ``arm_left`` and ``arm_right``; their parts are ``limbs``, ``torso`` and
    ``head``. The pose, proportions and torso outline are drawn from ``rng``."""
    t = lambda pts: _transform(pts, centre, scale, angle)  # noqa: E731
    width = 0.045 * scale * rng.uniform(0.85, 1.25)
    torso_w, torso_h = 0.16 * rng.uniform(0.8, 1.2), 0.32 * rng.uniform(0.9, 1.1)
    top, bottom = -torso_h / 2, torso_h / 2
    for side in (-1, 1):  # legs: hip → knee → foot
        hip = (side * torso_w * 0.3, bottom - 0.01)
        thigh = math.pi / 2 - side * rng.uniform(0.05, 0.55)
        knee = _polar(hip, 0.17, thigh)
        foot = _polar(knee, 0.16, thigh + side * rng.uniform(-0.6, 0.4))
        canvas.limb("limbs", t([hip, knee, foot]), width, name=f"leg_{'left' if side < 0 else 'right'}")
    if rng.random() < 0.5:
        canvas.polygon(
            "torso", t([(-torso_w / 2, top), (torso_w / 2, top), (torso_w / 2, bottom), (-torso_w / 2, bottom)])
        )
    else:
        canvas.polygon(
            "torso",
            t(
                [
                    (torso_w / 2 * math.cos(a), torso_h / 2 * math.sin(a))
                    for a in np.linspace(0, 2 * math.pi, 24, endpoint=False)
                ]
            ),
        )
    r_head = 0.085 * rng.uniform(0.85, 1.2)
    ((hx, hy),) = t([(rng.uniform(-0.02, 0.02), top - r_head - 0.02)])
    canvas.disc("head", (hx, hy), r_head * scale)
    for side in (-1, 1):  # arms: shoulder → elbow → hand, from hanging down to raised
        shoulder = (side * torso_w * 0.45, top + 0.03)
        upper = math.pi / 2 - side * rng.uniform(0.2, 2.6)
        elbow = _polar(shoulder, 0.15, upper)
        hand = _polar(elbow, 0.14, upper + side * rng.uniform(-1.2, 0.6))
        canvas.limb("limbs", t([shoulder, elbow, hand]), width, name=f"arm_{'left' if side < 0 else 'right'}")


def shape_outline(kind: str, rng: np.random.Generator, w: float, h: float) -> list[tuple[float, float]]:
    """The outline of an object of ``kind`` (one of :data:`OBJECT_KINDS`), centred at the origin with half-width
    ``w`` and half-height ``h``: its corners in order (a polygon's and a star's drawn from ``rng``)."""
    if kind == "box":
        return [(-w, -h), (w, -h), (w, h), (-w, h)]
    if kind == "ellipse":
        return [(w * math.cos(a), h * math.sin(a)) for a in np.linspace(0, 2 * math.pi, 32, endpoint=False)]
    if kind == "polygon":
        angles = np.sort(rng.uniform(0, 2 * math.pi, 6))
        return [(w * math.cos(a) * rng.uniform(0.75, 1), h * math.sin(a) * rng.uniform(0.75, 1)) for a in angles]
    if kind == "star":
        return [
            ((w if i % 2 == 0 else 0.45 * w) * math.cos(a), (h if i % 2 == 0 else 0.45 * h) * math.sin(a))
            for i, a in enumerate(np.linspace(-math.pi / 2, 1.5 * math.pi, 10, endpoint=False))
        ]
    if kind == "triangle":
        return [(0.0, -h), (w, h), (-w, h)]
    raise ValueError(f"unknown object kind {kind!r}; choose one of {', '.join(OBJECT_KINDS)}")


def draw_object(
    canvas: Canvas,
    rng: np.random.Generator,
    kind: str,
    attachment: str,
    centre: tuple[float, float],
    scale: float,
    angle: float,
) -> None:
    """Draw a ``kind`` shape (part ``shape``) about ``0.3–0.5 · scale`` pixels wide, centred at ``centre`` and
    rotated by ``angle`` on ``canvas``, with the body-like extras of ``attachment`` (:data:`ATTACHMENTS`,
    :data:`MORE_ATTACHMENTS`): limb-like arms (part ``limbs``, named ``arm``) and/or a head-like disc (``head``)."""
    t = lambda pts: _transform(pts, centre, scale, angle)  # noqa: E731
    w, h = rng.uniform(0.14, 0.26), rng.uniform(0.14, 0.26)
    canvas.polygon("shape", t(shape_outline(kind, rng, w, h)))
    arms = 2 if attachment in ("limbs2", "all") else 1 if attachment in ("limb", "both") else 0
    first = rng.choice([-1, 1]) if arms else 1
    for side in (first, -first)[:arms]:  # an elongated two-segment bar leaving the shape's side
        start = (side * w * 0.8, rng.uniform(-0.3, 0.3) * h)
        direction = (0.0 if side > 0 else math.pi) + rng.uniform(-1.0, 1.0)
        joint = _polar(start, rng.uniform(0.14, 0.2), direction)
        end = _polar(joint, rng.uniform(0.1, 0.16), direction + rng.uniform(-0.9, 0.9))
        canvas.limb("limbs", t([start, joint, end]), 0.045 * scale * rng.uniform(0.85, 1.25), name="arm")
    if attachment in ("head", "both", "all"):  # a disc on top, with the body's head proportions
        r = 0.085 * rng.uniform(0.85, 1.2)
        ((hx, hy),) = t([(rng.uniform(-0.3, 0.3) * w, -h - r - 0.02)])
        canvas.disc("head", (hx, hy), r * scale)


def _luminance(rgb: np.ndarray) -> np.ndarray:
    return rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32) if rgb.shape[-1] == 3 else rgb[..., 0]


def _base_colours(rng: np.random.Generator, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """Background and figure colours (grey levels, ``[C]``) whose luminances differ by ≥ MIN_CONTRAST."""
    while True:
        bg, fg = rng.uniform(20, 235, channels), rng.uniform(0, 255, channels)
        if channels == 3:  # keep colours moderately saturated around a luminance
            bg, fg = (np.clip(c.mean() + 0.5 * (c - c.mean()), 0, 255) for c in (bg, fg))
        if abs(float(_luminance(fg[None])[0] - _luminance(bg[None])[0])) >= MIN_CONTRAST:
            return bg.astype(np.float32), fg.astype(np.float32)


def _texture(rng: np.random.Generator, size: int, kind: str, amplitude: float) -> np.ndarray:
    """A zero-mean texture ``[H, W]`` with values in ``[-amplitude, amplitude]``."""
    if kind == "flat":
        return np.zeros((size, size), dtype=np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    if kind == "stripes":
        theta, period = rng.uniform(0, math.pi), rng.uniform(3, 8)
        return amplitude * np.sign(np.sin(2 * math.pi * (xx * math.cos(theta) + yy * math.sin(theta)) / period))
    if kind == "checks":
        period = int(rng.integers(3, 7))
        return amplitude * (2 * (((xx // period) + (yy // period)) % 2) - 1)
    if kind == "blotches":  # smooth noise: a few random low-frequency gratings
        out = np.zeros((size, size), dtype=np.float32)
        for _ in range(4):
            k = rng.uniform(0.1, 0.5, 2)
            out += np.sin(k[0] * xx + k[1] * yy + rng.uniform(0, 2 * math.pi))
        return amplitude * out / 4
    raise ValueError(f"unknown texture {kind!r}; choose one of {', '.join(TEXTURES)}")


def render_scene(
    category: str,
    size: int = 64,
    *,
    rng: np.random.Generator | None = None,
    kind: str | None = None,
    attachment: str | None = None,
    options: SceneOptions = PLAIN_SCENES,
) -> Scene:
    """Render one ``category`` ("bodies" or "objects") stimulus of ``size`` × ``size`` pixels, drawn from ``rng``
    (default: a fresh, unseeded generator), as ``options`` says (:class:`SceneOptions`: channels, sensor noise, and
    how often bodies lack pieces and objects carry body-like extras).

    ``kind`` and ``attachment`` fix an object's shape and body-like extra (default: random, with
    ``options.attachment_probs``). The figure texture's amplitude stays below half the figure/background contrast,
    so every figure pixel differs visibly from the background.
    """
    if category not in CATEGORIES:
        raise ValueError(f"unknown category {category!r}; choose one of {', '.join(CATEGORIES)}")
    if options.channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {options.channels}")
    rng = rng if rng is not None else np.random.default_rng()
    canvas = Canvas(size)
    scale = size * rng.uniform(0.6, 0.95)
    centre = (size / 2 + rng.uniform(-0.12, 0.12) * size, size / 2 + rng.uniform(-0.08, 0.08) * size)
    angle = rng.uniform(-0.35, 0.35)
    if category == "bodies":
        kind, attachment = "body", "none"
        draw_body(canvas, rng, centre, scale, angle)
        if options.missing:
            canvas = canvas.without(_missing_pieces(rng, options.missing))
    else:
        kind = kind or str(rng.choice(OBJECT_KINDS))
        if attachment is None:
            probs = options.attachment_probs
            names, p = (ATTACHMENTS, ATTACHMENT_PROBS) if probs is None else (tuple(probs), tuple(probs.values()))
            attachment = str(rng.choice(names, p=p))
        draw_object(
            canvas, rng, kind, attachment, centre, scale * rng.uniform(1.0, 1.3), angle + rng.uniform(-0.5, 0.5)
        )
    return paint_scene(canvas, rng, options.channels, options.noise_std, category, kind, attachment)


BODY_PIECES = {
    "head": ("head",),
    "torso": ("torso",),
    "arm": ("arm_left", "arm_right"),
    "legs": ("leg_left", "leg_right"),
}
"""The pieces of a body that can be missing: ``arm`` removes one arm (chosen at random), ``legs`` both legs."""


def _missing_pieces(rng: np.random.Generator, missing: Mapping[str, float]) -> set[str]:
    """The names of the body's shapes to leave out, each group with its probability in ``missing``."""
    unknown = set(missing) - set(BODY_PIECES)
    if unknown:
        raise ValueError(f"missing: unknown piece(s) {sorted(unknown)}; choose from {', '.join(BODY_PIECES)}")
    out: set[str] = set()
    for piece in BODY_PIECES:
        if piece in missing and rng.random() < missing[piece]:
            names = BODY_PIECES[piece]
            out |= {names[int(rng.integers(len(names)))]} if piece == "arm" else set(names)
    return out


def paint_scene(
    canvas: Canvas,
    rng: np.random.Generator,
    channels: int,
    noise_std: float,
    category: str,
    kind: str,
    attachment: str = "none",
) -> Scene:
    """Paint the figure drawn on ``canvas``: random background and figure colours and textures (their luminances
    ≥ :data:`MIN_CONTRAST` apart), the visible part masks, then sensor noise."""
    size = canvas.size
    bg_colour, fg_colour = _base_colours(rng, channels)
    background = bg_colour + _texture(rng, size, str(rng.choice(["flat", "blotches"])), 12.0)[..., None]
    paint = fg_colour + _texture(rng, size, str(rng.choice(TEXTURES)), 22.0)[..., None]
    background, paint = np.clip(background, 0, 255), np.clip(paint, 0, 255)
    parts = canvas.visible_parts()
    union = np.zeros((size, size), dtype=bool)
    for m in parts.values():
        union |= m
    clean = np.where(union[..., None], paint, background)
    noisy = clean + (rng.normal(0, noise_std, clean.shape) if noise_std > 0 else 0.0)
    image = np.clip(np.round(noisy), 0, 255).astype(np.uint8)
    return Scene(
        image,
        background.astype(np.float32),
        paint.astype(np.float32),
        parts,
        category,
        kind,
        attachment,
        tuple(canvas.shapes),
        canvas.visible_pieces(),
    )


@dataclass
class RenderedSet:
    """A rendered stimulus set held in memory.

    ``images`` ``[N, H, W, C]`` uint8; ``parts`` maps every part name in :data:`PARTS` to
    masks ``[N, H, W]`` bool (all False where an image lacks the part); ``ids``,
    ``categories``, ``kinds`` and ``attachments`` have length N; ``pieces`` (empty unless asked for) maps
    every piece key ``"<part>/<name>"`` of the scenes to masks ``[N, H, W]`` bool.
    """

    ids: tuple[str, ...]
    categories: tuple[str, ...]
    kinds: tuple[str, ...]
    attachments: tuple[str, ...]
    images: np.ndarray
    parts: dict[str, np.ndarray]
    pieces: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def from_scenes(cls, ids: Sequence[str], scenes: Sequence[Scene], *, pieces: bool = False) -> RenderedSet:
        """The set of ``scenes`` (all of one size and channel count) under ``ids``; with ``pieces``, their piece
        masks too (every piece key of any scene, in order of first appearance)."""
        if len(ids) != len(scenes):
            raise ValueError(f"{len(ids)} ids for {len(scenes)} scenes")
        if not scenes:
            raise ValueError("no scenes")
        h, w, c = scenes[0].image.shape
        empty = np.zeros((h, w), dtype=bool)
        keys = list(dict.fromkeys(k for s in scenes for k in s.pieces))
        return cls(
            tuple(ids),
            tuple(s.category for s in scenes),
            tuple(s.kind for s in scenes),
            tuple(s.attachment for s in scenes),
            np.stack([s.image for s in scenes]),
            {p: np.stack([s.parts.get(p, empty) for s in scenes]) for p in PARTS},
            {k: np.stack([s.pieces.get(k, empty) for s in scenes]) for k in keys} if pieces else {},
        )

    def areas(self) -> dict[str, np.ndarray]:
        """Visible area of each part as a fraction of the image, ``[N]`` per part."""
        return {p: m.reshape(len(self), -1).mean(1) for p, m in self.parts.items()}


def image_rng(seed: int, category: str, index: int) -> np.random.Generator:
    """The generator of image ``index`` of ``category``: independent of how many images are drawn."""
    return np.random.default_rng([seed, CATEGORIES.index(category), index])


def render_set(
    n_per_category: int,
    size: int = 64,
    *,
    channels: int = 1,
    seed: int = 0,
    noise_std: float = 4.0,
    categories: Sequence[str] = CATEGORIES,
    missing: Mapping[str, float] | None = None,
    attachment_probs: Mapping[str, float] | None = None,
) -> RenderedSet:
    """Render ``n_per_category`` images of each category; image ``i`` of a category depends only on ``seed`` and
    ``i`` (and on ``channels``, ``noise_std``, ``missing`` and ``attachment_probs``: :class:`SceneOptions`)."""
    options = SceneOptions(channels, noise_std, missing, attachment_probs)
    ids, scenes = [], []
    for category in categories:
        for i in range(n_per_category):
            scene = render_scene(category, size, rng=image_rng(seed, category, i), options=options)
            ids.append(f"{category}_{i:04d}")
            scenes.append(scene)
    if not scenes:
        empty = np.zeros((0, size, size), dtype=bool)
        return RenderedSet((), (), (), (), np.zeros((0, size, size, channels), np.uint8), {p: empty for p in PARTS})
    return RenderedSet.from_scenes(ids, scenes)
