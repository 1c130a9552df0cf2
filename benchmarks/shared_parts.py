"""Shared parts that are measurably shared: does a method show what a driver *shares* with its reference?

    uv run python benchmarks/shared_parts.py                      # one fit, one pair seed: per-run tables
    uv run python benchmarks/shared_parts.py --backbones random   # control: the same pairs on a random backbone
    uv run python benchmarks/shared_parts.py --variants           # every parallel_backprop variant (longer)
    uv run python benchmarks/shared_parts.py --quick --no-write   # a smoke run of every step at a tiny size
    uv run python benchmarks/shared_parts.py --zoo-run            # the pre-registered run over the zoo (pooled)

Each (backbone, readout fit, pair seed, layout) is one *unit*, written to ``<workdir>/values/`` as it finishes (an
interrupted run resumes at the next unit). With more than one fit, pair seed or backbone the units are pooled by
:mod:`shared_parts_pooled` (hierarchical bootstrap over backbones' seeds × fits, crossed with pairs; the decision
rule; the dose-response over backbones), as docs/benchmarks.md pre-registers.

The ground truth is fixed by the stimuli before any method runs (:mod:`sharedattr.data.insilico.pairs`) and is
scored at the level of the copied piece: a *driver* object carries copies of one arm (and, in the ``both`` pairs,
the head) of its *reference* body; only the copied pieces are shared, the body's other limbs are unshared driving
parts. The copies sit at the body's positions (``matched``) or shifted 12–20 px, rotated and scaled
(``mismatched``). Three pair layouts, reported apart (:data:`LAYOUTS`): ``repainted`` copies (the object's colours
and texture, the object's shape at the arm's root, over the body's head and torso at matched positions), ``pixel``
copies (the reference's own pixels pasted) and ``beside`` (pixel copies, the object's shape beside the body,
covering none of its head and torso). The references come intact, headless or with a *decoy* (the object's outline
in place of the head), pixel-identical elsewhere. Tests, each on ``--pairs`` pairs per layout and position, for
each body-part neuron (``limbs``, ``head``, ``body``, ``head_and_limbs``; their driving parts are their tuned
parts):

- **driver SPS**: driver (arm + head) with the *headless* body; the copied arm is shared, the driver's head drives
  the neuron but is not shared. Shared-part selectivity of the driver's map.
- **reference SPS**: driver (arm only) with the *intact* body; the copied arm is shared; the body's other limbs,
  head (and torso) are not. SPS of the reference's map.
- **decoy SPS**: the same with the *decoy* body; the decoy counts as an unshared driving part (the neuron's parts
  and ``shape``), so a map drawn to the place of the driver's object, not to what it shares, loses.
- **RS**: driver (arm + head) with the intact body. Reference sensitivity of the driver's map when the copied
  piece is erased from the reference (head; limbs: the copied arm). Only pairwise methods run here.

Undefined maps (no positive relevance on the driving parts, where the truth is defined) score 0, "shows nothing
shared"; each table gives the rate of undefined maps per method. A pairwise method is compared with the single-image
baselines and the co-location control (``colocation`` on the same path) on SPS, and with its own control
(``variant = "own"`` on the same path) and the co-location control on RS: never with the constant 0 of a
single-image map. Paired comparisons: Wilcoxon signed-rank test and the mean paired difference with its 95 % t
interval (:mod:`sharedattr.report.stats`) over the pairs of one fit; the pre-registered rule over fits is in
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import torch
from probe_backbones import SHIPPED, zoo_files

import sharedattr
from record import machine, print_and_append
from sharedattr.data import StimulusSet
from sharedattr.data.ground_truth import pair_truth
from sharedattr.data.insilico import DEFAULT_NEURONS, write_insilico, write_pair_set
from sharedattr.data.insilico.pairs import POSITIONS, PairLayout, render_pairs
from sharedattr.data.insilico.render import VARIED_SCENES
from sharedattr.experiment.stages import fit_experiment
from sharedattr.report.stats import paired_test
from sharedattr.runtime.errors import UserError

KINDS = [n for n in DEFAULT_NEURONS if n.name != "shape"]  # the shape neuron prefers objects: nothing shared
STEPS = 16  # steps (path methods) and samples (sampling methods), the same for all
SPS = {"name": "shared_part_selectivity"}
RS_HEAD = {"name": "reference_sensitivity", "parts": ["head"]}
RS_LIMBS = {"name": "reference_sensitivity", "parts": ["limbs"]}
LAYOUTS = {
    "repainted": PairLayout(copy="repainted", decoy=True),
    "pixel": PairLayout(copy="pixel", decoy=True),
    "beside": PairLayout(copy="pixel", object_at="beside", decoy=True),
}
"""The pair layouts, reported apart: repainted or pixel-identical copies, and the object's shape beside the body."""


@dataclass(frozen=True)
class Test:
    """One test: the pair set (``both``: arm + head, ``arm``), the reference variant, the scored image (explained
    first), its metrics, whether single-image methods run (sharing metrics only) and whether the decoy counts as a
    driving part (the ``shape`` part joins the neuron's parts)."""

    pair_set: str
    variant: str
    image: str
    metrics: dict = field(default_factory=dict)
    single: bool = True
    decoy: bool = False


