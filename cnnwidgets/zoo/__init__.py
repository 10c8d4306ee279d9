"""Models and images that work offline.

* :func:`load_default` - the embedded ShapesNet, trained on generated shapes (no download).
* :func:`samples` / :func:`sample_image` - generated sample images shipped with the package.
* :func:`load_tinyvgg` - CNN Explainer's trained TinyVGG from a local state_dict.
* :func:`load_torchvision` - torchvision classifiers with weights from the torch hub cache
  or a file; :class:`WeightsUnavailableError` when they are not on the machine.
* :class:`ZFNet` - Zeiler & Fergus's architecture, untrained, for teaching.
* :mod:`cnnwidgets.zoo.shapes` - the generated dataset; :mod:`cnnwidgets.zoo.train` - its training loop.

The model loaders (:func:`load_default`, :func:`load_tinyvgg`, :func:`load_torchvision`) return a
:class:`Bundle`: model, class names, preprocess, denormalize, input size. :func:`samples` and
:func:`sample_image` give PIL images, and :class:`ZFNet` is a plain ``nn.Module``.
"""

from cnnwidgets.zoo.bundle import Bundle
from cnnwidgets.zoo.pretrained import WeightsUnavailableError, load_torchvision
from cnnwidgets.zoo.shapes import CLASSES as SHAPE_CLASSES
from cnnwidgets.zoo.shapes import ShapesDataset, make_batch
from cnnwidgets.zoo.shapesnet import ShapesNet, load_default
from cnnwidgets.zoo.tinyvgg import TinyVGG, load_tinyvgg
from cnnwidgets.zoo.zfnet import ZFNet

__all__ = [
    "SHAPE_CLASSES",
    "Bundle",
    "ShapesDataset",
    "ShapesNet",
    "TinyVGG",
    "WeightsUnavailableError",
    "ZFNet",
    "load_default",
    "load_tinyvgg",
    "load_torchvision",
    "make_batch",
    "sample_image",
    "samples",
]


_LAZY = ("sample_image", "samples")


def __getattr__(name: str) -> object:
    # samples/sample_image are loaded on first use, so that `python -m cnnwidgets.zoo.gallery`
    # (which rewrites the sample files) does not find its module already imported.
    if name in _LAZY:
        from cnnwidgets.zoo import gallery

        return getattr(gallery, name)
    raise AttributeError(f"module 'cnnwidgets.zoo' has no attribute {name!r}")


def __dir__() -> list[str]:
    # The lazy names too, for dir(), help() and tab completion.
    return sorted(set(globals()) | set(_LAZY))
