"""The explorer's input: an image at model resolution, its preprocessed tensor and occluded variants.

The image the user sees and the box they drag are in **model-input pixels**: the image is
preprocessed once, and what is shown is the preprocessed tensor mapped back to colours with
the model's ``denormalize``. So ``box = (x, y, w, h)`` indexes the tensor directly, whatever
resizing or cropping the preprocessing does.

Occluding writes a fill into the box of the preprocessed tensor. Fills are prepared once per
image, in the normalised space of the model:

``gray``  pixel value 0.5 in every channel;
``mean``  the image's mean colour (mean of the normalised tensor per channel);
``black`` pixel value 0;
``blur``  a Gaussian blur of the image (sigma = 1/16 of the smaller side), so the box keeps
          the colours but loses the detail;
``noise`` uniform random pixel values from a fixed seed, the same in every frame.

``gray``, ``black`` and ``noise`` are pixel values and need the per-channel affine map between
pixels and the model's input, ``x = (pixel - mean) / std``; it is read off ``denormalize``
(which must be per-channel affine, as every usual normalisation is). Per-channel affine means
that every colour of the picture shown follows one input channel (or none) as
``pixel = x * std + mean``: gray models shown in R, G and B, RGB models, channel orders
swapped. An input channel that ``denormalize`` does not show (the fourth channel of an
RGB + depth model shown as RGB) has no pixel value: the pixel fills put the image's mean of
that channel there, as ``mean`` does. A pixel fill that cannot be expressed (``denormalize``
is not of this form, e.g. a gamma curve) raises :class:`FillError`.
"""

from __future__ import annotations

import base64
import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from cnnwidgets.core.images import COMPOSITED, IMAGENET_MEAN, IMAGENET_STD, load_image
from cnnwidgets.core.probe import channels_last_size_hint
from cnnwidgets.render.encode import encode_png
from cnnwidgets.render.overlay import desaturate
from cnnwidgets.widgets.controls import FILLS

# Image.Resampling is Pillow >= 9.1; the plain constants (all versions) warn on 9.1-9.3
_BILINEAR = getattr(Image, "Resampling", Image).BILINEAR

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PICTURE_SLACK",
    "PIXEL_FILLS",
    "FillError",
    "ImageInput",
    "ModelInput",
    "default_denormalize",
    "default_preprocess",
    "default_unnormalized",
    "model_input_range",
    "outside_share",
    "to_pil",
]

#: The fills given as pixel values, which need the affine map read off ``denormalize``.
PIXEL_FILLS = ("gray", "black", "noise")


class FillError(ValueError):
    """An occluder fill that this image's preprocessing cannot express."""


@dataclass(frozen=True)
class ModelInput:
    """A tensor given as the model's input as it is (already preprocessed, e.g. normalised):
    :meth:`ImageInput.prepare` uses it without ``preprocess`` and shows it through ``denormalize``.

    Attributes:
        tensor: the model input: a copy (later changes to the tensor given do not reach it), on the
            CPU, as float32; a leading batch axis of 1 is dropped.
    """

    tensor: torch.Tensor

    def __post_init__(self) -> None:
        if not isinstance(self.tensor, torch.Tensor):
            raise TypeError(f"ModelInput takes the model input as a torch.Tensor, (C, H, W) or (1, C, H, W), got "
                            f"{type(self.tensor).__name__}")
        kind = _no_values(self.tensor)
        if kind:
            raise ValueError(f"ModelInput was given a {kind} tensor, which holds no values to read; it takes an "
                             "ordinary (dense) tensor, (C, H, W) or (1, C, H, W)")
        x = self.tensor.detach()
        if x.dim() == 4 and x.shape[0] == 1:
            x = x[0]
        object.__setattr__(self, "tensor", x.to("cpu", torch.float32, copy=True).contiguous())


def _no_values(x: torch.Tensor) -> str:
    """What kind of tensor ``x`` is when it has no values to read as they are (``"meta"``,
    ``"sparse"``, ``"nested"``); ``""`` for an ordinary one."""
    if x.is_nested:
        return "nested"
    if x.layout != torch.strided:
        return "sparse"
    return "meta" if x.is_meta else ""


#: Share of a given model input's pixels that ``denormalize`` may put outside [0, 1] (beyond a
#: margin for rounding and resampling overshoot) before the input is refused as not what it inverts.
_OUTSIDE_REFUSED = 0.2


def outside_share(pixels: torch.Tensor | np.ndarray) -> float:
    """The share of ``pixels`` more than a resampling overshoot (0.05) outside [0, 1]: nil for a
    picture that was un-normalised right, large for one un-normalised by the wrong statistics."""
    values = torch.as_tensor(pixels)
    if values.numel() == 0:
        return 0.0  # nothing outside
    return float(((values < -0.05) | (values > 1.05)).float().mean())


