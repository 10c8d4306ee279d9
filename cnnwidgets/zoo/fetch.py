"""Download pretrained weights ahead of time into torch's hub cache.

Used by the Binder build (``binder/postBuild``) and by anyone who wants to work offline
later::

    python -m cnnwidgets.zoo.fetch ResNet18_Weights.IMAGENET1K_V1
    python -m cnnwidgets.zoo.fetch https://example.org/models/mynet-0123abcd.pth

A torchvision weights name (``Enum.MEMBER``, ``ResNet18_Weights.DEFAULT`` included) or a URL
may be given. Files land in ``$TORCH_HOME/hub/checkpoints`` (``torch.hub.get_dir()``), where torchvision and
:func:`cnnwidgets.zoo.load_torchvision` look for them. As in torchvision, the part of the
file name after the last ``-`` is a prefix of the file's SHA-256 and is checked. Each file is
downloaded (by :func:`torch.hub.download_url_to_file`) to a temporary ``<name>.<hex>.partial``
file next to its place and moved there only once complete and verified: a failed or
mismatching download is discarded, and a file that was already in the cache is never deleted
(a verified download replaces one whose hash does not match). Temporary files that a killed
download left behind are removed once untouched for :data:`STALE_PARTIAL_AGE` seconds. A
server that sends nothing for :data:`DOWNLOAD_TIMEOUT` seconds fails the download. A verified
file is recorded in a small ``.<name>.verified.json`` next to it, so that
:func:`cnnwidgets.zoo.load_torchvision` can describe it as verified without hashing it again.
``CNNWIDGETS_WEIGHTS_MIRROR`` replaces the directory part of every URL (for mirrors, or
``file://`` folders in tests). When a download fails, the error says how to get the file
without a connection (:func:`offline_advice`, the same steps
:func:`cnnwidgets.zoo.load_torchvision` gives).
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import functools
import hashlib
import json
import os
import socket
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from urllib.parse import urlsplit

import torch
import torchvision

from cnnwidgets.core.targets import as_flag
from cnnwidgets.zoo.pretrained import HASH_IN_NAME, verified_record_path

__all__ = ["DOWNLOAD_TIMEOUT", "STALE_PARTIAL_AGE", "FetchError", "fetch_weights", "offline_advice", "resolve_url"]

DOWNLOAD_TIMEOUT = 60.0
"""Seconds a download waits for the server (to connect, or for the next data) before it fails."""

STALE_PARTIAL_AGE = 600.0
"""Seconds after its last write that a temporary ``.partial`` download file counts as left behind."""


@functools.lru_cache(maxsize=1)
def _weights_names() -> dict[str, str]:
    """Every torchvision weights name (``Enum.MEMBER``, ``Enum.DEFAULT`` included), by its lower-case spelling."""
    names = {}
    for model in torchvision.models.list_models():
        enum = torchvision.models.get_model_weights(model)
        for member in enum.__members__:
            names[f"{enum.__name__}.{member}".lower()] = f"{enum.__name__}.{member}"
    return names


def _meant(spec: str) -> str | None:
    """The weights name ``spec`` most likely stands for: the same in other case or without surrounding
    spaces, a model's name for its weights enum (``resnet18.DEFAULT``), or a close spelling."""
    names = _weights_names()
    text = spec.strip().lower()
    if text in names:
        return names[text]
    model, _, member = text.partition(".")
    if model in torchvision.models.list_models():
        enum = torchvision.models.get_model_weights(model).__name__
        return names.get(f"{enum}.{member}".lower())
    close = difflib.get_close_matches(text, list(names), n=1, cutoff=0.85)
    return names[close[0]] if close else None


