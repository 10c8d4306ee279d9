"""Sample images shipped with cnnwidgets, drawn by the project's own shape renderer.

One 64 x 64 image per ShapesNet class (``circle``, ``square``, ``triangle``, ``star``,
``cross``) plus multi-shape scenes (``scene-circle-star``, ``scene-square-triangle-cross``)
for showing where a model looks when several classes are present. They are generated
(no third-party pictures, so no licence question) and committed as PNG files in
``cnnwidgets/zoo/samples/``; ``python -m cnnwidgets.zoo.gallery`` rewrites them from the
specifications below, and a test checks that the shipped files match.
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys
from importlib import resources
from pathlib import Path

from PIL import Image

from cnnwidgets.zoo.shapes import ShapeSpec, render_scene

__all__ = ["DEFAULT_SAMPLE", "SAMPLE_SHAPES", "SAMPLE_SPECS", "render_sample", "sample_image", "samples", "write_samples"]

_S = ShapeSpec
SAMPLE_SPECS: dict[str, tuple[list[ShapeSpec], int, tuple[float, float, float]]] = {
    # name: (shapes, background seed, background base colour)
    "circle": ([_S("circle", (31.0, 33.0), 21.0, 0.0, (0.98, 0.78, 0.12))], 11, (0.18, 0.28, 0.55)),
    "square": ([_S("square", (33.0, 31.0), 20.0, 25.0, (0.86, 0.18, 0.2))], 12, (0.75, 0.82, 0.7)),
    "triangle": ([_S("triangle", (30.0, 34.0), 19.0, 90.0, (0.15, 0.55, 0.9))], 13, (0.92, 0.85, 0.55)),
    "star": ([_S("star", (32.0, 32.0), 20.0, 90.0, (1.0, 0.9, 0.2))], 14, (0.3, 0.15, 0.35)),
    "cross": ([_S("cross", (33.0, 32.0), 19.0, 15.0, (0.2, 0.75, 0.3))], 15, (0.85, 0.55, 0.6)),
    "scene-circle-star": ([_S("circle", (19.0, 20.0), 15.0, 0.0, (0.2, 0.85, 0.9)),
                           _S("star", (44.0, 43.0), 17.0, 90.0, (0.95, 0.35, 0.1))], 21, (0.2, 0.22, 0.25)),
    "scene-square-triangle-cross": ([_S("square", (16.0, 17.0), 12.0, 10.0, (0.95, 0.85, 0.2)),
                                     _S("triangle", (47.0, 19.0), 13.0, 90.0, (0.9, 0.2, 0.5)),
                                     _S("cross", (31.0, 46.0), 13.0, 0.0, (0.2, 0.4, 0.95))], 22, (0.82, 0.85, 0.88)),
}
"""How each sample is drawn: its shapes, the seed of its background texture, the base colour."""

SAMPLE_SHAPES: dict[str, tuple[str, ...]] = {name: tuple(s.kind for s in spec[0]) for name, spec in SAMPLE_SPECS.items()}
"""The shape classes present in each sample."""

DEFAULT_SAMPLE = "star"


def _check_name(name: object) -> str:
    """``name`` if it names a sample.

    Raises:
        TypeError: for a name that is not a str. KeyError: for an unknown name; the message lists
            the names and suggests the one meant for a near miss (``"Star"``, ``" star"``).
    """
    available = f"available: {', '.join(SAMPLE_SPECS)}"
    if not isinstance(name, str):
        raise TypeError(f"name must be a sample's name (a str such as 'star'), got {type(name).__name__} "
                        f"{name!r}; {available}")
    if name in SAMPLE_SPECS:
        return name
    text = name.strip().lower()
    starting = [n for n in SAMPLE_SPECS if text and n.startswith(text)]
    if text in SAMPLE_SPECS:
        meant: str | None = text
    elif len(starting) == 1:
        meant = starting[0]
    else:
        close = difflib.get_close_matches(text, list(SAMPLE_SPECS), n=1, cutoff=0.75)
        meant = close[0] if close else None
    hint = f" (did you mean {meant!r}?)" if meant else ""
    raise KeyError(f"no sample named {name!r}{hint}; {available}")


def render_sample(name: str) -> Image.Image:
    """Draw sample ``name`` from its specification (what the shipped PNG holds).

    Raises:
        TypeError: for a name that is not a str. KeyError: for an unknown name (the message lists
            the available ones).
    """
    name = _check_name(name)
    shapes, seed, background = SAMPLE_SPECS[name]
    return Image.fromarray(render_scene(shapes, size=64, seed=seed, background=background), "RGB")


def _folder():
    return resources.files("cnnwidgets.zoo") / "samples"


def sample_image(name: str | None = None) -> Image.Image:
    """One shipped sample image as an RGB ``PIL.Image`` (64 x 64).

    Args:
        name: a key of :data:`SAMPLE_SPECS`; None gives the default (``"star"``).

    Raises:
        TypeError: a name that is neither a str nor None.
        KeyError: unknown name (the message lists the available ones, and suggests the one meant for a
            near miss such as ``"Star"``).
        FileNotFoundError: the PNG is missing from the installed package.
    """
    name = _check_name(DEFAULT_SAMPLE if name is None else name)
    path = _folder() / f"{name}.png"
    if not path.is_file():
        raise FileNotFoundError(f"sample image {path} is missing; reinstall cnnwidgets or run "
                                "`python -m cnnwidgets.zoo.gallery`")
    with path.open("rb") as handle:
        image = Image.open(handle)
        image.load()
    return image.convert("RGB")


def samples() -> dict[str, Image.Image]:
    """All shipped sample images, name -> RGB ``PIL.Image``, single shapes first."""
    return {name: sample_image(name) for name in SAMPLE_SPECS}


def write_samples(folder: str | os.PathLike) -> list[Path]:
    """Render every sample into ``folder`` as ``<name>.png`` (the folder is made if missing); returns
    the written paths.

    Raises:
        TypeError: a ``folder`` that is not a str or ``os.PathLike``.
        NotADirectoryError: ``folder`` is a file.
    """
    if not isinstance(folder, (str, os.PathLike)):
        raise TypeError(f"folder must be a folder path (str or pathlib.Path), got {type(folder).__name__} {folder!r}")
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"{folder} is a file, not a folder: give a folder to write the sample images into")
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in SAMPLE_SPECS:
        path = folder / f"{name}.png"
        render_sample(name).save(path, optimize=True)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cnnwidgets.zoo.gallery", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "samples")
    args = parser.parse_args(argv)
    try:
        paths = write_samples(args.out)
    except OSError as exc:  # the folder is a file, cannot be made or written to
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
