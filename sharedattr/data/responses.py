"""Recorded responses with their trial repetitions, matched to stimuli by id.

:func:`load_responses` reads three formats, chosen by the file suffix, into one
:class:`Responses`:

- ``.csv``: header ``stimulus_id, <neuron id>, ...``; one row per trial. A stimulus id on
  several rows is several trials of that stimulus, in row order.
- ``.npy`` plus an id list: a numeric array ``[S, N]`` (one trial) or ``[S, R, N]``
  (NaN-padded trials); ``ids_path`` names a text file with the S stimulus ids, one per
  line; ``neuron_ids_path`` optionally names the N neuron ids (default ``"0"`` ... ``"N-1"``).
  Loaded with ``allow_pickle=False``: object arrays are refused, never unpickled.
- ``.nc``: a BrainIO-style NetCDF assembly (needs ``sharedattr[xarray]``): a data array with
  dims ``presentation × neuroid`` (either order, plus an optional ``time_bin`` of size 1), a
  ``stimulus_id`` coordinate on ``presentation``, neuron ids from a ``neuroid_id``
  coordinate (else the ``neuroid`` index values), and several presentations of one stimulus
  as its trials, ordered by a ``repetition`` coordinate when there is one.

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
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from sharedattr.data.stimuli import DataError, StimulusSet
from sharedattr.runtime.errors import MissingFileError, UserError

if TYPE_CHECKING:
    import xarray

MISSING_TOKENS = {"", "nan", "NaN", "NA"}
NUMBER = re.compile(r"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|inf|infinity)", re.IGNORECASE | re.ASCII)
"""A response cell: a plain decimal number (or ±inf, reported as such); not ``1_000`` or non-ASCII digits, both of
which Python's ``float`` accepts."""
MAX_ABS_RESPONSE = 1e15
"""Largest response magnitude accepted: float32 sums of squares of a million such values stay finite."""

NETCDF_DIMS = ("presentation", "neuroid")


def parse_number(cell: str) -> float:
    """``cell`` as a float if it is a plain decimal number (:data:`NUMBER`); ValueError otherwise."""
    text = cell.strip()
    if not NUMBER.fullmatch(text):
        raise ValueError(f"not a number: {cell!r}")
    return float(text)


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

    @classmethod
    def from_csv(cls, path: str | Path) -> Responses:
        """The responses in a CSV file (see :func:`load_responses`)."""
        return _load_csv(_existing(path))

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
        index = {sid: i for i, sid in enumerate(stimuli.ids)}
        unknown = [sid for sid in self.ids if sid not in index]
        if unknown:
            raise DataError(self.source, [f"stimulus_id {sid!r} is not in the stimulus set" for sid in unknown])
        return torch.tensor([index[sid] for sid in self.ids], dtype=torch.long)


