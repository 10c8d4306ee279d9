"""Where the widgets' browser code lives (shipped as package data next to this file)."""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
CSS = HERE / "widgets.css"
SHARED = HERE / "_shared.js"


def esm(name: str) -> str:
    """Source of the ES module ``name`` shipped with the package, after the shared helpers.

    ``_shared.js`` (object-URL images, event subscriptions) goes in front of every module, so
    the modules call its functions without an import: a widget's module is one string in the
    browser, with no URL to import siblings from.
    """
    return SHARED.read_text(encoding="utf-8") + "\n" + (HERE / name).read_text(encoding="utf-8")
