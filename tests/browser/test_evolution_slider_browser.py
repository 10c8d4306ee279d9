"""The feature-evolution view's epoch slider in a real browser: with no epoch chosen, a press on
any epoch picks it, the one the knob sat on before included, and a drag after that picks the epoch
it ends on."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.browser.harness import poll, write_notebook

CELL = """from cnnwidgets.widgets.experiments import EvolutionView
view = EvolutionView()
view.follow = False
view.epochs = [0, 1, 2, 3]
view.epoch = 3
view.epoch = None  # no epoch chosen: before, the knob stayed on epoch 3's position
view.add_class("cnnw-evolution-test")
view"""


def _notebook(folder: Path) -> Path:
    return write_notebook(folder / "evolution_slider.ipynb", CELL)


@pytest.mark.browser
def test_a_press_on_the_epoch_under_the_old_knob_picks_it(open_notebook, tmp_path):
    nb = open_notebook(_notebook(tmp_path))
    nb.run_all_and_wait()
    track = nb.widget(".cnnw-evolution-test .noUi-target")
    kernel = nb.kernel
    assert kernel.eval("view.epoch") is None
    box = nb.box(track)
    middle = box["height"] / 2
    # a press at the right end of the track, where epoch 3 is (and where the knob sat while it
    # was chosen); was: the page sent nothing, as the slider's value did not change, and no epoch
    # was picked
    nb.click_at(track, box["width"] - 1, middle)
    assert kernel.wait_until("view.epoch", lambda e: e is not None) == 3
    labels = nb.page.locator(".cnnw-evolution-test .widget-label")
    poll(lambda: [t.strip() for t in labels.all_inner_texts()], lambda texts: "3" in texts, what="the label saying 3")
    # the slider's range is the epochs again: a drag from the knob to the left end picks epoch 0
    # (the slider ignores presses while the knob still glides to the position tapped)
    poll(lambda: track.evaluate("e => e.classList.contains('noUi-state-tap')"), lambda tapping: not tapping,
         what="the knob's glide to the tapped position over")
    nb.drag(track, (box["width"] - 2, middle), (1, middle))
    assert kernel.wait_until("view.epoch", lambda e: e == 0, timeout=10) == 0
    assert kernel.eval("view.error") is False
