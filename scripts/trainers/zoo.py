"""A zoo of ``insilico_cnn`` backbones trained on tasks defined without pairs, neurons or attributions.

Every arm trains the same network as ``insilico-v1`` (:data:`DEFAULT_ARCHITECTURE`: plain CNN, 32/64/128/128
channels) on 64 px grey and RGB *zoo scenes* (:func:`zoo_scene`), in which the parts of
:data:`~sharedattr.data.insilico.render.PARTS` are present independently of one another and of the category:

- ``decorrelated``: one presence logit per part (the network's ``head``) and a separate category head
  (:data:`CATEGORY_CLASSES`: body, object or none; softmax), binary + categorical cross-entropy;
- ``augmented``: the same, with every batch translated, rotated and scaled on the fly (:func:`random_affine`);
- ``segmentation``: per-pixel classes :data:`SEGMENT_CLASSES` from the renderer's visible part masks, predicted by
  1×1 convolutions on ``block2`` and ``block3`` upsampled and summed (cross-entropy). The upper-bound arm.

The heads other than the part-presence ``head`` are saved under ``extra_heads.*``, which the ``insilico_cnn``
backbone ignores (:data:`~sharedattr.encoding.backbones.insilico_cnn.EXTRA_HEADS_PREFIX`), so every weights file
loads through ``weights_file`` at ``block1`` … ``block4``. Training reuses :func:`trainers.insilico_cnn.fit` (one
loop); it is deterministic on the CPU for a given machine and thread count.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sharedattr.data.insilico.render import (
    OBJECT_KINDS,
    PARTS,
    VARIED_ATTACHMENTS,
    Canvas,
    Scene,
    draw_body,
    draw_object,
    paint_scene,
)
from sharedattr.encoding.backbones.insilico_cnn import (
    DEFAULT_ARCHITECTURE,
    DEFAULT_MEAN,
    DEFAULT_STD,
    FORMAT,
    FORMAT_VERSION,
    LAYERS,
    InsilicoCNN,
    parameter_count,
)
from trainers.insilico_cnn import MIN_PART_PIXELS, environment, normalise, save, to_tensor, trained

ARMS = ("decorrelated", "augmented", "segmentation")
SEEDS = (0, 1)
CATEGORY_CLASSES = ("body", "object", "none")
"""The category head's classes: a scene with a body (possibly beside an object) is ``body``; one with an object and
no body ``object``; one with an isolated body part only ``none``."""
SEGMENT_CLASSES = ("background", *PARTS)
"""Per-pixel classes of the segmentation arm; a label map holds ``1 + PARTS.index(part)`` where a part is visible."""
SCENE_TYPES = {"body": 0.2, "object": 0.12, "body+object": 0.3, "object+part": 0.18, "part": 0.2}
"""How often each kind of zoo scene is drawn: a body lacking pieces; an object with body-like extras
(:data:`~sharedattr.data.insilico.render.VARIED_ATTACHMENTS`); a body and an object side by side; an object beside
one isolated body piece; one isolated body piece."""
ZOO_MISSING = {"head": 0.5, "torso": 0.6, "arms": 0.6, "legs": 0.6}
"""The probability that a zoo body lacks each piece group (both arms, both legs), drawn independently and redrawn
until at least two of head, torso and limbs remain (fewer would be an isolated part)."""
PIECE_GROUPS = {
    "head": ("head",),
    "torso": ("torso",),
    "arms": ("arm_left", "arm_right"),
    "legs": ("leg_left", "leg_right"),
}
BODY_PIECE_NAMES = ("head", "torso", "arm_left", "arm_right", "leg_left", "leg_right")


# -- scenes ----------------------------------------------------------------------------------------
def _zoo_body(canvas: Canvas, rng: np.random.Generator, centre: tuple[float, float], scale: float) -> Canvas:
    """A body drawn on ``canvas`` lacking piece groups at :data:`ZOO_MISSING` (at least two of head, torso and
    limbs kept); returns the canvas without them."""
    draw_body(canvas, rng, centre, scale, rng.uniform(-0.35, 0.35))
    while True:
        dropped = {g for g, p in ZOO_MISSING.items() if rng.random() < p}
        kept = {"head", "torso", "limbs"} - dropped - ({"limbs"} if {"arms", "legs"} <= dropped else set())
        if len(kept) >= 2:
            return canvas.without({name for g in dropped for name in PIECE_GROUPS[g]})


def _zoo_object(canvas: Canvas, rng: np.random.Generator, centre: tuple[float, float], scale: float) -> None:
    kind = str(rng.choice(OBJECT_KINDS))
    attachment = str(rng.choice(tuple(VARIED_ATTACHMENTS), p=tuple(VARIED_ATTACHMENTS.values())))
    draw_object(canvas, rng, kind, attachment, centre, scale * rng.uniform(1.0, 1.3), rng.uniform(-0.85, 0.85))


def _isolated_piece(canvas: Canvas, rng: np.random.Generator, centre: tuple[float, float], scale: float) -> Canvas:
    """One piece of a body (head, torso or one limb, equally often per part) at any angle; returns the canvas."""
    draw_body(canvas, rng, centre, scale, rng.uniform(-math.pi, math.pi))
    piece = str(rng.choice(["head", "torso", "limb"]))
    keep = str(rng.choice(BODY_PIECE_NAMES[2:])) if piece == "limb" else piece
    return canvas.without(set(BODY_PIECE_NAMES) - {keep})


def zoo_scene(rng: np.random.Generator, size: int = 64, channels: int = 1, noise_std: float = 4.0) -> Scene:
    """One random zoo scene of ``size`` px drawn from ``rng``; ``scene.kind`` is its type (:data:`SCENE_TYPES`),
    ``scene.category`` its class of :data:`CATEGORY_CLASSES`.

    Example::

        scene = zoo_scene(np.random.default_rng(0), 64, channels=3)
        scene.image.shape, sorted(scene.parts)   # (64, 64, 3), the visible parts
    """
    kind = str(rng.choice(tuple(SCENE_TYPES), p=tuple(SCENE_TYPES.values())))
    canvas = Canvas(size)
    jitter = (rng.uniform(-0.12, 0.12) * size, rng.uniform(-0.08, 0.08) * size)
    centre = (size / 2 + jitter[0], size / 2 + jitter[1])
    if kind == "body":
        canvas = _zoo_body(canvas, rng, centre, size * rng.uniform(0.6, 0.95))
    elif kind == "object":
        _zoo_object(canvas, rng, centre, size * rng.uniform(0.6, 0.95))
    elif kind in ("body+object", "object+part"):  # side by side, smaller; the object drawn last (in front)
        side = rng.choice([-1, 1])
        dx = size * rng.uniform(0.18, 0.26)
        left = (size / 2 - side * dx, centre[1])
        if kind == "body+object":
            canvas = _zoo_body(canvas, rng, left, size * rng.uniform(0.5, 0.7))
        else:
            canvas = _isolated_piece(canvas, rng, left, size * rng.uniform(0.5, 0.8))
        _zoo_object(canvas, rng, (size / 2 + side * dx, size / 2 + jitter[1]), size * rng.uniform(0.4, 0.55))
    else:
        canvas = _isolated_piece(canvas, rng, centre, size * rng.uniform(0.6, 1.1))
    category = "body" if kind in ("body", "body+object") else "none" if kind == "part" else "object"
    return paint_scene(canvas, rng, channels, noise_std, category, kind)


def label_map(parts: Mapping[str, np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
    """Visible part masks ``{part: [..., H, W]}`` (disjoint) → class map ``[..., H, W]`` uint8 over
    :data:`SEGMENT_CLASSES` (0: background)."""
    out = np.zeros(shape, dtype=np.uint8)
    for j, part in enumerate(PARTS):
        if part in parts:
            out[parts[part]] = j + 1
    return out


def presence_from_maps(maps: Tensor, min_pixels: int = MIN_PART_PIXELS) -> Tensor:
    """Part-presence labels ``[N, P]`` bool from class maps ``[N, H, W]``: a part with ``>= min_pixels`` pixels is
    present (the rule of :func:`trainers.insilico_cnn.part_presence`)."""
    counts = F.one_hot(maps.long().flatten(1), len(SEGMENT_CLASSES)).sum(1)
    return counts[:, 1:] >= min_pixels


@dataclass
class ZooSet:
    """Rendered zoo scenes: ``images`` ``[N, H, W, C]`` uint8, ``maps`` ``[N, H, W]`` uint8 (classes of
    :data:`SEGMENT_CLASSES`), ``categories`` ``[N]`` int64 (indices into :data:`CATEGORY_CLASSES`), ``kinds`` the
    scene types."""

    images: np.ndarray
    maps: np.ndarray
    categories: np.ndarray
    kinds: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.kinds)

    def presence(self, min_pixels: int = MIN_PART_PIXELS) -> np.ndarray:
        """Part-presence labels ``[N, P]`` bool."""
        return presence_from_maps(torch.from_numpy(self.maps), min_pixels).numpy()

    def label_correlations(self, min_pixels: int = MIN_PART_PIXELS) -> dict[str, Any]:
        """:func:`label_correlations` of this set's labels."""
        return label_correlations(self.presence(min_pixels), self.categories)


