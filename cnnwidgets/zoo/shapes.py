"""A procedurally generated image dataset: one coloured shape on a textured background.

Five classes (:data:`CLASSES`): circle, square, triangle, star and cross. Every image is
64 x 64 RGB by default and holds exactly one shape of random size, position, rotation and
colour on a random background (a colour gradient, smooth colour blotches or soft
stripes), with a little shading on the shape and pixel noise over everything. The shape
is always clearly visible (its colour is kept away from the background's), so a small
CNN can learn the task; the varied backgrounds make it learn the shape's outline rather
than a colour.

Determinism
-----------
Images are made in chunks of :data:`CHUNK` images; chunk ``k`` of seed ``s`` depends only
on ``(s, k, size)`` (a ``numpy.random.Generator`` seeded with ``[s, k]``). Image ``i`` of
``ShapesDataset(n, seed=s)`` is therefore the same whatever ``n`` is and in whatever order
items are read, and ``make_batch(n, s)`` returns images ``0 .. n-1`` of that dataset. Two
seeds give unrelated images, so a held-out set is simply another seed.

Rendering is vectorised numpy (no per-pixel Python), a few thousand images per second on
one core: cheap next to training.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from cnnwidgets.core.targets import as_count, as_flag, as_index, as_seed

__all__ = [
    "CHUNK",
    "CLASSES",
    "MEAN",
    "STD",
    "ShapeSpec",
    "ShapesDataset",
    "check_image_count",
    "make_batch",
    "make_images",
    "normalize",
    "render_scene",
]

CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross")
"""Class names, in the order of the class index."""

CHUNK = 256
"""Images per independently seeded chunk."""

MEAN: tuple[float, float, float] = (0.45, 0.45, 0.45)
"""Per-channel mean used to normalise images for ShapesNet (measured on 8192 images: 0.448 +- 0.002)."""

STD: tuple[float, float, float] = (0.27, 0.27, 0.27)
"""Per-channel standard deviation used with :data:`MEAN` (measured: 0.268 +- 0.001)."""

_STAR_INNER = 0.45  # inner / outer radius of the five-pointed star (a regular pentagram has 0.38)
_CROSS_ARM = 0.30  # half-width / half-length of the cross's arms


@dataclass(frozen=True)
class ShapeSpec:
    """One shape to draw with :func:`render_scene`.

    Attributes:
        kind: class name, one of :data:`CLASSES`.
        center: (x, y) of the centre in pixels (0, 0 is the top-left corner of the image).
        radius: nominal size in pixels, as in the dataset (which draws 9 to 24 at 64 x 64).
            The drawn outer radius (circle radius, centre to corner or tip) is this times a
            per-class factor (circle 0.8, square 0.95, triangle 1.1, star 1.1, cross 1.0)
            so that the classes cover similar areas.
        angle: rotation in degrees, counter-clockwise on screen; at 0 a corner or tip points right.
        color: RGB in [0, 1].
    """

    kind: str
    center: tuple[float, float]
    radius: float
    angle: float
    color: tuple[float, float, float]


# --------------------------------------------------------------------------- geometry
def _star_distance(u: np.ndarray, v: np.ndarray, radius: np.ndarray, corners: int, inner: float) -> np.ndarray:
    """Signed distance (pixels, > 0 inside) to a star with ``corners`` tips, one on +u.

    The plane is folded into the half-sector ``[0, pi/corners]`` (the star is symmetric
    under rotation by ``2 pi / corners`` and mirroring), where the outline is one straight
    edge from the tip ``A = (radius, 0)`` to the inner vertex ``B`` at angle ``pi/corners``
    and distance ``inner * radius``. The distance to that edge's line is exact along the
    edges and a close approximation near the inner corners: enough for anti-aliasing.
    """
    half = np.float32(np.pi / corners)
    rho = np.sqrt(u * u + v * v)
    phi = np.mod(np.arctan2(v, u), 2 * half)
    phi = np.minimum(phi, 2 * half - phi)
    px, py = rho * np.cos(phi), rho * np.sin(phi)
    bx, by = inner * np.cos(half), inner * np.sin(half)
    # Unit normal of the edge A->B (A = (1, 0) in units of radius), pointing to the origin.
    ex, ey = bx - 1.0, by
    norm = np.hypot(ex, ey)
    nx, ny = -ey / norm, ex / norm
    if nx * -1.0 < 0:  # make n point from A towards the origin
        nx, ny = -nx, -ny
    return (px - radius) * np.float32(nx) + py * np.float32(ny)


def _convex_distance(u: np.ndarray, v: np.ndarray, radius: np.ndarray, corners: int) -> np.ndarray:
    """Signed distance (> 0 inside) to a regular convex polygon with a vertex on +u.

    ``apothem - max_k <p, n_k>`` over the side normals ``n_k``: exact inside, a slight
    underestimate of the outside distance near corners (only the anti-aliasing sees it).
    """
    best = None
    for k in range(corners):
        a = np.float32((2 * k + 1) * np.pi / corners)  # direction of side k's normal
        proj = u * np.cos(a) + v * np.sin(a)
        best = proj if best is None else np.maximum(best, proj)
    return radius * np.float32(np.cos(np.pi / corners)) - best


def _distance(kind: int, u: np.ndarray, v: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """Signed distance (> 0 inside) of points (u, v), in the shape's rotated frame."""
    name = CLASSES[kind]
    if name == "circle":
        return radius - np.sqrt(u * u + v * v)
    if name == "square":
        return _convex_distance(u, v, radius, 4)
    if name == "triangle":
        return _convex_distance(u, v, radius, 3)
    if name == "star":
        return _star_distance(u, v, radius, 5, _STAR_INNER)
    if name == "cross":
        au, av = np.abs(u), np.abs(v)
        arm = _CROSS_ARM * radius
        return np.maximum(np.minimum(arm - au, radius - av), np.minimum(arm - av, radius - au))
    raise ValueError(f"unknown shape kind {kind}")


