"""Scaling a (C, H, W) activation stack to [0, 1] for display, and per-channel statistics.

Three normalisation modes decide which range ``[lo, hi]`` maps to ``[0, 1]`` for each channel:

``"channel"``
    each channel's own minimum and maximum: shows the pattern inside every channel, hides
    how strong one channel is compared with another.
``"layer"``
    the minimum and maximum over the whole layer: channels are comparable with each other.
``"fixed"``
    a range given by the caller, typically the per-channel range of the unoccluded image, so
    that an occluder that weakens a channel visibly darkens it instead of being rescaled away.

A value ``v`` is shown as ``(v - lo) / (hi - lo)``, clipped to [0, 1]; a channel whose range
is empty (``hi == lo``: a constant channel) is shown as 0. ``lo`` and ``hi`` must be finite,
and a reversed range (``lo > hi``) is refused with a ValueError rather than drawn flat or
inverted. Signed maps (differences) use :func:`symmetric_ranges`, which maps 0 to 0.5.

Ranges are taken over the finite values only, so one NaN or infinite unit does not blank its
channel (or, in mode ``"layer"``, the whole layer); a channel with no finite value gets the
empty range ``(0, 0)``.

Stacks are taken as float32, as the views hold them: a float64 value beyond float32's range
(about 3.4e38) is an infinity there. Bools and ints are numbers; complex numbers, strings and
objects are refused with a TypeError (drawn, they would lose their imaginary part, be read as
numbers, or be read as NaN).
"""

from __future__ import annotations

import decimal
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from cnnwidgets.render._checks import as_real_array, check_int, check_lo_hi, check_real
from cnnwidgets.render.colormaps import linear_scale, scale_channels

__all__ = [
    "NORM_MODES",
    "ChannelStats",
    "NormMode",
    "activation_order",
    "channel_stats",
    "dead_channel_mask",
    "normalize",
    "symmetric_ranges",
    "value_ranges",
]

NormMode = Literal["channel", "layer", "fixed"]
NORM_MODES: tuple[str, ...] = ("channel", "layer", "fixed")


def _check_stack(acts: np.ndarray) -> np.ndarray:
    acts = as_real_array(acts, "the activation stack")
    if acts.ndim != 3:
        raise ValueError(f"expected an activation stack of shape (C, H, W), got shape {acts.shape}")
    if acts.shape[0] == 0:
        raise ValueError("the activation stack has no channels")
    if acts.shape[1] == 0 or acts.shape[2] == 0:
        raise ValueError(f"the activation stack of shape {acts.shape} has empty maps (no row or no column): "
                         "there is no value to scale or draw")
    return acts


