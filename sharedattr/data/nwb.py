"""Recorded responses from an NWB file (DANDI's format): spike counts per stimulus presentation, as spikes/s.

:func:`load_nwb` reads two things from a ``.nwb`` file (needs ``sharedattr[nwb]``, i.e. pynwb):

- **Spikes**: the Units table (``nwbfile.units``), its ragged ``spike_times`` column in seconds.
  Each unit is a neuron; its id (the table's ``id`` value, as a string) is the neuron id.
- **Presentations**: one intervals table, one row per stimulus presentation: ``start_time``
  (the onset, in seconds) and a stimulus id column (default ``stimulus_id``; strings, bytes
  decoded as UTF-8). By default this is the trials table if it has that column, else the
  one other intervals table (e.g. one added with ``add_time_intervals``) that has it; name
  another with ``table=``. ``stop_time`` and every other column are ignored.

The response of a unit to a presentation is its number of spikes ``t`` with
``onset + start <= t < onset + end`` (start inclusive, end exclusive; ``time_window =
(start_ms, end_ms)`` in milliseconds relative to the onset, edges computed in float64 as
``onset + ms / 1000``), divided by the window's duration in seconds: a rate in spikes/s.

**The recording's extent.** A window must lie within what was recorded, or its count would be a silent 0:

- with the Units table's ``obs_intervals`` column (NWB's record of when each unit was observed), the recording ends
  at the latest end of any unit's intervals; without it, the file does not say, and the last spike time of any unit
  is taken as the end (a recording goes on after its last stimulus, so its last spike follows the last window);
- a window that ends after the end of the recording (``onset + end_ms / 1000`` past it; for ``obs_intervals`` also
  one that starts before their earliest start) is refused, before any compute, with the number of presentations
  affected and the first of them;
- with ``obs_intervals``, a window inside the recording that is not wholly inside one of a unit's own intervals
  (the unit was not observed then: it appeared late, was lost early or has a gap) is that unit's missing value
  (NaN, left out per neuron), with one warning counting them.

The file's header (:func:`nwb_header`: the window, the presentations table with its ids and onsets, the Units
table's ids and declared columns) is checked before any spike time is read; ``sharedattr validate`` runs the same
check. Several presentations of one stimulus are its trials, in order of onset; stimuli keep the
order of their first presentation. The result is a
:class:`~sharedattr.data.trials.Responses` with trials ``[S, R, N]`` (S stimuli, R the most
presentations of any stimulus, N units), NaN where a stimulus was shown fewer than R times.
Every problem in the file is reported at once in one
:class:`~sharedattr.data.stimuli.DataError` naming the file.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from sharedattr.data.naming import CONFIG, Naming
from sharedattr.data.trials import (
    MAX_DIM,
    Responses,
    as_strings,
    checked,
    size_problem,
    stack_trials,
    trial_groups,
)
from sharedattr.runtime.errors import DataError, UserError

BUILTIN_INTERVALS = ("trials", "epochs", "invalid_times")
"""Interval tables NWBFile keeps as attributes (older pynwb leaves them out of ``nwbfile.intervals``)."""


@dataclass(frozen=True)
class NWBHeader:
    """What an NWB file declares, read without its spike times: the presentations (stimulus id, onset in s and a
    description of each row), the unit ids, the usable ``window`` (ms) and the Units table's ragged columns
    (``spike_times`` and, when present, ``obs_intervals``), unread."""

    row_ids: list[str]
    onsets: np.ndarray
    where: list[str]
    neurons: list[str]
    window: tuple[float, float]
    columns: dict[str, Any]

    def describe(self) -> str:
        """``4 presentations of 3 stimuli (intervals table 'trials'), 3 units, window [70, 170] ms``."""
        table = self.where[0].split(",")[0] if self.where else "no table"
        return (
            f"{len(self.row_ids)} presentations of {len(set(self.row_ids))} stimuli ({table}), "
            f"{len(self.neurons)} units; spikes counted in [{self.window[0]:g}, {self.window[1]:g}) ms after each onset"
        )


@contextlib.contextmanager
def open_nwb(path: Path) -> Iterator[Any]:
    """The ``NWBFile`` of ``path``, read lazily and closed when the block ends; :class:`UserError` without pynwb,
    :class:`DataError` when the file cannot be read as NWB."""
    pynwb = _import_pynwb()
    io = None
    try:
        io = pynwb.NWBHDF5IO(str(path), "r")
        nwbfile = io.read()
    except Exception as err:  # noqa: BLE001 - h5py, hdmf and pynwb each raise their own types for unreadable files
        if io is not None:
            io.close()
        raise DataError(path, [f"cannot read as NWB: {type(err).__name__}: {err}"]) from None
    try:
        yield nwbfile
    finally:
        io.close()


def nwb_header(
    nwbfile: Any,
    path: Path,
    time_window: tuple[float, float] | None,
    table: str | None,
    stimulus_column: str,
    naming: Naming = CONFIG,
) -> NWBHeader:
    """The header of the open ``nwbfile``: the window, the presentations table (its ids and onsets are read) and the
    Units table's ids and declared columns; :class:`DataError` listing every problem at once, naming the window and
    the table as ``naming`` does (``data.time_window``, ``data.nwb_table`` by default). No spike time is read."""
    problems, window = _window_problems(time_window, naming)
    row_ids, onsets, where, table_problems = _read_presentations(nwbfile, table, stimulus_column, naming)
    neurons, columns, unit_problems = _units_header(nwbfile)
    problems += table_problems + unit_problems
    if not problems:
        too_large = size_problem("the rates [presentations, units] in float64", (len(onsets), len(neurons)), 8)
        problems += [too_large] if too_large else []
    if problems:
        raise DataError(path, problems)
    assert window is not None  # a missing or bad window is a problem above
    return NWBHeader(row_ids, onsets, where, neurons, window, columns)


def load_nwb(
    path: Path,
    time_window: tuple[float, float] | None,
    *,
    table: str | None = None,
    stimulus_column: str = "stimulus_id",
    naming: Naming = CONFIG,
) -> Responses:
    """Firing rates (spikes/s) of every unit in ``time_window`` ms after each presentation's onset.

    ``table`` names the intervals table of presentations (default: the trials table if it has
    ``stimulus_column``, else the only intervals table that has it). Raises
    :class:`~sharedattr.runtime.errors.UserError` without pynwb and
    :class:`~sharedattr.data.stimuli.DataError` listing every problem in the file or the window: those of its header
    (:func:`nwb_header`) before any spike time is read. ``naming``: how errors name the window and the table (a
    config's fields by default; :mod:`sharedattr.data.naming`).
    """
    path = Path(path)
    with open_nwb(path) as nwbfile:
        header = nwb_header(nwbfile, path, time_window, table, stimulus_column, naming)
        spikes, observed, problems = _read_units(nwbfile, header.columns)
    if problems:
        raise DataError(path, problems)
    window, neurons = header.window, header.neurons
    order = np.argsort(header.onsets, kind="stable")  # presentations in time; ties keep row order
    row_ids, onsets = [header.row_ids[i] for i in order], header.onsets[order]
    where = [header.where[i] for i in order]
    outside = _outside_recording(spikes, observed, onsets, window, (row_ids, where), naming)
    if outside:
        raise DataError(path, [outside])
    rates = _rates(spikes, onsets, window)
    if observed is not None:
        _leave_out_unobserved(rates, observed, onsets, window, neurons, row_ids, path)
    ids, trials = stack_trials(rates, trial_groups(row_ids), path)
    return checked(path, ids, neurons, trials, [])


def _import_pynwb() -> ModuleType:
    """The pynwb module, or a :class:`UserError` saying how to install it."""
    try:
        import pynwb
    except ImportError:
        raise UserError(
            "reading NWB responses (.nwb) needs pynwb: install sharedattr[nwb] (pip install 'sharedattr[nwb]')"
        ) from None
    return pynwb


def _window_problems(
    time_window: tuple[float, float] | None, naming: Naming
) -> tuple[list[str], tuple[float, float] | None]:
    """Problems with ``time_window`` (ms) and the window itself when it is usable."""
    name = naming("time_window")
    if time_window is None:
        return [f"NWB spike times need {name} = [start_ms, end_ms], e.g. [70, 170]"], None
    try:
        start, end = (float(v) for v in time_window)
    except (TypeError, ValueError):
        return [f"{name} must be two numbers [start_ms, end_ms]; got {time_window!r}"], None
    if not (math.isfinite(start) and math.isfinite(end)):
        return [f"{name} must be finite; got [{start}, {end}]"], None
    if end <= start:
        return [f"{name} end ({end} ms) must be greater than its start ({start} ms)"], None
    return [], (start, end)


def _units_header(nwbfile: Any) -> tuple[list[str], dict[str, Any], list[str]]:
    """Unit ids (as strings), the Units table's ragged columns by name (``spike_times``, and ``obs_intervals`` when
    present; unread) and the problems with the table's declaration."""
    units = nwbfile.units
    if units is None:
        return [], {}, ["no Units table (nwbfile.units): the file holds no spike times"]
    if len(units) == 0:
        return [], {}, ["no units: the Units table is empty"]
    if "spike_times" not in units.colnames:
        return [], {}, [f"the Units table has no spike_times column (its columns: {_columns(units)})"]
    columns = {}
    for name, width in (("spike_times", 1), ("obs_intervals", 2)):
        if name in units.colnames:
            columns[name], problem = _ragged_header(units, name, width)
            if problem:
                return [], {}, [problem]
    return as_strings(units.id[:]), columns, []


