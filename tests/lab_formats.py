"""Lab formats built from the tiny in-silico data set, for tests: a BrainIO stimulus set (CSV + ZIP)."""

from __future__ import annotations

import csv
import zipfile
from pathlib import Path


def brainio_set(tiny_data: Path, folder: Path, zipped: bool = True) -> tuple[Path, Path]:
    """The tiny manifest as a BrainIO set: ``filename`` = ``images/<id>.png`` in a ZIP (or folder), the category
    in ``object_name``, masks as members too, plus metadata columns."""
    manifest = tiny_data / "stimuli" / "manifest.csv"
    with open(manifest, newline="") as f:
        rows = list(csv.DictReader(f))
    folder.mkdir(exist_ok=True)
    csv_path = folder / "stimulus_set.csv"
    mask_columns = [c for c in rows[0] if c.startswith("mask")]
    with open(csv_path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["stimulus_id", "filename", "object_name", "s", "ty", *mask_columns])
        for i, row in enumerate(rows):
            writer.writerow(
                [row["stimulus_id"], row["path"], row["category"], 1.0, i * 0.1, *(row[c] for c in mask_columns)]
            )
    files = {row[c] for row in rows for c in ["path", *mask_columns] if row[c]}
    if zipped:
        images = folder / "stimulus_set.zip"
        with zipfile.ZipFile(images, "w", zipfile.ZIP_DEFLATED) as zf:
            for name in sorted(files):
                zf.write(manifest.parent / name, name)
    else:
        images = folder / "images-root"
        for name in files:
            (images / name).parent.mkdir(parents=True, exist_ok=True)
            (images / name).write_bytes((manifest.parent / name).read_bytes())
    return csv_path, images
