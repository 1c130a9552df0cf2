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

Several presentations of one stimulus are its trials, in order of onset; stimuli keep the
order of their first presentation. The result is a
:class:`~sharedattr.data.trials.Responses` with trials ``[S, R, N]`` (S stimuli, R the most
presentations of any stimulus, N units), NaN where a stimulus was shown fewer than R times.
Every problem in the file is reported at once in one
:class:`~sharedattr.data.stimuli.DataError` naming the file.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from sharedattr.data.stimuli import DataError
from sharedattr.data.trials import Responses, as_strings, checked, stack_trials, trial_groups
from sharedattr.runtime.errors import UserError

TIME_WINDOW_HINT = "NWB spike times need data.time_window = [start_ms, end_ms], e.g. [70, 170]"
BUILTIN_INTERVALS = ("trials", "epochs", "invalid_times")
"""Interval tables NWBFile keeps as attributes (older pynwb leaves them out of ``nwbfile.intervals``)."""


def load_nwb(
    path: Path,
    time_window: tuple[float, float] | None,
    *,
    table: str | None = None,
    stimulus_column: str = "stimulus_id",
) -> Responses:
    """Firing rates (spikes/s) of every unit in ``time_window`` ms after each presentation's onset.

    ``table`` names the intervals table of presentations (default: the trials table if it has
    ``stimulus_column``, else the only intervals table that has it). Raises
    :class:`~sharedattr.runtime.errors.UserError` without pynwb and
    :class:`~sharedattr.data.stimuli.DataError` listing every problem in the file or the window.
    """
    pynwb = _import_pynwb()
    path = Path(path)
    problems, window = _window_problems(time_window)
    io = None
    try:
        io = pynwb.NWBHDF5IO(str(path), "r")
        nwbfile = io.read()
    except Exception as err:  # noqa: BLE001 - h5py, hdmf and pynwb each raise their own types for unreadable files
        if io is not None:
            io.close()
        raise DataError(path, [f"cannot read as NWB: {type(err).__name__}: {err}"]) from None
    try:
        row_ids, onsets, table_problems = _read_presentations(nwbfile, table, stimulus_column)
        neurons, spikes, unit_problems = _read_units(nwbfile)
    finally:
        io.close()
    problems += table_problems + unit_problems
    if problems:
        raise DataError(path, problems)
    assert window is not None  # a missing or bad window is a problem above
    order = np.argsort(onsets, kind="stable")  # presentations in time; ties keep row order
    row_ids, onsets = [row_ids[i] for i in order], onsets[order]
    rates = _rates(spikes, onsets, window)
    ids, trials = stack_trials(rates, trial_groups(row_ids))
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


def _window_problems(time_window: tuple[float, float] | None) -> tuple[list[str], tuple[float, float] | None]:
    """Problems with ``time_window`` (ms) and the window itself when it is usable."""
    if time_window is None:
        return [TIME_WINDOW_HINT], None
    try:
        start, end = (float(v) for v in time_window)
    except (TypeError, ValueError):
        return [f"time_window must be two numbers [start_ms, end_ms]; got {time_window!r}"], None
    if not (math.isfinite(start) and math.isfinite(end)):
        return [f"time_window must be finite; got [{start}, {end}]"], None
    if end <= start:
        return [f"time_window end ({end} ms) must be greater than its start ({start} ms)"], None
    return [], (start, end)


def _read_units(nwbfile: Any) -> tuple[list[str], list[np.ndarray], list[str]]:
    """Unit ids (as strings), each unit's sorted spike times (s) and the problems with the Units table."""
    units = nwbfile.units
    if units is None:
        return [], [], ["no Units table (nwbfile.units): the file holds no spike times"]
    if len(units) == 0:
        return [], [], ["no units: the Units table is empty"]
    if "spike_times" not in units.colnames:
        return [], [], [f"the Units table has no spike_times column (its columns: {_columns(units)})"]
    column = units["spike_times"]
    if not hasattr(column, "target"):  # a VectorIndex over the flat spike times
        return [], [], ["the Units table's spike_times column is not ragged (one list of spike times per unit)"]
    ends = np.asarray(column.data[:], dtype=np.int64)
    flat = np.asarray(column.target.data[:], dtype=np.float64)
    starts = np.concatenate([[0], ends[:-1]])
    spikes = [np.sort(flat[a:b]) for a, b in zip(starts, ends)]
    return as_strings(units.id[:]), spikes, []


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
    nwbfile: Any, table: str | None, stimulus_column: str
) -> tuple[list[str], np.ndarray, list[str]]:
    """Stimulus id and onset (s) of each row of the presentations table, and the problems with them."""
    tables = _interval_tables(nwbfile)
    listing = "; ".join(f"{name} ({_columns(t)})" for name, t in tables.items()) or "(none)"
    if table is not None:
        if table not in tables:
            return [], np.empty(0), [f"no intervals table {table!r}; the file's intervals tables: {listing}"]
        chosen = tables[table]
        if stimulus_column not in chosen.colnames:
            return [], np.empty(0), [f"intervals table {table!r} has no {stimulus_column!r} column ({listing})"]
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
                    [
                        f"{found} a {stimulus_column!r} column; the file's intervals tables: {listing}; "
                        "name the presentations table to read (data.nwb_table, or table= in Python)"
                    ],
                )
            chosen = tables[having[0]]
    column = chosen[stimulus_column]
    if hasattr(column, "target"):
        return [], np.empty(0), [f"column {stimulus_column!r} of {chosen.name!r} is ragged; need one id per row"]
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
    return row_ids, onsets, problems


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
