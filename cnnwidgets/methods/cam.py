"""Class activation maps: CAM, Grad-CAM and Grad-CAM++.

Each method weights the K feature maps ``A_k`` of one layer and sums them,
``L = sum_k w_k A_k``; they differ only in the weights:

* **CAM** (Zhou et al., "Learning Deep Features for Discriminative Localization",
  CVPR 2016): for models that end in global average pooling followed by a linear
  layer, ``w_k`` is the linear layer's weight from feature ``k`` to the class,
  ``M_c = sum_k W[c, k] A_k``. No rectification.
* **Grad-CAM** (Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via
  Gradient-based Localization", ICCV 2017, eq. 1-2): ``w_k = 1/Z sum_ij dy/dA_kij``
  (the spatially averaged gradient of the target score ``y``), ``L = ReLU(sum_k w_k A_k)``.
* **Grad-CAM++** (Chattopadhay et al., "Grad-CAM++: Generalized Gradient-based Visual
  Explanations for Deep Convolutional Networks", WACV 2018, eq. 19 and 7):
  ``w_k = sum_ij a_kij ReLU(g_kij)`` with ``g = dy/dA`` and
  ``a_kij = g_kij^2 / (2 g_kij^2 + sum_ab A_kab g_kij^3)`` (0 where ``g_kij = 0``),
  ``L = ReLU(sum_k w_k A_k)``.

For a model ending in GAP + linear, the Grad-CAM weights of a class logit are the CAM
weights divided by ``Z = h * w``, so CAM equals ``Z`` times Grad-CAM before its ReLU.

All functions return the raw map at the layer's resolution, shape (N, h, w); use
:func:`upsample` to bring it to the input size. Nothing is normalised here: rendering
(``cnnwidgets.render.attribution``) scales maps for display.

Gradients are taken with :func:`torch.autograd.grad` with respect to the captured
activation itself (made a leaf of the graph by a forward hook on the probe's private
copy, removed in ``finally``), so no parameter's ``.grad`` is touched and the part of
the network before the layer is not differentiated at all. Gradients are enabled for that
computation whatever the caller's mode (``torch.no_grad()``, ``torch.inference_mode()``),
which is unchanged when the functions return. A layer that runs several
times per forward is taken at its last call, like every capture of the probe; for a target
on an inner layer, at its last call before the forward reaches that target (the forward
stops there), which is an earlier call when the target's layer runs between two of them
(a ReLU module shared by a residual block, with the target on the block's second convolution).

Relation to pytorch-grad-cam
----------------------------
``pytorch_grad_cam.GradCAM`` / ``GradCAMPlusPlus`` return, per image,
``s(resize(s(ReLU(L))))`` with ``s(m) = (m - min m) / (max(m - min m) + 1e-7)`` and
``resize`` = ``cv2.resize`` (bilinear, half-pixel centres) to the input size. The same
is ``s(upsample(s(L)))`` here (``L`` is already rectified); the tests compare exactly
that. Its Grad-CAM++ adds ``1e-6`` to the denominator of ``a_kij``; pass ``eps=1e-6``
to :func:`grad_cam_pp` to reproduce it.

A layer whose output the model's forward then changes in place (DenseNet applies
``F.relu(features, inplace=True)`` to the output of ``features``) differs: here the layer's
own output is used, as every capture of the probe reads it, while pytorch-grad-cam keeps a
reference to the tensor and so reads it after the in-place ReLU. :func:`cam` at such a layer
uses the maps as the pooling reads them (after the ReLU), so on DenseNet the relation
``CAM = Z * Grad-CAM`` holds with Grad-CAM of the ReLU's output, not of ``features``.
"""

from __future__ import annotations

import math
import numbers
import threading
import warnings
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cnnwidgets.core.layers import LayerInfo
from cnnwidgets.core.probe import Probe, check_batch, probe_scope
from cnnwidgets.core.targets import (
    INDEX_TYPES, ClassLogit, ClassLogits, Target, as_pair, resolve_target, same_kind, target_score,
)
from cnnwidgets.methods.gradients import (
    _EMPTY_QUIET,
    EmptyMapWarning,
    _images_text,
    _zero_rows,
    check_target_layer,
    empty_maps_quietly,
    gradients_enabled,
    input_leaf,
    layers_for,
    readable_layer,
    require_graph,
)

__all__ = [
    "EmptyMapWarning",
    "cam",
    "empty_maps_quietly",
    "grad_cam",
    "grad_cam_pp",
    "layer_gradient",
    "nearest_conv_layer",
    "upsample",
]

_POOLS = (nn.AdaptiveAvgPool2d, nn.AvgPool2d)


def _warn_if_empty(maps: torch.Tensor, grad: torch.Tensor, layer: str, method: str) -> None:
    """Warn (:class:`EmptyMapWarning`) of the finite maps (N, h, w) that are zero everywhere: of
    those whose gradient at the layer (N, K, h, w) is zero too, and of the others, one warning each."""
    flat = maps.flatten(1)
    empty = ~(flat > 0).any(dim=1) & torch.isfinite(flat).all(dim=1)
    if not bool(empty.any()):
        return
    no_gradient = empty & _zero_rows(grad)
    texts = {
        True: ("the target's gradient at the layer is zero at every unit, so the map is blank: the score does not "
               "depend on this layer there (a classifier head initialised to zero, or every unit after the layer "
               "switched off by a ReLU or a saturated activation)"),
        False: ("sum_k w_k A_k <= 0 at every position, so the layer holds no positive evidence for the target there. "
                "Another layer (an earlier one, or the block's output after its ReLU) or another class may show some"),
    }
    for zero_gradient, which in ((True, no_gradient), (False, empty & ~no_gradient)):
        if not bool(which.any()):
            continue
        warning = EmptyMapWarning(
            f"{method}: the map of {_images_text(which.nonzero().flatten().tolist())} is zero everywhere at layer "
            f"{layer!r}: {texts[zero_gradient]}",
            zero_gradient=zero_gradient,
        )
        _EMPTY_QUIET.warn(warning, stacklevel=4)  # _warn_if_empty <- _gradient_map <- grad_cam / grad_cam_pp <- its caller


