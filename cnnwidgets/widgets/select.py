"""A drop-down with grouped options (``<optgroup>``), e.g. layers grouped by block."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

import anywidget
import traitlets as t

from cnnwidgets.widgets._base import CSS, BrowserSetsOnly, esm

__all__ = ["GroupedSelect"]


class GroupedSelect(BrowserSetsOnly, anywidget.AnyWidget):
    """Select one value among options shown in groups.

    Traits:
        groups: ``[{"label": group, "options": [[label, value], ...]}, ...]``.
        value: the selected value; must be one of the options.
        description: caption shown before the drop-down.

    The browser sets ``value`` only (one of the options); a value for another trait (the groups,
    the caption) is refused and the kernel's values are sent back.

    Keyword arguments (``**kwargs``) are initial trait values: those above, and ipywidgets' own,
    such as ``layout``.
    """

    _BROWSER_SETS = frozenset({"value"})

    _esm = esm("groupedselect.js")
    _css = CSS

    groups = t.List(t.Dict()).tag(sync=True)
    value = t.Unicode("").tag(sync=True)
    description = t.Unicode("").tag(sync=True)

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_class("cnnw-select-widget")  # lets a narrow row shrink it (see widgets.css)

    @classmethod
    def from_items(cls, items: Iterable[tuple[str, str, str]], **kwargs) -> GroupedSelect:
        """Build from ``items``, ``(group, label, value)`` triples; groups keep their first-seen order.
        ``**kwargs`` go to the constructor."""
        widget = cls(**kwargs)
        widget.set_items(items)
        return widget

    def set_items(self, items: Iterable[tuple[str, str, str]], value: str | None = None) -> None:
        """Replace the options with ``items`` (as for :meth:`from_items`); keeps the value if still
        offered, else takes ``value`` or the first.

        Raises:
            traitlets.TraitError: if ``value`` is not among the new options (nothing is changed then).
        """
        groups: dict[str, list[list[str]]] = {}
        for group, label, val in items:
            groups.setdefault(group, []).append([label, val])
        new_groups = [{"label": g, "options": opts} for g, opts in groups.items()]
        values = [v for opts in groups.values() for _, v in opts]
        if value is not None and values and value not in values:
            close = difflib.get_close_matches(value, values, n=3)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
            raise t.TraitError(f"{value!r} is not one of the new options{hint}")
        with self.hold_sync():
            self.groups = new_groups
            if value is not None:
                self.value = value
            elif self.value not in values:
                self.value = values[0] if values else ""

    @property
    def options(self) -> list[str]:
        """Every value offered, in display order."""
        return [v for g in self.groups for _, v in g["options"]]

    def label_of(self, value: str) -> str:
        """The label shown for ``value``."""
        for g in self.groups:
            for label, v in g["options"]:
                if v == value:
                    return label
        raise KeyError(value)

    @t.validate("value")
    def _check_value(self, proposal):
        value = proposal["value"]
        options = self.options
        if options and value not in options:
            close = difflib.get_close_matches(value, options, n=3)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
            raise t.TraitError(f"{value!r} is not an option{hint}")
        return value
