"""A seeded fuzz test of the filter views' public Python API with the invalid and edge-case values a
notebook user types.

What it drives:

* the one-liners of :mod:`cnnwidgets.app.filters` (``kernel_view``, ``actmax_view``, ``summary_view``) on
  a seeded two-convolution classifier, with one argument at a time drawn from pools of invalid values:
  unknown option names (also in another case, with a typo, or naming a setting of the view), ``view``,
  wrong types, bools and floats where ints are asked, NumPy and tensor scalars of the wrong kind,
  negatives, zero, huge numbers (2**63), NaN and infinities, None, near-miss names, layers that are not
  convolutions and models without one; then valid values in their other accepted spellings (NumPy and
  0-d tensor ints and floats, NumPy bools and strings, tuples and arrays for lists, a probe for the model)
  and valid edge values (the smallest and largest tile, width and height, one step, 2**63 tiles);
* on an open kernel view and an open activation-maximisation view, a seeded random user who sets the
  view's settings (``layer``, ``normalize``, ``out_channel``, ``colormap``; ``layer``, ``channel``,
  ``steps``, ``running``) to invalid values drawn from pools, and to invalid values after valid ones
  held together, interleaved with valid changes in any accepted spelling, menu picks from the browser
  (out of range too), runs of a step or two, and now and then a NaN weight put into the user's model
  for one change (and taken out again).

The oracle:

* a refused argument raises the error the docstring names (``TypeError``, ``ValueError``), raised by
  the package (not from inside NumPy, torch or matplotlib), whose message names the argument and says
  what is accepted; no view is left open;
* a valid value in another spelling gives what the plain value gives (the same picture, status and
  settings); an edge value gives a view that keeps the documented invariants;
* a refused setting raises ``traitlets.TraitError`` naming the setting and what it accepts, and leaves
  every setting, the picture, the status line and the controls exactly as they were; a refused menu
  pick from the browser says so in the status line and changes nothing else; a valid setting in
  another spelling is held as its plain value; a state shown again is drawn as it was first drawn, and
  at checkpoints as a fresh view set to it draws it;
* an error inside a view's callbacks (a NaN weight, a run with no target) reaches the status line,
  never the caller, takes the stale picture away, and the state is drawn again once the cause is gone;
* closing a view leaves the user's model as it was (no hook, the same weights and training flags),
  and a closed view refuses every setting, None included, changing nothing.

The small tests after the fuzz pin down what it found.
"""

from __future__ import annotations

import math
import random
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
import traitlets
from torch import nn

from cnnwidgets import Probe
from cnnwidgets.app.cells import open_widgets
from cnnwidgets.app.filters import (
    CLASS_TARGET,
    MAX_KERNEL_HEIGHT,
    MAX_KERNEL_TILE,
    MAX_KERNEL_WIDTH,
    actmax_view,
    kernel_view,
    summary_view,
)
from cnnwidgets.widgets.filters import MAX_ACTMAX_STEPS, ActMaxView, KernelView
from tests.helpers import Api, UserModelSnapshot, classified_call, judge, small_classifier

CLASSES = ["c0", "c1", "c2", "c3", "c4"]
#: The convolutions of the small classifier: what its kernel view offers.
CONVS = ["0", "3"]
#: The actmax view's targets: the layers with feature maps, and the class logits.
TARGETS = ["0", "1", "2", "3", "4", "5", CLASS_TARGET]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Torch on one thread: the tensors here are tiny, and two threads on a busy machine make each
    operation wait for the other (a 16 px run took 20 times longer)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@dataclass
class Material:
    model: nn.Module
    snapshot: UserModelSnapshot


@pytest.fixture(scope="module")
def material():
    model = small_classifier()
    return Material(model, UserModelSnapshot.take(model))


# ---------------------------------------------------------------- what a result is, to compare
def settings_of(view) -> dict[str, str]:
    """Every setting of a filter view, value and type (``repr``)."""
    names = ("layers", "layer", "normalize", "out_channel", "out_channels", "colormap", "colormaps", "channel",
             "channels", "channel_names", "steps", "running")
    return {name: repr(getattr(view, name)) for name in names if view.has_trait(name)}


def picture(view) -> tuple:
    return (view.png, view.status, view.error, view.image_shape)


def outcome(result: Any) -> Any:
    """What a one-liner gave, comparable with ``==``: what a view shows and holds (an actmax view after
    one run for a fixed target), or a summary's table. The view is closed."""
    if isinstance(result, ActMaxView):
        result.layer, result.channel = "3", 1
        result.running = True
    if isinstance(result, (KernelView, ActMaxView)):
        shown = (picture(result), settings_of(result))
    else:
        shown = (tuple(result.columns), tuple(map(tuple, result.cells)), result.caption)
    result.close()
    return shown


# ---------------------------------------------------------------- the functions and their pools
TYPE, VALUE, RUNTIME = TypeError, ValueError, RuntimeError
#: Arguments whose refusal names what is accepted instead of the argument ("expected a torch.nn.Module").
NAMED_BY_WHAT_IT_TAKES = {"model_or_probe"}
#: Other words a message may name an argument with (a model that fails "on an input of size ...").
NAMED_ALSO = {"input_size": "input of size"}


def ints(name: str, accepted: str, *, outside: list) -> list[tuple[Any, type, str]]:
    """An int option's pool: values outside its range (a ValueError saying ``accepted``), and the types it
    refuses (a TypeError naming it): bools, floats (whole ones too), None, strings, lists, arrays and
    tensors that are no 0-d integer tensor."""
    wrong = (True, False, np.True_, None, "4", [4], torch.tensor([4]), 4.0, 1.5, math.nan, math.inf, np.float64(4),
             torch.tensor(4.0), np.array(4))
    return [(v, VALUE, accepted) for v in outside] + [(v, TYPE, rf"{name} must be an int") for v in wrong]


def kernel_check(view, values: dict) -> None:
    assert isinstance(view, KernelView)
    assert not view.error, view.status
    assert type(view.layer) is str and view.layer in CONVS, repr(view.layer)
    width = int(values.get("width", 480))
    # only a single kernel wider than the width at zoom 1 (3 px and 2 borders here) makes it wider
    assert view.image_shape and view.image_shape[1] <= max(width, 5), (view.image_shape, width)
    controller = view.controller
    for name in ("tile", "width", "height", "max_tiles"):
        assert type(getattr(controller, name)) is int, name
    assert type(controller.colormap) is str and type(view.colormap) is str
    view.close()


def actmax_check(view, values: dict) -> None:
    assert isinstance(view, ActMaxView)
    assert not view.error and "press Run" in view.status, view.status
    assert type(view.steps) is int and type(view.layer) is str and type(view.channel) is int
    assert view.layers == TARGETS
    assert view._steps_box.value == view.steps
    view.close()


