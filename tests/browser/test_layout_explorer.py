"""The explorer's layout in a real browser, at window widths from 1000 to 1920 px: the grid fills
the room beside the method map instead of leaving it empty, narrow windows still stack the
columns, and typing in the layer filter moves no control of the row it sits in.

JupyterLab opens with its file browser, so the notebook's output is about 430 px narrower than
the window (968 px in a 1400 px window).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.browser.harness import poll, write_notebook

IMAGE = "n01443537_goldfish.JPEG"

CELL = f"""import torch, torchvision, cnnwidgets
torch.manual_seed(0)
model = torchvision.models.resnet18(weights=None).eval()
explorer = cnnwidgets.explore(model, {IMAGE!r}, method="grad-cam")
explorer"""

#: Page boxes of the parts of the explorer, relative to the explorer's top-left corner.
_BOXES = """root => {
    const r0 = root.getBoundingClientRect();
    const box = e => { if (!e) return null; const b = e.getBoundingClientRect();
                       return {left: b.left - r0.left, top: b.top - r0.top, right: b.right - r0.left,
                               bottom: b.bottom - r0.top, width: b.width, height: b.height}; };
    const slider = Array.from(root.querySelectorAll('.widget-slider'))
        .find(e => (e.querySelector('label') || {}).textContent === 'channel');
    return {root: box(root), map: box(root.querySelector('.cnnw-method-image')),
            input: box(root.querySelector('.cnnw-occluder')), panel: box(root.querySelector('img.cnnw-pixelated')),
            scores: box(root.querySelector('.cnnw-scores')), grid: box(root.querySelector('.cnnw-grid')),
            menu: box(root.querySelector('.cnnw-select select')), slider: box(slider),
            filter: box(root.querySelector('.widget-text'))};
}"""

#: The share of the room beside the method map (from its right edge to the explorer's, over its
#: height) that shows something: a picture, a control or text, sampled every 8 px.
_BESIDE_MAP = """root => {
    const map = root.querySelector('.cnnw-method-image').getBoundingClientRect();
    const right = root.getBoundingClientRect().right;
    const shown = Array.from(root.querySelectorAll(
            'img, canvas, select, input, button, .cnnw-grid, .cnnw-scores-list, .widget-slider, '
            + '.widget-html-content, .widget-checkbox, .widget-readout'))
        .map(e => e.getBoundingClientRect()).filter(b => b.width > 0 && b.height > 0);
    let total = 0, covered = 0;
    for (let y = map.top + 4; y < map.bottom; y += 8) {
        for (let x = map.right + 4; x < right; x += 8) {
            total += 1;
            if (shown.some(b => x >= b.left && x <= b.right && y >= b.top && y <= b.bottom)) covered += 1;
        }
    }
    return total ? covered / total : 1;
}"""

_OVERFLOWING = """root => Array.from(root.querySelectorAll('*')).filter(e => ['auto', 'scroll'].includes(
    getComputedStyle(e).overflowX) && e.scrollWidth > e.clientWidth + 0.5).map(e => e.className)"""


def _notebook(folder: Path) -> Path:
    return write_notebook(folder / "layout_explorer.ipynb", CELL)


def _at_width(nb, root, width: int) -> dict:
    """The explorer's boxes once its layout has settled in a window ``width`` px wide."""
    nb.page.set_viewport_size({"width": width, "height": 1500})
    boxes = [None]

    def settled(now):
        before, boxes[0] = boxes[0], now
        return now == before

    return poll(lambda: root.evaluate(_BOXES), settled, what=f"a settled layout at {width} px", interval=0.3)


def _beside(a: dict, b: dict) -> bool:
    """Whether box ``a`` lies right of box ``b`` and level with part of it."""
    return a["left"] >= b["right"] - 1 and a["top"] < b["bottom"] and a["bottom"] > b["top"]


