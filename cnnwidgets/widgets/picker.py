"""Image picker: shipped sample images and file upload in one drop-down."""

from __future__ import annotations

import re
from collections.abc import Sequence

import ipywidgets as w
import traitlets as t

from cnnwidgets.widgets._base import CheckedDropdown
from cnnwidgets.widgets.controls import FIT_IN_ROW, wrapping_row
from cnnwidgets.widgets.upload import UploadButton, uploaded_bytes

__all__ = ["ImagePicker"]

_UPLOAD_SUFFIX = " (uploaded)"

#: The upload button's tooltip, which is also its accessible description.
_UPLOAD_TOOLTIP = "upload an image file (PNG, JPEG, or another format Pillow reads)"


class ImagePicker(w.HBox):
    """A drop-down of image names plus an upload button; an upload becomes a new entry and is selected.

    Traits:
        value: the selected entry (a sample name, or ``"<file> (uploaded)"``); always one of
            :attr:`names` (empty only while there is none), and always the entry the drop-down shows.

    The bytes of an uploaded entry are available from :meth:`data_for`; samples have none. The
    same file uploaded again selects its entry; the picker keeps the last :attr:`MAX_UPLOADS`
    uploads (older ones leave the menu with their bytes). A file that does not arrive (too
    large, unreadable) is reported to the handlers of :meth:`on_upload_problem`.

    Args:
        names: the entries offered at first (sample names).
        value: the entry selected at first (default: the first of ``names``).
        **kwargs: ipywidgets' ``HBox`` options, such as ``layout``.
    """

    #: How many uploaded files are kept (their bytes stay in memory while offered).
    MAX_UPLOADS = 8

    value = t.Unicode("")
    #: Counts uploads of a file that is the selected entry already: nothing new to load, but the
    #: user acted (a view may want to drop an error about an earlier, failed upload).
    reuploads = t.Int(0)

    def __init__(self, names: Sequence[str] = (), value: str | None = None, **kwargs) -> None:
        self._uploads: dict[str, bytes] = {}
        self._replacing_options = False
        self.dropdown = CheckedDropdown(options=list(names), description="image", layout=w.Layout(width="260px"))
        self.upload = UploadButton(accept="image/*", label="upload", hint=_UPLOAD_TOOLTIP)
        self.dropdown.layout.max_width = FIT_IN_ROW
        kwargs.setdefault("layout", wrapping_row())
        super().__init__([self.dropdown, self.upload], **kwargs)
        if value is not None:
            self.dropdown.value = value
        self.value = self.dropdown.value or ""
        self.dropdown.observe(self._on_dropdown, names="value")
        self.upload.on_file(self.add_upload)

    def on_upload_problem(self, callback, remove: bool = False) -> None:
        """Call ``callback(message)`` when a file chosen for upload did not arrive, and why
        (``remove=True`` stops it)."""
        self.upload.on_problem(callback, remove=remove)

    @t.validate("value")
    def _check_value(self, proposal):
        value = proposal["value"]
        names = self.names
        if value not in names and (names or value):
            raise t.TraitError(f"unknown image entry {value!r}; the picker offers: {', '.join(map(repr, names))}")
        return value

    @t.observe("value")
    def _show_value(self, change) -> None:
        if change["new"] and self.dropdown.value != change["new"]:
            self.dropdown.value = change["new"]

    def _on_dropdown(self, change) -> None:
        if not self._replacing_options:
            self.value = change["new"] or ""

    def add_entry(self, name: str) -> None:
        """Offer ``name`` in the drop-down (kept if already offered); the selection does not change.

        Raises:
            ValueError: for a name that is not a non-empty string.
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"an image entry needs a non-empty name, got {name!r}")
        if name not in self.dropdown.options:
            self._set_options([*self.dropdown.options, name])

    def remove_entry(self, name: str) -> None:
        """Stop offering ``name`` (an uploaded entry's bytes are dropped too).

        Raises:
            ValueError: for a name not offered, or the selected entry (select another first).
        """
        if name not in self.dropdown.options:
            raise ValueError(f"the picker offers no entry {name!r}")
        if name == self.value:
            raise ValueError(f"{name!r} is the selected entry; select another one before removing it")
        self._uploads.pop(name, None)
        self._set_options([option for option in self.dropdown.options if option != name])

    def _set_options(self, options: list[str]) -> None:
        self._replacing_options = True  # new options reset the selection: not a user's choice
        try:
            self.dropdown.options = options
            if self.value:
                self.dropdown.value = self.value
        finally:
            self._replacing_options = False

    def add_upload(self, name: str, data: bytes) -> str:
        """Add an uploaded file (``data``, the bytes of a file called ``name``) as an entry and select it;
        returns the entry's name.

        A file with the same name and bytes as one still offered selects that entry again; a name
        already offered for something else gets a number (``"cat.png (uploaded 2)"``). Past
        :attr:`MAX_UPLOADS` uploads, the oldest ones are dropped (not the entry selected before).

        Raises:
            ValueError: for a name that is not a non-empty string, or data that is not bytes.
        """
        data = uploaded_bytes(name, data)
        entry = f"{name}{_UPLOAD_SUFFIX}"
        numbered = re.compile(re.escape(f"{name}{_UPLOAD_SUFFIX[:-1]} ") + r"\d+\)")
        for offered, held in self._uploads.items():
            if held == data and (offered == entry or numbered.fullmatch(offered)):
                if self.dropdown.value == offered:
                    self.reuploads += 1
                self.dropdown.value = offered  # the same file again
                return offered
        serial = 2
        # an entry of that name that is no upload of these bytes (another file's, a sample's, an image
        # given in Python) is not taken over: the upload gets the next free name
        while entry in self._uploads or entry in self.dropdown.options:
            entry = f"{name}{_UPLOAD_SUFFIX[:-1]} {serial})"
            serial += 1
        self._uploads[entry] = data
        # dropped before the new entry is selected, and never the entry selected now: if the new
        # file cannot be shown, the selection goes back to that one
        older = [e for e in self._uploads if e not in (entry, self.value)]
        for old in older[: max(0, len(self._uploads) - self.MAX_UPLOADS)]:
            self.remove_entry(old)
        self._set_options([*self.dropdown.options, entry])
        self.dropdown.value = entry  # fires _on_dropdown -> value
        return entry

    def forget_upload(self, entry: str) -> None:
        """Drop the uploaded bytes of ``entry`` and keep the entry, as a name whose image its owner now
        holds (an image given in Python under that name). The same file uploaded again then gets
        an entry of its own. Nothing happens for an entry that is no upload."""
        self._uploads.pop(entry, None)

    def data_for(self, entry: str) -> bytes | None:
        """The uploaded bytes of ``entry``, or None for a sample."""
        return self._uploads.get(entry)

    @property
    def names(self) -> list[str]:
        """Every entry offered, in display order."""
        return list(self.dropdown.options)
