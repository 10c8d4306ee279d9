"""A file upload button that takes files of any size the widget allows, in pieces."""

from __future__ import annotations

import math
from collections.abc import Callable

import anywidget
import traitlets as t
from ipywidgets import CallbackDispatcher

from cnnwidgets.widgets._base import CSS, BrowserSetsOnly, esm

__all__ = ["UploadButton"]

#: Files larger than this are refused in the browser, with the reason, unless ``max_bytes`` says otherwise.
DEFAULT_MAX_BYTES = 50 * 2**20


def _size_text(size: int, *, up: bool) -> str:
    """``size`` bytes in MB (or kB below 1 MB), rounded up (a file's size) or down (a limit), so
    that a file just over the limit never reads as the limit itself."""
    unit, scale, digits = ("MB", 2**20, 10) if size >= 2**20 else ("kB", 2**10, 1)
    value = (math.ceil if up else math.floor)(size / scale * digits) / digits
    return f"{value:.1f} {unit}" if digits == 10 else f"{value:.0f} {unit}"


def uploaded_bytes(name: object, data: object) -> bytes:
    """``data`` of an uploaded file named ``name``, as bytes.

    Raises:
        ValueError: for a name that is not a non-empty string, or data that is not bytes (``bytes``,
            ``bytearray`` or ``memoryview``).
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"an uploaded file needs a non-empty name, got {name!r:.60}")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ValueError(f"an uploaded file's data must be bytes, got {type(data).__name__}")
    return bytes(data)


def _byte_count(value: object) -> int | None:
    """A size or an offset as the browser sends it (a JSON number, ``3.0`` for 3) as an int of
    bytes, or None where it is none: negative, a fraction, a bool, not a number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        return None
    return int(value) if value >= 0 else None


class UploadButton(BrowserSetsOnly, anywidget.AnyWidget):
    """A button that uploads one file chosen in the browser to the kernel.

    The browser sends the file in pieces of 1 MiB (the Jupyter server drops a single message
    over its websocket limit, 10 MiB by default, and the upload would end without a word). The
    kernel acknowledges each piece before the browser sends the next, and the button shows the
    share that has arrived. The button shows no file count, and the same file can be uploaded
    again.

    Handlers registered with :meth:`on_file` receive ``(name, data)`` for each complete file;
    handlers registered with :meth:`on_problem` receive a sentence saying why a file did not
    arrive (larger than :attr:`max_bytes`, or the browser could not read it).

    Traits:
        label: the button's text.
        accept: the file types offered by the browser's file dialog (``"image/*"``, ``".png"``...).
        hint: the button's tooltip (also its accessible description). Not named ``tooltip``:
            ipywidgets' views read that trait together with a ``description`` this widget lacks.
        max_bytes: the largest file accepted.

    The browser sets none of these traits (a value it sends is refused and the kernel's sent
    back), and a message it sends that is not one the button understands is ignored. A piece
    without a size and an offset in whole bytes ends its file's upload, which is reported as
    one that did not arrive.

    Keyword arguments (``**kwargs``) are initial trait values: those above, and ipywidgets' own,
    such as ``layout``.
    """

    _esm = esm("upload.js")
    _css = CSS

    label = t.Unicode("upload").tag(sync=True)
    accept = t.Unicode("").tag(sync=True)
    hint = t.Unicode("").tag(sync=True)
    max_bytes = t.Int(DEFAULT_MAX_BYTES, min=1).tag(sync=True)

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._file_handlers = CallbackDispatcher()
        self._problem_handlers = CallbackDispatcher()
        self._partial: dict | None = None  # the file arriving: id, name, size, pieces, received
        self._dropped: object = None  # the id of a file given up on: its later pieces are ignored
        self.on_msg(self._on_message)

    def on_file(self, callback: Callable[[str, bytes], object], remove: bool = False) -> None:
        """Call ``callback(name, data)`` for every file uploaded (``remove=True`` stops it)."""
        self._file_handlers.register_callback(callback, remove=remove)

    def on_problem(self, callback: Callable[[str], object], remove: bool = False) -> None:
        """Call ``callback(message)`` for every file that could not be uploaded (``remove=True`` stops it)."""
        self._problem_handlers.register_callback(callback, remove=remove)

    def upload(self, name: str, data: bytes) -> None:
        """Do what a finished upload of ``data`` under the file name ``name`` does in the browser.

        Raises:
            ValueError: for a name that is not a non-empty string, or data that is not bytes.
        """
        data = uploaded_bytes(name, data)
        if len(data) > self.max_bytes:
            self._problem(self._too_large(name, len(data)))
            return
        self._file_handlers(name, data)

    def _too_large(self, name: str, size: int) -> str:
        return (f"{name} is {_size_text(size, up=True)}; files up to {_size_text(self.max_bytes, up=False)} "
                "can be uploaded here")

    def _problem(self, message: str) -> None:
        self._problem_handlers(message)

    def _on_message(self, _widget: object, content: object, buffers: list) -> None:
        if not isinstance(content, dict):
            return
        kind, name = content.get("kind"), content.get("name")
        if not isinstance(name, str) or not name:
            name = "the file"
        if kind == "refused":
            self._partial = None
            size = _byte_count(content.get("size"))
            if size is not None and size > self.max_bytes:
                self._problem(self._too_large(name, size))
            else:  # a size the browser did not say, or the limit of another page
                self._problem(f"{name} was refused as too large; files up to "
                              f"{_size_text(self.max_bytes, up=False)} can be uploaded here")
        elif kind == "failed":
            self._partial = None
            self._problem(f"the browser could not read {name}: {content.get('message', 'unknown error')}")
        elif kind == "piece":
            self._on_piece(content, name, buffers)

    def _on_piece(self, content: dict, name: str, buffers: list) -> None:
        size, offset = _byte_count(content.get("size")), _byte_count(content.get("offset"))
        upload_id = content.get("id")
        piece = bytes(buffers[0]) if buffers else b""
        partial = self._partial
        if upload_id is not None and upload_id == self._dropped:
            return  # the rest of a file already reported as not arrived
        if size is None or offset is None:
            if partial is not None and partial["id"] == upload_id:
                self._partial = None  # that file's upload ends; another file's arriving goes on
            self._dropped = upload_id
            self.send({"kind": "stop", "id": upload_id})
            self._problem(f"{name} arrived broken (a piece without its size and offset in bytes); please upload "
                          "it again")
            return
        if offset == 0:
            partial = self._partial = {"id": upload_id, "name": name, "size": size, "pieces": [], "received": 0}
        if partial is None or partial["id"] != upload_id or offset != partial["received"] or size > self.max_bytes:
            self._partial = None
            self._dropped = upload_id
            self.send({"kind": "stop", "id": upload_id})  # the browser sends no more of it
            if size > self.max_bytes:
                self._problem(self._too_large(name, size))
            else:
                self._problem(f"{name} arrived incomplete (a piece went missing); please upload it again")
            return
        partial["pieces"].append(piece)
        partial["received"] += len(piece)
        self.send({"kind": "ack", "id": upload_id, "received": partial["received"]})  # send the next piece
        if partial["received"] >= partial["size"]:
            self._partial = None
            if partial["received"] != partial["size"]:
                self._problem(f"{name} arrived with {partial['received']} bytes instead of {partial['size']}; "
                              "please upload it again")
                return
            self._file_handlers(name, b"".join(partial["pieces"]))
