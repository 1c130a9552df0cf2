"""Built-in backbone ``insilico_cnn``: a small CNN trained on the in-silico stimuli, shipped with the package.

The network (:class:`InsilicoCNN`) is four stages ``block1`` … ``block4``; each halves the
resolution with a stride-2 3×3 convolution and adds 3×3 convolutions at the new
resolution (every convolution is followed by BatchNorm and an out-of-place ``nn.ReLU``
module, so Captum's module hooks see every nonlinearity once). A training ``head``
(global average pool + linear) predicts which of the parts of
:data:`sharedattr.data.insilico.render.PARTS` an image shows; it is not part of the backbone,
whose latents are the output of one block.

With ``residual = True`` the network is ResNet-18-shaped instead: a stride-1 3×3 stem
convolution, then in every block ``convs`` residual basic blocks (two 3×3 convolutions and a
shortcut, 1×1 convolution + BatchNorm where the shape changes; ReLU after the sum), the first
with stride 2: with ``convs = [2, 2, 2, 2]`` that is 17 convolutions and the head, ResNet-18's
layout on narrower channels.

The weights ``"insilico-v1"`` ship in ``sharedattr/assets/insilico_cnn.safetensors``
(with ``insilico_cnn.json``, the record of their training and test accuracy) and are
reproduced by ``scripts/train_insilico_cnn.py`` (:mod:`trainers.insilico_cnn`); the residual
``"insilico-resnet18-v1"`` ship in ``insilico_resnet18.safetensors`` (``--weights
insilico-resnet18-v1``).
Being fully convolutional, the backbone accepts any input size; it was trained on 64 and
96 px stimuli.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import json
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from torch import Tensor, nn

from sharedattr.encoding.backbones.frozen import MAX_INPUT_SIZE, FrozenBackbone, load_state_dict_file, weights_header
from sharedattr.plugins.hookspecs import hookimpl
from sharedattr.plugins.params import Configurable, InputPath, Params, Seed, register_components
from sharedattr.runtime.errors import UserError, closest
from sharedattr.runtime.numerics import seeded_global_rng

FORMAT = "sharedattr.insilico_cnn"
FORMAT_VERSION = 1
METADATA_KEY = "sharedattr_insilico_cnn"  # the one safetensors metadata key: a JSON document

LAYERS = ("block1", "block2", "block3", "block4")
DEFAULT_LAYER = "block3"
DEFAULT_INPUT_SIZE = 64
DEFAULT_ARCHITECTURE: dict[str, Any] = {
    "in_channels": 3,
    "channels": [32, 64, 128, 128],  # per block
    "convs": [2, 2, 2, 1],  # 3x3 convolutions per block; the first has stride 2
    "n_outputs": 4,  # training head: one presence logit per part
}
# Normalisation of [0, 1] images, the same for every weights: the per-channel mean and std
# of a training set of the in-silico stimuli (grey and RGB, 64 px), rounded.
DEFAULT_MEAN = (0.5, 0.5, 0.5)
DEFAULT_STD = (0.25, 0.25, 0.25)

ASSET_PACKAGE = "sharedattr"
ASSET_FOLDER = "assets"
SHIPPED_WEIGHTS: dict[str, str] = {
    "insilico-v1": "insilico_cnn.safetensors",
    "insilico-resnet18-v1": "insilico_resnet18.safetensors",
}
RESNET18_ARCHITECTURE: dict[str, Any] = {
    "in_channels": 3,
    "channels": [16, 32, 64, 128],
    "convs": [2, 2, 2, 2],  # residual basic blocks per block
    "n_outputs": 4,
    "residual": True,
}


# -- the network ---------------------------------------------------------------------------------
def conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


class BasicBlock(nn.Module):
    """A residual basic block: ``relu2(bn2(conv2(relu1(bn1(conv1(x))))) + shortcut(x))``, ``[B, c_in, H, W]`` →
    ``[B, c_out, H / stride, W / stride]``; the shortcut is the identity or a 1×1 convolution + BatchNorm."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu2 = nn.ReLU()
        self.shortcut = (
            nn.Identity()
            if stride == 1 and c_in == c_out
            else nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))
        )

    def forward(self, x: Tensor) -> Tensor:
        y = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(y + self.shortcut(x))


