"""The pooled reading of ``benchmarks/shared_parts.py`` over backbones, readout fits and pair seeds, as
docs/benchmarks.md pre-registers ("Pre-registered rule for the repaired benchmark" and its amendment).

    uv run python benchmarks/shared_parts_pooled.py --workdir runs/benchmark-shared-parts --probe runs/probe/probe.csv

(``shared_parts.py`` calls :func:`report` itself when it runs more than one unit.)

**Units and pairs.** A *unit* is one readout fit of one backbone's weights (a zoo arm has one unit per training
seed × fit seed). The pairs are the same stimuli in every unit (the pair seeds fix them), so pairs are *crossed* with
units: :func:`crossed_bootstrap` draws the units and the pairs with replacement, one pair draw shared by every drawn
unit, and takes the mean paired difference over everything drawn. (The rule first written drew the pairs anew within
each fit; with crossed pairs that treats one pair's effect, common to every fit, as independent draws and narrows the
interval: the amendment, committed before any run, replaces it.) Intervals are percentile intervals (99 % for the
decision, 95 % for the dose-response slopes); p is two-sided, ``2 · min(P(Δ* ≤ 0), P(Δ* ≥ 0))``.

**Decision rule** (:func:`goal_cells`, :func:`rs_rule`): on the chosen arm (the highest block3 part-specificity
index of the probe, the segmentation arm excluded: it is the upper bound, not the headline), in the ``pixel`` and
``beside`` layouts, a candidate beats every single-image baseline and the co-location control on piece-level driver
and reference SPS at matched and mismatched positions, for each neuron (32 cells, Δ > 0 at p < 0.01), and its
reference sensitivity (head, limbs) is ≥ 0.5 on the mean at matched positions for every neuron and beats its own
control and the co-location control at p < 0.01.

**Dose-response** (:func:`dose_response`): per backbone (each weights file a point), the advantage A of a pairwise
method over the best single-image baseline of each cell (by its mean on that backbone), and over the co-location
control, on piece-level SPS (driver, reference and decoy; ``pixel`` and ``beside``; undefined maps as 0), at matched
positions against the part-specificity index and at mismatched positions against that index × the position-tolerance
index; the OLS slope with a bootstrap interval over backbones, fits within them and pairs.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

ALPHA = 0.01
N_BOOT = 10_000
SLOPE_BOOT = 2_000
SLOPE_CONFIDENCE = 0.95
DECISION_LAYOUTS = ("pixel", "beside")
GOAL_TESTS = ("driver SPS", "reference SPS")
DOSE_TESTS = ("driver SPS", "reference SPS", "decoy SPS")
RS_TESTS = ("RS (head)", "RS (limbs)")
POSITIONS = ("matched", "mismatched")
UPPER_BOUND_ARMS = ("segmentation",)
"""Zoo arms reported as an upper bound and never chosen for the headline (issue 26, item 3c)."""
PROBE_LAYER = "block3"
PSI = "part_specificity_evoked"
PTI = "pooled_position_cosine_evoked"
"""The probe's columns (benchmarks/probe_backbones.py) the rule reads: the indices on the *evoked* latents (each
image's latent minus its background's), fixed before any probe of the zoo was seen (the background fills most of an
isolated-part image and dominates the raw position averages)."""


def arm_of(backbone: str) -> str:
    """The arm of a backbone name: a zoo file ``decorrelated-s1`` → ``decorrelated``; others are their own arm."""
    return re.sub(r"-s\d+$", "", backbone)


def crossed_bootstrap(d: np.ndarray, rng: np.random.Generator, n_boot: int = N_BOOT) -> np.ndarray:
    """Bootstrap means ``[n_boot]`` of paired differences ``d`` ``[U, P]`` (U units crossed with P pairs): each
    resample draws U units and P pairs with replacement, the same pair draw for every unit, and averages ``d`` over
    the drawn units × pairs.

    >>> d = np.array([[1.0, 3.0], [1.0, 3.0]])
    >>> float(crossed_bootstrap(d, np.random.default_rng(0), 4000).mean().round(1))
    2.0
    """
    units, pairs = d.shape
    cu = np.zeros((n_boot, units))
    cp = np.zeros((n_boot, pairs))
    rows = np.arange(n_boot)[:, None]
    np.add.at(cu, (rows, rng.integers(0, units, (n_boot, units))), 1.0)
    np.add.at(cp, (rows, rng.integers(0, pairs, (n_boot, pairs))), 1.0)
    return np.einsum("bu,up,bp->b", cu, d, cp) / (units * pairs)


@dataclass(frozen=True)
class Comparison:
    """A paired comparison pooled over units × pairs: the mean difference, its interval, the two-sided bootstrap p
    (0 when no resample reached 0: below ``2 / n_boot``), and the units and pairs it rests on."""

    mean: float
    low: float
    high: float
    p: float
    units: int
    pairs: int

    def beats(self, alpha: float = ALPHA) -> bool:
        return self.mean > 0 and self.p < alpha

    def text(self) -> str:
        if not math.isfinite(self.mean):
            return "not scored"
        p = f"< {2 / N_BOOT:.0e}" if self.p == 0 else f"{self.p:.1e}"
        return f"{self.mean:+.3f} [{self.low:+.3f}, {self.high:+.3f}], p {p}"


def compare(d: np.ndarray, rng: np.random.Generator, alpha: float = ALPHA) -> Comparison:
    """:class:`Comparison` of the differences ``d`` ``[U, P]`` (its ``1 − alpha`` percentile interval)."""
    if d.size == 0:  # nothing scored on both sides
        return Comparison(math.nan, math.nan, math.nan, math.nan, d.shape[0], d.shape[1] if d.ndim == 2 else 0)
    boot = crossed_bootstrap(d, rng)
    low, high = np.quantile(boot, [alpha / 2, 1 - alpha / 2])
    p = min(1.0, 2 * min(float((boot <= 0).mean()), float((boot >= 0).mean())))
    return Comparison(float(d.mean()), float(low), float(high), p, d.shape[0], d.shape[1])


def matrix(frame: pd.DataFrame, method: str) -> pd.DataFrame:
    """One cell's values of ``method`` as units × pairs: rows (backbone, fit), columns (pair_seed, pair)."""
    m = frame[frame["method"] == method]
    return m.pivot_table(index=["backbone", "fit"], columns=["pair_seed", "pair"], values="value", aggfunc="first")


