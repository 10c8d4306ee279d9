"""The explorer's controller: owns the Probe and one worker thread, and never queues work.

Every user action only records the newest :class:`~cnnwidgets.app.state.ExplorerState` and
wakes the worker; states that arrive while the worker is busy overwrite each other
(``stats["skipped"]``), so a burst of mouse moves costs at most the frame in progress plus
one for the newest position - the last position is always the one computed last.

Each state carries a generation number. A finished frame is shown when it is still the
newest, or when the newer state differs only in the occluder box (a live preview while
dragging: showing it is better than showing nothing). Otherwise - the user picked another
layer, image or device meanwhile - the frame is stale and dropped (``stats["dropped"]``).

Stages (see :func:`~cnnwidgets.app.state.resolve`): a change of the compute request runs a
forward pass (prefix to the layer, the full model only when scores are shown) and renders;
a change of the render request renders only.

Errors in either stage are reported through ``on_error`` and leave the last good frame on
screen; the worker keeps running.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from cnnwidgets.app.frames import Baseline, Computed, Frame, LayerGeometry, LayoutCache, render_frame
from cnnwidgets.app.inputs import ImageInput
from cnnwidgets.app.state import ComputeRequest, ExplorerState, Request, resolve
from cnnwidgets.app import worker as _worker
from cnnwidgets.app.worker import NewestFirstWorker
from cnnwidgets.core.device import resolve_device, synchronize
from cnnwidgets.core.probe import Probe
from cnnwidgets.core.targets import OutputTypeError, class_probabilities, looks_like_independent_probabilities
from cnnwidgets.methods.dead import zeroed_by_relu

__all__ = ["Controller", "Stats"]


@dataclass
class Stats:
    """Work counters (tests and benchmarks read them).

    Attributes:
        requests: states submitted.
        computes: compute stages run (each is one forward pass, or a cache hit in the probe).
        renders: render stages run.
        skipped: states overwritten by a newer one before the worker took them.
        dropped: finished frames not shown because the user had moved on to another layer/image.
        errors: stages that raised.
        model_changes: times the user's weights had changed, so earlier maps were recomputed.
    """

    requests: int = 0
    computes: int = 0
    renders: int = 0
    skipped: int = 0
    dropped: int = 0
    errors: int = 0
    model_changes: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counters as a plain ``{name: count}`` dict."""
        return dict(self.__dict__)


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    # one copy into (C, H, W) order (the probe may run channels-last); every later pass is then contiguous
    return np.ascontiguousarray(t.detach().to("cpu", torch.float32).numpy())


