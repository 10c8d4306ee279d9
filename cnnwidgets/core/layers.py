"""Layer discovery: every addressable module, its output shape and receptive-field geometry.

Discovery runs one forward pass on a zero input of a given size with temporary hooks on
every module (of the probe's private copy) and records, per module:

* the order in which modules start running (``order``) and how often each runs (``calls``);
* the output shape of its last call;
* receptive-field geometry where it is defined.

Receptive-field geometry follows the usual recurrence for convolution and pooling chains
(see Araujo, Norris & Sim, "Computing Receptive Fields of Convolutional Neural Networks",
Distill 2019). For a module with kernel ``k``, stride ``s``, padding ``p`` and dilation ``d``
applied to a tensor with receptive field ``r``, jump ``j`` and start ``c``::

    r' = r + (k - 1) * d * j
    j' = j * s
    c' = c + ((k - 1) / 2 * d - p) * j

``c`` is the centre, in input pixel-index coordinates (pixel 0 has centre 0.0), of the
receptive field of output unit 0; unit ``i`` is centred at ``c + i * j``. Shape-preserving
modules (activations, normalisation, dropout) pass the geometry through. Anything the
recurrence does not describe (linear layers, adaptive pooling, size-keeping windowed modules
such as a transposed convolution, circular padding, whose windows wrap around the border)
has ``receptive_field=None``.

Geometry is tracked per tensor, also through the tensor functions a ``forward`` applies
between modules (a residual ``x + self.conv(x)``, a squeeze-and-excitation ``x * scale``,
``torch.cat``, ``F.relu(x)``, ``x.relu()``), so branches (residual and dense blocks) are
followed correctly. During the discovery pass only, a torch function mode (active in the
discovering thread alone) gives the output of such a function geometry by these rules:

* The operands that count are those derived from the input whose last two sizes equal the
  output's (the same spatial size, with as many dimensions, or a view of them with those two
  dimensions last, or stacked along an earlier dimension). Their geometries merge: with one
  jump and one start (up to rounding), the largest receptive field; otherwise, or when one
  of them has none, the output has none.
* Operands with a 1 x 1 map broadcast over a larger output (a squeeze-and-excitation scale
  after global pooling, a per-channel bias) are left out, and so are tensors not computed
  from the input (the model's parameters and buffers, constants).
* Channels-last maps (N, H, W, C), as ConvNeXt and Swin blocks make them, keep their geometry:
  a ``permute(0, 2, 3, 1)`` of a (N, C, H, W) map gives its (H, W, C) view the same
  geometry, ``permute(0, 3, 1, 2)`` gives it back, and between the two the positions are
  dimensions 1 and 2, which ``F.linear`` (a ``Linear`` per position over the channels, the
  last dimension) and ``F.layer_norm`` over the channels keep.
* A function that changes the spatial size (pooling, interpolation, padding, a reshape,
  flatten or another permute that changes the position dimensions) gives no geometry, and neither
  does one that moves or mixes positions while keeping the size (a functional convolution
  or pooling, ``roll``, ``flip``, a cumulative sum, a sort, a matrix product, ``F.linear``,
  an FFT).
* An in-place function (``out += x``, ``out[:, :k] = x``, ``out[:, :k].add_(x)``) merges into
  the tensor it changes.
* A module's output takes the module's geometry (by the recurrence above) whatever the
  functions inside its ``forward`` gave it, when torch's own ``forward`` runs (and for any
  normalisation layer). A leaf with a ``forward`` of its own (a custom layer, a convolution
  subclass that pads itself in ``forward``), and a ``Linear`` applied to a map, take what
  their functions gave instead, so a custom blur or a padding the module's attributes do
  not show gives no geometry rather than a wrong one. A transpose that swaps rows and
  columns gives none either.

This is the classic receptive field: the pixels a unit reads through its windows. A
normalisation whose statistics pool over the map (``GroupNorm``, ``InstanceNorm``, a
``LayerNorm`` over (C, H, W), batch norm with batch statistics) makes every unit depend
weakly on the whole image through those statistics; that dependence is left out, as usual,
and so is a branch that pools the whole map and is broadcast back over it (the 1 x 1 rule
above), and the statistics of a softmax or ``F.normalize`` over the map.
"""

from __future__ import annotations

import difflib
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.overrides import TorchFunctionMode

from cnnwidgets.core.targets import empty_map_message, output_tensor

__all__ = [
    "Discovery", "LayerInfo", "discover", "discover_layers", "discover_layers_and_output", "final_activation",
    "GEOMETRIC_MODULES", "NORMALISATION_MODULES", "channel_count_problem", "first_convolution", "input_channels", "is_convolution", "module_geometry", "rule_applies",
    "suggest_names", "unknown_layer_error", "check_map_not_empty", "empty_map_error",
]

#: Modules whose receptive-field geometry follows from their window (see :func:`module_geometry`).
GEOMETRIC_MODULES = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)

#: Normalisation modules (batch, instance, group and layer norms): they work per position, and
#: shift and scale what they are given (its signs included).
NORMALISATION_MODULES = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._NormBase)


