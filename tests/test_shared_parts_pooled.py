"""benchmarks/shared_parts_pooled.py: the crossed bootstrap, the decision rule and the dose-response slope, on
hand-built values whose answers are known."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def pooled():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import shared_parts  # noqa: F401  (the pooled module reads its labels and controls)
        import shared_parts_pooled
    finally:
        sys.path.remove(str(BENCHMARKS))
    return shared_parts_pooled


def test_the_crossed_bootstrap_shares_one_pair_draw_across_units(pooled):
    # every unit has the same pair effects: resampling units changes nothing, only the pair draw varies
    d = np.tile(np.array([0.0, 1.0, 2.0, 3.0]), (3, 1))
    boot = pooled.crossed_bootstrap(d, np.random.default_rng(0), 4000)
    # one pair draw per resample: the spread is that of a mean of 4 draws from {0,1,2,3}: sd = 1.118 / 2
    assert boot.std() == pytest.approx(1.118 / 2, rel=0.05)
    # nested draws (a new pair draw per unit) would give sd 1.118 / sqrt(12): the crossed one is wider
    assert boot.std() > 1.5 * 1.118 / np.sqrt(12)
    # units that differ by a constant add their spread: units {−1, 0, +1} shift every pair
    shifted = d + np.array([[-1.0], [0.0], [1.0]])
    assert pooled.crossed_bootstrap(shifted, np.random.default_rng(0), 4000).std() > boot.std()


def test_compare_gives_the_mean_an_interval_and_a_two_sided_p(pooled):
    rng = np.random.default_rng(1)
    clear = pooled.compare(np.full((3, 20), 0.2) + rng.normal(0, 0.01, (3, 20)), rng)
    assert clear.mean == pytest.approx(0.2, abs=0.01) and clear.low > 0 and clear.p == 0 and clear.beats()
    assert "p < 2e-04" in clear.text()
    noise = pooled.compare(rng.normal(0, 1, (3, 20)), rng)
    assert noise.low < 0 < noise.high and noise.p > 0.01 and not noise.beats()


def frame_of(values: dict[str, float], tests, positions=("matched", "mismatched"), fits=(0, 1, 2), pairs=6):
    """A tidy frame: every method's value per cell, the same for each fit, plus per-pair noise."""
    rng = np.random.default_rng(0)
    rows = []
    for test in tests:
        for layout in ("pixel", "beside"):
            for position in positions:
                for neuron in ("limbs", "head", "body", "head_and_limbs"):
                    for fit in fits:
                        for pair in range(pairs):
                            for method, v in values.items():
                                rows.append(
                                    {"test": test, "layout": layout, "position": position, "neuron": neuron,
                                     "pair": f"p{pair}", "pair_seed": 7, "backbone": "b", "fit": fit,
                                     "method": method, "value": v + rng.normal(0, 0.01), "undefined": False}
                                )  # fmt: skip
    return pd.DataFrame(rows)


def test_rule_one_needs_every_opponent_beaten_in_every_cell(pooled):
    cand = "PB (product, dimension, layer)"
    values = {cand: 0.8, "saliency": 0.5, "grad_cam": 0.6, "colocation (layer)": 0.7}
    cells = pooled.cells_of(frame_of(values, pooled.GOAL_TESTS))
    goal = pooled.goal_cells(cells, cand, ["saliency", "grad_cam"], np.random.default_rng(0))
    assert len(goal) == 32 and goal["all"].all()
    assert set(goal["strongest"]) == {"colocation (layer)"}
    # the co-location control wins: no cell is won, though both single-image baselines are beaten
    cells = pooled.cells_of(frame_of(values | {"colocation (layer)": 0.9}, pooled.GOAL_TESTS))
    goal = pooled.goal_cells(cells, cand, ["saliency", "grad_cam"], np.random.default_rng(0))
    assert not goal["all"].any() and (goal["beaten"] == 2).all()


def test_rule_two_needs_half_the_share_and_both_controls_beaten(pooled):
    cand = "PB (product, dimension, layer)"
    values = {cand: 0.6, "PB (own, layer)": 0.0, "colocation (layer)": 0.1}
    cells = pooled.cells_of(frame_of(values, pooled.RS_TESTS, positions=("matched",)))
    rs = pooled.rs_rule(cells, cand, np.random.default_rng(0))
    assert len(rs) == 16 and rs["holds"].all()
    cells = pooled.cells_of(frame_of(values | {cand: 0.4}, pooled.RS_TESTS, positions=("matched",)))
    assert not pooled.rs_rule(cells, cand, np.random.default_rng(0))["holds"].any()  # 0.4 < 0.5


def test_the_arm_is_chosen_by_the_probe_and_never_the_upper_bound(pooled):
    probe = pd.DataFrame(
        {pooled.PSI: [0.3, 0.5, 0.6, 0.4, 0.9, 0.95], pooled.PTI: [0.5] * 6},
        index=["insilico-v1", "decorrelated-s0", "decorrelated-s1", "augmented-s0", "segmentation-s0",
               "segmentation-s1"],
    )  # fmt: skip
    assert pooled.chosen_arm(probe, list(probe.index)) == "decorrelated"
    assert pooled.chosen_arm(probe, ["insilico-v1", "augmented-s0"]) == "augmented"
    assert pooled.arm_of("augmented-s1") == "augmented" and pooled.arm_of("insilico-v1") == "insilico-v1"


def test_the_slope_and_its_interval_follow_the_backbones(pooled):
    rng = np.random.default_rng(0)
    x = np.array([0.1, 0.3, 0.5, 0.7])
    advantage = [0.5 * xi + rng.normal(0, 0.02, (3, 40)) for xi in x]  # slope 0.5
    slope, low, high, undefined = pooled.slope_interval(x, advantage, rng, 400)
    assert slope == pytest.approx(0.5, abs=0.05) and 0 < low < 0.5 < high
    flat = [rng.normal(0, 0.05, (3, 40)) for _ in x]
    _, low, high, _ = pooled.slope_interval(x, flat, rng, 400)
    assert low < 0 < high


def test_the_own_control_table_counts_the_neurons_above_and_below(pooled):
    cand, own = "PB (product, dimension, layer)", "PB (own, layer)"
    frame = frame_of({cand: 0.8, own: 0.5}, pooled.DOSE_TESTS)
    table = pooled.own_control_table(frame, [cand], np.random.default_rng(0))
    row = table.splitlines()[2]
    cells = [c.strip() for c in row.strip("|").split("|")[1:]]
    assert row.startswith(f"| {cand} |") and len(cells) == 12
    assert all(c.endswith("(4↑ 0↓)") and abs(float(c.split()[0]) - 0.3) < 0.01 for c in cells)
    frame = frame_of({cand: 0.5, own: 0.8}, pooled.DOSE_TESTS)
    assert pooled.own_control_table(frame, [cand], np.random.default_rng(0)).count("(0↑ 4↓)") == 12