def apis(m: Material, probe: Probe) -> list[Api]:
    no_conv = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 2))
    conv1d = nn.Sequential(nn.Conv1d(3, 4, 3))
    kernel_options = "its options are: layer, colormap, max_tiles, tile, width, height"
    size_accepted = r"size must be an int H or a pair \(H, W\) of ints >= 2"
    return [
        Api("kernel_view", kernel_view,
            dict(model_or_probe=m.model, layer="3", colormap="gray", max_tiles=64, tile=16, width=240, height=480),
            {"model_or_probe": [(None, TYPE, r"expected a torch.nn.Module"), ("model", TYPE, r"expected a torch.nn"),
                                (no_conv, VALUE, r"the model has no Conv2d layer, so there are no kernels to show"),
                                (conv1d, VALUE, r"the model has no Conv2d layer")],
             "layer": [*[(v, VALUE, rf"{re.escape(repr(v))} is not a convolution layer; choose one of \['0', '3'\]")
                         for v in ("1", "7", "nope", "", "3 ", "Conv", "0.weight")],
                       *[(v, TYPE, r"layer must be the name of a convolution layer \(a str\), got")
                         for v in (3, b"3", ["3"], 3.0, np.int64(3))]],
             "colormap": [*[(v, VALUE, r"colormap must be one of \('gray', 'diverging'\) for kernel tiles, got")
                            for v in ("viridis", "Gray", "", "grey")],
                          *[(v, TYPE, r"colormap must be one of .* \(a str\), got")
                            for v in (None, b"gray", ["gray"], 1)]],
             "max_tiles": ints("max_tiles", r"max_tiles must be an int >= 1, got", outside=[0, -5, -2**63]),
             "tile": ints("tile", r"tile must be an int in 1\.\.256, got", outside=[0, -1, 257, 2**63, 10**30]),
             "width": ints("width", r"width must be an int in 1\.\.4096, got", outside=[0, -3, 4097, 2**63]),
             "height": ints("height", r"height must be an int in 1\.\.16384, got", outside=[0, -1, 16385, 2**63]),
             "Layer": [("3", TYPE, rf"kernel_view\(\.\.\.\) has no option 'Layer' \(did you mean 'layer'\?\); "
                                   rf"{kernel_options}$")],
             "cmap": [("gray", TYPE, r"has no option 'cmap' \(did you mean 'colormap'\?\)")],
             "Tile": [(16, TYPE, r"has no option 'Tile' \(did you mean 'tile'\?\)")],
             "normalize": [("filter", TYPE, r"has no option 'normalize' \(normalize is a setting of the view: set "
                                            r"it on the view kernel_view\(\.\.\.\) returns, view\.normalize = \.\.\.\)")],
             "out_channel": [(1, TYPE, r"has no option 'out_channel' \(out_channel is a setting of the view")],
             "outchannel": [(1, TYPE, r"has no option 'outchannel' \(did you mean 'out_channel'\? It is a setting")],
             "zoom": [(2, TYPE, rf"kernel_view\(\.\.\.\) has no option 'zoom'; {kernel_options}$")],
             "view": [(None, TYPE, r"kernel_view\(\.\.\.\) makes its own view, so view cannot be given; to drive a "
                                   r"view of your own, use KernelController\(\.\.\., view=view\)")]},
            spelled={"layer": [np.str_("3")], "colormap": [np.str_("gray")],
                     "max_tiles": [np.int64(64), torch.tensor(64), np.uint16(64)],
                     "tile": [np.int64(16), torch.tensor(16), np.int32(16)], "width": [np.int64(240), torch.tensor(240)],
                     "height": [np.uint16(480), torch.tensor(480, dtype=torch.int32)], "model_or_probe": [probe]},
            edge={"tile": [1, MAX_KERNEL_TILE], "width": [1, 5, MAX_KERNEL_WIDTH], "height": [1, MAX_KERNEL_HEIGHT],
                  "max_tiles": [1, 2**63], "layer": ["0", None], "colormap": ["diverging"]},
            check=kernel_check),
        Api("actmax_view", actmax_view,
            dict(model_or_probe=m.model, size=16, steps=2, background=False, update_every=1, classes=CLASSES, mean=0.5,
                 std=0.25, seed=0, lr=0.05),
            {"model_or_probe": [(None, TYPE, r"expected a torch.nn.Module"), ("model", TYPE, r"expected a torch.nn")],
             "size": [*[(v, VALUE, size_accepted) for v in (1, 0, -16, 16.0, True, "16", math.nan, (16,), (16, 16, 3),
                                                            [16.0, 16], torch.tensor(16.0), (2, 1))],
                      (2**63, VALUE, r"^size \(\d+, \d+\) is too large")],
             "steps": [(0, VALUE, r"steps must be an int >= 1, got 0"), (-1, VALUE, r"steps must be an int >= 1"),
                       *[(v, VALUE, r"steps must be an int in 1\.\.100000 \(what the view's steps box holds\), got")
                         for v in (MAX_ACTMAX_STEPS + 1, 2**63, 10**30)],
                       *[(v, TYPE, r"steps must be an int >= 1, got") for v in (True, np.True_, 2.0, math.nan, "2",
                                                                               torch.tensor(2.0), np.float32(2))]],
             "update_every": [(0, VALUE, r"update_every must be an int >= 1, got 0"),
                              (-1, VALUE, r"update_every must be an int >= 1"),
                              *[(v, TYPE, r"update_every must be an int >= 1, got") for v in (True, 1.5, None, "1")]],
             "background": [(v, TYPE, r"background must be True or False, got") for v in (1, 0, None, "no", np.int64(0))],
             "classes": [*[(v, TYPE, r"classes must be the class names in class order: .* of str, got")
                           for v in ("abcde", b"abcde", 5, [1, 2, 3, 4, 5], [None] * 5, {"a": 0}, np.array([CLASSES]),
                                     [b"c0", "c1", "c2", "c3", "c4"])],
                         (["a"], VALUE, r"classes has 1 names, but the model scores 5 classes; give one name per class"),
                         ([], VALUE, r"classes has 0 names, but the model scores 5 classes"),
                         (CLASSES + ["x"], VALUE, r"classes has 6 names")],
             "mean": [(math.nan, VALUE, r"mean must hold finite numbers"), (math.inf, VALUE, r"mean must hold finite"),
                      ("0.5", TYPE, r"mean must be a number or one number per input channel"),
                      ([0.5, 0.5], VALUE, r"mean must have one value per input channel \(3\), got 2")],
             "std": [(0, VALUE, r"std must be positive"), (-1, VALUE, r"std must be positive"),
                     (math.nan, VALUE, r"std must hold finite numbers"), ("x", TYPE, r"std must be a number")],
             "seed": [(-1, VALUE, r"seed must be an int in \[0, 2\*\*64\), got -1"),
                      (2**64, VALUE, r"seed must be an int in \[0, 2\*\*64\)"),
                      *[(v, TYPE, r"seed must be an int in \[0, 2\*\*64\), got") for v in (True, 1.0, None, "0")]],
             "lr": [*[(v, VALUE, r"lr must be a finite number > 0") for v in (0, -1, math.nan, math.inf)],
                    (True, TYPE, r"lr must be a number"), ("0.1", TYPE, r"lr must be a number")],
             "jitter": [(16, VALUE, r"jitter must be smaller than the image's smaller side"),
                        (-1, VALUE, r"jitter must be an int >= 0"), (True, TYPE, r"jitter must be an int >= 0"),
                        (1.5, TYPE, r"jitter must be an int >= 0")],
             "parametrization": [(v, VALUE, r"parametrization must be one of \('fourier', 'pixel'\)")
                                 for v in ("Pixel", "cppn", None)],
             "decorrelate": [(v, TYPE, r"decorrelate must be True or False") for v in (1, "False")],
             "rotate": [(v, VALUE, r"rotate must be a finite number in \[0, 360\]") for v in (361, -1, math.inf)],
             "input_size": [((3, 16, 16), VALUE, r"give size \(H or \(H, W\)\) or input_size \(\(C, H, W\)\), not both")],
             "progress": [(False, TYPE, r"progress cannot be given: the controller sets them for each run")],
             "callback": [(None, TYPE, r"callback cannot be given")],
             "Seed": [(0, TYPE, r"unknown option Seed \(did you mean 'seed'\?\) for maximize_activation; its options "
                                r"are blur, .*; the view's own are size, mean, std, background, update_every, steps, "
                                r"classes$")],
             "updateevery": [(1, TYPE, r"unknown option updateevery \(did you mean 'update_every'\?\)")],
             # layer and channel are start values of actmax_view (they were refused as options of maximize_activation)
             "layer": [(3, TYPE, r"^layer must be the name of a target \(a str"),
                       ("nope", VALUE, r"^layer 'nope' is not a target of this model; choose one of \[")],
             "channel": [(-1, VALUE, r"^channel must be an int >= 0, got -1$"), (1.0, TYPE, r"^channel must be an int"),
                         (10**6, VALUE, r"^channel 1000000 is out of range for target ")],
             "chanel": [(1, TYPE, r"unknown option chanel \(did you mean 'channel'\? It is a setting of the view")],
             "foo": [(1, TYPE, r"unknown option foo for maximize_activation; its options are blur, decay")],
             "view": [(None, TYPE, r"actmax_view\(\.\.\.\) makes its own view, so view cannot be given; to drive a "
                                   r"view of your own, use ActMaxController\(\.\.\., view=view\)")]},
            spelled={"size": [np.int64(16), torch.tensor(16), (16, 16), [16, np.int32(16)], np.array([16, 16])],
                     "steps": [np.int64(2), torch.tensor(2)], "update_every": [np.int64(1), torch.tensor(1)],
                     "background": [np.False_], "classes": [tuple(CLASSES), np.array(CLASSES)],
                     "mean": [np.float32(0.5), np.float64(0.5), torch.tensor(0.5)],
                     "std": [np.float32(0.25), torch.tensor(0.25)], "seed": [np.uint8(0), torch.tensor(0), np.int64(0)],
                     "lr": [np.float64(0.05)]},
            edge={"steps": [1, MAX_ACTMAX_STEPS, None], "size": [2, (2, 3)], "classes": [None],
                  "update_every": [2**63], "mean": [None], "seed": [2**64 - 1]},
            check=actmax_check),
        Api("summary_view", summary_view,
            dict(model_or_probe=m.model, input_size=(3, 16, 16), leaves_only=True),
            {"input_size": [*[(v, VALUE, r"input_size must be \(C, H, W\), three positive ints")
                              for v in ((3, 16), 16, "3x16x16", (3, 16.0, 16), (True, 16, 16), (3, 0, 16), (3, 16, 16, 1),
                                        (3, math.nan, 16))],
                            ((3, 2**63, 16), VALUE, r"input_size \(3, 9223372036854775808, 16\) is too large"),
                            ((1, 16, 16), RUNTIME, r"the model failed on an input of size \(1, 16, 16\)")],
             "leaves_only": [(v, TYPE, r"leaves_only must be True or False") for v in (1, None, "yes")],
             "model_or_probe": [(None, TYPE, r"expected a torch.nn.Module")],
             "Leaves_only": [(True, TYPE, r"unexpected keyword argument 'Leaves_only'")]},
            spelled={"input_size": [torch.tensor([3, 16, 16]), np.array([3, 16, 16]), [3, 16, 16],
                                    (np.int64(3), torch.tensor(16), 16)],
                     "leaves_only": [np.True_]},
            edge={"leaves_only": [False]}),
    ]


