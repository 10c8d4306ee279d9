"""The explorer's method panel (occlusion, saliency, guided backprop, deconvnet, Grad-CAM) and
the data-set dead-channel marks, checked against the plain functions they show."""

from __future__ import annotations

import copy
import dataclasses
import threading
import time
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from cnnwidgets import ModelSnapshot, Probe, zoo
from cnnwidgets.core.targets import ChannelActivation, ClassProbability
from cnnwidgets.app import Explorer
from cnnwidgets.app.views import METHODS, MethodRequest, MethodRunner
from cnnwidgets.core.hygiene import hook_count
from cnnwidgets.methods import deconvnet, dead_channels, grad_cam, guided_backprop, occlusion_map, saliency
from cnnwidgets.methods.cam import upsample
from cnnwidgets.methods.gradients import project_channel
from cnnwidgets.render.grid import DATA_MARK_COLOR, MARK_COLOR


@pytest.fixture(scope="module")
def bundle():
    return zoo.load_default()


def explorer(bundle, **kw) -> Explorer:
    kw.setdefault("background", False)
    return Explorer(bundle, zoo.sample_image("star"), samples={}, device="cpu", **kw)


def top_class(model, x) -> int:
    with torch.no_grad():
        return int(model(x).argmax())


def test_method_names_are_the_registry_plus_occlusion():
    assert METHODS[0] == "none" and "occlusion" in METHODS
    assert {"saliency", "guided backprop", "deconvnet", "grad-cam"} <= set(METHODS)


def test_gradient_methods_show_what_the_plain_functions_compute(bundle):
    ex = explorer(bundle, layer="features.conv3", channel=5)
    try:
        x = ex._images[ex._image_id].tensor
        target = top_class(bundle.model, x)
        with Probe(bundle.model, device="cpu") as probe:
            expected = {
                "saliency": saliency(probe, x, target, absolute=True).abs().amax(dim=1)[0],
                "guided backprop": guided_backprop(probe, x, target).abs().amax(dim=1)[0],
                "deconvnet": project_channel(probe, x, "features.conv3", 5, unit="max").abs().amax(dim=1)[0],
                "grad-cam": upsample(grad_cam(probe, x, target, "features.conv3"), x.shape[-2:])[0],
            }
        for name, want in expected.items():
            ex.method = name
            assert ex.wait_idle(60)
            result = ex.method_result
            used = -1 if name == "deconvnet" else target  # a channel's projection involves no class
            assert result is not None and result.request.method == name and result.target == used
            np.testing.assert_allclose(result.heat, want.detach().numpy(), rtol=1e-4, atol=1e-6, err_msg=name)
            assert result.image.shape == (64, 64, 3) and result.image.dtype == np.uint8
            assert name.split()[0] in ex.method_view.caption.value.lower()
            assert "pale yellow" in ex.method_view.caption.value  # the colours are put in words
            assert "alt='colours low to high (inferno)'" in ex.method_view.caption.value  # and shown
            assert ex.method_view.image.value  # something was sent to the browser
            weak = result.heat == 0  # nothing drawn there: the image itself, in gray
            if weak.any():
                pixels = result.image[weak]
                assert (pixels[:, 0] == pixels[:, 1]).all() and (pixels[:, 1] == pixels[:, 2]).all(), name
        assert not ex.status.is_error
    finally:
        ex.close()


def test_signed_colour_shows_the_signed_values_and_switching_computes_nothing(bundle):
    from cnnwidgets.render.attribution import signed_to_rgb

    ex = explorer(bundle, layer="features.conv3", channel=5, method="guided backprop")
    try:
        assert ex.wait_idle(60)
        view = ex.method_view
        assert view.signed_box.layout.display is None  # the switch shows with a signed method
        x = ex._images[ex._image_id].tensor
        target = top_class(bundle.model, x)
        with Probe(bundle.model, device="cpu") as probe:
            expected = {
                "guided backprop": guided_backprop(probe, x, target)[0].numpy(),
                "deconvnet": project_channel(probe, x, "features.conv3", 5, unit="max")[0].numpy(),
                "saliency": saliency(probe, x, target, absolute=False)[0].numpy(),
            }
        strength, sent = ex.method_result.image.copy(), view.image.value
        runs = ex._methods.runs
        view.signed_box.value = True  # the user ticks "signed colour"
        assert ex.method_signed and ex.wait_idle(60)
        result = ex.method_result
        assert ex._methods.runs == runs  # drawn from the values already computed
        np.testing.assert_allclose(result.values, expected["guided backprop"], rtol=1e-4, atol=1e-6)
        assert np.array_equal(result.image, signed_to_rgb(result.values))
        assert not np.array_equal(result.image, strength) and view.image.value != sent
        assert "signed colour" in view.caption.value and "pale yellow" not in view.caption.value
        for name in ("deconvnet", "saliency"):  # other signed methods open signed too
            ex.method = name
            assert ex.wait_idle(60)
            result = ex.method_result
            np.testing.assert_allclose(result.values, expected[name], rtol=1e-4, atol=1e-6, err_msg=name)
            assert np.array_equal(result.image, signed_to_rgb(result.values)), name
            assert "signed colour" in view.caption.value, name
        ex.method = "guided backprop"
        assert ex.wait_idle(60)
        runs = ex._methods.runs
        ex.method_signed = False  # back to the strength over the image, again without computing
        assert ex.wait_idle(60) and ex._methods.runs == runs
        assert np.array_equal(ex.method_result.image, strength) and "pale yellow" in view.caption.value
        ex.method = "grad-cam"  # no sign to show: no switch
        assert ex.wait_idle(60) and view.signed_box.layout.display == "none"
        ex.method_signed = True
        assert ex.wait_idle(60) and "pale yellow" in view.caption.value and ex.method_result.values is None
        assert not ex.status.is_error
    finally:
        ex.close()


def test_signed_colour_of_a_grayscale_model_is_red_and_blue():
    torch.manual_seed(0)
    nn = torch.nn
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 3)).eval()
    ex = Explorer(model, np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32), samples={}, device="cpu",
                  input_size=(1, 32, 32), method="saliency", method_signed=True, background=False)
    try:
        assert ex.wait_idle(60)
        result = ex.method_result
        assert result.values.shape == (1, 32, 32) and (result.values < 0).any() and (result.values > 0).any()
        assert "red where" in ex.method_view.caption.value and not ex.status.is_error
        reds = result.values[0] > 0.5 * result.values.max()
        assert reds.any() and (result.image[reds][:, 0] > result.image[reds][:, 2]).all()
    finally:
        ex.close()


def test_a_new_method_fades_the_previous_map_until_its_own_is_shown(bundle):
    ex = explorer(bundle, method="grad-cam")
    try:
        assert ex.wait_idle(60)
        shown = ex.method_view.image.value
        submit, ex._methods.submit = ex._methods.submit, lambda request: None  # the map is "still computing"
        ex.method = "occlusion"
        assert ex.method_view.stale and ex.method_view.image.value == shown
        assert "computing occlusion" in ex.method_view.caption.value and "Grad-CAM" not in ex.method_view.caption.value
        ex._methods.submit = submit
        ex.method_stride = 16  # the next change submits it
        assert ex.wait_idle(60) and ex.method_result.request.method == "occlusion"
        assert not ex.method_view.stale and "occlusion" in ex.method_view.caption.value
    finally:
        ex.close()


def test_captions_give_the_occlusion_scale_and_the_layer_grad_cam_used(bundle):
    ex = explorer(bundle, method="occlusion")
    try:
        assert ex.wait_idle(60)
        occ = ex.method_result.occlusion
        caption = ex.method_view.caption.value
        # the colour scale is relative: the caption says what full colour means, and both colours
        # in percent, as the class scores are shown
        unoccluded, full = 100 * occ.unoccluded, 100 * np.nanmax(np.abs(occ.drop))
        assert f"(unoccluded {unoccluded:.1f}%) when" in caption or f"(unoccluded {unoccluded:.2g}%) when" in caption
        assert f"a change of {full:.1f} points" in caption or f"a change of {full:.2g} points" in caption
        assert "red" in caption and "blue" in caption
        ex.method = "grad-cam"
        assert ex.wait_idle(60) and "at layer <code>features.conv3</code>;" in ex.method_view.caption.value
        ex.layer = "global_pool"  # no feature map there: Grad-CAM falls back, and says where
        assert ex.wait_idle(60)
        assert "at layer <code>features</code> (the last feature map before global_pool);" in ex.method_view.caption.value
    finally:
        ex.close()


