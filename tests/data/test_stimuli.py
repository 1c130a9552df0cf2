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


def test_a_subset_keeps_the_chosen_stimuli_in_order_with_their_masks(tmp_path):
    import torch

    from sharedattr.data import StimulusSet
    from sharedattr.data.insilico import write_pair_set
    from sharedattr.data.insilico.pairs import render_pairs

    manifest, _ = write_pair_set(tmp_path, {"arm": render_pairs(2, 32, seed=3)})
    stimuli = StimulusSet.load(manifest)
    chosen = [stimuli.ids[3], stimuli.ids[0]]
    sub = stimuli.subset(chosen)
    assert sub.ids == tuple(chosen) and len(sub) == 2 and set(sub.part_masks) == set(stimuli.part_masks)
    assert torch.equal(sub.load_images((32, 32), 1), stimuli.load_images((32, 32), 1, [3, 0]))
    parts = [list(stimuli.part_masks)] * 2
    assert torch.equal(sub.load_part_masks((32, 32), [0, 1], parts), stimuli.load_part_masks((32, 32), [3, 0], parts))
    with pytest.raises(KeyError):
        stimuli.subset(["no-such-id"])