def _check_inverted(
    x: torch.Tensor, shown: np.ndarray, mean: torch.Tensor | None, std: torch.Tensor | None
) -> None:
    """Refuse a model input ``x`` given as it is whose pixels mostly lie outside [0, 1]:
    ``denormalize`` is not the inverse of what made it (typically a 0..255 picture as a float
    tensor, which ImageNet statistics would show white), and the picture, the pixel fills and the
    scores would all be wrong.

    The pixels are ``x * std + mean`` per channel where ``denormalize`` is of that form (read off
    it as ``mean``, ``std``, (1, C, 1, 1): a ``denormalize`` that clips, as bundles' do, would
    hide them), else ``denormalize``'s output ``shown``.
    """
    if std is not None and mean is not None and not bool(torch.isnan(std).all()):
        kept = ~torch.isnan(std[0, :, 0, 0])  # the channels denormalize shows
        values = x[kept] * std[0, kept] + mean[0, kept]
    else:
        values = torch.as_tensor(np.asarray(shown, dtype=np.float32))
    outside = outside_share(values)
    if outside <= _OUTSIDE_REFUSED:
        return
    low, high = float(values.min()), float(values.max())
    raise ValueError(
        f"the tensor given as the model input un-normalises to pixel values in [{low:.4g}, {high:.4g}], "
        f"{100 * outside:.0f} % of them outside [0, 1]: denormalize is not the inverse of what made it. A picture "
        "with values 0..255 in a float tensor: divide it by 255 (or pass it as uint8) to have it preprocessed; "
        "a normalised input: pass the denormalize= that undoes its normalisation"
    )


def model_input_range(image: Any) -> tuple[float, float] | None:
    """``(min, max)`` of ``image`` when it is a floating-point tensor of finite values outside
    [0, 1]: not a picture (which :func:`to_pil` refuses) but a model input, normalised; None for
    anything else (a tensor without values to read, on the meta device, sparse or nested, too: :func:`to_pil`
    says what is wrong with it)."""
    if not isinstance(image, torch.Tensor) or not image.is_floating_point():
        return None
    if image.is_meta or image.is_nested or image.layout != torch.strided or image.numel() == 0:
        return None
    values = image.detach()
    if values.dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        values = values.float()  # float8, which isfinite, min and max do not take
    if not bool(torch.isfinite(values).all()):
        return None
    low, high = float(values.min()), float(values.max())
    return (low, high) if low < 0.0 or high > 1.0 else None


def to_pil(image: Any) -> Image.Image:
    """Turn ``image`` (a path, bytes, PIL image, array or tensor) into an RGB PIL image, by the one documented
    rule of :func:`cnnwidgets.core.images.load_image` (EXIF orientation, transparency over white,
    16-bit, size limits).

    An image whose source had transparency or four channels (RGBA, or a (4, H, W) tensor) carries
    that fact in its ``info`` (:data:`cnnwidgets.core.images.COMPOSITED`), for :class:`ImageInput`
    to tell.

    Raises:
        TypeError: for an unsupported type.
        ValueError: for data that is not a readable image.
    """
    return load_image(image)


def _preprocess_size(size: Any) -> tuple[int, int]:
    """``size = (H, W)`` as two positive ints (whole floats taken).

    Raises:
        TypeError: for a size that is not a pair of whole numbers. ValueError: for a side below 1.
    """
    accepted = "a pair (H, W) of positive whole numbers of pixels"
    if isinstance(size, (str, bytes)) or not isinstance(size, (Sequence, np.ndarray)):
        raise TypeError(f"size must be {accepted}, got {type(size).__name__} {size!r:.60}")
    if len(size) != 2:
        raise TypeError(f"size must be {accepted}, got {len(size)} value(s): {tuple(size)!r:.60}")
    sides = []
    for value in size:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise TypeError(f"size must be {accepted}, got {tuple(size)!r:.60}")
        if not (math.isfinite(value) and float(value).is_integer()):
            raise ValueError(f"size must be {accepted}, got {tuple(size)!r:.60}")
        sides.append(int(value))
    if min(sides) < 1:
        raise ValueError(f"size must be {accepted}, got {tuple(sides)}")
    return sides[0], sides[1]


def default_preprocess(size: tuple[int, int], channels: int = 3) -> Callable[[Image.Image], torch.Tensor]:
    """The preprocessing the explorer uses when none is given.

    Resizes to ``size`` = (H, W) (bilinear) and scales pixels to [0, 1]. With ``channels=3``
    the result is normalised with the ImageNet statistics (the torchvision convention); with
    ``channels=1`` the image is converted to grayscale (ITU-R 601 luma, as PIL does) and left
    unnormalised, since grayscale models differ in what they were trained on.

    Raises:
        TypeError: for a size that is not two whole numbers, or a channel count that is not an int.
        ValueError: for a size that is not positive, or a channel count other than 1 or 3 (give
            your own ``preprocess``).
    """
    height, width = _preprocess_size(size)
    if isinstance(channels, (bool, np.bool_)) or not isinstance(channels, (int, np.integer)):
        raise TypeError(f"channels must be an int, 1 (grayscale) or 3 (RGB), got {channels!r:.60}")
    channels = int(channels)
    if channels == 1:
        def grayscale(image: Image.Image) -> torch.Tensor:
            pil = to_pil(image).convert("L").resize((width, height), _BILINEAR)
            return torch.from_numpy(np.asarray(pil, dtype=np.float32) / 255.0)[None]

        return grayscale
    if channels != 3:
        hint = channels_last_size_hint((channels, height, width))
        raise ValueError(
            f"the default preprocessing makes 1-channel (grayscale) or 3-channel (RGB) inputs, not "
            f"{channels}{hint}; pass preprocess= (image -> ({channels}, H, W) tensor) and denormalize="
        )
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)

    def preprocess(image: Image.Image) -> torch.Tensor:
        pil = to_pil(image).resize((width, height), _BILINEAR)
        x = torch.from_numpy(np.asarray(pil, dtype=np.float32) / 255.0).permute(2, 0, 1)
        return (x - mean) / std

    return preprocess


