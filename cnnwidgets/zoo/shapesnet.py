"""ShapesNet: the small CNN the project ships trained on the shapes dataset.

Layout (input (3, 64, 64), normalised with :data:`cnnwidgets.zoo.shapes.MEAN`/``STD``)::

    features.conv1  Conv2d(3, 16, 5x5, pad 2)   -> 16 x 64 x 64
    features.relu1  ReLU (in place)
    features.pool1  MaxPool2d(2)                -> 16 x 32 x 32
    features.conv2  Conv2d(16, 16, 3x3, pad 1)
    features.bn2    BatchNorm2d(16)
    features.relu2, pool2                       -> 16 x 16 x 16
    features.conv3  Conv2d(16, 32, 3x3, pad 1)
    features.bn3, relu3, pool3                  -> 32 x 8 x 8
    features.conv4  Conv2d(32, 64, 3x3, pad 1)
    features.bn4, relu4                         -> 64 x 8 x 8
    global_pool     AdaptiveMaxPool2d(1)        -> 64 x 1 x 1
    flatten                                     -> 64
    classifier      Linear(64, 5)               -> logits over CLASSES

Design notes. The receptive field of a ``conv4`` unit is 40 px (of 64). The global *max*
pool (rather than average) asks "is this part detector firing anywhere"; on this task it
trained several times faster than global average pooling, which matters because the
network is retrained live in class. BatchNorm after conv2-4 speeds training up as well;
conv1 has none, so its responses are plain filter outputs (easy to read next to the
filters) and the most expensive full-resolution layer stays cheap. About 27 k parameters;
the weights file is ~120 KB.
"""

from __future__ import annotations

from collections import OrderedDict
from importlib import resources

import torch
from torch import nn

from cnnwidgets.core.targets import as_count
from cnnwidgets.zoo.bundle import Bundle, ImagePreprocess
from cnnwidgets.zoo.shapes import CLASSES, MEAN, STD

__all__ = ["WEIGHTS_INFO", "ShapesNet", "default_weights_path", "load_default"]

WEIGHTS_INFO = (
    "ShapesNet trained on generated shapes by `python -m cnnwidgets.zoo.train`\n"
    "(defaults: seed 0, 4 epochs x 8000 images, 500 AdamW steps; torch 2.14, CPU, 2 threads);\n"
    "held-out accuracy 99.7 % on 1000 generated images of seed 1000000"
)
"""Description of the shipped weights (how they were made and how good they are), in lines short
enough to print in a notebook without wrapping."""


class ShapesNet(nn.Module):
    """Four conv blocks and a linear head for 64 x 64 RGB shape images (see module docstring).

    Args:
        num_classes: size of the output, an int >= 1 (5 for :data:`~cnnwidgets.zoo.shapes.CLASSES`).
        widths: output channels of conv1..conv4, four ints >= 1.

    Raises:
        TypeError: for a ``num_classes`` or width that is not an int, or ``widths`` not a tuple or list.
        ValueError: for a value below 1 or a number of widths other than four.
    """

    def __init__(self, num_classes: int = len(CLASSES), widths: tuple[int, int, int, int] = (16, 16, 32, 64)) -> None:
        num_classes = as_count(num_classes, "num_classes")
        if not isinstance(widths, (tuple, list)):
            raise TypeError(f"widths must be a tuple of four ints >= 1 (conv1..conv4), got {type(widths).__name__}")
        if len(widths) != 4:
            raise ValueError(f"widths must be four ints >= 1 (conv1..conv4), got {len(widths)}: {tuple(widths)!r}")
        widths = tuple(as_count(w, f"widths[{i}]") for i, w in enumerate(widths))
        super().__init__()
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        cin = 3
        for i, cout in enumerate(widths, start=1):
            kernel = 5 if i == 1 else 3
            layers[f"conv{i}"] = nn.Conv2d(cin, cout, kernel, padding=kernel // 2)
            if i > 1:
                layers[f"bn{i}"] = nn.BatchNorm2d(cout)
            layers[f"relu{i}"] = nn.ReLU(inplace=True)
            if i < len(widths):
                layers[f"pool{i}"] = nn.MaxPool2d(2)
            cin = cout
        self.features = nn.Sequential(layers)
        self.global_pool = nn.AdaptiveMaxPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, num_classes) for the normalised input ``x`` (N, 3, 64, 64); sizes from 8 x 8 up run too."""
        return self.classifier(self.flatten(self.global_pool(self.features(x))))


def default_weights_path():
    """The shipped state_dict file (an ``importlib.resources`` Traversable)."""
    return resources.files("cnnwidgets.zoo") / "weights" / "shapesnet.pt"


def load_default() -> Bundle:
    """The embedded default: ShapesNet with the shipped trained weights, in eval mode.

    Works offline; nothing is downloaded. Preprocessing: any image :func:`cnnwidgets.load_image`
    accepts (or a float tensor in [0, 1]) -> shorter side resized to 64 px (bilinear,
    antialiased), centre-cropped to 64 x 64, normalised with mean 0.45 / std 0.27.

    Returns:
        A :class:`~cnnwidgets.zoo.bundle.Bundle` named ``"shapesnet"``.

    Raises:
        FileNotFoundError: if the weights file is missing from the installed package.
    """
    path = default_weights_path()
    if not path.is_file():
        raise FileNotFoundError(
            f"ShapesNet weights not found at {path}; reinstall cnnwidgets, or recreate them with "
            "`python -m cnnwidgets.zoo.train --out <that path>`"
        )
    with path.open("rb") as handle:
        state = torch.load(handle, weights_only=True, map_location="cpu")
    model = ShapesNet()
    model.load_state_dict(state, strict=True)
    model.eval()
    return Bundle(
        model=model,
        classes=list(CLASSES),
        preprocess=ImagePreprocess(size=64, mean=MEAN, std=STD),
        input_size=(3, 64, 64),
        name="shapesnet",
        weights=WEIGHTS_INFO,
        mean=MEAN,
        std=STD,
    )
