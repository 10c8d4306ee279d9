"""Seeded oracle fuzz of the render layer: are the pixels right?

What is driven (random valid inputs from fixed seeds): :func:`~cnnwidgets.render.apply_colormap`,
:func:`~cnnwidgets.render.quantize`, :func:`~cnnwidgets.render.colorize`,
:func:`~cnnwidgets.render.normalize`, :func:`~cnnwidgets.render.value_ranges` (all three modes),
:func:`~cnnwidgets.render.symmetric_ranges`, :func:`~cnnwidgets.render.activation_order`,
:func:`~cnnwidgets.render.grid_layout` and :class:`~cnnwidgets.render.GridLayout`'s geometry,
:func:`~cnnwidgets.render.feature_grid` (orders, pages, enlarged and shrunk tiles with both shrink
modes, marks of both kinds, NaN and infinite units), :func:`~cnnwidgets.render.mosaic`,
:func:`~cnnwidgets.render.upscale`, :func:`~cnnwidgets.render.downscale`,
:func:`~cnnwidgets.render.resize`, :func:`~cnnwidgets.render.map_to_input`,
:func:`~cnnwidgets.render.blend`, :func:`~cnnwidgets.render.overlay_heatmap`,
:func:`~cnnwidgets.render.channel_image`, :func:`~cnnwidgets.render.draw_rect`,
:func:`~cnnwidgets.render.hstack`, :func:`~cnnwidgets.render.resize_image`, the attribution
pictures (signed and unsigned colours, gradient pictures, overlays), the occlusion maps
(:func:`grid_to_pixels` in both upsample modes, :func:`fill_nearest`, :func:`occlusion_overlay`) and
the kernel tiles (:func:`signed_to_rgb`, :func:`tile_grid`, :func:`kernel_mosaic` in its three
layouts). Inputs: shapes from 1x1 to odd and non-square ones, constant maps, negative values,
NaN and +-inf where the docstrings say how they are drawn, float16/32/64, and non-contiguous views.

The oracles are independent recomputations in plain numpy (float64, or exact integer arithmetic)
of the formulas the docstrings give: a colour index is ``round(255 * clip((v - lo) / (hi - lo), 0,
1))`` of the float32 value (NaN and -inf at 0, +inf at 255, an empty range at 0); ranges are the
finite minima and maxima; each tile of a mosaic lies at ``border + slot * (tile + border)`` and
shows the channel its slot names, each of its pixels the unit it enlarges (or the mean of the block
it shrinks); the chosen layout has the largest tiles any column count gives; resampling samples
output pixel ``p`` at ``(p + 0.5) * n / m - 0.5`` (stretch) or ``(p - start) / jump`` (receptive
fields), nearest or bilinear; a blend is ``(1 - a) * image + a * color``; an outline covers the
pixels of the rectangle within ``width`` of its edge; and so on. Comparisons are exact, except
where the documented formula rounds: an index may differ by one where the exact value lies within
float32's error of a rounding tie, a blend (computed in 1/256 steps) by one level, a float result
by float32's error.

Regression tests at the end pin the bugs this found; each has a comment ``# was:`` saying what
happened before its fix.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from cnnwidgets import render as R
from cnnwidgets.render import attribution as A
from cnnwidgets.render import kernels as K
from cnnwidgets.render import occlusion as O
from cnnwidgets.render.grid import BORDER_COLOR, DATA_MARK_COLOR, MARK_COLOR, NAN_COLOR

SEEDS = range(6)
CMAPS = R.colormap_names()

for _name in CMAPS:  # the tables are read from matplotlib once, here
    R.get_lut(_name)


@pytest.fixture(autouse=True)
def _numpy_warnings_are_errors():
    with np.errstate(all="raise", under="ignore"):
        yield


# ------------------------------------------------------------------------------------------ helpers


def _shape2(rng: np.random.Generator, most: int = 9) -> tuple[int, int]:
    """A map size: 1x1, thin, odd, non-square."""
    kind = rng.integers(4)
    if kind == 0:
        return 1, 1
    if kind == 1:
        return (1, int(rng.integers(1, most + 1))) if rng.random() < 0.5 else (int(rng.integers(1, most + 1)), 1)
    return int(rng.integers(1, most + 1)), int(rng.integers(1, most + 1))


def _values(rng: np.random.Generator, shape: tuple[int, ...], *, nonfinite: bool = False,
            constant: bool = True) -> np.ndarray:
    """float64 values of ``shape``: signed, of a random magnitude and offset, some channels constant,
    optionally with NaN and +-inf."""
    scale = 10.0 ** rng.uniform(-3, 3)
    values = rng.normal(rng.uniform(-2, 2) * scale, scale, size=shape)
    if rng.random() < 0.3:
        values = np.round(values)  # repeated values and exact ends
    if constant and len(shape) == 3 and rng.random() < 0.4:
        values[rng.integers(shape[0])] = rng.normal() * scale
    if nonfinite and rng.random() < 0.7:
        flat = values.reshape(-1)
        for _ in range(int(rng.integers(1, 4))):
            flat[rng.integers(flat.size)] = rng.choice([np.nan, np.inf, -np.inf])
        if len(shape) == 3 and rng.random() < 0.3:
            values[rng.integers(shape[0])] = np.nan  # a channel with no finite unit
    return values


def _as_given(rng: np.random.Generator, values: np.ndarray) -> np.ndarray:
    """``values`` as the caller may pass them: float16, float32 or float64, maybe a strided view.
    The oracles read them back as the renderers do (float32)."""
    dtype = rng.choice([np.float16, np.float32, np.float64])
    with np.errstate(over="ignore"):
        typed = values.astype(dtype)
    if rng.random() < 0.5:  # the same values as a non-contiguous view
        wide = np.zeros(typed.shape[:-1] + (typed.shape[-1] * 2,), dtype=typed.dtype)
        wide[..., ::2] = typed
        typed = wide[..., ::2]
        assert not typed.flags.c_contiguous or typed.shape[-1] == 1
    return typed


def _f32(values: np.ndarray) -> np.ndarray:
    """The values as the renderers read them (float32), as float64 for exact arithmetic."""
    with np.errstate(over="ignore"):
        return np.asarray(values).astype(np.float32).astype(np.float64)


def _index_oracle(v: np.ndarray, lo, hi, tol: float = 1e-4) -> tuple[np.ndarray, np.ndarray]:
    """``round(255 * clip((v - lo) / (hi - lo), 0, 1))`` per channel (NaN and -inf 0, +inf 255, an
    empty range 0), and where the exact value is within float32's error of a tie (either index is right)."""
    lo = np.asarray(lo, dtype=np.float64)
    hi = np.asarray(hi, dtype=np.float64)
    shape = (-1,) + (1,) * (v.ndim - 1)
    lo, hi = np.broadcast_to(lo, (v.shape[0],)).reshape(shape), np.broadcast_to(hi, (v.shape[0],)).reshape(shape)
    span = hi - lo
    with np.errstate(all="ignore"):
        x = np.where(span > 0, (v - lo) / np.where(span > 0, span, 1.0), 0.0) * 255.0
        x = np.where(np.isnan(v) | (span <= 0), 0.0, x)
        x = np.clip(x, 0.0, 255.0)
        index = np.floor(x + 0.5)
        near_tie = np.abs(x - np.floor(x) - 0.5) < tol + 1e-6 * np.abs(x)
    return index.astype(np.int64), near_tie


