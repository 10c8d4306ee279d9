"""The experiment views on small models at 32 px: the top-k view keeps its patches when the
projections fail, the invariance and correspondence views reject images that do not match the
result, and the evolution view follows each new epoch when asked to."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnwidgets.app.experiments import (
    correspondence_view,
    evolution_view,
    invariance_view,
    topk_panel,
    topk_view,
)
from cnnwidgets.methods.correspondence import correspondence
from cnnwidgets.methods.evolution import FeatureEvolutionRecorder
from cnnwidgets.methods.invariance import invariance_curves
from cnnwidgets.methods.topk import scan_topk
from cnnwidgets.render.figures import topk_mosaic
from cnnwidgets.widgets.imagestatus import png_bytes
from tests.helpers import small_classifier

WEIGHTS_DIFFER = "the model's weights differ from the ones the scan was made with"


def conv_net() -> nn.Module:
    return small_classifier()


def images(n: int) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(3))


def patches_only(topk, layer: str, channel: int) -> bytes:
    """The PNG the view shows for a channel without projections (default tile)."""
    projections, patches = topk_panel(topk, layer, channel)
    assert projections is None
    return png_bytes(topk_mosaic(None, patches, tile=56))


# ---------------------------------------------------------------------------- top-k
def test_topk_view_shows_the_patches_and_says_why_projections_are_missing_after_more_training():
    model = conv_net()
    topk = scan_topk(model, images(5), ["1", "4"], k=9, progress=False)
    view = topk_view(topk, model)
    view.layer = "4"
    assert not view.error and "projections (left) and patches (right)" in view.status
    scanned = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model[0].weight.mul_(1.1)  # the user trains a little more after the scan
    view._next.click()
    assert view.channel == 1
    assert view._image.value == patches_only(topk, "4", 1)  # the new channel's patches, not the old picture
    assert view.error and view.status.startswith("4 channel 1: patches, strongest first")
    assert view.status.endswith(f"no projections: {WEIGHTS_DIFFER}")
    assert view.caption.count("<tr>") == 1 + len(topk.entries("4", 1))  # the head and one row per entry
    # the failed channel is not cached: with the scanned weights back, its projections return
    model.load_state_dict(scanned)
    view._prev.click()
    view._next.click()
    assert view.channel == 1 and not view.error and "projections (left)" in view.status
    assert view._image.value != patches_only(topk, "4", 1)
    view.close()


def test_topk_view_with_another_instance_of_the_architecture_still_shows_the_patches():
    topk = scan_topk(conv_net(), images(5), ["4"], k=4, progress=False)
    other = conv_net()  # another instance: same architecture, other weights
    with torch.no_grad():
        other[3].weight.add_(0.5)
    view = topk_view(topk, other)
    view.channel = 2
    assert view._image.value == patches_only(topk, "4", 2)
    assert view.error and view.status.startswith("4 channel 2: patches") and WEIGHTS_DIFFER in view.status
    view.close()


# ---------------------------------------------------------------------------- invariance
def test_invariance_view_rejects_images_or_names_that_do_not_match_the_result():
    model = conv_net()
    x = images(4)
    result = invariance_curves(model, x, [0, 1, 2, 3], ["1", "4"], transforms={"rotation": [0, 90], "scale": [1, 1.5]},
                               progress=False)
    with pytest.raises(ValueError, match=r"the result has 4 images, but 2 images were given"):
        invariance_view(result, x[:2])
    with pytest.raises(ValueError, match=r"the result has 4 images, but 1 image names were given; give one name per"):
        invariance_view(result, x, image_names=["a"])
    with pytest.raises(ValueError, match=r"images must be a tensor \(N, C, H, W\), got shape \(3, 32, 32\)"):
        invariance_view(result, x[0])
    view = invariance_view(result, x, image_names=["a", "b", "c", "d"])
    view.transform, view.step = "scale", 1
    assert not view.error and ">d</td>" in view.readout and "scale: ×1.5 (enlarged)" in view.readout
    view.close()


def test_invariance_view_names_the_step_in_words_beside_the_slider():
    model = conv_net()
    x = images(2)
    result = invariance_curves(model, x, [0, 1], ["1"], transforms={"translation": [-4, 0, 4], "rotation": [0, 90]},
                               progress=False)
    view = invariance_view(result, x)
    assert view.transform == "translation" and view.step_labels == ["4 px up", "no shift", "4 px down"]
    assert not view._slider.readout and view._step_label.value == "4 px up"
    view._slider.value = 2  # dragged in the browser
    assert view._step_label.value == "4 px down" and "translation: 4 px down" in view.readout
    view.transform = "rotation"
    assert view.step == 0 and view._step_label.value == "no rotation" and view._slider.max == 1
    view.step = 1
    assert view._step_label.value == "90° counter-clockwise"
    view.close()


# ---------------------------------------------------------------------------- correspondence
def test_correspondence_view_rejects_images_or_boxes_that_do_not_match_the_result():
    model = conv_net()
    x = images(3)
    parts = {"corner": [(0, 0, 8, 8)] * 3, "middle": [(12, 12, 20, 20)] * 3}
    result = correspondence(model, x, parts, ["1", "4"], random_trials=1)
    with pytest.raises(ValueError, match=r"the result has 3 images, but 2 images were given"):
        correspondence_view(result, x[:2], parts)
    with pytest.raises(ValueError, match=r"part 'middle' has 2 boxes, but the result has 3 images; give one box"):
        correspondence_view(result, x, {"corner": parts["corner"], "middle": parts["middle"][:2]})
    with pytest.raises(ValueError, match=r"part 'eyes' is not a part of the result; its parts are 'corner', 'middle'"):
        correspondence_view(result, x, {"eyes": parts["corner"]})
    view = correspondence_view(result, x, parts)
    view.part = "middle"
    assert not view.error and "middle" in view.status
    view.close()


def test_correspondence_view_menu_names_the_part_shown_from_the_start():
    model = conv_net()
    x = images(2)
    parts = {"corner": [(0, 0, 8, 8)] * 2, "middle": [(12, 12, 20, 20)] * 2}
    view = correspondence_view(correspondence(model, x, parts, ["1"], random_trials=1), x, parts)
    assert view.part is None and view._menu.label == "all parts"
    view._menu.index = 2  # picked in the browser
    assert view.part == "middle"
    view.part = "corner"
    assert view._menu.label == "corner"
    view.part = None
    assert view._menu.label == "all parts" and not view.error
    view.close()


# ---------------------------------------------------------------------------- evolution
def test_evolution_view_follows_each_new_epoch_from_wherever_the_user_is_and_stays_when_not_following():
    model = conv_net()
    recorder = FeatureEvolutionRecorder(model, images(4), {"4": 2}, epochs=None)
    view = evolution_view(recorder)
    recorder.record(1)
    recorder.record(2)
    assert view.follow and view.epoch == 2
    view._slider.value = 0  # the user looks back at the first epoch
    assert view.epoch == 1
    recorder.record(5)
    assert view.epoch == 5 and view._slider.value == 2 and "epochs [1, 2, 5]" in view.status
    view.epoch = 1
    recorder.record(3)  # a new epoch earlier than the last one: following, the view goes to it
    assert view.epoch == 3 and view.epochs == [1, 2, 3, 5]
    recorder.record(3)  # recorded again: not new, the view stays
    assert view.epoch == 3
    view.follow = False
    view.epoch = 2
    recorder.record(8)
    assert view.epoch == 2 and view.epochs == [1, 2, 3, 5, 8] and view._slider.value == 1
    assert not view.error
    view.close()
    recorder.close()