def _read_units(nwbfile: Any, columns: dict[str, Any]) -> tuple[list[np.ndarray], list[np.ndarray] | None, list[str]]:
    """Each unit's sorted spike times (s), each unit's observation intervals ``[K, 2]`` (s, sorted and merged; None
    without an ``obs_intervals`` column) and the problems with their values; ``columns`` from :func:`_units_header`."""
    spikes, problems = _ragged(columns["spike_times"], "spike_times")
    if spikes is None:
        return [], None, problems
    observed = None
    if "obs_intervals" in columns:
        intervals, problems = _ragged(columns["obs_intervals"], "obs_intervals")
        if intervals is None:
            return [], None, problems
        bad = [
            n
            for n, i in zip(as_strings(nwbfile.units.id[:]), intervals)
            if not np.isfinite(i).all() or (i[:, 1] < i[:, 0]).any()
        ]
        if bad:
            return (
                [],
                None,
                [f"unit(s) {', '.join(bad[:10])}: obs_intervals must be finite [start, stop] pairs with stop >= start"],
            )
        observed = [_merged(i) for i in intervals]
    return [np.sort(s) for s in spikes], observed, []


def _ragged_header(units: Any, name: str, width: int) -> tuple[Any, str | None]:
    """The ragged column ``name`` of the Units table (``[k]`` per unit for ``width`` 1, ``[k, 2]`` for 2), its
    declared size and shape checked before anything is read; and the problem, or None."""
    column = units[name]
    if not hasattr(column, "target"):  # a VectorIndex over the flat values
        return None, f"the Units table's {name} column is not ragged (one list per unit)"
    index, flat = column.data, column.target.data
    shape = tuple(getattr(flat, "shape", (len(flat),)))
    too_large = size_problem(f"the Units table's {name} index", (len(index),), 8) or size_problem(
        f"the Units table's {name}", shape, 8, check_dims=False
    )
    if too_large:
        return None, too_large
    if shape[1:] != ((width,) if width > 1 else ()):
        return None, f"the Units table's {name} has shape {shape}; expected {'[k, 2]' if width > 1 else '[k]'}"
    return column, None