class InsilicoCNN(nn.Module):
    """The whole network: ``block1`` … ``block4`` and the part-presence ``head``.

    ``forward(x)`` returns the head's logits ``[B, n_outputs]`` (for training);
    :meth:`trunk` returns the blocks up to a layer (for the backbone). State-dict keys are
    ``block<k>.<i>.*`` and ``head.*``.
    """

    def __init__(
        self,
        in_channels: int = 3,
        channels: Sequence[int] = (32, 64, 128, 128),
        convs: Sequence[int] = (2, 2, 2, 1),
        n_outputs: int = 4,
        residual: bool = False,
    ) -> None:
        super().__init__()
        if len(channels) != len(LAYERS) or len(convs) != len(LAYERS):
            raise ValueError(f"channels and convs need one entry per block ({len(LAYERS)})")
        if min(convs) < 1 or min(channels) < 1:
            raise ValueError("every block needs at least one convolution and one channel")
        self.architecture = {
            "in_channels": int(in_channels),
            "channels": [int(c) for c in channels],
            "convs": [int(k) for k in convs],
            "n_outputs": int(n_outputs),
        }
        if residual:
            self.architecture["residual"] = True
        c = in_channels
        for name, c_out, k in zip(LAYERS, channels, convs):
            if residual:
                layers = []
                if name == LAYERS[0]:  # the stem
                    layers, c = conv_bn_relu(c, c_out), c_out
                layers += [BasicBlock(c, c_out, stride=2)] + [BasicBlock(c_out, c_out) for _ in range(k - 1)]
            else:
                layers = conv_bn_relu(c, c_out, stride=2)
                for _ in range(k - 1):
                    layers += conv_bn_relu(c_out, c_out)
            self.add_module(name, nn.Sequential(*layers))
            c = c_out
        self.head = nn.Linear(c, n_outputs)

    @classmethod
    def from_architecture(cls, architecture: Mapping[str, Any]) -> InsilicoCNN:
        keys = ("in_channels", "channels", "convs", "n_outputs")
        return cls(**{k: architecture[k] for k in keys}, residual=bool(architecture.get("residual", False)))

    def blocks(self) -> Iterator[tuple[str, nn.Module]]:
        for name in LAYERS:
            yield name, getattr(self, name)

    def trunk(self, layer: str = LAYERS[-1]) -> nn.Sequential:
        """``block1`` … ``layer`` as one ``nn.Sequential`` with those names (sharing the modules)."""
        if layer not in LAYERS:
            raise ValueError(f"unknown layer {layer!r}; choose one of {', '.join(LAYERS)}")
        blocks = list(self.blocks())
        return nn.Sequential(OrderedDict(blocks[: LAYERS.index(layer) + 1]))

    def forward(self, x: Tensor) -> Tensor:
        for _, block in self.blocks():
            x = block(x)
        return self.head(x.mean(dim=(2, 3)))


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# -- weights files ---------------------------------------------------------------------------------
@contextlib.contextmanager
def shipped_weights_path(name: str) -> Iterator[Path]:
    """The file of the shipped weights ``name`` (package data), as a real path while the context lasts."""
    if name not in SHIPPED_WEIGHTS:
        raise UserError(
            f"backbone.weights: unknown insilico_cnn weights {name!r}; choose one of "
            f"{', '.join(SHIPPED_WEIGHTS)} or null"
        )
    resource = importlib.resources.files(ASSET_PACKAGE).joinpath(ASSET_FOLDER, SHIPPED_WEIGHTS[name])
    if not resource.is_file():
        raise UserError(
            f"the shipped insilico_cnn weights {name!r} ({SHIPPED_WEIGHTS[name]}) are missing from the "
            "sharedattr installation; reinstall sharedattr or retrain them with "
            "scripts/train_insilico_cnn.py"
        )
    with importlib.resources.as_file(resource) as path:
        yield Path(path)


def shipped_record(name: str = "insilico-v1") -> dict[str, Any]:
    """The JSON record written beside the shipped weights ``name`` (training config, test accuracy, sha256)."""
    with shipped_weights_path(name) as path:
        return json.loads(path.with_suffix(".json").read_text())


