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
once in one :class:`~sharedattr.data.stimuli.DataError` naming the file.

Values: missing ones are NaN (in CSV an empty cell, ``nan``, ``NaN`` or ``NA``) and are left
out per neuron. These are errors: infinite values; magnitudes above :data:`MAX_ABS_RESPONSE`
(1e15, which keeps every float32 sum of squares in fitting, scoring and attribution finite;
rescale such data, e.g. to spikes/s or z-scores); a neuron without any valid value. A
constant neuron loads (see :func:`sharedattr.encoding.fit.fit_readout` for how it is scored).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np

from sharedattr.data.naming import CONFIG, Naming
from sharedattr.data.psth import bin_edges, binned_npy, read_hdf5, window_bins, window_mean
from sharedattr.data.trials import (
    MAX_ABS_RESPONSE,
    Responses,
    as_strings,
    checked,
    dims_problem,
    require_measured_neurons,
    shorter_window,
    size_problem,
    stack_trials,
    trial_groups,
)
from sharedattr.runtime.errors import DataError, MissingFileError, UserError

if TYPE_CHECKING:
    import xarray

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

NETCDF_DIMS = ("presentation", "neuroid")


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
    path = _existing(path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        files = (ids_path, neuron_ids_path, time_bins_path)
        return _load_npy(path, files, time_window, naming)
    if ids_path is not None or neuron_ids_path is not None or time_bins_path is not None:
        raise DataError(
            path,
            [
                f"{naming('response_ids')}, {naming('neuron_ids')} and {naming('time_bins')} apply only to .npy "
                "responses; this file carries its own ids and bins"
            ],
        )
    if suffix == ".nwb":
        from sharedattr.data.nwb import load_nwb

        return load_nwb(path, time_window, table=nwb_table, naming=naming)
    if time_window is not None and suffix == ".csv":
        raise DataError(path, [_no_bins(naming)])
    if suffix == ".csv":
        return _load_csv(path)
    if suffix == ".nc":
        return _load_netcdf(path, time_window, naming)
    if suffix in (".h5", ".hdf5"):
        ids, neurons, trials, problems = read_hdf5(path, time_window, naming)
        return checked(path, ids, neurons, trials, problems)
    raise DataError(
        path,
        [
            f"unsupported responses format {path.suffix!r}; use .csv, .npy (with a stimulus id list), .nc (NetCDF "
            "assembly), .h5 (PSTH arrays) or .nwb"
        ],
    )


def _no_bins(naming: Naming, settings: tuple[str, ...] = ("time_window",)) -> str:
    """The problem of a window (or bin list: ``settings``) given for responses without time bins."""
    given = " (or ".join(naming(s) for s in settings) + ")" * (len(settings) - 1)
    return (
        f"{given} applies to time-binned responses (a NetCDF time_bin dim, PSTH arrays, NWB spike times); "
        "these responses have no time bins: remove it"
    )


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
            with open(_existing(path, f"data.{field} file"), "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
        except OSError as err:
            raise DataError(path, [f"cannot read data.{field}: {type(err).__name__}: {err}"]) from None
        digests[field] = h.hexdigest()
    return hashlib.sha256(json.dumps(digests, sort_keys=True).encode()).hexdigest()


def _existing(path: str | Path, what: str = "responses file") -> Path:
    """``path`` as a Path; :class:`MissingFileError` unless it is a file."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(path, what)
    return path


def _load_csv(path: Path) -> Responses:
    """One trial per row: ``stimulus_id, <value per neuron>``; repeated ids are repeated trials."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except UnicodeDecodeError as err:
        raise DataError(path, [f"not UTF-8 text: {err}"]) from None
    except csv.Error as err:
        raise DataError(path, [f"not a readable CSV file: {err}"]) from None
    if not rows or not rows[0] or rows[0][0].strip() != "stimulus_id" or len(rows[0]) < 2:
        raise DataError(path, ["the first row must be a header: stimulus_id, <neuron id>, <neuron id>, ..."])
    header, body = rows[0], rows[1:]
    neurons = [h.strip() for h in header[1:]]
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
    if ids_path is None:
        raise DataError(
            path,
            [
                f"a .npy responses file needs {naming('response_ids')}: a text file with one stimulus id per line "
                "(in the order of the array's first axis)"
            ],
        )
    ids, problems = _read_id_list(_existing(ids_path, "stimulus id list"))
    try:  # memory-mapped: nothing is read before the shape is checked, and of a PSTH only the window's bins
        array = np.load(path, allow_pickle=False, mmap_mode="r")
    except ValueError as err:
        if "pickle" in str(err).lower() or "python objects" in str(err).lower():
            raise DataError(
                path,
                [
                    "holds Python objects (pickled data); sharedattr never unpickles data files: "
                    "save a numeric array (e.g. np.save(path, x.astype(np.float32)))"
                ],
            ) from None
        if "mmap length is greater than file size" in str(err):
            err = "the file is shorter than the array its header declares (truncated?)"
        raise DataError(path, [f"not a readable .npy array: {err}"]) from None
    except (OSError, EOFError) as err:
        raise DataError(path, [f"not a readable .npy array: {err}"]) from None
    if not isinstance(array, np.ndarray):
        raise DataError(path, ["holds an archive (.npz), not a single array; save one array with np.save"])
    if array.dtype.kind not in "iuf":
        problems.append(f"dtype {array.dtype} is not a real number type (need integers or floats)")
    if array.ndim not in (2, 3, 4):
        problems.append(f"array has shape {array.shape}; expected [S, N], [S, R, N] or a PSTH [S, R, T, N]")
    elif array.ndim < 4 and (time_window is not None or time_bins_path is not None):
        problems.append(_no_bins(naming, ("time_window", "time_bins")))
    elif array.ndim < 4:
        trials_shape = array.shape if array.ndim == 3 else (array.shape[0], 1, array.shape[1])
        too_large = size_problem("the array", array.shape, array.dtype.itemsize) or size_problem(
            "the array (as trials [S, R, N] in float64)", trials_shape, 8
        )
        problems += [too_large] if too_large else []
    else:
        problems += [p for p in [dims_problem("the array", array.shape, array.dtype.itemsize)] if p]
    n_neurons = array.shape[-1] if array.ndim else 0
    if neuron_ids_path is None:
        neurons = [str(i) for i in range(n_neurons)]
    else:
        neuron_file = _existing(neuron_ids_path, "neuron id list")
        neurons, neuron_problems = _read_id_list(neuron_file)
        problems += neuron_problems
        if array.ndim in (2, 3, 4) and len(neurons) != n_neurons:
            problems.append(
                f"{len(neurons)} neuron ids in {neuron_file} but the array has {n_neurons} neurons "
                f"(last axis of shape {array.shape})"
            )
    if array.ndim in (2, 3, 4) and len(ids) != array.shape[0]:
        problems.append(
            f"{len(ids)} stimulus ids in {ids_path} but the array has {array.shape[0]} stimuli "
            f"(first axis of shape {array.shape})"
        )
    if problems:
        raise DataError(path, problems)
    if array.ndim == 4:
        bins = None if time_bins_path is None else _existing(time_bins_path, "time bin list")
        trials = binned_npy(array, bins, time_window, path, naming)
    else:
        trials = np.array(array[:, None, :] if array.ndim == 2 else array)  # read, so the file can be closed
    del array  # unmaps the file
    return checked(path, ids, neurons, trials, [])


def _read_id_list(path: Path) -> tuple[list[str], list[str]]:
    """Ids, one per line (trailing blank lines ignored), and problems: blank lines, duplicates."""
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except UnicodeDecodeError as err:
        raise DataError(path, [f"not UTF-8 text: {err}"]) from None
    while lines and not lines[-1]:
        lines.pop()
    problems, first = [], {}
    for number, name in enumerate(lines, start=1):
        if not name:
            problems.append(f"{path}, line {number}: empty id")
        elif name in first:
            problems.append(f"{path}, line {number}: duplicate id {name!r} (first on line {first[name]})")
        first.setdefault(name, number)
    return lines, problems


def _load_netcdf(path: Path, time_window: tuple[float, float] | None, naming: Naming) -> Responses:
    """A BrainIO-style ``presentation × neuroid`` assembly, optionally with a ``time_bin`` dim (averaged over the
    bins in ``time_window``); repeated stimulus ids are trials.

    The file is opened lazily: its declared shape is checked (:func:`~sharedattr.data.trials.size_problem`) before
    any value is read, and then only the window's bins are read, block by block
    (:func:`~sharedattr.data.psth.window_mean`)."""
    xr = _import_xarray()
    too_long = _hdf5_dims_problems(path)
    if too_long:
        raise DataError(path, too_long)
    try:
        dataset = xr.open_dataset(path, cache=False, **_lazy_open_options(xr))
    except Exception as err:  # noqa: BLE001 - each backend raises its own types for unreadable files
        raise DataError(path, [f"cannot read as NetCDF: {type(err).__name__}: {err}"]) from None
    with dataset:
        try:
            return _read_assembly(dataset, path, time_window, naming)
        except UserError:
            raise
        except Exception as err:  # noqa: BLE001 - the backends' errors on damaged chunks or coordinates
            raise DataError(path, [f"cannot read as NetCDF: {type(err).__name__}: {err}"]) from None


def _hdf5_dims_problems(path: Path) -> list[str]:
    """For a NetCDF-4 file (HDF5): one problem per variable declaring a dim above
    :data:`~sharedattr.data.trials.MAX_DIM`, from the file's metadata alone. Checked before xarray opens the file,
    which reads string coordinates (e.g. ``stimulus_id``) whole; a NetCDF-3 file holds what it declares."""
    try:
        import h5py
    except ImportError:  # xarray's NetCDF-4 backends need it; without it such a file does not open anyway
        return []
    problems: list[str] = []

    def visit(name: str, item: object) -> None:
        if isinstance(item, h5py.Dataset):
            found = dims_problem(f"variable {name!r}", item.shape, item.dtype.itemsize)
            problems.extend([found] if found else [])

    try:
        if h5py.is_hdf5(path):
            with h5py.File(path, "r") as f:
                f.visititems(visit)
    except (OSError, ValueError):  # damaged: xarray reports it
        return []
    return problems


def _lazy_open_options(xr: ModuleType) -> dict[str, bool]:
    """``create_default_indexes=False`` where xarray has it (2025.06 on): otherwise a coordinate variable named like
    its dim (e.g. ``presentation``) is read whole into an index when the file is opened, before any size check."""
    import inspect

    parameters = inspect.signature(xr.open_dataset).parameters
    return {"create_default_indexes": False} if "create_default_indexes" in parameters else {}


def _read_assembly(
    dataset: xarray.Dataset, path: Path, time_window: tuple[float, float] | None, naming: Naming
) -> Responses:
    """:func:`_load_netcdf` on the lazily opened ``dataset``."""
    names = list(dataset.data_vars)
    if len(names) != 1:
        raise DataError(
            path,
            [
                f"expected exactly one data variable (the assembly); found {len(names)}: "
                f"{', '.join(map(str, names)) or '(none)'}"
            ],
        )
    data = dataset[names[0]]
    problems = _assembly_problems(data)
    if problems:
        raise DataError(path, problems)
    too_long = dims_problem(f"variable {names[0]!r} {tuple(data.dims)}", data.shape, data.dtype.itemsize)
    if too_long:
        raise DataError(path, [too_long])
    if "time_bin" in data.dims:
        values = _time_window(data.transpose("presentation", "time_bin", "neuroid"), time_window, path, naming)
    elif time_window is not None:
        raise DataError(path, [_no_bins(naming)])
    else:
        data = data.transpose(*NETCDF_DIMS)
        too_large = size_problem(f"variable {names[0]!r} {tuple(data.dims)}", data.shape, data.dtype.itemsize)
        if too_large:
            raise DataError(path, [too_large])
        values = np.asarray(data.values)
    row_ids = as_strings(data["stimulus_id"].values)
    neurons = as_strings(data["neuroid_id"].values if "neuroid_id" in data.coords else data["neuroid"].values)
    repetition = data["repetition"].values if "repetition" in data.coords else None
    if repetition is not None:
        problems += _duplicate_repetitions(row_ids, repetition)
    ids, trials = stack_trials(values, trial_groups(row_ids, repetition), path)
    return checked(path, ids, neurons, trials, problems)


def _time_window(data: xarray.DataArray, window: tuple[float, float] | None, path: Path, naming: Naming) -> np.ndarray:
    """``[presentation, neuroid]``: the mean over the bins inside ``window`` of the lazily read assembly ``data``
    ``[presentation, time_bin, neuroid]`` (a single bin needs no window and no bin coordinates). Only the window's
    bins are read, after the size they take was checked."""
    variable = f"variable {data.name!r} (presentation, time_bin, neuroid)"
    n_rows, n_bins, n_neurons = data.shape
    itemsize = data.dtype.itemsize
    if n_bins == 1 and window is None:
        bins = np.array([0])
    else:
        missing = [c for c in ("time_bin_start", "time_bin_end") if c not in data.coords]
        if missing:
            raise DataError(
                path,
                [
                    f"the time_bin dim ({n_bins} bins) needs the coordinates time_bin_start and time_bin_end (ms); "
                    f"missing {', '.join(missing)}"
                ],
            )
        starts, ends = bin_edges(data["time_bin_start"].values, data["time_bin_end"].values, path)
        bins = window_bins(starts, ends, window, path, naming)
    lo, hi = int(bins.min()), int(bins.max()) + 1
    too_large = size_problem(variable, data.shape, itemsize, (n_rows, hi - lo, n_neurons), shorter_window(naming))
    too_large = too_large or size_problem(f"{variable} (averaged, in float64)", (n_rows, n_neurons), 8)
    if too_large:
        raise DataError(path, [too_large])
    return window_mean(
        lambda rows: data.isel(presentation=rows, time_bin=slice(lo, hi)).values,
        n_rows,
        (hi - lo) * n_neurons * itemsize,
        bins - lo,
        axis=1,
    )


def _import_xarray() -> ModuleType:
    """The xarray module, or a :class:`UserError` saying how to install it."""
    try:
        import xarray
    except ImportError:
        raise UserError(
            "reading NetCDF responses (.nc) needs xarray and a NetCDF backend: "
            "install sharedattr[xarray] (pip install 'sharedattr[xarray]')"
        ) from None
    return xarray


def _assembly_problems(data: xarray.DataArray) -> list[str]:
    """Everything wrong with an assembly's dims, coordinates and dtype."""
    problems = []
    dims = [d for d in data.dims if d != "time_bin"]
    if sorted(map(str, dims)) != sorted(NETCDF_DIMS):
        problems.append(
            f"dims are {tuple(data.dims)}; expected presentation × neuroid (either order; plus an optional time_bin)"
        )
    if data.dtype.kind not in "iuf":
        problems.append(f"dtype {data.dtype} is not a real number type (need integers or floats)")
    for coord, dim in (("stimulus_id", "presentation"), ("repetition", "presentation"), ("neuroid_id", "neuroid")):
        if coord in data.coords and data[coord].dims != (dim,):
            problems.append(f"coordinate {coord} must lie along {dim}; it has dims {data[coord].dims}")
    if "stimulus_id" not in data.coords:
        problems.append("no stimulus_id coordinate on the presentation dim")
    return problems


def _duplicate_repetitions(row_ids: Sequence[str], repetition: np.ndarray) -> list[str]:
    """One problem per (stimulus id, repetition) pair that occurs more than once."""
    seen: set[tuple[str, object]] = set()
    problems = []
    for sid, rep in zip(row_ids, repetition.tolist()):
        if (sid, rep) in seen:
            problems.append(f"stimulus_id {sid!r}: repetition {rep!r} appears more than once")
        seen.add((sid, rep))
    return problems
