"""Model summary: one row per layer with its output shape, parameters and receptive field.

The numbers come from :attr:`cnnwidgets.Probe.layers` (one discovery forward pass on a zero
input of the given size). Receptive field ``r`` and jump ``j`` follow the recurrence of
Araujo, Norris & Sim (2019), "Computing Receptive Fields of Convolutional Neural Networks"
(Distill): for a layer with kernel ``k``, stride ``s`` and dilation ``d``::

    r_out = r_in + (k - 1) * d * j_in,    j_out = j_in * s,    r_0 = j_0 = 1

Layers where the recurrence does not apply (linear layers, adaptive pooling) show ``-``.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, replace

from torch import nn

from cnnwidgets.core.layers import LayerInfo
from cnnwidgets.core.probe import Probe, check_input_size, probe_scope

__all__ = ["Summary", "SummaryRow", "summary"]

COLUMNS = ("Layer", "Type", "Output shape", "Params", "RF", "Jump")
_NUMERIC = (False, False, False, True, True, True)




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

    @classmethod
    def from_info(cls, info: LayerInfo) -> SummaryRow:
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


@dataclass(frozen=True)
class Summary:
    """A table of a model's layers; ``str(summary)`` is an aligned text table.

    Attributes:
        rows: the layers, in execution order.
        input_size: the (C, H, W) the shapes were computed for.
        total_params: number of (distinct) parameters of the whole model.
        model_name: the model's class name.
    """

    rows: tuple[SummaryRow, ...]
    input_size: tuple[int, ...]
    total_params: int
    model_name: str

    columns = COLUMNS
    numeric = _NUMERIC

    def cells(self) -> list[tuple[str, ...]]:
        """Every row as display strings (see :meth:`SummaryRow.cells`)."""
        return [row.cells() for row in self.rows]

    def filter(self, text: str) -> Summary:
        """The rows whose name or type contains ``text`` (case-insensitive); all rows for ``""``."""
        needle = text.strip().lower()
        if not needle:
            return self
        kept = tuple(r for r in self.rows if needle in r.name.lower() or needle in r.type.lower())
        return replace(self, rows=kept)

    def description(self) -> str:
        """One line about the whole model, e.g. ``Net: 656 parameters, input 3x16x16``."""
        size = "x".join(str(s) for s in self.input_size)
        return f"{self.model_name}: {self.total_params:,} parameters, input {size}"

    def footer(self) -> str:
        return f"{self.description()}; {len(self.rows)} layers shown"

    def to_text(self) -> str:
        """An aligned plain-text table (numbers right-aligned) with a footer line."""
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
        for row in self.cells():
            tds = "".join(
                f'<td style="text-align:{"right" if num else "left"}">{html.escape(v)}</td>'
                for v, num in zip(row, _NUMERIC)
            )
            body.append(f"<tr>{tds}</tr>")
        return (
            '<table class="cnnwidgets-summary">'
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody>"
            f"<caption style=\"caption-side:bottom\">{html.escape(self.footer())}</caption></table>"
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
        A :class:`Summary` (printable; shown as a table in notebooks).

    Raises:
        ValueError: for an ``input_size`` that is not (C, H, W) (a tensor passed by mistake is named
            by its shape).
        RuntimeError: if the model fails on an input of that size.
        TypeError: if ``model_or_probe`` is neither a model nor a probe.
    """
    if input_size is not None:
        input_size = check_input_size(input_size)
    with probe_scope(model_or_probe, input_size=input_size) as probe:
        infos = probe.describe(input_size) if input_size is not None else probe.layers
        rows = tuple(SummaryRow.from_info(i) for i in infos.values() if i.is_leaf or not leaves_only)
        total = sum(p.numel() for p in probe.model.parameters())
        return Summary(
            rows=rows,
            input_size=tuple(probe.input_size),
            total_params=total,
            model_name=type(probe.model).__name__,
        )
