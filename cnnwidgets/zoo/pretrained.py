"""torchvision classifiers with pretrained weights, loaded offline from the torch hub cache or a file.

:func:`load_torchvision` never downloads anything unless asked to (``download=True``)
and never falls back to random weights: when the weights file is not on this machine it
raises :class:`WeightsUnavailableError`, which says which file is missing, where it
looked, and how to get it. Class names, preprocessing (resize, crop, mean, std) and the
input size come from torchvision's own weights metadata (``weights.meta["categories"]``,
``weights.transforms()``). A file is hashed only with ``check_hash=True``; the bundle's
``weights`` description says whether it was verified to be torchvision's file (also true,
without hashing, for a file that ``python -m cnnwidgets.zoo.fetch`` verified and that has not
changed since).

Where the file is looked for: ``<hub dir>/checkpoints/<file name of weights.url>``, where
the hub dir is :func:`torch.hub.get_dir` (``$TORCH_HOME/hub``, by default
``~/.cache/torch/hub``) - the same place torchvision itself caches downloads. To fill it
ahead of time, on a machine with internet::

    python -m cnnwidgets.zoo.fetch ResNet18_Weights.IMAGENET1K_V1
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import torch
import torchvision
from torch import nn
from torchvision.models import WeightsEnum

from cnnwidgets.core.images import image_to_tensor
from cnnwidgets.core.targets import as_flag
from cnnwidgets.zoo.bundle import Bundle

__all__ = ["HASH_IN_NAME", "WeightsUnavailableError", "cached_weights_path", "classification_models",
           "load_torchvision", "resolve_weights", "verified_record_path"]

HASH_IN_NAME = re.compile(r"-([a-f0-9]{8,})\.")
"""The SHA-256 prefix in a weights file name, as torchvision names them (``resnet18-f37072fd.pth``)."""

# Keys of a model saved while wrapped: nn.DataParallel / DistributedDataParallel, torch.compile.
_WRAPPER_PREFIXES = {"module.": "nn.DataParallel or DistributedDataParallel", "_orig_mod.": "torch.compile"}


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights are not on this machine (and were not to be downloaded).

    Attributes:
        weights_name: e.g. ``"ResNet18_Weights.IMAGENET1K_V1"``.
        filename: the file that was looked for, e.g. ``"resnet18-f37072fd.pth"``.
        searched: the paths that were checked.
        url: where the file can be downloaded from.
        cache_dir: the folder to put it in for later offline use.

    Args:
        message: the error's text.
        weights_name, filename, searched, url, cache_dir: the attributes of the same names.
    """

    def __init__(self, message: str, *, weights_name: str, filename: str, searched: list[Path], url: str,
                 cache_dir: Path) -> None:
        super().__init__(message)
        self.weights_name = weights_name
        self.filename = filename
        self.searched = searched
        self.url = url
        self.cache_dir = cache_dir


def classification_models() -> list[str]:
    """Names of torchvision's image classification architectures (``resnet18``, ``vgg16`` ...)."""
    return sorted(torchvision.models.list_models(module=torchvision.models))


def _check_arch(arch: str) -> str:
    if not isinstance(arch, str):
        raise TypeError(
            f"arch must be the name of a torchvision classification model (a str such as 'resnet18'), got "
            f"{type(arch).__name__} {arch!r} (see cnnwidgets.zoo.pretrained.classification_models())"
        )
    names = classification_models()
    if arch not in names:
        text = arch.strip().lower()  # 'ResNet18', ' resnet18': the name meant first
        same = [n for n in names if n == text]
        close = same or difflib.get_close_matches(text, names, n=5, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"{arch!r} is not a torchvision classification model{hint} "
                         f"(see cnnwidgets.zoo.pretrained.classification_models())")
    return arch