# Per-class factor on the drawn radius so that the classes cover similar areas and size
# alone says little about the class.
_RADIUS_SCALE = {"circle": 0.8, "square": 0.95, "triangle": 1.1, "star": 1.1, "cross": 1.0}


def _coverage(kinds: np.ndarray, cx, cy, radius, angle, size: int) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] of each image's shape, shape (N, size, size)."""
    n = len(kinds)
    coords = np.arange(size, dtype=np.float32) + 0.5
    dx = coords[None, None, :] - cx[:, None, None]
    dy = coords[None, :, None] - cy[:, None, None]
    # Image y points down; rotate by +angle counter-clockwise on screen.
    cos, sin = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    u = cos * dx - sin * dy
    v = sin * dx + cos * dy
    dist = np.empty((n, size, size), dtype=np.float32)
    for kind in range(len(CLASSES)):
        idx = np.flatnonzero(kinds == kind)
        if idx.size:
            r = (radius[idx] * _RADIUS_SCALE[CLASSES[kind]])[:, None, None]
            dist[idx] = _distance(kind, u[idx], v[idx], r)
    return np.clip(dist + 0.5, 0.0, 1.0)


# --------------------------------------------------------------------------- colours
def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV -> RGB, all in [0, 1]; returns (N, 3)."""
    h6 = (h % 1.0) * 6.0
    k = (np.array([5.0, 3.0, 1.0])[None, :] + h6[:, None]) % 6.0
    f = np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)
    return v[:, None] * (1.0 - s[:, None] * f)


def _colors(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Shape and background colours whose RGB distance is at least 0.45."""
    shape = _hsv_to_rgb(rng.random(n), rng.uniform(0.35, 1.0, n), rng.uniform(0.35, 1.0, n))
    back = _hsv_to_rgb(rng.random(n), rng.uniform(0.0, 0.8, n), rng.uniform(0.1, 0.95, n))
    for _ in range(6):  # fixed number of redraws keeps the RNG stream deterministic
        redo = np.linalg.norm(shape - back, axis=1) < 0.45
        fresh = _hsv_to_rgb(rng.random(n), rng.uniform(0.0, 0.8, n), rng.uniform(0.1, 0.95, n))
        back = np.where(redo[:, None], fresh, back)
    still = np.linalg.norm(shape - back, axis=1) < 0.45
    # Last resort: a background of the opposite brightness.
    back[still] = np.where(shape[still].mean(axis=1, keepdims=True) > 0.5, 0.12, 0.88)
    return shape.astype(np.float32), back.astype(np.float32)