# The reference is scored as the first image of (reference, driver) pairs, which gives the same maps for every
# method here (single-image maps do not see the partner; the shared weights are symmetric, checked in
# check_symmetry) at half the single-image cost. Reference sensitivity is 0 by construction for a single-image map
# (tests/metrics/test_sharing.py): only the pairwise methods run, tested against their controls.
TESTS = [
    Test("both", "headless", "driver", {"driver SPS": SPS}),
    Test("arm", "intact", "reference", {"reference SPS": SPS}),
    Test("arm", "decoy", "reference", {"decoy SPS": SPS}, decoy=True),
    Test("both", "intact", "driver", {"RS (head)": RS_HEAD, "RS (limbs)": RS_LIMBS}, single=False),
]
TEST_NAMES = [name for t in TESTS for name in t.metrics]
SPS_TESTS = [name for t in TESTS for name, metric in t.metrics.items() if metric is SPS]
PB = "parallel_backprop"
PAIRWISE = (PB, "colocation")
CHANCE = "chance (area ratio)"
BASELINES = [
    ("saliency", {"name": "saliency"}),
    ("input_x_gradient", {"name": "input_x_gradient"}),
    ("integrated_gradients", {"name": "integrated_gradients", "n_steps": STEPS, "baseline": 0.0}),
    ("deep_lift", {"name": "deep_lift", "baseline": 0.0}),
    ("guided_backprop", {"name": "guided_backprop"}),
    ("grad_cam", {"name": "grad_cam"}),
    ("smoothgrad", {"name": "smoothgrad", "samples": STEPS}),
    ("gradient_shap", {"name": "gradient_shap", "baselines": [0.0], "n_samples": STEPS}),
]
OCCLUSION = ("occlusion", {"name": "occlusion", "window": 8, "stride": 8, "baseline": 0.0})


PATHS: dict[str, str] = {}
"""The path of every pairwise label (its controls are ``own`` and ``colocation`` on the same path)."""


def pb(variant: str, sharing: str = "dimension", path: str = "gradient", **extra) -> tuple[str, dict]:
    spec = {"name": PB, "variant": variant, "sharing": sharing, "path": path, **extra}
    if path == "ig":
        spec |= {"n_steps": STEPS, "baseline": 0.0}
    tag = ", ".join([variant, *([sharing] if variant != "own" else []), path, *(f"{k}={v}" for k, v in extra.items())])
    PATHS[f"PB ({tag})"] = path
    if path == "layer" and "share_at" in extra:  # read at that layer: its control is own read there too
        OWN[f"PB ({tag})"] = f"PB (own, layer, share_at={extra['share_at']})"
    return f"PB ({tag})", spec


def colocation(path: str) -> tuple[str, dict]:
    """The co-location control on ``path``: max(own map of a, 0) × max(own map of b, 0)."""
    spec = {"name": "colocation", "path": path} | ({"n_steps": STEPS, "baseline": 0.0} if path == "ig" else {})
    PATHS[f"colocation ({path})"] = path
    return f"colocation ({path})", spec


def control(path: str) -> str:
    return f"PB (own, {path})"


OWN: dict[str, str] = {}
"""The own-objective control of a label when it is not ``control(path)`` (share_at on the layer path)."""
FINER = "block2"
"""share_at of the multi-layer sharing entries: the insilico_cnn block before the readout layer (block3)."""


def own_control(method: str) -> str:
    return OWN.get(method, control(PATHS[method]))


def controls(method: str) -> list[str]:
    """The controls of a pairwise method: its own objective and the co-location control on its path."""
    return [own_control(method), f"colocation ({PATHS[method]})"]


def is_control(method: str) -> bool:
    return method in controls(method)


PB_MAIN = [  # the gradient and layer paths: about the cost of a saliency map per image; ig in --variants
    pb("product"),
    pb("positive"),
    pb("min"),
    pb("mask", mask_threshold=0.1),
    pb("positive", "channel"),
    pb("mask", "channel", mask_threshold=0.1),
    pb("own"),
    colocation("gradient"),
    pb("product", path="layer"),
    pb("positive", path="layer"),
    pb("mask", path="layer", mask_threshold=0.1),
    pb("positive", "channel", "layer"),
    pb("own", path="layer"),
    colocation("layer"),
    pb("product", "correspondence", "layer"),
    pb("positive", "correspondence", "layer"),
    pb("product", path="layer", share_at=FINER),
    pb("positive", path="layer", share_at=FINER),
    pb("own", path="layer", share_at=FINER),
]
PB_SWEEP = (
    [
        pb(variant, sharing, path)
        for path in ("gradient", "ig", "layer")
        for variant in ("product", "positive", "min", "mask")
        for sharing in ("dimension", "channel")
    ]
    + [
        pb("mask", sharing, path, mask_threshold=t)
        for path in ("gradient", "layer")
        for sharing in ("dimension", "channel")
        for t in (0.1, 0.3)
    ]
    + [pb("own", path=path) for path in ("gradient", "ig", "layer")]
    + [colocation(path) for path in ("gradient", "ig", "layer")]
    + [pb(variant, "correspondence", path) for path in ("gradient", "layer") for variant in ("product", "positive")]
    + [pb(variant, path=path, share_at=FINER) for path in ("gradient", "layer") for variant in ("product", "positive")]
    + [pb("own", path="layer", share_at=FINER)]
)
PB_QUICK = [pb("product", path="layer"), pb("own", path="layer"), colocation("layer")]
"""--quick: the default, its control and the co-location control (with saliency and Grad-CAM)."""


