"""Messages and documentation a first-time user meets: a layer the explorer cannot show, a picture
given where a preprocessed tensor is expected, what the model's output may be, and the README's
recipe for the explorer's occlusion map as a plain function."""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import traitlets
from PIL import Image
from torch import nn

import cnnwidgets
from cnnwidgets import ClassProbability, Probe
from cnnwidgets.app.explorer import Explorer
from cnnwidgets.methods import occlusion_map, occlusion_top_class
from cnnwidgets.zoo import load_default, sample_image

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(scope="module")
def bundle():
    return load_default()


# ---------------------------------------------------------------- a layer without feature maps


def test_a_layer_without_feature_maps_names_layers_that_have_them(bundle):
    # was: "layer 'classifier' outputs (5,), not a (C, H, W) feature map; choose one of the layers
    # listed in explorer.layer_select" (the constructor failed: there was no explorer to look at)
    with pytest.raises(traitlets.TraitError) as caught:
        cnnwidgets.explore(bundle, sample_image("star"), layer="classifier")
    message = str(caught.value)
    assert message.startswith("layer 'classifier' outputs (5,), not a (C, H, W) feature map")
    assert "layer_select" not in message
    with Probe(bundle) as probe:
        layers = probe.layers
        shown = [name for name, info in layers.items() if info.shows_maps]
    named = re.findall(r"'([^']+)'", message.split("feature map", 1)[1])
    assert named, message
    assert set(named) <= set(shown), (named, message)
    # the ones nearest to the layer asked for, in the model's order
    assert named[-1] == "global_pool" and "features.relu4" in named, message
    assert "cnnwidgets.Probe(model).layers" in message
    assert hasattr(layers["global_pool"], "shows_maps")  # the attribute the message points to


def test_a_layer_without_feature_maps_set_on_an_open_explorer_keeps_the_layer(bundle):
    # was: the same message pointing at explorer.layer_select, without a layer name to pick
    explorer = cnnwidgets.explore(bundle, sample_image("star"), layer="features.conv2")
    try:
        with pytest.raises(traitlets.TraitError, match=r"'flatten' outputs \(64,\), not a \(C, H, W\) feature map.*"
                                                       r"'global_pool'.*cnnwidgets\.Probe\(model\)\.layers"):
            explorer.layer = "flatten"
        assert explorer.layer == "features.conv2"
    finally:
        explorer.close()


# ---------------------------------------------------------------- a picture instead of a tensor


@pytest.mark.parametrize("scan", [occlusion_map, occlusion_top_class], ids=["occlusion_map", "occlusion_top_class"])
def test_occlusion_given_a_picture_says_how_to_make_the_tensor(bundle, scan):
    # was: "x must be a preprocessed torch.Tensor of shape (1, C, H, W), got Image" (no how-to,
    # unlike grad_cam and Probe.capture)
    picture = sample_image("star")
    kwargs = dict(window=8, stride=8, progress=False)
    args = (0,) if scan is occlusion_map else ()
    with Probe(bundle) as probe:
        with pytest.raises(TypeError) as caught:
            scan(probe, picture, *args, **kwargs)
        with pytest.raises(TypeError) as shared:
            probe.capture(picture, "features.conv1")
    message = str(caught.value)
    assert "got Image" in message and "bundle.batch(image)" in message, message
    assert "(1, C, H, W)" in message and "one image" in message, message
    # the how-to is the one the other methods give, word for word
    how_to = str(shared.value).split("; ", 1)[1]
    assert how_to in message, (how_to, message)
    # and following it works
    with Probe(bundle) as probe:
        result = scan(probe, bundle.batch(picture), *args, **kwargs)
    assert np.isfinite(result.grid).all()


def test_occlusion_keeps_its_other_input_checks():
    # not a change: a tensor of the wrong shape still gets the one-image message
    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    with pytest.raises(ValueError, match=r"x must be one image of shape \(1, C, H, W\), got \(2, 3, 8, 8\)"):
        occlusion_map(model, torch.rand(2, 3, 8, 8), 0, window=4, stride=4, progress=False)


