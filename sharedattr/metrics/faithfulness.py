"""Faithfulness metrics: does the map predict how the model neuron's response changes when pixels change?

- ``deletion`` / ``insertion``: remove (or add) pixels in order of attribution and integrate the
  neuron's normalised response curve;
- ``faithfulness_correlation`` (Bhatt et al. 2020): does the relevance of a random pixel subset
  predict the response drop when that subset is removed?
"""

from __future__ import annotations

import hashlib
import weakref
from collections import OrderedDict
from typing import Any, ClassVar

import torch
from pydantic import Field
from torch import Tensor

from sharedattr.metrics.base import ConfigurableMetric
from sharedattr.plugins.contracts import AttributionBatch
from sharedattr.plugins.hookspecs import hookimpl
from sharedattr.plugins.params import Params, Seed, register_components

CPU_IMAGES_PER_PASS = 8
"""Default perturbed images per forward pass on the CPU. A deep network's forward pass runs faster per image in
small batches there, because its activations stay in cache: ResNet-50 to layer3 at 224 px took 67 ms per image at
64 per pass, 48 at 16, 34 at 8 and 26 at 1 (2 cores; docs/scaling.md)."""
ACCELERATOR_IMAGES_PER_PASS = 64
"""Default perturbed images per forward pass on a GPU (or any other device), where larger batches fill it."""


def perturbed_per_pass(batch_size: int | None, device: torch.device) -> int:
    """``batch_size``, or the device's default when it is None (:data:`CPU_IMAGES_PER_PASS`, else
    :data:`ACCELERATOR_IMAGES_PER_PASS`)."""
    if batch_size is not None:
        return batch_size
    return CPU_IMAGES_PER_PASS if torch.device(device).type == "cpu" else ACCELERATOR_IMAGES_PER_PASS


BATCH_HELP = "Perturbed images per forward pass (null: 8 on the CPU, where small batches run faster, 64 on a GPU)."


class PerturbationParams(Params):
    steps: int = Field(20, ge=2, le=1000, description="Number of perturbation steps between 0% and 100% of pixels.")
    baseline: float = Field(0.0, description="Pixel value of removed pixels (0 = black, 0.5 = mid-grey).")
    batch_size: int | None = Field(None, ge=1, description=BATCH_HELP)


def batch_key(batch: AttributionBatch) -> tuple[int, str]:
    """``(id(model), sha256 of the images, their shape and the target neurons)``: what a map-independent forward
    pass over ``batch`` depends on (the maps excluded)."""
    h = hashlib.sha256(batch.inputs.detach().cpu().contiguous().numpy().tobytes())
    h.update(batch.targets.detach().cpu().long().numpy().tobytes())
    h.update(str(tuple(batch.inputs.shape)).encode())
    return id(batch.model), h.hexdigest()


class ModelCache:
    """The last ``size`` map-independent results, keyed by :func:`batch_key` (and a caller's extra key).

    A result is reused only for the very same model object, still alive (a weak reference), so a
    model rebuilt at the same address never reads another's results.
    """

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self._items: OrderedDict[tuple, tuple[weakref.ref, Tensor]] = OrderedDict()

    def get(self, batch: AttributionBatch, extra: tuple, compute) -> Tensor:  # noqa: ANN001 - a callable
        key = (*batch_key(batch), *extra)
        cached = self._items.get(key)
        if cached is not None and cached[0]() is batch.model:
            self._items.move_to_end(key)
            return cached[1]
        value = compute()
        self._items[key] = (weakref.ref(batch.model), value)
        while len(self._items) > self.size:
            self._items.popitem(last=False)
        return value


@torch.no_grad()
def target_responses(batch: AttributionBatch, images: Tensor, which: Tensor, batch_size: int) -> Tensor:
    """The target neuron's response ``[K]`` to each of ``images`` ``[K, C, H, W]``, image ``k`` scored for the
    neuron of map ``which[k]``; ``batch_size`` images per forward pass."""
    targets = batch.targets.to(images.device)
    out = [
        batch.model(images[i : i + batch_size]).gather(1, targets[which[i : i + batch_size], None]).squeeze(1)
        for i in range(0, len(images), batch_size)
    ]
    return torch.cat(out) if out else images.new_zeros(0)


