"""A seeded fuzz test of what the browser sends to the controls of the filter and experiment views.

Each control of these views (a menu, toggle buttons, a slider, an int box, a checkbox) is synced
with its front end through ``set_state``, and a stale page, a user's own JavaScript or JSON's number
model (``3.0`` for 3, NaN as null) can send any JSON value. The fuzz drives every such control of
a kernel view, an activation-maximisation view (no run: its controls only) and the top-k,
evolution, invariance and correspondence views, made on the small results the API fuzz tests of
those views build, with:

* valid values in JSON's spelling (an int or the float it equals, ``-0.0`` for 0), picked inside
  the control's range or options;
* invalid ones drawn from pools: null, bools, fractions, strings, lists, dicts, huge numbers,
  values outside a slider's or a box's range, indices outside a menu, numbers for a checkbox,
  values for the traits the kernel owns (a slider's bounds, a menu's labels, a caption), and
  several keys at once where one is refused.

The oracle: nothing is raised out of ``set_state``; a refused value leaves the view's settings,
its picture (and what goes with it: a caption, a readout, the transformed images) and the synced
values of every control as they were, and is said in the view's status line as an error naming
the control, with no traceback; a valid value is taken as the int (or bool) it means and the
view's setting agrees with the control.

The small tests after the fuzz pin down what it found.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from cnnwidgets.app.filters import actmax_view, kernel_view
from tests.test_browser_state_fuzz import JUNK, json_int, synced
from tests.test_experiments_api_fuzz import SUBJECTS, shift
from tests.test_experiments_api_fuzz import material as experiments_material  # noqa: F401 (a fixture)
from tests.test_filters_api_fuzz import CLASSES
from tests.test_filters_api_fuzz import material as filters_material  # noqa: F401 (a fixture)
from tests.test_filters_api_fuzz import one_thread  # noqa: F401 (a fixture, autouse)

# the random nets have channels that are not active on the few images: not the point here
pytestmark = pytest.mark.filterwarnings("ignore::cnnwidgets.methods.gradients.InactiveChannelWarning")


# ---------------------------------------------------------------- the views and their controls
@dataclass
class Control:
    """A control of a view the browser sets: the widget, the trait its front end sends (``index``
    or ``value``), the name the status line gives it, and whether the view's setting agrees with
    what the control shows."""

    widget: Any
    sends: str
    what: str
    agrees: Callable[[], bool]


@dataclass
class Subject:
    """A view under the fuzz: its settings (trait names), what it shows, and its controls by name."""

    view: Any
    settings: tuple[str, ...]
    shown: Callable[[], tuple]
    controls: dict[str, Control]


def picture(view) -> tuple:
    return (view.png, view.image_shape)


def direct(view, widget, trait: str) -> Callable[[], bool]:
    """The view's ``trait`` is the widget's value."""
    return lambda: getattr(view, trait) == widget.value


def kernel_subject(m) -> Subject:
    view = kernel_view(m.model, tile=16, width=240, height=480, max_tiles=64)
    return Subject(view, ("layers", "layer", "normalize", "out_channel", "out_channels", "colormaps", "colormap"),
                   lambda: picture(view), {
                       "layer": Control(view._layer_menu, "index", "layer", direct(view, view._layer_menu, "layer")),
                       "scale": Control(view._normalize_menu, "index", "scale",
                                        direct(view, view._normalize_menu, "normalize")),
                       "out ch.": Control(view._channel_box, "value", "out ch.",
                                          direct(view, view._channel_box, "out_channel")),
                       "colours": Control(view._colormap_menu, "index", "colours",
                                          direct(view, view._colormap_menu, "colormap")),
                   })


def actmax_subject(m) -> Subject:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        view = actmax_view(m.model, size=16, steps=2, background=False, update_every=1, classes=CLASSES)
    return Subject(view, ("layers", "layer", "channel", "channels", "channel_names", "steps", "running", "progress"),
                   lambda: picture(view), {
                       "target": Control(view._layer_menu, "index", "target", direct(view, view._layer_menu, "layer")),
                       "channel": Control(view._channel_box, "value", "channel",
                                          direct(view, view._channel_box, "channel")),
                       "steps": Control(view._steps_box, "value", "steps", direct(view, view._steps_box, "steps")),
                   })


def topk_subject(m) -> Subject:
    view = SUBJECTS["topk"](m).make(shift)
    return Subject(view, ("layers", "layer", "num_channels", "channel"), lambda: (*picture(view), view.caption), {
        "layer": Control(view._layer_menu, "index", "layer", direct(view, view._layer_menu, "layer")),
        "channel": Control(view._channel_box, "value", "channel", direct(view, view._channel_box, "channel")),
    })


def evolution_subject(m) -> Subject:
    view = SUBJECTS["evolution"](m).make(shift)
    return Subject(view, ("epochs", "epoch", "follow", "show", "unit", "projections"), lambda: picture(view), {
        "epoch": Control(view._slider, "value", view.unit,
                         lambda: view.epoch is None or view.epochs[view._slider.value] == view.epoch),
        "follow": Control(view._follow_box, "value", "follow", direct(view, view._follow_box, "follow")),
        "show": Control(view._show_menu, "index", "show", direct(view, view._show_menu, "show")),
    })


def invariance_subject(m) -> Subject:
    view = SUBJECTS["invariance"](m).make(shift)
    return Subject(view, ("transforms", "transform", "num_steps", "step", "step_labels"),
                   lambda: (*picture(view), view.examples_png, view.readout), {
                       "transform": Control(view._menu, "index", "transform", direct(view, view._menu, "transform")),
                       "step": Control(view._slider, "value", "step", direct(view, view._slider, "step")),
                   })


def correspondence_subject(m) -> Subject:
    view = SUBJECTS["correspondence"](m).make(shift)
    return Subject(view, ("parts", "part", "occluded"), lambda: (*picture(view), view.table_html), {
        "part": Control(view._menu, "index", "part",
                        lambda: view.part == (None if view._menu.index == 0 else view.parts[view._menu.index - 1])),
        "occluded": Control(view._occluded_box, "value", "occluded",
                            direct(view, view._occluded_box, "occluded")),
    })


FILTER_VIEWS = {"kernel": kernel_subject, "actmax": actmax_subject}
EXPERIMENT_VIEWS = {"topk": topk_subject, "evolution": evolution_subject, "invariance": invariance_subject,
                    "correspondence": correspondence_subject}


@pytest.fixture
def subject(request, filters_material, experiments_material):  # noqa: F811 (the fixtures imported above)
    """The view named by the test's ``kind`` parameter, closed after the test."""
    kind = request.param
    if kind in FILTER_VIEWS:
        made = FILTER_VIEWS[kind](filters_material)
    else:
        made = EXPERIMENT_VIEWS[kind](experiments_material)
    yield made
    made.view.close()