def differences(frame: pd.DataFrame, a: str, b: str) -> np.ndarray:
    """``a − b`` per unit × pair of one cell (pairs missing in any unit dropped)."""
    da, db = matrix(frame, a), matrix(frame, b)
    d = (da - db).dropna(axis=1, how="any")
    return d.to_numpy(dtype=float)


Cell = tuple[str, str, str, str]


def cells_of(frame: pd.DataFrame) -> dict[Cell, pd.DataFrame]:
    return dict(iter(frame.groupby(["test", "layout", "position", "neuron"])))


def controls_of(method: str) -> list[str]:
    """The own control and the co-location control of a pairwise label of shared_parts.py (same path)."""
    import shared_parts

    return [c for c in shared_parts.controls(method) if c != method]


def coloc_of(method: str) -> str:
    import shared_parts

    return f"colocation ({shared_parts.PATHS[method]})"


def goal_cells(
    cells: dict[Cell, pd.DataFrame], candidate: str, baselines: Sequence[str], rng: np.random.Generator
) -> pd.DataFrame:
    """Rule 1, per cell of the goal (tests × decision layouts × positions × neurons): every opponent (single-image
    baselines and the co-location control), the candidate's pooled comparison to the strongest one, and whether it
    beats them all."""
    rows = []
    for (test, layout, position, neuron), sub in sorted(cells.items()):
        if test not in GOAL_TESTS or layout not in DECISION_LAYOUTS:
            continue
        opponents = [*baselines, coloc_of(candidate)]
        means = sub.groupby("method")["value"].mean()
        if candidate not in means:  # not scored in this cell (a partial run)
            continue
        results = {o: compare(differences(sub, candidate, o), rng) for o in opponents if o in means}
        strongest = max(results, key=lambda o: means[o])
        rows.append(
            {"test": test, "layout": layout, "position": position, "neuron": neuron,
             "candidate": float(means[candidate]), "strongest": strongest, "opponent": float(means[strongest]),
             "comparison": results[strongest], "beaten": sum(r.beats() for r in results.values()),
             "opponents": len(results), "all": all(r.beats() for r in results.values())}
        )  # fmt: skip
    return pd.DataFrame(rows)


