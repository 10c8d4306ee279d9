"""Gradient-based input attributions: saliency, guided backpropagation, deconvnet projections.

All three push a signal from a target back to the input pixels. They differ only in how
a ReLU ``y = max(x, 0)`` passes the signal ``R_out`` arriving at its output on to its
input:

=================  ==================================  =================================
method             ReLU backward rule                   reference
=================  ==================================  =================================
saliency           ``R_in = R_out * [x > 0]``           Simonyan, Vedaldi & Zisserman [1]
                   (the true gradient)
deconvnet          ``R_in = max(R_out, 0)``             Zeiler & Fergus [2], section 2.1
guided backprop    ``R_in = max(R_out, 0) * [x > 0]``   Springenberg et al. [3]
=================  ==================================  =================================

[1] K. Simonyan, A. Vedaldi, A. Zisserman, "Deep Inside Convolutional Networks: Visualising
    Image Classification Models and Saliency Maps", ICLR workshop 2014 (arXiv:1312.6034).
[2] M. D. Zeiler, R. Fergus, "Visualizing and Understanding Convolutional Networks",
    ECCV 2014 (arXiv:1311.2901, 2013).
[3] J. T. Springenberg, A. Dosovitskiy, T. Brox, M. Riedmiller, "Striving for Simplicity:
    The All Convolutional Net", ICLR workshop 2015 (arXiv:1412.6806).

Every other module passes the signal back with its ordinary gradient: a convolution with
its transposed filters, a max-pool through the positions that won in the forward pass
(the deconvnet's "switches"), batch norm in eval mode through its per-channel scale.

How the rules are applied
-------------------------
The functions run on a :class:`~cnnwidgets.core.probe.Probe`'s private inference copy of
the model, never on the user's model. For the modified rules a forward hook on every
``nn.ReLU`` module of that copy replaces the module's output by the output of a small
autograd function that computes the same values and carries the modified backward rule.
The hooks are registered for one call and removed in ``finally``; they act only on
forward passes of the thread that registered them, so another thread using the same
probe meanwhile gets ordinary ReLUs. Because each call of a module builds its own
autograd node, modules that run several times per forward pass (the ReLU shared inside
a torchvision ``BasicBlock``) are handled call by call.

Limitation: ReLUs applied as functions (``F.relu(x)``, ``torch.relu(x)``, ``x.relu()``, and
the ReLU-like ``x.clamp(min=0)``, ``torch.clamp(x, min=0)``, ``F.relu6``, ``F.hardtanh``,
``F.leaky_relu`` called outside an activation module) inside a model's ``forward`` are not
modules and cannot be hooked; they keep the true gradient, as in Captum. The functions count
such calls and warn with
:class:`FunctionalReluWarning` when the result is therefore not the pure method; when
no ``nn.ReLU`` module ran at all (torchvision's GoogLeNet and Inception v3 apply every ReLU
as a function), the warning says that the result is the plain input gradient.
Likewise, other activations (``nn.ReLU6`` in MobileNetV2, ``nn.SiLU`` in EfficientNet,
``nn.GELU`` in ConvNeXt and Swin) keep their true gradient: on a model that applies no ReLU
at all, guided backprop and the deconvnet are the plain gradient (as in Captum), and the
functions warn with :class:`NoReluWarning`, naming the activation modules the model has.
On a model that mixes ``nn.ReLU`` modules with other activation modules (MobileNetV3:
``nn.ReLU``, ``nn.Hardswish`` and ``nn.Hardsigmoid``) the result mixes the two rules, and the
functions warn with :class:`MixedActivationWarning`, naming the other activations with the
number of their modules that ran. An activation module after which no module with
parameters ran (a ``nn.Sigmoid`` on the model's output, or the activation the target reads)
is not counted: it only rescales each output value by a factor of its own and mixes nothing.

A target whose score does not change with any pixel of an image (a classifier head
initialised to zero, as torchvision's ViT; every unit on the way switched off) has a gradient
of zero there: the map is blank, and the functions warn with :class:`EmptyMapWarning`.

A channel that is not active on an image (its largest activation is <= 0) has nothing
to project: :func:`project_channel` gives a zero map for it and warns with
:class:`InactiveChannelWarning`.

Gradients are taken with :func:`torch.autograd.grad` with respect to a private copy of
the input, so no parameter's ``.grad`` is ever written. The functions enable gradients for
their own computation (see :func:`gradients_enabled`), so they also work when called under
``torch.no_grad()``, ``torch.set_grad_enabled(False)`` or ``torch.inference_mode()``; the
caller's mode is unchanged when they return. Each image's score depends on
that image only (the copy is in eval mode), so the result for a batch equals the
results for its images one by one.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from cnnwidgets.core.layers import LayerInfo, check_map_not_empty
from cnnwidgets.core.probe import Probe, check_batch, check_channel_axis, probe_scope
from cnnwidgets.core.targets import Target, as_flag, as_index, as_pair, resolve_target, target_score
from cnnwidgets.methods._quiet import QuietSwitch

__all__ = [
    "EmptyMapWarning",
    "FunctionalReluWarning",
    "InactiveChannelWarning",
    "MixedActivationWarning",
    "NoReluWarning",
    "Unit",
    "deconvnet",
    "empty_maps_quietly",
    "guided_backprop",
    "project_channel",
    "saliency",
    "strongest_unit",
]
# Also importable, shared with the other method modules: check_batch, layers_for, input_leaf, relu_rule,
# relu_report, gradients_enabled, activation_types, activation_kind, hook_activations, no_relu_reason, require_graph,
# readable_layer, check_target_layer.

Unit = Literal["max", "all"] | tuple[int, int]
"""Which part of a channel :func:`project_channel` projects: ``"max"``, ``"all"`` or ``(row, col)``."""

Rule = Literal["gradient", "guided", "deconvnet"]


class FunctionalReluWarning(UserWarning):
    """A model applies ReLU as a function, which the modified backward rules cannot reach."""


class NoReluWarning(UserWarning):
    """A model applies no ReLU at all: the modified backward rules change nothing (the plain gradient)."""


class MixedActivationWarning(UserWarning):
    """Besides ``nn.ReLU`` modules, a model ran other activation modules, which keep their true
    gradient: the modified backward rule's result mixes it with the plain gradient."""


