"""A lab-sized run in bounded memory: time and peak resident memory of ``sharedattr run``, stage by stage.

    uv run python benchmarks/lab_scale.py [--images 2000 --neurons 100 --size 224 --workdir /tmp/sharedattr-lab]
    uv run python benchmarks/lab_scale.py --fit-only   # the fit stage alone, on synthetic memory-mapped features

The run of the project's issue 17: ``--images`` in-silico images (half bodies, half objects, ``--size`` px RGB, with
part masks; :func:`sharedattr.data.insilico.write_insilico`, seeded), responses of ``--neurons`` ground-truth neurons
tuned to body parts (:func:`~sharedattr.data.insilico.neuron_population`: 5 kinds × ``neurons / 5`` jittered
variants), a torchvision ResNet-50 with random weights cut at ``layer3`` (d = 1024 × 14 × 14 = 200,704 at 224 px),
the ridge readout on the flattened latents, ``parallel_backprop``, ``saliency`` and ``integrated_gradients`` (16
steps) on the 8 best neurons × 2 drivers, scored by ``relevance_mass`` and ``deletion``. ``sharedattr run`` runs in a
subprocess under ``/usr/bin/time -v`` twice, each into a fresh ``--out``: with the feature cache cold (emptied
first), then warm. Reports the wall time and peak RSS of each run, the seconds and peak MB of every stage
(``timings.json``), the held-out r and the size of the feature matrix; prints a markdown table and appends it, with
the machine and the command, to docs/benchmarks.md (not with ``--no-write``).

``--fit-only`` instead measures :func:`sharedattr.encoding.fit.fit_readout` with the ridge readout in a fresh
process on a synthetic float32 feature matrix of ``--images`` × 1024 × 14 × 14, memory-mapped as the feature cache
opens it, against ``--neurons`` responses: its peak resident memory (VmHWM, reset at the fit's start) against the
size of the matrix. MB are 10⁶ bytes throughout.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from record import machine, print_and_append

STAGES = ("fit", "match", "attribute", "write", "synthesize")
HEADER = "## Lab-sized run (`benchmarks/lab_scale.py`)"
CONFIG = """\
# Written by benchmarks/lab_scale.py: the lab-sized run of issue 17.
name = "lab-scale"
seed = {seed}
device = "cpu"
batch_size = 32
cache_dir = "{cache}"

[data]
stimuli = "{data}/stimuli/manifest.csv"
responses = "{data}/responses.csv"
neuron_parts = "{data}/neuron_parts.json"
preferred_category = "bodies"

[backbone]
name = "torchvision"
model = "resnet50"
layer = "layer3"
input_size = {size}        # random weights (weights = None, the default): no download

[readout]
name = "ridge"
pooling = "none"           # the flattened latents, d = 1024 x 14 x 14 at 224 px

[selection]
top_k = 8
drivers_per_neuron = 2

[[methods]]
name = "parallel_backprop"

[[methods]]
name = "saliency"

[[methods]]
name = "integrated_gradients"
n_steps = 16

[[metrics]]
name = "relevance_mass"

[[metrics]]
name = "deletion"
{deletion}"""


def mb(n_bytes: float) -> float:
    return n_bytes / 1e6


def write_data(args: argparse.Namespace, folder: Path) -> float:
    """The stimuli, responses and ground truth in ``folder`` (kept when already written with the same arguments);
    returns the seconds it took (0 when kept)."""
    from sharedattr.data.insilico import neuron_population, write_insilico
    from sharedattr.data.insilico.render import SceneOptions

    if args.neurons % 5:
        raise SystemExit("--neurons must be a multiple of 5 (5 kinds of ground-truth neuron)")
    if args.images % 2:
        raise SystemExit("--images must be even (half bodies, half objects)")
    key = {"images": args.images, "neurons": args.neurons, "size": args.size, "seed": args.seed, "channels": 3}
    marker = folder / "lab_scale.json"
    if marker.is_file() and json.loads(marker.read_text()) == key:
        return 0.0
    shutil.rmtree(folder, ignore_errors=True)
    start = time.perf_counter()
    write_insilico(
        folder,
        args.images // 2,
        args.size,
        seed=args.seed,
        neurons=neuron_population(args.neurons // 5, seed=args.seed),
        repeats=2,
        options=SceneOptions(channels=3),
    )
    marker.write_text(json.dumps(key))
    return time.perf_counter() - start


def time_v(stderr: str) -> dict[str, float]:
    """Wall seconds and maximum resident set size (MB) from ``/usr/bin/time -v``'s report."""
    out = {}
    for line in stderr.splitlines():
        line = line.strip()
        if line.startswith("Maximum resident set size (kbytes):"):
            out["peak_mb"] = mb(int(line.rsplit(":", 1)[1]) * 1024)
        elif line.startswith("Elapsed (wall clock) time"):
            parts = [float(p) for p in line.rsplit(" ", 1)[1].split(":")]
            out["wall_s"] = sum(p * 60**i for i, p in enumerate(reversed(parts)))
    return out