def labels(specs: Sequence[dict]) -> list[str]:
    """The labels compare() gives components (name, then name#2 … for repeats)."""
    counts: dict[str, int] = {}
    out = []
    for s in specs:
        counts[s["name"]] = counts.get(s["name"], 0) + 1
        out.append(s["name"] if counts[s["name"]] == 1 else f"{s['name']}#{counts[s['name']]}")
    return out


@dataclass(frozen=True)
class Backbone:
    """A backbone of the benchmark: its name (folder and table label) and its ``insilico_cnn`` spec."""

    name: str
    spec: dict

    @classmethod
    def named(cls, name: str, layer: str, size: int) -> Backbone:
        """``random``, a shipped weights name, or a weights file (``.safetensors``; named by its stem)."""
        base = {"name": "insilico_cnn", "layer": layer, "input_size": size}
        if name in SHIPPED:
            return cls(name, base | SHIPPED[name])
        path = Path(name)
        if not path.is_file():
            raise SystemExit(f"--backbones: {name!r} is neither {', '.join(SHIPPED)} nor a weights file")
        return cls(path.stem, base | {"weights_file": str(path.resolve())})


def fit(workdir: Path, backbone: Backbone, fit_seed: int, args: argparse.Namespace):
    """Training set (pieces missing, several attachments; one per fit seed, shared by every backbone), ridge
    readout; the model, held-out r per neuron and the neuron-parts file."""
    train = workdir / f"train-f{fit_seed}-n{args.train}"
    files = write_insilico(train, args.train, args.size, seed=fit_seed, neurons=KINDS, progress=True,
                           options=VARIED_SCENES)  # fmt: skip
    spec = sharedattr.validate_experiment(
        {
            "name": f"shared-parts-{backbone.name}",
            "seed": fit_seed,
            "device": args.device,
            "cache": False,
            "data": {
                "stimuli": str(files.manifest),
                "responses": str(files.responses),
                "preferred_category": "bodies",
            },
            "backbone": backbone.spec,
            "readout": {"name": "ridge", "pooling": "none"},
            "output": {"figures": False},
        }
    )
    out = workdir / "fits" / f"{backbone.name}-f{fit_seed}-n{args.train}"
    result = fit_experiment(spec, out, progress=True, reuse=True).fit
    return result.model, dict(zip(result.neuron_ids, (float(r) for r in result.test_r))), files.neuron_parts


def make_pairs(
    folder: Path, n: int, size: int, seed: int, layouts: Sequence[str] = tuple(LAYOUTS)
) -> tuple[StimulusSet, list[dict[str, str]]]:
    """Every pair set × position × layout (conditions ``<pair set>-<position>-<layout>``), written as one set; each
    condition is rendered on its own from ``seed``, so a layout's pairs do not depend on the other layouts."""
    conditions = {
        f"{kind}-{position}-{name}": render_pairs(n, size, seed=seed, carry_head=kind == "both", position=position,
                                                  layout=LAYOUTS[name])
        for name in layouts
        for kind in ("both", "arm")
        for position in POSITIONS
    }  # fmt: skip
    manifest, table = write_pair_set(folder / "pairs", conditions)
    with open(table, newline="") as f:
        return StimulusSet.load(manifest), list(csv.DictReader(f))


def explained(test: Test, layout: str, rows, kinds=KINDS) -> list[tuple[str, str, str]]:
    """The (neuron, first, second) pairs of a test in one layout: the scored image first."""
    chosen = [r for r in rows if r["condition"] in {f"{test.pair_set}-{p}-{layout}" for p in POSITIONS}]
    pairs = [(k.name, r["driver"], r[f"reference:{test.variant}"]) for k in kinds for r in chosen]
    return pairs if test.image == "driver" else [(n, b, a) for n, a, b in pairs]


def truth_for(test: Test, neuron_parts: dict) -> dict:
    """The neuron parts a test scores against: with the decoy, the object's ``shape`` counts as driving."""
    return {k: [*v, "shape"] for k, v in neuron_parts.items()} if test.decoy else neuron_parts


def check_symmetry(model, stimuli, rows, methods, layout: str) -> float:
    """Largest difference between a pairwise method's map of the reference in (driver, reference) and in
    (reference, driver) order, over a few pairs of ``layout``: ~0 where the maps do not depend on the order."""
    pairwise = [spec for _, spec in methods if spec["name"] in PAIRWISE]
    pairs = explained(TESTS[1], layout, rows, KINDS[:2])[:8]
    swapped = [(n, b, a) for n, a, b in pairs]
    kw = {"methods": pairwise, "metrics": ["gini"], "return_maps": True, "pairs": pairs}
    _, forward = sharedattr.compare(model, stimuli, **kw)
    _, backward = sharedattr.compare(model, stimuli, **(kw | {"pairs": swapped}))
    return max(float((forward[m]["driver"] - backward[m]["reference"]).abs().max()) for m in forward)


