"""Batched, streaming backbone feature extraction with an on-disk cache.

Images are loaded batch by batch (never the whole set at once) and each batch of latents is
appended to a ``.npy`` file under a temporary name, renamed into place when complete, so
neither the images nor the latents are ever all in memory (pages written through a memory
map would count in the process's resident memory until it exits; plain writes do not).
The file's name is a hash of the canonical backbone spec and of the stimulus content
(ids, categories, image bytes, load size and channels), so a second run with the same
inputs does no backbone forward pass, and any change to either gives a new file.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from sharedattr.data import StimulusSet
from sharedattr.runtime.errors import UserError
from sharedattr.runtime.run_folder import TEMP_SUFFIX, process_alive

CACHE_ENV = "SHAREDATTR_CACHE"
CACHE_FORMAT = 2  # bump when the stored layout or the image loading changes (2: 16-bit/float images scaled)


def default_cache_dir() -> Path:
    """``$SHAREDATTR_CACHE``, else ``$XDG_CACHE_HOME/sharedattr``, else ``~/.cache/sharedattr``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "sharedattr"


def feature_key(backbone_spec: dict[str, Any], stimuli_digest: str, size: tuple[int, int], channels: int) -> str:
    """The cache key of one backbone × stimulus set: a SHA-256 prefix."""
    payload = json.dumps(
        {
            "format": CACHE_FORMAT,
            "backbone": backbone_spec,
            "stimuli": stimuli_digest,
            "size": list(size),
            "channels": channels,
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def _write_header(f: Any, shape: tuple[int, ...]) -> None:
    """The ``.npy`` header of a C-ordered float32 array of ``shape`` (the header ``open_memmap`` writes)."""
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(f, header)


def _open(path: Path) -> Tensor:
    """A cached feature file as a tensor backed by a copy-on-write memory map (no full read); the map rides along
    as ``tensor.feature_map`` for :func:`release_pages`."""
    array = np.load(path, mmap_mode="c")
    tensor = torch.from_numpy(array)
    tensor.feature_map = array
    return tensor


def release_pages(latents: Tensor) -> bool:
    """Let the OS drop the resident pages of a cached feature file's map (``madvise(MADV_DONTNEED)``): they were
    never written, so the next access reads them from the file again. Returns whether anything was released:
    False for features held in memory (left untouched) or where ``madvise`` is missing."""
    import mmap

    handle = getattr(getattr(latents, "feature_map", None), "_mmap", None)
    if handle is None or not hasattr(handle, "madvise") or not hasattr(mmap, "MADV_DONTNEED"):
        return False
    handle.madvise(mmap.MADV_DONTNEED)
    return True


@torch.inference_mode()
def extract_features(
    backbone: nn.Module,
    stimuli: StimulusSet,
    *,
    backbone_spec: dict[str, Any] | None = None,
    cache_dir: Path | None = None,
    batch_size: int = 32,
    device: torch.device | str = "cpu",
    progress: bool = True,
    stimuli_digest: str | None = None,
) -> tuple[Tensor, bool]:
    """Latents of every stimulus, ``[S, *backbone.latent_shape]`` float32 on the CPU, and whether the cache hit.

    Before computing, every image is decoded once and all failures are raised together
    (:meth:`StimulusSet.check_images`). A cache hit skips that: its key hashes the very bytes
    that decoded when the cache was written. ``backbone_spec`` (the canonical spec dict) and
    ``cache_dir`` enable the cache; without them the latents are computed into memory.
    ``stimuli_digest`` passes a :meth:`StimulusSet.content_digest` the caller already has (it reads
    every image file). Peak memory is one batch of images plus, without a cache, the latents
    themselves (with a cache, the latents go to the file batch by batch, and an interrupted
    extraction leaves neither the cache file nor its temporary file).
    """
    size, channels = tuple(backbone.input_size), int(backbone.in_channels)
    shape = (len(stimuli), *backbone.latent_shape)
    path = None
    if backbone_spec is not None and cache_dir is not None:
        key = feature_key(backbone_spec, stimuli_digest or stimuli.content_digest(), size, channels)
        path = Path(cache_dir) / f"features-{key}.npy"
        if path.is_file():
            try:
                cached = _open(path)
            except (ValueError, OSError):  # damaged, or not a plain float array: recomputed, never trusted
                cached = None
            if cached is not None and tuple(cached.shape) == shape and cached.dtype == torch.float32:
                stimuli.check_images(images=False)  # the masks, which the cache does not cover
                return cached, True
    stimuli.check_images()  # every decode error at once, before the first forward pass

    def batches():
        for start in tqdm(
            range(0, len(stimuli), batch_size), desc="features", disable=not progress, leave=False, unit="batch"
        ):
            indices = range(start, min(start + batch_size, len(stimuli)))
            images = stimuli.load_images(size, channels, indices).to(device)
            latents = backbone(backbone.preprocess(images)).float().cpu().numpy()
            if latents.shape != (len(indices), *shape[1:]):
                raise ValueError(
                    f"backbone returned latents of shape {latents.shape} for {len(indices)} images; "
                    f"expected {(len(indices), *shape[1:])} (its latent_shape)"
                )
            yield start, indices.stop, np.ascontiguousarray(latents)

    if path is None:
        out = np.empty(shape, dtype=np.float32)
        for start, stop, latents in batches():
            out[start:stop] = latents
        return torch.from_numpy(out), False
    with _writing(path.parent):
        path.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_writers_temporaries(path)
    tmp = path.with_name(f".{path.name}.{socket.gethostname()}.{os.getpid()}{TEMP_SUFFIX}")
    try:
        with _writing(tmp):
            f = open(tmp, "wb")  # noqa: SIM115 - closed below; writes are checked one by one
        with f:
            with _writing(tmp):
                _write_header(f, shape)
            for _, _, latents in batches():
                with _writing(tmp):
                    f.write(memoryview(latents).cast("B"))
            with _writing(tmp):
                f.flush()
                os.fsync(f.fileno())  # on disk before the rename makes it visible
        with _writing(path):
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return _open(path), False


@contextlib.contextmanager
def _writing(path: Path) -> Iterator[None]:
    """Turn a filesystem error while writing the feature cache (full disk, read-only or unwritable folder) into
    one :class:`UserError` naming the file and the fix."""
    try:
        yield
    except OSError as err:
        raise UserError(
            f"cannot write the feature cache {path}: {err.strerror or err}; set cache_dir (or ${CACHE_ENV}) to a "
            "folder with free space that you can write to"
        ) from None


def remove_dead_writers_temporaries(path: Path) -> int:
    """Delete the partial files ``.<name>.<host>.<pid>.sharedattr.tmp`` that extractions of ``path`` killed on this
    host left behind (their process is gone); a live writer's, or another host's, are kept. Returns how many."""
    host, removed = socket.gethostname(), 0
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*{TEMP_SUFFIX}"):
        parts = tmp.name[len(path.name) + 2 : -len(TEMP_SUFFIX)].rsplit(".", 1)
        if len(parts) == 2 and parts[0] == host and parts[1].isdigit() and not process_alive(int(parts[1])):
            tmp.unlink(missing_ok=True)
            removed += 1
    return removed