def rs_rule(cells: dict[Cell, pd.DataFrame], candidate: str, rng: np.random.Generator) -> pd.DataFrame:
    """Rule 2 per RS test × decision layout × neuron at matched positions: the mean (≥ 0.5?) and the pooled
    comparisons with the own control and the co-location control."""
    rows = []
    for (test, layout, position, neuron), sub in sorted(cells.items()):
        if test not in RS_TESTS or layout not in DECISION_LAYOUTS or position != "matched":
            continue
        mean = float(sub[sub["method"] == candidate]["value"].mean())
        if not math.isfinite(mean):  # not scored in this cell (a partial run)
            continue
        against = {c: compare(differences(sub, candidate, c), rng) for c in controls_of(candidate)}
        rows.append(
            {"test": test, "layout": layout, "neuron": neuron, "mean": mean, "against": against,
             "holds": mean >= 0.5 and all(c.beats() for c in against.values())}
        )  # fmt: skip
    return pd.DataFrame(rows)


def probe_indices(path: Path | None, layer: str = PROBE_LAYER) -> pd.DataFrame:
    """Per backbone: the part-specificity and position-tolerance indices of ``layer`` (empty without a probe)."""
    if path is None or not Path(path).is_file():
        return pd.DataFrame(columns=[PSI, PTI])
    probe = pd.read_csv(path)
    probe = probe[probe["layer"] == layer].set_index("backbone")
    return probe[[PSI, PTI]].astype(float)


def chosen_arm(probe: pd.DataFrame, present: Sequence[str]) -> str | None:
    """The arm with the highest mean part-specificity over its seeds (upper-bound arms excluded), among the
    backbones with values: chosen by the probe alone, never by attribution results."""
    have = probe[probe.index.isin(present)]
    arms = have.groupby(have.index.map(arm_of))[PSI].mean()
    arms = arms[~arms.index.isin(UPPER_BOUND_ARMS)]
    return None if arms.empty else str(arms.idxmax())


def best_baseline(sub: pd.DataFrame, baselines: Sequence[str]) -> str:
    means = sub[sub["method"].isin(baselines)].groupby("method")["value"].mean()
    return str(means.idxmax())


def advantage_columns(frame: pd.DataFrame, method: str, opponent: str | Sequence[str], position: str) -> np.ndarray:
    """The advantage of ``method`` per fit × (cell, pair) column of one backbone: over ``opponent`` (a label), or over
    the best of several labels per cell (by mean). ``[fits, columns]``."""
    blocks = []
    for (test, layout, pos, _), sub in sorted(cells_of(frame).items()):
        if test not in DOSE_TESTS or layout not in DECISION_LAYOUTS or pos != position:
            continue
        other = opponent if isinstance(opponent, str) else best_baseline(sub, opponent)
        blocks.append(differences(sub, method, other))
    return np.concatenate(blocks, axis=1) if blocks else np.zeros((0, 0))


def slope_interval(
    x: np.ndarray, advantage: list[np.ndarray], rng: np.random.Generator, n_boot: int = SLOPE_BOOT
) -> tuple[float, float, float, float]:
    """OLS slope of the per-backbone mean advantage on ``x`` and its bootstrap interval over backbones, fits within
    each backbone, and the (cell, pair) columns (one draw for every backbone: the same stimuli); and the share of
    resamples where the slope was undefined (every drawn backbone at one x), left out."""
    means = np.array([a.mean() for a in advantage])
    slope = float(np.polyfit(x, means, 1)[0])
    cols = advantage[0].shape[1]
    slopes, undefined = [], 0
    for _ in range(n_boot):
        pick = rng.integers(0, len(x), len(x))
        column = rng.integers(0, cols, cols)
        xs = x[pick]
        if np.ptp(xs) == 0:
            undefined += 1
            continue
        ys = [advantage[b][rng.integers(0, advantage[b].shape[0], advantage[b].shape[0])][:, column].mean()
              for b in pick]  # fmt: skip
        slopes.append(np.polyfit(xs, ys, 1)[0])
    tail = (1 - SLOPE_CONFIDENCE) / 2
    low, high = np.quantile(slopes, [tail, 1 - tail])
    return slope, float(low), float(high), undefined / n_boot


