"""Small UI gaps, each pinned by a test that sends what a browser sends (a comm ``update`` or
``custom`` message, or ``set_state``) and checks what the kernel keeps and what the status line says:

* buttons and progress bars take nothing from the browser, and a disabled button's click does nothing;
* a disabled control refuses a value from the browser (the page sent it before it saw ``disabled``);
* the occluder canvas refuses a box from the browser with no pixel on the image, as ``explorer.box`` does;
* the evolution slider shows "no epoch chosen" on a position of its own, so a press on any epoch picks it;
* the activation-maximisation view says an assumed image size while a run goes, not only after it.
"""

from __future__ import annotations

import pytest
import torch
import traitlets
from torch import nn

from cnnwidgets.app import Explorer
from cnnwidgets.app.filters import actmax_view
from cnnwidgets.widgets._base import (
    CheckedButton,
    CheckedCheckbox,
    CheckedDropdown,
    CheckedFloatProgress,
    CheckedIntProgress,
    CheckedIntSlider,
)
from cnnwidgets.widgets.experiments import CorrespondenceView, EvolutionView, TopKView
from cnnwidgets.widgets.filters import ActMaxView
from cnnwidgets.widgets.occluder import OccluderCanvas
from tests.helpers import small_classifier


def browser(widget, **state) -> None:
    """A comm ``update`` message from the front end, handled as the kernel handles it."""
    widget._handle_msg({"content": {"data": {"method": "update", "state": state, "buffer_paths": []}},
                        "buffers": []})


def click(button) -> None:
    """A click in the front end (a comm ``custom`` message)."""
    button._handle_msg({"content": {"data": {"method": "custom", "content": {"event": "click"}}}, "buffers": []})


# ---------------------------------------------------------------- 1. buttons and progress bars
def test_actmax_progress_bar_takes_no_value_from_the_browser():
    # was: the bar was an ipywidgets IntProgress linked both ways to ``progress``: a value sent
    # from the browser set the view's progress (and a max sent set the steps)
    view = ActMaxView(layers=["a"])
    assert isinstance(view._bar, CheckedIntProgress)
    view.progress = 3
    browser(view._bar, value=50)
    browser(view._bar, max=7)
    assert view.progress == 3 and view._bar.value == 3 and view.steps == 128 and view._bar.max == 128
    assert view.error and "progress: not changed" in view.status and "cannot be set from the browser" in view.status
    view.steps = 20  # the kernel still drives the bar
    view.progress = 5
    assert view._bar.max == 20 and view._bar.value == 5
    view.close()


def test_method_view_progress_bar_takes_no_value_from_the_browser():
    # was: a FloatProgress that took any value (a bool, a number past its max) sent from the browser
    from cnnwidgets.widgets.methodview import MethodView
    view = MethodView(["none", "occlusion"])
    assert isinstance(view.bar, CheckedFloatProgress)
    view.progress_to(1, 4)
    refused = []
    view.bar.on_refused = lambda names, exc: refused.append((names, str(exc)))
    browser(view.bar, value=0.9)
    assert view.bar.value == 0.25 and refused and refused[0][0] == "value"
    view.close()


def test_explorer_method_bar_refusal_goes_to_the_status_line():
    # was: the method view's bar was no checked control: the explorer had no handler on it
    explorer = Explorer(small_classifier(), None, input_size=(3, 16, 16), background=False)
    try:
        assert explorer.wait_idle(30)
        explorer.method_view.bar.set_state({"value": 0.5})
        assert explorer.method_view.bar.value == 0.0
        assert explorer.status.is_error and "cannot be set from the browser" in explorer.status.message
    finally:
        explorer.close()


def test_buttons_take_no_state_from_the_browser():
    # was: ipywidgets Buttons: the browser could rename, restyle or enable them
    view = ActMaxView(layers=["a"])
    for button in (view._run_button, view._stop_button):
        assert isinstance(button, CheckedButton)
    browser(view._stop_button, disabled=False)
    browser(view._run_button, description="Go")
    assert view._stop_button.disabled and view._run_button.description == "Run"
    assert view.error and "Run: not changed" in view.status
    topk = TopKView(layers=["a"])
    assert isinstance(topk._prev, CheckedButton) and isinstance(topk._next, CheckedButton)
    browser(topk._next, icon="bomb")
    assert topk._next.icon == "chevron-right" and topk.error and "next channel: not changed" in topk.status
    view.close()
    topk.close()


