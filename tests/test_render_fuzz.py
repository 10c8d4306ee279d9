"""A seeded fuzz of the public render functions, and regression tests for what it found.

The functions are those :mod:`cnnwidgets.render` exports and those in the ``__all__`` of its modules
(``figures`` excepted): numpy arrays in, uint8 images and encoded bytes out. Every fuzzed call draws
its arguments from pools of valid and invalid values with fixed seeds, so the same calls run every
time: arrays of many dtypes (bool, ints, floats, and complex numbers, objects and strings, which are
no numbers), shapes (0-d, empty axes, 1x1, odd sizes, a cheap 1 x 100000, wrong numbers of axes or
channels), values (constant, NaN, +-inf, 1e38, denormals, negative, a float64 1e300 beyond float32),
non-contiguous, negative-stride and read-only views, nested lists, torch tensors (the render layer
does not import torch; the attribution module documents CPU tensors, which ``numpy.asarray`` takes
elsewhere too, so there either outcome is right; a tensor that requires grad is refused with a
TypeError), and options of the wrong type or range (unknown colormaps, negative sizes, bools and
strings where numbers are asked for, floats where ints are, alpha and quality out of range, boxes
outside the image).

Oracle of a call with only valid arguments: it returns what is documented (uint8 images of the
documented shape, C-contiguous, or the feature grid's documented RGB view of 4-byte pixels; bytes
that PIL decodes back to the documented size, PNG losslessly); it leaves the caller's arrays as they
were; it raises no numpy warning (every call runs with warnings as errors); and where it is simple
the result equals an independent computation written here (a colour is the table entry of the
documented quantisation, an integer upscale is ``np.repeat``, a tile of the feature grid is the
colour of its unit, an outline covers exactly the rectangle's edge ...). NaN and infinite values are
either refused or drawn as documented.

A call with an invalid argument must raise a TypeError or ValueError from the render package itself
(not a numpy, PIL or matplotlib error passed through, nor a warning, an IndexError or an
OverflowError) whose message names the argument or what was wrong with it.

The regression tests at the end pin each bug the fuzz found; a comment ``# was:`` says what the
call did before its fix.
"""

from __future__ import annotations

import io
import math
import os
import time
import traceback
import warnings
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from PIL import Image

from cnnwidgets import render as R
from cnnwidgets.render import attribution as A
from cnnwidgets.render import kernels as K
from cnnwidgets.render import occlusion as O
from cnnwidgets.render import overlay as OV
from cnnwidgets.render import resample as RS
from cnnwidgets.render.grid import BORDER_COLOR, DATA_MARK_COLOR, MARK_COLOR, NAN_COLOR
from tests.helpers import classified_call

RENDER_DIR = os.path.dirname(os.path.abspath(R.__file__))
DRAWS = 64  # random calls per fuzz test

# the colour tables are read from matplotlib on first use: read them here, outside the calls
for _name in R.colormap_names():
    R.get_lut(_name)
for _name in ("inferno", "RdBu_r", "magma", "viridis"):
    A.colormap_lut(_name)

# ---------------------------------------------------------------------------- the fuzz machinery


@dataclass
class Arg:
    """A drawn argument: its value, whether it is valid, and what an error about it must name."""

    value: object
    valid: bool | None = True  # None: either outcome is right (the function may take it or refuse it)
    keywords: tuple[str, ...] = ()
    label: str = ""

    def __repr__(self) -> str:
        return self.label or repr(self.value)[:60]


_CASE = {"valid": True, "invalid": 0}
OUTCOMES: list[str] = []


@pytest.fixture(autouse=True)
def _clear_outcomes():
    OUTCOMES.clear()


def new_case(rng: np.random.Generator) -> None:
    """Start a call: 40 % of calls draw only valid arguments; the others draw each argument invalid
    with its pool's probability until one is, further ones rarely (most refusals have one cause)."""
    _CASE["valid"] = bool(rng.random() < 0.4)
    _CASE["invalid"] = 0


def draw(rng: np.random.Generator, pool: list[Arg], p_invalid: float = 0.3) -> Arg:
    good = [a for a in pool if a.valid is not False]
    bad = [a for a in pool if a.valid is False]
    p = 0.0 if _CASE["valid"] else p_invalid if _CASE["invalid"] == 0 else 0.05
    source = bad if bad and (rng.random() < p or not good) else good
    chosen = source[int(rng.integers(len(source)))]
    _CASE["invalid"] += chosen.valid is False
    return chosen


def _arrays_in(value: object) -> list:
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return [value]
    if isinstance(value, (list, tuple)):
        return [a for v in value for a in _arrays_in(v)]
    return []


def _snapshot(values: dict) -> list:
    copies = []
    for array in _arrays_in(list(values.values())):
        if isinstance(array, torch.Tensor):
            copies.append((array, array.detach().clone()))
        else:
            copies.append((array, (array.copy(), array.flags.writeable, array.dtype)))
    return copies


def _assert_unchanged(copies: list, what: str) -> None:
    for array, before in copies:
        if isinstance(array, torch.Tensor):
            assert torch.equal(array.detach(), before) or bool(torch.isnan(before).any()), f"{what}: changed a tensor"
            continue
        data, writeable, dtype = before
        assert array.dtype == dtype and array.flags.writeable == writeable, f"{what}: changed an array's flags"
        if dtype.kind in "fc":
            assert np.array_equal(array, data, equal_nan=True), f"{what}: changed the caller's array"
        else:
            assert np.array_equal(array, data), f"{what}: changed the caller's array"


def check_error(exc: BaseException, keywords: list[str], what: str) -> None:
    """``exc`` is a clean refusal: a TypeError or ValueError raised in the render package, naming one of ``keywords``."""
    message = str(exc)
    frame = traceback.extract_tb(exc.__traceback__)[-1].filename
    assert isinstance(exc, (TypeError, ValueError)) and not isinstance(exc, Warning), (
        f"{what}: raw {type(exc).__name__}: {message}")
    assert frame.startswith(RENDER_DIR), f"{what}: {type(exc).__name__} raised outside the package at {frame}: {message}"
    lowered = message.lower()
    assert any(k.lower() in lowered for k in keywords), (
        f"{what}: the message names none of {keywords}: {type(exc).__name__}: {message}")


def run_case(what: str, args: dict[str, Arg], call, check, drawn_on: str = "") -> object:
    """Call ``call(**values)`` with numpy warnings as errors; valid arguments: it must return and
    ``check(result, values)`` holds; invalid ones: it must refuse cleanly, naming one of them. The
    caller's arrays must be unchanged either way (but ``drawn_on``, the argument drawn on in place)."""
    values = {k: a.value for k, a in args.items()}
    invalid = [a for a in args.values() if a.valid is False]
    maybe = [a for a in args.values() if a.valid is None]
    what = f"{what}({', '.join(f'{k}={a!r}' for k, a in args.items())})"
    copies = _snapshot({k: v for k, v in values.items() if k != drawn_on})
    keywords = [k for a in invalid + maybe for k in a.keywords]
    if invalid:
        what = f"{what} [invalid: {invalid}]"
    result = classified_call(call, values, refused_ok=bool(invalid or maybe), must_refuse=bool(invalid),
                             check=check, check_error=lambda exc: check_error(exc, keywords, what), what=what,
                             outcomes=OUTCOMES, warnings_action="error")
    _assert_unchanged(copies, what)
    return result


def pick(rng: np.random.Generator, options: list):
    """One of ``options`` (shapes, sizes), drawn independently of the call's kind."""
    return options[int(rng.integers(len(options)))]


def assert_both_outcomes() -> None:
    assert {"returned", "raised"} <= set(OUTCOMES), f"the draws gave only {set(OUTCOMES)}"


# ---------------------------------------------------------------------------- oracle helpers


def as_f64(value: object) -> np.ndarray:
    """The values a renderer sees (float32, as documented: a float64 beyond float32's range is an
    infinity there), in float64 for the oracle."""
    with np.errstate(over="ignore"):
        return np.asarray(value).astype(np.float32).astype(np.float64)


def assert_image(out: object, shape: tuple[int, ...], *, view_ok: bool = False) -> None:
    """A uint8 array of ``shape``, C-contiguous (``view_ok``: or the RGB view of 4-byte pixels the
    feature grid documents)."""
    assert isinstance(out, np.ndarray), type(out)
    assert out.dtype == np.uint8, out.dtype
    assert out.shape == tuple(shape), (out.shape, shape)
    if view_ok and not out.flags.c_contiguous:
        assert out.strides == (4 * out.shape[1], 4, 1), out.strides
    else:
        assert out.flags.c_contiguous, "not contiguous"