def dose_response(
    frame: pd.DataFrame, probe: pd.DataFrame, method: str, baselines: Sequence[str], rng: np.random.Generator
) -> tuple[pd.DataFrame, dict]:
    """Per backbone: x (matched: the part-specificity index; mismatched: × position tolerance) and the advantage
    over the best single-image baseline and over the co-location control; and the four slopes with intervals."""
    backbones = [b for b in sorted(set(frame["backbone"])) if b in probe.index]
    rows, adv = [], {}
    for b in backbones:
        sub = frame[frame["backbone"] == b]
        for position in POSITIONS:
            x = probe.loc[b, PSI] * (probe.loc[b, PTI] if position == "mismatched" else 1.0)
            for against, opponent in (("baseline", list(baselines)), ("colocation", coloc_of(method))):
                a = advantage_columns(sub, method, opponent, position)
                adv.setdefault((position, against), []).append(a)
                boot = crossed_bootstrap(a, rng, 2000)
                low, high = np.quantile(boot, [0.025, 0.975])
                rows.append({"backbone": b, "position": position, "against": against, "x": float(x),
                             "advantage": float(a.mean()), "low": float(low), "high": float(high)})  # fmt: skip
    table = pd.DataFrame(rows)
    slopes = {}
    for (position, against), a in adv.items():
        x = table[(table["position"] == position) & (table["against"] == against)]["x"].to_numpy()
        if len(set(a_.shape[1] for a_ in a)) == 1 and len(x) >= 3:
            slopes[(position, against)] = slope_interval(x, a, rng)
    return table, slopes


def dose_figure(table: pd.DataFrame, slopes: dict, method: str, path: Path) -> Path:
    """Two panels (matched: against the part-specificity index; mismatched: against index × position tolerance):
    each backbone's advantage over the best single-image baseline and over the co-location control (95 % intervals)
    and the OLS lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for ax, position in zip(axes, POSITIONS):
        for against, marker in (("baseline", "o"), ("colocation", "s")):
            t = table[(table["position"] == position) & (table["against"] == against)]
            ax.errorbar(t["x"], t["advantage"], yerr=[t["advantage"] - t["low"], t["high"] - t["advantage"]],
                        fmt=marker, capsize=3, label=f"over the best {against}" if against == "baseline"
                        else "over the co-location control")  # fmt: skip
            if (position, against) in slopes and len(t):
                s = slopes[(position, against)][0]
                xs = np.linspace(t["x"].min(), t["x"].max(), 2)
                ax.plot(xs, t["advantage"].mean() + s * (xs - t["x"].mean()), "--", color="grey", lw=1)
        ax.axhline(0, color="black", lw=0.6)
        ax.set_xlabel("part-specificity index" + (" × position tolerance" if position == "mismatched" else ""))
        ax.set_ylabel(f"SPS advantage of {method}")
        ax.set_title(f"{position} positions")
        ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def undefined_rates(frame: pd.DataFrame) -> pd.DataFrame:
    """The share of undefined maps (scored 0) per backbone × method on the SPS tests."""
    sps = frame[frame["test"].isin(DOSE_TESTS) & frame["undefined"].notna()]
    return sps.groupby(["backbone", "method"])["undefined"].mean().unstack("method")


def held_out_r(workdir: Path) -> dict[str, float]:
    """Mean held-out r of the readouts per backbone (over its fits), from the units' records."""
    out: dict[str, list[float]] = {}
    for meta in Path(workdir, "values").glob("*/*.json"):
        r = json.loads(meta.read_text()).get("held_out_r", {})
        out.setdefault(meta.parent.name, []).extend(float(v) for v in r.values())
    return {b: float(np.mean(v)) for b, v in out.items()}


