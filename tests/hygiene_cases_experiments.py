"""Hygiene entry points of the experiments across images and training (top-k patches, feature
evolution, invariance, correspondence) and their views.

Collected by tests/test_hygiene.py: each function gets the user's model (training mode, a user
hook, in-place ReLUs, existing gradients) and x of shape (2, 3, 16, 16).
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

from cnnwidgets import Probe
from cnnwidgets.app.experiments import correspondence_view, evolution_view, invariance_view, topk_view
from cnnwidgets.methods.correspondence import correspondence
from cnnwidgets.methods.evolution import FeatureEvolutionRecorder
from cnnwidgets.methods.gradients import InactiveChannelWarning
from cnnwidgets.methods.invariance import invariance_curves
from cnnwidgets.methods.topk import scan_topk

_SMALL = {"translation": [0, 3], "rotation": [0, 90], "scale": [1.0, 1.5]}


def _topk(model, x):
    topk = scan_topk(model, [x, x.flip(3)], ["relu1", "conv2", "head"], k=2, progress=False)
    topk.patches("conv2", 1)
    topk.projections(model, "relu1", 0)
    with Probe(model) as probe, warnings.catch_warnings():
        # the head's logits may be negative on these random inputs: the warning says so, and
        # what is checked here is that the model comes out unchanged
        warnings.simplefilter("ignore", InactiveChannelWarning)
        topk.projections(probe, "head", 3)


def _topk_checkpoint_and_view(model, x):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "scan.pt"
        scan_topk(model, x, ["relu2"], k=2, stop_after=1, checkpoint=path, progress=False)
        topk = scan_topk(model, x, ["relu2"], k=2, checkpoint=path, progress=False)
    view = topk_view(topk, model)
    view.channel = 3
    view.controller.close()


def _recorder(model, x):
    with FeatureEvolutionRecorder(model, x, {"relu1": 2, "relu2": [1], "head": [0]}, epochs=None) as recorder:
        view = evolution_view(recorder)
        recorder.record(1)
        recorder.record(2)
        view.epoch = 1


def _invariance(model, x):
    result = invariance_curves(model, x, transforms=_SMALL, progress=False)
    view = invariance_view(result, x)
    view.transform = "scale"
    view.step = 1


def _correspondence(model, x):
    parts = {"corner": [(0, 0, 4, 4), (1, 1, 5, 5)], "middle": [(6, 6, 10, 10)] * 2}
    result = correspondence(model, x, parts, ["relu1", "relu2"], random_trials=2)
    view = correspondence_view(result, x, parts)
    view.part = "corner"
    view.occluded = True


def _topk_bad_layer(model, x):
    scan_topk(model, x, ["relu3"], progress=False)


def _topk_data_fails(model, x):
    def batches():
        yield x
        raise RuntimeError("the data loader failed")

    with tempfile.TemporaryDirectory() as folder:
        scan_topk(model, batches(), ["relu1"], checkpoint=Path(folder) / "scan.pt", progress=False)


def _recorder_bad_channel(model, x):
    FeatureEvolutionRecorder(model, x, {"relu2": [99]})


def _invariance_bad_label(model, x):
    invariance_curves(model, x, [0, 9], transforms=_SMALL, progress=False)


def _correspondence_bad_box(model, x):
    correspondence(model, x, {"part": [(0, 0, 4, 4), (14, 14, 18, 18)]})


ENTRY_POINTS = {
    "topk": _topk,
    "topk_checkpoint_and_view": _topk_checkpoint_and_view,
    "recorder": _recorder,
    "invariance": _invariance,
    "correspondence": _correspondence,
}

RAISING = {
    "topk_bad_layer": (_topk_bad_layer, KeyError),
    "topk_data_fails": (_topk_data_fails, RuntimeError),
    "recorder_bad_channel": (_recorder_bad_channel, IndexError),
    "invariance_bad_label": (_invariance_bad_label, IndexError),
    "correspondence_bad_box": (_correspondence_bad_box, ValueError),
}
