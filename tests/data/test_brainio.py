"""BrainIO stimulus sets: a CSV (stimulus_id, filename, metadata) with its images in a ZIP, read without extracting."""

from __future__ import annotations

import zipfile

import pytest
import torch
from lab_formats import brainio_set

from sharedattr.data.archives import MAX_COMPRESSION_RATIO
from sharedattr.data.stimuli import StimulusSet
from sharedattr.runtime.errors import DataError


@pytest.mark.parametrize("zipped", [True, False])
def test_a_brainio_set_reads_like_the_manifest_it_came_from(tiny_data, tmp_path, zipped):
    manifest = StimulusSet.load(tiny_data / "stimuli" / "manifest.csv")
    csv_path, images = brainio_set(tiny_data, tmp_path / "set", zipped)
    brainio = StimulusSet.load(csv_path, images=images, category_column="object_name")
    assert brainio.ids == manifest.ids and brainio.categories == manifest.categories
    assert brainio.content_digest() == manifest.content_digest()  # same bytes: the feature cache is shared
    brainio.check_images()
    assert torch.equal(brainio.load_images((32, 32), 3), manifest.load_images((32, 32), 3))
    assert torch.equal(brainio.load_masks((16, 16)), manifest.load_masks((16, 16)))
    assert brainio.part_masks.keys() == manifest.part_masks.keys()
    rows = [0, 3]
    assert torch.equal(
        brainio.load_part_masks((16, 16), rows, [["head"], ["limbs"]]),
        manifest.load_part_masks((16, 16), rows, [["head"], ["limbs"]]),
    )


def test_the_category_column_must_exist(tiny_data, tmp_path):
    csv_path, images = brainio_set(tiny_data, tmp_path / "set")
    with pytest.raises(DataError, match="missing column\\(s\\) category.*data.category_column.*object_name"):
        StimulusSet.load(csv_path, images=images)


def test_every_bad_member_is_listed_with_its_line(tmp_path):
    from PIL import Image

    buf = tmp_path / "ok.png"
    Image.new("RGB", (4, 4)).save(buf)
    archive = tmp_path / "set.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(buf, "ok.png")
        zf.writestr("bomb.png", b"\0" * (MAX_COMPRESSION_RATIO * 2000))  # inflates far more than 1000×
        zf.writestr("../evil.png", buf.read_bytes())
    lines = [
        ("a", "ok.png"),
        ("b", "missing.png"),
        ("c", "bomb.png"),
        ("d", "../evil.png"),
        ("e", "/etc/passwd"),
        ("f", "C:\\\\x.png"),
    ]
    csv_path = tmp_path / "set.csv"
    csv_path.write_text("stimulus_id,filename,category\n" + "".join(f"{s},{n},c\n" for s, n in lines))
    with pytest.raises(DataError) as caught:
        StimulusSet.load(csv_path, images=archive)
    text = str(caught.value)
    assert "5 problem(s)" in text, text
    assert f"line 3: image {archive}:missing.png is not in the archive" in text
    assert "line 4: image" in text and "bomb.png is refused: it inflates" in text
    assert "line 5: image" in text and "'..'" in text
    assert "line 6: image" in text and "is an absolute path" in text
    assert "line 7: image" in text and "backslash" in text
    assert not (tmp_path / "evil.png").exists() and not (tmp_path.parent / "evil.png").exists()


def test_an_unreadable_archive_is_one_problem(tmp_path):
    (tmp_path / "set.zip").write_bytes(b"not a zip")
    (tmp_path / "set.csv").write_text("stimulus_id,filename,category\na,x.png,c\n")
    with pytest.raises(DataError, match="not a readable ZIP archive"):
        StimulusSet.load(tmp_path / "set.csv", images=tmp_path / "set.zip")


def test_a_run_on_the_brainio_set_fits_like_the_manifest(tiny_data, tiny_config, tmp_path, one_thread):
    from sharedattr.config.validation import validate_experiment
    from sharedattr.experiment.context import RunContext
    from sharedattr.experiment.stages import fit_stage

    csv_path, images = brainio_set(tiny_data, tmp_path / "set")
    brainio = {**tiny_config["data"], "stimuli": str(csv_path), "images": str(images), "category_column": "object_name"}
    scores = []
    for name, data in (("manifest", tiny_config["data"]), ("brainio", brainio)):
        spec = validate_experiment({**tiny_config, "data": data})
        out = tmp_path / name
        fit_stage(RunContext.start(spec, out, progress=False), spec, out)
        scores.append((out / "scores.csv").read_text())
    assert scores[0] == scores[1]


def test_an_archive_replaced_at_the_same_path_is_read_afresh(tmp_path):
    from sharedattr.data.archives import ZipMember

    archive = tmp_path / "a.zip"
    for content in (b"first", b"second, longer"):
        with zipfile.ZipFile(archive, "w") as zf:
            zf.writestr("x.png", content)
        assert ZipMember(archive, "x.png").read_bytes() == content