def own_control_table(frame: pd.DataFrame, candidates: Sequence[str], rng: np.random.Generator) -> str:
    """Each candidate against its own control (the shared weighting's effect) on the SPS tests of the decision
    layouts: per test × layout × position, the mean pooled Δ over the neurons and how many neurons it is above
    (below) at p < 0.01."""
    keys = [(t, lay, pos) for t in DOSE_TESTS for lay in DECISION_LAYOUTS for pos in POSITIONS]
    lines = ["| candidate | " + " | ".join(f"{t}, {lay}, {pos}" for t, lay, pos in keys) + " |",
             "|---" * (len(keys) + 1) + "|"]  # fmt: skip
    for c in candidates:
        own = controls_of(c)[0]
        row = []
        for t, lay, pos in keys:
            r = per_neuron(frame, rng, t, lay, pos, c, own)
            means = [x.mean for x in r.values() if math.isfinite(x.mean)]
            up = sum(x.beats() for x in r.values())
            down = sum(x.mean < 0 and x.p < ALPHA for x in r.values())
            row.append(f"{np.mean(means):+.3f} ({up}↑ {down}↓)" if means else "–")
        lines.append(f"| {c} | " + " | ".join(row) + " |")
    return "\n".join(lines)


DEFAULT = "PB (product, dimension, layer)"
CORRESPONDENCE = "PB (product, correspondence, layer)"
NEURONS = ("limbs", "head", "body", "head_and_limbs")


def cell(frame: pd.DataFrame, test: str, layout: str, position: str, neuron: str) -> pd.DataFrame:
    f = frame
    return f[(f["test"] == test) & (f["layout"] == layout) & (f["position"] == position) & (f["neuron"] == neuron)]


def per_neuron(frame, rng, test, layout, position, a, b) -> dict[str, Comparison]:
    """``a`` against ``b`` per neuron in one test × layout × position (pooled over the frame's units × pairs)."""
    return {n: compare(differences(cell(frame, test, layout, position, n), a, b), rng) for n in NEURONS}


def listed(results: dict[str, Comparison]) -> str:
    return "; ".join(f"{n} {c.text()}" for n, c in results.items())


