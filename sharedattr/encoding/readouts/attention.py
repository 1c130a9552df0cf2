"""Built-in readout: attention, the V4 readout of EGG (Pierzchlewicz et al. 2023).

The latents ``[C, H, W]`` become ``S = HW`` tokens. Each token is its channel vector
*concatenated* with a fixed 2-D sinusoidal encoding of its (row, col) position
(:func:`positional_encoding`). A key and a value embedding, both linear maps to ``d``
dimensions shared by all neurons, give ``k_s`` and ``v_s``. Each neuron has a learned
query ``q_n`` and feature vector ``f_n`` ``[d]``:

``a_n = softmax_s(k_s · q_n / T)``, ``z_n = Σ_s a_sn v_s`` ``[d]``, ``r_n = φ(⟨f_n, z_n⟩ + b_n)``.

The embeddings have no bias: a key bias shifts every score of a neuron equally (no effect
on the softmax), and a value bias only adds a constant to ``z_n`` (absorbed by ``b_n``).
Trained by SGD with L1 penalties on features and queries.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from pydantic import Field
from torch import Tensor, nn

from sharedattr.encoding.readouts.training import TrainedReadout, TrainedReadoutParams, l1_penalty
from sharedattr.plugins.hookspecs import hookimpl


class AttentionParams(TrainedReadoutParams):
    """Params of the ``attention`` readout."""

    embed_dim: int = Field(16, ge=1, description="Dimension d of the shared key and value embeddings.")
    temperature: float = Field(1.0, gt=0, description="Softmax temperature T of the attention scores k·q / T.")
    pos_frequencies: int = Field(
        4, ge=1, description="Frequencies per axis of the sinusoidal position encoding (4 features each)."
    )
    l1_features: float = Field(1e-3, ge=0, description="L1 penalty on each neuron's feature vector.")
    l1_queries: float = Field(1e-3, ge=0, description="L1 penalty on each neuron's query vector.")


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


class AttentionReadout(TrainedReadout):
    """``r_n = φ(⟨f_n, Σ_s softmax_s(k_s·q_n / T) v_s⟩ + b_n)`` with queries ``q`` and features ``f`` ``[N, d]``."""

    readout_name = "attention"
    params_model = AttentionParams

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.register_module("key", None)
        self.register_module("value", None)
        self.register_parameter("queries", None)
        self.register_parameter("features", None)
        self.register_buffer("position", None, persistent=False)

    def initialize(self, latent_shape: tuple[int, ...], n_neurons: int) -> None:
        """Allocate the bias ``[N]``, key and value embeddings ``C + 4F → d``, queries and features ``[N, d]``.

        The position encoding ``[HW, 4F]`` is a fixed, non-persistent buffer rebuilt here.
        """
        super().initialize(latent_shape, n_neurons)
        c, h, w = self.latent_shape
        d, n_freq = self.hparams.embed_dim, self.hparams.pos_frequencies
        self.position = positional_encoding(h, w, n_freq)
        self.key = nn.Linear(c + 4 * n_freq, d, bias=False)
        self.value = nn.Linear(c + 4 * n_freq, d, bias=False)
        self.queries = nn.Parameter(torch.randn(n_neurons, d) / math.sqrt(d))
        self.features = nn.Parameter(torch.randn(n_neurons, d) / math.sqrt(d))

    def attention(self, latents: Tensor) -> tuple[Tensor, Tensor]:
        """Attention weights ``a`` ``[B, N, S]`` (summing to 1 over the ``S = HW`` pixels) and values ``v``
        ``[B, S, d]``."""
        x = self.spatial(latents)
        tokens = torch.cat([x.flatten(2).transpose(1, 2), self.position.expand(x.shape[0], -1, -1)], dim=2)
        scores = torch.einsum("bsd,nd->bns", self.key(tokens), self.queries) / self.hparams.temperature
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
        return l1_penalty(self.features, self.hparams.l1_features) + l1_penalty(self.queries, self.hparams.l1_queries)


@hookimpl
def register_readouts(register):
    register(
        "attention",
        AttentionReadout,
        params=AttentionParams,
        description="EGG's V4 readout: per-neuron query attends over positional-encoded latents; SGD, "
        "L1 features/queries.",
    )
