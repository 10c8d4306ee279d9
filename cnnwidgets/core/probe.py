"""The hook manager: captures layer outputs by running only the part of the model needed.

A :class:`Probe` never changes the model it is given. It works on a private inference
copy (``probe.model``): a deep copy in eval mode, on the probe's device, with
``requires_grad`` off for every parameter and in-place activations switched to
out-of-place. The user's model keeps its hooks, training flags, gradients, parameters
and device. When the user's parameters or buffers change (an optimizer step,
``load_state_dict``), the copy is refreshed on the next call.

What a captured layer output is
-------------------------------
The tensor a module returned at its **last call** in the forward pass, copied at the
moment it returned. Operations that run later - an in-place ReLU that follows a
convolution in torchvision's VGG, the in-place ``out += identity`` in a ResNet block -
cannot change it. A module that runs several times per forward (the shared ReLU of a
torchvision ``BasicBlock``) is captured at its last call.

Prefix-only execution
---------------------
A forward hook on every module of the copy records the requested outputs. As soon as
every requested layer has completed its last call, the hook raises :class:`StopForward`,
which derives from ``BaseException`` so that a model's own ``except Exception`` cannot
swallow it, and the rest of the model never runs.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import inspect
import math
import os
import re
import sys
import threading
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils import prune

from cnnwidgets.core.device import release_memory, resolve_device
from cnnwidgets.core.layers import (
    LayerInfo, channel_count_problem, discover, first_convolution, input_channels, unknown_layer_error,
)
from cnnwidgets.core.targets import (
    OutputTypeError, as_count, as_flag, as_index, check_output_kind, class_probabilities, class_scores,
    output_reduction, output_tensor,
)

__all__ = [
    "InputKindError", "NotABatchError", "NotATensorError", "Probe", "ProbeStats", "StopForward",
    "FALLBACK_CHANNELS", "batch_dependent_layers", "channel_guesses", "check_batch", "check_input_size",
    "class_count", "default_input_sizes", "input_kind_problem", "trained_input_size",
    "layer_names", "plain_module", "probe_scope", "require_probe", "set_memory_format", "unwrap_model",
]


#: The channel counts tried after a model's own guess: RGB, then grayscale.
FALLBACK_CHANNELS = (3, 1)


def _require_module(model: object, what: str) -> None:
    """Refuse a ``model`` that is no ``nn.Module``, for the function ``what``.

    Raises:
        TypeError: saying what was given and what is accepted.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"{what} takes a torch.nn.Module, got {type(model).__name__}{not_a_model_hint(model)}")


def channel_guesses(model: nn.Module) -> tuple[int, ...]:
    """The channel counts to try, in order, for a ``model`` given without an input size: those of its
    first registered convolution (3 if it has none), then :data:`FALLBACK_CHANNELS` (the first
    convolution registered need not be the first that runs: a head declared before the stem).

    Raises:
        TypeError: for a ``model`` that is no ``nn.Module``.
    """
    _require_module(model, "channel_guesses")
    return tuple(dict.fromkeys((input_channels(model) or 3, *FALLBACK_CHANNELS)))


#: Input sizes of model classes trained at another size than 224 x 224, by class name.
_TRAINED_SIZES = {"Inception3": (3, 299, 299)}  # torchvision's inception_v3


def trained_input_size(model: nn.Module) -> tuple[int, int, int] | None:
    """The (C, H, W) that ``model`` says it was trained at, or None when it does not say.

    Read from a timm-style ``pretrained_cfg`` or ``default_cfg`` dict (``"input_size"``: a tuple
    or list that :func:`check_input_size` takes; another is ignored), else known model classes:
    torchvision's ``Inception3`` (299 x 299).

    Raises:
        TypeError: for a ``model`` that is no ``nn.Module``.
    """
    _require_module(model, "trained_input_size")
    for attribute in ("pretrained_cfg", "default_cfg"):
        cfg = getattr(model, attribute, None)
        size = cfg.get("input_size") if isinstance(cfg, dict) else None
        if isinstance(size, (tuple, list)):
            try:
                return check_input_size(size)  # not a bool, nor a size no tensor can hold
            except ValueError:
                continue
    return _TRAINED_SIZES.get(type(model).__name__)


def default_input_sizes(model: nn.Module) -> Iterator[tuple[int, int, int]]:
    """The input sizes a :class:`Probe` tries, in order, for a ``model`` given without one.

    First the size the model says it was trained at (:func:`trained_input_size`: 299 x 299 for
    Inception v3), if any. Then the channels of :func:`channel_guesses`, in order: RGB tries
    torchvision's 224 x 224 first; then, for any channel count, the sizes of the usual small
    datasets: 28 (MNIST, first for grayscale), 32 (CIFAR), 64, 96, 128, 224, 299.

    Raises:
        TypeError: for a ``model`` that is no ``nn.Module`` (when called, not when iterated).
    """
    _require_module(model, "default_input_sizes")
    trained = trained_input_size(model)
    channels = channel_guesses(model)
    return _sizes_to_try(trained, channels)


def _sizes_to_try(trained: tuple[int, int, int] | None, guesses: tuple[int, ...]) -> Iterator[tuple[int, int, int]]:
    """The sizes of :func:`default_input_sizes`, from the trained size (if any) and the channel guesses."""
    if trained is not None:
        yield trained
    for channels in guesses:
        sides = (224, 28, 32, 64, 96, 128, 299) if channels == 3 else (28, 32, 64, 96, 128, 224, 299)
        for side in sides:
            yield (channels, side, side)


class StopForward(BaseException):
    """Raised from a forward hook to end a forward pass once the needed layers ran."""


class NotATensorError(TypeError):
    """A requested layer returned something other than one tensor."""


class NotABatchError(ValueError):
    """A requested layer returned a tensor whose first dimension is not the batch (see
    :attr:`LayerInfo.batch_first <cnnwidgets.core.layers.LayerInfo>`)."""


class InputKindError(RuntimeError):
    """The model failed because it takes another kind of input than one (N, C, H, W) image batch
    (a video or volume model, a forward with several inputs): no input size can fix it."""


class _ModelFailure(RuntimeError):
    """The model failed on an input of a given size. ``model_error`` is the model's own error (its
    type and text, with a dtype hint where one applies) without the question about the size, for
    :meth:`Probe.fit_input_size`, which asks about the sizes its own way."""

    def __init__(self, message: str, model_error: str) -> None:
        super().__init__(message)
        self.model_error = model_error


def input_kind_problem(model: nn.Module) -> str | None:
    """Why ``model`` cannot take ``model(x)`` with one (N, C, H, W) batch, when its structure shows
    it: a ``forward`` with more than one required argument, or a first convolution (see
    :func:`~cnnwidgets.core.layers.first_convolution`) of another dimension than 2-D. None when
    nothing shows (a model that fails may still need another size).

    Raises:
        TypeError: for a ``model`` that is no ``nn.Module``.
    """
    _require_module(model, "input_kind_problem")
    return _several_inputs_problem(model) or _convolution_kind_problem(model)


def _several_inputs_problem(model: nn.Module) -> str | None:
    """Why ``model`` cannot be called as ``model(x)``: its forward requires more than one input."""
    try:
        parameters = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError):  # a forward without a signature to read
        parameters = []
    required = [
        p.name for p in parameters
        if p.default is inspect.Parameter.empty
        and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]
    if len(required) > 1:
        return (
            f"{type(model).__name__}.forward takes {len(required)} inputs ({', '.join(required)}); cnnwidgets "
            "calls model(x) with one input: wrap the model so that it takes one tensor (N, C, H, W)"
        )
    return None


def _convolution_kind_problem(model: nn.Module) -> str | None:
    """Why ``model`` may take another input than (N, C, H, W): its first convolution is 1-D or 3-D."""
    conv = first_convolution(model)
    kind = type(conv).__name__ if conv is not None else ""
    if isinstance(conv, (nn.Conv3d, nn.ConvTranspose3d)):
        what = "a video/volume model"
    elif isinstance(conv, (nn.Conv1d, nn.ConvTranspose1d)):
        what = "a sequence/signal model"
    else:
        return None
    return (
        f"this looks like {what} (its first convolution is {kind}); cnnwidgets takes image models called as "
        "model(x) with x of shape (N, C, H, W)"
    )


@dataclass
class ProbeStats:
    """Counters of the work a probe has done (tests and benchmarks read them).

    Attributes:
        forwards: forward passes started for captures and logits (discovery excluded).
        full_forwards: forward passes that ran to the model's output.
        modules_executed: module calls that ran inside those passes.
        cache_hits: requested layers served from the cache.
        cache_misses: requested layers that needed a forward pass.
        refreshes: times the private copy was re-synchronised with the user's model.
        discoveries: layer-discovery passes (one per new input size).
    """

    forwards: int = 0
    full_forwards: int = 0
    modules_executed: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    refreshes: int = 0
    discoveries: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counters as a new ``{name: count}`` dict, in the order of the attributes above."""
        return dict(self.__dict__)


@dataclass
class _Run:
    """Book-keeping for one forward pass."""

    wanted: dict[str, int]  # layer -> number of calls after which it is final
    grad: bool
    stop: bool
    batch: int  # the batch size every requested output must have first
    calls: dict[str, int] = field(default_factory=dict)
    results: dict[str, torch.Tensor] = field(default_factory=dict)


def _owned_by_pass(module: nn.Module, output: torch.Tensor) -> bool:
    """Whether ``output`` is a tensor this forward pass made, which may be handed over without a
    copy once the pass stops: not a view (of the pass's input, or of anything longer-lived), not
    a parameter, and sharing no memory with a tensor that ``module`` or one of its submodules
    keeps (a buffer, a plain attribute, or an item of a list, tuple or dict attribute: a table it
    returns, or an output buffer it writes into again on its next pass, ``torch.relu(x, out=self.slots[shape])``).
    A tensor kept elsewhere (a global, another module) would still be handed over as it is."""
    if output._base is not None or isinstance(output, nn.Parameter):
        return False
    memory = _storage_ptr(output)
    return not any(
        t is output or (memory is not None and _storage_ptr(t) == memory)
        for part in module.modules() for key, value in vars(part).items() if key not in _NOT_KEPT
        for t in _kept_tensors(value)
    )


#: A module's attributes that hold no tensor an output could share memory with (parameters are
#: refused by type, and their detached aliases are not looked for).
_NOT_KEPT = frozenset(("_parameters", "_modules", "_non_persistent_buffers_set"))


def _kept_tensors(value: Any, depth: int = 3) -> Iterator[torch.Tensor]:
    """The tensors in ``value`` (a tensor, or lists, tuples and dicts of them, ``depth`` levels deep)."""
    if isinstance(value, torch.Tensor):
        yield value
    elif depth > 0 and isinstance(value, (list, tuple)):
        for item in value:
            yield from _kept_tensors(item, depth - 1)
    elif depth > 0 and isinstance(value, dict):
        for item in value.values():
            yield from _kept_tensors(item, depth - 1)


def _storage_ptr(t: torch.Tensor) -> int | None:
    """The address of ``t``'s memory block (shared by its views and detached aliases), or None."""
    try:
        return t.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError, TypeError):  # a sparse tensor, a subclass without storage
        return None


@dataclass
class _CacheEntry:
    key_input: torch.Tensor
    layers: dict[str, torch.Tensor]
    nbytes: int = 0


_OUTPUT = "\x00output"  # cache key of the model output


def _tensor_bytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _keeps_model_working(hook: Any) -> bool:
    """Hooks that compute a weight before each forward (weight/spectral norm, pruning masks),
    and the state-dict hooks torch registers with them, must stay on the copy."""
    if isinstance(hook, prune.BasePruningMethod):
        return True
    inner = getattr(hook, "__wrapped__", hook)  # a state-dict hook as torch keeps it (_WrappedHook)
    kind = type(inner).__name__
    if kind in ("WeightNorm", "SpectralNorm", "SpectralNormStateDictHook", "SpectralNormLoadStateDictPreHook"):
        return True
    return str(getattr(inner, "__module__", "")).startswith("torch.nn.utils.")  # weight_norm's load hook ...


#: A module's hook dicts that the private copy gets empty: the user's hooks belong to the user's model.
_DROPPED_HOOKS = (
    "_forward_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called",
    "_backward_hooks", "_backward_pre_hooks",
)
#: A module's hook dicts of which the copy keeps only the hooks that keep the model working.
_FILTERED_HOOKS = (
    "_forward_pre_hooks", "_state_dict_hooks", "_state_dict_pre_hooks",
    "_load_state_dict_pre_hooks", "_load_state_dict_post_hooks",
)


