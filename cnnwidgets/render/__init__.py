"""Rendering: numpy arrays in, uint8 RGB images (and encoded bytes) out. No torch here.

* :mod:`~cnnwidgets.render.colormaps` - lookup tables, sequential and diverging.
* the module ``normalize`` - display ranges, per-channel statistics, dead channels, sort order.
  Its names are exported here; the attribute ``cnnwidgets.render.normalize`` is its function
  :func:`normalize`, not the module (``from cnnwidgets.render.normalize import value_ranges`` works).
* :mod:`~cnnwidgets.render.grid` - all channels as one mosaic with pixel -> channel geometry.
* :mod:`~cnnwidgets.render.resample` - integer up/down scaling, resizing, feature map -> input pixels.
* :mod:`~cnnwidgets.render.overlay` - single-channel views, heatmap overlays, panels.
* :mod:`~cnnwidgets.render.encode` - JPEG/PNG bytes.
* :mod:`~cnnwidgets.render.attribution` - attribution maps (saliency, guided backprop, CAM) as colours and overlays.
* :mod:`~cnnwidgets.render.occlusion` - occlusion grids as per-pixel maps and overlays.
* :mod:`~cnnwidgets.render.kernels` - convolution kernels as tiles.
* :mod:`~cnnwidgets.render.figures` - matplotlib figures of the lessons (top-k patches, evolution, curves).
"""

from cnnwidgets.render.colormaps import (
    DIVERGING,
    SEQUENTIAL,
    apply_colormap,
    colorize,
    colormap_names,
    colormap_strip,
    get_lut,
    quantize,
)
from cnnwidgets.render.encode import encode_image, encode_jpeg, encode_png
from cnnwidgets.render.grid import GridLayout, GridPainter, feature_grid, grid_layout, mosaic
from cnnwidgets.render.normalize import (
    NORM_MODES,
    ChannelStats,
    activation_order,
    channel_stats,
    dead_channel_mask,
    normalize,
    symmetric_ranges,
    value_ranges,
)
from cnnwidgets.render.overlay import blend, channel_image, draw_rect, hstack, overlay_heatmap, resize_image
from cnnwidgets.render.resample import downscale, map_to_input, resize, upscale

__all__ = [
    "DIVERGING",
    "NORM_MODES",
    "SEQUENTIAL",
    "ChannelStats",
    "GridLayout",
    "GridPainter",
    "activation_order",
    "apply_colormap",
    "blend",
    "channel_image",
    "channel_stats",
    "colorize",
    "colormap_names",
    "colormap_strip",
    "dead_channel_mask",
    "downscale",
    "draw_rect",
    "encode_image",
    "encode_jpeg",
    "encode_png",
    "feature_grid",
    "get_lut",
    "grid_layout",
    "hstack",
    "map_to_input",
    "mosaic",
    "normalize",
    "overlay_heatmap",
    "quantize",
    "resize",
    "resize_image",
    "symmetric_ranges",
    "upscale",
    "value_ranges",
]