# --------------------------------------------------------------------------- backgrounds
def _bilinear_matrix(size: int, grid: int) -> np.ndarray:
    """(size, grid) weights that upsample a grid of control points bilinearly to size pixels."""
    pos = (np.arange(size) + 0.5) / size * (grid - 1)
    lo = np.clip(np.floor(pos).astype(int), 0, grid - 2)
    frac = pos - lo
    mat = np.zeros((size, grid), dtype=np.float32)
    mat[np.arange(size), lo] = 1.0 - frac
    mat[np.arange(size), lo + 1] = frac
    return mat


def _backgrounds(rng: np.random.Generator, base: np.ndarray, size: int) -> np.ndarray:
    """Textured backgrounds around each base colour, (N, size, size, 3) float32.

    Each image gets one of three textures: a linear colour gradient, smooth colour
    blotches (a random 5 x 5 grid upsampled bilinearly) or soft sinusoidal stripes.
    """
    n = len(base)
    f32 = np.float32
    kind = rng.integers(0, 3, n)
    theta = rng.uniform(0, 2 * np.pi, n).astype(f32)
    delta = rng.uniform(-0.25, 0.25, (n, 3)).astype(f32)
    grid = rng.uniform(-0.18, 0.18, (n, 5, 5, 3)).astype(f32)
    freq = rng.uniform(2.0, 7.0, n).astype(f32)
    phase = rng.uniform(0, 2 * np.pi, n).astype(f32)
    amp = rng.uniform(0.05, 0.15, n).astype(f32)

    out = np.empty((n, size, size, 3), f32)
    out[:] = base.astype(f32)[:, None, None, :]
    coords = (np.arange(size, dtype=f32) + f32(0.5)) / f32(size) - f32(0.5)

    def ramp(idx: np.ndarray) -> np.ndarray:
        return (np.cos(theta[idx])[:, None, None] * coords[None, None, :]
                + np.sin(theta[idx])[:, None, None] * coords[None, :, None])

    idx = np.flatnonzero(kind == 0)  # gradient
    out[idx] += ramp(idx)[..., None] * delta[idx, None, None, :]
    idx = np.flatnonzero(kind == 1)  # blotches
    if idx.size:
        up = _bilinear_matrix(size, 5)
        out[idx] += np.einsum("hg,ngkc,wk->nhwc", up, grid[idx], up, optimize=True)
    idx = np.flatnonzero(kind == 2)  # stripes
    wave = np.sin(f32(2 * np.pi) * freq[idx, None, None] * ramp(idx) + phase[idx, None, None])
    out[idx] += (wave * amp[idx, None, None])[..., None]
    return out