class PerturbationCurve(ConfigurableMetric):
    """Removes (deletion) or adds (insertion) pixels in order of attribution; scores the normalised AUC.

    With ``r(t)`` the neuron's response after a fraction ``t`` of pixels is perturbed
    (most relevant first), the curve ``r(t) / r_clean`` is integrated over ``t ∈ [0, 1]``
    (trapezoid rule): the area under the curve normalised by the clean response. For
    deletion the perturbed image starts clean (``t = 0``) and ends all-baseline; for
    insertion it starts all-baseline and ends clean. NaN (undefined) where the clean
    response is not positive: explain neurons on images that drive them.

    Cost: ``steps - 1`` forward passes per map. The two ends of every curve do not depend on the
    map: the clean image's response is computed once per image and neuron and reused for every
    method's maps of the same images (the last ``cache_size`` batches are kept), and the
    all-baseline image, the same for every image, once per batch.
    """

    params_model = PerturbationParams
    insertion: ClassVar[bool]
    family = "faithfulness"
    thread_safe: ClassVar[bool] = True
    cache_size: ClassVar[int] = 64

    def __init__(self, params: PerturbationParams | None = None, **overrides: Any) -> None:
        super().__init__(params, **overrides)
        self._clean = ModelCache(self.cache_size)

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
        steps = self.params.steps
        fractions = torch.linspace(0, 1, steps + 1, device=x.device)
        counts = (fractions * h * w).round().long()  # pixels perturbed at each step
        inner = steps - 1  # steps 1 … steps - 1: the map's own images
        baseline = torch.full_like(x[:1], self.params.baseline)
        every = torch.arange(b, device=x.device)
        size = perturbed_per_pass(self.params.batch_size, x.device)
        clean = self._clean.get(batch, (), lambda: target_responses(batch, x, every, size))
        out = []
        with torch.no_grad():
            for i in range(0, b * inner, size):  # the perturbed images of one pass only: bounded memory
                k = torch.arange(i, min(i + size, b * inner), device=x.device)
                image, step = k // inner, k % inner + 1
                perturbed = rank.view(b, 1, h, w)[image] < counts[step].view(-1, 1, 1, 1)  # [k, 1, H, W]
                if self.insertion:
                    perturbed = ~perturbed
                out.append(target_responses(batch, torch.where(perturbed, baseline, x[image]), image, size))
        middle = torch.cat(out).view(b, inner) if out else x.new_zeros(b, 0)
        blank = self._blank(batch, baseline)
        start, end = (blank, clean) if self.insertion else (clean, blank)
        r = torch.cat([start[:, None], middle, end[:, None]], dim=1)
        return r / torch.where(clean > 1e-12, clean, torch.full_like(clean, float("nan")))[:, None]

    def _blank(self, batch: AttributionBatch, baseline: Tensor) -> Tensor:
        """Each map's target neuron's response ``[B]`` to the all-baseline image (one forward pass)."""
        with torch.no_grad():
            every = batch.model(baseline)[0]  # [neurons]
        return every[batch.targets.to(every.device)]

    def __call__(self, batch: AttributionBatch) -> Tensor:
        curve = self.curves(batch)
        return torch.trapezoid(curve, dx=1.0 / self.params.steps, dim=1)


class DeletionMetric(PerturbationCurve):
    """Deletion AUC: lower = the map's top pixels remove the response faster."""

    name = "deletion"
    description = "Deletion AUC of the neuron's response, normalised by the clean response (lower is better)."
    insertion = False


class InsertionMetric(PerturbationCurve):
    """Insertion AUC: higher = the map's top pixels restore the response faster."""

    name = "insertion"
    description = "Insertion AUC of the neuron's response, normalised by the clean response (higher is better)."
    insertion = True


class FaithfulnessCorrelationParams(Params):
    n_runs: int = Field(100, ge=2, description="Random pixel subsets per map (the correlation's sample size).")
    subset_size: int = Field(224, ge=1, description="Pixels per subset; must be smaller than H·W.")
    baseline: float = Field(0.0, description="Value given to every channel of a removed pixel (0 = black).")
    seed: Seed = Field(0, description="Seed of the random subsets.")
    batch_size: int | None = Field(None, ge=1, description=BATCH_HELP)


