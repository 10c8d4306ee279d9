"""Download pretrained weights ahead of time into torch's hub cache.

Used by the Binder build (``binder/postBuild``) and by anyone who wants to work offline
later::

    python -m cnnwidgets.zoo.fetch ResNet18_Weights.IMAGENET1K_V1
    python -m cnnwidgets.zoo.fetch https://example.org/models/mynet-0123abcd.pth

A torchvision weights name (``Enum.MEMBER``) or a URL may be given. Files land in
``$TORCH_HOME/hub/checkpoints`` (``torch.hub.get_dir()``), where torchvision and
:func:`cnnwidgets.zoo.load_torchvision` look for them. As in torchvision, the part of the
file name after the last ``-`` is a prefix of the file's SHA-256 and is checked. Each file is
downloaded to a temporary file next to its place and moved there only once complete and
verified: a failed or mismatching download is discarded, and a file that was already in the
cache is never deleted (a verified download replaces one whose hash does not match).
``CNNWIDGETS_WEIGHTS_MIRROR`` replaces the directory part of every URL (for mirrors, or
``file://`` folders in tests). When a download fails, the error says how to get the file
without a connection (:func:`offline_advice`, the same steps
:func:`cnnwidgets.zoo.load_torchvision` gives).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from urllib.parse import urlsplit

import torch
import torchvision

from cnnwidgets.core.targets import as_flag

__all__ = ["FetchError", "fetch_weights", "offline_advice", "resolve_url"]

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


class FetchError(RuntimeError):
    """A weights file could not be downloaded, or the download did not match its hash.

    Attributes:
        problem: what went wrong, in one line.
        advice: what to do instead (:func:`offline_advice`); the message is both.
    """

    def __init__(self, problem: str, advice: str) -> None:
        super().__init__(f"{problem}\n{advice}")
        self.problem = problem
        self.advice = advice


def offline_advice(url: str, target: Path, spec: str, *, loader: str | None = None, last: str) -> str:
    """The numbered ways to get the file of ``url`` to ``target`` without downloading it here.

    The one text for every place that cannot get weights (``python -m cnnwidgets.zoo.fetch``,
    :func:`cnnwidgets.zoo.load_torchvision`): download elsewhere and put the file at the exact
    path, a ``weights_path`` for ``loader`` (when given), ``CNNWIDGETS_WEIGHTS_MIRROR``, and
    ``last`` (the caller's own last resort).
    """
    name = target.name
    steps = [
        f"download {url} on a machine with internet (in a browser, or there with: python -m "
        f"cnnwidgets.zoo.fetch {spec} - it checks the hash) and put the file at {target} on this machine",
    ]
    if loader is not None:
        steps.append(f"or pass weights_path='/path/to/{name}' to {loader}")
    steps.append(
        f"or set CNNWIDGETS_WEIGHTS_MIRROR to a folder address (https://... or file:///...) that holds {name}: "
        "downloads then come from there"
    )
    steps.append(last)
    return "To fix, either:\n" + "\n".join(f"  {i}. {step}" for i, step in enumerate(steps, 1))


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


def _spec_list(specs: object) -> list[str]:
    if isinstance(specs, str):
        return [specs]
    if isinstance(specs, (bytes, os.PathLike)) or not isinstance(specs, Iterable):
        raise TypeError(
            f"specs must be a torchvision weights name or URL (str), or a list of them, got {type(specs).__name__}"
        )
    items = list(specs)
    for item in items:
        if not isinstance(item, str):
            raise TypeError(
                f"each weights spec must be a str (a torchvision weights name such as "
                f"'ResNet18_Weights.IMAGENET1K_V1', or a URL), got {type(item).__name__} {item!r}"
            )
    return items


def fetch_weights(specs: str | Sequence[str], *, progress: bool = True) -> list[Path]:
    """Download each weights file into the hub cache unless a verified copy is there.

    Each file is downloaded to a temporary file in the cache folder and moved into place
    only once complete and matching its hash; a file already at that place is left as it
    was when the download fails.

    Args:
        specs: a torchvision weights name or URL, or a list of them.
        progress: show a download progress bar.

    Returns:
        The paths of the cached files.

    Raises:
        TypeError: for specs that are not strings.
        ValueError: for an unknown name, or a file whose name carries no hash prefix.
        FetchError: (a ``RuntimeError``) when a download fails or its SHA-256 does not match the
            name; the message says how to get the file without a connection.
    """
    specs = _spec_list(specs)
    progress = as_flag(progress, "progress")
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for spec in specs:
        source = resolve_url(spec)
        url = _mirrored(source)
        name = Path(urlsplit(url).path).name
        match = _HASH.search(name)
        if match is None:
            raise ValueError(f"{name!r} carries no '-<sha256 prefix>.' in its name, so it cannot be verified")
        prefix = match.group(1)
        target = folder / name
        present = target.exists()
        if present and _sha256(target).startswith(prefix):
            print(f"{name}: already cached at {target}")
            paths.append(target)
            continue
        handle, partial = tempfile.mkstemp(prefix=f".{name}.", suffix=".partial", dir=folder)
        os.close(handle)
        try:
            torch.hub.download_url_to_file(url, partial, hash_prefix=prefix, progress=progress)
            os.replace(partial, target)
        except Exception as exc:  # noqa: BLE001 - report any download failure the same way
            problem = f"could not fetch {name} from {url}: {exc}"
            if present:
                problem += (f" ({target} was there before, without the SHA-256 prefix {prefix}, so not the official "
                            "file; it was left as it is)")
            torchvision_name = "://" not in spec
            advice = offline_advice(
                source, target, spec, loader="cnnwidgets.zoo.load_torchvision" if torchvision_name else None,
                last="or check the network connection (and CNNWIDGETS_WEIGHTS_MIRROR, if set) and try again.",
            )
            raise FetchError(problem, advice) from exc
        finally:
            Path(partial).unlink(missing_ok=True)
        print(f"{name}: {'replaced the unverified file at' if present else 'saved to'} {target}")
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
