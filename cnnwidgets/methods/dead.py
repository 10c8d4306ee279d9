"""Dead channels: channels of a layer that never activate on a set of inputs.

A channel ``c`` of layer ``L`` is **dead** on a data set ``D`` at threshold ``t`` when its output
never exceeds ``t`` at any position for any input::

    dead(c)  <=>  max_{x in D} max_{h,w} a_L(x)[c, h, w] <= t

The test is applied to the output of the layer you name. At ``t = 0`` this is exactly "the
ReLU outputs zero everywhere" for the kinds of layers a default scan includes:

* a ``ReLU`` or ``ReLU6`` layer: its output never exceeds 0, i.e. the unit never fires;
* a convolution whose output goes straight into a ReLU: ``ReLU(z) > 0`` iff ``z > 0``, so a conv
  channel that is never positive is a channel the ReLU always zeroes; also through modules that
  keep signs on the way (a local response normalisation, a pooling, a dropout). This is the rule
  of :func:`zeroed_by_relu`. A convolution whose output goes into any other module is left out: a
  normalisation (conv -> BN -> ReLU, also through a ``Permute`` as in ConvNeXt) shifts its signs,
  and a gate (the ``Sigmoid`` or ``Hardsigmoid`` of a squeeze-excitation block) passes a
  non-positive input on scaled down, not switched off; the activation after it is scanned instead.
  So is a convolution whose output goes into code the layer table does not see (a residual
  addition ``conv(h) + h``, ``F.interpolate``, a mean, ``F.relu``) or is the model's output (a
  class-score map): a channel never positive there may still fire after the addition, and
  scores are no units that die;
* a layer whose output goes into an earlier call of a ``ReLU`` module that runs several times
  per forward pass (the ``bn1`` of a torchvision ``BasicBlock``, whose shared ``relu`` runs after
  ``bn1`` and again after the residual addition): the ReLU module is captured at its last call,
  so the channels that its earlier call zeroes are found on the layer before it.

Other activation layers (GELU, SiLU, Hardswish, LeakyReLU ...) are scanned too, but for them
"dead" means "never positive": they pass small negative values on, which still carry signal.
Named explicitly, any layer is scanned as it is.

Dying ReLUs were described by Maas, Hannun & Ng (2013), "Rectifier Nonlinearities Improve
Neural Network Acoustic Models", and Lu et al. (2019), "Dying ReLU and Initialization".

Per channel the report also holds the maximum activation and the fraction of active units
(``a > t``) over all images and positions.

A module that runs several times per forward pass (the shared ReLU of a torchvision
``BasicBlock``) is observed at its last call, as everywhere in cnnwidgets; the default scan adds
the layers that feed its earlier calls (see above).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from cnnwidgets.core.layers import LayerInfo, channel_count_problem
from cnnwidgets.core.probe import Probe, check_channel_axis, layer_names, probe_scope, require_probe
from cnnwidgets.core.targets import as_count, as_flag, as_real, check_channel_output, check_finite_activation
from cnnwidgets.methods.gradients import readable_layer
from cnnwidgets.methods.topk import data_size, iter_batches

__all__ = ["DeadChannels", "dead_channels", "default_dead_layers", "zeroed_by_relu"]


@dataclass(frozen=True)
class DeadChannels:
    """Which channels of one layer never activated.

    Attributes:
        layer: the layer's name.
        threshold: the threshold ``t`` (a unit is active where its activation is ``> t``).
        max_activation: float32 (C,), the largest activation of each channel over all inputs and positions.
        active_fraction: float64 (C,), fraction of (image, position) units with activation ``> t``.
        num_images: how many images were seen.
    """

    layer: str
    threshold: float
    max_activation: np.ndarray
    active_fraction: np.ndarray
    num_images: int

    @property
    def is_dead(self) -> np.ndarray:
        """bool (C,): the channel never exceeded the threshold."""
        return ~(self.max_activation > self.threshold)

    @property
    def dead(self) -> list[int]:
        """Indices of the dead channels, ascending."""
        return [int(i) for i in np.flatnonzero(self.is_dead)]

    @property
    def num_channels(self) -> int:
        """The layer's number of channels, C."""
        return int(self.max_activation.shape[0])

    @property
    def dead_fraction(self) -> float:
        """Share of this layer's channels that are dead."""
        return len(self.dead) / self.num_channels if self.num_channels else 0.0

    def __repr__(self) -> str:
        shown = ", ".join(str(i) for i in self.dead[:16]) + (" ..." if len(self.dead) > 16 else "")
        return (
            f"DeadChannels({self.layer!r}: {len(self.dead)}/{self.num_channels} dead [{shown}], "
            f"threshold={self.threshold}, images={self.num_images})"
        )


