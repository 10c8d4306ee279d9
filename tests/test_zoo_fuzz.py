"""Seeded fuzz test of the model zoo's loading surface, as a notebook user meets it, and regression
tests for what it found.

What is driven (every random case comes from a fixed seed, so the same cases run every time):

* :func:`~cnnwidgets.zoo.pretrained.resolve_weights` and :func:`~cnnwidgets.zoo.load_torchvision`
  with architecture names (valid ones, unknown ones, near misses in case, spelling and whitespace,
  values that are no string) and weights specs (``"DEFAULT"``, member names, full names, enum
  members, another architecture's members, ``None``, bools, numbers, URLs where a name is wanted);
* weights files written to tmp_path and loaded through ``weights_path`` and
  :func:`~cnnwidgets.zoo.load_tinyvgg`: state_dicts of small torchvision architectures and of
  TinyVGG, plain, wrapped (``module.``, ``_orig_mod.``), inside training checkpoints, in other float
  precisions, as Parameters, non-contiguous or in the legacy format; with keys missing, extra, renamed
  or not strings; tensors of the wrong shape, of no float dtype, sparse or without data; values that
  are no tensors; another architecture's state_dict; pickled modules and objects (which must never be
  run); empty, truncated, garbage and mutated bytes; and paths of every kind (str, Path, os.PathLike,
  ``~``, a folder, a missing file, a URL, the empty string, values that are no path);
* the hub cache, found through ``TORCH_HOME`` (set, with ``~``, or empty) or ``XDG_CACHE_HOME``,
  holding the file, a corrupt one, another model's, a folder or nothing, with ``check_hash`` and
  ``download``;
* :mod:`cnnwidgets.zoo.fetch`: ``resolve_url``, ``fetch_weights`` and its command line with names,
  near-miss names, URLs and values that are no string;
* :mod:`cnnwidgets.zoo.bundle`: ``ImagePreprocess``, ``Denormalize``, ``check_normalisation``,
  ``resize_shorter``, ``center_crop`` and ``Bundle`` with sizes and normalisations of every kind;
* :mod:`cnnwidgets.zoo.gallery`'s sample names and ``write_samples`` folders, and ``ZFNet``'s dropout.

No test reaches the network: every download function fails the test when it is called, except where
a download is expected; there it fails as on a machine without a connection, and the calls are
counted.

The oracle:

* a call with valid arguments returns what is documented. A model loaded from a file holds exactly
  the file's tensors after the documented conversion (wrapper prefixes removed, a checkpoint's
  state_dict taken, floats cast to the model's dtype), compared with ``torch.equal``, and its
  ``weights`` text names the file and what was done to it. A missing cached file gives the
  documented :class:`~cnnwidgets.zoo.WeightsUnavailableError` naming the path that was searched,
  computed here from the environment. A preprocessed solid colour ``c`` is ``(c - mean) / std``
  everywhere, and ``Denormalize`` gives ``c`` back;
* a call with an invalid argument raises a documented error type (``TypeError``, ``ValueError``,
  ``FileNotFoundError``, ``IsADirectoryError``, ``NotADirectoryError``, ``KeyError`` for a sample
  name, the strict-loading ``RuntimeError``, ``FetchError``), raised by cnnwidgets itself (not an
  AttributeError, IndexError, unpickling error or torch error passed through), whose message matches
  what was wrong and what is accepted and never advises ``weights_only=False``. A pickled object in a
  file is never run.

Tests marked ``# was:`` are regression tests of bugs this fuzzing found.
"""

from __future__ import annotations

import datetime
import io
import math
import os
import pickle
import random
import re
import socket
import traceback
import urllib.error
import urllib.request
import warnings
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch import nn

import cnnwidgets
import cnnwidgets.zoo as zoo
from cnnwidgets.zoo import bundle as B
from cnnwidgets.zoo import fetch as F
from cnnwidgets.zoo import gallery as G
from cnnwidgets.zoo import pretrained as P
from cnnwidgets.zoo.bundle import Bundle, Denormalize, ImagePreprocess
from cnnwidgets.zoo.pretrained import WeightsUnavailableError, load_torchvision, resolve_weights
from cnnwidgets.zoo.tinyvgg import TinyVGG, load_tinyvgg
from tests.helpers import classified_call, small_classifier

PACKAGE_DIR = Path(cnnwidgets.__file__).resolve().parent
OUTCOMES: list[str] = []
SAMPLES = list(G.SAMPLE_SPECS)
TEN_CLASSES = [f"class{i}" for i in range(10)]


@pytest.fixture(autouse=True)
def _clear_outcomes():
    OUTCOMES.clear()


def assert_both_outcomes() -> None:
    """The draws of a fuzz test gave both kinds of calls: some that returned, some that were refused."""
    assert {"returned", "raised"} <= set(OUTCOMES), f"the draws gave only {set(OUTCOMES)}"


# ---------------------------------------------------------------------------- drawing and judging
@dataclass
class Arg:
    """A drawn argument: its value, whether it is valid (None: either outcome is right), the regex a
    refusal it causes must match, and for a valid value what it stands for."""

    value: object
    valid: bool | None = True
    pattern: str = ""
    label: str = ""
    expected: object = None

    def __repr__(self) -> str:
        return self.label or repr(self.value)[:60]


class Drawer:
    """Seeded draws: 35 % of cases take only valid arguments; the others draw each argument invalid
    with its pool's probability until one is (then rarely), so most refusals have one cause."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.case()

    def case(self) -> None:
        self.all_valid = self.rng.random() < 0.35
        self.invalid = 0

    def __call__(self, pool: list[Arg], p: float = 0.35) -> Arg:
        good = [a for a in pool if a.valid is not False]
        bad = [a for a in pool if a.valid is False]
        q = 0.0 if self.all_valid else p if self.invalid == 0 else 0.08
        chosen = self.rng.choice(bad if bad and self.rng.random() < q else good)
        self.invalid += chosen.valid is False
        return chosen


def message_of(exc: BaseException) -> str:
    """The text of an error (a KeyError's own text, not its repr)."""
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    return str(exc)


def check_error(exc: BaseException, patterns: list[str], what: str, kinds: tuple[type, ...]) -> None:
    """``exc`` is a clean refusal: one of ``kinds``, raised by cnnwidgets, matching one of ``patterns``."""
    message = message_of(exc)
    assert isinstance(exc, kinds) and not isinstance(exc, (AttributeError, IndexError, AssertionError)), (
        f"{what}: {type(exc).__name__} is not a documented refusal: {message}")
    assert not isinstance(exc, pickle.UnpicklingError), f"{what}: an unpickling error passed through: {message}"
    where = Path(traceback.extract_tb(exc.__traceback__)[-1].filename).resolve()
    assert PACKAGE_DIR in where.parents, f"{what}: {type(exc).__name__} raised outside cnnwidgets, in {where}: {message}"
    assert "weights_only=False" not in message, f"{what}: the message advises turning the safety check off"
    assert any(re.search(p, message, re.S) for p in patterns), (
        f"{what}: the message matches none of {patterns}: {type(exc).__name__}: {message}")


def run_case(call: Callable, args: dict[str, Arg], check: Callable, *, kinds: tuple[type, ...], what: str) -> Any:
    """``call(**values)`` judged by :func:`tests.helpers.classified_call` with :func:`check_error`."""
    values = {k: a.value for k, a in args.items()}
    invalid = [a for a in args.values() if a.valid is False]
    maybe = [a for a in args.values() if a.valid is None]
    patterns = [a.pattern for a in invalid + maybe if a.pattern]
    what = f"{what}({', '.join(f'{k}={a!r}' for k, a in args.items())})"
    if invalid:
        what += f" [invalid: {invalid}]"
    return classified_call(call, values, refused_ok=bool(invalid or maybe), must_refuse=bool(invalid), check=check,
                           check_error=lambda exc: check_error(exc, patterns, what, kinds), what=what,
                           outcomes=OUTCOMES)


# ---------------------------------------------------------------------------- no network
def _no_network(*args, **kwargs):
    raise AssertionError("the network was used where no download is expected")


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """TORCH_HOME in tmp_path, HOME there too (for ``~``), no mirror, and every way out fails the test."""
    home = tmp_path / "torch-home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("CNNWIDGETS_WEIGHTS_MIRROR", raising=False)
    monkeypatch.setattr(socket.socket, "connect", _no_network)
    monkeypatch.setattr(urllib.request, "urlopen", _no_network)
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_network)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", _no_network)
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", _no_network)
    return home


class OfflineDownload:
    """Stands in for ``torch.hub.download_url_to_file`` where a download is expected: it fails as
    without a connection, and records what was asked for."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def __call__(self, url, dst, *args, **kwargs):
        self.calls.append((url, str(dst)))
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")


class PathLikeName:
    """An ``os.PathLike`` that is neither str nor Path."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __fspath__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"PathLikeName({str(self.path)!r})"


