"""A seeded randomized stress test of the explorer: bursts of user actions, then what the user relies on.

Each run opens an explorer with its worker threads on (as a notebook has them), applies a few hundred
random actions in quick succession - as the user and the browser send them: occluder moves and drags,
layer, channel and page picks, display options, class scores, target classes, methods, images, grid
clicks - with short pauses now and then, and checks once the explorer is idle:

* no exception escaped a thread, the status line shows no error and the method panel none either;
* the frame on screen is the final state's, drawn exactly as a fresh explorer draws that state, with the
  activations of the final occluded input at the final layer;
* the method map on screen is the one of the final method inputs, equal to a fresh computation of them;
* a burst of requests costs few computations (states are replaced, never queued);
* after ``close()``: no hook left on the user's model, its weights and training flags unchanged, and no
  explorer thread alive.

The runs use the embedded model, TinyVGG (with the offline test data), resnet18 (untrained, left in
training mode), a slow model and a fully convolutional one shown images of different sizes. The small
deterministic tests at the end pin down what the stress test found.
"""

from __future__ import annotations

import asyncio
import io
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from cnnwidgets import zoo
from cnnwidgets.app import Explorer
from cnnwidgets.app.frames import grid_pages
from cnnwidgets.app.views import MethodRunner
from cnnwidgets.render import NORM_MODES, SEQUENTIAL
from cnnwidgets.widgets.controls import FILLS
from tests.conftest import shared_data_dir
from tests.helpers import UserModelSnapshot as ModelSnapshot

THREAD_NAMES = ("cnnwidgets-explorer", "cnnwidgets-methods")


# ---------------------------------------------------------------- what the user's model looks like before and after

def fresh_method_map(model: nn.Module, request, prepared):
    """The map a new method runner on ``model`` computes for ``request`` on the image ``prepared``."""
    maps, failures = [], []
    runner = MethodRunner(model, {request.image_id: prepared}.__getitem__, on_result=maps.append,
                          on_error=lambda where, exc: failures.append(exc), background=False)
    try:
        runner.submit(request)
    finally:
        runner.close()
    assert not failures and maps, failures
    return maps[-1]


def _explorer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name in THREAD_NAMES and t.is_alive()]


# ---------------------------------------------------------------- the random user
@dataclass
class Run:
    """One stressed explorer: how to make it again, and what the random user asked of it."""

    model: nn.Module
    make: Callable[..., Explorer]  # (image source, **options) -> a synchronous explorer of the same model
    images: dict[str, Any]  # picker name -> source, of the images the user may show
    ex: Explorer
    rng: random.Random
    shown: str = ""  # the picker entry the user picked last
    pause: float = 0.0  # seconds to wait before the next action
    log: list[str] = field(default_factory=list)


def _layers(ex: Explorer) -> list[str]:
    return list(ex.layer_select.options)  # the layer menu's entries


def _channels(ex: Explorer) -> int:
    return ex._channels(ex.layer)


def _size(ex: Explorer) -> tuple[int, int]:
    h, w = ex.input_image.shape[:2]
    return w, h


