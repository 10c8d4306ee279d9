"""The live explorer: layer and channel selectors, a draggable occluder, live feature grids.

``cnnwidgets.explore(model, image)`` opens it; ``cnnwidgets.explore()`` opens it on the embedded
default model. The :class:`Explorer` is a displayable widget whose state is traitlets:
``layer``, ``channel``, ``box``, ``dragging``, ``device`` (and the display choices). Everything
it shows can be read from Python: :attr:`Explorer.activations`, :attr:`Explorer.scores`,
:attr:`Explorer.grid_image`, :attr:`Explorer.method_result`, :attr:`Explorer.method_error`,
:attr:`Explorer.stats`, and the status line, ``Explorer.status``.

The views (``cnnwidgets.widgets``) hold no model and no torch; the :class:`Controller` owns
the :class:`~cnnwidgets.core.probe.Probe` and does the work on one worker thread, dropping
stale work instead of queueing it.
"""

from __future__ import annotations

import asyncio
import base64
import difflib
import functools
import html
import itertools
import math
import numbers
import os
import re
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import ipywidgets as ipw
import numpy as np
import torch
import traitlets as t
from PIL import Image
from torch import nn

from cnnwidgets.app import worker as _worker
from cnnwidgets.app.cells import close_earlier_runs, opened
from cnnwidgets.app.controller import Controller
from cnnwidgets.app.frames import GRID_PAGE, Frame, LayerGeometry, grid_pages
from cnnwidgets.app.inputs import (
    FillError, ImageInput, ModelInput, default_denormalize, default_preprocess, default_unnormalized,
    model_input_range, outside_share, to_pil,
)
from cnnwidgets.app.state import ExplorerState
from cnnwidgets.app.views import (
    HEAT_CMAP, METHODS, SIGNED_METHODS, MethodRequest, MethodResult, MethodRunner, largest_change,
    occlusion_scale,
)
from cnnwidgets.core.device import available_devices, resolve_device
from cnnwidgets.core.layers import LayerInfo, empty_map_error, unknown_layer_error
from cnnwidgets.core.images import IMAGENET_CLASSES
from cnnwidgets.core.probe import (
    ChannelsLastError, Probe, channel_guesses, check_input_size, class_count, default_input_sizes, plain_module,
    trained_input_size,
)
from cnnwidgets.core.targets import (
    as_count, as_index, check_output_kind, nonfinite_cause, single_index,
)
from cnnwidgets.methods.cam import nearest_conv_layer
from cnnwidgets.methods.summary import has_spatial_map
from cnnwidgets.render.colormaps import SEQUENTIAL, colormap_strip
from cnnwidgets.render.encode import encode_jpeg, encode_png
from cnnwidgets.render.normalize import NORM_MODES
from cnnwidgets.widgets._base import (
    CheckedCheckbox,
    CheckedDropdown,
    CheckedIntSlider,
    CheckedText,
    RefusesBrowserValues,
    close_parts,
)
from cnnwidgets.widgets.methodview import MethodView
from cnnwidgets.widgets import (
    FILL_LABELS,
    FILLS,
    DisplayControls,
    GroupedSelect,
    ImagePicker,
    OccluderCanvas,
    OccluderControls,
    ScoreBars,
    StatusLine,
    TileGrid,
    clamp_box,
    device_dropdown,
    wrapping_row,
)

__all__ = ["Explorer", "default_layer", "explore", "layer_items"]

_USER_IMAGE = "your image"


def _picker_name(image: Any, taken: Mapping[str, Any]) -> str:
    """The image picker's name of the ``image`` given to the explorer: a file's own name for a path
    or a URL (``cat.jpg``), else ``"your image"`` (also when a sample of ``taken`` has that name)."""
    if isinstance(image, (str, os.PathLike)):
        text = os.fspath(image)
        if isinstance(text, str):
            if "://" in text:  # a URL: its path, without the query or fragment
                text = text.split("?", 1)[0].split("#", 1)[0]
            tail = re.split(r"[/\\]", text.rstrip("/\\"))[-1]  # either kind of separator
            if tail and tail not in taken:
                return tail
    return _USER_IMAGE


def _layer_html(name: str) -> str:
    """A layer named in a caption: ``layer <code>0</code>``, so that a name like ``0`` or
    ``3`` (an ``nn.Sequential``'s) does not read as a number of the sentence."""
    return f"layer <code>{html.escape(name)}</code>"


@functools.lru_cache(maxsize=16)
def _colour_key(cmap: str) -> str:
    """The colormap ``cmap`` as a small inline picture for captions, low end on the left."""
    data = base64.b64encode(encode_png(colormap_strip(cmap, 48, 8))).decode("ascii")
    return (f"<img src='data:image/png;base64,{data}' alt='colours low to high ({html.escape(cmap)})' "
            "style='display:inline-block;vertical-align:middle;width:48px;height:8px;margin:0 3px'>")


def _value(number: float) -> str:
    """An activation value in a caption: three significant digits (``0``, not ``-0``)."""
    return f"{number + 0.0:.3g}"


def _ordinal_range(page: int, shown: int) -> str:
    """Ranks ``"257th–512th"`` of a page of the grid sorted by activation (``"1st–256th"`` for page 0)."""
    def ordinal(n: int) -> str:
        suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
        return f"{n}{suffix}"
    first = page * GRID_PAGE + 1
    return f"{ordinal(first)}–{ordinal(first + shown - 1)}"


def _colour_scale(cmap: str, lo: float, hi: float) -> str:
    """The colour key of ``cmap`` between the values at its ends, for captions; for an empty range
    (a channel with one value everywhere, as a dead one), that value in words instead of a colour bar
    between two equal numbers."""
    if not hi > lo:
        return f"(one value everywhere: {_value(lo)})"
    return f"{_value(lo)} {_colour_key(cmap)} {_value(hi)}"


#: What the grid's colours mean in each normalisation (the range of the "layer" one is given in numbers).
_GRID_KEYS = {
    "channel": "each tile from its own lowest to its highest value",
    "fixed": "each tile on its channel's range in the unoccluded image",
}


def _occlusion_key(drop: np.ndarray, complete: bool) -> str:
    """What the occlusion map's colours mean, for its caption: full colour at
    :func:`~cnnwidgets.app.views.occlusion_scale` of ``drop`` (with the largest change when the
    scale's floor makes full colour a larger change than any on the map)."""
    largest = largest_change(drop)
    if largest == 0 and complete:
        # a map without colour: say why, rather than "full colour = a change of 0.0 points"
        # (an output that ignores the input, e.g. a classifier head initialised to zero)
        return "no place changes it: the map has no colour"
    scale = _percent(occlusion_scale(drop), "points")
    key = ("<span class='cnnw-red'>red</span>: it falls (the class needs that place), "
           f"<span class='cnnw-blue'>blue</span>: it rises; full colour = a change of {scale}")
    if _percent(largest, "points") != scale:  # below the floor: say how small the changes are
        key += f" (the largest here is {_percent(largest, 'points')})"
    return key


def _percent(probability: float, unit: str = "%") -> str:
    """A probability (or a change of one) in percent, as the class scores show them: one
    decimal, and two significant digits below 0.1 (``5.8e-10%``, not ``0.0%``)."""
    value = 100.0 * float(probability)
    unit = unit if unit == "%" else f" {unit}"  # 92.6%, as the score bars write it; 0.050 points
    # '#': trailing zeros kept (0.050, not 0.05), so a number that changes keeps its length
    return f"{value:.1f}{unit}" if value == 0 or abs(value) >= 0.1 else f"{value:#.2g}{unit}"


def _map_text(info: LayerInfo) -> str:
    """``CxHxW`` of a layer's maps; channels-last layers (shown channels first) add ``(HWC)``."""
    text = "\u00d7".join(str(s) for s in info.map_shape or info.output_shape or ())
    return f"{text} (HWC)" if info.layout == "HWC" else text


def _device_name(device: torch.device) -> str:
    """The device menu's name of ``device``: ``cpu``, ``mps``, ``cuda`` (torch's current CUDA device) or ``cuda:N``."""
    if device.type != "cuda":
        return device.type
    current = torch.cuda.current_device()
    index = current if device.index is None else device.index
    return "cuda" if index == current else f"cuda:{index}"


def _device_names() -> list[str]:
    """The device menu's options: :func:`available_devices`, and ``cuda:N`` for every other CUDA device."""
    names = available_devices()
    if "cuda" in names:
        current = torch.cuda.current_device()
        at = names.index("cuda") + 1
        names[at:at] = [f"cuda:{i}" for i in range(torch.cuda.device_count()) if i != current]
    return names


#: What a box given to the explorer may be, in words (the constructor also takes ``"center"``).
_BOX_ACCEPTED = ("(x, y, w, h): four numbers in model-input pixels (a tuple, list or array), or None for no "
                 "occluder")


def _box_numbers(box: Any, accepted: str = _BOX_ACCEPTED) -> tuple[Any, Any, Any, Any]:
    """``box`` as a tuple of its four numbers: any sequence of four (a NumPy array, a tensor too).

    Raises:
        ValueError: for anything else (a number, a mapping, a string, three numbers, a bool ...),
            saying what ``accepted`` is.
    """
    values = box.tolist() if hasattr(box, "tolist") and not isinstance(box, (str, bytes)) else box
    if (not isinstance(values, Sequence) or isinstance(values, (str, bytes)) or len(values) != 4
            or not all(isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_)) for v in values)):
        raise ValueError(f"box must be {accepted}; got {box!r}")
    return tuple(values)


class _BoxTrait(t.Tuple):
    """The explorer's ``box``: four numbers or None, given as any sequence (see :func:`_box_numbers`).

    Whole numbers stay ints (the explorer's check then rounds the others): a box that is set back
    without that check, as traitlets does when a change made in ``hold_trait_notifications()`` is
    refused, is the ints it was, not their floats."""

    def validate(self, obj, value):
        if value is None:
            return super().validate(obj, value)
        try:
            value = _box_numbers(value)
        except ValueError as exc:
            raise t.TraitError(str(exc)) from None
        values = super().validate(obj, value)  # four floats
        return tuple(int(v) if math.isfinite(v) and v.is_integer() else v for v in values)


class _StrictInt(t.Int):
    """An int trait that takes what :func:`~cnnwidgets.core.targets.as_index` takes (Python ints,
    NumPy integers, 0-d integer tensors), and refuses the integral floats ``t.Int`` would cast
    (4.0 as 4), saying what is accepted (``accepted`` is added to the message). Bools pass, for
    the explorer's validators to refuse, saying what is accepted. With ``one_element``, an
    integer tensor or array of shape (1,) is its one value too (``model(x).argmax(1)`` for one
    image, as the method functions take a class)."""

    def __init__(self, *args: Any, accepted: str = "", one_element: bool = False, **kwargs: Any) -> None:
        self._accepted = accepted
        self._one_element = one_element
        super().__init__(*args, **kwargs)

    def set(self, obj, value):
        """Set the value; inside ``hold_trait_notifications()`` one equal to the value held is checked
        at the end too, with the others, where traitlets skips unchanged values: a ``channel`` set to
        the value it has is checked against the layer set with it (which would otherwise silently
        reset it to 0), and ``True`` set where 1 is held is refused (it was kept, a bool)."""
        old = obj._trait_values.get(self.name, self.default_value)
        super().set(obj, value)
        new = obj._trait_values.get(self.name)
        if obj._cross_validation_lock and old == new:
            obj._notify_trait(self.name, old, new)  # held: checked with the others at the end

    def validate(self, obj, value):
        if self._one_element:
            value = single_index(value)
        if isinstance(value, (bool, np.bool_)):
            return super().validate(obj, bool(value))  # NumPy's True too: refused as a bool, not taken as 1
        try:
            value = as_index(value, self.name, hint=self._accepted)
        except TypeError as exc:
            raise t.TraitError(str(exc)) from None
        return super().validate(obj, int(value))


class _TargetTrait(_StrictInt):
    """The ``target`` trait: a class index as :class:`_StrictInt` takes it, or the name of one of
    the explorer's classes (a ``str``, NumPy's ``str_`` too), held as that class's index."""

    def validate(self, obj, value):
        if isinstance(value, str):
            value = obj._class_name_index(str(value))
        return super().validate(obj, value)


class _PlainStr(t.Unicode):
    """A ``str`` trait that holds a plain ``str``, NumPy's ``str_`` given too: also when it is set, inside
    ``hold_trait_notifications()``, to a value equal to the one it holds, which traitlets then keeps
    as given, without the explorer's own check (that also makes it a plain ``str``)."""

    def validate(self, obj, value):
        return str(super().validate(obj, value))


class _DeviceTrait(_PlainStr):
    """The explorer's ``device``: a device's name, or a ``torch.device`` as the constructor takes
    it too; it holds the device menu's name (see :meth:`Explorer._check_device`)."""

    def validate(self, obj, value):
        if isinstance(value, torch.device):
            value = str(value)
        if not isinstance(value, str):
            raise t.TraitError(f"device must be a device's name ('auto', 'cpu', 'cuda', 'cuda:N' or 'mps') or a "
                               f"torch.device, got {type(value).__name__} {value!r}")
        return super().validate(obj, value)


class _StrictBool(t.Bool):
    """A bool trait that takes only ``True`` and ``False`` (NumPy's too), not the 0, 1 or other
    values ``t.Bool`` would cast: the same rule as every other flag of the package."""

    def validate(self, obj, value):
        if not isinstance(value, (bool, np.bool_)):
            self.error(obj, value)
        return bool(value)


def _name_key(name: str) -> str:
    return " ".join(name.lower().replace("_", " ").replace("-", " ").split())


class _NameTrait(t.Enum):
    """One of a few names, also spelled in any case and with ``_`` or ``-`` for spaces: the
    explorer's ``method`` (``"grad_cam"``, ``"Grad-CAM"`` for ``"grad-cam"``), ``fill``
    (``"Gray"``), ``norm`` and ``cmap`` (``"Viridis"``). A name it refuses that is close to one
    it takes (``"grey"``, ``"gradcam"``) is told that one."""

    def validate(self, obj, value):
        if isinstance(value, str) and value not in self.values:
            wanted = _name_key(value)
            keys = {_name_key(name): name for name in self.values}
            if wanted in keys:
                return keys[wanted]
            close = difflib.get_close_matches(wanted, list(keys), n=1, cutoff=0.6)
            if close:
                try:
                    super().validate(obj, value)
                except t.TraitError as exc:
                    raise t.TraitError(f"{exc} Did you mean {keys[close[0]]!r}?") from None
        return super().validate(obj, value)


def _layer_name(value: Any, names: Sequence[str], model: nn.Module | None = None) -> str:
    """``value`` as a layer name: a plain ``str`` (NumPy's ``str_`` too).

    Args:
        value: the layer as given.
        names: the layers offered (for the message).
        model: the user's model, where a module given in place of its name is looked up.

    Raises:
        TypeError: for anything else, saying that layers are named by strings: an int that names a
            layer of an ``nn.Sequential`` (``0``) is told its name (``'0'``), a module of ``model``
            its name (``'features.0'``).
    """
    if isinstance(value, str):
        return str(value)
    hint = ""
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)) and str(value) in names:
        hint = f"; did you mean {str(value)!r}? (an nn.Sequential's layers are named by the strings '0', '1' ...)"
    elif isinstance(value, nn.Module) and model is not None:
        found = next((name for name, module in model.named_modules() if module is value and name), None)
        if found is not None:
            hint = f"; that module is the layer {found!r}: pass its name"
    example = f" such as {names[0]!r}" if names else ""
    got = f"{type(value).__name__} {value!r}"
    got = got if len(got) <= 200 else got[:200] + " ..."
    raise TypeError(f"layer must be a layer's name, a str{example} (explorer.layers lists them), got {got}{hint}")


class _LayerTrait(_PlainStr):
    """The explorer's ``layer``: a layer's name, a ``str``; anything else is refused saying so (see
    :func:`_layer_name`), not cast (``b"conv1"``) or refused as "a unicode string"."""

    def validate(self, obj, value):
        if not isinstance(value, str):
            try:
                model = obj.probe.user_model
            except (AttributeError, RuntimeError):  # not made yet, or closed
                model = None
            try:
                _layer_name(value, obj._selectable_layers() if hasattr(obj, "_layers") else [], model)
            except TypeError as exc:
                raise t.TraitError(str(exc)) from None
        return super().validate(obj, value)


class _ViewLink(t.link):
    """``t.link`` between an explorer trait (source) and a view's (target), where the view's value
    comes from the browser: a value the explorer refuses is reported with ``on_error`` (the status
    line) and the view is set back to the explorer's value, instead of the error leaving the
    comm handler and the two disagreeing."""

    def __init__(self, source: Any, target: Any, on_error: Callable[[str, BaseException], None]) -> None:
        self._on_error = on_error
        super().__init__(source, target)

    def _update_source(self, change: Any) -> None:
        if self.updating:
            return
        try:
            super()._update_source(change)
        except Exception as exc:  # noqa: BLE001 - shown in the status line
            with self._busy_updating():
                setattr(self.target[0], self.target[1], getattr(self.source[0], self.source[1]))
            self._on_error(self.source[1], exc)


