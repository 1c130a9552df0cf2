"""Recorded trials matched to stimuli: :class:`Responses` and the checks every response format shares.

Every reader (:mod:`sharedattr.data.responses` for CSV, NPY and NetCDF; :mod:`sharedattr.data.psth` for
time-binned arrays; :mod:`sharedattr.data.nwb` for NWB) turns its file into stimulus ids, neuron ids and
trials ``[S, R, N]`` and passes them to :func:`checked`.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from sharedattr.data.naming import Naming
from sharedattr.data.stimuli import StimulusSet
from sharedattr.runtime.errors import DataError, UserError


def as_strings(values: object) -> list[str]:
    """Ids read from a file (an array or any sequence) as ``str``, bytes decoded as UTF-8."""
    items = values.tolist() if isinstance(values, np.ndarray) else list(values)
    return [v.decode() if isinstance(v, bytes) else str(v) for v in items]


MAX_ABS_RESPONSE = 1e15
"""Largest response magnitude accepted: float32 sums of squares of a million such values stay finite."""
MAX_RESPONSE_BYTES = 4 * 2**30
"""The most bytes of values read from one responses file (4 GiB): the part a reader needs (for time-binned data, the
bins inside ``data.time_window``, as stored), and the trials ``[S, R, N]`` in float64 it makes of them. Checked
against the shapes a file declares, before anything is read: a few kB of HDF5 or NetCDF can declare terabytes of
chunks that were never written."""
MAX_DIM = 10_000_000
"""The most entries along any dim of a responses file (stimuli, repetitions, presentations, time bins, neurons,
units): more is taken for a damaged or hostile file, whatever the bytes."""


def dims_problem(variable: str, shape: Sequence[int], itemsize: int) -> str | None:
    """Why ``variable`` of declared ``shape`` is taken for damaged (a dim above :data:`MAX_DIM`), or None."""
    shape = tuple(int(d) for d in shape)
    for axis, size in enumerate(shape):
        if size > MAX_DIM:
            return (
                f"{variable} declares shape {shape} ({math.prod(shape) * itemsize:,} bytes): {size:,} entries along "
                f"axis {axis}, more than {MAX_DIM:,}; is the file damaged?"
            )
    return None


SPLIT_FILE = "split the recording into several files (fewer stimuli or neurons each)"


def shorter_window(naming: Naming) -> str:
    """The fix for a time-binned file whose window's bins are too many to read."""
    return f"choose fewer time bins with a shorter {naming('time_window')}, or {SPLIT_FILE}"


def size_problem(
    variable: str,
    shape: Sequence[int],
    itemsize: int,
    needed: Sequence[int] | None = None,
    fix: str = SPLIT_FILE,
    *,
    check_dims: bool = True,
) -> str | None:
    """Why ``variable`` of declared ``shape`` (items of ``itemsize`` bytes) is not read, or None: a dim above
    :data:`MAX_DIM` (unless ``check_dims`` is False, e.g. for a flat list of spike times), or more than
    :data:`MAX_RESPONSE_BYTES` in the part read (``needed``, the shape of that part; default the whole). ``fix`` ends
    the message."""
    shape = tuple(int(d) for d in shape)
    needed = shape if needed is None else tuple(int(d) for d in needed)
    too_long = dims_problem(variable, shape, itemsize) if check_dims else None
    if too_long:
        return too_long
    declared = f"{variable} declares shape {shape} ({math.prod(shape) * itemsize:,} bytes)"
    size = math.prod(needed) * itemsize
    if size > MAX_RESPONSE_BYTES:
        part = "" if needed == shape else f"; the part to read, {needed}, holds {size:,} bytes"
        return f"{declared}{part}: more than the {MAX_RESPONSE_BYTES:,} bytes read from one responses file; {fix}"
    return None


