"""A model together with what is needed to feed it and read its output."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence, Set
from pathlib import Path
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cnnwidgets.core.images import DEFAULT_MAX_SIZE, image_to_tensor
from cnnwidgets.core.probe import Probe, check_input_size
from cnnwidgets.core.targets import as_count, as_real, class_name_list, class_probabilities
from cnnwidgets.zoo.gallery import SAMPLE_SPECS, sample_image

__all__ = ["Bundle", "Denormalize", "ImagePreprocess"]


class ImagePreprocess:
    """Image -> normalised float tensor (3, size, size) for a square-input model.

    Rule: the image is converted by :func:`cnnwidgets.core.images.image_to_tensor` (any
    source :func:`cnnwidgets.load_image` accepts, or a float tensor in [0, 1], which keeps
    its precision), its shorter side is resized to ``resize`` px (bilinear, antialiased;
    aspect ratio kept), the centre ``size`` x ``size`` square is cropped, and each channel
    is normalised ``(x - mean) / std``. With ``mean=None`` the values stay in [0, 1].
    An image already ``size`` x ``size`` is not resampled.

    Args:
        size: side of the model's square input, an int in 1 ..
            :data:`~cnnwidgets.core.images.DEFAULT_MAX_SIZE` (4096).
        mean, std: per-channel normalisation, three finite numbers each (std > 0), or None for none.
        resize: shorter side before cropping, an int in ``size`` .. 4096 (default ``size``: no
            border is cut from a square image).

    Raises:
        TypeError: a size that is not an int, or mean/std that are not three numbers.
        ValueError: a size out of range, only one of mean and std, not three values, or a std <= 0.
    """

    def __init__(self, size: int, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 resize: int | None = None) -> None:
        self.size = _side(size, "size")
        self.resize = _side(resize, "resize") if resize is not None else self.size
        if self.resize < self.size:
            raise ValueError(f"resize ({self.resize}) must be >= size ({self.size})")
        self.mean, self.std = check_normalisation(mean, std)

    def __call__(self, image: Any) -> torch.Tensor:
        t = image_to_tensor(image)
        t = resize_shorter(t, self.resize)
        t = center_crop(t, self.size)
        if self.mean is not None:
            mean = torch.tensor(self.mean, dtype=t.dtype, device=t.device).view(3, 1, 1)
            std = torch.tensor(self.std, dtype=t.dtype, device=t.device).view(3, 1, 1)
            t = (t - mean) / std
        return t.contiguous()

    def __repr__(self) -> str:
        norm = f"mean={self.mean}, std={self.std}" if self.mean is not None else "no normalisation"
        return f"ImagePreprocess(shorter side -> {self.resize} px, centre crop {self.size}x{self.size}, {norm})"


def _side(value: Any, what: str) -> int:
    side = as_count(value, what)
    if side > DEFAULT_MAX_SIZE:
        raise ValueError(
            f"{what} must be at most {DEFAULT_MAX_SIZE} px (the longest side images are loaded at), got {side}"
        )
    return side


_FLOAT32_MAX = float(torch.finfo(torch.float32).max)


def _channel_values(values: Any, what: str, *, positive: bool) -> tuple[float, float, float]:
    if isinstance(values, (torch.Tensor, np.ndarray)):
        values = values.tolist()
    if isinstance(values, (Set, Mapping)):
        raise TypeError(f"{what} must be three numbers, one per RGB channel, in RGB order (a tuple, list, array or "
                        f"tensor), got a {type(values).__name__}, which has no channel order: {values!r}")
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise TypeError(f"{what} must be three numbers, one per RGB channel, got {type(values).__name__} {values!r}")
    items = list(values)
    if len(items) != 3:
        raise ValueError(f"{what} must be three numbers, one per RGB channel, got {len(items)}: {items!r}")
    accepted, ok = ("> 0", lambda v: v > 0) if positive else ("", lambda v: True)
    return tuple(as_real(v, f"{what}[{i}]", accepted, ok) for i, v in enumerate(items))  # type: ignore[return-value]


def check_normalisation(mean: Any, std: Any) -> tuple[tuple[float, float, float] | None,
                                                       tuple[float, float, float] | None]:
    """``(mean, std)`` as tuples of three floats (std > 0, so that dividing by it is finite), or
    ``(None, None)`` for no normalisation. Normalising runs in float32, so ``(x - mean) / std`` must
    be a float32 number for every x in [0, 1].

    Raises:
        TypeError: for values that are not three numbers in RGB order (a set or a dict has none).
        ValueError: for only one of the two given, a length other than 3, NaN, an infinity, a
            std <= 0, or a mean and std that give values too large for float32 (a std of 1e-300).
    """
    if (mean is None) != (std is None):
        raise ValueError("give both mean and std, or neither")
    if mean is None:
        return None, None
    mean = _channel_values(mean, "mean", positive=False)
    std = _channel_values(std, "std", positive=True)
    for i, (m, s) in enumerate(zip(mean, std)):
        m32, s32 = torch.tensor([m, s], dtype=torch.float32).tolist()
        largest = max(abs(m32), abs(1.0 - m32)) / s32 if s32 > 0 else math.inf
        if not largest <= _FLOAT32_MAX:
            raise ValueError(
                f"mean[{i}]={m!r} and std[{i}]={s!r} give values too large for float32: (x - mean) / std reaches "
                f"{largest:.3g} for x in [0, 1] (float32 ends at {_FLOAT32_MAX:.3g}); give the mean and std of the "
                "model's training images"
            )
    return mean, std


def _image_tensor(t: Any) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"t must be a torch.Tensor (C, H, W), got {type(t).__name__}")
    if t.ndim != 3:
        raise ValueError(f"t must be an image tensor (C, H, W), got shape {tuple(t.shape)}")
    return t


def resize_shorter(t: torch.Tensor, side: int) -> torch.Tensor:
    """Resize a (3, H, W) float tensor so that min(H, W) == side (bilinear, antialiased); the longer
    side keeps the aspect ratio. A tensor whose shorter side is ``side`` already is returned as it is.

    Raises:
        TypeError: ``t`` is not a floating-point tensor, or ``side`` not an int.
        ValueError: ``t`` is not (C, H, W) or is empty, or ``side`` is not in 1 .. 4096.
    """
    t = _image_tensor(t)
    if not t.is_floating_point():
        raise TypeError(f"t must be a floating-point tensor (values in [0, 1]), got {t.dtype}")
    side = _side(side, "side")
    h, w = t.shape[-2:]
    if min(h, w) == 0:
        raise ValueError(f"cannot resize an empty image of shape {tuple(t.shape)}: its height and width must be "
                         "at least 1 px")
    if min(h, w) == side:
        return t
    scale = side / min(h, w)
    new = (max(side, round(h * scale)), max(side, round(w * scale)))
    out = F.interpolate(t[None], size=new, mode="bilinear", align_corners=False, antialias=True)[0]
    return out.clamp_(0.0, 1.0)


def center_crop(t: torch.Tensor, side: int) -> torch.Tensor:
    """The centre side x side square of a (C, H, W) tensor with H, W >= side (a view, not a copy).

    Raises:
        TypeError: ``t`` is not a tensor, or ``side`` not an int.
        ValueError: ``t`` is not (C, H, W), ``side`` is not in 1 .. 4096, or ``side`` is larger than
            H or W (the square would not fit).
    """
    t = _image_tensor(t)
    side = _side(side, "side")
    h, w = t.shape[-2:]
    if side > min(h, w):
        raise ValueError(f"cannot crop a {side}x{side} square from an image of {h}x{w} px (height x width): side "
                         f"must be at most {min(h, w)}")
    top, left = (h - side) // 2, (w - side) // 2
    return t[..., top:top + side, left:left + side]


class Denormalize:
    """Normalised tensor -> float image in [0, 1] for display, channels last.

    ``x * std + mean``, clipped to [0, 1], moved to the CPU as numpy float32.
    Accepts (3, H, W) -> (H, W, 3) or (N, 3, H, W) -> (N, H, W, 3).
    ``mean`` and ``std`` are checked as in :class:`ImagePreprocess` (three numbers each, std > 0, or both None).
    """

    def __init__(self, mean: Sequence[float] | None, std: Sequence[float] | None) -> None:
        self.mean, self.std = check_normalisation(mean, std)

    def __call__(self, x: torch.Tensor) -> np.ndarray:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"denormalize expects a torch.Tensor, got {type(x).__name__}")
        if x.ndim not in (3, 4) or x.shape[-3] != 3:
            raise ValueError(f"denormalize expects (3, H, W) or (N, 3, H, W), got shape {tuple(x.shape)}")
        t = x.detach().to("cpu", torch.float32)
        if self.mean is not None:
            t = t * torch.tensor(self.std).view(3, 1, 1) + torch.tensor(self.mean).view(3, 1, 1)
        return t.clamp(0.0, 1.0).movedim(-3, -1).contiguous().numpy()

    def __repr__(self) -> str:
        return f"Denormalize(mean={self.mean}, std={self.std})"


@dataclass
class Bundle:
    """A ready-to-use classifier: the model plus its input and output conventions.

    Attributes:
        model: the network, in eval mode, on the CPU.
        classes: class names, index = output unit.
        preprocess: image (path, PIL, numpy, tensor...) -> normalised float tensor (3, H, W).
        input_size: (3, H, W) the model expects.
        name: short model name (``"shapesnet"``, ``"tinyvgg"``, ``"resnet18"`` ...).
        weights: human-readable description of the weights and where they came from.
        mean, std: the per-channel normalisation ``preprocess`` applies (None: none).
        denormalize: normalised tensor (3, H, W) or (N, 3, H, W) -> numpy float image(s),
            channels last, in [0, 1]. Built from mean/std when not given (None).

    ``mean`` and ``std`` are checked by :func:`check_normalisation` and kept as tuples of floats;
    ``classes`` is kept as a list of str and ``input_size`` as a tuple of three ints.

    Raises:
        TypeError: a ``model`` that is not an ``nn.Module``, a ``preprocess`` that is not callable,
            a ``denormalize`` that is neither None nor callable, ``mean``/``std`` that are not three
            numbers, ``classes`` that are not a list, tuple or 1-D array of str, or a ``name`` or
            ``weights`` that is not a str.
        ValueError: ``mean``/``std`` that :func:`check_normalisation` refuses, or an ``input_size``
            that is not three positive ints (C, H, W).
    """

    model: nn.Module
    classes: list[str]
    preprocess: Callable[[Any], torch.Tensor]
    input_size: tuple[int, int, int]
    name: str
    weights: str
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    denormalize: Callable[[torch.Tensor], np.ndarray] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.model, nn.Module):
            hint = (": it looks like a state_dict; build the model and load it with model.load_state_dict(...)"
                    if isinstance(self.model, Mapping) else "")
            raise TypeError(f"model must be a torch.nn.Module, got {type(self.model).__name__}{hint}")
        if not callable(self.preprocess):
            raise TypeError(f"preprocess must be a callable (image -> tensor (3, H, W)), got "
                            f"{type(self.preprocess).__name__}")
        if self.denormalize is not None and not callable(self.denormalize):
            raise TypeError(f"denormalize must be None or a callable (tensor -> image), got "
                            f"{type(self.denormalize).__name__}")
        self.classes = class_name_list(self.classes)
        self.input_size = check_input_size(self.input_size)
        for field_name in ("name", "weights"):
            if not isinstance(getattr(self, field_name), str):
                raise TypeError(f"{field_name} must be a str, got {type(getattr(self, field_name)).__name__}")
        self.mean, self.std = check_normalisation(self.mean, self.std)
        if self.denormalize is None:
            self.denormalize = Denormalize(self.mean, self.std)

    def batch(self, images: Sequence[Any] | Any) -> torch.Tensor:
        """Preprocess ``images``, one image or a list of images, into a batch (N, 3, H, W).

        Only the preprocessing runs; the model is not used. An image is anything
        :func:`cnnwidgets.load_image` accepts, or the name of a shipped sample (``"star"``, see
        :data:`~cnnwidgets.zoo.gallery.SAMPLE_SPECS`) where no file of that name exists, as
        :func:`cnnwidgets.explore` takes it.

        Raises:
            ValueError: for an empty list (a batch needs at least one image), and whatever
                ``preprocess`` raises for an image it cannot read.
        """
        if isinstance(images, (list, tuple)):
            if not images:
                raise ValueError(f"batch needs at least one image, got an empty {type(images).__name__}")
            return torch.stack([self.preprocess(_sample_or(im)) for im in images])
        return self.preprocess(_sample_or(images))[None]

    @torch.no_grad()
    def predict(self, image: Any, top_k: int = 5) -> list[tuple[str, float]]:
        """Top-k (class name, probability) for one image, most likely first.

        The answer is always the model's evaluation-mode one, and the model is left exactly
        as it was (training flags, BatchNorm running statistics, gradients): a model in
        evaluation mode, as bundles come, runs directly (no gradients, no hooks added); one with
        any module in training mode (after ``bundle.model.train()``) runs as a private
        evaluation copy made by a :class:`~cnnwidgets.core.probe.Probe` for this call, so its
        flags are never switched. For many predictions or a layer's output, use a Probe.

        Args:
            image: one image, anything :func:`cnnwidgets.load_image` accepts, or a shipped sample's
                name (see :meth:`batch`).
            top_k: how many classes to list, an int >= 1 (at most all of them are listed).

        Raises:
            TypeError: a list or tuple of images (predict one at a time, or pass
                ``bundle.batch(images)`` to a Probe), or a ``top_k`` that is not an int.
            ValueError: ``top_k < 1``, an image ``preprocess`` cannot read, or a model whose
                number of outputs is not the number of class names.
        """
        top_k = as_count(top_k, "top_k")
        if isinstance(image, (list, tuple)):
            raise TypeError(
                f"predict takes one image, got a {type(image).__name__} of {len(image)}; call it once per image, "
                "or run bundle.batch(images) through a cnnwidgets.Probe for a batch"
            )
        x = self.batch(image)
        param = next(self.model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        if any(module.training for module in self.model.modules()):
            # Not model.eval(): the user's flags stay as they are; the probe's copy is in eval mode.
            with Probe(self.model, device=device, channels_last=False, input_size=tuple(x.shape[1:])) as probe:
                output = probe.logits(x, cache=False)
        else:
            if param is not None:
                x = x.to(param.device, param.dtype)
            output = self.model(x)
        probs = class_probabilities(output)[0].float()
        if probs.numel() != len(self.classes):
            raise ValueError(
                f"the model gives {probs.numel()} class scores but the bundle has {len(self.classes)} class names"
            )
        values, indices = probs.topk(min(top_k, probs.numel()))
        return [(self.classes[i], float(v)) for v, i in zip(values.tolist(), indices.tolist())]

    def __repr__(self) -> str:
        n = sum(p.numel() for p in self.model.parameters())
        return (f"Bundle(name={self.name!r}, model={type(self.model).__name__} ({n:,} parameters), "
                f"classes={len(self.classes)}, input_size={self.input_size}, weights={self.weights!r})")


def _sample_or(image: Any) -> Any:
    """``image``, or the shipped sample it names when it is a sample's name and no such file exists."""
    if isinstance(image, str) and image in SAMPLE_SPECS and not Path(image).exists():
        return sample_image(image)
    return image
