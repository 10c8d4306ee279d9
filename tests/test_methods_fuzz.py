"""A seeded fuzz of the public method functions, and regression tests for what it found.

Every fuzzed call draws its arguments from pools of valid and invalid values (fixed seeds, so the
same calls run every time). A call with only valid arguments must return a result that keeps the
documented invariants (shapes, finite values, the layer / channel / class asked for) and leave the
user's model unchanged. A call with an invalid argument must raise a TypeError, ValueError or
LookupError raised by the package itself (not a torch or numpy error passed through), whose message
names the bad argument or what was wrong with it. The one RuntimeError accepted is the package's
documented one for a model that fails on the input (a wrong number of channels), which names the
input size and the channel count the model's first convolution takes.
"""

from __future__ import annotations

import copy
import os
import traceback
import warnings
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

import cnnwidgets
from cnnwidgets import ChannelActivation, ClassLogit, Probe
from cnnwidgets.methods import (
    cam,
    correspondence,
    dead_channels,
    deconvnet,
    grad_cam,
    grad_cam_pp,
    guided_backprop,
    invariance_curves,
    kernel_weights,
    maximize_activation,
    model_summary,
    nearest_conv_layer,
    occlusion_map,
    occlusion_top_class,
    project_channel,
    saliency,
    scan_topk,
    strongest_unit,
    upsample_cam,
)
from cnnwidgets.zoo import load_default
from tests.helpers import classified_call, reference_outputs

PACKAGE_DIR = os.path.dirname(os.path.abspath(cnnwidgets.__file__))
DRAWS = 24  # random calls per method and model context

# ---------------------------------------------------------------------------- models


class FunctionalRelu(nn.Module):
    """ReLUs and pooling applied as functions in forward, a linear head on the mean."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 6, 3, padding=1)
        self.c2 = nn.Conv2d(6, 8, 3)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.c1(x)), 2)
        return self.fc(F.relu(self.c2(x)).mean((2, 3)))


@dataclass
class Context:
    """One model to fuzz and the facts about it the oracle needs."""

    name: str
    model: nn.Module            # the user's model (checked unchanged after every call)
    handle: object              # what is passed as model_or_probe: the model, a bundle or a Probe
    size: tuple[int, int, int]  # (C, H, W) the model runs on
    classes: int
    conv: str                   # a conv layer with a spatial map at `size`
    conv_channels: int
    linear: str                 # a layer with a (C,) output
    relu: str | None            # a ReLU module layer
    kernel: str = ""            # a Conv2d module (default: conv)
    draws: int = DRAWS          # random calls per fuzz test
    cam_ok: bool = False        # ends in global average pooling + linear
    extra_sizes: list = field(default_factory=list)


def _seeded(build):
    torch.manual_seed(0)
    return build().eval()


def _contexts() -> list[Context]:
    default = load_default()
    mnist = _seeded(lambda: nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 11 * 11, 10)))
    four = _seeded(lambda: nn.Sequential(
        nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 6, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3)))
    functional = _seeded(FunctionalRelu)
    fcn = _seeded(lambda: nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 5, 1), nn.AdaptiveAvgPool2d(1)))
    probe_model = load_default().model
    contexts = [
        Context("default", default.model, default.model, (3, 64, 64), 5, "features.conv4", 64, "classifier",
                "features.relu3", extra_sizes=[(40, 70)], draws=36),
        Context("bundle", default.model, default, (3, 64, 64), 5, "features.conv3", 32, "classifier", "features.relu2"),
        Context("probe", probe_model, Probe(probe_model), (3, 64, 64), 5, "features.conv2", 16, "classifier",
                "features.relu4", extra_sizes=[(48, 32)]),
        Context("mnist", mnist, mnist, (1, 28, 28), 10, "3", 8, "6", "1"),
        Context("four_channels", four, four, (4, 20, 24), 3, "2", 6, "6", "3", cam_ok=True, extra_sizes=[(16, 16)]),
        Context("functional_relu", functional, functional, (3, 24, 24), 4, "c2", 8, "fc", None),
        Context("fully_convolutional", fcn, fcn, (3, 16, 16), 5, "0", 8, "", "1", extra_sizes=[(20, 12)]),
    ]
    import torchvision

    resnet = _seeded(lambda: torchvision.models.resnet18(weights=None))
    mobile = _seeded(lambda: torchvision.models.mobilenet_v3_small(weights=None))
    contexts += [
        Context("resnet18", resnet, resnet, (3, 64, 64), 1000, "layer3", 256, "fc", "relu", cam_ok=True,
                kernel="layer3.0.conv1", draws=8),
        Context("mobilenet_v3_small", mobile, mobile, (3, 64, 64), 1000, "features.9", 96, "classifier.3",
                "features.1.block.0.2", kernel="features.9.block.3.0", draws=8),
    ]
    return contexts


CONTEXTS = _contexts()
CONTEXT_IDS = [c.name for c in CONTEXTS]


# ---------------------------------------------------------------------------- oracle


def snapshot(model: nn.Module):
    """Everything of the user's model that a method must not change."""
    return (
        {k: v.detach().clone() for k, v in model.state_dict().items()},
        [m.training for m in model.modules()],
        [(p.requires_grad, p.grad is None) for p in model.parameters()],
        [len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules()],
    )


def assert_unchanged(model: nn.Module, before, what: str) -> None:
    after = snapshot(model)
    assert before[0].keys() == after[0].keys(), what
    for key in before[0]:
        assert torch.equal(before[0][key], after[0][key]), f"{what}: changed {key}"
    assert before[1:] == after[1:], f"{what}: changed training flags, requires_grad, .grad or hooks"


#: RuntimeErrors of the package that are documented and say what was wrong with the input.
DOCUMENTED_RUNTIME = ("the model failed on an input of size", "the model ran on none of the input sizes")


def last_frame(exc: BaseException) -> str:
    return traceback.extract_tb(exc.__traceback__)[-1].filename


def check_error(exc: BaseException, keywords: list[str], what: str) -> None:
    """``exc`` is a clean refusal: an accepted type, raised in the package, naming one of ``keywords``."""
    message = str(exc)
    frame = last_frame(exc)
    kind_ok = isinstance(exc, (TypeError, ValueError, LookupError)) or (
        isinstance(exc, RuntimeError) and any(m in message for m in DOCUMENTED_RUNTIME))
    assert kind_ok, f"{what}: raw {type(exc).__name__}: {message}"
    assert frame.startswith(PACKAGE_DIR), f"{what}: {type(exc).__name__} raised outside the package at {frame}: {message}"
    lowered = message.lower()
    assert any(k.lower() in lowered for k in keywords), (
        f"{what}: the message names none of {keywords}: {type(exc).__name__}: {message}")


