"""A seeded oracle fuzz test of what the filter and experiment views show.

What it drives: on small seeded models and images (a five-convolution net with an RGB layer, a
full grid, a grouped and a depthwise convolution, and the two-convolution classifier of the
helpers on 16 px images), open views (``kernel_view``, ``actmax_view``, ``summary_view``,
``topk_view``, ``evolution_view``, ``invariance_view``, ``correspondence_view``) and a seeded random
user who sets each setting to random valid values in random order (no choice included), through
the view's trait or through its control (menu, box, slider, checkbox, the top-k view's arrows),
presses Run, and, for a live evolution view, trains a little and records a new epoch (before the
others, between them, or an old one again). The views are opened with random options (tile, width
and height, class names, a ``denormalize`` that returns (C, H, W), labelled figures). ``plot_topk``
and ``plot_part_boxes`` are drawn for random channels and parts.

The oracles, computed by the test on the same model and data with the same options:

* every setting shows the value it was given (or the one the docstring says it moves to: an
  ``out ch.`` the new layer does not have goes back to -1, a ``channel`` beyond the new target's to
  its last, a transformation to its identity step, a followed recording to the new epoch), its
  control shows it too, and the status line is not an error;
* kernel view: each tile of the picture is the kernel the chosen layer, ``out ch.``, scale and
  colours give (``kernels`` drawn with the documented colour rules), at the place the documented
  layout (tiles in row-major order, ``N to a line``, a block per output channel) puts it, and the
  picture is as large as that layout says;
* actmax view: the channel box's bound is the target's channel count, and after Run the picture is
  ``maximize_activation``'s image for the chosen target and steps, enlarged by a whole factor;
* summary view: the rows are ``summary``'s rows; a filter shows the rows holding its text (all the
  rows ``Summary.filter`` keeps among them) and the table and count say as many;
* top-k view: the picture is ``topk_mosaic`` of ``topk_panel`` for the chosen channel, and the
  table lists ``entries`` of that channel in ranking order;
* evolution view: the picture is ``evolution_mosaic`` of ``evolution_blocks`` for the recorded
  epochs up to the chosen one, the slider sits on that epoch;
* invariance view: the readout is the result's values at the chosen step, the step label
  ``describe_transform`` of its value, the transformed images ``transform_images`` of the images,
  and the curves ``invariance_figure`` marked at the step;
* correspondence view: the boxes drawn are those of the chosen part (every part for none), in its
  colour, and its box is filled with the occluder value when ``occluded`` is on;
* ``plot_topk`` draws, per chosen channel, ``topk_mosaic`` of ``topk_panel`` at tile 1 under its
  title; ``plot_part_boxes`` draws each image with one rectangle per part around its box, in the
  part's colour.

The small tests after the fuzz pin down what it found.
"""

from __future__ import annotations

import html
import io
import math
import random
import re
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from cnnwidgets.app.experiments import (
    correspondence_view,
    display_image,
    evolution_blocks,
    evolution_view,
    invariance_view,
    plot_part_boxes,
    plot_topk,
    topk_panel,
    topk_view,
)
from cnnwidgets.app.filters import CLASS_TARGET, actmax_view, kernel_view, summary_view
from cnnwidgets.core.targets import ChannelActivation, ClassLogit
from cnnwidgets.methods.actmax import maximize_activation
from cnnwidgets.methods.correspondence import correspondence
from cnnwidgets.methods.evolution import FeatureEvolutionRecorder
from cnnwidgets.methods.invariance import describe_transform, invariance_curves, transform_images
from cnnwidgets.methods.kernels import kernels
from cnnwidgets.methods.summary import summary
from cnnwidgets.methods.topk import scan_topk
from cnnwidgets.render.figures import (
    evolution_figure,
    evolution_mosaic,
    figure_to_array,
    image_to_rgb,
    invariance_figure,
    part_colour,
    tile_grid,
    topk_mosaic,
)
from cnnwidgets.render.kernels import signed_to_rgb
from tests.helpers import small_classifier

SEEDS = [0, 1, 2]

# the seeded nets are untrained: some channels are inactive, some targets do not rise (said, not the point)
pytestmark = [
    pytest.mark.filterwarnings("ignore::cnnwidgets.methods.InactiveChannelWarning"),
    pytest.mark.filterwarnings("ignore::cnnwidgets.methods.actmax.ZeroGradientWarning"),
]