class InactiveChannelWarning(RuntimeWarning):
    """The channel :func:`project_channel` projects is not active on an image (largest value <= 0): a zero map."""


_NOT_ELEMENTWISE = frozenset({"MultiheadAttention", "Softmax", "Softmin", "LogSoftmax", "Softmax2d"})
"""Classes of ``torch.nn.modules.activation`` that are not activations applied value by value."""


class EmptyMapWarning(RuntimeWarning):
    """A map that is zero everywhere, so nothing is drawn: an input gradient (saliency, guided
    backprop, deconvnet) of zero at every pixel, or a Grad-CAM (or Grad-CAM++) map whose
    ``sum_k w_k A_k <= 0`` at every position of the layer. It is the method's answer, but a
    blank heatmap looks like a failure.

    ``zero_gradient`` is True when the gradient itself is zero (at every pixel, or at every unit
    of Grad-CAM's layer): the target's score does not depend on the input or the layer there.
    False for a Grad-CAM map with a gradient whose weighted sum is nowhere positive. ``message``
    is the warning's text.

    Occlusion maps and correspondence tables that occluding left unchanged warn with a subclass,
    :class:`~cnnwidgets.methods.occlusion.NoOcclusionEffectWarning`.
    """

    def __init__(self, message: str, zero_gradient: bool = False) -> None:
        super().__init__(message)
        self.zero_gradient = zero_gradient


# Whether the methods warn of all-zero maps on this thread (see empty_maps_quietly).
_EMPTY_QUIET = QuietSwitch()


def empty_maps_quietly() -> contextlib.AbstractContextManager[list[Warning]]:
    """Within this block, on this thread, a map that is zero everywhere (saliency, guided
    backprop, deconvnet, Grad-CAM, Grad-CAM++; an occlusion map or a correspondence table that
    occluding left unchanged, see :class:`~cnnwidgets.methods.occlusion.NoOcclusionEffectWarning`)
    gives no :class:`EmptyMapWarning`. For callers that say so themselves, as the explorer's method
    panel does: the block yields a list that receives the warnings left out (each with its
    :attr:`~EmptyMapWarning.zero_gradient`)."""
    return _EMPTY_QUIET.quietly()


def _images_text(which: list[int]) -> str:
    """``image 3`` or ``images [0, 2]`` (the first eight) for a warning."""
    return f"image {which[0]}" if len(which) == 1 else f"images {which[:8]}" + (" ..." if len(which) > 8 else "")


def _warn_if_zero(grad: torch.Tensor, method: str) -> None:
    """Warn (:class:`EmptyMapWarning`) of the images whose finite input gradient is zero at every pixel."""
    zero = _zero_rows(grad)
    if bool(zero.any()):
        warning = EmptyMapWarning(
            f"{method}: the gradient for {_images_text(zero.nonzero().flatten().tolist())} is zero at every "
            "pixel, so the map is blank: the target's score does not change with the input there (a classifier "
            "head initialised to zero, or every unit on the way switched off by a ReLU or a saturated activation)",
            zero_gradient=True,
        )
        _EMPTY_QUIET.warn(warning, stacklevel=4)  # _warn_if_zero <- _input_gradient <- saliency ... <- its caller


def _zero_rows(values: torch.Tensor) -> torch.Tensor:
    """(N,) bool: which images of ``values`` (N, ...) are finite and zero everywhere."""
    flat = values.flatten(1)
    return ~(flat != 0).any(dim=1) & torch.isfinite(flat).all(dim=1)


def activation_types(model: nn.Module) -> list[str]:
    """Class names of ``model``'s activation modules from ``torch.nn`` (``ReLU6``, ``SiLU``, ``GELU``,
    ``Hardswish``, ...), each once, in the order they first appear."""
    names: dict[str, None] = {}
    for module in model.modules():
        if _is_torch_activation(type(module)):
            names[type(module).__name__] = None
    return list(names)


def _is_torch_activation(kind: type) -> bool:
    """Whether ``kind`` is one of ``torch.nn``'s elementwise activation classes itself (not a subclass)."""
    return kind.__module__ == nn.modules.activation.__name__ and kind.__name__ not in _NOT_ELEMENTWISE


def activation_kind(module: nn.Module) -> str | None:
    """The class name of ``module`` when it is an elementwise activation module from ``torch.nn``
    (``ReLU``, ``ReLU6``, ``SiLU``, ``Hardswish``, ...) or a subclass of one; None otherwise."""
    return type(module).__name__ if any(map(_is_torch_activation, type(module).__mro__)) else None


def no_relu_reason(model: nn.Module) -> str:
    """Why a modified backward rule changed nothing on ``model``, which applied no ReLU."""
    kinds = activation_types(model)
    uses = f"its activation modules are {', '.join(kinds)}" if kinds else "it has no activation modules"
    return (f"the model applied no ReLU ({uses}); the modified backward rule acts only on nn.ReLU modules, "
            "so the result is the plain gradient")


# ---------------------------------------------------------------------------- plumbing
def layers_for(probe: Probe, x: torch.Tensor) -> dict[str, LayerInfo]:
    """The probe's layer table for inputs shaped like ``x``.

    Re-discovers only when the size differs from the current one. Calling it before
    adding temporary hooks keeps the discovery pass (and a refresh of the private copy
    after the user's model changed) out of the hooked forward passes.
    """
    size = tuple(check_batch(x).shape[1:])
    check_channel_axis(probe.model, x)
    if tuple(probe.input_size) != size:
        probe.describe(size)
    return probe.layers


