"""Feature evolution during training (Zeiler & Fergus 2014, section 4, Fig. 4).

"For a given feature map, we show the strongest activation (across all training
examples) ... projected down to pixel space using our deconvnet approach", at a few
epochs of training, so one sees the features of each layer form. A
:class:`FeatureEvolutionRecorder` does this inside the user's own training loop::

    recorder = FeatureEvolutionRecorder(model, probe_images, layers={"conv1": 6, "conv2": [0, 5, 9]},
                                        epochs=[1, 2, 5, 10, 20])
    for epoch in range(1, 21):
        train_one_epoch(model, optimizer, loader)      # any optimizer, any loop
        recorder.record(epoch)                         # does nothing at epochs not listed

At a recorded epoch, for each chosen channel ``c`` of layer ``L``, the recorder finds the
strongest unit over a fixed probe set ``X``::

    (n*, h*, w*) = argmax_{n, h, w} a_L(x_n)[c, h, w]

(ties: first image, then first position in row-major order) and stores its value, the
receptive-field patch of image ``n*`` around unit ``(h*, w*)`` and the unit's projection to
pixel space, cropped to the same box (the deconvnet when available, see
:mod:`cnnwidgets.methods.topk` for projectors and patch geometry).

Class layers
------------
A recorded layer may be the classifier itself (the final ``nn.Linear``, or the global pooling of
a fully convolutional classifier, one 1 x 1 map per class): its "channels" are classes. The recorder finds such layers
when it is made, by one forward pass of its first probe images: a layer whose output per image
is (C,) or (C, 1, 1) and equals the model's output (or its softmax, log-softmax or sigmoid) is
one, and :attr:`FeatureEvolution.class_layers` lists it. Its rows are then labelled by class
(``"3 koala"`` with class names, see :meth:`FeatureEvolution.row_labels`; ``"class 3"``
without), and the rows of other layers by channel (``"ch 3"``).

It does not change training
---------------------------
The recorder inspects the model through a :class:`~cnnwidgets.core.probe.Probe`: a private
eval-mode copy, made afresh from the model's current weights at every recording (so updates
made in any way count, a hand-written ``p.data -= lr * p.grad`` too). The user's model, its train/eval flags, parameters, buffers and ``.grad``
are never touched, and ``record`` runs inside :func:`torch.random.fork_rng` (as do the forward
passes of the recorder's making), so the global random state (dropout masks, data shuffling)
after a ``record`` is exactly what it was before.
Training with and without the recorder gives bitwise-identical weights.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from cnnwidgets.core.layers import suggest_names
from cnnwidgets.core.probe import Probe, check_batch
from cnnwidgets.core.targets import (
    as_callback, as_count, as_flag, as_index, class_scores, nonfinite_cause, output_tensor,
)
from cnnwidgets.methods.cam import _gives_the_output
from cnnwidgets.methods.topk import Box, Projector, crop_receptive_field, receptive_field_box, resolve_projector

__all__ = ["PAPER_EPOCHS", "EvolutionFrame", "FeatureEvolution", "FeatureEvolutionRecorder"]

#: The epochs shown in the paper's Fig. 4.
PAPER_EPOCHS: tuple[int, ...] = (1, 2, 5, 10, 20, 30, 40, 64)


@dataclass(frozen=True)
class EvolutionFrame:
    """The strongest activation of one channel at one epoch.

    Attributes:
        epoch, layer, channel: what was recorded.
        value: ``a_L(x_{n*})[c, h*, w*]``, the largest activation over the probe set.
        image_index: ``n*``, the probe image it came from.
        unit: ``(h*, w*)``; (0, 0) for a (C,) layer.
        box: the unit's receptive field in the image (unclipped).
        patch: float32 (C, h, w) receptive-field crop of the probe image (outside: 0).
        projection: float32 (C, h, w) crop of the unit's pixel-space projection, or ``None``
            when no projector was used.
        valid: bool (h, w), inside the image.
    """

    epoch: int
    layer: str
    channel: int
    value: float
    image_index: int
    unit: tuple[int, int]
    box: Box
    patch: np.ndarray
    projection: np.ndarray | None
    valid: np.ndarray


@dataclass
class FeatureEvolution:
    """Everything a recorder stored: ``frames[(layer, channel)]`` is a list in epoch order.

    Attributes:
        epochs: the recorded epochs (or steps, see ``unit``), ascending.
        channels: ``{layer: [channel, ...]}`` in the order given.
        frames: ``{(layer, channel): [EvolutionFrame per recorded epoch]}``.
        unit: what the recorded numbers count, ``"epoch"`` or ``"step"`` (for labels).
        class_layers: ``{layer: number of classes}`` for the recorded layers whose channels are
            the model's classes (the layer's output is the model's class scores, see the module
            notes); empty when none is.
        classes: the class names the recorder was given (index = class), or None.
    """

    epochs: list[int] = field(default_factory=list)
    channels: dict[str, list[int]] = field(default_factory=dict)
    frames: dict[tuple[str, int], list[EvolutionFrame]] = field(default_factory=dict)
    unit: str = "epoch"
    class_layers: dict[str, int] = field(default_factory=dict)
    classes: list[str] | None = None

    def row_labels(self, layer: str, classes: Sequence[str] | None = None) -> list[str]:
        """The label of each recorded channel of ``layer``, in the order of :attr:`channels`.

        A channel of an ordinary layer is ``"ch 3"``. A channel of a class layer (see
        :attr:`class_layers`) is its class: ``"3 koala"`` where the class names are known,
        ``"class 3"`` where they are not.

        Args:
            layer: a recorded layer.
            classes: class names (index = class) to use; default: :attr:`classes`.

        Raises:
            KeyError: for a layer that was not recorded.
            TypeError: for a ``layer`` that is not a str, ``classes`` that are not a list of names (a
                string, a set or a mapping).
            ValueError: for class names that are not one per class of a recorded class layer.
        """
        channels = self.channels[self._recorded_layer(layer)]
        if layer not in self.class_layers:
            return [f"ch {c}" for c in channels]
        names = _class_name_list(classes, "classes") if classes is not None else self.classes
        if names is None:
            return [f"class {c}" for c in channels]
        _check_class_count(names, layer, self.class_layers[layer])
        return [f"{c} {names[c]}" for c in channels]

    def frame(self, layer: str, channel: int, epoch: int) -> EvolutionFrame:
        """The frame of one channel at one recorded epoch.

        Args:
            layer: the layer, one of the recorded layers.
            channel: a recorded channel of that layer (a Python int, a numpy integer or a 0-d
                integer tensor).
            epoch: a recorded epoch (or step, see :attr:`unit`), an int as ``channel``.

        Raises:
            KeyError: for a layer, channel or epoch that was not recorded.
            TypeError: for a ``layer`` that is not a str, a ``channel`` or ``epoch`` that is not an
                int (a bool, a float ...).
        """
        frames = self._frames_of(layer, channel)
        epoch = as_index(epoch, "epoch")
        for frame in frames:
            if frame.epoch == epoch:
                return frame
        raise KeyError(f"{self.unit} {epoch} was not recorded; recorded {self.unit}s: {self.epochs}")

    def values(self, layer: str, channel: int) -> np.ndarray:
        """float64 (E,): the strongest activation per recorded epoch (empty before the first recording).

        Args:
            layer: a recorded layer.
            channel: a recorded channel of that layer (an int, as in :meth:`frame`).

        Raises:
            KeyError: for a layer or channel that was not recorded.
            TypeError: for a ``layer`` that is not a str, a ``channel`` that is not an int.
        """
        return np.array([f.value for f in self._frames_of(layer, channel)], dtype=np.float64)

    def _recorded_layer(self, layer: object) -> str:
        """``layer``, checked to be one of the recorded layers.

        Raises:
            TypeError: for a layer that is not a str. KeyError: for one that was not recorded,
                naming the recorded layers (and the one meant, for a near miss).
        """
        if not isinstance(layer, str):
            raise TypeError(f"layer must be the name of a recorded layer (a str), got {type(layer).__name__} "
                            f"{layer!r:.60}; recorded layers: {list(self.channels)}")
        if layer not in self.channels:
            close = suggest_names(layer, list(self.channels), n=1)
            meant = f" Did you mean {close[0]!r}?" if close else ""
            raise KeyError(f"layer {layer!r} was not recorded.{meant} Recorded layers: {list(self.channels)}")
        return layer

    def _frames_of(self, layer: str, channel: int) -> list[EvolutionFrame]:
        layer = self._recorded_layer(layer)
        channel = as_index(channel, "channel")
        if channel not in self.channels[layer]:
            raise KeyError(f"channel {channel} of layer {layer!r} was not recorded; recorded: {self.channels}")
        return self.frames.get((layer, channel), [])  # none before the first recording


def _class_name_list(classes: object, what: str = "classes") -> list[str]:
    """``classes`` (class names in class order: a list, tuple or array) as a list of strings.

    Args:
        classes: the names, index = class.
        what: the argument's name, for messages.

    Raises:
        TypeError: for a string (whose letters would be taken for names), a set or a mapping (no
            class order), or anything that is not a sequence of names.
    """
    if isinstance(classes, (str, bytes)):
        raise TypeError(f"{what} must be a list of class names, one per class, got the string {classes!r:.60}")
    if isinstance(classes, (set, frozenset, Mapping)):
        raise TypeError(f"{what} must be class names in class order (a list, tuple or array), "
                        f"got a {type(classes).__name__}")
    try:
        return [str(name) for name in classes]  # type: ignore[union-attr]
    except TypeError:
        raise TypeError(f"{what} must be a list of class names, one per class, got {type(classes).__name__}") from None


def _check_class_count(names: Sequence[str], layer: str, count: int) -> None:
    """Refuse class ``names`` that are not one per class of the class layer ``layer`` (``count`` classes).

    Raises:
        ValueError: naming both numbers.
    """
    if len(names) != count:
        raise ValueError(f"{len(names)} class names were given, but layer {layer!r} scores {count} classes: "
                         f"give one name per class, in class order")


def _class_layers(probe: Probe, images: torch.Tensor, candidates: Sequence[str]) -> dict[str, int]:
    """``{layer: number of classes}`` for those of ``candidates`` (layers with a (C,) or (C, 1, 1)
    output per image) whose output is the model's class scores for ``images``: equal to the model's
    output, or to its softmax, log-softmax or sigmoid. Empty for a model whose output is no class scores."""
    if not candidates:
        return {}
    try:
        acts, output = probe.capture_with_logits(images.to(probe.device), candidates, cache=False, channels_first=True)
        scores = class_scores(output_tensor(output))
    except (TypeError, ValueError):  # an output that is no class scores (a tuple, a segmentation map)
        return {}
    found = {}
    for name in candidates:
        act = acts[name].reshape(acts[name].shape[0], -1)
        if act.shape == scores.shape and _gives_the_output(act, scores):
            found[name] = act.shape[1]
    return found


def _channel_list(spec: int | Sequence[int], channels: int, layer: str, *, given: bool = True) -> list[int]:
    """The channels to record: an int ``m`` is a count of evenly spaced channels, a sequence lists them.

    Counts and channel indices are checked by :func:`~cnnwidgets.core.targets.as_index`; a list
    with a channel twice is refused. A count ``given`` by the caller (not the default 8) that is
    larger than the layer's ``channels`` warns (``stacklevel`` for :class:`FeatureEvolutionRecorder`'s
    caller) and records them all.
    """
    if isinstance(spec, (int, np.integer, np.bool_)) or (isinstance(spec, torch.Tensor) and spec.dim() == 0):
        count = as_index(spec, f"layer {layer!r}: the number of channels to record")
        if count < 1:
            raise ValueError(f"layer {layer!r}: the number of channels must be >= 1, got {count}")
        if given and count > channels:
            warnings.warn(
                f"layer {layer!r} has {channels} channels; asked to record {count} of them, the recorder "
                f"records all {channels}",
                UserWarning,
                stacklevel=3,  # _channel_list <- FeatureEvolutionRecorder.__init__ <- its caller
            )
        return sorted({int(round(v)) for v in np.linspace(0, channels - 1, min(count, channels))})
    if (isinstance(spec, (str, bytes, Mapping, set, frozenset)) or not isinstance(spec, Iterable)
            or (isinstance(spec, (torch.Tensor, np.ndarray)) and spec.ndim != 1)):
        shape = f" of shape {tuple(spec.shape)}" if isinstance(spec, (torch.Tensor, np.ndarray)) else ""
        raise TypeError(
            f"channels of layer {layer!r}: expected an int (a count of evenly spaced channels) or a list of "
            f"channel indices (a list, a tuple or a 1-D array, in the order of the rows), got "
            f"{type(spec).__name__}{shape}"
        )
    chosen = [as_index(c, f"layer {layer!r}: channel") for c in spec]
    if not chosen:
        raise ValueError(f"layer {layer!r}: empty channel list")
    bad = [c for c in chosen if not 0 <= c < channels]
    if bad:
        raise IndexError(f"layer {layer!r} has {channels} channels; out of range: {bad}")
    twice = sorted({c for c in chosen if chosen.count(c) > 1})
    if twice:
        raise ValueError(f"layer {layer!r}: the channel list {chosen} has duplicate channels {twice}; "
                         "give each channel once")
    return chosen


def _layer_spec(layers: object) -> dict[str, object]:
    """``layers`` as ``{name: channels}``: a mapping as given, a single name or a list of names with
    the default (8 evenly spaced channels) each.

    Raises:
        TypeError: for something else (None, a number, bytes), or a name that is not a str.
        ValueError: for no layer at all, or a list that names a layer twice.
    """
    accepted = "a layer name, a list of names or a {name: channels} mapping"
    if isinstance(layers, str):
        return {layers: 8}
    if isinstance(layers, (bytes, set, frozenset)) or not isinstance(layers, Iterable):
        raise TypeError(f"layers must be {accepted}, got {type(layers).__name__} {layers!r:.60}")
    names = list(layers.keys() if isinstance(layers, Mapping) else layers)
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"layers must be {accepted}; a layer name is a str, got {type(name).__name__} "
                            f"{name!r:.60}")
    if not names:
        raise ValueError("layers is empty; name at least one layer")
    if isinstance(layers, Mapping):
        return dict(layers)
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ValueError(f"layers lists {twice} more than once; give each layer once")
    return {name: 8 for name in names}


class _NotFinite(Exception):
    """A recorded layer's activations hold NaN or infinite values."""

    def __init__(self, layer: str) -> None:
        super().__init__(layer)
        self.layer = layer


