"""Proves the browser harness on a tiny notebook: real mouse drag on an ipycanvas canvas and a
dropdown change, checked both in the kernel's Python state and in the canvas pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.browser.harness import changed_fraction, poll

HERE = Path(__file__).resolve().parent
STEELBLUE = (70, 130, 180)
CRIMSON = (220, 20, 60)


def _is(rgba: np.ndarray, rgb: tuple[int, int, int], tol: int = 8) -> bool:
    return bool(np.all(np.abs(rgba[:3].astype(int) - np.array(rgb)) <= tol))


@pytest.mark.browser
def test_drag_and_dropdown_reach_python_and_pixels(open_notebook):
    nb = open_notebook(HERE / "smoke_canvas.ipynb")
    nb.run_all_and_wait()
    canvas = nb.widget(".smoke-canvas")
    kernel = nb.kernel

    start = kernel.eval("state")
    assert start["box"] == [20, 20] and start["color"] == "steelblue"
    # The square is drawn where Python says it is (canvas pixel (row=40, col=40) is its centre).
    before = poll(lambda: nb.canvas_pixels(canvas), lambda px: _is(px[40, 40], STEELBLUE), what="square drawn")
    assert before.shape == (160, 240, 4)
    nb.screenshot("smoke-before", canvas)

    # Grab the square at its centre and drop it 120 px right, 70 px down, with real mouse events.
    nb.drag(canvas, (40, 40), (160, 110))
    end = kernel.wait_until("state", lambda s: s["grab"] is None and s["moves"] > 0)
    # Positions come back quantized to CSS pixels (here 1:1 with canvas pixels): allow a few.
    assert abs(end["box"][0] - 140) <= 3 and abs(end["box"][1] - 90) <= 3, end
    assert end["moves"] >= 2, "the drag should deliver intermediate moves, not only the release"

    after = poll(
        lambda: nb.canvas_pixels(canvas),
        lambda px: _is(px[110, 160], STEELBLUE) and not _is(px[40, 40], STEELBLUE),
        what="square moved on the canvas",
    )
    # Two 40x40 squares changed place on a 240x160 canvas: about 2 * 1600 / 38400 of the pixels.
    assert changed_fraction(before, after) > 0.07

    # A dropdown change is a real selection in the <select> of the ipywidgets view.
    nb.widget(".smoke-color select").select_option("crimson")
    assert kernel.wait_until("state['color']", lambda c: c == "crimson") == "crimson"
    recolored = poll(
        lambda: nb.canvas_pixels(canvas), lambda px: _is(px[110, 160], CRIMSON), what="square recoloured"
    )
    assert changed_fraction(after, recolored) > 0.03
    nb.screenshot("smoke-after", canvas)

    # Callback exceptions are only logged by ipywidgets; the notebook surfaces them in `state`.
    assert kernel.eval("state['errors']") == []
    assert nb.widget(".smoke-status").inner_text().strip() == "ok"
