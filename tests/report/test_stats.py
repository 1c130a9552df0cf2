"""The report's paired statistics (sharedattr.report.stats) on hand-made numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from sharedattr.report.stats import (
    aligned,
    confidence_interval,
    min_nonzero,
    pair_values,
    paired_test,
)


def test_a_clear_win_over_12_pairs_is_beyond_noise():
    a = [0.9 + 0.01 * i for i in range(12)]
    b = [0.6 + 0.005 * i for i in range(12)]
    t = paired_test(a, b)
    assert (t.n, t.dropped, t.nonzero) == (12, 0, 12)
    assert t.p == pytest.approx(2 / 2**12), "exact two-sided: every difference of one sign"
    assert t.status == "beyond" and t.significant is True
    diffs = np.subtract(a, b)
    assert t.mean_diff == pytest.approx(diffs.mean())
    half = sps.t.ppf(0.975, 11) * diffs.std(ddof=1) / math.sqrt(12)
    assert (t.ci_low, t.ci_high) == pytest.approx((diffs.mean() - half, diffs.mean() + half))
    assert t.ci_low < t.mean_diff < t.ci_high


def test_lower_is_better_flips_the_sign_of_the_difference():
    a, b = [0.2 + 0.01 * i for i in range(8)], [0.5 + 0.02 * i for i in range(8)]
    t = paired_test(a, b, higher_is_better=False)
    assert t.mean_diff > 0 and t.ci_low > 0, "a is better: lower values"
    assert paired_test(a, b, higher_is_better=True).mean_diff == pytest.approx(-t.mean_diff)


def test_a_tie_is_level_with_p_1():
    t = paired_test([0.5, 0.7, 0.1, 0.2, 0.3, 0.4, 0.9], [0.5, 0.7, 0.1, 0.2, 0.3, 0.4, 0.9])
    assert (t.n, t.nonzero, t.p, t.status, t.significant) == (7, 0, 1.0, "level", False)
    assert t.mean_diff == 0 and (t.ci_low, t.ci_high) == (0, 0)


def test_differences_of_both_signs_are_within_noise():
    diffs = [0.25 if i % 2 else -0.2 for i in range(12)]
    t = paired_test(diffs, [0.0] * 12)
    expected = sps.wilcoxon(diffs, zero_method="wilcox").pvalue
    assert t.p == pytest.approx(expected) and t.p > 0.05
    assert t.status == "within" and t.significant is False
    assert t.ci_low < 0 < t.ci_high


def test_four_pairs_are_too_few_to_test():
    t = paired_test([1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 0.0])
    assert (t.n, t.nonzero, t.status, t.significant) == (4, 4, "too_few", None)
    assert math.isnan(t.p), "not tested"
    assert t.mean_diff == pytest.approx(2.5) and math.isfinite(t.ci_low)


def test_zero_differences_do_not_count_towards_the_minimum():
    # 8 pairs but only 5 differ: the exact test cannot reach p < 0.05 (its smallest p is 2/32)
    t = paired_test([1, 2, 3, 4, 5, 0, 0, 0], [0] * 8)
    assert (t.n, t.nonzero, t.status) == (8, 5, "too_few")
    six = paired_test([1, 2, 3, 4, 5, 6, 0, 0], [0] * 8)
    assert six.status == "beyond" and six.p == pytest.approx(2 / 2**6)


def test_min_nonzero_is_six_for_alpha_005():
    assert min_nonzero() == 6 and min_nonzero(0.05) == 6
    assert min_nonzero(0.01) == 8  # 2 / 2**7 = 0.0156 ≥ 0.01 > 2 / 2**8


def test_nan_pairs_are_dropped_and_counted():
    a = [1.0, math.nan, 3.0, 4.0, math.inf, 6.0, 7.0, 8.0, 9.0]
    b = [0.0, 0.0, math.nan, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    t = paired_test(a, b)
    assert (t.n, t.dropped) == (6, 3)
    assert t.mean_diff == pytest.approx(np.mean([1, 4, 6, 7, 8, 9]))
    assert t.p == pytest.approx(2 / 2**6)


def test_no_finite_pair_and_a_single_pair():
    none = paired_test([math.nan, 1.0], [2.0, math.nan])
    assert (none.n, none.dropped, none.status, none.significant) == (0, 2, "no_pairs", None)
    assert math.isnan(none.mean_diff) and math.isnan(none.p)
    one = paired_test([2.0], [1.0])
    assert one.status == "too_few" and one.mean_diff == 1.0 and math.isnan(one.ci_low)
    assert all(math.isnan(x) for x in confidence_interval(np.array([1.0])))
    with pytest.raises(ValueError, match="differ in length"):
        paired_test([1.0, 2.0], [1.0])


def test_results_rows_are_paired_by_neuron_driver_reference_and_rank():
    def row(method, neuron, driver, value, rank="0"):
        return {
            "neuron": neuron,
            "driver": driver,
            "reference": "r",
            "rank": rank,
            "method": method,
            "image": "driver",
            "metric": "m",
            "value": value,
        }

    values = pair_values(
        [
            row("a", "n1", "d1", "1.5"),
            row("a", "n1", "d2", "nan"),
            row("a", "n2", "d1", "2"),
            row("b", "n2", "d1", "1"),
            row("b", "n1", "d1", "0.5"),
            row("b", "n1", "d1", "9", "1"),
            row("b", "n3", "d1", ""),
        ]
    )
    a, b = aligned(values, ("a", "driver", "m"), ("b", "driver", "m"))
    assert a[0] == 1.5 and b[0] == 0.5, "same (neuron, driver, reference, rank)"
    assert a[2] == 2.0 and b[2] == 1.0
    assert len(a) == len(b) == 5  # the union of pairs; a missing value is NaN
    t = paired_test(a, b)
    assert (t.n, t.dropped) == (2, 3)
    assert all(math.isnan(v) for v in aligned(values, ("a", "driver", "m"), ("zzz", "driver", "m"))[1])