def test_a_click_on_a_disabled_button_does_nothing_and_is_said():
    # was: a click the page sent before it saw ``disabled`` ran the button's handlers (Stop with no
    # run going set running False; Run while running re-set it)
    view = ActMaxView(layers=["a"])
    pressed = []
    view._stop_button.on_click(lambda _: pressed.append("stop"))
    click(view._stop_button)  # disabled: no run is going
    assert pressed == [] and view.error and "'Stop' is disabled" in view.status
    view.running = True  # Run disabled, Stop enabled
    view._run_button.on_click(lambda _: pressed.append("run"))
    click(view._run_button)
    assert pressed == [] and "'Run' is disabled" in view.status
    click(view._stop_button)
    assert pressed == ["stop"] and not view.running
    view.close()


def test_a_disabled_button_with_no_handler_raises_instead_of_acting():
    # was: the click's handlers ran, whatever ``disabled`` said
    button = CheckedButton(description="Go", disabled=True)
    pressed = []
    button.on_click(lambda _: pressed.append(1))
    with pytest.raises(traitlets.TraitError, match="'Go' is disabled"):
        button._handle_button_msg(None, {"event": "click"}, [])
    assert pressed == []
    button.disabled = False
    click(button)
    assert pressed == [1]
    button.close()


# ---------------------------------------------------------------- 2. disabled controls
@pytest.mark.parametrize("make, state, unchanged", [
    (lambda: CheckedDropdown(options=["a", "b"], value="a", description="menu"), {"index": 1}, ("value", "a")),
    (lambda: CheckedIntSlider(min=0, max=5, value=1, description="n"), {"value": 3}, ("value", 1)),
    (lambda: CheckedCheckbox(value=False, description="on"), {"value": True}, ("value", False)),
])
def test_a_disabled_control_refuses_a_browser_value(make, state, unchanged):
    # was: a disabled control took the value and its observers acted on it
    control = make()
    seen, refused = [], []
    control.observe(lambda change: seen.append(change["new"]), names="value")
    control.on_refused = lambda names, exc: refused.append(str(exc))
    control.disabled = True
    assert control.set_state(state) is False
    assert getattr(control, unchanged[0]) == unchanged[1] and seen == []
    assert refused and "is disabled" in refused[0]
    control.disabled = False
    assert control.set_state(state) is True and seen  # enabled again: taken
    control.close()


def test_correspondence_occluded_box_disabled_for_all_parts_refuses_the_browser():
    # was: the disabled checkbox's value from the page was taken: ``occluded`` turned on with all
    # parts shown, where it does nothing
    view = CorrespondenceView()
    view.parts = ["eye", "nose"]
    assert view.part is None and view._occluded_box.disabled
    browser(view._occluded_box, value=True)
    assert view.occluded is False and view._occluded_box.value is False
    assert view.error and "occluded cannot be set: " in view.status
    view.part = "eye"  # one part: the box is enabled and takes the page's value
    browser(view._occluded_box, value=True)
    assert view.occluded is True
    view.close()


def test_actmax_controls_disabled_during_a_run_say_so():
    # a value the page sent during a run is refused by the disabled box itself, with the view's
    # reason (the run keeps its target), and taken again once the run is over
    view = ActMaxView(layers=["a", "b"])
    view.layer = "a"
    view.running = True
    browser(view._layer_menu, index=1)
    assert view.layer == "a" and view._layer_menu.value == "a"
    assert "target: not changed (cannot change layer while a run is going" in view.status
    browser(view._steps_box, value=20)
    assert view.steps == 128 and view._steps_box.value == 128
    assert "steps: not changed (cannot change steps while a run is going" in view.status
    view.running = False
    browser(view._steps_box, value=20)
    assert view.steps == 20
    view.close()


def test_evolution_show_menu_disabled_without_projections_refuses_the_browser():
    # was: the disabled menu's index was taken and refused by the view's trait only afterwards
    view = EvolutionView()
    view.projections = False
    browser(view._show_menu, index=0)
    assert view.show == "patch" and view._show_menu.value == "patch"
    assert view.error and "recorded no projections" in view.status
    view.close()