# ---------------------------------------------------------------- the fuzz: function arguments
def test_invalid_options_are_refused_clearly_and_other_spellings_give_the_same(material):
    rng = random.Random(2012)
    probe = Probe(material.model)
    pool = apis(material, probe)
    outcomes: list[str] = []
    open_before = len(open_widgets())
    counts = {"refused": 0, "spelled": 0, "edge": 0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a random net's targets that do not rise: not the point here
        for api in pool:  # every invalid value once, with another argument now and then in another spelling
            for option, values in api.invalid.items():
                for value, error, accepted in values:
                    call_values = dict(api.base)
                    if rng.random() < 0.3:
                        other = rng.choice(sorted(api.spelled))
                        call_values[other] = rng.choice(api.spelled[other])
                    call_values[option] = value
                    what = f"{api.name}({option}={value!r:.50})"
                    classified_call(api.call, call_values, refused_ok=True, must_refuse=True, check=api.check,
                                    check_error=judge(api, option, error, accepted, named_also=NAMED_ALSO,
                                                      named_by_what_it_takes=NAMED_BY_WHAT_IT_TAKES),
                                    what=what, outcomes=outcomes)
                    counts["refused"] += 1
                    assert len(open_widgets()) == open_before, f"{what}: a refused view was left open"
        for api in pool:  # each other spelling once, with another now and then: what the plain values give
            api.plain = outcome(api.call(**api.base))
            for option in sorted(api.spelled):
                for value in api.spelled[option]:
                    call_values = {**api.base, option: value}
                    if rng.random() < 0.3:
                        other = rng.choice(sorted(api.spelled))
                        call_values[other] = rng.choice(api.spelled[other])
                    changed = ", ".join(f"{k}={v!r:.40}" for k, v in call_values.items() if v is not api.base.get(k))
                    what = f"{api.name}({changed})"
                    result = classified_call(api.call, call_values, refused_ok=False, must_refuse=False,
                                             check=lambda result, values: None, check_error=None, what=what,
                                             outcomes=outcomes)
                    assert outcome(result) == api.plain, f"{what} gives otherwise than the plain values"
                    counts["spelled"] += 1
        for api in pool:  # valid edge values: the documented invariants hold
            for option, values in api.edge.items():
                for value in values:
                    what = f"{api.name}({option}={value!r:.50})"
                    result = classified_call(api.call, {**api.base, option: value}, refused_ok=False,
                                             must_refuse=False, check=api.check, check_error=None, what=what,
                                             outcomes=outcomes)
                    if hasattr(result, "close"):
                        result.close()
                    counts["edge"] += 1
    probe.close()
    assert len(open_widgets()) == open_before
    assert counts["refused"] > 200 and counts["spelled"] > 30 and counts["edge"] > 15, counts
    material.snapshot.assert_unchanged(material.model)


# ---------------------------------------------------------------- the fuzz: settings of an open view
def an_int(rng: random.Random, value: int) -> Any:
    """``value`` in one of the spellings an index setting takes."""
    spellings = [value, np.int64(value), np.int32(value), torch.tensor(value)]
    if value >= 0:
        spellings += [np.uint8(value), torch.tensor(value, dtype=torch.int16)]
    return rng.choice(spellings)


def a_name(rng: random.Random, name: str | None) -> Any:
    return name if name is None else rng.choice([name, np.str_(name)])


#: Values no index setting takes, each with what its message says after "<name> must be an int (...), ".
NOT_INTS = [(v, r"not a bool") for v in (True, False, np.True_)] + [
    (v, r"got") for v in (1.0, np.float64(1), "1", None, math.nan, math.inf, torch.tensor(1.0), torch.tensor([1]),
                          np.array(1), [1], b"1")]
INT_ACCEPTED = r"must be an int \(a Python int, a NumPy integer or a 0-d integer tensor\), "


@dataclass
class Setting:
    """A setting of a view: pools of values it refuses ``(value, what the message says)``, and a valid
    value ``(as given, as held)``, both drawn for the view's state."""

    name: str
    invalid: Callable[[Any], list[tuple[Any, str]]]
    valid: Callable[[random.Random, Any], tuple[Any, Any]]


def index_invalid(name: str, extra: Callable[[Any], list[tuple[Any, str]]]) -> Callable[[Any], list[tuple[Any, str]]]:
    return lambda view: [*extra(view), *[(v, f"{name} {INT_ACCEPTED}{says}") for v, says in NOT_INTS]]


def kernel_settings() -> list[Setting]:
    layer_invalid = ([(v, r"unknown layer .*; choose one of \['0', '3'\]") for v in ("nope", "1", "7", "3 ", "", "Conv")]
                     + [(v, r"layer must be a name \(a str\), got") for v in (3, b"3", 1.0, ["3"])])
    normalize_invalid = [(v, r"'normalize' trait of a KernelView instance expected any of \['layer', 'filter', "
                             r"'slice'\]") for v in ("Layer", "filters", "", None, 1, b"layer")]
    colormap_invalid = ([(v, r"unknown colormap .*; choose one of \['gray', 'diverging'\]")
                         for v in ("viridis", "Gray", "", "grey")]
                        + [(v, r"colormap must be a name \(a str\), got") for v in (None, b"gray", 1)])

    def out_channel_extra(view) -> list[tuple[Any, str]]:
        pool = [(v, r"out_channel is -1 \(all\) or a channel index >= 0") for v in (-2, -10**30)]
        if view.out_channels:
            pool += [(v, rf"out_channel {v} is out of range: layer '{view.layer}' has {view.out_channels} output "
                         rf"channels \(0\.\.{view.out_channels - 1}, or -1 for all\)")
                     for v in (view.out_channels, view.out_channels + 5, 2**63)]
        return pool

    def out_channel_valid(rng, view):
        value = rng.randrange(-1, view.out_channels or 20)
        return an_int(rng, value), value

    return [
        Setting("layer", lambda view: layer_invalid,
                lambda rng, view: (lambda v: (a_name(rng, v), v))(rng.choice([*CONVS, *CONVS, None]))),
        Setting("normalize", lambda view: normalize_invalid,
                lambda rng, view: (lambda v: (a_name(rng, v), v))(rng.choice(["layer", "filter", "slice"]))),
        Setting("out_channel", index_invalid("out_channel", out_channel_extra), out_channel_valid),
        Setting("colormap", lambda view: colormap_invalid,
                lambda rng, view: (lambda v: (a_name(rng, v), v))(rng.choice(["gray", "diverging"]))),
    ]


def kernel_controls(view) -> dict[str, Any]:
    return {"layer": view._layer_menu.value, "normalize": view._normalize_menu.value,
            "out_channel": view._channel_box.value, "colormap": view._colormap_menu.value}


def everything(view, controls: Callable[[Any], dict]) -> tuple:
    """Every setting (value and type), the picture and status, and what the controls show."""
    return settings_of(view), picture(view), controls(view)


def check_refused(view, controls, set_it: Callable[[], None], names: list[str], accepted: str, what: str) -> None:
    """``set_it()`` raises a TraitError naming one of ``names`` and saying ``accepted``; nothing changes."""
    before = everything(view, controls)
    with pytest.raises(traitlets.TraitError) as info:
        set_it()
    message = str(info.value)
    assert any(name in message for name in names), f"{what}: the message does not name the setting: {message}"
    assert re.search(accepted, message), f"{what}: the message does not say {accepted!r}: {message}"
    assert everything(view, controls) == before, f"{what}: a refused setting changed the view"


def held_then_refused(view, controls, pool: list[Setting], settings: list[Setting], setting: Setting,
                      rng: random.Random, log: list[str]) -> None:
    """Inside ``hold_trait_notifications()``, valid values for some settings of ``pool``, then one that
    ``setting`` refuses: all of it must be undone (see :func:`check_refused`)."""
    chosen = rng.sample(pool, rng.randint(1, len(pool)))
    changes = [(s.name, s.valid(rng, view)[0]) for s in chosen]
    value, accepted = rng.choice([v for v in setting.invalid(view) if "out of range" not in v[1]])
    log.append(f"hold {changes} then {setting.name} = {value!r} (refused)")

    def held():
        with view.hold_trait_notifications():
            for name, given in changes:
                setattr(view, name, given)
            setattr(view, setting.name, value)

    check_refused(view, controls, held, [s.name for s in settings], accepted, log[-1])


def check_browser_refusal(view, controls, menu, what: str, sent: dict, log: list[str]) -> None:
    """A menu pick the browser sends that the view refuses: said in the status line, nothing else changes."""
    before_settings, before_picture, before_controls = everything(view, controls)
    log.append(f"browser {what} {sent}")
    menu.set_state(sent)
    assert view.error and view.status.startswith(f"{what}: not changed ("), (view.status, log[-3:])
    assert settings_of(view) == before_settings and controls(view) == before_controls, log[-3:]
    assert (view.png, view.image_shape) == before_picture[::3], f"the picture changed: {log[-3:]}"


def set_one_nan(model: nn.Module) -> Callable[[], None]:
    """Put a NaN into the weights of the user's model's second convolution; returns what takes it out."""
    weight = model[3].weight
    kept = weight.detach().clone()
    with torch.no_grad():
        weight[0, 0, 0, 0] = math.nan

    def restore() -> None:
        with torch.no_grad():
            weight.copy_(kept)
    return restore


def fresh_kernel_view(model, view):
    """A fresh view, set to ``view``'s state."""
    other = kernel_view(model, tile=16, width=240, height=480, max_tiles=64)
    other.normalize, other.colormap, other.layer = view.normalize, view.colormap, view.layer
    other.out_channel = view.out_channel
    return other


def test_a_kernel_view_refuses_invalid_settings_and_changes_nothing(material):
    model = material.model
    rng = random.Random(7)
    settings = kernel_settings()
    log: list[str] = []
    first: dict[tuple, tuple] = {}
    counts = {"refused": 0, "held": 0, "valid": 0, "broken": 0, "browser": 0, "fresh": 0}
    view = kernel_view(model, tile=16, width=240, height=480, max_tiles=64)
    menus = {"layer": view._layer_menu, "scale": view._normalize_menu, "colours": view._colormap_menu}
    try:
        assert not view.error, view.status
        for _ in range(500):
            setting = rng.choice(settings)
            draw = rng.random()
            if draw < 0.4:  # an invalid value
                value, accepted = rng.choice(setting.invalid(view))
                log.append(f"{setting.name} = {value!r} (refused)")
                check_refused(view, kernel_controls, lambda: setattr(view, setting.name, value), [setting.name],
                              accepted, log[-1])
                counts["refused"] += 1
                continue
            if draw < 0.5:  # valid values, then one refused whatever they are: all of it is undone
                held_then_refused(view, kernel_controls, settings, settings, setting, rng, log)
                counts["held"] += 1
                continue
            if draw < 0.6:  # a menu pick from the browser: out of range, none, or one of the menu's entries
                what, menu = rng.choice(sorted(menus.items()))
                sent = rng.choice([{"index": 99}, {"index": -1}, {"index": None}, {"index": len(menu.options)}])
                if sent["index"] is None and not menu.options:
                    continue
                check_browser_refusal(view, kernel_controls, menu, what, sent, log)
                counts["browser"] += 1
                continue
            name = setting.name  # a valid change, in any accepted spelling
            given, plain = setting.valid(rng, view)
            if plain == getattr(view, name):  # the value it has: nothing happens
                before = everything(view, kernel_controls)
                setattr(view, name, given)
                assert everything(view, kernel_controls) == before, f"{name} = {given!r}, the value it had"
                continue
            broken = rng.random() < 0.15
            log.append(f"{name} = {given!r}" + (" (a NaN weight in '3')" if broken else ""))
            restore = set_one_nan(model) if broken else None
            try:
                setattr(view, name, given)
            finally:
                if restore is not None:
                    restore()
            held_value = getattr(view, name)
            assert held_value == plain and type(held_value) is type(plain), (log[-1], held_value)
            if broken and view.error:  # the failure reaches the status line, and its picture is gone
                assert re.fullmatch(r"layer '3' has non-finite weights \(NaN or inf\) in output channels \[0\]; its "
                                    r"kernels cannot be scaled for display \(has training diverged\?\)",
                                    view.status), (view.status, log[-3:])
                assert view.image_shape == () and view.png == b"", log[-3:]
                counts["broken"] += 1
                view.controller.update()  # and it is drawn once the cause is gone
            assert not view.error and "Traceback" not in view.status, (view.status, log[-5:])
            if view.layer is None:
                assert view.status == "no layer chosen: pick a convolution layer in the menu" and view.png == b""
            assert kernel_controls(view) == {s.name: getattr(view, s.name) for s in settings}, log[-3:]
            assert view.out_channel <= view._channel_box.max and view._channel_box.min == -1
            key = (view.layer, view.normalize, view.out_channel, view.colormap)
            assert first.setdefault(key, picture(view)) == picture(view), \
                f"state {key} is not drawn as it was first drawn; after {log[-5:]}"
            counts["valid"] += 1
            if counts["valid"] % 20 == 0:
                other = fresh_kernel_view(model, view)
                assert picture(other) == picture(view), f"drawn otherwise than by a fresh view after {log[-5:]}"
                other.close()
                counts["fresh"] += 1
    finally:
        view.close()
    assert counts["refused"] > 150 and counts["held"] > 20 and counts["browser"] > 20 and counts["valid"] > 120, counts
    assert counts["broken"] and counts["fresh"], counts
    material.snapshot.assert_unchanged(model)
    check_closed(view, kernel_controls, [(s.name, s.valid(rng, view)[0]) for s in settings]
                 + [("layer", None), ("layers", ["0"]), ("colormaps", ["gray"]), ("out_channels", 3)])


def check_closed(view, controls, values: list[tuple[str, Any]]) -> None:
    """A closed view refuses every setting, None included, and nothing changes."""
    for name, value in values:
        check_refused(view, controls, lambda: setattr(view, name, value), [name],
                      rf"cannot set {name}: this view is closed; make a new one with {re.escape(view._MAKER)}",
                      f"closed: {name} = {value!r}")
        check_refused(view, controls, lambda: view.set_trait(name, value), [name], r"this view is closed",
                      f"closed: set_trait({name}, {value!r})")


def actmax_settings() -> list[Setting]:
    menu = r"\['0', '1', '2', '3', '4', '5', 'class logits \(output\)'\]"
    layer_invalid = ([(v, rf"unknown target layer .*; choose one of {menu}")
                      for v in ("nope", "6", "7", "3 ", "", "class logits", "Conv")]
                     + [(v, r"layer must be a name \(a str\), got") for v in (3, b"3", 1.0, ["3"])])

    def channel_extra(view) -> list[tuple[Any, str]]:
        pool = [(v, r"channel must be an int >= 0, got -") for v in (-1, -2**63)]
        if view.channels:
            pool += [(v, rf"channel {v} is out of range for target '{re.escape(str(view.layer))}': accepted "
                         rf"0\.\.{view.channels - 1}") for v in (view.channels, 2**63, 10**30)]
        return pool

    def steps_extra(view) -> list[tuple[Any, str]]:
        return ([(v, rf"steps must be an int >= 1, got {v}") for v in (0, -1)]
                + [(v, r"steps must be an int in 1\.\.100000 \(what the steps box holds\)")
                   for v in (MAX_ACTMAX_STEPS + 1, 2**63)])

    running_invalid = [(v, r"running must be True or False, got") for v in (1, 0, None, "yes", np.int64(1), 1.0)]

    def channel_valid(rng, view):
        value = rng.randrange(view.channels or 20)
        return an_int(rng, value), value

    def steps_valid(rng, view):
        value = rng.choice([1, 2, 3])
        return an_int(rng, value), value

    return [
        Setting("layer", lambda view: layer_invalid,
                lambda rng, view: (lambda v: (a_name(rng, v), v))(rng.choice(["0", "3", "4", CLASS_TARGET, None]))),
        Setting("channel", index_invalid("channel", channel_extra), channel_valid),
        Setting("steps", index_invalid("steps", steps_extra), steps_valid),
        Setting("running", lambda view: running_invalid,
                lambda rng, view: (lambda v: (v, True))(rng.choice([True, np.True_]))),
    ]


def actmax_controls(view) -> dict[str, Any]:
    return {"layer": view._layer_menu.value, "channel": view._channel_box.value, "steps": view._steps_box.value,
            "running": view._stop_button.disabled is False}


def words(layer: str, channel: int) -> str:
    """The target in the words of the status line."""
    return f"class {channel} ({CLASSES[channel]!r})" if layer == CLASS_TARGET else f"layer {layer!r} channel {channel}"


def test_an_actmax_view_refuses_invalid_settings_and_changes_nothing(material):
    model = material.model
    rng = random.Random(9)
    settings = actmax_settings()
    log: list[str] = []
    first: dict[tuple, bytes] = {}
    shown: tuple | None = None  # the (layer, channel, steps) of the image on screen
    counts = {"refused": 0, "held": 0, "valid": 0, "runs": 0, "broken": 0, "no target": 0, "browser": 0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        view = actmax_view(model, size=16, steps=2, background=False, update_every=1, classes=CLASSES)
    menus = {"target": view._layer_menu}
    try:
        assert not view.error and view.image_shape == (), view.status
        for _ in range(400):
            setting = rng.choice(settings)
            draw = rng.random()
            if draw < 0.4:
                value, accepted = rng.choice(setting.invalid(view))
                log.append(f"{setting.name} = {value!r} (refused)")
                check_refused(view, actmax_controls, lambda: setattr(view, setting.name, value), [setting.name],
                              accepted, log[-1])
                counts["refused"] += 1
                continue
            if draw < 0.47:
                held_then_refused(view, actmax_controls, settings[:3], settings, setting, rng, log)
                counts["held"] += 1
                continue
            if draw < 0.52:
                sent = rng.choice([{"index": 99}, {"index": -1}, {"index": len(TARGETS)}]
                                  + ([{"index": None}] if view.layer is not None else []))
                check_browser_refusal(view, actmax_controls, menus["target"], "target", sent, log)
                counts["browser"] += 1
                continue
            given, plain = setting.valid(rng, view)
            if setting.name != "running" and plain == getattr(view, setting.name):  # the value it has: nothing happens
                before = everything(view, actmax_controls)
                setattr(view, setting.name, given)
                assert everything(view, actmax_controls) == before, f"{setting.name} = {given!r}, the value it had"
                continue
            broken = setting.name == "running" and view.layer not in (None, "0") and rng.random() < 0.15
            log.append(f"{setting.name} = {given!r}" + (" (a NaN weight in '3')" if broken else ""))
            target_before, picture_before = (view.layer, view.channel), picture(view)
            restore = set_one_nan(model) if broken else None
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # targets of the random net that do not rise
                    setattr(view, setting.name, given)
            finally:
                if restore is not None:
                    restore()
            if setting.name != "running":
                held_value = getattr(view, setting.name)
                assert held_value == plain and type(held_value) is type(plain), (log[-1], held_value)
            assert not view.running and "Traceback" not in view.status, log[-3:]
            assert actmax_controls(view) == {s.name: getattr(view, s.name) for s in settings}, log[-3:]
            assert view.channel <= view._channel_box.max and view._steps_box.value == view.steps
            if setting.name == "running":  # a run: its image, or the reason there is none, in the status line
                counts["runs"] += 1
                if view.layer is None:
                    assert view.error and view.status == (f"no target chosen: pick a layer or {CLASS_TARGET} in the "
                                                          "target menu, then press Run"), (view.status, log[-3:])
                    assert view.image_shape == () and view.png == b""
                    shown = None
                    counts["no target"] += 1
                elif broken:  # a NaN score says so itself; a NaN gradient of a finite score is told too
                    assert view.error and re.search(r"not finite \(NaN or inf\).*(holds NaN: the model has non-finite "
                                                    r"weights|are its weights finite)", view.status), (view.status, log)
                    assert view.image_shape == () and view.png == b""
                    shown = None
                    counts["broken"] += 1
                else:
                    assert not view.error, (view.status, log[-3:])
                    target = words(view.layer, view.channel)
                    assert view.status.startswith(f"done after {view.steps} steps for {target}: its "), view.status
                    assert view.image_shape == (256, 256, 3) and view.progress == view.steps
                    shown = (view.layer, view.channel, view.steps)
                    assert first.setdefault(shown, view.png) == view.png, \
                        f"the run for {shown} is not drawn as it was first drawn; after {log[-5:]}"
                continue
            if setting.name == "steps":  # for the next run: nothing else changes
                assert picture(view) == picture_before, log[-3:]
            # another target: the image stays the last run's, and the status says whose it is
            elif shown is not None:
                assert not view.error and view.png == first[shown], (view.status, log[-3:])
                if (view.layer, view.channel) != shown[:2]:
                    then = ("no target is chosen: pick one in the target menu" if view.layer is None
                            else f"press Run to synthesise one for {words(view.layer, view.channel)}")
                    assert view.status.endswith(f". The image shown is for {words(*shown[:2])}; {then}"), \
                        (view.status, log[-3:])
            elif (view.layer, view.channel) != target_before:
                # after a failed run (or none) the status line asks for a run of the target now chosen
                assert not view.error and view.status.startswith("choose a target and press Run"), (view.status, log)
            counts["valid"] += 1
    finally:
        probe = view.controller.probe
        view.close()
    assert probe.closed
    assert counts["refused"] > 120 and counts["held"] > 15 and counts["browser"] > 10 and counts["valid"] > 70, counts
    assert counts["runs"] > 20 and counts["no target"] and counts["broken"] and len(first) > 8, counts
    material.snapshot.assert_unchanged(model)
    check_closed(view, actmax_controls, [("layer", "3"), ("layer", None), ("channel", 1), ("steps", 2),
                                         ("running", True), ("layers", ["3"]), ("channels", 4)])


# ---------------------------------------------------------------- what the fuzz found
def test_kernel_index_settings_refuse_bools_and_floats_and_take_tensor_ints(material):
    view = kernel_view(material.model, layer="3")
    shown = picture(view)
    # was: True held (the status then said "out_channel must be an int ... got bool True"), 1.0 taken as 1
    for value in (True, np.True_, 1.0, np.float64(2)):
        with pytest.raises(traitlets.TraitError, match=r"out_channel must be an int \(a Python int, a NumPy integer "
                                                       r"or a 0-d integer tensor\)"):
            view.out_channel = value
    assert repr(view.out_channel) == "-1" and picture(view) == shown
    view.out_channel = torch.tensor(2)  # was: refused, though kernels(..., out_channel=torch.tensor(2)) takes it
    assert repr(view.out_channel) == "2" and "output channel 2" in view.status and not view.error
    with pytest.raises(traitlets.TraitError, match=r"out_channels must be an int .*not a bool"):
        view.out_channels = True  # was: held as True
    view.close()


def test_actmax_settings_refuse_bools_floats_and_0_or_1_and_take_numpy_bools(material):
    view = actmax_view(material.model, size=16, steps=2, background=False)
    for name, value in (("channel", True), ("channel", 1.0), ("steps", True), ("steps", 3.0)):
        with pytest.raises(traitlets.TraitError, match=rf"{name} must be an int \(a Python int"):
            setattr(view, name, value)  # was: held (True as a channel, True steps), or 3.0 taken as 3
    with pytest.raises(traitlets.TraitError, match=r"running must be True or False, got int 1"):
        view.running = 1  # was: taken as True, and a run started
    assert view.controller.result is None and repr(view.steps) == "2"
    view.layer, view.channel, view.steps = "3", torch.tensor(1), np.int64(2)
    view.running = np.True_  # was: "expected a boolean, not the bool np.True_"
    assert not view.error and view.status.startswith("done after 2 steps for layer '3' channel 1")
    assert type(view.channel) is int and type(view.steps) is int
    view.close()


def test_name_settings_refuse_bytes_and_hold_plain_strs(material):
    kernels = kernel_view(material.model)
    for name, value in (("layer", b"3"), ("colormap", b"gray")):
        with pytest.raises(traitlets.TraitError, match=rf"{name} must be a name \(a str\), got bytes"):
            setattr(kernels, name, value)  # was: decoded and taken
    kernels.layer, kernels.normalize, kernels.colormap = np.str_("3"), np.str_("filter"), np.str_("diverging")
    # was: held as np.str_ (the view then showed np.str_('3') in its settings)
    assert [type(v) for v in (kernels.layer, kernels.normalize, kernels.colormap)] == [str] * 3
    kernels.close()
    actmax = actmax_view(material.model, size=16, steps=1, background=False)
    actmax.layer = np.str_("4")
    assert type(actmax.layer) is str
    with pytest.raises(traitlets.TraitError, match=r"layer must be a name \(a str\), got bytes b'3'"):
        actmax.layer = b"3"
    # was: "unknown target '6'", which does not name the setting
    with pytest.raises(traitlets.TraitError, match=r"^unknown target layer '6'; choose one of \['0'"):
        actmax.layer = "6"
    actmax.close()


def test_a_closed_filter_view_refuses_none_and_new_menus(material):
    kernels = kernel_view(material.model)
    actmax = actmax_view(material.model, size=16, steps=1, background=False)
    for view in (kernels, actmax):
        view.close()
        # was: taken (traitlets takes None without asking the view's validators)
        with pytest.raises(traitlets.TraitError, match=r"cannot set layer: this view is closed"):
            view.layer = None
        with pytest.raises(traitlets.TraitError, match=r"cannot set layer: this view is closed"):
            view.set_trait("layer", None)
        assert view.layer is not None
        # was: the menu changed, then the choice it set was refused
        with pytest.raises(traitlets.TraitError, match=r"cannot set layers: this view is closed"):
            view.layers = ["nope"]
        assert "nope" not in view.layers


def test_a_closed_view_of_any_kind_refuses_none():
    from cnnwidgets.widgets._base import RefusesWhenClosed

    class View(RefusesWhenClosed, traitlets.HasTraits):
        """A bare view: a setting that may be None, and a trait that is no setting (nothing validates it)."""

        _MAKER = "View()"
        choice = traitlets.Unicode(None, allow_none=True)
        note = traitlets.Unicode(None, allow_none=True)

        @traitlets.validate("choice")
        def _check(self, proposal):
            self._refuse_when_closed(proposal)
            return proposal["value"]

    view = View()
    view.choice = None  # open: taken
    view.choice = "a"
    view._closed = True
    # the general cause was in RefusesWhenClosed: any setting that may be None took it once its view was closed
    for set_none in (lambda: setattr(view, "choice", None), lambda: view.set_trait("choice", None)):
        with pytest.raises(traitlets.TraitError, match=r"^cannot set choice: this view is closed; make a new one with "
                                                       r"View\(\)$"):
            set_none()
    assert view.choice == "a"
    view.note = None  # what closing itself sets (a widget's comm) is no setting
    assert view.note is None


def test_actmax_steps_are_bounded_to_what_the_steps_box_holds(material):
    view = actmax_view(material.model, size=16, steps=2, background=False)
    # was: held 2**63 (and 100001) while the box showed 100000, and a run went for 2**63 steps
    for value in (MAX_ACTMAX_STEPS + 1, 2**63):
        with pytest.raises(traitlets.TraitError, match=r"steps must be an int in 1\.\.100000 \(what the steps box "
                                                       r"holds\)"):
            view.steps = value
    assert view.steps == view._steps_box.value == 2
    view.steps = MAX_ACTMAX_STEPS
    assert view._steps_box.value == MAX_ACTMAX_STEPS
    view.close()
    with pytest.raises(ValueError, match=r"steps must be an int in 1\.\.100000 \(what the view's steps box holds\), "
                                         r"got 100001"):
        actmax_view(material.model, size=16, steps=MAX_ACTMAX_STEPS + 1, background=False)


def test_check_int_takes_a_0_d_integer_tensor_as_the_package_does(material):
    from cnnwidgets.render._checks import check_int

    # was: "tile must be an int, got Tensor tensor(32)", while every other count of the package takes one
    assert check_int(torch.tensor(7), "tile", minimum=1) == 7 and type(check_int(torch.tensor(7), "tile")) is int
    assert check_int(torch.tensor(3, dtype=torch.uint8), "tile") == 3
    for value in (torch.tensor(7.0), torch.tensor(True), torch.tensor([7]), np.array(7), True, 7.0):
        with pytest.raises(TypeError, match=r"tile must be an int, got"):
            check_int(value, "tile")
    with pytest.raises(ValueError, match=r"tile must be an int in 1\.\.256, got 300"):
        check_int(torch.tensor(300), "tile", minimum=1, maximum=256)
    plain = kernel_view(material.model, tile=16, width=240)
    spelled = kernel_view(material.model, tile=torch.tensor(16), width=torch.tensor(240), height=torch.tensor(960))
    assert picture(plain) == picture(spelled) and type(spelled.controller.tile) is int
    plain.close()
    spelled.close()


def test_the_one_liners_name_their_options_and_refuse_view(material):
    m = material.model
    for call, error, message in [
        # was: "KernelController.__init__() got an unexpected keyword argument 'Layer'"
        (lambda: kernel_view(m, Layer="3"), TypeError, r"^kernel_view\(\.\.\.\) has no option 'Layer' \(did you mean "
                                                       r"'layer'\?\); its options are: layer, colormap, max_tiles, tile, "
                                                       r"width, height$"),
        (lambda: kernel_view(m, normalize="filter"), TypeError, r"has no option 'normalize' \(normalize is a setting of "
                                                                r"the view: set it on the view kernel_view\(\.\.\.\) "
                                                                r"returns, view\.normalize = \.\.\.\)"),
        # was: "KernelController.__init__() got multiple values for argument 'view'"
        (lambda: kernel_view(m, view=KernelView()), TypeError, r"kernel_view\(\.\.\.\) makes its own view"),
        # was: ValueError "3 is not a convolution layer" for a layer given as an int
        (lambda: kernel_view(m, layer=3), TypeError, r"layer must be the name of a convolution layer \(a str\), got int"),
        # was: ValueError, as for an unknown colormap
        (lambda: kernel_view(m, colormap=["gray"]), TypeError, r"colormap must be one of .* \(a str\), got list"),
        # was: "ActMaxController.__init__() got multiple values for argument 'view'"
        (lambda: actmax_view(m, view=None), TypeError, r"^actmax_view\(\.\.\.\) makes its own view"),
        # was: "unknown option layer for maximize_activation", not that it is set on the view; now a start value
        (lambda: actmax_view(m, layer=3), TypeError, r"^layer must be the name of a target \(a str"),
        (lambda: actmax_view(m, Seed=1), TypeError, r"unknown option Seed \(did you mean 'seed'\?\) for maximize_"
                                                    r"activation; its options are .*; the view's own are size, mean"),
    ]:
        before = len(open_widgets())
        with pytest.raises(error, match=message):
            call()
        assert len(open_widgets()) == before


def test_actmax_classes_are_a_list_of_one_name_per_class(material):
    m = material.model
    for classes, error, message in [
        ("abcde", TypeError, r"classes must be the class names in class order: .* of str, got str .abcde."),  # letters
        (5, TypeError, r"classes must be the class names in class order.*got int 5"),  # was: "'int' object is not iterable"
        ([None] * 5, TypeError, r"got NoneType None for class 0"),  # was: each class named "None"
        (["a"], ValueError, r"classes has 1 names, but the model scores 5 classes"),  # was: taken, never shown
    ]:
        with pytest.raises(error, match=message):
            actmax_view(m, size=16, steps=1, background=False, classes=classes)
    view = actmax_view(m, size=16, steps=1, background=False, classes=np.array(CLASSES))
    view.layer = CLASS_TARGET
    assert view.channel_names == CLASSES
    view.close()


def test_actmax_mean_and_std_as_numpy_or_tensor_scalars_are_said_in_the_status_line(material):
    # was: TypeError "'numpy.float32' object is not iterable" and "iteration over a 0-d tensor"
    for mean, std in ((np.float32(0.5), torch.tensor(0.25)), (torch.tensor(0.5), np.float64(0.25))):
        view = actmax_view(material.model, size=16, steps=1, background=False, mean=mean, std=std)
        assert "input normalised with mean 0.5, std 0.25" in view.status
        view.close()


def test_kernels_of_a_lazy_or_empty_convolution_are_refused_saying_why():
    from cnnwidgets.methods.kernels import kernels

    lazy = nn.Sequential(nn.LazyConv2d(4, 3))
    # was: "Attempted to use an uninitialized parameter in <method 'detach' ...>" from inside torch
    with pytest.raises(ValueError, match=r"the weight of layer '0' \(LazyConv2d\) is not made yet: a lazy module "
                                         r"makes it on its first forward pass"):
        kernels(lazy, "0")
    view = kernel_view(lazy)
    assert view.error and view.status.startswith("the weight of layer '0' (LazyConv2d) is not made yet")
    view.close()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch: "Initializing zero-element tensors is a no-op"
        empty = nn.Sequential(nn.Conv2d(3, 0, 3))
    # was: "zero-size array to reduction operation maximum which has no identity" from inside NumPy
    with pytest.raises(ValueError, match=r"layer '0' has no weights to show: its weight has shape \(0, 3, 3, 3\) "
                                         r"\(0 output and 3 input channels\)"):
        kernels(empty, "0")


def test_a_kernel_menu_entry_that_is_no_convolution_is_said_in_the_status_line(material):
    view = kernel_view(material.model)
    view.layers = ["0", "1", "3"]  # the menu set by hand: '1' is a ReLU
    view.layer = "1"  # was: the status line said only "'1'" (a KeyError's text)
    assert view.error and view.status == ("layer '1' is not a convolution layer of the model; its convolution layers "
                                          "are ['0', '3']")
    assert view.image_shape == ()
    view.layer = "3"
    assert not view.error and view.status.startswith("3: 16x8x3x3 weights")
    view.close()


def test_a_nan_gradient_of_an_actmax_run_is_told_as_such(material):
    model = material.model
    restore = set_one_nan(model)  # output channel 0 of '3': channel 2's gradient reads it too (0 * NaN)
    try:
        view = actmax_view(model, size=16, steps=2, background=False)
        view.layer, view.channel = "3", 2
        view.running = True
    finally:
        restore()
    # was: "the batch holds 768 values that are not finite ... give finite inputs (check the image loading and the
    # preprocessing)": the image the run itself had made NaN at step 1
    assert view.error and re.search(r"at step 1 the gradient of the target \(value -?[\d.e-]+\) with respect to the "
                                    r"image is not finite \(NaN or inf\).*on the way to layer '3' or back \(are its "
                                    r"weights finite\?", view.status), view.status
    view.close()


def test_a_target_picked_after_a_failed_run_is_not_told_the_old_error(material):
    view = actmax_view(material.model, size=16, steps=1, background=False)
    view.layer = None
    view.running = True
    assert view.error and view.status.startswith("no target chosen")
    view.layer = "3"  # was: the red "no target chosen: pick a layer ..." stayed, with a target chosen
    assert not view.error and view.status.startswith("choose a target and press Run to synthesise its image")
    view.close()
