"""The cost of parallel_backprop's sharing configurations relative to its default, measured in one run.

    uv run python benchmarks/sharing_cost.py [--items 200 --size 64 --repeats 3 --threads 1]

On the shipped ``insilico_cnn`` cut at block3 (``--size`` px) with a ridge readout (pooling none) fitted to planted
responses of random images, each configuration explains the same ``--items`` (neuron, pair) items of random images;
the table gives each one's best wall-clock and best CPU (process) time over interleaved repeats (other work on a
shared machine only ever adds time; on a crowded machine the CPU time, with one thread, is the steadier of the two)
and their ratios to the default (``product``, ``layer``). Prints a markdown table; writes nothing.
"""

from __future__ import annotations

import argparse
import time

import torch

from sharedattr.attribution.parallel_backprop import ParallelBackprop
from sharedattr.encoding.backbones.insilico_cnn import InsilicoCNNBackbone
from sharedattr.encoding.model import EncodingModel
from sharedattr.encoding.readouts.ridge import RidgeReadout

CONFIGS = {
    "product, layer (default)": {},
    "own, layer": {"variant": "own"},
    "product, correspondence, layer": {"sharing": "correspondence"},
    "positive, correspondence, layer": {"sharing": "correspondence", "variant": "positive"},
    "product, layer, share_at=block2": {"share_at": "block2"},
    "positive, layer, share_at=block2": {"share_at": "block2", "variant": "positive"},
    "positive, correspondence, layer, share_at=block2": {
        "share_at": "block2",
        "variant": "positive",
        "sharing": "correspondence",
    },
    "own, layer, share_at=block2": {"share_at": "block2", "variant": "own"},
    "product, gradient": {"path": "gradient"},
    "product, correspondence, gradient": {"sharing": "correspondence", "path": "gradient"},
    "positive, correspondence, gradient": {"sharing": "correspondence", "variant": "positive", "path": "gradient"},
    "product, gradient, share_at=block2": {"share_at": "block2", "path": "gradient"},
    "positive, gradient, share_at=block2": {"share_at": "block2", "variant": "positive", "path": "gradient"},
}


def model_and_items(size: int, items: int) -> tuple[EncodingModel, tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The model (4 neurons fitted to planted responses of 200 random images) and ``items`` random pairs."""
    g = torch.Generator().manual_seed(0)
    backbone = InsilicoCNNBackbone(layer="block3", input_size=size)
    with torch.no_grad():
        latents = backbone(backbone.preprocess(torch.rand(200, 3, size, size, generator=g)))
    responses = latents.flatten(1) @ torch.randn(latents[0].numel(), 4, generator=g)
    model = EncodingModel(backbone, RidgeReadout(folds=3).fit(latents, responses)).eval()
    pairs = torch.rand(items, 3, size, size, generator=g), torch.rand(items, 3, size, size, generator=g)
    return model, pairs, torch.arange(items) % 4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, pairs, targets = model_and_items(args.size, args.items)
    methods = {name: ParallelBackprop(model, **config) for name, config in CONFIGS.items()}
    for method in methods.values():  # warm-up
        method.attribute((pairs[0][:2], pairs[1][:2]), target=targets[:2])
    wall = dict.fromkeys(methods, float("inf"))
    cpu = dict.fromkeys(methods, float("inf"))
    for _ in range(args.repeats):
        for name, method in methods.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            method.attribute(pairs, target=targets)
            cpu[name] = min(cpu[name], time.process_time() - start_cpu)
            wall[name] = min(wall[name], time.perf_counter() - start)
    default = "product, layer (default)"
    print(
        f"{args.items} items, insilico_cnn block3 at {args.size} px + ridge, {args.threads} thread(s), best of "
        f"{args.repeats}\n\n| configuration | wall s | × default | CPU s | × default |\n|---|---|---|---|---|"
    )
    for name in methods:
        print(
            f"| {name} | {wall[name]:.3f} | {wall[name] / wall[default]:.2f} | {cpu[name]:.3f} | "
            f"{cpu[name] / cpu[default]:.2f} |"
        )


if __name__ == "__main__":
    main()