def test_deconvnet_equals_the_deconvnet_function_on_the_strongest_unit(bundle):
    # the panel's deconvnet is the strongest unit of the selected channel projected to pixels: the
    # deconvnet pass of that unit, seeded with its activation (the paper's projection)
    ex = explorer(bundle, layer="features.conv2", channel=2, method="deconvnet")
    try:
        assert ex.wait_idle(60)
        x = ex._images[ex._image_id].tensor
        with Probe(bundle.model, device="cpu") as probe:
            fmap = probe.capture(x, ["features.conv2"])["features.conv2"][0, 2]
            unit = divmod(int(fmap.argmax()), fmap.shape[1])
            seed = float(fmap.max())
            want = seed * deconvnet(probe, x, ChannelActivation("features.conv2", 2, position=unit)).abs().amax(dim=1)[0]
        assert seed > 0
        np.testing.assert_allclose(ex.method_result.heat, want.numpy(), rtol=1e-4, atol=1e-6)
    finally:
        ex.close()


def test_only_changes_a_method_depends_on_recompute(bundle):
    ex = explorer(bundle, method="saliency")
    try:
        assert ex.wait_idle(60)
        runs = ex._methods.runs
        caption = ex.method_view.caption.value
        assert "saliency" in caption and "computing" not in caption
        ex.channel = 3  # saliency does not depend on the channel
        ex.box = (5, 5, 16, 16)  # nor on the occluder
        ex.layer = "features.conv2"
        assert ex.wait_idle(60) and ex._methods.runs == runs
        assert ex.method_view.caption.value == caption  # and its caption does not say "computing" again
        ex.target = 2  # but on the class
        assert ex.wait_idle(60) and ex._methods.runs == runs + 1 and ex.method_result.target == 2
        ex.method = "deconvnet"
        assert ex.wait_idle(60) and ex._methods.runs == runs + 2
        ex.channel = 4  # deconvnet depends on the channel
        assert ex.wait_idle(60) and ex._methods.runs == runs + 3 and ex.method_result.request.channel == 4
        ex.method = "none"
        assert ex.wait_idle(60) and ex.method_result is None and ex.method_view.image.value == b""
    finally:
        ex.close()


def test_occlusion_view_streams_coarse_first_and_ends_equal_to_occlusion_map(bundle):
    shown = []
    images = {}
    ex = explorer(bundle, box=(10, 10, 12, 12), fill="black")
    try:
        images[1] = ex._images[ex._image_id]
        runner = MethodRunner(bundle.model, images.__getitem__, on_result=shown.append,
                              on_error=lambda where, exc: pytest.fail(f"{where}: {exc}"), background=False)
        request = MethodRequest("occlusion", 1, ex.layer, 0, None, window=12, stride=2, fill="black", device="cpu")
        runner.submit(request)
        runner.close()
        assert len(shown) >= 2
        assert not shown[0].complete and shown[-1].complete
        done = [r.occlusion.done for r in shown]
        assert done == sorted(done) and done[-1] == shown[-1].occlusion.total
        # the first partial map already spans the image: computed positions in the first and last row/column
        first = shown[0].occlusion.filled
        assert first[0].any() and first[-1].any() and first[:, 0].any() and first[:, -1].any()
        x = images[1].tensor
        target = top_class(bundle.model, x)
        want = occlusion_map(bundle.model, x, ClassProbability(target), window=12, stride=2,
                             fill=images[1].fill_tensor("black"), progress=False, device="cpu")
        np.testing.assert_allclose(shown[-1].heat, want.drop, rtol=1e-4, atol=1e-6)
        assert shown[-1].target == target
    finally:
        ex.close()


def test_occlusion_in_the_explorer_uses_the_box_size_fill_and_stride(bundle):
    ex = explorer(bundle, box=(0, 0, 16, 16), fill="gray", method="occlusion")
    try:
        ex.method_stride = 16
        assert ex.wait_idle(60)
        occ = ex.method_result.occlusion
        assert occ.window == (16, 16) and occ.stride == (16, 16) and occ.complete and occ.shape == (4, 4)
        assert ex.method_view.bar.value == pytest.approx(1.0)
        runs = ex._methods.runs
        ex.box = (30, 30, 16, 16)  # moving the box keeps the map
        assert ex.wait_idle(60) and ex._methods.runs == runs
        ex.occluder_controls.size = 24  # resizing it changes the window
        assert ex.wait_idle(60) and ex.method_result.occlusion.window == (24, 24)
    finally:
        ex.close()


def test_a_box_given_to_the_constructor_sets_the_occlusion_window(bundle):
    ex = explorer(bundle, box=(0, 0, 8, 8), method="occlusion", method_stride=8)
    try:
        assert ex.occluder_controls.size == 8 and ex.canvas.default_size == 8
        assert ex.wait_idle(60) and ex.method_result.occlusion.window == (8, 8)
    finally:
        ex.close()


def test_resizing_the_box_in_the_browser_sets_the_size_control_and_the_occlusion_window(bundle):
    ex = explorer(bundle, box=(4, 4, 8, 8), method="occlusion", method_stride=16)
    try:
        assert ex.wait_idle(60) and ex.method_result.occlusion.window == (8, 8)
        runs = ex._methods.runs
        # the corner handle, as occluder.js reports it: boxes while dragging, then the last box with the release
        ex.canvas.set_state({"box": [4, 4, 8, 8], "dragging": True})
        for side in (10, 13, 16):
            ex.canvas.set_state({"box": [4, 4, side, side]})
        # no map of a size the user has not settled on: it waits for the release, and is not idle till then
        assert not ex.wait_idle(60) and ex._methods.runs == runs
        assert ex.method_view.stale and "computed when the occluder is released" in ex.method_view.caption.value
        ex.canvas.set_state({"box": [4, 4, 16, 16], "dragging": False})
        assert ex.wait_idle(60)
        assert ex.occluder_controls.size == 16 and ex.canvas.default_size == 16
        assert ex.method_result.occlusion.window == (16, 16) and ex._methods.runs == runs + 1
        # a box that is not square: the window is its (height, width), and the box keeps its shape
        ex.canvas.set_state({"box": [4, 4, 16, 16], "dragging": True})
        ex.canvas.set_state({"box": [4, 4, 22, 12], "dragging": False})
        assert ex.wait_idle(60)
        assert ex.box == (4, 4, 22, 12) and ex.occluder_controls.size == 22
        occ = ex.method_result.occlusion
        assert occ.window == (12, 22) and occ.complete and ex._methods.runs == runs + 2
        x = ex._images[ex._image_id].tensor
        want = occlusion_map(bundle.model, x, ClassProbability(ex.method_result.target), window=(12, 22), stride=16,
                             fill=ex._images[ex._image_id].fill_tensor(ex.fill), progress=False, device="cpu")
        np.testing.assert_allclose(ex.method_result.heat, want.drop, rtol=1e-4, atol=1e-6)
        # moving it (a drag of the box itself) keeps the map
        ex.canvas.set_state({"box": [4, 4, 22, 12], "dragging": True})
        ex.canvas.set_state({"box": [30, 20, 22, 12], "dragging": False})
        assert ex.wait_idle(60) and ex._methods.runs == runs + 2 and ex.box == (30, 20, 22, 12)
        assert not ex.status.is_error
    finally:
        ex.close()