def _spatial_layer(probe: Probe, layer: str, method: str) -> LayerInfo:
    info = probe.check_layer(layer)
    if info.calls == 0:
        raise ValueError(f"layer {layer!r} does not run in this model's forward pass")
    if info.map_shape is None:
        if info.output_shape is None:
            what = (
                "returns something other than one tensor (such as a dict or a tuple of feature maps); choose a "
                "layer inside it that returns one"
            )
        else:
            what = f"has output shape {info.shape_text}"
        raise ValueError(f"{method} needs a layer with a (C, H, W) output; {layer!r} {what}")
    info = readable_layer(probe, layer)
    height, width = info.map_shape[1:]
    if height * width == 1:
        try:
            better = (f"nearest_conv_layer(probe, {layer!r}) gives {nearest_conv_layer(probe, layer)!r}, the layer "
                      "the default picks")
        except ValueError:  # no larger map before it at this input size
            better = "none runs before it at this input size: try a larger input"
        warnings.warn(
            f"{method}: layer {layer!r} has a 1x1 map {info.shape_text}, so the map is one number per image, "
            f"with nothing to localise; use a layer with a spatial map ({better})",
            RuntimeWarning,
            stacklevel=4,
        )
    return info


def _hook_output(module: nn.Module, record: list[torch.Tensor], *, leaf: bool):
    """Forward hook: keep the module's output of its last call (as a fresh leaf if ``leaf``).

    Without ``leaf`` the output tensor itself is kept (detached, no copy), on purpose: read after
    the forward pass, it includes the in-place changes the model made to it later (DenseNet's
    ``F.relu(features, inplace=True)`` before pooling), which is what :func:`cam` needs. With
    ``leaf`` the model continues on a copy, so the leaf stays the module's own output.

    Only forward passes of the registering thread are recorded.
    """
    owner = threading.get_ident()

    def hook(module: nn.Module, args: tuple, output: object) -> torch.Tensor | None:
        if threading.get_ident() != owner:
            return None
        if not isinstance(output, torch.Tensor):
            raise TypeError(f"the layer returns {type(output).__name__}, not a tensor")
        if not leaf:
            record[:] = [output.detach()]  # shares storage with output: later in-place changes show
            return None
        start = output.detach().requires_grad_(True)
        record[:] = [start]
        # Later in-place ops (a residual `out += identity`) must act on a copy, not the leaf.
        return start.clone()

    return module.register_forward_hook(hook, prepend=True)


def _check_one_per_image(indices: Sequence[int], images: int, what: str) -> None:
    """Refuse class ``indices`` meant one per image whose count is not the batch's ``images``."""
    if len(indices) != images:
        raise ValueError(f"{what}: {len(indices)} class indices (one per image) for a batch of {images} images; "
                         "give one index per image of the batch")


def _one_at_a_time(probe: Probe, x: torch.Tensor) -> bool:
    """Whether a batch must be explained image by image: the probe then runs each image on its
    own (batch-norm layers that use batch statistics, see ``Probe.batch_dependent``), so a hook
    sees one image per call, not the batch."""
    return bool(probe.batch_dependent) and x.dim() == 4 and x.shape[0] > 1


def _alone_failure(exc: Exception, probe: Probe, images: int) -> Exception:
    """``exc``, raised by a target scored on one image of a batch explained image by image, again
    (the same class) saying why its output held one image; other errors as they are."""
    text = exc.args[0] if len(exc.args) == 1 and isinstance(exc.args[0], str) else ""
    if not text.startswith("the target failed on"):
        return exc
    layers = ", ".join(repr(name) for name in probe.batch_dependent[:3])
    message = (f"{text} (this model's layers {layers} use batch statistics, so each of the {images} images is "
               "explained alone and a target callable sees one image's output at a time: write it for any batch "
               "size, e.g. out[:, k], or give a class index or a list of one class per image)")
    return same_kind(exc, message)


