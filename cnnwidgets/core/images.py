"""Turn whatever image a user has into one well-defined RGB picture.

:func:`load_image` is the single entry point for user images (files, uploads, PIL images,
numpy arrays, tensors); :func:`image_to_tensor` gives the same picture as a float tensor
without rounding float inputs to 8 bits. The conversion rules are listed in
:func:`load_image`'s docstring and are the same for every source.
"""

from __future__ import annotations

import http.client
import io
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from cnnwidgets.core.targets import as_count

__all__ = [
    "COMPOSITED", "DEFAULT_MAX_SIZE", "DOWNLOAD_DEADLINE", "DOWNLOAD_LIMIT", "DOWNLOAD_TIMEOUT", "IMAGENET_CLASSES",
    "IMAGENET_MEAN", "IMAGENET_STD", "MIN_SIZE",
    "ImageSource",
    "image_to_tensor", "load_image", "max_pixels",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
"""ImageNet's per-channel pixel mean and std (RGB, pixels in [0, 1]): the normalisation of
torchvision's and timm's ImageNet models."""

IMAGENET_CLASSES = 1000
"""The number of outputs of an ImageNet classifier (a model with this many is taken to be one
where a default is chosen)."""

DEFAULT_MAX_SIZE = 4096
"""Longest side, in pixels, above which images are downscaled."""

COMPOSITED = "cnnwidgets.composited"
"""Key that :func:`load_image` sets to True in the ``info`` of an image whose source had
transparency (an alpha channel, a four-channel array or tensor, or a transparent colour) that it
composited over white (rule 4). Copies of that image keep it."""

MIN_SIZE = 8
"""Smallest accepted side, in pixels."""

DOWNLOAD_LIMIT = 50 * 2**20
"""Largest image file, in bytes, fetched from an ``http(s)://`` address."""

DOWNLOAD_TIMEOUT = 10.0
"""Seconds to wait for an image server to accept the connection, to answer the request, and for each
next piece of the file, before giving up (a server that never answers fails after this long)."""

DOWNLOAD_DEADLINE = 60.0
"""Seconds a whole image download may take, from connecting to the last byte. A server that sends the
file very slowly (a few bytes a second, each piece within :data:`DOWNLOAD_TIMEOUT`) is stopped then,
instead of blocking the caller (a notebook kernel) for hours."""

_DOWNLOAD_CHUNK = 64 * 2**10  # bytes asked for per read; a read returns whatever has arrived, up to this

_PIL_DEFAULT_MAX_PIXELS = 89_478_485  # PIL's own default of Image.MAX_IMAGE_PIXELS (1 GiB / 4 / 3)

ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, io.IOBase, Image.Image, np.ndarray, torch.Tensor]

_ACCEPTED = (
    "a file path (str or pathlib.Path), an http(s):// address, encoded file bytes or a binary file "
    "object, a PIL.Image, a numpy array or a torch tensor"
)
_ARRAY_RULES = (
    "arrays/tensors must be (H, W), (H, W, C) or (C, H, W) with C in 1, 3, 4 (a leading batch "
    "dimension of size 1 is allowed), of dtype uint8, uint16 or float in [0, 1]"
)
_FORMATS = "PNG, JPEG, GIF, BMP, TIFF, WebP ..."
_WHITE = (255, 255, 255)
_URL_SAFE = "/%:@!$&'()*+,;=~"


