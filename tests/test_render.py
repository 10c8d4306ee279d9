"""Rendering: colormaps, normalisation, mosaics, resampling, overlays and encoding on hand-computed arrays."""

from __future__ import annotations

import ast
import io
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnwidgets import render as R
from cnnwidgets.render.grid import BORDER_COLOR, MARK_COLOR, NAN_COLOR
from cnnwidgets.render.occlusion import grid_to_pixels

RENDER_DIR = Path(R.__file__).parent


def test_render_package_does_not_import_torch():
    for path in RENDER_DIR.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            assert not any(n == "torch" or n.startswith("torch.") for n in names), f"{path.name} imports torch"


# ---------------------------------------------------------------- colormaps
def test_gray_lut_is_identity_ramp():
    lut = R.get_lut("gray")
    assert lut.shape == (256, 3) and lut.dtype == np.uint8
    assert (lut[:, 0] == np.arange(256)).all() and (lut[:, 0] == lut[:, 2]).all()
    assert not lut.flags.writeable


def test_viridis_ends_match_matplotlib_reference_colours():
    lut = R.get_lut("viridis")
    # viridis starts dark purple (#440154) and ends yellow (#fde725)
    assert tuple(lut[0]) == (0x44, 0x01, 0x54)
    assert tuple(lut[255]) == (0xFD, 0xE7, 0x25)


def test_diverging_midpoint_is_neutral():
    mid = R.get_lut("RdBu_r")[128].astype(int)
    assert mid.min() > 220  # near white
    assert R.get_lut("RdBu_r")[0][2] > R.get_lut("RdBu_r")[0][0]  # negative end is blue
    assert R.get_lut("RdBu_r")[255][0] > R.get_lut("RdBu_r")[255][2]  # positive end is red


def test_unknown_colormap_lists_accepted_names():
    with pytest.raises(ValueError, match="viridis"):
        R.get_lut("jet2")


def test_apply_colormap_rounds_clips_and_marks_nan():
    values = np.array([0.0, 0.5, 1.0, 2.0, -1.0, np.nan, 0.1])
    out = R.apply_colormap(values, "gray", nan_color=(1, 2, 3))
    assert out.shape == (7, 3)
    assert out[:, 0].tolist() == [0, 128, 255, 255, 0, 1, 26]
    assert tuple(out[5]) == (1, 2, 3)


def test_colorize_matches_normalize_then_colormap():
    rng = np.random.default_rng(0)
    acts = rng.normal(size=(4, 5, 6)).astype(np.float32)
    acts[2] = 3.0  # constant channel
    lo, hi = R.value_ranges(acts, "channel")
    fused = R.colorize(acts, lo, hi, "gray")[..., 0].astype(int)
    reference = R.apply_colormap(R.normalize(acts, lo, hi), "gray")[..., 0].astype(int)
    # the fused path rounds v * s + offset instead of (v - lo) * s: at most one table step apart
    assert np.abs(fused - reference).max() <= 1
    assert (fused[2] == 0).all()
    assert (R.colorize(acts, lo, hi, "magma")[2] == R.get_lut("magma")[0]).all()


def test_colorize_exact_on_hand_values():
    acts = np.array([[[0.0, 1.0], [2.0, 4.0]]], dtype=np.float32)
    out = R.colorize(acts, 0.0, 4.0, "gray")[0, :, :, 0]
    # 255 * v / 4 rounded: 0, 63.75 -> 64, 127.5 -> 128, 255
    assert out.tolist() == [[0, 64], [128, 255]]


def test_colorize_nan():
    acts = np.array([[[np.nan, 1.0]]], dtype=np.float32)
    out = R.colorize(acts, 0.0, 1.0, "gray", nan_color=(9, 9, 9))
    assert tuple(out[0, 0, 0]) == (9, 9, 9) and tuple(out[0, 0, 1]) == (255, 255, 255)


# ---------------------------------------------------------------- normalisation
STACK = np.array(
    [
        [[0.0, 1.0], [2.0, 3.0]],
        [[-2.0, 0.0], [0.0, 2.0]],
        [[5.0, 5.0], [5.0, 5.0]],
    ],
    dtype=np.float32,
)


def test_value_ranges_per_channel_and_layer():
    lo, hi = R.value_ranges(STACK, "channel")
    assert lo.tolist() == [0, -2, 5] and hi.tolist() == [3, 2, 5]
    lo, hi = R.value_ranges(STACK, "layer")
    assert lo.tolist() == [-2, -2, -2] and hi.tolist() == [5, 5, 5]


def test_value_ranges_fixed_broadcasts_and_checks_shape():
    lo, hi = R.value_ranges(STACK, "fixed", fixed=(0.0, np.array([1.0, 2.0, 3.0])))
    assert lo.tolist() == [0, 0, 0] and hi.tolist() == [1, 2, 3]
    with pytest.raises(ValueError, match="needs fixed"):
        R.value_ranges(STACK, "fixed")
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        R.value_ranges(STACK, "fixed", fixed=(np.zeros(2), 1.0))
    with pytest.raises(ValueError, match="accepted: channel, layer, fixed"):
        R.value_ranges(STACK, "global")
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        R.value_ranges(STACK[0], "channel")


def test_normalize_maps_range_to_unit_interval_and_constant_to_zero():
    lo, hi = R.value_ranges(STACK, "channel")
    out = R.normalize(STACK, lo, hi)
    np.testing.assert_allclose(out[0], [[0, 1 / 3], [2 / 3, 1]], rtol=1e-6)
    np.testing.assert_allclose(out[1], [[0, 0.5], [0.5, 1]])
    assert (out[2] == 0).all()
    # a fixed range narrower than the data clips
    clipped = R.normalize(STACK, 0.0, 1.0)
    assert clipped.max() == 1 and clipped.min() == 0 and clipped[0, 0, 1] == 1


def test_symmetric_ranges_put_zero_in_the_middle():
    lo, hi = R.symmetric_ranges(STACK, "channel")
    assert hi.tolist() == [3, 2, 5] and (lo == -hi).all()
    lo, hi = R.symmetric_ranges(STACK, "layer")
    assert hi.tolist() == [5, 5, 5]
    assert R.normalize(np.zeros((3, 1, 1)), lo, hi).ravel().tolist() == [0.5, 0.5, 0.5]
    with pytest.raises(ValueError):
        R.symmetric_ranges(STACK, "fixed")


def _with_non_finite_units() -> np.ndarray:
    """A random stack with one NaN unit in channel 0, +inf in channel 1, -inf in channel 2; channel 3 is finite."""
    acts = np.random.default_rng(0).normal(size=(4, 5, 6)).astype(np.float32)
    acts[0, 1, 2], acts[1, 0, 0], acts[2, 4, 5] = np.nan, np.inf, -np.inf
    return acts


def test_value_ranges_skip_non_finite_units():
    acts = _with_non_finite_units()
    finite = np.isfinite(acts)
    lo, hi = R.value_ranges(acts, "channel")
    np.testing.assert_array_equal(lo, [acts[c][finite[c]].min() for c in range(4)])
    np.testing.assert_array_equal(hi, [acts[c][finite[c]].max() for c in range(4)])
    lo, hi = R.value_ranges(acts, "layer")
    assert (lo == acts[finite].min()).all() and (hi == acts[finite].max()).all()
    # a channel without any finite unit gets the empty range (0, 0); it does not touch the layer range
    acts[1] = np.nan
    acts[1, 0, 0] = np.inf
    lo, hi = R.value_ranges(acts, "channel")
    assert lo[1] == hi[1] == 0
    lo, hi = R.value_ranges(acts, "layer")
    finite = np.isfinite(acts)
    assert (lo == acts[finite].min()).all() and (hi == acts[finite].max()).all()
    lo, hi = R.value_ranges(np.full((2, 3, 3), np.nan, dtype=np.float32), "layer")
    assert lo.tolist() == hi.tolist() == [0, 0]


def test_symmetric_ranges_skip_non_finite_units():
    acts = _with_non_finite_units()
    magnitudes = np.where(np.isfinite(acts), np.abs(acts), 0.0)
    lo, hi = R.symmetric_ranges(acts, "channel")
    np.testing.assert_array_equal(hi, magnitudes.reshape(4, -1).max(axis=1))
    assert (lo == -hi).all()
    _, hi = R.symmetric_ranges(acts, "layer")
    assert (hi == magnitudes.max()).all()


