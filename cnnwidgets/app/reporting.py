"""Errors of view controllers go to the view's status line, never only to the browser console."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

__all__ = ["error_text", "shown_in_view"]


def error_text(exc: BaseException) -> str:
    """The message of an expected error as it is, anything else with its type in front."""
    if isinstance(exc, (KeyError, IndexError, ValueError, TypeError, RuntimeError)):
        return str(exc.args[0]) if exc.args else str(exc)
    return f"{type(exc).__name__}: {exc}"


def shown_in_view(update: Callable) -> Callable:
    """Run a controller's ``update``; an error goes to its view's status line (``self.view``).

    Updates run from widget callbacks: an exception raised there would only reach the browser's
    console, and the view would silently keep its old picture.
    """

    @functools.wraps(update)
    def run(self: Any, *args: Any, **kwargs: Any) -> None:
        try:
            update(self, *args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - shown in the view, the widget goes on
            self.view.show_error(error_text(exc))

    return run
