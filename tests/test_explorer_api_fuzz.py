"""A seeded fuzz test of the explorer's public Python API with the invalid and edge-case values a notebook
user types.

What it drives:

* ``explore(model, image, **options)`` and ``Explorer(...)`` on the models a user passes (the embedded
  default, TinyVGG with the offline test data, small ``nn.Sequential`` nets, one left in training mode, one
  with no convolution), with options drawn from pools of invalid values: unknown option names, wrong
  types, bools and floats where ints are asked, NumPy bools, out-of-range numbers, None, near-miss names
  (``'Features.conv3'`` for ``'features.conv3'``, ``'grey'`` for ``'gray'``), devices that do not exist here;
  and with valid values in their other accepted spellings (NumPy and tensor ints, a box as a list, an
  array or a tensor, names in other cases, a ``torch.device``).
* On an open explorer (``background=False``: every change is computed inside the call), a seeded random
  user sets every trait (layer, channel, box, dragging, device, fill, norm, cmap, sort, overlay,
  show_scores, page, target, image, method, method_stride, method_signed) to invalid values drawn from
  pools (also several at once inside ``hold_trait_notifications()``), interleaved with valid changes.

The oracle:

* a refused value raises ``traitlets.TraitError`` (the constructor: the error its docstring names) whose
  message names the trait or option and says what is accepted; a near-miss name that the code suggests
  is named in the message;
* after a refusal every trait is exactly as before (value and type), so are the controls linked to them,
  the frame on screen is the same (same activations, grid and channel view), nothing was submitted, and
  the status line shows no error;
* a valid value in another accepted spelling is held as its plain equivalent (a Python int, a tuple of
  ints, the canonical name), and at checkpoints the frame on screen equals the one a fresh explorer
  opened in that state shows (input, activations, grid, channel view, class scores, method map);
* a constructor that refuses its options, and ``close()``, leave the user's model as it was: no hook,
  the same weights and training flags.

The small tests after the fuzz pin down what it found.
"""

from __future__ import annotations

import math
import random
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import torch
import traitlets
from torch import nn

from cnnwidgets import explore, zoo
from cnnwidgets.app import Explorer
from cnnwidgets.app.frames import grid_pages
from cnnwidgets.render import NORM_MODES, SEQUENTIAL
from cnnwidgets.widgets.controls import FILLS
from tests.conftest import shared_data_dir
from tests.helpers import UserModelSnapshot, hook_dicts, small_classifier

#: The explorer's traits a user sets.
TRAITS = ("layer", "channel", "box", "dragging", "device", "fill", "norm", "cmap", "sort", "overlay", "show_scores",
          "page", "target", "image", "method", "method_stride", "method_signed")
FLAGS = ("dragging", "sort", "overlay", "show_scores", "method_signed")
#: Methods the fuzz switches between (the quick ones: an occlusion scan is the stress test's).
QUICK_METHODS = ("none", "saliency", "grad-cam")


def picture(seed: int, size: int = 32) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random((size, size, 3)) * 155 + 100).astype(np.uint8)


def training_net() -> nn.Sequential:
    """Batch norm and dropout, left in training mode (``model.eval()`` forgotten)."""
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.Dropout(0.3), nn.MaxPool2d(2),
        nn.Conv2d(6, 10, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(10, 4),
    )


def no_conv_net() -> nn.Sequential:
    torch.manual_seed(2)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 3)).eval()


# ---------------------------------------------------------------- the models a user passes
@dataclass
class Subject:
    """A model as a user passes it, and how to open an explorer on it."""

    name: str
    model: nn.Module  # the user's module (a bundle's model for a bundle)
    given: Any  # what is passed to explore(): the module or the bundle
    samples: dict[str, Any]
    first: str  # the sample shown first
    classes: int
    options: dict[str, Any] = field(default_factory=dict)

    def make(self, image: Any = None, **options: Any) -> Explorer:
        options = {**self.options, "samples": self.samples, "background": False, **options}
        return explore(self.given, self.first if image is None else image, **options)


def subject(name: str) -> Subject:
    if name == "sequential":
        model = small_classifier()
        samples = {"a": picture(0), "b": picture(1)}
        return Subject(name, model, model, samples, "a", 5, {"input_size": (3, 32, 32)})
    if name == "training":
        model = training_net()
        samples = {"a": picture(2), "b": picture(3)}
        return Subject(name, model, model, samples, "a", 4, {"input_size": (3, 32, 32)})
    if name == "default":
        bundle = zoo.load_default()
        shipped = zoo.samples()
        samples = {k: shipped[k] for k in ("star", "circle", "scene-circle-star")}
        return Subject(name, bundle.model, bundle, samples, "star", 5)
    if name == "tinyvgg":
        folder = shared_data_dir() / "tinyvgg-cnn-explainer"
        if not folder.is_dir():
            pytest.skip(f"offline test data not found at {folder.parent}; set CNNWIDGETS_SHARED_DATA to the folder "
                        "holding tinyvgg-cnn-explainer/")
        from cnnwidgets.core.images import load_image

        bundle = zoo.load_tinyvgg(folder / "tinyvgg_state_dict.pth")
        photos = {p.stem: load_image(p) for p in sorted((folder / "images").glob("*_1.jpeg"))[:2]}
        return Subject(name, bundle.model, bundle, photos, next(iter(photos)), 10)
    raise ValueError(name)


def channels(ex: Explorer, layer: str | None = None) -> int:
    info = ex.layers[layer or ex.layer]
    return int((info.map_shape or info.output_shape)[0])


