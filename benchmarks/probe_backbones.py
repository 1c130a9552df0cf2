"""Backbone probes: how well does each layer of a backbone separate the body parts? Run before any attribution.

    uv run python benchmarks/probe_backbones.py                       # random, shipped and zoo backbones
    uv run python benchmarks/probe_backbones.py --zoo runs/zoo        # the zoo's *.safetensors (default runs/zoo)
    uv run python benchmarks/probe_backbones.py --quick --no-write    # a smoke run at a tiny size

Backbones: ``random`` (``insilico_cnn`` with ``weights = null``, seed 0), ``insilico-v1``, ``insilico-resnet18-v1``,
and every ``*.safetensors`` file of ``--zoo`` (``insilico_cnn`` ``weights_file``, named by the file's stem). Layers:
``block1`` … ``block4``, each the output of its block (post-ReLU), on ``--size`` px images.

**The probe set** (frozen; defined by the stimuli alone: no neurons, pairs, readouts or attributions). For each of
``--instances`` instances in grey and again in RGB (instance ``i`` of ``c`` channels drawn from
``numpy.random.default_rng([seed, c, i])``): a body and an object are drawn as :func:`render_scene` draws them (size,
pose, rotation; the object a random kind with no body-like extra), and a target point uniform in the central
``[0.35, 0.65]`` of the image. Each part (:data:`PARTS`: ``head``, ``torso``, ``limbs``, the object's ``shape``) is
shown **alone** on the background: only that part's shapes are drawn (the head disc; the torso; the four limbs;
the object's outline), moved so that their mask's centroid lies on the target point, and painted with the
instance's colours, textures and sensor noise (the same for its four parts). So within an instance the parts sit at
the same place and differ only in shape. For the position tolerance, each instance and part also has a *moved
piece* (head, torso, one arm chosen at random, shape: the pieces the mismatched pairs move) shown alone at the
target point and again after a transform drawn as the mismatched pairs draw theirs (a shift of 12–20 px in a random
direction, a rotation of up to ±0.6 rad and a scale of 0.8–1.25 about its centroid; :mod:`sharedattr.data.insilico.
pairs`), redrawn up to 100 times until at least 90 % of the moved piece's area stays inside the image (else the
draw that keeps most), both painted alike. And each instance's *background alone* (no shape drawn), painted
alike: an isolated-part image differs from it only on the part's pixels.

**The indices**, per backbone and layer (functions of :mod:`sharedattr.encoding.part_specificity`):

1. channel profiles ``r_k(P)``: the mean over the images of part ``P`` of channel ``k``'s activation averaged over
   positions; ``p_P = r(P) / Σ_k r_k(P)``; ``I(P, Q) = Σ_k min(p_P,k, p_Q,k)``. ``part_specificity`` =
   1 − the mean of ``I`` over the 6 pairs of parts; ``I_head_limbs`` and ``I_head_torso`` on their own;
2. ``selective_mass``: the share of ``Σ_k Σ_P r_k(P)`` in channels whose largest ``r_k(P)`` is ≥ 2× the second;
3. ``head_limbs_cosine``: the cosine between the mean unpooled latent (all K × h × w dimensions) of the head-alone
   images and of the limbs-alone images (at the same target points): the lower, the better the layer tells them
   apart where they are;
4. ``pooled_position_cosine``: the cosine between the position-pooled (mean over h, w) channel vectors of a moved
   piece at its two positions, mean over instances, colours and parts; ``unpooled_position_cosine``: the same on the
   unpooled latents;
5. effective receptive field: the gradient of the centre cell's (``h // 2, w // 2``) channel-summed activation with
   respect to the network's input ``[3, H, W]`` (grey images repeated to RGB), absolute, summed over the colour
   channels and averaged over ``--erf-images`` isolated-part images (every part of instances spread evenly over
   both colour modes); ``erf_r50``: the radius about its centre of mass holding 50 % of its mass, ``erf_rms``: its
   RMS radius, in pixels.
6. the *evoked* indices (columns with the suffix ``_evoked``): indices 1–4 again on each image's latent minus the
   latent of its instance's background alone, which removes what every image of an instance shares (the
   background fills most of an isolated-part image and dominates its position average); the channel profiles
   (1, 2) average the positive part of that difference, ``max(0, z(part) − z(background))``, the activation the
   part adds; the cosines (3, 4) use the signed difference. The evoked selective mass is of the normalised profiles
   ``p_P`` (each part's mass 1): the activation a part adds grows with its area (the limbs add 4–6× the head's), so
   unnormalised, channels would count as selective for the largest part.

Writes ``<workdir>/probe.csv`` (one row per backbone × layer, :data:`COLUMNS`) and prints two markdown tables (the
indices on the latents with the receptive field, and the evoked indices), appended to docs/benchmarks.md unless
``--no-write``. Every weights file is read and checked before any compute; a missing ``--zoo`` folder or a file that
is not an ``insilico_cnn`` state dict stops the script with the file named and exit code 2.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from record import machine, print_and_append
from sharedattr.data.insilico.pairs import ROTATION, SCALE, SHIFT
from sharedattr.data.insilico.render import (
    OBJECT_KINDS,
    PARTS,
    PLAIN_SCENES,
    Affine,
    Canvas,
    Shape,
    draw_body,
    draw_object,
    paint_scene,
)
from sharedattr.encoding.backbones.insilico_cnn import LAYERS, SHIPPED_WEIGHTS, InsilicoCNNBackbone
from sharedattr.encoding.part_specificity import (
    cosine,
    erf_radii,
    part_specificity_index,
    profile_intersections,
    row_cosines,
    selective_mass_share,
)
from sharedattr.runtime.errors import UserError
from sharedattr.runtime.io import atomic_write_csv
from sharedattr.runtime.timing import StageTimer

SHIPPED = {"random": {"weights": None}} | {name: {"weights": name} for name in SHIPPED_WEIGHTS}
"""The backbones probed (and benchmarked by shared_parts.py) besides the zoo: their ``insilico_cnn`` params."""
COLOURS = (1, 3)
"""Every instance in grey and in RGB."""
TARGET = (0.35, 0.65)
"""Where the parts' centroids go, as a fraction of the image side (uniform in x and y)."""
MOVED_PIECES = {"head": ("head",), "torso": ("torso",), "limbs": ("arm_left", "arm_right"), "shape": ("shape",)}
"""Per part, the pieces one of which is moved (limbs: one arm, chosen at random, as the pairs copy one)."""
KEEP = 0.9
"""A moved piece keeps at least this share of its area inside the image (else the best of the draws)."""
DRAWS = 100
SELECTIVE_RATIO = 2.0
ERF_SHARE = 0.5
INDICES = ("part_specificity", "I_head_limbs", "I_head_torso", "selective_mass", "head_limbs_cosine",
           "pooled_position_cosine", "unpooled_position_cosine")  # fmt: skip
