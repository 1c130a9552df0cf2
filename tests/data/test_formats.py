"""Every data format, from the examples docs/fitting.md describes (examples/data/make_examples.py): one recording
read from each format gives the same trials, stimulus ids and neuron ids."""

from __future__ import annotations

import runpy
from pathlib import Path

import numpy as np
import pytest

from sharedattr.data.inspection import inspect_responses
from sharedattr.data.responses import load_responses
from sharedattr.data.stimuli import StimulusSet

SCRIPT = Path(__file__).parents[2] / "examples" / "data" / "make_examples.py"
WINDOW = (70.0, 170.0)


@pytest.fixture(scope="module")
def examples(tmp_path_factory) -> Path:
    pytest.importorskip("xarray", reason="optional extra: pip install sharedattr[xarray]")
    pytest.importorskip("pynwb", reason="optional extra: pip install sharedattr[nwb]")
    out = tmp_path_factory.mktemp("examples")
    runpy.run_path(str(SCRIPT))["main"](out)
    return out


FORMATS = {
    "npy": lambda d, read=load_responses: read(
        d / "responses.npy", ids_path=d / "ids.txt", neuron_ids_path=d / "neurons.txt"
    ),
    "netcdf": lambda d, read=load_responses: read(d / "assembly.nc"),
    "netcdf, time bins": lambda d, read=load_responses: read(d / "assembly_binned.nc", time_window=WINDOW),
    "npy psth": lambda d, read=load_responses: read(
        d / "psth.npy",
        ids_path=d / "ids.txt",
        neuron_ids_path=d / "neurons.txt",
        time_bins_path=d / "psth_bins.txt",
        time_window=WINDOW,
    ),
    "hdf5 psth": lambda d, read=load_responses: read(d / "psth.h5", time_window=WINDOW),
    "nwb": lambda d, read=load_responses: read(d / "session.nwb", time_window=WINDOW),
}


@pytest.mark.parametrize("name", FORMATS)
def test_every_format_reads_as_the_csv(examples, name):
    reference = load_responses(examples / "responses.csv")
    loaded = FORMATS[name](examples)
    assert loaded.ids == reference.ids and loaded.neuron_ids == reference.neuron_ids, name
    np.testing.assert_allclose(loaded.trials.numpy(), reference.trials.numpy(), rtol=1e-6, equal_nan=True)


@pytest.mark.parametrize("name", ["csv", *FORMATS])
def test_every_header_declares_the_ids_the_file_holds(examples, name):
    """What `sharedattr validate` reads of a responses file (its header: inspect_responses, the same arguments) gives
    the stimulus and neuron ids that loading it gives."""
    read = FORMATS.get(name, lambda d, read=load_responses: read(d / "responses.csv"))
    header, loaded = read(examples, inspect_responses), read(examples, load_responses)
    assert (header.ids, header.neuron_ids) == (loaded.ids, loaded.neuron_ids), name
    assert header.describe().startswith(f"{header.path.name} ({header.format}): 4 stimuli × 2 neurons"), name


def test_the_brainio_stimulus_set_reads_as_the_manifest(examples):
    manifest = StimulusSet.load(examples / "manifest.csv")
    brainio = StimulusSet.load(
        examples / "stimulus_set.csv", images=examples / "stimulus_set.zip", category_column="object_name"
    )
    assert (brainio.ids, brainio.categories) == (manifest.ids, manifest.categories)
    assert brainio.content_digest() == manifest.content_digest()
    assert np.array_equal(brainio.load_images((16, 16), 3).numpy(), manifest.load_images((16, 16), 3).numpy())
