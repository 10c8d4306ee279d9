"""The explorer's columns and its layer menu's width, headless (tests/browser/test_layout_explorer.py
checks where they land in a real browser)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from cnnwidgets.app import Explorer
from cnnwidgets.app.explorer import FILTER_FROM_LAYERS, GRID_COLUMN_BASIS
from cnnwidgets.widgets import __file__ as widgets_init

SIZE = 32
CSS = Path(widgets_init).with_name("widgets.css")


def picture(seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((SIZE, SIZE, 3)) * 155 + 100).astype(np.uint8)


def make(model: nn.Module, **kw) -> Explorer:
    torch.manual_seed(0)
    return Explorer(model.eval(), None, input_size=(3, SIZE, SIZE), samples={"a": picture(0)}, background=False, **kw)


def small() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))


def deep() -> nn.Module:
    """More layers than the menu lists without a filter box."""
    parts = [nn.Conv2d(3, 4, 3, padding=1)] + [nn.Conv2d(4, 4, 3, padding=1) for _ in range(FILTER_FROM_LAYERS)]
    return nn.Sequential(*parts, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5))


def css_rule(selector: str) -> dict[str, str]:
    css = re.sub(r"/\*.*?\*/", "", CSS.read_text(), flags=re.DOTALL)
    for block in css.split("}"):
        head, _, body = block.partition("{")
        if " ".join(head.split()) == selector:
            return {name.strip(): " ".join(value.split())
                    for name, _, value in (decl.partition(":") for decl in body.split(";")) if value}
    raise AssertionError(f"no rule {selector!r} in widgets.css")


@pytest.fixture
def ex():
    explorer = make(small())
    yield explorer
    explorer.close()


def test_the_grid_has_a_column_beside_the_channel_view_and_the_input(ex):
    top = ex.children[-1]  # under the header, the status line and the occluder's controls
    image_col, right = top.children
    assert ex.method_view in image_col.children and ex.canvas in image_col.children
    channel_col, grid_col = right.children
    assert ex.panel in channel_col.children[0].children and ex.scores_view in channel_col.children[1].children
    assert list(grid_col.children[1:]) == [ex.display_controls, ex.grid_caption, ex.grid]
    assert ex.layer_select in grid_col.children[0].children and ex.channel_slider in grid_col.children[0].children
    for box in (top, right, channel_col):
        assert "cnnw-columns" in box._dom_classes and box.layout.flex_flow == "row wrap"
    # the grid's column takes the room left on its line, and may shrink to fit it
    assert grid_col.layout.flex == f"50 1 {GRID_COLUMN_BASIS}" and grid_col.layout.min_width == "0"
    # the columns of the channel view: at least as wide as the view, once a frame says how wide
    assert ex.wait_idle(30)
    width = ex.panel.layout.width
    assert width.endswith("px") and channel_col.layout.flex == right.layout.flex == f"1 1 {width}"
    assert css_rule(".cnnw-columns") == {"column-gap": "16px", "row-gap": "6px"}


def test_a_method_puts_the_grid_beside_the_method_map_and_none_under_the_pictures(ex):
    right = ex.children[3].children[1]
    assert ex.method == "none" and right.layout.display == "contents"  # its columns join the input's line
    ex.method = "grad-cam"
    assert right.layout.display is None  # a column of its own, beside the input and the map under it
    ex.method = "none"
    assert right.layout.display == "contents"
    assert ex.wait_idle(30) and not ex.status.is_error


def test_the_class_scores_box_follows_the_scores_switch(ex):
    scores_box = ex.scores_view.layout  # the list's own
    box = ex.children[3].children[1].children[0].children[1]
    ex.show_scores = False
    assert box.layout.display == "none" and scores_box.display == "none"
    ex.show_scores = True
    assert box.layout.display is None and scores_box.display is None


def test_with_a_filter_box_the_layer_menu_keeps_one_width():
    explorer = make(deep())
    try:
        assert explorer.layer_filter.layout.display == ""  # shown: the menu is long
        assert "cnnw-select-fixed" in explorer.layer_select._dom_classes
        explorer.layer_filter.value = "zz"  # nothing matches: the menu holds the layer shown alone
        assert explorer.layer_select.options == [explorer.layer]
        assert "cnnw-select-fixed" in explorer.layer_select._dom_classes
    finally:
        explorer.close()
    few = make(small())
    try:
        assert few.layer_filter.layout.display == "none"
        assert "cnnw-select-fixed" not in few.layer_select._dom_classes  # as wide as its options
    finally:
        few.close()
    width = css_rule(".cnnw-select-widget.cnnw-select-fixed")["width"]
    assert width.endswith("+ 420px)") and "--jp-widgets-inline-label-width" in width
    assert css_rule(".cnnw-select-fixed .cnnw-select select") == {"flex": "1 1 auto", "width": "0"}


def test_close_closes_the_new_boxes(ex):
    top = ex.children[3]
    boxes = [top, *top.children, *top.children[1].children, top.children[1].children[0].children[1]]
    ex.close()
    assert all(box.comm is None for box in boxes)
