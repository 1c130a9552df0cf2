#!/usr/bin/env python
"""Train the ``insilico_cnn`` backbone's shipped weights and write them with their record.

    uv run python scripts/train_insilico_cnn.py                 # CPU, deterministic; writes sharedattr/assets/
    uv run python scripts/train_insilico_cnn.py --device cuda   # faster, not bit-reproducible

Writes ``insilico_cnn.safetensors`` (float32 state dict of the network: blocks and head) and
``insilico_cnn.json`` (with ``--weights insilico-resnet18-v1``: ``insilico_resnet18.safetensors`` and
``insilico_resnet18.json``) (architecture, training config and seeds, normalisation, test-set specs
and accuracies, sha256 of the weights, versions, wall time) atomically into ``--out``. The
defaults are :class:`trainers.insilico_cnn.TrainConfig`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from trainers.insilico_cnn import SHIPPED_WEIGHTS, WEIGHTS_CONFIGS, save, train

ASSETS = Path(__file__).resolve().parents[1] / "sharedattr" / "assets"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu (default) or cuda")
    parser.add_argument(
        "--weights",
        choices=sorted(WEIGHTS_CONFIGS),
        default="insilico-v1",
        help="which shipped weights to train: insilico-v1 (the plain CNN, default) or insilico-resnet18-v1",
    )
    parser.add_argument("--out", type=Path, default=ASSETS, help=f"output folder (default: {ASSETS})")
    parser.add_argument("--epochs", type=int, default=None, help="override the number of epochs")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=None, help="override the training seed")
    args = parser.parse_args(argv)

    overrides = {"device": args.device, "threads": args.threads}
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    if args.seed is not None:
        overrides["seed"] = args.seed
    config = dataclasses.replace(WEIGHTS_CONFIGS[args.weights](), **overrides)
    start = time.perf_counter()
    model, record = train(config, log=lambda message: print(message, flush=True))
    record["wall_time_s"]["script"] = round(time.perf_counter() - start, 1)
    weights_path = args.out / SHIPPED_WEIGHTS[args.weights]
    written = save(model, record, weights_path, weights_path.with_suffix(".json"))
    overall = written["test"]["overall"]
    print(
        json.dumps(
            {
                "mean_accuracy": overall["mean_accuracy"],
                "accuracy": overall["accuracy"],
                "sha256": written["file"]["sha256"],
                "bytes": written["file"]["bytes"],
                "wall_time_s": written["wall_time_s"],
            },
            indent=2,
        )
    )
    print(f"wrote {weights_path} and {weights_path.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
