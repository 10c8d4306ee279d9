"""Seeded fuzz test of the explorer's input side: the prepared image and its occluded variants,
the upload button and the image picker, uploads reaching the explorer, and the worker that
serves the newest request.

What is driven:

* :class:`cnnwidgets.app.inputs.ImageInput` prepared with the default preprocessing and with
  user pairs of ``preprocess`` / ``denormalize`` (gray, BGR, RGB + depth, two channels, a scale
  to [-1, 1]) at odd sizes (1x1, 1xN, Nx1, ...); ``occluded(box, fill)``,
  ``occluded_display``, ``display_fill``, ``fill_color`` and ``fill_image`` with random boxes
  (inside, partly outside, negative, empty, huge, fractional, bools, NaN, inf, strings, wrong
  lengths, arrays and tensors) and fill names; ``prepare`` with a ``preprocess`` that returns odd
  things (non-tensors, empty, meta, sparse and nested tensors, other dtypes and shapes);
  :class:`ModelInput`, ``default_preprocess``, ``default_denormalize``, ``outside_share``;
* :class:`cnnwidgets.widgets.upload.UploadButton` fed the messages its browser side sends, cut
  into random pieces, with damaged, duplicated, interleaved and junk messages;
* :class:`cnnwidgets.widgets.picker.ImagePicker` driven by random uploads, entries and removals;
* an explorer (``cnnwidgets.explore``) receiving uploads through its picker's upload button as a
  browser sends them: images of every kind and size, damaged files, no image at all, names with
  odd characters, names of entries it already offers;
* :class:`cnnwidgets.app.worker.NewestFirstWorker` subclassed with jobs of random length that
  may fail, submitted from several threads, closed while busy.

The oracle (computed here from the documented semantics, not by the code under test):

* ``occluded(box, fill)`` equals the unoccluded model input outside the box and the fill inside
  (the box is (x, y, w, h) in model-input pixels: rows y..y+h-1, columns x..x+w-1); the fills are
  their documented values: gray and black the pixel values 0.5 and 0 through the known
  normalisation (black: what the preprocess makes of a black image), mean the image's mean per
  channel, noise pixel values in [0, 1] the same in every call, blur within the image's range;
  a channel the picture does not show gets the image's mean there;
* the picture ``occluded_display`` shows equals the display outside the box and, inside, the
  occluded model input through ``denormalize`` (up to the rounding of the display);
* a box or fill that is not valid is refused with a ``TypeError`` or ``ValueError`` raised by
  cnnwidgets whose message names the box (or fill) and says what is accepted;
* an upload arrives as the bytes sent, once, or is reported as a problem; an uploaded image is
  shown as PIL decodes the same bytes (converted to RGB, resized to the model's input); a bad one
  leaves an error in the status line naming the file, keeps the image shown, and the explorer
  goes on (a box move, a later good upload);
* the worker runs one job at a time, the newest submitted job last, drops stale ones, reports the
  errors of jobs, and its thread ends on close.

Every random case comes from a fixed seed. Tests marked ``# was:`` pin bugs this fuzzing found.
"""

from __future__ import annotations

import io
import math
import random
import re
import struct
import threading
import time
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

import cnnwidgets
from cnnwidgets.app.inputs import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageInput,
    ModelInput,
    default_denormalize,
    default_preprocess,
    default_unnormalized,
    outside_share,
)
from cnnwidgets.app.worker import NewestFirstWorker
from cnnwidgets.widgets.picker import ImagePicker
from cnnwidgets.widgets.upload import UploadButton
from tests.helpers import raised_by_the_package, small_classifier

FILL_NAMES = ("gray", "mean", "black", "blur", "noise")
_BILINEAR = Image.Resampling.BILINEAR


# --------------------------------------------------------------------------- models' inputs, written here
def _rgb(pil: Image.Image, h: int, w: int) -> torch.Tensor:
    return torch.from_numpy(np.asarray(pil.convert("RGB").resize((w, h), _BILINEAR), np.float32) / 255).permute(2, 0, 1)


class Kind:
    """A preprocess/denormalize pair with its normalisation known here: channel ``j`` holds
    ``(pixel of colour source[j] (None: gray) - mean[j]) / std[j]``; ``shows[k]`` is the channel colour ``k``
    shows (None: the constant ``const[k]``)."""

    def __init__(self, name, mean, std, source, shows, const=(0.0, 0.0, 0.0), extra=None):
        self.name, self.mean, self.std = name, np.array(mean), np.array(std)
        self.source, self.shows, self.const, self.extra = source, shows, const, extra

    @property
    def channels(self) -> int:
        return len(self.mean) + (self.extra is not None)

    def preprocess(self, size):
        h, w = size

        def pre(pil):
            rgb = _rgb(pil, h, w)
            parts = [((rgb[s] if s is not None else rgb.mean(0)) - m) / d
                     for s, m, d in zip(self.source, self.mean, self.std)]
            if self.extra is not None:
                parts.append(torch.full((h, w), self.extra))
            return torch.stack(parts).float()
        return pre

    def denormalize(self, x):
        h, w = x.shape[-2:]
        out = []
        for k in range(3):
            j = self.shows[k]
            out.append(x[j] * self.std[j] + self.mean[j] if j is not None else torch.full((h, w), self.const[k]))
        return torch.stack(out, -1).clamp(0, 1).numpy()

    def pixel(self, x):
        """Model input -> the pixel values of the channels it normalises (C', H, W)."""
        c = len(self.mean)
        return x[:c] * torch.tensor(self.std, dtype=torch.float32).view(-1, 1, 1) \
            + torch.tensor(self.mean, dtype=torch.float32).view(-1, 1, 1)


KINDS = [
    Kind("rgb-imagenet", IMAGENET_MEAN, IMAGENET_STD, (0, 1, 2), (0, 1, 2)),
    Kind("bgr", (0.4, 0.45, 0.5), (0.2, 0.25, 0.3), (2, 1, 0), (2, 1, 0)),
    Kind("minus-one-one", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), (0, 1, 2), (0, 1, 2)),
    Kind("gray", (0.5,), (0.25,), (None,), (0, 0, 0)),
    Kind("rgb+depth", (0.5, 0.5, 0.5), (0.2, 0.2, 0.2), (0, 1, 2), (0, 1, 2), extra=0.3),
    Kind("two-channels", (0.3, 0.6), (0.5, 0.4), (0, 1), (0, 1, None), const=(0, 0, 0.5)),
]