def image_size(ex: Explorer) -> tuple[int, int]:
    """(width, height) of the model input."""
    h, w = ex.input_image.shape[:2]
    return w, h


def non_map_layer(ex: Explorer) -> str:
    """A layer whose output is no (C, H, W) map: the classifier head."""
    return next(name for name, info in ex.layers.items()
                if name and info.calls and info.output_shape is not None and len(info.output_shape) == 1)


def near_miss(name: str) -> str:
    """``name`` mistyped as the suggestions find it: its first letter in the other case
    (``'Features.conv3'``), or for a name without letters (an ``nn.Sequential``'s ``'3'``) a digit more."""
    other = name[:1].swapcase() + name[1:]
    return other if other != name else name + "9"


# ---------------------------------------------------------------- pools of invalid values
#: What a refusal says is accepted, per trait.
ACCEPTED = {
    "layer": r"Known layers: |pick a layer|layer must be a layer's name, a str|not a \(C, H, W\) feature map",
    "channel": r"out of range 0\.\.\d+ for layer|channel must be an int",
    "box": r"positive width and height|entirely outside the \d+x\d+ image|finite numbers|box must be \(x, y, w, h\): "
           r"four numbers",
    "device": r"available: |use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'|use cpu, cuda or mps|there is one cpu device|"
              r"device must be a device's name",
    "fill": r"expected any of \['gray', 'mean', 'black', 'blur', 'noise'\]",
    "norm": r"expected any of \['channel', 'layer', 'fixed'\]",
    "cmap": r"expected any of \['viridis'",
    "page": r"accepted (only 0|0\.\.\d+).*or None|page must be an int",
    "target": r"accepted 0\.\.\d+, or None|target must be (a class index|an int)",
    "image": r"the picker offers|expected a unicode string",
    "method": r"expected any of \['none', 'occlusion', 'saliency'",
    "method_stride": r"positive int",
    **{flag: r"expected a boolean" for flag in FLAGS},
}


def invalid_values(ex: Explorer, subject: Subject, name: str, layer: str | None = None) -> list[tuple[Any, str | None]]:
    """Values of trait ``name`` the explorer must refuse now (with ``layer`` set: once that layer is set too),
    each with a name the message must suggest (or None)."""
    w, h = image_size(ex)
    layer = layer or ex.layer
    count = channels(ex, layer)
    conv = next(m for m in subject.model.modules() if isinstance(m, nn.Conv2d))
    pools: dict[str, list[tuple[Any, str | None]]] = {
        "layer": [("no_such_layer", None), ("", None), (None, None), (b"x", None), (3.0, None), (conv, None),
                  (non_map_layer(ex), None), (near_miss(layer), layer), (layer + "9", layer), (np.str_("nope"), None)],
        "channel": [(count, None), (count + 7, None), (-1, None), (True, None), (np.True_, None), (1.5, None),
                    (float(count - 1), None), ("1", None), (None, None), ([0], None), (np.float64(1), None),
                    (torch.tensor(1.0), None), (torch.tensor([1, 2]), None), (2**70, None)],
        "box": [((0, 0, 0, 4), None), ((0, 0, 4, -1), None), ((w + 5, 0, 4, 4), None), ((-20, -20, 4, 4), None),
                ((math.nan, 0, 4, 4), None), ((0, math.inf, 4, 4), None), ("center", None), (5, None),
                ((1, 2, 3), None), ([1, 2, 3, 4, 5], None), ((True, 0, 4, 4), None), (("1", 2, 3, 4), None),
                (np.zeros((2, 2)), None), (torch.tensor([[1, 2, 3, 4]]), None), ((0, 0, 0.4, 0.4), None),
                ((1e300, 0, 4, 4), None), ((None, 0, 4, 4), None)],
        "device": [("tpu", None), ("gpu", None), ("cpu:1", None), ("", None), (None, None), (0, None),
                   ("meta", None), ("cuda:-1", None), ("c pu", None)],
        "fill": [("grey", "gray"), ("white", None), ("", None), (None, None), (1, None), ("blurr", "blur")],
        "norm": [("global", None), ("", None), (None, None), (0, None), ("chanel", "channel")],
        "cmap": [("jet", None), ("", None), (None, None), (0, None), ("viridas", "viridis")],
        "page": [(-1, None), (grid_pages(count), None), (True, None), (np.True_, None), (0.0, None), ("0", None)],
        "target": [(-1, None), (subject.classes, None), (True, None), (np.True_, None), (1.0, None), ("1", None),
                   ([1], None), (np.array([1, 2]), None), (torch.tensor([[1]]), None)],
        "image": [("no such image", None), ("", None), (None, None), (1, None)],
        "method": [("gradcam", "grad-cam"), ("lime", None), (None, None), ("", None), (1, None)],
        "method_stride": [(0, None), (-1, None), (True, None), (np.True_, None), (2.0, None), ("4", None), (None, None),
                          (np.float64(4), None), (torch.tensor([4]), None)],
        **{flag: [(1, None), (0, None), (None, None), ("yes", None), (np.int64(1), None)] for flag in FLAGS},
    }
    if not torch.cuda.is_available():
        pools["device"] += [("cuda", None), ("cuda:0", None), (torch.device("cuda"), None)]
    if not torch.backends.mps.is_available():
        pools["device"] += [("mps", None)]
    return pools[name]


