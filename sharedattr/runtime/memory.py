"""How many images one forward (and backward) pass may hold, from a memory budget: for attribution passes and
feature extraction.

Path methods multiply the images of a batch: integrated gradients by its steps, SmoothGrad and noise tunnels
by their noisy copies, GradientShap by its draws, occlusion by its perturbed copies, the ``ig`` path of
parallel backprop by its steps. Without a bound, one pass holds ``batch × count`` images and memory grows
with the count (16 IG steps over 32 pairs at 224 px through ResNet-50 once took 18 GB). The run measures
what one image costs in the model (:func:`bytes_per_image`: the activations of every module, for the
forward pass and its gradients) and tells each method, through its declared ``limit_images_per_pass(n)``
(:func:`sharedattr.attribution.engine.bound_memory`), the number of images that fit the budget
(``attribution.memory_mb``); the method then runs in chunks of at most that many images. A method without that
hook runs as it is.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor, nn

ACTIVATION_FACTOR = 1
"""Bytes of a pass per byte of forward module outputs. Autograd keeps about one copy of the activations (in-place
ReLUs share theirs) and the backward pass's gradients are transient: measured on ResNet-18 cut at layer3 (224 px),
one more image in a pass of integrated gradients or parallel backprop grew the peak by 21-24 MB against an estimate
of 28 MB (benchmarks/memory_budget.py)."""


def bytes_per_image(model: nn.Module, input_size: tuple[int, int], channels: int, device: Any = "cpu") -> int:
    """The estimated bytes one image costs in a forward and backward pass of ``model``: ``ACTIVATION_FACTOR`` ×
    the bytes of the input and of every leaf module's output, on one zero image ``[1, C, H, W]``."""
    total = 0

    def count(_module: nn.Module, _inputs: Any, output: Any) -> None:
        nonlocal total
        for t in output if isinstance(output, (tuple, list)) else (output,):
            if isinstance(t, Tensor):
                total += t.numel() * t.element_size()

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(count) for m in leaves]
    try:
        x = torch.zeros(1, channels, *input_size, device=device)
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return ACTIVATION_FACTOR * (total + x.numel() * x.element_size())


def images_per_pass(memory_mb: int, per_image: int) -> int:
    """How many images of ``per_image`` bytes fit ``memory_mb`` MiB (at least 1)."""
    return max(1, (memory_mb << 20) // max(1, per_image))


def physical_memory_mb() -> int | None:
    """The machine's memory in MiB (None where it cannot be read)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") >> 20
    except (AttributeError, OSError, ValueError):
        return None


def workers_within(memory_mb: int, workers: int) -> int:
    """How many of ``workers`` may each hold passes of up to ``memory_mb`` MiB side by side: at most half the
    machine's memory in all (at least 1). The count changes speed and memory only, never a result."""
    total = physical_memory_mb()
    if total is None:
        return max(1, workers)
    return max(1, min(workers, total // (2 * max(1, memory_mb))))
