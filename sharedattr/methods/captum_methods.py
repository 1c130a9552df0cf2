"""Captum baselines as registered methods.

Each wrapper is a :class:`captum.attr.Attribution` whose ``attribute(inputs, target=...)``
calls the Captum method with the validated params as defaults, so it can be used exactly
like Captum's own classes. Inputs are images ``[B, C, H, W]``; ``target`` indexes the
model's ``[B, N]`` output (a neuron).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from captum.attr import Attribution, InputXGradient, IntegratedGradients, Saliency
from pydantic import Field
from torch import Tensor, nn

from ..hookspecs import hookimpl
from ..params import Params


class CaptumMethod(Attribution):
    """A Captum attribution method with fixed default arguments to ``attribute``."""

    captum_class: ClassVar[type[Attribution]]
    pairwise: ClassVar[bool] = False

    def __init__(self, model: nn.Module, **defaults: Any) -> None:
        super().__init__(model)
        self.method = self.captum_class(model)
        self.defaults = defaults

    def attribute(self, inputs: Tensor, target: Any = None, **kwargs: Any) -> Tensor:
        """Attributions with the inputs' shape ``[B, C, H, W]`` for output ``target`` of ``[B, N]``."""
        return self.method.attribute(inputs, target=target, **self._arguments(inputs, kwargs))

    def _arguments(self, inputs: Tensor, overrides: dict[str, Any]) -> dict[str, Any]:
        return {**self.defaults, **overrides}


class SaliencyParams(Params):
    abs: bool = Field(True, description="Absolute value of the gradient (Simonyan et al.).")


class SaliencyMethod(CaptumMethod):
    """|∂r_n/∂x| (or the signed gradient)."""

    captum_class = Saliency


class InputXGradientMethod(CaptumMethod):
    """x ⊙ ∂r_n/∂x."""

    captum_class = InputXGradient


class IntegratedGradientsParams(Params):
    n_steps: int = Field(50, ge=1, description="Steps of the path integral.")
    method: Literal["riemann_right", "riemann_left", "riemann_middle", "riemann_trapezoid", "gausslegendre"] = Field(
        "gausslegendre", description="Integration rule."
    )
    baseline: float = Field(0.0, description="Constant baseline pixel value (0 = black, 0.5 = mid-grey).")
    internal_batch_size: int | None = Field(None, ge=1, description="Bound memory by chunking the path steps.")


class IntegratedGradientsMethod(CaptumMethod):
    """(x − x₀) ⊙ ∫ ∂r_n/∂x along the straight path from the baseline x₀."""

    captum_class = IntegratedGradients

    def _arguments(self, inputs: Tensor, overrides: dict[str, Any]) -> dict[str, Any]:
        args = {**self.defaults, **overrides}
        baseline = args.pop("baseline", 0.0)
        args.setdefault("baselines", torch.full_like(inputs, float(baseline)) if isinstance(baseline, float) else baseline)
        return args


@hookimpl
def register_methods(register):
    register("saliency", SaliencyMethod, params=SaliencyParams, description="Captum Saliency: the input gradient.")
    register("input_x_gradient", InputXGradientMethod, description="Captum InputXGradient: input times gradient.")
    register(
        "integrated_gradients",
        IntegratedGradientsMethod,
        params=IntegratedGradientsParams,
        description="Captum IntegratedGradients from a constant baseline.",
    )
