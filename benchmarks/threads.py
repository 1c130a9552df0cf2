"""How a process uses its cores: torch's threads inside each operation, or one thread per piece of work with the
pieces side by side (``sharedattr.runtime.numerics.Pieces``), and what each does to the bits.

    uv run python benchmarks/threads.py [--threads 2] [--repeats 3] [--no-write]

Work measured, each as the pipeline does it, on random data (no downloads):

- ``features``: a torchvision ResNet-50 cut at ``layer3`` (random weights) on 64 images of 224 px in batches of 8
  (the fit stage's feature extraction);
- ``gram``: the ridge fit's Gram matrix ``x xᵀ`` of 1000 × 50,000 float64 features, in 4 × 4 tiles of rows;
- ``attribution``: saliency (forward + input gradient) of the same network on 8 images, batch of 8 (one work item);
- ``readout grad``: the gradient of a ``[16, 147456] @ [147456, 22]`` product (an attention readout's key weights).

For each: the seconds (best of ``--repeats``) with torch on ``--threads`` threads, on 1 thread, and as pieces on
``--threads`` workers of 1 thread; and whether each gives the bits of 1 thread.
"""

from __future__ import annotations

import argparse
import time

import torch


def _features(model: torch.nn.Module, images: torch.Tensor):
    def piece(batch: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model(batch)

    return piece, list(images.split(8))


def _gram(x: torch.Tensor):
    n = x.shape[0]
    block = -(-n // 4)
    tiles = [(i, j) for i in range(0, n, block) for j in range(i, n, block)]

    def piece(tile: tuple[int, int]) -> torch.Tensor:
        i, j = tile
        return x[i : i + block] @ x[j : j + block].T

    return piece, tiles


def _attribution(model: torch.nn.Module, images: torch.Tensor):
    def piece(batch: torch.Tensor) -> torch.Tensor:
        batch = batch.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(model(batch).flatten(1)[:, 0].sum(), batch)
        return grad

    return piece, [images]


def _readout_grad(a: torch.Tensor, b: torch.Tensor):
    def piece(_: int) -> torch.Tensor:
        return a @ b

    return piece, [0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="print only; do not append to docs/benchmarks.md")
    args = parser.parse_args()

    import torchvision

    from record import machine, print_and_append
    from sharedattr.runtime.numerics import Pieces

    torch.manual_seed(0)
    net = torchvision.models.resnet50().eval()
    layer3 = torch.nn.Sequential(*list(net.children())[:7]).requires_grad_(False)
    images = torch.rand(64, 3, 224, 224)
    work = {
        "features (ResNet-50 layer3, 64 images of 224 px, batches of 8)": _features(layer3, images),
        "gram (1000 × 50,000 float64, 10 tiles)": _gram(torch.randn(1000, 50_000, dtype=torch.float64)),
        "attribution (saliency, 8 images, one batch)": _attribution(layer3, images[:8]),
        "readout grad ([16, 147456] @ [147456, 22])": _readout_grad(torch.randn(147456, 16).T, torch.randn(147456, 22)),
    }
    rows = []
    for name, (function, pieces) in work.items():
        results, seconds = {}, {}
        for label, threads, workers in (
            ("threads", args.threads, 1),
            ("one", 1, 1),
            ("pieces", 1, args.threads),
        ):
            best = float("inf")
            for _ in range(args.repeats):
                torch.set_num_threads(threads)
                start = time.perf_counter()
                if label == "pieces":
                    out = Pieces(workers).run(function, pieces)
                else:
                    out = [function(p) for p in pieces]
                best = min(best, time.perf_counter() - start)
            results[label], seconds[label] = out, best
        same = {label: all(torch.equal(a, b) for a, b in zip(results[label], results["one"])) for label in ("threads",)}
        same["pieces"] = all(torch.equal(a, b) for a, b in zip(results["pieces"], results["one"]))
        rows.append(
            f"| {name} | {seconds['threads']:.2f} | {seconds['one']:.2f} | {seconds['pieces']:.2f} | "
            f"{seconds['one'] / seconds['threads']:.2f} | {seconds['one'] / seconds['pieces']:.2f} | "
            f"{'yes' if same['threads'] else 'no'} | {'yes' if same['pieces'] else 'no'} |"
        )
        print(rows[-1], flush=True)
    t = args.threads
    block = "\n".join(
        [
            f"### Threads inside operations, or pieces side by side ({t} threads)",
            "",
            f"| work | {t} threads s | 1 thread s | {t} pieces × 1 thread s | speed-up, threads | speed-up, pieces "
            "| threads = 1-thread bits | pieces = 1-thread bits |",
            "|---|---|---|---|---|---|---|---|",
            *rows,
            "",
            f"Best of {args.repeats} runs each. " + machine("cpu"),
            "",
        ]
    )
    print_and_append(block, write=not args.no_write)


if __name__ == "__main__":
    main()
