"""Where a run computes: ``device = "auto" | "cpu" | "cuda[:N]" | "mps"`` resolved to a torch device, and
thread-count-independent scopes."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

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


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run the block on one torch (and BLAS/LAPACK) thread, then restore the thread count.

    For reductions whose result depends on the number of threads: LAPACK's ``eigh`` gives
    eigenvectors that differ in the last bits between 1 and 2 threads, which flips float32
    weights of a ridge fit, so a torchrun rank (one thread) and a single process (all cores)
    would fit different models.
    """
    before = torch.get_num_threads()
    if before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