def _assert_index(got: np.ndarray, want: np.ndarray, tie: np.ndarray, what: str) -> None:
    got = got.astype(np.int64)
    off = got != want
    assert not (off & ~tie).any(), f"{what}: index {got[off & ~tie][:5]} where {want[off & ~tie][:5]} is right"
    assert (np.abs(got - want) <= 1).all(), what


def _lut_index(pixels: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """The table entry of each pixel; -1 where the colour is no entry's. Colours that several entries
    share (``gray`` has none; some maps repeat a colour) give the first such entry."""
    codes = lut.astype(np.int64) @ np.array([65536, 256, 1])
    first = {}
    for i, code in enumerate(codes):
        first.setdefault(int(code), i)
    flat = pixels.reshape(-1, 3).astype(np.int64) @ np.array([65536, 256, 1])
    return np.array([first.get(int(c), -1) for c in flat], dtype=np.int64).reshape(pixels.shape[:-1])


def _colours_equal_up_to_tie(got: np.ndarray, want_index: np.ndarray, tie: np.ndarray, lut: np.ndarray,
                             what: str) -> None:
    """Pixels ``got`` are ``lut[want_index]``, or at a tie the neighbouring entry."""
    exact = (got == lut[want_index]).all(-1)
    up = (got == lut[np.minimum(want_index + 1, 255)]).all(-1)
    down = (got == lut[np.maximum(want_index - 1, 0)]).all(-1)
    bad = ~exact & ~(tie & (up | down))
    assert not bad.any(), f"{what}: {int(bad.sum())} pixels of the wrong colour, first at {np.argwhere(bad)[0]}"


# ---------------------------------------------------------------------------- colormaps, ranges


@pytest.mark.parametrize("seed", SEEDS)
def test_apply_colormap_is_the_table_entry_of_the_rounded_value(seed):
    rng = np.random.default_rng(seed)
    for _ in range(8):
        shape = _shape2(rng, 12) if rng.random() < 0.8 else (2, *_shape2(rng, 5))
        values = rng.uniform(-0.2, 1.2, size=shape)
        values[rng.random(shape) < 0.1] = rng.integers(0, 256) / 255  # exact table positions
        if rng.random() < 0.5:
            flat = values.reshape(-1)
            flat[rng.integers(flat.size)] = rng.choice([np.nan, np.inf, -np.inf])
        given = _as_given(rng, values)
        name = str(rng.choice(CMAPS))
        nan_color = tuple(int(c) for c in rng.integers(0, 256, 3))
        got = R.apply_colormap(given, name, nan_color=nan_color)
        v = _f32(given)
        index, tie = _index_oracle(v.reshape(1, -1), 0.0, 1.0)
        index, tie = index.reshape(v.shape), tie.reshape(v.shape)
        lut = R.get_lut(name)
        assert got.shape == v.shape + (3,) and got.dtype == np.uint8
        nan = np.isnan(v)
        assert (got[nan] == nan_color).all()
        _colours_equal_up_to_tie(got[~nan], index[~nan], tie[~nan], lut, f"apply_colormap {name}")


@pytest.mark.parametrize("seed", SEEDS)
def test_quantize_colorize_normalize_follow_the_formula(seed):
    rng = np.random.default_rng(100 + seed)
    for _ in range(8):
        c = int(rng.integers(1, 5))
        values = _values(rng, (c, *_shape2(rng, 8)), nonfinite=True)
        given = _as_given(rng, values)
        v = _f32(given)
        fin = [r[np.isfinite(r)] for r in v.reshape(c, -1)]
        low = np.array([f.min() if f.size else 0.0 for f in fin])
        high = np.array([f.max() if f.size else 0.0 for f in fin])
        kind = rng.integers(3)
        if kind == 0:  # a range inside the values: clipping at both ends
            lo = low + (high - low) * rng.uniform(0, 0.4, c)
            hi = high - (high - low) * rng.uniform(0, 0.4, c)
        elif kind == 1:  # an empty range somewhere
            lo, hi = low.copy(), high.copy()
            hi[rng.integers(c)] = lo[rng.integers(c)] = 1.5
        else:
            lo, hi = float(low.min()), float(high.max())
        lo32 = np.asarray(lo, dtype=np.float32)
        hi32 = np.maximum(np.asarray(hi, dtype=np.float32), lo32)
        index, tie = _index_oracle(v, lo32, hi32)
        got = R.quantize(given, lo32, hi32)
        _assert_index(got, index, tie, "quantize")
        name = str(rng.choice(CMAPS))
        rgb = R.colorize(given, lo32, hi32, name, nan_color=(1, 2, 3))
        nan = np.isnan(v)
        assert (rgb[nan] == (1, 2, 3)).all()
        _colours_equal_up_to_tie(rgb[~nan], index[~nan], tie[~nan], R.get_lut(name), "colorize")
        finite_in = np.isfinite(v)
        norm = R.normalize(np.where(finite_in, v, 0.0), lo32, hi32)
        lo64 = np.broadcast_to(lo32.astype(np.float64), (c,))[:, None, None]
        hi64 = np.broadcast_to(hi32.astype(np.float64), (c,))[:, None, None]
        span = hi64 - lo64
        want = np.where(span > 0, np.clip((np.where(finite_in, v, 0.0) - lo64) / np.where(span > 0, span, 1), 0, 1),
                        0.0)
        assert norm.dtype == np.float32
        np.testing.assert_allclose(norm, want, rtol=0, atol=4e-6)


@pytest.mark.parametrize("seed", SEEDS)
def test_value_ranges_symmetric_ranges_and_order(seed):
    rng = np.random.default_rng(200 + seed)
    for _ in range(8):
        c = int(rng.integers(1, 6))
        values = _values(rng, (c, *_shape2(rng, 7)), nonfinite=True)
        given = _as_given(rng, values)
        v = _f32(given)
        rows = v.reshape(c, -1)
        fin = [r[np.isfinite(r)] for r in rows]
        want_lo = np.array([f.min() if f.size else 0.0 for f in fin])
        want_hi = np.array([f.max() if f.size else 0.0 for f in fin])
        lo, hi = R.value_ranges(given, "channel")
        assert lo.dtype == np.float32 and lo.shape == (c,)
        np.testing.assert_array_equal(lo, want_lo)
        np.testing.assert_array_equal(hi, want_hi)
        every = np.concatenate(fin)
        layer = (every.min(), every.max()) if every.size else (0.0, 0.0)
        lo, hi = R.value_ranges(given, "layer")
        np.testing.assert_array_equal(lo, np.full(c, layer[0]))
        np.testing.assert_array_equal(hi, np.full(c, layer[1]))
        low = rng.normal(size=c)
        fixed = (low, low + rng.uniform(0, 2, c))
        lo, hi = R.value_ranges(given, "fixed", fixed=fixed)
        np.testing.assert_array_equal(lo, fixed[0].astype(np.float32))
        np.testing.assert_array_equal(hi, fixed[1].astype(np.float32))
        mags = np.array([np.abs(f).max() if f.size else 0.0 for f in fin])
        lo, hi = R.symmetric_ranges(given, "channel")
        np.testing.assert_array_equal(hi, mags)
        np.testing.assert_array_equal(lo, -mags)
        lo, hi = R.symmetric_ranges(given, "layer")
        np.testing.assert_array_equal(hi, np.full(c, mags.max()))
        # the order: whole numbers, so that float32 means are exact enough to order as float64 ones do
        ints = rng.integers(-3, 4, size=(c, *_shape2(rng, 6))).astype(np.float64)
        if rng.random() < 0.5:
            ints[rng.integers(c)] = ints[rng.integers(c)]  # a tie
        for key, score in (("mean", ints.reshape(c, -1).mean(1)), ("max", ints.reshape(c, -1).max(1))):
            got = R.activation_order(_as_given(rng, ints), key)
            want = sorted(range(c), key=lambda i: (-score[i], i))  # decreasing, ties in channel order
            assert got.dtype == np.int64 and got.tolist() == want


# ------------------------------------------------------------------------------------------ grids


def _fits(tiles: int, side: int, border: int, room: int) -> bool:
    return tiles * side + (tiles + 1) * border <= room


def _best_tiles(count, mh, mw, max_w, max_h, border, max_scale):
    """Per column count the tile (height, width) the docstring of grid_layout asks for: the largest
    enlargement <= max_scale that fits, else the smallest block reduction that does (1-unit tiles
    where none fits); searched one factor at a time."""
    out = {}
    for cols in range(1, count + 1):
        rows = -(-count // cols)
        tile = None
        for scale in range(max_scale, 0, -1):
            if _fits(cols, mw * scale, border, max_w) and _fits(rows, mh * scale, border, max_h):
                tile = (mh * scale, mw * scale)
                break
        if tile is None:
            for shrink in range(2, max(mh, mw) + 1):
                th, tw = -(-mh // shrink), -(-mw // shrink)
                if _fits(cols, tw, border, max_w) and _fits(rows, th, border, max_h):
                    tile = (th, tw)
                    break
        out[cols] = tile if tile is not None else (1, 1)
    return out


def _block_mean(maps: np.ndarray, f: int) -> np.ndarray:
    """Means of f x f blocks (short edge blocks over what they hold), in float64: a block with NaN
    or both infinities is NaN, one with an infinity that infinity."""
    c, h, w = maps.shape
    out = np.empty((c, -(-h // f), -(-w // f)))
    for i in range(out.shape[1]):
        for j in range(out.shape[2]):
            block = maps[:, i * f:(i + 1) * f, j * f:(j + 1) * f].reshape(c, -1)
            with np.errstate(invalid="ignore"):
                out[:, i, j] = block.mean(axis=1)
    return out


def _tile_origin(layout, slot: int) -> tuple[int, int]:
    row, col = divmod(slot, layout.cols)
    b = layout.border
    return b + row * (layout.tile_height + b), b + col * (layout.tile_width + b)


def _check_stroke(stroke: np.ndarray, h: int, w: int, rising: bool, what: str) -> None:
    """The marked pixels ``stroke`` (bool (h, w), frame excluded) of a diagonal from the top left down
    (or, ``rising``, from the bottom left up): each near the line between the two corners, and the
    stroke reaching from one corner's neighbourhood to the other's."""
    n = min(h, w)
    if n < 4:
        return
    rows, cols = np.nonzero(stroke)
    assert rows.size, f"{what}: no diagonal"
    along = cols / max(w - 1, 1)  # how far along the stroke, by column
    ideal = (h - 1) * (1 - along) if rising else (h - 1) * along
    step_r, step_c = -(-h // n) + 1, -(-w // n) + 1
    assert (np.abs(rows - ideal) <= step_r + (h - 1) / max(w - 1, 1)).all(), f"{what}: a pixel off the diagonal"
    step_r, step_c = 2 * step_r, 2 * step_c  # the stroke's last point may lie on the frame
    assert cols.max() >= w - 1 - step_c and cols.min() <= step_c, f"{what}: the stroke does not span the tile's width"
    if rising:
        assert rows.min() <= step_r and rows.max() >= h - 1 - step_r, f"{what}: the stroke does not span the height"
    else:
        assert rows.max() >= h - 1 - step_r and rows.min() <= step_r, f"{what}: the stroke does not span the height"


def _check_feature_grid(rng, acts, *, mode="channel", fixed=None, order=None, marked=None, data_marked=None,
                        shrink_mode="mean", max_width=120, max_height=90, border=1, cmap="viridis",
                        nan_color=NAN_COLOR, layout=None):
    image, layout = R.feature_grid(acts, mode=mode, fixed=fixed, cmap=cmap, order=order, marked=marked,
                                   data_marked=data_marked, max_width=max_width, max_height=max_height,
                                   border=border, shrink_mode=shrink_mode, nan_color=nan_color, layout=layout)
    v = _f32(acts)
    c, h, w = v.shape
    # the ranges, recomputed: finite minima and maxima per channel or over the layer, or the fixed ones
    fin = [r[np.isfinite(r)] for r in v.reshape(c, -1)]
    lo = np.array([f.min() if f.size else 0.0 for f in fin])
    hi = np.array([f.max() if f.size else 0.0 for f in fin])
    if mode == "layer":
        every = np.concatenate(fin)
        lo = np.full(c, every.min() if every.size else 0.0)
        hi = np.full(c, every.max() if every.size else 0.0)
    elif mode == "fixed":
        lo = np.broadcast_to(np.asarray(fixed[0], dtype=np.float32), (c,)).astype(np.float64)
        hi = np.broadcast_to(np.asarray(fixed[1], dtype=np.float32), (c,)).astype(np.float64)
    shown = list(layout.order)
    assert layout.count == (c if order is None else len(order))
    if order is not None:
        assert shown == list(order)
    maps = v[shown]
    if layout.shrink > 1:
        maps = _block_mean(maps, layout.shrink) if shrink_mode == "mean" else maps[:, ::layout.shrink, ::layout.shrink]
    # float32 block means are a little further from the float64 ones than float32's rounding
    index, tie = _index_oracle(maps, lo[shown], hi[shown], 1e-2 if layout.shrink > 1 else 1e-4)
    lut = R.get_lut(cmap)
    th, tw = layout.tile_height, layout.tile_width
    assert (th, tw) == (maps.shape[1] * layout.scale, maps.shape[2] * layout.scale)
    assert image.shape == (layout.height, layout.width, 3) and image.dtype == np.uint8
    assert layout.width == layout.cols * tw + (layout.cols + 1) * border
    assert layout.height == layout.rows * th + (layout.rows + 1) * border
    expected_code = np.full(image.shape[:2], -1, dtype=np.int64)  # -1 border, -2 nan, k colour index
    tie_map = np.zeros(image.shape[:2], dtype=bool)
    owner = np.full(image.shape[:2], -1, dtype=np.int64)
    for slot, channel in enumerate(shown):
        y, x = _tile_origin(layout, slot)
        up = np.repeat(np.repeat(index[slot], layout.scale, 0), layout.scale, 1)
        bad = ~np.isfinite(np.repeat(np.repeat(maps[slot], layout.scale, 0), layout.scale, 1))
        expected_code[y:y + th, x:x + tw] = np.where(bad, -2, up)
        tie_map[y:y + th, x:x + tw] = np.repeat(np.repeat(tie[slot], layout.scale, 0), layout.scale, 1) & ~bad
        owner[y:y + th, x:x + tw] = channel
    # marks: frames on the tiles' outermost pixels (red over orange), diagonals checked apart
    red = np.zeros(image.shape[:2], dtype=bool)
    orange = np.zeros(image.shape[:2], dtype=bool)
    interior = np.zeros(image.shape[:2], dtype=bool)
    for marks, frame in ((data_marked, orange), (marked, red)):
        if marks is None:
            continue
        for slot, channel in enumerate(shown):
            if marks[channel]:
                y, x = _tile_origin(layout, slot)
                frame[y:y + th, x:x + tw] = True
                frame[y + 1:y + th - 1, x + 1:x + tw - 1] = False
                interior[y + 1:y + th - 1, x + 1:x + tw - 1] = True
    orange &= ~red
    plain = ~(red | orange | interior)
    border_px = plain & (expected_code == -1)
    assert (image[border_px] == BORDER_COLOR).all(), "a border or empty slot is not in the border colour"
    nan_px = plain & (expected_code == -2)
    assert (image[nan_px] == nan_color).all(), "a NaN or infinite unit is not in nan_color"
    colour_px = plain & (expected_code >= 0)
    _colours_equal_up_to_tie(image[colour_px], expected_code[colour_px], tie_map[colour_px], lut, "feature grid")
    assert (image[red] == MARK_COLOR).all() and (image[orange] == DATA_MARK_COLOR).all(), "a mark's frame"
    for marks, colour, rising in ((marked, MARK_COLOR, False), (data_marked, DATA_MARK_COLOR, True)):
        if marks is None:
            continue
        for slot, channel in enumerate(shown):
            if marks[channel]:
                y, x = _tile_origin(layout, slot)
                stroke = (image[y:y + th, x:x + tw] == colour).all(-1)
                stroke[[0, -1]] = False
                stroke[:, [0, -1]] = False
                _check_stroke(stroke, th, tw, rising, f"mark of channel {channel} ({th}x{tw} tile)")
    # the geometry the browser mirrors: channel_at, tile_rect, map_position
    for yy in range(0, layout.height, max(1, layout.height // 23)):
        for xx in range(0, layout.width, max(1, layout.width // 23)):
            ch = layout.channel_at(xx + 0.5, yy + 0.25)
            assert (ch if ch is not None else -1) == owner[yy, xx]
            if ch is not None:
                slot = shown.index(ch)
                ty, tx = _tile_origin(layout, slot)
                assert layout.tile_rect(ch) == (tx, ty, tw, th)
                unit = (ch, min((yy - ty) // layout.scale * layout.shrink, h - 1),
                        min((xx - tx) // layout.scale * layout.shrink, w - 1))
                assert layout.map_position(xx, yy) == unit
    return image, layout


@pytest.mark.parametrize("seed", SEEDS)
def test_grid_layout_chooses_the_largest_tiles(seed):
    rng = np.random.default_rng(300 + seed)
    for _ in range(25):
        count = int(rng.integers(1, 40))
        mh, mw = _shape2(rng, 30)
        max_w, max_h = int(rng.integers(8, 300)), int(rng.integers(8, 300))
        border, max_scale = int(rng.integers(0, 3)), int(rng.integers(1, 9))
        layout = R.grid_layout(count, mh, mw, max_width=max_w, max_height=max_h, border=border, max_scale=max_scale)
        best = _best_tiles(count, mh, mw, max_w, max_h, border, max_scale)
        assert layout.rows == -(-count // layout.cols)
        assert (layout.tile_height, layout.tile_width) == best[layout.cols]
        area = max(th * tw for th, tw in best.values())
        assert layout.tile_height * layout.tile_width == area, "a column count with larger tiles exists"
        empty = min(-(-count // cols) * cols - count for cols, t in best.items() if t[0] * t[1] == area)
        assert layout.rows * layout.cols - count == empty, "a layout with as large tiles has fewer empty slots"
        if (layout.tile_height, layout.tile_width) != (1, 1) or (layout.width <= max_w and layout.height <= max_h):
            assert layout.width <= max_w and layout.height <= max_h


@pytest.mark.parametrize("seed", SEEDS)
def test_feature_grid_pixels(seed):
    rng = np.random.default_rng(400 + seed)
    for _ in range(5):
        c = int(rng.integers(1, 9))
        h, w = _shape2(rng, 14)
        acts = _values(rng, (c, h, w), nonfinite=rng.random() < 0.5)
        given = _as_given(rng, acts)
        mode = str(rng.choice(["channel", "layer", "fixed"]))
        fixed = None
        if mode == "fixed":
            lo = rng.normal(size=c) * np.nanmax(np.abs(np.where(np.isfinite(acts), acts, 0))) + 0.0
            fixed = (lo, lo + rng.uniform(0, 3, c) * (np.abs(lo) + 1))
        order = None
        if rng.random() < 0.5:
            order = [int(i) for i in rng.permutation(c)[: int(rng.integers(1, c + 1))]]
        marked = rng.random(c) < 0.4 if rng.random() < 0.6 else None
        data_marked = rng.random(c) < 0.4 if rng.random() < 0.4 else None
        big = rng.random() < 0.3  # small boxes: shrunk tiles
        _check_feature_grid(rng, given, mode=mode, fixed=fixed, order=order, marked=marked, data_marked=data_marked,
                            shrink_mode=str(rng.choice(["mean", "stride"])),
                            max_width=int(rng.integers(10, 200)) if not big else 400,
                            max_height=int(rng.integers(10, 150)) if not big else 300,
                            border=int(rng.integers(0, 3)), cmap=str(rng.choice(CMAPS)),
                            nan_color=tuple(int(x) for x in rng.integers(0, 256, 3)))


@pytest.mark.parametrize("seed", SEEDS)
def test_mosaic_places_each_channel_in_its_slot(seed):
    rng = np.random.default_rng(500 + seed)
    for _ in range(6):
        c = int(rng.integers(1, 8))
        mh, mw = _shape2(rng, 6)
        layout = R.grid_layout(c, mh, mw, max_width=int(rng.integers(20, 120)), max_height=int(rng.integers(20, 90)),
                               border=int(rng.integers(0, 3)), order=[int(i) for i in rng.permutation(c)])
        tiles = rng.integers(0, 256, size=(c, layout.tile_height, layout.tile_width, 3), dtype=np.uint8)
        border_color = tuple(int(x) for x in rng.integers(0, 256, 3))
        marked = rng.random(c) < 0.3
        out = R.mosaic(tiles, layout, border_color=border_color, marked=marked, mark_color=(1, 2, 3))
        want = np.empty_like(out)
        want[...] = border_color
        th, tw = layout.tile_height, layout.tile_width
        for slot, channel in enumerate(layout.order):
            y, x = _tile_origin(layout, slot)
            want[y:y + th, x:x + tw] = tiles[channel]
        keep = np.ones(out.shape[:2], dtype=bool)
        for slot, channel in enumerate(layout.order):
            if marked[channel]:
                y, x = _tile_origin(layout, slot)
                keep[y:y + th, x:x + tw] = False
                frame = np.ones((th, tw), dtype=bool)
                frame[1:-1, 1:-1] = False
                assert (out[y:y + th, x:x + tw][frame] == (1, 2, 3)).all()
                inner = out[y:y + th, x:x + tw]
                assert ((inner == (1, 2, 3)).all(-1) | (inner == tiles[channel]).all(-1)).all()
                stroke = (inner == (1, 2, 3)).all(-1) & ~frame
                _check_stroke(stroke, th, tw, False, f"mosaic mark of channel {channel} ({th}x{tw})")
        np.testing.assert_array_equal(out[keep], want[keep])


# -------------------------------------------------------------------------------------- resampling


def _stretch_positions(n: int, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For a stretch of n units to m pixels: the documented source position of each pixel,
    ``(p + 0.5) * n / m - 0.5`` clamped to [0, n - 1], its nearest unit (a centre at ``k``; computed
    in integers: ``floor((2p + 1) n / 2m)``), and whether the position is a tie between two units."""
    p = np.arange(m)
    twice = (2 * p + 1) * n  # 2m * (position + 0.5)
    nearest = np.minimum(twice // (2 * m), n - 1)
    tie = (twice % (2 * m) == 0) & (twice // (2 * m) <= n - 1) & (twice // (2 * m) >= 1)
    positions = np.clip(twice / (2 * m) - 0.5, 0, n - 1)
    return positions, nearest, tie


def _bilinear_1d_weights(positions: np.ndarray, n: int):
    lo = np.floor(positions).astype(np.int64)
    hi = np.minimum(lo + 1, n - 1)
    return lo, hi, positions - lo


def _bilinear(maps: np.ndarray, rows, cols) -> np.ndarray:
    """Bilinear samples in float64 over the last two axes; a unit of weight 0 takes no part (0 * inf
    is no NaN), a NaN or infinite one of weight > 0 makes the sample NaN or that infinity."""
    r0, r1, fr = rows
    c0, c1, fc = cols
    out = np.zeros(maps.shape[:-2] + (len(r0), len(c0)))
    for ra, wr in ((r0, 1 - fr), (r1, fr)):
        for ca, wc in ((c0, 1 - fc), (c1, fc)):
            weight = wr[:, None] * wc[None, :]
            part = maps[..., ra, :][..., ca]
            with np.errstate(invalid="ignore"):
                out = out + np.where(weight > 0, part * weight, 0.0)
    return out


def _assert_close_nonfinite(got: np.ndarray, want: np.ndarray, what: str) -> None:
    """Equal NaN and infinities where ``want`` has them, float32's error elsewhere."""
    assert got.shape == want.shape, what
    got = got.astype(np.float64)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=f"{what}: NaN")
    inf = np.isinf(want)
    np.testing.assert_array_equal(got[inf], want[inf], err_msg=f"{what}: infinities")
    fin = np.isfinite(want)
    scale = np.abs(want[fin]).max(initial=0.0)
    np.testing.assert_allclose(got[fin], want[fin], rtol=2e-6, atol=4e-7 * scale + 1e-30, err_msg=what)


@pytest.mark.parametrize("seed", SEEDS)
def test_upscale_and_downscale(seed):
    rng = np.random.default_rng(600 + seed)
    for _ in range(8):
        shape = (int(rng.integers(1, 4)), *_shape2(rng, 11))
        values = _values(rng, shape, nonfinite=True)
        given = _as_given(rng, values)
        f = int(rng.integers(1, 5))
        up = R.upscale(given, f, color=False)
        assert up.dtype == given.dtype
        for i in range(up.shape[-2]):
            for j in range(up.shape[-1]):
                np.testing.assert_array_equal(up[..., i, j], given[..., i // f, j // f])
        picture = rng.integers(0, 256, size=(*shape[1:], 3), dtype=np.uint8)
        np.testing.assert_array_equal(R.upscale(picture, f, color=True),
                                      picture[np.arange(shape[1] * f) // f][:, np.arange(shape[2] * f) // f])
        down = R.downscale(given, f)
        assert down.dtype == np.float32
        _assert_close_nonfinite(down, _block_mean(_f32(given), f), f"downscale by {f}")


@pytest.mark.parametrize("seed", SEEDS)
def test_resize_samples_the_documented_positions(seed):
    rng = np.random.default_rng(700 + seed)
    for _ in range(10):
        h, w = _shape2(rng, 9)
        out_h, out_w = _shape2(rng, 23)
        values = _values(rng, (int(rng.integers(1, 3)), h, w), nonfinite=rng.random() < 0.4)
        given = _as_given(rng, values)
        rows = _stretch_positions(h, out_h)
        cols = _stretch_positions(w, out_w)
        got = R.resize(given, (out_h, out_w), "nearest", color=False)
        assert got.dtype == given.dtype and got.shape == (values.shape[0], out_h, out_w)
        for i in range(out_h):
            for j in range(out_w):
                candidates = [(r, c) for r in ({rows[1][i], rows[1][i] - 1} if rows[2][i] else {rows[1][i]})
                              for c in ({cols[1][j], cols[1][j] - 1} if cols[2][j] else {cols[1][j]})]
                assert any(np.array_equal(got[:, i, j], given[:, r, c], equal_nan=True) for r, c in candidates), \
                    f"nearest pixel ({i}, {j}) of {h}x{w} -> {out_h}x{out_w}"
        got = R.resize(given, (out_h, out_w), "bilinear", color=False)
        assert got.dtype == np.float32
        want = _bilinear(_f32(given), _bilinear_1d_weights(rows[0], h), _bilinear_1d_weights(cols[0], w))
        _assert_close_nonfinite(got, want, f"bilinear {h}x{w} -> {out_h}x{out_w}")
        picture = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        got = R.resize_image(picture, (out_h, out_w), "bilinear")
        exact = np.moveaxis(_bilinear(np.moveaxis(picture.astype(np.float64), 2, 0),
                                      _bilinear_1d_weights(rows[0], h), _bilinear_1d_weights(cols[0], w)), 0, 2)
        assert got.dtype == np.uint8 and got.flags.c_contiguous
        tie = np.abs(exact - np.floor(exact) - 0.5) < 1e-3
        off = np.abs(got - np.floor(exact + 0.5))
        assert (off[~tie] == 0).all() and (off <= 1).all(), "resize_image rounds to the nearest level"


@pytest.mark.parametrize("seed", SEEDS)
def test_map_to_input_places_units_by_receptive_field(seed):
    rng = np.random.default_rng(800 + seed)
    for _ in range(10):
        h, w = _shape2(rng, 8)
        out_h, out_w = _shape2(rng, 30)
        jump = float(rng.choice([1, 2, 4, 8, 0.5, 3.0])) if rng.random() < 0.8 else float(rng.uniform(0.3, 9))
        start = float(rng.choice([0.0, 0.5, 1.5, -2.0, 3.5, (jump - 1) / 2])) if rng.random() < 0.7 else \
            float(rng.uniform(-5, 10))
        values = _values(rng, (h, w), nonfinite=rng.random() < 0.3)
        given = _as_given(rng, values)
        pr = np.clip((np.arange(out_h) - start) / jump, 0, h - 1)
        pc = np.clip((np.arange(out_w) - start) / jump, 0, w - 1)
        got = R.map_to_input(given, (3, out_h, out_w), jump=jump, start=start, mode="nearest")
        v = _f32(given)
        for i in range(out_h):
            for j in range(out_w):
                rs = {math.floor(pr[i] + 0.5), math.ceil(pr[i] - 0.5)}  # either unit at a tie
                cs = {math.floor(pc[j] + 0.5), math.ceil(pc[j] - 0.5)}
                assert any(np.array_equal(got[i, j], v[r, c], equal_nan=True) for r in rs for c in cs), \
                    f"nearest pixel ({i}, {j}) jump {jump} start {start}"
        got = R.map_to_input(given, (out_h, out_w), jump=jump, start=start, mode="bilinear")
        want = _bilinear(v, _bilinear_1d_weights(pr, h), _bilinear_1d_weights(pc, w))
        _assert_close_nonfinite(got, want, f"bilinear jump {jump} start {start}")
        # without geometry: a stretch, as resize
        np.testing.assert_array_equal(R.map_to_input(given, (out_h, out_w), mode="bilinear"),
                                      R.resize(given, (out_h, out_w), "bilinear", color=False))


# ---------------------------------------------------------------------------------------- overlays


def _picture(rng, h, w):
    picture = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    if rng.random() < 0.3:  # a strided view
        picture = np.ascontiguousarray(picture.transpose(1, 0, 2)).transpose(1, 0, 2)
    return picture


def _assert_blend(got, image, color, alpha, what):
    """``(1 - a) * image + a * color`` in uint8: exact at a = 0 and a = 1 and where image and colour
    agree, within one level elsewhere (the blend is computed in 1/256 steps of alpha)."""
    a = np.broadcast_to(np.asarray(alpha, dtype=np.float64), image.shape[:2])[..., None]
    exact = (1 - a) * image + a * color
    assert got.dtype == np.uint8 and got.shape == image.shape and got.flags.c_contiguous, what
    off = np.abs(got.astype(np.float64) - exact)
    assert (off < 1.0 + 1e-9).all(), f"{what}: {off.max()} levels off"
    fixed = np.broadcast_to((a == 0) | (a == 1), image.shape) | (image == color)
    np.testing.assert_array_equal(got[fixed], np.rint(exact[fixed]), err_msg=what)


@pytest.mark.parametrize("seed", SEEDS)
def test_blend_and_heatmap_overlays(seed):
    rng = np.random.default_rng(900 + seed)
    for _ in range(8):
        h, w = _shape2(rng, 12)
        image, color = _picture(rng, h, w), _picture(rng, h, w)
        kind = rng.integers(3)
        alpha = (float(rng.choice([0.0, 1.0, rng.random()])) if kind == 0
                 else rng.choice([0.0, 1.0, 0.5, 0.25], size=(h, w)) if kind == 1 else rng.random((h, w)))
        _assert_blend(R.blend(image, color, alpha), image, color, alpha, "blend")
        # overlay_heatmap: the placed heat, coloured, blended with opacity alpha (times the value)
        hh, hw = _shape2(rng, 6)
        heat = rng.random((hh, hw))
        if rng.random() < 0.3:
            heat[...] = rng.random()
        geometry = {} if rng.random() < 0.5 else {"jump": float(rng.choice([1, 2, 4])), "start": float(rng.uniform(-2, 4))}
        mode = str(rng.choice(["nearest", "bilinear"]))
        cmap = str(rng.choice(CMAPS))
        a = float(rng.choice([0.0, 1.0, rng.random()]))
        by_value = bool(rng.random() < 0.5)
        got = R.overlay_heatmap(image, _as_given(rng, heat), cmap=cmap, alpha=a, weight_by_value=by_value,
                                mode=mode, **geometry)
        placed = np.clip(R.map_to_input(heat.astype(np.float32), (h, w), mode=mode, **geometry), 0, 1)
        index, tie = _index_oracle(placed.astype(np.float64)[None], 0.0, 1.0)
        colour = R.get_lut(cmap)[index[0]]
        opacity = placed * a if by_value else np.full((h, w), a)
        ok = ~np.broadcast_to(tie[0][..., None], image.shape)
        exact = (1 - opacity[..., None]) * image + opacity[..., None] * colour
        assert (np.abs(got.astype(np.float64) - exact)[ok] < 1.0 + 1e-6).all(), "overlay_heatmap"
        # channel_image: the map placed, then coloured
        values = rng.random((hh, hw))
        got = R.channel_image(values, (h, w), cmap=cmap, mode=mode, **geometry)
        placed = R.map_to_input(values.astype(np.float32), (h, w), mode=mode, **geometry)
        index, tie = _index_oracle(placed.astype(np.float64)[None], 0.0, 1.0)
        _colours_equal_up_to_tie(got, index[0], tie[0], R.get_lut(cmap), "channel_image")


@pytest.mark.parametrize("seed", SEEDS)
def test_draw_rect_and_hstack(seed):
    rng = np.random.default_rng(1000 + seed)
    for _ in range(12):
        H, W = _shape2(rng, 15)
        image = _picture(rng, H, W)
        x, y = rng.uniform(-6, W + 2), rng.uniform(-6, H + 2)
        rw, rh = rng.uniform(-2, W + 6), rng.uniform(-2, H + 6)
        rect = (x, y, rw, rh) if rng.random() < 0.5 else tuple(int(v) for v in (x, y, rw, rh))
        t = int(rng.integers(1, 5))
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        got = R.draw_rect(image, rect, color=color, width=t)
        xi, yi, wi, hi = (int(v) for v in rect)  # fractions truncated with int()
        x0, y0, x1, y1 = max(xi, 0), max(yi, 0), min(xi + wi, W), min(yi + hi, H)
        rows, cols = np.arange(H)[:, None], np.arange(W)[None, :]
        inside = (rows >= y0) & (rows < y1) & (cols >= x0) & (cols < x1)
        edge = inside & ((rows < y0 + t) | (rows >= y1 - t) | (cols < x0 + t) | (cols >= x1 - t))
        want = image.copy()
        want[edge] = color
        np.testing.assert_array_equal(got, want, err_msg=f"draw_rect {rect} width {t} on {H}x{W}")
    for _ in range(4):
        images = [_picture(rng, *_shape2(rng, 7)) for _ in range(int(rng.integers(1, 4)))]
        gap = int(rng.integers(0, 4))
        background = tuple(int(c) for c in rng.integers(0, 256, 3))
        got = R.hstack(images, gap=gap, background=background)
        height = max(im.shape[0] for im in images)
        want = np.empty((height, sum(im.shape[1] for im in images) + gap * (len(images) - 1), 3), dtype=np.uint8)
        want[...] = background
        x = 0
        for im in images:
            want[: im.shape[0], x : x + im.shape[1]] = im
            x += im.shape[1] + gap
        np.testing.assert_array_equal(got, want)


# ------------------------------------------------------------------------------------- attribution


def _robust(magnitudes: np.ndarray, percentile: float) -> float:
    scale = float(np.percentile(magnitudes, percentile))
    if scale <= 0:
        scale = float(magnitudes.max())
    return scale if scale > 0 else 1.0


def _check_levels(got: np.ndarray, levels: np.ndarray, lut: np.ndarray | None, what: str) -> None:
    """``got`` is ``lut[round(255 * levels)]`` (or, without a table, the level itself), up to one step at
    ties and where float32 sums round the other way."""
    x = levels * 255
    index = np.floor(x + 0.5).astype(np.int64)
    tie = np.abs(x - np.floor(x) - 0.5) < 1e-3
    if lut is None:
        _assert_index(got, index, tie, what)
    else:
        _colours_equal_up_to_tie(got, index, tie, lut, what)


@pytest.mark.parametrize("seed", SEEDS)
def test_attribution_pictures(seed):
    rng = np.random.default_rng(1100 + seed)
    for _ in range(6):
        h, w = _shape2(rng, 10)
        c = int(rng.choice([1, 3, 4]))
        values = _values(rng, (c, h, w) if rng.random() < 0.7 else (h, w), constant=False)
        if rng.random() < 0.3:
            values = np.abs(values)
        given = _as_given(rng, values)
        v = _f32(given)
        percentile = float(rng.choice([99.0, 100.0, 50.0, rng.uniform(1, 100)]))
        signed = bool((v < 0).any())
        plane = v if v.ndim == 2 else (v.sum(0) if signed else np.abs(v).max(0))
        s = _robust(np.abs(plane), percentile)
        levels = 0.5 + 0.5 * np.clip(plane / s, -1, 1) if signed else np.clip(np.abs(plane) / s, 0, 1)
        got = A.attribution_to_rgb(given, percentile=percentile)
        _check_levels(got, levels, A.colormap_lut("RdBu_r" if signed else "inferno"), "attribution_to_rgb")
        if v.ndim == 3 and c == 3:
            got = A.gradient_to_rgb(given, percentile=percentile)
            s = _robust(np.abs(v), percentile)
            levels = np.moveaxis(0.5 + 0.5 * np.clip(v / s, -1, 1), 0, 2)
            _check_levels(got, levels, None, "gradient_to_rgb")
        # the overlay: |heat| (the largest magnitude over channels) resized to the picture, scaled by the
        # percentile of the map as given (before resizing), blended
        H, W = _shape2(rng, 12)
        if (h, w) == (W, H) and h != w:
            H += 1
        picture = _picture(rng, H, W)
        alpha = float(rng.choice([0.0, 1.0, rng.random()]))
        by_value = bool(rng.random() < 0.5)
        got = A.attribution_overlay(picture, given, alpha=alpha, percentile=percentile, weight_by_value=by_value,
                                    cmap="inferno")
        heat = np.abs(v) if v.ndim == 2 else np.abs(v).max(0)
        scale = _robust(heat, percentile)
        if heat.shape != (H, W):
            heat = _bilinear(heat, _bilinear_1d_weights(_stretch_positions(h, H)[0], h),
                             _bilinear_1d_weights(_stretch_positions(w, W)[0], w))
        levels = np.clip(np.abs(heat) / scale, 0, 1)
        x = levels * 255
        index = np.floor(x + 0.5).astype(np.int64)
        tie = np.abs(x - np.floor(x) - 0.5) < 1e-3
        colour = A.colormap_lut("inferno")[index].astype(np.float64)
        opacity = (alpha * levels)[..., None] if by_value else alpha
        exact = picture * (1 - opacity) + colour * opacity
        off = np.abs(got - exact)
        assert (off[~tie] <= 0.5 + 1e-3).all(), f"attribution_overlay: {off[~tie].max()} levels off"


# --------------------------------------------------------------------------------------- occlusion


def _positions(n_pixels: int, window: int, stride: int) -> int:
    return (n_pixels - window) // stride + 1


def _nearest_centre_oracle(n_pixels: int, window: int, stride: int) -> np.ndarray:
    """Per pixel, the position whose window centre ``i * stride + (window - 1) / 2`` is nearest (ties to
    the lower index), by comparing doubled distances in integers."""
    count = _positions(n_pixels, window, stride)
    centres2 = 2 * np.arange(count) * stride + (window - 1)
    return np.array([int(np.argmin(np.abs(2 * p - centres2))) for p in range(n_pixels)])


def _covering_mean_oracle(grid: np.ndarray, size, window, stride) -> np.ndarray:
    out = np.full(size, np.nan)
    total = np.zeros(size)
    count = np.zeros(size)
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            if np.isfinite(grid[i, j]):
                total[i * stride[0]:i * stride[0] + window[0], j * stride[1]:j * stride[1] + window[1]] += grid[i, j]
                count[i * stride[0]:i * stride[0] + window[0], j * stride[1]:j * stride[1] + window[1]] += 1
    out[count > 0] = total[count > 0] / count[count > 0]
    return out


@pytest.mark.parametrize("seed", SEEDS)
def test_occlusion_maps_and_overlay(seed):
    rng = np.random.default_rng(1200 + seed)
    for _ in range(8):
        H, W = int(rng.integers(1, 24)), int(rng.integers(1, 24))
        window = (int(rng.integers(1, H + 1)), int(rng.integers(1, W + 1)))
        stride = (int(rng.integers(1, 9)), int(rng.integers(1, 9)))
        rows, cols = _positions(H, window[0], stride[0]), _positions(W, window[1], stride[1])
        grid = rng.normal(size=(rows, cols)) * 10 ** rng.uniform(-2, 2)
        got = O.grid_to_pixels(grid, (H, W), window=window, stride=stride, upsample="nearest")
        want = grid[np.ix_(_nearest_centre_oracle(H, window[0], stride[0]),
                           _nearest_centre_oracle(W, window[1], stride[1]))]
        np.testing.assert_array_equal(got, want.astype(np.float32), err_msg=f"nearest {window} {stride} {(H, W)}")
        got = O.grid_to_pixels(grid, (H, W), window=window, stride=stride, upsample="mean")
        _assert_close_nonfinite(got, _covering_mean_oracle(grid, (H, W), window, stride), "mean upsample")
        # a partial grid: each uncomputed position takes a computed one nearest along its row, or the
        # filled row nearest to a row with none
        partial = grid.copy()
        partial[rng.random(grid.shape) < 0.5] = np.nan
        filled = O.fill_nearest(partial)
        known = np.isfinite(partial)
        if known.any():
            rows_known = np.flatnonzero(known.any(1))
            for i in range(rows):
                near_rows = rows_known[np.abs(rows_known - i) == np.abs(rows_known - i).min()]
                options = []
                for r in near_rows:
                    ks = np.flatnonzero(known[r])
                    options.append([partial[r, ks[np.abs(ks - j) == np.abs(ks - j).min()]] for j in range(cols)])
                for j in range(cols):
                    if known[i, j]:
                        assert filled[i, j] == partial[i, j]
                    else:
                        assert any(filled[i, j] in opt[j] for opt in options), f"fill_nearest ({i}, {j})"
        else:
            np.testing.assert_array_equal(np.isnan(filled), True)
        # the overlay: colours of the per-pixel map on the limits, blended where there is a value
        picture = _picture(rng, H, W)
        alpha = float(rng.choice([0.0, 1.0, rng.random()]))
        upsample = str(rng.choice(["nearest", "mean"]))
        center = None if rng.random() < 0.5 else float(rng.normal())
        got = O.occlusion_overlay(grid, picture, window=window, stride=stride, upsample=upsample, alpha=alpha,
                                  center=center)
        pixels = O.grid_to_pixels(grid, (H, W), window=window, stride=stride, upsample=upsample).astype(np.float64)
        valid = np.isfinite(pixels)
        lo, hi = pixels[valid].min(), pixels[valid].max()
        if center is not None:
            half = np.abs(pixels[valid] - center).max()
            lo, hi = center - half, center + half
        scaled = np.full(pixels.shape, 0.5) if hi <= lo else np.clip((np.where(valid, pixels, lo) - lo) / (hi - lo), 0, 1)
        cmap = A.matplotlib_colormap("RdBu_r" if center is not None else "viridis")
        colour = cmap(scaled, bytes=True)[..., :3].astype(np.float64)
        exact = np.where(valid[..., None], (1 - alpha) * picture + alpha * colour, picture)
        np.testing.assert_array_equal(got, np.clip(np.rint(exact), 0, 255).astype(np.uint8), err_msg="occlusion_overlay")


# ----------------------------------------------------------------------------------------- kernels


@pytest.mark.parametrize("seed", SEEDS)
def test_kernel_tiles_and_mosaics(seed):
    rng = np.random.default_rng(1300 + seed)
    for _ in range(6):
        values = rng.uniform(-1.3, 1.3, size=_shape2(rng, 6))
        values[rng.random(values.shape) < 0.1] = rng.choice([np.inf, -np.inf, 0.0, 1.0, -1.0])
        gray = K.signed_to_rgb(values, "gray")
        want = np.rint((np.clip(values, -1, 1) + 1) * 127.5)
        np.testing.assert_array_equal(gray, np.repeat(want[..., None], 3, -1).astype(np.uint8))
        div = K.signed_to_rgb(values, "diverging")
        mid = K.signed_to_rgb(np.zeros(1), "diverging")[0].astype(np.float64)
        ends = K.signed_to_rgb(np.array([-1.0, 1.0]), "diverging").astype(np.float64)
        assert (mid == 128).all()
        v = np.clip(values, -1, 1)[..., None]
        exact = mid + np.abs(v) * np.where(v < 0, ends[0] - mid, ends[1] - mid)  # strength proportional to |v|
        assert (np.abs(div - exact) <= 0.5 + 1e-9).all()
        # the mosaics: each tile at border + k * (tile + border), empty slots and borders in border_color
        border, zoom = int(rng.integers(0, 3)), int(rng.integers(1, 4))
        border_color = tuple(int(c) for c in rng.integers(0, 256, 3))
        t, (h, w) = int(rng.integers(1, 8)), _shape2(rng, 4)
        layout = str(rng.choice(["rgb", "slices", "grid"]))
        kw = dict(zoom=zoom if rng.random() < 0.7 else None, border=border, border_color=border_color)
        if layout == "rgb":
            kernels = rng.uniform(-1, 1, size=(t, h, w, 3))
            tiles = np.rint((kernels + 1) * 127.5)
        elif layout == "slices":
            kernels = rng.uniform(-1, 1, size=(t, h, w))
            tiles = np.repeat(np.rint((kernels + 1) * 127.5)[..., None], 3, -1)
        else:
            n_in = int(rng.integers(1, 5))
            kernels = rng.uniform(-1, 1, size=(t, n_in, h, w))
            tiles = np.repeat(np.rint((kernels + 1) * 127.5)[..., None], 3, -1)
        cols = int(rng.integers(1, 6)) if rng.random() < 0.6 else None
        block_gap = int(rng.integers(0, 4))
        got = K.kernel_mosaic(kernels, layout, cols=cols, block_gap=block_gap, cmap="gray", **kw)
        z = kw["zoom"] or max(1, K.MIN_TILE_PIXELS // h)
        th, tw = h * z, w * z
        places = []  # (y, x, tile)
        if layout == "grid":
            n_in = kernels.shape[1]
            per_line = n_in if cols is None or cols >= n_in else cols
            lines = -(-n_in // per_line)
            gap = block_gap if per_line < n_in else 0
            for k in range(t):
                for i in range(n_in):
                    line, col = divmod(i, per_line)
                    y = border + (k * lines + line) * (th + border) + k * gap
                    places.append((y, border + col * (tw + border), tiles[k, i]))
            height = t * lines * (th + border) + border + (t - 1) * gap
            width = per_line * (tw + border) + border
        else:
            per_line = min(t, cols if cols else math.ceil(math.sqrt(t)))
            for k in range(t):
                line, col = divmod(k, per_line)
                places.append((border + line * (th + border), border + col * (tw + border), tiles[k]))
            height = -(-t // per_line) * (th + border) + border
            width = per_line * (tw + border) + border
        want = np.empty((height, width, 3), dtype=np.uint8)
        want[...] = border_color
        for y, x, tile in places:
            want[y:y + th, x:x + tw] = np.repeat(np.repeat(tile, z, 0), z, 1)
        np.testing.assert_array_equal(got, want, err_msg=f"kernel_mosaic {layout} cols={cols} gap={block_gap}")


# ------------------------------------------------------------------------------------- regressions


@pytest.mark.parametrize("tile", [(24, 4), (30, 7), (12, 5)])
def test_the_mark_diagonal_of_a_tile_taller_than_wide_reaches_its_bottom(tile):
    # was: the diagonal from the top left went down at 45 degrees and stopped after as many rows as
    # the tile has columns (row 3 of 24 for a 24x4 tile), while the rising one spanned the whole tile
    th, tw = tile
    layout = R.GridLayout(count=2, rows=1, cols=2, map_height=th, map_width=tw, border=1)
    image = R.mosaic(np.zeros((2, th, tw, 3), dtype=np.uint8), layout, marked=np.array([True, False]),
                     mark_color=(1, 2, 3))
    x, y, w, h = layout.tile_rect(0)
    stroke = (image[y + 1:y + h - 1, x + 1:x + w - 1] == (1, 2, 3)).all(-1)
    rows, cols = np.nonzero(stroke)
    assert rows.max() + 1 >= h // 2, "the diagonal ends in the tile's upper half"
    ideal = cols * (h - 1) / (w - 1)  # the line from the top left corner to the bottom right one
    assert (np.abs(rows + 1 - ideal) <= h / min(h, w) + 1).all()
    # and the same through the feature grid, whose both marks cross on the tile's diagonals
    acts = np.arange(2 * th * tw, dtype=np.float32).reshape(2, th, tw)
    image, layout = R.feature_grid(acts, marked=np.array([True, True]), data_marked=np.array([True, False]),
                                   max_width=4 * tw + 3, max_height=th + 2)
    x, y, w, h = layout.tile_rect(0)
    falling = (image[y + 1:y + h - 1, x + 1:x + w - 1] == MARK_COLOR).all(-1)
    rising = (image[y + 1:y + h - 1, x + 1:x + w - 1] == DATA_MARK_COLOR).all(-1)
    assert np.nonzero(falling)[0].max() + 1 >= h // 2 and np.nonzero(rising)[0].min() + 1 <= h // 2


def test_a_signed_2d_heat_is_overlaid_by_its_magnitudes_as_a_1_channel_one_is():
    # was: a 2-D heat was resized with its signs and only then made magnitudes, so that +1 next to -1
    # drew a dark (no attribution) pixel between them; the same map as (1, h, w) drew it bright
    picture = np.full((1, 3, 3), 100, dtype=np.uint8)
    heat = np.array([[1.0, -1.0]])
    flat = A.attribution_overlay(picture, heat, alpha=1.0, percentile=100)
    np.testing.assert_array_equal(flat, A.attribution_overlay(picture, heat[None], alpha=1.0, percentile=100))
    np.testing.assert_array_equal(flat[0, 1], A.colormap_lut("inferno")[255])
    rng = np.random.default_rng(7)
    picture = rng.integers(0, 256, size=(9, 7, 3), dtype=np.uint8)
    heat = rng.normal(size=(4, 5))
    np.testing.assert_array_equal(A.attribution_overlay(picture, heat, weight_by_value=True),
                                  A.attribution_overlay(picture, np.abs(heat), weight_by_value=True))