class Trap:
    """Pickles as a call that makes the folder ``marker``: loading it must never run that."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


# ---------------------------------------------------------------------------- names and weights specs
SMALL = ("squeezenet1_1", "mobilenet_v3_small", "resnet18")  # cheap to build and to save


def enum_of(arch: str):
    return torchvision.models.get_model_weights(arch)


def file_name(member) -> str:
    return Path(urlsplit(member.url).path).name


def arch_pool(archs=SMALL + ("alexnet",)) -> list[Arg]:
    bad_type = r"arch must be the name of a torchvision classification model \(a str such as 'resnet18'\), got "
    near = r"{} is not a torchvision classification model; did you mean [^?]*\b{}\b"
    unknown = r"{} is not a torchvision classification model.*classification_models\(\)"
    pool = [Arg(a) for a in archs] + [Arg(np.str_("resnet18"), label="np.str_('resnet18')")]
    misses = {"ResNet18": "resnet18", "RESNET18": "resnet18", " resnet18": "resnet18", "resnet18\n": "resnet18",
              "resnet-18": "resnet18", "resnet_18": "resnet18", "resnt18": "resnet18", "Squeezenet1_1": "squeezenet1_1",
              "squeezenet1.1": "squeezenet1_1", "mobilenet_v3small": "mobilenet_v3_small", "AlexNet": "alexnet"}
    pool += [Arg(a, False, near.format(re.escape(repr(a)), m)) for a, m in misses.items()]
    pool += [Arg(a, False, unknown.format(re.escape(repr(a)))) for a in ("", "yolov8", "vit", "resnet18.IMAGENET1K_V1")]
    for value in (None, 18, 1.5, True, b"resnet18", ["resnet18"], Path("resnet18"), torchvision.models.resnet18,
                  torchvision.models.ResNet18_Weights):
        pool.append(Arg(value, False, bad_type + re.escape(type(value).__name__)))
    return pool


def weights_pool(arch: str, *, none_ok: bool) -> list[Arg]:
    """Weights specs for ``arch``: every spelling of its members, and wrong ones (``none_ok``: None
    means untrained, as in load_torchvision)."""
    enum = enum_of(arch)
    members = list(enum)
    accepted = re.escape("available: " + ", ".join(["DEFAULT"] + [m.name for m in members]))
    pool = [Arg("DEFAULT", expected=enum.DEFAULT), Arg(f"{enum.__name__}.DEFAULT", expected=enum.DEFAULT),
            Arg(enum.DEFAULT, expected=enum.DEFAULT, label=str(enum.DEFAULT))]
    for m in members:
        pool += [Arg(m.name, expected=m), Arg(f"{enum.__name__}.{m.name}", expected=m), Arg(m, expected=m, label=str(m))]
    pool.append(Arg(None, True, expected=None) if none_ok else
                Arg(None, False, r"weights must be a string or a \w+ member, got NoneType"))
    other = torchvision.models.AlexNet_Weights if arch != "alexnet" else torchvision.models.ResNet18_Weights
    wrong = ["default", "imagenet1k_v1", "IMAGENET1K_V9", "", " DEFAULT", "DEFAULT ", enum.DEFAULT.url,
             f"{other.__name__}.IMAGENET1K_V1", f"{enum.__name__}.", f"{enum.__name__}.NOPE",
             f"{enum.__name__.lower()}.IMAGENET1K_V1", "torchvision.models." + f"{enum.__name__}.DEFAULT"]
    pool += [Arg(w, False, re.escape(repr(w)) + ".*" + accepted) for w in wrong]
    pool.append(Arg(other.IMAGENET1K_V1, False, re.escape(str(other.IMAGENET1K_V1)) + ".*" + accepted,
                    label=str(other.IMAGENET1K_V1)))
    bad_type = r"weights must be .*{}.*got {}" if none_ok else r"weights must be a string or a {} member, got {}"
    for value in (True, False, 0, 1, 1.5, enum, ["DEFAULT"], b"DEFAULT"):
        shown = "None" if none_ok else enum.__name__
        pool.append(Arg(value, False, bad_type.format(shown, type(value).__name__), label=repr(value)[:40]))
    return pool


def test_fuzz_architecture_names_and_weights_specs(offline):
    """resolve_weights and load_torchvision with an empty cache: a valid spec resolves to its member
    (load_torchvision then says exactly which file is missing and where it looked, or builds the
    untrained model for None); an invalid name or spec is refused saying what is accepted."""
    draw = Drawer(2024)
    cache = offline / "hub" / "checkpoints"

    def check_member(result, values, expected=None):
        assert result is expected, (result, expected)

    def check_load(result, values, member=None):
        arch = values["arch"]
        if member is None:  # untrained, with the default weights' class names and preprocessing
            default = enum_of(arch).DEFAULT
            assert isinstance(result, Bundle) and "untrained" in result.weights and not result.model.training
            assert result.classes == list(default.meta["categories"])
            crop = default.transforms().crop_size[0]
            assert result.input_size == (3, crop, crop)
            with torch.no_grad():
                assert result.model(torch.zeros(1, *result.input_size)).shape == (1, len(result.classes))
            return
        assert isinstance(result, WeightsUnavailableError), f"loaded without a file: {result!r}"
        name = file_name(member)
        assert result.filename == name and result.url == member.url
        assert result.searched == [cache / name] and result.cache_dir == cache
        message = str(result)
        assert name in message and str(cache / name) in message and f"$TORCH_HOME={offline}" in message
        assert f"python -m cnnwidgets.zoo.fetch {type(member).__name__}.{member.name}" in message
        assert "weights_path" in message and "download=True" in message

    def load(**kw):
        try:
            return load_torchvision(**kw)
        except WeightsUnavailableError as exc:
            return exc

    for i in range(60):
        draw.case()
        arch_arg = draw(arch_pool(), 0.3)
        arch = str(arch_arg.value) if arch_arg.valid else "resnet18"
        if draw.rng.random() < 0.4:
            weights_arg = draw(weights_pool(arch, none_ok=False), 0.4)
            run_case(resolve_weights, {"arch": arch_arg, "weights": weights_arg},
                     lambda result, values, member=weights_arg.expected: check_member(result, values, member),
                     kinds=(TypeError, ValueError), what=f"#{i} resolve_weights")
        elif arch != "alexnet":
            weights_arg = draw(weights_pool(arch, none_ok=True), 0.4)
            run_case(load, {"arch": arch_arg, "weights": weights_arg},
                     lambda result, values, member=weights_arg.expected: check_load(result, values, member),
                     kinds=(TypeError, ValueError),
                     what=f"#{i} load_torchvision")
    assert not cache.exists() or not any(cache.iterdir()), "something was written to the cache"
    assert_both_outcomes()


# ---------------------------------------------------------------------------- weights files
_STATES: dict[str, dict[str, torch.Tensor]] = {}


def build(arch: str, **kwargs) -> nn.Module:
    if arch == "tinyvgg":
        return TinyVGG(**kwargs)
    if arch == "shapesnet":
        return zoo.ShapesNet(**kwargs)
    return torchvision.models.get_model(arch, weights=None, **kwargs)


def base_state(arch: str, **kwargs) -> dict[str, torch.Tensor]:
    """A state_dict of ``arch`` that no fresh initialisation gives (every float tensor shifted by
    seeded noise), made once per test run."""
    key = f"{arch}{sorted(kwargs.items())}"
    if key not in _STATES:
        gen = torch.Generator().manual_seed(zlib.crc32(key.encode()))
        state = build(arch, **kwargs).state_dict()
        _STATES[key] = {k: (v + 0.01 + 0.1 * torch.rand(v.shape, generator=gen) if v.is_floating_point() else v.clone())
                        for k, v in state.items()}
    return _STATES[key]


OTHER_MODEL = {"squeezenet1_1": ("squeezenet1_0", {}), "mobilenet_v3_small": ("mnasnet0_5", {}),
               "resnet18": ("squeezenet1_1", {}), "tinyvgg": ("shapesnet", {})}
FROM_FILE = object()  # expected: whatever torch.load(weights_only=True) reads from the file


@dataclass
class Plan:
    """A weights file to write: how, whether loading it is valid, and what the model must then hold."""

    label: str
    valid: bool | None
    write: Callable[[Path], None]
    expected: Any = None
    notes: tuple[str, ...] = ()
    pattern: str = ""
    marker: Path | None = None


def saved(obj: object, **kwargs) -> Callable[[Path], None]:
    return lambda path: torch.save(obj, path, **kwargs)


def raw(data: bytes) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(data)


def saved_bytes(obj: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


FITS = r"does not fit"
NOT_LOADED = r"could not load .* with torch\.load\(weights_only=True\)"


def file_plans(arch: str, rng: random.Random, tmp: Path) -> list[Callable[[], Plan]]:
    """Builders of every kind of weights file for ``arch``; only the drawn one runs."""
    state = base_state(arch)
    keys = list(state)
    floats = [k for k, v in state.items() if v.is_floating_point() and v.ndim >= 1 and v.shape[0] > 1]

    def key() -> str:
        return rng.choice(keys)

    def plain() -> Plan:
        return Plan("plain", True, saved(state), state)

    def shuffled() -> Plan:
        items = list(state.items())
        rng.shuffle(items)
        return Plan("OrderedDict, shuffled", True, saved(OrderedDict(items)), state)

    def prefixed() -> Plan:
        prefix = rng.choice(["module.", "_orig_mod.", "_orig_mod.module."])
        notes = tuple(f"'{p}.' prefix" for p in prefix.rstrip(".").split("."))
        return Plan(f"{prefix} keys", True, saved({prefix + k: v for k, v in state.items()}), state, notes)

    def checkpoint() -> Plan:
        entry = rng.choice(["state_dict", "model", "model_state_dict"])
        inner = state if rng.random() < 0.5 else {f"module.{k}": v for k, v in state.items()}
        notes = (f"'{entry}'",) + (("'module.' prefix",) if inner is not state else ())
        obj = {entry: inner, "epoch": 7, "optimizer": {"param_groups": [{"lr": 0.1}], "state": {}}, "arch": arch}
        return Plan(f"checkpoint[{entry!r}]", True, saved(obj), state, notes)

    def precision() -> Plan:
        dtype = rng.choice([torch.float16, torch.float64, torch.bfloat16])
        converted = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
        return Plan(f"{dtype} tensors", True, saved(converted), converted)

    def parameters() -> Plan:
        return Plan("Parameters", True, saved({k: nn.Parameter(v) if v.is_floating_point() else v
                                               for k, v in state.items()}), state)

    def strided() -> Plan:
        views = {k: v.transpose(0, -1).contiguous().transpose(0, -1) if v.ndim >= 2 else v for k, v in state.items()}
        return Plan("non-contiguous tensors", True, saved(views), state)

    def legacy() -> Plan:
        return Plan("legacy format", True, saved(state, _use_new_zipfile_serialization=False), state)

    def missing() -> Plan:
        k = key()
        without = {n: v for n, v in state.items() if n != k}
        if k.endswith("num_batches_tracked"):  # BatchNorm's own loading fills in a missing count as 0
            return Plan(f"without {k}", True, saved(without), {**state, k: torch.tensor(0)})
        return Plan(f"without {k}", False, saved(without),
                    pattern=FITS + rf".*1 missing, 0 unexpected keys \(e\.g\. missing {re.escape(repr(k))}")

    def half_missing() -> Plan:
        kept = dict(list(state.items())[: len(state) // 2])
        return Plan("half the keys", False, saved(kept), pattern=FITS + r".*\d+ missing, 0 unexpected keys")

    def extra() -> Plan:
        k = key() + "_extra"
        return Plan(f"extra {k}", False, saved({**state, k: torch.zeros(2)}),
                    pattern=FITS + rf".*0 missing, 1 unexpected keys \(e\.g\. unexpected {re.escape(repr(k))}")

    def renamed() -> Plan:
        k = key()
        return Plan(f"{k} renamed", False, saved({(n.upper() if n == k else n): v for n, v in state.items()}),
                    pattern=FITS + r".*1 missing, 1 unexpected keys")

    def reshaped() -> Plan:
        k = rng.choice(floats)
        changed = {**state, k: state[k][:-1]}
        return Plan(f"{k} of another shape", False, saved(changed),
                    pattern=FITS + rf".*{re.escape(repr(k))} is \([\d, ]*\) in the file but \([\d, ]*\) in the model"
                    r"|names 10 classes but the output layer in .* has 9 units")

    def other_model() -> Plan:
        name, kwargs = OTHER_MODEL[arch]
        return Plan(f"{name}'s state_dict", False, saved(base_state(name, **kwargs)),
                    pattern=FITS + r".*\d+ missing, \d+ unexpected keys")

    def no_float() -> Plan:
        dtype = rng.choice([torch.int64, torch.int32, torch.uint8, torch.bool, torch.complex64])
        k = rng.choice(floats)
        changed = {n: v.to(dtype) if (n == k or (rng.random() < 0.5 and v.is_floating_point())) else v
                   for n, v in state.items()}
        bad = next(n for n, v in changed.items() if v.dtype == dtype)
        return Plan(f"{dtype} tensors", False, saved(changed),
                    pattern=FITS + rf".*{re.escape(repr(bad))} is {re.escape(str(dtype))} in the file.*floating-point")

    def no_data() -> Plan:
        k = rng.choice(floats)
        kind = rng.choice(["sparse", "meta"])
        value = state[k].to_sparse() if kind == "sparse" else torch.empty_like(state[k], device="meta")
        return Plan(f"{kind} {k}", False, saved({**state, k: value}),
                    pattern=FITS + rf".*{re.escape(repr(k))} is a {kind} tensor")

    def not_tensor() -> Plan:
        value = rng.choice([3, "weights", None, [1.0, 2.0], 0.5])
        k = key() if rng.random() < 0.5 else "epoch"
        return Plan(f"{k}={value!r}", False, saved({**state, k: value}),
                    pattern=rf"its entry {re.escape(repr(k))} is (a|an) {type(value).__name__}, not a tensor")

    def key_not_str() -> Plan:
        k = key()
        new = rng.choice([0, 7, ("conv", 1), 1.5])
        return Plan(f"key {new!r}", False, saved({(new if n == k else n): v for n, v in state.items()}),
                    pattern=rf"key {re.escape(repr(new))} is (a|an) {type(new).__name__}, not a str")

    def empty_dict() -> Plan:
        return Plan("{}", False, saved({}), pattern=FITS + r".*\d+ missing, 0 unexpected keys|empty state_dict")

    def nested_junk() -> Plan:
        return Plan("{'state_dict': {'a': 'b'}}", False, saved({"state_dict": {"a": "b"}}),
                    pattern=r"entry 'state_dict'.*its entry 'a' is a str, not a tensor")

    def ambiguous() -> Plan:
        return Plan("two state_dicts", False, saved({"model": state, "ema": state, "epoch": 1}),
                    pattern=r"2 of its entries \('model', 'ema'\) are state_dicts")

    def not_dict() -> Plan:
        obj = rng.choice([list(state.values())[:3], state[keys[0]], None, "weights", 42, (1, 2)])
        return Plan(f"a {type(obj).__name__}", False, saved(obj),
                    pattern=rf"does not hold a state_dict \(a dict of tensors\) but an? {type(obj).__name__}")

    def module() -> Plan:
        model = build(arch)  # the refusal names the class that was not unpickled
        return Plan("a pickled module", False, saved(model), pattern=NOT_LOADED + rf".*{type(model).__name__}")

    def trap() -> Plan:
        marker = tmp / f"ran-{rng.randrange(10**9)}"
        how = rng.choice(["torch.save", "pickle", "inside"])
        obj = {"x": Trap(marker)} if how != "inside" else {**state, "extra": Trap(marker)}
        write = raw(pickle.dumps(obj, protocol=2)) if how == "pickle" else saved(obj)
        return Plan(f"a trap ({how})", False, write, pattern=NOT_LOADED, marker=marker)

    def foreign_objects() -> Plan:
        obj = rng.choice([{**state, "when": datetime.date(2020, 1, 1)}, {k: v.numpy() for k, v in state.items()}])
        return Plan("objects weights_only refuses", False, saved(obj), pattern=NOT_LOADED)

    def broken_bytes() -> Plan:
        data = saved_bytes(state)
        kind = rng.choice(["empty", "truncated", "garbage", "text"])
        content = {"empty": b"", "truncated": data[: rng.randrange(1, len(data))],
                   "garbage": bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300))),
                   "text": b"these are not weights\n"}[kind]
        return Plan(f"{kind} bytes", False, raw(content), pattern=NOT_LOADED)

    def mutated() -> Plan:
        data = bytearray(saved_bytes(state))
        for _ in range(rng.randrange(1, 12)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return Plan("mutated bytes", None, raw(bytes(data)), FROM_FILE,
                    pattern=NOT_LOADED + "|" + FITS + r"|does not hold a state_dict|not a tensor|not a str")

    valid = [plain, shuffled, prefixed, checkpoint, precision, parameters, strided, legacy]
    invalid = [missing, half_missing, extra, renamed, reshaped, other_model, no_float, no_data, not_tensor,
               key_not_str, empty_dict, nested_junk, ambiguous, not_dict, module, trap, foreign_objects,
               broken_bytes, mutated]
    return valid * 2 + invalid  # valid files drawn as often as broken ones


def path_pool(path: Path, tmp: Path, name: str) -> list[Arg]:
    """The written file's path in every accepted form, and paths that are no usable file."""
    folder = tmp / "a-folder.pth"
    folder.mkdir(exist_ok=True)
    bad_type = name + r" must be a file path \(str or pathlib\.Path\), got "
    return [
        Arg(str(path)), Arg(path), Arg(PathLikeName(path)), Arg("~/" + str(path.relative_to(tmp)), label="~/..."),
        Arg(folder, False, rf"{re.escape(str(folder))}.* is a folder, not a file"),
        Arg(tmp / "missing.pth", False, rf"not found: {re.escape(repr(str(tmp / 'missing.pth')))}"),
        Arg("https://example.org/models/net-0123abcd.pth", False, r"URLs such as"),
        Arg("", False, rf"{name} is an empty string"),
        *[Arg(v, False, bad_type + type(v).__name__) for v in (3, 1.5, b"weights.pth", [str(path)])],
    ]


