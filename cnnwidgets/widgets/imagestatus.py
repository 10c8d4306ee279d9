"""An image area with a visible status line: the common part of the filter and experiment views."""

from __future__ import annotations

import functools
import html
import io

import ipywidgets as widgets
import numpy as np
import traitlets
from PIL import Image

from cnnwidgets.widgets._base import RefusesBrowserValues, RefusesWhenClosed, close_parts
from cnnwidgets.widgets.controls import FIT_IN_ROW
from cnnwidgets.widgets.status import ERROR_COLOUR
from cnnwidgets.widgets.summary import wrapped_text

__all__ = ["ImageStatus", "png_bytes", "show_png"]


def png_bytes(image: np.ndarray) -> bytes:
    """Encode an (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) ``uint8`` array as PNG.

    Raises:
        ValueError: for a wrong dtype or shape.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
        raise ValueError(f"expected a uint8 image (H, W) or (H, W, 3|4), got {image.dtype} {image.shape}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def show_png(target: widgets.Image, image: np.ndarray) -> None:
    """Show a ``uint8`` image in an Image widget at its pixel width, never wider than the output.

    Only the width is fixed: in an output narrower than the picture it shrinks with its aspect
    kept (a fixed height would squeeze it sideways).
    """
    target.value = png_bytes(image)
    target.layout.display = None  # hidden while empty: browsers draw a broken-image icon for no data
    target.layout.width = f"{image.shape[1]}px"
    target.layout.max_width = FIT_IN_ROW
    target.layout.height = "auto"


class ImageStatus(RefusesWhenClosed, traitlets.HasTraits):
    """Mixin: an image area and a status line where errors are shown, never only logged.

    The picture on screen always belongs to the settings the view shows: an error that leaves
    it behind (a failed update) takes it away (:meth:`show_error`), and so does a state with
    nothing to show (:meth:`clear_image`), each saying why in the status line. A closed view
    refuses new settings (:meth:`_refuse_when_closed`, called by the views' validators).

    Traits:
        status: the status text.
        error: the status is an error (shown in red).
        image_shape: shape of the image shown, ``()`` while none is (read-only).

    Properties (read-only, the picture on screen):
        png: its PNG bytes, ``b""`` while none is shown.
        image: it as an (H, W, 3) ``uint8`` array, ``None`` while none is shown.
    """

    status = traitlets.Unicode("")
    error = traitlets.Bool(False)
    image_shape = traitlets.Tuple((), read_only=True)

    def _make_image_parts(self) -> None:
        self._closed = False
        self._image = widgets.Image(format="png", layout=widgets.Layout(display="none"))
        self._status = widgets.HTML()
        self.observe(self._show_status, names=["status", "error"])

    @property
    def png(self) -> bytes:
        """The PNG bytes of the picture shown, ``b""`` while none is (read-only: a copy)."""
        return bytes(self._image.value)

    @property
    def image(self) -> np.ndarray | None:
        """The picture shown, decoded from :attr:`png` as an (H, W, 3) ``uint8`` array (grey
        pictures are repeated over the three channels); ``None`` while none is shown. A new
        array each time: changing it changes nothing on screen."""
        data = self.png
        if not data:
            return None
        with Image.open(io.BytesIO(data)) as picture:
            return np.asarray(picture.convert("RGB"), dtype=np.uint8).copy()

    def _show_status(self, change: object = None) -> None:
        colour = ERROR_COLOUR if self.error else "inherit"
        self._status.value = wrapped_text(f'<span style="color:{colour}">{html.escape(self.status)}</span>')

    def show_image(self, image: np.ndarray, status: str = "") -> None:
        """Display a ``uint8`` image at its pixel size, with an optional status line."""
        show_png(self._image, image)
        self.set_trait("image_shape", tuple(int(s) for s in image.shape))
        self.error = False
        self.status = status

    def show_error(self, message: str, *, keep_image: bool = False) -> None:
        """Show ``message`` as an error in the status line.

        The picture (whatever the settings that failed would have changed, see
        :meth:`_clear_stale`) is taken away, since it no longer matches them, unless
        ``keep_image``: for an error that leaves it current (a refused value, which changed
        nothing, or a picture drawn in part, whose status says what is missing).
        """
        if not keep_image:
            self._clear_stale()
        self.error = True
        self.status = message

    def clear_image(self, status: str) -> None:
        """Show no picture, with ``status`` saying why (a state with nothing to show)."""
        self._clear_stale()
        self.error = False
        self.status = status

    def _clear_stale(self) -> None:
        """Take away what a failed or empty state leaves behind: the picture."""
        self._image.value = b""
        self._image.layout.display = "none"  # no broken-image icon for no data
        self.set_trait("image_shape", ())

    def _report_refusals(self, parts: dict[str, RefusesBrowserValues]) -> None:
        """Send the browser values the controls ``{what they set: control}`` refuse to the status
        line (see :class:`~cnnwidgets.widgets._base.RefusesBrowserValues`), instead of out of
        the comm handler."""
        for what, part in parts.items():
            part.on_refused = functools.partial(self._refused, what)

    def _refused(self, what: str, names: str, exc: BaseException) -> None:
        # nothing changed, so the picture still matches what the controls show (set back)
        self.show_error(f"{what}: not changed ({exc})", keep_image=True)

    def close(self) -> None:
        """Close the view: its controller (``view.controller``, which releases a probe it made)
        and every widget inside it. A closed view refuses new settings."""
        controller = getattr(self, "controller", None)
        if controller is not None and callable(getattr(controller, "close", None)):
            controller.close()
        self._closed = True
        close_parts(self)  # type: ignore[arg-type]
        super().close()  # type: ignore[misc]
