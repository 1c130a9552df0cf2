"""Recorded responses: CSV, NPY and NetCDF give the same trials; every data problem is named, all at once."""

from __future__ import annotations

import csv
import math
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sharedattr.data.responses import Responses, load_responses
from sharedattr.data.stimuli import StimulusSet
from sharedattr.runtime.errors import DataError, MissingFileError, UserError

IDS = ["s0", "s1", "s2", "s3", "s4"]
NEURONS = ["n_a", "n_b", "n_c"]
COUNTS = [3, 2, 1, 3, 2]  # trials per stimulus


@pytest.fixture
def trials() -> np.ndarray:
    """Trials ``[5, 3, 3]``: NaN-padded beyond each stimulus's count, one missing value (s0, trial 1, n_b)."""
    rng = np.random.default_rng(0)
    out = np.full((len(IDS), max(COUNTS), len(NEURONS)), np.nan, dtype=np.float32)
    for s, count in enumerate(COUNTS):
        out[s, :count] = rng.normal(size=(count, len(NEURONS))).round(4)
    out[0, 1, 1] = np.nan
    return out


def cell(v: float) -> str:
    return "" if math.isnan(v) else repr(float(v))


def write_csv(path: Path, trials: np.ndarray, ids=IDS, neurons=NEURONS) -> Path:
    """One row per trial, trials interleaved across stimuli (row order gives the trial order)."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["stimulus_id", *neurons])
        for t in range(trials.shape[1]):
            for s, sid in enumerate(ids):
                if t < COUNTS[s]:
                    writer.writerow([sid, *(cell(v) for v in trials[s, t])])
    return path


def write_npy(folder: Path, array: np.ndarray, ids=IDS, neurons=NEURONS) -> tuple[Path, Path, Path]:
    np.save(folder / "responses.npy", array)
    (folder / "ids.txt").write_text("\n".join(ids) + "\n")
    (folder / "neurons.txt").write_text("\n".join(neurons) + "\n")
    return folder / "responses.npy", folder / "ids.txt", folder / "neurons.txt"


def assembly(trials: np.ndarray, *, shuffle: bool = True):
    """A BrainIO-style DataArray ``neuroid × presentation × time_bin``, presentations shuffled."""
    xr = pytest.importorskip("xarray", reason="optional extra: pip install sharedattr[xarray]")
    rows = [(IDS[s], t, trials[s, t]) for s in range(len(IDS)) for t in range(COUNTS[s])]
    if shuffle:
        rows = [rows[i] for i in np.random.default_rng(1).permutation(len(rows))]
    values = np.stack([r[2] for r in rows]).T[:, :, None]  # [N, P, 1]
    return xr.DataArray(
        values,
        dims=("neuroid", "presentation", "time_bin"),
        coords={
            "stimulus_id": ("presentation", [r[0] for r in rows]),
            "repetition": ("presentation", [r[1] for r in rows]),
            "neuroid_id": ("neuroid", NEURONS),
        },
        name="responses",
    )


def write_nc(path: Path, data) -> Path:
    data.to_netcdf(path, engine="h5netcdf")
    return path


def stimulus_set(ids: list[str]) -> StimulusSet:
    return StimulusSet(tuple(ids), tuple(Path(f"{i}.png") for i in ids), ("c",) * len(ids), (None,) * len(ids))


def test_three_formats_give_identical_responses(tmp_path, trials):
    from_csv = load_responses(write_csv(tmp_path / "r.csv", trials))
    npy, ids, neurons = write_npy(tmp_path, trials)
    from_npy = load_responses(npy, ids_path=ids, neuron_ids_path=neurons)
    from_nc = load_responses(write_nc(tmp_path / "r.nc", assembly(trials, shuffle=False)))
    for loaded in (from_csv, from_npy, from_nc):
        assert loaded.ids == tuple(IDS) and loaded.neuron_ids == tuple(NEURONS)
        assert loaded.trials.dtype == torch.float32
        torch.testing.assert_close(loaded.trials, torch.from_numpy(trials), equal_nan=True)
    assert from_csv.source == str(tmp_path / "r.csv")


def test_netcdf_repetition_orders_shuffled_presentations(tmp_path, trials):
    recorded = load_responses(write_nc(tmp_path / "r.nc", assembly(trials)))
    assert sorted(recorded.ids) == IDS  # stimuli in order of first presentation
    in_order = recorded.trials_aligned_to(stimulus_set(IDS))
    torch.testing.assert_close(in_order, torch.from_numpy(trials), equal_nan=True)


def test_means_repeat_counts_and_alignment(tmp_path, trials):
    recorded = load_responses(write_csv(tmp_path / "r.csv", trials))
    torch.testing.assert_close(recorded.values, torch.from_numpy(np.nanmean(trials, axis=1)))
    expected_counts = torch.tensor(COUNTS)[:, None].repeat(1, 3)
    expected_counts[0, 1] -= 1  # the missing value
    assert torch.equal(recorded.n_repeats, expected_counts)
    assert recorded.has_repeats

    stimuli = stimulus_set(["extra", *reversed(IDS)])
    means = recorded.aligned_to(stimuli)
    assert means.shape == (6, 3) and torch.isnan(means[0]).all()
    torch.testing.assert_close(means[1:], recorded.values.flip(0))
    aligned = recorded.trials_aligned_to(stimuli)
    assert aligned.shape == (6, 3, 3) and torch.isnan(aligned[0]).all()
    torch.testing.assert_close(aligned[1:], recorded.trials.flip(0), equal_nan=True)


def test_npy_without_repeats_defaults_neuron_ids(tmp_path):
    values = np.arange(6, dtype=np.int64).reshape(3, 2)
    np.save(tmp_path / "r.npy", values)
    (tmp_path / "ids.txt").write_text("a\nb\nc\n\n")
    recorded = load_responses(tmp_path / "r.npy", ids_path=tmp_path / "ids.txt")
    assert recorded.neuron_ids == ("0", "1") and recorded.trials.shape == (3, 1, 2)
    assert not recorded.has_repeats
    torch.testing.assert_close(recorded.values, torch.tensor(values, dtype=torch.float32))


def test_netcdf_in_presentation_order_without_repetition_or_neuroid_id(tmp_path, trials):
    data = assembly(trials, shuffle=False).drop_vars(["repetition", "neuroid_id"]).squeeze("time_bin")
    recorded = load_responses(write_nc(tmp_path / "r.nc", data.to_dataset()))
    assert recorded.neuron_ids == ("0", "1", "2")
    torch.testing.assert_close(recorded.trials, torch.from_numpy(trials), equal_nan=True)


def test_unknown_stimulus_ids_on_alignment_are_all_listed(tmp_path, trials):
    path = write_csv(tmp_path / "r.csv", trials)
    with pytest.raises(DataError) as info:
        load_responses(path).aligned_to(stimulus_set(["s0", "s1", "s3"]))
    message = str(info.value)
    assert message.startswith(f"{path}: 2 problem(s)")
    assert "stimulus_id 's2' is not in the stimulus set" in message and "'s4'" in message
    with pytest.raises(DataError, match="'s2' is not in the stimulus set"):
        load_responses(path).trials_aligned_to(stimulus_set(["s0"]))


def test_missing_files(tmp_path, trials):
    with pytest.raises(MissingFileError, match="responses file not found: .*nope.csv"):
        load_responses(tmp_path / "nope.csv")
    npy, _, _ = write_npy(tmp_path, trials)
    with pytest.raises(MissingFileError, match="stimulus id list not found: .*ghost.txt"):
        load_responses(npy, ids_path=tmp_path / "ghost.txt")


CSV_CASES = {
    "non-numeric": ("stimulus_id,n_a,n_b\ns0,1,2\ns1,abc,2\n", ["line 3, neuron n_a: not a number: 'abc'"]),
    "digit separators": (
        "stimulus_id,n_a,n_b\ns0,1_000,2\ns1,1,\u0661\u0662\n",  # float() reads both: 1000.0 and 12.0
        ["line 2, neuron n_a: not a number: '1_000'", "line 3, neuron n_b: not a number: '\u0661\u0662'"],
    ),
    "infinite": ("stimulus_id,n_a,n_b\ns0,1,inf\ns1,1,2\n", ["line 2, neuron n_b: infinite response"]),
    "duplicate neuron": ("stimulus_id,n_a,n_a\ns0,1,2\n", ["duplicate neuron id(s): 'n_a'"]),
    "field count": ("stimulus_id,n_a,n_b\ns0,1\ns1,1,2\n", ["line 2: 2 fields, expected 3"]),
    "empty file": ("", ["the first row must be a header"]),
    "no rows": ("stimulus_id,n_a\n", ["no responses: the file holds no stimuli"]),
    "all-NaN neuron": ("stimulus_id,n_a,n_b\ns0,1,nan\ns0,2,\ns1,3,NA\n", ["neuron n_b: no valid (non-NaN) response"]),
    "all at once": (
        "stimulus_id,n_a,n_b,n_c\ns0,x,1,2\ns1,1,-inf,3\ns2,1\n,1,2,3\n",
        [
            "4 problem(s)",
            "line 2, neuron n_a: not a number: 'x'",
            "line 3, neuron n_b: infinite response",
            "line 4: 2 fields, expected 4",
            "line 5: empty stimulus_id",
        ],
    ),
}


@pytest.mark.parametrize("case", CSV_CASES)
def test_csv_problems_name_the_file(tmp_path, case):
    text, expected = CSV_CASES[case]
    path = tmp_path / "responses.csv"
    path.write_text(text)
    with pytest.raises(DataError) as info:
        load_responses(path)
    assert str(info.value).startswith(f"{path}: ")
    for fragment in expected:
        assert fragment in str(info.value)


class _WritesMarker:
    """Unpickling this would create ``marker``: proof that a loader unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _npy_case(tmp_path: Path, name: str) -> tuple[dict, list[str]]:
    """Write a broken NPY case; return the load_responses keywords and the expected message fragments."""
    good = np.zeros((3, 2, 2), dtype=np.float32)
    path, ids, neurons = write_npy(tmp_path, good, ids=["a", "b", "c"], neurons=["x", "y"])
    kwargs = {"path": path, "ids_path": ids, "neuron_ids_path": neurons}
    if name == "no ids":
        del kwargs["ids_path"]
        return kwargs, ["needs data.response_ids: a text file with one stimulus id per line"]
    if name == "stimulus count":
        ids.write_text("a\nb\n")
        return kwargs, [f"2 stimulus ids in {ids} but the array has 3 stimuli"]
    if name == "neuron count":
        neurons.write_text("x\ny\nz\n")
        return kwargs, [f"3 neuron ids in {neurons} but the array has 2 neurons"]
    if name == "duplicate ids":
        ids.write_text("a\n\na\n")
        return kwargs, [f"{ids}, line 2: empty id", f"{ids}, line 3: duplicate id 'a' (first on line 1)"]
    if name == "infinite":
        good[1, 0, 1] = -np.inf
        good[2, 1, 1] = np.inf
        np.save(path, good)
        return kwargs, ["neuron y: 2 infinite value(s), first for stimulus_id 'b'"]
    if name == "all-NaN neuron":
        good[:, :, 0] = np.nan
        np.save(path, good)
        return kwargs, ["neuron x: no valid (non-NaN) response"]
    if name == "empty":
        np.save(path, np.zeros((0, 2)))
        ids.write_text("")
        return kwargs, ["no responses: the file holds no stimuli"]
    if name == "wrong rank":
        np.save(path, np.zeros(3))
        return kwargs, ["array has shape (3,); expected [S, N], [S, R, N] or a PSTH [S, R, T, N]"]
    if name == "strings":
        np.save(path, np.array([["1", "2"]] * 3))
        return kwargs, ["dtype <U1 is not a real number type"]
    if name == "object array":
        np.save(path, np.array([[_WritesMarker(tmp_path / "unpickled"), 1]] * 3, dtype=object), allow_pickle=True)
        return kwargs, ["holds Python objects (pickled data); sharedattr never unpickles"]
    if name == "raw pickle":
        path.write_bytes(pickle.dumps(_WritesMarker(tmp_path / "unpickled")))
        return kwargs, ["holds Python objects (pickled data); sharedattr never unpickles"]
    raise AssertionError(name)


