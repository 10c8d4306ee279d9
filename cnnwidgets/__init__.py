"""cnnwidgets: see what a PyTorch CNN sees, live, inside a Jupyter notebook."""

from cnnwidgets.core import (
    ChannelActivation,
    ClassLogit,
    ClassProbability,
    LayerInfo,
    ModelSnapshot,
    Probe,
    available_devices,
)

__version__ = "0.1.0"

__all__ = [
    "ChannelActivation",
    "ClassLogit",
    "ClassProbability",
    "LayerInfo",
    "ModelSnapshot",
    "Probe",
    "available_devices",
]