def label_correlations(presence: np.ndarray, categories: np.ndarray) -> dict[str, Any]:
    """Pearson r between every pair of labels, the parts' presence ``[N, P]`` and the categories' one-hot
    indicators (``categories`` ``[N]`` indices): ``{"names", "pearson_r" (matrix), "max_abs_r_with_a_part",
    "label_rates"}``. A constant label has r NaN (written as null)."""
    names = [*PARTS, *(f"category={c}" for c in CATEGORY_CLASSES)]
    columns = np.concatenate([presence, np.eye(len(CATEGORY_CLASSES), dtype=bool)[categories]], 1).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.corrcoef(columns, rowvar=False)
    with_a_part = [abs(r[i, j]) for i in range(len(PARTS)) for j in range(i + 1, len(names))]
    return {
        "names": names,
        "pearson_r": [[None if np.isnan(v) else round(float(v), 4) for v in row] for row in r],
        "max_abs_r_with_a_part": None if np.isnan(with_a_part).any() else round(float(max(with_a_part)), 4),
        "label_rates": {n: round(float(columns[:, k].mean()), 4) for k, n in enumerate(names)},
    }


@dataclass(frozen=True)
class ZooSetSpec:
    """``n_images`` zoo scenes of ``size`` px with ``channels`` (1 or 3); image ``i`` depends only on ``seed`` and
    ``i``."""

    n_images: int
    size: int
    channels: int
    seed: int
    noise_std: float = 4.0

    def render(self, n_images: int | None = None) -> ZooSet:
        """The set, or its first ``n_images`` (the same images as in the full set)."""
        n = self.n_images if n_images is None else min(n_images, self.n_images)
        scenes = [
            zoo_scene(np.random.default_rng([self.seed, 7, i]), self.size, self.channels, self.noise_std)
            for i in range(n)
        ]
        shape = (self.size, self.size)
        return ZooSet(
            np.stack([s.image for s in scenes]),
            np.stack([label_map(s.parts, shape) for s in scenes]),
            np.array([CATEGORY_CLASSES.index(s.category) for s in scenes], dtype=np.int64),
            tuple(s.kind for s in scenes),
        )

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# -- augmentation ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class AffineRanges:
    """Ranges of the on-the-fly augmentation: rotation uniform in ``±max_angle`` rad, scale uniform in
    ``[min_scale, max_scale]``, shift uniform in ``±max_shift`` of the image size along each axis."""

    max_angle: float = 0.6
    min_scale: float = 0.8
    max_scale: float = 1.25
    max_shift: float = 0.125


