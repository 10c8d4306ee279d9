"""The explorer's method panel: occlusion maps, saliency, guided backprop, deconvnet, Grad-CAM.

A :class:`MethodRunner` computes the selected method for the explorer's current image and
selections on its own worker thread, with its own :class:`~cnnwidgets.core.probe.Probe` (a
second private copy of the model, made on first use), so a long occlusion scan never holds
up the live feature grid, and gradient methods never touch the copy the grid runs on.

Like the explorer's controller it never queues work: a request that arrives while another
runs replaces any waiting one and cancels a running occlusion scan (the partial map is
dropped); a gradient method that finishes after a newer request arrived is dropped too.
Requests equal, for the method's inputs, to the one computed last are ignored, so moving
the occluder does not recompute a saliency map. Nor is a map computed again for a request that
names the class on screen in another way (None, the most probable class, and that class's
index): the map on screen is shown for it.

Every map is computed with one set of weights. When the user's weights change while a map is
computed (a training step in another cell), the map is dropped, an occlusion scan stops at its
next batch, and the map is computed again with the new weights; when they change during three
attempts in a row, the runner reports it and leaves the map to the next request.

Guided backprop and deconvnet rectify the backward signal only at ``nn.ReLU`` modules; a ReLU
that a model applies as a function keeps the true gradient, and so do other activations (ReLU6,
SiLU, GELU, ...). The runner collects what the rule met during each computation
(:func:`~cnnwidgets.methods.gradients.relu_report`, the counts of the method's own warnings) and
says in the result's :attr:`MethodResult.note` when some ReLUs were functions, or when the model applied no ReLU
at all (the map is then the plain gradient). A deconvnet channel that is not active on the image
(its largest value is <= 0) has nothing to project: its map is zero and the note says why.

The occlusion map (Zeiler & Fergus 2014, section 4.2) is that of the explorer's occluder: its
window is the box's height and width, its fill the box fill, its target the probability of the
target class; it streams, coarse positions first, and the map is redrawn as it fills in
(at most every :data:`REDRAW_SECONDS`, and at once when the coarse preview is complete).
A complete scan keeps the probabilities of every class at every position (see
:meth:`~cnnwidgets.methods.occlusion.OcclusionResult.for_class`), so that the map of another
target class, with the same image, box, stride, fill, device and weights, is looked up, not
scanned again.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

from cnnwidgets.app.inputs import ImageInput
from cnnwidgets.app import worker as _worker
from cnnwidgets.app.worker import NewestFirstWorker
from cnnwidgets.core.probe import Probe
from cnnwidgets.core.targets import ClassProbability, class_scores, nonfinite_cause
from cnnwidgets.methods.gradients import empty_maps_quietly, layers_for, relu_report
from cnnwidgets.methods.occlusion import OcclusionResult, occlusion_map, one_image_quietly
from cnnwidgets.methods.overlays import OVERLAY_INPUTS, OVERLAYS, SIGNED_OVERLAYS, magnitude
from cnnwidgets.render.attribution import attribution_overlay, signed_to_rgb
from cnnwidgets.render.occlusion import occlusion_overlay

__all__ = ["METHODS", "OCCLUSION_SCALE_FLOOR", "SIGNED_METHODS", "MethodRequest", "MethodResult", "MethodRunner",
           "largest_change", "occlusion_scale"]

METHODS: tuple[str, ...] = ("none", "occlusion", *OVERLAYS)
"""Method names of the explorer's method panel; ``"none"`` shows nothing and computes nothing."""

SIGNED_METHODS: tuple[str, ...] = tuple(SIGNED_OVERLAYS)
"""The methods whose maps have a sign, which a request with ``signed`` shows in colour."""

_INPUTS: dict[str, frozenset[str]] = {
    "none": frozenset(),
    "occlusion": frozenset({"target", "window", "stride", "fill"}),
    # a signed map is drawn from the same values as its strength: switching recomputes nothing
    **{name: inputs | {"signed"} if name in SIGNED_OVERLAYS else inputs for name, inputs in OVERLAY_INPUTS.items()},
}

HEAT_CMAP = "inferno"
"""Colormap of the method maps other than occlusion: perceptually even and readable without
telling red from green (weak places are also the most transparent)."""