def predictions(
    frame: pd.DataFrame, rng: np.random.Generator, arm: str | None, goal: dict, slopes: dict, v1: str = "insilico-v1"
) -> list[tuple]:
    """The pre-registered predictions 1–7 (on ``v1``, the shipped ``insilico-v1``) and 9–12, each as
    ``(number, what was predicted, what was measured, holds / falsified / neither)``. ``goal``: candidate → whether
    it met rule 1 (and rules 1 + 2) on the chosen arm; ``slopes``: the default's dose-response slopes."""
    f = frame[frame["backbone"] == v1]
    out = []
    r = per_neuron(f, rng, "reference SPS", "pixel", "matched", DEFAULT, "grad_cam")
    ok = all(c.low > 0 for c in r.values())
    out.append((1, "default > Grad-CAM on reference SPS, pixel, matched, all 4 neurons (99 % interval above 0)",
                listed(r), "holds" if ok else "falsified"))  # fmt: skip
    r = per_neuron(f, rng, "reference SPS", "pixel", "mismatched", DEFAULT, "PB (own, layer)")
    k = sum(c.beats() for c in r.values())
    out.append((2, "at mismatched positions the default does not beat its own control on reference SPS (pixel) in "
                "2 or more neurons", listed(r) + f" (beats in {k})", "holds" if k < 2 else "falsified"))  # fmt: skip
    gains = {
        n: float(cell(f, "reference SPS", "beside", "matched", n).query("method == @DEFAULT")["value"].mean()
                 - cell(f, "reference SPS", "pixel", "matched", n).query("method == @DEFAULT")["value"].mean())
        for n in NEURONS
    }  # fmt: skip
    k = sum(g >= 0.05 for g in gains.values())
    out.append((3, "the default's matched reference SPS is ≥ 0.05 higher in beside than in pixel in ≥ 3 of 4 neurons",
                ", ".join(f"{n} {g:+.3f}" for n, g in gains.items()), "holds" if k >= 3 else "falsified"))  # fmt: skip
    r = per_neuron(f, rng, "driver SPS", "pixel", "matched", DEFAULT, "colocation (layer)")
    k = sum(c.beats() for c in r.values())
    out.append((4, "pixel, matched: the default does not beat co-location on driver SPS in ≥ 2 of 4 neurons "
                "(falsified if it beats it in ≥ 3)", listed(r) + f" (beats in {k})",
                "holds" if k <= 2 else "falsified"))  # fmt: skip
    drv = f[f["test"] == "driver SPS"]
    rates = drv.groupby("method")["undefined"].mean()
    singles = [m for m in rates.index if not m.startswith(("PB ", "colocation", "chance"))]
    d, worst = float(rates.get(DEFAULT, math.nan)), float(rates[singles].max()) if singles else math.nan
    verdict5 = "falsified" if d < 0.02 else "holds" if d >= 0.05 and worst <= 0.01 else "neither (not confirmed)"
    out.append((5, "the default's undefined driver maps ≥ 5 %, every single-image baseline's ≤ 1 % (falsified below "
                "2 %)", f"default {100 * d:.1f} %, baselines at most {100 * worst:.1f} %", verdict5))  # fmt: skip
    if "repainted" in set(f["layout"]):
        diffs = {
            n: float(cell(f, "driver SPS", "pixel", "matched", n).query("method == @DEFAULT")["value"].mean()
                     - cell(f, "driver SPS", "repainted", "matched", n).query("method == @DEFAULT")["value"].mean())
            for n in NEURONS
        }  # fmt: skip
        lower = sum(v < 0 for v in diffs.values())
        mean = float(np.mean(list(diffs.values())))
        verdict6 = "falsified" if lower >= 3 else "holds" if mean > 0 else "neither (not confirmed)"
        out.append((6, "the default's matched driver SPS is higher with pixel than with repainted copies (mean over "
                    "neurons; falsified if lower in ≥ 3)", ", ".join(f"{n} {v:+.3f}" for n, v in diffs.items())
                    + f" (mean {mean:+.3f})", verdict6))  # fmt: skip
    met = [c for c, (rule1, _) in goal.items() if rule1]
    out.append((7, "no candidate meets rule 1 on insilico-v1", "meeting rule 1: " + (", ".join(met) or "none"),
                "holds" if not met else "falsified"))  # fmt: skip
    for number, key, text in (
        (9, ("matched", "baseline"), "the default's matched slope over the best baseline > 0, interval above 0"),
        (10, ("mismatched", "baseline"), "the default's mismatched slope over the best baseline: interval includes 0"),
    ):
        if key in slopes:
            s, lo, hi, _ = slopes[key]
            holds = lo > 0 if number == 9 else lo <= 0 <= hi
            falsified = not holds if number == 9 else lo > 0
            verdict = "holds" if holds else "falsified" if falsified else "neither (not confirmed)"
            out.append((number, text, f"{s:+.3f} [{lo:+.3f}, {hi:+.3f}]", verdict))
    on_arm = frame[frame["backbone"].map(arm_of) == arm]
    r = per_neuron(on_arm, rng, "reference SPS", "pixel", "mismatched", CORRESPONDENCE, DEFAULT)
    k = sum(c.beats() for c in r.values())
    out.append((11, "correspondence (product, layer) beats the default on reference SPS, pixel, mismatched, in ≥ 3 of "
                "4 neurons (on the chosen arm)", listed(r) + f" (beats in {k})",
                "holds" if k >= 3 else "falsified"))  # fmt: skip
    met = [c for c, (rule1, both) in goal.items() if both]
    out.append((12, "no candidate meets rules 1 and 2 on the chosen arm", "meeting both: " + (", ".join(met) or "none"),
                "holds" if not met else "falsified"))  # fmt: skip
    return out


