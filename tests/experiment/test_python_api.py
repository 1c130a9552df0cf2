"""The Python API is as complete as the CLI: the same data loaders, the same drivers, the same numbers, errors that
name the Python argument, and maps that say which pair each row is."""

from __future__ import annotations

import warnings

import pandas as pd
import pytest
import torch
from lab_formats import brainio_set

import sharedattr
from sharedattr.config.validation import validate_experiment
from sharedattr.experiment.run import run_experiment
from sharedattr.runtime.errors import DataError, UserError


@pytest.fixture
def run_and_model(tiny_config, tmp_path_factory):
    """``sharedattr run`` of the tiny config on two named neurons, and the model it fitted."""
    tiny_config["selection"] = {"neurons": ["limbs", "head"], "drivers_per_neuron": 2}
    spec = validate_experiment(tiny_config)
    out = tmp_path_factory.mktemp("run")
    run_experiment(spec, out, progress=False)
    return spec, out, sharedattr.load_model(out / "model")


def test_compare_and_run_give_the_same_pairs_and_numbers(run_and_model, tiny_config):
    spec, out, model = run_and_model
    with warnings.catch_warnings():
        warnings.simplefilter("error", sharedattr.PredictedDriversWarning)  # measured responses: no warning
        table = sharedattr.compare(
            model,
            sharedattr.load_stimuli(spec.data.stimuli),
            responses=sharedattr.load_responses(spec.data.responses),
            neurons=["limbs", "head"],
            methods=tiny_config["methods"],
            metrics=tiny_config["metrics"],
            matcher=tiny_config["matcher"],
            preferred_category="bodies",
            drivers_per_neuron=2,
            batch_size=tiny_config["batch_size"],
        )
    ran = pd.read_parquet(out / "results.parquet")
    assert len(table) == len(ran) == 2 * 2 * 2 * 2 * 2  # neurons × drivers × methods × images × metrics
    pair_columns = ["neuron", "driver", "reference", "rank"]
    pairs = pd.read_csv(out / "pairs.csv")
    assert table[pair_columns].drop_duplicates().values.tolist() == pairs[pair_columns].values.tolist()
    key = [*pair_columns, "method", "image", "metric"]
    joined = ran.merge(table, on=key, suffixes=("_run", "_compare"), validate="one_to_one")
    assert len(joined) == len(ran)
    torch.testing.assert_close(
        torch.tensor(joined["value_compare"].values), torch.tensor(joined["value_run"].values), rtol=1e-5, atol=1e-7
    )
    torch.testing.assert_close(
        torch.tensor(joined["similarity_compare"].values), torch.tensor(joined["similarity_run"].values)
    )


def test_compare_warns_once_when_the_model_ranks_the_drivers(run_and_model, tiny_data):
    _, _, model = run_and_model
    stimuli = sharedattr.load_stimuli(tiny_data / "stimuli" / "manifest.csv")
    kwargs = {"neurons": ["limbs", "head"], "methods": ["saliency"], "metrics": ["gini"], "on_reference": False}
    with pytest.warns(sharedattr.PredictedDriversWarning) as caught:
        sharedattr.compare(model, stimuli, **kwargs)
    assert len([w for w in caught if w.category is sharedattr.PredictedDriversWarning]) == 1
    assert "model's predictions rank the drivers" in str(caught[0].message)
    assert caught[0].filename == __file__  # points at the caller's line
    with warnings.catch_warnings():  # given pairs are not ranked: no warning
        warnings.simplefilter("error", sharedattr.PredictedDriversWarning)
        sharedattr.compare(
            model, stimuli, pairs=[("head", "objects_0000", "bodies_0003")], **kwargs | {"neurons": None}
        )
    recorded = sharedattr.load_responses(tiny_data / "responses.csv")
    other = type(recorded)(recorded.trials, recorded.ids, tuple(f"x{n}" for n in recorded.neuron_ids), "renamed")
    with pytest.raises(UserError, match=r"compare\(responses=\.\.\.\): none of the model's neurons"):
        sharedattr.compare(model, stimuli, responses=other, **kwargs)
    only_limbs = tuple(n if n == "limbs" else f"x{n}" for n in recorded.neuron_ids)
    partly = type(recorded)(recorded.trials, recorded.ids, only_limbs, "partly")
    with pytest.warns(sharedattr.PredictedDriversWarning, match="measure no stimulus of neuron\\(s\\) head,") as caught:
        sharedattr.compare(model, stimuli, responses=partly, **kwargs)
    assert len([w for w in caught if w.category is sharedattr.PredictedDriversWarning]) == 1
    with pytest.raises(UserError, match=r"compare\(responses=\.\.\.\): expected \[stimuli, neurons\]"):
        sharedattr.compare(model, stimuli, responses=torch.zeros(3, 2), **kwargs)


