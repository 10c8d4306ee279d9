"""A closed explorer keeps nothing it showed; a slow model's superseded work stops after one pass."""

from __future__ import annotations

import gc
import threading
import time
import weakref

import numpy as np
import pytest
import torch
from torch import nn

from cnnwidgets.app import Explorer

SIZE = 32


def picture(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random((SIZE, SIZE, 3)) * 155 + 100).astype(np.uint8)


class Net(nn.Module):
    """Three conv stages; every forward pass (of any copy) is counted, and may be slowed down."""

    passes: list[float] = []
    delay = 0.0

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 12, 3, padding=1), nn.ReLU(),
        )
        self.head = nn.Linear(12, 5)

    def forward(self, x):
        Net.passes.append(time.monotonic())
        if Net.delay:
            time.sleep(Net.delay)
        return self.head(self.features(x).mean(dim=(2, 3)))


@pytest.fixture(autouse=True)
def _reset():
    Net.passes, Net.delay = [], 0.0
    yield
    Net.delay = 0.0


def make(**kw) -> Explorer:
    torch.manual_seed(0)
    kw.setdefault("background", False)
    return Explorer(Net().eval(), picture(), input_size=(3, SIZE, SIZE), samples={}, box=(4, 4, 8, 8), **kw)


def test_a_closed_explorer_keeps_no_frame_image_or_picture_it_showed():
    ex = make(layer="features.3", method="grad-cam")
    assert ex.wait_idle(60) and ex.method_result is not None
    frame = weakref.ref(ex._current()[0])  # what Python reads as the grid, maps and scores
    image = ex.input_image
    assert len(ex.grid.image) and len(ex.panel.value) and len(ex.canvas.image) and len(ex.method_view.image.value)
    ex.close()
    gc.collect()
    # kept referenced (as IPython's Out[] keeps a cell's result), the explorer holds none of it
    assert frame() is None
    assert not ex.grid.image and not ex.grid.stats and not ex.panel.value
    assert not ex.canvas.image and not ex.canvas.fill_image and not ex.method_view.image.value
    for read in (lambda: ex.input_image, lambda: ex.method_result, lambda: ex.grid_image):
        with pytest.raises(RuntimeError, match="closed"):
            read()
    assert image.shape == (SIZE, SIZE, 3)  # what was read before stays the caller's


def test_a_layer_switch_during_a_slow_unoccluded_pass_skips_the_occluded_pass_of_the_old_layer():
    ex = make(layer="features.0", background=True)
    try:
        assert ex.wait_idle(60)
        Net.delay = 0.6
        Net.passes.clear()
        ex.layer = "features.3"  # its unoccluded pass starts in the worker ...
        deadline = time.monotonic() + 10
        while not Net.passes and time.monotonic() < deadline:
            time.sleep(0.01)
        assert Net.passes, "the worker did not start"
        ex.layer = "features.6"  # ... and this arrives while it runs
        assert ex.wait_idle(60)
        # features.3: its unoccluded pass only; features.6: unoccluded and occluded
        assert len(Net.passes) == 3, Net.passes
        assert ex.shown_state.layer == "features.6" and ex.activations.shape[0] == 12
        assert ex.controller.stats.dropped >= 1
    finally:
        ex.close()


def test_closing_during_a_slow_unoccluded_pass_runs_no_occluded_pass_after_it():
    ex = make(layer="features.0", background=True)
    assert ex.wait_idle(60)
    Net.delay = 0.6
    Net.passes.clear()
    ex.layer = "features.3"
    deadline = time.monotonic() + 10
    while not Net.passes and time.monotonic() < deadline:
        time.sleep(0.01)
    assert Net.passes
    threading.Thread(target=ex.close).start()  # returns when the pass does (or warns after 2 s)
    time.sleep(0.1)
    deadline = time.monotonic() + 10
    while any(t.name.startswith("cnnwidgets") for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.8)  # long enough for a second pass to start, had one been run
    assert len(Net.passes) == 1, Net.passes


def test_an_explorer_without_a_method_starts_no_method_thread_until_one_is_picked():
    def threads() -> list[str]:
        return [t.name for t in threading.enumerate() if t.name == "cnnwidgets-methods"]

    before = len(threads())
    ex = make(layer="features.3", background=True)
    try:
        assert ex.wait_idle(60) and ex.method == "none" and ex.method_result is None
        assert len(threads()) == before  # the live view's worker only
        ex.method = "grad-cam"
        assert ex.wait_idle(60) and ex.method_result is not None
        assert len(threads()) == before + 1
        ex.method = "none"
        assert ex.wait_idle(60) and ex.method_result is None
    finally:
        ex.close()
