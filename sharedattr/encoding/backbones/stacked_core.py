"""Built-in backbone ``stacked_core``: a data-driven convolutional core, trained jointly with the readout.

Modelled on the field's standard, the stacked 2-D core of neuralpredictors (Sinz lab; Lurz et al. 2021), used as the
V4 model of the EGG paper (Pierzchlewicz et al. 2023): ``layers`` convolutions, each followed by batch norm and an
ELU. The first has a larger kernel (``input_kernel``) and may stride (``input_stride``); the others have
``hidden_kernel`` and keep the resolution ("same" padding). Latents ``[B, channels, H', W']`` are the last layer's
output.

Two penalties, added to the training loss (:meth:`StackedCore.regularizer`):

- **Laplace smoothness** on the first layer's kernels: ``gamma_input · Σ ‖L * w‖² / Σ ‖w‖²``, where ``L`` is the
  3×3 discrete Laplacian applied to each of the first layer's 2-D kernels ``w[o, i]`` (zero-padded); smooth kernels
  have a small Laplacian. Normalised by the kernels' energy, so it does not simply shrink them;
- **group sparsity** on the hidden layers: ``gamma_hidden · mean_layers Σ_{o,i} ‖w[o, i]‖₂``, the L2 norm of each
  input channel's kernel summed (an L1 over kernel groups): whole input channels of a filter are switched off.

The backbone is trainable (:class:`~sharedattr.plugins.contracts.BackboneModule`: ``trainable = True``): the fit stage
trains it with the readout (``fit_with_backbone``), never caches its latents, and saves its weights beside the
readout's. Its ``readout_defaults`` make a readout trained with it default to the Poisson loss (spike counts), an
``elu1`` output, a learning rate dropping on a validation plateau, and a smaller learning rate. Outside training it
is in eval mode with no gradients to its weights, like a frozen backbone (``train()`` leaves it in eval mode unless
its weights require gradients), so every attribution method applies.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import Tensor, nn

from sharedattr.encoding.backbones.frozen import check_input_size, check_normalisation, normalised_input
from sharedattr.plugins.contracts import BackboneModule
from sharedattr.plugins.hookspecs import hookimpl
from sharedattr.plugins.params import Configurable, Params, Seed, register_components
from sharedattr.runtime.errors import UserError
from sharedattr.runtime.numerics import seeded_global_rng

LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])
"""The 3×3 discrete Laplacian of the smoothness penalty."""


class StackedCoreParams(Params):
    """Params of the ``stacked_core`` backbone."""

    layers: int = Field(3, ge=1, le=16, description="Convolution layers (each with batch norm and ELU).")
    channels: int = Field(16, ge=1, le=1024, description="Channels of every layer (the latents' C).")
    input_kernel: int = Field(9, ge=1, le=31, description="Kernel size of the first layer (odd; larger).")
    hidden_kernel: int = Field(5, ge=1, le=31, description="Kernel size of the other layers (odd).")
    input_stride: int = Field(
        1, ge=1, le=8, description="Stride of the first layer (2 halves the latents' resolution: fewer positions)."
    )
    in_channels: int = Field(
        1, description="Input channels: 1 (grey; colour stimuli are read as grey) or 3 (RGB; grey is repeated)."
    )
    input_size: int | tuple[int, int] = Field(64, description="Input height and width in pixels.")
    mean: tuple[float, ...] = Field((0.5,), description="Normalisation mean of [0, 1] images (one, or per channel).")
    std: tuple[float, ...] = Field((0.25,), description="Normalisation std (one, or per channel).")
    gamma_input: float = Field(
        0.1,
        ge=0,
        description="Weight of the Laplace smoothness penalty on the first layer's kernels (relative to the loss, "
        "a mean over responses).",
    )
    gamma_hidden: float = Field(
        0.001, ge=0, description="Weight of the group-sparsity penalty on the other layers' kernels."
    )
    seed: Seed = Field(0, description="Seed of the initial weights.")

    @field_validator("input_kernel", "hidden_kernel")
    @classmethod
    def _odd(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError(f"kernel sizes must be odd (so that 'same' padding keeps the size), got {value}")
        return value

    @field_validator("in_channels")
    @classmethod
    def _grey_or_rgb(cls, value: int) -> int:
        if value not in (1, 3):
            raise ValueError(f"in_channels must be 1 (grey) or 3 (RGB), got {value}")
        return value

    _size = field_validator("input_size")(check_input_size)
    _normalisation = field_validator("mean", "std")(check_normalisation)


def laplace_penalty(weight: Tensor) -> Tensor:
    """``Σ ‖L * w‖² / Σ ‖w‖²`` over the 2-D kernels of a convolution ``weight`` ``[O, I, k, k]``: 0 for constant
    kernels' interiors, large for rough ones (:data:`LAPLACIAN`, zero padding)."""
    kernels = weight.reshape(-1, 1, *weight.shape[2:])
    rough = F.conv2d(kernels, LAPLACIAN.to(weight)[None, None], padding=1)
    return rough.pow(2).sum() / weight.pow(2).sum().clamp(min=1e-12)