def test_measured_responses_choose_the_drivers(run_and_model, tiny_data):
    """The measured responses, not the predictions, rank the drivers: an object made the strongest response of a
    neuron in the recording is its first driver, whatever the model predicts."""
    _, _, model = run_and_model
    stimuli = sharedattr.load_stimuli(tiny_data / "stimuli" / "manifest.csv")
    recorded = sharedattr.load_responses(tiny_data / "responses.csv", stimuli=stimuli)
    assert recorded.ids == stimuli.ids and recorded.values.shape == (len(stimuli), len(recorded.neuron_ids))
    objects = [i for i, c in enumerate(stimuli.categories) if c == "objects"]
    n = recorded.neuron_ids.index("limbs")
    weakest = min(objects, key=lambda i: float(recorded.values[i, n]))
    trials = recorded.trials.clone()
    trials[weakest, :, n] = trials[:, :, n].nan_to_num(nan=0).max() + 10  # the recording's strongest response
    boosted = type(recorded)(trials, recorded.ids, recorded.neuron_ids, "boosted")
    table = sharedattr.compare(
        model,
        stimuli,
        responses=boosted,
        neurons=["limbs"],
        methods=["saliency"],
        metrics=["gini"],
        preferred_category="bodies",
        drivers_per_neuron=1,
        on_reference=False,
    )
    assert table["driver"].tolist() == [stimuli.ids[weakest]]


def test_python_errors_name_the_python_argument(tiny_data, tmp_path):
    csv_path, images = brainio_set(tiny_data, tmp_path / "set")
    with pytest.raises(
        DataError,
        match=r"set by load_stimuli\(category_column=\.\.\.\): did you mean 'object_name'\? "
        r"\(columns here:.*object_name",
    ):
        sharedattr.load_stimuli(csv_path, images=images)
    with pytest.raises(DataError) as from_config:
        sharedattr.StimulusSet.load(csv_path, images=images)  # what a config's data table reads
    assert "data.category_column" in str(from_config.value) and "load_stimuli" not in str(from_config.value)
    loaded = sharedattr.load_stimuli(csv_path, images=images, category_column="object_name")
    assert loaded.category_names == ["bodies", "objects"]
    with pytest.raises(DataError, match=r"compare\(category_column=\.\.\.\)"):
        sharedattr.compare(torch.nn.Identity(), csv_path, images=images)
    with pytest.raises(UserError, match=r"compare\(category_column=\.\.\.\): the stimuli are a StimulusSet already"):
        sharedattr.compare(torch.nn.Identity(), loaded, category_column="object_name")
    responses = tiny_data / "responses.csv"
    with pytest.raises(DataError, match=r"load_responses\(time_window=\.\.\.\) applies to time-binned responses"):
        sharedattr.load_responses(responses, time_window=(70, 170))
    with pytest.raises(DataError, match=r"load_responses\(response_ids=\.\.\.\), load_responses\(neuron_ids"):
        sharedattr.load_responses(responses, response_ids=tmp_path / "ids.txt")


def test_the_pair_column_says_which_row_of_the_maps_a_row_is(run_and_model, tiny_data):
    _, _, model = run_and_model
    stimuli = sharedattr.load_stimuli(tiny_data / "stimuli" / "manifest.csv")
    recorded = sharedattr.load_responses(tiny_data / "responses.csv")
    common = {"methods": ["saliency"], "metrics": ["gini"], "responses": recorded, "on_reference": False}
    result = sharedattr.compare(model, stimuli, neurons=["limbs", "head"], return_maps=True, **common)
    table, maps = result  # unpacks as before
    assert table is result.table and maps is result.maps
    assert (
        sorted(table["pair"].unique())
        == list(range(len(result.pairs)))
        == list(range(maps["saliency"]["driver"].shape[0]))
    )
    for k, (neuron, driver, reference) in enumerate(result.pairs):
        rows = table[table["pair"] == k]
        assert set(zip(rows["neuron"], rows["driver"], rows["reference"])) == {(neuron, driver, reference)}
        assert result.pair_index(neuron, driver) == k
    neuron, driver, reference = result.pairs[-1]
    alone = sharedattr.compare(model, stimuli, pairs=[(neuron, driver, reference)], return_maps=True, **common)
    torch.testing.assert_close(alone.maps["saliency"]["driver"][0], maps["saliency"]["driver"][len(result.pairs) - 1])
    assert result.images.drivers.shape[0] == len(result.pairs)
    with pytest.raises(UserError, match="no pair of neuron 'limbs', driver 'nope' was explained"):
        result.pair_index("limbs", "nope")


def test_time_window_errors_name_the_argument_from_python_and_the_field_from_a_config(tmp_path):
    import numpy as np
    import xarray as xr

    from sharedattr.data.responses import load_responses as read_as_config  # what a config's data table calls

    starts = np.arange(0, 250, 10)
    path = tmp_path / "assembly.nc"
    xr.DataArray(
        np.ones((3, 2, len(starts))),
        dims=("presentation", "neuroid", "time_bin"),
        coords={
            "stimulus_id": ("presentation", ["a", "b", "c"]),
            "neuroid_id": ("neuroid", ["n0", "n1"]),
            "time_bin_start": ("time_bin", starts),
            "time_bin_end": ("time_bin", starts + 10),
        },
        name="responses",
    ).to_netcdf(path)
    cases = [(None, "average with {} = \\[start_ms, end_ms\\]"), ((75, 78), "{} \\[75, 78\\] ms holds none")]
    for window, message in cases:
        with pytest.raises(DataError, match=message.format(r"load_responses\(time_window=\.\.\.\)")):
            sharedattr.load_responses(path, time_window=window)
        with pytest.raises(DataError, match=message.format(r"data\.time_window")):
            read_as_config(path, time_window=window)
    assert sharedattr.load_responses(path, time_window=(70, 170)).values.shape == (3, 2)