def _picture(rng, h=None, w=None) -> Image.Image:
    h = h or int(rng.integers(8, 40))
    w = w or int(rng.integers(8, 40))
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def _prepared(kind: Kind, size, seed: int) -> tuple[ImageInput, Image.Image]:
    pil = _picture(np.random.default_rng(seed))
    return ImageInput.prepare(pil, kind.preprocess(size), kind.denormalize, name=kind.name), pil


def _as_uint8(picture) -> np.ndarray:
    """A picture in [0, 1] as the display shows it."""
    return np.clip(np.nan_to_num(np.asarray(picture, np.float64) * 255.0 + 0.5), 0, 255).astype(np.uint8)


def _check_refusal(exc: BaseException, what: str, accepted: str) -> None:
    message = str(exc)
    assert isinstance(exc, (TypeError, ValueError)), f"{type(exc).__name__}: {message}"
    assert raised_by_the_package(exc), f"raised outside cnnwidgets: {type(exc).__name__}: {message}"
    assert re.search(what, message, re.I), f"the message does not name {what!r}: {message}"
    assert re.search(accepted, message), f"the message does not say {accepted!r}: {message}"
    assert "Traceback" not in message


SIZES = [(1, 1), (1, 9), (7, 1), (8, 8), (13, 17), (24, 10)]


def _box_draw(rng: random.Random, h: int, w: int):
    """``(box, expected (x, y, w, h) or None when it must be refused)``: a random box spelled some way."""
    x, y = rng.randrange(w), rng.randrange(h)
    bw, bh = rng.randint(1, w - x), rng.randint(1, h - y)
    good = (x, y, bw, bh)
    spell = rng.randrange(16)
    if spell == 0:
        return [x, y, bw, bh], good
    if spell == 1:
        return tuple(np.int64(v) for v in good), good
    if spell == 2:
        return np.array(good, dtype=rng.choice([np.int32, np.int64, np.float64])), good
    if spell == 3:
        return torch.tensor(good), good
    if spell == 4:
        return tuple(float(v) for v in good), good
    if spell == 5:  # partly or wholly outside
        return (rng.choice([-bw - 3, -1, w - bw + 1, 2 * w + 5]), y, bw, bh), None
    if spell == 6:
        return (x, y, bw + w + rng.randint(0, 3), bh), None
    if spell == 7:
        return (x, y, rng.choice([0, -1, -bw]), bh), None
    if spell == 8:
        return (x + 0.5, y, bw, bh), None
    if spell == 9:
        return (x, rng.choice([math.nan, math.inf, -math.inf]), bw, bh), None
    if spell == 10:
        return (x, y, True, bh), None
    if spell == 11:
        return rng.choice([(x, y, bw), (x, y, bw, bh, 1), (), "abcd", 5, 2.5, {1: 2}, b"\x00\x01\x02\x03"]), None
    if spell == 12:
        return (x, y, str(bw), bh), None
    if spell == 13:
        return (10**400 if rng.random() < 0.5 else 1e300, y, bw, bh), None
    if spell == 14:
        return np.array([[x, y], [bw, bh]]), None
    return good, good


@pytest.mark.parametrize("kind", KINDS, ids=[k.name for k in KINDS])
def test_occluded_inputs_and_pictures_against_the_documented_fills(kind):
    rng = random.Random(f"boxes-{kind.name}")
    outcomes = {"returned": 0, "refused": 0}
    for case, size in enumerate(SIZES):
        image, pil = _prepared(kind, size, seed=case)
        h, w = size
        assert image.size == size and image.tensor.shape == (1, kind.channels, h, w)
        x = image.tensor[0]
        assert image.display.flags.c_contiguous
        np.testing.assert_array_equal(image.display, _as_uint8(kind.denormalize(x)))
        # the fills, from their documented values
        c = len(kind.mean)
        mean = torch.tensor(kind.mean, dtype=torch.float32).view(-1, 1, 1)
        std = torch.tensor(kind.std, dtype=torch.float32).view(-1, 1, 1)
        black = kind.preprocess(size)(Image.new("RGB", pil.size))
        fills = {}
        for fill in FILL_NAMES:
            value = image.fill_tensor(fill)[0]
            assert value.shape == x.shape and torch.isfinite(value).all()
            assert torch.equal(image.fill_tensor(fill), image.fill_tensor(fill))  # the same in every frame
            fills[fill] = value
            if kind.extra is not None:  # the channel the picture does not show: the image's mean
                torch.testing.assert_close(value[c:], x[c:].mean(dim=(1, 2), keepdim=True).expand(-1, h, w))
        shown_channels = [j for j in range(c) if j in kind.shows]
        torch.testing.assert_close(fills["gray"][:c], ((0.5 - mean) / std).expand(-1, h, w))
        torch.testing.assert_close(fills["black"][shown_channels], black[shown_channels])
        torch.testing.assert_close(fills["mean"], x.mean(dim=(1, 2), keepdim=True).expand_as(x))
        noise = kind.pixel(fills["noise"])
        assert noise.min() >= -1e-5 and noise.max() <= 1 + 1e-5
        low = x.amin(dim=(1, 2), keepdim=True) - 1e-5
        high = x.amax(dim=(1, 2), keepdim=True) + 1e-5
        assert ((fills["blur"] >= low) & (fills["blur"] <= high)).all()
        for _ in range(30):
            box, expected = _box_draw(rng, h, w)
            fill = rng.choice(FILL_NAMES)
            gray = rng.random() < 0.3
            results = []
            for call in (lambda: image.occluded(box, fill), lambda: image.occluded_display(box, fill, gray=gray)):
                try:
                    results.append(call())
                except Exception as exc:  # noqa: BLE001 - judged below
                    assert expected is None, f"the box {box!r} was refused: {type(exc).__name__}: {exc}"
                    _check_refusal(exc, "box", r"four whole numbers \(x, y, w, h\)")
                    outcomes["refused"] += 1
            if expected is None:
                assert not results, f"the box {box!r} was taken: it is not a box inside the {w}x{h} image"
                continue
            outcomes["returned"] += 1
            out, picture = results
            bx, by, bw, bh = expected
            inside = np.zeros((h, w), bool)
            inside[by:by + bh, bx:bx + bw] = True
            assert out.shape == (1, kind.channels, h, w)
            torch.testing.assert_close(out[0][:, ~torch.from_numpy(inside)], x[:, ~torch.from_numpy(inside)],
                                       rtol=0, atol=0)
            torch.testing.assert_close(out[0][:, torch.from_numpy(inside)], fills[fill][:, torch.from_numpy(inside)],
                                       rtol=0, atol=0)
            assert torch.equal(image.tensor[0], x)  # the input itself is not changed
            # the picture: the display outside, the occluded input through denormalize inside
            base = image.occluded_display(None, fill, gray=gray)
            np.testing.assert_array_equal(picture[~inside], base[~inside])
            if not gray:
                model_sees = _as_uint8(kind.denormalize(out[0]))
                diff = np.abs(picture[inside].astype(int) - model_sees[inside].astype(int)).max()
                assert diff <= (2 if fill in ("mean", "blur") else 1), (kind.name, size, box, fill, diff)
    assert outcomes["returned"] > 40 and outcomes["refused"] > 40, outcomes


