"""Paired statistics for the verdict: is one method's lead over another beyond noise?

Every method is scored on the same driver/reference pairs, so two methods are compared on
their per-pair values (``results.csv``): a two-sided Wilcoxon signed-rank test of the paired
differences (zero differences discarded, ``zero_method="wilcox"``) at :data:`ALPHA`, and the
mean paired difference with a :data:`CONFIDENCE` confidence interval from the t distribution.
Differences are taken in the metric's better direction, so > 0 means the first method is better.
Pure functions of numbers; nothing here reads a file.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats

ALPHA = 0.05
CONFIDENCE = 0.95
TEST_NAME = "Wilcoxon signed-rank test"

PairKey = tuple[str, str, str, str]
"""A driver/reference pair of ``results.csv``: ``(neuron, driver, reference, rank)``."""
ScoreKey = tuple[str, str, str]
"""``(method, image, metric)``."""
PairValues = dict[ScoreKey, dict[PairKey, float]]
"""Per-pair values of every method × image × metric."""

Status = Literal["beyond", "within", "level", "too_few", "no_pairs"]


def mean_sem(values: Iterable[float]) -> tuple[float, float, int]:
    """The mean, its standard error (sample std with n − 1, over √n; NaN below 2 values) and the count of the
    finite ``values`` (NaN mean for none): the one summary every table of the package uses."""
    finite = [float(v) for v in values if math.isfinite(v)]
    n = len(finite)
    if not n:
        return math.nan, math.nan, 0
    mean = sum(finite) / n
    sem = math.sqrt(sum((v - mean) ** 2 for v in finite) / (n - 1)) / math.sqrt(n) if n > 1 else math.nan
    return mean, sem, n


def min_nonzero(alpha: float = ALPHA) -> int:
    """The fewest nonzero differences for which the exact two-sided Wilcoxon test can reach p < ``alpha``.

    Its smallest p-value over ``n`` differences is ``2 / 2**n`` (every difference of one sign).
    """
    n = 1
    while 2.0 / 2**n >= alpha:
        n += 1
    return n


def to_float(text: str | float | None) -> float:
    """A CSV cell as a float: empty, missing or unparsable → NaN."""
    try:
        return float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan


def pair_values(rows: Iterable[Mapping[str, str]]) -> PairValues:
    """Index the rows of ``results.csv`` by (method, image, metric), then pair; unparsable values are NaN."""
    out: PairValues = {}
    for r in rows:
        key = (r["neuron"], r["driver"], r["reference"], str(r.get("rank", "")))
        out.setdefault((r["method"], r["image"], r["metric"]), {})[key] = to_float(r["value"])
    return out


def aligned(values: PairValues, a: ScoreKey, b: ScoreKey) -> tuple[list[float], list[float]]:
    """The values of ``a`` and ``b`` on every pair either has (NaN where one lacks the pair), in the same order."""
    va, vb = values.get(a, {}), values.get(b, {})
    keys = list(dict.fromkeys([*va, *vb]))
    return [va.get(k, math.nan) for k in keys], [vb.get(k, math.nan) for k in keys]


@dataclass(frozen=True)
class PairedTest:
    """A paired comparison of a first method with a second one (differences > 0: the first is better).

    ``n`` pairs had a finite value for both (``dropped`` did not); ``nonzero`` of them differ;
    ``p`` is NaN when the test was not run (no pairs, or too few nonzero differences).
    """

    n: int
    dropped: int
    nonzero: int
    mean_diff: float
    ci_low: float
    ci_high: float
    p: float

    @property
    def status(self) -> Status:
        """``beyond`` or ``within`` noise, ``level`` (every difference zero), ``too_few`` pairs, or ``no_pairs``."""
        if self.n == 0:
            return "no_pairs"
        if self.nonzero == 0:
            return "level"
        if self.nonzero < min_nonzero():
            return "too_few"
        return "beyond" if self.p < ALPHA else "within"

    @property
    def significant(self) -> bool | None:
        """Whether the difference is beyond noise; None when it could not be tested."""
        return {"beyond": True, "within": False, "level": False}.get(self.status)


def confidence_interval(diffs: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The t-distribution confidence interval of the mean of ``diffs``; NaN with fewer than 2 values."""
    if len(diffs) < 2:
        return math.nan, math.nan
    mean, se = float(diffs.mean()), float(diffs.std(ddof=1)) / math.sqrt(len(diffs))
    half = float(stats.t.ppf((1 + confidence) / 2, len(diffs) - 1)) * se
    return mean - half, mean + half


def paired_test(first: Sequence[float], second: Sequence[float], higher_is_better: bool = True) -> PairedTest:
    """Test ``first`` against ``second`` (same pairs, same order); pairs with a non-finite value are dropped."""
    a, b = np.asarray(first, dtype=float), np.asarray(second, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired values differ in length: {a.shape} vs {b.shape}")
    ok = np.isfinite(a) & np.isfinite(b)
    diffs = (a - b)[ok] if higher_is_better else (b - a)[ok]
    n, nonzero = int(ok.sum()), int(np.count_nonzero(diffs))
    mean = float(diffs.mean()) if n else math.nan
    low, high = confidence_interval(diffs)
    if n == 0 or nonzero < min_nonzero():
        p = 1.0 if n and not nonzero else math.nan
    else:
        p = float(stats.wilcoxon(diffs, zero_method="wilcox", alternative="two-sided").pvalue)
    return PairedTest(n, len(a) - n, nonzero, mean, low, high, p)
