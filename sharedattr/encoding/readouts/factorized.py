"""Built-in readout: factorized, a spatial mask times a feature vector per neuron.

``z_n(x) = Σ_hw m_nhw · x_:hw`` ``[C]`` pools the latents with the neuron's spatial mask
``m_n`` ``[H, W]``; the neuron's feature vector ``f_n`` ``[C]`` is its weight:
``r_n = φ(⟨f_n, z_n(x)⟩ + b_n)``. Trained by SGD (:func:`sharedattr.encoding.readouts.training.train`)
with L1 penalties on masks and features.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from pydantic import Field
from torch import Tensor, nn

from sharedattr.encoding.readouts.training import TrainedReadout, TrainedReadoutParams, l1_penalty
from sharedattr.plugins.hookspecs import hookimpl
from sharedattr.plugins.params import register_components


class FactorizedParams(TrainedReadoutParams):
    """Params of the ``factorized`` readout."""

    l1_mask: float = Field(
        1e-3, ge=0, description="L1 penalty on each neuron's spatial mask (sparse receptive fields)."
    )
    l1_features: float = Field(1e-3, ge=0, description="L1 penalty on each neuron's feature vector (few channels).")


class FactorizedReadout(TrainedReadout):
    """``r_n = φ(⟨f_n, Σ_hw m_nhw x_:hw⟩ + b_n)`` with mask ``m`` ``[N, H, W]`` and features ``f`` ``[N, C]``."""

    name = "factorized"
    params_model = FactorizedParams
    description = "Spatial mask [N, H, W] times feature vector [N, C] per neuron; SGD with L1 on both."

    def __init__(self, params: FactorizedParams | None = None, **overrides: Any) -> None:
        super().__init__(params, **overrides)
        self.register_parameter("mask", None)
        self.register_parameter("features", None)

    def initialize(self, latent_shape: tuple[int, ...], n_neurons: int) -> None:
        """Allocate the bias ``[N]``, mask ``[N, H, W]`` and features ``[N, C]``.

        Masks and features are drawn with std ``1/√(HW)`` and ``1/√C``, so the initial
        drive has the scale of a single latent.
        """
        super().initialize(latent_shape, n_neurons)
        c, h, w = self.latent_shape
        self.mask = nn.Parameter(torch.randn(n_neurons, h, w) / math.sqrt(h * w))
        self.features = nn.Parameter(torch.randn(n_neurons, c) / math.sqrt(c))

    def pooled(self, latents: Tensor) -> Tensor:
        """``z`` ``[B, N, C]``: the latents ``[B, C, H, W]`` summed over space, weighted by each neuron's mask."""
        return torch.einsum("bchw,nhw->bnc", self.spatial(latents), self.mask)

    @property
    def weight(self) -> Tensor:
        """``w = f`` ``[N, C]``."""
        return self._fitted(self.features)

    def regularizer(self) -> Tensor:
        """``l1_mask · mean_n ‖m_n‖₁ + l1_features · mean_n ‖f_n‖₁``."""
        return l1_penalty(self.mask, self.params.l1_mask) + l1_penalty(self.features, self.params.l1_features)


@hookimpl
def register_readouts(register):
    register_components(register, (FactorizedReadout,))