def test_channel_stats_hand_computed():
    stats = R.channel_stats(STACK)
    assert stats.mean.tolist() == [1.5, 0.0, 5.0]
    assert stats.max.tolist() == [3, 2, 5] and stats.min.tolist() == [0, -2, 5]
    assert stats.active.tolist() == [0.75, 0.25, 1.0]
    np.testing.assert_allclose(stats.std, [np.sqrt(1.25), np.sqrt(2.0), 0.0], rtol=1e-6)
    assert stats.as_array().shape == (3, 5)
    assert stats.describe(1) == "channel 1\nmean 0.000  std 1.41\nmin -2.00  max 2.00\nactive 25%"


def test_dead_channel_mask_and_threshold():
    acts = np.zeros((3, 2, 2), dtype=np.float32)
    acts[1, 0, 0] = 0.5
    acts[2] = -1.0
    assert R.dead_channel_mask(acts).tolist() == [True, False, True]
    assert R.dead_channel_mask(acts, threshold=0.6).tolist() == [True, True, True]


def test_activation_order_descending_and_stable():
    acts = np.array([1.0, 3.0, 1.0, 2.0], dtype=np.float32).reshape(4, 1, 1)
    assert R.activation_order(acts).tolist() == [1, 3, 0, 2]
    with pytest.raises(ValueError, match="'mean' or 'max'"):
        R.activation_order(acts, key="median")


# ---------------------------------------------------------------- grid geometry
def small_layout(order=()):
    # 5 channels of 2x2 maps, 2 rows x 3 cols, scale 2 -> 4x4 tiles, 1 px borders
    return R.GridLayout(count=5, rows=2, cols=3, map_height=2, map_width=2, scale=2, border=1, order=tuple(order))


def test_layout_size_and_tile_rects():
    layout = small_layout()
    assert (layout.tile_width, layout.tile_height) == (4, 4)
    assert (layout.width, layout.height) == (16, 11)
    assert layout.tile_rect(0) == (1, 1, 4, 4)
    assert layout.tile_rect(1) == (6, 1, 4, 4)
    assert layout.tile_rect(4) == (6, 6, 4, 4)


def test_channel_at_tiles_borders_empty_slots_and_outside():
    layout = small_layout()
    assert layout.channel_at(0, 0) is None  # outer border
    assert layout.channel_at(1, 1) == 0
    assert layout.channel_at(4.9, 4.9) == 0
    assert layout.channel_at(5, 1) is None  # border between columns
    assert layout.channel_at(6, 1) == 1
    assert layout.channel_at(12, 3) == 2
    assert layout.channel_at(2, 5) is None  # border between rows
    assert layout.channel_at(2, 6) == 3
    assert layout.channel_at(7, 9) == 4
    assert layout.channel_at(12, 7) is None  # empty sixth slot
    assert layout.channel_at(-1, 3) is None and layout.channel_at(16, 3) is None


def test_channel_at_follows_order():
    layout = small_layout(order=(4, 3, 2, 1, 0))
    assert layout.channel_at(1, 1) == 4
    assert layout.tile_rect(4) == (1, 1, 4, 4)
    assert layout.channel_at(7, 7) == 0
    with pytest.raises(ValueError, match="permutation"):
        small_layout(order=(0, 0, 1, 2, 3))


def test_channel_at_agrees_with_tile_rect_everywhere():
    layout = R.grid_layout(13, 3, 5, max_width=120, max_height=90, order=np.arange(13)[::-1])
    owner = np.full((layout.height, layout.width), -1)
    for ch in range(13):
        x, y, w, h = layout.tile_rect(ch)
        owner[y : y + h, x : x + w] = ch
    for y in range(layout.height):
        for x in range(layout.width):
            got = layout.channel_at(x, y)
            assert (-1 if got is None else got) == owner[y, x]


def test_map_position_inverts_scale():
    layout = small_layout()
    assert layout.map_position(1, 1) == (0, 0, 0)
    assert layout.map_position(4, 3) == (0, 1, 1)  # tile-local (3, 2) -> unit (row 1, col 1)
    assert layout.map_position(5, 1) is None


def test_grid_layout_fits_box_and_prefers_large_tiles():
    layout = R.grid_layout(16, 8, 8, max_width=100, max_height=100)
    assert layout.width <= 100 and layout.height <= 100
    assert (layout.rows, layout.cols) == (4, 4) and layout.scale == 2  # 4*16+5 = 69; scale 3 -> 101 > 100
    assert R.grid_layout(1, 3, 3, max_scale=8).scale == 8


def test_grid_layout_shrinks_maps_that_do_not_fit():
    layout = R.grid_layout(4, 100, 100, max_width=110, max_height=110)
    assert layout.shrink == 2 and layout.scale == 1
    assert (layout.tile_width, layout.tile_height) == (50, 50)
    assert layout.width <= 110 and layout.height <= 110


def test_grid_layout_rejects_bad_sizes():
    with pytest.raises(ValueError):
        R.grid_layout(0, 4, 4)
    with pytest.raises(ValueError):
        R.GridLayout(count=7, rows=2, cols=3, map_height=1, map_width=1)


def test_mosaic_places_tiles_and_marks():
    layout = small_layout(order=(1, 0, 2, 3, 4))
    tiles = np.zeros((5, 4, 4, 3), dtype=np.uint8)
    for ch in range(5):
        tiles[ch] = 10 * (ch + 1)
    out = R.mosaic(tiles, layout, marked=np.array([False, False, False, True, False]))
    assert out.shape == (11, 16, 3)
    assert tuple(out[0, 0]) == BORDER_COLOR
    assert tuple(out[2, 2]) == (20, 20, 20)  # slot 0 shows channel 1
    assert tuple(out[2, 7]) == (10, 10, 10)  # slot 1 shows channel 0
    assert tuple(out[7, 12]) == BORDER_COLOR  # empty slot
    x, y, w, h = layout.tile_rect(3)
    assert tuple(out[y, x + 1]) == MARK_COLOR and tuple(out[y + h - 1, x + 2]) == MARK_COLOR
    assert tuple(out[y + 1, x + 2]) == (40, 40, 40)  # inside, off the diagonal
    with pytest.raises(ValueError, match="tiles must be uint8"):
        R.mosaic(tiles[:, :2], layout)


def test_feature_grid_colours_each_tile_by_its_own_range():
    acts = np.zeros((2, 2, 2), dtype=np.float32)
    acts[0] = [[0, 1], [2, 3]]
    acts[1] = [[10, 10], [10, 20]]
    layout = R.GridLayout(count=2, rows=1, cols=2, map_height=2, map_width=2, scale=1, border=1)
    img, got = R.feature_grid(acts, mode="channel", cmap="gray", layout=layout)
    assert got is layout and img.shape == (4, 7, 3)
    assert img[1:3, 1:3, 0].tolist() == [[0, 85], [170, 255]]
    assert img[1:3, 4:6, 0].tolist() == [[0, 0], [0, 255]]
    img, _ = R.feature_grid(acts, mode="layer", cmap="gray", layout=layout)
    assert img[2, 5, 0] == 255 and img[1, 1, 0] == 0 and img[1, 4, 0] == 128  # 10/20 of the layer range
    img, _ = R.feature_grid(acts, mode="fixed", fixed=(0.0, 3.0), cmap="gray", layout=layout)
    assert img[1, 4, 0] == 255  # above the fixed range: clipped
    with pytest.raises(ValueError, match="layout is for"):
        R.feature_grid(np.zeros((3, 2, 2)), layout=layout)


def test_feature_grid_upscales_with_nearest_blocks():
    acts = np.arange(4, dtype=np.float32).reshape(1, 2, 2)
    img, layout = R.feature_grid(acts, cmap="gray", max_width=20, max_height=20, border=0)
    assert layout.scale == 8 and img.shape == (16, 16, 3)
    assert (img[:8, :8, 0] == 0).all() and (img[8:, 8:, 0] == 255).all()