def resolve_weights(arch: str, weights: str | WeightsEnum = "DEFAULT") -> WeightsEnum:
    """The torchvision weights enum member for ``arch``.

    Args:
        arch: architecture name, e.g. ``"resnet18"``.
        weights: ``"DEFAULT"``, a member name (``"IMAGENET1K_V1"``), a full name
            (``"ResNet18_Weights.IMAGENET1K_V1"``) or the enum member itself.

    Raises:
        ValueError: unknown architecture, unknown weights, or weights of another architecture.
        TypeError: an ``arch`` that is not a string, or ``weights`` that are neither a string nor
            a ``WeightsEnum`` member.
    """
    _check_arch(arch)
    enum = torchvision.models.get_model_weights(arch)
    options = ", ".join(["DEFAULT"] + [m.name for m in enum])
    if isinstance(weights, WeightsEnum):
        if not isinstance(weights, enum):
            raise ValueError(f"{weights} are weights for another architecture; {arch} takes {enum.__name__} members, "
                             f"available: {options}")
        return weights
    if not isinstance(weights, str):
        raise TypeError(f"weights must be a string or a {enum.__name__} member, got {type(weights).__name__}")
    name = weights.split(".", 1)[1] if weights.startswith(enum.__name__ + ".") else weights
    if "." in name:
        url = (" (a URL is no weights name: download the file and pass its path as weights_path of "
               "load_torchvision)") if "://" in weights else ""
        raise ValueError(f"{weights!r} are not weights for {arch}{url}; it takes {enum.__name__} members, "
                         f"available: {options}")
    try:
        return enum[name]
    except KeyError:
        raise ValueError(f"{arch} has no weights {weights!r}; available: {options}") from None


def _filename(weights: WeightsEnum) -> str:
    return Path(urlsplit(weights.url).path).name


def cached_weights_path(weights: WeightsEnum) -> Path:
    """Where torchvision caches (and this module looks for) the file of ``weights``.

    Raises:
        TypeError: for ``weights`` that are not a ``WeightsEnum`` member (for a name, get the member
            with :func:`resolve_weights` first).
    """
    if not isinstance(weights, WeightsEnum):
        raise TypeError(
            f"weights must be a torchvision WeightsEnum member such as ResNet18_Weights.IMAGENET1K_V1, got "
            f"{type(weights).__name__} {weights!r}; for a name, pass resolve_weights(arch, name)"
        )
    return Path(torch.hub.get_dir()) / "checkpoints" / _filename(weights)


def _unavailable(arch: str, weights: WeightsEnum, searched: list[Path],
                 download_error: Exception | None = None) -> WeightsUnavailableError:
    # imported here: `python -m cnnwidgets.zoo.fetch` must not find its module imported by the package
    from cnnwidgets.zoo.fetch import offline_advice

    filename = _filename(weights)
    cache_dir = Path(torch.hub.get_dir()) / "checkpoints"
    full = f"{type(weights).__name__}.{weights.name}"
    where = _hub_dir_origin()
    found = (f"pretrained weights {full} for {arch} are not on this machine: {filename} was not found at "
             + ", ".join(str(p) for p in searched) + f" ({where})")
    if download_error is None:
        message = found + ". cnnwidgets does not download during loading and never substitutes random weights.\n"
        last = f"or, when online, call load_torchvision({arch!r}, download=True)."
    else:
        message = found + f", and downloading it failed: {getattr(download_error, 'problem', download_error)}\n"
        last = "or check the network connection (and CNNWIDGETS_WEIGHTS_MIRROR, if set) and try again."
    message += offline_advice(weights.url, cache_dir / filename, full, loader="load_torchvision", last=last)
    return WeightsUnavailableError(message, weights_name=full, filename=filename, searched=searched,
                                   url=weights.url, cache_dir=cache_dir)


def _hub_dir_origin() -> str:
    """How torch chose its hub folder, as far as the environment tells (for messages)."""
    torch_home = os.environ.get("TORCH_HOME")
    if torch_home:
        return f"$TORCH_HOME={torch_home}"
    if torch_home is not None:
        return "TORCH_HOME is set but empty, so torch looks in hub/ under the current working folder"
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return f"TORCH_HOME is not set, so $XDG_CACHE_HOME/torch is used ($XDG_CACHE_HOME={xdg})"
    return "TORCH_HOME is not set, so the default cache is used"


