"""Hygiene cases for the gradient and class-map methods (collected by tests/test_hygiene.py).

Each entry runs a method on the user's model directly (a temporary probe) or through an
explicit probe; the raising entries fail on a bad layer, a bad target or a failing module.
"""

from __future__ import annotations

from collections.abc import Callable

from cnnwidgets import ChannelActivation, ClassProbability, Probe
from cnnwidgets.methods.cam import cam, grad_cam, grad_cam_pp, layer_gradient, nearest_conv_layer
from cnnwidgets.methods.gradients import deconvnet, guided_backprop, project_channel, saliency, strongest_unit
from cnnwidgets.methods.overlays import OVERLAYS, SIGNED_OVERLAYS


def _saliency(model, x):
    saliency(model, x, 1, reduce="max")
    saliency(model, x, ChannelActivation("conv2", 2))


def _guided_backprop(model, x):
    guided_backprop(model, x, ClassProbability(3))


def _deconvnet(model, x):
    deconvnet(model, x, ChannelActivation("relu2", 1, position=(3, 4)))


def _project_channel(model, x):
    with Probe(model) as probe:
        strongest_unit(probe, x, "relu1", 0)
        project_channel(probe, x, "relu1", 0, unit="max")
        project_channel(probe, x, "conv2", 5, unit="all")
        project_channel(probe, x, "head", 2)


def _grad_cam(model, x):
    with Probe(model) as probe:
        grad_cam(probe, x, 0, "relu2")
        grad_cam_pp(probe, x, 2, "conv1")
        layer_gradient(probe, x, ChannelActivation("relu2", 0), "pool")


def _cam(model, x):
    cam(model, x, 3, layer="relu2", fc="head")  # Net averages with x.mean(): name the layers


def _overlays(model, x):
    with Probe(model) as probe:
        probe.capture(x[:1], "head")
        assert nearest_conv_layer(probe, "head") == "relu2"  # the last feature map before the head
        for fn in (*OVERLAYS.values(), *SIGNED_OVERLAYS.values()):
            fn(probe, x[:1], layer="relu2", channel=1, target=2)


def _bad_layer_project(model, x):
    project_channel(model, x, "conv3", 0)


def _bad_layer_grad_cam(model, x):
    grad_cam(model, x, 0, "relu3")


def _bad_target_saliency(model, x):
    saliency(model, x, 4)  # 4 classes: 0..3


def _bad_target_guided(model, x):
    guided_backprop(model, x, ChannelActivation("conv2", 8))  # conv2 has 8 channels


def _bad_target_cam(model, x):
    cam(model, x, ClassProbability(1), layer="relu2", fc="head")


def _bad_channel_overlay(model, x):
    with Probe(model) as probe:
        OVERLAYS["deconvnet"](probe, x[:1], layer="relu2", channel=99, target=0)


def _model_raises_deconvnet(model, x):
    with Probe(model) as probe:
        probe.layers
        probe.model.fail = True
        deconvnet(probe, x, 1)


def _model_raises_grad_cam(model, x):
    with Probe(model) as probe:
        probe.layers
        probe.model.fail = True
        grad_cam(probe, x, 1, "conv2")


ENTRY_POINTS: dict[str, Callable] = {
    "saliency": _saliency,
    "guided_backprop": _guided_backprop,
    "deconvnet": _deconvnet,
    "project_channel": _project_channel,
    "grad_cam": _grad_cam,
    "cam": _cam,
    "overlays": _overlays,
}

RAISING: dict[str, tuple[Callable, type]] = {
    "project_channel_bad_layer": (_bad_layer_project, KeyError),
    "grad_cam_bad_layer": (_bad_layer_grad_cam, KeyError),
    "saliency_bad_target": (_bad_target_saliency, IndexError),
    "guided_backprop_bad_target": (_bad_target_guided, IndexError),
    "cam_bad_target": (_bad_target_cam, TypeError),
    "deconvnet_overlay_bad_channel": (_bad_channel_overlay, IndexError),
    "deconvnet_model_raises": (_model_raises_deconvnet, RuntimeError),
    "grad_cam_model_raises": (_model_raises_grad_cam, RuntimeError),
}
