#!/usr/bin/env python
"""Train the shipped diffusion prior ``insilico-ddpm-v1`` and write it in diffusers format with its record.

    uv run python scripts/train_diffusion_prior.py --threads 2    # CPU, deterministic; writes the shipped prior
    uv run python scripts/train_diffusion_prior.py --device cuda  # faster, not bit-reproducible

Writes a ``DDPMPipeline`` folder (``model_index.json``, ``unet/config.json``,
``unet/diffusion_pytorch_model.safetensors``, ``scheduler/scheduler_config.json``) and
``prior.json`` (UNet config, training config and seeds, loss curve, sample quality against real
stimuli, sha256 of the weights, versions, wall time) into ``--out``, replacing it whole
(written to a temporary folder, then renamed). The defaults are
:class:`trainers.diffusion_prior.PriorTrainConfig`. The shipped prior took 1115 s on
2 CPU cores (``--threads 2``); on cores shared with other processes, ``OMP_WAIT_POLICY=PASSIVE``
keeps torch's threads from spinning (it changes no result).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from trainers.diffusion_prior import PriorTrainConfig, prior_v2_config, save_prior, train_prior

ASSETS = Path(__file__).resolve().parents[1] / "sharedattr" / "assets"
PRIORS = {"v1": ("diffusion_prior", PriorTrainConfig), "v2": ("diffusion_prior_v2", prior_v2_config)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu (default) or cuda")
    parser.add_argument(
        "--prior",
        choices=sorted(PRIORS),
        default="v1",
        help="which shipped prior: v1 = insilico-ddpm-v1 (32 px), v2 = insilico-ddpm-v2 (64 px, 2 x 2 patches)",
    )
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: the shipped prior's folder)")
    parser.add_argument("--steps", type=int, default=None, help="override the number of optimiser steps")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=None, help="override the training seed")
    args = parser.parse_args(argv)

    overrides: dict = {"device": args.device, "threads": args.threads}
    if args.steps is not None:
        overrides["steps"] = args.steps
    if args.seed is not None:
        overrides["seed"] = args.seed
    folder, make_config = PRIORS[args.prior]
    config = dataclasses.replace(make_config(), **overrides)
    args.out = args.out or ASSETS / folder
    start = time.perf_counter()
    unet, scheduler, record = train_prior(config, log=lambda message: print(message, flush=True))
    record["wall_time_s"]["script"] = round(time.perf_counter() - start, 1)
    written = save_prior(unet, scheduler, record, args.out)
    print(
        json.dumps(
            {
                "final_loss": written["training"]["final_loss"],
                "parameters": written["unet"]["parameters"],
                "quality": {k: written["quality"][k]["fraction_present"] for k in ("samples", "real")},
                "sha256": written["file"]["sha256"],
                "bytes": written["file"]["bytes"],
                "wall_time_s": written["wall_time_s"],
            },
            indent=2,
        )
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
