"""The explorer's controller, headless: which stage reruns, no backlog, errors, hygiene, from Python."""

from __future__ import annotations

import copy
import io
import re
import threading
import time
import warnings

import numpy as np
import pytest
import torch
import traitlets
from PIL import Image
from torch import nn

from cnnwidgets import ModelSnapshot, Probe
from cnnwidgets import render as R
from cnnwidgets.app import Explorer, ExplorerState, ImageInput, default_layer, explore, layer_items, resolve
from cnnwidgets.app.explorer import _picker_name
from cnnwidgets.app.inputs import default_denormalize, default_preprocess, to_pil
from cnnwidgets.core.hygiene import hook_count
from tests.helpers import reference_outputs

SIZE = 32


class Tiny(nn.Module):
    """Three conv stages and a linear head; optionally slow, optionally failing on a black corner."""

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(16, 12, 3, padding=1), nn.ReLU(),
        )
        self.head = nn.Linear(12, 5)
        self.delay = delay
        self.fail_on_black_corner = False

    def forward(self, x):
        if self.delay:
            time.sleep(self.delay)
        if self.fail_on_black_corner and bool((x[:, :, 0, 0] < -1.5).all()):
            raise RuntimeError("deliberate failure: black top-left corner")
        return self.head(self.features(x).mean(dim=(2, 3)))


def image(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random((SIZE, SIZE, 3)) * 155 + 100).astype(np.uint8)  # bright: no pixel near black


def other_notes(message: str) -> list[str]:
    """The status line's notes but the one about the default ImageNet normalisation (which every
    test model without 1000 outputs gets)."""
    return [part for part in message.split(" \u00b7 ") if part.startswith("note:") and "ImageNet's mean and std" not in part]


def make(model=None, **kw) -> Explorer:
    torch.manual_seed(0)
    model = model if model is not None else Tiny().eval()
    kw.setdefault("input_size", (3, SIZE, SIZE))
    kw.setdefault("samples", {"a": image(0), "b": image(1)})
    kw.setdefault("background", False)
    return Explorer(model, None if "image" in kw else kw.pop("img", None), **kw)


@pytest.fixture
def ex():
    explorer = make(box=(4, 4, 8, 8))
    yield explorer
    explorer.close()


def occluded_input(explorer: Explorer) -> torch.Tensor:
    prepared = explorer._images[explorer._image_id]
    return prepared.occluded(explorer.box, explorer.fill)


# ---------------------------------------------------------------- resolve (pure)
def test_resolve_splits_state_into_compute_and_render():
    s = ExplorerState(image_id=1, box=(1, 2, 3, 4), fill="gray", layer="a", channel=0, device="cpu")
    r = resolve(s)
    assert resolve(s.with_(channel=3)).compute == r.compute
    assert resolve(s.with_(cmap="magma")).compute == r.compute
    assert resolve(s.with_(norm="layer", sort=True, overlay=False)).compute == r.compute
    assert resolve(s.with_(box=(2, 2, 3, 4))).compute != r.compute
    assert resolve(s.with_(layer="b")).compute != r.compute
    assert resolve(s.with_(fill="blur")).compute != r.compute
    assert resolve(s.with_(show_scores=False)).compute != r.compute
    # the fill is irrelevant without a box
    none = s.with_(box=None)
    assert resolve(none.with_(fill="noise")) == resolve(none)
    # dragging only changes the drawing quality
    assert resolve(s.with_(dragging=True)).compute == r.compute
    assert resolve(s.with_(dragging=True)).render.draft and not r.render.draft
    # the target class matters only when scores are shown
    off = s.with_(show_scores=False)
    assert resolve(off.with_(target=2)) == resolve(off)


