"""What the occluder's fill looks like is what the model gets: the channel view draws the occluded
input under the channel, and the box in the browser shows the fill's own picture or colour."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import torch
from PIL import Image

from cnnwidgets.app.inputs import ImageInput, default_denormalize, default_preprocess
from cnnwidgets.render.overlay import desaturate
from tests.test_explorer import Tiny, make


def prepared(seed: int = 0, size: int = 32) -> ImageInput:
    picture = (np.random.default_rng(seed).random((size, size, 3)) * 255).astype(np.uint8)
    return ImageInput.prepare(Image.fromarray(picture), default_preprocess((size, size)), default_denormalize)


def as_pixels(x: torch.Tensor) -> np.ndarray:
    """A preprocessed (1, 3, H, W) tensor as the uint8 picture the explorer would show it as."""
    shown = default_denormalize(x[0])
    shown = shown.detach().numpy() if isinstance(shown, torch.Tensor) else np.asarray(shown)
    if shown.shape[0] == 3:
        shown = shown.transpose(1, 2, 0)
    return np.clip(np.round(shown * 255.0), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("fill", ["gray", "black", "mean", "noise", "blur"])
def test_each_fills_picture_is_what_the_model_gets_in_pixel_colours(fill):
    image = prepared()
    shown = image.display_fill(fill)
    model_gets = as_pixels(image.fill_tensor(fill))
    assert shown.shape == image.display.shape and shown.dtype == np.uint8 and not shown.flags.writeable
    # the same picture, up to the rounding of the display (blur: computed on the rounded display)
    assert np.abs(shown.astype(int) - model_gets.astype(int)).max() <= (2 if fill == "blur" else 1)
    np.testing.assert_array_equal(image.display_fill(fill, gray=True), desaturate(shown))


def test_the_occluded_display_replaces_the_box_only_and_refuses_a_box_outside():
    image = prepared()
    box = (3, 5, 10, 7)
    for fill in ("noise", "black"):
        for gray in (False, True):
            base = desaturate(image.display) if gray else image.display
            out = image.occluded_display(box, fill, gray=gray)
            inside = (slice(5, 12), slice(3, 13))
            np.testing.assert_array_equal(out[inside], image.display_fill(fill, gray)[inside])
            outside = np.ones(out.shape[:2], bool)
            outside[inside] = False
            np.testing.assert_array_equal(out[outside], base[outside])
    assert image.occluded_display(None, "noise") is image.display
    with pytest.raises(ValueError, match=r"does not lie inside the 32x32 image"):
        image.occluded_display((30, 0, 8, 8), "gray")
    with pytest.raises(ValueError, match="unknown occluder fill 'plaid'"):
        image.display_fill("plaid")


def test_the_box_previews_flat_fills_in_their_opaque_colour_and_others_as_their_picture():
    image = prepared()
    assert image.fill_color("gray") == "rgb(128, 128, 128)" and image.fill_color("black") == "rgb(0, 0, 0)"
    r, g, b = image.display_fill("mean")[0, 0]
    assert image.fill_color("mean") == f"rgb({r}, {g}, {b})"
    for fill in ("gray", "black", "mean"):
        assert image.fill_image(fill) == ""
    for fill in ("blur", "noise"):
        url = image.fill_image(fill)
        assert url.startswith("data:image/png;base64,")
        decoded = np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB"))
        np.testing.assert_array_equal(decoded, image.display_fill(fill))


def test_the_explorer_sends_the_fills_preview_and_draws_the_channel_over_the_occluded_input():
    model = Tiny().eval()
    with torch.no_grad():
        model.features[0].bias[2] = -100.0  # channel 2 of the first convolution: 0 everywhere after its ReLU
    ex = make(model, box=(4, 4, 8, 8), layer="features.1", channel=2)
    try:
        for fill in ("black", "gray", "noise"):
            ex.fill = fill
            assert ex.wait_idle(60)
            prepared_image = ex._images[ex._image_id]
            assert ex.canvas.fill_color == prepared_image.fill_color(fill)
            assert ex.canvas.fill_image == prepared_image.fill_image(fill)
            # a channel of zeros is drawn see-through: the left half of the panel is the occluded input in gray
            frame = ex._frame
            height, width = prepared_image.size
            factor = frame.panel.shape[0] // height
            left = frame.panel[:, : width * factor][::factor, ::factor]
            expected = prepared_image.occluded_display(ex.box, fill, gray=True)
            inner = (slice(5, 11), slice(5, 11))  # inside the box, clear of its outline
            np.testing.assert_array_equal(left[inner], expected[inner])
            assert "over the input in gray, occluded as the model sees it" in ex.panel_caption.value
    finally:
        ex.close()