def readable_layer(probe: Probe, layer: str) -> LayerInfo:
    """The LayerInfo of ``layer`` at the probe's current input size (see :func:`layers_for`), refusing
    a layer whose feature map is empty at that size (see :func:`~cnnwidgets.core.layers.check_map_not_empty`).

    Raises:
        KeyError: unknown layer (with suggestions). ValueError: an empty feature map.
    """
    return check_map_not_empty(probe.check_layer(layer), probe.input_size)


def check_target_layer(probe: Probe, target: Target) -> None:
    """Refuse a target that reads a layer whose feature map is empty at the probe's current input size
    (a channel's mean over no position is NaN, its maximum fails); a target of the model's output passes."""
    layer = getattr(target, "layer", None)
    if isinstance(layer, str) and layer in probe.layers:
        readable_layer(probe, layer)


@contextmanager
def gradients_enabled() -> Iterator[None]:
    """Within the block autograd records operations, whatever the caller's grad mode.

    Gradient methods are often called from inference code that turned gradients off
    (``torch.no_grad()``, ``torch.set_grad_enabled(False)``) or runs in
    ``torch.inference_mode()``. The block enables gradients and leaves inference mode: tensors
    made in it are normal tensors that autograd can record (an input made in inference mode
    joins the graph through the probe's copy of it). The caller's modes are back when the
    block ends, also when it raises.
    """
    with torch.inference_mode(False), torch.enable_grad():
        yield


def require_graph(scores: torch.Tensor, method: str, what: str = "the target's score") -> torch.Tensor:
    """``scores`` unchanged, when autograd can differentiate them; a clear error otherwise.

    A target whose scores are not connected to the graph (one that detaches the output, or
    returns a constant) has no gradient to show, and neither has a model whose forward leaves
    autograd (it runs under ``torch.no_grad()`` or ``torch.inference_mode()``, detaches, or
    goes through numpy).

    Args:
        scores: the tensor to differentiate.
        method: the method's name, which starts the message.
        what: what ``scores`` are, in words, for the message.

    Raises:
        RuntimeError: when ``scores`` do not require grad, saying that ``what`` does not depend
            on the input and the likely causes.
    """
    if not scores.requires_grad:
        raise RuntimeError(
            f"{method}: {what} does not depend on the input (it is not connected to the autograd graph: does the "
            "target detach the output or return a constant, or does the model's forward leave autograd, running "
            "under torch.no_grad() or torch.inference_mode(), detaching, or going through numpy?); gradient methods "
            "need a score computed in the model's forward pass with autograd on"
        )
    return scores


def input_leaf(probe: Probe, x: torch.Tensor) -> torch.Tensor:
    """A fresh float32 copy of ``x`` on the probe's device that requires grad."""
    layers_for(probe, x)
    return x.detach().to(probe.device, torch.float32).clone().requires_grad_(True)


class _GuidedRelu(torch.autograd.Function):
    """``max(x, 0)`` whose backward passes ``max(R, 0) * [x > 0]``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        with _uncounted():
            y = x.clamp(min=0)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (y,) = ctx.saved_tensors
        with _uncounted():
            return grad.clamp(min=0) * (y > 0)


class _DeconvRelu(torch.autograd.Function):
    """``max(x, 0)`` whose backward passes ``max(R, 0)``, whatever the forward input was."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        with _uncounted():
            return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        with _uncounted():
            return grad.clamp(min=0)


_RULES: dict[str, type[torch.autograd.Function]] = {"guided": _GuidedRelu, "deconvnet": _DeconvRelu}

_FUNCTIONAL_RELUS = {F.relu, F.relu_, torch.relu, torch.relu_, torch.Tensor.relu, torch.Tensor.relu_}

#: Functions that act as a ReLU or a bent variant of it (``F.relu6``, ``F.hardtanh``,
#: ``F.leaky_relu``) when called in a model's forward; no modified rule reaches them.
_RELU_LIKE_FUNCTIONS = {F.relu6, F.hardtanh, F.hardtanh_, F.leaky_relu, F.leaky_relu_}
_RELU_LIKE_FUNCTIONS |= {f for f in (getattr(torch, "hardtanh", None), getattr(torch, "hardtanh_", None))
                         if f is not None}
#: ``clamp`` and its aliases: a ReLU when the lower bound is 0 (with or without an upper bound).
_CLAMPS = {torch.clamp, torch.clamp_, torch.clip, torch.clip_, torch.clamp_min, torch.clamp_min_,
           torch.Tensor.clamp, torch.Tensor.clamp_, torch.Tensor.clip, torch.Tensor.clip_,
           torch.Tensor.clamp_min, torch.Tensor.clamp_min_}


def _is_zero(bound: object) -> bool:
    """Whether a clamp bound is the number 0 (a Python number or a one-element tensor)."""
    if isinstance(bound, torch.Tensor):
        return bound.numel() == 1 and not bound.is_complex() and bool(bound.detach().cpu().reshape(()) == 0)
    return isinstance(bound, (int, float)) and not isinstance(bound, bool) and bound == 0


def _clamps_at_zero(func, args: tuple, kwargs: dict) -> bool:
    """Whether a call of a :data:`_CLAMPS` function has lower bound 0 (what ``x.clamp(min=0)``,
    ``torch.clamp(x, 0)`` and ``x.clamp_min(0)`` pass), whatever its upper bound."""
    lower = args[1] if len(args) > 1 else kwargs.get("min")
    return _is_zero(lower)


_UNCOUNTED = threading.local()
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
_TORCH_DIR = os.path.dirname(os.path.abspath(torch.__file__)) + os.sep
_ZOO_DIR = _PACKAGE_DIR + "zoo" + os.sep  # the models cnnwidgets ships are models like any other