# ---------------------------------------------------------------- what is shown equals an independent computation
def test_initial_frame_shows_middle_conv_with_correct_activations_and_scores(ex):
    assert ex.layer == "features.3" == default_layer(ex.layers)
    x = occluded_input(ex)
    ref = reference_outputs(ex.probe.model, x, ["features.3"])["features.3"][0].numpy()
    np.testing.assert_allclose(ex.activations, ref, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        probs = torch.softmax(Tiny_copy(ex)(x)[0], 0).numpy()
    np.testing.assert_allclose(ex.scores["probs"], probs, rtol=1e-5, atol=1e-6)
    base = ex.baseline_activations
    assert base.shape == ex.activations.shape and not np.allclose(base, ex.activations)
    assert ex.grid_image.dtype == np.uint8 and ex.grid_image.ndim == 3
    assert not ex.status.is_error, ex.status.message


def Tiny_copy(ex: Explorer) -> nn.Module:
    return ex.probe.model


def test_grid_image_is_the_rendered_mosaic_of_the_activations(ex):
    ex.norm = "channel"
    layout = ex.grid.grid
    expected, _ = R.feature_grid(ex.activations, mode="channel", cmap="viridis", layout=layout,
                                 marked=R.dead_channel_mask(ex.baseline_activations))
    assert np.array_equal(ex.grid_image, expected)


def test_layer_items_group_spatial_layers_by_block(ex):
    items = layer_items(ex.layers)
    names = [name for _, _, name in items]
    assert "head" not in names and "features.0" in names and "features" in names
    assert all(group == "features" for group, _, _ in items)
    assert ex.layer_select.label_of("features.0") == "features.0  Conv2d  8\u00d732\u00d732"


def test_layer_menu_keeps_the_forward_order_of_blocks_and_top_level_layers():
    from cnnwidgets import Probe

    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Sequential(nn.Conv2d(4, 4, 3), nn.ReLU()),
                          nn.Conv2d(4, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    with Probe(model, input_size=(3, 16, 16)) as probe:
        items = layer_items(probe.layers)
    assert [(group, name) for group, _, name in items] == [
        ("top level", "0"), ("top level", "1"),
        ("2", "2.0"), ("2", "2.1"), ("2", "2"),  # a block after its layers: its output is made last
        ("top level (after 2)", "3"), ("top level (after 2)", "4"),
    ]
    # blocks ending on the same layer: the inner one first, as its output is made first
    nested = nn.Sequential(nn.Sequential(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())), nn.AdaptiveAvgPool2d(1))
    with Probe(nested, input_size=(3, 16, 16)) as probe:
        assert [name for _, _, name in layer_items(probe.layers)] == ["0.0.0", "0.0.1", "0.0", "0", "1"]


class _TutorialNet(nn.Module):
    """The PyTorch CIFAR-10 tutorial's network: one pooling module runs after each convolution."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.pool, self.conv2 = nn.Conv2d(3, 6, 5), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5)
        self.fc = nn.Linear(16 * 5 * 5, 10)

    def forward(self, x):
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x)))
        return self.fc(torch.flatten(x, 1))


def test_a_module_called_twice_is_listed_where_its_last_call_runs_and_says_so():
    import torchvision

    from cnnwidgets import Probe

    with Probe(_TutorialNet(), input_size=(3, 32, 32)) as probe:
        layers = probe.layers
        items = layer_items(layers)
    # the pooling layer shows its second output (16x5x5, after conv2), so it is listed there
    assert [name for _, _, name in items] == ["conv1", "conv2", "pool"]
    assert dict((name, label) for _, label, name in items)["pool"] == "pool  MaxPool2d  16×5×5  (last of 2 calls)"
    assert layers["pool"].calls == 2 and layers["pool"].last_call > layers["conv2"].last_call > layers["conv1"].last_call
    # a ResNet block's ReLU runs after bn1 and again after the residual sum: listed after bn2
    with Probe(torchvision.models.resnet18(weights=None), input_size=(3, 64, 64)) as probe:
        names = [name for _, _, name in layer_items(probe.layers)]
    block = names[names.index("layer1.0.conv1"):names.index("layer1.0") + 1]
    assert block == ["layer1.0.conv1", "layer1.0.bn1", "layer1.0.conv2", "layer1.0.bn2", "layer1.0.relu", "layer1.0"]
    # the grid's caption says which call is shown
    ex = Explorer(_TutorialNet(), image(0), input_size=(3, 32, 32), samples={}, background=False, layer="pool")
    try:
        assert "output of its last call (it runs 2 times)" in ex.grid_caption.value
        ex.layer = "conv2"
        assert "last call" not in ex.grid_caption.value
    finally:
        ex.close()


def test_long_layer_groups_are_split_by_pooling_stage_or_by_block():
    import torchvision

    from cnnwidgets import Probe

    def groups(model):
        with Probe(model, input_size=(3, 64, 64)) as probe:
            items = layer_items(probe.layers)
        runs: list[tuple[str, list[str]]] = []
        for group, _, name in items:
            if not runs or runs[-1][0] != group:
                runs.append((group, []))
            runs[-1][1].append(name)
        assert len({g for g, _ in runs}) == len(runs)  # each group is one run: a menu keeps the order
        return runs

    # VGG's flat `features` (21 layers): one stage per pooling layer, the block itself in the last
    vgg = groups(torchvision.models.vgg11(weights=None))
    assert [g for g, _ in vgg] == [f"features \u00b7 stage {n}" for n in range(1, 6)] + ["top level (after features)"]
    assert vgg[0][1] == ["features.0", "features.1", "features.2"] and vgg[4][1][-1] == "features"
    # MobileNetV2's `features` holds blocks: a group per block, none longer than the limit
    mobile = groups(torchvision.models.mobilenet_v2(weights=None))
    assert [g for g, _ in mobile][:3] == ["features.0", "features.1", "features.2"]
    assert all(len(names) <= 16 for _, names in mobile)
    assert all(name.startswith(g) for g, names in mobile[:-1] for name in names if name != "features")

    # blocks inside blocks: the outer block's output goes with its last inner layers, and a label
    # that both a run of direct layers and the outer block would get is never used twice
    class Nested(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            convs = [nn.Sequential(*[nn.Conv2d(4, 4, 3, padding=1) for _ in range(10)]) for _ in range(2)]
            self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Sequential(*convs))

        def forward(self, x):
            return self.features(x).mean(dim=(2, 3))

    nested = groups(Nested().eval())
    assert [g for g, _ in nested] == ["features", "features.2.0", "features.2.1"]
    assert nested[-1][1][-2:] == ["features.2", "features"] and nested[1][1][-1] == "features.2.0"


def test_the_explorer_opens_a_model_at_the_size_it_says_it_was_trained_at():
    class Cfg(nn.Sequential):  # a timm-style model with its pretrained configuration
        pretrained_cfg = {"input_size": (3, 40, 40)}

    model = Cfg(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)).eval()
    ex = Explorer(model, image(0), samples={}, background=False)  # no input_size: it is chosen
    try:
        assert ex.probe.input_size == (3, 40, 40) and ex.activations.shape[1:] == (38, 38)
    finally:
        ex.close()

    from cnnwidgets.app.explorer import _input_size_candidates

    class Big(Cfg):
        pretrained_cfg = {"input_size": (3, 299, 299)}  # also one of the usual sides: tried once

    tried = list(_input_size_candidates(Big(nn.Conv2d(3, 4, 3)), None, 3))
    assert tried[:2] == [(3, 299, 299), (3, 224, 224)] and tried.count((3, 299, 299)) == 1


# ---------------------------------------------------------------- which stage reruns
def test_channel_and_display_changes_render_without_forward(ex):
    before, forwards = ex.stats, ex.probe.stats.forwards
    ex.channel = 5
    ex.cmap = "magma"
    ex.norm = "layer"
    ex.sort = True
    ex.overlay = False
    after = ex.stats
    assert after["computes"] == before["computes"]
    assert after["renders"] == before["renders"] + 5
    assert ex.probe.stats.forwards == forwards
    assert ex.shown_state.channel == 5 and ex.grid.selected == 5


def test_box_move_runs_prefix_only_when_scores_hidden(ex):
    ex.show_scores = False
    n_modules = len(list(ex.probe.model.modules()))
    ex.probe.reset_stats()
    ex.box = (10, 10, 8, 8)
    assert ex.probe.stats.forwards == 1 and ex.probe.stats.full_forwards == 0
    # the prefix to features.3 stops before features.4 ... head
    assert ex.probe.stats.modules_executed < n_modules - 1
    ref = reference_outputs(ex.probe.model, occluded_input(ex), ["features.3"])["features.3"][0].numpy()
    np.testing.assert_allclose(ex.activations, ref, rtol=1e-5, atol=1e-5)
    assert ex.scores is None


def test_drag_inputs_bypass_the_probe_cache(ex):
    # occluded copies are seen once: looking them up costs time on every step and keeping them
    # would evict the unoccluded activations other views reuse
    ex.show_scores = False
    ex.dragging = True
    ex.probe.reset_stats()
    for i in range(12):
        ex.box = (i, 2 * i, 8, 8)
    assert ex.probe.stats.forwards == 12
    assert ex.probe.stats.cache_hits == 0 and ex.probe.stats.cache_misses == 0
    ex.dragging = False
    unoccluded = ex._images[ex._image_id].tensor
    ex.probe.capture(unoccluded, [ex.layer])
    assert ex.probe.stats.cache_hits == 1 and ex.probe.stats.forwards == 12
    ex.show_scores = True  # with scores too: one full forward per step, nothing cached
    ex.dragging = True
    ex.probe.reset_stats()
    for i in range(5):
        ex.box = (2 * i, i, 8, 8)
    assert ex.probe.stats.full_forwards == 5 and ex.probe.stats.forwards == 5
    assert ex.probe.stats.cache_hits == 0 and ex.probe.stats.cache_misses == 0
    ex.dragging = False


def test_a_drag_step_checks_the_users_model_once_and_still_follows_its_training(monkeypatch):
    torch.manual_seed(0)
    model = Tiny().eval()
    explorer = make(model, box=(4, 4, 8, 8))
    try:
        checks = []
        real = explorer.probe._user_fingerprint
        monkeypatch.setattr(explorer.probe, "_user_fingerprint", lambda: checks.append(1) or real())
        explorer.dragging = True
        for show_scores in (False, True):
            explorer.show_scores = show_scores
            checks.clear()
            for i in range(6):
                explorer.box = (i, 2 * i, 8, 8)
            assert len(checks) == 6  # one check per step, not one per call into the probe
        with torch.no_grad():
            model.features[0].weight.mul_(-1)
        explorer.box = (7, 3, 8, 8)
        assert explorer.stats["model_changes"] == 1
        ref = reference_outputs(model, occluded_input(explorer), [explorer.layer])[explorer.layer][0].numpy()
        np.testing.assert_allclose(explorer.activations, ref, rtol=1e-5, atol=1e-5)
    finally:
        explorer.close()


def test_box_move_with_scores_is_one_full_forward(ex):
    ex.probe.reset_stats()
    ex.box = (12, 6, 8, 8)
    assert ex.probe.stats.forwards == 1 and ex.probe.stats.full_forwards == 1
    ref = reference_outputs(ex.probe.model, occluded_input(ex), ["features.3"])["features.3"][0].numpy()
    np.testing.assert_allclose(ex.activations, ref, rtol=1e-5, atol=1e-5)


def test_a_layer_change_with_scores_runs_only_the_prefix(ex):
    # the class scores of the image and of its occluded copy are cached: the new layer needs only
    # its prefix, once for each
    probe = ex.probe
    probe.reset_stats()
    ex.layer = "features.0"
    assert probe.stats.forwards == 2 and probe.stats.full_forwards == 0
    x = ex._images[ex._image_id].tensor
    want = reference_outputs(probe.model, x, ["features.0"])["features.0"][0].numpy()
    np.testing.assert_allclose(ex.baseline_activations, want, rtol=1e-5, atol=1e-5)
    assert not ex.status.is_error, ex.status.message


def test_opening_runs_the_discovery_pass_on_the_image_itself():
    """With the input size given, the pass that describes the layers runs on the image (not on a
    blank one first): its output counts the classes and serves the first frame's scores, so the
    only other full forward is the occluded image's."""
    ex = make(box=(4, 4, 8, 8))
    try:
        stats = ex.probe.stats
        assert stats.discoveries == 1 and stats.full_forwards == 1  # the occluded image's scores
        assert ex.scores["probs"].shape == (5,) and not ex.status.is_error, ex.status.message
        x = ex._images[ex._image_id].tensor
        with torch.no_grad():
            want = torch.softmax(ex.probe.model(x), dim=1)[0].numpy()
        np.testing.assert_allclose(ex.scores["baseline"], want, rtol=1e-5, atol=1e-7)  # the discovery's output
    finally:
        ex.close()


class SqueezeGated(nn.Module):
    """Convolutions whose maps shrink to 1 x 1 gates (squeeze-and-excitation) in between, one of them a
    subclass of nn.Conv2d with its own name, and a block that merely contains a convolution."""

    class WeightStandardized(nn.Conv2d):
        pass

    class ConvBlock(nn.Sequential):
        pass

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.body = SqueezeGated.ConvBlock(SqueezeGated.WeightStandardized(8, 8, 3, padding=1), nn.ReLU())
        self.gate1 = nn.Conv2d(8, 2, 1)
        self.gate2 = nn.Conv2d(2, 8, 1)
        self.gate3 = nn.Conv2d(8, 8, 1)
        self.last = nn.Conv2d(8, 4, 3, padding=1)

    def forward(self, x):
        x = self.body(self.stem(x))
        s = x.mean(dim=(2, 3), keepdim=True)
        x = x * torch.sigmoid(self.gate3(self.gate2(self.gate1(s))))
        return self.last(x).mean(dim=(2, 3))


def test_default_layer_counts_convolutions_by_class_and_leaves_out_one_pixel_gates():
    from cnnwidgets.core.layers import discover_layers

    layers = discover_layers(SqueezeGated().eval(), torch.zeros(1, 3, 16, 16))
    # a subclass of nn.Conv2d is a convolution whatever its name; a block holding one is not
    assert layers["body.0"].is_conv and not layers["body"].is_conv and layers["gate1"].is_conv
    # the maps larger than 1 x 1 come from stem, body.0 and last: the middle of those, not a gate
    assert default_layer(layers) == "body.0"


def test_default_layer_prefers_a_grid_whose_tiles_can_be_read():
    """Widths 32, 64, 256, 256, 512: the middle convolution by count has 256 channels; the last
    one up to it with at most READABLE_CHANNELS opens instead. When every one up to the middle is
    wider, the middle one opens."""
    from cnnwidgets.app.explorer import READABLE_CHANNELS
    from cnnwidgets.core.layers import discover_layers

    def chain(widths):
        parts, before = [], 3
        for width in widths:
            parts += [nn.Conv2d(before, width, 3, padding=1), nn.ReLU()]
            before = width
        return discover_layers(nn.Sequential(*parts).eval(), torch.zeros(1, 3, 8, 8))

    assert READABLE_CHANNELS < 256
    assert default_layer(chain([32, 64, 256, 256, 512])) == "2"  # the 64-channel one, not "4"
    assert default_layer(chain([32, 64, 128, 128, 512])) == "4"  # the middle one reads well: kept
    assert default_layer(chain([256, 256, 512, 512, 512])) == "4"  # none narrow enough: the middle


def test_non_finite_weights_are_named_in_the_status_line_not_drawn_silently():
    model = Tiny().eval()
    with torch.no_grad():
        model.features[3].weight[2].fill_(float("nan"))  # one filter: one channel, and every score after it
    ex = make(model, layer="features.3")
    try:
        message = ex.status.message
        assert "1 of 16 channels of features.3 hold NaN" in message and "class scores are NaN" in message
        assert not np.isfinite(ex.activations[2]).any() and np.isfinite(np.delete(ex.activations, 2, 0)).all()
        ex.layer = "features.0"  # before the bad filter: only the scores are wrong
        assert "channels of" not in ex.status.message and "class scores are NaN" in ex.status.message
        with torch.no_grad():
            model.features[3].weight[2].fill_(0.1)  # repaired: the note goes
        ex.box = (2, 2, 8, 8)
        assert ex.wait_idle(30)
        assert "NaN" not in ex.status.message, ex.status.message
    finally:
        ex.close()


def test_layer_change_is_prefix_and_returning_is_a_cache_hit(ex):
    ex.layer = "features.0"
    ex.probe.reset_stats()
    ex.layer = "features.6"
    assert ex.probe.stats.full_forwards == 0 and ex.probe.stats.forwards >= 1
    assert ex.activations.shape == (12, 8, 8)
    ex.probe.reset_stats()
    computes = ex.stats["computes"]
    ex.layer = "features.0"
    assert ex.probe.stats.forwards == 0 and ex.stats["computes"] == computes + 1
    assert ex.activations.shape == (8, 32, 32)


def test_channel_is_clamped_when_the_new_layer_has_fewer_channels(ex):
    ex.channel = 15
    ex.layer = "features.0"  # 8 channels
    assert ex.channel == 0 and ex.channel_slider.max == 7
    assert not ex.status.is_error, ex.status.message
    with pytest.raises(traitlets.TraitError, match="out of range 0..7"):
        ex.channel = 8


def _dead_first_channels(count: int) -> Tiny:
    """Tiny whose middle convolution's first ``count`` channels never reach a positive value."""
    torch.manual_seed(0)
    model = Tiny().eval()
    with torch.no_grad():
        model.features[3].bias[:count] = -1e4
    return model


@pytest.mark.parametrize("background", [False, True])
def test_the_explorer_opens_on_the_first_channel_that_is_not_dead(background):
    explorer = make(_dead_first_channels(3), layer="features.4", box=None, background=background)
    try:
        assert explorer.wait_idle(60)
        dead = explorer._frame.computed.baseline.dead
        assert dead[:3].all() and not dead[3]
        assert explorer.channel == 3
        assert explorer.activations[3].max() > 0  # the map shown is not blank
        assert explorer._frame.channel == 3
        assert explorer.stats["renders"] == 1  # the first frame was drawn on channel 3, not redrawn
        # and choosing it cost no forward pass: as many as an explorer asked for channel 3 made
        asked = make(_dead_first_channels(3), layer="features.4", box=None, background=background, channel=3)
        try:
            assert asked.wait_idle(60) and asked.stats["forwards"] == explorer.stats["forwards"]
        finally:
            asked.close()
    finally:
        explorer.close()


def test_a_channel_asked_for_is_kept_though_it_is_dead():
    explorer = make(_dead_first_channels(3), layer="features.4", channel=1, box=None)
    try:
        assert explorer.channel == 1
    finally:
        explorer.close()


def test_the_explorer_opens_on_channel_0_when_it_is_alive_or_all_are_dead():
    explorer = make(layer="features.4", box=None)
    try:
        assert not explorer._frame.computed.baseline.dead[0] and explorer.channel == 0
    finally:
        explorer.close()
    explorer = make(_dead_first_channels(16), layer="features.4", box=None)
    try:
        assert explorer._frame.computed.baseline.dead.all() and explorer.channel == 0
    finally:
        explorer.close()


def test_drag_end_redraws_final_quality_without_forward(ex):
    ex.dragging = True
    ex.box = (6, 6, 8, 8)
    forwards, renders = ex.probe.stats.forwards, ex.stats["renders"]
    ex.dragging = False
    assert ex.probe.stats.forwards == forwards and ex.stats["renders"] == renders + 1
    assert ex.shown_state.box == (6, 6, 8, 8) and not ex.shown_state.dragging


def test_occluder_switch_and_size(ex):
    assert "what the occluder removed" in ex.panel_caption.value
    assert "cnnw-caption" in ex.panel_caption._dom_classes  # wraps in its column: the layout stays still
    assert "cnnw-caption" in ex.input_caption._dom_classes
    ex.occluder_controls.enabled = False
    assert ex.box is None
    np.testing.assert_array_equal(ex.activations, ex.baseline_activations)
    assert "no change: the occluder is off" in ex.panel_caption.value  # not an unexplained blank pane
    assert "press on the image (or Enter) to place it" in ex.input_caption.value
    # the fill and size do nothing now: greyed out, until an occlusion scan takes its window from them
    controls = ex.occluder_controls
    assert controls.fill_dropdown.disabled and controls.size_slider.disabled
    ex.method = "occlusion"
    assert not controls.fill_dropdown.disabled and not controls.size_slider.disabled
    ex.method = "none"
    assert controls.fill_dropdown.disabled
    ex.occluder_controls.enabled = True
    assert not controls.fill_dropdown.disabled and not controls.size_slider.disabled
    assert ex.box == (4, 4, 8, 8)
    assert "what the occluder removed" in ex.panel_caption.value
    ex.occluder_controls.size = 12
    assert ex.box == (2, 2, 12, 12)
    ex.box = (28, 28, 12, 12)
    assert ex.box == (20, 20, 12, 12)  # clamped into the 32x32 image
    assert ex.canvas.box == ex.box
    ex.box = (4, 4, 16, 8)  # drawn non-square with the corner handle
    assert ex.occluder_controls.size == 16  # the slider shows the longer side
    ex.occluder_controls.size = 8
    assert ex.box == (8, 6, 8, 4)  # the same shape, half the size, about the same centre


def test_the_occluder_switched_back_on_after_a_smaller_image_comes_back_inside_it():
    def own_size(pil):  # each image at its own size
        return torch.from_numpy(np.asarray(pil.convert("RGB")).copy()).permute(2, 0, 1).float() / 255

    big, small = image(0).repeat(2, axis=0).repeat(2, axis=1), image(1)[:16, :16]
    ex = make(preprocess=own_size, denormalize=lambda x: x.permute(1, 2, 0).clamp(0, 1).numpy(), input_size=None,
              samples={"big": big, "small": small}, box=(40, 40, 12, 12))
    assert ex.box == (40, 40, 12, 12)
    ex.occluder_controls.enabled = False
    ex.set_image(small)
    ex.occluder_controls.enabled = True  # the last box lay outside the 16x16 image
    assert ex.box == (4, 4, 12, 12) and not ex.status.is_error
    ex.close()


def test_a_smaller_image_with_the_box_below_its_height_moves_the_box_inside_it():
    # the canvas clamps the box to the new width and height together; clamped to the new width
    # and the old height first, the box lay outside the new image and the switch half failed
    def own_size(pil):
        return torch.from_numpy(np.asarray(pil.convert("RGB")).copy()).permute(2, 0, 1).float() / 255

    wide, small = image(0).repeat(2, axis=0).repeat(2, axis=1)[:48], image(1)[:20, :20]
    ex = make(preprocess=own_size, denormalize=lambda x: x.permute(1, 2, 0).clamp(0, 1).numpy(), input_size=None,
              samples={"wide": wide, "small": small}, box=(50, 36, 8, 8))
    try:
        ex.image = "small"  # as the picker does
        assert not ex.status.is_error, ex.status.message
        assert ex.input_image.shape == (20, 20, 3)
        assert ex.box == ex.canvas.box == (12, 12, 8, 8)
        assert (ex.canvas.image_width, ex.canvas.image_height) == (20, 20)
        assert ex.shown_state.image_id == ex.state().image_id and ex.shown_state.box == ex.box
        ex.image = "wide"
        ex.box = (50, 36, 8, 8)
        ex.set_image(small, "again")  # the same through the API
        assert ex.image == "again" and ex.box == ex.canvas.box == (12, 12, 8, 8)
        assert not ex.status.is_error, ex.status.message
    finally:
        ex.close()


def test_hover_reported_by_the_browser_gives_the_channel_statistics(ex):
    assert ex.hover_text == ""
    ex.grid.hover = 2  # what the browser reports while the pointer is over tile 2
    stats = R.channel_stats(ex.activations)
    assert ex.hover_text == stats.describe(2)


def test_a_click_on_a_tile_of_the_previous_layers_grid_is_refused_in_the_status_line(ex):
    ex.grid.set_state({"hover": 12})  # the pointer over tile 12 of features.3 (16 channels)
    ex.layer = "features.0"  # 8 channels; the browser still shows the old grid
    assert ex.grid.hover == -1 and ex.hover_text == ""
    ex.grid.set_state({"selected": 12})  # a click on tile 12, as the browser sends it
    assert ex.channel == 0 and ex.grid.selected == 0  # the outline stays on the channel shown
    assert ex.status.is_error and "tile 12 is not a channel of layer 'features.0' (channels 0..7)" in ex.status.message
    ex.grid.set_state({"selected": 5})  # a click on the new grid
    assert ex.channel == 5 and ex.shown_state.channel == 5 and not ex.status.is_error


def test_hover_text_of_a_tile_the_layer_does_not_have_is_empty(ex):
    ex.layer = "features.0"
    ex.grid.set_state({"hover": 12})  # reported against the old grid, after the layer changed
    assert ex.hover_text == ""
    ex.grid.set_state({"hover": 7})
    assert ex.hover_text == R.channel_stats(ex.activations).describe(7)


def test_grid_click_and_score_pick(ex):
    x, y, w, h = ex.grid.grid.tile_rect(7)
    assert ex.grid.click(x + w // 2, y + h // 2) == 7
    assert ex.channel == 7 and ex.shown_state.channel == 7
    target = ex.scores["rows"][-1]["index"]
    ex.scores_view.pick(target)
    assert ex.target == target and ex.shown_state.target == target
    assert ex.scores_view.title == "class scores (change vs. no occluder, in percentage points)"
    ex.scores_view.pick(target)  # picked again: back to following the most probable class
    assert ex.target is None and ex.shown_state.target is None
    ex.box = None  # no occluder: no change to show, and the heading does not promise one
    assert ex.scores_view.title == "class scores"


def test_fills_change_the_input_as_documented():
    prep = ImageInput.prepare(image(0), default_preprocess((SIZE, SIZE)), default_denormalize)
    box = (4, 6, 8, 5)
    outs = {}
    for fill in ("gray", "mean", "black", "blur", "noise"):
        out = prep.occluded(box, fill)
        inside = (..., slice(6, 11), slice(4, 12))
        mask = torch.zeros_like(out, dtype=torch.bool)
        mask[inside] = True
        assert torch.equal(out[~mask], prep.tensor[~mask]), fill
        outs[fill] = out[inside]
    pixels = lambda t: t * prep.pixel_std + prep.pixel_mean  # noqa: E731
    torch.testing.assert_close(pixels(outs["gray"]), torch.full_like(outs["gray"], 0.5), atol=1e-5, rtol=0)
    torch.testing.assert_close(pixels(outs["black"]), torch.zeros_like(outs["black"]), atol=1e-5, rtol=0)
    torch.testing.assert_close(outs["mean"][0, :, 0, 0], prep.tensor.mean(dim=(2, 3))[0])
    assert torch.equal(prep.occluded(box, "noise"), prep.occluded(box, "noise"))  # same every frame
    assert not torch.allclose(outs["blur"], prep.tensor[..., 6:11, 4:12])
    assert prep.occluded(None) is prep.tensor
    with pytest.raises(ValueError, match="does not lie inside"):
        prep.occluded((30, 30, 8, 8))
    with pytest.raises(ValueError, match="accepted: gray, mean, black, blur, noise"):
        prep.occluded(box, "pink")


def test_image_picker_switches_image(ex):
    grid_before = ex.grid_image.copy()
    first_id = ex._image_id
    ex.picker.dropdown.value = "b"
    assert ex._image_id != first_id and ex.image == "b"
    assert not np.array_equal(ex.grid_image, grid_before)
    assert np.array_equal(ex.input_image, ex._images[ex._image_id].display)


def test_the_image_trait_and_the_picker_show_the_same_entry(ex):
    a_pixels = ex.input_image.copy()
    ex.image = "b"
    assert ex.picker.value == "b" and ex.picker.dropdown.value == "b"
    assert not np.array_equal(ex.input_image, a_pixels)
    ex.picker.dropdown.value = "a"  # the user picks 'a' again in the browser
    assert ex.image == "a" and np.array_equal(ex.input_image, a_pixels)
    with pytest.raises(traitlets.TraitError, match=r"unknown image 'c'; the picker offers 'a', 'b' .*set_image"):
        ex.image = "c"
    assert ex.image == "a" and ex.picker.dropdown.value == "a" and not ex.status.is_error


def test_set_image_becomes_the_selected_picker_entry(ex):
    a_pixels = ex.input_image.copy()
    ex.set_image(image(5), "mine")
    assert ex.image == "mine" and ex.picker.value == "mine" and ex.picker.dropdown.value == "mine"
    assert ex.picker.names == ["a", "b", "mine"]
    mine = ex.input_image.copy()
    ex.picker.dropdown.value = "a"
    assert ex.image == "a" and np.array_equal(ex.input_image, a_pixels)
    ex.image = "mine"  # the entry shows the image given to set_image again
    assert np.array_equal(ex.input_image, mine)
    ex.set_image(image(6))
    assert ex.image == "your image" and ex.picker.dropdown.value == "your image"
    with pytest.raises(ValueError, match="non-empty name"):
        ex.set_image(image(7), "")
    with pytest.raises(ValueError, match="not an image file"):
        ex.set_image(b"not an image", "broken")
    assert ex.image == "your image" and "broken" not in ex.picker.names


def test_a_sample_that_cannot_be_read_leaves_the_picker_on_the_image_shown():
    ex = make(samples={"a": image(0), "broken": b"not an image"})
    try:
        image_id = ex._image_id
        ex.picker.dropdown.value = "broken"
        assert ex.status.is_error and "image 'broken'" in ex.status.message and "not an image file" in ex.status.message
        assert ex._image_id == image_id
        assert ex.image == "a" and ex.picker.value == "a" and ex.picker.dropdown.value == "a"
        ex.image = "broken"  # from Python: the same
        assert ex.image == "a" and ex.picker.dropdown.value == "a" and ex.status.is_error
    finally:
        ex.close()


# ---------------------------------------------------------------- errors reach the status line
def test_bad_upload_reaches_status_line_and_widget_keeps_working(ex):
    image_id = ex._image_id
    entry = ex.picker.add_upload("notes.txt", b"this is not an image")
    # in plain words: the file, what is wrong with it, no exception class or object address
    assert ex.status.message == ("notes.txt (uploaded): the data given is not an image file in a format that can be "
                                 "read (PNG, JPEG, GIF, BMP, TIFF, WebP ...); the image shown is unchanged")
    assert ex.status.is_error
    assert ex._image_id == image_id
    assert ex.image == "a" and ex.picker.dropdown.value == "a"  # the picker shows the image still shown
    assert ex.picker.names == ["a", "b"] and ex.picker.data_for(entry) is None  # the failed upload is not offered
    ex.box = (0, 0, 8, 8)
    assert not ex.status.is_error and ex.shown_state.box == (0, 0, 8, 8)


def test_good_upload_is_used(ex):
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image(5)).save(buf, format="PNG")
    entry = ex.picker.add_upload("mine.png", buf.getvalue())
    assert not ex.status.is_error
    assert np.abs(ex.input_image.astype(int) - image(5)).max() <= 2
    # a file that cannot be read, then the one shown once more: the error about the other file goes
    ex.picker.add_upload("broken.png", b"\x89PNG\r\n\x1a\n garbage")
    assert ex.status.is_error and ex.picker.value == entry
    ex.picker.add_upload("mine.png", buf.getvalue())
    assert not ex.status.is_error and ex.status.message.endswith("mine.png (uploaded) is the image shown")


def test_model_error_reaches_status_line_and_explorer_recovers():
    ex = make(box=(4, 4, 8, 8), fill="black")
    try:
        ex.probe.model.fail_on_black_corner = True
        assert not ex.out_of_date
        ex.box = (0, 0, 8, 8)
        assert ex.status.is_error and "black top-left corner" in ex.status.message
        assert ex.stats["errors"] == 1
        assert ex.shown_state.box == (4, 4, 8, 8)  # the last good frame stays ...
        # ... grayed out, and said to be out of date
        assert ex.out_of_date and "not updated" in ex.grid_caption.value
        assert all("cnnw-stale" in view._dom_classes for view in (ex.grid, ex.panel, ex.scores_view))
        ex.box = (10, 10, 8, 8)
        assert not ex.status.is_error and ex.shown_state.box == (10, 10, 8, 8)
        assert not ex.out_of_date and "not updated" not in ex.grid_caption.value
        assert not any("cnnw-stale" in view._dom_classes for view in (ex.grid, ex.panel, ex.scores_view))
        ex.box = (0, 0, 8, 8)
        assert ex.status.is_error and ex.out_of_date
        ex.box = (10, 10, 8, 8)  # back to the frame still on screen: nothing to compute, all is well
        assert not ex.status.is_error and ex.shown_state == ex.state() and not ex.out_of_date
    finally:
        ex.close()


def test_a_good_frame_while_dragging_ends_the_error_of_a_failed_one():
    ex = make(box=(4, 4, 8, 8), fill="black")
    try:
        ex.dragging = True
        ex.probe.model.fail_on_black_corner = True
        ex.box = (0, 0, 8, 8)
        assert ex.status.is_error and "black top-left corner" in ex.status.message
        ex.box = (10, 10, 8, 8)  # still dragging: the model works again
        assert ex.shown_state.box == (10, 10, 8, 8) and not ex.status.is_error
        messages = []
        ex.status.observe(lambda change: messages.append(change["new"]), names="message")
        ex.box = (12, 12, 8, 8)  # with no error to end, drag frames leave the status line alone
        assert ex.shown_state.box == (12, 12, 8, 8) and messages == []
    finally:
        ex.close()


def test_an_error_of_a_state_superseded_meanwhile_is_not_reported():
    ex = make(box=(4, 4, 8, 8), fill="black")
    try:
        reported = []
        real = ex.controller._on_error
        ex.controller._on_error = lambda where, exc: (reported.append(str(exc)), real(where, exc))
        copy_ = ex.probe.model
        forward = copy_.forward
        moved = []

        def failing_once(x):
            if not moved:  # the mouse moves on while this input fails
                moved.append(True)
                ex.box = (12, 12, 8, 8)
                raise RuntimeError("deliberate failure of the superseded input")
            return forward(x)

        copy_.forward = failing_once
        dropped = ex.stats["dropped"]
        ex.box = (0, 0, 8, 8)
        # the newer state was served and shown; the old one's error never reached the status line
        assert reported == [] and not ex.status.is_error
        assert ex.shown_state.box == (12, 12, 8, 8) and ex.stats["dropped"] == dropped + 1
    finally:
        ex.close()


def test_worker_thread_survives_errors():
    ex = make(box=(4, 4, 8, 8), fill="black", background=True)
    try:
        assert ex.wait_idle(60)
        ex.probe.model.fail_on_black_corner = True
        ex.box = (0, 0, 8, 8)
        assert ex.wait_idle(60)
        assert ex.status.is_error and "black top-left corner" in ex.status.message
        ex.box = (16, 16, 8, 8)
        assert ex.wait_idle(60)
        assert ex.controller._thread.is_alive()
        assert not ex.status.is_error and ex.shown_state.box == (16, 16, 8, 8)
    finally:
        ex.close()


def test_bad_values_are_rejected_with_clear_messages(ex):
    with pytest.raises(traitlets.TraitError, match="Did you mean: 'features.3'"):
        ex.layer = "features.33"
    with pytest.raises(traitlets.TraitError, match=r"not a \(C, H, W\) feature map"):
        ex.layer = "head"
    with pytest.raises(traitlets.TraitError, match="positive width"):
        ex.box = (0, 0, 0, 4)
    if not torch.cuda.is_available():
        with pytest.raises(traitlets.TraitError, match="CUDA is not available"):
            ex.device = "cuda"
    assert ex.layer == "features.3"
    for top_k, error in ((0, ValueError), (-1, ValueError), (2.5, TypeError), (True, TypeError)):
        with pytest.raises(error, match="top_k must be an int >= 1"):
            make(top_k=top_k)
    for size in ((3,), (3, 32), (3, 32, 0), 32, (3, 32.5, 32)):
        with pytest.raises(ValueError, match=r"input_size must be \(C, H, W\), three positive ints .*; got "):
            make(input_size=size)


def test_device_names_are_normalised_to_the_device_menus(ex):
    ex.device = "cpu:0"
    assert ex.device == "cpu" and ex.device_select.value == "cpu" and ex.state().device == "cpu"
    ex.device = "auto"
    assert ex.device == ex.device_select.value == ex.device_select.options[0]
    ex.device = "cpu"
    with pytest.raises(traitlets.TraitError, match="unknown device 'gpu'"):
        ex.device = "gpu"
    if not torch.cuda.is_available():
        with pytest.raises(traitlets.TraitError, match="CUDA is not available"):
            ex.device = "cuda:0"
    else:
        ex.device = f"cuda:{torch.cuda.current_device()}"
        assert ex.device == "cuda" and ex.device_select.value == "cuda"
        ex.device = "cpu"
    assert ex.device == "cpu" and ex.device_select.value == "cpu" and not ex.status.is_error


def test_classes_without_names_read_as_class_n_in_scores_and_captions():
    ex = make(box=(4, 4, 8, 8), method="saliency")  # Tiny has no class names
    try:
        ex.wait_idle(30)
        target = ex.method_result.target  # the top class: no target was picked
        assert target is not None and f"of class {target};" in ex.method_view.caption.value
        labels = [row["label"] for row in ex.scores["rows"]]
        assert labels and all(label == f"class {row['index']}" for label, row in zip(labels, ex.scores["rows"]))
    finally:
        ex.close()


def test_occlusion_caption_names_the_box_and_keeps_its_length_while_the_map_streams():
    from cnnwidgets.app.explorer import _percent

    ex = make(box=(4, 4, 8, 6), fill="black")
    captions = []
    real_show = ex.method_view.show
    ex.method_view.show = lambda data, caption: (captions.append(caption), real_show(data, caption))
    try:
        ex.method_stride = 2
        ex.method = "occlusion"
        assert ex.wait_idle(60) and ex.method_result.complete
        total = ex.method_result.occlusion.total
        assert len(captions) >= 2  # streamed: a coarse preview first
        assert "when a 8\u00d76 black box covers each place (stride 2)" in captions[-1]  # width x height
        assert captions[-1].endswith(f"{total}/{total} positions")
        # every caption shown while it streamed differs only in its numbers, never in its shape
        shapes = {re.sub(r"[0-9.]+", "#", caption) for caption in captions}
        assert len(shapes) == 1, shapes
    finally:
        ex.close()
    assert _percent(0.0005, "points") == "0.050 points" and _percent(0.00053) == "0.053%"


def test_occlusion_caption_says_so_when_no_place_changes_the_class():
    model = Tiny().eval()
    with torch.no_grad():  # the head ignores the features: every class keeps its probability
        model.head.weight.zero_()
    from cnnwidgets.methods import NoOcclusionEffectWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ex = make(model, box=(4, 4, 8, 8))
        try:
            ex.method_stride = 4
            ex.method = "occlusion"
            assert ex.wait_idle(60) and ex.method_result.complete
            caption = ex.method_view.caption.value
            assert "no place changes it" in caption and "full colour" not in caption, caption
            assert not ex.status.is_error, ex.status.message  # a map of zeros is drawn, not refused
        finally:
            ex.close()
    # the caption says it, not a warning printed from the method panel's thread
    assert not [w for w in caught if issubclass(w.category, NoOcclusionEffectWarning)]
    ex = make(box=(4, 4, 8, 8))  # a model that does change: the colour key as usual
    try:
        ex.method_stride = 4
        ex.method = "occlusion"
        assert ex.wait_idle(60) and ex.method_result.complete
        caption = ex.method_view.caption.value
        assert "full colour = a change of" in caption and "no place changes it" not in caption, caption
    finally:
        ex.close()


def test_the_change_view_is_red_where_the_occluder_lowered_the_activation():
    class Brightness(nn.Module):  # one channel: the mean of the input's channels, pixel by pixel
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 1, 1)
            self.head = nn.Linear(1, 2)
            with torch.no_grad():
                self.conv.weight.fill_(1 / 3)
                self.conv.bias.zero_()

        def forward(self, x):
            return self.head(self.conv(x).mean(dim=(2, 3)))

    ex = make(Brightness().eval(), box=(4, 4, 8, 8), fill="black", layer="conv")  # a bright image
    try:
        assert ex.wait_idle(30)
        right = ex.channel_image[:, -SIZE:].astype(int)  # the change view, at input resolution
        inside, outside = right[8, 8], right[SIZE - 3, SIZE - 3]
        assert inside[0] > inside[2] + 60, inside  # the black box lowered the brightness: red
        assert abs(outside[0] - outside[2]) < 20, outside  # nothing changed there: neutral
        assert "red</span> where the activation went down" in ex.panel_caption.value
    finally:
        ex.close()


