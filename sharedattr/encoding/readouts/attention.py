"""Built-in readout: attention over latent positions, in two variants.

The latents ``[C, H, W]`` become ``S = HW`` tokens. A key and a value embedding, both linear maps to ``d``
dimensions shared by all neurons, give ``k_s`` and ``v_s``. Each neuron has a learned query ``q_n`` and feature
vector ``f_n`` ``[d]``:

``a_n = softmax_s(k_s · q_n · σ / T)``, ``z_n = Σ_s a_sn v_s`` ``[d]``, ``r_n = φ(⟨f_n, z_n⟩ + b_n)``.

- ``variant = "compact"`` (default): each token is its channel vector *concatenated* with a fixed 2-D sinusoidal
  encoding of its (row, col) position scaled to [-1, 1] (:func:`positional_encoding`, ``4F`` features); σ = 1, no
  dropout, ``d = 16``, identity φ. Small and quick to fit on small data.
- ``variant = "egg"``: the V4 readout of the EGG paper (Pierzchlewicz et al. 2023, the sinzlab attention readout):
  each token is its channel vector *plus* a sinusoidal encoding over all ``C`` channels
  (:func:`additive_positional_encoding`: the first ``C/2`` channels encode the row, the others the column,
  transformer frequencies ``10000^(-2k/m)``), with dropout (0.1) on the sum while training; σ = 1/√C, ``d = 128``,
  φ = ELU + 1.

The embeddings have no bias: a key bias shifts every score of a neuron equally (no effect on the softmax), and a
value bias only adds a constant to ``z_n`` (absorbed by ``b_n``). Trained by SGD with L1 penalties on features and
queries.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from sharedattr.encoding.readouts.training import TrainedReadout, TrainedReadoutParams, l1_penalty
from sharedattr.plugins.hookspecs import hookimpl
from sharedattr.plugins.params import register_components


class AttentionParams(TrainedReadoutParams):
    """Params of the ``attention`` readout."""

    variant: Literal["compact", "egg"] = Field(
        "compact",
        description="compact: a concatenated 4F-feature position encoding, no scale or dropout, d = 16, identity "
        "output; egg: the EGG paper's V4 readout (an additive encoding over all channels with dropout, scores "
        "scaled by 1/√C, d = 128, ELU + 1 output). The variant sets the defaults of embed_dim, pos_dropout and "
        "nonlinearity; fields given explicitly win.",
    )
    embed_dim: int = Field(16, ge=1, description="Dimension d of the shared key and value embeddings (egg: 128).")
    pos_dropout: float = Field(
        0.0, ge=0, lt=1, description="Dropout on the position-encoded tokens while training (egg: 0.1)."
    )
    temperature: float = Field(1.0, gt=0, description="Softmax temperature T of the attention scores k·q / T.")
    pos_frequencies: int = Field(
        4, ge=1, description="Frequencies per axis of the sinusoidal position encoding (4 features each)."
    )
    l1_features: float = Field(1e-3, ge=0, description="L1 penalty on each neuron's feature vector.")
    l1_queries: float = Field(1e-3, ge=0, description="L1 penalty on each neuron's query vector.")

    @model_validator(mode="before")
    @classmethod
    def _variant_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("variant") == "egg":
            data = {**EGG_DEFAULTS, **data}
        return data


EGG_DEFAULTS = {"embed_dim": 128, "pos_dropout": 0.1, "nonlinearity": "elu1"}
"""What ``variant = "egg"`` sets unless given: the EGG paper's embedding size, dropout and output nonlinearity."""


def positional_encoding(height: int, width: int, n_frequencies: int) -> Tensor:
    """Fixed 2-D sinusoidal encoding ``[H·W, 4F]`` of the latent pixels, row-major like ``latents.flatten(2)``.

    With row and column coordinates ``u`` scaled to ``[-1, 1]``, the features are
    ``sin(ω_k u)`` and ``cos(ω_k u)`` for rows, then for columns, with ``ω_k = (π/2)·2^k``,
    ``k < F``: the lowest frequency is unique over the map, the highest resolves ``2^(F-1)``
    cycles across it.
    """
    omega = (math.pi / 2) * 2.0 ** torch.arange(n_frequencies)
    rows = torch.linspace(-1, 1, height)[:, None] * omega  # [H, F]
    cols = torch.linspace(-1, 1, width)[:, None] * omega  # [W, F]
    rows = torch.cat([rows.sin(), rows.cos()], dim=1)[:, None, :].expand(-1, width, -1)  # [H, W, 2F]
    cols = torch.cat([cols.sin(), cols.cos()], dim=1)[None, :, :].expand(height, -1, -1)  # [H, W, 2F]
    return torch.cat([rows, cols], dim=2).reshape(height * width, 4 * n_frequencies)