def _finite_min_max(flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row minima and maxima of (C, N) over the finite values; ``(inf, -inf)`` for a row with none.

    The rows are scanned once more, masked, only where the plain minimum or maximum is not finite.
    """
    lo, hi = flat.min(axis=1), flat.max(axis=1)
    bad = ~(np.isfinite(lo) & np.isfinite(hi))
    if bad.any():
        rows = flat[bad]
        finite = np.isfinite(rows)
        lo[bad] = np.where(finite, rows, np.inf).min(axis=1)
        hi[bad] = np.where(finite, rows, -np.inf).max(axis=1)
    return lo, hi


def value_ranges(
    acts: np.ndarray,
    mode: str = "channel",
    *,
    fixed: tuple[np.ndarray | float, np.ndarray | float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The display range of every channel.

    Modes ``"channel"`` and ``"layer"`` use the finite values only (NaN and +-inf are skipped);
    a channel (for ``"layer"``: a stack) with no finite value gets ``lo = hi = 0``, an empty
    range that leaves the other channels' ranges as they are (the feature grid draws such a
    channel's units in its ``nan_color``). No numpy warning is raised for NaN or infinite
    units. Ranges given with ``"fixed"`` are returned as they are (scalars repeated for every
    channel).

    Args:
        acts: activations of shape (C, H, W).
        mode: ``"channel"``, ``"layer"`` or ``"fixed"`` (see the module docstring).
        fixed: ``(lo, hi)`` for mode ``"fixed"``; finite scalars or arrays of shape (C,),
            ``lo <= hi`` in every channel.

    Returns:
        ``(lo, hi)``, two float32 arrays of shape (C,).

    Raises:
        ValueError: for an unknown mode, a missing ``fixed`` range, one that is not two
            parts, a part of another shape than (C,) or with a NaN or infinite value, a
            reversed one (``lo > hi`` in some channel), or a stack that is not (C, H, W).
        TypeError: for a ``fixed`` that is not a pair ``(lo, hi)`` of numbers or arrays.
    """
    acts = _check_stack(acts)
    channels = acts.shape[0]
    if mode == "channel":
        lo, hi = _finite_min_max(acts.reshape(channels, -1))
        empty = lo > hi
        if empty.any():
            lo[empty] = hi[empty] = 0.0
        return lo, hi
    if mode == "layer":
        low, high = acts.min(), acts.max()
        if not (np.isfinite(low) and np.isfinite(high)):
            per_lo, per_hi = _finite_min_max(acts.reshape(channels, -1))
            low, high = per_lo.min(), per_hi.max()
            if low > high:
                low = high = 0.0
        return np.full(channels, low, dtype=np.float32), np.full(channels, high, dtype=np.float32)
    if mode == "fixed":
        if fixed is None:
            raise ValueError("mode 'fixed' needs fixed=(lo, hi), e.g. the ranges of the unoccluded image")
        # a set or a dict has two entries but no order: lo and hi could come out swapped
        if isinstance(fixed, (str, bytes, set, frozenset, dict)) or not hasattr(fixed, "__len__"):
            raise TypeError(f"fixed must be a pair (lo, hi) of scalars or arrays of shape ({channels},), "
                            f"got {type(fixed).__name__} {fixed!r}")
        if len(fixed) != 2:
            raise ValueError(f"fixed must be a pair (lo, hi) of scalars or arrays of shape ({channels},), "
                             f"got {len(fixed)} parts")
        lo, hi = fixed
        return check_lo_hi(lo, hi, channels, "fixed")
    raise ValueError(f"unknown normalisation mode {mode!r}; accepted: {', '.join(NORM_MODES)}")


def symmetric_ranges(values: np.ndarray, mode: str = "layer") -> tuple[np.ndarray, np.ndarray]:
    """Ranges ``(-m, m)`` for signed maps, so that 0 is shown as 0.5 (the diverging midpoint).

    Magnitudes are taken over the finite values only; a channel with none gets ``m = 0``.

    Args:
        values: signed stack of shape (C, H, W), e.g. occluded minus unoccluded activations.
        mode: ``"channel"`` (``m`` = each channel's largest finite magnitude) or ``"layer"``
            (``m`` = the largest finite magnitude in the stack).

    Returns:
        ``(lo, hi)`` float32 arrays of shape (C,).

    Raises:
        ValueError: for another mode or a stack that is not (C, H, W).
    """
    values = _check_stack(values)
    magnitudes = np.abs(values).reshape(values.shape[0], -1)
    mag = magnitudes.max(axis=1)
    bad = ~np.isfinite(mag)
    if bad.any():
        rows = magnitudes[bad]
        mag[bad] = np.where(np.isfinite(rows), rows, 0.0).max(axis=1)
    if mode == "layer":
        mag = np.full_like(mag, mag.max())
    elif mode != "channel":
        raise ValueError(f"symmetric ranges accept mode 'channel' or 'layer', got {mode!r}")
    return -mag, mag


def normalize(acts: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Map each channel's ``[lo, hi]`` to ``[0, 1]``: ``clip((v - lo) / (hi - lo), 0, 1)``.

    Args:
        acts: stack of shape (C, H, W).
        lo: lower ends, shape (C,) (or scalar); finite, ``<= hi``.
        hi: upper ends, shape (C,) (or scalar); finite.

    Returns:
        float32 array of the same shape; channels with ``hi == lo`` (an empty range: a
        constant channel) are 0. A reversed range (``lo > hi``) is refused.

    Raises:
        ValueError: for a stack that is not (C, H, W), ``lo``/``hi`` of another shape than
            (C,) or with a NaN or infinite value, or ``lo > hi`` in some channel (a reversed
            range; the message names the values and, for arrays, the channel).
        TypeError: for ``lo``/``hi`` that are not numbers.
    """
    acts = _check_stack(acts)
    lo, hi = check_lo_hi(lo, hi, acts.shape[0])
    lo, hi = lo[:, None, None], hi[:, None, None]
    scale, offset, valid = linear_scale(lo, hi, 1.0)
    out = scale_channels(acts, lo, scale, offset)  # inf * 0 (empty range) is NaN, set to 0 below
    np.clip(out, 0.0, 1.0, out=out)
    if not valid.all():
        out[~np.broadcast_to(valid, out.shape)] = 0.0
    return out.astype(np.float32, copy=False)  # float64 for a range a few denormals wide (see linear_scale)


@dataclass(frozen=True)
class ChannelStats:
    """Per-channel statistics of a (C, H, W) stack; every field has shape (C,).

    Attributes:
        mean: mean over the spatial positions.
        std: standard deviation over the spatial positions.
        min: smallest value.
        max: largest value.
        active: fraction of positions with a value > 0 (what survives a ReLU).
    """

    mean: np.ndarray
    std: np.ndarray
    min: np.ndarray
    max: np.ndarray
    active: np.ndarray

    def as_array(self) -> np.ndarray:
        """A (C, 5) float32 array, columns mean, std, min, max, active (compact to send to a browser)."""
        return np.stack([self.mean, self.std, self.min, self.max, self.active], axis=1).astype(np.float32)

    def describe(self, channel: int) -> str:
        """The feature grid's hover text for ``channel``, as the browser writes it from these
        statistics (sent as float32), e.g.::

            channel 3
            mean 0.210  std 0.102
            min 0.000  max 1.90
            active 34%

        with ``(dead on this image)`` after a channel without positive values (``(no positive
        value on this image)`` when it has negative ones).

        Raises:
            TypeError: for a channel that is not an int.
            ValueError: for a channel outside ``0..C-1``.
        """
        table = self.as_array()
        channel = check_int(channel, "channel", minimum=0, maximum=len(table) - 1)
        mean, std, low, high, active = (float(v) for v in table[channel])
        text = (f"channel {channel}\nmean {_js_number(mean)}  std {_js_number(std)}\n"
                f"min {_js_number(low)}  max {_js_number(high)}\nactive {_js_fixed(100 * active, 0)}%")
        if high <= 0:
            text += "  (no positive value on this image)" if low < 0 else "  (dead on this image)"
        return text


def _js_fixed(value: float, digits: int) -> str:
    """``value.toFixed(digits)`` as JavaScript writes it: the exact value rounded, ties away from zero."""
    if not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    value = value + 0.0  # -0 is written 0
    quantum = decimal.Decimal(1).scaleb(-digits)
    return str(decimal.Decimal(value).quantize(quantum, rounding=decimal.ROUND_HALF_UP))


def _js_number(value: float) -> str:
    """A statistic as the grid's hover text writes it (its ``fmt``): 1 digit and an exponent
    (``toExponential(1)``) below 0.01 and from 1000 on, else 3 decimals below 1 and 2 above."""
    if not math.isfinite(value):
        return _js_fixed(value, 0)
    size = abs(value)
    if size != 0 and (size < 0.01 or size >= 1000):
        exact = decimal.Decimal(value)
        exponent = exact.adjusted()
        mantissa = exact.scaleb(-exponent).quantize(decimal.Decimal("0.1"), rounding=decimal.ROUND_HALF_UP)
        if abs(mantissa) >= 10:  # 9.96e-3 rounds up to 1.0e-2
            exponent += 1
            mantissa = exact.scaleb(-exponent).quantize(decimal.Decimal("0.1"), rounding=decimal.ROUND_HALF_UP)
        return f"{mantissa}e{exponent:+d}"
    return _js_fixed(value, 3 if size < 1 else 2)


def channel_stats(acts: np.ndarray) -> ChannelStats:
    """Mean, standard deviation, minimum, maximum and active fraction of every channel of the
    stack ``acts`` (C, H, W).

    Raises:
        ValueError: for a stack that is not (C, H, W).
    """
    acts = _check_stack(acts)
    flat = acts.reshape(acts.shape[0], -1)
    low, high = flat.min(axis=1), flat.max(axis=1)
    with np.errstate(invalid="ignore", over="ignore"):  # a channel holding inf has a NaN std: shown as such
        mean, std = flat.mean(axis=1), flat.std(axis=1)
    # float32 sums of finite values near 3e38 (or squares of ones beyond 1.8e19) overflow: those
    # channels only are summed again in float64, where they fit
    redo = ~(np.isfinite(mean) & np.isfinite(std)) & np.isfinite(low) & np.isfinite(high)
    if redo.any():
        rows = flat[redo].astype(np.float64)
        mean[redo], std[redo] = rows.mean(axis=1), rows.std(axis=1)
    return ChannelStats(
        mean=mean,
        std=std,
        min=low,
        max=high,
        active=(flat > 0).mean(axis=1).astype(np.float32),
    )


def dead_channel_mask(acts: np.ndarray, threshold: float = 0.0) -> np.ndarray:
    """Channels of one stack with no unit above ``threshold`` (all zero after a ReLU for threshold 0).

    The whole-data-set scan, with statistics, is :func:`cnnwidgets.methods.dead.dead_channels`.

    Args:
        acts: stack of shape (C, H, W).
        threshold: a channel is dead when its maximum is ``<= threshold``.

    Returns:
        bool array of shape (C,).

    Raises:
        ValueError: for a stack that is not (C, H, W), or a NaN or infinite threshold.
        TypeError: for a threshold that is not a real number.
    """
    threshold = check_real(threshold, "threshold")
    acts = _check_stack(acts)
    return acts.reshape(acts.shape[0], -1).max(axis=1) <= threshold


def activation_order(acts: np.ndarray, key: str = "mean") -> np.ndarray:
    """Channel indices sorted by decreasing activation; ties keep their original order.

    Args:
        acts: stack of shape (C, H, W).
        key: ``"mean"`` or ``"max"`` over the spatial positions.

    Returns:
        int64 array of shape (C,), a permutation of ``range(C)``.

    Raises:
        ValueError: for another key or a stack that is not (C, H, W).
    """
    acts = _check_stack(acts)
    flat = acts.reshape(acts.shape[0], -1)
    if key == "mean":
        with np.errstate(over="ignore", invalid="ignore"):
            score = flat.mean(axis=1)
        finite = np.isfinite(score)
        if not finite.all():  # a float32 sum of finite values near 3e38 overflows: summed again in float64
            redo = ~finite & np.isfinite(flat.min(axis=1)) & np.isfinite(flat.max(axis=1))
            score[redo] = flat[redo].mean(axis=1, dtype=np.float64)
    elif key == "max":
        score = flat.max(axis=1)
    else:
        raise ValueError(f"sort key must be 'mean' or 'max', got {key!r}")
    return np.argsort(-score, kind="stable").astype(np.int64)
