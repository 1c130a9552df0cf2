"""Batched, streaming backbone feature extraction with an on-disk cache.

Images are loaded batch by batch (never the whole set at once) and each batch of latents is
appended to a ``.npy`` file under a temporary name, renamed into place when complete, so
neither the images nor the latents are ever all in memory (pages written through a memory
map would count in the process's resident memory until it exits; plain writes do not).
The file's name is ``features-<key>-<sha256>.npy``: the key hashes the canonical backbone spec and the
stimulus content (ids, categories, image bytes, load size and channels), so a second run with the same
inputs does no backbone forward pass, and any change to either gives a new file; the SHA-256 is that of the
file's bytes, computed as they are written and checked (in 4 MiB blocks, never the whole file in memory)
every time the file is read. A file whose bytes no longer match (values altered or damaged on disk), or that is
not a C-ordered float32 array of the expected shape, is reported in a warning naming it, computed again and
replaced; it is never used.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import io
import json
import os
import socket
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from sharedattr.data import StimulusSet
from sharedattr.runtime.errors import UserError
from sharedattr.runtime.memory import bytes_per_image, images_per_pass
from sharedattr.runtime.numerics import Pieces, default_workers, on_one_thread
from sharedattr.runtime.run_folder import TEMP_SUFFIX, process_alive

CACHE_ENV = "SHAREDATTR_CACHE"
CACHE_FORMAT = 3  # bump when the stored layout or the image loading changes (2: 16-bit/float images scaled;
# 3: each file's name carries the SHA-256 of its bytes)
HASH_BLOCK = 4 << 20  # bytes read at a time when a cache file is checked


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


def _header(shape: tuple[int, ...]) -> bytes:
    """The ``.npy`` header of a C-ordered float32 array of ``shape`` (the header ``open_memmap`` writes)."""
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False, "shape": shape}
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue()


def cache_files(cache_dir: Path, key: str) -> list[Path]:
    """The cache files of ``key`` in ``cache_dir``, ``features-<key>-<sha256>.npy``, sorted by name."""
    return sorted(Path(cache_dir).glob(f"features-{glob.escape(key)}-*.npy"))


def _open_verified(path: Path, shape: tuple[int, ...]) -> Tensor | str:
    """Cached features ``[*shape]`` float32 from ``path`` (as :func:`_open` maps them) when the file's bytes hash to
    the SHA-256 in its name and hold a C-ordered float32 array of ``shape``; otherwise why not. The check and the
    map read the same open file, so a file replaced meanwhile is not mapped unchecked."""
    expected = path.name.rsplit("-", 1)[-1].removesuffix(".npy")
    try:
        with open(path, "rb") as f:
            h = hashlib.sha256()
            for block in iter(lambda: f.read(HASH_BLOCK), b""):
                h.update(block)
            if h.hexdigest() != expected:
                return "its bytes do not match the checksum in its name"
            f.seek(0)
            if np.lib.format.read_magic(f) != (1, 0):
                return "not a .npy file of version 1.0"
            found, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            if dtype != np.float32 or fortran or tuple(found) != shape:
                return f"holds {dtype} {tuple(found)}, expected float32 {shape}"
            array = np.memmap(f, dtype=np.float32, mode="c", shape=shape, offset=f.tell())
    except (ValueError, OSError) as err:  # not a .npy file, a truncated one, an unreadable one
        return f"unreadable: {type(err).__name__}: {str(err)[:200]}"
    tensor = torch.from_numpy(array)
    tensor.feature_map = array
    return tensor


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


@dataclass(frozen=True)
class FeatureCache:
    """Where the features of one backbone on one stimulus set are cached: in ``folder``, keyed by the backbone's
    canonical spec (``backbone_spec``) and the stimuli's content digest (``stimuli_digest``, computed when None: it
    reads every image file; pass it when it is at hand)."""

    folder: Path
    backbone_spec: dict[str, Any]
    stimuli_digest: str | None = None


@on_one_thread
@torch.inference_mode()
def extract_features(
    backbone: nn.Module,
    stimuli: StimulusSet,
    *,
    cache: FeatureCache | None = None,
    batch_size: int = 32,
    device: torch.device | str = "cpu",
    progress: bool = True,
    memory_mb: int | None = None,
) -> tuple[Tensor, bool]:
    """Latents of every stimulus, ``[S, *backbone.latent_shape]`` float32 on the CPU, and whether the cache hit.

    With ``memory_mb`` (the run's ``attribution.memory_mb``), a forward pass holds at most as many images as fit that
    budget (:func:`extraction_batch`), fewer than ``batch_size`` for large inputs; one image that alone exceeds it
    is a :class:`UserError`, raised before the first batch.

    Before computing, every image is decoded once and all failures are raised together
    (:meth:`StimulusSet.check_images`). A cache hit skips that: its key hashes the very bytes
    that decoded when the cache was written. With ``cache`` (a :class:`FeatureCache`) the latents go through
    the cache; without it they are computed into memory. Peak memory is one batch of images per worker plus,
    without a cache, the latents themselves (with a cache, the latents go to the file batch by batch, and an
    interrupted extraction leaves neither the cache file nor its temporary file).
    """
    size, channels = tuple(backbone.input_size), int(backbone.in_channels)
    shape = (len(stimuli), *backbone.latent_shape)
    path = None
    damaged: list[Path] = []
    if cache is not None:
        key = feature_key(cache.backbone_spec, cache.stimuli_digest or stimuli.content_digest(), size, channels)
        path = Path(cache.folder) / f"features-{key}.npy"  # the slot: names the temporary file while writing
        for candidate in cache_files(Path(cache.folder), key):
            cached = _open_verified(candidate, shape)
            if isinstance(cached, Tensor):
                stimuli.check_images(images=False)  # the masks, which the cache does not cover
                return cached, True
            warnings.warn(
                f"feature cache file {candidate} is damaged ({cached}): computing the features again and replacing it",
                stacklevel=2,
            )
            damaged.append(candidate)
    stimuli.check_images()  # every decode error at once, before the first forward pass
    batch_size, workers = extraction_batch(backbone, size, channels, batch_size, memory_mb, device)

    def batch(start: int) -> tuple[int, int, np.ndarray]:  # one piece: its own thread and grad mode
        indices = range(start, min(start + batch_size, len(stimuli)))
        with torch.inference_mode():
            images = stimuli.load_images(size, channels, indices).to(device)
            latents = backbone(backbone.preprocess(images)).float().cpu().numpy()
        if latents.shape != (len(indices), *shape[1:]):
            raise ValueError(
                f"backbone returned latents of shape {latents.shape} for {len(indices)} images; "
                f"expected {(len(indices), *shape[1:])} (its latent_shape)"
            )
        return start, indices.stop, np.ascontiguousarray(latents)

    def batches() -> Iterator[tuple[int, int, np.ndarray]]:
        starts = range(0, len(stimuli), batch_size)  # fixed by the spec and the budget, never by the workers
        bar = tqdm(total=len(starts), desc="features", disable=not progress, leave=False, unit="batch")
        with bar:
            for done in Pieces(workers).map(batch, starts):
                bar.update()
                yield done

    if path is None:
        out = np.empty(shape, dtype=np.float32)
        for start, stop, latents in batches():
            out[start:stop] = latents
        return torch.from_numpy(out), False
    with _writing(path.parent):
        path.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_writers_temporaries(path)
    tmp = path.with_name(f".{path.name}.{socket.gethostname()}.{os.getpid()}{TEMP_SUFFIX}")
    h = hashlib.sha256()
    try:
        with _writing(path.parent):
            f = open(tmp, "wb")  # noqa: SIM115 - closed below; writes are checked one by one
        with f:
            header = _header(shape)
            h.update(header)
            with _writing(path.parent):
                f.write(header)
            for _, _, latents in batches():
                data = memoryview(latents).cast("B")
                h.update(data)
                with _writing(path.parent):
                    f.write(data)
            with _writing(path.parent):
                f.flush()
                os.fsync(f.fileno())  # on disk before the rename makes it visible
        final = path.with_name(f"features-{key}-{h.hexdigest()}.npy")
        with _writing(path.parent):
            os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    for stale in damaged:  # replaced (one recomputed with the same bytes has the same name: already replaced)
        if stale != final:
            with _writing(path.parent):
                stale.unlink(missing_ok=True)
    return _open(final), False


def extraction_batch(
    backbone: nn.Module,
    size: tuple[int, int],
    channels: int,
    batch_size: int,
    memory_mb: int | None,
    device: torch.device | str = "cpu",
) -> tuple[int, int]:
    """Images per forward pass of a feature extraction, and how many passes run side by side.

    The images per pass are ``batch_size``, lowered to what fits ``memory_mb`` MiB. One image's cost is the
    attribution budget's estimate (:func:`~sharedattr.runtime.memory.bytes_per_image`: the bytes of every module's
    output on one zero image, measured by one forward pass), so an ``input_size`` of 2048 runs one image at a time
    instead of allocating ``batch_size`` of them per layer. An image that alone costs more than the budget is a
    :class:`UserError` naming both fields. The passes side by side
    (:class:`~sharedattr.runtime.numerics.Pieces`, on the CPU) are the process's workers, as many as fit the budget
    together: the batches, and so the latents' bits, never depend on them. Without ``memory_mb``: ``batch_size``
    and every worker.
    """
    workers = default_workers() if torch.device(device).type == "cpu" else 1
    if memory_mb is None:
        return batch_size, workers
    per_image = bytes_per_image(backbone, size, channels, device)
    if per_image > memory_mb << 20:
        raise UserError(
            f"backbone.input_size: one {size[0]}×{size[1]} image costs about {per_image / 2**20:,.0f} MiB in the "
            f"backbone's forward pass, more than attribution.memory_mb = {memory_mb} MiB, the budget of one pass: "
            "lower backbone.input_size, or raise attribution.memory_mb if the machine has that memory"
        )
    fits = images_per_pass(memory_mb, per_image)
    batch = max(1, min(batch_size, fits))
    return batch, max(1, min(workers, fits // batch))


@contextlib.contextmanager
def _writing(folder: Path) -> Iterator[None]:
    """Turn a filesystem error while writing into the feature cache ``folder`` (full disk, read-only or unwritable
    folder) into one :class:`UserError` naming the folder and the fix."""
    try:
        yield
    except OSError as err:
        raise UserError(
            f"cannot write the feature cache folder {folder}: {err.strerror or err}; set cache_dir (or "
            f"${CACHE_ENV}) to a folder with free space that you can write to"
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