@dataclass(frozen=True)
class LayerInfo:
    """What is known about one addressable module of a model.

    Attributes:
        name: qualified module name, as in ``model.named_modules()``.
        type: the module's class name (``"Conv2d"``, ``"ReLU"``, ``"Sequential"`` ...).
        output_shape: shape of its (last) output without the batch dimension, or ``None``
            when the module does not run for this input or does not return one tensor; the
            whole shape when the output's first dimension is not the batch (``batch_first``).
        num_params: number of parameters, counting submodules.
        receptive_field: receptive-field size in input pixels (square kernels), or ``None``:
            the classic receptive field, which leaves out whole-map branches such as
            squeeze-and-excitation scales and pooled normalisation statistics (see the
            module docstring). For a concatenation of branches, that of the widest branch:
            channels from a shorter branch see less.
        jump: distance in input pixels between neighbouring output units (effective stride).
        start: centre of output unit (0, 0)'s receptive field in input pixel coordinates.
        calls: how many times the module runs in one forward pass (0: never runs).
        order: position in the order in which modules start running (never-run modules last).
        block: name of the top-level child the module belongs to (for grouping in menus).
        is_leaf: whether the module has no children.
        layout: for a 3-D output, ``"CHW"`` (channels first, as convolutions make them) or
            ``"HWC"`` (channels last, as inside ConvNeXt and Swin blocks, which permute to
            apply LayerNorm and Linear layers per position); ``""`` otherwise.
        batch_first: False when the output's first dimension was not the batch's size (an
            ``nn.Conv3d`` given an (N, C, H, W) batch reads it as one unbatched volume and
            returns (C_out, N, H, W); a 0-d output): such an output is not one result per
            image, is no feature map (``map_shape`` is None) and cannot be captured.
        conv: whether the module is a convolution: an instance of torch's ``Conv1d``, ``Conv2d``
            or ``Conv3d`` or of a subclass of one (transposed convolutions excluded); a block
            that only contains one, such as torchvision's ``Conv2dNormActivation``, is not.
        last_call: where the module's last call starts among all module calls of one forward
            pass, counted from 0 (-1: never runs, or not known). For a module that runs once
            it orders modules as ``order`` does; a module called several times (one pooling
            layer used after each convolution) sits where the output it is captured with is
            made.
        feeds: the module whose call takes the output of this module's last call as it is (the
            very tensor, not changed in place in between) as its input, and starts right after
            that call ends: what the output goes straight into, in a chain of modules. ``""``
            when the output goes first to code the layer table does not see (functional calls,
            a residual addition, also in place), to the end of the forward, or when it is not
            known (a leaf module's output only; inference tensors have no version to compare).
    """

    name: str
    type: str
    output_shape: tuple[int, ...] | None
    num_params: int
    receptive_field: int | None
    jump: int | None
    start: float | None
    calls: int
    order: int
    block: str
    is_leaf: bool
    layout: str = ""
    batch_first: bool = True
    conv: bool = False
    last_call: int = -1
    feeds: str = ""

    @property
    def is_conv(self) -> bool:
        """True for convolution modules (see ``conv``)."""
        return self.conv

    @property
    def is_spatial(self) -> bool:
        """True when the output is a (C, H, W) feature map that can be shown as a grid."""
        return self.map_shape is not None and self.layout != "HWC"

    @property
    def map_shape(self) -> tuple[int, int, int] | None:
        """The output as feature maps, (C, H, W), whichever its layout; None unless it is 3-D.

        For a channels-last (H, W, C) output this is (C, H, W): the shape of
        :meth:`channels_first` of it, the way the explorer and channel targets read it.
        """
        shape = self.output_shape
        if shape is None or len(shape) != 3 or not self.batch_first:
            return None
        if self.layout == "HWC":
            return (int(shape[2]), int(shape[0]), int(shape[1]))
        return (int(shape[0]), int(shape[1]), int(shape[2]))

    @property
    def shows_maps(self) -> bool:
        """True when the layer runs and outputs a stack of feature maps with at least one unit (not
        an :attr:`empty_map`): what the explorer's layer menu and the activation-maximisation view offer."""
        return self.map_shape is not None and self.calls > 0 and not self.empty_map

    @property
    def empty_map(self) -> bool:
        """True when the output is a feature map without a single unit: 0 channels, rows or columns
        (a crop or a chain of poolings that leaves nothing of an input this small). Torch runs such
        a layer without complaint, but it has nothing to show, rank or differentiate: the methods
        refuse it (see :func:`check_map_not_empty`), and the explorer does not offer it."""
        shape = self.map_shape
        return shape is not None and 0 in shape

    def channels_first(self, activation: torch.Tensor) -> torch.Tensor:
        """This layer's output batch ``activation`` with channels on dim 1: a (N, C, H, W) view (no
        copy, autograd intact) of a channels-last (N, H, W, C) output; any other output unchanged.

        Raises:
            TypeError: when ``activation`` is not a tensor.
        """
        if not isinstance(activation, torch.Tensor):
            raise TypeError(f"activation must be a torch.Tensor, a batch of this layer's outputs; got "
                            f"{_described(activation)}")
        if self.layout == "HWC" and activation.dim() == 4:
            return activation.permute(0, 3, 1, 2)
        return activation

    @property
    def shape_text(self) -> str:
        """The output shape for messages: ``(64, 56, 56)``, ``(56, 56, 96) (H, W, C: channels last)``, or the
        whole shape of an output whose first dimension is not the batch, saying so."""
        if self.output_shape is None:
            return "no tensor output"
        text = str(tuple(self.output_shape))
        if not self.batch_first:
            return f"{text} (whole output: its first dimension is not the batch)"
        return f"{text} (H, W, C: channels last)" if self.layout == "HWC" else text

    def describe(self) -> str:
        """A one-line human description, e.g. ``features.0  Conv2d  64x55x55``."""
        shape = "x".join(str(s) for s in self.output_shape) if self.output_shape else "-"
        if self.layout == "HWC":
            shape += " (HWC)"
        if not self.batch_first:
            shape += " (not batched)"
        return f"{self.name}  {self.type}  {shape}"


def _sizes(value: Any) -> tuple[int, ...]:
    """A module's size attribute (``kernel_size``, ``stride`` ...) as a tuple of ints, one per dimension."""
    if isinstance(value, (tuple, list, torch.Size)):
        return tuple(int(v) for v in value)
    return (int(value),)