JUNK_FILLS = ["pink", "Gray", " gray", "", None, 0, ["gray"], {"gray": 1}, ("gray",), b"gray", float("nan"), "grey"]


def test_unknown_fills_are_refused_by_every_method():
    image, _ = _prepared(KINDS[0], (8, 8), 1)
    for fill in JUNK_FILLS:
        for name, call in [("occluded", lambda: image.occluded((0, 0, 2, 2), fill)),
                           ("occluded_display", lambda: image.occluded_display((0, 0, 2, 2), fill)),
                           ("fill_tensor", lambda: image.fill_tensor(fill)),
                           ("display_fill", lambda: image.display_fill(fill)),
                           ("fill_color", lambda: image.fill_color(fill)),
                           ("fill_image", lambda: image.fill_image(fill))]:
            with pytest.raises((TypeError, ValueError)) as info:
                call()
            _check_refusal(info.value, "fill", "accepted: gray, mean, black, blur, noise")
        assert image.fill_problem(fill) is None or "fill" in image.fill_problem(fill)
    for fill in FILL_NAMES:
        assert re.fullmatch(r"rgba?\(\d+, \d+, \d+(, [\d.]+)?\)", image.fill_color(fill))
        assert image.fill_image(fill) == "" or image.fill_image(fill).startswith("data:image/png;base64,")


# --------------------------------------------------------------------------- prepare with odd preprocess results
def _odd_returns():
    """``(label, what preprocess returns, accepted?)``."""
    g = torch.Generator().manual_seed(5)
    good = torch.rand(3, 6, 7, generator=g) - 0.5
    return [
        ("list", [[0.0]], False), ("ndarray", good.numpy(), False), ("none", None, False),
        ("pil", Image.new("RGB", (8, 8)), False), ("number", 1.0, False),
        ("empty-hw", torch.zeros(3, 0, 5), False), ("empty-c", torch.zeros(0, 5, 5), False),
        ("empty-batch", torch.zeros(1, 3, 0, 0), False), ("scalar", torch.tensor(1.0), False),
        ("1d", torch.zeros(9), False), ("2d", torch.zeros(5, 5), False), ("5d", torch.zeros(1, 1, 3, 5, 5), False),
        ("batch2", torch.zeros(2, 3, 5, 5), False), ("hwc", torch.rand(9, 9, 3, generator=g), False),
        ("uint8", (torch.rand(3, 5, 5, generator=g) * 255).to(torch.uint8), False),
        ("bool", torch.zeros(3, 5, 5, dtype=torch.bool), False),
        ("complex", torch.zeros(3, 5, 5, dtype=torch.complex64), False),
        ("nan", torch.full((3, 5, 5), math.nan), False), ("inf", torch.full((3, 5, 5), math.inf), False),
        ("float64-overflow", torch.full((3, 5, 5), 1e300, dtype=torch.float64), False),
        ("meta", torch.zeros(3, 5, 5, device="meta"), False), ("sparse", good.to_sparse(), False),
        ("four-channels", torch.zeros(4, 5, 5), False),  # the default denormalize shows 1 or 3
        ("good", good, True), ("batch1", good[None], True), ("float64", good.double(), True),
        ("float16", good.half(), True), ("bfloat16", good.bfloat16(), True),
        ("grad", good.clone().requires_grad_(True), True), ("strided", torch.rand(3, 12, 7, generator=g)[:, ::2], True),
        ("channels-last", good[None].contiguous(memory_format=torch.channels_last), True),
        ("one-pixel", torch.zeros(3, 1, 1), True), ("gray", torch.rand(1, 4, 9, generator=g), True),
        ("parameter", torch.nn.Parameter(good.clone()), True),
    ]


@pytest.mark.parametrize("label, returned, accepted", _odd_returns(), ids=[r[0] for r in _odd_returns()])
def test_prepare_with_a_preprocess_returning_odd_things(label, returned, accepted):
    pil = _picture(np.random.default_rng(3))
    try:
        image = ImageInput.prepare(pil, lambda p: returned, default_denormalize, name="x")
    except Exception as exc:  # noqa: BLE001 - judged below
        assert not accepted, f"{label}: refused: {type(exc).__name__}: {exc}"
        _check_refusal(exc, "preprocess|denormalize", r"\(C, H, W\)|float|finite|channel")
        return
    assert accepted, f"{label}: accepted"
    expected = returned.detach().float().reshape(image.tensor.shape)
    assert image.tensor.dtype == torch.float32 and image.tensor.is_contiguous()
    torch.testing.assert_close(image.tensor, expected, rtol=0, atol=0)
    np.testing.assert_array_equal(image.display, _as_uint8(default_denormalize(image.tensor[0])))
    box = (0, 0, 1, 1)
    for fill in FILL_NAMES:
        assert image.occluded(box, fill).shape == image.tensor.shape
        assert image.occluded_display(box, fill).shape == image.display.shape


def test_prepare_refuses_a_nested_tensor_from_preprocess():
    # was: RuntimeError "Internal error: NestedTensorImpl doesn't support sizes. Please file an issue."
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nested = torch.nested.nested_tensor([torch.zeros(3, 4, 4)])
    with pytest.raises(ValueError) as info:
        ImageInput.prepare(_picture(np.random.default_rng(0)), lambda p: nested, default_denormalize)
    _check_refusal(info.value, "preprocess returned a nested tensor", r"dense\) \(C, H, W\) tensor")


@pytest.mark.parametrize("returned", [torch.zeros(3, 5, 5, device="meta"), torch.rand(3, 5, 5).to_sparse()],
                         ids=["meta", "sparse"])
def test_prepare_refuses_tensors_without_values_from_preprocess(returned):
    # was: NotImplementedError "Cannot copy out of meta tensor; no data!" / RuntimeError "unsupported memory
    # format option Contiguous" passed through from torch
    with pytest.raises(ValueError) as info:
        ImageInput.prepare(_picture(np.random.default_rng(0)), lambda p: returned, default_denormalize)
    _check_refusal(info.value, r"preprocess returned a (meta|sparse) tensor", r"dense\) \(C, H, W\) tensor")


