"""Errors of view controllers go to the view's status line, never only to the browser console; the
one-line view functions refuse options they do not take, saying which they take."""

from __future__ import annotations

import difflib
import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["check_one_liner_options", "error_text", "keyword_options", "near_miss", "shown_in_view"]


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


def keyword_options(controller: type) -> list[str]:
    """The keyword-only options of ``controller``'s constructor, in order."""
    parameters = inspect.signature(controller.__init__).parameters.values()
    return [p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY]


def near_miss(name: str, accepted: Sequence[str], settings: Sequence[str], maker: str) -> str:
    """What to tell about an option ``name`` that ``maker`` does not take: the option it is close
    to (in another case, with a typo), or that it (or the name it is close to) is a setting of
    the view, one of ``settings``; or nothing."""
    close = [name] if name in settings else difflib.get_close_matches(
        name.lower(), [*accepted, *settings], n=1, cutoff=0.6)
    if not close:
        return ""
    meant = close[0]
    if meant in accepted:
        return f" (did you mean {meant!r}?)"
    setting = f"a setting of the view: set it on the view {maker}(...) returns, view.{meant} = ..."
    return f" ({name} is {setting})" if meant == name else f" (did you mean {meant!r}? It is {setting})"


def check_one_liner_options(options: Mapping[str, Any], controller: type, maker: str, named: Sequence[str] = (),
                            settings: Sequence[str] = ()) -> None:
    """Refuse what the one-liner ``maker`` does not take: ``view`` (it makes its own) and options
    that are neither ``named`` arguments of its own nor keyword options of ``controller``; a name
    among the view's ``settings`` is told to be set on the view.

    Raises:
        TypeError: naming the options ``maker`` takes, and the one an unknown name is close to
            (in another case, with a typo) or that it is a setting of the view.
    """
    if "view" in options:
        raise TypeError(f"{maker}(...) makes its own view, so view cannot be given; to drive a view of your own, "
                        f"use {controller.__name__}(..., view=view)")
    accepted = [*named, *keyword_options(controller)]
    for name in options:
        if name not in accepted:
            hint = near_miss(name, accepted, settings, maker)
            raise TypeError(f"{maker}(...) has no option {name!r}{hint}; its options are: {', '.join(accepted)}")
