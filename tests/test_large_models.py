"""Large models in the explorer: a layer wider than GRID_PAGE channels is shown a page of the grid
at a time, and a long layer menu can be narrowed down by words."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import traitlets
from torch import nn

from cnnwidgets import render as R
from cnnwidgets.app import Explorer
from cnnwidgets.app.frames import GRID_PAGE, grid_pages, page_channels
from cnnwidgets.render.grid import GridLayout

WIDE = 2 * GRID_PAGE + 88  # three pages, the last one part full
SIZE = 16


class Wide(nn.Module):
    """A conv layer of WIDE channels between two narrow ones, and a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.narrow = nn.Conv2d(3, 8, 3, padding=1)
        self.wide = nn.Conv2d(8, WIDE, 3, padding=1)
        self.relu = nn.ReLU()
        self.head = nn.Linear(WIDE, 4)

    def forward(self, x):
        return self.head(self.relu(self.wide(self.narrow(x))).mean(dim=(2, 3)))


def make(**kw) -> Explorer:
    torch.manual_seed(0)
    picture = (np.random.default_rng(0).random((SIZE, SIZE, 3)) * 255).astype(np.uint8)
    kw.setdefault("layer", "relu")
    return Explorer(Wide().eval(), picture, input_size=(3, SIZE, SIZE), samples={}, background=False, **kw)


@pytest.fixture
def ex():
    explorer = make(box=(2, 2, 6, 6))
    yield explorer
    explorer.close()


# ---------------------------------------------------------------------------- render and frames
def test_page_channels_follow_the_selected_channel_or_the_page_asked_for():
    assert grid_pages(GRID_PAGE) == 1 and grid_pages(GRID_PAGE + 1) == 2 and grid_pages(WIDE) == 3
    assert page_channels(None, GRID_PAGE, None, 5) == (None, 0)  # shown whole
    shown, page = page_channels(None, WIDE, None, GRID_PAGE + 3)
    assert page == 1 and shown.tolist() == list(range(GRID_PAGE, 2 * GRID_PAGE))
    shown, page = page_channels(None, WIDE, 2, 0)
    assert page == 2 and shown.tolist() == list(range(2 * GRID_PAGE, WIDE))  # the last page is part full
    order = np.arange(WIDE)[::-1]
    shown, page = page_channels(order, WIDE, None, WIDE - 1)  # first in the sorted order
    assert page == 0 and shown[0] == WIDE - 1 and len(shown) == GRID_PAGE
    assert page_channels(None, WIDE, 99, 0)[1] == 2  # clamped to the pages there are


def test_a_page_of_a_stack_draws_the_same_tiles_as_the_whole_stack():
    rng = np.random.default_rng(0)
    acts = rng.normal(size=(12, 5, 5)).astype(np.float32)
    marked = np.zeros(12, dtype=bool)
    marked[[3, 7]] = True
    whole, full = R.feature_grid(acts, mode="layer", marked=marked)
    shown = [7, 2, 9]
    page, layout = R.feature_grid(acts, mode="layer", marked=marked, order=shown)
    assert layout.count == 3 and layout.channels == 12 and list(layout.order) == shown
    for channel in shown:
        x, y, w, h = layout.tile_rect(channel)
        fx, fy, fw, fh = full.tile_rect(channel)
        assert (w, h) == (fw, fh)
        # same colours on the whole layer's range, and the same dead-channel mark on channel 7
        np.testing.assert_array_equal(page[y:y + h, x:x + w], whole[fy:fy + fh, fx:fx + fw])
    assert layout.channel_at(*layout.tile_rect(9)[:2]) == 9
    with pytest.raises(IndexError, match="channel 3 is not one of the 3 channels this mosaic shows"):
        layout.tile_rect(3)