def test_prepare_refuses_a_preprocess_result_without_pixels():
    # was: taken, an ImageInput of size (0, 0) on which every box is refused
    for empty in (torch.zeros(3, 0, 0), torch.zeros(3, 4, 0), torch.zeros(1, 1, 0, 6)):
        with pytest.raises(ValueError) as info:
            ImageInput.prepare(_picture(np.random.default_rng(0)), lambda p: empty, default_denormalize)
        _check_refusal(info.value, r"preprocess returned a tensor of shape .*without pixels", r"\(C, H, W\)")


@pytest.mark.parametrize("given", [[[0.0]], None, np.zeros((3, 4, 4), np.float32), "x.png"],
                         ids=["list", "none", "ndarray", "str"])
def test_model_input_of_anything_but_a_tensor_is_refused(given):
    # was: AttributeError "'list' object has no attribute 'detach'"
    with pytest.raises(TypeError) as info:
        ModelInput(given)
    _check_refusal(info.value, "ModelInput", r"torch\.Tensor, \(C, H, W\) or \(1, C, H, W\)")


def test_model_input_of_a_meta_tensor_is_refused():
    # was: NotImplementedError "Cannot copy out of meta tensor; no data!"
    with pytest.raises(ValueError) as info:
        ModelInput(torch.zeros(3, 4, 4, device="meta"))
    _check_refusal(info.value, "meta tensor", r"dense\) tensor")


def test_model_input_copies_what_it_is_given():
    x = torch.rand(1, 3, 5, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) * 2 - 1
    given = ModelInput(x)
    x.zero_()
    assert given.tensor.shape == (3, 5, 6) and given.tensor.dtype == torch.float32 and given.tensor.abs().sum() > 0


# --------------------------------------------------------------------------- the pixel fills in a model's colours
@pytest.mark.parametrize("kind", [KINDS[1], KINDS[4], KINDS[5]], ids=["bgr", "rgb+depth", "two-channels"])
def test_the_pixel_fills_look_as_the_model_gets_them_in_any_channel_order(kind):
    # was: the noise picture showed channel 0 as red (a BGR model gets it as blue; an RGB + depth model got
    # gray noise on screen and colour noise as input), and black on a two-channel model showed a blue of 0
    # where the model's picture has its constant 0.5
    image, _ = _prepared(kind, (9, 11), seed=7)
    for fill in ("noise", "black", "gray"):
        model_sees = _as_uint8(kind.denormalize(image.fill_tensor(fill)[0]))
        assert np.abs(image.display_fill(fill).astype(int) - model_sees.astype(int)).max() <= 1, fill


# --------------------------------------------------------------------------- pinned: boxes
@pytest.fixture
def rgb_input():
    image, _ = _prepared(KINDS[0], (12, 16), seed=11)
    return image


def test_a_fractional_box_is_refused_not_cut_to_ints(rgb_input):
    # was: (2.7, 0, 4, 4) occluded columns 2..5 as if it were (2, 0, 4, 4)
    for method in (rgb_input.occluded, rgb_input.occluded_display):
        with pytest.raises(ValueError) as info:
            method((2.7, 0, 4, 4), "gray")
        _check_refusal(info.value, r"box \(2\.7, 0, 4, 4\) holds 2\.7, not a whole number", "four whole numbers")
    assert torch.equal(rgb_input.occluded((2.0, 0.0, 4.0, 4.0)), rgb_input.occluded((2, 0, 4, 4)))


def test_a_box_holding_a_bool_is_refused(rgb_input):
    # was: (True, 0, 4, 4) taken as (1, 0, 4, 4)
    with pytest.raises(TypeError) as info:
        rgb_input.occluded((True, 0, 4, 4), "gray")
    _check_refusal(info.value, r"box \(True, 0, 4, 4\) holds a bool", "four whole numbers")


@pytest.mark.parametrize("value", [math.nan, math.inf], ids=["nan", "inf"])
def test_a_box_with_nan_or_inf_is_refused_saying_so(rgb_input, value):
    # was: Python's "cannot convert float NaN to integer" (ValueError) / OverflowError "cannot convert float
    # infinity to integer"
    with pytest.raises(ValueError) as info:
        rgb_input.occluded_display((0, value, 4, 4), "gray")
    _check_refusal(info.value, r"occluder box .* not a whole number", "four whole numbers")


@pytest.mark.parametrize("box", [(0, 0, 4), "abcd", 5, {0: 1, 1: 1, 2: 2, 3: 2}, ("1", "2", "3", "4")],
                         ids=["three", "str", "int", "dict", "strings"])
def test_a_box_that_is_not_four_numbers_is_refused_saying_what_is_accepted(rgb_input, box):
    # was: "not enough values to unpack (expected 4, got 3)", "'int' object is not iterable", and a dict's keys
    # or strings of digits taken as a box
    with pytest.raises((TypeError, ValueError)) as info:
        rgb_input.occluded(box, "gray")
    _check_refusal(info.value, "occluder box", r"four whole numbers \(x, y, w, h\)")


def test_an_empty_box_is_said_to_need_a_size(rgb_input):
    # was: "occluder box (3, 3, 0, 4) does not lie inside the 16x12 image"
    with pytest.raises(ValueError) as info:
        rgb_input.occluded((3, 3, 0, 4), "gray")
    _check_refusal(info.value, r"box \(3, 3, 0, 4\) needs a positive width and height", "four whole numbers")


def test_unknown_fills_are_refused_by_the_previews(rgb_input):
    # was: fill_color('pink') gave the noise's stand-in colour and fill_image('pink') "", and a list as fill
    # raised "unhashable type: 'list'"
    for call in (rgb_input.fill_color, rgb_input.fill_image, rgb_input.display_fill, rgb_input.fill_tensor):
        for fill in ("pink", ["gray"]):
            with pytest.raises(ValueError) as info:
                call(fill)
            _check_refusal(info.value, "unknown occluder fill", "accepted: gray, mean, black, blur, noise")


def test_the_display_is_in_c_order():
    # was: a transposed view of the default denormalize's permuted tensor, so that every occluded picture
    # (each move of the occluder) copied it pixel by pixel, about 40 times slower at 224x224
    image = ImageInput.prepare(_picture(np.random.default_rng(4)), default_preprocess((12, 16)), default_denormalize)
    assert image.display.flags.c_contiguous


# --------------------------------------------------------------------------- the default pre- and post-processing
@pytest.mark.parametrize("size, error", [((224,), TypeError), (224, TypeError), ((0, 8), ValueError),
                                         ((-3, 4), ValueError), ((2.5, 3), ValueError), (("a", "b"), TypeError),
                                         ((True, 8), TypeError), ("88", TypeError), ((8, math.nan), ValueError)],
                         ids=["one", "int", "zero", "negative", "fraction", "strings", "bool", "str", "nan"])