def run_tests(
    model, stimuli, rows, methods, neuron_parts, args, layouts: Sequence[str] = tuple(LAYOUTS)
) -> pd.DataFrame:
    """Every test on every pair × layout × neuron kind × method: one tidy frame (test, layout, position, neuron,
    pair, method, value), values as the metrics give them (NaN where undefined)."""
    specs = [spec for _, spec in methods]
    names = {id(spec): name for name, spec in methods}
    position = {r[c]: r["position"] for r in rows for c in r if c == "driver" or c.startswith("reference:")}
    frames = []
    for layout in layouts:
        for test in TESTS:
            pairs = explained(test, layout, rows)
            start = time.perf_counter()
            run = [spec for spec in specs if test.single or spec["name"] in PAIRWISE]
            used = list(dict.fromkeys(sid for _, a, b in pairs for sid in (a, b)))
            table = sharedattr.compare(
                model,
                stimuli.subset(used),  # only the images of this test's pairs are read and embedded
                pairs=pairs,
                methods=run,
                metrics=list(test.metrics.values()),
                neuron_parts=truth_for(test, neuron_parts),
                on_reference=False,
                batch_size=args.batch_size,
                device=args.device,
                progress=True,
            )
            took = time.perf_counter() - start
            print(f"{', '.join(test.metrics)} ({layout}): {len(pairs)} pairs × {len(run)} methods in {took:.0f} s")
            display = dict(zip(labels(run), (names[id(spec)] for spec in run)))
            table = table[table["image"] == "driver"]  # the first image of each pair: the scored one
            for name, label in zip(test.metrics, labels(list(test.metrics.values()))):
                t = table[table["metric"] == label]
                frames.append(
                    pd.DataFrame(
                        {
                            "test": name,
                            "layout": layout,
                            "position": t["driver"].map(position),
                            "neuron": t["neuron"],
                            "pair": t["driver"],
                            "method": t["method"].map(display),
                            "value": t["value"].astype(float),
                        }
                    )
                )
    return pd.concat(frames, ignore_index=True)


def truth_table(
    stimuli: StimulusSet, rows, neuron_parts: dict, size: int, layouts: Sequence[str] = tuple(LAYOUTS)
) -> pd.DataFrame:
    """Per test, layout, pair and neuron (piece-level truth): whether the truth is defined (SPS: the scored image
    shows a shared and an unshared driving piece; RS: the pair shares a piece of the erased part), and on SPS the
    chance level, the score of a map spread evenly over the driving pieces (shared area / driving area; NaN where
    undefined)."""
    out = []
    ids = {sid: i for i, sid in enumerate(stimuli.ids)}
    names = [k.name for k in KINDS]
    for layout in layouts:
        for test in TESTS:
            parts = truth_for(test, neuron_parts)
            for _, own, other in explained(test, layout, rows, KINDS[:1]):
                first, second = ids[own], ids[other]
                pairs = [SimpleNamespace(neuron=k, driver=first, reference=second) for k in range(len(names))]
                for kind, truth in zip(names, pair_truth(stimuli, parts, names, pairs)):
                    key = {"layout": layout, "position": own.split("-")[1], "neuron": kind, "pair": own}
                    for name, metric in test.metrics.items():
                        if metric is SPS:
                            masks = stimuli.load_part_masks(
                                (size, size), [first] * 2, [truth.shared, truth.shared + truth.driver_only]
                            )
                            area_shared, area_all = (float(m.sum()) for m in masks)
                            defined = area_shared > 0 and area_all > area_shared
                            value = area_shared / area_all if defined else math.nan
                        else:
                            erased = metric.get("parts") or [truth.label(q) for q in truth.shared]
                            defined = any(truth.label(q) in erased for q in truth.shared)
                            value = math.nan
                        out.append({"test": name, **key, "defined": defined, "chance": value})
    return pd.DataFrame(out)


