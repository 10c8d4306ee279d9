"""A bare model (no zoo bundle, no input size, no normalisation) is summarised and maximised at sizes and
in an input space that are assumed: the summary and activation maximisation say what they assumed and
how to give it instead; what is given is used and said as given."""

from __future__ import annotations

import inspect
import warnings

import pytest
from torch import nn

from cnnwidgets.app.filters import summary_view
from cnnwidgets.core.probe import Probe
from cnnwidgets.core.targets import ChannelActivation
from cnnwidgets.methods.actmax import AssumedInputWarning, maximize_activation
from cnnwidgets.methods.summary import summary
from cnnwidgets.zoo.bundle import Bundle


def pooled_net(channels: int = 3, classes: int = 2) -> nn.Sequential:
    """Runs at any size (global pooling): the usual first size, 224 x 224, is taken."""
    return nn.Sequential(nn.Conv2d(channels, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, classes))


def imagenet_net(channels: int = 3) -> nn.Sequential:
    """A bare model with 1000 outputs, as ImageNet classifiers have."""
    return pooled_net(channels, 1000)


def cifar_net() -> nn.Sequential:
    """Runs only on 32 x 32 RGB images (its head is sized for them)."""
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 30 * 30, 2))


def caught(run):
    """``run()``'s result and its AssumedInputWarnings (every warning shown)."""
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        result = run()
    return result, [w for w in record if issubclass(w.category, AssumedInputWarning)]


# ---------------------------------------------------------------------------- summary
def test_the_summary_of_a_bare_model_says_the_size_it_assumed_and_how_to_give_another():
    table = summary(pooled_net())
    assert table.input_size == (3, 224, 224) and table.input_size_origin == "assumed"
    text = str(table)
    assert "input 3x224x224 (assumed); 5 layers shown" in text
    assert "Input size assumed: the model came without one (no input_size, no zoo bundle)" in text
    assert "those at 3x224x224, the first of the usual sizes it runs on (the first size tried)" in text
    assert "pass input_size=(C, H, W)" in text and "zoo bundle" in text
    assert "Input size assumed" in table.to_html()


def test_the_note_lists_the_sizes_tried_before_the_one_a_model_runs_on():
    table = summary(cifar_net())
    assert table.input_size == (3, 32, 32) and table.input_size_origin == "assumed"
    assert "(tried in turn: 3x224x224, 3x28x28, 3x32x32)" in table.input_size_note


def test_a_given_size_is_used_and_stated_without_a_note():
    table = summary(pooled_net(), input_size=(3, 40, 48))
    assert table.input_size == (3, 40, 48) and table.input_size_origin == "given"
    assert table.rows[0].output_shape == (4, 38, 46)
    assert table.input_size_note == "" and "assumed" not in str(table)
    assert table.description() == "Sequential: 122 parameters, input 3x40x48"


def test_a_bundles_a_probes_and_a_trained_size_are_named_as_such():
    bundle = Bundle(pooled_net(), ["a", "b"], lambda image: image, (3, 20, 20), "net", "random")
    from_bundle = summary(bundle)
    assert from_bundle.input_size == (3, 20, 20) and from_bundle.input_size_origin == "bundle"
    assert "input 3x20x20 (the bundle's)" in from_bundle.description() and not from_bundle.input_size_note
    with Probe(pooled_net(), input_size=(3, 24, 24)) as probe:
        from_probe = summary(probe)
    assert from_probe.input_size_origin == "probe" and "input 3x24x24 (the probe's)" in from_probe.description()
    model = pooled_net()
    model.pretrained_cfg = {"input_size": (3, 36, 36)}
    trained = summary(model)
    assert trained.input_size == (3, 36, 36) and trained.input_size_origin == "trained"
    assert "(the size the model was trained at)" in trained.description() and not trained.input_size_note


def test_the_summary_widget_shows_the_assumed_size_under_its_table():
    view = summary_view(cifar_net())
    footer = view._footer.value
    assert "input 3x32x32 (assumed) - 4 of 4 layers" in footer and "Input size assumed" in footer
    view.close()
    view = summary_view(cifar_net(), (3, 32, 32))
    assert "assumed" not in view._footer.value
    view.close()


