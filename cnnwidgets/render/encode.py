"""Encoding rendered arrays to compressed bytes for the browser (one image per update)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from cnnwidgets.render._checks import check_bool, check_int

try:  # libjpeg-turbo without PIL's per-call overhead: about 4x faster on a small channel view
    import simplejpeg as _simplejpeg
except ImportError:  # pragma: no cover - a dependency, but Pillow does the same job
    _simplejpeg = None

__all__ = ["IMAGE_FORMATS", "JPEG_MAX_SIDE", "encode_image", "encode_jpeg", "encode_png"]

IMAGE_FORMATS: tuple[str, ...] = ("jpeg", "png")
JPEG_MAX_SIDE = 65500
"""The longest side libjpeg encodes, in pixels (the format's own limit is 65535)."""


def _padded_pixels(image: np.ndarray) -> np.ndarray | None:
    """The (H, W, 4) pixels behind an RGB view of 4-byte pixels (as rendered), else None."""
    if image.ndim != 3 or image.shape[2] != 3 or image.strides[1:] != (4, 1):
        return None
    h, w = image.shape[:2]
    if image.strides[0] != 4 * w or not isinstance(image.base, np.ndarray):
        return None
    start = image.__array_interface__["data"][0]
    base_start = image.base.__array_interface__["data"][0]
    if start < base_start or start + 4 * h * w > base_start + image.base.nbytes:
        return None  # the padding bytes are not all inside the buffer
    return np.lib.stride_tricks.as_strided(image, shape=(h, w, 4), strides=(4 * w, 4, 1), writeable=False)


def _check_image(image: np.ndarray) -> np.ndarray:
    """``image`` as an array if an encoder takes it: uint8, (H, W), (H, W, 1), (H, W, 3) or (H, W, 4),
    H and W >= 1 (a numpy array, or what ``np.asarray`` makes one of: a CPU tensor, a PIL image).
    An (H, W, 1) image is returned as its (H, W) view: one gray channel.

    Raises:
        TypeError: for something that is no array of numbers (None, a string, a ragged list ...).
        ValueError: for an array of another dtype or shape, or with no pixels.
    """
    if not isinstance(image, np.ndarray):
        accepted = "an image must be a uint8 numpy array (H, W), (H, W, 1), (H, W, 3) or (H, W, 4)"
        if image is None or isinstance(image, (str, bytes, bytearray)):
            raise TypeError(f"{accepted}, got {type(image).__name__}")
        try:
            image = np.asarray(image)
        except (TypeError, ValueError, RuntimeError) as exc:  # a ragged list, a tensor on a GPU ...
            raise TypeError(f"{accepted}, got {type(image).__name__} ({exc})") from None
        if image.dtype.kind in "OSUV":
            raise TypeError(f"{accepted}, got an array of {image.dtype} from a {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"only uint8 images can be encoded, got {image.dtype}; render them first")
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3, 4))):
        raise ValueError(f"expected an image of shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError("cannot encode an empty image: it needs at least one row and one column, "
                         f"got shape {image.shape}")
    return image[:, :, 0] if image.ndim == 3 and image.shape[2] == 1 else image


def _to_pil(image: np.ndarray, *, padded_ok: bool = False) -> Image.Image:
    """The PIL image of an array :func:`_check_image` accepted."""
    padded = _padded_pixels(image) if padded_ok else None
    if padded is not None:  # hand PIL the 4-byte pixels as they are (PIL stores RGB that way)
        return Image.frombuffer("RGBX", (image.shape[1], image.shape[0]), padded, "raw", "RGBX", 0, 1)
    if image.ndim == 2:
        return Image.fromarray(image, mode="L")
    return Image.fromarray(np.ascontiguousarray(image), mode="RGB" if image.shape[2] == 3 else "RGBA")


