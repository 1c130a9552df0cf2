"""The headers of responses files: what each one declares, checked before (or without) reading its values.

Every responses reader (:func:`sharedattr.data.responses.load_responses`) runs the header check of its format here
first, and ``sharedattr validate`` runs the same checks alone (:func:`inspect_responses`), so that whatever a fit
would refuse on a file's header, validate refuses first, with the same message. A header is what can be read without
the response values: the format chosen by the suffix, a CSV's header row and its stimulus id column, a ``.npy``
array's shape and dtype (memory-mapped) with its id and time bin lists, a NetCDF assembly's dims, coordinates and
time bins, an HDF5 PSTH file's datasets and bins (:func:`~sharedattr.data.psth.hdf5_header`), an NWB file's
presentations table and Units table (:func:`~sharedattr.data.nwb.nwb_header`). The time bins are checked against
``data.time_window`` (:func:`~sharedattr.data.psth.window_bins`): a window that holds no bin, several bins without a
window, a window on responses without bins. Memory stays bounded by the id lists: no response matrix is read.

Every check takes a :class:`~sharedattr.data.naming.Naming` (``naming``), through which its messages name the
settings they report: :data:`~sharedattr.data.naming.CONFIG` (``data.time_window``), the default, for a config, so
that validate's messages are fit's; the Python arguments (``load_responses(time_window=...)``) for
:func:`sharedattr.load_responses`.
"""

from __future__ import annotations

import contextlib
import csv
import inspect
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from sharedattr.data.naming import CONFIG, Naming
from sharedattr.data.psth import bin_edges, chosen_bins, npy_bins, window_bins
from sharedattr.data.trials import as_strings, dims_problem, shorter_window, size_problem
from sharedattr.runtime.errors import DataError, MissingFileError, UserError

NETCDF_DIMS = ("presentation", "neuroid")
FORMATS = {".csv": "CSV", ".npy": "NPY", ".nc": "NetCDF", ".h5": "HDF5 PSTH", ".hdf5": "HDF5 PSTH", ".nwb": "NWB"}
"""The responses formats by file suffix."""


@dataclass(frozen=True)
class ResponsesHeader:
    """What a responses file declares, read without its values: its ``format`` (a value of :data:`FORMATS`), the
    stimulus ids (in order of first appearance, each once), the neuron ids, and ``detail``: its shape and time bins
    in words."""

    path: Path
    format: str
    ids: tuple[str, ...]
    neuron_ids: tuple[str, ...]
    detail: str

    def describe(self) -> str:
        """One line: ``responses.nc (NetCDF): 36 stimuli × 8 neurons; 30 time bin(s) ...``."""
        detail = f"; {self.detail}" if self.detail else ""
        return f"{self.path.name} ({self.format}): {len(self.ids)} stimuli × {len(self.neuron_ids)} neurons{detail}"


def no_bins(naming: Naming = CONFIG, settings: tuple[str, ...] = ("time_window",)) -> str:
    """The problem of a window (or bin list: ``settings``) given for responses without time bins, naming the
    settings as ``naming`` does.

    Example::

        >>> no_bins(settings=("time_window", "time_bins")).split(" applies")[0]
        'data.time_window (or data.time_bins)'
        >>> from sharedattr.data.naming import arguments
        >>> no_bins(arguments("load_responses")).split(" applies")[0]
        'load_responses(time_window=...)'
    """
    given = " (or ".join(naming(s) for s in settings) + ")" * (len(settings) - 1)
    return (
        f"{given} applies to time-binned responses (a NetCDF time_bin dim, PSTH arrays, NWB spike times); "
        "these responses have no time bins: remove it"
    )


