"""Built-in readout: gaussian2d, one location per neuron read out by bilinear interpolation.

Each neuron has a location ``μ_n ∈ [-1, 1]²`` in ``grid_sample`` coordinates ``(x, y)``:
``x`` runs over the width and ``y`` over the height, with ``-1`` and ``1`` at the centres of
the first and last latent pixels (``align_corners=True``). While training, the readout
point is drawn from ``N(μ_n, σ_n² I)`` with a learned std ``σ_n``, per image and neuron,
which lets the location explore beyond its pixel; in eval mode it is ``μ_n`` itself.
Points are clamped to ``[-1, 1]²``. ``z_n(x)`` ``[C]`` is the latents at that point, and
``r_n = φ(⟨f_n, z_n(x)⟩ + b_n)``. Trained by SGD with an L1 penalty on the features.

Gradients reach ``μ_n`` only through the interpolation between neighbouring pixels, so a
location that starts far from the neuron's receptive field rarely finds it. By default
(``init_mu="covariance"``) each location therefore starts at the latent pixel whose channel
vector covaries most with the neuron's responses (the largest ``Σ_c cov(x_c,hw, y_n)²``).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from sharedattr.encoding.readouts.training import TrainedReadout, TrainedReadoutParams, l1_penalty
from sharedattr.plugins.hookspecs import hookimpl
from sharedattr.plugins.params import register_components


class Gaussian2dParams(TrainedReadoutParams):
    """Params of the ``gaussian2d`` readout."""

    l1_features: float = Field(1e-3, ge=0, description="L1 penalty on each neuron's feature vector (few channels).")
    init_mu: Literal["covariance", "random"] = Field(
        "covariance",
        description="Initial locations: the pixel whose latents covary most with the responses, or random "
        "(uniform in [-init_mu_range, init_mu_range]²).",
    )
    init_mu_range: float = Field(
        0.5, ge=0, le=1, description="Range of the random initial locations (init_mu = random)."
    )
    init_sigma: float = Field(
        0.2, gt=0, description="Initial std of the training-time location noise, in grid units ([-1, 1] spans the map)."
    )


class Gaussian2dReadout(TrainedReadout):
    """``r_n = φ(⟨f_n, x(μ_n)⟩ + b_n)``: latents read at location ``μ`` ``[N, 2]``, features ``f`` ``[N, C]``."""

    name = "gaussian2d"
    params_model = Gaussian2dParams
    description = (
        "Latents read at one learned location per neuron (Gaussian-jittered while training); SGD, L1 features."
    )
    no_weight_decay = ("_bias", "mu", "sigma")

    def __init__(self, params: Gaussian2dParams | None = None, **overrides: Any) -> None:
        super().__init__(params, **overrides)
        self.register_parameter("mu", None)
        self.register_parameter("sigma", None)
        self.register_parameter("features", None)

    def initialize(self, latent_shape: tuple[int, ...], n_neurons: int) -> None:
        """Allocate the bias ``[N]``, locations ``μ`` ``[N, 2]``, stds ``σ`` ``[N]`` and features ``[N, C]``.

        ``σ`` is trained unconstrained; only its magnitude matters, as ``ε`` is symmetric.
        """
        super().initialize(latent_shape, n_neurons)
        c = self.latent_shape[0]
        self.mu = nn.Parameter((2 * torch.rand(n_neurons, 2) - 1) * self.params.init_mu_range)
        self.sigma = nn.Parameter(torch.full((n_neurons,), self.params.init_sigma))
        self.features = nn.Parameter(torch.randn(n_neurons, c) / math.sqrt(c))

    def fit(self, latents: Tensor, responses: Tensor) -> Gaussian2dReadout:
        """Train (see :meth:`TrainedReadout.fit`), then clamp ``μ`` to [-1, 1]², where eval already reads it."""
        super().fit(latents, responses)
        with torch.no_grad():
            self.mu.clamp_(-1, 1)
        return self

    def init_from_data(self, latents: Tensor, responses: Tensor) -> None:
        """With ``init_mu = "covariance"``, move each ``μ_n`` to its most covarying pixel; then set the bias.

        ``Σ_s x_s (y_sn − ȳ_n)`` over a neuron's valid rows is its covariance with every
        latent ``[C, H, W]`` (up to a factor), without centring the latents.
        """
        if self.params.init_mu == "covariance":
            valid = ~torch.isnan(responses)
            centred = torch.where(valid, responses - torch.nanmean(responses, 0), 0.0)  # [S, N]
            c, h, w = self.latent_shape
            cov = (latents.flatten(1).T @ centred).view(c, h * w, -1)  # [C, HW, N]
            best = cov.pow(2).sum(0).argmax(0)  # [N], flat pixel index
            xs, ys = torch.linspace(-1, 1, w, device=latents.device), torch.linspace(-1, 1, h, device=latents.device)
            self.mu.copy_(torch.stack([xs[best % w], ys[best // w]], dim=1))
        super().init_from_data(latents, responses)

    def locations(self, batch_size: int) -> Tensor:
        """Readout points ``[B, N, 2]``: ``μ`` in eval mode, ``μ + σ·ε`` (ε ~ N(0, I)) in training; clamped to
        [-1, 1]."""
        loc = self.mu.expand(batch_size, -1, -1)
        if self.training:
            loc = loc + self.sigma[:, None] * torch.randn_like(loc)
        return loc.clamp(-1, 1)

    def pooled(self, latents: Tensor) -> Tensor:
        """``z`` ``[B, N, C]``: latents ``[B, C, H, W]`` bilinearly sampled at each neuron's point (one call)."""
        x = self.spatial(latents)
        grid = self.locations(x.shape[0])[:, :, None, :]  # [B, N, 1, 2]
        return F.grid_sample(x, grid, mode="bilinear", align_corners=True)[..., 0].transpose(1, 2)

    @property
    def weight(self) -> Tensor:
        """``w = f`` ``[N, C]``."""
        return self._fitted(self.features)

    def regularizer(self) -> Tensor:
        """``l1_features · mean_n ‖f_n‖₁``."""
        return l1_penalty(self.features, self.params.l1_features)


@hookimpl
def register_readouts(register):
    register_components(register, (Gaussian2dReadout,))
