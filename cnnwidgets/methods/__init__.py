"""Visualization methods as plain functions on tensors (no widgets, no drawing).

Each function takes a model or a :class:`cnnwidgets.Probe`, an input batch and a layer or
target, and returns tensors or arrays with a documented meaning. Import them from here or
from the top-level package::

    from cnnwidgets.methods import dead_channels, maximize_activation
"""

from cnnwidgets.methods.actmax import ActMaxResult, maximize_activation
from cnnwidgets.methods.dead import DeadChannels, dead_channels
from cnnwidgets.methods.kernels import Kernels, conv_layer_names
from cnnwidgets.methods.kernels import kernels as kernel_weights
from cnnwidgets.methods.summary import Summary, SummaryRow
from cnnwidgets.methods.summary import summary as model_summary

__all__ = [
    "ActMaxResult",
    "DeadChannels",
    "Kernels",
    "Summary",
    "SummaryRow",
    "conv_layer_names",
    "dead_channels",
    "kernel_weights",
    "maximize_activation",
    "model_summary",
]
