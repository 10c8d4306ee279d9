"""A seeded fuzz test of the public Python API of the hook manager (:class:`Probe` and the module
functions of :mod:`cnnwidgets.core.probe`) and of the targets (:mod:`cnnwidgets.core.targets`), with
the invalid and edge-case values a notebook user types.

What it drives:

* ``Probe(model, **options)`` on the models a user passes (a small ``nn.Sequential`` classifier; a
  network with batch norm, dropout and in-place ReLUs left in training mode; one that returns a dict
  and carries a forward hook of the user's; one that returns a tuple; an ``nn.Sequential`` without a
  convolution), every option drawn from pools: devices that do not exist here (``'cuda'``, ``'mps'``,
  ``'cuda:7'``, ``'tpu'``, ``torch.device`` objects), bools, floats, NaN, None and strings where ints are
  asked, NumPy and 0-d tensor scalars, zero, negatives, ``2**63`` and ``2**64``, sizes as sets, tensors
  and arrays; and valid values in their other accepted spellings.
* On an open probe, a seeded random user calls ``capture``, ``logits``, ``capture_with_logits``,
  ``describe``, ``fit_input_size``, ``check_layer``, ``module``, ``channels_first``, ``to``, ``sync``,
  ``refresh``, ``clear_cache``, ``reset_stats`` and reads the properties, with batches of every kind
  (int, bool, complex, float64, half, bfloat16 and float8 tensors, NumPy arrays, lists, PIL images,
  non-contiguous, channels-last and expanded tensors, empty batches, NaN and inf pixels, tensors that
  require grad or were made in inference mode, sparse and meta tensors, (N, H, W, C) batches, wrong
  channels and sizes), layer names of every kind (other case, typos, '', duplicates, non-str items,
  bytes, modules, iterators) and flags of every kind; between calls it changes the model as a user
  does (an optimizer-like step in place, a new ``Parameter``, ``train()`` / ``eval()``, ``requires_grad_``,
  a write through ``.data`` followed by ``refresh()``).
* The module functions ``check_input_size``, ``check_batch``, ``layer_names``, ``unwrap_model`` and
  :func:`~cnnwidgets.core.device.resolve_device`.
* The targets (``ClassLogit``, ``ClassProbability``, ``ClassLogits``, ``ChannelActivation``,
  ``TopClassProbability``) built from pools of arguments, ``resolve_target`` on ints, names, arrays,
  tensors, lists, callables and objects, the targets called on outputs of odd shapes and dtypes, and
  ``target_score`` with a probe.

The oracle:

* a refused value raises a ``TypeError`` or ``ValueError`` (or the documented error: ``KeyError`` for a
  layer name that is not a layer, ``RuntimeError`` for a model that fails on the input or a closed probe,
  ``IndexError`` for a class or channel index out of range) whose message matches what the pool says
  about that value: it names what was wrong and what is accepted. Never a bare ``AttributeError``,
  ``OverflowError`` or ``NotImplementedError``, nor a message from inside torch;
* an accepted call gives what an independent oracle gives: the user's model run on a deep copy (its own
  hooks taken off, as the probe documents) in ``eval()`` under ``no_grad`` with plain forward hooks on
  the layers (``tests.helpers.reference_outputs``), on the batch in float32; targets equal their
  documented formulas computed here from the tensors;
* no call, accepted or refused, changes the user's model: the same hooks, parameters, buffers,
  ``requires_grad`` and training flags (``UserModelSnapshot``); nor the batch it was given.

The small tests after the fuzz pin down what it found.
"""

from __future__ import annotations

import copy
import math
import random
import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from cnnwidgets.core.device import resolve_device
from cnnwidgets.core.probe import (
    Probe, check_batch, check_input_size, class_count, layer_names, trained_input_size, unwrap_model,
)
from cnnwidgets.core.targets import (
    ChannelActivation, ClassLogit, ClassLogits, ClassProbability, OutputScore, resolve_target, target_score,
)
from cnnwidgets.methods import TopClassProbability
from tests.helpers import UserModelSnapshot, classified_call, hook_dicts, reference_outputs, small_classifier


# The models here are tiny: one intra-op thread runs them fastest, also on a machine shared with other jobs.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---------------------------------------------------------------- what a refusal must look like
@dataclass(frozen=True)
class Refusal:
    """How a value must be refused: an error of one of ``errors`` whose message matches ``pattern``."""

    errors: tuple[type[BaseException], ...]
    pattern: str


def refused(pattern: str, *errors: type[BaseException]) -> Refusal:
    return Refusal(errors or (TypeError, ValueError), pattern)


@dataclass(frozen=True)
class V:
    """A value from a pool: valid (``refusal`` None) or invalid, with a name for the failure messages."""

    value: Any
    refusal: Refusal | None = None
    name: str = ""
    plain: Any = None  # what a valid value reads as (its names, its size), where the value cannot tell it again

    @property
    def valid(self) -> bool:
        return self.refusal is None

    def __repr__(self) -> str:
        return self.name or _short(self.value)


