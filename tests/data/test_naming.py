"""The header checks name the user's settings as the caller spells them: ``data.<field>`` from a config (and from
``sharedattr validate``, whose messages are fit's), ``load_responses(<field>=...)`` from Python; one check each."""

from __future__ import annotations

import numpy as np
import pytest

import sharedattr
from sharedattr.data.inspection import inspect_responses
from sharedattr.data.responses import load_responses as read_as_config  # what a config's data table calls
from sharedattr.runtime.errors import DataError

IDS = ["s0", "s1", "s2"]
STARTS = np.arange(0, 100, 10.0)  # 10 bins of 10 ms


def npy_files(tmp_path, array: np.ndarray) -> dict:
    np.save(tmp_path / "r.npy", array)
    (tmp_path / "ids.txt").write_text("\n".join(IDS) + "\n")
    (tmp_path / "bins.txt").write_text("\n".join(f"{s:g}" for s in STARTS))
    return {"path": tmp_path / "r.npy", "ids": tmp_path / "ids.txt", "bins": tmp_path / "bins.txt"}


def h5_file(tmp_path) -> dict:
    h5py = pytest.importorskip("h5py", reason="optional extra: pip install sharedattr[xarray]")
    path = tmp_path / "r.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("psth", data=np.ones((3, 1, len(STARTS), 2)))
        f.create_dataset("stimulus_id", data=np.array(IDS, dtype="S"))
        f.create_dataset("neuroid_id", data=np.array(["a", "b"], dtype="S"))
        f.create_dataset("time_bin_start", data=STARTS)
    return {"path": path}


# (files, the settings given as (python kwargs, config kwargs), the message with {} for each named setting, settings)
CASES = {
    "npy without its stimulus id list": (
        lambda tmp: npy_files(tmp, np.ones((3, 2))),
        lambda f: ({}, {}),
        "a .npy responses file needs {}: a text file with one stimulus id per line",
        ["response_ids"],
    ),
    "npy PSTH without its bin list": (
        lambda tmp: npy_files(tmp, np.ones((3, 1, len(STARTS), 2))),
        lambda f: ({"response_ids": f["ids"], "time_window": (0, 50)}, {"ids_path": f["ids"], "time_window": (0, 50)}),
        "is a PSTH [stimuli, repetitions, time_bins, channels]: give {}, a text file",
        ["time_bins"],
    ),
    "npy PSTH window holding no bin": (
        lambda tmp: npy_files(tmp, np.ones((3, 1, len(STARTS), 2))),
        lambda f: (
            {"response_ids": f["ids"], "time_bins": f["bins"], "time_window": (200, 300)},
            {"ids_path": f["ids"], "time_bins_path": f["bins"], "time_window": (200, 300)},
        ),
        "{} [200, 300] ms holds none of the time bins",
        ["time_window"],
    ),
    "npy without bins given a window and bins": (
        lambda tmp: npy_files(tmp, np.ones((3, 2))),
        lambda f: (
            {"response_ids": f["ids"], "time_bins": f["bins"], "time_window": (0, 50)},
            {"ids_path": f["ids"], "time_bins_path": f["bins"], "time_window": (0, 50)},
        ),
        "{} (or {}) applies to time-binned responses",
        ["time_window", "time_bins"],
    ),
    "HDF5 PSTH without a window": (
        h5_file,
        lambda f: ({}, {}),
        "choose the bins to average with {} = [start_ms, end_ms]",
        ["time_window"],
    ),
    "HDF5 PSTH given id lists": (
        h5_file,
        lambda f: ({"response_ids": f["path"]}, {"ids_path": f["path"]}),
        "{}, {} and {} apply only to .npy responses",
        ["response_ids", "neuron_ids", "time_bins"],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_header_problem_names_the_setting_as_the_caller_spells_it(tmp_path, case):
    make, given, message, settings = CASES[case]
    files = make(tmp_path)
    python_kwargs, config_kwargs = given(files)
    with pytest.raises(DataError) as from_python:
        sharedattr.load_responses(files["path"], **python_kwargs)
    with pytest.raises(DataError) as from_config:
        read_as_config(files["path"], **config_kwargs)
    with pytest.raises(DataError) as from_validate:
        inspect_responses(files["path"], **config_kwargs)
    python_text, config_text = str(from_python.value), str(from_config.value)
    assert message.format(*(f"load_responses({s}=...)" for s in settings)) in python_text
    assert message.format(*(f"data.{s}" for s in settings)) in config_text
    assert "data." not in python_text.replace(str(tmp_path), "")  # every setting named as Python spells it
    assert "load_responses(" not in config_text
    assert from_validate.value.problems == from_config.value.problems  # validate's message is fit's
