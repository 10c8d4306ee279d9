"""A seeded randomized stress test of the experiment and filter views: random user actions, then
what the user relies on.

Each run builds a view on small real results (the embedded ShapesNet, a few generated shape images)
and applies 100-200 random actions the way the browser delivers them (comm ``update`` messages to the
menus, boxes, sliders and check boxes, ``click`` messages to the buttons) or the way Python sets the
traits: every control the view has, values at the edges, bursts of changes, and values the browser
could send that are no longer valid (a menu index outside the menu, no choice, a channel of a layer
with more channels). After every action:

* nothing reached ``threading.excepthook``, ``sys.excepthook`` or the widgets' log (where ipywidgets
  puts an exception raised in a comm handler or a callback), and the status line shows no traceback;
* the traits hold what the action documents (a refused browser value: unchanged, said in the status
  line; a value outside a box's bounds: the bound) and every control shows its trait's value;
* a state shown before is shown again exactly as it was first drawn (the controllers' caches).

After the sequence the picture, text and status on screen equal those of a fresh view set to the same
control values, the user's model is unchanged (parameters, buffers, training flags, hooks), and
``close()`` leaves no hook and no thread behind.

The small deterministic tests at the end pin down what the stress test found.
"""

from __future__ import annotations

import logging
import random
import re
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
import traitlets
from torch import nn

from cnnwidgets import zoo
from cnnwidgets.app.experiments import (
    correspondence_view,
    evolution_view,
    invariance_view,
    topk_view,
)
from cnnwidgets.app.filters import CLASS_TARGET, actmax_view, kernel_view, summary_view
from cnnwidgets.methods.correspondence import correspondence
from cnnwidgets.methods.evolution import FeatureEvolutionRecorder
from cnnwidgets.methods.invariance import invariance_curves
from cnnwidgets.methods.topk import scan_topk
from tests.helpers import UserModelSnapshot as ModelSnapshot
from tests.helpers import hook_dicts as _hooks

ACTIONS = (100, 200)  # how many actions a run applies, drawn per run


# ---------------------------------------------------------------- the user's model before and after
@pytest.fixture
def escaped(monkeypatch, caplog):
    """Every exception that reached ``threading.excepthook``, ``sys.excepthook`` or a widget's log
    (ipywidgets logs, as a warning, what a comm handler or a button callback raised)."""
    seen: list[str] = []
    monkeypatch.setattr(threading, "excepthook",
                        lambda args: seen.append(f"thread: {args.exc_type.__name__}: {args.exc_value}"))
    monkeypatch.setattr(sys, "excepthook", lambda t, e, tb: seen.append(f"sys: {t.__name__}: {e}"))
    caplog.set_level(logging.WARNING)

    def all_seen() -> list[str]:
        return seen + [f"log: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.WARNING]

    return all_seen


# ---------------------------------------------------------------- what the browser sends
def browser(widget, **state) -> None:
    """A comm ``update`` message from the front end, handled as the kernel handles it."""
    widget._handle_msg({"content": {"data": {"method": "update", "state": state, "buffer_paths": []}},
                        "buffers": []})


def click(button) -> None:
    """A click in the front end (a comm ``custom`` message)."""
    button._handle_msg({"content": {"data": {"method": "custom", "content": {"event": "click"}}}, "buffers": []})


# ---------------------------------------------------------------- small real results, made once
@dataclass
class Material:
    bundle: Any
    model: nn.Module
    snapshot: ModelSnapshot
    x: torch.Tensor
    y: torch.Tensor
    topk: Any
    invariance: Any
    correspondence: Any
    parts: dict


@pytest.fixture(scope="module")
def material() -> Material:
    bundle = zoo.load_default()
    model = bundle.model
    snapshot = ModelSnapshot.take(model)
    x, y = zoo.make_batch(10, seed=5)
    topk = scan_topk(model, x, ["features.conv1", "features.relu3", "features.relu4"], k=4, progress=False)
    invariance = invariance_curves(model, x[:3], y[:3], ["features.relu2", "features.relu4"], progress=False,
                                   transforms={"translation": [-6, -3, 0, 3, 6], "rotation": [0, 45, 90],
                                               "scale": [0.8, 1.0, 1.25]})
    parts = {"left": [(0, 0, 24, 64)] * 3, "centre": [(20, 20, 44, 44)] * 3, "corner": [(48, 48, 64, 64)] * 3}
    corr = correspondence(model, x[:3], parts, ["features.relu2"], random_trials=2, progress=False)
    return Material(bundle, model, snapshot, x, y, topk, invariance, corr, parts)


# ---------------------------------------------------------------- the random user
@dataclass
class Run:
    """One stressed view: the random user's generator, what the view should hold, and what was drawn."""

    view: Any
    rng: random.Random
    expected: dict[str, Any]
    key: Callable[[Any], tuple]  # the state a picture belongs to
    shown: Callable[[Any], tuple]  # everything the view shows for it
    controls: Callable[[Any], dict[str, Any]]  # what each control shows, by the trait it sets
    first: dict[tuple, tuple] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)

    def expect_refused(self, what: str) -> None:
        """A browser value the view refused: said in the status line, nothing changed."""
        assert self.view.error, f"refused {what} not reported: {self.log[-3:]}"
        assert self.view.status.startswith(f"{what}: not changed ("), self.view.status

    def expect_out_of_range(self) -> None:
        """A browser value outside a control's range: refused and said in the status line (it was
        once moved to the end of the range, a choice nobody made), nothing changed."""
        assert self.view.error, f"out-of-range value not reported: {self.log[-3:]}"
        assert ": not changed (" in self.view.status and re.search(r"outside|must lie in", self.view.status), \
            self.view.status

    def python_refused(self, name: str, value: Any) -> None:
        """A value set from Python that the view refuses: a TraitError, the trait unchanged."""
        before = getattr(self.view, name)
        with pytest.raises(traitlets.TraitError):
            setattr(self.view, name, value)
        assert getattr(self.view, name) == before