# ---------------------------------------------------------------- pools of valid values, in every accepted spelling
def random_box(rng: random.Random, ex: Explorer) -> Any:
    """A box with a pixel inside the image (partly outside, fractional, the whole image ...), or None, in
    one of the spellings the trait takes."""
    w, h = image_size(ex)
    if rng.random() < 0.1:
        return None
    bw, bh = rng.randint(1, w), rng.randint(1, h)
    values = [rng.uniform(-bw + 1, w - 1), rng.uniform(-bh + 1, h - 1), bw, bh]
    if rng.random() < 0.5:
        values = [round(v) for v in values]
    kind = rng.randrange(5)
    if kind == 0:
        return tuple(values)
    if kind == 1:
        return list(values)
    if kind == 2:
        return np.array(values)
    if kind == 3:
        return torch.tensor(values, dtype=torch.float64)
    return tuple(np.float32(v) for v in values)


def expected_box(box: Any, w: int, h: int) -> tuple[int, int, int, int] | None:
    """The documented box: numbers rounded halves up, then moved and shrunk into the image."""
    if box is None:
        return None
    x, y, bw, bh = (math.floor(float(v) + 0.5) for v in (box.tolist() if hasattr(box, "tolist") else box))
    bw, bh = min(bw, w), min(bh, h)
    return min(max(x, 0), w - bw), min(max(y, 0), h - bh), bw, bh


def an_int(rng: random.Random, value: int) -> Any:
    return rng.choice([value, np.int64(value), np.int32(value), np.uint8(value) if value < 256 else value,
                       torch.tensor(value)])


def a_name(rng: random.Random, name: str) -> Any:
    return rng.choice([name, name.upper(), name.capitalize(), name.replace(" ", "_"), f" {name} "])


def valid_change(rng: random.Random, ex: Explorer, subject: Subject) -> tuple[str, Any, Any]:
    """A valid ``(trait, value as given, value the trait then holds)``."""
    name = rng.choice(TRAITS)
    if name == "layer":
        layer = rng.choice(list(ex.layer_select.options))
        return name, rng.choice([layer, np.str_(layer)]), layer
    if name == "channel":
        channel = rng.randrange(channels(ex))
        return name, an_int(rng, channel), channel
    if name == "box":
        box = random_box(rng, ex)
        return name, box, expected_box(box, *image_size(ex))
    if name == "device":
        return name, rng.choice(["cpu", "cpu:0", "auto", torch.device("cpu")]), "cpu"
    if name in ("fill", "norm", "cmap"):
        value = rng.choice(list({"fill": FILLS, "norm": NORM_MODES, "cmap": SEQUENTIAL}[name]))
        return name, a_name(rng, value), value
    if name in FLAGS:
        value = rng.random() < (0.3 if name == "dragging" else 0.5)
        return name, rng.choice([value, np.bool_(value)]), value
    if name == "page":
        if rng.random() < 0.5:
            return name, None, None
        page = rng.randrange(grid_pages(channels(ex)))
        return name, an_int(rng, page), page
    if name == "target":
        if rng.random() < 0.3:
            return name, None, None
        target = rng.randrange(subject.classes)
        return name, rng.choice([an_int(rng, target), torch.tensor([target]), np.array([target])]), target
    if name == "image":
        image = rng.choice(list(ex.picker.names))
        return name, rng.choice([image, np.str_(image)]), image
    if name == "method":
        method = rng.choice(QUICK_METHODS)
        return name, a_name(rng, method), method
    stride = rng.choice([2, 4, 8, 16, 2**62])
    return name, an_int(rng, stride) if stride < 2**31 else stride, stride


# ---------------------------------------------------------------- what must not change
def traits(ex: Explorer) -> dict[str, str]:
    """Every trait as ``repr``: its value and its type (``(4, 4, 8, 8)`` is not ``(4.0, 4.0, 8.0, 8.0)``)."""
    return {name: repr(getattr(ex, name)) for name in TRAITS}


def controls(ex: Explorer) -> dict[str, Any]:
    """What the linked controls show."""
    return {"layer": ex.layer_select.value, "channel": ex.channel_slider.value, "box": repr(ex.canvas.box),
            "dragging": ex.canvas.dragging, "device": ex.device_select.value, "fill": ex.occluder_controls.fill,
            "norm": ex.display_controls.norm, "cmap": ex.display_controls.cmap, "sort": ex.display_controls.sort,
            "overlay": ex.display_controls.overlay, "scores": ex.scores_toggle.value,
            "target": ex.scores_view.selected, "method": ex.method_view.method, "stride": ex.method_view.stride,
            "signed": ex.method_view.signed, "picker": ex.picker.value, "grid": ex.grid.selected}


