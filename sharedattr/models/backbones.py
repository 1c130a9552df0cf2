"""Built-in backbone: any ``torchvision.models`` network cut at any graph node."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from pydantic import Field, field_validator, model_validator
from torch import Tensor, nn

from ..errors import UserError, closest
from ..hookspecs import hookimpl
from ..params import InputPath, Params, Seed

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


class TorchvisionParams(Params):
    """Params of the ``torchvision`` backbone."""

    model: str = Field(description="A torchvision.models name, e.g. 'resnet50', 'alexnet', 'vgg16'.")
    layer: str = Field(description="Graph node to cut at (torchvision.models.feature_extraction), e.g. 'layer3'.")
    weights: str | None = Field(
        None,
        description="null for random (seeded) weights; 'DEFAULT' or a weights enum name such as "
        "'IMAGENET1K_V2' or 'ResNet50_Weights.IMAGENET1K_V2', loaded through torchvision's weights API.",
    )
    weights_file: InputPath | None = Field(
        None, description="A local state dict: .safetensors, or .pt/.pth loaded with weights_only=True."
    )
    seed: Seed = Field(0, description="Seed of the random initialisation.")
    input_size: int | tuple[int, int] | None = Field(
        None, description="Input height and width in pixels. Default: the weights' crop size, else 224."
    )
    mean: tuple[float, ...] | None = Field(None, description="Normalisation mean per channel (default: weights' or ImageNet).")
    std: tuple[float, ...] | None = Field(None, description="Normalisation std per channel (default: weights' or ImageNet).")

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        import torchvision

        names = torchvision.models.list_models()
        if value not in names:
            hint = closest(value, names)
            raise ValueError(
                f"unknown torchvision model {value!r}" + (f"; did you mean {hint!r}?" if hint else "")
            )
        return value

    _input_size = field_validator("input_size")(check_input_size)
    _normalisation = field_validator("mean", "std")(check_normalisation)

    @model_validator(mode="after")
    def _one_weights_source(self) -> "TorchvisionParams":
        if self.weights is not None and self.weights_file is not None:
            raise ValueError("give 'weights' (torchvision enum) or 'weights_file' (local file), not both")
        return self


def load_state_dict_file(path: Path) -> dict[str, Tensor]:
    """A state dict from safetensors, or from a torch file with ``weights_only=True`` (never unpickles code)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as err:  # noqa: BLE001 - a corrupt or foreign file (SafetensorError, OSError, ...)
            raise UserError(f"cannot load weights file {path}: {type(err).__name__}: {err}. "
                            "It must be a valid safetensors file of tensors.") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - refuse anything that is not plain tensors
        raise UserError(
            f"cannot load weights file {path}: {type(err).__name__}: {str(err).splitlines()[0]}. "
            "Only safetensors files or plain tensor state dicts (torch.load weights_only=True) are accepted."
        ) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise UserError(f"weights file {path} does not hold a state dict (got {type(state).__name__})")
    foreign = [str(k) for k, v in state.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if foreign:
        raise UserError(f"weights file {path} is not a state dict of named tensors: {', '.join(foreign[:3])} "
                        f"{'are' if len(foreign) > 1 else 'is'} not a tensor")
    return state


def resolve_weights(model: str, weights: str | None) -> Any:
    """A torchvision ``WeightsEnum`` member from 'DEFAULT', 'IMAGENET1K_V1' or 'ResNet18_Weights.IMAGENET1K_V1'."""
    import torchvision

    if weights is None:
        return None
    enum = torchvision.models.get_model_weights(model)
    key = weights.split(".", 1)[1] if weights.startswith(enum.__name__ + ".") else weights
    if key == "DEFAULT":
        return enum.DEFAULT
    try:
        return enum[key]
    except KeyError:
        options = ["DEFAULT", *[w.name for w in enum]]
        raise UserError(
            f"backbone.weights: {weights!r} is not a weights name of {model}; choose one of {', '.join(options)}"
        ) from None


class FrozenBackbone(nn.Module):
    """Base of backbones: a network ``body`` whose output ``select`` turns into latents.

    Frozen (no gradients to its weights, though gradients flow to its input) and always in
    eval mode. ``preprocess`` repeats grayscale to the network's channels and normalises
    [0, 1] images with ``mean``/``std``. A subclass builds its network, then calls
    :meth:`setup`, which also probes ``latent_shape`` with one zero image.
    """

    def setup(self, body: nn.Module, input_size: int | tuple[int, int], in_channels: int,
              mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        self.body = body.eval().requires_grad_(False)
        self.input_size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
        self.in_channels = int(in_channels)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        for name, values in (("mean", mean), ("std", std)):
            if len(values) not in (1, self.in_channels):
                raise UserError(f"backbone.{name}: {len(values)} values for a network of {self.in_channels} input "
                                f"channels; give {self.in_channels} (one per channel) or 1")
        with torch.no_grad():
            probe = torch.zeros(1, self.in_channels, *self.input_size)
            try:
                self._latent_shape = tuple(self.select(self.body(probe)).shape[1:])
            except Exception as err:  # noqa: BLE001 - e.g. an input too small for the network's pooling
                message = str(err).strip().splitlines()[0] if str(err).strip() else ""
                size = f"{self.input_size[0]}×{self.input_size[1]}"
                raise UserError(f"backbone: the network cannot run on {size} px inputs ({type(err).__name__}: "
                                f"{message}); choose another backbone.input_size") from None

    def select(self, output: Any) -> Tensor:
        """The latents ``[B, ...]`` in the body's output (the output itself by default)."""
        return output

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """One image's latent shape, without the batch dimension."""
        return self._latent_shape

    def preprocess(self, images: Tensor) -> Tensor:
        """``[B, C, H, W]`` in [0, 1] → normalised network input (grayscale repeated to RGB)."""
        if images.shape[1] == 1 and self.in_channels == 3:
            images = images.expand(-1, 3, -1, -1)
        return (images - self.mean) / self.std

    def forward(self, x: Tensor) -> Tensor:
        """Preprocessed images ``[B, C, H, W]`` → latents."""
        return self.select(self.body(x))

    def train(self, mode: bool = True) -> "FrozenBackbone":  # frozen: always eval
        return super().train(False)


class TorchvisionBackbone(FrozenBackbone):
    """A torchvision network cut at ``layer``: preprocessed images ``[B, C, H, W]`` → latents.

    Frozen and in eval mode. ``preprocess`` turns [0, 1] images into the network's input
    (grayscale is repeated to the network's channels, then normalised).
    """

    def __init__(
        self,
        model: str,
        layer: str,
        weights: str | None = None,
        weights_file: Path | None = None,
        seed: int = 0,
        input_size: int | tuple[int, int] | None = None,
        mean: tuple[float, ...] | None = None,
        std: tuple[float, ...] | None = None,
    ) -> None:
        super().__init__()
        import torchvision
        from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

        weights_enum = resolve_weights(model, weights)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            try:
                net = torchvision.models.get_model(model, weights=weights_enum)
            except (OSError, RuntimeError) as err:  # URLError is an OSError
                raise UserError(
                    f"cannot load torchvision weights {weights_enum} for {model}: {err}. Without network access, "
                    "place the checkpoint in torch's hub cache ($TORCH_HOME/hub/checkpoints) or use weights_file."
                ) from None
        if weights_file is not None:
            try:
                missing, unexpected = net.load_state_dict(load_state_dict_file(weights_file), strict=False)
            except RuntimeError as err:  # e.g. tensors of the wrong shape
                raise UserError(f"weights file {weights_file} does not fit torchvision {model}: "
                                f"{str(err).strip()[:600]}") from None
            if missing or unexpected:
                raise UserError(
                    f"weights file {weights_file} does not fit torchvision {model}: "
                    f"{len(missing)} missing keys (e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})"
                )
        net.eval()
        nodes = get_graph_node_names(net)[1]
        modules = sorted({n.rsplit(".", k)[0] for n in nodes for k in range(1, n.count(".") + 1)})
        if layer not in nodes and layer not in modules:
            hint = closest(layer, modules + nodes)
            raise UserError(
                f"backbone.layer: {model} has no node or module {layer!r}"
                + (f"; did you mean {hint!r}?" if hint else ".")
                + f" Modules: {', '.join(m for m in modules if m.count('.') < 2)[:600]}"
            )
        self.model_name, self.layer = model, layer
        transforms = weights_enum.transforms() if weights_enum is not None else None
        if input_size is None:
            crop = getattr(transforms, "crop_size", None)
            input_size = int(crop[0]) if crop else 224
        mean = mean or tuple(getattr(transforms, "mean", IMAGENET_MEAN))
        std = std or tuple(getattr(transforms, "std", IMAGENET_STD))
        first_conv = next((m for m in net.modules() if isinstance(m, nn.Conv2d)), None)
        in_channels = first_conv.in_channels if first_conv is not None else len(mean)
        self.setup(create_feature_extractor(net, return_nodes={layer: "latent"}), input_size, in_channels, mean, std)

    def select(self, output: dict[str, Tensor]) -> Tensor:
        return output["latent"]


@hookimpl
def register_backbones(register):
    register(
        "torchvision",
        TorchvisionBackbone,
        params=TorchvisionParams,
        description="Any torchvision.models network cut at any graph node; random, torchvision or local weights.",
    )