class Controller(NewestFirstWorker):
    """Turns states into frames on a worker thread (or synchronously, for tests).

    Args:
        probe: the probe to compute with (the controller closes it in :meth:`close`).
        images: ``image_id -> ImageInput`` lookup (the explorer owns the images).
        geometry: ``layer -> LayerGeometry`` lookup.
        labels: class names.
        on_frame: called with ``(state, frame)`` for every frame to show (on the worker thread).
        on_error: called with ``(where, exception)`` when a stage fails.
        background: run on a worker thread (True) or inside :meth:`submit` (False).
        top_k: classes listed.
        marks: ``layer -> bool (C,)`` channels to mark in the grid besides those dead on the
            image (None: none); call :meth:`redraw` after it changes.
        outputs: how the model's outputs become the probabilities shown: ``"auto"``,
            ``"logits"``, ``"multilabel_logits"`` or ``"probabilities"`` (see
            :func:`~cnnwidgets.core.targets.class_probabilities`).
    """

    def __init__(
        self,
        probe: Probe,
        images: Callable[[int], ImageInput],
        geometry: Callable[[str], LayerGeometry],
        labels: Sequence[str],
        on_frame: Callable[[ExplorerState, Frame], None],
        on_error: Callable[[str, BaseException], None],
        *,
        background: bool = True,
        top_k: int = 5,
        marks: Callable[[str], np.ndarray | None] | None = None,
        outputs: str = "auto",
    ) -> None:
        self.probe = probe
        self.outputs = outputs
        self._marks = marks or (lambda layer: None)
        self._images = images
        self._geometry = geometry
        self._labels = list(labels)
        self._on_frame = on_frame
        self._on_error = on_error
        self.top_k = top_k
        self.stats = Stats()
        #: why the last computation could not show class scores (the model's output is not
        #: (N, classes)), or None
        self.scores_problem: str | None = None
        #: a remark on how the scores were read (outputs that look like independent
        #: probabilities, read as logits), or None
        self.scores_note: str | None = None
        self._layouts = LayoutCache()
        self._baselines: OrderedDict[tuple, Baseline] = OrderedDict()
        self._model_version = probe.version
        self._computed: Computed | None = None
        self._failed: ComputeRequest | None = None
        self._failure: BaseException | None = None  # why _failed failed
        self.shown: tuple[ExplorerState, Frame] | None = None
        self._shown_request: Request | None = None
        self._redraws = 0  # grows with every redraw(): a frame drawn before one is not current
        self._error_shown = False  # the last thing reported was an error, not a frame
        super().__init__("cnnwidgets-explorer", background)

    # ------------------------------------------------------------------ submitting
    def submit(self, state: ExplorerState) -> None:
        """Record ``state`` as the newest and wake the worker (cheap; never blocks on compute)."""
        with self._cond:
            if self._closed:
                return
            self.stats.requests += 1
            if self._replace(state):
                self.stats.skipped += 1
        self._kick()

    def set_labels(self, labels: Sequence[str]) -> None:
        """Name the classes ``labels`` from the next frame on (the model's outputs changed);
        call :meth:`redraw` to draw the frame on screen again with them."""
        self._labels = list(labels)

    def redraw(self) -> None:
        """Forget what is on screen, so the next submitted state is drawn even if unchanged."""
        with self._cond:
            self._shown_request = None
            self._redraws += 1

    def close(self, timeout: float | None = None) -> bool:
        """Stop the worker and close the probe (its private model copy and hooks).

        Args:
            timeout: seconds to wait for the worker thread to finish the work in progress
                (None: :data:`~cnnwidgets.app.worker.CLOSE_WAIT`).

        Returns:
            True when everything was freed now; False when a forward pass was still running
            after ``timeout``: the worker thread closes the probe once it returns.
        """

        def release() -> None:
            self.probe.close()
            self._baselines.clear()
            self._computed = None
            self.shown = None

        return self._stop_and_release(_worker.CLOSE_WAIT if timeout is None else timeout, release)

    # ------------------------------------------------------------------ the worker
    def _stale(self, request: Request, generation: int) -> bool:
        """A finished frame is stale when the newer state changes more than the box."""
        return self._needs_other_maps(request.compute, generation)

    def _needs_other_maps(self, mine: ComputeRequest, generation: int) -> bool:
        """Whether the state submitted after ``generation`` needs the maps of another image, layer,
        device or class-score setting than ``mine`` (a new box alone does not count)."""
        newer = self._newer(generation)
        if newer is None:
            return False
        upcoming = resolve(newer).compute
        return (upcoming.image_id, upcoming.layer, upcoming.device, upcoming.scores) != (
            mine.image_id,
            mine.layer,
            mine.device,
            mine.scores,
        )

    def _serve(self, state: ExplorerState, generation: int) -> None:
        try:
            # one check of the user's model for changes per frame (not one per forward pass)
            with self.probe.synced():
                self._draw(state, generation)
        except BaseException as exc:  # noqa: BLE001 - the last line of defence of the worker
            # a KeyboardInterrupt raised by the model on the worker thread is that frame's
            # failure: reported, and the next state is served; on the caller's thread it is the
            # user interrupting, and goes on to the caller (the status line still says why the
            # frame is missing)
            self.stats.errors += 1
            try:
                self._report("explorer", exc)
            except Exception:  # noqa: BLE001
                pass
            if self._propagates(exc):
                raise

    def _draw(self, state: ExplorerState, generation: int) -> None:
        request = resolve(state)
        redraws = self._redraws
        if request == self._shown_request:
            if not (self._error_shown and self.shown is not None):
                if self.shown is not None and self.shown[0] != state:
                    # a change the frame does not show (the fill with no occluder, the target with
                    # no scores): the frame on screen is this state's too, and is shown as such
                    self.shown = (state, self.shown[1])
                    self._on_frame(state, self.shown[1])
                return
            self._follow_model()
            if self._computed is not None and self._computed.key == request.compute:
                # back at the frame on screen after an error, with the weights it was drawn
                # with: all is well again
                self._error_shown = False
                self._on_frame(state, self.shown[1])
                return
            # the model changed since that frame was drawn: compute it again below
        self._follow_model()
        computed = self._computed
        if computed is None or computed.key != request.compute:
            if request.compute == self._failed:
                # the same request failed already: not computed again, but said again (the user
                # came back to it after another view, which replaced the error on screen), which
                # also tells the explorer that no frame is coming (it faded the grid for one)
                if self._failure is not None:
                    self._report("model", self._failure)
                return
            try:
                # while dragging, each occluded input is used once: the probe need not cache it
                computed = self._compute(request.compute, once=request.render.draft, generation=generation)
            except Exception as exc:  # noqa: BLE001 - reported, the worker lives on
                self._failed, self._failure = request.compute, exc
                self.stats.errors += 1
                if self._superseded(generation):
                    self.stats.dropped += 1  # the newer state is served next, and reports its own errors
                    return
                self._report("model", exc)
                return
            if computed is None:  # given up after the unoccluded pass: nobody will see this frame
                self.stats.dropped += 1
                return
            self._failed = None
            self._computed = computed
            if self._stale(request, generation):
                self.stats.dropped += 1
                return
        newer = self._newer(generation)
        if newer is not None and resolve(newer).compute == request.compute:
            return  # the next state reuses these activations; drawing this one is wasted
        try:
            image = self._images(request.compute.image_id)
            frame = render_frame(
                request.render,
                computed,
                # the input the maps are of, occluded, in gray under a channel drawn over it
                image.occluded_display(state.box, state.fill, gray=request.render.overlay),
                state.box,
                geometry=self._geometry(request.compute.layer),
                labels=self._labels,
                top_k=self.top_k,
                layouts=self._layouts,
                marked=self._marks(request.compute.layer),
            )
        except Exception as exc:  # noqa: BLE001
            self.stats.errors += 1
            if self._superseded(generation):
                self.stats.dropped += 1
                return
            self._report("render", exc)
            return
        self.stats.renders += 1
        if self._stale(request, generation):
            self.stats.dropped += 1
            return
        self.shown = (state, frame)
        with self._cond:
            # a redraw() asked for while this frame was drawn (new marks) is still to come
            self._shown_request = request if self._redraws == redraws else None
        self._error_shown = False
        try:
            self._on_frame(state, frame)
        except Exception as exc:  # noqa: BLE001
            self.stats.errors += 1
            self._report("display", exc)

    def _report(self, where: str, exc: BaseException) -> None:
        self._error_shown = True
        self._on_error(where, exc)

    # ------------------------------------------------------------------ compute stage
    def _forward(
        self, x: torch.Tensor, layer: str, scores: bool, *, once: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The layer's activation (channels first), and the logits when ``scores`` - in ONE forward pass.

        Without scores this is ``probe.capture`` (prefix only), with scores
        ``probe.capture_with_logits``; ``once`` marks an input that is seen once (an occluded copy
        while dragging), which the probe's cache neither looks up nor keeps. A model whose output
        is not class scores still has its maps shown (:attr:`scores_problem` says why no scores).
        """
        if scores:
            try:
                acts, logits = self.probe.capture_with_logits(x, [layer], cache=not once, channels_first=True)
                return acts[layer], logits
            except OutputTypeError as exc:
                self.scores_problem = str(exc)
        return self.probe.capture(x, [layer], cache=not once, channels_first=True)[layer], None

    def _probs(self, logits: torch.Tensor | None) -> np.ndarray | None:
        """Class probabilities of the first image; None (and :attr:`scores_problem` says why)
        when the model's output is not class scores: the feature maps are still shown."""
        if logits is None:
            return None
        final = self.probe.output_activation
        try:
            probs = _to_numpy(class_probabilities(logits, "class scores", outputs=self.outputs,
                                                  final_activation=final)[0])
        except ValueError as exc:
            self.scores_problem = str(exc)
            return None
        self.scores_problem = None
        # outputs in [0, 1] that are not distributions, and spread as confident labels are (small
        # logits of an untrained model also lie in [0, 1], but close together)
        guessed = self.outputs == "auto" and final is None
        self.scores_note = (
            "the model's outputs lie in [0, 1] without summing to 1, as a final sigmoid's do, but are "
            "read as logits (softmax); for a multi-label model pass outputs='probabilities'"
            if guessed and looks_like_independent_probabilities(logits) and float(logits.max() - logits.min()) > 0.5
            else None
        )
        return probs

    def baseline(self, state: ExplorerState) -> Baseline:
        """The unoccluded image's activations at ``state``'s layer, computed now on the calling
        thread and kept for the frames of that layer. Only while no frame is being computed (the
        explorer asks before its first frame)."""
        req = resolve(state).compute
        with self.probe.synced():
            self._follow_model()
            return self._baseline(req, self._images(req.image_id))

    def _baseline(self, req: ComputeRequest, image: ImageInput) -> Baseline:
        key = (req.image_id, req.layer, req.device, req.scores)
        base = self._baselines.get(key)
        if base is not None:
            self._baselines.move_to_end(key)
            return base
        act, logits = self._forward(image.tensor, req.layer, req.scores)
        probs = self._probs(logits)
        base = Baseline(acts=_to_numpy(act[0]), probs=probs, relu_follows=zeroed_by_relu(self.probe, req.layer))
        self._baselines[key] = base
        while len(self._baselines) > 16:
            self._baselines.popitem(last=False)
        return base

    def _follow_model(self) -> None:
        """Forget what was computed with older weights once the user's model changed (a
        training step while the explorer is open): unoccluded baselines and the last maps."""
        self.probe.sync()
        if self.probe.version != self._model_version:
            self._model_version = self.probe.version
            self._baselines.clear()
            self._computed = None
            self._failed = None  # a request that failed may work with the new weights
            self.stats.model_changes += 1

    def _compute(self, req: ComputeRequest, *, once: bool = False, generation: int | None = None) -> Computed | None:
        """The maps (and scores) of ``req``: the unoccluded image's (kept as its baseline), and the
        occluded one's when a box is set. With the ``generation`` of the state served, None when,
        once the baseline is there, the worker is closed or a newer state needs other maps: the
        occluded pass would be wasted (a slow model's close or layer switch waits for one pass, not two)."""
        start = time.perf_counter()
        if self.probe.device != resolve_device(req.device):
            self.probe.to(req.device)
            self._baselines.clear()
        image = self._images(req.image_id)
        self.stats.computes += 1
        base = self._baseline(req, image)
        if base.acts.ndim != 3:
            raise ValueError(
                f"layer {req.layer!r} outputs shape {base.acts.shape} per image; the feature grid needs (C, H, W) maps"
            )
        if req.box is None:
            return Computed(req, base.acts, base, base.probs, time.perf_counter() - start)
        if generation is not None and (self._closed or self._needs_other_maps(req, generation)):
            return None
        act, logits = self._forward(image.occluded(req.box, req.fill), req.layer, req.scores, once=once)
        probs = self._probs(logits)
        # the forward's time is the GPU's work, not its launch (the status line and the slow-model note read it)
        synchronize(self.probe.device)
        one = act[0]
        if one.shape != base.acts.shape:
            raise ValueError(f"layer {req.layer!r} changed its output shape from {base.acts.shape} to {tuple(one.shape)}")

        def strided(step: int, channel: int) -> tuple[np.ndarray, np.ndarray]:
            # small copies of just what a draft draws (the whole stack may be channels-last)
            return _to_numpy(one[:, ::step, ::step]), _to_numpy(one[channel])

        return Computed(req, lambda: _to_numpy(one), base, probs, time.perf_counter() - start, strided=strided)