def test_default_preprocess_refuses_a_size_that_is_not_two_positive_whole_numbers(size, error):
    # was: IndexError "tuple index out of range", "'int' object is not subscriptable", PIL's "height and
    # width must be > 0" at the first image, and (2.5, 3) or (True, 8) taken as (2, 3) and (1, 8)
    with pytest.raises(error) as info:
        default_preprocess(size)(Image.new("RGB", (8, 8)))
    _check_refusal(info.value, "size", r"pair \(H, W\) of positive whole numbers")


@pytest.mark.parametrize("channels", [True, "3", 3.0, None], ids=["bool", "str", "float", "none"])
def test_default_preprocess_refuses_a_channel_count_that_is_no_int(channels):
    # was: True taken as one channel (a grayscale preprocessing for `channels=True`)
    with pytest.raises(TypeError) as info:
        default_preprocess((8, 8), channels)
    _check_refusal(info.value, "channels", r"an int, 1 \(grayscale\) or 3 \(RGB\)")


def test_default_preprocess_sizes_and_channels():
    rng = np.random.default_rng(21)
    for h, w in [(1, 1), (1, 13), (9, 1), (8, 8), (np.int64(5), 7.0)]:
        pil = _picture(rng)
        x = default_preprocess((h, w))(pil)
        assert x.shape == (3, int(h), int(w))
        expected = (_rgb(pil, int(h), int(w)) - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) \
            / torch.tensor(IMAGENET_STD).view(3, 1, 1)
        torch.testing.assert_close(x, expected)
        gray = default_preprocess((h, w), channels=1)(pil)
        luma = np.asarray(pil.convert("L").resize((int(w), int(h)), _BILINEAR), np.float32) / 255
        torch.testing.assert_close(gray, torch.from_numpy(luma)[None])


@pytest.mark.parametrize("given", [np.zeros((3, 4, 4), np.float32), [[0.0]], None], ids=["ndarray", "list", "none"])
def test_the_default_denormalize_refuses_anything_but_a_tensor(given):
    # was: AttributeError "'numpy.ndarray' object has no attribute 'dim'"
    for call in (default_denormalize, default_unnormalized):
        with pytest.raises(TypeError) as info:
            call(given)
        _check_refusal(info.value, "denormalize", r"torch\.Tensor \(C, H, W\)")


def test_outside_share_of_nothing_is_nothing():
    # was: NaN (the mean of no values)
    assert outside_share(torch.zeros(0)) == 0.0 and outside_share(np.zeros((0, 3))) == 0.0
    assert outside_share(torch.tensor([0.0, 1.0, 2.0, -1.0])) == 0.5


# --------------------------------------------------------------------------- the upload button's protocol
def _button(max_bytes: int | None = None):
    button = UploadButton() if max_bytes is None else UploadButton(max_bytes=max_bytes)
    sent, files, problems = [], [], []
    button.send = lambda content, buffers=None: sent.append(content)
    button.on_file(lambda name, data: files.append((name, data)))
    button.on_problem(problems.append)
    return button, sent, files, problems


def _pieces(rng: random.Random, data: bytes) -> list[tuple[int, bytes]]:
    cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(0, 4)))) if len(data) > 1 else []
    starts = [0, *cuts]
    ends = [*cuts, len(data)]
    return [(s, data[s:e]) for s, e in zip(starts, ends)]


def test_uploads_arrive_whole_once_or_are_reported():
    rng = random.Random("upload-protocol")
    button, sent, files, problems = _button(max_bytes=600)
    for upload_id in range(200):
        size = rng.choice([0, 1, 2, rng.randint(3, 599), 600, 601, rng.randint(602, 5000)])
        data = bytes(rng.getrandbits(8) for _ in range(size))
        name = rng.choice(["a.png", "ü ñ.jpg", "<b>.gif", "", None, 7, "a\nb", "x" * 300])
        shown_name = name if isinstance(name, str) and name else "the file"
        damage = rng.choice(["none"] * 6 + ["drop", "repeat", "size", "offset", "junk", "refused", "failed", "other"])
        before_files, before_problems = len(files), len(problems)
        pieces = _pieces(rng, data)
        if damage == "refused":
            button._handle_custom_msg({"kind": "refused", "id": upload_id, "name": name, "size": size}, [])
        elif damage == "failed":
            button._handle_custom_msg({"kind": "failed", "id": upload_id, "name": name, "message": "gone"}, [])
        else:
            if damage == "drop" and len(pieces) > 2:
                del pieces[rng.randrange(1, len(pieces) - 1)]
            elif damage == "repeat" and len(pieces) > 2:  # a piece sent twice (not the first: that restarts)
                i = rng.randrange(1, len(pieces) - 1)
                pieces.insert(i + 1, pieces[i])
            else:
                damage = {"drop": "none", "repeat": "none"}.get(damage, damage)
            for i, (offset, piece) in enumerate(pieces):
                message = {"kind": "piece", "id": upload_id, "name": name, "size": size, "offset": offset}
                if damage == "size" and i == len(pieces) - 1:
                    message["size"] = rng.choice([-1, 0.5, "12", None, True, math.inf])
                if damage == "offset" and i == len(pieces) - 1:
                    message["offset"] = rng.choice([-3, 1.5, "0", None, False])
                if damage == "junk":
                    button._handle_custom_msg(rng.choice([None, [], "piece", {"kind": "other"}, {"kind": 5},
                                                          {"kind": "piece", "id": "other-id"}]), [b"zz"])
                button._handle_custom_msg(message, [memoryview(piece)])
            if damage == "other":  # the pieces of another upload after the end: ignored or reported
                button._handle_custom_msg({"kind": "piece", "id": -upload_id - 1, "name": "o.png", "size": 9,
                                           "offset": 4}, [b"abcde"])
        new_files, new_problems = files[before_files:], problems[before_problems:]
        arrived = damage in ("none", "junk", "other") and size <= 600
        if arrived:
            assert new_files == [(shown_name, data)], (upload_id, damage, size)
        else:
            assert new_files == [], (upload_id, damage, size)
            assert new_problems, (upload_id, damage, size)
        for problem in new_problems:
            assert problem.strip() and "Traceback" not in problem
        if damage in ("none", "refused") and size > 600:
            assert any(re.search(r"files up to 0\.6 kB|files up to 0 kB|can be uploaded here", p) for p in new_problems)
            assert "600 B" not in "".join(new_problems)
        if damage == "none" and size <= 600:
            acks = [m for m in sent if isinstance(m, dict) and m.get("id") == upload_id]
            assert [m["kind"] for m in acks] == ["ack"] * len(pieces)
            assert acks[-1]["received"] == size


