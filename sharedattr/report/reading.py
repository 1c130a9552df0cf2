"""The plain-language reading of a run's scores: who won each metric, by how much, and whether beyond noise.

Pure functions of the summary rows (method × image × metric mean ± sem), what the components
declare (:class:`~sharedattr.report.components.Components`: pairwise methods, metric families)
and the per-pair values of ``results.csv`` (:data:`~sharedattr.report.stats.PairValues`), so
every sentence the report prints is derived from the numbers. Rankings use the means; a lead is
*beyond noise* when a paired Wilcoxon signed-rank test on the pairs both methods scored gives
p < 0.05 (:mod:`sharedattr.report.stats`). Every pairwise method is compared with the best
*single-image baseline* (the best-ranked method that is not pairwise) on each metric and image that ranks
single-image methods.

A *pairwise-only* metric (one that declares the score every single-image method gets by construction,
``single_image_value``, as ``reference_sensitivity`` does: 0) ranks the pairwise methods only: single-image methods
are left out of its contests, of the family verdicts and of every comparison. On it, and on every metric of the
``sharing`` family, a pairwise method is also compared with *each* of its controls the run scored
(:meth:`~sharedattr.report.components.Components.controls_of`: its own control, e.g. ``parallel_backprop#2`` with
``variant = "own"``, and a control of every pairwise method, e.g. the co-location control ``colocation``), each with
its own paired test; on a pairwise-only metric with those controls only, never with a single-image method.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from sharedattr.report.components import Components
from sharedattr.report.stats import (
    ALPHA,
    CONFIDENCE,
    TEST_NAME,
    PairedTest,
    PairValues,
    aligned,
    min_nonzero,
    paired_test,
)
from sharedattr.runtime.run_files import SUMMARY

HEADLINE_FAMILIES = ("sharing", "localisation", "faithfulness")
ALWAYS_READ = ("localisation", "faithfulness")
"""Families the headline reads even when the run scored none of their metrics (to say so)."""


@dataclass(frozen=True)
class Score:
    """One row of ``summary.csv`` (:data:`~sharedattr.runtime.run_files.SUMMARY`: its fields are the table's
    columns)."""

    method: str
    image: str
    metric: str
    mean: float
    sem: float
    n: int
    higher_is_better: bool

    @classmethod
    def from_row(cls, row: Mapping[str, str]) -> Score:
        """Parse a CSV row of text as :data:`~sharedattr.runtime.run_files.SUMMARY` types it (an empty mean or sem
        → NaN; ``higher_is_better`` ``True``/``False``); :class:`~sharedattr.runtime.run_files.RunFolderError`
        for a cell not of its column's type."""
        (parsed,) = SUMMARY.parse([row])
        return cls(**parsed)

    @property
    def finite(self) -> bool:
        return math.isfinite(self.mean)


def arrow(higher_is_better: bool) -> str:
    return "↑" if higher_is_better else "↓"


def paired_comparison(values: PairValues | None, first: Score, second: Score) -> PairedTest | None:
    """The paired test of ``first`` against ``second`` (same metric and image); None without per-pair values."""
    if values is None:
        return None
    a, b = aligned(values, (first.method, first.image, first.metric), (second.method, second.image, second.metric))
    return paired_test(a, b, first.higher_is_better)


@dataclass(frozen=True)
class Contest:
    """All methods' scores on one metric and one image, best first (finite means only), and the paired test
    of the winner against the runner-up (None without a runner-up or without per-pair values)."""

    metric: str
    image: str
    higher_is_better: bool
    ranking: tuple[Score, ...]
    test: PairedTest | None = None
    single_image_value: float | None = None
    """For a pairwise-only metric: the score every single-image method gets by construction (they are not ranked);
    None for a metric that ranks every method."""

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
        """Whether the paired test finds the winner's lead beyond noise; None when it could not be tested."""
        return self.test.significant if self.test else None

    def ranks(self) -> dict[str, int]:
        """Competition ranks (1 = best; equal means share a rank)."""
        out: dict[str, int] = {}
        for i, s in enumerate(self.ranking):
            out[s.method] = out[self.ranking[i - 1].method] if i and s.mean == self.ranking[i - 1].mean else i + 1
        return out

    @property
    def pairwise_only(self) -> bool:
        """Whether only pairwise methods are ranked (single-image methods score a constant by construction)."""
        return self.single_image_value is not None

    @property
    def title(self) -> str:
        return f"{self.metric} {arrow(self.higher_is_better)} ({self.image} maps)"