def undefined_as_zero(frame: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """Score undefined maps 0 ("shows nothing shared") and mark them (column ``undefined``), and add the chance rows
    (method :data:`CHANCE`) of the SPS tests.

    A map is undefined where its metric is NaN although the pair's truth is defined (``truth``:
    :func:`truth_table`); pairs whose truth is undefined are dropped for every method."""
    key = ["test", "layout", "position", "neuron", "pair"]
    defined = truth.set_index(key)["defined"]
    out = frame.copy()
    out = out[defined.reindex(pd.MultiIndex.from_frame(out[key])).fillna(False).to_numpy(dtype=bool)]
    out["undefined"] = out["value"].isna()
    out["value"] = out["value"].fillna(0.0)
    chance_rows = truth[truth["defined"] & truth["test"].isin(SPS_TESTS)]
    chance_rows = chance_rows[key].assign(method=CHANCE, value=chance_rows["chance"], undefined=False)
    return pd.concat([out, chance_rows], ignore_index=True)


def cell(values: np.ndarray, median: bool = False) -> str:
    """``mean ± half-width of the 95 % t interval`` over the values (and `` (median m)``)."""
    v = values[np.isfinite(values)]
    if len(v) < 2:
        return "–"
    from scipy import stats

    half = float(stats.t.ppf(0.975, len(v) - 1)) * float(v.std(ddof=1)) / math.sqrt(len(v))
    return f"{v.mean():.2f} ± {half:.2f}" + (f" ({np.median(v):.2f})" if median else "")


def means_table(frame: pd.DataFrame, test: str, layout: str, order: list[str]) -> str:
    """Mean ± 95 % CI per position × neuron, and the share of the method's maps that were undefined (scored 0)."""
    cols = [(pos, k.name) for pos in POSITIONS for k in KINDS]
    lines = [
        "| method | " + " | ".join(f"{k} ({pos})" for pos, k in cols) + " | undefined |",
        "|---" * (len(cols) + 2) + "|",
    ]
    sub = frame[(frame["test"] == test) & (frame["layout"] == layout)]
    for method in order:
        m = sub[sub["method"] == method]
        if m.empty:
            continue
        cells = [
            cell(m[(m["position"] == pos) & (m["neuron"] == k)]["value"].to_numpy(), test.startswith("RS"))
            for pos, k in cols
        ]
        rate = "–" if method == CHANCE else f"{100 * m['undefined'].mean():.1f} %"
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {rate} |")
    return "\n".join(lines)


Cell = tuple[str, str, str, str]
"""(test, layout, position, neuron)."""


def by_cell(frame: pd.DataFrame) -> dict[Cell, pd.DataFrame]:
    """Each (test, layout, position, neuron) cell's values as a table: pairs × methods."""
    keys = ["test", "layout", "position", "neuron"]
    return {where: g.pivot(index="pair", columns="method", values="value") for where, g in frame.groupby(keys)}


def paired(table: pd.DataFrame | None, a: str, b: str):
    """Paired test of methods ``a`` and ``b`` over the pairs of one cell's table (:func:`by_cell`)."""
    if table is None or a not in table or b not in table:
        return paired_test(np.array([]), np.array([]))
    return paired_test(table[a].to_numpy(), table[b].to_numpy())


def opponents(test: str, method: str, baselines: list[str]) -> list[str]:
    """What a pairwise ``method`` must beat on ``test``: on SPS the single-image ``baselines`` and the co-location
    control on its path; on RS its own control and the co-location control (never the 0 of a single-image map)."""
    coloc = f"colocation ({PATHS[method]})"
    if test in SPS_TESTS:
        return [*baselines, coloc] if method != coloc else list(baselines)
    return [c for c in controls(method) if c != method]


def cells(layouts: Sequence[str] = tuple(LAYOUTS)) -> list[tuple[str, str, str, str]]:
    return [(t, lay, p, k.name) for t in TEST_NAMES for lay in layouts for p in POSITIONS for k in KINDS]


def verdict_table(
    tables: dict[Cell, pd.DataFrame], candidate: str, baselines: list[str], alpha: float, layouts: Sequence[str]
) -> tuple[str, dict]:
    """Per test × layout × position × neuron: the strongest opponent (by mean), the candidate's paired difference to
    it, its p, and how many opponents the candidate beats at p < ``alpha`` (difference > 0)."""
    lines = [
        f"| test | layout | position | neuron | {candidate} | strongest opponent | Δ to it [95 % CI] | p | "
        f"beats (p < {alpha}) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    summary = {}
    for where in cells(layouts):
        test, layout, position, neuron = where
        table = tables.get(where)
        means = pd.Series(dtype=float) if table is None else table.mean()
        if candidate not in means or not np.isfinite(means[candidate]):
            continue
        ranked = [b for b in opponents(test, candidate, baselines) if b in means and np.isfinite(means[b])]
        if not ranked:
            continue
        beaten = sum(int(t.p < alpha and t.mean_diff > 0) for t in (paired(table, candidate, b) for b in ranked))
        best = max(ranked, key=lambda b: means[b])
        t = paired(table, candidate, best)
        summary[where] = (beaten, len(ranked), t)
        lines.append(
            f"| {test} | {layout} | {position} | {neuron} | {cell(table[candidate].to_numpy())}"
            f" | {best} {means[best]:.2f} | {t.mean_diff:+.3f} [{t.ci_low:+.3f}, {t.ci_high:+.3f}] (n {t.n})"
            f" | {t.p:.1e} | {beaten}/{len(ranked)} |"
        )
    return "\n".join(lines), summary


def weighting_table(tables: dict[Cell, pd.DataFrame], variants: list[str], alpha: float, layouts: Sequence[str]) -> str:
    """Each variant against the own-objective control on the same path: the effect of the shared weighting (mean
    paired difference over layouts × neurons; in brackets, the cells beyond noise, + for the variant)."""
    header = " | ".join(f"{t} ({p})" for t in TEST_NAMES for p in POSITIONS)
    lines = [f"| variant | control | {header} |", "|---" * (2 + 2 * len(TEST_NAMES)) + "|"]
    for v in variants:
        own = own_control(v)
        if is_control(v):
            continue
        row = []
        for test in TEST_NAMES:
            for position in POSITIONS:
                diffs, wins = [], 0
                for layout in layouts:
                    for kind in KINDS:
                        t = paired(tables.get((test, layout, position, kind.name)), v, own)
                        if t.n:
                            diffs.append(t.mean_diff)
                            wins += int(t.p < alpha and t.mean_diff > 0) - int(t.p < alpha and t.mean_diff < 0)
                row.append(f"{np.mean(diffs):+.2f} ({wins:+d})" if diffs else "–")
        lines.append(f"| {v} | {own} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def scoreboard(
    frame: pd.DataFrame,
    tables: dict[Cell, pd.DataFrame],
    variants: list[str],
    baselines: list[str],
    alpha: float,
    layouts: Sequence[str],
) -> tuple[str, str]:
    """Per variant and test × position: in how many (layout, neuron) cells it beats *every* opponent (p < alpha), and
    in how many the strongest opponent beats it; and the variant (not a control) with the most wins (ties: the fewest
    losses, then the higher mean over the tests)."""
    lines = ["| variant | " + " | ".join(f"{t} ({p})" for t in TEST_NAMES for p in POSITIONS) + " | all |",
             "|---" * (2 + 2 * len(TEST_NAMES)) + "|"]  # fmt: skip
    score = {}
    for v in variants:
        row, wins, losses, total = [], 0, 0, 0
        for test in TEST_NAMES:
            for position in POSITIONS:
                won = lost = 0
                for layout in layouts:
                    for kind in KINDS:
                        table = tables.get((test, layout, position, kind.name))
                        means = pd.Series(dtype=float) if table is None else table.mean()
                        ranked = [b for b in opponents(test, v, baselines) if b in means and np.isfinite(means[b])]
                        if v not in means or not np.isfinite(means[v]) or not ranked:
                            continue
                        tests = [paired(table, v, b) for b in ranked]
                        won += all(t.p < alpha and t.mean_diff > 0 for t in tests)
                        best = paired(table, v, max(ranked, key=lambda b: means[b]))
                        lost += best.p < alpha and best.mean_diff < 0
                row.append(f"{won} / {lost}")
                wins += won
                losses += lost
                total += len(KINDS) * len(layouts)
        mean = float(frame[frame["method"] == v].groupby("test")["value"].mean().mean())
        if not is_control(v):  # a control is never the candidate
            score[v] = (wins, -losses, mean)
        lines.append(f"| {v} | " + " | ".join(row) + f" | {wins} of {total} |")
    best = max(score, key=lambda v: score[v])
    return "\n".join(lines), best


def peak_memory_gib() -> float:
    """This process's peak resident memory (VmHWM), in GiB; NaN where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return math.nan


ZOO_BASELINES = [b for b in BASELINES if b[0] not in ("smoothgrad", "gradient_shap")]
"""The zoo run's single-image baselines: smoothgrad and gradient_shap (noise averages of saliency and IG, 16 passes
each) are left out for time, as pre-registered."""
PB_ZOO = [
    pb("product", path="layer"),
    pb("positive", path="layer"),
    pb("product", "correspondence", "layer"),
    pb("positive", "correspondence", "layer"),
    pb("product", path="layer", share_at=FINER),
    pb("positive", path="layer", share_at=FINER),
    pb("own", path="layer"),
    pb("own", path="layer", share_at=FINER),
    colocation("layer"),
]
"""The zoo run's pairwise methods on the layer path: the candidates, their own control and the co-location control."""
ZOO_RUN = {"fit_seeds": [0, 1, 2], "pair_seeds": [7, 11], "pairs": 10, "layouts": ["pixel", "beside"],
           "also": {"insilico-v1": ["repainted"]}}  # fmt: skip
"""The pre-registered zoo run (docs/benchmarks.md): every backbone × these fits × pair seeds × layouts, at block3,
and the layouts in ``also`` on the backbones named there (prediction 6 compares repainted with pixel copies)."""


@dataclass
class Unit:
    """One (backbone, readout fit, pair seed, layout): its values file and the settings that made it."""

    backbone: Backbone
    fit_seed: int
    pair_seed: int
    layout: str

    def path(self, workdir: Path) -> Path:
        return workdir / "values" / self.backbone.name / f"f{self.fit_seed}-p{self.pair_seed}-{self.layout}.csv"


def settings(args: argparse.Namespace, methods: Sequence[tuple[str, dict]]) -> dict:
    """What a unit's values depend on besides its own keys (a stored unit with other settings is computed again)."""
    return {"pairs": args.pairs, "train": args.train, "size": args.size, "layer": args.layer,
            "methods": {name: spec for name, spec in methods}}  # fmt: skip


class Units:
    """Runs units and keeps what they share in memory: the readout fit of a (backbone, fit seed), and the pairs and
    their truth of a pair seed. Each unit's values are written atomically beside a JSON of its settings; a stored
    unit with the same settings is read instead of computed (an interrupted run resumes)."""

    def __init__(self, args: argparse.Namespace, methods: list[tuple[str, dict]], layouts: Sequence[str]) -> None:
        self.args, self.methods, self.layouts = args, methods, list(layouts)
        self.fits: dict[tuple[str, int], tuple] = {}
        self.pairs: dict[int, tuple] = {}
        self.settings = settings(args, methods)

    def fitted(self, backbone: Backbone, fit_seed: int):
        key = (backbone.name, fit_seed)
        if key not in self.fits:
            self.fits.clear()  # one model at a time: units run backbone by backbone, fit by fit
            model, test_r, parts_file = fit(self.args.workdir, backbone, fit_seed, self.args)
            self.fits[key] = (model, test_r, json.loads(Path(parts_file).read_text()))
        return self.fits[key]

    def paired(self, pair_seed: int, neuron_parts: dict):
        if pair_seed not in self.pairs:
            a = self.args
            folder = a.workdir / f"pairs-p{pair_seed}-n{a.pairs}-{'+'.join(self.layouts)}"
            stimuli, rows = make_pairs(folder, a.pairs, a.size, pair_seed, self.layouts)
            truth = truth_table(stimuli, rows, neuron_parts, a.size, self.layouts)
            self.pairs[pair_seed] = (stimuli, rows, truth)
        return self.pairs[pair_seed]

    def values(self, unit: Unit) -> pd.DataFrame:
        """The unit's values: read where stored with the same settings; where stored with the same settings but
        fewer methods, only the missing methods are computed and added; else computed."""
        path = unit.path(self.args.workdir)
        meta = path.with_suffix(".json")
        stored = json.loads(meta.read_text()) if path.is_file() and meta.is_file() else None
        same = stored is not None and {k: v for k, v in stored["settings"].items() if k != "methods"} == {
            k: v for k, v in self.settings.items() if k != "methods"
        }
        have = stored["settings"]["methods"] if same else {}
        kept = {name: spec for name, spec in have.items() if self.settings["methods"].get(name) == spec}
        missing = [(name, spec) for name, spec in self.methods if name not in kept]
        old = pd.read_csv(path) if same else None
        if old is not None and not missing:
            return old[old["method"].isin([*self.settings["methods"], CHANCE])].reset_index(drop=True)
        start = time.perf_counter()
        model, test_r, neuron_parts = self.fitted(unit.backbone, unit.fit_seed)
        stimuli, rows, truth = self.paired(unit.pair_seed, neuron_parts)
        pairwise = [m for m in missing if m[1]["name"] in PAIRWISE]
        asymmetry = check_symmetry(model, stimuli, rows, pairwise, unit.layout) if pairwise else 0.0
        if asymmetry > 1e-4:
            raise SystemExit(f"the pairwise maps depend on the order of the pair (max difference {asymmetry:.2e})")
        frame = run_tests(model, stimuli, rows, missing, neuron_parts, self.args, [unit.layout])
        frame = undefined_as_zero(frame, truth[truth["layout"] == unit.layout])
        frame = frame.assign(backbone=unit.backbone.name, fit=unit.fit_seed, pair_seed=unit.pair_seed)
        if old is not None:  # the stored methods that are still asked for, and their chance rows
            frame = pd.concat([old[old["method"].isin(kept)], frame], ignore_index=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".csv.tmp")
        frame.to_csv(tmp, index=False)
        seconds = round(time.perf_counter() - start + (stored or {}).get("seconds", 0.0) * bool(kept), 1)
        record = {"settings": self.settings, "held_out_r": test_r, "seconds": seconds}
        meta.with_suffix(".json.tmp").write_text(json.dumps(record, indent=1))
        tmp.replace(path)
        meta.with_suffix(".json.tmp").replace(meta)
        print(f"unit {unit.backbone.name} fit {unit.fit_seed} pairs {unit.pair_seed} {unit.layout}: "
              f"{len(missing)} methods in {time.perf_counter() - start:.0f} s")  # fmt: skip
        return pd.read_csv(path)


def per_run_report(frame: pd.DataFrame, methods, pb_methods, baselines, test_r: dict, args) -> list[str]:
    """The tables of one fit and one pair seed (intervals over its pairs; they decide nothing)."""
    layouts = [lay for lay in LAYOUTS if lay in set(frame["layout"])]
    order = [name for name, _ in methods] + [CHANCE]
    base_names = [name for name, _ in baselines]
    tables = by_cell(frame)
    board, best = scoreboard(frame, tables, [name for name, _ in pb_methods], base_names, args.alpha, layouts)
    candidate = args.candidate or best
    verdict, summary = verdict_table(tables, candidate, base_names, args.alpha, layouts)
    won = sum(1 for beaten, total, _ in summary.values() if beaten == total)
    rs = frame[(frame["test"] == "RS (head)") & (frame["method"] == candidate)]
    rs = rs.groupby(["layout", "position", "neuron"])["value"].agg(["mean", "median"])
    (backbone,) = set(frame["backbone"])
    blocks = [
        f"### Shared parts (repaired): `insilico_cnn` {backbone} ({args.layer}) + ridge, {args.pairs} pairs per "
        f"pair set, layout and position × {len(KINDS)} neurons, {len(methods)} methods"
        + (" (variants)" if args.variants else " (quick smoke run: the numbers mean nothing)" if args.quick else ""),
        f"Fit seed {args.fit_seeds[0]}, pair seed {args.pair_seeds[0]}. Held-out r of the readout (training set of "
        f"{2 * args.train} images): " + ", ".join(f"{n} {r:.2f}" for n, r in test_r.items()) + ".",
    ]
    for test in TEST_NAMES:
        for layout in layouts:
            spread = "; in brackets, the median" if test.startswith("RS") else ""
            blocks += [
                f"**{test}, {layout}** (mean ± 95 % CI over the pairs of one fit, undefined maps as 0{spread}; "
                "undefined: the share of the method's maps with no positive relevance on the parts scored)",
                means_table(frame, test, layout, order),
            ]
    blocks += [
        f"**Shared weighting vs its control** (mean paired difference to `own` on the same path over the layouts × "
        f"neurons; in brackets, cells with a difference beyond noise at p < {args.alpha}, + for the variant)",
        weighting_table(tables, [name for name, _ in pb_methods], args.alpha, layouts),
        f"**Each variant against its opponents** (SPS: every single-image baseline and the co-location control; RS: "
        f"its own control and the co-location control): layout × neuron cells (of {len(KINDS) * len(layouts)}) "
        f"where it beats every opponent / where the strongest beats it (paired Wilcoxon, p < {args.alpha})",
        board,
        f"**{candidate} against its opponents** (paired Wilcoxon; Δ > 0: the candidate is better)",
        verdict,
        f"The candidate beats every opponent (p < {args.alpha}) in {won} of {len(summary)} test × layout × position "
        "× neuron cells. Its reference sensitivity for the head (mean / median over pairs): "
        + ", ".join(f"{n} ({lay}, {p}) {r['mean']:.2f} / {r['median']:.2f}" for (lay, p, n), r in rs.iterrows())
        + ".",
    ]
    return blocks


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, help="pairs per pair set, layout, position and pair seed (default 200; "
                        "quick: 3; zoo run: 10)")  # fmt: skip
    parser.add_argument("--train", type=int, help="training images per category (default 300; quick: 20)")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--layer", default="block3")
    parser.add_argument("--backbones", nargs="+", default=["insilico-v1"],
                        help=f"{', '.join(SHIPPED)} or weights files (default insilico-v1)")  # fmt: skip
    parser.add_argument("--zoo", type=Path, help="add every *.safetensors of this folder to --backbones")
    parser.add_argument("--fit-seeds", type=int, nargs="+", default=[0],
                        help="seeds of the readout's training set and fit (replicate over fits)")  # fmt: skip
    parser.add_argument("--pair-seeds", type=int, nargs="+", default=[7], help="seeds of the pairs")
    parser.add_argument("--layouts", nargs="+", choices=list(LAYOUTS), default=list(LAYOUTS))
    parser.add_argument("--also", nargs=2, action="append", metavar=("BACKBONE", "LAYOUT"), default=[],
                        help="one more layout on one backbone (repeatable)")  # fmt: skip
    parser.add_argument("--zoo-run", action="store_true",
                        help="the pre-registered run: random, the shipped weights and --zoo (default runs/zoo) × "
                        f"{ZOO_RUN} with the zoo's methods; pooled")  # fmt: skip
    parser.add_argument("--zoo-methods", action="store_true", help="the zoo run's methods (implied by --zoo-run)")
    parser.add_argument("--probe", type=Path, help="probe.csv of benchmarks/probe_backbones.py (for the pooled run)")
    parser.add_argument("--variants", action="store_true", help="every parallel_backprop variant, few baselines")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run of every step: 3 pairs, 20 training images per category (unless given), the default, its "
        "controls, saliency and Grad-CAM (under a minute on 2 CPU cores; its numbers mean nothing)",
    )
    parser.add_argument("--candidate", help="the method tested against the baselines (default: the best variant)")
    parser.add_argument("--occlusion", action="store_true", help="add occlusion (8 px windows) to the baselines")
    parser.add_argument("--alpha", type=float, default=0.01)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workdir", type=Path, default=Path("runs/benchmark-shared-parts"))
    parser.add_argument("--no-write", action="store_true", help="print only; do not append to docs/benchmarks.md")
    args = parser.parse_args(argv)
    if args.zoo_run:
        args.zoo = args.zoo or Path("runs/zoo")
        args.backbones = list(SHIPPED)
        args.fit_seeds, args.pair_seeds, args.layouts = ZOO_RUN["fit_seeds"], ZOO_RUN["pair_seeds"], ZOO_RUN["layouts"]
        args.pairs = args.pairs or ZOO_RUN["pairs"]
        args.also = [[b, lay] for b, lays in ZOO_RUN["also"].items() for lay in lays]
    args.pairs = args.pairs or (3 if args.quick else 200)
    args.train = args.train or (20 if args.quick else 300)
    try:
        names = args.backbones + [str(path) for path in zoo_files(args.zoo)]
    except UserError as err:
        raise SystemExit(str(err)) from None
    backbones = [Backbone.named(name, args.layer, args.size) for name in names]
    torch.manual_seed(0)
    start = time.perf_counter()
    if args.zoo_run or args.zoo_methods:
        pb_methods, baselines = PB_ZOO, ZOO_BASELINES
    else:
        pb_methods = PB_QUICK if args.quick else PB_SWEEP if args.variants else PB_MAIN
        baselines = [BASELINES[0], BASELINES[5]] if args.quick else BASELINES[:6] if args.variants else BASELINES
    baselines = baselines + ([OCCLUSION] if args.occlusion else [])
    methods = pb_methods + baselines
    also = {(b, lay) for b, lay in args.also}
    rendered = [lay for lay in LAYOUTS if lay in args.layouts or any(lay == a for _, a in also)]
    units = Units(args, methods, rendered)
    frame = pd.concat(
        [
            units.values(Unit(backbone, f, p, layout))
            for backbone in backbones
            for f in args.fit_seeds
            for p in args.pair_seeds
            for layout in [*args.layouts, *(lay for b, lay in sorted(also) if b == backbone.name)]
        ],
        ignore_index=True,
    )
    wall = time.perf_counter() - start
    single = len(backbones) == 1 and len(args.fit_seeds) == 1 and len(args.pair_seeds) == 1
    if single:
        test_r = json.loads(Unit(backbones[0], args.fit_seeds[0], args.pair_seeds[0], args.layouts[0])
                            .path(args.workdir).with_suffix(".json").read_text())["held_out_r"]  # fmt: skip
        blocks = per_run_report(frame, methods, pb_methods, baselines, test_r, args)
    else:
        import shared_parts_pooled

        blocks = shared_parts_pooled.report(frame, args, [n for n, _ in pb_methods], [n for n, _ in baselines])
    blocks += [
        f"Values per unit: `{args.workdir / 'values'}`. Total wall time {wall:.0f} s; peak memory "
        f"{peak_memory_gib():.1f} GiB.",
        machine(args.device),
    ]
    print_and_append("\n\n".join(blocks) + "\n", write=not args.no_write)


if __name__ == "__main__":
    main()