def read_metadata(path: Path) -> dict[str, Any]:
    """The sharedattr metadata of a safetensors weights file ({} if it has none, or is not safetensors)."""
    weights_header(path)  # the header sharedattr validate checks, with its message
    if Path(path).suffix != ".safetensors":
        return {}
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(METADATA_KEY)
    except Exception as err:  # noqa: BLE001 - a corrupt or foreign file
        raise UserError(f"cannot read weights file {path}: {type(err).__name__}: {err}") from None
    if raw is None:
        return {}
    try:
        metadata = json.loads(raw)
    except (ValueError, RecursionError):  # JSONDecodeError, over-long integers, over-deep nesting
        raise UserError(f"weights file {path}: its {METADATA_KEY!r} metadata is not JSON") from None
    if not isinstance(metadata, dict):
        raise UserError(f"weights file {path}: its {METADATA_KEY!r} metadata is not a JSON object")
    version = metadata.get("format_version", -1)
    if metadata.get("format") != FORMAT or not isinstance(version, int) or version > FORMAT_VERSION:
        raise UserError(
            f"weights file {path} has format {metadata.get('format')!r} version "
            f"{str(version)[:20]!r}; this sharedattr reads {FORMAT!r} up to version "
            f"{FORMAT_VERSION}"
        )
    try:
        checked = WeightsMetadata.model_validate(metadata)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise UserError(
            f"weights file {path}: metadata field {where!r}: {first['msg']} ({len(err.errors())} problem(s)); "
            "write the file with scripts/train_insilico_cnn.py"
        ) from None
    checked_fields = checked.model_dump(mode="json", exclude_none=True)
    if checked.architecture is None:
        return {**metadata, **checked_fields}
    architecture = checked.architecture.model_dump(mode="json")
    if not architecture["residual"]:
        del architecture["residual"]  # the plain network's architecture, as its files have always written it
    with torch.device("meta"):  # count the parameters before allocating any
        parameters = parameter_count(InsilicoCNN.from_architecture(architecture))
    if parameters > MAX_PARAMETERS:
        raise UserError(
            f"weights file {path}: its architecture {architecture} has {parameters:,} parameters, more than the "
            f"{MAX_PARAMETERS:,} an insilico_cnn may have"
        )
    return {**metadata, **checked_fields, "architecture": architecture}


EXTRA_HEADS_PREFIX = "extra_heads."
"""Tensors under this prefix are training heads besides ``head`` (e.g. the zoo's category and segmentation heads,
``scripts/trainers/zoo.py``): a weights file may hold them; the backbone ignores them."""

MAX_PARAMETERS = 50_000_000
"""The most parameters an ``insilico_cnn`` declared by a weights file may have (200 MB in float32; the shipped one
has about 0.6 million): checked on the meta device before anything is allocated."""


class Architecture(BaseModel):
    """The ``architecture`` of a weights file's metadata, bounded (a hostile file cannot ask for 360 GB)."""

    model_config = ConfigDict(extra="forbid")
    in_channels: StrictInt = Field(ge=1, le=4)
    channels: tuple[StrictInt, StrictInt, StrictInt, StrictInt]
    convs: tuple[StrictInt, StrictInt, StrictInt, StrictInt]
    n_outputs: StrictInt = Field(ge=1, le=4096)
    residual: StrictBool = False

    @field_validator("channels", "convs")
    @classmethod
    def _bounded(cls, value: tuple[int, ...], info: ValidationInfo) -> tuple[int, ...]:
        top = 4096 if info.field_name == "channels" else 16
        if any(not 1 <= v <= top for v in value):
            raise ValueError(f"every entry must be between 1 and {top}")
        return value


