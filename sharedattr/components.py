"""The contracts every component kind meets (structural: plugins need not inherit).

Shapes: images ``[B, C, H, W]`` float in [0, 1]; latents ``[B, C', H', W']`` or ``[B, D]``;
responses ``[B, N]``; pooled latents ``z`` ``[B, N, D]``; readout weights ``w`` ``[N, D]``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, runtime_checkable

import torch
from torch import Tensor, nn


@runtime_checkable
class Backbone(Protocol):
    """A frozen, eval-mode network cut at a layer (an ``nn.Module``: the pipeline moves it to a device)."""

    input_size: tuple[int, int]
    in_channels: int

    def preprocess(self, images: Tensor) -> Tensor:
        """Images ``[B, C, H, W]`` in [0, 1] at ``input_size`` → the network's normalised input."""

    def __call__(self, x: Tensor) -> Tensor:
        """Preprocessed images ``[B, C, H, W]`` → latents ``[B, C', H', W']`` or ``[B, D]``."""

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """Shape of one image's latents, without the batch dimension."""


@runtime_checkable
class Readout(Protocol):
    """Per-neuron readout meeting ``r_n(x) = φ(⟨w_n, z_n(x)⟩ + b_n)`` (an ``nn.Module``)."""

    def initialize(self, latent_shape: tuple[int, ...], n_neurons: int) -> None:
        """Allocate parameters for latents of ``latent_shape`` (no batch dim) and ``n_neurons``.

        After this, ``load_state_dict`` of a fitted readout of the same spec restores it exactly.
        """

    def fit(self, latents: Tensor, responses: Tensor) -> "Readout":
        """Initialize, then fit in place to latents ``[B, ...]`` and responses ``[B, N]`` (NaN = missing); returns self."""

    def __call__(self, latents: Tensor) -> Tensor:
        """Latents ``[B, ...]`` → responses ``[B, N]``."""

    def pooled(self, latents: Tensor) -> Tensor:
        """``z``: each neuron's pooled latent vector, ``[B, N, D]`` (may be an expanded view)."""

    @property
    def weight(self) -> Tensor:
        """``w`` ``[N, D]``."""

    @property
    def bias(self) -> Tensor:
        """``b`` ``[N]``."""

    def nonlinearity(self, x: Tensor) -> Tensor:
        """``φ``, applied elementwise to ``⟨w_n, z_n⟩ + b_n``."""


class Matcher(Protocol):
    """A similarity between contribution vectors; higher is more similar."""

    def similarity(self, a: Tensor, b: Tensor) -> Tensor:
        """``a [..., Q, D]``, ``b [..., K, D]`` → ``[..., Q, K]``."""


@dataclass
class AttributionBatch:
    """Everything a metric may need about a batch of attribution maps.

    ``inputs`` ``[B, C, H, W]``; ``maps`` ``[B, H, W]`` (channel-reduced, signed);
    ``targets`` ``[B]`` neuron indices into the model output ``[B, N]``; ``masks``
    ``[B, H, W]`` bool ground truth, when the stimulus set has it.

    ``explain``, when given, recomputes these very maps with another encoding model:
    the same method, params, images (and pair partners), targets and channel reduction;
    ``explain(other_model) -> [B, H, W]``. Metrics that re-run the method (the model
    parameter randomisation check) declare ``requires_explainer = True`` and are skipped
    where it is missing.
    """

    model: nn.Module
    inputs: Tensor
    maps: Tensor
    targets: Tensor
    masks: Tensor | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    explain: Callable[[nn.Module], Tensor] | None = None


class Metric(Protocol):
    """Scores attribution maps; ``higher_is_better`` sets the direction for rankings."""

    higher_is_better: bool
    requires_masks: bool  # optional; False when absent
    requires_explainer: bool  # optional; False when absent (needs ``batch.explain``)

    def __call__(self, batch: AttributionBatch) -> Tensor:
        """One score per map, ``[B]`` (NaN only where the metric is undefined, e.g. no mask)."""


@dataclass
class SynthesisResult:
    """Synthesised images ``[S, C, H, W]`` in [0, 1], their responses ``[S]`` and the cost.

    ``prior_images``: a generative prior's own images ``[S, C', H', W']`` in [0, 1] (its
    resolution and channels), before they were fitted to the model; ``None`` without a prior.
    """

    images: Tensor
    responses: Tensor
    history: Tensor  # [steps, S] response of the target neuron per step
    cost: dict[str, float]
    prior_images: Tensor | None = None


class Synthesizer(Protocol):
    def synthesize(self, model: nn.Module, neuron: int, *, reference: Tensor | None = None) -> SynthesisResult:
        """Synthesise images that drive output ``neuron`` of ``model`` (images → ``[B, N]``).

        ``reference`` ``[C, H, W]`` in [0, 1] is the neuron's best natural image, when known.
        The returned images are what the model was evaluated on: ``responses`` equal
        ``model(images)[:, neuron]``.
        """


class EnergyValue(NamedTuple):
    """An energy evaluated on a batch: ``energy`` ``[B]`` (lower is better) and the neuron's ``response`` ``[B]``."""

    energy: Tensor
    response: Tensor


class Energy(Protocol):
    def bind(self, model: nn.Module, neuron: int,
             reference: Tensor | None = None) -> Callable[[Tensor], EnergyValue]:
        """The energy of images ``[B, C, H, W]`` in [0, 1] for output ``neuron`` of ``model``."""


def reduce_channels(attributions: Tensor, how: str = "sum") -> Tensor:
    """Attributions ``[B, C, H, W]`` → maps ``[B, H, W]``: signed channel ``sum`` or ``abs_sum``."""
    if attributions.dim() == 3:
        return attributions
    if how == "sum":
        return attributions.sum(dim=1)
    if how == "abs_sum":
        return attributions.abs().sum(dim=1)
    raise ValueError(f"unknown channel reduction {how!r}; use 'sum' or 'abs_sum'")


def require_measured_neurons(responses: Tensor, who: str) -> None:
    """Raise :class:`~sharedattr.errors.UserError` naming every neuron (column of ``[S, N]``) that is all NaN."""
    from .errors import UserError

    empty = torch.isnan(responses).all(0).nonzero().squeeze(1).tolist()
    if empty:
        raise UserError(f"{who}: neuron(s) {empty} have no valid (non-NaN) response")


def pearson_columns(a: Tensor, b: Tensor) -> Tensor:
    """Pearson r between matching columns of ``a`` and ``b`` ``[B, N]`` → ``[N]`` (``a``'s dtype); NaN rows are ignored.

    Computed in float64 with the norms taken separately, so r is the same in any units (no
    overflow of large responses, no floor that pulls small ones to 0); 0 where a column is constant.
    """
    dtype = a.dtype
    a, b = a.double(), b.double()
    valid = ~(torch.isnan(a) | torch.isnan(b))
    n = valid.sum(0).clamp(min=1)
    am = torch.where(valid, a, 0.0).sum(0) / n
    bm = torch.where(valid, b, 0.0).sum(0) / n
    ac = torch.where(valid, a - am, 0.0)
    bc = torch.where(valid, b - bm, 0.0)
    denom = ac.pow(2).sum(0).sqrt() * bc.pow(2).sum(0).sqrt()
    r = (ac * bc).sum(0) / torch.where(denom > 0, denom, 1.0)
    return torch.where(denom > 0, r, torch.zeros_like(r)).clamp(-1.0, 1.0).to(dtype)
