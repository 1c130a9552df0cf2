"""Localisation metrics: how well an attribution map agrees with a ground-truth mask.

Each metric compares maps ``R`` ``[B, H, W]`` with boolean masks ``M`` ``[B, H, W]``
(``batch.masks``) and returns ``[B]`` scores; an empty mask gives NaN (undefined).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import Tensor

from sharedattr.metrics.base import ConfigurableMetric
from sharedattr.plugins.contracts import AttributionBatch
from sharedattr.plugins.hookspecs import hookimpl
from sharedattr.plugins.params import Params, register_components

Relevance = Literal["positive", "absolute"]


def _flat(batch: AttributionBatch, who: str) -> tuple[Tensor, Tensor]:
    """Maps and masks of ``batch`` flattened to ``[B, H·W]`` (float maps, bool masks)."""
    if batch.masks is None:
        raise ValueError(f"{who} needs ground-truth masks (batch.masks is None)")
    maps, masks = batch.maps.detach(), batch.masks.to(device=batch.maps.device, dtype=torch.bool)
    if masks.shape != maps.shape:
        raise ValueError(f"{who}: masks {tuple(masks.shape)} do not match maps {tuple(maps.shape)}")
    return maps.flatten(1).float(), masks.flatten(1)


def _undefined_where(scores: Tensor, undefined: Tensor) -> Tensor:
    return torch.where(undefined, torch.full_like(scores, float("nan")), scores)


def pointing_game(maps: Tensor, masks: Tensor) -> Tensor:
    """1 if the maximum of each map ``[B, P]`` lies in its mask ``[B, P]``, else 0 → ``[B]``.

    On ties the first maximal pixel in row-major order counts (``torch.argmax``); NaN for
    an empty mask.
    """
    hit = masks.gather(1, maps.argmax(1, keepdim=True)).squeeze(1).to(maps.dtype)
    return _undefined_where(hit, ~masks.any(1))


def relevance_mass(maps: Tensor, masks: Tensor, relevance: Relevance = "positive") -> Tensor:
    """Share of the map's relevance ``[B, P]`` inside the mask ``[B, P]`` → ``[B]`` in [0, 1].

    ``relevance`` is the positive part (``max(R, 0)``) or ``|R|``; NaN for an empty mask
    or a map with no relevance of that kind.
    """
    r = maps.clamp(min=0) if relevance == "positive" else maps.abs()
    total = r.sum(1)
    inside = (r * masks).sum(1)
    return _undefined_where(
        inside / torch.where(total > 0, total, torch.ones_like(total)), (total <= 0) | ~masks.any(1)
    )


def relevance_rank(maps: Tensor, masks: Tensor) -> Tensor:
    """Fraction of the ``K = |M|`` highest-ranked pixels of each map ``[B, P]`` that lie in its mask → ``[B]``.

    Ranking is descending by signed value; ties keep row-major order (a stable sort). NaN
    for an empty mask.
    """
    k = masks.sum(1)  # [B]
    order = maps.argsort(dim=1, descending=True, stable=True)
    top = torch.arange(maps.shape[1], device=maps.device)[None, :] < k[:, None]  # first K ranks
    hits = (masks.gather(1, order) & top).sum(1).to(maps.dtype)
    return _undefined_where(hits / k.clamp(min=1), k == 0)


class PointingGameMetric(ConfigurableMetric):
    """Pointing game (Zhang et al. 2018): is the map's maximum inside the mask? Higher is better."""

    name = "pointing_game"
    description = "1 if the map's maximum lies inside the ground-truth mask, else 0 (higher is better)."
    higher_is_better: ClassVar[bool] = True
    family = "localisation"
    thread_safe: ClassVar[bool] = True
    requires_masks: ClassVar[bool] = True

    def __call__(self, batch: AttributionBatch) -> Tensor:
        return pointing_game(*_flat(batch, "pointing_game"))


class RelevanceMassParams(Params):
    relevance: Relevance = Field(
        "positive", description="Relevance counted: 'positive' (max(R, 0), Arras et al. 2022) or 'absolute' (|R|)."
    )


class RelevanceMassMetric(ConfigurableMetric):
    """Relevance mass accuracy (Arras et al. 2022): relevance inside the mask / total relevance. Higher is better."""

    name = "relevance_mass"
    description = "Share of the map's positive (or absolute) relevance inside the mask (higher is better)."
    params_model = RelevanceMassParams
    higher_is_better: ClassVar[bool] = True
    family = "localisation"
    thread_safe: ClassVar[bool] = True
    requires_masks: ClassVar[bool] = True

    def __call__(self, batch: AttributionBatch) -> Tensor:
        return relevance_mass(*_flat(batch, "relevance_mass"), self.params.relevance)


class RelevanceRankMetric(ConfigurableMetric):
    """Relevance rank accuracy (Arras et al. 2022): share of the top-|mask| pixels inside the mask. Higher is better."""

    name = "relevance_rank"
    description = "Share of the top-|mask| pixels of the map that lie inside the mask (higher is better)."
    higher_is_better: ClassVar[bool] = True
    family = "localisation"
    thread_safe: ClassVar[bool] = True
    requires_masks: ClassVar[bool] = True

    def __call__(self, batch: AttributionBatch) -> Tensor:
        return relevance_rank(*_flat(batch, "relevance_rank"))


@hookimpl
def register_metrics(register):
    register_components(register, [PointingGameMetric, RelevanceMassMetric, RelevanceRankMetric])
