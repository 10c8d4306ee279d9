"""The experiment views on small models at 32 px: the top-k view keeps its patches when the
projections fail, the invariance and correspondence views reject images that do not match the
result, and the evolution view follows each new epoch when asked to."""

from __future__ import annotations

import dataclasses
import pytest
import torch
from torch import nn

from cnnwidgets.app.experiments import (
    correspondence_view,
    evolution_view,
    invariance_view,
    plot_invariance,
    plot_topk,
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
    assert not view._slider.readout and view._step_label.value == "no shift" and view.step == 1  # the identity
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


def test_correspondence_view_shows_the_boxes_the_result_scored_and_refuses_others():
    model = conv_net()
    x = images(3)
    parts = {"corner": [(0, 0, 8, 8)] * 3, "middle": [(12, 12, 20, 20), (10, 10, 18, 18), (12, 12, 20, 20)]}
    result = correspondence(model, x, parts, ["1"], random_trials=1)
    assert result.boxes == parts
    view = correspondence_view(result, x)  # no parts: the result's own
    assert view.parts == ["corner", "middle"] and not view.error
    view.close()
    moved = {"middle": [(12, 12, 20, 20), (11, 10, 19, 18), (12, 12, 20, 20)]}  # one box one pixel off
    with pytest.raises(ValueError, match=r"part 'middle', image 1: box \(11, 10, 19, 18\) is not the box the table "
                                         r"was computed with, \(10, 10, 18, 18\)"):
        correspondence_view(result, x, moved)
    view = correspondence_view(result, x, {"middle": parts["middle"]})  # a subset of the scored parts
    assert view.parts == ["middle"]
    view.close()
    by_hand = dataclasses.replace(result, boxes={})
    with pytest.raises(ValueError, match=r"records no boxes .* give parts="):
        correspondence_view(by_hand, x)
    correspondence_view(by_hand, x, moved).close()  # nothing recorded to compare with


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


# ---------------------------------------------------------------------------- checks shared by the views
def _results():
    model = conv_net()
    x = images(3)
    parts = {"corner": [(0, 0, 8, 8)] * 3, "middle": [(12, 12, 20, 20)] * 3}
    return model, x, parts


@pytest.mark.parametrize("box, message", [
    ((8, 8, 0, 0), r"part 'corner', image 0: box \(8, 8, 0, 0\) must satisfy 0 <= x0 < x1 <= 32"),
    ((30, 30, 60, 60), r"part 'corner', image 0: box \(30, 30, 60, 60\) must satisfy"),
    ((-5, -5, 4, 4), r"part 'corner', image 0: box \(-5, -5, 4, 4\) must satisfy"),
    ((0.5, 0, 8, 8), r"part 'corner', image 0: box coordinates are whole pixels \(ints\), got \(0.5, 0, 8, 8\)"),
    ((0, 0, 8), r"part 'corner', image 0: a box is \(x0, y0, x1, y1\), got \(0, 0, 8\)"),
])
def test_correspondence_view_refuses_the_boxes_correspondence_refuses(box, message):
    model, x, parts = _results()
    result = correspondence(model, x, parts, ["1"], random_trials=1)
    with pytest.raises(ValueError, match=message):
        correspondence(model, x, {"corner": [box] * 3}, ["1"], random_trials=1)  # the same words as the method
    with pytest.raises(ValueError, match=message):
        correspondence_view(result, x, {"corner": [box] * 3})


def test_correspondence_view_checks_its_other_arguments_up_front():
    model, x, parts = _results()
    result = correspondence(model, x, parts, ["1"], random_trials=1)
    with pytest.raises(ValueError, match="fill has 2 values, the images have 3 channels; give one value or 3"):
        correspondence_view(result, x, parts, fill=[1, 2])  # refused now, not when a part is first occluded
    with pytest.raises(ValueError, match=r"parts is empty; give the boxes of the result's parts \('corner', 'middle'\)"):
        correspondence_view(result, x, {})
    with pytest.raises(TypeError, match="result must be a CorrespondenceResult .*got NoneType"):
        correspondence_view(None, x, parts)
    with pytest.raises(TypeError, match=r"images must be a tensor \(N, C, H, W\), got NoneType"):
        correspondence_view(result, None, parts)
    with pytest.raises(ValueError, match=r"tile must be an int in 1\.\.512, got 0"):
        correspondence_view(result, x, parts, tile=0)


def test_views_report_refused_menu_choices_in_the_status_line_and_keep_their_picture():
    model, x, parts = _results()
    topk = topk_view(scan_topk(model, x, ["1", "4"], k=2, progress=False), model)
    recorder = FeatureEvolutionRecorder(model, x, {"4": 2}, epochs=None)
    recorder.record(1)
    evolution = evolution_view(recorder)
    invariance = invariance_view(invariance_curves(model, x, [0, 1, 2], ["1"], transforms={"rotation": [0, 90]},
                                                   progress=False), x)
    corr = correspondence_view(correspondence(model, x, parts, ["1"], random_trials=1), x, parts)
    for view, menu, what in ((topk, topk._layer_menu, "layer"), (evolution, evolution._show_menu, "show"),
                             (invariance, invariance._menu, "transform"), (corr, corr._menu, "part")):
        picture, index = view._image.value, menu.index
        menu.set_state({"index": 99})  # what a browser could send: no TraitError out of the comm handler
        assert view.error and view.status == f"{what}: not changed (Invalid selection: index out of bounds)"
        assert menu.index == index and view._image.value == picture
        menu.set_state({"index": None})
        assert view.error and view.status.startswith(f"{what}: not changed (no choice made; choose one of")
        assert menu.index == index and view._image.value == picture
    assert topk.layer == "1" and evolution.show == "projection" and invariance.transform == "rotation"
    assert corr.part is None and corr._menu.label == "all parts"
    for view in (topk, evolution, invariance, corr):
        view.close()
    recorder.close()


def test_no_choice_or_a_failed_step_shows_no_stale_picture():
    model, x, _ = _results()
    topk = topk_view(scan_topk(model, x, ["1"], k=2, progress=False), model)
    topk.layer = None  # from Python: nothing to show, said
    assert topk.image_shape == () and topk.caption == ""
    assert topk.status == "no layer chosen: pick a scanned layer in the menu" and not topk.error
    topk.close()
    recorder = FeatureEvolutionRecorder(model, x, {"4": 2}, epochs=None)
    recorder.record(1)
    evolution = evolution_view(recorder)
    evolution.epoch = None  # not "nothing recorded yet": an epoch was
    assert evolution.image_shape == () and evolution.status == "no epoch chosen: pick one with the slider"
    evolution.close()
    recorder.close()
    result = invariance_curves(model, x, [0, 1, 2], ["1"], transforms={"rotation": [0, 90]}, progress=False)
    fail = {"now": False}

    def denormalize(t):
        if fail["now"]:
            raise RuntimeError("cannot show this step")
        return t.clamp(0, 1)

    view = invariance_view(result, x, denormalize=denormalize)
    curves = view._image.value
    assert view.readout and view._examples.value
    fail["now"] = True
    view.step = 1  # the step fails: its images and readout are taken away, the curves stay
    assert view.error and view.status == "denormalize failed on an image of shape (3, 32, 32): RuntimeError: cannot show this step"
    assert view.readout == "" and view._examples.value == b"" and view._image.value == curves
    fail["now"] = False
    view.step = 0
    assert not view.error and view.status == "curves: one line per image" and "no rotation" in view.readout
    view.transform = None
    assert view.readout == "" and view._examples.layout.display == "none" and view._image.value == curves
    assert view.status == "curves: one line per image; no transformation chosen: pick one in the menu"
    view.close()


def test_closed_views_refuse_new_settings():
    model, x, parts = _results()
    topk = topk_view(scan_topk(model, x, ["1", "4"], k=2, progress=False), model)
    recorder = FeatureEvolutionRecorder(model, x, {"4": 2}, epochs=None)
    recorder.record(1)
    recorder.record(2)
    evolution = evolution_view(recorder)
    invariance = invariance_view(invariance_curves(model, x, [0, 1, 2], ["1"], transforms={"rotation": [0, 90]},
                                                   progress=False), x)
    corr = correspondence_view(correspondence(model, x, parts, ["1"], random_trials=1), x, parts)
    for view, name, value, maker in ((topk, "layer", "4", "topk_view"), (topk, "channel", 1, "topk_view"),
                                     (evolution, "epoch", 1, "evolution_view"),
                                     (invariance, "step", 1, "invariance_view"),
                                     (corr, "part", "middle", "correspondence_view")):
        view.close()
        before = getattr(view, name)
        with pytest.raises(Exception, match=rf"cannot set {name}: this view is closed; make a new one with {maker}"):
            setattr(view, name, value)
        assert getattr(view, name) == before
    recorder.close()


def test_topk_view_after_the_model_changed_says_the_same_for_channels_seen_before_and_not():
    model = conv_net()
    topk = scan_topk(model, images(5), ["4"], k=4, progress=False)
    view = topk_view(topk, model)
    view.channel = 1
    assert not view.error  # channels 0 and 1 are drawn (and kept) with their projections
    with torch.no_grad():
        model[3].weight.add_(0.5)
    view.channel = 2  # not seen before
    assert view.error and view.status.endswith(f"no projections: {WEIGHTS_DIFFER}")
    view.channel = 0  # seen before: not served from what was drawn for the old weights
    assert view.error and view.status.endswith(f"no projections: {WEIGHTS_DIFFER}")
    assert view._image.value == patches_only(topk, "4", 0)
    view.close()


def test_experiment_views_check_their_arguments_when_made():
    model, x, parts = _results()
    topk = scan_topk(model, x, ["4"], k=2, progress=False)
    result = invariance_curves(model, x, [0, 1, 2], ["1"], transforms={"rotation": [0, 90]}, progress=False)
    for make, error, message in [
        (lambda: topk_view(None), TypeError, r"topk must be a TopKActivations \(from scan_topk\(...\)\), got NoneType"),
        (lambda: topk_view(topk, "model"), TypeError, "expected a torch.nn.Module .*got str"),
        (lambda: topk_view(topk, model, tile=0), ValueError, r"tile must be an int in 1\.\.512, got 0"),
        (lambda: topk_view(topk, model, cache=-1), ValueError, "cache must be an int >= 0, got -1"),
        (lambda: topk_view(topk, model, class_names="abc"), TypeError, "class_names must be a list of names, got str"),
        (lambda: evolution_view(None), TypeError, "source must be a FeatureEvolutionRecorder or the FeatureEvolution"),
        (lambda: invariance_view(None, x), TypeError, "result must be an InvarianceResult"),
        (lambda: invariance_view(result, None), TypeError, r"images must be a tensor \(N, C, H, W\), got NoneType"),
        (lambda: invariance_view(result, x, class_names=["a"]), ValueError,
         r"class_names has 1 names, but the result names class \d \(a label or a prediction\); give one name per"),
        (lambda: invariance_view(result, x, image_names="abc"), TypeError, "image_names must be a list of names"),
        (lambda: invariance_view(result, x, dpi=0), ValueError, r"dpi must be a finite number in 10\.\.600"),
        (lambda: plot_invariance(result, x, image_names=["a"]), ValueError,
         "the result has 3 images, but 1 image names were given"),
        (lambda: plot_topk(topk, "4", -3), ValueError, r"channels \(a number of channels\) must be an int >= 1, got -3"),
        (lambda: plot_topk(topk, "4", 0), ValueError, r"channels \(a number of channels\) must be an int >= 1, got 0"),
        (lambda: plot_topk(topk, "4", True), TypeError, "channels .* must be an int >= 1, got bool True"),
        (lambda: plot_topk(topk, "4", []), ValueError, r"channels is empty; give channel indices of '4' \(0\.\.15\)"),
        (lambda: plot_topk(topk, "4", [99]), IndexError, r"channel 99 is out of range: layer '4' has 16 channels"),
    ]:
        with pytest.raises(error, match=message):
            make()
    recorder = FeatureEvolutionRecorder(model, x, {"4": 2}, epochs=None)
    with pytest.raises(ValueError, match=r"tile must be an int in 1\.\.512, got 0"):
        evolution_view(recorder, tile=0)
    recorder.close()


def test_top_k_entry_values_line_up_with_one_number_of_decimals_per_table():
    from cnnwidgets.app.experiments import _aligned

    assert _aligned([10.58, 10.1, 9.889, 8.99]) == ["10.58", "10.10", "9.89", "8.99"]
    assert _aligned([0.5, 0.012]) == ["0.5000", "0.0120"]
    assert _aligned([1234.25, 7.0]) == ["1234", "7"]
    assert _aligned([2.5e7, 1.0]) == ["2.500e+07", "1.000e+00"]
    assert _aligned([0.0, 0.0]) == ["0", "0"]
    assert _aligned([float("nan"), 3.0]) == ["nan", "3.000"]
