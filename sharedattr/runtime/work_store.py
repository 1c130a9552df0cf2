"""A folder of finished work items, so that a repeated or interrupted run recomputes nothing twice.

Each item is a safetensors file named by the SHA-256 of a JSON description of everything
its value depends on (component specs, model digest, the exact pairs). Files are written
atomically (temporary name, then rename), so an item is either complete or absent. Each file
also records a checksum of its tensors (names, dtypes, shapes and bytes); an item whose
content does not match it, that lacks it, or that the caller's ``validate`` rejects is computed again and
rewritten, never trusted. A checksum only shows that the file is as some writer wrote it, so every consumer
passes :func:`shape_validator`: the item's tensors, their number of dimensions, sizes and dtype are what the
consumer will use (a 0-d ``values``, an integer map or an extra key is a damaged item, not a crash later).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import threading
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sharedattr.runtime.io import atomic_save_tensors

CHECKSUM_KEY = "sharedattr_sha256"
Shape = tuple[int | str | None, ...]
"""A declared tensor shape for :func:`shape_validator`, one entry per dimension: an int (that size), a str (a
size named in the item: equal wherever the name appears, e.g. ``"S"`` in images ``[S, C, H, W]`` and responses
``[S]``) or None (any size)."""
Validator = Callable[[Mapping[str, Tensor]], str | None]


def work_key(**payload: Any) -> str:
    """A short content hash of ``payload`` (JSON-serialisable, key order irrelevant)."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def tensor_bytes(t: Tensor) -> bytes:
    """The raw bytes of ``t``'s elements in row-major order, whatever its strides (a size-1 dimension may carry any
    stride, which ``view(torch.uint8)`` refuses): a fresh standard-strided copy is read."""
    if not t.numel():
        return b""
    flat = t.detach().cpu().reshape(-1).clone(memory_format=torch.contiguous_format)
    return flat.view(torch.uint8).numpy().tobytes()


def tensors_checksum(tensors: Mapping[str, Tensor]) -> str:
    """SHA-256 over ``tensors``' names, dtypes, shapes and bytes (name order irrelevant)."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name]
        h.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(tensor_bytes(t))
    return h.hexdigest()


def shape_validator(required: Mapping[str, Shape], optional: Mapping[str, Shape] | None = None) -> Validator:
    """A ``validate`` for :meth:`WorkStore.get_or_compute` and :meth:`WorkStore.lookup`: the item holds every
    ``required`` tensor and no tensor that neither mapping declares (a key of ``optional`` may be a pattern with
    ``*``, e.g. ``"cost/*"``), and each tensor has a floating-point dtype and its declared :data:`Shape` (number
    of dimensions and sizes; named sizes agree across the item). Returns the first problem, or None."""
    optional = dict(optional or {})

    def declared(name: str) -> Shape | None:
        if name in required:
            return required[name]
        if name in optional:
            return optional[name]
        return next((shape for pattern, shape in optional.items() if fnmatch.fnmatchcase(name, pattern)), None)

    def validate(tensors: Mapping[str, Tensor]) -> str | None:
        missing = [k for k in required if k not in tensors]
        if missing:
            return f"missing {', '.join(missing)}"
        named: dict[str, tuple[int, str]] = {}
        for name in sorted(tensors):
            t, shape = tensors[name], declared(name)
            if shape is None:
                return f"unexpected tensor {name!r}"
            if not t.dtype.is_floating_point:
                return f"{name!r} is {t.dtype}, expected a floating-point tensor"
            if t.dim() != len(shape):
                return f"{name!r} has {t.dim()} dimensions {tuple(t.shape)}, expected {len(shape)} {_show(shape)}"
            for size, want in zip(t.shape, shape):
                if isinstance(want, int) and size != want:
                    return f"{name!r} has shape {tuple(t.shape)}, expected {_show(shape)}"
                if isinstance(want, str):
                    seen = named.setdefault(want, (size, name))
                    if seen[0] != size:
                        return f"{name!r} has {want} = {size} but {seen[1]!r} has {want} = {seen[0]}"
        return None

    return validate


def _show(shape: Shape) -> str:
    """A declared shape as text: ``[4, S, any]``."""
    return "[" + ", ".join("any" if d is None else str(d) for d in shape) + "]"


class WorkStore:
    """Finished work items in ``folder`` (``None``: remember nothing). ``hits``/``misses`` count look-ups;
    ``damaged`` lists the items found damaged (and recomputed). Safe to use from work items side by side (each
    item has its own key; the counts are kept under a lock)."""

    def __init__(self, folder: str | Path | None) -> None:
        self.folder = Path(folder) if folder is not None else None
        self.hits = 0
        self.misses = 0
        self.damaged: list[Path] = []
        self._lock = threading.Lock()

    def path(self, kind: str, key: str) -> Path | None:
        return None if self.folder is None else self.folder / f"{kind}-{key}.safetensors"

    def lookup(
        self, kind: str, key: str, validate: Callable[[Mapping[str, Tensor]], str | None] | None = None
    ) -> dict[str, Tensor] | None:
        """The stored tensors of item ``kind``/``key`` when present and sound (counted as a hit), else None.

        A damaged item is reported as :meth:`get_or_compute` reports it (a warning naming the file) and left for
        the caller to compute.
        """
        path = self.path(kind, key)
        if path is None or not path.is_file():
            return None
        tensors, problem = _read_verified(path, validate)
        if tensors is None:
            with self._lock:
                self.damaged.append(path)
            warnings.warn(f"work item {path} is damaged ({problem}): computing it again", stacklevel=3)
            return None
        with self._lock:
            self.hits += 1
        return tensors

    def get_or_compute(
        self,
        kind: str,
        key: str,
        compute: Callable[[], dict[str, Tensor]],
        validate: Callable[[Mapping[str, Tensor]], str | None] | None = None,
    ) -> dict[str, Tensor]:
        """The stored tensors of item ``kind``/``key``, or ``compute()``'s, stored atomically on the way.

        A stored item is used only when its checksum matches and ``validate(tensors)`` (if given)
        returns None; otherwise it is recomputed, with a warning naming the file and the reason.
        """
        tensors = self.lookup(kind, key, validate)
        if tensors is None:
            tensors = compute()
            self.put(kind, key, tensors)
        return tensors

    def put(self, kind: str, key: str, tensors: dict[str, Tensor]) -> None:
        """Store ``tensors`` as item ``kind``/``key`` (atomically, with their checksum), counted as a computed item."""
        with self._lock:
            self.misses += 1
        path = self.path(kind, key)
        if path is not None:
            atomic_save_tensors(path, tensors, {CHECKSUM_KEY: tensors_checksum(tensors)})


def _read_verified(
    path: Path, validate: Callable[[Mapping[str, Tensor]], str | None] | None
) -> tuple[dict[str, Tensor] | None, str]:
    """The tensors of ``path`` if its checksum matches and ``validate`` accepts them, else (None, reason)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            expected = (f.metadata() or {}).get(CHECKSUM_KEY)
            tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    except Exception as err:  # noqa: BLE001 - truncated, foreign or unreadable: recompute, never trust
        return None, f"unreadable: {type(err).__name__}"
    if expected is None:
        return None, "no checksum"
    if tensors_checksum(tensors) != expected:
        return None, "checksum mismatch"
    problem = validate(tensors) if validate is not None else None
    if problem is not None:
        return None, problem
    return tensors, ""
