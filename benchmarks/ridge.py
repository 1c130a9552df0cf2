"""Ridge readout: fit time at real size, next to scikit-learn's RidgeCV on identical data.

    uv run python benchmarks/ridge.py [--images 2000 --features 50000 --neurons 500]

Prints a markdown table and appends it, with machine info, to docs/benchmarks.md.
scikit-learn is a test-only dependency (the dev group). Both fit all neurons with a
per-neuron penalty from the same grid: sharedattr by k-fold CV on one shared Gram
eigendecomposition; RidgeCV by its efficient leave-one-out (GCV), the only mode in which
it picks a penalty per target. Correctness is checked where both are defined
identically: at one fixed penalty, the two give the same predictions (allclose).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from sharedattr.encoding.readouts.ridge import RidgeReadout

ALPHAS = tuple(10.0**k for k in range(-1, 7))


def planted(n: int, d: int, neurons: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Features with a decaying spectrum (like CNN latents) and noisy linear responses."""
    rng = np.random.default_rng(seed)
    rank = min(n, 256)
    x = (rng.standard_normal((n, rank)) * np.linspace(3, 0.1, rank)) @ rng.standard_normal((rank, d)) / np.sqrt(rank)
    x += 0.1 * rng.standard_normal((n, d))
    w = rng.standard_normal((d, neurons)) / np.sqrt(d)
    y = x @ w
    y += rng.standard_normal((n, neurons)) * y.std(0) * rng.uniform(0.2, 3.0, neurons)
    return x.astype(np.float32), y.astype(np.float32)


def time_it(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--features", type=int, default=50000)
    parser.add_argument("--neurons", type=int, default=500)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--no-sklearn", action="store_true")
    parser.add_argument("--no-write", action="store_true", help="print only; do not append to docs/benchmarks.md")
    args = parser.parse_args()
    n, d, m = args.images, args.features, args.neurons
    x, y = planted(n, d, m)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    rows = []

    t_ours, readout = time_it(lambda: RidgeReadout(alphas=ALPHAS, folds=args.folds).fit(xt, yt))
    rows.append((f"sharedattr ridge, {args.folds}-fold CV, per-neuron α", t_ours))
    check = ""
    if not args.no_sklearn:
        from sklearn.linear_model import Ridge, RidgeCV

        t_sk, _ = time_it(lambda: RidgeCV(alphas=ALPHAS, alpha_per_target=True).fit(x.astype(np.float64), y))
        rows.append(("scikit-learn RidgeCV (LOO/GCV), per-target α", t_sk))
        a = 100.0
        ours = RidgeReadout(alphas=(a,), folds=2).fit(xt, yt)
        sk = Ridge(alpha=a).fit(x.astype(np.float64), y.astype(np.float64))
        probe = x[:200]
        with torch.no_grad():
            pred_ours = ours(torch.from_numpy(probe)).numpy()
        pred_sk = sk.predict(probe.astype(np.float64))
        close = np.allclose(pred_ours, pred_sk, rtol=1e-3, atol=1e-4 * np.abs(pred_sk).max())
        check = (
            f"At a fixed α = {a:g}, predictions of sharedattr and scikit-learn `Ridge` agree: "
            f"allclose = {close} (max abs difference {np.abs(pred_ours - pred_sk).max():.2e}, "
            f"response scale {np.abs(pred_sk).max():.2f})."
        )

    header = f"### Ridge fit: {n} images × {d} features × {m} neurons, {len(ALPHAS)} penalties"
    lines = [header, "", "| fit | seconds |", "|---|---|"]
    lines += [f"| {name} | {t:.1f} |" for name, t in rows]
    lines += ["", check] if check else []
    chosen = np.bincount(np.searchsorted(ALPHAS, readout.alpha.numpy()), minlength=len(ALPHAS))
    lines += ["", f"Penalties chosen (count per α in {list(ALPHAS)}): {chosen.tolist()}."]
    machine = (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, torch "
        f"{torch.__version__} ({torch.get_num_threads()} threads), {datetime.date.today()}"
    )
    lines += ["", f"Machine: {machine}. Command: `uv run python benchmarks/ridge.py`."]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        out = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
        existing = (
            out.read_text() if out.exists() else "# Benchmarks\n\nTables appended by the scripts in `benchmarks/`.\n"
        )
        out.write_text(existing.rstrip() + "\n\n" + text + "\n")


if __name__ == "__main__":
    main()