def encode_jpeg(image: np.ndarray, quality: int = 90, *, subsampling: bool = False) -> bytes:
    """JPEG bytes of ``image``, uint8 (H, W), (H, W, 1) or (H, W, 3) (lossy; fast: a few ms for 512x512), at
    ``quality`` 1..95.

    Without ``subsampling`` colours keep full resolution (4:4:4), so thin coloured tile
    borders stay sharp; with it (4:2:0) encoding is about 40 % faster and files are smaller,
    good enough for frames shown while dragging.

    Raises:
        ValueError: for a non-uint8 image, an RGBA image, an image of another shape, with no
            pixels or with a side longer than :data:`JPEG_MAX_SIDE` (65500: use PNG), or a
            quality outside 1..95.
        TypeError: for a quality that is not an int (a float, a string or a bool), or a
            ``subsampling`` that is not True or False.
    """
    quality = check_int(quality, "JPEG quality", minimum=1, maximum=95)
    subsampling = check_bool(subsampling, "subsampling")
    image = _check_image(image)
    if max(image.shape[:2]) > JPEG_MAX_SIDE:
        raise ValueError(f"JPEG takes images up to {JPEG_MAX_SIDE} pixels a side, got shape {image.shape}; "
                         "encode it as PNG, or resize it first")
    if _simplejpeg is not None:
        data = _encode_simplejpeg(image, quality, subsampling)
        if data is not None:
            return data
    pil = _to_pil(image, padded_ok=True)  # JPEG takes RGBX; PNG does not
    if pil.mode == "RGBA":
        raise ValueError("JPEG has no alpha channel; drop it or use PNG")
    buf = io.BytesIO()
    pil.save(buf, format="JPEG", quality=quality, subsampling=2 if subsampling else 0)
    return buf.getvalue()


def _encode_simplejpeg(image: np.ndarray, quality: int, subsampling: bool) -> bytes | None:
    """The same JPEG through simplejpeg (of an image :func:`_check_image` accepted), or None for
    what it does not take (left to Pillow)."""
    padded = _padded_pixels(image)
    if padded is not None:
        pixels, colorspace = padded, "RGBX"
    elif image.ndim == 3 and image.shape[2] == 3:
        pixels, colorspace = np.ascontiguousarray(image), "RGB"
    elif image.ndim == 2:
        pixels, colorspace = np.ascontiguousarray(image)[:, :, None], "GRAY"
    else:
        return None
    # (grey images have no colour to subsample; simplejpeg ignores the setting for them)
    return _simplejpeg.encode_jpeg(pixels, quality=quality, colorspace=colorspace,
                                   colorsubsampling="420" if subsampling else "444")


def encode_png(image: np.ndarray, compress_level: int = 1) -> bytes:
    """Lossless PNG bytes of ``image``, uint8 (H, W), (H, W, 1) (both gray), (H, W, 3) or (H, W, 4).

    ``compress_level`` 1 favours speed; 9 the smallest file.

    Raises:
        ValueError: for a non-uint8 image, an image of another shape or with no pixels, or a
            level outside 0..9.
        TypeError: for a level that is not an int.
    """
    compress_level = check_int(compress_level, "PNG compress_level", minimum=0, maximum=9)
    image = _check_image(image)
    buf = io.BytesIO()
    _to_pil(image).save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def encode_image(image: np.ndarray, fmt: str = "jpeg", *, quality: int = 90) -> bytes:
    """Encode ``image`` with ``fmt`` ``"jpeg"`` (``quality`` applies) or ``"png"``.

    Raises:
        ValueError: for an unknown format, or a ``quality`` outside 1..95 (checked for PNG too,
            which does not use it), and see the encoders.
        TypeError: for a format that is not a string, or a ``quality`` that is not an int.
    """
    if not isinstance(fmt, str):
        raise TypeError(f"image format must be a str, one of {', '.join(IMAGE_FORMATS)}; "
                        f"got {type(fmt).__name__} {fmt!r}")
    if fmt == "jpeg":
        return encode_jpeg(image, quality)
    if fmt == "png":
        check_int(quality, "JPEG quality", minimum=1, maximum=95)  # a mistake even where PNG ignores it
        return encode_png(image)
    raise ValueError(f"unknown image format {fmt!r}; accepted: {', '.join(IMAGE_FORMATS)}")
