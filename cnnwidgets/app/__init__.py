"""Controllers that wire widget state to computation. The explorer lives here.

* :func:`explore` / :class:`Explorer` - the live explorer widget.
* :class:`Controller` - owns the Probe and one worker thread; newest state wins, stale work is dropped.
* :func:`close_all` - close every explorer and view still open (running a notebook cell again
  closes what its earlier runs opened, see :mod:`cnnwidgets.app.cells`).
* :func:`resolve` - pure map from :class:`ExplorerState` to the compute and render requests.
"""

from cnnwidgets.app.cells import close_all, open_widgets
from cnnwidgets.app.controller import Controller, Stats
from cnnwidgets.app.explorer import Explorer, default_layer, explore, layer_items
from cnnwidgets.app.inputs import ImageInput
from cnnwidgets.app.state import ComputeRequest, ExplorerState, RenderRequest, Request, resolve

__all__ = [
    "ComputeRequest",
    "Controller",
    "Explorer",
    "ExplorerState",
    "ImageInput",
    "RenderRequest",
    "Request",
    "Stats",
    "close_all",
    "default_layer",
    "explore",
    "layer_items",
    "open_widgets",
    "resolve",
]
