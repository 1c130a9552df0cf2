"""``sharedattr validate`` reads what can be read without compute, and refuses first what ``fit`` would refuse.

Each case of issue 28's list (an NWB config without ``time_window``; a BrainIO CSV whose category column is named
wrong; a window that holds no bin; a 30-bin assembly with no window) and the other header checks (ZIP members, HDF5
bins, id overlap, weights files) is run through both commands on small files built here: ``validate`` exits with code
2 and the same message ``fit`` gives.
"""

from __future__ import annotations

import csv
import json
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from cli_runner import run_cli
from sharedattr.data.responses import load_responses

STARTS = np.arange(-50, 250, 10.0)  # 30 bins of 10 ms: [-50, -40) … [240, 250)


def write_config(tmp_path: Path, config: dict, name: str = "exp.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(config))
    return path


def with_data(tiny_config: dict, **data) -> dict:
    return {**tiny_config, "data": {**tiny_config["data"], **data}}


def error_of(done) -> str:
    """The error a command printed: its ``error:`` line and the problems listed under it."""
    assert done.returncode == 2, (done.stdout[-2000:], done.stderr[-2000:])
    assert "Traceback" not in done.stderr
    return done.stderr[done.stderr.index("error: ") :]


def validate_refuses_as_fit_does(tmp_path: Path, config: dict, *fragments: str) -> str:
    """``validate`` and ``fit`` on ``config`` both exit with code 2 and the same message, holding ``fragments``;
    returns it."""
    path = write_config(tmp_path, config)
    checked = run_cli("validate", str(path))
    message = error_of(checked)
    assert "valid experiment" not in checked.stdout
    fitted = run_cli("fit", str(path), "--out", str(tmp_path / "fit"), "--no-progress")
    assert error_of(fitted) == message
    for fragment in fragments:
        assert fragment in message, message
    return message


def recorded(tiny_data: Path):
    """The tiny recording: trials ``[S, R, N]``, stimulus ids and neuron ids."""
    responses = load_responses(tiny_data / "responses.csv")
    return responses.trials.numpy(), list(responses.ids), list(responses.neuron_ids)


def binned_assembly(tiny_data: Path, path: Path) -> Path:
    """The tiny recording as a NetCDF assembly with 30 time bins of 10 ms (−50 to 250 ms), every bin holding the
    trial's response."""
    xr = pytest.importorskip("xarray", reason="optional extra: pip install sharedattr[xarray]")
    trials, ids, neurons = recorded(tiny_data)
    rows = [(s, r) for s in range(len(ids)) for r in range(trials.shape[1]) if not np.isnan(trials[s, r]).all()]
    values = np.stack([np.repeat(trials[s, r][None], len(STARTS), axis=0) for s, r in rows])  # [P, T, N]
    coords = {
        "stimulus_id": ("presentation", [ids[s] for s, _ in rows]),
        "repetition": ("presentation", [r for _, r in rows]),
        "neuroid_id": ("neuroid", neurons),
        "time_bin_start": ("time_bin", STARTS),
        "time_bin_end": ("time_bin", STARTS + 10),
    }
    dims = ("presentation", "time_bin", "neuroid")
    xr.DataArray(values, dims=dims, coords=coords, name="responses").to_netcdf(path, engine="h5netcdf")
    return path


def nwb_session(tiny_data: Path, path: Path) -> Path:
    """The tiny stimuli presented once each, 1 s apart, in the trials table; one unit firing 10 ms after each onset."""
    pytest.importorskip("pynwb", reason="optional extra: pip install sharedattr[nwb]")
    from pynwb import NWBHDF5IO, NWBFile

    _, ids, _ = recorded(tiny_data)
    nwbfile = NWBFile(
        session_description="validate test",
        identifier="sharedattr-validate",
        session_start_time=datetime(2024, 1, 1, tzinfo=timezone.utc),
    )
    nwbfile.add_unit(spike_times=[1.0 + i + 0.01 for i in range(len(ids))] + [len(ids) + 5.0], id=7)
    nwbfile.add_trial_column("stimulus_id", "id of the image shown")
    for i, sid in enumerate(ids):
        nwbfile.add_trial(start_time=1.0 + i, stop_time=1.5 + i, stimulus_id=sid)
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwbfile)
    return path