# ---------------------------------------------------------------- what is sent, and what it must do
#: Synced traits the kernel owns, per kind of control, with a value the browser might send for each.
KERNEL_OWNED = {
    "index": [("_options_labels", ["a", "b", "c", "d", "e", "f", "g", "h"]), ("description", "x"),
              ("disabled", True)],
    "value": [("max", 10**6), ("min", -50), ("step", 3), ("description", "x"), ("disabled", True)],
}


def is_checkbox(control: Control) -> bool:
    return isinstance(control.widget.value, bool)


def valid_value(rng: random.Random, control: Control) -> tuple[Any, Any]:
    """A value the control takes, as sent and as held."""
    widget = control.widget
    if control.sends == "index":
        index = rng.randrange(len(widget.options))
        return json_int(rng, index), index
    if is_checkbox(control):
        flag = rng.random() < 0.5
        return flag, flag
    value = rng.randint(widget.min, min(widget.max, widget.min + 300))
    return json_int(rng, value), value


def invalid_value(rng: random.Random, control: Control) -> dict[str, Any]:
    """A browser state the control refuses."""
    widget = control.widget
    draw = rng.random()
    owned = [(name, value) for name, value in KERNEL_OWNED[control.sends] if name in widget.keys]
    if draw < 0.2:
        name, value = rng.choice(owned)
        return {name: value}
    if draw < 0.3:  # a valid value with one the kernel owns: refused as a whole
        name, value = rng.choice(owned)
        return {control.sends: valid_value(rng, control)[0], name: value}
    if control.sends == "index":
        pool = [len(widget.options), len(widget.options) + 7, -1, True, False, 0.5, 1.5]
        if widget.options:
            pool.append(None)
    elif is_checkbox(control):
        pool = [0, 1, 0.0, 1.0, -0.0, "true", "false", None]
    else:
        pool = [widget.max + 1, widget.max + 40, widget.min - 1, widget.min - 1000, float(widget.max + 1), True,
                False, "3", str(widget.min), widget.min + 0.5]
    value = rng.choice(pool + [v for v in JUNK if not (control.sends == "index" and v is None)])
    return {control.sends: value}