def check(run: Run, escaped: Callable[[], list[str]]) -> None:
    """What holds after every action."""
    view = run.view
    assert escaped() == [], f"{escaped()} after {run.log[-5:]}"
    assert "Traceback" not in getattr(view, "status", ""), view.status  # (a summary has no status line)
    for name, value in run.expected.items():
        assert getattr(view, name) == value, f"{name}: {getattr(view, name)!r} != {value!r} after {run.log[-5:]}"
    for name, value in run.controls(view).items():
        assert value == getattr(view, name), f"the {name} control shows {value!r}, the view holds " \
                                             f"{getattr(view, name)!r} after {run.log[-5:]}"
    if getattr(view, "error", False):
        return
    key, now = run.key(view), run.shown(view)
    if key in run.first:
        assert now == run.first[key], f"state {key} is not drawn as it was first drawn; after {run.log[-6:]}"
    else:
        run.first[key] = now


def stress(run: Run, actions: list[tuple[float, Callable[[Run], None]]], escaped) -> None:
    weights = [w for w, _ in actions]
    count = run.rng.randint(*ACTIONS)
    check(run, escaped)
    done = 0
    while done < count:
        act = run.rng.choices([a for _, a in actions], weights)[0]
        for _ in range(min(run.rng.choice([1, 1, 1, 2, 5]), count - done)):  # now and then a burst of one kind
            act(run)
            check(run, escaped)
            done += 1


def picture(view) -> tuple:
    return (view.png, view.status, view.error)


def assert_drawn_as_fresh(run: Run, view, fresh, message: str) -> None:
    """The view shows what a fresh view in its state shows; when the last action was a browser value
    the view refused (said in its status line as "<control>: not changed (...)"), the status line
    keeps saying so, and everything else is compared."""
    mine, theirs = run.shown(view), run.shown(fresh)
    if getattr(view, "error", False) and ": not changed (" in getattr(view, "status", ""):
        mine = (mine[0], *theirs[1:3], *mine[3:])
    assert mine == theirs, message


