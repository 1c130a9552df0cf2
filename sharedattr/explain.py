"""Attribute every (neuron, driver, reference) pair with every method, and score every map with every metric.

This is the shared core of ``sharedattr run`` and :func:`sharedattr.compare`. Pairwise
methods (``parallel_backprop``) explain the driver and its reference together; the other
methods explain the driver alone and, with ``on_reference``, the reference alone too, for
the same neuron. Maps are reduced over channels to ``[P, H, W]``. The work is split into
items, one per method × block of ``batch_size`` pairs; each item's maps and its score vector
per (metric, image) are kept in a :class:`WorkStore`, so a repeated or interrupted run
recomputes only what is missing, and several ranks can share the items out
(:mod:`sharedattr.distributed`).
"""

from __future__ import annotations

import hashlib
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .components import AttributionBatch, reduce_channels
from .distributed import SINGLE, Ranks
from .matching import Pair
from .registry import Registry, get_registry
from .specs import MethodSpec, MetricSpec
from .work_store import WorkStore, work_key

IMAGES = ("driver", "reference")


@dataclass
class PairImages:
    """The images of P pairs, aligned with the pairs: ``drivers``/``references`` ``[P, C, H, W]`` in [0, 1];
    ground-truth masks ``[P, H, W]`` bool, or None where the stimulus set has no ground truth."""

    drivers: Tensor
    references: Tensor
    driver_masks: Tensor | None = None
    reference_masks: Tensor | None = None

    @classmethod
    def load(cls, stimuli: Any, pairs: Sequence[Pair], size: tuple[int, int], channels: int,
             parts: Sequence[Sequence[str] | None] | None = None) -> "PairImages":
        """The drivers' and references' images and masks of ``pairs`` from a :class:`~sharedattr.data.StimulusSet`.

        ``parts`` (per pair; see :func:`sharedattr.data.ground_truth.pair_parts`) names the parts
        the pair shares: that pair's masks are the union of those parts' masks on each image.
        Pairs without parts (None) use the stimulus set's ``mask`` column.
        """
        drivers, references = [p.driver for p in pairs], [p.reference for p in pairs]
        images = cls(stimuli.load_images(size, channels, drivers), stimuli.load_images(size, channels, references),
                     stimuli.load_masks(size, drivers), stimuli.load_masks(size, references))
        rows = [i for i, names in enumerate(parts or []) if names is not None]
        if rows:
            names = [parts[i] for i in rows]
            for attr, indices in (("driver_masks", drivers), ("reference_masks", references)):
                masks = getattr(images, attr)
                if masks is None:
                    masks = torch.zeros(len(pairs), *size, dtype=torch.bool)
                masks[rows] = stimuli.load_part_masks(size, [indices[i] for i in rows], names)
                setattr(images, attr, masks)
        return images

    def masks_digest(self) -> str | None:
        """A content hash of the masks (None without masks): part of the work items' identity."""
        if self.driver_masks is None and self.reference_masks is None:
            return None
        h = hashlib.sha256()
        for m in (self.driver_masks, self.reference_masks):
            h.update(b"-" if m is None else m.contiguous().numpy().tobytes())
        return h.hexdigest()[:24]

    def images(self, which: str) -> Tensor:
        return self.drivers if which == "driver" else self.references

    def subset(self, rows: slice) -> "PairImages":
        """The images and masks of pairs ``rows`` (views, no copy)."""
        def part(t: Tensor | None) -> Tensor | None:
            return None if t is None else t[rows]

        return PairImages(self.drivers[rows], self.references[rows], part(self.driver_masks),
                          part(self.reference_masks))

    def masks(self, which: str) -> Tensor | None:
        return self.driver_masks if which == "driver" else self.reference_masks


@dataclass
class ExplainSettings:
    """``on_reference``: run single-image methods on the reference too; ``reduce``: channel reduction
    (``sum`` or ``abs_sum``); ``batch_size``: pairs per attribution/metric batch."""

    on_reference: bool = True
    reduce: str = "sum"
    batch_size: int = 32
    device: torch.device | str = "cpu"


