"""What the user asked for (state) and what has to be computed and drawn for it (request).

``resolve(state)`` is a pure function. The controller compares the request it is about to
serve with the last one it served and reruns only the stage that changed:

* ``ComputeRequest`` changed (image, occluder box or fill, layer, device, scores on/off)
  -> a forward pass (prefix to the layer; the full model only when scores are shown), then render;
* only ``RenderRequest`` changed (channel, normalisation, colormap, sort, overlay, target class,
  draft/final quality) -> render only, no forward.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

__all__ = ["ComputeRequest", "ExplorerState", "RenderRequest", "Request", "resolve"]


@dataclass(frozen=True)
class ExplorerState:
    """A snapshot of everything the user controls.

    Attributes:
        image_id: identifies the current image (a new upload gets a new id).
        box: occluder ``(x, y, w, h)`` in model-input pixels, or None (no occluder).
        fill: occluder fill name.
        layer: the layer shown.
        channel: the selected channel.
        device: the compute device name.
        norm: normalisation mode of the grid.
        cmap: colormap name.
        sort: order channels by activation.
        overlay: draw the channel over the image.
        show_scores: compute and show class scores.
        target: the target class (None: the most probable class of the unoccluded image).
        dragging: the user is dragging the occluder.
        page: the page of a layer with more channels than a grid shows at once (see
            :data:`~cnnwidgets.app.frames.GRID_PAGE`); None: the page that holds ``channel``.
    """

    image_id: int
    box: tuple[int, int, int, int] | None
    fill: str
    layer: str
    channel: int
    device: str
    norm: str = "fixed"
    cmap: str = "viridis"
    sort: bool = False
    overlay: bool = True
    show_scores: bool = True
    target: int | None = None
    dragging: bool = False
    page: int | None = None

    def with_(self, **changes) -> ExplorerState:
        """A copy with the fields given as keyword arguments (``**changes``) changed."""
        return replace(self, **changes)


@dataclass(frozen=True)
class ComputeRequest:
    """What needs a forward pass. Equal requests reuse the same activations.

    Attributes:
        image_id: the image (as :attr:`ExplorerState.image_id`).
        box: occluder ``(x, y, w, h)`` in model-input pixels, or None (no occluder).
        fill: occluder fill name; ``""`` without a box, where the fill changes nothing.
        layer: the layer whose activations are computed.
        device: the compute device name.
        scores: whether the full model runs to give class scores.
    """

    image_id: int
    box: tuple[int, int, int, int] | None
    fill: str
    layer: str
    device: str
    scores: bool


@dataclass(frozen=True)
class RenderRequest:
    """How the computed activations are drawn.

    Attributes:
        channel: the selected channel.
        norm: normalisation mode of the grid.
        cmap: colormap name.
        sort: order channels by activation.
        overlay: draw the channel over the image.
        target: the target class (None: the most probable class, or no scores shown).
        draft: draw a cheaper frame (while the occluder is dragged).
        page: the grid's page of a wide layer (None: the one that holds ``channel``).
    """

    channel: int
    norm: str
    cmap: str
    sort: bool
    overlay: bool
    target: int | None
    draft: bool
    page: int | None = None


@dataclass(frozen=True)
class Request:
    """What one state asks for: the activations to compute and how to draw them.

    Attributes:
        compute: the activations to compute.
        render: how to draw them.
    """

    compute: ComputeRequest
    render: RenderRequest


def resolve(state: ExplorerState) -> Request:
    """The work ``state`` needs: a pure function of the state.

    The fill only matters when there is a box, so switching the fill with no occluder is
    render-free as well as compute-free; while dragging, frames are drawn as drafts (cheaper
    encoding) and the release redraws the final position at full quality without a forward.
    """
    fill = state.fill if state.box is not None else ""
    compute = ComputeRequest(
        image_id=state.image_id,
        box=state.box,
        fill=fill,
        layer=state.layer,
        device=state.device,
        scores=state.show_scores,
    )
    render = RenderRequest(
        channel=state.channel,
        norm=state.norm,
        cmap=state.cmap,
        sort=state.sort,
        overlay=state.overlay,
        target=state.target if state.show_scores else None,
        draft=state.dragging,
        page=state.page,
    )
    return Request(compute=compute, render=render)
