"""Where a run computes: ``device = "auto" | "cpu" | "cuda[:N]" | "mps"`` resolved to a torch device."""

from __future__ import annotations

import torch

from sharedattr.runtime.errors import UserError


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; an unavailable device is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device: {name!r} requested but CUDA is not available; use device = 'cpu' or 'auto'")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"device: {name!r} requested but MPS is not available; use device = 'cpu' or 'auto'")
    return device