def _check_hash(path: Path, weights: WeightsEnum) -> bool:
    """Whether ``path`` was verified: False when the official file name carries no hash to check.

    Raises:
        ValueError: when the file's SHA-256 does not start with the prefix in the name.
    """
    match = HASH_IN_NAME.search(_filename(weights))
    if match is None:
        return False
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    if not digest.hexdigest().startswith(match.group(1)):
        raise ValueError(
            f"{path} does not have the SHA-256 prefix {match.group(1)} that the name of "
            f"{_filename(weights)} promises: it is not the official file (corrupt or a different model)"
        )
    return True


def verified_record_path(path: str | os.PathLike) -> Path:
    """Where :func:`cnnwidgets.zoo.fetch.fetch_weights` notes that it verified the file at ``path``.

    Raises:
        TypeError: for a ``path`` that is not a str or ``os.PathLike``.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a file path (str or pathlib.Path), got {type(path).__name__} {path!r}")
    path = Path(path)
    return path.with_name(f".{path.name}.verified.json")


def _recorded_verified(path: Path, weights: WeightsEnum) -> bool:
    """Whether fetch_weights verified this very file: its note names a SHA-256 with the prefix of the
    official name, and the file still has the size and modification time it had then. No hashing."""
    match = HASH_IN_NAME.search(_filename(weights))
    if match is None or path.name != _filename(weights):
        return False
    try:
        record = json.loads(verified_record_path(path).read_text(encoding="utf-8"))
        stat = path.stat()
    except (OSError, ValueError):
        return False
    return (isinstance(record, dict) and isinstance(record.get("sha256"), str)
            and record["sha256"].startswith(match.group(1))
            and record.get("size") == stat.st_size and record.get("mtime_ns") == stat.st_mtime_ns)


def _load_failure(exc: Exception) -> str:
    # torch's own text for a refused pickle advises turning the safety check off; keep only its diagnosis.
    text = str(exc)
    marker = "WeightsUnpickler error:"
    if marker in text:
        parts = [part.strip() for part in text.split(marker, 1)[1].split("\n\n") if part.strip()]
        text = parts[0].split(". ")[0].rstrip(".") if parts else "an object type that is not allowed"
    elif "weights_only" in text:
        text = text.split(". ")[0].rstrip(".")
    return f"{type(exc).__name__}: {text}"


def _is_state_dict(value: object) -> bool:
    return isinstance(value, dict) and bool(value) and all(isinstance(v, torch.Tensor) for v in value.values())


def _a(noun: str) -> str:
    """``noun`` with its indefinite article (``an int``, ``a str``)."""
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


def _first_non_tensor(state: dict) -> tuple[object, object] | None:
    return next(((k, v) for k, v in state.items() if not isinstance(v, torch.Tensor)), None)


def _load_checkpoint(path: Path, remedy: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The state_dict in ``path`` and notes on how it was found (a checkpoint's entry)."""
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - torch raises several types for unsafe or broken files
        raise ValueError(
            f"could not load {path} with torch.load(weights_only=True) ({_load_failure(exc)}). Truncated or "
            f"corrupt files cannot be read, and old (tar-format) or pickled-object checkpoints cannot be loaded "
            f"safely; {remedy}."
        ) from exc
    notes = []
    if isinstance(state, dict) and _first_non_tensor(state) is not None:
        # a training checkpoint such as {"model_state_dict": {...}, "epoch": 3, "optimizer": {...}}
        if "state_dict" in state and isinstance(state["state_dict"], dict):
            key = "state_dict"
        else:
            inner = [k for k, v in state.items() if _is_state_dict(v)]
            key = inner[0] if len(inner) == 1 else None
            if key is None:
                keys = ", ".join(repr(k) for k in list(state)[:12]) + (", ..." if len(state) > 12 else "")
                save = ("Save the model's state_dict on its own, e.g. torch.save(checkpoint[<key>], 'weights.pth'), "
                        "and load that file")
                if inner:
                    which = (f"{len(inner)} of its entries ({', '.join(repr(k) for k in inner)}) are state_dicts, so "
                             "it is not clear which one is meant")
                elif any(isinstance(v, torch.Tensor) for v in state.values()):
                    name, value = _first_non_tensor(state)  # type: ignore[misc]
                    which = f"its entry {name!r} is {_a(type(value).__name__)}, not a tensor"
                    save = ("A state_dict holds tensors only: remove the other entries, or save model.state_dict() "
                            "on its own, and load that file")
                else:
                    which = "none of its entries is a state_dict"
                raise ValueError(
                    f"{path} does not hold a state_dict (a dict of tensors): it is a dict with the keys {keys}, and "
                    f"{which}. {save}"
                )
        state = state[key]
        notes.append(f"the state_dict under {key!r} of the checkpoint")
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state_dict (a dict of tensors) but {_a(type(state).__name__)}; "
                         f"{remedy}")
    what = f"the entry {key!r} of the checkpoint in {path}" if notes else str(path)
    stray = _first_non_tensor(state)
    if stray is not None:
        raise ValueError(f"{what} is not a state_dict (a dict of tensors): its entry {stray[0]!r} is "
                         f"{_a(type(stray[1]).__name__)}, not a tensor; {remedy}")
    odd = next((k for k in state if not isinstance(k, str)), None)
    if odd is not None:
        raise ValueError(f"{what} is not a state_dict: its key {odd!r} is {_a(type(odd).__name__)}, not a str (a "
                         f"state_dict maps parameter names such as 'conv1.weight' to tensors); {remedy}")
    return state, notes