def resolve_url(spec: str) -> str:
    """The download URL for a torchvision weights name (``ResNet18_Weights.IMAGENET1K_V1``) or a URL.

    Raises:
        TypeError: for a ``spec`` that is not a str.
        ValueError: for a name torchvision does not know; the message suggests the name meant, if
            one is close (``resnet18.IMAGENET1K_V1`` -> ``ResNet18_Weights.IMAGENET1K_V1``).
    """
    if not isinstance(spec, str):
        hint = (f"; pass its name, {type(spec).__name__ + '.' + spec.name!r}"
                if isinstance(spec, torchvision.models.WeightsEnum) else "")
        raise TypeError(f"spec must be a torchvision weights name or a URL (a str), got {type(spec).__name__} "
                        f"{spec!r}{hint}")
    if "://" in spec:
        return spec
    try:
        weights = torchvision.models.get_weight(spec)
    except (ValueError, KeyError, AttributeError, TypeError) as exc:
        # TypeError: what torchvision's lookup raises when the part before the dot is no weights enum
        # ('resnet18.DEFAULT')
        meant = _meant(spec)
        raise ValueError(
            f"unknown weights {spec!r}; give a torchvision weights name such as "
            "'ResNet18_Weights.IMAGENET1K_V1' or a URL" + (f"; did you mean {meant!r}?" if meant else "")
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


def _remove_stale_partials(folder: Path, name: str) -> None:
    """Delete temporary download files of ``name`` that nothing has written to for a while.

    ``<name>.<hex>.partial`` is torch.hub's temporary file; ``.<name>.<random>.partial`` (and the
    torch.hub file inside its name) the one earlier versions of this module made. A download that
    was killed (SIGKILL, a build timeout, a kernel restart) leaves them behind; a running one keeps
    writing to its file, so one untouched for :data:`STALE_PARTIAL_AGE` seconds is an orphan.
    """
    cutoff = time.time() - STALE_PARTIAL_AGE
    try:
        entries = list(folder.iterdir())
    except OSError:
        return
    for entry in entries:
        fname = entry.name
        if not fname.endswith(".partial") or not fname.startswith((f"{name}.", f".{name}.")):
            continue
        try:
            if entry.is_file() and entry.stat().st_mtime < cutoff:
                entry.unlink()
        except OSError:
            pass  # another process removed it, or it cannot be removed: not this download's concern


@contextlib.contextmanager
def _download_timeout(seconds: float):
    # torch.hub.download_url_to_file opens the URL without a timeout, and so waits forever for a
    # server that accepts the connection and then says nothing; the default timeout applies to it.
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _timed_out(exc: BaseException) -> bool:
    return isinstance(exc, TimeoutError) or isinstance(getattr(exc, "reason", None), TimeoutError)


def _record_verified(path: Path, digest: str) -> None:
    """Note next to ``path`` that its content has SHA-256 ``digest`` (with its size and time, to notice a
    changed file); :func:`cnnwidgets.zoo.pretrained.load_torchvision` reads it. Best effort."""
    stat = path.stat()
    record = {"sha256": digest, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    with contextlib.suppress(OSError):
        verified_record_path(path).write_text(json.dumps(record), encoding="utf-8")


def fetch_weights(specs: str | Sequence[str], *, progress: bool = True) -> list[Path]:
    """Download each weights file into the hub cache unless a verified copy is there.

    Every spec is checked before the first download starts (and before the cache folder is
    made). Each file is downloaded to a temporary file in the cache folder and moved into place
    only once complete and matching its hash; a file already at that place is left as it
    was when the download fails. A server that sends nothing for :data:`DOWNLOAD_TIMEOUT`
    seconds fails the download.

    Args:
        specs: a torchvision weights name or URL, or a list of them.
        progress: show a download progress bar.

    Returns:
        The paths of the cached files.

    Raises:
        TypeError: for specs that are not strings.
        ValueError: for an unknown name, or a file whose name carries no hash prefix.
        FetchError: (a ``RuntimeError``) when a download fails, stalls or its SHA-256 does not
            match the name (the message says how to get the file without a connection), or when a
            folder is where the file belongs.
        OSError: when the cache folder cannot be created (e.g. ``TORCH_HOME`` is a file or read-only).
    """
    specs = _spec_list(specs)
    progress = as_flag(progress, "progress")
    # Every spec is checked before anything is downloaded: a typo in the last one fails at once.
    downloads = []
    for spec in specs:
        source = resolve_url(spec)
        url = _mirrored(source)
        name = Path(urlsplit(url).path).name
        match = HASH_IN_NAME.search(name)
        if match is None:
            raise ValueError(
                f"{name!r} carries no '-<sha256 prefix>.' (at least 8 hex digits) in its name, so it cannot be "
                "verified; download it yourself and pass its path where a weights file is asked for"
            )
        downloads.append((spec, source, url, name, match.group(1)))
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise type(exc)(exc.errno, f"cannot create the weights cache folder {folder} ({exc.strerror}); set "
                                   "TORCH_HOME to a folder you can write to") from exc
    paths = []
    for spec, source, url, name, prefix in downloads:
        target = folder / name
        if target.is_dir():  # hashing or replacing it would fail with a bare "Is a directory"
            raise FetchError(f"{target} is a folder, so {name} cannot be saved there",
                             "To fix, move that folder out of the way (or delete it if it is not yours) and try again.")
        _remove_stale_partials(folder, name)
        present = target.exists()
        if present:
            digest = _sha256(target)
            if digest.startswith(prefix):
                _record_verified(target, digest)
                print(f"{name}: already cached at {target}")
                paths.append(target)
                continue
        try:
            # torch.hub writes to <target>.<hex>.partial, checks the hash and only then moves it to target
            with _download_timeout(DOWNLOAD_TIMEOUT):
                torch.hub.download_url_to_file(url, str(target), hash_prefix=prefix, progress=progress)
        except Exception as exc:  # noqa: BLE001 - report any download failure the same way
            if _timed_out(exc):
                problem = (f"could not fetch {name} from {url}: the server sent nothing for {DOWNLOAD_TIMEOUT:g} s "
                           "(cnnwidgets.zoo.fetch.DOWNLOAD_TIMEOUT), so the download was stopped")
            else:
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
        _record_verified(target, _sha256(target))
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
    except OSError as exc:  # an unusable TORCH_HOME, a read-only cache, a full disk ...
        hint = "" if "TORCH_HOME" in str(exc) else (
            f" (the weights cache is {Path(torch.hub.get_dir()) / 'checkpoints'}; set TORCH_HOME to a folder you "
            "can write to, with room for the file)")
        print(f"error: {exc}{hint}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