def load_image(src: Any, size: int | tuple[int, int] | None = None, *, max_size: int = DEFAULT_MAX_SIZE,
               min_size: int = MIN_SIZE) -> Image.Image:
    """Load or convert an image to an 8-bit RGB ``PIL.Image`` by one documented rule.

    Rules, applied in this order:

    1. **Source.** A path (``str``/``Path``) is opened with PIL; an ``http://`` or
       ``https://`` address is downloaded first (at most :data:`DOWNLOAD_LIMIT` bytes, waiting
       at most :data:`DOWNLOAD_TIMEOUT` seconds to connect, for the answer and for each next
       piece of the file, and at most :data:`DOWNLOAD_DEADLINE` seconds for the whole
       download); characters not allowed in an address
       (spaces, non-ASCII letters, a ``%`` not followed by two hex digits) in its path or query
       are percent-encoded first, so a pasted ``.../my photo.png`` works. An invalid address,
       an unreachable server, an HTTP error or a broken response raises ``ValueError``. Encoded
       bytes or a binary file object are decoded likewise (e.g. from an upload widget; the file
       object is left open; one opened in text mode raises ``TypeError``). A file that cannot be
       decoded (damaged, truncated, closed) raises ``ValueError``, whatever the decoder raised.
       Multi-frame files (GIF, TIFF, APNG) give their first frame; a file
       opened from a path is closed before returning. A PIL image is copied, never modified
       (its pixels are read first: one opened lazily from a damaged or closed file raises ``ValueError``).
    2. **Orientation.** The EXIF orientation tag, if any, is applied (a photo taken
       sideways comes out upright) and then dropped; for a PIL image this includes a tag set
       in memory with ``getexif()``.
    3. **Arrays and tensors.** Layout (H, W) is grayscale; (H, W, C) or (C, H, W) with
       C in {1, 3, 4} (1 = gray, 3 = RGB, 4 = RGBA); since sides below ``min_size`` are
       rejected, the channel axis is never ambiguous. A leading batch axis of size 1 is
       dropped. Tensors are detached and moved to the CPU; a tensor without values (on the
       ``meta`` device), a sparse or a nested tensor raises ``ValueError``. dtype ``uint8`` is used as is,
       ``uint16`` (either byte order) is scaled to 8 bits (``round(v / 257)``, so 65535 -> 255),
       floats of any precision must lie in [0, 1] (scaled by 255 and rounded); any other dtype, NaN, or a
       float outside [0, 1] raises ``ValueError`` (normalise-then-pass mistakes are caught here).
    4. **Modes.** Grayscale (``L``, ``1``, 16-bit ``I;16``/``I``) -> RGB by copying the
       gray value into R, G and B; 16-bit gray is scaled like uint16 above (a 32-bit
       ``I`` image must hold values in 0..65535). Images with transparency (``RGBA``,
       ``LA``, ``PA``, or a transparent colour in ``info["transparency"]``, e.g. a PNG tRNS
       chunk, for palette, ``RGB`` and all the grayscale modes above) are composited **over
       white** (``out = a * rgb + (1 - a) * 255``); a transparent colour is matched at the
       image's own bit depth, so in a 16-bit image only pixels with exactly that 16-bit value
       become white. Premultiplied alpha (``La``, ``RGBa``) is composited over white the
       same way, from the stored values (``out = stored + 255 - a``). Float ``F`` images follow the float rule.
       Everything else (``P``, ``CMYK``, ``YCbCr``, ...) goes through PIL's ``convert("RGB")``.
    5. **Size.** Either side smaller than ``min_size`` -> ``ValueError``. If the longer
       side exceeds ``max_size``, the image is downscaled (Lanczos) so that the longer
       side equals ``max_size``, keeping the aspect ratio.
    6. **Optional resize.** ``size=int`` resizes so that the *shorter* side equals
       ``size`` (aspect ratio kept, bilinear with antialiasing); ``size=(height, width)``
       resizes to exactly that, ignoring the aspect ratio. The result may have at most
       :func:`max_pixels` pixels (PIL's decompression-bomb limit, ``Image.MAX_IMAGE_PIXELS``:
       89,478,485 by default, about 9459 x 9459, the size above which PIL warns that a file may be
       a decompression bomb); a larger ``size`` raises ``ValueError`` instead of exhausting the memory.

    Args:
        src: the image; see rule 1 and 3.
        size: optional final resize (rule 6): a positive int or a (height, width) pair of
            positive ints (not bools).
        max_size: longest side allowed before downscaling (rule 5); an int >= ``min_size``.
        min_size: smallest side accepted (rule 5); an int >= 1.

    Returns:
        A new ``PIL.Image`` in mode ``"RGB"``; ``info[COMPOSITED]`` is True when transparency was
        composited over white (see :data:`COMPOSITED`).

    Raises:
        FileNotFoundError: a path that does not exist (the message has the path).
        ValueError: unreadable file, failed download (invalid address, no connection, HTTP error, broken
            response, a timeout or a download slower than :data:`DOWNLOAD_DEADLINE`), unsupported shape/dtype/value range, too small an image, a bad ``size`` (of any
            type, or too large: rule 6), ``min_size < 1`` or ``max_size < min_size``.
        TypeError: an unsupported kind of object (a file object open in text mode too), or a
            ``max_size``/``min_size`` that is not an int.
    """
    max_size, min_size = _check_limits(max_size, min_size)
    image = _open(src, max_size)
    composited = _has_transparency(image)
    image = _to_rgb(image)
    _check_min(image, min_size)
    image = _limit(image, max_size, min_size)
    if size is not None:
        image = _resize(image, size)
    if composited:
        image.info[COMPOSITED] = True
    return image