def report(frame: pd.DataFrame, args: argparse.Namespace, pairwise: Sequence[str], baselines: Sequence[str]) -> list:
    """The pooled blocks for docs/benchmarks.md: per backbone, the rule on the chosen arm, undefined rates, the
    dose-response (table, slopes, figure)."""
    import shared_parts

    rng = np.random.default_rng(0)
    frame = frame[frame["method"] != shared_parts.CHANCE]
    probe = probe_indices(args.probe)
    backbones = sorted(set(frame["backbone"]))
    arm = chosen_arm(probe, backbones)
    candidates = [m for m in pairwise if not shared_parts.is_control(m)]
    r = held_out_r(args.workdir)
    blocks = [
        f"### Shared parts (repaired), pooled: {len(backbones)} backbones × fits {sorted(set(frame['fit']))} × pair "
        f"seeds {sorted(set(frame['pair_seed']))}, {args.pairs} pairs per pair set, layout, position and pair seed, "
        f"layouts {', '.join(sorted(set(frame['layout'])))}, `insilico_cnn` {args.layer} + ridge",
        "| backbone | arm | part-specificity (block3) | position tolerance | held-out r (mean) | units |\n"
        "|---|---|---|---|---|---|\n"
        + "\n".join(
            f"| {b} | {arm_of(b)} | {probe[PSI].get(b, math.nan):.3f} | {probe[PTI].get(b, math.nan):.3f} | "
            f"{r.get(b, math.nan):.2f} | {frame[frame['backbone'] == b]['fit'].nunique()} fits |"
            for b in backbones
        ),
    ]
    if arm is None:
        blocks.append("No probe indices for these backbones: no arm is chosen, the rule is not applied.")
    else:
        on_arm = frame[frame["backbone"].map(arm_of) == arm]
        cells = cells_of(on_arm)
        blocks.append(
            f"**The rule on the chosen arm, `{arm}`** (highest mean block3 part-specificity index of the probe, the "
            f"upper-bound arms {', '.join(UPPER_BOUND_ARMS)} excluded; units: its weights × fits, crossed with the "
            "pairs; 99 % intervals, two-sided bootstrap p)"
        )
        decided: dict[str, tuple[bool, bool]] = {}
        summary = ["| candidate | rule 1: cells won (of 32) | rule 2: RS cells held (of 16) | meets the goal |",
                   "|---|---|---|---|"]  # fmt: skip
        details = []
        for c in candidates:
            goal = goal_cells(cells, c, baselines, rng)
            rs = rs_rule(cells, c, rng)
            if goal.empty or rs.empty:
                summary.append(f"| {c} | not scored | not scored | – |")
                continue
            rule1 = bool(len(goal) == 32 and goal["all"].all())
            met = bool(rule1 and len(rs) == 16 and rs["holds"].all())
            decided[c] = (rule1, met)
            summary.append(f"| {c} | {int(goal['all'].sum())} | {int(rs['holds'].sum())} | {'yes' if met else 'no'} |")
            details += [
                f"**{c}, rule 1** (Δ to the strongest opponent; beaten: opponents beaten at p < {ALPHA})",
                "| test | layout | position | neuron | candidate | strongest opponent | Δ [99 % CI], p | beaten |\n"
                "|---|---|---|---|---|---|---|---|\n"
                + "\n".join(
                    f"| {g.test} | {g.layout} | {g.position} | {g.neuron} | {g.candidate:.3f} | {g.strongest} "
                    f"{g.opponent:.3f} | {g.comparison.text()} | {g.beaten}/{g.opponents} |"
                    for g in goal.itertuples()
                ),
                f"**{c}, rule 2** (reference sensitivity at matched positions: mean ≥ 0.5, and Δ to the own and the "
                "co-location control)",
                "| test | layout | neuron | mean | against the controls | holds |\n|---|---|---|---|---|---|\n"
                + "\n".join(
                    f"| {g.test} | {g.layout} | {g.neuron} | {g.mean:.2f} | "
                    + "; ".join(f"{k}: {v.text()}" for k, v in g.against.items())
                    + f" | {'yes' if g.holds else 'no'} |"
                    for g in rs.itertuples()
                ),
            ]
        blocks += [
            "\n".join(summary),
            f"**The shared weighting against its own control on `{arm}`** (mean over the 4 neurons of the pooled Δ "
            f"on piece-level SPS; in brackets, the neurons where the candidate is above ↑ or below ↓ its own control "
            f"at p < {ALPHA})",
            own_control_table(on_arm, candidates, rng),
            *details,
        ]
    rates = undefined_rates(frame)
    blocks += [
        "**Undefined maps** (no positive relevance on the driving parts; scored 0), share of the SPS maps per "
        "backbone and method",
        "| backbone | "
        + " | ".join(rates.columns)
        + " |\n|---" * 1
        + "|---" * len(rates.columns)
        + "|\n"
        + "\n".join(f"| {b} | " + " | ".join(f"{100 * v:.1f} %" for v in row) + " |" for b, row in rates.iterrows()),
    ]
    default_slopes: dict = {}
    if len(probe):
        figures = getattr(args, "figures", None) or (
            Path(args.workdir) if args.no_write else Path(__file__).resolve().parents[1] / "docs" / "figures"
        )
        for c in candidates:
            table, slopes = dose_response(frame, probe, c, baselines, rng)
            if table.empty:
                continue
            if c == DEFAULT:
                default_slopes = slopes
            stem = re.sub(r"[^a-z0-9]+", "-", c.lower()).strip("-")
            fig = dose_figure(table, slopes, c, figures / f"dose-response-{stem}.png")
            blocks += [
                f"**Dose-response of {c}** (advantage on piece-level SPS, driver + reference + decoy, pixel + beside, "
                "undefined maps as 0; 95 % intervals over fits × pairs)",
                "| backbone | position | x | over the best baseline | over co-location |\n|---|---|---|---|---|\n"
                + "\n".join(
                    f"| {b} | {pos} | {g['x'].iloc[0]:.3f} | "
                    + " | ".join(
                        f"{t.advantage:+.3f} [{t.low:+.3f}, {t.high:+.3f}]"
                        for t in g.sort_values("against").itertuples()
                    )
                    + " |"
                    for (b, pos), g in table.groupby(["backbone", "position"])
                ),
                "Slopes (OLS over backbones; 95 % bootstrap interval over backbones, fits and pairs): "
                + "; ".join(
                    f"{pos}, over the {'best baseline' if a == 'baseline' else 'co-location control'}: "
                    f"{s:+.3f} [{lo:+.3f}, {hi:+.3f}]" + (f" ({100 * u:.0f} % undefined resamples)" if u else "")
                    for (pos, a), (s, lo, hi, u) in sorted(slopes.items())
                )
                + f". Figure: `{fig}`.",
            ]
    if arm is not None and DEFAULT in candidates:
        rows = predictions(frame, rng, arm, decided, default_slopes)
        blocks += [
            "**The pre-registered predictions** (1–7 on `insilico-v1`, 9–12 on the zoo; 8 is read off the probe)",
            "| # | predicted | measured | outcome |\n|---|---|---|---|\n"
            + "\n".join(f"| {n} | {what} | {measured} | {outcome} |" for n, what, measured, outcome in rows),
        ]
    return blocks


def main(argv: Sequence[str] | None = None) -> None:
    import shared_parts

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("runs/benchmark-shared-parts"))
    parser.add_argument("--probe", type=Path, help="probe.csv of benchmarks/probe_backbones.py")
    parser.add_argument("--figures", type=Path, help="where the figures go (default docs/figures; --no-write: workdir)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    frame = pd.concat([pd.read_csv(p) for p in sorted(Path(args.workdir, "values").glob("*/*.csv"))])
    args.layer = "block3"
    args.pairs = json.loads(next(Path(args.workdir, "values").glob("*/*.json")).read_text())["settings"]["pairs"]
    methods = sorted(set(frame["method"]) - {shared_parts.CHANCE})
    pairwise = [m for m in methods if m in shared_parts.PATHS]
    baselines = [m for m in methods if m not in shared_parts.PATHS]
    shared_parts.print_and_append("\n\n".join(report(frame, args, pairwise, baselines)) + "\n", not args.no_write)


if __name__ == "__main__":
    main()
