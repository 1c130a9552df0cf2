"""NWB recordings: spikes of the Units table counted in a window after each presentation, as spikes/s."""

from __future__ import annotations

import math
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
import torch

pynwb = pytest.importorskip("pynwb", reason="optional extra: pip install sharedattr[nwb]")

from pynwb import NWBHDF5IO, NWBFile  # noqa: E402
from pynwb.epoch import TimeIntervals  # noqa: E402
from pynwb.misc import Units  # noqa: E402

from sharedattr.data.nwb import load_nwb  # noqa: E402
from sharedattr.runtime.errors import DataError, UserError  # noqa: E402

WINDOW = (70.0, 170.0)  # ms: 0.1 s, so a rate is 10 x the spike count
START, END = WINDOW[0] / 1000, WINDOW[1] / 1000  # window edges in s, computed as the loader does
# Presentations (onset s, stimulus id), deliberately not in onset order: "a" at 1 s and 5 s, "b" at 2 s, "c" at 3 s.
PRESENTATIONS = [(5.0, "a"), (1.0, "a"), (3.0, "c"), (2.0, "b")]
UNITS = {
    11: [
        1.0 + START,  # a@1: exactly at the start: counted
        1.1,  # a@1: inside
        1.0 + END,  # a@1: exactly at the end: not counted
        1.0 + START - 1e-6,  # a@1: just before the start: not counted
        5.0 + START,  # a@5: at the start: counted
        2.5,  # b@2: after the window (2.07-2.17): not counted
    ],
    12: [],  # silent: all zero
    13: [3.16, 3.08, 3.12, 2.1, 0.5, 9.0],  # unsorted: c@3 gets 3, b@2 gets 1, 0.5 precedes every window; 9.0
    # follows every window: the file's last spike, so the recording is known to go on past the last window (without
    # obs_intervals a window ending after the last spike is refused)
}
# Expected rates [stimulus a, b, c] x [trial 0, 1] x [unit 11, 12, 13], spikes/s.
EXPECTED = np.array(
    [
        [[20.0, 0.0, 0.0], [10.0, 0.0, 0.0]],  # a: onset 1 s, then 5 s
        [[0.0, 0.0, 10.0], [math.nan] * 3],  # b: shown once
        [[0.0, 0.0, 30.0], [math.nan] * 3],  # c: shown once
    ]
)


def new_file() -> NWBFile:
    return NWBFile(
        session_description="test session",
        identifier="sharedattr-test",
        session_start_time=datetime(2024, 1, 1, tzinfo=timezone.utc),
    )


def add_units(nwbfile: NWBFile, units: dict[int, list[float]] = UNITS) -> None:
    for unit_id, spikes in units.items():
        nwbfile.add_unit(spike_times=spikes, id=unit_id)


def add_trials(nwbfile: NWBFile, presentations=PRESENTATIONS, column: str = "stimulus_id") -> None:
    nwbfile.add_trial_column(column, "id of the image shown")
    for onset, sid in presentations:
        nwbfile.add_trial(start_time=onset, stop_time=onset + 0.5, **{column: sid})


def add_table(nwbfile: NWBFile, name: str, presentations=PRESENTATIONS, column: str = "stimulus_id") -> None:
    table = TimeIntervals(name=name, description="stimulus presentations")
    table.add_column(column, "id of the image shown")
    for onset, sid in presentations:
        table.add_row(start_time=onset, stop_time=onset + 0.5, **{column: sid})
    nwbfile.add_time_intervals(table)


def write(path: Path, nwbfile: NWBFile) -> Path:
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwbfile)
    return path


@pytest.fixture
def trials_file(tmp_path: Path) -> Path:
    """Three units; presentations in the trials table."""
    nwbfile = new_file()
    add_units(nwbfile)
    add_trials(nwbfile)
    return write(tmp_path / "trials.nwb", nwbfile)