def image_to_tensor(src: Any, *, max_size: int = DEFAULT_MAX_SIZE, min_size: int = MIN_SIZE) -> torch.Tensor:
    """The image as a float32 tensor (3, H, W) in [0, 1], by the rules of :func:`load_image`.

    A floating-point tensor already in that form (or (H, W, 3), or with a batch axis of 1)
    keeps its exact values (no 8-bit rounding) and may live on any device; it is returned
    detached, contiguous and as float32. It must lie in [0, 1] (a ``ValueError`` says so,
    which catches already-normalised tensors); a 1- or 4-channel float tensor goes through
    :func:`load_image`. Every other input goes through :func:`load_image`.

    Args:
        src: the image, anything :func:`load_image` accepts.
        max_size: longest side allowed before downscaling (a float tensor that is larger goes through
            :func:`load_image`); an int >= ``min_size``.
        min_size: smallest side accepted; an int >= 1.

    Raises:
        Same as :func:`load_image`.
    """
    max_size, min_size = _check_limits(max_size, min_size)
    if isinstance(src, torch.Tensor) and src.is_floating_point():
        t = _squeeze_batch(_tensor_values(src))
        if t.dtype not in (torch.float32, torch.float64):
            t = t.float()  # half, bfloat16, float8: returned as float32 anyway
        t = _channels_first(t, tensor=True)
        if t.shape[0] == 3:
            _check_float_range(t)
            h, w = t.shape[-2:]
            if min(h, w) < min_size:
                raise ValueError(f"image is {w}x{h} pixels; each side must be at least {min_size} px")
            if max(h, w) <= max_size:
                return t.to(torch.float32).contiguous()
    pil = load_image(src, max_size=max_size, min_size=min_size)
    array = np.asarray(pil, dtype=np.float32) / np.float32(255.0)
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


# --------------------------------------------------------------------------- sources
def _open(src: Any, max_size: int) -> Image.Image:
    if isinstance(src, str) and src.lower().startswith(("http://", "https://")):
        return _decode(io.BytesIO(_download(src)), src, max_size)
    if isinstance(src, str) and not src.strip():
        raise ValueError(f"an empty string is not an image path; accepted: {_ACCEPTED}")
    if isinstance(src, str) and re.match(r"[A-Za-z][A-Za-z0-9+.-]+://", src):
        scheme = src.split("://", 1)[0]
        raise ValueError(f"cannot load an image from a {scheme}:// address; addresses must start with "
                         f"http:// or https:// (or give a local file path): {src!r}")
    if isinstance(src, (str, os.PathLike)):
        path = Path(src).expanduser()
        try:
            exists, is_dir = path.exists(), path.is_dir()
        except OSError as exc:  # a name too long for a path (a pasted data: URL), a folder not allowed to look in
            text = str(path) if len(str(path)) <= 80 else str(path)[:80] + "..."
            raise ValueError(
                f"cannot use {text!r} as an image file path ({exc.strerror or exc}); accepted: {_ACCEPTED}"
            ) from exc
        if not exists:
            raise FileNotFoundError(f"image file not found: {str(path)!r}")
        if is_dir:
            raise ValueError(f"{str(path)!r} is a directory, not an image file")
        return _decode(path, str(path), max_size)
    if isinstance(src, (bytes, bytearray, memoryview)):
        return _decode(io.BytesIO(bytes(src)), "the data given", max_size)
    if isinstance(src, io.TextIOBase):
        raise TypeError(
            "the given file object is open in text mode; open the image file in binary mode "
            f"(open(path, 'rb')) or pass its path; accepted: {_ACCEPTED}"
        )
    if isinstance(src, io.IOBase) or (hasattr(src, "read") and hasattr(src, "seek")):
        if getattr(src, "closed", False) is True:
            raise ValueError(
                "the given file object is closed; pass an open binary file (open(path, 'rb')), its path or its bytes"
            )
        return _decode(src, "the given file object", max_size)
    if isinstance(src, Image.Image):
        _load_pixels(src)
        return _upright(src)
    if isinstance(src, torch.Tensor):
        return _from_array(_tensor_to_numpy(src))
    if isinstance(src, np.ndarray):
        return _from_array(src)
    raise TypeError(f"cannot load an image from {type(src).__name__}; accepted: {_ACCEPTED}")