@dataclass(frozen=True, eq=False)
class Responses:
    """Recorded trials ``[S, R, N]`` for stimulus ``ids`` (S, unique) and ``neuron_ids`` (N, unique).

    ``trials`` is float32, NaN where a stimulus has fewer than R trials or a value is missing.
    ``source`` names where the responses came from, for error messages. Instances compare by
    identity; compare the fields to compare contents.
    """

    trials: Tensor
    ids: tuple[str, ...]
    neuron_ids: tuple[str, ...]
    source: str = "responses"

    def __post_init__(self) -> None:
        shape = tuple(self.trials.shape)
        if self.trials.dim() != 3 or self.trials.dtype != torch.float32:
            raise ValueError(f"trials must be a float32 tensor [S, R, N]; got {self.trials.dtype} {shape}")
        if shape[0] != len(self.ids) or shape[2] != len(self.neuron_ids):
            raise ValueError(
                f"trials {shape} do not match {len(self.ids)} stimulus ids and {len(self.neuron_ids)} neuron ids"
            )
        if len(set(self.ids)) != len(self.ids) or len(set(self.neuron_ids)) != len(self.neuron_ids):
            raise ValueError("stimulus ids and neuron ids must be unique")

    @property
    def values(self) -> Tensor:
        """Trial-averaged responses ``[S, N]``: NaN only where a stimulus has no valid trial for a neuron."""
        return torch.nanmean(self.trials, dim=1)

    @property
    def n_repeats(self) -> Tensor:
        """Valid (non-NaN) trials per stimulus and neuron, ``[S, N]`` int64."""
        return (~torch.isnan(self.trials)).sum(dim=1)

    @property
    def has_repeats(self) -> bool:
        """Whether any stimulus has at least two valid trials for some neuron."""
        return bool((self.n_repeats >= 2).any())

    def aligned_to(self, stimuli: StimulusSet) -> Tensor:
        """Trial-averaged responses ``[len(stimuli), N]`` in the order of ``stimuli`` (NaN rows where unmeasured)."""
        out = torch.full((len(stimuli), len(self.neuron_ids)), math.nan)
        out[self._rows_in(stimuli)] = self.values
        return out

    def trials_aligned_to(self, stimuli: StimulusSet) -> Tensor:
        """Trials ``[len(stimuli), R, N]`` in the order of ``stimuli`` (all-NaN where unmeasured)."""
        out = torch.full((len(stimuli), self.trials.shape[1], len(self.neuron_ids)), math.nan)
        out[self._rows_in(stimuli)] = self.trials
        return out

    def _rows_in(self, stimuli: StimulusSet) -> Tensor:
        """Index ``[S]`` of each of our stimuli in ``stimuli``; :class:`DataError` listing every unknown id."""
        check_known_ids(self.source, self.ids, stimuli.ids)
        index = {sid: i for i, sid in enumerate(stimuli.ids)}
        return torch.tensor([index[sid] for sid in self.ids], dtype=torch.long)


def check_known_ids(source: object, ids: Sequence[str], stimulus_ids: Sequence[str]) -> int:
    """The number of stimuli ``stimulus_ids`` that the responses ``ids`` (from ``source``) measure;
    :class:`DataError` listing every response id that is not a stimulus.

    Example::

        >>> check_known_ids("responses.csv", ["a", "b"], ["a", "b", "c"])
        2
    """
    known = set(stimulus_ids)
    unknown = [sid for sid in ids if sid not in known]
    if unknown:
        raise DataError(source, [f"stimulus_id {sid!r} is not in the stimulus set" for sid in unknown])
    return len(set(ids))


def trial_groups(row_ids: Sequence[str], order: np.ndarray | None = None) -> dict[str, list[int]]:
    """Row indices of each stimulus id, stimuli in order of first appearance, trials in row order or by ``order``."""
    groups: dict[str, list[int]] = {}
    for row, sid in enumerate(row_ids):
        groups.setdefault(sid, []).append(row)
    if order is not None:
        keys = order.tolist()
        groups = {sid: sorted(rows, key=lambda r: keys[r]) for sid, rows in groups.items()}
    return groups


