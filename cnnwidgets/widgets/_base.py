"""Where the widgets' browser code lives (shipped as package data next to this file)."""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
CSS = HERE / "widgets.css"


def esm(name: str) -> Path:
    """Path of the ES module ``name`` shipped with the package."""
    return HERE / name
