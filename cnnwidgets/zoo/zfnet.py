"""ZFNet: the network of Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks".

M. D. Zeiler and R. Fergus, ECCV 2014 (arXiv:1311.2901, 2013), Fig. 3. An AlexNet
variant whose first layer was changed after the authors *looked* at its filters and
activations with their deconvnet: 7 x 7 filters at stride 2 instead of 11 x 11 at stride
4, which removed the dead and aliased first-layer filters. Provided **untrained**, for
teaching (build it, inspect it, train it on a small dataset).

Layout for a 224 x 224 RGB input (sizes as printed in the paper's Fig. 3)::

    features.conv1  Conv2d(3, 96, 7x7, stride 2, pad 1)   -> 96 x 110 x 110
    features.relu1, pool1 MaxPool2d(3, stride 2, ceil)    -> 96 x 55 x 55
    features.norm1  LocalResponseNorm(5)
    features.conv2  Conv2d(96, 256, 5x5, stride 2)        -> 256 x 26 x 26
    features.relu2, pool2 MaxPool2d(3, stride 2, ceil)    -> 256 x 13 x 13
    features.norm2  LocalResponseNorm(5)
    features.conv3  Conv2d(256, 384, 3x3, pad 1), relu3   -> 384 x 13 x 13
    features.conv4  Conv2d(384, 384, 3x3, pad 1), relu4   -> 384 x 13 x 13
    features.conv5  Conv2d(384, 256, 3x3, pad 1), relu5   -> 256 x 13 x 13
    features.pool5  MaxPool2d(3, stride 2)                -> 256 x 6 x 6
    flatten                                               -> 9216
    classifier.fc6  Linear(9216, 4096), relu6, drop6 (p=0.5)
    classifier.fc7  Linear(4096, 4096), relu7, drop7 (p=0.5)
    classifier.fc8  Linear(4096, num_classes)

Choices the paper leaves open, made here:

* **Contrast normalisation.** The paper normalises "across feature maps" without giving
  constants. This uses ``nn.LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2)``, the
  cross-channel response normalisation of AlexNet (Krizhevsky et al., 2012), with PyTorch's
  (Caffe's) convention of dividing ``alpha`` by ``size``.
* **Padding and rounding.** ``conv1`` has padding 1 and pools 1-2 round up (``ceil_mode``,
  as Caffe did), which reproduces the 110 / 55 / 26 / 13 / 6 sizes of the figure.
* **Initialisation.** ``init="kaiming"`` (default; trains well from scratch with modern
  optimisers) or ``init="paper"``: weights N(0, 0.01^2) and biases 0, as the paper states
  ("all weights are initialized to 10^-2 and biases are set to 0").

About 62 M parameters (250 MB in float32), nearly all in fc6/fc7.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from cnnwidgets.core.targets import as_count, as_real

__all__ = ["ZFNet"]


class ZFNet(nn.Module):
    """Zeiler & Fergus (2013) architecture, untrained; see the module docstring.

    Args:
        num_classes: output units, an int >= 1 (1000 for ImageNet).
        dropout: dropout probability after fc6 and fc7, a number in [0, 1] (0.5 in the paper).
        init: ``"kaiming"`` or ``"paper"`` (N(0, 0.01^2) weights, zero biases).

    Raises:
        TypeError: for a ``num_classes`` that is not an int, or a ``dropout`` that is not a number
            (a bool, a string, a tensor).
        ValueError: for an unknown ``init``, ``num_classes < 1``, or a ``dropout`` outside [0, 1]
            (NaN included).
    """

    input_size = (3, 224, 224)

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5, init: str = "kaiming") -> None:
        num_classes = as_count(num_classes, "num_classes")
        dropout = as_real(dropout, "dropout", "in [0, 1]", lambda p: 0.0 <= p <= 1.0)
        super().__init__()
        if init not in ("kaiming", "paper"):
            raise ValueError(f"init must be 'kaiming' or 'paper', got {init!r}")

        def lrn() -> nn.LocalResponseNorm:
            return nn.LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2.0)

        self.features = nn.Sequential(OrderedDict([
            ("conv1", nn.Conv2d(3, 96, kernel_size=7, stride=2, padding=1)),
            ("relu1", nn.ReLU(inplace=True)),
            ("pool1", nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True)),
            ("norm1", lrn()),
            ("conv2", nn.Conv2d(96, 256, kernel_size=5, stride=2)),
            ("relu2", nn.ReLU(inplace=True)),
            ("pool2", nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True)),
            ("norm2", lrn()),
            ("conv3", nn.Conv2d(256, 384, kernel_size=3, padding=1)),
            ("relu3", nn.ReLU(inplace=True)),
            ("conv4", nn.Conv2d(384, 384, kernel_size=3, padding=1)),
            ("relu4", nn.ReLU(inplace=True)),
            ("conv5", nn.Conv2d(384, 256, kernel_size=3, padding=1)),
            ("relu5", nn.ReLU(inplace=True)),
            ("pool5", nn.MaxPool2d(kernel_size=3, stride=2)),
        ]))
        self.flatten = nn.Flatten()
        self.classifier = nn.Sequential(OrderedDict([
            ("fc6", nn.Linear(256 * 6 * 6, 4096)),
            ("relu6", nn.ReLU(inplace=True)),
            ("drop6", nn.Dropout(dropout)),
            ("fc7", nn.Linear(4096, 4096)),
            ("relu7", nn.ReLU(inplace=True)),
            ("drop7", nn.Dropout(dropout)),
            ("fc8", nn.Linear(4096, num_classes)),
        ]))
        self._init(init)

    def _init(self, init: str) -> None:
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                if init == "paper":
                    nn.init.normal_(module.weight, mean=0.0, std=0.01)
                else:
                    nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, num_classes) for the input ``x`` (N, 3, 224, 224); other sizes must give a 6 x 6
        pool5 map."""
        return self.classifier(self.flatten(self.features(x)))