def group_sparsity_penalty(weight: Tensor) -> Tensor:
    """``Σ_{o,i} ‖w[o, i]‖₂`` of a convolution ``weight`` ``[O, I, k, k]``: an L1 norm over its kernels."""
    return weight.pow(2).sum((2, 3)).add(1e-12).sqrt().sum()


class StackedCore(Configurable, BackboneModule):
    """The data-driven core: preprocessed images ``[B, in_channels, H, W]`` → latents ``[B, channels, H', W']``.

    ``features`` is an ``nn.Sequential`` of ``layer0`` … ``layer{L-1}``, each ``Sequential(conv, bn, elu)`` (module
    names for Grad-CAM: ``"features.layer2.conv"``). Built seeded from :class:`StackedCoreParams`
    (``StackedCore(layers=2, channels=8)``); trained by the fit stage with the readout.

    Example::

        core = StackedCore(layers=2, channels=8, input_size=24)
        core.latent_shape  # (8, 24, 24)
        core(core.preprocess(torch.rand(4, 1, 24, 24))).shape  # torch.Size([4, 8, 24, 24])
    """

    name = "stacked_core"
    params_model = StackedCoreParams
    description = (
        "A data-driven convolutional core (conv + batch norm + ELU layers, Laplace and group-sparsity penalties), "
        "trained jointly with the readout on the responses; never cached."
    )
    trainable: ClassVar[bool] = True
    readout_defaults: ClassVar[dict[str, Any]] = {
        "loss": "poisson",
        "nonlinearity": "elu1",
        "lr": 5e-3,
        "lr_decay_factor": 0.3,
    }

    def __init__(self, params: StackedCoreParams | None = None, **overrides: Any) -> None:
        super().__init__()
        self.params = p = self.resolve_params(params, overrides)
        self.input_size = (p.input_size, p.input_size) if isinstance(p.input_size, int) else tuple(p.input_size)
        self.in_channels = p.in_channels
        for name, values in (("mean", p.mean), ("std", p.std)):
            if len(values) not in (1, p.in_channels):
                raise UserError(
                    f"backbone.{name}: {len(values)} values for {p.in_channels} input channels; give "
                    f"{p.in_channels} (one per channel) or 1"
                )
        self.register_buffer("mean", torch.tensor(p.mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(p.std, dtype=torch.float32).view(1, -1, 1, 1))
        with seeded_global_rng(p.seed):
            layers = []
            for i in range(p.layers):
                kernel = p.input_kernel if i == 0 else p.hidden_kernel
                conv = nn.Conv2d(
                    p.in_channels if i == 0 else p.channels,
                    p.channels,
                    kernel,
                    stride=p.input_stride if i == 0 else 1,
                    padding=kernel // 2,
                    bias=False,
                )
                layers.append((f"layer{i}", nn.Sequential(conv, nn.BatchNorm2d(p.channels), nn.ELU())))
            self.features = nn.Sequential(OrderedDict(layers))
        self.requires_grad_(False).eval()
        h, w = (-(-s // p.input_stride) for s in self.input_size)
        self._latent_shape = (p.channels, h, w)

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """One image's latent shape ``(channels, ⌈H / input_stride⌉, ⌈W / input_stride⌉)``."""
        return self._latent_shape

    def preprocess(self, images: Tensor) -> Tensor:
        """``[B, C, H, W]`` in [0, 1] → normalised input (grey repeated to RGB for ``in_channels = 3``)."""
        return normalised_input(images, self.in_channels, self.mean, self.std)

    def forward(self, x: Tensor) -> Tensor:
        """Preprocessed images ``[B, in_channels, H, W]`` → latents ``[B, channels, H', W']``."""
        return self.features(x)

    def train(self, mode: bool = True) -> StackedCore:
        """Training mode only while its weights are trained (``requires_grad`` on: the joint fit turns it on, then
        off); otherwise always eval, like a frozen backbone (batch norm uses its running statistics)."""
        return super().train(mode and any(p.requires_grad for p in self.parameters()))

    def convolutions(self) -> list[nn.Conv2d]:
        """The ``layers`` convolutions, first layer first."""
        return [layer[0] for layer in self.features]

    def regularizer(self) -> Tensor:
        """``gamma_input · laplace(first kernels) + gamma_hidden · mean over the other layers of their group
        sparsity`` (a scalar; the group term is 0 with one layer)."""
        first, *hidden = self.convolutions()
        penalty = self.params.gamma_input * laplace_penalty(first.weight)
        if hidden:
            sparsity = torch.stack([group_sparsity_penalty(conv.weight) for conv in hidden]).mean()
            penalty = penalty + self.params.gamma_hidden * sparsity
        return penalty


@hookimpl
def register_backbones(register):
    register_components(register, (StackedCore,))
