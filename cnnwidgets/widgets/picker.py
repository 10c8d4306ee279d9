"""Image picker: shipped sample images and file upload in one drop-down."""

from __future__ import annotations

from collections.abc import Sequence

import ipywidgets as w
import traitlets as t

__all__ = ["ImagePicker"]

_UPLOAD_SUFFIX = " (uploaded)"


class ImagePicker(w.HBox):
    """A drop-down of image names plus an upload button; an upload becomes a new entry and is selected.

    Traits:
        value: the selected entry (a sample name, or ``"<file> (uploaded)"``).

    The bytes of an uploaded entry are available from :meth:`data_for`; samples have none.
    """

    value = t.Unicode("")

    def __init__(self, names: Sequence[str] = (), value: str | None = None, **kwargs) -> None:
        self._uploads: dict[str, bytes] = {}
        self._replacing_options = False
        self.dropdown = w.Dropdown(options=list(names), description="image", layout=w.Layout(width="220px"))
        self.upload = w.FileUpload(accept="image/*", multiple=False, description="upload")
        super().__init__([self.dropdown, self.upload], **kwargs)
        if value is not None:
            self.dropdown.value = value
        self.value = self.dropdown.value or ""
        self.dropdown.observe(self._on_dropdown, names="value")
        self.upload.observe(self._on_upload, names="value")

    def _on_dropdown(self, change) -> None:
        if not self._replacing_options:
            self.value = change["new"] or ""

    def _on_upload(self, change) -> None:
        files = change["new"]
        if not files:
            return
        item = files[0]
        self.upload.value = ()  # so that uploading the same file again is a change too
        self.add_upload(str(item["name"]), bytes(item["content"]))

    def add_upload(self, name: str, data: bytes) -> str:
        """Add an uploaded file as an entry and select it; returns the entry's name."""
        entry = f"{name}{_UPLOAD_SUFFIX}"
        serial = 2
        while entry in self._uploads:
            entry = f"{name}{_UPLOAD_SUFFIX[:-1]} {serial})"
            serial += 1
        self._uploads[entry] = data
        self._replacing_options = True  # new options reset the selection: not a user's choice
        try:
            self.dropdown.options = [*self.dropdown.options, entry]
        finally:
            self._replacing_options = False
        self.dropdown.value = entry  # fires _on_dropdown -> value
        return entry

    def data_for(self, entry: str) -> bytes | None:
        """The uploaded bytes of ``entry``, or None for a sample."""
        return self._uploads.get(entry)

    @property
    def names(self) -> list[str]:
        return list(self.dropdown.options)