def default_denormalize(x: torch.Tensor) -> np.ndarray:
    """Inverse of :func:`default_preprocess`: the (C, H, W) tensor ``x`` -> (H, W, 3) floats in [0, 1].

    Three channels are un-normalised with the ImageNet statistics; one channel is shown as
    gray (clipped to [0, 1]).

    Raises:
        TypeError: for anything but a torch.Tensor.
        ValueError: for a tensor that is not (1, H, W) or (3, H, W).
    """
    pixels = default_unnormalized(x).clamp(0, 1)
    return pixels.expand(3, -1, -1).permute(1, 2, 0).cpu().numpy()


def default_unnormalized(x: torch.Tensor) -> torch.Tensor:
    """The pixel values (C, H, W) that :func:`default_denormalize` shows for ``x`` before it clips
    them to [0, 1]: the ImageNet statistics undone for three channels, one channel as it is.

    Raises:
        TypeError: for anything but a torch.Tensor.
        ValueError: for a tensor that is not (1, H, W) or (3, H, W).
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"the default denormalize takes a torch.Tensor (C, H, W), the model input, got "
                        f"{type(x).__name__}")
    if x.dim() != 3 or x.shape[0] not in (1, 3):
        raise ValueError(
            f"the default denormalize handles (1, H, W) and (3, H, W) tensors, got shape {tuple(x.shape)}; "
            "pass denormalize= (model input (C, H, W) -> (H, W, 3) floats in [0, 1])"
        )
    if x.shape[0] == 1:
        return x
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(3, 1, 1)
    return x * std + mean


def _as_hwc(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        if value.dim() == 3 and value.shape[0] in (1, 3) and value.shape[-1] not in (1, 3):
            value = value.permute(1, 2, 0)
        value = value.numpy()
    try:
        arr = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"denormalize must return an (H, W, 3) or a gray (H, W) array of floats in [0, 1], "
                         f"got {type(value).__name__} {value!r:.60} ({exc})") from None
    if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 1):
        arr = np.repeat(arr.reshape(*arr.shape[:2], 1), 3, axis=2)  # gray: shown in R, G and B
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"denormalize must return an (H, W, 3) or a gray (H, W) image, got shape {arr.shape}")
    return arr


#: How far outside [0, 1] the picture ``denormalize`` returns may reach (and is clipped to [0, 1]
#: for display) before it is refused as not a picture in [0, 1]: float rounding and the overshoot
#: of bicubic or Lanczos resampling of a tensor (a tenth of an edge's contrast or so) stay well
#: within it, a 0..255 picture or an un-normalisation by the wrong statistics do not.
PICTURE_SLACK = 0.25

_PICTURE_ACCEPTED = "(H, W, 3) or (3, H, W) floats in [0, 1] (a gray (H, W) too)"


def _described(value: Any) -> str:
    """``value``'s kind as the user would write it: ``a torch.float32 tensor``, ``a numpy uint8 array``."""
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor"
    if isinstance(value, np.ndarray):
        return f"a numpy {value.dtype.name} array"
    if isinstance(value, Image.Image):
        return f"a PIL image (mode {value.mode})"
    return f"a {type(value).__name__}"


