"""Results with the same bits whatever the number of threads or torchrun ranks: every result is computed on one
torch thread, and a process uses its cores by computing fixed pieces of work side by side.

On the CPU, PyTorch's parallel kernels split work by the thread count, and the split changes the last bits
(measured; docs/reliability.md, "Same spec, same results"):

- MKL's matrix products split long inner dimensions across threads on some CPUs (an Intel Xeon with AVX-512:
  ``X @ X.T`` for ``X`` ``[200, 5000]``). MKL's conditional reproducibility (``MKL_CBWR``) depends on the vendor:
  on an AMD EPYC, ``AVX2,STRICT`` made a ``[16, 147456] @ [147456, 22]`` product thread-dependent that was not.
- oneDNN's convolutions pick kernels and work splits by the thread count (54 of 432 shapes gave other input
  gradients on 2 threads than on 1).
- Reductions to one value over more than 32,768 elements add per-thread partial sums (a ``[1, H, W]`` map's sum).
- Elementwise kernels whose vector and scalar code round differently (``sigmoid``, ``elu``, ``softplus``, ``pow``)
  run the elements at a thread's chunk boundary through the scalar code.
- Bilinear resizing groups channels by thread.

On one thread none of these splits happen, so a result's bits depend on the data, the spec and the CPU's SIMD
path only. :func:`one_thread_results` runs a block so; :class:`Pieces` runs independent, fixed pieces of work
(feature batches, tiles of a matrix product) side by side on worker threads, each piece on one torch thread, and
returns them in order: the same bits for any number of workers.
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import copy
import functools
import os
import platform
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import torch

T = TypeVar("T")
R = TypeVar("R")

WORKERS_ENV = "SHAREDATTR_WORKERS"
"""Environment variable: how many pieces of work a process computes side by side (default: torch's thread count
when the results block starts; torchrun sets 1 per rank). Results do not depend on it."""

_WORKERS: contextvars.ContextVar[int | None] = contextvars.ContextVar("sharedattr_workers", default=None)


def default_workers() -> int:
    """Pieces computed side by side: inside :func:`one_thread_results`, the count it was given or found; else
    ``$SHAREDATTR_WORKERS``, else torch's current thread count (at least 1)."""
    inside = _WORKERS.get()
    if inside is not None:
        return inside
    value = os.environ.get(WORKERS_ENV, "").strip()
    if value:
        try:
            return max(1, int(value))
        except ValueError:
            from sharedattr.runtime.errors import UserError

            raise UserError(
                f"{WORKERS_ENV}={value!r} is not a whole number of workers (e.g. 4); set one or unset it"
            ) from None
    return max(1, torch.get_num_threads())


@contextlib.contextmanager
def _torch_threads(count: int) -> Iterator[None]:
    """torch's thread count set to ``count`` for the block, then restored."""
    before = torch.get_num_threads()
    if before != count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        if before != count:
            torch.set_num_threads(before)


@contextlib.contextmanager
def one_thread_results(workers: int | None = None) -> Iterator[int]:
    """Compute the block's results on one torch (OpenMP, MKL, oneDNN) thread; :class:`Pieces` inside it run
    ``workers`` pieces side by side (default: :func:`default_workers` as the block starts). Yields that count;
    restores the thread count afterwards. Nests (an inner block keeps the outer's workers)."""
    count = max(1, int(workers)) if workers is not None else default_workers()
    token = _WORKERS.set(count)
    try:
        with _torch_threads(1):
            yield count
    finally:
        _WORKERS.reset(token)