def _download(url: str) -> bytes:
    """The file at ``url``: at most :data:`DOWNLOAD_LIMIT` bytes, within :data:`DOWNLOAD_DEADLINE` seconds.

    The socket timeout (:data:`DOWNLOAD_TIMEOUT`) bounds each wait (to connect, for the answer, for the
    next piece of the file); the body is read piece by piece (each read returns what has arrived) so that
    the elapsed time is checked between pieces: a server that trickles a few bytes a second is stopped at
    the deadline. Every failure is a ``ValueError`` that names the address and what to do.
    """
    start = time.monotonic()
    wait = min(DOWNLOAD_TIMEOUT, DOWNLOAD_DEADLINE)
    yourself = "download the image yourself (in a browser, or with urllib/requests) and pass its path or bytes"
    try:
        request = urllib.request.Request(_quote_url(url), headers={"User-Agent": "cnnwidgets"})
        response = urllib.request.urlopen(request, timeout=wait)  # noqa: S310 - http(s) only
    except urllib.error.HTTPError as exc:
        raise ValueError(f"could not download the image from {url}: HTTP {exc.code} {exc.reason}") from exc
    except (http.client.InvalidURL, ValueError) as exc:
        raise ValueError(
            f"could not download the image from {url}: not a valid http(s) address ({exc})"
        ) from exc
    except TimeoutError as exc:  # connected, request sent, no answer (urllib leaves this one unwrapped)
        raise ValueError(
            f"could not download the image from {url}: timed out waiting for the server's answer: it accepted "
            f"the connection but sent no response within {wait:g} s (cnnwidgets.core.images.DOWNLOAD_TIMEOUT); "
            f"try again later, or {yourself}"
        ) from exc
    except urllib.error.URLError as exc:  # urllib wraps what fails while connecting (a timeout too) in this
        timed_out = isinstance(exc.reason, TimeoutError)
        raise ValueError(
            f"could not download the image from {url}: timed out connecting to the server (no connection within "
            f"{wait:g} s, cnnwidgets.core.images.DOWNLOAD_TIMEOUT); check the address and the network, or {yourself}"
            if timed_out else _unreachable(url, exc.reason)
        ) from exc
    except http.client.HTTPException as exc:
        raise _malformed(url, exc) from exc
    except OSError as exc:
        raise ValueError(_unreachable(url, exc)) from exc
    with response:
        data = _read_body(response, url, start, yourself)
    if len(data) > DOWNLOAD_LIMIT:
        raise _too_large(url)
    return data


def _unreachable(url: str, reason: object) -> str:
    return (f"could not download the image from {url} ({reason}); without a network connection, save the image "
            "and pass its path")


def _malformed(url: str, exc: Exception) -> ValueError:
    return ValueError(
        f"could not download the image from {url}: the server's response was broken off or malformed ({exc!r})"
    )


def _too_large(url: str) -> ValueError:
    return ValueError(f"the file at {url} is larger than {DOWNLOAD_LIMIT // 2**20} MiB; save it and pass its path")


