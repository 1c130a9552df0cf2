"""Time-binned responses: a time window over bins, and PSTH arrays ``[stimuli, repetitions, time_bins, channels]``.

A recording is often stored per time bin (e.g. 10 ms bins from −50 to 250 ms after onset). sharedattr models one
response per stimulus and trial, so ``data.time_window = [start_ms, end_ms]`` selects the bins that lie inside the
window (``start_ms ≤ bin start`` and ``bin end ≤ end_ms``) and averages them: a mean rate, or a mean count per bin.
A window that holds no bin is an error listing the bins; so is a multi-bin file without a window.

PSTH arrays, the layout of Brain-Score's packaging scripts, come as

- ``.npy`` ``[S, R, T, N]`` (NaN-padded repetitions) with ``data.response_ids`` (S stimulus ids, one per line),
  ``data.neuron_ids`` (N channel ids, optional) and ``data.time_bins``: a text file with one line per bin, the
  bin's start in ms, or its start and end (``70 80``); with starts alone the bins are taken as contiguous and
  equally wide (the last as wide as the others);
- ``.h5``/``.hdf5`` (h5py, in ``sharedattr[xarray]``) holding the datasets ``psth`` ``[S, R, T, N]``,
  ``stimulus_id`` ``[S]``, ``neuroid_id`` (or ``channel_id``) ``[N]``, ``time_bin_start`` ``[T]`` and optionally
  ``time_bin_end`` ``[T]``, all in ms.

Only the window's bins are read, a block of about :data:`BLOCK_BYTES` at a time (:func:`window_mean`), and only
after the shapes the file declares were checked against :data:`~sharedattr.data.trials.MAX_RESPONSE_BYTES` and
:data:`~sharedattr.data.trials.MAX_DIM` (:func:`~sharedattr.data.trials.size_problem`).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sharedattr.data.naming import CONFIG, Naming
from sharedattr.data.trials import as_strings, dims_problem, shorter_window, size_problem
from sharedattr.runtime.errors import DataError, UserError

PSTH_DATASET = "psth"
NEURON_DATASETS = ("neuroid_id", "channel_id")
BLOCK_BYTES = 16 * 2**20
"""About the most bytes of stored values read at once: a time-binned array is read in blocks of stimuli (or
presentations), each averaged over the window's bins before the next is read, so memory holds the averaged trials and
one block."""


def bin_edges(starts: Sequence[float], ends: Sequence[float] | None, source: object) -> tuple[np.ndarray, np.ndarray]:
    """Each bin's start and end in ms ``[T]``; with ``ends`` None, contiguous equal bins from the starts."""
    starts = np.asarray(starts, dtype=np.float64)
    problems = []
    if starts.ndim != 1 or not len(starts):
        raise DataError(source, ["no time bins"])
    if not np.isfinite(starts).all():
        problems.append("time bin starts must be finite numbers")
    if ends is None:
        steps = np.diff(starts)
        if len(starts) == 1:
            problems.append("a single time bin needs its end too (a line 'start end', or time_bin_end)")
        elif (steps <= 0).any() or not np.allclose(steps, steps[0], rtol=1e-6, atol=1e-9):
            problems.append(
                "time bin starts are not increasing in equal steps: give each bin's end too (a line 'start end', "
                "or time_bin_end)"
            )
        width = steps[0] if len(steps) else 0.0
        ends_array = starts + width
    else:
        ends_array = np.asarray(ends, dtype=np.float64)
        if ends_array.shape != starts.shape:
            problems.append(f"{len(starts)} time bin starts but {ends_array.size} ends")
        elif not (ends_array > starts).all():
            problems.append("every time bin must end after it starts")
    if problems:
        raise DataError(source, problems)
    return starts, ends_array


def describe_bins(starts: np.ndarray, ends: np.ndarray, limit: int = 12) -> str:
    """``[70, 80), [80, 90) …`` (the first ``limit`` bins, then a count)."""
    shown = [f"[{s:g}, {e:g})" for s, e in zip(starts[:limit], ends[:limit])]
    more = f" … ({len(starts)} bins)" if len(starts) > limit else ""
    return ", ".join(shown) + more


def window_bins(
    starts: np.ndarray,
    ends: np.ndarray,
    window: tuple[float, float] | None,
    source: object,
    naming: Naming = CONFIG,
) -> np.ndarray:
    """Indices of the bins inside ``window`` (ms); a single bin needs no window. :class:`DataError` listing the
    bins when the window holds none, or when several bins come without a window (naming the window as ``naming``
    does)."""
    if window is None:
        if len(starts) == 1:
            return np.array([0])
        raise DataError(
            source,
            [
                f"the responses have {len(starts)} time bins ({describe_bins(starts, ends)}); choose the bins to "
                f"average with {naming('time_window')} = [start_ms, end_ms], e.g. [70, 170]"
            ],
        )
    start, end = window
    inside = np.flatnonzero((starts >= start) & (ends <= end))
    if not len(inside):
        raise DataError(
            source,
            [
                f"{naming('time_window')} [{start:g}, {end:g}] ms holds none of the time bins "
                f"({describe_bins(starts, ends)}); a bin counts when it lies wholly inside the window"
            ],
        )
    return inside