def _ragged(column: Any, name: str) -> tuple[list[np.ndarray] | None, list[str]]:
    """The values of the ragged ``column`` (checked by :func:`_ragged_header`), one float64 array per unit; or None
    and the problems."""
    ends = np.asarray(column.data[:], dtype=np.int64)
    values = np.asarray(column.target.data[:], dtype=np.float64)
    if len(ends) and ((np.diff(ends) < 0).any() or ends[0] < 0 or ends[-1] > len(values)):
        return None, [f"the Units table's {name} index does not fit its {len(values)} values (damaged file?)"]
    starts = np.concatenate([[0], ends[:-1]]).astype(np.int64)
    return [values[a:b] for a, b in zip(starts, ends)], []


def _merged(intervals: np.ndarray) -> np.ndarray:
    """Intervals ``[K, 2]`` sorted by start, overlapping or touching ones merged."""
    out: list[list[float]] = []
    for a, b in sorted(intervals.tolist()):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return np.asarray(out, dtype=np.float64).reshape(-1, 2)


def _outside_recording(
    spikes: list[np.ndarray],
    observed: list[np.ndarray] | None,
    onsets: np.ndarray,
    window: tuple[float, float],
    presentations: tuple[list[str], list[str]],
    naming: Naming,
) -> str | None:
    """The problem with the presentations (in onset order; their stimulus ids and descriptions) whose window
    reaches outside the recording (module docstring), or None: how many, the first, the recording's extent and the
    fix."""
    row_ids, where = presentations
    lower, upper = onsets + window[0] / 1000, onsets + window[1] / 1000
    if observed is not None:
        ends = [i[-1, 1] for i in observed if len(i)]
        starts = [i[0, 0] for i in observed if len(i)]
        begin, end = (min(starts), max(ends)) if ends else (math.inf, -math.inf)
        extent, evidence = f"{begin:g} s to {end:g} s", "the Units table's obs_intervals"
        hint = ""
    else:
        begin = -math.inf
        end = max((float(t[-1]) for t in spikes if len(t)), default=-math.inf)
        extent, evidence = f"up to {end:g} s", "its last spike time: the file has no obs_intervals"
        hint = "; if the recording went on after its last spike, record that with the Units table's obs_intervals"
    bad = np.flatnonzero((upper > end) | (lower < begin))
    if not len(bad):
        return None
    first = int(bad[0])
    return (
        f"{naming('time_window')} [{window[0]:g}, {window[1]:g}] ms reaches outside the recording ({extent}, from "
        f"{evidence}) for {len(bad)} of {len(onsets)} presentations, the first {where[first]}: stimulus "
        f"{row_ids[first]!r} at onset {onsets[first]:g} s, window {lower[first]:g} s to {upper[first]:g} s; their "
        f"spikes were not recorded: shorten {naming('time_window')}, or leave those presentations out of the "
        f"table{hint}"
    )


