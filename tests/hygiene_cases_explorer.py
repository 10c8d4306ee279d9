"""Explorer entry points for the cross-cutting hygiene test (see tests/test_hygiene.py)."""

from __future__ import annotations

import numpy as np

from cnnwidgets.app import Explorer


def _image(x):
    return (x[0].permute(1, 2, 0).numpy() * 40 + 128).clip(0, 255).astype(np.uint8)


def _explore(model, x):
    ex = Explorer(model, _image(x), input_size=(3, 16, 16), samples={}, background=False, box=(2, 2, 6, 6))
    try:
        ex.channel = 3
        ex.layer = "conv1"
        ex.box = (8, 8, 6, 6)
        ex.fill = "blur"
        ex.show_scores = False
        ex.box = None
        ex.device = "cpu"
        assert not ex.status.is_error, ex.status.message
    finally:
        ex.close()


def _explore_background(model, x):
    ex = Explorer(model, _image(x), input_size=(3, 16, 16), samples={}, box=(2, 2, 6, 6))
    try:
        for i in range(20):
            ex.box = (i % 10, 3, 6, 6)
        assert ex.wait_idle(60)
    finally:
        ex.close()


def _explore_bad_layer(model, x):
    Explorer(model, _image(x), input_size=(3, 16, 16), samples={}, background=False, layer="conv3")


def _explore_model_error(model, x):
    ex = Explorer(model, _image(x), input_size=(3, 16, 16), samples={}, background=False)
    try:
        ex.probe.model.fail = True  # the private copy fails from now on
        ex.box = (0, 0, 4, 4)
        assert ex.status.is_error
        raise RuntimeError(ex.status.message)
    finally:
        ex.close()


ENTRY_POINTS = {"explore": _explore, "explore_background": _explore_background}

RAISING = {
    "explore_bad_layer": (_explore_bad_layer, KeyError),  # the documented error for an unknown layer
    "explore_model_error": (_explore_model_error, RuntimeError),
}