def average_bins(psth: np.ndarray, bins: np.ndarray, axis: int = 2) -> np.ndarray:
    """The mean over ``bins`` along ``axis`` (NaN where every selected bin is NaN, e.g. a padded repetition)."""
    selected = np.take(psth, bins, axis=axis)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "Mean of empty slice": all-NaN stays NaN
        return np.nanmean(selected, axis=axis)


def window_mean(
    read: Callable[[slice], np.ndarray], rows: int, row_bytes: int, bins: np.ndarray, axis: int
) -> np.ndarray:
    """The mean over ``bins`` along ``axis`` (not 0) of an array of ``rows`` rows (axis 0), read block by block:
    ``read(rows slice)`` returns those rows, ``row_bytes`` bytes each as read, about :data:`BLOCK_BYTES` at a time.
    The result has ``axis`` removed; NaN where every selected bin is NaN."""
    step = max(1, BLOCK_BYTES // max(1, row_bytes))
    out = None
    for start in range(0, max(rows, 1), step):
        stop = min(start + step, rows)
        block = average_bins(np.asarray(read(slice(start, stop))), bins, axis=axis)
        if out is None:
            out = np.empty((rows, *block.shape[1:]), dtype=block.dtype)
        out[start:stop] = block
    assert out is not None
    return out


def psth_size_problems(
    shape: Sequence[int], itemsize: int, bins: np.ndarray, variable: str, naming: Naming = CONFIG
) -> list[str]:
    """Why a PSTH ``[S, R, T, N]`` declared as ``shape`` cannot be averaged over ``bins`` within the bounds: its
    window's bins (``S × R × (last - first + 1) × N`` as stored) or the trials ``[S, R, N]`` in float64."""
    s, r, _, n = (int(d) for d in shape)
    width = int(bins.max()) - int(bins.min()) + 1
    found = size_problem(variable, shape, itemsize, (s, r, width, n), shorter_window(naming))
    found = found or size_problem(f"{variable} (averaged to trials [S, R, N] in float64)", (s, r, n), 8)
    return [found] if found else []


def read_time_bins(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Bins from a text file: one line per bin, ``start`` or ``start end`` (ms)."""
    try:
        lines = [line.split() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError as err:
        raise DataError(path, [f"not UTF-8 text: {err}"]) from None
    widths = {len(fields) for fields in lines}
    if not lines or not widths <= {1, 2} or len(widths) != 1:
        raise DataError(path, ["expected one line per time bin: its start in ms, or its start and end ('70 80')"])
    try:
        values = np.array([[float(v) for v in fields] for fields in lines])
    except ValueError as err:
        raise DataError(path, [f"not a number: {err}"]) from None
    return bin_edges(values[:, 0], values[:, 1] if values.shape[1] == 2 else None, path)


def npy_bins(
    shape: Sequence[int],
    itemsize: int,
    time_bins: Path | None,
    window: tuple[float, float] | None,
    source: Path,
    naming: Naming = CONFIG,
) -> tuple[np.ndarray, str]:
    """The bins inside ``window`` of a ``.npy`` PSTH declared as ``shape`` ``[S, R, T, N]`` (items of ``itemsize``
    bytes), read from the ``time_bins`` list alone, and a description of them; :class:`DataError` when there is no
    list, it does not fit the array, the window holds no bin or the window's bins are too large to read. ``naming``:
    how the errors name the settings (``data.time_bins`` by default; :mod:`sharedattr.data.naming`)."""
    if time_bins is None:
        raise DataError(
            source,
            [
                f"a 4-D array {tuple(shape)} is a PSTH [stimuli, repetitions, time_bins, channels]: give "
                f"{naming('time_bins')}, a text file with each bin's start (and end) in ms, one line per bin"
            ],
        )
    starts, ends = read_time_bins(time_bins)
    if len(starts) != shape[2]:
        raise DataError(source, [f"{len(starts)} time bins in {time_bins} but the array has {shape[2]}"])
    bins = window_bins(starts, ends, window, source, naming)
    problems = psth_size_problems(shape, itemsize, bins, "the array", naming)
    if problems:
        raise DataError(source, problems)
    return bins, chosen_bins(starts, ends, bins, window, naming)


def chosen_bins(
    starts: np.ndarray,
    ends: np.ndarray,
    bins: np.ndarray,
    window: tuple[float, float] | None,
    naming: Naming = CONFIG,
) -> str:
    """``30 time bins ([-50, -40), …); data.time_window [70, 170] ms holds 10 of them``: what :func:`window_bins`
    chose, in words (the window named as ``naming`` names it)."""
    held = "one bin, no window"
    if window:
        held = f"{naming('time_window')} [{window[0]:g}, {window[1]:g}] ms holds {len(bins)}"
    return f"{len(starts)} time bin(s) ({describe_bins(starts, ends, limit=3)}); {held}"


@dataclass(frozen=True)
class HDF5Header:
    """What an HDF5 PSTH file declares, read without its values: the ``psth`` dataset (unread), stimulus ids [S],
    neuron ids [N], the indices of the bins inside the window and a description of them."""

    psth: Any
    ids: list[str]
    neurons: list[str]
    bins: np.ndarray
    described: str


@contextlib.contextmanager
def open_hdf5(path: Path) -> Iterator[Any]:
    """The open ``h5py.File`` of an HDF5 PSTH file, read-only; :class:`UserError` without h5py, :class:`DataError`
    when it cannot be read (also while the block reads it)."""
    try:
        import h5py
    except ImportError:
        raise UserError(
            "reading HDF5 responses (.h5) needs h5py: install sharedattr[xarray] (pip install 'sharedattr[xarray]')"
        ) from None
    try:
        with h5py.File(path, "r") as f:
            yield f
    except OSError as err:
        raise DataError(path, [f"cannot read as HDF5: {err}"]) from None


def hdf5_header(f: Any, path: Path, window: tuple[float, float] | None, naming: Naming = CONFIG) -> HDF5Header:
    """The header of the open HDF5 PSTH file ``f`` (module docstring): dataset names, shapes and dtypes, the id
    lists, the time bins against ``window`` and the size of the part to read; :class:`DataError` listing what is
    wrong, naming the settings as ``naming`` does. Reads the 1-D lists (ids and bins), never the ``psth`` values."""
    names = set(f.keys())
    missing = [n for n in (PSTH_DATASET, "stimulus_id", "time_bin_start") if n not in names]
    neuron_name = next((n for n in NEURON_DATASETS if n in names), None)
    if missing or neuron_name is None:
        wanted = missing + ([] if neuron_name else ["neuroid_id (or channel_id)"])
        raise DataError(path, [f"missing dataset(s) {', '.join(wanted)}; found {', '.join(sorted(names)) or '(none)'}"])
    psth = f[PSTH_DATASET]
    if psth.ndim != 4 or psth.dtype.kind not in "iuf":
        raise DataError(path, [f"psth is {psth.dtype} {psth.shape}; expected numbers [S, R, T, N]"])
    problems = [p for p in [dims_problem(PSTH_DATASET, psth.shape, psth.dtype.itemsize)] if p]
    lists = {  # 1-D lists of the psth's dims: their lengths are checked before any of them is read
        "stimulus_id": (0, "stimuli"),
        neuron_name: (3, "channels"),
        "time_bin_start": (2, "time bins"),
        **({"time_bin_end": (2, "time bins")} if "time_bin_end" in names else {}),
    }
    for name, (axis, what) in lists.items():
        if f[name].shape != (psth.shape[axis],):
            problems.append(f"{name} has shape {f[name].shape} but psth has {psth.shape[axis]} {what}")
    if problems:
        raise DataError(path, problems)
    starts, ends = bin_edges(f["time_bin_start"][()], f["time_bin_end"][()] if "time_bin_end" in names else None, path)
    ids = as_strings(f["stimulus_id"][()])
    neurons = as_strings(f[neuron_name][()])
    problems = [f"duplicate stimulus_id {sid!r}" for sid in sorted({i for i in ids if ids.count(i) > 1})]
    if problems:
        raise DataError(path, problems)
    bins = window_bins(starts, ends, window, path, naming)
    problems = psth_size_problems(psth.shape, psth.dtype.itemsize, bins, PSTH_DATASET, naming)
    if problems:
        raise DataError(path, problems)
    return HDF5Header(psth, ids, neurons, bins, chosen_bins(starts, ends, bins, window, naming))


def read_hdf5(
    path: Path, window: tuple[float, float] | None, naming: Naming = CONFIG
) -> tuple[list[str], list[str], np.ndarray, list[str]]:
    """Stimulus ids, neuron ids, trials ``[S, R, N]`` and problems from an HDF5 PSTH file (module docstring): its
    header checked first (:func:`hdf5_header`, its errors naming the settings as ``naming`` does), then only the
    window's bins read."""
    with open_hdf5(path) as f:
        header = hdf5_header(f, path, window, naming)
        psth, bins = header.psth, header.bins
        lo, hi = int(bins.min()), int(bins.max()) + 1  # read only the window's bins (a contiguous slice)
        row_bytes = psth.shape[1] * (hi - lo) * psth.shape[3] * psth.dtype.itemsize
        trials = window_mean(lambda rows: psth[rows, :, lo:hi, :], psth.shape[0], row_bytes, bins - lo, axis=2)
    return header.ids, header.neurons, trials, []
