"""Kernel view: the learned weights of a convolution layer, ready to be drawn.

A 2-D convolution with weight ``W`` of shape (O, I, kH, kW) computes, for output channel ``o``,
``y_o = b_o + sum_i W[o, i] * x_i`` (``*`` is cross-correlation). Each ``W[o, i]`` is a small
image: the pattern in input channel ``i`` that excites output channel ``o`` most. For the first
layer, whose three input channels are the colour channels of the (preprocessed) image, the three
slices ``W[o, 0..2]`` are drawn together as one RGB tile, as in Krizhevsky et al. (2012), "ImageNet
Classification with Deep Convolutional Neural Networks", figure 3, and Zeiler & Fergus (2014),
"Visualizing and Understanding Convolutional Networks", figure 6. Deeper layers are drawn per input
channel: a grid with one row per output channel and one column per input channel, or the input
slices of one chosen output channel.

Normalisation is symmetric around zero, so that a weight of 0 is drawn mid-gray::

    v = W / s,   s = max |W| over the normalisation group,   v in [-1, 1]

with the group being the whole layer (``"layer"``: tiles are comparable), one output channel
(``"filter"``: every filter uses the full contrast) or one 2-D slice ``W[o, i]`` (``"slice"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn
from torch.nn.utils import prune
from torch.nn.utils.spectral_norm import SpectralNorm
from torch.nn.utils.weight_norm import WeightNorm

from cnnwidgets.core.layers import unknown_layer_error
from cnnwidgets.core.probe import LOAD_WEIGHTS_FIRST, layer_names, not_a_model_hint
from cnnwidgets.core.targets import as_index

if TYPE_CHECKING:
    from cnnwidgets.core.probe import Probe

__all__ = ["Kernels", "conv_layer_names", "kernels"]

#: The accepted modes and the layout (``Kernels.layout``) each gives; the layout names are modes too.
_MODE_LAYOUTS = {
    "auto": "'rgb' for a layer with 3 input channels per group and no out_channel, else as 'channels'",
    "rgb": "'rgb'",
    "channels": "'grid', or 'slices' with out_channel",
    "grid": "'grid' (every output channel; no out_channel)",
    "slices": "'slices' (needs out_channel)",
}
_MODES = tuple(_MODE_LAYOUTS)
_NORMALIZE = ("layer", "filter", "slice")


@dataclass(frozen=True)
class Kernels:
    """The weights of one convolution layer, normalised for display.

    Attributes:
        layer: the layer's name.
        layout: how ``values`` is laid out (each name is also the ``mode`` of :func:`kernels`
            that asks for it):

            * ``"rgb"``: shape (O, kH, kW, 3), one colour tile per output channel
              (input channels 0, 1, 2 as red, green, blue);
            * ``"grid"``: shape (O, I, kH, kW), row ``o`` holds the input slices of output channel ``o``;
            * ``"slices"``: shape (I, kH, kW), the input slices of output channel ``out_channel``.

        values: float32 weights divided by ``scale``, in [-1, 1]; 0 means a zero weight.
        scale: float32 array of the divisors, broadcastable against the raw weights of shape
            (O, I, kH, kW) (shape (1, 1, 1, 1), (O, 1, 1, 1) or (O, I, 1, 1)).
        weight: the raw float32 weights, shape (O, I, kH, kW) (all output channels).
        normalize: the normalisation group used (``"layer"``, ``"filter"`` or ``"slice"``).
        out_channel: the chosen output channel for the ``"slices"`` layout, else ``None``.
    """

    layer: str
    layout: str
    values: np.ndarray
    scale: np.ndarray
    weight: np.ndarray
    normalize: str
    out_channel: int | None = None


def _named_modules(model_or_probe: nn.Module | Probe) -> dict[str, nn.Module]:
    from cnnwidgets.core.probe import Probe, unwrap_model

    if isinstance(model_or_probe, Probe):
        model_or_probe.sync()  # the private copy must reflect the user's latest weights
        model = model_or_probe.model
    elif isinstance(model_or_probe, nn.Module) or isinstance(getattr(model_or_probe, "model", None), nn.Module):
        model, _ = unwrap_model(model_or_probe)  # a module, or a bundle that carries one
    else:
        raise TypeError(
            "expected a torch.nn.Module, a zoo bundle (with a .model module) or a cnnwidgets.Probe, "
            f"got {type(model_or_probe).__name__}{not_a_model_hint(model_or_probe)}"
        )
    return {name: module for name, module in model.named_modules() if name}


def conv_layer_names(model_or_probe: nn.Module | Probe) -> list[str]:
    """Names of the 2-D convolution layers (``nn.Conv2d`` and subclasses), in definition order.

    Args:
        model_or_probe: a model, a zoo bundle or a :class:`~cnnwidgets.Probe` on a model.

    Returns:
        The qualified module names.
    """
    return [name for name, module in _named_modules(model_or_probe).items() if isinstance(module, nn.Conv2d)]


def _effective_weight(module: nn.Module) -> torch.Tensor:
    """The weight ``module``'s next forward computes with. Pruning and the older ``weight_norm`` and
    ``spectral_norm`` (``torch.nn.utils``) keep ``module.weight`` as a plain attribute that a pre-hook
    recomputes before each forward, so after ``load_state_dict`` or an optimizer step it still holds
    the old values until the model runs again: the weight is computed here as that hook would, without
    changing anything (no power iteration for spectral norm). Parametrizations compute it on access."""
    for hook in module._forward_pre_hooks.values():
        if isinstance(hook, prune.BasePruningMethod):
            if getattr(hook, "_tensor_name", None) == "weight":
                return hook.apply_mask(module)
            continue
        if getattr(hook, "name", None) != "weight":
            continue
        if isinstance(hook, WeightNorm):
            return hook.compute_weight(module)
        if isinstance(hook, SpectralNorm):
            return hook.compute_weight(module, do_power_iteration=False)
    return module.weight


def kernels(
    model_or_probe: nn.Module | Probe,
    layer: str,
    *,
    mode: str = "auto",
    out_channel: int | None = None,
    normalize: str = "layer",
) -> Kernels:
    """The weights of a convolution layer as tiles to draw (no forward pass is run).

    Formula: ``v = W / s`` with ``s = max |W|`` over the normalisation group, so ``v`` is in
    [-1, 1] and a zero weight maps to 0 (drawn mid-gray). First-layer filters are drawn as RGB
    tiles (Krizhevsky et al. 2012, fig. 3; Zeiler & Fergus 2014, fig. 6); deeper layers one
    slice per (output, input) channel pair.

    Args:
        model_or_probe: a model or a :class:`~cnnwidgets.Probe`. The weights are read without
            changing anything (for a probe, from its private copy, which the probe brings up to
            date with the user's model on each capture).
        layer: name of an ``nn.Conv2d`` layer.
        mode: the result's ``layout``, or ``"channels"`` / ``"auto"`` to let ``out_channel``
            and the layer choose it:

            * ``"rgb"``: layout ``"rgb"`` (needs 3 input channels per group, i.e. a layer that
              sees the colour channels);
            * ``"grid"``: layout ``"grid"``, every output channel per input channel (no
              ``out_channel``);
            * ``"slices"``: layout ``"slices"``, the input slices of ``out_channel`` (required);
            * ``"channels"``: per input channel, layout ``"slices"`` with ``out_channel``, else
              ``"grid"``;
            * ``"auto"`` (default): ``"rgb"`` when the layer has 3 input channels per group and
              no ``out_channel`` is given, else ``"channels"``.
        out_channel: with ``"channels"``, ``"slices"`` or ``"auto"``, return only the input
            slices of this output channel (layout ``"slices"``) instead of the full grid (layout
            ``"grid"``). A Python int, a numpy integer or a 0-d integer tensor.
        normalize: ``"layer"`` (one scale for the whole layer), ``"filter"`` (one per output
            channel) or ``"slice"`` (one per 2-D kernel slice; for RGB tiles the same as ``"filter"``).

    Returns:
        A :class:`Kernels` with the normalised values, their layout and the raw weights.

    Raises:
        KeyError: for an unknown layer name (with suggestions).
        ValueError: if the layer is not a 2-D convolution (the message lists the convolution
            layers), for an unknown ``mode`` (the message lists the modes and the layout each
            gives) or ``normalize``, ``mode="rgb"`` on a layer without 3 input channels,
            ``mode="slices"`` without ``out_channel``, ``mode="grid"`` or ``"rgb"`` with one,
            weights that are not finite (NaN or inf), weights on the meta device (shapes
            without values: load the weights first), weights a lazy module has not made yet, or
            a layer with no weights (0 output or input channels).
        IndexError: if ``out_channel`` is out of range.
        TypeError: if ``model_or_probe`` is neither a model nor a probe, or ``out_channel`` is
            not an int (a bool, a float ...).
    """
    if out_channel is not None:
        out_channel = as_index(out_channel, "out_channel")
    if mode not in _MODES:
        accepted = "; ".join(f"{name!r} -> layout {layout}" for name, layout in _MODE_LAYOUTS.items())
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}. Accepted modes and the layout each gives: "
                         f"{accepted}")
    if mode == "slices" and out_channel is None:
        raise ValueError("mode='slices' shows the input slices of one output channel: give out_channel "
                         "(or use mode='grid' for every output channel)")
    if mode == "grid" and out_channel is not None:
        raise ValueError("mode='grid' shows every output channel and takes no out_channel: "
                         "use mode='slices' for the input slices of one output channel")
    if normalize not in _NORMALIZE:
        raise ValueError(f"normalize must be one of {_NORMALIZE}, got {normalize!r}")
    modules = _named_modules(model_or_probe)
    (layer,) = layer_names([layer])
    if layer not in modules:
        raise unknown_layer_error(layer, list(modules))
    module = modules[layer]
    convs = [name for name, m in modules.items() if isinstance(m, nn.Conv2d)]
    if not isinstance(module, nn.Conv2d):
        listing = ", ".join(convs[:12]) + (" ..." if len(convs) > 12 else "") if convs else "none"
        raise ValueError(
            f"layer {layer!r} is a {type(module).__name__}, not a 2-D convolution; "
            f"kernels can be shown for the convolution layers: {listing}"
        )
    if isinstance(module.weight, nn.parameter.UninitializedParameter):
        raise ValueError(
            f"the weight of layer {layer!r} ({type(module).__name__}) is not made yet: a lazy module makes it "
            "on its first forward pass; run the model once on an input of its size first"
        )
    if module.weight.is_meta:
        raise ValueError(
            f"the weight of layer {layer!r} is on the meta device, which holds shapes but no values; "
            f"{LOAD_WEIGHTS_FIRST}"
        )
    if module.weight.numel() == 0:
        raise ValueError(
            f"layer {layer!r} has no weights to show: its weight has shape {tuple(module.weight.shape)} "
            f"({module.out_channels} output and {module.in_channels} input channels)"
        )
    with torch.no_grad():
        weight = _effective_weight(module).detach().to("cpu", torch.float32).contiguous().numpy().copy()
    out_count, in_count = weight.shape[:2]
    if mode == "auto":
        mode = "rgb" if in_count == 3 and out_channel is None else "channels"
    elif mode in ("grid", "slices"):
        mode = "channels"  # out_channel, checked above, picks between the two
    if mode == "rgb":
        if in_count != 3:
            raise ValueError(
                f"mode='rgb' needs a layer with 3 input channels per group (one per colour); "
                f"{layer!r} has {in_count}. Use mode='channels'"
            )
        if out_channel is not None:
            raise ValueError("out_channel selects input slices and works with mode='slices' or 'channels' only")
    if out_channel is not None and not 0 <= out_channel < out_count:
        raise IndexError(
            f"out_channel {out_channel} is out of range: {layer!r} has {out_count} output channels (0..{out_count - 1})"
        )

    finite = np.isfinite(weight)
    if not finite.all():
        bad = np.flatnonzero(~finite.reshape(out_count, -1).all(axis=1)).tolist()
        raise ValueError(
            f"layer {layer!r} has non-finite weights (NaN or inf) in output channels "
            f"{bad[:16]}{' ...' if len(bad) > 16 else ''}; its kernels cannot be scaled for display "
            "(has training diverged?)"
        )
    magnitude = np.abs(weight)
    if normalize == "layer":
        scale = magnitude.max(keepdims=True)
    elif normalize == "filter" or mode == "rgb":
        scale = magnitude.max(axis=(1, 2, 3), keepdims=True)
    else:
        scale = magnitude.max(axis=(2, 3), keepdims=True)
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    values = (weight / scale).astype(np.float32)
    used = "filter" if normalize == "slice" and mode == "rgb" else normalize

    if mode == "rgb":
        return Kernels(layer, "rgb", np.ascontiguousarray(values.transpose(0, 2, 3, 1)), scale, weight, used)
    if out_channel is not None:
        index = out_channel
        return Kernels(layer, "slices", values[index].copy(), scale, weight, used, index)
    return Kernels(layer, "grid", values, scale, weight, used)