@pytest.fixture
def presentations_file(tmp_path: Path) -> Path:
    """Three units; presentations in an intervals table "presentations"; a trials table without stimulus ids."""
    nwbfile = new_file()
    add_units(nwbfile)
    nwbfile.add_trial(start_time=0.0, stop_time=10.0)
    add_table(nwbfile, "presentations")
    return write(tmp_path / "presentations.nwb", nwbfile)


def problems_of(info: pytest.ExceptionInfo[DataError]) -> str:
    return "\n".join(info.value.problems)


def test_rates_count_spikes_in_the_window_start_inclusive_end_exclusive(trials_file: Path) -> None:
    responses = load_nwb(trials_file, WINDOW)
    np.testing.assert_array_equal(responses.trials.numpy(), EXPECTED.astype(np.float32))
    assert responses.trials.dtype == torch.float32
    assert responses.source == str(trials_file)


def test_repeats_are_trials_in_onset_order_and_unit_ids_are_neuron_ids(trials_file: Path) -> None:
    responses = load_nwb(trials_file, WINDOW)
    assert responses.ids == ("a", "b", "c")  # in order of first presentation, not of the rows
    assert responses.neuron_ids == ("11", "12", "13")
    assert responses.n_repeats[:, 0].tolist() == [2, 1, 1]  # b and c NaN-padded
    np.testing.assert_allclose(responses.values.numpy(), np.nanmean(EXPECTED, axis=1))


def test_window_scales_rates_to_spikes_per_second(trials_file: Path) -> None:
    responses = load_nwb(trials_file, (0.0, 500.0))  # 0.5 s after each onset
    assert responses.trials[0, 0, 0].item() == pytest.approx(4 / 0.5)  # a@1, unit 11: all four spikes in [1, 1.5)
    assert responses.trials[1, 0, 0].item() == 0.0  # b@2, unit 11: its spike at 2.5 is the window's end, excluded
    assert responses.trials[1, 0, 2].item() == pytest.approx(1 / 0.5)  # b@2, unit 13: 2.1


def test_presentations_table_found_when_trials_lack_the_column(presentations_file: Path) -> None:
    responses = load_nwb(presentations_file, WINDOW)
    np.testing.assert_array_equal(responses.trials.numpy(), EXPECTED.astype(np.float32))
    assert load_nwb(presentations_file, WINDOW, table="presentations").ids == ("a", "b", "c")


def test_explicit_table_and_stimulus_column(tmp_path: Path) -> None:
    nwbfile = new_file()
    add_units(nwbfile)
    add_trials(nwbfile, [(1.0, "t1")])  # the default: trials have the column
    add_table(nwbfile, "presentations", [(2.0, "p2"), (1.0, "p1")])
    add_table(nwbfile, "images", [(3.0, "i3")], column="image")
    path = write(tmp_path / "both.nwb", nwbfile)
    assert load_nwb(path, WINDOW).ids == ("t1",)
    chosen = load_nwb(path, WINDOW, table="presentations")
    assert chosen.ids == ("p1", "p2")
    np.testing.assert_array_equal(chosen.trials[:, 0].numpy(), EXPECTED[[0, 1], 0].astype(np.float32))
    by_column = load_nwb(path, WINDOW, stimulus_column="image")  # the one table with an "image" column
    assert by_column.ids == ("i3",)
    assert by_column.trials[0, 0].tolist() == EXPECTED[2, 0].tolist()  # onset 3 s, like stimulus c


def test_bytes_stimulus_ids_are_decoded(tmp_path: Path) -> None:
    nwbfile = new_file()
    add_units(nwbfile)
    add_trials(nwbfile, [(1.0, b"a"), (2.0, b"b")])
    assert load_nwb(write(tmp_path / "bytes.nwb", nwbfile), WINDOW).ids == ("a", "b")


