"""Write one minimal example of every data format sharedattr reads, all holding the same recording.

    uv run python examples/data/make_examples.py OUT_FOLDER

Four 16 px stimuli (two bodies, two objects) as a manifest and as a BrainIO stimulus set (CSV + ZIP), and the
responses of two neurons ("11", "12"; 2 trials of b001 and o001, 1 of b002 and o002, in spikes/s) as:

| file | format | config |
|---|---|---|
| responses.csv | CSV, one row per trial | ``responses = "responses.csv"`` |
| responses.npy, ids.txt, neurons.txt | NPY ``[S, R, N]`` | ``response_ids``, ``neuron_ids`` |
| assembly.nc | NetCDF ``presentation × neuroid`` | (needs sharedattr[xarray]) |
| assembly_binned.nc | NetCDF with 10 ms ``time_bin`` s from −50 to 250 ms | ``time_window = [70, 170]`` |
| psth.npy, psth_bins.txt | PSTH ``[S, R, T, N]`` | ``time_bins``, ``time_window`` |
| psth.h5 | PSTH in HDF5 | ``time_window`` |
| session.nwb | NWB Units + a presentations table | ``time_window = [70, 170]`` (needs sharedattr[nwb]) |

Inside [70, 170) ms every binned file holds the trial's rate, outside it other values, and the NWB spikes fall
so that the window counts rate × 0.1 s of them: every file reads as the same trials. ``tests/data/test_formats.py``
checks that, and docs/fitting.md ("Your data") describes each format with these files.
"""

from __future__ import annotations

import csv
import sys
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from PIL import Image

STIMULI = [("b001", "bodies"), ("b002", "bodies"), ("o001", "objects"), ("o002", "objects")]
NEURONS = ["11", "12"]
TRIALS = np.array(  # [S, R, N] spikes/s; NaN: the stimulus was shown once
    [
        [[20.0, 10.0], [30.0, 10.0]],
        [[40.0, 0.0], [np.nan, np.nan]],
        [[10.0, 30.0], [0.0, 20.0]],
        [[0.0, 50.0], [np.nan, np.nan]],
    ]
)
INDEX = {sid: s for s, (sid, _) in enumerate(STIMULI)}  # row of each stimulus in TRIALS
STARTS = np.arange(-50.0, 250.0, 10.0)  # 30 bins of 10 ms
WINDOW = (70.0, 170.0)


