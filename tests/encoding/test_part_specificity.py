"""The probe indices of sharedattr.encoding.part_specificity on hand-built activations, answers computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from sharedattr.encoding.part_specificity import (
    cosine,
    erf_radii,
    mean_cosine,
    part_specificity_index,
    profile_intersections,
    row_cosines,
    selective_mass_share,
)


def test_disjoint_profiles_give_index_one_and_identical_profiles_zero():
    assert part_specificity_index(torch.eye(4) * torch.tensor([1.0, 3.0, 0.5, 7.0])[:, None]) == pytest.approx(1.0)
    same = torch.tensor([1.0, 2.0, 3.0]).repeat(4, 1) * torch.tensor([1.0, 2.0, 5.0, 0.1])[:, None]  # scale is removed
    assert part_specificity_index(same) == pytest.approx(0.0, abs=1e-6)  # float32 inputs


def test_intersections_of_normalised_profiles_by_hand():
    profiles = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 2.0], [1.0, 1.0, 1.0, 1.0]])
    i = profile_intersections(profiles)
    # p = [.5 .5 0 0], [0 .5 .5 0], [0 0 0 1], [.25 .25 .25 .25]
    expected = torch.tensor(
        [[1.0, 0.5, 0.0, 0.5], [0.5, 1.0, 0.0, 0.5], [0.0, 0.0, 1.0, 0.25], [0.5, 0.5, 0.25, 1.0]], dtype=torch.float64
    )
    torch.testing.assert_close(i, expected)
    # 1 − mean(.5, 0, .5, 0, .5, .25) = 1 − 1.75 / 6
    assert part_specificity_index(profiles) == pytest.approx(1 - 1.75 / 6)


def test_a_channel_twice_as_selective_counts_and_one_just_below_does_not():
    profiles = torch.tensor(
        [
            [4.0, 1.0, 3.0, 0.0],
            [2.0, 1.0, 2.0, 0.0],  # channel 0: 4 ≥ 2 × 2, selective; channel 2: 3 < 2 × 2, not
            [1.0, 1.0, 1.0, 0.0],  # channel 1: equal everywhere, not selective
            [0.0, 1.0, 0.0, 5.0],  # channel 3: one part alone, selective
        ]
    )
    # selective mass: channel 0 (7) + channel 3 (5) = 12 of 7 + 4 + 6 + 5 = 22
    assert selective_mass_share(profiles) == pytest.approx(12 / 22)
    assert selective_mass_share(profiles, ratio=1.0) == pytest.approx(1.0)  # every channel's max ≥ 1 × the second


def test_normalised_selective_mass_ignores_how_much_a_part_drives_in_all():
    profiles = torch.tensor([[4.0, 2.0], [1.0, 1.0]])  # part 0 drives both channels more: both look selective
    assert selective_mass_share(profiles) == pytest.approx(1.0)
    # normalised, p = [2/3, 1/3] and [1/2, 1/2]: 2/3 < 2 × 1/2 and 1/2 < 2 × 1/3, no channel is selective
    assert selective_mass_share(profiles, normalise=True) == pytest.approx(0.0)
    # normalised, p = [1, 0] and [1/3, 2/3]: channel 0 (1 ≥ 2/3) holds 4/3 of the mass 2, channel 1 (2/3 ≥ 0) 2/3
    assert selective_mass_share(torch.tensor([[5.0, 0.0], [1.0, 2.0]]), normalise=True) == pytest.approx(1.0)
    # normalised, p = [5/6, 1/6] and [1/2, 1/2]: channel 0 (5/6 < 1) is not selective, channel 1 (1/2 ≥ 1/3) is
    assert selective_mass_share(torch.tensor([[5.0, 1.0], [1.0, 1.0]]), normalise=True) == pytest.approx(1 / 3)


def test_profiles_must_be_non_negative_with_activation_in_every_part():
    with pytest.raises(ValueError, match="non-negative"):
        part_specificity_index(torch.tensor([[1.0, -1.0], [1.0, 1.0]]))
    with pytest.raises(ValueError, match="sums to 0"):
        profile_intersections(torch.tensor([[0.0, 0.0], [1.0, 1.0]]))
    with pytest.raises(ValueError, match=r"\[parts ≥ 2, channels\]"):
        selective_mass_share(torch.ones(1, 3))


def test_cosines_by_hand_and_all_zero_rows_left_out():
    assert cosine(torch.tensor([[3.0, 0.0], [0.0, 0.0]]), torch.tensor([[1.0, 0.0], [1.0, 0.0]])) == pytest.approx(
        3 / math.sqrt(9) / math.sqrt(2)
    )
    a = torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    b = torch.tensor([[0.0, 1.0], [1.0, 1.0], [2.0, 2.0]])
    values = row_cosines(a, b)
    assert values[0] == 0 and math.isnan(values[1]) and values[2] == pytest.approx(1.0)
    assert mean_cosine(a, b) == pytest.approx(0.5)
    assert math.isnan(mean_cosine(torch.zeros(2, 3), torch.ones(2, 3)))


def test_erf_radii_of_known_gradients():
    point = torch.zeros(9, 9)
    point[4, 6] = 2.0
    assert erf_radii(point) == (0.0, 0.0)  # all the mass at its centre
    ring = torch.zeros(9, 9)
    ring[4, 4] = 4.0  # half the mass at the centre ...
    ring[1, 4] = ring[7, 4] = ring[4, 1] = ring[4, 7] = 1.0  # ... and half 3 px away
    radii = erf_radii(ring)
    assert radii.mass == 0.0  # 50 % is reached at the centre
    assert radii.rms == pytest.approx(math.sqrt(4 * 9 / 8))
    assert erf_radii(ring, share=0.75).mass == pytest.approx(3.0)
    flat = torch.ones(3, 3)  # centre of mass (1, 1): 1 px at distance 0, 4 at 1, 4 at √2
    assert erf_radii(flat).mass == pytest.approx(1.0)  # 5 of 9 ≥ 50 %
    assert erf_radii(flat).rms == pytest.approx(math.sqrt((4 * 1 + 4 * 2) / 9))


def test_erf_radii_refuse_a_gradient_without_mass():
    with pytest.raises(ValueError, match="not all zero"):
        erf_radii(torch.zeros(4, 4))
    with pytest.raises(ValueError, match=r"\[H, W\]"):
        erf_radii(torch.ones(1, 4, 4))
