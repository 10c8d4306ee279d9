"""A seeded fuzz test of what the browser sends to the explorer's widgets.

In a notebook the front end of each widget syncs trait values to the kernel (``set_state``, the
path a comm message takes) and the upload button sends custom messages. A buggy or stale front end
(an old tab after a kernel restart, a page still showing the previous layer's grid), a user's own
JavaScript, or JSON's number model (every number a float: ``10.0``, ``-0.0``, ``1e21``; NaN as
null) can send any JSON value. The fuzz drives every widget of an explorer on a small model with
a 300-channel layer (so that the grid has pages), ``background=False`` (each change is computed
inside the call):

* valid values in JSON's spelling (``3.0`` for the index 3), which must be taken as the ints they
  mean;
* invalid ones drawn from pools: out-of-range and stale indices (valid for the previous layer's
  grid, pages or slider), fractions, bools, null, strings, lists of the wrong length, dicts, huge
  numbers, values for traits the kernel owns (an image's size, a grid's geometry, a slider's
  bounds, a menu's labels), several keys at once, and the upload button's messages with missing,
  broken or out-of-order pieces.

The oracle: nothing is raised out of ``set_state`` or a message handler; a refused value leaves
the explorer's traits, the frame on screen and the widget's synced values as they were and is
said in the status line (as a message, never a traceback); an accepted one is the state the
explorer then holds. At checkpoints, once a valid state is set, the status line shows no error and
the frame equals the one a fresh explorer opened in that state shows; ``close()`` leaves the
user's model as it was.

The small tests after the fuzz pin down what it found.
"""

from __future__ import annotations

import io
import math
import random
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from cnnwidgets.app import Explorer
from cnnwidgets.app.frames import grid_pages
from tests.helpers import UserModelSnapshot

SIZE = 16
#: Traits of the explorer the browser may change (through its widgets).
TRAITS = ("layer", "channel", "box", "dragging", "device", "fill", "norm", "cmap", "sort", "overlay", "show_scores",
          "page", "target", "image", "method", "method_stride", "method_signed")
#: JSON values that no widget takes where a number, a bool or a name is asked.
JUNK: tuple[Any, ...] = (None, "", "x", "1", [], [1], {}, {"a": 1}, [[1, 2], [3, 4]], 10.5, 0.5, -1.5, 1e21, -1e21,
                         1e308, 2**53 + 1, 2**70)


def wide_net() -> nn.Sequential:
    """A 6-channel convolution, then a 300-channel one (a grid of two pages) and a 4-class head."""
    torch.manual_seed(3)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 300, 1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(300, 4),
    ).eval()


def picture(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random((SIZE, SIZE, 3)) * 155 + 100).astype(np.uint8)


