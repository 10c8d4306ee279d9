"""A failed method map leaves no image element on screen in the method panel (an empty <img>
shows the browser's broken-image icon above the error): only the error text shows, and the
image shows again with the next map that succeeds."""

from __future__ import annotations

import torch
from torch import nn

from cnnwidgets import zoo
from cnnwidgets.app import Explorer
from cnnwidgets.widgets.methodview import MethodView


class NoGradInside(nn.Module):
    """A small classifier whose forward runs under ``torch.no_grad()``: saliency has no gradient
    to take, occlusion (forward passes only) works."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(6, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))

    def forward(self, x):
        with torch.no_grad():
            return self.head(self.features(x))


def shown(view: MethodView) -> bool:
    """Whether the browser shows the view's image element (the view itself is shown)."""
    return view.image.layout.display != "none"


def test_a_failed_map_shows_its_error_without_an_image_and_the_next_map_shows_again():
    torch.manual_seed(0)
    ex = Explorer(NoGradInside().eval(), zoo.sample_image("star"), samples={}, device="cpu",
                  input_size=(3, 32, 32), background=False, layer="features.3", method="saliency")
    view = ex.method_view
    try:
        assert ex.wait_idle(60)
        assert ex.method_result is None and ex.status.is_error, ex.status.message
        assert "failed" in view.caption.value and view.caption.layout.display != "none"
        assert view.image.value == b"" and not shown(view)  # the error alone, no broken-image icon

        ex.method_stride = 16
        ex.method = "occlusion"  # forward passes only: this one works
        assert ex.wait_idle(60) and ex.method_result is not None, ex.status.message
        assert view.image.value and shown(view) and not ex.status.is_error

        ex.method = "saliency"  # fails again: the occlusion map goes, and its image element with it
        assert ex.wait_idle(60) and ex.method_result is None
        assert "failed" in view.caption.value
        assert view.image.value == b"" and not shown(view) and not view.stale

        ex.method = "occlusion"
        assert ex.wait_idle(60) and ex.method_result is not None
        assert view.image.value and shown(view)

        ex.method = "none"  # no method: nothing of the panel but its menu
        assert ex.wait_idle(60) and not shown(view) and view.caption.layout.display == "none"
    finally:
        ex.close()


def test_the_method_view_shows_its_image_only_while_it_has_a_map():
    view = MethodView(("none", "saliency", "occlusion"))
    try:
        assert not shown(view)  # no method
        view.method = "saliency"
        assert not shown(view)  # a method, no map yet: no empty image before the first one
        view.computing("<i>computing saliency</i>")
        assert not shown(view) and view.caption.layout.display != "none"
        view.show(b"map-1", "saliency of cat")
        assert shown(view)
        view.computing("<i>computing occlusion</i>")  # the old map stays, faded, while the next one is computed
        assert shown(view) and view.stale
        view.clear()  # the next one failed: its caption says why, under no image
        view.caption.value = "<b>occlusion</b> failed: deliberate"
        assert not shown(view) and not view.stale and view.caption.layout.display != "none"
        view.show(b"map-2", "occlusion of cat")
        assert shown(view)
        view.method = "none"
        assert not shown(view) and view.image.value == b""
        view.method = "occlusion"  # the map was cleared with the method: still nothing to show
        assert not shown(view)
    finally:
        view.close()