def test_a_newer_request_cancels_a_running_occlusion_scan(bundle):
    ex = explorer(bundle)
    shown = []
    try:
        images = {1: ex._images[ex._image_id]}
        runner = MethodRunner(bundle.model, images.__getitem__, on_result=shown.append,
                              on_error=lambda where, exc: pytest.fail(f"{where}: {exc}"), background=True)
        slow = MethodRequest("occlusion", 1, ex.layer, 0, None, window=4, stride=1, fill="gray", device="cpu")
        runner.submit(slow)
        deadline = time.monotonic() + 30
        while not shown and time.monotonic() < deadline:  # wait until it streams
            time.sleep(0.005)
        assert shown and not shown[-1].complete
        quick = MethodRequest("saliency", 1, ex.layer, 0, None, window=4, stride=1, fill="gray", device="cpu")
        runner.submit(quick)
        assert runner.wait_idle(60)
        assert runner.cancelled >= 1
        assert runner.result.request == quick
        assert not any(r.request == slow and r.complete for r in shown)
        runner.close()
        assert not runner._thread.is_alive() and runner.probe is None
    finally:
        ex.close()


def test_the_method_map_follows_a_change_of_the_users_weights(bundle):
    own = copy.deepcopy(bundle)  # the fixture is shared: change a copy
    ex = explorer(own, layer="features.conv3", method="grad-cam")
    try:
        ex.target = 1
        assert ex.wait_idle(60)
        x = ex._images[ex._image_id].tensor
        runs = ex._methods.runs
        with torch.no_grad():  # e.g. training steps in another cell while the explorer is open
            own.model.features.conv3.weight.mul_(-1.0)
        ex.box = (5, 5, 16, 16)  # the next interaction shows the new weights everywhere
        assert ex.wait_idle(60) and ex._methods.runs == runs + 1
        want = upsample(grad_cam(own.model, x, 1, "features.conv3"), x.shape[-2:])[0]
        np.testing.assert_allclose(ex.method_result.heat, want.detach().numpy(), rtol=1e-4, atol=1e-6)
        ex.box = (6, 6, 16, 16)
        assert ex.wait_idle(60) and ex._methods.runs == runs + 1  # no change: no recomputation
    finally:
        ex.close()


def test_method_errors_reach_the_status_line_and_the_widget_goes_on(bundle, monkeypatch):
    from cnnwidgets.methods.overlays import SIGNED_OVERLAYS

    real = SIGNED_OVERLAYS["saliency"]  # what the panel computes (it draws the strength from it)

    def saliency_failing_for_class_2(probe, x, *, target, **kw):
        if target == 2:
            raise IndexError("deliberate failure for class 2")
        return real(probe, x, target=target, **kw)

    monkeypatch.setitem(SIGNED_OVERLAYS, "saliency", saliency_failing_for_class_2)
    ex = explorer(bundle, method="saliency")
    try:
        ex.target = 1
        assert ex.wait_idle(60) and ex.method_result.target == 1
        with pytest.raises(Exception, match="target class 10000 out of range"):
            ex.target = 10_000  # no such class: refused up front, the map stays
        assert ex.target == 1 and ex.method_result.target == 1
        ex.target = 2
        assert ex.wait_idle(60)
        assert ex.status.is_error and "saliency" in ex.status.message and "class 2" in ex.status.message
        # the map of class 1 is gone: nothing on screen claims to be the saliency of class 2
        assert ex.method_result is None and ex.method_view.image.value == b""
        assert "failed" in ex.method_view.caption.value and "class 2" in ex.method_view.caption.value
        ex.target = 1
        assert ex.wait_idle(60) and ex.method_result.target == 1
        assert not ex.status.is_error  # that method's error is over
    finally:
        ex.close()


class PerPixelHead(torch.nn.Module):
    """Convolutions and a per-pixel head: an output of (N, classes, H, W), no class scores."""

    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3, padding=1), torch.nn.ReLU(),
                                             torch.nn.MaxPool2d(2), torch.nn.Conv2d(6, 8, 3, padding=1))
        self.head = torch.nn.Conv2d(8, 2, 1)

    def forward(self, x):
        return self.head(self.features(x))


def test_channel_methods_work_on_a_model_without_class_scores():
    torch.manual_seed(0)
    model = PerPixelHead().eval()
    ex = Explorer(model, zoo.sample_image("star"), samples={}, device="cpu", input_size=(3, 32, 32),
                  background=False, layer="features.3", channel=2, method="deconvnet")
    try:
        assert ex.wait_idle(60)
        result = ex.method_result
        assert result is not None and result.request.method == "deconvnet"
        x = ex._images[ex._image_id].tensor
        with Probe(model) as probe:
            expected = project_channel(probe, x, "features.3", 2, unit="max")[0].abs().amax(dim=0)
        np.testing.assert_allclose(result.heat, expected.numpy(), rtol=1e-4, atol=1e-6)
        ex.method = "saliency"  # needs a class: says why not
        assert ex.wait_idle(60) and ex.method_result is None
        assert "class scores of shape (N, classes)" in ex.status.message
    finally:
        ex.close()


def test_every_method_leaves_the_model_unchanged(bundle):
    import copy

    model = copy.deepcopy(bundle.model).train()  # training mode, grads and a hook of the user's own
    model.features.conv1.register_forward_hook(lambda *args: None)
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.5)
    snapshot = ModelSnapshot.take(model)
    ex = Explorer(model, zoo.sample_image("star"), preprocess=bundle.preprocess, denormalize=bundle.denormalize,
                  samples={}, device="cpu", background=False)
    try:
        for name in METHODS[1:]:
            ex.method = name
            assert ex.wait_idle(60) and ex.method_result is not None and not ex.status.is_error, name
            snapshot.assert_unchanged(model)
    finally:
        ex.close()
    snapshot.assert_unchanged(model)
    assert sum(hook_count(m) for m in model.modules()) == 1  # only the user's own


def test_close_stops_the_method_thread_and_leaves_the_model_unchanged(bundle):
    model = bundle.model
    snapshot = ModelSnapshot.take(model)
    ex = explorer(bundle, background=True, method="occlusion")
    ex.method_stride = 4
    deadline = time.monotonic() + 30
    while ex._methods._thread is None and time.monotonic() < deadline:
        time.sleep(0.005)
    thread = ex._methods._thread
    ex.close()
    assert thread is not None and not thread.is_alive()
    assert not any(t.name == "cnnwidgets-methods" and t.is_alive() for t in threading.enumerate())
    snapshot.assert_unchanged(model)
    assert sum(hook_count(m) for m in model.modules()) == 0


# ---------------------------------------------------------------- dead channels over a data set
def tile_outline(grid: np.ndarray, layout, channel: int) -> np.ndarray:
    x, y, w, h = layout.tile_rect(channel)
    return np.concatenate([grid[y, x : x + w], grid[y + h - 1, x : x + w], grid[y : y + h, x], grid[y : y + h, x + w - 1]])


def test_mark_dead_marks_exactly_the_given_tiles(bundle):
    ex = explorer(bundle, layer="features.conv3", box=None)
    try:
        layout = ex._frame.layout
        live = [c for c in range(32) if not ex._frame.computed.baseline.dead[c]]
        marked, unmarked = live[:3], live[3:6]
        ex.mark_dead({"features.conv3": marked})
        assert ex.wait_idle(60)
        grid = ex.grid_image
        for c in marked:  # orange, not the red of the channels dead on this image
            assert (tile_outline(grid, layout, c) == DATA_MARK_COLOR).all(axis=1).all()
        for c in unmarked:
            assert not (tile_outline(grid, layout, c) == DATA_MARK_COLOR).all(axis=1).all()
            assert not (tile_outline(grid, layout, c) == MARK_COLOR).all(axis=1).all()
        assert "3 dead over the data set (orange frame, /" in ex.grid_caption.value
        assert ex.dead_marks["features.conv3"].sum() == 3
        ex.mark_dead(None)
        assert ex.wait_idle(60)
        assert not (tile_outline(ex.grid_image, layout, marked[0]) == DATA_MARK_COLOR).all(axis=1).all()
    finally:
        ex.close()


