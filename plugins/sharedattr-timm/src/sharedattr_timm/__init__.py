"""sharedattr plugin: timm backbones.

Registers the ``timm`` backbone through the ``sharedattr`` entry point declared in this
package's ``pyproject.toml``. timm is imported only when a timm backbone is built or
validated, so listing plugins stays fast.
"""

from __future__ import annotations

from pathlib import Path

import torch
from pydantic import Field, field_validator
from torch import Tensor

from sharedattr.plugin import FrozenBackbone, InputPath, Params, UserError, closest, hookimpl, load_state_dict_file


class TimmParams(Params):
    """Params of the ``timm`` backbone."""

    model: str = Field(description="A timm model name, e.g. 'resnet50', 'convnext_tiny', 'vit_small_patch16_224'.")
    stage: int = Field(-1, description="Feature stage to cut at (timm features_only out_indices); -1 = the last.")
    pretrained: bool = Field(False, description="Load timm's pretrained weights (downloads unless cached).")
    weights_file: InputPath | None = Field(
        None, description="A local state dict (.safetensors, or .pt with weights_only)."
    )
    seed: int = Field(0, description="Seed of the random initialisation.")
    in_chans: int = Field(3, ge=1, description="Input channels.")
    input_size: int | None = Field(None, ge=8, description="Input height and width (default: the model's own).")

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        import timm

        names = timm.list_models()
        if value not in names:
            hint = closest(value, names)
            raise ValueError(f"unknown timm model {value!r}" + (f"; did you mean {hint!r}?" if hint else ""))
        return value


class TimmBackbone(FrozenBackbone):
    """A timm network cut at one feature stage: preprocessed images ``[B, C, H, W]`` → ``[B, C', H', W']``."""

    def __init__(
        self,
        model: str,
        stage: int = -1,
        pretrained: bool = False,
        weights_file: Path | None = None,
        seed: int = 0,
        in_chans: int = 3,
        input_size: int | None = None,
    ) -> None:
        super().__init__()
        import timm
        from timm.data import resolve_data_config

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            try:
                full = timm.create_model(model, pretrained=pretrained, in_chans=in_chans)
            except Exception as err:  # noqa: BLE001 - e.g. no network for pretrained weights
                raise UserError(f"cannot create timm model {model!r}: {type(err).__name__}: {err}") from None
        if weights_file is not None:
            full.load_state_dict(load_state_dict_file(weights_file))
        try:
            n_stages = len(full.feature_info)
        except (AttributeError, TypeError):
            raise UserError(f"timm model {model!r} does not expose feature stages (features_only)") from None
        index = stage if stage >= 0 else n_stages + stage
        if not 0 <= index < n_stages:
            raise UserError(f"backbone.stage: {model} has stages 0..{n_stages - 1}; got {stage}")
        body = timm.create_model(model, pretrained=False, features_only=True, out_indices=(index,), in_chans=in_chans)
        missing = body.load_state_dict(full.state_dict(), strict=False)
        if missing.missing_keys:
            raise UserError(
                f"timm {model}: feature extractor does not match the model's weights ({missing.missing_keys[:3]})"
            )
        config = resolve_data_config({}, model=full)
        mean, std = config["mean"], config["std"]
        if len(mean) != in_chans:
            mean, std = (sum(mean) / len(mean),) * in_chans, (sum(std) / len(std),) * in_chans
        self.setup(body, input_size or int(config["input_size"][-1]), in_chans, tuple(mean), tuple(std))

    def select(self, output: list[Tensor]) -> Tensor:
        return output[0]


@hookimpl
def register_backbones(register):
    register(
        "timm",
        TimmBackbone,
        params=TimmParams,
        description="Any timm model cut at a feature stage (plugin sharedattr-timm).",
    )
