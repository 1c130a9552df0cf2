"""Linear model neurons whose true attribution is known exactly (shared by the metric tests)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sharedattr.plugin import AttributionBatch


class LinearNeurons(nn.Module):
    """``r_n(x) = Σ w_n ⊙ x + b_n``: the gradient × input map is exactly each pixel's contribution."""

    def __init__(self, n: int = 2, c: int = 3, size: int = 10) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(5)
        self.w = nn.Parameter(torch.randn(n, c, size, size, generator=g), requires_grad=False)
        self.b = nn.Parameter(torch.randn(n, generator=g), requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        return torch.einsum("bchw,nchw->bn", x, self.w) + self.b

    def gradient_x_input(self, x: Tensor, targets: Tensor) -> Tensor:
        return (x * self.w[targets]).sum(1)


def linear_batch(maps_of: str = "true", c: int = 3) -> AttributionBatch:
    model = LinearNeurons(c=c)
    g = torch.Generator().manual_seed(6)
    x, targets = torch.rand(4, c, 10, 10, generator=g), torch.tensor([0, 1, 1, 0])
    maps = model.gradient_x_input(x, targets) if maps_of == "true" else torch.randn(4, 10, 10, generator=g)
    return AttributionBatch(model, x, maps, targets)
