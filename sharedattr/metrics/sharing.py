"""Sharing metrics: does a map show what the two images of a pair *share*, rather than what drives the neuron?

Both need part ground truth (manifest ``mask:<part>`` columns and ``data.neuron_parts``): for a
pair, the *shared* driving parts are the neuron's parts both images show, the *unshared* ones
those only this image shows (:class:`~sharedattr.data.ground_truth.PairTruth`). Where the pair set provides
piece-level truth (``mask:<part>/<piece>`` columns, as :func:`sharedattr.data.insilico.write_pair_set` writes),
both metrics score it: only the copied pieces are shared (a reference's other limbs are unshared driving parts),
and reference sensitivity erases the copied piece from the partner, not the whole part. Relevance is
the positive part of the map, ``R⁺ = max(R, 0)``.

- ``shared_part_selectivity``: ``Σ R⁺ over the shared driving parts / Σ R⁺ over all driving parts``
  of the image, in [0, 1]. A map that spreads evenly over the driving parts scores their area
  ratio (chance); a map of what is shared scores 1. Undefined (NaN) where the image has no
  unshared driving part (then every map scores 1 and nothing is learned) or no relevance on its
  driving parts.
- ``reference_sensitivity``: for each shared part ``P``, the map is recomputed with ``P`` erased
  from the partner image; ``share_P`` is the share of the map's driving-part relevance on ``P``
  before (``b_P``) and after (``a_P``). The score is ``Σ_P (b_P − a_P) / Σ_P b_P``: the fraction of
  the map's shared-part relevance share that goes once the partner lacks the part, each part
  weighted by its share (one part: ``1 − a_P / b_P``). 1: the map drops every part the partner
  lacks; 0: it does not change, as a single-image method's map cannot (0 by construction);
  negative: the part gains. ``parts`` restricts it to some shared parts (e.g. the head alone).
  ``P`` is erased by filling its pixels with ``fill`` (default: the median of the partner's
  pixels outside its annotated parts, per channel: its background, for figures on a background).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field
from torch import Tensor

from sharedattr.metrics.base import ConfigurableMetric
from sharedattr.plugins.contracts import AttributionBatch
from sharedattr.plugins.hookspecs import hookimpl
from sharedattr.plugins.params import Params, register_components


def positive_mass(maps: Tensor, masks: Tensor) -> Tensor:
    """``Σ max(R, 0)`` inside each mask: maps and masks ``[B, H, W]`` → ``[B]``."""
    return (maps.clamp(min=0) * masks.to(maps.dtype)).flatten(1).sum(1)


def shared_part_selectivity(maps: Tensor, shared: Tensor, unshared: Tensor) -> Tensor:
    """``R⁺(shared) / R⁺(shared ∪ unshared)`` ``[B]``; NaN where ``unshared`` is empty or no relevance falls on the
    driving parts."""
    inside = positive_mass(maps, shared)
    total = positive_mass(maps, shared | unshared)
    ok = (total > 0) & unshared.flatten(1).any(1) & shared.flatten(1).any(1)
    return torch.where(ok, inside / torch.where(total > 0, total, torch.ones_like(total)), torch.nan)


def part_share(maps: Tensor, part: Tensor, driving: Tensor) -> Tensor:
    """The share of the driving-part relevance that falls on ``part`` ``[B]`` (NaN without driving relevance)."""
    total = positive_mass(maps, driving)
    return torch.where(total > 0, positive_mass(maps, part) / torch.where(total > 0, total, 1.0), torch.nan)


def erase(images: Tensor, mask: Tensor, known: Tensor, fill: float | None) -> Tensor:
    """``images`` ``[B, C, H, W]`` with the pixels of ``mask`` ``[B, H, W]`` set to ``fill``, or (None) to the
    median per image and channel of the pixels outside ``known`` (the annotated parts)."""
    out = images.clone()
    m = mask[:, None].expand_as(images)
    if fill is not None:
        return out.masked_fill_(m, fill)
    for i in range(images.shape[0]):
        outside = ~known[i]
        if not outside.any():
            continue
        values = images[i][:, outside].median(dim=1).values  # [C]
        out[i] = torch.where(mask[i][None], values[:, None, None], images[i])
    return out


class SharedPartSelectivityMetric(ConfigurableMetric):
    """Share of the map's driving-part relevance on the parts the pair shares (higher is better; chance: area ratio)."""

    name = "shared_part_selectivity"
    description = (
        "Share of the map's relevance on the driving parts both images of a pair show, of that on all driving parts "
        "(needs part ground truth; chance = their area ratio)."
    )
    higher_is_better: ClassVar[bool] = True
    family = "sharing"
    thread_safe: ClassVar[bool] = True
    requires_masks: ClassVar[bool] = True
    requires_part_truth: ClassVar[bool] = True
    undefined_when: ClassVar[str] = (
        "the image shows no driving part its partner lacks, so shared and driving parts coincide (common on a "
        "driver matched to a reference that has all its parts), or the map has no positive relevance on them"
    )

    def __call__(self, batch: AttributionBatch) -> Tensor:
        if batch.masks is None or batch.unshared_masks is None:
            raise ValueError("shared_part_selectivity needs part ground truth (batch.masks and batch.unshared_masks)")
        maps = batch.maps.detach().float()
        return shared_part_selectivity(maps, batch.masks.bool(), batch.unshared_masks.bool())


