"""``sharedattr demo``: a small, seeded, offline experiment through the real pipeline.

It draws a stimulus set of stick-figure "bodies" and "objects" (some objects carry
body-like parts: a limb-like bar or a head-like disc), simulates neurons whose responses
are known functions of the rendered parts, writes a normal stimulus set (manifest, PNGs,
part masks) and responses CSV plus a TOML config, then runs that config exactly as
``sharedattr run`` would.
"""

from __future__ import annotations

import csv
import math
import random
from pathlib import Path

import numpy as np

from .io import atomic_write_text

DEMO_CONFIG = """\
# Written by `sharedattr demo`. Run it again with: sharedattr run {config_name} --out <dir>
name = "demo"
seed = 0
device = "cpu"
batch_size = 32
cache_dir = "feature-cache"   # keep the demo self-contained

[data]
stimuli = "stimuli/manifest.csv"
responses = "responses.csv"
preferred_category = "bodies"

[backbone]
name = "torchvision"
model = "resnet18"
layer = "layer2"
input_size = {size}

[readout]
name = "ridge"
pooling = "none"

[matcher]
name = "cosine"

[selection]
top_k = 3
drivers_per_neuron = 2

[[methods]]
name = "parallel_backprop"

[[methods]]
name = "saliency"

[[methods]]
name = "input_x_gradient"

[[methods]]
name = "integrated_gradients"
n_steps = 16
baseline = 0.5        # mid-grey, like the stimuli's backgrounds

[[metrics]]
name = "pointing_game"

[[metrics]]
name = "relevance_mass"

[[metrics]]
name = "gini"

[[metrics]]
name = "deletion"
steps = 10
baseline = 0.5

[[metrics]]
name = "insertion"
steps = 10
baseline = 0.5

[[synthesis]]
name = "gradient_ascent"
steps = 40
lr = 0.05
n_seeds = 2
"""


def _draw_limb(draw, mask_draw, x: float, y: float, length: float, angle: float, width: int, fill: int) -> None:
    x2, y2 = x + length * math.cos(angle), y + length * math.sin(angle)
    draw.line([(x, y), (x2, y2)], fill=fill, width=width)
    mask_draw.line([(x, y), (x2, y2)], fill=255, width=width)


def draw_stimulus(category: str, size: int, rng: random.Random) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """One grayscale image ``[H, W]`` uint8, its body-part mask ``[H, W]`` bool and part areas (pixel fractions)."""
    from PIL import Image, ImageDraw

    bg = rng.randint(90, 140)
    img = Image.new("L", (size, size), bg)
    limbs, head, other = (Image.new("L", (size, size), 0) for _ in range(3))
    draw, ld, hd, od = ImageDraw.Draw(img), ImageDraw.Draw(limbs), ImageDraw.Draw(head), ImageDraw.Draw(other)
    fill = rng.choice([rng.randint(0, 50), rng.randint(200, 255)])
    s = size * rng.uniform(0.7, 1.0)
    cx, cy = size / 2 + rng.uniform(-0.12, 0.12) * size, size / 2 + rng.uniform(-0.08, 0.08) * size
    if category == "bodies":
        torso_w, torso_h, r_head = s * 0.14, s * 0.3, s * 0.09
        box = [cx - torso_w / 2, cy - torso_h / 2, cx + torso_w / 2, cy + torso_h / 2]
        draw.rectangle(box, fill=fill), od.rectangle(box, fill=255)
        hb = [cx - r_head, box[1] - 2 * r_head, cx + r_head, box[1]]
        draw.ellipse(hb, fill=fill), hd.ellipse(hb, fill=255)
        width = max(2, int(s * 0.05))
        for sx, sy, base in ((box[0], box[1] + 2, math.pi), (box[2], box[1] + 2, 0.0)):  # arms
            _draw_limb(draw, ld, sx, sy, s * 0.25, base + rng.uniform(-0.9, 0.9), width, fill)
        for sx, base in ((cx - torso_w / 3, math.pi / 2 + 0.25), (cx + torso_w / 3, math.pi / 2 - 0.25)):  # legs
            _draw_limb(draw, ld, sx, box[3], s * 0.3, base + rng.uniform(-0.35, 0.35), width, fill)
    else:
        kind = rng.choice(["box", "ellipse", "polygon"])
        w, h = s * rng.uniform(0.25, 0.45), s * rng.uniform(0.25, 0.45)
        box = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
        if kind == "box":
            draw.rectangle(box, fill=fill), od.rectangle(box, fill=255)
        elif kind == "ellipse":
            draw.ellipse(box, fill=fill), od.ellipse(box, fill=255)
        else:
            pts = [(cx + w / 2 * math.cos(a), cy + h / 2 * math.sin(a))
                   for a in sorted(rng.uniform(0, 2 * math.pi) for _ in range(5))]
            draw.polygon(pts, fill=fill), od.polygon(pts, fill=255)
        extra = rng.choice(["none", "limb", "head"])
        if extra == "limb":  # an elongated, limb-like arm sticking out of the object
            _draw_limb(draw, ld, box[2] - 2, cy, s * 0.3, rng.uniform(-1.2, 1.2), max(2, int(s * 0.05)), fill)
        elif extra == "head":  # a head-like disc on top
            r = s * 0.09
            hb = [cx - r, box[1] - 2 * r, cx + r, box[1]]
            draw.ellipse(hb, fill=fill), hd.ellipse(hb, fill=255)
    pixels = np.asarray(img, dtype=np.float32)
    pixels = np.clip(pixels + np.random.default_rng(rng.randint(0, 2**31)).normal(0, 6, pixels.shape), 0, 255)
    limb_m, head_m, other_m = (np.asarray(m) > 0 for m in (limbs, head, other))
    areas = {"limbs": float(limb_m.mean()), "head": float(head_m.mean()), "other": float((other_m & ~limb_m & ~head_m).mean())}
    return pixels.astype(np.uint8), limb_m | head_m, areas


