"""Captum baselines as registered methods.

Each wrapper is a :class:`~sharedattr.plugins.params.Configurable` :class:`captum.attr.Attribution` (an
:class:`~sharedattr.plugins.contracts.AttributionMethod`) built from its validated params model, the one place
of its defaults: ``SmoothGradMethod(model, samples=3)`` validates the keywords against the model. Its
``attribute(inputs, target=...)`` calls the Captum method with the params as defaults (keyword arguments override
them), so it can be used exactly like Captum's own classes; :attr:`CaptumMethod.captum_arguments` maps the params
to Captum's ``attribute`` keywords, once per class. Inputs are images
``[B, C, H, W]`` in [0, 1]; ``target`` indexes the model's ``[B, N]`` output (a neuron, an
int or a ``[B]`` tensor); attributions have the inputs' shape (Grad-CAM: ``[B, 1, H, W]``).

Methods that hook ReLU (or other nonlinearity) modules run on a private
:func:`~sharedattr.attribution.hook_safety.hook_safe_copy` of the model, so in-place and reused
activations of torchvision networks are handled; functional ``F.relu`` calls outside FX
graphs stay invisible to those hooks. Any method but ``gradient_shap`` and ``smoothgrad`` takes
``noise_tunnel``: Captum's NoiseTunnel (SmoothGrad, SmoothGrad², VarGrad) around it.
Stochastic methods are seeded: the same call gives the same result, though not the
same as a per-item loop (the noise is drawn for the whole batch).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from typing import Any, ClassVar, Literal

import torch
from captum.attr import (
    Attribution,
    Deconvolution,
    DeepLift,
    GradientAttribution,
    GradientShap,
    GuidedBackprop,
    GuidedGradCam,
    InputXGradient,
    IntegratedGradients,
    LayerAttribution,
    LayerGradCam,
    NoiseTunnel,
    Occlusion,
    Saliency,
)
from captum.log import log_usage
from pydantic import Field
from torch import Tensor, nn

from sharedattr.attribution.hook_safety import hook_safe_copy, resolve_layer
from sharedattr.plugins.contracts import AttributionMethod
from sharedattr.plugins.hookspecs import hookimpl
from sharedattr.plugins.params import MAX_STEPS, Configurable, Params, register_components
from sharedattr.runtime.errors import UserError
from sharedattr.runtime.numerics import seeded_on

InterpolateMode = Literal["nearest", "bilinear", "bicubic", "area"]
NOISE_STDEV = "Standard deviation of the Gaussian noise, in pixel units of [0, 1] images."

warnings.filterwarnings(
    "ignore", message=r"Setting (forward, )?backward hooks", category=UserWarning, module=r"captum\."
)
"""Captum announces its ReLU/nonlinearity hooks on every call of a hook-based method; they act on sharedattr's
private copy of the model only. (A filter set once: ``warnings.catch_warnings`` around each call is not safe with
work items side by side.)"""


def seed_field() -> Any:
    """The ``seed`` param of stochastic methods (numpy's generator takes seeds below 2³²)."""
    return Field(0, ge=0, lt=2**32, description="Seed of the random draws: the same call gives the same result.")


def layer_field() -> Any:
    """The ``layer`` param of the Grad-CAM methods."""
    return Field(
        None,
        min_length=1,
        description="Backbone module or graph node, e.g. 'layer1' or 'body.layer1' (torchvision) or 'net.2'; "
        "null = the backbone's output (the cut layer's latents).",
    )


# -- shared params -------------------------------------------------------------------------
class NoiseTunnelParams(Params):
    """Captum NoiseTunnel around a method: combine its maps of ``samples`` noisy copies of each input."""

    type: Literal["smoothgrad", "smoothgrad_sq", "vargrad"] = Field(
        "smoothgrad",
        description="Mean of the maps (smoothgrad), mean of their squares (smoothgrad_sq) or their variance (vargrad).",
    )
    samples: int = Field(16, ge=1, le=MAX_STEPS, description="Noisy copies per input.")
    stdevs: float = Field(0.15, gt=0, description=NOISE_STDEV)
    samples_batch_size: int | None = Field(None, ge=1, description="Noisy copies per pass; bounds memory (null = all).")
    seed: int = seed_field()

    def arguments(self) -> dict[str, Any]:
        """Keyword arguments of ``NoiseTunnel.attribute``."""
        return {
            "nt_type": self.type,
            "nt_samples": self.samples,
            "stdevs": self.stdevs,
            "nt_samples_batch_size": self.samples_batch_size,
        }


class CaptumParams(Params):
    """Params every NoiseTunnel-able Captum method takes."""

    noise_tunnel: NoiseTunnelParams | None = Field(
        None, description="Wrap the method in Captum's NoiseTunnel, e.g. {type: smoothgrad, samples: 16, stdevs: 0.15}."
    )


def constant_images(inputs: Tensor, values: Sequence[float]) -> Tensor:
    """One constant image per value, shaped like an input: ``[len(values), C, H, W]``."""
    return torch.stack([torch.full_like(inputs[0], float(v)) for v in values])


# -- base ----------------------------------------------------------------------------------
class CaptumMethod(Configurable, AttributionMethod):
    """A Captum attribution method whose params give the defaults of its ``attribute`` call, optionally in a
    NoiseTunnel.

    A subclass declares its ``captum_class``, its params model and :attr:`captum_arguments`, the one mapping from
    its params to Captum's ``attribute`` keywords; arguments that depend on the inputs (a baseline image set, a
    window over all channels) come from :meth:`_arguments`. ``hook_based`` methods are built on a private hook-safe
    copy of the model. ``batch_invariant``: whether a batch gives the same maps as a per-item loop (False for
    stochastic methods, and for any method wrapped in a noise tunnel).
    """

    captum_class: ClassVar[type[Attribution]]
    params_model: ClassVar[type[Params]] = CaptumParams
    captum_arguments: ClassVar[Mapping[str, str]] = {}
    """Params field → the keyword of Captum's ``attribute`` that it is the default of."""
    hook_based: ClassVar[bool] = False
    thread_safe: ClassVar[bool] = True  # seeded draws under the global-RNG lock, hooks on its own model

    def __init__(self, model: nn.Module, params: Params | None = None, **overrides: Any) -> None:
        self.params = self.resolve_params(params, overrides)
        network = hook_safe_copy(model) if self.needs_safe_copy() else model
        super().__init__(network)
        self.network = network
        self.noise_tunnel = self.tunnel()
        inner = self.build_captum(network)
        self.method: Attribution = inner if self.noise_tunnel is None else NoiseTunnel(inner)
        if self.noise_tunnel is not None:
            self.batch_invariant = False
        self.defaults = {keyword: getattr(self.params, field) for field, keyword in self.captum_arguments.items()}
        self.pass_limit: int | None = None

    def tunnel(self) -> NoiseTunnelParams | None:
        """The NoiseTunnel the method runs in (None: none): the ``noise_tunnel`` param."""
        return self.params.noise_tunnel

    @property
    def seed(self) -> int | None:
        """The seed of the method's random draws (None: it draws none)."""
        return None if self.noise_tunnel is None else self.noise_tunnel.seed

    def limit_images_per_pass(self, images: int) -> None:
        """Hold at most about ``images`` images per forward/backward pass (path steps, noisy copies, perturbed
        copies are chunked; see :mod:`sharedattr.runtime.memory`). A chunk size the params set wins."""
        self.pass_limit = int(images)

    def chunk_arguments(self, batch: int, args: dict[str, Any]) -> dict[str, Any]:
        """Captum arguments that keep a pass of ``batch`` inputs within :attr:`pass_limit` (none by default:
        a method that multiplies its inputs overrides this)."""
        return {}

    def needs_safe_copy(self) -> bool:
        """Whether the Captum object must run on a hook-safe copy of the model."""
        return self.hook_based

    def build_captum(self, network: nn.Module) -> Attribution:
        """The Captum attribution object on ``network`` (the model, or its hook-safe copy)."""
        return self.captum_class(network)

    @log_usage()
    def attribute(self, inputs: Tensor, target: Any = None, **kwargs: Any) -> Tensor:
        """Attributions of images ``inputs`` ``[B, C, H, W]`` for output ``target`` of ``[B, N]``.

        ``kwargs`` are the Captum method's (and NoiseTunnel's) keyword arguments; they override
        the params.
        """
        args = self._arguments(inputs, kwargs)
        if self.noise_tunnel is not None:
            args = {**self.noise_tunnel.arguments(), **args}
        if self.pass_limit is not None:
            args = {**args, **self._bounded(inputs.shape[0], args)}
        with seeded_on(self.seed, inputs.device, numpy=True) if self.seed is not None else nullcontext():
            return self.method.attribute(inputs, target=target, **args)

    def _arguments(self, inputs: Tensor, overrides: dict[str, Any]) -> dict[str, Any]:
        return {**self.defaults, **overrides}

    def _bounded(self, batch: int, args: dict[str, Any]) -> dict[str, Any]:
        """Chunk sizes for a call on ``batch`` inputs: the noise tunnel's copies per pass, then the method's own."""
        extra: dict[str, Any] = {}
        if self.noise_tunnel is not None and args.get("nt_samples_batch_size") is None:
            copies = max(1, min(int(args["nt_samples"]), self.pass_limit // batch))
            extra["nt_samples_batch_size"] = copies
            batch *= copies  # what the inner method sees per pass
        return {**extra, **self.chunk_arguments(batch, args)}


# -- gradients -----------------------------------------------------------------------------
class SaliencyParams(CaptumParams):
    abs: bool = Field(True, description="Absolute value of the gradient (Simonyan et al.).")


class SaliencyMethod(CaptumMethod):
    """|∂r_n/∂x| (or the signed gradient)."""

    name = "saliency"
    description = "Captum Saliency: the input gradient."
    params_model = SaliencyParams
    captum_class = Saliency
    captum_arguments = {"abs": "abs"}


class InputXGradientMethod(CaptumMethod):
    """x ⊙ ∂r_n/∂x."""

    name = "input_x_gradient"
    description = "Captum InputXGradient: input times gradient."
    captum_class = InputXGradient


class IntegratedGradientsParams(CaptumParams):
    n_steps: int = Field(50, ge=1, le=MAX_STEPS, description="Steps of the path integral.")
    method: Literal["riemann_right", "riemann_left", "riemann_middle", "riemann_trapezoid", "gausslegendre"] = Field(
        "gausslegendre", description="Integration rule."
    )
    baseline: float = Field(0.0, description="Constant baseline pixel value (0 = black, 0.5 = mid-grey).")
    internal_batch_size: int | None = Field(None, ge=1, description="Bound memory by chunking the path steps.")


class IntegratedGradientsMethod(CaptumMethod):
    """(x − x₀) ⊙ ∫ ∂r_n/∂x along the straight path from the baseline x₀."""

    name = "integrated_gradients"
    description = "Captum IntegratedGradients from a constant baseline."
    params_model = IntegratedGradientsParams
    captum_class = IntegratedGradients
    captum_arguments = {
        "baseline": "baselines",
        "n_steps": "n_steps",
        "method": "method",
        "internal_batch_size": "internal_batch_size",
    }

    def chunk_arguments(self, batch: int, args: dict[str, Any]) -> dict[str, Any]:
        if args.get("internal_batch_size") is not None:
            return {}
        # Captum chunks batch × n_steps path images; a chunk holds at least one step of every input
        return {"internal_batch_size": max(batch, self.pass_limit)}


class SmoothGradParams(Params):
    abs: bool = Field(True, description="Average the absolute gradient (false: the signed gradient).")
    samples: int = Field(16, ge=1, le=MAX_STEPS, description="Noisy copies per input.")
    stdevs: float = Field(0.15, gt=0, description=NOISE_STDEV)
    samples_batch_size: int | None = Field(None, ge=1, description="Noisy copies per pass; bounds memory (null = all).")
    seed: int = seed_field()


class SmoothGradMethod(CaptumMethod):
    """mean over k of |∂r_n/∂x| at x + ε_k, ε_k ~ N(0, σ²): Saliency in a smoothgrad NoiseTunnel."""

    name = "smoothgrad"
    description = "Captum Saliency in a smoothgrad NoiseTunnel: the gradient averaged over noisy inputs."
    params_model = SmoothGradParams
    captum_class = Saliency
    captum_arguments = {"abs": "abs"}
    batch_invariant = False

    def tunnel(self) -> NoiseTunnelParams:
        """A smoothgrad NoiseTunnel of the params' samples, noise and seed."""
        p = self.params
        return NoiseTunnelParams(
            type="smoothgrad", samples=p.samples, stdevs=p.stdevs, samples_batch_size=p.samples_batch_size, seed=p.seed
        )


# -- modified backpropagation (ReLU hooks) ----------------------------------------------------
class GuidedBackpropMethod(CaptumMethod):
    """∂r_n/∂x with every ReLU passing back only positive gradients where its input is positive."""

    name = "guided_backprop"
    description = "Captum GuidedBackprop (on a hook-safe copy of the model)."
    captum_class = GuidedBackprop
    hook_based = True


class DeconvolutionMethod(CaptumMethod):
    """∂r_n/∂x with every ReLU applied to the gradient instead of gated by its input."""

    name = "deconvolution"
    description = "Captum Deconvolution (on a hook-safe copy of the model)."
    captum_class = Deconvolution
    hook_based = True


class DeepLiftParams(CaptumParams):
    baseline: float = Field(0.0, description="Constant baseline pixel value (0 = black, 0.5 = mid-grey).")
    multiply_by_inputs: bool = Field(
        True, description="Multiply the multipliers by (x − x₀) (global attribution); false: the multipliers alone."
    )


class DeepLiftMethod(CaptumMethod):
    """(x − x₀) ⊙ m: rescale-rule multipliers m; the map sums to r_n(x) − r_n(x₀)."""

    name = "deep_lift"
    description = "Captum DeepLift (rescale rule) from a constant baseline, on a hook-safe copy of the model."
    params_model = DeepLiftParams
    captum_class = DeepLift
    captum_arguments = {"baseline": "baselines"}
    hook_based = True

    def build_captum(self, network: nn.Module) -> Attribution:
        return DeepLift(network, multiply_by_inputs=self.params.multiply_by_inputs)


# -- sampling and perturbation ---------------------------------------------------------------
class GradientShapParams(Params):
    baselines: list[float] = Field(
        [0.0, 1.0], min_length=1, description="Constant baseline images (pixel values) to draw x₀ from."
    )
    n_samples: int = Field(16, ge=1, le=MAX_STEPS, description="Random (baseline, α, noise) draws per input.")
    stdevs: float = Field(0.0, ge=0, description="Standard deviation of Gaussian noise added to the inputs.")
    seed: int = seed_field()


class GradientShapMethod(CaptumMethod):
    """E[(x̃ − x₀) ⊙ ∂r_n/∂x at x₀ + α(x̃ − x₀)], x̃ = x + ε, ε ~ N(0, σ²), x₀ from the baselines, α ~ U(0, 1).

    No noise tunnel: GradientShap is already one, and NoiseTunnel rejects its baseline set.
    """

    name = "gradient_shap"
    description = "Captum GradientShap with constant baseline images; seeded."
    params_model = GradientShapParams
    captum_class = GradientShap
    captum_arguments = {"n_samples": "n_samples", "stdevs": "stdevs"}
    batch_invariant = False

    def tunnel(self) -> None:
        return None

    @property
    def seed(self) -> int:
        return self.params.seed

    def _arguments(self, inputs: Tensor, overrides: dict[str, Any]) -> dict[str, Any]:
        baselines = constant_images(inputs, self.params.baselines)
        return {"baselines": baselines, **super()._arguments(inputs, overrides)}

    @log_usage()
    def attribute(self, inputs: Tensor, target: Any = None, **kwargs: Any) -> Tensor:
        """As :meth:`CaptumMethod.attribute`; with :attr:`pass_limit`, the ``n_samples`` draws run in chunks
        (Captum's GradientShap has no chunking of its own) and their maps are averaged, weighted by chunk size.
        The draws of successive chunks continue one seeded stream."""
        args = self._arguments(inputs, kwargs)
        n = int(args["n_samples"])
        per_chunk = n if self.pass_limit is None else max(1, min(n, self.pass_limit // inputs.shape[0]))
        if per_chunk >= n:
            return super().attribute(inputs, target=target, **kwargs)
        with seeded_on(self.seed, inputs.device, numpy=True):
            total = None
            for start in range(0, n, per_chunk):
                m = min(per_chunk, n - start)
                part = self.method.attribute(inputs, target=target, **{**args, "n_samples": m}) * m
                total = part if total is None else total + part
        return total / n


class OcclusionParams(CaptumParams):
    window: int = Field(8, ge=1, description="Side of the square patch, in pixels (covers all channels).")
    stride: int = Field(4, ge=1, description="Step between patch positions, in pixels.")
    baseline: float = Field(0.0, description="Pixel value the patch is filled with.")
    perturbations_per_eval: int = Field(32, ge=1, description="Occluded copies per forward pass (speed vs memory).")


class OcclusionMethod(CaptumMethod):
    """Mean over the patches covering a pixel of r_n(x) − r_n(x with the patch set to the baseline)."""

    name = "occlusion"
    description = "Captum Occlusion with a square patch over all channels."
    params_model = OcclusionParams
    captum_class = Occlusion
    captum_arguments = {"baseline": "baselines", "perturbations_per_eval": "perturbations_per_eval"}

    def chunk_arguments(self, batch: int, args: dict[str, Any]) -> dict[str, Any]:
        fits = max(1, self.pass_limit // batch)  # each perturbation is a copy of the whole batch
        return {"perturbations_per_eval": min(int(args["perturbations_per_eval"]), fits)}

    def _arguments(self, inputs: Tensor, overrides: dict[str, Any]) -> dict[str, Any]:
        channels, height, width = inputs.shape[1:]
        window, stride = self.params.window, self.params.stride
        if window > min(height, width):
            raise UserError(f"occlusion: window {window} is larger than the {height}×{width} images")
        shapes = {"sliding_window_shapes": (channels, window, window), "strides": (channels, stride, stride)}
        return {**shapes, **super()._arguments(inputs, overrides)}


# -- Grad-CAM ----------------------------------------------------------------------------------
class UpsampledGradCam(GradientAttribution):
    """Captum's LayerGradCam at ``layer``, upsampled to the input size: ``[B, 1, H, W]``."""

    def __init__(self, forward_func: nn.Module, layer: nn.Module) -> None:
        super().__init__(forward_func)
        self.grad_cam = LayerGradCam(forward_func, layer)

    @log_usage()
    def attribute(
        self,
        inputs: Tensor,
        target: Any = None,
        relu_attributions: bool = True,
        interpolate_mode: str = "bilinear",
        attribute_to_layer_input: bool = False,
    ) -> Tensor:
        """Grad-CAM of images ``inputs`` ``[B, C, H, W]`` → ``[B, 1, H, W]``."""
        cam = self.grad_cam.attribute(
            inputs,
            target=target,
            relu_attributions=relu_attributions,
            attribute_to_layer_input=attribute_to_layer_input,
        )
        if cam.dim() != 4:
            raise UserError(
                f"grad_cam needs a layer with a spatial output [B, C, H, W]; this one gives {tuple(cam.shape)}"
            )
        return LayerAttribution.interpolate(cam, tuple(inputs.shape[-2:]), interpolate_mode=interpolate_mode)


class GradCamParams(CaptumParams):
    layer: str | None = layer_field()
    relu_attributions: bool = Field(True, description="Keep only positive evidence (Selvaraju et al.).")
    interpolate_mode: InterpolateMode = Field("bilinear", description="Upsampling of the layer map to the image size.")


class GradCamMethod(CaptumMethod):
    """ReLU(Σ_k α_k A_k), α_k = mean over positions of ∂r_n/∂A_k, upsampled to the image: ``[B, 1, H, W]``."""

    name = "grad_cam"
    description = "Captum LayerGradCam at a backbone layer, upsampled to the image: [B, 1, H, W]."
    params_model = GradCamParams
    captum_class = UpsampledGradCam
    captum_arguments = {"relu_attributions": "relu_attributions", "interpolate_mode": "interpolate_mode"}

    def needs_safe_copy(self) -> bool:
        return self.params.layer is not None  # a private copy to tap, without in-place ops after the tap

    def build_captum(self, network: nn.Module) -> Attribution:
        return UpsampledGradCam(network, resolve_layer(network, self.params.layer))


class GuidedGradCamParams(CaptumParams):
    layer: str | None = layer_field()
    interpolate_mode: InterpolateMode = Field(
        "bilinear", description="Upsampling of the Grad-CAM map to the image size."
    )


class GuidedGradCamMethod(CaptumMethod):
    """Guided backprop ⊙ upsampled Grad-CAM (with ReLU)."""

    name = "guided_grad_cam"
    description = "Captum GuidedGradCam: guided backprop times upsampled Grad-CAM, on a hook-safe copy."
    params_model = GuidedGradCamParams
    captum_class = GuidedGradCam
    captum_arguments = {"interpolate_mode": "interpolate_mode"}
    hook_based = True

    def build_captum(self, network: nn.Module) -> Attribution:
        return GuidedGradCam(network, resolve_layer(network, self.params.layer))


METHODS: tuple[type[CaptumMethod], ...] = (
    SaliencyMethod,
    InputXGradientMethod,
    IntegratedGradientsMethod,
    SmoothGradMethod,
    GuidedBackpropMethod,
    DeconvolutionMethod,
    DeepLiftMethod,
    GradientShapMethod,
    OcclusionMethod,
    GradCamMethod,
    GuidedGradCamMethod,
)
"""The Captum wrappers, in the order they register (the order ``sharedattr plugins`` lists them in)."""


@hookimpl
def register_methods(register):
    register_components(register, METHODS)
