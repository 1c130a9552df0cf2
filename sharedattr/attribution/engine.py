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

The engine works on a :class:`Block` of pairs (their images and neurons, the method and the settings): its
:meth:`~Block.maps`, the same maps with another model (:meth:`~Block.explain`, what the randomisation check
needs) or with other partner images (:meth:`~Block.explain_with`, what ``reference_sensitivity`` needs).
Timing is kept apart from the maps: :func:`timed` wraps what a work item computes.
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
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from sharedattr.data.pairs import PairImages
from sharedattr.plugins.contracts import (
    AttributionBatch,
    AttributionMethod,
    Metric,
    control_of,
    control_reach,
    declared,
    is_pairwise,
    method_scope,
    metric_family,
    single_image_value,
)
from sharedattr.plugins.params import params_record
from sharedattr.runtime.distributed import SINGLE, Ranks
from sharedattr.runtime.numerics import Pieces, alone_unless_thread_safe, replicate
from sharedattr.runtime.run_files import MAP_IMAGES
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
    params: Any = None  # the validated params model (None: unknown)
    declarer: Any = None  # the registered factory, whose class-level rules (control_of) are read
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

    @property
    def control(self) -> str | None:
        """What this method is a control of, by its registered class's rule on its params
        (:meth:`~sharedattr.plugins.contracts.AttributionMethod.control_of`); None when it is none, or when the
        factory is not a class or the params are unknown (nothing to read the rule off)."""
        if not isinstance(self.declarer, type) or self.params is None:
            return None
        return control_of(self.declarer, self.params)

    @property
    def reach(self) -> tuple[str, str]:
        """What it controls when it is a control, and how the report names it: ``(controls, control_noun)`` as its
        registered class declares them (:func:`~sharedattr.plugins.contracts.control_reach`); the defaults
        ``("same", "control")`` when the factory is no class."""
        return control_reach(self.declarer if isinstance(self.declarer, type) else AttributionMethod)

    @property
    def scope(self) -> str | None:
        """The scope its registered class declares (None when it declares none, or the factory is no class)."""
        return method_scope(self.declarer) if isinstance(self.declarer, type) else None

    def params_json(self) -> tuple[dict[str, Any], tuple[str, ...]]:
        """Every param, as JSON values, and the names of those that differ from their defaults
        (:func:`~sharedattr.plugins.params.params_record`; when the params are unknown: the spec's params, all
        counted as changed)."""
        if self.params is None:
            given = {k: v for k, v in self.spec.items() if k != "name"}
            return given, tuple(sorted(given))
        return params_record(self.params)


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
    def single_image_value(self) -> float | None:
        """The score every single-image method gets by construction, as the metric declares; None: none."""
        return single_image_value(self.metric)

    @property
    def undefined_when(self) -> str | None:
        """The metric's own account of when a score is NaN (``undefined_when``), None when it gives none."""
        reason = declared(self.metric, Metric).undefined_when
        return reason if isinstance(reason, str) and reason else None


def bound_memory(method: Any, images: int | None) -> Any:
    """Tell ``method`` to hold at most ``images`` images per forward/backward pass (None: no bound), through its
    declared ``limit_images_per_pass`` (:class:`~sharedattr.plugins.contracts.AttributionMethod`'s default ignores
    it); return it."""
    if images is not None:
        declared(method, AttributionMethod).limit_images_per_pass(images)
    return method


@dataclass
class ExplainSettings:
    """How the engine explains: ``on_reference``: run single-image methods on the reference too; ``reduce``:
    channel reduction (``sum`` or ``abs_sum``); ``batch_size``: pairs per attribution/metric batch (and per work
    item); ``device``; ``pass_limit``: the most images one pass of a path method may hold, from the memory budget
    (:mod:`sharedattr.runtime.memory`; None: unbounded); ``workers``: work items computed side by side, each on one
    thread and its own replica of the model and metrics (speed and memory only: the results are those of one
    worker, see :mod:`sharedattr.runtime.numerics`); ``progress``: show a progress bar; ``ranks``: the processes
    that share the work items out (:mod:`sharedattr.runtime.distributed`)."""

    on_reference: bool = True
    reduce: str = "sum"
    batch_size: int = 32
    device: torch.device | str = "cpu"
    pass_limit: int | None = None
    workers: int = 1
    progress: bool = False
    ranks: Ranks = SINGLE

    def build(self, method: NamedMethod, model: nn.Module) -> Any:
        """``method`` built on ``model``, told how many images one pass may hold."""
        return bound_memory(method.build(model), self.pass_limit)


