"""The plain-language reading of ``summary.csv``: who won each metric, by how much, and whether beyond noise.

Pure functions of the summary rows (method × image × metric mean ± sem), so every
sentence the report prints is derived from the numbers. A lead is *beyond noise* when it
is larger than the combined standard error of the two means, ``sqrt(sem_a² + sem_b²)``.
Every method whose label starts with ``parallel_backprop`` (``parallel_backprop``,
``parallel_backprop#2`` …) is a pairwise method and is compared with the best
*single-image baseline* (the best of the other methods) on each metric and image.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

PAIRWISE_PREFIX = "parallel_backprop"

# Metric families by (base) name; a ``quantus_`` prefix and a ``#n`` suffix are ignored.
FAMILIES: dict[str, tuple[str, ...]] = {
    "localisation": ("pointing_game", "relevance_mass", "relevance_rank"),
    "faithfulness": ("deletion", "insertion", "faithfulness_correlation"),
    "complexity": ("gini", "sparseness"),
    "randomisation": ("randomisation",),
}
HEADLINE_FAMILIES = ("localisation", "faithfulness")


@dataclass(frozen=True)
class Score:
    """One row of ``summary.csv``."""

    method: str
    image: str
    metric: str
    mean: float
    sem: float
    n: int
    higher_is_better: bool

    @classmethod
    def from_row(cls, row: Mapping[str, str]) -> "Score":
        """Parse a CSV row (strings; empty → NaN; ``higher_is_better`` ``True``/``False``)."""
        return cls(row["method"], row["image"], row["metric"], _float(row["mean"]), _float(row["sem"]),
                   int(float(row["n"] or 0)), str(row["higher_is_better"]).strip().lower() in ("true", "1"))

    @property
    def finite(self) -> bool:
        return math.isfinite(self.mean)


def _float(text: str | float | None) -> float:
    try:
        return float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan


def is_pairwise(method: str) -> bool:
    """Whether ``method`` is a parallel_backprop variant."""
    return method.startswith(PAIRWISE_PREFIX)


def metric_family(metric: str) -> str:
    """``localisation``, ``faithfulness``, ``complexity``, ``randomisation`` or ``other``."""
    base = metric.split("#")[0].removeprefix("quantus_")
    return next((f for f, names in FAMILIES.items() if base in names), "other")


def arrow(higher_is_better: bool) -> str:
    return "↑" if higher_is_better else "↓"


def combined_sem(a: Score, b: Score) -> float:
    """``sqrt(sem_a² + sem_b²)`` (NaN when either is undefined)."""
    return math.hypot(a.sem, b.sem) if math.isfinite(a.sem) and math.isfinite(b.sem) else math.nan


@dataclass(frozen=True)
class Contest:
    """All methods' scores on one metric and one image, best first (finite means only)."""

    metric: str
    image: str
    higher_is_better: bool
    ranking: tuple[Score, ...]

    @property
    def winner(self) -> Score:
        return self.ranking[0]

    @property
    def runner_up(self) -> Score | None:
        return self.ranking[1] if len(self.ranking) > 1 else None

    @property
    def best(self) -> list[str]:
        """Every method whose mean equals the best mean (ties share the win)."""
        return [s.method for s in self.ranking if s.mean == self.winner.mean]

    def lead(self) -> float:
        """How much better the winner is than the runner-up (≥ 0; NaN without a runner-up)."""
        return abs(self.winner.mean - self.runner_up.mean) if self.runner_up else math.nan

    def beyond_noise(self) -> bool | None:
        """Whether the lead exceeds the combined sem; None when that sem is undefined or there is no runner-up."""
        if self.runner_up is None:
            return None
        noise = combined_sem(self.winner, self.runner_up)
        return None if not math.isfinite(noise) else self.lead() > noise

    def ranks(self) -> dict[str, int]:
        """Competition ranks (1 = best; equal means share a rank)."""
        out: dict[str, int] = {}
        for i, s in enumerate(self.ranking):
            out[s.method] = out[self.ranking[i - 1].method] if i and s.mean == self.ranking[i - 1].mean else i + 1
        return out

    @property
    def title(self) -> str:
        return f"{self.metric} {arrow(self.higher_is_better)} ({self.image} maps)"


def contests(scores: Iterable[Score]) -> list[Contest]:
    """One :class:`Contest` per (metric, image) with at least one finite mean, in first-appearance order."""
    groups: dict[tuple[str, str], list[Score]] = {}
    for s in scores:
        groups.setdefault((s.metric, s.image), []).append(s)
    out = []
    for (metric, image), group in groups.items():
        higher = group[0].higher_is_better
        finite = sorted((s for s in group if s.finite), key=lambda s: -s.mean if higher else s.mean)
        if finite:
            out.append(Contest(metric, image, higher, tuple(finite)))
    return out