def assert_holds(model: nn.Module, expected: dict[str, torch.Tensor], what: str) -> None:
    """``model`` holds exactly ``expected``, each tensor cast to the model's dtype."""
    own = model.state_dict()
    assert own.keys() == expected.keys(), f"{what}: keys differ: {sorted(set(own) ^ set(expected))[:4]}"
    for k, v in own.items():
        want = expected[k]
        same = v.shape == want.shape and torch.equal(v, want.to(v.dtype))
        if not same and v.is_floating_point() and v.shape == want.shape:  # NaN (mutated bytes) equals NaN here
            mine, theirs = torch.nan_to_num(v, nan=7.0), torch.nan_to_num(want.to(v.dtype), nan=7.0)
            same = torch.equal(torch.isnan(v), torch.isnan(want.to(v.dtype))) and torch.equal(mine, theirs)
        assert same, f"{what}: {k} is not the file's tensor"


def test_fuzz_torchvision_weights_files(offline, tmp_path):
    """load_torchvision(arch, weights, weights_path=...) with every kind of file and path."""
    draw = Drawer(7)
    for i in range(36):
        draw.case()
        arch = draw.rng.choice(SMALL[:2] * 3 + SMALL[2:])
        plans = file_plans(arch, draw.rng, tmp_path)
        builder = plans[draw.rng.randrange(len(plans))] if not draw.all_valid else draw.rng.choice(plans[:8])
        plan = builder()
        path = tmp_path / f"file-{i}.pth"
        plan.write(path)
        file_arg = Arg(path, plan.valid, plan.pattern, label=plan.label)
        if draw.all_valid or plan.valid is not False:
            path_arg = draw(path_pool(path, tmp_path, "weights_path"), 0.3)
        else:
            path_arg = Arg(path)
        weights_arg = draw([a for a in weights_pool(arch, none_ok=True) if a.valid] if draw.rng.random() < 0.9
                           else weights_pool(arch, none_ok=True), 0.3)
        if weights_arg.value is None:
            weights_arg = Arg(None, False, r"weights=None means untrained; give weights")
        check_hash = draw([Arg(False), Arg(True, False, r"does not have the SHA-256 prefix [0-9a-f]{8}"),
                           Arg("yes", False, r"check_hash must be True or False")], 0.1)
        download = draw([Arg(False), Arg(True), Arg(1, False, r"download must be True or False")], 0.05)
        member = weights_arg.expected

        def check(bundle, values, plan=plan, member=member, arch=arch, path=path):
            assert isinstance(bundle, Bundle) and bundle.name == arch and not bundle.model.training
            expected = torch.load(path, weights_only=True) if plan.expected is FROM_FILE else plan.expected
            assert_holds(bundle.model, expected, plan.label)
            assert str(path) in bundle.weights and "not verified" in bundle.weights, bundle.weights
            assert all(note in bundle.weights for note in plan.notes), (plan.notes, bundle.weights)
            assert bundle.classes == list(member.meta["categories"])

        args = {"arch": Arg(arch), "weights": weights_arg, "weights_path": path_arg, "check_hash": check_hash,
                "download": download}
        if path_arg.value is path:
            args["weights_path"] = file_arg
        run_case(load_torchvision, args, check,
                 kinds=(TypeError, ValueError, RuntimeError, FileNotFoundError, IsADirectoryError),
                 what=f"#{i} load_torchvision [{plan.label}]")
        assert plan.marker is None or not plan.marker.exists(), f"#{i}: loading {plan.label} ran pickled code"
    assert_both_outcomes()