# ---------------------------------------------------------------- top-k
def test_topk_view_under_random_actions(material, escaped):
    rng = random.Random(11)
    view = topk_view(material.topk, material.bundle)
    layers = list(view.layers)
    run = Run(view, rng, {"layer": view.layer, "channel": view.channel},
              key=lambda v: (v.layer, v.channel), shown=lambda v: (*picture(v), v.caption),
              controls=lambda v: {"layer": v._layer_menu.value, "channel": v._channel_box.value})
    counts = {name: material.topk.num_channels(name) for name in layers}
    last = {"count": counts[view.layer]}  # the channel count of the last layer chosen (kept with no layer)

    def set_layer(layer):
        if layer is not None:
            if run.expected["channel"] >= counts[layer]:
                run.expected["channel"] = 0  # documented: a channel the layer does not have goes to 0
            last["count"] = counts[layer]
        run.expected["layer"] = layer

    def layer_python(run):
        layer = rng.choice(layers + [None])
        run.log.append(f"layer = {layer}")
        view.layer = layer
        set_layer(layer)

    def layer_browser(run):
        index = rng.choice([0, len(layers) - 1, rng.randrange(len(layers)), len(layers), 99, None, -1])
        run.log.append(f"browser layer index {index}")
        browser(view._layer_menu, index=index)
        if index is None or not 0 <= index < len(layers):
            run.expect_refused("layer")
        else:
            set_layer(layers[index])

    def channel_python(run):
        n = last["count"]
        channel = rng.choice([0, n - 1, rng.randrange(n)])
        run.log.append(f"channel = {channel}")
        view.channel = channel
        run.expected["channel"] = channel
        if rng.random() < 0.3:
            bad = rng.choice([n, n + 7, -1])
            run.log.append(f"channel = {bad} (refused)")
            run.python_refused("channel", bad)

    def channel_browser(run):
        n = last["count"]
        value = rng.choice([0, n - 1, rng.randrange(n), n, max(counts.values()) - 1, 1000, -3])
        run.log.append(f"browser channel {value}")
        browser(view._channel_box, value=value)
        if 0 <= value < n:  # the box is bounded to the layer's channels
            run.expected["channel"] = value
        else:
            run.expect_out_of_range()

    def step_buttons(run):
        delta = rng.choice([-1, 1])
        run.log.append(f"click {'next' if delta > 0 else 'previous'}")
        click(view._next if delta > 0 else view._prev)
        run.expected["channel"] = (run.expected["channel"] + delta) % last["count"]

    stress(run, [(2, layer_python), (3, layer_browser), (3, channel_python), (3, channel_browser),
                 (3, step_buttons)], escaped)
    final = (view.layer, view.channel)
    fresh = topk_view(material.topk, material.bundle)
    if final[0] is not None:
        fresh.layer = final[0]
        fresh.channel = final[1]
    else:
        fresh.layer = None
    assert_drawn_as_fresh(run, view, fresh, f"the final state {final} is drawn otherwise than by a fresh view")
    probes = [view.controller.probe, fresh.controller.probe]
    view.close()
    fresh.close()
    assert all(probe.closed for probe in probes)  # the probes the views made are released
    material.snapshot.assert_unchanged(material.model)
    assert escaped() == []


# ---------------------------------------------------------------- feature evolution (a recorder, live)
def _training_weights(model: nn.Module, base: dict[str, torch.Tensor], epoch: int) -> None:
    """The weights 'training' has reached at ``epoch``: the same for the same epoch, so that an
    epoch recorded again has the frames it had."""
    generator = torch.Generator().manual_seed(epoch)
    with torch.no_grad():
        for name, value in model.named_parameters():
            value.copy_(base[name] + 0.05 * epoch * torch.randn(value.shape, generator=generator))


