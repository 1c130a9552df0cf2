"""Built-in metrics: Gini sparseness, and deletion/insertion AUC on the model neuron."""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field
from torch import Tensor

from ..components import AttributionBatch
from ..hookspecs import hookimpl
from ..params import Params


def gini(maps: Tensor) -> Tensor:
    """Gini index of ``|maps|`` ``[B, H, W]`` → ``[B]`` in [0, 1] (Hurley & Rickard 2009); 0 for an all-zero map."""
    x = maps.detach().abs().flatten(1).sort(dim=1).values  # ascending
    n = x.shape[1]
    total = x.sum(1)
    k = torch.arange(1, n + 1, dtype=x.dtype, device=x.device)
    g = 1 - 2 * ((x / total.clamp(min=torch.finfo(x.dtype).tiny)[:, None]) * ((n - k + 0.5) / n)).sum(1)
    return torch.where(total > 0, g, torch.zeros_like(g))


class GiniMetric:
    """Sparseness of the attribution map: higher = more concentrated."""

    higher_is_better: ClassVar[bool] = True
    requires_masks: ClassVar[bool] = False

    def __call__(self, batch: AttributionBatch) -> Tensor:
        return gini(batch.maps)


class PerturbationParams(Params):
    steps: int = Field(20, ge=2, le=1000, description="Number of perturbation steps between 0% and 100% of pixels.")
    baseline: float = Field(0.0, description="Pixel value of removed pixels (0 = black, 0.5 = mid-grey).")
    batch_size: int = Field(64, ge=1, description="Perturbed images per forward pass.")


class PerturbationCurve:
    """Removes (deletion) or adds (insertion) pixels in order of attribution; scores the normalised AUC.

    With ``r(t)`` the neuron's response after a fraction ``t`` of pixels is perturbed
    (most relevant first), the curve ``r(t) / r_clean`` is integrated over ``t ∈ [0, 1]``
    (trapezoid rule): the area under the curve normalised by the clean response. For
    deletion the perturbed image starts clean (``t = 0``) and ends all-baseline; for
    insertion it starts all-baseline and ends clean. NaN (undefined) where the clean
    response is not positive: explain neurons on images that drive them.
    """

    insertion: ClassVar[bool]
    requires_masks: ClassVar[bool] = False

    def __init__(self, steps: int = 20, baseline: float = 0.0, batch_size: int = 64) -> None:
        self.steps, self.baseline, self.batch_size = steps, baseline, batch_size

    @property
    def higher_is_better(self) -> bool:
        return self.insertion

    def curves(self, batch: AttributionBatch) -> Tensor:
        """Normalised response curves ``[B, steps + 1]``."""
        x, maps = batch.inputs.detach(), batch.maps.detach()
        b, c, h, w = x.shape
        order = maps.flatten(1).argsort(dim=1, descending=True)  # most relevant first
        rank = torch.empty_like(order)
        rank.scatter_(1, order, torch.arange(h * w, device=x.device).expand(b, -1))
        fractions = torch.linspace(0, 1, self.steps + 1, device=x.device)
        counts = (fractions * h * w).round().long()  # pixels perturbed at each step
        perturbed = rank.view(b, 1, h, w) < counts.view(1, -1, 1, 1)  # [B, T, H, W]
        if self.insertion:
            perturbed = ~perturbed
        images = torch.where(perturbed[:, :, None], torch.full_like(x[:1, None], self.baseline), x[:, None])
        images = images.reshape(-1, c, h, w)
        targets = batch.targets.to(x.device).repeat_interleave(self.steps + 1)
        out = []
        with torch.no_grad():
            for i in range(0, images.shape[0], self.batch_size):
                resp = batch.model(images[i : i + self.batch_size])
                out.append(resp.gather(1, targets[i : i + self.batch_size, None]).squeeze(1))
        r = torch.cat(out).view(b, self.steps + 1)
        clean = r[:, -1] if self.insertion else r[:, 0]
        return r / torch.where(clean > 1e-12, clean, torch.full_like(clean, float("nan")))[:, None]

    def __call__(self, batch: AttributionBatch) -> Tensor:
        curve = self.curves(batch)
        return torch.trapezoid(curve, dx=1.0 / self.steps, dim=1)


class DeletionMetric(PerturbationCurve):
    """Deletion AUC: lower = the map's top pixels remove the response faster."""

    insertion = False


class InsertionMetric(PerturbationCurve):
    """Insertion AUC: higher = the map's top pixels restore the response faster."""

    insertion = True


@hookimpl
def register_metrics(register):
    register("gini", GiniMetric, description="Gini sparseness of |map| (higher = sparser).")
    register(
        "deletion", DeletionMetric, params=PerturbationParams,
        description="Deletion AUC of the neuron's response, normalised by the clean response (lower is better).",
    )
    register(
        "insertion", InsertionMetric, params=PerturbationParams,
        description="Insertion AUC of the neuron's response, normalised by the clean response (higher is better).",
    )