# ---------------------------------------------------------------- resampling
def test_upscale_blocks():
    m = np.array([[1, 2], [3, 4]])
    assert R.upscale(m, 2).tolist() == [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]]
    rgb = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    up = R.upscale(rgb, 3, color=True)
    assert up.shape == (6, 6, 3) and (up[4, 5] == rgb[1, 1]).all()
    # a (C, h, w) stack whose width happens to be 3 is a stack when the caller says so
    assert R.upscale(np.zeros((5, 4, 3)), 2, color=False).shape == (5, 8, 6)
    with pytest.raises(ValueError):
        R.upscale(m, 0)


def test_downscale_averages_blocks_and_partial_edges():
    m = np.array([[1, 3, 5], [1, 3, 5], [7, 7, 9]], dtype=np.float32)
    assert R.downscale(m, 2).tolist() == [[2.0, 5.0], [7.0, 9.0]]
    assert R.downscale(np.arange(16, dtype=np.float32).reshape(1, 4, 4), 2).tolist() == [[[2.5, 4.5], [10.5, 12.5]]]


def test_resize_pixel_centre_alignment():
    row = np.array([[0.0, 1.0]])
    np.testing.assert_allclose(R.resize(row, (1, 4), "bilinear"), [[0, 0.25, 0.75, 1]])
    assert R.resize(row, (1, 4), "nearest").tolist() == [[0, 0, 1, 1]]
    rgb = np.zeros((2, 2, 3), dtype=np.uint8)
    rgb[1, 1] = 200
    out = R.resize(rgb, (4, 4), "nearest", color=True)
    assert out.shape == (4, 4, 3) and out.dtype == np.uint8 and out[3, 3, 0] == 200 and out[1, 1, 0] == 0
    with pytest.raises(ValueError, match="nearest, bilinear"):
        R.resize(row, (2, 2), "cubic")


def test_map_to_input_uses_receptive_field_geometry():
    fmap = np.array([[0.0, 1.0]])
    # units at input x = 0.5 and 2.5 (jump 2, start 0.5); input pixels 0..3
    out = R.map_to_input(fmap, (1, 4), jump=2, start=0.5)
    np.testing.assert_allclose(out, [[0.0, 0.25, 0.75, 1.0]])
    # pixels beyond the last unit hold its value
    out = R.map_to_input(fmap, (1, 6), jump=2, start=0.5)
    np.testing.assert_allclose(out[0, 3:], [1.0, 1.0, 1.0])
    out = R.map_to_input(fmap, (1, 4), jump=2, start=0.5, mode="nearest")
    assert out.tolist() == [[0, 0, 1, 1]]
    with pytest.raises(ValueError, match="both"):
        R.map_to_input(fmap, (1, 4), jump=2)
    # a probe's (C, H, W) input size is taken as it is
    np.testing.assert_array_equal(R.map_to_input(fmap, (3, 1, 4), jump=2, start=0.5),
                                  R.map_to_input(fmap, (1, 4), jump=2, start=0.5))
    assert R.map_to_input(fmap, [3, 2, 5]).shape == (2, 5)


# ---------------------------------------------------------------- overlays and panels
def test_blend_and_overlay():
    img = np.full((2, 2, 3), 100, dtype=np.uint8)
    white = np.full((2, 2, 3), 200, dtype=np.uint8)
    assert R.blend(img, white, 0.5)[0, 0, 0] == 150
    assert R.blend(img, white, np.array([[0, 1], [1, 0]], dtype=np.float32))[:, :, 0].tolist() == [[100, 200], [200, 100]]
    # zero heat with value-weighted opacity leaves the image unchanged
    assert (R.overlay_heatmap(img, np.zeros((1, 1)), alpha=0.8) == img).all()
    hot = R.overlay_heatmap(img, np.ones((1, 1)), cmap="gray", alpha=1.0)
    assert (hot == 255).all()
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        R.overlay_heatmap(img[..., 0], np.zeros((1, 1)))  # a gray picture


def test_overlay_heatmap_takes_the_pictures_attribution_overlay_takes():
    from cnnwidgets.render.attribution import attribution_overlay

    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
    heat = rng.random((3, 4))
    # a denormalised input: floats in [0, 1], with a slight overshoot, gives the picture rounded to uint8
    unit = photo / 255.0
    unit[0, 0, 0] = 1.01
    expected = R.overlay_heatmap(np.where(unit > 1, 255, photo).astype(np.uint8), heat)
    np.testing.assert_array_equal(R.overlay_heatmap(unit.astype(np.float32), heat), expected)
    np.testing.assert_array_equal(R.overlay_heatmap(unit, heat), expected)
    # what attribution_overlay refuses, overlay_heatmap refuses with the same words
    for picture, words in (
        (photo * 1.0, r"values in \[0, 1\].*astype\(np.uint8\)"),  # 0-255 floats
        (photo.astype(np.int64), r"uint8 or float in \[0, 1\], got dtype int64"),
        (photo.transpose(2, 0, 1) / 255.0, r"looks like \(C, H, W\).*transpose\(1, 2, 0\)"),
    ):
        with pytest.raises(ValueError, match=words):
            R.overlay_heatmap(picture, heat)
        with pytest.raises(ValueError, match=words):
            attribution_overlay(picture, heat)


def test_overlay_heatmap_refuses_raw_maps():
    img = np.zeros((4, 6, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"\[0, 1\].*attribution_overlay"):
        R.overlay_heatmap(img, np.full((2, 3), 7.5))  # a raw CAM would otherwise be clipped to one colour
    assert R.overlay_heatmap(img, np.full((2, 3), 1.0)).shape == (4, 6, 3)


def test_attribution_renderers_take_one_map_and_refuse_batches_and_hwc():
    from cnnwidgets.render.attribution import attribution_overlay, attribution_to_rgb

    rng = np.random.default_rng(0)
    one = rng.normal(size=(3, 5, 7)).astype(np.float32)
    # a batch of one, as the methods return it, is that image's map
    assert np.array_equal(attribution_to_rgb(one[None]), attribution_to_rgb(one))
    with pytest.raises(ValueError, match="batch of 2"):
        attribution_to_rgb(np.stack([one, one]))
    for picture in ((40, 60, 3), (16, 16, 3), (32, 32, 4)):
        with pytest.raises(ValueError, match=r"looks like \(H, W, C\)"):
            attribution_to_rgb(np.zeros(picture))
    # a 16-channel input's attribution over a narrow image is (C, H, W), not a picture
    assert attribution_to_rgb(np.ones((16, 8, 4))).shape == (8, 4, 3)
    with pytest.raises(ValueError, match="transposed"):
        attribution_overlay(np.zeros((5, 7, 3), np.uint8), np.ones((7, 5)))


def test_attribution_overlay_reduces_channels_to_their_largest_magnitude():
    from cnnwidgets.render.attribution import attribution_overlay, reduce_channels

    rng = np.random.default_rng(1)
    photo = rng.integers(0, 256, size=(12, 12, 3), dtype=np.uint8)
    grads = rng.normal(size=(3, 12, 12)).astype(np.float32)  # guided backprop's, one plane per colour
    expected = attribution_overlay(photo, reduce_channels(grads, "max_abs"), alpha=1.0)
    np.testing.assert_array_equal(attribution_overlay(photo, grads, alpha=1.0), expected)
    np.testing.assert_array_equal(attribution_overlay(photo, grads[None], alpha=1.0), expected)  # a batch of one
    assert not np.array_equal(attribution_overlay(photo, reduce_channels(grads, "sum"), alpha=1.0), expected)
    with pytest.raises(ValueError, match="batch of 2"):
        attribution_overlay(photo, np.stack([grads, grads]))


def test_signed_to_rgb_keeps_the_sign_for_any_channel_count():
    from cnnwidgets.render.attribution import signed_to_rgb

    rgb = np.zeros((3, 2, 2), dtype=np.float32)
    rgb[0, 0, 0], rgb[2, 1, 1] = 1.0, -1.0  # more red at the top left, less blue at the bottom right
    picture = signed_to_rgb(rgb, percentile=100)
    assert picture.shape == (2, 2, 3) and picture.dtype == np.uint8
    assert picture[0, 0].tolist() == [255, 128, 128]  # zero is mid gray, each channel moves on its own
    assert picture[1, 1].tolist() == [128, 128, 0]
    assert picture[0, 1].tolist() == [128, 128, 128]
    gray = np.array([[[2.0, -2.0, 0.0]]], dtype=np.float32)  # a grayscale input's (1, H, W) map
    red, blue, white = signed_to_rgb(gray, percentile=100)[0]
    assert red[0] > red[2] and blue[2] > blue[0]  # positive red, negative blue
    assert white.min() > 230 and np.ptp(white) < 20  # zero: (nearly) white
    # a batch of one is that image's map; a plane without channels is refused, with the shape asked for
    assert np.array_equal(signed_to_rgb(rgb[None], percentile=100), picture)
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        signed_to_rgb(np.ones((4, 5)))


def test_channel_image_colours_and_enlarges():
    out = R.channel_image(np.array([[0.0, 1.0]]), (2, 4), cmap="gray")
    assert out.shape == (2, 4, 3) and out[:, :, 0].tolist() == [[0, 0, 255, 255]] * 2


def test_draw_rect_clips_and_keeps_original():
    img = np.zeros((5, 5, 3), dtype=np.uint8)
    out = R.draw_rect(img, (3, 3, 4, 4), color=(255, 0, 0))
    assert img.max() == 0
    assert tuple(out[3, 3]) == (255, 0, 0) and tuple(out[4, 4]) == (255, 0, 0) and tuple(out[2, 2]) == (0, 0, 0)


def test_hstack_pads_and_aligns():
    a = np.zeros((2, 1, 3), dtype=np.uint8)
    b = np.full((1, 2, 3), 7, dtype=np.uint8)
    out = R.hstack([a, b], gap=1, background=(9, 9, 9))
    assert out.shape == (2, 4, 3)
    assert out[:, :, 0].tolist() == [[0, 9, 7, 7], [0, 9, 9, 9]]


# ---------------------------------------------------------------- encoding
def test_png_round_trip_is_exact():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, size=(7, 9, 3), dtype=np.uint8)
    back = np.asarray(Image.open(io.BytesIO(R.encode_png(img))))
    assert (back == img).all()
    gray = np.asarray(Image.open(io.BytesIO(R.encode_png(img[:, :, 0]))))
    assert (gray == img[:, :, 0]).all()


