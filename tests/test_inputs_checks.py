"""What ``preprocess=`` and ``denormalize=`` must return, and how their mistakes are told.

A ``denormalize`` returning 0..255 pixels (floats or uint8) or a ``preprocess`` returning uint8
used to be taken silently (a white picture, wrong pixel fills, the model fed 0..255); a
``preprocess`` that raised surfaced as its bare exception; a NaN input leaked numpy's cast warning.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from cnnwidgets.app import Explorer, ImageInput
from cnnwidgets.app.inputs import PICTURE_SLACK, ModelInput
from tests.helpers import small_classifier

SIZE = 32
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


def picture(seed: int = 0, size: int = SIZE) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random((size, size, 3)) * 200 + 30).astype(np.uint8)


def normalise(pil: Image.Image) -> torch.Tensor:
    """ToTensor() then the ImageNet Normalize, for images at the model's size."""
    x = torch.from_numpy(np.asarray(pil.convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)
    return (x - MEAN) / STD


def undo(x: torch.Tensor) -> np.ndarray:
    return (x * STD + MEAN).clamp(0, 1).permute(1, 2, 0).numpy()


def make(**kw) -> Explorer:
    kw.setdefault("samples", {"a": picture(0)})
    kw.setdefault("background", False)
    return Explorer(small_classifier(), kw.pop("img", None), **kw)


@pytest.fixture
def no_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


# ---------------------------------------------------------------- denormalize: a picture in [0, 1]
ACCEPTED = r"it must return \(H, W, 3\) or \(3, H, W\) floats in \[0, 1\]"


@pytest.mark.parametrize("times_255, described", [
    (lambda x: undo(x) * 255, "a numpy float32 array"),
    (lambda x: torch.from_numpy(undo(x)).double() * 255, "a torch.float64 tensor"),
    (lambda x: (x * STD + MEAN).clamp(0, 1) * 255, "a torch.float32 tensor"),  # (3, H, W)
])
def test_a_denormalize_returning_0_to_255_floats_is_refused(no_warnings, times_255, described):
    with pytest.raises(ValueError, match=(
            rf"^denormalize returned {described} with values in \[\d+(\.\d+)?, \d+(\.\d+)?\]; {ACCEPTED} "
            rf"\(a gray \(H, W\) too\) \(values at most {PICTURE_SLACK} outside are clipped\): a picture with "
            r"values 0\.\.255: divide by 255")):
        make(preprocess=normalise, denormalize=times_255)


@pytest.mark.parametrize("as_uint8, described", [
    (lambda x: (undo(x) * 255).astype(np.uint8), "a numpy uint8 array"),
    (lambda x: (torch.from_numpy(undo(x)) * 255).to(torch.uint8), "a torch.uint8 tensor"),
    (lambda x: Image.fromarray((undo(x) * 255).astype(np.uint8)), r"a PIL image \(mode RGB\)"),
])
def test_a_denormalize_returning_uint8_pixels_is_refused(no_warnings, as_uint8, described):
    with pytest.raises(ValueError, match=(
            rf"^denormalize returned {described}, 0\.\.255 pixel values \(here \d+\.\.\d+\); {ACCEPTED} "
            r"\(a gray \(H, W\) too\): divide by 255 \(e\.g\. pixels\.float\(\) / 255")):
        make(preprocess=normalise, denormalize=as_uint8)


def test_a_denormalize_a_little_outside_0_1_is_clipped_and_far_outside_refused(no_warnings):
    def stretched(by):
        return lambda x: ((x * STD + MEAN).clamp(0, 1) - 0.5) * by + 0.5  # (3, H, W), unclipped

    inside = 1 + 2 * PICTURE_SLACK * 0.9  # pixels 30..230 (of 255) reach about [-0.05, 1.08]
    ex = make(preprocess=normalise, denormalize=stretched(inside), box=(4, 4, 8, 8), fill="gray")
    try:
        assert not ex.status.is_error, ex.status.message
        assert ex.input_image.min() == 0 and ex.input_image.max() == 255  # clipped for display
        prepared = ex._images[ex._image_id]
        gray = prepared.fill_tensor("gray")[0, :, 0, 0]  # pixel 0.5 is still mapped right
        assert torch.allclose(gray, ((0.5 - MEAN) / STD).flatten(), atol=1e-4)
    finally:
        ex.close()
    with pytest.raises(ValueError, match=r"^denormalize returned a torch\.float32 tensor with values in "
                                         r"\[-0\.\d+, 1\.\d+\];.*check that it undoes the normalisation of the model "
                                         r"input \(x \* std \+ mean\), and clip the result \(e\.g\. \.clamp\(0, 1\)\)"):
        make(preprocess=normalise, denormalize=stretched(2.5))  # pixels 30..230 reach [-0.5, 1.5]
    with pytest.raises(ValueError, match=r"values in \[-1\.6\d*, 2\.1\d*\].*check that it undoes the normalisation"):
        make(preprocess=normalise, denormalize=lambda x: x.permute(1, 2, 0).numpy())  # the identity: no inverse


def test_image_input_prepare_refuses_a_0_to_255_denormalize_before_any_fill_is_read():
    with pytest.raises(ValueError, match="divide by 255"):
        ImageInput.prepare(Image.fromarray(picture(1)), normalise, lambda x: undo(x) * 255)
    prepared = ImageInput.prepare(Image.fromarray(picture(1)), normalise, undo)
    assert torch.allclose(prepared.fill_tensor("black")[0, :, 0, 0], (-MEAN / STD).flatten(), atol=1e-4)


def test_a_model_input_given_as_it_is_tells_whose_scale_is_wrong():
    x = normalise(Image.fromarray(picture(2)))
    # the tensor is right, denormalize makes 0..255: denormalize is told
    with pytest.raises(ValueError, match=r"^denormalize returned a numpy float32 array with values in .*divide by 255"):
        make(img=x, denormalize=lambda t: undo(t) * 255)
    # denormalize is right (it does not clip), the tensor holds 0..255 floats: the tensor is told
    def unclipped(t):
        return (t * STD + MEAN).permute(1, 2, 0).numpy()

    with pytest.raises(ValueError, match=r"^the tensor given as the model input un-normalises to pixel values in "
                                         r".*divide it by 255"):
        make(img=torch.from_numpy(picture(2)).permute(2, 0, 1).float(), denormalize=unclipped)
    ex = make(img=x, denormalize=unclipped)  # a normalised input with its inverse is fine
    try:
        assert not ex.status.is_error
    finally:
        ex.close()


# ---------------------------------------------------------------- preprocess: a float tensor
def test_a_preprocess_returning_uint8_is_refused_naming_the_conversion(no_warnings):
    torchvision = pytest.importorskip("torchvision")
    T = torchvision.transforms
    expected = (r"^preprocess returned a torch\.uint8 tensor \(values \d+\.\.\d+\); the model takes float inputs: "
                r"convert the pixels to floats in \[0, 1\] before normalising them, e\.g\. with torchvision's "
                r"ToTensor\(\) instead of PILToTensor\(\), or ConvertImageDtype\(torch\.float\)")
    with pytest.raises(ValueError, match=expected):
        make(preprocess=T.Compose([T.Resize((SIZE, SIZE)), T.PILToTensor()]))
    with pytest.raises(ValueError, match=r"^preprocess returned a torch\.int64 tensor \(values \d+\.\.\d+\); the model "
                                         "takes float inputs"):
        make(preprocess=lambda im: torch.from_numpy(np.asarray(im).astype(np.int64)).permute(2, 0, 1))


def test_a_preprocess_that_raises_is_told_with_the_image_it_failed_on(no_warnings):
    def divides_by_zero(image):
        return 1 / 0

    with pytest.raises(ValueError, match=(
            r"^preprocess failed on image 'a', given to it as an RGB PIL image of 32x32 \(width x height\) "
            r"\(ZeroDivisionError: division by zero\); it must map a PIL image to the model input, a \(C, H, W\) "
            r"float tensor$")) as info:
        make(preprocess=divides_by_zero)
    assert isinstance(info.value.__cause__, ZeroDivisionError)


def test_a_preprocess_making_nan_is_refused_without_numpy_warnings(no_warnings):
    with pytest.raises(ValueError, match=r"^preprocess returned a tensor with 3072 values of 3072 that are not finite "
                                         r"\(NaN or inf\); the model needs finite inputs"):
        make(preprocess=lambda im: normalise(im) * float("nan"))
    def one_inf(im):
        x = normalise(im)
        x[0, 1, 2] = float("inf")
        return x

    with pytest.raises(ValueError, match=r"a tensor with 1 values of 3072 that are not finite"):
        make(preprocess=one_inf, denormalize=undo)


def test_a_nan_picture_from_denormalize_is_shown_black_without_numpy_warnings(no_warnings):
    def holes(x):
        shown = undo(x).copy()
        shown[0, 0] = np.nan
        return shown

    prepared = ImageInput.prepare(Image.fromarray(picture(3)), normalise, holes)
    assert prepared.display[0, 0].tolist() == [0, 0, 0]


# ---------------------------------------------------------------- the same errors later: set_image, the picker
def fails_off_size(image):
    """A preprocess without a resize: it takes SIZE x SIZE images only."""
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).reshape(3, SIZE, SIZE)