# Neuron kinds: response = gain · Σ_part weight · area(part) / typical area, plus noise.
NEURONS = {
    "body_limbs": {"limbs": 1.0, "head": 0.2},
    "body_head": {"limbs": 0.3, "head": 1.0},
    "body_all": {"limbs": 0.7, "head": 0.7},
    "object_shape": {"other": 1.0},
}


def make_demo_data(folder: Path, n_per_category: int = 40, size: int = 64, seed: int = 0, noise: float = 0.1,
                   repeats: int = 2) -> Path:
    """Write ``stimuli/`` (manifest, images, masks), ``responses.csv`` and ``demo.toml`` into ``folder``.

    ``responses.csv`` holds ``repeats`` noisy trials per stimulus (one row each).
    """
    from PIL import Image

    rng = random.Random(seed)
    stim = folder / "stimuli"
    (stim / "images").mkdir(parents=True, exist_ok=True)
    (stim / "masks").mkdir(parents=True, exist_ok=True)
    rows, areas = [], []
    for category in ("bodies", "objects"):
        for i in range(n_per_category):
            pixels, mask, part_areas = draw_stimulus(category, size, rng)
            sid = f"{category}_{i:03d}"
            Image.fromarray(pixels).save(stim / "images" / f"{sid}.png")
            Image.fromarray((mask * 255).astype(np.uint8)).save(stim / "masks" / f"{sid}.png")
            rows.append((sid, f"images/{sid}.png", category, f"masks/{sid}.png"))
            areas.append(part_areas)
    with open(stim / "manifest.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["stimulus_id", "path", "category", "mask"])
        writer.writerows(rows)
    typical = {p: max(1e-6, float(np.mean([a[p] for a in areas if a[p] > 0]))) for p in ("limbs", "head", "other")}
    noise_rng = np.random.default_rng(seed)
    with open(folder / "responses.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["stimulus_id", *NEURONS])
        for (sid, *_), a in zip(rows, areas):
            signal = [sum(w * a[p] / typical[p] for p, w in weights.items()) for weights in NEURONS.values()]
            for _ in range(repeats):
                writer.writerow([sid, *(f"{v + noise_rng.normal(0, noise):.5f}" for v in signal)])
    config = folder / "demo.toml"
    atomic_write_text(config, DEMO_CONFIG.format(config_name=config.name, size=size))
    return config