def test_scan_dead_marks_what_dead_channels_finds(bundle):
    import copy

    x, _ = zoo.shapes.make_batch(32, seed=7)
    model = copy.deepcopy(bundle.model)
    with torch.no_grad():
        model.features.conv2.bias[6] = -1e4  # channel 6 can never be positive
    ex = Explorer(model, zoo.sample_image("star"), preprocess=bundle.preprocess, denormalize=bundle.denormalize,
                  samples={}, device="cpu", background=False, layer="features.conv2")
    try:
        want = dead_channels(model, x, "features.conv2", progress=False)["features.conv2"].is_dead
        assert want[6] and not want.all()
        here = ex._frame.computed.baseline.dead.copy()
        before = ex.grid_image.copy()
        found = ex.scan_dead(x, progress=False)
        assert set(found) == {"features.conv2"}
        np.testing.assert_array_equal(ex.dead_marks["features.conv2"], want)
        assert ex.wait_idle(60) and ex._frame.dead_in_data == int(want.sum())
        # the scan's result can be told apart in the grid: dead over the data set only -> orange frame;
        # dead on this image too -> red frame with both diagonals; dead on this image only -> red, one diagonal
        grid, layout = ex.grid_image, ex._frame.layout
        assert not np.array_equal(before, grid)
        for c in range(len(want)):
            x0, y0, w, h = layout.tile_rect(c)
            outline = tile_outline(grid, layout, c)
            rising = grid[y0 + h - 2, x0 + 1]  # on the diagonal from the bottom left up, inside the frame
            if here[c]:
                assert (outline == MARK_COLOR).all(axis=1).all()
                assert (rising == DATA_MARK_COLOR).all() == bool(want[c])
            elif want[c]:
                assert (outline == DATA_MARK_COLOR).all(axis=1).all() and (rising == DATA_MARK_COLOR).all()
            else:
                assert not (outline == DATA_MARK_COLOR).all(axis=1).all()
        in_fives = ex.scan_dead(x, batch_size=5, progress=False)  # passed on to dead_channels
        np.testing.assert_array_equal(in_fives["features.conv2"].is_dead, want)
        with pytest.raises(ValueError, match="batch_size"):
            ex.scan_dead(x, batch_size=0, progress=False)
    finally:
        ex.close()


def test_mark_dead_rejects_bad_input(bundle):
    ex = explorer(bundle)
    try:
        with pytest.raises(KeyError, match="unknown layer"):
            ex.mark_dead({"features.conv9": [0]})
        with pytest.raises(ValueError, match="channels"):
            ex.mark_dead({"features.conv3": np.zeros(5, dtype=bool)})
        with pytest.raises(ValueError, match="0..31"):
            ex.mark_dead({"features.conv3": [40]})
        with pytest.raises(ValueError, match=r"must be channel indices \(ints\) or a bool array of shape \(32,\); "
                                             r"got float64 values \[1.7\]"):
            ex.mark_dead({"features.conv3": [1.7]})
        assert ex.dead_marks == {}
        with pytest.raises(TypeError, match="dead_channels"):
            ex.mark_dead([1, 2])
    finally:
        ex.close()


def test_methods_run_on_a_model_that_only_takes_its_own_input_size(shared_data):
    from cnnwidgets.zoo.tinyvgg import load_tinyvgg

    tiny = load_tinyvgg(shared_data / "tinyvgg-cnn-explainer")  # 64x64 only: a Linear(1690, 10) head
    photo = sorted((shared_data / "tinyvgg-cnn-explainer" / "images").glob("koala_*.jpeg"))[0]
    ex = Explorer(tiny, photo, samples={}, device="cpu", background=False, layer="conv_2_2")
    try:
        for name in ("grad-cam", "deconvnet", "occlusion"):
            ex.method = name
            assert ex.wait_idle(60) and not ex.status.is_error, ex.status.message
            assert ex.method_result.image.shape == (64, 64, 3)
        assert ex._methods.probe.input_size == (3, 64, 64)
    finally:
        ex.close()


# ---------------------------------------------------------------- weights that change, cancelling, functional ReLUs
class Gate:
    """Notes the batch size of every forward pass of a model's copies, and holds them (on any
    thread) while it is armed, until the test releases them."""

    def __init__(self) -> None:
        self.armed = False
        self.entered = threading.Event()
        self.release = threading.Event()
        self.batches: list[int] = []

    def passing(self, x) -> None:
        if not isinstance(x, torch.Tensor):
            return  # torch.fx traces the model: no forward pass
        self.batches.append(int(x.shape[0]))
        if self.armed:
            self.entered.set()
            assert self.release.wait(30), "the test never released the gate"

    def open(self) -> None:
        self.armed = False
        self.release.set()


class GatedNet(torch.nn.Module):
    """Convolutions with batch norm and a class head; its forward passes go through ``GatedNet.gate``."""

    gate: Gate | None = None  # a class attribute: the private copies (deep copies) share it

    def __init__(self) -> None:
        super().__init__()
        nn = torch.nn
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        if GatedNet.gate is not None:
            GatedNet.gate.passing(x)
        return self.head(self.features(x).mean(dim=(2, 3)))


