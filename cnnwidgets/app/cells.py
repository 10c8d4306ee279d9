"""What a notebook cell opened is closed when the same cell runs again.

Running a cell again replaces its output, but not the widgets that were in it: ipywidgets keeps
every widget until it is closed, and an explorer keeps its worker threads, its model copies
and the user's model with it (a background method map even goes on computing). So the
explorer and the views note the cell that made them, and when that cell runs again they
close what its earlier run made, before the new one is built. The cell is known where the
front end names it in the execute request (JupyterLab and Notebook 7 do); elsewhere
(a script, a console, an older front end) nothing is closed for you. :func:`close_all` closes
everything still open, wherever it was made.

Set :data:`CLOSE_ON_RERUN` to False to keep what earlier runs made (and close it yourself).

After every cell of an IPython shell (a notebook's kernel, a console), each open explorer whose
model the cell changed draws itself again with the new weights (:func:`after_cell`), so a
training loop in the next cell shows in the explorer above when it ends; set
:data:`FOLLOW_AFTER_CELL` to False to keep the old pictures until the next move.
"""

from __future__ import annotations

import threading
import warnings
import weakref
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

__all__ = ["CLOSE_ON_RERUN", "FOLLOW_AFTER_CELL", "after_cell", "close_all", "open_view", "open_widgets"]

CLOSE_ON_RERUN = True
"""Whether running a cell again closes the explorers and views its earlier runs made."""

FOLLOW_AFTER_CELL = True
"""Whether an open explorer draws itself again after a cell that changed its model's weights (a
training loop run while it is open); see :meth:`cnnwidgets.app.explorer.Explorer.catch_up`."""


class _Closable(Protocol):
    def close(self) -> None: ...


_lock = threading.Lock()
# every explorer and view made, as (cell id or None, run id or None, weak reference), oldest first
_made: list[tuple[str | None, str | None, weakref.ref]] = []


def _cell_run() -> tuple[str | None, str | None]:
    """(cell id, run id) of the cell the kernel is running now; (None, None) outside a kernel
    whose front end names its cells."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython comes with ipywidgets
        return None, None
    shell = get_ipython()
    header = getattr(shell, "parent_header", None) if shell is not None else None
    if not isinstance(header, dict):
        return None, None
    metadata = header.get("metadata")
    cell = metadata.get("cellId") if isinstance(metadata, dict) else None
    message = header.get("header")
    run = message.get("msg_id") if isinstance(message, dict) else None
    if not cell or not run:
        return None, None
    return str(cell), str(run)


def _alive() -> list[tuple[str | None, str | None, Any]]:
    """The entries whose object still exists and is not closed (dead ones are dropped)."""
    alive, kept = [], []
    for cell, run, ref in _made:
        obj = ref()
        if obj is not None and not _is_closed(obj):
            alive.append((cell, run, obj))
            kept.append((cell, run, ref))
    _made[:] = kept
    return alive


def _is_closed(obj: Any) -> bool:
    closed = getattr(obj, "_closed", None)
    if isinstance(closed, bool):
        return closed
    return getattr(obj, "comm", True) is None  # an ipywidgets widget loses its comm when closed


def close_earlier_runs() -> int:
    """Close what earlier runs of the cell now running made (nothing when :data:`CLOSE_ON_RERUN`
    is False or the cell is not known). Returns how many were closed. Called by the explorer and
    the views before they are built.

    Warns:
        RuntimeWarning: for each earlier one whose ``close()`` raised (the others are closed, and
            what the cell makes now is made all the same).
    """
    if not CLOSE_ON_RERUN:
        return 0
    cell, run = _cell_run()
    if cell is None:
        return 0
    with _lock:
        earlier = [obj for c, r, obj in _alive() if c == cell and r != run]
    failed = _close_each(earlier)
    for obj, exc in failed:
        # the new explorer or view is still made: an old one that cannot close is said, not raised
        warnings.warn(f"closing the {type(obj).__name__} an earlier run of this cell opened failed: "
                      f"{type(exc).__name__}: {exc}", RuntimeWarning, stacklevel=3)
    return len(earlier) - len(failed)


def _close_each(objs: list[Any]) -> list[tuple[Any, Exception]]:
    """Close every one of ``objs``, each whatever the others do; the ones whose ``close()`` raised,
    with what it raised."""
    failed = []
    for obj in objs:
        try:
            obj.close()
        except Exception as exc:  # noqa: BLE001 - the others are closed all the same; told by the caller
            failed.append((obj, exc))
    return failed


def opened(obj: _Closable) -> None:
    """Note ``obj`` (an explorer or a view) as made by the cell now running."""
    cell, run = _cell_run()
    with _lock:
        _alive()
        _made.append((cell, run, weakref.ref(obj)))
    _watch_cells()


# the IPython shells whose cells are followed (one registration each, whatever number of explorers)
_watched: weakref.WeakSet = weakref.WeakSet()


def _watch_cells() -> None:
    """Have :func:`after_cell` run after every cell of the IPython shell this runs in (none in a script)."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython comes with ipywidgets
        return
    shell = get_ipython()
    events = getattr(shell, "events", None)
    if events is None:
        return
    with _lock:
        if shell in _watched:
            return
        _watched.add(shell)
    events.register("post_run_cell", after_cell)


def after_cell(result: object = None) -> int:
    """What runs after every notebook cell: each open explorer whose model the cell changed draws
    itself again with the new weights (nothing when :data:`FOLLOW_AFTER_CELL` is False). Returns how
    many did. A failure is shown in that explorer's status line, never raised into the cell.

    Args:
        result: what IPython hands its ``post_run_cell`` callbacks (the cell's result); not used.
    """
    if not FOLLOW_AFTER_CELL:
        return 0
    caught_up = 0
    for obj in open_widgets():
        catch_up = getattr(obj, "catch_up", None)
        if catch_up is None:
            continue
        try:
            caught_up += bool(catch_up())
        except Exception as exc:  # noqa: BLE001 - after the user's cell: reported where the explorer is
            status = getattr(obj, "status", None)
            if status is not None and hasattr(status, "exception"):
                status.exception("update after the cell", exc)
    return caught_up


View = TypeVar("View", bound=_Closable)


def open_view(make: Callable[[], View], attach: Callable[[View], object]) -> View:
    """A view made by ``make()`` and given its controller, ``view.controller = attach(view)``,
    once what the earlier runs of this cell opened is closed; noted as this run's. When ``attach``
    fails the view is closed (no half-made view is left in the widget registry) and the error
    raised."""
    close_earlier_runs()
    view = make()
    try:
        view.controller = attach(view)  # type: ignore[attr-defined] # kept alive with the view
    except Exception:
        view.close()
        raise
    opened(view)
    return view


def open_widgets() -> list[Any]:
    """The explorers and views made so far that are not closed, oldest first."""
    with _lock:
        return [obj for _, _, obj in _alive()]


def close_all() -> int:
    """Close every explorer and view still open (their worker threads stop and their model
    copies are freed). Returns how many were closed.

    Raises:
        RuntimeError: when the ``close()`` of one or more of them raised; every other one is closed
            first, and the first such error is chained.
    """
    objs = open_widgets()
    failed = _close_each(objs)
    if failed:
        names = ", ".join(type(obj).__name__ for obj, _ in failed)
        first = failed[0][1]
        raise RuntimeError(f"close_all closed {len(objs) - len(failed)} of {len(objs)}; closing {names} failed: "
                           f"{type(first).__name__}: {first}") from first
    return len(objs)