@pytest.mark.browser
def test_explorer_fills_the_width_and_the_filter_moves_nothing(open_notebook, shared_data, tmp_path):
    image = tmp_path / IMAGE
    shutil.copy2(shared_data / "images" / "imagenet-samples" / IMAGE, image)
    nb = open_notebook(_notebook(tmp_path), image, viewport=(1600, 1500))
    nb.run_all_and_wait(timeout=240)
    kernel = nb.kernel
    kernel.execute("assert explorer.wait_idle(120)")
    state = kernel.eval("dict(layer=explorer.layer, error=explorer.status.is_error, message=explorer.status.message, "
                        "map=explorer.method_result is not None)")
    assert not state["error"] and state["map"], state
    root = nb.widget(".cnnw-explorer")
    nb.widget(".cnnw-explorer .cnnw-method-image")

    # ---- a method shown: the grid (and, in a wide layer, its page) sits beside the method map, not
    # under the pictures with the room beside the map left empty
    for layer in (state["layer"], "layer4.0.conv1"):  # 128 maps; 512, shown 256 a page
        kernel.execute(f"explorer.layer = {layer!r}; assert explorer.wait_idle(120)")
        pages = kernel.eval("explorer.page_select.layout.display != 'none'")
        assert pages == (layer == "layer4.0.conv1")
        for width in (1200, 1400, 1600, 1920):
            boxes = _at_width(nb, root, width)
            nb.screenshot(f"method-{layer}-{width}", root)
            # the grid's column (its menu to the grid) level with the map, right of it; from 1400 px
            # the grid itself (at 1200 its controls take more lines in the narrower column, and the
            # grid starts level with the map's caption)
            column = dict(boxes["grid"], left=min(boxes["menu"]["left"], boxes["grid"]["left"]), top=boxes["menu"]["top"])
            assert _beside(column, boxes["map"]), (width, layer, boxes)
            assert width < 1400 or _beside(boxes["grid"], boxes["map"]), (width, layer, boxes)
            covered = root.evaluate(_BESIDE_MAP)
            if width < 1920:  # (at 1920 the grid's column is as short as the map's is tall: see below)
                assert covered > 0.4, f"at {width} px only {covered:.0%} of the room beside the method map shows something"
            # the grid keeps its width where its column has room for it
            wanted = kernel.eval("explorer.grid.display_width")
            assert boxes["grid"]["width"] >= min(wanted, boxes["root"]["right"] - boxes["grid"]["left"]) - 1, (
                width, wanted, boxes)
            if width == 1920:  # room for three columns: the input, the channel view, the grid, at its width
                assert _beside(boxes["grid"], boxes["panel"]), boxes
                assert abs(boxes["grid"]["width"] - wanted) <= 1, (wanted, boxes)
                # the explorer is no taller than its input column (the input, the method map and its caption)
                assert boxes["grid"]["bottom"] <= boxes["map"]["bottom"], boxes
    kernel.execute(f"explorer.layer = {state['layer']!r}; assert explorer.wait_idle(120)")

    # ---- no method: the input column is short, and the grid takes the whole width under the
    # pictures (beside the channel view where there is room for it at its width)
    kernel.execute("explorer.method = 'none'; assert explorer.wait_idle(120)")
    for width in (1000, 1400, 1600, 1920):
        boxes = _at_width(nb, root, width)
        nb.screenshot(f"no-method-{width}", root)
        if width == 1920:
            assert _beside(boxes["grid"], boxes["panel"]), boxes
        else:
            assert boxes["grid"]["top"] >= max(boxes["input"]["bottom"], boxes["panel"]["bottom"]), boxes
            assert boxes["grid"]["left"] <= 1, boxes
        if width == 1600:  # the channel view's line has room for the class scores beside it
            assert _beside(boxes["scores"], boxes["panel"]), boxes
        assert boxes["grid"]["right"] <= boxes["root"]["right"] + 1, boxes
        assert root.evaluate(_OVERFLOWING) == [], f"a part of the explorer scrolls sideways at {width} px"
    kernel.execute("explorer.method = 'grad-cam'; assert explorer.wait_idle(120)")

    # ---- a narrow window stacks the columns, nothing wider than the output
    for width in (1000, 1100):
        boxes = _at_width(nb, root, width)
        nb.screenshot(f"narrow-{width}", root)
        assert boxes["panel"]["top"] >= boxes["map"]["bottom"] - 1, boxes  # the channel view under the map
        assert boxes["grid"]["right"] <= boxes["root"]["right"] + 1 and boxes["grid"]["left"] <= 1, boxes
        assert root.evaluate(_OVERFLOWING) == [], f"a part of the explorer scrolls sideways at {width} px"

    # ---- typing in the layer filter changes the menu's options, and moves no control of its row:
    # the channel slider stays where it is (the menu keeps its width whatever is left in it)
    box = root.locator(".widget-text input").first
    options = "el => el.querySelectorAll('option').length"
    menu = nb.widget(".cnnw-explorer .cnnw-select select")
    all_options = menu.evaluate(options)
    typed = "layer3.1.zz"
    for width in (1000, 1200, 1400, 1600, 1920):
        start = _at_width(nb, root, width)
        box.click()
        seen = []
        for end in range(1, len(typed) + 1):
            nb.page.keyboard.type(typed[end - 1])
            text = typed[:end]
            poll(lambda: kernel.eval("explorer.layer_filter.value"), lambda v, text=text: v == text,
                 what=f"filter {text!r}")
            offered = kernel.eval("len(explorer.layer_select.options)")
            seen.append(poll(lambda: menu.evaluate(options), lambda n, offered=offered: n == offered,
                             what=f"the menu narrowed down to {offered} by {text!r}"))
            now = root.evaluate(_BOXES)
            for part in ("slider", "menu", "filter"):
                moved = max(abs(now[part][k] - start[part][k]) for k in ("left", "top", "width"))
                assert moved <= 1, f"typing {text!r} at {width} px moved the {part}: {start[part]} -> {now[part]}"
        # "layer3" leaves a few layers; a word that nothing matches, the layer shown alone
        assert seen[-1] == 1 < seen[len("layer3") - 1] < all_options, seen
        message = kernel.eval("explorer.status.message")
        assert "no other layer matches 'layer3.1.zz'" in message, message
        box.fill("")
        poll(lambda: menu.evaluate(options), lambda n: n == all_options, what="all layers back in the menu")
    nb.screenshot("after-filter", root)
    status = kernel.eval("dict(error=explorer.status.is_error, errors=explorer.stats['errors'])")
    assert not status["error"] and status["errors"] == 0, status