def _is_compiled(module: nn.Module) -> bool:
    """Whether ``module`` is the wrapper ``torch.compile`` returns for a module (it holds the
    original as ``_orig_mod``)."""
    return type(module).__name__ == "OptimizedModule" and isinstance(getattr(module, "_orig_mod", None), nn.Module)


class EagerCompiled(nn.Module):
    """Stands in a probe's copy for a submodule the user compiled (``model.features =
    torch.compile(model.features)``): it runs the original module eagerly, where the probe's hooks
    and gradients work as in any other module (dynamo would recompile around the hooks, or fail).
    The original stays registered as ``_orig_mod``, so layer and parameter names are the user's."""

    def __init__(self, original: nn.Module) -> None:
        super().__init__()
        self._orig_mod = original

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self._orig_mod(*args, **kwargs)


def _run_compiled_eagerly(model: nn.Module) -> None:
    """Put an :class:`EagerCompiled` in place of every ``torch.compile`` wrapper inside ``model`` (a copy),
    under every name it is registered (one stand-in per wrapper, so that shared stays shared)."""
    stand_ins: dict[int, EagerCompiled] = {}
    for parent in list(model.modules()):
        for key, child in list(parent._modules.items()):
            if child is not None and _is_compiled(child):
                if id(child) not in stand_ins:
                    stand_ins[id(child)] = EagerCompiled(child._orig_mod)
                parent._modules[key] = stand_ins[id(child)]


def _dtype_mismatch(exc: BaseException) -> bool:
    """Whether ``exc`` says that tensors of two dtypes met (an input cast to half meeting float32
    weights), rather than anything about the input's size."""
    text = str(exc).lower()
    if "expected scalar type" in text or "expected both inputs to have same dtype" in text:
        return True
    # 'Input type (torch.FloatTensor) and weight type (torch.cuda.FloatTensor) should be the same'
    # is a device mismatch: only type names of one device are about the dtype
    return "should be the same" in text and "type" in text and not any(d in text for d in ("cuda", "mps", "xpu"))


def _graph_tensors(value: Any) -> Iterator[torch.Tensor]:
    """The tensors in ``value`` (see :func:`_kept_tensors`) that are part of an autograd graph (not leaves)."""
    return (t for t in _kept_tensors(value) if not t.is_leaf)


def _plain_tensor_attributes(model: nn.Module) -> Iterator[tuple[nn.Module, str, torch.Tensor]]:
    """``(module, name, tensor)`` for every tensor that a module of ``model`` keeps as a plain
    attribute (``self.mean = torch.tensor(...)``): neither a parameter nor a buffer, so that
    ``Module.to`` and ``Module.float`` do not convert it. Tensors inside lists or dicts are not
    looked for."""
    for module in model.modules():
        for name, value in vars(module).items():
            if type(value) is torch.Tensor:
                yield module, name, value


def _as_computed(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A copy of ``t`` as the private copy computes: on ``device``, and float32 when floating point."""
    return t.to(device, torch.float32 if t.is_floating_point() else t.dtype, copy=True)


def _add_hook_dicts(model: nn.Module, memo: dict[int, Any]) -> None:
    """Enter into the ``copy.deepcopy`` memo of ``model`` the hook dicts its copy gets, in place of
    the user's: empty, or holding copies of the hooks that keep the model working only. The
    user's hooks are never copied (a hook bound to an object holding a lock cannot be; one
    holding a large tensor would cost its size), and the user's model keeps every one of them.
    """
    kept: list[tuple[dict[Any, Any], Any, Any]] = []  # (dict of the copy, key, user's hook)
    for module in model.modules():
        state = vars(module)
        for attr in _DROPPED_HOOKS + _FILTERED_HOOKS:
            hooks = state.get(attr)
            if isinstance(hooks, dict) and id(hooks) not in memo:
                memo[id(hooks)] = type(hooks)()
                if attr in _FILTERED_HOOKS:
                    kept += [(memo[id(hooks)], key, h) for key, h in hooks.items() if _keeps_model_working(h)]
        flags = state.get("_forward_pre_hooks_with_kwargs")
        pre_hooks = state.get("_forward_pre_hooks")
        if isinstance(flags, dict) and isinstance(pre_hooks, dict) and id(flags) not in memo:
            memo[id(flags)] = type(flags)(
                (key, flag) for key, flag in flags.items() if key in pre_hooks and _keeps_model_working(pre_hooks[key])
            )
    # copied once every dict is in the memo: a hook that refers to a module copies it without its user hooks
    for hooks, key, hook in kept:
        hooks[key] = copy.deepcopy(hook, memo)


def _hook_name(hook: Any) -> str:
    """A short name for a hook: its function's name (``<lambda>`` for a lambda), else its class's."""
    func = getattr(hook, "func", hook)  # functools.partial
    name = getattr(func, "__qualname__", None) or type(func).__qualname__
    return str(name).rsplit(".<locals>.", 1)[-1]


def _where(name: str, module: nn.Module) -> str:
    """A module as messages name it: ``'features.0' (Conv2d)``, or ``the model (ResNet)`` for the root."""
    return f"the model ({type(module).__name__})" if not name else f"{name!r} ({type(module).__name__})"


def user_forward_hooks(model: nn.Module) -> tuple[str, ...]:
    """The forward hooks and forward pre-hooks registered on ``model``'s modules that a
    :class:`Probe`'s private copy does not run, one short string each, outermost module first
    and pre-hooks before hooks, as ``"forward pre-hook <lambda> on the model (Sequential)"`` or
    ``"forward hook add_prior on '4' (Linear)"``. The hooks that keep the model working
    (pruning, ``weight_norm``, ``spectral_norm``), which the copy keeps, are not listed."""
    found: list[str] = []
    for name, module in model.named_modules():
        state = vars(module)
        where = _where(name, module)
        for attr, kind in (("_forward_pre_hooks", "forward pre-hook"), ("_forward_hooks", "forward hook")):
            hooks = state.get(attr)
            if isinstance(hooks, dict):
                found += [f"{kind} {_hook_name(h)} on {where}" for h in hooks.values() if not _keeps_model_working(h)]
    return tuple(found)


def _type_name(value: object) -> str:
    kind = type(value)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


#: What a module keeps apart from its plain attributes: tensors the copy converts itself, submodules
#: checked on their own, and the hook dicts it never copies (the hooks it keeps are checked one by one).
_NOT_ATTRIBUTES = frozenset(
    ("_parameters", "_buffers", "_modules", "_forward_pre_hooks_with_kwargs") + _DROPPED_HOOKS + _FILTERED_HOOKS
)


def _uncopyable_parts(model: nn.Module, most: int = 3) -> list[str]:
    """The first (at most ``most``) attributes of ``model``'s modules that ``copy.deepcopy``
    refuses, as ``"body.lock (_thread.lock)"``, and the kept hooks it refuses (a pruning method
    holding a lock), as ``"0._forward_pre_hooks[0] (LockedPruning)"``. Each is copied alone, with
    the model's modules and tensors taken as they are, so the check costs little more than the
    attributes' own size."""
    as_is: dict[int, Any] = {}
    for module in model.modules():
        as_is[id(module)] = module
        for t in (*module._parameters.values(), *module._buffers.values()):
            if t is not None:
                as_is[id(t)] = t
    found: list[str] = []

    def refused(value: Any) -> bool:
        try:
            copy.deepcopy(value, dict(as_is))
        except Exception:  # noqa: BLE001 - any failure is what is looked for
            return True
        return False

    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        state = vars(module)
        for attr, value in state.items():
            if attr in _NOT_ATTRIBUTES or isinstance(value, (torch.Tensor, nn.Module, int, float, str, bytes, type(None))):
                continue
            if refused(value):
                found.append(f"{prefix}{attr} ({_type_name(value)})")
                if len(found) >= most:
                    return found
        for attr in _FILTERED_HOOKS:
            hooks = state.get(attr)
            for key, hook in (hooks.items() if isinstance(hooks, dict) else ()):
                if _keeps_model_working(hook) and refused(hook):
                    found.append(f"{prefix}{attr}[{key}] ({_type_name(hook)})")
                    if len(found) >= most:
                        return found
    return found


def _copy_error(model: nn.Module, exc: Exception) -> TypeError:
    """The error for ``model`` failing to be deep-copied with ``exc``: it names the attributes that
    cannot be copied, when it finds them, and the ways out."""
    try:
        parts = _uncopyable_parts(model)
    except Exception:  # noqa: BLE001 - the search is a courtesy; the error is raised anyway
        parts = []
    text = f"cannot copy the model for safe inspection ({type(exc).__name__}: {exc}); "
    if parts:
        which = "this attribute" if len(parts) == 1 else "these attributes"  # a kept hook is one too
        text += (
            f"what cannot be copied is in {which}: {', '.join(parts)}. The Probe works on a private "
            "copy so that your model is never changed; remove the attribute or move it off the module before "
            "exploring (keep it next to the model instead), give its class a __deepcopy__ method, or pass a "
            "model without it"
        )
    else:
        text += (
            "the Probe works on a private copy so that your model is never changed; remove what cannot be "
            "copied (a lock, an open file, a generator, a trainer or logger) from the model's modules before "
            "exploring, give its class a __deepcopy__ method, or pass a model without it"
        )
    return TypeError(text)


def _scripted_submodules(model: nn.Module) -> list[str]:
    """Qualified names of the TorchScript modules (``torch.jit.script`` / ``torch.jit.trace``) inside
    ``model``, outermost first (the modules inside them are not listed)."""
    names: list[str] = []
    for name, module in model.named_modules():
        if isinstance(module, torch.jit.ScriptModule) and not any(name.startswith(f"{n}.") for n in names):
            names.append(name)
    return names


def _meta_tensors(tensors: dict[str, torch.Tensor]) -> list[str]:
    """The names among ``tensors`` (a model's :func:`_tensors`) on the meta device (shapes, no values)."""
    return [name for name, t in tensors.items() if t.is_meta]


#: What to do about tensors on the meta device (shapes without values), for every message about them.
LOAD_WEIGHTS_FIRST = 'load the weights first, e.g. model.to_empty(device="cpu") then model.load_state_dict(state_dict)'