def contests(
    scores: Iterable[Score], values: PairValues | None = None, components: Components | None = None
) -> list[Contest]:
    """One :class:`Contest` per (metric, image) with at least one finite mean, in first-appearance order. On a
    pairwise-only metric (as ``components`` declare it) only the pairwise methods are ranked."""
    components = components or Components()
    groups: dict[tuple[str, str], list[Score]] = {}
    for s in scores:
        groups.setdefault((s.metric, s.image), []).append(s)
    out = []
    for (metric, image), group in groups.items():
        higher = group[0].higher_is_better
        constant = components.metrics[metric].single_image_value if components.pairwise_only(metric) else None
        if constant is not None:
            group = [s for s in group if components.is_pairwise(s.method)]
        ranking = sorted((s for s in group if s.finite), key=lambda s: -s.mean if higher else s.mean)
        if ranking:
            test = paired_comparison(values, ranking[0], ranking[1]) if len(ranking) > 1 else None
            out.append(Contest(metric, image, higher, tuple(ranking), test, constant))
    return out


BASELINE = "the best single-image baseline"
CONTROLLED_FAMILIES = ("sharing",)
"""The families on whose metrics a pairwise method is compared with each of its controls (beside the best
single-image baseline); on a pairwise-only metric of any family it is compared with its controls alone."""


@dataclass(frozen=True)
class Comparison:
    """A pairwise method against another method on one contest: the best single-image baseline, or one of its
    controls (``control``), with their paired test.

    ``diff`` > 0 means the pairwise method is better (in the metric's direction), as does the test's.
    ``against``: how the reading names the other side: :data:`BASELINE`, or the control's phrase
    (:meth:`~sharedattr.report.components.Components.control_phrase`: ``its own control parallel_backprop#2``,
    ``the co-location control colocation``).
    """

    contest: Contest
    method: Score
    baseline: Score
    test: PairedTest | None = None
    against: str = BASELINE
    control: bool = False

    @property
    def diff(self) -> float:
        d = self.method.mean - self.baseline.mean
        return d if self.contest.higher_is_better else -d

    @property
    def outcome(self) -> str:
        """``better``, ``worse`` or ``level`` (by the means)."""
        return "better" if self.diff > 0 else "worse" if self.diff < 0 else "level"

    def beyond_noise(self) -> bool | None:
        return self.test.significant if self.test else None


def versus_baseline(
    contest: Contest, method: str, components: Components, values: PairValues | None = None
) -> Comparison | None:
    """``method`` against the best-ranked single-image method of ``contest``; None if either is missing (always on
    a pairwise-only contest, which ranks no single-image method)."""
    mine = next((s for s in contest.ranking if s.method == method), None)
    baseline = next((s for s in contest.ranking if not components.is_pairwise(s.method)), None)
    if mine is None or baseline is None:
        return None
    return Comparison(contest, mine, baseline, paired_comparison(values, mine, baseline))


def versus_controls(
    contest: Contest, method: str, components: Components, values: PairValues | None = None
) -> list[Comparison]:
    """``method`` against each of its controls that ``contest`` ranks, in the run's order, each with its paired
    test and named by its phrase; empty without a score of ``method`` or a control (a control has no control)."""
    mine = next((s for s in contest.ranking if s.method == method), None)
    if mine is None:
        return []
    scored = {s.method: s for s in contest.ranking}
    return [
        Comparison(
            contest,
            mine,
            scored[label],
            paired_comparison(values, mine, scored[label]),
            components.control_phrase(method, label),
            True,
        )
        for label in components.controls_of(method)
        if label in scored
    ]


def compared_with_controls(contest: Contest, components: Components) -> bool:
    """Whether pairwise methods are compared with their controls on ``contest``: a pairwise-only metric, or one of
    the :data:`CONTROLLED_FAMILIES`."""
    return contest.pairwise_only or components.family(contest.metric) in CONTROLLED_FAMILIES


