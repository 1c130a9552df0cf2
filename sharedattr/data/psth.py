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
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sharedattr.data.stimuli import DataError
from sharedattr.data.trials import as_strings
from sharedattr.runtime.errors import UserError

PSTH_DATASET = "psth"
NEURON_DATASETS = ("neuroid_id", "channel_id")


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


def window_bins(starts: np.ndarray, ends: np.ndarray, window: tuple[float, float] | None, source: object) -> np.ndarray:
    """Indices of the bins inside ``window`` (ms); a single bin needs no window. :class:`DataError` listing the
    bins when the window holds none, or when several bins come without a window."""
    if window is None:
        if len(starts) == 1:
            return np.array([0])
        raise DataError(
            source,
            [
                f"the responses have {len(starts)} time bins ({describe_bins(starts, ends)}); choose the bins to "
                "average with data.time_window = [start_ms, end_ms], e.g. [70, 170]"
            ],
        )
    start, end = window
    inside = np.flatnonzero((starts >= start) & (ends <= end))
    if not len(inside):
        raise DataError(
            source,
            [
                f"data.time_window [{start:g}, {end:g}] ms holds none of the time bins "
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


def binned_npy(
    array: np.ndarray, time_bins: Path | None, window: tuple[float, float] | None, source: Path
) -> np.ndarray:
    """A ``.npy`` PSTH ``[S, R, T, N]`` averaged over the window's bins → trials ``[S, R, N]``."""
    if time_bins is None:
        raise DataError(
            source,
            [
                f"a 4-D array {array.shape} is a PSTH [stimuli, repetitions, time_bins, channels]: give "
                "data.time_bins, a text file with each bin's start (and end) in ms, one line per bin"
            ],
        )
    starts, ends = read_time_bins(time_bins)
    if len(starts) != array.shape[2]:
        raise DataError(source, [f"{len(starts)} time bins in {time_bins} but the array has {array.shape[2]}"])
    return average_bins(array, window_bins(starts, ends, window, source))


def read_hdf5(path: Path, window: tuple[float, float] | None) -> tuple[list[str], list[str], np.ndarray, list[str]]:
    """Stimulus ids, neuron ids, trials ``[S, R, N]`` and problems from an HDF5 PSTH file (module docstring)."""
    try:
        import h5py
    except ImportError:
        raise UserError(
            "reading HDF5 responses (.h5) needs h5py: install sharedattr[xarray] (pip install 'sharedattr[xarray]')"
        ) from None
    try:
        with h5py.File(path, "r") as f:
            names = set(f.keys())
            missing = [n for n in (PSTH_DATASET, "stimulus_id", "time_bin_start") if n not in names]
            neuron_name = next((n for n in NEURON_DATASETS if n in names), None)
            if missing or neuron_name is None:
                wanted = missing + ([] if neuron_name else ["neuroid_id (or channel_id)"])
                raise DataError(
                    path,
                    [f"missing dataset(s) {', '.join(wanted)}; found {', '.join(sorted(names)) or '(none)'}"],
                )
            psth = f[PSTH_DATASET]
            if psth.ndim != 4 or psth.dtype.kind not in "iuf":
                raise DataError(path, [f"psth is {psth.dtype} {psth.shape}; expected numbers [S, R, T, N]"])
            starts, ends = bin_edges(
                f["time_bin_start"][()], f["time_bin_end"][()] if "time_bin_end" in names else None, path
            )
            ids = as_strings(f["stimulus_id"][()])
            neurons = as_strings(f[neuron_name][()])
            problems = [f"duplicate stimulus_id {sid!r}" for sid in sorted({i for i in ids if ids.count(i) > 1})]
            if len(starts) != psth.shape[2]:
                problems.append(f"{len(starts)} time bins but psth has {psth.shape[2]}")
            if len(ids) != psth.shape[0]:
                problems.append(f"{len(ids)} stimulus ids but psth has {psth.shape[0]} stimuli")
            if len(neurons) != psth.shape[3]:
                problems.append(f"{len(neurons)} {neuron_name} values but psth has {psth.shape[3]} channels")
            if problems:
                raise DataError(path, problems)
            bins = window_bins(starts, ends, window, path)
            lo, hi = int(bins.min()), int(bins.max()) + 1  # read only the window's bins (a contiguous slice)
            trials = average_bins(np.asarray(psth[:, :, lo:hi, :]), bins - lo)
    except OSError as err:
        raise DataError(path, [f"cannot read as HDF5: {err}"]) from None
    return ids, neurons, trials, []
