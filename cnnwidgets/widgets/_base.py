"""Where the widgets' browser code lives (shipped as package data next to this file)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import ipywidgets
import traitlets

HERE = Path(__file__).resolve().parent
#: The widgets' style sheet, as text: a path would make anywidget watch the file and keep every
#: widget instance reachable from its class for as long as the process lives.
CSS = (HERE / "widgets.css").read_text(encoding="utf-8")
SHARED = HERE / "_shared.js"


def esm(name: str) -> str:
    """Source of the ES module ``name`` shipped with the package, after the shared helpers.

    ``_shared.js`` (object-URL images, event subscriptions, element ids, and the attribute that
    keeps JupyterLab's keyboard shortcuts out of the widgets and of the explorer around them)
    goes in front of every module, so the modules call its functions without an import: a
    widget's module is one string in the browser, with no URL to import siblings from.
    """
    return SHARED.read_text(encoding="utf-8") + "\n" + (HERE / name).read_text(encoding="utf-8")


def close_parts(widget: ipywidgets.Widget) -> None:
    """Close every widget inside ``widget`` (box children, recursively) and the layouts and
    styles of all of them, but not ``widget`` itself.

    ipywidgets keeps every open widget in a global registry; a part left open keeps alive
    whatever its callbacks reach (a view, its controller, a model), so a view that goes away
    closes all of its parts.
    """
    seen: set[int] = set()
    stack: list[object] = [widget]
    parts: list[ipywidgets.Widget] = []
    while stack:
        item = stack.pop()
        if not isinstance(item, ipywidgets.Widget) or id(item) in seen:
            continue
        seen.add(id(item))
        if item is not widget:
            parts.append(item)
        stack.extend(getattr(item, "children", None) or ())
        for name in ("layout", "style"):
            if name in item.trait_names():
                stack.append(getattr(item, name))
    for part in parts:
        ipywidgets.Widget.close(part)


class RefusesBrowserValues:
    """Mixin for widgets whose traits the browser sets: a value their validators refuse.

    Without it the ``TraitError`` leaves the comm handler, where only the kernel's log shows it,
    and the browser keeps showing a value the kernel never took. With it the kernel's values are
    sent back (the browser shows them again) and the error goes to :attr:`on_refused`, which an
    app points at its status line; with no handler set it is raised as before.
    """

    #: called with ``(trait names, error)`` for a refused change from the browser
    on_refused: Callable[[str, BaseException], None] | None = None

    def set_state(self, sync_data):  # type: ignore[no-untyped-def]
        try:
            super().set_state(sync_data)  # type: ignore[misc]
        except traitlets.TraitError as exc:
            names = [name for name in sync_data if name in self.keys]  # type: ignore[attr-defined]
            self.send_state(names)  # type: ignore[attr-defined]
            if self.on_refused is None:
                raise
            self.on_refused(", ".join(names), exc)
