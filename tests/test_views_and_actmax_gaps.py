"""A probe made from a bundle keeps the bundle's input normalisation for activation maximisation;
the invariance and correspondence views refuse images other than the result's; actmax_view and
topk_view take the target they start on; the CAM family documents per-image class lists."""

from __future__ import annotations

import dataclasses
import pickle
import re
import warnings

import numpy as np
import pytest
import torch

import cnnwidgets
from cnnwidgets import ChannelActivation, zoo
from cnnwidgets.app.cells import open_widgets
from cnnwidgets.app.experiments import correspondence_view, invariance_view, plot_invariance, topk_view
from cnnwidgets.app.filters import CLASS_TARGET, ActMaxController, actmax_view
from cnnwidgets.methods import maximize_activation
from cnnwidgets.methods.actmax import bundle_normalization
from cnnwidgets.methods.cam import grad_cam, grad_cam_pp, layer_gradient
from cnnwidgets.methods.correspondence import correspondence
from cnnwidgets.methods import invariance
from cnnwidgets.methods.invariance import invariance_curves
from cnnwidgets.methods.topk import scan_topk
from tests.helpers import small_classifier


# ---------------------------------------------------------------------------- 1. Probe(bundle) keeps mean/std
@pytest.fixture(scope="module")
def bundle():
    return zoo.load_default()


def test_a_probe_made_from_a_bundle_keeps_its_normalisation(bundle):
    # was: Probe(bundle) dropped the bundle's mean and std, and bundle_normalization(probe) was (None, None)
    with cnnwidgets.Probe(bundle) as probe, cnnwidgets.Probe(bundle.model) as bare:
        assert probe.normalization == (bundle.mean, bundle.std)
        assert bundle_normalization(probe) == (bundle.mean, bundle.std) == bundle_normalization(bundle)
        assert bare.normalization is None and bundle_normalization(bare) == (None, None)


def test_maximize_activation_on_a_probe_of_a_bundle_runs_in_the_bundles_input_space(bundle):
    # was: the probe's run optimised in [0, 1] pixel space (mean 0, std 1), silently, unlike the bundle's
    target = ChannelActivation("features.conv4", 10)
    with cnnwidgets.Probe(bundle) as probe, cnnwidgets.Probe(bundle.model) as bare:
        from_probe = maximize_activation(probe, target, steps=4, progress=False)
        from_bare = maximize_activation(bare, target, steps=4, progress=False)
    from_bundle = maximize_activation(bundle, target, steps=4, progress=False)
    assert np.allclose(from_probe.mean, bundle.mean) and np.allclose(from_probe.std, bundle.std)
    assert (from_probe.mean, from_probe.std) == (from_bundle.mean, from_bundle.std)
    assert np.array_equal(from_probe.rgb, from_bundle.rgb)
    assert from_probe.activation == from_bundle.activation
    assert not np.array_equal(from_bare.rgb, from_bundle.rgb)  # the input space matters for this model
    assert "neither mean and std nor a zoo bundle" in from_bare.assumed
    assert "normalisation" not in from_probe.assumed


def test_the_actmax_view_of_a_probe_of_a_bundle_names_the_bundles_normalisation(bundle):
    # was: "no input normalisation: pass mean= and std= (or the bundle) ..." though the probe was made from it
    with cnnwidgets.Probe(bundle) as probe:
        controller = ActMaxController(probe, background=False, steps=2)
        try:
            assert controller.options["mean"] == bundle.mean and controller.options["std"] == bundle.std
            assert "no input normalisation" not in controller.view.status
            assert controller.input_space.startswith("input normalised with mean (")
            assert controller.input_space in controller.view.status
            controller.start()
            assert not controller.view.error and controller.input_space in controller.view.status
            assert np.allclose(controller.result.mean, bundle.mean)
        finally:
            controller.view.close()
            controller.close()


def test_a_duck_typed_bundle_without_normalisation_is_not_an_assumed_input_space():
    # was: a probe of a bundle that says "no normalisation" was told that no normalisation was given
    class Holder:  # any object with an nn.Module in .model is a bundle; mean and std None: [0, 1] inputs
        def __init__(self, model):
            self.model, self.mean, self.std = model, None, None

    with cnnwidgets.Probe(Holder(small_classifier())) as probe:
        assert probe.normalization == (None, None)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # two steps need not raise the channel: only the input space matters
            result = maximize_activation(probe, ChannelActivation("1", 0), size=16, steps=2, progress=False)
    assert "no normalisation was given" not in result.assumed  # the bundle said [0, 1]: nothing was assumed


# ---------------------------------------------------------------------------- 2. the views' images are the result's
def batch(n: int, seed: int = 3, size: int = 32) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def curves():
    x = batch(4)
    return invariance_curves(small_classifier(), x, [0, 1, 2, 3], ["1"], transforms={"rotation": [0, 90]},
                             progress=False), x


