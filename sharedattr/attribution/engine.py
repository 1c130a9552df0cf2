"""Attribute every (neuron, driver, reference) pair with every method, and score every map with every metric.

This is the shared core of ``sharedattr run`` and :func:`sharedattr.compare`. It takes built
components: each method as a :class:`NamedMethod` (built once per model), each metric as a
:class:`NamedMetric`. Pairwise methods (:class:`~sharedattr.plugins.contracts.PairwiseAttribution`)
explain the driver and its reference together; the other
methods explain the driver alone and, with ``on_reference``, the reference alone too, for
the same neuron. Maps are reduced over channels to ``[P, H, W]``. The work is split into
items, one per method × block of ``batch_size`` pairs; each item's maps and its score vector
per (metric, image) are kept in a :class:`WorkStore`, so a repeated or interrupted run
recomputes only what is missing, and several ranks can share the items out
(:mod:`sharedattr.runtime.distributed`).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from sharedattr.data.pairs import IMAGES, PairImages
from sharedattr.plugins.contracts import AttributionBatch, is_pairwise, metric_family
from sharedattr.runtime.distributed import SINGLE, Ranks
from sharedattr.runtime.memory import bound_memory
from sharedattr.runtime.numerics import Pieces, alone_unless_thread_safe, replicate
from sharedattr.runtime.work_store import WorkStore, shape_validator, work_key
from sharedattr.selection.matching import Pair


@dataclass(eq=False)
class NamedMethod:
    """An attribution method of a run: its ``label`` (``saliency``, ``saliency#2`` …), its canonical ``spec``
    (the work items' identity) and ``factory(model) -> method`` (params validated once).

    :meth:`build` builds the method once per model and reuses it: the run's model gets one instance
    for every block, a randomised model (the randomisation check) its own.
    """

    label: str
    spec: dict[str, Any]
    factory: Callable[[nn.Module], Any]
    origin: dict[str, Any] = field(default_factory=dict)  # the plugin that provides it (Component.provenance)
    _built: weakref.WeakKeyDictionary = field(default_factory=weakref.WeakKeyDictionary, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def build(self, model: nn.Module) -> Any:
        """The method on ``model`` (built on first use; work items side by side each build on their own replica)."""
        with self._lock:
            method = self._built.get(model)
            if method is None:
                method = self._built[model] = self.factory(model)
        return method

    def pairwise(self, model: nn.Module) -> bool:
        """Whether the method explains pairs: read off its class when the factory is one, else off an instance."""
        return is_pairwise(self.factory) if isinstance(self.factory, type) else is_pairwise(self.build(model))


@dataclass(frozen=True)
class NamedMetric:
    """A built metric of a run: its ``label``, canonical ``spec`` and the metric itself, with its declared
    direction and family (:data:`~sharedattr.plugins.contracts.MetricFamily`)."""

    label: str
    spec: dict[str, Any]
    metric: Any
    origin: dict[str, Any] = field(default_factory=dict)  # the plugin that provides it (Component.provenance)

    @property
    def higher_is_better(self) -> bool:
        return bool(self.metric.higher_is_better)

    @property
    def family(self) -> str:
        return metric_family(self.metric)

    @property
    def undefined_when(self) -> str | None:
        """The metric's own account of when a score is NaN (``undefined_when``), None when it gives none."""
        reason = getattr(self.metric, "undefined_when", None)
        return reason if isinstance(reason, str) and reason else None


@dataclass
class ExplainSettings:
    """``on_reference``: run single-image methods on the reference too; ``reduce``: channel reduction
    (``sum`` or ``abs_sum``); ``batch_size``: pairs per attribution/metric batch; ``images_per_pass``: the
    images one pass of a path method may hold (:mod:`sharedattr.runtime.memory`); ``workers``: work items computed
    side by side, each on one thread and its own replica of the model and metrics (speed and memory only: the
    results are those of one worker, see :mod:`sharedattr.runtime.numerics`)."""

    on_reference: bool = True
    reduce: str = "sum"
    batch_size: int = 32
    device: torch.device | str = "cpu"
    images_per_pass: int | None = None  # from the memory budget (sharedattr.runtime.memory); None: unbounded
    workers: int = 1

    def build(self, method: NamedMethod, model: nn.Module) -> Any:
        """``method`` built on ``model``, told how many images one pass may hold."""
        return bound_memory(method.build(model), self.images_per_pass)


def reduce_channels(attributions: Tensor, how: str = "sum") -> Tensor:
    """Attributions ``[B, C, H, W]`` → maps ``[B, H, W]``: signed channel ``sum`` or ``abs_sum``."""
    if attributions.dim() == 3:
        return attributions
    if how == "sum":
        return attributions.sum(dim=1)
    if how == "abs_sum":
        return attributions.abs().sum(dim=1)
    raise ValueError(f"unknown channel reduction {how!r}; use 'sum' or 'abs_sum'")


def attribute_chunk(
    method: Any, x_drv: Tensor, x_ref: Tensor, targets: Tensor, *, on_reference: bool, reduce: str
) -> tuple[Tensor, Tensor | None]:
    """One batch of pairs → driver and reference maps ``[b, H, W]`` (reference None when not computed)."""
    if is_pairwise(method):
        result = method.attribute((x_drv, x_ref), target=targets)
        return reduce_channels(result[0].detach(), reduce), reduce_channels(result[1].detach(), reduce)
    drv = attribute_single(method, x_drv, targets, reduce)
    return drv, attribute_single(method, x_ref, targets, reduce) if on_reference else None


def attribute_single(method: Any, images: Tensor, targets: Tensor, reduce: str) -> Tensor:
    """A single-image method's maps ``[b, H, W]`` of ``images`` ``[b, C, H, W]`` for neurons ``targets`` ``[b]``."""
    return reduce_channels(method.attribute(images.clone().requires_grad_(True), target=targets).detach(), reduce)


def attribute_pairs(method: Any, images: PairImages, targets: Tensor, settings: ExplainSettings) -> dict[str, Tensor]:
    """Maps of P ≥ 1 pairs by a built ``method``: ``{"driver": [P, H, W], "reference": [P, H, W]}`` (reference
    when computed), on the CPU."""
    drv, ref = [], []
    device = settings.device
    step = settings.batch_size
    if settings.images_per_pass is not None:  # the pairs of one call fit the budget too (a pairwise call holds both)
        step = max(1, min(step, settings.images_per_pass // (2 if is_pairwise(method) else 1)))
    for i in range(0, len(targets), step):
        sl = slice(i, i + step)
        d, r = attribute_chunk(
            method,
            images.drivers[sl].to(device),
            images.references[sl].to(device),
            targets[sl].to(device),
            on_reference=settings.on_reference,
            reduce=settings.reduce,
        )
        drv.append(d.cpu())
        if r is not None:
            ref.append(r.cpu())
    out = {"driver": torch.cat(drv)}
    if ref:
        out["reference"] = torch.cat(ref)
    return out


def score_maps(
    metric: Any,
    model: nn.Module,
    images: PairImages,
    which: str,
    maps: Tensor,
    targets: Tensor,
    explain: Callable[[slice, nn.Module], Tensor] | None,
    explain_with: Callable[[slice, Tensor], Tensor] | None,
    settings: ExplainSettings,
) -> Tensor:
    """One metric on the P maps ``[P, H, W]`` of image ``which`` of the pairs → scores ``[P]`` on the CPU."""
    device = settings.device

    def on(t: Tensor | None, sl: slice) -> Tensor | None:
        return None if t is None else t[sl].to(device)

    values = []
    for i in range(0, len(targets), settings.batch_size):
        sl = slice(i, i + settings.batch_size)
        batch = AttributionBatch(
            model,
            images.images(which)[sl].to(device),
            maps[sl].to(device),
            targets[sl].to(device),
            on(images.masks(which), sl),
            explain=(lambda other, sl=sl: explain(sl, other).to(device)) if explain is not None else None,
            unshared_masks=on(images.unshared(which), sl),
            shared_parts={k: v[sl].to(device) for k, v in images.parts(which).items()},
            partner_parts={k: v[sl].to(device) for k, v in images.parts(_other(which)).items()},
            partners=images.partners(which)[sl].to(device),
            explain_with_partners=(lambda partners, sl=sl: explain_with(sl, partners).to(device))
            if explain_with is not None
            else None,
        )
        values.append(metric(batch).detach().float().cpu())
    return torch.cat(values) if values else torch.empty(0)


def _other(which: str) -> str:
    return "reference" if which == "driver" else "driver"


@dataclass
class Explained:
    """Maps per method label (``{"driver": [P, H, W], "reference": …}``) and scores per
    (method, metric, image) ``[P]``; ``higher_is_better`` per metric label; ``seconds`` per
    method label: wall time to make all its maps (recorded when they were computed, summed over
    blocks); ``metric_seconds`` per (metric label, method label): wall time to score those maps (NaN
    for items stored by a version that did not time them); ``computed_by_rank``: stored items (maps
    and score vectors) each rank computed in this call."""

    maps: dict[str, dict[str, Tensor]]
    scores: dict[tuple[str, str, str], Tensor]
    higher_is_better: dict[str, bool]
    seconds: dict[str, float] = field(default_factory=dict)
    metric_seconds: dict[tuple[str, str], float] = field(default_factory=dict)
    computed_by_rank: list[int] = field(default_factory=lambda: [0])


def work_blocks(n_pairs: int, batch_size: int) -> list[slice]:
    """The pairs' blocks: consecutive slices of ``batch_size`` pairs (the last may be shorter)."""
    return [slice(i, min(i + batch_size, n_pairs)) for i in range(0, n_pairs, batch_size)]


def explain_pairs(
    model: nn.Module,
    pairs: Sequence[Pair],
    images: PairImages,
    methods: Sequence[NamedMethod],
    metrics: Sequence[NamedMetric],
    settings: ExplainSettings,
    *,
    store: WorkStore | None = None,
    identity: dict[str, Any] | None = None,
    progress: bool = False,
    ranks: Ranks = SINGLE,
) -> Explained | None:
    """Attribute the pairs with every method and score every map with every metric.

    The work is split into items: one per method × block of ``settings.batch_size`` pairs
    (:func:`work_blocks`), holding that block's maps and its score under every metric. With
    ``identity`` (the model's digest and the pairs' ids) each item is kept in ``store`` under a
    key of everything it depends on, so a repeated or interrupted run recomputes only the
    missing items. With several ``ranks``, each rank computes its own items (round-robin), all
    wait at a barrier, and rank 0 merges them (the other ranks return None): the result equals
    a single process's.
    """
    store = store if (store is not None and identity is not None) else WorkStore(None)
    if ranks.distributed and store.folder is None:
        raise ValueError("explain_pairs: several ranks exchange their items through a store; pass store and identity")
    targets = torch.tensor([p.neuron for p in pairs], dtype=torch.long)
    identity = identity or {}
    pair_ids = identity.get("pairs")
    base = {key: value for key, value in identity.items() if key != "pairs"}
    base.update(
        {
            "reduce": settings.reduce,
            "on_reference": settings.on_reference,
            "size": list(images.drivers.shape[1:]),
            "batch_size": settings.batch_size,
        }
    )
    higher = {m.label: m.higher_is_better for m in metrics}
    reasons = {m.label: m.undefined_when for m in metrics}
    blocks = work_blocks(len(pairs), settings.batch_size)
    units = [(method, block) for method in methods for block in blocks]

    workers = max(1, settings.workers) if torch.device(settings.device).type == "cpu" else 1
    replicas = _Replicas(model, metrics) if workers > 1 else None

    def run(unit: tuple[NamedMethod, slice]) -> tuple[NamedMethod, ItemResult]:
        method, block = unit
        block_ids = None if pair_ids is None else pair_ids[block]
        on, scorers = (model, metrics) if replicas is None else replicas.here()
        item = explain_block(
            on, images.subset(block), targets[block], method, scorers, settings, store, {**base, "pairs": block_ids}
        )
        return method, item

    def computed_in_order(todo: Sequence[tuple[NamedMethod, slice]], desc: str) -> Iterator[tuple[NamedMethod, Any]]:
        with tqdm(total=len(todo), desc=desc, disable=not progress, leave=False, unit="item") as bar:
            for done in Pieces(workers).map(run, todo):
                bar.update()
                yield done

    computed = [0] * ranks.world  # items each rank computed (the others were already in the store)
    if ranks.distributed:
        mine = ranks.share(units)
        before = store.misses
        for _ in computed_in_order(mine, f"rank {ranks.rank}"):
            pass
        computed = ranks.gather(store.misses - before)  # also a barrier: every rank has written its items
        if not ranks.is_main:
            return None
    result = Explained({}, {}, higher, computed_by_rank=computed)
    before = store.misses
    maps_parts: dict[str, list[dict[str, Tensor]]] = {}
    score_parts: dict[tuple[str, str, str], list[Tensor]] = {}
    for method, (maps, scores, score_seconds) in computed_in_order(units, "attribution"):
        label = method.label
        result.seconds[label] = result.seconds.get(label, 0.0) + float(maps.pop("seconds", math.nan))
        for (m_label, _), seconds in score_seconds.items():
            key = (m_label, label)
            result.metric_seconds[key] = result.metric_seconds.get(key, 0.0) + seconds
        maps_parts.setdefault(label, []).append(maps)
        for (m_label, which), values in scores.items():
            score_parts.setdefault((label, m_label, which), []).append(values)
    result.computed_by_rank[0] += store.misses - before
    if ranks.distributed and store.misses > before:
        warnings.warn(
            f"rank 0 found {store.misses - before} work items of other ranks missing in {store.folder} and "
            "computed them itself: is the output folder on a filesystem every rank shares?",
            stacklevel=2,
        )
    for label, parts in maps_parts.items():
        result.maps[label] = {which: torch.cat([p[which] for p in parts]) for which in parts[0]}
    for key, parts in score_parts.items():
        result.scores[key] = torch.cat(parts)
    warn_undefined(result.scores, reasons)
    return result


ItemResult = tuple[dict[str, Tensor], dict[tuple[str, str], Tensor], dict[tuple[str, str], float]]
"""One work item: its maps (and seconds), its scores per (metric label, image), and the seconds each score took."""


class _Replicas:
    """Per worker thread, its own copy of the model and of the metrics: hooks (Captum's, Grad-CAM's taps), built
    methods and metric caches are per object, so work items side by side never see each other's."""

    def __init__(self, model: nn.Module, metrics: Sequence[NamedMetric]) -> None:
        self.model, self.metrics, self._local = model, list(metrics), threading.local()

    def here(self) -> tuple[nn.Module, list[NamedMetric]]:
        local = self._local
        if not hasattr(local, "model"):
            local.model = replicate(self.model)
            local.metrics = [dataclasses.replace(m, metric=copy.deepcopy(m.metric)) for m in self.metrics]
        return local.model, local.metrics


def explain_block(
    model: nn.Module,
    images: PairImages,
    targets: Tensor,
    method: NamedMethod,
    metrics: Sequence[NamedMetric],
    settings: ExplainSettings,
    store: WorkStore,
    identity: dict[str, Any],
) -> ItemResult:
    """One work item: a block's maps under ``method`` (``{"driver": [b, H, W], …, "seconds": []}``), their
    scores ``{(metric label, image): [b]}`` under each of ``metrics`` and the seconds each score took (as
    recorded when it was computed). An item whose method or metrics do not declare ``thread_safe`` runs alone
    (:func:`~sharedattr.runtime.numerics.alone_unless_thread_safe`)."""
    with alone_unless_thread_safe(settings.build(method, model), *(named.metric for named in metrics)):
        return _explain_block(model, images, targets, method, metrics, settings, store, identity)


def _explain_block(
    model: nn.Module,
    images: PairImages,
    targets: Tensor,
    method: NamedMethod,
    metrics: Sequence[NamedMetric],
    settings: ExplainSettings,
    store: WorkStore,
    identity: dict[str, Any],
) -> ItemResult:
    """:func:`explain_block`'s work."""

    def timed() -> dict[str, Tensor]:
        start = time.perf_counter()
        maps = attribute_pairs(settings.build(method, model), images, targets, settings)
        return {**maps, "seconds": torch.tensor(time.perf_counter() - start, dtype=torch.float64)}

    chunks = {"images_per_pass": settings.images_per_pass} if settings.images_per_pass else {}
    maps_key = work_key(method=method.spec, **chunks, **identity)  # chunking changes noise draws and sum order
    rows, size = len(targets), tuple(images.drivers.shape[-2:])  # maps [rows, H, W] of images [rows, C, H, W]
    shapes = {"driver": (rows, *size), "seconds": ()} | ({"reference": (rows, *size)} if settings.on_reference else {})
    maps = dict(store.get_or_compute("maps", maps_key, timed, shape_validator(shapes)))
    scored = {key: value for key, value in maps.items() if key != "seconds"}
    masks_digest = images.masks_digest()  # scores depend on the ground truth; maps do not
    scores: dict[tuple[str, str], Tensor] = {}
    seconds: dict[tuple[str, str], float] = {}
    for named in metrics:
        metric = named.metric
        for which in IMAGES:
            if which not in scored:
                continue
            if getattr(metric, "requires_masks", False) and images.masks(which) is None:
                continue  # no ground truth in this stimulus set
            if getattr(metric, "requires_part_truth", False) and images.unshared(which) is None:
                continue  # no part ground truth (manifest part masks and data.neuron_parts)
            key = work_key(maps=maps_key, image=which, metric=named.spec, masks=masks_digest)
            explain = _explainer(method, images, which, targets, settings)
            explain_with = _partner_explainer(method, model, images, which, targets, settings)
            compute = partial(
                score_maps, metric, model, images, which, scored[which], targets, explain, explain_with, settings
            )
            item = store.get_or_compute(
                "scores", key, partial(_timed_scores, compute), shape_validator({"values": (rows,)}, {"seconds": ()})
            )
            scores[(named.label, which)] = item["values"]
            seconds[(named.label, which)] = float(item["seconds"]) if "seconds" in item else math.nan
    return maps, scores, seconds


def _timed_scores(compute: Callable[[], Tensor]) -> dict[str, Tensor]:
    start = time.perf_counter()
    values = compute()
    return {"values": values, "seconds": torch.tensor(time.perf_counter() - start, dtype=torch.float64)}


def _explainer(
    method: NamedMethod, images: PairImages, which: str, targets: Tensor, settings: ExplainSettings
) -> Callable[[slice, nn.Module], Tensor]:
    """``explain(rows, other_model)``: the ``which`` maps of pairs ``rows``, recomputed with ``other_model``."""

    def explain(rows: slice, other: nn.Module) -> Tensor:
        built = settings.build(method, other)
        device = settings.device
        x_drv, x_ref, t = images.drivers[rows].to(device), images.references[rows].to(device), targets[rows].to(device)
        if is_pairwise(built):
            drv, ref = attribute_chunk(built, x_drv, x_ref, t, on_reference=True, reduce=settings.reduce)
            return drv if which == "driver" else ref
        return attribute_single(built, x_drv if which == "driver" else x_ref, t, settings.reduce)

    return explain


def _partner_explainer(
    method: NamedMethod, model: nn.Module, images: PairImages, which: str, targets: Tensor, settings: ExplainSettings
) -> Callable[[slice, Tensor], Tensor] | None:
    """``explain_with(rows, partners)``: the ``which`` maps of pairs ``rows`` recomputed with other partner images;
    None for a single-image method (its maps do not depend on the partner)."""
    if not method.pairwise(model):
        return None

    def explain_with(rows: slice, partners: Tensor) -> Tensor:
        device = settings.device
        mine, t = images.images(which)[rows].to(device), targets[rows].to(device)
        partners = partners.to(device)
        x_drv, x_ref = (mine, partners) if which == "driver" else (partners, mine)
        drv, ref = attribute_chunk(
            settings.build(method, model), x_drv, x_ref, t, on_reference=True, reduce=settings.reduce
        )
        return drv if which == "driver" else ref

    return explain_with


GENERIC_UNDEFINED = (
    "e.g. a deletion/insertion curve of an image whose clean response is not positive, a constant map in a rank "
    "correlation, or an empty ground-truth mask: a pair that shares none of the neuron's parts"
)


def warn_undefined(scores: dict[tuple[str, str, str], Tensor], reasons: dict[str, str | None]) -> None:
    """One warning per metric with NaN scores: how many ``(method, metric, image)`` maps, and the metric's reason.

    ``scores`` maps ``(method, metric, image)`` to ``[P]`` values; methods with the same count are named together
    ("every method" when all that scored the metric on that image are)."""
    groups: dict[str, dict[tuple[str, int, int], list[str]]] = {}
    scored: dict[tuple[str, str], int] = {}
    for (method, metric, which), values in scores.items():
        scored[(metric, which)] = scored.get((metric, which), 0) + 1
        undefined = int((~torch.isfinite(values)).sum())
        if undefined:
            groups.setdefault(metric, {}).setdefault((which, undefined, len(values)), []).append(method)
    for metric, counts in groups.items():
        parts = []
        for (which, undefined, total), methods in counts.items():
            who = "every method" if len(methods) == scored[(metric, which)] > 1 else ", ".join(methods)
            parts.append(f"{undefined} of {total} {which} maps of {who}")
        warnings.warn(
            f"metric {metric} is undefined (NaN) for {'; '.join(parts)} ({reasons.get(metric) or GENERIC_UNDEFINED}); "
            "summary.csv averages the finite values and counts them in n",
            stacklevel=3,
        )
