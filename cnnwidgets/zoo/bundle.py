"""A model together with what is needed to feed it and read its output."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cnnwidgets.core.images import image_to_tensor
from cnnwidgets.core.targets import class_probabilities

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
        size: side of the model's square input.
        mean, std: per-channel normalisation, or None for none.
        resize: shorter side before cropping (default ``size``: no border is cut from a square image).
    """

    def __init__(self, size: int, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 resize: int | None = None) -> None:
        if (mean is None) != (std is None):
            raise ValueError("give both mean and std, or neither")
        self.size = int(size)
        self.resize = int(resize) if resize is not None else self.size
        if self.resize < self.size:
            raise ValueError(f"resize ({self.resize}) must be >= size ({self.size})")
        self.mean = tuple(float(m) for m in mean) if mean is not None else None
        self.std = tuple(float(s) for s in std) if std is not None else None

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


def resize_shorter(t: torch.Tensor, side: int) -> torch.Tensor:
    """Resize a (3, H, W) float tensor so that min(H, W) == side (bilinear, antialiased)."""
    h, w = t.shape[-2:]
    if min(h, w) == side:
        return t
    scale = side / min(h, w)
    new = (max(side, round(h * scale)), max(side, round(w * scale)))
    out = F.interpolate(t[None], size=new, mode="bilinear", align_corners=False, antialias=True)[0]
    return out.clamp_(0.0, 1.0)


def center_crop(t: torch.Tensor, side: int) -> torch.Tensor:
    """The centre side x side square of a (C, H, W) tensor with H, W >= side."""
    h, w = t.shape[-2:]
    top, left = (h - side) // 2, (w - side) // 2
    return t[..., top:top + side, left:left + side]


class Denormalize:
    """Normalised tensor -> float image in [0, 1] for display, channels last.

    ``x * std + mean``, clipped to [0, 1], moved to the CPU as numpy float32.
    Accepts (3, H, W) -> (H, W, 3) or (N, 3, H, W) -> (N, H, W, 3).
    """

    def __init__(self, mean: Sequence[float] | None, std: Sequence[float] | None) -> None:
        self.mean = tuple(mean) if mean is not None else None
        self.std = tuple(std) if std is not None else None

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
            channels last, in [0, 1]. Built from mean/std when not given.
    """

    model: nn.Module
    classes: list[str]
    preprocess: Callable[[Any], torch.Tensor]
    input_size: tuple[int, int, int]
    name: str
    weights: str
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    denormalize: Callable[[torch.Tensor], np.ndarray] = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.denormalize is None:
            self.denormalize = Denormalize(self.mean, self.std)

    def batch(self, images: Sequence[Any] | Any) -> torch.Tensor:
        """Preprocess one image or a list of images into a batch (N, 3, H, W)."""
        if isinstance(images, (list, tuple)):
            return torch.stack([self.preprocess(im) for im in images])
        return self.preprocess(images)[None]

    @torch.no_grad()
    def predict(self, image: Any, topk: int = 5) -> list[tuple[str, float]]:
        """Top-k (class name, probability) for one image, most likely first.

        Runs the bundle's model directly (no hooks); for a user's model prefer a Probe.
        """
        param = next(self.model.parameters(), None)
        x = self.batch(image)
        if param is not None:
            x = x.to(param.device, param.dtype)
        probs = class_probabilities(self.model(x))[0].float()
        k = min(topk, probs.numel())
        values, indices = probs.topk(k)
        return [(self.classes[i], float(v)) for v, i in zip(values.tolist(), indices.tolist())]

    def __repr__(self) -> str:
        n = sum(p.numel() for p in self.model.parameters())
        return (f"Bundle(name={self.name!r}, model={type(self.model).__name__} ({n:,} parameters), "
                f"classes={len(self.classes)}, input_size={self.input_size}, weights={self.weights!r})")