def _called_from_package() -> bool:
    """Whether the code that called the torch function being handled (the first frame outside
    torch's own files) is cnnwidgets' own, not the model's."""
    frame = sys._getframe(2)
    while frame is not None and frame.f_code.co_filename.startswith(_TORCH_DIR):
        frame = frame.f_back
    if frame is None:
        return False
    path = os.path.abspath(frame.f_code.co_filename)
    return path.startswith(_PACKAGE_DIR) and not path.startswith(_ZOO_DIR)


@contextmanager
def _uncounted() -> Iterator[None]:
    """Within the block, the calling thread's ReLU-like function calls are not counted by
    :class:`_ReluCounter`: the modified rules' own ``clamp`` calls are not the model's."""
    _UNCOUNTED.depth = getattr(_UNCOUNTED, "depth", 0) + 1
    try:
        yield
    finally:
        _UNCOUNTED.depth -= 1


class _ReluCounter(TorchFunctionMode):
    """Counts every ReLU reached through the torch function API (modules call ``F.relu``), in
    :attr:`calls`, and, in :attr:`like`, every call of a ReLU-like function the rules cannot
    reach: ``clamp`` (and ``clip``, ``clamp_min``) with lower bound 0, ``F.relu6``,
    ``F.hardtanh`` and ``F.leaky_relu``, made by the model (not by cnnwidgets' own code around
    its forward, which may rectify a channel with ``clamp``, nor by the rules themselves), but not
    by an activation module (``nn.ReLU6`` calls ``F.hardtanh``; see :meth:`attach`)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.like = 0
        self._inside = 0  # activation modules (other than nn.ReLU) running now in the owner thread
        self._owner = threading.get_ident()
        self.handles: list[torch.utils.hooks.RemovableHandle] = []

    def attach(self, model: nn.Module) -> None:
        """Hooks on the activation modules of ``model`` other than ``nn.ReLU`` (whose calls are
        counted as ReLUs and matched with the rule's own count): the functions they call are
        theirs, not functional code. They go first (``prepend``), before a probe's hook that may
        stop the forward pass there. :meth:`remove` takes them off."""
        def enter(module: nn.Module, args: tuple) -> None:
            if threading.get_ident() == self._owner:
                self._inside += 1

        def leave(module: nn.Module, args: tuple, output: object) -> None:
            if threading.get_ident() == self._owner:
                self._inside = max(0, self._inside - 1)


        for module in model.modules():
            if activation_kind(module) is not None and not isinstance(module, nn.ReLU):
                self.handles.append(module.register_forward_pre_hook(enter, prepend=True))
                self.handles.append(module.register_forward_hook(leave, prepend=True, always_call=True))

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _FUNCTIONAL_RELUS:
            self.calls += 1
        elif (not self._inside and not getattr(_UNCOUNTED, "depth", 0)
              and threading.get_ident() == self._owner
              and (func in _RELU_LIKE_FUNCTIONS or (func in _CLAMPS and _clamps_at_zero(func, args, kwargs)))
              and not _called_from_package()):
            self.like += 1
        return func(*args, **kwargs)


def _functional_kinds(relus: int, like: int) -> str:
    """Says how many ReLUs a model applied as functions, by kind, for the warnings."""
    parts = []
    if relus:
        parts.append(f"{relus} time(s) as F.relu, torch.relu or Tensor.relu")
    if like:
        parts.append(f"{like} time(s) as a ReLU-like function: clamp with min=0 (x.clamp(min=0), torch.clamp), "
                     "F.relu6, F.hardtanh or F.leaky_relu")
    return "; ".join(parts)


@dataclass
class ReluReport:
    """What the modified ReLU rules met in the :func:`relu_rule` blocks run inside :func:`relu_report`.

    Attributes:
        functional: ReLU calls that were not made by an ``nn.ReLU`` module (``F.relu``,
            ``torch.relu``, ``Tensor.relu``), and calls of ReLU-like functions outside activation
            modules (``clamp`` with lower bound 0, ``F.relu6``, ``F.hardtanh``,
            ``F.leaky_relu``): they kept the true gradient.
        no_relu: why the rules changed nothing, when a block met no ReLU at all and the model has
            no ``nn.ReLU`` module (see :func:`no_relu_reason`), or when it met ReLUs applied as
            functions only; "" otherwise.
        mixed: when ``nn.ReLU`` modules got the rule and other activation modules kept their true
            gradient, a sentence naming them with their counts (as :class:`MixedActivationWarning`
            gives it); "" otherwise.
    """

    functional: int = 0
    no_relu: str = ""
    mixed: str = ""


def hook_activations(
    model: nn.Module, on_call: Callable[[str, nn.Module], None], *, skip: tuple[type, ...] = (),
    handles: list[torch.utils.hooks.RemovableHandle] | None = None,
) -> list[torch.utils.hooks.RemovableHandle]:
    """Forward hooks on every elementwise activation module of ``model`` (see :func:`activation_kind`)
    but those of the types ``skip``, calling ``on_call(kind, module)`` for each call made in the
    calling thread. They go first (``prepend``): the probe's hook on a target's layer may stop the
    forward pass. The caller removes the handles: each is appended to ``handles`` (a new list
    when None, returned either way) as soon as its hook is registered, so a caller that made the
    list before its ``try`` removes them all, also when an interrupt stops the registration."""
    owner = threading.get_ident()
    handles = [] if handles is None else handles

    def hook(module: nn.Module, args: tuple, output: object) -> None:
        if threading.get_ident() == owner:
            on_call(type(module).__name__, module)

    for module in model.modules():
        if activation_kind(module) is not None and not isinstance(module, skip):
            handles.append(module.register_forward_hook(hook, prepend=True))
    return handles


class _OtherActivations:
    """Counts, per class, the activation modules other than ``nn.ReLU`` that ran in the owner
    thread's forward passes while its hooks are on a model.

    A call is counted only once a module with parameters (a convolution, a linear layer, a
    batch norm ...) starts after it: an activation after which none ran (on the model's
    output, or the one whose output the target reads) only rescales each value it passes back
    and mixes no rules. The hooks go first (``prepend``), before the probe's hook that stops a
    prefix-only forward pass at the target's layer.
    """

    def __init__(self, owner: int) -> None:
        self.ran: dict[str, set[int]] = {}
        self._pending: list[tuple[str, int]] = []
        self._owner = owner
        self.handles: list[torch.utils.hooks.RemovableHandle] = []

    def attach(self, model: nn.Module) -> None:
        """Put the counting hooks on ``model``; :meth:`remove` takes off all that were put on,
        also after an interrupted call."""
        hook_activations(model, lambda kind, module: self._pending.append((kind, id(module))),
                         skip=(nn.ReLU,), handles=self.handles)
        for module in model.modules():
            if activation_kind(module) is None and next(module.parameters(recurse=False), None) is not None:
                self.handles.append(module.register_forward_pre_hook(self._weighted, prepend=True))

    def _weighted(self, module: nn.Module, args: tuple) -> None:
        if threading.get_ident() == self._owner:
            for kind, key in self._pending:
                self.ran.setdefault(kind, set()).add(key)
            self._pending.clear()

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()

    def describe(self) -> str:
        """``"19 Hardswish and 9 Hardsigmoid modules"``, or "" when none ran."""
        counts = [f"{len(keys)} {kind}" for kind, keys in self.ran.items()]
        if not counts:
            return ""
        listed = counts[0] if len(counts) == 1 else f"{', '.join(counts[:-1])} and {counts[-1]}"
        return f"{listed} module{'s' if sum(len(k) for k in self.ran.values()) > 1 else ''}"


def _relu_modules(count: int) -> str:
    return f"{count} nn.ReLU module{'s' if count != 1 else ''}"


_REPORTS = threading.local()


@contextmanager
def relu_report() -> Iterator[ReluReport]:
    """Collect what the :func:`relu_rule` blocks run in this thread inside the block met (the
    same counts their warnings give), for a caller that shows them another way: inside the
    block they give no warning, so the user is not told twice."""
    previous = getattr(_REPORTS, "current", None)
    report = _REPORTS.current = ReluReport()
    try:
        yield report
    finally:
        _REPORTS.current = previous


@contextmanager
def relu_rule(model: nn.Module, rule: Rule, *, method: str, stacklevel: int = 4) -> Iterator[None]:
    """Within the block, every ``nn.ReLU`` module of ``model`` passes signals back by ``rule``.

    ``model`` must be a private copy (a probe's ``probe.model``): hooks are added to it for
    the duration of the block and removed afterwards, also when the block raises. Gradients
    are enabled within the block (:func:`gradients_enabled`), since it exists to take them.
    At most one warning is given when the block ends. If the forward passes inside the block
    apply ReLU as a function, a :class:`FunctionalReluWarning` names how many such calls kept
    the true gradient (and says that the result is the plain input gradient when no
    ``nn.ReLU`` module ran at all). If they apply no ReLU at all and ``model`` has no
    ``nn.ReLU`` module, a :class:`NoReluWarning` says that the rule changed nothing and names
    the activation modules ``model`` uses instead. If ``nn.ReLU`` modules got the rule while
    other activation modules kept their true gradient, a :class:`MixedActivationWarning`
    names those with the number of their modules that ran (see :class:`_OtherActivations`
    for which calls count). Inside :func:`relu_report` no warning is given: the report holds
    the same counts for a caller that shows them its own way.

    Args:
        model: the module whose ReLU modules get the rule.
        rule: ``"gradient"`` (no change), ``"guided"`` or ``"deconvnet"``.
        method: name used in the warning.
        stacklevel: passed to :func:`warnings.warn` (4 points at the caller of the function
            that entered the block).
    """
    if rule == "gradient":
        with gradients_enabled():
            yield
        return
    function = _RULES[rule]
    module_calls = 0
    relus: set[int] = set()
    owner = threading.get_ident()

    def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
        nonlocal module_calls
        if threading.get_ident() != owner:
            return None
        if getattr(module, "inplace", False):
            raise RuntimeError("modified ReLU rules need out-of-place ReLUs; run them on a Probe's private copy")
        module_calls += 1
        relus.add(id(module))
        # Recompute from the module's input so the new node is the only path back to it.
        return function.apply(args[0])

    handles = []
    counter = _ReluCounter()
    others = _OtherActivations(owner)
    try:
        for module in model.modules():
            if isinstance(module, nn.ReLU):
                # prepend: the probe's own capture hook must see the replaced output.
                handles.append(module.register_forward_hook(hook, prepend=True))
        others.attach(model)
        counter.attach(model)
        with counter, gradients_enabled():
            yield
    finally:
        for handle in handles:
            handle.remove()
        others.remove()
        counter.remove()
    relu_functions = max(counter.calls - module_calls, 0)
    functional = relu_functions + counter.like
    kinds = _functional_kinds(relu_functions, counter.like)
    no_relu = no_relu_reason(model) if functional == 0 and not handles else ""
    if functional > 0 and module_calls == 0:
        no_relu = (f"the model applied ReLU only as a function ({kinds} in its forward) and ran no nn.ReLU "
                   "module; the modified backward rule acts only on nn.ReLU modules, so it was applied nowhere "
                   "and the result is the plain input gradient")
    besides = others.describe()
    mixed = ""
    if besides and module_calls > 0:
        mixed = (f"the modified backward rule was applied at {_relu_modules(len(relus))}, while {besides} kept "
                 "their true gradient (the rule acts only on nn.ReLU modules, as in Captum), so the result mixes the "
                 "two rules: it is neither the pure method nor the plain gradient")
    report = getattr(_REPORTS, "current", None)
    if report is not None:  # the caller shows them its own way: no warning besides
        report.functional += functional
        report.no_relu = report.no_relu or no_relu
        report.mixed = report.mixed or mixed
        return
    if functional > 0 and module_calls == 0:
        warnings.warn(f"{method}: {no_relu}, as in Captum. Use nn.ReLU modules (not F.relu) for the exact method.",
                      FunctionalReluWarning, stacklevel=stacklevel)
    elif functional > 0:
        also = f" Besides, {besides} kept their true gradient." if besides else ""
        warnings.warn(
            f"{method}: the model applied ReLU as a function ({kinds} in its forward); only nn.ReLU modules "
            f"get the modified backward rule, so those ReLUs kept the true gradient.{also} Use nn.ReLU modules "
            "for the exact method.",
            FunctionalReluWarning,
            stacklevel=stacklevel,
        )
    elif no_relu:
        warnings.warn(f"{method}: {no_relu}, as in Captum.", NoReluWarning, stacklevel=stacklevel)
    elif mixed:
        warnings.warn(
            f"{method}: {mixed}. Read it as such, or use a model whose activations are all nn.ReLU modules for "
            "the pure method.",
            MixedActivationWarning,
            stacklevel=stacklevel,
        )


def _input_gradient(probe: Probe, x: torch.Tensor, target: Target | int, rule: Rule, method: str) -> torch.Tensor:
    """``d target / d x`` with ``rule`` at every ReLU module, shape and device of ``x``."""
    target = resolve_target(target)
    leaf = input_leaf(probe, x)
    check_target_layer(probe, target)
    # relu_rule also enables gradients (the caller may be under torch.no_grad or inference mode)
    with relu_rule(probe.model, rule, method=method, stacklevel=5):
        scores = require_graph(target_score(probe, leaf, target, grad=True), method)
        (grad,) = torch.autograd.grad(scores.sum(), leaf)
    _warn_if_zero(grad, method)
    return grad.detach().contiguous().to(x.device)


# ---------------------------------------------------------------------------- methods
def saliency(
    model_or_probe: nn.Module | Probe,
    x: torch.Tensor,
    target: Target | int,
    *,
    absolute: bool = True,
    reduce: Literal["max"] | None = None,
) -> torch.Tensor:
    """Image-specific class saliency (Simonyan, Vedaldi & Zisserman 2014, section 3.1).

    The gradient of the target score ``S`` with respect to the input pixels,
    ``w = dS/dx``, evaluated at ``x``. The paper's saliency map takes its absolute value
    and the maximum over colour channels: ``M[i, j] = max_c |w[c, i, j]|``.

    Args:
        model_or_probe: a model or a :class:`Probe` of it.
        x: preprocessed batch (N, C, H, W).
        target: a class index (the class logit, as in the paper), one class index per image (a
            list, or a 1-D integer tensor or array: each image's map is for its own class), or a
            target callable from :mod:`cnnwidgets.core.targets`; channel targets run only the
            needed prefix.
        absolute: return ``|dS/dx|`` (default) instead of the signed gradient.
        reduce: ``None`` keeps all channels; ``"max"`` takes the maximum over channels
            (of the absolute value when ``absolute``), giving one channel.

    Returns:
        (N, C, H, W), or (N, 1, H, W) with ``reduce="max"``; float32 on ``x``'s device.

    Raises:
        KeyError: for a target on an unknown layer.
        IndexError: for a class or channel index out of range.
        ValueError: for a bad batch or ``reduce`` value, or a target on a layer whose feature map is
            empty at this input size (see :func:`~cnnwidgets.core.layers.check_map_not_empty`).
        TypeError: for an unsupported target or model, or an ``absolute`` that is not a bool.
        RuntimeError: for a target whose score does not depend on the input (see
            :func:`require_graph`).

    Warns:
        EmptyMapWarning: for images whose gradient is zero at every pixel (see the module notes).
    """
    absolute = as_flag(absolute, "saliency: absolute")
    if reduce not in (None, "max"):
        raise ValueError(f"reduce must be None or 'max', got {reduce!r}")
    with probe_scope(model_or_probe) as probe:
        grad = _input_gradient(probe, x, target, "gradient", "saliency")
    if absolute:
        grad = grad.abs()
    if reduce == "max":
        grad = grad.amax(dim=1, keepdim=True)
    return grad


def guided_backprop(model_or_probe: nn.Module | Probe, x: torch.Tensor, target: Target | int) -> torch.Tensor:
    """Guided backpropagation (Springenberg, Dosovitskiy, Brox & Riedmiller 2015, section 3.4).

    The gradient of the target score with respect to the input, except that every ReLU
    passes a signal back only where both the signal and the ReLU's forward input are
    positive: ``R_in = max(R_out, 0) * [x > 0]``. Equal to Captum's ``GuidedBackprop``.

    Args:
        model_or_probe: a model or a :class:`Probe` of it. Only ``nn.ReLU`` modules get
            the rule (see the module notes on functional ReLUs).
        x: preprocessed batch (N, C, H, W).
        target: class index, one class index per image (a list, or a 1-D integer tensor or
            array: each image's map is for its own class), or target callable.

    Returns:
        Signed attribution (N, C, H, W), float32 on ``x``'s device.

    Raises:
        KeyError, IndexError, ValueError, TypeError: as :func:`saliency`.

    Warns:
        FunctionalReluWarning: if the model applies ReLU as a function (with no ``nn.ReLU`` module
            at all, as torchvision's GoogLeNet, the result is the plain gradient).
        NoReluWarning: if the model applies no ReLU at all (ReLU6, SiLU, GELU, ... keep their true
            gradient), so the result is the plain gradient ``saliency(..., absolute=False)``.
        MixedActivationWarning: if other activation modules (Hardswish, SiLU, ...) ran besides the
            ``nn.ReLU`` modules: they keep their true gradient, so the result mixes the two rules.
        EmptyMapWarning: for images whose map is zero at every pixel (see the module notes).
    """
    with probe_scope(model_or_probe) as probe:
        return _input_gradient(probe, x, target, "guided", "guided_backprop")


def deconvnet(model_or_probe: nn.Module | Probe, x: torch.Tensor, target: Target | int) -> torch.Tensor:
    """Deconvnet attribution (Zeiler & Fergus 2014, section 2.1) of a target score.

    The target's gradient is sent back to the pixels through the network's "deconvnet":
    max-pools unpool through the switches recorded in the forward pass, ReLUs rectify
    the backward signal itself (``R_in = max(R_out, 0)``, ignoring the forward input) and
    convolutions apply their transposed filters. Equal to Captum's ``Deconvolution`` for
    class targets and ``NeuronDeconvolution`` for a unit
    (``ChannelActivation(layer, c, position=(i, j))``). For the paper's projection of a
    feature map use :func:`project_channel`. A unit target is sent back with weight one
    whatever its value, so a unit that is not active still gets a map; its projection by
    :func:`project_channel`, which weights it by ``max(a, 0)``, is zero.

    Args:
        model_or_probe: a model or a :class:`Probe` of it (only ``nn.ReLU`` modules are
            rectified; see the module notes).
        x: preprocessed batch (N, C, H, W).
        target: class index, one class index per image (a list, or a 1-D integer tensor or
            array: each image's map is for its own class), or target callable.

    Returns:
        Signed projection (N, C, H, W), float32 on ``x``'s device.

    Raises:
        KeyError, IndexError, ValueError, TypeError: as :func:`saliency`.

    Warns:
        FunctionalReluWarning: if the model applies ReLU as a function (with no ``nn.ReLU`` module
            at all, the result is the plain gradient).
        NoReluWarning: if the model applies no ReLU at all, so the result is the plain gradient.
        MixedActivationWarning: if other activation modules ran besides the ``nn.ReLU`` modules:
            they keep their true gradient, so the result mixes the two rules.
        EmptyMapWarning: for images whose map is zero at every pixel (see the module notes).
    """
    with probe_scope(model_or_probe) as probe:
        return _input_gradient(probe, x, target, "deconvnet", "deconvnet")


def _channel_values(probe: Probe, activation: torch.Tensor, layer: str, channel: int) -> torch.Tensor:
    """``activation[:, channel]``, for a ``channel`` already checked by :func:`as_index`."""
    if activation.dim() not in (2, 4):
        raise ValueError(
            f"layer {layer!r} has output shape {tuple(activation.shape[1:])}; "
            "a channel projection needs a (C,) or (C, H, W) output"
        )
    if not 0 <= channel < activation.shape[1]:
        raise IndexError(f"channel {channel} is out of range: layer {layer!r} has {activation.shape[1]} channels")
    return activation[:, channel]


def _argmax_units(values: torch.Tensor) -> torch.Tensor:
    """(N, 2) rows and columns of each map's largest value (first one in row-major order)."""
    flat = values.reshape(values.shape[0], -1).argmax(dim=1)
    width = values.shape[-1]
    return torch.stack([flat // width, flat % width], dim=1)


def strongest_unit(model_or_probe: nn.Module | Probe, x: torch.Tensor, layer: str, channel: int) -> torch.Tensor:
    """Position of the largest activation of ``channel`` at ``layer``, per image.

    Ties go to the first position in row-major order. Uses the probe's cached,
    prefix-only capture.

    Args:
        model_or_probe: a model or a :class:`Probe` of it.
        x: preprocessed batch (N, C, H, W).
        layer: a layer with a (C, H, W) output (channels-last layers are read channels first).
        channel: the channel index (see :func:`~cnnwidgets.core.targets.as_index`).

    Returns:
        int64 tensor (N, 2) of (row, col) on the CPU.

    Raises:
        KeyError: unknown layer. IndexError: channel out of range.
        ValueError: a layer without a (C, H, W) output, or whose map is empty at this input size
            (see :func:`~cnnwidgets.core.layers.check_map_not_empty`).
        TypeError: a channel that is not an int (see :func:`~cnnwidgets.core.targets.as_index`).
    """
    channel = as_index(channel, "channel")
    with probe_scope(model_or_probe) as probe:
        layers_for(probe, x)
        readable_layer(probe, layer)
        activation = probe.capture(check_batch(x), [layer], channels_first=True)[layer]
        if activation.dim() != 4:
            raise ValueError(f"layer {layer!r} has output shape {tuple(activation.shape[1:])}; no spatial units")
        values = _channel_values(probe, activation, layer, channel)
        return _argmax_units(values).cpu()


def project_channel(
    model_or_probe: nn.Module | Probe,
    x: torch.Tensor,
    layer: str,
    channel: int,
    unit: Unit = "max",
) -> torch.Tensor:
    """Project a channel's activation from any layer down to pixel space (Zeiler & Fergus 2014, 2.1).

    "To examine a given convnet activation, we set all other activations in the layer to
    zero and pass the feature maps as input to the attached deconvnet layer." The kept
    activations ``a`` of ``channel`` (rectified: ``max(a, 0)``, so a unit that is not
    active projects to zero) form the signal ``R`` at ``layer``; every other entry of
    ``R`` is zero. ``R`` then travels down with the deconvnet rules of :func:`deconvnet`
    (unpooling through the switches, ReLU on the signal, transposed filters)::

        P = D^T R,   R[n, k, i, j] = max(a[n, k, i, j], 0) * [k == channel] * [(i, j) in U_n]

    For a single unit ``u`` this is ``max(a_u, 0)`` times Captum's
    ``NeuronDeconvolution`` for that unit, since the deconvnet is positively homogeneous.

    Args:
        model_or_probe: a model or a :class:`Probe` of it.
        x: preprocessed batch (N, C, H, W).
        layer: any layer with a (C, H, W) or (C,) output (see ``probe.layers``).
        channel: channel index at ``layer`` (a Python int, a numpy integer or a 0-d integer tensor).
        unit: ``"max"``: each image's strongest unit of the channel (see
            :func:`strongest_unit`), as in the paper's figures; ``"all"``: the whole
            feature map; ``(row, col)``: that unit in every image (ints, as ``channel``; a
            list, or a row of :func:`strongest_unit`'s result, works too).
            Ignored for (C,) layers.

    A channel that is not active on an image (its largest value is <= 0, as often at the
    output of a batch norm or for a dead channel) has nothing to project: that image's map
    is zero, with an :class:`InactiveChannelWarning`. A ``(row, col)`` unit that is not
    active (its value is <= 0) in a channel that is active elsewhere projects to zero too, with an
    :class:`InactiveChannelWarning` naming the unit and its value.

    Returns:
        Signed pixel-space projection (N, C, H, W), float32 on ``x``'s device. It is zero
        outside the receptive field of a single projected unit, and for an image on which
        the channel is not active.

    Raises:
        KeyError: unknown layer. IndexError: channel or unit out of range.
        ValueError: bad batch, a string ``unit`` other than ``"max"`` and ``"all"``, a layer
            whose output is not (C,) or (C, H, W), or whose map is empty at this input size (see
            :func:`~cnnwidgets.core.layers.check_map_not_empty`).
        TypeError: a ``unit`` that is neither such a string nor a pair; a channel, row or
            column that is not an int (a bool, a float ...).

    Warns:
        FunctionalReluWarning: if the model applies ReLU as a function.
        NoReluWarning: if the model applies no ReLU at all, so the projection is that of the
            plain gradient.
        MixedActivationWarning: if other activation modules ran besides the ``nn.ReLU`` modules
            before ``layer``: the projection mixes the two rules.
        InactiveChannelWarning: if the channel is not active on an image (its map is zero), or a
            ``(row, col)`` unit is not active on an image where the channel is (its map is zero too).
    """
    if isinstance(unit, str):
        if unit not in ("max", "all"):
            raise ValueError(f"unit must be 'max', 'all' or a (row, col) pair of ints, got {unit!r}")
    else:
        unit = as_pair(unit, "unit", pair="'max', 'all' or a (row, col) pair of ints")
    channel = as_index(channel, "channel")
    with probe_scope(model_or_probe) as probe:
        leaf = input_leaf(probe, x)
        readable_layer(probe, layer)
        # relu_rule also enables gradients (the caller may be under torch.no_grad or inference mode)
        with relu_rule(probe.model, "deconvnet", method="project_channel"):
            activation = probe.capture(leaf, [layer], grad=True, channels_first=True)[layer]
            raw = _channel_values(probe, activation, layer, channel).detach()
            values = raw.clamp(min=0)
            unit_values = None
            seed = torch.zeros_like(activation)
            if activation.dim() == 2 or unit == "all":
                seed[:, channel] = values
            else:
                if unit == "max":
                    rows, cols = _argmax_units(values).unbind(dim=1)
                else:
                    row, col = unit
                    height, width = values.shape[1:]
                    if not (0 <= row < height and 0 <= col < width):
                        raise IndexError(f"unit {unit} is outside the {height}x{width} map of layer {layer!r}")
                    rows = torch.full((values.shape[0],), row, dtype=torch.long, device=values.device)
                    cols = torch.full_like(rows, col)
                batch = torch.arange(values.shape[0], device=values.device)
                seed[batch, channel, rows, cols] = values[batch, rows, cols]
                if not isinstance(unit, str):
                    unit_values = raw[batch, rows, cols]
            require_graph(activation, "project_channel", f"the output of layer {layer!r}")
            (grad,) = torch.autograd.grad(activation, leaf, grad_outputs=seed)
    peaks = raw.reshape(raw.shape[0], -1).amax(dim=1)
    _warn_inactive(peaks, layer, channel)
    if unit_values is not None:
        _warn_inactive_unit(unit_values, peaks, layer, channel, unit)
    return grad.detach().contiguous().to(x.device)


def _inactive_images(values: torch.Tensor, inactive: list[int], one: str, several: str) -> str:
    """Which images of a batch of ``len(values)`` the ``inactive`` indices are, with their values, for a
    warning: ``"the image (<one> 0.1)"``, ``"image 2 of the batch (...)"`` or ``"images 0, 2 (<several> ...)"``."""
    texts = [f"{float(values[i]):.3g}" for i in inactive]
    if len(inactive) == 1:
        where = "the image" if len(values) == 1 else f"image {inactive[0]} of the batch"
        return f"{where} ({one} {texts[0]})"
    return f"images {', '.join(map(str, inactive))} ({several} {', '.join(texts)})"


def _warn_inactive_unit(values: torch.Tensor, peaks: torch.Tensor, layer: str, channel: int,
                        unit: tuple[int, int]) -> None:
    """An :class:`InactiveChannelWarning` naming the images where the chosen ``unit`` is <= 0 while
    the channel is active elsewhere (an image whose channel is not active at all is named by
    :func:`_warn_inactive` already)."""
    values, peaks = values.cpu(), peaks.cpu()
    inactive = ((values <= 0) & (peaks > 0)).nonzero().flatten().tolist()
    if not inactive:
        return
    where = _inactive_images(values, inactive, "its value there is", "values")
    warnings.warn(
        f"project_channel: unit ({unit[0]}, {unit[1]}) of channel {channel} of layer {layer!r} is not active on "
        f"{where}: there is nothing to project, so its projection is zero; the channel is active elsewhere "
        "(unit='max' projects its strongest unit)",
        InactiveChannelWarning,
        stacklevel=3,
    )


def _warn_inactive(peaks: torch.Tensor, layer: str, channel: int) -> None:
    """An :class:`InactiveChannelWarning` naming the images whose channel peaks at <= 0, if any."""
    inactive = (peaks <= 0).nonzero().flatten().tolist()
    if not inactive:
        return
    where = _inactive_images(peaks, inactive, "its largest value is", "largest values")
    warnings.warn(
        f"project_channel: channel {channel} of layer {layer!r} is not active on {where}: there is nothing "
        "to project, so the map is zero",
        InactiveChannelWarning,
        stacklevel=3,
    )
