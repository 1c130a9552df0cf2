"""The encoding model: backbone + readout, images ``[B, C, H, W]`` in [0, 1] → responses ``[B, N]``."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm


class EncodingModel(nn.Module):
    """``r(x) = readout(backbone(preprocess(x)))``; usable directly as a Captum ``forward_func``."""

    def __init__(self, backbone: nn.Module, readout: nn.Module) -> None:
        super().__init__()
        self.backbone, self.readout = backbone, readout

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


def batches(x: Tensor, size: int) -> Iterator[Tensor]:
    for i in range(0, x.shape[0], size):
        yield x[i : i + size]


@torch.inference_mode()
def extract_latents(backbone: nn.Module, images: Tensor, batch_size: int = 32, progress: bool = True,
                    device: torch.device | str = "cpu") -> Tensor:
    """Latents of ``images [S, C, H, W]`` in [0, 1], computed in batches → ``[S, ...]`` on the CPU."""
    out = []
    for chunk in tqdm(list(batches(images, batch_size)), desc="features", disable=not progress, leave=False):
        chunk = chunk.to(device)
        out.append(backbone(backbone.preprocess(chunk)).cpu())
    return torch.cat(out)
