"""cnnwidgets: see what a PyTorch CNN sees, live, inside a Jupyter notebook."""

from cnnwidgets.core import (
    ChannelActivation,
    ClassLogit,
    ClassLogits,
    ClassProbability,
    LayerInfo,
    ModelSnapshot,
    Probe,
    available_devices,
)

from cnnwidgets.app import Explorer, close_all, explore
from cnnwidgets.core.images import load_image

__version__ = "0.1.0"

__all__ = [
    "ChannelActivation",
    "Explorer",
    "close_all",
    "explore",
    "load_image",
    "ClassLogit",
    "ClassLogits",
    "ClassProbability",
    "LayerInfo",
    "ModelSnapshot",
    "Probe",
    "available_devices",
]
