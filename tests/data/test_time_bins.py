"""Time-binned responses: a window over NetCDF time bins and PSTH arrays (.npy, .h5) gives the bins' mean."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sharedattr.data.responses import load_responses
from sharedattr.runtime.errors import DataError

IDS = ["s0", "s1", "s2"]
NEURONS = ["n_a", "n_b"]
STARTS = np.arange(-50, 250, 10.0)  # 30 bins of 10 ms: [-50, -40) … [240, 250)


@pytest.fixture
def psth() -> np.ndarray:
    """``[3, 2, 30, 2]``: each bin's value is its start time plus a per-(stimulus, repetition, channel) offset;
    stimulus s2 was shown once (its second repetition is NaN)."""
    offset = np.arange(3 * 2 * 2, dtype=np.float64).reshape(3, 2, 1, 2)
    out = STARTS[None, None, :, None] + offset
    out[2, 1] = np.nan
    return out


def expected(psth: np.ndarray, lo: float, hi: float) -> np.ndarray:
    inside = (STARTS >= lo) & (STARTS + 10 <= hi)
    return psth[:, :, inside].mean(axis=2)


def write_npy(tmp_path, psth, bins_text: str | None = None):
    np.save(tmp_path / "psth.npy", psth)
    (tmp_path / "ids.txt").write_text("\n".join(IDS) + "\n")
    (tmp_path / "channels.txt").write_text("\n".join(NEURONS) + "\n")
    (tmp_path / "bins.txt").write_text(bins_text if bins_text is not None else "\n".join(f"{s:g}" for s in STARTS))
    return {
        "ids_path": tmp_path / "ids.txt",
        "neuron_ids_path": tmp_path / "channels.txt",
        "time_bins_path": tmp_path / "bins.txt",
    }


def test_a_npy_psth_averages_the_bins_inside_the_window(tmp_path, psth):
    paths = write_npy(tmp_path, psth)
    loaded = load_responses(tmp_path / "psth.npy", time_window=(70, 170), **paths)
    assert loaded.ids == tuple(IDS) and loaded.neuron_ids == tuple(NEURONS)
    np.testing.assert_allclose(loaded.trials.numpy(), expected(psth, 70, 170), rtol=1e-6)
    assert np.isnan(loaded.trials[2, 1].numpy()).all()  # the padded repetition stays missing
    assert loaded.trials[0, 0, 0] == pytest.approx(np.mean(np.arange(70, 170, 10.0)))  # bins 70 … 160
    # a bin that straddles the window's edge is left out: [65, 175] holds the same bins
    np.testing.assert_array_equal(
        load_responses(tmp_path / "psth.npy", time_window=(65, 175), **paths).trials, loaded.trials
    )


def test_bins_given_as_start_and_end(tmp_path, psth):
    text = "\n".join(f"{s:g} {s + 10:g}" for s in STARTS)
    paths = write_npy(tmp_path, psth, text)
    loaded = load_responses(tmp_path / "psth.npy", time_window=(0, 50), **paths)
    np.testing.assert_allclose(loaded.trials.numpy(), expected(psth, 0, 50), rtol=1e-6)


@pytest.mark.parametrize(
    "window, bins_text, fragment",
    [
        (None, None, "the responses have 30 time bins ([-50, -40), [-40, -30)"),
        ((300, 400), None, "data.time_window [300, 400] ms holds none of the time bins"),
        ((70, 170), "0\n10\n30\n", "not increasing in equal steps"),
        ((70, 170), "0\n10\n", "2 time bins in"),
        ((70, 170), "0 10 20\n", "one line per time bin"),
    ],
)
def test_npy_window_problems_list_the_bins(tmp_path, psth, window, bins_text, fragment):
    paths = write_npy(tmp_path, psth, bins_text)
    with pytest.raises(DataError, match=None) as caught:
        load_responses(tmp_path / "psth.npy", time_window=window, **paths)
    assert fragment in str(caught.value)


def test_a_psth_without_bins_or_a_window_without_bins(tmp_path, psth):
    paths = write_npy(tmp_path, psth)
    with pytest.raises(DataError, match="give data.time_bins"):
        load_responses(tmp_path / "psth.npy", time_window=(70, 170), ids_path=paths["ids_path"])
    np.save(tmp_path / "flat.npy", psth[:, :, 0])
    with pytest.raises(DataError, match="these responses have no time bins"):
        load_responses(tmp_path / "flat.npy", ids_path=paths["ids_path"], time_window=(70, 170))
    (tmp_path / "r.csv").write_text("stimulus_id,n\ns0,1\n")
    with pytest.raises(DataError, match="these responses have no time bins"):
        load_responses(tmp_path / "r.csv", time_window=(70, 170))


def write_h5(path, psth, **drop):
    h5py = pytest.importorskip("h5py", reason="optional extra: pip install sharedattr[xarray]")
    with h5py.File(path, "w") as f:
        datasets = {
            "psth": psth,
            "stimulus_id": np.array(IDS, dtype="S"),
            "neuroid_id": np.array(NEURONS, dtype="S"),
            "time_bin_start": STARTS,
            "time_bin_end": STARTS + 10,
        }
        for name, value in datasets.items():
            if name not in drop:
                f.create_dataset(name, data=value)
    return path


def test_an_hdf5_psth_reads_only_the_window(tmp_path, psth):
    loaded = load_responses(write_h5(tmp_path / "r.h5", psth), time_window=(70, 170))
    assert loaded.ids == tuple(IDS) and loaded.neuron_ids == tuple(NEURONS)
    np.testing.assert_allclose(loaded.trials.numpy(), expected(psth, 70, 170), rtol=1e-6)
    with pytest.raises(DataError, match="missing dataset\\(s\\) stimulus_id, neuroid_id \\(or channel_id\\)"):
        load_responses(write_h5(tmp_path / "bad.h5", psth, stimulus_id=1, neuroid_id=1), time_window=(70, 170))
    (tmp_path / "garbage.h5").write_bytes(b"not hdf5")
    with pytest.raises(DataError, match="cannot read as HDF5"):
        load_responses(tmp_path / "garbage.h5", time_window=(70, 170))


def assembly(psth, with_coords: bool = True):
    xr = pytest.importorskip("xarray", reason="optional extra: pip install sharedattr[xarray]")
    rows = [(s, r) for s in range(3) for r in range(2) if not (s == 2 and r == 1)]
    values = np.stack([psth[s, r] for s, r in rows])  # [P, T, N]
    coords = {
        "stimulus_id": ("presentation", [IDS[s] for s, _ in rows]),
        "repetition": ("presentation", [r for _, r in rows]),
        "neuroid_id": ("neuroid", NEURONS),
    }
    if with_coords:
        coords |= {"time_bin_start": ("time_bin", STARTS), "time_bin_end": ("time_bin", STARTS + 10)}
    return xr.DataArray(values, dims=("presentation", "time_bin", "neuroid"), coords=coords, name="responses")


def test_a_netcdf_assembly_with_time_bins(tmp_path, psth):
    path = tmp_path / "r.nc"
    assembly(psth).to_netcdf(path, engine="h5netcdf")
    loaded = load_responses(path, time_window=(70, 170))
    np.testing.assert_allclose(loaded.trials.numpy(), expected(psth, 70, 170), rtol=1e-6)
    with pytest.raises(DataError, match="choose the bins to average with data.time_window"):
        load_responses(path)
    assembly(psth, with_coords=False).to_netcdf(tmp_path / "bare.nc", engine="h5netcdf")
    with pytest.raises(DataError, match="needs the coordinates time_bin_start and time_bin_end"):
        load_responses(tmp_path / "bare.nc", time_window=(70, 170))


def test_the_window_is_a_validated_spec_field(tiny_config):
    from sharedattr.config.validation import validate_experiment
    from sharedattr.runtime.errors import SpecError

    with pytest.raises(SpecError, match="data.time_window: .*must end after it starts"):
        validate_experiment({**tiny_config, "data": {**tiny_config["data"], "time_window": [170, 70]}})


def test_a_psth_fits_like_the_window_means_it_holds(tiny_data, tiny_config, tmp_path, one_thread):
    """A run on a PSTH whose in-window bins hold the CSV's values (and whose other bins hold large noise) scores
    exactly like the run on the CSV: the window picks the right bins, and only those."""
    from sharedattr.config.validation import validate_experiment
    from sharedattr.experiment.run import run_experiment

    recorded = load_responses(tiny_data / "responses.csv")
    trials = recorded.trials.numpy()  # [S, R, N]
    rng = np.random.default_rng(0)
    bins = rng.normal(0, 1e3, size=(trials.shape[0], trials.shape[1], 30, trials.shape[2]))
    inside = (STARTS >= 70) & (STARTS + 10 <= 170)
    bins[:, :, inside] = trials[:, :, None, :]
    bins[np.isnan(trials)[:, :, None, :].repeat(30, axis=2)] = np.nan
    np.save(tmp_path / "psth.npy", bins)
    (tmp_path / "ids.txt").write_text("\n".join(recorded.ids) + "\n")
    (tmp_path / "neurons.txt").write_text("\n".join(recorded.neuron_ids) + "\n")
    (tmp_path / "bins.txt").write_text("\n".join(f"{s:g}" for s in STARTS))
    data = {
        **tiny_config["data"],
        "responses": str(tmp_path / "psth.npy"),
        "response_ids": str(tmp_path / "ids.txt"),
        "neuron_ids": str(tmp_path / "neurons.txt"),
        "time_bins": str(tmp_path / "bins.txt"),
        "time_window": [70, 170],
    }
    config = {**tiny_config, "methods": ["saliency"], "metrics": ["gini"]}
    run_experiment(validate_experiment({**config, "data": data}), tmp_path / "psth", progress=False)
    run_experiment(validate_experiment(config), tmp_path / "csv", progress=False)
    psth_scores = (tmp_path / "psth" / "scores.csv").read_text()
    assert psth_scores == (tmp_path / "csv" / "scores.csv").read_text()
    json.loads((tmp_path / "psth" / "spec.json").read_text())  # a complete run folder