def module_geometry(module: nn.Module) -> tuple[int, int, int, int] | None:
    """(kernel, stride, padding, dilation) of ``module`` for square conv/pool modules (the same in every
    dimension), else None: also for a module without a window (no ``kernel_size``), and for circular
    padding, where a border unit's window wraps to the opposite edge, which no box describes.

    Raises:
        TypeError: when ``module`` is not an ``nn.Module``.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(
            f"module must be a torch.nn.Module (a convolution or pooling layer), got {_described(module)}"
        )
    if getattr(module, "padding_mode", "zeros") == "circular" or getattr(module, "kernel_size", None) is None:
        return None
    try:
        kernel = _sizes(module.kernel_size)
        stride_attr = getattr(module, "stride", None)
        # no stride, or an empty one (torch's pooling takes ``stride=()`` too): the kernel size
        stride = _sizes(stride_attr) if stride_attr is not None else ()
        stride = stride or kernel
        dilation = _sizes(getattr(module, "dilation", 1))
        padding_attr = getattr(module, "padding", 0)
        uneven = False  # more padding after the map than before it
        if isinstance(padding_attr, str):
            # 'valid': none; 'same' (stride 1 only, enforced by torch): the top/left half of the total, rounded
            # down, so an odd total puts one row (column) more after the map
            dilations = dilation * len(kernel) if len(dilation) == 1 else dilation
            padding = (0,) if padding_attr == "valid" else tuple(d * (k - 1) // 2 for k, d in zip(kernel, dilations))
            uneven = padding_attr != "valid" and any(d * (k - 1) % 2 for k, d in zip(kernel, dilations))
        else:
            padding = _sizes(padding_attr)
    except (TypeError, ValueError):  # sizes that are not ints: not a window this describes
        return None
    if any(len(set(values)) != 1 for values in (kernel, stride, padding, dilation)):
        return None
    kernel, stride, padding, dilation = kernel[:1], stride[:1], padding[:1], dilation[:1]
    mode = getattr(module, "padding_mode", "zeros")
    if mode != "zeros" and padding[0] > dilation[0] * (kernel[0] - 1) // 2:
        # reflected or replicated padding wider than half the window: a border unit reads
        # pixels beyond its box, mirrored back into the image
        return None
    if mode == "reflect" and uneven:
        # the last unit's window is centred past the last pixel: the rows it mirrors back lie
        # before its box (replicated padding repeats the last pixel, which its window holds)
        return None
    return kernel[0], stride[0], padding[0], dilation[0]


Geometry = tuple[int, int, float]  # receptive field, jump, start


def _propagate(module: nn.Module, geometry: Geometry | None, in_shape, out_shape) -> Geometry | None:
    if geometry is None:
        return None
    if _channels_last(geometry):
        # a (N, H, W, C) map: only modules that work per position keep it (an activation, a
        # LayerNorm over the channels); a window over its last two dimensions would not be a map's
        if hasattr(module, "kernel_size") or isinstance(module, GEOMETRIC_MODULES):
            return None
        if in_shape is not None and out_shape is not None and len(in_shape) == len(out_shape) == 4:
            if tuple(in_shape[1:3]) == tuple(out_shape[1:3]):
                return geometry
        return None
    if isinstance(module, GEOMETRIC_MODULES):
        params = module_geometry(module)
        if params is None:
            return None
        k, s, p, d = params
        r, j, c = geometry
        return r + (k - 1) * d * j, j * s, c + ((k - 1) / 2 * d - p) * j
    if hasattr(module, "kernel_size"):
        # a windowed module of another kind (transposed convolution, LP pooling, unpooling ...):
        # even when it keeps the map's size, each output depends on a neighbourhood, not one position
        return None
    # Shape-preserving modules (activations, norms, dropout, identity) keep the geometry.
    if in_shape is not None and out_shape is not None and len(in_shape) == len(out_shape) == 4:
        if tuple(in_shape[2:]) == tuple(out_shape[2:]):
            return geometry
    return None


def rule_applies(module: nn.Module) -> bool:
    """Whether :func:`_propagate`'s rule describes ``module``'s forward: the forward is torch's
    own, and for a module without a window, one that works per position (activations, norms,
    dropout; not a Linear, which mixes whatever its last dimension holds). Normalisation layers
    count as per position whatever their forward (ConvNeXt's LayerNorm2d permutes to normalise
    over channels)."""
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module (a layer of a model), got {_described(module)}")
    if isinstance(module, NORMALISATION_MODULES):
        return True
    forward = getattr(type(module), "forward", None)
    if not getattr(forward, "__module__", "").startswith("torch."):
        # a convolution or pooling subclass with its own forward may pad or stride otherwise
        # than its attributes say: follow its functions; another windowed module gets no geometry
        return hasattr(module, "kernel_size") and not isinstance(module, GEOMETRIC_MODULES)
    return isinstance(module, GEOMETRIC_MODULES) or hasattr(module, "kernel_size") or not isinstance(module, nn.Linear)


# Name fragments of tensor functions that move or mix map positions even when they keep the
# map's size (see the module docstring): their outputs have no geometry.
_MIXING = (
    "conv", "pool", "pad", "roll", "flip", "rot90", "cum", "sort", "interpolate", "upsample", "grid_sample",
    "fold", "linear", "matmul", "mm", "einsum", "tensordot", "attention", "fft", "gather", "scatter", "index",
    "take", "as_strided", "diff", "gradient",
)


def _advanced_index_on(index: Any, ndim: int, dims: tuple[int, ...]) -> bool:
    """Whether the index of ``x[index]`` (or ``x[index] = y``) on a tensor with ``ndim`` dimensions picks
    entries of one of ``dims`` by a tensor, a list or an array (``x[:, :, order]``): a copy whose
    positions along that dimension may come in any order (rows reversed, shuffled, repeated). Plain
    ints and slices keep the order (a view, checked by its strides)."""
    entries = index if isinstance(index, tuple) else (index,)  # x[[2, 0, 1]]: a list picks along dimension 0

    def width(entry: Any) -> int:  # how many of the tensor's dimensions an entry takes
        if entry is None or entry is Ellipsis:
            return 0
        if isinstance(entry, torch.Tensor) and entry.dtype == torch.bool:
            return max(entry.dim(), 1)
        return 1

    ellipsis = ndim - sum(width(e) for e in entries)
    dim = 0
    for entry in entries:
        if entry is Ellipsis:
            dim += ellipsis
            continue
        taken = range(dim, dim + width(entry))
        dim += width(entry)
        plain = entry is None or isinstance(entry, (int, slice)) or (
            isinstance(entry, torch.Tensor) and entry.dim() == 0 and entry.dtype != torch.bool)
        if not plain and any(d in dims for d in taken):
            return True
    return False


class _ChannelsLast(tuple):
    """The geometry ``(receptive field, jump, start)`` of a channels-last map (N, H, W, C), whose
    positions are dimensions 1 and 2 (a plain tuple is that of a (N, C, H, W) map: the last two)."""

    __slots__ = ()


def _channels_last(geometry: Geometry | None) -> bool:
    return isinstance(geometry, _ChannelsLast)


def _merge(geometries: list[Geometry | None]) -> Geometry | None:
    """One geometry for a tensor computed from tensors with these geometries (see the module
    docstring): the largest receptive field when jumps and starts agree and all have their
    positions in the same dimensions, else None."""
    if not geometries or any(g is None for g in geometries):
        return None
    last = {_channels_last(g) for g in geometries}
    if len(last) > 1:
        return None
    r, j, c = max(geometries, key=lambda g: g[0])  # type: ignore[index]
    for _, jump, start in geometries:  # type: ignore[misc]
        if jump != j or abs(start - c) > 1e-6 * max(1, j):
            return None
    return _ChannelsLast((r, j, c)) if last == {True} else (r, j, c)


def _position_dims(geometry: Geometry | None) -> slice:
    """The dimensions of a tensor with ``geometry`` that hold the map positions."""
    return slice(1, 3) if _channels_last(geometry) else slice(-2, None)


def _permuted(args: tuple, kwargs: dict) -> tuple[int, ...] | None:
    """The dimension order a ``permute`` call asks for (``x.permute(0, 2, 3, 1)``,
    ``x.permute((0, 2, 3, 1))``, ``torch.permute(x, dims=...)``), or None if unreadable."""
    dims: Any = kwargs.get("dims", args[1:])
    if len(dims) == 1 and isinstance(dims[0], (tuple, list, torch.Size)):
        dims = dims[0]
    try:
        return tuple(int(d) % 4 for d in dims)
    except (TypeError, ValueError):
        return None


def _shares_storage(a: torch.Tensor, b: torch.Tensor) -> bool:
    try:
        return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):  # tensors without a plain storage
        return False


def _same_positions(
    output: torch.Tensor, operand: torch.Tensor, name: str, args: tuple, kwargs: dict, dims: slice = slice(-2, None)
) -> bool:
    """Whether the dimensions ``dims`` of ``output`` are the map positions of ``operand``'s (the last
    two; dimensions 1 and 2 of channels-last maps, which only keep them at the same rank)."""
    if output.dim() < 3 or operand.dim() < 3 or output.shape[dims] != operand.shape[dims]:
        return False
    if dims != slice(-2, None) and output.dim() != operand.dim():
        return False
    if _shares_storage(output, operand):
        # A view (or the tensor itself): the two dimensions must be the same ones, in the same
        # order: not others of equal size that a permute moved last, nor rows and columns
        # swapped by a transpose (a unit's box would be mirrored).
        return tuple(output.stride()[dims]) == tuple(operand.stride()[dims])
    if output.dim() == operand.dim():
        return True
    if name == "stack" and output.dim() == operand.dim() + 1:
        dim = kwargs.get("dim", args[1] if len(args) > 1 else 0)
        return isinstance(dim, int) and dim % output.dim() < output.dim() - 2
    return False


def _tensors_in(value: Any, found: list[torch.Tensor]) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        found.append(value)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _tensors_in(item, found)
    return found


class _TensorGeometries:
    """The geometry of each tensor derived from the input during one discovery pass.

    Entries are keyed by the tensor's ``id`` and hold a weak reference to it, so the pass keeps no
    tensor alive (its peak memory is that of a plain forward, not the sum of all activations). A
    freed tensor's entry is dropped, and an entry whose reference no longer leads to the very
    tensor looked up counts as absent: a tensor that later gets a freed one's ``id`` (a constant
    made inside a forward) is never given that tensor's geometry.
    """

    def __init__(self) -> None:
        self._entries: dict[int, tuple[weakref.ref, Geometry | None]] = {}

    def _entry(self, tensor: torch.Tensor) -> tuple[weakref.ref, Geometry | None] | None:
        entry = self._entries.get(id(tensor))
        if entry is None or entry[0]() is not tensor:
            return None
        return entry

    def __contains__(self, tensor: torch.Tensor) -> bool:
        return self._entry(tensor) is not None

    def __getitem__(self, tensor: torch.Tensor) -> Geometry | None:
        entry = self._entry(tensor)
        if entry is None:
            raise KeyError("tensor not derived from the input")
        return entry[1]

    def get(self, tensor: torch.Tensor | None) -> Geometry | None:
        """The geometry of ``tensor``; None when it has none or is not derived from the input."""
        entry = None if tensor is None else self._entry(tensor)
        return None if entry is None else entry[1]

    def __setitem__(self, tensor: torch.Tensor, geometry: Geometry | None) -> None:
        entry = self._entry(tensor)
        if entry is not None:
            self._entries[id(tensor)] = (entry[0], geometry)
            return
        key = id(tensor)
        entries = self._entries

        def forget(ref: weakref.ref) -> None:  # the tensor is freed: its id may be reused
            if entries.get(key, (None,))[0] is ref:
                entries.pop(key, None)

        entries[key] = (weakref.ref(tensor, forget), geometry)


class _FunctionGeometry(TorchFunctionMode):
    """Gives the outputs of tensor functions geometry from their operands' (rules in the module
    docstring), in ``geometry_of`` (see :class:`_TensorGeometries`).

    Torch function modes are per thread: forward passes in other threads are not seen. Tensors
    absent from ``geometry_of`` are not derived from the input (parameters, buffers, constants).
    """

    def __init__(self, geometry_of: _TensorGeometries) -> None:
        super().__init__()
        self._geometry_of = geometry_of

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        name = getattr(func, "__name__", "")
        if name == "__setitem__":  # x[index] = value changes x in place and returns None
            if args and isinstance(args[0], torch.Tensor):
                self._record(name, args, kwargs, [args[0]], _tensors_in(args[2:3], [args[0]]))
        elif isinstance(result, (torch.Tensor, list, tuple)):
            outputs = _tensors_in(result, [])
            if outputs:
                operands = _tensors_in(args, [])
                operands = _tensors_in([value for key, value in kwargs.items() if key != "out"], operands)
                self._record(name, args, kwargs, outputs, operands)
        return result

    def _record(
        self, name: str, args: tuple, kwargs: dict, outputs: list[torch.Tensor], operands: list[torch.Tensor]
    ) -> None:
        tracked = [t for t in operands if t in self._geometry_of]
        if not tracked:
            return
        mixing = any(fragment in name for fragment in _MIXING)
        if name == "linear" and all(_channels_last(self._geometry_of[t]) for t in tracked[:1]):
            # a Linear per position of a channels-last map mixes the channels only (checked below)
            mixing = False
        for output in outputs:
            geometry: Geometry | None = None
            if not mixing:
                try:
                    geometry = self._geometry(name, args, kwargs, output, tracked)
                except Exception:  # noqa: BLE001 - an unusual tensor: its geometry is unknown
                    geometry = None
            self._geometry_of[output] = geometry
            base = output._base
            if base is not None and base in self._geometry_of and (name.endswith("_") or name.startswith("__i")):
                # an in-place function on a view (``y[:, :k].add_(z)``) changes the tensor it views
                same = _same_positions(base, output, name, args, kwargs)
                self._geometry_of[base] = _merge([self._geometry_of[base], geometry]) if same else None

    def _geometry(
        self, name: str, args: tuple, kwargs: dict, output: torch.Tensor, tracked: list[torch.Tensor]
    ) -> Geometry | None:
        if name in ("__getitem__", "__setitem__") and len(args) > 1 and isinstance(args[0], torch.Tensor):
            indexed = args[0]
            ndim = indexed.dim()
            dims = (1, 2) if _channels_last(self._geometry_of.get(indexed)) else (ndim - 2, ndim - 1)
            if _advanced_index_on(args[1], ndim, dims):
                return None  # positions picked in another order (x[:, :, order]), or written there
        if name == "permute" and len(tracked) == 1 and output.dim() == 4:
            # between (N, C, H, W) and channels-last (N, H, W, C): the same positions, moved
            geometry, order = self._geometry_of[tracked[0]], _permuted(args, kwargs)
            if geometry is None or order is None:
                return None
            if order == (0, 1, 2, 3):
                return geometry
            if order == (0, 2, 3, 1) and not _channels_last(geometry):
                return _ChannelsLast(geometry)
            if order == (0, 3, 1, 2) and _channels_last(geometry):
                return tuple(geometry)  # type: ignore[return-value]
            return None
        if name == "linear":
            operand = tracked[0]  # the input; the weight and bias are not derived from it
            same = output.dim() == operand.dim() and output.shape[:-1] == operand.shape[:-1]
            return self._geometry_of[operand] if same and len(tracked) == 1 else None
        # the output's positions: dimensions 1 and 2 when it is computed from a channels-last map
        last = any(_channels_last(self._geometry_of[t]) for t in tracked)
        positions = slice(1, 3) if last and output.dim() == 4 else slice(-2, None)
        larger = output.dim() >= 2 and output.shape[positions].numel() > 1
        merged: list[Geometry | None] = []
        for operand in tracked:
            dims = _position_dims(self._geometry_of[operand])
            if _same_positions(output, operand, name, args, kwargs, dims):
                merged.append(self._geometry_of[operand])
            elif larger and operand.shape[positions].numel() == 1:
                # broadcast from a 1 x 1 map (global pooling, a (C, 1, 1) bias, a channels-last
                # (1, 1, C) gate) or a scalar: left out
                continue
            else:
                return None  # the map's size or arrangement changed
        return _merge(merged)


def suggest_names(name: str, names: list[str], n: int = 5) -> list[str]:
    """Close matches for a mistyped layer name: the names that differ from it in case only, else
    close ones (by difflib, the case ignored if that finds none), else those that contain it.

    Args:
        name: the name given.
        names: the layer names to choose from.
        n: the most matches returned.

    Raises:
        TypeError: for a ``name`` that is not a str, ``names`` that are not a list of str, or an ``n``
            that is not an int. ValueError: for a negative ``n``.
    """
    names = _check_names(name, names)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"n must be an int, the most names to suggest; got {_described(n)}")
    n = int(n)
    if n < 0:
        raise ValueError(f"n must be 0 or more, the most names to suggest; got {n}")
    if n == 0:
        return []
    same_but_case = [candidate for candidate in names if candidate.lower() == name.lower()]
    if same_but_case:  # "Conv1" for "conv1", "FEATURES.CONV3": too far apart for difflib
        return same_but_case[:n]
    close = difflib.get_close_matches(name, names, n=n, cutoff=0.5)
    if not close:  # the case ignored: "Features.Conv3" for "features.conv3"
        lowered = {candidate.lower(): candidate for candidate in names}
        close = [lowered[match] for match in difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.5)]
    if not close:
        close = [candidate for candidate in names if name and name.lower() in candidate.lower()][:n]
    return close


def _check_names(name: Any, names: Any) -> list[str]:
    """``names`` as a list, after checking that ``name`` is a str and ``names`` a collection of str."""
    if not isinstance(name, str):
        raise TypeError(f"the layer name must be a str, got {_described(name)}")
    if isinstance(names, (str, bytes)) or not isinstance(names, (Sequence, set, frozenset, dict, type({}.keys()))):
        raise TypeError(
            f"names must be a list of layer names (str), such as list(probe.layers); got {_described(names)}"
        )
    listed = list(names)
    wrong = [item for item in listed if not isinstance(item, str)]
    if wrong:
        raise TypeError(
            f"names must be a list of layer names (str); it holds {_described(wrong[0])}"
        )
    return listed


def is_convolution(module: nn.Module) -> bool:
    """Whether ``module`` is a (non-transposed) convolution: ``nn.Conv1d/2d/3d`` or a subclass of one,
    whatever the subclass is called."""
    return isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d))


#: Prefixes that wrappers add to their model's layer names, and what adds them: the probe unwraps
#: these wrappers, so a layer is named as in the inner model (``"3"``, not ``"module.3"``).
_WRAPPER_PREFIXES = (
    ("module.", "a DataParallel or DistributedDataParallel wrapper"),
    ("_orig_mod.", "the wrapper torch.compile returns"),
)


def unknown_layer_error(name: str, names: list[str], model: nn.Module | None = None) -> KeyError:
    """A KeyError for the unknown layer ``name`` that names close alternatives among ``names``.

    With ``model``, a name under which a module is registered a second time (``self.d = self.c``:
    ``named_modules()`` lists it once, under its first name) is told which name it goes by. A name
    with a wrapper's prefix (``"module.3"`` for ``nn.DataParallel``, ``"_orig_mod.3"`` for
    ``torch.compile``) whose rest is a known layer is told to drop it: the probe unwraps such
    wrappers, so layers are named as in the wrapped model.
    """
    names = _check_names(name, names)
    if model is not None:
        check_module(model)
    listing = ", ".join(names[:8]) + (" ..." if len(names) > 8 else "")
    if name == "":
        # named_modules() calls the model itself '': not a layer inside it
        return KeyError(f"layer '' is the whole model (its output), not one of its layers; pick a layer: {listing}")
    if model is not None:
        first = {id(module): first_name for first_name, module in model.named_modules()}  # each module once
        for alias, module in model.named_modules(remove_duplicate=False):
            if alias == name and first.get(id(module), name) != name:
                return KeyError(
                    f"layer {name!r} is the same module as {first[id(module)]!r}, the name it is listed under "
                    f"(a module registered under two names is listed once); use {first[id(module)]!r}"
                )
    for prefix, wrapper in _WRAPPER_PREFIXES:
        inner = name[len(prefix):] if isinstance(name, str) and name.startswith(prefix) else ""
        if inner and inner in names and not any(known.startswith(prefix) for known in names):
            return KeyError(
                f"unknown layer {name!r}: {wrapper} is unwrapped, so layer names are those of the wrapped model: "
                f"use {inner!r}"
            )
    close = suggest_names(name, names)
    hint = f" Did you mean: {', '.join(repr(c) for c in close)}?" if close else ""
    return KeyError(f"unknown layer {name!r}.{hint} Known layers: {listing}")


def _check_info(info: Any, input_size: Any) -> tuple[int, ...] | None:
    """``input_size`` as a tuple of ints (or None), after checking ``info`` is a LayerInfo."""
    if not isinstance(info, LayerInfo):
        raise TypeError(
            f"info must be a LayerInfo (a value of probe.layers or of discover_layers(...)), got "
            f"{_described(info)}"
        )
    if input_size is None:
        return None
    try:
        sizes = tuple(input_size)
        ok = len(sizes) in (2, 3) and all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool)
            or isinstance(v, torch.Tensor) and v.dim() == 0 and not v.is_floating_point() and v.dtype != torch.bool
            for v in sizes
        )
    except TypeError:
        ok = False
    if not ok or isinstance(input_size, (str, bytes)):
        raise TypeError(f"input_size must be None or the (C, H, W) (or (H, W)) of ints the layer was described at; "
                        f"got {input_size!r:.60}")
    return tuple(int(v) for v in sizes)


def empty_map_error(info: LayerInfo, input_size: Sequence[int] | None = None) -> ValueError:
    """The error for the layer ``info`` describes, whose feature map is empty (see :attr:`LayerInfo.empty_map`).

    ``input_size`` is the (C, H, W) (or (H, W)) input the layer was described at, to name in the message.

    Raises:
        TypeError: when ``info`` is not a :class:`LayerInfo`, or ``input_size`` not None or a (C, H, W)
            or (H, W) of ints.
    """
    input_size = _check_info(info, input_size)
    shape = info.map_shape or ()
    if shape and shape[0] == 0 and 0 not in shape[1:]:
        return ValueError(
            f"layer {info.name!r} has an empty feature map {info.shape_text}: it has no channels; pick another layer"
        )
    size = ""
    if input_size is not None and len(input_size) >= 2:
        size = f" ({int(input_size[-2])}x{int(input_size[-1])})"
    return ValueError(empty_map_message(info.name, info.shape_text, size))


def check_map_not_empty(info: LayerInfo, input_size: Sequence[int] | None = None) -> LayerInfo:
    """``info`` unchanged, unless its output is an empty feature map (see :attr:`LayerInfo.empty_map`).

    Methods call it on the layers they read before running the model: such a layer makes torch's
    reductions fail (an argmax over no position) or return NaN or nothing without a word.

    Raises:
        ValueError: :func:`empty_map_error`, naming the layer, its shape and ``input_size``.
        TypeError: when ``info`` is not a :class:`LayerInfo`, or ``input_size`` not None or a (C, H, W)
            or (H, W) of ints.
    """
    _check_info(info, input_size)
    if info.empty_map:
        raise empty_map_error(info, input_size)
    return info


def discover_layers(model: nn.Module, example: torch.Tensor) -> dict[str, LayerInfo]:
    """Run ``model`` once on ``example`` and describe every named submodule.

    Args:
        model: the module to inspect. Temporary hooks are added and always removed; during the
            pass, a torch function mode in this thread follows the geometry through tensor
            functions (see the module docstring), and is always exited.
        example: an input batch (N, C, H, W) on the model's device.

    Returns:
        ``{name: LayerInfo}`` in the order modules start running; modules that never
        run come last with ``calls == 0``.
    """
    return discover_layers_and_output(model, example)[0]


def discover_layers_and_output(model: nn.Module, example: torch.Tensor) -> tuple[dict[str, LayerInfo], Any]:
    """:func:`discover_layers` on ``model``, also returning the model's output for ``example`` (computed
    without autograd).

    A caller that needs the output of a real input anyway can describe the layers on that input
    and save a forward pass.
    """
    found = discover(model, example)
    return found.layers, found.output


class Discovery(NamedTuple):
    """What one discovery pass (:func:`discover`) found.

    Attributes:
        layers: ``{name: LayerInfo}``, as :func:`discover_layers` returns it.
        output: the model's output for the example (computed without autograd).
        output_activation: ``"sigmoid"`` or ``"softmax"`` when the tensor the model returned is
            the very output of a final ``nn.Sigmoid`` or ``nn.Softmax`` module (see
            :func:`final_activation`), else None.
        scores_layer: with such an activation, the leaf layer whose (classes,) or (classes, 1, 1)
            output went unchanged into it (the logits), else None.
    """

    layers: dict[str, LayerInfo]
    output: Any
    output_activation: str | None
    scores_layer: str | None = None


def final_activation(module: nn.Module, output: torch.Tensor) -> str | None:
    """``"sigmoid"`` or ``"softmax"`` when ``module`` is one that turns class scores ``output``
    into probabilities: an ``nn.Sigmoid``, or an ``nn.Softmax`` / ``nn.Softmax2d`` over dimension 1
    (the classes of an (N, classes) or (N, classes, ...) output); else None.

    Raises:
        TypeError: when ``module`` is not an ``nn.Module`` or ``output`` not a tensor.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module (the model's last layer), got {_described(module)}")
    if not isinstance(output, torch.Tensor):
        raise TypeError(f"output must be a torch.Tensor (what the module returned), got {_described(output)}")
    if isinstance(module, nn.Sigmoid):
        return "sigmoid"
    if isinstance(module, nn.Softmax2d):
        return "softmax" if output.dim() == 4 else None
    if isinstance(module, nn.Softmax) and output.dim() >= 2:
        dim = module.dim
        if dim is None:  # torch's legacy implicit dimension: 1 for 2-D and 4-D inputs, 0 for 3-D
            return "softmax" if output.dim() != 3 else None
        if not -output.dim() <= dim < output.dim():  # torch refuses such a softmax: it made no output
            return None
        return "softmax" if dim % output.dim() == 1 else None
    return None


def _returned_activation(
    output: Any, trail: list[tuple[nn.Module, int | None]], trail_tensor: torch.Tensor | None
) -> tuple[str | None, nn.Module | None]:
    """The final activation (see :func:`discover`) of a model that returned ``output``, given the
    last module calls that returned one same tensor, ``trail_tensor``: its kind and its module,
    or (None, None)."""
    try:
        returned = output_tensor(output)
    except TypeError:
        return None, None
    if not trail or trail_tensor is None or returned is not trail_tensor:
        return None, None
    module, version = trail[0]
    if version is None or returned._version != version:  # changed in place after the module returned it
        return None, None
    kind = final_activation(module, returned)
    return kind, module if kind is not None else None


def _scores_layer(infos: dict[str, LayerInfo], activation: str) -> str | None:
    """The leaf layer whose output went, unchanged, into the final activation module
    ``activation`` (its only call), when that output is (classes,) per image, or (classes, 1, 1) as a
    convolutional head pooled to one position gives it: the scores the activation turns into
    probabilities. None otherwise."""
    if infos[activation].calls != 1:
        return None
    feeding = [info for info in infos.values() if info.feeds == activation and info.is_leaf and info.calls == 1]
    shape = feeding[0].output_shape if len(feeding) == 1 else None
    if not shape or any(size != 1 for size in shape[1:]):
        return None
    return feeding[0].name


def discover(model: nn.Module, example: torch.Tensor) -> Discovery:
    """:func:`discover_layers_and_output` for ``model`` and ``example``, also recording the model's final
    activation module.

    The final activation is read from the order in which module calls end: the calls that end
    last and all return the very tensor the model returns (a head ``Sequential`` and the
    ``nn.Sigmoid`` inside it) lead to the innermost one; if that is an ``nn.Sigmoid`` or
    ``nn.Softmax`` (see :func:`final_activation`) and nothing changed the tensor in place since,
    the model's output is that module's output. An activation applied as a function
    (``torch.sigmoid(y)``) is not seen.

    Runs outside the caller's inference mode (the pass reads tensors' version counters, which
    inference tensors do not have); no gradient is recorded either way.

    The model runs on a copy of ``example`` (a forward that changes its input in place leaves
    ``example`` as it was), and is left as it was: the running statistics a module in training
    mode updates are put back, and so are, for a model with a module in training mode, the states of
    torch's random number generators (of the CPU and of the example's device), which dropout in
    training mode draws from.

    Raises:
        TypeError: when ``model`` is not an ``nn.Module`` or ``example`` not a tensor, and when the
            model fails on an example of another dtype than all its floating parameters and buffers.
        ValueError: for an example of fewer than 2 dimensions, or of 3 (one image without its batch
            dimension) for a model whose first convolution is 2-D, a model with lazy modules not
            initialised yet (the pass would initialise them), and when the model fails on an
            example on another device than all its parameters and buffers.
        Exception: whatever else the model's forward raises, as it is.
    """
    check_module(model)
    if not isinstance(example, torch.Tensor):
        hint = " (convert it with torch.from_numpy)" if isinstance(example, np.ndarray) else ""
        raise TypeError(
            f"example must be a torch.Tensor, an input batch such as (N, C, H, W); got {_described(example)}{hint}"
        )
    if example.dim() < 2:
        raise ValueError(
            f"example must be an input batch with the batch dimension first, such as (N, C, H, W) (2 dimensions "
            f"at least); got a tensor of shape {tuple(example.shape)}"
        )
    stem = first_convolution(model) if example.dim() == 3 else None
    if isinstance(stem, (nn.Conv2d, nn.ConvTranspose2d)):
        # torch runs an unbatched (C, H, W) image through 2-D convolutions, but every output would be
        # read with its first dimension as the batch: C images of one row each
        raise ValueError(
            f"example has shape {tuple(example.shape)}, one image (C, H, W) without the batch dimension, and the "
            f"model's first convolution is 2-D: give a batch (N, C, H, W), e.g. example.unsqueeze(0)"
        )
    if torch.is_inference_mode_enabled():
        with torch.inference_mode(False):
            return discover(model, example)
    lazy = [name or "the model" for name, module in model.named_modules()
            if isinstance(module, LazyModuleMixin) and module.has_uninitialized_params()]
    if lazy:
        # a forward would give them their parameters and make them plain modules (a LazyConv2d
        # becomes a Conv2d): the discovery pass would change the model
        raise ValueError(
            f"model has lazy modules whose parameters are not initialised yet ({', '.join(lazy[:4])}); run one "
            "forward pass on an input of the size it expects first, e.g. model(torch.zeros(1, C, H, W))"
        )
    names: dict[nn.Module, str] = {}
    for name, module in model.named_modules():
        if name and module not in names:
            names[module] = name
    batch = int(example.shape[0])
    with torch.no_grad():
        # the model runs on a copy: a forward that changes its input in place (an in-place ReLU
        # first, ``x /= 255``) leaves the caller's tensor as it was
        example = example.clone()
    # per tensor, without keeping any alive: the pass peaks at a plain forward's memory
    geometry_of = _TensorGeometries()
    geometry_of[example] = (1, 1, 0.0)
    start_order: dict[str, int] = {}
    last_start: dict[str, int] = {}  # name -> index among all calls of the start of its last call
    calls: dict[str, int] = {}
    shapes: dict[str, tuple[int, ...] | None] = {}
    batched: dict[str, bool] = {}
    geometry: dict[str, Geometry | None] = {}
    # the calls that ended last and returned one same tensor: (module, that tensor's version then),
    # and a weak reference to that tensor (once freed, the model cannot return it)
    trail: list[tuple[nn.Module, int | None]] = []
    trail_tensor: list[weakref.ref] = []
    calls_started = [0]
    feeds: dict[str, str] = {}
    # the leaf call that ended last: (its name, a weak reference to its output, the output's version then)
    ended: list[tuple[str, weakref.ref, int] | None] = [None]

    def pre_hook(module: nn.Module, args: tuple) -> None:
        name = names[module]
        start_order.setdefault(name, len(start_order))
        last_start[name] = calls_started[0]
        calls_started[0] += 1
        if ended[0] is not None and not any(True for _ in module.children()):
            before, ref, version = ended[0]
            first = next((a for a in args if isinstance(a, torch.Tensor)), None)
            # the very tensor the leaf before returned, unchanged since (an in-place residual
            # addition bumps its version): the output goes straight into this call
            fed = first is not None and first is ref() and not first.is_inference() and first._version == version
            feeds[before] = name if fed else ""
            ended[0] = None

    def post_hook(module: nn.Module, args: tuple, output: Any) -> None:
        name = names[module]
        calls[name] = calls.get(name, 0) + 1
        first = next((a for a in args if isinstance(a, torch.Tensor)), None)
        if not isinstance(output, torch.Tensor):
            ended[0] = None
            shapes[name] = None
            geometry[name] = None
            batched[name] = True
            trail.clear()
            trail_tensor.clear()
            return
        if not (trail_tensor and trail_tensor[0]() is output):
            trail.clear()
            trail_tensor[:] = [weakref.ref(output)]
        # an inference tensor (made under the model's own torch.inference_mode()) has no version
        # counter: whether it was changed in place afterwards cannot be told
        trail.append((module, None if output.is_inference() else output._version))
        batched[name] = output.dim() > 0 and int(output.shape[0]) == batch
        shapes[name] = tuple(output.shape[1:]) if batched[name] else tuple(output.shape)
        if not any(True for _ in module.children()):
            feeds[name] = ""  # until a call that takes this output is seen to start next
            ended[0] = None if output.is_inference() else (name, weakref.ref(output), output._version)
            if output in geometry_of and not rule_applies(module):
                # a leaf whose own forward is not the one the module rule describes (a custom
                # layer, a conv subclass that pads in forward, a Linear over the width): what
                # its tensor functions did to the positions, as followed above, decides
                out = geometry_of[output]
            else:
                in_geometry = geometry_of.get(first)
                out = _propagate(module, in_geometry, None if first is None else first.shape, output.shape)
            geometry_of[output] = out
        else:
            # A container's output is the tensor some inner module produced (if any).
            out = geometry_of.get(output)
        geometry[name] = out

    handles = []
    buffers = _Buffers(model)
    # only a module in training mode draws (dropout): a model in evaluation mode, as a probe's copy
    # always is, leaves the generators alone, and they are not touched either (putting a state back
    # would undo what another thread drew meanwhile)
    random_state = _RandomState(example.device) if any(m.training for m in model.modules()) else None
    try:
        try:
            for module in names:
                handles.append(module.register_forward_pre_hook(pre_hook))
                handles.append(module.register_forward_hook(post_hook))
            with torch.no_grad(), _FunctionGeometry(geometry_of):
                output = model(example)
        except Exception as exc:
            mismatch = _mismatch_error(model, example)
            if mismatch is not None:
                raise mismatch from exc
            raise
        finally:
            for handle in handles:
                handle.remove()
        activation, activation_module = _returned_activation(
            output, trail, trail_tensor[0]() if trail_tensor else None
        )
        channels_last = {name for name, geo in geometry.items() if _channels_last(geo)}
        layouts = _layouts(model, names, example, {n: s for n, s in shapes.items() if batched.get(n, True)},
                           channels_last)
    finally:
        buffers.restore()
        if random_state is not None:
            random_state.restore()

    infos: dict[str, LayerInfo] = {}
    ordered = sorted(names.items(), key=lambda item: start_order.get(item[1], len(names) + 1))
    for index, (module, name) in enumerate(ordered):
        geo = geometry.get(name)
        infos[name] = LayerInfo(
            name=name,
            type=type(module).__name__,
            output_shape=shapes.get(name),
            num_params=sum(p.numel() for p in module.parameters()),
            receptive_field=int(geo[0]) if geo else None,
            jump=int(geo[1]) if geo else None,
            start=float(geo[2]) if geo else None,
            calls=calls.get(name, 0),
            order=index,
            block=name.split(".")[0],
            is_leaf=not any(True for _ in module.children()),
            layout=layouts.get(name, ""),
            batch_first=batched.get(name, True),
            conv=is_convolution(module),
            last_call=last_start.get(name, -1),
            feeds=feeds.get(name, ""),
        )
    scores = _scores_layer(infos, names[activation_module]) if activation_module is not None else None
    return Discovery(infos, output, activation, scores)


def _described(value: Any) -> str:
    """``value`` for a message: its type, and its shape or the start of its repr."""
    if isinstance(value, (torch.Tensor, np.ndarray)):
        kind = "a tensor" if isinstance(value, torch.Tensor) else "a numpy array"
        return f"{kind} of shape {tuple(value.shape)} and dtype {value.dtype}"
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"


def check_module(value: Any, what: str = "model") -> None:
    """Refuse a ``value`` that is no ``nn.Module``: a TypeError naming ``what`` and what was given."""
    if not isinstance(value, nn.Module):
        raise TypeError(f"{what} must be a torch.nn.Module, got {_described(value)}")


def _mismatch_error(model: nn.Module, example: torch.Tensor) -> Exception | None:
    """Why ``model`` may have failed on ``example``: an example on another device than all of the model's
    parameters and buffers, or of another dtype than all of its floating ones; None when it is neither."""
    tensors = [*model.parameters(), *model.buffers()]
    devices = {t.device for t in tensors}
    dtypes = {t.dtype for t in tensors if t.is_floating_point()}
    if len(devices) == 1 and example.device not in devices and not example.is_meta:
        device = next(iter(devices))
        return ValueError(
            f"the model failed on an example on {example.device}: its parameters are on {device}; give an example "
            f"on that device (example.to({str(device)!r}))"
        )
    if len(dtypes) == 1 and example.dtype not in dtypes:
        dtype = next(iter(dtypes))
        return TypeError(
            f"the model failed on an example of dtype {example.dtype}: its parameters are {dtype}; give an example "
            f"of that dtype (example.to({dtype}))"
        )
    return None


class _RandomState:
    """The random number generators' states of the CPU and of ``device`` (CUDA, MPS), to put back after
    a discovery pass: dropout in a model in training mode draws from them, and a user who seeded
    torch gets the same numbers whether or not a model was inspected in between."""

    def __init__(self, device: torch.device) -> None:
        self._cpu = torch.get_rng_state()
        self._device, self._state = device, None
        if device.type == "cuda":
            self._state = torch.cuda.get_rng_state(device)
        elif device.type == "mps":
            self._state = torch.mps.get_rng_state()

    def restore(self) -> None:
        torch.set_rng_state(self._cpu)
        if self._device.type == "cuda":
            torch.cuda.set_rng_state(self._state, self._device)
        elif self._device.type == "mps":
            torch.mps.set_rng_state(self._state)


class _Buffers:
    """A model's buffers, to put back after a discovery pass: the very tensors (a forward may assign
    new ones), and the values of those of modules in training mode, which a forward updates (batch
    norm's running statistics; torch's kernel writes them without bumping their version counter,
    so they are compared by value)."""

    def __init__(self, model: nn.Module) -> None:
        self._saved: list[tuple[nn.Module, str, torch.Tensor, torch.Tensor | None]] = []
        for module in model.modules():
            for key, buffer in module._buffers.items():
                if buffer is None:
                    continue
                # inference tensors cannot be changed in place outside inference mode, where the pass runs
                kept = module.training and not buffer.is_inference() and not buffer.is_meta
                self._saved.append((module, key, buffer, buffer.detach().clone() if kept else None))

    def restore(self) -> None:
        with torch.no_grad():
            for module, key, buffer, saved in self._saved:
                if module._buffers.get(key) is not buffer:  # replaced (``self.count = self.count + 1``)
                    module._buffers[key] = buffer
                if saved is None:
                    continue
                if buffer.shape == saved.shape and buffer.dtype == saved.dtype:
                    if not torch.equal(buffer, saved):
                        buffer.copy_(saved)
                else:
                    buffer.data = saved


def _proportional(h: int, w: int, height: int, width: int) -> bool:
    """Whether an h x w map has the aspect of a height x width input (within one unit of rounding)."""
    return abs(h * width - w * height) <= height + width


def _looks_channels_last(shape: tuple[int, ...], height: int, width: int) -> bool:
    a, b, c = shape
    return _proportional(a, b, height, width) and not _proportional(b, c, height, width)


def _layouts(
    model: nn.Module, names: dict[nn.Module, str], example: torch.Tensor, shapes: dict[str, tuple[int, ...] | None],
    channels_last: set[str] = frozenset(),
) -> dict[str, str]:
    """``"CHW"`` or ``"HWC"`` for every module with a 3-D output (per image).

    The layers in ``channels_last`` (whose output geometry was followed through a permute to
    (N, H, W, C)) are ``"HWC"``. Another 3-D output is taken as (C, H, W) unless its first two
    sizes, not its last two, have the input's aspect ratio (a map with as many channels as rows,
    which could be either, is taken as (C, H, W)). Only when some output is or looks
    channels-last is the model run once more, on an input 32 pixels larger each way (a layer
    after a permute that lost the positions may be channels-last too): the axes whose sizes
    change are the spatial ones, which settles every such layer that runs in both passes (also
    a square (H, H, H) one). The second pass may fail part-way (a model that only takes one
    size); what ran until then counts.
    """
    height, width = int(example.shape[-2]), int(example.shape[-1])
    three_d = {name: shape for name, shape in shapes.items() if shape is not None and len(shape) == 3}
    guess = {name: "HWC" if name in channels_last or _looks_channels_last(shape, height, width) else "CHW"
             for name, shape in three_d.items()}
    if "HWC" not in guess.values():
        return guess
    larger_shapes: dict[str, tuple[int, ...]] = {}

    def record(module: nn.Module, args: tuple, output: Any) -> None:
        if isinstance(output, torch.Tensor):
            larger_shapes[names[module]] = tuple(output.shape[1:])

    larger = torch.zeros((*example.shape[:-2], height + 32, width + 32), dtype=example.dtype, device=example.device)
    if example.is_contiguous(memory_format=torch.channels_last):
        larger = larger.contiguous(memory_format=torch.channels_last)
    handles = []
    try:
        for module in names:
            handles.append(module.register_forward_hook(record))
        with torch.no_grad():
            model(larger)
    except Exception:  # noqa: BLE001 - a model that takes one size only: keep what ran
        pass
    finally:
        for handle in handles:
            handle.remove()
    for name, shape in three_d.items():
        other = larger_shapes.get(name)
        if other is None or len(other) != 3 or name in channels_last:
            continue
        changed = tuple(i for i in range(3) if shape[i] != other[i])
        if changed == (0, 1):
            guess[name] = "HWC"
        elif changed == (1, 2):
            guess[name] = "CHW"
    return guess


#: The convolutions whose ``in_channels`` may be a model's input channels (lazy ones subclass them).
_CONVOLUTIONS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def input_channels(model: nn.Module) -> int | None:
    """``in_channels`` of the first convolution registered in ``model`` (1-D, 2-D or 3-D).

    The first one registered is the stem in every usual architecture, so this is usually the
    number of channels the model expects (1 for a grayscale digit classifier, 3 for RGB). It is
    a guess, not a measurement: a model that declares a later layer first (a head before the
    stem) gives that layer's count, which callers should be ready to find wrong.

    Returns:
        The channel count, or None if the model has no convolution or the first one is lazy
        and has not run yet (its count is not known).
    """
    conv = first_convolution(model)  # also checks the model
    if conv is None:
        return None
    count = int(conv.in_channels)
    return count if count >= 1 else None


def channel_count_problem(model: nn.Module, channels: int) -> str | None:
    """Why an input of ``channels`` channels does not suit ``model``, when its first convolution
    (see :func:`input_channels`) takes another count: "has 4 channels, but the model's first
    convolution takes 3: give inputs (N, 3, H, W) ...". None when the counts agree or the model
    does not show its count. For messages about a forward that failed, whose own error (a
    convolution's weights and groups) does not say what to change.
    """
    expected = input_channels(model)
    if expected is None or channels == expected:
        return None
    return (f"has {channels} channel{'s' if channels != 1 else ''}, but the model's first convolution takes "
            f"{expected}: give inputs (N, {expected}, H, W) as the model's preprocessing makes them")


def first_convolution(model: nn.Module) -> nn.Module | None:
    """The first convolution registered in ``model`` (1-D, 2-D or 3-D, transposed or not), or None.

    Usually the stem, whose kind says what input the model takes: an ``nn.Conv3d`` stem means a
    video or volume model (N, C, D, H, W), an ``nn.Conv1d`` one a sequence model (N, C, L).

    Raises:
        TypeError: when ``model`` is not an ``nn.Module``.
    """
    check_module(model)
    return next((module for module in model.modules() if isinstance(module, _CONVOLUTIONS)), None)