@pytest.fixture(scope="module")
def table():
    x = batch(3)
    parts = {"corner": [(0, 0, 8, 8)] * 3}
    return correspondence(small_classifier(), x, parts, ["1"], random_trials=1, progress=False), x


def test_the_results_record_the_shape_and_a_fingerprint_of_their_images(curves, table):
    # was: the results recorded nothing of their images but their number
    for result, x in (curves, table):
        assert result.image_shape == tuple(x.shape)
        assert np.array_equal(result.image_fingerprints, invariance.image_fingerprints(x))
        assert result.image_fingerprints.shape == (x.shape[0], 5 * x.shape[1])
    prints = invariance.image_fingerprints(batch(2))
    assert not np.allclose(prints[0], prints[1])  # images tell apart


@pytest.mark.parametrize("make, said", [
    (lambda x: x[[1, 0, 2, 3]], r"the same images in another order \(image 0 given is the result's image 1, image 1 "
                                r"given is the result's image 0\)"),
    (lambda x: batch(4, seed=9), r"other images: images 0, 1, 2, 3 of the 4 given are not the result's"),
    (lambda x: torch.cat([x[:3], x[3:].flip(-1)]), r"other images: image 3 of the 4 given is not the result's"),
    (lambda x: x[:, :, :16, :16], r"images of shape \(4, 3, 32, 32\) \(N, C, H, W\), but images of shape "
                                  r"\(4, 3, 16, 16\) were given"),
])
def test_invariance_view_refuses_images_the_curves_were_not_computed_on(curves, make, said):
    # was: only the number of images was compared, so these were shown beside numbers of other images
    result, x = curves
    before = len(open_widgets())
    message = (r"^these are not the images of the result: the curves were computed on " + said + r".*; pass the "
               r"\(N, C, H, W\) tensor given to invariance_curves\(\.\.\.\) as it was")
    with pytest.raises(ValueError, match=message):
        invariance_view(result, make(x))
    with pytest.raises(ValueError, match=message):
        plot_invariance(result, make(x))
    assert len(open_widgets()) == before


def test_correspondence_view_refuses_images_the_table_was_not_computed_on(table):
    # was: a reordered or unrelated batch of the same size was drawn with the table's boxes and numbers
    result, x = table
    with pytest.raises(ValueError, match=r"^these are not the images of the result: the table was computed on the "
                                         r"same images in another order \(image 0 given is the result's image 2, .*"
                                         r"pass the \(N, C, H, W\) tensor given to correspondence\(\.\.\.\) as it was"):
        correspondence_view(result, x.flip(0))
    with pytest.raises(ValueError, match=r"the table was computed on other images: images 0, 1, 2 of the 3 given"):
        correspondence_view(result, batch(3, seed=11))
    with pytest.raises(ValueError, match=r"on images of shape \(3, 3, 32, 32\) \(N, C, H, W\), but images of shape "
                                         r"\(3, 3, 40, 40\) were given"):
        correspondence_view(result, batch(3, size=40))


def test_the_same_images_in_another_form_are_accepted(curves, table):
    # was: accepted too (only their number was compared); the new check must not refuse them
    for view, (result, x) in ((invariance_view, curves), (correspondence_view, table)):
        for same in (x.clone(), x.double(), x + 1e-7):  # a copy, another dtype, float32 rounding
            shown = view(result, same)
            assert not shown.error
            shown.close()


def test_results_without_fingerprints_still_load_and_are_checked_for_what_they_record(curves, table):
    # was: no image_shape or image_fingerprints fields; such results must still load and open their views
    for view, (result, x) in ((invariance_view, curves), (correspondence_view, table)):
        again = pickle.loads(pickle.dumps(result))  # a saved result keeps its fingerprints
        with pytest.raises(ValueError, match=r"another order"):
            view(again, x.flip(0))
        older = dataclasses.replace(result)  # as pickled before the images were recorded
        del older.__dict__["image_fingerprints"], older.__dict__["image_shape"]
        older = pickle.loads(pickle.dumps(older))
        assert older.image_fingerprints is None and older.image_shape is None
        view(older, x.flip(0)).close()  # nothing recorded to tell: the number of images only
        with pytest.raises(ValueError, match=r"the result has \d images, but 2 images were given"):
            view(older, x[:2])
        shape_only = dataclasses.replace(result, image_fingerprints=None)
        view(shape_only, x.flip(0)).close()
        with pytest.raises(ValueError, match=r"but images of shape \(\d, 3, 16, 16\) were given"):
            view(shape_only, x[:, :, :16, :16])