def affine_params(n: int, generator: torch.Generator, ranges: AffineRanges) -> tuple[Tensor, Tensor, Tensor]:
    """Random ``(angle [n], scale [n], shift [n, 2])`` (shift as a fraction of the image size) within ``ranges``."""
    u = torch.rand(n, 4, generator=generator)
    angle = (2 * u[:, 0] - 1) * ranges.max_angle
    scale = ranges.min_scale + u[:, 1] * (ranges.max_scale - ranges.min_scale)
    shift = (2 * u[:, 2:] - 1) * ranges.max_shift
    return angle, scale, shift


def border_colour(x: Tensor) -> Tensor:
    """The background colour of images ``[B, C, H, W]``: the per-channel median of their border pixels ``[B, C]``."""
    border = torch.cat([x[..., 0, :], x[..., -1, :], x[..., 1:-1, 0], x[..., 1:-1, -1]], dim=-1)
    return border.float().median(dim=-1).values


def warp(x: Tensor, maps: Tensor, angle: Tensor, scale: Tensor, shift: Tensor) -> tuple[Tensor, Tensor]:
    """Rotate by ``angle``, scale by ``scale`` about the centre, then shift by ``shift`` (fraction of the size):
    images ``[B, C, H, W]`` uint8 (bilinear, uncovered pixels filled with :func:`border_colour`) and class maps
    ``[B, H, W]`` uint8 (nearest, uncovered pixels background)."""
    c, s = torch.cos(angle) / scale, torch.sin(angle) / scale
    inverse = torch.stack([torch.stack([c, s], -1), torch.stack([-s, c], -1)], 1)  # [B, 2, 2]: output → input
    offset = -(inverse @ (2 * shift).unsqueeze(-1)).squeeze(-1)  # normalised coordinates span 2
    theta = torch.cat([inverse, offset.unsqueeze(-1)], dim=2)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    fill = border_colour(x)[..., None, None]
    moved = F.grid_sample(x.float() - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill
    labels = F.grid_sample(maps.unsqueeze(1).float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return moved.round().clamp(0, 255).to(torch.uint8), labels.squeeze(1).round().to(torch.uint8)


def random_affine(x: Tensor, maps: Tensor, generator: torch.Generator, ranges: AffineRanges) -> tuple[Tensor, Tensor]:
    """:func:`warp` with parameters drawn from ``generator`` within ``ranges`` (one draw per image)."""
    return warp(x, maps, *affine_params(len(x), generator, ranges))


# -- the network and its objectives ----------------------------------------------------------------
class ZooNet(InsilicoCNN):
    """:class:`InsilicoCNN` with the zoo's extra heads under ``extra_heads``; ``forward`` returns a dict.

    ``"presence"`` tasks: ``{"parts": [B, P] logits (the head), "category": [B, 3] logits}``; ``"segmentation"``:
    ``{"segmentation": [B, 5, H, W] logits}`` (1×1 convolutions on ``block2`` and ``block3``, bilinearly
    upsampled to the input and summed; the part-presence ``head`` stays at its initialisation).
    """

    def __init__(self, architecture: Mapping[str, Any], task: str) -> None:
        keys = ("in_channels", "channels", "convs", "n_outputs")
        super().__init__(**{k: architecture[k] for k in keys}, residual=bool(architecture.get("residual", False)))
        channels = self.architecture["channels"]
        self.task = task
        heads: dict[str, nn.Module] = {}
        if task == "presence":
            heads["category"] = nn.Linear(channels[-1], len(CATEGORY_CLASSES))
        elif task == "segmentation":
            heads["seg_block2"] = nn.Conv2d(channels[1], len(SEGMENT_CLASSES), 1)
            heads["seg_block3"] = nn.Conv2d(channels[2], len(SEGMENT_CLASSES), 1)
        else:
            raise ValueError(f"unknown task {task!r}; choose presence or segmentation")
        self.extra_heads = nn.ModuleDict(heads)

    def forward(self, x: Tensor) -> dict[str, Tensor]:  # type: ignore[override]
        size, features = x.shape[-2:], {}
        for name, block in self.blocks():
            x = features[name] = block(x)
        if self.task == "presence":
            pooled = x.mean(dim=(2, 3))
            return {"parts": self.head(pooled), "category": self.extra_heads["category"](pooled)}
        logits = sum(
            F.interpolate(self.extra_heads[f"seg_{b}"](features[b]), size=size, mode="bilinear", align_corners=False)
            for b in ("block2", "block3")
        )
        return {"segmentation": logits}


@dataclass(frozen=True)
class PresenceAndCategory:
    """Binary cross-entropy of the part logits against presence from the (augmented) class maps, plus
    cross-entropy of the category logits; mirrored like :class:`~trainers.insilico_cnn.PartPresence`, then warped
    by :func:`random_affine` when ``affine`` is set. Targets: ``[maps [B, H, W] uint8, categories [B] int64]``."""

    hflip: bool = True
    affine: AffineRanges | None = None
    min_pixels: int = MIN_PART_PIXELS

    def augment(self, x: Tensor, targets: list[Tensor], generator: torch.Generator) -> tuple[Tensor, list[Tensor]]:
        maps, rest = targets[0], targets[1:]
        if self.hflip:
            flip = torch.rand(len(x), generator=generator) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
            maps = torch.where(flip.view(-1, 1, 1), maps.flip(-1), maps)
        if self.affine is not None:
            x, maps = random_affine(x, maps, generator, self.affine)
        return x, [maps, *rest]

    def loss(self, output: dict[str, Tensor], targets: list[Tensor]) -> Tensor:
        maps, categories = targets
        presence = presence_from_maps(maps, self.min_pixels).float()
        return F.binary_cross_entropy_with_logits(output["parts"], presence) + F.cross_entropy(
            output["category"], categories
        )


@dataclass(frozen=True)
class Segmentation(PresenceAndCategory):
    """Per-pixel cross-entropy of the segmentation logits against the class maps (augmented as the parent)."""

    def loss(self, output: dict[str, Tensor], targets: list[Tensor]) -> Tensor:
        return F.cross_entropy(output["segmentation"], targets[0].long())


# -- configuration ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ZooConfig:
    """Everything that determines one zoo weights file (and the test sets it is scored on)."""

    arm: str = "decorrelated"
    train_sets: tuple[ZooSetSpec, ...] = (ZooSetSpec(1200, 64, 1, seed=1), ZooSetSpec(1200, 64, 3, seed=2))
    test_sets: tuple[ZooSetSpec, ...] = (ZooSetSpec(500, 64, 1, seed=1001), ZooSetSpec(500, 64, 3, seed=1002))
    architecture: Mapping[str, Any] = field(default_factory=lambda: dict(DEFAULT_ARCHITECTURE))
    mean: tuple[float, ...] = DEFAULT_MEAN
    std: tuple[float, ...] = DEFAULT_STD
    min_part_pixels: int = MIN_PART_PIXELS
    augmentation: AffineRanges = AffineRanges()  # the augmented arm's
    epochs: int = 2  # with BatchNorm batch statistics (a budget of a few minutes on 2 shared CPU cores)
    frozen_bn_epochs: int = 1
    batch_size: int = 64
    lr: float = 4e-3
    weight_decay: float = 1e-4
    warmup_fraction: float = 0.15
    hflip: bool = True
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.arm not in ARMS:
            raise ValueError(f"unknown arm {self.arm!r}; choose one of {', '.join(ARMS)}")

    @property
    def weights_name(self) -> str:
        return f"zoo-{self.arm}-s{self.seed}"

    @property
    def task(self) -> str:
        return "segmentation" if self.arm == "segmentation" else "presence"

    def objective(self) -> PresenceAndCategory:
        affine = self.augmentation if self.arm == "augmented" else None
        kind = Segmentation if self.arm == "segmentation" else PresenceAndCategory
        return kind(self.hflip, affine, self.min_part_pixels)

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["train_sets"] = [s.as_dict() for s in self.train_sets]
        out["test_sets"] = [s.as_dict() for s in self.test_sets]
        out["architecture"] = dict(self.architecture)
        out["mean"], out["std"] = list(self.mean), list(self.std)
        out["augmentation"] = dataclasses.asdict(self.augmentation) if self.arm == "augmented" else None
        return out


TASKS = {
    "decorrelated": "part presence (one logit per part, binary cross-entropy) + category (body/object/none, "
    "softmax cross-entropy) on zoo scenes",
    "augmented": "decorrelated + on-the-fly rotation, scale and translation (labels recomputed from the warped maps)",
    "segmentation": "per-pixel classes background/head/torso/limbs/shape (cross-entropy) from 1x1 convolutions on "
    "block2 and block3, upsampled and summed",
}


# -- evaluation ------------------------------------------------------------------------------------
@torch.no_grad()
def outputs(model: ZooNet, images: np.ndarray, config: ZooConfig, batch_size: int = 250) -> dict[str, Tensor]:
    """The model's outputs (eval mode, CPU) on images ``[N, H, W, C]`` uint8, concatenated over batches."""
    model.eval()
    x = to_tensor(images)
    parts = [model(normalise(x[i : i + batch_size], config.mean, config.std)) for i in range(0, len(x), batch_size)]
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def evaluate_zoo(model: ZooNet, test_set: ZooSet, config: ZooConfig) -> dict[str, Any]:
    """Held-out scores: presence tasks, accuracy per part and of the category; segmentation, per-class IoU (pixels
    of the set pooled) and pixel accuracy."""
    out = outputs(model, test_set.images, config)
    n = len(test_set)
    if config.task == "presence":
        right = (out["parts"] > 0).numpy() == test_set.presence(config.min_part_pixels)
        category = out["category"].argmax(1).numpy() == test_set.categories
        accuracy = {p: float(right[:, j].mean()) for j, p in enumerate(PARTS)}
        return {
            "n_images": n,
            "accuracy": {**accuracy, "category": float(category.mean())},
            "mean_part_accuracy": float(right.mean()),
        }
    predicted, truth = out["segmentation"].argmax(1).numpy(), test_set.maps
    intersection = {c: int(((predicted == k) & (truth == k)).sum()) for k, c in enumerate(SEGMENT_CLASSES)}
    union = {c: int(((predicted == k) | (truth == k)).sum()) for k, c in enumerate(SEGMENT_CLASSES)}
    return _segmentation_scores(n, intersection, union, int((predicted == truth).sum()), int(truth.size))


def _segmentation_scores(
    n: int, intersection: Mapping[str, int], union: Mapping[str, int], right: int, pixels: int
) -> dict[str, Any]:
    iou = {c: intersection[c] / union[c] if union[c] else float("nan") for c in SEGMENT_CLASSES}
    return {
        "n_images": n,
        "iou": iou,
        "mean_part_iou": float(np.mean([iou[p] for p in PARTS])),
        "pixel_accuracy": right / pixels,
        "pixels": {"intersection": dict(intersection), "union": dict(union), "right": right, "total": pixels},
    }


# -- training --------------------------------------------------------------------------------------
def _training_data(config: ZooConfig, log: Callable[[str], None]) -> list[tuple[Tensor, Tensor, Tensor]]:
    """Per image size: images ``[N, 3, H, W]`` uint8, class maps ``[N, H, W]`` uint8, categories ``[N]`` int64."""
    by_size: dict[int, list[ZooSet]] = {}
    for spec in config.train_sets:
        t = time.perf_counter()
        by_size.setdefault(spec.size, []).append(spec.render())
        log(f"rendered {spec.n_images} training scenes {spec.as_dict()} in {time.perf_counter() - t:.1f} s")
    return [
        (
            torch.cat([to_tensor(s.images) for s in sets]),
            torch.from_numpy(np.concatenate([s.maps for s in sets])),
            torch.from_numpy(np.concatenate([s.categories for s in sets])),
        )
        for _, sets in sorted(by_size.items())
    ]


def train_zoo(config: ZooConfig = ZooConfig(), log: Callable[[str], None] | None = None) -> tuple[ZooNet, dict]:
    """Train one zoo arm from scratch and score it on the held-out sets: ``(model in eval mode on the CPU, record)``.

    Example::

        model, record = train_zoo(ZooConfig(arm="augmented", seed=1, threads=2), log=print)
        save(model, record, "runs/zoo/augmented-s1.safetensors")   # + augmented-s1.json
    """
    log = log or (lambda message: None)

    def evaluate(model: ZooNet) -> list[dict[str, Any]]:
        sets = []
        for spec in config.test_sets:
            result = evaluate_zoo(model, spec.render(), config)
            sets.append({"spec": spec.as_dict(), **result})
            log(f"test {spec.as_dict()}: {_summary(result)}")
        return sets

    run = trained(
        config,
        lambda: _training_data(config, log),
        lambda: ZooNet(config.architecture, config.task),
        config.objective(),
        evaluate,
        log,
    )
    model, groups, threads, sets = run.model, run.groups, run.threads, run.evaluation
    presence = np.concatenate([presence_from_maps(g[1], config.min_part_pixels).numpy() for g in groups])
    correlations = label_correlations(presence, np.concatenate([g[2].numpy() for g in groups]))
    overall = _pooled(sets)
    log(f"held out, all sets: {_summary(overall)}")
    record = {
        "format": FORMAT + ".record",
        "format_version": FORMAT_VERSION,
        "weights": config.weights_name,
        "task": {
            "arm": config.arm,
            "description": TASKS[config.arm],
            "parts": list(PARTS),
            "categories": list(CATEGORY_CLASSES),
            "segment_classes": list(SEGMENT_CLASSES),
            "min_part_pixels": config.min_part_pixels,
            "scenes": {
                "types": dict(SCENE_TYPES),
                "body_missing": dict(ZOO_MISSING),
                "object_attachments": dict(VARIED_ATTACHMENTS),
            },
            "extra_heads": {k: str(v) for k, v in model.extra_heads.items()},
            "head": "part presence (trained)" if config.task == "presence" else "untrained (initialisation)",
        },
        "architecture": {
            **dict(config.architecture),
            "layers": list(LAYERS),
            "parameters": parameter_count(model),
            "backbone_parameters": parameter_count(model)
            - parameter_count(model.head)
            - parameter_count(model.extra_heads),
        },
        "normalisation": {"mean": list(config.mean), "std": list(config.std)},
        "label_correlations": correlations,
        "training": {
            **config.as_dict(),
            "seeds": {
                "training": config.seed,
                "train_sets": [s.seed for s in config.train_sets],
                "test_sets": [s.seed for s in config.test_sets],
            },
            "n_train_images": sum(len(g[0]) for g in groups),
            "torch_threads": threads,
            "history": run.history,
        },
        "test": {"sets": sets, "overall": overall},
        "environment": environment(run.device),
        "wall_time_s": run.wall_time_s(),
    }
    return model, record


def _pooled(sets: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Scores over all held-out sets together (accuracies weighted by images; IoU from the pooled pixel counts)."""
    n = sum(s["n_images"] for s in sets)
    if "iou" in sets[0]:
        counts = [s["pixels"] for s in sets]
        total = {k: {c: sum(p[k][c] for p in counts) for c in SEGMENT_CLASSES} for k in ("intersection", "union")}
        right, pixels = sum(p["right"] for p in counts), sum(p["total"] for p in counts)
        return _segmentation_scores(n, total["intersection"], total["union"], right, pixels)
    return {
        "n_images": n,
        "accuracy": {k: sum(s["accuracy"][k] * s["n_images"] for s in sets) / n for k in sets[0]["accuracy"]},
        "mean_part_accuracy": sum(s["mean_part_accuracy"] * s["n_images"] for s in sets) / n,
    }


def _summary(result: Mapping[str, Any]) -> str:
    scores = result.get("accuracy") or result.get("iou") or {}
    return ", ".join(f"{k} {v:.4f}" for k, v in scores.items())


def weights_path(out: str | Path, arm: str, seed: int) -> Path:
    """The zoo's file name of one arm and seed: ``<out>/<arm>-s<seed>.safetensors``."""
    return Path(out) / f"{arm}-s{seed}.safetensors"


__all__ = [
    "ARMS",
    "SEEDS",
    "ZooConfig",
    "ZooNet",
    "ZooSet",
    "ZooSetSpec",
    "AffineRanges",
    "affine_params",
    "evaluate_zoo",
    "label_correlations",
    "random_affine",
    "save",
    "train_zoo",
    "warp",
    "weights_path",
    "zoo_scene",
]
