"""Differentiable random transforms applied to an image before the model sees it (one draw per step).

Jitter and random crops make a synthesised image drive the neuron robustly, not through a
pixel-exact pattern. All randomness comes from a ``torch.Generator`` (on the CPU), so a run
is deterministic given its seed, on any device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def jitter(x: Tensor, max_shift: int, generator: torch.Generator | None = None) -> Tensor:
    """Roll each image of ``[B, C, H, W]`` by its own random integer shift in ``[-max_shift, max_shift]`` (wrapping)."""
    if max_shift <= 0:
        return x
    shifts = torch.randint(-max_shift, max_shift + 1, (x.shape[0], 2), generator=generator).tolist()
    return torch.stack([torch.roll(img, shifts=(dy, dx), dims=(-2, -1)) for img, (dy, dx) in zip(x, shifts)])


def random_crop(x: Tensor, scale: float, generator: torch.Generator | None = None) -> Tensor:
    """Crop each image of ``[B, C, H, W]`` to a random window of ``scale`` × its height and width, resized back.

    The window is ``round(scale · H) × round(scale · W)`` pixels (at least 1) at a random
    position; bilinear resizing returns it to ``H × W``. ``scale >= 1`` is the identity.
    """
    if scale >= 1:
        return x
    h, w = x.shape[-2:]
    ch, cw = max(1, round(scale * h)), max(1, round(scale * w))
    tops = torch.randint(0, h - ch + 1, (x.shape[0],), generator=generator).tolist()
    lefts = torch.randint(0, w - cw + 1, (x.shape[0],), generator=generator).tolist()
    crops = torch.stack([img[..., t : t + ch, left : left + cw] for img, t, left in zip(x, tops, lefts)])
    return F.interpolate(crops, size=(h, w), mode="bilinear", align_corners=False)


class RandomTransform:
    """Jitter by up to ``jitter`` pixels, then (if ``crop_scale`` is set) a random crop resized back.

    With both off it is the identity and draws no random numbers.
    """

    def __init__(
        self, jitter: int = 0, crop_scale: float | None = None, generator: torch.Generator | None = None
    ) -> None:
        if jitter < 0:
            raise ValueError(f"jitter must be >= 0 pixels, got {jitter}")
        if crop_scale is not None and not 0 < crop_scale <= 1:
            raise ValueError(f"crop_scale must be in (0, 1], got {crop_scale}")
        self.jitter, self.crop_scale = jitter, crop_scale
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)

    @property
    def identity(self) -> bool:
        return self.jitter == 0 and (self.crop_scale is None or self.crop_scale >= 1)

    def __call__(self, x: Tensor) -> Tensor:
        if self.jitter > 0:
            x = jitter(x, self.jitter, self.generator)
        if self.crop_scale is not None:
            x = random_crop(x, self.crop_scale, self.generator)
        return x