# ---------------------------------------------------------------- model outputs


class _Outputs(nn.Module):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        maps = self.conv(x)
        scores = self.head(maps.mean(dim=(2, 3)))
        if self.kind == "dict":
            return {"logits": scores, "maps": maps}
        if self.kind == "attribute":
            return type("Output", (), {"logits": scores})()
        return scores, maps  # a plain tuple


@pytest.mark.parametrize("kind", ["dict", "attribute"])
def test_logits_reads_dicts_and_output_objects(kind):
    torch.manual_seed(0)
    model = _Outputs(kind).eval()
    x = torch.rand(1, 3, 16, 16)
    with Probe(model) as probe:
        scores = probe.logits(x)
    with torch.no_grad():
        out = model(x)
    expected = out["logits"] if kind == "dict" else out.logits
    torch.testing.assert_close(scores, expected, rtol=1e-5, atol=1e-5)


def test_a_tuple_output_opens_the_explorer_without_scores():
    torch.manual_seed(0)
    model = _Outputs("tuple").eval()
    with Probe(model) as probe, pytest.raises(TypeError, match="the model returned a tuple with 2 values"):
        probe.logits(torch.rand(1, 3, 16, 16))
    explorer = cnnwidgets.explore(model, torch.rand(3, 16, 16), input_size=(3, 16, 16))
    try:
        assert explorer.wait_idle(60)
        assert explorer.scores is None
        assert explorer.activations.size > 0
        assert "the model returned a tuple" in explorer.status.message
    finally:
        explorer.close()


def test_docstrings_say_what_outputs_are_read():
    # was: Explorer: "its output must be one tensor of class scores"; Probe.logits: "TypeError: if
    # the model does not return a tensor", with nothing about probabilities from an nn.Softmax
    explorer_doc = " ".join(Explorer.__doc__.split())
    assert "must be one tensor" not in explorer_doc
    for words in ("dict", "logits", "tuple", "without class scores"):
        assert words in explorer_doc, words
    logits_doc = " ".join(Probe.logits.__doc__.split())
    assert "if the model does not return a tensor" not in logits_doc
    for words in ("dict", "tuple", "nn.Softmax", "already probabilities", "probabilities"):
        assert words in logits_doc, words


# ---------------------------------------------------------------- the README's occlusion recipe


def _readme_block(marker: str) -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    found = [block for block in blocks if marker in block]
    assert len(found) == 1, f"README.md should hold one python block with {marker!r}, found {len(found)}"
    return found[0]


def _complete_map(explorer):
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        explorer.wait_idle(30)
        result = explorer.method_result
        if result is not None and result.complete:
            return result
        time.sleep(0.05)
    raise AssertionError(f"no complete occlusion map; error: {explorer.method_error}")


@pytest.mark.parametrize("box", [(10, 20, 20, 12), (0, 33, 9, 31)])
def test_the_readme_recipe_reproduces_the_explorers_occlusion_map(bundle, box):
    # was: the README said only "target=ClassProbability(281)", and occlusion_map's default fill
    # (0.0: the dataset mean) differs from the explorer's gray (pixel value 0.5)
    recipe = _readme_block("fill=gray")
    image = sample_image("circle")
    explorer = cnnwidgets.explore(bundle, image, method="occlusion", box=box, method_stride=4)
    try:
        shown = _complete_map(explorer)
        with Probe(bundle) as probe:
            scope = {"bundle": bundle, "image": image, "explorer": explorer, "probe": probe,
                     "occlusion_map": occlusion_map, "ClassProbability": ClassProbability}
            exec(recipe, scope)
            default_fill = occlusion_map(probe, bundle.batch(image), ClassProbability(shown.target),
                                         window=shown.occlusion.window, stride=4, progress=False)
        result = scope["result"]
        assert result.window == shown.occlusion.window and result.stride == shown.occlusion.stride
        np.testing.assert_allclose(result.grid, shown.occlusion.grid, atol=1e-5)
        # the fill is what tells them apart
        assert np.abs(default_fill.grid - shown.occlusion.grid).max() > 1e-3
    finally:
        explorer.close()