def test_fuzz_tinyvgg_weights_files(tmp_path, monkeypatch):
    """load_tinyvgg(folder or file) with every kind of state_dict file and path."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(socket.socket, "connect", _no_network)
    draw = Drawer(11)
    for i in range(40):
        draw.case()
        folder = tmp_path / f"tinyvgg-{i}"
        folder.mkdir()
        (folder / "classes.json").write_text(
            "{" + ", ".join(f'"{n}": "{c}"' for n, c in enumerate(TEN_CLASSES)) + "}", encoding="utf-8")
        plans = file_plans("tinyvgg", draw.rng, tmp_path)
        plan = (draw.rng.choice(plans[:8]) if draw.all_valid else plans[draw.rng.randrange(len(plans))])()
        path = folder / "tinyvgg_state_dict.pth"
        plan.write(path)
        forms = [Arg(folder), Arg(str(folder)), Arg(PathLikeName(folder)), Arg(path), Arg(str(path)),
                 Arg("~/" + str(folder.relative_to(tmp_path)), label="~/folder")]
        bad = [Arg(tmp_path / "nothing", False, r"TinyVGG weights not found"),
               Arg("https://example.org/tinyvgg/", False, r"URLs such as"),
               Arg("", False, r"path_or_dir is an empty string"),
               *[Arg(v, False, r"path_or_dir must be a folder or file path \(str or pathlib\.Path\), got "
                     + type(v).__name__) for v in (None, 3, b"folder", [str(folder)])]]
        where = draw(forms + bad, 0.25 if plan.valid is not False else 0.0)
        if where.valid and plan.valid is not True:
            where = Arg(where.value, plan.valid, plan.pattern, label=f"{where!r} holding {plan.label}")

        def check(bundle, values, plan=plan, path=path):
            expected = torch.load(path, weights_only=True) if plan.expected is FROM_FILE else plan.expected
            assert isinstance(bundle, Bundle) and bundle.name == "tinyvgg" and bundle.classes == TEN_CLASSES
            assert_holds(bundle.model, expected, plan.label)
            assert str(path) in bundle.weights and all(note in bundle.weights for note in plan.notes), bundle.weights

        run_case(load_tinyvgg, {"path_or_dir": where}, check,
                 kinds=(TypeError, ValueError, RuntimeError, FileNotFoundError), what=f"#{i} load_tinyvgg [{plan.label}]")
        assert plan.marker is None or not plan.marker.exists(), f"#{i}: loading {plan.label} ran pickled code"
    assert_both_outcomes()


# ---------------------------------------------------------------------------- the hub cache
def test_fuzz_the_hub_cache_found_through_the_environment(offline, tmp_path, monkeypatch):
    """load_torchvision(arch) looks in <hub dir>/checkpoints, the hub dir from TORCH_HOME (``~``
    expanded, empty: relative to the working folder) or XDG_CACHE_HOME; what it finds there decides."""
    draw = Drawer(99)
    for i in range(22):
        draw.case()
        arch = draw.rng.choice(SMALL[:2])
        member = enum_of(arch).DEFAULT
        env = draw.rng.choice(["TORCH_HOME", "~", "XDG_CACHE_HOME", "empty"])
        monkeypatch.delenv("TORCH_HOME", raising=False)
        monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
        if env == "TORCH_HOME":
            monkeypatch.setenv("TORCH_HOME", str(tmp_path / f"home-{i}"))
            hub, where = tmp_path / f"home-{i}" / "hub", f"$TORCH_HOME={tmp_path / f'home-{i}'}"
        elif env == "~":
            monkeypatch.setenv("TORCH_HOME", f"~/tilde-{i}")
            hub, where = tmp_path / f"tilde-{i}" / "hub", f"$TORCH_HOME=~/tilde-{i}"
        elif env == "XDG_CACHE_HOME":
            monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / f"xdg-{i}"))
            hub, where = tmp_path / f"xdg-{i}" / "torch" / "hub", "TORCH_HOME is not set"
        else:  # torch takes the empty value as it is: hub/ under the working folder
            monkeypatch.setenv("TORCH_HOME", "")
            (tmp_path / f"cwd-{i}").mkdir()
            monkeypatch.chdir(tmp_path / f"cwd-{i}")
            hub, where = Path("hub"), "TORCH_HOME is set but empty"
        target = hub / "checkpoints" / file_name(member)
        content = draw([Arg("nothing"), Arg("file"), Arg("file, recorded wrongly"),
                        Arg("corrupt", False, r"could not load .*deleting it is safe"),
                        Arg("another model's", False, r"does not fit.*deleting it is safe"),
                        Arg("folder", False, r"is a folder, not a file")], 0.5)
        check_hash = draw([Arg(False), Arg(True, False, r"SHA-256 prefix [0-9a-f]{8}.*deleting it is safe")], 0.15)
        if content.value == "nothing":
            check_hash = Arg(check_hash.value)  # nothing to hash: the file is missing either way
        download = draw([Arg(False), Arg(True)], 0.0)
        downloads = OfflineDownload()
        monkeypatch.setattr(torch.hub, "download_url_to_file", downloads if download.value else _no_network)
        state = base_state(arch)
        target.parent.mkdir(parents=True, exist_ok=True)
        if content.value.startswith("file"):
            torch.save(state, target)
            if content.value.endswith("wrongly"):
                F._record_verified(target, "0" * 64)
        elif content.value == "corrupt":
            target.write_bytes(b"PK\x03\x04 cut off")
        elif content.value == "another model's":
            name, kwargs = OTHER_MODEL[arch]
            torch.save(base_state(name, **kwargs), target)
        elif content.value == "folder":
            target.mkdir()
        before = target.read_bytes() if target.is_file() else None

        def check(result, values, content=content.value, target=target, where=where, state=state,
                  downloads=downloads, hub=hub, member=member):
            if content == "nothing":
                assert isinstance(result, WeightsUnavailableError), result
                assert result.searched == [target] and result.cache_dir == hub / "checkpoints"
                assert where in str(result) and str(target) in str(result), str(result)
                if values["download"]:
                    assert downloads.calls == [(member.url, str(target))], downloads.calls
                    assert "downloading it failed" in str(result) and "name resolution" in str(result)
                assert not target.exists()
                return
            assert isinstance(result, Bundle), result
            assert_holds(result.model, state, content)
            assert str(target) in result.weights and "not verified" in result.weights and not downloads.calls

        def load(content, **kw):  # content: what the cache holds, named in failure messages
            try:
                return load_torchvision(**kw)
            except WeightsUnavailableError as exc:
                return exc

        run_case(load, {"arch": Arg(arch), "content": content, "check_hash": check_hash, "download": download},
                 check, kinds=(ValueError, RuntimeError, IsADirectoryError), what=f"#{i} [{env}] load_torchvision")
        assert (target.read_bytes() if target.is_file() else None) == before, "the cached file was changed"
    assert_both_outcomes()



# ---------------------------------------------------------------------------- fetching
UNKNOWN = r"unknown weights {}; give a torchvision weights name such as 'ResNet18_Weights\.IMAGENET1K_V1' or a URL"


def spec_pool(*, for_fetch: bool) -> list[Arg]:
    """Weights names and URLs, near-miss names with the name they should suggest, and values that are no str."""
    W = torchvision.models
    named = {"ResNet18_Weights.IMAGENET1K_V1": W.ResNet18_Weights.IMAGENET1K_V1,
             "SqueezeNet1_1_Weights.DEFAULT": W.SqueezeNet1_1_Weights.DEFAULT,
             "MobileNet_V3_Small_Weights.IMAGENET1K_V1": W.MobileNet_V3_Small_Weights.IMAGENET1K_V1,
             "AlexNet_Weights.DEFAULT": W.AlexNet_Weights.DEFAULT,
             }
    pool = [Arg(name, expected=member.url) for name, member in named.items()]
    # torchvision names its quantized files without the '-<hash>.' that fetch_weights verifies
    quantized = W.quantization.ResNet18_QuantizedWeights.IMAGENET1K_FBGEMM_V1
    pool.append(Arg("ResNet18_QuantizedWeights.IMAGENET1K_FBGEMM_V1", False, r"'resnet18_fbgemm_16fa66dd\.pth' carries "
                    r"no '-<sha256 prefix>\.'") if for_fetch else
                Arg("ResNet18_QuantizedWeights.IMAGENET1K_FBGEMM_V1", expected=quantized.url))
    pool += [Arg(url, expected=url) for url in ("https://example.org/models/net-0123abcd.pth",
                                                "file:///tmp/mirror/net-89abcdef9.pt")]
    no_hash = "https://example.org/models/net.pth"
    pool.append(Arg(no_hash, False, r"'net\.pth' carries no '-<sha256 prefix>\.'") if for_fetch
                else Arg(no_hash, expected=no_hash))
    near = {"resnet18.IMAGENET1K_V1": "ResNet18_Weights.IMAGENET1K_V1",
            "ResNet18_weights.IMAGENET1K_V1": "ResNet18_Weights.IMAGENET1K_V1",
            "resnet18_weights.DEFAULT": "ResNet18_Weights.DEFAULT",
            "ResNet18_Weights.imagenet1k_v1": "ResNet18_Weights.IMAGENET1K_V1",
            "squeezenet1_1.DEFAULT": "SqueezeNet1_1_Weights.DEFAULT",
            " ResNet18_Weights.DEFAULT": "ResNet18_Weights.DEFAULT",
            "AlexNet_Weights.DEFAULT\n": "AlexNet_Weights.DEFAULT"}
    pool += [Arg(s, False, UNKNOWN.format(re.escape(repr(s))) + rf"; did you mean {re.escape(repr(m))}\?")
             for s, m in near.items()]
    pool += [Arg(s, False, UNKNOWN.format(re.escape(repr(s))))
             for s in ("ResNet18_Weights", "IMAGENET1K_V1", "", "ResNet18_Weights.IMAGENET1K_V1.pth",
                       "quantization.IMAGENET1K_V1", "resnet.DEFAULT", "WeightsEnum.DEFAULT", "os.system",
                       "models.ResNet18_Weights.DEFAULT")]
    bad_type = (r"(each weights spec must be a str \(a torchvision weights name such as 'ResNet18_Weights\.IMAGENET1K_V1', "
                r"or a URL\)|specs must be a torchvision weights name or URL \(str\), or a list of them), got {}"
                if for_fetch else
                r"spec must be a torchvision weights name or a URL \(a str\), got {}")
    pool += [Arg(v, False, bad_type.format(re.escape(type(v).__name__)), label=repr(v)[:40])
             for v in (None, 3, W.ResNet18_Weights.IMAGENET1K_V1, Path("ResNet18_Weights.DEFAULT"))]
    if not for_fetch:
        pool += [Arg(v, False, bad_type.format(type(v).__name__)) for v in (b"ResNet18_Weights.DEFAULT",
                                                                            ["ResNet18_Weights.DEFAULT"])]
    return pool


def test_fuzz_resolve_url_and_fetch_weights(offline, monkeypatch):
    """resolve_url gives the weights' URL (a URL stays as it is); fetch_weights, offline, fails with a
    FetchError that says how to get the file, after one download attempt of that URL, and leaves nothing."""
    draw = Drawer(5)
    folder = offline / "hub" / "checkpoints"

    def check_url(result, values, url=None):
        assert result == url, (result, url)

    for i in range(40):
        draw.case()
        spec = draw(spec_pool(for_fetch=False), 0.5)
        run_case(F.resolve_url, {"spec": spec}, lambda result, values, url=spec.expected: check_url(result, values, url),
                 kinds=(TypeError, ValueError), what=f"#{i} resolve_url")
    for i in range(24):
        draw.case()
        specs = [draw(spec_pool(for_fetch=True), 0.5) for _ in range(draw.rng.choice([1, 1, 2]))]
        as_list = len(specs) > 1 or draw.rng.random() < 0.5
        spec_arg = Arg([s.value for s in specs] if as_list else specs[0].value,
                       False if any(s.valid is False for s in specs) else True,
                       "|".join(s.pattern for s in specs if s.valid is False), label=repr(specs))
        progress = draw([Arg(False), Arg(True), Arg("no", False, r"progress must be True or False")], 0.1)
        downloads = OfflineDownload()
        monkeypatch.setattr(torch.hub, "download_url_to_file", downloads)

        def fetch(specs, progress):
            try:
                return F.fetch_weights(specs, progress=progress)
            except F.FetchError as exc:
                return exc

        def check(result, values, first=specs[0], downloads=downloads):
            assert isinstance(result, F.FetchError), f"fetched offline: {result!r}"
            name = Path(urlsplit(first.expected).path).name
            assert downloads.calls == [(first.expected, str(folder / name))], downloads.calls
            assert f"could not fetch {name}" in result.problem and "name resolution" in result.problem
            assert result.advice.startswith("To fix, either:") and str(folder / name) in result.advice
            assert [p.name for p in folder.iterdir()] == [], "a download left files behind"

        run_case(fetch, {"specs": spec_arg, "progress": progress}, check, kinds=(TypeError, ValueError),
                 what=f"#{i} fetch_weights")
    assert_both_outcomes()


def test_fuzz_the_fetch_command_line(offline, monkeypatch, capsys):
    """``python -m cnnwidgets.zoo.fetch SPEC``: offline, every spec ends in one ``error:`` report and
    exit status 1, never a traceback; the report of a bad name says what is accepted."""
    monkeypatch.setattr(torch.hub, "download_url_to_file", OfflineDownload())
    pool = [a for a in spec_pool(for_fetch=True) if isinstance(a.value, str)]
    for spec in random.Random(3).sample(pool, 14):
        assert F.main([spec.value, "--quiet"]) == 1, spec
        err = capsys.readouterr().err
        assert err.startswith("error: ") and "Traceback" not in err, err
        if spec.valid:
            assert "name resolution" in err and "To fix, either:" in err, err
        else:
            assert re.search(spec.pattern, err, re.S), (spec, err)


# ---------------------------------------------------------------------------- preprocessing and bundles
def side_pool(name: str) -> list[Arg]:
    count = name + r" must be an int >= 1, got "
    return [Arg(1, expected=1), Arg(8, expected=8), Arg(17, expected=17), Arg(64, expected=64),
            Arg(np.int64(32), expected=32), Arg(torch.tensor(16), expected=16, label="tensor(16)"),
            Arg(0, False, count + "0"), Arg(-3, False, count + "-3"), Arg(8.0, False, count + "float 8.0"),
            Arg(True, False, count + "bool True"), Arg("64", False, count + "str '64'"),
            Arg(None, False, count + "a NoneType"), Arg([8], False, count + r"list \[8\]"),
            Arg(4097, False, name + r" must be at most 4096 px"), Arg(10**9, False, name + r" must be at most 4096 px")]


def normalisation_pool(name: str) -> list[Arg]:
    """Values for ``mean`` or ``std`` (``expected``: the three floats they stand for)."""
    three = name + r" must be three numbers, one per RGB channel"
    finite = re.escape(name) + r"\[\d\] must be a finite number" + (" > 0" if name == "std" else "")
    valid = ([(0.485, 0.456, 0.406), [0.5, 0.5, 0.5], (0, 0, 0), (-1e3, 0.0, 1e3)] if name == "mean"
             else [(0.229, 0.224, 0.225), [0.25, 0.25, 0.25], (1e-3, 1e-3, 1e-3), (2, 3, 4)])
    pool = [Arg(None, expected=None)]
    for v in valid:
        floats = tuple(float(x) for x in v)
        pool += [Arg(v, expected=floats), Arg(np.array(v, dtype=np.float64), expected=floats, label=f"np.array({v})"),
                 Arg(torch.tensor(v, dtype=torch.float64), expected=floats, label=f"tensor({v})"),
                 Arg(tuple(Fraction(x).limit_denominator(10**6) for x in v),
                     expected=tuple(float(Fraction(x).limit_denominator(10**6)) for x in v), label=f"Fractions{v}")]
    pool += [Arg((0.5, 0.5), False, three + r", got 2"), Arg((0.5,) * 4, False, three + r", got 4"),
             Arg("0.5", False, three + r", got str"), Arg(0.5, False, three + r", got float"),
             Arg(torch.tensor(0.5), False, three + r", got float"),
             Arg((math.nan, 0.5, 0.5), False, finite), Arg((0.5, math.inf, 0.5), False, finite),
             Arg((True, 0.5, 0.5), False, re.escape(name) + r"\[0\] must be a number, got bool"),
             Arg(("0.5", 0.5, 0.5), False, re.escape(name) + r"\[0\] must be a number, got str"),
             Arg((1j, 0.5, 0.5), False, re.escape(name) + r"\[0\] must be a number, got complex"),
             Arg({0.1, 0.2, 0.3}, False, three + r", in RGB order .*got a set"),
             Arg({"r": 0.5, "g": 0.5, "b": 0.5}, False, three + r", in RGB order .*got a dict")]
    if name == "std":
        pool += [Arg((0, 1, 1), False, finite), Arg((1, -1, 1), False, finite),
                 Arg((1e-300, 1, 1), False, r"too large for float32")]
    else:
        pool += [Arg((1e300, 0, 0), False, r"too large for float32")]
    return pool


def test_fuzz_image_preprocess_and_denormalize():
    """ImagePreprocess(size, mean, std, resize) maps a solid colour c to (c - mean) / std everywhere,
    and an image already size x size pixel for pixel; Denormalize(mean, std) gives the picture back."""
    draw = Drawer(31)
    for i in range(110):
        draw.case()
        size = draw(side_pool("size"), 0.25)
        side = size.expected if size.valid else 20
        resize = draw([Arg(None, expected=side), Arg(side, expected=side),
                       Arg(side + 7, expected=side + 7), Arg(min(side + 300, 4096), expected=min(side + 300, 4096)),
                       *([Arg(side - 1, False, rf"resize \({side - 1}\) must be >= size \({side}\)")] if side > 1 else []),
                       Arg(0, False, r"resize must be an int >= 1, got 0"),
                       Arg(8.5, False, r"resize must be an int >= 1, got float 8\.5"),
                       Arg(False, False, r"resize must be an int >= 1, got bool False")], 0.2)
        mean, std = draw(normalisation_pool("mean"), 0.2), draw(normalisation_pool("std"), 0.2)
        if (mean.value is None) != (std.value is None):
            both = r"give both mean and std, or neither"
            mean = Arg(mean.value, False, both if mean.valid else mean.pattern + "|" + both, label=repr(mean))
        rng = np.random.default_rng(i)
        exact = resize.valid and resize.expected == side and side >= 8 and draw.rng.random() < 0.5
        if exact:
            pixels = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
        else:
            h, w = (int(n) for n in rng.integers(8, 48, 2))
            pixels = np.broadcast_to(rng.integers(0, 256, 3, dtype=np.uint8), (h, w, 3)).copy()
        image = rng.choice(["array", "pil", "tensor"])
        source = {"array": pixels, "pil": Image.fromarray(pixels),
                  "tensor": torch.from_numpy(pixels).permute(2, 0, 1).float() / 255}[image]

        def check(pre, values, pixels=pixels, source=source, side=side, exact=exact, mean=mean, std=std):
            out = pre(source)
            assert out.shape == (3, side, side) and out.dtype == torch.float32 and out.is_contiguous()
            rgb = (pixels[:side, :side] if exact else np.broadcast_to(pixels[0, 0], (side, side, 3))) / 255.0
            m = np.array(mean.expected or (0.0, 0.0, 0.0))
            s = np.array(std.expected or (1.0, 1.0, 1.0))
            want = ((rgb - m) / s).transpose(2, 0, 1)
            # resampling a solid colour is exact up to float32 rounding, which dividing by std magnifies
            np.testing.assert_allclose(out.numpy(), want, rtol=1e-5, atol=1e-5 + (0 if exact else 1e-6 / s.min()))
            back = Denormalize(values["mean"], values["std"])(out)
            tol = 2e-3 if np.abs(m).max() > 10 else 1e-5
            np.testing.assert_allclose(back, np.clip(rgb, 0, 1), atol=tol)
            assert repr(pre).startswith("ImagePreprocess(")

        run_case(ImagePreprocess, {"size": size, "mean": mean, "std": std, "resize": resize}, check,
                 kinds=(TypeError, ValueError), what=f"#{i} ImagePreprocess [{image}]")
    assert_both_outcomes()


def test_fuzz_resize_shorter_and_center_crop():
    """resize_shorter(t, side) makes the shorter side ``side`` keeping the aspect; center_crop(t, side)
    cuts the centre side x side square; both refuse what they cannot do instead of returning less."""
    draw = Drawer(47)
    for i in range(90):
        draw.case()
        rng = np.random.default_rng(i)
        c = int(rng.choice([1, 3]))
        h, w = (int(rng.choice([0, 1, 5, 8, 13, 24])) for _ in range(2))
        t = torch.from_numpy(rng.random((c, h, w), dtype=np.float32))
        crop = draw.rng.random() < 0.5
        short = min(h, w)
        tensors = [Arg(t, label=f"tensor{tuple(t.shape)}")]
        tensors += [Arg(t.numpy(), False, r"t must be a torch\.Tensor", label="numpy array"),
                    Arg(t.reshape(-1), False, r"t must be .*\(C, H, W\)", label="1-d tensor")]
        if not crop:
            tensors.append(Arg((t * 255).to(torch.uint8), False, r"t must be a floating-point tensor", label="uint8"))
        sides = [a for a in side_pool("side") if not isinstance(a.value, torch.Tensor)]
        sides = [a for a in sides if not a.valid or (a.expected <= short if crop else a.expected <= 64)]
        if short >= 1:
            sides += [Arg(int(draw.rng.randint(1, short)), expected=None), Arg(short, expected=None)]
        if crop:
            sides.append(Arg(short + draw.rng.randint(1, 5), None, label="larger than the image"))
        tensor = draw(tensors, 0.2)
        side = draw(sides, 0.3)
        value = side.value
        if side.valid is not False and tensor.valid:
            too_small = crop and int(value) > short
            empty = short == 0
            if too_small or empty:
                pattern = (rf"cannot crop a {int(value)}x{int(value)} square from an image of {h}x{w} px" if crop
                           else rf"cannot resize an empty image of shape \({c}, {h}, {w}\)")
                side = Arg(value, False, pattern, label=f"{value} for {h}x{w}")
            else:
                side = Arg(value, True, label=repr(value))

        def check(out, values, t=t, h=h, w=w, crop=crop):
            s = int(values["side"])
            if crop:
                top, left = (h - s) // 2, (w - s) // 2
                assert out.shape == (t.shape[0], s, s) and torch.equal(out, t[:, top:top + s, left:left + s])
                return
            assert min(out.shape[-2:]) == s and out.shape[0] == t.shape[0]
            if min(h, w) == s:
                assert out is t
            else:
                scale = s / min(h, w)
                assert out.shape[-2:] == (max(s, round(h * scale)), max(s, round(w * scale)))
                assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0

        call = B.center_crop if crop else B.resize_shorter
        run_case(call, {"t": tensor, "side": side}, check, kinds=(TypeError, ValueError),
                 what=f"#{i} {call.__name__}")
    assert_both_outcomes()


def test_fuzz_bundle_fields():
    """Bundle(model, classes, preprocess, input_size, name, weights, mean, std, denormalize): the fields
    a bundle cannot work without are checked when it is made, and a valid one predicts."""
    draw = Drawer(13)
    net = small_classifier()
    for i in range(70):
        draw.case()
        model = draw([Arg(net, label="small_classifier()"),
                      *[Arg(v, False, r"model must be a torch\.nn\.Module.*got " + type(v).__name__, label=repr(v)[:30])
                        for v in (None, "resnet18", {"w": torch.zeros(1)}, torchvision.models.resnet18)]], 0.3)
        preprocess = draw([Arg(ImagePreprocess(16)), Arg(lambda image: torch.rand(3, 16, 16), label="a lambda"),
                           *[Arg(v, False, r"preprocess must be a callable.*got " + type(v).__name__)
                             for v in (None, "resize", 3)]], 0.3)
        denormalize = draw([Arg(None), Arg(Denormalize(None, None)),
                            Arg("x", False, r"denormalize must be None or a callable .*got str")], 0.2)
        names = r"classes must be the class names in class order: a list, tuple or 1-D array of str, got "
        classes = draw([Arg(list("abcde")), Arg(tuple("abcde")), Arg(np.array(list("abcde")), label="np str array"),
                        *[Arg(v, False, names + kind, label=repr(v)[:30]) for v, kind in (
                            ("abcde", "str"), (set("abcde"), "set"), (dict.fromkeys("abcde"), "dict"), (None, "NoneType"),
                            (5, "int"), (np.array([list("abcde")]), "ndarray"), ([1, 2, 3, 4, 5], "int 1 for class 0"))]],
                       0.2)
        size = draw([Arg((3, 16, 16), expected=(3, 16, 16)), Arg([3, 16, 16], expected=(3, 16, 16)),
                     Arg(torch.Size([3, 16, 16]), expected=(3, 16, 16)),
                     Arg(np.array([3, 16, 16]), expected=(3, 16, 16), label="np int array"),
                     *[Arg(v, False, r"input_size must be \(C, H, W\), three positive ints", label=repr(v)[:30])
                       for v in ((3, 16), "3x16x16", (3, 0, 16), (3, 16.5, 16), {3, 16}, None, (True, 16, 16))]], 0.2)
        name = draw([Arg("net"), *[Arg(v, False, "name must be a str, got " + type(v).__name__) for v in (None, 3)]],
                    0.1)
        weights = draw([Arg("random"), Arg(b"w", False, "weights must be a str, got bytes")], 0.1)
        mean, std = draw(normalisation_pool("mean"), 0.15), draw(normalisation_pool("std"), 0.15)
        if (mean.value is None) != (std.value is None):
            both = r"give both mean and std, or neither"
            mean = Arg(mean.value, False, both if mean.valid else mean.pattern + "|" + both, label=repr(mean))

        def check(bundle, values, mean=mean, std=std, size=size):
            assert bundle.mean == mean.expected and bundle.std == std.expected
            assert bundle.classes == list("abcde") and all(type(c) is str for c in bundle.classes)
            assert bundle.input_size == size.expected and all(type(v) is int for v in bundle.input_size)
            assert callable(bundle.denormalize) and "Bundle(name='net'" in repr(bundle)
            top = bundle.predict(np.zeros((16, 16, 3), np.uint8), top_k=2)
            assert len(top) == 2 and {name for name, _ in top} <= set(bundle.classes)

        run_case(Bundle, {"model": model, "classes": classes, "preprocess": preprocess, "input_size": size,
                          "name": name, "weights": weights, "denormalize": denormalize, "mean": mean, "std": std},
                 check, kinds=(TypeError, ValueError), what=f"#{i} Bundle")
    assert_both_outcomes()


# ---------------------------------------------------------------------------- samples and ZFNet
def sample_name_pool(*, none_ok: bool) -> list[Arg]:
    listed = r"available: circle, square, triangle, star, cross, scene-circle-star, scene-square-triangle-cross"
    pool = [Arg(n, expected=n) for n in SAMPLES] + [Arg(np.str_("circle"), expected="circle", label="np.str_")]
    pool.append(Arg(None, expected=G.DEFAULT_SAMPLE) if none_ok else
                Arg(None, False, r"name must be a sample's name \(a str such as 'star'\), got NoneType"))
    near = {"Star": "star", "STAR": "star", " star": "star", "star ": "star", "Circle": "circle",
            "scene-circle-star ": "scene-circle-star", "crosss": "cross", "tri": "triangle"}
    pool += [Arg(n, False, rf"no sample named {re.escape(repr(n))} \(did you mean {re.escape(repr(m))}\?\); {listed}")
             for n, m in near.items()]
    pool += [Arg(n, False, rf"no sample named {re.escape(repr(n))}; {listed}") for n in ("hexagon", "", "1")]
    pool += [Arg(v, False, r"name must be a sample's name \(a str such as 'star'\), got " + type(v).__name__)
             for v in (1, 1.5, True, ["star"], {"star": 1}, b"star", ("star",))]
    return pool


def test_fuzz_sample_names():
    """sample_image / render_sample: a sample's name gives its 64 x 64 RGB picture (the shipped file is
    what the specification draws); another name is a KeyError listing the names, with the one meant
    when it is a near miss; a value that is no str is a TypeError."""
    draw = Drawer(17)
    for i in range(40):
        draw.case()
        shipped = draw.rng.random() < 0.6
        name = draw(sample_name_pool(none_ok=shipped), 0.5)

        def check(image, values, name=name, shipped=shipped):
            assert image.mode == "RGB" and image.size == (64, 64)
            other = G.render_sample(name.expected) if shipped else G.sample_image(name.expected)
            assert np.array_equal(np.asarray(image), np.asarray(other))

        call = G.sample_image if shipped else G.render_sample
        run_case(call, {"name": name}, check, kinds=(KeyError, TypeError), what=f"#{i} {call.__name__}")
    assert_both_outcomes()


def test_fuzz_write_samples_folders(tmp_path, capsys):
    """write_samples(folder) writes every sample as <name>.png in a str, Path or PathLike folder (made
    when missing); a file or a value that is no path is refused; the command line does the same."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    pool = [Arg(tmp_path / "out-path"), Arg(str(tmp_path / "out-str")), Arg(PathLikeName(tmp_path / "out-like")),
            Arg(tmp_path / "deep" / "er"), Arg(blocker, False, r"is a file, not a folder"),
            *[Arg(v, False, r"folder must be a folder path \(str or pathlib\.Path\), got " + type(v).__name__)
              for v in (None, 3, b"out", [str(tmp_path)])]]

    def check(paths, values):
        folder = Path(os.fspath(values["folder"]))
        assert paths == [folder / f"{name}.png" for name in SAMPLES]
        for name, path in zip(SAMPLES, paths):
            assert np.array_equal(np.asarray(Image.open(path).convert("RGB")), np.asarray(G.render_sample(name)))

    for i, folder in enumerate(pool):
        run_case(G.write_samples, {"folder": folder}, check, kinds=(TypeError, NotADirectoryError),
                 what=f"#{i} write_samples")
    assert G.main(["--out", str(tmp_path / "cli")]) == 0
    assert capsys.readouterr().out.split() == [str(tmp_path / "cli" / f"{n}.png") for n in SAMPLES]
    assert G.main(["--out", str(blocker)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "is a file, not a folder" in err and "Traceback" not in err
    assert_both_outcomes()


def test_fuzz_zfnet_dropout():
    """ZFNet(dropout=p) takes a probability in [0, 1] and refuses anything else before building."""
    refused = r"dropout must be a (finite )?number"
    for value in ("a", None, True, np.True_, math.nan, math.inf, -0.1, 1.5, [0.5], torch.tensor([0.5])):
        run_case(zoo.ZFNet, {"num_classes": Arg(3), "dropout": Arg(value, False, refused, label=repr(value))},
                 lambda *a: None, kinds=(TypeError, ValueError), what="ZFNet")
    net = zoo.ZFNet(num_classes=3, dropout=np.float32(0.25))
    assert net.classifier.drop6.p == net.classifier.drop7.p == 0.25 and type(net.classifier.drop6.p) is float
    OUTCOMES.append("returned")
    assert_both_outcomes()


# ---------------------------------------------------------------------------- regression tests
def _squeezenet_file(path: Path, change: Callable[[dict], dict]) -> Path:
    torch.save(change(dict(base_state("squeezenet1_1"))), path)
    return path


def test_cached_weights_path_refuses_a_name_and_says_how_to_get_the_member():
    with pytest.raises(TypeError, match=r"weights must be a torchvision WeightsEnum member .*got str "
                                        r"'IMAGENET1K_V1'; for a name, pass resolve_weights\(arch, name\)"):
        P.cached_weights_path("IMAGENET1K_V1")  # was: AttributeError: 'str' object has no attribute 'url'


def test_verified_record_path_takes_a_str():
    # was: AttributeError: 'str' object has no attribute 'with_name'
    assert P.verified_record_path("cache/net-0123abcd.pth") == Path("cache/.net-0123abcd.pth.verified.json")
    with pytest.raises(TypeError, match="path must be a file path"):
        P.verified_record_path(3)


def test_keys_that_are_no_str_are_refused_naming_the_key(offline, tmp_path):
    path = _squeezenet_file(tmp_path / "int-keys.pth", lambda s: {i: v for i, v in enumerate(s.values())})
    # was: AttributeError: 'int' object has no attribute 'startswith'
    with pytest.raises(ValueError, match=r"int-keys\.pth is not a state_dict: its key 0 is an int, not a str"):
        load_torchvision("squeezenet1_1", weights_path=path)
    (tmp_path / "classes.json").write_text('{"0": "a"}', encoding="utf-8")
    torch.save({("conv", 1): torch.zeros(1)}, tmp_path / "tinyvgg_state_dict.pth")
    with pytest.raises(ValueError, match=r"its key \('conv', 1\) is a tuple, not a str"):
        load_tinyvgg(tmp_path)


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.complex64])
def test_tensors_without_float_values_are_refused_not_cast(offline, tmp_path, dtype):
    path = _squeezenet_file(tmp_path / "ints.pth", lambda s: {k: v.to(dtype) if v.is_floating_point() else v
                                                          for k, v in s.items()})
    # was: loaded, every weight cast to float32 (ints and bools silently, complex numbers losing their
    # imaginary part with only a warning)
    with pytest.raises(RuntimeError, match=rf"'features\.0\.weight' is {re.escape(str(dtype))} in the file, but the "
                                           r"model's tensor is torch\.float32: floating-point values are needed"):
        load_torchvision("squeezenet1_1", weights_path=path)