def existing(path: str | Path, what: str = "responses file") -> Path:
    """``path`` as a Path; :class:`MissingFileError` unless it is a file."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(path, what)
    return path


def response_format(
    path: Path,
    *,
    ids_path: str | Path | None = None,
    neuron_ids_path: str | Path | None = None,
    time_window: tuple[float, float] | None = None,
    time_bins_path: str | Path | None = None,
    naming: Naming = CONFIG,
) -> str:
    """The suffix of a responses file whose format and companion files agree (module docstring of
    :mod:`sharedattr.data.responses`); :class:`DataError` otherwise, naming the settings as ``naming`` does."""
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return suffix
    if ids_path is not None or neuron_ids_path is not None or time_bins_path is not None:
        raise DataError(
            path,
            [
                f"{naming('response_ids')}, {naming('neuron_ids')} and {naming('time_bins')} apply only to .npy "
                "responses; this file carries its own ids and bins"
            ],
        )
    if suffix == ".nwb":
        return suffix
    if time_window is not None and suffix == ".csv":
        raise DataError(path, [no_bins(naming)])
    if suffix not in FORMATS:
        raise DataError(
            path,
            [
                f"unsupported responses format {path.suffix!r}; use .csv, .npy (with a stimulus id list), .nc (NetCDF "
                "assembly), .h5 (PSTH arrays) or .nwb"
            ],
        )
    return suffix


def inspect_responses(
    path: str | Path,
    *,
    ids_path: str | Path | None = None,
    neuron_ids_path: str | Path | None = None,
    time_window: tuple[float, float] | None = None,
    time_bins_path: str | Path | None = None,
    nwb_table: str | None = None,
    naming: Naming = CONFIG,
) -> ResponsesHeader:
    """The header of a responses file, checked as :func:`~sharedattr.data.responses.load_responses` checks it
    before it reads any value (same arguments, same errors), without reading the values. ``naming``: how the errors
    name the settings (a config's fields by default; :mod:`sharedattr.data.naming`).

    Example::

        >>> header = inspect_responses("session.nwb", time_window=(70, 170))  # doctest: +SKIP
        >>> header.format, len(header.ids), len(header.neuron_ids)  # doctest: +SKIP
        ('NWB', 120, 96)
    """
    path = existing(path)
    files = {"ids_path": ids_path, "neuron_ids_path": neuron_ids_path, "time_bins_path": time_bins_path}
    suffix = response_format(path, time_window=time_window, naming=naming, **files)
    kind = FORMATS[suffix]
    if suffix == ".csv":
        neurons, row_ids = csv_header(path)
        return ResponsesHeader(path, kind, _unique(row_ids), tuple(neurons), f"{len(row_ids)} rows (trials)")
    if suffix == ".npy":
        header = npy_header(path, ids_path, neuron_ids_path, time_window, time_bins_path, naming)
        return ResponsesHeader(path, kind, tuple(header.ids), tuple(header.neurons), header.detail)
    if suffix == ".nc":
        with opened_assembly(path) as dataset:
            assembly = assembly_header(dataset, path, time_window, naming)
            data = assembly.data
            row_ids = as_strings(data["stimulus_id"].values)
            neurons = as_strings(data["neuroid_id"].values if "neuroid_id" in data.coords else data["neuroid"].values)
        detail = f"{len(row_ids)} presentations" + (f"; {assembly.described}" if assembly.described else "")
        return ResponsesHeader(path, kind, _unique(row_ids), tuple(neurons), detail)
    if suffix in (".h5", ".hdf5"):
        from sharedattr.data.psth import hdf5_header, open_hdf5

        with open_hdf5(path) as f:
            found = hdf5_header(f, path, time_window, naming)
            shape = f"psth {tuple(found.psth.shape)}"
        return ResponsesHeader(path, kind, tuple(found.ids), tuple(found.neurons), f"{shape}; {found.described}")
    from sharedattr.data.nwb import nwb_header, open_nwb

    with open_nwb(path) as nwbfile:
        found = nwb_header(nwbfile, path, time_window, nwb_table, "stimulus_id", naming)
    return ResponsesHeader(path, kind, _unique(found.row_ids), tuple(found.neurons), found.describe())


def _unique(ids: list[str]) -> tuple[str, ...]:
    """Ids each once, in order of first appearance."""
    return tuple(dict.fromkeys(ids))


# -- CSV -------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def csv_rows(path: Path) -> Iterator[Iterator[list[str]]]:
    """The rows of a responses CSV, read lazily; :class:`DataError` when it is not UTF-8 or not CSV."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            yield csv.reader(f)
    except UnicodeDecodeError as err:
        raise DataError(path, [f"not UTF-8 text: {err}"]) from None
    except csv.Error as err:
        raise DataError(path, [f"not a readable CSV file: {err}"]) from None


def check_csv_header(path: Path, first: list[str] | None) -> list[str]:
    """The neuron ids of a responses CSV's first row ``first`` (None for an empty file); :class:`DataError` unless it
    is the header ``stimulus_id, <neuron id>, ...``."""
    if not first or first[0].strip() != "stimulus_id" or len(first) < 2:
        raise DataError(path, ["the first row must be a header: stimulus_id, <neuron id>, <neuron id>, ..."])
    return [h.strip() for h in first[1:]]


def csv_header(path: Path) -> tuple[list[str], list[str]]:
    """The neuron ids of a responses CSV and the stimulus id of each row (its first cell; empty rows skipped): the
    rows are streamed, and no value is parsed."""
    with csv_rows(path) as rows:
        neurons = check_csv_header(path, next(rows, None))
        row_ids = [row[0].strip() for row in rows if row]
    return neurons, row_ids


# -- NPY -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NPYHeader:
    """A ``.npy`` responses array, memory-mapped (unread), with its stimulus ids, neuron ids and, for a PSTH, the
    indices of the bins inside the window (None for ``[S, N]`` and ``[S, R, N]``); ``detail`` in words."""

    array: np.ndarray
    ids: list[str]
    neurons: list[str]
    bins: np.ndarray | None
    detail: str


def npy_header(
    path: Path,
    ids_path: str | Path | None,
    neuron_ids_path: str | Path | None,
    time_window: tuple[float, float] | None = None,
    time_bins_path: str | Path | None = None,
    naming: Naming = CONFIG,
) -> NPYHeader:
    """The header of a ``.npy`` responses array (``[S, N]``, ``[S, R, N]`` or a PSTH ``[S, R, T, N]`` with its time
    bins), memory-mapped: shape, dtype, id lists and bins checked, every problem listed in one :class:`DataError`
    naming the settings as ``naming`` does."""
    if ids_path is None:
        raise DataError(
            path,
            [
                f"a .npy responses file needs {naming('response_ids')}: a text file with one stimulus id per line "
                "(in the order of the array's first axis)"
            ],
        )
    ids, problems = read_id_list(existing(ids_path, "stimulus id list"))
    array = _mapped(path)
    if array.dtype.kind not in "iuf":
        problems.append(f"dtype {array.dtype} is not a real number type (need integers or floats)")
    if array.ndim not in (2, 3, 4):
        problems.append(f"array has shape {array.shape}; expected [S, N], [S, R, N] or a PSTH [S, R, T, N]")
    elif array.ndim < 4 and (time_window is not None or time_bins_path is not None):
        problems.append(no_bins(naming, ("time_window", "time_bins")))
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
        neuron_file = existing(neuron_ids_path, "neuron id list")
        neurons, neuron_problems = read_id_list(neuron_file)
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
    detail = f"array {array.dtype} {tuple(array.shape)}"
    bins = None
    if array.ndim == 4:
        bins_file = None if time_bins_path is None else existing(time_bins_path, "time bin list")
        bins, described = npy_bins(array.shape, array.dtype.itemsize, bins_file, time_window, path, naming)
        detail += f"; {described}"
    return NPYHeader(array, ids, neurons, bins, detail)


def _mapped(path: Path) -> np.ndarray:
    """The ``.npy`` array at ``path``, memory-mapped (nothing read but its header); :class:`DataError` for a pickle,
    an archive, a truncated or unreadable file."""
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
    return array


def read_id_list(path: Path) -> tuple[list[str], list[str]]:
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


# -- NetCDF ----------------------------------------------------------------------------------------------
def import_xarray() -> ModuleType:
    """The xarray module, or a :class:`UserError` saying how to install it."""
    try:
        import xarray
    except ImportError:
        raise UserError(
            "reading NetCDF responses (.nc) needs xarray and a NetCDF backend: "
            "install sharedattr[xarray] (pip install 'sharedattr[xarray]')"
        ) from None
    return xarray


@contextlib.contextmanager
def opened_assembly(path: Path) -> Iterator[Any]:
    """The NetCDF file at ``path`` as a lazily opened ``xarray.Dataset`` (nothing read but its metadata; its declared
    dims checked first); :class:`DataError` when it cannot be read, also while the block reads it."""
    xr = import_xarray()
    too_long = _hdf5_dims_problems(path)
    if too_long:
        raise DataError(path, too_long)
    try:
        dataset = xr.open_dataset(path, cache=False, **_lazy_open_options(xr))
    except Exception as err:  # noqa: BLE001 - each backend raises its own types for unreadable files
        raise DataError(path, [f"cannot read as NetCDF: {type(err).__name__}: {err}"]) from None
    with dataset:
        try:
            yield dataset
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
    parameters = inspect.signature(xr.open_dataset).parameters
    return {"create_default_indexes": False} if "create_default_indexes" in parameters else {}


@dataclass(frozen=True)
class AssemblyHeader:
    """A NetCDF assembly's data variable (lazy, unread), transposed to ``presentation × time_bin × neuroid`` or
    ``presentation × neuroid``; the indices of the bins inside the window (None without a ``time_bin`` dim) and
    ``described``, the bins in words ('' without)."""

    data: Any
    bins: np.ndarray | None
    described: str


def assembly_header(
    dataset: Any, path: Path, time_window: tuple[float, float] | None, naming: Naming = CONFIG
) -> AssemblyHeader:
    """The header of a lazily opened BrainIO-style assembly: one data variable, its dims, dtype and coordinates, its
    time bins against ``time_window`` and the size of the part to read; :class:`DataError` for the first failing
    step, naming the settings as ``naming`` does. Reads coordinates only."""
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
        data = data.transpose("presentation", "time_bin", "neuroid")
        bins, described = _assembly_bins(data, time_window, path, naming)
        return AssemblyHeader(data, bins, described)
    if time_window is not None:
        raise DataError(path, [no_bins(naming)])
    data = data.transpose(*NETCDF_DIMS)
    too_large = size_problem(f"variable {names[0]!r} {tuple(data.dims)}", data.shape, data.dtype.itemsize)
    if too_large:
        raise DataError(path, [too_large])
    return AssemblyHeader(data, None, "")


def _assembly_bins(data: Any, window: tuple[float, float] | None, path: Path, naming: Naming) -> tuple[np.ndarray, str]:
    """The bins inside ``window`` of an assembly ``[presentation, time_bin, neuroid]`` (a single bin needs no window
    and no bin coordinates), after the size of the part to read was checked; and their description."""
    variable = f"variable {data.name!r} (presentation, time_bin, neuroid)"
    n_rows, n_bins, n_neurons = data.shape
    if n_bins == 1 and window is None:
        bins, described = np.array([0]), "one time bin, no window"
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
        described = chosen_bins(starts, ends, bins, window, naming)
    lo, hi = int(bins.min()), int(bins.max()) + 1
    itemsize = data.dtype.itemsize
    too_large = size_problem(variable, data.shape, itemsize, (n_rows, hi - lo, n_neurons), shorter_window(naming))
    too_large = too_large or size_problem(f"{variable} (averaged, in float64)", (n_rows, n_neurons), 8)
    if too_large:
        raise DataError(path, [too_large])
    return bins, described


def _assembly_problems(data: Any) -> list[str]:
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