def load_responses(
    path: str | Path, *, ids_path: str | Path | None = None, neuron_ids_path: str | Path | None = None
) -> Responses:
    """Load and check recorded responses from a ``.csv``, ``.npy`` (with ``ids_path``) or ``.nc`` file.

    Raises :class:`~sharedattr.runtime.errors.MissingFileError` for a missing file and
    :class:`~sharedattr.data.stimuli.DataError` listing every problem in its content.
    ``ids_path`` and ``neuron_ids_path`` apply to ``.npy`` only.
    """
    path = _existing(path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return _load_npy(path, ids_path, neuron_ids_path)
    if ids_path is not None or neuron_ids_path is not None:
        raise DataError(
            path, ["ids_path and neuron_ids_path apply only to .npy responses; this file carries its own ids"]
        )
    if suffix == ".csv":
        return _load_csv(path)
    if suffix == ".nc":
        return _load_netcdf(path)
    raise DataError(
        path,
        [
            f"unsupported responses format {path.suffix!r}; "
            "use .csv, .npy (with a stimulus id list) or .nc (NetCDF assembly)"
        ],
    )


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
    ids, trials = _stack_trials(data, _trial_groups(row_ids))
    return _checked(path, ids, neurons, trials, problems)


def _load_npy(path: Path, ids_path: str | Path | None, neuron_ids_path: str | Path | None) -> Responses:
    """A numeric ``[S, N]`` or ``[S, R, N]`` array with stimulus ids (and optionally neuron ids) in text files."""
    if ids_path is None:
        raise DataError(
            path,
            [
                "a .npy responses file needs ids_path: a text file with one stimulus id per line "
                "(in the order of the array's first axis)"
            ],
        )
    ids, problems = _read_id_list(_existing(ids_path, "stimulus id list"))
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as err:
        if "pickle" in str(err).lower():
            raise DataError(
                path,
                [
                    "holds Python objects (pickled data); sharedattr never unpickles data files: "
                    "save a numeric array (e.g. np.save(path, x.astype(np.float32)))"
                ],
            ) from None
        raise DataError(path, [f"not a readable .npy array: {err}"]) from None
    except (OSError, EOFError) as err:
        raise DataError(path, [f"not a readable .npy array: {err}"]) from None
    if not isinstance(array, np.ndarray):
        raise DataError(path, ["holds an archive (.npz), not a single array; save one array with np.save"])
    if array.dtype.kind not in "iuf":
        problems.append(f"dtype {array.dtype} is not a real number type (need integers or floats)")
    if array.ndim not in (2, 3):
        problems.append(f"array has shape {array.shape}; expected [S, N] or [S, R, N]")
    n_neurons = array.shape[-1] if array.ndim else 0
    if neuron_ids_path is None:
        neurons = [str(i) for i in range(n_neurons)]
    else:
        neuron_file = _existing(neuron_ids_path, "neuron id list")
        neurons, neuron_problems = _read_id_list(neuron_file)
        problems += neuron_problems
        if array.ndim in (2, 3) and len(neurons) != n_neurons:
            problems.append(
                f"{len(neurons)} neuron ids in {neuron_file} but the array has {n_neurons} neurons "
                f"(last axis of shape {array.shape})"
            )
    if array.ndim in (2, 3) and len(ids) != array.shape[0]:
        problems.append(
            f"{len(ids)} stimulus ids in {ids_path} but the array has {array.shape[0]} stimuli "
            f"(first axis of shape {array.shape})"
        )
    if problems:
        raise DataError(path, problems)
    trials = array[:, None, :] if array.ndim == 2 else array
    return _checked(path, ids, neurons, trials, [])


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


def _load_netcdf(path: Path) -> Responses:
    """A BrainIO-style ``presentation × neuroid`` assembly; repeated stimulus ids are trials."""
    xr = _import_xarray()
    try:
        with xr.open_dataset(path) as dataset:
            dataset = dataset.load()
    except Exception as err:  # noqa: BLE001 - each backend raises its own types for unreadable files
        raise DataError(path, [f"cannot read as NetCDF: {type(err).__name__}: {err}"]) from None
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
    data = data.squeeze("time_bin", drop=True) if "time_bin" in data.dims else data
    data = data.transpose(*NETCDF_DIMS)
    row_ids = _as_strings(data["stimulus_id"].values)
    neurons = _as_strings(data["neuroid_id"].values if "neuroid_id" in data.coords else data["neuroid"].values)
    repetition = data["repetition"].values if "repetition" in data.coords else None
    if repetition is not None:
        problems += _duplicate_repetitions(row_ids, repetition)
    ids, trials = _stack_trials(np.asarray(data.values), _trial_groups(row_ids, repetition))
    return _checked(path, ids, neurons, trials, problems)


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
    dims = [d for d in data.dims if not (d == "time_bin" and data.sizes[d] == 1)]
    if sorted(map(str, dims)) != sorted(NETCDF_DIMS):
        problems.append(
            f"dims are {tuple(data.dims)}; expected presentation × neuroid "
            "(either order; plus time_bin only if it has size 1)"
        )
    if data.dtype.kind not in "iuf":
        problems.append(f"dtype {data.dtype} is not a real number type (need integers or floats)")
    for coord, dim in (("stimulus_id", "presentation"), ("repetition", "presentation"), ("neuroid_id", "neuroid")):
        if coord in data.coords and data[coord].dims != (dim,):
            problems.append(f"coordinate {coord} must lie along {dim}; it has dims {data[coord].dims}")
    if "stimulus_id" not in data.coords:
        problems.append("no stimulus_id coordinate on the presentation dim")
    return problems


def _as_strings(values: np.ndarray) -> list[str]:
    """Coordinate values as ``str`` (bytes decoded as UTF-8)."""
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values.tolist()]


def _duplicate_repetitions(row_ids: Sequence[str], repetition: np.ndarray) -> list[str]:
    """One problem per (stimulus id, repetition) pair that occurs more than once."""
    seen: set[tuple[str, object]] = set()
    problems = []
    for sid, rep in zip(row_ids, repetition.tolist()):
        if (sid, rep) in seen:
            problems.append(f"stimulus_id {sid!r}: repetition {rep!r} appears more than once")
        seen.add((sid, rep))
    return problems


def _trial_groups(row_ids: Sequence[str], order: np.ndarray | None = None) -> dict[str, list[int]]:
    """Row indices of each stimulus id, stimuli in order of first appearance, trials in row order or by ``order``."""
    groups: dict[str, list[int]] = {}
    for row, sid in enumerate(row_ids):
        groups.setdefault(sid, []).append(row)
    if order is not None:
        keys = order.tolist()
        groups = {sid: sorted(rows, key=lambda r: keys[r]) for sid, rows in groups.items()}
    return groups


def _stack_trials(rows: np.ndarray, groups: dict[str, list[int]]) -> tuple[list[str], np.ndarray]:
    """Rows ``[T, N]`` grouped into NaN-padded trials ``[S, R, N]``, R the most trials of any stimulus."""
    n_repeats = max((len(g) for g in groups.values()), default=1)
    dtype = np.result_type(rows.dtype, np.float32)  # float64 data stay float64 until checked
    trials = np.full((len(groups), n_repeats, rows.shape[1]), np.nan, dtype=dtype)
    for s, members in enumerate(groups.values()):
        trials[s, : len(members)] = rows[members]
    return list(groups), trials


def _infinite_values(ids: Sequence[str], neurons: Sequence[str], trials: np.ndarray) -> list[str]:
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


def _checked(
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
        problems += _infinite_values(ids, neurons, trials)
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