def test_a_page_layout_must_name_distinct_channels_of_the_stack():
    with pytest.raises(ValueError, match="3 distinct channels of 0..9"):
        GridLayout(count=3, rows=1, cols=3, map_height=2, map_width=2, order=(1, 1, 2), channels=10)
    with pytest.raises(ValueError, match="3 distinct channels of 0..9"):
        GridLayout(count=3, rows=1, cols=3, map_height=2, map_width=2, order=(1, 2, 10), channels=10)
    with pytest.raises(ValueError, match="permutation"):
        GridLayout(count=3, rows=1, cols=3, map_height=2, map_width=2, order=(0, 1, 5))
    layout = GridLayout(count=2, rows=1, cols=2, map_height=2, map_width=2, order=(4, 1), channels=6)
    assert layout.to_dict()["order"] == [4, 1] and layout.to_dict()["channels"] == 6
    tiles = np.zeros((6, 2, 2, 3), dtype=np.uint8)
    tiles[4] = 200
    out = R.mosaic(tiles, layout)
    x, y, w, h = layout.tile_rect(4)
    assert (out[y:y + h, x:x + w] == 200).all()


# ---------------------------------------------------------------------------- the explorer
def test_a_wide_layer_shows_the_page_that_holds_the_selected_channel(ex):
    assert ex.page is None and ex.channel < GRID_PAGE
    assert ex.grid_channels.tolist() == list(range(GRID_PAGE))
    assert ex.page_select.layout.display == "" and ex.page_select.value == 0
    assert [label for label, _ in ex.page_select.options] == [
        f"channels 0\u2013255 of {WIDE}", f"channels 256\u2013511 of {WIDE}", f"channels 512\u2013{WIDE - 1} of {WIDE}"]
    assert f"channels 0\u2013255 of {WIDE}</b> (page 1 of 3" in ex.grid_caption.value
    ex.channel = 2 * GRID_PAGE + 5
    assert ex.grid_channels[0] == 2 * GRID_PAGE and len(ex.grid_channels) == WIDE - 2 * GRID_PAGE
    assert ex.page_select.value == 2 and ex.page is None
    assert ex.grid.selected == ex.channel  # its tile is the outlined one
    # the grid is this page's tiles at a readable size: 16 x 16 tiles at most
    layout = ex._frame.layout
    assert layout.count == WIDE - 2 * GRID_PAGE and layout.tile_width == SIZE


def test_a_page_picked_in_the_menu_holds_until_another_channel_is_chosen(ex):
    ex.channel = 3
    ex.page_select.value = 1  # as the browser's menu does
    assert ex.page == 1 and ex.grid_channels[0] == GRID_PAGE and ex.channel == 3
    assert ex.channel_image is not None and ex._frame.channel == 3  # the channel view keeps channel 3
    # a click on a tile of this page selects its channel; the page stays the one shown
    x, y, _, _ = ex._frame.layout.tile_rect(GRID_PAGE + 10)
    assert ex.grid.click(x, y) == GRID_PAGE + 10
    assert ex.channel == GRID_PAGE + 10 and ex.page is None and ex.page_select.value == 1
    ex.page = 2
    ex.channel = 0  # another channel: the grid goes to its page
    assert ex.page is None and ex.page_select.value == 0 and ex.grid_channels[0] == 0


def test_sorted_pages_go_by_rank_and_the_first_holds_the_strongest(ex):
    ex.sort = True
    order = ex._frame.computed.baseline.order
    assert ex.grid_channels.tolist() == order[ex.page_select.value * GRID_PAGE:][:GRID_PAGE].tolist()
    ex.page = 0
    assert ex.grid_channels.tolist() == order[:GRID_PAGE].tolist()
    means = ex.baseline_activations.mean(axis=(1, 2))
    assert means[ex.grid_channels].min() >= np.delete(means, ex.grid_channels).max()
    assert ex.page_select.options[0][0] == f"strongest 1\u2013256 of {WIDE}"
    assert f"the 1st\u2013256th strongest of {WIDE}" in ex.grid_caption.value


def test_dragging_on_a_wide_layer_draws_the_page_shown(ex):
    ex.page = 1
    ex.dragging = True
    ex.box = (5, 5, 6, 6)
    assert ex.grid_channels[0] == GRID_PAGE  # the draft of the same page
    draft = ex.grid_image
    ex.dragging = False
    assert ex.grid_channels[0] == GRID_PAGE and ex.page == 1
    assert ex.grid_image.shape[0] >= draft.shape[0]