def test_jpeg_round_trip_is_close():
    img = np.zeros((16, 16, 3), dtype=np.uint8)
    img[:, 8:] = (200, 40, 40)
    data = R.encode_jpeg(img, quality=95)
    assert data[:2] == b"\xff\xd8"
    back = np.asarray(Image.open(io.BytesIO(data))).astype(int)
    assert back.shape == img.shape and np.abs(back - img).mean() < 4
    assert R.encode_image(img, "png")[:4] == b"\x89PNG"


def test_encoding_errors():
    with pytest.raises(ValueError, match="uint8"):
        R.encode_png(np.zeros((2, 2, 3)))
    with pytest.raises(ValueError, match="quality"):
        R.encode_jpeg(np.zeros((2, 2, 3), np.uint8), quality=0)
    with pytest.raises(ValueError, match="alpha"):
        R.encode_jpeg(np.zeros((2, 2, 4), np.uint8))
    with pytest.raises(ValueError, match="jpeg, png"):
        R.encode_image(np.zeros((2, 2, 3), np.uint8), "gif")


def test_quantize_indices_constant_channel_and_nan():
    acts = np.array([[[0.0, 2.0], [4.0, np.nan]], [[1.0, 1.0], [1.0, 1.0]]], dtype=np.float32)
    idx = R.quantize(acts, np.array([0.0, 1.0]), np.array([4.0, 1.0]))
    assert idx.dtype == np.uint8
    assert idx[0].tolist() == [[0, 128], [255, 0]]
    assert (idx[1] == 0).all()


def test_quantize_puts_infinities_at_the_colormap_ends_and_empties_empty_ranges():
    acts = np.array([[[np.inf, -np.inf], [np.nan, 1.0]], [[np.inf, -np.inf], [np.nan, 1.0]]], dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        idx = R.quantize(acts, np.array([0.0, 1.0]), np.array([2.0, 1.0]))
    assert idx[0].ravel().tolist() == [255, 0, 0, int(np.floor(255 * (1.0 - 0.0) / (2.0 - 0.0) + 0.5))]
    assert (idx[1] == 0).all()  # empty range: every unit, infinite or not, gets index 0


@pytest.mark.parametrize("mode", ["channel", "layer"])
def test_feature_grid_keeps_the_finite_units_of_a_channel_with_a_non_finite_one(mode):
    acts = _with_non_finite_units()
    finite = np.isfinite(acts)
    if mode == "channel":
        lo = np.array([acts[c][finite[c]].min() for c in range(4)], dtype=np.float32)[:, None, None]
    else:
        lo = acts[finite].min()
    # NaN and +-inf are drawn in the nan colour; the other units as if they were not there
    stand_in = np.where(finite, acts, lo).astype(np.float32)
    layout = R.grid_layout(4, 5, 6, max_width=80, max_height=80, border=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        img, _ = R.feature_grid(acts, mode=mode, cmap="viridis", layout=layout)
    expected, _ = R.feature_grid(stand_in, mode=mode, cmap="viridis", layout=layout)
    for channel, (row, col) in [(0, (1, 2)), (1, (0, 0)), (2, (4, 5))]:
        x, y, _, _ = layout.tile_rect(channel)
        ys, xs = slice(y + row * layout.scale, y + (row + 1) * layout.scale), \
            slice(x + col * layout.scale, x + (col + 1) * layout.scale)
        assert (img[ys, xs] == NAN_COLOR).all()
        expected[ys, xs] = NAN_COLOR
    np.testing.assert_array_equal(img, expected)
    x, y, w, h = layout.tile_rect(3)
    tile = img[y : y + h, x : x + w].reshape(-1, 3)
    assert len(np.unique(tile, axis=0)) > 20  # the finite channel keeps its detail in both modes


@pytest.mark.parametrize("nan_color", [None, (7, 8, 9)])
def test_feature_grid_mean_shrink_draws_blocks_with_non_finite_means_in_the_nan_colour(nan_color):
    acts = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    acts[0, 0, 2], acts[0, 1, 3] = np.inf, -np.inf  # block (0, 1): mean NaN
    acts[0, 2, 0] = np.inf  # block (1, 0): mean +inf
    acts[0, 3, 3] = np.nan  # block (1, 1): mean NaN
    layout = R.GridLayout(count=1, rows=1, cols=1, map_height=4, map_width=4, shrink=2, border=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        colour = {} if nan_color is None else {"nan_color": nan_color}
        img, _ = R.feature_grid(acts, mode="channel", cmap="gray", layout=layout, **colour)
    finite = acts[np.isfinite(acts)]
    lo, hi = finite.min(), finite.max()
    expected = np.round(255 * (acts[0, :2, :2].mean() - lo) / (hi - lo))
    assert img[0, 0].tolist() == [expected] * 3
    want = list(NAN_COLOR if nan_color is None else nan_color)
    assert img[0, 1].tolist() == img[1, 0].tolist() == img[1, 1].tolist() == want


def test_feature_grid_index_path_equals_tile_colouring_then_mosaic():
    rng = np.random.default_rng(3)
    acts = rng.normal(size=(7, 5, 4)).astype(np.float32)
    layout = R.grid_layout(7, 5, 4, max_width=60, max_height=60, order=[6, 5, 4, 3, 2, 1, 0])
    assert layout.scale > 1
    lo, hi = R.value_ranges(acts, "channel")
    tiles = R.upscale(R.colorize(acts, lo, hi, "magma"), layout.scale, color=True)
    dead = np.array([0, 1, 0, 0, 0, 0, 1], dtype=bool)
    expected = R.mosaic(np.ascontiguousarray(tiles), layout, marked=dead)
    got, _ = R.feature_grid(acts, mode="channel", cmap="magma", layout=layout, marked=dead)
    assert np.array_equal(got, expected)


def test_jpeg_subsampling_is_smaller_for_colour_detail():
    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    assert len(R.encode_jpeg(img, 80, subsampling=True)) < len(R.encode_jpeg(img, 80))


def test_feature_grid_stride_shrink_takes_every_nth_unit():
    acts = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    layout = R.GridLayout(count=1, rows=1, cols=1, map_height=4, map_width=4, shrink=2, border=0)
    img, _ = R.feature_grid(acts, mode="fixed", fixed=(0.0, 15.0), cmap="gray", layout=layout, shrink_mode="stride")
    assert img[:, :, 0].tolist() == [[0, 34], [136, 170]]  # units (0,0) (0,2) (2,0) (2,2): 0, 2, 8, 10 of 15
    img, _ = R.feature_grid(acts, mode="fixed", fixed=(0.0, 15.0), cmap="gray", layout=layout)
    assert img[0, 0, 0] == 43  # mean of 0, 1, 4, 5 = 2.5 -> 42.5 -> 43
    with pytest.raises(ValueError, match="shrink_mode"):
        R.feature_grid(acts, layout=layout, shrink_mode="max")


def test_four_byte_colour_table_matches_the_rgb_one():
    from cnnwidgets.render.colormaps import get_lut, get_lut32

    for name in ("viridis", "gray", "RdBu_r"):
        rgbx = get_lut32(name).view(np.uint8).reshape(256, 4)
        np.testing.assert_array_equal(rgbx[:, :3], get_lut(name))
        assert (rgbx[:, 3] == 255).all()


def test_encoding_an_rgb_view_of_four_byte_pixels_equals_encoding_packed_pixels():
    import io

    from PIL import Image

    from cnnwidgets.render.encode import _padded_pixels, encode_jpeg, encode_png

    rng = np.random.default_rng(1)
    four = rng.integers(0, 256, (20, 30, 4), dtype=np.uint8)
    view = four[..., :3]
    packed = np.ascontiguousarray(view)
    assert _padded_pixels(view) is not None and _padded_pixels(packed) is None
    assert _padded_pixels(four[2:, :, :3]) is not None  # rows further into the same buffer
    assert _padded_pixels(four[:, 1:, :3]) is None  # not whole rows
    assert encode_jpeg(view, 90) == encode_jpeg(packed, 90)
    decoded = np.asarray(Image.open(io.BytesIO(encode_png(view))).convert("RGB"))
    np.testing.assert_array_equal(decoded, packed)  # lossless: the padding byte is not a colour
    grid, _ = R.feature_grid(rng.standard_normal((5, 6, 6)).astype(np.float32))
    assert _padded_pixels(grid) is not None  # the grid renderer produces such views
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(encode_png(grid))).convert("RGB")), grid)