def test_no_table_with_the_column_lists_every_table(presentations_file: Path) -> None:
    with pytest.raises(DataError) as info:
        load_nwb(presentations_file, WINDOW, stimulus_column="image")
    text = problems_of(info)
    assert str(presentations_file) in str(info.value)
    assert "no intervals table has a 'image' column" in text
    assert "trials (start_time, stop_time)" in text
    assert "presentations (start_time, stop_time, stimulus_id)" in text
    assert "name the presentations table to read (data.nwb_table" in text


def test_several_tables_with_the_column_need_a_name(tmp_path: Path) -> None:
    nwbfile = new_file()
    add_units(nwbfile)
    add_table(nwbfile, "presentations")
    add_table(nwbfile, "repeats", [(7.0, "a")])
    path = write(tmp_path / "two.nwb", nwbfile)
    with pytest.raises(DataError) as info:
        load_nwb(path, WINDOW)
    text = problems_of(info)
    assert "2 intervals tables have a 'stimulus_id' column" in text
    assert "presentations (start_time, stop_time, stimulus_id)" in text and "repeats (" in text
    assert "name the presentations table to read (data.nwb_table" in text
    assert load_nwb(path, WINDOW, table="repeats").ids == ("a",)


def test_explicit_table_missing_or_without_the_column(presentations_file: Path) -> None:
    with pytest.raises(DataError, match="no intervals table 'stimuli'.*presentations \\(start_time"):
        load_nwb(presentations_file, WINDOW, table="stimuli")
    with pytest.raises(DataError, match="intervals table 'trials' has no 'stimulus_id' column"):
        load_nwb(presentations_file, WINDOW, table="trials")


def test_bad_rows_and_missing_units_are_listed_at_once(tmp_path: Path) -> None:
    nwbfile = new_file()  # no units at all
    add_trials(nwbfile, [(1.0, "a"), (2.0, ""), (math.nan, "b"), (4.0, "  ")])
    path = write(tmp_path / "bad.nwb", nwbfile)
    with pytest.raises(DataError) as info:
        load_nwb(path, WINDOW)
    problems = info.value.problems
    assert len(problems) == 4, problems
    text = problems_of(info)
    assert "row 1 (id 1): empty stimulus_id" in text
    assert "row 3 (id 3): empty stimulus_id" in text
    assert "row 2 (id 2): start_time nan is not finite" in text
    assert "no Units table" in text
    assert str(path) in str(info.value)


def test_empty_units_table(tmp_path: Path) -> None:
    nwbfile = new_file()
    nwbfile.units = Units(name="units", description="no units")
    add_trials(nwbfile)
    with pytest.raises(DataError, match="no units: the Units table is empty"):
        load_nwb(write(tmp_path / "empty.nwb", nwbfile), WINDOW)


