"""What a newcomer meets first: class probabilities from a probe, pictures that are really model
inputs, class names as targets, and which sample images the explorer offers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import traitlets
from torch import nn

from cnnwidgets import Explorer, Probe, explore
from cnnwidgets.core.targets import ClassLogit, resolve_target
from cnnwidgets.methods.cam import grad_cam
from cnnwidgets.render.attribution import attribution_overlay
from cnnwidgets.render.occlusion import occlusion_overlay
from cnnwidgets.render import overlay as OV
from cnnwidgets.render.overlay import as_picture, check_float_picture, overlay_heatmap
from cnnwidgets.zoo import SHAPE_CLASSES, ShapesNet

SIZE = 32


def trunk(classes: int) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, classes))


def batch(n: int = 3) -> torch.Tensor:
    return torch.randn(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


def image(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random((SIZE, SIZE, 3)) * 155 + 100).astype(np.uint8)


# ---------------------------------------------------------------------------- Probe.probabilities


def test_probabilities_of_a_model_ending_in_softmax_are_its_output_not_a_second_softmax():
    # was: no Probe.probabilities; the notebooks' torch.softmax(probe.logits(x), dim=1) gave
    # softmax(softmax(y)), every class near 1/C, on such a model
    head = trunk(4)
    model = nn.Sequential(head, nn.Softmax(dim=1)).eval()
    x = batch()
    with torch.no_grad():
        expected = torch.exp(head(x)) / torch.exp(head(x)).sum(dim=1, keepdim=True)
    with Probe(model, device="cpu") as probe:
        probs = probe.probabilities(x)
        assert probe.output_activation == "softmax"
        twice = torch.softmax(probe.logits(x), dim=1)
    torch.testing.assert_close(probs, expected)
    assert not torch.allclose(twice, expected, atol=1e-3)  # what the old recipe showed


def test_probabilities_of_a_multi_label_model_ending_in_sigmoid_are_independent_per_class():
    # was: no Probe.probabilities; a softmax of sigmoid outputs turned independent labels into one
    # distribution over the classes
    head = trunk(3)
    model = nn.Sequential(head, nn.Sigmoid()).eval()
    x = batch()
    with torch.no_grad():
        expected = 1 / (1 + torch.exp(-head(x)))
    with Probe(model, device="cpu") as probe:
        probs = probe.probabilities(x)
    torch.testing.assert_close(probs, expected)
    assert not torch.allclose(probs.sum(dim=1), torch.ones(len(x)), atol=1e-2)  # not one distribution


def test_probabilities_of_plain_logits_are_their_softmax_and_of_one_unit_its_sigmoid():
    # was: no Probe.probabilities (a single unit's softmax is 1 whatever the input)
    x = batch()
    for classes in (5, 1):
        model = trunk(classes).eval()
        with torch.no_grad():
            y = model(x).double()
        expected = (torch.exp(y) / torch.exp(y).sum(dim=1, keepdim=True) if classes > 1
                    else 1 / (1 + torch.exp(-y))).float()
        with Probe(model, device="cpu") as probe:
            probs = probe.probabilities(x)
            assert probs.shape == (len(x), classes) and not probs.requires_grad
            torch.testing.assert_close(probs, expected)
            # a model whose sigmoid is a function, not a module: said by outputs=
            torch.testing.assert_close(probe.probabilities(x, outputs="multilabel_logits"),
                                       (1 / (1 + torch.exp(-y))).float())
            with pytest.raises(ValueError, match="outputs must be one of"):
                probe.probabilities(x, outputs="softmax")


def test_probabilities_with_grad_keep_the_graph():
    # was: no Probe.probabilities
    model = trunk(4).eval()
    x = batch(1).requires_grad_(True)
    with Probe(model, device="cpu") as probe:
        p = probe.probabilities(x, grad=True)
        p[0, 1].backward()
    assert x.grad is not None and bool(x.grad.abs().sum() > 0)


# ---------------------------------------------------------------------------- float pictures


def test_a_normalised_model_input_is_refused_as_a_picture_and_told_to_denormalise():
    # was: values in [-1, 1] (Normalize(0.5, 0.5)) were accepted and clipped, half the range black
    rng = np.random.default_rng(0)
    picture = rng.random((8, 8, 3))
    normalised = (picture - 0.5) / 0.5  # in [-1, 1]
    for call in (lambda p: as_picture(p), lambda p: overlay_heatmap(p, np.zeros((2, 2))),
                 lambda p: attribution_overlay(p, np.ones((8, 8))),
                 lambda p: occlusion_overlay(np.zeros((2, 2)), p, window=4, stride=4)):
        with pytest.raises(ValueError, match=r"values in \[0, 1\].*normalised model input.*denormalize") as info:
            call(normalised)
        assert "astype(np.uint8)" not in str(info.value) and "/ 255" not in str(info.value)
        call(picture)  # the denormalised picture is drawn


def test_the_band_of_overshoot_taken_is_what_resampling_gives():
    # was: [-1, 2] taken and clipped
    base = np.full((4, 4, 3), 0.5)
    for low, high in ((-0.25, 1.25), (-0.12, 1.11), (0.0, 1.0)):  # bicubic and Lanczos overshoot
        p = base.copy()
        p[0, 0, 0], p[1, 1, 1] = low, high
        shown = as_picture(p)
        assert shown[0, 0, 0] == 0 and shown[1, 1, 1] == 255
    for low, high in ((-0.3, 1.0), (0.0, 1.3), (-1.0, 1.0), (0.0, 1.9)):
        p = base.copy()
        p[0, 0, 0], p[1, 1, 1] = low, high
        with pytest.raises(ValueError, match=r"values in \[0, 1\]"):
            check_float_picture(p)
    assert OV.FLOAT_PICTURE_SLACK == 0.25  # the band, as the messages give it


def test_values_beyond_the_band_without_negatives_name_both_readings():
    # was: only "pass image.astype(np.uint8) (or image / 255)", wrong for a normalised input
    with pytest.raises(ValueError, match=r"0-255 values.*astype\(np.uint8\).*normalised model input.*denormalize"):
        check_float_picture(np.full((4, 4, 3), 200.0))
    with pytest.raises(ValueError, match=r"normalised model input.*denormalize.*np.clip") as info:
        check_float_picture(np.linspace(0.2, 1.6, 48).reshape(4, 4, 3))
    assert "astype(np.uint8)" not in str(info.value)
    infinite = np.full((4, 4, 3), 0.5)
    infinite[0, 0] = -np.inf  # not a normalised input: said as what it is
    with pytest.raises(ValueError, match=r"infinite values") as info:
        check_float_picture(infinite)
    assert "normalised" not in str(info.value)


def test_a_channels_first_picture_is_told_the_numpy_and_the_torch_way():
    # was: only ".transpose(1, 2, 0)", which a torch tensor refuses (Tensor.transpose takes two dims)
    chw = np.random.default_rng(0).random((3, 8, 8))
    for call in (lambda p: as_picture(p), lambda p: attribution_overlay(p, np.ones((8, 8))),
                 lambda p: occlusion_overlay(np.zeros((2, 2)), p, window=4, stride=4)):
        with pytest.raises(ValueError, match=r"looks like \(C, H, W\).*transpose\(1, 2, 0\).*NumPy.*"
                                             r"permute\(1, 2, 0\).*tensor"):
            call(chw)
        with pytest.raises(ValueError, match=r"permute\(1, 2, 0\)"):
            call(torch.from_numpy(chw))
    assert as_picture(torch.from_numpy(chw).permute(1, 2, 0)).shape == (8, 8, 3)  # what it says works


# ---------------------------------------------------------------------------- class names as targets


def test_the_plain_functions_say_how_to_turn_a_class_name_into_an_index():
    # was: "unsupported target 'star': pass a class index ..." and "ClassLogit: the class index must
    # be an int ..., got str 'star'", without how to get the index
    with pytest.raises(TypeError, match=r"unsupported target 'star'.*class name.*classes\.index\('star'\)"):
        resolve_target("star")
    with pytest.raises(TypeError, match=r"classes\.index\('star'\)"):
        ClassLogit("star")
    model = trunk(5).eval()
    with pytest.raises(TypeError, match=r"classes\.index\('star'\)"):
        grad_cam(model, batch(1), "star")
    assert resolve_target(3) == ClassLogit(3)  # an index still is a target


def _explorer(model: nn.Module, **kw) -> Explorer:
    kw.setdefault("input_size", (3, SIZE, SIZE))
    kw.setdefault("samples", {"a": image(0), "b": image(1)})
    return Explorer(model, kw.pop("img", None), background=False, **kw)


def test_the_explorer_takes_a_class_name_as_its_target():
    # was: TraitError "target must be an int ..., got str 'star'"
    names = list(SHAPE_CLASSES)
    ex = _explorer(trunk(5).eval(), classes=names, target="star")
    try:
        assert ex.target == names.index("star") and type(ex.target) is int
        assert ex.scores_view.selected == ex.target  # the score list shows it picked
        ex.target = "circle"
        assert ex.target == 0 and ex.scores_view.selected == 0
        ex.target = 2  # ints still work
        assert ex.target == 2
        ex.scores_view.pick(4)  # the score list picks a class, as a click does
        assert ex.target == 4
        ex.target = None
        assert ex.target is None
    finally:
        ex.close()
    ex = explore(trunk(5).eval(), image(0), classes=names, target=np.str_("cross"), input_size=(3, SIZE, SIZE),
                 samples={}, background=False)
    try:
        assert ex.target == 4
    finally:
        ex.close()


def test_an_unknown_class_name_is_refused_with_some_names():
    # was: TraitError "target must be an int ..., got str 'flower'", whatever the name
    names = [f"class {k}" for k in range(20)]
    ex = _explorer(trunk(20).eval(), classes=names, target=3)
    try:
        with pytest.raises(traitlets.TraitError, match=r"target must be a class index.*None.*'flower' is not one "
                                                       r"of the class names.*'class 0'.*20 names"):
            ex.target = "flower"
        with pytest.raises(traitlets.TraitError, match=r"did you mean 'class 7'"):
            ex.target = "Class 7"
        assert ex.target == 3  # unchanged
    finally:
        ex.close()
    ex = _explorer(trunk(5).eval())  # no class names: indices only
    try:
        with pytest.raises(traitlets.TraitError,
                           match=r"target must be an int.*got str .star.*class names.*classes=.*has none"):
            ex.target = "star"
        assert ex.target is None
    finally:
        ex.close()
    with pytest.raises(traitlets.TraitError, match=r"not one of the class names"):
        _explorer(trunk(5).eval(), classes=list(SHAPE_CLASSES), target="flower")


def test_a_class_name_given_twice_is_refused_with_both_indices():
    # was: refused as a str
    names = ["cat", "crane", "dog", "crane"]
    ex = _explorer(trunk(4).eval(), classes=names)
    try:
        with pytest.raises(traitlets.TraitError, match=r"'crane' names classes 1 and 3"):
            ex.target = "crane"
        ex.target = "dog"
        assert ex.target == 2
    finally:
        ex.close()


def test_a_binary_classifier_takes_its_positive_class_name():
    # was: refused as a str
    ex = _explorer(trunk(1).eval(), classes=["cat", "dog"])
    try:
        ex.target = "dog"
        assert ex.target == 0
        with pytest.raises(traitlets.TraitError, match=r"'cat' is the negative class.*target 0 \('dog'\)"):
            ex.target = "cat"
    finally:
        ex.close()


# ---------------------------------------------------------------------------- shipped samples


def _shipped(ex: Explorer) -> bool:
    return "circle" in ex.picker.names


def test_a_five_class_model_of_other_classes_is_not_offered_the_shapes():
    # was: any model with five outputs was offered the generated shapes (circle, star ...) beside its image
    flowers = ["daisy", "dandelion", "rose", "sunflower", "tulip"]
    ex = Explorer(trunk(5).eval(), image(0), classes=flowers, input_size=(3, SIZE, SIZE), background=False)
    try:
        assert ex.picker.names == ["your image"]
    finally:
        ex.close()
    ex = Explorer(trunk(5).eval(), image(0), input_size=(3, SIZE, SIZE), background=False)  # no names either
    try:
        assert ex.picker.names == ["your image"]
    finally:
        ex.close()


def test_the_shapes_are_offered_to_models_of_the_shape_classes_and_to_shapesnet():
    # was: offered by the number of outputs alone: to a ShapesNet with other class names too
    # the shape classes, in any order, or the zoo's ShapesNet without names: the samples stay
    shuffled = list(reversed(SHAPE_CLASSES))
    torch.manual_seed(0)
    for model, kw in ((trunk(5).eval(), {"classes": shuffled}), (ShapesNet().eval(), {})):
        ex = Explorer(model, image(0), input_size=(3, 64, 64), background=False, **kw)
        try:
            assert ex.picker.names[0] == "your image" and _shipped(ex)
        finally:
            ex.close()
    # ShapesNet with other names, or another number of outputs: not the shapes
    others = ((ShapesNet().eval(), {"classes": ["a", "b", "c", "d", "e"]}), (ShapesNet(num_classes=3).eval(), {}))
    for model, kw in others:
        ex = Explorer(model, image(0), input_size=(3, 64, 64), background=False, **kw)
        try:
            assert ex.picker.names == ["your image"]
        finally:
            ex.close()


def test_without_an_image_the_samples_stay_whatever_the_model():
    # unchanged: with no image given there is nothing else to show
    ex = Explorer(trunk(5).eval(), classes=["daisy", "dandelion", "rose", "sunflower", "tulip"],
                  input_size=(3, SIZE, SIZE), background=False)
    try:
        assert _shipped(ex)  # nothing else to show
    finally:
        ex.close()