def layer_gradient(
    model_or_probe: nn.Module | Probe, x: torch.Tensor, target: Target | int, layer: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """The activation ``A`` of ``layer`` and the gradient ``dy/dA`` of the target score.

    The building block of the CAM family (and of any new weighting scheme). ``y`` is the
    target's score per image; because images are independent in eval mode, ``dy/dA``
    for the batch is each image's own gradient.

    Args:
        model_or_probe: a model or a :class:`Probe` of it.
        x: preprocessed batch (N, C, H, W).
        target: class index, one class index per image (a list, or a 1-D integer tensor or
            array, as ``ClassLogits``: each image's gradient is for its own class), or target
            callable (``ChannelActivation`` of a layer at or after ``layer`` runs only the needed
            prefix).
        layer: layer name (see ``probe.layers``).

    Returns:
        ``(A, dA)``, both detached, same shape (N, ...), contiguous (the standard layout, also
        where the probe computes in channels-last), on the probe's device.

    Raises:
        KeyError: unknown layer (or target layer). IndexError: class or channel out of range.
        ValueError: a layer that never runs, or a target that does not depend on ``layer``
            (its layer runs before it); ``layer`` or the target's layer with a feature map that is
            empty at this input size (see :func:`~cnnwidgets.core.layers.check_map_not_empty`).
        TypeError: a layer that does not return a tensor, an unsupported target.
        RuntimeError: a target whose score does not depend on the input at all (it detaches
            the output or is a constant; see :func:`~cnnwidgets.methods.gradients.require_graph`).
    """
    activation, grad = _layer_gradient(model_or_probe, x, target, layer, "layer_gradient")
    # a probe that computes in channels-last hands out its strides: view(N, -1) would fail on them
    return activation.contiguous(), grad.contiguous()


def _layer_gradient(
    model_or_probe: nn.Module | Probe, x: torch.Tensor, target: Target | int, layer: str, method: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`layer_gradient`, naming ``method`` in its errors."""
    target = resolve_target(target)
    with gradients_enabled(), probe_scope(model_or_probe) as probe:
        if _one_at_a_time(probe, x):
            targets = [target] * x.shape[0]
            if isinstance(target, ClassLogits):  # one class per image: each image alone gets its own class
                _check_one_per_image(target.indices, x.shape[0], "ClassLogits")
                targets = [ClassLogits((index,), target.layer) for index in target.indices]
            try:
                parts = [_layer_gradient(probe, x[i:i + 1], one, layer, method) for i, one in enumerate(targets)]
            except (TypeError, IndexError, KeyError) as exc:
                raise _alone_failure(exc, probe, x.shape[0]) from exc
            return torch.cat([a for a, _ in parts]), torch.cat([g for _, g in parts])
        layers_for(probe, x)
        info = probe.check_layer(layer)
        if info.calls == 0:
            raise ValueError(f"layer {layer!r} does not run in this model's forward pass")
        readable_layer(probe, layer)
        check_target_layer(probe, target)
        record: list[torch.Tensor] = []
        handle = _hook_output(probe.module(layer), record, leaf=True)
        try:
            scores = target_score(probe, x.detach(), target, grad=True)
        finally:
            handle.remove()
        if not record:
            raise ValueError(
                f"the target's layer {target.layer!r} is computed before layer {layer!r}; "
                "its score does not depend on that layer"
            )
        activation = record[-1]
        if not scores.requires_grad:
            # Nothing before the layer requires grad in the probe's copy, so a score not connected to
            # the layer's leaf depends on the input by another path (a branch beside the layer), or
            # on nothing at all (a target that detaches), which require_graph tells.
            require_graph(target_score(probe, input_leaf(probe, x), target, grad=True), method)
            raise ValueError(f"the target's score does not depend on layer {layer!r}")
        (grad,) = torch.autograd.grad(scores.sum(), activation, allow_unused=True)
        if grad is None:
            raise ValueError(f"the target's score does not depend on layer {layer!r}")
        return activation.detach(), grad.detach()


def _weighted_sum(weights: torch.Tensor, activation: torch.Tensor) -> torch.Tensor:
    """``sum_k w[n, k] A[n, k]`` for weights (N, K) and activations (N, K, h, w)."""
    return torch.einsum("nk,nkhw->nhw", weights, activation).contiguous()


def _gradient_map(
    model_or_probe: nn.Module | Probe, x: torch.Tensor, target: Target | int, layer: str | None, method: str, weigh
) -> torch.Tensor:
    target = resolve_target(target)
    with probe_scope(model_or_probe) as probe:
        layers_for(probe, x)
        if layer is None:
            layer = _nearest_map_layer(probe, target.layer, method)
        info = _spatial_layer(probe, layer, method)
        activation, grad = _layer_gradient(probe, x, target, layer, method)
        # a channels-last (H, W, C) layer (Swin, ConvNeXt blocks) is weighed per channel all the same
        activation, grad = info.channels_first(activation), info.channels_first(grad)
        maps = _weighted_sum(weigh(activation, grad), activation).clamp(min=0)
        _warn_if_empty(maps, grad, layer, method)
        return maps.to(x.device)


def grad_cam(
    model_or_probe: nn.Module | Probe, x: torch.Tensor, target: Target | int, layer: str | None = None
) -> torch.Tensor:
    """Grad-CAM map (Selvaraju et al. 2017): ``ReLU(sum_k w_k A_k)``, ``w_k = mean_ij dy/dA_kij``.

    Args:
        model_or_probe: a model or a :class:`Probe` of it.
        x: preprocessed batch (N, C, H, W).
        target: class index (the class logit, as in the paper), one class index per image (a
            list, or a 1-D integer tensor or array: each image's map is for its own class), or
            target callable.
        layer: any layer with a (K, h, w) output, usually the last convolutional block; a
            channels-last (h, w, K) output (``LayerInfo.layout == "HWC"``, as in Swin
            transformers) is read channels first. Default (None): ``nearest_conv_layer(probe,
            target.layer)`` (see :func:`nearest_conv_layer`, the layer the explorer's Grad-CAM
            uses): for a target on the model's output, the last feature map larger than 1x1 the
            model computes, usually the output of the last convolutional block (ResNet's
            ``layer4``, the ``features`` of DenseNet and MobileNet); for a target at an internal
            layer, that layer when it is such a feature map, else the last one before it.

    Returns:
        Non-negative map (N, h, w) at the layer's resolution, float32 on ``x``'s device.

    Raises:
        KeyError, IndexError, TypeError, RuntimeError: as :func:`layer_gradient`.
        ValueError: a layer without a (K, h, w) output, or one the target does not depend on;
            without ``layer``, a model that computes no feature map larger than 1x1 (before the
            target's layer).

    Warns:
        EmptyMapWarning: for images whose map is zero everywhere (``sum_k w_k A_k <= 0`` at every
            position: no positive evidence for the target at that layer), naming them; with
            ``zero_gradient=True`` for those whose gradient at the layer is zero at every unit
            (the score does not depend on the layer: a classifier head initialised to zero).
    """

    def weigh(activation: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        return grad.mean(dim=(2, 3))

    return _gradient_map(model_or_probe, x, target, layer, "grad_cam", weigh)


def grad_cam_pp(
    model_or_probe: nn.Module | Probe,
    x: torch.Tensor,
    target: Target | int,
    layer: str | None = None,
    *,
    eps: float = 0.0,
) -> torch.Tensor:
    """Grad-CAM++ map (Chattopadhay et al. 2018, eq. 19 with the ReLU of eq. 7).

    ``w_k = sum_ij a_kij ReLU(g_kij)``, ``a_kij = g_kij^2 / (2 g_kij^2 + g_kij^3 * sum_ab A_kab + eps)``
    with ``g = dy/dA`` (``a_kij = 0`` where ``g_kij = 0`` or the denominator vanishes), and
    ``L = ReLU(sum_k w_k A_k)``. The paper takes ``A`` after a ReLU (``A >= 0``); on a layer with
    signed activations (a convolution before its batch norm, a Hardswish or SiLU output) the
    denominator can reach zero or below, and a ``RuntimeWarning`` says so when it does.

    Args:
        model_or_probe, x, target, layer: as :func:`grad_cam` (the same default layer; a class
            index, or one per image, or a target callable).
        eps: added to the denominator of ``a_kij`` (0: the paper's formula; pytorch-grad-cam
            uses 1e-6, which matters when gradients are tiny, as in untrained networks). A
            finite number >= 0.

    Returns:
        Non-negative map (N, h, w) at the layer's resolution, float32 on ``x``'s device.

    Raises:
        As :func:`grad_cam`; also ``TypeError`` for an ``eps`` that is not a real number and
        ``ValueError`` for a negative or non-finite one.

    Warns:
        EmptyMapWarning: as :func:`grad_cam`.
        RuntimeWarning: where a signed layer drives the denominator of ``a_kij`` to zero or below.
    """
    if isinstance(eps, (bool, np.bool_)) or not isinstance(eps, numbers.Real):
        raise TypeError(f"eps must be a real number >= 0, got {type(eps).__name__}")
    if not (math.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps must be a finite number >= 0 (0: the paper's formula), got {eps}")
    eps = float(eps)

    def weigh(activation: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        grad2 = grad * grad
        denominator = 2 * grad2 + activation.sum(dim=(2, 3), keepdim=True) * grad2 * grad + eps
        usable = (grad != 0) & (denominator != 0)
        # With activations >= 0 (after a ReLU, as the paper assumes) the denominator is positive
        # wherever the gradient is; a signed layer can drive it to zero or below, and a_kij then
        # explodes or flips the sign of the channel's weight.
        flipped = int((usable & (grad > 0) & (denominator <= 0)).any(dim=(2, 3)).sum())
        if flipped:
            warnings.warn(
                f"grad_cam_pp: the layer's activations are signed, and for {flipped} channel(s) the "
                "denominator of a_kij is <= 0, which makes their weights blow up or change sign. "
                "Grad-CAM++ assumes activations >= 0: use the layer after the ReLU, or grad_cam",
                RuntimeWarning,
                stacklevel=4,  # weigh <- _gradient_map <- grad_cam_pp <- its caller
            )
        alpha = torch.where(usable, grad2 / torch.where(usable, denominator, torch.ones_like(denominator)), 0.0)
        return (alpha * grad.clamp(min=0)).sum(dim=(2, 3))

    return _gradient_map(model_or_probe, x, target, layer, "grad_cam_pp", weigh)


def _last_linear(probe: Probe, layers: dict[str, LayerInfo]) -> str:
    linear = [name for name, info in layers.items() if info.calls > 0 and isinstance(probe.module(name), nn.Linear)]
    if not linear:
        raise ValueError(
            "CAM needs a model whose last layer is nn.Linear after global average pooling; none found. Where the "
            "classifier is a convolution before the global pooling (SqueezeNet, NiN), that convolution's output "
            "(after its ReLU) is the class map itself: read channel c of it with Probe.capture; or use grad_cam, "
            "which needs no nn.Linear"
        )
    return linear[-1]


def _global_pool(probe: Probe, info: LayerInfo) -> bool:
    """Whether a layer is an average-pooling module that reduces its input to 1x1 (global pooling)."""
    return isinstance(probe.module(info.name), _POOLS) and _positions(info) == 1


def cam(
    model_or_probe: nn.Module | Probe,
    x: torch.Tensor,
    target: ClassLogit | int,
    layer: str | None = None,
    *,
    fc: str | None = None,
) -> torch.Tensor:
    """Class activation map (Zhou et al. 2016, eq. 2): ``M_c(i, j) = sum_k W[c, k] f_k(i, j)``.

    ``f_k`` are the feature maps that global average pooling turns into the features of the
    final linear layer ``fc`` (weights ``W``). The model must really end that way: the
    function checks that what ``fc`` reads is ``mean_ij f`` (up to float rounding) and raises
    otherwise. The scores explained are ``fc``'s outputs, the logits, also when the model
    applies a softmax or a sigmoid after it. The bias is a constant and is left out, as in
    the paper.

    ``f`` is read when the forward pass has ended: it is the tensor the pooling averages,
    including in-place changes the model makes to it after the layer. DenseNet applies
    ``F.relu(features, inplace=True)`` before its functional pooling, so with
    ``layer="features"`` (its default) ``f`` is ``ReLU`` of that layer's output: the maps that
    really are pooled. (:func:`grad_cam` at the same layer uses the layer's own output.)

    Args:
        model_or_probe: a model or a :class:`Probe` of it (e.g. torchvision ResNets).
        x: preprocessed batch (N, C, H, W).
        target: a class index or :class:`ClassLogit` (CAM explains class scores only), or one
            class index per image (a list, or a 1-D integer tensor or array).
        layer: the layer whose output (as the forward pass leaves it, see above) is ``f``;
            a channels-last (h, w, K) output is read channels first. Default: of the layers
            that run before ``fc``, the one that ends last among those that have ``K``
            channels (``K = fc.in_features``) and are either an average-pooling module
            (``nn.AdaptiveAvgPool2d`` / ``nn.AvgPool2d``) with a 1x1 output - then ``f`` is
            that module's input (ResNet's ``avgpool``) - or a feature map larger than 1x1 -
            then ``f`` is its output, pooled by a function in the model's forward (DenseNet's
            and MobileNet's ``features``). A pooling module that keeps a map larger than 1x1
            (DenseNet's transitions) is not global pooling.
        fc: the final ``nn.Linear``. Default: the last ``nn.Linear`` that runs.

    Returns:
        Signed map (N, h, w) at the features' resolution, float32 on ``x``'s device.

    Raises:
        TypeError: a target other than a class score, a class index that is not an int.
        KeyError: unknown layer names. IndexError: class out of range, or negative.
        ValueError: the model does not end in global average pooling + ``fc`` at these layers
            (the message names the last feature map with ``K`` channels before ``fc`` when
            that is a layer to try), its output is not ``fc``'s output (nor a softmax or
            sigmoid of it), or its class scores or features are not finite (NaN or inf).
    """
    if isinstance(target, (*INDEX_TYPES, list, tuple, np.ndarray)):
        target = resolve_target(target)  # a class index (or one per image), read as every method reads it
    # one class per image: each image's map is made for its own class
    per_image = target.indices if isinstance(target, ClassLogits) and target.layer is None else None
    if per_image is None and (not isinstance(target, ClassLogit) or target.layer is not None):
        raise TypeError(f"CAM explains a class score: pass a class index (or one per image) or ClassLogit, got {target!r}")
    # one check of the user's model for the many layer lookups below (each would walk every
    # parameter again: 145 ms around efficientnet_b0's 22 ms forward)
    with probe_scope(model_or_probe) as probe, probe.synced():
        if per_image is not None:
            _check_one_per_image(per_image, check_batch(x).shape[0], "cam")
        if per_image is not None or _one_at_a_time(probe, x):
            targets = per_image if per_image is not None else [target] * x.shape[0]
            return torch.cat([cam(probe, x[i:i + 1], one, layer=layer, fc=fc) for i, one in enumerate(targets)])
        layers = layers_for(probe, x)
        fc_name = fc if fc is not None else _last_linear(probe, layers)
        fc_module = probe.module(fc_name)
        if not isinstance(fc_module, nn.Linear):
            raise ValueError(f"fc must name an nn.Linear layer; {fc_name!r} is {type(fc_module).__name__}")
        fc_info = probe.check_layer(fc_name)
        width = fc_module.in_features
        # the layer to suggest: the last feature map before fc (larger than 1x1) with fc's width
        candidate = _latest_map_before(layers, fc_info, lambda i: i.map_shape[0] == width and _positions(i) > 1)
        # the last map with fc's width when it has shrunk to 1x1 (an input smaller than the model's
        # usual size): CAM is defined there but is one value, and no larger map with that width follows
        # (pooling layers are left out: one that pools to 1x1 does so at any input size)
        # ... looked for before the last pooling to 1x1 ahead of fc: what comes after it (a
        # LayerNorm over the pooled features, as in ConvNeXt) is 1x1 at every input size
        pooled = _latest_map_before(
            layers, fc_info, lambda i: _positions(i) == 1 and isinstance(probe.module(i.name), _POOLING)
        )
        last_wide = _latest_map_before(
            layers, pooled or fc_info,
            lambda i: i.map_shape[0] == width and not isinstance(probe.module(i.name), _POOLING),
        )
        one_value = (f": 1x1 at this input size ({'x'.join(str(v) for v in x.shape[2:])}), where CAM is a single "
                     "value, not a map. Use a larger input (the size the model was made for)")
        shrunk = (
            f"; the last feature map with {width} channels before {fc_name!r}, {last_wide.name!r}, is "
            f"{last_wide.shape_text}{one_value}, or pass layer={last_wide.name!r} for that value"
            if last_wide is not None and _positions(last_wide) == 1 else ""
        )
        # Every hook goes into this list as it is registered, inside the try: an interrupt
        # between two registrations leaves none of them on the probe's copy.
        handles: list[torch.utils.hooks.RemovableHandle] = []
        try:
            record: list[torch.Tensor] = []
            layer_info = None
            if layer is None:
                chosen = _latest_map_before(
                    layers, fc_info, lambda i: i.map_shape[0] == width and (_positions(i) > 1 or _global_pool(probe, i))
                )
                if chosen is None:
                    if shrunk:
                        raise ValueError(f"CAM needs the {width} features of {fc_name!r} to be globally averaged "
                                         f"feature maps larger than 1x1{shrunk}")
                    last = _latest_map_before(layers, fc_info, lambda i: True)
                    seen = f" (the last feature map before it, {last.name!r}, is {last.shape_text})" if last else ""
                    raise ValueError(
                        f"CAM needs the {width} features of {fc_name!r} to be globally averaged feature maps, but no "
                        f"feature map with {width} channels, average-pooled to 1x1 or not, runs before it{seen}: its "
                        f"features are something else (flattened maps, or another Linear layer's output); CAM is "
                        f"undefined for this model, use grad_cam"
                    )
                if _global_pool(probe, chosen):
                    owner = threading.get_ident()

                    def pre_hook(module: nn.Module, args: tuple) -> None:
                        if threading.get_ident() == owner:
                            record[:] = [args[0].detach()]

                    handles.append(probe.module(chosen.name).register_forward_pre_hook(pre_hook))
                    source = f"the input of {chosen.name!r}"
                else:
                    layer, layer_info = chosen.name, chosen
            if layer is not None:
                layer_info = _spatial_layer(probe, layer, "cam")
                handles.append(_hook_output(probe.module(layer), record, leaf=False))
                source = f"layer {layer!r}"
            suggestion = ""
            if candidate is not None and candidate.name != layer:
                suggestion = (
                    f"; pass layer={candidate.name!r} (the last feature map with {width} channels before {fc_name!r})"
                )
            fc_seen: list[torch.Tensor] = []  # fc's input and output, of its last call
            owner = threading.get_ident()

            def fc_hook(module: nn.Module, args: tuple, output: object) -> None:
                if threading.get_ident() == owner and args and isinstance(output, torch.Tensor):
                    fc_seen[:] = [args[0].detach().clone(), output.detach()]

            handles.append(fc_module.register_forward_hook(fc_hook))
            # the suggested layer's maps too, so that it is suggested only where CAM holds there
            candidate_record: list[torch.Tensor] = []
            if suggestion:
                handles.append(_hook_output(probe.module(candidate.name), candidate_record, leaf=False))
            # grad=True bypasses the cache so the hook sees a real forward (nothing requires grad,
            # so no graph is built).
            output = probe.logits(x, grad=True).detach()
        finally:
            for handle in handles:
                handle.remove()
        if not fc_seen or not record:
            raise ValueError(f"cam: {fc_name!r} or {source} did not run on this input; CAM is undefined here, use grad_cam")
        fc_input, fc_output = fc_seen
        # the scores CAM explains: fc's own output, also where the model applies a softmax after it
        scores = target(fc_output.reshape(fc_output.shape[0], -1))
        features = record[-1] if layer_info is None else layer_info.channels_first(record[-1])
        if features.dim() != 4:
            raise ValueError(f"CAM needs (K, h, w) feature maps; {source} has shape {tuple(features.shape[1:])}")
        if layer_info is None and features.shape[2] * features.shape[3] == 1:
            # the maps a pooling module averages have shrunk to 1x1 at this input size
            raise ValueError(
                f"CAM needs the {width} features of {fc_name!r} to be globally averaged feature maps larger than "
                f"1x1, but {source} is {tuple(features.shape[1:])}"
                + (shrunk or one_value)
            )
        weight = fc_module.weight
        if weight.shape[1] != features.shape[1]:
            raise ValueError(
                f"{fc_name!r} takes {weight.shape[1]} features but {source} has {features.shape[1]} channels; "
                "CAM needs the feature maps that global average pooling turns into the final linear layer's input"
                + (suggestion or " (use grad_cam)")
            )
        index = target.index  # in range: target(fc_output) above checked it
        averaged = features.float().mean(dim=(2, 3))
        given = fc_input.float().reshape(fc_input.shape[0], -1)
        if not (bool(torch.isfinite(scores).all()) and bool(torch.isfinite(averaged).all())):
            raise ValueError(
                f"cam: the score for class {index} or the global average of {source} is not finite (NaN or "
                "inf); CAM needs finite features and weights (check the input and the model's weights: has "
                "training diverged?)"
            )
        # CAM is defined when fc reads the global average of these maps. Checked on fc's input,
        # not on its scores: a zero-initialised head (a model before fine-tuning) scores every
        # input alike, whatever it reads.
        tolerance = 1e-4 * (1.0 + float(given.abs().max())) if given.numel() else 1e-4

        def reads_the_average_of(maps: torch.Tensor) -> bool:
            mean = maps.float().mean(dim=(2, 3))
            return mean.shape == given.shape and torch.allclose(mean, given, rtol=1e-4, atol=tolerance)

        if not reads_the_average_of(features):
            difference = (
                f"max difference {float((averaged - given).abs().max()):.3g}" if given.shape == averaged.shape
                else f"it reads {tuple(given.shape[1:])} features per image"
            )
            better = ""
            if suggestion and source.startswith("layer") and candidate_record:
                maps = candidate.channels_first(candidate_record[-1])
                if maps.dim() == 4 and reads_the_average_of(maps):
                    better = suggestion.replace("; pass", " or pass")
                else:
                    better = (f" (nor is it that of {candidate.name!r}, the last feature map before it: the model "
                              "pools in another way, max pooling say, and CAM is undefined for it)")
            if shrunk and last_wide.name != layer:
                raise ValueError(f"the input of {fc_name!r} is not the global average of {source} ({difference})"
                                 f"{shrunk}")
            between = ""
            if not better and pooled is not None and source == f"the input of {pooled.name!r}":
                # the maps are pooled, but something changes the pooled features on their way to fc
                between = (f" (a layer between {pooled.name!r} and {fc_name!r}, a normalisation say, changes the "
                           "pooled features, so the class score is no weighted sum of the maps)")
            raise ValueError(
                f"the input of {fc_name!r} is not the global average of {source} ({difference}); CAM is "
                "undefined here, use grad_cam" + (better or between)
            )
        if not _gives_the_output(fc_output, output):
            raise ValueError(
                f"the model's output is not the output of {fc_name!r} (nor its softmax or sigmoid): CAM explains "
                "the class scores of the final linear layer, pass that layer as fc, or use grad_cam"
            )
        maps = torch.einsum("k,nkhw->nhw", weight[index].float(), features.float())
        return maps.contiguous().to(x.device)


def _gives_the_output(fc_output: torch.Tensor, output: torch.Tensor) -> bool:
    """Whether the model's output is ``fc_output``, or its softmax, log-softmax or sigmoid
    over the classes (what :func:`cam` explains is then a score of the model's classes)."""
    n = fc_output.shape[0]
    if output.shape[0] != n or output[0].numel() != fc_output[0].numel():
        return False
    scores, model = fc_output.float().reshape(n, -1), output.float().reshape(n, -1)
    tolerance = 1e-4 * (1.0 + float(scores.abs().max())) if scores.numel() else 1e-4
    candidates = (scores, torch.softmax(scores, 1), torch.log_softmax(scores, 1), torch.sigmoid(scores))
    return any(torch.allclose(model, c, rtol=1e-4, atol=tolerance) for c in candidates)


def upsample(maps: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinearly resize ``maps`` (N, h, w) to ``size`` = (H, W), e.g. ``x.shape[-2:]``.

    Pixel centres are aligned (``align_corners=False``: output pixel ``i`` samples the
    input at ``(i + 0.5) * h / H - 0.5``, clamped at the borders), the convention of
    ``cv2.resize`` and PIL. The map is stretched over the whole image; it ignores the
    receptive-field offsets of the layer, as the papers' reference implementations do.

    Returns:
        (N, H, W) float tensor on the maps' device.

    Raises:
        TypeError: maps that are not a tensor (a numpy array: convert it with ``torch.from_numpy``),
            or a size that is not a pair of ints (floats such as ``64.0`` included).
        ValueError: maps not 3-D, maps of height or width 0, or a size with an entry below 1.
    """
    if not isinstance(maps, torch.Tensor):
        hint = "; convert it with torch.from_numpy(maps)" if isinstance(maps, np.ndarray) else ""
        raise TypeError(
            f"upsample expects maps as a torch.Tensor of shape (N, h, w), got a {type(maps).__module__}."
            f"{type(maps).__name__}{hint}"
        )
    if maps.dim() != 3:
        raise ValueError(f"expected maps of shape (N, h, w), got {tuple(maps.shape)}")
    if maps.shape[1] < 1 or maps.shape[2] < 1:
        raise ValueError(f"maps must have a height and width of at least 1, got shape {tuple(maps.shape)}")
    try:
        size = as_pair(size, "size", ("height", "width"), "a (height, width) pair of ints")
    except TypeError as exc:
        raise TypeError(f"{exc} (for example x.shape[-2:])") from None
    if min(size) < 1:
        raise ValueError(f"size must be (H, W) with positive entries, got {size}")
    return F.interpolate(maps[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0]


def _finish_keys(layers: dict[str, LayerInfo]) -> dict[str, tuple[int, int]]:
    """For every layer that runs, a key that sorts layers by when their forward call ends.

    Calls nest (a container ends after everything it runs), so a layer ends after the last
    module to start inside it, and before the containers around it: the key is (the largest
    ``order`` in the layer's subtree of qualified names, minus its depth). A layer that runs
    several times is placed by its first call, as ``order`` is.
    """
    last = {name: info.order for name, info in layers.items() if info.calls > 0}
    for name, info in layers.items():
        if info.calls == 0:
            continue
        parts = name.split(".")
        for depth in range(1, len(parts)):
            parent = ".".join(parts[:depth])
            if parent in last:
                last[parent] = max(last[parent], info.order)
    return {name: (value, -name.count(".")) for name, value in last.items()}


#: Pooling modules, whose 1x1 output says nothing about the input size.
_POOLING = (
    nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveMaxPool2d, nn.AdaptiveAvgPool2d, nn.LPPool2d, nn.FractionalMaxPool2d,
)


def _latest_map_before(layers: dict[str, LayerInfo], before: LayerInfo, accept) -> LayerInfo | None:
    """The layer whose forward call ends last before ``before`` starts, among the layers that run,
    have a feature-map output (``map_shape``, either layout) and pass ``accept``; None if none.

    The containers around ``before`` are not before it (they end after it); of a block and the
    layers inside it that end together (``layer4``, ``layer4.1``, ``layer4.1.bn2``), the
    block, which ends last, wins.
    """
    keys = _finish_keys(layers)
    candidates = [
        name
        for name, key in keys.items()
        if key[0] < before.order and layers[name].map_shape is not None and accept(layers[name])
    ]
    return layers[max(candidates, key=keys.__getitem__)] if candidates else None


def _positions(info: LayerInfo) -> int:
    """h * w of a layer's feature maps (0 for an output that is not a feature map)."""
    return 0 if info.map_shape is None else info.map_shape[1] * info.map_shape[2]


def _resampled_copy(info: LayerInfo) -> bool:
    """An adaptive pooling whose output units are no regular grid over the input (no ``jump``):
    it enlarges a smaller map (AlexNet's and VGG's ``avgpool`` on an input below their design
    size copy a 1x1 or 2x2 map out to 6x6 or 7x7) or pools unevenly. Its map repeats the map
    it was given, so a Grad-CAM of it is blocky or constant: the map before it is used."""
    return info.type.startswith("Adaptive") and info.type.endswith("Pool2d") and info.jump is None


def _gradcam_map(info: LayerInfo) -> bool:
    """A feature map Grad-CAM can use: more than 1x1 positions, not a resampled copy."""
    return _positions(info) > 1 and not _resampled_copy(info)


def _whole_block_map(layers: dict[str, LayerInfo], before: LayerInfo | None):
    """:func:`_gradcam_map`, leaving out the layers inside a block that ends before ``before``
    (the whole model for None) with a map that is not one and more channels than theirs (a
    reduction block whose output is 1x1, as Inception's ``Mixed_7a`` on a small input): such a
    layer is a branch holding a slice of the block's channels, and the block before it holds
    the whole representation. (Inside a plain chain, whose layers have as many channels as its
    output, a layer is the whole representation at its point and stays.)"""
    anchor = None if before is None else before.name

    def accept(info: LayerInfo) -> bool:
        if not _gradcam_map(info):
            return False
        parts = info.name.split(".")
        for depth in range(1, len(parts)):
            block = layers.get(".".join(parts[:depth]))
            if block is None or block.calls == 0 or block.map_shape is None:
                continue
            if anchor is not None and (anchor == block.name or anchor.startswith(block.name + ".")):
                continue  # a container of the anchor does not end before it
            if not _gradcam_map(block) and block.map_shape[0] > info.map_shape[0]:
                return False
        return True

    return accept


def nearest_conv_layer(model_or_probe: nn.Module | Probe, layer: str | None = None) -> str:
    """The layer a Grad-CAM map for ``layer`` uses (the explorer's fallback for a layer
    without a spatial map, such as ``avgpool`` or ``fc``, and the default layer of
    :func:`grad_cam` and :func:`grad_cam_pp`).

    Rule: ``layer`` itself when it runs and its output is a feature map with more than 1x1
    positions, (C, H, W) or channels-last (H, W, C) (``LayerInfo.map_shape``); else the
    feature-map layer with more than 1x1 positions whose forward call ends last before
    ``layer`` starts, in execution order. Of a block and the layers inside it that end at the
    same point, the widest block wins: ``avgpool`` of a ResNet gives ``layer4`` (not
    ``layer4.1`` or ``layer4.1.bn2``), the classifier of DenseNet, MobileNet and ConvNeXt
    ``features``, ``avgpool`` of a Swin transformer ``permute`` (its channels-last ``norm``
    output made (C, H, W); the Grad-CAM of both is the same). VGG's ``avgpool`` (adaptive
    pooling to 7x7) is a feature map itself and is kept, and is what its classifier gets; on an
    input below their design size, where AlexNet's and VGG's ``avgpool`` only copy a smaller
    map out to 6x6 or 7x7 (an adaptive pooling whose units form no regular grid over the
    input), the map before it is used. A branch inside a block that ends before ``layer`` with
    a 1x1 (or resampled) map and more channels than the branch (a reduction block of Inception
    v3 on a small input) is passed over too: the block before it holds the whole representation.
    The containers around ``layer`` are not before it. ``layer=None`` stands for the model's
    output (as a target's ``layer`` does): the feature map with more than 1x1 positions whose
    forward call ends last in the whole model, by the same rule. The name is historical: the
    layer is the nearest feature map, usually the output of the last convolutional block, not
    necessarily a convolution.

    Args:
        model_or_probe: a :class:`Probe` (its current layer table, ``probe.layers``, is used) or
            a model (described by a temporary probe at its default input size, see
            :attr:`Probe.layers`; pass a probe described at the input size in use when the
            answer may depend on it).
        layer: the layer name, or None for the model's output.

    Returns:
        The name of the layer (a key of ``probe.layers``).

    Raises:
        KeyError: unknown layer. ValueError: ``layer`` never runs, or no feature map larger
            than 1x1 is computed before it (in the model, for ``layer=None``): the message says
            that the model has no layer with a spatial map there.
        TypeError: for something that is neither a model nor a probe.
        RuntimeError: for a model (not a probe) that runs on none of the input sizes tried: the
            message says to pass ``Probe(model, input_size=(C, H, W))`` instead.
    """
    return _nearest_map_layer(model_or_probe, layer, "nearest_conv_layer")


_NO_MAP = "no layer with a feature-map output larger than 1x1 ((C, H, W) or channels-last (H, W, C)) runs"


def _nearest_map_layer(model_or_probe: nn.Module | Probe, layer: str | None, caller: str) -> str:
    """:func:`nearest_conv_layer`, for ``caller``: ``"nearest_conv_layer"``, or the method whose
    default layer it picks (``"grad_cam"``, ``"grad_cam_pp"``), which its errors name."""
    with probe_scope(model_or_probe) as probe:
        try:
            layers = probe.layers
        except RuntimeError as exc:
            error = exc if isinstance(model_or_probe, Probe) else _size_error(exc, caller, layer)
            if error is exc:
                raise
            raise error from exc.__cause__
        if layer is None:
            keys = _finish_keys(layers)
            accept = _whole_block_map(layers, None)
            maps = [name for name in keys if accept(layers[name])]
            if not maps:
                raise ValueError(f"{caller}: {_NO_MAP} in this model{_no_map_reason(caller, '')}")
            return max(maps, key=keys.__getitem__)
        info = probe.check_layer(layer)
    if info.calls == 0:
        raise ValueError(f"layer {layer!r} does not run in this model's forward pass")
    if _gradcam_map(info):
        return layer
    chosen = _latest_map_before(layers, info, _whole_block_map(layers, info))
    if chosen is None:
        raise ValueError(
            f"{caller}: {_NO_MAP} before layer {layer!r}, which outputs {info.shape_text}"
            f"{_no_map_reason(caller, ' before it')}"
        )
    return chosen.name


def _no_map_reason(caller: str, where: str) -> str:
    """Why a ``caller`` found no feature map (``where``: ``""`` for the whole model, or ``" before it"``)."""
    if caller == "nearest_conv_layer":
        return (f": the model has no layer with a spatial map{where} (it has linear layers only, or its maps are "
                "1x1 at this input size: describe the probe at a larger one), so there is none to give")
    return "; Grad-CAM needs such a layer"


#: What :meth:`Probe.fit_input_size` tells a caller that can take an ``input_size``.
_GIVE_SIZE = "give the size it expects, e.g. input_size=(C, H, W)"


def _size_error(exc: RuntimeError, caller: str, layer: str | None) -> RuntimeError:
    """``exc``, a model that runs on none of the input sizes tried, told to a ``caller`` that takes no
    ``input_size`` (called with ``layer``): the size goes to a probe of the model instead."""
    text = str(exc)
    if type(exc) is not RuntimeError or _GIVE_SIZE not in text:
        return exc  # another kind of input, channels-last ...: its own message says what to change
    advice = (f"{caller} takes no input_size: give the size to a probe of the model and pass that, "
              f"{caller}(Probe(model, input_size=(C, H, W)){'' if layer is None else f', {layer!r}'})")
    error = RuntimeError(f"{caller}: {text.replace(_GIVE_SIZE, advice)}")
    error.__cause__ = exc.__cause__
    return error