def comparisons_on(
    contest: Contest, method: str, components: Components, values: PairValues | None = None
) -> list[Comparison]:
    """Every comparison of ``method`` on ``contest``: with the best single-image baseline (none on a pairwise-only
    contest), then, on a sharing or pairwise-only metric, with each of its controls (:func:`versus_controls`)."""
    out = [cmp] if (cmp := versus_baseline(contest, method, components, values)) is not None else []
    if compared_with_controls(contest, components):
        out += versus_controls(contest, method, components, values)
    return out


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


def fmt(x: float) -> str:
    """Three significant digits; ``–`` for NaN."""
    return f"{x:.3g}" if math.isfinite(x) else "–"


def p_value(p: float) -> str:
    """``0.031``, ``< 0.001``; ``–`` when not tested."""
    return "–" if not math.isfinite(p) else "< 0.001" if p < 0.001 else f"{p:.2g}"


def fmt_p(p: float) -> str:
    """``p = 0.031``, ``p < 0.001``."""
    text = p_value(p)
    return f"p {text}" if text.startswith("<") else f"p = {text}"


def _ms(s: Score) -> str:
    return f"{fmt(s.mean)} ± {fmt(s.sem)}" if math.isfinite(s.sem) else fmt(s.mean)


def _names(methods: Sequence[str]) -> str:
    return methods[0] if len(methods) == 1 else ", ".join(methods[:-1]) + f" and {methods[-1]}"


def effect(test: PairedTest) -> str:
    """``paired difference 0.2, 95% CI 0.1 to 0.3`` (the CI only where defined)."""
    ci = f", {CONFIDENCE:.0%} CI {fmt(test.ci_low)} to {fmt(test.ci_high)}" if math.isfinite(test.ci_low) else ""
    return f"paired difference {fmt(test.mean_diff)}{ci}"


def pairs_phrase(test: PairedTest) -> str:
    """``the 24 driver/reference pairs both methods scored`` (and how many were left out)."""
    text = f"the {test.n} driver/reference pair{'s' if test.n != 1 else ''} both methods scored"
    return text + (f" ({test.dropped} more left out: a value is missing or not finite)" if test.dropped else "")


def noise_phrase(test: PairedTest | None) -> str:
    """Whether a difference is beyond noise, with the test, its pairs, p and the effect size."""
    if test is None:
        return "noise cannot be judged: results.csv, with the per-pair values, is missing"
    status = test.status
    if status == "no_pairs":
        return "noise cannot be judged: no driver/reference pair has a finite value from both methods"
    if status == "level":
        return f"level on each of {pairs_phrase(test)} (p = 1)"
    if status == "too_few":
        return (
            f"too few pairs to test: {test.nonzero} nonzero difference{'s' if test.nonzero != 1 else ''} on "
            f"{pairs_phrase(test)}, and a two-sided {TEST_NAME} needs {min_nonzero()} to reach p < {ALPHA:g} "
            f"({effect(test)})"
        )
    word = "beyond noise" if status == "beyond" else "within noise"
    return f"{word} ({effect(test)}; {TEST_NAME} on {pairs_phrase(test)}; {fmt_p(test.p)})"


def only_pairwise_phrase(c: Contest) -> str:
    """`` (pairwise methods only: every single-image method scores 0 by construction)`` for a pairwise-only
    contest; empty otherwise."""
    if not c.pairwise_only:
        return ""
    return f" (pairwise methods only: every single-image method scores {fmt(c.single_image_value)} by construction)"


def contest_sentence(c: Contest) -> str:
    """Who won ``c``, and whether the lead over the runner-up is beyond noise."""
    w, r = c.winner, c.runner_up
    title = c.title + only_pairwise_phrase(c)
    if r is None:
        return f"{title}: only {w.method} has a score ({_ms(w)}), so there is nothing to compare."
    if len(c.best) > 1:
        return f"{title}: {_names(c.best)} tie at {fmt(w.mean)}."
    return (
        f"{title}: {w.method} is best ({_ms(w)}), ahead of {r.method} ({_ms(r)}) by {fmt(c.lead())}: "
        f"{noise_phrase(c.test)}."
    )