_RELU_RULE_METHODS = frozenset({"guided backprop", "deconvnet"})
"""Methods whose modified backward rule reaches only ``nn.ReLU`` modules."""


_ATTEMPTS = 3
"""Attempts at a map while the user's weights keep changing under it, before the runner gives up."""


@dataclass(frozen=True)
class MethodRequest:
    """Everything a method map may depend on.

    Attributes:
        method: one of :data:`METHODS`.
        image_id: the explorer's image.
        layer: selected layer (deconvnet, Grad-CAM).
        channel: selected channel (deconvnet).
        target: selected class, or None for the unoccluded image's most probable class.
        window: occluder (height, width) in input pixels, or one side of a square (occlusion).
        stride: occlusion stride in input pixels.
        fill: occluder fill name (occlusion).
        device: compute device.
        signed: draw saliency, guided backprop and deconvnet with their sign, per input channel
            (:func:`~cnnwidgets.render.attribution.signed_to_rgb`: the colours the papers show
            reconstructions in), instead of their strength over the image in gray.
    """

    method: str
    image_id: int
    layer: str
    channel: int
    target: int | None
    window: int | tuple[int, int]
    stride: int
    fill: str
    device: str
    signed: bool = False

    def key(self) -> tuple:
        """The fields this request's method depends on (equal keys give equal maps)."""
        used = _INPUTS[self.method]
        return (self.method, self.image_id, self.device) + tuple(
            (name, getattr(self, name)) for name in ("layer", "channel", "target", "window", "stride", "fill", "signed")
            if name in used
        )


@dataclass
class MethodResult:
    """A computed (or, for occlusion, partially computed) method map.

    Attributes:
        request: what was computed.
        target: the class used (the request's, or the most probable one when it had None); -1
            for methods of a channel, which use no class.
        heat: for gradient methods the (H, W) float32 map (for those with a sign, its strength
            ``max_c |values_c|``); for occlusion the (rows, cols) drop in the target probability
            per position (NaN where not computed yet).
        image: the map as shown, uint8 (H, W, 3): drawn over the input in gray, or, for a
            request with ``signed``, the signed values in colour.
        occlusion: the occlusion result (None for other methods).
        complete: False while an occlusion scan is still streaming.
        seconds: compute time so far.
        note: a remark to show with the map, empty when there is none: for guided backprop and
            deconvnet, how many ReLUs the model applied as functions, which kept the true gradient,
            or that the model applied no ReLU at all (the map is the plain gradient); for deconvnet,
            that the channel is not active on the image (the map is zero); for occlusion, that the
            model takes one image per forward pass (the map ran image by image); for Grad-CAM, that
            the map is zero everywhere.
        values: for saliency, guided backprop and deconvnet, the signed map, float32 (C, H, W)
            with one plane per input channel (see :data:`~cnnwidgets.methods.overlays.SIGNED_OVERLAYS`);
            None for the other methods.
    """

    request: MethodRequest
    target: int
    heat: np.ndarray
    image: np.ndarray
    occlusion: OcclusionResult | None
    complete: bool
    seconds: float
    note: str = ""
    values: np.ndarray | None = None


def _functional_relu_note(calls: int) -> str:
    """The note of a map whose modified ReLU rule missed ``calls`` ReLUs applied as functions."""
    if calls <= 0:
        return ""
    times = "once" if calls == 1 else f"{calls} times"
    return (f"the model applied ReLU as a function {times} (F.relu, torch.relu, Tensor.relu, or a ReLU-like "
            "clamp(min=0), F.relu6, F.hardtanh, F.leaky_relu): those kept the true gradient; use nn.ReLU "
            "modules for the exact method")


def _channel_peak(probe: Probe, x: torch.Tensor, layer: str, channel: int) -> float | None:
    """The largest value of ``channel`` at ``layer`` for the image ``x`` (the probe's cached, prefix-only
    capture); None when the channel is not one a projection accepts (the method raises the error)."""
    activation = probe.capture(x, [layer], channels_first=True)[layer]
    if activation.dim() not in (2, 4) or isinstance(channel, bool) or not 0 <= channel < activation.shape[1]:
        return None
    return float(activation[:, channel].max())