@dataclass(frozen=True)
class Comparison:
    """A pairwise method against the best single-image baseline on one contest.

    ``diff`` > 0 means the pairwise method is better (in the metric's direction).
    """

    contest: Contest
    method: Score
    baseline: Score

    @property
    def diff(self) -> float:
        d = self.method.mean - self.baseline.mean
        return d if self.contest.higher_is_better else -d

    @property
    def noise(self) -> float:
        return combined_sem(self.method, self.baseline)

    @property
    def outcome(self) -> str:
        """``better``, ``worse`` or ``level``."""
        return "better" if self.diff > 0 else "worse" if self.diff < 0 else "level"

    def beyond_noise(self) -> bool | None:
        return None if not math.isfinite(self.noise) else abs(self.diff) > self.noise


def versus_baseline(contest: Contest, method: str) -> Comparison | None:
    """``method`` against the best non-pairwise method of ``contest``; None if either is missing."""
    mine = next((s for s in contest.ranking if s.method == method), None)
    baseline = next((s for s in contest.ranking if not is_pairwise(s.method)), None)
    return Comparison(contest, mine, baseline) if mine and baseline else None


def mean_ranks(cs: Sequence[Contest]) -> list[tuple[str, float, int]]:
    """``(method, mean rank, contests counted)`` over the contests of ``cs`` with at least two methods
    (a method alone has nothing to rank against), best (lowest mean rank) first."""
    totals: dict[str, list[int]] = {}
    for c in contested(cs):
        for method, rank in c.ranks().items():
            totals.setdefault(method, []).append(rank)
    out = [(m, sum(r) / len(r), len(r)) for m, r in totals.items()]
    return sorted(out, key=lambda t: (t[1], -t[2]))


def contested(cs: Sequence[Contest]) -> list[Contest]:
    """The contests with at least two finite scores."""
    return [c for c in cs if c.runner_up is not None]


def ordinal(k: int) -> str:
    suffix = "th" if 10 <= k % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(k % 10, "th")
    return f"{k}{suffix}"


def _fmt(x: float) -> str:
    return f"{x:.3g}" if math.isfinite(x) else "–"


def _ms(s: Score) -> str:
    return f"{_fmt(s.mean)} ± {_fmt(s.sem)}" if math.isfinite(s.sem) else _fmt(s.mean)


def _names(methods: Sequence[str]) -> str:
    return methods[0] if len(methods) == 1 else ", ".join(methods[:-1]) + f" and {methods[-1]}"


def contest_sentence(c: Contest) -> str:
    """Who won ``c``, and whether the lead over the runner-up is beyond noise."""
    w, r = c.winner, c.runner_up
    if r is None:
        return f"{c.title}: only {w.method} has a score ({_ms(w)}), so there is nothing to compare."
    if len(c.best) > 1:
        return f"{c.title}: {_names(c.best)} tie at {_fmt(w.mean)}."
    head = f"{c.title}: {w.method} is best ({_ms(w)}), ahead of {r.method} ({_ms(r)}) by {_fmt(c.lead())}"
    verdict = c.beyond_noise()
    if verdict is None:
        return head + "; the sem is undefined (fewer than 2 values), so it cannot be told whether this is beyond noise."
    noise = combined_sem(w, r)
    if verdict:
        return head + f", more than the combined sem ({_fmt(noise)}): a clear lead."
    return head + f", within the combined sem ({_fmt(noise)}): the difference is within noise."


def comparison_sentence(cmp: Comparison) -> str:
    """How a parallel_backprop variant compares with the best single-image baseline on one contest."""
    c, m, b = cmp.contest, cmp.method, cmp.baseline
    head = f"{c.title}: {m.method} {_ms(m)} vs {b.method} {_ms(b)}"
    if cmp.outcome == "level":
        return head + ": level."
    verdict = cmp.beyond_noise()
    size = f"{cmp.outcome} by {_fmt(abs(cmp.diff))}"
    if verdict is None:
        return head + f": {size} (sem undefined, noise cannot be judged)."
    return head + (f": {size}, beyond noise (combined sem {_fmt(cmp.noise)})." if verdict else
                   f": {size}, within noise (combined sem {_fmt(cmp.noise)}).")