def state(subject: Subject) -> tuple:
    """The view's settings, what it shows, and the synced values of its controls."""
    view = subject.view
    return ({name: repr(getattr(view, name)) for name in subject.settings}, subject.shown(),
            {name: synced(control.widget) for name, control in subject.controls.items()})


def check_refused(subject: Subject, control: Control, sent: dict, note: str) -> None:
    """``sent`` raises nothing, changes nothing and is said in the status line as an error."""
    view = subject.view
    view.status, view.error = "", False  # a fresh status line: the message must be new
    before = state(subject)
    control.widget.set_state(sent)
    assert view.error and view.status.startswith(f"{control.what}: not changed ("), (view.status, note)
    assert "Traceback" not in view.status and 'File "' not in view.status, note
    assert state(subject) == before, f"a refused state changed the view: {note}"


def check_taken(subject: Subject, control: Control, sent: dict, held: Any, note: str) -> None:
    """``sent`` is taken as ``held`` (its type too), and the view's setting agrees with the control."""
    view = subject.view
    view.status, view.error = "", False
    control.widget.set_state(sent)
    assert not (view.error and "not changed" in view.status), (view.status, note)
    taken = getattr(control.widget, control.sends)
    assert taken == held and type(taken) is type(held), (taken, note)
    assert control.agrees(), f"the view does not show what the control shows: {note}"


# ---------------------------------------------------------------- the fuzz
@pytest.mark.parametrize("subject, seed, steps", [
    ("kernel", 11, 140), ("actmax", 12, 140), ("topk", 13, 140), ("evolution", 14, 140), ("invariance", 15, 50),
    ("correspondence", 16, 140),
], indirect=["subject"])
def test_random_browser_states_are_taken_as_meant_or_refused_in_the_status_line(subject, seed, steps):
    rng = random.Random(seed)
    names = sorted(subject.controls)
    counts = {"valid": 0, "refused": 0}
    for step in range(steps):
        control = subject.controls[rng.choice(names)]
        if rng.random() < 0.4:
            sent, held = valid_value(rng, control)
            sent = {control.sends: sent}
            if getattr(control.widget, "disabled", False):  # a disabled control refuses even a valid value
                check_refused(subject, control, sent, f"step {step}: {control.what} (disabled) <- {sent!r}")
                counts["refused"] += 1
                continue
            check_taken(subject, control, sent, held, f"step {step}: {control.what} <- {sent!r}")
            counts["valid"] += 1
        else:
            sent = invalid_value(rng, control)
            check_refused(subject, control, sent, f"step {step}: {control.what} <- {sent!r:.120}")
            counts["refused"] += 1
    assert min(counts.values()) >= steps // 5, counts


# ---------------------------------------------------------------- what the fuzz found
def refused(subject: Subject, name: str, sent: dict) -> None:
    check_refused(subject, subject.controls[name], sent, f"{name} <- {sent!r}")


@pytest.mark.parametrize("subject, control", [
    ("topk", "channel"), ("evolution", "epoch"), ("evolution", "follow"), ("invariance", "step"),
    ("correspondence", "occluded"),
], indirect=["subject"])
def test_null_for_a_slider_box_or_checkbox_is_refused_not_raised(subject, control):
    """A plain slider, int box or checkbox raised the TraitError of null out of ``set_state``: the
    user saw nothing, and the kernel's log had the error."""
    refused(subject, control, {"value": None})