"""The indices computed twice: on the latents, and on the evoked latents (suffix ``_evoked``)."""
COLUMNS = ("backbone", "layer", "channels", "latent_h", "latent_w", *INDICES, *(f"{c}_evoked" for c in INDICES),
           "erf_r50", "erf_rms")  # fmt: skip
"""The columns of probe.csv."""


@dataclass(frozen=True)
class ProbeSet:
    """The probe images, ``[N, 3, H, W]`` float in [0, 1] (grey repeated to RGB): ``alone`` (each part alone at its
    instance's target point), ``at_target`` and ``moved`` (a piece of each part at the target point and moved),
    ``background`` (the instance's background alone, painted alike: sensor noise included); ``part`` ``[N]`` the
    index in :data:`PARTS` of every row of all four."""

    alone: Tensor
    at_target: Tensor
    moved: Tensor
    background: Tensor
    part: Tensor


def mask_of(shapes: Sequence[Shape], size: int) -> np.ndarray:
    """The union of ``shapes``' masks ``[size, size]`` bool."""
    canvas = Canvas(size)
    for shape in shapes:
        canvas.draw(shape)
    out = np.zeros((size, size), dtype=bool)
    for _, m in canvas.layers:
        out |= m
    return out


def centred(shapes: Sequence[Shape], size: int, target: np.ndarray) -> list[Shape]:
    """``shapes`` shifted so that their mask's centroid lies on ``target`` (x, y pixels)."""
    ys, xs = np.nonzero(mask_of(shapes, size))
    shift = (float(target[0] - xs.mean()), float(target[1] - ys.mean()))
    return [s.moved(Affine(shift=shift)) for s in shapes]