# ---------------------------------------------------------------------------- activation maximisation
def run(model, **options):
    return maximize_activation(model, ChannelActivation("1", 0), steps=1, progress=False, **options)


def test_a_bare_imagenet_classifier_warns_that_the_image_is_optimised_in_unnormalised_pixels():
    model = imagenet_net()
    line = inspect.currentframe().f_lineno + 1
    result, found = caught(lambda: maximize_activation(model, ChannelActivation("1", 0), steps=1, progress=False))
    assert len(found) == 1
    message = str(found[0].message)
    assert message.startswith("maximize_activation: the model has 1000 outputs, like ImageNet classifiers, which "
                              "are trained on normalised images; no normalisation was given (neither mean and std "
                              "nor a zoo bundle)")
    assert "optimised in unnormalised [0, 1] pixel space" in message
    assert "mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)" in message and "mean=0, std=1" in message
    assert "image size 3x224x224 was assumed" in message and "input_size=(C, H, W)" in message
    assert found[0].filename == __file__ and found[0].lineno == line  # points at the caller
    assert result.input_size == (3, 224, 224) and result.mean == (0.0,) * 3 and result.std == (1.0,) * 3
    assert result.assumed.startswith("No normalisation was given") and "3x224x224" in result.assumed


def test_any_bare_model_says_what_was_assumed_in_its_result():
    result, found = caught(lambda: run(pooled_net()))  # 2 outputs: it may well take [0, 1] images, no warning
    assert not found and result.input_size == (3, 224, 224)
    assert result.assumed.startswith("No normalisation was given (neither mean and std nor a zoo bundle), so the "
                                     "image was optimised in unnormalised [0, 1] pixel space")
    assert "The image size 3x224x224 was assumed (the model came without one" in result.assumed


def test_given_normalisation_is_used_and_quiet_and_a_given_size_is_not_called_assumed():
    result, found = caught(lambda: run(imagenet_net(), mean=0, std=1))
    assert not found and result.std == (1.0,) * 3
    assert result.assumed.startswith("The image size 3x224x224 was assumed")  # the size still was
    result, found = caught(lambda: run(imagenet_net(), size=16, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.5)))
    assert not found and result.assumed == "" and result.input_size == (3, 16, 16)
    assert result.mean == pytest.approx((0.5, 0.4, 0.3)) and result.std == pytest.approx((0.2, 0.25, 0.5))
    # only the size given: the input space is still assumed, and the warning does not call the size so
    result, found = caught(lambda: run(imagenet_net(), input_size=(3, 12, 12)))
    assert len(found) == 1 and "was assumed" not in str(found[0].message).split("[0, 1] is right.")[1]
    assert result.input_size == (3, 12, 12)


def test_a_bundle_says_its_own_input_and_a_probe_is_quiet_but_its_result_says_it():
    bundle = Bundle(imagenet_net(), ["a"] * 1000, lambda image: image, (3, 20, 20), "net", "random",
                    (0.5, 0.4, 0.3), (0.2, 0.25, 0.5))
    result, found = caught(lambda: run(bundle))
    assert not found and result.assumed == "" and result.input_size == (3, 20, 20)
    assert result.mean == pytest.approx((0.5, 0.4, 0.3))
    unnormalised = Bundle(imagenet_net(), ["a"] * 1000, lambda image: image, (3, 20, 20), "net", "random")
    result, found = caught(lambda: run(unnormalised))  # the bundle says [0, 1]: nothing assumed
    assert not found and result.assumed == ""
    with Probe(imagenet_net(), input_size=(3, 24, 24)) as probe:
        result, found = caught(lambda: run(probe))
    assert not found and result.input_size == (3, 24, 24)
    assert "unnormalised [0, 1] pixel space" in result.assumed and "3x24x24, the probe's input size" in result.assumed


def test_a_gray_model_is_not_offered_imagenet_statistics():
    _, found = caught(lambda: run(imagenet_net(1)))
    assert len(found) == 1 and "0.485" not in str(found[0].message) and "1x28x28" in str(found[0].message)