class ReferenceSensitivityParams(Params):
    fill: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Pixel value that erases a part from the partner image; null = the median of the partner's "
        "pixels outside its annotated parts (its background).",
    )
    parts: list[str] | None = Field(
        None,
        min_length=1,
        description='Score only these shared parts (e.g. ["head"]); null = every part the pair shares. A pair that '
        "shares none of them is NaN.",
    )


class ReferenceSensitivityMetric(ConfigurableMetric):
    """How much of its shared parts the map drops once the partner lacks them (higher is better; single-image maps:
    0)."""

    name = "reference_sensitivity"
    description = (
        "How much of its shared parts' relevance share the map drops when each is erased from the partner image, "
        "weighted by share (1 = all, 0 = unchanged, as every single-image map)."
    )
    params_model = ReferenceSensitivityParams
    higher_is_better: ClassVar[bool] = True
    family = "sharing"
    thread_safe: ClassVar[bool] = True
    requires_part_truth: ClassVar[bool] = True
    single_image_value: ClassVar[float] = 0.0  # a single-image map does not depend on the partner
    undefined_when: ClassVar[str] = (
        "the pair shares none of the neuron's driving parts (or none of `parts`), or the map puts no positive "
        "relevance on the shared ones"
    )

    def __call__(self, batch: AttributionBatch) -> Tensor:
        if batch.unshared_masks is None or batch.partners is None:
            raise ValueError("reference_sensitivity needs part ground truth and the pairs' partner images")
        maps = batch.maps.detach().float()
        shared = torch.zeros_like(batch.unshared_masks, dtype=torch.bool)
        for part in batch.shared_parts.values():
            shared |= part.bool()
        driving = shared | batch.unshared_masks.bool()
        partner_known = torch.zeros_like(next(iter(batch.partner_parts.values()), shared), dtype=torch.bool)
        for part in batch.partner_parts.values():
            partner_known |= part.bool()
        only = self.params.parts
        unknown = sorted(set(only or ()) - set(batch.shared_parts))
        if unknown and batch.shared_parts:
            raise ValueError(
                f"reference_sensitivity.parts: unknown part(s) {', '.join(unknown)}; the ground truth has "
                f"{', '.join(sorted(batch.shared_parts))}"
            )
        lost = torch.zeros(maps.shape[0], dtype=maps.dtype, device=maps.device)
        held = torch.zeros_like(lost)
        for name, part in batch.shared_parts.items():
            if only is not None and name not in only:
                continue
            on_partner = batch.partner_parts[name].bool()
            rows = part.flatten(1).any(1) & on_partner.flatten(1).any(1)
            if not rows.any():
                continue
            before = part_share(maps, part.bool(), driving)
            if batch.explain_with_partners is None:  # a single-image map does not depend on its partner
                after = before
            else:
                erased = erase(batch.partners, on_partner & rows[:, None, None], partner_known, self.params.fill)
                after = part_share(batch.explain_with_partners(erased).detach().float(), part.bool(), driving)
            ok = rows & torch.isfinite(before) & torch.isfinite(after)
            lost += torch.where(ok, before - after, 0.0)
            held += torch.where(ok, before, 0.0)
        return torch.where(held > 0, lost / torch.where(held > 0, held, 1.0), torch.nan)


@hookimpl
def register_metrics(register):
    register_components(register, [SharedPartSelectivityMetric, ReferenceSensitivityMetric])