class WeightsMetadata(BaseModel):
    """What sharedattr reads of a weights file's metadata; other keys (training records) are kept unread."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)
    architecture: Architecture | None = None
    mean: tuple[float, ...] | None = Field(None, min_length=1, max_length=4)
    std: tuple[Annotated[float, Field(gt=0)], ...] | None = Field(None, min_length=1, max_length=4)


def file_metadata(
    architecture: Mapping[str, Any], mean: Sequence[float], std: Sequence[float], **extra: Any
) -> dict[str, str]:
    """The safetensors metadata of a weights file: one key holding a JSON document (bytes stay reproducible)."""
    document = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": dict(architecture),
        "layers": list(LAYERS),
        "mean": list(mean),
        "std": list(std),
        **extra,
    }
    return {METADATA_KEY: json.dumps(document, sort_keys=True)}


def load_into(net: InsilicoCNN, state: Mapping[str, Tensor], layer: str, source: object) -> None:
    """Load ``state`` into ``net``; the blocks up to ``layer`` must all be there, and nothing foreign (tensors under
    :data:`EXTRA_HEADS_PREFIX` are skipped).

    Raises :class:`UserError` naming missing, unexpected or mis-shaped tensors.
    """
    own = net.state_dict()
    state = {k: v for k, v in state.items() if not k.startswith(EXTRA_HEADS_PREFIX)}
    needed = [k for k in own if k.split(".", 1)[0] in LAYERS[: LAYERS.index(layer) + 1]]
    missing = [k for k in needed if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} (expected {tuple(own[k].shape)})"
        for k in state
        if k in own and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:
        problems = []
        if missing:
            problems.append(f"{len(missing)} missing tensors (e.g. {missing[:3]})")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected tensors (e.g. {unexpected[:3]})")
        if shapes:
            problems.append(f"{len(shapes)} tensors of the wrong shape (e.g. {shapes[:2]})")
        raise UserError(
            f"weights file {source} does not fit the insilico_cnn network up to {layer} "
            f"({net.architecture['channels']} channels): "
            + "; ".join(problems)
            + ". It needs a state dict of sharedattr.encoding.backbones.insilico_cnn.InsilicoCNN, "
            "as written by scripts/train_insilico_cnn.py."
        )
    with torch.no_grad():
        for key, value in state.items():
            own[key].copy_(value.to(own[key].dtype))


def load_weights(path: Path, layer: str, seed: int = 0) -> tuple[InsilicoCNN, dict[str, Any]]:
    """The network with the weights of ``path`` (architecture from its metadata, else the default) and the metadata."""
    metadata = read_metadata(path)
    try:
        state = load_state_dict_file(path)
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001 - e.g. a corrupt safetensors header
        raise UserError(f"cannot load weights file {path}: {type(err).__name__}: {err}") from None
    if not all(isinstance(v, Tensor) for v in state.values()):
        raise UserError(f"weights file {path} is not a state dict of tensors")
    with seeded_global_rng(seed):
        net = InsilicoCNN.from_architecture(metadata.get("architecture", DEFAULT_ARCHITECTURE))
    load_into(net, state, layer, path)
    return net, metadata


# -- the backbone ----------------------------------------------------------------------------------
class InsilicoCNNParams(Params):
    """Params of the ``insilico_cnn`` backbone."""

    layer: str = Field(DEFAULT_LAYER, description=f"The block whose output are the latents: {', '.join(LAYERS)}.")
    weights: Literal["insilico-v1", "insilico-resnet18-v1"] | None = Field(
        "insilico-v1",
        description="'insilico-v1': the weights shipped with sharedattr (trained on the in-silico stimuli); "
        "'insilico-resnet18-v1': the shipped ResNet-18-shaped network (residual blocks, 17 convolutions), "
        "trained on the same task; null: a random initialisation seeded by 'seed'.",
    )
    weights_file: InputPath | None = Field(
        None,
        description="A local state dict of the network (.safetensors, or .pt/.pth loaded with weights_only=True), "
        "e.g. written by scripts/train_insilico_cnn.py. Replaces 'weights'.",
    )
    seed: Seed = Field(0, description="Seed of the random initialisation (weights: null).")
    input_size: int | tuple[int, int] = Field(
        DEFAULT_INPUT_SIZE,
        description="Input height and width in pixels (fully convolutional: any size works; "
        "the shipped weights were trained at 64).",
    )
    mean: tuple[float, ...] | None = Field(None, description="Normalisation mean per channel (default: the weights').")
    std: tuple[float, ...] | None = Field(None, description="Normalisation std per channel (default: the weights').")

    @field_validator("layer")
    @classmethod
    def _known_layer(cls, value: str) -> str:
        if value not in LAYERS:
            hint = closest(value, LAYERS)
            raise ValueError(
                f"unknown layer {value!r}"
                + (f"; did you mean {hint!r}?" if hint else "")
                + f" Choose one of {', '.join(LAYERS)}"
            )
        return value

    @field_validator("input_size")
    @classmethod
    def _positive_size(cls, value: int | tuple[int, int]) -> int | tuple[int, int]:
        sizes = (value,) if isinstance(value, int) else value
        if any(s < 8 for s in sizes):
            raise ValueError(f"input_size must be at least 8 pixels, got {value}")
        if any(s > MAX_INPUT_SIZE for s in sizes):
            raise ValueError(f"input_size must be at most {MAX_INPUT_SIZE} pixels, got {value}")
        return value

    @field_validator("mean", "std")
    @classmethod
    def _three_channels(cls, value: tuple[float, ...] | None) -> tuple[float, ...] | None:
        if value is not None and len(value) not in (1, 3):
            raise ValueError(f"give 1 or 3 values (one per RGB channel), got {len(value)}")
        return value

    @field_validator("std")
    @classmethod
    def _positive_std(cls, value: tuple[float, ...] | None) -> tuple[float, ...] | None:
        if value is not None and min(value) <= 0:
            raise ValueError("std must be > 0")
        return value

    @model_validator(mode="before")
    @classmethod
    def _file_replaces_default(cls, data: Any) -> Any:
        # weights_file replaces the default shipped weights; only an explicit 'weights' conflicts with it
        if isinstance(data, dict) and data.get("weights_file") is not None and "weights" not in data:
            return {**data, "weights": None}
        return data

    @model_validator(mode="after")
    def _one_weights_source(self) -> InsilicoCNNParams:
        if self.weights is not None and self.weights_file is not None:
            raise ValueError("give 'weights' (shipped weights) or 'weights_file' (a local file), not both")
        return self


class InsilicoCNNBackbone(Configurable, FrozenBackbone):
    """:class:`InsilicoCNN` cut after ``layer``: preprocessed images ``[B, 3, H, W]`` → ``[B, C, H/2ᵏ, W/2ᵏ]``.

    The body is ``nn.Sequential(block1, …, layer)``, so Grad-CAM layers are ``"block1"``,
    ``"block2.3"`` (its second convolution) and so on. ``weights_source`` names where the
    weights came from; ``metadata`` is the weights file's metadata ({} for a random init).
    Built from its validated :class:`InsilicoCNNParams` (``InsilicoCNNBackbone(params)``), or from
    their fields as keywords (``InsilicoCNNBackbone(layer="block2")``, validated there).
    """

    name = "insilico_cnn"
    params_model = InsilicoCNNParams
    description = (
        "A small CNN trained on sharedattr's in-silico stimuli (weights shipped, offline), cut after "
        "block1-block4; or randomly initialised."
    )

    def __init__(self, params: InsilicoCNNParams | None = None, **overrides: Any) -> None:
        super().__init__()
        self.params = p = self.resolve_params(params, overrides)
        layer, seed = p.layer, p.seed
        if p.weights_file is not None:
            net, metadata = load_weights(Path(p.weights_file), layer, seed)
            self.weights_source = str(p.weights_file)
        elif p.weights is not None:
            with shipped_weights_path(p.weights) as path:
                net, metadata = load_weights(path, layer, seed)
            self.weights_source = p.weights
        else:
            with seeded_global_rng(seed):
                net = InsilicoCNN.from_architecture(DEFAULT_ARCHITECTURE)
            metadata, self.weights_source = {}, f"random (seed {seed})"
        self.layer, self.metadata = layer, metadata
        self.architecture = dict(net.architecture)
        mean = tuple(p.mean or metadata.get("mean") or DEFAULT_MEAN)
        std = tuple(p.std or metadata.get("std") or DEFAULT_STD)
        in_channels = int(net.architecture["in_channels"])
        mean, std = (_per_channel(v, in_channels) for v in (mean, std))
        self.setup(net.trunk(layer), p.input_size, in_channels, mean, std)


def _per_channel(values: tuple[float, ...], channels: int) -> tuple[float, ...]:
    return values * channels if len(values) == 1 else values


@hookimpl
def register_backbones(register):
    register_components(register, (InsilicoCNNBackbone,))
