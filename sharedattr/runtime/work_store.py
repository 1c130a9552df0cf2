"""A folder of finished work items, so that a repeated or interrupted run recomputes nothing twice.

Each item is a safetensors file named by the SHA-256 of a JSON description of everything
its value depends on (component specs, model digest, the exact pairs). Files are written
atomically (temporary name, then rename), so an item is either complete or absent.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import Tensor

from sharedattr.runtime.io import atomic_save_tensors


def work_key(**payload: Any) -> str:
    """A short content hash of ``payload`` (JSON-serialisable, key order irrelevant)."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


class WorkStore:
    """Finished work items in ``folder`` (``None``: remember nothing). ``hits``/``misses`` count look-ups."""

    def __init__(self, folder: str | Path | None) -> None:
        self.folder = Path(folder) if folder is not None else None
        self.hits = 0
        self.misses = 0

    def path(self, kind: str, key: str) -> Path | None:
        return None if self.folder is None else self.folder / f"{kind}-{key}.safetensors"

    def get_or_compute(self, kind: str, key: str, compute: Callable[[], dict[str, Tensor]]) -> dict[str, Tensor]:
        """The stored tensors of item ``kind``/``key``, or ``compute()``'s, stored atomically on the way."""
        from safetensors.torch import load_file

        path = self.path(kind, key)
        if path is not None and path.is_file():
            try:
                tensors = load_file(str(path))
            except Exception:  # noqa: BLE001 - a damaged file is recomputed, never trusted
                tensors = None
            if tensors is not None:
                self.hits += 1
                return tensors
        self.misses += 1
        tensors = compute()
        if path is not None:
            atomic_save_tensors(path, tensors)
        return tensors
