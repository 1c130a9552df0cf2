"""What every benchmark records beside its table: the machine and the command, appended to docs/benchmarks.md."""

from __future__ import annotations

import datetime
import os
import platform
import sys
from pathlib import Path

import torch

DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def machine(device: str) -> str:
    """``Machine: …, 2 CPU cores, torch … (N threads), device …, <date>. Command: `…`.``"""
    script = Path(sys.argv[0]).name
    return (
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), device {device}, {datetime.date.today()}. "
        f"Command: `{' '.join([f'uv run python benchmarks/{script}', *sys.argv[1:]])}`."
    )


def print_and_append(block: str, write: bool = True) -> None:
    """Print ``block``; with ``write``, append it to docs/benchmarks.md."""
    print(block)
    if write:
        with open(DOCS, "a", encoding="utf-8") as f:
            f.write("\n" + block)
        print(f"appended to {DOCS}")