#: The note of a method map that is zero everywhere, per method (None: the input-gradient methods).
_EMPTY_NOTES = {
    "grad-cam": ("the map is zero everywhere: this layer holds no positive evidence for the class "
                 "(an earlier layer or another class may show some)"),
    "grad-cam, zero gradient": ("the map is zero everywhere: the class score's gradient is zero at every unit of "
                                "this layer, so the score does not depend on it here (a classifier head set to "
                                "zero, or every unit after the layer switched off)"),
    "deconvnet": ("the projection is zero at every pixel: the deconvnet's rectified signal from the channel "
                  "reaches no pixel of this image"),
    None: ("the map is zero everywhere: the score does not change with any pixel of this image (a classifier "
           "head set to zero, or every unit on the way switched off)"),
}


def _inactive_channel_note(channel: int, peak: float) -> str:
    """The note of a deconvnet map of a channel whose largest value on the image is ``peak`` <= 0."""
    return (f"channel {channel} is not active on this image (its largest value is {peak:.3g}): "
            "there is nothing to project")


def _require_finite(request: MethodRequest, heat: np.ndarray, model: object = None) -> None:
    """Refuse a map with NaN or infinite values: drawn, it would pass off an empty or saturated
    picture as the method's.

    Raises:
        ValueError: saying which map and the likely cause.
    """
    bad = ~np.isfinite(heat)
    if bad.any():
        what = (f"channel {request.channel} of {request.layer}" if request.method == "deconvnet"
                else "the target class")
        raise ValueError(
            f"the {request.method} map of {what} is not finite (NaN or inf at {int(bad.sum())} of {bad.size} "
            f"pixels): the model's activations or gradients are not finite: {nonfinite_cause(model)}"
        )


def _picture(image: ImageInput, heat: np.ndarray, signed: np.ndarray | None) -> np.ndarray:
    """A gradient method's map as shown: the ``signed`` (C, H, W) values in colour when given,
    else the strength ``heat`` over the image in gray."""
    if signed is not None:
        return signed_to_rgb(signed)
    return attribution_overlay(image.display, heat, alpha=0.65, cmap=HEAT_CMAP, weight_by_value=True,
                               gray_image=True)


REDRAW_SECONDS = 0.25
"""The shortest time between two partial occlusion maps shown while a scan streams (the first
map that covers the whole image coarsely is shown at once). Each costs a drawing and an encode
(about 8 ms at 224 x 224), taken from the scan; the progress bar still moves with every batch."""

OCCLUSION_SCALE_FLOOR = 0.01
"""The smallest change of the target probability the occlusion map draws in full colour: one
percentage point. A map whose largest change is smaller stays pale instead of blowing noise (a
change of 0.0001, say) up to full red and blue."""


def largest_change(drop: np.ndarray) -> float:
    """The largest absolute value of the occlusion map ``drop`` over its computed positions (0 when
    none is computed yet).

    Args:
        drop: the (rows, cols) drop per position, NaN where not computed yet.
    """
    finite = np.abs(drop[np.isfinite(drop)])
    return float(finite.max()) if finite.size else 0.0


def occlusion_scale(drop: np.ndarray) -> float:
    """The change of probability the occlusion map ``drop`` draws in full colour (either sign): its
    :func:`largest_change`, at least :data:`OCCLUSION_SCALE_FLOOR`.

    Args:
        drop: the (rows, cols) drop per position, NaN where not computed yet.
    """
    return max(largest_change(drop), OCCLUSION_SCALE_FLOOR)


def _drawn_occlusion(
    request: MethodRequest, image: ImageInput, target: int, occlusion: OcclusionResult, start: float
) -> MethodResult:
    """The occlusion map ``occlusion`` (complete or partial) of class ``target`` as the panel shows it:
    the drop of the probability per position over the image in gray, full colour at
    :func:`occlusion_scale`; ``start`` is when the request was taken (for :attr:`MethodResult.seconds`)."""
    drop = occlusion.drop
    scale = occlusion_scale(drop)
    picture = occlusion_overlay(drop, image.display, window=occlusion.window, stride=occlusion.stride,
                                center=0.0, vmin=-scale, vmax=scale, alpha=0.6, filled=occlusion.filled,
                                gray_image=True)
    note = ("the model takes one image per forward pass (a batch of several failed), so this map runs image "
            "by image, which is slower") if occlusion.one_image else ""
    return MethodResult(request, target, drop, picture, occlusion, occlusion.complete, time.perf_counter() - start,
                        note)