class FunctionalReluNet(torch.nn.Module):
    """One nn.ReLU module, then two ReLUs applied as functions (F.relu after conv2, Tensor.relu after conv3)."""

    def __init__(self) -> None:
        super().__init__()
        nn = torch.nn
        self.conv1, self.relu1 = nn.Conv2d(3, 6, 3, padding=1), nn.ReLU()
        self.conv2, self.conv3 = nn.Conv2d(6, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        if GatedNet.gate is not None:
            GatedNet.gate.passing(x)
        x = torch.nn.functional.relu(self.conv2(self.relu1(self.conv1(x))))
        return self.head(self.conv3(x).relu().mean(dim=(2, 3)))


@pytest.fixture
def gate():
    GatedNet.gate = Gate()
    try:
        yield GatedNet.gate
    finally:
        GatedNet.gate.open()
        GatedNet.gate = None


def small_image(size: int = 32, seed: int = 0):
    from cnnwidgets.app.inputs import ImageInput

    gen = torch.Generator().manual_seed(seed)
    return ImageInput(name="test", tensor=torch.randn(1, 3, size, size, generator=gen),
                      display=np.zeros((size, size, 3), dtype=np.uint8))


def request_of(method: str, *, layer: str = "", channel: int = 0, target: int | None = None) -> MethodRequest:
    return MethodRequest(method, 1, layer, channel, target, window=8, stride=2, fill="mean", device="cpu")


def no_error(where, exc):
    pytest.fail(f"{where}: {exc}")


def test_weights_changed_during_an_occlusion_scan_give_a_map_of_the_new_weights(monkeypatch):
    import cnnwidgets.app.views as views

    torch.manual_seed(0)
    model = GatedNet().eval()
    image = small_image()
    shown, scans = [], []

    def scan(*args, **kw):
        result = occlusion_map(*args, **kw)
        scans.append(result)
        return result

    monkeypatch.setattr(views, "occlusion_map", scan)

    def on_result(result):
        shown.append(result)
        if len(shown) == 1:  # a training step while the map streams
            with torch.no_grad():
                model.head.weight.mul_(-2.0)
                model.head.bias.add_(1.0)

    runner = MethodRunner(model, {1: image}.__getitem__, on_result, no_error, background=False)
    try:
        request = request_of("occlusion")
        runner.submit(request)
        final = runner.result
        assert final is shown[-1] and final.complete
        assert runner.model_changes == 1 and runner.runs == 2  # computed again, with the new weights only
        assert scans[0].cancelled and scans[0].done < scans[0].total  # the first scan stopped at its next batch
        assert shown[1:] and all(r.occlusion.unoccluded == final.occlusion.unoccluded for r in shown[1:])
        x = image.tensor
        target = top_class(model, x)
        want = occlusion_map(model, x, ClassProbability(target), window=8, stride=2, fill=image.fill_tensor("mean"),
                             progress=False, device="cpu")
        assert final.target == target
        assert final.occlusion.unoccluded == pytest.approx(want.unoccluded, rel=1e-5)
        np.testing.assert_allclose(final.heat, want.drop, rtol=1e-4, atol=1e-6)
        runner.submit(request)  # the same weights: that map is on screen
        assert runner.runs == 2
        with torch.no_grad():
            model.head.bias.add_(0.5)
        runner.submit(request)  # new weights: computed again
        assert runner.runs == 3 and runner.model_changes == 1
    finally:
        runner.close()


@pytest.mark.parametrize("method", ["saliency", "grad-cam"])
def test_weights_changed_during_a_gradient_method_give_a_map_of_the_new_weights(monkeypatch, method):
    import cnnwidgets.app.views as views

    torch.manual_seed(0)
    model = GatedNet().eval()
    image = small_image()
    table = views.SIGNED_OVERLAYS if method in views.SIGNED_OVERLAYS else views.OVERLAYS  # what the panel calls
    compute = table[method]
    calls = []

    def trained_meanwhile(probe, x, **kw):
        calls.append(kw["target"])
        if len(calls) == 1:  # the weights change while the map is computed
            with torch.no_grad():
                model.head.weight.mul_(-2.0)
        return compute(probe, x, **kw)

    monkeypatch.setitem(table, method, trained_meanwhile)
    runner = MethodRunner(model, {1: image}.__getitem__, lambda r: None, no_error, background=False)
    try:
        request = request_of(method, layer="features.4")
        runner.submit(request)
        assert len(calls) == 2 and runner.runs == 2 and runner.model_changes == 1
        x = image.tensor
        target = top_class(model, x)  # of the new weights
        with Probe(model, device="cpu") as probe:
            want = compute(probe, x, layer="features.4", channel=0, target=target)
        if table is views.SIGNED_OVERLAYS:
            want = views.magnitude(want)  # the panel's map is the strength of the signed values
        result = runner.result
        assert result.target == target and calls[-1] == target
        np.testing.assert_allclose(result.heat, want, rtol=1e-4, atol=1e-6)
        runner.submit(request)
        assert len(calls) == 2  # current: not computed again
    finally:
        runner.close()


def test_a_map_is_computed_again_when_the_probe_took_new_weights_since():
    torch.manual_seed(0)
    model = GatedNet().eval()
    runner = MethodRunner(model, {1: small_image()}.__getitem__, lambda r: None, no_error, background=False)
    try:
        request = request_of("saliency", target=0)
        runner.submit(request)
        assert runner.runs == 1
        with torch.no_grad():
            model.head.weight.mul_(-1.0)
        runner.probe.sync()  # the runner's probe (a public property) took the new weights
        assert not runner.probe.user_model_changed() and not runner.is_current(request)
        runner.submit(request)
        assert runner.runs == 2
        with Probe(model, device="cpu") as probe:
            want = saliency(probe, small_image().tensor, 0, absolute=True).amax(dim=1)[0]
        np.testing.assert_allclose(runner.result.heat, want.numpy(), rtol=1e-4, atol=1e-6)
    finally:
        runner.close()


def test_weights_that_keep_changing_are_reported_and_the_next_request_computes_the_map(monkeypatch):
    import cnnwidgets.app.views as views

    torch.manual_seed(0)
    model = GatedNet().eval()
    compute = views.SIGNED_OVERLAYS["saliency"]  # what the panel calls for saliency
    training = [True]

    def always_trained_meanwhile(probe, x, **kw):
        if training[0]:
            with torch.no_grad():
                model.head.bias.add_(0.1)
        return compute(probe, x, **kw)

    monkeypatch.setitem(views.SIGNED_OVERLAYS, "saliency", always_trained_meanwhile)
    errors, shown = [], []
    runner = MethodRunner(model, {1: small_image()}.__getitem__, shown.append,
                          lambda where, exc: errors.append((where, str(exc))), background=False)
    try:
        request = request_of("saliency", target=1)
        runner.submit(request)
        assert runner.runs == 3 and runner.model_changes == 3 and not shown and runner.result is None
        assert errors == [("method 'saliency'", "the model's weights changed while the map was computed, 3 times "
                           "in a row (is it training?); the next change in the explorer computes it again")]
        training[0] = False  # training is over
        runner.submit(request)  # the same request: computed now
        assert runner.runs == 4 and len(shown) == 1 and runner.result.complete and len(errors) == 1
    finally:
        runner.close()


def test_a_rewritten_copy_is_checked_against_the_weights_it_took():
    # the weights change after the preview batch, before occlusion's fast copy is made: the copy
    # (batch norm folded) has the new weights, and is checked against them, not the old reference
    import warnings

    from cnnwidgets.methods.occlusion import _FAST_COPIES

    torch.manual_seed(0)
    model = GatedNet().eval()
    x = torch.randn(1, 3, 32, 32)
    changed = []

    def train_once(partial):
        if not changed:
            changed.append(partial.done)
            with torch.no_grad():
                model.features[1].weight.mul_(3.0)

    with Probe(model, device="cpu") as probe, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        occlusion_map(probe, x, ClassProbability(0), window=8, stride=2, progress=False, callback=train_once)
        copy_ = _FAST_COPIES[probe][True][1]
        version = probe.version
    assert changed and version == 1  # the copy took the weights after the change
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)], [str(w.message) for w in caught]
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in copy_.modules())  # batch norm folded


def test_weights_that_change_again_while_the_copy_is_checked_run_unmodified_and_warn_nothing():
    import warnings

    from cnnwidgets.methods.occlusion import _FAST_COPIES

    torch.manual_seed(0)
    model = GatedNet().eval()
    x = torch.randn(1, 3, 32, 32)
    with Probe(model, device="cpu") as probe:
        logits = probe.logits
        steps = []

        def train(partial):
            if not steps:
                steps.append("after the preview")
                with torch.no_grad():
                    model.features[1].weight.mul_(3.0)

        def logits_while_training(batch, **kw):
            if len(steps) == 1:  # the reference of the new weights is computed again: change them once more
                steps.append("while the copy is checked")
                with torch.no_grad():
                    model.features[1].weight.mul_(0.5)
            return logits(batch, **kw)

        probe.logits = logits_while_training
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            occlusion_map(probe, x, ClassProbability(0), window=8, stride=2, progress=False, callback=train)
        key, copy_, traced = _FAST_COPIES[probe][True]
        assert len(steps) == 2 and key[-1] == probe.version == 2
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)], [str(w.message) for w in caught]
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in copy_.modules()) and not traced


def test_a_cancelled_scan_makes_no_fast_copy_after_its_preview():
    from cnnwidgets.methods.occlusion import _cached_fast_model

    torch.manual_seed(0)
    model = GatedNet().eval()
    stop = threading.Event()
    with Probe(model, device="cpu") as probe:
        result = occlusion_map(probe, torch.randn(1, 3, 32, 32), ClassProbability(0), window=8, stride=2,
                               progress=False, callback=lambda partial: stop.set(), cancel=stop)
        assert result.cancelled and result.done == 5  # the preview only
        assert _cached_fast_model(probe, True) is None  # its copy (two forward passes) was not made


def test_a_newer_request_stops_an_occlusion_request_before_its_scan(gate):
    torch.manual_seed(0)
    model = GatedNet().eval()
    runner = MethodRunner(model, {1: small_image()}.__getitem__, lambda r: None, no_error, background=True)
    try:
        gate.armed = True
        runner.submit(request_of("occlusion"))
        assert gate.entered.wait(30)  # the occlusion request's first forward pass (the top class) runs
        runner.submit(request_of("saliency", target=1))
        seen = len(gate.batches)
        gate.open()
        assert runner.wait_idle(30)
        assert runner.result.request.method == "saliency" and runner.cancelled == 1
        assert all(n == 1 for n in gate.batches[seen:])  # no occluded batch ran after the newer request came
    finally:
        gate.open()
        runner.close()


def test_close_stops_an_occlusion_request_before_its_scan(gate):
    torch.manual_seed(0)
    model = GatedNet().eval()
    runner = MethodRunner(model, {1: small_image()}.__getitem__, lambda r: None, no_error, background=True)
    gate.armed = True
    runner.submit(request_of("occlusion"))
    assert gate.entered.wait(30)
    closer = threading.Thread(target=runner.close)
    closer.start()
    with runner._cond:
        assert runner._cond.wait_for(lambda: runner._closed, 30)
    seen = len(gate.batches)
    gate.open()
    closer.join(30)
    assert not closer.is_alive() and not runner._thread.is_alive()
    assert gate.batches[seen:] == []  # nothing ran after close was asked for
    assert runner.result is None and runner.cancelled == 1