@pytest.mark.filterwarnings("ignore:Validating sparse tensor invariants")  # torch.load's note on sparse tensors
@pytest.mark.parametrize("kind", ["sparse", "meta"])
def test_sparse_and_meta_tensors_are_refused_in_one_sentence(offline, tmp_path, kind):
    def change(state):
        w = state["features.0.weight"]
        state["features.0.weight"] = w.to_sparse() if kind == "sparse" else torch.empty_like(w, device="meta")
        return state

    path = _squeezenet_file(tmp_path / f"{kind}.pth", change)
    with pytest.raises(RuntimeError) as info:
        load_torchvision("squeezenet1_1", weights_path=path)
    # was: torch's report of every copy that failed, a page long ("While copying the parameter named ...")
    message = str(info.value)
    assert f"'features.0.weight' is a {kind} tensor" in message and "While copying" not in message
    assert len(message) < 400


def test_an_entry_that_is_no_tensor_is_named(offline, tmp_path):
    path = _squeezenet_file(tmp_path / "epoch.pth", lambda s: {**s, "epoch": 3})
    # was: "... it is a dict with the keys 'features.0.weight', ..., and none of its entries is a state_dict"
    with pytest.raises(ValueError, match=r"its entry 'epoch' is an int, not a tensor\. A state_dict holds tensors only"):
        load_torchvision("squeezenet1_1", weights_path=path)
    torch.save({"state_dict": {"features.0.weight": torch.zeros(1), "note": "b"}}, path)
    # was: "... does not hold a state_dict (a dict of tensors) but a dict"
    with pytest.raises(ValueError, match=r"the entry 'state_dict' of the checkpoint in .*epoch\.pth is not a state_dict "
                                         r"\(a dict of tensors\): its entry 'note' is a str, not a tensor"):
        load_torchvision("squeezenet1_1", weights_path=path)


