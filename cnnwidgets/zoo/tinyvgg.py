"""TinyVGG, the small trained CNN of CNN Explainer (Wang et al., IEEE VIS 2020).

Architecture as published with CNN Explainer's TF.js model (10 Tiny-ImageNet classes,
input 64 x 64 RGB scaled to [0, 1] with no mean/std normalisation; every convolution
3 x 3, stride 1, no padding)::

    conv_1_1 Conv2d(3, 10)  -> relu_1_1 -> conv_1_2 Conv2d(10, 10) -> relu_1_2 -> pool_1 MaxPool2d(2)
    conv_2_1 Conv2d(10, 10) -> relu_2_1 -> conv_2_2 Conv2d(10, 10) -> relu_2_2 -> pool_2 MaxPool2d(2)
    flatten (10 x 13 x 13 = 1690) -> output Linear(1690, 10)

The weights are not shipped with cnnwidgets: :func:`load_tinyvgg` reads a state_dict
converted from the TF.js files (keys ``conv_1_1.weight`` ... ``output.bias``) and a
``classes.json`` mapping ``"0".."9"`` to class names.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from cnnwidgets.core.targets import as_count
from cnnwidgets.zoo.bundle import Bundle, ImagePreprocess
from cnnwidgets.zoo.pretrained import _fit, _load_checkpoint, _refuse_url, _strip_wrapper_prefixes

__all__ = ["STATE_DICT_NAME", "TinyVGG", "load_tinyvgg"]

STATE_DICT_NAME = "tinyvgg_state_dict.pth"
CLASSES_NAME = "classes.json"


class TinyVGG(nn.Module):
    """CNN Explainer's TinyVGG (19,920 parameters); see the module docstring for the layout.

    Args:
        num_classes: output units, an int >= 1 (10 for the published model).

    Raises:
        TypeError: for a ``num_classes`` that is not an int. ValueError: for one below 1.
    """

    def __init__(self, num_classes: int = 10) -> None:
        num_classes = as_count(num_classes, "num_classes")
        super().__init__()
        self.conv_1_1 = nn.Conv2d(3, 10, 3)
        self.relu_1_1 = nn.ReLU(inplace=True)
        self.conv_1_2 = nn.Conv2d(10, 10, 3)
        self.relu_1_2 = nn.ReLU(inplace=True)
        self.pool_1 = nn.MaxPool2d(2)
        self.conv_2_1 = nn.Conv2d(10, 10, 3)
        self.relu_2_1 = nn.ReLU(inplace=True)
        self.conv_2_2 = nn.Conv2d(10, 10, 3)
        self.relu_2_2 = nn.ReLU(inplace=True)
        self.pool_2 = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.output = nn.Linear(10 * 13 * 13, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, num_classes) for the input ``x`` (N, 3, 64, 64) with values in [0, 1] (no mean/std
        normalisation)."""
        x = self.pool_1(self.relu_1_2(self.conv_1_2(self.relu_1_1(self.conv_1_1(x)))))
        x = self.pool_2(self.relu_2_2(self.conv_2_2(self.relu_2_1(self.conv_2_1(x)))))
        return self.output(self.flatten(x))


def _read_classes(path: Path) -> list[str]:
    expected = 'a JSON object mapping "0", "1", ... to class names, e.g. {"0": "lifeboat", "1": "ladybug"}'
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid UTF-8 JSON ({exc}); expected {expected}") from exc
    if not isinstance(raw, dict) or not raw:
        what = "an empty object" if raw == {} else f"a {type(raw).__name__}, not an object"
        raise ValueError(f"{path} holds {what}; expected {expected}")
    keys = [str(i) for i in range(len(raw))]
    if set(raw) != set(keys):
        raise ValueError(f"{path} must have exactly the keys '0'..'{len(raw) - 1}'; expected {expected}")
    bad = next((k for k in keys if not isinstance(raw[k], str)), None)
    if bad is not None:
        raise ValueError(
            f"{path} maps {bad!r} to {raw[bad]!r}, not a class name string (ImageNet-style [id, name] lists are "
            f"not accepted); expected {expected}"
        )
    return [raw[k] for k in keys]