def _check_picture(value: Any, shown: np.ndarray) -> None:
    """Refuse ``denormalize``'s result ``value`` (as :func:`_as_hwc` made it: ``shown``) when it is
    not a picture in [0, 1]: uint8 pixels (a uint8 tensor or array, a PIL image), or values more
    than :data:`PICTURE_SLACK` outside [0, 1] (typically a 0..255 picture as floats). Either would
    be shown white and give the pixel fills values 255 times too large. NaN and inf are not
    counted (they are shown black)."""
    uint8 = isinstance(value, Image.Image) or (isinstance(value, torch.Tensor) and value.dtype == torch.uint8) \
        or (isinstance(value, np.ndarray) and value.dtype == np.uint8)
    if uint8:
        raise ValueError(
            f"denormalize returned {_described(value)}, 0..255 pixel values (here {int(shown.min())}.."
            f"{int(shown.max())}); it must return {_PICTURE_ACCEPTED}: divide by 255 (e.g. pixels.float() / 255, "
            "or pixels.astype(np.float32) / 255)"
        )
    finite = shown[np.isfinite(shown)]
    if finite.size == 0:
        return
    low, high = float(finite.min()), float(finite.max())
    if -PICTURE_SLACK <= low and high <= 1.0 + PICTURE_SLACK:
        return
    if high > 2.0 and low >= -PICTURE_SLACK:
        fix = ("a picture with values 0..255: divide by 255 (and if the model input itself holds 0..255 values, "
               "scale it in preprocess= instead)")
    else:
        fix = ("check that it undoes the normalisation of the model input (x * std + mean), and clip the result "
               "(e.g. .clamp(0, 1))")
    raise ValueError(
        f"denormalize returned {_described(value)} with values in [{low:.4g}, {high:.4g}]; it must "
        f"return {_PICTURE_ACCEPTED} (values at most {PICTURE_SLACK} outside are clipped): {fix}"
    )


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of a (1, C, H, W) tensor with reflect padding."""
    radius = max(1, int(math.ceil(3 * sigma)))
    radius = min(radius, x.shape[-1] - 1, x.shape[-2] - 1) if min(x.shape[-2:]) > 1 else 0
    if radius == 0:
        return x.clone()
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-(t**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    c = x.shape[1]
    padded = F.pad(x, (radius, radius, 0, 0), mode="reflect")
    x = F.conv2d(padded, kernel.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    padded = F.pad(x, (0, 0, radius, radius), mode="reflect")
    return F.conv2d(padded, kernel.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


_BOX_ACCEPTED = "four whole numbers (x, y, w, h) of model-input pixels"


def _box_number(value: Any, box: Any) -> int:
    """One number of an occluder ``box`` as an int: an int (numpy's and 0-d tensors too) or a
    float holding a whole number; a bool, a fraction, NaN, inf or anything else is refused."""
    if isinstance(value, (bool, np.bool_)) or (isinstance(value, torch.Tensor) and value.dtype == torch.bool):
        raise TypeError(f"the occluder box {_box_text(box)} holds a bool; it must be {_BOX_ACCEPTED}")
    try:
        return operator.index(value)
    except TypeError:
        pass
    if isinstance(value, (str, bytes)):
        raise TypeError(f"the occluder box {_box_text(box)} holds {value!r:.40}, not a number; it must be "
                        f"{_BOX_ACCEPTED}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"the occluder box {_box_text(box)} holds {_box_text(value)}, not a number; it must be "
                        f"{_BOX_ACCEPTED}") from None
    if not (math.isfinite(number) and number.is_integer()):
        raise ValueError(f"the occluder box {_box_text(box)} holds {_box_text(value)}, not a whole number; it must "
                         f"be {_BOX_ACCEPTED} (round the numbers first, or fit the box in with clamp_box)")
    return int(number)


def _box_text(value: Any) -> str:
    """``repr(value)`` cut to 80 characters (a huge int's repr may not even be made)."""
    try:
        text = repr(value)
    except ValueError:  # an int of more digits than Python writes out
        return f"a {type(value).__name__}"
    return text if len(text) <= 80 else text[:77] + "..."


def _number_text(value: int) -> str:
    """``value`` as written in a message: 1e+300, not its 301 digits."""
    if abs(value) < 2**53:
        return str(value)
    try:
        return repr(float(value))
    except OverflowError:
        return f"a {value.bit_length()}-bit number"


def _box_inside(box: Any, height: int, width: int) -> tuple[int, int, int, int]:
    """``box = (x, y, w, h)`` as four ints, checked to lie inside a ``width x height`` image.

    Raises:
        TypeError: for a box that is not a sequence of four numbers, or holds a bool.
        ValueError: for a box of another length, a number that is not whole or not finite, a box
            without a positive width and height, or one partly outside the image.
    """
    if type(box) is tuple and len(box) == 4:
        x, y, w, h = box
        if not (type(x) is int and type(y) is int and type(w) is int and type(h) is int):
            x, y, w, h = (_box_number(v, box) for v in box)
    else:
        if isinstance(box, (str, bytes, dict, set, frozenset)) or not hasattr(box, "__len__") \
                or not hasattr(box, "__getitem__"):
            raise TypeError(f"the occluder box must be {_BOX_ACCEPTED}, got {type(box).__name__} {_box_text(box)}")
        if isinstance(box, (torch.Tensor, np.ndarray)) and box.ndim != 1:
            raise ValueError(f"the occluder box must be {_BOX_ACCEPTED}, got an array of shape {tuple(box.shape)}")
        if len(box) != 4:
            raise ValueError(f"the occluder box must be {_BOX_ACCEPTED}, got {len(box)} numbers: {_box_text(box)}")
        x, y, w, h = (_box_number(v, box) for v in box)
    if w < 1 or h < 1 or x < 0 or y < 0 or x + w > width or y + h > height:
        given = "(" + ", ".join(_number_text(v) for v in (x, y, w, h)) + ")"
        if w < 1 or h < 1:
            raise ValueError(f"the occluder box {given} needs a positive width and height; it must be "
                             f"{_BOX_ACCEPTED} inside the {width}x{height} image")
        raise ValueError(f"the occluder box {given} does not lie inside the {width}x{height} image: it must be "
                         f"{_BOX_ACCEPTED} with x >= 0, y >= 0, x + w <= {width} and y + h <= {height} (the box is "
                         "not clipped: fit it in with clamp_box)")
    return x, y, w, h


#: The pixel value (in [0, 1], every colour) of the flat fills.
_FILL_LEVELS = {"gray": 0.5, "black": 0.0}


def _unknown_fill(fill: Any) -> ValueError:
    return ValueError(f"unknown occluder fill {fill!r:.60}; accepted: {', '.join(FILLS)}")


def _noise_pixels(shape: Sequence[int]) -> torch.Tensor:
    """The noise fill's pixels, uniform in [0, 1], the same for every call of a shape (seed 0)."""
    return torch.rand(tuple(shape), generator=torch.Generator().manual_seed(0))


def _run_preprocess(preprocess: Callable[[Any], torch.Tensor], pil: Image.Image, name: str) -> Any:
    """``preprocess(pil)``, its failure said as the user's ``preprocess`` failing on that image
    (a ValueError, the error raised as its ``__cause__``)."""
    try:
        return preprocess(pil)
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - a user's function: say where it failed
        width, height = pil.size
        raise ValueError(
            f"preprocess failed on image {name!r}, given to it as an RGB PIL image of {width}x{height} "
            f"(width x height) ({type(exc).__name__}: {exc}); it must map a PIL image to the model input, "
            "a (C, H, W) float tensor"
        ) from exc


def _refuse_integer_input(x: torch.Tensor) -> None:
    """Refuse a model input of integers (torchvision's ``PILToTensor``: uint8 0..255), which the
    model would be fed as it is, not as the [0, 1] floats (normalised) it was trained on."""
    try:
        values = f"values {x.min().item()}..{x.max().item()}"
    except RuntimeError:  # empty, or complex
        values = f"shape {tuple(x.shape)}"
    raise ValueError(
        f"preprocess returned a {x.dtype} tensor ({values}); the model takes float inputs: convert the "
        "pixels to floats in [0, 1] before normalising them, e.g. with torchvision's ToTensor() instead of "
        "PILToTensor(), or ConvertImageDtype(torch.float) (v2.ToDtype(torch.float32, scale=True)) after it"
    )


@dataclass
class ImageInput:
    """One image prepared for a model, with occluded variants on demand.

    Attributes:
        name: a label for the image.
        tensor: the preprocessed batch (1, C, H, W) on the CPU (float32).
        display: uint8 (H, W, 3), what the model sees, in colours.
        pixel_mean: per-channel ``mean`` of ``x = (pixel - mean) / std``, (1, C, 1, 1) (None if
            ``denormalize`` is not per-channel affine; NaN for a channel it does not show).
        pixel_std: per-channel ``std``, like ``pixel_mean``.
        source_size: (width, height) of the image given, before preprocessing (None if unknown).
        fourth_channel_dropped: the image given had four channels (RGBA, or a (4, H, W) tensor
            such as RGB + depth) and ``preprocess`` made four-channel inputs from the RGB image it
            is given: the model's fourth input channel does not come from the image's.
    """

    name: str
    tensor: torch.Tensor
    display: np.ndarray
    pixel_mean: torch.Tensor | None = None
    pixel_std: torch.Tensor | None = None
    source_size: tuple[int, int] | None = None
    fourth_channel_dropped: bool = False
    _fills: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    _shown_fills: dict[tuple[str, bool], np.ndarray] = field(default_factory=dict, repr=False)
    #: which input channel each colour of :attr:`display` shows (-1: none), and the colour's value
    #: where it shows none; None where ``denormalize`` is not per-channel affine
    _colours: tuple[tuple[int, ...], tuple[float, ...]] | None = field(default=None, repr=False)

    @classmethod
    def prepare(
        cls,
        image: Any,
        preprocess: Callable[[Any], torch.Tensor],
        denormalize: Callable[[torch.Tensor], Any],
        name: str = "image",
    ) -> ImageInput:
        """Preprocess ``image`` once and derive what the explorer shows.

        Args:
            image: anything :func:`to_pil` reads (path, bytes, PIL image, array, tensor), or a
                :class:`ModelInput`, used as the model input as it is (``preprocess`` is not called).
            preprocess: PIL image -> model input (C, H, W) (or (1, C, H, W)).
            denormalize: model input (C, H, W) -> (H, W, 3) floats in [0, 1], the picture shown.
            name: the entry's name (:attr:`name`).

        Raises:
            TypeError, ValueError: for an unreadable image or a preprocess/denormalize pair that
                does not produce a (C, H, W) float tensor and an (H, W, 3) image in [0, 1]: a
                tensor that looks like (H, W, C), an integer tensor (uint8 0..255, torchvision's
                ``PILToTensor``), a channel count the default ``denormalize`` does not handle, a
                ``preprocess`` or ``denormalize`` that fails (a ValueError whose ``__cause__`` is
                the error raised), a ``denormalize`` returning uint8 pixels or values more than
                :data:`PICTURE_SLACK` outside [0, 1] (0..255 floats); a tensor with NaN or inf.
        """
        given = isinstance(image, ModelInput)
        pil = None if given else to_pil(image)
        x = image.tensor if given else _run_preprocess(preprocess, pil, name)
        made, must = ("the model input given is", "be") if given else ("preprocess returned", "return")
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"preprocess must return a torch.Tensor, the model input (C, H, W) (or (1, C, H, W)), "
                            f"got {type(x).__name__}")
        kind = _no_values(x)
        if kind:
            raise ValueError(f"{made} a {kind} tensor, which holds no values to read; it must {must} an ordinary "
                             "(dense) (C, H, W) tensor (e.g. .to_dense(), or a tensor made on the CPU)")
        if x.dim() == 4 and x.shape[0] == 1:
            x = x[0]
        if x.dim() != 3:
            raise ValueError(f"{made} a tensor of shape {tuple(x.shape)}; it must {must} a (C, H, W) tensor")
        if x.numel() == 0:
            raise ValueError(f"{made} a tensor of shape {tuple(x.shape)}, without pixels; it must {must} a (C, H, W) "
                             "tensor with at least one channel and pixel")
        if x.shape[-1] in (1, 3, 4) and min(x.shape[0], x.shape[1]) > 4:
            raise ValueError(
                f"{made} a tensor of shape {tuple(x.shape)}, which looks like (H, W, C); it must {must} (C, H, W) "
                "(e.g. tensor.permute(2, 0, 1), or torchvision's ToTensor())"
            )
        if not x.is_floating_point():
            _refuse_integer_input(x)
        x = x.detach().float().cpu().contiguous()
        finite = torch.isfinite(x)
        if not bool(finite.all()):
            raise ValueError(
                f"{made} a tensor with {int((~finite).sum())} values of {x.numel()} that are not finite (NaN or "
                "inf); the model needs finite inputs (check the preprocessing: a division by a zero std?)"
            )
        if denormalize is default_denormalize and x.shape[0] not in (1, 3):
            raise ValueError(
                f"preprocess made {x.shape[0]}-channel inputs; the default denormalize handles 1 or 3 channels: "
                "pass denormalize= (model input (C, H, W) -> (H, W, 3) floats in [0, 1]) to show them"
            )
        try:
            picture = denormalize(x)
            shown = _as_hwc(picture)
        except ValueError:
            raise
        except Exception as exc:  # noqa: BLE001 - a user's function: say where it failed
            raise ValueError(
                f"denormalize failed on the preprocessed tensor of shape {tuple(x.shape)} "
                f"({type(exc).__name__}: {exc}); it must map (C, H, W) -> (H, W, 3) floats in [0, 1]"
            ) from exc
        if shown.shape[:2] != tuple(x.shape[1:]):
            raise ValueError(f"denormalize returned {shown.shape[:2]} for a tensor of size {tuple(x.shape[1:])}")
        try:
            _check_picture(picture, shown)
        except ValueError:
            if given:
                # the input's fault (a 0..255 tensor, un-normalised without clipping: said as such),
                # unless denormalize itself is off-scale: its zero, a normalised input's mean
                # pixel, is no pixel value in [0, 1]
                mean, std = cls._affine(x, denormalize)
                if mean is None or not bool((mean[~torch.isnan(mean)] > 1.0 + PICTURE_SLACK).any()):
                    _check_inverted(x, shown, mean, std)
            raise
        mean, std, colours = cls._affine_map(x, denormalize)
        if given:
            _check_inverted(x, shown, mean, std)
        # NaN from a denormalize of a finite input is shown black, without numpy's warning about casting it
        display = np.clip(np.nan_to_num(shown * 255.0 + 0.5, nan=0.0), 0, 255).astype(np.uint8)
        # in C order (a denormalize's permuted tensor is not): the occluded picture copies it on every move
        display = np.ascontiguousarray(display)
        return cls(name=name, tensor=x.unsqueeze(0), display=display, pixel_mean=mean, pixel_std=std,
                   source_size=None if pil is None else pil.size,
                   fourth_channel_dropped=pil is not None and x.shape[0] == 4 and bool(pil.info.get(COMPOSITED)),
                   _colours=colours)

    @classmethod
    def _affine(cls, x: torch.Tensor, denormalize) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Read ``pixel = x * std + mean`` per input channel off ``denormalize`` (None, None if it is
        not of that form; NaN for the input channels it does not show): see :meth:`_affine_map`."""
        mean, std, _ = cls._affine_map(x, denormalize)
        return mean, std

    @staticmethod
    def _affine_map(x: torch.Tensor, denormalize) -> tuple[torch.Tensor | None, torch.Tensor | None, Any]:
        """Read ``pixel = x * std + mean`` per input channel off ``denormalize`` (None, None, None if it is
        not of that form; NaN for the input channels it does not show), and which channel each
        colour of the picture shows: ``((channel or -1 per colour), (the colour's value where it
        shows none, per colour))``.

        One probe image of C + 1 pixels, zero but for ``0.1`` in channel ``j`` at pixel ``j + 1``,
        gives each colour's dependence on each channel: every colour may follow one channel at
        most, and the colours following a channel must follow it alike (gray shown in R, G, B).
        """
        c = x.shape[0]
        step = 0.1
        probe = torch.zeros(c, 1, c + 1)
        probe[torch.arange(c), 0, torch.arange(c) + 1] = step
        try:
            out = torch.from_numpy(_as_hwc(denormalize(probe))[0].copy()).double()  # (C + 1, 3)
        except Exception:  # noqa: BLE001 - an unusual denormalize only costs the pixel fills
            return None, None, None
        if out.shape[0] != c + 1:
            return None, None, None
        base = out[0]  # (3,)
        slopes = (out[1:] - base) / step  # (C, 3): d colour k / d channel j
        follows = slopes.abs() > 1e-6
        if (follows.sum(dim=0) > 1).any():
            return None, None, None  # a colour mixes channels
        mean = torch.full((c,), math.nan, dtype=torch.float64)
        std = torch.full((c,), math.nan, dtype=torch.float64)
        for j in range(c):
            colours = follows[j]
            if not colours.any():
                continue  # not shown: no pixel value for this channel
            s_j, m_j = slopes[j, colours], base[colours]
            if (s_j - s_j[0]).abs().max() > 1e-4 or (m_j - m_j[0]).abs().max() > 1e-4:
                return None, None, None  # shown in several colours, but not as gray
            std[j], mean[j] = s_j[0], m_j[0]
        if torch.isnan(std).all():
            return None, None, None
        # check on the real image (pixels inside (0, 1), where a clamp in denormalize cannot bite)
        try:
            pixels = torch.from_numpy(_as_hwc(denormalize(x))).double().permute(2, 0, 1)  # (3, H, W)
        except Exception:  # noqa: BLE001
            return None, None, None
        source = follows.double().argmax(dim=0)  # the channel each colour follows (if any)
        followed = follows.any(dim=0)
        slope = torch.where(followed, slopes[source, torch.arange(3)], torch.zeros(3, dtype=torch.float64))
        predicted = x.double()[source] * slope.view(3, 1, 1) + base.view(3, 1, 1)
        inside = (predicted > 0.01) & (predicted < 0.99)
        if inside.any() and (pixels - predicted)[inside].abs().max() > 1e-3:
            return None, None, None
        colours = (tuple(int(j) if f else -1 for j, f in zip(source.tolist(), followed.tolist())),
                   tuple(float(v) for v in base.tolist()))
        return mean.float().view(1, c, 1, 1), std.float().view(1, c, 1, 1), colours

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) in model-input pixels."""
        return int(self.tensor.shape[-2]), int(self.tensor.shape[-1])

    def fill_problem(self, fill: str) -> str | None:
        """Why ``fill`` cannot be used on this image, or None when it can (unknown fills included)."""
        if fill in PIXEL_FILLS and (self.pixel_mean is None or self.pixel_std is None):
            return (f"fill {fill!r} is a pixel value, but the denormalize of this model's input is not a per-channel "
                    "affine map (pixel = x * std + mean), so the value cannot be converted")
        return None

    def _from_pixels(self, pixels: torch.Tensor, fill: str) -> torch.Tensor:
        problem = self.fill_problem(fill)
        if problem is not None:
            raise FillError(f"{problem}; use fill 'mean' or 'blur'")
        value = (pixels - self.pixel_mean) / self.pixel_std
        unshown = torch.isnan(self.pixel_std)
        if unshown.any():  # channels without a pixel value keep the image's mean there
            value = torch.where(unshown, self.tensor.mean(dim=(2, 3), keepdim=True), value)
        return value

    @property
    def _blur_sigma(self) -> float:
        """The Gaussian's standard deviation of the blur fill, in pixels."""
        return max(1.0, min(self.size) / 16)

    def fill_tensor(self, fill: str) -> torch.Tensor:
        """The full-size (1, C, H, W) tensor a box of ``fill`` copies from (computed once).

        Raises:
            ValueError: for an unknown fill; :class:`FillError` (a ValueError) for a pixel fill
                the normalisation cannot express.
        """
        try:
            cached = self._fills.get(fill)
        except TypeError:  # unhashable: no fill's name
            raise _unknown_fill(fill) from None
        if cached is not None:
            return cached
        x = self.tensor
        if fill == "mean":
            value = x.mean(dim=(2, 3), keepdim=True).expand_as(x)
        elif fill == "blur":
            value = _gaussian_blur(x, self._blur_sigma)
        elif fill in _FILL_LEVELS:
            value = self._from_pixels(torch.full((1, x.shape[1], 1, 1), _FILL_LEVELS[fill]), fill).expand_as(x)
        elif fill == "noise":
            value = self._from_pixels(_noise_pixels(x.shape), fill)
        else:
            raise _unknown_fill(fill)
        value = value.contiguous()
        self._fills[fill] = value
        return value

    def occluded(self, box: Sequence[int] | None, fill: str = "gray") -> torch.Tensor:
        """The preprocessed batch with ``box = (x, y, w, h)`` replaced by ``fill`` (the original if None).

        The box is four whole numbers of model-input pixels (ints, or floats such as ``4.0``) and
        must lie inside the image: it is not clipped (:func:`~cnnwidgets.widgets.occluder.clamp_box`
        fits a box in).

        Raises:
            TypeError: for a box that is not four numbers (a bool among them).
            ValueError: for a box partly outside the image, without a positive width and height, with
                a number that is not whole or not finite, or an unknown fill.
        """
        if box is None:
            return self.tensor
        bx, by, bw, bh = _box_inside(box, *self.size)
        source = self.fill_tensor(fill)
        out = self.tensor.clone()
        out[..., by : by + bh, bx : bx + bw] = source[..., by : by + bh, bx : bx + bw]
        return out

    def display_fill(self, fill: str, gray: bool = False) -> np.ndarray:
        """The full-size uint8 (H, W, 3) picture a box of ``fill`` shows: what the model sees there,
        in the colours of :attr:`display` (in shades of gray with ``gray``), computed once per fill.

        Gray and black are their pixel values and noise the very noise the model gets; the mean
        is the image's mean colour, and blur the displayed image blurred as the model's input is
        (the same picture where ``denormalize`` is per-channel affine, as the usual normalisations
        are; close to it otherwise).

        Raises:
            ValueError: for an unknown fill.
        """
        key = (fill, bool(gray))
        try:
            cached = self._shown_fills.get(key)
        except TypeError:  # unhashable: no fill's name
            raise _unknown_fill(fill) from None
        if cached is not None:
            return cached
        if gray:
            shown = desaturate(self.display_fill(fill))
        else:
            h, w = self.display.shape[:2]
            if fill in PIXEL_FILLS and self._colours is not None:
                shown = self._pixel_fill_shown(fill)
            elif fill in _FILL_LEVELS:
                shown = np.full((h, w, 3), round(255 * _FILL_LEVELS[fill]), dtype=np.uint8)
            elif fill == "mean":
                shown = np.empty((h, w, 3), dtype=np.uint8)
                shown[...] = np.round(self.display.reshape(-1, 3).mean(axis=0)).astype(np.uint8)
            elif fill == "noise":
                pixels = _noise_pixels(self.tensor.shape)[0].numpy()  # (C, H, W) in [0, 1], as fill_tensor's
                pixels = np.repeat(pixels[:1], 3, axis=0) if pixels.shape[0] != 3 else pixels
                shown = np.round(pixels.transpose(1, 2, 0) * 255.0).astype(np.uint8)
            elif fill == "blur":
                picture = torch.from_numpy(self.display).permute(2, 0, 1)[None].float()
                blurred = _gaussian_blur(picture, self._blur_sigma)[0].permute(1, 2, 0)
                shown = blurred.round().clamp(0, 255).to(torch.uint8).numpy()
            else:
                raise _unknown_fill(fill)
        shown = np.ascontiguousarray(shown)
        shown.flags.writeable = False
        self._shown_fills[key] = shown
        return shown

    def _pixel_fill_shown(self, fill: str) -> np.ndarray:
        """The picture of the pixel fill ``fill`` as :attr:`display` shows the model's input: each
        colour the fill's pixel value of the channel that colour shows (a BGR model's first
        channel in blue), or the colour's own constant where it shows no channel."""
        h, w = self.display.shape[:2]
        c = self.tensor.shape[1]
        if fill == "noise":
            pixels = _noise_pixels(self.tensor.shape)[0].numpy()  # (C, H, W), as fill_tensor's
        else:
            pixels = np.full((c, 1, 1), _FILL_LEVELS[fill], dtype=np.float32)
        source, base = self._colours
        shown = np.empty((h, w, 3), dtype=np.uint8)
        for k in range(3):
            value = pixels[source[k]] if source[k] >= 0 else np.float32(base[k])
            shown[..., k] = np.round(np.clip(value, 0.0, 1.0) * 255.0)
        return shown

    def _gray_display(self) -> np.ndarray:
        """:attr:`display` in shades of gray, computed once (read-only)."""
        cached = self._shown_fills.get(("", True))
        if cached is None:
            cached = desaturate(self.display)
            cached.flags.writeable = False
            self._shown_fills[("", True)] = cached
        return cached

    def occluded_display(self, box: Sequence[int] | None, fill: str = "gray", gray: bool = False) -> np.ndarray:
        """:attr:`display` with ``box = (x, y, w, h)`` showing ``fill`` (see :meth:`display_fill`), as
        the model sees the occluded input; in shades of gray with ``gray``. Read-only: the image itself
        (or its gray version) when ``box`` is None, else a new array. The box is taken as by
        :meth:`occluded`.

        Raises:
            TypeError, ValueError: as :meth:`occluded`.
        """
        base = self._gray_display() if gray else self.display
        if box is None:
            return base
        bx, by, bw, bh = _box_inside(box, *self.size)
        out = base.copy()
        out[by : by + bh, bx : bx + bw] = self.display_fill(fill, gray)[by : by + bh, bx : bx + bw]
        return out

    def fill_color(self, fill: str) -> str:
        """A CSS colour previewing ``fill`` in the browser (the box is drawn with it): the fill's own
        colour, opaque, as the model sees it; for blur and noise, which :meth:`fill_image` shows,
        a see-through stand-in.

        Raises:
            ValueError: for an unknown fill.
        """
        if not isinstance(fill, str) or fill not in FILLS:
            raise _unknown_fill(fill)
        if fill in ("black", "gray", "mean"):
            r, g, b = (int(v) for v in self.display_fill(fill)[0, 0])
            return f"rgb({r}, {g}, {b})"
        if fill == "blur":
            return "rgba(255, 255, 255, 0.25)"
        return "rgba(200, 200, 200, 0.45)"

    def fill_image(self, fill: str) -> str:
        """A ``data:`` URL of the PNG of :meth:`display_fill` for a ``fill`` that is no flat colour
        (blur, noise), for the browser to show under the box; ``""`` for the others (see
        :meth:`fill_color`).

        Raises:
            ValueError: for an unknown fill.
        """
        if not isinstance(fill, str) or fill not in FILLS:
            raise _unknown_fill(fill)
        if fill not in ("blur", "noise"):
            return ""
        return "data:image/png;base64," + base64.b64encode(encode_png(np.asarray(self.display_fill(fill)))).decode()