def additive_positional_encoding(height: int, width: int, channels: int) -> Tensor:
    """The EGG readout's encoding ``[H·W, C]``, added to the latents, row-major like ``latents.flatten(2)``.

    The first ``m = C // 2`` channels encode the row index ``i``, the other ``C − m`` the column index ``j``
    (integer positions): for an axis of ``m`` channels, channel ``2k`` is ``sin(i ω_k)`` and ``2k + 1`` is
    ``cos(i ω_k)``, with ``ω_k = 10000^(−2k/m)`` (the transformer's frequencies).
    """

    def axis(n: int, m: int) -> Tensor:
        k = torch.arange(0, m, 2, dtype=torch.float64)
        angles = torch.arange(n, dtype=torch.float64)[:, None] * torch.pow(10000.0, -k / m)[None, :]  # [n, ⌈m/2⌉]
        out = torch.empty(n, m, dtype=torch.float64)
        out[:, 0::2] = angles.sin()
        out[:, 1::2] = angles.cos()[:, : m // 2]
        return out

    rows, cols = axis(height, channels // 2), axis(width, channels - channels // 2)
    grid = torch.cat([rows[:, None, :].expand(-1, width, -1), cols[None, :, :].expand(height, -1, -1)], dim=2)
    return grid.reshape(height * width, channels).float()


class AttentionReadout(TrainedReadout):
    """``r_n = φ(⟨f_n, Σ_s softmax_s(k_s·q_n / T) v_s⟩ + b_n)`` with queries ``q`` and features ``f`` ``[N, d]``."""

    name = "attention"
    params_model = AttentionParams
    description = (
        "Attention over latent positions: a per-neuron query attends over position-encoded latents "
        "(variant egg: the EGG paper's V4 readout); SGD, L1 features/queries."
    )

    def __init__(self, params: AttentionParams | None = None, **overrides: Any) -> None:
        super().__init__(params, **overrides)
        self.register_module("key", None)
        self.register_module("value", None)
        self.register_parameter("queries", None)
        self.register_parameter("features", None)
        self.register_buffer("position", None, persistent=False)

    def initialize(self, latent_shape: tuple[int, ...], n_neurons: int) -> None:
        """Allocate the bias ``[N]``, key and value embeddings (``C + 4F → d``; egg: ``C → d``), queries and features
        ``[N, d]``.

        The position encoding (``[HW, 4F]``; egg: ``[HW, C]``) is a fixed, non-persistent buffer rebuilt here.
        """
        super().initialize(latent_shape, n_neurons)
        c, h, w = self.latent_shape
        d, n_freq = self.params.embed_dim, self.params.pos_frequencies
        additive = self.params.variant == "egg"
        self.position = additive_positional_encoding(h, w, c) if additive else positional_encoding(h, w, n_freq)
        width = c if additive else c + 4 * n_freq
        self.key = nn.Linear(width, d, bias=False)
        self.value = nn.Linear(width, d, bias=False)
        self.score_scale = 1 / math.sqrt(c) if additive else 1.0
        self.dropout = nn.Dropout(self.params.pos_dropout)
        self.queries = nn.Parameter(torch.randn(n_neurons, d) / math.sqrt(d))
        self.features = nn.Parameter(torch.randn(n_neurons, d) / math.sqrt(d))

    def attention(self, latents: Tensor) -> tuple[Tensor, Tensor]:
        """Attention weights ``a`` ``[B, N, S]`` (summing to 1 over the ``S = HW`` pixels) and values ``v``
        ``[B, S, d]``."""
        x = self.spatial(latents).flatten(2).transpose(1, 2)  # [B, S, C]
        position = self.position.to(x.dtype).expand(x.shape[0], -1, -1)
        tokens = x + position if self.params.variant == "egg" else torch.cat([x, position], dim=2)
        tokens = self.dropout(tokens)
        scores = torch.einsum("bsd,nd->bns", self.key(tokens), self.queries)
        scores = scores * self.score_scale / self.params.temperature
        return scores.softmax(dim=2), self.value(tokens)

    def pooled(self, latents: Tensor) -> Tensor:
        """``z`` ``[B, N, d]``: each neuron's attention-weighted average of the value vectors."""
        weights, values = self.attention(latents)
        return weights @ values

    @property
    def weight(self) -> Tensor:
        """``w = f`` ``[N, d]``."""
        return self._fitted(self.features)

    def regularizer(self) -> Tensor:
        """``l1_features · mean_n ‖f_n‖₁ + l1_queries · mean_n ‖q_n‖₁``."""
        return l1_penalty(self.features, self.params.l1_features) + l1_penalty(self.queries, self.params.l1_queries)


@hookimpl
def register_readouts(register):
    register_components(register, (AttentionReadout,))