def _read_body(response: Any, url: str, start: float, yourself: str) -> bytes:
    """``response``'s body, at most ``DOWNLOAD_LIMIT + 1`` bytes, read until ``DOWNLOAD_DEADLINE`` after ``start``."""
    length = response.headers.get("Content-Length", "")
    expected = int(length) if length.strip().isdigit() else None
    if expected is not None and expected > DOWNLOAD_LIMIT:
        raise _too_large(url)
    of = f" of {expected:,}" if expected is not None else ""
    sock = _socket_of(response)
    pieces: list[bytes] = []
    received = 0
    while received <= DOWNLOAD_LIMIT:
        left = DOWNLOAD_DEADLINE - (time.monotonic() - start)
        if left <= 0:
            elapsed = time.monotonic() - start
            raise ValueError(
                f"could not download the image from {url}: the download took longer than {DOWNLOAD_DEADLINE:g} s "
                f"(cnnwidgets.core.images.DOWNLOAD_DEADLINE) and was stopped; only {received:,}{of} bytes arrived in "
                f"{elapsed:.1f} s; the server is too slow: {yourself}"
            )
        wait = min(DOWNLOAD_TIMEOUT, left)
        if sock is not None:
            try:
                sock.settimeout(wait)  # a server that stalls near the deadline is not waited for past it
            except OSError:
                sock = None
        try:
            piece = response.read1(min(_DOWNLOAD_CHUNK, DOWNLOAD_LIMIT + 1 - received))
        except TimeoutError as exc:
            elapsed = time.monotonic() - start
            if elapsed >= DOWNLOAD_DEADLINE:
                continue  # reported as the deadline above
            raise ValueError(
                f"could not download the image from {url}: timed out while receiving: the server sent nothing for "
                f"{wait:g} s (cnnwidgets.core.images.DOWNLOAD_TIMEOUT) after {received:,}{of} bytes in {elapsed:.1f} s; "
                f"try again later, or {yourself}"
            ) from exc
        except http.client.HTTPException as exc:
            raise _malformed(url, exc) from exc
        except OSError as exc:
            raise ValueError(
                f"could not download the image from {url} ({exc}) after {received:,}{of} bytes; try again, or "
                f"{yourself}"
            ) from exc
        if not piece:
            break
        pieces.append(piece)
        received += len(piece)
    return b"".join(pieces)


def _socket_of(response: Any) -> Any:
    """The socket under an ``http.client`` response, to shorten its timeout near the deadline (None if not found)."""
    sock = getattr(getattr(getattr(response, "fp", None), "raw", None), "_sock", None)
    return sock if callable(getattr(sock, "settimeout", None)) else None


def _quote_url(url: str) -> str:
    """``url`` with the characters not allowed in its path and query percent-encoded (existing escapes kept)."""
    parts = urllib.parse.urlsplit(url)
    path = _quote_part(parts.path, _URL_SAFE)
    query = _quote_part(parts.query, _URL_SAFE + "?")
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, query, ""))


def _quote_part(text: str, safe: str) -> str:
    return re.sub(r"%(?![0-9A-Fa-f]{2})", "%25", urllib.parse.quote(text, safe=safe))