def on_one_thread(function: Callable[..., R]) -> Callable[..., R]:
    """Decorate ``function`` so that it computes its results inside :func:`one_thread_results`."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> R:
        with one_thread_results():
            return function(*args, **kwargs)

    return wrapper


def _single_threaded_worker() -> None:
    """Each worker thread's own OpenMP settings: one thread (a new OS thread starts with OpenMP's defaults)."""
    torch.set_num_threads(1)


class Pieces:
    """Compute fixed pieces of work side by side on ``workers`` threads, each piece on one torch thread.

    The caller fixes the pieces (their boundaries must not depend on ``workers``); the results come back in the
    pieces' order, so anything combined from them in that order has the same bits for any number of workers.
    With one worker, the pieces run one after another in the calling thread. Use it for work that holds no hooks
    on shared modules (plain forward passes, matrix products): hooks would see every worker's calls. Inside a
    piece, ``Pieces()`` has one worker (no nesting).
    """

    def __init__(self, workers: int | None = None) -> None:
        self.workers = default_workers() if workers is None else max(1, int(workers))

    def map(self, function: Callable[[T], R], pieces: Iterable[T]) -> Iterator[R]:
        """``function(piece)`` for each piece, in order; at most ``2 × workers`` pieces are in flight at a time, so
        a long stream of pieces holds bounded memory. When a piece fails (or the caller stops), the pieces not yet
        started are cancelled, those running finish, and the first failure in order is raised."""
        with _torch_threads(1):
            if self.workers == 1:
                for piece in pieces:
                    yield function(piece)
                return
            with ThreadPoolExecutor(self.workers, initializer=_single_threaded_worker) as pool:
                pending: collections.deque[Any] = collections.deque()
                try:
                    for piece in pieces:
                        pending.append(pool.submit(function, piece))
                        if len(pending) >= 2 * self.workers:
                            yield pending.popleft().result()
                    while pending:
                        yield pending.popleft().result()
                except BaseException:  # a piece failed, or the caller stopped: start nothing more
                    for future in pending:
                        future.cancel()
                    raise

    def run(self, function: Callable[[T], R], pieces: Iterable[T]) -> list[R]:
        """:meth:`map` into a list."""
        return list(self.map(function, pieces))


def replicate(obj: T) -> T:
    """A worker's own copy of ``obj`` (a module, or any object holding modules: a synthesizer and its prior): a deep
    copy in which every module keeps the original's training flag (a copied FX graph module comes back in training
    mode, and its batch norms would then use and update batch statistics)."""
    memo: dict[int, Any] = {}
    replica = copy.deepcopy(obj, memo)
    pairs = [(obj, replica)] if isinstance(obj, torch.nn.Module) else []
    for original in memo.get(id(memo), []):  # deepcopy keeps every copied original alive in this list
        if isinstance(original, torch.nn.Module) and isinstance(memo.get(id(original)), torch.nn.Module):
            pairs.append((original, memo[id(original)]))
    for original, copied in pairs:  # a module tree and its copy list their submodules in the same order
        for a, b in zip(original.modules(), copied.modules()):
            b.training = a.training
    return replica


GLOBAL_RNG = threading.RLock()
"""Held while code seeds torch's global random generators and draws from them (:func:`seeded_global_rng`): pieces
side by side would otherwise draw from each other's seeds. Code with its own ``torch.Generator`` needs no lock."""


@contextlib.contextmanager
def seeded_global_rng(seed: int, devices: Sequence[int] = (), numpy: bool = False) -> Iterator[None]:
    """Inside the block, torch's global CPU generator (and the CUDA ``devices``'; with ``numpy``, numpy's) start
    from ``seed``; the previous states come back afterwards. Holds :data:`GLOBAL_RNG`, so the draws of the block are
    its own even with pieces side by side (a seeded block runs alone)."""
    import numpy as np

    with GLOBAL_RNG, torch.random.fork_rng(devices=list(devices)):
        state = np.random.get_state() if numpy else None
        torch.manual_seed(seed)
        if numpy:
            np.random.seed(seed % 2**32)
        try:
            yield
        finally:
            if state is not None:
                np.random.set_state(state)


ALONE = threading.RLock()
"""Held while a component that does not declare ``thread_safe = True`` computes: it may have process-global side
effects (redirecting stdout, changing warning filters, drawing from torch's global generator unseeded), so such
components run one at a time while the declared ones run side by side."""


def alone_unless_thread_safe(*thread_safe: bool) -> contextlib.AbstractContextManager[Any]:
    """The context to compute in with components that declare ``thread_safe`` (one flag per component, as its
    contract's base class reads it: ``declared(metric, Metric).thread_safe``, False where a plugin declares
    nothing): nothing when every flag is True, else :data:`ALONE` (a plugin that declares nothing runs one at a
    time, as it was written to). A flag that is not a bool is a TypeError (pass the declaration, not the
    component)."""
    for flag in thread_safe:
        if not isinstance(flag, bool):
            raise TypeError(f"alone_unless_thread_safe takes declared thread_safe flags (bool), not {type(flag)}")
    return contextlib.nullcontext() if all(thread_safe) else ALONE


def seeded_on(seed: int, device: torch.device | str, numpy: bool = False) -> contextlib.AbstractContextManager[None]:
    """:func:`seeded_global_rng` for work on ``device``: the CPU generator and, on a GPU, that device's (and with
    ``numpy``, numpy's) start from ``seed`` inside the block."""
    device = torch.device(device)
    devices = (
        [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    )
    return seeded_global_rng(seed, devices, numpy=numpy)


def environment() -> dict[str, Any]:
    """What decides a run's last bits on this machine, for ``environment.json``: torch and its CPU kernels, the
    CPU, and how the run used its cores (which does not change the bits)."""
    return {
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "blas": "mkl" if torch.backends.mkl.is_available() else "other",
        "machine": platform.machine(),
        "processor": _processor_name(),
        "threads_per_result": 1,
        "workers": default_workers(),  # inside a run: its pieces side by side
    }


def _processor_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()