def comparison_sentence(cmp: Comparison) -> str:
    """How a pairwise method compares with the best single-image baseline (or one of its controls) on one
    contest."""
    c, m, b = cmp.contest, cmp.method, cmp.baseline
    other = cmp.against if cmp.control else b.method
    head = f"{c.title}: {m.method} {_ms(m)} vs {other} {_ms(b)}"
    size = "level by the means" if cmp.outcome == "level" else f"{cmp.outcome} by {fmt(abs(cmp.diff))}"
    return f"{head}: {size}; {noise_phrase(cmp.test)}."


def comparison_reading(cmp: Comparison) -> str:
    """A comparison's outcome in a few words: ``better, beyond noise``, ``worse, too few pairs to test`` …"""
    if cmp.outcome == "level":
        return "level"
    status = cmp.test.status if cmp.test else None
    noise = {
        "beyond": "beyond noise",
        "within": "within noise",
        "level": "level on every pair",
        "too_few": "too few pairs to test",
    }.get(status, "noise unknown")
    return f"{cmp.outcome}, {noise}"


def _where(comparisons: Sequence[Comparison]) -> tuple[str, ...]:
    """Each metric of ``comparisons`` with the images whose maps it compared, ``beyond noise`` where the paired test
    says so: ``("deletion (driver beyond noise, reference)", "gini (driver)")``."""
    images: dict[str, list[str]] = {}
    for cmp in comparisons:
        clear = " beyond noise" if cmp.beyond_noise() else ""
        images.setdefault(cmp.contest.metric, []).append(f"{cmp.contest.image}{clear}")
    return tuple(f"{metric} ({', '.join(shown)})" for metric, shown in images.items())


@dataclass(frozen=True)
class Tally:
    """How one pairwise method fared against one other side (the best baseline, or one of its controls) over every
    contest, and the comparisons it won, lost and drew."""

    method: str
    better: int
    better_clear: int
    worse: int
    worse_clear: int
    level: int
    untested: int
    against: str = BASELINE
    wins: tuple[str, ...] = ()
    losses: tuple[str, ...] = ()
    draws: tuple[str, ...] = ()

    @property
    def total(self) -> int:
        return self.better + self.worse + self.level

    def sentence(self, detail: bool = True) -> str:
        """The counts; with ``detail``, then the results it wins, loses and draws, by name."""
        untested = (
            (f"; {self.untested} of the {self.total} had too few pairs to test whether the difference is beyond noise")
            if self.untested
            else ""
        )
        counts = (
            f"Against {self.against}, {self.method} is better on {self.better} of {self.total} "
            f"metric × image results ({self.better_clear} beyond noise), worse on {self.worse} "
            f"({self.worse_clear} beyond noise)"
            + (f" and level on {self.level}" if self.level else "")
            + untested
            + "."
        )
        named = [
            f"it {verb} on {_names(list(items))}"
            for verb, items in (("wins", self.wins), ("loses", self.losses), ("draws", self.draws))
            if items
        ]
        return counts + (f" By metric (and image), {'; '.join(named)}." if named and detail else "")


def tally(comparisons: Sequence[Comparison], method: str, against: str = BASELINE, wording: str = "") -> Tally:
    """Count ``method``'s wins, losses and draws (and the clear ones) in its ``comparisons`` against ``against``
    (:data:`BASELINE` or a control's phrase, :attr:`Comparison.against`), and name each; ``wording``: how the
    sentence names the other side (default: ``against``)."""
    mine = [c for c in comparisons if c.method.method == method and c.against == against]

    def count(outcome: str, clear: bool = False) -> int:
        return sum(c.outcome == outcome and (not clear or bool(c.beyond_noise())) for c in mine)

    def named(outcome: str) -> tuple[str, ...]:
        return _where([c for c in mine if c.outcome == outcome])

    untested = sum(c.test is not None and c.test.status == "too_few" for c in mine)
    return Tally(
        method,
        count("better"),
        count("better", True),
        count("worse"),
        count("worse", True),
        count("level"),
        untested,
        wording or against,
        named("better"),
        named("worse"),
        named("level"),
    )


