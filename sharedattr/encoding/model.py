"""The encoding model: backbone + readout, images ``[B, C, H, W]`` in [0, 1] → responses ``[B, N]``."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn


class EncodingModel(nn.Module):
    """``r(x) = readout(backbone(preprocess(x)))``; usable directly as a Captum ``forward_func``.

    ``neuron_ids`` name the ``N`` outputs (the response columns it was fitted to), when known.
    """

    def __init__(self, backbone: nn.Module, readout: nn.Module, neuron_ids: Sequence[str] | None = None) -> None:
        super().__init__()
        self.backbone, self.readout = backbone, readout
        self.neuron_ids: list[str] | None = None if neuron_ids is None else [str(n) for n in neuron_ids]

    @property
    def input_size(self) -> tuple[int, int]:
        return tuple(self.backbone.input_size)

    @property
    def in_channels(self) -> int:
        return int(self.backbone.in_channels)

    def latents(self, images: Tensor) -> Tensor:
        """Images ``[B, C, H, W]`` in [0, 1] → latents ``[B, ...]``."""
        return self.backbone(self.backbone.preprocess(images))

    def forward(self, images: Tensor) -> Tensor:
        return self.readout(self.latents(images))

    def contributions(self, images: Tensor) -> Tensor:
        """``c_n(x) = w_n ⊙ z_n(x)`` ``[B, N, D]``."""
        return self.readout.pooled(self.latents(images)) * self.readout.weight