#: The outcomes of the calls of the running test ("returned", "raised").
OUTCOMES: list[str] = []


@pytest.fixture(autouse=True)
def _clear_outcomes():
    OUTCOMES.clear()


def assert_both_outcomes() -> None:
    """The draws of a fuzz test gave both kinds of calls: some that returned, some that were refused."""
    assert {"returned", "raised"} <= set(OUTCOMES), f"the draws gave only {set(OUTCOMES)}"


@dataclass
class Arg:
    """A drawn argument: its value, whether it is valid, and what an error about it must name."""

    value: object
    valid: bool | None = True  # None: either outcome is right (a combination the method may refuse)
    keywords: tuple[str, ...] = ()
    label: str = ""

    def __repr__(self) -> str:
        return self.label or repr(self.value)[:60]


#: How the arguments of the current call are drawn: all valid, or mostly one invalid (see :func:`new_case`).
_CASE = {"valid": True, "invalid": 0}


def new_case(rng: np.random.Generator) -> None:
    """Start drawing a new call's arguments: 40 % of calls draw only valid ones; the others draw each
    argument invalid with its pool's probability until one is, and further ones rarely, so most
    refusals have one cause, which the message must name."""
    _CASE["valid"] = bool(rng.random() < 0.4)
    _CASE["invalid"] = 0


def draw(rng: np.random.Generator, pool: list[Arg], p_invalid: float = 0.3) -> Arg:
    """One argument: an invalid one with probability ``p_invalid`` (when the pool has any and the call
    is one with invalid arguments; 0.1 once it has one)."""
    good = [a for a in pool if a.valid]
    bad = [a for a in pool if a.valid is False]
    p = 0.0 if _CASE["valid"] else p_invalid if _CASE["invalid"] == 0 else 0.1
    source = bad if bad and rng.random() < p else good
    chosen = source[int(rng.integers(len(source)))]
    _CASE["invalid"] += chosen.valid is False
    return chosen


def run_case(ctx: Context | None, what: str, args: dict[str, Arg], call, check) -> object:
    """Call ``call(**values)``; valid arguments: it must return and ``check(result)`` holds;
    invalid ones: it must refuse cleanly, naming one of the invalid arguments."""
    values = {k: a.value for k, a in args.items()}
    invalid = [a for a in args.values() if a.valid is False]
    maybe = [a for a in args.values() if a.valid is None]
    what = f"{ctx.name if ctx else ''} {what}({', '.join(f'{k}={a!r}' for k, a in args.items())})"
    before = snapshot(ctx.model) if ctx else None
    keywords = [k for a in invalid + maybe for k in a.keywords]
    if invalid:
        what = f"{what} [invalid: {invalid}]"
    result = classified_call(call, values, refused_ok=bool(invalid or maybe), must_refuse=bool(invalid),
                             check=check, check_error=lambda exc: check_error(exc, keywords, what), what=what,
                             outcomes=OUTCOMES, warnings_action="ignore")
    if ctx:
        assert_unchanged(ctx.model, before, what)
    return result


# ---------------------------------------------------------------------------- argument pools


def images(ctx: Context, rng: np.random.Generator, n: int, *, size: tuple[int, int] | None = None) -> torch.Tensor:
    c, h, w = ctx.size
    h, w = size or (h, w)
    return torch.from_numpy(rng.standard_normal((n, c, h, w)).astype(np.float32))


def x_pool(ctx: Context, rng: np.random.Generator, *, batch_ok: bool = True) -> list[Arg]:
    """Inputs: valid layouts and dtypes of a (N, C, H, W) batch, and wrong ones."""
    c, h, w = ctx.size
    x = images(ctx, rng, 1)
    two = images(ctx, rng, 2)
    nan = x.clone()
    nan[0, 0, 1, 1] = float("nan")
    inf = x.clone()
    inf[0, -1, 0, 0] = float("inf")
    pool = [
        Arg(x, label="x(1,C,H,W)"),
        Arg(x.double(), label="float64"),
        Arg(x.clone().requires_grad_(), label="requires_grad"),
        Arg(x.contiguous(memory_format=torch.channels_last), label="channels_last"),
        Arg(images(ctx, rng, 1, size=(w, h)).transpose(2, 3), label="non-contiguous"),
        Arg(two, batch_ok, ("one image", "(1, c, h, w)"), "x(2,C,H,W)"),
        Arg(x[0], False, ("batch", "unsqueeze", "(1, c, h, w)"), "x(C,H,W)"),
        Arg(x[0, 0], False, ("batch", "(1, c, h, w)", "(n, c, h, w)"), "x(H,W)"),
        Arg(torch.randn(1, c + 1, h, w), False, ("channel",), "wrong channels"),
        Arg((x.clamp(-1, 1) * 100 + 128).to(torch.uint8), False, ("float", "dtype"), "uint8"),
        Arg(x.numpy(), False, ("tensor", "ndarray"), "numpy"),
        Arg(Image.new("RGB", (w, h)), False, ("tensor", "image"), "PIL"),
        Arg(nan, False, ("finite", "nan"), "NaN"),
        Arg(inf, False, ("finite", "inf"), "inf"),
    ]
    for hh, ww in ctx.extra_sizes:
        pool.append(Arg(images(ctx, rng, 1, size=(hh, ww)), label=f"x(1,C,{hh},{ww})"))
    return pool


def class_pool(ctx: Context) -> list[Arg]:
    k = ctx.classes
    words = ("class", "target", "index")
    return [
        Arg(0), Arg(k - 1), Arg(np.int64(1), label="np.int64(1)"), Arg(torch.tensor(k - 1), label="tensor(k-1)"),
        Arg(ClassLogit(1)), Arg(ChannelActivation(ctx.conv, ctx.conv_channels - 1)),
        Arg(-1, False, ("negative",) + words), Arg(k, False, ("out of range",) + words),
        Arg(3.0, False, words), Arg(3.5, False, words), Arg(True, False, ("bool",) + words),
        Arg(torch.tensor(2.0), False, words, "tensor(2.)"), Arg("cat", False, words), Arg(None, False, words),
    ]


