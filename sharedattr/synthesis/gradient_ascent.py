"""Built-in synthesizer: most exciting inputs (MEIs) by gradient ascent (after sinzlab/mei).

Loop: evaluate ``−r_n(x)``, backward, precondition the gradient (Gaussian blur), optimiser
step, then post-process outside autograd (fixed L2 norm around mid-grey, clip to [0, 1]).
"""

from __future__ import annotations

import math
import time
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from ..components import SynthesisResult
from ..hookspecs import hookimpl
from ..params import Params


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Depthwise Gaussian blur of ``[B, C, H, W]`` with std ``sigma`` pixels (reflect padding)."""
    if sigma <= 0:
        return x
    radius = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    pad = min(radius, x.shape[-1] - 1, x.shape[-2] - 1)
    if pad < radius:  # image smaller than the kernel: crop the kernel to fit
        k = k[radius - pad : radius + pad + 1] / k[radius - pad : radius + pad + 1].sum()
    x = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


class GradientAscentParams(Params):
    """Params of the ``gradient_ascent`` synthesizer."""

    steps: int = Field(200, ge=1, description="Optimisation steps.")
    lr: float = Field(0.05, gt=0, description="Learning rate (images are in [0, 1] pixel units).")
    optimizer: Literal["adamw", "sgd"] = Field("adamw", description="Optimiser.")
    blur_sigma: float = Field(1.0, ge=0, description="Gaussian-blur gradient preconditioning, in pixels (0 = off).")
    norm: float | None = Field(None, gt=0, description="Fix the L2 norm of (x − 0.5) after every step (null = off).")
    clip: bool = Field(True, description="Clip pixels to [0, 1] after every step.")
    n_seeds: int = Field(1, ge=1, description="Independent random initialisations, optimised as one batch.")
    seed: int = Field(0, description="Seed of the random-normal initialisation.")
    init_std: float = Field(0.1, ge=0, description="Std of the random-normal initialisation around mid-grey.")


class GradientAscent:
    """Gradient-ascent MEI synthesis for one neuron of an images → ``[B, N]`` model."""

    def __init__(self, steps: int = 200, lr: float = 0.05, optimizer: str = "adamw", blur_sigma: float = 1.0,
                 norm: float | None = None, clip: bool = True, n_seeds: int = 1, seed: int = 0,
                 init_std: float = 0.1) -> None:
        self.steps, self.lr, self.optimizer, self.blur_sigma = steps, lr, optimizer, blur_sigma
        self.norm, self.clip, self.n_seeds, self.seed, self.init_std = norm, clip, n_seeds, seed, init_std

    def _postprocess(self, x: Tensor) -> Tensor:
        if self.norm is not None:
            centred = x - 0.5
            x = 0.5 + centred * (self.norm / centred.flatten(1).norm(dim=1).clamp(min=1e-12)).view(-1, 1, 1, 1)
        if self.clip:
            x = x.clamp(0.0, 1.0)
        return x

    def synthesize(self, model: nn.Module, neuron: int, *, reference: Tensor | None = None) -> SynthesisResult:
        """Images ``[n_seeds, C, H, W]`` at the model's ``input_size``/``in_channels`` that maximise ``neuron``."""
        start = time.perf_counter()
        h, w = model.input_size
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        generator = torch.Generator().manual_seed(self.seed)
        x0 = 0.5 + self.init_std * torch.randn(self.n_seeds, model.in_channels, h, w, generator=generator)
        x = self._postprocess(x0).to(device).requires_grad_(True)
        opt_cls = torch.optim.AdamW if self.optimizer == "adamw" else torch.optim.SGD
        kwargs = {"weight_decay": 0.0} if self.optimizer == "adamw" else {}
        opt = opt_cls([x], lr=self.lr, **kwargs)
        history = []
        for _ in range(self.steps):
            opt.zero_grad(set_to_none=True)
            response = model(x)[:, neuron]
            (-response.sum()).backward()
            history.append(response.detach().cpu())
            with torch.no_grad():
                x.grad = gaussian_blur(x.grad, self.blur_sigma)
            opt.step()
            with torch.no_grad():
                x.copy_(self._postprocess(x))
        with torch.no_grad():
            final = model(x)[:, neuron].detach().cpu()
        cost = {
            "forward_calls": float(self.steps + 1),
            "backward_calls": float(self.steps),
            "denoiser_calls": 0.0,
            "wall_s": time.perf_counter() - start,
        }
        return SynthesisResult(x.detach().cpu(), final, torch.stack(history), cost)


@hookimpl
def register_synthesizers(register):
    register(
        "gradient_ascent",
        GradientAscent,
        params=GradientAscentParams,
        description="MEI by gradient ascent: AdamW/SGD, blurred gradients, fixed norm and clipping.",
    )
