#!/usr/bin/env python
"""Train the backbone zoo: the ``insilico-v1`` network on tasks defined without pairs, neurons or attributions.

    uv run python scripts/train_zoo.py --out runs/zoo                       # every arm x seeds 0 and 1
    uv run python scripts/train_zoo.py --arm augmented --seed 1 --threads 2  # one weights file

Writes ``<arm>-s<seed>.safetensors`` (loadable as an ``insilico_cnn`` backbone through ``weights_file``) and its
record ``<arm>-s<seed>.json`` (task, config, seeds, label correlations, held-out scores, wall time, sha256)
atomically into ``--out``, one seed of every arm after the other. The defaults are :class:`trainers.zoo.ZooConfig`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from trainers.zoo import ARMS, SEEDS, ZooConfig, save, train_zoo, weights_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/zoo"), help="output folder (default: runs/zoo)")
    parser.add_argument("--arm", choices=ARMS, action="append", help="train this arm (repeatable; default: all)")
    parser.add_argument("--seed", type=int, action="append", help="training seed (repeatable; default: 0 and 1)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu (default) or cuda")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--epochs", type=int, default=None, help="override the number of epochs")
    args = parser.parse_args(argv)

    overrides = {"device": args.device, "threads": args.threads}
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    args.out.mkdir(parents=True, exist_ok=True)
    for seed in args.seed or SEEDS:  # seed 0 of every arm first
        for arm in args.arm or ARMS:
            config = dataclasses.replace(ZooConfig(arm=arm, seed=seed), **overrides)
            print(f"== {config.weights_name}", flush=True)
            start = time.perf_counter()
            model, record = train_zoo(config, log=lambda message: print(message, flush=True))
            record["wall_time_s"]["script"] = round(time.perf_counter() - start, 1)
            path = weights_path(args.out, arm, seed)
            written = save(model, record, path, path.with_suffix(".json"))
            summary = {
                "weights": written["weights"],
                "held_out": written["test"]["overall"],
                "max_abs_label_r_with_a_part": written["label_correlations"]["max_abs_r_with_a_part"],
                "wall_time_s": written["wall_time_s"],
                "sha256": written["file"]["sha256"],
            }
            print(json.dumps(summary, indent=2), flush=True)
            print(f"wrote {path} and {path.with_suffix('.json')}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