@pytest.mark.parametrize(
    "case",
    [
        "no ids",
        "stimulus count",
        "neuron count",
        "duplicate ids",
        "infinite",
        "all-NaN neuron",
        "empty",
        "wrong rank",
        "strings",
        "object array",
        "raw pickle",
    ],
)
def test_npy_problems_name_the_file(tmp_path, case):
    kwargs, expected = _npy_case(tmp_path, case)
    path = kwargs.pop("path")
    with pytest.raises(DataError) as info:
        load_responses(path, **kwargs)
    assert str(info.value).startswith(f"{path}: ")
    for fragment in expected:
        assert fragment in str(info.value)
    assert not (tmp_path / "unpickled").exists()


def _nc_case(trials: np.ndarray, name: str) -> tuple[object, list[str]]:
    """A broken assembly (DataArray or Dataset) and the expected message fragments."""
    data = assembly(trials)
    if name == "no stimulus_id":
        return data.drop_vars("stimulus_id"), ["no stimulus_id coordinate on the presentation dim"]
    if name == "wrong dims":
        return data.rename(neuroid="unit"), ["dims are ('unit', 'presentation', 'time_bin'); expected presentation"]
    if name == "time bins":
        wide = data.isel(time_bin=[0, 0]).assign_coords(time_bin=[0, 1])
        return wide, ["the time_bin dim (2 bins) needs the coordinates time_bin_start and time_bin_end"]
    if name == "two variables":
        return data.to_dataset().assign(other=data), ["expected exactly one data variable (the assembly); found 2"]
    if name == "infinite":
        data[0, 3, 0] = np.inf
        return data, ["neuron n_a: 1 infinite value(s)"]
    if name == "duplicate repetition":
        return data.assign_coords(repetition=("presentation", np.zeros(data.sizes["presentation"], int))), [
            "stimulus_id 's0': repetition 0 appears more than once"
        ]
    raise AssertionError(name)