def _leave_out_unobserved(
    rates: np.ndarray,
    observed: list[np.ndarray],
    onsets: np.ndarray,
    window: tuple[float, float],
    neurons: list[str],
    row_ids: list[str],
    path: Path,
) -> None:
    """Set to NaN (missing) the rates ``[P, N]`` of each unit for the presentations whose window is not wholly inside
    one of its observation intervals; one warning counts them."""
    lower, upper = onsets + window[0] / 1000, onsets + window[1] / 1000
    missing, first = 0, None
    for n, intervals in enumerate(observed):
        k = np.searchsorted(intervals[:, 0], lower, side="right") - 1  # the interval starting at or before each window
        inside = (
            (k >= 0) & (upper <= intervals[np.clip(k, 0, None), 1]) if len(intervals) else np.zeros(len(onsets), bool)
        )
        rates[~inside, n] = np.nan
        if first is None and not inside.all():
            first = (neurons[n], row_ids[int(np.flatnonzero(~inside)[0])])
        missing += int((~inside).sum())
    if first is not None:
        warnings.warn(
            f"{path}: {missing} unit × presentation window(s) lie outside the unit's obs_intervals (the first: unit "
            f"{first[0]}, stimulus {first[1]!r}): left out as missing values",
            stacklevel=3,
        )


