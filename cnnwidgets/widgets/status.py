"""A status line that shows errors from callbacks instead of letting them vanish in a log."""

from __future__ import annotations

import html

import ipywidgets as w
import traitlets as t

__all__ = ["StatusLine"]

#: The package's palette (widgets.css: one value for light and one for dark themes) where the page
#: has its style sheet, as in the explorer; else JupyterLab's theme colours, else a white page's.
_MUTED = "color:var(--cnnw-muted, var(--jp-ui-font-color2, #555))"
#: The colour of error text (the status line's, and a view's under its picture).
ERROR_COLOUR = "var(--cnnw-error, var(--jp-error-color1, #b00020))"
_STYLES = {
    "info": _MUTED,
    "busy": f"{_MUTED};font-style:italic",
    "error": f"color:{ERROR_COLOUR}",
}

#: Lines of a message that wraps are as far apart as in a paragraph, not one widget row (28px)
#: each: an inline block has its own line height, also without the package's style sheet.
_BLOCK = "display:inline-block;line-height:1.4;white-space:normal"


#: The word in front of an error, so that it does not show by its colour alone.
_ERROR_WORD = "Error:"


class StatusLine(w.HTML):
    """One line of text: information, or an error that stays until the next success.

    The line is a polite live region (``role="status"``): screen readers announce a new message
    without moving the focus. An error is red and starts with a bold "Error:". The browser sets
    none of its values: what it sends is not taken, and the kernel's are sent back.

    Traits:
        message: the plain text shown.
        level: ``"info"``, ``"busy"`` or ``"error"``.

    Keyword arguments (``**kwargs``) are initial trait values: those above, and ipywidgets' own,
    such as ``layout``.
    """

    message = t.Unicode("")
    level = t.Enum(tuple(_STYLES), default_value="info")

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.layout.min_height = "1.6em"
        self._render()

    @t.observe("message", "level")
    def _render(self, change=None) -> None:
        text = html.escape(self.message)
        if self.level == "error" and text:
            text = f"<b>{_ERROR_WORD}</b> {text}"
        self.value = (f'<span class="cnnw-status" role="status" aria-live="polite" '
                      f'style="{_STYLES[self.level]};{_BLOCK}">{text}</span>')

    def set_state(self, sync_data):  # type: ignore[no-untyped-def]
        """Take nothing the browser sends (``sync_data``): the line shows what the kernel says. The
        kernel's values of what it sent are sent back, so that the browser shows them again."""
        names = [name for name in sync_data if name in self.keys]
        if names:
            self.send_state(names)

    def info(self, message: str) -> None:
        """Show the informational ``message``."""
        with self.hold_trait_notifications():
            self.level = "info"
            self.message = message

    def error(self, message: str) -> None:
        """Show the error ``message`` (it stays until replaced)."""
        with self.hold_trait_notifications():
            self.level = "error"
            self.message = message

    def exception(self, where: str, exc: BaseException) -> None:
        """Show the exception ``exc`` as ``where: ExcType: message`` (``where`` says what failed)."""
        self.error(f"{where}: {type(exc).__name__}: {exc}")

    @property
    def is_error(self) -> bool:
        """Whether the line shows an error."""
        return self.level == "error"
