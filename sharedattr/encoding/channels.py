"""Latent channels of a readout's dimensions, and contributions pooled over each channel's positions.

A readout on flattened ``[C, H, W]`` latents has one dimension per (channel, position); a
pooled readout (factorized, gaussian2d, attention, ridge with ``pooling = "avg"``) has one per
channel. Position-tolerant sharing and matching compare each neuron's *channel contributions*
``C_k(x) = Σ_{d ∈ k} w_d z_d(x)``, which do not depend on where in the image a channel is active.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sharedattr.plugins.contracts import ReadoutModule, declared


def dimension_channels(readout: nn.Module, n_dimensions: int, device: torch.device | str = "cpu") -> Tensor:
    """The latent channel of each of the ``n_dimensions`` readout dimensions, ``[D]`` long on ``device``: the
    readout's ``dimension_channels()`` (ridge on flattened ``[C, H, W]`` latents: one channel per ``H·W``
    dimensions), by default each dimension its own channel (pooled readouts; :class:`ReadoutModule`)."""
    index = declared(readout, ReadoutModule).dimension_channels().to(device=device, dtype=torch.long)
    if index.shape != (n_dimensions,):
        raise ValueError(
            f"{type(readout).__name__}.dimension_channels() has shape {tuple(index.shape)}; expected ({n_dimensions},)"
        )
    return index


def channel_contributions(contributions: Tensor, channels: Tensor) -> Tensor:
    """Contributions ``c = w ⊙ z`` ``[..., D]`` summed within each channel → ``[..., K]`` (``channels`` ``[D]``)."""
    k = int(channels.max()) + 1 if channels.numel() else 0
    out = torch.zeros(*contributions.shape[:-1], k, dtype=contributions.dtype, device=contributions.device)
    return out.index_add_(-1, channels.to(contributions.device), contributions)