def test_a_broken_piece_of_another_upload_does_not_end_the_file_arriving():
    # was: the file arriving was dropped without a word (neither delivered nor reported) when a piece of
    # another upload without its size came in between
    button, sent, files, problems = _button()
    button._handle_custom_msg({"kind": "piece", "id": "a", "name": "a.png", "size": 6, "offset": 0}, [b"abc"])
    button._handle_custom_msg({"kind": "piece", "id": "b", "name": "b.png", "offset": 0}, [b"zz"])
    button._handle_custom_msg({"kind": "piece", "id": "a", "name": "a.png", "size": 6, "offset": 3}, [b"def"])
    assert files == [("a.png", b"abcdef")]
    assert len(problems) == 1 and problems[0].startswith("b.png arrived broken")
    assert {"kind": "stop", "id": "b"} in sent and {"kind": "stop", "id": "a"} not in sent


def test_the_upload_method_checks_what_it_is_given():
    button, _, files, problems = _button(max_bytes=10)
    for name, data in [("", b"x"), (None, b"x"), (3, b"x"), ("a", "text"), ("a", None), ("a", [1, 2])]:
        with pytest.raises(ValueError) as info:
            button.upload(name, data)
        _check_refusal(info.value, "uploaded file", "non-empty name|must be bytes")
    button.upload("a", bytearray(b"0123456789"))
    button.upload("b", memoryview(b"0123456789x"))
    assert files == [("a", b"0123456789")] and len(problems) == 1 and "b is" in problems[0]


# --------------------------------------------------------------------------- the picker
def test_the_picker_offers_every_upload_under_a_name_of_its_own():
    rng = random.Random("picker")
    samples = ["first", "x.png (uploaded)", "cat", "y (uploaded 2)"]
    picker = ImagePicker(samples)
    uploads: dict[str, bytes] = {}  # the model: entry -> bytes
    order: list[str] = []
    for step in range(300):
        op = rng.choice(["upload"] * 5 + ["again", "pick", "remove", "entry"])
        if op == "upload":
            name = rng.choice(["x.png", "y", "cat", "a b", "é", "x.png (uploaded)"])
            data = bytes([rng.randrange(4)])
            before = set(picker.names)
            entry = picker.add_upload(name, data)
            if entry not in uploads or uploads[entry] != data:
                assert entry not in before, f"{entry} took over an entry already offered"
                assert entry.startswith(name + " (uploaded")
                uploads[entry] = data
                order.append(entry)
            assert picker.value == entry == picker.dropdown.value
        elif op == "again" and uploads:
            entry = rng.choice(list(uploads))
            name = entry.rsplit(" (uploaded", 1)[0]
            assert picker.add_upload(name, uploads[entry]) == entry
        elif op == "pick":
            picker.value = rng.choice(picker.names)
        elif op == "remove":
            entry = rng.choice(picker.names)
            if entry == picker.value:
                with pytest.raises(ValueError, match="selected entry"):
                    picker.remove_entry(entry)
            else:
                picker.remove_entry(entry)
                uploads.pop(entry, None)
                if entry in samples:
                    samples.remove(entry)
        elif op == "entry":
            name = rng.choice(["new", "cat", "first"])
            picker.add_entry(name)
            if name not in samples:
                samples.append(name)
        # keep the model's view of the dropped uploads: only the last MAX_UPLOADS stay
        for entry in list(uploads):
            if entry not in picker.names:
                del uploads[entry]
        names = picker.names
        assert len(names) == len(set(names)), f"an entry is offered twice: {names}"
        assert picker.value in names and picker.dropdown.value == picker.value
        assert sum(picker.data_for(n) is not None for n in names) <= ImagePicker.MAX_UPLOADS
        for entry, data in uploads.items():
            assert picker.data_for(entry) == data
        for sample in samples:
            if sample in names and sample not in uploads:
                assert picker.data_for(sample) is None, f"sample {sample!r} was taken over by an upload"
    for name, data in [("", b"x"), (None, b"x"), ("a", "text")]:
        with pytest.raises(ValueError, match="uploaded file"):
            picker.add_upload(name, data)


def test_an_upload_named_like_a_sample_entry_gets_its_own_entry():
    # was: a file "x.png" uploaded next to a sample called "x.png (uploaded)" was offered twice under that
    # name, and picking it showed the sample
    picker = ImagePicker(["first", "x.png (uploaded)"])
    entry = picker.add_upload("x.png", b"data")
    assert entry == "x.png (uploaded 2)" and picker.names == ["first", "x.png (uploaded)", "x.png (uploaded 2)"]
    assert picker.data_for("x.png (uploaded)") is None and picker.data_for(entry) == b"data"


def test_a_file_uploaded_again_selects_its_numbered_entry():
    # was: a new entry "x.png (uploaded)" holding the same bytes as "x.png (uploaded 2)" once the first name
    # was free again (the search for the same file stopped at the first free name)
    picker = ImagePicker(["first", "x.png (uploaded)"])
    assert picker.add_upload("x.png", b"data") == "x.png (uploaded 2)"
    picker.value = "first"
    picker.remove_entry("x.png (uploaded)")
    assert picker.add_upload("x.png", b"data") == "x.png (uploaded 2)"
    assert picker.names == ["first", "x.png (uploaded 2)"] and picker.value == "x.png (uploaded 2)"
    assert picker.add_upload("x.png", b"other") == "x.png (uploaded)"


# --------------------------------------------------------------------------- uploads reaching the explorer
SIDE = 16


def _encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _png_header(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))


def _good_files(rng: np.random.Generator) -> list[tuple[str, bytes, np.ndarray]]:
    """``(format, bytes, the RGB picture PIL decodes)`` for images PIL converts to RGB plainly."""
    def rgb(h, w):
        return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    cases = []
    for fmt, ext in [("PNG", "png"), ("BMP", "bmp"), ("TIFF", "tif"), ("WEBP", "webp"), ("GIF", "gif"),
                     ("JPEG", "jpg")]:
        h, w = int(rng.integers(8, 30)), int(rng.integers(8, 30))
        options = {"lossless": True} if fmt == "WEBP" else {}
        cases.append((ext, _encoded(Image.fromarray(rgb(h, w)), fmt, **options)))
    cases.append(("wide.png", _encoded(Image.fromarray(rgb(8, 700)), "PNG")))  # a huge aspect ratio
    cases.append(("tall.png", _encoded(Image.fromarray(rgb(300, 9)), "PNG")))
    cases.append(("gray.png", _encoded(Image.fromarray(rgb(12, 14)[..., 0], "L"), "PNG")))
    cases.append(("bits.png", _encoded(Image.fromarray(rgb(12, 14)[..., 0] > 127), "PNG")))
    cases.append(("palette.png", _encoded(Image.fromarray(rgb(12, 14)).quantize(16), "PNG")))
    cases.append(("cmyk.jpg", _encoded(Image.fromarray(rgb(12, 14)).convert("CMYK"), "JPEG", quality=95)))
    frames = [Image.fromarray(rgb(12, 12)).quantize(32) for _ in range(3)]
    cases.append(("anim.gif", _encoded(frames[0], "GIF", save_all=True, append_images=frames[1:])))
    out = []
    for name, data in cases:
        with Image.open(io.BytesIO(data)) as opened:
            opened.seek(0)
            out.append((name, data, np.asarray(opened.convert("RGB"))))
    return out