def write_stimuli(out: Path) -> None:
    """images/<id>.png, manifest.csv, and the BrainIO form: stimulus_set.csv + stimulus_set.zip."""
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for sid, _ in STIMULI:
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(out / "images" / f"{sid}.png")
    with open(out / "manifest.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["stimulus_id", "path", "category"])
        writer.writerows([sid, f"images/{sid}.png", cat] for sid, cat in STIMULI)
    with open(out / "stimulus_set.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["stimulus_id", "filename", "object_name", "size_px"])
        writer.writerows([sid, f"{sid}.png", cat, 16] for sid, cat in STIMULI)
    with zipfile.ZipFile(out / "stimulus_set.zip", "w") as zf:
        for sid, _ in STIMULI:
            zf.write(out / "images" / f"{sid}.png", f"{sid}.png")


def presentations() -> list[tuple[str, int]]:
    """(stimulus id, repetition) of every trial, in presentation order."""
    return [(sid, r) for r in range(2) for s, (sid, _) in enumerate(STIMULI) if not np.isnan(TRIALS[s, r, 0])]


def write_plain(out: Path) -> None:
    with open(out / "responses.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["stimulus_id", *NEURONS])
        writer.writerows([sid, *(f"{v:g}" for v in TRIALS[INDEX[sid], r])] for sid, r in presentations())
    np.save(out / "responses.npy", TRIALS.astype(np.float32))
    (out / "ids.txt").write_text("".join(f"{sid}\n" for sid, _ in STIMULI))
    (out / "neurons.txt").write_text("".join(f"{n}\n" for n in NEURONS))


def binned() -> np.ndarray:
    """``[S, R, T, N]``: the trial's rate in the window's bins, a ramp elsewhere (NaN for missing trials)."""
    inside = (STARTS >= WINDOW[0]) & (STARTS + 10 <= WINDOW[1])
    psth = np.repeat(TRIALS[:, :, None, :], len(STARTS), axis=2)
    psth[:, :, ~inside] = 100.0 + STARTS[~inside][None, None, :, None]
    psth[np.isnan(TRIALS)[:, :, None, :].repeat(len(STARTS), axis=2)] = np.nan
    return psth


def write_binned(out: Path) -> None:
    psth = binned()
    np.save(out / "psth.npy", psth.astype(np.float32))
    (out / "psth_bins.txt").write_text("".join(f"{s:g}\n" for s in STARTS))
    try:
        import h5py
    except ImportError:
        print("h5py missing: psth.h5 not written (install sharedattr[xarray])")
    else:
        with h5py.File(out / "psth.h5", "w") as f:
            f["psth"] = psth
            f["stimulus_id"] = np.array([sid for sid, _ in STIMULI], dtype="S")
            f["neuroid_id"] = np.array(NEURONS, dtype="S")
            f["time_bin_start"] = STARTS
            f["time_bin_end"] = STARTS + 10


def write_netcdf(out: Path) -> None:
    try:
        import xarray as xr
    except ImportError:
        print("xarray missing: assembly.nc and assembly_binned.nc not written (install sharedattr[xarray])")
        return
    shown = presentations()
    coords = {
        "stimulus_id": ("presentation", [sid for sid, _ in shown]),
        "repetition": ("presentation", [r for _, r in shown]),
        "neuroid_id": ("neuroid", NEURONS),
    }
    values = np.stack([TRIALS[INDEX[sid], r] for sid, r in shown])
    xr.DataArray(values, dims=("presentation", "neuroid"), coords=coords, name="responses").to_netcdf(
        out / "assembly.nc", engine="h5netcdf"
    )
    psth = binned()
    bins = np.stack([psth[INDEX[sid], r] for sid, r in shown])  # [P, T, N]
    coords |= {"time_bin_start": ("time_bin", STARTS), "time_bin_end": ("time_bin", STARTS + 10)}
    xr.DataArray(bins, dims=("presentation", "time_bin", "neuroid"), coords=coords, name="responses").to_netcdf(
        out / "assembly_binned.nc", engine="h5netcdf"
    )


def write_nwb(out: Path) -> None:
    try:
        from pynwb import NWBHDF5IO, NWBFile
        from pynwb.epoch import TimeIntervals
    except ImportError:
        print("pynwb missing: session.nwb not written (install sharedattr[nwb])")
        return
    nwbfile = NWBFile(
        session_description="sharedattr example session",
        identifier="sharedattr-example",
        session_start_time=datetime(2024, 1, 1, tzinfo=timezone.utc),
    )
    table = TimeIntervals(name="presentations", description="one row per stimulus presentation")
    table.add_column("stimulus_id", "the manifest's stimulus id")
    spikes: dict[int, list[float]] = {int(n): [] for n in NEURONS}
    for p, (sid, r) in enumerate(presentations()):
        onset = 1.0 + p
        table.add_row(start_time=onset, stop_time=onset + 0.3, stimulus_id=sid)
        for n, unit in enumerate(spikes):
            count = round(TRIALS[INDEX[sid], r, n] * (WINDOW[1] - WINDOW[0]) / 1000)
            spikes[unit] += list(onset + (WINDOW[0] + 5 + 9 * np.arange(count)) / 1000)  # inside the window
            spikes[unit] += [onset + 0.02, onset + 0.2]  # before and after it
    for unit, times in spikes.items():
        nwbfile.add_unit(spike_times=sorted(times), id=unit)
    nwbfile.add_time_intervals(table)
    with NWBHDF5IO(str(out / "session.nwb"), "w") as io:
        io.write(nwbfile)


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_stimuli(out)
    write_plain(out)
    write_binned(out)
    write_netcdf(out)
    write_nwb(out)
    print(f"examples written to {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "example-data"))