def brainio_set(tiny_data: Path, folder: Path, leave_out: str | None = None) -> tuple[Path, Path]:
    """The tiny stimuli as a BrainIO set: ``set.csv`` with the columns stimulus_id, filename, object_name,
    image_source, and ``set.zip`` holding the images (without ``leave_out``)."""
    with open(tiny_data / "stimuli" / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "set.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["stimulus_id", "filename", "object_name", "image_source"])
        writer.writerows([r["stimulus_id"], r["path"], r["category"], "in-silico"] for r in rows)
    with zipfile.ZipFile(folder / "set.zip", "w") as zf:
        for r in rows:
            if r["path"] != leave_out:
                zf.write(tiny_data / "stimuli" / r["path"], r["path"])
    return folder / "set.csv", folder / "set.zip"


# -- the cases of issue 28 ---------------------------------------------------------------------------------------
def test_an_nwb_config_without_time_window(tiny_data, tiny_config, tmp_path):
    session = nwb_session(tiny_data, tmp_path / "session.nwb")
    config = with_data(tiny_config, responses=str(session), preferred_category=None)
    validate_refuses_as_fit_does(
        tmp_path, config, str(session), "NWB spike times need data.time_window = [start_ms, end_ms]"
    )


def test_a_category_column_named_wrong_gets_a_did_you_mean(tiny_data, tiny_config, tmp_path):
    stimuli, images = brainio_set(tiny_data, tmp_path / "set")
    config = with_data(tiny_config, stimuli=str(stimuli), images=str(images), category_column="category")
    validate_refuses_as_fit_does(
        tmp_path,
        config,
        f"error: {stimuli}: 1 problem(s)",
        "missing column(s) category",
        "did you mean 'object_name'?",
        "columns here: stimulus_id, filename, object_name, image_source",
    )


def test_a_window_that_holds_no_bin(tiny_data, tiny_config, tmp_path):
    assembly = binned_assembly(tiny_data, tmp_path / "binned.nc")
    config = with_data(tiny_config, responses=str(assembly), time_window=[75, 78])
    validate_refuses_as_fit_does(
        tmp_path, config, "data.time_window [75, 78] ms holds none of the time bins ([-50, -40), [-40, -30)"
    )


def test_a_30_bin_assembly_without_a_window(tiny_data, tiny_config, tmp_path):
    assembly = binned_assembly(tiny_data, tmp_path / "binned.nc")
    validate_refuses_as_fit_does(
        tmp_path,
        with_data(tiny_config, responses=str(assembly)),
        "the responses have 30 time bins",
        "choose the bins to average with data.time_window",
    )


# -- the other header checks ---------------------------------------------------------------------------------------
def test_a_zip_without_an_image_the_manifest_names(tiny_data, tiny_config, tmp_path):
    stimuli, images = brainio_set(tiny_data, tmp_path / "set", leave_out="images/bodies_0003.png")
    config = with_data(tiny_config, stimuli=str(stimuli), images=str(images), category_column="object_name")
    validate_refuses_as_fit_does(tmp_path, config, f"{images}:images/bodies_0003.png is not in the archive")


def test_an_hdf5_psth_whose_window_holds_no_bin(tiny_data, tiny_config, tmp_path):
    h5py = pytest.importorskip("h5py", reason="optional extra: pip install sharedattr[xarray]")
    trials, ids, neurons = recorded(tiny_data)
    path = tmp_path / "psth.h5"
    with h5py.File(path, "w") as f:
        f["psth"] = np.repeat(trials[:, :, None, :], len(STARTS), axis=2)
        f["stimulus_id"] = np.array(ids, dtype="S")
        f["neuroid_id"] = np.array(neurons, dtype="S")
        f["time_bin_start"] = STARTS
    validate_refuses_as_fit_does(
        tmp_path, with_data(tiny_config, responses=str(path), time_window=[300, 400]), "holds none of the time bins"
    )


def test_a_category_column_misspelt_gets_the_closest(tiny_data, tiny_config, tmp_path):
    stimuli, images = brainio_set(tiny_data, tmp_path / "set")
    config = with_data(tiny_config, stimuli=str(stimuli), images=str(images), category_column="objectname")
    validate_refuses_as_fit_does(tmp_path, config, "missing column(s) objectname", "did you mean 'object_name'?")


def test_an_npy_array_whose_id_list_does_not_fit(tiny_data, tiny_config, tmp_path):
    trials, ids, _ = recorded(tiny_data)
    np.save(tmp_path / "r.npy", trials)
    (tmp_path / "ids.txt").write_text("\n".join(ids[:-1]) + "\n")
    config = with_data(tiny_config, responses=str(tmp_path / "r.npy"), response_ids=str(tmp_path / "ids.txt"))
    validate_refuses_as_fit_does(
        tmp_path, config, f"{len(ids) - 1} stimulus ids in {tmp_path / 'ids.txt'} but the array has {len(ids)} stimuli"
    )


def test_response_ids_that_are_no_stimulus(tiny_data, tiny_config, tmp_path):
    text = (tiny_data / "responses.csv").read_text()
    extra = tmp_path / "responses.csv"
    extra.write_text(text + "not_a_stimulus" + ",1" * (text.splitlines()[0].count(",")) + "\n")
    validate_refuses_as_fit_does(
        tmp_path,
        with_data(tiny_config, responses=str(extra)),
        f"error: {extra}: 1 problem(s)",
        "stimulus_id 'not_a_stimulus' is not in the stimulus set",
    )


def test_a_time_window_on_responses_without_bins(tiny_config, tmp_path):
    validate_refuses_as_fit_does(
        tmp_path, with_data(tiny_config, time_window=[70, 170]), "these responses have no time bins: remove it"
    )


def test_an_unknown_neuron_in_the_selection(tiny_config, tmp_path):
    config = {**tiny_config, "selection": {"neurons": ["limbs", "hed"]}}
    validate_refuses_as_fit_does(tmp_path, config, "selection.neurons: unknown neuron id(s) ['hed']", "'head'")


@pytest.mark.parametrize(
    "name, content, fragment",
    [
        ("junk.safetensors", b"not a safetensors file", "SafetensorError"),
        ("junk.pt", b"GIF89a, not a torch file", "neither a torch.save file nor a safetensors file"),
    ],
)
def test_a_weights_file_that_is_not_one(tiny_config, tmp_path, name, content, fragment):
    weights = tmp_path / name
    weights.write_bytes(content)
    config = {**tiny_config, "backbone": {**tiny_config["backbone"], "weights_file": str(weights)}}
    validate_refuses_as_fit_does(tmp_path, config, f"cannot load weights file {weights}: ", fragment)


# -- what validate prints, and what it never reads --------------------------------------------------------------------
def test_validate_prints_one_line_per_check_and_reads_no_values(tiny_data, tiny_config, tmp_path, monkeypatch):
    import sharedattr.data.inspection as inspection
    import sharedattr.data.responses as responses
    import sharedattr.data.stimuli as stimuli

    def never(*args, **kwargs):
        raise AssertionError("validate read pixels or response values")

    assembly = binned_assembly(tiny_data, tmp_path / "binned.nc")
    weights = tmp_path / "net.safetensors"
    from safetensors.torch import save_file
    from torchvision.models import resnet18

    state = resnet18().state_dict()
    save_file(state, str(weights))
    for module, name in [(stimuli, "decode_image"), (stimuli, "read_mask"), (responses, "window_mean")]:
        monkeypatch.setattr(module, name, never)
    monkeypatch.setattr(responses, "_load_csv", never)
    config = with_data(
        {**tiny_config, "backbone": {**tiny_config["backbone"], "weights_file": str(weights)}},
        responses=str(assembly),
        time_window=[70, 170],
    )
    done = run_cli("validate", str(write_config(tmp_path, config)))
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    start = lines.index("data checked without compute (headers and id lists only; --no-data skips this):")
    checks = {line.split()[0]: line for line in lines[start + 1 :]}
    assert list(checks) == ["stimuli", "responses", "selection", "ids", "weights"], lines[start:]
    assert "manifest.csv: 24 stimuli in 2 categories (bodies, objects)" in checks["stimuli"]
    assert "binned.nc (NetCDF): 24 stimuli × 5 neurons" in checks["responses"]
    assert "30 time bin(s)" in checks["responses"] and "data.time_window [70, 170] ms holds 10" in checks["responses"]
    assert "'bodies' is a category" in checks["selection"]
    assert "24 of 24 stimuli have responses" in checks["ids"]
    assert f"backbone.weights_file: net.safetensors: safetensors, {len(state)} tensors" in checks["weights"]
    assert inspection.FORMATS[".nc"] == "NetCDF"


def test_no_data_checks_the_spec_alone(tiny_data, tiny_config, tmp_path):
    session = nwb_session(tiny_data, tmp_path / "session.nwb")
    path = write_config(tmp_path, with_data(tiny_config, responses=str(session)))
    done = run_cli("validate", "--no-data", str(path))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "valid experiment 'tiny'" in done.stdout and "data not read (--no-data)" in done.stdout
    assert run_cli("validate", str(path)).returncode == 2


def test_the_checks_that_passed_are_shown_before_the_error(tiny_data, tiny_config, tmp_path):
    session = nwb_session(tiny_data, tmp_path / "session.nwb")
    done = run_cli("validate", str(write_config(tmp_path, with_data(tiny_config, responses=str(session)))))
    assert done.returncode == 2
    assert "data checks that passed before the error:" in done.stdout and "  stimuli    manifest.csv" in done.stdout
    assert "responses" not in done.stdout.split("before the error:")[1]