@pytest.mark.filterwarnings("error::cnnwidgets.methods.FunctionalReluWarning")  # said in the note, not twice
def test_guided_backprop_and_deconvnet_say_when_relus_applied_as_functions_kept_the_true_gradient():
    from cnnwidgets.methods import FunctionalReluWarning

    torch.manual_seed(0)
    model = FunctionalReluNet().eval()
    image = small_image()
    runner = MethodRunner(model, {1: image}.__getitem__, lambda r: None, no_error, background=False)
    twice = ("the model applied ReLU as a function 2 times (F.relu, torch.relu, Tensor.relu, or a ReLU-like "
             "clamp(min=0), F.relu6, F.hardtanh, F.leaky_relu): those kept the true gradient; use nn.ReLU "
             "modules for the exact method")
    try:
        for target in (0, 1, 0):  # every map says it, not only the first
            runner.submit(request_of("guided backprop", target=target))
            assert runner.result.request.target == target and runner.result.note == twice
        with pytest.warns(FunctionalReluWarning, match="2 time"):  # what the method itself counts
            guided_backprop(model, image.tensor, 0)
        runner.submit(request_of("deconvnet", layer="conv3", channel=1))  # one functional ReLU before conv3
        assert runner.result.note == twice.replace("2 times", "once")
        runner.submit(request_of("deconvnet", layer="conv2", channel=1))  # none before conv2
        assert runner.result.note == ""
        runner.submit(request_of("saliency", target=0))  # the plain gradient: nothing to say
        assert runner.result.note == ""
    finally:
        runner.close()


def test_no_note_for_a_model_with_relu_modules_only():
    torch.manual_seed(0)
    runner = MethodRunner(GatedNet().eval(), {1: small_image()}.__getitem__, lambda r: None, no_error,
                          background=False)
    try:
        for request in (request_of("guided backprop", target=0), request_of("deconvnet", layer="features.4"),
                        request_of("deconvnet", layer="features.0")):  # before the first ReLU: nothing to say
            runner.submit(request)
            assert runner.result.complete and runner.result.note == ""
    finally:
        runner.close()


class Relu6Net(torch.nn.Module):
    """Convolutions with ReLU6 and SiLU modules, as in MobileNetV2 and EfficientNet: no ReLU at all."""

    def __init__(self) -> None:
        super().__init__()
        nn = torch.nn
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU6(), nn.MaxPool2d(2),
                                      nn.Conv2d(6, 8, 3, padding=1), nn.SiLU())
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        return self.head(self.features(x).mean(dim=(2, 3)))


@pytest.mark.filterwarnings("ignore::cnnwidgets.methods.gradients.NoReluWarning")  # the runner says it in the note
def test_guided_backprop_and_deconvnet_say_when_the_model_applies_no_relu():
    torch.manual_seed(0)
    model = Relu6Net().eval()
    image = small_image()
    runner = MethodRunner(model, {1: image}.__getitem__, lambda r: None, no_error, background=False)
    note = ("the model applied no ReLU (its activation modules are ReLU6, SiLU); the modified backward rule acts "
            "only on nn.ReLU modules, so the result is the plain gradient")
    try:
        for target in (0, 1, 0):  # every map says it, not only the first
            runner.submit(request_of("guided backprop", target=target))
            assert runner.result.request.target == target and runner.result.note == note
            plain = saliency(model, image.tensor, target, absolute=False).abs().amax(dim=1)[0]
            np.testing.assert_allclose(runner.result.heat, plain.numpy(), rtol=1e-5, atol=1e-7)  # unchanged
        for layer in ("features.5", "features.4"):
            runner.submit(request_of("deconvnet", layer=layer, channel=1))
            assert runner.result.complete and runner.result.note == note
        runner.submit(request_of("saliency", target=0))  # the plain gradient: nothing to say
        assert runner.result.note == ""
    finally:
        runner.close()


@pytest.mark.filterwarnings("error::cnnwidgets.methods.MixedActivationWarning")  # said in the note, not twice
@pytest.mark.filterwarnings("error::cnnwidgets.methods.FunctionalReluWarning")
def test_the_method_panel_says_when_the_relu_rule_met_other_activations_or_no_relu_module():
    from tests.test_gradients import FunctionalOnlyNet, MixedNet

    torch.manual_seed(0)
    image = small_image()
    mixed = MethodRunner(MixedNet().eval(), {1: image}.__getitem__, lambda r: None, no_error, background=False)
    plain = MethodRunner(FunctionalOnlyNet().eval(), {1: image}.__getitem__, lambda r: None, no_error,
                         background=False)
    try:
        mixed.submit(request_of("guided backprop", target=0))
        note = mixed.result.note
        assert mixed.result.complete and "2 nn.ReLU modules" in note and "1 Hardswish" in note
        assert "1 Hardsigmoid" in note and "kept their true gradient" in note and "Sigmoid modules" not in note
        plain.submit(request_of("guided backprop", target=0))
        assert plain.result.complete and "the result is the plain input gradient" in plain.result.note
    finally:
        mixed.close()
        plain.close()


def test_deconvnet_says_when_the_channel_is_not_active_on_the_image():
    from cnnwidgets.methods.gradients import InactiveChannelWarning

    torch.manual_seed(0)
    model = GatedNet().eval()
    with torch.no_grad():
        model.features[0].bias[0] = -100.0  # channel 0 is negative everywhere, before and after batch norm
    image = small_image()
    runner = MethodRunner(model, {1: image}.__getitem__, lambda r: None, no_error, background=False)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", InactiveChannelWarning)  # the note says it: nothing is computed
            for layer in ("features.0", "features.1"):
                runner.submit(request_of("deconvnet", layer=layer, channel=0))
                result = runner.result
                assert result.complete and result.request.layer == layer and not result.heat.any()
                assert result.heat.shape == (32, 32) and result.heat.dtype == np.float32
                with Probe(model) as probe:
                    peak = float(probe.capture(image.tensor, [layer])[layer][0, 0].max())
                assert peak < 0 and result.note == (f"channel 0 is not active on this image (its largest value is "
                                                    f"{peak:.3g}): there is nothing to project")
            with pytest.warns(InactiveChannelWarning):  # what the function gives: the same zero map
                assert not project_channel(model, image.tensor, "features.1", 0).any()
            runner.submit(request_of("deconvnet", layer="features.1", channel=1))
            assert runner.result.heat.any() and runner.result.note == ""
    finally:
        runner.close()


@pytest.mark.filterwarnings("error::cnnwidgets.methods.FunctionalReluWarning")  # said in the note, not twice
def test_relus_of_other_threads_are_not_counted(gate):
    torch.manual_seed(0)
    runner = MethodRunner(FunctionalReluNet().eval(), {1: small_image()}.__getitem__, lambda r: None, no_error,
                          background=True)
    try:
        runner.submit(request_of("saliency", target=0))  # the runner's probe is made and described
        assert runner.wait_idle(30)
        gate.armed = True
        runner.submit(request_of("guided backprop", target=0))
        assert gate.entered.wait(30)  # inside the guided backprop forward pass, on the runner's thread
        y = torch.randn(4)
        for _ in range(3):  # ReLUs applied as functions here, meanwhile
            y = torch.nn.functional.relu(y) + torch.relu(y) + y.relu()
        gate.open()
        assert runner.wait_idle(30)
        assert runner.result.request.method == "guided backprop" and "2 times" in runner.result.note
    finally:
        gate.open()
        runner.close()


@pytest.mark.filterwarnings("error::cnnwidgets.methods.FunctionalReluWarning")  # said in the note, not twice
def test_the_method_caption_says_when_functional_relus_kept_the_true_gradient():
    torch.manual_seed(0)
    ex = Explorer(FunctionalReluNet().eval(), small_image().display, samples={}, device="cpu", background=False,
                  input_size=(3, 32, 32), method="guided backprop")
    try:
        assert ex.wait_idle(60)
        assert "applied ReLU as a function 2 times" in ex.method_view.caption.value
        ex.method = "saliency"
        assert ex.wait_idle(60) and "as a function" not in ex.method_view.caption.value
    finally:
        ex.close()