# ---------------------------------------------------------------- 3. the occluder's box
def test_occluder_refuses_a_browser_box_with_no_pixel_on_the_image():
    # was: a box wholly outside the image was moved in to its edge: (40, 0, 4, 4) became (28, 0, 4, 4)
    canvas = OccluderCanvas(image_width=32, image_height=32, box=(1, 1, 4, 4))
    refused = []
    canvas.on_refused = lambda names, exc: refused.append(str(exc))
    for box in ([40, 0, 4, 4], [-8, 0, 8, 8], [0, 32, 4, 4], [-7.6, 0, 8, 8]):
        assert canvas.set_state({"box": box, "dragging": False}) is False
        assert tuple(canvas.box) == (1, 1, 4, 4) and not canvas.dragging
    assert len(refused) == 4 and "lies entirely outside the 32x32 image" in refused[0]
    # one partly on the image is clamped, as the page keeps it
    assert canvas.set_state({"box": [30, 30, 8, 8]}) is True and tuple(canvas.box) == (24, 24, 8, 8)
    assert canvas.set_state({"box": [10 ** 400, 0, 4, 4]}) is False  # no float holds it: refused, not raised
    canvas.close()


def test_explorer_refuses_a_browser_box_off_the_image_as_it_refuses_one_from_python():
    # was: explorer.box = (40, 0, 4, 4) raised, the same box from the page became (12, 0, 4, 4)
    explorer = Explorer(small_classifier(), None, input_size=(3, 16, 16), background=False, box=(2, 2, 4, 4))
    try:
        assert explorer.wait_idle(30)
        with pytest.raises(traitlets.TraitError, match="entirely outside"):
            explorer.box = (40, 0, 4, 4)
        browser(explorer.canvas, box=[40, 0, 4, 4], dragging=False)
        assert explorer.box == (2, 2, 4, 4) and tuple(explorer.canvas.box) == (2, 2, 4, 4)
        assert explorer.status.is_error and "entirely outside" in explorer.status.message
    finally:
        explorer.close()


# ---------------------------------------------------------------- 4. the evolution slider
def test_evolution_slider_has_a_position_for_no_epoch_so_a_press_on_the_old_one_is_sent():
    # was: with no epoch chosen the knob stayed on the last epoch's position; a press there sent
    # nothing from the page (the value did not change), so the user had to move away and back
    view = EvolutionView()
    view.epochs = [1, 2, 5]
    assert view.epoch == 5 and view._slider.value == 2 and view._slider.min == 0
    view.epoch = None
    assert view._slider.value == -1 and view._slider.min == -1 and view._label.value == "-"
    # what the page sends for a press on the knob's old position is now a change of value
    browser(view._slider, value=2)
    assert view.epoch == 5 and view._slider.value == 2 and view._slider.min == 0 and view._label.value == "5"
    # with an epoch chosen there is no "none" position to go back to
    browser(view._slider, value=-1)
    assert view.epoch == 5 and view.error and "must lie in 0..2" in view.status
    view.epoch = None
    browser(view._slider, value=0)
    assert view.epoch == 1 and view._slider.min == 0
    view.epochs = []  # nothing recorded: one position, nothing chosen
    assert view.epoch is None and view._slider.min == 0 and view._slider.max == 0
    view.close()


# ---------------------------------------------------------------- 5. actmax: an assumed size
def _bare_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)).eval()


def test_actmax_status_says_the_assumed_size_while_a_run_goes():
    # was: "running ..." and "...: step 1 of 2, objective ..." said nothing of the size, which only
    # the prompt and the final status called assumed
    view = actmax_view(_bare_net(), background=False, steps=2, update_every=1, size=None)
    seen = []
    view.observe(lambda change: seen.append(change["new"]), names="status")
    view.running = True
    running = [s for s in seen if s.startswith("running")]
    steps = [s for s in seen if ": step " in s]
    assert running and steps
    assert all("images 3x224x224, a size assumed" in s for s in running + steps)
    assert "a size assumed" in view.status and not view.error
    view.close()


def test_actmax_status_says_nothing_assumed_for_a_given_size():
    # a guard, not a pinned gap: a given size is not called assumed, while running either
    view = actmax_view(_bare_net(), background=False, steps=2, update_every=1, size=12)
    seen = []
    view.observe(lambda change: seen.append(change["new"]), names="status")
    view.running = True
    assert seen and not any("assumed" in s for s in seen)
    assert "images 3x12x12" in view.status
    view.close()
