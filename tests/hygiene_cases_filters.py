"""Hygiene entry points of the filter family (kernels, activation maximisation, dead channels, summary).

Collected by tests/test_hygiene.py: each function gets the user's model (training mode, a user
hook, in-place ReLUs, existing gradients) and x of shape (2, 3, 16, 16).
"""

from __future__ import annotations

from cnnwidgets import ChannelActivation, Probe
from cnnwidgets.app.filters import ActMaxController, kernel_view, summary_view
from cnnwidgets.methods.actmax import maximize_activation
from cnnwidgets.methods.dead import dead_channels
from cnnwidgets.methods.kernels import kernels
from cnnwidgets.methods.summary import summary


def _kernels(model, x):
    kernels(model, "conv1")
    kernels(model, "conv2", out_channel=1, normalize="slice")
    with Probe(model) as probe:
        kernels(probe, "conv2")


def _kernel_view(model, x):
    view = kernel_view(model)
    view.layer = "conv2"


def _maximize_channel(model, x):
    maximize_activation(model, ChannelActivation("relu1", 2), size=16, steps=3, progress=False)


def _maximize_class_with_probe(model, x):
    with Probe(model, input_size=(3, 16, 16)) as probe:
        maximize_activation(probe, 1, steps=3, parametrization="pixel", blur=0.5, progress=False)


def _actmax_controller(model, x):
    controller = ActMaxController(model, size=16, background=False)
    controller.view.steps = 2
    controller.start()
    controller.close()


def _dead_channels(model, x):
    dead_channels(model, x, progress=False)
    dead_channels(model, [x, x[:1]], ["conv2", "relu2"], progress=False)


def _summary(model, x):
    str(summary(model, (3, 16, 16)))
    summary_view(model, (3, 16, 16), leaves_only=False)


def _kernels_bad_layer(model, x):
    kernels(model, "conv3")


def _kernels_not_conv(model, x):
    kernels(model, "bn1")


def _maximize_bad_layer(model, x):
    maximize_activation(model, ChannelActivation("conv9", 0), size=16, steps=2, progress=False)


def _maximize_bad_channel(model, x):
    maximize_activation(model, ChannelActivation("conv2", 99), size=16, steps=2, progress=False)


def _maximize_model_raises(model, x):
    with Probe(model, input_size=(3, 16, 16)) as probe:
        probe.model.fail = True
        maximize_activation(probe, 0, steps=2, progress=False)  # a class target runs the failing part


def _dead_bad_layer(model, x):
    dead_channels(model, x, ["relu3"], progress=False)


def _summary_bad_size(model, x):
    summary(model, (1, 16, 16))  # conv1 wants 3 channels


ENTRY_POINTS = {
    "kernels": _kernels,
    "kernel_view": _kernel_view,
    "maximize_channel": _maximize_channel,
    "maximize_class_with_probe": _maximize_class_with_probe,
    "actmax_controller": _actmax_controller,
    "dead_channels": _dead_channels,
    "summary": _summary,
}

RAISING = {
    "kernels_bad_layer": (_kernels_bad_layer, KeyError),
    "kernels_not_conv": (_kernels_not_conv, ValueError),
    "maximize_bad_layer": (_maximize_bad_layer, KeyError),
    "maximize_bad_channel": (_maximize_bad_channel, IndexError),
    "maximize_model_raises": (_maximize_model_raises, RuntimeError),
    "dead_bad_layer": (_dead_bad_layer, KeyError),
    "summary_bad_size": (_summary_bad_size, RuntimeError),
}