def _few_maps_note(layers: Mapping[str, LayerInfo]) -> str | None:
    """A note when the layer menu offers few of a model's layers because most of them give no
    feature maps (a vision transformer: a patch embedding, then token sequences); None otherwise."""
    ran = [info for info in layers.values() if info.calls > 0 and info.output_shape is not None]
    shown = [info.name for info in ran if info.shows_maps]
    others = [info for info in ran if not info.shows_maps]
    if not shown or len(shown) > 3 or len(others) < 3 * len(shown):
        return None
    names = ", ".join(shown)
    empty = [info for info in others if info.empty_map]
    if len(empty) * 2 >= len(others):
        # maps with no unit at this input size (a crop or deep pooling of a small image), not tokens
        example = empty[0]
        return (f"the layer menu offers {names} only: {len(empty)} of the model's {len(ran)} layers give feature maps "
                f"with no unit at this input size (e.g. {example.name}: {tuple(example.output_shape)}); a larger "
                "input_size gives them units")
    # a layer's own tokens, not a whole block's (a block is listed before the layers inside it)
    tokens = [info for info in others if not info.empty_map] or others
    example = next((info for info in tokens if info.is_leaf and len(info.output_shape) == 2), tokens[0])
    return (f"the layer menu offers {names} only: {len(others)} of the model's {len(ran)} layers give no feature "
            f"maps (C, H, W) but token sequences or vectors (e.g. {example.name}: "
            f"{tuple(example.output_shape)}), which the grid does not draw")


def layer_items(layers: Mapping[str, LayerInfo]) -> list[tuple[str, str, str]]:
    """``(group, label, name)`` for every layer of ``layers`` (name -> :class:`LayerInfo`, as
    :attr:`cnnwidgets.Probe.layers` holds them) whose output is a map stack, in execution order.

    That is every 3-D output, (C, H, W) or channels-last (H, W, C) (ConvNeXt and Swin blocks),
    which the explorer shows channels first; a map with no unit at this input size (a crop or a
    chain of poolings that leaves nothing, see :attr:`LayerInfo.empty_map`) is left out. A block
    (a module holding others) comes after the layers inside it, where its output is made. Layers
    are grouped by their top-level block; top-level leaf modules share the group ``"top level"``,
    one group per run of them between blocks (``"top level (after features)"``), so that the groups
    keep the order of the forward pass. A group of more than 16 layers is split: by the blocks
    inside it, or for a flat one like VGG's ``features`` into stages that end at its pooling layers
    (``"features · stage 1"``). Labels read ``name  Type  C×H×W``, with ``(HWC)`` after
    channels-last layers. A module that runs several times in one pass (one pooling layer used
    after each convolution, a ResNet block's ReLU) is listed where its last call runs, whose output
    it shows, and says so.
    """
    shown = [info for info in layers.values() if info.shows_maps]
    shown.sort(key=lambda info: (info.last_call < 0, info.last_call if info.last_call >= 0 else info.order))
    last_inside: dict[str, int] = {}  # block name -> index of the last layer shown inside it
    nesting = {info.name: info.name.count(".") for info in shown}
    for index, info in enumerate(shown):
        parts = info.name.split(".")
        for depth in range(1, len(parts)):
            last_inside[".".join(parts[:depth])] = index

    def place(index: int) -> tuple[float, int]:  # a block right after its last layer shown, inner blocks first
        inside = last_inside.get(shown[index].name)
        after = inside + 0.5 if inside is not None and not shown[index].is_leaf else index
        return after, -nesting[shown[index].name]

    items = []
    previous_block = None
    for index in sorted(range(len(shown)), key=place):
        info = shown[index]
        if "." in info.name or not info.is_leaf:
            group = previous_block = info.block
        else:
            group = "top level" if previous_block is None else f"top level (after {previous_block})"
        runs = f"  (last of {info.calls} calls)" if info.calls > 1 else ""
        items.append((group, f"{info.name}  {info.type}  {_map_text(info)}{runs}", info.name))
    return _split_long_groups(items, layers)


#: A group with more layers than this is split (see :func:`_split_long_groups`).
_LONG_GROUP = 16


def _split_long_groups(
    items: list[tuple[str, str, str]], layers: Mapping[str, LayerInfo]
) -> list[tuple[str, str, str]]:
    """Split each menu group of more than ``_LONG_GROUP`` layers into smaller ones, keeping the order.

    A group with blocks inside (MobileNet's and DenseNet's ``features``, a ResNet-50 stage) gets one
    group per block inside, named after it (``"features.3"``), split again the same way while it
    is long (a DenseNet dense block by its layers); the layers directly inside it between those
    blocks form a run named after the group (``"features"``, then ``"features (after
    features.denseblock1)"``). A flat group (VGG's and AlexNet's ``features``) is split into stages
    that end at its pooling layers (``"features · stage 2"``). The group's own module goes with
    the last part. A flat group without pooling inside stays whole.
    """
    out: list[tuple[str, str, str]] = []
    start = 0
    while start < len(items):  # groups are runs of equal labels
        end = start
        while end < len(items) and items[end][0] == items[start][0]:
            end += 1
        group = items[start][0]
        prefix = group if group in layers else ""  # a block's group, or a run of top-level layers
        out += _split_group(group, prefix, [(label, name) for _, label, name in items[start:end]], layers)
        start = end
    return out


def _split_group(
    group: str, prefix: str, entries: list[tuple[str, str]], layers: Mapping[str, LayerInfo]
) -> list[tuple[str, str, str]]:
    """One group of :func:`_split_long_groups`: ``entries`` are ``(label, name)`` of the layers inside
    module ``prefix`` ("" for the top level), in menu order."""
    if len(entries) <= _LONG_GROUP:
        return [(group, label, name) for label, name in entries]
    depth = prefix.count(".") + 1 if prefix else 0  # parts in the prefix's name
    nested = any(name.count(".") + 1 > depth + 1 for _, name in entries)
    parts: list[tuple[str, str | None, list[tuple[str, str]]]] = []  # (group label, block or None, entries)
    if nested:
        previous: str | None = None
        for label, name in entries:
            pieces = name.split(".")
            if name == prefix and parts:
                parts[-1][2].append((label, name))  # the block itself: after everything inside it
                continue
            child = ".".join(pieces[: depth + 1])
            if len(pieces) > depth + 1 or not layers[child].is_leaf:
                previous = child
                key: tuple[str, str | None] = (child, child)
            else:
                key = (group if previous is None else f"{group} (after {previous})", None)
            if not parts or parts[-1][:2] != key:
                parts.append((key[0], key[1], []))
            parts[-1][2].append((label, name))
        out = []
        for label_text, block, inside in parts:
            if block is None:
                out += [(label_text, label, name) for label, name in inside]
                continue
            # the enclosing block's own module, placed after this block's layers, goes with them
            # under the label its last one gets (not split off into a group of its own)
            own = [(label, name) for label, name in inside if name == block or name.startswith(block + ".")]
            outer = [(label, name) for label, name in inside if (label, name) not in own]
            split = _split_group(label_text, block, own, layers)
            out += split + [(split[-1][0], label, name) for label, name in outer]
        return out
    stage, pooled, out = 1, False, []
    for label, name in entries:
        if pooled and name != prefix:
            stage += 1
        pooled = "Pool" in layers[name].type
        out.append((stage, label, name))
    if out[-1][0] == 1:
        return [(group, label, name) for _, label, name in out]
    return [(f"{group} \u00b7 stage {n}", label, name) for n, label, name in out]


#: Layer menus longer than this get a filter box beside them.
FILTER_FROM_LAYERS = 40


def default_layer(layers: Mapping[str, LayerInfo]) -> str:
    """A sensible first layer of ``layers`` (name -> :class:`LayerInfo`): mid-level features
    that read as a grid. Among the convolutions whose output is a map larger than 1 x 1, counted
    in forward order, the last one up to the middle with at most :data:`READABLE_CHANNELS`
    channels (resnet18: ``layer2.1.conv2``, 128 maps of 28 x 28, where the middle one by count,
    ``layer3.0.conv1``, has 256 maps of 14 x 14: tiles too small to read); the middle one when
    every convolution up to it is wider; else the first layer with a map.

    Convolutions on a 1 x 1 map (the squeeze-and-excitation gates of RegNet, EfficientNet or
    MobileNetV3) are left out: their single pixel per channel shows nothing as a picture. For a
    model with few convolutions (a Swin transformer's patch embedding) that can be an early layer;
    for one with many parallel branches (Inception) the middle one by count, not by depth.

    A block that joins its input to what its parts add (a DenseNet's dense block, see
    :func:`_joining_blocks`) counts as one layer, in place of the convolutions inside it: each of
    those makes only a few new channels (32 in densenet121) or a bottleneck of the block's maps,
    while the block's output holds them all. Of densenet121's stem convolution, four dense blocks
    and three transition convolutions, the last one up to the middle with at most
    :data:`READABLE_CHANNELS` channels is ``features.transition1.conv`` (128 maps of 56 x 56).

    Raises:
        ValueError: if no layer outputs a (C, H, W) map (with at least one unit).
    """
    spatial = [i for i in layers.values() if i.shows_maps]
    if not spatial:
        empty = [i.name for i in layers.values() if i.empty_map]
        if empty:
            raise ValueError(
                f"no layer of the model has a feature map with at least one unit at this input size: "
                f"{', '.join(repr(n) for n in empty[:4])}{' ...' if len(empty) > 4 else ''} "
                "are empty (0 rows, columns or channels); use a larger input"
            )
        raise ValueError("the model has no layer with a (C, H, W) output to show as feature maps")
    joining = _joining_blocks(layers)

    def inside(info: LayerInfo) -> bool:
        return any(info.name.startswith(f"{block}.") for block in joining)

    convs = [i for i in spatial if (i.is_conv or i.name in joining) and has_spatial_map(i) and not inside(i)]
    if not convs:
        return spatial[0].name
    middle = len(convs) // 2
    readable = [i for i in convs[:middle + 1] if i.map_shape[0] <= READABLE_CHANNELS]
    return (readable[-1] if readable else convs[middle]).name


def _joining_blocks(layers: Mapping[str, LayerInfo]) -> set[str]:
    """The names of the blocks of ``layers`` that join their input to what their parts add, as a
    DenseNet's dense block concatenates its input and every dense layer's new channels: a module
    with at least two parts (direct submodules, or those of a container it holds that never runs
    itself, such as an ``nn.ModuleList``) that make feature maps, each run once, all of the
    block's height and width, whose channels add up to fewer than the block's. A chain of parts
    (its last part makes the block's output) and parallel branches joined without the input
    (Inception, whose branches' channels add up to at least the block's) are not such blocks."""
    children: dict[str, list[LayerInfo]] = {}
    for info in layers.values():
        if info.calls == 0 or info.output_shape is None:
            continue
        parent = info.name.rpartition(".")[0]
        while parent and getattr(layers.get(parent), "calls", 0) == 0:
            parent = parent.rpartition(".")[0]  # past a container that never runs (an nn.ModuleList)
        if parent:
            children.setdefault(parent, []).append(info)
    joining = set()
    for name, parts in children.items():
        block = layers.get(name)
        if block is None or block.is_leaf or not block.is_spatial or not has_spatial_map(block) or len(parts) < 2:
            continue
        channels, height, width = block.map_shape
        if all(p.is_spatial and p.calls == 1 and p.map_shape[1:] == (height, width) for p in parts) \
                and sum(p.map_shape[0] for p in parts) < channels:
            joining.add(name)
    return joining


READABLE_CHANNELS = 192
"""The most channels :func:`default_layer` opens a grid on when a layer with fewer will do: more
tiles than this are too small to read at the grid's width."""

#: The narrowest the grid's column gets beside the channel view; where that leaves it less room,
#: it goes under it. The grid is at most 720 CSS pixels wide (a wide layer's page 440).
GRID_COLUMN_BASIS = "540px"
#: The channel column's width before its first frame says how wide the channel view is.
PANEL_COLUMN_BASIS = "456px"
#: The narrowest the class scores get beside the channel view (see the ``.cnnw-scores`` rule).
SCORES_BASIS = "250px"


def _computed_part(state: ExplorerState) -> tuple:
    """What of ``state`` takes a new forward pass to show: its layer, image and device."""
    return state.layer, state.image_id, state.device


#: A frame that took at least this long (forward and drawing) makes the grid fade also while the
#: frame of a new occluder position or fill is computed: with a slow model the box moves at once
#: and the maps follow long after, which the fade shows. Quicker models send no such updates.
SLOW_FRAME_SECONDS = 0.25


def _occluded_part(state: ExplorerState) -> tuple:
    """What of ``state`` takes a new forward pass of an occluded image: the above, box and fill."""
    return (*_computed_part(state), state.box, state.fill)


def _nonfinite_note(layer: str, frame: Frame, probe: Probe | None = None) -> str | None:
    """What a frame with NaN or infinite values shows wrongly, and why (:func:`nonfinite_cause` of
    the ``probe``'s copy, whose weights computed it); None when all is finite."""
    bad = frame.computed.baseline.nonfinite
    probs = frame.computed.probs
    parts = []
    if bad.any():
        parts.append(f"{int(bad.sum())} of {bad.size} channels of {layer} hold NaN or infinite values "
                     "(drawn in magenta)")
    if probs is not None and not np.isfinite(probs).all():
        parts.append("the class scores are NaN")
    if not parts:
        return None
    model = probe.model if probe is not None and not probe.closed else None
    return "; ".join(parts) + ": " + nonfinite_cause(model)


def _user_hooks_note(hooks: tuple[str, ...]) -> str | None:
    """The note for a model with forward hooks of its own (``Probe.user_hooks``), which the
    explorer's copy does not run; None for none."""
    if not hooks:
        return None
    listed = "; ".join(hooks[:2]) + (f"; and {len(hooks) - 2} more" if len(hooks) > 2 else "")
    return (f"the model's own forward hooks do not run here ({listed}), so the maps and scores can "
            "differ from model(x): put what they do into the forward, or remove them, to see it")


#: Modules whose forward differs between training and evaluation mode.
_MODE_DEPENDENT = (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd)


def _training_note(model: nn.Module) -> str | None:
    """The note for a model left in training mode (``model.eval()`` forgotten), where batch norm or
    dropout then compute otherwise than in the explorer's evaluation-mode copy; None otherwise."""
    training = [m for m in model.modules() if m.training and isinstance(m, _MODE_DEPENDENT)]
    if not training:
        return None
    kinds = sorted({type(m).__name__ for m in training})
    return (f"the model is in training mode ({len(training)} {'/'.join(kinds)} module(s)): the explorer computes "
            "in evaluation mode, as after model.eval() (batch norm with its running statistics, no dropout), "
            "so the scores can differ from your model(x) until you call model.eval()")


#: A forward taking at least this long gets a note on how to make the explorer live again.
SLOW_FORWARD_NOTE_SECONDS = 1.0


def _slow_note(seconds: float, probe: Probe) -> str | None:
    """The note for a frame whose forward took ``seconds`` (None when it was quick)."""
    if seconds < SLOW_FORWARD_NOTE_SECONDS or probe.closed:
        return None
    size = "x".join(str(n) for n in probe.input_size)
    gpu = "" if probe.device.type != "cpu" else ", or a GPU (device=) where there is one,"
    return (f"each update takes {seconds:.1f} s (forward passes on a {size} input on {probe.device}): a "
            f"smaller input_size={gpu} makes dragging live")


def _heat_key() -> str:
    """How the method maps other than occlusion are coloured (``views.HEAT_CMAP``), for their
    caption: the colours from weak to strong, and in words."""
    return (f"weak {_colour_key(HEAT_CMAP)} strong: strongest where pale yellow, then orange and dark red; "
            "see-through where zero, over the image shown in gray")


#: How signed maps are coloured (see ``render.attribution.signed_to_rgb``), in words: for an RGB
#: input (True) and for other channel counts.
_SIGNED_KEYS = {
    True: "signed colour: mid-gray is 0, and each of red, green and blue is lighter where that colour's "
          "value is positive, darker where it is negative",
    False: "signed colour: red where the value (summed over the input's channels) is positive, blue where "
           "negative, white at 0",
}

#: The caption above the input image, with the occluder on (True) and off.
_INPUT_CAPTIONS = {
    True: "<b>input</b> &mdash; drag the box, resize at its corner; or keys: "
          "<span title='arrow keys move the box (with Shift: farther), Ctrl+arrow keys resize it, "
          "+ and &minus; grow and shrink it'>arrows, Ctrl+arrows, + &minus;</span>",
    False: "<b>input</b> &mdash; the occluder is off: press on the image (or Enter) to place it",
}

#: The class scores' heading, with the occluder on (True) and off (no change to show).
_SCORES_TITLES = {True: "class scores (change vs. no occluder, in percentage points)", False: "class scores"}

#: Channel counts the default preprocessing makes: grayscale and RGB.
_DEFAULT_CHANNELS = (1, 3)

#: An aspect-ratio change (either way) above which the status line says the image was reshaped:
#: a 4:3 photo squeezed into a square (1.33) is noted, a 5:4 one (1.25) is not.
_ASPECT_NOTE = 1.25

#: An enlargement above which the status line says a small image was blown up to the input size.
_ENLARGE_NOTE = 2.0


