"""Complexity metrics: how concentrated an attribution map is (Gini sparseness)."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from sharedattr.metrics.base import ConfigurableMetric
from sharedattr.plugins.contracts import AttributionBatch
from sharedattr.plugins.hookspecs import hookimpl
from sharedattr.plugins.params import register_components


def gini(maps: Tensor) -> Tensor:
    """Gini index of ``|maps|`` ``[B, H, W]`` → ``[B]`` in [0, 1] (Hurley & Rickard 2009); 0 for an all-zero map."""
    x = maps.detach().abs().flatten(1).sort(dim=1).values  # ascending
    n = x.shape[1]
    total = x.sum(1)
    k = torch.arange(1, n + 1, dtype=x.dtype, device=x.device)
    g = 1 - 2 * ((x / total.clamp(min=torch.finfo(x.dtype).tiny)[:, None]) * ((n - k + 0.5) / n)).sum(1)
    return torch.where(total > 0, g, torch.zeros_like(g))


class GiniMetric(ConfigurableMetric):
    """Sparseness of the attribution map: higher = more concentrated."""

    name = "gini"
    description = "Gini sparseness of |map| (higher = sparser)."
    higher_is_better: ClassVar[bool] = True
    family = "complexity"
    thread_safe: ClassVar[bool] = True

    def __call__(self, batch: AttributionBatch) -> Tensor:
        return gini(batch.maps)


@hookimpl
def register_metrics(register):
    register_components(register, [GiniMetric])