def _strip_wrapper_prefixes(model: nn.Module, state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """``state`` without the key prefixes of a wrapped model, where every key has one the model's keys lack."""
    own = model.state_dict().keys()
    notes = []
    while state:
        prefix = next((p for p in _WRAPPER_PREFIXES if all(k.startswith(p) for k in state)), None)
        if prefix is None or any(k.startswith(prefix) for k in own):
            break
        state = {k[len(prefix):]: v for k, v in state.items()}
        notes.append(f"the keys' {prefix!r} prefix ({_WRAPPER_PREFIXES[prefix]}) removed")
    return state, notes


def _examples(keys: list[str], limit: int = 3) -> str:
    shown = ", ".join(repr(k) for k in keys[:limit])
    return shown + (", ..." if len(keys) > limit else "")


def _check_values(model: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """Refuse tensors that ``load_state_dict`` would cast or copy into wrong values: no floats where the
    model has floats (ints, bools and complex numbers), sparse tensors and meta tensors (which hold no data).

    Raises:
        RuntimeError: naming the first such tensor and what the model needs.
    """
    own = model.state_dict()
    for key, value in state.items():
        mine = own.get(key)
        if mine is None:
            continue  # an unexpected key, reported with the others by strict loading
        if value.is_meta:
            problem = (f"{key!r} is a meta tensor, which holds no values (only a shape): save the state_dict of a "
                       "model whose weights are loaded")
        elif value.layout != torch.strided:
            problem = (f"{key!r} is a sparse tensor ({value.layout}), but the model needs a dense one: save "
                       "{name: tensor.to_dense() ...} instead")
        elif mine.is_floating_point() and not value.is_floating_point():
            problem = (f"{key!r} is {value.dtype} in the file, but the model's tensor is {mine.dtype}: floating-point "
                       f"values are needed (float16, bfloat16, float32 and float64 are converted to {mine.dtype}); "
                       f"{value.dtype} values would be cast to other numbers")
        else:
            continue
        raise RuntimeError(f"{what}: {problem}")


def _fit(model: nn.Module, state: dict[str, torch.Tensor], what: str) -> list[str]:
    """Load ``state`` into ``model`` strictly; a mismatch is summarised (torch's full text is the cause).

    Floating-point tensors of any precision are converted to the model's dtype; tensors without
    floating-point values where the model has them, sparse and meta tensors are refused.

    Returns:
        Notes on wrapper prefixes that were removed from the keys.

    Raises:
        RuntimeError: ``what`` does not fit the model; the message counts and names the differences.
    """
    state, notes = _strip_wrapper_prefixes(model, state)
    _check_values(model, state, what)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        own = model.state_dict()
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        shapes = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
        parts = [f"{len(missing)} missing", f"{len(unexpected)} unexpected keys"]
        if shapes:
            parts.append(f"{len(shapes)} of another shape")
        examples = []
        if missing:
            examples.append(f"missing {_examples(missing)}")
        if unexpected:
            examples.append(f"unexpected {_examples(unexpected)}")
        if shapes:
            k = shapes[0]
            examples.append(f"{k!r} is {tuple(state[k].shape)} in the file but {tuple(own[k].shape)} in the model")
        if not (missing or unexpected or shapes):
            raise RuntimeError(f"{what}: {exc}") from exc
        hint = ""
        wrapped = [p for p in _WRAPPER_PREFIXES if unexpected and all(k.startswith(p) for k in unexpected)]
        if wrapped:
            hint = (f"; the file's keys start with {wrapped[0]!r}, as a model saved while wrapped in "
                    f"{_WRAPPER_PREFIXES[wrapped[0]]} has them: save the unwrapped model's state_dict")
        raise RuntimeError(
            f"{what}: {', '.join(parts)} (e.g. {'; '.join(examples)}){hint}. The file must hold "
            f"a state_dict of this very architecture; torch's full report is the cause of this error"
        ) from exc
    return notes


# Old DenseNet files (the official ones included) name the layers of a dense layer
# "norm.1", "conv.2" ...; the modules are now "norm1", "conv2" ...
_DENSENET_LEGACY_KEY = re.compile(r"(\bdenselayer\d+\.(?:norm|relu|conv))\.([12])\.")


def _densenet_current_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {_DENSENET_LEGACY_KEY.sub(r"\1\2.", key): value for key, value in state.items()}


def _check_classifier(arch: str, weights: WeightsEnum) -> None:
    if weights.meta.get("categories") is None:
        usable = [m.name for m in type(weights) if m.meta.get("categories") is not None]
        raise ValueError(
            f"{type(weights).__name__}.{weights.name} are not classifier weights (they come without class "
            f"names, e.g. a feature extractor's), so load_torchvision cannot use them; the classifier weights "
            f"of {arch} are: {', '.join(usable)}"
        )


#: The architectures whose torchvision weights expect their model to re-normalise its input itself
#: (``transform_input=True``: the weights were ported from another framework's preprocessing).
_TRANSFORMS_INPUT = ("googlenet", "inception_v3")


# Constructor arguments that torchvision's builders set themselves when given weights.
def _builder_kwargs(arch: str, weights: WeightsEnum, transform_input: bool = True) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"num_classes": len(weights.meta["categories"])}
    if arch in _TRANSFORMS_INPUT:
        kwargs.update(transform_input=transform_input, aux_logits=True, init_weights=False)
    elif arch.startswith("vit_"):
        kwargs["image_size"] = weights.meta["min_size"][0]
    elif arch.startswith("maxvit"):
        kwargs["input_size"] = weights.meta["min_size"]
    return kwargs


# The auxiliary classifiers' modules, whose keys the official files hold and a model loaded by torchvision lacks.
_AUX_HEADS = {"googlenet": ("aux1", "aux2"), "inception_v3": ("AuxLogits",)}


def _without_aux_heads(arch: str, state: dict[str, torch.Tensor]) -> bool:
    """Whether ``state`` is of a model whose auxiliary classifiers were dropped (as torchvision drops
    them after loading weights): it has none of their keys, with or without a wrapper's prefix."""
    heads = _AUX_HEADS.get(arch, ())
    return bool(heads) and not any(f".{head}." in f".{key}" for key in state for head in heads)


def _drop_aux_heads(arch: str, model: nn.Module) -> None:
    # As torchvision does after loading: the auxiliary classifiers are not used at inference.
    if arch == "googlenet":
        model.aux_logits = False
        model.aux1 = None
        model.aux2 = None
    elif arch == "inception_v3":
        model.aux_logits = False
        model.AuxLogits = None


def _describe_weights(weights: WeightsEnum, path: Path, verified: bool, checked: bool) -> str:
    """The bundle's ``weights`` text; torchvision's accuracy is claimed only for a verified file."""
    full = f"{type(weights).__name__}.{weights.name}"
    metrics = weights.meta.get("_metrics", {})
    top1 = next((m.get("acc@1") for m in metrics.values() if isinstance(m, dict) and "acc@1" in m), None)
    if verified:
        score = f", ImageNet top-1 {top1}% (torchvision)" if top1 is not None else ""
        return f"{full}{score}; loaded from {path}, SHA-256 checked (torchvision's file)"
    why = ("the official file name carries no hash to check it against" if checked
           else "its SHA-256 was not checked (check_hash=True verifies it)")
    return f"{path}, loaded as {full} but not verified to be torchvision's file: {why}"


def _download(arch: str, weights: WeightsEnum, path: Path) -> None:
    from cnnwidgets.zoo.fetch import fetch_weights

    try:
        fetch_weights([f"{type(weights).__name__}.{weights.name}"])
    except RuntimeError as exc:
        raise _unavailable(arch, weights, [path], download_error=exc) from exc


def _refuse_url(value: object, name: str, instead: str) -> None:
    """Raise ValueError when ``value``, given as a local path, is a URL (``Path`` would mangle it).

    Args:
        value: the argument.
        name: the argument's name, for the message.
        instead: what to do instead, for the message.
    """
    if isinstance(value, str) and "://" in value:
        raise ValueError(f"{name} must be a file on this machine; URLs such as {value!r} are not accepted here: "
                         f"{instead}")


class TorchvisionPreprocess:
    """Image -> tensor through the weights' own ``transforms()`` (resize, centre crop, normalise).

    The image is first made a float (3, H, W) tensor in [0, 1] by
    :func:`cnnwidgets.core.images.image_to_tensor`, so every source :func:`cnnwidgets.load_image`
    accepts works (grayscale, RGBA, 16-bit ... included).
    """

    def __init__(self, transforms: nn.Module) -> None:
        self.transforms = transforms

    def __call__(self, image: Any) -> torch.Tensor:
        return self.transforms(image_to_tensor(image)).contiguous()

    def __repr__(self) -> str:
        return f"TorchvisionPreprocess({self.transforms!r})"


def load_torchvision(arch: str, weights: str | WeightsEnum | None = "DEFAULT", weights_path: str | os.PathLike | None = None,
                     *, check_hash: bool = False, download: bool = False,
                     transform_input: bool | None = None) -> Bundle:
    """A torchvision classifier with pretrained weights from the local cache or a file.

    Args:
        arch: torchvision model name (``"resnet18"``, ``"vgg16"``, ``"mobilenet_v3_small"`` ...).
        weights: ``"DEFAULT"``, a member name such as ``"IMAGENET1K_V1"``, a full name such as
            ``"ResNet18_Weights.IMAGENET1K_V1"``, or the enum member. Its metadata gives the class
            names and preprocessing. ``None`` explicitly asks for an untrained, randomly
            initialised model (class names and preprocessing then come from the default weights).
        weights_path: a local state_dict file to load instead of the hub cache (not a URL).
            A training checkpoint that holds exactly one state_dict among other entries
            (``{"model_state_dict": ..., "epoch": ...}``) is unwrapped, and the key prefixes of a
            model saved while wrapped (``module.``, ``_orig_mod.``) are removed; the bundle's
            ``weights`` description says so.
        check_hash: verify that the file's SHA-256 starts with the hex prefix in the official
            file name (torchvision only checks this when it downloads). Off by default, as in
            torchvision (hashing costs about 0.1 s per 45 MB); the bundle's ``weights``
            description then says that the file was not verified, and claims torchvision's
            name and accuracy only for a verified file.
        download: if the file is not cached, download it (with hash check) via
            :func:`cnnwidgets.zoo.fetch.fetch_weights`; a cached file that cannot be loaded is
            replaced by a verified download and loading is tried once more. Off by default.
        transform_input: for ``googlenet`` and ``inception_v3`` only: whether the model turns its
            ImageNet-normalised input into the normalisation its weights were trained with (a
            constructor argument of torchvision's, not saved in a state_dict). torchvision's own
            weights need True, the default; a model trained from scratch with torchvision's
            builder (``googlenet(weights=None)``) has False. For a ``weights_path`` that is not
            torchvision's file (another file name), the default True is assumed with a warning:
            the wrong setting gives wrong scores without any error.

    Returns:
        A :class:`~cnnwidgets.zoo.bundle.Bundle` with the model in eval mode on the CPU.

    Raises:
        TypeError: an ``arch`` that is not a string, ``weights`` that are not a string, None or a
            ``WeightsEnum`` member, a ``weights_path`` that is not a path, or a
            ``check_hash``/``download``/``transform_input`` that is not True or False (or None for
            ``transform_input``).
        WeightsUnavailableError: the weights file is not cached (and ``download`` is False, or
            the download failed).
        FileNotFoundError: ``weights_path`` does not exist.
        IsADirectoryError: ``weights_path``, or the hub cache's place of the file, is a folder.
        ValueError: ``transform_input`` given for another architecture than googlenet and
            inception_v3; unknown architecture/weights, weights that are not a classifier's (no class
            names, such as ``VGG16_Weights.IMAGENET1K_FEATURES``), a ``weights_path`` that is a URL
            or empty, a file that is not a safe plain state_dict (a dict of tensors with str keys),
            or (with ``check_hash``) a file whose hash does not match. For the hub cache's file the
            message says that deleting it is safe and how to fetch a verified copy.
        RuntimeError: the state_dict does not match the architecture (strict loading); the
            message counts the missing and unexpected keys, with examples. Also for tensors that
            hold no floating-point values where the model has them (ints, bools, complex numbers),
            sparse tensors and meta tensors: floating-point tensors of any precision are converted
            to the model's dtype, other ones are not cast.
    """
    _check_arch(arch)
    check_hash = as_flag(check_hash, "check_hash")
    download = as_flag(download, "download")
    if transform_input is not None:
        transform_input = as_flag(transform_input, "transform_input")
        if arch not in _TRANSFORMS_INPUT:
            raise ValueError(f"transform_input is an option of {' and '.join(_TRANSFORMS_INPUT)} only, not of {arch}; "
                             "leave it out")
    if weights is not None and not isinstance(weights, (str, WeightsEnum)):
        enum = torchvision.models.get_model_weights(arch)
        hint = ("; for an untrained model pass weights=None" if weights is False else
                "; for the default pretrained weights pass weights='DEFAULT'" if weights is True else "")
        raise TypeError(f"weights must be 'DEFAULT', a {enum.__name__} member or its name, or None (untrained), got "
                        f"{type(weights).__name__} {weights!r}{hint}")
    if weights_path is not None:
        if not isinstance(weights_path, (str, os.PathLike)) or not isinstance(os.fspath(weights_path), str):
            raise TypeError(f"weights_path must be a file path (str or pathlib.Path), got {type(weights_path).__name__}")
        if not os.fspath(weights_path):
            raise ValueError("weights_path is an empty string; give the path of a state_dict file (.pth), or leave "
                             "it out to load the weights from the torch hub cache")
    meta_weights = resolve_weights(arch, "DEFAULT" if weights is None else weights)
    _check_classifier(arch, meta_weights)
    builder = torchvision.models.get_model_builder(arch)
    if weights is None:
        if weights_path is not None:
            raise ValueError("weights=None means untrained; give weights (e.g. 'DEFAULT') to load weights_path")
        model = builder(weights=None, **_builder_kwargs(arch, meta_weights, transform_input is not False))
        _drop_aux_heads(arch, model)
        description = f"untrained {arch} (random initialisation, explicitly requested with weights=None)"
    else:
        full = f"{type(meta_weights).__name__}.{meta_weights.name}"
        downloaded = False
        if weights_path is not None:
            _refuse_url(weights_path, "weights_path", f"download the file first (python -m cnnwidgets.zoo.fetch <url> "
                       f"puts it in the hub cache and checks the hash in its name) and pass its path; for "
                       f"torchvision's own weights call load_torchvision({arch!r}, download=True) instead")
            path = Path(weights_path).expanduser()
            if path.is_dir():
                found = sorted(p.name for p in path.iterdir() if p.suffix in (".pth", ".pt") and p.is_file())[:3]
                inside = f" (it holds {', '.join(found)})" if found else ""
                raise IsADirectoryError(f"weights_path {str(path)!r} is a folder, not a file{inside}: pass the path "
                                        f"of the state_dict file itself")
            if not path.is_file():
                raise FileNotFoundError(f"weights file not found: {str(path)!r}")
            official = Path(urlsplit(meta_weights.url).path).name
            if arch in _TRANSFORMS_INPUT and transform_input is None and path.name != official:
                warnings.warn(
                    f"{path.name} is not torchvision's file of {full} ({official}), so whether the model was trained "
                    f"with transform_input is not known; assuming True, as torchvision's weights need. A {arch} "
                    f"trained from torchvision's builder without weights has False: pass transform_input=False "
                    f"(or True, to say so and silence this warning)", UserWarning, stacklevel=2)
        else:
            path = cached_weights_path(meta_weights)
            if path.is_dir():
                raise IsADirectoryError(
                    f"{path}, where the cached file of {full} belongs, is a folder, not a file: move it out of the "
                    f"way, then python -m cnnwidgets.zoo.fetch {full} (or load_torchvision({arch!r}, download=True)) "
                    f"puts the verified file there")
            if not path.is_file():
                if not download:
                    raise _unavailable(arch, meta_weights, [path])
                _download(arch, meta_weights, path)
                downloaded = True  # fetch_weights checked the hash
        # For the hub cache's copy, say what fixes a broken file: it is only a download.
        cache_hint = None if weights_path is not None else (
            f"{path} is the cached download of {full}: deleting it is safe, and python -m cnnwidgets.zoo.fetch "
            f"{full} (or load_torchvision({arch!r}, download=True)) replaces it with a verified copy")

        def attempt() -> tuple[nn.Module, bool, list[str]]:
            verified = (_check_hash(path, meta_weights) if check_hash
                        else downloaded or _recorded_verified(path, meta_weights))
            state, notes = _load_checkpoint(path, cache_hint or "re-save a plain state_dict or use the current "
                                                              "file from torchvision")
            if arch.startswith("densenet"):
                state = _densenet_current_keys(state)
            model = builder(weights=None, **_builder_kwargs(arch, meta_weights, transform_input is not False))
            if _without_aux_heads(arch, state):  # e.g. the state_dict of a model torchvision loaded
                _drop_aux_heads(arch, model)
            notes += _fit(model, state, f"{path} does not fit {arch} ({full})")
            return model, verified, notes

        try:
            model, verified, notes = attempt()
        except (ValueError, RuntimeError) as exc:
            if cache_hint is None:
                raise
            error_type = ValueError if isinstance(exc, ValueError) else RuntimeError
            if downloaded or not download:
                if cache_hint in str(exc):
                    raise
                raise error_type(f"{exc}\n{cache_hint}.") from exc
            # download=True allows replacing a cached file that cannot be used: fetch_weights replaces
            # it only with a download that matches the hash, then loading is tried once more.
            from cnnwidgets.zoo.fetch import fetch_weights

            try:
                fetch_weights([full])
            except RuntimeError as fetch_exc:
                raise error_type(f"{exc}\nReplacing it with a fresh download failed too: "
                                 f"{getattr(fetch_exc, 'problem', fetch_exc)}\n{cache_hint}.") from fetch_exc
            downloaded = True
            try:
                model, verified, notes = attempt()
            except (ValueError, RuntimeError) as again:
                raise (ValueError if isinstance(again, ValueError) else RuntimeError)(
                    f"{again}\n(this was after a fresh, verified download of {full})") from again
        _drop_aux_heads(arch, model)
        description = _describe_weights(meta_weights, path, verified, check_hash)
        if notes:
            description += f" ({'; '.join(notes)})"
    model.eval()
    transforms = meta_weights.transforms()
    crop = transforms.crop_size[0] if isinstance(transforms.crop_size, (list, tuple)) else int(transforms.crop_size)
    mean = tuple(float(m) for m in transforms.mean)
    std = tuple(float(s) for s in transforms.std)
    return Bundle(
        model=model,
        classes=list(meta_weights.meta["categories"]),
        preprocess=TorchvisionPreprocess(transforms),
        input_size=(3, crop, crop),
        name=arch,
        weights=description,
        mean=mean,  # type: ignore[arg-type]
        std=std,  # type: ignore[arg-type]
    )