@pytest.mark.parametrize("labelled, projection", [(True, "auto"), (False, None)], ids=["figure", "patches-only"])
def test_evolution_view_under_random_actions(material, escaped, labelled, projection):
    rng = random.Random(21 if labelled else 22)
    model = zoo.ShapesNet()
    model.load_state_dict(material.model.state_dict())
    base = {name: value.detach().clone() for name, value in model.named_parameters()}
    layers = {"features.relu2": [0, 5], "classifier": [1, 3]}
    recorder = FeatureEvolutionRecorder(model, material.x[:2], layers, epochs=None, projection=projection)
    options = {"labelled": labelled, "tile": 24, "dpi": 40, "denormalize": material.bundle.denormalize}
    view = evolution_view(recorder, **options)
    recorded: list[int] = []
    run = Run(view, rng, {"epochs": [], "epoch": None, "follow": True,
                          "show": "projection" if projection else "patch"},
              key=lambda v: (tuple(v.epochs), v.epoch, v.show), shown=picture,
              controls=lambda v: {"follow": v._follow_box.value, "show": v._show_menu.value})

    def record(run):
        epoch = rng.choice([0, 1, 2, 3, 5, 8, 13, rng.randrange(20)])
        run.log.append(f"record {epoch}")
        _training_weights(model, base, epoch)
        recorder.record(epoch)
        new = epoch not in recorded
        recorded[:] = sorted(set(recorded) | {epoch})
        run.expected["epochs"] = list(recorded)
        if new and run.expected["follow"]:
            run.expected["epoch"] = epoch  # documented: following, the view jumps to a new epoch
        elif new and run.expected["epoch"] not in recorded:
            run.expected["epoch"] = recorded[-1]  # (no epoch was chosen) the last one
        # documented: an epoch recorded again refreshes its frames without moving the view

    def slider(run):
        value = rng.choice([0, len(recorded) - 1, rng.randrange(max(len(recorded), 1)), len(recorded) + 3, -2])
        run.log.append(f"browser slider {value}")
        browser(view._slider, value=value)
        if recorded and 0 <= value < len(recorded):  # the slider is bounded to the recorded epochs
            run.expected["epoch"] = recorded[value]
        elif recorded:
            run.expect_out_of_range()

    def epoch_python(run):
        choice = rng.choice(recorded + [None, 999, True])
        run.log.append(f"epoch = {choice!r}")
        if choice is None or (choice in recorded and not isinstance(choice, bool)):
            view.epoch = choice
            run.expected["epoch"] = choice
        else:
            run.python_refused("epoch", choice)

    def follow(run):
        value = rng.random() < 0.5
        run.log.append(f"follow {value}")
        if rng.random() < 0.5:
            browser(view._follow_box, value=value)
        else:
            view.follow = value
        run.expected["follow"] = value

    def show(run):
        index = rng.choice([0, 1, 1, 2, None])
        run.log.append(f"browser show index {index}")
        browser(view._show_menu, index=index)
        if index not in (0, 1) or index == 0 and projection is None:
            run.expect_refused("show")
        else:
            run.expected["show"] = ("projection", "patch")[index]

    stress(run, [(1, record), (4, slider), (2, epoch_python), (1, follow), (2, show)], escaped)
    # the final state, drawn by a fresh view of the same record
    fresh = evolution_view(recorder.result(), **options)
    fresh.show = view.show
    fresh.epoch = view.epoch
    assert fresh.epochs == view.epochs
    assert picture(view)[:2] == picture(fresh)[:2] and not view.error and not fresh.error
    fresh.close()
    view.close()
    assert recorder._callbacks == []  # the closed view no longer listens
    recorder.close()
    assert all(hooks == () or all(h == () for h in hooks) for hooks in _hooks(model).values())
    assert escaped() == []


# ---------------------------------------------------------------- invariance
def test_invariance_view_under_random_actions(material, escaped):
    rng = random.Random(31)
    result = material.invariance
    options = {"denormalize": material.bundle.denormalize, "class_names": material.bundle.classes, "dpi": 40,
               "image_names": ["a", "b", "c"]}
    view = invariance_view(result, material.x[:3], **options)
    kinds = list(view.transforms)
    identity = {"translation": 2, "rotation": 0, "scale": 1}
    steps = {kind: len(result.values[kind]) for kind in kinds}
    # documented: with no transformation chosen the curves keep the line of the last step shown
    last = {"kind": view.transform, "marked": (view.transform, view.step)}
    run = Run(view, rng, {"transform": kinds[0], "step": identity[kinds[0]]},
              key=lambda v: (v.transform, v.step) if v.transform is not None else (None, last["marked"]),
              shown=lambda v: (*picture(v), v.examples_png, v.readout),
              controls=lambda v: {"transform": v._menu.value, "step": v._slider.value})

    def set_kind(kind):
        if kind is not None and kind != last["kind"]:
            run.expected["step"] = identity[kind]
        if kind is not None:
            last["kind"] = kind
        run.expected["transform"] = kind
        marked()

    def marked():
        if view.transform is not None:
            last["marked"] = (view.transform, view.step)

    def kind_python(run):
        kind = rng.choice(kinds + [None])
        run.log.append(f"transform = {kind}")
        view.transform = kind
        set_kind(kind)
        if rng.random() < 0.2:
            run.python_refused("transform", "shear")

    def kind_browser(run):
        index = rng.choice([0, len(kinds) - 1, rng.randrange(len(kinds)), len(kinds), None])
        run.log.append(f"browser transform index {index}")
        browser(view._menu, index=index)
        if index is None or not 0 <= index < len(kinds):
            run.expect_refused("transform")
        else:
            set_kind(kinds[index])

    def step_browser(run):
        n = steps[last["kind"]]
        value = rng.choice([0, n - 1, rng.randrange(n), n, max(steps.values()) - 1, -1])
        run.log.append(f"browser step {value}")
        browser(view._slider, value=value)
        if 0 <= value < n:  # the slider is bounded to the steps
            run.expected["step"] = value
        else:
            run.expect_out_of_range()
        marked()

    def step_python(run):
        n = steps[last["kind"]]
        value = rng.randrange(n)
        run.log.append(f"step = {value}")
        view.step = value
        run.expected["step"] = value
        marked()
        if rng.random() < 0.3:
            run.python_refused("step", rng.choice([n, -1]))

    stress(run, [(2, kind_python), (2, kind_browser), (4, step_browser), (3, step_python)], escaped)
    fresh = invariance_view(result, material.x[:3], **options)
    fresh.transform, fresh.step = last["marked"]
    if view.transform is None:
        fresh.transform = None
        fresh.step = view.step
    assert_drawn_as_fresh(run, view, fresh, f"the final state {run.key(view)} is drawn otherwise than by a fresh view")
    fresh.close()
    view.close()
    material.snapshot.assert_unchanged(material.model)
    assert escaped() == []


