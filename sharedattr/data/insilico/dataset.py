"""Write an in-silico experiment's data as a normal stimulus set, so everything downstream runs as on real data.

Layout written into ``folder``::

    stimuli/manifest.csv      stimulus_id, path, category, mask, mask:head, mask:torso, mask:limbs,
                              mask:shape, kind, attachment
    stimuli/images/<id>.png   the rendered image (grayscale or RGB)
    stimuli/masks/<id>.png    the whole figure (union of its parts)
    stimuli/masks/<id>-<part>.png   one mask per part present (the cell is empty where a part is absent)
    stimuli/masks/<id>-<part>-<piece>.png   pair sets only: one mask per piece (column ``mask:<part>/<piece>``)
    responses.csv             stimulus_id, one column per neuron; one row per trial
    neuron_parts.json         {neuron: {part: weight}}: the ground truth (``data.neuron_parts``)
    parts.csv                 stimulus_id and each part's visible area (image fraction)

:func:`write_pair_set` writes driver/reference pairs (:mod:`~sharedattr.data.insilico.pairs`) the
same way, with ``pairs.csv`` naming each pair's images.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from sharedattr.data.insilico.neurons import DEFAULT_NEURONS, GroundTruthNeuron, SimulatedResponses, simulate_responses
from sharedattr.data.insilico.pairs import StimulusPair
from sharedattr.data.insilico.render import PARTS, PLAIN_SCENES, RenderedSet, SceneOptions, render_set
from sharedattr.data.manifest import PIECE_SEPARATOR
from sharedattr.runtime.io import atomic_write_bytes, atomic_write_csv, atomic_write_text


@dataclass(frozen=True)
class InSilicoFiles:
    """Paths of a written in-silico data set."""

    manifest: Path
    responses: Path
    neuron_parts: Path
    parts: Path


def _png(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> Path:
    """Rows of cells (aligned with ``header``) through the project's atomic CSV writer."""
    return atomic_write_csv(path, (dict(zip(header, row)) for row in rows), header)


def write_stimuli(rendered: RenderedSet, folder: Path, progress: bool = False) -> tuple[Path, Path]:
    """Write ``rendered`` as ``folder/stimuli`` (manifest, images, masks) and ``folder/parts.csv``."""
    stim = Path(folder) / "stimuli"
    (stim / "images").mkdir(parents=True, exist_ok=True)
    (stim / "masks").mkdir(parents=True, exist_ok=True)
    rows, area_rows = [], []
    areas = rendered.areas()
    for i in tqdm(range(len(rendered)), desc="write stimuli", disable=not progress, unit="image"):
        sid = rendered.ids[i]
        image = rendered.images[i]
        atomic_write_bytes(stim / "images" / f"{sid}.png", _png(image[..., 0] if image.shape[-1] == 1 else image))
        union = np.zeros(image.shape[:2], dtype=bool)
        part_cells = []
        for part in PARTS:
            mask = rendered.parts[part][i]
            union |= mask
            if mask.any():
                atomic_write_bytes(stim / "masks" / f"{sid}-{part}.png", _png(mask.astype(np.uint8) * 255))
                part_cells.append(f"masks/{sid}-{part}.png")
            else:
                part_cells.append("")
        for key, masks in rendered.pieces.items():
            name = f"masks/{sid}-{key.replace(PIECE_SEPARATOR, '-')}.png"
            if masks[i].any():
                atomic_write_bytes(stim / name, _png(masks[i].astype(np.uint8) * 255))
            part_cells.append(name if masks[i].any() else "")
        atomic_write_bytes(stim / "masks" / f"{sid}.png", _png(union.astype(np.uint8) * 255))
        rows.append(
            [
                sid,
                f"images/{sid}.png",
                rendered.categories[i],
                f"masks/{sid}.png",
                *part_cells,
                rendered.kinds[i],
                rendered.attachments[i],
            ]
        )
        area_rows.append([sid, *(f"{areas[p][i]:.6f}" for p in PARTS)])
    manifest = stim / "manifest.csv"
    _write_csv(
        manifest,
        ["stimulus_id", "path", "category", "mask", *(f"mask:{p}" for p in [*PARTS, *rendered.pieces]), "kind"]
        + ["attachment"],
        rows,
    )
    parts = Path(folder) / "parts.csv"
    _write_csv(parts, ["stimulus_id", *PARTS], area_rows)
    return manifest, parts


