"""Recorded responses, matched to stimuli by id."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ..errors import MissingFileError
from .stimuli import DataError, StimulusSet


@dataclass(frozen=True)
class Responses:
    """Responses ``values [S, N]`` (NaN = not measured) for stimulus ``ids`` and ``neuron_ids``."""

    ids: tuple[str, ...]
    neuron_ids: tuple[str, ...]
    values: Tensor

    @classmethod
    def from_csv(cls, path: str | Path) -> "Responses":
        path = Path(path)
        if not path.is_file():
            raise MissingFileError(path, "responses file")
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
        if not rows or not rows[0] or rows[0][0].strip() != "stimulus_id" or len(rows[0]) < 2:
            raise DataError(path, ["the first row must be a header: stimulus_id, <neuron id>, <neuron id>, ..."])
        header, body = rows[0], rows[1:]
        problems, ids, values, seen = [], [], [], set()
        neurons = [h.strip() for h in header[1:]]
        if len(set(neurons)) != len(neurons):
            problems.append("duplicate neuron ids in the header")
        for line, row in enumerate(body, start=2):
            if not row:
                continue
            if len(row) != len(header):
                problems.append(f"line {line}: {len(row)} fields, expected {len(header)}")
                continue
            sid = row[0].strip()
            if sid in seen:
                problems.append(f"line {line}: duplicate stimulus_id {sid!r}")
            seen.add(sid)
            parsed = []
            for name, cell in zip(neurons, row[1:]):
                try:
                    v = float(cell) if cell.strip() not in ("", "nan", "NaN", "NA") else math.nan
                except ValueError:
                    problems.append(f"line {line}, neuron {name}: not a number: {cell!r}")
                    v = math.nan
                if math.isinf(v):
                    problems.append(f"line {line}, neuron {name}: infinite response")
                parsed.append(v)
            ids.append(sid), values.append(parsed)
        if not ids:
            problems.append("no response rows")
        if problems:
            raise DataError(path, problems)
        tensor = torch.tensor(values, dtype=torch.float32)
        empty = [n for n, ok in zip(neurons, (~torch.isnan(tensor)).any(0).tolist()) if not ok]
        if empty:
            raise DataError(path, [f"neuron {n}: no valid (non-NaN) response" for n in empty])
        return cls(tuple(ids), tuple(neurons), tensor)

    def aligned_to(self, stimuli: StimulusSet) -> Tensor:
        """Responses ``[S, N]`` in the order of ``stimuli`` (NaN rows for stimuli without a response)."""
        index = {sid: i for i, sid in enumerate(stimuli.ids)}
        unknown = [sid for sid in self.ids if sid not in index]
        if unknown:
            raise DataError("responses", [f"stimulus_id {sid!r} is not in the stimulus set" for sid in unknown])
        out = torch.full((len(stimuli), len(self.neuron_ids)), math.nan)
        rows = torch.tensor([index[sid] for sid in self.ids])
        out[rows] = self.values
        return out
