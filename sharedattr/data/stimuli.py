"""Stimulus sets, validated before any compute starts.

Stimuli come from a CSV manifest (``stimulus_id, path, category``, optional ``mask``) or a
folder with one sub-folder of images per category. Every problem found is reported at once.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import MissingFileError, UserError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif"}
MAX_LISTED = 20


class DataError(UserError):
    """Problems in the user's stimuli or responses, listed all at once."""

    def __init__(self, source: object, problems: list[str]) -> None:
        self.source, self.problems = source, problems
        shown = problems[:MAX_LISTED]
        more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        super().__init__(f"{source}: {len(problems)} problem(s):\n" + "\n".join(f"  - {p}" for p in shown) + more)


@dataclass(frozen=True)
class StimulusSet:
    """Stimulus ids, image paths, categories and optional ground-truth mask paths (all length S)."""

    ids: tuple[str, ...]
    paths: tuple[Path, ...]
    categories: tuple[str, ...]
    masks: tuple[Path | None, ...]

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def category_names(self) -> list[str]:
        return sorted(set(self.categories))

    @classmethod
    def load(cls, path: str | Path) -> "StimulusSet":
        """From a CSV manifest or a folder per category."""
        path = Path(path)
        if not path.exists():
            raise MissingFileError(path, "stimulus set")
        return cls.from_folder(path) if path.is_dir() else cls.from_manifest(path)

    @classmethod
    def from_manifest(cls, path: Path) -> "StimulusSet":
        problems: list[str] = []
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            columns = set(reader.fieldnames or [])
            missing = {"stimulus_id", "path", "category"} - columns
            if missing:
                raise DataError(path, [f"missing column(s) {', '.join(sorted(missing))}; "
                                       "a manifest needs stimulus_id, path, category (and optionally mask)"])
            rows = list(reader)
        ids, paths, cats, masks, seen = [], [], [], [], {}
        for line, row in enumerate(rows, start=2):
            sid, rel, cat = (row.get("stimulus_id") or "").strip(), (row.get("path") or "").strip(), (row.get("category") or "").strip()
            if not sid:
                problems.append(f"line {line}: empty stimulus_id")
            elif sid in seen:
                problems.append(f"line {line}: duplicate stimulus_id {sid!r} (first on line {seen[sid]})")
            seen.setdefault(sid, line)
            if not cat:
                problems.append(f"line {line}: empty category")
            image = (path.parent / rel) if rel else None
            if image is None or not image.is_file():
                problems.append(f"line {line}: image not found: {image or '(empty path)'}")
            mask_rel = (row.get("mask") or "").strip()
            mask = path.parent / mask_rel if mask_rel else None
            if mask is not None and not mask.is_file():
                problems.append(f"line {line}: mask not found: {mask}")
            ids.append(sid), paths.append(image), cats.append(cat), masks.append(mask)
        if not rows:
            problems.append("the manifest lists no stimuli")
        if problems:
            raise DataError(path, problems)
        return cls(tuple(ids), tuple(paths), tuple(cats), tuple(masks))

    @classmethod
    def from_folder(cls, path: Path) -> "StimulusSet":
        ids, paths, cats, first = [], [], [], {}
        problems = []
        for category in sorted(p for p in path.iterdir() if p.is_dir()):
            for image in sorted(p for p in category.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
                sid = f"{category.name}/{image.stem}"
                if sid in first:
                    problems.append(f"{image.name} and {first[sid].name} in {category.name}/ both give stimulus id "
                                    f"{sid!r}; rename one of them")
                    continue
                first[sid] = image
                ids.append(sid)
                paths.append(image)
                cats.append(category.name)
        if not ids:
            problems.append("no images found; expected one sub-folder of images per category")
        if problems:
            raise DataError(path, problems)
        return cls(tuple(ids), tuple(paths), tuple(cats), (None,) * len(ids))

    def load_images(self, size: tuple[int, int], channels: int) -> Tensor:
        """All images as ``[S, channels, H, W]`` float in [0, 1], resized to ``size``; decode errors listed at once."""
        from PIL import Image, UnidentifiedImageError

        mode = "L" if channels == 1 else "RGB"
        out = torch.empty(len(self), channels, *size)
        problems = []
        for i, p in enumerate(self.paths):
            try:
                with Image.open(p) as im:
                    im = im.convert(mode).resize((size[1], size[0]), Image.BILINEAR)
                    arr = np.asarray(im, dtype=np.float32) / 255.0
            except (UnidentifiedImageError, OSError, ValueError) as err:
                problems.append(f"{self.ids[i]}: cannot decode image {p}: {err}")
                continue
            out[i] = torch.from_numpy(arr.reshape(size[0], size[1], -1)).permute(2, 0, 1)
        if problems:
            raise DataError("stimulus images", problems)
        return out

    def load_masks(self, size: tuple[int, int]) -> Tensor | None:
        """Ground-truth masks ``[S, H, W]`` bool (nearest resize), or None if the set has none."""
        from PIL import Image

        if all(m is None for m in self.masks):
            return None
        out = torch.zeros(len(self), *size, dtype=torch.bool)
        for i, p in enumerate(self.masks):
            if p is not None:
                with Image.open(p) as im:
                    out[i] = torch.from_numpy(np.asarray(im.convert("L").resize((size[1], size[0]), Image.NEAREST)) > 0)
        return out