def _bad_files(rng: np.random.Generator) -> list[tuple[str, bytes]]:
    png = _encoded(Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)), "PNG")
    return [
        ("empty.png", b""), ("notes.txt", b"a list: eggs, milk\n"), ("garbage.jpg", rng.bytes(300)),
        ("cut.png", png[: len(png) // 2]), ("one.png", _encoded(Image.new("RGB", (1, 1)), "PNG")),
        ("row.png", _encoded(Image.new("RGB", (40, 1)), "PNG")), ("bomb.png", _png_header(100000, 100000)),
        ("drawing.svg", b'<svg xmlns="http://www.w3.org/2000/svg" width="20" height="20"><rect width="9"/></svg>'),
        ("header.png", png[:8]), ("nul.bin", b"\x00" * 64),
    ]


def _send(button, name, data: bytes, upload_id, piece: int) -> None:
    """What the upload button's browser side sends for a file: pieces, each acknowledged."""
    starts = list(range(0, len(data), piece)) or [0]
    for start in starts:
        button._handle_custom_msg({"kind": "piece", "id": upload_id, "name": name, "size": len(data),
                                   "offset": start}, [memoryview(data[start:start + piece])])


def _gray_classifier() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten(), torch.nn.Linear(4, 5)).eval()


def _model_view(rgb: np.ndarray, channels: int) -> np.ndarray:
    """What the explorer shows of the RGB picture ``rgb`` with the default preprocessing: a bilinear
    resize, of the luma for a one-channel model (shown in R, G and B)."""
    picture = Image.fromarray(rgb)
    if channels == 1:
        return np.repeat(np.asarray(picture.convert("L").resize((SIDE, SIDE), _BILINEAR))[..., None], 3, axis=2)
    return np.asarray(picture.resize((SIDE, SIDE), _BILINEAR))


@pytest.mark.parametrize("channels", [3, 1], ids=["rgb-model", "gray-model"])
def test_uploads_of_every_kind_reach_the_explorer_and_bad_ones_leave_it_working(channels):
    rng = np.random.default_rng(404 + channels)
    draw = random.Random(f"explorer-uploads-{channels}")
    first = rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)
    model = small_classifier() if channels == 3 else _gray_classifier()
    ex = cnnwidgets.explore(model, None, input_size=(channels, SIDE, SIDE), background=False,
                            samples={"first": first, "shot.png (uploaded)": rng.integers(0, 256, (9, 9, 3), np.uint8)})
    try:
        ex.picker.upload.send = lambda *args, **kwargs: None  # no browser to answer
        good, bad = _good_files(rng), _bad_files(rng)
        cases = [("good", g) for g in good] + [("bad", b) for b in bad]
        draw.shuffle(cases)
        shown = _model_view(first, channels)
        np.testing.assert_array_equal(ex.input_image, shown)
        entry_shown = "first"
        names = ["shot.png", "ü ñ.{}", "<i>x</i>.{}", "a\tb.{}", "", None, "x" * 200 + ".{}", "..\\..\\{}"]
        for upload_id, (verdict, case) in enumerate(cases):
            name, data = case[0], case[1]
            file_name = draw.choice(names)
            file_name = file_name.format(name) if isinstance(file_name, str) and file_name else file_name
            said = file_name if isinstance(file_name, str) and file_name else "the file"
            _send(ex.picker.upload, file_name, data, upload_id, piece=draw.choice([1 << 20, 97, 1000]))
            names_offered = ex.picker.names
            assert len(names_offered) == len(set(names_offered)), names_offered
            if verdict == "good":
                assert not ex.status.is_error, (name, ex.status.message)
                assert ex.image == ex.picker.value and ex.image.startswith(f"{said} (uploaded")
                assert ex.picker.data_for(ex.image) == data
                expected = _model_view(case[2], channels)
                np.testing.assert_array_equal(ex.input_image, expected, err_msg=name)
                shown, entry_shown = expected, ex.image
            else:
                message = ex.status.message
                assert ex.status.is_error and message.startswith(f"{said} (uploaded"), (name, message)
                assert message.endswith("the image shown is unchanged") and "Traceback" not in message
                assert ex.image == entry_shown == ex.picker.value
                assert not any(n.startswith(f"{said} (uploaded") and ex.picker.data_for(n) == data
                               for n in names_offered), "a file that cannot be shown is offered"
                np.testing.assert_array_equal(ex.input_image, shown)
            # the explorer goes on: a box move is drawn on the image shown
            box = (upload_id % 8, (3 * upload_id) % 8, 8, 8)
            ex.box = box
            assert not ex.status.is_error and ex.shown_state.box == box, ex.status.message
            np.testing.assert_array_equal(ex.input_image, shown)
            assert np.isfinite(ex.scores["probs"]).all()
    finally:
        ex.close()


def test_a_file_too_large_for_the_button_is_said_in_the_status_line():
    ex = cnnwidgets.explore(small_classifier(), np.zeros((16, 16, 3), np.uint8), input_size=(3, SIDE, SIDE),
                            background=False, samples={})
    try:
        ex.picker.upload.send = lambda *args, **kwargs: None
        ex.picker.upload.max_bytes = 100
        before = ex.image
        _send(ex.picker.upload, "big.png", _encoded(Image.new("RGB", (30, 30), "red"), "PNG") + b"\x00" * 200, 1, 64)
        assert ex.status.is_error and re.match(r"big\.png is 0\.\d kB|big\.png is \d+ kB", ex.status.message)
        assert ex.image == before
        ex.box = (1, 1, 4, 4)
        assert not ex.status.is_error
    finally:
        ex.close()


