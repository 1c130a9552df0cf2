"""Built-in backbone: any ``torchvision.models`` network cut at any graph node (random, torchvision or local
weights)."""

from __future__ import annotations

import functools
from typing import Any

import torch
from pydantic import Field, field_validator, model_validator
from torch import Tensor, nn

from sharedattr.encoding.backbones.frozen import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    FrozenBackbone,
    check_input_size,
    check_normalisation,
    load_state_dict_file,
)
from sharedattr.plugins.hookspecs import hookimpl
from sharedattr.plugins.params import Configurable, InputPath, Params, Seed, register_components
from sharedattr.runtime.errors import UserError, closest
from sharedattr.runtime.numerics import seeded_global_rng


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
    mean: tuple[float, ...] | None = Field(
        None, description="Normalisation mean per channel (default: weights' or ImageNet)."
    )
    std: tuple[float, ...] | None = Field(
        None, description="Normalisation std per channel (default: weights' or ImageNet)."
    )

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        import torchvision

        names = torchvision.models.list_models()
        if value not in names:
            hint = closest(value, names)
            raise ValueError(f"unknown torchvision model {value!r}" + (f"; did you mean {hint!r}?" if hint else ""))
        return value

    _input_size = field_validator("input_size")(check_input_size)
    _normalisation = field_validator("mean", "std")(check_normalisation)

    @model_validator(mode="after")
    def _one_weights_source(self) -> TorchvisionParams:
        if self.weights is not None and self.weights_file is not None:
            raise ValueError("give 'weights' (torchvision enum) or 'weights_file' (local file), not both")
        return self


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


@functools.lru_cache(maxsize=16)
def torchvision_node_names(model_name: str) -> dict[str, str] | None:
    """FX node name → torchvision qualified node name of ``torchvision.models.get_model(model_name)`` in eval mode.

    The same tracer as ``create_feature_extractor``, on an uninitialised meta-device network;
    None if the architecture cannot be built or traced that way, or if this torchvision lacks the
    private helper that gives that tracer its settings (``_set_default_tracer_kwargs``): callers
    then fall back to module paths.
    """
    import torchvision

    try:
        from torchvision.models.feature_extraction import NodePathTracer, _set_default_tracer_kwargs

        with torch.device("meta"):
            net = torchvision.models.get_model(model_name).eval()
        tracer = NodePathTracer(**_set_default_tracer_kwargs(None))
        tracer.trace(net)
    except Exception:  # noqa: BLE001 - best effort (an ImportError included): fall back to module paths
        return None
    return {node.name: qualname for node, qualname in tracer.node_to_qualname.items()}


def load_network(params: TorchvisionParams, weights_enum: Any) -> nn.Module:
    """``torchvision.models.get_model(params.model)``: with the weights ``weights_enum`` (through torchvision's weights
    API), else seeded by ``params.seed``; then ``params.weights_file`` loaded into it, where given. A network or file
    that cannot be loaded is a :class:`UserError` saying why."""
    import torchvision

    model, weights_file = params.model, params.weights_file
    with seeded_global_rng(params.seed):
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
            raise UserError(
                f"weights file {weights_file} does not fit torchvision {model}: {str(err).strip()[:600]}"
            ) from None
        if missing or unexpected:
            raise UserError(
                f"weights file {weights_file} does not fit torchvision {model}: "
                f"{len(missing)} missing keys (e.g. {missing[:3]}), "
                f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})"
            )
    return net


def check_layer(net: nn.Module, model: str, layer: str) -> None:
    """A :class:`UserError` (with the closest name and the top modules) unless ``layer`` is a graph node or a module
    of ``net`` (the torchvision network ``model``, in eval mode)."""
    from torchvision.models.feature_extraction import get_graph_node_names

    nodes = get_graph_node_names(net)[1]
    modules = sorted({n.rsplit(".", k)[0] for n in nodes for k in range(1, n.count(".") + 1)})
    if layer not in nodes and layer not in modules:
        hint = closest(layer, modules + nodes)
        raise UserError(
            f"backbone.layer: {model} has no node or module {layer!r}"
            + (f"; did you mean {hint!r}?" if hint else ".")
            + f" Modules: {', '.join(m for m in modules if m.count('.') < 2)[:600]}"
        )


class TorchvisionBackbone(Configurable, FrozenBackbone):
    """A torchvision network cut at ``layer``: preprocessed images ``[B, C, H, W]`` → latents.

    Frozen and in eval mode. ``preprocess`` turns [0, 1] images into the network's input
    (grayscale is repeated to the network's channels, then normalised). Built from its validated
    :class:`TorchvisionParams` (``TorchvisionBackbone(params)``), or from their fields as keywords
    (``TorchvisionBackbone(model="resnet18", layer="layer1")``, validated there).
    """

    name = "torchvision"
    params_model = TorchvisionParams
    description = "Any torchvision.models network cut at any graph node; random, torchvision or local weights."

    def __init__(self, params: TorchvisionParams | None = None, **overrides: Any) -> None:
        super().__init__()
        from torchvision.models.feature_extraction import create_feature_extractor

        self.params = p = self.resolve_params(params, overrides)
        model, layer = p.model, p.layer
        weights_enum = resolve_weights(model, p.weights)
        net = load_network(p, weights_enum).eval()
        check_layer(net, model, layer)
        self.model_name, self.layer = model, layer
        transforms = weights_enum.transforms() if weights_enum is not None else None
        input_size = p.input_size
        if input_size is None:
            crop = getattr(transforms, "crop_size", None)
            input_size = int(crop[0]) if crop else 224
        mean = p.mean or tuple(getattr(transforms, "mean", IMAGENET_MEAN))
        std = p.std or tuple(getattr(transforms, "std", IMAGENET_STD))
        first_conv = next((m for m in net.modules() if isinstance(m, nn.Conv2d)), None)
        in_channels = first_conv.in_channels if first_conv is not None else len(mean)
        self.setup(create_feature_extractor(net, return_nodes={layer: "latent"}), input_size, in_channels, mean, std)

    def select(self, output: dict[str, Tensor]) -> Tensor:
        return output["latent"]

    def qualified_node_names(self) -> dict[str, str] | None:
        """FX node name → torchvision qualified node name of this network's ``body`` graph (hook-safe copies and
        Grad-CAM layers use it to find a module's last node); None if the architecture cannot be re-traced."""
        return torchvision_node_names(self.model_name)


@hookimpl
def register_backbones(register):
    register_components(register, (TorchvisionBackbone,))
