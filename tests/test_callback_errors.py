"""UI callbacks: an error in a callback reaches the widget's status line, never only the kernel's
log, and leaves no busy mark, stale picture or stuck control behind.

Each test drives a widget the way the front end does (``set_state`` as the comm delivers it, a
button's ``click()``, a recorder's callback), injects a failure where needed, and asserts what
the user then sees.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnwidgets.app import filters
from cnnwidgets.app.experiments import EvolutionController, topk_view
from cnnwidgets.app.filters import actmax_view
from cnnwidgets.methods.evolution import FeatureEvolutionRecorder
from cnnwidgets.methods.topk import scan_topk
from tests.test_evolution import Net
from tests.test_experiment_views import _results
from tests.test_explorer import Tiny, make
from tests.test_kernel_actmax_views import small_net


# ---------------------------------------------------------------------------- explorer
def test_method_map_is_not_left_faded_when_a_resize_ends_at_the_size_it_started_from():
    """The 'computed when the occluder is released' caption and the faded map set during a drag
    are taken back when the released box asks for the map already on screen."""
    ex = make(box=(4, 4, 8, 8), method="occlusion")
    try:
        assert ex.wait_idle(60)
        shown = ex.method_view.caption.value
        assert shown.startswith("<b>occlusion</b>") and not ex.method_view.stale
        # what occluder.js sends: startDrag (box as it is + dragging), moves, endDrag (box + release)
        ex.canvas.set_state({"box": (4, 4, 8, 8), "dragging": True})
        ex.canvas.set_state({"box": (4, 4, 11, 11)})  # the corner handle pulled out ...
        ex.canvas.set_state({"box": (4, 4, 8, 8)})  # ... and back
        ex.canvas.set_state({"box": (4, 4, 8, 8), "dragging": False})
        assert ex.wait_idle(60)
        assert not ex.method_view.stale, "the map on screen is the one asked for, yet it stays faded"
        assert "released" not in ex.method_view.caption.value, ex.method_view.caption.value
        assert ex.method_view.caption.value == shown
    finally:
        ex.close()


def test_grid_does_not_stay_faded_after_a_change_that_repeats_a_failed_computation():
    """A change that repeats a computation that failed already computes nothing: the controller says
    so again, and the grid the explorer faded for a coming frame is shown plainly."""
    model = Tiny().eval()
    model.fail_on_black_corner = True
    ex = make(model, box=(0, 0, 8, 8), fill="gray")
    try:
        assert ex.wait_idle(60) and not ex.status.is_error
        ex.fill = "black"  # the model fails on this occluded input ...
        ex.layer = "features.0"  # ... at the new layer too: the error is shown, the old grid stays
        assert ex.wait_idle(60) and ex.status.is_error and not ex.grid_busy
        ex.channel = 2  # render-only change: the same failed computation, no new forward coming
        assert ex.wait_idle(60) and ex.status.is_error
        assert not ex.grid_busy, "the grid is faded as if a new frame were on its way, but none is"
    finally:
        ex.close()


_MENUS = {
    "picker": (lambda ex: ex.picker.dropdown, "image"),
    "norm": (lambda ex: ex.display_controls.norm_buttons, "norm"),
    "colours": (lambda ex: ex.display_controls.cmap_dropdown, "cmap"),
    "fill": (lambda ex: ex.occluder_controls.fill_dropdown, "fill"),
    "method": (lambda ex: ex.method_view.menu, "method"),
    "stride": (lambda ex: ex.method_view.stride_menu, "method_stride"),
    "device": (lambda ex: ex.device_select, "device"),
}


@pytest.mark.parametrize("menu", list(_MENUS))
def test_explorer_menus_report_browser_values_they_refuse_in_the_status_line(menu):
    """Like the layer menu, canvas, grid and score bars, every menu reports a browser value it
    refuses (an index outside its options, no index) in the status line and shows the explorer's
    value again, instead of raising out of the comm handler (the kernel's log only) or going blank."""
    ex = make(box=(4, 4, 8, 8))
    try:
        assert ex.wait_idle(60)
        get, trait = _MENUS[menu]
        control = get(ex)
        kept = getattr(ex, trait)
        for sent in ({"index": 99}, {"index": None}):
            ex.status.info("")
            control.set_state(sent)  # as the comm delivers it: nothing may be raised
            assert ex.status.is_error, f"{sent}: nothing said in the status line"
            assert getattr(ex, trait) == kept
            shown = control.value
            assert shown == kept, f"{sent}: the control shows {shown!r}, the explorer has {kept!r}"
    finally:
        ex.close()


# ---------------------------------------------------------------------------- activation maximisation
def test_actmax_run_pressed_after_the_model_changed_shows_why_and_frees_the_run_button():
    """Run reads the target's calls from the probe, which re-describes a changed model: its error
    is shown in the view, and the view does not stay 'running' (Run disabled, Stop enabled)."""
    model = small_net()
    view = actmax_view(model, size=16, steps=2, background=False)
    try:
        model[3] = nn.Conv2d(4, 8, 3, padding=1)  # the user edits the model: it no longer runs
        view._run_button.click()  # as the browser's click arrives
        assert not view.running, "the view is stuck running: Run disabled, Stop enabled"
        assert not view._run_button.disabled
        assert view.error and "failed" in view.status, view.status
    finally:
        view.close()


def test_actmax_failure_after_the_last_step_shows_why_and_frees_the_run_button(monkeypatch):
    """An error while the final image is shown (after the last step) reaches the view, not only the
    thread's excepthook, and the view does not stay 'running ...'."""
    view = actmax_view(small_net(), size=16, steps=3, update_every=100)

    def failing(*args, **kwargs):
        raise ValueError("the picture could not be made")

    monkeypatch.setattr(filters, "_to_uint8", failing)
    try:
        view._run_button.click()
        view.controller.wait(30)
        assert not view.running, "the view is stuck running: Run disabled, Stop enabled"
        assert not view._run_button.disabled
        assert view.error and "the picture could not be made" in view.status, view.status
    finally:
        view.close()


# ---------------------------------------------------------------------------- top-k
def test_topk_channel_that_fails_takes_away_the_previous_channels_entries():
    """A failed update takes away the picture and the entries table of the channel shown before,
    which would otherwise stand under the new channel's error."""
    model, x, _ = _results()
    fail = {"now": False}

    def denormalize(t):
        if fail["now"]:
            raise RuntimeError("cannot show these patches")
        return t.clamp(0, 1)

    view = topk_view(scan_topk(model, x, ["1"], k=2, progress=False), model, denormalize=denormalize)
    try:
        assert view.channel == 0 and view.caption and not view.error
        fail["now"] = True
        view._next.click()  # channel 1, as the browser's click arrives
        assert view.channel == 1 and view.error and view.image_shape == ()
        # the user's function is named as the cause
        assert "denormalize failed on an image of shape (3, " in view.status
        assert "RuntimeError: cannot show these patches" in view.status
        assert view.caption == "" and view._caption.value == "", "channel 0's entries shown for channel 1"
    finally:
        view.close()


# ---------------------------------------------------------------------------- evolution
def test_closing_the_view_of_an_evolution_controller_does_not_break_training():
    """The recorder's callback would set the closed view's epoch: the TraitError would land in the
    user's training loop. The controller leaves the recorder instead."""
    model = Net().train()
    recorder = FeatureEvolutionRecorder(model, torch.randn(4, 3, 16, 16), "relu2", epochs=None)
    try:
        controller = EvolutionController(recorder, labelled=False)  # the controller makes its view
        recorder.record(1)
        controller.view.close()  # the user closes the widget; training goes on
        assert recorder.record(2)  # must not raise into the training loop
    finally:
        recorder.close()


def test_actmax_target_picked_after_the_model_changed_shows_why_and_keeps_the_image():
    model = small_net()
    view = actmax_view(model, size=16, steps=2, background=False)
    try:
        view._run_button.click()
        assert not view.running and not view.error and view.image_shape != ()
        shape = view.image_shape
        model[3] = nn.Conv2d(4, 8, 3, padding=1)  # the model no longer runs
        view.channel = 1  # a new target, as the channel box sends it
        assert view.error and "failed" in view.status, view.status
        assert view.image_shape == shape  # the last run's picture stays: it is still that run's
    finally:
        view.close()


def test_closing_a_top_k_view_closes_a_controller_made_on_it_and_its_probe():
    from cnnwidgets.app.experiments import TopKController
    from cnnwidgets.widgets.experiments import TopKView

    model, x, _ = _results()
    view = TopKView()
    controller = TopKController(scan_topk(model, x, ["1"], k=2, progress=False), model, view)
    assert view.controller is controller
    view.close()
    assert controller.probe.closed


def test_a_denormalize_that_returns_the_wrong_shape_is_named_in_the_status_line():
    model, x, _ = _results()
    view = topk_view(scan_topk(model, x, ["1"], k=2, progress=False), model, denormalize=lambda t: t.flatten())
    try:
        assert view.error and view.image_shape == ()
        assert "denormalize must return the image as (C, H, W) or (H, W, C)" in view.status
    finally:
        view.close()