def stack_trials(
    rows: np.ndarray, groups: dict[str, list[int]], source: object = "responses"
) -> tuple[list[str], np.ndarray]:
    """Rows ``[T, N]`` grouped into NaN-padded trials ``[S, R, N]``, R the most trials of any stimulus.

    :class:`DataError` naming ``source`` when the padded trials would exceed :data:`MAX_RESPONSE_BYTES` (one stimulus
    shown far more often than the others pads every other one to its count)."""
    n_repeats = max((len(g) for g in groups.values()), default=1)
    dtype = np.result_type(rows.dtype, np.float32)  # float64 data stay float64 until checked
    shape = (len(groups), n_repeats, rows.shape[1])
    if math.prod(shape) * 8 > MAX_RESPONSE_BYTES:  # float64 here or in the checks that follow
        most = max(groups, key=lambda sid: len(groups[sid]))
        raise DataError(
            source,
            [
                f"the trials [stimuli, repetitions, neurons] would be {shape} ({math.prod(shape) * 8:,} bytes in "
                f"float64), more than {MAX_RESPONSE_BYTES:,}: stimulus_id {most!r} is shown {n_repeats:,} times, and "
                "every other stimulus is padded to that count: leave it out of the responses, or split the recording"
            ],
        )
    trials = np.full((len(groups), n_repeats, rows.shape[1]), np.nan, dtype=dtype)
    for s, members in enumerate(groups.values()):
        trials[s, : len(members)] = rows[members]
    return list(groups), trials


def infinite_values(ids: Sequence[str], neurons: Sequence[str], trials: np.ndarray) -> list[str]:
    """One problem per neuron with ±inf values or magnitudes above :data:`MAX_ABS_RESPONSE` in
    ``trials [S, R, N]`` (any real dtype), naming the first stimulus affected."""
    problems = []
    with np.errstate(invalid="ignore"):
        infinite = np.isinf(trials)
        large = np.abs(np.where(infinite, 0, np.nan_to_num(trials, nan=0.0))) > MAX_ABS_RESPONSE
    for bad, what in (
        (infinite, "infinite value(s)"),
        (large, f"value(s) too large (more than {MAX_ABS_RESPONSE:.0e} in magnitude; rescale the responses)"),
    ):
        for n in np.flatnonzero(bad.any(axis=(0, 1))):
            stims = np.flatnonzero(bad[:, :, n].any(axis=1))
            count = int(bad[:, :, n].sum())
            problems.append(f"neuron {neurons[n]}: {count} {what}, first for stimulus_id {ids[stims[0]]!r}")
    return problems


def checked(
    path: Path, ids: Sequence[str], neurons: Sequence[str], trials: np.ndarray, problems: list[str]
) -> Responses:
    """:class:`Responses` from checked parts; adds the checks every format shares and raises on any problem.

    Shared checks: no stimuli or no neurons, duplicate neuron ids, infinite or too large values,
    neurons without any valid (non-NaN) value. ``trials`` may be of any real
    dtype; they are checked before the cast to float32 (so a float64 1e300 is reported, not
    silently turned into infinity).
    """
    problems = list(problems)
    if not len(ids):
        problems.append("no responses: the file holds no stimuli")
    if not len(neurons):
        problems.append("no neurons")
    duplicates = sorted(n for n, count in Counter(neurons).items() if count > 1)
    if duplicates:
        problems.append(f"duplicate neuron id(s): {', '.join(repr(n) for n in duplicates)}")
    if len(ids) and len(neurons) == trials.shape[2]:
        problems += infinite_values(ids, neurons, trials)
        finite = np.isfinite(trials).any(axis=(0, 1))
        problems += [f"neuron {n}: no valid (non-NaN) response" for n, ok in zip(neurons, finite) if not ok]
    if problems:
        raise DataError(path, problems)
    trials = np.ascontiguousarray(trials, dtype=np.float32)
    return Responses(torch.from_numpy(trials), tuple(ids), tuple(neurons), str(path))


def require_measured_neurons(responses: Tensor, who: str) -> None:
    """Raise :class:`~sharedattr.runtime.errors.UserError` naming every neuron (column of ``[S, N]``) that is all
    NaN."""
    empty = torch.isnan(responses).all(0).nonzero().squeeze(1).tolist()
    if empty:
        raise UserError(f"{who}: neuron(s) {empty} have no valid (non-NaN) response")
