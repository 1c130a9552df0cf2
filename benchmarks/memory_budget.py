"""Peak memory of path methods with and without the memory budget (``attribution.memory_mb``).

    uv run python benchmarks/memory_budget.py [--model resnet50 --layer layer3 --size 224 --pairs 8]

Each case runs in a fresh process: a torchvision backbone (random weights) cut at ``--layer`` with a ridge
readout, the run's pair step (:meth:`sharedattr.attribution.engine.Block.maps`) on ``--pairs`` pairs for
one method, with the images per pass unbounded or from the budget. Reports peak resident memory (VmHWM),
seconds, and the largest batch the backbone saw; and the estimate of one image's cost
(:func:`sharedattr.runtime.memory.bytes_per_image`) against the measured growth per image.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

CASES = {
    "integrated_gradients": {"n_steps": 16},
    "integrated_gradients/64": {"n_steps": 64},
    "smoothgrad": {"samples": 32},
    "gradient_shap": {"n_samples": 32},
    "parallel_backprop/ig": {"path": "ig", "n_steps": 16},
}


def peak_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(args: argparse.Namespace) -> None:
    import torch

    from sharedattr.attribution.engine import Block, ExplainSettings, NamedMethod
    from sharedattr.data.pairs import PairImages
    from sharedattr.encoding.model import EncodingModel
    from sharedattr.encoding.readouts.ridge import RidgeReadout
    from sharedattr.plugins.loading import get_registry
    from sharedattr.runtime.memory import bytes_per_image, images_per_pass

    torch.manual_seed(0)
    registry = get_registry()
    backbone = registry.build("backbone", "torchvision", model=args.model, layer=args.layer, input_size=args.size)
    with torch.no_grad():
        latents = backbone(backbone.preprocess(torch.rand(24, 3, args.size, args.size)))
    readout = RidgeReadout(folds=3).fit(latents, torch.randn(24, 4))
    model = EncodingModel(backbone, readout).eval()
    del latents
    name = args.case.split("/")[0]
    params = CASES[args.case]
    method = NamedMethod(args.case, {"name": name, **params}, lambda m: registry.build("method", name, m, **params))
    images = PairImages(
        torch.rand(args.pairs, 3, args.size, args.size), torch.rand(args.pairs, 3, args.size, args.size)
    )
    per_image = bytes_per_image(model, (args.size, args.size), 3)
    limit = None if args.budget == 0 else images_per_pass(args.budget, per_image)
    settings = ExplainSettings(batch_size=args.pairs, pass_limit=limit)
    seen = [0]
    backbone.register_forward_pre_hook(lambda _m, a: seen.__setitem__(0, max(seen[0], len(a[0]))))
    before = peak_mb()
    start = time.perf_counter()
    Block(model, images, torch.arange(args.pairs) % 4, method, settings).maps()
    print(
        json.dumps(
            {
                "seconds": time.perf_counter() - start,
                "peak_mb": peak_mb(),
                "growth_mb": peak_mb() - before,
                "before_mb": before,
                "largest_batch": seen[0],
                "images_per_pass": limit,
                "estimate_mb_per_image": per_image / 2**20,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--layer", default="layer3")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--budget", type=int, default=2048, help="MiB; 0 = unbounded")
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        child(args)
        return
    print(f"{args.model} {args.layer} {args.size} px, {args.pairs} pairs; budget {args.budget} MiB vs unbounded\n")
    print("| method | unbounded: peak MB (+ during the call), largest batch, s | budget: the same |")
    print("|---|---|---|")
    for case in args.cases.split(","):
        cells = []
        for budget in (0, args.budget):
            command = [sys.executable, __file__, "--case", case, "--budget", str(budget)]
            command += [
                "--model",
                args.model,
                "--layer",
                args.layer,
                "--size",
                str(args.size),
                "--pairs",
                str(args.pairs),
            ]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                cells.append(f"failed ({done.returncode}): {done.stderr.strip().splitlines()[-1][:80]}")
                continue
            r = json.loads(done.stdout.strip().splitlines()[-1])
            cells.append(f"{r['peak_mb']:.0f} (+{r['growth_mb']:.0f}), {r['largest_batch']}, {r['seconds']:.1f}")
            estimate = r["estimate_mb_per_image"]
        print(f"| {case} | {cells[0]} | {cells[1]} |", flush=True)
    print(f"\nestimated cost of one image: {estimate:.0f} MiB")


if __name__ == "__main__":
    main()