def png(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(picture(seed)).save(buffer, format="PNG")
    return buffer.getvalue()


SAMPLES = {"a": picture(0), "b": picture(1)}


def open_explorer(model: nn.Module, image: str | None = None, **options: Any) -> Explorer:
    options.setdefault("box", (2, 2, 4, 4))
    return Explorer(model, image, input_size=(3, SIZE, SIZE), samples=SAMPLES, background=False, **options)


def channels(ex: Explorer, layer: str | None = None) -> int:
    info = ex.layers[layer or ex.layer]
    return int((info.map_shape or info.output_shape)[0])


def json_int(rng: random.Random, value: int) -> Any:
    """``value`` as a browser may spell it: an int, or a float (``-0.0`` for 0)."""
    if rng.random() < 0.5:
        return value
    return -0.0 if value == 0 and rng.random() < 0.5 else float(value)


def widgets(ex: Explorer) -> dict[str, Any]:
    """The explorer's widgets whose browser side sends values, by name."""
    return {
        "canvas": ex.canvas, "grid": ex.grid, "scores": ex.scores_view, "layer": ex.layer_select,
        "filter": ex.layer_filter, "channel": ex.channel_slider, "page": ex.page_select, "image": ex.picker.dropdown,
        "upload": ex.picker.upload, "device": ex.device_select, "scores_toggle": ex.scores_toggle,
        "norm": ex.display_controls.norm_buttons, "cmap": ex.display_controls.cmap_dropdown,
        "sort": ex.display_controls.sort_box, "overlay": ex.display_controls.overlay_box,
        "occluder": ex.occluder_controls.enabled_box, "fill": ex.occluder_controls.fill_dropdown,
        "size": ex.occluder_controls.size_slider, "method": ex.method_view.menu,
        "stride": ex.method_view.stride_menu, "signed": ex.method_view.signed_box, "status": ex.status,
    }


#: The trait each widget's browser side sets (the upload button sends messages instead).
SENDS = {"canvas": "box", "grid": "selected", "scores": "selected", "layer": "value", "filter": "value",
         "channel": "value", "page": "index", "image": "index", "device": "index", "scores_toggle": "value",
         "norm": "index", "cmap": "index", "sort": "value", "overlay": "value", "occluder": "value",
         "fill": "index", "size": "value", "method": "index", "stride": "index", "signed": "value"}
#: Synced traits the kernel owns, per widget: the browser never sets them.
KERNEL_OWNED = {"canvas": ("image_width", "image_height", "display_width", "default_size", "enabled", "fill_image"),
                "grid": ("geometry", "display_width", "stats"), "scores": ("rows", "title"),
                "layer": ("groups", "description"), "channel": ("max", "min"), "size": ("max",),
                "image": ("_options_labels",), "upload": ("max_bytes", "label"), "status": ("value",),
                "page": ("_options_labels",), "sort": ("description",)}


def synced(widget: Any) -> dict[str, Any]:
    return {name: getattr(widget, name) for name in widget.keys}


def round_half_up(value: float) -> int:
    return math.floor(value + 0.5)


def expected_box(box: list[float], width: int, height: int) -> tuple[int, int, int, int] | None:
    """The box the canvas documents for ``box`` (None: refused): rounded halves up, inside the image."""
    if not all(math.isfinite(v) for v in box):
        return None
    x, y, w, h = (round_half_up(v) for v in box)
    if w < 1 or h < 1:
        return None
    w, h = min(w, width), min(h, height)
    return min(max(x, 0), width - w), min(max(y, 0), height - h), w, h


# ---------------------------------------------------------------- one fuzzed message
class Case:
    """A browser message: ``sent`` to the widget ``target``; ``verdict`` is "valid" (it must be taken:
    ``expect(ex)`` checks the state it sets), "refused", or "either" (a value the fuzz does not judge,
    such as a page index of a menu that is hidden)."""

    def __init__(self, target: str, sent: Any, verdict: str, expect=None, message: bool = False) -> None:
        self.target, self.sent, self.verdict, self.expect, self.message = target, sent, verdict, expect, message

    def __repr__(self) -> str:
        return f"{self.target} <- {'message ' if self.message else ''}{self.sent!r:.120} ({self.verdict})"


def valid_case(rng: random.Random, ex: Explorer) -> Case:
    """A value the browser may send, in JSON's spelling, and what the explorer must then hold; sent
    to a disabled control (the occluder's fill and size while there is no box) it is refused."""
    case = enabled_case(rng, ex)
    if getattr(widgets(ex)[case.target], "disabled", False):
        return Case(case.target, case.sent, "refused")
    return case


def enabled_case(rng: random.Random, ex: Explorer) -> Case:
    """A value the browser may send, in JSON's spelling, and what the explorer must then hold."""
    target = rng.choice(list(SENDS))
    count = channels(ex)
    width = height = SIZE
    if target == "canvas":
        if rng.random() < 0.3:
            dragging = rng.random() < 0.5
            return Case(target, {"dragging": dragging}, "valid", lambda e: e.dragging is dragging)
        bw, bh = rng.randint(1, width), rng.randint(1, height)
        box = [rng.uniform(-bw + 1, width - 1), rng.uniform(-bh + 1, height - 1), bw, bh]
        box = [json_int(rng, round(v)) if rng.random() < 0.5 else v for v in box]
        want = expected_box(box, width, height)
        sent = {"box": box} if rng.random() < 0.7 else {"box": box, "dragging": rng.random() < 0.5}
        return Case(target, sent, "valid", lambda e: e.box == want and e.canvas.box == want)
    if target == "grid":
        if rng.random() < 0.4:
            hover = rng.randint(-1, count + 3)
            return Case(target, {"hover": json_int(rng, hover)}, "valid",
                        lambda e: e.grid.hover == hover and e.hover_text == (e.grid.describe(hover)
                                                                              if 0 <= hover < count else ""))
        channel = rng.randrange(count)
        return Case(target, {"selected": json_int(rng, channel)}, "valid", lambda e: e.channel == channel)
    if target == "scores":
        target_class = None if rng.random() < 0.2 else rng.randrange(4)
        sent = target_class if target_class is None else json_int(rng, target_class)
        return Case(target, {"selected": sent}, "valid", lambda e: e.target == target_class)
    if target == "layer":
        layer = rng.choice(ex.layer_select.options)
        return Case(target, {"value": layer}, "valid", lambda e: e.layer == layer)
    if target == "filter":
        text = rng.choice(["", "conv", "Conv2d", "300", "zzz", " 3 "])
        layer = ex.layer
        return Case(target, {"value": text}, "valid", lambda e: e.layer_filter.value == text and e.layer == layer)
    if target == "channel":
        channel = rng.randrange(count)
        return Case(target, {"value": json_int(rng, channel)}, "valid", lambda e: e.channel == channel)
    if target == "page":
        pages = grid_pages(count)
        if pages == 1:  # the menu is hidden: it may still hold another layer's pages
            return Case(target, {"index": json_int(rng, 0)}, "either")
        page = rng.randrange(pages)
        return Case(target, {"index": json_int(rng, page)}, "valid",
                    lambda e: e.page == page or (e.page is None and e.page_select.value == page))
    if target in ("image", "device", "norm", "cmap", "fill", "method", "stride"):
        control = widgets(ex)[target]
        if target == "method":  # an occlusion scan is the stress test's
            index = rng.choice([i for i, name in enumerate(control.options) if name != "occlusion"])
        else:
            index = rng.randrange(len(control.options))
        value = control._options_values[index]
        trait = {"image": "image", "stride": "method_stride"}.get(target, target)
        return Case(target, {"index": json_int(rng, index)}, "valid", lambda e: getattr(e, trait) == value)
    if target == "size":
        size = rng.randint(1, ex.occluder_controls.max_size)
        return Case(target, {"value": json_int(rng, size)}, "valid", lambda e: e.occluder_controls.size == size)
    flag = rng.random() < 0.5
    trait = {"scores_toggle": "show_scores", "signed": "method_signed"}.get(target, target)
    if target == "occluder":
        return Case(target, {"value": flag}, "valid", lambda e: (e.box is not None) is flag)
    return Case(target, {"value": flag}, "valid", lambda e: getattr(e, trait) is flag)


def invalid_case(rng: random.Random, ex: Explorer, old_count: int) -> Case:
    """A value the widget must refuse (``old_count``: the channels of the layer shown before, for
    the stale indices of a page that still shows its grid)."""
    target = rng.choice([*SENDS, "upload", "upload", "owned", "owned"])
    count = channels(ex)
    if target == "owned":
        name = rng.choice(list(KERNEL_OWNED))
        trait = rng.choice(KERNEL_OWNED[name])
        value = rng.choice([1, 1.0, True, 0, "", [], {}, 10**6, "x", None])
        sent = {trait: value}
        if name in SENDS and rng.random() < 0.4:  # with a value the widget does take: refused all the same
            key = SENDS[name]
            sent = {key: getattr(widgets(ex)[name], key), **sent}
        return Case(name, sent, "refused")
    if target == "upload":
        content = rng.choice([
            {"kind": "refused"}, {"kind": "refused", "size": None}, {"kind": "refused", "size": "big"},
            {"kind": "refused", "size": [1]}, {"kind": "failed", "name": None, "message": None},
            {"kind": "piece", "id": "u1"}, {"kind": "piece", "id": "u2", "size": None, "offset": 0},
            {"kind": "piece", "id": "u3", "size": 3, "offset": "0"},
            {"kind": "piece", "id": "u4", "size": 3.5, "offset": 0},
            {"kind": "piece", "id": "u5", "size": True, "offset": False},
            {"kind": "piece", "id": "u6", "size": -5, "offset": 0},
            {"kind": "piece", "id": "u7", "size": 9, "offset": 4},
            {"kind": "piece", "id": "u8", "size": 1e300, "offset": 0},
            {"kind": "piece", "id": "u9", "size": 3, "offset": None},
        ])
        if "id" in content:  # each its own upload: later pieces of an upload already dropped are ignored
            content = {**content, "id": f"{content['id']}-{rng.randrange(10**9)}"}
        return Case("upload", content, "refused", message=True)
    if target in ("canvas", "grid", "scores", "channel", "size") and rng.random() < 0.5:
        # out of range, or stale: valid for the grid, slider or class list of the page before
        if target == "canvas":
            box = rng.choice([[0, 0, 0, 4], [1, 1, 4, 0.4], [math.nan, 0, 4, 4], [0, 0, 4], [0, 0, 4, 4, 4],
                              [True, 0, 4, 4], ["1", "2", "3", "4"], [None, 0, 4, 4], [1, 2, 3, {}]])
            return Case(target, {"box": box} if rng.random() < 0.7 else {"box": box, "dragging": True}, "refused")
        if target == "scores":
            return Case(target, {"selected": json_int(rng, rng.choice([4, 99, -1]))}, "refused")
        if target == "size":
            return Case(target, {"value": json_int(rng, rng.choice([0, ex.occluder_controls.max_size + 1, -3]))},
                        "refused")
        stale = rng.randrange(count, max(old_count, count + 1)) if old_count > count else count
        key = "selected" if target == "grid" else "value"
        return Case(target, {key: json_int(rng, rng.choice([stale, -1, count + 40]))}, "refused")
    if target == "page" and grid_pages(count) == 1 and rng.random() < 0.6:
        return Case(target, {"index": json_int(rng, rng.choice([1, 2]))}, "refused")
    if target == "layer" and rng.random() < 0.5:
        return Case(target, {"value": rng.choice(["gone", "7", "", "0 "])}, "refused")
    key = SENDS[target]
    if key == "value" and target in ("filter", "layer"):
        value = rng.choice([v for v in JUNK if not isinstance(v, str)] + [True])
    elif key == "index":
        value = rng.choice([True, False, 0.5, 99, -1, "0", [0], {}, 1e21])
    elif target in ("sort", "overlay", "occluder", "scores_toggle", "signed"):
        value = rng.choice([None, 0, 1, 1.0, "true", [], {}])
    elif target == "canvas":
        return Case(target, {"dragging": rng.choice([0, 1, None, "yes", []])}, "refused")
    else:
        value = rng.choice((True, False, *JUNK))
        if target == "scores" and value is None:
            value = "none"
        if target == "grid" and rng.random() < 0.3:
            return Case(target, {"hover": rng.choice([True, 2.5, "3", None, []])}, "refused")
    return Case(target, {key: value}, "refused")


def upload_file(ex: Explorer, rng: random.Random, serial: int) -> Case:
    """A complete, valid upload of a small PNG, in one or two pieces, as upload.js sends it."""
    data = png(10 + serial)
    upload = f"f{serial}"
    name = f"up{serial}.png"
    cut = rng.choice([len(data), len(data) // 2])
    pieces = [({"kind": "piece", "id": upload, "name": name, "size": json_int(rng, len(data)), "offset": 0},
               [data[:cut]])]
    if cut < len(data):
        pieces.append(({"kind": "piece", "id": upload, "name": name, "size": len(data), "offset": float(cut)},
                       [data[cut:]]))
    return Case("upload", pieces, "valid", lambda e: e.image.startswith(name) and e.picker.data_for(e.image) == data,
                message=True)


def deliver(ex: Explorer, case: Case) -> None:
    """Send ``case`` as the comm does; every handler is called directly, so that an exception is not
    hidden by ipywidgets' dispatcher (which only logs it)."""
    widget = widgets(ex)[case.target]
    try:
        if case.message:
            pieces = case.sent if isinstance(case.sent, list) else [(case.sent, [b"abc"])]
            for content, buffers in pieces:
                for handler in list(widget._msg_callbacks.callbacks):
                    handler(widget, content, buffers)
        else:
            widget.set_state(dict(case.sent))
    except Exception as exc:  # noqa: BLE001 - the oracle: nothing may leave the comm handler
        raise AssertionError(f"{case}: {type(exc).__name__} raised out of the comm handler: {exc}") from exc


def snapshot(ex: Explorer) -> dict[str, Any]:
    frame = ex.shown_state, ex.grid_image.copy(), ex.channel_image.copy()
    return {"traits": {name: repr(getattr(ex, name)) for name in TRAITS}, "frame": frame,
            "widgets": {name: synced(widget) for name, widget in widgets(ex).items() if name != "status"},
            "names": list(ex.picker.names)}


def check_refused(ex: Explorer, case: Case, before: dict[str, Any]) -> None:
    after = snapshot(ex)
    changed = {k: (v, after["traits"][k]) for k, v in before["traits"].items() if after["traits"][k] != v}
    assert not changed, f"{case}: refused, yet the explorer changed: {changed}"
    state, grid, panel = before["frame"]
    assert ex.shown_state == state, f"{case}: the frame's state changed"
    assert np.array_equal(ex.grid_image, grid) and np.array_equal(ex.channel_image, panel), f"{case}: the frame changed"
    assert after["names"] == before["names"], f"{case}: the image menu changed"
    for name, values in before["widgets"].items():
        now = after["widgets"][name]
        differ = [key for key in values if not _same(values[key], now[key])]
        assert not differ, f"{case}: the widget {name} no longer shows the kernel's {differ}"
    if case.target == "status":
        assert ex.status.value == status_markup(ex), f"{case}: the status line shows what the browser sent"
    else:
        assert ex.status.is_error, f"{case}: refused without a word in the status line ({ex.status.message!r})"
    assert "Traceback" not in ex.status.message and "File \"" not in ex.status.message, ex.status.message


def status_markup(ex: Explorer) -> str:
    """What the status line shows for its own message and level."""
    probe = type(ex.status)()
    probe.level, probe.message = ex.status.level, ex.status.message
    shown = probe.value
    probe.close()
    return shown


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(a == b)


def check_against_fresh(ex: Explorer, model: nn.Module) -> None:
    """The frame on screen equals the one a fresh explorer opened in the same state shows."""
    assert ex.wait_idle(30)
    assert not ex.status.is_error, ex.status.message
    fresh = open_explorer(model, ex.image, layer=ex.layer, channel=ex.channel, box=ex.box, fill=ex.fill, norm=ex.norm,
                          cmap=ex.cmap, show_scores=ex.show_scores, target=ex.target, method=ex.method,
                          method_stride=ex.method_stride, method_signed=ex.method_signed)
    try:
        fresh.sort, fresh.overlay, fresh.page = ex.sort, ex.overlay, ex.page
        assert fresh.wait_idle(30)
        assert fresh.state() == ex.state().with_(image_id=fresh.state().image_id)
        np.testing.assert_array_equal(ex.activations, fresh.activations)
        np.testing.assert_array_equal(ex.grid_image, fresh.grid_image)
        np.testing.assert_array_equal(ex.channel_image, fresh.channel_image)
        if ex.show_scores:
            np.testing.assert_allclose(ex.scores["probs"], fresh.scores["probs"], rtol=1e-6, atol=1e-7)
        assert ex.method_view.image.value == fresh.method_view.image.value, "the method map differs"
    finally:
        fresh.close()


def set_valid_state(ex: Explorer, rng: random.Random) -> None:
    """Back to a valid state, from the browser: a sample image, a layer, a channel, a released box."""
    ex.picker.dropdown.set_state({"index": float(rng.randrange(2))})
    ex.layer_select.set_state({"value": rng.choice(ex.layer_select.options)})
    ex.channel_slider.set_state({"value": float(rng.randrange(channels(ex)))})
    box = [rng.randint(0, 8), rng.randint(0, 8), 5.0, 6]
    ex.canvas.set_state({"box": box, "dragging": True})  # a drag: the frames it asks for end any error shown
    ex.canvas.set_state({"box": box, "dragging": False})


@pytest.mark.parametrize("seed", [0, 1])
def test_random_browser_messages_leave_the_explorer_in_a_state_it_shows(seed):
    """240 seeded browser messages, valid and invalid, each judged as the module docstring says,
    with a comparison against a fresh explorer every 80."""
    rng = random.Random(seed)
    model = wide_net()
    before_model = UserModelSnapshot.take(model)
    ex = open_explorer(model)
    outcomes = {"valid": 0, "refused": 0, "either": 0}
    uploads = 0
    try:
        assert ex.wait_idle(30)
        old_count = channels(ex)
        for step in range(240):
            count_now = channels(ex)
            roll = rng.random()
            if roll < 0.45:
                case = valid_case(rng, ex)
            elif roll < 0.5:
                uploads += 1
                case = upload_file(ex, rng, uploads)
            else:
                case = invalid_case(rng, ex, old_count)
            if case.verdict == "refused":
                ex.status.info("")  # so that the refusal's own message is what shows
                before = snapshot(ex)
            deliver(ex, case)
            # (a method map waits for the occluder's release while dragging: wait_idle says so)
            assert ex.wait_idle(30) or (ex.dragging and ex.method != "none"), f"{case}: not idle"
            if case.verdict == "refused":
                check_refused(ex, case, before)
            elif case.verdict == "valid":
                assert case.expect(ex), f"step {step}: {case}: the explorer holds {ex.state()}"
            outcomes[case.verdict] += 1
            # whatever happened, what the explorer holds is a state it can show
            assert 0 <= ex.channel < channels(ex) and type(ex.channel) is int
            assert ex.box is None or (all(type(v) is int for v in ex.box) and ex.box[0] >= 0 and ex.box[1] >= 0
                                      and ex.box[0] + ex.box[2] <= SIZE and ex.box[1] + ex.box[3] <= SIZE)
            assert ex.page is None or 0 <= ex.page < grid_pages(channels(ex))
            assert ex.layer_select.value == ex.layer and ex.channel_slider.value == ex.channel
            assert ex.canvas.box == ex.box and ex.canvas.dragging == ex.dragging
            assert "Traceback" not in ex.status.message
            if channels(ex) != count_now:
                old_count = count_now
            if step % 80 == 79:
                set_valid_state(ex, rng)
                check_against_fresh(ex, model)
        assert outcomes["valid"] and outcomes["refused"], outcomes
    finally:
        ex.close()
    before_model.assert_unchanged(model)


# ---------------------------------------------------------------- what the fuzz found
@pytest.fixture
def ex():
    explorer = open_explorer(wide_net(), box=(2, 2, 4, 4))
    assert explorer.wait_idle(30)
    yield explorer
    explorer.close()


@pytest.mark.parametrize("control, sent", [
    ("channel", {"value": None}), ("scores_toggle", {"value": None}), ("sort", {"value": None}),
    ("overlay", {"value": None}), ("occluder", {"value": None}), ("signed", {"value": None}),
    ("filter", {"value": None}), ("size", {"value": None}), ("page", {"index": 5}),
])
def test_a_null_or_out_of_range_value_for_a_plain_control_is_refused_in_the_status_line(ex, control, sent):
    """The explorer's sliders, checkboxes, filter box and page menu raised a value of the wrong type
    (or an index past the page menu's options) out of the comm handler: the kernel's log only."""
    before = snapshot(ex)
    widgets(ex)[control].set_state(sent)
    assert ex.status.is_error and "Traceback" not in ex.status.message
    assert {name: repr(getattr(ex, name)) for name in TRAITS} == before["traits"]


def test_a_stale_channel_from_the_slider_of_a_wider_layer_is_refused_not_moved_to_the_end(ex):
    """A slider value past the new layer's channels (the page still showed the previous layer's
    slider) was clamped to the last channel: a channel nobody chose."""
    ex.layer = "3"
    ex.channel = 200
    ex.layer = "0"  # 6 channels: the channel is 0 again
    ex.channel_slider.set_state({"value": 200})
    assert ex.channel == 0 and ex.channel_slider.value == 0
    assert ex.status.is_error and "channel 200 is outside the slider's range 0..5" in ex.status.message


@pytest.mark.parametrize("sent", [10.5, True, "3", 1e21])
def test_the_channel_slider_refuses_a_fraction_a_bool_a_string_and_a_huge_number(ex, sent):
    """An IntSlider cut 10.5 to 10, took true as 1 and "3" as 3, and moved 1e21 to its end."""
    ex.channel = 2
    ex.channel_slider.set_state({"value": sent})
    assert ex.channel == 2 and ex.channel_slider.value == 2 and ex.status.is_error


def test_the_size_slider_refuses_a_size_outside_its_range_instead_of_resizing_the_box(ex):
    box = ex.box
    ex.occluder_controls.size_slider.set_state({"value": 10**6})
    assert ex.box == box and ex.occluder_controls.size == 4 and ex.status.is_error


@pytest.mark.parametrize("control, trait, value", [
    ("channel", "max", True), ("size", "max", 1), ("canvas", "image_width", 1), ("canvas", "image_height", 2),
    ("layer", "groups", []), ("grid", "geometry", {}), ("scores", "rows", []), ("image", "_options_labels", ["x"]),
    ("canvas", "_esm", "export default {}"),
])
def test_a_trait_the_kernel_owns_is_not_taken_from_the_browser(ex, control, trait, value):
    """The browser could set a slider's bounds (the channel moved to 1), the canvas's image size
    (the box was clamped to a 1-pixel image), the layer menu's groups or the grid's geometry."""
    widget = widgets(ex)[control]
    kept = getattr(widget, trait)
    state = ex.state()
    widget.set_state({trait: value})
    assert getattr(widget, trait) == kept and ex.state() == state
    assert ex.status.is_error and "cannot be set from the browser" in ex.status.message


@pytest.mark.parametrize("control, sent", [
    ("image", {"index": True}), ("fill", {"index": False}), ("norm", {"index": True}),
    ("stride", {"index": False}), ("method", {"index": True}),
])
def test_a_bool_is_not_taken_as_a_menu_index(ex, control, sent):
    """JSON's true was index 1 of a menu (traitlets' Int holds a bool)."""
    state = ex.state()
    widgets(ex)[control].set_state(sent)
    assert ex.state() == state and ex.status.is_error


@pytest.mark.parametrize("control, value", [("sort", 1), ("overlay", 0), ("scores_toggle", 0), ("occluder", 0),
                                            ("signed", 1)])
def test_a_checkbox_takes_true_or_false_only(ex, control, value):
    """A Checkbox took 0 and 1 as False and True; every flag of the package refuses them."""
    state = ex.state()
    widgets(ex)[control].set_state({"value": value})
    assert ex.state() == state and ex.status.is_error


@pytest.mark.parametrize("box", [[True, 0, 4, 4], ["1", "2", "3", "4"], [1, 2, "3", 4.0]])
def test_the_canvas_refuses_a_box_of_strings_or_bools(ex, box):
    """The canvas's CFloat entries took "1" and true as the numbers 1."""
    kept = ex.box
    ex.canvas.set_state({"box": box})
    assert ex.box == kept == ex.canvas.box and ex.status.is_error and "box must be four numbers" in ex.status.message


@pytest.mark.parametrize("sent", [{"dragging": 1}, {"box": [3, 3, 4, 4], "dragging": 0}])
def test_the_canvas_refuses_a_number_for_dragging(ex, sent):
    state = ex.state()
    ex.canvas.set_state(sent)
    assert ex.state() == state and ex.status.is_error


def test_a_stale_page_pick_shows_the_page_shown_again(ex):
    """A pick from a page menu that still held the 300-channel layer's pages, sent after the layer
    changed, was refused but left the menu showing the page picked."""
    ex.layer = "3"
    assert ex.page_select.options[1][1] == 1
    ex.layer = "0"
    ex.page_select.set_state({"index": 1})
    assert ex.page is None and ex.page_select.value == 0 and ex.status.is_error


@pytest.mark.parametrize("content", [
    {"kind": "refused", "size": None}, {"kind": "refused", "size": "big"},
    {"kind": "piece", "id": "x", "size": None, "offset": 0}, {"kind": "piece", "id": "x", "size": 3, "offset": None},
])
def test_an_upload_message_without_numbers_is_reported_not_raised(ex, content):
    """int(None) and int("big") raised in the upload button's message handler; ipywidgets' dispatcher
    only logged it, and the user heard nothing."""
    upload = ex.picker.upload
    sent = []
    upload.send = sent.append
    upload._on_message(upload, content, [b"abc"])
    assert ex.status.is_error and ("too large" in ex.status.message or "arrived broken" in ex.status.message)
    if content["kind"] == "piece":
        assert sent == [{"kind": "stop", "id": "x"}]  # the browser sends no more of it


@pytest.mark.parametrize("size, offset", [(3.5, 0), (True, False), (-5, 0), (3, "0")])
def test_an_upload_piece_with_a_size_or_offset_that_is_no_byte_count_ends_the_upload(ex, size, offset):
    """A fractional size was cut, true taken as 1, a negative size and a string offset taken."""
    names = list(ex.picker.names)
    upload = ex.picker.upload
    upload.send = lambda content: None
    upload._on_message(upload, {"kind": "piece", "id": "y", "name": "f.png", "size": size, "offset": offset}, [png(3)])
    assert ex.picker.names == names and upload._partial is None
    assert ex.status.is_error and "arrived broken" in ex.status.message


def test_the_status_line_does_not_show_what_the_browser_sets(ex):
    ex.status.error("something")
    shown = ex.status.value
    sent = []
    ex.status.send_state = lambda key=None: sent.append(key)
    ex.status.set_state({"value": "<b>all fine</b>"})
    assert ex.status.value == shown and sent == [["value"]]
