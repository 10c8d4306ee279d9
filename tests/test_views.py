"""The explorer's method panel (occlusion, saliency, guided backprop, deconvnet, Grad-CAM) and
the data-set dead-channel marks, checked against the plain functions they show."""

from __future__ import annotations

import copy
import threading
import time

import numpy as np
import pytest
import torch

from cnnwidgets import ModelSnapshot, Probe, zoo
from cnnwidgets.core.targets import ChannelActivation, ClassProbability
from cnnwidgets.app import Explorer
from cnnwidgets.app.views import METHODS, MethodRequest, MethodRunner
from cnnwidgets.core.hygiene import hook_count
from cnnwidgets.methods import deconvnet, dead_channels, grad_cam, guided_backprop, occlusion_map, saliency
from cnnwidgets.methods.cam import upsample
from cnnwidgets.methods.gradients import project_channel
from cnnwidgets.render.grid import MARK_COLOR


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
            assert ex.method_view.image.value  # something was sent to the browser
        assert not ex.status.is_error
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
        assert ex.wait_idle(60) and ex._methods.runs == runs  # no map of a size the user has not settled on
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


def test_method_errors_reach_the_status_line_and_the_widget_goes_on(bundle):
    ex = explorer(bundle, method="saliency")
    try:
        assert ex.wait_idle(60)
        ex.target = 10_000  # no such class
        assert ex.wait_idle(60)
        assert ex.status.is_error and "saliency" in ex.status.message and "10000" in ex.status.message
        # the map of class 1 is gone: nothing on screen claims to be the saliency of class 10000
        assert ex.method_result is None and ex.method_view.image.value == b""
        assert "failed" in ex.method_view.caption.value and "10000" in ex.method_view.caption.value
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
        for c in marked:
            assert (tile_outline(grid, layout, c) == MARK_COLOR).all(axis=1).all()
        for c in unmarked:
            assert not (tile_outline(grid, layout, c) == MARK_COLOR).all(axis=1).all()
        assert "3 dead over the data set" in ex.grid_caption.value
        assert ex.dead_marks["features.conv3"].sum() == 3
        ex.mark_dead(None)
        assert ex.wait_idle(60)
        assert not (tile_outline(ex.grid_image, layout, marked[0]) == MARK_COLOR).all(axis=1).all()
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
        found = ex.scan_dead(x, progress=False)
        assert set(found) == {"features.conv2"}
        np.testing.assert_array_equal(ex.dead_marks["features.conv2"], want)
        assert ex.wait_idle(60) and ex._frame.dead_in_data == int(want.sum())
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
