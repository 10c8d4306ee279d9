"""Occlusion entry points for the cross-cutting hygiene test (tests/test_hygiene.py).

Each function gets the hygiene ``Net`` (training mode, user hook, in-place ReLUs, batch norm)
and x of shape (2, 3, 16, 16); occlusion explains one image, so it uses ``x[:1]``.
"""

from __future__ import annotations

import threading

import numpy as np
import torch

from cnnwidgets import ChannelActivation, ClassLogit, ClassProbability, Probe
from cnnwidgets.methods.occlusion import occlusion_map, occlusion_top_class
from cnnwidgets.render.occlusion import occlusion_overlay
from tests.helpers import ScalesInPlace


def _class_probability(model, x):
    result = occlusion_map(model, x[:1], ClassProbability(1), window=4, stride=4, progress=False)
    assert result.complete and not np.isnan(result.grid).any()
    occlusion_overlay(result.drop, np.zeros((16, 16, 3), np.uint8), window=4, stride=4, center=0.0)


def _logit_unfolded(model, x):
    occlusion_map(model, x[:1], 2, window=(4, 8), stride=(2, 4), fold_batchnorm=False, progress=False)


def _channel_with_probe(model, x):
    with Probe(model) as probe:
        occlusion_map(probe, x[:1], ChannelActivation("conv2", 3, reduce="sum"), window=4, stride=4, progress=False)
        occlusion_map(probe, x[:1], ClassLogit(0), window=4, stride=4, fill="mean", progress=False)


def _top_class(model, x):
    result = occlusion_top_class(model, x[:1], window=8, stride=4, progress=False)
    assert result.labels is not None and (result.labels >= 0).all()


def _input_written_in_place(model, x):
    image = x[:1].clone()
    with Probe(ScalesInPlace(model, 2.0)) as probe:
        first = occlusion_map(probe, image, 0, window=4, stride=2, batch_size=3, progress=False)
        again = occlusion_map(probe, image, 0, window=4, stride=2, batch_size=3, progress=False)
    assert torch.equal(image, x[:1]), "the caller's image must not be written"
    np.testing.assert_allclose(again.grid, first.grid, rtol=1e-5, atol=1e-6)


def _cancelled(model, x):
    stop = threading.Event()
    result = occlusion_map(model, x[:1], 1, window=4, stride=2, batch_size=4, progress=False,
                           cancel=stop, callback=lambda r: stop.set())
    assert result.cancelled


def _bad_window(model, x):
    occlusion_map(model, x[:1], 0, window=32, stride=4, progress=False)


def _bad_layer(model, x):
    occlusion_map(model, x[:1], ChannelActivation("conv3", 0), window=4, stride=4, progress=False)


def _model_raises(model, x):
    with Probe(model) as probe:
        probe.layers
        probe.model.fail = True
        occlusion_map(probe, x[:1], 0, window=4, stride=4, progress=False)


def _callback_raises(model, x):
    def callback(result):
        raise LookupError("a callback fails half way")

    occlusion_map(model, x[:1], 0, window=4, stride=4, batch_size=2, callback=callback, progress=False)


ENTRY_POINTS = {
    "class_probability": _class_probability,
    "logit_unfolded": _logit_unfolded,
    "channel_with_probe": _channel_with_probe,
    "top_class": _top_class,
    "cancelled": _cancelled,
    "input_written_in_place": _input_written_in_place,
}

RAISING = {
    "bad_window": (_bad_window, ValueError),
    "bad_layer": (_bad_layer, KeyError),
    "model_raises": (_model_raises, RuntimeError),
    "callback_raises": (_callback_raises, LookupError),
}
