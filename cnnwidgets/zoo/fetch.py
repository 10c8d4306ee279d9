"""Download pretrained weights ahead of time into torch's hub cache.

Used by the Binder build (``binder/postBuild``) and by anyone who wants to work offline
later::

    python -m cnnwidgets.zoo.fetch ResNet18_Weights.IMAGENET1K_V1
    python -m cnnwidgets.zoo.fetch https://example.org/models/mynet-0123abcd.pth

A torchvision weights name (``Enum.MEMBER``) or a URL may be given. Files land in
``$TORCH_HOME/hub/checkpoints`` (``torch.hub.get_dir()``), where torchvision and
:func:`cnnwidgets.zoo.load_torchvision` look for them. As in torchvision, the part of the
file name after the last ``-`` is a prefix of the file's SHA-256 and is checked; a file that
does not match is deleted and an error raised. ``CNNWIDGETS_WEIGHTS_MIRROR`` replaces the
directory part of every URL (for mirrors, or ``file://`` folders in tests).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
from pathlib import Path
from urllib.parse import urlsplit

import torch
import torchvision

__all__ = ["fetch_weights", "resolve_url"]

_HASH = re.compile(r"-([a-f0-9]{8,})\.")


def resolve_url(spec: str) -> str:
    """The download URL for a torchvision weights name (``ResNet18_Weights.IMAGENET1K_V1``) or a URL.

    Raises:
        ValueError: for a name torchvision does not know.
    """
    if "://" in spec:
        return spec
    try:
        weights = torchvision.models.get_weight(spec)
    except (ValueError, KeyError, AttributeError) as exc:
        raise ValueError(
            f"unknown weights {spec!r}; give a torchvision weights name such as "
            "'ResNet18_Weights.IMAGENET1K_V1' or a URL"
        ) from exc
    return weights.url


def _mirrored(url: str) -> str:
    mirror = os.environ.get("CNNWIDGETS_WEIGHTS_MIRROR")
    if not mirror:
        return url
    return mirror.rstrip("/") + "/" + Path(urlsplit(url).path).name


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_weights(specs: list[str], *, progress: bool = True) -> list[Path]:
    """Download each weights file into the hub cache unless a verified copy is there.

    Args:
        specs: torchvision weights names or URLs.
        progress: show a download progress bar.

    Returns:
        The paths of the cached files.

    Raises:
        ValueError: for an unknown name, or a file whose name carries no hash prefix.
        RuntimeError: when a download fails or its SHA-256 does not match the name.
    """
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for spec in specs:
        url = _mirrored(resolve_url(spec))
        name = Path(urlsplit(url).path).name
        match = _HASH.search(name)
        if match is None:
            raise ValueError(f"{name!r} carries no '-<sha256 prefix>.' in its name, so it cannot be verified")
        prefix = match.group(1)
        target = folder / name
        if target.exists() and _sha256(target).startswith(prefix):
            print(f"{name}: already cached at {target}")
            paths.append(target)
            continue
        try:
            torch.hub.download_url_to_file(url, str(target), hash_prefix=prefix, progress=progress)
        except Exception as exc:  # noqa: BLE001 - report any download failure the same way
            target.unlink(missing_ok=True)
            raise RuntimeError(f"could not fetch {name} from {url}: {exc}") from exc
        print(f"{name}: saved to {target}")
        paths.append(target)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cnnwidgets.zoo.fetch", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("weights", nargs="+", help="torchvision weights names or URLs")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        fetch_weights(args.weights, progress=not args.quiet)
    except (ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