def _input_size_candidates(model: nn.Module, image: Any, channels: int) -> Iterator[tuple[int, ...]]:
    """Input sizes with ``channels`` channels to try, in order, for a model given without
    ``input_size`` or ``preprocess``.

    The size the model says it was trained at (:func:`~cnnwidgets.core.probe.trained_input_size`)
    first, then the sides of the probe's :func:`~cnnwidgets.core.probe.default_input_sizes`, with
    the image's own size (up to 512 pixels a side) tried right after 224 x 224 for RGB and first
    for grayscale. The image is only read if that candidate is reached.
    """
    trained = trained_input_size(model)
    if trained is not None and trained[0] == channels and trained[1] == trained[2]:
        yield trained  # the size the model says it was trained at (Inception v3: 299)
    sides: list[int] = []  # the usual sides, in order, less the trained size (tried above)
    for size in default_input_sizes(model):
        if trained not in (size, (channels, size[1], size[1])) and size[1] not in sides:
            sides.append(size[1])
    if channels == 3 and 224 in sides:
        sides.remove(224)
        yield (3, 224, 224)
    try:
        width, height = to_pil(image).size
    except (TypeError, ValueError, OSError):
        pass  # the image's own problem is reported when it is prepared
    else:
        if max(height, width) <= 512:
            yield (channels, height, width)
    for side in sides:
        yield (channels, side, side)


def _fit_default_size(probe: Probe, model: nn.Module, image: Any) -> tuple[int, ...]:
    """The first input size the model runs on with the default preprocessing; its layers are described.

    The channels are those of :func:`~cnnwidgets.core.probe.channel_guesses` that the default
    preprocessing makes (gray and RGB), in that order.

    Raises:
        RuntimeError: if the model runs on none of the sizes tried (the failure for the
            first convolution's channels).
        ValueError: if the first convolution takes a channel count the default preprocessing
            cannot make and the model runs on neither grayscale nor RGB inputs.
    """
    guesses = channel_guesses(model)
    found = guesses[0]
    counts = [c for c in guesses if c in _DEFAULT_CHANNELS]
    first_failure: RuntimeError | None = None
    for channels in counts:
        try:
            return probe.fit_input_size(_input_size_candidates(model, image, channels))
        except ChannelsLastError:
            raise
        except RuntimeError as exc:
            if first_failure is None:
                first_failure = exc
    if found in _DEFAULT_CHANNELS and first_failure is not None:
        raise first_failure
    raise ValueError(
        f"the model's first convolution takes {found} input channels and the model runs on neither grayscale "
        f"nor RGB inputs of the usual sizes: the default preprocessing makes 1-channel (grayscale) or 3-channel "
        f"(RGB) inputs, not {found}; pass preprocess= (image -> ({found}, H, W) tensor) and denormalize="
    )


def _reshape_note(prepared: ImageInput, chosen: bool = True) -> str | None:
    """A note when the input size changes the image's aspect ratio by more than
    :data:`_ASPECT_NOTE` times, or, for a size the explorer ``chosen`` (not the user's
    ``input_size``), enlarges it more than :data:`_ENLARGE_NOTE` times (a small image blown up to
    224 x 224 for a model that runs on any size, and normalised as ImageNet photos are: a model
    trained on small images may then see something it was never shown). None otherwise, or when
    the image's own size is unknown."""
    if prepared.source_size is None:
        return None
    width, height = prepared.source_size
    h, w = prepared.size
    channels = int(prepared.tensor.shape[1])
    change = (w / h) / (width / height)
    if max(change, 1 / change) > _ASPECT_NOTE:
        if not chosen:  # the user's size: say what it does to this image, and how to avoid it
            common = math.gcd(w, h)
            return (f"image stretched from {width}x{height} to {w}x{h} (the input size given): crop it to a "
                    f"{w // common}:{h // common} shape first to keep its proportions")
        return (f"image resized from {width}x{height} to {w}x{h}; pass input_size=({channels}, H, W) "
                "to keep its shape")
    if chosen and min(w / width, h / height) > _ENLARGE_NOTE:
        normalised = " and normalised as ImageNet photos are" if channels == 3 else ""
        return (f"the {width}x{height} image is enlarged to {w}x{h}{normalised} (the default preprocessing); for "
                f"a model trained on small images pass input_size=({channels}, {height}, {width}), or its own "
                "preprocess= (a zoo model: pass its bundle)")
    return None


def _normalisation_note(default: bool, prepared: ImageInput, classes: int | None) -> str | None:
    """A note when the default preprocessing normalised an RGB image with ImageNet's statistics for
    a model that is no ImageNet classifier (not :data:`IMAGENET_CLASSES` outputs): one trained on
    other inputs (pixels in [0, 1], CIFAR's statistics) then sees colours it was never shown, and
    answers with confidence all the same. None otherwise."""
    if not default or int(prepared.tensor.shape[1]) != 3 or classes == IMAGENET_CLASSES:
        return None
    return ("the image is normalised with ImageNet's mean and std (the default preprocessing); for a model "
            "trained on other inputs (pixels in [0, 1], say) pass preprocess= and denormalize= (a zoo model: "
            "pass its bundle), or its answers may be confident and wrong")


def _crop_note(prepared: ImageInput, preprocess: Any) -> str | None:
    """A note when the model's own preprocessing (a zoo bundle's: shorter side resized, centre
    square cropped) cuts a visible part off a non-square image (None otherwise)."""
    from cnnwidgets.zoo.bundle import ImagePreprocess

    if not isinstance(preprocess, ImagePreprocess) or prepared.source_size is None:
        return None
    width, height = prepared.source_size
    if max(width, height) <= 1.05 * min(width, height):  # square, or a sliver cut at most
        return None
    return (f"the {width}x{height} image is cropped to its centre square, as the model's preprocessing does "
            f"(shorter side to {preprocess.resize} px, centre {preprocess.size}x{preprocess.size})")


def _refusing_preprocess(error: ValueError) -> Callable[[Any], torch.Tensor]:
    """A preprocess that refuses every picture with ``error``'s message (why no default one exists)."""
    message = str(error)

    def preprocess(image: Any) -> torch.Tensor:
        raise ValueError(message)

    return preprocess


def _unpack(model: Any) -> dict[str, Any]:
    """Model, preprocessing, class names and name from an ``nn.Module`` or a zoo Bundle."""
    if isinstance(model, nn.Module):
        model = plain_module(model)
        return {"model": model, "name": type(model).__name__}
    if hasattr(model, "model") and hasattr(model, "preprocess"):
        found = {"model": plain_module(model.model), "preprocess": model.preprocess,
                 "name": getattr(model, "name", "model")}
        for attr in ("denormalize", "classes", "input_size"):
            if getattr(model, attr, None) is not None:
                found[attr] = getattr(model, attr)
        return found
    if isinstance(model, type) and issubclass(model, nn.Module):
        raise TypeError(f"explore needs a model, an instance of {model.__name__}, got the class itself: pass "
                        f"{model.__name__}(...)")
    if isinstance(model, Mapping) and model and all(isinstance(v, torch.Tensor) for v in model.values()):
        raise TypeError("explore needs the model itself, not a state dict (its weights only): make the model and "
                        "load them with model.load_state_dict(state_dict)")
    if isinstance(model, Probe):
        raise TypeError("explore needs the model itself (a torch.nn.Module) or its cnnwidgets.zoo Bundle, not a "
                        "Probe: the explorer makes its own probe of the model")
    raise TypeError(
        f"explore needs a torch.nn.Module or a cnnwidgets.zoo Bundle, got {type(model).__name__}"
    )


def _class_names(classes: Any) -> list[str]:
    """Class names as a list: any sequence (a NumPy array too), or ``{index: name}``.

    An entry that is a list of strings, as in the ImageNet class index (``{"0": ["n01440764",
    "tench"], ...}``), gives its last string.

    Raises:
        TypeError: for a string, a set or a mapping whose keys are not class indices.
        ValueError: for a mapping whose keys are not 0..N-1.
    """
    if isinstance(classes, (str, bytes)):
        raise TypeError(f"classes must be a sequence of names, one per class, got the string {classes!r}")
    if isinstance(classes, (set, frozenset)):
        raise TypeError("classes must be in class order (a list, tuple or array of names), not a set")
    if isinstance(classes, Mapping):
        try:
            items = sorted((int(k), v) for k, v in classes.items())
        except (TypeError, ValueError):
            raise TypeError("classes given as a mapping must map class indices to names, "
                            f"e.g. {{0: 'cat', 1: 'dog'}}; got keys {list(classes)[:5]}") from None
        if [k for k, _ in items] != list(range(len(items))):
            raise ValueError(f"classes given as a mapping must have the keys 0..{len(items) - 1}, "
                             f"got {[k for k, _ in items][:10]}")
        values = [v for _, v in items]
    else:
        try:
            values = list(classes)
        except TypeError:
            raise TypeError(f"classes must be a sequence of names, got {type(classes).__name__}") from None
    names = []
    for value in values:
        if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
            value = value[-1]
        names.append(str(value))
    return names


def _sample_dict(samples: Any) -> dict[str, Any]:
    """``samples`` as the ``{name: image}`` dict the image picker offers.

    Raises:
        TypeError: for anything but a mapping (a list of images, a path), or a name that is not a
            non-empty str (the picker's entries are names).
    """
    if not isinstance(samples, Mapping):
        raise TypeError(f"samples must be a mapping {{name: image}} of the images the picker offers, got "
                        f"{type(samples).__name__}; one image is passed as image=")
    for name in samples:
        if not isinstance(name, str) or not name:
            raise TypeError(f"samples must map names (non-empty strs) to images, got the name {name!r}")
    return dict(samples)


def _warn_if_not_undone(source: Any, prepared: ImageInput) -> None:
    """Warn when the default un-normalisation does not give back the image a custom
    ``preprocess`` was given: the picture shown and the occluder's pixel fills would be wrong.

    Compared are the contrast (the standard deviation of each colour channel) of the picture
    shown and of the image given, which a resize or crop changes little (resnet18's own
    transforms keep it within 0.6-1.3x on photos), while a scaling that the default does not
    undo changes it several-fold ([0, 1] pixels shown through the ImageNet inverse: about 0.23x);
    and the share of un-normalised values outside [0, 1], which is nil when the default is the
    inverse of the preprocessing (whatever was resized or cropped) and large for an offset it
    does not undo (a normalised gray image read as [0, 1]: most values fall outside, and their
    clipping raises the contrast, so that the first check alone misses it).
    """
    try:
        given = np.asarray(to_pil(source).convert("RGB").resize((128, 128)), dtype=np.float32).reshape(-1, 3)
    except Exception:  # noqa: BLE001 - only a check; the image was read once already
        return
    shown = prepared.display.astype(np.float32)
    shown = (np.repeat(shown[..., None], 3, axis=2) if shown.ndim == 2 else shown).reshape(-1, 3)
    spread = given.std(axis=0)
    if spread.min() < 8:  # a nearly flat image: its contrast says nothing
        return
    ratio = shown.std(axis=0) / spread
    outside = _outside_share(prepared.tensor[0])
    if ratio.min() < 0.45 or ratio.max() > 2.2:
        why = f"its contrast comes out {ratio.min():.2f}-{ratio.max():.2f} times the image's"
    elif outside > _OUTSIDE_WARNING:
        why = f"{100 * outside:.0f} % of its values fall outside [0, 1] and are shown clipped to black or white"
    else:
        return
    warnings.warn(
        f"preprocess= was given without denormalize=, and the default un-normalisation (ImageNet "
        f"statistics for RGB, [0, 1] for gray) does not give the image back ({why}): the image shown and "
        "the occluder's gray, black and noise fills would be wrong. Pass denormalize= (model input (C, H, W) "
        "-> (H, W, 3) floats in [0, 1])",
        UserWarning,
        stacklevel=4,
    )


#: Share of un-normalised values outside [0, 1] (beyond resampling's overshoot) that gets a warning.
_OUTSIDE_WARNING = 0.2


def _outside_share(x: torch.Tensor) -> float:
    """The share of the values of a model input (C, H, W) that the default un-normalisation
    (:func:`~cnnwidgets.app.inputs.default_unnormalized`, before :func:`default_denormalize`
    clips them) puts more than a resampling overshoot outside [0, 1]."""
    return outside_share(default_unnormalized(x.detach().float().cpu()))