def labels(specs: Sequence[Any]) -> list[str]:
    """Unique labels for component specs: the name, with ``#2``, ``#3`` … for repeats (``saliency#2``)."""
    counts: dict[str, int] = {}
    out = []
    for s in specs:
        counts[s.name] = counts.get(s.name, 0) + 1
        out.append(s.name if counts[s.name] == 1 else f"{s.name}#{counts[s.name]}")
    return out


def attribute_chunk(method: Any, x_drv: Tensor, x_ref: Tensor, targets: Tensor, *, on_reference: bool,
                    reduce: str) -> tuple[Tensor, Tensor | None]:
    """One batch of pairs → driver and reference maps ``[b, H, W]`` (reference None when not computed)."""
    if getattr(method, "pairwise", False):
        result = method.attribute((x_drv, x_ref), target=targets)
        return reduce_channels(result[0].detach(), reduce), reduce_channels(result[1].detach(), reduce)
    drv = attribute_single(method, x_drv, targets, reduce)
    return drv, attribute_single(method, x_ref, targets, reduce) if on_reference else None


def attribute_single(method: Any, images: Tensor, targets: Tensor, reduce: str) -> Tensor:
    """A single-image method's maps ``[b, H, W]`` of ``images`` ``[b, C, H, W]`` for neurons ``targets`` ``[b]``."""
    return reduce_channels(method.attribute(images.clone().requires_grad_(True), target=targets).detach(), reduce)


def attribute_pairs(build_method: Callable[[nn.Module], Any], model: nn.Module, images: PairImages,
                    targets: Tensor, settings: ExplainSettings) -> dict[str, Tensor]:
    """Maps of P ≥ 1 pairs: ``{"driver": [P, H, W], "reference": [P, H, W]}`` (reference when computed), on the CPU."""
    method = build_method(model)
    drv, ref = [], []
    device = settings.device
    for i in range(0, len(targets), settings.batch_size):
        sl = slice(i, i + settings.batch_size)
        d, r = attribute_chunk(method, images.drivers[sl].to(device), images.references[sl].to(device),
                               targets[sl].to(device), on_reference=settings.on_reference, reduce=settings.reduce)
        drv.append(d.cpu())
        if r is not None:
            ref.append(r.cpu())
    out = {"driver": torch.cat(drv)}
    if ref:
        out["reference"] = torch.cat(ref)
    return out


def score_maps(metric: Any, model: nn.Module, images: Tensor, maps: Tensor, targets: Tensor, masks: Tensor | None,
               explain: Callable[[slice, nn.Module], Tensor] | None, settings: ExplainSettings) -> Tensor:
    """One metric on P maps ``[P, H, W]`` of ``images`` ``[P, C, H, W]`` → scores ``[P]`` on the CPU."""
    device = settings.device
    values = []
    for i in range(0, len(targets), settings.batch_size):
        sl = slice(i, i + settings.batch_size)
        batch = AttributionBatch(
            model, images[sl].to(device), maps[sl].to(device), targets[sl].to(device),
            masks[sl].to(device) if masks is not None else None,
            explain=(lambda other, sl=sl: explain(sl, other).to(device)) if explain is not None else None,
        )
        values.append(metric(batch).detach().float().cpu())
    return torch.cat(values) if values else torch.empty(0)


@dataclass
class Explained:
    """Maps per method label (``{"driver": [P, H, W], "reference": …}``) and scores per
    (method, metric, image) ``[P]``; ``higher_is_better`` per metric label; ``seconds`` per
    method label: wall time to make all its maps (recorded when they were computed, summed over
    blocks); ``computed_by_rank``: stored items (maps and score vectors) each rank computed in this call."""

    maps: dict[str, dict[str, Tensor]]
    scores: dict[tuple[str, str, str], Tensor]
    higher_is_better: dict[str, bool]
    seconds: dict[str, float] = field(default_factory=dict)
    computed_by_rank: list[int] = field(default_factory=lambda: [0])


def work_blocks(n_pairs: int, batch_size: int) -> list[slice]:
    """The pairs' blocks: consecutive slices of ``batch_size`` pairs (the last may be shorter)."""
    return [slice(i, min(i + batch_size, n_pairs)) for i in range(0, n_pairs, batch_size)]


