"""Recorded responses with their trial repetitions, matched to stimuli by id.

:func:`load_responses` reads these formats, chosen by the file suffix, into one
:class:`Responses`:

- ``.csv``: header ``stimulus_id, <neuron id>, ...``; one row per trial. A stimulus id on
  several rows is several trials of that stimulus, in row order.
- ``.npy`` plus an id list: a numeric array ``[S, N]`` (one trial) or ``[S, R, N]``
  (NaN-padded trials); ``ids_path`` names a text file with the S stimulus ids, one per
  line; ``neuron_ids_path`` optionally names the N neuron ids (default ``"0"`` ... ``"N-1"``).
  Loaded with ``allow_pickle=False``: object arrays are refused, never unpickled.
- ``.nc``: a BrainIO-style NetCDF assembly (needs ``sharedattr[xarray]``): a data array with
  dims ``presentation × neuroid`` (either order, plus an optional ``time_bin`` dim: one bin, or several with
  ``time_bin_start``/``time_bin_end`` coordinates in ms, averaged over ``time_window``), a
  ``stimulus_id`` coordinate on ``presentation``, neuron ids from a ``neuroid_id``
  coordinate (else the ``neuroid`` index values), and several presentations of one stimulus
  as its trials, ordered by a ``repetition`` coordinate when there is one.
- ``.npy`` PSTH arrays ``[S, R, T, N]`` with a time bin list, and ``.h5`` PSTH files: see
  :mod:`sharedattr.data.psth`; ``.nwb`` recordings (needs ``sharedattr[nwb]``): see :mod:`sharedattr.data.nwb`.

Stimuli keep the order of their first appearance. Every problem in a file is reported at
once in one :class:`~sharedattr.data.stimuli.DataError` naming the file. Each reader checks the file's header first
(:mod:`sharedattr.data.inspection`: format, shape, dims, coordinates, time bins, ids), as ``sharedattr validate``
does without reading on, so both refuse a bad header with the same message.

Values: missing ones are NaN (in CSV an empty cell, ``nan``, ``NaN`` or ``NA``) and are left
out per neuron. These are errors: infinite values; magnitudes above :data:`MAX_ABS_RESPONSE`
(1e15, which keeps every float32 sum of squares in fitting, scoring and attribution finite;
rescale such data, e.g. to spikes/s or z-scores); a neuron without any valid value. A
constant neuron loads (see :func:`sharedattr.encoding.fit.fit_readout` for how it is scored).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sharedattr.data.inspection import (
    assembly_header,
    check_csv_header,
    csv_rows,
    existing,
    npy_header,
    opened_assembly,
    response_format,
)
from sharedattr.data.naming import CONFIG, Naming
from sharedattr.data.psth import read_hdf5, window_mean
from sharedattr.data.trials import (
    MAX_ABS_RESPONSE,
    Responses,
    as_strings,
    checked,
    require_measured_neurons,
    stack_trials,
    trial_groups,
)
from sharedattr.runtime.errors import DataError

if TYPE_CHECKING:
    from sharedattr.config.spec import DataSpec

__all__ = [
    "MAX_ABS_RESPONSE",
    "RESPONSE_FILES",
    "Responses",
    "load_responses",
    "parse_number",
    "require_measured_neurons",
    "responses_digest",
]

MISSING_TOKENS = {"", "nan", "NaN", "NA"}
NUMBER = re.compile(r"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|inf|infinity)", re.IGNORECASE | re.ASCII)
"""A response cell: a plain decimal number (or ±inf, reported as such); not ``1_000`` or non-ASCII digits, both of
which Python's ``float`` accepts."""


def parse_number(cell: str) -> float:
    """``cell`` as a float if it is a plain decimal number (:data:`NUMBER`); ValueError otherwise."""
    text = cell.strip()
    if not NUMBER.fullmatch(text):
        raise ValueError(f"not a number: {cell!r}")
    return float(text)


