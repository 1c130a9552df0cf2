"""Counting the compute a synthesizer spends: forward and backward calls of a network, and wall time."""

from __future__ import annotations

import time
from typing import Any

from torch import Tensor, nn


class CallCounter(nn.Module):
    """Wraps a network and counts its forward calls, the images they carried, and backward passes.

    A backward pass is counted once per forward output that gradients flow back through,
    so ``energy.backward()`` over one forward call counts one backward call. Attributes of
    the wrapped network (``input_size``, ``in_channels``, ``config`` ...) read through.
    """

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network
        self.forward_calls = 0
        self.backward_calls = 0
        self.images = 0

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["network"], name)

    def forward(self, x: Tensor, *args: Any, **kwargs: Any) -> Any:
        self.forward_calls += 1
        self.images += int(x.shape[0])
        out = self.network(x, *args, **kwargs)
        tensor = out if isinstance(out, Tensor) else getattr(out, "sample", None)
        if isinstance(tensor, Tensor) and tensor.requires_grad:
            tensor.register_hook(self._count_backward)
        return out

    def _count_backward(self, grad: Tensor) -> None:
        self.backward_calls += 1


class Stopwatch:
    """Wall time since construction, in seconds."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start


def cost_record(model: CallCounter, stopwatch: Stopwatch, denoiser: CallCounter | None = None) -> dict[str, float]:
    """The cost columns every synthesizer reports (all floats).

    ``forward_calls``/``backward_calls``: calls of the scored model; ``model_images``:
    images it forwarded; ``denoiser_calls``/``denoiser_backward_calls``: calls of a
    diffusion prior's network (0 without one); ``wall_s``: seconds.
    """
    return {
        "forward_calls": float(model.forward_calls),
        "backward_calls": float(model.backward_calls),
        "model_images": float(model.images),
        "denoiser_calls": float(denoiser.forward_calls if denoiser is not None else 0),
        "denoiser_backward_calls": float(denoiser.backward_calls if denoiser is not None else 0),
        "wall_s": float(stopwatch.seconds),
    }