def test_an_image_given_an_uploads_name_takes_that_entry_over():
    # was: set_image(img, name="a.png (uploaded)") showed img, but the picker kept the upload's bytes under that
    # entry: the same file uploaded again selected the entry and showed img, not the file
    red, blue = Image.new("RGB", (16, 16), "red"), np.zeros((16, 16, 3), np.uint8)
    blue[..., 2] = 255
    ex = cnnwidgets.explore(small_classifier(), np.zeros((16, 16, 3), np.uint8), input_size=(3, SIDE, SIDE),
                            background=False, samples={})
    try:
        data = _encoded(red, "PNG")
        entry = ex.picker.add_upload("a.png", data)
        assert ex.image == entry and ex.input_image[0, 0].tolist() == [255, 0, 0]
        ex.set_image(blue, name=entry)
        assert ex.image == entry and ex.input_image[0, 0].tolist() == [0, 0, 255]
        assert ex.picker.data_for(entry) is None
        again = ex.picker.add_upload("a.png", data)
        assert again != entry and ex.image == again and ex.input_image[0, 0].tolist() == [255, 0, 0]
        ex.image = entry
        assert ex.input_image[0, 0].tolist() == [0, 0, 255] and not ex.status.is_error
    finally:
        ex.close()


# --------------------------------------------------------------------------- the worker
class Recorder(NewestFirstWorker):
    """Jobs ``(number, seconds, fails)``: each sleeps, then records or raises."""

    def __init__(self, background: bool) -> None:
        self.served: list[int] = []
        self.stale: list[int] = []
        self.running = 0
        self.overlap = False
        self.errors: list[str] = []
        self._count = threading.Lock()
        super().__init__("fuzz-worker", background)

    def submit(self, job) -> None:
        with self._cond:
            self._replace(job)
        self._kick()

    def _serve(self, job, generation) -> None:
        number, seconds, fails = job
        with self._count:
            self.running += 1
            self.overlap |= self.running > 1
        try:
            time.sleep(seconds)
            if fails:
                raise RuntimeError(f"job {number} failed")
            if self._superseded(generation):
                self.stale.append(number)
            self.served.append(number)
        except RuntimeError as exc:
            self.errors.append(str(exc))  # reported, as the explorer's workers report theirs
        finally:
            with self._count:
                self.running -= 1

    def close(self, timeout: float = 2.0) -> None:
        self._stop(timeout)


@pytest.mark.parametrize("background", [True, False], ids=["thread", "synchronous"])
def test_the_worker_serves_the_newest_job_last_one_at_a_time(background):
    rng = random.Random(f"worker-{background}")
    for round_ in range(6):
        worker = Recorder(background)
        submitted: list[tuple] = []
        lock = threading.Lock()
        counter = iter(range(10**6))

        def submitter(seed):
            local = random.Random(seed)
            for _ in range(local.randint(3, 12)):
                with lock:
                    job = (next(counter), local.choice([0, 0, 0.001, 0.003]), local.random() < 0.15)
                    submitted.append(job)
                    worker.submit(job)  # under the lock: `submitted` is in the order the worker got them
                time.sleep(local.choice([0, 0, 0.001, 0.002]))

        threads = [threading.Thread(target=submitter, args=(rng.random(),)) for _ in range(rng.randint(1, 3))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert worker.wait_idle(10.0) and worker.idle
        assert not worker.overlap, "two jobs ran at once"
        numbers = [job[0] for job in submitted]
        last = submitted[-1]
        done = worker.served + [int(e.split()[1]) for e in worker.errors]
        assert last[0] in done, "the newest job was not run"
        assert max(done) == last[0] and worker.served == sorted(worker.served), "a job ran after a newer one"
        assert len(done) == len(set(done)) and set(done) <= set(numbers)
        expected_errors = [f"job {n} failed" for n, _, fails in submitted if fails and n in done]
        assert worker.errors == expected_errors  # errors reported, none swallowed
        if background:
            thread = worker._thread
            worker.close()
            assert thread is None or not thread.is_alive(), "the worker thread did not stop"
        else:
            worker.close()
        worker.submit((-1, 0, False))  # after close: dropped
        assert worker.wait_idle(1.0) and -1 not in worker.served


def test_closing_a_busy_worker_stops_its_thread_and_drops_the_waiting_job():
    worker = Recorder(background=True)
    worker.submit((1, 0.2, False))
    time.sleep(0.05)
    worker.submit((2, 0, False))  # waits behind job 1
    start = time.monotonic()
    thread = worker._thread
    worker.close(timeout=5.0)
    assert not thread.is_alive() and time.monotonic() - start < 2.0
    assert worker.served == [1] and worker.stale == [1]  # job 1 saw it was superseded; job 2 never ran


def test_an_exception_escaping_a_job_is_handed_to_excepthook_and_the_thread_goes_on(thread_errors):
    class Escapes(Recorder):
        def _serve(self, job, generation):
            if job[0] == 1:
                raise KeyError("escaped")
            super()._serve(job, generation)

    worker = Escapes(background=True)
    worker.submit((1, 0, False))
    assert worker.wait_idle(5.0)
    worker.submit((2, 0, False))
    assert worker.wait_idle(5.0) and worker.served == [2]
    assert any("KeyError" in seen and "escaped" in seen for seen in thread_errors)
    worker.close()


@pytest.mark.parametrize("background", [True, False], ids=["thread", "synchronous"])
def test_a_job_submitted_after_close_does_not_wait_for_ever(background):
    # was: the closed worker kept it as waiting: idle stayed False and wait_idle() waited its whole timeout
    worker = Recorder(background)
    worker.submit((1, 0, False))
    assert worker.wait_idle(5.0)
    worker.close()
    worker.submit((2, 0, False))
    start = time.monotonic()
    assert worker.wait_idle(2.0) and worker.idle and time.monotonic() - start < 1.0
    assert worker.served == [1]


def test_a_synchronous_worker_serves_a_job_submitted_by_another_thread_as_it_finishes():
    # was: a job submitted while the serving thread was between its last job and the end of its loop was
    # left waiting, unserved, for ever (the check of "someone serves already" was not under the lock)
    worker = Recorder(background=False)
    real_take = worker._take
    other_done = threading.Event()

    def take(block):
        taken = real_take(block)
        if taken is None and threading.current_thread() is threading.main_thread() and not other_done.is_set():
            thread = threading.Thread(target=lambda: (worker.submit((2, 0, False)), other_done.set()))
            thread.start()
            other_done.wait(0.5)  # the other thread submits now (or waits for the lock, where it is held)
        return taken

    worker._take = take
    worker.submit((1, 0, False))
    assert other_done.wait(5.0)
    assert worker.wait_idle(2.0), "the job submitted by the other thread was left waiting"
    assert worker.served == [1, 2]