def index_window(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The table indices ``round(255 * clip(t, 0, 1))``, both neighbours at a near tie (float32 rounding)."""
    with np.errstate(invalid="ignore"):
        x = np.nan_to_num(np.clip(t, 0.0, 1.0), nan=0.0) * 255.0 + 0.5
    return np.floor(x - 1e-3).clip(0, 255).astype(np.intp), np.floor(x + 1e-3).clip(0, 255).astype(np.intp)


def assert_indices(index: np.ndarray, t: np.ndarray, what: str = "index") -> None:
    low, high = index_window(t)
    bad = (index < low) | (index > high)
    assert not bad.any(), f"{what}: {index[bad][:5]} where {low[bad][:5]}..{high[bad][:5]} is right"


def assert_colours(out: np.ndarray, t: np.ndarray, lut: np.ndarray, special: np.ndarray | None = None,
                   special_rgb=None) -> None:
    """``out[..., :]`` is ``lut[round(255 * clip(t, 0, 1))]`` (either neighbour at a near tie), and
    ``special_rgb`` where ``special``."""
    low, high = index_window(t)
    ok = (out == lut[low]).all(-1) | (out == lut[high]).all(-1)
    if special is not None:
        ok = np.where(special, (out == np.asarray(special_rgb, np.uint8)).all(-1), ok)
    assert ok.all(), f"{int((~ok).sum())} of {ok.size} pixels have the wrong colour, e.g. {out[~ok][:3]}"


def ranges_oracle(v: np.ndarray, mode: str, fixed=None) -> tuple[np.ndarray, np.ndarray]:
    """The documented display ranges of a (C, H, W) stack (float64 of float32 values)."""
    c = v.shape[0]
    if mode == "fixed":
        lo, hi = fixed
        return (np.broadcast_to(as_f64(lo), (c,)).copy(), np.broadcast_to(as_f64(hi), (c,)).copy())
    finite = np.isfinite(v)
    if mode == "layer":
        if not finite.any():
            return np.zeros(c), np.zeros(c)
        return np.full(c, v[finite].min()), np.full(c, v[finite].max())
    lo, hi = np.zeros(c), np.zeros(c)
    for k in range(c):
        if finite[k].any():
            lo[k], hi[k] = v[k][finite[k]].min(), v[k][finite[k]].max()
    return lo, hi


def level_oracle(v: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """``(v - lo) / (hi - lo)`` per channel (C, H, W), 0 in empty ranges; NaN stays NaN."""
    lo, hi = lo[:, None, None], hi[:, None, None]
    span = hi - lo
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        t = (v - lo) / np.where(span > 0, span, 1.0)
    return np.where(span > 0, t, 0.0)


def decode(data: bytes) -> Image.Image:
    assert isinstance(data, bytes) and data
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


# ---------------------------------------------------------------------------- argument pools


def readonly(array: np.ndarray) -> np.ndarray:
    copy = array.copy()
    copy.setflags(write=False)
    return copy


def strided(array: np.ndarray) -> np.ndarray:
    """The same values as a non-contiguous view (every second column of a wider array)."""
    if array.ndim == 0:
        return array.copy()
    wide = np.zeros((*array.shape[:-1], 2 * array.shape[-1]), dtype=array.dtype)
    wide[..., ::2] = array
    return wide[..., ::2]


def reversed_view(array: np.ndarray) -> np.ndarray:
    """A negative-stride view holding ``array``'s values."""
    if array.ndim == 0:
        return array.copy()
    return np.ascontiguousarray(array[..., ::-1])[..., ::-1]


def layouts_of(base: np.ndarray, label: str, *, tensor: bool | None = None) -> list[Arg]:
    """``base`` as it may come: itself, read-only, non-contiguous, reversed strides, a nested list,
    and (``tensor`` not False) a CPU tensor, valid or either outcome (``tensor=None``)."""
    pool = [Arg(base, label=label), Arg(readonly(base), label=f"read-only {label}"),
            Arg(strided(base), label=f"strided {label}"), Arg(reversed_view(base), label=f"negative-stride {label}"),
            Arg(base.tolist(), label=f"list {label}")]
    if tensor is not False:
        pool.append(Arg(torch.from_numpy(base.copy()), tensor, ("tensor", "cannot convert"), f"tensor {label}"))
    return pool


NOT_NUMBERS = ("real numbers", "cannot convert")


def not_numbers(shape: tuple[int, ...], words: tuple[str, ...] = NOT_NUMBERS) -> list[Arg]:
    """Arrays of the right shape that hold no real numbers, and a tensor numpy cannot take."""
    return [
        Arg(np.full(shape, 0.5 + 1j), False, words, "complex"),
        Arg(np.full(shape, None, dtype=object), False, words, "objects (None)"),
        Arg(np.full(shape, "0.5"), False, words, "strings '0.5'"),
        Arg(torch.ones(shape, requires_grad=True), False, words + ("grad",), "tensor requiring grad"),
    ]


def float_values(rng: np.random.Generator, shape: tuple[int, ...], label: str) -> list[Arg]:
    """Float arrays of ``shape`` with every kind of value, each in one layout, and dtypes."""
    uniform = rng.uniform(-2, 3, shape).astype(np.float32)
    special = uniform.copy().reshape(-1)
    special[:: 3] = np.nan
    special[1:: 5] = np.inf
    special[2:: 7] = -np.inf
    special = special.reshape(shape)
    huge = (rng.choice([-1.0, 1.0], shape) * 1e38 * rng.uniform(0.5, 3, shape)).astype(np.float32)
    tiny = (rng.integers(0, 8, shape) * 1e-45).astype(np.float32)  # denormals
    offset = (2817.794 + rng.uniform(0, 0.004, shape)).astype(np.float32)  # narrow, far from zero
    beyond = rng.uniform(-1, 1, shape) * 1e300
    pool = layouts_of(uniform, f"{label} float32", tensor=None)
    pool += [
        Arg(uniform.astype(np.float64), label=f"{label} float64"),
        Arg(uniform.astype(np.float16), label=f"{label} float16"),
        Arg(np.round(uniform * 40).astype(np.int16), label=f"{label} int16"),
        Arg(np.round(uniform * 40).astype(np.int64), label=f"{label} int64"),
        Arg(np.abs(np.round(uniform * 40)).astype(np.uint8), label=f"{label} uint8"),
        Arg(uniform > 0.5, label=f"{label} bool"),
        Arg(np.full(shape, 0.25, np.float32), label=f"{label} constant"),
        Arg(special, label=f"{label} NaN/inf"),
        Arg(huge, label=f"{label} +-1e38"),
        Arg(tiny, label=f"{label} denormals"),
        Arg(offset, label=f"{label} 2817.794 + 0..0.004"),
        Arg(-np.abs(uniform), label=f"{label} negative"),
        Arg(beyond, label=f"{label} float64 +-1e300"),
    ]
    return pool


def int_pool(name: str, good: list, *, low: int, none_ok: bool = False) -> list[Arg]:
    words = (name,)
    pool = [Arg(v, label=repr(v)) for v in good] + [
        Arg(low - 1, False, words), Arg(float(max(low, 2)), False, words, f"{float(max(low, 2))}"),
        Arg(2.5, False, words), Arg(True, False, words), Arg(str(max(low, 2)), False, words),
    ]
    pool.append(Arg(None, none_ok, words))
    return pool


def bool_pool(name: str, *, none_ok: bool = False) -> list[Arg]:
    words = (name,)
    return [Arg(True), Arg(False), Arg(np.bool_(True), label="np.True_"), Arg(None, none_ok, words),
            Arg("no", False, words), Arg(1, False, words), Arg(0.0, False, words)]


def unit_pool(name: str = "alpha") -> list[Arg]:
    """A number in [0, 1]."""
    words = (name,)
    return [Arg(0.0), Arg(0.6), Arg(1.0), Arg(np.float32(0.25), label="np.float32(0.25)"), Arg(1, label="1"),
            Arg(1.5, False, words), Arg(-0.1, False, words), Arg(float("nan"), False, words),
            Arg(float("inf"), False, words), Arg("0.5", False, words), Arg(None, False, words),
            Arg(True, False, words), Arg(np.array([0.1, 0.2]), False, words, "array")]


def cmap_pool(names: list[str], words: tuple[str, ...] = ("colormap", "cmap")) -> list[Arg]:
    return [Arg(n) for n in names] + [
        Arg("jet2", False, words), Arg("", False, words), Arg(None, False, words), Arg(3, False, words),
        Arg(["viridis"], False, words, "['viridis']"), Arg("VIRIDIS", False, words)]


def colour_pool(name: str) -> list[Arg]:
    words = (name,)
    return [Arg((1, 2, 3)), Arg([255, 0, 128], label="[255, 0, 128]"),
            Arg(np.array([0, 9, 200], np.uint8), label="uint8 array"),
            Arg((0, 0, 300), False, words), Arg((-1, 0, 0), False, words), Arg((0.5, 0, 0), False, words),
            Arg((0, 0), False, words), Arg("red", False, words), Arg(None, False, words), Arg(7, False, words),
            Arg({1, 2, 3}, False, words, "set")]


def size_pool(name: str, good: list[tuple[int, int]]) -> list[Arg]:
    words = (name, "pair")
    return [Arg(g) for g in good] + [
        Arg(list(good[0]), label=f"list {list(good[0])}"), Arg(np.array(good[0]), label="int array"),
        Arg((-1, 4), False, words), Arg((0, 4), False, words), Arg((2.0, 4), False, words),
        Arg((True, 4), False, words), Arg(5, False, words), Arg("ab", False, words),
        Arg({3, 4}, False, words, "set {3, 4}"), Arg((3, 4, 5, 6), False, words),
        Arg(np.array(3), False, words, "0-d array"),
    ]


# ---------------------------------------------------------------------------- colormaps


def test_fuzz_colormap_tables_and_strips():
    rng = np.random.default_rng(101)
    names = R.colormap_names()
    assert names == [*R.SEQUENTIAL, *R.DIVERGING]
    for _ in range(DRAWS):
        new_case(rng)
        name = draw(rng, cmap_pool(names), 0.4)

        def check_lut(lut, values):
            assert lut.shape == (256, 3) and lut.dtype == np.uint8 and not lut.flags.writeable
            if values["name"] == "gray":
                assert (lut == np.arange(256)[:, None]).all()

        run_case("get_lut", {"name": name}, R.get_lut, check_lut)
        width = draw(rng, int_pool("width", [1, 2, 7, np.int64(64), 100000], low=1), 0.3)
        height = draw(rng, int_pool("height", [1, 3, np.int32(8)], low=1), 0.3)

        def check_strip(strip, values):
            w, h = int(values["width"]), int(values["height"])
            assert_image(strip, (h, w, 3))
            lut = R.get_lut(values["name"])
            columns = np.rint(np.linspace(0, 255, w)).astype(int) if w > 1 else np.zeros(1, int)
            assert (strip == lut[columns][None]).all()

        run_case("colormap_strip", {"name": name, "width": width, "height": height}, R.colormap_strip, check_strip)
    assert_both_outcomes()


def test_fuzz_apply_colormap():
    rng = np.random.default_rng(102)
    for i in range(DRAWS * 2):
        new_case(rng)
        shape = pick(rng, [(), (1,), (7,), (3, 5), (2, 3, 4), (1, 100000), (0, 3)])
        values = draw(rng, float_values(rng, shape, str(shape)) + not_numbers(shape), 0.3)
        name = draw(rng, cmap_pool(R.colormap_names()), 0.2)
        nan_color = draw(rng, colour_pool("nan_color"), 0.2)

        def check(out, v):
            t = as_f64(v["values"])
            nan_rgb = np.asarray(v["nan_color"], np.uint8)
            assert_image(out, t.shape + (3,))
            assert_colours(out, t, R.get_lut(v["name"]), np.isnan(t), nan_rgb)

        run_case("apply_colormap", {"values": values, "name": name, "nan_color": nan_color},
                 lambda values, name, nan_color: R.apply_colormap(values, name, nan_color=nan_color), check)
    assert_both_outcomes()


def range_pool(rng: np.random.Generator, c: int, name: str) -> list[Arg]:
    words = (name,)
    return [Arg(0.0), Arg(1), Arg(-2.5), Arg(np.float32(0.5), label="np.float32(0.5)"),
            Arg(rng.uniform(-1, 1, c).astype(np.float32), label=f"({c},) float32"),
            Arg([0.5] * c, label=f"list of {c}"),
            Arg(np.full(c, 2817.794, np.float32), label="2817.794"), Arg(np.zeros(c), label=f"zeros({c})"),
            Arg(float("nan"), False, words + ("finite",)), Arg(float("inf"), False, words + ("finite",)),
            Arg(1e39, False, words + ("float32",)), Arg("0.5", False, words), Arg(None, False, words),
            Arg(0.5 + 1j, False, words), Arg(np.zeros(c + 1), False, words + ("shape",), f"zeros({c + 1})"),
            Arg(np.zeros((c, 1)), False, words + ("shape",), f"zeros({c}, 1)")]


def test_fuzz_quantize_colorize_normalize():
    rng = np.random.default_rng(103)
    for i in range(DRAWS * 2):
        new_case(rng)
        shape = pick(rng, [(3, 4, 5), (1, 1, 1), (2, 1, 100000), (4, 7, 3), (1, 3, 3)])
        c = shape[0]
        bad_shapes = [Arg(np.zeros((4, 5), np.float32), False, ("(c, h, w)", "shape"), "(4, 5)"),
                      Arg(np.zeros((1, 2, 4, 5)), False, ("(c, h, w)", "shape"), "4-D"),
                      Arg(np.float32(1), False, ("(c, h, w)", "shape"), "0-d")]
        values = draw(rng, float_values(rng, shape, str(shape)) + not_numbers(shape) + bad_shapes, 0.3)
        # a range from the values themselves, often: what the views pass
        lo, hi = draw(rng, range_pool(rng, c, "lo"), 0.15), draw(rng, range_pool(rng, c, "hi"), 0.15)
        if values.valid and rng.random() < 0.5:
            low, high = R.value_ranges(values.value, ["channel", "layer"][i % 2])
            lo, hi = Arg(low, label="value_ranges lo"), Arg(high, label="value_ranges hi")
        if lo.valid and hi.valid:
            low, high = np.broadcast_to(as_f64(lo.value), (c,)), np.broadcast_to(as_f64(hi.value), (c,))
            if (low > high).any():  # a reversed range is refused, naming lo and hi
                hi = Arg(hi.value, False, ("lo must be <= hi",), f"{hi!r} (below lo)")
        name = draw(rng, cmap_pool(R.colormap_names()), 0.1)
        nan_color = draw(rng, colour_pool("nan_color"), 0.1)
        kind = ["quantize", "colorize", "normalize"][i % 3]

        def check(out, v):
            x = as_f64(v["values"])
            low, high = np.broadcast_to(as_f64(v["lo"]), (c,)), np.broadcast_to(as_f64(v["hi"]), (c,))
            t = level_oracle(x, low, high)
            empty = np.broadcast_to((high <= low)[:, None, None], x.shape)
            if kind == "normalize":
                assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == x.shape
                want = np.where(empty, 0.0, np.clip(t, 0, 1))
                assert np.array_equal(np.isnan(out), np.isnan(want)), "NaN where the formula has none (or not)"
                assert np.allclose(out, want, atol=2e-6, equal_nan=True)
                return
            index_t = np.where(np.isnan(x) & ~empty, 0.0, t)  # NaN: index 0 (colorize: nan_color)
            if kind == "quantize":
                assert out.dtype == np.uint8 and out.shape == x.shape
                assert_indices(out.astype(int), index_t)
            else:
                assert_image(out, x.shape + (3,))
                assert_colours(out, index_t, R.get_lut(v["name"]), np.isnan(x), np.asarray(v["nan_color"], np.uint8))

        args = {"values": values, "lo": lo, "hi": hi}
        if kind == "quantize":
            run_case("quantize", args, R.quantize, check)
        elif kind == "normalize":
            run_case("normalize", args, lambda values, lo, hi: R.normalize(values, lo, hi), check)
        else:
            args.update(name=name, nan_color=nan_color)
            run_case("colorize", args, lambda values, lo, hi, name, nan_color:
                     R.colorize(values, lo, hi, name, nan_color=nan_color), check)
    assert_both_outcomes()


# ---------------------------------------------------------------------------- normalize: ranges and statistics


def stack_pool(rng: np.random.Generator, shape: tuple[int, int, int]) -> list[Arg]:
    words = ("(c, h, w)", "activation stack")
    return float_values(rng, shape, str(shape)) + not_numbers(shape) + [
        Arg(np.zeros((0, 2, 2), np.float32), False, ("no channels",), "(0, 2, 2)"),
        Arg(np.zeros((2, 0, 2), np.float32), False, ("empty maps",), "(2, 0, 2)"),
        Arg(np.zeros((2, 2, 0), np.float32), False, ("empty maps",), "(2, 2, 0)"),
        Arg(np.zeros((4, 5), np.float32), False, words, "(4, 5)"),
        Arg(np.zeros((1, 2, 3, 4), np.float32), False, words, "4-D"),
        Arg(np.float64(3.0), False, words, "0-d"),
    ]


def test_fuzz_value_ranges_and_statistics():
    rng = np.random.default_rng(104)
    for i in range(DRAWS * 2):
        new_case(rng)
        shape = pick(rng, [(3, 4, 5), (1, 1, 1), (2, 1, 100000), (5, 3, 3)])
        c = shape[0]
        acts = draw(rng, stack_pool(rng, shape), 0.3)
        kind = ["value_ranges", "symmetric_ranges", "channel_stats", "dead_channel_mask", "activation_order"][i % 5]

        if kind == "value_ranges":
            mode_fixed = draw(rng, [
                Arg(("channel", None), label="channel"), Arg(("layer", None), label="layer"),
                Arg(("fixed", (0.0, 1.0)), label="fixed (0, 1)"),
                Arg(("fixed", (np.zeros(c), np.arange(c) + 0.5)), label="fixed per channel"),
                Arg(("fixed", None), False, ("fixed",), "fixed without a range"),
                Arg(("fixed", (1.0, 0.0)), False, ("lo must be <= ",), "fixed reversed"),
                Arg(("fixed", (0.0, float("nan"))), False, ("finite",), "fixed NaN"),
                Arg(("fixed", {0.0, 1.0}), False, ("fixed",), "fixed set"),
                Arg(("fixed", (0.0, 1.0, 2.0)), False, ("fixed",), "fixed of 3"),
                Arg(("fixed", 1.0), False, ("fixed",), "fixed 1.0"),
                Arg(("channels", None), False, ("mode",), "mode 'channels'"),
                Arg((3, None), False, ("mode",), "mode 3"),
            ], 0.3)

            def check(result, v):
                lo, hi = result
                mode, fixed = v["mode_fixed"]
                assert lo.dtype == hi.dtype == np.float32 and lo.shape == hi.shape == (c,)
                want_lo, want_hi = ranges_oracle(as_f64(v["acts"]), mode, fixed)
                assert np.array_equal(lo, want_lo) and np.array_equal(hi, want_hi), (lo, want_lo, hi, want_hi)

            run_case("value_ranges", {"acts": acts, "mode_fixed": mode_fixed},
                     lambda acts, mode_fixed: R.value_ranges(acts, mode_fixed[0], fixed=mode_fixed[1]), check)
        elif kind == "symmetric_ranges":
            mode = draw(rng, [Arg("channel"), Arg("layer"), Arg("fixed", False, ("mode",)),
                              Arg(None, False, ("mode",))], 0.2)

            def check(result, v):
                lo, hi = result
                x = np.abs(as_f64(v["acts"]))
                mag = np.array([row[np.isfinite(row)].max(initial=0.0) for row in x.reshape(c, -1)])
                if v["mode"] == "layer":
                    mag = np.full(c, mag.max())
                assert np.array_equal(hi, mag) and np.array_equal(lo, -mag)

            run_case("symmetric_ranges", {"acts": acts, "mode": mode}, lambda acts, mode: R.symmetric_ranges(acts, mode), check)
        elif kind == "channel_stats":
            channel = draw(rng, [Arg(0), Arg(c - 1), Arg(np.int64(0), label="np.int64(0)"),
                                 Arg(c, False, ("channel",)), Arg(-1, False, ("channel",)),
                                 Arg(0.0, False, ("channel",)), Arg("0", False, ("channel",))], 0.3)

            def check(result, v):
                stats, text = result
                x = as_f64(v["acts"]).reshape(c, -1)
                for field in ("mean", "std", "min", "max", "active"):
                    assert getattr(stats, field).shape == (c,)
                finite = np.isfinite(x).all(axis=1)
                assert np.array_equal(stats.min, x.min(axis=1), equal_nan=True)
                assert np.array_equal(stats.max, x.max(axis=1), equal_nan=True)
                assert np.allclose(stats.active, (x > 0).mean(axis=1))
                # float32 statistics: a few float32 steps of the values' magnitude off (a narrow channel far
                # from zero, 2817.794 + 0..0.004, has its std 1 % off), and rounded to float32's denormals
                # below its normal range (1.2e-38)
                size = np.abs(x[finite]).max(axis=1, initial=0.0)
                error = np.abs(stats.mean[finite] - x[finite].mean(axis=1))
                assert (error <= 1e-5 * np.abs(x[finite].mean(axis=1)) + 1e-6 * size + 1.2e-38).all()
                error = np.abs(stats.std[finite] - x[finite].std(axis=1))
                assert (error <= 1e-3 * x[finite].std(axis=1) + 1e-6 * size + 1.2e-38).all()
                assert np.isfinite(stats.mean[finite]).all()
                assert text.startswith(f"channel {int(v['channel'])}\n")
                assert stats.as_array().shape == (c, 5)

            run_case("channel_stats", {"acts": acts, "channel": channel},
                     lambda acts, channel: (lambda s: (s, s.describe(channel)))(R.channel_stats(acts)), check)
        elif kind == "dead_channel_mask":
            threshold = draw(rng, [Arg(0.0), Arg(0.5), Arg(-1), Arg(np.float32(2.0), label="np.float32(2)"),
                                   Arg(float("nan"), False, ("threshold",)), Arg("0", False, ("threshold",)),
                                   Arg(None, False, ("threshold",)),
                                   Arg(np.zeros(2), False, ("threshold",), "array")], 0.3)

            def check(mask, v):
                x = as_f64(v["acts"]).reshape(c, -1)
                assert mask.dtype == bool and mask.shape == (c,)
                assert np.array_equal(mask, x.max(axis=1) <= float(v["threshold"]))

            run_case("dead_channel_mask", {"acts": acts, "threshold": threshold}, R.dead_channel_mask, check)
        else:
            key = draw(rng, [Arg("mean"), Arg("max"), Arg("min", False, ("key",)), Arg(0, False, ("key",))], 0.2)

            def check(order, v):
                x = as_f64(v["acts"]).reshape(c, -1)
                assert order.dtype == np.int64 and sorted(order.tolist()) == list(range(c))
                with np.errstate(invalid="ignore"):
                    score = x.mean(axis=1) if v["key"] == "mean" else x.max(axis=1)
                ranked = score[order].tolist()
                known = [s for s in ranked if not math.isnan(s)]
                assert ranked[: len(known)] == known, "a NaN score before a number"
                # float32 means: equal to a float32 step (denormals: to float32's smallest steps)
                assert all(a >= b or math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-37) for a, b in zip(known, known[1:])), ranked

            run_case("activation_order", {"acts": acts, "key": key}, R.activation_order, check)
    assert_both_outcomes()