def channel_pool(ctx: Context, name: str = "channel") -> list[Arg]:
    k = ctx.conv_channels
    return [
        Arg(0), Arg(k - 1), Arg(np.int64(k // 2), label="np.int64"), Arg(torch.tensor(1), label="tensor(1)"),
        Arg(-1, False, (name,)), Arg(k, False, (name,)), Arg(3.0, False, (name,)), Arg(3.5, False, (name,)),
        Arg(True, False, (name,)), Arg(torch.tensor(1.0), False, (name,), "tensor(1.)"), Arg("1", False, (name,)),
    ]


def layer_pool(ctx: Context, *, linear_ok: bool, relu_ok: bool = True, none: Arg | None = None,
               conv: str | None = None) -> list[Arg]:
    conv = conv or ctx.conv
    pool = [
        Arg(conv),
        Arg(conv[:-1] + "x" + conv[-1:] if len(conv) > 1 else conv + "x", False, ("unknown layer",)),
        Arg("nonexistent.layer", False, ("unknown layer",)),
        Arg(3, False, ("layer",)),
        Arg(b"conv", False, ("layer",)),
        Arg("", False, ("layer", "whole model")),
    ]
    if ctx.linear:
        pool.append(Arg(ctx.linear, linear_ok, ("(c, h, w)", "spatial", "(c,)", "shape", "convolution")))
    if ctx.relu:
        pool.append(Arg(ctx.relu, relu_ok, ("convolution", "relu")))
    if none is not None:
        pool.append(none)
    return pool


def window_pool(h: int, name: str) -> list[Arg]:
    words = (name,)
    return [
        Arg(1), Arg(max(1, h // 4)), Arg(h // 2), Arg((max(1, h // 4), max(1, h // 2)), label="pair"),
        Arg(np.int64(max(1, h // 3)), label="np.int64"), Arg(torch.tensor(max(1, h // 4)), label="tensor"),
        Arg(0, False, words), Arg(-2, False, words), Arg(4.0, False, words), Arg(4.5, False, words),
        Arg(True, False, words), Arg("8", False, words), Arg((4,), False, words), Arg(None, False, words),
    ]


def fill_pool(c: int, h: int, w: int) -> list[Arg]:
    words = ("fill",)
    return [
        Arg(0.0), Arg(-1), Arg("mean"), Arg(tuple(0.1 * i for i in range(c)), label="per-channel"),
        Arg(torch.zeros(c), label="tensor(C)"), Arg(np.float32(0.5), label="np.float32"),
        Arg(torch.rand(c, h, w), label="tensor(C,H,W)"),
        Arg(float("nan"), False, words), Arg(float("inf"), False, words), Arg("blur", False, words),
        Arg(True, False, words), Arg((0.0,) * (c + 1), False, words, "C+1 values"),
        Arg((True,) * c, False, words, "bools"), Arg(None, False, words),
    ]


def count_pool(name: str, *, none_ok: bool) -> list[Arg]:
    words = (name,)
    return [
        Arg(1), Arg(3), Arg(np.int64(2), label="np.int64"), Arg(None, none_ok, words),
        Arg(0, False, words), Arg(-1, False, words), Arg(2.0, False, words), Arg(True, False, words),
    ]


# ---------------------------------------------------------------------------- invariant checks


def layer_shape(ctx: Context, x: torch.Tensor, layer: str) -> tuple[int, ...]:
    return tuple(reference_outputs(ctx.model, x.detach().float(), [layer])[layer].shape)


def channels_of(ctx: Context, layer: str) -> int:
    """The number of channels (or outputs) of ``layer``, read by a forward hook on a copy of the model."""
    return layer_shape(ctx, images(ctx, np.random.default_rng(0), 1), layer)[1]


def check_pixel_map(ctx: Context, x: torch.Tensor, result: torch.Tensor, channels: int | None = None) -> None:
    assert isinstance(result, torch.Tensor) and result.dtype == torch.float32
    n, c, h, w = x.shape
    assert tuple(result.shape) == (n, c if channels is None else channels, h, w)
    assert bool(torch.isfinite(result).all())


def int_index(value: object) -> int | None:
    """``value`` as an int when it is an index of an accepted type (an int, a numpy integer or a 0-d
    integer tensor; not a bool), else None."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, torch.Tensor) and value.dim() == 0 and not value.is_floating_point() and value.dtype != torch.bool:
        return int(value)
    return None


def class_index(target: object) -> int | None:
    """The class a class-index target asks for (None for other targets)."""
    if isinstance(target, ClassLogit):
        return target.index
    return int_index(target)


# ---------------------------------------------------------------------------- fuzz: gradient maps


@pytest.mark.parametrize("ctx", CONTEXTS, ids=CONTEXT_IDS)
def test_fuzz_gradient_maps(ctx: Context) -> None:
    rng = np.random.default_rng((1, CONTEXT_IDS.index(ctx.name)))
    methods = {"saliency": saliency, "guided_backprop": guided_backprop, "deconvnet": deconvnet}
    for i in range(ctx.draws):
        new_case(rng)
        name = list(methods)[i % 3]
        x = draw(rng, x_pool(ctx, rng))
        target = draw(rng, class_pool(ctx))
        args = {"x": x, "target": target}
        if name == "saliency":
            args["reduce"] = draw(rng, [Arg(None), Arg("max"), Arg("min", False, ("reduce",)), Arg(1, False, ("reduce",))], 0.15)
            args["absolute"] = draw(rng, [Arg(True), Arg(False), Arg(1, False, ("absolute",)), Arg(None, False, ("absolute",))], 0.15)

        def check(result, values):
            reduced = values.get("reduce") == "max"
            check_pixel_map(ctx, values["x"], result, 1 if reduced else None)
            if values.get("absolute", True) and name == "saliency":
                assert bool((result >= 0).all())

        run_case(ctx, name, args, lambda **v: methods[name](ctx.handle, **v), check)
    assert_both_outcomes()


@pytest.mark.parametrize("ctx", CONTEXTS, ids=CONTEXT_IDS)
def test_fuzz_project_channel_and_strongest_unit(ctx: Context) -> None:
    rng = np.random.default_rng((2, CONTEXT_IDS.index(ctx.name)))
    for i in range(ctx.draws):
        new_case(rng)
        x = draw(rng, x_pool(ctx, rng), 0.2)
        layer = draw(rng, layer_pool(ctx, linear_ok=i % 2 == 0), 0.2)
        channel = draw(rng, channel_pool(ctx), 0.25)
        if layer.valid and int_index(channel.value) is not None:
            # an index's range depends on the layer: valid when 0 <= channel < the layer's channels
            width = channels_of(ctx, layer.value)
            channel = Arg(channel.value, 0 <= int(channel.value) < width, ("channel",), f"{channel!r} of {width}")
        if i % 2 == 0:
            unit = draw(rng, [
                Arg("max"), Arg("all"), Arg((0, 0)), Arg([0, 0], label="[0, 0]"),
                Arg("mid", False, ("unit",)), Arg((0.0, 1), False, ("unit",)), Arg((1,), False, ("unit",)),
                Arg((10**4, 0), False, ("unit", "outside")), Arg(None, False, ("unit",)),
            ], 0.2)
            if layer.value == ctx.linear and unit.keywords == ("unit", "outside"):
                unit = Arg(unit.value, label="unit ignored on a (C,) layer")  # documented: ignored for (C,) layers

            def check(result, values):
                check_pixel_map(ctx, values["x"], result)

            run_case(ctx, "project_channel", {"x": x, "layer": layer, "channel": channel, "unit": unit},
                     lambda **v: project_channel(ctx.handle, **v), check)
        else:
            def check(result, values):
                xx = values["x"]
                assert result.dtype == torch.int64 and tuple(result.shape) == (xx.shape[0], 2)
                act = reference_outputs(ctx.model, xx.detach().float(), [values["layer"]])[values["layer"]]
                ch = int(values["channel"])
                for n, (r, c) in enumerate(result.tolist()):
                    assert act[n, ch, r, c] == act[n, ch].max()  # the strongest unit of the channel asked for

            run_case(ctx, "strongest_unit", {"x": x, "layer": layer, "channel": channel},
                     lambda **v: strongest_unit(ctx.handle, **v), check)
    assert_both_outcomes()


# ---------------------------------------------------------------------------- fuzz: class activation maps


@pytest.mark.parametrize("ctx", CONTEXTS, ids=CONTEXT_IDS)
def test_fuzz_cam_family(ctx: Context) -> None:
    rng = np.random.default_rng((3, CONTEXT_IDS.index(ctx.name)))
    for i in range(ctx.draws):
        new_case(rng)
        name = ("grad_cam", "grad_cam_pp", "cam")[i % 3]
        x = draw(rng, x_pool(ctx, rng), 0.2)
        target = draw(rng, class_pool(ctx), 0.2)
        layer = draw(rng, layer_pool(ctx, linear_ok=False, none=Arg(None)), 0.2)
        if isinstance(target.value, ChannelActivation):
            # a channel target is refused when its layer runs before the map's layer (documented)
            target = Arg(target.value, None, ("layer",), repr(target))
        args = {"x": x, "target": target, "layer": layer}
        if name == "cam":
            if class_index(target.value) is None and target.valid:
                args["target"] = Arg(target.value, False, ("cam", "class", "target"), repr(target))
            if not ctx.cam_ok:  # CAM is undefined on this model: every call is refused, and may say so first
                args["x"] = Arg(x.value, False, x.keywords + ("cam needs", "global average"), f"{x!r} (no GAP + linear)")
            if layer.valid and layer.value is not None and ctx.cam_ok:
                layer = args["layer"] = Arg(None)  # CAM takes the last feature map only
        if name == "grad_cam_pp":
            args["eps"] = draw(rng, [Arg(0.0), Arg(1e-3), Arg(-1, False, ("eps",)), Arg(float("nan"), False, ("eps",)),
                                     Arg("x", False, ("eps",))], 0.15)
        functions = {"grad_cam": grad_cam, "grad_cam_pp": grad_cam_pp, "cam": cam}

        def check(result, values):
            xx = values["x"]
            target_layer = getattr(values["target"], "layer", None)  # documented default: nearest_conv_layer(probe, target.layer)
            chosen = values["layer"] or nearest_conv_layer(Probe(ctx.model, input_size=tuple(xx.shape[1:])), target_layer)
            shape = layer_shape(ctx, xx, chosen)
            assert tuple(result.shape) == (xx.shape[0], *shape[-2:])
            assert result.dtype == torch.float32 and bool(torch.isfinite(result).all())
            if name != "cam":
                assert bool((result >= 0).all())  # ReLU of the weighted sum

        run_case(ctx, name, args, lambda **v: functions[name](ctx.handle, **v), check)
    assert_both_outcomes()


def test_cam_refuses_models_without_gap_linear() -> None:
    for ctx in CONTEXTS:
        if ctx.cam_ok:
            continue
        x = images(ctx, np.random.default_rng(0), 1)
        args = {"x": Arg(x, False, ("cam", "global", "average", "linear")), "target": Arg(1)}
        run_case(ctx, "cam", args, lambda **v: cam(ctx.handle, **v), lambda r, v: None)


def test_fuzz_upsample_cam() -> None:
    rng = np.random.default_rng(4)
    maps = torch.rand(2, 5, 7)
    pool_maps = [
        Arg(maps, label="maps(2,5,7)"), Arg(maps.double(), label="float64"), Arg(maps[:1], label="maps(1,5,7)"),
        Arg(maps[0], False, ("maps", "(n, h, w)"), "maps(5,7)"), Arg(maps[None], False, ("maps", "(n, h, w)"), "4-D"),
        Arg(maps.numpy(), False, ("maps", "tensor"), "numpy"),
        Arg(torch.rand(2, 0, 7), False, ("maps", "height", "width"), "maps(2,0,7)"),
        Arg(torch.rand(2, 5, 0), False, ("maps", "height", "width"), "maps(2,5,0)"),
    ]
    pool_size = [
        Arg((32, 48)), Arg([9, 3]), Arg(torch.Size([16, 16]), label="Size"), Arg(np.array([8, 8]), label="array"),
        Arg(64, False, ("size",)), Arg((0, 4), False, ("size",)), Arg((-1, 4), False, ("size",)),
        Arg((4.0, 4), False, ("size",)), Arg((True, 4), False, ("size",)), Arg("64", False, ("size",)),
        Arg((4, 4, 4), False, ("size",)), Arg(None, False, ("size",)),
    ]
    for _ in range(40):
        new_case(rng)
        args = {"maps": draw(rng, pool_maps), "size": draw(rng, pool_size)}

        def check(result, values):
            h, w = (int(s) for s in values["size"])
            assert tuple(result.shape) == (values["maps"].shape[0], h, w)
            assert bool(torch.isfinite(result).all())

        run_case(None, "upsample_cam", args, lambda **v: upsample_cam(**v), check)
    assert_both_outcomes()


@pytest.mark.parametrize("ctx", CONTEXTS, ids=CONTEXT_IDS)
def test_fuzz_nearest_conv_layer(ctx: Context) -> None:
    rng = np.random.default_rng((5, CONTEXT_IDS.index(ctx.name)))
    names = {name for name, _ in ctx.model.named_modules()} - {""}
    pool = layer_pool(ctx, linear_ok=True, none=Arg(None))
    for _ in range(10):
        new_case(rng)
        args = {"layer": draw(rng, pool, 0.5)}

        def check(result, values):
            assert isinstance(result, str) and result in names
            if values["layer"] == ctx.conv:
                assert result == ctx.conv  # a layer with a feature map is its own answer

        run_case(ctx, "nearest_conv_layer", args, lambda **v: nearest_conv_layer(ctx.handle, **v), check)
    assert_both_outcomes()


# ---------------------------------------------------------------------------- fuzz: occlusion


@pytest.mark.parametrize("ctx", CONTEXTS, ids=CONTEXT_IDS)
def test_fuzz_occlusion(ctx: Context) -> None:
    rng = np.random.default_rng((6, CONTEXT_IDS.index(ctx.name)))
    c, h, w = ctx.size
    for i in range(ctx.draws):
        new_case(rng)
        x = draw(rng, x_pool(ctx, rng, batch_ok=False), 0.2)
        window = draw(rng, window_pool(min(h, w), "window"), 0.15)
        stride = draw(rng, [a for a in window_pool(min(h, w), "stride") if a.value != 1], 0.15)
        if x.valid and hasattr(x.value, "shape") and x.value.shape[-2:] != (h, w):
            window = Arg(window.value if not window.valid else 2, window.valid, window.keywords)
        args = {
            "x": x, "window": window, "stride": stride,
            "fill": draw(rng, fill_pool(c, *x.value.shape[-2:]) if x.valid else fill_pool(c, h, w), 0.15),
            "batch_size": draw(rng, count_pool("batch_size", none_ok=True), 0.1),
            "device": draw(rng, [Arg("cpu"), Arg(None), Arg(torch.device("cpu"), label="device(cpu)"),
                                 Arg("bogus", False, ("device",)), Arg("cuda:99", False, ("device", "cuda"))], 0.1),
        }
        if isinstance(ctx.handle, Probe) and args["device"].value is not None:
            # documented: a Probe computes on its own device, set with probe.to(device)
            args["device"] = Arg(args["device"].value, False, ("device",), f"{args['device']!r} with a Probe")
        top = i % 3 == 2
        if not top:
            args["target"] = draw(rng, class_pool(ctx), 0.2)

        def check(result, values):
            image = values["x"].shape[-2:]
            wh, ww = (values["window"],) * 2 if np.ndim(values["window"]) == 0 else values["window"]
            sh, sw = (values["stride"],) * 2 if np.ndim(values["stride"]) == 0 else values["stride"]
            rows, cols = (image[0] - int(wh)) // int(sh) + 1, (image[1] - int(ww)) // int(sw) + 1
            assert result.grid.shape == (rows, cols)
            assert result.window == (int(wh), int(ww)) and result.stride == (int(sh), int(sw))
            assert tuple(result.image_size) == tuple(image)
            assert np.isfinite(result.grid).all() and np.isfinite(result.unoccluded)
            if top:
                assert result.labels.shape == (rows, cols)
                assert ((result.labels >= 0) & (result.labels < ctx.classes)).all()
            else:
                asked = class_index(values["target"])
                if asked is not None:
                    assert result.target.index == asked  # the class asked for, not another
                elif isinstance(values["target"], ChannelActivation):
                    assert result.target == values["target"]

        function = occlusion_top_class if top else occlusion_map
        run_case(ctx, function.__name__, args, lambda **v: function(ctx.handle, progress=False, **v), check)
    assert_both_outcomes()


# ---------------------------------------------------------------------------- fuzz: kernels, summary


@pytest.mark.parametrize("ctx", CONTEXTS, ids=CONTEXT_IDS)
def test_fuzz_kernel_weights(ctx: Context) -> None:
    rng = np.random.default_rng((7, CONTEXT_IDS.index(ctx.name)))
    for _ in range(ctx.draws):
        new_case(rng)
        layer = draw(rng, layer_pool(ctx, linear_ok=False, relu_ok=False, conv=ctx.kernel or ctx.conv), 0.3)
        out_channel = draw(rng, channel_pool(ctx, "out_channel") + [Arg(None)], 0.25)
        args = {
            "layer": layer, "out_channel": out_channel,
            "normalize": draw(rng, [Arg("layer"), Arg("filter"), Arg("slice"), Arg("bogus", False, ("normalize",)),
                                    Arg(None, False, ("normalize",))], 0.15),
        }

        def check(result, values):
            assert result.layer == values["layer"]
            oc = values["out_channel"]
            assert result.out_channel == (None if oc is None else int(oc))
            assert np.isfinite(result.values).all() and np.abs(result.values).max() <= 1 + 1e-6
            weight = dict(ctx.model.named_modules())[values["layer"]].weight.detach()
            assert tuple(result.weight.shape) == tuple(weight.shape)

        run_case(ctx, "kernel_weights", args, lambda **v: kernel_weights(ctx.handle, **v), check)
    assert_both_outcomes()


@pytest.mark.parametrize("ctx", CONTEXTS, ids=CONTEXT_IDS)
def test_fuzz_model_summary(ctx: Context) -> None:
    rng = np.random.default_rng((8, CONTEXT_IDS.index(ctx.name)))
    c, h, w = ctx.size
    pool = [
        Arg(ctx.size), Arg(list(ctx.size), label="list"), Arg(torch.Size(ctx.size), label="Size"),
        Arg((h, w), False, ("input_size",)), Arg((c, 0, w), False, ("input_size",)),
        Arg((c, float(h), w), False, ("input_size",)), Arg(h, False, ("input_size",)), Arg("x", False, ("input_size",)),
        Arg((c + 1, h, w), False, ("channel",)),
    ]
    pool += [Arg((c, hh, ww)) for hh, ww in ctx.extra_sizes]
    for _ in range(10):
        new_case(rng)
        args = {"input_size": draw(rng, pool, 0.6),
                "leaves_only": draw(rng, [Arg(True), Arg(False), Arg(1, False, ("leaves_only",))], 0.15)}

        def check(result, values):
            assert tuple(result.input_size) == tuple(values["input_size"])
            assert len(result.rows) > 0 and result.total_params == sum(p.numel() for p in ctx.model.parameters())

        run_case(ctx, "model_summary", args, lambda **v: model_summary(ctx.handle, **v), check)
    assert_both_outcomes()


# ---------------------------------------------------------------------------- fuzz: data-set scans


def data_pool(ctx: Context, rng: np.random.Generator) -> list[Arg]:
    c, h, w = ctx.size
    data = images(ctx, rng, 5)
    return [
        Arg(data, label="data(5,C,H,W)"), Arg([data[:2], data[2:]], label="two batches"),
        Arg(torch.utils.data.TensorDataset(data, torch.zeros(5, dtype=torch.long)), label="TensorDataset"),
        Arg(data[0], False, ("batch", "(n, c, h, w)"), "data(C,H,W)"),
        Arg(data.numpy(), False, ("numpy", "tensor"), "numpy"),
        Arg(torch.randn(3, c + 1, h, w), False, ("channel",), "wrong channels"),
        Arg(torch.zeros(0, c, h, w), False, ("no batch", "no images", "empty"), "empty"),
        Arg(data.clone().fill_(float("nan")), False, ("finite",), "NaN"),
        Arg(data.to(torch.uint8), False, ("float",), "uint8"),
        Arg(torch.empty(2, c, h, w, device="meta"), False, ("meta",), "meta"),
        Arg("images/", False, ("path", "data")), Arg(None, False, ("data", "inputs")),
    ]


@pytest.mark.parametrize("ctx", CONTEXTS, ids=CONTEXT_IDS)
def test_fuzz_dead_channels(ctx: Context) -> None:
    rng = np.random.default_rng((9, CONTEXT_IDS.index(ctx.name)))
    for _ in range(12):
        new_case(rng)
        # a model whose activations are all functions has no default layer: what follows its
        # convolutions is not known to zero their never-positive channels (it is told to name them)
        default = (Arg(None, False, ("no layer to scan by default",)) if ctx.name == "functional_relu"
                   else Arg(None))
        layers = draw(rng, layer_pool(ctx, linear_ok=True, none=default) + [Arg([ctx.conv], label="[conv]"),
                                                                            Arg([], False, ("layers",))], 0.2)
        args = {
            "inputs": draw(rng, data_pool(ctx, rng), 0.3), "layers": layers,
            "threshold": draw(rng, [Arg(0.0), Arg(-1), Arg(np.float32(0.1), label="np.float32"),
                                    Arg(float("nan"), False, ("threshold",)), Arg("0", False, ("threshold",)),
                                    Arg(True, False, ("threshold",))], 0.15),
            "batch_size": draw(rng, count_pool("batch_size", none_ok=False), 0.15),
        }

        def check(result, values):
            asked = values["layers"]
            if asked is not None:
                assert list(result) == ([asked] if isinstance(asked, str) else list(asked))
            for name, dead in result.items():
                assert dead.layer == name and dead.num_images == 5
                assert np.isfinite(np.asarray(dead.max_activation)).all()

        run_case(ctx, "dead_channels", args, lambda **v: dead_channels(ctx.handle, progress=False, **v), check)
    assert_both_outcomes()


@pytest.mark.parametrize("ctx", CONTEXTS, ids=CONTEXT_IDS)
def test_fuzz_scan_topk(ctx: Context) -> None:
    rng = np.random.default_rng((10, CONTEXT_IDS.index(ctx.name)))
    for _ in range(12):
        new_case(rng)
        args = {
            "data": draw(rng, data_pool(ctx, rng), 0.3),
            "layers": draw(rng, layer_pool(ctx, linear_ok=True) + [Arg([], False, ("layers",))], 0.2),
            "k": draw(rng, [Arg(1), Arg(3), Arg(9), Arg(0, False, ("k",)), Arg(-1, False, ("k",)), Arg(2.0, False, ("k",)),
                            Arg(True, False, ("k",))], 0.15),
            "batch_size": draw(rng, count_pool("batch_size", none_ok=False), 0.15),
        }

        def check(result, values):
            layers = [values["layers"]] if isinstance(values["layers"], str) else list(values["layers"])
            assert list(result.layers) == layers and result.k == int(values["k"]) and result.consumed == 5
            for name in layers:
                kept = result.values[name]
                assert kept.shape[1] == int(values["k"])
                assert bool(torch.isfinite(kept[:, : min(5, int(values["k"]))]).all())

        run_case(ctx, "scan_topk", args, lambda **v: scan_topk(ctx.handle, progress=False, **v), check)
    assert_both_outcomes()


@pytest.mark.parametrize("ctx", CONTEXTS[:1] + CONTEXTS[3:6], ids=CONTEXT_IDS[:1] + CONTEXT_IDS[3:6])
def test_fuzz_invariance_curves(ctx: Context) -> None:
    rng = np.random.default_rng((11, CONTEXT_IDS.index(ctx.name)))
    c = ctx.size[0]
    for _ in range(10):
        new_case(rng)
        imgs = images(ctx, rng, 2)
        args = {
            "images": draw(rng, [Arg(imgs, label="images(2,C,H,W)"), Arg(imgs[0], False, ("images",), "images(C,H,W)"),
                                 Arg(imgs.numpy(), False, ("images", "tensor"), "numpy")], 0.2),
            "labels": draw(rng, [Arg(None), Arg([0, 1]), Arg(torch.tensor([1, 0]), label="tensor"),
                                 Arg([0], False, ("labels",)), Arg([0, ctx.classes], False, ("labels",)),
                                 Arg([0.0, 1], False, ("labels",)), Arg(3, False, ("labels",))], 0.2),
            "layers": draw(rng, [Arg(ctx.conv), Arg([ctx.conv]), Arg("nope", False, ("unknown layer",)),
                                 Arg([], False, ("layers",))], 0.15),
            "transforms": draw(rng, [Arg({"rotation": [0, 10]}), Arg({"scale": [1.0, 1.2]}), Arg({"translation": [0, 2]}),
                                     Arg({"scale": [0.0]}, False, ("scale",)), Arg({"bogus": [1]}, False, ("transformation",)),
                                     Arg({"rotation": [True]}, False, ("rotation", "boolean")),
                                     Arg({"rotation": [float("nan")]}, False, ("rotation", "finite"))], 0.2),
            "fill": draw(rng, [Arg(0.0), Arg((0.5,) * c, label="per-channel"), Arg("mean", False, ("fill",)),
                               Arg(True, False, ("fill",)), Arg(float("nan"), False, ("fill",)),
                               Arg((0.0,) * (c + 1), False, ("fill",))], 0.15),
        }

        def check(result, values):
            for kind, vals in values["transforms"].items():
                assert list(result.values[kind]) == [float(v) for v in vals]
                for layer in result.layers:
                    distances = result.distances[kind][layer]
                    assert distances.shape == (len(vals), 2) and np.isfinite(distances).all()
                assert result.probabilities[kind].shape == (len(vals), 2)

        run_case(ctx, "invariance_curves", args,
                 lambda **v: invariance_curves(ctx.handle, v.pop("images"), v.pop("labels"), v.pop("layers"), progress=False, **v),
                 check)
    assert_both_outcomes()


@pytest.mark.parametrize("ctx", CONTEXTS[:1] + CONTEXTS[3:6], ids=CONTEXT_IDS[:1] + CONTEXT_IDS[3:6])
def test_fuzz_correspondence(ctx: Context) -> None:
    rng = np.random.default_rng((12, CONTEXT_IDS.index(ctx.name)))
    c, h, w = ctx.size
    for _ in range(12):
        new_case(rng)
        imgs = images(ctx, rng, 3)
        box = (1, 2, w // 2, h // 2)
        args = {
            "images": draw(rng, [Arg(imgs, label="images(3,C,H,W)"), Arg(imgs[:1], False, ("at least 2",), "one image")], 0.15),
            "parts": draw(rng, [Arg({"eye": [box] * 3}), Arg({"eye": [box] * 2}, False, ("boxes", "one per image")),
                                Arg({"eye": [(0, 0, w + 1, h)] * 3}, False, ("box",)),
                                Arg({"eye": [(0.5, 0, 4, 4)] * 3}, False, ("box", "whole pixels")),
                                Arg({}, False, ("parts",)), Arg([box], False, ("parts",))], 0.25),
            "layers": draw(rng, [Arg(ctx.conv), Arg("nope", False, ("unknown layer",))], 0.15),
            "random_trials": draw(rng, [Arg(0), Arg(2), Arg(-1, False, ("random_trials",)),
                                        Arg(1.5, False, ("random_trials",))], 0.15),
            "fill": draw(rng, [Arg(0.0), Arg(True, False, ("fill", "boolean")), Arg(float("inf"), False, ("fill",))], 0.15),
            "seed": draw(rng, [Arg(0), Arg(np.int64(7), label="np.int64"), Arg(-1, False, ("seed",)),
                               Arg(1.0, False, ("seed",))], 0.15),
        }
        if not args["images"].valid and args["parts"].valid:
            args["parts"] = Arg({"eye": [box]})

        def check(result, values):
            assert result.num_images == 3 and result.layers == [values["layers"]]
            assert list(result.parts) == ["eye", "random"] if values["random_trials"] else ["eye"]
            for part in result.parts:
                assert 0 <= result.mean[part][values["layers"]] <= 1

        run_case(ctx, "correspondence", args,
                 lambda **v: correspondence(ctx.handle, v.pop("images"), v.pop("parts"), v.pop("layers"), progress=False, **v),
                 check)
    assert_both_outcomes()


# ---------------------------------------------------------------------------- fuzz: activation maximisation


@pytest.mark.parametrize("ctx", CONTEXTS, ids=CONTEXT_IDS)
def test_fuzz_maximize_activation(ctx: Context) -> None:
    rng = np.random.default_rng((13, CONTEXT_IDS.index(ctx.name)))
    c, h, w = ctx.size
    for _ in range(8):
        new_case(rng)
        args = {
            "target": draw(rng, class_pool(ctx), 0.25),
            "steps": draw(rng, [Arg(0), Arg(2), Arg(-1, False, ("steps",)), Arg(2.0, False, ("steps",))], 0.15),
            "lr": draw(rng, [Arg(0.05), Arg(0, False, ("lr",)), Arg(float("nan"), False, ("lr",))], 0.1),
            "input_size": draw(rng, [Arg(ctx.size), Arg((h, w), False, ("input_size",)),
                                     Arg((c + 1, h, w), False, ("channel",))], 0.15),
            "seed": draw(rng, [Arg(0), Arg(3), Arg(-1, False, ("seed",)), Arg(True, False, ("seed",))], 0.1),
            "parametrization": draw(rng, [Arg("fourier"), Arg("pixel"), Arg("bogus", False, ("parametrization",))], 0.1),
        }

        def check(result, values):
            assert tuple(result.image.shape) == (1, *values["input_size"])
            assert bool(torch.isfinite(result.image).all()) and np.isfinite(result.activation)
            assert result.seed == int(values["seed"]) and result.steps == int(values["steps"])

        run_case(ctx, "maximize_activation", args,
                 lambda **v: maximize_activation(ctx.handle, v.pop("target"), progress=False, **v), check)
    assert_both_outcomes()


# ---------------------------------------------------------------------------- reproducibility and references


def test_same_call_twice_gives_the_same_result() -> None:
    ctx = CONTEXTS[0]
    x = images(ctx, np.random.default_rng(20), 2)
    for run in (lambda: saliency(ctx.model, x, 2), lambda: grad_cam(ctx.model, x, 1, ctx.conv),
                lambda: project_channel(ctx.model, x, ctx.conv, 3)):
        assert torch.equal(run(), run())
    first, second = (occlusion_map(ctx.model, x[:1], 1, window=16, stride=8, progress=False) for _ in range(2))
    assert np.array_equal(first.grid, second.grid)
    a, b = (maximize_activation(ctx.model, 3, steps=3, size=32, seed=5, progress=False) for _ in range(2))
    assert torch.equal(a.image, b.image)
    c = maximize_activation(ctx.model, 3, steps=3, size=32, seed=6, progress=False)
    assert not torch.equal(a.image, c.image)  # the seed is used
    parts = {"eye": [(2, 2, 20, 20)] * 2}
    r1, r2 = (correspondence(ctx.model, x, parts, ctx.conv, random_trials=3, seed=4, progress=False) for _ in range(2))
    assert r1.mean == r2.mean
    t1, t2 = (scan_topk(ctx.model, x, ctx.conv, 2, progress=False) for _ in range(2))
    assert torch.equal(t1.values[ctx.conv], t2.values[ctx.conv])


def test_saliency_equals_the_input_gradient_computed_by_hand() -> None:
    ctx = CONTEXTS[0]
    x = images(ctx, np.random.default_rng(21), 2)
    reference = copy.deepcopy(ctx.model).eval()
    leaf = x.clone().requires_grad_()
    (grad,) = torch.autograd.grad(reference(leaf)[:, 3].sum(), leaf)
    expected = grad.abs().amax(dim=1, keepdim=True)
    torch.testing.assert_close(saliency(ctx.model, x, 3, reduce="max"), expected, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(saliency(ctx.model, x, 3, absolute=False), grad, rtol=1e-4, atol=1e-6)


def test_grad_cam_equals_the_formula_computed_by_hand() -> None:
    ctx = CONTEXTS[4]  # 4-channel input, no in-place ReLU
    x = images(ctx, np.random.default_rng(22), 2)
    reference = copy.deepcopy(ctx.model).eval()
    kept = {}
    handle = dict(reference.named_modules())[ctx.conv].register_forward_hook(lambda m, i, o: kept.setdefault("a", o))
    out = reference(x)
    handle.remove()
    (grad,) = torch.autograd.grad(out[:, 2].sum(), kept["a"])
    expected = torch.relu((grad.mean(dim=(2, 3), keepdim=True) * kept["a"]).sum(dim=1))
    torch.testing.assert_close(grad_cam(ctx.model, x, 2, ctx.conv), expected.detach(), rtol=1e-4, atol=1e-6)


def test_a_probe_gives_what_the_bare_model_gives_across_input_sizes() -> None:
    ctx = CONTEXTS[2]
    for i, size in enumerate([(64, 64), (40, 70), (64, 64), (17, 23)]):
        x = images(ctx, np.random.default_rng(30 + i), 1, size=size)
        for run in (lambda m: saliency(m, x, 1), lambda m: grad_cam(m, x, 2, ctx.relu),
                    lambda m: project_channel(m, x, ctx.conv, 5)):
            torch.testing.assert_close(run(ctx.handle), run(ctx.model), rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------- regressions: bugs the fuzz found


def test_upsample_cam_refuses_maps_without_height_or_width():
    # was: torch's RuntimeError "Input and output sizes should be greater than 0" from F.interpolate
    for maps in (torch.rand(2, 0, 8), torch.rand(1, 8, 0)):
        with pytest.raises(ValueError, match="maps must have a height and width of at least 1") as info:
            upsample_cam(maps, (16, 16))
        assert last_frame(info.value).startswith(PACKAGE_DIR)


@pytest.mark.parametrize("function", [occlusion_map, occlusion_top_class])
def test_occlusion_refuses_a_meta_tensor_and_an_image_without_pixels(function):
    # was: NotImplementedError "Cannot copy out of meta tensor; no data!" from torch
    model = CONTEXTS[0].model
    kwargs = {"window": 8, "stride": 8, "progress": False}
    args = (1,) if function is occlusion_map else ()
    with pytest.raises(ValueError, match="x is on the meta device"):
        function(model, torch.empty(1, 3, 64, 64, device="meta"), *args, **kwargs)
    # was: "image_size must be (H, W) ...", naming an argument the caller did not pass
    with pytest.raises(ValueError, match=r"x has no pixels: its shape is \(1, 3, 0, 64\)"):
        function(model, torch.zeros(1, 3, 0, 64), *args, **kwargs)


def test_scan_topk_refuses_a_meta_batch_before_reading_it():
    # was: NotImplementedError "Cannot copy out of meta tensor; no data!" from the first image's checksum
    with pytest.raises(ValueError, match="meta device"):
        scan_topk(CONTEXTS[0].model, torch.empty(2, 3, 64, 64, device="meta"), "features.conv4", 1, progress=False)


@pytest.mark.parametrize("fill", [True, (True, False, True), (0.5, True, 0.0), [np.bool_(False), 0.5, 0.5],
                                  np.array([True]), torch.tensor([True, True, False])],
                         ids=["bool", "tuple", "mixed-tuple", "numpy-bool-in-list", "array", "tensor"])
def test_fills_refuse_booleans(fill):
    # was: True silently read as 1.0 by invariance_curves and correspondence, and a tuple or tensor of bools
    # by occlusion_map (which refuses a plain True); a tuple mixing numbers and bools was read as numbers
    # by occlusion_map while invariance_curves refused it
    model = CONTEXTS[0].model
    x = torch.randn(2, 3, 32, 32)
    with pytest.raises(TypeError, match="fill must be a number or one number per channel, not booleans"):
        invariance_curves(model, x, None, "features.conv4", transforms=["rotation"], fill=fill, progress=False)
    with pytest.raises(TypeError, match="not booleans"):
        correspondence(model, x, {"eye": [(0, 0, 8, 8)] * 2}, "features.conv4", fill=fill, progress=False)
    with pytest.raises(ValueError, match="fill must be"):
        occlusion_map(model, x[:1], 1, window=8, stride=8, fill=fill, progress=False)


def test_occlusion_refuses_a_fill_callable_returning_booleans():
    with pytest.raises(ValueError, match="the fill callable returned booleans"):
        occlusion_map(CONTEXTS[0].model, torch.randn(1, 3, 32, 32), 1, window=8, stride=8,
                      fill=lambda x: x > 0, progress=False)


def test_invariance_transform_values_refuse_booleans():
    # was: rotation=[True] read as a rotation by 1 degree
    with pytest.raises(TypeError, match="the values of 'rotation' must be numbers, not booleans"):
        invariance_curves(CONTEXTS[0].model, torch.randn(2, 3, 32, 32), None, "features.conv4",
                          transforms={"rotation": [0, True]}, progress=False)
    with pytest.raises(TypeError, match="not booleans"):
        invariance_curves(CONTEXTS[0].model, torch.randn(2, 3, 32, 32), None, "features.conv4",
                          transforms={"scale": torch.tensor([True])}, progress=False)
    # values given as a generator are read once, and still work
    result = invariance_curves(CONTEXTS[0].model, torch.randn(2, 3, 32, 32), None, "features.conv4",
                               transforms={"rotation": (v for v in (0, 5))}, progress=False)
    assert list(result.values["rotation"]) == [0.0, 5.0]