def _read_state_dict(path: Path) -> tuple[dict[str, torch.Tensor], list[str]]:
    state, notes = _load_checkpoint(path, remedy="save a plain state_dict with torch.save(model.state_dict(), path)")
    if not state:
        raise ValueError(f"{path} holds an empty state_dict; expected TinyVGG's tensors ('conv_1_1.weight' ...)")
    return state, notes


def load_tinyvgg(path_or_dir: str | os.PathLike) -> Bundle:
    """Load the trained TinyVGG from a state_dict file or the folder holding it.

    Args:
        path_or_dir: the folder with ``tinyvgg_state_dict.pth`` and ``classes.json``
            (e.g. ``shared/data/tinyvgg-cnn-explainer``), or the ``.pth`` file itself with
            ``classes.json`` next to it; not a URL. A training checkpoint holding exactly one
            state_dict (``{"model_state_dict": ..., "epoch": ...}``) is unwrapped, and the key
            prefixes of a model saved while wrapped (``module.``, ``_orig_mod.``) are removed; the
            bundle's ``weights`` text says so.

    Returns:
        A Bundle named ``"tinyvgg"``: model in eval mode; preprocess = shorter side to 64 px
        (bilinear, antialiased), centre crop 64 x 64, values in [0, 1] (no normalisation).

    Raises:
        TypeError: a ``path_or_dir`` that is not a str or ``os.PathLike``.
        FileNotFoundError: a missing state_dict or classes.json (the message names the path).
        ValueError: a URL or an empty string instead of a local path, a classes.json that is not
            valid JSON of the form ``{"0": name, ...}`` (names are strings, one per output unit), or
            a weights file that is not a non-empty plain state_dict (tensors under str keys)
            loadable with ``torch.load(weights_only=True)``.
        RuntimeError: a state_dict that does not match the architecture (strict loading); the
            message counts the missing and unexpected keys, with examples.
    """
    if not isinstance(path_or_dir, (str, os.PathLike)) or not isinstance(os.fspath(path_or_dir), str):
        raise TypeError(f"path_or_dir must be a folder or file path (str or pathlib.Path), got "
                        f"{type(path_or_dir).__name__} {path_or_dir!r}")
    if not os.fspath(path_or_dir):
        raise ValueError(f"path_or_dir is an empty string; give the folder holding {STATE_DICT_NAME} and "
                         f"{CLASSES_NAME}, or the .pth file itself")
    _refuse_url(path_or_dir, "path_or_dir", f"download {STATE_DICT_NAME} and {CLASSES_NAME} (e.g. with a browser "
                "or curl) into one folder on this machine and pass that folder")
    path = Path(path_or_dir).expanduser()
    weights = path / STATE_DICT_NAME if path.is_dir() else path
    if not weights.is_file():
        raise FileNotFoundError(
            f"TinyVGG weights not found: {str(weights)!r}; pass the folder holding {STATE_DICT_NAME} "
            f"and {CLASSES_NAME} (e.g. shared/data/tinyvgg-cnn-explainer) or the .pth file itself"
        )
    classes_file = weights.parent / CLASSES_NAME
    if not classes_file.is_file():
        raise FileNotFoundError(f"class names not found: {str(classes_file)!r} (expected next to {weights.name})")
    classes = _read_classes(classes_file)
    model = TinyVGG(num_classes=len(classes))
    state, notes = _read_state_dict(weights)
    state, unwrapped = _strip_wrapper_prefixes(model, state)
    output = state.get("output.weight")
    if output is not None and output.ndim == 2 and output.shape[0] != len(classes):
        raise ValueError(
            f"{classes_file} names {len(classes)} classes but the output layer in {weights} has "
            f"{output.shape[0]} units; the two files must belong to the same model"
        )
    notes += unwrapped + _fit(model, state, f"{weights} does not fit TinyVGG")
    model.eval()
    return Bundle(
        model=model,
        classes=classes,
        preprocess=ImagePreprocess(size=64),
        input_size=(3, 64, 64),
        name="tinyvgg",
        weights=f"CNN Explainer TinyVGG (10 Tiny-ImageNet classes), converted from TF.js; loaded from {weights}"
                + (f" ({'; '.join(notes)})" if notes else ""),
    )
