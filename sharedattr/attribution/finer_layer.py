"""A named layer of a model's backbone, finer than its output: its activations in a pass, and a gate on their
gradient (``parallel_backprop`` with ``share_at``, docs/methods.md).

:class:`FinerLayer` works on a private hook-safe copy of the model
(:func:`~sharedattr.attribution.hook_safety.hook_safe_copy`: out-of-place activations, one module per call site), so
the user's model is never changed; the layer is found by name as Grad-CAM's is
(:func:`~sharedattr.attribution.hook_safety.resolve_layer`: ``"block2"`` of ``insilico_cnn``, ``"layer2"`` of a
torchvision network, a dotted module path otherwise). One forward hook, registered once, records the layer's output
``G`` ``[B, K', H', W']`` inside :meth:`FinerLayer.capture` and attaches a gradient hook that multiplies the gradient
reaching ``G`` by the gate the caller sets (:class:`GatedPass`). The hook's state is per thread, so the method stays
safe to run beside other work.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from sharedattr.attribution.hook_safety import example_input, hook_safe_copy, resolve_layer
from sharedattr.runtime.errors import UserError


class GatedPass:
    """One pass through a :class:`FinerLayer`: the layer's ``activations`` (one tensor per call) and the ``gate``
    (``None``: the gradient passes unchanged) that multiplies the gradient reaching them in a backward pass. With
    ``leaf``, each activation is detached into a leaf that requires grad: the pass is differentiable from the layer
    on, and nothing before it is recorded (for gradients that stop at the layer)."""

    def __init__(self, leaf: bool = False) -> None:
        self.leaf = leaf
        self.activations: list[Tensor] = []
        self.gate: Tensor | None = None

    def gated(self, grad: Tensor) -> Tensor | None:
        """The gradient hook: ``grad ⊙ gate`` (``None`` keeps ``grad``)."""
        return None if self.gate is None else grad * self.gate

    @property
    def activation(self) -> Tensor:
        """The layer's one output ``G`` of this pass."""
        if len(self.activations) != 1:
            raise RuntimeError(f"the tapped layer ran {len(self.activations)} times in one pass; expected once")
        return self.activations[0]


class FinerLayer:
    """The layer ``layer`` of ``model``'s backbone, strictly before its output (the readout layer), on a private copy.

    ``network`` is the copy to run (it computes the model's outputs); ``field`` names the param in errors. A
    :class:`~sharedattr.runtime.errors.UserError` names the field and the fix when the layer is not in the backbone,
    does not run on the way to its output, or *is* its output.

    Example::

        tap = FinerLayer(model, "block2")
        with tap.capture() as state:
            latents = tap.network.latents(images.requires_grad_())
        state.activation.shape  # [B, K', H', W'] of block2
    """

    def __init__(self, model: nn.Module, layer: str, field: str = "parallel_backprop.share_at") -> None:
        self.layer, self.field = layer, field
        if not isinstance(getattr(model, "backbone", None), nn.Module):
            name = type(model).__name__
            raise UserError(f"{field} = {layer!r} needs an encoding model with a backbone; {name} has none")
        self.network = hook_safe_copy(model)
        try:
            module = resolve_layer(self.network, layer)
        except UserError as err:
            raise UserError(f"{field}: {err}") from None
        if module is self.network.backbone:
            raise UserError(self._not_finer("it is the backbone itself"))
        self._local = threading.local()
        module.register_forward_hook(self._record)
        self._check()

    def _record(self, module: nn.Module, inputs: object, output: Tensor) -> Tensor | None:
        state = getattr(self._local, "state", None)
        if state is None:
            return None
        if not isinstance(output, Tensor):
            kind = type(output).__name__
            raise UserError(f"{self.field} = {self.layer!r}: that layer's output is a {kind}, not a tensor")
        if state.leaf:
            output = output.detach().requires_grad_(True)
        state.activations.append(output)
        if output.requires_grad:
            output.register_hook(state.gated)
        return output

    @contextmanager
    def capture(self, leaf: bool = False) -> Iterator[GatedPass]:
        """Record the layer's output in the passes run inside (on this thread); yields their :class:`GatedPass`
        (``leaf``: the output is a fresh leaf, so gradients stop there)."""
        state = GatedPass(leaf)
        self._local.state = state
        try:
            yield state
        finally:
            self._local.state = None

    def _not_finer(self, why: str) -> str:
        return (
            f"{self.field} = {self.layer!r} is not a layer before the backbone's output ({why}); name a finer layer "
            "of the backbone, e.g. 'block2' for insilico_cnn cut at block3, or leave it null"
        )

    def _check(self) -> None:
        """One probe pass: the layer runs once, on the way to the latents, and is not the latents."""
        x = example_input(self.network).requires_grad_(True)
        with torch.enable_grad(), self.capture() as state:
            latents = self.network.latents(x)
        if not state.activations:
            raise UserError(self._not_finer("it does not run when the backbone computes its output"))
        if len(state.activations) > 1:
            raise UserError(self._not_finer(f"it runs {len(state.activations)} times per pass"))
        g = state.activation
        if g is latents or (g.shape == latents.shape and torch.equal(g, latents)):
            raise UserError(self._not_finer("its output is the backbone's output, the readout layer"))
        (grad,) = torch.autograd.grad(latents.sum(), g, allow_unused=True)
        if grad is None:
            raise UserError(self._not_finer("the backbone's output does not depend on it"))