def _is_activation(module: nn.Module) -> bool:
    return type(module).__module__ == "torch.nn.modules.activation" and not isinstance(
        module, (nn.MultiheadAttention, nn.Softmax, nn.Softmax2d, nn.LogSoftmax, nn.Softmin)
    )


def default_dead_layers(probe: Probe) -> list[str]:
    """Layers of ``probe``'s model a dead-channel scan covers by default, in execution order:

    * activation modules (ReLU, GELU, ...) whose output is a feature map;
    * the convolutions whose output goes into a ``ReLU`` or ``ReLU6`` module, straight or through
      modules that keep signs (a local response normalisation, a pooling, a dropout): those for
      which :func:`zeroed_by_relu` holds;
    * any other layer (a batch norm, a pooling) whose output goes that way into an earlier call of
      a ReLU module that runs several times per forward pass, such as ``layer2.0.bn1`` of a
      torchvision ResNet: the ReLU module itself is captured at its last call (after the residual
      addition), so the channels its first call zeroes are read on this layer.

    A convolution whose output goes into code the layer table does not see (a residual addition,
    ``F.interpolate``, a mean, a functional ``F.relu``) or to the model's output is not included:
    where its output goes is not known to zero what is never positive (name it to scan it). Channels-last (H, W, C) maps, such as the GELUs inside ConvNeXt
    blocks, are included and read channels first. Maps that are empty at the probe's input size
    (see :attr:`~cnnwidgets.core.layers.LayerInfo.empty_map`) are left out: they have no unit to scan.
    So are convolutions whose output goes into any other module: a normalisation (``BatchNorm2d``,
    ``GroupNorm``, a ``Permute`` before a ``LayerNorm``) shifts their signs, and a gate (``Sigmoid``,
    ``Hardsigmoid``) scales a non-positive channel down without switching it off; the activation
    after it is scanned instead (see the module docstring).

    Raises:
        TypeError: when ``probe`` is not a :class:`~cnnwidgets.Probe` (a model is told to be wrapped).
    """
    layers = require_probe(probe, "default_dead_layers").layers
    names = []
    for name, info in layers.items():
        if info.map_shape is None or info.calls == 0 or info.empty_map:
            continue
        module = probe.module(name)
        if _is_activation(module):
            names.append(name)
            continue
        reached = _relu_reached(probe, layers, name)
        if reached is None:
            continue
        relu, before = reached
        # a convolution whose never-positive channels a ReLU zeroes; any other layer (a batch norm,
        # a pooling) only where that ReLU call's output is not the one its module is captured at
        if isinstance(module, nn.Conv2d) or not _feeds_last_call(layers, before, relu):
            names.append(name)
    return names


# Modules after which a channel that is never positive stays never positive: they keep signs
# (a local response normalisation divides by a positive number; a max or average of values <= 0
# is <= 0) or change nothing at inference.
_SIGN_KEEPING = (nn.LocalResponseNorm, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveMaxPool2d, nn.AdaptiveAvgPool2d,
                 nn.Dropout, nn.Dropout2d, nn.Identity)


