"""Shared parts that are measurably shared: does a method show what a driver *shares* with its reference?

    uv run python benchmarks/shared_parts.py                     # the table in docs/benchmarks.md (≤ 15 min, 2 CPUs)
    uv run python benchmarks/shared_parts.py --backbone random   # control: the same pairs on a random backbone
    uv run python benchmarks/shared_parts.py --variants          # every parallel_backprop variant (longer)

The ground truth is fixed by the stimuli before any method runs (:mod:`sharedattr.data.insilico.pairs`):
a *driver* object carries exact copies of one arm (and, in the ``both`` pairs, the head) of its
*reference* body, at the body's positions (``matched``) or shifted 12–20 px, rotated and scaled
(``mismatched``). The references come intact or headless, pixel-identical elsewhere. Three tests,
each on ``--pairs`` pairs per position, explained for each body-part neuron (``limbs``, ``head``,
``body``, ``head_and_limbs``; their driving parts are their tuned parts):

- **driver SPS**: driver (arm + head) with the *headless* body. The limbs are shared; the driver's
  head drives the neuron but is not shared. Shared-part selectivity of the driver's map
  (relevance on shared driving parts / on all driving parts; chance = their area ratio).
- **reference SPS**: driver (arm only) with the *intact* body. The limbs are shared; the body's
  head (and, for ``body``, torso) drive the neuron but are not shared. SPS of the reference's map.
- **RS**: driver (arm + head) with the intact body. Reference sensitivity of the driver's map: how
  much of a shared part's share it loses when that part is erased from the reference
  (``1 − after / before``, averaged over head and limbs). A single-image map scores 0.

The readout (ridge on the shipped ``insilico_cnn`` at block3, or a random one) is fitted on a
separate training set whose bodies miss pieces and whose objects carry several body-like parts,
so the parts' contributions are not confounded; its held-out r is printed beside the tables.
Every method explains the same pairs. Single-image baselines use the same black baseline (0) and
the same 16 steps/samples as the path variants of ``parallel_backprop``; ``parallel_backprop``
with ``variant = "own"`` (``s = w``: the neuron's own objective on the same path) is the control
that isolates the shared weighting. Paired comparisons: Wilcoxon signed-rank test and the mean
paired difference with its 95 % t interval (:mod:`sharedattr.report.stats`), on the pairs where
both methods are defined.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import sharedattr
from record import machine, print_and_append
from sharedattr.data import StimulusSet
from sharedattr.data.insilico import DEFAULT_NEURONS, write_insilico, write_pair_set
from sharedattr.data.insilico.pairs import POSITIONS, render_pairs
from sharedattr.data.insilico.render import VARIED_SCENES
from sharedattr.experiment.stages import fit_experiment
from sharedattr.report.stats import paired_test

KINDS = [n for n in DEFAULT_NEURONS if n.name != "shape"]  # the shape neuron prefers objects: nothing shared
STEPS = 16  # steps (path methods) and samples (sampling methods), the same for all
SPS = {"name": "shared_part_selectivity"}
RS_HEAD = {"name": "reference_sensitivity", "parts": ["head"]}
RS_LIMBS = {"name": "reference_sensitivity", "parts": ["limbs"]}
# (pair set, reference variant, scored image, {test: metric}, single-image methods too); the reference is scored as
# the first image of (reference, driver) pairs, which gives the same maps for every method here (single-image maps do
# not see the partner; the shared weights are symmetric, checked in check_symmetry) at half the single-image cost.
# Reference sensitivity is 0 by construction for a single-image map (tests/metrics/test_sharing.py): only the
# pairwise methods are run, and tested against 0.
TESTS = [
    ("both", "headless", "driver", {"driver SPS": SPS}, True),
    ("arm", "intact", "reference", {"reference SPS": SPS}, True),
    ("both", "intact", "driver", {"RS (head)": RS_HEAD, "RS (limbs)": RS_LIMBS}, False),
]
ZERO = "single-image (0 by construction)"
TEST_NAMES = [name for _, _, _, metrics, _ in TESTS for name in metrics]
PB = "parallel_backprop"
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
"""The path of every parallel_backprop label (its control is ``own`` on the same path)."""


def pb(variant: str, sharing: str = "dimension", path: str = "gradient", **extra) -> tuple[str, dict]:
    spec = {"name": PB, "variant": variant, "sharing": sharing, "path": path, **extra}
    if path == "ig":
        spec |= {"n_steps": STEPS, "baseline": 0.0}
    tag = ", ".join([variant, *([sharing] if variant != "own" else []), path, *(f"{k}={v}" for k, v in extra.items())])
    PATHS[f"PB ({tag})"] = path
    return f"PB ({tag})", spec


def control(path: str) -> str:
    return f"PB (own, {path})"


PB_MAIN = [  # the gradient and layer paths: about the cost of a saliency map per image; ig in --variants
    pb("product"),
    pb("positive"),
    pb("min"),
    pb("mask", mask_threshold=0.1),
    pb("positive", "channel"),
    pb("mask", "channel", mask_threshold=0.1),
    pb("own"),
    pb("product", path="layer"),
    pb("positive", path="layer"),
    pb("mask", path="layer", mask_threshold=0.1),
    pb("positive", "channel", "layer"),
    pb("own", path="layer"),
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
)


def labels(specs: Sequence[dict]) -> list[str]:
    """The labels compare() gives components (name, then name#2 … for repeats)."""
    counts: dict[str, int] = {}
    out = []
    for s in specs:
        counts[s["name"]] = counts.get(s["name"], 0) + 1
        out.append(s["name"] if counts[s["name"]] == 1 else f"{s['name']}#{counts[s['name']]}")
    return out


def fit(folder: Path, args: argparse.Namespace):
    """Training set (pieces missing, several attachments), ridge readout; the model and held-out r per neuron."""
    files = write_insilico(
        folder / "train",
        args.train,
        args.size,
        seed=0,
        neurons=KINDS,
        progress=True,
        options=VARIED_SCENES,
    )
    backbone = {"name": "insilico_cnn", "layer": args.layer, "input_size": args.size}
    if args.backbone == "random":
        backbone["weights"] = None
    spec = sharedattr.validate_experiment(
        {
            "name": f"shared-parts-{args.backbone}",
            "seed": 0,
            "device": args.device,
            "cache": False,
            "data": {
                "stimuli": str(files.manifest),
                "responses": str(files.responses),
                "preferred_category": "bodies",
            },
            "backbone": backbone,
            "readout": {"name": "ridge", "pooling": "none"},
            "output": {"figures": False},
        }
    )
    result = fit_experiment(spec, folder / f"fit-{args.backbone}", progress=True).fit
    return result.model, dict(zip(result.neuron_ids, (float(r) for r in result.test_r))), files.neuron_parts


def make_pairs(folder: Path, n: int, size: int) -> tuple[StimulusSet, list[dict[str, str]]]:
    conditions = {
        f"{kind}-{position}": render_pairs(n, size, seed=7, carry_head=kind == "both", position=position)
        for kind in ("both", "arm")
        for position in POSITIONS
    }
    manifest, table = write_pair_set(folder / "pairs", conditions)
    with open(table, newline="") as f:
        return StimulusSet.load(manifest), list(csv.DictReader(f))


def explained(pair_set: str, variant: str, image: str, rows, kinds=KINDS) -> list[tuple[str, str, str]]:
    """The (neuron, first, second) pairs of a test: the scored image first."""
    chosen = [r for r in rows if r["condition"].startswith(f"{pair_set}-")]
    pairs = [(k.name, r["driver"], r[f"reference:{variant}"]) for k in kinds for r in chosen]
    return pairs if image == "driver" else [(n, b, a) for n, a, b in pairs]


def check_symmetry(model, stimuli, rows, methods) -> float:
    """Largest difference between a pairwise method's map of the reference in (driver, reference) and in
    (reference, driver) order, over a few pairs: ~0 where the shared weights are symmetric."""
    pairwise = [spec for _, spec in methods if spec["name"] == PB]
    pairs = explained("arm", "intact", "driver", rows, KINDS[:2])[:8]
    swapped = [(n, b, a) for n, a, b in pairs]
    kw = {"methods": pairwise, "metrics": ["gini"], "return_maps": True, "pairs": pairs}
    _, forward = sharedattr.compare(model, stimuli, **kw)
    _, backward = sharedattr.compare(model, stimuli, **(kw | {"pairs": swapped}))
    return max(float((forward[m]["reference"] - backward[m]["driver"]).abs().max()) for m in forward)


def run_tests(model, stimuli, rows, methods, neuron_parts, args) -> pd.DataFrame:
    """Every test on every pair × neuron kind × method: one tidy frame (test, position, neuron, pair, method, value)."""
    specs = [spec for _, spec in methods]
    names = {id(spec): name for name, spec in methods}
    position = {r[c]: r["position"] for r in rows for c in r if c == "driver" or c.startswith("reference:")}
    frames = []
    for pair_set, variant, image, tests, single in TESTS:
        pairs = explained(pair_set, variant, image, rows)
        start = time.perf_counter()
        run = [spec for spec in specs if single or spec["name"] == PB]
        table = sharedattr.compare(
            model,
            stimuli,
            pairs=pairs,
            methods=run,
            metrics=list(tests.values()),
            neuron_parts=neuron_parts,
            on_reference=False,
            batch_size=args.batch_size,
            device=args.device,
            progress=True,
        )
        print(f"{', '.join(tests)}: {len(pairs)} pairs × {len(run)} methods in {time.perf_counter() - start:.0f} s")
        display = dict(zip(labels(run), (names[id(spec)] for spec in run)))
        table = table[table["image"] == "driver"]  # the first image of each pair: the scored one
        for test, label in zip(tests, labels(list(tests.values()))):
            t = table[table["metric"] == label]
            frames.append(
                pd.DataFrame(
                    {
                        "test": test,
                        "position": t["driver"].map(position),
                        "neuron": t["neuron"],
                        "pair": t["driver"],
                        "method": t["method"].map(display),
                        "value": t["value"].astype(float),
                    }
                )
            )
            if not single:  # the zero of every single-image map, on the same pairs
                zero = frames[-1][frames[-1]["method"] == frames[-1]["method"].iloc[0]].assign(method=ZERO, value=0.0)
                frames.append(zero)
    return pd.concat(frames, ignore_index=True)


def chance(stimuli: StimulusSet, rows, neuron_parts: dict, size: int) -> pd.DataFrame:
    """SPS of a map spread evenly over the driving parts: shared area / driving area, per test, pair and neuron."""
    out = []
    for pair_set, variant, image, tests, _ in TESTS:
        for test in (t for t, metric in tests.items() if metric is SPS):
            for _, own, other in explained(pair_set, variant, image, rows, KINDS[:1]):
                i, j = stimuli.ids.index(own), stimuli.ids.index(other)
                for kind in KINDS:
                    parts = [p for p in neuron_parts[kind.name] if stimuli.has_part(i, p)]
                    shared = [p for p in parts if stimuli.has_part(j, p)]
                    masks = stimuli.load_part_masks((size, size), [i, i], [shared, parts])
                    area_shared, area_all = (float(m.sum()) for m in masks)
                    defined = area_shared > 0 and area_all > area_shared
                    value = area_shared / area_all if defined else math.nan
                    out.append({"test": test, "position": own.split("-")[1], "neuron": kind.name, "pair": own,
                                "method": "chance (area ratio)", "value": value})  # fmt: skip
    return pd.DataFrame(out)


def cell(values: np.ndarray, median: bool = False) -> str:
    """``mean ± half-width of the 95 % t interval`` over the finite values (and `` (median m)``)."""
    v = values[np.isfinite(values)]
    if len(v) < 2:
        return "–"
    from scipy import stats

    half = float(stats.t.ppf(0.975, len(v) - 1)) * float(v.std(ddof=1)) / math.sqrt(len(v))
    return f"{v.mean():.2f} ± {half:.2f}" + (f" ({np.median(v):.2f})" if median else "")


def means_table(frame: pd.DataFrame, test: str, order: list[str]) -> str:
    cols = [(pos, k.name) for pos in POSITIONS for k in KINDS]
    lines = [
        "| method | " + " | ".join(f"{k} ({pos})" for pos, k in cols) + " |",
        "|---" * (len(cols) + 1) + "|",
    ]
    sub = frame[frame["test"] == test]
    for method in order:
        m = sub[sub["method"] == method]
        if m.empty:
            continue
        cells = [
            cell(m[(m["position"] == pos) & (m["neuron"] == k)]["value"].to_numpy(), test.startswith("RS"))
            for pos, k in cols
        ]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired(frame: pd.DataFrame, test: str, position: str, neuron: str, a: str, b: str):
    sub = frame[(frame["test"] == test) & (frame["position"] == position) & (frame["neuron"] == neuron)]
    va = sub[sub["method"] == a].set_index("pair")["value"]
    vb = sub[sub["method"] == b].set_index("pair")["value"].reindex(va.index)
    return paired_test(va.to_numpy(), vb.to_numpy())


def verdict_table(frame: pd.DataFrame, candidate: str, baselines: list[str], alpha: float) -> tuple[str, dict]:
    """Per test × position × neuron: the best baseline (by mean), the candidate's paired difference to it, its p, and
    how many baselines the candidate beats at p < ``alpha`` (difference > 0)."""
    lines = [
        f"| test | position | neuron | {candidate} | best baseline | Δ to it [95 % CI] | p | beats (p < {alpha}) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    summary = {}
    for test in TEST_NAMES:
        for position in POSITIONS:
            for kind in KINDS:
                sub = frame[(frame["test"] == test) & (frame["position"] == position) & (frame["neuron"] == kind.name)]
                means = sub.groupby("method")["value"].mean()
                if candidate not in means or not np.isfinite(means[candidate]):
                    continue
                ranked = [b for b in baselines if b in means and np.isfinite(means[b])]
                beaten = 0
                for b in ranked:
                    t = paired(frame, test, position, kind.name, candidate, b)
                    beaten += int(t.p < alpha and t.mean_diff > 0)
                best = max(ranked, key=lambda b: means[b]) if ranked else None
                if best is None:
                    continue
                t = paired(frame, test, position, kind.name, candidate, best)
                summary[(test, position, kind.name)] = (beaten, len(ranked), t)
                lines.append(
                    f"| {test} | {position} | {kind.name} | {cell(sub[sub['method'] == candidate]['value'].to_numpy())}"
                    f" | {best} {means[best]:.2f} | {t.mean_diff:+.3f} [{t.ci_low:+.3f}, {t.ci_high:+.3f}] (n {t.n})"
                    f" | {t.p:.1e} | {beaten}/{len(ranked)} |"
                )
    return "\n".join(lines), summary


def weighting_table(frame: pd.DataFrame, variants: list[str], alpha: float) -> str:
    """Each variant against the own-objective control on the same path: the effect of the shared weighting."""
    header = " | ".join(f"{t} ({p})" for t in TEST_NAMES for p in POSITIONS)
    lines = [f"| variant | control | {header} |", "|---" * (2 + 2 * len(TEST_NAMES)) + "|"]
    for v in variants:
        own = control(PATHS[v])
        if v == own:
            continue
        cells = []
        for test in TEST_NAMES:
            for position in POSITIONS:
                diffs, wins = [], 0
                for kind in KINDS:
                    t = paired(frame, test, position, kind.name, v, own)
                    if t.n:
                        diffs.append(t.mean_diff)
                        wins += int(t.p < alpha and t.mean_diff > 0) - int(t.p < alpha and t.mean_diff < 0)
                cells.append(f"{np.mean(diffs):+.2f} ({wins:+d})" if diffs else "–")
        lines.append(f"| {v} | {own} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def scoreboard(frame: pd.DataFrame, variants: list[str], baselines: list[str], alpha: float) -> tuple[str, str]:
    """Per variant and test × position: in how many of the neurons it beats *every* baseline (p < alpha), and in how
    many the best baseline beats it; and the variant (not a control) with the most wins (ties: the fewest losses, then
    the higher mean over the tests)."""
    lines = ["| variant | " + " | ".join(f"{t} ({p})" for t in TEST_NAMES for p in POSITIONS) + " | all |",
             "|---" * (2 + 2 * len(TEST_NAMES)) + "|"]  # fmt: skip
    score = {}
    for v in variants:
        cells, wins, losses, total = [], 0, 0, 0
        for test in TEST_NAMES:
            for position in POSITIONS:
                won = lost = 0
                for kind in KINDS:
                    sub = frame[
                        (frame["test"] == test) & (frame["position"] == position) & (frame["neuron"] == kind.name)
                    ]
                    means = sub.groupby("method")["value"].mean()
                    ranked = [b for b in baselines if b in means and np.isfinite(means[b])]
                    if v not in means or not np.isfinite(means[v]) or not ranked:
                        continue
                    tests = [paired(frame, test, position, kind.name, v, b) for b in ranked]
                    won += all(t.p < alpha and t.mean_diff > 0 for t in tests)
                    best = paired(frame, test, position, kind.name, v, max(ranked, key=lambda b: means[b]))
                    lost += best.p < alpha and best.mean_diff < 0
                cells.append(f"{won} / {lost}")
                wins += won
                losses += lost
                total += len(KINDS)
        mean = float(frame[frame["method"] == v].groupby("test")["value"].mean().mean())
        if v != control(PATHS[v]):  # a control is never the candidate
            score[v] = (wins, -losses, mean)
        lines.append(f"| {v} | " + " | ".join(cells) + f" | {wins} of {total} |")
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=200, help="pairs per pair set and position")
    parser.add_argument("--train", type=int, default=300, help="training images per category")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--layer", default="block3")
    parser.add_argument("--backbone", choices=["trained", "random"], default="trained")
    parser.add_argument("--variants", action="store_true", help="every parallel_backprop variant, few baselines")
    parser.add_argument("--candidate", help="the method tested against the baselines (default: the best variant)")
    parser.add_argument("--occlusion", action="store_true", help="add occlusion (8 px windows) to the baselines")
    parser.add_argument("--alpha", type=float, default=0.01)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workdir", type=Path, default=Path("runs/benchmark-shared-parts"))
    parser.add_argument("--no-write", action="store_true", help="print only; do not append to docs/benchmarks.md")
    args = parser.parse_args()
    torch.manual_seed(0)
    start = time.perf_counter()
    model, test_r, truth_file = fit(args.workdir, args)
    neuron_parts = json.loads(Path(truth_file).read_text())
    stimuli, rows = make_pairs(args.workdir, args.pairs, args.size)
    pb_methods = PB_SWEEP if args.variants else PB_MAIN
    baselines = (BASELINES[:6] if args.variants else BASELINES) + ([OCCLUSION] if args.occlusion else [])
    methods = pb_methods + baselines
    asymmetry = check_symmetry(model, stimuli, rows, pb_methods)
    if asymmetry > 1e-4:
        raise SystemExit(f"parallel_backprop's maps depend on the order of the pair (max difference {asymmetry:.2e})")
    frame = run_tests(model, stimuli, rows, methods, neuron_parts, args)
    frame = pd.concat([frame, chance(stimuli, rows, neuron_parts, args.size)], ignore_index=True)
    frame.to_csv(args.workdir / f"values-{args.backbone}{'-variants' if args.variants else ''}.csv", index=False)
    wall = time.perf_counter() - start
    order = [name for name, _ in methods] + [ZERO, "chance (area ratio)"]
    base_names = [name for name, _ in baselines] + [ZERO]
    board, best = scoreboard(frame, [name for name, _ in pb_methods], base_names, args.alpha)
    args.candidate = args.candidate or best
    verdict, summary = verdict_table(frame, args.candidate, base_names, args.alpha)
    won = sum(1 for beaten, total, _ in summary.values() if beaten == total)
    rs = frame[(frame["test"] == "RS (head)") & (frame["method"] == args.candidate)]
    rs = rs.groupby(["position", "neuron"])["value"].agg(["mean", "median"])
    blocks = [
        f"### Shared parts: {args.backbone} `insilico_cnn` ({args.layer}) + ridge, {args.pairs} pairs per pair set "
        f"and position × {len(KINDS)} neurons, {len(methods)} methods{' (variants)' if args.variants else ''}",
        "Held-out r of the readout (training set of "
        f"{2 * args.train} images): " + ", ".join(f"{n} {r:.2f}" for n, r in test_r.items()) + ".",
    ]
    for test in TEST_NAMES:
        spread = "; in brackets, the median" if test.startswith("RS") else ""
        blocks += [f"**{test}** (mean ± 95 % CI over pairs{spread})", means_table(frame, test, order)]
    blocks += [
        f"**Shared weighting vs its control** (mean paired difference to `own` on the same path over the four "
        f"neurons; in brackets, neurons with a difference beyond noise at p < {args.alpha}, + for the variant)",
        weighting_table(frame, [name for name, _ in pb_methods], args.alpha),
        f"**Each variant against the single-image baselines**: neurons (of {len(KINDS)}) where it beats every "
        f"baseline / where the best baseline beats it (paired Wilcoxon, p < {args.alpha})",
        board,
        f"**{args.candidate} against the single-image baselines** (paired Wilcoxon; Δ > 0: the candidate is better)",
        verdict,
        f"The candidate beats every baseline (p < {args.alpha}) in {won} of {len(summary)} test × position × neuron "
        "cells. Its reference sensitivity for the head (mean / median over pairs): "
        + ", ".join(f"{n} ({p}) {r['mean']:.2f} / {r['median']:.2f}" for (p, n), r in rs.iterrows())
        + f". Values per pair: `{args.workdir}`. Total wall time {wall:.0f} s; peak memory "
        f"{peak_memory_gib():.1f} GiB.",
        machine(args.device),
    ]
    print_and_append("\n\n".join(blocks) + "\n", write=not args.no_write)


if __name__ == "__main__":
    main()