def test_set_image_raises_the_preprocess_error_and_keeps_the_image_shown():
    ex = make(preprocess=fails_off_size, denormalize=lambda x: x.permute(1, 2, 0).numpy())
    try:
        shown = ex.input_image.copy()
        with pytest.raises(ValueError, match=r"^preprocess failed on image 'big', given to it as an RGB PIL image of "
                                             r"40x40 \(width x height\) \(RuntimeError: .*\)") as info:
            ex.set_image(picture(4, size=40), "big")
        assert isinstance(info.value.__cause__, RuntimeError)
        assert np.array_equal(ex.input_image, shown) and ex.image == "a" and "big" not in ex.picker.names
        ex.set_image(picture(5), "fits")
        assert ex.image == "fits" and not ex.status.is_error
    finally:
        ex.close()


def test_picking_an_image_the_preprocess_fails_on_reaches_the_status_line():
    ex = make(preprocess=fails_off_size, denormalize=lambda x: x.permute(1, 2, 0).numpy(),
              samples={"a": picture(0), "big": picture(4, size=40)})
    try:
        image_id = ex._image_id
        ex.picker.dropdown.value = "big"
        assert ex.status.is_error
        assert "image 'big'" in ex.status.message
        assert "preprocess failed on image 'big', given to it as an RGB PIL image of 40x40" in ex.status.message
        assert ex._image_id == image_id and ex.image == "a" and ex.picker.dropdown.value == "a"
        ex.box = (0, 0, 8, 8)  # the explorer goes on
        assert not ex.status.is_error
    finally:
        ex.close()


def test_set_image_of_a_model_input_the_denormalize_cannot_show_is_refused():
    ex = make(preprocess=lambda im: torch.from_numpy(np.asarray(im, dtype=np.float32) / 255).permute(2, 0, 1),
              denormalize=lambda x: x.permute(1, 2, 0).numpy())
    try:
        shown = ex.input_image.copy()
        with pytest.raises(ValueError, match=r"^the tensor given as the model input un-normalises to pixel values"):
            ex.set_image(normalise(Image.fromarray(picture(6))), "normalised")
        assert np.array_equal(ex.input_image, shown) and ex.image == "a"
    finally:
        ex.close()


def test_model_input_tensors_keep_working():
    x = ModelInput(normalise(Image.fromarray(picture(7)))[None])
    prepared = ImageInput.prepare(x, normalise, undo)
    assert prepared.tensor.shape == (1, 3, SIZE, SIZE) and prepared.display.dtype == np.uint8


def test_a_model_with_a_float64_preprocess_still_runs(no_warnings):
    ex = make(preprocess=lambda im: normalise(im).double(), denormalize=undo)
    try:
        assert not ex.status.is_error and ex.input_image.shape == (SIZE, SIZE, 3)
    finally:
        ex.close()
