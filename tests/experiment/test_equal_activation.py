"""The comparison at equal train activation and the censored compute to reach it, on hand-made numbers."""

from __future__ import annotations

import math

import pytest
import torch

from sharedattr.experiment.synthesis_outputs import EqualActivation, add_equal_activation
from sharedattr.synthesis.evaluation import steps_to_reach


def test_steps_to_reach_is_the_first_step_at_or_above_the_target_else_censored():
    history = torch.tensor([[0.1, 0.2, 0.9], [0.5, 0.3, 0.1], [0.6, 0.35, 0.2]])  # [steps, seeds]
    assert steps_to_reach(history, torch.tensor([0.4, 0.9, 0.5])) == ([1, 3, 0], [True, False, True])
    assert steps_to_reach(history, torch.tensor([0.5, 0.3, 0.95])) == ([1, 1, 3], [True, True, False])
    with pytest.raises(ValueError, match="targets"):
        steps_to_reach(history, torch.tensor([0.4, 0.9]))


def test_passes_count_a_censored_seed_at_the_full_run():
    item = EqualActivation("ga", "egg", "n0", [4, 100], [True, False], [1.0, 2.0], torch.zeros(2, 1, 2, 2), 100, 2.0)
    assert item.passes(0) == 5 and item.passes(1) == 100


def _row(neuron, seed, evaluator, relative, passes, reached, seconds):
    role = "train" if evaluator == "train" else "cross"
    return {
        "neuron": neuron,
        "synthesizer": "ga",
        "matched_to": "egg",
        "seed": seed,
        "evaluator": evaluator,
        "role": role,
        "relative": relative,
        "passes": passes,
        "reached": reached,
        "seconds": seconds,
    }


def test_the_summary_gains_the_matched_relative_and_the_censored_compute():
    """Four neuron × seed items, one never reached (counted at GA's full 100 passes): the median passes is exact
    (fewer than half censored), the censoring rate is 1/4, and compute_to_equal is the median of GA's seconds to
    reach ÷ EGG's seconds for the neuron."""
    equal = []
    for (neuron, seed), (passes, reached) in {
        ("a", 0): (10, True),
        ("a", 1): (30, True),
        ("b", 0): (20, True),
        ("b", 1): (100, False),
    }.items():
        seconds = passes * 0.01  # GA: 1 s for its 100 steps
        equal.append(_row(neuron, seed, "train", 1.0, passes, reached, seconds))
        equal.append(_row(neuron, seed, "x", 0.5 if neuron == "a" else 0.25, passes, reached, seconds))
    scores = [{"synthesizer": "egg", "neuron": n, "wall_s": wall} for n, wall in (("a", 0.5), ("b", 1.0))]
    summary = [
        {"synthesizer": "egg", "evaluator": "train"},
        {"synthesizer": "egg", "evaluator": "x"},
        {"synthesizer": "ga", "evaluator": "x"},
    ]
    add_equal_activation(summary, equal, scores)
    train, cross, ga = summary
    assert train["equal_activation_by"] == cross["equal_activation_by"] == "ga" and "equal_activation_by" not in ga
    assert train["relative_at_equal_train"] == pytest.approx(1.0)
    assert cross["relative_at_equal_train"] == pytest.approx(0.375)
    assert train["steps_to_equal"] == cross["steps_to_equal"] == 25.0  # median of 10, 20, 30, 100
    assert train["censored_rate"] == 0.25
    ratios = [0.1 / 0.5, 0.3 / 0.5, 0.2 / 1.0, 1.0 / 1.0]  # GA's seconds to reach ÷ EGG's per neuron
    assert train["compute_to_equal"] == pytest.approx(sorted(ratios)[1] / 2 + sorted(ratios)[2] / 2)
    assert math.isfinite(cross["compute_to_equal"])


def test_the_printed_summary_shows_the_comparison_only_where_there_is_one():
    from sharedattr.experiment.synthesis_outputs import format_synthesis_summary

    base = {"role": "train", "mean_relative": 1.0, "sem_relative": 0.1, "n": 4, "wall_s_per_neuron": 1.0}
    base |= {"forward_calls": 3.0, "backward_calls": 2.0, "denoiser_calls": 0.0, "evaluator": "train"}
    plain = [base | {"synthesizer": "ga"}]
    assert "censored" not in format_synthesis_summary(plain)
    equal = {"equal_activation_by": "ga", "relative_at_equal_train": 0.9, "steps_to_equal": 25.0}
    equal |= {"censored_rate": 0.25, "compute_to_equal": 0.5}
    text = format_synthesis_summary([*plain, base | {"synthesizer": "egg"} | equal])
    assert "passes (censored)" in text and "25 (25%)" in text and "0.900" in text
