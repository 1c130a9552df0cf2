"""The base of frozen backbones, and the checks and file loading every backbone shares.

:class:`FrozenBackbone` turns any network into a backbone: frozen, always in eval mode, with a
differentiable ``preprocess`` (grey repeated to the network's channels, then normalised) and a
probed ``latent_shape``. Weights files load from safetensors, or from torch files with
``weights_only=True``: never unpickled.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sharedattr.runtime.errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MAX_INPUT_SIZE = 4096
"""Largest input height or width in pixels (a bigger one would allocate tens of GB to probe the network)."""


def check_input_size(value: int | tuple[int, ...] | None, minimum: int = 1) -> int | tuple[int, ...] | None:
    """``input_size`` validator: every side in ``[minimum, MAX_INPUT_SIZE]``."""
    sizes = () if value is None else (value,) if isinstance(value, int) else value
    if any(s < minimum or s > MAX_INPUT_SIZE for s in sizes):
        raise ValueError(f"input_size must be between {minimum} and {MAX_INPUT_SIZE} pixels, got {value}")
    return value


def check_normalisation(value: tuple[float, ...] | None, info: Any) -> tuple[float, ...] | None:
    """``mean``/``std`` validator: at least one value, and every std > 0 (Params refuse inf and NaN already)."""
    if value is None:
        return value
    if not value:
        raise ValueError("give one value per channel (or one for all)")
    if info.field_name == "std" and min(value) <= 0:
        raise ValueError("std must be > 0")
    return value


WEIGHTS_SUFFIXES = (".safetensors", ".pt", ".pth", ".ckpt", ".bin")
"""Suffixes of weights files: a path param of a component ending in one of these is checked by
:func:`weights_header` (``sharedattr validate``) and read by :func:`load_state_dict_file`."""
TORCH_FILES = "Only safetensors files or plain tensor state dicts (torch.load weights_only=True) are accepted."


def weights_header(path: Path) -> str:
    """What the header of the weights file ``path`` declares, in words, read without its tensors: a safetensors
    file's header (its tensors' names, dtypes and offsets), or a torch file's magic (a ZIP archive holding a
    ``data.pkl``, or a legacy pickle). :class:`UserError` naming the file and the fix when it is neither.

    Example::

        >>> weights_header(Path("resnet.safetensors"))  # doctest: +SKIP
        'safetensors, 122 tensors'
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:  # parses and checks the header; maps, reads no tensor
                return f"safetensors, {len(f.keys())} tensors"
        except Exception as err:  # noqa: BLE001 - a corrupt or foreign file (SafetensorError, OSError, ...)
            raise unreadable_safetensors(path, err) from None
    try:
        with open(path, "rb") as f:
            head = f.read(4)
        if head == b"PK\x03\x04":
            with zipfile.ZipFile(path) as archive:
                if any(name.endswith("data.pkl") for name in archive.namelist()):
                    return "torch file (a ZIP archive with data.pkl)"
            why = "a ZIP archive without data.pkl, not a torch.save file"
        elif head[:1] == b"\x80":
            return "torch file (legacy pickle format)"
        else:
            why = f"it starts with {head!r}: neither a torch.save file nor a safetensors file"
    except (OSError, zipfile.BadZipFile) as err:
        why = f"{type(err).__name__}: {err}"
    raise UserError(f"cannot load weights file {path}: {why}. {TORCH_FILES}")


def unreadable_safetensors(path: Path, err: Exception) -> UserError:
    """The one error for a safetensors weights file that cannot be read (its header or its tensors)."""
    return UserError(
        f"cannot load weights file {path}: {type(err).__name__}: {err}. It must be a valid safetensors file of tensors."
    )


def load_state_dict_file(path: Path) -> dict[str, Tensor]:
    """A state dict from safetensors, or from a torch file with ``weights_only=True`` (never unpickles code); the
    header is checked first (:func:`weights_header`), as ``sharedattr validate`` checks it."""
    path = Path(path)
    weights_header(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as err:  # noqa: BLE001 - a corrupt or foreign file (SafetensorError, OSError, ...)
            raise unreadable_safetensors(path, err) from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - refuse anything that is not plain tensors
        raise UserError(
            f"cannot load weights file {path}: {type(err).__name__}: {str(err).splitlines()[0]}. " + TORCH_FILES
        ) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise UserError(f"weights file {path} does not hold a state dict (got {type(state).__name__})")
    foreign = [str(k) for k, v in state.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if foreign:
        raise UserError(
            f"weights file {path} is not a state dict of named tensors: {', '.join(foreign[:3])} "
            f"{'are' if len(foreign) > 1 else 'is'} not a tensor"
        )
    return state


def normalised_input(images: Tensor, in_channels: int, mean: Tensor, std: Tensor) -> Tensor:
    """Images ``[B, C, H, W]`` in [0, 1] → ``(images − mean) / std`` (``mean``, ``std`` ``[1, in_channels, 1, 1]``),
    a grey image repeated to RGB for ``in_channels = 3``: every backbone's ``preprocess``."""
    if images.shape[1] == 1 and in_channels == 3:
        images = images.expand(-1, 3, -1, -1)
    return (images - mean) / std


class FrozenBackbone(nn.Module):
    """Base of backbones: a network ``body`` whose output ``select`` turns into latents.

    Frozen (no gradients to its weights, though gradients flow to its input) and always in
    eval mode. ``preprocess`` repeats grayscale to the network's channels and normalises
    [0, 1] images with ``mean``/``std``. A subclass builds its network, then calls
    :meth:`setup`, which also probes ``latent_shape`` with one zero image.
    """

    def setup(
        self,
        body: nn.Module,
        input_size: int | tuple[int, int],
        in_channels: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
    ) -> None:
        self.body = body.eval().requires_grad_(False)
        self.input_size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
        self.in_channels = int(in_channels)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        for name, values in (("mean", mean), ("std", std)):
            if len(values) not in (1, self.in_channels):
                raise UserError(
                    f"backbone.{name}: {len(values)} values for a network of {self.in_channels} input "
                    f"channels; give {self.in_channels} (one per channel) or 1"
                )
        with torch.no_grad():
            probe = torch.zeros(1, self.in_channels, *self.input_size)
            try:
                self._latent_shape = tuple(self.select(self.body(probe)).shape[1:])
            except Exception as err:  # noqa: BLE001 - e.g. an input too small for the network's pooling
                message = str(err).strip().splitlines()[0] if str(err).strip() else ""
                size = f"{self.input_size[0]}×{self.input_size[1]}"
                raise UserError(
                    f"backbone: the network cannot run on {size} px inputs ({type(err).__name__}: "
                    f"{message}); choose another backbone.input_size"
                ) from None

    def select(self, output: Any) -> Tensor:
        """The latents ``[B, ...]`` in the body's output (the output itself by default)."""
        return output

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """One image's latent shape, without the batch dimension."""
        return self._latent_shape

    def preprocess(self, images: Tensor) -> Tensor:
        """``[B, C, H, W]`` in [0, 1] → normalised network input (grayscale repeated to RGB)."""
        return normalised_input(images, self.in_channels, self.mean, self.std)

    def forward(self, x: Tensor) -> Tensor:
        """Preprocessed images ``[B, C, H, W]`` → latents."""
        return self.select(self.body(x))

    def train(self, mode: bool = True) -> FrozenBackbone:  # frozen: always eval
        return super().train(False)
