"""Widgets: views whose state is traitlets. They receive encoded images and plain data; no torch here.

* :class:`OccluderCanvas` - image with a draggable, resizable box (moves in the browser).
* :class:`TileGrid` - feature-map mosaic; hover statistics and click-to-select in the browser.
* :class:`ScoreBars` - top-k class probabilities with deltas; click picks the target class.
* :class:`GroupedSelect` - drop-down with grouped options (layers by block).
* :class:`DisplayControls`, :class:`OccluderControls` - control groups with traitlet state.
* :class:`ImagePicker` - samples and uploads; :class:`UploadButton` - a file of any allowed size,
  sent in pieces. :class:`StatusLine` - errors made visible.
* :func:`wrapping_row` - the layout of a row of controls that wraps in a narrow output.

The browser-side widgets work from the keyboard too (see each class for its keys), and keys typed
in them, or anywhere in an explorer around them, run no JupyterLab shortcut.
"""

from cnnwidgets.widgets.controls import FILL_LABELS, FILLS, DisplayControls, OccluderControls, device_dropdown, wrapping_row
from cnnwidgets.widgets.occluder import OccluderCanvas, clamp_box
from cnnwidgets.widgets.picker import ImagePicker
from cnnwidgets.widgets.scores import ScoreBars, score_rows
from cnnwidgets.widgets.select import GroupedSelect
from cnnwidgets.widgets.status import StatusLine
from cnnwidgets.widgets.tilegrid import TileGrid
from cnnwidgets.widgets.upload import UploadButton

__all__ = [
    "FILLS",
    "FILL_LABELS",
    "DisplayControls",
    "GroupedSelect",
    "ImagePicker",
    "OccluderCanvas",
    "OccluderControls",
    "ScoreBars",
    "StatusLine",
    "TileGrid",
    "UploadButton",
    "clamp_box",
    "device_dropdown",
    "score_rows",
    "wrapping_row",
]
