"""A model-summary table with a filter box (receives text cells; computes nothing)."""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence

import ipywidgets as widgets
import traitlets

from cnnwidgets.widgets._base import RefusesWhenClosed, close_parts

__all__ = ["SummaryView", "scrolling", "table_html", "wrapped_text"]

_TABLE_STYLE = (
    "border-collapse:collapse;font-family:var(--jp-code-font-family,monospace);font-size:12px"
)
_CELL_STYLE = "padding:1px 10px;border-bottom:1px solid var(--jp-border-color2, #ddd);white-space:nowrap"
# A box that scrolls sideways by itself where the output is narrower than what it holds. An HTML
# widget's content is a flex item that grows to its widest child (min-width: auto), so the page's
# rule lets the widgets that hold such a box shrink to the output's width instead; it travels with
# the HTML, as views without custom widgets load no style sheet.
_SCROLL_RULE = ("<style>.widget-html:has(.cnnw-scroll),.widget-html-content:has(.cnnw-scroll)"
                "{min-width:0}</style>")
_SCROLL_STYLE = "overflow-x:auto;max-width:100%"


_ALIGNMENTS = ("left", "right")


def _text_list(value: object, what: str, each: str) -> list:
    """``value`` as a list: a list, tuple, array or other iterable, not one string (whose letters would
    be taken for its items), a mapping or a set (no order).

    Raises:
        TypeError: for anything else, naming ``what`` and saying that it is a list of ``each``.
    """
    if isinstance(value, (str, bytes, Mapping, set, frozenset)) or not isinstance(value, Iterable):
        raise TypeError(f"{what} must be a list of {each}, got {type(value).__name__} {value!r:.60}")
    return list(value)


def _check_table(columns: object, rows: object, align: object) -> tuple[list[str], list[list[str]], list[str]]:
    """``columns``, ``rows`` and ``align`` of a table as lists of strings (cells and labels written with
    ``str``).

    Raises:
        TypeError: for columns, rows, a row or align that is not a list (one string, None, a number).
        ValueError: for a row of another length than ``columns``, an alignment other than ``"left"`` or
            ``"right"``.
    """
    columns = [str(c) for c in _text_list(columns, "columns", "header labels")]
    rows = _text_list(rows, "rows", "rows (each a list of cells)")
    table = []
    for index, row in enumerate(rows):
        cells = [str(v) for v in _text_list(row, f"row {index}", "cells, one per column")]
        if len(cells) != len(columns):
            raise ValueError(f"row {index} has {len(cells)} cells, but the table has {len(columns)} columns "
                             f"{columns}; give one cell per column")
        table.append(cells)
    align = [str(a) for a in _text_list(align, "align", "'left' or 'right', one per column")]
    bad = [a for a in align if a not in _ALIGNMENTS]
    if bad:
        raise ValueError(f"align values must be 'left' or 'right', got {bad}")
    return columns, table, align


def table_html(columns: Sequence[str], rows: Sequence[Sequence[str]], align: Sequence[str] = ()) -> str:
    """An escaped HTML table.

    Args:
        columns: header labels.
        rows: rows of display strings, each as long as ``columns`` (other values are written with ``str``).
        align: ``"left"`` or ``"right"`` per column (default left).

    Returns:
        The HTML text.

    Raises:
        TypeError: for ``columns``, ``rows``, a row or ``align`` that is not a list (a row given as one
            string, say).
        ValueError: if a row has the wrong number of cells, or an alignment is neither ``"left"`` nor
            ``"right"``.
    """
    columns, rows, align = _check_table(columns, rows, align)
    align += ["left"] * (len(columns) - len(align))
    head = "".join(f'<th style="{_CELL_STYLE};text-align:{a}">{html.escape(c)}</th>' for c, a in zip(columns, align))
    body = []
    for row in rows:
        tds = "".join(
            f'<td style="{_CELL_STYLE};text-align:{a}">{html.escape(v)}</td>' for v, a in zip(row, align)
        )
        body.append(f"<tr>{tds}</tr>")
    # in a box of its own that scrolls sideways where the output is narrower than the table, so that
    # columns are not cut off and text around it still wraps at the output's width
    return scrolling(f'<table style="{_TABLE_STYLE}"><thead><tr>{head}</tr></thead>'
                     f'<tbody>{"".join(body)}</tbody></table>')


def scrolling(content: str) -> str:
    """``content`` (HTML, a table) in a box that scrolls sideways by itself where the output is
    narrower, instead of cutting it off or widening the whole view."""
    return f'{_SCROLL_RULE}<div class="cnnw-scroll" style="{_SCROLL_STYLE}">{content}</div>'


def wrapped_text(content: str) -> str:
    """``content`` (HTML text) wrapped at the output's width, its lines as close as the explorer's
    captions (an HTML widget's own line height is that of a control, 28 px)."""
    return f'<div style="line-height:1.4;white-space:normal;overflow-wrap:anywhere">{content}</div>'