def _interval_tables(nwbfile: Any) -> dict[str, Any]:
    """Every intervals table in the file by name, the trials table first."""
    tables: dict[str, Any] = {}
    for name in BUILTIN_INTERVALS:
        found = getattr(nwbfile, name, None)
        if found is not None:
            tables[found.name] = found
    intervals = nwbfile.intervals if isinstance(nwbfile.intervals, Mapping) else {}
    for name, found in intervals.items():
        tables.setdefault(name, found)
    return tables


def _read_presentations(
    nwbfile: Any, table: str | None, stimulus_column: str, naming: Naming
) -> tuple[list[str], np.ndarray, list[str], list[str]]:
    """Stimulus id, onset (s) and description (table, row, id) of each row of the presentations table, and the
    problems with them."""
    tables = _interval_tables(nwbfile)
    listing = "; ".join(f"{name} ({_columns(t)})" for name, t in tables.items()) or "(none)"
    if table is not None:
        if table not in tables:
            return [], np.empty(0), [], [f"no intervals table {table!r}; the file's intervals tables: {listing}"]
        chosen = tables[table]
        if stimulus_column not in chosen.colnames:
            return [], np.empty(0), [], [f"intervals table {table!r} has no {stimulus_column!r} column ({listing})"]
    else:
        trials = tables.get("trials")
        if trials is not None and stimulus_column in trials.colnames:
            chosen = trials
        else:
            having = [name for name, t in tables.items() if name != "trials" and stimulus_column in t.colnames]
            if len(having) != 1:
                found = "no intervals table has" if not having else f"{len(having)} intervals tables have"
                return (
                    [],
                    np.empty(0),
                    [],
                    [
                        f"{found} a {stimulus_column!r} column; the file's intervals tables: {listing}; "
                        f"name the presentations table to read ({naming('nwb_table')})"
                    ],
                )
            chosen = tables[having[0]]
    column = chosen[stimulus_column]
    if hasattr(column, "target"):
        return [], np.empty(0), [], [f"column {stimulus_column!r} of {chosen.name!r} is ragged; need one id per row"]
    rows = len(chosen)
    if rows > MAX_DIM:
        return [], np.empty(0), [], [f"intervals table {chosen.name!r} declares {rows:,} rows, more than {MAX_DIM:,}"]
    row_ids = [sid.strip() for sid in as_strings(column.data[:])]
    onsets = np.asarray(chosen["start_time"].data[:], dtype=np.float64)
    where = [f"intervals table {chosen.name!r}, row {row} (id {i})" for row, i in enumerate(as_strings(chosen.id[:]))]
    problems = [f"{where[row]}: empty {stimulus_column}" for row, sid in enumerate(row_ids) if not sid]
    problems += [
        f"{where[row]}: start_time {onset} is not finite"
        for row, onset in enumerate(onsets.tolist())
        if not math.isfinite(onset)
    ]
    if not row_ids:
        problems.append(f"no presentations: intervals table {chosen.name!r} has no rows")
    return row_ids, onsets, where, problems


def _rates(spikes: list[np.ndarray], onsets: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """Spikes/s ``[P, N]`` of each unit in ``[onset + start, onset + end)`` of each presentation."""
    start, end = window
    lower, upper = onsets + start / 1000, onsets + end / 1000
    rates = np.empty((len(onsets), len(spikes)), dtype=np.float64)
    for n, times in enumerate(spikes):
        rates[:, n] = np.searchsorted(times, upper, side="left") - np.searchsorted(times, lower, side="left")
    return rates / ((end - start) / 1000)


def _columns(table: Any) -> str:
    """A table's column names, comma-separated."""
    return ", ".join(map(str, table.colnames)) or "(no columns)"