def test_a_folder_as_weights_path_is_said_to_be_a_folder(offline, tmp_path):
    torch.save(base_state("squeezenet1_1"), tmp_path / "squeezenet.pth")
    # was: FileNotFoundError: weights file not found: '<the folder>'
    with pytest.raises(IsADirectoryError, match=r"is a folder, not a file \(it holds squeezenet\.pth\): pass the path"):
        load_torchvision("squeezenet1_1", weights_path=tmp_path)


def test_an_empty_weights_path_is_refused(offline):
    with pytest.raises(ValueError, match="weights_path is an empty string"):  # was: weights file not found: '.'
        load_torchvision("squeezenet1_1", weights_path="")


def test_a_folder_in_the_hub_cache_is_said_to_be_a_folder(offline, monkeypatch):
    member = torchvision.models.SqueezeNet1_1_Weights.IMAGENET1K_V1
    P.cached_weights_path(member).mkdir(parents=True)
    # was: WeightsUnavailableError "... was not found at <the folder>"
    with pytest.raises(IsADirectoryError, match=r"squeezenet1_1-b8a52dc0\.pth, where the cached file of "
                                                r"SqueezeNet1_1_Weights\.IMAGENET1K_V1 belongs, is a folder"):
        load_torchvision("squeezenet1_1")
    downloads = OfflineDownload()
    monkeypatch.setattr(torch.hub, "download_url_to_file", downloads)
    with pytest.raises(IsADirectoryError, match="is a folder, not a file"):  # was: [Errno 21] Is a directory (hashing it)
        load_torchvision("squeezenet1_1", download=True)
    assert downloads.calls == []