def _check_rows(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Raise ``TraitError`` unless every row has one cell per column."""
    for index, row in enumerate(rows):
        if len(row) != len(columns):
            raise traitlets.TraitError(
                f"row {index} has {len(row)} cells, but the table has {len(columns)} columns {list(columns)}; "
                "give one cell per column"
            )


class SummaryView(RefusesWhenClosed, widgets.VBox):
    """Layer table with a filter box: rows whose text contains the filter (any column,
    case-insensitive) are shown.

    Traits:
        columns: header labels.
        cells: the rows, as lists of display strings.
        align: ``"left"``/``"right"`` per column.
        caption: the text under the table: its first line ends with how many rows are shown; further
            lines (after a newline, such as a note about missing receptive fields) follow below it.
        filter_text: the filter (bound to the text box).
        shown: number of rows currently shown (read it, don't set it).

    Every row of ``cells`` has one cell per column: a value that breaks this (rows of another
    length, or ``columns`` of another length than the rows) is refused and the table keeps what
    it had. To change both, set them together inside ``with view.hold_trait_notifications():``.

    The constructor takes ``columns``, ``cells`` (values written with ``str``), ``align`` and
    ``caption`` as the traits; further keywords are the traits of the view (``filter_text``) and of
    its box (``layout`` ...). It raises ``TypeError`` for columns, cells, a row or align that is not
    a list (a row given as one string, say) and for a keyword the view has no trait for;
    ``ValueError`` for a row of another length than ``columns`` or an alignment other than
    ``"left"`` or ``"right"``.

    :meth:`close` closes the view and every widget inside it; a closed view refuses new settings.
    """

    #: the function that makes the view, named when a closed one is used
    _MAKER = "summary_view(...)"

    columns = traitlets.List(traitlets.Unicode())
    cells = traitlets.List(traitlets.List(traitlets.Unicode()))
    align = traitlets.List(traitlets.Unicode())
    caption = traitlets.Unicode("")
    filter_text = traitlets.Unicode("")
    shown = traitlets.Int(0, read_only=True)

    def __init__(
        self,
        columns: Sequence[str] = (),
        cells: Sequence[Sequence[str]] = (),
        *,
        align: Sequence[str] = (),
        caption: str = "",
        **kwargs,
    ) -> None:
        self._closed = False
        columns, cells, align = _check_table(columns, cells, align)
        if "shown" in kwargs:
            raise TypeError("shown cannot be given: it is read-only, the number of rows the filter shows")
        unknown = sorted(name for name in kwargs if not self.has_trait(name))
        if unknown:
            raise TypeError(f"SummaryView got unknown keyword arguments {unknown}; it takes columns, cells, align, "
                            "caption, filter_text and the traits of an ipywidgets box (layout ...)")
        # set after the filter box is linked to it (the link gives it the box's empty text)
        filter_text = kwargs.pop("filter_text", "")
        self._filter_box = widgets.Text(placeholder="filter layers (name or type)", continuous_update=True)
        self._table = widgets.HTML()
        self._footer = widgets.HTML()
        try:
            super().__init__(children=[self._filter_box, self._table, self._footer], **kwargs)
            self._filter_link = widgets.link((self._filter_box, "value"), (self, "filter_text"))
            self.observe(self._render, names=["columns", "cells", "align", "caption", "filter_text"])
            self.columns = columns
            self.align = align
            self.caption = caption
            self.cells = cells
            self.filter_text = filter_text
        except BaseException:
            self.close()  # the parts made so far, which ipywidgets would keep open
            raise
        self._render()

    @traitlets.validate("caption", "filter_text")
    def _check_open(self, proposal):
        self._refuse_when_closed(proposal)
        return proposal["value"]

    @traitlets.validate("cells")
    def _check_cells(self, proposal):
        self._refuse_when_closed(proposal)
        _check_rows(self.columns, proposal["value"])
        return proposal["value"]

    @traitlets.validate("columns")
    def _check_columns(self, proposal):
        self._refuse_when_closed(proposal)
        _check_rows(proposal["value"], self.cells)
        return proposal["value"]

    @traitlets.validate("align")
    def _check_align(self, proposal):
        self._refuse_when_closed(proposal)
        bad = [a for a in proposal["value"] if a not in ("left", "right")]
        if bad:
            raise traitlets.TraitError(f"align values must be 'left' or 'right', got {bad}")
        return proposal["value"]

    def visible_rows(self) -> list[list[str]]:
        """The rows that match :attr:`filter_text`."""
        needle = self.filter_text.strip().lower()
        if not needle:
            return list(self.cells)
        return [row for row in self.cells if any(needle in cell.lower() for cell in row)]

    def _render(self, change=None) -> None:
        rows = self.visible_rows()
        self.set_trait("shown", len(rows))
        self._table.value = table_html(self.columns, rows, self.align)
        count = f"{len(rows)} of {len(self.cells)} layers"
        first, *notes = self.caption.split("\n")
        lines = [f"{first} - {count}" if first else count, *(note for note in notes if note)]
        self._footer.value = f"<small>{'<br>'.join(html.escape(line) for line in lines)}</small>"

    def close(self) -> None:
        """Close the view and every widget inside it (the filter box, the table, the caption,
        their layouts and styles). A closed view refuses new settings."""
        if not getattr(self, "_closed", True):
            self._closed = True
            link = getattr(self, "_filter_link", None)  # none when the constructor failed before making it
            if link is not None:
                link.unlink()
        self._closed = True
        close_parts(self)
        super().close()