def explain_pairs(model: nn.Module, pairs: Sequence[Pair], images: PairImages, methods: Sequence[MethodSpec],
                  metrics: Sequence[MetricSpec], settings: ExplainSettings, *, registry: Registry | None = None,
                  store: WorkStore | None = None, identity: dict[str, Any] | None = None,
                  progress: bool = False, ranks: Ranks = SINGLE) -> Explained | None:
    """Attribute the pairs with every method and score every map with every metric.

    The work is split into items: one per method × block of ``settings.batch_size`` pairs
    (:func:`work_blocks`), holding that block's maps and its score under every metric. With
    ``identity`` (the model's digest and the pairs' ids) each item is kept in ``store`` under a
    key of everything it depends on, so a repeated or interrupted run recomputes only the
    missing items. With several ``ranks``, each rank computes its own items (round-robin), all
    wait at a barrier, and rank 0 merges them (the other ranks return None): the result equals
    a single process's.
    """
    registry = registry or get_registry()
    store = store if (store is not None and identity is not None) else WorkStore(None)
    if ranks.distributed and store.folder is None:
        raise ValueError("explain_pairs: several ranks exchange their items through a store; pass store and identity")
    targets = torch.tensor([p.neuron for p in pairs], dtype=torch.long)
    identity = identity or {}
    pair_ids = identity.get("pairs")
    base = {key: value for key, value in identity.items() if key != "pairs"}
    base.update({"reduce": settings.reduce, "on_reference": settings.on_reference,
                 "size": list(images.drivers.shape[1:]), "batch_size": settings.batch_size})
    built = [(label, spec.model_dump(mode="json"), spec.build(registry=registry))
             for label, spec in zip(labels(metrics), metrics)]
    higher = {label: bool(m.higher_is_better) for label, _, m in built}
    blocks = work_blocks(len(pairs), settings.batch_size)
    units = [(label, spec, block) for label, spec in zip(labels(methods), methods) for block in blocks]

    def run(label: str, spec: MethodSpec, block: slice) -> tuple[dict[str, Tensor], dict[tuple[str, str], Tensor]]:
        block_ids = None if pair_ids is None else pair_ids[block]
        return explain_block(model, images.subset(block), targets[block], spec, built, settings, store,
                             {**base, "pairs": block_ids}, registry)

    computed = [0] * ranks.world  # items each rank computed (the others were already in the store)
    if ranks.distributed:
        mine = ranks.share(units)
        before = store.misses
        for unit in tqdm(mine, desc=f"rank {ranks.rank}", disable=not progress, leave=False, unit="item"):
            run(*unit)
        computed = ranks.gather(store.misses - before)  # also a barrier: every rank has written its items
        if not ranks.is_main:
            return None
    result = Explained({}, {}, higher, computed_by_rank=computed)
    before = store.misses
    maps_parts: dict[str, list[dict[str, Tensor]]] = {}
    score_parts: dict[tuple[str, str, str], list[Tensor]] = {}
    for label, spec, block in tqdm(units, desc="attribution", disable=not progress, leave=False, unit="item"):
        maps, scores = run(label, spec, block)
        result.seconds[label] = result.seconds.get(label, 0.0) + float(maps.pop("seconds", math.nan))
        maps_parts.setdefault(label, []).append(maps)
        for (m_label, which), values in scores.items():
            score_parts.setdefault((label, m_label, which), []).append(values)
    result.computed_by_rank[0] += store.misses - before
    if ranks.distributed and store.misses > before:
        warnings.warn(f"rank 0 found {store.misses - before} work items of other ranks missing in {store.folder} and "
                      "computed them itself: is the output folder on a filesystem every rank shares?", stacklevel=2)
    for label, parts in maps_parts.items():
        result.maps[label] = {which: torch.cat([p[which] for p in parts]) for which in parts[0]}
    for key, parts in score_parts.items():
        values = torch.cat(parts)
        _warn_undefined(values, key[1], key[0], key[2])
        result.scores[key] = values
    return result