def test_an_error_of_a_request_superseded_meanwhile_is_not_reported(monkeypatch):
    import cnnwidgets.app.views as views

    torch.manual_seed(0)
    model = GatedNet().eval()
    real = views.occlusion_map
    runner = None

    def scan(*args, **kw):
        if runner.runs == 1:  # the user asks for another stride while the first map fails
            runner.submit(dataclasses.replace(request_of("occlusion"), stride=4))
            raise RuntimeError("deliberate failure of the superseded map")
        return real(*args, **kw)

    monkeypatch.setattr(views, "occlusion_map", scan)
    runner = MethodRunner(model, {1: small_image()}.__getitem__, lambda r: None, no_error, background=False)
    try:
        runner.submit(request_of("occlusion"))
        # no error reached the view (no_error fails the test); the newer map is the one shown
        assert runner.cancelled == 1 and runner.result is not None and runner.result.request.stride == 4
    finally:
        runner.close()


# ---------------------------------------------------------------- the same class named again, another target class
def counting_scans(monkeypatch) -> list:
    """Replaces the panel's occlusion_map by one that notes every scan it runs."""
    import cnnwidgets.app.views as views

    scans = []
    real = views.occlusion_map

    def scan(*args, **kw):
        result = real(*args, **kw)
        scans.append(result)
        return result

    monkeypatch.setattr(views, "occlusion_map", scan)
    return scans


def gated_runner(on_result=lambda result: None, **kw):
    """``(model, image, runner)``: a seeded GatedNet, a small image (id 1) and a synchronous runner
    over them that fails the test on any error."""
    torch.manual_seed(0)
    model = GatedNet().eval()
    image = small_image()
    return model, image, MethodRunner(model, {1: image}.__getitem__, on_result, no_error, background=False, **kw)


def fresh_map(model, image, request: MethodRequest):
    """The map a new runner computes for ``request``."""
    runner = MethodRunner(model, {1: image}.__getitem__, lambda r: None, no_error, background=False)
    try:
        runner.submit(request)
        return runner.result
    finally:
        runner.close()


def test_switching_the_occlusion_target_looks_the_map_up_without_a_scan(monkeypatch):
    shown, progress = [], []
    model, image, runner = gated_runner(shown.append, on_progress=lambda done, total: progress.append((done, total)))
    try:
        runner.submit(request_of("occlusion", target=1))
        total = runner.result.occlusion.total
        scans = counting_scans(monkeypatch)  # from here on
        for reused, k in enumerate((3, 0, 1), start=1):
            progress.clear()
            request = request_of("occlusion", target=k)
            runner.submit(request)
            result = runner.result
            assert len(scans) == reused - 1 and runner.runs == 1 and runner.reused == reused  # no scan of its own
            assert shown[-1] is result and result.request == request and result.target == k and result.complete
            assert result.occlusion.target == ClassProbability(k) and progress == [(total, total)]
            want = fresh_map(model, image, request)  # (a scan of the fresh runner's)
            np.testing.assert_allclose(result.heat, want.heat, rtol=1e-5, atol=1e-7)
            assert result.occlusion.unoccluded == pytest.approx(want.occlusion.unoccluded, rel=1e-5)
            assert np.abs(result.image.astype(int) - want.image.astype(int)).max() <= 1
            assert np.nanmax(np.abs(result.heat)) > 0  # the maps compared are not blank
        assert not np.allclose(shown[-2].heat, shown[-1].heat)  # another class: another map
        scans.clear()
        runner.submit(dataclasses.replace(request_of("occlusion", target=3), stride=4))  # another stride: a scan
        assert len(scans) == 1 and runner.runs == 2 and runner.result.occlusion.stride == (4, 4)
    finally:
        runner.close()


@pytest.mark.parametrize("method", ["occlusion", "saliency", "grad-cam"])
def test_the_most_probable_class_as_none_or_by_index_is_computed_once(monkeypatch, method):
    shown = []
    model, image, runner = gated_runner(shown.append)
    top = top_class(model, image.tensor)
    try:
        runner.submit(request_of(method, layer="features.4"))  # target None: the most probable class
        assert runner.runs == 1 and runner.result.target == top
        first = runner.result
        scans = counting_scans(monkeypatch)
        for target in (top, None, top):
            request = request_of(method, layer="features.4", target=target)
            runner.submit(request)
            assert runner.runs == 1 and runner.reused == 0 and not scans  # the map on screen, not a lookup
            assert shown[-1] is runner.result and runner.result.request == request and runner.is_current(request)
            assert runner.result.target == top and runner.result.heat is first.heat
        other = (top + 1) % 5
        runner.submit(request_of(method, layer="features.4", target=other))
        assert runner.result.target == other
        assert runner.runs == (1 if method == "occlusion" else 2)  # occlusion looks the other class up
    finally:
        runner.close()


def test_new_weights_after_an_occlusion_scan_make_a_target_switch_scan_again(monkeypatch):
    model, image, runner = gated_runner()
    try:
        runner.submit(request_of("occlusion", target=1))
        scans = counting_scans(monkeypatch)
        with torch.no_grad():
            model.head.weight.mul_(-2.0)  # a training step after the scan
        runner.submit(request_of("occlusion", target=2))
        assert len(scans) == 1 and runner.runs == 2 and runner.reused == 0
        with torch.no_grad():
            model.head.bias.add_(0.5)
        runner.probe.sync()  # the runner's probe took the new weights before the next request
        runner.submit(request_of("occlusion", target=1))
        assert len(scans) == 2 and runner.runs == 3 and runner.reused == 0
        runner.submit(request_of("occlusion", target=4))  # the same weights as the last scan: a lookup
        assert len(scans) == 2 and runner.runs == 3 and runner.reused == 1
        want = occlusion_map(model, image.tensor, ClassProbability(4), window=8, stride=2,
                             fill=image.fill_tensor("mean"), progress=False, device="cpu")
        np.testing.assert_allclose(runner.result.heat, want.drop, rtol=1e-4, atol=1e-6)
    finally:
        runner.close()


def test_a_new_target_class_in_the_explorer_shows_the_occlusion_map_without_a_scan(bundle):
    ex = explorer(bundle, method="occlusion")
    try:
        assert ex.wait_idle(60)
        runs, top = ex._methods.runs, ex.method_result.target
        other = (top + 1) % 10
        ex.target = other
        assert ex.wait_idle(60) and ex._methods.runs == runs and ex._methods.reused == 1
        result = ex.method_result
        assert result.target == other and result.complete and ex.method_view.image.value
        assert ex._class_name(other) in ex.method_view.caption.value
        assert ex.method_view.bar.layout.visibility == "hidden"  # the progress bar says it is done
        assert not ex.method_view.stale and not ex.status.is_error
        x = ex._images[ex._image_id].tensor
        want = occlusion_map(bundle.model, x, ClassProbability(other), window=result.occlusion.window,
                             stride=result.occlusion.stride, fill=ex._images[ex._image_id].fill_tensor(ex.fill),
                             progress=False, device="cpu")
        np.testing.assert_allclose(result.heat, want.drop, rtol=1e-4, atol=1e-6)
        ex.target = top  # the most probable class by its index: the map of the first scan again
        assert ex.wait_idle(60) and ex._methods.runs == runs and ex.method_result.target == top
    finally:
        ex.close()