# --------------------------------------------------------------------------- rendering
def _render_chunk(seed: int, chunk: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Images ``chunk * CHUNK ...`` of the stream for ``seed``: (uint8 (CHUNK, size, size, 3), int64 labels)."""
    rng = np.random.default_rng([int(seed), int(chunk)])
    n = CHUNK
    scale = size / 64.0
    labels = rng.permutation(np.arange(n) % len(CLASSES)).astype(np.int64)
    radius = (rng.uniform(9.0, 24.0, n) * scale).astype(np.float32)
    margin = radius * np.float32(0.85)
    cx = (margin + rng.random(n) * (size - 2 * margin)).astype(np.float32)
    cy = (margin + rng.random(n) * (size - 2 * margin)).astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi, n).astype(np.float32)
    shape_rgb, back_rgb = _colors(rng, n)
    back = _backgrounds(rng, back_rgb, size)
    cover = _coverage(labels, cx, cy, radius, angle, size)
    # Shading: the shape's colour varies linearly across it (light from a random side).
    light = rng.uniform(0, 2 * np.pi, n).astype(np.float32)
    shade = (rng.uniform(0.0, 0.15, n) / radius).astype(np.float32)
    coords = np.arange(size, dtype=np.float32) + np.float32(0.5)
    ramp = ((np.cos(light) * shade)[:, None, None] * (coords[None, None, :] - cx[:, None, None])
            + (np.sin(light) * shade)[:, None, None] * (coords[None, :, None] - cy[:, None, None]))
    # image = back + alpha * (fill - back), with fill = colour + shading ramp
    alpha = cover[..., None]
    back += alpha * (shape_rgb[:, None, None, :] + ramp[..., None] - back)
    back += _pixel_noise(rng, n, size, rng.uniform(0.0, 0.06, n))
    return _to_uint8(back), labels


def _pixel_noise(rng: np.random.Generator, n: int, size: int, sigma: np.ndarray) -> np.ndarray:
    """Grey (same in R, G, B) uniform pixel noise with standard deviation ``sigma`` per image, (n, size, size, 1)."""
    raw = np.frombuffer(rng.bytes(n * size * size), np.uint8).reshape(n, size, size, 1)
    scale = (sigma * np.sqrt(12.0) / 255.0).astype(np.float32)[:, None, None, None]
    return (raw.astype(np.float32) - np.float32(127.5)) * scale


def _to_uint8(image: np.ndarray) -> np.ndarray:
    image = image * np.float32(255.0)
    np.clip(image, 0.0, 255.0, out=image)
    return np.rint(image, out=image).astype(np.uint8)


def _stream_args(n: object, seed: object, size: object, start: object = 0) -> tuple[int, int, int, int]:
    """``(n, seed, size, start)`` checked: ints (not bools or floats), ``n, start >= 0``, a seed
    in [0, 2**64) and ``size >= 16``; TypeError / ValueError otherwise, naming the argument."""
    return (as_count(n, "n", minimum=0), as_seed(seed), as_count(size, "size", minimum=16),
            as_count(start, "start", minimum=0))


def check_image_count(n: int, what: str, size: int = 64) -> None:
    """Refuse ``n`` images of ``size`` x ``size`` pixels when they could not fit in this machine's memory
    (rendering them would run until memory ran out); ``what`` names the count in the message. Where the
    memory cannot be read, nothing is refused.

    Raises:
        ValueError: naming ``what``, the memory the images need and the memory there is.
    """
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):  # no such query here: nothing to compare with
        return
    each = size * size * 3 + 8  # uint8 pixels and an int64 label
    if memory > 0 and n * each > memory:
        raise ValueError(f"{what}={n}: the images would take {n * each / 2**30:.3g} GiB ({each} bytes each), "
                         f"more than this machine's memory ({memory / 2**30:.3g} GiB); give fewer")


def make_images(n: int, seed: int = 0, *, size: int = 64, start: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Images ``start .. start+n-1`` of the stream for ``seed`` as numpy arrays.

    Args:
        n: number of images, an int >= 0.
        seed: stream seed, an int in [0, 2**64).
        size: side of the square images in pixels, an int >= 16; shapes scale with it.
        start: index of the first image, an int >= 0.

    Returns:
        ``(images, labels)``: uint8 array (n, size, size, 3) and int64 array (n,) of class
        indices into :data:`CLASSES`.

    Raises:
        TypeError: for an argument that is not an int (a float such as ``2.5``, a bool, a string).
        ValueError: for a negative ``n``/``start``/``seed``, a seed of 2**64 or more, ``size < 16``, or
            more images than this machine's memory holds.
    """
    n, seed, size, start = _stream_args(n, seed, size, start)
    check_image_count(n, "n", size)
    first, last = start // CHUNK, (start + n - 1) // CHUNK if n else start // CHUNK - 1
    parts = [_render_chunk(seed, k, size) for k in range(first, last + 1)]
    if not parts:
        return np.zeros((0, size, size, 3), np.uint8), np.zeros((0,), np.int64)
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    offset = start - first * CHUNK
    return images[offset:offset + n], labels[offset:offset + n]


def normalize(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 ``images`` (N, H, W, 3) or (H, W, 3) -> float tensor (N, 3, H, W) or (3, H, W), normalised.

    ``x = (pixel / 255 - MEAN) / STD`` per channel, the input convention of ShapesNet.
    """
    t = torch.as_tensor(images)
    if t.dtype != torch.uint8:
        raise TypeError(f"normalize expects uint8 images, got {t.dtype}")
    t = t.movedim(-1, -3).float().div_(255.0)
    mean = torch.tensor(MEAN).view(3, 1, 1)
    std = torch.tensor(STD).view(3, 1, 1)
    return t.sub_(mean).div_(std)


def make_batch(n: int, seed: int = 0, *, size: int = 64, start: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A ready-to-train batch: images ``start .. start+n-1`` of the stream for ``seed``.

    Args:
        n: batch size, an int >= 0.
        seed: stream seed, an int in [0, 2**64).
        size: image side in pixels, an int >= 16 (shapes scale with it).
        start: index of the first image in the stream, an int >= 0.

    Returns:
        ``(x, y)``: float tensor (n, 3, size, size) normalised with :data:`MEAN`/:data:`STD`,
        and int64 tensor (n,) of class indices.

    Raises:
        TypeError: for an argument that is not an int (a float such as ``2.5``, a bool, a string).
        ValueError: for a negative ``n``/``start``/``seed``, a seed of 2**64 or more, or ``size < 16``.
    """
    images, labels = make_images(n, seed, size=size, start=start)
    return normalize(images), torch.from_numpy(labels)


class ShapesDataset(Dataset):
    """``n`` generated images of one seed, as a torch ``Dataset`` of ``(x, label)`` pairs.

    Chunks are rendered on first access and kept (uint8, 12 KiB per 64 x 64 image), so
    random access is cheap after the first epoch. ``x`` is the normalised (3, size, size)
    float tensor (see :func:`normalize`), unless ``normalized=False`` which gives the uint8
    HWC numpy image.

    Args:
        n: number of images, an int >= 0.
        seed: stream seed, an int in [0, 2**64); use different seeds for training and held-out sets.
        size: image side in pixels, an int >= 16.
        normalized: return normalised tensors (True, the default) or raw uint8 HWC arrays (False).

    Raises:
        TypeError: for ``n``, ``seed`` or ``size`` not an int (a float, a bool ...), or ``normalized``
            not True or False.
        ValueError: for a negative ``n``/``seed``, a seed of 2**64 or more, or ``size < 16``.
    """

    classes = CLASSES

    def __init__(self, n: int, seed: int = 0, size: int = 64, *, normalized: bool = True) -> None:
        self.n, self.seed, self.size, _ = _stream_args(n, seed, size)
        self.normalized = as_flag(normalized, "normalized")
        self._chunks: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return self.n

    def _chunk(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        if k not in self._chunks:
            self._chunks[k] = _render_chunk(self.seed, k, self.size)
        return self._chunks[k]

    def image(self, index: int) -> tuple[np.ndarray, int]:
        """The raw uint8 (size, size, 3) image and label of item ``index``.

        Raises:
            TypeError: for an index that is not an int. IndexError: for one out of range.
        """
        index = as_index(index, "index")
        if not -self.n <= index < self.n:
            raise IndexError(f"index {index} out of range for a dataset of {self.n} images")
        index %= self.n
        images, labels = self._chunk(index // CHUNK)
        return images[index % CHUNK], int(labels[index % CHUNK])

    def __getitem__(self, index: int):
        image, label = self.image(index)
        if self.normalized:
            return normalize(image), label
        return image, label

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """All images and labels at once: uint8 (n, size, size, 3), int64 (n,)."""
        return make_images(self.n, self.seed, size=self.size)

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All items as one normalised float tensor (n, 3, size, size) and int64 labels (n,)."""
        return make_batch(self.n, self.seed, size=self.size)


def render_scene(shapes: Sequence[ShapeSpec], *, size: int = 64, seed: int = 0,
                 background: tuple[float, float, float] | None = None) -> np.ndarray:
    """Draw several shapes, in order, on one generated background.

    Used for the multi-shape sample images. The background texture and pixel noise come
    from ``seed``, with the same generator as the dataset.

    Args:
        shapes: what to draw, later shapes on top of earlier ones.
        size: image side in pixels, an int >= 1.
        seed: seed of the background texture and noise, an int in [0, 2**64).
        background: base RGB colour in [0, 1] of the background (random if None).

    Returns:
        uint8 array (size, size, 3).

    Raises:
        TypeError: for a size or seed that is not an int (a float, a bool ...).
        ValueError: for an unknown shape kind, ``size < 1`` or a seed out of range.
    """
    size, seed = as_count(size, "size"), as_seed(seed)
    rng = np.random.default_rng([seed, 1_000_003])
    base = np.array([background if background is not None else rng.uniform(0.15, 0.85, 3)], np.float32)
    image = _backgrounds(rng, base, size)[0]
    for spec in shapes:
        if spec.kind not in CLASSES:
            raise ValueError(f"unknown shape kind {spec.kind!r}; expected one of {CLASSES}")
        kind = np.array([CLASSES.index(spec.kind)])
        cover = _coverage(kind, np.array([spec.center[0]], np.float32), np.array([spec.center[1]], np.float32),
                          np.array([spec.radius], np.float32), np.array([np.deg2rad(spec.angle)], np.float32),
                          size)[0]
        alpha = cover[..., None]
        image = image * (1.0 - alpha) + np.asarray(spec.color, np.float32)[None, None, :] * alpha
    image = image + _pixel_noise(rng, 1, size, np.array([0.02]))[0]
    return _to_uint8(image)
