"""Heatmaps the explorer draws over the input image, behind one uniform signature.

Every entry of :data:`OVERLAYS` is a function::

    fn(probe, x, *, layer, channel, target) -> np.ndarray

Args:
    probe: the explorer's :class:`~cnnwidgets.core.probe.Probe`.
    x: the current image as a preprocessed batch of one, shape (1, C, H, W).
    layer: the selected layer name.
    channel: the selected channel of that layer.
    target: the selected class index (or any target callable).

Returns:
    A float32 array of shape (H, W) - the input's resolution - with values >= 0, larger
    meaning "more". Not normalised: scale it for display (for example with
    :func:`cnnwidgets.render.attribution.attribution_overlay`, which uses a robust
    percentile).

Raises:
    ValueError: ``x`` is not a batch of one image; whatever the underlying method raises
    for a bad layer (``KeyError``), channel or class (``IndexError``).

:data:`SIGNED_OVERLAYS` gives the signed values, per input channel, of the overlays that have a
sign (saliency, guided backprop, deconvnet).

:data:`OVERLAY_INPUTS` says which of ``layer``, ``channel`` and ``target`` each overlay
depends on, so a controller recomputes only when one of those changed.

==================  ============================================================  =====================
name                map                                                           depends on
==================  ============================================================  =====================
``saliency``        ``max_c |dy/dx_c|``, the class-score gradient                 target
``guided backprop`` ``max_c |GB_c|``, guided backpropagation of the class score   target
``deconvnet``       ``max_c |P_c|``, deconvnet projection of the selected          layer, channel
                    channel's strongest unit (:func:`project_channel`)
``grad-cam``        Grad-CAM of the class at the selected layer, or at the last   layer, target
                    feature map before it when the layer's output is not one
                    (:func:`nearest_conv_layer`), upsampled bilinearly to
                    (H, W)
==================  ============================================================  =====================
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from cnnwidgets.core.probe import Probe
from cnnwidgets.core.targets import Target
from cnnwidgets.methods.cam import grad_cam, nearest_conv_layer, upsample
from cnnwidgets.methods.gradients import check_batch, guided_backprop, layers_for, project_channel, saliency

__all__ = ["OVERLAYS", "OVERLAY_INPUTS", "SIGNED_OVERLAYS", "OverlayFn", "magnitude"]


class OverlayFn(Protocol):
    """The signature every overlay function has (see the module documentation)."""

    def __call__(
        self, probe: Probe, x: torch.Tensor, *, layer: str, channel: int, target: Target | int
    ) -> np.ndarray: ...


def _single(x: torch.Tensor) -> torch.Tensor:
    check_batch(x)
    if x.shape[0] != 1:
        raise ValueError(f"an overlay is drawn for one image: expected x of shape (1, C, H, W), got {tuple(x.shape)}")
    return x


def _values(values: torch.Tensor) -> np.ndarray:
    """(1, C, H, W) signed values -> (C, H, W) float32."""
    return values[0].detach().cpu().numpy().astype(np.float32, copy=False)


def magnitude(values: np.ndarray) -> np.ndarray:
    """(C, H, W) signed ``values`` -> (H, W) float32 magnitudes, ``max_c |v_c|``: the map the
    unsigned overlay of a :data:`SIGNED_OVERLAYS` entry shows."""
    return np.abs(values).max(axis=0).astype(np.float32, copy=False)


def signed_saliency(probe: Probe, x: torch.Tensor, *, layer: str, channel: int, target: Target | int) -> np.ndarray:
    """``dy/dx``, the class-score gradient per input channel (Simonyan et al. 2014); ``layer`` and
    ``channel`` are unused."""
    return _values(saliency(probe, _single(x), target, absolute=False))


def signed_guided_backprop(
    probe: Probe, x: torch.Tensor, *, layer: str, channel: int, target: Target | int
) -> np.ndarray:
    """Guided backpropagation of the target per input channel (Springenberg et al. 2015); ``layer``
    and ``channel`` are unused."""
    return _values(guided_backprop(probe, _single(x), target))


def signed_deconvnet(probe: Probe, x: torch.Tensor, *, layer: str, channel: int, target: Target | int) -> np.ndarray:
    """The strongest unit of ``channel`` at ``layer`` projected to pixels, per input channel
    (Zeiler & Fergus 2014, :func:`project_channel`); ``target`` is unused."""
    return _values(project_channel(probe, _single(x), layer, channel, unit="max"))


def saliency_overlay(probe: Probe, x: torch.Tensor, *, layer: str, channel: int, target: Target | int) -> np.ndarray:
    """``max_c |dy/dx_c|`` for the target (Simonyan et al. 2014); ``layer`` and ``channel`` are unused."""
    return magnitude(signed_saliency(probe, x, layer=layer, channel=channel, target=target))


def guided_backprop_overlay(
    probe: Probe, x: torch.Tensor, *, layer: str, channel: int, target: Target | int
) -> np.ndarray:
    """``max_c |GB_c|`` for the target (Springenberg et al. 2015); ``layer`` and ``channel`` are unused."""
    return magnitude(signed_guided_backprop(probe, x, layer=layer, channel=channel, target=target))


def deconvnet_overlay(probe: Probe, x: torch.Tensor, *, layer: str, channel: int, target: Target | int) -> np.ndarray:
    """``max_c |P_c|``: the strongest unit of ``channel`` at ``layer`` projected to pixels
    (Zeiler & Fergus 2014); ``target`` is unused."""
    return magnitude(signed_deconvnet(probe, x, layer=layer, channel=channel, target=target))


def grad_cam_overlay(probe: Probe, x: torch.Tensor, *, layer: str, channel: int, target: Target | int) -> np.ndarray:
    """Grad-CAM of the target at ``layer``, or at the last feature map before it (see
    :func:`~cnnwidgets.methods.cam.nearest_conv_layer`) when its output is not one, upsampled
    bilinearly to the input (Selvaraju et al. 2017); ``channel`` is unused."""
    x = _single(x)
    layers_for(probe, x)
    chosen = nearest_conv_layer(probe, layer)
    maps = upsample(grad_cam(probe, x, target, chosen), x.shape[-2:])
    return maps[0].detach().cpu().numpy().astype(np.float32, copy=False)


OVERLAYS: dict[str, OverlayFn] = {
    "saliency": saliency_overlay,
    "guided backprop": guided_backprop_overlay,
    "deconvnet": deconvnet_overlay,
    "grad-cam": grad_cam_overlay,
}
"""Overlay name -> function with the signature of :class:`OverlayFn`."""

SIGNED_OVERLAYS: dict[str, OverlayFn] = {
    "saliency": signed_saliency,
    "guided backprop": signed_guided_backprop,
    "deconvnet": signed_deconvnet,
}
"""The overlays that have a sign, name -> function with the signature of :class:`OverlayFn` that
returns the signed values, float32 (C, H, W), one plane per input channel (the entry of
:data:`OVERLAYS` of the same name is their :func:`magnitude`). Show them with
:func:`cnnwidgets.render.attribution.signed_to_rgb`, as the papers show reconstructions."""

OVERLAY_INPUTS: dict[str, frozenset[str]] = {
    "saliency": frozenset({"target"}),
    "guided backprop": frozenset({"target"}),
    "deconvnet": frozenset({"layer", "channel"}),
    "grad-cam": frozenset({"layer", "target"}),
}
"""Overlay name -> the selections (``layer``, ``channel``, ``target``) its map depends on."""
