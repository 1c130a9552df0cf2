"""The sharing metrics on hand-made maps, and in a run with part ground truth."""

from __future__ import annotations

import math

import pytest
import torch

from sharedattr.metrics.sharing import ReferenceSensitivityMetric, SharedPartSelectivityMetric, erase
from sharedattr.plugin import AttributionBatch


def masks_2x4():
    """Images of 1 × 4 pixels: the head at pixel 0, the limbs at 1 and 2, background at 3."""
    head = torch.tensor([[[True, False, False, False]]])
    limbs = torch.tensor([[[False, True, True, False]]])
    return head, limbs


def batch(maps, shared, unshared, **kw):
    return AttributionBatch(
        torch.nn.Identity(),
        torch.rand(maps.shape[0], 1, *maps.shape[1:]),
        maps,
        torch.zeros(maps.shape[0], dtype=torch.long),
        shared,
        unshared_masks=unshared,
        **kw,
    )


def test_selectivity_is_the_share_on_shared_parts_of_the_driving_relevance():
    head, limbs = masks_2x4()  # limbs shared, head unshared
    metric = SharedPartSelectivityMetric()
    only_shared = torch.tensor([[[0.0, 1.0, 2.0, 5.0]]])  # background relevance does not count
    even = torch.tensor([[[1.0, 1.0, 1.0, 0.0]]])
    negative_head = torch.tensor([[[-3.0, 1.0, 1.0, 0.0]]])
    scores = [float(metric(batch(m, limbs, head))) for m in (only_shared, even, negative_head)]
    assert scores == [1.0, pytest.approx(2 / 3), 1.0]  # even spread: the area ratio, chance
    assert math.isnan(float(metric(batch(even, limbs, torch.zeros_like(head)))))  # nothing unshared: undefined


def test_a_single_image_map_is_insensitive_to_the_reference_by_construction():
    head, limbs = masks_2x4()
    shared = {"head": head, "limbs": limbs}
    b = batch(
        torch.rand(1, 1, 4),
        head | limbs,
        torch.zeros_like(head),
        shared_parts=shared,
        partner_parts=shared,
        partners=torch.rand(1, 1, 1, 4),
    )
    assert float(ReferenceSensitivityMetric()(b)) == 0.0


def partnered_batch(head, limbs, partner, explain_with):
    """A driver map (explain_with(partner)) whose pair shares head and limbs, re-explainable with other partners."""
    shared = {"head": head, "limbs": limbs}
    return batch(
        explain_with(partner),
        head | limbs,
        torch.zeros_like(head),
        shared_parts=shared,
        partner_parts=shared,
        partners=partner,
        explain_with_partners=explain_with,
    )


def test_reference_sensitivity_rewards_dropping_the_part_the_partner_lost():
    head, limbs = masks_2x4()
    partner = torch.tensor([[[[0.9, 0.8, 0.8, 0.2]]]])  # head and limbs on a background of 0.2

    def explain_with(partners):  # a map that shows a part only where the partner shows it
        present = (partners[:, 0] > 0.5).float()
        return torch.tensor([[[1.0, 1.0, 1.0, 0.0]]]) * present

    b = partnered_batch(head, limbs, partner, explain_with)
    assert float(ReferenceSensitivityMetric()(b)) == pytest.approx(1.0)  # each part dropped when erased
    erased = erase(partner, head, head | limbs, None)
    assert erased[0, 0, 0, 0] == pytest.approx(0.2) and torch.equal(erased[..., 1:], partner[..., 1:])


def test_a_run_scores_sharing_for_every_method(tiny_config, tiny_data, tmp_path):
    from sharedattr.config.validation import validate_experiment
    from sharedattr.experiment.run import run_experiment

    tiny_config["data"]["neuron_parts"] = str(tiny_data / "neuron_parts.json")
    tiny_config["selection"] = {"neurons": ["head_and_limbs", "body"], "drivers_per_neuron": 3}
    tiny_config["methods"] = ["parallel_backprop", "saliency"]
    tiny_config["metrics"] = ["shared_part_selectivity", "reference_sensitivity"]
    result = run_experiment(validate_experiment(tiny_config), tmp_path, progress=False)
    values = {(r["method"], r["metric"]): [] for r in result.rows}
    for r in result.rows:
        values[(r["method"], r["metric"])].append(r["value"])
    single = [v for v in values[("saliency", "reference_sensitivity")] if math.isfinite(v)]
    pairwise = [v for v in values[("parallel_backprop", "reference_sensitivity")] if math.isfinite(v)]
    assert single and all(v == 0.0 for v in single)
    assert pairwise and any(v != 0.0 for v in pairwise)
    assert any(math.isfinite(v) for v in values[("parallel_backprop", "shared_part_selectivity")])


def test_reference_sensitivity_weights_parts_by_share_and_can_score_one_part():
    head, limbs = masks_2x4()
    partner = torch.tensor([[[[0.9, 0.8, 0.8, 0.2]]]])

    def explain_with(partners):  # drops the head entirely when the partner lacks it; the limbs never change
        head_present = float(partners[0, 0, 0, 0] > 0.5)
        return torch.tensor([[[3.0 * head_present, 1.0, 0.0, 0.0]]])

    b = partnered_batch(head, limbs, partner, explain_with)
    # head share 0.75 → 0 when the head is erased; limbs share 0.25 → 0.25 when the limbs are: weighted 0.75, where
    # the unweighted mean of the two ratios would give 0.5
    assert float(ReferenceSensitivityMetric()(b)) == pytest.approx((0.75 - 0.0 + 0.25 - 0.25) / (0.75 + 0.25))
    assert float(ReferenceSensitivityMetric(parts=["head"])(b)) == pytest.approx(1.0)
    assert float(ReferenceSensitivityMetric(parts=["limbs"])(b)) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="unknown part.*torsoo.*head, limbs"):
        ReferenceSensitivityMetric(parts=["torsoo"])(b)


def test_a_metric_names_why_its_scores_are_undefined_once_for_all_methods():
    from sharedattr.attribution.engine import NamedMetric, warn_undefined
    from sharedattr.metrics.sharing import SharedPartSelectivityMetric

    named = NamedMetric("shared_part_selectivity", {}, SharedPartSelectivityMetric())
    nan = float("nan")
    scores = {
        ("saliency", named.label, "driver"): torch.tensor([0.5, nan]),
        ("grad_cam", named.label, "driver"): torch.tensor([nan, 0.2]),
        ("grad_cam", named.label, "reference"): torch.tensor([nan, nan]),
        ("saliency", "plain", "driver"): torch.tensor([nan, 1.0]),
        ("grad_cam", "plain", "driver"): torch.tensor([nan, 1.0]),
    }
    with pytest.warns(UserWarning) as caught:
        warn_undefined(scores, {named.label: named.undefined_when, "plain": None})
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2, messages
    assert messages[0].startswith(
        "metric shared_part_selectivity is undefined (NaN) for 1 of 2 driver maps of every method; "
        "2 of 2 reference maps of grad_cam (the image shows no driving part its partner lacks"
    )
    assert "plain is undefined (NaN) for 1 of 2 driver maps of every method (e.g. a deletion" in messages[1]

    class Plain:
        higher_is_better = True

    assert NamedMetric("plain", {}, Plain()).undefined_when is None
