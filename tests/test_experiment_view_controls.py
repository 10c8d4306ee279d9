"""The experiment views' controls do what they say: a closed summary lets its parts go, the
correspondence view's "occluded" box is off where it has no effect, the invariance view keeps the
meaning of its step and marks it on the curves, the top-k view draws once per layer change and
takes a bundle's denormalize, the status lines say how tiles are scaled, and the picture shown is
readable through a public accessor."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import traitlets
from ipywidgets.widgets.widget import _instances
from PIL import Image

from cnnwidgets.app.experiments import correspondence_view, evolution_view, invariance_view, topk_view
from cnnwidgets.app.filters import kernel_view, summary_view
from cnnwidgets.methods.correspondence import correspondence
from cnnwidgets.methods.evolution import FeatureEvolutionRecorder
from cnnwidgets.methods.invariance import invariance_curves
from cnnwidgets.methods.topk import scan_topk
from cnnwidgets.render.figures import invariance_figure
from cnnwidgets.zoo.bundle import Bundle
from tests.helpers import small_classifier


def shown(view) -> bytes:
    """The PNG on screen, read where it lives, so that tests of other behaviour do not depend
    on the public accessor (tested on its own at the end)."""
    return bytes(view._image.value)


def images(n: int) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(3))


# ---------------------------------------------------------------------------- summary
def test_a_closed_summary_view_closes_all_its_parts_and_refuses_settings():
    before = set(_instances)
    view = summary_view(small_classifier(), (3, 32, 32))
    assert len(set(_instances) - before) > 3
    view.close()
    assert set(_instances) - before == set()  # the text box, both HTML widgets, their layouts and styles
    with pytest.raises(traitlets.TraitError, match=r"cannot set filter_text: this view is closed; .*summary_view"):
        view.filter_text = "conv"
    assert view.filter_text == ""


# ---------------------------------------------------------------------------- correspondence
def test_occluded_box_is_disabled_with_all_parts_and_the_status_says_it_has_no_effect():
    model = small_classifier()
    x = images(2)
    parts = {"corner": [(0, 0, 8, 8)] * 2, "middle": [(12, 12, 20, 20)] * 2}
    view = correspondence_view(correspondence(model, x, parts, ["1"], random_trials=1), x, parts)
    assert view.part is None and view._occluded_box.disabled
    all_parts = shown(view)
    view.occluded = True
    assert not view.error and "no effect" in view.status and "pick one part" in view.status
    assert shown(view) == all_parts  # nothing occluded: the same picture
    view.part = "middle"
    assert not view._occluded_box.disabled
    assert view.status == "parts: middle (occluded)" and shown(view) != all_parts
    view.part = None
    assert view._occluded_box.disabled and "no effect" in view.status
    view.close()


# ---------------------------------------------------------------------------- invariance
def test_switching_the_transformation_goes_to_its_identity_step():
    model = small_classifier()
    x = images(2)
    transforms = {"translation": [-6, -3, 0, 3, 6], "rotation": [-20, 0, 20, 40, 60], "scale": [0.8, 1.0, 1.2]}
    result = invariance_curves(model, x, [0, 1], ["1"], transforms=transforms, progress=False)
    view = invariance_view(result, x)
    view.step = 2
    assert view._step_label.value == "no shift"
    view.transform = "rotation"  # the same index would be "20° counter-clockwise"
    assert view.step == 1 and view._step_label.value == "no rotation"
    assert "rotation: no rotation" in view.readout
    view.step = 4
    view.transform = "scale"
    assert view.step == 1 and view._step_label.value == "original size"
    view.transform = None
    view.transform = "translation"  # by way of no choice: still another transformation's index
    assert view.step == 2 and view._step_label.value == "no shift"
    view.close()


def test_invariance_figure_draws_a_vertical_line_at_the_marked_step():
    values = {"translation": np.array([-4.0, 0.0, 4.0]), "rotation": np.array([0.0, 90.0])}
    distances = {k: {"L": np.arange(len(v) * 2, dtype=float).reshape(len(v), 2)} for k, v in values.items()}
    probabilities = {k: np.full((len(v), 2), 0.5) for k, v in values.items()}

    def vertical_lines(figure, column):
        found = set()
        for ax in figure.axes[column::2]:
            for line in ax.get_lines():
                xs = np.asarray(line.get_xdata(), dtype=float)
                if xs.size == 2 and xs[0] == xs[1] and len(set(np.asarray(line.get_ydata(), dtype=float))) == 2:
                    found.add(float(xs[0]))
        return found

    plain = invariance_figure(values, distances, probabilities)
    assert vertical_lines(plain, 0) == set() and vertical_lines(plain, 1) == set()
    marked = invariance_figure(values, distances, probabilities, marker={"translation": 4.0})
    assert vertical_lines(marked, 0) == {4.0} and vertical_lines(marked, 1) == set()
    with pytest.raises(ValueError, match="marker for 'scale'"):
        invariance_figure(values, distances, probabilities, marker={"scale": 1.0})


def test_invariance_view_curves_mark_the_chosen_step():
    model = small_classifier()
    x = images(2)
    result = invariance_curves(model, x, [0, 1], ["1"], transforms={"translation": [-4, 0, 4]}, progress=False)
    view = invariance_view(result, x)
    start = view.step
    first = shown(view)
    view.step = (start + 1) % 3
    assert shown(view) and shown(view) != first  # the marker moved
    assert "the dashed line on the curves marks this step" in view.readout and not view.error
    view.step = start
    assert shown(view) == first
    view.close()


# ---------------------------------------------------------------------------- top-k
# the random small net's last channel is not active on these images: warned about, not the point here
@pytest.mark.filterwarnings("ignore::cnnwidgets.methods.InactiveChannelWarning")
def test_one_layer_change_renders_once_even_when_the_channel_is_clamped():
    model = small_classifier()
    topk = scan_topk(model, images(6), ["1", "4"], k=4, progress=False)
    view = topk_view(topk, model, cache=0)
    calls = []
    render = view.controller.render
    view.controller.render = lambda layer, channel: calls.append((layer, channel)) or render(layer, channel)
    view.layer = "4"
    view.channel = 12  # beyond the 8 channels of layer "1"
    calls.clear()
    view.layer = "1"
    assert view.channel < 8 and calls == [("1", view.channel)]
    calls.clear()
    view.layer = "4"
    assert calls == [("4", view.channel)]
    view.close()


def test_topk_view_takes_the_denormalize_of_a_bundle_and_says_how_patches_are_scaled():
    model = small_classifier()
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    bundle = Bundle(model, [f"c{i}" for i in range(5)], lambda image: image, (3, 32, 32), "small", "random",
                    mean, std)
    topk = scan_topk(model, images(6), ["4"], k=4, progress=False)
    from_bundle = topk_view(topk, bundle)
    given = topk_view(topk, model, denormalize=bundle.denormalize)
    plain = topk_view(topk, model)
    assert shown(from_bundle) == shown(given) != shown(plain)
    assert "patches un-normalised with denormalize" in from_bundle.status
    assert "contrast-stretched on its own" in plain.status and "pass denormalize=" in plain.status
    assert "projections each scaled on their own (0.5 + 0.5·p/max|p|" in plain.status
    for view in (from_bundle, given, plain):
        view.close()


# ---------------------------------------------------------------------------- evolution
def test_evolution_status_says_each_cell_is_scaled_on_its_own():
    model = small_classifier()
    recorder = FeatureEvolutionRecorder(model, images(4), {"4": 2}, epochs=None)
    recorder.record(1)
    view = evolution_view(recorder)
    assert "each cell scaled on its own" in view.status and "0.5 + 0.5·p/max|p|" in view.status
    view.show = "patch"
    assert "each cell on its own" in view.status and "contrast-stretched" in view.status
    view.close()


def test_an_evolution_view_without_recorded_projections_shows_patches_and_refuses_projections():
    recorder = FeatureEvolutionRecorder(small_classifier(), images(4), {"4": 2}, epochs=None, projection=None)
    recorder.record(1)
    for source in (recorder, recorder.result()):
        view = evolution_view(source)
        assert view.show == "patch" and not view.projections and view._show_menu.disabled
        with pytest.raises(traitlets.TraitError, match="recorded no projections"):
            view.show = "projection"
        assert view.show == "patch" and "patch of each channel" in view.status
        view.close()
    with_projections = FeatureEvolutionRecorder(small_classifier(), images(4), {"4": 2}, epochs=None)
    with_projections.record(1)
    view = evolution_view(with_projections.result())
    assert view.projections and not view._show_menu.disabled and view.show == "projection"
    view.close()


def test_an_empty_evolution_view_names_the_epochs_its_recorder_records():
    recorder = FeatureEvolutionRecorder(small_classifier(), images(4), {"4": 2})  # the paper's epochs
    view = evolution_view(recorder)
    assert not recorder.record(0) and not recorder.record(3)  # not among them: nothing stored
    assert "records at epochs 1, 2, 5, 10, 20, 30, 40, 64 only" in view.status and "epochs=None" in view.status
    view.close()
    every = FeatureEvolutionRecorder(small_classifier(), images(4), {"4": 2}, epochs=None)
    view = evolution_view(every)
    assert view.status == "nothing recorded yet; call recorder.record(epoch) in the training loop"
    view.close()


# ---------------------------------------------------------------------------- the picture shown
def test_views_expose_the_picture_shown_as_png_bytes_and_an_rgb_array():
    model = small_classifier()
    topk = scan_topk(model, images(6), ["4"], k=4, progress=False)
    for view in (topk_view(topk, model), kernel_view(model)):
        png = view.png
        assert isinstance(png, bytes) and png.startswith(b"\x89PNG")
        picture = view.image
        assert picture.dtype == np.uint8 and picture.shape == (*view.image_shape[:2], 3)
        expected = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
        assert np.array_equal(picture, expected)
        picture[:] = 0  # a copy: the picture on screen stays
        assert view.png == png and view.image.any()
        with pytest.raises(AttributeError):
            view.png = b""
        view.clear_image("nothing")
        assert view.png == b"" and view.image is None
        view.close()
