"""An open explorer draws itself again after a notebook cell that changed its model's weights
(a training loop in the next cell), in a real IPython shell running cells; and not when nothing
changed, when switched off, or when closed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

IPython = pytest.importorskip("IPython")
from IPython.core.interactiveshell import InteractiveShell  # noqa: E402

import cnnwidgets  # noqa: E402
from cnnwidgets.app import cells  # noqa: E402


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4),
    ).eval()


def image() -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.random((32, 32, 3)) * 255).astype(np.uint8)


@pytest.fixture
def shell():
    """A real IPython shell that runs cells (its post_run_cell event fires after each)."""
    sh = InteractiveShell.instance()
    yield sh
    cells.close_all()
    InteractiveShell.clear_instance()


def direct_activation(model: nn.Module, explorer, layer: str) -> np.ndarray:
    """The layer's output for the explorer's occluded input, on the model as it is now."""
    with cnnwidgets.Probe(model, device="cpu") as probe:
        prepared = explorer._images[explorer._image_id]
        x = prepared.occluded(explorer.box, explorer.fill)
        return probe.capture(x, [layer])[layer][0].numpy()


def run(shell, code: str) -> None:
    result = shell.run_cell(code)
    result.raise_error()


def test_a_training_cell_updates_the_open_explorer_when_it_ends(shell):
    shell.user_ns.update(model=small_cnn(), img=image(), cnnwidgets=cnnwidgets, torch=torch)
    run(shell, "ex = cnnwidgets.explore(model, img, background=False, show_scores=True, device='cpu', layer='3')")
    ex, model = shell.user_ns["ex"], shell.user_ns["model"]
    ex.method = "grad-cam"
    ex.wait_idle()
    heat_before = ex.method_result.heat.copy()
    before = ex.activations.copy()
    forwards = ex.stats["forwards"]
    # the next cell: a few optimizer steps on the user's model
    run(shell, "opt = torch.optim.SGD(model.parameters(), lr=0.5)\n"
               "for _ in range(3):\n"
               "    opt.zero_grad(); model(torch.rand(4, 3, 32, 32)).sum().backward(); opt.step()")
    ex.wait_idle()
    assert ex.stats["forwards"] > forwards, "the explorer did not compute again after the training cell"
    after = ex.activations
    assert not np.allclose(after, before), "the frame still shows the old weights"
    np.testing.assert_allclose(after, direct_activation(model, ex, "3"), rtol=1e-5, atol=1e-5)
    x = ex._images[ex._image_id].occluded(ex.box, ex.fill)
    with torch.no_grad():  # the class scores too
        probs = torch.softmax(model(x), 1)[0].numpy()
    np.testing.assert_allclose(ex.scores["probs"], probs, rtol=1e-4, atol=1e-6)
    # and the method map: as a new explorer on the trained model draws it
    assert not np.allclose(ex.method_result.heat, heat_before)
    fresh = cnnwidgets.explore(model, shell.user_ns["img"], background=False, show_scores=True, device="cpu",
                               layer="3", box=ex.box)
    try:
        fresh.method = "grad-cam"
        fresh.wait_idle()
        np.testing.assert_allclose(ex.method_result.heat, fresh.method_result.heat, rtol=1e-4, atol=1e-6)
    finally:
        fresh.close()


def test_a_cell_that_changes_nothing_computes_nothing(shell):
    shell.user_ns.update(model=small_cnn(), img=image(), cnnwidgets=cnnwidgets)
    run(shell, "ex = cnnwidgets.explore(model, img, background=False, device='cpu', layer='0')")
    ex = shell.user_ns["ex"]
    ex.wait_idle()
    forwards, shown = ex.stats["forwards"], ex.grid_image.copy()
    run(shell, "y = 1 + 1")
    ex.wait_idle()
    assert ex.stats["forwards"] == forwards
    np.testing.assert_array_equal(ex.grid_image, shown)


def test_switched_off_the_explorer_waits_for_the_next_move(shell, monkeypatch):
    monkeypatch.setattr(cells, "FOLLOW_AFTER_CELL", False)
    shell.user_ns.update(model=small_cnn(), img=image(), cnnwidgets=cnnwidgets, torch=torch)
    run(shell, "ex = cnnwidgets.explore(model, img, background=False, device='cpu', layer='0')")
    ex = shell.user_ns["ex"]
    before = ex.activations.copy()
    run(shell, "with torch.no_grad():\n    model[0].weight.mul_(2)")
    ex.wait_idle()
    np.testing.assert_array_equal(ex.activations, before)
    # the next move shows the new weights, as before
    x, y, w, h = ex.box
    ex.box = (x + 1, y, w, h)
    ex.wait_idle()
    np.testing.assert_allclose(ex.activations, direct_activation(shell.user_ns["model"], ex, "0"), rtol=1e-5, atol=1e-5)


def test_after_cell_skips_closed_explorers_and_counts_those_it_updated():
    model = small_cnn()
    a = cnnwidgets.explore(model, image(), background=False, device="cpu", layer="0")
    b = cnnwidgets.explore(small_cnn(), image(), background=False, device="cpu", layer="0")
    try:
        assert cells.after_cell() == 0  # nothing changed
        with torch.no_grad():
            model[0].bias.add_(1.0)
        b.close()
        assert cells.after_cell() == 1  # a: its model changed; b: closed
        a.wait_idle()
        np.testing.assert_allclose(a.activations, direct_activation(model, a, "0"), rtol=1e-5, atol=1e-5)
        assert b.catch_up() is False
    finally:
        a.close()
        b.close()


def test_one_registration_per_shell(shell):
    shell.user_ns.update(model=small_cnn(), img=image(), cnnwidgets=cnnwidgets)
    run(shell, "a = cnnwidgets.explore(model, img, background=False, device='cpu')\n"
               "b = cnnwidgets.explore(model, img, background=False, device='cpu')")
    registered = [f for f in shell.events.callbacks["post_run_cell"] if f is cells.after_cell]
    assert len(registered) == 1
