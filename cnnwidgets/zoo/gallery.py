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


def render_sample(name: str) -> Image.Image:
    """Draw sample ``name`` from its specification (what the shipped PNG holds)."""
    if name not in SAMPLE_SPECS:
        raise KeyError(f"no sample named {name!r}; available: {', '.join(SAMPLE_SPECS)}")
    shapes, seed, background = SAMPLE_SPECS[name]
    return Image.fromarray(render_scene(shapes, size=64, seed=seed, background=background), "RGB")


def _folder():
    return resources.files("cnnwidgets.zoo") / "samples"


def sample_image(name: str | None = None) -> Image.Image:
    """One shipped sample image as an RGB ``PIL.Image`` (64 x 64).

    Args:
        name: a key of :data:`SAMPLE_SPECS`; None gives the default (``"star"``).

    Raises:
        KeyError: unknown name (the message lists the available ones).
        FileNotFoundError: the PNG is missing from the installed package.
    """
    name = DEFAULT_SAMPLE if name is None else name
    if name not in SAMPLE_SPECS:
        raise KeyError(f"no sample named {name!r}; available: {', '.join(SAMPLE_SPECS)}")
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


def write_samples(folder: str | Path) -> list[Path]:
    """Render every sample into ``folder`` as ``<name>.png``; returns the written paths."""
    folder = Path(folder)
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
    for path in write_samples(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