def test_bad_pages_are_refused_and_narrow_layers_have_no_page_menu(ex):
    with pytest.raises(traitlets.TraitError, match=r"page 3 out of range for layer 'relu': accepted 0..2"):
        ex.page = 3
    with pytest.raises(traitlets.TraitError, match=r"page must be an int, not a bool \(got True\): for layer 'relu' "
                                                  r"accepted 0..2"):
        ex.page = True
    with pytest.raises(traitlets.TraitError, match="page must be an int"):
        ex.page = 1.0  # not cast, as the channel is not
    ex.page = torch.tensor(2)  # a 0-d integer tensor, as the channel takes
    assert ex.page == 2 and isinstance(ex.page, int) and ex.grid_channels[0] == 2 * GRID_PAGE
    ex.page = np.int64(1)
    assert ex.page == 1
    ex.layer = "narrow"
    assert ex.page_select.layout.display == "none" and len(ex.grid_channels) == 8
    assert "page 1 of" not in ex.grid_caption.value
    with pytest.raises(traitlets.TraitError, match="accepted only 0"):
        ex.page = 1


# ---------------------------------------------------------------------------- the layer filter
class Deep(nn.Module):
    """Fifty small conv layers in a row: a long layer menu."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(*[nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.ReLU()) for _ in range(50)])
        self.head = nn.Linear(3, 2)

    def forward(self, x):
        return self.head(self.body(x).mean(dim=(2, 3)))


def test_a_long_layer_menu_can_be_narrowed_down_by_words_and_keeps_the_layer_shown():
    torch.manual_seed(0)
    picture = (np.random.default_rng(0).random((SIZE, SIZE, 3)) * 255).astype(np.uint8)
    ex = Explorer(Deep().eval(), picture, input_size=(3, SIZE, SIZE), samples={}, background=False,
                  layer="body.3.0")
    try:
        everything = ex.layer_select.options
        assert ex.layer_filter.layout.display == "" and len(everything) > 100
        ex.layer_filter.value = "body.4"  # as typed in the browser
        shown = ex.layer_select.options
        assert "body.3.0" in shown  # the layer shown stays, whatever the filter
        assert set(shown) - {"body.3.0"} == {n for n in everything if "body.4" in n}
        ex.layer_filter.value = "RELU  body.4"  # every word, in any case: the name, the type
        assert set(ex.layer_select.options) == {"body.3.0", "body.4.1", *(f"body.4{i}.1" for i in range(10))}
        assert ex.layer == "body.3.0" and not ex.status.is_error
        ex.layer = "body.20.0"  # set from Python, though the filter hides it: it joins the menu
        assert ex.layer_select.value == "body.20.0" and ex.shown_state.layer == "body.20.0"
        assert "body.20.0" in ex.layer_select.options and "body.3.0" not in ex.layer_select.options
        assert not ex.status.is_error
        ex.layer_select.value = "body.45.1"  # picked in the narrowed menu
        assert ex.layer == "body.45.1"
        ex.layer_filter.value = "no such thing"
        assert ex.layer_select.options == ["body.45.1"] and "no other layer matches 'no such thing'" in ex.status.message
        ex.layer_filter.value = ""
        assert ex.layer_select.options == everything
    finally:
        ex.close()
    short = make(box=None)
    try:
        assert short.layer_filter.layout.display == "none"  # a few layers need no filter
    finally:
        short.close()


def test_a_page_knows_the_channels_on_either_side_for_the_arrow_keys(ex):
    geometry = ex.grid.geometry
    assert geometry["before"] is None and geometry["after"] == GRID_PAGE  # the first page
    ex.channel = GRID_PAGE + 1
    assert ex.grid.geometry["before"] == GRID_PAGE - 1 and ex.grid.geometry["after"] == 2 * GRID_PAGE
    ex.grid.selected = ex.grid.geometry["after"]  # what the right arrow key on the last tile sends
    assert ex.channel == 2 * GRID_PAGE and ex.page_select.value == 2 and ex.grid.geometry["after"] is None
    ex.sort = True
    order = ex._frame.computed.baseline.order
    first = ex.page_select.value * GRID_PAGE
    assert ex.grid.geometry["before"] == (int(order[first - 1]) if first else None)