# ---------------------------------------------------------------------------- 3. start values of the one-liners
def test_actmax_view_takes_the_target_it_starts_on():
    # was: TypeError "unknown options channel (...), layer (...) for maximize_activation"
    model = small_classifier()
    view = actmax_view(model, layer="1", channel=2, size=16, background=False, steps=2)
    assert (view.layer, view.channel, view.channels) == ("1", 2, 8)
    view.close()
    view = actmax_view(model, layer=np.str_(CLASS_TARGET), channel=np.int64(4), size=16, background=False)
    assert (view.layer, view.channel) == (CLASS_TARGET, 4)
    view.close()
    view = actmax_view(model, channel=torch.tensor(1), size=16, background=False)  # on the default target
    assert view.channel == 1
    view.close()


@pytest.mark.parametrize("given, error, message", [
    (dict(layer=1), TypeError, r"^layer must be the name of a target \(a str: a layer with feature maps, or 'class "
                               r"logits \(output\)'\), got int 1"),
    (dict(layer="nope"), ValueError, r"^layer 'nope' is not a target of this model; choose one of "
                                     r"\['0', '1', .*'class "),
    (dict(layer="1", channel=8), ValueError, r"^channel 8 is out of range for target '1': accepted 0\.\.7$"),
    (dict(layer=CLASS_TARGET, channel=5), ValueError, r"channel 5 is out of range for target 'class logits \(output\)'"
                                                      r": accepted 0\.\.4$"),
    (dict(channel=-1), ValueError, r"^channel must be an int >= 0, got -1$"),
    (dict(channel=1.0), TypeError, r"^channel must be an int \(.*\), got float 1\.0"),
    (dict(channel=True), TypeError, r"^channel must be an int"),
])
def test_actmax_view_refuses_start_values_its_view_would_refuse(given, error, message):
    # was: TypeError "unknown option(s) ... for maximize_activation" for any layer or channel given
    before = len(open_widgets())
    with pytest.raises(error, match=message):
        actmax_view(small_classifier(), size=16, background=False, **given)
    assert len(open_widgets()) == before


@pytest.fixture(scope="module")
def scanned():
    model = small_classifier()
    return scan_topk(model, batch(5), ["1", "4"], k=2, progress=False), model


def test_topk_view_takes_the_layer_and_channel_it_starts_on(scanned):
    # was: TypeError "topk_view(...) has no option 'layer'; its options are: projection, ..." with no hint
    topk, model = scanned
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the projections' note on the functional ReLU of nothing here
        view = topk_view(topk, model, layer="4", channel=3)
        assert (view.layer, view.channel, view.error) == ("4", 3, False)
        assert view.status.startswith("4 channel 3: ")
        view.close()
    view = topk_view(topk, layer=np.str_("4"), channel=np.int64(15))  # patches only
    assert (view.layer, view.channel) == ("4", 15)
    view.close()


@pytest.mark.parametrize("given, error, message", [
    (dict(layer=4), TypeError, r"^layer must be the name of a scanned layer \(a str\), got int 4$"),
    (dict(layer="9"), ValueError, r"^layer '9' is not a layer of the scan; choose one of \['1', '4'\]$"),
    (dict(channel=8), ValueError, r"^channel 8 is out of range for layer '1': accepted 0\.\.7$"),
    (dict(layer="4", channel=-1), ValueError, r"^channel -1 is out of range for layer '4': accepted 0\.\.15$"),
    (dict(channel="2"), TypeError, r"^channel must be an int"),
    (dict(Layer="4"), TypeError, r"^topk_view\(\.\.\.\) has no option 'Layer' \(did you mean 'layer'\?\); its "
                                 r"options are: layer, channel, projection, images, denormalize, tile, cache, "
                                 r"class_names$"),
])
def test_topk_view_refuses_start_values_its_view_would_refuse(scanned, given, error, message):
    # was: TypeError "topk_view(...) has no option 'layer'" (or 'channel') whatever the value
    before = len(open_widgets())
    with pytest.raises(error, match=message):
        topk_view(scanned[0], **given)
    assert len(open_widgets()) == before


# ---------------------------------------------------------------------------- 4. per-image class lists, documented
@pytest.mark.parametrize("method", [grad_cam, grad_cam_pp, layer_gradient], ids=lambda f: f.__name__)
def test_the_cam_family_takes_and_documents_one_class_per_image(method):
    # was: only cam's docstring said that target may be one class index per image
    assert re.search(r"one class index per\s+image", method.__doc__) or "or one per image" in method.__doc__
    model, x, classes = small_classifier(), batch(3), [0, 2, 4]
    together = method(model, x, classes, "3")
    alone = [method(model, x[i:i + 1], c, "3") for i, c in enumerate(classes)]
    if method is layer_gradient:
        together, alone = together[1], [grads for _, grads in alone]
    assert torch.allclose(together, torch.cat(alone), atol=1e-6)
    one_class = method(model, x, 0, "3")
    assert not torch.allclose(together, one_class[1] if method is layer_gradient else one_class)