@dataclass(frozen=True)
class Tally:
    """How one pairwise method fared against the best baseline over every contest."""

    method: str
    better: int
    better_clear: int
    worse: int
    worse_clear: int
    level: int

    @property
    def total(self) -> int:
        return self.better + self.worse + self.level

    def sentence(self) -> str:
        return (f"Against the best single-image baseline, {self.method} is better on {self.better} of {self.total} "
                f"metric × image results ({self.better_clear} beyond noise), worse on {self.worse} "
                f"({self.worse_clear} beyond noise)" + (f" and level on {self.level}" if self.level else "") + ".")


def tally(comparisons: Sequence[Comparison], method: str) -> Tally:
    """Count ``method``'s wins, losses and draws (and the clear ones) in ``comparisons``."""
    mine = [c for c in comparisons if c.method.method == method]

    def count(outcome: str, clear: bool = False) -> int:
        return sum(c.outcome == outcome and (not clear or bool(c.beyond_noise())) for c in mine)

    return Tally(method, count("better"), count("better", True), count("worse"), count("worse", True), count("level"))


@dataclass(frozen=True)
class PairwiseReading:
    """One parallel_backprop variant: its overall rank, its tally, and its comparisons (with one sentence each)."""

    method: str
    rank: str
    tally: str
    comparisons: list[Comparison]

    @property
    def sentences(self) -> list[str]:
        return [comparison_sentence(c) for c in self.comparisons]


@dataclass(frozen=True)
class Reading:
    """Everything the report says about who won: headline bullets, per-metric and per-variant sentences."""

    headline: list[str]
    per_metric: list[str]
    pairwise: list[PairwiseReading]
    contests: list[Contest]


def family_sentence(family: str, cs: Sequence[Contest]) -> str:
    """Who won a metric family, by mean rank over its metric × image results."""
    mine = [c for c in contested(cs) if metric_family(c.metric) == family]
    if not mine:
        return f"{family.capitalize()}: no {family} metric compared two or more methods in this run."
    standings = mean_ranks(mine)
    best = [m for m, r, _ in standings if r == standings[0][1]]
    metrics = _names(list(dict.fromkeys(c.metric for c in mine)))
    images = _names(list(dict.fromkeys(c.image for c in mine)))
    who = f"{_names(best)} tie" if len(best) > 1 else f"{best[0]} wins"
    outright = [c for c in mine if c.winner.method in best and len(c.best) == 1]
    return (f"{family.capitalize()}: {who} (mean rank {standings[0][1]:.1f} among {len(standings)} methods over "
            f"{metrics} on {images} maps; best on {len(outright)} of {len(mine)}, "
            f"{sum(bool(c.beyond_noise()) for c in outright)} of them beyond noise).")


def pairwise_rank_sentence(method: str, cs: Sequence[Contest]) -> str:
    """Where a parallel_backprop variant ranks among all methods, by mean rank over every contest."""
    standings = mean_ranks(cs)
    ranks = {m: (r, n) for m, r, n in standings}
    if method not in ranks:
        return f"{method} has no score that another method was also scored on."
    rank, counted = ranks[method]
    place = 1 + sum(r < rank for _, r, _ in standings)
    return (f"{method} ranks {ordinal(place)} of {len(standings)} methods (mean rank {rank:.1f} over "
            f"{counted} metric × image result{'s' if counted != 1 else ''}).")


def read_pairwise(method: str, cs: Sequence[Contest]) -> PairwiseReading:
    """How ``method`` ranks overall and compares with the best single-image baseline on each contest."""
    comparisons = [cmp for c in cs if (cmp := versus_baseline(c, method)) is not None]
    if not comparisons:
        return PairwiseReading(method, pairwise_rank_sentence(method, cs),
                               "No single-image baseline was scored, so there is nothing to compare it with.", [])
    return PairwiseReading(method, pairwise_rank_sentence(method, cs), tally(comparisons, method).sentence(),
                           comparisons)


def read_summary(scores: Sequence[Score]) -> Reading:
    """The whole reading of a summary: headline, per-metric sentences and parallel_backprop comparisons."""
    cs = contests(scores)
    if not cs:
        return Reading(["No metric produced a finite score, so there is no winner to report."], [], [], [])
    pairwise = [read_pairwise(m, cs) for m in dict.fromkeys(s.method for s in scores) if is_pairwise(m)]
    headline = [family_sentence(f, cs) for f in HEADLINE_FAMILIES]
    headline += [f"{p.rank} {p.tally}" for p in pairwise] or ["No parallel_backprop method in this run."]
    return Reading(headline, [contest_sentence(c) for c in cs], pairwise, cs)