# ---------------------------------------------------------------- correspondence
def test_correspondence_view_under_random_actions(material, escaped):
    rng = random.Random(41)
    options = {"denormalize": material.bundle.denormalize, "tile": 64}
    view = correspondence_view(material.correspondence, material.x[:3], **options)
    parts = list(view.parts)
    run = Run(view, rng, {"part": None, "occluded": False},
              key=lambda v: (v.part, v.occluded), shown=picture,
              controls=lambda v: {"part": None if v._menu.index == 0 else v.parts[v._menu.index - 1],
                                  "occluded": v._occluded_box.value})

    def part_browser(run):
        index = rng.choice([0, 1, len(parts), rng.randrange(len(parts) + 1), len(parts) + 1, None])
        run.log.append(f"browser part index {index}")
        browser(view._menu, index=index)
        if index is None or not 0 <= index <= len(parts):
            run.expect_refused("part")
        else:
            run.expected["part"] = None if index == 0 else parts[index - 1]

    def part_python(run):
        part = rng.choice(parts + [None])
        run.log.append(f"part = {part}")
        view.part = part
        run.expected["part"] = part
        if rng.random() < 0.2:
            run.python_refused("part", "nose")

    def occluded(run):
        value = rng.random() < 0.5
        run.log.append(f"occluded {value}")
        if rng.random() < 0.5:
            disabled = view._occluded_box.disabled
            browser(view._occluded_box, value=value)  # also while disabled (sent before the page saw it)
            if disabled:  # the page saw it disabled: refused, nothing changed
                run.expect_refused("occluded")
                return
        else:
            view.occluded = value
        run.expected["occluded"] = value
        assert view._occluded_box.disabled == (view.part is None)

    stress(run, [(3, part_browser), (2, part_python), (3, occluded)], escaped)
    fresh = correspondence_view(material.correspondence, material.x[:3], **options)
    fresh.part, fresh.occluded = view.part, view.occluded
    assert picture(view) == picture(fresh), f"the final state {run.key(view)} is drawn otherwise than by a fresh view"
    fresh.close()
    view.close()
    assert escaped() == []