def moved(shapes: Sequence[Shape], size: int, rng: np.random.Generator) -> list[Shape]:
    """``shapes`` moved as the mismatched pairs move a copied piece (shift, rotation, scale about their centroid),
    redrawn until :data:`KEEP` of the moved area stays inside the image (at most :data:`DRAWS` draws; else the
    draw that kept most)."""
    ys, xs = np.nonzero(mask_of(shapes, size))
    pivot, area = (float(xs.mean()), float(ys.mean())), len(xs)
    best, best_kept = None, -1.0
    for _ in range(DRAWS):
        length, direction = rng.uniform(*SHIFT), rng.uniform(0, 2 * math.pi)
        transform = Affine(pivot, rng.uniform(-ROTATION, ROTATION), rng.uniform(*SCALE),
                           (length * math.cos(direction), length * math.sin(direction)))  # fmt: skip
        out = [s.moved(transform) for s in shapes]
        kept = mask_of(out, size).sum() / (area * transform.scale**2)
        if kept >= KEEP:
            return out
        if kept > best_kept:
            best, best_kept = out, kept
    return best


def painted(shapes: Sequence[Shape], size: int, state: dict, channels: int) -> np.ndarray:
    """``shapes`` alone on the background, painted from the generator state ``state``: ``[size, size, 3]`` uint8."""
    canvas = Canvas(size)
    for shape in shapes:
        canvas.draw(shape)
    rng = np.random.default_rng()
    rng.bit_generator.state = state
    image = paint_scene(canvas, rng, channels, PLAIN_SCENES.noise_std, "bodies", "probe").image
    return np.repeat(image, 3, axis=2) if channels == 1 else image


def instance(seed: int, channels: int, index: int, size: int) -> tuple[list[np.ndarray], ...]:
    """Instance ``index`` in ``channels`` channels: per part (:data:`PARTS` order), the part alone at the target
    point, a piece of it at the target point, that piece moved, and the background alone (four lists of
    ``[size, size, 3]`` uint8)."""
    rng = np.random.default_rng([seed, channels, index])
    scale = size * rng.uniform(0.6, 0.95)
    centre = (size / 2 + rng.uniform(-0.12, 0.12) * size, size / 2 + rng.uniform(-0.08, 0.08) * size)
    angle = rng.uniform(-0.35, 0.35)
    body, thing = Canvas(size), Canvas(size)
    draw_body(body, rng, centre, scale, angle)
    kind = str(rng.choice(OBJECT_KINDS))
    draw_object(thing, rng, kind, "none", centre, scale * rng.uniform(1.0, 1.3), angle + rng.uniform(-0.5, 0.5))
    target = size * rng.uniform(*TARGET, 2)
    shapes = [*body.shapes, *thing.shapes]
    state = rng.bit_generator.state  # every image of the instance is painted from here: same colours, noise
    alone, at_target, away = [], [], []
    background = [painted([], size, state, channels)] * len(PARTS)
    for part in PARTS:
        alone.append(painted(centred([s for s in shapes if s.part == part], size, target), size, state, channels))
        names = MOVED_PIECES[part]
        name = names[int(rng.integers(len(names)))]
        piece = centred([s for s in shapes if s.part == part and s.name == name], size, target)
        at_target.append(painted(piece, size, state, channels))
        away.append(painted(moved(piece, size, rng), size, state, channels))
    return alone, at_target, away, background