class Explorer(ipw.VBox):
    """Explore what a CNN sees: pick a layer and channel, drag an occluder, watch maps and scores.

    Args:
        model: a classifier ``nn.Module``, or a zoo ``Bundle`` (model, preprocessing, class names).
            Its class scores are its output tensor, or what
            :func:`~cnnwidgets.core.targets.output_tensor` reads from the output: of a dict or an
            output object (a Hugging Face ``ModelOutput``), its ``logits`` entry or attribute, else
            a dict's ``out`` entry, else its only tensor. A model returning anything else (a plain
            tuple or list, None) still opens: the explorer shows its feature maps without class
            scores, and the status line says why.
        image: the first image (path, bytes, PIL image, array, tensor), or the name of a sample
            (``"star"``: that sample is shown first); None: the first sample.
            With a ``denormalize`` (given, or the bundle's), a float tensor (C, H, W) or (1, C, H, W)
            with values outside [0, 1] (already normalised) is the model input as it is: not
            preprocessed, drawn through ``denormalize``; without ``input_size`` or ``preprocess``,
            the images picked later are resized to its size. A tensor within [0, 1] is a picture.
        preprocess: image -> normalised (C, H, W) tensor. Default: the bundle's, else resize to
            ``input_size``; RGB is normalised with the ImageNet statistics, grayscale is scaled
            to [0, 1] (see :func:`~cnnwidgets.app.inputs.default_preprocess`).
        denormalize: (C, H, W) tensor -> (H, W, 3) (or gray (H, W)) floats in [0, 1] (default:
            the bundle's, else the inverse of the default preprocessing).
        classes: class names in class order: a list, tuple or array, or ``{index: name}``
            (default: the bundle's, else indices). There must be one per output unit; for a
            single output unit (a binary classifier, probability sigmoid(logit)) two names are
            read as (negative, positive), and the unit is the positive class.
        input_size: (C, H, W) for the default preprocessing. Default: the bundle's, else the
            first size the model runs on: C from its first convolution (else 3, then 1), then
            224 x 224 (RGB), the image's own size, 28, 32, 64 ... (so a CIFAR or MNIST network
            needs nothing). When the size found changes an image's aspect ratio by more than
            1.25 times (a 4:3 photo squeezed into a square), or enlarges a small image more than
            2 times, the status line says so.
        samples: ``{name: image}`` offered by the image picker. By default the zoo's samples,
            generated shapes that picture the embedded model's classes
            (:data:`cnnwidgets.zoo.SHAPE_CLASSES`): offered when no image is given (there is
            nothing else to show), or beside the image given when the class names are those
            classes (in any order) or, without class names, for the zoo's ShapesNet with five
            outputs; any other model (another five-class model too) gets its image and uploads.
        layer: the first layer (default: :func:`default_layer`).
        channel: the first channel. Default (None): channel 0, or where that channel is dead on
            the first image (no positive value), the first channel that is not, so the explorer
            does not open on a blank map.
        box: the first occluder box (x, y, w, h) in model-input pixels, any sequence of four numbers
            (a tuple, list or array, as the ``box`` trait takes); ``"center"`` (default):
            a square of a quarter of the image's side in its centre; None: no occluder. Like the
            ``box`` trait, it is rounded (halves up) and clamped into the image, and refused if it
            lies entirely outside.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"``, or a ``torch.device`` (here and
            in the trait); the trait holds the device menu's name (``"cpu:0"`` is ``"cpu"``, the
            current CUDA device is ``"cuda"``; ``"cpu:1"`` is refused: there is one CPU device).
        fill: occluder fill, one of ``gray``, ``mean``, ``black``, ``blur``, ``noise``. A pixel
            fill (gray, black, noise) that the model's ``denormalize`` cannot express (it is not a
            per-channel affine map) falls back to ``mean``, with a note in the status line.
        norm: grid normalisation, ``channel``, ``layer`` or ``fixed`` (the unoccluded range).
        cmap: colormap, one of ``viridis``, ``magma``, ``inferno``, ``plasma``, ``cividis``, ``gray``.
        show_scores: compute and show class scores (runs the full model per update).
        top_k: number of classes listed.
        outputs: how the model's outputs become the probabilities shown (scores, occlusion maps):
            ``"auto"`` (default: a model ending in an ``nn.Softmax`` or ``nn.Sigmoid`` module is read
            as it is, rows that are distributions too, anything else as logits, with a note when
            they look like a final sigmoid's), ``"logits"``, ``"multilabel_logits"`` (a sigmoid per
            class) or ``"probabilities"`` (see :func:`~cnnwidgets.core.targets.class_probabilities`).
        method: the method panel's first method, one of ``none``, ``occlusion``, ``saliency``,
            ``guided backprop``, ``deconvnet``, ``grad-cam`` (see :mod:`cnnwidgets.app.views`).
        target: the class the scores' change and the method maps are about: an index into the
            model's outputs, or a class name of ``classes`` (turned into its index), as the
            ``target`` trait takes them; None: the most probable class of each image.
        method_stride: the occlusion map's stride in input pixels, any positive int (the stride menu
            offers 4, 8, 16 and any other stride given). Its window is the occluder box's height
            and width, recomputed when the box is resized (not when it only moves).
        method_signed: show saliency, guided backprop and deconvnet with their sign, one colour
            per input channel around mid-gray (as Zeiler & Fergus and Springenberg et al. show their
            reconstructions), instead of their unsigned strength as a heatmap over the image in
            gray (the default). Switching redraws; it computes nothing.
        background: compute on a worker thread (True, for notebooks) or synchronously inside
            every change (False, for scripts and tests).

    Raises:
        TypeError: for a model that is not a module or bundle, classes that are not names
            in class order, an ``outputs`` that is not a string, a ``background`` that is not a bool,
            a ``layer`` that is not a name (a str), or ``samples`` that are not ``{name: image}``.
        KeyError: for an unknown layer name (with suggestions).
        ValueError: for an unreadable image (a normalised tensor without ``denormalize``, with a
            message saying that passing it lets the tensor in), a bad input_size or device, a box that is not
            four numbers (x, y, w, h), None or ``"center"``, a number of class names other than the
            model's number of outputs, an unknown ``outputs``, or a ``denormalize`` whose result is
            not an image.
        traitlets.TraitError: for a fill, norm, cmap or method it does not offer, a
            method_stride that is not a positive int, a layer without a feature map, or a box
            without positive size or entirely outside the image.

    Setting a trait to a value it does not accept (an unknown layer, a channel or target class
    out of range, a box outside the image ...) raises ``traitlets.TraitError`` saying what is
    accepted. ``box`` takes four numbers (rounded halves up, as the browser rounds) in model-input
    pixels, as any sequence (a NumPy array too); a box partly outside the image is moved and shrunk
    into it. ``channel``, ``target`` and ``method_stride`` take ints: Python's, NumPy's or a 0-d integer
    tensor (``model(x).argmax()``), as the method functions do; not bools or floats. ``target`` also
    takes a class name (``"star"``), held as that class's index; an unknown name is refused with
    some of the names.

    A layer with more than :data:`~cnnwidgets.app.frames.GRID_PAGE` (256) channels is shown a page of
    the grid at a time: the ``page`` trait is the page picked in its menu, None (the default, and
    again after another layer, channel or sort order is chosen) for the page that holds the
    selected channel; :attr:`grid_channels` are the channels shown.

    What it shows can be read from Python: :attr:`input_image`, :attr:`activations`,
    :attr:`baseline_activations`, :attr:`scores`, :attr:`grid_image`, :attr:`channel_image`, the
    method panel's map :attr:`method_result` (None when no method is asked for or it failed) and
    :attr:`method_error` (why the last method map failed, None when it succeeded), and the work
    done in :attr:`stats` (``errors`` counts the failed feature-grid stages and method maps).
    ``status`` is the status line widget: ``status.message`` holds every error and note shown,
    ``status.is_error`` says whether it is an error.

    When the model's modules are replaced while the explorer is open, what no longer fits is
    replaced with a note in the status line: a layer or channel that is gone, dead-channel marks
    whose channel count changed, a target class the outputs no longer have (the most probable class
    is shown), class names whose number no longer matches the outputs (indices are shown). An image
    of another input size replaces a layer that does not run at it the same way.
    """

    layer = _LayerTrait()
    channel = _StrictInt(0, accepted="; a channel of the layer shown")
    box = _BoxTrait(t.CFloat(), t.CFloat(), t.CFloat(), t.CFloat(), default_value=None, allow_none=True)
    dragging = _StrictBool(False)
    device = _DeviceTrait()
    fill = _NameTrait(FILLS, default_value="gray")
    norm = _NameTrait(NORM_MODES, default_value="fixed")
    cmap = _NameTrait(SEQUENTIAL, default_value="viridis")
    sort = _StrictBool(False)
    overlay = _StrictBool(True)
    show_scores = _StrictBool(True)
    page = _StrictInt(None, allow_none=True, accepted="; or None for the page that holds the selected channel")
    #: How many images :meth:`set_image` keeps in the picker (by name, the oldest leave first).
    MAX_SET_IMAGES = 16

    target = _TargetTrait(None, allow_none=True, one_element=True,
                          accepted="; or a class name (a str) of the explorer's classes, or None for the most "
                                   "probable class")
    image = _PlainStr(help="the image picker's entry shown: a sample's name, an upload or a name given to set_image")
    method = _NameTrait(METHODS, default_value="none")
    method_stride = _StrictInt(8, accepted="; the occlusion map's stride in input pixels, a positive int",
                               help="the occlusion map's stride in input pixels, any positive int")
    method_signed = _StrictBool(False, help="show saliency, guided backprop and deconvnet with their sign, in colour")

    def __init__(
        self,
        model: Any,
        image: Any = None,
        *,
        preprocess: Callable[[Any], torch.Tensor] | None = None,
        denormalize: Callable[[torch.Tensor], Any] | None = None,
        classes: Sequence[str] | None = None,
        input_size: Sequence[int] | None = None,
        samples: Mapping[str, Any] | None = None,
        layer: str | None = None,
        channel: int | None = None,
        box: Sequence[int] | None | str = "center",
        device: str = "auto",
        fill: str = "gray",
        norm: str = "fixed",
        cmap: str = "viridis",
        show_scores: bool = True,
        top_k: int = 5,
        outputs: str = "auto",
        method: str = "none",
        target: int | str | None = None,
        method_stride: int = 8,
        method_signed: bool = False,
        background: bool = True,
    ) -> None:
        check_output_kind(outputs)
        close_earlier_runs()  # what this cell's earlier runs opened: their threads and model copies go first
        parts = _unpack(model)
        if input_size is not None:
            input_size = check_input_size(input_size)
        top_k = as_count(top_k, "top_k")  # the number of classes listed
        if not isinstance(background, (bool, np.bool_)):
            raise TypeError(f"background must be True (compute on a worker thread) or False (inside every "
                            f"change), got {background!r}")
        if isinstance(box, str):
            if box != "center":
                raise ValueError(f"box must be (x, y, w, h), None or 'center', got {box!r}")
        elif box is not None:
            box = _box_numbers(box, f"{_BOX_ACCEPTED}, or 'center'")
        resolve_device(device)
        self._denormalize = denormalize or parts.get("denormalize") or default_denormalize
        self._samples_problem = ""
        shipped_samples = samples is None
        if samples is None:
            samples, self._samples_problem = _zoo_samples()
        self._samples: dict[str, Any] = _sample_dict(samples)
        self._names_set: list[str] = []  # names given to set_image, oldest first
        if self._names_sample(image):
            # that sample is shown first, under its own entry (not a copy of it as "your image"
            # beside the original)
            self._samples = {image: self._samples[image], **{k: v for k, v in self._samples.items() if k != image}}
            image = None
        self._user_image = _picker_name(image, self._samples)
        if image is not None:
            # decoded (or downloaded) once here: the size search and the preparation both read it
            image = self._source(image)
            self._samples = {self._user_image: image, **self._samples}
        self._images: OrderedDict[int, ImageInput] = OrderedDict()
        self._image_ids = itertools.count(1)
        self._image_id = 0
        self._closed = False
        self._frame: Frame | None = None
        self._frame_state: ExplorerState | None = None
        self._slow_frames = False  # the last frame took SLOW_FRAME_SECONDS or more (see _waits_for)
        self._out_of_date = False  # the pictures are those of an earlier state: its update failed
        self._frame_lock = threading.Lock()
        self._model_changes_seen = 0
        # traits and widget values change on the thread that owns the widgets (the kernel's event
        # loop runs comm messages there): the worker hands such work over instead of racing the user
        self._main_thread = threading.get_ident()
        try:
            self._main_loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:  # a script or a test: nothing else changes the traits meanwhile
            self._main_loop = None
        self._main_calls: list[Callable[[], None]] = []
        self._main_calls_lock = threading.Lock()
        self._suspend = True  # no submissions while wiring up
        self._last_box: tuple[int, int, int, int] | None = None
        self._data_dead: dict[str, np.ndarray] = {}
        self._method_error: str | None = None  # the status line's message when a method failed
        self._method_started = time.perf_counter()  # when the method map in progress was asked for
        self._method_errors = 0  # method maps that failed
        self._picking = False  # the picker follows the image shown: no image is loaded for that
        self._sizing = False  # the size control follows a box the user drew: the box keeps its shape
        self._notes: dict[str, str] = {}  # status-line notes shown with every frame, by what they are about
        self._size_chosen = False  # the explorer chose the input size: say when it reshapes an image
        self._size_given = False  # the user gave it (input_size, or a model-input tensor's size)

        source = self._first_sample()
        probe = Probe(parts["model"], device=device)
        try:
            custom = preprocess or parts.get("preprocess")
            described = None
            if custom is not None:
                self._preprocess = custom
            else:
                size = input_size or parts.get("input_size")
                if size is None and isinstance(source, ModelInput) and source.tensor.dim() == 3:
                    size = tuple(source.tensor.shape)  # the images picked later are resized to the tensor's size
                if size is None:
                    size = described = _fit_default_size(probe, parts["model"], source)
                    self._size_chosen = True
                else:
                    self._size_given = True
                size = check_input_size(size)
                try:
                    self._preprocess = default_preprocess(size[1:], channels=size[0])
                except ValueError as exc:
                    if not isinstance(source, ModelInput):
                        raise
                    # a model input of another channel count (4: RGB-D) is taken as it is; only a
                    # picture picked or uploaded later needs the preprocess that is missing
                    self._preprocess = _refusing_preprocess(exc)
            first = self._prepare_image(source, next(iter(self._samples)))
            if custom is not None and denormalize is None and "denormalize" not in parts:
                _warn_if_not_undone(source, first)
            self._class_count: int | None = None
            # the probe's version the class count was read at (None: not read yet)
            self._class_count_version: int | None = None
            discoveries = probe.stats.discoveries
            # at a size not described yet, this forward on the image is itself the discovery pass
            # (and its output is cached for the first frame): no pass on a blank image first
            count = self._count_classes(probe, first)
            if tuple(first.tensor.shape[1:]) != described and probe.stats.discoveries == discoveries:
                probe.describe(tuple(first.tensor.shape[1:]))  # the model failed on the image: this says why
            self._layers = {k: v for k, v in probe.layers.items()}
            self._set_note("normalisation", _normalisation_note(custom is None, first, count))
            names = _class_names(classes) if classes is not None else []
            if not names and parts.get("classes") is not None:
                names = _class_names(parts["classes"])
            if names and count is not None and len(names) != count and not (count == 1 and len(names) == 2):
                raise ValueError(
                    f"classes has {len(names)} names but the model has {count} output units; give one name per "
                    "output (or two names, negative and positive, for a single-output binary classifier)"
                )
            self._class_names = names  # as given: the model may change to fit them again
            self._classes = names[1:] if count == 1 and len(names) == 2 else names
            if shipped_samples and image is not None and not _offers_shipped_samples(parts["model"], names, count):
                # the shipped samples picture the embedded model's classes: a model of other
                # classes (an ImageNet network, a course's five flowers) is offered the user's
                # image and uploads
                self._samples = {self._user_image: self._samples[self._user_image]}
            self.controller = Controller(
                probe,
                images=self._image_by_id,
                geometry=self._geometry,
                labels=self._classes,
                on_frame=self._show_frame,
                on_error=self._show_error,
                background=background,
                top_k=top_k,
                marks=self._data_dead.get,
                outputs=outputs,
            )
            self._methods = MethodRunner(parts["model"], self._image_by_id, on_result=self._show_method,
                                         on_error=self._method_failed, on_progress=self._method_progress,
                                         background=background, outputs=outputs)
            self._build_views(first, parts.get("name", "model"))
            super().__init__(self._layout_children())
            self.add_class("cnnw-explorer")
            self._use_image(first)
            self.device = _device_name(probe.device)
            self.fill, self.norm, self.cmap, self.show_scores = fill, norm, cmap, show_scores
            problem = first.fill_problem(self.fill)
            if problem is not None:
                self.fill = "mean"
                self._set_note("fill", f"{problem}: the occluder fills with 'mean'")
            if layer is not None:
                layer = _layer_name(layer, self._selectable_layers(), parts["model"])
                if layer not in self._layers:
                    raise unknown_layer_error(layer, self._selectable_layers())
            self.layer = layer if layer is not None else default_layer(self._layers)
            self._fit_channel_to_layer()
            self.channel = 0 if channel is None else channel
            if box == "center":
                h, w = first.size
                side = max(1, min(h, w) // 4)
                box = ((w - side) // 2, (h - side) // 2, side, side)
            self.box = box
            self.input_caption.value = _INPUT_CAPTIONS[self.box is not None]
            self.method_stride = method_stride
            self.method_signed = method_signed
            self.target = target
            self.method = method
            self._wire()
            if channel is None:
                self._open_on_live_channel()  # before the first frame, so it is drawn on that channel
            self._suspend = False
            # the first frame and map: synchronous, an interrupt while they are drawn leaves the
            # caller no explorer to close, so it is closed here too
            self._submit()
            self._submit_method()
            opened(self)
        except BaseException:
            if getattr(self, "controller", None) is not None:
                self.close()  # the workers, their probes and the widgets made so far
            else:
                self._closed = True
                probe.close()
            raise

    def _open_on_live_channel(self) -> None:
        """Move the explorer off a dead channel 0 to the first live one before its first frame,
        from the unoccluded image's activations, computed now on this thread and kept by the
        controller for that frame (no forward pass more)."""
        try:
            dead = self.controller.baseline(self.state()).dead
        except Exception:  # noqa: BLE001 - the first frame meets the same failure, and says why
            return
        if len(dead) and dead[self.channel] and not dead.all():
            self.channel = int(np.flatnonzero(~dead)[0])

    # ------------------------------------------------------------------ images
    def _first_sample(self) -> Any:
        if not self._samples:
            why = f" ({self._samples_problem})" if self._samples_problem else ""
            raise ValueError(f"no image given and no sample images available{why}; pass image=...")
        return next(iter(self._samples.values()))

    def _names_sample(self, image: Any) -> bool:
        """Whether ``image`` is the name of a sample (a picker entry) and no file of that name exists."""
        return isinstance(image, str) and image in self._samples and not os.path.exists(image)

    def _source(self, image: Any) -> Image.Image | ModelInput:
        """``image`` read once: a picture as an RGB PIL image; a float tensor with values outside
        [0, 1] (normalised) as the model input as it is, when a ``denormalize`` is given (the
        ``denormalize=`` argument or the bundle's), which draws it.

        Raises:
            ValueError: for a normalised tensor without a ``denormalize`` given, saying how to pass
                it; and as :func:`~cnnwidgets.app.inputs.to_pil`.
            TypeError: as :func:`~cnnwidgets.app.inputs.to_pil`.
            FileNotFoundError: for a string that is no file; one that looks like a sample's name
                (no folder, no extension) is told the samples' names too.
        """
        found = model_input_range(image)
        if found is None:
            try:
                return to_pil(image)
            except FileNotFoundError as exc:
                if not isinstance(image, str) or not self._samples or re.search(r"[/\\]", image) \
                        or os.path.splitext(image)[1]:
                    raise
                names = ", ".join(repr(name) for name in self._samples)
                raise FileNotFoundError(f"{exc}, nor is it the name of a sample ({names})") from None
        if self._denormalize is not default_denormalize:
            return ModelInput(image)
        raise ValueError(
            f"the image is a float tensor with values in [{found[0]:.4g}, {found[1]:.4g}], not a picture in [0, 1] "
            "(it looks normalised): pass the image before normalisation, or pass denormalize= (the inverse of the "
            "normalisation: model input (C, H, W) -> (H, W, 3) floats in [0, 1]) to use the tensor, (C, H, W) or "
            "(1, C, H, W), as the model input as it is"
        )

    def _prepare_image(self, source: Any, name: str) -> ImageInput:
        return ImageInput.prepare(source, self._preprocess, self._denormalize, name=name)

    def _use_image(self, prepared: ImageInput) -> None:
        previous = self._images.get(self._image_id)
        if previous is not None and previous.tensor.shape != prepared.tensor.shape:
            # another input size (a preprocess that keeps the image's own size): shapes change
            size = "x".join(str(side) for side in prepared.tensor.shape[2:])
            at_size = f"at the new image's input size {size}"
            self._take_layers(dict(self.controller.probe.describe(tuple(prepared.tensor.shape[1:]))),
                              f"layer {{layer}} does not run or shows no feature map {at_size}", at_size)
        image_id = next(self._image_ids)
        self._images[image_id] = prepared
        while len(self._images) > 4:
            self._images.popitem(last=False)
        self._image_id = image_id
        h, w = prepared.size
        if self._size_chosen or self._size_given:
            self._set_note("size", _reshape_note(prepared, chosen=self._size_chosen))
        else:
            self._set_note("size", _crop_note(prepared, self._preprocess))
        self._set_note("channels", (
            "the image's fourth channel (transparency, or depth) is composited over white before preprocess=, "
            "which is given an RGB image: the model's fourth input channel does not come from the image; for "
            "four-channel data, call the methods on tensors (cnnwidgets.methods)"
        ) if prepared.fourth_channel_dropped else None)
        self.canvas.set_image(encode_png(prepared.display), "png", w, h)
        self._show_fill(prepared, self.fill)
        self.occluder_controls.max_size = min(h, w)
        if self.box is not None:
            self.box = clamp_box(self.box, w, h)

    def _image_by_id(self, image_id: int) -> ImageInput:
        return self._images[image_id]

    @property
    def input_image(self) -> np.ndarray:
        """The current image as the model sees it (model-input pixels), uint8 (H, W, 3).

        Raises:
            RuntimeError: when the explorer is closed.
        """
        self._check_open()
        return self._images[self._image_id].display

    def set_image(self, image: Any, name: str | None = None) -> None:
        """Show another ``image`` (path, bytes, PIL image, array, tensor; with a ``denormalize``, a
        normalised tensor is the model input as it is, as for the explorer's ``image``).

        The image becomes the picker's entry ``name`` (an earlier entry of that name is replaced)
        and is selected: :attr:`image` is ``name``. Without a name, a path or URL is named by its
        file (``cat.jpg``, unless a sample has that name) and anything else ``"your image"``; the
        name of an entry (``"star"``) shows that entry, as :attr:`image` does. The picker keeps the last
        :attr:`MAX_SET_IMAGES` names given here (older ones leave it, with the images they held),
        so a loop over many images does not keep them all in memory.

        Raises:
            ValueError, TypeError: for an image that cannot be read or preprocessed, or a name that
                is not a non-empty string; the image shown does not change.
        """
        self._check_open()
        if name is None and self._names_sample(image):
            self.image = image  # as explore() takes it: that entry is shown
            return
        if name is None:
            # an image given earlier under that file name is replaced, a sample is not
            given = {*self._names_set, self._user_image}
            name = _picker_name(image, {k: v for k, v in self._samples.items() if k not in given})
        if not isinstance(name, str) or not name:
            raise ValueError(f"set_image needs a non-empty name for the image picker, got {name!r}")
        source = self._source(image)  # decoded (or downloaded) once: picking the entry again reuses it
        prepared = self._prepare_image(source, name)
        self._samples[name] = source
        # an upload's entry given to another image is that image's now: the file uploaded again is
        # offered anew, not shown as this picture
        self.picker.forget_upload(name)
        self._show_image(prepared)
        if name in self._names_set:
            self._names_set.remove(name)
        self._names_set.append(name)
        while len(self._names_set) > self.MAX_SET_IMAGES:
            old = self._names_set.pop(0)  # never the one shown now, which is the last
            self._samples.pop(old, None)
            if old in self.picker.names:
                self.picker.remove_entry(old)

    def _show_image(self, prepared: ImageInput) -> None:
        self._use_image(prepared)
        self._follow_shown_image()
        self._submit()
        self._submit_method()

    def _follow_shown_image(self) -> None:
        """Select the shown image's entry in the picker and in :attr:`image` (nothing is loaded)."""
        name = self._images[self._image_id].name
        self._picking = True
        try:
            self.picker.add_entry(name)
            self.picker.value = name
            self.image = name
        finally:
            self._picking = False

    def _refuse_when_closed(self, proposal) -> None:
        """A closed explorer shows nothing: setting its state is a mistake, not a silent no-op."""
        if getattr(self, "_closed", False):
            raise t.TraitError(
                f"cannot set {proposal['trait'].name}: this explorer is closed; open a new one with "
                "cnnwidgets.explore(...)"
            )

    @t.validate("dragging", "fill", "norm", "cmap", "sort", "overlay", "show_scores", "method", "method_signed")
    def _check_open_for(self, proposal):
        self._refuse_when_closed(proposal)
        return proposal["value"]

    @t.validate("image")
    def _check_image(self, proposal):
        self._refuse_when_closed(proposal)
        name = proposal["value"]
        picker = getattr(self, "picker", None)
        if picker is not None and name not in picker.names:
            raise t.TraitError(
                f"unknown image {name!r}; the picker offers {', '.join(map(repr, picker.names))} "
                "(show another image with explorer.set_image(image, name))"
            )
        return name

    def _image_named(self, change) -> None:
        self.picker.value = change["new"]  # the picker loads it (_on_pick)

    def _on_pick(self, change) -> None:
        entry = change["new"]
        if self._picking or not entry:
            return
        source = self._samples.get(entry)
        if source is None:
            source = self.picker.data_for(entry)
        try:
            if source is None:
                raise ValueError("the picker has no image under this name")
            self._show_image(self._prepare_image(source, entry))
        except Exception as exc:  # noqa: BLE001 - shown in the status line, the widget goes on
            uploaded = self.picker.data_for(entry) is not None
            if uploaded and isinstance(exc, ValueError):
                # the user's own file: say what is wrong with it in plain words
                self.status.error(f"{entry}: {exc}; the image shown is unchanged")
            else:
                self._show_error(f"image {entry!r}", exc)
            self._follow_shown_image()  # the picker goes back to the image still shown
            if uploaded:
                self.picker.remove_entry(entry)  # an upload that cannot be shown is not offered

    def _on_upload_problem(self, message: str) -> None:
        # a file that did not arrive (too large, unreadable in the browser): the image stays
        self.status.error(f"{message}; the image shown is unchanged (explorer.set_image(image, name) "
                          "shows an image given in Python)")

    def _on_reupload(self, change) -> None:
        # the file shown was uploaded again: nothing to load, but an error about another upload
        # (a file that could not be read) is no longer the news
        if self.status.is_error:
            self._status_info(f"{self.picker.value} is the image shown")

    # ------------------------------------------------------------------ layers
    @property
    def layers(self) -> dict[str, LayerInfo]:
        """Every layer of the model for the current input size (name -> LayerInfo)."""
        return dict(self._layers)

    def _geometry(self, layer: str) -> LayerGeometry:
        info = self._layers.get(layer)
        if info is None or info.jump is None or info.start is None:
            return LayerGeometry()
        return LayerGeometry(jump=float(info.jump), start=float(info.start))

    def _channels(self, layer: str) -> int:
        info = self._layers[layer]
        shape = info.map_shape or info.output_shape
        return int(shape[0]) if shape else 1

    @t.validate("layer")
    def _check_layer(self, proposal):
        self._refuse_when_closed(proposal)
        name = str(proposal["value"])  # a plain str, also in messages (not np.str_('...'))
        info = self._layers.get(name)
        if info is None:
            raise t.TraitError(unknown_layer_error(name, self._selectable_layers()).args[0])
        if info.map_shape is None or info.calls == 0:
            what = ("does not run in the model's forward pass (in evaluation mode; auxiliary heads run only in "
                    "training)" if info.calls == 0 else f"outputs {info.shape_text}, not a (C, H, W) feature map")
            nearby = ", ".join(repr(near) for near in self._layers_near(name))
            raise t.TraitError(
                f"layer {name!r} {what}; the explorer shows layers with a (C, H, W) feature map"
                + (f", such as {nearby}" if nearby else "")
                + " (every layer, with its output shape: cnnwidgets.Probe(model).layers; those with a feature map "
                "have .shows_maps)"
            )
        if info.empty_map:
            raise t.TraitError(str(empty_map_error(info, self.controller.probe.input_size)))
        return name

    def _selectable_layers(self) -> list[str]:
        """The layers the layer menu offers (those with a feature map that run, not an empty one)."""
        return [name for name, info in self._layers.items() if info.shows_maps]

    def _layers_near(self, name: str, count: int = 4) -> list[str]:
        """Up to ``count`` layers the menu offers, the nearest to layer ``name`` in the model's
        order (for messages about a layer that cannot be shown), in that order."""
        order = {layer: i for i, layer in enumerate(self._layers)}
        at = order.get(name, 0)
        nearest = sorted(self._selectable_layers(), key=lambda layer: (abs(order[layer] - at), order[layer]))
        return sorted(nearest[:count], key=order.__getitem__)

    def _refresh_layers(self) -> None:
        """Take the probe's layer table after the user replaced modules of the model (the probe
        copied it afresh): channel counts, shapes, the layer menu, the dead-channel marks, the
        target class and the class names follow."""
        layers = dict(self.controller.probe.layers)
        if layers == self._layers:
            return
        changed = self._take_layers(layers, "the model changed and layer {layer} is gone or shows no feature map now",
                                    "the model changed")
        changed |= self._drop_stale_marks()
        changed |= self._fit_target_to_classes()
        if changed:
            self._submit()

    def _take_layers(self, layers: dict[str, LayerInfo], gone: str, changed: str) -> bool:
        """Take a new layer table (the model or the input size changed): the menu, the layer and the
        channel follow; a layer or channel that is gone is replaced, with a note (``gone`` says why
        a layer is, with ``{layer}`` in it; ``changed`` starts the channel's note). Returns whether
        the selection changed; nothing is submitted."""
        self._layers = layers
        layer, channel = self.layer, self.channel
        keep = layer in self._selectable_layers()
        suspended, self._suspend = self._suspend, True  # one update for the new selection, after its note
        try:
            # the menu's value follows in the same step (not its first item, then the default)
            chosen = layer if keep else default_layer(self._layers)
            self.layer_select.set_items(self._menu_items(chosen), value=chosen)
            self._show_filter_box()
            self._set_note("layers", _few_maps_note(self._layers))
            self._fit_channel_to_layer()
        finally:
            self._suspend = suspended
        # a selection that is gone is replaced; say so until the user picks again
        if self.layer != layer:
            info = layers.get(layer)
            if info is not None and info.empty_map and info.calls:
                self._set_note("selection", f"{changed}: layer {layer} has an empty feature map {info.shape_text}: "
                                            f"showing {self.layer}")
            else:
                self._set_note("selection", f"{gone.format(layer=layer)}: showing {self.layer}")
        elif self.channel != channel:
            self._set_note("selection", f"{changed}: {layer} has {self._channels(layer)} channels now, "
                                        f"channel {channel} is gone: showing channel {self.channel}")
        return (self.layer, self.channel) != (layer, channel)

    def _drop_stale_marks(self) -> bool:
        """Drop the dead-channel marks of layers that are gone or whose channel count changed (the
        model changed), with a note; returns whether any were dropped."""
        stale = [layer for layer, marks in self._data_dead.items()
                 if layer not in self._layers or marks.shape != (self._channels(layer),)]
        if not stale:
            return False
        for layer in stale:
            del self._data_dead[layer]
        self.controller.redraw()
        self._set_note("marks", f"the model changed: the dead-channel marks of {', '.join(stale)} no longer fit its "
                                "channels and were dropped (explorer.scan_dead or mark_dead marks them again)")
        return True

    def _fit_target_to_classes(self) -> bool:
        """After the model's layers changed: a target class the model's outputs no longer have is
        reset to the top class, and class names that no longer fit them give way to indices, each
        with a note. Returns whether the target or the names changed."""
        if self.target is None and not self._class_names:
            return False
        count = self._count_classes(self.controller.probe, self._images[self._image_id])
        if count is None:
            return False
        changed = False
        if self.target is not None and self.target >= count:
            old = self.target
            suspended, self._suspend = self._suspend, True  # submitted once, by the caller
            try:
                self.target = None
            finally:
                self._suspend = suspended
            self._set_note("target", f"the model changed: it has {count} classes now and class {old} is gone: "
                                     "the target is the most probable class")
            changed = True
        names = self._class_names[1:] if count == 1 and len(self._class_names) == 2 else self._class_names
        if self._class_names and len(names) != count:
            names = []
            self._set_note("classes", f"the model changed: it has {count} output units now, not one per class name "
                                      f"given ({len(self._class_names)}): classes are shown by index")
        else:
            self._set_note("classes", None)
        if names != self._classes:
            self._classes = names
            self.controller.set_labels(names)
            self.controller.redraw()
            changed = True
        return changed

    def _count_classes(self, probe: Probe, image: ImageInput) -> int | None:
        """Number of classes the model scores (None when its output is not class scores)."""
        version = probe.version  # read first: a refresh during the pass makes the count be read again
        count = class_count(probe, image.tensor, cache=True)
        self._class_count, self._class_count_version = count, version
        return count

    def _class_name_index(self, name: str) -> int:
        """The index of the class named ``name``, for the ``target`` trait, which takes a name of
        the explorer's classes; an unknown name is refused, with a few of the names.

        Raises:
            traitlets.TraitError: for a name that is not one of the classes (or names several),
                or when the explorer has no class names (pass ``classes=``).
        """
        names = list(getattr(self, "_classes", []))
        given = list(getattr(self, "_class_names", []))
        if not names:
            try:
                as_index(name, "target", hint="; a class name is taken where the explorer has class names (pass "
                                              "classes=[...] to explore() or Explorer()), and this one has none; or "
                                              "None for the most probable class")
            except TypeError as exc:  # always: a str is no index
                raise t.TraitError(str(exc)) from None
        accepted = "target must be a class index (an int), one of the explorer's class names, or None for the top class"
        found = [k for k, known in enumerate(names) if known == name]
        if len(found) == 1:
            return found[0]
        if found:
            listed = ", ".join(str(k) for k in found[:-1]) + f" and {found[-1]}"
            raise t.TraitError(f"{accepted}; {name!r} names classes {listed}: give the index of the one meant")
        if len(names) == 1 and len(given) == 2 and name == given[0]:
            raise t.TraitError(f"{accepted}; {name!r} is the negative class of the model's one output unit, which has "
                               f"no score of its own: target 0 ({names[0]!r}) is the positive class, whose logit the "
                               "unit gives")
        shown = ", ".join(repr(known) for known in names[:8])
        if len(names) > 8:
            shown += f", ... ({len(names)} names)"
        lowered = {known.lower(): known for known in names}
        close = ([lowered[name.lower()]] if name.lower() in lowered
                 else difflib.get_close_matches(name, names, n=3, cutoff=0.75))
        guess = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
        raise t.TraitError(f"{accepted}; {name!r} is not one of the class names{guess}: {shown}")

    @t.validate("target")
    def _check_target(self, proposal):
        self._refuse_when_closed(proposal)
        value = proposal["value"]
        if value is None:
            return None
        if isinstance(value, bool):
            raise t.TraitError(f"target must be a class index (an int) or a class name (a str), or None for the top "
                               f"class; got {value!r}")
        value = int(value)
        probe = self.controller.probe
        # the count is stale when the private copy was refreshed since (by the worker too, before
        # this thread heard of the change) or the user's model changed and no one looked yet
        if self._class_count_version != probe.version or probe.user_model_changed():
            self._count_classes(probe, self._images[self._image_id])
        count = self._class_count
        if value < 0 or (count is not None and value >= count):
            accepted = f"0..{count - 1}" if count is not None else "0 or more"
            if count == 1:
                # a binary classifier's one output unit: its logit is the positive class's
                named = f" ({self._classes[0]!r})" if self._classes else ""
                accepted = (f"0, the model's one output unit{named}, whose sigmoid is the positive class's "
                            "probability")
            raise t.TraitError(f"target class {value} out of range: accepted {accepted}, or None for the top class")
        return value

    def _fit_channel_to_layer(self) -> None:
        count = self._channels(self.layer)
        if self.channel >= count:
            self.channel = 0
        if self.channel <= self.channel_slider.max:
            # the slider on the channel first: a channel set together with the layer (in
            # hold_trait_notifications()) reaches it after this, and a lower max would clamp the old
            # value, which the link hands back to the explorer in place of the channel set
            self.channel_slider.value = self.channel
        self.channel_slider.max = count - 1

    def _layer_channels(self) -> int:
        """The number of channels of the layer set, for the checks of ``channel`` and ``page`` (1
        before the first layer is set).

        Changed together with them in ``hold_trait_notifications()``, that layer is checked after
        them: one the model lacks is refused here, as its own check would refuse it (a ``KeyError``
        instead would keep every change held, the unknown layer included, and show it).

        Raises:
            traitlets.TraitError: for a layer the model does not have.
        """
        layer = self.layer
        if not layer:
            return 1
        if layer not in self._layers:
            raise t.TraitError(unknown_layer_error(layer, self._selectable_layers()).args[0])
        return self._channels(layer)

    @t.validate("page")
    def _check_page(self, proposal):
        self._refuse_when_closed(proposal)
        value = proposal["value"]
        if value is None:
            return None
        pages = grid_pages(self._layer_channels())
        accepted = f"0..{pages - 1}" if pages > 1 else f"only 0 (it has at most {GRID_PAGE} channels)"
        if isinstance(value, (bool, np.bool_)):
            raise t.TraitError(f"page must be an int, not a bool (got {value!r}): for layer {self.layer!r} accepted "
                               f"{accepted}, or None for the page that holds the selected channel")
        if not 0 <= int(value) < pages:
            raise t.TraitError(f"page {value!r} out of range for layer {self.layer!r}: accepted {accepted}, or None "
                               "for the page that holds the selected channel")
        return int(value)

    @t.validate("channel")
    def _check_channel(self, proposal):
        self._refuse_when_closed(proposal)
        value = proposal["value"]
        count = self._layer_channels()
        if isinstance(value, bool):
            raise t.TraitError(
                f"channel must be an int, a channel 0..{count - 1} of layer {self.layer!r}; got {value!r}"
            )
        value = int(value)
        if not 0 <= value < count:
            raise t.TraitError(f"channel {value} out of range 0..{count - 1} for layer {self.layer!r}")
        return value

    @t.validate("box")
    def _check_box(self, proposal):
        self._refuse_when_closed(proposal)
        box = proposal["value"]
        if box is None:
            return None
        h, w = self._images[self._image_id].size
        try:
            return clamp_box(box, w, h, inside_only=True)
        except ValueError as exc:
            units = " (width x height in model-input pixels, the units of the box (x, y, w, h))"
            raise t.TraitError(f"{exc}{units if 'outside' in str(exc) else ''}") from exc

    @t.validate("device")
    def _check_device(self, proposal):
        self._refuse_when_closed(proposal)
        try:
            name = _device_name(resolve_device(proposal["value"]))
        except ValueError as exc:
            raise t.TraitError(str(exc)) from exc
        offered = self.device_select.options
        if name not in offered:
            raise t.TraitError(f"device {proposal['value']!r} is not offered here; accepted: {', '.join(offered)}")
        return name

    @t.validate("method_stride")
    def _check_method_stride(self, proposal):
        self._refuse_when_closed(proposal)
        value = proposal["value"]
        if isinstance(value, bool) or value < 1:
            raise t.TraitError(
                f"method_stride must be a positive int (the occlusion map's step in input pixels), got {value!r}"
            )
        return value

    # ------------------------------------------------------------------ views
    def _build_views(self, first: ImageInput, model_name: str) -> None:
        h, w = first.size
        self.canvas = OccluderCanvas(display_width=max(192, min(256, 4 * w)), default_size=max(1, min(h, w) // 4))
        self.grid = TileGrid()
        # no side margins: ipywidgets' 2px on each side would make the shrunk view (max-width 100%
        # in a narrow output) 4px wider than its column, with a scroll bar under it
        self.panel = ipw.Image(format="jpeg", layout=ipw.Layout(width="auto", height="auto", margin="2px 0px"))
        self.panel.add_class("cnnw-pixelated")
        self.input_caption = ipw.HTML(_INPUT_CAPTIONS[True])
        self.input_caption.add_class("cnnw-caption")  # wraps in its column: the image's width sets the layout
        self.panel_caption = ipw.HTML()
        self.panel_caption.add_class("cnnw-caption")  # wraps within its column: the layout stays still
        self.grid_caption = ipw.HTML()
        self.grid_caption.add_class("cnnw-wrapping-text")  # wrapped lines as close as the captions'
        self.scores_view = ScoreBars(title=_SCORES_TITLES[True])
        self.layer_select = GroupedSelect(description="layer")
        self.layer_select.set_items(layer_items(self._layers))
        # a model with many layers (DenseNet: 400) gets a box that narrows the menu down
        self.layer_filter = CheckedText(placeholder="filter layers", continuous_update=True,
                                        layout=ipw.Layout(width="150px"))
        self._show_filter_box()
        self._set_note("layers", _few_maps_note(self._layers))
        self._note_user_model()
        self.channel_slider = CheckedIntSlider(min=0, max=0, description="channel",
                                               layout=ipw.Layout(width="320px"))
        # a layer wider than GRID_PAGE channels is shown a page at a time; hidden for the others
        self.page_select = CheckedDropdown(description="page", options=[("1", 0)], value=0,
                                           layout=ipw.Layout(width="290px", display="none"))
        self._page_options_for: tuple | None = None
        self.display_controls = DisplayControls(norm_modes=NORM_MODES, colormaps=SEQUENTIAL)
        self.occluder_controls = OccluderControls()
        self.occluder_controls.size = self.canvas.default_size
        devices = _device_names()
        current = _device_name(self.controller.probe.device)
        if current not in devices:
            devices.append(current)
        self.device_select = device_dropdown(devices, current)
        names = list(self._samples)
        self.picker = ImagePicker(names or [_USER_IMAGE])
        self.scores_toggle = CheckedCheckbox(description="class scores", indent=False,
                                             layout=ipw.Layout(width="120px"))
        self.status = StatusLine()
        self.method_view = MethodView(METHODS, display_width=self.canvas.display_width, signed_methods=SIGNED_METHODS)
        self.title = ipw.HTML(f"<b>{html.escape(str(model_name))}</b>")

    def _layout_children(self) -> list[ipw.Widget]:
        def row(children: list[ipw.Widget], space: str = "14px") -> ipw.HBox:
            for child in children[:-1]:
                child.layout.margin = f"0 {space} 0 0"
            return ipw.HBox(children, layout=wrapping_row())

        # at most the output's width: in a narrow output the picture shrinks (the occluder with it)
        # the method panel under the input image: its map, as wide as the image, sits right under
        # what it explains, and a column of its own beside a taller one would leave a gap above
        # it whenever a narrower output wraps it onto the next line
        self.method_view.layout.margin = "10px 0 0 0"
        # no scroll box: the resize handle of a small box at the picture's right or bottom edge sticks
        # out of the picture (into the 16px gap between columns); in a box that scrolls it made the
        # column scroll sideways, and a column scrolled to show the handle jumped back while the
        # box was resized, so that the box no longer followed the pointer. min_width 0 keeps the
        # column shrinking as a scroll box does.
        image_col = ipw.VBox([self.input_caption, self.canvas, self.method_view],
                             layout=ipw.Layout(max_width="100%", min_width="0", overflow="visible"))
        # the class scores beside the channel view where the column has room for both, else under it
        # (in a box of their own: the list keeps any width given to it)
        self._scores_box = ipw.VBox([self.scores_view], layout=ipw.Layout(flex=f"1 1 {SCORES_BASIS}",
                                                                            max_width="460px", margin="10px 0 0 0"))
        panel_col = ipw.VBox([self.panel_caption, self.panel], layout=ipw.Layout(max_width="100%"))
        self._channel_col = ipw.HBox([panel_col, self._scores_box], layout=wrapping_row())
        selectors = row([self.layer_select, self.layer_filter, self.channel_slider, self.page_select])
        # the grid and what chooses and explains it: beside the channel view where both fit at
        # their widths, else under it, as wide as the room there (the grid shrinks to it); beside
        # it, the grid's column takes nearly all the room the line has left (the channel view's
        # column grows only where it has its line to itself: the class scores then go beside the view)
        self._grid_col = ipw.VBox([selectors, self.display_controls, self.grid_caption, self.grid],
                                  layout=ipw.Layout(flex=f"50 1 {GRID_COLUMN_BASIS}", min_width="0", max_width="100%"))
        # the channel view and the grid: a column beside the input image and the method map while a
        # method is shown (a tall column: the grid fills the room beside the map); without one,
        # their box is left out of the layout (display: contents) and the grid takes the whole
        # width under the pictures (beside the short input column it would leave a gap under it)
        self._right_col = ipw.HBox([self._channel_col, self._grid_col], layout=wrapping_row())
        # nothing to cut off (its columns fit it): a box with display: contents has no edges, and a
        # focus ring inside it must not read as cut off by them
        self._right_col.layout.overflow = "visible"
        top = ipw.HBox([image_col, self._right_col], layout=wrapping_row())
        # the space between columns and between wrapped lines: see .cnnw-columns in widgets.css
        for box in (top, self._right_col, self._channel_col):
            box.layout.align_items = "flex-start"
            box.add_class("cnnw-columns")
        # a column's own width decides whether it fits on a line, not what it holds (the grid at
        # its full width would send the column under the input image where it could shrink beside it)
        self._right_col.layout.min_width = self._channel_col.layout.min_width = "0"
        self._arrange_columns()
        header = row([self.title, self.picker, self.device_select, self.scores_toggle])
        # the status line right under the image picker and device menu: an upload's or a model's
        # error shows where the user acted, not below the grid
        return [header, self.status, self.occluder_controls, top]

    def _arrange_columns(self, change=None) -> None:
        """The columns for the method shown (see :meth:`_layout_children`) and the channel view's
        width: the channel column is at least as wide as the channel view, where the output allows."""
        width = self.panel.layout.width
        basis = width if width and width.endswith("px") else PANEL_COLUMN_BASIS
        self._channel_col.layout.flex = f"1 1 {basis}"
        self._right_col.layout.flex = f"1 1 {basis}"
        self._right_col.layout.display = "contents" if self.method == METHODS[0] else None

    def _wire(self) -> None:
        # before the links: a layer set from Python that the filter box hides goes into the menu
        self.observe(self._layer_into_menu, names="layer")
        links = [
            ((self, "layer"), (self.layer_select, "value")),
            ((self, "channel"), (self.channel_slider, "value")),
            ((self, "box"), (self.canvas, "box")),
            ((self, "dragging"), (self.canvas, "dragging")),
            ((self, "device"), (self.device_select, "value")),
            ((self, "fill"), (self.occluder_controls, "fill")),
            ((self, "norm"), (self.display_controls, "norm")),
            ((self, "cmap"), (self.display_controls, "cmap")),
            ((self, "sort"), (self.display_controls, "sort")),
            ((self, "overlay"), (self.display_controls, "overlay")),
            ((self, "show_scores"), (self.scores_toggle, "value")),
            ((self, "target"), (self.scores_view, "selected")),
            ((self, "method"), (self.method_view, "method")),
            ((self, "method_stride"), (self.method_view, "stride")),
            ((self, "method_signed"), (self.method_view, "signed")),
        ]
        self.image = self.picker.value
        self._links = [_ViewLink(a, b, self._show_error) for a, b in links]
        # values a widget's own checks refuse from the browser (a layer the menu no longer offers,
        # picked while a changed model rebuilt it) go to the status line too
        part: RefusesBrowserValues
        # (and so do a value of the wrong type, out of a slider's range, or for a trait the browser
        # does not set: the kernel's value is shown again)
        for part in (self.canvas, self.layer_select, self.grid, self.scores_view, self.picker.upload,
                     self.picker.dropdown, self.device_select, self.display_controls.norm_buttons,
                     self.display_controls.cmap_dropdown, self.display_controls.sort_box,
                     self.display_controls.overlay_box, self.occluder_controls.enabled_box,
                     self.occluder_controls.fill_dropdown, self.occluder_controls.size_slider,
                     self.method_view.menu, self.method_view.stride_menu, self.method_view.signed_box,
                     self.method_view.bar,
                     self.layer_filter, self.channel_slider, self.page_select, self.scores_toggle):
            part.on_refused = self._show_error
        self.grid.selected = self.channel
        self.observe(self._channel_to_grid, names="channel")
        self.grid.observe(self._on_grid_click, names="selected")
        self.observe(self._image_named, names="image")
        # before _changed: the frame a new selection submits no longer carries the note
        self.observe(self._forget_selection_note, names=["layer", "channel"])
        self.observe(self._forget_target_note, names="target")
        # before _changed: a new layer, channel or order shows the page that holds the channel
        self.observe(self._page_follows_channel, names=["layer", "channel", "sort"])
        self.page_select.observe(self._on_page_picked, names="value")
        self.layer_filter.observe(self._on_layer_filter, names="value")
        self.observe(
            self._changed,
            names=["layer", "channel", "box", "dragging", "device", "fill", "norm", "cmap", "sort", "overlay",
                   "show_scores", "target", "page"],
        )
        self.observe(self._on_box, names="box")
        self.observe(self._on_dragging, names="dragging")
        self.observe(self._on_fill, names="fill")
        self.observe(self._forget_fill_note, names="fill")
        self.observe(self._scores_toggled, names="show_scores")
        self.occluder_controls.observe(self._occluder_switched, names="enabled")
        self.occluder_controls.observe(self._on_size, names="size")
        self.observe(self._window_used, names="method")
        self.observe(self._arrange_columns, names="method")
        self.observe(self._method_inputs_changed,
                     names=["method", "method_stride", "method_signed", "layer", "channel", "target", "fill",
                            "device", "box", "dragging"])
        self.occluder_controls.observe(self._method_inputs_changed, names="size")
        self.picker.observe(self._on_pick, names="value")
        self.picker.observe(self._on_reupload, names="reuploads")
        self.picker.on_upload_problem(self._on_upload_problem)
        self._scores_toggled()
        self._on_fill({"new": self.fill})
        self._on_box({"new": self.box})  # the constructor's box sets the occluder switch and size
        self._window_used()

    def _window_used(self, change=None) -> None:
        # an occlusion scan takes its window's size and fill from the occluder's controls: they
        # stay active with the occluder off, and are greyed out only when nothing uses them
        self.occluder_controls.window_used = self.method == "occlusion"

    def _changed(self, change) -> None:
        if change["name"] == "layer":
            self._fit_channel_to_layer()  # before submitting: never ask for a channel the layer lacks
            self.grid.hover = -1  # the pointer was over a tile of the old layer's grid
        self._submit()

    def _channel_to_grid(self, change) -> None:
        self.grid.selected = change["new"]

    def _menu_items(self, current: str) -> list[tuple[str, str, str]]:
        """The layer menu's entries that match the filter box (each word, in any case, in the
        entry: the layer's name, type or shape), and ``current`` whatever the filter."""
        words = self.layer_filter.value.lower().split() if hasattr(self, "layer_filter") else []
        items = layer_items(self._layers)
        if not words:
            return items
        return [item for item in items
                if item[2] == current or all(word in item[1].lower() for word in words)]

    def _show_filter_box(self) -> None:
        shown = len(layer_items(self._layers)) > FILTER_FROM_LAYERS
        self.layer_filter.layout.display = "" if shown else "none"
        # with the filter box, the menu keeps one width whatever the filter leaves in it: the
        # controls after it (the channel slider) stay where they are while the user types
        (self.layer_select.add_class if shown else self.layer_select.remove_class)("cnnw-select-fixed")

    def _layer_into_menu(self, change) -> None:
        """With words in the filter box, the menu holds the new layer and the layers that match
        (the one shown before leaves it, unless it matches)."""
        if self.layer_filter.value.strip():
            self.layer_select.set_items(self._menu_items(change["new"]), value=change["new"])

    def _on_layer_filter(self, change) -> None:
        try:
            items = self._menu_items(self.layer)
            self.layer_select.set_items(items, value=self.layer)
            if change["new"].strip() and len(items) <= 1:
                self._status_info(f"no other layer matches {change['new'].strip()!r}")
        except Exception as exc:  # noqa: BLE001 - shown in the status line
            self._show_error("layer filter", exc)

    def _page_follows_channel(self, change) -> None:
        """A page picked by hand holds until another layer, channel or order is chosen; then the
        grid shows the page that holds the selected channel (in the frame this change submits)."""
        if self.page is not None:
            suspended, self._suspend = self._suspend, True
            try:
                self.page = None
            finally:
                self._suspend = suspended

    def _on_page_picked(self, change) -> None:
        if self._page_options_for is None or change["new"] is None:
            return  # the menu being filled in for the frame shown, not a pick
        try:
            self.page = change["new"]
        except Exception as exc:  # noqa: BLE001 - shown in the status line
            self._show_error("page", exc)
            # the menu shows the page shown again (a pick from a menu of another layer's pages)
            shown, self._page_options_for = self._page_options_for, None  # not a pick
            try:
                self.page_select.value = change["old"]
            except t.TraitError:  # pragma: no cover - a value the menu held a moment ago
                pass
            finally:
                self._page_options_for = shown

    def _show_page_menu(self, state: ExplorerState, frame: Frame) -> None:
        """The page menu for ``frame``: hidden for a layer shown whole, else its pages (in the
        grid's order: channel numbers, or ranks when sorted by activation) on the page shown. On
        the widgets' thread, where the user's picks arrive too."""
        if self._closed:
            return
        if frame.pages <= 1:
            self.page_select.layout.display = "none"
            return
        channels = frame.layout.channels
        key = (frame.pages, channels, state.sort)
        shown, self._page_options_for = self._page_options_for, None  # the menu's own changes below are not picks
        if key != shown:
            last = lambda p: min(channels, (p + 1) * GRID_PAGE)  # noqa: E731
            if state.sort:
                options = [(f"strongest {p * GRID_PAGE + 1}–{last(p)} of {channels}", p) for p in range(frame.pages)]
            else:
                options = [(f"channels {p * GRID_PAGE}–{last(p) - 1} of {channels}", p) for p in range(frame.pages)]
            self.page_select.options = options
        self.page_select.value = frame.page
        self._page_options_for = key
        self.page_select.layout.display = ""

    def _on_grid_click(self, change) -> None:
        selected = change["new"]
        if selected == self.channel:
            return
        try:
            count = self._channels(self.layer)
            if not 0 <= selected < count:
                # a tile of the previous layer's grid, clicked before the new grid arrived
                raise ValueError(
                    f"tile {selected} is not a channel of layer {self.layer!r} (channels 0..{count - 1}); "
                    "click a tile of the grid shown now"
                )
            self.channel = selected
        except Exception as exc:  # noqa: BLE001 - shown in the status line; the grid keeps the channel
            self._show_error("grid click", exc)
            self.grid.selected = self.channel

    def _on_box(self, change) -> None:
        box = change["new"]
        self.occluder_controls.enabled = box is not None
        self.scores_view.title = _SCORES_TITLES[box is not None]
        if box is not None:
            self._last_box = box
            if not self.dragging:
                self._size_from_box(box)

    def _on_dragging(self, change) -> None:
        if not change["new"] and self.box is not None:
            self._size_from_box(self.box)  # the box the user dragged or resized at its corner

    def _size_from_box(self, box: tuple[int, int, int, int]) -> None:
        """Show the box's side in the size control (the larger side of a box that is not square)."""
        self._sizing = True
        try:
            self.occluder_controls.size = max(box[2], box[3])
        finally:
            self._sizing = False

    def _occluder_switched(self, change) -> None:
        self.input_caption.value = _INPUT_CAPTIONS[bool(change["new"])]
        if change["new"] and self.box is None:
            h, w = self._images[self._image_id].size
            size = min(self.occluder_controls.size, h, w)
            # the last box may belong to a larger image shown since: moved into this one
            last = None if self._last_box is None else clamp_box(self._last_box, w, h)
            self.box = last or ((w - size) // 2, (h - size) // 2, size, size)
        elif not change["new"] and self.box is not None:
            self.box = None

    def _on_size(self, change) -> None:
        size = int(change["new"])
        self.canvas.default_size = size
        box = self.box
        if box is None or max(box[2], box[3]) == size or self.dragging or self._sizing:
            return
        # the slider gives the longer side: a box drawn non-square keeps its shape, so that one
        # step of the slider is one small change of the box
        scale = size / max(box[2], box[3])
        w, h = max(1, round(box[2] * scale)), max(1, round(box[3] * scale))
        cx, cy = box[0] + box[2] / 2, box[1] + box[3] / 2
        self.box = (round(cx - w / 2), round(cy - h / 2), w, h)

    def _on_fill(self, change) -> None:
        self._show_fill(self._images[self._image_id], change["new"])

    def _show_fill(self, image: ImageInput, fill: str) -> None:
        """Preview ``fill`` in the box as the model sees it: a colour, or the fill's own picture."""
        with self.canvas.hold_sync():
            self.canvas.fill_color = image.fill_color(fill)
            self.canvas.fill_image = image.fill_image(fill)

    def _forget_fill_note(self, change) -> None:
        self._set_note("fill", None)  # the user chose a fill: the fallback is no longer in use

    def _forget_selection_note(self, change) -> None:
        # a new layer or channel: what replaced the old one, or the marks dropped, are moot
        self._set_note("selection", None)
        self._set_note("marks", None)

    def _forget_target_note(self, change) -> None:
        self._set_note("target", None)  # a target picked: the class that is gone is moot

    def _scores_toggled(self, change=None) -> None:
        self.scores_view.layout.display = None if self.show_scores else "none"
        self._scores_box.layout.display = None if self.show_scores else "none"

    # ------------------------------------------------------------------ state -> controller
    def state(self) -> ExplorerState:
        """The current state snapshot (what the controller is asked to show)."""
        return ExplorerState(
            image_id=self._image_id,
            box=self.box,
            fill=self.fill,
            layer=self.layer,
            channel=self.channel,
            device=self.device,
            norm=self.norm,
            cmap=self.cmap,
            sort=self.sort,
            overlay=self.overlay,
            show_scores=self.show_scores,
            target=self.target,
            dragging=self.dragging,
            page=self.page,
        )

    def _submit(self) -> None:
        if self._suspend or self._closed:
            return
        state = self.state()
        self._grid_busy(state)
        self.controller.submit(state)

    def _grid_busy(self, state: ExplorerState) -> None:
        """Fade the grid while it shows another layer, image or device than ``state`` asks for (a
        new forward is on its way; the style sheet fades it only when that takes a moment), with a
        slow model also another occluder position or fill (see :meth:`_waits_for`), and show it
        plainly again once the grid is ``state``'s."""
        with self._frame_lock:
            shown = self._frame_state
        waiting = shown is not None and self._waits_for(shown, state)
        if waiting:
            self.grid.add_class("cnnw-busy")
        else:
            self.grid.remove_class("cnnw-busy")

    def _waits_for(self, shown: ExplorerState, state: ExplorerState) -> bool:
        """Whether the grid drawn for ``shown`` is to fade while ``state``'s frame is computed: for
        another layer, image or device; with a slow model (see :data:`SLOW_FRAME_SECONDS`) also for
        another occluder position or fill."""
        part = _occluded_part if self._slow_frames else _computed_part
        return part(shown) != part(state)

    @property
    def grid_busy(self) -> bool:
        """Whether the grid is faded: it still shows another layer, image or device than the
        one asked for, whose frame is being computed; with a model whose frames take
        :data:`SLOW_FRAME_SECONDS` or more, also another occluder position or fill."""
        return "cnnw-busy" in self.grid._dom_classes

    # ------------------------------------------------------------------ controller -> views
    def _show_frame(self, state: ExplorerState, frame: Frame) -> None:
        if self._closed:
            return  # drawn while close() ran: nothing is shown any more, and its state is refused
        with self._frame_lock:
            self._frame, self._frame_state = frame, state
        self._show_out_of_date(False)
        self._slow_frames = frame.computed.seconds + frame.render_seconds >= SLOW_FRAME_SECONDS
        if self.grid_busy and not self._waits_for(state, self.state()):
            self.grid.remove_class("cnnw-busy")
        if self._model_changed_unseen():
            self._on_main_thread(self._follow_model_change_shown)
        self.grid.show(frame.grid_bytes, frame.image_format, frame.layout, frame.stats,
                       display_width=frame.grid_display_width)
        self.panel.value = frame.panel_bytes
        width = f"{frame.panel_display_width}px"
        if self.panel.layout.width != width:
            # the height follows the image's own aspect ratio, also where a narrow output
            # shrinks the width (max-width: 100%)
            self.panel.layout.width = width
            self._arrange_columns()
        if frame.rows is not None:
            self.scores_view.rows = frame.rows
        self._on_main_thread(lambda: self._show_page_menu(state, frame))  # with the user's picks, in turn
        self._show_grid_caption(state, frame)
        what = ("over the input in gray" + (", occluded as the model sees it" if state.box is not None else "")
                if state.overlay else "map")
        change = ("what the occluder removed: <span class='cnnw-red'>red</span> where the "
                  "activation went down, <span class='cnnw-blue'>blue</span> where it went up"
                  if state.box is not None
                  else "no change: the occluder is off")
        scale = _colour_scale(state.cmap, *frame.value_range)
        self.panel_caption.value = f"<b>channel {frame.channel}</b> {what} &nbsp;{scale} &nbsp;|&nbsp; {change}"
        problem = self._scores_problem(state, frame)
        self._set_note("scores", self.controller.scores_note if state.show_scores else None)
        self._set_note("nonfinite", _nonfinite_note(state.layer, frame, self.probe))
        self._set_note("slow", _slow_note(frame.computed.seconds, self.probe))
        if not state.dragging:  # (two walks over the modules: once per drag, at its end)
            self._note_user_model()  # the user may have called model.eval() or added a hook since the last frame
        if problem is not None:
            self.status.error(f"{problem}; the feature maps are shown without class scores")
        elif self._method_error is not None:
            # the method map still failed (its panel says so too): the line keeps saying why until
            # a map is shown or the method is switched off, whatever frames come in between
            if self.status.message != self._method_error:
                self.status.error(self._method_error)
        elif not state.dragging or self.status.is_error:
            # while dragging the line keeps still (no message per frame), but a good frame ends
            # the error of a failed one at once, not when the occluder is released
            ms = 1000 * frame.computed.seconds
            timing = (f"{self.controller.probe.device} \u00b7 last forward {ms:.1f} ms \u00b7 render "
                      f"{1000 * frame.render_seconds:.1f} ms")
            self._status_info(timing)

    def _scores_problem(self, state: ExplorerState, frame: Frame) -> str | None:
        """Why the frame shows no class scores though they are asked for (None: it shows them, or
        they are off)."""
        return self.controller.scores_problem if state.show_scores and frame.rows is None else None

    def _status_after_method_error(self) -> None:
        """The status line once a method's error is over: the frame's own problem (no class
        scores) when it has one, else the notes."""
        with self._frame_lock:
            frame, state = self._frame, self._frame_state
        problem = None if frame is None or state is None else self._scores_problem(state, frame)
        if problem is not None:
            self.status.error(f"{problem}; the feature maps are shown without class scores")
        else:
            self._status_info()

    def _show_grid_caption(self, state: ExplorerState, frame: Frame) -> None:
        info = self._layers.get(state.layer)
        if info is None:
            return  # the model changed and the layer is gone: its replacement's frame is on the way
        runs = f" &nbsp; output of its last call (it runs {info.calls} times)" if info.calls > 1 else ""
        shape = info.map_shape
        one_unit = shape is not None and shape[1] * shape[2] == 1
        if state.norm == "layer":
            key = f"{_colour_scale(state.cmap, *frame.value_range)} for every tile"
        elif one_unit:
            # one value per tile: its own range would be empty, so every scale draws them on the layer's
            key = (f"{_colour_scale(state.cmap, *frame.value_range)} for every tile (1\u00d71 maps: one value per "
                   "channel, all on the layer's range)")
        else:
            key = f"{_colour_key(state.cmap)} {_GRID_KEYS.get(state.norm, state.norm)}"
        caption = (f"<b>{_layer_html(state.layer)}</b> &nbsp; {_map_text(info)}{runs} &nbsp; {key} &nbsp; click a "
                   "tile to select its channel")
        if frame.pages > 1:
            shown, total = frame.layout.count, frame.layout.channels
            which = (f"the {_ordinal_range(frame.page, shown)} strongest" if state.sort
                     else f"channels {frame.layout.order[0]}–{frame.layout.order[-1]}")
            caption += (f" &nbsp; <b>{which} of {total}</b> (page {frame.page + 1} of {frame.pages}: the 'page' menu "
                        "shows the others)")
        if frame.dead and frame.computed.baseline.signed:
            # the tiles still show patterns, all at or below zero: what a ReLU after this layer zeroes
            caption += (f" &nbsp; <span class='cnnw-red'>{frame.dead} with no positive value on this image "
                        "(red frame, \\: zero after a ReLU)</span>")
        elif frame.dead:
            caption += f" &nbsp; <span class='cnnw-red'>{frame.dead} dead on this image (red frame, \\)</span>"
        if frame.marked is not None:
            caption += (f" &nbsp; <span class='cnnw-orange'>{frame.dead_in_data} dead over the data set "
                        "(orange frame, /; crossed when dead on this image too)</span>")
        if state.sort and frame.pages == 1:
            caption += " &nbsp; <b>sorted</b>: strongest mean activation first"
        if self._out_of_date:
            caption = f"{self.OUT_OF_DATE_NOTE}<br>{caption}"
        self.grid_caption.value = caption

    def _note_user_model(self) -> None:
        """Note the user's model as it is now: its own forward hooks, which the copies do not run, and
        batch norm or dropout left in training mode."""
        try:
            model = self.probe.user_model
            self._set_note("hooks", _user_hooks_note(self.probe.user_hooks))
            self._set_note("training", _training_note(model))
        except RuntimeError:  # closed meanwhile, or the user's training thread changed a dict read here
            pass

    def _set_note(self, about: str, note: str | None) -> None:
        """Keep ``note`` in the status line with every frame (None: drop the note about ``about``)."""
        if note is None:
            self._notes.pop(about, None)
        else:
            self._notes[about] = note

    def _status_info(self, text: str = "") -> None:
        """Show ``text`` in the status line after the notes in force (a reshaped image, a fill fallback)."""
        notes = [f"note: {note}" for note in tuple(self._notes.values())]  # one step: the main thread may change them
        self.status.info(" \u00b7 ".join([*notes, text] if text else notes))

    def _model_changed_unseen(self) -> bool:
        return self.controller.stats.model_changes != self._model_changes_seen

    def _on_main_thread(self, call: Callable[[], None]) -> None:
        """Run ``call`` on the thread that owns the widgets: now when this is that thread (or no
        event loop runs there any more), else soon on its event loop, or in :meth:`wait_idle` when
        the main thread is blocked there first."""
        loop = self._main_loop
        if threading.get_ident() == self._main_thread or loop is None or not loop.is_running():
            call()
            return
        with self._main_calls_lock:
            self._main_calls.append(call)
        try:
            loop.call_soon_threadsafe(self._run_main_calls)
        except RuntimeError:  # the loop closed meanwhile: nothing else runs on the main thread now
            self._run_main_calls()

    def _run_main_calls(self) -> bool:
        """Run what the worker handed over to the main thread; returns whether there was any."""
        with self._main_calls_lock:
            calls, self._main_calls = self._main_calls, []
        for call in calls:
            try:
                call()
            except Exception as exc:  # noqa: BLE001 - a callback of the event loop: shown, not lost
                self.status.exception("update", exc)
        return bool(calls)

    def _follow_model_change_shown(self) -> None:
        """After a frame drawn with a changed model: take its layers, and caption the frame on
        screen with the shape the layer has now."""
        if self._follow_model_change():
            with self._frame_lock:
                frame, state = self._frame, self._frame_state
            if frame is not None and state is not None and not self._closed:
                self._show_grid_caption(state, frame)

    def _retry_after_model_change(self) -> None:
        if self._follow_model_change(report=False):
            self._submit()

    def _follow_model_change(self, *, report: bool = True) -> bool:
        """After the user changed the model (seen by the controller): the method map is stale,
        and replaced modules may have changed the layers. Returns whether it changed."""
        changes = self.controller.stats.model_changes
        if changes == self._model_changes_seen or self._closed:
            return False
        self._model_changes_seen = changes
        self._class_count_version = None
        try:
            self._refresh_layers()  # modules may have been replaced: new shapes, channel counts
        except Exception as exc:  # noqa: BLE001 - shown in the status line
            if report:
                self.status.exception("layers", exc)
        self._submit_method()
        return True

    def _show_error(self, where: str, exc: BaseException) -> None:
        if self._closed:
            return
        if isinstance(exc, FillError):
            where = "occluder fill"  # the model ran fine; the fill asked for cannot be made
        self.status.exception(where, exc)
        self.grid.remove_class("cnnw-busy")  # no frame is coming: the grid is what there is
        if where in ("model", "render", "occluder fill"):
            self._show_out_of_date(True)
        # a model changed since the last frame may fail for the layer or channel shown (gone,
        # fewer channels): take its layers and retry with what it offers now; a model that
        # does not run at all keeps its own error on screen
        if where in ("model", "render") and self._model_changed_unseen():
            self._on_main_thread(self._retry_after_model_change)

    #: What the captions say while the pictures are those of an earlier state (see :attr:`out_of_date`).
    OUT_OF_DATE_NOTE = ("<b class='cnnw-error'>not updated</b>: the last update failed (see the status line); "
                        "this is the last picture that could be drawn")

    def _show_out_of_date(self, out_of_date: bool) -> None:
        """Gray out the grid, the channel view and the scores (and say so in the grid's caption)
        while they show an earlier state than the one asked for, after a failed update."""
        if out_of_date == self._out_of_date:
            return
        self._out_of_date = out_of_date
        for view in (self.grid, self.panel, self.scores_view):
            (view.add_class if out_of_date else view.remove_class)("cnnw-stale")
        caption = self.grid_caption.value
        if out_of_date and self.OUT_OF_DATE_NOTE not in caption:
            self.grid_caption.value = f"{self.OUT_OF_DATE_NOTE}<br>{caption}"

    @property
    def out_of_date(self) -> bool:
        """Whether the grid, the channel view and the scores show an earlier state than the one
        asked for, because its update failed (the status line says why): they are grayed out
        until an update succeeds. (While an update is merely on its way, see :attr:`grid_busy`.)"""
        return self._out_of_date

    # ------------------------------------------------------------------ dead channels over a data set
    def mark_dead(self, report: Mapping[str, Any] | Any | None) -> None:
        """Mark in the grid the channels found dead over a data set.

        Args:
            report: what :func:`cnnwidgets.methods.dead_channels` returns (``{layer: DeadChannels}``),
                one ``DeadChannels``, a mapping ``{layer: bool array (C,) or channel indices}``, or
                None to remove every mark. Layers not given keep their marks.

        Raises:
            KeyError: for a layer the model does not have.
            ValueError: for marks that do not fit the layer's channels, or indices that are not ints.
            TypeError: for a report that is none of the forms above (not a mapping, a
                ``DeadChannels`` or None).
        """
        self._check_open()
        if report is None:
            self._data_dead.clear()
        else:
            if hasattr(report, "is_dead") and hasattr(report, "layer"):
                report = {report.layer: report}
            if not isinstance(report, Mapping):
                raise TypeError(
                    "mark_dead takes the result of cnnwidgets.methods.dead_channels, one DeadChannels, "
                    f"a mapping layer -> channel marks, or None; got {type(report).__name__}"
                )
            found = {}
            for layer, marks in report.items():
                if layer not in self._layers:
                    raise KeyError(f"mark_dead: {unknown_layer_error(str(layer), list(self._layers)).args[0]}")
                count = self._channels(layer)
                values = np.asarray(getattr(marks, "is_dead", marks))
                if values.dtype != bool:
                    if values.size and not np.issubdtype(values.dtype, np.integer):
                        raise ValueError(
                            f"mark_dead: marks for {layer!r} must be channel indices (ints) or a bool array of "
                            f"shape ({count},); got {values.dtype} values {values.ravel()[:8].tolist()}"
                        )
                    index = values.astype(np.int64).ravel()
                    if index.size and (index.min() < 0 or index.max() >= count):
                        raise ValueError(f"mark_dead: channel indices for {layer!r} must lie in 0..{count - 1}")
                    values = np.zeros(count, dtype=bool)
                    values[index] = True
                if values.shape != (count,):
                    raise ValueError(f"mark_dead: {layer!r} has {count} channels, got marks of shape {values.shape}")
                found[layer] = values
            self._data_dead.update(found)
        self._set_note("marks", None)  # marks given anew: those dropped earlier are moot
        self.controller.redraw()
        self._submit()

    def scan_dead(self, inputs: Any, layers: str | Sequence[str] | None = None, *, threshold: float = 0.0,
                  batch_size: int = 64, progress: bool = True) -> dict[str, Any]:
        """Find the channels that never activate over ``inputs`` and mark them in the grid.

        Runs :func:`cnnwidgets.methods.dead_channels` on the explorer's model and calls
        :meth:`mark_dead` with the result, which it returns.

        Args:
            inputs: a preprocessed batch (N, C, H, W), or an iterable / DataLoader of them (or of
                ``(batch, labels)`` pairs), at the explorer's input size.
            layers: layer name(s); default: the layer shown.
            threshold, batch_size, progress: as for :func:`~cnnwidgets.methods.dead_channels`.

        Raises:
            RuntimeError: when the explorer is closed.
            Everything :func:`~cnnwidgets.methods.dead_channels` raises for bad inputs or layers.
        """
        from cnnwidgets.methods.dead import dead_channels

        self._check_open()
        report = dead_channels(self.probe, inputs, layers if layers is not None else self.layer,
                               threshold=threshold, batch_size=batch_size, progress=progress)
        self.mark_dead(report)
        return report

    @property
    def dead_marks(self) -> dict[str, np.ndarray]:
        """The data-set dead-channel marks per layer (bool (C,)), as given to :meth:`mark_dead`."""
        return {layer: marks.copy() for layer, marks in self._data_dead.items()}

    # ------------------------------------------------------------------ the method panel
    def method_request(self) -> MethodRequest:
        """What the method panel is asked to show for the current selections.

        The occlusion window is the occluder box's (height, width); without a box, a square of
        the size control's side.
        """
        box = self.box
        side = int(self.occluder_controls.size)
        return MethodRequest(
            method=self.method,
            image_id=self._image_id,
            layer=self.layer,
            channel=self.channel,
            target=self.target,
            window=(int(box[3]), int(box[2])) if box is not None else (side, side),
            stride=int(self.method_stride),
            fill=self.fill,
            device=self.device,
            signed=bool(self.method_signed),
        )

    def _method_inputs_changed(self, change=None) -> None:
        self._submit_method()

    def _submit_method(self) -> None:
        if self._suspend or self._closed:
            return
        try:
            request = self.method_request()
            if self._methods.is_current(request):
                # that map is on screen or being computed: the caption stays, unless a drag marked the
                # map as not the one asked for and was released where it started (a resize taken back)
                shown = self._methods.result
                if (self.method_view.stale and not self.dragging and shown is not None
                        and shown.request.key() == request.key()):
                    self._show_method(shown)
                return
            if self.dragging and self.method != "none":
                # while the box is dragged or resized, its final size is not known yet: the map
                # waits for the release, and the one on screen is marked as not the one asked for
                self.method_view.computing(f"<i>{html.escape(self.method)}: computed when the occluder is "
                                           "released (it is being dragged) \u2026</i>")
                return
            if self.method == "none":
                self.method_view.clear()
                self._end_method_error()
            else:
                self.method_view.computing(f"<i>computing {html.escape(self.method)} \u2026</i>")
            self._method_started = time.perf_counter()
            self._methods.submit(request)
        except Exception as exc:  # noqa: BLE001 - shown in the status line
            self._show_error("method", exc)

    def _method_progress(self, done: int, total: int) -> None:
        # the time left at the pace so far (the first positions also paid for the map's set-up,
        # so the estimate starts high and settles)
        elapsed = time.perf_counter() - self._method_started
        left = elapsed * (total - done) / done if 0 < done < total else None
        self.method_view.progress_to(done, total, left)

    def _class_name(self, index: int) -> str:
        return self._classes[index] if 0 <= index < len(self._classes) else f"class {index}"

    def _method_failed(self, where: str, exc: BaseException) -> None:
        self._method_errors += 1
        if self._closed:
            return
        # no picture of an earlier method may stay on screen under this one's name
        self.method_view.clear()
        why = str(exc) or type(exc).__name__  # a bare KeyboardInterrupt has no message
        self.method_view.caption.value = f"<b>{html.escape(where)}</b> failed: {html.escape(why)}"
        self._show_error(where, exc)
        self._method_error = self.status.message

    def _end_method_error(self) -> None:
        """The last method's error is over (a map was shown, or no method is asked for): the status
        line no longer shows it, and :attr:`method_error` is None."""
        if self._method_error is not None and self.status.message == self._method_error:
            self._status_after_method_error()
        self._method_error = None

    def _show_method(self, result: MethodResult) -> None:
        if self._closed or result.request.key() != self.method_request().key():
            return  # asked for before the last change of method or inputs: that map is not wanted now
        self._end_method_error()
        request = result.request
        name = html.escape(self._class_name(result.target))
        if result.occlusion is not None:
            occ = result.occlusion
            box = f"{occ.window[1]}\u00d7{occ.window[0]} {FILL_LABELS.get(request.fill, request.fill)} box"
            key = _occlusion_key(occ.drop, occ.done == occ.total)
            # the same length computing and done (done/total), so that the map under it stays put
            caption = (f"<b>occlusion</b>: change of P({name}) (unoccluded {_percent(occ.unoccluded)}) when a "
                       f"{box} covers each place (stride {occ.stride[0]}); {key}; the image in gray "
                       f"&middot; {occ.done}/{occ.total} positions")
        else:
            if request.method == "deconvnet":
                caption = (f"<b>deconvnet</b>: channel {request.channel} of {_layer_html(request.layer)} projected "
                           "to pixels")
            elif request.method == "grad-cam":
                caption = f"<b>Grad-CAM</b> of {name} at {self._grad_cam_layer(request.layer)}"
            else:
                caption = f"<b>{html.escape(request.method)}</b> of {name}"
            if request.signed and result.values is not None:
                caption += f"; {_SIGNED_KEYS[result.values.shape[0] == 3]}"
            else:
                caption += f"; {_heat_key()}"
        if result.note:
            caption += f"<br><span class='cnnw-note'>{html.escape(result.note)}</span>"
        self.method_view.show(encode_jpeg(result.image, 90), caption)

    def _grad_cam_layer(self, layer: str) -> str:
        """The layer Grad-CAM was computed at, for its caption: ``layer``, or the feature map the
        method fell back to (as :func:`~cnnwidgets.methods.cam.nearest_conv_layer` chooses)."""
        try:
            chosen = nearest_conv_layer(self.controller.probe, layer)
        except Exception:  # noqa: BLE001 - only a caption; the map itself was computed
            return f"{_layer_html(layer)} (or the last feature map before it)"
        text = (_layer_html(layer) if chosen == layer
                else f"{_layer_html(chosen)} (the last feature map before {html.escape(layer)})")
        # the first layer's maps: those of the first leaf module and of the ones after it that see no
        # more of the image (its batch norm and ReLU)
        leaves = [i for i in self._layers.values() if i.is_leaf and i.shows_maps]
        first = min(leaves, key=lambda i: i.order) if leaves else None
        info = self._layers.get(chosen)
        if (first is not None and info is not None and info.is_leaf and first.receptive_field is not None
                and info.receptive_field == first.receptive_field and info.jump == first.jump):
            # a vision transformer has no other map: its tokens are not (C, H, W)
            text += (", the model's first layer (a vision transformer's patch embedding): Grad-CAM there weighs "
                     "what each part of the image looks like, not the parts deeper layers find")
        return text

    @property
    def method_result(self) -> MethodResult | None:
        """The method map on screen (``heat``, ``image``, ``occlusion``, ``complete`` ...), or None
        (no method, or it failed: see :attr:`method_error`).

        Raises:
            RuntimeError: when the explorer is closed.
        """
        self._check_open()
        return self._methods.result

    @property
    def method_error(self) -> str | None:
        """Why the last method map failed, as the status line says it (``"method 'grad-cam':
        OutputTypeError: ..."``); None when it succeeded or no method is asked for (read-only)."""
        return self._method_error

    def catch_up(self) -> bool:
        """Draw the frame and the method map again now if the user's weights changed since they were
        drawn (an optimizer step, ``load_state_dict``, a replaced layer), rather than at the user's
        next move. In a notebook this runs by itself after every cell (see
        :data:`cnnwidgets.app.cells.FOLLOW_AFTER_CELL`), so training the model in another cell updates
        an open explorer when that cell ends; from a script, call it after changing the model.
        Returns whether the model had changed (False on a closed explorer).

        Like every update, it sees what the probe sees (see :meth:`Probe.user_model_changed`):
        not writes through ``param.data`` or a module attribute set in place.
        """
        if self._closed:
            return False
        try:
            changed = self.probe.user_model_changed()
        except RuntimeError:  # closed by another thread meanwhile
            return False
        if changed:
            self.controller.redraw()  # the same state, drawn again: with the new weights
            self._submit()
        return changed

    # ------------------------------------------------------------------ what the user sees, from Python
    def wait_idle(self, timeout: float | None = 30.0) -> bool:
        """Block until the newest state is computed and shown; returns False on timeout, and at once
        while :attr:`dragging` holds back a method map that is not on screen yet (it is computed
        when the occluder is released: ``dragging = False``).

        Args:
            timeout: the longest wait in seconds (0 or less: no wait); None waits as long as it takes.

        Raises:
            TypeError: for a timeout that is not a number or None. ValueError: for NaN.
        """
        if timeout is not None:
            if isinstance(timeout, (bool, np.bool_)) or not isinstance(timeout, numbers.Real):
                raise TypeError(f"timeout must be a number of seconds, or None to wait as long as it takes; "
                                f"got {timeout!r}")
            if math.isnan(timeout):
                raise ValueError("timeout must be a number of seconds, or None to wait as long as it takes; got NaN")
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not (self.controller.wait_idle(remaining) and self._methods.wait_idle(remaining)):
                return False
            # the worker may have handed the main thread work (following a changed model) that
            # the event loop cannot run while this call blocks it: run it here, then wait again
            if threading.get_ident() != self._main_thread or not self._run_main_calls():
                return not self._method_held()

    def _method_held(self) -> bool:
        """Whether the method map asked for waits for the occluder's release (see :meth:`_submit_method`)."""
        return (not self._closed and self.dragging and self.method != "none"
                and not self._methods.is_current(self.method_request()))

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this explorer is closed; open a new one with cnnwidgets.explore(...)")

    def _current(self) -> tuple[Frame, ExplorerState]:
        self._check_open()
        with self._frame_lock:
            if self._frame is None or self._frame_state is None:
                if self.status.is_error:
                    raise RuntimeError(f"nothing has been shown: the update failed ({self.status.message})")
                raise RuntimeError("nothing has been shown yet; call explorer.wait_idle() first")
            return self._frame, self._frame_state

    @property
    def activations(self) -> np.ndarray:
        """Activations shown in the grid (occluded image if a box is set), float32 (C, H, W)."""
        return self._current()[0].computed.acts

    @property
    def baseline_activations(self) -> np.ndarray:
        """Activations of the unoccluded image at the shown layer, float32 (C, H, W)."""
        return self._current()[0].computed.baseline.acts

    @property
    def scores(self) -> dict[str, Any] | None:
        """Class scores shown: ``probs`` and ``baseline`` (unoccluded) arrays, the ``rows`` listed and the
        ``classes`` names; None when the model's output is not class scores."""
        frame, _ = self._current()
        computed = frame.computed
        if computed.probs is None:
            return None
        return {"probs": computed.probs, "baseline": computed.baseline.probs, "rows": frame.rows,
                "classes": list(self._classes)}

    @property
    def grid_image(self) -> np.ndarray:
        """The feature grid exactly as rendered (before encoding), uint8 (H, W, 3)."""
        return self._current()[0].grid

    @property
    def grid_channels(self) -> np.ndarray:
        """The channels the grid shows, in tile order (row by row): all of the layer's, or the
        page shown of a layer wider than :data:`~cnnwidgets.app.frames.GRID_PAGE`; int64 (n,)."""
        return np.asarray(self._current()[0].layout.order, dtype=np.int64)

    @property
    def channel_image(self) -> np.ndarray:
        """The channel view (channel | what the occluder removed from it), uint8 (H, W, 3)."""
        return self._current()[0].panel

    @property
    def hover_text(self) -> str:
        """The hover text of the tile under the pointer in the browser, as it shows it (its channel
        and statistics, on four lines; "" when none)."""
        channel = self.grid.hover
        return self.grid.describe(channel) if 0 <= channel < self._channels(self.layer) else ""

    @property
    def shown_state(self) -> ExplorerState:
        """The state of the frame on screen (it equals :meth:`state` once idle)."""
        return self._current()[1]

    @property
    def stats(self) -> dict[str, int]:
        """Work counters: requests, computes, renders, skipped, dropped (the feature grid's; see
        :class:`~cnnwidgets.app.controller.Stats`), ``errors`` (everything that failed: feature-grid
        stages and method maps), ``method_errors`` (the method maps among them), model_changes, and
        the probe's forwards, full_forwards and cache_hits."""
        counts = self.controller.stats.as_dict()
        counts["errors"] += self._method_errors
        counts["method_errors"] = self._method_errors
        probe = self.controller.probe.stats.as_dict()
        counts.update({"forwards": probe["forwards"], "full_forwards": probe["full_forwards"],
                       "cache_hits": probe["cache_hits"]})
        return counts

    @property
    def probe(self) -> Probe:
        """The probe the explorer computes with (a private copy of the model)."""
        return self.controller.probe

    def close(self) -> None:
        """Stop the worker, remove every hook (the probe's private copy goes), close the views.

        Safe to call again: a call that was interrupted is finished by the next one. A forward
        pass still running is waited for at most ``CLOSE_WAIT`` seconds (2); after that the call
        returns with a ``RuntimeWarning``, and the model copy is freed when the pass returns.
        """
        if getattr(self, "_closed", True) and not getattr(self, "_closing", False):
            return  # closed already (or never made)
        self._closing = True  # until every step below is done: each can be done twice
        self._closed = True  # from now on every change is refused, and no frame is shown
        if getattr(self, "_main_calls", None):
            with self._main_calls_lock:
                self._main_calls.clear()  # updates handed over to the main thread show nothing now
        links = getattr(self, "_links", [])
        while links:
            links.pop().unlink()
        # the controls stay usable objects after close (a notebook may still hold them): what
        # they do to them must not reach the closed explorer
        for widget, handler, name in (
            ("picker", self._on_pick, "value"), ("grid", self._on_grid_click, "selected"),
            ("occluder_controls", self._occluder_switched, "enabled"), ("occluder_controls", self._on_size, "size"),
            ("occluder_controls", self._method_inputs_changed, "size"),
            ("page_select", self._on_page_picked, "value"), ("layer_filter", self._on_layer_filter, "value"),
        ):
            try:
                getattr(self, widget).unobserve(handler, names=name)
            except (AttributeError, ValueError):
                pass  # construction stopped before it was made or wired
        if getattr(self, "picker", None) is not None:
            self.picker.on_upload_problem(self._on_upload_problem, remove=True)
        if getattr(self, "controller", None) is not None:  # None: construction failed before it started any
            freed = True
            if getattr(self, "_methods", None) is not None:
                freed = self._methods.close()
            freed = self.controller.close() and freed
            if not freed:
                warnings.warn(
                    f"the explorer is closed, but a forward pass of the model was still running after "
                    f"{_worker.CLOSE_WAIT:g} s; its private copy of the model is freed when that pass returns",
                    RuntimeWarning,
                    stacklevel=2,
                )
            for name in ("canvas", "grid", "panel", "scores_view", "layer_select", "status", "method_view"):
                widget = getattr(self, name, None)  # construction may have stopped before the views were made
                if widget is not None:
                    widget.close()
            close_parts(self)  # every other control and row: an open one would keep the explorer alive
            super().close()
            if freed:
                self._forget_pictures()
        self._closing = False

    def _forget_pictures(self) -> None:
        """Drop what only an open explorer shows: frames, images, the pictures of its views.

        A closed explorer may be kept for the rest of a session (a cell ending in
        ``cnnwidgets.explore(...)`` leaves it in IPython's ``Out``, once per run of the cell):
        it then holds a few bytes instead of its last frame, maps and pictures. Only once the
        workers are done (nothing they hold reads these any more).
        """
        with self._frame_lock:
            self._frame = self._frame_state = None
        self._images = {}
        self._samples = {}
        empty = {"image": b"", "fill_image": "", "stats": b"", "value": b""}
        views = (("canvas", ("image", "fill_image")), ("grid", ("image", "stats")), ("panel", ("value",)))
        for widget, names in views:
            view = getattr(self, widget, None)
            for name in names if view is not None else ():
                setattr(view, name, empty[name])  # closed views send nothing
        if getattr(self, "method_view", None) is not None:
            self.method_view.image.value = b""


def _offers_shipped_samples(model: nn.Module, names: Sequence[str], count: int | None) -> bool:
    """Whether the shipped sample images (generated shapes) suit ``model`` beside the user's image:
    its class names ``names`` are the shapes' classes (:data:`cnnwidgets.zoo.SHAPE_CLASSES`, in any
    order), or, without names, it is the zoo's ShapesNet with one output per shape class."""
    from cnnwidgets.zoo.shapes import CLASSES
    from cnnwidgets.zoo.shapesnet import ShapesNet

    if names:
        return len(names) == len(CLASSES) and set(names) == set(CLASSES)
    return isinstance(model, ShapesNet) and count == len(CLASSES)


def _zoo_samples() -> tuple[dict[str, Any], str]:
    """The zoo's sample images, or none and the reason (the explorer works without them)."""
    try:
        from cnnwidgets.zoo import samples  # type: ignore[attr-defined]
    except ImportError:
        return {}, "cnnwidgets.zoo.samples is not available"
    try:
        return dict(samples()), ""
    except Exception as exc:  # noqa: BLE001 - reported when an image is actually needed
        return {}, f"the shipped samples could not be loaded: {type(exc).__name__}: {exc}"


def explore(model: Any = None, image: Any = None, **options: Any) -> Explorer:
    """Open the live explorer.

    Args:
        model: an ``nn.Module`` classifier or a zoo ``Bundle``; None: the embedded default
            model (ShapesNet, trained on generated shapes).
        image: path, bytes, PIL image, array or tensor (a normalised one with ``denormalize=``, see
            :class:`Explorer`), or a sample's name (``"star"``); None: a shipped sample image.
        **options: keyword arguments of :class:`Explorer` (``layer``, ``channel``, ``box``,
            ``device``, ``fill``, ``norm``, ``cmap``, ``show_scores``, ``preprocess`` ...).

    Returns:
        The :class:`Explorer` widget (display it, or let the notebook display it).

    Raises:
        RuntimeError: when ``model`` is None and this installation has no embedded default model.
        FileNotFoundError: when ``model`` is None and the default model's weights file is missing.
        (and see :class:`Explorer`).
    """
    if model is None:
        try:
            from cnnwidgets.zoo import load_default  # type: ignore[attr-defined]
        except ImportError as exc:
            raise RuntimeError(
                "the embedded default model is not available in this installation; pass a model: "
                "cnnwidgets.explore(model, image)"
            ) from exc
        model = load_default()
    return Explorer(model, image, **options)