def write_responses(ids: Sequence[str], simulated: SimulatedResponses, path: Path) -> Path:
    """``responses.csv``: one row per stimulus and trial, one column per neuron."""
    names = [n.name for n in simulated.neurons]
    rows = [
        [sid, *(f"{v:.5f}" for v in simulated.trials[i, r])]
        for i, sid in enumerate(ids)
        for r in range(simulated.trials.shape[1])
    ]
    return _write_csv(path, ["stimulus_id", *names], rows)


def write_insilico(
    folder: str | Path,
    n_per_category: int = 40,
    size: int = 64,
    *,
    seed: int = 0,
    neurons: Sequence[GroundTruthNeuron] = DEFAULT_NEURONS,
    repeats: int = 2,
    progress: bool = False,
    options: SceneOptions = PLAIN_SCENES,
) -> InSilicoFiles:
    """Render, simulate and write a complete in-silico data set into ``folder`` (see the module docstring).

    ``n_per_category`` images of ``size`` px per category, rendered as ``options`` says (channels, sensor noise,
    how often bodies lack pieces and which body-like parts objects carry: :class:`SceneOptions`); ``repeats``
    trials of each of ``neurons``; everything drawn from ``seed``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rendered = render_set(
        n_per_category,
        size,
        channels=options.channels,
        seed=seed,
        noise_std=options.noise_std,
        missing=options.missing,
        attachment_probs=options.attachment_probs,
    )
    manifest, parts = write_stimuli(rendered, folder, progress)
    simulated = simulate_responses(rendered.areas(), neurons, repeats=repeats, seed=seed)
    responses = write_responses(rendered.ids, simulated, folder / "responses.csv")
    truth = atomic_write_text(
        folder / "neuron_parts.json",
        json.dumps({n.name: {p: w for p, w in n.weights.items() if w > 0} for n in neurons}, indent=2) + "\n",
    )
    return InSilicoFiles(manifest, responses, truth, parts)


def write_pair_set(folder: str | Path, conditions: Mapping[str, Sequence[StimulusPair]]) -> tuple[Path, Path]:
    """Write every driver and reference variant of ``conditions`` (``{condition: pairs}``) as one stimulus set in
    ``folder/stimuli`` (with a mask column per body piece, ``mask:<part>/<piece>``, so the truth is scored at the
    level of the copied piece: :func:`sharedattr.data.ground_truth.pair_truth`), and ``folder/pairs.csv``:
    condition, index, position, carried pieces, and the stimulus id of
    the driver and of each reference variant (columns ``driver``, ``reference:<variant>``).

    Ids are ``<condition>-<index>-driver`` and ``<condition>-<index>-<variant>``; drivers are ``objects``, references
    ``bodies``. Returns the manifest and pairs.csv paths.
    """
    folder = Path(folder)
    ids, scenes, rows = [], [], []
    variants: list[str] = []
    for condition, pairs in conditions.items():
        for i, pair in enumerate(pairs):
            stem = f"{condition}-{i:04d}"
            ids.append(f"{stem}-driver"), scenes.append(pair.driver)
            row = {"condition": condition, "index": i, "position": pair.position, "carried": " ".join(pair.carried)}
            row["driver"] = f"{stem}-driver"
            for name, scene in pair.references.items():
                ids.append(f"{stem}-{name}"), scenes.append(scene)
                row[f"reference:{name}"] = f"{stem}-{name}"
                variants += [name] if name not in variants else []
            rows.append(row)
    if len(set(ids)) != len(ids):
        raise ValueError("condition names must be unique and not contain each other's ids")
    manifest, _ = write_stimuli(RenderedSet.from_scenes(ids, scenes, pieces=True), folder)
    header = ["condition", "index", "position", "carried", "driver", *(f"reference:{v}" for v in variants)]
    table = atomic_write_csv(folder / "pairs.csv", ({h: r.get(h, "") for h in header} for r in rows), header)
    return manifest, table
