"""Hostile data files: ZIP members zipfile cannot read, stimuli and response ids changed after a fit, NWB windows
past the end of the recording, and tiny files declaring huge arrays.

Each case gets one clear :class:`~sharedattr.data.stimuli.DataError` (exit code 2 from the CLI) before any compute,
or, where the data changed since a fit, a refit with nothing computed from the former data reused.
"""

from __future__ import annotations

import csv
import io
import json
import os
import struct
import subprocess
import sys
import textwrap
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sharedattr.cli import main
from sharedattr.config.spec import DataSpec
from sharedattr.config.validation import validate_experiment
from sharedattr.data import StimulusSet, load_responses
from sharedattr.data.archives import ZipMember
from sharedattr.runtime.errors import DataError
from toml_writer import toml_text

# -- ZIP members ---------------------------------------------------------------------------------------------------


def brainio_zip(tiny_data: Path, folder: Path, *, bmp: bool = False, flip: bool = False) -> tuple[Path, Path]:
    """The tiny stimulus set as a BrainIO set: ``set.csv`` (stimulus_id, filename, object_name, mask) and ``set.zip``
    holding its images and masks. With ``bmp`` the images are stored uncompressed as BMP, so an archive of other
    pixels of the same size has the same size; ``flip`` turns every image upside down (new pixels)."""
    with open(tiny_data / "stimuli" / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "set.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["stimulus_id", "filename", "object_name", "mask"])
        writer.writerows([r["stimulus_id"], r["path"], r["category"], r["mask"]] for r in rows)
    archive = folder / "set.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED if bmp else zipfile.ZIP_DEFLATED) as zf:
        for r in rows:
            image = np.asarray(Image.open(tiny_data / "stimuli" / r["path"]).convert("RGB"))
            buffer = io.BytesIO()
            Image.fromarray(np.ascontiguousarray(image[::-1] if flip else image)).save(buffer, "BMP" if bmp else "PNG")
            zf.writestr(r["path"], buffer.getvalue())
            if r["mask"]:
                zf.write(tiny_data / "stimuli" / r["mask"], r["mask"])
    return folder / "set.csv", archive


def patch_member(archive: Path, name: str, *, flags: int = 0, method: int | None = None, corrupt: bool = False) -> None:
    """Rewrite the bytes of member ``name`` of ``archive`` in place: OR ``flags`` into its general-purpose flags and
    set its compression ``method``, in both its local and its central-directory header; with ``corrupt``, make the
    first byte of its (deflate) data an invalid block type, its CRC left as it was."""
    data = bytearray(archive.read_bytes())
    with zipfile.ZipFile(archive) as zf:
        local = zf.getinfo(name).header_offset
    headers = [(local, 6)]  # (offset of the header, offset of its flags field)
    pos = data.find(b"PK\x01\x02")
    while pos != -1:
        length = struct.unpack_from("<H", data, pos + 28)[0]
        if data[pos + 46 : pos + 46 + length] == name.encode():
            headers.append((pos, 8))
        pos = data.find(b"PK\x01\x02", pos + 4)
    assert len(headers) == 2 and data[local : local + 4] == b"PK\x03\x04"
    for start, at in headers:
        struct.pack_into("<H", data, start + at, struct.unpack_from("<H", data, start + at)[0] | flags)
        if method is not None:
            struct.pack_into("<H", data, start + at + 2, method)
    if corrupt:
        name_length, extra_length = struct.unpack_from("<HH", data, local + 26)
        begins = local + 30 + name_length + extra_length
        data[begins] = 0xFF  # BFINAL 1, BTYPE 11: "invalid block type"
    archive.write_bytes(bytes(data))


def fit_config(tmp_path: Path, tiny_config: dict, data: dict, **extra) -> Path:
    config = {**tiny_config, "data": {**tiny_config["data"], **data}, "methods": ["saliency"], "metrics": ["gini"]}
    path = tmp_path / "config.toml"
    path.write_text(toml_text({**config, **extra}))
    return path


def test_zip_members_zipfile_cannot_read_are_listed_together_before_any_compute(
    tiny_data, tiny_config, tmp_path, capsys, one_thread
):
    """Encrypted, Deflate64 and corrupt-deflate members and a corrupt mask: one error naming each (stimulus id, ZIP,
    member, why), exit code 2, and nothing computed (before: a RuntimeError traceback from the content digest)."""
    csv_path, archive = brainio_zip(tiny_data, tmp_path / "set")
    patch_member(archive, "images/bodies_0000.png", flags=0x1)  # encrypted
    patch_member(archive, "images/bodies_0001.png", method=9)  # Deflate64
    patch_member(archive, "images/objects_0000.png", corrupt=True)
    patch_member(archive, "masks/bodies_0002.png", corrupt=True)
    data = {"stimuli": str(csv_path), "images": str(archive), "category_column": "object_name"}
    out = tmp_path / "out"
    code = main(["fit", str(fit_config(tmp_path, tiny_config, data)), "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and "Traceback" not in err and "4 problem(s)" in err, err
    for sid, member, why in [
        ("bodies_0000", "images/bodies_0000.png", "is encrypted"),
        ("bodies_0001", "images/bodies_0001.png", "method 9 (Deflate64)"),
        ("objects_0000", "images/objects_0000.png", "zlib.error"),
        ("bodies_0002", "masks/bodies_0002.png", "zlib.error"),
    ]:
        line = next((x for x in err.splitlines() if f"{archive}:{member}" in x), "")
        assert f"'{sid}'" in line and why in line, (member, err)
    assert not (out / "scores.csv").exists() and not (out / "model").exists()
    assert not list((tmp_path / "feature-cache").glob("features-*"))  # no backbone forward pass


def test_a_damaged_member_is_one_line_on_every_read_path(tiny_data, tmp_path):
    """A member whose deflate data are damaged (its headers fine) is found when read: the content digest, the image
    check, image loading and mask loading each raise a DataError naming the stimulus, the ZIP and the member, and the
    digest's error lists the damaged mask too (before: zlib.error from the digest)."""
    csv_path, archive = brainio_zip(tiny_data, tmp_path / "set")
    patch_member(archive, "images/bodies_0003.png", corrupt=True)
    patch_member(archive, "masks/objects_0001.png", corrupt=True)
    stimuli = StimulusSet.load(csv_path, images=archive, category_column="object_name")  # headers are fine
    image_line = f"bodies_0003: image {archive}:images/bodies_0003.png cannot be read (zlib.error"
    mask_line = f"objects_0001: mask: mask {archive}:masks/objects_0001.png cannot be read (zlib.error"
    for read in (stimuli.content_digest, stimuli.check_images):
        with pytest.raises(DataError) as caught:
            read()
        assert len(caught.value.problems) == 2, caught.value.problems
        assert caught.value.problems[0].startswith(image_line) and caught.value.problems[1].startswith(mask_line)
    with pytest.raises(DataError, match="bodies_0003: image .*cannot be read"):
        stimuli.load_images((8, 8), 3, [stimuli.ids.index("bodies_0003")])
    with pytest.raises(DataError, match="masks/objects_0001.png cannot be read"):
        stimuli.load_masks((8, 8), [stimuli.ids.index("objects_0001")])


@pytest.mark.parametrize("how", ["replaced", "rewritten in place"])
def test_a_zip_changed_with_its_size_and_mtime_kept_is_read_afresh(tmp_path, how):
    """The open-archive cache must not serve a former file, whether a new file was renamed over it or it was
    rewritten in place, with the same size and mtime (before: b"first", from the stale handle's file or buffer)."""
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("x.png", b"first")
    assert ZipMember(archive, "x.png").read_bytes() == b"first"
    before = os.stat(archive)
    target = tmp_path / "new.zip" if how == "replaced" else archive
    with zipfile.ZipFile(target, "w") as zf:
        zf.writestr("x.png", b"other")
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    if how == "replaced":
        os.replace(target, archive)
    assert (os.stat(archive).st_size, os.stat(archive).st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    assert ZipMember(archive, "x.png").read_bytes() == b"other"


def test_a_stimulus_zip_replaced_after_the_fit_is_fitted_and_explained_again(
    tiny_data, tiny_config, tmp_path, one_thread
):
    """Same member names, new pixels, same archive size and mtime: the second run into the folder reuses neither the
    features, nor the model, nor any work item, and warns that the stimuli changed (before: all reused, the old
    pixels read through the stale open archive)."""
    from sharedattr.experiment.run import run_experiment

    csv_path, archive = brainio_zip(tiny_data, tmp_path / "set", bmp=True)
    data = {"stimuli": str(csv_path), "images": str(archive), "category_column": "object_name"}
    config = {**tiny_config, "data": {**tiny_config["data"], **data}, "methods": ["saliency"], "metrics": ["gini"]}
    spec = validate_experiment({**config, "selection": {"top_k": 1, "drivers_per_neuron": 1}})
    out = tmp_path / "out"
    first = run_experiment(spec, out, progress=False)
    scores = (out / "scores.csv").read_bytes()
    before = os.stat(archive)
    _, flipped = brainio_zip(tiny_data, tmp_path / "flipped", bmp=True, flip=True)
    os.utime(flipped, ns=(before.st_atime_ns, before.st_mtime_ns))
    os.replace(flipped, archive)
    assert os.stat(archive).st_size == before.st_size
    with pytest.warns(UserWarning, match=r"the stimuli \(data.stimuli, data.images\) changed since the model in"):
        second = run_experiment(spec, out, progress=False)
    assert first.reused["work_items_computed"] > 0
    assert second.reused["model"] == 0 and second.reused["work_items_reused"] == 0
    assert second.reused["work_items_computed"] == first.reused["work_items_computed"]
    assert (out / "scores.csv").read_bytes() != scores
    assert len(list((tmp_path / "feature-cache").glob("features-*.npy"))) == 2  # the old pixels' file not reused


# -- the fit digest covers every data file -----------------------------------------------------------------------


def test_every_file_of_the_data_spec_is_covered_by_the_fit_digest():
    """A file field added to DataSpec must be hashed by responses_digest or the stimulus digest (or be ground truth)."""
    from sharedattr.data.responses import RESPONSE_FILES

    files = {name for name, field in DataSpec.model_fields.items() if "Path" in str(field.annotation)}
    assert files == {*RESPONSE_FILES, "stimuli", "images", "neuron_parts"}


def test_changing_only_the_response_ids_refits_the_model(tiny_data, tiny_config, tmp_path, one_thread):
    """.npy responses with a response_ids file: rewriting only the ids (the same ids, another order) fits the model
    again, with a warning, and the scores change (before: the saved model was reused)."""
    from sharedattr.experiment.context import RunContext
    from sharedattr.experiment.stages import fit_stage

    recorded = load_responses(tiny_data / "responses.csv")
    np.save(tmp_path / "responses.npy", recorded.trials.numpy())
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join(recorded.ids) + "\n")
    data = {"responses": str(tmp_path / "responses.npy"), "response_ids": str(ids)}
    spec = validate_experiment({**tiny_config, "data": {**tiny_config["data"], **data}})
    out = tmp_path / "fit"
    first = fit_stage(RunContext.start(spec, out, progress=False), spec, out, reuse=True)
    scores = (out / "scores.csv").read_bytes()
    ids.write_text("\n".join(reversed(recorded.ids)) + "\n")  # only the ids file changes
    with pytest.warns(UserWarning, match=r"the responses \(data.responses, data.response_ids\) changed since"):
        second = fit_stage(RunContext.start(spec, out, progress=False), spec, out, reuse=True)
    assert not first.reused and not second.reused and second.fit_digest != first.fit_digest
    assert (out / "scores.csv").read_bytes() != scores


def test_each_responses_file_changes_the_digest(tmp_path):
    """responses, response_ids, neuron_ids and time_bins: changing the bytes of any one changes the digest."""
    from sharedattr.data.responses import responses_digest

    np.save(tmp_path / "r.npy", np.zeros((2, 1, 3, 2)))
    for name, text in (("ids.txt", "a\nb\n"), ("neurons.txt", "n1\nn2\n"), ("bins.txt", "0\n10\n20\n")):
        (tmp_path / name).write_text(text)
    data = DataSpec(
        stimuli=tmp_path / "r.npy",  # any existing path: not read here
        responses=tmp_path / "r.npy",
        response_ids=tmp_path / "ids.txt",
        neuron_ids=tmp_path / "neurons.txt",
        time_bins=tmp_path / "bins.txt",
    )
    seen = {responses_digest(data)}
    for name in ("r.npy", "ids.txt", "neurons.txt", "bins.txt"):
        with open(tmp_path / name, "ab") as f:
            f.write(b"\n")
        seen.add(responses_digest(data))
    assert len(seen) == 5


# -- NWB: the window must lie within the recording ----------------------------------------------------------------


def nwb_file(path: Path, presentations, units, obs_intervals=None) -> Path:
    """An NWB file: ``presentations`` [(onset s, stimulus id)] in the trials table, ``units`` {id: spike times}, and
    optionally ``obs_intervals`` {id: [[start, stop], ...]}."""
    pytest.importorskip("pynwb", reason="optional extra: pip install sharedattr[nwb]")
    from pynwb import NWBHDF5IO, NWBFile

    nwbfile = NWBFile(
        session_description="test", identifier="test", session_start_time=datetime(2024, 1, 1, tzinfo=timezone.utc)
    )
    for unit, spikes in units.items():
        extra = {} if obs_intervals is None else {"obs_intervals": obs_intervals[unit]}
        nwbfile.add_unit(spike_times=spikes, id=unit, **extra)
    nwbfile.add_trial_column("stimulus_id", "the image shown")
    for onset, sid in presentations:
        nwbfile.add_trial(start_time=onset, stop_time=onset + 0.5, stimulus_id=sid)
    with NWBHDF5IO(str(path), "w") as io_:
        io_.write(nwbfile)
    return path


def test_an_nwb_window_past_the_last_spike_is_refused(tmp_path):
    """Without obs_intervals the recording is known to last until its last spike: a window ending after it is
    refused, naming the file, data.time_window, how many presentations, the first one and the fix (before: the
    late presentation counted 0 spikes/s)."""
    path = nwb_file(tmp_path / "s.nwb", [(1.0, "a"), (2.0, "b"), (3.0, "c")], {1: [1.1, 2.1, 3.1], 2: [3.12]})
    assert load_responses(path, time_window=(0, 100)).ids == ("a", "b", "c")  # 3.0-3.1 s: recorded
    with pytest.raises(DataError) as caught:
        load_responses(path, time_window=(70, 170))  # 3.07-3.17 s: the recording's last spike is at 3.12 s
    (problem,) = caught.value.problems
    assert str(caught.value).startswith(f"{path}: ")
    for fragment in (
        "data.time_window [70, 170] ms reaches outside the recording (up to 3.12 s, from its last spike time",
        "for 1 of 3 presentations, the first intervals table 'trials', row 2 (id 2): stimulus 'c' at onset 3 s",
        "shorten data.time_window",
        "obs_intervals",
    ):
        assert fragment in problem, problem


def test_nwb_obs_intervals_bound_the_recording_and_each_unit(tmp_path):
    """With obs_intervals: a window past their latest end is refused; one inside the recording but outside a unit's
    own intervals is that unit's missing value (NaN), with a warning, not a count of 0."""
    presentations = [(1.0, "a"), (4.0, "b"), (9.9, "c")]
    units = {1: [1.1, 4.1], 2: [1.12]}
    observed = {1: [[0.0, 10.5]], 2: [[0.0, 3.0], [9.0, 10.5]]}  # unit 2 not observed at 4 s
    path = nwb_file(tmp_path / "s.nwb", presentations, units, observed)
    with pytest.warns(UserWarning, match=r"1 unit × presentation window\(s\) lie outside the unit's obs_intervals"):
        loaded = load_responses(path, time_window=(0, 200))
    rates = loaded.trials[:, 0].numpy()  # [a, b, c] x [unit 1, unit 2]
    np.testing.assert_array_equal(rates, [[5.0, 5.0], [5.0, np.nan], [0.0, 0.0]])
    with pytest.raises(DataError, match=r"reaches outside the recording \(0 s to 10.5 s, from the Units table's "):
        load_responses(path, time_window=(500, 700))  # c: 10.4-10.6 s


def test_an_nwb_window_past_the_recording_stops_a_fit_with_one_line(tiny_data, tiny_config, tmp_path, capsys):
    """Through the CLI: exit code 2, the one error, nothing fitted."""
    ids = StimulusSet.load(tiny_data / "stimuli" / "manifest.csv").ids
    presentations = [(1.0 + i, sid) for i, sid in enumerate(ids)]
    spikes = sorted(onset + 0.05 for onset, _ in presentations)  # the last at 24.05 s
    path = nwb_file(tmp_path / "s.nwb", presentations, {7: spikes})
    config = fit_config(tmp_path, tiny_config, {"responses": str(path), "time_window": [0, 100]})
    out = tmp_path / "out"
    code = main(["fit", str(config), "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "Traceback" not in err, err
    assert f"for 1 of {len(ids)} presentations" in err and f"stimulus '{ids[-1]}'" in err
    assert not (out / "scores.csv").exists()


# -- tiny files declaring huge arrays -----------------------------------------------------------------------------

READ_UNDER_A_CAP = textwrap.dedent(
    """
    import json, resource, sys, tracemalloc
    from sharedattr.data import load_responses

    with open("/proc/self/status") as f:
        size = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    cap = size + 1536 * 2**20  # 1.5 GiB above what the imports mapped
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    results = {}
    for case in json.loads(sys.argv[1]):
        tracemalloc.start()
        try:
            loaded = load_responses(case["path"], time_window=case["window"], ids_path=case["ids"])
            results[case["name"]] = {"shape": list(loaded.trials.shape)}
        except Exception as err:
            results[case["name"]] = {"error": type(err).__name__, "message": str(err)}
        results[case["name"]]["peak_mb"] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    print(json.dumps(results))
    """
)


def declared_h5(path: Path, shape: tuple[int, int, int, int]) -> Path:
    """An HDF5 PSTH declaring ``shape`` of float64 in chunks never written (a few kB on disk), its lists written."""
    h5py = pytest.importorskip("h5py", reason="optional extra: pip install sharedattr[xarray]")
    with h5py.File(path, "w") as f:
        f.create_dataset("psth", shape=shape, dtype="f8", chunks=True)
        f["stimulus_id"] = np.array([f"s{i}" for i in range(shape[0])], dtype="S")
        f["neuroid_id"] = np.array([f"n{i}" for i in range(shape[3])], dtype="S")
        f["time_bin_start"] = np.arange(shape[2]) * 10.0 - 50
    return path


def declared_nc(path: Path, shape: tuple[int, int, int], write_ids: bool = True) -> Path:
    """A NetCDF assembly ``presentation × time_bin × neuroid`` declaring ``shape`` of float64 never written; its
    coordinates written (one stimulus per presentation; without ``write_ids`` its stimulus ids are declared only)."""
    h5netcdf = pytest.importorskip("h5netcdf", reason="optional extra: pip install sharedattr[xarray]")
    import h5py

    presentations, bins, neurons = shape
    with h5netcdf.File(path, "w") as f:
        f.dimensions = {"presentation": presentations, "time_bin": bins, "neuroid": neurons}
        chunks = (max(1, presentations // 100), bins, neurons)
        values = f.create_variable("responses", ("presentation", "time_bin", "neuroid"), dtype="f8", chunks=chunks)
        values.attrs["coordinates"] = "stimulus_id neuroid_id time_bin_start time_bin_end"
        strings = h5py.string_dtype()
        if write_ids:
            ids = np.array([f"s{i}" for i in range(presentations)], dtype=object)
            f.create_variable("stimulus_id", ("presentation",), data=ids, dtype=strings)
        else:
            f.create_variable("stimulus_id", ("presentation",), dtype=strings, chunks=(4096,))
        f.create_variable(
            "neuroid_id", ("neuroid",), data=np.array([f"n{i}" for i in range(neurons)], object), dtype=strings
        )
        f.create_variable("time_bin_start", ("time_bin",), data=np.arange(bins) * 10.0 - 50)
        f.create_variable("time_bin_end", ("time_bin",), data=np.arange(bins) * 10.0 - 40)
    return path


def test_tiny_files_declaring_huge_arrays_are_refused_or_read_lazily(tmp_path):
    """Under an address-space cap 1.5 GiB above the interpreter's: files declaring 9.6 to 48 GB are refused, naming
    the file, the variable and its declared shape, and so is one declaring 20 million stimulus ids (which xarray
    would read whole when opening it); files declaring 1 GB whose window needs 128 MB are read in blocks (peak traced
    memory under 96 MB); a .npy header without its data and a CSV padding every stimulus to one
    stimulus's 23,300 repetitions are refused (before: MemoryError tracebacks, or a DataError only from the cap)."""
    npy = tmp_path / "header-only.npy"
    with open(npy, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False, "shape": (1000, 10, 300, 400)})
    (tmp_path / "ids.txt").write_text("\n".join(f"s{i}" for i in range(1000)) + "\n")
    rows = [f"s{i},1" for i in range(23_300)] + ["blank,0"] * 23_300
    (tmp_path / "unbalanced.csv").write_text("stimulus_id,n1\n" + "\n".join(rows) + "\n")
    cases = [
        ("h5 9.6 GB", declared_h5(tmp_path / "a.h5", (1000, 10, 300, 400)), [-50, 3000]),
        ("h5 48 GB", declared_h5(tmp_path / "b.h5", (1000, 50, 300, 400)), [-50, 3000]),
        ("nc 9.6 GB", declared_nc(tmp_path / "c.nc", (1000, 300, 4000)), [-50, 3000]),
        ("nc 20M ids", declared_nc(tmp_path / "f.nc", (20_000_000, 1, 1), write_ids=False), None),
        ("npy header", npy, None),
        ("csv unbalanced", tmp_path / "unbalanced.csv", None),
        ("h5 window", declared_h5(tmp_path / "d.h5", (2000, 2, 300, 100)), [-50, 350]),
        ("nc window", declared_nc(tmp_path / "e.nc", (4000, 300, 100)), [-50, 350]),
    ]
    ids = {"npy header": str(tmp_path / "ids.txt")}
    argument = json.dumps([{"name": n, "path": str(p), "window": w, "ids": ids.get(n)} for n, p, w in cases])
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, "-c", READ_UNDER_A_CAP, argument], capture_output=True, text=True, timeout=600, env=env
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.splitlines()[-1])
    for name, path, fragment in [
        ("h5 9.6 GB", tmp_path / "a.h5", "psth declares shape (1000, 10, 300, 400) (9,600,000,000 bytes)"),
        ("h5 48 GB", tmp_path / "b.h5", "psth declares shape (1000, 50, 300, 400) (48,000,000,000 bytes)"),
        ("nc 9.6 GB", tmp_path / "c.nc", "variable 'responses' (presentation, time_bin, neuroid) declares shape"),
        ("nc 20M ids", tmp_path / "f.nc", "declares shape (20000000,) (160,000,000 bytes): 20,000,000 entries along"),
        ("npy header", npy, "the file is shorter than the array its header declares"),
        ("csv unbalanced", tmp_path / "unbalanced.csv", "stimulus_id 'blank' is shown 23,300 times"),
    ]:
        result = results[name]
        assert result.get("error") == "DataError", (name, result)
        assert result["message"].startswith(f"{path}: ") and fragment in result["message"], result
    assert results["h5 window"].get("shape") == [2000, 2, 100], results["h5 window"]
    assert results["nc window"].get("shape") == [4000, 1, 100], results["nc window"]
    for name in ("h5 window", "nc window"):
        assert results[name]["peak_mb"] < 96, (name, results[name])