@pytest.mark.parametrize("backend", ["simplejpeg", "pillow"])
def test_both_jpeg_encoders_give_the_same_picture(backend, monkeypatch):
    import io

    from PIL import Image

    from cnnwidgets.render import encode

    if backend == "pillow":
        monkeypatch.setattr(encode, "_simplejpeg", None)
    elif encode._simplejpeg is None:
        pytest.skip("simplejpeg is not installed; Pillow encodes")
    rng = np.random.default_rng(4)
    four = np.repeat(np.repeat(rng.integers(0, 256, (6, 8, 4), dtype=np.uint8), 8, 0), 8, 1)
    view = four[..., :3]  # the renderers' RGB view of 4-byte pixels
    for image in (view, np.ascontiguousarray(view), view[..., 0].copy()):
        for subsampling in (False, True):
            data = encode.encode_jpeg(image, 92, subsampling=subsampling)
            back = np.asarray(Image.open(io.BytesIO(data)))
            assert back.shape == image.shape
            assert np.abs(back.astype(int) - image).mean() < (10 if subsampling else 4)
    rgb = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    assert len(encode.encode_jpeg(rgb, 80, subsampling=True)) < len(encode.encode_jpeg(rgb, 80))
    with pytest.raises(ValueError, match="alpha"):
        encode.encode_jpeg(np.zeros((2, 2, 4), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        encode.encode_jpeg(np.zeros((2, 2, 3)))


# ---------------------------------------------------------------- occlusion maps
@pytest.mark.parametrize(("size", "window", "stride"), [(7, 3, 2), (9, 2, 3), (11, 1, 2), (14, 4, 5), (20, 5, 4)])
def test_nearest_upsampling_breaks_ties_towards_the_lower_index(size, window, stride):
    positions = (size - window) // stride + 1
    centres = np.arange(positions) * stride + (window - 1) / 2
    distance = np.abs(np.arange(size)[:, None] - centres[None, :])
    assert ((distance == distance.min(axis=1, keepdims=True)).sum(axis=1) > 1).any()  # some pixel is a tie
    reference = distance.argmin(axis=1)  # argmin returns the first, i.e. lower, of equal distances
    grid = np.arange(positions, dtype=np.float32)
    rows = grid_to_pixels(grid[:, None], (size, 1), window=(window, 1), stride=(stride, 1))[:, 0]
    cols = grid_to_pixels(grid[None, :], (1, size), window=(1, window), stride=(1, stride))[0]
    labels = grid_to_pixels(grid[None, :].astype(np.int64), (1, size), window=(1, window), stride=(1, stride))[0]
    np.testing.assert_array_equal(rows, reference)
    np.testing.assert_array_equal(cols, reference)
    np.testing.assert_array_equal(labels, reference)


def test_desaturate_keeps_brightness_and_drops_colour():
    image = np.zeros((2, 3, 3), np.uint8)
    image[0, 0] = (255, 0, 0)
    image[0, 1] = (0, 0, 255)
    image[1, 2] = (200, 200, 200)
    gray = R.overlay.desaturate(image)
    assert gray.shape == image.shape and gray.dtype == np.uint8
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()
    assert gray[0, 0, 0] == 76 and gray[0, 1, 0] == 29 and gray[1, 2, 0] == 200  # ITU-R 601 luma
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        R.overlay.desaturate(image.astype(np.float32))


def _blue_sky() -> np.ndarray:
    image = np.zeros((8, 8, 3), np.uint8)
    image[...] = (20, 60, 230)  # saturated blue everywhere
    return image


def test_occlusion_overlay_on_a_gray_image_keeps_red_red_over_blue_places():
    drop = np.array([[1.0, 0.0], [0.0, -1.0]])  # falls top-left, rises bottom-right
    colour = R.occlusion.occlusion_overlay(drop, _blue_sky(), window=4, stride=4, center=0.0, alpha=0.6)
    gray = R.occlusion.occlusion_overlay(drop, _blue_sky(), window=4, stride=4, center=0.0, alpha=0.6,
                                         gray_image=True)
    falls_colour, falls_gray = colour[0, 0].astype(int), gray[0, 0].astype(int)
    assert falls_colour[2] > falls_colour[0]  # over the blue sky, a fall comes out bluish
    assert falls_gray[0] > falls_gray[2] + 30  # over the gray sky it stays red
    rises = gray[7, 7].astype(int)
    assert rises[2] > rises[0]
    unchanged = gray[0, 7].astype(int)
    assert np.ptp(unchanged) <= 3  # no change: the colormap's middle (near white) over gray


def test_attribution_overlay_on_a_gray_image_has_only_the_heatmaps_colours():
    heat = np.zeros((8, 8), np.float32)
    heat[:4, :4] = 1.0
    picture = R.attribution.attribution_overlay(_blue_sky(), heat, cmap="inferno", weight_by_value=True,
                                                gray_image=True)
    assert (picture[6, 6, 0] == picture[6, 6, 1]).all() and picture[6, 6, 1] == picture[6, 6, 2]
    assert picture[0, 0, 0] > picture[0, 0, 2]  # inferno's strong end over gray: warm, not blue
    default = R.attribution.attribution_overlay(_blue_sky(), heat, cmap="inferno", weight_by_value=True)
    assert default[6, 6, 2] > default[6, 6, 0]  # without it the image keeps its colours


def test_attribution_overlay_draws_with_inferno_unless_told_otherwise():
    heat = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    picture = R.attribution.attribution_overlay(_blue_sky(), heat, alpha=1.0, percentile=100)
    np.testing.assert_array_equal(
        picture, R.attribution.attribution_overlay(_blue_sky(), heat, alpha=1.0, percentile=100, cmap="inferno")
    )
    assert not np.array_equal(
        picture, R.attribution.attribution_overlay(_blue_sky(), heat, alpha=1.0, percentile=100, cmap="jet")
    )


def test_figures_with_many_panels_stay_within_the_width_of_an_output():
    """Wide figures are shrunk by the notebook until their labels cannot be read: the figure
    builders make their panels smaller instead."""
    from cnnwidgets.render import figures as F

    rng = np.random.default_rng(0)
    tiles = rng.random((9, 7, 7, 3))
    panels = [(f"channel {c}", tiles, tiles) for c in range(6)]
    small = F.topk_figure(panels[:1], columns=1)
    assert tuple(small.get_size_inches()) == pytest.approx((3.2 * 15 / 7, 3.2), rel=0.05)  # two grids side by side
    wide = F.topk_figure(panels, columns=6)
    assert wide.get_size_inches()[0] <= F.MAX_FIGURE_WIDTH + 1e-6
    assert [ax.get_title() for ax in wide.axes[:1]] == ["channel 0\nprojections | patches"]
    only_patches = F.topk_figure([("channel 0", None, tiles)])
    assert only_patches.axes[0].get_title() == "channel 0\npatches"
    boxes = F.part_boxes_figure([rng.random((8, 8, 3))] * 9, {"eye": [(1, 1, 3, 3)] * 9})
    assert boxes.get_size_inches()[0] <= F.MAX_FIGURE_WIDTH + 1e-6
    cells = rng.random((2, 30, 5, 5, 3))
    evolution = F.evolution_figure({"conv": cells}, list(range(30)))
    assert evolution.get_size_inches()[0] <= F.MAX_FIGURE_WIDTH + 1e-6
    values = {k: np.arange(3.0) for k in ("translation", "rotation", "scale")}
    curves = F.invariance_figure(values, {k: {"l": rng.random((3, 2))} for k in values},
                                 {k: rng.random((3, 2)) for k in values})
    assert curves.get_size_inches()[0] <= F.MAX_FIGURE_WIDTH + 1e-6
    # a row's label only in its first column: the others ran into the neighbouring panels
    assert [ax.get_ylabel() for ax in curves.axes] == ["l\ndistance", "", "", "P(true class)", "", ""]


def test_overlays_refuse_0_255_floats_and_channels_first_pictures():
    from cnnwidgets.render.attribution import attribution_overlay
    from cnnwidgets.render.occlusion import occlusion_overlay

    picture = np.full((8, 8, 3), 200.0, dtype=np.float32)  # 0-255 values stored as floats
    grid = np.zeros((2, 2), dtype=np.float32)
    with pytest.raises(ValueError, match=r"values in \[0, 1\], got values from 200 to 200.*astype\(np.uint8\)"):
        occlusion_overlay(grid, picture, window=4, stride=4)
    with pytest.raises(ValueError, match=r"values in \[0, 1\]"):
        attribution_overlay(picture, np.ones((8, 8)))
    with pytest.raises(ValueError, match=r"uint8 or float in \[0, 1\], got dtype int64.*astype\(np.uint8\)"):
        attribution_overlay(picture.astype(np.int64), np.ones((8, 8)))  # would otherwise read as [0, 1]
    with pytest.raises(ValueError, match=r"looks like \(C, H, W\).*transpose\(1, 2, 0\)"):
        occlusion_overlay(grid, np.zeros((3, 8, 8), dtype=np.float32), window=4, stride=4)
    # the same picture in [0, 1], with the slight overshoot of a denormalised input, is drawn
    unit = picture / 255
    unit[0, 0] = 1.02
    shown = occlusion_overlay(grid, unit, window=4, stride=4)
    assert shown.shape == (8, 8, 3) and shown.dtype == np.uint8
    assert attribution_overlay(unit, np.ones((8, 8))).shape == (8, 8, 3)


def test_occlusion_overlays_say_the_argument_order_when_the_picture_comes_first():
    from cnnwidgets.render.occlusion import label_overlay, occlusion_overlay

    picture = np.random.default_rng(0).random((64, 64, 3)).astype(np.float32)
    drop = np.random.default_rng(1).standard_normal((13, 13)).astype(np.float32)
    order = r"swapped.*grid first, then the picture: occlusion_overlay\(values, image"
    with pytest.raises(ValueError, match=order):
        occlusion_overlay(picture, drop, window=16, stride=4)  # attribution_overlay's order
    with pytest.raises(ValueError, match=order):
        occlusion_overlay(picture[..., 0], drop, window=16, stride=4)  # a gray picture
    with pytest.raises(ValueError, match=r"swapped.*label_overlay\(labels, image"):
        label_overlay(picture, np.zeros((13, 13), np.int64), window=16, stride=4)
    # the other shape and range errors say the order too
    with pytest.raises(ValueError, match=r"values in \[0, 1\].*occlusion_overlay\(values, image"):
        occlusion_overlay(drop[:2, :2], picture * 255, window=16, stride=16)
    with pytest.raises(ValueError, match=r"2-D \(rows, cols\) grid.*occlusion_overlay\(values, image"):
        occlusion_overlay(picture, picture, window=16, stride=4)
    # the right order is drawn
    assert occlusion_overlay(drop, picture, window=16, stride=4).shape == (64, 64, 3)


# ---------------------------------------------------------------- argument checks: clear errors, no garbage
A3 = np.random.default_rng(7).random((8, 6, 6)).astype(np.float32)
IMG = np.zeros((32, 32, 3), dtype=np.uint8)


@pytest.mark.parametrize(("jump", "start", "message"), [
    (4, float("nan"), "start must be a finite number, got nan"),
    (float("nan"), 1.5, "jump must be a finite number, got nan"),
    (float("inf"), 1.5, "jump must be a finite number, got inf"),
    (4, -float("inf"), "start must be a finite number"),
])
def test_receptive_field_geometry_must_be_finite(jump, start, message):
    fmap = np.random.default_rng(0).random((6, 6))
    with pytest.raises(ValueError, match=message):
        R.map_to_input(fmap, (32, 32), jump=jump, start=start)
    with pytest.raises(ValueError, match=message):
        R.channel_image(fmap, (32, 32), jump=jump, start=start)
    with pytest.raises(ValueError, match=message):
        R.overlay_heatmap(IMG, fmap, jump=jump, start=start)


def test_map_to_input_refuses_geometry_and_sizes_that_are_not_numbers():
    fmap = np.zeros((6, 6))
    with pytest.raises(TypeError, match="jump must be a real number, got str '4'"):
        R.map_to_input(fmap, (32, 32), jump="4", start=1.5)
    with pytest.raises(ValueError, match="jump must be positive"):
        R.map_to_input(fmap, (32, 32), jump=0, start=1.5)
    with pytest.raises(TypeError, match=r"input_size must be a pair \(height, width\) of ints"):
        R.map_to_input(fmap, (32.5, 32), jump=4, start=1.5)
    with pytest.raises(ValueError, match="at least one row and one column"):
        R.map_to_input(np.zeros((0, 6)), (32, 32), jump=4, start=1.5)
    # numpy numbers, as a LayerInfo may hold, are fine
    assert R.map_to_input(fmap, (32, 32), jump=np.float32(4), start=np.float64(1.5)).shape == (32, 32)


def test_grid_layout_refuses_a_zero_box_and_non_int_counts():
    with pytest.raises(ValueError, match="max_width must be an int >= 1, got 0"):
        R.grid_layout(8, 6, 6, max_width=0)
    with pytest.raises(ValueError, match="max_height must be an int >= 1, got 0"):
        R.grid_layout(8, 6, 6, max_height=0)
    with pytest.raises(TypeError, match="count must be an int, got float 8.0"):
        R.grid_layout(8.0, 6, 6)
    with pytest.raises(TypeError, match="border must be an int, got bool"):
        R.grid_layout(8, 6, 6, border=True)
    with pytest.raises(ValueError, match="border must be an int >= 0"):
        R.grid_layout(8, 6, 6, border=-1)
    assert R.grid_layout(np.int64(8), np.int64(6), 6).count == 8  # shape entries and numpy ints are ints


@pytest.mark.parametrize("render", [R.normalize, R.colorize, R.quantize])
def test_per_channel_ranges_must_have_one_value_per_channel(render):
    with pytest.raises(ValueError, match=r"lo must be a scalar or an array of shape \(8,\), one value per channel, "
                                         r"got shape \(3,\)"):
        render(A3, np.zeros(3), np.ones(8))
    with pytest.raises(ValueError, match=r"hi must be a scalar or an array of shape \(8,\)"):
        render(A3, 0.0, np.ones(3))
    with pytest.raises(TypeError, match="lo must be a number or an array of 8 numbers"):
        render(A3, "low", 1.0)


@pytest.mark.parametrize("render", [R.normalize, R.colorize, R.quantize])
def test_per_channel_ranges_must_be_finite(render):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # quantize(-inf, inf) used to warn and draw zeros
        with pytest.raises(ValueError, match="lo must be finite, got -inf"):
            render(A3, -np.inf, np.inf)
        with pytest.raises(ValueError, match="lo must be finite, got nan"):
            render(A3, np.nan, 1.0)
        hi = np.ones(8)
        hi[5] = np.inf
        with pytest.raises(ValueError, match=r"hi must be finite, got inf \(channel 5\)"):
            render(A3, 0.0, hi)


def test_empty_ranges_draw_the_lowest_colour_and_reversed_ones_are_refused():
    # constant channels (lo == hi) are the usual case: shown as 0; a reversed range (lo > hi) is refused
    lo, hi = np.zeros(8), np.ones(8)
    lo[2] = hi[2] = 0.5
    assert (R.normalize(A3, lo, hi)[2] == 0).all()
    assert (R.quantize(A3, lo, hi)[2] == 0).all()
    colours = R.colorize(A3, lo, hi, "viridis")
    assert (colours[2] == R.get_lut("viridis")[0]).all()
    np.testing.assert_allclose(R.normalize(A3, lo, hi)[0], A3[0], rtol=1e-6)
    lo[3], hi[3] = 1.0, 0.0
    for render in (R.normalize, R.quantize, R.colorize):
        with pytest.raises(ValueError, match=r"lo must be <= hi, got lo=1, hi=0 \(channel 3\)"):
            render(A3, lo, hi)
    assert "reversed range" in R.normalize.__doc__ and "reversed range" in R.quantize.__doc__


def test_value_ranges_fixed_must_be_a_finite_pair():
    with pytest.raises(TypeError, match=r"fixed must be a pair \(lo, hi\).*got float 0.5"):
        R.value_ranges(A3, "fixed", fixed=0.5)
    with pytest.raises(ValueError, match=r"fixed must be a pair \(lo, hi\).*got 3 parts"):
        R.value_ranges(A3, "fixed", fixed=(0.0, 1.0, 2.0))
    with pytest.raises(ValueError, match="fixed lo must be finite, got nan"):
        R.value_ranges(A3, "fixed", fixed=(np.nan, 1.0))
    with pytest.raises(ValueError, match="fixed hi must be finite, got inf"):
        R.value_ranges(A3, "fixed", fixed=(0.0, np.inf))


def test_blend_alpha_must_be_a_scalar_or_the_images_shape_and_not_nan():
    with pytest.raises(ValueError, match=r"alpha must be a scalar or an array of the image's shape \(H, W\) = "
                                         r"\(32, 32\), got shape \(3, 3\)"):
        R.blend(IMG, IMG, np.zeros((3, 3)))
    with pytest.raises(ValueError, match=r"alpha must lie in \[0, 1\], got values from nan"):
        R.blend(IMG, IMG, np.nan)


def test_colours_must_be_three_ints_in_0_255():
    values = np.full((2, 2), np.nan)
    with pytest.raises(ValueError, match=r"nan_color must be an RGB triple of ints in 0..255, got 2 values"):
        R.apply_colormap(values, nan_color=(0, 0))
    with pytest.raises(ValueError, match=r"nan_color must be an RGB triple of ints in 0..255, got \(300, 0, 0\)"):
        R.apply_colormap(values, nan_color=(300, 0, 0))
    with pytest.raises(TypeError, match=r"nan_color must be an RGB triple of ints.*a float"):
        R.apply_colormap(values, nan_color=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="nan_color must be an RGB triple"):
        R.colorize(A3, 0.0, 1.0, nan_color=(0, 0, -1))
    with pytest.raises(ValueError, match=r"color must be an RGB triple of ints in 0..255, got \(256, 0, 0\)"):
        R.draw_rect(IMG, (0, 0, 8, 8), color=(256, 0, 0))
    with pytest.raises(ValueError, match=r"background must be an RGB triple of ints in 0..255, got \(-1, 0, 0\)"):
        R.hstack([IMG, IMG], background=(-1, 0, 0))
    layout = small_layout()
    with pytest.raises(ValueError, match="border_color must be an RGB triple"):
        R.mosaic(np.zeros((5, 4, 4, 3), np.uint8), layout, border_color=(0, 0, 999))
    # integer arrays are colours too
    assert R.apply_colormap(values, nan_color=np.array([1, 2, 3], np.uint8))[0, 0].tolist() == [1, 2, 3]


def test_resize_refuses_sizes_that_are_not_int_pairs_and_images_without_the_axes():
    with pytest.raises(TypeError, match=r"size must be a pair \(height, width\) of ints >= 1, got int 12"):
        R.resize(A3, 12)
    with pytest.raises(TypeError, match=r"size must be a pair \(height, width\) of ints >= 1, got \(12.9, 12.9\)"):
        R.resize(A3, (12.9, 12.9))
    with pytest.raises(ValueError, match=r"size must be a pair \(height, width\) of ints >= 1, got 3 values"):
        R.resize(A3, (12, 12, 3))
    with pytest.raises(ValueError, match=r"resize with color=True needs an image \(H, W, K\), got shape \(6, 6\)"):
        R.resize(A3[0], (12, 12), color=True)
    with pytest.raises(ValueError, match="resize needs at least one row and one column"):
        R.resize(np.zeros((0, 4)), (3, 3))
    assert R.resize(A3, (12, 9)).shape == (8, 12, 9)


def test_draw_rect_refuses_malformed_rects_and_widths():
    with pytest.raises(ValueError, match=r"rect must be four numbers \(x, y, w, h\), got 3 values"):
        R.draw_rect(IMG, (0, 0, 8))
    with pytest.raises(ValueError, match="rect h must be a finite number, got nan"):
        R.draw_rect(IMG, (0, 0, 8, np.nan))
    with pytest.raises(ValueError, match="width must be an int >= 1, got 0"):
        R.draw_rect(IMG, (0, 0, 8, 8), width=0)
    with pytest.raises(ValueError, match="width must be an int >= 1, got -3"):
        R.draw_rect(IMG, (0, 0, 8, 8), width=-3)
    with pytest.raises(TypeError, match="width must be an int, got float 1.5"):
        R.draw_rect(IMG, (0, 0, 8, 8), width=1.5)
    # an occluder box arrives as floats (a CFloat trait): drawn as its ints
    assert (R.draw_rect(IMG, (2.0, 3.0, 8.0, 8.0)) == R.draw_rect(IMG, (2, 3, 8, 8))).all()
    thick = R.draw_rect(IMG, (0, 0, 8, 8), width=2)
    assert thick[1, 4].tolist() == [255, 255, 255] and thick[2, 4].tolist() == [0, 0, 0]


def test_mosaic_and_feature_grid_refuse_a_layout_that_is_not_one():
    with pytest.raises(TypeError, match="layout must be a GridLayout.*got NoneType"):
        R.mosaic(np.zeros((5, 4, 4, 3), np.uint8), None)
    with pytest.raises(TypeError, match="layout must be a GridLayout.*got dict"):
        R.feature_grid(A3, layout={"rows": 2})


def test_encoders_refuse_empty_images_and_non_int_settings():
    for shape in ((0, 0, 3), (0, 5, 3), (5, 0), (5, 0, 4)):
        with pytest.raises(ValueError, match=r"cannot encode an empty image.*got shape"):
            R.encode_jpeg(np.zeros(shape, np.uint8))
        with pytest.raises(ValueError, match=r"cannot encode an empty image"):
            R.encode_png(np.zeros(shape, np.uint8))
    for quality in (True, "90", 50.5, 90.0):
        with pytest.raises(TypeError, match="JPEG quality must be an int"):
            R.encode_jpeg(IMG, quality)
    with pytest.raises(ValueError, match=r"JPEG quality must be an int in 1..95, got 96"):
        R.encode_jpeg(IMG, 96)
    with pytest.raises(TypeError, match="PNG compress_level must be an int"):
        R.encode_png(IMG, 1.5)
    with pytest.raises(ValueError, match=r"expected an image of shape \(H, W\), \(H, W, 1\), \(H, W, 3\) or \(H, W, 4\)"):
        R.encode_jpeg(np.zeros((4, 4, 2), np.uint8))
    assert R.encode_jpeg(IMG, np.int64(80))[:2] == b"\xff\xd8"


@pytest.mark.parametrize("factor", [1.5, 2.7, 2.0, "2", True])
def test_scale_factors_must_be_ints(factor):
    with pytest.raises(TypeError, match="upscale factor must be an int"):
        R.upscale(IMG, factor, color=True)
    with pytest.raises(TypeError, match="downscale factor must be an int"):
        R.downscale(A3, factor)


def test_upscale_and_resize_ask_whether_a_uint8_rgb_array_is_a_picture_or_a_stack():
    rgb = np.random.default_rng(3).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    for call in (lambda: R.upscale(rgb, 2), lambda: R.resize(rgb, (64, 64), "nearest"),
                 lambda: R.upscale(np.zeros((32, 32, 4), np.uint8), 2)):
        with pytest.raises(ValueError, match="may be a picture .* or a stack .*color=True for a picture, "
                                             "color=False for a stack"):
            call()
    assert R.upscale(rgb, 2, color=True).shape == (64, 64, 3)
    assert R.resize(rgb, (64, 64), "nearest", color=True).shape == (64, 64, 3)
    assert R.upscale(rgb, 2, color=False).shape == (32, 64, 6)  # asked for: a stack of 32 maps
    assert R.upscale(rgb.astype(np.float32), 2, color=False).shape == (32, 64, 6)
    with pytest.raises(ValueError, match="the float32 array of shape .* may be a picture"):
        R.upscale(rgb.astype(np.float32), 2)  # floats are asked about too
    with pytest.raises(ValueError, match=r"upscale with color=True needs an image \(H, W, K\)"):
        R.upscale(rgb[..., 0], 2, color=True)


def test_hstack_refuses_negative_gaps():
    with pytest.raises(ValueError, match="gap must be an int >= 0, got -5"):
        R.hstack([IMG, IMG], gap=-5)
    with pytest.raises(TypeError, match="gap must be an int, got float"):
        R.hstack([IMG, IMG], gap=1.5)
    assert R.hstack([IMG, IMG], gap=0).shape == (32, 64, 3)


def test_a_colour_checked_once_is_not_taken_for_an_equal_tuple_of_floats():
    from cnnwidgets.render._checks import check_color

    assert check_color((1, 2, 3)).tolist() == [1, 2, 3]
    with pytest.raises(TypeError, match="RGB triple of ints"):
        check_color((1.0, 2, 3))  # equal to (1, 2, 3) as a tuple, and so to a cache keyed by it
    kept = check_color((1, 2, 3))
    with pytest.raises(ValueError, match="read-only"):
        kept[0] = 9  # the kept array is shared between calls


def test_resize_image_keeps_pictures_uint8_rgb_defaults_to_nearest_and_documents_it():
    image = np.array([[[0, 0, 0], [255, 255, 255]]], np.uint8)  # (1, 2, 3): black, white
    out = R.resize_image(image, (1, 4))
    assert out.dtype == np.uint8 and out.shape == (1, 4, 3)
    assert out[0, :, 0].tolist() == [0, 0, 255, 255]  # nearest: sharp, no gray in between
    smooth = R.resize_image(image, (1, 4), "bilinear")
    assert smooth.dtype == np.uint8 and 0 < smooth[0, 1, 0] < 255
    with pytest.raises(ValueError, match=r"uint8 RGB array of shape \(H, W, 3\), got float32"):
        R.resize_image(image.astype(np.float32) / 255, (2, 2))
    with pytest.raises(ValueError, match="uint8 RGB array"):
        R.resize_image(image[..., 0], (2, 2))
    doc = R.resize_image.__doc__
    for part in ("Args:", "Returns:", "Raises:", '"nearest"', "uint8", "float"):
        assert part in doc, part


def test_grid_layout_tile_sizes_are_documented():
    for name in ("tile_height", "tile_width"):
        doc = getattr(R.GridLayout, name).__doc__
        assert doc and "pixels" in doc, name


def _dotted_references(text: str) -> list[tuple[str, str]]:
    import re

    return re.findall(r":(mod|func|class|data):`~?(cnnwidgets\.[A-Za-z_.]+)`", text)


def test_render_docstrings_name_objects_that_the_dotted_paths_reach():
    # A module whose function has its name is hidden by it (``cnnwidgets.render.normalize`` is the
    # function): a docstring that names the module by that path points a reader at the function.
    import importlib
    import inspect

    found = 0
    for path in sorted(RENDER_DIR.glob("*.py")):
        for role, dotted in _dotted_references(path.read_text()):
            parts = dotted.split(".")
            obj = importlib.import_module("cnnwidgets")
            for i, part in enumerate(parts[1:], start=2):
                if not hasattr(obj, part):  # a submodule not imported yet
                    importlib.import_module(".".join(parts[:i]))
                obj = getattr(obj, part)
            found += 1
            if role == "mod":
                assert inspect.ismodule(obj), f"{path.name}: :mod:`{dotted}` reaches {obj!r}, not a module"
            elif role == "func":
                assert inspect.isfunction(obj), f"{path.name}: :func:`{dotted}` reaches {obj!r}"
            elif role == "class":
                assert inspect.isclass(obj), f"{path.name}: :class:`{dotted}` reaches {obj!r}"
            else:
                assert not inspect.ismodule(obj) and not callable(obj), f"{path.name}: :data:`{dotted}`"
    assert found >= 10


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_attribution_renderers_refuse_values_that_are_not_finite_rather_than_draw_them_as_zero(bad):
    from cnnwidgets.render.attribution import attribution_overlay, attribution_to_rgb, gradient_to_rgb, signed_to_rgb

    values = np.random.default_rng(0).normal(size=(3, 16, 16)).astype(np.float32)
    values[:, 8, 8] = bad
    picture = np.full((16, 16, 3), 100, np.uint8)
    for draw in (gradient_to_rgb, signed_to_rgb, lambda v: attribution_to_rgb(v, signed=False),
                 lambda v: attribution_overlay(picture, v)):
        with pytest.raises(ValueError, match=r"holds 3 of 768 values that are not finite"):
            draw(values)
    values[:, 8, 8] = 0.0
    assert gradient_to_rgb(values).shape == (16, 16, 3)  # finite values draw


def test_overlay_heatmap_refuses_nan_heat():
    picture = np.full((32, 32, 3), 100, np.uint8)
    heat = np.full((8, 8), 0.5, np.float32)
    heat[:4] = np.nan
    with pytest.raises(ValueError, match=r"32 are NaN"):
        R.overlay_heatmap(picture, heat)


def test_a_range_wider_than_float32_reaches_is_still_drawn_and_normalised():
    stack = np.array([[[-3e38, 3e38], [0.0, 1.0]]], np.float32)
    out = R.normalize(stack, np.array([-3e38]), np.array([3e38]))
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out[0], [[0.0, 1.0], [0.5, 0.5]], atol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow on the way
        indices = R.quantize(stack, np.array([-3e38]), np.array([3e38]))
    assert indices[0].tolist() == [[0, 255], [128, 128]]


@pytest.mark.parametrize("function", ["value_ranges", "channel_stats", "dead_channel_mask", "symmetric_ranges",
                                      "activation_order"])
def test_stacks_of_empty_maps_get_a_clear_error(function):
    with pytest.raises(ValueError, match=r"has empty maps \(no row or no column\)"):
        getattr(R, function)(np.zeros((3, 0, 4), np.float32))


def test_colormap_strip_runs_from_the_low_end_to_the_high_end():
    from cnnwidgets.render import colormap_strip, get_lut

    strip = colormap_strip("magma", 9, 3)
    assert strip.shape == (3, 9, 3) and strip.dtype == np.uint8
    lut = get_lut("magma")
    np.testing.assert_array_equal(strip[1], lut[[0, 32, 64, 96, 128, 159, 191, 223, 255]])  # column j: j / 8
    assert (strip == strip[:1]).all()  # every row alike
    np.testing.assert_array_equal(colormap_strip("gray", 2, 1)[0], [[0, 0, 0], [255, 255, 255]])
    with pytest.raises(ValueError, match="unknown colormap"):
        colormap_strip("rainbow-ish")
    with pytest.raises(ValueError, match="positive ints"):
        colormap_strip("gray", 0, 4)
