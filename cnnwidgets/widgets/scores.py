"""Class scores: top-k bars with probabilities and the change against a reference; click to pick."""

from __future__ import annotations

from collections.abc import Sequence

import anywidget
import numpy as np
import traitlets as t

from cnnwidgets.widgets._base import CSS, BrowserSetsOnly, browser_int, esm

__all__ = ["ScoreBars", "score_rows"]


def score_rows(
    probs: np.ndarray,
    labels: Sequence[str],
    *,
    reference: np.ndarray | None = None,
    k: int = 5,
    pinned: int | None = None,
) -> list[dict]:
    """Rows for :class:`ScoreBars`: the ``k`` most probable classes, plus ``pinned`` if not among them.

    Args:
        probs: class probabilities, shape (num_classes,).
        labels: class names (``"class <index>"`` where a name is missing).
        reference: probabilities to compare with (e.g. the unoccluded image), or None.
        k: how many classes to list.
        pinned: a class always listed (the target), or None.

    Returns:
        ``[{"index", "label", "prob", "delta"}]``: the ``k`` classes of highest probability (ties
        by index), then ``pinned``. They are sorted by decreasing probability as shown (in steps
        of 0.1 %), classes that show the same value by index: rows whose numbers do not change
        keep their places while the occluder moves. ``delta`` is ``prob - reference[index]`` or
        None.

    Raises:
        ValueError: for k < 1, a pinned index out of range or a reference of another shape.
    """
    probs = np.asarray(probs, dtype=np.float64).ravel()
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if reference is not None:
        reference = np.asarray(reference, dtype=np.float64).ravel()
        if reference.shape != probs.shape:
            raise ValueError(f"reference has shape {reference.shape}, probabilities {probs.shape}")
    if pinned is not None and not 0 <= pinned < probs.size:
        raise ValueError(f"target class {pinned} out of range 0..{probs.size - 1}")
    # the k most probable classes by their exact probabilities (the one a method explains for
    # "the most probable class" is always among them, also where many classes show the same
    # rounded value), listed by the value shown, tenths of a percent, then by index
    chosen = np.argsort(-probs, kind="stable")[:k]
    shown = np.round(probs[chosen] * 1000)
    order = [int(i) for i in chosen[np.lexsort((chosen, -shown))]]
    if pinned is not None and pinned not in order:
        order.append(pinned)
    rows = []
    for i in order:
        i = int(i)
        label = labels[i] if i < len(labels) else f"class {i}"
        delta = None if reference is None else float(probs[i] - reference[i])
        rows.append({"index": i, "label": str(label), "prob": float(probs[i]), "delta": delta})
    return rows


class ScoreBars(BrowserSetsOnly, anywidget.AnyWidget):
    """Top-k class probabilities as bars, with the change against a reference.

    A row's tooltip holds the full class name (a long one is cut short in its column).

    The rows are a listbox, one stop in the tab order: Up and Down arrow keys (and Home, End)
    move the active row, outlined while the list has the keyboard focus; Enter or Space picks
    the active row's class, as a click on it does; picking the selected class again unpicks it
    (``selected`` None: a controller then follows the most probable class). The selected row is bold with a bar at its
    left edge, and a screen reader hears each row as its class, probability and change.

    Traits:
        rows: see :func:`score_rows`.
        selected: the class picked by a click (the target class), or None.
        title: a heading.

    The browser sets ``selected`` only: a class index as a whole number (``2.0`` is 2), or null;
    anything else, or a value for another trait, is refused and the kernel's values are sent back.
    """

    _BROWSER_SETS = frozenset({"selected"})

    _esm = esm("scorebars.js")
    _css = CSS

    rows = t.List(t.Dict()).tag(sync=True)
    selected = t.Int(None, allow_none=True).tag(sync=True)
    title = t.Unicode("").tag(sync=True)

    def _check_browser_values(self, sync_data: dict) -> None:
        if sync_data.get("selected") is not None:
            browser_int(sync_data["selected"], "the class picked (selected)")

    def pick(self, index: int) -> None:
        """Do what a click on the row of class ``index`` does in the browser: select it, or
        unselect it when it is selected.

        Raises:
            ValueError: if no row shows that class.
        """
        if not any(r["index"] == index for r in self.rows):
            shown = [r["index"] for r in self.rows]
            raise ValueError(f"class {index} is not among the rows shown ({shown})")
        self.selected = None if self.selected == index else index
