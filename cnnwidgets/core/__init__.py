"""Torch side: layer discovery, the hook manager (Probe), targets, devices and model hygiene."""

from cnnwidgets.core._compat import check_numpy_bridge

check_numpy_bridge()  # before anything else: a torch built for NumPy 1.x fails here, clearly

from cnnwidgets.core.device import available_devices, resolve_device
from cnnwidgets.core.hygiene import ModelSnapshot
from cnnwidgets.core.layers import LayerInfo
from cnnwidgets.core.probe import Probe, ProbeStats, StopForward, UserHooksWarning, probe_scope
from cnnwidgets.core.targets import (
    ChannelActivation,
    ClassLogit,
    ClassLogits,
    ClassProbability,
    Target,
    resolve_target,
    target_score,
)

__all__ = [
    "ChannelActivation",
    "ClassLogit",
    "ClassLogits",
    "ClassProbability",
    "LayerInfo",
    "ModelSnapshot",
    "Probe",
    "ProbeStats",
    "StopForward",
    "Target",
    "UserHooksWarning",
    "available_devices",
    "probe_scope",
    "resolve_device",
    "resolve_target",
    "target_score",
]