@pytest.mark.parametrize("subject, control, sent", [
    ("invariance", "step", {"value": 99}), ("evolution", "epoch", {"value": 7}), ("topk", "channel", {"value": 10**4}),
    ("kernel", "out ch.", {"value": 99}), ("actmax", "steps", {"value": 10**6}), ("actmax", "steps", {"value": 0}),
], indirect=["subject"])
def test_a_value_outside_the_range_is_refused_not_moved_to_the_end(subject, control, sent):
    """A slider or a bounded box moved a value outside its range to its end (the last step, the last
    epoch, the last channel): a choice nobody made, drawn as if it were."""
    refused(subject, control, sent)


@pytest.mark.parametrize("sent", [{"value": 1.5}, {"value": "1"}, {"value": True}])
@pytest.mark.parametrize("subject, control", [
    ("invariance", "step"), ("topk", "channel"), ("kernel", "out ch."), ("actmax", "channel"),
], indirect=["subject"])
def test_a_fraction_a_string_or_a_bool_is_no_number(subject, control, sent):
    """``1.5`` was cut to 1, ``"1"`` and ``true`` were taken as 1."""
    refused(subject, control, sent)


@pytest.mark.parametrize("sent", [{"value": 0}, {"value": 1}])
@pytest.mark.parametrize("subject, control", [("evolution", "follow"), ("correspondence", "occluded")],
                         indirect=["subject"])
def test_a_checkbox_takes_true_or_false_only(subject, control, sent):
    """A checkbox took 0 and 1 as false and true."""
    refused(subject, control, sent)


@pytest.mark.parametrize("subject, control", [
    ("kernel", "scale"), ("kernel", "colours"), ("evolution", "show"), ("invariance", "transform"),
    ("correspondence", "part"),
], indirect=["subject"])
def test_a_bool_is_not_taken_as_a_menu_index(subject, control):
    """A menu or toggle buttons took ``true`` as the index 1."""
    refused(subject, control, {"index": True})


@pytest.mark.parametrize("subject, control, sent", [
    ("invariance", "step", {"max": 50}), ("evolution", "epoch", {"max": 50}), ("topk", "channel", {"max": 10**4}),
    ("kernel", "out ch.", {"min": -9}), ("actmax", "steps", {"max": 7}), ("kernel", "layer", {"description": "x"}),
    ("kernel", "scale", {"_options_labels": ["a", "b"]}), ("correspondence", "part", {"_options_labels": ["a"]}),
    ("evolution", "follow", {"description": "x"}),
], indirect=["subject"])
def test_a_trait_the_kernel_owns_is_not_taken_from_the_browser(subject, control, sent):
    """A slider's bounds, a box's bounds, a menu's labels and a caption were taken from the browser."""
    refused(subject, control, sent)


@pytest.mark.parametrize("subject, control, sent, held", [
    ("invariance", "step", {"value": 1.0}, 1), ("topk", "channel", {"value": 2.0}, 2),
    ("kernel", "out ch.", {"value": -0.0}, 0), ("actmax", "steps", {"value": 3.0}, 3),
    ("evolution", "epoch", {"value": 1.0}, 1), ("kernel", "scale", {"index": 2.0}, 2),
    ("correspondence", "part", {"index": 1.0}, 1),
], indirect=["subject"])
def test_a_whole_number_in_json_spelling_is_taken_as_the_int_it_means(subject, control, sent, held):
    check_taken(subject, subject.controls[control], sent, held, f"{control} <- {sent!r}")


def test_a_refused_epoch_position_picks_nothing(experiments_material):  # noqa: F811 (the fixture imported above)
    """The evolution slider hands a position the browser sends again to the view (picking the epoch
    the knob sits on); a position it refuses must pick nothing."""
    subject = evolution_subject(experiments_material)
    view = subject.view
    try:
        view.follow = False
        view.epoch = view.epochs[0]
        view._slider.set_state({"value": 0.5})
        assert view.epoch == view.epochs[0] and view._slider.value == 0 and view.error
        assert "position" in view.status, view.status
    finally:
        view.close()
