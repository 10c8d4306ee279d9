"""The channel view draws NaN and infinite units as the feature grid does: in its magenta."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cnnwidgets.app import Explorer
from cnnwidgets.render.grid import NAN_COLOR

SIZE = 32
BAD = ((2, 3), (5, 6))  # channel 0: NaN at the first unit, +inf at the second


class Poke(nn.Module):
    """Puts a NaN and an infinity into channel 0 of its input."""

    def forward(self, x):
        x = x.clone()
        x[:, 0, BAD[0][0], BAD[0][1]] = float("nan")
        x[:, 0, BAD[1][0], BAD[1][1]] = float("inf")
        return x


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), Poke(), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, 3)).eval()


def picture() -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.random((SIZE, SIZE, 3)) * 155 + 100).astype(np.uint8)


def magenta(pixels: np.ndarray) -> set[tuple[int, int]]:
    return {(int(y), int(x)) for y, x in zip(*np.nonzero((pixels == NAN_COLOR).all(axis=-1)))}


@pytest.mark.parametrize("overlay", [True, False])
@pytest.mark.parametrize("dragging", [False, True])
def test_non_finite_units_are_magenta_in_both_halves_of_the_channel_view(overlay, dragging):
    ex = Explorer(model(), picture(), input_size=(3, SIZE, SIZE), layer="1", channel=0, samples={},
                  background=False, box=(20, 20, 6, 6))
    try:
        ex.overlay = overlay
        ex.dragging = dragging
        ex.box = (19, 20, 6, 6)
        assert ex.wait_idle(60)
        assert not np.isfinite(ex.activations[0][BAD[0]]) and np.isinf(ex.activations[0][BAD[1]])
        assert "1 of 4 channels of 1 hold NaN or infinite values (drawn in magenta)" in ex.status.message
        panel = ex.channel_image
        assert panel.shape[0] == SIZE  # one pixel per unit: this layer keeps the input's size
        left, right = panel[:, :SIZE], panel[:, -SIZE:]
        # exactly the non-finite units, in the channel and in what the occluder removed from it
        assert magenta(left) == set(BAD)
        assert magenta(right) == set(BAD)
        # the grid draws the same units of channel 0's tile in the same colour
        layout = ex._current()[0].layout
        x, y, _, _ = layout.tile_rect(0)
        grid = ex.grid_image
        assert {(r - y, c - x) for r, c in magenta(grid)} == set(BAD)
        ex.channel = 1  # a finite channel: nothing magenta
        assert ex.wait_idle(60)
        assert not magenta(ex.channel_image)
    finally:
        ex.close()
