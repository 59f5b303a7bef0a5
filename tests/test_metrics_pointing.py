"""Pointing game and energy-based pointing game, by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from camkit.metrics import boxes_to_masks, energy_pointing_game, pointing_game


def _peak_map(row: int, col: int, size: tuple[int, int] = (10, 10)) -> torch.Tensor:
    cam = torch.rand(*size, generator=torch.Generator().manual_seed(row * 31 + col)) * 0.5
    cam[row, col] = 1.0
    return cam


def test_boxes_rasterize_by_pixel_centre() -> None:
    masks = boxes_to_masks(torch.tensor([[1.0, 0.0, 3.0, 2.0], [0.4, 0.6, 1.6, 1.4], [1.6, 0.4, 2.4, 1.6]]), (3, 4))
    assert masks[0].int().tolist() == [[0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]]
    # pixel centres are at k + 0.5: x 0.5 and 1.5 lie in [0.4, 1.6]; y 0.5 and 1.5 do not lie in [0.6, 1.4]
    assert masks[1].int().tolist() == [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    assert masks[2].int().tolist() == [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    assert boxes_to_masks([[0.4, 0.4, 1.6, 1.6]], (3, 4))[0].int().tolist() == [
        [1, 1, 0, 0],
        [1, 1, 0, 0],
        [0, 0, 0, 0],
    ]
    union = boxes_to_masks([[[0, 0, 1, 1], [3, 2, 4, 3]]], (3, 4))
    assert union[0].int().tolist() == [[1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1]]


def test_pointing_game_hits_and_misses_by_hand() -> None:
    maps = torch.stack([_peak_map(2, 3), _peak_map(7, 7), _peak_map(5, 0)])
    boxes = torch.tensor([[2, 1, 5, 4], [2, 1, 5, 4], [0, 3, 2, 8]])  # x1, y1, x2, y2
    result = pointing_game(maps, boxes=boxes)
    assert result.per_sample.tolist() == [1.0, 0.0, 1.0]
    assert result.mean == pytest.approx(2 / 3)
    masks = boxes_to_masks(boxes, (10, 10))
    assert pointing_game(maps, masks=masks).per_sample.tolist() == [1.0, 0.0, 1.0]
    assert pointing_game(maps.numpy(), masks=masks.numpy()).per_sample.tolist() == [1.0, 0.0, 1.0]


def test_pointing_game_tolerance_is_euclidean() -> None:
    cam = _peak_map(7, 7)[None]
    box = torch.tensor([[2, 1, 5, 4]])  # pixels x 2..4, y 1..3: nearest (4, 3) is 4 down, 3 left: distance 5
    assert pointing_game(cam, boxes=box, tolerance=4.9).mean == 0.0
    assert pointing_game(cam, boxes=box, tolerance=5.0).mean == 1.0
    assert pointing_game(cam, boxes=box, tolerance=15).mean == 1.0


def test_pointing_game_resizes_maps_to_the_box_size() -> None:
    small = torch.zeros(1, 2, 2)
    small[0, 1, 1] = 1.0  # bottom-right quarter once resized to 8 x 8
    assert pointing_game(small, boxes=torch.tensor([[4, 4, 8, 8]]), size=(8, 8)).mean == 1.0
    assert pointing_game(small, boxes=torch.tensor([[0, 0, 4, 4]]), size=(8, 8)).mean == 0.0
    assert pointing_game([small], boxes=torch.tensor([[1, 1, 2, 2]])).mean == 1.0  # boxes in the map's own pixels


def test_flat_maps_have_no_maximum_and_nan_maps_are_refused() -> None:
    maps = torch.stack([torch.ones(4, 4), _peak_map(1, 1, (4, 4))])
    result = pointing_game(maps, boxes=torch.tensor([[0, 0, 2, 2]] * 2))
    assert torch.isnan(result.per_sample[0])
    assert result.per_sample[1] == 1.0
    assert result.mean == 1.0
    with pytest.raises(ValueError, match=r"NaN/inf values in sample\(s\) \[2\]"):
        pointing_game(torch.cat([maps, torch.full((1, 4, 4), float("nan"))]), boxes=torch.tensor([[0, 0, 2, 2]] * 3))


def test_energy_pointing_game_by_hand() -> None:
    cam = torch.tensor([[1.0, 2.0, 0.0], [3.0, 4.0, 0.0], [0.0, 0.0, 10.0]])
    box = torch.tensor([[0, 0, 2, 2]])
    assert energy_pointing_game(cam[None], boxes=box).mean == pytest.approx(10 / 20)
    two = torch.stack([cam, torch.ones(3, 3)])
    masks = torch.zeros(2, 3, 3, dtype=torch.bool)
    masks[:, 2, 2] = True
    result = energy_pointing_game(two, masks=masks)
    assert result.per_sample.tolist() == pytest.approx([10 / 20, 1 / 9])
    assert result.mean == pytest.approx((0.5 + 1 / 9) / 2)


def test_energy_of_a_constant_map_is_the_box_area_share() -> None:
    assert energy_pointing_game(torch.full((1, 2, 2), 0.3), boxes=[[0, 0, 8, 4]], size=(8, 8)).mean == pytest.approx(
        0.5
    )


def test_energy_zero_map_is_nan() -> None:
    result = energy_pointing_game(torch.stack([torch.zeros(3, 3), torch.ones(3, 3)]), boxes=[[0, 0, 3, 3]] * 2)
    assert torch.isnan(result.per_sample[0])
    assert result.mean == 1.0


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({}, ValueError, "exactly one of boxes"),
        ({"boxes": [[0, 0, 1, 1]], "masks": np.ones((1, 4, 4))}, ValueError, "exactly one of boxes"),
        ({"boxes": [[2, 2, 2, 2]]}, ValueError, r"region of sample\(s\) \[0\] is empty"),
        ({"boxes": [[0, 0, 1]]}, ValueError, r"boxes\[0\] must be \(x1, y1, x2, y2\)"),
        ({"masks": np.ones((2, 4, 4))}, ValueError, r"1 map\(s\) but the input batch has 2"),
        ({"masks": np.ones((1, 4, 4)), "size": (5, 5)}, ValueError, r"masks have size \(4, 4\)"),
    ],
)
def test_errors(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        pointing_game(torch.rand(1, 4, 4), **kwargs)


def test_energy_rejects_negative_maps_and_negative_tolerance() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        energy_pointing_game(torch.rand(1, 4, 4) - 0.5, boxes=[[0, 0, 1, 1]])
    with pytest.raises(ValueError, match="tolerance must be >= 0"):
        pointing_game(torch.rand(1, 4, 4), boxes=[[0, 0, 1, 1]], tolerance=-1)