class FeatureEvolutionRecorder:
    """Records, at chosen epochs, the strongest activation of chosen channels and its projection.

    Args:
        model: the model being trained, or its zoo bundle (whose ``classes`` then name the rows of
            a class layer). Never changed (see the module notes).
        probe_images: a fixed, preprocessed probe set (N, C, H, W); the paper uses the
            training set, a few hundred images are enough to see features form. Kept as float32
            (the probe computes in float32, whatever the model's dtype: a float64 model's frames
            differ from its own float64 activations by float32 rounding, about 1e-7 relative).
        layers: ``{layer: channels}`` with a list of channel indices, or an int ``m`` for ``m``
            channels evenly spaced over the layer (``round(linspace(0, C - 1, m))``; a count above
            the layer's ``C`` records all ``C``, with a ``UserWarning``). A list or a single name
            means 8 evenly spaced channels per layer (all, quietly, on a layer with fewer). Counts
            and indices are ints (Python ints, numpy integers or 0-d integer tensors; not bools or
            floats); a list names each channel once.
        epochs: epochs at which :meth:`record` stores frames; default :data:`PAPER_EPOCHS`
            (1, 2, 5, 10, 20, 30, 40, 64, as in the paper's Fig. 4: calls at other epochs record
            nothing); ``None``: every call records.
        projection: ``"auto"`` (the deconvnet when available, else none), ``"deconvnet"``,
            ``"patch"`` / ``None`` (patches only) or a :data:`~cnnwidgets.methods.topk.Projector`.
        device: device of the private copy (``"auto"``, ``"cpu"``, ``"cuda"`` ...).
        batch_size: probe images per forward pass.
        on_record: called with ``(recorder, epoch)`` after each recording (live views use it).
        unit: what the numbers passed to :meth:`record` count, for labels: ``"epoch"`` or
            ``"step"`` (record after optimizer steps when a run has only a few epochs).
        classes: the model's class names, index = class (a list, tuple or array; the training
            set's ``classes``, say), for the rows of a recorded class layer (see the module notes):
            ``"3 koala"`` instead of ``"class 3"``. Default: a zoo bundle's ``classes`` when
            ``model`` is a bundle, else none. Kept in :attr:`FeatureEvolution.classes`.

    Raises:
        KeyError: unknown layer. IndexError: channel out of range.
        ValueError: bad probe set (not a non-empty (N, C, H, W) float batch of finite values),
            layer without a (C,) / (C, H, W) output, no layer, a layer listed twice, empty channel
            list, a channel listed twice, batch_size < 1, a negative epoch, a unit other than ``"epoch"`` or
            ``"step"``, class names that are not one per class of a recorded class layer.
        TypeError: layers that are neither a name, a list of names nor a mapping (or a name that
            is not a str); channels that are neither a count nor a list (a set, a mapping); a
            channel count or index, an epoch or batch_size that is not an int (a bool, a float
            ...); epochs that are not a sequence; an on_record that is not callable; a unit that
            is not a str; classes that are not a list of names.
        RuntimeError: a model that fails on the probe images (another number of channels, say).
    """

    def __init__(
        self,
        model: nn.Module,
        probe_images: torch.Tensor,
        layers: Mapping[str, int | Sequence[int]] | Sequence[str] | str,
        epochs: Iterable[int] | None = PAPER_EPOCHS,
        *,
        projection: str | Projector | None = "auto",
        device: str | torch.device = "auto",
        batch_size: int = 256,
        on_record: Callable[[FeatureEvolutionRecorder, int], None] | None = None,
        unit: str = "epoch",
        classes: Sequence[str] | None = None,
    ) -> None:
        if not isinstance(probe_images, torch.Tensor) or probe_images.dim() != 4 or probe_images.shape[0] == 0:
            raise ValueError(
                f"probe_images must be a non-empty preprocessed batch (N, C, H, W), got "
                f"{getattr(probe_images, 'shape', type(probe_images).__name__)}"
            )
        # checked now, not at the first record() in the middle of a training run: uint8 pixels
        # would be recorded as model input, and NaN would fail there
        check_batch(probe_images)
        batch_size = as_count(batch_size, "batch_size")
        as_callback(on_record, "on_record", "(recorder, epoch) -> None")
        if not isinstance(unit, str):
            raise TypeError(f"unit must be 'epoch' or 'step' (a str), got {type(unit).__name__} {unit!r:.60}")
        if unit not in ("epoch", "step"):
            raise ValueError(f"unit must be 'epoch' or 'step', got {unit!r}")
        unit = str(unit)  # a numpy str: a plain one
        if classes is None and not isinstance(model, nn.Module):
            classes = getattr(model, "classes", None)  # a zoo bundle's class names
        names = _class_name_list(classes) if classes is not None else None
        if epochs is not None:
            if (isinstance(epochs, (str, bytes)) or not isinstance(epochs, Iterable)
                    or (isinstance(epochs, (torch.Tensor, np.ndarray)) and epochs.ndim == 0)):
                raise TypeError(f"epochs must be a sequence of ints (or None: every call records), got "
                                f"{type(epochs).__name__} {epochs!r:.60}")
            epochs = [as_count(e, "each of epochs", minimum=0) for e in epochs]
        given = isinstance(layers, Mapping)  # counts the caller gave, not the default 8
        layers = _layer_spec(layers)
        self.projector = resolve_projector(projection)
        self.images = probe_images.detach().to("cpu", torch.float32).clone()
        self.batch_size = batch_size
        self.epochs = None if epochs is None else sorted(set(epochs))  # ints: checked above
        self._callbacks: list[Callable[[FeatureEvolutionRecorder, int], None]] = []
        if on_record is not None:
            self._callbacks.append(on_record)
        self.probe = Probe(model, device=device, input_size=tuple(self.images.shape[1:]))
        # the passes that describe the layers and find the class layers run forwards of the model, which may
        # draw random numbers: the random state the training loop goes on with stays as it was
        devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
        try:
            with torch.random.fork_rng(devices=devices):
                infos = self.probe.layers
                channels: dict[str, list[int]] = {}
                candidates: list[str] = []  # layers of one value per channel: the classifier may be one
                for name, spec in layers.items():
                    info = self.probe.check_layer(name)
                    if info.calls == 0:
                        raise ValueError(f"layer {name!r} does not run in this model's forward pass (in evaluation "
                                         "mode; auxiliary heads run only in training)")
                    shape = info.map_shape or info.output_shape  # channels first, whatever the layout
                    if shape is None or not info.batch_first or len(shape) not in (1, 3):
                        raise ValueError(
                            f"layer {name!r} has output shape {info.shape_text}; a recorder needs (C,) or (C, H, W) "
                            "per image"
                        )
                    channels[name] = _channel_list(spec, shape[0], name, given=given)
                    if len(shape) == 1 or shape[1:] == (1, 1):
                        candidates.append(name)
                self.layer_infos = {name: infos[name] for name in channels}
                class_layers = _class_layers(self.probe, self.images[:2], candidates)
                if names is not None:
                    for name, count in class_layers.items():
                        _check_class_count(names, name, count)
        except BaseException:
            self.probe.close()
            raise
        self.evolution = FeatureEvolution(channels=channels, unit=unit, class_layers=class_layers, classes=names)

    # ------------------------------------------------------------------ API
    @property
    def channels(self) -> dict[str, list[int]]:
        """``{layer: [channel, ...]}`` being recorded."""
        return self.evolution.channels

    def add_callback(self, fn: Callable[[FeatureEvolutionRecorder, int], None]) -> None:
        """Call ``fn(recorder, epoch)`` after each recording.

        Raises:
            TypeError: for an ``fn`` that is not callable (checked now, not at the next recording in
                the middle of a training run).
        """
        if not callable(fn):
            raise TypeError(f"the callback must be a callable fn(recorder, epoch), got {type(fn).__name__} {fn!r:.60}")
        self._callbacks.append(fn)

    def remove_callback(self, fn: Callable[[FeatureEvolutionRecorder, int], None]) -> None:
        """Stop calling ``fn``.

        Raises:
            ValueError: for an ``fn`` that is not one of the recorder's callbacks.
        """
        if fn not in self._callbacks:
            raise ValueError(f"{fn!r:.80} is not a callback of this recorder (given with on_record or "
                             f"add_callback); it has {len(self._callbacks)} callbacks")
        self._callbacks.remove(fn)

    def wants(self, epoch: int) -> bool:
        """Whether :meth:`record` stores frames at ``epoch``.

        Raises:
            TypeError: for an ``epoch`` that is not an int (as :meth:`record`).
            ValueError: for a negative ``epoch`` (as :meth:`record`).
        """
        epoch = as_count(epoch, "epoch", minimum=0)
        return self.epochs is None or epoch in self.epochs

    def record(self, epoch: int, *, force: bool = False) -> bool:
        """Store frames for ``epoch`` if it is one of the chosen epochs (or ``force``).

        Recording the same epoch again replaces its frames. The model's weights are copied
        afresh for every recording, so updates made in any way count (an optimizer step, or a
        hand-written ``p.data -= lr * p.grad``). Leaves the global random state, the model, its
        flags and gradients exactly as they were.

        Returns:
            Whether frames were stored.

        Warns:
            RuntimeWarning: when a recorded layer's activations are not finite (training diverged,
                a NaN weight): that epoch is not stored, and the warning names the cause.

        Raises:
            RuntimeError: after :meth:`close`.
            TypeError: an ``epoch`` that is not an int, a ``force`` that is not a bool.
            ValueError: a negative ``epoch`` (epochs, or steps, count from 0: before training).
        """
        epoch = as_count(epoch, "epoch", minimum=0)
        force = as_flag(force, "force")
        if self.probe.closed:
            raise RuntimeError("this recorder is closed; its frames stay readable with result(), and a new "
                               "FeatureEvolutionRecorder records more")
        if not (force or self.wants(epoch)):
            return False
        # A fresh copy of the weights: a training loop that updates through ``p.data`` (a
        # hand-written SGD step) bumps no version counter, so a check of those would miss it.
        self.probe.refresh()
        devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
        try:
            with torch.random.fork_rng(devices=devices):
                frames = self._compute(epoch)
        except _NotFinite as exc:
            # training diverged: a frame of NaN has no strongest unit to show. Said, not raised,
            # so that the training loop the recorder sits in goes on
            warnings.warn(
                f"epoch {epoch} not recorded: the activations of layer {exc.layer!r} are not finite (NaN or "
                f"infinite) on the recorder's images: {nonfinite_cause(self.probe.model)}",
                RuntimeWarning,
                stacklevel=2,
            )
            return False
        evolution = self.evolution
        if epoch in evolution.epochs:
            for key in frames:
                evolution.frames[key] = [f for f in evolution.frames.get(key, []) if f.epoch != epoch]
        else:
            evolution.epochs.append(epoch)
            evolution.epochs.sort()
        for key, frame in frames.items():
            evolution.frames.setdefault(key, []).append(frame)
            evolution.frames[key].sort(key=lambda f: f.epoch)
        for fn in list(self._callbacks):
            fn(self, epoch)
        return True

    def result(self) -> FeatureEvolution:
        """What has been recorded so far."""
        return self.evolution

    def close(self) -> None:
        """Release the private copy (the recorded frames stay available)."""
        self.probe.close()

    def __enter__(self) -> FeatureEvolutionRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ internals
    def _strongest(self) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Per layer: (values, image, row, col) of the strongest unit of each recorded channel."""
        names = list(self.channels)
        best: dict[str, tuple[torch.Tensor, ...]] = {}
        for start in range(0, self.images.shape[0], self.batch_size):
            batch = self.images[start:start + self.batch_size]
            acts = self.probe.capture(batch, names, cache=False, channels_first=True)
            for name in names:
                available = acts[name].shape[1]
                if max(self.channels[name]) >= available:
                    raise ValueError(
                        f"layer {name!r} now has {available} channels; the recorder follows channels "
                        f"{self.channels[name]} (was the layer replaced?). Make a new recorder for the new model"
                    )
                act = acts[name][:, self.channels[name]].float()
                if not bool(torch.isfinite(act).all()):
                    raise _NotFinite(name)
                if act.dim() == 2:
                    act = act[:, :, None, None]
                n, c, _, width = act.shape
                flat = act.permute(1, 0, 2, 3).reshape(c, -1)
                values, where = flat.max(dim=1)
                units = flat.shape[1] // n
                image, pos = where // units + start, where % units
                row, col = pos // width, pos % width
                found = (values.cpu(), image.cpu(), row.cpu(), col.cpu())
                if name in best:
                    better = found[0] > best[name][0]  # strictly: ties keep the earlier image
                    best[name] = tuple(torch.where(better, new, old) for new, old in zip(found, best[name]))
                else:
                    best[name] = found
        return best  # type: ignore[return-value]

    def _compute(self, epoch: int) -> dict[tuple[str, int], EvolutionFrame]:
        frames: dict[tuple[str, int], EvolutionFrame] = {}
        best = self._strongest()
        size = tuple(self.images.shape[1:])
        for name, channels in self.channels.items():
            values, image, row, col = best[name]
            # the layer as it is now: a replaced module (another kernel size) has another receptive field
            info = self.layer_infos[name] = self.probe.layers[name]
            projected = None
            if self.projector is not None:  # one pass projects every recorded channel of the layer
                sources = self.images[image].to(self.probe.device)
                units = torch.stack([row, col], dim=1)
                chosen = torch.tensor(channels, dtype=torch.long)
                projected = self.projector(self.probe, sources, name, chosen, units).detach().cpu()
            for i, channel in enumerate(channels):
                n, r, c = int(image[i]), int(row[i]), int(col[i])
                box = receptive_field_box(info, r, c, size)
                patch = crop_receptive_field(self.images[n], box)
                projection = None
                if projected is not None:
                    projection = crop_receptive_field(projected[i], box).pixels.numpy().astype(np.float32)
                frames[(name, channel)] = EvolutionFrame(
                    epoch=epoch, layer=name, channel=channel, value=float(values[i]), image_index=n, unit=(r, c),
                    box=box, patch=patch.pixels.numpy().astype(np.float32), projection=projection,
                    valid=patch.valid.numpy(),
                )
        return frames

    def __repr__(self) -> str:
        return f"FeatureEvolutionRecorder(channels={self.channels}, epochs={self.epochs}, recorded={self.evolution.epochs})"