def test_weights_of_the_wrong_kind_say_what_is_accepted(offline):
    # was: "weights must be a string or a ResNet18_Weights member, got bool" (None, which is accepted, unsaid)
    with pytest.raises(TypeError, match=r"or None \(untrained\), got bool False; for an untrained model pass "
                                        r"weights=None"):
        load_torchvision("resnet18", weights=False)
    url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    # was: "... are not weights for resnet18; it takes ResNet18_Weights members" (which ones unsaid)
    with pytest.raises(ValueError, match=r"a URL is no weights name: download the file and pass its path as "
                                         r"weights_path.*available: DEFAULT, IMAGENET1K_V1"):
        resolve_weights("resnet18", url)
    with pytest.raises(ValueError, match=r"another architecture; resnet18 takes ResNet18_Weights members, available: "
                                         r"DEFAULT, IMAGENET1K_V1"):
        resolve_weights("resnet18", torchvision.models.AlexNet_Weights.IMAGENET1K_V1)


def test_the_unavailable_error_says_how_torch_chose_its_cache(offline, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TORCH_HOME", "")
    # was: "TORCH_HOME is not set, so the default cache is used", and torch looked in ./hub
    with pytest.raises(WeightsUnavailableError, match="TORCH_HOME is set but empty, so torch looks in hub/ under the "
                                                      "current working folder"):
        load_torchvision("squeezenet1_1")
    monkeypatch.delenv("TORCH_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    with pytest.raises(WeightsUnavailableError, match=r"so \$XDG_CACHE_HOME/torch is used") as info:
        load_torchvision("squeezenet1_1")
    assert info.value.cache_dir == tmp_path / "xdg" / "torch" / "hub" / "checkpoints"


def test_resolve_url_refuses_values_that_are_no_str():
    # was: TypeError: argument of type 'int' is not iterable
    with pytest.raises(TypeError, match=r"spec must be a torchvision weights name or a URL \(a str\), got int 3"):
        F.resolve_url(3)
    with pytest.raises(TypeError, match=r"pass its name, 'ResNet18_Weights\.IMAGENET1K_V1'"):
        F.resolve_url(torchvision.models.ResNet18_Weights.IMAGENET1K_V1)


def test_a_model_name_before_the_dot_is_an_unknown_name_with_the_one_meant(offline, capsys):
    # was: TypeError: issubclass() arg 1 must be a class (from torchvision), and a traceback from the CLI
    with pytest.raises(ValueError, match=r"unknown weights 'resnet18\.IMAGENET1K_V1'; .*did you mean "
                                         r"'ResNet18_Weights\.IMAGENET1K_V1'\?"):
        F.resolve_url("resnet18.IMAGENET1K_V1")
    assert F.main(["squeezenet1_1.DEFAULT", "--quiet"]) == 1
    assert "did you mean 'SqueezeNet1_1_Weights.DEFAULT'?" in capsys.readouterr().err


def test_sample_names_of_other_types_and_near_misses():
    # was: TypeError: unhashable type: 'list'
    with pytest.raises(TypeError, match=r"name must be a sample's name \(a str such as 'star'\), got list"):
        G.sample_image(["star"])
    # was: KeyError "no sample named b'star'; ..." and "no sample named 'Star'; available: ..." without the one meant
    with pytest.raises(TypeError, match="got bytes"):
        G.render_sample(b"star")
    with pytest.raises(KeyError, match=r"no sample named 'Star' \(did you mean 'star'\?\); available: circle"):
        G.sample_image("Star")


def test_write_samples_refuses_a_file_and_values_that_are_no_path(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(NotADirectoryError, match="a-file is a file, not a folder"):  # was: FileExistsError from mkdir
        G.write_samples(blocker)
    with pytest.raises(TypeError, match=r"folder must be a folder path .*got NoneType"):  # was: pathlib's TypeError
        G.write_samples(None)
    assert G.main(["--out", str(blocker)]) == 1  # was: a traceback
    assert capsys.readouterr().err.startswith("error: ")


def test_center_crop_refuses_a_square_larger_than_the_image():
    t = torch.rand(3, 10, 12)
    # was: a 5 x 7 piece of the bottom-right corner, returned as if it were the 20 x 20 centre
    with pytest.raises(ValueError, match=r"cannot crop a 20x20 square from an image of 10x12 px"):
        B.center_crop(t, 20)
    with pytest.raises(ValueError, match=r"side must be an int >= 1, got 0"):  # was: an empty (3, 0, 0) tensor
        B.center_crop(t, 0)


def test_resize_shorter_refuses_empty_images_and_sides_below_one():
    with pytest.raises(ValueError, match=r"cannot resize an empty image of shape \(3, 0, 10\)"):
        B.resize_shorter(torch.rand(3, 0, 10), 4)  # was: ZeroDivisionError
    with pytest.raises(ValueError, match=r"side must be an int >= 1, got 0"):
        B.resize_shorter(torch.rand(3, 10, 10), 0)  # was: torch's "Input and output sizes should be greater than 0"


def test_normalisation_refuses_sets_and_dicts():
    # was: accepted, a set in its own order ((0.2, 0.4, 0.3) for {0.2, 0.3, 0.4}), a dict's keys as the values
    with pytest.raises(TypeError, match=r"std must be three numbers, one per RGB channel, in RGB order .*got a set"):
        ImagePreprocess(8, (0.5, 0.5, 0.5), {0.2, 0.3, 0.4})
    with pytest.raises(TypeError, match=r"mean must be .* in RGB order .*got a dict"):
        B.check_normalisation({0: 0.5, 1: 0.5, 2: 0.5}, (1, 1, 1))


def test_normalisation_that_overflows_float32_is_refused():
    # was: accepted; 1e-300 is 0 in float32, so every preprocessed value was infinite or NaN
    with pytest.raises(ValueError, match=r"mean\[0\]=0\.5 and std\[0\]=1e-300 give values too large for float32"):
        ImagePreprocess(8, (0.5, 0.5, 0.5), (1e-300, 1, 1))
    with pytest.raises(ValueError, match=r"too large for float32"):
        Denormalize((1e300, 0, 0), (1, 1, 1))


def test_bundle_checks_its_model_preprocess_and_normalisation():
    net = small_classifier()
    # was: made, failing later with AttributeError ('NoneType' object has no attribute 'parameters') in repr
    with pytest.raises(TypeError, match="model must be a torch.nn.Module, got NoneType"):
        Bundle(None, ["a"], ImagePreprocess(8), (3, 8, 8), "n", "w")
    with pytest.raises(TypeError, match="it looks like a state_dict"):
        Bundle(net.state_dict(), ["a"], ImagePreprocess(8), (3, 8, 8), "n", "w")
    with pytest.raises(TypeError, match=r"preprocess must be a callable"):
        Bundle(net, ["a"], None, (3, 8, 8), "n", "w")
    with pytest.raises(ValueError, match="give both mean and std"):  # was: unchecked when denormalize is given
        Bundle(net, ["a"], ImagePreprocess(8), (3, 8, 8), "n", "w", mean=(0.5, 0.5, 0.5), denormalize=lambda x: x)
    assert Bundle(net, ["a"], ImagePreprocess(8), (3, 8, 8), "n", "w", np.array([0.5] * 3), [1, 1, 1]).mean == (0.5,) * 3
    # was: made, failing later (a str taken for one class name per letter, a size that fails in the explorer)
    with pytest.raises(TypeError, match=r"classes must be the class names in class order.*got str 'cat'"):
        Bundle(net, "cat", ImagePreprocess(8), (3, 8, 8), "n", "w")
    with pytest.raises(ValueError, match=r"input_size must be \(C, H, W\).*got \(8, 8\)"):
        Bundle(net, ["a"], ImagePreprocess(8), (8, 8), "n", "w")
    with pytest.raises(TypeError, match="weights must be a str, got NoneType"):
        Bundle(net, ["a"], ImagePreprocess(8), (3, 8, 8), "n", None)


def test_load_tinyvgg_refuses_values_that_are_no_path():
    # was: pathlib's "expected str, bytes or os.PathLike object, not NoneType"
    with pytest.raises(TypeError, match=r"path_or_dir must be a folder or file path \(str or pathlib\.Path\), got NoneType"):
        load_tinyvgg(None)
    with pytest.raises(ValueError, match="path_or_dir is an empty string"):  # was: looked in the working folder
        load_tinyvgg("")


def test_zfnet_checks_dropout():
    with pytest.raises(TypeError, match="dropout must be a number, got str"):  # was: torch's "'<' not supported ..."
        zoo.ZFNet(dropout="0.5")
    with pytest.raises(ValueError, match=r"dropout must be a finite number in \[0, 1\], got nan"):  # was: accepted
        zoo.ZFNet(dropout=math.nan)
    with pytest.raises(TypeError, match="got bool True"):  # was: accepted as p = 1, every unit dropped in training
        zoo.ZFNet(dropout=True)


def test_a_googlenet_saved_after_torchvision_dropped_its_auxiliary_heads_loads(offline, tmp_path):
    # torchvision's googlenet(weights=...) drops aux1 and aux2 after loading, so the state_dict of such a
    # model (fine-tuned, say) lacks their keys
    model = torchvision.models.googlenet(weights=None, aux_logits=True, transform_input=True, init_weights=False)
    model.aux_logits, model.aux1, model.aux2 = False, None, None
    state = {k: v + 0.5 if v.is_floating_point() else v for k, v in model.state_dict().items()}
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "googlenet.pth")
    # was: RuntimeError "20 missing, 0 unexpected keys (e.g. missing 'aux1.conv.conv.weight', ...)"
    bundle = load_torchvision("googlenet", weights_path=tmp_path / "googlenet.pth", transform_input=True)
    assert_holds(bundle.model, state, "googlenet without its auxiliary heads")
    assert bundle.model.aux1 is None and bundle.model.transform_input


def test_a_googlenet_trained_without_transform_input_loads_as_it_was_built(offline, tmp_path):
    # was: every googlenet file got transform_input=True, as torchvision's weights need; a model trained from
    # torchvision's builder without weights (transform_input=False) then gave other scores, with no error
    torch.manual_seed(0)
    mine = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=False).eval()
    assert not mine.transform_input
    torch.save(mine.state_dict(), tmp_path / "my_googlenet.pth")
    x = torch.randn(1, 3, 64, 64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bundle = load_torchvision("googlenet", weights_path=tmp_path / "my_googlenet.pth", transform_input=False)
    assert not bundle.model.transform_input
    with torch.no_grad():
        torch.testing.assert_close(bundle.model(x), mine(x))
    # left out, the file's origin is unknown: the default is said, and what to pass
    with pytest.warns(UserWarning, match=r"my_googlenet\.pth is not torchvision's file .*assuming True.*"
                                         r"transform_input=False"):
        assumed = load_torchvision("googlenet", weights_path=tmp_path / "my_googlenet.pth")
    assert assumed.model.transform_input
    with torch.no_grad():
        assert not torch.allclose(assumed.model(x), mine(x))
    with pytest.raises(ValueError, match="transform_input is an option of googlenet and inception_v3 only"):
        load_torchvision("resnet18", weights=None, transform_input=False)
    with pytest.raises(TypeError, match="transform_input"):
        load_torchvision("googlenet", weights=None, transform_input="no")
    assert not load_torchvision("googlenet", weights=None, transform_input=False).model.transform_input


def test_a_folder_where_fetch_would_save_the_file_is_reported(offline, capsys):
    target = offline / "hub" / "checkpoints" / "squeezenet1_1-b8a52dc0.pth"
    target.mkdir(parents=True)
    # was: IsADirectoryError "[Errno 21] Is a directory" from hashing it, and the command line's advice to
    # set TORCH_HOME to a folder one can write to
    with pytest.raises(F.FetchError, match=r"squeezenet1_1-b8a52dc0\.pth is a folder, so squeezenet1_1-b8a52dc0\.pth "
                                           r"cannot be saved there"):
        F.fetch_weights("SqueezeNet1_1_Weights.DEFAULT", progress=False)
    assert F.main(["SqueezeNet1_1_Weights.DEFAULT", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "move that folder out of the way" in err and "TORCH_HOME" not in err


def test_fetch_checks_every_name_before_downloading(offline, monkeypatch):
    downloads = OfflineDownload()
    monkeypatch.setattr(torch.hub, "download_url_to_file", downloads)
    # was: the first file downloaded (or tried), and only then the typo in the second name refused
    with pytest.raises(ValueError, match=r"unknown weights 'resnet18\.DEFAULT'"):
        F.fetch_weights(["SqueezeNet1_1_Weights.DEFAULT", "resnet18.DEFAULT"], progress=False)
    assert downloads.calls == [] and not (offline / "hub").exists()


def test_an_architecture_name_in_other_case_suggests_the_name_meant():
    # was: "'RESNET18' is not a torchvision classification model (see ...)", no name suggested
    with pytest.raises(ValueError, match=r"'RESNET18' is not a torchvision classification model; did you mean resnet18\?"):
        resolve_weights("RESNET18")
    with pytest.raises(ValueError, match=r"did you mean mobilenet_v3_small\?"):
        load_torchvision("MobileNet_V3_Small\t")