@dataclass(frozen=True)
class PairwiseReading:
    """One pairwise method: its overall rank, its tallies (against the best baseline, and on sharing and
    pairwise-only metrics against each of its controls), its comparisons (with one sentence each), and what it
    declares: whether it is a control (``control``) and the scope its own benchmarks established (``scope``)."""

    method: str
    rank: str
    tally: str
    comparisons: list[Comparison]
    control: str | None = None
    scope: str | None = None
    headline_tally: str = ""
    """The tally over the headline families' metrics only (sharing, localisation, faithfulness): the verdict's."""

    @property
    def sentences(self) -> list[str]:
        return [comparison_sentence(c) for c in self.comparisons]

    @property
    def scope_sentence(self) -> str:
        """``Scope: …`` (what its own benchmarks established, as the method declares it); empty without one."""
        return f"Scope: {self.scope}" if self.scope else ""

    @property
    def headline(self) -> str:
        """The verdict's line: what it wins and loses on (the headline families' metrics), then its declared
        scope."""
        return " ".join(t for t in (self.headline_tally or self.tally, self.scope_sentence) if t)


@dataclass(frozen=True)
class Reading:
    """Everything the report says about who won: headline bullets, per-metric and per-method sentences, and
    notes on what the reading could not resolve."""

    headline: list[str]
    per_metric: list[str]
    pairwise: list[PairwiseReading]
    contests: list[Contest]
    notes: list[str]


def family_sentence(family: str, cs: Sequence[Contest], components: Components) -> str:
    """Who won a metric family (as the metrics declare it), by mean rank over its metric × image results that rank
    every method; its pairwise-only metrics, which rank pairwise methods alone, get a sentence of their own
    (:func:`pairwise_only_sentence`)."""
    mine = [c for c in contested(cs) if components.family(c.metric) == family and not c.pairwise_only]
    aside = sorted({c.metric for c in cs if components.family(c.metric) == family and c.pairwise_only})
    left_out = (
        f" {_names(aside)} {'is' if len(aside) == 1 else 'are'} left out: every single-image method scores a "
        "constant on it by construction."
        if aside
        else ""
    )
    if not mine:
        return f"{family.capitalize()}: no {family} metric compared two or more methods in this run.{left_out}"
    standings = mean_ranks(mine)
    best = [m for m, r, _ in standings if r == standings[0][1]]
    metrics = _names(list(dict.fromkeys(c.metric for c in mine)))
    images = _names(list(dict.fromkeys(c.image for c in mine)))
    who = f"{_names(best)} tie" if len(best) > 1 else f"{best[0]} wins"
    outright = [c for c in mine if c.winner.method in best and len(c.best) == 1]
    return (
        f"{family.capitalize()}: {who} (mean rank {standings[0][1]:.1f} among {len(standings)} methods over "
        f"{metrics} on {images} maps; best on {len(outright)} of {len(mine)}, "
        f"{sum(bool(c.beyond_noise()) for c in outright)} of them beyond noise).{left_out}"
    )


def pairwise_rank_sentence(method: str, cs: Sequence[Contest]) -> str:
    """Where a pairwise method ranks among all methods, by mean rank over every contest that ranks every method
    (pairwise-only contests left out)."""
    standings = mean_ranks([c for c in cs if not c.pairwise_only])
    ranks = {m: (r, n) for m, r, n in standings}
    if method not in ranks:
        return f"{method} has no score that another method was also scored on."
    rank, counted = ranks[method]
    place = 1 + sum(r < rank for _, r, _ in standings)
    return (
        f"{method} ranks {ordinal(place)} of {len(standings)} methods (mean rank {rank:.1f} over "
        f"{counted} metric × image result{'s' if counted != 1 else ''}, every metric family)."
    )