def run_once(config: Path, out: Path, threads: int) -> dict:
    """``sharedattr run config --out out`` under ``/usr/bin/time -v`` in a fresh ``out``; what it measured."""
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    command = ["/usr/bin/time", "-v", sys.executable, "-m", "sharedattr", "run", str(config), "--out", str(out)]
    command.append("--no-progress")
    print("$", " ".join(command), flush=True)
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    measured = time_v(done.stderr)
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-40:])
        raise SystemExit(f"sharedattr run failed ({done.returncode}); measured so far {measured}:\n{tail}")
    timings = json.loads((out / "timings.json").read_text())
    with open(out / "scores.csv", newline="") as f:
        r = [float(row["test_r"]) for row in csv.DictReader(f) if row["test_r"]]
    with open(out / "methods.csv", newline="") as f:
        methods = {row["method"]: float(row["seconds"]) for row in csv.DictReader(f)}
    metrics: dict[str, float] = {}
    with open(out / "metric_times.csv", newline="") as f:
        for row in csv.DictReader(f):
            metrics[row["metric"]] = metrics.get(row["metric"], 0.0) + float(row["seconds"])
    return {**measured, "stages": timings, "r": r, "methods": methods, "metrics": metrics}


def lab_run(args: argparse.Namespace) -> str:
    """Both runs (cache cold, then warm); the markdown block."""
    import numpy as np

    work = Path(args.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    data, cache = work / "data", work / "feature-cache"
    seconds = write_data(args, data)
    print(f"data in {data} ({f'written in {seconds:.0f} s' if seconds else 'kept'})", flush=True)
    config = work / "lab.toml"
    deletion = "" if args.deletion_steps is None else f"steps = {args.deletion_steps}\n"
    config.write_text(CONFIG.format(seed=args.seed, cache=cache, data=data, size=args.size, deletion=deletion))
    results = {}
    for label in args.runs:
        if label == "cold":
            shutil.rmtree(cache, ignore_errors=True)
        results[label] = run_once(config, work / f"out-{label}", args.threads)
        print(label, json.dumps({k: v for k, v in results[label].items() if k != "r"}), flush=True)
    files = sorted(cache.glob("features-*.npy"))
    if not files:
        raise SystemExit(f"no feature cache file in {cache}")
    shape = tuple(np.load(files[0], mmap_mode="r").shape)
    feature_bytes = 4 * int(np.prod(shape))

    lines = [
        f"### {args.images} images ({args.images // 2} bodies, {args.images // 2} objects) at {args.size} px RGB, "
        f"{args.neurons} neurons: ResNet-50 (random weights) `layer3` + ridge, 3 methods × 8 neurons × 2 drivers",
        "",
        "| feature cache | wall s | peak RSS MB (largest stage) | `time -v` max RSS MB | "
        + " | ".join(f"{s}: s, peak MB" for s in STAGES)
        + " |",
        "|---|---|---|---|" + "---|" * len(STAGES),
    ]
    for label, res in results.items():
        cells = []
        for stage in STAGES:
            record = res["stages"].get(stage)
            if record is None:
                cells.append("–")
            elif isinstance(record, dict):
                peak = "–" if record["peak_rss_mb"] is None else f"{record['peak_rss_mb']:.0f}"
                star = "" if record.get("peak_of") == "stage" else "*"
                cells.append(f"{record['seconds']:.1f}, {peak}{star}")
            else:
                cells.append(f"{record:.1f}, –")
        peaks = [r["peak_rss_mb"] for r in res["stages"].values() if isinstance(r, dict) and r["peak_rss_mb"]]
        run_peak = f"{max(peaks):.0f}" if peaks else "–"
        row = [label, f"{res['wall_s']:.0f}", run_peak, f"{res['peak_mb']:.0f}", *cells]
        lines.append("| " + " | ".join(row) + " |")
    r = results[args.runs[-1]]["r"]
    fit_peak = results[args.runs[0]]["stages"]["fit"]["peak_rss_mb"]
    cost = []
    for label, res in results.items():
        methods, metrics = sum(res["methods"].values()), sum(res["metrics"].values())
        cost.append(
            f"{label}: methods {methods:.1f} s ("
            + ", ".join(f"{k} {v:.1f}" for k, v in res["methods"].items())
            + f"), metrics {metrics:.1f} s ("
            + ", ".join(f"{k} {v:.1f}" for k, v in res["metrics"].items())
            + f"): metrics ÷ methods = {metrics / methods:.2f}"
        )
    lines += [
        "",
        f"Feature matrix: {shape[0]} × {' × '.join(map(str, shape[1:]))} float32 = {mb(feature_bytes) / 1e3:.2f} GB "
        f"(the cache file). Held-out r over the {len(r)} neurons: median {statistics.median(r):.3f} "
        f"(min {min(r):.3f}, max {max(r):.3f}). Stage seconds and peak MB from `timings.json` (VmHWM reset at each "
        "stage start; * where it could not be reset); the run's peak RSS is the largest of them. `/usr/bin/time -v` "
        "reads the same kernel high-water mark when the process exits, which the reset at the last stage start "
        "lowered: its maximum resident set size is the peak since then (the last stage and the report), not the "
        "run's. "
        f"The {args.runs[0]} fit stage (extraction and fit) peaked at {fit_peak:.0f} MB, "
        f"{fit_peak / mb(feature_bytes):.2f}× the feature matrix. Deletion steps: "
        f"{args.deletion_steps or 'the default (20)'}. Attribution and scoring seconds (methods.csv, "
        "metric_times.csv): " + "; ".join(cost) + ".",
        "",
        machine("cpu"),
    ]
    return "\n".join(lines) + "\n"


FIT_PROBE = """
import json, sys, time
import numpy as np, torch
from torch import nn
from sharedattr.encoding.fit import FitSettings, fit_readout
from sharedattr.encoding.readouts.ridge import RidgeReadout

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
latents = torch.from_numpy(np.load(sys.argv[1], mmap_mode="c"))  # as the feature cache opens it
responses = torch.from_numpy(np.load(sys.argv[2]))
backbone = nn.Identity()
backbone.input_size, backbone.in_channels = (224, 224), 3
open("/proc/self/clear_refs", "w").write("5")
start, t = status("VmRSS"), time.perf_counter()
fit = fit_readout(RidgeReadout(), backbone, latents, responses, [str(i) for i in range(responses.shape[1])],
                  FitSettings(test_fraction=0.2, split_seed=0))
print(json.dumps({"seconds": time.perf_counter() - t, "start": start, "peak": status("VmHWM"),
                  "features": latents.numel() * 4, "r": float(fit.test_r.median())}))
"""


def fit_only(args: argparse.Namespace) -> str:
    """The fit stage on synthetic memory-mapped features; the markdown block."""
    import numpy as np

    work = Path(args.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    n, shape = args.images, (1024, 14, 14)
    path, ypath = work / f"synthetic-{n}.npy", work / f"synthetic-{n}-responses.npy"
    if not (path.is_file() and ypath.is_file()):
        rng = np.random.default_rng(args.seed)
        d = int(np.prod(shape))
        readout = rng.standard_normal((shape[0], args.neurons)).astype(np.float32)
        ys = []
        with open(path, "wb") as f:  # plain writes, as the feature cache: the pages are not resident in the fit
            np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (n, *shape)})
            for start in range(0, n, 50):
                block = np.maximum(rng.standard_normal((min(50, n - start), d), dtype=np.float32), 0)  # ReLU-like
                ys.append(block.reshape(len(block), shape[0], -1).mean(2) @ readout)  # pooled linear readouts
                f.write(block.tobytes())
        y = np.concatenate(ys)
        np.save(ypath, (y + 0.3 * y.std() * rng.standard_normal(y.shape)).astype(np.float32))
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    done = subprocess.run(
        [sys.executable, "-c", FIT_PROBE, str(path), str(ypath)], capture_output=True, text=True, env=env
    )
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    m = json.loads(done.stdout.strip().splitlines()[-1])
    features = m["features"]
    lines = [
        f"### Fit stage: ridge on {n} × 1024 × 14 × 14 synthetic float32 features (memory-mapped), "
        f"{args.neurons} neurons",
        "",
        "| feature matrix MB | RSS at the start MB | fit peak MB | peak / features | growth / features | s |",
        "|---|---|---|---|---|---|",
        f"| {mb(features):.0f} | {mb(m['start']):.0f} | {mb(m['peak']):.0f} | {m['peak'] / features:.2f}× | "
        f"{(m['peak'] - m['start']) / features:.2f}× | {m['seconds']:.1f} |",
        "",
        "Peak: VmHWM of a fresh process, reset just before `fit_readout` (which reads the training rows, fits, and "
        "predicts every image); growth: the peak less the resident memory at that reset (torch and the map opened).",
        "",
        machine("cpu"),
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000, help="half bodies, half objects")
    parser.add_argument("--neurons", type=int, default=100, help="a multiple of 5")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="OMP_NUM_THREADS of the run")
    parser.add_argument("--workdir", default="/tmp/sharedattr-lab")
    parser.add_argument("--deletion-steps", type=int, default=None, help="deletion's steps (default: its default)")
    parser.add_argument(
        "--runs", nargs="+", default=["cold", "warm"], choices=["cold", "warm"], help="which runs, in order"
    )
    parser.add_argument("--fit-only", action="store_true", help="only the fit stage, on synthetic features")
    parser.add_argument("--no-write", action="store_true", help="print only; do not append to docs/benchmarks.md")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)  # as OMP_NUM_THREADS of the runs, for the machine line
    block = fit_only(args) if args.fit_only else lab_run(args)
    docs = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
    if HEADER not in docs.read_text(encoding="utf-8"):
        block = f"{HEADER}\n\n{block}"
    print_and_append(block, write=not args.no_write)


if __name__ == "__main__":
    main()
