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


def test_grey_stimuli_are_read_with_one_channel_and_any_colour_image_makes_it_three(tmp_path):
    import numpy as np
    from PIL import Image

    from sharedattr.data import StimulusSet

    for cat in ("bodies", "objects"):
        (tmp_path / cat).mkdir()
    Image.new("L", (4, 4), 10).save(tmp_path / "bodies" / "a.png")
    Image.fromarray(np.full((4, 4), 40000, dtype=np.uint16)).save(tmp_path / "bodies" / "b.png")
    Image.new("LA", (4, 4)).save(tmp_path / "objects" / "c.png")
    Image.new("RGB", (4, 4), (1, 2, 3)).save(tmp_path / "objects" / "d.png")
    stimuli = StimulusSet.load(tmp_path)
    grey = [stimuli.ids.index(i) for i in ("bodies/a", "bodies/b", "objects/c")]
    assert stimuli.channels_for(3, grey) == 1
    assert stimuli.channels_for(3) == 3 and stimuli.channels_for(3, [stimuli.ids.index("objects/d")]) == 3
    assert stimuli.channels_for(1) == 1
    assert stimuli.load_images((4, 4), stimuli.channels_for(3, grey), grey).shape == (3, 1, 4, 4)
