"""Seeded fuzz test of the image input surface, as users meet it.

What goes in: PIL images of every mode, numpy arrays and torch tensors of every accepted dtype,
layout and memory view (negative strides, slices, Fortran order, read-only, expanded), files
and their bytes (PNG, JPEG, GIF, TIFF, WebP, BMP, EXIF-rotated, animated, 16-bit, with
transparency), damaged files (truncated, mutated bytes, empty), paths that are no image (a
directory, a missing file, a name too long), images too small or declared too large in their
header, and files uploaded to the explorer piece by piece as its upload button receives them.
Every random case comes from a fixed seed: the same cases run every time.

The oracle:

* a valid input gives exactly the RGB picture an independent conversion written here gives
  (the documented rules of :func:`cnnwidgets.core.images.load_image`: gray replicated, uint16
  as ``round(v / 257)``, floats as ``round(255 v)``, transparency composited over white with
  ``a * rgb + (1 - a) * 255``, premultiplied alpha as ``stored + 255 - a``, EXIF orientation
  applied, the first frame of an animation, other modes through PIL's ``convert("RGB")``, the
  ``size=`` resize as PIL's bilinear resize); the caller's image, array or tensor is not changed;
  and :func:`cnnwidgets.explore` takes it on a small model and renders a frame whose input
  picture is that RGB picture resized to the model's input (bilinear);
* an invalid input raises ``TypeError`` or ``ValueError`` (``FileNotFoundError`` for a missing
  path) raised by cnnwidgets itself, not a PIL, numpy or torch error passed through, and its
  message says what was wrong and what is accepted; given to the explorer's upload button or
  picked in its image picker, the error reaches the status line, the image shown does not
  change and the explorer goes on working.

Tests marked ``# was:`` are regression tests of bugs this fuzzing found.
"""

from __future__ import annotations

import io
import os
import re
import struct
import time
import traceback
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

import cnnwidgets
from cnnwidgets.core.images import image_to_tensor, load_image
from tests.helpers import small_classifier

SIDE = 16  # the explorer's model input in these tests: (3, SIDE, SIDE)
FORMATS = re.escape("(PNG, JPEG, GIF, BMP, TIFF, WebP ...)")
ARRAY_RULES = r"\(H, W\), \(H, W, C\) or \(C, H, W\) with C in 1, 3, 4"
_BILINEAR = Image.Resampling.BILINEAR


# --------------------------------------------------------------------------- independent conversions
def pixels(rng: np.random.Generator, h: int, w: int, c: int | None = None) -> np.ndarray:
    """Random uint8 pixels (H, W) or (H, W, C) holding both 0 and 255."""
    a = rng.integers(0, 256, (h, w) if c is None else (h, w, c), dtype=np.uint8)
    a.reshape(-1)[:2] = (0, 255)
    return a


def gray3(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[..., None], 3, axis=2)


def white_where(mask: np.ndarray, rgb: np.ndarray) -> np.ndarray:
    """``rgb`` (H, W, 3) with the pixels of ``mask`` (H, W) white: a transparent colour."""
    return np.where(mask[..., None], 255, rgb).astype(np.uint8)


def over_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``a * rgb + (1 - a) * 255`` rounded, for uint8 ``rgb`` (H, W, 3) and ``alpha`` (H, W)."""
    a = alpha.astype(np.float64)[..., None] / 255.0
    return np.rint(rgb.astype(np.float64) * a + 255.0 * (1.0 - a)).astype(np.uint8)


def u16_to_u8(values: np.ndarray) -> np.ndarray:
    """``round(v / 257)`` in integers (v / 257 is never exactly halfway)."""
    return ((values.astype(np.int64) + 128) // 257).astype(np.uint8)


def floats_to_u8(values: np.ndarray) -> np.ndarray:
    return np.rint(np.asarray(values, dtype=np.float64) * 255.0).astype(np.uint8)


def as_unit_floats(u8: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Floats in [0, 1] that are ``u8 / 255`` off by less than 0.4 / 255: any rounding gives ``u8`` back."""
    noise = rng.uniform(-0.4, 0.4, u8.shape)
    return np.clip((u8.astype(np.float64) + noise) / 255.0, 0.0, 1.0)