def _relu_reached(probe: Probe, layers: Mapping[str, LayerInfo], name: str) -> tuple[str, str] | None:
    """Where the output of layer ``name`` (its last call, the one captured) goes into a ``ReLU`` or
    ``ReLU6`` module as it is or through modules that keep signs only (:data:`_SIGN_KEEPING`, each
    taken at its last call): ``(that ReLU's name, the layer right before it)``; None when anything
    else takes it first, also code the layer table does not see (``F.relu``, a residual addition,
    ``F.interpolate``, a mean) or the end of the forward, since where the output goes then is not
    known to zero what is never positive."""
    seen = {name}
    while True:
        after = layers[name].feeds
        if not after or after not in layers:
            return None
        if isinstance(probe.module(after), (nn.ReLU, nn.ReLU6)):
            return after, name
        if (not isinstance(probe.module(after), _SIGN_KEEPING) or after in seen
                or not _feeds_last_call(layers, name, after)):
            return None  # a pooling used several times: what its last call's output goes into says nothing here
        seen.add(after)
        name = after


def _feeds_last_call(layers: Mapping[str, LayerInfo], name: str, after: str) -> bool:
    """Whether the output of layer ``name`` (which :attr:`~cnnwidgets.core.layers.LayerInfo.feeds`
    module ``after``) goes into ``after``'s last call, the one whose output is captured, rather than an
    earlier call of a module that runs several times: no other leaf module's last call starts
    between the two (module containers may)."""
    if layers[after].calls <= 1:
        return True
    start, end = layers[name].last_call, layers[after].last_call
    if start < 0 or end < 0 or end < start:
        return False
    return not any(info.is_leaf and start < info.last_call < end for info in layers.values())


def _no_default_layers(probe: Probe) -> ValueError:
    """The error for a model where :func:`default_dead_layers` finds nothing, saying why."""
    layers = probe.layers
    convs = [n for n, i in layers.items() if i.calls and isinstance(probe.module(n), nn.Conv2d)]
    if not convs:
        return ValueError("the model has no convolution or activation layer with a spatial output; "
                          "name the layers to scan with layers=[...]")
    # blocks with a feature map that hold a convolution: where functional activations are applied,
    # a block's output is usually the map after them (torchvision's BasicConv2d: conv, bn, F.relu)
    blocks = [n for n, i in layers.items() if i.calls and i.map_shape is not None and not i.is_leaf
              and any(c.startswith(n + ".") for c in convs)]
    examples = ", ".join(repr(n) for n in blocks[:4]) if blocks else ", ".join(repr(n) for n in convs[:4])
    return ValueError(
        f"no layer to scan by default: the model's {len(convs)} convolution(s) feed normalisation layers, other "
        "modules or functional code (a residual addition, F.relu) whose effect on signs is not known, and it has "
        "no activation module (nn.ReLU ...) with a feature-map output, so its activations are applied as "
        "functions (F.relu), which hooks cannot see. Name the layers whose output is after the "
        f"activation with layers=[...], such as {examples}"
    )


def zeroed_by_relu(probe: Probe, name: str) -> bool:
    """Whether a channel of layer ``name`` with no positive value is dead, by what runs after it.

    True when the layer's output goes into a ``ReLU`` or ``ReLU6`` module (which sets every value
    at or below zero to zero), straight or through modules that keep signs (a local response
    normalisation, a pooling, a dropout), also one shared by several layers (a ResNet block's
    ``relu``): that channel is then all zero after it. False when anything else takes it first
    (a batch norm, which shifts signs, a GELU, a residual addition, other functional code the
    layer table does not see, the end of the forward): a channel with no positive value there may
    still fire further on. The same rule chooses the convolutions of :func:`default_dead_layers`. The
    explorer marks such channels as dead on the image only where this holds (or where the
    layer's output has no negative value, so that "no positive value" means all zero).

    Args:
        probe: the probe whose layer table (what each layer's output goes into) is read.
        name: a layer name of ``probe``.

    Raises:
        TypeError: when ``probe`` is not a :class:`~cnnwidgets.Probe` or ``name`` is not a string.
        KeyError: for an unknown layer (with suggestions).
    """
    require_probe(probe, "zeroed_by_relu").check_layer(name)
    return _relu_reached(probe, probe.layers, name) is not None


