"""Stimulus sets read from folders."""

from __future__ import annotations

import pytest


# -- data ------------------------------------------------------------------------------
def test_folder_stimulus_set_rejects_clashing_ids(tmp_path):
    from PIL import Image

    from sharedattr.data import DataError, StimulusSet

    for cat, names in {"bodies": ["a.png", "a.jpg", "b.png"], "objects": ["c.png"]}.items():
        (tmp_path / cat).mkdir()
        for n in names:
            Image.new("L", (4, 4)).save(tmp_path / cat / n)
    with pytest.raises(DataError, match=r"a.png and a.jpg in bodies/ both give stimulus id 'bodies/a'"):
        StimulusSet.load(tmp_path)
    (tmp_path / "bodies" / "a.jpg").unlink()
    stimuli = StimulusSet.load(tmp_path)
    assert stimuli.ids == ("bodies/a", "bodies/b", "objects/c") and stimuli.category_names == ["bodies", "objects"]