def decode(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as picture:
        return np.asarray(picture.convert("RGB"), dtype=np.uint8)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Floats in [0, 1] as the ``uint8`` a picture holds (``round(v * 255)``)."""
    return np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)


def table_rows(markup: str) -> list[list[str]]:
    """The body rows of an HTML table, as the unescaped texts of their cells."""
    rows = []
    for row in re.findall(r"<tr>(.*?)</tr>", markup, flags=re.S):
        cells = re.findall(r"<td[^>]*>(.*?)</td>", row, flags=re.S)
        if cells:
            rows.append([html.unescape(c) for c in cells])
    return rows


def images16(n: int, seed: int = 3) -> torch.Tensor:
    return torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


# ============================================================================ kernel view
def kernel_net() -> nn.Module:
    torch.manual_seed(11)
    return nn.Sequential(
        nn.Conv2d(3, 5, 3, padding=1),  # "0": RGB tiles
        nn.ReLU(),
        nn.Conv2d(5, 7, 3, padding=1),  # "2": a grid of 7 x 5 slices
        nn.Conv2d(7, 6, (1, 2)),  # "3": 1x2 kernels
        nn.Conv2d(6, 6, 3, padding=1, groups=3),  # "4": grouped, 2 slices per output channel
        nn.Conv2d(6, 6, 3, padding=1, groups=6),  # "5": depthwise, 1 slice per output channel
    ).eval()


def gray_rule(values: np.ndarray) -> np.ndarray:
    """The documented rule of grey levels and RGB tiles: ``round((v + 1) / 2 * 255)``."""
    return np.rint((np.clip(values, -1, 1) + 1) * 127.5).astype(np.uint8)


def expected_kernel_tiles(model, layer, out_channel, normalize, cmap) -> tuple[str, list[list[np.ndarray]]]:
    """``("flat", [[tile, ...]])`` or ``("grid", [[tile of input j of output o, ...] per o])``:
    what the kernel view is to draw for the state, from ``kernels`` and the colour rules."""
    k = kernels(model, layer, out_channel=None if out_channel < 0 else out_channel, normalize=normalize)
    if k.layout == "rgb":
        return "flat", [[gray_rule(v) for v in k.values]]
    if k.layout == "slices":
        return "flat", [[signed_to_rgb(v, cmap) for v in k.values]]
    if k.values.shape[1] == 1:  # one slice per output channel: one tile each
        return "flat", [[signed_to_rgb(v[0], cmap) for v in k.values]]
    return "grid", [[signed_to_rgb(s, cmap) for s in row] for row in k.values]


def check_kernel_picture(view, model, width: int, height: int, tile: int) -> None:
    kind, rows = expected_kernel_tiles(model, view.layer, view.out_channel, view.normalize, view.colormap)
    picture = view.image
    assert picture is not None, view.status
    h, w = rows[0][0].shape[:2]
    status = view.status
    if kind == "flat":
        tiles = rows[0]
        cols = int(re.search(r"in row-major order, (\d+) to a line", status).group(1))
        shown = re.search(r"showing (?:input slices|output channels) 0-(\d+) of (\d+)", status)
        count = int(shown.group(1)) + 1 if shown else len(tiles)
        if shown:
            assert int(shown.group(2)) == len(tiles)
        zoom = ((picture.shape[1] - 1) // cols - 1) // w
        lines = math.ceil(count / cols)
        assert picture.shape[:2] == (lines * (h * zoom + 1) + 1, cols * (w * zoom + 1) + 1), status
        places = [(t, (t // cols) * (h * zoom + 1) + 1, (t % cols) * (w * zoom + 1) + 1) for t in range(count)]
        drawn = [tiles[t] for t in range(count)]
    else:
        o, i = len(rows), len(rows[0])
        wrapped = re.search(rf"block of its {i} input slices, (\d+) to a line", status)
        cols = int(wrapped.group(1)) if wrapped else i
        lines = math.ceil(i / cols)
        gap = 3 if lines > 1 else 0
        shown = re.search(r"showing output channels 0-(\d+) of (\d+)", status)
        count = int(shown.group(1)) + 1 if shown else o
        zoom = ((picture.shape[1] - 1) // cols - 1) // w
        block = lines * (h * zoom + 1)
        assert picture.shape[:2] == (count * block + (count - 1) * gap + 1, cols * (w * zoom + 1) + 1), status
        places, drawn = [], []
        for r in range(count):
            for j in range(i):
                places.append(((r, j), 1 + r * (block + gap) + (j // cols) * (h * zoom + 1),
                               1 + (j % cols) * (w * zoom + 1)))
                drawn.append(rows[r][j])
    assert zoom >= 1
    assert zoom <= max(1, tile // max(h, w)), (zoom, status)  # never larger than the tile asks
    if (kind == "flat" and lines > 1) or (kind == "grid" and count > 1):
        assert picture.shape[0] <= height, status  # more than one line (block) only where they fit
    if zoom * w + 2 <= width:
        assert picture.shape[1] <= width, status
    for (where, y, x), expected in zip(places, drawn):
        big = expected.repeat(zoom, axis=0).repeat(zoom, axis=1)
        got = picture[y:y + h * zoom, x:x + w * zoom]
        assert np.array_equal(got, big), (view.layer, view.out_channel, view.normalize, view.colormap, where, status)


@pytest.mark.parametrize("seed", SEEDS)
def test_kernel_view_shows_the_kernels_of_the_chosen_settings(seed):
    rng = random.Random(seed)
    model = kernel_net()
    width, height, tile = rng.choice([(480, 960, 48), (90, 200, 24), (60, 70, 20)])
    counts = {"0": 5, "2": 7, "3": 6, "4": 6, "5": 6}
    view = kernel_view(model, width=width, height=height, tile=tile)
    try:
        assert view.layers == list(counts)
        for _ in range(14):
            setting = rng.choice(["layer", "normalize", "out_channel", "colormap"]) if view.layer else "layer"
            by_control = rng.random() < 0.5
            before = view.out_channel
            if setting == "layer" and rng.random() < 0.15:
                view.layer = None  # no layer: no picture, and the status line says why
                assert view.image is None and not view.error and view.out_channels == 0
                assert view.status == "no layer chosen: pick a convolution layer in the menu"
                continue
            if setting == "layer":
                value = rng.choice(view.layers)
                expected_out = -1 if before >= counts[value] else before
                control = view._layer_menu
            elif setting == "normalize":
                value = rng.choice(["layer", "filter", "slice"])
                expected_out, control = before, view._normalize_menu
            elif setting == "out_channel":
                value = rng.randrange(-1, counts[view.layer])
                expected_out, control = value, view._channel_box
            else:
                value = rng.choice(["gray", "diverging"])
                expected_out, control = before, view._colormap_menu
            if by_control:
                control.value = value
            else:
                setattr(view, setting, value)
            assert getattr(view, setting) == value
            assert view.out_channel == expected_out and view._channel_box.value == expected_out
            assert view.out_channels == counts[view.layer] and view._channel_box.max == counts[view.layer] - 1
            assert (view._layer_menu.value, view._normalize_menu.value, view._colormap_menu.value) == (
                view.layer, view.normalize, view.colormap)
            assert not view.error, view.status
            check_kernel_picture(view, model, width, height, tile)
    finally:
        view.close()


# ============================================================================ actmax view
SIZE = 16


def actmax_picture(model, target, steps: int) -> np.ndarray:
    result = maximize_activation(model, target, steps=steps, size=SIZE, progress=False)
    return to_uint8(result.rgb)


@pytest.mark.parametrize("seed", SEEDS)
def test_actmax_view_shows_the_image_of_the_chosen_target(seed):
    rng = random.Random(seed)
    model = small_classifier()
    with torch.no_grad():
        maps = {name: out.shape[1] for name, out in _outputs(model, torch.zeros(1, 3, SIZE, SIZE)).items()}
    view = actmax_view(model, size=SIZE, background=False, steps=2)
    try:
        layers = [name for name in view.layers if name != CLASS_TARGET]
        assert view.layers[-1] == CLASS_TARGET and set(layers) <= set(maps)
        counts = {**{name: maps[name] for name in layers}, CLASS_TARGET: 5}
        shown = None  # (target words, picture) of the last run
        for _ in range(10):
            action = rng.choice(["layer", "channel", "steps", "run", "run"])
            if action == "layer":
                value = rng.choice(view.layers)
                channel = min(view.channel, counts[value] - 1)
                if rng.random() < 0.5:
                    view._layer_menu.value = value
                else:
                    view.layer = value
                assert view.layer == value and view.channel == channel == view._channel_box.value
            elif action == "channel":
                value = rng.randrange(counts[view.layer])
                if rng.random() < 0.5:
                    view._channel_box.value = value
                else:
                    view.channel = value
                assert view.channel == value
            elif action == "steps":
                value = rng.randint(1, 3)
                view.steps = value
                assert view.steps == value == view._steps_box.value
            else:
                view.running = True  # Run (background=False: the run is done on return)
                assert not view.running and not view.error, view.status
                target = (ClassLogit(view.channel) if view.layer == CLASS_TARGET
                          else ChannelActivation(view.layer, view.channel))
                expected = actmax_picture(model, target, view.steps)
                picture = view.image
                factor = picture.shape[0] // SIZE
                assert factor >= 1 and picture.shape == (SIZE * factor, SIZE * factor, 3)
                assert np.array_equal(picture, expected.repeat(factor, 0).repeat(factor, 1))
                words = (f"class {view.channel}" if view.layer == CLASS_TARGET
                         else f"layer {view.layer!r} channel {view.channel}")
                assert view.status.startswith(f"done after {view.steps} steps for {words}:"), view.status
                shown = (words, picture)
            assert view.channels == counts[view.layer] and view._channel_box.max == counts[view.layer] - 1
            assert not view.error, view.status
            if shown is not None and action != "run":
                assert np.array_equal(view.image, shown[1])  # the last run's picture stays
                words = (f"class {view.channel}" if view.layer == CLASS_TARGET
                         else f"layer {view.layer!r} channel {view.channel}")
                if words != shown[0]:
                    assert f"The image shown is for {shown[0]}; press Run to synthesise one for {words}" in view.status
                else:
                    assert "The image shown is for" not in view.status
    finally:
        view.close()


def _outputs(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The output of every child of a sequential model on ``x``."""
    outputs = {}
    for name, module in model.named_children():
        x = module(x)
        outputs[name] = x
    return outputs


# ============================================================================ summary view
@pytest.mark.parametrize("seed", SEEDS)
def test_summary_view_shows_the_rows_of_summary(seed):
    rng = random.Random(seed)
    model = kernel_net() if seed % 2 else small_classifier()
    table = summary(model, (3, SIZE, SIZE))
    view = summary_view(model, (3, SIZE, SIZE))
    try:
        expected = [list(row) for row in table.cells()]
        assert view.columns == list(table.columns) and view.cells == expected
        words = sorted({part for row in expected for cell in row for part in cell.lower().split()} | {"", "zz"})
        for _ in range(8):
            text = rng.choice(words)
            text = text[: rng.randint(1, max(1, len(text)))] if text and rng.random() < 0.5 else text
            if rng.random() < 0.5:
                view._filter_box.value = text
            else:
                view.filter_text = text
            assert view.filter_text == text
            visible = view.visible_rows()
            assert visible == [row for row in expected if any(text.strip().lower() in cell.lower() for cell in row)]
            kept = [list(row) for row in table.filter(text).cells()]
            assert all(row in visible for row in kept)
            assert view.shown == len(visible)
            assert table_rows(view._table.value) == visible
            assert f"{len(visible)} of {len(expected)} layers" in html.unescape(view._footer.value)
    finally:
        view.close()


# ============================================================================ top-k view
@pytest.fixture(scope="module")
def scanned():
    model = small_classifier()
    x = images16(6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        topk = scan_topk(model, (x, torch.tensor([0, 3, 4, 1, 2, 2])), ["1", "4"], k=4, progress=False)
    return model, x, topk


def channels_first(t: torch.Tensor) -> torch.Tensor:
    """An inverse preprocessing that returns the image as (C, H, W), which ``denormalize`` may."""
    return (t * 0.25 + 0.5).clamp(0, 1)


def check_topk(view, model, topk, tile: int, denormalize=None, class_names=None) -> None:
    layer, channel = view.layer, view.channel
    if layer is None:
        assert view.image is None and view.caption == "" and not view.error
        assert view.status == "no layer chosen: pick a scanned layer in the menu"
        return
    # the oracle's denormalize returns the documented (H, W, 3)
    oracle = None if denormalize is None else (lambda t: denormalize(t).permute(1, 2, 0))
    projections, patches = topk_panel(topk, layer, channel, model, denormalize=oracle)
    assert np.array_equal(view.image, topk_mosaic(projections, patches, tile=tile)), (layer, channel)
    entries = topk.entries(layer, channel)
    rows = table_rows(view.caption)
    assert [row[0] for row in rows] == [str(n + 1) for n in range(len(entries))]
    assert [(int(r[2]), r[3]) for r in rows] == [(e.image_index, f"({e.row}, {e.col})") for e in entries]
    assert [float(r[1]) for r in rows] == pytest.approx([e.value for e in entries], rel=1e-3, abs=1e-3)
    names = class_names or [str(n) for n in range(5)]
    assert [r[4] for r in rows] == [f"{names[e.label]} ({e.label})" if class_names else str(e.label) for e in entries]
    values = [e.value for e in entries]
    assert values == sorted(values, reverse=True)
    assert view.status.startswith(f"{layer} channel {channel}: projections (left) and patches (right)"), view.status
    assert not view.error


@pytest.mark.parametrize("seed", SEEDS)
def test_topk_view_shows_the_entries_of_the_chosen_channel(seed, scanned):
    rng = random.Random(seed)
    model, _, topk = scanned
    tile = rng.choice([56, 20])
    # the patches of layer "1" are 3 x 3: a (C, H, W) denormalize must still be read as such
    denormalize = channels_first if seed % 2 else None
    class_names = ["cat", "dog", "emu", "fox", "gnu"] if seed > 0 else None
    counts = {name: topk.num_channels(name) for name in ("1", "4")}
    view = topk_view(topk, model, tile=tile, denormalize=denormalize, class_names=class_names)
    try:
        for _ in range(12):
            action = rng.choice(["layer", "channel", "next", "prev", "step"]) if view.layer is not None else "layer"
            channel = view.channel
            if action == "layer":
                value = rng.choice([*view.layers, None])
                if value is None:
                    view.layer = None
                    check_topk(view, model, topk, tile)
                    continue
                expected = channel if channel < counts[value] else 0
                if rng.random() < 0.5:
                    view._layer_menu.value = value
                else:
                    view.layer = value
                assert view.layer == value
            elif action == "channel":
                expected = rng.randrange(counts[view.layer])
                if rng.random() < 0.5:
                    view._channel_box.value = expected
                else:
                    view.channel = expected
            elif action in ("next", "prev"):
                expected = (channel + (1 if action == "next" else -1)) % counts[view.layer]
                (view._next if action == "next" else view._prev).click()
            else:
                delta = rng.randint(-20, 20)
                expected = (channel + delta) % counts[view.layer]
                view.step(delta)
            assert view.channel == expected == view._channel_box.value, action
            assert view.num_channels == counts[view.layer] and view._channel_box.max == counts[view.layer] - 1
            check_topk(view, model, topk, tile, denormalize, class_names)
    finally:
        view.close()


# ============================================================================ evolution view
@pytest.mark.parametrize("seed", SEEDS)
def test_evolution_view_shows_the_recorded_frames_up_to_the_chosen_epoch(seed):
    rng = random.Random(seed)
    model = small_classifier()
    x = images16(2, seed=5)
    tile = rng.choice([16, 24])
    projection = rng.choice(["auto", None])
    labelled = seed == 2  # a figure: slower, one seed
    recorder = FeatureEvolutionRecorder(model, x, {"1": [0, 3], "4": [1], "7": [4, 2]}, epochs=None,
                                        projection=projection)
    try:
        recorder.record(0)
        view = evolution_view(recorder, labelled=labelled, tile=tile, dpi=30)
        try:
            assert view.projections == (projection is not None)
            assert view.show == ("projection" if projection is not None else "patch")
            recorded = [0]
            for _ in range(10):
                action = rng.choice(["epoch", "slider", "show", "follow", "record", "record", "again"])
                epoch = view.epoch
                if action == "epoch":
                    epoch = rng.choice(recorded)
                    view.epoch = epoch
                elif action == "slider":
                    position = rng.randrange(len(recorded))
                    view._slider.value = position
                    epoch = recorded[position]
                elif action == "show" and view.projections:
                    value = rng.choice(["projection", "patch"])
                    if rng.random() < 0.5:
                        view._show_menu.value = value
                    else:
                        view.show = value
                    assert view.show == value
                elif action == "follow":
                    value = rng.random() < 0.5
                    if rng.random() < 0.5:
                        view._follow_box.value = value
                    else:
                        view.follow = value
                    assert view.follow == value
                elif action in ("record", "again"):
                    with torch.no_grad():
                        model[0].weight.add_(0.05 * torch.randn(model[0].weight.shape,
                                                                generator=torch.Generator().manual_seed(len(recorded))))
                    new = action == "record"
                    # a new epoch, mostly after the others, now and then between them
                    at = (rng.choice([recorded[-1] + rng.randint(1, 3), *sorted(set(range(recorded[-1])) - set(recorded))])
                          if new else rng.choice(recorded))
                    recorder.record(at)
                    if new:
                        recorded = sorted([*recorded, at])
                        if view.follow:
                            epoch = at
                assert view.epochs == recorded
                assert view.epoch == epoch, action
                assert view._slider.value == recorded.index(epoch) and view._label.value == str(epoch)
                assert not view.error, view.status
                columns = [e for e in recorded if e <= epoch]
                evolution = recorder.result()
                blocks = evolution_blocks(evolution, columns, show=view.show)
                if labelled:  # the figure of plot_evolution, without its title, at the view's cell size
                    figure = evolution_figure(blocks, columns, evolution.channels, title=None, cell_inches=tile / 30,
                                              row_labels={"7": evolution.row_labels("7")})
                    assert np.array_equal(view.image, figure_to_array(figure, dpi=30)), (action, columns)
                    assert view.status.startswith(f"epochs {columns}: "), view.status
                else:
                    assert np.array_equal(view.image, evolution_mosaic(blocks, tile=tile)), (action, columns)
                    assert view.status.startswith(f"epochs {columns} (columns)"), view.status
        finally:
            view.close()
    finally:
        recorder.close()


# ============================================================================ invariance view
TRANSFORMS = {"translation": [-3.0, 0.0, 3.0], "rotation": [-90.0, -30.0, 0.0, 45.0], "scale": [0.8, 1.0, 1.25]}


@pytest.fixture(scope="module")
def curves():
    model = small_classifier()
    x = images16(3, seed=7)
    result = invariance_curves(model, x, [0, 2, 4], ["1", "4"], transforms=TRANSFORMS, progress=False)
    return model, x, result


@pytest.mark.parametrize("seed", SEEDS)
def test_invariance_view_shows_the_values_at_the_chosen_step(seed, curves):
    rng = random.Random(seed)
    _, x, result = curves
    names = ["a", "b", "c"]
    view = invariance_view(result, x, image_names=names, dpi=20)
    try:
        previous = None
        for n in range(6):
            if n > 0 and rng.random() < 0.1:
                view.transform = None  # the curves stay; the step's images and readout go
                assert view.image is not None and view.examples_png == b"" and view.readout == ""
                assert view.status.endswith("no transformation chosen: pick one in the menu") and not view.error
                continue
            if n == 0 or view.transform is None or rng.random() < 0.4:
                kind = rng.choice(list(TRANSFORMS))
                if rng.random() < 0.5:
                    view._menu.value = kind
                else:
                    view.transform = kind
                step = (view.step if kind == previous
                        else int(np.argmin([abs(math.log(v)) if kind == "scale" else abs(v) for v in TRANSFORMS[kind]])))
            else:
                kind, step = view.transform, rng.randrange(len(TRANSFORMS[view.transform]))
                if rng.random() < 0.5:
                    view._slider.value = step
                else:
                    view.step = step
            previous, marked = kind, (kind, step)
            assert view.transform == kind and view.step == step == view._slider.value
            assert view.num_steps == len(TRANSFORMS[kind]) and not view.error, view.status
            value = TRANSFORMS[kind][step]
            assert view._step_label.value == describe_transform(kind, value)
            rows = table_rows(view.readout)
            assert [r[0] for r in rows] == names
            for i, row in enumerate(rows):
                assert row[1:3] == [f"{result.distances[kind][layer][step, i]:.4g}" for layer in ("1", "4")]
                label = int(result.labels[i])
                assert row[3] == f"{result.probabilities[kind][step, i]:.3f} ({label})"
                assert row[4] == str(int(result.predictions[kind][step, i]))
            moved = transform_images(x, kind, value, interpolation=result.interpolation, fill=result.fill)
            tiles = [image_to_rgb(img.numpy()) for img in moved]
            factor = -(-96 // SIZE)
            strip = tile_grid([t.repeat(factor, 0).repeat(factor, 1) for t in tiles], len(tiles), pad=2)
            assert np.array_equal(decode(view.examples_png), to_uint8(strip)), (kind, step)
        figure = invariance_figure(result.values, result.distances, result.probabilities, units=result.units,
                                   image_names=names, normalized=result.normalized,
                                   marker={marked[0]: float(TRANSFORMS[marked[0]][marked[1]])})
        # the curves are marked at the last step shown (kept while no transformation is chosen)
        assert np.array_equal(view.image, figure_to_array(figure, dpi=20))
    finally:
        view.close()


# ============================================================================ correspondence view
PARTS = {"eye": [(1, 1, 6, 6), (2, 1, 7, 6), (1, 2, 6, 7)], "nose": [(8, 8, 14, 15), (9, 8, 15, 14), (8, 9, 14, 14)]}


@pytest.fixture(scope="module")
def table():
    model = small_classifier()
    # grey images in [0, 1]: shown as they are, so only the boxes have colour
    grey = torch.rand(3, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(9)) * 0.8 + 0.1
    x = grey.repeat(1, 3, 1, 1)
    return x, correspondence(model, x, PARTS, ["1", "4"], random_trials=1, progress=False)


@pytest.mark.parametrize("seed", SEEDS)
def test_correspondence_view_draws_the_chosen_parts_boxes(seed, table):
    rng = random.Random(seed)
    x, result = table
    tile = rng.choice([16, 48, 64])
    factor = -(-tile // SIZE)
    view = correspondence_view(result, x, tile=tile)
    order = list(PARTS)
    try:
        for _ in range(8):
            if rng.random() < 0.6:
                part = rng.choice([None, *order])
                if rng.random() < 0.5:
                    view._menu.index = 0 if part is None else order.index(part) + 1
                else:
                    view.part = part
                assert view.part == part
            else:
                occluded = rng.random() < 0.5
                view.occluded = occluded
                assert view.occluded == occluded
            part = view.part
            assert view._menu.index == (0 if part is None else order.index(part) + 1)
            assert not view.error, view.status
            picture = view.image
            size = SIZE * factor
            assert picture.shape == (size, 3 * size + 4, 3)
            shown = order if part is None else [part]
            assert view.status.startswith("parts: " + ", ".join(shown))
            for i in range(3):
                cell = picture[:, i * (size + 2):i * (size + 2) + size]
                for name in order:
                    colour = np.array(part_colour(order.index(name)), dtype=np.uint8)
                    x0, y0, x1, y1 = (v * factor for v in PARTS[name][i])
                    drawn = np.all(cell == colour, axis=-1)
                    if name in shown:
                        assert drawn[y0, x0:x1].all() and drawn[y1 - 1, x0:x1].all(), (name, i)
                        assert drawn[y0:y1, x0].all() and drawn[y0:y1, x1 - 1].all(), (name, i)
                    else:
                        assert not drawn.any(), (name, i)
                if view.occluded and part is not None:
                    x0, y0, x1, y1 = (v * factor for v in PARTS[part][i])
                    t = max(1, min(max(1, factor // 2), (x1 - x0) // 2, (y1 - y0) // 2))
                    inside = cell[y0 + t:y1 - t, x0 + t:x1 - t]
                    assert inside.size and (inside == 0).all(), (part, i)  # the fill, 0, shown black
                    assert "(occluded)" in view.status
                else:
                    expected = to_uint8(image_to_rgb(x[i].numpy())).repeat(factor, 0).repeat(factor, 1)
                    grey = ~np.any(cell != cell[..., :1], axis=-1)  # the pixels no box covers
                    assert np.array_equal(cell[grey], expected[grey])
    finally:
        view.close()


# ============================================================================ the figures
@pytest.mark.parametrize("seed", SEEDS)
def test_plot_topk_draws_the_panels_of_the_chosen_channels(seed, scanned):
    rng = random.Random(seed)
    model, _, topk = scanned
    layer = rng.choice(["1", "4"])
    chosen = rng.sample(range(topk.num_channels(layer)), rng.randint(1, 3))
    figure = plot_topk(topk, layer, chosen, model if seed else None, columns=rng.randint(1, 3))
    drawn = [ax for ax in figure.axes if ax.images]
    assert len(drawn) == len(chosen)
    for ax, channel in zip(drawn, chosen):
        projections, patches = topk_panel(topk, layer, channel, model if seed else None)
        assert ax.get_title().startswith(f"{layer} · channel {channel}\n")
        assert np.array_equal(to_uint8(np.asarray(ax.images[0].get_array())), topk_mosaic(projections, patches, tile=1))


@pytest.mark.parametrize("seed", SEEDS)
def test_plot_part_boxes_draws_each_parts_box_in_its_colour(seed, table):
    rng = random.Random(seed)
    x, _ = table
    names = rng.sample(list(PARTS), rng.randint(1, 2))
    figure = plot_part_boxes(x, {name: PARTS[name] for name in names}, titles=["a", "b", "c"])
    for i, ax in enumerate(figure.axes):
        assert np.array_equal(to_uint8(np.asarray(ax.images[0].get_array())), to_uint8(image_to_rgb(x[i].numpy())))
        assert ax.get_title() == "abc"[i]
        boxes = [(p.get_xy(), p.get_width(), p.get_height(), tuple(np.round(np.asarray(p.get_edgecolor()[:3]) * 255)))
                 for p in ax.patches]
        expected = []
        for k, name in enumerate(names):
            x0, y0, x1, y1 = PARTS[name][i]
            expected.append(((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, tuple(float(c) for c in part_colour(k))))
        assert boxes == expected


# ============================================================================ what the fuzz found
def test_a_channels_first_denormalize_of_a_3x3_image_is_read_channels_first():
    # was: the (3, 3, 3) result was taken for (H, W, C): the picture showed the patch transposed
    # across its channels (a 3 x 3 patch is what a first 3 x 3 convolution's top-k entries show)
    patch = torch.randn(3, 3, 3, generator=torch.Generator().manual_seed(0))
    expected = channels_first(patch).permute(1, 2, 0).numpy()
    assert np.array_equal(display_image(patch, None, channels_first), expected)
    assert np.array_equal(display_image(patch, None, lambda t: channels_first(t).permute(1, 2, 0)), expected)


@pytest.mark.parametrize("shape", [(3, 5, 3), (3, 1, 1), (1, 3, 3), (3, 4, 1)])
def test_a_channels_first_denormalize_of_an_image_1_or_3_pixels_wide_is_taken(shape):
    # was: ValueError "denormalize must return the image as (C, H, W) or (H, W, C) ...", for a
    # (C, H, W) result it says it takes
    image = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    grey = (lambda t: channels_first(t).repeat(3, 1, 1)) if shape[0] == 1 else channels_first
    expected = grey(image).permute(1, 2, 0).numpy()
    assert np.array_equal(display_image(image, None, grey), expected)


def test_topk_view_with_a_channels_first_denormalize_shows_3x3_patches_as_they_are(scanned):
    # was: the patches of layer "1" (3 x 3) were drawn with their channels and columns swapped
    model, _, topk = scanned
    view = topk_view(topk, model, denormalize=channels_first)
    try:
        view.layer, view.channel = "1", 2
        projections, patches = topk_panel(topk, "1", 2, model, denormalize=lambda t: channels_first(t).permute(1, 2, 0))
        assert patches.shape[1:3] == (3, 3)
        assert np.array_equal(view.image, topk_mosaic(projections, patches, tile=56)) and not view.error
    finally:
        view.close()