def test_the_shipped_shape_samples_are_offered_only_to_models_of_their_classes():
    torch.manual_seed(0)
    ten = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10)).eval()
    five = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5)).eval()
    opened = [Explorer(m, image(0), input_size=(3, SIZE, SIZE), background=False) for m in (ten, five)]
    try:
        assert opened[0].picker.names == ["your image"]  # circles and stars mean nothing to it
        # five outputs without the shapes' class names (a five-class flowers model, say) get no shapes either
        assert opened[1].picker.names == ["your image"]
    finally:
        for ex in opened:
            ex.close()
    default = Explorer(ten, input_size=(3, SIZE, SIZE), background=False)  # no image given: the samples
    try:
        assert "circle" in default.picker.names
    finally:
        default.close()


def test_method_stride_takes_any_positive_int_and_the_menu_shows_it():
    ex = make(box=(4, 4, 8, 8), method="occlusion", method_stride=2)
    try:
        assert ex.method_view.stride_menu.value == 2 and ex.method_result.occlusion.stride == (2, 2)
        ex.method_stride = 3
        assert ex.method_view.stride_menu.value == 3 and 3 in ex.method_view.stride_menu.options
        assert ex.method_result.occlusion.stride == (3, 3)
        for bad in (0, -8, True):
            with pytest.raises(traitlets.TraitError, match="method_stride must be a positive int"):
                ex.method_stride = bad
        assert ex.method_stride == 3 and ex.method_view.stride_menu.value == 3
        ex.method_view.stride_menu.value = 16  # picked in the browser
        assert ex.method_stride == 16 and ex.method_result.occlusion.stride == (16, 16)
        with pytest.raises(traitlets.TraitError, match="method_stride must be a positive int"):
            make(method_stride=0)
        assert not ex.status.is_error
    finally:
        ex.close()