# ---------------------------------------------------------------- kernels
def test_kernel_view_under_random_actions(material, escaped):
    rng = random.Random(51)
    view = kernel_view(material.model, height=400)
    layers, scales, colormaps = list(view.layers), ["layer", "filter", "slice"], list(view.colormaps)
    counts = {name: material.model.get_submodule(name).out_channels for name in layers}
    run = Run(view, rng, {"layer": layers[0], "normalize": "layer", "out_channel": -1, "colormap": colormaps[0]},
              key=lambda v: (v.layer, v.normalize, v.out_channel, v.colormap), shown=picture,
              controls=lambda v: {"layer": v._layer_menu.value, "normalize": v._normalize_menu.value,
                                  "out_channel": v._channel_box.value, "colormap": v._colormap_menu.value})

    def set_layer(layer):
        if run.expected["out_channel"] >= counts[layer]:
            run.expected["out_channel"] = -1  # documented: a channel the layer does not have goes to -1 (all)
        run.expected["layer"] = layer

    def layer(run):
        index = rng.choice([0, len(layers) - 1, rng.randrange(len(layers)), len(layers), None])
        run.log.append(f"browser layer index {index}")
        if index is not None and 0 <= index < len(layers) and rng.random() < 0.4:
            view.layer = layers[index]
        else:
            browser(view._layer_menu, index=index)
        if index is None or not 0 <= index < len(layers):
            run.expect_refused("layer")
        else:
            set_layer(layers[index])

    def menu(run):
        name, control, options, what = rng.choice([("normalize", view._normalize_menu, scales, "scale"),
                                                   ("colormap", view._colormap_menu, colormaps, "colours")])
        index = rng.choice([0, len(options) - 1, rng.randrange(len(options)), len(options), None])
        run.log.append(f"browser {name} index {index}")
        browser(control, index=index)
        if index is None or not 0 <= index < len(options):
            run.expect_refused(what)
        else:
            run.expected[name] = options[index]

    def out_channel(run):
        n = counts[view.layer]
        value = rng.choice([-1, 0, n - 1, rng.randrange(n), n, max(counts.values()) - 1, -5])
        run.log.append(f"out_channel {value}")
        if rng.random() < 0.7:
            browser(view._channel_box, value=value)
            if -1 <= value < n:  # the box is bounded to the layer
                run.expected["out_channel"] = value
            else:
                run.expect_out_of_range()
        elif -1 <= value < n:
            view.out_channel = value
            run.expected["out_channel"] = value
        else:
            run.python_refused("out_channel", value)

    stress(run, [(2, layer), (2, menu), (3, out_channel)], escaped)
    fresh = kernel_view(material.model, height=400)
    fresh.layer, fresh.normalize, fresh.colormap = view.layer, view.normalize, view.colormap
    fresh.out_channel = view.out_channel
    assert picture(view) == picture(fresh), f"the final state {run.key(view)} is drawn otherwise than by a fresh view"
    fresh.close()
    view.close()
    material.snapshot.assert_unchanged(material.model)
    assert escaped() == []


# ---------------------------------------------------------------- summary
def test_summary_view_under_random_actions(material, escaped):
    rng = random.Random(61)
    view = summary_view(material.model)
    words = sorted({word for row in view.cells for cell in row for word in cell.split()} | {
        "", " ", "CONV", "relu ", "<b>", "(", "[", "*", ".", "zzz", "Conv2d 3", "features.conv1"})

    def matching(text: str) -> int:
        needle = text.strip().lower()
        return sum(1 for row in view.cells if not needle or any(needle in cell.lower() for cell in row))

    run = Run(view, rng, {"filter_text": ""}, key=lambda v: (v.filter_text,),
              shown=lambda v: (v._table.value, v._footer.value, v.shown),
              controls=lambda v: {"filter_text": v._filter_box.value})

    def type_text(run):
        text = rng.choice(words)
        if rng.random() < 0.3:  # typed letter by letter, each sent (continuous update)
            for end in range(len(text) + 1):
                browser(view._filter_box, value=text[:end])
        else:
            browser(view._filter_box, value=text)
        run.log.append(f"filter {text!r}")
        run.expected["filter_text"] = text
        assert view.shown == matching(text)

    stress(run, [(1, type_text)], escaped)
    fresh = summary_view(material.model)
    fresh.filter_text = view.filter_text
    assert_drawn_as_fresh(run, view, fresh, "the final state is drawn otherwise than by a fresh view")
    fresh.close()
    view.close()
    material.snapshot.assert_unchanged(material.model)
    assert escaped() == []