def _meta_error(names: Sequence[str]) -> ValueError:
    """The error for the model's parameters or buffers ``names`` being on the meta device."""
    shown = ", ".join(repr(n) for n in names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
    return ValueError(
        f"the model has parameters or buffers on the meta device, which holds shapes but no values ({shown}); "
        f"{LOAD_WEIGHTS_FIRST}"
    )


@functools.cache
def _autocast_devices() -> tuple[str, ...]:
    """The device types whose autocast a caller may have switched on here."""
    types = ["cpu"]
    if torch.cuda.is_available():
        types.append("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # older releases warn that MPS autocast is unsupported
                with torch.autocast("mps", enabled=False):
                    types.append("mps")
        except (RuntimeError, ValueError, UserWarning):  # no autocast on MPS here: nothing to switch off
            pass
    return tuple(types)


@contextlib.contextmanager
def _plain_mode() -> Iterator[None]:
    """Run the private model as the probe documents it, whatever the caller's context: outside
    inference mode (its tensors stay usable for gradients and in-place refreshes) and without
    autocast on any device (activations are float32, and the cache never mixes precisions)."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.inference_mode(False))
        for device_type in _autocast_devices():
            stack.enter_context(torch.autocast(device_type, enabled=False))
        yield


def set_memory_format(model: nn.Module, channels_last: bool) -> None:
    """Put the 4-D parameters and buffers of ``model`` in channels-last (``channels_last=True``) or the
    standard layout, in place.

    Unlike ``model.to(memory_format=torch.channels_last)``, which refuses a model with any 5-D
    weight (``nn.Conv3d``), tensors of other ranks are left as they are.
    """
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model._apply(lambda t: _in_layout(t, layout) if t.dim() == 4 else t)


def _in_layout(t: torch.Tensor, layout: torch.memory_format) -> torch.Tensor:
    """``t`` (4-D) with exactly the strides of ``layout``.

    ``Tensor.contiguous`` keeps a tensor that already counts as contiguous in the asked layout,
    and with one channel (the first convolution of a grayscale model) both layouts count: a
    channels-last weight of shape (10, 1, 5, 5) would stay channels-last, and so would every
    activation computed with it, which breaks ``x.view(...)`` in the model's forward.
    """
    n, c, h, w = t.shape
    want = (c * h * w, 1, w * c, c) if layout is torch.channels_last else (c * h * w, h * w, w, 1)
    if t.stride() == want:
        return t
    return torch.empty_like(t, memory_format=layout).copy_(t)


def _storage_ref(t: torch.Tensor) -> weakref.ref | None:
    """A weak reference to the storage ``t`` holds now (equal to the reference taken later while ``t`` holds
    the same storage, and to no reference taken of another one), or None for a tensor without one.

    ``t.data_ptr()`` alone cannot tell a new storage from the old one: memory just freed is often handed
    out again at the same address (``model.half(); model.float()`` gives each weight new float32 memory,
    where its old float32 memory was)."""
    try:
        return weakref.ref(t.untyped_storage())
    except (RuntimeError, NotImplementedError, TypeError):  # a sparse tensor, a tensor subclass without storage
        return None


def _tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer of ``model`` by qualified name."""
    return {**dict(model.named_parameters()), **dict(model.named_buffers())}


#: The most bytes one tensor can hold: torch counts them in a signed 64-bit integer.
MAX_TENSOR_BYTES = 2**63 - 1


def check_input_size(size: Any) -> tuple[int, int, int]:
    """``size`` as (C, H, W): three positive ints, each a Python int, a numpy integer or a 0-d
    integer tensor (the types :func:`~cnnwidgets.core.targets.as_index` takes), in order: a
    tuple, a list, a ``torch.Size``, or a 1-D integer array or tensor of three.

    Raises:
        ValueError: for anything else, saying what was given (a tensor or an array by its shape;
            a set or a dict, which hold no order), and for a size of which one float32 image would
            not fit in a tensor (more than ``2**63 - 1`` bytes).
    """
    values: tuple[Any, ...] = ()
    if not isinstance(size, (str, bytes, set, frozenset, Mapping)):  # no order, or characters
        try:
            values = tuple(size)
        except TypeError:
            values = ()
    ints = [_size_entry(v) for v in values]
    if len(values) != 3 or any(v is None or v < 1 for v in ints):
        got = repr(size)
        if isinstance(size, (torch.Tensor, np.ndarray)):
            kind = "tensor" if isinstance(size, torch.Tensor) else "numpy array"
            got = f"a {kind} of shape {tuple(size.shape)}"
            if size.ndim == 4:
                got += "; for the size of a batch x pass tuple(x.shape[1:])"
        elif isinstance(size, (set, frozenset, Mapping)):
            got += f" (a {type(size).__name__}, which holds no order: give a tuple (C, H, W))"
        raise ValueError(f"input_size must be (C, H, W), three positive ints such as (3, 224, 224); got {got}")
    c, h, w = ints
    if c * h * w * 4 > MAX_TENSOR_BYTES:
        raise ValueError(
            f"input_size {(c, h, w)} is too large: one float32 image of that size would take about "
            f"2**{(c * h * w * 4).bit_length() - 1} bytes, more than a tensor can hold (2**63 - 1 bytes); give the "
            "size the model takes, such as (3, 224, 224)"
        )
    return c, h, w  # type: ignore[return-value]


def _size_entry(value: Any) -> int | None:
    """``value`` as an int when it is one as :func:`~cnnwidgets.core.targets.as_index` takes it, else None."""
    try:
        return as_index(value, "input_size")
    except TypeError:
        return None


# Whatever the user's forward raises while the layers are discovered (a KeyError of a dict lookup,
# an assert, a ValueError of its own checks) is reported as the model failing on the input size,
# so that it cannot be taken for the probe's own KeyError (unknown layer) or ValueError (bad input).
_DISCOVERY_ERRORS = (Exception,)


def channels_last_size_hint(size: tuple[int, ...]) -> str:
    """A hint for an input ``size`` given as (H, W, C) where (C, H, W) was meant, else ''.

    Args:
        size: the input size given, as a tuple of ints.
    """
    if len(size) == 3 and size[2] in (1, 3, 4) and size[0] > 4 and size[1] > 4:
        return (f" (input sizes are (C, H, W): {size} looks like (H, W, C); did you mean "
                f"{(size[2], size[0], size[1])}?)")
    return ""


def model_error_text(exc: BaseException) -> str:
    """The model's error for a message: its text, after its type unless that is RuntimeError
    (torch's usual one, whose text says enough; a bare KeyError prints only the key).

    Args:
        exc: the exception the model raised.
    """
    return str(exc) if type(exc) is RuntimeError else f"{type(exc).__name__}: {exc}"


# Errors of a model that cannot come from the size or channels of its input (a missing dict key,
# attribute or name in its own code): a failure at a new size is not blamed on the size then.
_NOT_ABOUT_THE_INPUT = (KeyError, AttributeError, NameError)


class ChannelsLastError(RuntimeError):
    """The model cannot run channels-last, which the caller asked for explicitly."""


def _layout_error(exc: BaseException) -> bool:
    """Whether a forward failed because an activation was not contiguous (channels-last)."""
    text = str(exc)
    return "view size is not compatible" in text or "contiguous" in text


def check_channel_axis(model: nn.Module, x: torch.Tensor) -> None:
    """Refuse a batch laid out as (N, H, W, C), channels last, instead of (N, C, H, W).

    It is recognised when the model's first registered convolution (see
    :func:`~cnnwidgets.core.layers.input_channels`) takes as many channels as x's last
    dimension, but not as many as its second, and that last dimension is smaller than both
    others (a channel count, not a width). Cheap when x's last dimension is not the smallest,
    as in every (N, C, H, W) image: the model is not looked at.

    Raises:
        ValueError: for such an x.
    """
    _, second, height, last = x.shape
    if last >= min(second, height):
        return
    channels = input_channels(model)
    if channels is not None and second != channels and last == channels:
        raise ValueError(
            f"x looks like (N, H, W, C) = {tuple(x.shape)}: the model takes {channels} input channels, which is "
            f"x's last dimension; x must be (N, C, H, W): permute it with x.permute(0, 3, 1, 2)"
        )


def check_output_batch(output: torch.Tensor, batch: int) -> None:
    """Refuse a model ``output`` whose first dimension is not the ``batch`` size (one output per image).

    Raises:
        ValueError: naming the shape and the batch size.
    """
    if output.dim() == 0 or output.shape[0] != batch:
        raise ValueError(
            f"the model's output has shape {tuple(output.shape)} for a batch of {batch} "
            f"image{'s' if batch != 1 else ''}: its first dimension must be the batch, one "
            "output per image (does the forward reduce over the batch, or squeeze it away?)"
        )


def check_batch(x: object) -> torch.Tensor:
    """Validate a preprocessed (N, C, H, W) float batch; return it unchanged.

    Raises:
        TypeError: if ``x`` is not a tensor.
        ValueError: if it is not a non-empty 4-D dense (strided) tensor of float16, bfloat16,
            float32 or float64 with values (not on the meta device), if it holds NaN or
            infinite values (the message says how many and in which images), or float64 values
            beyond float32's range (infinite in the float32 the probe computes in); the message
            says how to fix it.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(
            f"expected a preprocessed torch.Tensor of shape (N, C, H, W), got {type(x).__name__}; make one "
            "with the model's own preprocessing, e.g. bundle.batch(image) for a cnnwidgets.zoo bundle "
            "(load_torchvision('resnet18').batch('cat.jpg')), or torchvision's weights.transforms()(image)"
            ".unsqueeze(0)"
        )
    if x.dim() != 4:
        hint = " (add a batch dimension with x.unsqueeze(0))" if x.dim() == 3 else ""
        raise ValueError(f"expected a batch of shape (N, C, H, W), got {tuple(x.shape)}{hint}")
    if not x.is_floating_point():
        raise ValueError(f"expected a float tensor, got dtype {x.dtype}; preprocess the image first")
    if x.dtype not in _INPUT_DTYPES:  # float8: no reduction, no convolution on it
        raise ValueError(
            f"expected a float16, bfloat16, float32 or float64 tensor, got dtype {x.dtype}; convert it with x.float()"
        )
    if x.layout != torch.strided:
        raise ValueError(
            f"expected a dense tensor, got one with layout {x.layout} (a sparse tensor); convert it with x.to_dense()"
        )
    if x.shape[0] == 0:
        raise ValueError("the batch is empty")
    if x.numel() == 0:
        raise ValueError(f"the batch has no pixels: its shape is {tuple(x.shape)}; channels, height and width must be >= 1")
    if x.is_meta:
        raise ValueError("the batch is on the meta device, which holds shapes but no values; give a tensor with data")
    _check_finite(x)
    return x


#: The largest finite float32: float64 values beyond it become infinite in the probe's float32 copy.
_FLOAT32_MAX = float(torch.finfo(torch.float32).max)

#: The float dtypes a batch may come in (the probe computes in float32).
_INPUT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _check_finite(x: torch.Tensor) -> None:
    """Raise ``ValueError`` when the batch ``x`` holds NaN or infinite values, saying how many and where.

    One reduction when all is well (the minimum and maximum propagate NaN and show infinities):
    a few milliseconds for a 9 x 3 x 224 x 224 batch on a CPU, under 1 % of a ResNet-18 forward pass.
    The same minimum and maximum show float64 values beyond float32's range, which the probe's
    float32 copy of the batch would hold as infinities: those are refused too.
    """
    with torch.no_grad():
        low, high = torch.aminmax(x)
        low, high = float(low), float(high)
        if math.isfinite(low) and math.isfinite(high):
            if max(-low, high) > _FLOAT32_MAX:  # float64 only: no other input dtype reaches it
                raise ValueError(
                    f"the batch holds values from {low:.4g} to {high:.4g}, beyond float32's range "
                    f"(+-{_FLOAT32_MAX:.4g}); the probe computes in float32, where they would be infinite: give "
                    "values in float32's range (check the preprocessing)"
                )
            return
        bad = ~torch.isfinite(x)
        count = int(bad.sum())
        images = torch.nonzero(bad.flatten(1).any(dim=1)).flatten().tolist()
    shown = ", ".join(str(i) for i in images[:10]) + (", ..." if len(images) > 10 else "")
    raise ValueError(
        f"the batch holds {count} value{'s' if count != 1 else ''} that {'are' if count != 1 else 'is'} not finite "
        f"(NaN or inf), in image{'s' if len(images) != 1 else ''} {shown} of {x.shape[0]}; "
        "give finite inputs (check the image loading and the preprocessing)"
    )


def _name_type_error(value: object) -> TypeError:
    """The error for ``value`` given where a layer's name (a str) is asked."""
    if isinstance(value, nn.Module):
        hint = "; name the layer instead, as listed by probe.layers"
    elif isinstance(value, (bytes, bytearray)):
        hint = f" {bytes(value)!r}; decode it to a str"
    else:
        hint = ""
    return TypeError(f"layer names are strings, got {type(value).__name__}{hint}")


def layer_names(layers: str | Iterable[str]) -> list[str]:
    """``layers`` (one layer name, or several) as a list of plain ``str`` names; the list may be empty.

    Raises:
        TypeError: when ``layers`` or one of its items is not a string (a module, an index, bytes ...).
    """
    if isinstance(layers, str):
        layers = [layers]
    elif isinstance(layers, (nn.Module, torch.Tensor, bytes, bytearray)) or not isinstance(layers, Iterable):
        raise _name_type_error(layers)
    names = list(layers)
    for name in names:
        if not isinstance(name, str):
            raise _name_type_error(name)
    # plain str, not a subclass (numpy's str_ from an array of names): results are keyed by these
    return [str.__str__(name) for name in names]


def batch_dependent_layers(model: nn.Module) -> list[str]:
    """Names of the layers of ``model`` whose output for one image depends on the other images of its batch.

    These are batch-norm layers without running statistics (``track_running_stats=False``):
    they normalise with the statistics of the batch at hand even in evaluation mode.
    """
    return [
        name for name, module in model.named_modules()
        if isinstance(module, nn.modules.batchnorm._BatchNorm)
        and module.running_mean is None and module.running_var is None
    ]


def plain_module(model: nn.Module) -> nn.Module:
    """The eager module inside ``model``'s wrappers, those that only change how a model runs.

    ``torch.compile`` results (the module they compiled) and ``nn.DataParallel`` /
    ``DistributedDataParallel`` (their ``.module``) are unwrapped, so layers keep the model's own
    names and nothing compiles on an interactive path; they share the wrapped module's weights.

    Raises:
        TypeError: for TorchScript modules (``torch.jit.script`` / ``torch.jit.trace``): their
            layers are compiled graphs that forward hooks do not see and that are no longer
            ``nn.Conv2d`` and the like; and for a ``model`` that is no ``nn.Module``.
    """
    _require_module(model, "plain_module")
    while True:
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        elif _is_compiled(model):
            model = model._orig_mod
        else:
            break
    if isinstance(model, torch.jit.ScriptModule):
        raise TypeError(
            f"{type(model).__name__} is a TorchScript module (torch.jit.script or torch.jit.trace): its layers "
            "can be neither hooked nor read as torch layers. Pass the original nn.Module (before scripting or "
            "tracing) instead"
        )
    return model


def unwrap_model(model: object, input_size: Sequence[int] | None = None) -> tuple[nn.Module, Sequence[int] | None]:
    """``(module, input_size)`` of an ``nn.Module``, or of a bundle that carries one.

    A bundle (such as those of :mod:`cnnwidgets.zoo`) is any object with a ``model`` attribute
    that is an ``nn.Module``; its ``input_size`` is used unless ``input_size`` is given. The
    module is passed through :func:`plain_module`.

    Raises:
        TypeError: for a :class:`Probe` (its ``model`` is its private copy, which does not follow
            the user's model), for anything else, and for TorchScript modules.
    """
    if isinstance(model, Probe):
        raise TypeError(
            "this is already a Probe; pass the model, or use the probe directly (functions that take a "
            "model or a probe accept it as it is)"
        )
    if isinstance(model, nn.Module):
        return plain_module(model), input_size
    inner = getattr(model, "model", None)
    if isinstance(inner, nn.Module):
        return plain_module(inner), input_size if input_size is not None else getattr(model, "input_size", None)
    raise TypeError(
        f"expected a torch.nn.Module (or a bundle with a .model module, e.g. cnnwidgets.zoo.load_default()), "
        f"got {type(model).__name__}{not_a_model_hint(model)}"
    )


def bundle_input_normalization(model: object) -> tuple[Any, Any] | None:
    """``(mean, std)`` of a bundle (an object whose ``model`` is an ``nn.Module``, see
    :func:`unwrap_model`), read from its ``mean`` and ``std`` attributes (None where it has none);
    None for an ``nn.Module``, a :class:`Probe` or anything else that is not a bundle."""
    if isinstance(model, (nn.Module, Probe)) or not isinstance(getattr(model, "model", None), nn.Module):
        return None
    return getattr(model, "mean", None), getattr(model, "std", None)


def takes_as_model(value: object) -> bool:
    """Whether the methods take ``value`` where they take a model: an ``nn.Module``, a
    :class:`Probe`, or a bundle (an object whose ``model`` is an ``nn.Module``)."""
    return isinstance(value, (nn.Module, Probe)) or isinstance(getattr(value, "model", None), nn.Module)


def not_a_model_hint(value: object) -> str:
    """What to do instead, for the usual things passed where a model belongs (for a message).

    Args:
        value: what was passed instead of a model.
    """
    if isinstance(value, Mapping) and value and all(isinstance(v, torch.Tensor) for v in value.values()):
        return ("; this is a state dict (parameter names -> tensors), not a model: build the model, then "
                "model.load_state_dict(state_dict) and pass the model")
    if isinstance(value, (str, os.PathLike)):
        return ("; a file of weights is not a model: build the model, load them with "
                "model.load_state_dict(torch.load(path, weights_only=True)) and pass the model")
    return ""


class Probe:
    """Capture intermediate outputs of a CNN without touching the model.

    The probe works on a private copy of the model, in evaluation mode and in float32: a model
    kept in half, bfloat16 or double precision is inspected in float32 (inputs are converted
    to float32 too), and the user's model keeps its own precision.

    Hooks registered on the model's modules (forward, backward, state-dict and load hooks)
    stay on the user's model only and do not fire during the probe's passes; they are not
    copied either. A forward hook or forward pre-hook that changes what a module computes or
    sees (a root pre-hook that normalises the input, a hook that adds a prior to the head's
    output) thus makes the probe's results differ from ``model(x)``: :attr:`user_hooks` lists
    those the copy does not run, and the plain methods given such a model (not a probe) warn with
    :class:`UserHooksWarning`. The hooks that compute a weight before each forward (``weight_norm``,
    ``spectral_norm``, pruning) are copied with it. Global module hooks, registered with
    ``torch.nn.modules.module.register_module_forward_hook`` or another
    ``register_module_*`` function, do fire, since PyTorch applies them to every module, the
    copy's included; the probe leaves them in place, as other code of the process may rely on them.

    Args:
        model: any ``nn.Module`` that maps an (N, C, H, W) batch to an output tensor, or a zoo
            bundle (its model, its ``input_size`` unless one is given, and its ``mean`` and ``std``,
            kept in :attr:`normalization`).
        device: ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"``.
        channels_last: run convolutions in channels-last memory layout. ``"auto"`` enables it
            on CPU for models with 2-D convolutions, where it is faster (about 1.3-1.6x on AVX2 CPUs),
            and turns it off for good when the model's forward needs contiguous activations
            (``x.view(N, -1)`` after a convolution, as in many tutorial networks). The layout stays
            inside the probe: :meth:`capture` and :meth:`logits` hand over contiguous tensors
            unless asked otherwise.
        input_size: (C, H, W) used to describe layers before the first capture; defaults to the
            size of the first captured batch, else the first of :func:`default_input_sizes`
            the model runs on ((3, 224, 224) for torchvision models, (1, 28, 28) for an MNIST net).
        cache_size: number of distinct inputs whose activations are kept (least recently used
            are evicted first).
        cache_bytes: upper bound on the memory held by cached activations.

    Example:
        >>> with Probe(model) as probe:
        ...     acts = probe.capture(batch, ["features.0", "features.3"])

    Raises:
        TypeError: if ``model`` is neither an ``nn.Module`` nor a bundle, or is a :class:`Probe`
            already (use that probe itself), or is or holds a TorchScript module (pass the eager
            ``nn.Module``); for a ``cache_size`` or ``cache_bytes`` that is not an int
            (a Python int, a numpy integer or a 0-d integer tensor), or a ``channels_last`` that
            is neither a bool nor a string (``1`` is not True).
        ValueError: for an unknown or unavailable device, lazy modules (``nn.LazyConv2d`` ...)
            that have not run yet, parameters or buffers on the meta device (no values: load the
            weights first), an ``input_size`` that is not (C, H, W) (see :func:`check_input_size`),
            ``cache_size < 1``, ``cache_bytes < 0``, or a ``channels_last`` string other than ``"auto"``.
    """

    def __init__(
        self,
        model: nn.Module,
        device: str | torch.device = "auto",
        *,
        channels_last: bool | str = "auto",
        input_size: Sequence[int] | None = None,
        cache_size: int = 8,
        cache_bytes: int = 512 * 2**20,
    ) -> None:
        normalization = bundle_input_normalization(model)
        model, input_size = unwrap_model(model, input_size)
        if isinstance(channels_last, str):
            if channels_last != "auto":
                raise ValueError(f"channels_last must be True, False or 'auto', got {channels_last!r}")
        else:
            try:
                channels_last = as_flag(channels_last, "channels_last")
            except TypeError as exc:
                raise TypeError(f"{exc} (or 'auto')") from None
        if input_size is not None:
            input_size = check_input_size(input_size)  # now, not at the first look at the layers
        cache_size = as_count(cache_size, "cache_size")
        cache_bytes = as_count(cache_bytes, "cache_bytes", minimum=0)
        self._user_model = model
        self._normalization = normalization
        self._model_name = type(model).__name__
        self._lock = threading.RLock()
        self._synced_here = threading.local()  # depth of synced() blocks, per thread
        self._channels_last_request = channels_last
        self._device = resolve_device(device)
        self._input_size: tuple[int, ...] | None = tuple(input_size) if input_size is not None else None
        self._layers: dict[str, LayerInfo] | None = None
        self._layers_size: tuple[int, ...] | None = None
        self._output_activation: str | None = None
        self._scores_layer: str | None = None
        self._output_reduction = ""
        self._cache: OrderedDict[int, _CacheEntry] = OrderedDict()
        self._cache_serial = 0
        self._cache_size = cache_size
        self._cache_bytes = cache_bytes
        self._run: _Run | None = None
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._closed = False
        self._close_callbacks: list[Callable[[], None]] = []
        self.stats = ProbeStats()
        self._model = self._make_copy()
        self._fingerprint = self._user_fingerprint()
        self._version = 0
        self._writes = 0  # a sequence lock on the copy's tensors: odd while they are written

    # ------------------------------------------------------------------ the private copy
    def _converted_tensors(self) -> dict[int, torch.Tensor]:
        """The user's parameters and buffers as the copy needs them, keyed for ``copy.deepcopy``.

        Each tensor is copied once, straight into its final form (float32, on the probe's
        device, channels-last 4-D weights when the probe runs channels-last, no gradient),
        instead of being cloned by ``deepcopy`` and converted again by ``Module.to``. Tensor
        subclasses and lazy (uninitialised) parameters are left to ``deepcopy``.
        """
        memo: dict[int, torch.Tensor] = {}
        fmt = torch.channels_last if self._channels_last else torch.contiguous_format
        for module in self._user_model.modules():
            for tensors, is_param in ((module._parameters, True), (module._buffers, False)):
                for t in tensors.values():
                    if t is None or id(t) in memo or type(t) is not (nn.Parameter if is_param else torch.Tensor):
                        continue
                    dtype = torch.float32 if t.is_floating_point() else t.dtype
                    new = t.detach().to(
                        self._device, dtype, memory_format=fmt if t.dim() == 4 else torch.preserve_format, copy=True
                    )
                    memo[id(t)] = nn.Parameter(new, requires_grad=False) if is_param else new
        # after every parameter and buffer, so that an attribute naming one of them stays that tensor
        for _module, _name, value in _plain_tensor_attributes(self._user_model):
            if id(value) not in memo:
                # a tensor kept as a plain attribute: constants the forward uses (a normalisation mean
                # made with torch.tensor(...)), or the weight a pruning or weight-norm hook computes
                # before each forward (deepcopy refuses one that is part of an autograd graph).
                # Module.to and Module.float leave these where they are: they go where the copy computes
                memo[id(value)] = _as_computed(value.detach(), self._device)
        for module in self._user_model.modules():
            for value in vars(module).values():
                # deepcopy refuses a tensor that is part of an autograd graph: one kept as a plain
                # attribute of a subclass type, or inside a list or dict (a forward's cache,
                # self.cache["features"] = y, filled while gradients were on), is copied detached
                for tensor in _graph_tensors(value):
                    if id(tensor) not in memo:
                        memo[id(tensor)] = tensor.detach().clone()
        return memo

    def _make_copy(self) -> nn.Module:
        # the verdicts of _hand_over are about the modules of the copy being replaced
        self._owned_verdicts: dict[tuple[int, tuple[int, ...]], bool] = {}
        # normal tensors even when the probe is made inside torch.inference_mode(): inference
        # tensors could not be refreshed in place later, nor take part in gradients
        with torch.inference_mode(False):
            return self._copy_model()

    def _hand_over(self, module: nn.Module, output: torch.Tensor) -> bool:
        """:func:`_owned_by_pass`, whose walk over what ``module`` keeps (about 0.15 ms for a
        resnet block, on every drag step) is done once per module of the copy and output shape."""
        if output._base is not None or isinstance(output, nn.Parameter):
            return False
        key = (id(module), tuple(output.shape))
        owned = self._owned_verdicts.get(key)
        if owned is None:
            owned = self._owned_verdicts[key] = _owned_by_pass(module, output)
        return owned

    def _copy_model(self) -> nn.Module:
        lazy = [name for name, module in self._user_model.named_modules() if isinstance(module, nn.modules.lazy.LazyModuleMixin)
                and module.has_uninitialized_params()]
        if lazy:
            raise ValueError(
                f"the model has lazy modules whose parameters are not initialised yet ({', '.join(lazy[:4])}); "
                "run one forward pass on an input of the size it expects first, e.g. model(torch.zeros(1, C, H, W)) "
                "(in training mode if such a module runs only in training, as an auxiliary head)"
            )
        scripted = _scripted_submodules(self._user_model)
        if scripted:
            shown = ", ".join(repr(n) for n in scripted[:4]) + (" ..." if len(scripted) > 4 else "")
            what = f"a TorchScript module, {shown}" if len(scripted) == 1 else f"TorchScript modules, {shown}"
            raise TypeError(
                f"the model holds {what} (made with torch.jit.script or torch.jit.trace): its layers can be neither "
                "hooked nor read as torch layers, nor copied for inspection. Put the original nn.Module (before "
                "scripting or tracing) in place of the scripted one, or pass the whole model before scripting"
            )
        meta = _meta_tensors(_tensors(self._user_model))
        if meta:
            raise _meta_error(meta)
        self._channels_last = self._want_channels_last(self._user_model)
        memo = self._converted_tensors()
        try:
            _add_hook_dicts(self._user_model, memo)  # the user's hooks are left out, not copied
            clone = copy.deepcopy(self._user_model, memo)
        except Exception as exc:  # noqa: BLE001 - any failure means the model cannot be copied
            raise _copy_error(self._user_model, exc) from exc
        _run_compiled_eagerly(clone)
        for module in clone.modules():
            if isinstance(getattr(module, "inplace", None), bool):
                module.inplace = False
        for param in clone.parameters():
            param.requires_grad_(False)
            param.grad = None
        clone.eval()
        self._batch_dependent = tuple(batch_dependent_layers(clone))
        # Tensors deepcopy copied as they were (subclasses, plain tensor attributes) still need this.
        if any(t.is_floating_point() and t.dtype != torch.float32 for t in (*clone.parameters(), *clone.buffers())):
            clone.float()  # inputs are float32; half or double weights would fail on them
        if any(t.device != self._device for t in (*clone.parameters(), *clone.buffers())):
            clone.to(self._device)
        if self._channels_last and any(
            t.dim() == 4 and not t.is_contiguous(memory_format=torch.channels_last) for t in clone.parameters()
        ):
            set_memory_format(clone, True)
        self._install_hooks(clone)
        return clone

    def _left_channels_last(self, exc: BaseException) -> bool:
        """After a forward pass failed with ``exc``: whether it failed for channels-last
        activations (``x.view(N, -1)`` after a convolution needs contiguous ones) and this model
        now runs in the standard layout, on every device, so that the pass can be retried.

        Raises:
            ChannelsLastError: when channels-last was asked for explicitly (``channels_last=True``).
        """
        if not (self._channels_last and _layout_error(exc)):
            return False
        if self._channels_last_request is True:
            raise ChannelsLastError(
                f"the model fails on channels-last inputs ({exc}); create the Probe with "
                "channels_last=False (or 'auto', which falls back by itself)"
            ) from exc
        self._channels_last_request = False
        self._channels_last = False
        set_memory_format(self._model, False)
        return True

    def _want_channels_last(self, model: nn.Module) -> bool:
        if self._channels_last_request == "auto":
            has_conv = any(isinstance(m, nn.Conv2d) for m in model.modules())
            return self._device.type == "cpu" and has_conv
        return bool(self._channels_last_request)

    def _install_hooks(self, model: nn.Module) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._modules: dict[str, nn.Module] = {}
        for name, module in model.named_modules():
            if not name:
                continue
            self._modules[name] = module
            self._handles.append(module.register_forward_hook(self._make_hook(name)))

    def _make_hook(self, name: str):
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            run = self._run
            if run is None:
                return
            self.stats.modules_executed += 1
            final_call = run.wanted.get(name)
            if final_call is None:
                return
            count = run.calls.get(name, 0) + 1
            run.calls[name] = count
            if count != final_call:
                return
            if not isinstance(output, torch.Tensor):
                raise NotATensorError(
                    f"layer {name!r} returns {type(output).__name__}, not a tensor; "
                    "choose a layer whose output is a single tensor"
                )
            if output.dim() == 0 or output.shape[0] != run.batch:
                raise self._not_a_batch(name, tuple(output.shape), run.batch)
            last = run.stop and len(run.results) + 1 == len(run.wanted)
            if run.grad:
                run.results[name] = output.clone()
            elif last and self._hand_over(module, output):
                # the pass stops right here: nothing can change this tensor later, and a copy
                # of a large early map (12 MB for VGG16's first layers at 224 x 224) costs
                # a good part of a millisecond on every drag step
                run.results[name] = output.detach()
            else:
                # later layers of this pass may write into it (an in-place ReLU)
                run.results[name] = output.detach().clone()
            if last:
                raise StopForward

        return hook

    def _not_a_batch(self, name: str, shape: tuple[int, ...], batch: int) -> NotABatchError:
        """The error for layer ``name``, whose output of ``shape`` does not start with the batch size."""
        start = (
            "returns a 0-d tensor, with no batch dimension" if not shape
            else f"returns a tensor whose first dimension ({shape[0]}) is not the batch's ({batch})"
        )
        problem = input_kind_problem(self._user_model) if self._user_model is not None else None
        why = (
            f"; {problem}" if problem
            else "; the layer reads the batch as one unbatched sample, or mixes or drops the images of the batch"
        )
        return NotABatchError(
            f"layer {name!r} {start}: cnnwidgets reads a layer's output as one result per image, (N, ...), "
            f"and cannot capture this one (its output has shape {shape}){why}"
        )

    def _user_fingerprint(self) -> tuple[tuple[int, ...], tuple[tuple[Any, ...], ...]]:
        """Identity of every module, and identity and version counter of every parameter and
        buffer of the user's model.

        In-place updates (optimizer steps, ``load_state_dict``, ``with torch.no_grad(): p.mul_(2)``)
        bump a tensor's version counter; replacing a module (a ReLU by a Tanh, a convolution by
        another) or a parameter changes the identities. Writes through ``.data`` and changes of a
        module's attributes in place (``conv.stride = 2``) are not seen: call :meth:`refresh`.
        """
        modules = []
        items = []
        for module in self._user_model.modules():
            modules.append(id(module))
            for tensors in (module._parameters, module._buffers):
                for t in tensors.values():
                    if t is not None:
                        # model.half() or p.data = ... swap the storage without a version bump
                        # (and the new storage may be at the old one's address)
                        items.append((id(t), t._version, t.data_ptr(), t.dtype, _storage_ref(t)))
        return tuple(modules), tuple(items)

    def refresh(self) -> None:
        """Copy the user's model afresh now: after writes through ``param.data`` or changes of a
        module's attributes in place (``conv.stride = 2``), which the probe cannot notice."""
        with self._lock:
            self._check_open()
            self._fingerprint = None  # type: ignore[assignment]
            self._sync(rebuild=True)

    def sync(self) -> None:
        """Bring :attr:`model` up to date with the user's model if its weights changed.

        Cheap when nothing changed (one pass over the parameters' version counters);
        every capture does this itself, so call it only before reading :attr:`model` directly.
        """
        with self._lock:
            self._check_open()
            self._sync()

    @contextlib.contextmanager
    def synced(self) -> Iterator[Probe]:
        """Check the user's model for changes at most once, for a series of calls on this thread.

        Every capture, :meth:`logits` and :meth:`sync` compares the user's parameters with the
        private copy (one pass over their version counters: about 0.1 ms for a resnet18). Inside
        ``with probe.synced():`` the first of these calls made by this thread checks, and the
        later ones take that check as current; other threads check as usual, and
        :meth:`refresh` still copies afresh. A change of the user's weights after that first
        check is seen by the first call after the block. Blocks may be nested (the outermost
        one counts).
        """
        local = self._synced_here
        depth = getattr(local, "depth", 0)
        if depth == 0:
            local.checked = False
        local.depth = depth + 1
        try:
            yield self
        finally:
            local.depth = depth
            if depth == 0:
                local.checked = False

    def _sync(self, rebuild: bool = False) -> None:
        """Refresh the private copy when the user's model changed since the last call: new
        values are copied into it, and it is copied afresh when modules were replaced."""
        local = self._synced_here
        inside = getattr(local, "depth", 0) > 0
        if inside and local.checked and not rebuild:
            return  # checked already in this thread's synced() block
        self._update_copy(rebuild)
        if inside:
            local.checked = True

    def _update_copy(self, rebuild: bool) -> None:
        fingerprint = self._user_fingerprint()
        if fingerprint == self._fingerprint:
            return
        # every parameter and buffer, non-persistent buffers (absent from state_dict) included
        user_state = _tensors(self._user_model)
        meta = _meta_tensors(user_state)
        if meta:  # moved to the meta device since the copy was made: nothing to copy from
            raise _meta_error(meta)
        same_modules = not rebuild and self._fingerprint is not None and fingerprint[0] == self._fingerprint[0]
        own_state = _tensors(self._model)
        same_layout = same_modules and user_state.keys() == own_state.keys() and all(
            user_state[k].shape == own_state[k].shape for k in user_state
        )
        if same_layout:
            self._writes += 1  # odd while the copy's own tensors are written (see write_sequence)
            try:
                with torch.inference_mode(False), torch.no_grad():
                    for key, value in user_state.items():
                        own_state[key].copy_(value)
            finally:
                self._writes += 1
        else:
            self._model = self._make_copy()
            self._layers = None
        self._fingerprint = fingerprint
        self._cache.clear()
        self.stats.refreshes += 1
        self._version += 1

    # ------------------------------------------------------------------ public API
    @property
    def model(self) -> nn.Module:
        """The private inference copy (eval mode, on :attr:`device`). Not the user's model."""
        self._check_open()
        return self._model

    @property
    def device(self) -> torch.device:
        """The device the probe computes on."""
        return self._device

    @property
    def normalization(self) -> tuple[Any, Any] | None:
        """``(mean, std)`` of the bundle this probe was made from (its input normalisation, as the
        bundle gives it; ``(None, None)`` for a bundle whose model takes [0, 1] images), or None for
        a probe made from a bare model, which says nothing about its input space. Methods that
        synthesise inputs (activation maximisation) use it as the default normalisation."""
        return self._normalization

    @property
    def version(self) -> int:
        """How many times the private copy has been brought up to date with the user's model.

        It grows when the probe notices that the user's weights changed (an optimizer step,
        ``load_state_dict`` ...), which it checks at every capture or :meth:`sync`. Results
        kept from an older version describe the old weights.
        """
        return self._version

    @property
    def write_sequence(self) -> int:
        """A sequence number of the writes into the tensors of :attr:`model`, for code that
        computes with them outside the probe (another thread, a copy that shares their memory).

        It is odd while the probe writes the user's new weights into its copy, and even
        otherwise; each such refresh moves it on by two. (A refresh that replaces the copy, when
        the user's modules changed, writes into no tensor of the old one and leaves it as it is.)
        Read it before and after such a computation: the same even number both times means that
        no write of the probe overlapped it, without taking the probe's lock.
        """
        return self._writes

    def user_model_changed(self) -> bool:
        """True when the user's model changed since the private copy was last brought up to
        date (the next capture or :meth:`sync` will refresh it). Reads only version counters."""
        with self._lock:
            self._check_open()
            return self._user_fingerprint() != self._fingerprint

    @property
    def channels_last(self) -> bool:
        """Whether convolutions run in channels-last memory layout."""
        return self._channels_last

    @property
    def batch_dependent(self) -> tuple[str, ...]:
        """Layers that normalise with the statistics of the batch even in evaluation mode (see
        :func:`batch_dependent_layers`). When there are any, every batch is run one image at a
        time, so that each image's outputs are its own, as if it were passed alone."""
        return self._batch_dependent

    @property
    def user_model(self) -> nn.Module:
        """The model this probe was made for (the user's, which the probe never changes; its
        private copy is :attr:`model`)."""
        self._check_open()
        return self._user_model

    @property
    def user_hooks(self) -> tuple[str, ...]:
        """The forward hooks and forward pre-hooks on the user's model that the private copy does
        not run: a tuple of short human-readable strings, one per hook, e.g.
        ``("forward pre-hook <lambda> on the model (Sequential)", "forward hook add_prior on '4' (Linear)")``;
        empty when there are none, and on a closed probe.

        Such a hook changes what ``model(x)`` computes but not what the probe computes, so the
        probe's activations and scores may differ from ``model(x)``. Read from the user's model
        at each access (a walk over its modules), so hooks added or removed since the probe was
        made are seen. Not listed: the hooks the copy keeps (pruning, ``weight_norm``,
        ``spectral_norm``); global hooks (``register_module_forward_hook`` ...), which fire on the
        copy too; and backward and state-dict hooks, which leave the forward pass alone.
        """
        model = self._user_model
        return () if model is None else user_forward_hooks(model)

    @property
    def input_size(self) -> tuple[int, ...]:
        """(C, H, W) that :attr:`layers` describes.

        Before the layers were first described (no size given, nothing captured), this is the
        first guess of :func:`default_input_sizes` (the channels of the first convolution
        registered): its channels and size are confirmed or replaced when :attr:`layers` is
        first read.
        """
        if self._input_size is not None:
            return self._input_size
        self._check_open()
        return next(default_input_sizes(self._user_model))

    @property
    def described(self) -> bool:
        """Whether :attr:`layers` is described at :attr:`input_size` now (reading it would run no
        discovery pass, unless the user's model changed)."""
        with self._lock:
            return self._layers is not None and self._layers_size == self._input_size

    @property
    def layers(self) -> Mapping[str, LayerInfo]:
        """Every addressable module, ``{name: LayerInfo}``, in execution order, read-only (a
        ``dict(...)`` of it is a copy to change).

        Described at :attr:`input_size`; when no size was given and nothing was captured yet,
        at the first of :func:`default_input_sizes` the model runs on.
        """
        with self._lock:
            self._check_open()
            self._sync()
            if self._input_size is None:
                self.fit_input_size(default_input_sizes(self._user_model))
            elif self._layers is None or self._layers_size != self._input_size:
                self.describe(self._input_size)
            assert self._layers is not None
            return MappingProxyType(self._layers)

    @property
    def output_activation(self) -> str | None:
        """``"sigmoid"`` or ``"softmax"`` when the model's output is the output of a final
        ``nn.Sigmoid`` or ``nn.Softmax`` module (over the classes), else None.

        Recorded by the discovery pass (see :func:`~cnnwidgets.core.layers.discover`; reading it
        describes the layers if needed): the calls that end last return the very tensor the model
        returns, and nothing changes it after the activation module. A sigmoid or softmax applied
        as a function (``torch.sigmoid(y)``) is not seen, and None then says nothing.
        :func:`~cnnwidgets.core.targets.class_probabilities` with ``outputs="auto"`` takes such
        outputs as probabilities when it is given this (``ClassProbability`` targets evaluated
        through :func:`~cnnwidgets.core.targets.target_score` or ``call_target`` with the probe);
        a plain target callable only sees the output tensor.

        It is read as of the last discovery pass, without checking the user's weights again (it
        is read per update and per occlusion batch, right after a capture or forward that did):
        only a probe that never described its layers describes them first.
        """
        with self._lock:
            self._check_open()
            if self._layers is None:
                self.layers  # noqa: B018 - describes the model
            return self._output_activation

    @property
    def scores_layer(self) -> str | None:
        """For a model that ends in an ``nn.Softmax`` or ``nn.Sigmoid`` module (see
        :attr:`output_activation`): the layer whose output, (classes,) or (classes, 1, 1) per image,
        went unchanged into it: the logits, which class-index targets (``ClassLogit``) score. None for other models,
        and where no single layer's output went straight into the activation.

        Recorded by the discovery pass, and read as :attr:`output_activation` is.
        """
        with self._lock:
            self._check_open()
            if self._layers is None:
                self.layers  # noqa: B018 - describes the model
            return self._scores_layer

    @property
    def output_reduction(self) -> str:
        """How the model's output is reduced to the tensor methods and targets see, for messages:
        ``""`` for a model that returns a tensor, else e.g. ``"a dict output is reduced to its 'out'
        entry"`` (see :func:`~cnnwidgets.core.targets.output_tensor`). Recorded by the discovery pass."""
        with self._lock:
            self.layers  # noqa: B018 - describes the model if it was not yet
            return self._output_reduction

    def describe(self, input_size: Sequence[int]) -> dict[str, LayerInfo]:
        """(Re)discover the layers for inputs of size ``input_size`` (C, H, W) and make it the current size."""
        size = check_input_size(input_size)
        with self._lock:
            self._check_open()
            return self._describe(size, None)[0]

    def _describe(self, size: tuple[int, ...], example: torch.Tensor | None) -> tuple[dict[str, LayerInfo], Any]:
        """Discover the layers at ``size`` by running ``example`` (a model input of one image;
        zeros when None); returns them and the model's output for ``example``."""
        if example is None:
            example = self._blank_input(size)
        previous, self._run = self._run, None
        try:
            try:
                with _plain_mode():
                    found = discover(self._model, example)
            except _DISCOVERY_ERRORS as exc:
                if not self._left_channels_last(exc):
                    raise
                example = _in_layout(example, torch.contiguous_format)
                with _plain_mode():
                    found = discover(self._model, example)
        except ChannelsLastError:
            raise
        except _DISCOVERY_ERRORS as exc:
            problem = input_kind_problem(self._user_model)
            if problem:
                raise InputKindError(
                    f"the model failed on an input of size {size}: {problem}. The model's error: "
                    f"{model_error_text(exc)}"
                ) from exc
            # the model's own error first; whether the size may be the cause comes second (a student
            # is not sent to change the input size for what is a bug in the model)
            error_text = f"{type(exc).__name__}: {exc}".rstrip()  # the type too: plainly the model's own error
            question = ""
            if _dtype_mismatch(exc):
                error_text += (" (the copy computes in float32, with float32 weights: a forward that casts its input "
                               "to another dtype itself, as x.half(), fails on them; cast to the weights' dtype "
                               "instead, x.to(next(self.parameters()).dtype), or leave the input as it comes)")
            elif not isinstance(exc, _NOT_ABOUT_THE_INPUT):
                stop = '' if error_text.endswith(('.', '?', '!')) else '.'
                channels = channel_count_problem(self._user_model, size[0]) if len(size) == 3 else None
                question = channels_last_size_hint(size) or (
                    f"{stop} The input {channels}." if channels else
                    f"{stop} If the error is about the input, is {size} the size and number of channels it expects?")
            raise _ModelFailure(f"the model failed on an input of size {size}: {error_text}{question}",
                                error_text) from exc
        finally:
            self._run = previous
        self._layers, output = found.layers, found.output
        self._output_activation = found.output_activation
        self._scores_layer = found.scores_layer
        self._output_reduction = output_reduction(output)
        self._layers_size = size
        self._input_size = size
        self.stats.discoveries += 1
        return self._layers, output

    def _blank_input(self, size: tuple[int, ...]) -> torch.Tensor:
        """A blank (zeros) batch of one image of ``size``, in the probe's layout, to describe the layers with.

        Raises:
            RuntimeError: when the device has no memory for it, saying how much it needed.
        """
        try:
            example = torch.zeros((1, *size), device=self._device, dtype=torch.float32)
            return example.contiguous(memory_format=torch.channels_last) if self._channels_last else example
        except RuntimeError as exc:  # the allocator's failure (torch.OutOfMemoryError on a GPU is one too)
            raise RuntimeError(
                f"cannot make an input of size {size} to describe the layers with: one float32 image of that size "
                f"takes {4 * math.prod(size) / 2**30:.3g} GiB, which {self._device} could not allocate; give a "
                f"smaller input size, the one the model takes ({type(exc).__name__}: {str(exc).splitlines()[0]})"
            ) from exc

    def fit_input_size(self, candidates: Iterable[Sequence[int]]) -> tuple[int, ...]:
        """Describe the layers at the first (C, H, W) of ``candidates`` the model runs on, and return it.

        For models whose input size is not known up front (a 28 x 28 digit classifier, a 32 x 32
        CIFAR net): each candidate costs one forward pass of a blank image until one succeeds.

        Args:
            candidates: the sizes to try, in order: an iterable (a list, a generator) of (C, H, W),
                each as :func:`check_input_size` takes it. It is read lazily: candidates after the
                one the model runs on are neither read nor checked.

        Raises:
            TypeError: if ``candidates`` is not an iterable.
            ValueError: if ``candidates`` is empty, or a candidate reached is not a (C, H, W) as
                :func:`check_input_size` takes it (one size given alone, ``(3, 32, 32)``, is such a
                candidate list: its items are ints; pass ``[(3, 32, 32)]``).
            InputKindError: (a ``RuntimeError``) when the model fails on every candidate and looks
                like one that takes another kind of input than an image batch (see
                :func:`input_kind_problem`; an image model may also register a Conv1d or Conv3d
                first, so every candidate is tried before this is said).
            RuntimeError: if the model fails on every candidate; the message starts with the
                model's own error at the first one (the likeliest size: later candidates try other
                channel counts, whose failures only say the channels do not fit), then lists the
                candidates, saying whether they failed the same way, and last offers the input size
                as one possible cause, saying how to give it.
        """
        if (isinstance(candidates, (str, bytes)) or not isinstance(candidates, Iterable)
                or (isinstance(candidates, torch.Tensor) and candidates.dim() == 0)):
            raise TypeError(
                f"fit_input_size takes the candidate sizes as an iterable of (C, H, W), such as [(3, 32, 32), "
                f"(1, 28, 28)]; got {_type_name(candidates)}"
            )
        tried: list[tuple[int, ...]] = []
        failures: list[Exception] = []
        for index, candidate in enumerate(candidates):
            if _size_entry(candidate) is not None:  # fit_input_size((3, 32, 32)): one size, not a list of them
                raise ValueError(
                    f"fit_input_size takes a list of candidate sizes (C, H, W); candidate {index} is the int "
                    f"{_size_entry(candidate)}: to try one size, pass it in a list, e.g. [(3, 32, 32)]"
                )
            try:
                size = check_input_size(candidate)
            except ValueError as exc:
                raise ValueError(f"fit_input_size: candidate {index}: {exc}") from None
            if size in tried:
                continue
            tried.append(size)
            try:
                self.describe(size)
            except ChannelsLastError:
                raise  # not a matter of size: the message says what to change
            except RuntimeError as exc:
                failures.append(exc)
                if isinstance(exc, InputKindError) and _several_inputs_problem(self._user_model):
                    raise  # a forward taking several inputs: no size can help
                continue
            return size
        if not tried:
            raise ValueError("fit_input_size needs at least one candidate (C, H, W)")
        first = failures[0]
        if isinstance(first, InputKindError):
            raise first  # says which kind of input the model seems to take
        # the model's own error comes first (it may be a bug in the model that no size helps with),
        # the sizes after it, and the input size is offered as one possible cause only
        texts = [exc.model_error if isinstance(exc, _ModelFailure) else str(exc) for exc in failures]

        def kind(index: int) -> tuple[type, str]:  # an error, but for the sizes (numbers) in its text
            cause = failures[index].__cause__ or failures[index]
            return type(cause), re.sub(r"\d+", "#", texts[index])

        same = [i for i in range(1, len(tried)) if kind(i) == kind(0)]
        other = [i for i in range(1, len(tried)) if kind(i) != kind(0)]
        where = f"at {tried[0]}"
        if same:
            numbers = "" if all(texts[i] == texts[0] for i in same) else " (with other numbers)"
            at = "at the other sizes tried:" if not other else "at"
            where += f"; the same error{numbers} {at} {', '.join(str(tried[i]) for i in same)}"
        if other:
            where += (f"; the errors differed between sizes: other errors at "
                      f"{', '.join(str(tried[i]) for i in other)}")
        raise RuntimeError(
            f"the model ran on none of the input sizes tried: {texts[0]} ({where}). If the error is about the "
            f"input's size or channels, give the size it expects, e.g. input_size=(C, H, W)"
        ) from first

    def check_layer(self, name: str) -> LayerInfo:
        """The LayerInfo of ``name``; raises ``KeyError`` with close suggestions if unknown, and
        ``TypeError`` for a name that is not a string (before the layers are described, if they are not)."""
        if not isinstance(name, str):
            raise _name_type_error(name)
        return self._info(name, self.layers)

    def _info(self, name: str, layers: dict[str, LayerInfo]) -> LayerInfo:
        if not isinstance(name, str):
            raise _name_type_error(name)
        if name not in layers:
            raise unknown_layer_error(name, list(layers), self._model)
        return layers[name]

    def _wanted_layers(self, names: list[str], method: str) -> list[LayerInfo]:
        """The layer table's entries for ``names`` (described for the current input), refused when
        empty, unknown, never run or not batch-first."""
        if not names:
            raise ValueError(f"{method} needs at least one layer name")
        assert self._layers is not None
        infos = [self._info(n, self._layers) for n in names]
        for info in infos:
            if info.calls == 0:
                raise ValueError(f"layer {info.name!r} does not run in this model's forward pass")
            if not info.batch_first:  # described on one image: its whole output's shape is known
                raise self._not_a_batch(info.name, tuple(info.output_shape or ()), 1)
        return infos

    def channels_first(self, name: str, activation: torch.Tensor) -> torch.Tensor:
        """``activation`` of layer ``name`` with channels on dim 1 (see :meth:`LayerInfo.channels_first`),
        for outputs not taken with ``capture(..., channels_first=True)`` (a hook's, a gradient).

        Reads the layer table of the last input (no new description when there is one).

        Raises:
            KeyError: for a name that is not a layer of that table (with suggestions), as :meth:`check_layer`.
            TypeError: for a name that is not a string, or an ``activation`` that is not a tensor.
        """
        if not isinstance(name, str):
            raise _name_type_error(name)
        with self._lock:
            info = self._info(name, self._layers if self._layers is not None else self.layers)
        if not isinstance(activation, torch.Tensor):
            raise TypeError(
                f"channels_first takes the output of layer {name!r} as a tensor, got {type(activation).__name__}"
            )
        return info.channels_first(activation)

    def module(self, name: str) -> nn.Module:
        """The module ``name`` of the private copy."""
        self.check_layer(name)
        return self._modules[name]

    def to(self, device: str | torch.device) -> Probe:
        """Switch to ``device`` at run time (the cache is cleared). Returns ``self``.

        ``device`` is ``"auto"``, a device name or a ``torch.device``, as
        :func:`~cnnwidgets.core.device.resolve_device` reads it.
        """
        with self._lock:
            self._check_open()
            target = resolve_device(device)
            if target == self._device:
                return self
            previous, self._device = self._device, target
            # a plain attribute naming a parameter or buffer (self.head.anchors = self.anchors) must
            # name the moved one: Module.to replaces them
            registered = {id(t): (owner, key) for owner in self._model.modules()
                          for key, t in (*owner._parameters.items(), *owner._buffers.items()) if t is not None}
            attributes = list(_plain_tensor_attributes(self._model))
            self._model.to(target)
            moved: dict[int, torch.Tensor] = {}  # a tensor two modules share stays one tensor
            for module, name, value in attributes:
                if id(value) in registered:
                    owner, key = registered[id(value)]
                    moved[id(value)] = owner._parameters.get(key, owner._buffers.get(key))
                elif id(value) not in moved:
                    moved[id(value)] = _as_computed(value, target)
                setattr(module, name, moved[id(value)])
            want = self._want_channels_last(self._model)
            set_memory_format(self._model, want)
            self._channels_last = want
            self._cache.clear()
            if previous.type != "cpu":
                release_memory(previous)  # the GPU memory the copy and its cache held goes back
            return self

    def reset_stats(self) -> None:
        """Set all counters in :attr:`stats` back to zero."""
        self.stats = ProbeStats()

    def clear_cache(self) -> None:
        """Forget every cached activation."""
        with self._lock:
            self._cache.clear()

    def capture(
        self,
        x: torch.Tensor,
        layers: str | Iterable[str],
        *,
        grad: bool = False,
        cache: bool = True,
        channels_first: bool = False,
        contiguous: bool | None = None,
    ) -> dict[str, torch.Tensor]:
        """Outputs of ``layers`` for the batch ``x``, running only the needed prefix.

        Args:
            x: a preprocessed (N, C, H, W) float batch, on any device.
            layers: a layer name or several (see :attr:`layers`).
            grad: ``False`` (default): no autograd, results are cached per (input, layer) and
                must be treated as read-only. ``True``: results stay attached to the autograd
                graph (``x`` may require grad) and nothing is cached.
            cache: with ``grad=False``, whether to keep the results. Pass ``False`` for batches used
                once (occluded copies, dataset scans) so they do not evict what a view still shows.
            channels_first: return the outputs of channels-last layers (``LayerInfo.layout ==
                "HWC"``: (N, H, W, C), as inside ConvNeXt and Swin blocks) as (N, C, H, W) views,
                so that "channel k" means the same in every layout. Channel targets, the channel
                projections, dead-channel scans, top-k and the explorer read layers this way.
            contiguous: whether the outputs are returned in the standard (contiguous, row-major)
                memory layout, so that ``.view`` works on them as on a freshly made tensor.
                A probe that runs channels-last (see :attr:`channels_last`) computes feature maps
                with channels as the fastest dimension, and ``channels_first`` returns views;
                ``False`` hands these over as they are, with no copy (for code that only indexes
                and reduces them). ``None`` (default): ``True``, unless ``channels_first=True``
                (whose results are views, as documented above).

        Returns:
            ``{name: tensor}`` on :attr:`device`, in the order requested. For a module that runs
            several times in one pass, its last call's output; "last" counts the calls made when
            the layers were described (:attr:`LayerInfo.calls`), so a model whose number of calls
            depends on the input's values (not its size) gets the call of that count. The input
            ``x`` itself is never written to, even by a model that changes its input in place.

        Raises:
            KeyError: for an unknown layer name (with suggestions).
            TypeError: for a layer name that is not a string, or a ``grad``, ``cache``,
                ``channels_first`` or ``contiguous`` that is not True or False (``contiguous``:
                or None).
            ValueError: for a batch that is not (N, C, H, W) finite floats, or a layer that never runs.
            NotABatchError: (a ``ValueError``) for a layer whose output's first dimension is not the
                batch (``LayerInfo.batch_first`` is False, or the batch at hand shows it).
            RuntimeError: if the model fails on the input, or the probe is closed.
        """
        names = layer_names(layers)
        grad, cache = as_flag(grad, "grad"), as_flag(cache, "cache")
        channels_first, standard = _layout_options(channels_first, contiguous)
        with self._lock:
            self._check_open()
            self._prepare_input(x)
            infos = self._wanted_layers(names, "capture")
            wanted = {i.name: i.calls for i in infos}
            if grad or not cache:  # not cached: no hit, no miss
                results = self._forward(self._to_model_input(x), wanted, grad=grad, stop=True)[0]
                return _finish(results, infos, channels_first=channels_first, standard=standard, grad=grad)
            entry = self._lookup(x)
            missing = {n: c for n, c in wanted.items() if entry is None or n not in entry.layers}
            self.stats.cache_hits += len(wanted) - len(missing)
            self.stats.cache_misses += len(missing)
            if missing:
                results, _ = self._forward(self._to_model_input(x), missing, grad=False, stop=True)
                entry = self._store(x, entry, results)
            assert entry is not None
            return _finish({n: entry.layers[n] for n in wanted}, infos, channels_first=channels_first,
                           standard=standard, grad=False)

    def capture_with_logits(
        self,
        x: torch.Tensor,
        layers: str | Iterable[str],
        *,
        cache: bool = True,
        channels_first: bool = False,
        contiguous: bool | None = None,
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """``(capture(x, layers, ...), logits(x))`` from ONE full forward pass instead of a prefix
        run and a full one: for views that show a layer and the class scores of the same input
        (the explorer with scores on, invariance curves).

        Args:
            x, layers, channels_first, contiguous: as for :meth:`capture`.
            cache: whether to consult and fill the cache. With ``True`` whatever it holds already is
                taken from it: when it holds the model's output but not every layer, only the
                prefix up to the missing layers runs; when it holds everything, nothing runs.

        Returns:
            ``(acts, logits)``: what :meth:`capture` (with ``grad=False``) and :meth:`logits` return.

        Raises:
            what :meth:`capture` and :meth:`logits` raise; ``OutputTypeError`` (a ``TypeError``)
            when the model does not return a tensor, with no layer output lost to the caller's
            retry through :meth:`capture`.
        """
        names = layer_names(layers)
        cache = as_flag(cache, "cache")
        channels_first, standard = _layout_options(channels_first, contiguous)
        with self._lock:
            self._check_open()
            self._prepare_input(x)
            infos = self._wanted_layers(names, "capture_with_logits")
            wanted = {i.name: i.calls for i in infos}
            entry = self._lookup(x) if cache else None
            missing = {n: c for n, c in wanted.items() if entry is None or n not in entry.layers}
            have_output = entry is not None and _OUTPUT in entry.layers
            if cache:
                self.stats.cache_hits += len(wanted) - len(missing) + int(have_output)
                self.stats.cache_misses += len(missing) + int(not have_output)
            results: dict[str, torch.Tensor] = {}
            output = None
            if not have_output:
                results, output = self._forward(self._to_model_input(x), missing, grad=False, stop=False)
                assert output is not None  # a pass that was not stopped returned (or raised)
            elif missing:
                results = self._forward(self._to_model_input(x), missing, grad=False, stop=True)[0]
            if not cache:
                assert output is not None
                return (_finish(results, infos, channels_first=channels_first, standard=standard, grad=False),
                        output.contiguous())
            entry = self._store(x, entry, {**results, **({_OUTPUT: output} if output is not None else {})})
            acts = _finish({n: entry.layers[n] for n in wanted}, infos, channels_first=channels_first,
                           standard=standard, grad=False)
            return acts, entry.layers[_OUTPUT].clone(memory_format=torch.contiguous_format)

    def logits(self, x: torch.Tensor, *, grad: bool = False, cache: bool = True) -> torch.Tensor:
        """The model's output scores for ``x`` (a full forward pass, cached like a layer when ``grad=False``).

        The scores are the model's own output, as it returns them: its output tensor, or what
        :func:`~cnnwidgets.core.targets.output_tensor` reads from the output: of a dict or an
        output object (a Hugging Face ``ModelOutput``), its ``logits`` entry or attribute, else a
        dict's ``out`` entry, else its only tensor. Nothing is applied to them: for a model that
        ends in an ``nn.Softmax`` module they are already probabilities (do not apply a softmax to
        them again: it would squash them towards uniform), and after a final ``nn.Sigmoid`` they
        are per-class probabilities. For probabilities from any model, see :meth:`Probe.probabilities`.

        ``cache=False`` neither consults nor fills the cache (for inputs used once, as in
        :meth:`capture`). The tensor returned is the caller's own, in the standard (contiguous)
        memory layout even when the probe runs channels-last: changing it in place leaves the
        cached output alone.

        Raises:
            TypeError: (an :class:`~cnnwidgets.core.targets.OutputTypeError`) for an output that
                holds no one tensor to read: a plain tuple or list (refused rather than guessed
                at; wrap the model to return one tensor), None, or a dict with several tensors and
                no ``logits`` or ``out`` entry; for a ``grad`` or ``cache`` that is not True or False.
            ValueError: for a batch that is not (N, C, H, W) finite floats, or an output whose
                first dimension is not the batch (one output per image).
            RuntimeError: if the model fails on the input (whatever it raised, as the cause).
        """
        grad, cache = as_flag(grad, "grad"), as_flag(cache, "cache")
        with self._lock:
            self._check_open()
            discovered = self._prepare_input(x)  # the output, when x was the discovery pass's input
            if discovered is not None:
                check_output_batch(discovered, 1)  # as a full forward checks it (a model that squeezes the batch away)
            if grad or (not cache and discovered is None):
                output = self._forward(self._to_model_input(x), {}, grad=grad, stop=False)[1]
                with torch.set_grad_enabled(grad or torch.is_grad_enabled()):  # as in capture
                    return output.contiguous()
            if not cache:
                return discovered.contiguous()
            entry = self._lookup(x)
            if entry is not None and _OUTPUT in entry.layers:
                self.stats.cache_hits += 1
                return entry.layers[_OUTPUT].clone(memory_format=torch.contiguous_format)
            self.stats.cache_misses += 1
            if discovered is not None:
                output = discovered
            else:
                _, output = self._forward(self._to_model_input(x), {}, grad=False, stop=False)
            entry = self._store(x, entry, {_OUTPUT: output})
            return output.clone(memory_format=torch.contiguous_format)

    def probabilities(
        self, x: torch.Tensor, *, outputs: str = "auto", grad: bool = False, cache: bool = True
    ) -> torch.Tensor:
        """Class probabilities (N, classes) for ``x``, read from the model's output the right way
        whatever the model ends in: use this rather than ``torch.softmax(probe.logits(x), dim=1)``,
        which softmaxes a second time the output of a model that ends in ``nn.Softmax``.

        The output of :meth:`logits` goes through
        :func:`~cnnwidgets.core.targets.class_probabilities` with :attr:`output_activation`:

        * a model ending in an ``nn.Softmax`` module: its output as it is;
        * a model ending in an ``nn.Sigmoid`` module (multi-label, or one unit of a binary
          classifier): its output as it is, one independent probability per class (rows need not
          sum to 1);
        * plain logits: their softmax over the classes, or the sigmoid of a single output unit
          (the probability of that unit's class); rows that already are distributions are taken
          as they are.

        A sigmoid or softmax the forward applies as a function is not seen (see
        :attr:`output_activation`): say what the output holds with ``outputs`` then
        (``"probabilities"``, or ``"multilabel_logits"`` for the logits of independent labels).

        Args:
            x: the batch (N, C, H, W), as :meth:`logits` takes it.
            outputs: one of :data:`~cnnwidgets.core.targets.OUTPUT_KINDS`: ``"auto"`` (default),
                ``"logits"``, ``"multilabel_logits"`` or ``"probabilities"``.
            grad, cache: as for :meth:`logits`; with ``grad=True`` the result is attached to the
                autograd graph.

        Returns:
            A float tensor (N, classes), on the probe's device.

        Raises:
            what :meth:`logits` raises; ``ValueError`` for an output that is not class scores (N,
            classes) or (N, classes, 1, 1) (a segmentation map, say), an unknown ``outputs``, or
            ``outputs="probabilities"`` with values outside [0, 1]; ``TypeError`` for an
            ``outputs`` that is not a string.
        """
        outputs = check_output_kind(outputs)  # before the forward pass
        output = self.logits(x, grad=grad, cache=cache)
        return class_probabilities(output, "the model's output", outputs=outputs,
                                   final_activation=self.output_activation)

    def close(self) -> None:
        """Remove every hook and drop the private copy, the cache, the reference to the user's
        model and whatever methods derived from the probe (see :meth:`on_close`). Safe to call
        twice."""
        with self._lock:
            for handle in self._handles:
                handle.remove()
            self._handles = []
            self._cache.clear()
            self._modules = {}
            self._closed = True
            self._model = None  # type: ignore[assignment]
            self._user_model = None  # type: ignore[assignment]
            callbacks, self._close_callbacks = self._close_callbacks, []
        for callback in callbacks:
            callback()
        release_memory(self._device)  # the copy's freed memory goes back to the system, not to the heap

    def on_close(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` once when the probe is closed: a method that keeps something
        derived from the probe (a rewritten copy of its model, say) drops it then, so a closed
        probe that is still referenced holds no model. On a closed probe it is called at once.

        Raises:
            TypeError: for a ``callback`` that is not callable (refused now, not when
                :meth:`close` would call it and stop half-way).
        """
        if not callable(callback):
            raise TypeError(f"on_close takes a callable, called with no argument; got {type(callback).__name__}")
        with self._lock:
            if not self._closed:
                self._close_callbacks.append(callback)
                return
        callback()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called: a closed probe refuses captures with a ``RuntimeError``."""
        return self._closed

    def __enter__(self) -> Probe:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"device={self._device}, channels_last={self._channels_last}"
        return f"Probe({self._model_name}, {state})"

    # ------------------------------------------------------------------ internals
    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this Probe is closed; create a new one")

    def _prepare_input(self, x: torch.Tensor) -> torch.Tensor | None:
        """Checks ``x`` and describes the layers at its size if needed.

        A single image at a new size is itself the discovery pass's input; the model's output
        for it is then returned (so a caller that wants it runs no second forward), else None.
        """
        check_batch(x)
        check_channel_axis(self._model, x)
        self._sync()
        size = tuple(x.shape[1:])
        if self._layers is None or self._layers_size != size:
            if x.shape[0] != 1:
                self._describe(size, None)
                return None
            output = self._describe(size, self._to_model_input(x))[1]
            try:
                return output_tensor(output).detach().clone()  # as _forward_once's output
            except TypeError:
                return None  # a full forward reports this when the output is wanted
        return None

    def _to_model_input(self, x: torch.Tensor) -> torch.Tensor:
        """A copy of ``x`` as the private model takes it: a model that changes its input in place
        (``x.mul_(2)``), or returns it, must not write into the user's tensor or the cache."""
        layout = torch.channels_last if self._channels_last else torch.contiguous_format
        # a copy made in the caller's inference mode would be an inference tensor, which the
        # model (run outside inference mode) could not change in place
        with torch.inference_mode(False):
            return x.to(self._device, torch.float32, memory_format=layout, copy=True)

    def _forward(
        self, x: torch.Tensor, wanted: dict[str, int], *, grad: bool, stop: bool
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        if not self._batch_dependent or x.shape[0] == 1:
            return self._forward_once(x, wanted, grad=grad, stop=stop)
        parts = [self._forward_once(x[i:i + 1], wanted, grad=grad, stop=stop) for i in range(x.shape[0])]
        results = {name: torch.cat([part[0][name] for part in parts]) for name in wanted}
        outputs = [part[1] for part in parts]
        return results, (None if any(o is None for o in outputs) else torch.cat(outputs))  # type: ignore[misc]

    def _forward_once(
        self, x: torch.Tensor, wanted: dict[str, int], *, grad: bool, stop: bool
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        run = _Run(wanted=dict(wanted), grad=grad, stop=stop, batch=int(x.shape[0]))
        self._run = run
        self.stats.forwards += 1
        output = None
        finished = False  # the forward returned (it was not stopped after the last wanted layer)
        layout_failed = False
        try:
            with torch.set_grad_enabled(grad), _plain_mode():
                try:
                    output = self._model(x)
                    finished = True
                except StopForward:
                    pass
                except (NotATensorError, NotABatchError):
                    raise  # the probe's own word on a layer's output
                except (RuntimeError, TypeError) as exc:
                    if not self._left_channels_last(exc):
                        raise RuntimeError(f"the model failed on an input of shape {tuple(x.shape)}: {exc}") from exc
                    layout_failed = True  # retried below, in the standard layout
                except Exception as exc:  # noqa: BLE001 - the model's own KeyError, ValueError ...
                    # named as the model's failure, not to be taken for the probe's KeyError
                    # (unknown layer) or ValueError (bad input)
                    raise RuntimeError(
                        f"the model failed on an input of shape {tuple(x.shape)}: {model_error_text(exc)}"
                    ) from exc
        finally:
            self._run = None
        if layout_failed:
            # a path the discovery pass did not take needs contiguous activations (a batch of
            # several images, another device's layout)
            return self._forward_once(_in_layout(x, torch.contiguous_format), wanted, grad=grad, stop=stop)
        if finished:
            if output is None:
                raise OutputTypeError(
                    "the model's forward returned None (is a return statement missing?); it must return "
                    "its output tensor"
                )
            self.stats.full_forwards += 1
            output = output_tensor(output)
            check_output_batch(output, run.batch)
        missing = set(wanted) - set(run.results)
        if missing:
            raise RuntimeError(f"layers {sorted(missing)} did not run as discovered; is the forward data-dependent?")
        if not grad and output is not None:
            # a copy: the output is cached and handed over, and a model may return a tensor it
            # keeps and writes into again on its next pass (an output buffer); logits are small
            output = output.detach().clone()
        return {n: run.results[n] for n in wanted}, output

    def _lookup(self, x: torch.Tensor) -> _CacheEntry | None:
        for key, entry in self._cache.items():
            cached = entry.key_input
            if (
                cached.shape == x.shape
                and cached.dtype == x.dtype
                and cached.device == x.device
                and torch.equal(cached, x)
            ):
                self._cache.move_to_end(key)
                return entry
        return None

    def _store(self, x: torch.Tensor, entry: _CacheEntry | None, results: dict[str, torch.Tensor]) -> _CacheEntry:
        if entry is None:
            entry = _CacheEntry(key_input=x.detach().clone(), layers={}, nbytes=_tensor_bytes(x))
            self._cache_serial += 1
            self._cache[self._cache_serial] = entry
        for name, tensor in results.items():
            entry.layers[name] = tensor
            entry.nbytes += _tensor_bytes(tensor)
        while len(self._cache) > self._cache_size or (
            len(self._cache) > 1 and sum(e.nbytes for e in self._cache.values()) > self._cache_bytes
        ):
            oldest = next(iter(self._cache))
            if self._cache[oldest] is entry:
                break
            del self._cache[oldest]
        return entry


def _layout_options(channels_first: object, contiguous: object) -> tuple[bool, bool]:
    """``capture``'s ``channels_first`` and ``contiguous`` checked, as (channels_first, standard layout)."""
    channels_first = as_flag(channels_first, "channels_first")
    if contiguous is None:
        return channels_first, not channels_first
    try:
        return channels_first, as_flag(contiguous, "contiguous")
    except TypeError as exc:
        raise TypeError(f"{exc} (or None: the default)") from None


def _finish(
    results: dict[str, torch.Tensor], infos: list[LayerInfo], *, channels_first: bool, standard: bool, grad: bool
) -> dict[str, torch.Tensor]:
    """Captured outputs in the order of ``infos``, as ``capture`` hands them over: channels first
    and in the standard layout where asked."""
    # with grad=True the permute and copy belong to the graph, also when the caller runs under
    # torch.no_grad()
    with torch.set_grad_enabled(grad or torch.is_grad_enabled()):
        if channels_first:
            results = {i.name: i.channels_first(results[i.name]) for i in infos}
        else:
            results = {i.name: results[i.name] for i in infos}
        if standard:
            results = {name: tensor.contiguous() for name, tensor in results.items()}
    return results


#: The keyword arguments of :class:`Probe` that :func:`probe_scope` passes on.
_PROBE_OPTIONS = tuple(name for name in inspect.signature(Probe).parameters if name != "model")


class UserHooksWarning(RuntimeWarning):
    """The model has forward hooks or forward pre-hooks of its own, which the probe's private
    copy does not run (see :attr:`Probe.user_hooks`): results may differ from ``model(x)``."""


_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _stacklevel_outside_package() -> int:
    """The ``stacklevel`` for a ``warnings.warn`` in the calling function that names the first
    line outside this package (and ``contextlib``, whose frames a ``with`` block adds)."""
    frame = sys._getframe(1)
    level = 1
    while frame is not None and (frame.f_code.co_filename.startswith(_PACKAGE_DIR + os.sep)
                                 or frame.f_code.co_filename == contextlib.__file__):
        frame = frame.f_back
        level += 1
    return level


@contextlib.contextmanager
def probe_scope(model_or_probe: nn.Module | Probe, **probe_options: Any) -> Iterator[Probe]:
    """Use the given probe, or a temporary one on a model that is closed on exit.

    Methods accept either, so a notebook can pass a model once and a widget can share one
    long-lived probe (and its cache) between views. A temporary probe on a model with forward
    hooks of its own warns (:class:`UserHooksWarning`, naming them): the method computes
    without them.

    Args:
        model_or_probe: a :class:`Probe` (used as is), an ``nn.Module``, or a zoo bundle (see
            :func:`unwrap_model`).
        probe_options: keyword arguments for :class:`Probe` when one is created. An option
            given as None is left out (the Probe's default: ``device="auto"`` ...). An existing
            probe cannot apply options, so with a Probe every option must be None.

    Raises:
        TypeError: for a ``model_or_probe`` that is none of these, or an option :class:`Probe`
            does not take.
        ValueError: for an option other than None given with a Probe (naming it and the
            probe's own setting), or an option value :class:`Probe` refuses.
    """
    unknown = sorted(set(probe_options) - set(_PROBE_OPTIONS))
    if unknown:
        raise TypeError(f"probe_scope: unknown Probe option(s) {unknown}; accepted: {list(_PROBE_OPTIONS)}")
    options = {name: value for name, value in probe_options.items() if value is not None}
    if isinstance(model_or_probe, Probe):
        if options:
            given = ", ".join(f"{name}={value!r}" for name, value in options.items())
            raise ValueError(
                f"{given} applies only when a model is passed; this Probe is made already "
                f"({model_or_probe!r}) and is used as it is: pass the model instead, or set the probe up "
                "as wanted (Probe(model, ...), probe.to(device))"
            )
        yield model_or_probe
        return
    if not takes_as_model(model_or_probe):
        raise TypeError(
            f"expected a torch.nn.Module, a zoo bundle or a cnnwidgets.Probe, got {type(model_or_probe).__name__}"
            f"{not_a_model_hint(model_or_probe)}"
        )
    probe = Probe(model_or_probe, **options)
    hooks = probe.user_hooks
    if hooks:
        warnings.warn(
            UserHooksWarning(
                f"the model has forward hooks of its own, which this method does not run (it computes on a private "
                f"copy of the model): {'; '.join(hooks)}. Its results may differ from model(x); to include what a "
                "hook does, make it part of the model (a preprocessing module, a wrapper's forward)"
            ),
            stacklevel=_stacklevel_outside_package(),
        )
    try:
        yield probe
    finally:
        probe.close()


def require_probe(value: object, function: str) -> Probe:
    """``value`` if it is a :class:`Probe`, else a TypeError saying what ``function`` takes (a model
    is told to be wrapped in one)."""
    if not isinstance(value, Probe):
        hint = "; wrap the model first: Probe(model)" if isinstance(value, nn.Module) else ""
        raise TypeError(f"{function} takes a cnnwidgets.Probe, got {type(value).__name__}{hint}")
    return value


def class_count(probe: Probe, x: torch.Tensor | None = None, *, cache: bool = False) -> int | None:
    """The number of class scores ``probe``'s model gives for the batch ``x`` (default: a blank image of
    the probe's input size); None where its output is not class scores, or the model fails on it.
    ``cache`` as for :meth:`Probe.logits` (an input shown anyway is worth keeping; a blank is not).

    Raises:
        TypeError: for a ``probe`` that is no :class:`Probe`, and a ``cache`` that is not True or
            False (both checked before the model runs: neither is an output that is not class scores).
    """
    require_probe(probe, "class_count")
    cache = as_flag(cache, "cache")
    try:
        with torch.no_grad():
            if x is None:
                x = torch.zeros((1, *probe.input_size), device=probe.device)
            return int(class_scores(output_tensor(probe.logits(x, cache=cache))).shape[1])
    except (TypeError, ValueError, RuntimeError):
        return None