def _short(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"tensor{tuple(value.shape)}:{value.dtype}"
    if isinstance(value, np.ndarray):
        return f"array{value.shape}:{value.dtype}"
    return repr(value)[:60]


#: Errors no refusal may be: they come from code that did not look at what it was given.
BARE = (AttributeError, OverflowError, NotImplementedError, ZeroDivisionError, AssertionError, StopIteration)
#: What only torch's own internals print.
TORCH_INTERNALS = re.compile(r"Exception raised from|THPUtils|unpack(ing)? long|_C\.|c10::")
#: The only messages a KeyError may carry: the probe's words on layer names.
LAYER_KEY_ERROR = re.compile(r"unknown layer|layer '' is the whole model|is the same module as")


def error_checker(refusals: list[Refusal], what: str) -> Callable[[BaseException], None]:
    """``check_error`` for :func:`classified_call`: the error is one of those ``refusals`` allow."""

    def check(exc: BaseException) -> None:
        message = str(exc)
        assert not isinstance(exc, BARE), f"{what}: a bare {type(exc).__name__}: {message}"
        assert not TORCH_INTERNALS.search(message), f"{what}: torch's internals in the message: {message}"
        if isinstance(exc, KeyError):
            assert LAYER_KEY_ERROR.search(message), f"{what}: a KeyError that is not about a layer name: {message}"
        matched = [r for r in refusals if isinstance(exc, r.errors) and re.search(r.pattern, message)]
        assert matched, (
            f"{what}: {type(exc).__name__}: {message!r} is not one of the refusals expected: "
            f"{[(tuple(e.__name__ for e in r.errors), r.pattern) for r in refusals]}"
        )

    return check


def fuzz_call(call: Callable[..., Any], parts: dict[str, V], check: Callable[[Any], None], what: str,
              outcomes: list[str], extra: list[Refusal] = ()) -> Any:
    """``call(**values)`` judged by :func:`classified_call`: refused exactly when a part (or ``extra``, a
    refusal the situation calls for) is invalid, with an error one of them allows; else ``check(result)``."""
    refusals = [part.refusal for part in parts.values() if part.refusal is not None] + list(extra)
    values = {name: part.value for name, part in parts.items()}
    return classified_call(call, values, refused_ok=bool(refusals), must_refuse=bool(refusals),
                           check=lambda result, _values: check(result), check_error=error_checker(refusals, what),
                           what=what, outcomes=outcomes)


def draw(rng: random.Random, pools: dict[str, list[V]], invalid: float = 0.55) -> dict[str, V]:
    """One value from each pool: all of them valid, or (with probability ``invalid``) one of them invalid,
    so that a refusal can be told apart from the others' and most calls reach the oracle."""
    bad = rng.choice(list(pools)) if pools and rng.random() < invalid else None
    return {name: rng.choice([v for v in pool if v.valid == (name != bad)] or pool) for name, pool in pools.items()}


def optional(rng: random.Random, pools: dict[str, list[V]], chance: float = 0.4) -> dict[str, list[V]]:
    """The pools of the options a user passes this time (each with probability ``chance``)."""
    return {name: pool for name, pool in pools.items() if rng.random() < chance}


# ---------------------------------------------------------------- the models a user passes
class DictOut(nn.Module):
    """Returns ``{"logits": ..., "features": ...}``; its stem has no padding (a 1 x 1 input is too small)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3)
        self.act = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, 4)

    def forward(self, x):
        features = self.act(self.stem(x))
        return {"logits": self.fc(self.pool(features).flatten(1)), "features": features}


class TupleOut(DictOut):
    """Returns ``(logits, features)``: a plain tuple, which the probe refuses to guess at."""

    def forward(self, x):
        out = super().forward(x)
        return out["logits"], out["features"]


def training_net() -> nn.Sequential:
    """Batch norm, dropout and in-place ReLUs, left in training mode (``model.eval()`` forgotten)."""
    torch.manual_seed(3)
    features = nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(3, 6, 3, padding=1), bn1=nn.BatchNorm2d(6), relu1=nn.ReLU(inplace=True), drop=nn.Dropout(0.5),
        pool=nn.MaxPool2d(2), conv2=nn.Conv2d(6, 8, 3, padding=1), relu2=nn.ReLU(inplace=True),
    ))
    head = nn.Sequential(OrderedDict(gap=nn.AdaptiveAvgPool2d(1), flat=nn.Flatten(), fc=nn.Linear(8, 4)))
    model = nn.Sequential(OrderedDict(features=features, head=head))
    with torch.no_grad():  # running statistics that differ from the batch's
        model.features.bn1.running_mean.uniform_(-0.5, 0.5)
        model.features.bn1.running_var.uniform_(0.5, 2.0)
    return model.train()


#: How ``Probe.user_hooks`` names the hook above.
USER_HOOK = ("forward hook _scale_output on 'stem' (Conv2d)",)


def _scale_output(module, args, output):
    """A user's forward hook that changes what the module returns (the probe documents it does not run it)."""
    return output * 3.0


@dataclass
class Subject:
    """A model as a user passes it, with what a user may give it."""

    name: str
    model: nn.Module
    size: tuple[int, int, int]  # (C, H, W) it runs on
    any_size: bool  # whether it runs on other heights and widths
    has_conv: bool
    output: str  # "tensor", "dict" or "tuple"
    layers: list[str] = field(default_factory=list)  # every layer, all of which run

    def __post_init__(self) -> None:
        self.layers = [name for name, _ in self.model.named_modules() if name]


def subject(name: str) -> Subject:
    if name == "sequential":
        return Subject(name, small_classifier(), (3, 16, 16), True, True, "tensor")
    if name == "training":
        return Subject(name, training_net(), (3, 12, 12), True, True, "tensor")
    if name == "dict-with-hook":
        torch.manual_seed(4)
        model = DictOut().eval()
        model.stem.register_forward_hook(_scale_output)
        return Subject(name, model, (3, 10, 10), True, True, "dict")
    if name == "tuple":
        torch.manual_seed(5)
        return Subject(name, TupleOut().eval(), (3, 10, 10), True, True, "tuple")
    if name == "no-conv":
        torch.manual_seed(6)
        model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 6 * 6, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
        return Subject(name, model, (3, 6, 6), False, False, "tensor")
    raise ValueError(name)


SUBJECTS = ("sequential", "training", "dict-with-hook", "tuple", "no-conv")


# ---------------------------------------------------------------- the oracle
def oracle(model: nn.Module, x: torch.Tensor, names: list[str]) -> tuple[dict[str, torch.Tensor], Any]:
    """The outputs of ``names`` and the model's output for the batch ``x`` (in float32), computed without the
    probe: on a deep copy of the user's model with the user's own forward hooks taken off (the probe
    documents that it does not run them), in eval mode under no_grad, with plain forward hooks
    (:func:`tests.helpers.reference_outputs`)."""
    plain = copy.deepcopy(model)
    for module in plain.modules():
        module._forward_hooks.clear()
        module._forward_pre_hooks.clear()
    x = x.detach().to(torch.float32)
    layers = reference_outputs(plain, x, names) if names else {}
    plain.eval()
    with torch.no_grad():
        return layers, plain(x)


def oracle_logits(subject_: Subject, output: Any) -> torch.Tensor:
    return output["logits"] if subject_.output == "dict" else output


def assert_close(got: torch.Tensor, want: torch.Tensor, what: str) -> None:
    assert isinstance(got, torch.Tensor), f"{what}: got {type(got).__name__}"
    assert got.dtype == torch.float32, f"{what}: dtype {got.dtype}"
    assert got.shape == want.shape, f"{what}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    # float32 sums taken in another order (channels-last convolutions) differ in proportion to the values' scale
    scale = float(want.detach().abs().nan_to_num(0).max()) if want.numel() else 1.0
    close = torch.allclose(got.detach(), want.to(torch.float32), rtol=1e-4, atol=1e-5 * max(1.0, scale), equal_nan=True)
    assert close, (f"{what}: max abs diff {(got.detach() - want).abs().max().item():.3g} at scale {scale:.3g}")


def near_miss(name: str) -> str:
    """``name`` as a user mistypes it: its first letter in the other case, or a digit more."""
    other = name[:1].swapcase() + name[1:]
    return other if other != name else name + "9"


# ---------------------------------------------------------------- pools
BATCH_TYPE = refused(r"expected a preprocessed torch\.Tensor of shape \(N, C, H, W\), got \w+")
NOT_FLOAT = refused(r"expected a float tensor, got dtype torch\.\w+")
MODEL_FAILED = refused(r"the model failed on an input of (size|shape)", RuntimeError)


def batches(rng: random.Random, s: Subject) -> list[V]:
    """Batches for subject ``s``: valid ones in every accepted kind, and invalid ones with their refusal."""
    c, h, w = s.size
    n = rng.choice([1, 1, 2, 3])
    gen = torch.Generator().manual_seed(rng.randrange(2**31))

    def rand(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return torch.rand(*shape, generator=gen).to(dtype)

    with torch.inference_mode():
        made_in_inference = rand(n, c, h, w)
    nan_pixel = rand(n, c, h, w)
    nan_pixel[-1, 0, h // 2, w // 2] = rng.choice([math.nan, math.inf, -math.inf])
    beyond_float32 = rand(n, c, h, w, dtype=torch.float64)
    beyond_float32[0, -1, 0, 0] = rng.choice([1e300, -1e39])
    other = (c, h + 4, w + 2)
    pool = [
        V(rand(n, c, h, w), name="float32"), V(rand(n, c, h, w, dtype=torch.float64), name="float64"),
        V(rand(n, c, h, w, dtype=torch.float16), name="half"), V(rand(n, c, h, w, dtype=torch.bfloat16), name="bfloat16"),
        V(rand(n, c, h, w).contiguous(memory_format=torch.channels_last), name="channels_last"),
        V(rand(n, c, h * 2, w)[:, :, ::2], name="non-contiguous"),
        V(rand(1, c, 1, 1).expand(n, c, h, w), name="expanded"),
        V(rand(n, c, h, w).requires_grad_(), name="requires_grad"),
        V(nn.Parameter(rand(n, c, h, w)), name="a Parameter"),
        V(made_in_inference, name="made in inference mode"),
        V(rand(n, c, h, w) * 1e3 - 500, name="large values"),
        V(rand(n, c, *other[1:]), None if s.any_size else MODEL_FAILED, name=f"size {other}"),
        V(torch.randint(0, 255, (n, c, h, w), generator=gen), NOT_FLOAT, name="int64"),
        V(rand(n, c, h, w) > 0.5, NOT_FLOAT, name="bool"),
        V(rand(n, c, h, w, dtype=torch.complex64), NOT_FLOAT, name="complex"),
        V(rand(n, c, h, w).to(torch.float8_e4m3fn), refused(r"expected a float16, bfloat16, float32 or float64 tensor, "
                                                            r"got dtype torch\.float8_e4m3fn"), name="float8"),
        V(rand(n, c, h, w).to_sparse(), refused(r"expected a dense tensor, got one with layout torch\.sparse_coo"),
          name="sparse"),
        V(rand(n, c, h, w).numpy(), BATCH_TYPE, name="numpy"), V(rand(n, c, h, w).tolist(), BATCH_TYPE, name="list"),
        V(Image.new("RGB", (w, h)), BATCH_TYPE, name="PIL image"), V(None, BATCH_TYPE, name="None"),
        V(rand(c, h, w), refused(r"expected a batch of shape \(N, C, H, W\), got .*add a batch dimension"), name="3-D"),
        V(rand(1, n, c, h, w), refused(r"expected a batch of shape \(N, C, H, W\), got \(1,"), name="5-D"),
        V(torch.tensor(0.5), refused(r"expected a batch of shape \(N, C, H, W\), got \(\)"), name="0-d"),
        V(rand(0, c, h, w), refused("the batch is empty"), name="empty batch"),
        V(rand(n, c, h, 0), refused(r"the batch has no pixels: its shape is"), name="no width"),
        V(nan_pixel, refused(r"the batch holds 1 value that is not finite \(NaN or inf\), in image \d+"), name="NaN/inf"),
        V(beyond_float32, refused(r"the batch holds values from .* beyond float32's range"), name="1e300 in float64"),
        V(torch.empty(n, c, h, w, device="meta"), refused("meta device"), name="meta"),
        V(rand(n, c + 1, h, w), MODEL_FAILED, name="wrong channels"),
        V(rand(n, c, 1, 1), MODEL_FAILED, name="1x1"),
    ]
    if s.has_conv:
        pool.append(V(rand(n, h, w, c), refused(r"x looks like \(N, H, W, C\).*x\.permute\(0, 3, 1, 2\)"), name="NHWC"))
    return pool


NAME_TYPE = refused(r"layer names are strings, got \w+", TypeError)
#: The on/off options of capture.
FLAGS = ("grad", "cache", "channels_first", "contiguous")


def layer_lists(rng: random.Random, s: Subject) -> list[V]:
    """Layers arguments: valid names in every accepted spelling, and invalid ones."""
    a, b = rng.sample(s.layers, 2) if len(s.layers) > 1 else (s.layers[0], s.layers[0])
    typo = a[:-1] + ("x" if a[-1] != "x" else "y")
    suggested = re.escape(a) if any(ch.isalpha() for ch in a) else ""
    pair = list(dict.fromkeys([a, b]))
    return [
        V(a, plain=[a]), V(np.str_(a), name=f"np.str_({a!r})", plain=[a]), V([a, b], plain=pair),
        V((b, a), plain=list(dict.fromkeys([b, a]))), V([a, a], plain=[a]), V(iter([a, b]), name="iterator", plain=pair),
        V(dict.fromkeys([b, a]), name="dict", plain=list(dict.fromkeys([b, a]))),
        V(np.array([a, b]), name="array of names", plain=pair),
        V(None, NAME_TYPE), V(3, NAME_TYPE), V(2.5, NAME_TYPE), V([a, 3], NAME_TYPE), V([a, None], NAME_TYPE),
        V(a.encode(), refused(r"layer names are strings, got bytes b'.*'; decode it", TypeError)),
        V([a.encode()], refused(r"layer names are strings, got bytes", TypeError)),
        V(torch.tensor([1]), NAME_TYPE), V(s.model, refused("name the layer instead", TypeError), name="the model"),
        V(nn.ReLU(), refused("name the layer instead", TypeError), name="a module"),
        V([], refused(r"needs at least one layer name", ValueError)),
        V("", refused(r"layer '' is the whole model \(its output\), not one of its layers; pick a layer", KeyError)),
        V(near_miss(a), refused(rf"unknown layer .*{'Did you mean: .*' + suggested if suggested else ''}", KeyError)),
        V(typo, refused(r"unknown layer", KeyError)), V(a + " ", refused(rf"unknown layer .*Did you mean: '{re.escape(a)}'",
                                                                            KeyError)),
    ]


def flags(name: str, optional: bool = False) -> list[V]:
    """Values of an on/off option; ``optional`` ones take None too (the default)."""
    bad = refused(rf"{name} must be True or False", TypeError)
    return [V(True), V(False), V(np.True_), V(np.False_), *([V(None)] if optional else [V(None, bad)]),
            V(1, bad), V(0, bad), V("yes", bad), V(np.int64(1), bad), V(torch.tensor(True), bad), V(1.0, bad)]


def devices() -> list[V]:
    """Devices: the CPU in every spelling, and devices that do not exist here."""
    bad = refused(r"unknown device|available: |not supported|does not exist", ValueError)
    pool = [V("cpu"), V("CPU"), V(" cpu "), V("cpu:0"), V(torch.device("cpu")), V(np.str_("cpu")),
            V("tpu", bad), V("gpu", bad), V("", bad), V(None, bad), V("cpu:1", bad), V(torch.device("meta"), bad),
            V(2**64, bad), V(True, bad), V(1.5, bad), V(["cpu"], bad), V("cuda:-1", bad), V("xla", bad)]
    if not torch.cuda.is_available():
        pool += [V("cuda", bad), V("cuda:0", bad), V(torch.device("cuda"), bad), V(0, bad), V("CUDA:1", bad)]
    if torch.cuda.device_count() <= 7:
        pool.append(V("cuda:7", bad))
    if not torch.backends.mps.is_available():
        pool.append(V("mps", bad))
    if not (torch.cuda.is_available() or torch.backends.mps.is_available()):
        pool.append(V("auto"))
    return pool


SIZE = refused(r"input_size must be \(C, H, W\), three positive ints such as \(3, 224, 224\); got", ValueError)
TOO_LARGE = refused(r"input_size \(.*\) is too large: one float32 image of that size would take about 2\*\*\d+ bytes",
                    ValueError)


def sizes(s: Subject, *, model_checked: bool, none_ok: bool = False) -> list[V]:
    """Input sizes: ``s``'s own in every accepted spelling (and another it runs on), and invalid ones.
    ``model_checked``: whether the model runs on the size here (a size it fails on is then refused);
    ``none_ok``: whether None is a size (the default)."""
    c, h, w = s.size
    other = (c, h + 4, w + 2)
    pool = [
        V(value, plain=(c, h, w), name=_short(value) if not isinstance(value, tuple) else "")
        for value in [(c, h, w), [c, h, w], np.array([c, h, w]), torch.Size([c, h, w]), torch.tensor([c, h, w])]
    ] + [
        V((np.int64(c), torch.tensor(h), np.uint8(w)), name="numpy and 0-d tensor ints", plain=(c, h, w)),
        V(iter([c, h, w]), name="iterator", plain=(c, h, w)),
        V((c, h), SIZE), V((c, h, w, 1), SIZE), V((0, h, w), SIZE), V((c, -h, w), SIZE), V((True, h, w), SIZE),
        V((float(c), h, w), SIZE), V((c, math.nan, w), SIZE), V((c, math.inf, w), SIZE), V((c, h, torch.tensor(1.0)), SIZE),
        V((c, h, str(w)), SIZE), V(None, None if none_ok else SIZE), V("316", SIZE), V(16, SIZE),
        V({c, h, w + 1}, SIZE, name="a set"),
        V({c: 0, h: 1, w + 1: 2}, SIZE, name="a dict"), V(torch.zeros(1, c, h, w), SIZE, name="a batch"),
        V((c, 2**63, w), TOO_LARGE), V((c, 2**64, 2**64), TOO_LARGE), V((2**40, 2**40, 2**40), TOO_LARGE),
    ]
    if model_checked:
        pool += [V(other if s.any_size else s.size, name="another size it runs on", plain=other if s.any_size else s.size),
                 V((c + 1, h, w), MODEL_FAILED, name="wrong channels")]
    return pool


# ---------------------------------------------------------------- the fuzz: the constructor
def constructor_options(rng: random.Random, s: Subject) -> dict[str, V]:
    """Options for ``Probe(model, ...)``, each left out, valid or invalid."""
    count = refused(r"cache_size must be an int >= 1, got", TypeError, ValueError)
    budget = refused(r"cache_bytes must be an int >= 0, got", TypeError, ValueError)
    flag_type = refused(r"channels_last must be True or False, got .* \(or 'auto'\)", TypeError)
    flag_name = refused(r"channels_last must be True, False or 'auto', got", ValueError)
    pools = {
        "device": devices(),
        "channels_last": [V(True), V(False), V("auto"), V(np.True_), V(np.False_), V(1, flag_type), V(0, flag_type),
                          V(None, flag_type), V(torch.tensor(True), flag_type), V("AUTO", flag_name),
                          V("", flag_name), V("yes", flag_name)],
        "input_size": sizes(s, model_checked=False, none_ok=True),
        "cache_size": [V(1), V(2), V(np.int64(3)), V(torch.tensor(2)), V(2**63), V(np.uint64(2**64 - 1)), V(0, count),
                       V(-1, count), V(True, count), V(np.True_, count), V(2.0, count), V("8", count), V(None, count),
                       V(math.nan, count), V(torch.tensor(2.0), count), V(torch.tensor([2]), count)],
        "cache_bytes": [V(0), V(2**20), V(2**64), V(np.int64(10**6)), V(torch.tensor(0)), V(-1, budget),
                        V(True, budget), V(1e6, budget), V(math.inf, budget), V(None, budget), V("1", budget)],
    }
    options = draw(rng, optional(rng, pools, 0.45))
    if rng.random() < 0.05:
        options["cache"] = V(True, refused(r"unexpected keyword argument 'cache'", TypeError))
    return options


@pytest.mark.parametrize("name, seed, steps", [(n, 100 + i, 80) for i, n in enumerate(SUBJECTS)])
def test_probe_options_are_refused_clearly_or_give_the_oracles_activations(name, seed, steps):
    s = subject(name)
    rng = random.Random(seed)
    snapshot = UserModelSnapshot.take(s.model)
    outcomes: list[str] = []
    for step in range(steps):
        options = constructor_options(rng, s)
        what = f"{name} step {step}: Probe(model, {options})"
        probe = fuzz_call(lambda **kw: Probe(s.model, **kw), options, lambda p: None, what, outcomes)
        snapshot.assert_unchanged(s.model)
        if probe is None:
            continue
        try:
            given = options.get("channels_last")
            wanted = s.has_conv if given is None or given.value == "auto" else bool(given.value)
            assert probe.channels_last == wanted, what
            assert probe.device == torch.device("cpu") or probe.device == torch.device("cpu", 0), what
            if "input_size" in options and options["input_size"].value is not None:
                assert probe.input_size == s.size and all(type(v) is int for v in probe.input_size), what
            x = torch.rand(rng.choice([1, 2]), *s.size)
            layers = rng.sample(s.layers, min(2, len(s.layers)))
            want, output = oracle(s.model, x, layers)
            got = probe.capture(x, layers)
            assert list(got) == layers, what
            for layer in layers:
                assert_close(got[layer], want[layer], f"{what}: layer {layer!r}")
            if s.output != "tuple":
                assert_close(probe.logits(x), oracle_logits(s, output), f"{what}: logits")
            assert probe.user_hooks == (USER_HOOK if s.output == "dict" else ())
        finally:
            probe.close()
        snapshot.assert_unchanged(s.model)
    assert "raised" in outcomes and "returned" in outcomes, outcomes


# ---------------------------------------------------------------- the fuzz: a user at an open probe
def comparable(value: Any) -> bool:
    """Whether ``value`` is a tensor whose values a test can compare before and after a call."""
    return (isinstance(value, torch.Tensor) and not value.is_meta and value.layout == torch.strided
            and not (value.is_floating_point() and value.element_size() == 1))  # float8: no comparison


def parameter_flags(model: nn.Module) -> dict[str, tuple[bool, bool, torch.dtype]]:
    """What :class:`UserModelSnapshot` does not hold: each parameter's ``requires_grad``, whether it has a
    ``.grad``, and its dtype."""
    return {name: (p.requires_grad, p.grad is not None, p.dtype) for name, p in model.named_parameters()}


class NotebookUser:
    """An open probe on a subject, and what a user does with it."""

    def __init__(self, s: Subject, rng: random.Random) -> None:
        self.s, self.rng = s, rng
        # a model of one size is given its size; the others find theirs
        self.probe = Probe(s.model, channels_last=rng.choice([True, False, "auto"]), cache_size=rng.choice([1, 3, 8]),
                           cache_bytes=rng.choice([0, 2**14, 2**29]), input_size=None if s.any_size else s.size)
        self.snapshot = UserModelSnapshot.take(s.model)
        self.flags = parameter_flags(s.model)
        self.outcomes: list[str] = []
        self.log: list[str] = []

    # -- helpers
    def call(self, what: str, call: Callable[..., Any], parts: dict[str, V], check: Callable[[Any], None],
             extra: list[Refusal] = ()) -> Any:
        self.log.append(f"{what}({parts})")
        given = {name: part.value.detach().clone() for name, part in parts.items() if comparable(part.value)}
        result = fuzz_call(call, parts, check, f"{self.s.name}: {self.log[-1]} (after {self.log[-6:-1]})",
                           self.outcomes, extra)
        self.snapshot.assert_unchanged(self.s.model)
        assert parameter_flags(self.s.model) == self.flags, f"{self.log[-1]}: requires_grad or .grad changed"
        for name, before in given.items():
            torch.testing.assert_close(parts[name].value.detach(), before.detach(), rtol=0, atol=0, equal_nan=True,
                                       msg=f"{self.log[-1]}: the batch was written to")
        return result

    def tuple_refusal(self) -> list[Refusal]:
        return [refused(r"cnnwidgets needs one tensor", TypeError)] if self.s.output == "tuple" else []

    # -- what the user does
    def capture(self) -> None:
        parts = draw(self.rng, {"x": batches(self.rng, self.s), "layers": layer_lists(self.rng, self.s), **optional(
            self.rng, {name: flags(name, optional=name == "contiguous") for name in FLAGS})})
        x, layers = parts.pop("x"), parts.pop("layers")
        kwargs = parts
        expected = layers.plain
        before = self.probe.stats.as_dict()

        def check(result: dict[str, torch.Tensor]) -> None:
            assert list(result) == expected and all(type(k) is str for k in result)
            want, _ = oracle(self.s.model, x.value, expected)
            for name in expected:
                assert_close(result[name], want[name], f"layer {name!r}")
                first, contiguous = kwargs.get("channels_first"), kwargs.get("contiguous")
                standard = contiguous.value if contiguous is not None and contiguous.value is not None else not (
                    first is not None and first.value)
                if standard:
                    assert result[name].is_contiguous(), name
            cache, grad = kwargs.get("cache"), kwargs.get("grad")
            cached = (cache is None or cache.value) and not (grad is not None and grad.value)
            after = self.probe.stats.as_dict()
            looked_up = after["cache_hits"] + after["cache_misses"] - before["cache_hits"] - before["cache_misses"]
            assert looked_up == (len(expected) if cached else 0), (looked_up, before, after)

        self.call("capture", self.probe.capture, {"x": x, "layers": layers, **kwargs}, check)

    def logits(self) -> None:
        kwargs = draw(self.rng, {"x": batches(self.rng, self.s),
                                 **optional(self.rng, {name: flags(name) for name in ("grad", "cache")})})
        x = kwargs.pop("x")

        def check(result: torch.Tensor) -> None:
            _, output = oracle(self.s.model, x.value, [])
            assert_close(result, oracle_logits(self.s, output), "logits")
            assert result.is_contiguous()
            result.mul_(0)  # the caller's own tensor: the cache keeps its copy

        self.call("logits", self.probe.logits, {"x": x, **kwargs}, check, extra=self.tuple_refusal())
        if x.valid and self.s.output != "tuple":  # what was zeroed above was the caller's copy
            _, output = oracle(self.s.model, x.value, [])
            assert_close(self.probe.logits(x.value), oracle_logits(self.s, output), "logits after the last was zeroed")

    def capture_with_logits(self) -> None:
        kwargs = draw(self.rng, {"x": batches(self.rng, self.s), "layers": layer_lists(self.rng, self.s), **optional(
            self.rng, {name: flags(name, optional=name == "contiguous") for name in FLAGS if name != "grad"})})
        x, layers = kwargs.pop("x"), kwargs.pop("layers")
        expected = layers.plain

        def check(result: tuple[dict[str, torch.Tensor], torch.Tensor]) -> None:
            acts, logits = result
            want, output = oracle(self.s.model, x.value, expected)
            assert list(acts) == expected
            for name in expected:
                assert_close(acts[name], want[name], f"layer {name!r}")
            assert_close(logits, oracle_logits(self.s, output), "logits")

        self.call("capture_with_logits", self.probe.capture_with_logits, {"x": x, "layers": layers, **kwargs}, check,
                  extra=self.tuple_refusal())

    def describe(self) -> None:
        size = draw(self.rng, {"size": sizes(self.s, model_checked=True)})["size"]
        plain = size.plain

        def check(result: dict) -> None:
            assert self.probe.input_size == plain and self.probe.described
            want, _ = oracle(self.s.model, torch.zeros(1, *plain), self.s.layers)
            assert list(result) == self.s.layers
            for name, info in result.items():
                assert info.output_shape == tuple(want[name].shape[1:]), name

        self.call("describe", self.probe.describe, {"input_size": size}, check)

    def fit_input_size(self) -> None:
        c, h, w = self.s.size
        wrong = (c + 1, h, w)
        candidate = refused(r"fit_input_size: candidate \d+: input_size must be \(C, H, W\)|is too large", ValueError)
        one = refused(r"fit_input_size takes a list of candidate sizes \(C, H, W\); candidate 0 is the int \d+: to try "
                      r"one size, pass it in a list", ValueError)
        iterable = refused(r"fit_input_size takes the candidate sizes as an iterable of \(C, H, W\)", TypeError)
        pool = [
            V([wrong, (c, h, w)]), V(((np.int64(c), h, w),)), V([torch.tensor([c, h, w])]), V([[c, h, w], (c, h, w)]),
            V(((c, h, w) for _ in range(2)), name="generator"),
            V((c, h, w), one), V(torch.tensor([c, h, w]), one), V(5, iterable), V(None, iterable), V("abc", iterable),
            V(torch.tensor(3), iterable), V([], refused("needs at least one candidate", ValueError)),
            V([(c + 0.5, h, w)], candidate), V([(True, h, w)], candidate), V([(c, math.nan, w)], candidate),
            V([(c, math.inf, w)], candidate), V([(c, 2**63, w)], candidate), V([None], candidate), V([(c, h)], candidate),
            V([{c, h, w + 1}], candidate), V([wrong], refused(r"the model ran on none of the input sizes tried", RuntimeError)),
        ]
        pick = draw(self.rng, {"candidates": pool})["candidates"]

        def check(result: tuple[int, ...]) -> None:
            assert result == (c, h, w) and all(type(v) is int for v in result) and self.probe.input_size == result

        self.call("fit_input_size", self.probe.fit_input_size, {"candidates": pick}, check)

    def names(self) -> list[V]:
        a = self.rng.choice(self.s.layers)
        return [V(a), V(np.str_(a), name=f"np.str_({a!r})"), V(near_miss(a), refused("unknown layer", KeyError)),
                V(a + "x", refused("unknown layer", KeyError)), V("", refused("whole model", KeyError)),
                V(None, NAME_TYPE), V(0, NAME_TYPE), V([a], NAME_TYPE), V(a.encode(), NAME_TYPE),
                V(nn.Conv2d(1, 1, 1), refused("name the layer instead", TypeError), name="a module")]

    def check_layer(self) -> None:
        name = draw(self.rng, {"name": self.names()})["name"]
        modules = dict(self.s.model.named_modules())
        if self.rng.random() < 0.5:
            def check(info) -> None:
                assert info.name == name.value and type(info.name) is str
                assert info.type == type(modules[name.value]).__name__

            self.call("check_layer", self.probe.check_layer, {"name": name}, check)
        else:
            def check(module: nn.Module) -> None:
                user = modules[name.value]
                assert type(module) is type(user) and module is not user  # the private copy's

            self.call("module", self.probe.module, {"name": name}, check)

    def channels_first(self) -> None:
        bad = refused(r"channels_first takes the output of layer .* as a tensor, got", TypeError)
        parts = draw(self.rng, {"name": self.names(), "activation": [
            V(torch.rand(2, 3, 4, 5)), V(torch.rand(2, 3)), V(None, bad), V(np.zeros((2, 3, 4, 5)), bad), V([1.0], bad)]})
        name, activation = parts["name"], parts["activation"]

        def check(result: torch.Tensor) -> None:
            assert result is activation.value  # no layer of these models is channels-last

        self.call("channels_first", self.probe.channels_first, {"name": name, "activation": activation}, check)

    def to(self) -> None:
        device = draw(self.rng, {"device": devices()})["device"]

        def check(result: Probe) -> None:
            assert result is self.probe and self.probe.device.type == "cpu"

        self.call("to", self.probe.to, {"device": device}, check)

    def housekeeping(self) -> None:
        kind = self.rng.choice(["clear_cache", "reset_stats", "sync", "refresh", "properties"])
        self.log.append(kind)
        if kind == "properties":
            self.check_properties()
            return
        x, layer = torch.rand(1, *self.s.size), self.rng.choice(self.s.layers)
        self.probe.capture(x, [layer])  # now in the cache
        before = self.probe.stats.as_dict()
        getattr(self.probe, kind)()
        self.snapshot.assert_unchanged(self.s.model)
        after = self.probe.stats.as_dict()
        if kind == "reset_stats":
            assert set(after.values()) == {0}, after
        if kind == "refresh":
            assert after["refreshes"] == before["refreshes"] + 1
        got = self.probe.capture(x, [layer])[layer]
        assert_close(got, oracle(self.s.model, x, [layer])[0][layer], f"{kind}: layer {layer!r}")
        again = self.probe.stats.as_dict()
        # served from the cache unless it was emptied (clear_cache, refresh)
        emptied = kind in ("clear_cache", "refresh")
        assert (again["cache_misses"] - after["cache_misses"], again["cache_hits"] - after["cache_hits"]) == (
            (1, 0) if emptied else (0, 1)), (kind, after, again)

    def check_properties(self) -> None:
        probe = self.probe
        stats = probe.stats.as_dict()
        assert all(type(v) is int and v >= 0 for v in stats.values()), stats
        assert type(probe.version) is int and probe.version >= 0
        assert probe.device.type == "cpu" and probe.closed is False and isinstance(probe.described, bool)
        assert len(probe.input_size) == 3 and all(type(v) is int and v > 0 for v in probe.input_size)
        assert set(probe.layers) == set(self.s.layers)
        assert probe.output_activation is None and probe.scores_layer is None and probe.batch_dependent == ()
        dict_output = self.s.output == "dict"
        assert probe.output_reduction == ("a dict output is reduced to its 'logits' entry" if dict_output else "")
        assert probe.user_hooks == (USER_HOOK if dict_output else ())
        assert probe.user_model is self.s.model and probe.model is not self.s.model
        assert isinstance(probe.user_model_changed(), bool)

    def edit_model(self) -> None:
        """What a user does to the model between two looks at it."""
        model = self.s.model
        params = [(name, p) for name, p in model.named_parameters()]
        name, param = self.rng.choice(params)
        kind = self.rng.choice(["step", "new parameter", "train", "requires_grad", ".data and refresh", "buffer"])
        self.log.append(f"user: {kind} on {name}")
        if kind == "step":  # an optimizer's step
            with torch.no_grad():
                param.mul_(self.rng.uniform(0.5, 1.5)).add_(0.01)
        elif kind == "new parameter":
            owner, attr = model.get_submodule(name.rpartition(".")[0]), name.rpartition(".")[2]
            setattr(owner, attr, nn.Parameter(param.detach() * -1.0))
        elif kind == "train":
            model.train(self.rng.random() < 0.5)
        elif kind == "requires_grad":
            param.requires_grad_(not param.requires_grad)
        elif kind == ".data and refresh":  # not seen by the version counters: the user refreshes
            param.data.mul_(0.5)
            self.probe.refresh()
        else:
            buffers = list(model.buffers())
            if buffers:
                with torch.no_grad():
                    buffers[0].add_(0.25)
        self.snapshot = UserModelSnapshot.take(model)
        self.flags = parameter_flags(model)

    def run(self, steps: int) -> None:
        actions = [(self.capture, 30), (self.logits, 12), (self.capture_with_logits, 8), (self.describe, 8),
                   (self.fit_input_size, 6), (self.check_layer, 8), (self.channels_first, 5), (self.to, 6),
                   (self.housekeeping, 8), (self.edit_model, 9)]
        for _ in range(steps):
            action = self.rng.choices([a for a, _ in actions], weights=[w for _, w in actions])[0]
            action()


@pytest.mark.parametrize("name, seed, steps", [(n, 200 + i, 300) for i, n in enumerate(SUBJECTS)])
def test_probe_calls_are_refused_clearly_or_give_the_oracles_activations(name, seed, steps):
    s = subject(name)
    hooks = hook_dicts(s.model)
    user = NotebookUser(s, random.Random(seed))
    try:
        user.run(steps)
    finally:
        user.probe.close()
    assert hook_dicts(s.model) == hooks, "the probe left hooks on (or took them off) the user's model"
    user.snapshot.assert_unchanged(s.model)
    assert {"raised", "returned"} <= set(user.outcomes), user.outcomes
    with pytest.raises(RuntimeError, match="this Probe is closed"):
        user.probe.capture(torch.rand(1, *s.size), s.layers[:1])


# ---------------------------------------------------------------- the fuzz: module functions
def test_module_functions_refuse_clearly_and_accept_every_documented_spelling():
    rng = random.Random(7)
    s = subject("sequential")
    snapshot = UserModelSnapshot.take(s.model)
    outcomes: list[str] = []
    c, h, w = s.size
    for size in sizes(s, model_checked=False) + sizes(s, model_checked=False):
        def check(result: tuple[int, ...]) -> None:
            assert result == (c, h, w) and type(result) is tuple and all(type(v) is int for v in result)

        fuzz_call(check_input_size, {"size": size}, check, f"check_input_size({size})", outcomes)
    for _ in range(60):
        x = rng.choice(batches(rng, s))
        if x.refusal is MODEL_FAILED or x.name == "NHWC":  # what only a model can tell
            continue
        fuzz_call(check_batch, {"x": x}, lambda result, x=x: assert_is(result, x.value), f"check_batch({x})", outcomes)
    for _ in range(60):
        # what a probe refuses only once it knows the layers ('', [], a near miss) is a list of names here
        pool = [v for v in layer_lists(rng, s) if v.valid or v.refusal.errors == (TypeError,)]
        layers = rng.choice(pool + [V([], plain=[]), V("", plain=[""])])

        def check(result: list, layers=layers) -> None:
            assert isinstance(result, list) and all(isinstance(v, str) for v in result)
            assert list(dict.fromkeys(result)) == layers.plain

        fuzz_call(layer_names, {"layers": layers}, check, f"layer_names({layers})", outcomes)
    bundle = type("Bundle", (), {"model": s.model, "input_size": (3, 8, 8)})()
    model_type = refused(r"expected a torch\.nn\.Module \(or a bundle with a \.model module", TypeError)
    for given, want in ((s.model, (s.model, None)), (bundle, (s.model, (3, 8, 8))),
                        (nn.DataParallel(s.model), (s.model, None))):
        result = unwrap_model(given)
        assert result[0] is want[0] and result[1] == want[1]
    for value in (None, 3, "model.pth", s.model.state_dict(), nn.Sequential, [s.model]):
        fuzz_call(unwrap_model, {"model": V(value, model_type)}, lambda r: None, f"unwrap_model({_short(value)})",
                  outcomes)
    closed: list[str] = []
    with Probe(s.model, input_size=s.size) as probe:
        fuzz_call(unwrap_model, {"model": V(probe, refused("this is already a Probe", TypeError))}, lambda r: None,
                  "unwrap_model(probe)", outcomes)
        for cache in flags("cache"):  # the class count of a blank image: 5 classes
            fuzz_call(lambda cache: class_count(probe, cache=cache), {"cache": cache},
                      lambda r: assert_is(r, 5, equal=True), f"class_count(probe, cache={cache})", outcomes)
        for callback in (V(lambda: closed.append("a function"), name="a function"),
                         V(lambda: closed.append("another"), name="another"),
                         *(V(v, refused(r"on_close takes a callable, called with no argument; got \w+", TypeError))
                           for v in (None, 5, "close", [print]))):
            fuzz_call(probe.on_close, {"callback": callback}, lambda r: None, f"on_close({callback})", outcomes)
    assert probe.closed and closed == ["a function", "another"]  # close() called every callback it took
    for device in devices():
        fuzz_call(resolve_device, {"spec": device}, lambda r: assert_is(r.type, "cpu", equal=True),
                  f"resolve_device({device})", outcomes)
    snapshot.assert_unchanged(s.model)
    assert {"raised", "returned"} <= set(outcomes)


def assert_is(got: Any, want: Any, equal: bool = False) -> None:
    assert (got == want) if equal else (got is want), (got, want)


# ---------------------------------------------------------------- the fuzz: targets
def class_table(y: Any) -> torch.Tensor | None:
    """``y`` as documented class scores (N, classes): a float tensor of shape (N, C) or (N, C, 1, 1 ...), C >= 1."""
    if not isinstance(y, torch.Tensor) or not y.is_floating_point():
        return None
    if y.dim() > 2 and all(v == 1 for v in y.shape[2:]):
        y = y.reshape(y.shape[0], y.shape[1])
    return y if y.dim() == 2 and y.shape[1] >= 1 else None


def probabilities(y: torch.Tensor, outputs: str) -> torch.Tensor | None:
    """The documented class probabilities of scores ``y`` (N, C); None where ``"probabilities"`` must refuse them."""
    y64 = y.double()
    if outputs == "auto":
        in_unit = bool((torch.isfinite(y64) & (y64 >= 0) & (y64 <= 1)).all())
        sums_to_one = bool(((y64.sum(1) - 1).abs() <= max(1e-4, 4 * torch.finfo(y.dtype).eps)).all())
        if y.shape[1] > 1 and y.numel() and in_unit and sums_to_one:
            return y64
        outputs = "logits"
    if outputs == "probabilities":
        return None if bool(((y64 < 0) | (y64 > 1)).any()) else y64
    if outputs == "multilabel_logits" or y.shape[1] == 1:
        return torch.sigmoid(y64)
    return torch.softmax(y64, dim=1)


def activations(rng: random.Random) -> list[tuple[str, Any]]:
    """Outputs of odd shapes and dtypes, as a target is given them."""
    n, k = rng.choice([1, 2, 3]), rng.choice([1, 2, 5])
    gen = torch.Generator().manual_seed(rng.randrange(2**31))

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=gen)

    nan = rand(n, k)
    nan[0, 0] = math.nan
    return [
        ("(N, C)", rand(n, k)), ("(N, C, 1, 1)", rand(n, k, 1, 1)), ("(N, C, H, W)", rand(n, k, 3, 4)),
        ("(N,)", rand(n)), ("()", rand()), ("(0, C)", rand(0, k)), ("(N, 0)", rand(n, 0)), ("(N, 1)", rand(n, 1)),
        ("(N, C, 3)", rand(n, k, 3)), ("(N, C, 0, 0)", rand(n, k, 0, 0)), ("(N, C, 2, 2, 2)", rand(n, k, 2, 2, 2)),
        ("int", torch.randint(0, 5, (n, k), generator=gen)), ("bool", rand(n, k) > 0),
        ("complex", rand(n, k).to(torch.complex64)),
        ("half", rand(n, k).half()), ("float64", rand(n, k).double()), ("NaN", nan),
        ("softmax rows", torch.softmax(rand(n, k), 1)), ("sigmoid values", torch.sigmoid(rand(n, k))),
        ("numpy", rand(n, k).numpy()), ("list", rand(n, k).tolist()), ("None", None), ("dict", {"logits": rand(n, k)}),
        ("tuple", (rand(n, k),)),
    ]


NOT_SCORES = [refused(r"must be class scores of shape \(N, classes\)|no class at all", ValueError),
              refused(r"has dtype torch\.\w+, but class scores must be floating-point", TypeError),
              refused(r"reads a tensor of class scores \(N, classes\), got", TypeError)]


def expected_class_target(target: Any, y: Any) -> tuple[torch.Tensor | None, list[Refusal]]:
    """What a class target gives for the output ``y``: its scores, or the refusals one of which it raises."""
    table = class_table(y)
    batch = y.shape[0] if isinstance(y, torch.Tensor) and y.dim() >= 1 else None
    if isinstance(target, ClassLogits) and batch is not None and batch != len(target.indices):
        return None, [refused(r"class indices \(one per image\) for a batch of \d+ images", ValueError)]
    if table is None:
        return None, NOT_SCORES
    if isinstance(target, TopClassProbability):
        if table.shape[1] == 1:
            return None, [refused("undefined for a model with a single output unit", ValueError)]
        return probabilities(table, "auto").amax(dim=1), []
    index = max(target.indices) if isinstance(target, ClassLogits) else target.index
    if index >= table.shape[1]:
        return None, [refused(rf"class index {index} is out of range for {table.shape[1]} classes", IndexError)]
    if isinstance(target, ClassLogits):
        return table[torch.arange(len(target.indices)), list(target.indices)], []
    if isinstance(target, ClassLogit):
        return table[:, index], []
    p = probabilities(table, target.outputs)
    if p is None:
        return None, [refused(r"outputs='probabilities' needs values in \[0, 1\]", ValueError)]
    return p[:, index], []


def expected_channel_target(target: ChannelActivation, a: Any) -> tuple[torch.Tensor | None, list[Refusal]]:
    """What a channel target gives for the layer output ``a`` (channels first), or its refusals."""
    if not isinstance(a, torch.Tensor) or a.is_complex():
        return None, [refused(r"a channel target reads the output of layer .* as a tensor|has complex values", TypeError)]
    if a.dim() in (0, 1, 3):
        return None, [refused(r"a channel target needs a \(C,\) or \(C, H, W\) output", ValueError)]
    if target.channel >= a.shape[1]:
        return None, [refused(rf"channel {target.channel} is out of range: layer .* has \d+ channels", IndexError)]
    values = a[:, target.channel].double()
    if values.dim() == 3 and values.shape[1] * values.shape[2] == 0:
        return None, [refused(r"has an empty feature map", ValueError)]
    if target.position is not None:
        if values.dim() != 3:
            return None, [refused(r"a position needs a spatial layer", ValueError)]
        row, col = target.position
        if not (row < values.shape[1] and col < values.shape[2]) or min(row, col) < 0:
            return None, [refused(r"position .* is outside the", IndexError)]
        return values[:, row, col], []
    flat = values.reshape(values.shape[0], -1) if values.shape[0] else values.reshape(0, 1)
    reduced = {"mean": flat.mean(1), "sum": flat.sum(1), "max": flat.amax(1) if flat.shape[0] else flat[:, 0]}
    return reduced[target.reduce], []


INDEX_TYPE = refused(r"must be an int \(a Python int, a numpy integer or a 0-d integer tensor\), got", TypeError)
NEGATIVE = refused(r"class index -\d+ is negative; accepted: 0\.\.C-1", IndexError)
CLASS_LAYER = refused(r"layer must be None \(the model's output\) or the name of a layer, a non-empty str, got", TypeError)


def index_pool() -> list[V]:
    return [V(0), V(1), V(4), V(np.int64(2)), V(np.uint8(1)), V(torch.tensor(3)), V(torch.tensor([1]), name="tensor([1])"),
            V(np.array([2]), name="array([2])"), V(2**64), V(-1, NEGATIVE), V(-(2**63), NEGATIVE), V(True, INDEX_TYPE),
            V(np.True_, INDEX_TYPE), V(1.0, INDEX_TYPE), V(np.float64(1), INDEX_TYPE), V(math.nan, INDEX_TYPE),
            V("1", INDEX_TYPE), V(None, INDEX_TYPE), V([1], INDEX_TYPE), V(torch.tensor(1.0), INDEX_TYPE),
            V(torch.tensor([1, 2]), INDEX_TYPE), V(np.array(2), INDEX_TYPE, name="0-d array")]


def build_target(rng: random.Random) -> tuple[str, Callable[..., Any], dict[str, V]]:
    """A target constructor and arguments for it drawn from pools."""
    layer_pool = [V(None), V("7"), V(np.str_("6"), name="np.str_('6')"), V("", CLASS_LAYER), V(0, CLASS_LAYER),
                  V(b"7", CLASS_LAYER), V(["7"], CLASS_LAYER)]
    kind = rng.choice(["ClassLogit", "ClassProbability", "ClassLogits", "ChannelActivation", "TopClassProbability"])
    if kind in ("ClassLogit", "ClassProbability"):
        parts = {"index": rng.choice(index_pool())}
        if rng.random() < 0.3:
            parts["layer"] = rng.choice(layer_pool)
        if kind == "ClassProbability" and rng.random() < 0.5:
            wrong = refused(r"outputs must be one of \('auto', 'logits', 'multilabel_logits', 'probabilities'\)")
            parts["outputs"] = rng.choice([V("auto"), V("logits"), V("multilabel_logits"), V("probabilities"),
                                           V("LOGITS", wrong), V("", wrong), V(None, wrong), V(1, wrong)])
        return kind, {"ClassLogit": ClassLogit, "ClassProbability": ClassProbability}[kind], parts
    if kind == "ClassLogits":
        each = refused(r"ClassLogits: each class index must be an int|ClassLogits: the indices must be", TypeError)
        parts = {"indices": rng.choice([V([0, 1]), V((1, 0, 2)), V(np.array([0, 2])), V(torch.tensor([1, 1])), V([3]),
                                        V([], refused("no class index given", ValueError)), V([0, -1], NEGATIVE),
                                        V([0, 1.0], each), V([True, False], each), V(1, each), V("01", each),
                                        V(torch.tensor([[0, 1]]), each), V(np.array([0.0, 1.0]), each)])}
        if rng.random() < 0.3:
            parts["layer"] = rng.choice(layer_pool)
        return kind, ClassLogits, parts
    if kind == "TopClassProbability":
        return kind, TopClassProbability, {}
    bad_layer = refused(r"ChannelActivation: layer must be the name of an internal layer \(a non-empty str\)", TypeError)
    channel_type = refused(r"ChannelActivation: channel must be an int", TypeError)
    position_type = refused(r"ChannelActivation: position (row |column )?must be", TypeError)
    parts = {"layer": rng.choice([V("3"), V(np.str_("0"), name="np.str_('0')"), V(None, bad_layer), V("", bad_layer),
                                  V(3, bad_layer), V(b"3", bad_layer)]),
             "channel": rng.choice([V(0), V(1), V(4), V(np.int64(1)), V(torch.tensor(0)), V(2**64), V(True, channel_type),
                                    V(1.0, channel_type), V(None, channel_type), V([0], channel_type),
                                    V(torch.tensor([0]), channel_type)])}
    if rng.random() < 0.4:
        parts["reduce"] = rng.choice([V("mean"), V("sum"), V("max"),
                                      *(V(r, refused(r"reduce must be one of \('mean', 'sum', 'max'\)", ValueError))
                                        for r in ("MEAN", "min", "", None))])
    if rng.random() < 0.3:
        parts["position"] = rng.choice([V((0, 1)), V([1, 0]), V(np.array([0, 0])), V(torch.tensor([1, 1])), V((5, 0)),
                                        V(None), V((1,), position_type), V((1.0, 0), position_type),
                                        V((True, 0), position_type), V("ab", position_type)])
    return kind, ChannelActivation, parts


def test_targets_are_refused_clearly_or_give_their_documented_scores():
    rng = random.Random(11)
    outcomes: list[str] = []
    for step in range(600):
        kind, make, parts = build_target(rng)
        what = f"step {step}: {kind}({parts})"
        target = fuzz_call(make, parts, lambda t: None, what, outcomes)
        if target is None:
            continue
        # what a target stores is a plain int, tuple of ints or str
        for attr in ("index", "channel"):
            if hasattr(target, attr):
                assert type(getattr(target, attr)) is int, what
        if isinstance(target, ClassLogits):
            assert type(target.indices) is tuple and all(type(v) is int for v in target.indices), what
        if getattr(target, "position", None) is not None:
            assert all(type(v) is int for v in target.position), what
        assert target.layer is None or type(target.layer) is str, what
        for label, activation in rng.sample(activations(rng), 6):
            if isinstance(target, ChannelActivation):
                want, refusals = expected_channel_target(target, activation)
            else:
                want, refusals = expected_class_target(target, activation)
            call_what = f"{what} called on {label}"
            classified_call(lambda a: target(a), {"a": activation}, refused_ok=bool(refusals),
                            must_refuse=bool(refusals), check_error=error_checker(refusals, call_what), what=call_what,
                            check=lambda got, _v, want=want: assert_scores(got, want), outcomes=outcomes)
    assert {"raised", "returned"} <= set(outcomes)


def assert_scores(got: Any, want: torch.Tensor) -> None:
    assert isinstance(got, torch.Tensor) and got.dim() == 1 and got.shape == want.shape, (got, want)
    assert not got.is_complex()
    assert torch.allclose(got.double(), want.double(), rtol=1e-3, atol=1e-3, equal_nan=True), (got, want)


def test_resolve_target_and_target_score_read_what_a_user_passes():
    rng = random.Random(12)
    s = subject("sequential")
    snapshot = UserModelSnapshot.take(s.model)
    outcomes: list[str] = []
    unsupported = refused(r"unsupported target|a target given as a class index must be an int|not a bool", TypeError)

    class OnLayer:
        layer = "3"

        def __call__(self, a):
            return a[:, 0].mean((1, 2))

    own = OnLayer()
    pool = [V(2), V(np.int64(4)), V(torch.tensor(1)), V(torch.tensor([3])), V(np.array([0]), name="array([0])"), V([2]),
            V((1,)), V([0, 4]), V(np.array([4, 1])), V(torch.tensor([2, 2])), V(ClassLogit(1)), V(ClassProbability(2)),
            V(ChannelActivation("3", 5)), V(ChannelActivation("0", 2, reduce="max", position=(3, 4))),
            V(lambda y: y[:, 0] - y[:, 1], name="lambda"), V(own, name="object with a layer"),
            V(True, unsupported), V(np.True_, unsupported), V(1.0, unsupported), V("1", unsupported), V(None, unsupported),
            V([1.0], unsupported), V([], unsupported), V({1: 2}, unsupported), V(torch.tensor([[1]]), unsupported),
            V(torch.tensor(1.0), unsupported), V(np.array(2), unsupported, name="0-d array"), V(-1, NEGATIVE),
            V([1, -2], NEGATIVE), V([True, False], unsupported)]
    with Probe(s.model, input_size=s.size) as probe:
        for step in range(120):
            given = rng.choice(pool)
            n = rng.choice([1, 2])
            if isinstance(given.value, (list, tuple, np.ndarray, torch.Tensor)) and given.valid and len(
                    np.atleast_1d(np.asarray(given.value))) > 1:
                n = len(given.value)  # one class per image
            x = torch.rand(n, *s.size)
            what = f"step {step}: target_score(probe, x, {given})"

            def check(scores: torch.Tensor, given=given, x=x) -> None:
                target = resolve_target(given.value)
                layer = getattr(target, "layer", None)
                want, output = oracle(s.model, x, [layer] if layer else [])
                if isinstance(target, ChannelActivation):
                    expected, _ = expected_channel_target(target, want[layer])
                elif isinstance(target, (ClassLogit, ClassLogits, ClassProbability)):
                    expected, _ = expected_class_target(target, output)
                elif target is own:
                    expected = want["3"][:, 0].mean((1, 2))
                else:
                    assert isinstance(target, OutputScore) and target.layer is None
                    expected = output[:, 0] - output[:, 1]
                assert_scores(scores, expected)

            fuzz_call(lambda target: target_score(probe, x, target), {"target": given}, check, what, outcomes)
            snapshot.assert_unchanged(s.model)
    for given in pool:  # what resolve_target makes of each, without a probe
        if not given.valid:
            continue
        target = resolve_target(given.value)
        if isinstance(given.value, (ClassLogit, ClassProbability, ChannelActivation)) or given.value is own:
            assert target is given.value
        elif callable(given.value):
            assert isinstance(target, OutputScore) and target.fn is given.value
        else:
            indices = [int(v) for v in np.atleast_1d(np.asarray(given.value))]
            if len(indices) == 1:
                assert type(target) is ClassLogit and target.index == indices[0] and type(target.index) is int
            else:
                assert type(target) is ClassLogits and target.indices == tuple(indices)
    assert {"raised", "returned"} <= set(outcomes)


# ---------------------------------------------------------------- what the fuzz found
def test_an_input_size_given_as_a_set_or_a_dict_is_refused_as_unordered():
    model = small_classifier()
    # was: taken in the set's hash order, (64, 32, 3): a probe described at a size no one asked for
    with pytest.raises(ValueError, match=r"got \{.*\} \(a set, which holds no order: give a tuple \(C, H, W\)\)"):
        check_input_size({3, 64, 32})
    with pytest.raises(ValueError, match=r"a dict, which holds no order"):
        Probe(model, input_size={3: "C", 16: "H", 17: "W"})  # was: described at (3, 16, 17), the keys
    assert check_input_size(iter([3, 16, 17])) == (3, 16, 17)


@pytest.mark.parametrize("size", [(3, 2**63, 4), (3, 2**64, 2**64), (2**40, 2**40, 2**40)])
def test_an_input_size_too_large_for_any_tensor_is_refused_when_it_is_given(size):
    model = small_classifier()
    # was: accepted, then "zeros(): argument 'size' failed to unpack the object ... Overflow when unpacking long
    # long" (a TypeError from torch, with its C++ trace) or "Storage size calculation overflowed" when the layers
    # were first read
    with pytest.raises(ValueError, match=r"input_size \(.*\) is too large: one float32 image of that size would take "
                                         r"about 2\*\*\d+ bytes, more than a tensor can hold"):
        Probe(model, input_size=size)
    with Probe(model, input_size=(3, 16, 16)) as probe:
        with pytest.raises(ValueError, match="is too large"):
            probe.describe(size)
        assert probe.input_size == (3, 16, 16) and list(probe.layers)


def test_an_input_size_the_device_cannot_allocate_is_named_as_such():
    model = small_classifier()
    with Probe(model, input_size=(1, 2**29, 2**29)) as probe:  # 2**60 bytes: no machine has them
        # was: torch's allocator error as it is ("[enforce fail at alloc_cpu.cpp] ... DefaultCPUAllocator")
        with pytest.raises(RuntimeError, match=r"cannot make an input of size \(1, 536870912, 536870912\) to describe "
                                               r"the layers with: one float32 image of that size takes 1\.07e\+09 GiB, "
                                               r"which cpu could not allocate; give a smaller input size"):
            probe.layers  # noqa: B018


def test_input_size_entries_take_0d_integer_tensors_as_every_count_does():
    model = small_classifier()
    # was: refused, while cache_size=torch.tensor(2) is taken, and fit_input_size took them
    with Probe(model, input_size=(torch.tensor(3), np.int64(16), 16), cache_size=torch.tensor(2)) as probe:
        assert probe.input_size == (3, 16, 16) and all(type(v) is int for v in probe.input_size)
    assert check_input_size(torch.tensor([3, 8, 8])) == (3, 8, 8)
    with pytest.raises(ValueError, match=r"got a tensor of shape \(3,\)"):
        check_input_size(torch.tensor([3.0, 8.0, 8.0]))  # float entries are still refused


def test_fit_input_size_checks_each_candidate_as_an_input_size():
    model = small_classifier()
    with Probe(model) as probe:
        # was: the floats truncated, and (3, 16, 16) described
        with pytest.raises(ValueError, match=r"fit_input_size: candidate 0: input_size must be \(C, H, W\).*"
                                             r"got \(3\.7, 16\.2, 16\)"):
            probe.fit_input_size([(3.7, 16.2, 16)])
        # was: True read as 1 channel, then "the model ran on none of the input sizes tried"
        with pytest.raises(ValueError, match=r"candidate 0: input_size must be"):
            probe.fit_input_size([(True, 16, 16)])
        # was: ValueError: cannot convert float NaN to integer / OverflowError: cannot convert float infinity
        for bad in (math.nan, math.inf):
            with pytest.raises(ValueError, match=r"candidate 1: input_size must be"):
                probe.fit_input_size([(1, 16, 16), (3, bad, 16)])
        # was: TypeError: 'int' object is not iterable
        with pytest.raises(ValueError, match=r"candidate 0 is the int 3: to try one size, pass it in a list"):
            probe.fit_input_size((3, 16, 16))
        with pytest.raises(TypeError, match=r"iterable of \(C, H, W\).*got NoneType"):
            probe.fit_input_size(None)
        assert probe.fit_input_size([(1, 16, 16), [np.int64(3), 16, 16]]) == (3, 16, 16)
        assert probe.fit_input_size([torch.tensor([3, 8, 8])]) == (3, 8, 8) == probe.input_size


def test_a_layer_name_given_as_bytes_is_named_as_bytes():
    model = small_classifier()
    with Probe(model, input_size=(3, 16, 16)) as probe:
        # was: "layer names are strings, got int" (the bytes were read as a list of byte values)
        with pytest.raises(TypeError, match=r"layer names are strings, got bytes b'3'; decode it to a str"):
            probe.capture(torch.rand(1, 3, 16, 16), b"3")
    with pytest.raises(TypeError, match=r"got bytes b'3'"):
        layer_names(b"3")
    with pytest.raises(TypeError, match=r"got bytearray b'3'"):
        layer_names(bytearray(b"3"))


@pytest.mark.parametrize("make, message", [
    (lambda: torch.rand(1, 3, 16, 16).to_sparse(), r"expected a dense tensor, got one with layout torch\.sparse_coo"),
    (lambda: torch.rand(1, 3, 16, 16).to(torch.float8_e5m2),
     r"expected a float16, bfloat16, float32 or float64 tensor, got dtype torch\.float8_e5m2"),
])
def test_a_sparse_or_float8_batch_is_refused_saying_how_to_convert_it(make, message):
    x = make()
    # was: NotImplementedError: Could not run 'aten::aminmax' with arguments from the 'SparseCPU' backend
    # ... / "aminmax_cpu" not implemented for 'Float8_e5m2'
    with pytest.raises(ValueError, match=message):
        check_batch(x)
    with Probe(small_classifier(), input_size=(3, 16, 16)) as probe:
        with pytest.raises(ValueError, match=message):
            probe.capture(x, "3")
        with pytest.raises(ValueError, match=message):
            probe.logits(x)


def test_float64_values_beyond_float32s_range_are_refused_as_the_infinities_they_would_become():
    x = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    x[1, 0, 4, 4] = 1e300
    with Probe(small_classifier(), input_size=(3, 16, 16)) as probe:
        # was: taken, and computed as inf in the probe's float32 copy: NaN logits, without a word
        with pytest.raises(ValueError, match=r"the batch holds values from .* to 1e\+300, beyond float32's range "
                                             r"\(\+-3\.403e\+38\); the probe computes in float32"):
            probe.logits(x)
        x[1, 0, 4, 4] = 1e38  # within float32's range: taken
        assert torch.isfinite(probe.capture(x, "0")["0"]).all()


def test_channels_first_refuses_a_name_that_is_not_a_layer_and_an_activation_that_is_not_a_tensor():
    with Probe(small_classifier(), input_size=(3, 16, 16)) as probe:
        raw = torch.rand(2, 8, 16, 16)
        assert probe.channels_first("0", raw) is raw
        # was: returned unchanged: a mistyped name of a channels-last layer gave (N, H, W, C) without a word
        with pytest.raises(KeyError, match=r"unknown layer 'O'"):
            probe.channels_first("O", raw)
        with pytest.raises(TypeError, match="layer names are strings, got list"):  # was: unhashable type: 'list'
            probe.channels_first(["0"], raw)
        # was: AttributeError: 'NoneType' object has no attribute 'shape'
        with pytest.raises(TypeError, match=r"channels_first takes the output of layer '0' as a tensor, got NoneType"):
            probe.channels_first("0", None)


def test_a_device_index_past_int64_is_an_unknown_device():
    # was: ValueError: Overflow when unpacking long long (torch's words, not naming the device)
    for spec in (2**63, 2**64):
        with pytest.raises(ValueError, match=rf"unknown device {spec}; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"):
            resolve_device(spec)
        with pytest.raises(ValueError, match="unknown device"):
            Probe(small_classifier(), device=spec)


@pytest.mark.parametrize("make", [ClassLogit, ClassProbability, lambda i, layer: ClassLogits([i, i], layer=layer)])
def test_class_targets_check_their_layer_when_made(make):
    # was: accepted; '' then read the whole model as a layer ("layer '' is the whole model"), 0 failed in a
    # capture far from where it was typed
    for layer in ("", 0, b"7", ["7"]):
        with pytest.raises(TypeError, match=r"layer must be None \(the model's output\) or the name of a layer, a "
                                            r"non-empty str"):
            make(1, layer=layer)
    assert make(1, layer=np.str_("7")).layer == "7" and type(make(1, layer=np.str_("7")).layer) is str


def test_resolve_target_takes_an_array_of_one_class_index_as_its_docstring_says():
    # was: TypeError: unsupported target array([1]) (a tensor of shape (1,) was taken)
    target = resolve_target(np.array([1]))
    assert target == ClassLogit(1) and type(target.index) is int
    with Probe(small_classifier(), input_size=(3, 16, 16)) as probe:
        x = torch.rand(1, 3, 16, 16)
        assert torch.equal(target_score(probe, x, np.array([1])), target_score(probe, x, 1))


@pytest.mark.parametrize("target", [ClassLogit(0), ClassProbability(0), ClassLogits([0]), TopClassProbability(),
                                    ChannelActivation("3", 0)])
@pytest.mark.parametrize("value", [np.zeros((1, 5)), None, {"logits": torch.zeros(1, 5)}, (torch.zeros(1, 5),), [[0.0]]])
def test_a_target_called_on_what_is_not_a_tensor_says_what_it_got(target, value):
    # was: AttributeError: 'numpy.ndarray' object has no attribute 'is_floating_point' (or 'dim')
    with pytest.raises(TypeError, match=r"reads (a tensor of class scores \(N, classes\)|the output of layer '3' as a "
                                        r"tensor \(N, C, \.\.\.\)), got (a numpy array of shape \(1, 5\)|a NoneType|"
                                        r"a dict|tuple|list)"):
        target(value)


@pytest.mark.parametrize("target", [ClassLogit(0), ClassProbability(0), ClassLogits([0, 0]), TopClassProbability()])
def test_an_output_with_no_class_is_refused_as_such(target):
    # was: IndexError "class index 0 is out of range for 0 classes; accepted: 0..-1", and for
    # TopClassProbability IndexError: amax(): Expected reduction dim 1 to have non-zero size
    with pytest.raises(ValueError, match=r"the model output has shape \(2, 0\): no class at all"):
        target(torch.zeros(2, 0))


def test_a_channel_target_scores_an_empty_batch_and_integer_maps_and_refuses_complex_ones():
    empty = torch.zeros(0, 4, 3, 3)
    # was: RuntimeError: cannot reshape tensor of 0 elements into shape [0, -1]
    for reduce in ("mean", "sum", "max"):
        scores = ChannelActivation("x", 1, reduce=reduce)(empty)
        assert scores.shape == (0,)
    counts = torch.tensor([[[[1, 2], [3, 6]]], [[[0, 0], [0, 4]]]])  # (2, 1, 2, 2) int64
    # was: RuntimeError: mean(): could not infer output dtype ... Got: Long
    assert torch.equal(ChannelActivation("x", 0)(counts), torch.tensor([3.0, 1.0]))
    assert torch.equal(ChannelActivation("x", 0, reduce="max")(counts > 2), torch.tensor([1.0, 1.0]))  # was: bools
    # was: NotImplementedError: "max_values_cpu" not implemented for 'ComplexFloat'
    with pytest.raises(TypeError, match=r"layer 'x' has complex values \(dtype torch\.complex64\); a channel target "
                                        r"needs real ones"):
        ChannelActivation("x", 0, reduce="max")(torch.zeros(2, 1, 2, 2, dtype=torch.complex64))


def test_class_count_refuses_a_cache_flag_that_is_not_a_bool():
    with Probe(small_classifier(), input_size=(3, 16, 16)) as probe:
        assert class_count(probe) == 5
        # was: None, as for a model whose output is not class scores: the TypeError of the flag was swallowed
        with pytest.raises(TypeError, match="cache must be True or False, got int 1"):
            class_count(probe, cache=1)


def test_a_trained_size_that_is_no_input_size_is_ignored_and_numpy_ints_are_read():
    class Configured(nn.Sequential):
        pretrained_cfg: dict = {}

    model = Configured(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)).eval()
    model.pretrained_cfg = {"input_size": (True, 224, 224)}
    assert trained_input_size(model) is None  # was: (1, 224, 224), True read as one channel
    model.pretrained_cfg = {"input_size": (3, 2**63, 2)}
    assert trained_input_size(model) is None  # was: taken, then torch's overflow error when the layers were read
    with Probe(model) as probe:
        assert probe.input_size == (3, 224, 224) and list(probe.layers)
    model.pretrained_cfg = {"input_size": [np.int64(3), 32, 32]}  # was: ignored
    assert trained_input_size(model) == (3, 32, 32)


def test_a_close_callback_that_is_not_callable_is_refused_when_it_is_given():
    probe = Probe(small_classifier(), input_size=(3, 16, 16))
    called: list[str] = []
    probe.on_close(lambda: called.append("first"))
    # was: taken; close() then raised "'int' object is not callable" half-way, before the callbacks after it
    # and before the memory of the copy was given back
    with pytest.raises(TypeError, match="on_close takes a callable, called with no argument; got int"):
        probe.on_close(5)
    probe.on_close(lambda: called.append("second"))
    probe.close()
    assert probe.closed and called == ["first", "second"]