def differences(before: dict[str, Any], after: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    return [(key, before[key], value) for key, value in after.items() if value != before[key]]


@dataclass
class Seen:
    """What the explorer shows, to compare before and after a refusal."""

    traits: dict[str, str]
    controls: dict[str, Any]
    state: Any
    activations: np.ndarray
    grid: np.ndarray
    panel: np.ndarray
    scores: Any
    method: Any
    stats: dict[str, int]
    status: tuple[bool, str]

    @classmethod
    def take(cls, ex: Explorer) -> Seen:
        return cls(traits(ex), controls(ex), ex.shown_state, ex.activations, ex.grid_image, ex.channel_image,
                   ex.scores, ex.method_result, ex.stats, (ex.status.is_error, ex.status.message))

    def assert_same(self, ex: Explorer, what: str) -> None:
        now, shown = traits(ex), controls(ex)
        assert now == self.traits, f"{what} changed {differences(self.traits, now)}"
        assert shown == self.controls, f"{what} changed the controls {differences(self.controls, shown)}"
        assert ex.shown_state == self.state and ex.state() == self.state, what
        # the same frame: the very arrays shown before
        assert ex.activations is self.activations and ex.grid_image is self.grid, what
        assert ex.channel_image is self.panel, what
        assert (ex.scores is None) == (self.scores is None), what
        if self.scores is not None:
            assert ex.scores["probs"] is self.scores["probs"] and ex.scores["rows"] == self.scores["rows"], what
        assert ex.method_result is self.method, what
        assert ex.stats == self.stats, f"{what} submitted work: {self.stats} -> {ex.stats}"
        assert (ex.status.is_error, ex.status.message) == self.status, f"{what}: {ex.status.message}"


def check_refused(ex: Explorer, what: str, set_it: Callable[[], None], trait: str, suggested: str | None,
                  also: Sequence[str] = ()) -> None:
    """``set_it()`` is refused, naming ``trait`` (or, for changes held together, one of the traits ``also``
    set with it: their combination may be what is refused) and what it accepts, and nothing changes."""
    seen = Seen.take(ex)
    with pytest.raises(traitlets.TraitError) as info:
        set_it()
    message = str(info.value)
    named = [name for name in (trait, *also) if name in message and re.search(ACCEPTED[name], message)]
    assert named, f"{what}: the message does not name the trait and what it accepts: {message}"
    if suggested is not None:
        assert repr(suggested) in message, f"{what}: does not suggest {suggested!r}: {message}"
    assert "Traceback" not in message
    seen.assert_same(ex, what)


def check_like_a_fresh_explorer(ex: Explorer, subject: Subject, log: list[str]) -> None:
    """The frame on screen is the one a fresh explorer opened in the same state shows."""
    state = ex.state()
    assert ex.shown_state == state, log[-5:]
    assert not ex.status.is_error, (ex.status.message, log[-5:])
    fresh = subject.make(ex.image, layer=state.layer, channel=state.channel, box=state.box,
                         fill=state.fill, norm=state.norm, cmap=state.cmap, show_scores=state.show_scores,
                         target=state.target, method=ex.method, method_stride=ex.method_stride,
                         method_signed=ex.method_signed, device=state.device)
    try:
        fresh.sort, fresh.overlay, fresh.page, fresh.dragging = state.sort, state.overlay, state.page, state.dragging
        assert fresh.state().with_(image_id=0) == state.with_(image_id=0)
        assert np.array_equal(fresh.input_image, ex.input_image)
        assert np.array_equal(fresh.activations, ex.activations), log[-5:]
        assert np.array_equal(fresh.grid_channels, ex.grid_channels)
        assert np.array_equal(fresh.grid_image, ex.grid_image), log[-5:]
        assert np.array_equal(fresh.channel_image, ex.channel_image), log[-5:]
        assert (fresh.scores is None) == (ex.scores is None)
        if ex.scores is not None:
            assert np.array_equal(fresh.scores["probs"], ex.scores["probs"])
            assert fresh.scores["rows"] == ex.scores["rows"]
        if ex.method != "none" and not state.dragging:
            mine, theirs = ex.method_result, fresh.method_result
            assert mine is not None and theirs is not None, (ex.method_error, log[-5:])
            np.testing.assert_allclose(mine.heat, theirs.heat, rtol=1e-5, atol=1e-6, equal_nan=True)
    finally:
        fresh.close()


# ---------------------------------------------------------------- the fuzz: traits of an open explorer
@pytest.mark.parametrize("name, seed, steps", [("sequential", 1, 300), ("training", 2, 200), ("default", 3, 200),
                                               ("tinyvgg", 4, 150)])
def test_invalid_trait_values_are_refused_and_change_nothing(name, seed, steps):
    subject_ = subject(name)
    snapshot = UserModelSnapshot.take(subject_.model)
    rng = random.Random(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the notes on ImageNet normalisation, training mode ...
        ex = subject_.make()
    log: list[str] = []
    try:
        assert not ex.status.is_error, ex.status.message
        for step in range(steps):
            kind = rng.random()
            if kind < 0.55:  # an invalid value
                trait = rng.choice(TRAITS)
                value, suggested = rng.choice(invalid_values(ex, subject_, trait))
                log.append(f"{trait} = {value!r} (refused)")
                check_refused(ex, log[-1], lambda: setattr(ex, trait, value), trait, suggested)
            elif kind < 0.65:  # valid changes, then an invalid one, in one hold: all of it is refused
                changes = [valid_change(rng, ex, subject_) for _ in range(rng.randint(1, 3))]
                trait = rng.choice([t for t in TRAITS if t not in {c[0] for c in changes}] or ["fill"])
                layers = [plain for name_, _, plain in changes if name_ == "layer"]
                value, _ = rng.choice(invalid_values(ex, subject_, trait, layers[-1] if layers else None))
                log.append(f"hold {[(c[0], c[1]) for c in changes]} then {trait} = {value!r} (refused)")

                def held():
                    with ex.hold_trait_notifications():
                        for name_, given, _ in changes:
                            setattr(ex, name_, given)
                        setattr(ex, trait, value)

                check_refused(ex, log[-1], held, trait, None, also=[c[0] for c in changes])
            else:  # a valid change: held as its plain equivalent
                trait, given, plain = valid_change(rng, ex, subject_)
                log.append(f"{trait} = {given!r}")
                setattr(ex, trait, given)
                held_value = getattr(ex, trait)
                assert held_value == plain and type(held_value) is type(plain), (log[-1], held_value, plain)
                if trait == "box" and plain is not None:
                    assert all(type(v) is int for v in held_value)
                assert not ex.status.is_error, (ex.status.message, log[-5:])
                assert ex.method_error is None, (ex.method_error, log[-5:])
            if step % 45 == 44:
                check_like_a_fresh_explorer(ex, subject_, log)
        ex.dragging = False
        check_like_a_fresh_explorer(ex, subject_, log)
    finally:
        ex.close()
    snapshot.assert_unchanged(subject_.model)
    with pytest.raises(traitlets.TraitError, match="cannot set channel: this explorer is closed"):
        ex.channel = 0


# ---------------------------------------------------------------- the fuzz: options of the constructor
def invalid_options(subject: Subject, probe: Explorer) -> list[tuple[str, Any, type[BaseException], str | None]]:
    """``(option, value, error, name the message must suggest)`` the constructor must refuse, from an
    explorer ``probe`` open on the same model."""
    count = channels(probe)
    layer = probe.layer
    options: list[tuple[str, Any, type[BaseException], str | None]] = [
        ("Layer", layer, TypeError, None), ("colormap", "viridis", TypeError, None), ("page", 0, TypeError, None),
        ("layer", 0, TypeError, None), ("layer", b"x", TypeError, None), ("layer", near_miss(layer), KeyError, layer),
        ("layer", "", KeyError, None), ("layer", non_map_layer(probe), traitlets.TraitError, None),
        ("channel", count, traitlets.TraitError, None), ("channel", -1, traitlets.TraitError, None),
        ("channel", True, traitlets.TraitError, None), ("channel", np.True_, traitlets.TraitError, None),
        ("channel", 2.0, traitlets.TraitError, None), ("channel", "1", traitlets.TraitError, None),
        ("box", (0, 0, 0, 4), traitlets.TraitError, None), ("box", (1000, 1000, 4, 4), traitlets.TraitError, None),
        ("box", (math.nan, 0, 4, 4), traitlets.TraitError, None), ("box", "Center", ValueError, None),
        ("box", 5, ValueError, None), ("box", (1, 2, 3), ValueError, None), ("box", (True, 0, 4, 4), ValueError, None),
        ("device", "tpu", ValueError, None), ("device", "cpu0", ValueError, None), ("device", "cpu:1", ValueError, None),
        ("device", None, ValueError, None),
        ("fill", "grey", traitlets.TraitError, "gray"), ("fill", None, traitlets.TraitError, None),
        ("norm", "global", traitlets.TraitError, None), ("cmap", "jet", traitlets.TraitError, None),
        ("show_scores", 1, traitlets.TraitError, None), ("show_scores", None, traitlets.TraitError, None),
        ("top_k", 0, ValueError, None), ("top_k", True, TypeError, None), ("top_k", 2.0, TypeError, None),
        ("outputs", "softmax", ValueError, None), ("outputs", None, TypeError, None),
        ("method", "gradcam", traitlets.TraitError, "grad-cam"), ("method", "lime", traitlets.TraitError, None),
        ("target", -1, traitlets.TraitError, None), ("target", subject.classes, traitlets.TraitError, None),
        ("target", True, traitlets.TraitError, None), ("target", np.True_, traitlets.TraitError, None),
        ("target", 1.0, traitlets.TraitError, None),
        ("method_stride", 0, traitlets.TraitError, None), ("method_stride", True, traitlets.TraitError, None),
        ("method_stride", 2.5, traitlets.TraitError, None), ("method_stride", None, traitlets.TraitError, None),
        ("method_signed", 1, traitlets.TraitError, None),
        ("background", 1, TypeError, None), ("background", None, TypeError, None),
        ("input_size", (3, 32), ValueError, None), ("input_size", (True, 32, 32), ValueError, None),
        ("classes", "abcde", TypeError, None), ("classes", {"a", "b"}, TypeError, None),
        ("classes", ["only one"], ValueError, None),
        ("samples", "x", TypeError, None), ("samples", [picture(0)], TypeError, None),
        ("samples", {1: picture(0)}, TypeError, None),
    ]
    if not torch.cuda.is_available():
        options.append(("device", "cuda", ValueError, None))
    if not torch.backends.mps.is_available():
        options.append(("device", "mps", ValueError, None))
    return options


#: Options the explorer does not have (``page`` is a trait only): Python's own "unexpected keyword argument".
UNKNOWN_OPTIONS = ("Layer", "colormap", "page")

#: What a refused option's message says is accepted, by option.
OPTION_ACCEPTED = {**ACCEPTED, "box": ACCEPTED["box"] + r"|box must be \(x, y, w, h\), None or 'center'",
                   "top_k": r"top_k must be an int >= 1", "outputs": r"outputs must be one of \('auto', 'logits'",
                   "background": r"background must be True .* or False", "input_size": r"three positive ints",
                   "classes": r"sequence of names|not a set|one name per output",
                   "samples": r"samples must (be a mapping|map names) "}


@pytest.mark.parametrize("name, seed, tries", [("sequential", 11, 0), ("training", 12, 0), ("default", 13, 24),
                                               ("tinyvgg", 14, 16)])
def test_invalid_options_are_refused_and_leave_the_model_as_it_was(name, seed, tries):
    """``tries`` options drawn from the pool (0: every one of them)."""
    subject_ = subject(name)
    snapshot = UserModelSnapshot.take(subject_.model)
    rng = random.Random(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        probe = subject_.make()
        pool = invalid_options(subject_, probe)
        probe.close()
        for option, value, error, suggested in (rng.sample(pool, tries) if tries else pool):
            what = f"{name}: {option}={value!r}"
            with pytest.raises(error) as info:
                subject_.make(**{option: value})
            message = str(info.value)
            assert option in message, f"{what}: the message does not name it: {message}"
            if option in UNKNOWN_OPTIONS:
                assert "unexpected keyword argument" in message, f"{what}: {message}"
            else:
                assert re.search(OPTION_ACCEPTED[option], message), f"{what}: {message}"
            if suggested is not None:
                assert repr(suggested) in message, f"{what}: does not suggest {suggested!r}: {message}"
            snapshot.assert_unchanged(subject_.model)


@pytest.mark.parametrize("name, seed", [("sequential", 21), ("training", 22), ("default", 23), ("tinyvgg", 24)])
def test_options_in_other_accepted_spellings_open_what_their_plain_values_open(name, seed):
    """NumPy and tensor ints and bools, a box as a list, an array or a tensor, names in other cases, a
    ``torch.device``: the explorer they open holds the plain values and shows what the plain values show."""
    subject_ = subject(name)
    snapshot = UserModelSnapshot.take(subject_.model)
    rng = random.Random(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = subject_.make(box=None)
        layer = rng.choice(list(first.layer_select.options))
        channel = rng.randrange(channels(first, layer))
        w, h = image_size(first)
        first.close()
        box = (rng.randint(0, w - 1), rng.randint(0, h - 1), rng.randint(1, w), rng.randint(1, h))
        target = rng.randrange(subject_.classes)
        plain = dict(layer=layer, channel=channel, box=expected_box(box, w, h), fill="blur", norm="layer",
                     cmap="magma", target=target, method="grad-cam", method_stride=4, device="cpu",
                     show_scores=True, method_signed=False)
        spelled = dict(layer=np.str_(layer), channel=np.int64(channel),
                       box=rng.choice([list(box), np.array(box), torch.tensor(box), tuple(np.float32(v) for v in box)]),
                       fill="Blur", norm="LAYER", cmap="Magma", target=torch.tensor([target]), method="Grad_CAM",
                       method_stride=np.int32(4), device=rng.choice([torch.device("cpu"), "cpu:0", "auto"]),
                       show_scores=np.bool_(True), method_signed=np.bool_(False))
        a, b = subject_.make(**plain), subject_.make(**spelled)
    try:
        assert traits(a) == traits(b)
        assert a.state() == b.state()
        for read in ("activations", "grid_image", "channel_image", "input_image"):
            assert np.array_equal(getattr(a, read), getattr(b, read)), read
        assert np.array_equal(a.scores["probs"], b.scores["probs"]) and a.scores["rows"] == b.scores["rows"]
        assert a.method_result is not None and b.method_result is not None, (a.method_error, b.method_error)
        np.testing.assert_allclose(a.method_result.heat, b.method_result.heat, rtol=1e-6, atol=1e-7)
    finally:
        a.close()
        b.close()
    snapshot.assert_unchanged(subject_.model)


def test_the_methods_refuse_invalid_arguments_and_change_nothing():
    """``set_image``, ``mark_dead`` and ``wait_idle`` with invalid arguments, in a seeded order: each raises
    the error its docstring names, saying what is wrong, and the explorer shows what it showed."""
    subject_ = subject("sequential")
    snapshot = UserModelSnapshot.take(subject_.model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ex = subject_.make(box=(4, 4, 8, 8), method="grad-cam")
    calls: list[tuple[str, Callable[[], Any], type[BaseException], str]] = [
        ("set_image(None)", lambda: ex.set_image(None), TypeError, "cannot load an image from NoneType; accepted"),
        ("set_image(5)", lambda: ex.set_image(5), TypeError, "cannot load an image from int"),
        ("set_image(name=5)", lambda: ex.set_image(picture(4), name=5), ValueError, "non-empty name"),
        ("set_image(name='')", lambda: ex.set_image(picture(4), name=""), ValueError, "non-empty name"),
        ("set_image(NaN)", lambda: ex.set_image(np.full((8, 8, 3), np.nan)), ValueError, "NaN or infinite"),
        ("set_image(1-D)", lambda: ex.set_image(np.zeros(8, np.uint8)), ValueError, "unsupported image shape"),
        ("set_image(bools)", lambda: ex.set_image(np.zeros((8, 8, 3), bool)), ValueError, "unsupported image dtype"),
        ("set_image(0..255 floats)", lambda: ex.set_image(np.full((8, 8, 3), 200.0)), ValueError, r"\[0, 1\]"),
        ("set_image(no file)", lambda: ex.set_image("/no/such/file.png"), FileNotFoundError, "not found"),
        ("mark_dead('x')", lambda: ex.mark_dead("x"), TypeError, "mark_dead takes"),
        ("mark_dead(near miss)", lambda: ex.mark_dead({"O": [1]}), KeyError, "mark_dead: unknown layer 'O'"),
        ("mark_dead(floats)", lambda: ex.mark_dead({"0": [1.0]}), ValueError, r"channel indices \(ints\)"),
        ("mark_dead(-1)", lambda: ex.mark_dead({"0": [-1]}), ValueError, r"must lie in 0\.\.7"),
        ("mark_dead(9)", lambda: ex.mark_dead({"0": [9]}), ValueError, r"must lie in 0\.\.7"),
        ("mark_dead(2 bools)", lambda: ex.mark_dead({"0": [True, False]}), ValueError, r"has 8 channels"),
        ("mark_dead(None marks)", lambda: ex.mark_dead({"0": None}), ValueError, "channel indices"),
        ("wait_idle('5')", lambda: ex.wait_idle("5"), TypeError, "timeout must be a number"),
        ("wait_idle(NaN)", lambda: ex.wait_idle(math.nan), ValueError, "timeout must be a number"),
    ]
    random.Random(31).shuffle(calls)
    try:
        for what, call, error, pattern in calls:
            seen = Seen.take(ex)
            with pytest.raises(error, match=pattern):
                call()
            seen.assert_same(ex, what)
            assert ex.dead_marks == {}, what
        ex.set_image(picture(5), name="c")  # and it goes on
        assert ex.image == "c" and ex.shown_state == ex.state() and not ex.status.is_error
    finally:
        ex.close()
    snapshot.assert_unchanged(subject_.model)


def test_a_model_with_no_feature_map_is_refused_and_left_as_it_was():
    model = no_conv_net()
    snapshot = UserModelSnapshot.take(model)
    with pytest.raises(ValueError, match=r"the model has no layer with a \(C, H, W\) output"):
        explore(model, picture(0), samples={}, input_size=(3, 32, 32), background=False)
    snapshot.assert_unchanged(model)


def test_explore_with_no_model_refuses_a_near_miss_layer_naming_the_layers():
    with pytest.raises(KeyError, match=r"unknown layer 'Features.conv3'\. Did you mean: 'features.conv3'"):
        explore(layer="Features.conv3", background=False)
    with pytest.raises(KeyError, match=r"unknown layer 'Conv1'\..*Known layers: .*features.conv1"):
        explore(layer="Conv1", background=False)
    # names that differ in case only, or in case and a letter, are suggested too (was: no suggestion for
    # 'FEATURES.CONV3' or 'Features.Conv3', whose case put them too far apart)
    with pytest.raises(KeyError, match=r"unknown layer 'FEATURES.CONV3'\. Did you mean: 'features.conv3'\?"):
        explore(layer="FEATURES.CONV3", background=False)
    with pytest.raises(KeyError, match=r"unknown layer 'Features.Conv3'\. Did you mean: 'features.conv3'"):
        explore(layer="Features.Conv3", background=False)
    ex = explore(background=False)
    try:
        with pytest.raises(traitlets.TraitError, match=r"Did you mean: 'features.conv2'\?"):
            ex.layer = "Features.Conv2"
    finally:
        ex.close()


# ---------------------------------------------------------------- what the fuzz found
@pytest.fixture
def ex():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        explorer = subject("sequential").make(box=(4, 4, 8, 8))
    yield explorer
    explorer.close()


@pytest.mark.parametrize("trait", ["channel", "target", "page", "method_stride"])
def test_a_numpy_bool_is_refused_where_an_int_is_asked(ex, trait):
    before = traits(ex)
    # was: np.True_ was taken as 1 (True itself was refused)
    with pytest.raises(traitlets.TraitError, match=f"{trait}.*(bool|True)"):
        setattr(ex, trait, np.True_)
    assert traits(ex) == before
    with pytest.raises(traitlets.TraitError, match="channel must be an int"):
        subject("sequential").make(channel=np.True_)  # was: opened on channel 1


def test_a_box_set_back_after_a_refused_hold_is_still_ints(ex):
    with pytest.raises(traitlets.TraitError, match="entirely outside"):
        with ex.hold_trait_notifications():
            ex.layer = "0"
            ex.box = (100, 100, 4, 4)
    # was: (4.0, 4.0, 8.0, 8.0): traitlets sets the old value back through the trait's float items
    assert repr(ex.box) == "(4, 4, 8, 8)" and ex.layer == "3"
    assert repr(ex.state().box) == "(4, 4, 8, 8)"


@pytest.mark.parametrize("first", ["channel", "page"])
def test_an_unknown_layer_held_with_a_channel_or_page_is_refused_and_everything_set_back(ex, first):
    before, frame = traits(ex), ex.grid_image
    with pytest.raises(traitlets.TraitError, match=r"^unknown layer 'nope'\. Known layers: 0, 1"):
        with ex.hold_trait_notifications():
            setattr(ex, first, 0)
            ex.overlay = False
            ex.layer = "nope"
    # was: a KeyError in the channel's (page's) check, which traitlets does not roll back: every held change
    # went through, the unknown layer too; the layer menu then raised "'nope' is not an option", the
    # status line said "model: KeyError", and the next `ex.channel = 1` raised KeyError: 'nope'
    assert traits(ex) == before and ex.layer_select.value == "3" and ex.grid_image is frame
    assert not ex.status.is_error, ex.status.message
    ex.channel = 1
    assert ex.shown_state.channel == 1 and not ex.status.is_error


@pytest.mark.parametrize("trait", ["target", "method_stride", "channel"])
def test_true_set_in_a_hold_where_1_is_held_is_refused(ex, trait):
    setattr(ex, trait, 1)
    with pytest.raises(traitlets.TraitError, match=f"{trait}.*True"):
        with ex.hold_trait_notifications():
            setattr(ex, trait, True)  # equal to 1: traitlets checks no further
    # was (target, method_stride): kept, True where an int is asked (in the state too: ExplorerState(target=True));
    # the channel's check ran already
    assert repr(getattr(ex, trait)) == "1" and repr(getattr(ex.state(), trait, 1)) == "1"


def test_names_set_in_a_hold_to_the_value_they_hold_stay_plain_strings(ex):
    with ex.hold_trait_notifications():
        ex.layer = np.str_("3")  # the layer shown: traitlets checks no further
        ex.image = np.str_(ex.image)
        ex.device = torch.device("cpu")
    # was: np.str_('3') (and np.str_('a')), kept as given
    assert repr(ex.layer) == "'3'" and type(ex.image) is str and type(ex.device) is str
    assert type(ex.state().layer) is str


def test_a_layer_that_is_not_a_name_is_refused_saying_which_name_was_meant(ex):
    model = small_classifier()
    # was: TypeError: 'int' object is not iterable
    with pytest.raises(TypeError, match=r"layer must be a layer's name, a str .*got int 0; did you mean '0'\?"):
        explore(model, picture(0), samples={}, input_size=(3, 32, 32), layer=0, background=False)
    # was: TypeError: 'in <string>' requires string as left operand, not bytes
    with pytest.raises(TypeError, match=r"layer must be a layer's name, a str .*got bytes b'0'"):
        explore(model, picture(0), samples={}, input_size=(3, 32, 32), layer=b"0", background=False)
    # was: "The 'layer' trait of an Explorer instance expected a unicode string, not the int 0."
    with pytest.raises(traitlets.TraitError, match=r"got int 0; did you mean '0'\?"):
        ex.layer = 0
    # was: taken, decoded to '0'
    with pytest.raises(traitlets.TraitError, match=r"layer must be a layer's name, a str"):
        ex.layer = b"0"
    with pytest.raises(traitlets.TraitError, match=r"that module is the layer '0': pass its name"):
        ex.layer = ex.probe.user_model[0]
    # was: "unknown layer np.str_('nope')"
    with pytest.raises(traitlets.TraitError, match=r"^unknown layer 'nope'\."):
        ex.layer = np.str_("nope")
    assert ex.layer == "3"


def test_an_occlusion_map_with_a_stride_beyond_the_image_is_computed(ex):
    ex.method = "occlusion"
    ex.method_stride = 2**62  # any positive int is taken
    # was: "method 'occlusion': OverflowError: Python int too large to convert to C long"
    assert ex.method_error is None and not ex.status.is_error, ex.status.message
    huge = ex.method_result
    assert huge is not None and huge.occlusion.drop.shape == (1, 1)
    ex.method_stride = 32  # the image's side: the same one position
    np.testing.assert_array_equal(ex.method_result.heat, huge.heat)


def test_samples_that_are_not_names_to_images_are_refused():
    model = small_classifier()
    # was: ValueError: dictionary update sequence element #0 has length 1; 2 is required
    with pytest.raises(TypeError, match=r"samples must be a mapping \{name: image\} .*got str"):
        explore(model, samples="x", input_size=(3, 32, 32), background=False)
    # was: "The 'value' trait of an ImagePicker instance expected a unicode string, not the int 1."
    with pytest.raises(TypeError, match=r"samples must map names \(non-empty strs\) to images, got the name 1"):
        explore(model, samples={1: picture(0)}, input_size=(3, 32, 32), background=False)


def test_a_bool_page_is_refused_as_a_bool(ex):
    # was: "page True out of range for layer '3': accepted only 0"
    with pytest.raises(traitlets.TraitError, match=r"page must be an int, not a bool \(got True\)"):
        ex.page = True


def test_near_miss_names_are_suggested_and_colormaps_take_any_case(ex):
    # was: no suggestion
    with pytest.raises(traitlets.TraitError, match=r"\['gray', .*not the str 'grey'\. Did you mean 'gray'\?"):
        ex.fill = "grey"
    with pytest.raises(traitlets.TraitError, match=r"Did you mean 'grad-cam'\?"):
        ex.method = "gradcam"
    ex.cmap = "Magma"  # was: refused, while ex.fill = "Gray" and ex.method = "Grad-CAM" were taken
    assert ex.cmap == "magma" and ex.shown_state.cmap == "magma"
    with pytest.raises(traitlets.TraitError, match=r"expected any of \['viridis'"):
        ex.cmap = "jet"  # no close name: no suggestion
    assert ex.cmap == "magma"


def test_the_device_trait_takes_a_torch_device_as_the_constructor_does(ex):
    ex.device = torch.device("cpu")  # was: "expected a unicode string, not the device device(type='cpu')"
    assert ex.device == "cpu" and type(ex.device) is str
    with pytest.raises(traitlets.TraitError, match=r"device must be a device's name \('auto', 'cpu'.*or a "
                                                   r"torch.device, got int 0"):
        ex.device = 0  # was: "expected a unicode string, not the int 0"


def test_a_model_class_or_a_state_dict_given_for_the_model_is_told_what_to_pass():
    # was: "explore needs a torch.nn.Module or a cnnwidgets.zoo Bundle, got type"
    with pytest.raises(TypeError, match=r"got the class itself: pass Sequential\(...\)"):
        explore(nn.Sequential, picture(0), background=False)
    # was: "... got OrderedDict"
    with pytest.raises(TypeError, match=r"not a state dict .*model.load_state_dict\(state_dict\)"):
        explore(small_classifier().state_dict(), picture(0), background=False)


def test_wait_idle_refuses_a_timeout_that_is_no_number(ex):
    # was: TypeError: unsupported operand type(s) for +: 'float' and 'str'
    with pytest.raises(TypeError, match="timeout must be a number of seconds, or None"):
        ex.wait_idle("5")
    with pytest.raises(ValueError, match="got NaN"):  # was: returned at once
        ex.wait_idle(math.nan)
    assert ex.wait_idle(0) and ex.wait_idle(None)


def test_a_huge_box_number_is_written_as_a_float_in_the_message(ex):
    # was: the number's 301 digits
    with pytest.raises(traitlets.TraitError, match=r"the occluder box \(1e\+300, 0, 4, 4\) lies entirely outside"):
        ex.box = (1e300, 0, 4, 4)


def test_close_leaves_no_hook_on_the_users_model():
    model = small_classifier()
    before = hook_dicts(model)
    explorer = explore(model, picture(0), samples={}, input_size=(3, 32, 32), background=False, method="grad-cam")
    with pytest.raises(traitlets.TraitError):
        explorer.layer = "Conv1"
    explorer.close()
    assert hook_dicts(model) == before