def _random_box(run: Run) -> tuple | None:
    """A box as the browser or the user sends it: anywhere with a pixel inside the image (also partly
    outside, fractional, 1x1, the whole image, touching each edge), or None."""
    rng = run.rng
    w, h = _size(run.ex)
    kind = rng.random()
    if kind < 0.08:
        return None
    side = rng.randint(1, min(w, h))
    if kind < 0.35:
        x, y = rng.choice([(0, 0), (w - side, 0), (0, h - side), (w - side, h - side), (0, (h - side) // 2)])
        return (x, y, side, side)
    if kind < 0.42:
        return rng.choice([(0, 0, w, h), (w - 1, h - 1, 1, 1), (0, 0, 1, 1), (0, h - 1, w, 1)])
    bw, bh = (side, side) if rng.random() < 0.6 else (rng.randint(1, w), rng.randint(1, h))
    x = rng.uniform(-bw + 1, w - 1)
    y = rng.uniform(-bh + 1, h - 1)
    if rng.random() < 0.5:
        x, y = round(x), round(y)
    return (x, y, bw, bh)


def act_box(run: Run) -> None:
    box = _random_box(run)
    if run.rng.random() < 0.5:
        run.ex.box = box
    else:  # from the browser: the canvas's trait, as a comm message sets it
        run.ex.canvas.set_state({"box": None if box is None else [round(v) for v in box]})
    run.log.append(f"box {box}")


def act_drag(run: Run) -> None:
    """A drag: pressed, moved a few times (once per animation frame), released with the final box."""
    ex, rng = run.ex, run.rng
    w, h = _size(ex)
    box = ex.box or (w // 4, h // 4, max(1, w // 4), max(1, h // 4))
    ex.canvas.set_state({"dragging": True, "box": list(box)})
    for _ in range(rng.randint(1, 12)):
        x = min(max(0, box[0] + rng.randint(-6, 6)), w - box[2])
        y = min(max(0, box[1] + rng.randint(-6, 6)), h - box[3])
        box = (x, y, box[2], box[3])
        ex.canvas.set_state({"box": list(box)})
        if rng.random() < 0.2:
            time.sleep(0.002)
    if rng.random() < 0.85:  # most drags end here; the others later (another action comes first)
        ex.canvas.set_state({"box": list(box), "dragging": False})
    run.log.append(f"drag to {box} (dragging {ex.dragging})")


def act_dragging(run: Run) -> None:
    value = run.rng.random() < 0.5
    run.ex.dragging = value
    run.log.append(f"dragging {value}")


def act_layer(run: Run) -> None:
    layer = run.rng.choice(_layers(run.ex))
    if run.rng.random() < 0.5:
        run.ex.layer = layer
    else:
        run.ex.layer_select.value = layer
    run.log.append(f"layer {layer}")


def act_channel(run: Run) -> None:
    channel = run.rng.randrange(_channels(run.ex))
    if run.rng.random() < 0.5:
        run.ex.channel = channel
    else:
        run.ex.channel_slider.value = channel
    run.log.append(f"channel {channel}")


def act_click(run: Run) -> None:
    """A click on a tile of the grid on screen."""
    channel = run.rng.randrange(_channels(run.ex))
    run.ex.grid.selected = channel
    run.log.append(f"click {channel}")


def act_page(run: Run) -> None:
    pages = grid_pages(_channels(run.ex))
    page = None if run.rng.random() < 0.3 else run.rng.randrange(pages)
    run.ex.page = page
    run.log.append(f"page {page}")


def act_display(run: Run) -> None:
    ex, rng = run.ex, run.rng
    name = rng.choice(["norm", "cmap", "sort", "overlay", "fill"])
    value = {"norm": lambda: rng.choice(list(NORM_MODES)), "cmap": lambda: rng.choice(list(SEQUENTIAL)),
             "sort": lambda: rng.random() < 0.5, "overlay": lambda: rng.random() < 0.5,
             "fill": lambda: rng.choice(list(FILLS))}[name]()
    setattr(ex, name, value)
    run.log.append(f"{name} {value}")


def act_scores(run: Run) -> None:
    value = run.rng.random() < 0.7
    run.ex.show_scores = value
    run.log.append(f"show_scores {value}")


def act_target(run: Run) -> None:
    classes = run.ex._class_count
    target = None if run.rng.random() < 0.3 else run.rng.randrange(classes)
    if run.rng.random() < 0.5:
        run.ex.target = target
    else:  # a click on a score bar
        run.ex.scores_view.selected = target
    run.log.append(f"target {target}")


def act_method(run: Run) -> None:
    ex, rng = run.ex, run.rng
    what = rng.random()
    if what < 0.6:
        method = rng.choice(list(ex.method_view.menu.options))
        ex.method_view.menu.value = method
        run.log.append(f"method {method}")
    elif what < 0.85:
        stride = rng.choice(list(ex.method_view.stride_menu.options))
        ex.method_view.stride_menu.value = stride
        run.log.append(f"stride {stride}")
    else:
        ex.method_signed = not ex.method_signed
        run.log.append(f"signed {ex.method_signed}")


def act_occluder_controls(run: Run) -> None:
    ex, rng = run.ex, run.rng
    if rng.random() < 0.5:
        ex.occluder_controls.enabled = not ex.occluder_controls.enabled
        run.log.append(f"occluder {ex.occluder_controls.enabled}")
    else:
        size = rng.randint(1, int(ex.occluder_controls.max_size))
        ex.occluder_controls.size = size
        run.log.append(f"size {size}")


def act_image(run: Run) -> None:
    name = run.rng.choice(list(run.images))
    if name in run.ex.picker.names and run.rng.random() < 0.5:
        run.ex.image = name  # picked in the picker
    else:
        run.ex.set_image(run.images[name], name=name)
    run.shown = name
    run.log.append(f"image {name}")


def act_filter(run: Run) -> None:
    """Words typed into the layer filter box (the layer menu offers the layers that match)."""
    words = run.rng.choice(["", "", "conv", "relu", "pool", "features", "1", "no such layer"])
    run.ex.layer_filter.value = words
    run.log.append(f"filter {words!r}")


def act_upload(run: Run) -> None:
    """A file uploaded in the browser: one of the images, as PNG bytes."""
    name = run.rng.choice(list(run.images))
    source = run.images[name]
    picture = source if isinstance(source, Image.Image) else Image.fromarray(np.asarray(source))
    data = io.BytesIO()
    picture.convert("RGB").save(data, format="PNG")
    entry = run.ex.picker.add_upload(f"{name}.png", data.getvalue())
    run.images[entry] = Image.open(io.BytesIO(data.getvalue())).convert("RGB")
    run.shown = entry
    run.log.append(f"upload {entry}")


def act_pause(run: Run) -> None:
    """A short pause (the main thread's event loop, when one runs, serves the worker's hand-overs)."""
    run.pause = run.rng.choice([0.0, 0.001, 0.003, 0.01, 0.03])


ACTIONS: list[tuple[Callable[[Run], None], float]] = [
    (act_box, 14), (act_drag, 8), (act_dragging, 2), (act_layer, 8), (act_channel, 8), (act_click, 4),
    (act_page, 3), (act_display, 8), (act_scores, 3), (act_target, 4), (act_method, 8),
    (act_occluder_controls, 3), (act_image, 3), (act_filter, 2), (act_upload, 1), (act_pause, 20),
]


async def stress(run: Run, steps: int) -> None:
    functions, weights = zip(*ACTIONS)
    for _ in range(steps):
        action = run.rng.choices(functions, weights)[0]
        action(run)
        if run.pause:
            await asyncio.sleep(run.pause)
            run.pause = 0.0
    # the user lets go of the occluder at last (a drag in progress holds the method map back)
    run.ex.canvas.set_state({"dragging": False})


# ---------------------------------------------------------------- what the user relies on
def check_idle_explorer(run: Run, errors: list[str]) -> None:
    ex = run.ex
    assert ex.wait_idle(60), f"not idle after the burst; last actions: {run.log[-10:]}"
    assert not errors, errors
    assert not ex.status.is_error, f"{ex.status.message!r} after {run.log[-10:]}"
    assert ex.method_error is None, ex.method_error
    assert "Traceback" not in ex.status.message
    assert ex.image == run.shown

    # the final state is on screen
    state = ex.state()
    assert ex.shown_state == state, (ex.shown_state, state, run.log[-10:])
    assert not ex.grid_busy and not ex.out_of_date

    # ... drawn exactly as a fresh explorer draws it
    fresh = run.make(run.images[run.shown], layer=state.layer, channel=state.channel, box=state.box,
                     fill=state.fill, norm=state.norm, cmap=state.cmap, show_scores=state.show_scores,
                     target=state.target)
    try:
        fresh.sort, fresh.overlay, fresh.page = state.sort, state.overlay, state.page
        assert fresh.wait_idle(60) and not fresh.status.is_error, fresh.status.message
        assert np.array_equal(fresh.input_image, ex.input_image)
        assert np.array_equal(fresh.activations, ex.activations)
        assert np.array_equal(fresh.grid_channels, ex.grid_channels)
        assert np.array_equal(fresh.grid_image, ex.grid_image)
        assert np.array_equal(fresh.channel_image, ex.channel_image)
        if state.show_scores:
            assert np.array_equal(fresh.scores["probs"], ex.scores["probs"])
            assert fresh.scores["rows"] == ex.scores["rows"]
    finally:
        fresh.close()

    # ... with the activations of the final occluded input at the final layer
    prepared = ex._images[ex._image_id]
    x = prepared.tensor if state.box is None else prepared.occluded(state.box, state.fill)
    direct = ex.probe.capture(x, [state.layer], cache=False, channels_first=True)[state.layer][0]
    np.testing.assert_allclose(ex.activations, direct.numpy(), rtol=1e-5, atol=1e-5)

    # the method map is the final method inputs', as a fresh runner computes them
    result = ex.method_result
    request = ex.method_request()
    if ex.method == "none":
        assert result is None
    else:
        assert result is not None, f"no {ex.method} map after {run.log[-10:]}"
        assert result.complete and result.request.key() == request.key(), (result.request, request)
        fresh = fresh_method_map(run.model, request, prepared)
        np.testing.assert_allclose(result.heat, fresh.heat, rtol=1e-5, atol=1e-6, equal_nan=True)
        assert result.target == fresh.target

    # no backlog: a request is computed at most once, and one replaced while waiting never
    stats = ex.stats
    assert stats["errors"] == 0, stats  # nothing failed, not even work that was superseded before it was shown
    assert stats["computes"] + stats["skipped"] <= stats["requests"], stats
    assert stats["renders"] + stats["skipped"] <= stats["requests"], stats


def check_burst_is_not_queued(run: Run) -> None:
    """A burst of occluder moves while the worker is busy: each move replaces the waiting one, so the
    burst costs the frame in progress and one more, whatever its length."""
    ex = run.ex
    assert ex.wait_idle(60)
    ex.dragging = False
    ex.method = "none"
    assert ex.wait_idle(60)
    controller = ex.controller
    entered, release = threading.Event(), threading.Event()
    images = controller._images

    def held(image_id):
        if threading.current_thread().name == "cnnwidgets-explorer" and not release.is_set():
            entered.set()
            release.wait(30)
        return images(image_id)

    controller._images = held
    try:
        before = ex.stats
        w, h = _size(ex)
        ex.box = (0, 0, 2, 2)
        assert entered.wait(30), "the worker did not take the first state"
        moves = 60
        for i in range(moves):
            ex.box = (i % (w - 2), (3 * i) % (h - 2), 3, 3)
    finally:
        release.set()
        controller._images = images
    assert ex.wait_idle(60)
    after = ex.stats
    assert after["requests"] - before["requests"] == moves + 1
    assert after["skipped"] - before["skipped"] == moves - 1  # all but the last move replaced
    assert after["computes"] - before["computes"] <= 2  # the first box and the last one
    assert ex.shown_state == ex.state() and ex.box == ((moves - 1) % (w - 2), (3 * (moves - 1)) % (h - 2), 3, 3)


def check_closed(run: Run, snapshot: ModelSnapshot, errors: list[str]) -> None:
    ex = run.ex
    ex.close()
    deadline = time.monotonic() + 30
    while _explorer_threads() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _explorer_threads(), [t.name for t in _explorer_threads()]
    snapshot.assert_unchanged(run.model)
    assert not errors, errors


def stress_run(make: Callable[..., Explorer], model: nn.Module, images: dict[str, Any], first: str, seed: int,
               steps: int, errors: list[str], *, event_loop: bool, **options: Any) -> None:
    """Open an explorer, stress it twice, check it after each burst, then close it and check the model.

    With ``event_loop`` it is opened and used inside a running asyncio loop, as in a notebook (the
    worker hands widget updates over to that loop, which runs them while the user pauses); without,
    as in a script.
    """
    assert not _explorer_threads()
    snapshot = ModelSnapshot.take(model)

    async def use(ex: Explorer) -> None:
        run = Run(model, make, images, ex, random.Random(seed), shown=ex.image)
        images.setdefault(run.shown, images[first])
        try:
            assert ex.wait_idle(60)
            await stress(run, steps)
            check_idle_explorer(run, errors)
            # and once more after a second burst, from where the first one left the explorer
            await stress(run, steps // 3)
            check_idle_explorer(run, errors)
            check_burst_is_not_queued(run)
        finally:
            check_closed(run, snapshot, errors)

    if event_loop:
        async def in_loop() -> None:
            await use(make(images[first], background=True, **options))

        asyncio.run(in_loop())
    else:
        explorer = make(images[first], background=True, **options)
        assert explorer._main_loop is None
        asyncio.run(use(explorer))


# ---------------------------------------------------------------- the runs
def _shapes() -> tuple[nn.Module, Callable[..., Explorer], dict[str, Any]]:
    bundle = zoo.load_default()
    samples = zoo.samples()

    def make(image, **options):
        options.setdefault("background", False)
        return Explorer(bundle, image, samples=samples, **options)

    return bundle.model, make, dict(samples)


@pytest.mark.parametrize("seed, event_loop", [(1, True), (2, True), (3, True), (4, False), (5, False)])
def test_a_random_burst_of_user_actions_ends_on_the_final_state(seed, event_loop, thread_errors):
    model, make, images = _shapes()
    stress_run(make, model, images, "star", seed, 260, thread_errors, event_loop=event_loop)


def test_a_random_burst_on_trained_tinyvgg(thread_errors):
    folder = shared_data_dir() / "tinyvgg-cnn-explainer"
    if not folder.is_dir():
        pytest.skip(f"offline test data not found at {folder.parent}; set CNNWIDGETS_SHARED_DATA to the folder "
                    "holding tinyvgg-cnn-explainer/")
    from cnnwidgets.core.images import load_image

    bundle = zoo.load_tinyvgg(folder)
    photos = {p.stem: load_image(p) for p in sorted((folder / "images").glob("*_1.jpeg"))[:4]}

    def make(image, **options):
        options.setdefault("background", False)
        return Explorer(bundle, image, samples=photos, **options)

    stress_run(make, bundle.model, dict(photos), next(iter(photos)), 11, 200, thread_errors, event_loop=True)


def test_a_random_burst_on_resnet18_in_training_mode(thread_errors):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None)  # left in training mode, as a user may leave it
    samples = {name: image for name, image in list(zoo.samples().items())[:3]}

    def make(image, **options):
        options.setdefault("background", False)
        return Explorer(model, image, samples=samples, input_size=(3, 64, 64), **options)

    stress_run(make, model, dict(samples), next(iter(samples)), 21, 150, thread_errors, event_loop=True)


class SlowNet(nn.Module):
    """Three conv stages with batch norm, 300 channels at the last (two grid pages), and a 7-class head;
    each forward pass sleeps ``delay`` seconds first, so that the user's actions arrive while the
    workers are in the middle of their work."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(16, 300, 3, padding=1), nn.ReLU(),
        )
        self.head = nn.Linear(300, 7)

    def forward(self, x):
        if self.delay:
            time.sleep(self.delay)
        return self.head(self.features(x).mean(dim=(2, 3)))


@pytest.mark.parametrize("seed", [31, 32])
def test_a_random_burst_on_a_slow_model(seed, thread_errors, monkeypatch):
    from cnnwidgets.app import explorer as explorer_module

    # its frames count as slow: the grid also fades while a new occluder position's frame is computed
    monkeypatch.setattr(explorer_module, "SLOW_FRAME_SECONDS", 0.0)
    torch.manual_seed(0)
    model = SlowNet(0.004).eval()
    rng = np.random.default_rng(seed)
    samples = {f"photo {i}": (rng.random((40, 40, 3)) * 255).astype(np.uint8) for i in range(3)}

    def make(image, **options):
        options.setdefault("background", False)
        return Explorer(model, image, samples=samples, input_size=(3, 40, 40), **options)

    stress_run(make, model, dict(samples), "photo 0", seed, 150, thread_errors, event_loop=True)


class FullyConvolutional(nn.Module):
    """Convolutions and global average pooling: it runs on images of any size."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 10, 3, padding=1), nn.ReLU(), nn.Conv2d(10, 10, 3, padding=1), nn.ReLU(),
        )
        self.head = nn.Linear(10, 4)

    def forward(self, x):
        return self.head(self.features(x).mean(dim=(2, 3)))


def _own_size(image):
    """A preprocess that keeps the image's own size: each image its own input size."""
    from cnnwidgets.app.inputs import default_preprocess, to_pil

    pil = to_pil(image)
    return default_preprocess((pil.height, pil.width))(pil)


@pytest.mark.parametrize("seed", [41, 42])
def test_a_random_burst_with_images_of_different_sizes(seed, thread_errors):
    torch.manual_seed(0)
    model = FullyConvolutional().eval()
    rng = np.random.default_rng(seed)
    samples = {f"{h}x{w}": (rng.random((h, w, 3)) * 255).astype(np.uint8) for h, w in [(40, 40), (24, 32), (48, 20)]}

    def make(image, **options):
        options.setdefault("background", False)
        return Explorer(model, image, samples=samples, preprocess=_own_size, **options)

    stress_run(make, model, dict(samples), "40x40", seed, 200, thread_errors, event_loop=True)


# ---------------------------------------------------------------- regressions found by the stress test
def _small_explorer(**options) -> Explorer:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    picture = (rng.random((32, 32, 3)) * 155 + 100).astype(np.uint8)
    options.setdefault("background", False)
    return Explorer(FullyConvolutional().eval(), picture, samples={}, input_size=(3, 32, 32), **options)


@pytest.mark.parametrize("background", [False, True])
def test_a_fill_change_with_no_occluder_is_the_state_on_screen(background):
    """With no occluder the fill changes nothing the frame shows, so nothing is computed or drawn again;
    but the frame on screen is the new state's all the same (``shown_state`` was the old fill's)."""
    ex = _small_explorer(box=None, fill="gray", background=background)
    try:
        assert ex.wait_idle(30)
        renders = ex.stats["renders"]
        ex.fill = "blur"
        assert ex.wait_idle(30)
        assert ex.shown_state == ex.state() and ex.shown_state.fill == "blur"
        assert ex.stats["renders"] == renders  # not drawn again
    finally:
        ex.close()


def test_a_target_change_with_no_scores_is_the_state_on_screen():
    ex = _small_explorer(show_scores=False)
    try:
        renders = ex.stats["renders"]
        ex.target = 2
        assert ex.wait_idle(30)
        assert ex.shown_state == ex.state() and ex.shown_state.target == 2
        assert ex.stats["renders"] == renders
    finally:
        ex.close()


def test_with_a_slow_model_a_fill_change_with_no_occluder_does_not_leave_the_grid_faded(monkeypatch):
    """A slow model's grid fades while a new fill's frame is computed; with no occluder no frame comes
    (the fill changes nothing), and the grid stayed faded for good."""
    from cnnwidgets.app import explorer as explorer_module

    monkeypatch.setattr(explorer_module, "SLOW_FRAME_SECONDS", 0.0)  # every frame counts as slow
    ex = _small_explorer(box=None)
    try:
        assert ex.wait_idle(30) and not ex.grid_busy
        ex.fill = "black"
        assert ex.wait_idle(30)
        assert not ex.grid_busy
        ex.box = (2, 2, 8, 8)  # still fades for what a slow model does compute
        ex.controller.wait_idle(30)
        assert not ex.grid_busy and ex.shown_state == ex.state()
    finally:
        ex.close()


def test_a_target_naming_the_class_of_a_map_being_handed_over_gets_that_map():
    """The user picks, by its index, the most probable class whose map (asked for with no target) is being
    handed over to the panel: the map is shown as that class's. It was ignored as a renaming of the work in
    progress after the runner had read the name of its map, and the panel said "computing ..." for good."""
    ex = _small_explorer(method="none", background=True)
    runner = ex._methods
    handed, proceed = threading.Event(), threading.Event()
    classes: list[int] = []
    show = runner._on_result

    def held(result):
        if not handed.is_set():
            classes.append(result.target)
            handed.set()
            proceed.wait(30)
        show(result)

    runner._on_result = held
    try:
        assert ex.wait_idle(30)
        ex.method = "grad-cam"  # target None: the most probable class
        assert handed.wait(30)
        ex.target = classes[0]  # that class, by its index, while its map is handed over
        proceed.set()
        assert ex.wait_idle(30)
        result = ex.method_result
        assert result is not None and result.request.key() == ex.method_request().key()
        assert result.target == classes[0] and ex.method_error is None
        assert ex.method_view.caption.value.startswith("<b>Grad-CAM</b>")
    finally:
        proceed.set()
        ex.close()