# ---------------------------------------------------------------------------- grid: layouts, mosaics, the feature grid


def test_fuzz_grid_layout_geometry():
    rng = np.random.default_rng(105)
    for _ in range(DRAWS):
        new_case(rng)
        count = draw(rng, int_pool("count", [1, 5, 12, np.int64(64), 300], low=1), 0.15)
        mh = draw(rng, int_pool("map_height", [1, 3, 7, 56], low=1), 0.1)
        mw = draw(rng, int_pool("map_width", [1, 4, 9, 100000], low=1), 0.1)
        max_w = draw(rng, int_pool("max_width", [1, 60, 720], low=1), 0.1)
        max_h = draw(rng, int_pool("max_height", [1, 40, 480], low=1), 0.1)
        border = draw(rng, int_pool("border", [0, 1, 3], low=0), 0.1)
        max_scale = draw(rng, int_pool("max_scale", [1, 8], low=1), 0.1)
        n = int(count.value) if count.valid else 5
        order = draw(rng, [Arg(None), Arg(list(range(n))[::-1], label="reversed"),
                           Arg(np.arange(n), label="arange"),
                           Arg([0.5] * n, False, ("order",), "floats"), Arg("ab", False, ("order",), "'ab'"),
                           Arg(n, False, ("order",), "an int"),
                           Arg([0] * (n + 1), False, ("order",), "duplicates")], 0.15)

        def check(layout, v):
            n, h, w = int(v["count"]), int(v["map_height"]), int(v["map_width"])
            assert layout.rows * layout.cols >= n > (layout.rows - 1) * layout.cols
            assert 1 <= layout.scale <= int(v["max_scale"]) and (layout.scale == 1 or layout.shrink == 1)
            assert layout.tile_height == -(-h // layout.shrink) * layout.scale
            assert layout.width == layout.cols * layout.tile_width + (layout.cols + 1) * int(v["border"])
            if layout.width > int(v["max_width"]) or layout.height > int(v["max_height"]):
                assert layout.tile_width == layout.tile_height == 1, "too large, with tiles that could shrink"
            elif layout.shrink > 2:  # the smallest reduction that fits: one less does not
                less = R.GridLayout(count=n, rows=layout.rows, cols=layout.cols, map_height=h, map_width=w,
                                    shrink=layout.shrink - 1, border=layout.border)
                assert less.width > int(v["max_width"]) or less.height > int(v["max_height"])
            want = list(range(n)) if v["order"] is None else [int(k) for k in v["order"]]
            assert list(layout.order) == want
            # every tile's centre maps back to its channel, a unit of its map, and the border to nothing
            for channel in list(range(n))[:: max(1, n // 7)]:
                x, y, tw, th = layout.tile_rect(channel)
                assert layout.channel_at(x + tw / 2, y + th / 2) == channel
                ch, row, col = layout.map_position(x + tw - 1, y + th - 1)
                assert ch == channel and 0 <= row < h and 0 <= col < w
            assert layout.channel_at(-1, 0) is None and layout.channel_at(layout.width, 0) is None
            if layout.border:
                assert layout.channel_at(0, 0) is None
            d = layout.to_dict()
            assert (d["width"], d["height"], d["count"]) == (layout.width, layout.height, n)

        run_case("grid_layout", {"count": count, "map_height": mh, "map_width": mw, "max_width": max_w,
                                 "max_height": max_h, "border": border, "max_scale": max_scale, "order": order},
                 R.grid_layout, check)
        layout = R.grid_layout(4, 3, 3)
        where = draw(rng, [Arg(3.5), Arg(np.float32(7), label="np.float32(7)"), Arg(-1e9), Arg(10**6),
                           Arg(float("nan"), False, ("x",)), Arg(float("inf"), False, ("x",)),
                           Arg("1", False, ("x",)), Arg(None, False, ("x",))], 0.3)

        def check_at(channel, v):
            assert channel is None or channel in range(4)

        run_case("GridLayout.channel_at", {"x": where}, lambda x: layout.channel_at(x, 2), check_at)
    assert_both_outcomes()


def test_fuzz_grid_layout_fields_are_checked():
    rng = np.random.default_rng(106)
    fields = {"count": 2, "rows": 1, "cols": 2, "map_height": 3, "map_width": 3}
    for _ in range(DRAWS // 2):
        new_case(rng)
        args = {name: draw(rng, int_pool(name, [value], low=1), 0.2) for name, value in fields.items()}
        args["border"] = draw(rng, int_pool("border", [0, 1], low=0), 0.2)

        def check(layout, v):
            assert layout.rows * layout.cols >= layout.count and layout.width >= 1

        run_case("GridLayout", args, lambda **v: R.GridLayout(**v), check)
    assert_both_outcomes()


def grid_colours_oracle(img: np.ndarray, layout, acts: np.ndarray, lo: np.ndarray, hi: np.ndarray, lut: np.ndarray,
                        nan_rgb, skip: set[int]) -> None:
    """Every unit of every unmarked tile has its documented colour (an unshrunk layout)."""
    x64 = as_f64(acts)
    t = level_oracle(x64, lo, hi)
    nonfinite = ~np.isfinite(x64)
    s = layout.scale
    for channel in layout.order:
        if channel in skip:
            continue
        x, y, _, _ = layout.tile_rect(channel)
        drawn = img[y : y + layout.map_height * s : s, x : x + layout.map_width * s : s]
        assert_colours(drawn, t[channel], lut, nonfinite[channel], nan_rgb)


def test_fuzz_feature_grid_and_painter():
    rng = np.random.default_rng(107)
    for i in range(DRAWS * 2):
        new_case(rng)
        shape = pick(rng, [(3, 4, 5), (1, 1, 1), (2, 1, 100000), (6, 7, 3), (5, 2, 2)])
        c, h, w = shape
        acts = draw(rng, stack_pool(rng, shape), 0.25)
        mode_fixed = draw(rng, [
            Arg(("channel", None), label="channel"), Arg(("layer", None), label="layer"),
            Arg(("fixed", (-1.0, 2.0)), label="fixed (-1, 2)"), Arg(("fixed", (0.5, 0.5)), label="fixed empty"),
            Arg(("fixed", (2.0, 1.0)), False, ("lo must be <=",), "fixed reversed"),
            Arg(("fixed", None), False, ("fixed",), "fixed missing"), Arg(("sideways", None), False, ("mode",), "mode"),
        ], 0.15)
        cmap = draw(rng, cmap_pool(R.colormap_names()), 0.1)
        page = sorted(rng.choice(c, size=max(1, c // 2), replace=False).tolist())
        order = draw(rng, [Arg(None), Arg(list(range(c))[::-1], label="reversed"),
                           Arg(np.array(page), label=f"page {page}"),
                           Arg([0.5] * c, False, ("order",), "floats"), Arg("ab", False, ("order",), "'ab'"),
                           Arg(c, False, ("order",), "an int"), Arg([c], False, ("order",), "out of range"),
                           Arg([0, 0], False, ("order",), "duplicates")], 0.15)
        marked = draw(rng, [Arg(None), Arg(np.arange(c) % 2 == 0, label="even"),
                            Arg(np.ones(c, np.int64), label="ints"),
                            Arg(np.ones(c + 1, bool), False, ("marked",), f"({c + 1},)")], 0.1)
        nan_color = draw(rng, colour_pool("nan_color"), 0.1)
        border = draw(rng, int_pool("border", [0, 1, 2], low=0), 0.1)
        max_width = draw(rng, int_pool("max_width", [64, 720], low=1), 0.1)
        shrink_mode = draw(rng, [Arg("mean"), Arg("stride"), Arg("median", False, ("shrink_mode",)),
                                 Arg(None, False, ("shrink_mode",))], 0.1)
        if i % 4 == 3:  # a layout given: the right one, or one that does not fit the stack
            layout = draw(rng, [Arg(R.grid_layout(c, h, w, max_width=100, max_height=80), label="its layout"),
                                Arg(R.grid_layout(c + 1, h, w), False, ("layout",), "a layout of C+1"),
                                Arg("grid", False, ("layout",), "'grid'")], 0.2)
            order = Arg(None)
            # documented as passed to grid_layout, which does not run: ignored (either outcome is right)
            border, max_width = (Arg(a.value, a.valid or None, a.keywords, repr(a)) for a in (border, max_width))
        else:
            layout = Arg(None)

        def check(result, v):
            img, lay = result
            assert_image(img, (lay.height, lay.width, 3), view_ok=True)
            mode, fixed = v["mode_fixed"]
            x64 = as_f64(v["acts"])
            lo, hi = ranges_oracle(x64, mode, fixed)
            lut = R.get_lut(v["cmap"])
            nan_rgb = np.asarray(v["nan_color"], np.uint8)
            if lay.shrink == 1:
                skip = set() if v["marked"] is None else set(np.flatnonzero(np.asarray(v["marked"], bool)).tolist())
                grid_colours_oracle(img, lay, v["acts"], lo, hi, lut, nan_rgb, skip)
            else:  # shrunk: every pixel still has a colour of the table, a border, a mark or nan_color
                palette = np.concatenate([lut, [BORDER_COLOR, MARK_COLOR, DATA_MARK_COLOR, nan_rgb]]).astype(np.uint8)
                codes = palette[:, 0].astype(np.int64) << 16 | palette[:, 1].astype(np.int64) << 8 | palette[:, 2]
                pixels = img.reshape(-1, 3).astype(np.int64)
                assert np.isin(pixels[:, 0] << 16 | pixels[:, 1] << 8 | pixels[:, 2], codes).all()
            if lay.border:
                assert tuple(img[0, 0]) == BORDER_COLOR

        run_case("feature_grid", {"acts": acts, "mode_fixed": mode_fixed, "cmap": cmap, "order": order,
                                  "marked": marked, "nan_color": nan_color, "border": border,
                                  "max_width": max_width, "shrink_mode": shrink_mode, "layout": layout},
                 lambda acts, mode_fixed, **kw: R.feature_grid(acts, mode=mode_fixed[0], fixed=mode_fixed[1], **kw),
                 check)
        lay = R.grid_layout(c, h, w, max_width=120, max_height=90)
        if i % 3 == 0 and lay.shrink == 1:  # the painter on its own: fixed ranges, maps per frame
            lo = draw(rng, range_pool(rng, c, "lo"), 0.15)
            hi = Arg(np.full(c, 3000.0), label="3000.0")
            maps = draw(rng, float_values(rng, shape, str(shape)) + not_numbers(shape) + [
                Arg(np.zeros((c + 1, h, w)), False, ("maps", "shape"), "C+1 maps")], 0.2)

            def check_painter(img, v):
                assert_image(img, (lay.height, lay.width, 3), view_ok=True)
                if lay.shrink == 1:
                    low = np.broadcast_to(as_f64(v["lo"]), (c,))
                    grid_colours_oracle(img, lay, v["maps"], low, np.full(c, 3000.0), R.get_lut("magma"), NAN_COLOR, set())

            run_case("GridPainter", {"lo": lo, "hi": hi, "maps": maps},
                     lambda lo, hi, maps: R.GridPainter(lay, lo, hi, "magma")(maps), check_painter)
    assert_both_outcomes()


def test_fuzz_mosaic():
    rng = np.random.default_rng(108)
    for i in range(DRAWS):
        new_case(rng)
        c = pick(rng, [1, 3, 7])
        layout = R.grid_layout(c, 3, 4, max_width=60, max_height=50, order=list(range(c))[::-1])
        th, tw = layout.tile_height, layout.tile_width
        tiles_ok = rng.integers(0, 256, (c, th, tw, 3), dtype=np.uint8)
        tiles = draw(rng, layouts_of(tiles_ok, "tiles", tensor=False) + [
            Arg(tiles_ok.astype(np.float32), False, ("tiles", "uint8"), "float tiles"),
            Arg(tiles_ok[:, :-1], False, ("tiles",), "short tiles"),
            Arg(tiles_ok[..., :2], False, ("tiles",), "2 colours")], 0.2)
        if isinstance(tiles.value, list):  # a nested list of ints is int64, not uint8
            tiles = Arg(tiles.value, False, ("tiles", "uint8"), "list of tiles")
        lay = draw(rng, [Arg(layout, label="layout"), Arg(None, False, ("layout",)),
                         Arg(layout.to_dict(), False, ("layout",), "dict")], 0.15)
        marked = draw(rng, [Arg(None), Arg(np.eye(c, dtype=bool)[0], label="first"),
                            Arg(np.ones(c + 2, bool), False, ("marked",), "C+2")], 0.1)
        border_color = draw(rng, colour_pool("border_color"), 0.1)

        def check(img, v):
            assert_image(img, (layout.height, layout.width, 3))
            data = np.asarray(v["tiles"])
            marks = set() if v["marked"] is None else set(np.flatnonzero(v["marked"]).tolist())
            for channel in range(c):
                x, y, _, _ = layout.tile_rect(channel)
                if channel not in marks:
                    assert (img[y : y + th, x : x + tw] == data[channel]).all()
            if layout.border:
                assert (img[0, 0] == np.asarray(v["border_color"], np.uint8)).all()

        run_case("mosaic", {"tiles": tiles, "layout": lay, "marked": marked, "border_color": border_color},
                 R.mosaic, check)
    assert_both_outcomes()


# ---------------------------------------------------------------------------- resample


def test_fuzz_upscale_downscale():
    rng = np.random.default_rng(109)
    for i in range(DRAWS * 2):
        new_case(rng)
        shape = pick(rng, [(3, 4), (2, 5, 3), (1, 1), (1, 100000), (2, 3, 7)])
        image = draw(rng, float_values(rng, shape, str(shape)) + [
            Arg(np.zeros(4), False, ("(h, w)", "map"), "1-D"),
            Arg(np.float32(1), False, ("(h, w)", "map"), "0-d")], 0.2)
        factor = draw(rng, int_pool("factor", [1, 2, 3, np.int64(2)], low=1), 0.25)
        if i % 2 == 0:
            color = draw(rng, [Arg(None), Arg(False), Arg("yes", False, ("color",)), Arg(1, False, ("color",))], 0.1)
            if color.valid and color.value is None and np.shape(image.value)[2:] in ((3,), (4,)):
                color = Arg(None, False, ("say which",), "color=None of an (H, W, 3|4) array")

            def check(out, v):
                x = np.asarray(v["image"])
                f = int(v["factor"])
                assert out.dtype == x.dtype
                want = np.repeat(np.repeat(x, f, axis=-2), f, axis=-1)
                assert np.array_equal(out, want, equal_nan=x.dtype.kind == "f")

            run_case("upscale", {"image": image, "factor": factor, "color": color}, R.upscale, check)
        else:
            if image.valid and not isinstance(image.value, (torch.Tensor, list)) and rng.random() < 0.2:
                image = Arg(np.full(np.shape(image.value), 0.5 + 1j), False, NOT_NUMBERS, "complex")

            def check(out, v):
                x = as_f64(v["image"])
                f = int(v["factor"])
                h, w = x.shape[-2:]
                assert out.dtype == np.float32 and out.shape == (*x.shape[:-2], -(-h // f), -(-w // f))
                want = np.empty(out.shape)
                with np.errstate(invalid="ignore", over="ignore"):
                    for r in range(out.shape[-2]):
                        for col in range(min(out.shape[-1], 20)):
                            want[..., r, col] = x[..., r * f : (r + 1) * f, col * f : (col + 1) * f].mean(axis=(-2, -1))
                got, want = out[..., : min(out.shape[-1], 20)], as_f64(want[..., : min(out.shape[-1], 20)])
                size = np.abs(x[np.isfinite(x)]).max(initial=0.0)  # float32 sums: a few steps of the magnitude
                assert np.allclose(got, want, rtol=1e-5, atol=1e-6 * size + 1e-38, equal_nan=True), (got, want)

            run_case("downscale", {"image": image, "factor": factor}, lambda image, factor: R.downscale(image, factor), check)
    assert_both_outcomes()


def test_fuzz_resize_and_map_to_input():
    rng = np.random.default_rng(110)
    for i in range(DRAWS * 2):
        new_case(rng)
        shape = pick(rng, [(3, 4), (2, 5, 3), (1, 1), (1, 1000), (4, 6)])
        image = draw(rng, float_values(rng, shape, str(shape)) + not_numbers(shape) + [
            Arg(np.zeros((0, 3)), False, ("row", "column"), "(0, 3)"), Arg(np.zeros(5), False, ("map",), "1-D")], 0.2)
        k = int(rng.integers(1, 4))
        h, w = shape[-2:]
        size = draw(rng, size_pool("size", [(h * k, w * k), (h, w), (5, 2), (1, 100000)]), 0.2)
        mode = draw(rng, [Arg("nearest"), Arg("bilinear"), Arg("cubic", False, ("mode",)),
                          Arg(None, False, ("mode",))], 0.15)

        def check_resize(out, v):
            x = np.asarray(v["image"])
            size = tuple(int(s) for s in v["size"])
            assert out.shape == (*x.shape[:-2], *size)
            nearest = v["mode"] == "nearest"
            assert out.dtype == (x.dtype if nearest else np.float32)
            ref = x if nearest else as_f64(x)
            if size[0] % h == 0 and size[1] % w == 0 and (nearest or size == (h, w)):
                f, g = size[0] // h, size[1] // w  # whole multiples: pixel blocks (bilinear: only the identity)
                want = np.repeat(np.repeat(ref, f, axis=-2), g, axis=-1)
                assert np.array_equal(out, want.astype(out.dtype), equal_nan=out.dtype.kind == "f")
            if not nearest and np.isfinite(ref).all() and ref.size:
                low, high = ref.min(), ref.max()
                assert low - 1e-3 * abs(low) <= np.nanmin(out) and np.nanmax(out) <= high + 1e-3 * abs(high)

        run_case("resize", {"image": image, "size": size, "mode": mode},
                 lambda image, size, mode: R.resize(image, size, mode, color=False), check_resize)
        geometry = draw(rng, [Arg((None, None), label="stretch"), Arg((2.0, 0.5), label="jump 2, start 0.5"),
                              Arg((np.float32(4), np.int64(-3)), label="np numbers"),
                              Arg((1e-310, 1e308), label="denormal jump"),
                              Arg((0.0, 0.5), False, ("jump",), "jump 0"),
                              Arg((float("nan"), 0.5), False, ("jump",), "jump NaN"),
                              Arg((2.0, None), False, ("jump", "start"), "start missing"),
                              Arg((True, 0.5), False, ("jump",), "jump True"),
                              Arg((2.0, "1"), False, ("start",), "start '1'")], 0.2)
        input_size = draw(rng, size_pool("input_size", [(8, 9), (1, 1)]) + [Arg((3, 8, 9), label="(C, H, W)")], 0.15)
        fmap = image if image.valid is False or np.ndim(image.value) in (2, 3) else Arg(np.zeros((2, 2)))

        def check_map(out, v):
            size = tuple(int(s) for s in v["input_size"])[-2:]
            x = as_f64(v["fmap"])
            assert out.dtype == np.float32 and out.shape == (*x.shape[:-2], *size)
            if np.isfinite(x).all():
                assert np.isfinite(out).all()
                assert x.min() - 1e-3 * abs(x.min()) <= out.min() and out.max() <= x.max() + 1e-3 * abs(x.max())
            if v["jump"] is None:
                with np.errstate(over="ignore"):  # a float64 1e300 is float32's inf
                    want = R.resize(v["fmap"], size, v["mode"], color=False).astype(np.float32)
                assert np.array_equal(out, want, equal_nan=True)

        jump = Arg(geometry.value[0], geometry.valid, geometry.keywords, repr(geometry))
        run_case("map_to_input", {"fmap": fmap, "input_size": input_size, "jump": jump, "start": Arg(geometry.value[1]),
                                  "mode": mode},
                 lambda fmap, input_size, **kw: R.map_to_input(fmap, input_size, **kw), check_map)
    assert_both_outcomes()


# ---------------------------------------------------------------------------- overlay


def picture_pool(rng: np.random.Generator, h: int, w: int, *, floats: bool) -> list[Arg]:
    """(H, W, 3) pictures: uint8 in many layouts; floats in [0, 1] valid where ``floats``."""
    base = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    words = ("image", "picture", "uint8", "(h, w, 3)")
    pool = layouts_of(base, f"uint8 ({h}, {w}, 3)", tensor=False)
    # (3, H, W) of a picture 3 wide is (3, H, 3): a picture too
    pool += [Arg(base[..., 0], False, words, "(H, W)"),
             Arg(base.transpose(2, 0, 1), None if w == 3 else False, words, "(3, H, W)"),
             Arg(base.astype(np.int16), False, words, "int16"),
             Arg(np.zeros((h, w, 4), np.uint8), False, words, "RGBA"),
             Arg(np.full((h, w, 3), 0.5 + 0j), False, words, "complex")]
    if isinstance(pool[4].value, list):  # a nested list of 0..255 ints is int64: refused, with the conversion to use
        pool[4] = Arg(pool[4].value, False, words, "list of ints")
    floats_ok = rng.random((h, w, 3))
    nan = floats_ok.copy()
    nan[0, 0, 0] = np.nan
    pool += [Arg(floats_ok, floats or False, words, "float [0, 1]"),
             Arg(floats_ok.astype(np.float32), floats or False, words, "float32 [0, 1]"),
             Arg(floats_ok * 255, False, words + ("[0, 1]",), "float 0..255"),
             Arg(nan, False, words + ("nan",), "float with NaN"),
             Arg(np.full((h, w, 3), np.nan), False, words + ("nan",), "all NaN"),
             Arg(np.zeros((0, w, 3), np.uint8), False, words + ("pixels",), "no rows")]
    return pool


def test_fuzz_blend_draw_rect_hstack_resize_image():
    rng = np.random.default_rng(111)
    for i in range(DRAWS * 2):
        new_case(rng)
        h, w = pick(rng, [(8, 9), (1, 1), (1, 1000), (5, 3)])
        kind = ["blend", "draw_rect", "hstack", "resize_image"][i % 4]
        image = draw(rng, picture_pool(rng, h, w, floats=False), 0.25)
        if "no rows" in repr(image):  # a uint8 (0, W, 3) is an image here, with nothing to blend or draw on
            image = Arg(image.value, None, image.keywords + ("row",), repr(image))
        if kind == "blend":
            color = Arg(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), label="colour")
            alpha = draw(rng, unit_pool() + [Arg(rng.random((h, w)), label="(H, W) alpha"),
                                              Arg(np.zeros((h + 1, w)), False, ("alpha",), "alpha (H+1, W)"),
                                              Arg(np.full((h, w), np.nan), False, ("alpha",), "NaN alpha map")], 0.3)
            if isinstance(alpha.value, np.ndarray) and alpha.value.shape == (2,):
                alpha = Arg(alpha.value, False, ("alpha",), "alpha (2,)")

            def check(out, v):
                img = np.asarray(v["image"]).astype(float)
                a = np.asarray(v["alpha"], float)
                a = a[..., None] if a.ndim == 2 else a
                want = (1 - a) * img + a * np.asarray(v["color"], float)
                assert_image(out, img.shape)
                assert np.abs(out - want).max() <= 1.0

            run_case("blend", {"image": image, "color": color, "alpha": alpha}, R.blend, check)
        elif kind == "draw_rect":
            rect = draw(rng, [Arg((1, 1, 3, 2)), Arg((-5, -5, 8, 8), label="over the top left"),
                              Arg((w - 1, h - 1, 50, 50), label="over the bottom right"),
                              Arg((100, 100, 5, 5), label="outside"),
                              Arg((2, 2, -3, 4), label="negative width"), Arg((0.7, 1.9, 4.2, 3.99), label="floats"),
                              Arg(np.array([0, 0, w, h]), label="whole image"),
                              Arg((0, 0, 1e300, 2), label="1e300 wide"),
                              Arg((1, 1, 3), False, ("rect",)), Arg((1, 1, float("nan"), 2), False, ("rect",)),
                              Arg((1, 1, "3", 2), False, ("rect",)), Arg((True, 0, 2, 2), False, ("rect",)),
                              Arg(None, False, ("rect",)), Arg("1123", False, ("rect",))], 0.25)
            width = draw(rng, int_pool("width", [1, 2, 10**6], low=1), 0.2)
            color = draw(rng, colour_pool("color"), 0.15)
            copy = draw(rng, bool_pool("copy"), 0.15)
            if copy.valid and copy.value is False and image.valid and not (
                    isinstance(image.value, np.ndarray) and image.value.flags.writeable):
                copy = Arg(False, False, ("read-only",), "copy=False of a read-only image")
            if copy.valid and copy.value is False and isinstance(image.value, np.ndarray):
                image = Arg(image.value.copy(), image.valid, image.keywords, f"{image!r} (a copy drawn on)")

            def check(out, v):
                img = np.asarray(v["image"])
                assert_image(out, img.shape) if v["copy"] else None
                h, w = img.shape[:2]
                x, y, rw, rh = (int(float(s)) for s in v["rect"])
                t = int(v["width"])
                x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + rw, w), min(y + rh, h)
                inside = np.zeros((h, w), bool)
                inner = np.zeros((h, w), bool)
                if x0 < x1 and y0 < y1:
                    inside[y0:y1, x0:x1] = True
                    inner[y0 + t : y1 - t, x0 + t : x1 - t] = True
                edge = inside & ~inner
                assert (out[edge] == np.asarray(v["color"], np.uint8)).all()
                if v["copy"]:
                    assert (out[~edge] == img[~edge]).all()
                else:
                    assert out is v["image"]

            run_case("draw_rect", {"image": image, "rect": rect, "color": color, "width": width, "copy": copy},
                     R.draw_rect, check, drawn_on="image" if copy.value is False else "")
        elif kind == "hstack":
            other = rng.integers(0, 256, (h + 2, 3, 3), dtype=np.uint8)
            images = draw(rng, [Arg([image.value, other], image.valid, image.keywords, f"[{image!r}, taller]"),
                                Arg((other, image.value), image.valid, image.keywords, f"({image!r},) tuple"),
                                Arg(iter([image.value]), image.valid, image.keywords, "an iterator"),
                                Arg([], False, ("at least one",)), Arg(None, False, ("images",)),
                                Arg(other, False, ("images", "[image]"), "one array")], 0.2)
            gap = draw(rng, int_pool("gap", [0, 4], low=0), 0.2)
            background = draw(rng, colour_pool("background"), 0.15)

            def check(out, v):
                gap = int(v["gap"])
                parts = [np.asarray(im) for im in ([image.value, other] if "taller" in repr(images)
                                                   else (other, image.value) if "tuple" in repr(images) else [image.value])]
                assert_image(out, (max(p.shape[0] for p in parts), sum(p.shape[1] for p in parts) + gap * (len(parts) - 1), 3))
                x = 0
                for p in parts:
                    assert (out[: p.shape[0], x : x + p.shape[1]] == p).all()
                    assert (out[p.shape[0] :, x : x + p.shape[1]] == np.asarray(v["background"], np.uint8)).all()
                    x += p.shape[1] + gap

            run_case("hstack", {"images": images, "gap": gap, "background": background}, R.hstack, check)
        else:
            k = int(rng.integers(1, 4))
            size = draw(rng, size_pool("size", [(h * k, w * k), (3, 2)]), 0.2)
            mode = draw(rng, [Arg("nearest"), Arg("bilinear"), Arg("box", False, ("mode",))], 0.15)

            def check(out, v):
                img = np.asarray(v["image"])
                size = tuple(int(s) for s in v["size"])
                assert_image(out, (*size, 3))
                f, g = size[0] // img.shape[0], size[1] // img.shape[1]
                if (f * img.shape[0], g * img.shape[1]) == size and (v["mode"] == "nearest" or f == g == 1):
                    assert np.array_equal(out, np.repeat(np.repeat(img, f, axis=0), g, axis=1))

            run_case("resize_image", {"image": image, "size": size, "mode": mode}, R.resize_image, check)
    assert_both_outcomes()


def heat_pool(rng: np.random.Generator, h: int, w: int) -> list[Arg]:
    heat = rng.random((h, w))
    nan = heat.copy()
    nan[0, 0] = np.nan
    words = ("heat",)
    return layouts_of(heat.astype(np.float32), f"heat ({h}, {w})", tensor=None) + [
        Arg(heat > 0.5, label="bool heat"), Arg(np.zeros((1, 1)), label="(1, 1) heat"),
        Arg(np.ones((2, 1000)), label="(2, 1000)"),
        Arg(nan, False, words + ("nan",), "NaN heat"), Arg(heat * 3, False, words + ("[0, 1]",), "heat up to 3"),
        Arg(np.full((h, w), np.inf), False, words + ("infinite",), "inf heat"),
        Arg(np.zeros((0, 3)), False, words + ("row",), "(0, 3)"),
        Arg(np.zeros((2, h, w)), False, words + ("(h, w)",), "3-D heat")] + not_numbers((h, w))


def test_fuzz_channel_image_and_overlay_heatmap():
    rng = np.random.default_rng(112)
    for i in range(DRAWS * 2):
        new_case(rng)
        h, w = pick(rng, [(8, 9), (1, 1), (5, 3), (12, 4)])
        heat = draw(rng, heat_pool(rng, 3, 4), 0.25)
        cmap = draw(rng, cmap_pool(R.colormap_names()), 0.1)
        mode = draw(rng, [Arg("nearest"), Arg("bilinear"), Arg("area", False, ("mode",))], 0.1)
        geometry = draw(rng, [Arg((None, None), label="stretch"), Arg((2.0, 0.5), label="jump 2, start 0.5"),
                              Arg((float("inf"), 0.5), False, ("jump",), "jump inf"),
                              Arg((None, 0.5), False, ("jump", "start"), "jump missing")], 0.15)
        jump = Arg(geometry.value[0], geometry.valid, geometry.keywords, repr(geometry))
        start = Arg(geometry.value[1])
        if i % 2 == 0:
            size = draw(rng, size_pool("size", [(h, w), (3, 4)]), 0.2)
            # a map in [0, 1] is expected; like apply_colormap, channel_image clips others and draws NaN black
            values = draw(rng, float_values(rng, (3, 4), "(3, 4)") + not_numbers((3, 4)) + [
                Arg(np.zeros((2, 3, 4)), False, ("(h, w)", "map"), "3-D"),
                Arg(np.zeros((0, 4)), False, ("row",), "(0, 4)")], 0.25)

            def check(out, v):
                size = tuple(int(s) for s in v["size"])
                assert_image(out, (*size, 3))
                x = as_f64(v["values"])
                if size == x.shape and v["jump"] is None:  # the map at its own size: a colour per unit
                    assert_colours(out, x, R.get_lut(v["cmap"]), np.isnan(x), (0, 0, 0))

            run_case("channel_image", {"values": values, "size": size, "cmap": cmap, "mode": mode, "jump": jump,
                                       "start": start},
                     lambda values, size, **kw: R.channel_image(values, size, **kw), check)
        else:
            image = draw(rng, picture_pool(rng, h, w, floats=True), 0.2)
            alpha = draw(rng, unit_pool(), 0.2)
            weight = draw(rng, bool_pool("weight_by_value"), 0.1)

            def check(out, v):
                picture = np.asarray(v["image"])
                assert_image(out, picture.shape)
                if picture.dtype == np.uint8 and float(v["alpha"]) == 0:
                    assert np.array_equal(out, picture)

            run_case("overlay_heatmap", {"image": image, "heat": heat, "cmap": cmap, "alpha": alpha, "weight_by_value": weight,
                                         "jump": jump, "start": start, "mode": mode},
                     lambda image, heat, **kw: R.overlay_heatmap(image, heat, **kw), check)
    assert_both_outcomes()


def test_fuzz_desaturate():
    rng = np.random.default_rng(113)
    for i in range(DRAWS):
        new_case(rng)
        h, w = pick(rng, [(8, 9), (1, 1), (1, 1000)])
        image = draw(rng, picture_pool(rng, h, w, floats=False), 0.3)
        if "no rows" in repr(image):  # an image without pixels has no pixel to turn gray: (0, W, 3) back
            image = Arg(image.value, None, image.keywords, repr(image))

        def check(out, v):
            img = np.asarray(v["image"]).astype(float)
            assert_image(out, img.shape)
            gray = img @ np.array([0.299, 0.587, 0.114])
            assert np.abs(out[..., 0] - gray).max(initial=0.0) <= 0.51 and (out == out[..., :1]).all()

        run_case("desaturate", {"image": image}, OV.desaturate, check)
    assert_both_outcomes()


# ---------------------------------------------------------------------------- encode


def test_fuzz_encoders():
    rng = np.random.default_rng(114)
    for i in range(DRAWS * 2):
        new_case(rng)
        shape = pick(rng, [(8, 9, 3), (1, 1, 3), (5, 7), (1, 100000, 3), (6, 4, 4), (3, 70000)])
        base = rng.integers(0, 256, shape, dtype=np.uint8)
        words = ("image", "uint8", "shape")
        image = draw(rng, layouts_of(base, f"uint8 {shape}", tensor=None) + [
            Arg(base.astype(np.float32), False, words, "float32"), Arg(base.astype(bool), False, words, "bool"),
            Arg(np.zeros((0, 4, 3), np.uint8), False, ("empty", "pixels"), "(0, 4, 3)"),
            Arg(np.zeros((4, 4, 2), np.uint8), False, words, "2 channels"),
            Arg(np.zeros(5, np.uint8), False, words, "1-D"),
            Arg(np.uint8(3), False, words, "0-d")], 0.25)
        if isinstance(image.value, list):
            image = Arg(image.value, False, words, "list of ints (int64)")
        kind = ["jpeg", "png", "image"][i % 3]
        if kind == "jpeg":
            quality = draw(rng, int_pool("quality", [1, 10, 90, 95, np.int64(50)], low=1) + [Arg(96, False, ("quality",))], 0.2)
            subsampling = draw(rng, bool_pool("subsampling"), 0.15)
            if image.valid is not False and np.ndim(image.value) == 3 and np.shape(image.value)[2] == 4:
                image = Arg(image.value, False, ("alpha",), f"{image!r} (RGBA)")
            if image.valid is not False and max(np.shape(image.value)[:2]) > 65500:
                image = Arg(image.value, False, ("65500", "png"), f"{image!r} (too wide for JPEG)")

            def check(data, v):
                img = np.asarray(v["image"])
                decoded = decode(data)
                assert decoded.format == "JPEG" and decoded.size == (img.shape[1], img.shape[0])
                assert decoded.mode == ("L" if img.ndim == 2 else "RGB")

            run_case("encode_jpeg", {"image": image, "quality": quality, "subsampling": subsampling},
                     lambda image, quality, subsampling: R.encode_jpeg(image, quality, subsampling=subsampling), check)
            # a constant picture comes back nearly constant
            if i % 12 == 0:
                flat = np.full((9, 13, 3), int(rng.integers(0, 256)), np.uint8)
                back = np.asarray(decode(R.encode_jpeg(flat, 50)), dtype=int)
                assert np.abs(back - flat).max() <= 4
        else:
            level = draw(rng, int_pool("compress_level", [0, 1, 9], low=0) + [Arg(10, False, ("compress_level",))], 0.2)
            fmt = draw(rng, [Arg("png"), Arg("jpeg", None, ("alpha", "65500")), Arg("gif", False, ("format",)),
                             Arg(None, False, ("format",)), Arg("PNG", False, ("format",))], 0.2)

            def check(data, v):
                img = np.asarray(v["image"])
                decoded = decode(data)
                assert decoded.size == (img.shape[1], img.shape[0])
                if kind == "png" or v["fmt"] == "png":
                    assert decoded.format == "PNG" and np.array_equal(np.asarray(decoded), img)
                else:
                    assert decoded.format == "JPEG"

            if kind == "png":
                run_case("encode_png", {"image": image, "compress_level": level}, R.encode_png, check)
            else:
                run_case("encode_image", {"image": image, "fmt": fmt}, R.encode_image, check)
    assert_both_outcomes()


# ---------------------------------------------------------------------------- attribution


def attribution_pool(rng: np.random.Generator, shape: tuple[int, ...]) -> list[Arg]:
    """Attributions: signed floats in many forms (CPU tensors are documented), and what is refused."""
    base = rng.standard_normal(shape).astype(np.float32)
    special = base.copy().reshape(-1)
    special[0] = np.nan
    special = special.reshape(shape)
    words = ("attribution", "finite", "shape")
    pool = layouts_of(base, f"{shape}", tensor=True) + [
        Arg(base.astype(np.float64), label="float64"), Arg(np.zeros(shape), label="zeros"),
        Arg(np.round(base * 5).astype(np.int32), label="int32"), Arg(base > 0, label="bool"),
        Arg((base * 1e37).astype(np.float32), label="+-1e37"),
        Arg((np.sign(base) * 1e-44).astype(np.float32), label="denormals"),
        Arg(base[None], label="batch of one"),
        Arg(special, False, words + ("nan",), "NaN"),
        Arg(base.astype(np.float64) * 1e300, False, words + ("float32",), "+-1e300"),
        Arg(np.stack([base, base]), len(shape) == 2, ("batch",), "batch of two" if len(shape) == 3 else "two channels"),
        Arg(np.zeros((0, 3)), False, words, "(0, 3)"), Arg(np.zeros(5), False, words, "1-D"),
        Arg(np.zeros((20, 20, 3), np.float32), False, ("(h, w, c)", "transpose"), "(H, W, C)"),
    ] + not_numbers(shape)
    return pool


def percentile_pool() -> list[Arg]:
    words = ("percentile",)
    return [Arg(99.0), Arg(50), Arg(100), Arg(np.float64(0.5), label="np.float64(0.5)"),
            Arg(0, False, words), Arg(101, False, words), Arg(float("nan"), False, words), Arg("99", False, words),
            Arg(None, False, words), Arg(True, False, words), Arg(np.array([50, 99]), False, words, "array")]


def scale_oracle(values: np.ndarray, percentile: float) -> float:
    m = np.abs(values[np.isfinite(values)])
    if not m.size:
        return 1.0
    s = float(np.percentile(m, percentile))
    s = s if s > 0 else float(m.max())
    return s if s > 0 else 1.0


def test_fuzz_attribution_colours():
    rng = np.random.default_rng(115)
    for i in range(DRAWS * 2):
        new_case(rng)
        shape = pick(rng, [(5, 6), (3, 4, 5), (1, 1), (1, 4, 4), (2, 1, 1000)])
        values = draw(rng, attribution_pool(rng, shape), 0.3)
        percentile = draw(rng, percentile_pool(), 0.15)
        kind = ["attribution_to_rgb", "gradient_to_rgb", "signed_to_rgb", "reduce_channels", "robust_scale"][i % 5]
        shape_v = np.shape(values.value)
        core = shape_v[1:] if len(shape_v) == 4 else shape_v
        if kind == "attribution_to_rgb":
            signed = draw(rng, bool_pool("signed", none_ok=True), 0.15)
            cmap = draw(rng, [Arg(None), Arg("magma"), Arg("jet"), Arg("nonsense", False, ("colormap",)),
                              Arg(7, False, ("colormap",))], 0.15)

            def check(out, v):
                x = as_f64(v["values"])
                x = x[0] if x.ndim == 4 else x
                assert_image(out, x.shape[-2:] + (3,))
                signed = v["signed"] if v["signed"] is not None else bool((x < 0).any())
                lut = A.colormap_lut(v["cmap"] or ("RdBu_r" if signed else "inferno"))
                plane = (x.sum(axis=0) if signed else np.abs(x).max(axis=0)) if x.ndim == 3 else x
                s = scale_oracle(plane, float(v["percentile"]))
                t = 0.5 + 0.5 * np.clip(plane / s, -1, 1) if signed else np.clip(np.abs(plane) / s, 0, 1)
                assert_colours(out, t, lut)

            run_case("attribution_to_rgb", {"values": values, "signed": signed, "percentile": percentile, "cmap": cmap},
                     lambda values, **kw: A.attribution_to_rgb(values, **kw), check)
        elif kind in ("gradient_to_rgb", "signed_to_rgb"):
            if values.valid and (len(core) != 3 or (kind == "gradient_to_rgb" and core[0] != 3)):
                values = Arg(values.value, False, ("(3, h, w)", "(c, h, w)"), f"{values!r} (wrong axes)")

            def check(out, v):
                x = as_f64(v["values"])
                x = x[0] if x.ndim == 4 else x
                assert_image(out, x.shape[1:] + (3,))
                if x.shape[0] == 3:
                    s = scale_oracle(x, float(v["percentile"]))
                    want = np.round((0.5 + 0.5 * np.clip(x / s, -1, 1)).transpose(1, 2, 0) * 255)
                    assert np.abs(out - want).max() <= 1
                else:
                    lut = A.colormap_lut("RdBu_r")
                    plane = x.sum(axis=0)
                    assert_colours(out, 0.5 + 0.5 * np.clip(plane / scale_oracle(plane, float(v["percentile"])), -1, 1), lut)

            function = A.gradient_to_rgb if kind == "gradient_to_rgb" else A.signed_to_rgb
            run_case(kind, {"values": values, "percentile": percentile},
                     lambda values, percentile: function(values, percentile=percentile), check)
        elif kind == "reduce_channels":
            how = draw(rng, [Arg("sum"), Arg("max_abs"), Arg("l2"), Arg("mean", False, ("how",)),
                             Arg(None, False, ("how",))], 0.2)

            def check(out, v):
                x = as_f64(v["values"])
                x = x[0] if x.ndim == 4 else x
                assert out.dtype == np.float32 and out.shape == x.shape[-2:]
                want = x if x.ndim == 2 else {"sum": lambda: x.sum(axis=0), "max_abs": lambda: np.abs(x).max(axis=0),
                                              "l2": lambda: np.sqrt((x * x).sum(axis=0))}[v["how"]]()
                assert np.allclose(out, as_f64(want), rtol=1e-5, atol=1e-37)

            run_case("reduce_channels", {"values": values, "how": how}, A.reduce_channels, check)
        else:
            if "NaN" in repr(values) or "1e300" in repr(values):  # robust_scale takes the finite values only
                values = Arg(values.value, label=repr(values))
            if values.valid is False and "real numbers" not in values.keywords and "cannot convert" not in values.keywords:
                values = Arg(values.value, None, values.keywords, repr(values))  # any shape is taken

            def check(out, v):
                assert isinstance(out, float) and out > 0
                assert math.isclose(out, scale_oracle(as_f64(v["values"]), float(v["percentile"])), rel_tol=1e-5)

            run_case("robust_scale", {"values": values, "percentile": percentile}, A.robust_scale, check)
    assert_both_outcomes()


def test_fuzz_attribution_overlay():
    rng = np.random.default_rng(116)
    for i in range(DRAWS):
        new_case(rng)
        h, w = pick(rng, [(8, 9), (6, 6), (1, 1)])
        image = draw(rng, picture_pool(rng, h, w, floats=True), 0.2)
        heat = draw(rng, attribution_pool(rng, pick(rng, [(4, 5), (3, 4, 5), (h, w)])), 0.2)
        alpha = draw(rng, unit_pool(), 0.15)
        cmap = draw(rng, [Arg("inferno"), Arg("viridis"), Arg("nonsense", False, ("colormap",)),
                          Arg(None, False, ("colormap",))], 0.1)
        percentile = draw(rng, percentile_pool(), 0.1)
        weight = draw(rng, bool_pool("weight_by_value"), 0.1)
        gray = draw(rng, bool_pool("gray_image"), 0.1)

        def check(out, v):
            picture = OV.as_picture(v["image"])
            assert_image(out, picture.shape)
            if float(v["alpha"]) == 0:
                assert np.array_equal(out, OV.desaturate(picture) if v["gray_image"] else picture)

        run_case("attribution_overlay", {"image": image, "heat": heat, "alpha": alpha, "cmap": cmap, "percentile": percentile,
                                         "weight_by_value": weight, "gray_image": gray},
                 lambda image, heat, **kw: A.attribution_overlay(image, heat, **kw), check)
    assert_both_outcomes()


# ---------------------------------------------------------------------------- occlusion


def geometry_pool(name: str) -> list[Arg]:
    words = (name,)
    return [Arg(1), Arg(2), Arg((2, 1)), Arg([1, 2], label="[1, 2]"), Arg(np.int64(2), label="np.int64(2)"),
            Arg(0, False, words), Arg(2.0, False, words), Arg(None, False, words), Arg("2", False, words),
            Arg((2, 2, 2), False, words), Arg(True, False, words)]


def test_fuzz_occlusion_maps_and_overlays():
    rng = np.random.default_rng(117)
    for i in range(DRAWS * 2):
        new_case(rng)
        h, w = pick(rng, [(8, 9), (4, 4), (6, 3)])
        window, stride = draw(rng, geometry_pool("window"), 0.15), draw(rng, geometry_pool("stride"), 0.15)
        ok = window.valid and stride.valid
        wh, ww = O._pair(window.value, "window") if ok else (1, 1)
        sh, sw = O._pair(stride.value, "stride") if ok else (1, 1)
        rows, cols = (h - wh) // sh + 1, (w - ww) // sw + 1
        grid = rng.standard_normal((rows, cols))
        partial = grid.copy()
        partial[rng.random((rows, cols)) < 0.5] = np.nan
        partial[0, 0] = 0.5
        gwords = ("grid", "values", "shape")
        kind = ["occlusion_overlay", "label_overlay", "grid_to_pixels", "colorize", "fill_nearest"][i % 5]
        values = draw(rng, layouts_of(grid.astype(np.float32), "grid", tensor=None) + [
            Arg(partial, label="partial (NaN)"), Arg(np.full((rows, cols), np.nan), label="nothing computed"),
            Arg(grid * 1e38, label="+-1e38"), Arg(np.round(grid * 3).astype(np.int64), label="int64"),
            Arg(np.zeros((rows + 1, cols)), kind in ("colorize", "fill_nearest"), gwords, "one row too many"),
            Arg(np.zeros((rows, cols, 3)), kind == "colorize", gwords, "3-D")] + not_numbers((rows, cols)), 0.25)
        image = draw(rng, picture_pool(rng, h, w, floats=True), 0.15)
        if "(H, W)" in repr(image):  # a gray picture is taken by the occlusion overlays
            image = Arg(image.value, label="gray (H, W)")
        if "RGBA" in repr(image):
            image = Arg(image.value, label="RGBA")
        alpha = draw(rng, unit_pool(), 0.1)
        if kind == "occlusion_overlay":
            limits = draw(rng, [Arg((None, None, None), label="auto"), Arg((None, None, 0.0), label="center 0"),
                                Arg((-1.0, 1.0, None), label="-1..1"), Arg((0.5, 0.5, None), label="equal limits"),
                                Arg((-1e308, 1e308, None), label="+-1e308"),
                                Arg((1.0, -1.0, None), False, ("vmin",), "reversed"),
                                Arg((float("-inf"), 1.0, None), False, ("vmin",), "vmin -inf"),
                                Arg(("a", None, None), False, ("vmin",), "vmin 'a'"),
                                Arg((None, None, float("nan")), False, ("center",), "center NaN"),
                                Arg((None, None, "0"), False, ("center",), "center '0'")], 0.15)
            upsample = draw(rng, [Arg("nearest"), Arg("mean"), Arg("max", False, ("upsample",))], 0.1)
            gray = draw(rng, bool_pool("gray_image"), 0.1)
            cmap = draw(rng, [Arg(None), Arg("magma"), Arg("nope", False, ("colormap",)),
                              Arg(["x"], False, ("cmap",))], 0.1)

            def check(out, v):
                picture = np.asarray(v["image"])
                picture = np.repeat(picture[..., None], 3, axis=2) if picture.ndim == 2 else picture[..., :3]
                assert_image(out, (h, w, 3))
                if float(v["alpha"]) == 0 and picture.dtype == np.uint8:
                    assert np.array_equal(out, OV.desaturate(picture) if v["gray_image"] else picture)

            # the three limits drawn together: the one that is wrong carries the keywords
            vmin = Arg(limits.value[0], limits.valid, limits.keywords, repr(limits))
            vmax, center = Arg(limits.value[1]), Arg(limits.value[2])
            run_case("occlusion_overlay", {"values": values, "image": image, "window": window, "stride": stride,
                                           "upsample": upsample, "cmap": cmap, "vmin": vmin, "vmax": vmax, "center": center,
                                           "alpha": alpha, "gray_image": gray},
                     lambda values, image, **kw: O.occlusion_overlay(values, image, **kw), check)
        elif kind == "label_overlay":
            labels = np.where(rng.random((rows, cols)) < 0.3, -1, rng.integers(0, 30, (rows, cols)))
            lab = draw(rng, layouts_of(labels, "labels", tensor=None) + [
                Arg(labels.astype(float), label="float labels"),
                Arg(np.where(labels < 0, np.nan, labels), label="NaN where not computed"),
                Arg(labels + 0.5, False, ("labels", "whole"), "0.5 labels"),
                Arg(np.full((rows, cols), np.inf), False, ("labels", "whole"), "inf"),
                Arg(labels.astype(str), False, NOT_NUMBERS, "strings")], 0.25)
            cmap = draw(rng, [Arg("tab20"), Arg("tab10"), Arg("nope", False, ("colormap",)),
                              Arg(None, False, ("cmap",))], 0.1)

            def check(out, v):
                picture = np.asarray(v["image"])
                picture = np.repeat(picture[..., None], 3, axis=2) if picture.ndim == 2 else picture[..., :3]
                assert_image(out, (h, w, 3))
                if float(v["alpha"]) == 0 and picture.dtype == np.uint8:
                    assert np.array_equal(out, picture)
                present = np.asarray(v["labels"], float)
                keys = sorted({int(k) for k in present[np.isfinite(present) & (present >= 0)]})
                assert sorted(O.label_colors(v["labels"], cmap=v["cmap"])) == keys

            run_case("label_overlay", {"labels": lab, "image": image, "window": window, "stride": stride,
                                       "alpha": alpha, "cmap": cmap},
                     lambda labels, image, **kw: O.label_overlay(labels, image, **kw), check)
        elif kind == "grid_to_pixels":
            image_size = draw(rng, size_pool("image_size", [(h, w)]) + [
                Arg((1, 1), False, ("window", "larger"), "(1, 1)")], 0.15)
            if image_size.valid and tuple(int(s) for s in image_size.value) != (h, w):
                image_size = Arg(image_size.value, None, gwords + ("window", "larger"), repr(image_size))
            upsample = draw(rng, [Arg("nearest"), Arg("mean"), Arg("max", False, ("upsample",))], 0.1)

            def check(out, v):
                grid = np.asarray(v["values"])
                assert out.shape == (h, w)
                assert out.dtype == (np.float32 if grid.dtype.kind == "f" or v["upsample"] == "mean" else grid.dtype)
                if (wh, ww, sh, sw) == (1, 1, 1, 1):  # one position per pixel: the filled grid itself
                    assert np.array_equal(out, O.fill_nearest(grid).astype(out.dtype), equal_nan=True)
                elif v["upsample"] == "nearest":
                    filled = O.fill_nearest(grid)
                    assert np.isin(out[np.isfinite(out)], filled.astype(out.dtype)).all()

            run_case("grid_to_pixels", {"values": values, "image_size": image_size, "window": window, "stride": stride,
                                        "upsample": upsample},
                     lambda values, image_size, **kw: O.grid_to_pixels(values, image_size, **kw), check)
        elif kind == "colorize":
            cmap = draw(rng, [Arg("viridis"), Arg("RdBu_r"), Arg("nope", False, ("colormap",)),
                              Arg(3, False, ("cmap",))], 0.2)

            def check(result, v):
                rgb, valid = result
                x = as_f64(v["values"]) if np.asarray(v["values"]).dtype != np.float64 else np.asarray(v["values"])
                assert_image(rgb, x.shape + (3,))
                assert np.array_equal(valid, np.isfinite(x))

            run_case("occlusion colorize", {"values": values, "cmap": cmap},
                     lambda values, cmap: O.colorize(values, cmap=cmap), check)
        else:
            def check(out, v):
                grid = np.asarray(v["values"])
                assert out.shape == grid.shape and out.dtype == grid.dtype
                known = np.isfinite(grid) if grid.dtype.kind == "f" else np.ones(grid.shape, bool)
                assert np.array_equal(out[known], grid[known])
                if known.any():
                    assert np.isfinite(out).all() if grid.dtype.kind == "f" else True

            run_case("fill_nearest", {"values": values}, O.fill_nearest, check)
    assert_both_outcomes()


# ---------------------------------------------------------------------------- kernels


def test_fuzz_kernel_tiles():
    rng = np.random.default_rng(118)
    for i in range(DRAWS * 2):
        new_case(rng)
        layout = ["slices", "rgb", "grid"][i % 3]
        shape = {"slices": (5, 3, 3), "rgb": (4, 3, 3, 3), "grid": (2, 3, 5, 5)}[layout]
        base = rng.uniform(-1.2, 1.2, shape).astype(np.float32)
        nan = base.copy().reshape(-1)
        nan[0] = np.nan
        values = draw(rng, layouts_of(base, f"{shape}", tensor=None) + [
            Arg(base.astype(np.float64), label="float64"), Arg(np.sign(base).astype(np.int8), label="int8"),
            Arg(np.where(base > 0, np.inf, -np.inf), label="+-inf (clipped)"), Arg(np.zeros(shape), label="zeros"),
            Arg(nan.reshape(shape), False, ("nan",), "NaN"),
            Arg(np.zeros((0,) + shape[1:]), False, ("no kernels",), "none"),
            Arg(base[0], False, ("layout", "shape"), "one axis fewer")] + not_numbers(shape), 0.25)
        zoom = draw(rng, int_pool("zoom", [1, 3], low=1, none_ok=True), 0.15)
        border = draw(rng, int_pool("border", [0, 2], low=0), 0.15)
        cols = draw(rng, int_pool("cols", [1, 2, 10], low=1, none_ok=True), 0.15)
        cmap = draw(rng, [Arg("gray"), Arg("diverging"), Arg("viridis", False, ("colormap",)),
                          Arg(None, False, ("colormap",))], 0.1)
        if layout == "rgb":
            cmap = Arg("gray")
        block_gap = draw(rng, int_pool("block_gap", [0, 3], low=0), 0.1)
        border_color = draw(rng, colour_pool("border_color"), 0.1)
        bad_layout = draw(rng, [Arg(layout), Arg("mosaic", False, ("layout",)), Arg(None, False, ("layout",))], 0.1)

        def check(out, v):
            x = np.asarray(v["values"])
            t = x.shape[0]
            h, w = x.shape[1:3] if layout != "grid" else x.shape[2:4]
            zoom = v["zoom"] if v["zoom"] is not None else max(1, 24 // h)
            b = int(v["border"])
            th, tw = h * zoom, w * zoom
            if layout == "grid":
                r, n = x.shape[:2]
                c = n if v["cols"] is None or int(v["cols"]) >= n else int(v["cols"])
                lines = -(-n // c)
                extra = int(v["block_gap"]) * (r - 1) if lines > 1 and r > 1 else 0
                assert_image(out, (r * lines * (th + b) + b + extra, c * (tw + b) + b, 3))
            else:
                c = max(1, min(t, int(v["cols"]) if v["cols"] else math.ceil(math.sqrt(t))))
                assert_image(out, (-(-t // c) * (th + b) + b, c * (tw + b) + b, 3))
                first = np.clip(as_f64(x[0]), -1, 1)
                want = np.rint((first + 1) * 127.5)  # the gray rule: tile 0 at the top left
                drawn = out[b : b + th : zoom, b : b + tw : zoom]
                if layout == "rgb" or v["cmap"] == "gray":
                    assert np.array_equal(drawn, want if layout == "rgb" else np.repeat(want[..., None], 3, axis=2))
            if b:
                assert (out[0, 0] == np.asarray(v["border_color"], np.uint8)).all()

        run_case("kernel_mosaic", {"values": values, "layout": bad_layout, "zoom": zoom, "border": border, "cols": cols,
                                   "cmap": cmap, "block_gap": block_gap, "border_color": border_color},
                 lambda values, layout, **kw: K.kernel_mosaic(values, layout, **kw), check)
        if i % 4 == 0:
            tiles = rng.integers(0, 256, (2, 3, 2, 2, 3), dtype=np.uint8)

            def check_tiles(out, v):
                z, b = int(v["zoom"]), int(v["border"])
                assert_image(out, (2 * (2 * z + b) + b, 3 * (2 * z + b) + b, 3))
                assert np.array_equal(out[b : b + 2 * z : z, b : b + 2 * z : z], tiles[0, 0])

            run_case("tile_grid", {"zoom": draw(rng, int_pool("zoom", [1, 2], low=1), 0.3), "border": border,
                                   "border_color": border_color},
                     lambda **kw: K.tile_grid(tiles, **kw), check_tiles)
    assert_both_outcomes()


def test_fuzz_kernel_signed_to_rgb():
    rng = np.random.default_rng(119)
    for i in range(DRAWS):
        new_case(rng)
        shape = pick(rng, [(3, 3), (), (2, 1, 100000), (4,)])
        base = rng.uniform(-1.5, 1.5, shape)
        special = np.where(rng.random(shape) < 0.3, np.inf, base) if shape else np.float64(np.inf)
        values = draw(rng, [Arg(base, label=f"{shape}"), Arg(np.float32(0.5), label="np.float32"),
                            Arg(special, label="with inf"),
                            Arg(np.full(shape, np.nan), False, ("nan",), "NaN")] + not_numbers(shape), 0.3)
        cmap = draw(rng, [Arg("gray"), Arg("diverging"), Arg("viridis", False, ("colormap",)),
                          Arg(["gray"], False, ("colormap",))], 0.2)

        def check(out, v):
            x = np.clip(np.asarray(v["values"], float), -1, 1)
            assert_image(out, x.shape + (3,))
            if v["cmap"] == "gray":
                assert np.array_equal(out, np.repeat(np.rint((x + 1) * 127.5)[..., None], 3, axis=-1))
            else:
                assert (out[x == 0] == 128).all()

        run_case("kernels.signed_to_rgb", {"values": values, "cmap": cmap}, K.signed_to_rgb, check)
    assert_both_outcomes()


def test_fuzz_check_heat_orientation():
    rng = np.random.default_rng(120)
    for _ in range(DRAWS // 2):
        new_case(rng)
        heat = draw(rng, [Arg(np.zeros((4, 5))), Arg(np.zeros((5, 4)), False, ("transposed",), "transposed"),
                          Arg(np.zeros((4, 4)), label="square"),
                          Arg(np.zeros((2, 4, 5)), False, ("(h, w)", "heat"), "3-D"),
                          Arg(np.zeros(5), False, ("(h, w)", "heat"), "1-D")], 0.5)
        run_case("check_heat_orientation", {"heat": heat}, lambda heat: RS.check_heat_orientation(heat, (4, 5, 3)),
                 lambda out, v: None)
    assert_both_outcomes()


# ---------------------------------------------------------------------------- regression tests for what the fuzz found


@pytest.fixture
def no_warnings():
    """numpy warnings are errors in the test (a RuntimeWarning is a bug of the renderer)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


STACK = np.random.default_rng(7).random((2, 3, 4)).astype(np.float32)
PICTURE = np.random.default_rng(8).integers(0, 256, (6, 5, 3), dtype=np.uint8)


@pytest.mark.parametrize("call", [
    lambda bad: R.apply_colormap(bad),
    lambda bad: R.quantize(bad, 0, 1),
    lambda bad: R.colorize(bad, 0, 1),
    lambda bad: R.value_ranges(bad),
    lambda bad: R.feature_grid(bad),
    lambda bad: R.GridPainter(R.grid_layout(2, 3, 4), 0, 1)(bad),
    lambda bad: R.downscale(bad, 2),
    lambda bad: R.resize(bad, (4, 4), color=False),
    lambda bad: R.map_to_input(bad, (6, 8)),
    lambda bad: R.channel_image(bad[0], (6, 8)),
    lambda bad: R.overlay_heatmap(PICTURE, bad[0]),
    lambda bad: A.attribution_to_rgb(bad),
    lambda bad: A.robust_scale(bad),
    lambda bad: K.signed_to_rgb(bad),
    lambda bad: O.colorize(bad),
    lambda bad: O.fill_nearest(bad[0]),
], ids=["apply_colormap", "quantize", "colorize", "value_ranges", "feature_grid", "GridPainter", "downscale", "resize",
        "map_to_input", "channel_image", "overlay_heatmap", "attribution_to_rgb", "robust_scale", "kernel signed_to_rgb",
        "occlusion colorize", "fill_nearest"])
@pytest.mark.parametrize("kind", ["complex", "strings", "objects", "tensor requiring grad"])
def test_arrays_that_hold_no_real_numbers_are_refused(call, kind, no_warnings):
    # was: complex values raised a ComplexWarning and lost their imaginary part, strings such as
    # '0.5' were read as numbers (others failed in numpy: "could not convert string to float"),
    # None was read as NaN, and a tensor that requires grad raised torch's RuntimeError
    bad = {"complex": STACK + 0.5j, "strings": STACK.astype(str), "objects": np.where(STACK > 0.5, None, STACK),
           "tensor requiring grad": torch.from_numpy(STACK).requires_grad_()}[kind]
    with pytest.raises(TypeError, match="real numbers|numpy cannot convert") as info:
        call(bad)
    assert traceback.extract_tb(info.tb)[-1].filename.startswith(RENDER_DIR)


def test_ranges_given_as_strings_or_beyond_float32_are_refused(no_warnings):
    # was: lo="0.5" was read as 0.5, and lo=1e39 raised a RuntimeWarning (overflow in cast), then
    # "lo must be finite, got inf" for a finite number
    with pytest.raises(TypeError, match="lo must be a number"):
        R.quantize(STACK, "0.5", 1)
    with pytest.raises(ValueError, match=r"hi must lie within float32's range .* got 1e\+39"):
        R.colorize(STACK, 0, 1e39)


def test_float64_values_beyond_float32_are_drawn_as_its_infinities_without_a_warning(no_warnings):
    # was: RuntimeWarning "overflow encountered in cast" (and in multiply) from every renderer
    beyond = np.array([[[1e300, -1e300, 0.5]]])
    assert R.apply_colormap(beyond[0, 0], "gray")[:, 0].tolist() == [255, 0, 128]
    assert R.quantize(beyond, 0, 1).ravel().tolist() == [255, 0, 128]
    assert R.value_ranges(beyond) == (np.float32(0.5), np.float32(0.5))
    img, layout = R.feature_grid(beyond, nan_color=(1, 2, 3))
    x, y, _, _ = layout.tile_rect(0)
    assert tuple(img[y, x]) == (1, 2, 3)  # an infinite unit at float32's precision
    assert np.isinf(R.resize(beyond[0], (2, 6), color=False)).any()
    assert R.apply_colormap(np.array([1e37, np.inf, -np.inf]), "gray")[:, 0].tolist() == [255, 255, 0]


def test_a_range_a_few_denormals_wide_still_tells_its_values_apart(no_warnings):
    # was: the scale 255 / 2.8e-45 overflowed float32 (RuntimeWarning), and the offset 0 * inf made
    # every unit NaN: the whole channel drawn in the lowest colour
    tiny = np.array([[[0.0, 1.4e-45, 2.8e-45]]], np.float32)
    assert R.quantize(tiny, 0, 2.8e-45).ravel().tolist() == [0, 128, 255]
    assert R.normalize(tiny, 0, 2.8e-45).ravel().tolist() == [0.0, 0.5, 1.0]
    assert R.normalize(tiny, 0, 2.8e-45).dtype == np.float32
    img, layout = R.feature_grid(tiny, cmap="gray")
    x, y, _, _ = layout.tile_rect(0)
    assert img[y, x : x + 3 * layout.scale : layout.scale, 0].tolist() == [0, 128, 255]


def steps_from(start: float, count: int) -> np.ndarray:
    """``count`` consecutive float32 numbers from ``start``: a range of ``count - 1`` float32 steps."""
    values = [np.float32(start)]
    for _ in range(count - 1):
        values.append(np.nextafter(values[-1], np.float32(np.inf)))
    return np.array(values, np.float32).reshape(1, 1, count)


@pytest.mark.parametrize("start, count", [(2817.794, 17), (50000.0, 13), (123456.0, 12)])
def test_a_narrow_range_far_from_zero_keeps_every_step(start, count, no_warnings):
    # was: v * scale + offset in float32 lost the low digits of such a range: units a step off in
    # quantize, colorize and the feature grid (up to 73 of 255 steps for other ranges), normalize
    # 0.125 off (2 of 16 steps)
    stack = steps_from(start, count)
    lo, hi = R.value_ranges(stack)
    want = [int(np.floor(255 * k / (count - 1) + 0.5)) for k in range(count)]
    assert R.quantize(stack, lo, hi).ravel().tolist() == want
    assert np.abs(R.normalize(stack, lo, hi).ravel() - np.arange(count) / (count - 1)).max() < 1e-6
    img, layout = R.feature_grid(stack, cmap="gray")
    x, y, _, _ = layout.tile_rect(0)
    assert img[y, x : x + count * layout.scale : layout.scale, 0].tolist() == want


def test_statistics_and_order_of_values_near_float32_max(no_warnings):
    # was: the float32 sum overflowed: RuntimeWarning, and a mean of inf for finite values
    huge = np.full((2, 3, 3), 3e38, np.float32)
    huge[1] = 2e38
    stats = R.channel_stats(huge)
    assert np.allclose(stats.mean, [3e38, 2e38], rtol=1e-6) and (stats.std == 0).all()
    assert R.activation_order(huge).tolist() == [0, 1]


def test_downscale_of_values_near_float32_max_and_of_opposite_infinities(no_warnings):
    # was: the block sums overflowed: RuntimeWarning, a mean of inf (the feature grid then drew the
    # finite block in nan_color); a block holding +inf and -inf raised "invalid value" outside the grid
    assert R.downscale(np.full((1, 2, 2), 3e38, np.float32), 2).ravel().tolist() == [np.float32(3e38)]
    assert np.isnan(R.downscale(np.array([[np.inf, -np.inf]]), 2)).all()
    img, layout = R.feature_grid(np.full((1, 100, 100), 3e38, np.float32), max_width=20, max_height=20,
                                 nan_color=(1, 2, 3))
    assert layout.shrink > 1 and not (img == np.array([1, 2, 3], np.uint8)).all(-1).any()


def test_bilinear_resize_keeps_a_finite_unit_next_to_an_infinite_one(no_warnings):
    # was: the zero weight of the infinite neighbour gave 0 * inf = NaN at the finite unit's own
    # pixel, with a RuntimeWarning
    out = R.resize(np.array([[1.0, np.inf]], np.float32), (1, 2), color=False)
    assert out.tolist() == [[1.0, np.inf]]


@pytest.mark.parametrize("call", [
    lambda p: OV.as_picture(p),
    lambda p: R.overlay_heatmap(p, np.zeros((2, 2))),
    lambda p: A.attribution_overlay(p, np.ones((2, 2))),
    lambda p: O.occlusion_overlay(np.zeros((1, 1)), p, window=6, stride=6),
], ids=["as_picture", "overlay_heatmap", "attribution_overlay", "occlusion_overlay"])
@pytest.mark.parametrize("all_nan", [False, True])
def test_float_pictures_with_nan_are_refused(call, all_nan, no_warnings):
    # was: RuntimeWarning "invalid value encountered in cast" and the NaN pixel drawn black; a
    # picture of NaN only: "All-NaN slice encountered"
    picture = np.full((6, 6, 3), 0.5)
    picture[0, 0, 0] = np.nan
    if all_nan:
        picture[:] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        call(picture)


@pytest.mark.parametrize("call, message", [
    (lambda: R.overlay_heatmap(PICTURE, np.zeros((2, 2)), alpha="0.5"), "alpha must be a real number"),
    (lambda: R.overlay_heatmap(PICTURE, np.zeros((2, 2)), alpha=np.array([0.1, 0.2])), "alpha must be a real number"),
    (lambda: A.attribution_overlay(PICTURE, np.ones((2, 2)), alpha=None), "alpha must be a real number"),
    (lambda: O.occlusion_overlay(np.zeros((6, 5)), PICTURE, window=1, stride=1, alpha="x"), "alpha must be a real number"),
    (lambda: R.blend(PICTURE, PICTURE, "0.5"), "alpha must be a real number"),
    (lambda: R.blend(PICTURE, PICTURE, None), "alpha must be a real number"),
    (lambda: A.robust_scale(STACK, "99"), "percentile must be a real number"),
    (lambda: A.attribution_to_rgb(STACK, percentile=None), "percentile must be a real number"),
    (lambda: O.occlusion_overlay(np.zeros((6, 5)), PICTURE, window=1, stride=1, center=np.nan), "center must be a finite"),
    (lambda: O.occlusion_overlay(np.zeros((6, 5)), PICTURE, window=1, stride=1, center="0"), "center must be a real"),
    (lambda: O.colorize(STACK, vmin=-np.inf), "vmin must be a finite"),
    (lambda: O.colorize(STACK, vmin="a"), "vmin must be a real"),
    (lambda: O.colorize(STACK, vmin=1.0, vmax=0.0), "vmin must be <= vmax"),
    (lambda: R.dead_channel_mask(STACK, "0"), "threshold must be a real"),
    (lambda: R.dead_channel_mask(STACK, np.nan), "threshold must be a finite"),
])
def test_options_of_the_wrong_type_or_value_are_refused_naming_them(call, message, no_warnings):
    # was: "'<=' not supported between instances of 'float' and 'str'", numpy's "truth value of an
    # array is ambiguous" or "could not convert string to float"; a NaN center or threshold drew
    # garbage without a word (every unit "not dead"), -inf raised a RuntimeWarning, and vmin > vmax
    # drew the whole map in the middle colour
    with pytest.raises((TypeError, ValueError), match=message):
        call()


@pytest.mark.parametrize("call, name", [
    (lambda flag: R.overlay_heatmap(PICTURE, np.zeros((2, 2)), weight_by_value=flag), "weight_by_value"),
    (lambda flag: A.attribution_overlay(PICTURE, np.ones((2, 2)), gray_image=flag), "gray_image"),
    (lambda flag: O.occlusion_overlay(np.zeros((6, 5)), PICTURE, window=1, stride=1, gray_image=flag), "gray_image"),
    (lambda flag: R.draw_rect(PICTURE, (1, 1, 2, 2), copy=flag), "copy"),
    (lambda flag: R.encode_jpeg(PICTURE, subsampling=flag), "subsampling"),
    (lambda flag: A.attribution_to_rgb(STACK, signed=flag), "signed"),
])
def test_flags_must_be_true_or_false(call, name):
    # was: "no" is truthy: it was taken as True (and draw_rect(copy="no") drew on a copy)
    with pytest.raises(TypeError, match=f"{name} must be True or False"):
        call("no")


TILES = np.zeros((1, 2, 3, 3, 3), np.uint8)
KERNELS = np.zeros((4, 3, 3), np.float32)
NAN_KERNELS = KERNELS.copy()
NAN_KERNELS[0, 1, 1] = np.nan
LABELS_PICTURE = np.zeros((16, 16, 3), np.uint8)


def _refusals(*cases):
    """pytest params of (call, exception, message), each with its id."""
    return [pytest.param(call, exc, message, id=name) for name, call, exc, message in cases]


@pytest.mark.parametrize("call, exc, message", _refusals(
    # was: truncated to 2
    ("tile_grid zoom 2.5", lambda: K.tile_grid(TILES, zoom=2.5), TypeError, "zoom must be an int"),
    # was: int("2") accepted it
    ("kernel_mosaic zoom '2'", lambda: K.kernel_mosaic(KERNELS, "slices", zoom="2"), TypeError, "zoom must be an int"),
    # was: numpy's OverflowError "Python integer 300 out of bounds for uint8"
    ("tile_grid border_color 300", lambda: K.tile_grid(TILES, border_color=(300, 0, 0)), ValueError,
     "border_color must be an RGB triple"),
    # was: "'float' object cannot be interpreted as an integer"
    ("kernel_mosaic cols 2.5", lambda: K.kernel_mosaic(KERNELS, "slices", cols=2.5), TypeError, "cols must be an int"),
    # was: "invalid literal for int() with base 10: 'x'"
    ("kernel_mosaic block_gap 'x'", lambda: K.kernel_mosaic(KERNELS[None], "grid", block_gap="x"), TypeError,
     "block_gap must be an int"),
    # was: drawn mid-gray, as a zero weight
    ("NaN kernels", lambda: K.kernel_mosaic(NAN_KERNELS, "slices"), ValueError, "must not be NaN"),
    # was: "'float' object is not iterable"
    ("window 4.0", lambda: O.grid_to_pixels(np.zeros((7, 7)), (16, 16), window=4.0, stride=2), TypeError,
     "window must be a positive int or a pair"),
    # was: "invalid literal for int() with base 10: 'a'"
    ("image_size 'ab'", lambda: O.grid_to_pixels(np.zeros((7, 7)), "ab", window=4, stride=2), TypeError,
     "image_size must be a pair"),
    # was: "'int' object is not iterable"
    ("image_size 16", lambda: O.grid_to_pixels(np.zeros((7, 7)), 16, window=4, stride=2), TypeError,
     "image_size must be a pair"),
    # was: "too many values to unpack (expected 2)"
    ("image_size (16, 16, 3)", lambda: O.grid_to_pixels(np.zeros((7, 7)), (16, 16, 3), window=4, stride=2), ValueError,
     "image_size must be a pair"),
    # was: "cannot convert float NaN to integer"
    ("image_size NaN", lambda: O.grid_to_pixels(np.zeros((7, 7)), (np.nan, 16), window=4, stride=2), TypeError,
     "image_size must be a pair"),
    # was: "grid of shape (7, 7) does not match ... (expected (-11, -11))"
    ("window larger than the image", lambda: O.grid_to_pixels(np.zeros((7, 7)), (16, 16), window=40, stride=2), ValueError,
     r"window \(40, 40\) is larger than the image \(16, 16\)"),
    # was: left uncoloured (black, blended over the picture)
    ("labels 0.5", lambda: O.label_overlay(np.full((7, 7), 0.5), LABELS_PICTURE, window=4, stride=2), ValueError,
     "labels must be class indices"),
    # was: OverflowError "cannot convert float infinity to integer"
    ("labels inf", lambda: O.label_colors(np.array([np.inf, 1.0])), ValueError, "labels must be class indices"),
    # was: "'>=' not supported between instances of 'numpy.str_' and 'int'"
    ("labels strings", lambda: O.label_colors(np.array(["a"])), TypeError, "real numbers"),
    # was: int(0.5) silently showed channel 0
    ("order [0.5, 1]", lambda: R.feature_grid(STACK, order=[0.5, 1]), TypeError, "each channel of order must be an int"),
    # was: "invalid literal for int() with base 10: 'a'"
    ("order 'ab'", lambda: R.feature_grid(STACK, order="ab"), TypeError, "order must be a sequence of channel indices"),
    # was: "object of type 'int' has no len()"
    ("order 2", lambda: R.feature_grid(STACK, order=2), TypeError, "order must be a sequence of channel indices"),
    # was: "channels must be an int >= 3, got 2" (no argument of that name was given)
    ("order longer than the stack", lambda: R.feature_grid(STACK, order=[0, 1, 1]), ValueError,
     "order names 3 slots, more than the stack's 2 channels"),
    # was: accepted whenever the layout did not shrink
    ("shrink_mode 'median'", lambda: R.feature_grid(STACK, shrink_mode="median"), ValueError,
     "shrink_mode must be 'mean' or 'stride'"),
    # was: "count must be an int >= 1, got 0" (no argument of that name was given)
    ("stack without channels", lambda: R.feature_grid(np.zeros((0, 2, 2))), ValueError, "no channels or empty maps"),
    # was: accepted: (-1) x (-2) slots "hold" 2 channels
    ("GridLayout rows -1", lambda: R.GridLayout(count=2, rows=-1, cols=-2, map_height=3, map_width=3), ValueError,
     "rows must be an int >= 1"),
    # was: "cannot convert float NaN to integer"
    ("channel_at NaN", lambda: R.grid_layout(3, 4, 4).channel_at(float("nan"), 0), ValueError, "x must be a finite number"),
    # was: OverflowError "cannot convert float infinity to integer"
    ("channel_at inf", lambda: R.grid_layout(3, 4, 4).channel_at(float("inf"), 0), ValueError, "x must be a finite number"),
    # was: IndexError
    ("describe 5", lambda: R.channel_stats(STACK).describe(5), ValueError, r"channel must be an int in 0..1, got 5"),
    # was: the last channel's statistics, headed "channel -1"
    ("describe -1", lambda: R.channel_stats(STACK).describe(-1), ValueError, r"channel must be an int in 0..1, got -1"),
    # was: a set, taken in whatever order it iterates
    ("resize size {3, 4}", lambda: R.resize(STACK, {3, 4}, color=False), TypeError, "size must be a pair"),
    # was: "len() of unsized object"
    ("resize size 0-d array", lambda: R.resize(STACK, np.array(3), color=False), TypeError, "size must be a pair"),
    # was: "len() of unsized object"
    ("nan_color 0-d array", lambda: R.apply_colormap(STACK, nan_color=np.array(3)), TypeError,
     "nan_color must be an RGB triple"),
    # was: a set, lo and hi in whatever order it iterates
    ("fixed {0, 1}", lambda: R.value_ranges(STACK, "fixed", fixed={0.0, 1.0}), TypeError, "fixed must be a pair"),
    # was: "unhashable type: 'list'" (four times)
    ("get_lut list", lambda: R.get_lut(["viridis"]), TypeError, "must be a str"),
    ("colormap_lut list", lambda: A.colormap_lut(["inferno"]), TypeError, "must be a str"),
    ("occlusion colorize cmap list", lambda: O.colorize(STACK, cmap=["viridis"]), TypeError, r"\(cmap\) must be a str"),
    ("feature_grid cmap list", lambda: R.feature_grid(STACK, cmap=["viridis"]), TypeError, "must be a str"),
    # was: OverflowError "int too large to convert to float"
    ("rect 10**400", lambda: R.draw_rect(PICTURE, (10**400, 0, 2, 2)), ValueError, "rect x must be a finite number"),
    # was: "'NoneType' object is not iterable"
    ("hstack None", lambda: R.hstack(None), TypeError, "images must be a list"),
    # was: taken row by row: "image must be a uint8 RGB array of shape (H, W, 3), got uint8 (5, 3)"
    ("hstack one array", lambda: R.hstack(PICTURE), TypeError, r"one image: pass \[image\]"),
    # was: "too many values to unpack (expected 2)"
    ("check_heat_orientation 3-D", lambda: RS.check_heat_orientation(np.zeros((2, 4, 5)), (4, 5, 3)), ValueError,
     r"heat map must be one map \(h, w\)"),
    # was: "input_size must be a pair (height, width) of ints >= 1, got (0, 5)" (no argument of that name)
    ("overlay_heatmap empty picture", lambda: R.overlay_heatmap(np.zeros((0, 5, 3), np.uint8), np.zeros((2, 2))),
     ValueError, "image has no pixels"),
))
def test_arguments_are_refused_naming_what_is_wrong(call, exc, message, no_warnings):
    with pytest.raises(exc, match=message) as info:
        call()
    assert traceback.extract_tb(info.tb)[-1].filename.startswith(RENDER_DIR)


def test_what_those_checks_still_take(no_warnings):
    # infinities are clipped to the ends, as documented for kernel values outside [-1, 1]
    assert K.signed_to_rgb(np.array([np.inf, -np.inf]))[:, 0].tolist() == [255, 0]
    # NaN labels are positions not computed yet, as -1 is; whole-number floats are classes
    assert O.label_colors(np.array([np.nan, 2.0, -1])) == O.label_colors(np.array([2]))
    # a layout's fields may be numpy ints, order a 1-D integer array
    layout = R.grid_layout(np.int64(3), 4, 4, order=np.array([2, 0, 1]))
    assert layout.order == (2, 0, 1) and R.GridLayout(count=np.int32(1), rows=1, cols=1, map_height=2, map_width=2).count == 1
    # a (C, H, W) tuple is an input_size; an integer array a size
    assert R.map_to_input(STACK, (3, 6, 8)).shape == (2, 6, 8)
    assert R.resize(STACK, np.array([4, 4]), color=False).shape == (2, 4, 4)
    # a bool mask is an alpha
    assert (R.blend(PICTURE, np.zeros_like(PICTURE), np.ones((6, 5), bool)) == 0).all()


def test_jpeg_refuses_sides_beyond_its_limit_and_says_to_use_png():
    wide = np.zeros((1, 100000, 3), np.uint8)
    # was: simplejpeg's "Maximum supported image dimension is 65500 pixels" passed through
    with pytest.raises(ValueError, match=r"JPEG takes images up to 65500 pixels a side.*PNG") as info:
        R.encode_jpeg(wide)
    assert traceback.extract_tb(info.tb)[-1].filename.startswith(RENDER_DIR)
    assert decode(R.encode_png(wide)).size == (100000, 1)


def test_grid_layout_of_maps_100000_units_wide_is_chosen_at_once():
    # was: the reduction was searched one step at a time for every column count: 5 s for this call
    start = time.perf_counter()
    layout = R.grid_layout(300, 7, 100000, max_width=60, max_height=40)
    assert time.perf_counter() - start < 1.0
    assert layout.width <= 60 and layout.height <= 40
    less = R.GridLayout(count=300, rows=layout.rows, cols=layout.cols, map_height=7, map_width=100000,
                        shrink=layout.shrink - 1)
    assert less.width > 60 or less.height > 40  # and it is the smallest reduction that fits


def test_map_to_input_with_a_denormal_jump_clamps_without_a_warning(no_warnings):
    # was: RuntimeWarning "overflow encountered in divide"
    out = R.map_to_input(np.arange(6.0).reshape(2, 3), (4, 4), jump=1e-310, start=1e308)
    assert (out == 0).all()  # every pixel lies before the first unit: held at its value


def test_reduce_channels_sums_beyond_float32(no_warnings):
    # was: RuntimeWarning (overflow in multiply / reduce); an l2 norm of 1e30s came out inf
    assert np.allclose(A.reduce_channels(np.full((3, 2, 2), 1e30, np.float32), "l2"), np.sqrt(3) * 1e30, rtol=1e-6)
    assert np.isinf(A.reduce_channels(np.full((3, 2, 2), 3e38, np.float32), "sum")).all()
    assert A.attribution_to_rgb(np.full((3, 2, 2), 3e38, np.float32), signed=True).shape == (2, 2, 3)


def test_pictures_come_back_contiguous_also_from_transposed_or_reversed_input(no_warnings):
    # was: views of the input's layout (a transposed or negative-stride picture gave a non-contiguous result)
    transposed = np.ascontiguousarray(PICTURE.transpose(1, 0, 2)).transpose(1, 0, 2)
    assert not transposed.flags.c_contiguous
    outputs = [A.gradient_to_rgb(STACK.repeat(2, axis=0)[:3]), R.resize_image(PICTURE[::-1], (12, 10)),
               R.resize_image(transposed, (3, 2), "bilinear"), R.overlay_heatmap(transposed, np.zeros((2, 2))),
               R.blend(transposed, transposed, 0.5)]
    for out in outputs:
        assert out.dtype == np.uint8 and out.flags.c_contiguous


def test_resize_documents_that_nearest_keeps_the_dtype():
    # was: documented as float32 but for uint8, while "nearest" returns every dtype as it is
    assert R.resize(np.zeros((2, 2)), (3, 3), "nearest").dtype == np.float64
    assert R.resize(np.zeros((2, 2), np.int16), (3, 3), "nearest").dtype == np.int16
    assert R.resize(np.zeros((2, 2), np.int16), (3, 3)).dtype == np.float32
    assert "an array of the input's dtype" in " ".join(R.resize.__doc__.split())
