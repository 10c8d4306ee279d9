"""Model summary: one row per layer with its output shape, parameters and receptive field.

The numbers come from :attr:`cnnwidgets.Probe.layers` (one discovery forward pass on a zero
input of the given size). Receptive field ``r`` and jump ``j`` follow the recurrence of
Araujo, Norris & Sim (2019), "Computing Receptive Fields of Convolutional Neural Networks"
(Distill): for a layer with kernel ``k``, stride ``s`` and dilation ``d``::

    r_out = r_in + (k - 1) * d * j_in,    j_out = j_in * s,    r_0 = j_0 = 1

Layers where the recurrence does not apply (linear layers, adaptive pooling) show ``-``. When some
layers with a spatial map (more than one position) show ``-``, the summary says how many, where the
receptive field is first lost and why (see :func:`receptive_field_reason`).

Shapes, receptive fields and jumps depend on the input size. The summary says where its size came
from (:attr:`Summary.input_size_origin`): given, a zoo bundle's, a probe's, the size the model says
it was trained at, or, for a bare model given without any of these, assumed: the first of the usual
sizes the model runs on (3 x 224 x 224 for an RGB model that takes it; see
:func:`~cnnwidgets.core.probe.default_input_sizes`). An assumed size is marked in the footer, with a
line on how to give the right one.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, replace

from torch import nn

# the rules discovery applied to a module: a reason below must follow the very same ones
from cnnwidgets.core.layers import GEOMETRIC_MODULES, LayerInfo, module_geometry, rule_applies
from cnnwidgets.core.probe import Probe, check_input_size, default_input_sizes, probe_scope, trained_input_size
from cnnwidgets.core.targets import as_flag

__all__ = ["Summary", "SummaryRow", "has_spatial_map", "receptive_field_reason", "summary"]

COLUMNS = ("Layer", "Type", "Output shape", "Params", "RF", "Jump")

#: What the RF and Jump columns count, for a reader who does not know the words.
COLUMN_KEY = ("RF: receptive field, the side in input pixels of the square one unit of the layer sees (it may "
              "reach past the image's edge); Jump: input pixels between two neighbouring units; '-': a layer "
              "whose units see the whole input (global pooling, fully connected) or whose field is not known")
_NUMERIC = (False, False, False, True, True, True)

# Why a layer with a spatial map has no receptive field, one phrase per cause (see receptive_field_reason).
_CHANNELS_LAST = (
    "its output is channels-last (H, W, C), reached otherwise than by permute(0, 2, 3, 1) from a map with one, "
    "or its input had none"
)
_LINEAR = "a Linear applied to a map mixes the positions along its last dimension"
_OWN_FORWARD = (
    "it has its own forward (a custom layer, or a convolution subclass that pads in forward), "
    "which the recurrence does not describe, or its input had none already"
)
_WINDOW_SHAPE = "its window is not square, or it pads circularly or reflects further than half the window"
_OTHER_WINDOW = "a windowed layer the recurrence does not describe (transposed convolution, LP pooling, unpooling)"
_ADAPTIVE = "adaptive pooling, whose windows follow the map's size, not a fixed kernel"
_RESIZE = "it changes the map's size or arrangement without a kernel (interpolation, padding, a reshape)"
_INPUT = (
    "its input has none, as it went through a function in a forward that the recurrence does not follow "
    "(functional pooling or padding, interpolation, a reshape or permute) or a layer without one"
)
_CONTAINER = "the tensor it returns comes from a layer or function without one"
_UNKNOWN = "an operation the recurrence does not describe"

_ADAPTIVE_POOLING = (
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
)
# torch's modules without a kernel that change a map's size or the order of its positions; any other
# torch module without a kernel keeps the geometry of its input (activations, normalisation, dropout)
_RESIZING = (
    nn.Upsample, nn.PixelShuffle, nn.PixelUnshuffle, nn.Flatten, nn.Unflatten,
    nn.modules.padding._ConstantPadNd, nn.modules.padding._ReflectionPadNd, nn.modules.padding._ReplicationPadNd,
    nn.modules.padding._CircularPadNd,
)


def has_spatial_map(info: LayerInfo) -> bool:
    """Whether the layer ``info`` describes ran and its output is a feature map with more than one
    position. A 1 x 1 map (global pooling, a squeeze-and-excitation branch) is left out: its one unit
    usually reads the whole input, and a missing receptive field there needs no explanation."""
    shape = info.map_shape
    return info.calls > 0 and shape is not None and shape[1] * shape[2] > 1


def receptive_field_reason(module: nn.Module, info: LayerInfo) -> str:
    """Why discovery gave this layer no receptive field, as a short phrase; ``""`` when it has one or has
    no spatial map (see :func:`has_spatial_map`).

    The phrase names the module's own kind when that is what the recurrence does not describe (a
    channels-last output, adaptive pooling, a transposed convolution, a leaf with its own ``forward`` ...);
    for a module the recurrence does describe (a plain convolution, an activation) it says that its input
    had none already.

    Args:
        module: the module ``info`` describes.
        info: its :class:`~cnnwidgets.core.layers.LayerInfo` from discovery.
    """
    if info.receptive_field is not None or not has_spatial_map(info):
        return ""
    if info.layout == "HWC":
        return _CHANNELS_LAST
    if not info.is_leaf:
        return _CONTAINER
    if not rule_applies(module):
        # discovery followed the module's own tensor functions instead of the rule
        return _LINEAR if isinstance(module, nn.Linear) else _OWN_FORWARD
    if isinstance(module, GEOMETRIC_MODULES):
        return _WINDOW_SHAPE if module_geometry(module) is None else _INPUT
    if hasattr(module, "kernel_size"):
        return _OTHER_WINDOW
    if isinstance(module, _ADAPTIVE_POOLING):
        return _ADAPTIVE
    if isinstance(module, _RESIZING):
        return _RESIZE
    return _INPUT


def _receptive_field_note(rows: Sequence[SummaryRow]) -> str:
    """One line for the summary's footer when some rows with a spatial map have no receptive field: how
    many, the first such layer and why, and other places where it is lost for another reason."""
    maps = [row for row in rows if row.spatial]
    missing = [row for row in maps if row.receptive_field is None]
    if not missing:
        return ""
    # Where the receptive field is lost: a leaf without one that runs first, or right after a leaf that has one.
    # (Execution order, not the data flow, which discovery does not record: a best guess past the first.)
    origins: list[SummaryRow] = []
    previous_had_one = True
    for row in maps:
        if not row.is_leaf:
            continue
        if row.receptive_field is None and previous_had_one:
            origins.append(row)
        previous_had_one = row.receptive_field is not None
    first = origins[0] if origins else missing[0]
    text = (
        f"RF '-' on {len(missing)} of {len(maps)} layers with a spatial map, first at {first.name} ({first.type}): "
        f"{first.receptive_field_reason or _UNKNOWN}."
    )
    seen = {first.receptive_field_reason}
    for row in origins[1:]:
        if row.receptive_field_reason not in seen and len(seen) < 3:
            seen.add(row.receptive_field_reason)
            text += f" Also at {row.name} ({row.type}): {row.receptive_field_reason}."
    return text


@dataclass(frozen=True)
class SummaryRow:
    """One layer of a :class:`Summary`.

    Attributes:
        name: qualified module name.
        type: module class name.
        output_shape: output shape without the batch dimension (``None``: not a single tensor, or never ran;
            the whole shape when the first dimension is not the batch, see ``batch_first``).
        params: number of parameters of the module, its submodules included.
        receptive_field: receptive-field size in input pixels (``None`` where undefined).
        jump: input pixels between neighbouring output units (``None`` where undefined).
        calls: how many times the module runs per forward pass.
        depth: nesting depth (number of dots in ``name``).
        is_leaf: whether the module has no submodules.
        layout: ``"HWC"`` for a channels-last 3-D output (see :class:`~cnnwidgets.core.layers.LayerInfo`),
            else ``"CHW"`` or ``""``.
        batch_first: False when the output's first dimension is not the batch; ``output_shape`` is
            then the whole shape, shown with ``(not batched)``.
        spatial: whether the output is a feature map with more than one position (see :func:`has_spatial_map`).
        receptive_field_reason: for a layer with a spatial map and no receptive field, why (see
            :func:`receptive_field_reason`); ``""`` otherwise.
    """

    name: str
    type: str
    output_shape: tuple[int, ...] | None
    params: int
    receptive_field: int | None
    jump: int | None
    calls: int
    depth: int
    is_leaf: bool
    layout: str = ""
    batch_first: bool = True
    spatial: bool = False
    receptive_field_reason: str = ""

    @classmethod
    def from_info(cls, info: LayerInfo, module: nn.Module | None = None) -> SummaryRow:
        """The row for one discovered layer, ``info``; with its ``module``, also why it has no receptive field."""
        return cls(
            name=info.name,
            type=info.type,
            output_shape=info.output_shape,
            params=info.num_params,
            receptive_field=info.receptive_field,
            jump=info.jump,
            calls=info.calls,
            depth=info.name.count("."),
            is_leaf=info.is_leaf,
            layout=info.layout,
            batch_first=info.batch_first,
            spatial=has_spatial_map(info),
            receptive_field_reason="" if module is None else receptive_field_reason(module, info),
        )

    def cells(self) -> tuple[str, str, str, str, str, str]:
        """The row as display strings, in the order of :data:`COLUMNS`."""
        if self.calls == 0:
            shape = "(not run)"
        elif self.output_shape is None:
            shape = "-"
        else:
            shape = " x ".join(str(s) for s in self.output_shape)
            if self.layout == "HWC":
                shape += " (HWC)"
            if not self.batch_first:
                shape += " (not batched)"
        type_ = self.type if self.calls <= 1 else f"{self.type} (x{self.calls})"
        return (
            self.name,
            type_,
            shape,
            f"{self.params:,}",
            "-" if self.receptive_field is None else str(self.receptive_field),
            "-" if self.jump is None else str(self.jump),
        )


#: How :meth:`Summary.description` marks the input size, by :attr:`Summary.input_size_origin`.
_ORIGIN_WORDS = {
    "given": "",
    "bundle": " (the bundle's)",
    "probe": " (the probe's)",
    "trained": " (the size the model was trained at)",
    "assumed": " (assumed)",
}


def _size_text(size: Sequence[int]) -> str:
    return "x".join(str(s) for s in size)


def _assumed_size_note(model: nn.Module, size: tuple[int, ...]) -> str:
    """The line that says that ``size`` was assumed for ``model``, found among the usual sizes, and how
    to give another."""
    tried = []
    for candidate in default_input_sizes(model):
        candidate = tuple(candidate)
        if candidate not in tried:
            tried.append(candidate)
        if candidate == size or len(tried) > 12:
            break
    order = ("the first size tried" if tried and tried[0] == size
             else f"tried in turn: {', '.join(_size_text(c) for c in tried)}")
    return (
        f"Input size assumed: the model came without one (no input_size, no zoo bundle), so the shapes, receptive "
        f"fields and jumps are those at {_size_text(size)}, the first of the usual sizes it runs on ({order}). "
        "If it takes other images, pass input_size=(C, H, W) with their channels, height and width, or the "
        "model's zoo bundle."
    )


def _origin(model_or_probe: object, input_size: object) -> str:
    """Where the size of a summary will come from, as far as is known before the probe describes the
    model: ``"given"``, ``"probe"``, ``"bundle"``, or ``""`` (found by the probe: trained or assumed)."""
    if input_size is not None:
        return "given"
    if isinstance(model_or_probe, Probe):
        return "probe"
    if not isinstance(model_or_probe, nn.Module) and getattr(model_or_probe, "input_size", None) is not None:
        return "bundle"
    return ""


@dataclass(frozen=True)
class Summary:
    """A table of a model's layers; ``str(summary)`` is an aligned text table.

    Attributes:
        rows: the layers, in execution order.
        input_size: the (C, H, W) the shapes were computed for.
        total_params: number of (distinct) parameters of the whole model.
        model_name: the model's class name.
        receptive_field_note: when some layers with a spatial map have no receptive field, one line
            saying how many, where it is first lost and why; ``""`` otherwise.
        input_size_origin: where :attr:`input_size` came from: ``"given"`` (the ``input_size``
            argument), ``"bundle"`` (the zoo bundle's ``input_size``), ``"probe"`` (the probe's
            current size: the one it was made with or last captured at, else one it found the model
            runs on), ``"trained"`` (the size the model says it was trained at: a timm-style
            ``pretrained_cfg``, or Inception v3's 299 x 299) or ``"assumed"`` (a bare model given
            without a size: the first of the usual sizes it runs on, see
            :func:`~cnnwidgets.core.probe.default_input_sizes`).
        input_size_note: for an assumed size, one line saying what was assumed and how to give the
            size the model takes; ``""`` otherwise.
    """

    rows: tuple[SummaryRow, ...]
    input_size: tuple[int, ...]
    total_params: int
    model_name: str
    receptive_field_note: str = ""
    input_size_origin: str = "given"
    input_size_note: str = ""

    columns = COLUMNS
    numeric = _NUMERIC

    def cells(self) -> list[tuple[str, ...]]:
        """Every row as display strings (see :meth:`SummaryRow.cells`)."""
        return [row.cells() for row in self.rows]

    def filter(self, text: str) -> Summary:
        """The rows whose name or type contains ``text`` (case-insensitive); all rows for ``""``.

        Raises:
            TypeError: for a ``text`` that is not a str (None, bytes, a list of names).
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str (part of a layer's name or type, '' for all rows), got "
                            f"{type(text).__name__} {text!r:.60}")
        needle = text.strip().lower()
        if not needle:
            return self
        kept = tuple(r for r in self.rows if needle in r.name.lower() or needle in r.type.lower())
        return replace(self, rows=kept)

    def description(self) -> str:
        """One line about the whole model, e.g. ``Net: 656 parameters, input 3x16x16``, its size marked
        where it did not come from the caller (``input 3x224x224 (assumed)``, ``(the bundle's)``, see
        :attr:`input_size_origin`), followed by the :attr:`input_size_note` and the
        :attr:`receptive_field_note`, each on a line of its own, when there are."""
        size = "x".join(str(s) for s in self.input_size)
        origin = _ORIGIN_WORDS.get(self.input_size_origin, "")
        line = f"{self.model_name}: {self.total_params:,} parameters, input {size}{origin}"
        return "\n".join(text for text in (line, self.input_size_note, self.receptive_field_note) if text)

    def footer(self) -> str:
        """The lines under the table: the :meth:`description`, its first line ending with the number of rows."""
        first, *rest = self.description().split("\n")
        return "\n".join([f"{first}; {len(self.rows)} layers shown", *rest])

    def to_text(self) -> str:
        """An aligned plain-text table (numbers right-aligned) with the footer lines."""
        cells = self.cells()
        widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(self.columns)]

        def line(values: Sequence[str]) -> str:
            parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, _NUMERIC)]
            return "  ".join(parts).rstrip()

        rule = "-" * len(line(["-" * w for w in widths]))
        body = [line(row) for row in cells]
        return "\n".join([line(self.columns), rule, *body, rule, self.footer()])

    def to_html(self) -> str:
        """An HTML table (escaped) with the same content as :meth:`to_text`."""
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.columns)
        body = []
        rf_column = self.columns.index("RF")
        for summary_row, row in zip(self.rows, self.cells()):
            tds = []
            for index, (v, num) in enumerate(zip(row, _NUMERIC)):
                # a missing receptive field says why when hovered
                why = summary_row.receptive_field_reason if index == rf_column else ""
                title = f' title="{html.escape(why)}"' if why else ""
                tds.append(f'<td style="text-align:{"right" if num else "left"}"{title}>{html.escape(v)}</td>')
            body.append(f"<tr>{''.join(tds)}</tr>")
        caption = "<br>".join(html.escape(line) for line in self.footer().split("\n"))
        return (
            '<table class="cnnwidgets-summary">'
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody>"
            f"<caption style=\"caption-side:bottom\">{caption}</caption></table>"
        )

    def __str__(self) -> str:
        return self.to_text()

    def _repr_html_(self) -> str:
        return self.to_html()

    def __len__(self) -> int:
        return len(self.rows)