#: A pass keeps every requested layer's output until it ends (the statistics are read after it):
#: images per pass are capped so that these kept maps stay under this many bytes.
_KEPT_BYTES = 256 * 2**20


def _images_per_pass(probe: Probe, names: Sequence[str], batch: torch.Tensor) -> int:
    """How many images of ``batch`` one pass takes, so that the outputs of ``names`` it keeps
    fit in :data:`_KEPT_BYTES` (resnet50's 70 default layers hold about 80 MiB per image at
    224x224: 64 images would keep over 5 GB). The layers are described at the batch's size."""
    size = tuple(batch.shape[1:])
    if probe.input_size != size:
        probe.describe(size)
    layers = probe.layers
    per_image = sum(int(np.prod(layers[name].output_shape or (1,))) for name in names if name in layers)
    return max(1, _KEPT_BYTES // max(1, per_image * 4))  # the copy computes in float32, whatever the input's dtype


def _add_batch_statistics(
    probe: Probe,
    batch: torch.Tensor,
    names: Sequence[str],
    threshold: float,
    maxima: dict[str, torch.Tensor],
    active: dict[str, torch.Tensor],
    units: dict[str, int],
) -> None:
    """One prefix-only pass over ``batch``: adds each layer's per-channel maxima and counts of
    active units to the running ``maxima``, ``active`` and ``units``."""
    # a data set is seen once; the statistics below read any memory layout
    acts = probe.capture(batch, names, channels_first=True, contiguous=False, cache=False)
    for name, act in acts.items():
        check_channel_output(act, name, "a dead-channel scan")
        if act.numel() == 0:  # a map with no unit at this input size: the layers are described at it
            readable_layer(probe, name)
        # a NaN maximum compares as "never above the threshold": NaN channels are not dead
        check_finite_activation(act, name, "a dead-channel scan", model=probe.model)
        dims = [0, *range(2, act.dim())]
        batch_max = act.detach().amax(dim=dims).float()
        # counted exactly in int64, as float64 on the CPU (MPS has no float64)
        batch_active = (act.detach() > threshold).sum(dim=dims).cpu().double()
        if name in maxima:
            if batch_max.shape != maxima[name].shape:
                raise ValueError(f"layer {name!r} changed its number of channels between batches")
            maxima[name] = torch.maximum(maxima[name], batch_max)
            active[name] += batch_active
        else:
            maxima[name], active[name] = batch_max, batch_active
        units[name] = units.get(name, 0) + act.numel() // act.shape[1]


def dead_channels(
    model_or_probe: nn.Module | Probe,
    inputs: Any,
    layers: str | Sequence[str] | None = None,
    *,
    threshold: float = 0.0,
    batch_size: int = 64,
    progress: bool = True,
) -> dict[str, DeadChannels]:
    """Find the channels that never activate over a batch or a whole data set.

    Formula: channel ``c`` of layer ``L`` is dead iff ``max_{x, h, w} a_L(x)[c, h, w] <= t``;
    ``active_fraction[c] = mean_{x, h, w} [a_L(x)[c, h, w] > t]``. See the module docstring for
    which layer to choose around a ReLU (Maas et al. 2013; Lu et al. 2019 on dying ReLUs).

    Batches are streamed: each runs one prefix-only forward pass up to the deepest requested
    layer, and only per-channel running maxima and counts are kept.

    Args:
        model_or_probe: a model or a :class:`~cnnwidgets.Probe` (a model is inspected through a
            temporary probe, so it is never changed).
        inputs: the data, in the forms :func:`~cnnwidgets.methods.topk.scan_topk` reads (see
            :func:`~cnnwidgets.methods.topk.iter_batches`): a preprocessed batch (N, C, H, W), an
            ``(images, labels)`` pair, or an iterable (a ``DataLoader``, a list, a data set) of
            batches, ``(images, labels, ...)`` tuples or single images (C, H, W). Labels are ignored.
        layers: a layer name, several, or ``None`` for every convolution and activation layer
            with a spatial output (see :func:`default_dead_layers`).
        threshold: a unit is active where its activation is ``> threshold`` (a finite number).
        batch_size: images per forward pass for a tensor and for single images (batches from a
            loader are used as given). Fewer are taken at once where the requested layers' maps
            of that many images would hold over 256 MiB (every layer's output is kept until its
            pass ends); the result does not depend on it.
        progress: show a progress bar over images.

    Returns:
        ``{layer: DeadChannels}`` in the order requested (execution order for the default).

    Raises:
        KeyError: for an unknown layer (with suggestions).
        ValueError: when ``inputs`` holds no batch, a batch is not (N, C, H, W) finite floats (one
            laid out (N, H, W, C) is named as such), a layer's output is not (C,) or (C, H, W) per
            image (channels-last (H, W, C) maps are read channels first; a transformer's (tokens,
            features) is refused, see :func:`~cnnwidgets.core.targets.check_channel_output`), a
            layer's activations are not finite (NaN or inf: non-finite weights, whose channels are
            not dead but broken), a layer's feature map is empty at the batch's size (see
            :func:`~cnnwidgets.core.layers.check_map_not_empty`), ``threshold`` is NaN or infinite,
            or ``batch_size`` is below 1.
        TypeError: when ``inputs`` or an item of it is not one of the forms above (a numpy array is
            told to go through ``torch.from_numpy``; a path, a string, to be loaded first), a layer name is
            not a string, ``threshold`` is not a number, ``batch_size`` is not an int (a Python
            int, a numpy integer or a 0-d integer tensor; not a bool or a float), or ``progress``
            is not True or False.
    """
    threshold = as_real(threshold, "threshold")
    batch_size = as_count(batch_size, "batch_size")
    progress = as_flag(progress, "progress")
    names: list[str] | None = None
    if layers is not None:
        names = layer_names(layers)
        if not names:
            raise ValueError("layers is empty; pass layer names or None for the default set")
    # one check of the user's model for the whole scan: the default set looks up every layer
    with probe_scope(model_or_probe) as probe, probe.synced():
        maxima: dict[str, torch.Tensor] = {}
        active: dict[str, torch.Tensor] = {}
        units: dict[str, int] = {}
        images = 0
        bar = tqdm(total=data_size(inputs), disable=not progress, desc="dead channels", unit="img")
        try:
            for batch, _ in iter_batches(inputs, batch_size):
                check_channel_axis(probe.model, batch)  # before the layers are described at the batch's size
                try:
                    if names is None:
                        probe.describe(tuple(batch.shape[1:]))  # the layers as they are for this input size
                        names = default_dead_layers(probe)
                        if not names:
                            raise _no_default_layers(probe)
                    step = _images_per_pass(probe, names, batch)
                    for start in range(0, batch.shape[0], step):
                        _add_batch_statistics(
                            probe, batch[start:start + step], names, threshold, maxima, active, units
                        )
                except RuntimeError as exc:  # the model failed: say so plainly where the channels are wrong
                    problem = channel_count_problem(probe.model, batch.shape[1]) if batch.dim() == 4 else None
                    if problem:
                        model_error = getattr(exc, "model_error", exc)  # the probe's own message says it too
                        raise ValueError(f"the batch {tuple(batch.shape)} {problem} (the model failed: "
                                         f"{model_error})") from exc
                    raise
                images += batch.shape[0]
                bar.update(batch.shape[0])
        finally:
            bar.close()
        if names is None or not maxima:
            raise ValueError("inputs holds no batch; pass a tensor (N, C, H, W) or an iterable of batches")
        return {
            name: DeadChannels(
                layer=name,
                threshold=threshold,
                max_activation=maxima[name].cpu().numpy().astype(np.float32),
                active_fraction=(active[name] / max(units[name], 1)).cpu().numpy(),
                num_images=images,
            )
            for name in names
        }