def probe_set(instances: int, size: int, seed: int) -> ProbeSet:
    """The probe set: ``instances`` instances × :data:`COLOURS` × :data:`PARTS` rows."""
    rows = [instance(seed, c, i, size) for c in COLOURS for i in range(instances)]

    def stack(k: int) -> Tensor:
        images = np.stack([image for row in rows for image in row[k]])
        return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0

    part = torch.arange(len(PARTS)).repeat(len(rows))
    return ProbeSet(stack(0), stack(1), stack(2), stack(3), part)


def block_outputs(backbone: InsilicoCNNBackbone, images: Tensor) -> Iterator[tuple[str, Tensor]]:
    """Each block's output (``[B, K, h, w]``, post-ReLU) on ``images`` ``[B, 3, H, W]`` in [0, 1], in order."""
    x = backbone.preprocess(images)
    for name, block in backbone.body.named_children():
        x = block(x)
        yield name, x


def batches(n: int, size: int) -> Iterator[slice]:
    """Slices of ``n`` rows, each holding whole instances (``size`` rounded down to a multiple of the parts)."""
    step = max(size // len(PARTS), 1) * len(PARTS)
    return (slice(i, min(i + step, n)) for i in range(0, n, step))


def background_outputs(backbone: InsilicoCNNBackbone, probes: ProbeSet, rows: slice) -> dict[str, Tensor]:
    """Each block's output on the backgrounds of ``rows`` (whole instances), computed once per instance."""
    parts = len(PARTS)
    return {
        name: z.repeat_interleave(parts, 0) for name, z in block_outputs(backbone, probes.background[rows][::parts])
    }


@dataclass
class Sums:
    """Per layer, sums over each part's images ``[P, K, h, w]`` float64: of the latent (``raw``), of the latent minus
    the background's (``evoked``) and of that difference's positive part (``added``)."""

    raw: Tensor
    evoked: Tensor
    added: Tensor

    def __add__(self, other: Sums) -> Sums:
        return Sums(self.raw + other.raw, self.evoked + other.evoked, self.added + other.added)


def latent_sums(backbone: InsilicoCNNBackbone, probes: ProbeSet, batch: int) -> dict[str, Sums]:
    """Per layer, the :class:`Sums` over each part's alone-images."""
    sums: dict[str, Sums] = {}
    one_hot = torch.nn.functional.one_hot(probes.part, len(PARTS)).double()  # [N, P]
    with torch.no_grad():
        for rows in batches(len(probes.part), batch):
            empty = background_outputs(backbone, probes, rows)
            for name, z in block_outputs(backbone, probes.alone[rows]):
                evoked = (z - empty[name]).double()
                by_part = [torch.einsum("np,nkhw->pkhw", one_hot[rows], t) for t in (z.double(), evoked, evoked.relu())]
                sums[name] = sums[name] + Sums(*by_part) if name in sums else Sums(*by_part)
    return sums


def position_cosines(backbone: InsilicoCNNBackbone, probes: ProbeSet, batch: int) -> dict[str, dict[str, float]]:
    """Per layer, the cosines of each moved piece at its two positions, pooled and unpooled, of the latents and of
    the evoked latents (minus the background's), each the mean over the rows with a defined cosine."""
    found: dict[str, dict[str, list[Tensor]]] = {}
    with torch.no_grad():
        for rows in batches(len(probes.part), batch):
            empty = background_outputs(backbone, probes, rows)
            here = dict(block_outputs(backbone, probes.at_target[rows]))
            for name, there in block_outputs(backbone, probes.moved[rows]):
                pairs = {"": (here[name], there), "_evoked": (here[name] - empty[name], there - empty[name])}
                out = found.setdefault(name, {})
                for suffix, (a, b) in pairs.items():
                    out.setdefault(f"pooled_position_cosine{suffix}", []).append(
                        row_cosines(a.mean((2, 3)), b.mean((2, 3)))
                    )
                    out.setdefault(f"unpooled_position_cosine{suffix}", []).append(row_cosines(a, b))
    return {name: {k: float(torch.cat(v).nanmean()) for k, v in cols.items()} for name, cols in found.items()}


def erf_rows(rows: int, images: int) -> Tensor:
    """The rows of the probe set the ERF is averaged over: every part of ``images // len(PARTS)`` (at least 1)
    instances spread evenly over the instances of both colour modes."""
    instances = rows // len(PARTS)
    chosen = torch.linspace(0, instances - 1, min(max(images // len(PARTS), 1), instances)).round().long()
    return (chosen[:, None] * len(PARTS) + torch.arange(len(PARTS))).flatten()


def erf_gradients(backbone: InsilicoCNNBackbone, images: Tensor) -> dict[str, Tensor]:
    """Per layer, the mean over ``images`` of the absolute input gradient of the centre cell's channel-summed
    activation, summed over colour channels: ``[H, W]``."""
    out = {}
    for layer in LAYERS:
        x = images.clone().requires_grad_(True)
        z = next(z for name, z in block_outputs(backbone, x) if name == layer)
        h, w = z.shape[-2:]
        z[:, :, h // 2, w // 2].sum().backward()
        out[layer] = x.grad.abs().sum(1).mean(0)
    return out


def probe(backbone: InsilicoCNNBackbone, probes: ProbeSet, args: argparse.Namespace) -> list[dict]:
    """Every index of :data:`COLUMNS` (but the backbone's name) for each layer of ``backbone``."""
    sums = latent_sums(backbone, probes, args.batch_size)
    counts = torch.bincount(probes.part, minlength=len(PARTS)).double()
    positions = position_cosines(backbone, probes, args.batch_size)
    gradients = erf_gradients(backbone, probes.alone[erf_rows(len(probes.part), args.erf_images)])
    out = []
    for layer in LAYERS:
        means = {kind: getattr(sums[layer], kind) / counts[:, None, None, None] for kind in ("raw", "evoked", "added")}
        radii = erf_radii(gradients[layer], ERF_SHARE)
        _, k, h, w = means["raw"].shape
        out.append({
            "layer": layer, "channels": k, "latent_h": h, "latent_w": w,
            **profile_indices(means["raw"].mean((2, 3)), means["raw"], ""),
            **profile_indices(means["added"].mean((2, 3)), means["evoked"], "_evoked"),
            **positions[layer],
            "erf_r50": radii.mass,
            "erf_rms": radii.rms,
        })  # fmt: skip
    return out


def profile_indices(profiles: Tensor, patterns: Tensor, suffix: str) -> dict[str, float]:
    """The profile indices of ``profiles`` ``[P, K]`` and the head-vs-limbs cosine of the mean patterns ``patterns``
    ``[P, K, h, w]``, under their column names with ``suffix``; the evoked selective mass is of the normalised
    profiles (a larger part adds more activation in all)."""
    head, torso, limbs = (PARTS.index(p) for p in ("head", "torso", "limbs"))
    intersections = profile_intersections(profiles)
    return {
        f"part_specificity{suffix}": part_specificity_index(profiles),
        f"I_head_limbs{suffix}": float(intersections[head, limbs]),
        f"I_head_torso{suffix}": float(intersections[head, torso]),
        f"selective_mass{suffix}": selective_mass_share(profiles, SELECTIVE_RATIO, normalise=suffix == "_evoked"),
        f"head_limbs_cosine{suffix}": cosine(patterns[head], patterns[limbs]),
    }


def zoo_files(zoo: Path | None) -> list[Path]:
    """The ``*.safetensors`` files of ``zoo`` (sorted; none where ``zoo`` is None)."""
    if zoo is None:
        return []
    if not zoo.is_dir():
        raise UserError(f"--zoo {zoo}: no such folder; give the folder of the zoo's *.safetensors weights")
    return sorted(zoo.glob("*.safetensors"))


def backbones(args: argparse.Namespace) -> Iterator[tuple[str, InsilicoCNNBackbone]]:
    """(name, backbone cut after block4) for the shipped and random networks, then each zoo file."""
    specs = [(name, params) for name, params in SHIPPED.items()]
    specs += [(path.stem, {"weights_file": str(path)}) for path in zoo_files(args.zoo)]
    for name, params in specs:
        backbone = InsilicoCNNBackbone(layer=LAYERS[-1], input_size=args.size, **params).eval()
        if backbone.in_channels != 3:
            raise UserError(
                f"{backbone.weights_source}: a network of {backbone.in_channels} input channels; the probe shows grey "
                "and RGB images and needs an insilico_cnn of 3 input channels"
            )
        yield name, backbone


def table(rows: Sequence[dict], columns: Sequence[str]) -> str:
    """The markdown table of ``rows`` in ``columns`` (without a suffix ``_evoked``), indices to 2 decimals, radii
    to 1."""

    def fmt(column: str, value: object) -> str:
        if isinstance(value, float):
            return f"{value:.1f}" if column.startswith("erf") else f"{value:.2f}"
        return str(value)

    lines = ["| " + " | ".join(c.removesuffix("_evoked") for c in columns) + " |", "|---" * len(columns) + "|"]
    lines += ["| " + " | ".join(fmt(c, row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, help="instances per colour mode (default 64; quick: 3)")
    parser.add_argument("--erf-images", type=int, default=64, help="probe images averaged for the ERF (default 64)")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the probe set (default 0)")
    parser.add_argument("--zoo", type=Path, help="folder of the zoo's *.safetensors (default runs/zoo where it exists)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 3 instances, 8 ERF images (numbers mean nothing)"
    )
    parser.add_argument("--workdir", type=Path, default=Path("runs/benchmark-probe"))
    parser.add_argument("--no-write", action="store_true", help="print only; do not append to docs/benchmarks.md")
    args = parser.parse_args(argv)
    args.instances = args.instances or (3 if args.quick else 64)
    if args.quick:
        args.erf_images = min(args.erf_images, 8)
    if args.zoo is None and Path("runs/zoo").is_dir():
        args.zoo = Path("runs/zoo")
    start = time.perf_counter()
    try:
        nets = list(backbones(args))  # every weights file is read and checked before any compute
        probes = probe_set(args.instances, args.size, args.seed)
        rendered = time.perf_counter() - start
        rows = []
        for name, backbone in nets:
            began = time.perf_counter()
            rows += [{"backbone": name, **row} for row in probe(backbone, probes, args)]
            print(f"{name}: {len(LAYERS)} layers in {time.perf_counter() - began:.1f} s", flush=True)
        args.workdir.mkdir(parents=True, exist_ok=True)
        atomic_write_csv(args.workdir / "probe.csv", rows, COLUMNS)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    wall = time.perf_counter() - start
    peak = StageTimer.peak_rss_mb()
    n = len(probes.part)
    quick = " (quick smoke run: the numbers mean nothing)" if args.quick else ""
    memory = f"{peak / 1000:.2f} GB" if peak is not None else "not available"
    block = "\n\n".join(
        [
            f"### Backbone probes: {len({r['backbone'] for r in rows})} backbones × {len(LAYERS)} layers, {n} "
            f"isolated-part images ({args.instances} instances × {len(COLOURS)} colour modes × {len(PARTS)} parts) "
            f"and {n} moved pieces, {args.size} px, seed {args.seed}{quick}",
            "**On the latents** (as defined; each image's background is in every profile and pattern), and the "
            "effective receptive field:",
            table(rows, ["backbone", "layer", "channels", *INDICES, "erf_r50", "erf_rms"]),
            "**On the evoked latents** (each image's latent minus its background alone's; profiles of the positive "
            "part):",
            table(rows, ["backbone", "layer", *(f"{c}_evoked" for c in INDICES)]),
            f"Values: `{args.workdir / 'probe.csv'}`. Loading and rendering {rendered:.1f} s; total wall time "
            f"{wall:.1f} s; peak memory (VmHWM) {memory}.",
            machine("cpu"),
        ]
    )
    print_and_append(block + "\n", write=not args.no_write)
    return rows


if __name__ == "__main__":
    main()
