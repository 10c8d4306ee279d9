"""Bad or unusual inputs to the renderers: each is refused with a message that says what was wrong
and what is accepted, or drawn correctly (ambiguous RGB-shaped floats, NaN activations in the
feature grid, reversed ranges, 0-d values, float sizes, read-only images)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from cnnwidgets import render as R
from cnnwidgets.render.grid import BORDER_COLOR, MARK_COLOR

RNG = np.random.default_rng(11)
A3 = RNG.random((8, 6, 6)).astype(np.float32)
IMG = RNG.integers(0, 256, (12, 12, 3), dtype=np.uint8)


# ------------------------------------------------ 1. float (H, W, 3|4): a picture or a stack?
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k", [3, 4])
def test_resize_and_upscale_ask_whether_a_float_rgb_shaped_array_is_a_picture_or_a_stack(dtype, k):
    rgb = RNG.random((20, 30, k)).astype(dtype)
    for call, what in ((lambda: R.resize(rgb, (40, 60)), "resize"), (lambda: R.upscale(rgb, 2), "upscale"),
                       (lambda: R.resize(rgb, (40, 60), "nearest"), "resize")):
        with pytest.raises(ValueError, match=rf"{what}: the {np.dtype(dtype).name} array of shape \(20, 30, {k}\) "
                                             r"may be a picture .* or a stack of 20 maps .*"
                                             "color=True for a picture, color=False for a stack"):
            call()
    # said which: a picture ...
    assert R.resize(rgb, (40, 60), color=True).shape == (40, 60, k)
    up = R.upscale(rgb, 2, color=True)
    assert up.shape == (40, 60, k) and (up[3, 5] == rgb[1, 2]).all()
    # ... or a stack of 20 maps 30 wide and k high
    assert R.resize(rgb, (40, 60), color=False).shape == (20, 40, 60)
    assert R.upscale(rgb, 2, color=False).shape == (20, 60, 2 * k)


def test_float_stacks_whose_width_is_not_3_or_4_are_still_maps_without_color():
    assert R.upscale(np.zeros((5, 4, 2), np.float32), 2).shape == (5, 8, 4)
    assert R.resize(np.zeros((5, 4, 5)), (2, 3)).shape == (5, 2, 3)
    assert R.resize(np.zeros((4, 3)), (8, 6)).shape == (8, 6)  # a single map of width 3


def test_renderers_inside_the_package_still_draw_maps_three_or_four_units_wide():
    acts = RNG.random((4, 5, 3)).astype(np.float32)
    img, layout = R.feature_grid(acts, max_width=80, max_height=80)
    assert layout.scale > 1 and img.shape == (layout.height, layout.width, 3)
    assert R.map_to_input(acts, (10, 6)).shape == (4, 10, 6)
    assert R.map_to_input(acts, (10, 6), jump=2.0, start=0.5).shape == (4, 10, 6)
    assert R.channel_image(acts[0], (10, 6)).shape == (10, 6, 3)
    assert R.resize_image(IMG[:4, :4], (8, 8)).shape == (8, 8, 3)


# ------------------------------------------------ 2. NaN and infinite activations in the feature grid
def _tile_pixels(img: np.ndarray, layout, channel: int) -> np.ndarray:
    x, y, w, h = layout.tile_rect(channel)
    return img[y : y + h, x : x + w].reshape(-1, 3)


def test_feature_grid_draws_a_nan_channel_in_the_nan_colour_not_like_a_dead_one():
    from cnnwidgets.render.grid import NAN_COLOR

    acts = RNG.random((3, 4, 4)).astype(np.float32)
    acts[0] = np.nan
    acts[2] = 0.0  # dead
    lut = R.get_lut("viridis")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        img, layout = R.feature_grid(acts, cmap="viridis")
    assert (_tile_pixels(img, layout, 0) == NAN_COLOR).all()
    assert (_tile_pixels(img, layout, 2) == lut[0]).all()  # the dead channel keeps the lowest colour
    # the nan colour is none of the colormaps' colours, nor the border's or the marks'
    for name in R.colormap_names():
        assert not (R.get_lut(name) == NAN_COLOR).all(axis=1).any(), name
    assert tuple(NAN_COLOR) not in (tuple(BORDER_COLOR), tuple(MARK_COLOR))
    # the finite channel is drawn exactly as without the NaN one
    clean = acts.copy()
    clean[0] = 0.0
    expected, _ = R.feature_grid(clean, cmap="viridis", layout=layout)
    np.testing.assert_array_equal(_tile_pixels(img, layout, 1), _tile_pixels(expected, layout, 1))


@pytest.mark.parametrize("mode", ["channel", "layer"])
def test_feature_grid_draws_nan_and_infinite_units_in_nan_color_and_keeps_the_rest(mode):
    acts = RNG.normal(size=(4, 5, 6)).astype(np.float32)
    acts[0, 1, 2], acts[1, 0, 0], acts[2, 4, 5] = np.nan, np.inf, -np.inf
    layout = R.grid_layout(4, 5, 6, max_width=80, max_height=80, border=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        img, _ = R.feature_grid(acts, mode=mode, cmap="gray", layout=layout, nan_color=(1, 2, 3))
    finite = np.isfinite(acts)
    lo, hi = R.value_ranges(acts, mode)
    expected = R.colorize(np.where(finite, acts, lo[:, None, None]), lo, hi, "gray")
    for channel in range(4):
        x, y, _, _ = layout.tile_rect(channel)
        drawn = img[y : y + 5 * layout.scale : layout.scale, x : x + 6 * layout.scale : layout.scale]
        want = np.where(finite[channel][..., None], expected[channel], np.array([1, 2, 3], np.uint8))
        np.testing.assert_array_equal(drawn, want)


def test_feature_grid_nan_colour_follows_pages_strides_and_marks():
    acts = RNG.random((6, 8, 8)).astype(np.float32)
    acts[4, 2:4, 2:4] = np.nan
    layout = R.grid_layout(2, 8, 8, order=[4, 1], channels=6, max_width=60, max_height=40)
    img, _ = R.feature_grid(acts, layout=layout, nan_color=(255, 0, 255), marked=np.eye(6, dtype=bool)[1])
    x, y, _, _ = layout.tile_rect(4)
    assert layout.shrink == 1
    s = layout.scale
    assert tuple(img[y + 2 * s + 1, x + 2 * s + 1]) == (255, 0, 255)
    assert tuple(img[y + 6 * s, x + 6 * s]) != (255, 0, 255)
    x, y, w, _ = layout.tile_rect(1)
    assert tuple(img[y, x + w // 2]) == MARK_COLOR  # the mark is drawn over the tile as before
    # a preview that takes every 2nd unit sees the NaN units (2, 2) and the finite (0, 0)
    small = R.GridLayout(count=6, rows=2, cols=3, map_height=8, map_width=8, shrink=2, border=0)
    img, _ = R.feature_grid(acts, layout=small, shrink_mode="stride", nan_color=(255, 0, 255))
    x, y, _, _ = small.tile_rect(4)
    assert tuple(img[y + 1, x + 1]) == (255, 0, 255) and tuple(img[y, x]) != (255, 0, 255)


def test_feature_grid_refuses_a_bad_nan_color():
    with pytest.raises(ValueError, match=r"nan_color must be an RGB triple of ints in 0..255"):
        R.feature_grid(A3, nan_color=(0, 0, 300))
    with pytest.raises(TypeError, match="nan_color must be an RGB triple of ints"):
        R.feature_grid(A3, nan_color=(0.5, 0, 0))


def test_value_ranges_of_nan_channels_are_empty_and_leave_the_others_alone():
    acts = RNG.random((3, 4, 4)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lo, hi = R.value_ranges(np.full((2, 4, 4), np.nan, np.float32))
        assert lo.tolist() == hi.tolist() == [0, 0]
        mixed = acts.copy()
        mixed[1] = np.nan
        lo, hi = R.value_ranges(mixed, "channel")
        assert lo[1] == hi[1] == 0
        assert [lo[0], hi[0], lo[2], hi[2]] == [acts[0].min(), acts[0].max(), acts[2].min(), acts[2].max()]
        lo, hi = R.value_ranges(mixed, "layer")
        assert (lo == mixed[[0, 2]].min()).all() and (hi == mixed[[0, 2]].max()).all()
        # the ranges of a NaN channel can be handed back as fixed ranges (the explorer does)
        R.feature_grid(mixed, mode="fixed", fixed=R.value_ranges(mixed))


# ------------------------------------------------ 3. reversed and NaN ranges
@pytest.mark.parametrize("render", [R.colorize, R.quantize, R.normalize])
def test_reversed_ranges_are_refused_naming_the_values(render):
    values = RNG.random((1, 8, 8))
    with pytest.raises(ValueError, match="lo must be <= hi, got lo=1, hi=0$"):
        render(values, 1, 0)
    lo, hi = np.zeros(8), np.ones(8)
    lo[3], hi[3] = 0.75, 0.25
    with pytest.raises(ValueError, match=r"lo must be <= hi, got lo=0.75, hi=0.25 \(channel 3\)"):
        render(A3, lo, hi)
    with pytest.raises(ValueError, match="lo must be finite, got nan"):
        render(values, np.nan, 1.0)
    with pytest.raises(ValueError, match="hi must be finite, got nan"):
        render(values, 0.0, np.nan)


def test_equal_ends_still_draw_a_flat_image():
    lo, hi = np.zeros(8), np.ones(8)
    lo[2] = hi[2] = 0.5
    assert (R.quantize(A3, lo, hi)[2] == 0).all()
    assert (R.colorize(A3, lo, hi, "viridis")[2] == R.get_lut("viridis")[0]).all()
    assert (R.normalize(A3, lo, hi)[2] == 0).all()
    img, layout = R.feature_grid(A3, mode="fixed", fixed=(0.5, 0.5), cmap="gray")
    assert (_tile_pixels(img, layout, 0) == 0).all()


def test_value_ranges_and_feature_grid_refuse_a_reversed_fixed_range():
    with pytest.raises(ValueError, match="fixed lo must be <= fixed hi, got lo=1, hi=0$"):
        R.value_ranges(A3, "fixed", fixed=(1, 0))
    hi = np.ones(8)
    hi[5] = -2.5
    with pytest.raises(ValueError, match=r"fixed lo must be <= fixed hi, got lo=0, hi=-2.5 \(channel 5\)"):
        R.feature_grid(A3, mode="fixed", fixed=(0.0, hi))
    with pytest.raises(ValueError, match="fixed lo must be finite, got nan"):
        R.value_ranges(A3, "fixed", fixed=(np.nan, 1.0))
    lo, hi = R.value_ranges(A3, "fixed", fixed=(0.25, 0.25))
    assert lo.tolist() == hi.tolist() == [0.25] * 8


def test_reversed_ranges_are_documented_as_refused():
    for function in (R.quantize, R.colorize, R.normalize, R.value_ranges):
        assert "lo > hi" in function.__doc__, function.__name__
    assert "does not invert" not in R.quantize.__doc__ + R.colorize.__doc__ + R.normalize.__doc__


# ------------------------------------------------ 4. a 0-d value to apply_colormap
@pytest.mark.parametrize("value", [np.float64(0.5), 0.5, np.array(0.5, np.float32)])
def test_apply_colormap_colours_a_single_value(value):
    out = R.apply_colormap(value, "viridis")
    assert out.shape == (3,) and out.dtype == np.uint8
    assert out.tolist() == R.get_lut("viridis")[128].tolist()
    assert R.apply_colormap(np.float64(2.0), "gray").tolist() == [255, 255, 255]
    assert R.apply_colormap(float("nan"), "gray", nan_color=(1, 2, 3)).tolist() == [1, 2, 3]


# ------------------------------------------------ 5. colormap_strip sizes
@pytest.mark.parametrize("size", [2.5, 2.0, "4", True, None])
def test_colormap_strip_refuses_sizes_that_are_not_ints(size):
    with pytest.raises(TypeError, match=r"colormap_strip width must be an int, got"):
        R.colormap_strip("viridis", size)
    with pytest.raises(TypeError, match=r"colormap_strip height must be an int, got"):
        R.colormap_strip("viridis", 4, size)


def test_colormap_strip_takes_numpy_ints_and_refuses_sizes_below_one():
    strip = R.colormap_strip("gray", np.int64(3), np.int32(2))
    assert strip.shape == (2, 3, 3) and strip[0, :, 0].tolist() == [0, 128, 255]
    with pytest.raises(ValueError, match="width and height must be positive ints, got 0 x 8"):
        R.colormap_strip("gray", 0)
    with pytest.raises(ValueError, match="width and height must be positive ints, got 4 x -1"):
        R.colormap_strip("gray", np.int16(4), -1)


# ------------------------------------------------ 6. draw_rect on a read-only array
def test_draw_rect_in_place_refuses_a_read_only_image_and_says_what_works():
    frozen = np.broadcast_to(IMG, IMG.shape)
    with pytest.raises(ValueError, match=r"draw_rect with copy=False draws on the image itself, which is "
                                         r"read-only.*copy=True \(the default\)"):
        R.draw_rect(frozen, (2, 2, 4, 4), copy=False)
    locked = IMG.copy()
    locked.setflags(write=False)
    with pytest.raises(ValueError, match="read-only"):
        R.draw_rect(locked, (2, 2, 4, 4), copy=False)
    out = R.draw_rect(frozen, (2, 2, 4, 4), color=(1, 2, 3))
    assert tuple(out[2, 3]) == (1, 2, 3) and (frozen == IMG).all()
    # a writable image is still drawn on in place
    mine = IMG.copy()
    assert R.draw_rect(mine, (2, 2, 4, 4), color=(1, 2, 3), copy=False) is mine
    assert tuple(mine[5, 2]) == (1, 2, 3)