def explain_block(model: nn.Module, images: PairImages, targets: Tensor, spec: MethodSpec,
                  metrics: Sequence[tuple[str, dict[str, Any], Any]], settings: ExplainSettings, store: WorkStore,
                  identity: dict[str, Any], registry: Registry) -> tuple[dict[str, Tensor], dict[tuple[str, str], Tensor]]:
    """One work item: a block's maps under method ``spec`` (``{"driver": [b, H, W], …, "seconds": []}``) and
    their scores ``{(metric label, image): [b]}`` under each of ``metrics`` (label, spec dump, built metric)."""

    def build(m: nn.Module) -> Any:
        return spec.build(m, registry=registry)

    def timed() -> dict[str, Tensor]:
        start = time.perf_counter()
        maps = attribute_pairs(build, model, images, targets, settings)
        return {**maps, "seconds": torch.tensor(time.perf_counter() - start, dtype=torch.float64)}

    maps_key = work_key(method=spec.model_dump(mode="json"), **identity)
    maps = dict(store.get_or_compute("maps", maps_key, timed))
    scored = {key: value for key, value in maps.items() if key != "seconds"}
    masks_digest = images.masks_digest()  # scores depend on the ground truth; maps do not
    scores: dict[tuple[str, str], Tensor] = {}
    for m_label, m_dump, metric in metrics:
        for which in IMAGES:
            if which not in scored:
                continue
            masks = images.masks(which)
            if getattr(metric, "requires_masks", False) and masks is None:
                continue  # no ground truth in this stimulus set
            key = work_key(maps=maps_key, image=which, metric=m_dump, masks=masks_digest)
            explain = _explainer(build, images, which, targets, settings)
            scores[(m_label, which)] = store.get_or_compute("scores", key, lambda: {"values": score_maps(
                metric, model, images.images(which), scored[which], targets, masks, explain, settings)})["values"]
    return maps, scores


def _explainer(build: Callable[[nn.Module], Any], images: PairImages, which: str, targets: Tensor,
               settings: ExplainSettings) -> Callable[[slice, nn.Module], Tensor]:
    """``explain(rows, other_model)``: the ``which`` maps of pairs ``rows``, recomputed with ``other_model``."""
    def explain(rows: slice, other: nn.Module) -> Tensor:
        method = build(other)
        device = settings.device
        x_drv, x_ref, t = images.drivers[rows].to(device), images.references[rows].to(device), targets[rows].to(device)
        if getattr(method, "pairwise", False):
            drv, ref = attribute_chunk(method, x_drv, x_ref, t, on_reference=True, reduce=settings.reduce)
            return drv if which == "driver" else ref
        return attribute_single(method, x_drv if which == "driver" else x_ref, t, settings.reduce)

    return explain


def _warn_undefined(values: Tensor, metric: str, method: str, which: str) -> None:
    undefined = int((~torch.isfinite(values)).sum())
    if undefined:
        warnings.warn(f"metric {metric} is undefined (NaN) for {undefined} of {len(values)} {method} {which} maps "
                      "(e.g. a deletion/insertion curve of an image whose clean response is not positive, a constant "
                      "map in a rank correlation, or an empty ground-truth mask: a pair that shares none of the "
                      "neuron's parts); summary.csv averages the finite values and counts them in n",
                      stacklevel=3)


def tidy_rows(pairs: Sequence[Pair], explained: Explained, neuron_ids: Sequence[str],
              stimulus_ids: Sequence[str], categories: Sequence[str]) -> list[dict[str, Any]]:
    """One row per pair × method × image × metric (the tidy results table)."""
    rows = []
    for (method, metric, which), values in explained.scores.items():
        for p, v in zip(pairs, values.tolist()):
            rows.append({"neuron": neuron_ids[p.neuron], "driver": stimulus_ids[p.driver],
                         "driver_category": categories[p.driver], "reference": stimulus_ids[p.reference],
                         "rank": p.rank, "similarity": p.similarity, "method": method, "image": which,
                         "metric": metric, "value": v, "higher_is_better": explained.higher_is_better[metric]})
    return rows