def test_tiny_occlusion_changes_stay_pale_and_the_caption_says_how_small(bundle):
    """A model whose probabilities hardly move: its occlusion map is drawn on a scale of at least
    one percentage point, not blown up to full colour, and the caption gives the largest change."""
    from cnnwidgets.app.views import OCCLUSION_SCALE_FLOOR, occlusion_scale
    from cnnwidgets.render.occlusion import occlusion_overlay

    model = copy.deepcopy(bundle.model)
    head = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        head.weight.mul_(1e-3)  # logits almost equal: every probability stays near 1 / classes
        head.bias.zero_()
    ex = Explorer(model, zoo.sample_image("star"), samples={}, device="cpu", background=False,
                  box=(0, 0, 16, 16), method="occlusion", preprocess=bundle.preprocess,
                  denormalize=bundle.denormalize)
    try:
        ex.method_stride = 16
        assert ex.wait_idle(60) and not ex.status.is_error, ex.status.message
        result = ex.method_result
        largest = float(np.nanmax(np.abs(result.heat)))
        assert 0 < largest < OCCLUSION_SCALE_FLOOR and occlusion_scale(result.heat) == OCCLUSION_SCALE_FLOOR
        caption = ex.method_view.caption.value
        assert "full colour = a change of 1.0 points (the largest here is" in caption
        occ = result.occlusion
        image = ex._images[ex._image_id].display
        stretched = occlusion_overlay(result.heat, image, window=occ.window, stride=occ.stride, center=0.0,
                                      alpha=0.6, filled=occ.filled, gray_image=True)

        def colour(rgb):  # how far red and blue part: zero over the gray image
            return np.abs(rgb[..., 0].astype(int) - rgb[..., 2].astype(int)).max()

        assert colour(result.image) < colour(stretched) / 2
    finally:
        ex.close()
    assert occlusion_scale(np.array([[np.nan, -0.3], [0.1, np.nan]], dtype=np.float32)) == pytest.approx(0.3)
    assert occlusion_scale(np.full((2, 2), np.nan, dtype=np.float32)) == OCCLUSION_SCALE_FLOOR


def test_a_streaming_occlusion_map_is_redrawn_at_most_every_redraw_seconds(bundle, monkeypatch):
    """Partial maps are drawn at most every REDRAW_SECONDS (the progress moves with every batch);
    the first map that covers the image coarsely is drawn at once, and the complete one always."""
    from cnnwidgets.app import views

    ex = explorer(bundle, box=(10, 10, 12, 12), fill="black")
    try:
        images = {1: ex._images[ex._image_id]}
        request = MethodRequest("occlusion", 1, ex.layer, 0, None, window=12, stride=2, fill="black", device="cpu")

        def stream(interval):
            shown, progress = [], []
            monkeypatch.setattr(views, "REDRAW_SECONDS", interval)
            runner = MethodRunner(bundle.model, images.__getitem__, on_result=shown.append,
                                  on_error=lambda where, exc: pytest.fail(f"{where}: {exc}"),
                                  on_progress=lambda done, total: progress.append(done), background=False)
            runner.submit(request)
            runner.close()
            return shown, progress

        every, every_progress = stream(0.0)
        assert len(every) == len(every_progress) >= 4  # a map per batch
        held, held_progress = stream(1e9)
        assert held_progress == every_progress  # the bar moves with every batch all the same
        assert [r.complete for r in held] == [False, True]  # the coarse preview, then the complete map
        assert held[0].occlusion.preview_ready and held[0].occlusion.done == every[0].occlusion.done
        np.testing.assert_array_equal(held[-1].heat, every[-1].heat)
    finally:
        ex.close()


def test_naming_the_streaming_class_another_way_keeps_the_scan(monkeypatch):
    """While the top class's occlusion map streams (asked for as None), asking for that class by
    its index keeps the scan: nothing restarts, and the maps are shown as the new request's."""
    from cnnwidgets.app import views

    monkeypatch.setattr(views, "REDRAW_SECONDS", 0.0)  # a map per batch
    shown, asked, renamed = [], [], []

    def on_result(result):
        shown.append(result)
        if not asked and not result.complete:
            asked.append(request_of("occlusion", target=result.target))  # the same class, by index
            runner.submit(asked[0])  # (synchronous runner: on its own thread, mid-scan)
            renamed.append(shown[-1])
        elif len(renamed) == 1 and not result.complete:
            runner.submit(request_of("occlusion", target=None))  # back to the first name ...
            runner.submit(asked[0])  # ... and to the index again: the scan goes on under the last
            renamed.append(result)

    model, image, runner = gated_runner(on_result)
    try:
        runner.submit(request_of("occlusion", target=None))
        assert asked and len(renamed) == 2 and runner.runs == 1 and runner.cancelled == 0
        assert shown[-1].complete and shown[-1].request == asked[0] and runner.result.request == asked[0]
        assert all(r.request == asked[0] for r in shown[1:])  # the maps after it carry its name
        assert runner.is_current(asked[0])
        np.testing.assert_array_equal(runner.result.heat, fresh_map(model, image, asked[0]).heat)
    finally:
        runner.close()


def _no_evidence_net():
    from tests.test_cam import _no_evidence_net

    return _no_evidence_net()


def _zero_head_net():
    from tests.test_gradients import _zero_head_net

    return _zero_head_net()


@pytest.mark.parametrize("method, make_model, note", [
    ("grad-cam", _no_evidence_net, "zero everywhere: this layer holds no positive evidence"),
    ("grad-cam", _zero_head_net, "zero everywhere: the class score&#x27;s gradient is zero at every unit of this layer"),
    ("saliency", _zero_head_net, "zero everywhere: the score does not change with any pixel"),
    ("guided backprop", _zero_head_net, "zero everywhere: the score does not change with any pixel"),
])
def test_an_all_zero_map_says_so_in_its_caption_without_a_warning_from_the_thread(method, make_model, note):
    from cnnwidgets.methods import EmptyMapWarning

    picture = (np.random.default_rng(0).random((10, 10, 3)) * 255).astype(np.uint8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ex = Explorer(make_model(), picture, input_size=(3, 10, 10), samples={}, background=False, method=method,
                      layer="1")
        try:
            ex.target = 0  # class 0: no evidence anywhere (Grad-CAM), a score no pixel changes (gradients)
            assert ex.wait_idle(60)
            assert float(ex.method_result.heat.max()) == 0.0
            assert note in ex.method_view.caption.value
            ex.target = 1  # evidence: no such note
            assert ex.wait_idle(60)
            assert float(ex.method_result.heat.max()) > 0
            assert "zero everywhere" not in ex.method_view.caption.value
        finally:
            ex.close()
    assert not [w for w in caught if issubclass(w.category, EmptyMapWarning)]


def test_a_streaming_occlusion_map_says_about_how_long_it_still_needs():
    from cnnwidgets.widgets.methodview import time_left_text

    assert time_left_text(0.4) == "" and time_left_text(float("nan")) == ""
    assert time_left_text(40.2) == "about 40 s left" and time_left_text(200) == "about 3 min left"
    torch.manual_seed(0)
    nn = torch.nn
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 3)).eval()
    picture = (np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)
    ex = Explorer(model, picture, input_size=(3, 32, 32), samples={}, background=False, box=(0, 0, 8, 8))
    seen = []
    shown = ex.method_view.progress_to

    def record(done, total, seconds_left=None):
        shown(done, total, seconds_left)
        seen.append((done, total, seconds_left, ex.method_view.time_left.value))

    ex.method_view.progress_to = record
    try:
        ex.method_stride = 1  # 625 positions, streamed batch by batch
        ex.method = "occlusion"
        assert ex.wait_idle(60) and ex.method_result.complete
        partial = [s for s in seen if 0 < s[0] < s[1]]
        assert partial, seen
        for done, total, left, _ in partial:
            assert left is not None and left > 0
        assert seen[-1][0] == seen[-1][1] and seen[-1][3] == ""  # done: nothing left to say
        assert ex.method_view.time_left.layout.display is None
        ex.method = "saliency"
        assert ex.method_view.time_left.layout.display == "none"
    finally:
        ex.close()


def test_a_grad_cam_caption_says_when_the_map_is_from_the_models_first_layer():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 6, 3, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3)).eval()
    picture = (np.random.default_rng(0).random((12, 12, 3)) * 255).astype(np.uint8)
    ex = Explorer(model, picture, input_size=(3, 12, 12), samples={}, background=False, method="grad-cam",
                  layer="1")
    try:
        assert ex.wait_idle(60) and ex.method_error is None
        caption = ex.method_view.caption.value
        assert "Grad-CAM" in caption and "the model&#x27;s first layer" not in caption
        assert "the model's first layer (a vision transformer's patch embedding)" in caption
        ex.layer = "3"
        assert ex.wait_idle(60) and ex.method_error is None
        assert "first layer" not in ex.method_view.caption.value
    finally:
        ex.close()
