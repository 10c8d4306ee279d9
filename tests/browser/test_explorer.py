"""The explorer in a real browser: run the tour notebook, drag the occluder with the mouse, pick a
layer and a channel by clicking, move the occluder and pick a class with the keyboard, and check
that Python's state and the pixels on screen follow."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.browser.harness import changed_fraction, poll

REPO = Path(__file__).resolve().parents[2]
TOUR = REPO / "notebooks" / "00_tour.ipynb"


def _grid_pixels(nb):
    return nb.element_pixels(nb.widget(".cnnw-explorer .cnnw-grid-image"))


def _panel_pixels(nb):
    return nb.element_pixels(nb.widget(".cnnw-explorer img.cnnw-pixelated"))


#: The ancestors in its output area whose overflow cuts off part of an element's focus ring (an
#: outline reaches outside the element by its width plus its offset): [class, ring edge, ancestor
#: edge] each. The notebook's own scrolling is left out: it hides what is scrolled away.
_RING_CLIPPED = """el => {
    el.scrollIntoView({block: 'center'});
    const cs = getComputedStyle(el), r = el.getBoundingClientRect();
    const reach = parseFloat(cs.outlineWidth) + parseFloat(cs.outlineOffset);
    const ring = [r.left - reach, r.top - reach, r.right + reach, r.bottom + reach];
    const cut = [];
    const outputs = el.closest('.jp-Cell-outputArea');
    for (let a = el.parentElement; a && outputs && outputs.contains(a); a = a.parentElement) {
        const s = getComputedStyle(a);
        if (s.overflowX === 'visible' && s.overflowY === 'visible') continue;
        const b = a.getBoundingClientRect(), edges = [b.left, b.top, b.right, b.bottom];
        [0, 1].forEach(i => { if (ring[i] < edges[i] - 0.5) cut.push([a.className.slice(0, 60), ring[i], edges[i]]); });
        [2, 3].forEach(i => { if (ring[i] > edges[i] + 0.5) cut.push([a.className.slice(0, 60), ring[i], edges[i]]); });
    }
    return cut;
}"""


def _same_shape_change(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape != b.shape:
        return 1.0
    return changed_fraction(a, b)


def run_explorer_checks(nb) -> None:
    kernel = nb.kernel
    kernel.execute("assert explorer.wait_idle(120)")
    state = kernel.eval("dict(box=explorer.box, layer=explorer.layer, channel=explorer.channel, "
                        "size=explorer.input_image.shape[:2], status=explorer.status.message, "
                        "error=explorer.status.is_error, scale=explorer.canvas.display_width / explorer.canvas.image_width)")
    assert not state["error"], state["status"]
    height, width = state["size"]
    scale = state["scale"]
    x, y, w, h = state["box"]
    nb.screenshot("explorer-start", nb.widget(".cnnw-explorer"))
    # the captions of the layer menu and the scale buttons, one above the other, end where
    # ipywidgets' descriptions do: 80px from their rows' start, right-aligned
    edges = nb.widget(".cnnw-explorer").evaluate(
        """root => ['.cnnw-select-caption', '.cnnw-scale-label', '.cnnw-methods .widget-dropdown .widget-label']
            .map(s => { const e = root.querySelector(s), text = document.createRange();
                        text.selectNodeContents(e);  // where the words end, not their box
                        return Math.round(text.getBoundingClientRect().right - e.parentElement.getBoundingClientRect().left); })""")
    assert max(edges) - min(edges) <= 1 and 70 <= edges[0] <= 82, edges

    # ---- drag the occluder with real mouse events: grab its centre, move it left and down
    occluder = nb.widget(".cnnw-explorer .cnnw-occluder")
    picture = nb.widget(".cnnw-explorer .cnnw-occluder-image")  # image pixels * scale = CSS pixels here
    grid_before = _grid_pixels(nb)
    panel_before = _panel_pixels(nb)
    requests_before = kernel.eval("explorer.stats['requests']")
    start = ((x + w / 2) * scale, (y + h / 2) * scale)
    dx, dy = -round(x * 0.75), round((height - y - h) * 0.75)  # stays inside the image
    end = (start[0] + dx * scale, start[1] + dy * scale)
    nb.drag(picture, start, end, steps=12)
    final = kernel.wait_until("dict(box=explorer.box, dragging=explorer.dragging)", lambda s: not s["dragging"])
    expected = (x + dx, y + dy)
    assert abs(final["box"][0] - expected[0]) <= 2 and abs(final["box"][1] - expected[1]) <= 2, (final, expected)
    assert final["box"][2:] == [w, h]
    kernel.execute("assert explorer.wait_idle(120)")
    shown = kernel.eval("list(explorer.shown_state.box)")
    assert shown == final["box"], "the final position must be the one computed and shown"
    moves = kernel.eval("explorer.stats['requests']") - requests_before
    assert 2 <= moves <= 12 + 4, f"{moves} updates for 12 mouse moves: the box must travel at most once per frame"
    grid_after = poll(lambda: _grid_pixels(nb), lambda px: _same_shape_change(grid_before, px) > 0.005,
                      what="feature grid updated after the drag")
    poll(lambda: _panel_pixels(nb), lambda px: _same_shape_change(panel_before, px) > 0.01,
         what="channel view updated after the drag")
    # the box outline on screen sits where Python says
    outline = nb.box(nb.widget(".cnnw-explorer .cnnw-occluder-box"))
    frame = nb.box(picture)
    assert abs((outline["x"] - frame["x"]) / scale - final["box"][0]) <= 2
    # a click on the box's last column of CSS pixels is a click on the box: nothing moves
    fx, fy = final["box"][:2]
    nb.page.mouse.click(*nb.page_point(picture, (fx + w) * scale - 0.5, (fy + h / 2) * scale))
    nb.page.wait_for_timeout(300)
    kernel.execute("assert explorer.wait_idle(120)")
    assert kernel.eval("list(explorer.box)") == final["box"]

    # ---- a storm: 300 pointer moves inside one animation frame reach the kernel as one update;
    # a second pointer (a finger) pressed, moved and lifted meanwhile neither moves nor ends the drag
    bx, by = final["box"][:2]
    grab = ((bx + w / 2) * scale, (by + h / 2) * scale)
    page_x, page_y = nb.page_point(picture, *grab)
    requests_before = kernel.eval("explorer.stats['requests']")
    nb.page.mouse.move(page_x, page_y)
    nb.page.mouse.down()
    last = occluder.evaluate(
        """(el, [x0, y0, n]) => {
            let x = x0, y = y0, dragging = [];
            const finger = (type, dx) => el.dispatchEvent(new PointerEvent(type, {clientX: x0 + dx, clientY: y0 + 40,
                bubbles: true, pointerId: 77, pointerType: "touch", isPrimary: false}));
            for (let i = 1; i <= n; i++) {
                x = x0 - 20 + (i % 40);
                y = y0 - 10 + (i % 20);
                el.dispatchEvent(new PointerEvent("pointermove", {clientX: x, clientY: y, bubbles: true,
                                                                pointerId: 1, pointerType: "mouse"}));
                if (i === 100) finger("pointerdown", 30);
                if (i === 150) finger("pointermove", 45);
                if (i === 200) {
                    finger("pointerup", 45);
                    dragging.push(el.classList.contains("cnnw-dragging"));
                }
            }
            return [x, y, dragging];
        }""",
        [page_x, page_y, 300],
    )
    nb.page.mouse.up()  # the real release, at the grab point: ends the drag where the mouse is
    storm = kernel.wait_until("dict(box=explorer.box, dragging=explorer.dragging)", lambda s: not s["dragging"])
    kernel.execute("assert explorer.wait_idle(120)")
    updates = kernel.eval("explorer.stats['requests']") - requests_before
    assert 2 <= updates <= 4, f"300 moves in one frame sent {updates} updates (press, one frame, release expected)"
    # the box ends where the last synthetic move put it, (0, -10) CSS pixels from the grab point
    assert abs(storm["box"][0] - bx) <= 1 and abs(storm["box"][1] - (by - 10 / scale)) <= 1, (storm, bx, by)
    assert kernel.eval("list(explorer.shown_state.box)") == storm["box"]
    assert last == [page_x, page_y - 10, [True]]

    # ---- resize with the corner handle: the top-left corner stays, the size follows the pointer
    handle = nb.box(nb.widget(".cnnw-explorer .cnnw-occluder-handle"))
    hx, hy = handle["x"] + handle["width"] / 2, handle["y"] + handle["height"] / 2
    nb.page.mouse.move(hx, hy)
    nb.page.mouse.down()
    nb.page.mouse.move(hx + 3 * scale, hy + 2 * scale, steps=4)
    nb.page.mouse.up()
    resized = kernel.wait_until("dict(box=explorer.box, dragging=explorer.dragging)", lambda s: not s["dragging"])
    sx, sy, sw, sh = storm["box"]
    assert resized["box"][:2] == [sx, sy], (resized, storm)
    assert abs(resized["box"][2] - (sw + 3)) <= 1 and abs(resized["box"][3] - (sh + 2)) <= 1, (resized, storm)
    kernel.execute("assert explorer.wait_idle(120)")
    assert kernel.eval("list(explorer.shown_state.box)") == resized["box"]

    # ---- pick a deeper layer in the grouped layer menu
    layers = kernel.eval("explorer.layer_select.options")
    deeper = layers[len(layers) // 2] if layers[len(layers) // 2] != state["layer"] else layers[-1]
    nb.widget(".cnnw-explorer .cnnw-select select").select_option(deeper)
    assert kernel.wait_until("explorer.layer", lambda v: v == deeper) == deeper
    kernel.execute("assert explorer.wait_idle(120)")
    assert kernel.eval("explorer.shown_state.layer") == deeper
    poll(lambda: _grid_pixels(nb), lambda px: _same_shape_change(grid_after, px) > 0.05,
         what="feature grid shows the new layer")

    # ---- click a tile of the grid: its channel becomes the selected one
    tile = kernel.eval(
        "(lambda g, c: dict(rect=list(g.grid.tile_rect(c)), scale=g.display_width / g.grid.width, channel=c))"
        "(explorer.grid, min(3, explorer.grid.grid.count - 1))"
    )
    rx, ry, rw, rh = tile["rect"]
    image = nb.widget(".cnnw-explorer .cnnw-grid-image")
    panel_before = _panel_pixels(nb)
    nb.click_at(image, (rx + rw / 2) * tile["scale"], (ry + rh / 2) * tile["scale"])
    assert kernel.wait_until("explorer.channel", lambda c: c == tile["channel"]) == tile["channel"]
    kernel.execute("assert explorer.wait_idle(120)")
    assert kernel.eval("explorer.shown_state.channel") == tile["channel"]
    poll(lambda: _panel_pixels(nb), lambda px: _same_shape_change(panel_before, px) > 0.01,
         what="channel view shows the clicked channel")
    # hovering shows the channel's statistics in the browser, without the kernel
    tip = nb.widget(".cnnw-explorer .cnnw-grid-tip")
    assert f"channel {tile['channel']}" in tip.inner_text()

    # ---- a class score row pressed, redrawn by a new frame, then released: its class is the target
    row = nb.page.locator(".cnnw-explorer .cnnw-score-row").nth(2)
    pressed = int(row.get_attribute("data-index"))
    rb = nb.box(row)
    nb.page.mouse.move(rb["x"] + 20, rb["y"] + rb["height"] / 2)
    nb.page.mouse.down()
    kernel.execute("explorer.box = (explorer.box[0] // 2, *explorer.box[1:]); assert explorer.wait_idle(120)")
    nb.page.wait_for_timeout(200)  # the new rows reach the page
    nb.page.mouse.up()
    assert kernel.wait_until("explorer.target", lambda c: c == pressed) == pressed
    kernel.execute("assert explorer.wait_idle(120)")
    # picking another class turns its row bold: no column of the list moves for that
    nb.page.wait_for_timeout(200)
    bars_x = ".cnnw-explorer .cnnw-score-bar"
    columns = nb.page.eval_on_selector_all(bars_x, "els => els.map(e => Math.round(e.getBoundingClientRect().x))")
    rows = nb.page.locator(".cnnw-explorer .cnnw-score-row")
    # bold on the longest label, or off it: where a column is as wide as its text, this moves it
    by_length = sorted((rows.nth(i) for i in range(rows.count())),
                       key=lambda r: -len(r.locator(".cnnw-score-label").inner_text()))
    other = next(r for r in by_length if int(r.get_attribute("data-index")) != pressed)
    picked = int(other.get_attribute("data-index"))
    other.click()
    assert kernel.wait_until("explorer.target", lambda c: c == picked) == picked
    kernel.execute("assert explorer.wait_idle(120)")
    nb.page.wait_for_timeout(200)
    assert nb.page.eval_on_selector_all(bars_x, "els => els.map(e => Math.round(e.getBoundingClientRect().x))") == columns

    # ---- the keyboard alone: arrow keys move the occluder (a press is a drag, as with the mouse),
    # the class-score list picks a target with ArrowDown + Enter, and keys typed in the explorer's
    # controls reach no JupyterLab shortcut ("m" would turn the explorer's cell into Markdown)
    kernel.execute("explorer.box = (0, *explorer.box[1:]); assert explorer.wait_idle(120)")
    kx, ky, kw, kh = kernel.eval("list(explorer.box)")
    step = kernel.eval("explorer.canvas.key_step")
    occluder.focus()
    cells_before = nb.cells(".cnnw-explorer")
    for _ in range(3):
        nb.page.keyboard.press("ArrowRight")
    keyed = kernel.wait_until("dict(box=explorer.box, dragging=explorer.dragging)",
                              lambda s: s["box"][0] == kx + 3 * step and not s["dragging"])
    assert keyed["box"] == [kx + 3 * step, ky, kw, kh], (keyed, step)
    kernel.execute("assert explorer.wait_idle(120)")
    assert kernel.eval("list(explorer.shown_state.box)") == keyed["box"]
    label = occluder.get_attribute("aria-label")
    assert f"x {kx + 3 * step}, y {ky}, width {kw}, height {kh}" in label, label
    ring = occluder.evaluate("el => [el.matches(':focus-visible'), getComputedStyle(el).outlineStyle, "
                             "getComputedStyle(el).outlineWidth]")
    assert ring == [True, "solid", "2px"], ring
    assert occluder.evaluate(_RING_CLIPPED) == [], "the occluder's focus ring must show on all four sides"

    score_list = nb.widget(".cnnw-explorer .cnnw-scores-list")
    score_list.focus()
    assert score_list.evaluate(_RING_CLIPPED) == [], "the class list's focus ring must show on all four sides"
    active_row = "el => document.getElementById(el.getAttribute('aria-activedescendant')).dataset.index"
    order = [int(i) for i in score_list.evaluate("el => Array.from(el.children, (r) => r.dataset.index)")]
    at = order.index(int(score_list.evaluate(active_row)))
    key, picked = ("ArrowDown", order[at + 1]) if at + 1 < len(order) else ("ArrowUp", order[at - 1])
    nb.page.keyboard.press(key)
    assert int(score_list.evaluate(active_row)) == picked
    nb.page.keyboard.press("Enter")
    assert kernel.wait_until("explorer.target", lambda c: c == picked) == picked
    kernel.execute("assert explorer.wait_idle(120)")
    selected_row = ".cnnw-explorer .cnnw-score-row[aria-selected='true']"
    poll(lambda: nb.page.locator(selected_row).first.get_attribute("data-index"), lambda v: v == str(picked),
         what="the picked class marked selected in the list")

    grid_order, channel_now = kernel.eval("(explorer.grid.geometry['order'], explorer.channel)")
    slot = grid_order.index(channel_now)
    key, neighbour = (("ArrowRight", grid_order[slot + 1]) if slot + 1 < len(grid_order)
                   else ("ArrowLeft", grid_order[slot - 1]))
    grid = nb.widget(".cnnw-explorer .cnnw-grid")
    grid.focus()
    assert grid.evaluate(_RING_CLIPPED) == [], "the grid's focus ring must show on all four sides"
    nb.page.keyboard.press(key)
    assert kernel.wait_until("explorer.channel", lambda c: c == neighbour) == neighbour
    kernel.execute("assert explorer.wait_idle(120)")
    info = nb.widget(".cnnw-explorer .cnnw-grid-info")  # shown while the grid has the keyboard focus
    poll(lambda: info.inner_text(), lambda text: text.startswith(f"channel {neighbour}, mean "),
         what="the selected tile's statistics under the grid")

    fill = nb.page.locator(".cnnw-explorer .widget-dropdown").filter(
        has=nb.page.locator("label", has_text=re.compile(r"^fill$"))).locator("select").first
    fill_before = kernel.eval("explorer.fill")
    fill.focus()
    nb.page.keyboard.press("m")  # no fill starts with "m": the drop-down keeps its choice
    nb.page.wait_for_timeout(300)
    cells_after = nb.cells(".cnnw-explorer")
    assert cells_after == cells_before, (cells_before, cells_after)  # no cell changed, none other active
    assert [c["kind"] for c in cells_after if c["holds"]] == ["code"]
    assert kernel.eval("explorer.fill") == fill_before
    kernel.execute("assert explorer.wait_idle(120)")
    nb.page.evaluate("document.activeElement.blur()")  # no focus ring in the pictures below

    # ---- the occluder switched off and on with its check box: the captions above the pictures
    # change length, the pictures stay where they are
    pictures = [".cnnw-occluder-image", "img.cnnw-pixelated", ".cnnw-grid-image"]
    tops_js = """(root, sels) => sels.map(s => Math.round(root.querySelector(s).getBoundingClientRect().top
                                                  - root.getBoundingClientRect().top))"""
    explorer_root = nb.widget(".cnnw-explorer")
    tops_on = explorer_root.evaluate(tops_js, pictures)
    switch = explorer_root.get_by_role("checkbox", name="occluder", exact=True)
    box_on = kernel.eval("list(explorer.box)")
    switch.click()
    kernel.wait_until("explorer.box", lambda b: b is None)
    kernel.execute("assert explorer.wait_idle(120)")
    poll(lambda: nb.widget(".cnnw-explorer .cnnw-caption").inner_text(), lambda t: "occluder is off" in t,
         what="the input caption says the occluder is off")
    assert explorer_root.evaluate(tops_js, pictures) == tops_on
    switch.click()
    assert kernel.wait_until("explorer.box", lambda b: b is not None) == box_on
    kernel.execute("assert explorer.wait_idle(120)")
    nb.page.evaluate("document.activeElement.blur()")

    # ---- the box previews its fill as the model sees it: the noise itself (the part of the fill's
    # picture under the box, as large as the image shown), and an opaque gray
    box_style = """el => { const s = getComputedStyle(el), img = el.parentElement.querySelector('.cnnw-occluder-image');
                           return [s.backgroundImage.slice(0, 26), s.backgroundSize, s.backgroundColor,
                                   Math.round(img.getBoundingClientRect().width)]; }"""
    occluder_box = nb.widget(".cnnw-explorer .cnnw-occluder-box")
    fill_then = kernel.eval("explorer.fill")
    kernel.execute("explorer.fill = 'noise'")
    poll(lambda: occluder_box.evaluate(box_style), lambda s: s[0].startswith('url("data:image/png;base64'),
         what="the noise fill's picture under the box")
    image_css, size_css, _, shown_width = occluder_box.evaluate(box_style)
    assert abs(float(size_css.split("px")[0]) - shown_width) <= 1, (size_css, shown_width)
    kernel.execute("explorer.fill = 'gray'")
    poll(lambda: occluder_box.evaluate(box_style), lambda s: s[0] == "none" and s[2] == "rgb(128, 128, 128)",
         what="an opaque gray box")
    kernel.execute(f"explorer.fill = {fill_then!r}")
    kernel.execute("assert explorer.wait_idle(120)")

    # ---- the top class clicked as the target: its occlusion map is the one worth a picture
    top_row = nb.page.locator(".cnnw-explorer .cnnw-score-row").first
    top = int(top_row.get_attribute("data-index"))
    top_row.click()
    assert kernel.wait_until("explorer.target", lambda c: c == top) == top
    nb.page.evaluate("document.activeElement.blur()")

    # ---- pick the occlusion map in the method panel: it streams in and is drawn over the image
    method_image = ".cnnw-explorer .cnnw-method-image"
    nb.page.locator(".cnnw-explorer .cnnw-methods select").first.select_option("occlusion")
    assert kernel.wait_until("explorer.method", lambda m: m == "occlusion") == "occlusion"
    done = kernel.wait_until(
        "None if explorer.method_result is None else dict(complete=explorer.method_result.complete, "
        "window=list(explorer.method_result.occlusion.window))",
        lambda r: r is not None and r["complete"], timeout=60)
    box, size = kernel.eval("(list(explorer.box), explorer.occluder_controls.size)")
    assert done["window"] == [box[3], box[2]], (done, box)  # the box the user resized is the map's window
    assert size == max(box[2], box[3])  # and the size control shows it
    shown = poll(lambda: nb.element_pixels(nb.widget(method_image)), lambda px: px.size > 0 and px.std() > 5,
                 what="occlusion map drawn in the method panel")
    assert shown.shape[0] > 32 and shown.shape[1] > 32
    # the map fills its column exactly: no horizontal scroll bar under it
    overflow = nb.widget(".cnnw-explorer .cnnw-methods").evaluate("el => el.scrollWidth - el.clientWidth")
    assert overflow <= 0, f"the method panel is {overflow} px wider than its column"

    # ---- nothing went wrong on the way
    status = kernel.eval("dict(message=explorer.status.message, error=explorer.status.is_error, "
                         "errors=explorer.stats['errors'])")
    assert not status["error"] and status["errors"] == 0, status
    # the README's picture: after a drag, a deeper layer, a clicked channel and its hover text
    nb.screenshot("explorer", nb.widget(".cnnw-explorer"), docs=True)

    # ---- in a medium window nothing inside the explorer scrolls sideways (a box a few pixels
    # narrower than its content shows a scroll bar)
    overflowing = """root => Array.from(root.querySelectorAll('*')).filter(e => ['auto', 'scroll'].includes(
        getComputedStyle(e).overflowX) && e.scrollWidth > e.clientWidth + 0.5).map(e => e.className)"""
    for width in (1100, 800, 700):
        nb.page.set_viewport_size({"width": width, "height": 1500})
        nb.page.wait_for_timeout(300)
        assert explorer_root.evaluate(overflowing) == [], f"a part of the explorer scrolls sideways at {width} px"

    # ---- a narrow window shrinks the channel view without squashing it
    nb.page.set_viewport_size({"width": 560, "height": 1500})
    panel = nb.widget(".cnnw-explorer img.cnnw-pixelated")
    natural = panel.evaluate("e => e.naturalWidth / e.naturalHeight")
    wanted = float(kernel.eval("explorer.panel.layout.width").removesuffix("px"))
    shown = poll(lambda: panel.bounding_box(), lambda b: b["width"] < wanted - 20,
                 what="channel view narrower than its display width")
    assert abs(shown["width"] / shown["height"] - natural) < 0.03 * natural, (shown, natural)
    # a narrow class-score list (as on a zoomed page) shrinks the class names, never the numbers
    kernel.execute("explorer.scores_view.layout.width = '240px'")
    fits = poll(lambda: nb.widget(".cnnw-explorer .cnnw-scores-list").evaluate(
        """el => {
            const box = el.getBoundingClientRect();
            return {width: box.width, cut: Array.from(el.querySelectorAll('.cnnw-score-value, .cnnw-score-delta'))
                .filter((c) => c.scrollWidth > c.clientWidth || c.getBoundingClientRect().right > box.right + 0.5)
                .map((c) => c.textContent)};
        }"""), lambda f: f["width"] <= 240, what="class-score list 240 px wide")
    assert fits["cut"] == [], fits

    # ---- the narrow window (560px, the file browser open) shrinks the input picture with its
    # occluder, and the mouse still moves the box by what it moved on screen
    kernel.execute("explorer.box = (4, 4, *explorer.box[2:]); assert explorer.wait_idle(120)")
    display_width, image_width = kernel.eval("(explorer.canvas.display_width, explorer.canvas.image_width)")
    picture = nb.widget(".cnnw-explorer .cnnw-occluder-image")
    shown = poll(lambda: picture.bounding_box(), lambda b: b["width"] < display_width - 20,
                 what="input picture narrower than its display width")
    column = nb.widget(".cnnw-explorer .cnnw-occluder").evaluate("e => e.parentElement.getBoundingClientRect().width")
    assert shown["width"] <= column + 0.5, (shown, column)
    natural = picture.evaluate("e => e.naturalWidth / e.naturalHeight")
    assert abs(shown["width"] / shown["height"] - natural) < 0.03 * natural, (shown, natural)
    small = shown["width"] / image_width  # CSS pixels per image pixel now
    bx, by, bw, bh = kernel.eval("list(explorer.box)")
    outline = nb.box(nb.widget(".cnnw-explorer .cnnw-occluder-box"))
    shown = nb.box(picture)
    assert abs(outline["x"] - shown["x"] - bx * small) <= 1.5 and abs(outline["width"] - bw * small) <= 1.5
    grab = ((bx + bw / 2) * small, (by + bh / 2) * small)
    nb.drag(picture, grab, (grab[0] + 40, grab[1] + 20), steps=6)
    moved = kernel.wait_until("dict(box=explorer.box, dragging=explorer.dragging)", lambda s: not s["dragging"])
    assert abs(moved["box"][0] - (bx + 40 / small)) <= 2 and abs(moved["box"][1] - (by + 20 / small)) <= 2, (
        moved, bx, by, small)
    kernel.execute("assert explorer.wait_idle(120)")
    # a box near the picture's right edge, small or not, and a small one in its bottom-right corner:
    # the resize handle stays on the picture, inside the explorer (was: a small box's handle stuck
    # out of the picture, and out of the explorer's outer box by 11 px at this width)
    width, height = kernel.eval("(explorer.canvas.image_width, explorer.canvas.image_height)")
    for box in ((width - 10, height // 3, 8, 40), (width - 8, height - 8, 8, 8), (width - 41, height // 3, 40, 40)):
        kernel.execute(f"explorer.box = {box}; assert explorer.wait_idle(120)")
        poll(lambda: nb.widget(".cnnw-explorer .cnnw-occluder-box").evaluate("e => e.style.left"),
             lambda left, box=box: abs(float(left.rstrip("%")) - 100 * box[0] / width) < 0.01, what=f"box {box} drawn")
        handle = nb.box(nb.widget(".cnnw-explorer .cnnw-occluder-handle"))
        shown, outer = nb.box(picture), explorer_root.bounding_box()
        assert shown["x"] - 0.5 <= handle["x"] and handle["x"] + handle["width"] <= shown["x"] + shown["width"] + 0.5, (
            box, handle, shown)
        assert shown["y"] - 0.5 <= handle["y"] and handle["y"] + handle["height"] <= shown["y"] + shown["height"] + 0.5, (
            box, handle, shown)
        assert handle["x"] + handle["width"] <= outer["x"] + outer["width"] + 0.5, (box, handle, outer)
    nb.page.set_viewport_size({"width": 1400, "height": 1500})

    # ---- upload a photo larger than one websocket message may be (10 MiB): it arrives in pieces
    # and is shown; a file over the button's limit is refused in the status line
    upload = nb.widget(".cnnw-explorer .cnnw-upload")
    assert upload.inner_text().strip() == "upload"  # no file count
    noise = np.random.default_rng(0).integers(0, 256, size=(1900, 1900, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="PNG", compress_level=1)
    photo = buffer.getvalue()
    assert len(photo) > 10 * 2**20
    file_input = nb.page.locator(".cnnw-explorer .cnnw-upload ~ input[type=file]").first
    file_input.set_input_files(files=[{"name": "noise.png", "mimeType": "image/png", "buffer": photo}])
    assert kernel.wait_until("explorer.image", lambda v: v == "noise.png (uploaded)", timeout=60)
    kernel.execute("assert explorer.wait_idle(120)")
    assert kernel.eval("len(explorer.picker.data_for('noise.png (uploaded)'))") == len(photo)
    assert not kernel.eval("explorer.status.is_error"), kernel.eval("explorer.status.message")
    kernel.execute("explorer.picker.upload.max_bytes = 2**20")
    file_input.set_input_files(files=[{"name": "noise2.png", "mimeType": "image/png", "buffer": photo}])
    message = kernel.wait_until("explorer.status.message", lambda m: "noise2.png" in m)
    assert "files up to 1.0 MB can be uploaded here" in message and kernel.eval("explorer.status.is_error")
    # a message that wraps reads as a paragraph, not as lines one widget row (28 px) apart
    status_text = nb.widget(".cnnw-explorer .cnnw-status")
    poll(lambda: status_text.inner_text(), lambda t: "noise2.png" in t, what="the refusal in the status line")
    spacing = status_text.evaluate("e => [parseFloat(getComputedStyle(e).lineHeight), e.getClientRects().length, "
                                   "e.getBoundingClientRect().height]")
    assert spacing[0] < 24 and spacing[1] == 1, spacing  # one block, lines 1.4 font sizes apart
    assert kernel.eval("explorer.image") == "noise.png (uploaded)"


def rerun_explorer_cell_closes_the_old_explorer(nb) -> None:
    """Run the explorer's cell again from JupyterLab's Run menu: the explorer its first run made is
    closed (worker threads stopped, model copies freed), and the new one is the only one open."""
    kernel = nb.kernel
    kernel.execute("import weakref\nimport cnnwidgets.app\n_first, _first_probe = weakref.ref(explorer), explorer.probe\n"
                   "_open_before = len(cnnwidgets.app.open_widgets())")
    cell = nb.page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell").filter(
        has=nb.page.locator(".cnnw-explorer")).first
    cell.locator(".jp-InputArea-prompt").first.click()
    nb.page.locator(".lm-MenuBar-item", has_text=re.compile(r"^Run$")).first.click()
    nb.page.locator(".lm-Menu-item", has_text=re.compile(r"^Run Selected Cell")).first.click()
    state = kernel.wait_until(
        "dict(new=_first() is not explorer, first_closed=_first() is None or _first()._closed, "
        "probe_closed=_first_probe.closed, open=len(cnnwidgets.app.open_widgets()), before=_open_before, "
        "ready=explorer.wait_idle(1))",
        lambda v: v["new"] and v["ready"], timeout=90)
    assert state["first_closed"] and state["probe_closed"], state
    assert state["open"] == state["before"], state  # the old explorer out, the new one in
    kernel.execute("del _first, _first_probe, _open_before")


@pytest.mark.browser
def test_tour_explorer_follows_mouse_and_clicks(open_notebook):
    nb = open_notebook(TOUR, viewport=(1400, 1500))  # tall enough to hold the whole explorer
    nb.run_all_and_wait(timeout=240)
    run_explorer_checks(nb)
    rerun_explorer_cell_closes_the_old_explorer(nb)
