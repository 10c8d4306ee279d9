"""Visualization methods as plain functions on tensors (no widgets, no drawing).

Each function takes a model or a :class:`cnnwidgets.Probe`, an input batch and a layer or
target, and returns tensors or arrays with a documented meaning. Import them from here::

    from cnnwidgets.methods import dead_channels, maximize_activation
"""

from cnnwidgets.methods.actmax import (
    ActMaxResult, AssumedInputWarning, SaturatedImageWarning, ZeroGradientWarning, maximize_activation,
)
from cnnwidgets.methods.cam import cam, grad_cam, grad_cam_pp, layer_gradient, nearest_conv_layer
from cnnwidgets.methods.cam import upsample as upsample_cam
from cnnwidgets.methods.correspondence import CorrespondenceResult, correspondence
from cnnwidgets.methods.dead import DeadChannels, dead_channels
from cnnwidgets.methods.evolution import FeatureEvolution, FeatureEvolutionRecorder
from cnnwidgets.methods.kernels import Kernels, conv_layer_names
from cnnwidgets.methods.kernels import kernels as kernel_weights
from cnnwidgets.methods.gradients import (
    EmptyMapWarning,
    FunctionalReluWarning,
    InactiveChannelWarning,
    MixedActivationWarning,
    NoReluWarning,
    deconvnet,
    guided_backprop,
    project_channel,
    saliency,
    strongest_unit,
)
from cnnwidgets.methods.occlusion import (
    NoOcclusionEffectWarning,
    OcclusionResult,
    TopClassProbability,
    grid_to_pixel_attribution,
    occlusion_map,
    occlusion_top_class,
    scan_order,
)
from cnnwidgets.methods.invariance import InvarianceResult, invariance_curves
from cnnwidgets.methods.overlays import OVERLAY_INPUTS, OVERLAYS, OverlayFn
from cnnwidgets.methods.summary import Summary, SummaryRow
from cnnwidgets.methods.summary import summary as model_summary
from cnnwidgets.methods.topk import TopKActivations, scan_topk

__all__ = [
    "OVERLAYS",
    "OVERLAY_INPUTS",
    "ActMaxResult",
    "AssumedInputWarning",
    "EmptyMapWarning",
    "FunctionalReluWarning",
    "InactiveChannelWarning",
    "MixedActivationWarning",
    "NoOcclusionEffectWarning",
    "NoReluWarning",
    "OcclusionResult",
    "SaturatedImageWarning",
    "TopClassProbability",
    "ZeroGradientWarning",
    "grid_to_pixel_attribution",
    "occlusion_map",
    "occlusion_top_class",
    "scan_order",
    "OverlayFn",
    "cam",
    "deconvnet",
    "grad_cam",
    "grad_cam_pp",
    "guided_backprop",
    "layer_gradient",
    "nearest_conv_layer",
    "project_channel",
    "saliency",
    "strongest_unit",
    "upsample_cam",
    "DeadChannels",
    "Kernels",
    "Summary",
    "SummaryRow",
    "conv_layer_names",
    "dead_channels",
    "kernel_weights",
    "maximize_activation",
    "model_summary",
    "CorrespondenceResult",
    "FeatureEvolution",
    "FeatureEvolutionRecorder",
    "InvarianceResult",
    "TopKActivations",
    "correspondence",
    "invariance_curves",
    "scan_topk",
]