def load_responses(
    path: str | Path,
    *,
    ids_path: str | Path | None = None,
    neuron_ids_path: str | Path | None = None,
    time_window: tuple[float, float] | None = None,
    time_bins_path: str | Path | None = None,
    nwb_table: str | None = None,
    naming: Naming = CONFIG,
) -> Responses:
    """Load and check recorded responses from a ``.csv``, ``.npy`` (with ``ids_path``), ``.nc``, ``.h5``/``.hdf5``
    (PSTH) or ``.nwb`` file.

    Raises :class:`~sharedattr.runtime.errors.MissingFileError` for a missing file and
    :class:`~sharedattr.data.stimuli.DataError` listing every problem in its content.
    ``ids_path``, ``neuron_ids_path`` and ``time_bins_path`` apply to ``.npy`` only. ``time_window``
    (``[start_ms, end_ms]``) averages the time bins inside it (:mod:`sharedattr.data.psth`) of a time-binned file:
    a NetCDF assembly with a ``time_bin`` dim, a PSTH array, an NWB recording (where it is required: the spike
    counting window after each onset; ``nwb_table`` names its presentations table). ``naming``: how errors name
    these settings (a config's fields, ``data.time_window``, by default; :mod:`sharedattr.data.naming`).
    """
    path = existing(path)
    files = {"ids_path": ids_path, "neuron_ids_path": neuron_ids_path, "time_bins_path": time_bins_path}
    suffix = response_format(path, time_window=time_window, naming=naming, **files)  # the check validate runs
    if suffix == ".npy":
        return _load_npy(path, (ids_path, neuron_ids_path, time_bins_path), time_window, naming)
    if suffix == ".nwb":
        from sharedattr.data.nwb import load_nwb

        return load_nwb(path, time_window, table=nwb_table, naming=naming)
    if suffix == ".csv":
        return _load_csv(path)
    if suffix == ".nc":
        return _load_netcdf(path, time_window, naming)
    ids, neurons, trials, problems = read_hdf5(path, time_window, naming)
    return checked(path, ids, neurons, trials, problems)


RESPONSE_FILES = ("responses", "response_ids", "neuron_ids", "time_bins")
"""The fields of the data spec (:class:`~sharedattr.config.spec.DataSpec`) naming files that decide the recorded
responses: the values (CSV, NPY, NetCDF, HDF5 or NWB) and, for .npy, the stimulus ids, the neuron ids and the time
bins. The settings that decide them without being files (``time_window``, ``nwb_table``) are part of the spec."""