def test_a_four_channel_image_for_a_four_channel_model_says_its_fourth_channel_is_not_the_models(tmp_path):
    class RGBD(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(4, 6, 3, padding=1)
            self.head = nn.Linear(6, 3)

        def forward(self, x):
            return self.head(torch.relu(self.conv(x)).mean(dim=(2, 3)))

    def rgb_plus_ones(pil):  # what a user's preprocess can do with the RGB image it is given
        rgb = torch.from_numpy(np.asarray(pil, dtype=np.float32) / 255).permute(2, 0, 1)
        return torch.cat([rgb, torch.ones(1, *rgb.shape[1:])])

    rgba = np.random.default_rng(0).integers(0, 255, (SIZE, SIZE, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    note = "the image's fourth channel (transparency, or depth) is composited over white before preprocess="
    ex = make(RGBD().eval(), img=rgba, preprocess=rgb_plus_ones, denormalize=lambda x: x[:3].permute(1, 2, 0).numpy(),
              input_size=None, samples={"rgb": rgba[:, :, :3], "file": str(tmp_path / "rgba.png")})
    try:
        assert ex.wait_idle() and note in ex.status.message and not ex.status.is_error
        ex.image = "rgb"
        assert ex.wait_idle() and note not in ex.status.message
        ex.image = "file"  # an RGBA file too
        assert ex.wait_idle() and note in ex.status.message
    finally:
        ex.close()
    rgb_model = make(img=rgba)  # an RGB model: transparency over white is the documented rule, nothing to say
    try:
        assert rgb_model.wait_idle() and note not in rgb_model.status.message
    finally:
        rgb_model.close()


def test_a_model_whose_every_map_is_empty_at_the_input_size_is_told_so():
    class Crop(nn.Module):
        def forward(self, x):
            return x[:, :, 100:, 100:]

    class CropOnly(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.crop, self.head = Crop(), nn.Linear(3, 2)

        def forward(self, x):
            return self.head(self.crop(x).sum(dim=(2, 3)))

    with Probe(CropOnly(), input_size=(3, 32, 32)) as probe:
        with pytest.raises(ValueError, match=r"no layer of the model has a feature map with at least one unit at this "
                                             r"input size: 'crop' are empty .*; use a larger input"):
            default_layer(probe.layers)


def test_the_four_channel_note_follows_uploads_and_channel_first_sources():
    from cnnwidgets.app.inputs import ImageInput

    def rgb_plus_ones(pil):
        rgb = torch.from_numpy(np.asarray(pil, dtype=np.float32) / 255).permute(2, 0, 1)
        return torch.cat([rgb, torch.ones(1, *rgb.shape[1:])])

    def show(x):
        return x[:3].permute(1, 2, 0).numpy()

    rgba = np.random.default_rng(0).integers(0, 255, (SIZE, SIZE, 4), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buffer, format="PNG")
    four = (buffer.getvalue(), np.moveaxis(rgba, 2, 0).copy(), torch.from_numpy(rgba).permute(2, 0, 1)[None] / 255)
    for source in four:  # an upload's bytes, a (4, H, W) array, a (1, 4, H, W) tensor
        assert ImageInput.prepare(source, rgb_plus_ones, show).fourth_channel_dropped, type(source)
    assert not ImageInput.prepare(rgba[:, :, :3], rgb_plus_ones, show).fourth_channel_dropped


def test_the_enlargement_note_of_a_grayscale_model_does_not_speak_of_imagenet():
    from cnnwidgets.app.explorer import _reshape_note
    from cnnwidgets.app.inputs import ImageInput

    def prepared(channels):
        return ImageInput(name="x", tensor=torch.zeros(1, channels, 224, 224),
                          display=np.zeros((224, 224, 3), np.uint8), source_size=(64, 64))

    gray, rgb = _reshape_note(prepared(1)), _reshape_note(prepared(3))
    assert "enlarged to 224x224 (the default preprocessing)" in gray and "ImageNet" not in gray
    assert "enlarged to 224x224 and normalised as ImageNet photos are" in rgb


def test_method_takes_the_function_names_and_flags_take_only_bools():
    ex = make(box=(4, 4, 8, 8), method="grad_cam")  # spelled as the function
    try:
        assert ex.method == "grad-cam"
        for spelling, name in (("guided_backprop", "guided backprop"), ("Grad-CAM", "grad-cam"),
                               ("Saliency", "saliency"), ("deconvnet", "deconvnet")):
            ex.method = spelling
            assert ex.method == name and ex.method_view.method == name
        with pytest.raises(traitlets.TraitError, match=r"expected any of \['none', 'occlusion', 'saliency'"):
            ex.method = "gradcam++"
        assert ex.method == "deconvnet"
        for flag in ("show_scores", "sort", "overlay", "method_signed", "dragging"):
            before = getattr(ex, flag)
            for bad in (1, 0, "yes", None):
                with pytest.raises(traitlets.TraitError, match=f"The '{flag}' trait"):
                    setattr(ex, flag, bad)
            assert getattr(ex, flag) == before
        ex.show_scores = np.bool_(False)
        assert ex.show_scores is False
    finally:
        ex.close()
    with pytest.raises(traitlets.TraitError, match="The 'show_scores' trait"):
        make(show_scores=1)


def test_a_probe_is_refused_with_what_to_pass_instead():
    with Probe(Tiny().eval()) as probe:
        with pytest.raises(TypeError, match=r"explore needs the model itself .* not a Probe: the explorer makes its own"):
            make(probe)


# ---------------------------------------------------------------- no backlog
class Gate:
    """Lets a test hold the worker inside a forward pass (class-level: the probe deep-copies models)."""

    entered = threading.Semaphore(0)
    tokens = threading.Semaphore(0)


class Gated(Tiny):
    def __init__(self) -> None:
        super().__init__()
        self.gated = False

    def forward(self, x):
        if self.gated:
            Gate.entered.release()
            if not Gate.tokens.acquire(timeout=30):
                raise RuntimeError("test gate never opened")
        return super().forward(x)


@pytest.fixture
def gated():
    Gate.entered = threading.Semaphore(0)
    Gate.tokens = threading.Semaphore(0)
    ex = make(Gated().eval(), box=(0, 0, 8, 8), background=True)
    assert ex.wait_idle(60)
    shown = []
    original = ex._show_frame
    ex.controller._on_frame = lambda s, f: (shown.append(s), original(s, f))
    ex.probe.model.gated = True
    yield ex, shown
    ex.probe.model.gated = False
    for _ in range(10):
        Gate.tokens.release()
    ex.close()


def test_burst_of_200_moves_computes_at_most_a_couple_and_ends_exactly_on_the_last(gated):
    ex, shown = gated
    before = ex.stats
    ex.box = (1, 3, 8, 8)
    assert Gate.entered.acquire(timeout=30)  # the first move is being computed (held there)
    for i in range(2, 201):  # the other 199 moves arrive meanwhile, as a fast drag delivers them
        ex.box = (i % 24, (3 * i) % 24, 8, 8)
    last = ex.box
    ex.probe.model.gated = False
    Gate.tokens.release()
    assert ex.wait_idle(60)
    after = ex.stats
    assert after["requests"] - before["requests"] == 200
    assert after["computes"] - before["computes"] == 2  # the first move and the last, nothing between
    assert after["skipped"] - before["skipped"] == 198
    assert ex.shown_state.box == last == (200 % 24, 600 % 24, 8, 8)
    ref = reference_outputs(ex.probe.model, occluded_input(ex), [ex.layer])[ex.layer][0].numpy()
    np.testing.assert_allclose(ex.activations, ref, rtol=1e-5, atol=1e-5)


def test_the_grid_fades_while_another_layer_is_computed_and_not_for_a_channel(gated):
    ex, shown = gated
    assert not ex.grid_busy
    ex.channel = 3  # drawn from the activations at hand: no forward to wait for
    assert not ex.grid_busy
    ex.layer = "features.0"
    assert ex.grid_busy  # the grid still shows features.3 while features.0 is computed
    assert Gate.entered.acquire(timeout=30)
    ex.layer = "features.3"  # back to the layer on screen: nothing to wait for
    assert not ex.grid_busy
    ex.layer = "features.6"
    assert ex.grid_busy
    ex.probe.model.gated = False
    for _ in range(4):
        Gate.tokens.release()
    assert ex.wait_idle(60) and ex.shown_state.layer == "features.6" and not ex.grid_busy


def test_a_failed_frame_leaves_the_grid_unfaded():
    ex = make(box=(0, 0, 8, 8), fill="black")
    try:
        ex.probe.model.fail_on_black_corner = True
        ex.layer = "features.0"  # its frame fails: the grid keeps the last good one, not faded
        assert ex.status.is_error and "black top-left corner" in ex.status.message
        assert ex.shown_state.layer == "features.3" and not ex.grid_busy
    finally:
        ex.close()


def test_submit_never_waits_for_the_worker(gated):
    ex, shown = gated
    ex.box = (1, 1, 8, 8)
    assert Gate.entered.acquire(timeout=30)  # the worker is inside the forward pass now
    computes = ex.stats["computes"]
    for i in range(50):
        ex.box = (i % 20, 2, 8, 8)  # would hang here if submitting waited for the worker
    assert not ex.controller.idle and ex.stats["computes"] == computes
    ex.probe.model.gated = False
    Gate.tokens.release()
    assert ex.wait_idle(60)
    assert ex.shown_state.box == (49 % 20, 2, 8, 8)
    assert ex.stats["computes"] == computes + 1


def test_stale_frame_for_another_layer_is_dropped(gated):
    ex, shown = gated
    ex.box = (8, 8, 8, 8)
    assert Gate.entered.acquire(timeout=30)  # computing features.3 for the new box
    ex.layer = "features.0"  # the user moves on meanwhile
    ex.probe.model.gated = False
    Gate.tokens.release()
    assert ex.wait_idle(60)
    assert [s.layer for s in shown] == ["features.0"]
    assert ex.stats["dropped"] == 1


def test_marks_given_while_a_frame_is_drawn_reach_the_screen():
    ex = make(box=(4, 4, 8, 8), background=True)
    try:
        assert ex.wait_idle(60)
        read, marked_now = threading.Event(), threading.Event()
        original = ex.controller._marks

        def slow_marks(layer):  # the render stage reads the marks, then mark_dead() comes in
            marks = original(layer)
            read.set()
            assert marked_now.wait(30)
            return marks

        ex.controller._marks = slow_marks
        ex.box = (2, 2, 8, 8)
        assert read.wait(30)
        ex.controller._marks = original
        ex.mark_dead({ex.layer: [1, 2]})
        marked_now.set()
        assert ex.wait_idle(60)
        marked = ex._current()[0].marked
        assert marked is not None and np.flatnonzero(marked).tolist() == [1, 2]
    finally:
        ex.close()


def test_frames_during_a_drag_are_shown_as_previews(gated):
    ex, shown = gated
    ex.dragging = True
    assert ex.wait_idle(60)  # a draft redraw of the current box, no forward
    shown.clear()
    for i in range(1, 5):
        ex.box = (i, i, 8, 8)
        assert Gate.entered.acquire(timeout=30)  # worker computes (i, i)
        if i < 4:
            ex.box = (i + 1, i + 1, 8, 8)  # (i+1, i+1) pending while (i, i) finishes: shown as a preview
            Gate.tokens.release()
    ex.probe.model.gated = False
    Gate.tokens.release()
    ex.dragging = False
    assert ex.wait_idle(60)
    boxes = [s.box for s in shown]
    assert boxes[:4] == [(1, 1, 8, 8), (2, 2, 8, 8), (3, 3, 8, 8), (4, 4, 8, 8)]
    assert shown[-1].box == (4, 4, 8, 8) and not shown[-1].dragging
    assert ex.stats["dropped"] == 0


# ---------------------------------------------------------------- close and hygiene
def test_close_leaves_no_hooks_and_model_unchanged():
    torch.manual_seed(0)
    model = Tiny().train()
    model.features[0].register_forward_hook(lambda *a: None)
    snapshot = ModelSnapshot.take(model)
    ex = make(model, box=(2, 2, 8, 8), background=True)
    for i in range(30):
        ex.box = (i % 20, 4, 8, 8)
    ex.layer = "features.0"
    ex.channel = 3
    ex.fill = "noise"
    assert ex.wait_idle(60)
    thread = ex.controller._thread
    ex.close()
    assert not thread.is_alive()
    assert ex.probe.closed
    snapshot.assert_unchanged(model)
    assert sum(hook_count(m) for m in model.modules()) == 1  # only the user's own hook
    ex.close()  # twice is fine


def test_close_while_busy_returns():
    ex = make(Tiny(delay=0.3).eval(), box=(0, 0, 8, 8), background=True)
    ex.box = (5, 5, 8, 8)
    ex.close()
    assert not ex.controller._thread.is_alive()


class _Stuck(nn.Module):
    """Tiny's layers; its forward blocks until ``release`` is set, once ``stuck`` is."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = Tiny().eval()
        self.stuck = threading.Event()
        self.release = threading.Event()
        self.entered = threading.Event()

    def __deepcopy__(self, memo):  # the probe's copy shares the events (and copies the layers)
        twin = _Stuck.__new__(_Stuck)
        nn.Module.__init__(twin)
        twin.inner = copy.deepcopy(self.inner, memo)
        twin.stuck, twin.release, twin.entered = self.stuck, self.release, self.entered
        return twin

    def forward(self, x):
        if self.stuck.is_set():
            self.entered.set()
            self.release.wait(30)
        return self.inner(x)


def test_close_does_not_wait_for_a_long_forward_and_frees_the_copy_once_it_returns(monkeypatch):
    from cnnwidgets.app import worker

    monkeypatch.setattr(worker, "CLOSE_WAIT", 0.2)
    model = _Stuck().eval()
    ex = make(model, box=(0, 0, 8, 8), background=True)
    assert ex.wait_idle(60)
    thread, probe = ex.controller._thread, ex.probe
    model.stuck.set()
    ex.box = (5, 5, 8, 8)
    assert model.entered.wait(30)  # the worker is inside the forward now
    start = time.perf_counter()
    with pytest.warns(RuntimeWarning, match="forward pass of the model was still running after 0.2 s"):
        ex.close()
    assert time.perf_counter() - start < 5  # it did not wait for the forward (30 s)
    assert thread.is_alive() and not probe.closed
    model.release.set()
    thread.join(30)
    assert not thread.is_alive() and probe.closed  # freed by the worker once the forward returned
    assert sum(hook_count(m) for m in model.modules()) == 0


def test_the_status_line_says_that_the_models_own_forward_hooks_do_not_run():
    torch.manual_seed(0)
    model = Tiny().eval()
    handle = model.features[0].register_forward_hook(lambda module, args, out: out * 2)
    ex = make(model)
    try:
        assert "own forward hooks do not run here (forward hook <lambda> on 'features.0' (Conv2d))" in ex.status.message
    finally:
        ex.close()
    handle.remove()
    ex = make(model)
    try:
        assert "hooks" not in ex.status.message
    finally:
        ex.close()


def test_with_a_slow_model_the_grid_fades_while_a_new_occluder_position_is_computed():
    ex = make(Tiny(delay=0.3).eval(), box=(0, 0, 8, 8), background=True)
    try:
        assert ex.wait_idle(60) and not ex.grid_busy
        ex.box = (6, 6, 8, 8)
        assert ex.grid_busy  # the maps shown are the previous position's
        assert ex.wait_idle(60) and not ex.grid_busy
    finally:
        ex.close()
    quick = make(Tiny().eval(), box=(0, 0, 8, 8), background=True)
    try:
        assert quick.wait_idle(60)
        quick.box = (6, 6, 8, 8)  # a quick model sends no fade for every drag step
        assert not quick.grid_busy
        assert quick.wait_idle(60)
    finally:
        quick.close()


class _OneImageAtATime(nn.Module):
    """Tiny's layers behind a forward that takes one image (flattens the batch, as x.view(1, -1))."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = Tiny().eval()

    def forward(self, x):
        assert x.shape[0] == 1, "one image at a time"
        return self.inner(x)


def test_an_occlusion_map_of_a_one_image_model_says_so_in_its_caption_not_in_a_warning():
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        ex = make(_OneImageAtATime().eval(), box=(4, 4, 8, 8), method="occlusion", method_stride=4)
        try:
            assert ex.method_result is not None and ex.method_result.complete
            assert ex.method_result.occlusion.one_image
            assert "one image per forward pass" in ex.method_view.caption.value
        finally:
            ex.close()


def test_a_model_that_takes_seconds_per_update_gets_a_note_on_how_to_make_it_live(monkeypatch):
    import cnnwidgets.app.explorer as explorer_module

    monkeypatch.setattr(explorer_module, "SLOW_FORWARD_NOTE_SECONDS", 0.2)
    ex = make(Tiny(delay=0.3).eval(), box=(0, 0, 8, 8))
    try:
        note = r"each update takes \d+\.\d s \(forward passes on a 3x\d+x\d+ input on cpu\)"
        assert re.search(note, ex.status.message)
        assert "smaller input_size=" in ex.status.message
        assert "a GPU (device=)" in ex.status.message  # on the CPU
    finally:
        ex.close()
    quick = make(Tiny().eval(), box=(0, 0, 8, 8))
    try:
        assert "each update takes" not in quick.status.message
    finally:
        quick.close()


def test_explorer_threads_do_not_accumulate():
    before = threading.active_count()
    for _ in range(3):
        make(background=True).close()
    assert threading.active_count() <= before


def test_a_close_that_was_interrupted_is_finished_by_the_next():
    ex = make(box=(4, 4, 8, 8), background=True, method="saliency")
    assert ex.wait_idle(60)
    grid, methods = ex.controller._thread, ex._methods._thread
    method_probe = ex._methods.probe

    def interrupted_join(timeout=None):  # the user interrupts close() while it waits for the method thread
        del methods.join
        raise KeyboardInterrupt

    methods.join = interrupted_join
    with pytest.raises(KeyboardInterrupt):
        ex.close()
    ex.close()  # again: this one does what the first left undone
    assert not grid.is_alive() and not methods.is_alive()
    assert ex.probe.closed and method_probe.closed
    assert ex.grid.comm is None and ex.status.comm is None
    ex.close()  # and once done, closing again does nothing


def test_an_interrupt_while_the_constructor_draws_the_first_frame_leaves_nothing_open(monkeypatch):
    from ipywidgets.widgets.widget import _instances

    from cnnwidgets.app.controller import Controller

    made = []

    def interrupted(controller, state, generation):  # synchronous: the first frame is drawn in the constructor
        made.append(controller)
        raise KeyboardInterrupt

    before = set(_instances)
    monkeypatch.setattr(Controller, "_draw", interrupted)
    with pytest.raises(KeyboardInterrupt):
        make(box=(4, 4, 8, 8))
    (controller,) = made
    assert controller.probe.closed and controller.idle
    assert set(_instances) - before == set()  # the caller got no explorer to close: none of its widgets stays
    monkeypatch.undo()
    with pytest.raises(KeyError, match="unknown layer"):
        make(layer="no such layer")  # refused once the views were made
    assert set(_instances) - before == set()


class Interrupting(Tiny):
    """Raises ``raising`` (a KeyboardInterrupt, say) from its forward while it is set; just once
    with ``once``."""

    def __init__(self) -> None:
        super().__init__()
        self.raising: BaseException | None = None
        self.once = False

    def forward(self, x):
        raising = self.raising
        if raising is not None:
            if self.once:
                self.raising = None
            raise raising
        return super().forward(x)


@pytest.mark.parametrize("raised", [KeyboardInterrupt, SystemExit])
def test_an_interrupt_the_model_raises_on_the_grid_thread_is_reported_and_the_grid_goes_on(raised):
    ex = make(Interrupting().eval(), box=(4, 4, 8, 8), background=True)
    try:
        assert ex.wait_idle(60)
        ex.probe.model.raising = raised("raised in the forward pass")
        ex.box = (8, 8, 8, 8)
        assert ex.wait_idle(60)
        assert ex.status.is_error and f"{raised.__name__}: raised in the forward pass" in ex.status.message
        ex.probe.model.raising = None
        ex.box = (12, 12, 8, 8)
        assert ex.wait_idle(60)
        assert ex.controller._thread.is_alive()
        assert ex.shown_state.box == (12, 12, 8, 8) and not ex.status.is_error
    finally:
        ex.close()


def test_an_interrupt_the_model_raises_on_the_method_thread_is_reported_and_the_panel_goes_on():
    ex = make(Interrupting().eval(), box=(4, 4, 8, 8), background=True, method="saliency")
    try:
        assert ex.wait_idle(60) and ex.method_result is not None
        ex._methods.probe.model.raising = KeyboardInterrupt("raised in the forward pass")
        ex.method = "grad-cam"
        assert ex.wait_idle(60)
        assert ex.status.message == "method 'grad-cam': KeyboardInterrupt: raised in the forward pass"
        assert ex.method_result is None and "failed: raised in the forward pass" in ex.method_view.caption.value
        ex._methods.probe.model.raising = None
        ex.target = 2
        assert ex.wait_idle(60)
        assert ex._methods._thread.is_alive()
        assert ex.method_result.request.method == "grad-cam" and ex.method_result.target == 2
        assert not ex.status.is_error
    finally:
        ex.close()


def test_an_interrupt_of_a_synchronous_frame_reaches_the_caller_and_leaves_the_grid_idle():
    ex = make(Interrupting().eval(), box=(4, 4, 8, 8))
    try:
        ex.probe.model.raising, ex.probe.model.once = KeyboardInterrupt(), True
        with pytest.raises(KeyboardInterrupt):
            ex.box = (8, 8, 8, 8)
        assert ex.wait_idle(0)  # nothing is left marked as in progress
        assert ex.status.is_error and "KeyboardInterrupt" in ex.status.message
        ex.box = (12, 12, 8, 8)
        assert ex.shown_state.box == (12, 12, 8, 8) and not ex.status.is_error
    finally:
        ex.close()


def test_an_interrupt_of_a_synchronous_method_map_reaches_the_caller_and_the_map_is_computed_next_time():
    ex = make(Interrupting().eval(), box=(4, 4, 8, 8), method="saliency")
    try:
        ex._methods.probe.model.raising, ex._methods.probe.model.once = KeyboardInterrupt(), True
        with pytest.raises(KeyboardInterrupt):
            ex.method = "grad-cam"
        assert ex.wait_idle(0)  # nothing is left marked as in progress
        # the panel says what happened, not "computing", and shows no earlier method's map
        assert ex.method_result is None and "failed: KeyboardInterrupt" in ex.method_view.caption.value
        ex.box = (8, 8, 8, 8)  # any change: the map that was interrupted is computed now
        assert ex.wait_idle(0)
        assert ex.method_result.request.method == "grad-cam"
        assert ex.method_view.caption.value.startswith("<b>Grad-CAM</b>") and not ex.status.is_error
        ex.method = "saliency"  # the map shown before the interrupt is computed again too
        assert ex.method_result.request.method == "saliency"
    finally:
        ex.close()


# ---------------------------------------------------------------- devices and the one-liner
def test_device_switch_recomputes_on_the_new_device(ex):
    ex.device = "cpu"
    assert ex.probe.device.type == "cpu"
    if torch.cuda.is_available():
        cpu = ex.activations.copy()
        ex.device = "cuda"
        assert ex.probe.device.type == "cuda" and ex.shown_state.device.startswith("cuda")
        np.testing.assert_allclose(ex.activations, cpu, rtol=1e-3, atol=1e-3)
        assert not ex.status.is_error


def test_explore_on_a_module_with_an_image():
    torch.manual_seed(0)
    ex = explore(Tiny().eval(), image(3), input_size=(3, SIZE, SIZE), samples={}, background=False)
    try:
        assert ex.image == "your image" and ex.picker.names == ["your image"]
        assert ex.box == (12, 12, 8, 8) and ex.activations.shape == (16, 16, 16)  # a centred quarter-size box
    finally:
        ex.close()


def test_a_compiled_model_is_explored_through_the_module_it_wraps():
    model = Tiny().eval()
    ex = explore(torch.compile(model), image(3), input_size=(3, SIZE, SIZE), samples={}, background=False)
    try:
        assert not ex.status.is_error, ex.status.message
        assert set(ex.layers) <= {name for name, _ in model.named_modules()}  # its own names, no "_orig_mod."
        x = occluded_input(ex)
        with torch.no_grad():
            expected = reference_outputs(model, x, [ex.layer])[ex.layer][0]
        torch.testing.assert_close(torch.from_numpy(ex.activations), expected, rtol=1e-4, atol=1e-5)
    finally:
        ex.close()


class Segmenter(nn.Module):
    """Tiny's features with a per-pixel head: (N, classes, H, W) out, no class scores."""

    def __init__(self) -> None:
        super().__init__()
        self.features = Tiny().features
        self.head = nn.Conv2d(12, 3, 1)

    def forward(self, x):
        return self.head(self.features(x))


def test_a_model_without_class_scores_shows_its_maps_and_says_why_scores_are_missing():
    ex = make(Segmenter().eval(), box=(4, 4, 8, 8))
    try:
        assert ex.show_scores and ex.scores is None
        assert ex.status.is_error and "class scores of shape (N, classes)" in ex.status.message
        assert "(1, 3, 8, 8)" in ex.status.message
        assert ex.grid_image.size and ex.activations.ndim == 3  # the feature maps are there
        ex.show_scores = False
        assert not ex.status.is_error
    finally:
        ex.close()


def test_maps_and_scores_follow_a_change_of_the_users_weights():
    model = Tiny().eval()
    ex = make(model, box=(4, 4, 8, 8), layer="features.3")
    try:
        ex.wait_idle()
        with torch.no_grad():  # e.g. an optimizer step in another cell while the explorer is open
            for p in model.parameters():
                p.mul_(1.5)
        ex.channel = 3  # no forward pass is needed for a channel switch, but the maps are stale
        ex.wait_idle()
        x, clean = occluded_input(ex), ex._images[ex._image_id].tensor
        with torch.no_grad():
            expected = reference_outputs(model, x, ["features.3"])["features.3"][0]
            baseline = reference_outputs(model, clean, ["features.3"])["features.3"][0]
            probs, base_probs = torch.softmax(model(x), 1)[0], torch.softmax(model(clean), 1)[0]
        np.testing.assert_allclose(ex.activations, expected.numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(ex.baseline_activations, baseline.numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(ex.scores["probs"], probs.numpy(), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(ex.scores["baseline"], base_probs.numpy(), rtol=1e-4, atol=1e-6)
        assert ex.controller.stats.model_changes == 1
        ex.box = (6, 6, 8, 8)
        ex.wait_idle()
        assert ex.controller.stats.model_changes == 1  # unchanged weights are not a change
    finally:
        ex.close()


class Switchable(Tiny):
    """Fails while its ``broken`` buffer is set (a model the user is still fixing)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("broken", torch.tensor(0.0))

    def forward(self, x):
        if float(self.broken) > 0:
            raise RuntimeError("deliberate failure: the model is broken")
        return super().forward(x)


def test_a_request_that_failed_is_tried_again_once_the_weights_change():
    model = Switchable().eval()
    ex = make(model, box=(4, 4, 8, 8))
    try:
        assert not ex.status.is_error
        with torch.no_grad():
            model.broken.fill_(1.0)  # the user breaks the model in another cell
        ex.channel = 1
        assert ex.status.is_error and "the model is broken" in ex.status.message
        ex.channel = 2  # the same computation with the same weights: not tried again
        assert ex.controller.stats.errors == 1
        with torch.no_grad():
            model.broken.zero_()  # and fixes it
        ex.channel = 3
        assert not ex.status.is_error, ex.status.message
        assert ex.scores is not None and ex.shown_state.channel == 3 and ex.controller.stats.errors == 1
    finally:
        ex.close()


def test_a_single_logit_model_shows_the_sigmoid_probability():
    torch.manual_seed(0)
    model = Tiny().eval()
    model.head = nn.Linear(12, 1)
    ex = make(model, box=None)
    try:
        with torch.no_grad():
            expected = torch.sigmoid(model(ex._images[ex._image_id].tensor))[0, 0]
        (row,) = ex.scores["rows"]
        assert row["prob"] == pytest.approx(float(expected), rel=1e-5) and row["prob"] < 0.99
    finally:
        ex.close()


class OwnSizeOnly(nn.Module):
    """Runs only on 40 x 48 inputs (a flattening head), so the size search reaches the image's size."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4 * 40 * 48, 3)

    def forward(self, x):
        return self.head(self.conv(x).flatten(1))


def test_an_image_address_is_downloaded_once(image_server):
    from PIL import Image

    folder, base, requests = image_server
    Image.fromarray(image(2)).resize((48, 40)).save(folder / "photo.png")
    ex = explore(OwnSizeOnly().eval(), f"{base}/photo.png", samples={}, background=False)
    try:
        assert ex.input_image.shape == (40, 48, 3) and not ex.status.is_error
        assert requests == ["/photo.png"]
    finally:
        ex.close()


def test_an_image_file_is_decoded_once(tmp_path, monkeypatch):
    from PIL import Image

    import cnnwidgets.core.images as images

    decoded = []
    real = images._decode
    monkeypatch.setattr(images, "_decode", lambda fp, what, max_size: (decoded.append(what), real(fp, what, max_size))[1])
    Image.fromarray(image(2)).resize((48, 40)).save(tmp_path / "photo.png")
    ex = explore(OwnSizeOnly().eval(), tmp_path / "photo.png", samples={}, background=False)
    try:
        assert ex.input_image.shape == (40, 48, 3) and len(decoded) == 1
    finally:
        ex.close()


def test_a_double_precision_model_is_explored_without_being_converted():
    torch.manual_seed(0)
    model = Tiny().double().eval()
    ex = explore(model, image(3), input_size=(3, SIZE, SIZE), samples={}, background=False)
    try:
        assert not ex.status.is_error, ex.status.message
        x = occluded_input(ex).double()
        with torch.no_grad():
            expected = reference_outputs(model, x, [ex.layer])[ex.layer][0].float()
        torch.testing.assert_close(torch.from_numpy(ex.activations), expected, rtol=1e-4, atol=1e-5)
        assert ex.scores is not None
    finally:
        ex.close()
    assert {p.dtype for p in model.parameters()} == {torch.float64}


def test_draft_layouts_fit_the_pixel_budget_and_keep_the_screen_size():
    from cnnwidgets.app.frames import LayoutCache

    cache = LayoutCache(max_width=720, max_height=440, draft_pixels=50_000)
    final, width = cache.get((64, 56, 56), None)
    draft, draft_width = cache.get((64, 56, 56), None, draft=True)
    assert final.scale == 1 and final.width <= 720 and final.height <= 440
    assert draft.width * draft.height <= 50_000 < final.width * final.height
    assert draft_width == width >= final.width
    assert cache.get((64, 56, 56), None) == (final, width)  # cached
    small, small_width = cache.get((8, 4, 4), None)
    assert small_width == 8 * small.width  # enlarged at most 8 times
    square, square_width = cache.get((16, 64, 64), None)
    assert square.width == 261 and square_width == round(261 * 440 / 261)  # fills the box height


def test_image_of_another_size_updates_layer_shapes():
    from PIL import Image

    def keep_size(pil):
        return torch.from_numpy(np.asarray(pil, dtype=np.float32) / 255).permute(2, 0, 1)

    def back(x):
        return x.clamp(0, 1).permute(1, 2, 0).numpy()

    torch.manual_seed(0)
    ex = Explorer(Tiny().eval(), image(0), preprocess=keep_size, denormalize=back, samples={}, background=False,
                  box=(20, 20, 8, 8))
    try:
        assert ex.layers["features.3"].output_shape == (16, 16, 16)
        ex.set_image(Image.fromarray(np.full((48, 40, 3), 200, np.uint8)))
        assert ex.layers["features.3"].output_shape == (16, 24, 20)
        assert ex.activations.shape == (16, 24, 20) and ex.input_image.shape == (48, 40, 3)
        assert ex.box == (20, 20, 8, 8) and not ex.status.is_error
        ex.box = (39, 47, 8, 8)
        assert ex.box == (32, 40, 8, 8)  # clamped into the new size
    finally:
        ex.close()


def test_no_image_and_no_samples_says_why():
    with pytest.raises(ValueError, match="no image given and no sample images"):
        Explorer(Tiny().eval(), None, input_size=(3, SIZE, SIZE), samples={}, background=False)


def test_drafts_read_only_the_units_they_draw_and_match_a_draft_of_the_full_stack():
    from cnnwidgets.app.frames import Baseline, Computed, LayerGeometry, LayoutCache, draft_step, render_frame

    rng = np.random.default_rng(0)
    base = Baseline(acts=rng.standard_normal((64, 112, 112)).astype(np.float32))
    acts = torch.from_numpy(rng.standard_normal((64, 112, 112)).astype(np.float32))
    layout_acts = acts.permute(1, 2, 0).contiguous().permute(2, 0, 1)  # channels-last storage, as the probe's
    made = []

    def full():
        made.append(True)
        return np.ascontiguousarray(layout_acts.numpy())

    def strided(step, channel):
        return np.ascontiguousarray(layout_acts[:, ::step, ::step].numpy()), np.ascontiguousarray(layout_acts[channel].numpy())

    state = ExplorerState(image_id=0, box=(40, 60, 56, 56), fill="gray", layer="x", channel=5, device="cpu",
                          show_scores=False, dragging=True)
    req = resolve(state)
    image = rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)
    geometry = LayerGeometry(jump=2.0, start=0.5)
    lazy = render_frame(req.render, Computed(req.compute, full, base, None, 0.0, strided=strided), image, state.box,
                        geometry=geometry, layouts=LayoutCache())
    assert not made  # the draft never built the whole (C, H, W) copy
    eager = render_frame(req.render, Computed(req.compute, acts.numpy(), base, None, 0.0), image, state.box,
                         geometry=geometry, layouts=LayoutCache())
    np.testing.assert_array_equal(lazy.grid, eager.grid)
    np.testing.assert_array_equal(lazy.panel, eager.panel)
    assert lazy.layout == eager.layout and lazy.layout.shrink > 1
    assert 0 < lazy.render_seconds < 60  # a duration of this render, not a clock reading

    final_req = resolve(state.with_(dragging=False))
    final = render_frame(final_req.render, Computed(final_req.compute, full, base, None, 0.0, strided=strided), image,
                         state.box, geometry=geometry, layouts=LayoutCache())
    assert made  # the final frame uses the whole stack
    step = draft_step(image.shape[:2])
    assert step == 2 and final.panel.shape[0] == 224 and lazy.panel.shape[0] == 224 // step
    assert lazy.panel_display_width == final.panel_display_width  # same size on screen
    np.testing.assert_array_equal(final.grid.shape[:2], (final.layout.height, final.layout.width))


class Digits(nn.Module):
    """An MNIST-shaped classifier: one input channel, a linear head that only fits 28 x 28."""

    def __init__(self, channels: int = 1, side: int = 28) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.head = nn.Linear(8 * (side // 4) ** 2, 10)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


def test_a_grayscale_digit_model_is_explored_at_the_size_it_runs_on():
    torch.manual_seed(0)
    digit = np.zeros((28, 28), np.uint8)
    digit[6:22, 12:16] = 255  # a "1"
    model = Digits().eval()
    ex = explore(model, digit, samples={}, background=False)
    try:
        assert ex.probe.input_size == (1, 28, 28)
        assert ex.probe.stats.discoveries == 1  # the size found is the one described
        x = ex._images[ex._image_id].tensor
        assert x.shape == (1, 1, 28, 28) and float(x.max()) == 1.0 and float(x.min()) == 0.0  # gray, [0, 1]
        assert ex.input_image.shape == (28, 28, 3) and (ex.input_image[..., 0] == ex.input_image[..., 2]).all()
        ex.layer = "features.3"
        ex.box = None
        clean = ex.activations.copy()
        np.testing.assert_allclose(clean, model.features[:4](x)[0].detach().numpy(), rtol=1e-5, atol=1e-6)
        ex.fill = "gray"
        ex.box = (10, 6, 8, 8)  # over the stroke
        occluded = x.clone()
        occluded[..., 6:14, 10:18] = 0.5  # gray is pixel value 0.5; this input is not normalised
        np.testing.assert_allclose(ex.activations, model.features[:4](occluded)[0].detach().numpy(), rtol=1e-5, atol=1e-6)
        assert not np.allclose(ex.activations, clean)
        assert ex.scores is not None and not ex.status.is_error
    finally:
        ex.close()


def test_a_small_rgb_model_falls_back_from_224_to_its_own_size():
    torch.manual_seed(0)
    photo = (np.random.default_rng(0).random((300, 400, 3)) * 255).astype(np.uint8)
    ex = explore(Digits(channels=3, side=32).eval(), photo, samples={}, background=False)
    try:
        assert ex.probe.input_size == (3, 32, 32)  # 224 and the photo's 300 x 400 do not fit
        assert ex.input_image.shape == (32, 32, 3) and not ex.status.is_error
    finally:
        ex.close()
    # an image of the size the model takes is tried right after 224
    ex = explore(Digits(channels=3, side=64).eval(), photo[:64, :64], samples={}, background=False)
    try:
        assert ex.probe.input_size == (3, 64, 64)
    finally:
        ex.close()


def test_input_size_given_or_impossible():
    torch.manual_seed(0)
    ex = explore(Digits(side=28).eval(), image(0), input_size=(1, 28, 28), samples={}, background=False)
    try:
        assert ex.probe.stats.discoveries == 1  # no sizes tried
    finally:
        ex.close()
    with pytest.raises(RuntimeError, match=r"ran on none of the input sizes tried: RuntimeError: mat1.*\(at \(1, 32, 32\); the same error .*\(1, 28, 28\).*input_size="):
        explore(Digits(side=20).eval(), image(0), samples={}, background=False)
    with pytest.raises(ValueError, match="1-channel .* or 3-channel .* not 2; pass preprocess="):
        explore(Digits(channels=2).eval(), image(0), samples={}, background=False)


def test_grayscale_defaults_and_fills():
    pre = default_preprocess((8, 6), channels=1)
    rgb = np.zeros((16, 12, 3), np.uint8)
    rgb[..., 1] = 255  # pure green: luma 0.587
    x = pre(rgb)
    assert x.shape == (1, 8, 6) and torch.allclose(x, torch.full_like(x, 150 / 255))
    shown = default_denormalize(torch.tensor([[[-0.5, 0.25, 2.0]]]))
    assert shown.shape == (1, 3, 3) and np.allclose(shown[0, :, 0], [0.0, 0.25, 1.0]) and np.allclose(shown[..., 0], shown[..., 2])
    prep = ImageInput.prepare(image(0), default_preprocess((SIZE, SIZE), channels=1), default_denormalize)
    assert prep.tensor.shape == (1, 1, SIZE, SIZE)
    box = (3, 4, 5, 6)
    assert torch.allclose(prep.occluded(box, "gray")[..., 4:10, 3:8], torch.tensor(0.5))
    assert torch.allclose(prep.occluded(box, "black")[..., 4:10, 3:8], torch.tensor(0.0))
    noise = prep.occluded(box, "noise")[..., 4:10, 3:8]
    assert float(noise.min()) >= 0 and float(noise.max()) <= 1 and float(noise.std()) > 0.1
    # a denormalize that returns a gray (H, W) image is accepted too
    gray = ImageInput.prepare(image(0), default_preprocess((SIZE, SIZE), channels=1), lambda t: t[0].clamp(0, 1).numpy())
    assert gray.display.shape == (SIZE, SIZE, 3) and gray.pixel_mean is not None


def test_channels_last_layers_are_shown_channels_first():
    from tests.test_probe import channels_last_net

    torch.manual_seed(0)
    ex = make(channels_last_net().eval())
    try:
        items = {name: label for _, label, name in layer_items(ex.layers)}
        assert {"1.dw", "1.norm", "1.mlp", "1.back", "1"} <= set(items)
        assert items["1.mlp"].endswith("16\u00d732\u00d732 (HWC)") and items["1.dw"].endswith("8\u00d732\u00d732")
        ex.layer = "1.mlp"
        ex.channel = 13  # beyond the 8 channels of the block's other layers: a (C, H, W) reading of (32, 32, 16) has 32
        assert ex.channel_slider.max == 15
        ex.wait_idle()
        assert not ex.status.is_error, ex.status.value
        raw = ex.probe.capture(ex._images[ex._image_id].tensor, ["1.mlp"])["1.mlp"][0]  # (H, W, C)
        np.testing.assert_allclose(ex.baseline_activations, raw.permute(2, 0, 1).numpy(), rtol=1e-5, atol=1e-6)
        ex.box = (4, 4, 8, 8)
        ex.wait_idle()
        occluded = ex.probe.capture(occluded_input(ex), ["1.mlp"])["1.mlp"][0]
        np.testing.assert_allclose(ex.activations, occluded.permute(2, 0, 1).numpy(), rtol=1e-5, atol=1e-6)
        assert not np.allclose(ex.activations, ex.baseline_activations)
        assert "16\u00d732\u00d732 (HWC)" in ex.grid_caption.value
        assert ex.grid.grid.channel_at(*ex.grid.grid.tile_rect(15)[:2]) == 15  # 16 tiles
        assert ex.grid.grid.channel_at(*ex.grid.grid.tile_rect(13)[:2]) == 13
        with pytest.raises(traitlets.TraitError, match="channel 16 out of range 0..15"):
            ex.channel = 16
    finally:
        ex.close()




@pytest.mark.parametrize("background", [False, True])
def test_a_closed_explorer_is_freed_with_the_users_model(background):
    import gc
    import weakref

    def open_and_close():
        model = Tiny().eval()
        ex = make(model, box=(4, 4, 8, 8), background=background, method="saliency")
        ex.wait_idle()
        ex.close()
        return weakref.ref(ex), weakref.ref(model), weakref.ref(ex.grid)

    refs = [open_and_close() for _ in range(2)]
    gc.collect()
    assert all(ref() is None for trio in refs for ref in trio)  # nothing global keeps them


@pytest.mark.parametrize("background", [False, True])
def test_a_closed_explorer_still_referenced_keeps_no_reference_to_the_users_model(background):
    import gc
    import weakref

    model = Tiny().eval()
    ex = make(model, box=(4, 4, 8, 8), background=background, method="saliency")
    assert ex.wait_idle(60) and ex.method_result is not None  # the method panel made its probe
    ex.close()
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None, [type(r).__name__ for r in gc.get_referrers(ref())]  # `ex` (the notebook's name) lives on
    assert ex._closed


def test_class_names_in_any_sequence_or_index_mapping_and_checked_against_the_outputs():
    names = ["a", "b", "c", "d", "e"]
    for given in (np.array(names), tuple(names), {i: n for i, n in enumerate(names)},
                  {str(i): [f"n0{i}", n] for i, n in enumerate(names)}):  # the ImageNet class index's form
        ex = make(classes=given, box=None)
        try:
            assert ex.scores["classes"] == names
            assert {row["label"] for row in ex.scores["rows"]} == set(names)
        finally:
            ex.close()
    with pytest.raises(ValueError, match="classes has 2 names but the model has 5 output units"):
        make(classes=["a", "b"])
    with pytest.raises(TypeError, match="not a set"):
        make(classes=set(names))
    with pytest.raises(TypeError, match="the string"):
        make(classes="abcde")
    with pytest.raises(ValueError, match="keys 0..4"):
        make(classes={1: "a", 2: "b", 3: "c", 4: "d", 5: "e"})


def test_a_single_logit_model_with_two_names_labels_the_positive_class():
    torch.manual_seed(0)
    model = Tiny().eval()
    model.head = nn.Linear(12, 1)
    ex = make(model, box=None, classes=["cat", "dog"])
    try:
        (row,) = ex.scores["rows"]
        assert row["label"] == "dog" and ex.scores["classes"] == ["dog"]  # sigmoid(logit) = P(second class)
    finally:
        ex.close()


def test_target_classes_out_of_range_are_refused_with_the_range(ex):
    for bad in (-1, 5, 10_000):
        with pytest.raises(traitlets.TraitError, match=r"target class .* accepted 0\.\.4"):
            ex.target = bad
    assert ex.target is None
    ex.target = 4
    assert any(row["index"] == 4 for row in ex.scores["rows"])  # the target is always listed


def test_unknown_layers_list_the_layers_offered():
    with pytest.raises(KeyError, match="Known layers: features, features.0, features.1"):
        make(layer="conv1")
    explorer = make()
    try:
        with pytest.raises(traitlets.TraitError, match="Known layers: features, features.0"):
            explorer.layer = "conv1"
    finally:
        explorer.close()


def test_replaced_modules_update_the_layer_table_and_the_channel_range(ex):
    ex.layer = "features.6"
    assert ex.channel_slider.max == 11
    user_model = ex.probe._user_model
    user_model.features[6] = nn.Conv2d(16, 20, 3, padding=1)
    user_model.head = nn.Linear(20, 5)
    ex.box = (6, 6, 8, 8)  # the next update sees the new modules
    assert ex.activations.shape[0] == 20
    assert ex.layers["features.6"].map_shape[0] == 20 and ex.channel_slider.max == 19
    ex.channel = 17
    assert ex.channel == 17 and ex.shown_state.channel == 17


def test_a_closed_explorer_says_so(ex):
    ex.close()
    for read in (lambda: ex.activations, lambda: ex.grid_image, lambda: ex.scores,
                 lambda: ex.set_image(image(3)), lambda: ex.mark_dead(None)):
        with pytest.raises(RuntimeError, match="this explorer is closed"):
            read()
    # its state is refused too, not taken silently while nothing is shown any more
    for name, value in (("layer", "features.0"), ("channel", 1), ("box", (1, 1, 4, 4)), ("target", 1),
                        ("fill", "black"), ("show_scores", False), ("dragging", True), ("method", "saliency")):
        with pytest.raises(traitlets.TraitError, match=f"cannot set {name}: this explorer is closed"):
            setattr(ex, name, value)
    # its controls, still held by the notebook, no longer reach it
    message = ex.status.message
    ex.picker.add_upload("late.png", b"not an image")
    ex.occluder_controls.size = 6
    ex.occluder_controls.enabled = False
    ex.grid.selected = 3
    assert ex.status.message == message


def test_a_frame_or_error_that_arrives_while_closing_is_not_shown(ex):
    first_state, first_frame = ex.shown_state, ex._frame
    ex.box = (6, 6, 8, 8)
    assert ex.wait_idle(30)
    message = ex.status.message
    ex.close()
    assert ex.grid.image == b""  # a closed explorer forgets its pictures
    # what the worker delivers after close() began (it checked for staleness just before)
    ex._show_frame(first_state, first_frame)
    ex._show_error("model", RuntimeError("late failure"))
    assert ex.grid.image == b"" and ex.status.message == message


def test_a_preprocess_the_default_denormalize_does_not_undo_is_warned_about():
    def unit_scale(pil):  # [0, 1] pixels, no ImageNet normalisation
        from PIL import Image

        return torch.from_numpy(np.asarray(pil.convert("RGB").resize((SIZE, SIZE), Image.BILINEAR),
                                           dtype=np.float32) / 255).permute(2, 0, 1)

    with pytest.warns(UserWarning, match="preprocess= was given without denormalize="):
        make(preprocess=unit_scale).close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make(preprocess=default_preprocess((SIZE, SIZE))).close()  # undone by the default
        make(preprocess=unit_scale, denormalize=lambda x: x.permute(1, 2, 0).numpy()).close()


def test_a_layer_that_never_runs_is_named_as_such():
    from tests.helpers import AuxiliaryHeadNet

    explorer = make(AuxiliaryHeadNet().eval(), input_size=(3, 16, 16))
    try:
        with pytest.raises(traitlets.TraitError, match="'aux' does not run in the model's forward pass"):
            explorer.layer = "aux"
    finally:
        explorer.close()


@pytest.mark.parametrize("background", [False, True])
def test_a_layer_removed_from_the_model_falls_back_to_one_it_has(background):
    explorer = make(box=(4, 4, 8, 8), background=background)
    try:
        explorer.layer = "features.6"
        assert explorer.wait_idle(60)
        explorer.probe._user_model.features = nn.Sequential(nn.Conv2d(3, 12, 3, padding=1), nn.ReLU())
        explorer.box = (6, 6, 8, 8)  # the next update meets a model without features.6
        assert explorer.wait_idle(60)
        assert explorer.layer in explorer.layers and "features.6" not in explorer.layers
        assert explorer.shown_state == explorer.state() and not explorer.status.is_error
        assert explorer.activations.shape[0] == explorer.layers[explorer.layer].map_shape[0]
    finally:
        explorer.close()


def _on_a_thread_of_its_own(run) -> None:
    """Run ``run()`` on a new thread, with asyncio state of its own whatever earlier tests left
    on this one (a browser driver's loop, say), and raise here what it raised."""
    raised: list[BaseException] = []

    def target():
        try:
            run()
        except BaseException as exc:  # noqa: BLE001 - raised again in the test's thread
            raised.append(exc)

    thread = threading.Thread(target=target, name="notebook-main")
    thread.start()
    thread.join(180)
    assert not thread.is_alive(), "the scenario did not finish"
    if raised:
        raise raised[0]


def _run_in_event_loop(scenario) -> None:
    """Run the coroutine function ``scenario`` as a notebook would: the explorer is built, and
    its traits are set, on a thread whose asyncio event loop is running (as the kernel's is)."""
    import asyncio

    _on_a_thread_of_its_own(lambda: asyncio.run(scenario()))


def _record_threads(explorer, monkeypatch) -> list[str]:
    threads: list[str] = []
    refresh = explorer._refresh_layers

    def recording():
        threads.append(threading.current_thread().name)
        refresh()

    monkeypatch.setattr(explorer, "_refresh_layers", recording)
    return threads


def test_a_changed_model_is_followed_on_the_thread_that_owns_the_widgets(monkeypatch):
    import asyncio

    async def scenario():
        explorer = make(box=(4, 4, 8, 8), background=True)
        try:
            explorer.layer = "features.6"
            while not explorer.controller.idle:
                await asyncio.sleep(0.01)
            threads = _record_threads(explorer, monkeypatch)
            explorer.probe._user_model.features = nn.Sequential(nn.Conv2d(3, 12, 3, padding=1), nn.ReLU())
            explorer.box = (6, 6, 8, 8)  # computed on the worker, which meets the changed model
            for _ in range(500):  # the event loop runs meanwhile, as the kernel's does between messages
                await asyncio.sleep(0.01)
                if explorer.controller.idle and explorer.shown_state == explorer.state() and threads:
                    break
            # the layer menu and the selection changed on this thread, never on the worker's
            assert threads and set(threads) == {threading.current_thread().name}
            assert explorer.layer in explorer.layers and "features.6" not in explorer.layers
            assert explorer.shown_state == explorer.state() and not explorer.status.is_error
            assert f"layer features.6 is gone or shows no feature map now: showing {explorer.layer}" in (
                explorer.status.message)
        finally:
            explorer.close()

    _run_in_event_loop(scenario)


def test_wait_idle_follows_a_changed_model_while_it_blocks_the_event_loop(monkeypatch):
    async def scenario():
        explorer = make(box=(4, 4, 8, 8), background=True)
        try:
            explorer.layer, explorer.channel = "features.3", 6
            assert explorer.wait_idle(60)
            threads = _record_threads(explorer, monkeypatch)
            fit = explorer._fit_channel_to_layer

            def fit_and_let_the_worker_run():  # as a fast worker would, before the note is written
                fit()
                assert explorer.controller.wait_idle(60)

            monkeypatch.setattr(explorer, "_fit_channel_to_layer", fit_and_let_the_worker_run)
            user_model = explorer.probe._user_model
            user_model.features[3] = nn.Conv2d(8, 4, 3, padding=1)
            user_model.features[6] = nn.Conv2d(4, 12, 3, padding=1)
            explorer.box = (6, 6, 8, 8)
            # one notebook cell: the loop cannot run the hand-over until the cell ends, so
            # wait_idle runs it, and waits for the frame it asks for
            assert explorer.wait_idle(60)
            assert threads == [threading.current_thread().name]
            assert explorer.shown_state == explorer.state() and explorer.activations.shape[0] == 4
            assert "<b>layer <code>features.3</code></b> &nbsp; 4\u00d7" in explorer.grid_caption.value
            assert explorer.channel == 0 and "features.3 has 4 channels now, channel 6 is gone" in explorer.status.message
        finally:
            explorer.close()

    _run_in_event_loop(scenario)


def test_an_explorer_built_in_an_event_loop_that_stopped_follows_a_changed_model_itself():
    import asyncio

    async def build():
        return make(box=(4, 4, 8, 8), background=True)

    def scenario():
        loop = asyncio.new_event_loop()
        try:
            explorer = loop.run_until_complete(build())  # the loop is stopped (not closed) from here on
            try:
                explorer.layer = "features.6"
                assert explorer.wait_idle(60)
                explorer.probe._user_model.features = nn.Sequential(nn.Conv2d(3, 12, 3, padding=1), nn.ReLU())
                explorer.box = (6, 6, 8, 8)
                assert explorer.controller.wait_idle(60)  # not the explorer's wait_idle, which runs hand-overs
                assert "features.6" not in explorer.layers and explorer.layer in explorer.layers
            finally:
                explorer.close()
        finally:
            loop.close()

    _on_a_thread_of_its_own(scenario)


def test_back_at_the_frame_on_screen_the_error_stays_while_the_model_is_broken(ex):
    ex.box = (10, 10, 8, 8)
    ex.probe._user_model.features[3] = nn.Conv2d(5, 16, 3, padding=1)  # the model no longer runs
    ex.box = (4, 4, 8, 8)
    assert ex.status.is_error and ex.status.message.startswith("model")
    ex.box = (10, 10, 8, 8)  # the frame on screen was drawn with the old model
    assert ex.status.is_error and ex.status.message.startswith("model")


def test_a_selected_layer_replaced_by_one_with_fewer_channels_clamps_the_channel(ex):
    ex.layer, ex.channel = "features.3", 13
    user_model = ex.probe._user_model
    user_model.features[3] = nn.Conv2d(8, 4, 3, padding=1)
    user_model.features[6] = nn.Conv2d(4, 12, 3, padding=1)
    ex.box = (6, 6, 8, 8)
    assert ex.wait_idle(60)
    assert ex.channel < 4 and ex.channel_slider.max == 3 and not ex.status.is_error
    assert ex.shown_state == ex.state() and ex.activations.shape[0] == 4
    # the user is told, until they pick a channel themselves
    assert "features.3 has 4 channels now, channel 13 is gone: showing channel 0" in ex.status.message
    ex.channel = 2
    assert "channel 13" not in ex.status.message


def test_a_selected_layer_the_model_no_longer_has_is_replaced_by_the_default_and_said(ex):
    ex.layer = "features.6"
    ex.probe._user_model.features = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
        nn.Conv2d(8, 12, 3, padding=1), nn.ReLU(),
    )
    ex.box = (6, 6, 8, 8)
    assert ex.wait_idle(60)
    # the default layer (the middle convolution), not the menu's first item
    assert ex.layer == default_layer(ex.layers) == "features.2" and not ex.status.is_error
    assert ex.shown_state.layer == "features.2" and ex.layer_select.value == "features.2"
    assert "layer features.6 is gone or shows no feature map now: showing features.2" in ex.status.message
    ex.layer = "features.1"
    assert "features.6" not in ex.status.message


def test_targets_are_checked_against_the_head_the_model_has_now(ex):
    ex.probe._user_model.head = nn.Linear(12, 10)
    ex.target = 7  # no frame since the change: the class count is read again
    with pytest.raises(traitlets.TraitError, match=r"accepted 0\.\.9"):
        ex.target = 10


def test_a_new_head_the_worker_already_took_is_known_before_the_explorer_hears_of_it(ex):
    ex.probe._user_model.head = nn.Linear(12, 10)
    ex.probe.sync()  # as the worker's next pass does, before the main thread follows the change
    assert not ex.probe.user_model_changed()
    ex.target = 7
    assert ex.target == 7


def test_a_resize_and_crop_pipeline_undone_by_the_default_is_not_warned_about():
    import torchvision.transforms as T

    pipeline = T.Compose([T.Resize(40), T.CenterCrop(SIZE), T.ToTensor(),
                          T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make(preprocess=pipeline).close()


def test_a_bundle_whose_class_names_are_an_array_is_read():
    import dataclasses

    from cnnwidgets.zoo import load_default

    bundle = load_default()
    names = list(bundle.classes)
    own = dataclasses.replace(bundle, classes=np.array(names))
    explorer = Explorer(own, None, samples={"a": image(0)}, background=False, box=None)
    try:
        assert explorer.scores["classes"] == names
    finally:
        explorer.close()


# ---------------------------------------------------------------- custom inputs: channels, fills, mistakes
class GAPNet(nn.Module):
    """A small fully convolutional net with ``channels`` inputs, global average pooling and a Linear."""

    def __init__(self, channels: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(channels, 8, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        return self.head(self.features(x).mean(dim=(2, 3)))


def photo(width: int = 48, height: int = 40, seed: int = 0):
    """A smooth colourful picture (PIL) with detail, like a photo at low resolution."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width] / max(width, height)
    base = np.stack([np.sin(6 * xx + 1), np.cos(5 * yy), np.sin(4 * (xx + yy))], axis=2) * 0.35 + 0.5
    pixels = np.clip(base + rng.normal(0, 0.05, base.shape), 0, 1)
    return Image.fromarray((pixels * 255).astype(np.uint8))


def rgb_and_gray(im):
    """A 4-channel input: [0, 1] RGB and its gray (luma) as the fourth channel."""
    from PIL import Image

    small = im.convert("RGB").resize((SIZE, SIZE), Image.BILINEAR)
    rgb = torch.from_numpy(np.asarray(small, dtype=np.float32) / 255).permute(2, 0, 1)
    return torch.cat([rgb, torch.from_numpy(np.asarray(small.convert("L"), dtype=np.float32) / 255)[None]])


def test_a_four_channel_input_shown_as_rgb_gets_pixel_fills_on_the_shown_channels_and_its_mean_elsewhere():
    show_rgb = lambda x: x[:3].permute(1, 2, 0).numpy()  # noqa: E731
    prep = ImageInput.prepare(photo(), rgb_and_gray, show_rgb)
    assert torch.allclose(prep.pixel_std[0, :3, 0, 0], torch.ones(3))
    assert torch.allclose(prep.pixel_mean[0, :3, 0, 0], torch.zeros(3))
    assert torch.isnan(prep.pixel_std[0, 3]).all() and torch.isnan(prep.pixel_mean[0, 3]).all()
    box = (4, 6, 8, 5)
    for fill, level in (("gray", 0.5), ("black", 0.0)):
        inside = prep.occluded(box, fill)[0, :, 6:11, 4:12]
        assert torch.allclose(inside[:3], torch.tensor(level)), fill
        assert torch.allclose(inside[3], prep.tensor[0, 3].mean()), fill  # no pixel value: the channel's mean
    noise = prep.occluded(box, "noise")[0, :, 6:11, 4:12]
    assert float(noise[:3].std()) > 0.1 and torch.allclose(noise[3], prep.tensor[0, 3].mean())

    torch.manual_seed(0)
    ex = Explorer(GAPNet(4).eval(), photo(), preprocess=rgb_and_gray, denormalize=show_rgb, samples={},
                  background=False)
    try:
        assert ex.wait_idle() and not ex.status.is_error, ex.status.message
        assert ex.fill == "gray" and not other_notes(ex.status.message)
        assert ex.activations.shape == (8, SIZE, SIZE)
    finally:
        ex.close()


def test_swapped_and_gray_denormalizes_are_read_as_per_channel_maps():
    pre = default_preprocess((SIZE, SIZE))
    mean = torch.tensor((0.485, 0.456, 0.406)).view(3, 1, 1)
    std = torch.tensor((0.229, 0.224, 0.225)).view(3, 1, 1)
    bgr = lambda x: (x * std + mean).clamp(0, 1).flip(0).permute(1, 2, 0).numpy()  # noqa: E731 - shown in reverse order
    prep = ImageInput.prepare(photo(), pre, bgr)
    torch.testing.assert_close(prep.pixel_std.flatten(), std.flatten())
    torch.testing.assert_close(prep.pixel_mean.flatten(), mean.flatten())
    def mixed(x):  # gray mixed from three channels: no per-channel map
        return (x * std + mean).clamp(0, 1).mean(0, keepdim=True).expand(3, -1, -1).permute(1, 2, 0).numpy()

    assert ImageInput.prepare(photo(), pre, mixed).pixel_std is None


def gamma(im):
    from PIL import Image

    small = im.convert("RGB").resize((SIZE, SIZE), Image.BILINEAR)
    return (torch.from_numpy(np.asarray(small, dtype=np.float32) / 255).permute(2, 0, 1)) ** 2.2


def ungamma(x):
    return x.clamp(0, 1).pow(1 / 2.2).permute(1, 2, 0).numpy()


def test_a_pixel_fill_the_denormalize_cannot_express_falls_back_to_mean_with_a_note():
    torch.manual_seed(0)
    ex = Explorer(GAPNet(3).eval(), photo(), preprocess=gamma, denormalize=ungamma, samples={}, background=False)
    try:
        assert ex.wait_idle() and not ex.status.is_error, ex.status.message
        assert ex.fill == "mean" and ex.shown_state.fill == "mean"
        assert "note: fill 'gray' is a pixel value" in ex.status.message and "fills with 'mean'" in ex.status.message
        assert ex.activations.shape == (8, SIZE, SIZE)
        ex.fill = "black"  # asked for explicitly: an error about the fill, not the model
        assert ex.status.is_error and ex.status.message.startswith("occluder fill: FillError: fill 'black'")
        assert "use fill 'mean' or 'blur'" in ex.status.message
        ex.fill = "blur"
        assert not ex.status.is_error and not other_notes(ex.status.message)  # the fallback is over
    finally:
        ex.close()


def test_activations_before_any_frame_say_that_the_update_failed():
    model = Tiny().eval()
    model.fail_on_black_corner = True
    ex = make(model, fill="black", box=(0, 0, 8, 8))  # the first occluded update fails
    try:
        assert ex.wait_idle() and ex.status.is_error
        failed = r"nothing has been shown: the update failed \(model: RuntimeError: .*deliberate failure"
        with pytest.raises(RuntimeError, match=failed):
            ex.activations
    finally:
        ex.close()


def test_preprocess_mistakes_are_named():
    from PIL import Image

    def hwc(im):
        return torch.from_numpy(np.asarray(im.convert("RGB").resize((SIZE, SIZE), Image.BILINEAR), np.float32) / 255)

    with pytest.raises(ValueError, match=r"preprocess returned a tensor of shape \(32, 32, 3\), which looks like "
                                         r"\(H, W, C\); it must return \(C, H, W\)"):
        Explorer(GAPNet(3).eval(), photo(), preprocess=hwc, samples={}, background=False)
    with pytest.raises(ValueError, match="preprocess made 4-channel inputs; the default denormalize handles 1 or 3 "
                                         "channels: pass denormalize="):
        Explorer(GAPNet(4).eval(), photo(), preprocess=rgb_and_gray, samples={}, background=False)

    def broken(x):
        raise RuntimeError("boom")

    with pytest.raises(ValueError, match=r"denormalize failed on the preprocessed tensor of shape \(3, 32, 32\) "
                                         r"\(RuntimeError: boom\)"):
        ImageInput.prepare(photo(), default_preprocess((SIZE, SIZE)), broken)
    with pytest.raises(ValueError, match=r"default denormalize handles \(1, H, W\) and \(3, H, W\) tensors, "
                                         r"got shape \(2, 4, 4\)"):
        default_denormalize(torch.zeros(2, 4, 4))


class HeadFirst(nn.Module):
    """The head is declared before the stem: the first convolution registered is not the first that runs."""

    def __init__(self, stem: nn.Module | None = None, inputs: int = 3) -> None:
        super().__init__()
        self.head = nn.Conv2d(16, 5, 1)
        self.stem = stem if stem is not None else nn.Conv2d(inputs, 16, 3, padding=1)

    def forward(self, x):
        if isinstance(self.stem, nn.Conv1d):  # over the flattened rows
            y = self.stem(x.flatten(2)).view(x.shape[0], 16, *x.shape[2:])
        elif isinstance(self.stem, nn.Conv3d):  # over the channels as depth
            y = self.stem(x.unsqueeze(1)).squeeze(2)
        else:
            y = self.stem(x)
        return self.head(torch.relu(y)).mean(dim=(2, 3))


@pytest.mark.parametrize("stem", [None, nn.Conv1d(3, 16, 3, padding=1), nn.Conv3d(1, 16, 3, padding=(0, 1, 1))],
                         ids=["conv2d", "conv1d", "conv3d"])
def test_a_stem_declared_after_the_head_is_found_by_trying_rgb_and_gray(stem):
    torch.manual_seed(0)
    ex = Explorer(HeadFirst(stem).eval(), photo(), samples={}, background=False)
    try:
        assert ex.probe.input_size[0] == 3 and ex.wait_idle() and not ex.status.is_error
    finally:
        ex.close()
    ex = Explorer(HeadFirst(inputs=1).eval(), photo(), samples={}, background=False)
    try:
        assert ex.probe.input_size[0] == 1
    finally:
        ex.close()


def test_a_channel_count_nothing_runs_on_says_so_without_an_input_size_hint():
    nothing = "first convolution takes 16 input channels .* not 16; pass preprocess="
    with pytest.raises(ValueError, match=nothing) as info:
        Explorer(HeadFirst(inputs=2).eval(), photo(), samples={}, background=False)
    assert "looks like (H, W, C)" not in str(info.value) and "input_size is" not in str(info.value)
    with pytest.raises(ValueError, match=r"looks like \(H, W, C\); did you mean \(3, 16, 32\)"):
        Explorer(GAPNet(3).eval(), photo(), input_size=(16, 32, 3), samples={}, background=False)


class RgbHeadFirst(HeadFirst):
    """A head taking 3 channels declared first, a grayscale stem: the count found first is wrong but plausible."""

    def __init__(self) -> None:
        super().__init__(nn.Conv2d(1, 3, 3, padding=1))
        self.head = nn.Conv2d(3, 5, 1)

    def forward(self, x):
        return self.head(torch.relu(self.stem(x))).mean(dim=(2, 3))


def test_a_plausible_but_wrong_first_convolution_falls_back_to_the_other_count():
    ex = Explorer(RgbHeadFirst().eval(), photo(), samples={}, background=False)
    try:
        assert ex.probe.input_size[0] == 1 and ex.wait_idle() and not ex.status.is_error
    finally:
        ex.close()


def test_a_normalised_gray_preprocess_without_denormalize_is_warned_about():
    import torchvision.transforms as T

    gray_normalised = T.Compose([T.Grayscale(), T.Resize((SIZE, SIZE)), T.ToTensor(), T.Normalize((0.449,), (0.226,))])
    with pytest.warns(UserWarning, match=r"% of its values fall outside \[0, 1\] and are shown clipped"):
        Explorer(GAPNet(1).eval(), photo(), preprocess=gray_normalised, samples={}, background=False).close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for good in (T.Compose([T.Grayscale(), T.Resize((SIZE, SIZE)), T.ToTensor()]),):
            Explorer(GAPNet(1).eval(), photo(), preprocess=good, samples={}, background=False).close()
        imagenet = T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
        for good in (T.Compose([T.Resize((SIZE, SIZE)), T.ToTensor(), imagenet]),
                     T.Compose([T.Resize(40), T.CenterCrop(SIZE), T.ToTensor(), imagenet])):
            Explorer(GAPNet(3).eval(), photo(), preprocess=good, samples={}, background=False).close()
        unit = T.Compose([T.Resize((SIZE, SIZE)), T.ToTensor()])
        Explorer(GAPNet(3).eval(), photo(), preprocess=unit, denormalize=lambda x: x.permute(1, 2, 0).numpy(),
                 samples={}, background=False).close()
        # a centre crop of a saturated object clips far more than the whole image does, rightly
        rng = np.random.default_rng(0)
        rows, cols = np.mgrid[0:128, 0:128]
        bright = np.clip(rng.normal(110, 40, (128, 128, 3)), 0, 250)
        bright[(rows - 64) ** 2 + (cols - 64) ** 2 < 35 ** 2] = 255
        crop = T.Compose([T.Resize(128), T.CenterCrop(64), T.ToTensor(), imagenet])
        Explorer(GAPNet(3).eval(), Image.fromarray(bright.astype(np.uint8)), preprocess=crop, samples={},
                 background=False).close()


# ---------------------------------------------------------------- the box trait and the input size
def test_a_box_entirely_outside_the_image_is_refused_and_floats_round_halves_up(ex):
    with pytest.raises(traitlets.TraitError, match=r"box \(2000, 1000, 300, 300\) lies entirely outside the 32x32 "
                                                   r"image \(width x height in model-input pixels"):
        ex.box = (2000, 1000, 300, 300)
    with pytest.raises(traitlets.TraitError, match="entirely outside"):
        ex.box = (-10, 4, 10, 8)  # ends where the image starts
    assert ex.box == (4, 4, 8, 8)
    ex.box = (10.6, 10.4, 20.5, 20.5)
    assert ex.box == (11, 10, 21, 21)  # halves up, as the browser's Math.round
    ex.box = (-5, 30, 10, 10)  # partly inside: moved in, as the browser expects
    assert ex.box == (0, 22, 10, 10) and ex.canvas.box == (0, 22, 10, 10)
    assert all(type(v) is int for v in ex.box)
    with pytest.raises(traitlets.TraitError, match="finite"):
        ex.box = (float("nan"), 0, 4, 4)
    with pytest.raises(traitlets.TraitError, match="entirely outside"):
        make(box=(100, 100, 8, 8))


def test_an_input_size_that_reshapes_the_image_is_noted_in_the_status():
    from PIL import Image

    torch.manual_seed(0)
    wide = photo(400, 60)
    ex = Explorer(GAPNet(3).eval(), wide, samples={"square": photo(200, 200), "small": photo(64, 60)},
                  background=False)
    try:
        assert ex.probe.input_size == (3, 224, 224) and ex.wait_idle() and not ex.status.is_error
        note = "note: image resized from 400x60 to 224x224; pass input_size=(3, H, W) to keep its shape"
        assert note in ex.status.message
        ex.image = "square"
        assert ex.wait_idle() and not other_notes(ex.status.message)
        ex.image = "small"  # a small image blown up to 224 x 224: the model may never have seen such input
        assert ex.wait_idle() and not ex.status.is_error
        assert ("the 64x60 image is enlarged to 224x224 and normalised as ImageNet photos are (the default "
                "preprocessing); for a model trained on small images pass input_size=(3, 60, 64)") in ex.status.message
        ex.set_image(wide.resize((60, 400), Image.BILINEAR), "tall")
        assert ex.wait_idle() and "resized from 60x400 to 224x224" in ex.status.message
    finally:
        ex.close()
    given = Explorer(GAPNet(3).eval(), wide, input_size=(3, 64, 64), samples={}, background=False)
    try:
        # the user chose the size: not "pass input_size", but what it does to this image
        assert given.wait_idle() and not given.status.is_error
        assert ("note: image stretched from 400x60 to 64x64 (the input size given): crop it to a 1:1 shape "
                "first") in given.status.message
        given.set_image(photo(80, 64), "five by four")  # 1.25: close enough to square, no note
        assert given.wait_idle() and not other_notes(given.status.message)
        given.set_image(photo(80, 60), "four by three")  # a 4:3 photo squeezed square is noted
        assert given.wait_idle() and "image stretched from 80x60 to 64x64" in given.status.message
        given.set_image(photo(16, 16), "small")  # enlarged to the size the user chose: no note
        assert given.wait_idle() and not other_notes(given.status.message)
    finally:
        given.close()


# ---------------------------------------------------------------- how outputs become probabilities
class SigmoidHead(GAPNet):
    """A multi-label model: a sigmoid per class, applied as a function (no module to see)."""

    def __init__(self) -> None:
        super().__init__()
        with torch.no_grad():
            self.head.bias.copy_(torch.tensor([3.0, -2.5, 1.5, -1.5]))  # two labels likely, two not

    def forward(self, x):
        return torch.sigmoid(super().forward(x))


def test_outputs_say_how_scores_are_read_and_a_final_sigmoid_is_noted():
    model = SigmoidHead().eval()
    ex = Explorer(model, photo(), samples={}, background=False, input_size=(3, SIZE, SIZE))
    try:
        assert "note: the model's outputs lie in [0, 1] without summing to 1" in ex.status.message
        assert ex.scores["probs"].sum() == pytest.approx(1.0, abs=1e-5)  # read as logits, as the note says
    finally:
        ex.close()
    ex = Explorer(model, photo(), samples={}, background=False, input_size=(3, SIZE, SIZE), outputs="probabilities")
    try:
        with torch.no_grad():
            expected = model(ex._images[ex._image_id].occluded(ex.box, ex.fill))[0].numpy()
        np.testing.assert_allclose(ex.scores["probs"], expected, rtol=1e-5)  # as the model gives them
        assert not other_notes(ex.status.message)
    finally:
        ex.close()
    with pytest.raises(ValueError, match=r"outputs must be one of \('auto', 'logits', 'multilabel_logits', 'probabilities'\), "
                                         r"got 'sigmoid'"):
        Explorer(model, photo(), samples={}, background=False, input_size=(3, SIZE, SIZE), outputs="sigmoid")


def test_a_final_sigmoid_module_is_read_as_it_is():
    model = nn.Sequential(GAPNet(), nn.Sigmoid()).eval()
    ex = Explorer(model, photo(), samples={}, background=False, input_size=(3, SIZE, SIZE))
    try:
        with torch.no_grad():
            expected = model(ex._images[ex._image_id].occluded(ex.box, ex.fill))[0].numpy()
        np.testing.assert_allclose(ex.scores["probs"], expected, rtol=1e-5)
        assert not other_notes(ex.status.message)
    finally:
        ex.close()


def test_a_bundle_that_crops_a_non_square_upload_says_so():
    import io

    from cnnwidgets.zoo import load_default

    explorer = Explorer(load_default(), background=False)
    try:
        buf = io.BytesIO()
        Image.fromarray(np.zeros((200, 300, 3), np.uint8)).save(buf, format="PNG")
        explorer.picker.add_upload("wide.png", buf.getvalue())
        assert not explorer.status.is_error
        assert "the 300x200 image is cropped to its centre square, as the model's preprocessing does" in (
            explorer.status.message)
        explorer.image = explorer.picker.names[0]  # a square sample: no note
        assert "cropped" not in explorer.status.message
    finally:
        explorer.close()


def test_a_layer_of_1x1_maps_says_its_tiles_are_all_on_the_layers_range():
    from cnnwidgets.zoo import load_default

    explorer = Explorer(load_default(), background=False, layer="global_pool")
    try:
        assert explorer.layers["global_pool"].map_shape[1:] == (1, 1)
        for norm in ("channel", "fixed"):  # their own ranges would be empty: drawn on the layer's, as said
            explorer.norm = norm
            caption = explorer.grid_caption.value
            assert "for every tile (1\u00d71 maps: one value per channel, all on the layer's range)" in caption
            assert "each tile from its own" not in caption and "on its channel's range" not in caption
            tiles = [explorer.grid_image[y + h // 2, x + w // 2] for x, y, w, h in
                     (explorer._frame.layout.tile_rect(c) for c in range(4))]
            assert len({tuple(t) for t in tiles}) > 1  # the channels differ in colour
        explorer.norm = "layer"
        assert "1\u00d71 maps" not in explorer.grid_caption.value
        explorer.norm, explorer.layer = "channel", "features.conv3"  # maps of 16x16: nothing to say
        assert "1\u00d71 maps" not in explorer.grid_caption.value
        assert "sorted" not in explorer.grid_caption.value
        explorer.sort = True
        assert "<b>sorted</b>: strongest mean activation first" in explorer.grid_caption.value
    finally:
        explorer.close()


def test_dead_channels_before_a_relu_are_named_for_what_they_show():
    """At a convolution's output a channel with no positive value still shows a pattern (all of
    it negative); the caption says so instead of calling the patterned tile dead."""
    model = Tiny().eval()
    with torch.no_grad():
        model.features[0].bias[3] = -100.0  # channel 3 below zero everywhere
    explorer = make(model, layer="features.0")
    try:
        assert "1 with no positive value on this image (red frame, \\: zero after a ReLU)" in explorer.grid_caption.value
        explorer.layer = "features.1"  # the ReLU: the same channel is all zero
        assert "1 dead on this image (red frame, \\)" in explorer.grid_caption.value
        assert "no positive value" not in explorer.grid_caption.value
    finally:
        explorer.close()


def test_channels_before_a_batch_norm_are_not_marked_dead():
    """A convolution followed by a batch norm: a channel with no positive value there is shifted
    by the norm and may fire after the ReLU, so it is not marked (the ReLU's output marks truly
    dead channels); with a ReLU right after the convolution it is."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 4, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5),
    ).eval()
    with torch.no_grad():
        model[0].bias[2] = -100.0  # conv channel 2 below zero everywhere ...
        model[1].running_mean[2] = -200.0  # ... and well above zero after the norm
        model[3].bias[1] = -100.0  # a channel that is dead after the second ReLU
    explorer = make(model, layer="0")
    try:
        assert explorer.baseline_activations[2].max() < 0
        assert "dead" not in explorer.grid_caption.value and "no positive value" not in explorer.grid_caption.value
        explorer.layer = "2"  # the ReLU after the norm: channel 2 fires
        assert explorer.baseline_activations[2].min() > 0 and "dead" not in explorer.grid_caption.value
        explorer.layer = "3"  # a ReLU comes right after this convolution
        assert "1 with no positive value on this image (red frame, \\: zero after a ReLU)" in explorer.grid_caption.value
        explorer.layer = "4"
        assert "1 dead on this image (red frame, \\)" in explorer.grid_caption.value
    finally:
        explorer.close()


# ---------------------------------------------------------------- review fixes: model changes, bad input, comm paths
def test_dead_marks_that_no_longer_fit_a_changed_layer_are_dropped_and_said(ex):
    ex.layer = "features.3"
    ex.mark_dead({"features.3": [1, 15]})
    user_model = ex.probe._user_model
    user_model.features[3] = nn.Conv2d(8, 10, 3, padding=1)
    user_model.features[6] = nn.Conv2d(10, 12, 3, padding=1)
    ex.box = (3, 3, 6, 6)
    assert ex.wait_idle(60)
    assert not ex.status.is_error, ex.status.message
    assert "the dead-channel marks of features.3 no longer fit its channels and were dropped" in ex.status.message
    assert ex.dead_marks == {} and ex.activations.shape[0] == 10 and ex.shown_state == ex.state()
    assert "dead over the data set" not in ex.grid_caption.value
    ex.layer = "features.4"
    ex.layer = "features.3"  # back at the layer: it draws, and the note is moot
    assert not ex.status.is_error and "dead-channel marks" not in ex.status.message
    ex.mark_dead({"features.3": [1, 9]})  # marks of the new shape work
    assert ex.dead_marks["features.3"].sum() == 2 and not ex.status.is_error


def test_a_target_class_the_new_head_lacks_is_reset_and_class_names_that_no_longer_fit_give_way():
    model = Tiny().eval()
    ex = make(model, box=(4, 4, 8, 8), classes=list("abcde"), method="grad-cam")
    try:
        ex.target = 4
        assert ex.scores_view.selected == 4
        model.head = nn.Linear(12, 3)
        ex.box = (2, 2, 6, 6)
        assert ex.wait_idle(60)
        assert not ex.status.is_error, ex.status.message
        assert ex.target is None and ex.scores_view.selected is None
        assert "it has 3 classes now and class 4 is gone: the target is the most probable class" in ex.status.message
        assert "it has 3 output units now, not one per class name given (5): classes are shown by index" in (
            ex.status.message)
        assert [row["label"] for row in ex.scores["rows"]] == [f"class {row['index']}" for row in ex.scores["rows"]]
        assert ex.scores["probs"].shape == (3,) and ex.scores["classes"] == []
        assert ex.method_result is not None and ex.method_result.request.target is None
        assert ex.method_view.caption.value.startswith("<b>Grad-CAM</b> of class ")
        ex.target = 2  # a class the new head has works, and the note about the old one goes
        assert ex.wait_idle(60) and not ex.status.is_error and "class 4 is gone" not in ex.status.message
        assert ex.method_result.target == 2
        model.head = nn.Linear(12, 5)  # back to five outputs: the names given fit again
        ex.box = (3, 3, 6, 6)
        assert ex.wait_idle(60)
        assert ex.scores["classes"] == list("abcde") and "class name" not in ex.status.message
    finally:
        ex.close()


def test_a_new_head_without_class_names_given_says_nothing_about_class_names():
    model = Tiny().eval()
    ex = make(model, box=(4, 4, 8, 8))
    try:
        ex.target = 4
        model.head = nn.Linear(12, 3)
        ex.box = (2, 2, 6, 6)
        assert ex.wait_idle(60)
        assert "class 4 is gone" in ex.status.message
        assert "class name" not in ex.status.message
        ex.target = 1
        ex.layer = "features.3"
        assert ex.wait_idle(60) and not ex.status.is_error
        assert "class name" not in ex.status.message and "is gone" not in ex.status.message
    finally:
        ex.close()


@pytest.mark.parametrize("method", ["occlusion", "saliency", "grad-cam", "guided backprop"])
def test_a_nan_class_score_is_an_error_in_the_status_line_not_a_map_with_a_caption(method):
    model = Tiny().eval()
    with torch.no_grad():
        model.head.bias[0] = float("nan")
    ex = make(model, show_scores=False, method=method)
    try:
        assert ex.wait_idle(60)
        assert ex.status.is_error and "score is not finite (NaN or inf)" in ex.status.message
        assert ex.method_result is None and "failed" in ex.method_view.caption.value
        assert "nan" not in ex.method_view.caption.value.lower().replace("nan or inf", "").replace("holds nan", "")
    finally:
        ex.close()


def test_a_nan_deconvnet_map_is_an_error_not_a_picture():
    model = Tiny().eval()
    with torch.no_grad():
        model.features[0].weight[0] = float("nan")
    ex = make(model, show_scores=False, method="deconvnet", layer="features.3")
    try:
        assert ex.wait_idle(60)
        assert ex.status.is_error and "the deconvnet map of channel 0 of features.3 is not finite" in ex.status.message
        assert ex.method_result is None and "failed" in ex.method_view.caption.value
        assert ex.method_view.image.value == b""
    finally:
        ex.close()


class _MarkupNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.add_module("<i>c1</i>", nn.Conv2d(3, 8, 3, padding=1))
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        return self.fc(getattr(self, "<i>c1</i>")(x).mean((2, 3)))


def test_class_layer_and_model_names_are_escaped_in_the_html_captions():
    model = type("Net<b>", (_MarkupNet,), {})().eval()
    ex = make(model, classes=["cats & dogs <b>", "x<y"], method="saliency")
    try:
        ex.target = 0
        assert ex.wait_idle(60)
        assert "of cats &amp; dogs &lt;b&gt;;" in ex.method_view.caption.value
        assert "&lt;i&gt;c1&lt;/i&gt;" in ex.grid_caption.value and "<i>c1</i>" not in ex.grid_caption.value
        assert ex.title.value == "<b>Net&lt;b&gt;</b>"
        ex.target = 1
        for method in ("occlusion", "grad-cam", "deconvnet"):
            ex.method = method
            assert ex.wait_idle(60) and not ex.status.is_error, ex.status.message
            caption = ex.method_view.caption.value
            assert "<i>c1</i>" not in caption and "x<y" not in caption
        assert "P(x&lt;y)" not in ex.method_view.caption.value  # deconvnet names the channel, not the class
        assert "of layer <code>&lt;i&gt;c1&lt;/i&gt;</code> projected" in ex.method_view.caption.value
        ex.method = "occlusion"
        assert ex.wait_idle(60) and "change of P(x&lt;y)" in ex.method_view.caption.value
    finally:
        ex.close()


def test_the_box_is_any_sequence_of_four_numbers_in_the_constructor_and_the_trait_alike():
    for bad in (5, {"x": 1}, (1, 2, 3), (True, 0, 4, 4), ("a", 0, 4, 4)):
        with pytest.raises(ValueError, match=r"box must be \(x, y, w, h\): four numbers .* or 'center'"):
            make(box=bad)
    ex = make(box=np.array([1, 2, 3, 4]))
    try:
        assert ex.box == (1, 2, 3, 4)
        ex.box = np.array([2, 2, 4, 4])
        assert ex.box == (2, 2, 4, 4) and ex.shown_state.box == (2, 2, 4, 4)
        ex.box = torch.tensor([3.0, 3.0, 5.0, 5.0])
        assert ex.box == (3, 3, 5, 5)
        for bad in (5, {"x": 1}, (1, 2, 3), (True, 0, 4, 4)):
            with pytest.raises(traitlets.TraitError, match=r"box must be \(x, y, w, h\): four numbers"):
                ex.box = bad
        assert ex.box == (3, 3, 5, 5)
    finally:
        ex.close()


def test_constructor_arguments_of_the_wrong_kind_are_named():
    with pytest.raises(ValueError, match=r"denormalize must return an \(H, W, 3\) or a gray \(H, W\) array"):
        make(denormalize=lambda x: "x")
    with pytest.raises(TypeError, match="background must be True .* or False .*, got 'no'"):
        make(background="no")
    with pytest.raises(ValueError, match="there is one cpu device"):
        make(device="cpu:1")


def test_ints_are_ints_layers_are_plain_strings_and_the_cpu_has_no_index(ex):
    for name, value in (("channel", True), ("target", True), ("method_stride", 4.0), ("channel", 2.0),
                        ("target", 1.0)):
        before = getattr(ex, name)
        with pytest.raises(traitlets.TraitError):
            setattr(ex, name, value)
        assert getattr(ex, name) == before
    ex.channel, ex.target, ex.method_stride = np.int64(3), np.int64(1), np.int64(4)  # NumPy's ints are ints
    assert (ex.channel, ex.target, ex.method_stride) == (3, 1, 4) and type(ex.channel) is int
    ex.layer = np.str_("features.0")
    assert type(ex.layer) is str and type(ex.state().layer) is str
    with pytest.raises(traitlets.TraitError, match="there is one cpu device"):
        ex.device = "cpu:1"
    ex.device = "cpu:0"
    assert ex.device == "cpu"


def test_a_channel_set_with_its_layer_in_a_hold_is_checked_against_that_layer(ex):
    ex.layer, ex.channel = "features.3", 15
    with pytest.raises(traitlets.TraitError, match=r"channel 15 out of range 0\.\.7 for layer 'features.0'"):
        with ex.hold_trait_notifications():
            ex.layer = "features.0"
            ex.channel = 15  # the value it has: still checked against the new layer
    assert (ex.layer, ex.channel) == ("features.3", 15) and ex.shown_state.layer == "features.3"
    with ex.hold_trait_notifications():
        ex.layer, ex.channel = "features.0", 7
    assert (ex.layer, ex.channel) == ("features.0", 7) == (ex.shown_state.layer, ex.shown_state.channel)
    ex.layer = "features.3"
    ex.channel = 15
    ex.layer = "features.0"  # alone, the layer still brings the channel into its range
    assert ex.channel == 0


def test_method_signed_is_refused_after_close(ex):
    ex.close()
    with pytest.raises(traitlets.TraitError, match="cannot set method_signed: this explorer is closed"):
        ex.method_signed = True


def test_a_target_the_browser_picks_out_of_range_is_shown_in_the_status_line_and_undone(ex):
    ex.scores_view.set_state({"selected": 99})  # as the comm delivers a click: nothing is raised
    assert ex.status.is_error and "target: TraitError: target class 99 out of range" in ex.status.message
    assert ex.scores_view.selected is None and ex.target is None
    ex.scores_view.set_state({"selected": 2})  # a later good value works
    assert ex.target == 2 and ex.scores_view.selected == 2 and ex.shown_state.target == 2
    assert not ex.status.is_error


def test_values_a_widget_itself_refuses_from_the_browser_reach_the_status_line_and_are_undone(ex, monkeypatch):
    """The layer menu and the occluder check values themselves, before the explorer sees them;
    such a refusal used to leave the comm handler (the kernel's log only) with the browser
    showing a value the kernel never took."""
    sent = []
    for part in (ex.layer_select, ex.canvas):
        monkeypatch.setattr(part, "send_state", lambda key=None, _part=part: sent.append((_part, key)))
    layer, box = ex.layer, ex.box
    ex.layer_select.set_state({"value": "features.gone"})  # as the comm delivers a pick: nothing is raised
    assert ex.status.is_error and "value: TraitError: 'features.gone' is not an option" in ex.status.message
    assert (ex.layer, ex.layer_select.value) == (layer, layer)
    assert sent[-1] == (ex.layer_select, ["value"])  # the browser is told the kernel's value again
    ex.canvas.set_state({"box": [0, 0, 0, 5]})
    assert ex.status.is_error and "box: TraitError" in ex.status.message
    assert ex.box == box and sent[-1] == (ex.canvas, ["box"])
    ex.layer_select.set_state({"value": "features.0"})  # a later good value works
    assert ex.layer == "features.0" and ex.shown_state.layer == "features.0" and not ex.status.is_error


def test_a_widget_without_a_handler_still_raises_what_it_refuses():
    from cnnwidgets.widgets.select import GroupedSelect

    menu = GroupedSelect(description="layer")
    menu.set_items([("g", "a", "a"), ("g", "b", "b")])
    with pytest.raises(traitlets.TraitError, match="'c' is not an option"):
        menu.set_state({"value": "c"})
    assert menu.value == "a"


class TupleOut(Tiny):
    def forward(self, x):
        y = super().forward(x)
        return y, y * 2


def test_a_method_that_works_after_one_that_failed_leaves_the_scores_problem_in_the_status_line():
    ex = make(TupleOut().eval())
    try:
        assert ex.status.is_error and "without class scores" in ex.status.message
        ex.method = "saliency"
        assert ex.wait_idle(60) and ex.status.message.startswith("method 'saliency'")
        ex.method = "deconvnet"
        assert ex.wait_idle(60) and ex.method_result is not None
        assert ex.status.is_error and "the feature maps are shown without class scores" in ex.status.message
    finally:
        ex.close()


class _Branchy(Tiny):
    """Runs ``extra`` only on inputs wider than 40 pixels."""

    def __init__(self) -> None:
        super().__init__()
        self.extra = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        if x.shape[-1] > 40:
            x = self.extra(x)
        return super().forward(x)


def _own_size(im):
    """A preprocess that keeps the image's own size: each image its own input size."""
    pil = to_pil(im)
    return default_preprocess((pil.height, pil.width))(pil)


def test_an_image_of_another_size_that_lacks_the_selected_layer_replaces_it_and_says_so():
    rng = np.random.default_rng(0)
    big, small = (rng.integers(0, 255, (side, side, 3), dtype=np.uint8) for side in (64, 32))
    ex = make(_Branchy().eval(), preprocess=_own_size, samples={"big": big, "small": small}, input_size=None)
    try:
        ex.layer, ex.channel = "extra", 2
        ex.image = "small"
        assert ex.wait_idle(60) and not ex.status.is_error
        # the default layer, as after a model change, not the menu's first item
        assert ex.layer == default_layer(ex.layers) == ex.shown_state.layer
        assert (f"layer extra does not run or shows no feature map at the new image's input size 32x32: showing "
                f"{ex.layer}") in ex.status.message
        ex.layer = "features.0"
        assert "layer extra" not in ex.status.message
    finally:
        ex.close()


def test_method_maps_wait_for_the_occluders_release_and_say_so():
    ex = make(box=(4, 4, 8, 8), method="saliency")
    try:
        assert ex.wait_idle(60) and ex.method_result.request.method == "saliency"
        ex.dragging = True
        ex.method = "grad-cam"
        start = time.monotonic()
        assert not ex.wait_idle(30)  # not idle: the map asked for is not on screen ...
        assert time.monotonic() - start < 10  # ... nor waited for in vain
        assert ex.method_view.stale and ex.method_result.request.method == "saliency"
        assert "grad-cam: computed when the occluder is released" in ex.method_view.caption.value
        ex.dragging = False
        assert ex.wait_idle(60)
        assert ex.method_result.request.method == "grad-cam" and not ex.method_view.stale
        assert ex.method_view.caption.value.startswith("<b>Grad-CAM</b>")
        ex.dragging = True  # a drag that changes nothing a method uses: the map stays current
        ex.box = (6, 6, 8, 8)
        assert ex.wait_idle(60) and not ex.method_view.stale
        ex.dragging = False
    finally:
        ex.close()


def test_layers_with_an_empty_feature_map_are_not_offered_and_refused_with_the_reason():
    from tests.test_layer_geometry import EMPTY_ACT, empty_branch

    with pytest.raises(traitlets.TraitError, match=EMPTY_ACT):
        make(empty_branch(), layer="act")  # 'act' is (8, 0, 0) at 32 x 32
    ex = make(empty_branch())
    try:
        offered = [name for _, _, name in layer_items(ex.layers)]
        assert "pool" in offered and "act" not in offered and "crop" not in offered
        assert default_layer(ex.layers) == "conv"
        ex.layer = "pool"
        with pytest.raises(traitlets.TraitError, match=EMPTY_ACT):  # was numpy's "zero-size array" in the status
            ex.layer = "act"
        assert ex.layer == "pool"
        assert ex.wait_idle(60) and not ex.status.is_error and ex.shown_state.layer == "pool"
    finally:
        ex.close()


def test_an_image_at_whose_size_the_selected_layer_is_empty_replaces_it_and_says_so():
    from tests.test_layer_geometry import empty_branch

    rng = np.random.default_rng(0)
    big, small = (rng.integers(0, 255, (side, side, 3), dtype=np.uint8) for side in (64, 32))
    ex = make(empty_branch(), preprocess=_own_size, samples={"big": big, "small": small}, input_size=None)
    try:
        ex.layer = "act"  # 12 x 12 at 64 x 64
        assert ex.wait_idle(60) and not ex.status.is_error
        ex.image = "small"
        assert ex.wait_idle(60) and not ex.status.is_error
        assert ex.layer == default_layer(ex.layers) == ex.shown_state.layer != "act"
        assert ("at the new image's input size 32x32: layer act has an empty feature map (8, 0, 0): showing "
                f"{ex.layer}") in ex.status.message
    finally:
        ex.close()


def test_a_frame_of_an_empty_feature_map_says_why():
    from cnnwidgets.app.frames import Baseline

    with pytest.raises(ValueError, match=r"the layer's feature map is empty \(8, 0, 0\) at this input size: pick"):
        Baseline(np.zeros((8, 0, 0), np.float32))


# ---------------------------------------------------------------- a normalised tensor, method errors, tensor indices
_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
_STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


def _normalised(seed: int) -> torch.Tensor:
    return (torch.from_numpy(image(seed)).permute(2, 0, 1).float() / 255 - _MEAN) / _STD


def _undo(x: torch.Tensor) -> np.ndarray:
    return (x * _STD + _MEAN).clamp(0, 1).permute(1, 2, 0).numpy()


def test_a_normalised_tensor_with_denormalize_is_the_model_input_as_it_is():
    x = _normalised(0)[None]  # (1, 3, 32, 32), values in about [-2, 2.6]
    assert x.min() < 0 and x.max() > 1
    with pytest.raises(ValueError, match=r"looks normalised.*pass denormalize= \(the inverse of the normalisation"):
        make(img=x, input_size=None)
    calls = []

    def preprocess(im):
        calls.append(im)
        return default_preprocess((SIZE, SIZE))(im)

    model = Tiny().eval()
    ex = make(model, img=x, input_size=None, denormalize=_undo, box=None, samples={"a": image(1)})
    try:
        assert ex.input_image.shape == (SIZE, SIZE, 3)
        np.testing.assert_array_equal(ex.input_image, np.clip(_undo(x[0]) * 255 + 0.5, 0, 255).astype(np.uint8))
        ref = reference_outputs(model, x, [ex.layer])[ex.layer][0].numpy()  # the tensor itself, not re-preprocessed
        np.testing.assert_allclose(ex.activations, ref, rtol=1e-5, atol=1e-5)
        x[0, 0, 0, 0] = 100.0  # the explorer keeps a copy
        ex.image = "a"  # a sample is preprocessed at the tensor's size
        assert ex.input_image.shape == (SIZE, SIZE, 3) and not ex.status.is_error, ex.status.message
        ex.image = "your image"
        np.testing.assert_allclose(ex.activations, ref, rtol=1e-5, atol=1e-5)
        ex.set_image(_normalised(2), "mine")  # (C, H, W), given later
        assert ex.image == "mine" and not ex.status.is_error, ex.status.message
        ref = reference_outputs(model, _normalised(2)[None], [ex.layer])[ex.layer][0].numpy()
        np.testing.assert_allclose(ex.activations, ref, rtol=1e-5, atol=1e-5)
    finally:
        ex.close()
    ex = make(model, img=_normalised(3), preprocess=preprocess, denormalize=_undo, box=None, samples={})
    try:
        assert calls == []  # the preprocessing is for pictures: the tensor is not given to it
        ref = reference_outputs(model, _normalised(3)[None], [ex.layer])[ex.layer][0].numpy()
        np.testing.assert_allclose(ex.activations, ref, rtol=1e-5, atol=1e-5)
    finally:
        ex.close()


def test_a_failed_method_map_is_readable_from_python_and_counted():
    ex = make(TupleOut().eval())
    try:
        assert ex.method_error is None and ex.stats["method_errors"] == 0
        grid_errors = ex.stats["errors"]
        ex.method = "saliency"  # needs class scores, which a tuple output does not give
        assert ex.wait_idle(60) and ex.method_result is None
        assert ex.method_error is not None and ex.method_error.startswith("method 'saliency'")
        assert ex.method_error == ex.status.message
        assert ex.stats["method_errors"] == 1 and ex.stats["errors"] == grid_errors + 1
        with pytest.raises(AttributeError):
            ex.method_error = None  # read-only
        ex.method = "deconvnet"  # a channel's map: it works
        assert ex.wait_idle(60) and ex.method_result is not None and ex.method_error is None
        ex.method = "saliency"
        assert ex.wait_idle(60) and ex.method_error is not None and ex.stats["method_errors"] == 2
        ex.method = "none"  # no map asked for: no error either
        assert ex.wait_idle(60) and ex.method_error is None
        assert "saliency" not in ex.status.message
        assert ex.stats["errors"] == grid_errors + 2
    finally:
        ex.close()


def test_target_and_channel_take_0d_integer_tensors_and_refusals_say_what_is_accepted(ex):
    ex.target = torch.tensor(3)  # what model(x).argmax() gives
    assert ex.target == 3 and type(ex.target) is int and ex.state().target == 3
    ex.target = torch.tensor([4])  # what model(x).argmax(1) gives for one image
    assert ex.target == 4 and type(ex.target) is int
    ex.target = np.int32(2)
    assert ex.target == 2 and type(ex.target) is int
    ex.channel = torch.tensor(5, dtype=torch.int32)
    assert ex.channel == 5 and type(ex.channel) is int and ex.shown_state.channel == 5
    for bad in (torch.tensor([1, 2]), torch.tensor(1.0), "1", 2.0):
        with pytest.raises(traitlets.TraitError, match=r"target must be an int \(a Python int, a numpy integer or "
                                                       r"a 0-d integer tensor\).*or None for the most probable"):
            ex.target = bad
    assert ex.target == 2
    with pytest.raises(traitlets.TraitError, match="0-d integer tensor"):
        ex.method_stride = torch.tensor([4])


class _InferenceModeTiny(Tiny):
    """A model whose own forward runs under torch.inference_mode(), as some deployment code does."""

    def forward(self, x):
        with torch.inference_mode():
            return super().forward(x.clone())


def test_a_model_that_runs_under_inference_mode_opens_and_its_gradient_views_say_why_they_cannot_work():
    model = _InferenceModeTiny().eval()
    ex = make(model, box=(4, 4, 8, 8))
    try:
        assert not ex.status.is_error, ex.status.message
        x = occluded_input(ex)
        with torch.no_grad():
            expected = model.features[:2](x.clone())[0]  # the ReLU after the first convolution
        ex.layer = "features.1"
        assert ex.wait_idle(60)
        torch.testing.assert_close(torch.as_tensor(ex.activations), expected)
        assert ex.scores["probs"].shape == (5,)
        ex.method = "deconvnet"
        assert ex.wait_idle(60)
        assert "project_channel: the output of layer" in ex.method_error
        assert "torch.inference_mode()" in ex.method_error
        ex.method = "grad-cam"
        assert ex.wait_idle(60)
        assert "torch.inference_mode()" in ex.method_error
        ex.box = (6, 6, 8, 8)  # new frames come while the map still fails: the line keeps saying why
        ex.channel = 3
        assert ex.wait_idle(60)
        assert "torch.inference_mode()" in ex.method_error
        assert ex.status.is_error and ex.status.message == ex.method_error
        ex.method = "none"  # no method: its error is over
        assert ex.wait_idle(60)
        assert ex.method_error is None and not ex.status.is_error
    finally:
        ex.close()


def test_the_target_class_can_be_given_to_the_constructor_and_is_checked_there():
    ex = make(box=(4, 4, 8, 8), target=2, method="grad-cam")
    try:
        assert ex.target == 2 and ex.scores_view.selected == 2
        assert ex.wait_idle(60) and ex.method_result is not None and ex.method_result.target == 2
    finally:
        ex.close()
    with pytest.raises(traitlets.TraitError, match="target class 7 out of range"):
        make(target=7)


def test_a_binary_classifier_refuses_target_one_saying_its_single_unit_is_the_positive_class():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 1)).eval()
    ex = make(model, classes=["neg", "pos"])
    try:
        with pytest.raises(traitlets.TraitError, match=r"accepted 0, the model's one output unit \('pos'\)"):
            ex.target = 1
        ex.target = 0
        assert ex.target == 0 and not ex.status.is_error
    finally:
        ex.close()


def test_set_image_keeps_the_last_images_given_by_name_not_all_of_them(ex):
    ex.MAX_SET_IMAGES = 3
    for i in range(6):
        ex.set_image(image(i), name=f"photo {i}")
    assert ex.image == "photo 5"
    kept = [name for name in ex.picker.names if name.startswith("photo")]
    assert kept == ["photo 3", "photo 4", "photo 5"]
    assert "photo 0" not in ex._samples and "a" in ex.picker.names  # the samples given stay
    ex.set_image(image(7), name="photo 3")  # an entry given again is the newest, not a new one
    ex.set_image(image(8), name="photo 6")
    assert [name for name in ex.picker.names if name.startswith("photo")] == ["photo 3", "photo 5", "photo 6"]
    ex.image = "photo 5"  # a kept entry can still be picked
    assert ex.wait_idle(60) and not ex.status.is_error


def _imagenet_denormalize(x):
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    return (x * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()  # clips, as bundles' do


def test_a_0_to_255_float_tensor_is_refused_as_a_model_input_even_by_a_clipping_denormalize():
    refused = torch.rand(3, SIZE, SIZE) * 255
    explorer = make(box=(4, 4, 8, 8), denormalize=_imagenet_denormalize)
    try:
        shown = explorer.input_image.copy()
        with pytest.raises(ValueError, match=r"outside \[0, 1\]: denormalize is not the inverse.*divide it by 255"):
            explorer.set_image(refused)
        assert np.array_equal(explorer.input_image, shown)
        normalised = (torch.rand(3, SIZE, SIZE) - torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)) / torch.tensor(
            [0.229, 0.224, 0.225]).view(3, 1, 1)
        explorer.set_image(normalised)  # a normalised input is still the model input as it is
        assert explorer.wait_idle(60) and not explorer.status.is_error
        torch.testing.assert_close(explorer._images[explorer._image_id].tensor[0], normalised)
    finally:
        explorer.close()


def test_fill_and_norm_take_names_in_any_case_as_method_does(ex):
    ex.fill = "Black"
    ex.norm = "FIXED"
    assert ex.fill == "black" and ex.norm == "fixed"
    assert ex.wait_idle(60) and not ex.status.is_error
    with pytest.raises(traitlets.TraitError):
        ex.fill = "purple"


def test_an_image_file_is_named_in_the_picker_by_its_file_name(tmp_path):
    """A path (or URL) names the picker's entry by its file; a sample's name, or an image that
    is not a file, gives "your image"."""
    Image.fromarray(image(3)).save(tmp_path / "cat.png")
    Image.fromarray(image(4)).save(tmp_path / "a", format="PNG")
    ex = make(img=tmp_path / "cat.png")
    try:
        assert ex.image == "cat.png" and ex.picker.names == ["cat.png", "a", "b"]
        cat = ex.input_image.copy()
        ex.set_image(str(tmp_path / "a"))  # "a" is a sample's name: the sample stays
        assert ex.image == "your image" and ex.picker.names[:3] == ["cat.png", "a", "b"]
        assert not np.array_equal(ex.input_image, cat)
        ex.image = "cat.png"
        assert np.array_equal(ex.input_image, cat)
        Image.fromarray(image(5)).save(tmp_path / "cat.png")
        ex.set_image(tmp_path / "cat.png")  # the same file name again replaces the entry
        assert ex.image == "cat.png" and ex.picker.names.count("cat.png") == 1
        assert not np.array_equal(ex.input_image, cat)
    finally:
        ex.close()
    assert _picker_name("https://example.org/img/dog.jpg?size=large#top", {}) == "dog.jpg"
    assert _picker_name("C:\\photos\\owl.jpg", {}) == "owl.jpg"
    assert _picker_name(image(0), {}) == "your image"


def test_captions_name_a_numbered_layer_as_a_layer():
    """An nn.Sequential's layers are called 0, 1, 2 ...: captions say "layer 0" (the name in
    code type), not a bare number that reads as part of the sentence."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 5)).eval()
    ex = make(model, layer="0")
    try:
        assert "<b>layer <code>0</code></b>" in ex.grid_caption.value
        ex.method = "grad-cam"
        assert ex.wait_idle(60) and not ex.status.is_error, ex.status.message
        assert " at layer <code>0</code>" in ex.method_view.caption.value
        ex.method = "deconvnet"
        assert ex.wait_idle(60) and not ex.status.is_error, ex.status.message
        assert f"channel {ex.channel} of layer <code>0</code> projected" in ex.method_view.caption.value
    finally:
        ex.close()


def test_captions_give_the_colour_key_and_the_values_at_its_ends(ex):
    import base64
    import io
    import re

    def key(caption):  # the colour strip in a caption, decoded
        data = re.search(r"data:image/png;base64,([^']+)'", caption).group(1)
        return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"))

    # "fixed" (the default): the selected channel's view spans its range on the unoccluded image
    base = ex.baseline_activations[ex.channel]
    assert f"{float(base.min()) + 0.0:.3g} <img" in ex.panel_caption.value
    assert f"> {float(base.max()):.3g} &nbsp;|" in ex.panel_caption.value
    assert "each tile on its channel's range in the unoccluded image" in ex.grid_caption.value
    ex.norm = "layer"  # one range for every tile: the caption gives it
    acts = ex.activations
    assert (f"{float(acts.min()) + 0.0:.3g} <img" in ex.grid_caption.value
            and f"> {float(acts.max()):.3g} for every tile" in ex.grid_caption.value)
    ex.norm = "channel"
    assert "each tile from its own lowest to its highest value" in ex.grid_caption.value
    for cmap in ("viridis", "gray"):
        ex.cmap = cmap
        lut = R.get_lut(cmap)
        for caption in (ex.grid_caption.value, ex.panel_caption.value):
            strip = key(caption)
            np.testing.assert_array_equal(strip[0, 0], lut[0])  # low values on the left ...
            np.testing.assert_array_equal(strip[0, -1], lut[255])  # ... high on the right


class PatchTokens(nn.Module):
    """A vision-transformer-like model: a patch embedding (the only feature map), then tokens."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, 8, 8, stride=8)
        self.blocks = nn.Sequential(nn.Linear(8, 8), nn.GELU(), nn.Linear(8, 8), nn.LayerNorm(8))
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        tokens = self.embed(x).flatten(2).transpose(1, 2)  # (N, 16, 8)
        return self.head(self.blocks(tokens).mean(dim=1))


def test_a_model_of_token_sequences_says_why_the_layer_menu_is_short():
    ex = make(PatchTokens().eval())
    try:
        assert ex.layer_select.options == ["embed"] and ex.layer == "embed"
        assert not ex.status.is_error
        assert "the layer menu offers embed only" in ex.status.message
        assert "token sequences or vectors (e.g. blocks.0: (16, 8))" in ex.status.message
    finally:
        ex.close()
    ex = make()  # a CNN: most layers give maps, and nothing is said
    try:
        assert "layer menu" not in ex.status.message
    finally:
        ex.close()


def test_a_sample_named_as_the_image_opens_on_that_sample():
    ex = make(img="b")  # not a file: the sample of that name
    try:
        assert ex.image == "b" and sorted(ex.picker.names) == ["a", "b"]  # no "your image" copy of it
        np.testing.assert_array_equal(ex.input_image, np.asarray(to_pil(image(1))))
        ex.set_image("a")  # set_image takes a sample's name as explore does
        assert ex.image == "a" and sorted(ex.picker.names) == ["a", "b"]
        np.testing.assert_array_equal(ex.input_image, np.asarray(to_pil(image(0))))
        with pytest.raises(FileNotFoundError, match="nor is it the name of a sample"):
            ex.set_image("c")
        with pytest.raises(FileNotFoundError) as missing:
            ex.set_image("imgs/missing.png")  # a path: only the path is wrong
        assert "sample" not in str(missing.value) and ex.image == "a"
    finally:
        ex.close()
    with pytest.raises(FileNotFoundError, match=r"not found: 'no such sample', nor is it the name of a sample \('a', 'b'\)"):
        make(img="no such sample")


def test_dead_marks_follow_a_shared_relu_and_not_past_a_residual_addition():
    """torchvision's basic block: bn1 goes into the block's one ReLU (called twice), bn2 into an
    in-place residual addition first. A bn1 channel below zero is dead after the ReLU (marked);
    a bn2 channel below zero may fire once the identity is added (not marked)."""
    from tests.test_dead import SharedReluBlock

    block = SharedReluBlock()
    model = nn.Sequential(block, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 5)).eval()
    with torch.no_grad():
        block.bn1.weight[0], block.bn1.bias[0] = 0.0, -1.0  # zero after the ReLU everywhere
        block.bn2.weight[0], block.bn2.bias[0] = 0.0, -1e-3  # the image's channel 0 is added to it
    ex = make(model, layer="0.bn1")
    try:
        assert ex.baseline_activations[0].max() < 0 and ex._frame.dead == 1
        ex.layer = "0.bn2"
        assert ex.baseline_activations[0].max() < 0 and ex._frame.dead == 0
        assert "dead" not in ex.grid_caption.value and "no positive value" not in ex.grid_caption.value
    finally:
        ex.close()


class _Fails(nn.Module):
    active = False

    def forward(self, x):
        if self.active:
            raise RuntimeError("deliberate failure in the middle of the model")
        return x


def test_coming_back_to_a_layer_that_failed_says_so_again_and_unfades_the_grid():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), _Fails(), nn.Conv2d(4, 4, 3, padding=1)).eval()
    ex = make(model, layer="0", show_scores=False)
    try:
        assert not ex.status.is_error, ex.status.message
        ex.probe.model[2].active = True  # the explorer's copy fails past layer 1 from now on
        ex.layer = "3"
        assert ex.status.is_error and "deliberate failure" in ex.status.message and not ex.grid_busy
        computes = ex.stats["computes"]
        ex.layer = "0"
        assert not ex.status.is_error and ex.shown_state.layer == "0"
        ex.layer = "3"  # the same failing request: not computed again, but its error is shown again
        assert ex.stats["computes"] == computes
        assert ex.status.is_error and "deliberate failure" in ex.status.message
        assert not ex.grid_busy  # the grid shows layer 0, plainly: no frame of layer 3 is coming
    finally:
        ex.close()


def test_the_occlusion_key_gives_the_largest_change_only_when_it_reads_differently():
    from cnnwidgets.app.explorer import _occlusion_key

    def key(largest):
        return _occlusion_key(np.array([[largest, -largest / 2], [np.nan, 0.0]], dtype=np.float32), True)

    assert key(0.3).endswith("full colour = a change of 30.0 points")  # the map's own largest change
    assert key(0.004).endswith("full colour = a change of 1.0 points (the largest here is 0.4 points)")
    # 0.97 points rounds to the floor's 1.0: no "1.0 points (the largest here is 1.0 points)"
    assert key(0.0097).endswith("full colour = a change of 1.0 points")
    assert key(0.0) == "no place changes it: the map has no colour"
    assert "full colour" in _occlusion_key(np.zeros((2, 2), dtype=np.float32), False)  # still computing


def test_the_occluder_box_on_the_channel_view_is_yellow_with_a_dark_line_around_it(ex):
    from cnnwidgets.app.frames import BOX_COLOR, BOX_EDGE_COLOR

    ex.dragging = False
    ex.box = (4, 6, 8, 8)
    assert ex.wait_idle(60)
    panel = ex.channel_image  # the channel view as drawn: left half over the image
    x, y, w, h = ex.box
    row = y + h // 2  # halfway down the left edge of the box, on the left half of the panel
    assert tuple(panel[row, x]) == BOX_COLOR and tuple(panel[row, x - 1]) == BOX_EDGE_COLOR
    assert tuple(panel[row, x + w - 1]) == BOX_COLOR and tuple(panel[row, x + w]) == BOX_EDGE_COLOR
    column = x + w // 2  # and across its top and bottom edges
    assert tuple(panel[y, column]) == BOX_COLOR and tuple(panel[y - 1, column]) == BOX_EDGE_COLOR
    assert tuple(panel[y + h - 1, column]) == BOX_COLOR and tuple(panel[y + h, column]) == BOX_EDGE_COLOR


def test_a_channel_with_one_value_everywhere_says_so_instead_of_a_colour_bar_between_equal_numbers():
    model = Tiny().eval()
    with torch.no_grad():  # channel 0 of the first ReLU is 0 everywhere (dead)
        model.features[0].weight[0] = 0.0
        model.features[0].bias[0] = -1.0
    ex = make(model, box=(4, 4, 8, 8), layer="features.1")
    try:
        ex.channel = 0
        assert ex.wait_idle(60)
        assert "one value everywhere: 0" in ex.panel_caption.value and "<img" not in ex.panel_caption.value
        ex.channel = 1
        assert ex.wait_idle(60)
        assert "one value everywhere" not in ex.panel_caption.value and "<img" in ex.panel_caption.value
    finally:
        ex.close()


def test_a_model_left_in_training_mode_gets_a_note_that_the_explorer_computes_in_evaluation_mode():
    class WithNorm(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                          nn.Dropout(0.5))
            self.head = nn.Linear(8, 3)

        def forward(self, x):
            return self.head(self.features(x).mean(dim=(2, 3)))

    torch.manual_seed(0)
    model = WithNorm()  # training mode: model.eval() forgotten
    ex = make(model)
    try:
        assert "training mode (2 BatchNorm2d/Dropout module(s))" in ex.status.message
        assert "model.eval()" in ex.status.message
        assert model.training  # noted, not changed
    finally:
        ex.close()
    ex = make(model.eval())
    try:
        assert "training mode" not in ex.status.message
    finally:
        ex.close()


def test_a_layer_of_one_unit_per_channel_is_drawn_in_tiles_that_compare_the_channels():
    from cnnwidgets import zoo
    from cnnwidgets.app.frames import TINY_TILE_PIXELS

    ex = Explorer(zoo.load_default(), zoo.sample_image("star"), samples={}, background=False)
    try:
        ex.layer = "global_pool"  # (64, 1, 1)
        assert ex.wait_idle(60)
        grid, acts = ex.grid_image, ex.activations
        assert acts.shape == (64, 1, 1)
        layout = ex._current()[0].layout
        assert layout.scale == TINY_TILE_PIXELS  # several pixels per unit, not 1-pixel dots between borders
        # each tile coloured on the layer's range: the strongest and weakest channels differ in colour
        def colour(channel):
            row, col = divmod(list(layout.order).index(channel) if layout.order is not None else channel, layout.cols)
            y = layout.border + row * (layout.tile_height + layout.border) + layout.tile_height // 2
            x = layout.border + col * (layout.tile_width + layout.border) + layout.tile_width // 2
            return tuple(grid[y, x])

        values = acts[:, 0, 0]
        assert colour(int(values.argmax())) != colour(int(values.argmin()))
    finally:
        ex.close()


def test_the_default_imagenet_normalisation_is_noted_for_a_model_that_is_no_imagenet_classifier():
    note = "the image is normalised with ImageNet's mean and std (the default preprocessing)"
    ex = make()  # five classes, default preprocessing
    try:
        assert ex.wait_idle(60) and note in ex.status.message and "pass preprocess= and denormalize=" in ex.status.message
    finally:
        ex.close()
    ex = make(preprocess=default_preprocess((SIZE, SIZE)), denormalize=default_denormalize)  # the user's own
    try:
        assert ex.wait_idle(60) and note not in ex.status.message
    finally:
        ex.close()
    imagenet = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                             nn.Linear(4, 1000)).eval()
    ex = make(imagenet)  # 1000 outputs: ImageNet's normalisation is taken to be right
    try:
        assert ex.wait_idle(60) and note not in ex.status.message
    finally:
        ex.close()