# ---------------------------------------------------------------- activation maximisation
def test_actmax_view_under_random_actions(material, escaped):
    rng = random.Random(71)
    options = {"background": False, "steps": 2, "update_every": 1}
    view = actmax_view(material.bundle, **options)
    targets = list(view.layers)
    counts = view.controller._counts
    ran = {"steps": None}  # the steps of the run whose image is shown
    run = Run(view, rng, {"layer": view.layer, "channel": 0, "steps": 2, "running": False},
              key=lambda v: (v.controller.shown_target, ran["steps"]), shown=lambda v: (v.png,),
              controls=lambda v: {"layer": v._layer_menu.value, "channel": v._channel_box.value,
                                  "steps": v._steps_box.value})

    def target(run):
        index = rng.choice([0, len(targets) - 1, rng.randrange(len(targets)), len(targets), None])
        run.log.append(f"browser target index {index}")
        browser(view._layer_menu, index=index)
        if index is None or not 0 <= index < len(targets):
            run.expect_refused("target")
            return
        layer = targets[index]
        if run.expected["channel"] >= counts[layer]:
            run.expected["channel"] = counts[layer] - 1  # documented: the last channel of the new target
        run.expected["layer"] = layer

    def channel(run):
        n = counts[view.layer]
        value = rng.choice([0, n - 1, rng.randrange(n), n, 63, -2])
        run.log.append(f"browser channel {value}")
        browser(view._channel_box, value=value)
        if 0 <= value < n:
            run.expected["channel"] = value
        else:
            run.expect_out_of_range()

    def steps(run):
        value = rng.choice([1, 2, 3, 0, -4])
        run.log.append(f"browser steps {value}")
        browser(view._steps_box, value=value)
        if value >= 1:
            run.expected["steps"] = value
        else:
            run.expect_out_of_range()

    def run_button(run):
        run.log.append("click Run")
        click(view._run_button)
        ran["steps"] = view.steps
        assert not view.error and view.status.startswith(f"done after {view.steps} steps"), view.status
        assert view.controller.shown_target.startswith(
            f"class {view.channel}" if view.layer == CLASS_TARGET else f"layer {view.layer!r} channel {view.channel}")

    stress(run, [(3, target), (3, channel), (1, steps), (2, run_button)], escaped)
    click(view._run_button)
    fresh = actmax_view(material.bundle, **options)
    fresh.layer, fresh.channel, fresh.steps = view.layer, view.channel, view.steps
    click(fresh._run_button)
    assert (view.png, view.status) == (fresh.png, fresh.status)
    probes = [view.controller.probe, fresh.controller.probe]
    fresh.close()
    view.close()
    assert all(probe.closed for probe in probes)
    material.snapshot.assert_unchanged(material.model)
    assert escaped() == []


def test_actmax_background_runs_under_random_actions_leave_no_thread(material, escaped):
    """Run, Stop and target changes in quick succession with runs in their thread: a change during a run
    is refused and said, the last run's image names its target, and close() leaves no thread."""
    rng = random.Random(81)
    before = set(threading.enumerate())
    view = actmax_view(material.bundle, steps=40, update_every=5)
    targets = list(view.layers)
    for _ in range(rng.randint(*ACTIONS)):
        kind = rng.choice(["run", "run", "stop", "target", "channel"])
        if kind == "run":
            click(view._run_button)
        elif kind == "stop":
            click(view._stop_button)
        else:
            # refused while a run is going (said in the status line), taken otherwise
            control, state = ((view._layer_menu, {"index": rng.randrange(len(targets))}) if kind == "target" else
                              (view._channel_box, {"value": rng.randrange(4)}))
            browser(control, **state)
        assert escaped() == []
    view.running = False
    view.controller.wait(30)
    assert not view.running and escaped() == []
    click(view._run_button)  # one more, to its end: its image and status name the target chosen
    view.controller.wait(30)
    assert not view.running and not view.error and view.status.startswith("done after 40 steps for "), view.status
    assert view.controller.shown_target in view.status and view.controller.shown_target.startswith(
        f"class {view.channel}" if view.layer == CLASS_TARGET else f"layer {view.layer!r} channel {view.channel}")
    assert escaped() == []
    probe = view.controller.probe
    view.close()
    assert probe.closed
    assert [t for t in set(threading.enumerate()) - before if t.is_alive()] == []
    material.snapshot.assert_unchanged(material.model)


# ---------------------------------------------------------------- what the stress test found
def test_evolution_slider_picks_the_epoch_under_its_knob_when_none_is_chosen():
    """With no epoch chosen (set from Python), the status says to pick one with the slider, whose knob
    still sits on an epoch: a browser message picking that position chose nothing, since the slider's
    value did not change."""
    recorder = FeatureEvolutionRecorder(zoo.load_default().model, zoo.make_batch(2, seed=1)[0],
                                        {"features.relu2": [0]}, epochs=None, projection=None)
    recorder.record(1)
    recorder.record(2)
    view = evolution_view(recorder, labelled=False)
    view.epoch = None
    assert view.status == "no epoch chosen: pick one with the slider" and view._slider.value == -1  # left of epoch 1
    browser(view._slider, value=1)
    assert view.epoch == 2 and view.image_shape != () and "epochs [1, 2]" in view.status
    view.epoch = None
    browser(view._slider, value=0)  # a position the knob was not on: as before
    assert view.epoch == 1
    view.close()
    recorder.close()