def responses_digest(data: DataSpec) -> str:
    """SHA-256 of the content of every file of :data:`RESPONSE_FILES` that ``data`` names (of the JSON object
    ``{field: SHA-256 of the file's bytes}``), so that changing any of them, e.g. only the stimulus id list of a .npy,
    changes the identity of the fitted model (:func:`sharedattr.encoding.store.fit_digest`). A file that cannot be
    read raises :class:`~sharedattr.runtime.errors.MissingFileError` or :class:`DataError` naming it."""
    digests = {}
    for field in RESPONSE_FILES:
        path = getattr(data, field)
        if path is None:
            continue
        h = hashlib.sha256()
        try:
            with open(existing(path, f"data.{field} file"), "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
        except OSError as err:
            raise DataError(path, [f"cannot read data.{field}: {type(err).__name__}: {err}"]) from None
        digests[field] = h.hexdigest()
    return hashlib.sha256(json.dumps(digests, sort_keys=True).encode()).hexdigest()


def _load_csv(path: Path) -> Responses:
    """One trial per row: ``stimulus_id, <value per neuron>``; repeated ids are repeated trials."""
    with csv_rows(path) as reader:
        rows = list(reader)
    neurons = check_csv_header(path, rows[0] if rows else None)  # the header validate checks (inspection)
    header, body = rows[0], rows[1:]
    problems = [f"column {i}: empty neuron id" for i, n in enumerate(neurons, start=2) if not n]
    row_ids, values = [], []
    for line, row in enumerate(body, start=2):
        if not row:
            continue
        if len(row) != len(header):
            problems.append(f"line {line}: {len(row)} fields, expected {len(header)}")
            continue
        sid = row[0].strip()
        if not sid:
            problems.append(f"line {line}: empty stimulus_id")
        parsed = []
        for name, cell in zip(neurons, row[1:]):
            try:
                v = math.nan if cell.strip() in MISSING_TOKENS else parse_number(cell)
            except ValueError:
                problems.append(f"line {line}, neuron {name}: not a number: {cell!r}")
                v = math.nan
            if math.isinf(v):
                problems.append(f"line {line}, neuron {name}: infinite response")
                v = math.nan  # reported; kept out of the per-neuron checks
            elif abs(v) > MAX_ABS_RESPONSE:
                problems.append(
                    f"line {line}, neuron {name}: {cell.strip()} is too large (more than "
                    f"{MAX_ABS_RESPONSE:.0e} in magnitude); rescale the responses"
                )
                v = math.nan
            parsed.append(v)
        row_ids.append(sid)
        values.append(parsed)
    data = np.asarray(values, dtype=np.float64).reshape(len(values), len(neurons))
    ids, trials = stack_trials(data, trial_groups(row_ids), path)
    return checked(path, ids, neurons, trials, problems)


def _load_npy(
    path: Path,
    files: tuple[str | Path | None, str | Path | None, str | Path | None],
    time_window: tuple[float, float] | None,
    naming: Naming,
) -> Responses:
    """A numeric ``[S, N]`` or ``[S, R, N]`` array, or a PSTH ``[S, R, T, N]`` (with ``time_bins_path``), with stimulus
    ids (and optionally neuron ids) in text files: ``files`` = ``(ids_path, neuron_ids_path, time_bins_path)``."""
    ids_path, neuron_ids_path, time_bins_path = files
    header = npy_header(path, ids_path, neuron_ids_path, time_window, time_bins_path, naming)  # what validate checks
    trials = _npy_trials(header.array, header.bins)
    ids, neurons = header.ids, header.neurons
    del header  # unmaps the file
    return checked(path, ids, neurons, trials, [])


def _npy_trials(array: np.ndarray, bins: np.ndarray | None) -> np.ndarray:
    """Trials ``[S, R, N]`` read from the memory-mapped ``array``: of a PSTH (``bins`` given) only the window's bins,
    block by block, averaged."""
    if bins is None:
        return np.array(array[:, None, :] if array.ndim == 2 else array)  # read, so the file can be closed
    lo, hi = int(bins.min()), int(bins.max()) + 1
    row_bytes = array.shape[1] * (hi - lo) * array.shape[3] * array.dtype.itemsize
    return window_mean(lambda rows: array[rows, :, lo:hi], array.shape[0], row_bytes, bins - lo, axis=2)


def _load_netcdf(path: Path, time_window: tuple[float, float] | None, naming: Naming) -> Responses:
    """A BrainIO-style ``presentation × neuroid`` assembly, optionally with a ``time_bin`` dim (averaged over the
    bins in ``time_window``); repeated stimulus ids are trials.

    The file is opened lazily and its header checked (:func:`~sharedattr.data.inspection.assembly_header`: dims,
    coordinates, time bins, the declared size) before any value is read; then only the window's bins are read, block
    by block (:func:`~sharedattr.data.psth.window_mean`)."""
    with opened_assembly(path) as dataset:
        header = assembly_header(dataset, path, time_window, naming)
        data, bins = header.data, header.bins
        if bins is None:
            values = np.asarray(data.values)
        else:
            lo, hi = int(bins.min()), int(bins.max()) + 1
            values = window_mean(
                lambda rows: data.isel(presentation=rows, time_bin=slice(lo, hi)).values,
                data.shape[0],
                (hi - lo) * data.shape[2] * data.dtype.itemsize,
                bins - lo,
                axis=1,
            )
        row_ids = as_strings(data["stimulus_id"].values)
        neurons = as_strings(data["neuroid_id"].values if "neuroid_id" in data.coords else data["neuroid"].values)
        repetition = data["repetition"].values if "repetition" in data.coords else None
    problems = [] if repetition is None else _duplicate_repetitions(row_ids, repetition)
    ids, trials = stack_trials(values, trial_groups(row_ids, repetition), path)
    return checked(path, ids, neurons, trials, problems)


def _duplicate_repetitions(row_ids: Sequence[str], repetition: np.ndarray) -> list[str]:
    """One problem per (stimulus id, repetition) pair that occurs more than once."""
    seen: set[tuple[str, object]] = set()
    problems = []
    for sid, rep in zip(row_ids, repetition.tolist()):
        if (sid, rep) in seen:
            problems.append(f"stimulus_id {sid!r}: repetition {rep!r} appears more than once")
        seen.add((sid, rep))
    return problems