def _decode(fp: Any, what: str, max_size: int) -> Image.Image:
    try:
        with Image.open(fp) as opened:
            if opened.format == "JPEG":
                # Decode a huge JPEG at a reduced scale right away (still >= max_size).
                opened.draft(opened.mode, (max_size, max_size))
            opened.load()
            # A loaded copy made before the file is closed (multi-frame files keep it open).
            image = _upright(opened)
    except UnidentifiedImageError as exc:
        raise ValueError(f"{what} is not an image file in a format that can be read ({_FORMATS})") from exc
    except Image.DecompressionBombError as exc:
        raise ValueError(_too_many_pixels(what, exc)) from exc
    except (_OrientationError, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged file makes PIL's decoders fail in many ways
        # OSError and SyntaxError mostly, but also ValueError, EOFError, struct.error or
        # NotImplementedError in the decoder's own words
        raise ValueError(
            f"could not decode {what}: {_reason(exc)}; accepted: a complete, undamaged image file ({_FORMATS})"
        ) from exc
    return image


def _too_many_pixels(what: str, exc: Image.DecompressionBombError) -> str:
    """The message for an image PIL refuses to decode for its size (over twice
    ``Image.MAX_IMAGE_PIXELS``), with the numbers read from PIL's own message."""
    found = re.search(r"\((\d+) pixels\) exceeds limit of (\d+)", str(exc))
    if found is None:
        return f"{what} is too large to decode safely: {exc}"
    pixels, limit = int(found.group(1)), int(found.group(2))
    return (f"{what} is too large to decode safely: {pixels:,} pixels, more than the {limit:,} PIL decodes "
            "(twice PIL.Image.MAX_IMAGE_PIXELS, its limit against decompression bombs); use a smaller image, "
            "or raise PIL.Image.MAX_IMAGE_PIXELS for a file you trust")


def _reason(exc: BaseException) -> str:
    """``exc``'s message, or its class name when it has none."""
    return str(exc) or type(exc).__name__


class _OrientationError(ValueError):
    """The EXIF orientation of an image whose pixels could be read could not be applied."""


def _load_pixels(image: Image.Image) -> None:
    """Read the pixels of a PIL image given (PIL opens files lazily and reads them on first use), so
    that a file that is damaged, truncated or already closed is said as such."""
    try:
        image.load()
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged file makes PIL's decoders fail in many ways
        raise ValueError(
            f"could not read the pixels of the PIL image given ({_reason(exc)}): its file is damaged or "
            "incomplete, or was closed before the pixels were read (call image.load() while the file is open, "
            "or pass the file's path or bytes)"
        ) from exc


def _upright(image: Image.Image) -> Image.Image:
    """A new image with the EXIF orientation applied; ``image`` itself is not changed."""
    try:
        upright = ImageOps.exif_transpose(image)
    except Exception as exc:  # noqa: BLE001 - a broken EXIF block must not make a readable image unusable
        raise _OrientationError(f"the image's EXIF orientation data could not be applied: {exc}") from exc
    return upright if upright is not None else image.copy()


def _tensor_values(t: torch.Tensor) -> torch.Tensor:
    """``t`` detached; a tensor whose values cannot be read as an image's raises ``ValueError``."""
    if t.is_meta:
        raise ValueError(
            f"the tensor (shape {tuple(t.shape)}) is on the meta device: it has a shape but no values; pass a "
            "tensor that holds the image's values (on the CPU or a GPU)"
        )
    if t.is_nested:
        raise ValueError("got a nested tensor; pass one image as a plain tensor (H, W), (H, W, C) or (C, H, W)")
    if t.layout != torch.strided:
        raise ValueError(f"got a sparse tensor (layout {t.layout}); pass a dense one (tensor.to_dense())")
    return t.detach()


def _tensor_to_numpy(t: torch.Tensor) -> np.ndarray:
    t = _squeeze_batch(_tensor_values(t)).cpu()
    if t.is_floating_point() and t.dtype not in (torch.float32, torch.float64):
        t = t.float()  # half, bfloat16 and float8 have no numpy dtype
    if t.dtype == getattr(torch, "uint16", None):  # torch.uint16 exists from torch 2.3 on
        return t.to(torch.int32).numpy().astype(np.uint16)
    try:
        return t.numpy()
    except TypeError as exc:
        raise ValueError(f"unsupported tensor dtype {t.dtype}; {_ARRAY_RULES}") from exc


def _squeeze_batch(t):
    if t.ndim == 4:
        if t.shape[0] != 1:
            raise ValueError(f"got a batch of {t.shape[0]} images (shape {tuple(t.shape)}); pass one image")
        return t[0]
    return t


def _channels_first(t, *, tensor: bool):
    """(C, H, W) view of a 2-D or 3-D array/tensor; raises on shapes that are not images."""
    shape = tuple(t.shape)
    if t.ndim == 2:
        return t[None]
    if t.ndim != 3:
        raise ValueError(f"unsupported image shape {shape}; {_ARRAY_RULES}")
    if shape[-1] in (1, 3, 4) and shape[0] not in (1, 3, 4):
        return t.permute(2, 0, 1) if tensor else np.moveaxis(t, -1, 0)
    if shape[0] in (1, 3, 4) and shape[-1] not in (1, 3, 4):
        return t
    if shape[0] in (1, 3, 4) and shape[-1] in (1, 3, 4):
        raise ValueError(f"image shape {shape} is too small (each side must be at least {MIN_SIZE} px)")
    raise ValueError(f"unsupported image shape {shape}: no axis of 1, 3 or 4 channels; {_ARRAY_RULES}")


def _check_float_range(a, *, float_picture: bool = False) -> None:
    """Refuse NaN, infinities and values outside [0, 1], with a hint at the likely cause;
    ``float_picture``: ``a`` holds the values of a float (mode ``F``) PIL image, a file's perhaps,
    whose dtype the caller may not choose."""
    if (a.numel() if isinstance(a, torch.Tensor) else a.size) == 0:
        return  # no values: the size check says what is wrong
    if isinstance(a, torch.Tensor):
        if not bool(torch.isfinite(a).all()):
            raise ValueError("image contains NaN or infinite values")
        lo, hi = float(a.min()), float(a.max())
    else:
        if not np.isfinite(a).all():
            raise ValueError("image contains NaN or infinite values")
        lo, hi = float(a.min()), float(a.max())
    if lo < 0.0 or hi > 1.0:
        if lo >= -1e-3 and hi <= 1.0 + 1e-3:
            hint = " (just outside, as rounding leaves them: clip the image to [0, 1] first)"
        elif lo < 0.0:
            hint = " (it looks normalised; pass the image before normalisation)"
        else:
            hint = "" if hi > 255.0 else (
                " (a float image, such as a 32-bit float TIFF, must hold values in [0, 1]; for 0..255 values "
                "save it as an 8-bit image)" if float_picture else " (for 0..255 values use dtype uint8)")
        raise ValueError(f"float image values must lie in [0, 1], got [{_bound(lo)}, {_bound(hi)}]{hint}")


def _bound(value: float) -> str:
    """``value`` with 4 significant digits, or 9 where 4 would show a value outside [0, 1] as inside."""
    text = f"{value:.4g}"
    return text if (0.0 <= float(text) <= 1.0) == (0.0 <= value <= 1.0) else f"{value:.9g}"


def _from_array(a: np.ndarray) -> Image.Image:
    a = _squeeze_batch(np.asarray(a))
    chw = _channels_first(a, tensor=False)
    if chw.dtype.kind == "u" and chw.dtype.itemsize == 1:
        u8 = chw
    elif chw.dtype.kind == "u" and chw.dtype.itemsize == 2:
        u8 = _u16_to_u8(chw.astype(np.uint16))
    elif np.issubdtype(chw.dtype, np.floating):
        _check_float_range(chw)
        u8 = np.rint(chw.astype(np.float32) * np.float32(255.0)).astype(np.uint8)
    else:
        raise ValueError(f"unsupported image dtype {chw.dtype}; {_ARRAY_RULES}")
    hwc = np.ascontiguousarray(np.moveaxis(u8, 0, -1))
    channels = hwc.shape[-1]
    if channels == 1:
        return Image.fromarray(hwc[..., 0], "L")
    if channels == 3:
        return Image.fromarray(hwc, "RGB")
    return Image.fromarray(hwc, "RGBA")


def _u16_to_u8(a: np.ndarray) -> np.ndarray:
    return np.rint(a.astype(np.float32) / np.float32(257.0)).astype(np.uint8)


# --------------------------------------------------------------------------- modes
def _has_transparency(image: Image.Image) -> bool:
    """Whether :func:`_to_rgb` composites ``image`` over white: a mode with alpha, or a transparent colour."""
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or image.info.get("transparency") is not None


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image if image.info.get("transparency") is None else _over_white(image.convert("RGBA"))
    if mode in ("L", "1"):
        gray = np.asarray(image, dtype=np.uint8)
        transparent = image.info.get("transparency")
        if mode == "1":
            gray = gray * np.uint8(255)
            if isinstance(transparent, (int, np.integer)) and not isinstance(transparent, bool):
                transparent = 255 if transparent else 0
        return _gray_to_rgb(gray, gray, transparent)
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        values = np.asarray(image, dtype=np.int64)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise ValueError(
                f"32-bit integer image with values in [{values.min()}, {values.max()}]; "
                "only 0..65535 (16-bit) is supported"
            )
        return _gray_to_rgb(_u16_to_u8(values.astype(np.uint16)), values, image.info.get("transparency"))
    if mode == "F":
        values = np.asarray(image, dtype=np.float32)
        _check_float_range(values, float_picture=True)
        gray = np.rint(values * np.float32(255.0)).astype(np.uint8)
        return Image.fromarray(gray, "L").convert("RGB")
    if mode in ("La", "RGBa"):
        # premultiplied alpha (which PIL cannot convert to RGB for La, and un-premultiplies with a
        # rounding for RGBa): the stored colour is already a * colour, so over white
        # out = a * colour + (1 - a) * 255 = stored + 255 - a.
        values = np.asarray(image, dtype=np.int16)
        colour = np.clip(values[..., :-1] + 255 - values[..., -1:], 0, 255).astype(np.uint8)
        if mode == "La":
            return Image.fromarray(colour[..., 0], "L").convert("RGB")
        return Image.fromarray(colour, "RGB")
    if mode in ("RGBA", "LA", "PA"):
        return _over_white(image.convert("RGBA"))
    if mode == "P":
        if "transparency" in image.info:
            return _over_white(image.convert("RGBA"))
        return image.convert("RGB")
    try:
        return image.convert("RGB")
    except (ValueError, OSError) as exc:
        raise ValueError(f"cannot convert an image of mode {mode!r} to RGB: {exc}") from exc


def _gray_to_rgb(gray: np.ndarray, values: np.ndarray, transparent: Any) -> Image.Image:
    """RGB from 8-bit ``gray``; white where the image's own ``values`` equal the transparent colour."""
    if isinstance(transparent, (int, np.integer)) and not isinstance(transparent, bool):
        gray = np.where(values == transparent, np.uint8(255), gray)
    return Image.fromarray(np.ascontiguousarray(gray, dtype=np.uint8), "L").convert("RGB")


def _over_white(rgba: Image.Image) -> Image.Image:
    background = Image.new("RGBA", rgba.size, _WHITE + (255,))
    return Image.alpha_composite(background, rgba).convert("RGB")


# --------------------------------------------------------------------------- sizes
def max_pixels() -> int:
    """The most pixels :func:`load_image` makes with its ``size`` argument: PIL's
    decompression-bomb limit ``Image.MAX_IMAGE_PIXELS`` (89,478,485 unless changed), or that
    default when the limit has been switched off (set to None)."""
    limit = Image.MAX_IMAGE_PIXELS
    return int(limit) if limit else _PIL_DEFAULT_MAX_PIXELS


def _check_limits(max_size: Any, min_size: Any) -> tuple[int, int]:
    """``(max_size, min_size)`` as ints, checked: min_size >= 1 and max_size >= min_size."""
    min_size = as_count(min_size, "min_size")
    max_size = as_count(max_size, "max_size")
    if max_size < min_size:
        raise ValueError(f"max_size ({max_size}) must be >= min_size ({min_size})")
    return max_size, min_size


def _check_min(image: Image.Image, min_size: int) -> None:
    w, h = image.size
    if min(w, h) < min_size:
        raise ValueError(
            f"image is {w}x{h} pixels; each side must be at least {min_size} px (for a model that takes "
            "smaller inputs, give a larger image with input_size=(C, H, W): it is resized to that size)"
        )


def _limit(image: Image.Image, max_size: int, min_size: int) -> Image.Image:
    w, h = image.size
    longest = max(w, h)
    if longest <= max_size:
        return image
    scale = max_size / longest
    new = (max(1, round(w * scale)), max(1, round(h * scale)))
    if min(new) < min_size:
        raise ValueError(
            f"image is {w}x{h} pixels: downscaling it to at most {max_size} px would make its short side "
            f"{min(new)} px (< {min_size}); the aspect ratio is too extreme"
        )
    # Image.Resampling is Pillow >= 9.1; the plain constants (all versions) warn on 9.1-9.3
    return image.resize(new, getattr(Image, "Resampling", Image).LANCZOS, reducing_gap=3.0)


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _resize(image: Image.Image, size: int | tuple[int, int]) -> Image.Image:
    w, h = image.size
    if _is_int(size):
        if size < 1:
            raise ValueError(f"size must be a positive int or (height, width), got {size}")
        scale = size / min(w, h)
        new = (max(1, round(w * scale)), max(1, round(h * scale)))
    elif isinstance(size, (tuple, list)) and len(size) == 2 and all(_is_int(s) for s in size):
        if min(size) < 1:
            raise ValueError(f"size must be a positive int or (height, width), got {size}")
        new = (int(size[1]), int(size[0]))
    else:
        raise ValueError(
            f"size must be None, an int (shorter side) or (height, width) of ints (not bools), got {size!r}"
        )
    limit = max_pixels()
    if new[0] * new[1] > limit:
        raise ValueError(
            f"size={size!r} would make this {w}x{h} image {new[0]}x{new[1]} pixels, more than the "
            f"{limit:,} allowed (PIL's decompression-bomb limit, Image.MAX_IMAGE_PIXELS); give a smaller size"
        )
    if new == (w, h):
        return image
    return image.resize(new, getattr(Image, "Resampling", Image).BILINEAR, reducing_gap=None)