def read_pairwise(
    method: str, cs: Sequence[Contest], components: Components, values: PairValues | None = None
) -> PairwiseReading:
    """How ``method`` ranks overall and compares with the best single-image baseline on each contest, and with each
    of its controls on each sharing or pairwise-only contest (:func:`comparisons_on`)."""
    comparisons = [cmp for c in cs for cmp in comparisons_on(c, method, components, values)]
    rank = pairwise_rank_sentence(method, cs)
    info = components.methods.get(method)
    control, scope = (info.control, info.scope) if info else (None, None)
    if control:
        scope = None  # a control's scope is that of the method it controls
    if not comparisons:
        return PairwiseReading(
            method,
            rank,
            " ".join(t for t in (nothing_to_compare(method, components), no_control_phrase(method, components)) if t),
            [],
            control,
            scope,
        )
    headline = [c for c in comparisons if components.family(c.contest.metric) in HEADLINE_FAMILIES]
    return PairwiseReading(
        method,
        rank,
        tallies(comparisons, method, components, detail=False),  # the detailed reading has a table of them
        comparisons,
        control,
        scope,
        tallies(headline, method, components) if headline else f"{method}: {NOT_IN_HEADLINE}",
    )


NOT_IN_HEADLINE = "no sharing, localisation or faithfulness metric compared it with another method."


def nothing_to_compare(method: str, components: Components) -> str:
    """Why ``method`` has no comparison: no single-image baseline was scored (and, for a method that is no control,
    no control of it)."""
    if components.control(method):
        return "No single-image baseline was scored, so there is nothing to compare it with."
    return "Neither a single-image baseline nor a control of it was scored, so there is nothing to compare it with."


def no_control_phrase(method: str, components: Components) -> str:
    """``parallel_backprop has no control in this run.`` for a method that is no control and has none among the
    run's methods (:meth:`~sharedattr.report.components.Components.controls_of`); empty otherwise."""
    if components.control(method) or components.controls_of(method):
        return ""
    return f"{method} has no control in this run."


def tallies(comparisons: Sequence[Comparison], method: str, components: Components, detail: bool = True) -> str:
    """``method``'s tally against the best baseline, then one against each of its controls (``Against its own
    control parallel_backprop#2, …``, ``Against the co-location control colocation, …``), then, for a method with
    no control in the run, a phrase that says so; with ``detail``, each names the results it wins, loses and
    draws."""
    sides = list(dict.fromkeys([BASELINE, *(c.against for c in comparisons)]))
    parts = [
        tally(comparisons, method, side).sentence(detail)
        for side in sides
        if any(c.against == side for c in comparisons)
    ]
    return " ".join([*parts, no_control_phrase(method, components)]).strip()


NO_PAIRWISE = "No pairwise method (one that explains a driver and its reference together) in this run."


def control_sentence(p: PairwiseReading, components: Components) -> str:
    """The verdict's line for a control: what it is, and that it is read as a control, not as a method."""
    of = [m for m in components.methods if p.method in components.controls_of(m)]
    for_whom = f" of {_names(of)}" if of else ""
    return f"{p.method} is the control{for_whom} ({p.control}): compare with it, do not rank it as a method."


def read_summary(
    scores: Sequence[Score], components: Components | None = None, values: PairValues | None = None
) -> Reading:
    """The whole reading: headline, per-metric sentences and every pairwise method against the best baseline.

    ``components`` says which methods are pairwise (and which are controls), each metric's family and whether it
    is pairwise-only (none declared: every method single-image, every metric ``other``); ``values`` are the
    per-pair values for the paired tests (None: noise cannot be judged). The headline gives each family's winner
    over the metrics that rank every method, then each pairwise method's wins and losses against the best
    single-image baseline and (on sharing and pairwise-only metrics) against each of its controls, with its declared
    scope; a control
    is named as one. It gives no overall rank: that is in :attr:`PairwiseReading.rank` for the detailed reading.
    """
    components = components or Components()
    methods = list(dict.fromkeys(s.method for s in scores))
    notes = components.notes(methods, list(dict.fromkeys(s.metric for s in scores)))
    cs = contests(scores, values, components)
    if not cs:
        return Reading(["No metric produced a finite score, so there is no winner to report."], [], [], [], notes)
    pairwise = [read_pairwise(m, cs, components, values) for m in methods if components.is_pairwise(m)]
    scored = {components.family(c.metric) for c in cs}
    headline = [family_sentence(f, cs, components) for f in HEADLINE_FAMILIES if f in scored or f in ALWAYS_READ]
    headline += [control_sentence(p, components) if p.control else p.headline for p in pairwise] or [NO_PAIRWISE]
    return Reading(headline, [contest_sentence(c) for c in cs], pairwise, cs, notes)
