"""Figures in the layouts of Zeiler & Fergus (2014), from numpy arrays (no torch).

* :func:`topk_figure` - Fig. 2: per feature map, a 3 x 3 grid of its top activations
  projected to pixel space next to a 3 x 3 grid of the corresponding image patches.
* :func:`evolution_figure` - Fig. 4: one block per layer, a row per feature map, a column per
  epoch, each cell the projection of the strongest activation at that epoch.
* :func:`invariance_figure` - Fig. 5 (transposed, one column per transformation): rows of
  feature distance at each chosen layer, then the true-class probability, against the
  transformation parameter; optionally a first row of example images.
* :func:`part_boxes_figure` - the images of the correspondence analysis (section 4.3) with
  their part boxes.

Matplotlib figures are built with :class:`matplotlib.figure.Figure` (no pyplot state), so
they are not shown twice in notebooks and are freed with their last reference. Widgets get
``uint8`` images instead: :func:`topk_mosaic`, :func:`evolution_mosaic`, :func:`draw_boxes` and
:func:`figure_to_array`.

Display conventions: images are (H, W, 3) floats in [0, 1] or ``uint8``. Patch pixels
outside the source image (see ``valid`` masks) are drawn in :data:`OUTSIDE` grey.
Projections are signed; :func:`projection_to_rgb` maps them to ``0.5 + 0.5 * p / max|p|`` per
projection (zero is mid-gray), the contrast normalisation of the paper's figures.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

__all__ = [
    "MAX_FIGURE_WIDTH",
    "OUTSIDE",
    "ROW_LABEL_CHARS",
    "draw_boxes",
    "evolution_figure",
    "evolution_mosaic",
    "figure_to_array",
    "image_to_rgb",
    "invariance_figure",
    "part_boxes_figure",
    "part_colour",
    "projection_to_rgb",
    "tile_grid",
    "topk_figure",
    "topk_mosaic",
]

#: Grey level (0..1) drawn where a patch lies outside its source image.
OUTSIDE = 0.8

#: Widest figure drawn, in inches: 1,000 pixels at the notebook's 100 dpi, about the width of a
#: JupyterLab output. A wider figure is shrunk to fit, and its labels become unreadable.
MAX_FIGURE_WIDTH = 10.0

_PART_COLOURS = np.array(
    [[228, 26, 28], [55, 126, 184], [77, 175, 74], [152, 78, 163], [255, 127, 0], [166, 86, 40], [247, 129, 191]],
    dtype=np.uint8,
)


def part_colour(index: int) -> tuple[int, int, int]:
    """The RGB colour (0..255) of the ``index``-th part in box drawings.

    The one source of part colours: :func:`part_boxes_figure`, :func:`draw_boxes` and the
    correspondence view all take a part's colour from here, by the part's position among the
    parts shown, so a part drawn from the same parts has the same colour in each. The colours
    repeat after the seventh part.
    """
    colour = _PART_COLOURS[index % len(_PART_COLOURS)]
    return int(colour[0]), int(colour[1]), int(colour[2])


# ---------------------------------------------------------------------------- conversions
def _chw_to_hwc(pixels: np.ndarray) -> np.ndarray:
    array = np.asarray(pixels, dtype=np.float32)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or array.shape[0] not in (1, 3):
        raise ValueError(f"expected an image (C, H, W) with 1 or 3 channels, or (H, W); got shape {array.shape}")
    array = array.transpose(1, 2, 0)
    return np.repeat(array, 3, axis=2) if array.shape[2] == 1 else array


def _check_valid(valid: np.ndarray | None, rgb: np.ndarray) -> None:
    """Refuse a ``valid`` mask whose shape is not the (H, W) of the image ``rgb`` (H, W, 3)."""
    if valid is not None and np.shape(valid) != rgb.shape[:2]:
        raise ValueError(f"valid mask {np.shape(valid)} does not match the image {rgb.shape[:2]}")


def _mask_outside(rgb: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    if valid is None:
        return rgb
    valid = np.asarray(valid, dtype=bool)
    _check_valid(valid, rgb)
    out = rgb.copy()
    out[~valid] = OUTSIDE
    return out


def image_to_rgb(
    pixels: np.ndarray,
    valid: np.ndarray | None = None,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> np.ndarray:
    """A preprocessed image or patch (C, H, W) -> displayable (H, W, 3) floats in [0, 1].

    With ``mean`` and ``std`` the normalisation is undone (``x * std + mean``); without, the
    values are kept when they already lie in [0, 1] and otherwise stretched to [0, 1] (min-max
    over the valid pixels' finite values). Pixels outside ``valid`` become :data:`OUTSIDE` grey;
    NaN pixels are black and infinite ones black or white (by sign), whatever the others.

    Raises:
        ValueError: for an image of another shape, or a ``valid`` mask of another size.
    """
    rgb = _chw_to_hwc(pixels)
    _check_valid(valid, rgb)
    if mean is not None or std is not None:
        m = np.asarray(mean if mean is not None else 0.0, dtype=np.float32).reshape(1, 1, -1)
        s = np.asarray(std if std is not None else 1.0, dtype=np.float32).reshape(1, 1, -1)
        rgb = rgb * s + m
    else:
        inside = rgb if valid is None else rgb[np.asarray(valid, dtype=bool)]
        inside = inside[np.isfinite(inside)]
        low, high = (float(inside.min()), float(inside.max())) if inside.size else (0.0, 1.0)
        if not (low >= 0.0 and high <= 1.0):
            with np.errstate(invalid="ignore", over="ignore"):  # infinite pixels: said below
                rgb = (rgb - low) / (high - low) if high > low else np.where(np.isfinite(rgb), 0.5, rgb)
    rgb = np.clip(np.nan_to_num(rgb, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)
    return _mask_outside(rgb, valid)


def projection_to_rgb(pixels: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """A signed projection (C, H, W) -> (H, W, 3) in [0, 1]: ``0.5 + 0.5 * p / max|p|`` (the
    largest finite ``|p|``); NaN values are mid-gray (as 0), infinite ones black or white (by sign).

    Raises:
        ValueError: for a projection of another shape, or a ``valid`` mask of another size.
    """
    rgb = _chw_to_hwc(pixels)
    _check_valid(valid, rgb)
    finite = np.abs(rgb[np.isfinite(rgb)])
    scale = float(finite.max()) if finite.size else 0.0
    with np.errstate(invalid="ignore", over="ignore"):  # infinite values: black or white below
        rgb = 0.5 + 0.5 * rgb / scale if scale > 0 else np.where(np.isfinite(rgb), 0.5, rgb)
    rgb = np.nan_to_num(rgb, nan=0.5, posinf=1.0, neginf=0.0)
    return _mask_outside(np.clip(rgb, 0.0, 1.0), valid)


def _as_float_rgb(image: np.ndarray) -> np.ndarray:
    array = np.asarray(image)
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    return np.clip(array.astype(np.float32), 0.0, 1.0)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.round(np.clip(_as_float_rgb(image), 0.0, 1.0) * 255).astype(np.uint8)


def tile_grid(tiles: Sequence[np.ndarray] | np.ndarray, columns: int, *, pad: int = 1, background: float = 1.0,
              rows: int | None = None) -> np.ndarray:
    """Arrange (h, w, 3) tiles of one size row by row; missing tiles stay ``background``.

    Returns:
        float32 (rows * (h + pad) - pad, columns * (w + pad) - pad, 3).

    Raises:
        ValueError: for tiles of different sizes or no way to know the tile size.
    """
    tiles = [_as_float_rgb(t) for t in tiles]
    if not tiles:
        raise ValueError("no tiles to arrange")
    h, w = tiles[0].shape[:2]
    if any(t.shape != (h, w, 3) for t in tiles):
        raise ValueError(f"all tiles must be ({h}, {w}, 3); got {sorted({t.shape for t in tiles})}")
    rows = rows if rows is not None else -(-len(tiles) // columns)
    out = np.full((rows * (h + pad) - pad, columns * (w + pad) - pad, 3), background, dtype=np.float32)
    for i, tile in enumerate(tiles[: rows * columns]):
        r, c = divmod(i, columns)
        out[r * (h + pad):r * (h + pad) + h, c * (w + pad):c * (w + pad) + w] = tile
    return out


def _upscale(image: np.ndarray, factor: int) -> np.ndarray:
    return image.repeat(factor, axis=0).repeat(factor, axis=1) if factor > 1 else image


# ---------------------------------------------------------------------------- Fig. 2
def _topk_panel(projections: np.ndarray | None, patches: np.ndarray, grid: int, tile: int | None) -> np.ndarray:
    patches = [_as_float_rgb(p) for p in patches]
    if not patches:
        raise ValueError("a panel needs at least one patch")
    h, w = patches[0].shape[:2]
    factor = max(1, -(-tile // max(h, w))) if tile else 1
    patch_grid = tile_grid([_upscale(p, factor) for p in patches], grid, rows=grid, pad=max(1, factor // 2))
    if projections is None:
        return patch_grid
    proj_grid = tile_grid([_upscale(_as_float_rgb(p), factor) for p in projections], grid, rows=grid,
                          pad=max(1, factor // 2))
    gap = np.ones((patch_grid.shape[0], max(4, patch_grid.shape[1] // 20), 3), dtype=np.float32)
    return np.concatenate([proj_grid, gap, patch_grid], axis=1)


def topk_mosaic(projections: np.ndarray | None, patches: np.ndarray, *, grid: int = 3, tile: int = 64) -> np.ndarray:
    """One feature map in the layout of Fig. 2, as ``uint8``: projections grid | patches grid.

    Args:
        projections: (k, h, w, 3) displayable projections (see :func:`projection_to_rgb`) or
            ``None`` to show the patches only.
        patches: (k, h, w, 3) displayable patches, strongest first.
        grid: grid side (3 for the paper's top 9); extra entries are left out.
        tile: tiles are enlarged by an integer factor to at least this many pixels.

    Returns:
        uint8 (H, W, 3).
    """
    return _to_uint8(_topk_panel(projections, patches, grid, tile))


def topk_figure(
    panels: Sequence[tuple[str, np.ndarray | None, np.ndarray]],
    *,
    columns: int = 3,
    grid: int = 3,
    title: str | None = None,
    panel_size: float = 3.2,
) -> Figure:
    """Fig. 2 of the paper: for each feature map, its top activations projected to pixel
    space (left 3 x 3 grid) next to the corresponding image patches (right 3 x 3 grid).

    Args:
        panels: ``(title, projections (k, h, w, 3) or None, patches (k, h, w, 3))`` per feature map.
        columns: panels per row.
        grid: side of each grid.
        title: figure title.
        panel_size: inches per panel height (less where the row would be wider than
            :data:`MAX_FIGURE_WIDTH`).

    Raises:
        ValueError: no panels.
    """
    if not panels:
        raise ValueError("no panels to draw")
    columns = max(1, min(columns, len(panels)))
    rows = -(-len(panels) // columns)
    images = [_topk_panel(proj, patches, grid, None) for _, proj, patches in panels]
    aspect = max(img.shape[1] / img.shape[0] for img in images)
    panel_size = min(panel_size, MAX_FIGURE_WIDTH / (columns * aspect))
    fig = Figure(figsize=(columns * panel_size * aspect, rows * panel_size + (0.4 if title else 0)), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, (name, proj, _), image in zip(axes.flat, panels, images):
        ax.imshow(image, interpolation="nearest")
        ax.set_title(f"{name}\n{'projections | patches' if proj is not None else 'patches'}", fontsize=9)
    if title:
        fig.suptitle(title)
    return fig


# ---------------------------------------------------------------------------- Fig. 4
#: The longest row label :func:`evolution_figure` draws, in characters (a longer one is cut): a
#: class name such as "American Staffordshire terrier" would otherwise take the width of the cells.
ROW_LABEL_CHARS = 18


def _fit_label(label: str, most: int = ROW_LABEL_CHARS) -> str:
    """``label`` cut to ``most`` characters, its last one an ellipsis where something was cut."""
    label = " ".join(label.split())  # one line: a newline in a class name would stretch the row
    return label if len(label) <= most else label[: most - 1].rstrip() + "\u2026"


def _evolution_block(cells: np.ndarray | Sequence[Sequence[np.ndarray]], tile: int | None) -> np.ndarray:
    rows = [[_as_float_rgb(c) for c in row] for row in cells]
    h, w = rows[0][0].shape[:2]
    factor = max(1, -(-tile // max(h, w))) if tile else 1
    flat = [_upscale(c, factor) for row in rows for c in row]
    return tile_grid(flat, len(rows[0]), rows=len(rows), pad=max(1, factor // 4))


def evolution_mosaic(blocks: Mapping[str, np.ndarray], *, tile: int = 48, gap: int = 12) -> np.ndarray:
    """Fig. 4 as one ``uint8`` image: the layers' blocks stacked, each (channels x epochs) cells.

    Args:
        blocks: ``{layer: (channels, epochs, h, w, 3)}`` displayable cells.
        tile: cells are enlarged by an integer factor to at least this many pixels.
        gap: white pixels between blocks.
    """
    if not blocks:
        raise ValueError("no blocks to draw")
    images = [_evolution_block(cells, tile) for cells in blocks.values()]
    width = max(img.shape[1] for img in images)
    parts = []
    for img in images:
        padded = np.ones((img.shape[0], width, 3), dtype=np.float32)
        padded[:, : img.shape[1]] = img
        parts.extend([padded, np.ones((gap, width, 3), dtype=np.float32)])
    return _to_uint8(np.concatenate(parts[:-1], axis=0))


def evolution_figure(
    blocks: Mapping[str, np.ndarray],
    epochs: Sequence[int],
    channels: Mapping[str, Sequence[int]] | None = None,
    *,
    title: str | None = "Feature evolution during training",
    cell_inches: float = 0.7,
    unit: str = "epoch",
    row_labels: Mapping[str, Sequence[str]] | None = None,
) -> Figure:
    """Fig. 4 of the paper: a block per layer, a row per feature map, a column per epoch.

    Args:
        blocks: ``{layer: (channels, epochs, h, w, 3)}`` displayable cells (projections of the
            strongest activation, or patches).
        epochs: the column labels.
        channels: ``{layer: channel indices}`` for the row labels (``"ch 3"``).
        unit: what the column labels count (``"epoch"``, ``"step"``).
        title: figure title.
        cell_inches: size of one cell (less where the figure would be wider than :data:`MAX_FIGURE_WIDTH`).
        row_labels: ``{layer: one label per row}``, for the layers whose rows are named otherwise
            than by channel (the classes of a classifier layer: ``"3 koala"``); they take the
            place of ``channels``' labels there. A label longer than :data:`ROW_LABEL_CHARS`
            characters is cut to that length, ending in an ellipsis.

    Raises:
        ValueError: no blocks, a block whose number of columns differs from ``epochs``, or
            ``row_labels`` for a layer with another number of labels than its block has rows.
    """
    if not blocks:
        raise ValueError("no blocks to draw")
    for layer, cells in blocks.items():
        if len(cells[0]) != len(epochs):
            raise ValueError(f"block {layer!r} has {len(cells[0])} columns but {len(epochs)} epochs were given")
        if row_labels and layer in row_labels and len(row_labels[layer]) != len(cells):
            raise ValueError(f"row_labels has {len(row_labels[layer])} labels for block {layer!r}, which has "
                             f"{len(cells)} rows: give one label per row")
    heights = [len(cells) for cells in blocks.values()]
    cell_inches = min(cell_inches, (MAX_FIGURE_WIDTH - 1.2) / len(epochs))
    fig = Figure(
        figsize=(max(4.5, len(epochs) * cell_inches + 1.2), sum(heights) * cell_inches + 0.6 * len(blocks) + 0.5),
        layout="constrained",
    )
    axes = fig.subplots(len(blocks), 1, squeeze=False, height_ratios=heights)[:, 0]
    for ax, (layer, cells) in zip(axes, blocks.items()):
        image = _evolution_block(cells, None)
        ax.imshow(image, interpolation="nearest")
        h = (image.shape[0] + 1) / len(cells)
        w = (image.shape[1] + 1) / len(epochs)
        ax.set_xticks([(i + 0.5) * w - 1 for i in range(len(epochs))], [str(e) for e in epochs], fontsize=7)
        if row_labels and layer in row_labels:
            names = [_fit_label(str(label)) for label in row_labels[layer]]
        elif channels and channels.get(layer) is not None:
            names = [f"ch {c}" for c in channels[layer]]
        else:
            names = [str(i) for i in range(len(cells))]
        ax.set_yticks([(i + 0.5) * h - 1 for i in range(len(cells))], names, fontsize=7)
        ax.tick_params(length=0)
        for spine in ax.spines.values():
            spine.set_visible(False)
        ax.set_title(f"{layer}", fontsize=9, loc="left")
    axes[-1].set_xlabel(unit, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


# ---------------------------------------------------------------------------- Fig. 5
def invariance_figure(
    values: Mapping[str, np.ndarray],
    distances: Mapping[str, Mapping[str, np.ndarray]],
    probabilities: Mapping[str, np.ndarray],
    *,
    units: Mapping[str, str] | None = None,
    image_names: Sequence[str] | None = None,
    examples: Mapping[str, tuple[Sequence[float], np.ndarray]] | None = None,
    normalized: bool = False,
    title: str | None = None,
    marker: Mapping[str, float] | None = None,
) -> Figure:
    """Fig. 5 of the paper with one column per transformation (translation, rotation, scale):
    a row of feature distance per layer, then a row of true-class probability, one curve per image.

    Args:
        values: ``{transform: (V,) parameters}``.
        distances: ``{transform: {layer: (V, N)}}``.
        probabilities: ``{transform: (V, N)}``.
        units: ``{transform: unit}`` for the x labels.
        image_names: legend entries, one per image.
        examples: optional first row, ``{transform: (parameters shown, (m, h, w, 3) images)}``.
        normalized: label the distances as normalised.
        title: figure title.
        marker: ``{transform: parameter}``: a vertical line at that parameter in the curves of
            that transformation (the step a view shows); the line's label says it.

    Raises:
        ValueError: no transformations, mismatched shapes, or a marker for a transformation
            that is not drawn.
    """
    kinds = list(values)
    if not kinds:
        raise ValueError("no transformations to draw")
    marker = dict(marker or {})
    unknown = [kind for kind in marker if kind not in values]
    if unknown:
        raise ValueError(f"marker for {unknown[0]!r}, which is not drawn; the transformations are {kinds}")
    layers = list(distances[kinds[0]])
    rows = len(layers) + 1 + (1 if examples else 0)
    column = min(4.0, MAX_FIGURE_WIDTH / len(kinds))
    fig = Figure(figsize=(column * len(kinds), 0.6 * column * rows + (0.4 if title else 0)), layout="constrained")
    axes = fig.subplots(rows, len(kinds), squeeze=False)
    offset = 1 if examples else 0
    for col, kind in enumerate(kinds):
        x = np.asarray(values[kind], dtype=np.float64)
        if examples:
            ax = axes[0, col]
            shown, images = examples.get(kind, ((), np.zeros((0, 1, 1, 3))))
            if len(images):
                strip = tile_grid(list(images), len(images), pad=2)
                ax.imshow(strip, interpolation="nearest")
                w = (strip.shape[1] + 2) / len(images)
                ax.set_xticks([(i + 0.5) * w - 2 for i in range(len(images))], [f"{v:g}" for v in shown], fontsize=7)
                ax.set_yticks([])
            else:
                ax.set_axis_off()
            ax.set_title(kind, fontsize=10)
        for row, layer in enumerate(layers):
            ax = axes[row + offset, col]
            d = np.asarray(distances[kind][layer])
            if d.shape[0] != x.shape[0]:
                raise ValueError(f"{kind}/{layer}: {d.shape[0]} distances for {x.shape[0]} parameters")
            for n in range(d.shape[1]):
                ax.plot(x, d[:, n], marker=".", markersize=3, linewidth=1,
                        label=image_names[n] if image_names is not None else f"image {n}")
            if col == 0:  # once per row: the labels of the other columns ran into their neighbours
                ax.set_ylabel(f"{layer}\n" + ("normalised " if normalized else "") + "distance", fontsize=8)
            if row == 0 and not examples:
                ax.set_title(kind, fontsize=10)
            ax.grid(alpha=0.3)
        ax = axes[-1, col]
        p = np.asarray(probabilities[kind])
        for n in range(p.shape[1]):
            ax.plot(x, p[:, n], marker=".", markersize=3, linewidth=1,
                    label=image_names[n] if image_names is not None else f"image {n}")
        ax.set_ylim(-0.02, 1.02)
        if col == 0:
            ax.set_ylabel("P(true class)", fontsize=8)
        ax.set_xlabel(f"{kind} ({units[kind]})" if units and kind in units else kind, fontsize=8)
        ax.grid(alpha=0.3)
        if kind in marker:
            for curves in axes[offset:, col]:
                curves.axvline(float(marker[kind]), color="black", linestyle="--", linewidth=1, zorder=0)
            ax.annotate(f"shown: {float(marker[kind]):g}", xy=(float(marker[kind]), 0.0),
                        xycoords=("data", "axes fraction"), xytext=(3, 3), textcoords="offset points", fontsize=7)
    axes[-1, -1].legend(fontsize=7, loc="best")
    if title:
        fig.suptitle(title)
    return fig


# ---------------------------------------------------------------------------- section 4.3
def draw_boxes(image: np.ndarray, boxes: Mapping[str, Sequence[int]], *, width: int = 1,
               colours: Mapping[str, Sequence[int]] | None = None) -> np.ndarray:
    """Draw ``{name: (x0, y0, x1, y1)}`` box outlines on an (H, W, 3) image; returns ``uint8``.

    Boxes are half-open pixel ranges (columns x0..x1-1, rows y0..y1-1); parts outside the image
    are clipped. Colours follow the order of the names unless ``colours`` gives them.
    """
    out = _to_uint8(image).copy()
    height, wide = out.shape[:2]
    for i, (name, box) in enumerate(boxes.items()):
        colour = np.asarray(colours[name] if colours and name in colours else part_colour(i), dtype=np.uint8)
        x0, y0, x1, y1 = (int(v) for v in box)
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, wide), min(y1, height)
        if x1 <= x0 or y1 <= y0:
            continue
        t = max(1, min(width, (x1 - x0) // 2, (y1 - y0) // 2))
        out[y0:y0 + t, x0:x1] = colour
        out[y1 - t:y1, x0:x1] = colour
        out[y0:y1, x0:x0 + t] = colour
        out[y0:y1, x1 - t:x1] = colour
    return out


def part_boxes_figure(
    images: Sequence[np.ndarray] | np.ndarray,
    parts: Mapping[str, Sequence[Sequence[int]]],
    *,
    titles: Sequence[str] | None = None,
    image_inches: float = 2.2,
) -> Figure:
    """The images of a correspondence analysis with each part's box drawn (one colour per part,
    :func:`part_colour` of its position in ``parts``).

    Args:
        images: N displayable (H, W, 3) images.
        parts: ``{part: one (x0, y0, x1, y1) box per image}``.
        titles: one per image.
        image_inches: size of each image (less where the row would be wider than :data:`MAX_FIGURE_WIDTH`).

    Raises:
        ValueError: a part without one box per image.
    """
    from matplotlib.patches import Rectangle

    n = len(images)
    for part, boxes in parts.items():
        if len(boxes) != n:
            raise ValueError(f"part {part!r} has {len(boxes)} boxes for {n} images")
    image_inches = min(image_inches, MAX_FIGURE_WIDTH / n)
    fig = Figure(figsize=(image_inches * n, image_inches + 0.6), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    for i, ax in enumerate(axes):
        ax.imshow(_as_float_rgb(images[i]), interpolation="nearest")
        ax.set_axis_off()
        if titles is not None:
            ax.set_title(titles[i], fontsize=8)
        for k, (part, boxes) in enumerate(parts.items()):
            x0, y0, x1, y1 = (float(v) for v in boxes[i])
            colour = np.asarray(part_colour(k), dtype=np.float64) / 255.0  # as draw_boxes and the views
            ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor=colour, linewidth=1.5,
                                   label=part if i == 0 else None))
    fig.legend(loc="outside lower center", ncols=max(1, len(parts)), fontsize=8)
    return fig


# ---------------------------------------------------------------------------- widgets
def figure_to_array(fig: Figure, dpi: float = 80) -> np.ndarray:
    """Render a figure with the Agg backend to a ``uint8`` (H, W, 3) array."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    fig.set_dpi(dpi)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()