@pytest.mark.parametrize("content", [b"not an HDF5 file at all", None], ids=["garbage", "plain-hdf5"])
def test_unreadable_file(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "broken.nwb"
    if content is None:
        h5py = pytest.importorskip("h5py", reason="optional extra: pip install sharedattr[xarray]")
        with h5py.File(path, "w") as f:
            f["x"] = np.arange(3)
    else:
        path.write_bytes(content)
    with pytest.raises(DataError, match="cannot read as NWB") as info:
        load_nwb(path, WINDOW)
    assert str(path) in str(info.value)


def test_time_window_is_required_and_must_be_increasing(trials_file: Path) -> None:
    with pytest.raises(DataError) as info:
        load_nwb(trials_file, None)
    assert info.value.problems == ["NWB spike times need data.time_window = [start_ms, end_ms], e.g. [70, 170]"]
    for window in [(170.0, 70.0), (100.0, 100.0)]:
        with pytest.raises(DataError, match="must be greater than its start"):
            load_nwb(trials_file, window)


def test_from_python_the_errors_name_the_arguments(trials_file: Path) -> None:
    import sharedattr

    with pytest.raises(DataError) as info:
        sharedattr.load_responses(trials_file)
    assert info.value.problems == [
        "NWB spike times need load_responses(time_window=...) = [start_ms, end_ms], e.g. [70, 170]"
    ]
    with pytest.raises(DataError, match=r"no intervals table 'stimuli'"):
        sharedattr.load_responses(trials_file, time_window=WINDOW, nwb_table="stimuli")
    assert sharedattr.load_responses(trials_file, time_window=WINDOW).ids == load_nwb(trials_file, WINDOW).ids


def test_missing_window_is_listed_with_the_file_problems(tmp_path: Path) -> None:
    nwbfile = new_file()
    add_trials(nwbfile)
    with pytest.raises(DataError) as info:
        load_nwb(write(tmp_path / "nounits.nwb", nwbfile), None)
    text = problems_of(info)
    assert "data.time_window" in text and "no Units table" in text


def test_file_is_opened_read_only_and_closed(trials_file: Path, tmp_path: Path, monkeypatch) -> None:
    opened: list[tuple[str, str]] = []
    closed: list[bool] = []

    class Recording(NWBHDF5IO):
        def __init__(self, path, mode, *args, **kwargs):
            opened.append((path, mode))
            super().__init__(path, mode, *args, **kwargs)

        def close(self, *args, **kwargs):
            closed.append(True)
            super().close(*args, **kwargs)

    monkeypatch.setattr(pynwb, "NWBHDF5IO", Recording)
    load_nwb(trials_file, WINDOW)
    assert opened == [(str(trials_file), "r")] and closed
    nounits = new_file()
    add_trials(nounits)
    failing = write(tmp_path / "nounits.nwb", nounits)
    closed.clear()
    with pytest.raises(DataError):
        load_nwb(failing, WINDOW)
    assert closed


def test_without_pynwb_says_how_to_install(trials_file: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "pynwb", None)  # import pynwb now raises ImportError
    with pytest.raises(UserError, match=r"needs pynwb: install sharedattr\[nwb\]") as info:
        load_nwb(trials_file, WINDOW)
    assert not isinstance(info.value, DataError)


def test_an_nwb_recording_fits_through_a_config(tiny_data, tiny_config, tmp_path, one_thread) -> None:
    """Spikes placed so that each presentation's count in [0, 100) ms is round(10 × the CSV response): the run's
    neurons are the units, and the responses it fits are those counts / 0.1 s."""
    from sharedattr.config.validation import validate_experiment
    from sharedattr.data.responses import load_responses
    from sharedattr.experiment.run import run_experiment

    recorded = load_responses(tiny_data / "responses.csv")
    values = recorded.trials.numpy()  # [S, R, N]
    counts = np.nan_to_num(np.round(10 * np.clip(values, 0, None))).astype(int)
    nwbfile = new_file()
    presentations, spikes = [], {n: [] for n in range(values.shape[2])}
    onset = 1.0
    for s, sid in enumerate(recorded.ids):
        for r in range(values.shape[1]):
            if np.isnan(values[s, r]).all():
                continue
            presentations.append((onset, sid))
            for n in range(values.shape[2]):
                spikes[n] += list(onset + 0.001 + 0.098 * np.arange(counts[s, r, n]) / max(1, counts[s, r, n]))
                spikes[n].append(onset + 0.15)  # outside the window
            onset += 1.0
    add_units(nwbfile, {n: sorted(t) for n, t in spikes.items()})
    add_table(nwbfile, "presentations", presentations)
    path = write(tmp_path / "session.nwb", nwbfile)
    data = {**tiny_config["data"], "responses": str(path), "time_window": [0, 100], "nwb_table": "presentations"}
    spec = validate_experiment({**tiny_config, "data": data, "methods": ["saliency"], "metrics": ["gini"]})
    result = run_experiment(spec, tmp_path / "run", progress=False)
    assert list(result.neuron_ids) == [str(n) for n in range(values.shape[2])]
    loaded = load_responses(path, time_window=(0, 100), nwb_table="presentations")
    measured = ~np.isnan(values).all(axis=2)
    np.testing.assert_allclose(loaded.trials.numpy()[measured], (counts / 0.1)[measured])
    assert (tmp_path / "run" / "scores.csv").is_file()