class MethodRunner(NewestFirstWorker):
    """Computes method maps for the explorer's method panel, newest request first.

    Args:
        model: the user's model (a private copy is made on first use; the model is never changed).
        images: ``image_id -> ImageInput`` lookup.
        on_result: called with every result to show (partial occlusion maps included), on the
            worker thread.
        on_error: called with ``(where, exception)`` when a method fails, or when the user's
            weights changed during three attempts at a map in a row.
        on_progress: called with ``(done, total)`` positions while an occlusion map streams.
        background: compute on a worker thread (True) or inside :meth:`submit` (False).
        outputs: how the model's outputs become the probabilities an occlusion map shows (see
            :func:`~cnnwidgets.core.targets.class_probabilities`).
    """

    def __init__(
        self,
        model: nn.Module,
        images: Callable[[int], ImageInput],
        on_result: Callable[[MethodResult], None],
        on_error: Callable[[str, BaseException], None],
        on_progress: Callable[[int, int], None] | None = None,
        *,
        background: bool = True,
        outputs: str = "auto",
    ) -> None:
        self._model = model
        self._outputs = outputs
        self._images = images
        self._on_result = on_result
        self._on_error = on_error
        self._on_progress = on_progress or (lambda done, total: None)
        self._background = background
        self._probe: Probe | None = None
        self._done_key: tuple | None = None
        self._done_version: int | None = None  # the probe's version the shown map was computed with
        self._running_key: tuple | None = None
        self._running: MethodRequest | None = None  # the request being computed ...
        self._running_target: int | None = None  # ... the class it resolved to (None: not yet, or none)
        self._renamed: MethodRequest | None = None  # a request naming that class another way, asked since
        self._top: dict[tuple, int] = {}
        # the last complete occlusion scan that kept every class's probabilities: (its request's key
        # without the target, the probe's version it was computed with, the scan)
        self._scan: tuple[tuple, int, OcclusionResult] | None = None
        self.result: MethodResult | None = None
        self.runs = 0
        self.reused = 0  # occlusion maps of another target class looked up in a kept scan
        self.cancelled = 0
        self.model_changes = 0  # maps dropped because the user's weights changed while they were computed
        super().__init__("cnnwidgets-methods", background, start=False)

    # ------------------------------------------------------------------ submitting
    def submit(self, request: MethodRequest) -> None:
        """Ask for ``request`` (cheap: the work happens on the worker thread)."""
        if request.method not in _INPUTS:
            raise ValueError(f"unknown method {request.method!r}; accepted: {', '.join(METHODS)}")
        with self._cond:
            if self._closed or self._is_current(request):
                return  # that map is being computed or on screen already, with the model's weights
            if request.method == "none" and self._thread is None and self._pending is None and not self._busy:
                # nothing runs or waits: no map needs no worker (its thread starts with the first method)
                self.result, self._done_key, self._done_version = None, request.key(), None
                return
            self._replace(request)
        self._kick()

    def is_current(self, request: MethodRequest) -> bool:
        """Whether :meth:`submit` would ignore ``request``: its map is on screen or being computed."""
        with self._cond:
            return self._is_current(request)

    def _is_current(self, request: MethodRequest) -> bool:
        if self._pending is not None:
            return False
        if self._busy and self._running is not None:
            # weights that change while it runs make the runner compute it again by itself
            if request.key() == self._running_key:
                self._renamed = None  # asked for under its first name again: its maps go by that
                same = True
            else:
                same = self._names_running_class(request)
        else:
            same = request.key() == self._done_key and self._done_version in (None, self._probe_version())
        return same and not self._model_changed()

    def _names_running_class(self, request: MethodRequest) -> bool:
        """Whether ``request`` differs from the one being computed only in naming its class
        another way (None for the most probable class, or that class's index). If so, the work
        in progress is kept and its maps are shown as ``request``'s (called with the lock held)."""
        running, target = self._running, self._running_target
        if (running is None or target is None or "target" not in _INPUTS[request.method]
                or replace(request, target=running.target).key() != running.key()):
            return False
        wanted = request.target
        if wanted is None:
            wanted = self._top.get((request.image_id, request.device, self._probe_version()))
        if wanted != target:
            return False
        self._renamed = request
        return True

    def _as_asked(self, request: MethodRequest) -> MethodRequest:
        """``request``, or the request naming its class another way that was asked for since."""
        with self._cond:
            renamed = self._renamed
        return renamed if renamed is not None and request is self._running else request

    def _probe_version(self) -> int | None:
        return None if self._probe is None else self._probe.version

    def _weights_changed(self, version: int) -> bool:
        """Whether the weights differ from those of ``version``: the probe took others since, or
        the user's model changed and the probe has not looked yet."""
        return self._probe_version() != version or self._model_changed()

    def _model_changed(self) -> bool:
        """Whether the user's weights changed since this runner's probe last looked."""
        probe = self._probe
        if probe is None:
            return False
        try:
            return probe.user_model_changed()
        except RuntimeError:  # closed
            return False

    @property
    def probe(self) -> Probe | None:
        """The runner's private probe (None until a method ran)."""
        return self._probe

    def close(self, timeout: float | None = None) -> bool:
        """Cancel running work, stop the worker and close the private probe.

        Returns True when the probe was closed now; False when the work in progress had not
        returned after ``timeout`` seconds (None: :data:`~cnnwidgets.app.worker.CLOSE_WAIT`): the
        worker thread closes it once it does.
        """

        def release() -> None:
            self._scan = None
            self.result = None
            self._model = None  # a closed runner keeps no reference to the user's model
            if self._probe is not None:
                self._probe.close()
                self._probe = None

        return self._stop_and_release(_worker.CLOSE_WAIT if timeout is None else timeout, release)

    # ------------------------------------------------------------------ the worker
    def _taken(self, item: MethodRequest) -> None:
        self._running_key = item.key()
        self._running, self._running_target, self._renamed = item, None, None

    def _went_idle(self) -> None:
        self._running_key = None
        self._running = self._running_target = self._renamed = None

    def _serve(self, request: MethodRequest, generation: int) -> None:
        if request.method == "none":
            self.result = None
            self._done_key = request.key()
            self._done_version = None
            return
        try:
            for _ in range(_ATTEMPTS):
                result, version = self._compute(request, generation)
                if self._superseded(generation):
                    self.cancelled += 1
                    return
                if result is not None and not self._weights_changed(version):
                    with self._cond:
                        asked = self._as_asked(request)
                        if asked is not request:  # asked for again under another name meanwhile
                            result = replace(result, request=asked)
                        self.result = result
                        self._done_key = asked.key()
                        self._done_version = version
                        # the map is done: a request from now on is compared with it (_is_current), not
                        # renamed into the work in progress after its name was read above
                        self._running_key = None
                        self._running = self._running_target = self._renamed = None
                    self._keep_scan(request, result, version)
                    self._on_result(result)
                    return
                # the weights changed while the map was computed: it mixes two sets of weights
                self.model_changes += 1
            self._done_key = None  # the next request for this map computes it
            self.result = None  # a partial map with mixed weights is no map of this request
            self._on_error(f"method {request.method!r}", RuntimeError(
                f"the model's weights changed while the map was computed, {_ATTEMPTS} times in a row "
                "(is it training?); the next change in the explorer computes it again"
            ))
        except BaseException as exc:  # noqa: BLE001 - shown in the explorer's status line
            # a KeyboardInterrupt on the worker thread comes from the user's model: a failure like
            # any other; on the caller's thread (synchronous) it is the user interrupting
            interrupted = self._propagates(exc)
            if self._superseded(generation):
                # a newer request is on its way (its map replaces this one's): an error of work
                # nobody waits for any more would clear the panel for nothing
                self.cancelled += 1
            else:
                # do not retry the same failing request; an interrupted one was never computed,
                # and the next request for it computes it
                self._done_key = None if interrupted else request.key()
                self._done_version = self._probe_version()
                self.result = None  # the map of an earlier request is not this one's
                self._on_error(f"method {request.method!r}", exc)
            if interrupted:
                raise

    def _compute(self, request: MethodRequest, generation: int) -> tuple[MethodResult | None, int]:
        """One attempt at ``request``'s map, and the probe's version it was computed with.

        The map is None when the request was superseded (or the runner closes) or the user's
        weights changed before it was done; either is checked before every expensive step.
        """
        start = time.perf_counter()
        image = self._images(request.image_id)
        probe = self._probe_on(request.device, tuple(image.tensor.shape[1:]))
        probe.sync()  # the user's weights may have changed since the last map
        version = probe.version

        def stop() -> bool:
            return self._superseded(generation) or self._weights_changed(version)

        if stop():
            return None, version
        redrawn = self._redrawn(request, image, version, start)
        if redrawn is not None:
            return redrawn, version
        x = image.tensor
        if "target" not in _INPUTS[request.method]:
            target = -1  # a channel's map (deconvnet): no class involved
        elif request.target is not None:
            target = request.target
        else:
            target = self._top_class(probe, request, x)
            if stop():
                return None, version
        with self._cond:
            self._running_target = target
        reused = self._retargeted(request, target, version, start)
        if reused is None and request.method == "occlusion":
            reused = self._looked_up(request, image, target, version, start)
        if reused is not None:
            if reused.occlusion is not None:
                self._on_progress(reused.occlusion.done, reused.occlusion.total)
            return reused, version
        self.runs += 1
        if request.method == "occlusion":
            return self._occlusion(probe, request, image, target, stop, start), version
        note = ""
        peak = None
        values = None
        left_out: list[Warning] = []
        fn = SIGNED_OVERLAYS.get(request.method) or OVERLAYS[request.method]
        if request.method == "deconvnet":
            layers_for(probe, x)  # the layer table at the image's size, before the channel is read
            peak = _channel_peak(probe, x, request.layer, request.channel)
        if peak is not None and peak <= 0:
            # project_channel would give a zero map (and warn): nothing to compute
            values = np.zeros(tuple(x.shape[1:]), dtype=np.float32)
            note = _inactive_channel_note(request.channel, peak)
        else:
            # a map that is zero everywhere is said in its note instead of a warning from this thread
            with empty_maps_quietly() as left_out:
                if request.method in _RELU_RULE_METHODS:
                    with relu_report() as relus:  # what the rule met, as the method's own warnings count it
                        values = fn(probe, x, layer=request.layer, channel=request.channel, target=target)
                    # no ReLU module ran (the result is the plain gradient) says the most; then the ReLUs
                    # applied as functions; then the other activation modules the rule left alone
                    note = "; ".join(part for part in (relus.no_relu or _functional_relu_note(relus.functional),
                                                       relus.mixed) if part)
                elif request.method in SIGNED_OVERLAYS:
                    values = fn(probe, x, layer=request.layer, channel=request.channel, target=target)
                else:
                    heat = fn(probe, x, layer=request.layer, channel=request.channel, target=target)
        if values is not None:
            heat = magnitude(values)
        _require_finite(request, heat, probe.model)
        if not (peak is not None and peak <= 0) and not bool((heat > 0).any()):
            key = request.method
            if key == "grad-cam" and any(getattr(w, "zero_gradient", False) for w in left_out):
                key = "grad-cam, zero gradient"
            note = "; ".join(part for part in (_EMPTY_NOTES.get(key, _EMPTY_NOTES[None]), note) if part)
        picture = _picture(image, heat, values if request.signed else None)
        return MethodResult(request, target, heat, picture, None, True, time.perf_counter() - start, note,
                            values), version

    def _redrawn(self, request: MethodRequest, image: ImageInput, version: int, start: float) -> MethodResult | None:
        """The map on screen drawn the other way (signed or as strength), when ``request`` differs
        from its request only in that and the weights are the same; None otherwise."""
        shown = self.result
        if (shown is None or shown.values is None or self._done_version != version
                or replace(request, signed=shown.request.signed).key() != shown.request.key()):
            return None
        picture = _picture(image, shown.heat, shown.values if request.signed else None)
        return replace(shown, request=request, image=picture, seconds=time.perf_counter() - start)

    def _retargeted(self, request: MethodRequest, target: int, version: int, start: float) -> MethodResult | None:
        """The complete map on screen for ``request``, when their requests differ only in the target and
        both name the class ``target`` (one as None, the most probable class, the other by index),
        and the weights are the same; None otherwise."""
        shown = self.result
        if (shown is None or not shown.complete or shown.target != target or self._done_version != version
                or "target" not in _INPUTS[request.method]
                or replace(request, target=shown.request.target).key() != shown.request.key()):
            return None
        return replace(shown, request=request, seconds=time.perf_counter() - start)

    def _keep_scan(self, request: MethodRequest, result: MethodResult, version: int) -> None:
        """Keep ``result``'s occlusion scan, computed with the probe's ``version``, for the maps of
        other target classes, when it is complete and kept every class's probabilities."""
        scan = result.occlusion
        if scan is not None and scan.complete and scan.unoccluded_probabilities is not None:
            self._scan = (replace(request, target=None).key(), version, scan)

    def _looked_up(
        self, request: MethodRequest, image: ImageInput, target: int, version: int, start: float
    ) -> MethodResult | None:
        """The occlusion map of class ``target`` from the kept scan, when ``request`` differs from
        the scan's request only in the target and the weights are the same; None otherwise, also for
        a class index out of range (a scan then raises the error that names it)."""
        if self._scan is None:
            return None
        key, kept_version, scan = self._scan
        classes = scan.unoccluded_probabilities.shape[0]
        if key != replace(request, target=None).key() or kept_version != version or not 0 <= target < classes:
            return None
        self.reused += 1
        return _drawn_occlusion(request, image, target, scan.for_class(target), start)

    def _probe_on(self, device: str, input_size: tuple[int, ...]) -> Probe:
        # layers are described at the image's size: a model with a fixed-size classifier head
        # (TinyVGG's Linear(1690, 10)) cannot run at any other
        if self._probe is None:
            self._probe = Probe(self._model, device=device, input_size=input_size)
        else:
            if str(self._probe.device) != device:
                self._probe.to(device)
                self._top.clear()
            if self._probe.input_size != input_size:
                self._probe.describe(input_size)
        return self._probe

    def _top_class(self, probe: Probe, request: MethodRequest, x: torch.Tensor) -> int:
        key = (request.image_id, request.device, probe.version)
        top = self._top.get(key)
        if top is None:
            if len(self._top) > 64:
                self._top.clear()
            top = int(class_scores(probe.logits(x))[0].argmax())
            # kept under the version of the weights it was computed with (the forward may re-sync)
            self._top[(request.image_id, request.device, probe.version)] = top
        return top

    def _occlusion(
        self, probe: Probe, request: MethodRequest, image: ImageInput, target: int, stop: Callable[[], bool],
        start: float,
    ) -> MethodResult | None:
        """The occlusion map, streamed; None when ``stop()`` turned True (checked before every
        batch, and before a partial map is shown)."""
        h, w = image.size
        wh, ww = (request.window, request.window) if isinstance(request.window, int) else request.window
        window = (max(1, min(int(wh), h)), max(1, min(int(ww), w)))
        # a stride beyond the image's longer side gives the one position that side does (the
        # stride may be any positive int: 2**62 would overflow the drawing's integer arithmetic)
        stride = max(1, min(request.stride, max(h, w)))

        last_drawn = -math.inf  # when a partial map was last drawn
        preview_drawn = False

        def streamed(partial: OcclusionResult) -> None:
            nonlocal last_drawn, preview_drawn
            if stop():
                return  # superseded, closing, or computed with weights that changed meanwhile
            self._on_progress(partial.done, partial.total)
            if partial.complete:
                return  # drawn once the scan returns
            now = time.perf_counter()
            first_preview = partial.preview_ready and not preview_drawn
            if not first_preview and now - last_drawn < REDRAW_SECONDS:
                return  # drawing every batch would take CPU from the scan for pictures nobody can follow
            last_drawn, preview_drawn = now, preview_drawn or partial.preview_ready
            self.result = _drawn_occlusion(self._as_asked(request), image, target, partial, start)
            self._on_result(self.result)

        # every class's probabilities are kept, for the maps of other target classes (_looked_up)
        # the map's note says it instead of a warning from this thread (a scan image by image; and its
        # caption, a map that no place changes)
        with one_image_quietly(), empty_maps_quietly():
            result = occlusion_map(probe, image.tensor, ClassProbability(target, outputs=self._outputs),
                                   window=window, stride=stride, fill=image.fill_tensor(request.fill), progress=False,
                                   callback=streamed, cancel=stop, keep_class_probabilities=True)
        if result.cancelled:
            return None
        return _drawn_occlusion(request, image, target, result, start)