def reduce_channels(attributions: Tensor, how: str = "sum") -> Tensor:
    """Attributions ``[B, C, H, W]`` → maps ``[B, H, W]``: signed channel ``sum`` or ``abs_sum``."""
    if attributions.dim() == 3:
        return attributions
    if how == "sum":
        return attributions.sum(dim=1)
    if how == "abs_sum":
        return attributions.abs().sum(dim=1)
    raise ValueError(f"unknown channel reduction {how!r}; use 'sum' or 'abs_sum'")


def attribute_single(method: Any, images: Tensor, targets: Tensor, reduce: str) -> Tensor:
    """A single-image method's maps ``[b, H, W]`` of ``images`` ``[b, C, H, W]`` for neurons ``targets`` ``[b]``."""
    return reduce_channels(method.attribute(images.clone().requires_grad_(True), target=targets).detach(), reduce)


def work_blocks(n_pairs: int, batch_size: int) -> list[slice]:
    """The pairs' blocks: consecutive slices of ``batch_size`` pairs (the last may be shorter)."""
    return [slice(i, min(i + batch_size, n_pairs)) for i in range(0, n_pairs, batch_size)]


def _other(which: str) -> str:
    return "reference" if which == "driver" else "driver"


@dataclass(frozen=True, eq=False)
class Block:
    """P pairs and how to explain them: what the engine works on (a work item's pairs, or a metric batch of them).

    ``model``: the run's encoding model (images → ``[B, N]``); ``images``: the pairs' images ``[P, C, H, W]`` and
    ground truth; ``targets`` ``[P]``: each pair's neuron, an output index of ``model``; ``method``: the run's
    method, built once per model and told the memory bound (:meth:`built`); ``settings``: the channel reduction,
    batch size, memory bound and device. Maps are ``[P, H, W]``, channel-reduced; ``which`` names an image of the
    pairs, ``"driver"`` or ``"reference"``.
    """

    model: nn.Module
    images: PairImages
    targets: Tensor
    method: NamedMethod
    settings: ExplainSettings

    def __len__(self) -> int:
        return len(self.targets)

    def rows(self, rows: slice) -> Block:
        """The block of pairs ``rows`` (views, no copy)."""
        return dataclasses.replace(self, images=self.images.subset(rows), targets=self.targets[rows])

    def built(self, model: nn.Module | None = None) -> Any:
        """The method built on ``model`` (the block's own by default), told how many images one pass may hold."""
        return self.settings.build(self.method, self.model if model is None else model)

    def maps(self) -> dict[str, Tensor]:
        """``{"driver": [P, H, W], "reference": [P, H, W]}`` on the CPU (the reference where computed: always for a
        pairwise method, with ``on_reference`` for the others), in calls of at most ``batch_size`` pairs that fit
        the memory bound too (a pairwise call holds both images of each pair)."""
        built = self.built()
        step = self.settings.batch_size
        if self.settings.pass_limit is not None:
            step = max(1, min(step, self.settings.pass_limit // (2 if is_pairwise(built) else 1)))
        wanted = MAP_IMAGES if self.settings.on_reference else ("driver",)
        parts = [self.rows(rows).attribute(built, wanted) for rows in work_blocks(len(self), step)]
        return {which: torch.cat([part[which].cpu() for part in parts]) for which in parts[0]}

    def explain(self, model: nn.Module, which: str) -> Tensor:
        """The ``which`` maps ``[P, H, W]`` recomputed with another encoding ``model``: the same method, params,
        images (and partners), targets and channel reduction, in one call, on the settings' device."""
        return self.attribute(self.built(model), (which,))[which]

    def explain_with(self, partners: Tensor, which: str) -> Tensor:
        """The ``which`` maps ``[P, H, W]`` recomputed with ``partners`` ``[P, C, H, W]`` as each pair's other
        image (by the method on the block's model, in one call, on the settings' device)."""
        mine = self.images.images(which)
        drivers, references = (mine, partners) if which == "driver" else (partners, mine)
        swapped = dataclasses.replace(self, images=PairImages(drivers, references))
        return swapped.attribute(self.built(), (which,))[which]

    def attribute(self, built: Any, wanted: Sequence[str]) -> dict[str, Tensor]:
        """The maps ``[P, H, W]`` of the pairs' images ``wanted`` by the method ``built``, in one call per image,
        on the settings' device: a pairwise method explains both images of each pair in one call (and gives
        both)."""
        device, reduce = self.settings.device, self.settings.reduce
        x_drv, x_ref = self.images.drivers.to(device), self.images.references.to(device)
        targets = self.targets.to(device)
        if is_pairwise(built):
            result = built.attribute((x_drv, x_ref), target=targets)
            return {
                "driver": reduce_channels(result[0].detach(), reduce),
                "reference": reduce_channels(result[1].detach(), reduce),
            }
        inputs = {"driver": x_drv, "reference": x_ref}
        return {which: attribute_single(built, inputs[which], targets, reduce) for which in wanted}

    def batch(self, which: str, maps: Tensor) -> AttributionBatch:
        """What a metric reads of the ``which`` maps ``[P, H, W]`` of these pairs, on the settings' device: their
        images, targets and ground truth, the partners, and how to recompute the maps with another model
        (:meth:`explain`) or, for a pairwise method, with other partners (:meth:`explain_with`)."""
        device, images = self.settings.device, self.images

        def on(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device)

        def explain(other: nn.Module) -> Tensor:
            return self.explain(other, which).to(device)

        def explain_with(partners: Tensor) -> Tensor:
            return self.explain_with(partners.to(device), which).to(device)

        return AttributionBatch(
            self.model,
            images.images(which).to(device),
            maps.to(device),
            self.targets.to(device),
            on(images.masks(which)),
            explain=explain,
            unshared_masks=on(images.unshared(which)),
            shared_parts={k: v.to(device) for k, v in images.parts(which).items()},
            partner_parts={k: v.to(device) for k, v in images.parts(_other(which)).items()},
            partners=images.partners(which).to(device),
            explain_with_partners=explain_with if self.method.pairwise(self.model) else None,
        )

    def score(self, metric: Any, which: str, maps: Tensor) -> Tensor:
        """``metric`` on the ``which`` maps ``[P, H, W]`` of these pairs, in batches of ``batch_size`` pairs →
        scores ``[P]`` on the CPU."""
        values = [
            metric(self.rows(rows).batch(which, maps[rows])).detach().float().cpu()
            for rows in work_blocks(len(self), self.settings.batch_size)
        ]
        return torch.cat(values) if values else torch.empty(0)


def timed(compute: Callable[[], dict[str, Tensor]]) -> Callable[[], dict[str, Tensor]]:
    """``compute`` timed: its tensors and ``"seconds"``, the wall time it took (a float64 scalar), as a work
    item keeps them."""

    def run() -> dict[str, Tensor]:
        start = time.perf_counter()
        tensors = compute()
        return {**tensors, "seconds": torch.tensor(time.perf_counter() - start, dtype=torch.float64)}

    return run


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


@dataclass
class _Collected:
    """The work items' results as they come, method after method and block after block, to be joined into an
    :class:`Explained`: the maps of each method label, the scores of each (method, metric, image)."""

    result: Explained
    maps: dict[str, list[dict[str, Tensor]]] = field(default_factory=dict)
    scores: dict[tuple[str, str, str], list[Tensor]] = field(default_factory=dict)

    def add(self, label: str, item: ItemResult) -> None:
        """One work item of method ``label``: its maps and scores kept to be joined, its times summed."""
        maps, scores, score_seconds = item
        result = self.result
        result.seconds[label] = result.seconds.get(label, 0.0) + float(maps.pop("seconds", math.nan))
        for (metric, _), seconds in score_seconds.items():
            result.metric_seconds[(metric, label)] = result.metric_seconds.get((metric, label), 0.0) + seconds
        self.maps.setdefault(label, []).append(maps)
        for (metric, which), values in scores.items():
            self.scores.setdefault((label, metric, which), []).append(values)

    def joined(self) -> Explained:
        """The result, with every method's maps ``[P, H, W]`` and every score vector ``[P]`` joined over blocks."""
        for label, parts in self.maps.items():
            self.result.maps[label] = {which: torch.cat([p[which] for p in parts]) for which in parts[0]}
        for key, parts in self.scores.items():
            self.result.scores[key] = torch.cat(parts)
        return self.result


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
) -> Explained | None:
    """Attribute the pairs with every method and score every map with every metric.

    The work is split into items: one per method × block of ``settings.batch_size`` pairs
    (:func:`work_blocks`), holding that block's maps and its score under every metric. With
    ``identity`` (the model's digest and the pairs' ids) each item is kept in ``store`` under a
    key of everything it depends on, so a repeated or interrupted run recomputes only the
    missing items. With several ``settings.ranks``, each rank computes its own items (round-robin), all
    wait at a barrier, and rank 0 merges them (the other ranks return None): the result equals
    a single process's.
    """
    store = store if (store is not None and identity is not None) else WorkStore(None)
    ranks = settings.ranks
    if ranks.distributed and store.folder is None:
        raise ValueError("explain_pairs: several ranks exchange their items through a store; pass store and identity")
    targets = torch.tensor([p.neuron for p in pairs], dtype=torch.long)
    work = _Work(model, images, targets, metrics, settings, store, _base_identity(identity, images, settings))
    units = [(method, rows) for method in methods for rows in work_blocks(len(pairs), settings.batch_size)]

    def compute_mine(mine: list[tuple[NamedMethod, slice]]) -> int:
        before = store.misses
        for _ in work.computed(mine, f"rank {ranks.rank}"):
            pass
        return store.misses - before  # the items this rank computed (the others were already in the store)

    computed = ranks.share_then_wait(units, compute_mine) or [0] * ranks.world  # every rank has written its items
    if ranks.distributed and not ranks.is_main:
        return None
    collected = _Collected(Explained({}, {}, {m.label: m.higher_is_better for m in metrics}, computed_by_rank=computed))
    before = store.misses
    for method, item in work.computed(units, "attribution"):
        collected.add(method.label, item)
    result = collected.joined()
    result.computed_by_rank[0] += store.misses - before
    if ranks.distributed and store.misses > before:
        warnings.warn(
            f"rank 0 found {store.misses - before} work items of other ranks missing in {store.folder} and "
            "computed them itself: is the output folder on a filesystem every rank shares?",
            stacklevel=2,
        )
    warn_undefined(result.scores, {m.label: m.undefined_when for m in metrics})
    return result


def _base_identity(identity: dict[str, Any] | None, images: PairImages, settings: ExplainSettings) -> dict[str, Any]:
    """What every work item's key holds besides its method and pairs: ``identity`` without its ``"pairs"`` (the
    model's digest), the channel reduction, whether references are explained, the image size and the block size;
    ``"pairs"``: every pair's ids (None without them), of which each item keeps its block's."""
    identity = identity or {}
    base = {key: value for key, value in identity.items() if key != "pairs"}
    base.update(
        {
            "reduce": settings.reduce,
            "on_reference": settings.on_reference,
            "size": list(images.drivers.shape[1:]),
            "batch_size": settings.batch_size,
        }
    )
    return {**base, "pairs": identity.get("pairs")}


ItemResult = tuple[dict[str, Tensor], dict[tuple[str, str], Tensor], dict[tuple[str, str], float]]
"""One work item: its maps (and seconds), its scores per (metric label, image), and the seconds each score took."""


@dataclass
class _Work:
    """Every work item of one :func:`explain_pairs` call: what they share (the run's model, the pairs' images and
    targets, the metrics, the settings, the store and the items' identity) and how they are computed, each by
    :func:`explain_item`, side by side on ``settings.workers`` workers (each with its :class:`_Replicas`)."""

    model: nn.Module
    images: PairImages
    targets: Tensor
    metrics: Sequence[NamedMetric]
    settings: ExplainSettings
    store: WorkStore
    identity: dict[str, Any]

    workers: int = field(init=False)
    replicas: _Replicas | None = field(init=False)

    def __post_init__(self) -> None:
        settings = self.settings
        self.workers = max(1, settings.workers) if torch.device(settings.device).type == "cpu" else 1
        self.replicas = _Replicas(self.model, self.metrics) if self.workers > 1 else None

    def run(self, unit: tuple[NamedMethod, slice]) -> tuple[NamedMethod, ItemResult]:
        """One work item: ``method`` on the pairs ``rows``, on this worker's model and metrics."""
        method, rows = unit
        pair_ids = self.identity["pairs"]
        on, scorers = (self.model, self.metrics) if self.replicas is None else self.replicas.here()
        block = Block(on, self.images.subset(rows), self.targets[rows], method, self.settings)
        identity = {**self.identity, "pairs": None if pair_ids is None else pair_ids[rows]}
        return method, explain_item(block, scorers, self.store, identity)

    def computed(self, todo: Sequence[tuple[NamedMethod, slice]], desc: str) -> Iterator[tuple[NamedMethod, Any]]:
        """The work items ``todo``, computed (or read from the store) side by side, yielded in order."""
        with tqdm(total=len(todo), desc=desc, disable=not self.settings.progress, leave=False, unit="item") as bar:
            for done in Pieces(self.workers).map(self.run, todo):
                bar.update()
                yield done


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


def explain_item(
    block: Block, metrics: Sequence[NamedMetric], store: WorkStore, identity: dict[str, Any]
) -> ItemResult:
    """One work item: the ``block``'s maps (``{"driver": [b, H, W], …, "seconds": []}``), their scores
    ``{(metric label, image): [b]}`` under each of ``metrics`` and the seconds each score took (as recorded when it
    was computed), each kept in ``store`` under a key of ``identity`` (the model's digest, the block's pair ids and
    the settings) and of what else it depends on. An item whose method or metrics do not declare ``thread_safe``
    runs alone (:func:`~sharedattr.runtime.numerics.alone_unless_thread_safe`)."""
    flags = [declared(block.built(), AttributionMethod).thread_safe is True]
    flags += [declared(named.metric, Metric).thread_safe is True for named in metrics]
    with alone_unless_thread_safe(*flags):
        return _explain_item(block, metrics, store, identity)


def _explain_item(
    block: Block, metrics: Sequence[NamedMetric], store: WorkStore, identity: dict[str, Any]
) -> ItemResult:
    """:func:`explain_item`'s work."""
    settings, images = block.settings, block.images
    # the key "images_per_pass" is the store's: items written before it was renamed must be found again
    chunks = {"images_per_pass": settings.pass_limit} if settings.pass_limit else {}
    maps_key = work_key(method=block.method.spec, **chunks, **identity)  # chunking changes noise draws and sum order
    rows, size = len(block), tuple(images.drivers.shape[-2:])  # maps [rows, H, W] of images [rows, C, H, W]
    with_reference = settings.on_reference or is_pairwise(block.built())  # a pairwise method always maps both
    shapes = {"driver": (rows, *size), "seconds": ()} | ({"reference": (rows, *size)} if with_reference else {})
    maps = dict(store.get_or_compute("maps", maps_key, timed(block.maps), shape_validator(shapes)))
    scored = {key: value for key, value in maps.items() if key != "seconds"}
    masks_digest = images.masks_digest()  # scores depend on the ground truth; maps do not
    scores: dict[tuple[str, str], Tensor] = {}
    seconds: dict[tuple[str, str], float] = {}
    for named in metrics:
        needs = declared(named.metric, Metric)
        for which in MAP_IMAGES:
            if which not in scored:
                continue
            if needs.requires_masks and images.masks(which) is None:
                continue  # no ground truth in this stimulus set
            if needs.requires_part_truth and images.unshared(which) is None:
                continue  # no part ground truth (manifest part masks and data.neuron_parts)
            key = work_key(maps=maps_key, image=which, metric=named.spec, masks=masks_digest)

            def score(metric: Any = named.metric, which: str = which) -> dict[str, Tensor]:
                return {"values": block.score(metric, which, scored[which])}

            item = store.get_or_compute(
                "scores", key, timed(score), shape_validator({"values": (rows,)}, {"seconds": ()})
            )
            scores[(named.label, which)] = item["values"]
            seconds[(named.label, which)] = float(item["seconds"]) if "seconds" in item else math.nan
    return maps, scores, seconds


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