@pytest.mark.parametrize(
    "case", ["no stimulus_id", "wrong dims", "time bins", "two variables", "infinite", "duplicate repetition"]
)
def test_netcdf_problems_name_the_file(tmp_path, trials, case):
    data, expected = _nc_case(trials, case)
    path = write_nc(tmp_path / "r.nc", data)
    with pytest.raises(DataError) as info:
        load_responses(path)
    assert str(info.value).startswith(f"{path}: ")
    for fragment in expected:
        assert fragment in str(info.value)


def test_unreadable_netcdf_and_other_formats(tmp_path):
    (tmp_path / "r.nc").write_text("not netcdf")
    with pytest.raises(DataError, match="cannot read as NetCDF"):
        load_responses(tmp_path / "r.nc")
    (tmp_path / "r.txt").write_text("x")
    with pytest.raises(DataError, match=r"unsupported responses format '\.txt'"):
        load_responses(tmp_path / "r.txt")
    (tmp_path / "r.csv").write_text("stimulus_id,n\na,1\n")
    with pytest.raises(DataError, match="data.response_ids, data.neuron_ids and data.time_bins apply only to .npy"):
        load_responses(tmp_path / "r.csv", ids_path=tmp_path / "r.txt")


def test_netcdf_without_xarray_says_what_to_install(tmp_path, monkeypatch):
    (tmp_path / "r.nc").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "xarray", None)  # makes `import xarray` raise ImportError
    with pytest.raises(UserError, match=r"install sharedattr\[xarray\]"):
        load_responses(tmp_path / "r.nc")


def test_responses_checks_its_shapes():
    with pytest.raises(ValueError, match=r"float32 tensor \[S, R, N\]"):
        Responses(torch.zeros(2, 3), ("a", "b"), ("n", "m", "o"))
    with pytest.raises(ValueError, match="do not match"):
        Responses(torch.zeros(2, 1, 3), ("a",), ("n", "m", "o"))
    with pytest.raises(ValueError, match="unique"):
        Responses(torch.zeros(2, 1, 1), ("a", "a"), ("n",))