def random_subsets(n_runs: int, n_pixels: int, subset_size: int, seed: int) -> Tensor:
    """``n_runs`` seeded uniform random subsets of ``subset_size`` of ``n_pixels`` pixels, as masks ``[R, P]``."""
    if not 0 < subset_size < n_pixels:
        raise ValueError(
            f"faithfulness_correlation: subset_size must be in [1, {n_pixels - 1}] for images with "
            f"{n_pixels} pixels; got {subset_size}"
        )
    keys = torch.rand(n_runs, n_pixels, generator=torch.Generator().manual_seed(seed))
    chosen = keys.topk(subset_size, dim=1).indices
    return torch.zeros(n_runs, n_pixels, dtype=torch.bool).scatter_(1, chosen, True)


def row_pearson(a: Tensor, b: Tensor) -> Tensor:
    """Pearson r between matching rows of ``a`` and ``b`` ``[B, R]`` → ``[B]``; NaN where a row is constant."""
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    denom = (a.pow(2).sum(1) * b.pow(2).sum(1)).sqrt()
    r = (a * b).sum(1) / torch.where(denom > 0, denom, torch.ones_like(denom))
    return torch.where(denom > 0, r, torch.full_like(r, float("nan")))


@torch.no_grad()
def response_drops(batch: AttributionBatch, subsets: Tensor, baseline: float, batch_size: int) -> Tensor:
    """``r(x) − r(x with subset s set to baseline)`` of each target neuron, ``[B, R]``, for subsets ``[R, H·W]``."""
    x, targets = batch.inputs.detach(), batch.targets.to(batch.inputs.device)
    b, c, h, w = x.shape
    runs = subsets.shape[0]
    subsets = subsets.to(x.device).view(runs, 1, h, w)
    clean = batch.model(x).gather(1, targets[:, None]).squeeze(1)  # [B]
    pairs = torch.arange(b * runs, device=x.device)  # pair k = (image k // R, subset k % R)
    perturbed = []
    for chunk in pairs.split(batch_size):
        item, run = chunk // runs, chunk % runs
        images = torch.where(subsets[run], torch.full_like(x[:1], baseline), x[item])
        perturbed.append(batch.model(images).gather(1, targets[item, None]).squeeze(1))
    return clean[:, None] - torch.cat(perturbed).view(b, runs)


class FaithfulnessCorrelationMetric(ConfigurableMetric):
    """Pearson r, over random pixel subsets, between their summed attribution and the response drop.

    Every map in a batch is scored with the same ``n_runs`` seeded subsets, so a map's
    score does not depend on the other maps in its batch. Higher is better; NaN where
    either quantity is constant over the subsets (e.g. a constant map).

    The response drops depend on the model, images and neurons but not on the maps, so
    they are computed once and reused when other methods' maps of the same images are
    scored (the last ``cache_size`` batches are kept, keyed by their content).
    """

    name = "faithfulness_correlation"
    description = (
        "Pearson r between a random pixel subset's summed attribution and the neuron's response drop when it is "
        "removed (higher is better)."
    )
    params_model = FaithfulnessCorrelationParams
    cache_size: ClassVar[int] = 64

    higher_is_better: ClassVar[bool] = True
    family = "faithfulness"
    thread_safe: ClassVar[bool] = True

    def __init__(self, params: FaithfulnessCorrelationParams | None = None, **overrides: Any) -> None:
        super().__init__(params, **overrides)
        self._drops = ModelCache(self.cache_size)

    def __call__(self, batch: AttributionBatch) -> Tensor:
        maps = batch.maps.detach().flatten(1)  # [B, P]
        p = self.params
        subsets = random_subsets(p.n_runs, maps.shape[1], p.subset_size, p.seed)
        relevance = maps @ subsets.to(maps).T  # [B, R]: summed attribution of each subset
        drops = self._cached_drops(batch, subsets)
        return row_pearson(relevance.double(), drops.to(relevance.device).double()).to(maps.dtype)

    def _cached_drops(self, batch: AttributionBatch, subsets: Tensor) -> Tensor:
        """:func:`response_drops`, reused for a batch with the same model object, images and neurons."""
        size = perturbed_per_pass(self.params.batch_size, batch.inputs.device)
        return self._drops.get(batch, (), lambda: response_drops(batch, subsets, self.params.baseline, size))


@hookimpl
def register_metrics(register):
    register_components(register, [DeletionMetric, InsertionMetric, FaithfulnessCorrelationMetric])