def summary(
    model_or_probe: nn.Module | Probe,
    input_size: Sequence[int] | None = None,
    *,
    leaves_only: bool = True,
) -> Summary:
    """Describe every layer: type, output shape, parameters, receptive field and jump.

    Receptive field and jump follow Araujo, Norris & Sim (2019):
    ``r_out = r_in + (k - 1) * d * j_in`` and ``j_out = j_in * s``, starting from ``r = j = 1``
    at the input.

    Args:
        model_or_probe: a model or a :class:`~cnnwidgets.Probe`. A model is inspected through a
            temporary probe (a private copy), so it is never changed.
        input_size: (C, H, W) to compute the shapes for (for a probe, this becomes its current
            size). Default: the probe's current input size (the size of its last input, else
            the first size the model runs on, see :func:`~cnnwidgets.core.probe.default_input_sizes`).
        leaves_only: list only modules without submodules (``False``: containers too, such as
            a ResNet's blocks).

    Returns:
        A :class:`Summary` (printable; shown as a table in notebooks). When some layers with a spatial
        map have no receptive field, its footer says how many, where it is first lost and why. Its
        footer also says where the input size came from; a size assumed for a bare model (neither
        ``input_size`` nor a zoo bundle; 3x224x224 for an RGB model that runs on it) is marked
        ``(assumed)``, with a line on how to give the right one (see :attr:`Summary.input_size_origin`).

    Raises:
        ValueError: for an ``input_size`` that is not (C, H, W) (a tensor passed by mistake is named
            by its shape).
        RuntimeError: if the model fails on an input of that size.
        TypeError: if ``model_or_probe`` is neither a model nor a probe, or ``leaves_only`` is not
            True or False.
    """
    leaves_only = as_flag(leaves_only, "leaves_only")
    if input_size is not None:
        input_size = check_input_size(input_size)
    origin = _origin(model_or_probe, input_size)
    with probe_scope(model_or_probe, input_size=None if isinstance(model_or_probe, Probe) else input_size) as probe:
        # described already at that size (a new probe is made at it): no second discovery pass
        infos = probe.layers if input_size in (None, probe.input_size) else probe.describe(input_size)
        modules = dict(probe.model.named_modules())
        rows = tuple(
            SummaryRow.from_info(i, modules.get(i.name)) for i in infos.values() if i.is_leaf or not leaves_only
        )
        total = sum(p.numel() for p in probe.model.parameters())
        size = tuple(probe.input_size)
        note = ""
        if not origin:  # a bare model: the probe found a size it runs on
            origin = "trained" if trained_input_size(probe.model) == size else "assumed"
            note = _assumed_size_note(probe.model, size) if origin == "assumed" else ""
        return Summary(
            rows=rows,
            input_size=size,
            total_params=total,
            model_name=type(probe.model).__name__,
            receptive_field_note=_receptive_field_note(rows),
            input_size_origin=origin,
            input_size_note=note,
        )