def as_u16(u8: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """uint16 values that round to ``u8`` by ``round(v / 257)``, anywhere in their range."""
    return np.clip(u8.astype(np.int64) * 257 + rng.integers(-128, 129, u8.shape), 0, 65535).astype(np.uint16)


def to_rgb(canonical: np.ndarray) -> np.ndarray:
    """The documented picture of uint8 pixels (H, W) or (H, W, C), C in 1, 3, 4."""
    if canonical.ndim == 2:
        return gray3(canonical)
    if canonical.shape[2] == 1:
        return gray3(canonical[..., 0])
    if canonical.shape[2] == 3:
        return canonical
    return over_white(canonical[..., :3], canonical[..., 3])


def model_view(rgb: np.ndarray) -> np.ndarray:
    """What the explorer shows of ``rgb`` with ``input_size=(3, SIDE, SIDE)``: a bilinear resize."""
    return np.asarray(Image.fromarray(rgb, "RGB").resize((SIDE, SIDE), _BILINEAR))


# --------------------------------------------------------------------------- checks
def explore(image, **kw):
    kw.setdefault("input_size", (3, SIDE, SIDE))
    kw.setdefault("samples", {})
    kw.setdefault("background", False)
    return cnnwidgets.explore(small_classifier(), image, **kw)


def assert_renders(ex, rgb: np.ndarray) -> None:
    """A frame was drawn for the image ``rgb`` (before resizing to the model's input)."""
    assert not ex.status.is_error, ex.status.message
    np.testing.assert_array_equal(ex.input_image, model_view(rgb))
    assert ex.grid_image.dtype == np.uint8 and ex.grid_image.size > 0
    assert ex.scores is not None and np.isfinite(ex.scores["probs"]).all()


def assert_accepted(src, expected: np.ndarray, *, explorer: bool = True) -> None:
    """``src`` loads as exactly ``expected`` (H, W, 3), and the explorer renders it."""
    out = load_image(src)
    assert out.mode == "RGB" and out.size == (expected.shape[1], expected.shape[0])
    got = np.asarray(out)
    if not np.array_equal(got, expected):
        wrong = np.argwhere(np.any(got != expected, axis=-1))
        y, x = wrong[0]
        raise AssertionError(f"{len(wrong)} pixels differ, e.g. at {(x, y)}: {got[y, x]} != {expected[y, x]}")
    if explorer:
        if isinstance(src, io.IOBase):
            src.seek(0)
        ex = explore(src)
        try:
            assert_renders(ex, expected)
        finally:
            ex.close()


def raised_here(exc: BaseException) -> str:
    """The file whose code raised ``exc`` (the innermost frame)."""
    return traceback.extract_tb(exc.__traceback__)[-1].filename


def assert_refused(call, wrong: str, accepted: str, kinds=(TypeError, ValueError)):
    """``call()`` raises one of ``kinds`` from cnnwidgets whose message matches ``wrong`` and ``accepted``."""
    with pytest.raises(kinds) as info:
        call()
    exc = info.value
    where = raised_here(exc)
    assert f"{os.sep}cnnwidgets{os.sep}" in where, f"{type(exc).__name__} raised in {where}: {exc}"
    message = str(exc)
    assert re.search(wrong, message), f"{message!r} does not say what was wrong ({wrong!r})"
    assert re.search(accepted, message), f"{message!r} does not say what is accepted ({accepted!r})"
    return exc


def png_bytes(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **options)
    return buffer.getvalue()


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


# --------------------------------------------------------------------------- PIL images of every mode
def _mode_cases() -> dict[str, tuple[Image.Image, np.ndarray]]:
    """``{name: (PIL image, expected RGB)}``, built from seeded random pixels."""
    rng = np.random.default_rng(101)
    h, w = 11, 14
    rgb, gray, alpha = pixels(rng, h, w, 3), pixels(rng, h, w), pixels(rng, h, w)
    index = rng.integers(0, 256, (h, w), dtype=np.uint8)
    palette = rng.integers(0, 256, (256, 3), dtype=np.uint8)
    cases: dict[str, tuple[Image.Image, np.ndarray]] = {}

    cases["1"] = (Image.fromarray(gray > 127), gray3(np.where(gray > 127, 255, 0).astype(np.uint8)))
    cases["L"] = (Image.fromarray(gray, "L"), gray3(gray))
    transparent_l = Image.fromarray(gray, "L")
    transparent_l.info["transparency"] = int(gray[3, 3])
    cases["L+transparency"] = (transparent_l, white_where(gray == gray[3, 3], gray3(gray)))
    cases["LA"] = (Image.fromarray(np.dstack([gray, alpha]), "LA"), over_white(gray3(gray), alpha))

    def with_palette(mode: str, data: np.ndarray) -> Image.Image:
        image = Image.frombytes(mode, (w, h), np.ascontiguousarray(data).tobytes())
        image.putpalette(palette.reshape(-1).tobytes())
        return image

    cases["P"] = (with_palette("P", index), palette[index])
    p_index = with_palette("P", index)
    p_index.info["transparency"] = int(index[2, 5])
    cases["P+transparent index"] = (p_index, white_where(index == index[2, 5], palette[index]))
    alphas = rng.integers(0, 256, 256, dtype=np.uint8)
    p_alphas = with_palette("P", index)
    p_alphas.info["transparency"] = alphas.tobytes()
    cases["P+alpha per entry"] = (p_alphas, over_white(palette[index], alphas[index]))
    cases["PA"] = (with_palette("PA", np.dstack([index, alpha])), over_white(palette[index], alpha))
    cases["RGB"] = (Image.fromarray(rgb, "RGB"), rgb)
    colour = tuple(int(v) for v in rgb[4, 4])
    rgb_t = Image.fromarray(rgb, "RGB")
    rgb_t.info["transparency"] = colour
    cases["RGB+transparency"] = (rgb_t, white_where(np.all(rgb == colour, axis=-1), rgb))
    cases["RGBA"] = (Image.fromarray(np.dstack([rgb, alpha]), "RGBA"), over_white(rgb, alpha))
    for mode in ("CMYK", "YCbCr"):  # documented: PIL's own conversion
        image = Image.frombytes(mode, (w, h), pixels(rng, h, w, len(mode) if mode == "CMYK" else 3).tobytes())
        cases[mode] = (image, np.asarray(image.convert("RGB")))
    deep = as_u16(gray, rng)
    deep.reshape(-1)[:2] = (0, 65535)
    cases["I;16"] = (Image.fromarray(deep), gray3(u16_to_u8(deep)))
    cases["I;16B"] = (Image.frombytes("I;16B", (w, h), deep.astype(">u2").tobytes()), gray3(u16_to_u8(deep)))
    cases["I"] = (Image.fromarray(deep.astype(np.int32), "I"), gray3(u16_to_u8(deep)))
    deep_t = Image.fromarray(deep)
    deep_t.info["transparency"] = int(deep[1, 1])
    cases["I;16+transparency"] = (deep_t, white_where(deep == deep[1, 1], gray3(u16_to_u8(deep))))
    floats = as_unit_floats(gray, rng).astype(np.float32)
    cases["F"] = (Image.fromarray(floats, "F"), gray3(floats_to_u8(floats)))
    stored = (gray.astype(np.int64) * alpha // 255).astype(np.uint8)  # premultiplied: at most alpha
    cases["La"] = (Image.frombytes("La", (w, h), np.dstack([stored, alpha]).tobytes()),
                   gray3(np.clip(stored.astype(int) + 255 - alpha, 0, 255).astype(np.uint8)))
    stored3 = (rgb.astype(np.int64) * alpha[..., None] // 255).astype(np.uint8)
    cases["RGBa"] = (Image.frombytes("RGBa", (w, h), np.dstack([stored3, alpha]).tobytes()),
                     np.clip(stored3.astype(int) + 255 - alpha[..., None], 0, 255).astype(np.uint8))
    return cases


MODE_CASES = _mode_cases()


@pytest.mark.parametrize("name", list(MODE_CASES))
def test_pil_images_of_every_mode(name):
    image, expected = MODE_CASES[name]
    before = (image.mode, image.size, image.tobytes(), dict(image.info))
    assert_accepted(image, expected)
    assert (image.mode, image.size, image.tobytes(), dict(image.info)) == before  # the caller's image


# --------------------------------------------------------------------------- numpy arrays
ARRAY_DTYPES = ("uint8", "uint16", ">u2", "float16", "float32", "float64")


def _encode(canonical: np.ndarray, dtype: str, rng: np.random.Generator) -> np.ndarray:
    if dtype == "uint8":
        return canonical.copy()
    if dtype in ("uint16", ">u2"):
        return as_u16(canonical, rng).astype(dtype)
    return as_unit_floats(canonical, rng).astype(dtype)


def _view(a: np.ndarray, how: str) -> np.ndarray:
    """The same values as ``a`` in another memory layout."""
    if how == "negative strides":
        flip = (slice(None, None, -1),) * a.ndim
        return np.ascontiguousarray(a[flip])[flip]
    if how == "slice of a larger array":
        big = np.zeros((a.shape[0] * 2, a.shape[1] * 3, *a.shape[2:]), a.dtype)
        big[::2, ::3] = a
        return big[::2, ::3]
    if how == "fortran order":
        return np.asfortranarray(a)
    if how == "read-only":
        a = a.copy()
        a.flags.writeable = False
        return a
    return a


def _array_cases() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``(id, array, expected RGB)``: every dtype with every channel count, seeded random layout and view."""
    rng = np.random.default_rng(202)
    cases = []
    for dtype in ARRAY_DTYPES:
        for channels in (None, 1, 3, 4):
            h, w = (int(v) for v in rng.integers(8, 30, 2))
            canonical = pixels(rng, h, w, channels)
            data = _encode(canonical, dtype, rng)  # (H, W) or (H, W, C)
            layout = "HW" if channels is None else str(rng.choice(["HWC", "CHW", "1CHW", "1HWC"]))
            if layout in ("CHW", "1CHW"):
                data = np.moveaxis(data, -1, 0)
            if layout.startswith("1"):
                data = data[None]
            view = str(rng.choice(["contiguous", "negative strides", "slice of a larger array", "fortran order",
                                   "read-only"]))
            data = _view(data, view)
            # the documented picture, from the values actually stored (float16 rounds them)
            stored = data[0] if layout.startswith("1") else data
            stored = np.moveaxis(stored, 0, -1) if layout.endswith("CHW") else stored
            if dtype == "uint8":
                decoded = stored
            elif dtype in ("uint16", ">u2"):
                decoded = u16_to_u8(stored)
            else:
                decoded = floats_to_u8(stored)
            cases.append((f"{dtype}-{layout}{channels or ''}-{view}-{h}x{w}", data, to_rgb(decoded)))
    return cases


ARRAY_CASES = _array_cases()


@pytest.mark.parametrize("case", ARRAY_CASES, ids=[c[0] for c in ARRAY_CASES])
def test_numpy_arrays(case):
    _, array, expected = case
    before = array.copy()
    flags = (array.flags.writeable, array.strides)
    assert_accepted(array, expected)
    np.testing.assert_array_equal(array, before)  # the caller's array: same values, same memory
    assert (array.flags.writeable, array.strides) == flags
    t = image_to_tensor(array)
    assert t.dtype == torch.float32 and t.shape == (3, *expected.shape[:2])
    assert torch.equal(t, torch.from_numpy(expected).permute(2, 0, 1).float() / 255)


# --------------------------------------------------------------------------- torch tensors
TENSOR_DTYPES = ["uint8", "float16", "bfloat16", "float32", "float64"]
if hasattr(torch, "uint16"):  # torch 2.3 on
    TENSOR_DTYPES.append("uint16")


def _tensor_cases() -> list[tuple[str, torch.Tensor, np.ndarray]]:
    rng = np.random.default_rng(303)
    cases = []
    for dtype in TENSOR_DTYPES:
        for channels in (None, 1, 3, 4):
            h, w = (int(v) for v in rng.integers(8, 30, 2))
            canonical = pixels(rng, h, w, channels)
            if dtype == "uint8":
                t = torch.from_numpy(canonical.copy())
            elif dtype == "uint16":
                t = torch.from_numpy(as_u16(canonical, rng).astype(np.int32)).to(torch.uint16)
            else:
                t = torch.from_numpy(as_unit_floats(canonical, rng)).to(getattr(torch, dtype))
            if channels is not None:
                t = t.permute(2, 0, 1)  # (C, H, W), not contiguous
            layout = "HW" if channels is None else str(rng.choice(["CHW", "HWC", "1CHW"]))
            if layout == "HWC":
                t = t.permute(1, 2, 0)
            elif layout == "1CHW":
                t = t[None]
            if rng.random() < 0.3:
                t = t.contiguous()
            grad = t.is_floating_point() and bool(rng.random() < 0.5)
            if grad:
                t = t.clone().requires_grad_(True)
            # the documented picture, from the values actually stored (bfloat16 and float16 round them)
            stored = t.detach().to(torch.float64 if t.is_floating_point() else torch.int64).numpy()
            stored = stored[0] if layout == "1CHW" else stored
            stored = np.moveaxis(stored, 0, -1) if layout in ("CHW", "1CHW") else stored
            decoded = floats_to_u8(stored) if t.is_floating_point() else (
                u16_to_u8(stored) if dtype == "uint16" else stored.astype(np.uint8))
            cases.append((f"{dtype}-{layout}{channels or ''}{'-grad' if grad else ''}-{h}x{w}", t, to_rgb(decoded)))
    # a gray image expanded to three channels (stride 0), a slice of a larger tensor
    gray = torch.from_numpy(pixels(rng, 12, 15))
    cases.append(("uint8-expanded-3x12x15", gray.expand(3, 12, 15), gray3(gray.numpy())))
    big = torch.from_numpy(pixels(rng, 24, 30, 3)).permute(2, 0, 1)
    cases.append(("uint8-strided-slice", big[:, ::2, ::3], big[:, ::2, ::3].permute(1, 2, 0).numpy()))
    return cases


TENSOR_CASES = _tensor_cases()


@pytest.mark.parametrize("case", TENSOR_CASES, ids=[c[0] for c in TENSOR_CASES])
def test_torch_tensors(case):
    _, t, expected = case
    before, grad = t.detach().clone(), t.requires_grad
    assert_accepted(t, expected)
    assert torch.equal(t.detach(), before) and t.requires_grad == grad and t.grad is None  # the caller's tensor
    out = image_to_tensor(t)
    assert out.dtype == torch.float32 and out.shape == (3, *expected.shape[:2]) and not out.requires_grad
    chw = t.detach()[0] if t.dim() == 4 else t.detach()
    if t.is_floating_point() and chw.dim() == 3 and 3 in (chw.shape[0], chw.shape[-1]):
        # a float RGB tensor keeps its exact values (no 8-bit rounding; sides of 8 or more: the
        # channel axis is the one of 3)
        chw = chw if chw.shape[0] == 3 else chw.permute(2, 0, 1)
        assert torch.equal(out, chw.float())
    else:
        assert torch.equal(out, torch.from_numpy(expected).permute(2, 0, 1).float() / 255)


# --------------------------------------------------------------------------- invalid arrays and tensors
def _invalid_values() -> list[tuple[str, object, str, str]]:
    """``(id, value, what was wrong, what is accepted)``, as regular expressions of the message."""
    rng = np.random.default_rng(404)
    rgb = pixels(rng, 12, 12, 3)
    nan = as_unit_floats(rgb, rng).astype(np.float32)
    nan[3, 4, 1] = np.nan
    inf = nan.copy()
    inf[3, 4, 1] = np.inf
    dtype_rule = "dtype uint8, uint16 or float in \\[0, 1\\]"
    cases = [
        ("int64 0..255", rgb.astype(np.int64), "unsupported image dtype int64", dtype_rule),
        ("int32 tensor", torch.from_numpy(rgb.astype(np.int32)), "unsupported image dtype int32", dtype_rule),
        ("int8", rgb.astype(np.int8), "unsupported image dtype int8", dtype_rule),
        ("bool", rgb > 100, "unsupported image dtype bool", dtype_rule),
        ("bool tensor", torch.from_numpy(rgb > 100), "unsupported image dtype bool", dtype_rule),
        ("uint32", rgb.astype(np.uint32), "unsupported image dtype uint32", dtype_rule),
        ("complex", rgb.astype(np.complex64), "unsupported image dtype complex64", dtype_rule),
        ("object", rgb.astype(object), "unsupported image dtype object", dtype_rule),
        ("float 0..255", rgb.astype(np.float32), r"got \[0, 255\]", r"must lie in \[0, 1\].*use dtype uint8"),
        ("float64 0..65535", rgb.astype(np.float64) * 257, r"got \[0, 6\.554e\+04\]", r"must lie in \[0, 1\]"),
        ("normalised", (rgb / 255.0 - 0.45) / 0.225, r"got \[-2, 2\.44[0-9]\]", r"must lie in \[0, 1\].*normalis"),
        # the explorer's own words: a normalised tensor is a model input, given with denormalize=
        ("normalised tensor", torch.from_numpy((rgb / 255.0 - 0.45) / 0.225).float(), r"(got|values in) \[-2, 2\.44",
         r"(must lie in|not a picture in) \[0, 1\]"),
        ("NaN", nan, "NaN or infinite", "image contains"),
        ("inf tensor", torch.from_numpy(inf), "NaN or infinite", "image contains"),
        ("2 channels", pixels(rng, 12, 12, 2), r"shape \(12, 12, 2\): no axis of 1, 3 or 4 channels", ARRAY_RULES),
        ("5 channels first", np.zeros((5, 12, 12), np.float32), r"shape \(5, 12, 12\)", ARRAY_RULES),
        ("1-D", np.zeros(64, np.uint8), r"shape \(64,\)", ARRAY_RULES),
        ("0-D", np.array(7, np.uint8), r"shape \(\)", ARRAY_RULES),
        ("5-D", np.zeros((1, 1, 3, 12, 12), np.uint8), r"shape \(1, 1, 3, 12, 12\)", ARRAY_RULES),
        ("batch of 2", torch.zeros(2, 3, 12, 12), "batch of 2", "pass one image"),
        ("1x1", np.zeros((1, 1, 3), np.uint8), r"\(1, 1, 3\) is too small", "at least 8 px"),
        ("2x2 gray", np.zeros((2, 2), np.uint8), "image is 2x2 pixels", "at least 8 px"),
        ("2x2 tensor", torch.rand(3, 2, 2), "image is 2x2 pixels", "at least 8 px"),
        ("7x40", pixels(rng, 7, 40, 3), "image is 40x7 pixels", "at least 8 px"),
        ("empty uint8", np.zeros((0, 12, 3), np.uint8), "image is 12x0 pixels", "at least 8 px"),
        ("not an image at all", 42, "cannot load an image from int", "accepted: a file path"),
        ("a list", rgb.tolist(), "cannot load an image from list", "accepted: a file path .* a numpy array"),
        ("None", None, "cannot load an image from NoneType", "accepted: a file path"),
    ]
    return cases


INVALID_VALUES = _invalid_values()


@pytest.mark.parametrize("case", INVALID_VALUES, ids=[c[0] for c in INVALID_VALUES])
def test_invalid_arrays_and_tensors_are_refused_saying_what_is_accepted(case):
    _, value, wrong, accepted = case
    assert_refused(lambda: load_image(value), wrong, accepted)
    assert_refused(lambda: image_to_tensor(value), wrong, accepted)
    if value is not None:  # None: the explorer shows a sample
        assert_refused(lambda: explore(value), wrong, accepted)


def test_invalid_images_picked_in_the_picker_reach_the_status_line_and_the_explorer_goes_on():
    rng = np.random.default_rng(505)
    good = pixels(rng, 20, 20, 3)
    samples = {"good": good}
    samples.update({name: value for name, value, _, _ in INVALID_VALUES if value is not None})
    ex = explore(None, samples=samples)
    try:
        assert ex.image == "good"
        assert_renders(ex, good)
        for n, (name, _, wrong, accepted) in enumerate(c for c in INVALID_VALUES if c[1] is not None):
            ex.picker.dropdown.value = name  # picked in the browser
            message = ex.status.message
            assert ex.status.is_error and message.startswith(f"image {name!r}: "), message
            assert re.search(wrong, message) and re.search(accepted, message), message
            assert ex.image == "good" and ex.picker.value == "good" and ex.picker.dropdown.value == "good"
            ex.box = (n % 8, 4, 8, 8)  # the explorer goes on: the next change draws a frame
            assert not ex.status.is_error, ex.status.message
            assert ex.shown_state.box == (n % 8, 4, 8, 8)
            assert_renders(ex, good)
    finally:
        ex.close()


# --------------------------------------------------------------------------- files and their bytes
def _file_cases() -> list[tuple[str, bytes, np.ndarray]]:
    """``(id, file bytes, expected RGB)``: lossless files against their pixels, lossy ones against
    PIL's own decoding of the very file (which the documented rule uses)."""
    rng = np.random.default_rng(606)
    h, w = 13, 18
    rgb, gray, alpha = pixels(rng, h, w, 3), pixels(rng, h, w), pixels(rng, h, w)
    deep = as_u16(gray, rng)
    cases = [
        ("png-rgb", encoded(Image.fromarray(rgb), "PNG"), rgb),
        ("png-rgba", encoded(Image.fromarray(np.dstack([rgb, alpha]), "RGBA"), "PNG"), over_white(rgb, alpha)),
        ("png-gray-16bit", encoded(Image.fromarray(deep), "PNG"), gray3(u16_to_u8(deep))),
        ("png-la", encoded(Image.fromarray(np.dstack([gray, alpha]), "LA"), "PNG"), over_white(gray3(gray), alpha)),
        ("png-bilevel", encoded(Image.fromarray(gray > 99), "PNG"), white_where(gray > 99, gray3(np.zeros_like(gray)))),
        ("tiff-rgb", encoded(Image.fromarray(rgb), "TIFF"), rgb),
        ("tiff-rgba-lzw", encoded(Image.fromarray(np.dstack([rgb, alpha]), "RGBA"), "TIFF", compression="tiff_lzw"),
         over_white(rgb, alpha)),
        ("tiff-16bit", encoded(Image.fromarray(deep), "TIFF"), gray3(u16_to_u8(deep))),
        ("webp-lossless-rgba", encoded(Image.fromarray(np.dstack([rgb, alpha]), "RGBA"), "WEBP", lossless=True),
         over_white(rgb, alpha)),
        ("bmp-rgb", encoded(Image.fromarray(rgb), "BMP"), rgb),
        ("bmp-gray", encoded(Image.fromarray(gray), "BMP"), gray3(gray)),
    ]
    # palette GIF with a transparent entry
    index = rng.integers(0, 64, (h, w), dtype=np.uint8)
    palette = rng.integers(0, 256, (256, 3), dtype=np.uint8)
    gif = Image.frombytes("P", (w, h), index.tobytes())
    gif.putpalette(palette.reshape(-1).tobytes())
    cases.append(("gif-transparent", encoded(gif, "GIF", transparency=int(index[0, 0])),
                  white_where(index == index[0, 0], palette[index])))
    # lossy files: PIL decodes the very file (gray replicated, CMYK through PIL's conversion)
    for name, image, options in [
        ("jpeg-rgb", Image.fromarray(rgb), {"quality": 90}),
        ("jpeg-gray", Image.fromarray(gray), {}),
        ("jpeg-cmyk", Image.fromarray(rgb).convert("CMYK"), {}),
        ("webp-lossy", Image.fromarray(rgb), {"quality": 80}),
    ]:
        fmt = name.split("-")[0].upper()
        data = encoded(image, fmt, **options)
        with Image.open(io.BytesIO(data)) as decoded:
            decoded.load()
            expected = gray3(np.asarray(decoded)) if decoded.mode == "L" else np.asarray(decoded.convert("RGB"))
        cases.append((name, data, expected))
    return cases


FILE_CASES = _file_cases()


@pytest.mark.parametrize("case", FILE_CASES, ids=[c[0] for c in FILE_CASES])
def test_files_as_paths_bytes_and_file_objects(case, tmp_path):
    name, data, expected = case
    path = tmp_path / f"{name}.img"  # the format is read from the contents, not the name
    path.write_bytes(data)
    assert_accepted(path, expected)
    for src in (str(path), data, bytearray(data), memoryview(data), io.BytesIO(data)):
        assert_accepted(src, expected, explorer=False)
    with open(path, "rb") as f:
        assert_accepted(f, expected, explorer=False)
        assert not f.closed  # a caller's file object is left open
    assert path.read_bytes() == data


#: EXIF orientation -> the transform that shows the stored pixels upright.
ORIENTATIONS = {
    1: lambda a: a, 2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2), 6: lambda a: np.rot90(a, -1), 7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    8: lambda a: np.rot90(a, 1),
}


@pytest.mark.parametrize("orientation", list(ORIENTATIONS))
def test_exif_rotated_jpegs_come_out_upright(orientation, tmp_path):
    rgb = pixels(np.random.default_rng(700 + orientation), 12, 20, 3)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "photo.jpg"
    Image.fromarray(rgb).save(path, quality=95, exif=exif)
    with Image.open(path) as raw:
        stored = np.asarray(raw.convert("RGB"))  # as the camera wrote it
    expected = np.ascontiguousarray(ORIENTATIONS[orientation](stored))
    assert_accepted(path, expected, explorer=orientation in (1, 6))
    assert_accepted(path.read_bytes(), expected, explorer=False)


def test_animated_gifs_give_their_first_frame(tmp_path):
    rng = np.random.default_rng(808)
    frames = [pixels(rng, 14, 16, 3) for _ in range(3)]
    path = tmp_path / "anim.gif"
    first, *rest = [Image.fromarray(f).quantize(64) for f in frames]
    first.save(path, save_all=True, append_images=rest, duration=40, loop=0)
    with Image.open(path) as check:
        assert check.n_frames == 3
        expected = np.asarray(check.convert("RGB"))  # frame 0, decoded by PIL
    assert_accepted(path, expected)
    assert_accepted(path.read_bytes(), expected, explorer=False)


def test_the_size_option_resizes_as_documented():
    rng = np.random.default_rng(909)
    rgb = pixels(rng, 30, 45, 3)
    expected_rgb = Image.fromarray(rgb)
    for size, wh in [(20, (30, 20)), ((17, 23), (23, 17)), (30, (45, 30)), (np.int64(12), (18, 12))]:
        out = load_image(rgb, size=size)
        assert out.size == wh
        np.testing.assert_array_equal(np.asarray(out), np.asarray(expected_rgb.resize(wh, _BILINEAR)))


# --------------------------------------------------------------------------- invalid files and paths
def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` RGB pixels and holds almost none."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))


def bmp_header_only(width: int, height: int) -> bytes:
    data = bytearray(encoded(Image.new("RGB", (8, 8)), "BMP"))
    data[18:26] = struct.pack("<ii", width, height)
    return bytes(data)


def jpeg_header_only(width: int, height: int) -> bytes:
    data = bytearray(encoded(Image.new("RGB", (8, 8)), "JPEG"))
    start = data.index(b"\xff\xc0")  # the frame header: precision, height, width
    data[start + 5:start + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def gif_header_only(width: int, height: int) -> bytes:
    data = bytearray(encoded(Image.new("P", (8, 8)), "GIF"))
    data[6:10] = struct.pack("<HH", width, height)  # the logical screen
    start = data.index(b"\x2c")  # the image descriptor: left, top, width, height
    data[start + 5:start + 9] = struct.pack("<HH", width, height)
    return bytes(data)


@pytest.mark.parametrize("header", [png_header_only, bmp_header_only, jpeg_header_only, gif_header_only])
def test_a_huge_size_declared_in_a_header_is_refused_without_decoding(header, monkeypatch):
    data = header(20000, 20000)

    def no_decoding(self, *args, **kwargs):
        raise AssertionError("the pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    start = time.perf_counter()
    assert_refused(lambda: load_image(data), "the data given is too large to decode safely",
                   "400,000,000 pixels, more than the [\\d,]+ PIL decodes \\(twice PIL.Image.MAX_IMAGE_PIXELS")
    assert time.perf_counter() - start < 1.0


def _damaged(data: bytes, rng: np.random.Generator) -> bytes:
    """``data`` cut short, with bytes changed, or with bytes inserted (seeded)."""
    b = bytearray(data)
    kind = int(rng.integers(0, 4))
    if kind == 0:
        return bytes(b[: int(rng.integers(0, len(b)))])
    if kind == 1:
        for i in rng.integers(0, len(b), int(rng.integers(1, 8))):
            b[int(i)] = int(rng.integers(0, 256))
        return bytes(b)
    if kind == 2:  # the header
        i = int(rng.integers(0, min(len(b), 64)))
        b[i:i + 4] = rng.integers(0, 256, 4, dtype=np.uint8).tobytes()
        return bytes(b)
    i = int(rng.integers(0, len(b)))
    return bytes(b[:i]) + rng.integers(0, 256, int(rng.integers(1, 40)), dtype=np.uint8).tobytes() + bytes(b[i:])


#: What a refused damaged file may be told: the data and why, and what is accepted.
DAMAGED_MESSAGES = [
    f"^the data given is not an image file in a format that can be read {FORMATS}$",
    f"^could not decode the data given: .+; accepted: a complete, undamaged image file {FORMATS}$",
    r"^image is \d+x\d+ pixels; each side must be at least 8 px",
    r"^the data given is too large to decode safely: [\d,]+ pixels, more than the [\d,]+ PIL decodes",
    r"^image shape .* too small \(each side must be at least 8 px\)",
    r"^float image values must lie in \[0, 1\]",
    r"^32-bit integer image with values in .*only 0..65535",
]


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "TIFF", "WEBP", "BMP", "QOI", "PPM"])
def test_damaged_files_load_or_are_refused_in_plain_words(fmt):
    rng = np.random.default_rng(sum(map(ord, fmt)))
    image = Image.fromarray(pixels(rng, 20, 24, 3))
    data = encoded(image.convert("P") if fmt == "GIF" else image, fmt)
    outcomes = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PIL warns about some damaged EXIF blocks
        for _ in range(40):
            bad = _damaged(data, rng)
            try:
                out = load_image(bad)
            except (TypeError, ValueError) as exc:
                assert f"{os.sep}cnnwidgets{os.sep}" in raised_here(exc), f"{type(exc).__name__}: {exc}"
                assert any(re.search(p, str(exc)) for p in DAMAGED_MESSAGES), str(exc)
                outcomes.append("refused")
            else:
                assert out.mode == "RGB" and min(out.size) >= 8
                outcomes.append("loaded")
    assert "refused" in outcomes


def test_empty_files_directories_and_missing_paths(tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    not_an_image = f"not an image file in a format that can be read {FORMATS}"
    for src in (empty, str(empty), b"", io.BytesIO(b"")):
        assert_refused(lambda: load_image(src), not_an_image, FORMATS)
    for src in (tmp_path, str(tmp_path)):
        assert_refused(lambda: load_image(src), re.escape(f"{str(tmp_path)!r} is a directory"), "not an image file")
    for src in (tmp_path / "missing.png", "missing.png", "~/surely/not/here.jpg"):
        exc = assert_refused(lambda: load_image(src), "image file not found: .*(missing.png|here.jpg)", "not found",
                             kinds=FileNotFoundError)
        assert type(exc) is FileNotFoundError
    (tmp_path / "notes.png").write_text("this is text")
    assert_refused(lambda: load_image(tmp_path / "notes.png"), "notes.png is not an image file", FORMATS)
    for src in ("", "  "):
        assert_refused(lambda: load_image(src), "an empty string is not an image path", "accepted: a file path")
    assert_refused(lambda: load_image("ftp://example.org/cat.png"), "cannot load an image from a ftp:// address",
                   "http:// or https://")


def test_tiny_images_from_every_source_are_refused(tmp_path):
    for side in (1, 2):
        image = Image.new("RGB", (side, side), (10, 20, 30))
        path = tmp_path / f"tiny{side}.png"
        image.save(path)
        for src in (image, path, path.read_bytes(), np.zeros((side, side), np.uint8)):
            assert_refused(lambda: load_image(src), f"image is {side}x{side} pixels", "each side must be at least 8 px")
        assert_refused(lambda: explore(path), f"image is {side}x{side} pixels", "each side must be at least 8 px")


# --------------------------------------------------------------------------- uploads
def browser_upload(ex, name: str, data: bytes, upload_id: int, piece: int = 700) -> None:
    """What the upload button's browser side sends for a file: pieces, each acknowledged."""
    button = ex.picker.upload
    starts = list(range(0, len(data), piece)) or [0]
    for start in starts:
        button._handle_custom_msg({"kind": "piece", "id": upload_id, "name": name, "size": len(data),
                                   "offset": start}, [memoryview(data[start:start + piece])])


@pytest.fixture
def upload_explorer(monkeypatch):
    rng = np.random.default_rng(1001)
    first = pixels(rng, 24, 24, 3)
    ex = explore(None, samples={"first": first})
    monkeypatch.setattr(ex.picker.upload, "send", lambda *args, **kwargs: None)  # no browser to answer
    yield ex, first
    ex.close()


def test_good_uploads_are_shown(upload_explorer):
    ex, first = upload_explorer
    assert_renders(ex, first)
    rng = np.random.default_rng(1002)
    photo = pixels(rng, 20, 30, 3)
    exif = Image.Exif()
    exif[0x0112] = 8
    rotated = encoded(Image.fromarray(photo), "JPEG", quality=95, exif=exif)
    with Image.open(io.BytesIO(rotated)) as raw:
        rotated_expected = np.rot90(np.asarray(raw.convert("RGB")), 1)
    for upload_id, (name, data, expected) in enumerate(
            [("rotated.jpg", rotated, rotated_expected)] + [(f"{n}.img", d, e) for n, d, e in FILE_CASES], start=1):
        browser_upload(ex, name, data, upload_id)
        assert ex.image == f"{name} (uploaded)" == ex.picker.value, ex.status.message
        assert_renders(ex, np.ascontiguousarray(expected))


def _bad_uploads() -> list[tuple[str, bytes, str]]:
    """``(file name, bytes, what the status line says after the name)``."""
    rng = np.random.default_rng(1003)
    png = encoded(Image.fromarray(pixels(rng, 20, 20, 3)), "PNG")
    qoi = encoded(Image.fromarray(pixels(rng, 20, 20, 3)), "QOI")
    decode = f"could not decode the data given: .+; accepted: a complete, undamaged image file {FORMATS}"
    small = "each side must be at least 8 px.*"
    return [
        ("empty.png", b"", f"the data given is not an image file in a format that can be read {FORMATS}"),
        ("notes.txt", b"shopping list: eggs, milk", f"the data given is not an image file .*{FORMATS}"),
        ("truncated.png", png[: len(png) // 2], decode),
        ("truncated.qoi", qoi[:-40], decode),
        ("tiny.png", encoded(Image.new("RGB", (2, 2)), "PNG"), rf"image is 2x2 pixels; {small}"),
        ("thin.png", encoded(Image.new("RGB", (40, 3)), "PNG"), rf"image is 40x3 pixels; {small}"),
        ("huge.png", png_header_only(20000, 20000),
         r"the data given is too large to decode safely: 400,000,000 pixels, more than .*MAX_IMAGE_PIXELS.*"),
        ("float.tif", encoded(Image.fromarray(np.full((12, 12), 7.5, np.float32), "F"), "TIFF"),
         # was: "(for 0..255 values use dtype uint8)", which someone uploading a file cannot act on
         r"float image values must lie in \[0, 1\], got \[7\.5, 7\.5\] \(a float image, such as a 32-bit float "
         r"TIFF, must hold values in \[0, 1\]; for 0\.\.255 values save it as an 8-bit image\)"),
    ]


BAD_UPLOADS = _bad_uploads()


def test_bad_uploads_reach_the_status_line_and_the_explorer_goes_on(upload_explorer):
    ex, first = upload_explorer
    for upload_id, (name, data, reason) in enumerate(BAD_UPLOADS, start=1):
        shown = ex.input_image.copy()
        browser_upload(ex, name, data, upload_id)
        message = ex.status.message
        assert ex.status.is_error and re.fullmatch(f"{re.escape(name)} \\(uploaded\\): {reason}; the image shown is "
                                                   "unchanged", message), message
        assert ex.image == "first" and ex.picker.value == "first" and ex.picker.dropdown.value == "first"
        assert f"{name} (uploaded)" not in ex.picker.names  # not offered
        np.testing.assert_array_equal(ex.input_image, shown)
        ex.box = (upload_id % 8, 2, 8, 8)  # the explorer goes on
        assert not ex.status.is_error and ex.shown_state.box == (upload_id % 8, 2, 8, 8), ex.status.message
        assert_renders(ex, first)
    good = pixels(np.random.default_rng(1004), 18, 18, 3)
    browser_upload(ex, "good.png", encoded(Image.fromarray(good), "PNG"), 99)
    assert ex.image == "good.png (uploaded)"
    assert_renders(ex, good)


def test_the_embedded_default_model_takes_every_kind_of_image(tmp_path):
    rng = np.random.default_rng(1100)
    pal = Image.fromarray(pixels(rng, 40, 50, 3)).quantize(16)
    deep = tmp_path / "deep.png"
    Image.fromarray(as_u16(pixels(rng, 40, 40), rng)).save(deep)
    rgba = torch.from_numpy(pixels(rng, 36, 36, 4)).permute(2, 0, 1)[None].float() / 255
    for image in (pal, deep, rgba):
        ex = cnnwidgets.explore(image=image, background=False)
        try:
            assert not ex.status.is_error, ex.status.message
            assert ex.input_image.dtype == np.uint8 and ex.grid_image.size > 0 and ex.scores is not None
        finally:
            ex.close()


# --------------------------------------------------------------------------- regressions
def test_damaged_files_whose_decoder_raises_other_errors_are_refused_in_plain_words():
    # was: PIL's own ValueError or NotImplementedError passed through bare ("not enough image
    # data", "invalid literal for int() with base 10", "Unknown pixel format flags 0"), naming
    # neither the data nor what is accepted
    rng = np.random.default_rng(1200)
    image = Image.fromarray(pixels(rng, 12, 16, 3))
    qoi = encoded(image, "QOI")[:-40]
    ppm = encoded(image, "PPM").replace(b"16 12", b"1\xa16 12", 1)
    dds = bytearray(encoded(image, "DDS"))
    dds[80:84] = struct.pack("<I", 0)  # the pixel format's flags
    for data, reason in [(qoi, "not enough image data"), (ppm, "invalid literal for int"),
                         (bytes(dds), "Unknown pixel format flags 0")]:
        exc = assert_refused(lambda: load_image(data), f"^could not decode the data given: {reason}",
                             f"accepted: a complete, undamaged image file {FORMATS}$")
        assert type(exc) is ValueError


def test_a_damaged_upload_is_said_in_plain_words(upload_explorer):
    # was: "t.qoi (uploaded): not enough image data; the image shown is unchanged"
    ex, _ = upload_explorer
    qoi = encoded(Image.fromarray(pixels(np.random.default_rng(1201), 12, 16, 3)), "QOI")
    browser_upload(ex, "t.qoi", qoi[:-40], 1)
    assert ex.status.message == ("t.qoi (uploaded): could not decode the data given: not enough image data; accepted: "
                                 "a complete, undamaged image file (PNG, JPEG, GIF, BMP, TIFF, WebP ...); the image "
                                 "shown is unchanged")


def test_closed_file_objects_are_refused(tmp_path):
    path = tmp_path / "a.png"
    Image.new("RGB", (10, 10)).save(path)
    closed = io.BytesIO(path.read_bytes())
    closed.close()
    with open(path, "rb") as f:
        pass
    for src in (closed, f):  # was: io's "I/O operation on closed file." / "seek of closed file"
        assert_refused(lambda: load_image(src), "the given file object is closed",
                       r"pass an open binary file \(open\(path, 'rb'\)\), its path or its bytes")


def test_text_mode_file_objects_are_refused(tmp_path):
    # was: UnicodeDecodeError: 'utf-8' codec can't decode byte 0x89 in position 0
    path = tmp_path / "a.png"
    Image.new("RGB", (10, 10)).save(path)
    with open(path) as text:
        exc = assert_refused(lambda: load_image(text), "the given file object is open in text mode",
                             r"binary mode \(open\(path, 'rb'\)\).*accepted: a file path")
    assert type(exc) is TypeError


def test_a_string_too_long_for_a_path_is_refused():
    # was: OSError: [Errno 36] File name too long, with the whole string
    data_url = "data:image/png;base64," + "iVBORw0KGgo" * 1000
    exc = assert_refused(lambda: load_image(data_url), r"cannot use 'data:image/png;base64,iVBOR.{40,60}\.\.\.' as an "
                         "image file path \\(File name too long\\)", "accepted: a file path")
    assert len(str(exc)) < 400


def test_meta_tensors_are_refused():
    # was: NotImplementedError "Cannot copy out of meta tensor; no data!" (load_image),
    # RuntimeError "Tensor.item() cannot be called on meta tensors" (image_to_tensor, explore)
    for meta in (torch.empty(3, 20, 30, device="meta"), torch.empty(20, 30, dtype=torch.uint8, device="meta")):
        for call in (load_image, image_to_tensor, explore):
            assert_refused(lambda: call(meta), r"the tensor \(shape .*\) is on the meta device: it has a shape but "
                           "no values", "pass a tensor that holds the image's values")


def test_sparse_tensors_are_refused():
    # was: "unsupported tensor dtype torch.float32" (load_image), NotImplementedError "Could not run
    # 'aten::ne.Scalar' with arguments from the 'SparseCPU' backend" (image_to_tensor, explore)
    sparse = torch.rand(3, 20, 20).to_sparse()
    for call in (load_image, image_to_tensor, explore):
        assert_refused(lambda: call(sparse), r"got a sparse tensor \(layout torch.sparse_coo\)",
                       r"pass a dense one \(tensor.to_dense\(\)\)")


def test_nested_tensors_are_refused():
    # was: RuntimeError "Internal error: NestedTensorImpl doesn't support sizes"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch: nested tensors are a prototype
        nested = torch.nested.nested_tensor([torch.rand(3, 20, 20), torch.rand(3, 16, 16)])
    for call in (load_image, image_to_tensor, explore):
        assert_refused(lambda: call(nested), "got a nested tensor", "pass one image as a plain tensor")


def test_float8_tensors_are_floats_like_any_other():
    # was: NotImplementedError '"isfinite" not implemented for Float8_e4m3fn' from image_to_tensor
    # and explore, and load_image refused a float tensor in [0, 1] as an unsupported dtype
    rgb = pixels(np.random.default_rng(1300), 12, 14, 3)
    t = torch.from_numpy(rgb).permute(2, 0, 1).float().div(255).to(torch.float8_e4m3fn)
    expected = floats_to_u8(t.float().permute(1, 2, 0).numpy().astype(np.float64))
    assert_accepted(t, expected)
    assert torch.equal(image_to_tensor(t), t.float())
    bad = torch.full((3, 12, 12), 2.0).to(torch.float8_e4m3fn)
    assert_refused(lambda: image_to_tensor(bad), r"got \[2, 2\]", r"must lie in \[0, 1\]")


def test_empty_float_images_are_refused_for_their_size():
    # was: numpy's "zero-size array to reduction operation minimum which has no identity" (load_image,
    # explore) and torch's "min(): Expected reduction dim to be specified" (image_to_tensor)
    for empty in (np.zeros((0, 12, 3), np.float32), torch.rand(3, 0, 12), torch.rand(12, 0)):
        for call in (load_image, image_to_tensor, explore):
            assert_refused(lambda: call(empty), "image is (12x0|0x12) pixels", "each side must be at least 8 px")


def test_floats_just_outside_the_unit_range_are_shown_as_such():
    # was: "float image values must lie in [0, 1], got [1, 1]"
    over = np.full((12, 12, 3), 0.5, np.float32)
    over[0, 0, 0] = np.nextafter(np.float32(1), np.float32(2))
    assert_refused(lambda: load_image(over), r"got \[0\.5, 1\.00000012\]", r"clip the image to \[0, 1\] first")
    under = torch.full((3, 12, 12), 0.5)
    under[0, 0, 0] = -1e-7
    assert_refused(lambda: image_to_tensor(under), r"got \[-1e-07, 0\.5\]", r"clip the image to \[0, 1\] first")


def test_a_pil_image_whose_file_is_damaged_or_closed_is_said_as_such(tmp_path):
    # was: "the image's EXIF orientation data could not be applied: image file is truncated", and
    # for a closed file the same with no reason at all
    data = encoded(Image.fromarray(pixels(np.random.default_rng(1400), 30, 30, 3)), "PNG")
    truncated = Image.open(io.BytesIO(data[: len(data) * 3 // 4]))
    path = tmp_path / "a.png"
    path.write_bytes(data)
    with Image.open(path) as closed:
        pass
    for image, reason in [(truncated, "image file is truncated"), (closed, "AssertionError")]:
        exc = assert_refused(lambda: load_image(image), re.escape(f"could not read the pixels of the PIL image given "
                                                                  f"({reason})"),
                             "damaged or incomplete, or was closed before the pixels were read")
        assert "EXIF" not in str(exc)
    with Image.open(path) as opened:  # an image loaded while its file was open is fine
        opened.load()
    assert np.array_equal(np.asarray(load_image(opened)), np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))


def test_premultiplied_rgba_is_composited_from_the_stored_values():
    # was: off by one in about one pixel of eight (PIL un-premultiplies with a rounding first)
    rng = np.random.default_rng(1500)
    rgba = pixels(rng, 40, 40, 4)
    image = Image.fromarray(rgba, "RGBA").convert("RGBa")
    stored = np.asarray(image).astype(int)
    expected = np.clip(stored[..., :3] + 255 - stored[..., 3:], 0, 255).astype(np.uint8)
    assert_accepted(image, expected, explorer=False)
