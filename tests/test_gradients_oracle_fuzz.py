"""Oracle fuzz test: the gradient and CAM methods compute the right numbers on random CNNs.

Driven: :func:`saliency` (signed, absolute, channel maximum), :func:`guided_backprop`,
:func:`deconvnet`, :func:`project_channel` (strongest unit, a given unit, the whole map),
:func:`strongest_unit`, :func:`cam`, :func:`grad_cam`, :func:`grad_cam_pp`,
:func:`layer_gradient` and :func:`upsample`, on models drawn from fixed seeds: Sequential
and custom-forward CNNs with random convolutions (kernel, stride, padding incl. ``'same'``,
dilation, groups, bias), batch norms (also left in training mode by the user, and without
running statistics), in-place and out-of-place ReLUs, a ReLU module used twice (in a
Sequential, and inside residual blocks whose shortcut is added in place), ReLUs applied as
functions, LeakyReLU and ReLU6, overlapping and ``ceil_mode`` max pools, average and adaptive
pools, dropout, concatenated branches, and Flatten + Linear or global-average-pool heads; non-square
inputs with 1, 3 or 4 channels, batches of 1 to 3 images; targets on the model's output (a class,
a class per image, a function of the output, a class probability; on a model that ends in an
``nn.Softmax`` a class index reads the logits) and on any internal layer (``ChannelActivation`` with
a position or a reduction; for the CAM family one whose score does not depend on the layer must be
refused with a ``ValueError``).

Oracles, each run on a ``copy.deepcopy`` of the user's model in eval mode (the methods document
that they explain the eval-mode model) with every in-place flag off:

* The ReLU rules of the gradients module's table, written here as two small autograd functions
  put on every ``nn.ReLU`` call of the copy by forward hooks; for :func:`project_channel` the
  docstring's ``P = D^T R`` with ``R = max(a, 0)`` at the kept units.
* Captum's ``Saliency`` (``abs`` True and False), ``GuidedBackprop`` and ``Deconvolution`` for
  targets on the output, ``NeuronGradient``, ``NeuronGuidedBackprop`` and ``NeuronDeconvolution``
  for targets on a layer that runs once; for a layer that runs twice, or a function of the output,
  the same Captum classes on the copy wrapped so that its output is the score.
  :func:`project_channel` is ``max(a, 0)`` times the unit's deconvnet (positive homogeneity), and
  the whole map that of the energy ``0.5 * sum max(a, 0)^2``. Where one ``nn.ReLU`` call reads
  another's output (two ReLU modules in a row, or one module twice in a row) Captum's hooks do not
  give the rule at both calls, so its guided backprop and deconvnet are compared only on models
  without such a pair. The modified rules act only on ``nn.ReLU`` modules, as in Captum: with a
  ReLU applied as a function, with no ReLU at all, or with ReLUs mixed with other activations the
  results still equal Captum's (and the rules written here), and the documented
  warning (:class:`FunctionalReluWarning`, :class:`NoReluWarning`, :class:`MixedActivationWarning`)
  is expected from a trace of the module calls the target needs.
* Plain autograd for :func:`layer_gradient` (the gradient of the target's score with respect to
  the layer's output of its last call), Grad-CAM (``ReLU(sum_k mean_ij(dy/dA_k) A_k)``),
  Grad-CAM++ (the docstring's formula) and CAM (``sum_k W[c, k] A_k`` of the maps the head
  averages); Captum's ``LayerGradCam`` and pytorch-grad-cam's ``GradCAM`` / ``GradCAMPlusPlus``
  (with ``eps=1e-6``, compared in its min-max scaled, resized convention) for class targets.
* :func:`upsample` against the sampling formula of its docstring, written with numpy, and
  ``cv2.resize``.
* :func:`strongest_unit` against numpy's ``argmax`` (first maximum in row-major order) of the layer's
  output captured by a plain forward hook.

Every case also checks that the user's model is unchanged afterwards (hooks, parameters,
buffers, training flags, in-place flags) and that a repeated call gives the same result.
Regression tests at the end, marked ``# was:``, pin the bugs this fuzzing found.
"""

from __future__ import annotations

import copy
import random
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnwidgets import ChannelActivation, ClassProbability, Probe
from cnnwidgets.methods.cam import cam, grad_cam, grad_cam_pp, layer_gradient, upsample
from cnnwidgets.methods.gradients import (
    EmptyMapWarning,
    FunctionalReluWarning,
    InactiveChannelWarning,
    MixedActivationWarning,
    NoReluWarning,
    deconvnet,
    guided_backprop,
    project_channel,
    saliency,
    strongest_unit,
)
from tests.helpers import UserModelSnapshot, batch_statistics_net

captum_attr = pytest.importorskip("captum.attr")
cv2 = pytest.importorskip("cv2")
gradcam_lib = pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

RELU_WARNINGS = (FunctionalReluWarning, NoReluWarning, MixedActivationWarning)


@pytest.fixture(autouse=True)
def _quiet_captum():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU", category=UserWarning)
        warnings.filterwarnings("ignore", message="Input Tensor 0 did not already require", category=UserWarning)
        yield


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The models are tiny: one thread computes them faster than a pool that waits for busy cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------------- random models


class FunctionalRelu(nn.Module):
    """A ReLU applied as a function in ``forward``: no ``nn.ReLU`` module for the rules to reach."""

    def forward(self, x):
        return F.relu(x)


class Residual(nn.Module):
    """A ResNet-style block: conv-bn-relu-conv-bn, plus a shortcut (added in place when
    ``inplace_add``), then the same ReLU module again."""

    def __init__(self, rng: random.Random, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=rng.random() < 0.5)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = None
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
        self.inplace_add = rng.random() < 0.7

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.shortcut is None else self.shortcut(x)
        if self.inplace_add:
            out += identity
        else:
            out = out + identity
        return self.relu(out)


class Branches(nn.Module):
    """Two branches, concatenated along the channels (an Inception-style block)."""

    def __init__(self, rng: random.Random, c_in: int, a: int, b: int) -> None:
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(c_in, a, 3, padding=1), nn.ReLU(inplace=rng.random() < 0.5))
        self.b = nn.Sequential(nn.MaxPool2d(3, 1, padding=1), nn.Conv2d(c_in, b, 1), nn.ReLU())

    def forward(self, x):
        return torch.cat([self.a(x), self.b(x)], dim=1)


class CustomNet(nn.Module):
    """Features, then a head in ``forward``: global average by a function (CAM's form), or a
    flattened hidden layer with a ReLU applied as a function (inside a module of its own, which
    the oracle's trace sees)."""

    def __init__(self, features: nn.Sequential, head: nn.ModuleDict, gap: bool) -> None:
        super().__init__()
        self.features = features
        self.head = head
        self.gap = gap

    def forward(self, x):
        x = self.features(x)
        if self.gap:
            return self.head["fc"](x.mean(dim=(2, 3)))
        return self.head["fc"](self.head["relu"](self.head["hidden"](torch.flatten(x, 1))))


@dataclass
class Case:
    """A drawn model, input and facts about it."""

    model: nn.Module            # the user's model (in training mode for some seeds)
    x: torch.Tensor
    classes: int
    gap: bool                   # ends in global average pooling + linear (CAM is defined)
    pooled: str                 # the layer whose output the head averages ("" unless gap)
    batch_dependent: bool       # a batch norm without running statistics
    softmax: bool               # ends in an nn.Softmax module (class targets then read "fc", its input)
    text: str                   # the drawn architecture, for failure messages


def _conv(rng: random.Random, c_in: int, c_out_choices: list[int]) -> nn.Conv2d:
    kernel = rng.choice([1, 2, 3, 3, 5])
    dilation = rng.choice([1, 1, 2]) if kernel > 1 else 1
    stride = rng.choice([1, 1, 2])
    reach = dilation * (kernel - 1)
    # 'same' with an even reach would make torch pad a copy of the input, with a warning
    padding = rng.choice([0, reach // 2] + (["same"] if stride == 1 and reach % 2 == 0 else []))
    c_out = rng.choice(c_out_choices)
    groups = rng.choice([g for g in (1, 2, 3) if c_in % g == 0 and c_out % g == 0])
    return nn.Conv2d(c_in, c_out, kernel, stride, padding, dilation, groups, bias=rng.random() < 0.6)


def _randomise_norms(model: nn.Module, gen: torch.Generator) -> None:
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            with torch.no_grad():
                module.weight.uniform_(0.5, 1.5, generator=gen)
                module.bias.normal_(0.0, 0.3, generator=gen)
                if module.running_mean is not None:
                    module.running_mean.normal_(0.0, 0.3, generator=gen)
                    module.running_var.uniform_(0.5, 2.0, generator=gen)


def _activation(rng: random.Random, kinds: str) -> nn.Module:
    kind = rng.choice(kinds)
    return {"r": lambda: nn.ReLU(), "i": lambda: nn.ReLU(inplace=True), "f": FunctionalRelu,
            "l": lambda: nn.LeakyReLU(0.1), "6": lambda: nn.ReLU6()}[kind]()


def build_case(seed: int, *, gap: bool | None = None, activations: str | None = None) -> Case:
    """The model and batch of ``seed`` (``gap`` forces the head's kind, ``activations`` the activation
    kinds drawn from: ``r`` ReLU, ``i`` in-place ReLU, ``f`` functional ReLU, ``l`` LeakyReLU, ``6`` ReLU6)."""
    rng = random.Random(seed)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    channels = rng.choice([1, 3, 3, 4])
    height, width = rng.randint(12, 32), rng.randint(12, 32)
    if activations is None:
        activations = rng.choice(["rri", "rri", "rrif", "rril", "rri6", "l6", "rrf"])
    if gap is None:
        gap = rng.random() < 0.5
    batch_dependent = rng.random() < 0.1
    probe_x = torch.zeros(1, channels, height, width)
    layers: list[tuple[str, nn.Module]] = []
    shared = None
    c = channels

    def add(name: str, module: nn.Module) -> bool:
        nonlocal probe_x, c
        try:
            with torch.no_grad():
                out = module.eval()(probe_x)
        except RuntimeError:  # a kernel larger than the padded map
            return False
        if out.shape[2] < 2 or out.shape[3] < 2:
            return False
        layers.append((f"{name}{len(layers)}", module))
        probe_x, c = out, out.shape[1]
        return True

    add("conv", _conv(rng, c, [4, 6]))
    for _ in range(rng.randint(3, 7)):
        kind = rng.choice(["conv", "conv", "bn", "act", "act", "pool", "drop", "res", "branch", "shared"])
        if kind == "conv":
            add("conv", _conv(rng, c, [4, 6, 8]))
        elif kind == "bn":
            norm = nn.BatchNorm2d(c, track_running_stats=not batch_dependent)
            add("bn", norm)
        elif kind == "act":
            add("act", _activation(rng, activations))
        elif kind == "shared" and "r" in activations:
            # one ReLU module at two places of the Sequential
            if shared is None:
                shared = nn.ReLU(inplace=rng.random() < 0.5)
            add("shared", shared)
        elif kind == "pool":
            pool = rng.choice([
                lambda: nn.MaxPool2d(2),
                lambda: nn.MaxPool2d(3, 2, padding=1),
                lambda: nn.MaxPool2d(3, 2, ceil_mode=True),
                lambda: nn.MaxPool2d(2, ceil_mode=True),
                lambda: nn.AvgPool2d(2),
                lambda: nn.AvgPool2d(3, 1, padding=1),
                lambda: nn.AdaptiveAvgPool2d((max(2, probe_x.shape[2] // 2), max(2, probe_x.shape[3] // 2))),
            ])()
            add("pool", pool)
        elif kind == "drop":
            add("drop", rng.choice([nn.Dropout(0.3), nn.Dropout2d(0.3)]))
        elif kind == "res" and "r" in activations:
            add("res", Residual(rng, c, rng.choice([c, 6]), rng.choice([1, 1, 2])))
        elif kind == "branch" and "r" in activations:
            add("branch", Branches(rng, c, rng.choice([2, 3]), rng.choice([2, 4])))
    if not any(isinstance(m, (nn.ReLU, FunctionalRelu, nn.LeakyReLU, nn.ReLU6, Residual, Branches))
               for _, m in layers):
        add("act", _activation(rng, activations))
    classes = rng.randint(3, 6)
    h, w = probe_x.shape[2:]
    custom = rng.random() < 0.5
    softmax = not custom and rng.random() < 0.25
    features = nn.Sequential(OrderedDict(layers))
    if gap:
        if custom:
            model = CustomNet(features, nn.ModuleDict({"fc": nn.Linear(c, classes)}), gap=True)
            pooled = "features"
        else:
            model = nn.Sequential(OrderedDict(layers + [
                ("pool", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten()), ("fc", nn.Linear(c, classes))]))
            pooled = next(name for name, m in model.named_modules() if m is layers[-1][1])  # a shared ReLU's first name
    else:
        hidden = rng.choice([5, 7])
        pooled = ""
        if custom:
            model = CustomNet(features, nn.ModuleDict({"hidden": nn.Linear(c * h * w, hidden), "relu": FunctionalRelu(),
                                                       "fc": nn.Linear(hidden, classes)}), gap=False)
        else:
            model = nn.Sequential(OrderedDict(layers + [
                ("flatten", nn.Flatten()), ("hidden", nn.Linear(c * h * w, hidden)), ("relu_h", nn.ReLU()),
                ("fc", nn.Linear(hidden, classes))]))
    if softmax:
        model.add_module("softmax", nn.Softmax(dim=1))
    _randomise_norms(model, gen)
    model.train(rng.random() < 0.3)  # a user's model left in training mode: the methods explain its eval mode
    n = rng.randint(1, 3)
    x = torch.randn(n, channels, height, width, generator=gen)
    text = (f"seed {seed}: {'custom' if custom else 'sequential'} {'gap' if gap else 'flatten'} head"
            f"{' + softmax' if softmax else ''}, "
            f"input {tuple(x.shape)}, {'training' if model.training else 'eval'} mode, layers "
            + ", ".join(f"{name}={module!r}" for name, module in layers).replace("\n", ""))
    return Case(model, x, classes, gap, pooled, batch_dependent, softmax, text)


# ---------------------------------------------------------------------------- oracle helpers


def reference_copy(model: nn.Module) -> nn.Module:
    """The oracle's model: a deep copy in eval mode, every in-place flag off."""
    clone = copy.deepcopy(model).eval()
    for module in clone.modules():
        if isinstance(getattr(module, "inplace", None), bool):
            module.inplace = False
        if isinstance(module, Residual):
            module.inplace_add = False
    return clone


def inplace_flags(model: nn.Module) -> dict[str, bool]:
    return {name: (getattr(m, "inplace", None), getattr(m, "inplace_add", None)) for name, m in model.named_modules()}


@dataclass
class Trace:
    """What one forward pass of the oracle's copy ran, module by module."""

    shapes: dict[str, tuple]    # output shape of each module's last call
    calls: dict[str, int]       # how often each module ran
    ends: dict[str, int]        # event index at which each module's last call ended
    events: list[tuple[str, str]]  # ("start" | "end", module name) in order


def trace(ref: nn.Module, x: torch.Tensor) -> Trace:
    result = Trace({}, {}, {}, [])
    handles = []
    for name, module in ref.named_modules():
        if not name:
            continue

        def pre(module, args, name=name):
            result.events.append(("start", name))

        def post(module, args, output, name=name):
            result.events.append(("end", name))
            result.shapes[name] = tuple(output.shape) if isinstance(output, torch.Tensor) else ()
            result.calls[name] = result.calls.get(name, 0) + 1
            result.ends[name] = len(result.events) - 1

        handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    try:
        with torch.no_grad():
            ref(x[:1])
    finally:
        for handle in handles:
            handle.remove()
    return result


def expected_relu_warning(ref: nn.Module, tr: Trace, layer: str | None) -> type | None:
    """The warning the modified ReLU rules document for a target on ``layer`` (None: the output),
    read from the module calls that the target needs (the forward pass up to the end of the
    layer's last call)."""
    modules = dict(ref.named_modules())
    events = tr.events if layer is None else tr.events[: tr.ends[layer] + 1]
    relus = functional = 0
    others: list[str] = []
    mixed = False
    for kind, name in events:
        module = modules[name]
        if kind == "end":
            if type(module) is nn.ReLU:
                relus += 1
            elif isinstance(module, FunctionalRelu):
                functional += 1
            elif isinstance(module, (nn.LeakyReLU, nn.ReLU6)):
                others.append(name)
        elif next(module.parameters(recurse=False), None) is not None and others:
            mixed = True  # a module with parameters ran after another activation: it mixes the rules
    if functional:
        return FunctionalReluWarning
    if relus == 0 and not any(type(m) is nn.ReLU for m in ref.modules()):
        return NoReluWarning
    if mixed and relus:
        return MixedActivationWarning
    return None


@dataclass
class Goal:
    """A target for the methods and how the oracle reads it."""

    target: object                       # what the method gets
    layer: str | None                    # the layer the score reads (None: the model's output)
    score: Callable[[torch.Tensor], torch.Tensor]  # (N,) scores from that layer's output
    captum: object = None                # Captum's target (layer None) or neuron selector; None: wrap
    text: str = ""
    classes: list[int] | None = None     # one class per image (then scored image by image as below)

    def image(self, i: int) -> Goal:
        """The target of image ``i`` explained on its own."""
        if self.classes is None:
            return self
        c = self.classes[i]
        if self.layer is None:
            return Goal(c, None, lambda y: y[:, c], c, f"class {c}")
        return Goal(c, self.layer, lambda a: a[:, c], (c,), f"class {c} (the logit)")


class Scored(nn.Module):
    """The oracle's model with the target's score as its only output (N, 1)."""

    def __init__(self, ref: nn.Module, goal: Goal) -> None:
        super().__init__()
        self.ref = ref
        self.goal = goal
        self.seen: list[torch.Tensor] = []
        if goal.layer is not None:
            dict(ref.named_modules())[goal.layer].register_forward_hook(
                lambda m, a, out: self.seen.__setitem__(slice(None), [out]))

    def forward(self, x):
        self.seen.clear()
        y = self.ref(x)
        return self.goal.score(y if self.goal.layer is None else self.seen[-1])[:, None]


_CAPTUM = {
    "gradient": (captum_attr.Saliency, captum_attr.NeuronGradient),
    "guided": (captum_attr.GuidedBackprop, captum_attr.NeuronGuidedBackprop),
    "deconvnet": (captum_attr.Deconvolution, captum_attr.NeuronDeconvolution),
}


def captum_attribution(rule: str, model: nn.Module, x: torch.Tensor, goal: Goal, tr: Trace) -> torch.Tensor:
    """Captum's signed input attribution of ``goal`` on a fresh oracle copy of ``model``."""
    ref = reference_copy(model)
    plain, neuron = _CAPTUM[rule]
    extra = {"abs": False} if rule == "gradient" else {}
    x = x.clone()
    if goal.captum is not None and goal.layer is None:
        return plain(ref).attribute(x, target=goal.captum, **extra).detach()
    if goal.captum is not None and tr.calls[goal.layer] == 1:
        layer = dict(ref.named_modules())[goal.layer]
        return neuron(ref, layer).attribute(x, neuron_selector=goal.captum).detach()
    return plain(Scored(ref, goal)).attribute(x, target=0, **extra).detach()


class _GuidedRule(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.relu(x)

    @staticmethod
    def backward(ctx, signal):
        (x,) = ctx.saved_tensors
        return torch.where(x > 0, torch.relu(signal), torch.zeros_like(signal))


class _DeconvRule(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return torch.relu(x)

    @staticmethod
    def backward(ctx, signal):
        return torch.relu(signal)


def rule_attribution(rule: str, model: nn.Module, x: torch.Tensor, goal: Goal,
                     seed: torch.Tensor | None = None) -> torch.Tensor:
    """The input attribution by the module docstring's table: every call of an ``nn.ReLU`` module
    of an oracle copy passes the signal back by ``rule``, everything else by its gradient. With
    ``seed``, the signal at ``goal.layer`` is ``seed`` instead of the score's gradient."""
    ref = reference_copy(model)
    if rule != "gradient":
        function = {"guided": _GuidedRule, "deconvnet": _DeconvRule}[rule]
        for module in ref.modules():
            if type(module) is nn.ReLU:
                module.register_forward_hook(lambda m, args, out: function.apply(args[0]))
    seen: list[torch.Tensor] = []
    if goal.layer is not None:
        dict(ref.named_modules())[goal.layer].register_forward_hook(lambda m, a, out: seen.append(out))
    with torch.enable_grad():
        leaf = x.clone().requires_grad_(True)
        y = ref(leaf)
        out = y if goal.layer is None else seen[-1]
        if seed is not None:
            (grad,) = torch.autograd.grad(out, leaf, grad_outputs=seed)
        else:
            (grad,) = torch.autograd.grad(goal.score(out).sum(), leaf)
    return grad.detach()


def back_to_back_relus(ref: nn.Module, tr: Trace) -> bool:
    """Whether an ``nn.ReLU`` call reads the output of another (dropout in between changes nothing in
    eval mode). Captum's hooks do not give such a pair the rule at both calls, so Captum's guided
    backprop and deconvnet are compared only on models without one."""
    modules = dict(ref.named_modules())
    steps = [(kind, name) for kind, name in tr.events
             if not isinstance(modules[name], (nn.Dropout, nn.Dropout2d)) and not list(modules[name].children())]
    return any(a == "end" and b == "start" and type(modules[m]) is nn.ReLU and type(modules[n]) is nn.ReLU
               for (a, m), (b, n) in zip(steps, steps[1:]))


def per_image(case: Case, goal: Goal, oracle: Callable[[torch.Tensor, Goal], object]) -> object:
    """``oracle(x, goal)``, image by image (concatenated) where the model normalises with the
    batch's statistics: the methods document that each image is explained on its own."""
    if not case.batch_dependent:
        return oracle(case.x, goal)
    parts = [oracle(case.x[i:i + 1], goal.image(i)) for i in range(case.x.shape[0])]
    if isinstance(parts[0], tuple):
        return tuple(None if any(p[k] is None for p in parts) else torch.cat([p[k] for p in parts])
                     for k in range(len(parts[0])))
    return torch.cat(parts)


def assert_close_to(ours: torch.Tensor, reference: torch.Tensor, what: str, rel: float = 1e-5) -> None:
    """Equal up to float rounding, relative to the reference's largest magnitude (exactly zero
    where the reference is)."""
    assert ours.shape == reference.shape, f"{what}: shape {tuple(ours.shape)} != {tuple(reference.shape)}"
    ours, reference = ours.detach().cpu(), reference.detach().cpu()
    scale = reference.abs().max().item()
    error = (ours - reference).abs().max().item()
    assert error <= rel * scale + 1e-30 * (scale == 0), f"{what}: max difference {error:.3g} vs scale {scale:.3g}"


def spatial_layers(case: Case, tr: Trace, *, once: bool = False) -> list[str]:
    """Layers with a (C, H, W) output larger than 1x1, in definition order."""
    return [name for name, shape in tr.shapes.items()
            if len(shape) == 4 and shape[2] * shape[3] > 1 and (tr.calls[name] == 1 or not once)]


def draw_goal(rng: random.Random, case: Case, tr: Trace, layers: list[str]) -> Goal:
    """A random target: on the model's output, or on one of ``layers``."""
    n = case.x.shape[0]
    kind = rng.choice(["class", "class", "classes", "function", "probability", "channel", "channel", "unit"])
    if kind == "classes" and n == 1:
        kind = "class"
    if kind in ("channel", "unit") and not layers:
        kind = "class"
    if kind == "class":
        c = rng.randrange(case.classes)
        if case.softmax:  # a class index reads the logits that go into the softmax
            return Goal(c, "fc", lambda a: a[:, c], (c,), f"class {c} (the logit)")
        return Goal(c, None, lambda y: y[:, c], c, f"class {c}")
    if kind == "classes":
        cs = [rng.randrange(case.classes) for _ in range(n)]
        rows = torch.arange(n)
        if case.softmax:
            score = lambda a: a[rows, cs]  # noqa: E731
            return Goal(cs, "fc", score, score, f"classes {cs} (the logits)", cs)
        return Goal(cs, None, lambda y: y[rows, cs], cs, f"classes {cs}", cs)
    if kind == "function":
        a, b = rng.randrange(case.classes), rng.randrange(case.classes)
        return Goal(lambda y: y[:, a] - 0.5 * y[:, b], None, lambda y: y[:, a] - 0.5 * y[:, b], None,
                    f"y[:, {a}] - 0.5 y[:, {b}]")
    if kind == "probability":  # the model's output when it ends in a softmax, else the softmax of its logits
        c = rng.randrange(case.classes)
        score = (lambda y: y[:, c]) if case.softmax else (lambda y: torch.softmax(y, 1)[:, c])
        return Goal(ClassProbability(c), None, score, None, f"probability {c}")
    if kind == "unit":
        layers = [name for name in layers if len(tr.shapes[name]) == 4] or layers
    layer = rng.choice(layers)
    shape = tr.shapes[layer]
    channel = rng.randrange(shape[1])
    if kind == "unit" and len(shape) == 4:
        row, col = rng.randrange(shape[2]), rng.randrange(shape[3])
        return Goal(ChannelActivation(layer, channel, position=(row, col)), layer,
                    lambda a: a[:, channel, row, col], (channel, row, col), f"{layer}[{channel}, {row}, {col}]")
    reduce = rng.choice(["mean", "sum", "max"])
    reducer = {"mean": lambda v: v.reshape(len(v), -1).mean(dim=1), "sum": lambda v: v.reshape(len(v), -1).sum(dim=1),
               "max": lambda v: v.reshape(len(v), -1).amax(dim=1)}[reduce]
    score = lambda a: reducer(a[:, channel])  # noqa: E731
    return Goal(ChannelActivation(layer, channel, reduce=reduce), layer, score, score,
                f"{reduce} of {layer}[{channel}]")


def relu_warnings(caught: list[warnings.WarningMessage]) -> set[type]:
    return {w.category for w in caught if issubclass(w.category, RELU_WARNINGS)}


def unexpected(caught: list[warnings.WarningMessage], allowed: tuple[type, ...]) -> list[str]:
    return [f"{w.category.__name__}: {w.message}" for w in caught if not issubclass(w.category, allowed)]


# ---------------------------------------------------------------------------- input attributions

GRADIENT_SEEDS = range(36)


@pytest.mark.parametrize("seed", GRADIENT_SEEDS)
def test_input_attributions_equal_captum(seed):
    case = build_case(seed)
    rng = random.Random(1000 + seed)
    ref = reference_copy(case.model)
    tr = trace(ref, case.x)
    layers = [name for name, shape in tr.shapes.items() if len(shape) == 4 or (len(shape) == 2 and name != "fc")]
    captum_ok = not back_to_back_relus(ref, tr)
    before, flags = UserModelSnapshot.take(case.model), inplace_flags(case.model)
    with Probe(case.model, channels_last=False) as probe:
        for _ in range(3):
            goal = draw_goal(rng, case, tr, layers)
            what = f"{case.text}; target {goal.text}"
            references = {rule: per_image(case, goal, lambda x, g: rule_attribution(rule, case.model, x, g))
                          for rule in ("gradient", "guided", "deconvnet")}
            captum = {rule: per_image(case, goal, lambda x, g: captum_attribution(rule, case.model, x, g, tr))
                      for rule in (("gradient", "guided", "deconvnet") if captum_ok else ("gradient",))}
            expected = expected_relu_warning(ref, tr, goal.layer)
            for rule, method in (("gradient", lambda: saliency(probe, case.x, goal.target, absolute=False)),
                                 ("guided", lambda: guided_backprop(probe, case.x, goal.target)),
                                 ("deconvnet", lambda: deconvnet(probe, case.x, goal.target))):
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    ours = method()
                assert_close_to(ours, references[rule], f"{rule}: {what}")
                if rule in captum:
                    assert_close_to(ours, captum[rule], f"Captum {rule}: {what}")
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    assert torch.equal(method(), ours), f"{rule}: a repeated call differs: {what}"
                want = set() if rule == "gradient" or expected is None else {expected}
                assert relu_warnings(caught) == want, f"{rule}: warned {relu_warnings(caught)}: {what}"
                empty = bool((references[rule].flatten(1) == 0).all(dim=1).any())
                assert any(w.category is EmptyMapWarning for w in caught) == empty, f"{rule}: {what}"
                assert not unexpected(caught, (*RELU_WARNINGS, EmptyMapWarning)), what
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", EmptyMapWarning)
                signed = references["gradient"]
                assert_close_to(saliency(probe, case.x, goal.target), signed.abs(), f"|saliency|: {what}")
                assert_close_to(saliency(probe, case.x, goal.target, reduce="max"),
                                signed.abs().amax(dim=1, keepdim=True), f"max |saliency|: {what}")
                if goal.captum is not None and goal.layer is None:
                    absolute = per_image(case, goal, lambda x, g: captum_attr.Saliency(
                        reference_copy(case.model)).attribute(x.clone(), target=g.captum).detach())
                    assert_close_to(saliency(probe, case.x, goal.target), absolute, f"Captum abs: {what}")
    before.assert_unchanged(case.model)
    assert inplace_flags(case.model) == flags


# ---------------------------------------------------------------------------- projections


def projection_oracle(case: Case, tr: Trace, layer: str, channel: int, unit,
                      captum: bool) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """The projection of ``channel`` at ``layer`` for ``unit`` (``"all"``, ``"max"`` or (row, col)):
    by the docstring's formula (the deconvnet rule sent back from ``R = max(a, 0)`` at the kept
    units), by Captum (``max(a, 0)`` times the unit's deconvnet, or the deconvnet of the energy
    ``0.5 * sum max(a, 0)^2`` for the whole map; None unless ``captum``), and the channel's values."""

    def one(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        activation = reference_activation(case.model, x, layer)
        values = activation[:, channel]
        n = x.shape[0]
        seed = torch.zeros_like(activation)
        if values.dim() == 1:  # a (C,) layer: its one unit
            seed[:, channel] = values.clamp(min=0)
            score = lambda a: a[:, channel]  # noqa: E731
            goal = Goal(None, layer, score, (channel,) if tr.calls[layer] == 1 else None)
            weight = values.clamp(min=0)
        elif unit == "all":
            seed[:, channel] = values.clamp(min=0)
            energy = lambda a: 0.5 * (a[:, channel].clamp(min=0) ** 2).sum(dim=(1, 2))  # noqa: E731
            goal, weight = Goal(None, layer, energy, energy), None
        else:
            if unit == "max":
                flat = torch.from_numpy(values.flatten(1).numpy().argmax(axis=1))  # numpy: the first maximum
                rows, cols = flat // values.shape[2], flat % values.shape[2]
            else:
                rows, cols = torch.full((n,), unit[0]), torch.full((n,), unit[1])
            batch = torch.arange(n)
            seed[batch, channel, rows, cols] = values[batch, rows, cols].clamp(min=0)
            score = lambda a: a[batch, channel, rows, cols]  # noqa: E731
            goal = Goal(None, layer, score, score)
            weight = values[batch, rows, cols].clamp(min=0)
        by_formula = rule_attribution("deconvnet", case.model, x, goal, seed=seed)
        by_captum = None
        if captum:
            by_captum = captum_attribution("deconvnet", case.model, x, goal, tr)
            if weight is not None:
                by_captum = weight[:, None, None, None] * by_captum
        return by_formula, by_captum, values

    if not case.batch_dependent:
        return one(case.x)
    parts = [one(case.x[i:i + 1]) for i in range(case.x.shape[0])]
    return (torch.cat([p[0] for p in parts]), None if parts[0][1] is None else torch.cat([p[1] for p in parts]),
            torch.cat([p[2] for p in parts]))


def reference_activation(model: nn.Module, x: torch.Tensor, layer: str) -> torch.Tensor:
    """``layer``'s output of its last call, from a plain forward of an eval copy."""
    ref = reference_copy(model)
    seen = []
    dict(ref.named_modules())[layer].register_forward_hook(lambda m, a, out: seen.append(out.detach().clone()))
    with torch.no_grad():
        ref(x)
    return seen[-1]


PROJECTION_SEEDS = range(100, 130)


@pytest.mark.parametrize("seed", PROJECTION_SEEDS)
def test_projections_and_strongest_units_equal_the_oracles(seed):
    case = build_case(seed)
    rng = random.Random(2000 + seed)
    ref = reference_copy(case.model)
    tr = trace(ref, case.x)
    spatial = [name for name, shape in tr.shapes.items() if len(shape) == 4]
    vectors = [name for name, shape in tr.shapes.items() if len(shape) == 2 and name not in ("fc", "head.fc")]
    captum_ok = not back_to_back_relus(ref, tr)
    before, flags = UserModelSnapshot.take(case.model), inplace_flags(case.model)
    with Probe(case.model, channels_last=False) as probe:
        for _ in range(3):
            layer = rng.choice(spatial + vectors[:1])
            shape = tr.shapes[layer]
            channel = rng.randrange(shape[1])
            unit = rng.choice(["max", "all", "pair"])
            if unit == "pair" and len(shape) == 4:
                unit = (rng.randrange(shape[2]), rng.randrange(shape[3]))
            elif unit == "pair":
                unit = "max"
            what = f"{case.text}; project_channel({layer!r}, {channel}, unit={unit})"
            expected, by_captum, values = projection_oracle(case, tr, layer, channel, unit, captum_ok)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                ours = project_channel(probe, case.x, layer, channel, unit=unit)
            assert_close_to(ours, expected, what)
            if by_captum is not None:
                assert_close_to(ours, by_captum, f"Captum: {what}")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                assert torch.equal(project_channel(probe, case.x, layer, channel, unit=unit), ours), what
            want = expected_relu_warning(ref, tr, layer)
            assert relu_warnings(caught) == ({want} if want else set()), f"warned {relu_warnings(caught)}: {what}"
            peaks = values.reshape(len(values), -1).amax(dim=1)
            inactive = bool((peaks <= 0).any())
            if isinstance(unit, tuple):
                inactive |= bool(((values[:, unit[0], unit[1]] <= 0) & (peaks > 0)).any())
            assert any(w.category is InactiveChannelWarning for w in caught) == inactive, what
            assert not unexpected(caught, (*RELU_WARNINGS, InactiveChannelWarning)), what
            if len(shape) == 4:
                units = strongest_unit(probe, case.x, layer, channel)
                flat = values.flatten(1).numpy().argmax(axis=1)
                assert units.tolist() == [[int(f) // shape[3], int(f) % shape[3]] for f in flat], what
    before.assert_unchanged(case.model)
    assert inplace_flags(case.model) == flags


# ---------------------------------------------------------------------------- CAM family


def autograd_layer_gradient(model: nn.Module, x: torch.Tensor, goal: Goal, layer: str):
    """(A, dy/dA) at ``layer``'s last call by plain autograd on an eval copy; dA None when the score
    does not depend on the layer."""
    ref = reference_copy(model)
    modules = dict(ref.named_modules())
    seen: dict[str, torch.Tensor] = {}
    modules[layer].register_forward_hook(lambda m, a, out: seen.__setitem__("A", out))
    if goal.layer is not None:
        modules[goal.layer].register_forward_hook(lambda m, a, out: seen.__setitem__("T", out))
    with torch.enable_grad():
        y = ref(x.clone())
        scores = goal.score(y if goal.layer is None else seen["T"])
        (grad,) = torch.autograd.grad(scores.sum(), seen["A"], allow_unused=True)
    return seen["A"].detach(), None if grad is None else grad.detach()


def grad_cam_by_hand(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    return torch.relu((g.mean(dim=(2, 3), keepdim=True) * a).sum(dim=1))


def grad_cam_pp_by_hand(a: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """The docstring's Grad-CAM++ (eps 0), and whether a denominator is <= 0 where it counts."""
    denominator = 2 * g**2 + a.sum(dim=(2, 3), keepdim=True) * g**3
    usable = (g != 0) & (denominator != 0)
    alpha = torch.where(usable, g**2 / torch.where(usable, denominator, 1.0), 0.0)
    weights = (alpha * g.clamp(min=0)).sum(dim=(2, 3), keepdim=True)
    flipped = bool((usable & (g > 0) & (denominator <= 0)).any())
    return torch.relu((weights * a).sum(dim=1)), flipped


def like_pytorch_grad_cam(raw: torch.Tensor, size) -> np.ndarray:
    """Our raw maps in pytorch-grad-cam's convention: min-max scaled, resized, scaled again."""

    def rescale(maps: torch.Tensor) -> torch.Tensor:
        maps = maps - maps.amin(dim=(1, 2), keepdim=True)
        return maps / (maps.amax(dim=(1, 2), keepdim=True) + 1e-7)

    return rescale(upsample(rescale(raw.clamp(min=0)), size)).cpu().numpy()


CAM_SEEDS = range(200, 240)


@pytest.mark.parametrize("seed", CAM_SEEDS)
def test_cam_family_equals_autograd_captum_and_pytorch_grad_cam(seed):
    case = build_case(seed, gap=seed % 3 != 0)
    rng = random.Random(3000 + seed)
    ref = reference_copy(case.model)
    tr = trace(ref, case.x)
    maps = spatial_layers(case, tr)
    order = {name: tr.ends[name] for name in tr.shapes}
    before, flags = UserModelSnapshot.take(case.model), inplace_flags(case.model)
    with Probe(case.model, channels_last=False) as probe:
        for _ in range(3):
            layer = rng.choice(maps)
            # a target on the output, or on a layer whose last call ends after this one's (a layer
            # that runs twice only with targets on the output: a prefix ending between its calls
            # sees only its first call)
            later = [name for name in spatial_layers(case, tr) if order[name] > order[layer]]
            goal = draw_goal(rng, case, tr, later if tr.calls[layer] == 1 else [])
            what = f"{case.text}; layer {layer!r}, target {goal.text}"
            a, g = per_image(case, goal, lambda x, one: autograd_layer_gradient(case.model, x, one, layer))
            if g is None:
                with pytest.raises(ValueError, match="does not depend on layer"):
                    layer_gradient(probe, case.x, goal.target, layer)
                continue
            ours_a, ours_g = layer_gradient(probe, case.x, goal.target, layer)
            assert_close_to(ours_a, a, f"layer_gradient A: {what}")
            assert_close_to(ours_g, g, f"layer_gradient dA: {what}")
            expected = grad_cam_by_hand(a, g)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                ours = grad_cam(probe, case.x, goal.target, layer)
            assert_close_to(ours, expected, f"grad_cam: {what}", rel=1e-4)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", EmptyMapWarning)
                assert torch.equal(grad_cam(probe, case.x, goal.target, layer), ours), what
            empty = bool((expected.flatten(1) == 0).all(dim=1).any())
            assert any(w.category is EmptyMapWarning for w in caught) == empty, what
            assert not unexpected(caught, (EmptyMapWarning,)), what
            expected_pp, flipped = grad_cam_pp_by_hand(a, g)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                ours_pp = grad_cam_pp(probe, case.x, goal.target, layer)
            signed = [w for w in caught if w.category is RuntimeWarning and "signed" in str(w.message)]
            assert bool(signed) == flipped, what
            if not flipped:
                assert_close_to(ours_pp, expected_pp, f"grad_cam_pp: {what}", rel=1e-3)
            if goal.layer is None and goal.captum is not None and tr.calls[layer] == 1 and not case.batch_dependent:
                clone = reference_copy(case.model)
                captum = captum_attr.LayerGradCam(clone, dict(clone.named_modules())[layer]).attribute(
                    case.x.clone(), target=goal.captum, relu_attributions=True)
                assert_close_to(ours, captum.detach()[:, 0], f"Captum LayerGradCam: {what}", rel=1e-4)
                classes = [goal.captum] * len(case.x) if isinstance(goal.captum, int) else goal.captum
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", EmptyMapWarning)
                    warnings.filterwarnings("ignore", "grad_cam_pp: the layer's activations are signed", RuntimeWarning)
                    ours_pp_lib = grad_cam_pp(probe, case.x, goal.target, layer, eps=1e-6)
                for kind, raw in ((gradcam_lib.GradCAM, ours), (gradcam_lib.GradCAMPlusPlus, ours_pp_lib)):
                    clone = reference_copy(case.model)
                    library = kind(clone, [dict(clone.named_modules())[layer]])(
                        case.x.clone(), targets=[ClassifierOutputTarget(c) for c in classes])
                    mine = like_pytorch_grad_cam(raw, case.x.shape[-2:])
                    # images whose map is constant scale to zero: nothing to compare there
                    informative = (raw.flatten(1).amax(1) - raw.flatten(1).amin(1)) > 1e-3 * raw.abs().max()
                    if kind is gradcam_lib.GradCAMPlusPlus and flipped:
                        continue
                    for i in informative.nonzero().flatten().tolist():
                        np.testing.assert_allclose(mine[i], library[i], atol=2e-4, err_msg=what)
        check_cam(case, probe, rng, tr)
    before.assert_unchanged(case.model)
    assert inplace_flags(case.model) == flags


def check_cam(case: Case, probe: Probe, rng: random.Random, tr: Trace) -> None:
    """CAM is ``sum_k W[c, k] A_k`` of the maps the head averages; undefined without a GAP head."""
    n = case.x.shape[0]
    target = rng.choice([rng.randrange(case.classes), [rng.randrange(case.classes) for _ in range(n)]])
    if not case.gap:
        with pytest.raises(ValueError):
            cam(probe, case.x, target)
        return
    classes = [target] * n if isinstance(target, int) else target
    ref = reference_copy(case.model)
    seen = []
    pooled = dict(ref.named_modules())[case.pooled]
    pooled.register_forward_hook(lambda m, a, out: seen.append(out.detach().clone()))
    with torch.no_grad():
        for i in range(n):
            ref(case.x[i:i + 1])
    features = torch.cat([seen[j] for j in range(len(seen)) if (j + 1) % tr.calls[case.pooled] == 0])
    fc = ref.head["fc"] if isinstance(ref, CustomNet) else ref.fc
    expected = torch.einsum("nk,nkhw->nhw", fc.weight.detach()[classes], features)
    what = f"{case.text}; cam target {target}"
    if n == 1 and isinstance(target, list):
        target = target[0]
    ours = cam(probe, case.x, target)
    assert_close_to(ours, expected, f"cam: {what}")
    assert_close_to(cam(probe, case.x, target, layer=case.pooled, fc="head.fc" if isinstance(ref, CustomNet) else "fc"),
                    expected, f"cam at {case.pooled}: {what}")


# ---------------------------------------------------------------------------- upsample


def bilinear_by_the_docstring(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Output pixel i samples the input at (i + 0.5) * h / H - 0.5, clamped at the borders."""

    def weights(n_in: int, n_out: int) -> np.ndarray:
        matrix = np.zeros((n_out, n_in))
        for i in range(n_out):
            at = min(max((i + 0.5) * n_in / n_out - 0.5, 0.0), n_in - 1)
            low = int(np.floor(at))
            high = min(low + 1, n_in - 1)
            matrix[i, low] += 1 - (at - low)
            matrix[i, high] += at - low
        return matrix

    rows, cols = weights(maps.shape[1], size[0]), weights(maps.shape[2], size[1])
    return np.einsum("ih,nhw,jw->nij", rows, maps, cols)


@pytest.mark.parametrize("seed", range(6))
def test_upsample_equals_the_documented_sampling_and_cv2(seed):
    rng = random.Random(4000 + seed)
    n, h, w = rng.randint(1, 3), rng.randint(1, 9), rng.randint(1, 9)
    maps = torch.randn(n, h, w, generator=torch.Generator().manual_seed(seed))
    for size in ((rng.randint(h, 40), rng.randint(w, 40)), (rng.randint(1, 40), rng.randint(1, 40))):
        ours = upsample(maps, size)
        assert ours.shape == (n, *size)
        np.testing.assert_allclose(ours.numpy(), bilinear_by_the_docstring(maps.double().numpy(), size),
                                   rtol=1e-5, atol=1e-5, err_msg=f"{tuple(maps.shape)} -> {size}")
        if size[0] >= h and size[1] >= w:  # cv2 samples the same way when it enlarges
            for i in range(n):
                expected = cv2.resize(maps[i].numpy(), (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
                np.testing.assert_allclose(ours[i].numpy(), expected.reshape(size), rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------- regressions: bugs the fuzz found


def test_a_target_beside_the_layer_is_refused_as_one_that_does_not_depend_on_it():
    # was: RuntimeError "layer_gradient: the target's score does not depend on the input (... does the target
    # detach the output or return a constant ...)", blaming the target for a layer in the other branch
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), Branches(random.Random(0), 4, 2, 3),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 3)).eval()
    x = torch.randn(2, 3, 10, 12)
    beside = ChannelActivation("1.b.1", 0)  # branch b's convolution ends after branch a's
    for call in (layer_gradient, grad_cam, grad_cam_pp):
        with pytest.raises(ValueError, match=r"the target's score does not depend on layer '1\.a\.0'"):
            call(model, x, beside, "1.a.0")
    # the same target at a layer it depends on, and a detaching target, are told apart
    assert layer_gradient(model, x, beside, "1.b.0")[1].abs().max() > 0
    with pytest.raises(RuntimeError, match="^layer_gradient: the target's score does not depend on the input"):
        layer_gradient(model, x, _Detached(), "1.a.0")


class _Detached:
    """A target cut off from the graph."""

    layer = None

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        return output.detach()[:, 0]


def test_a_class_per_image_on_a_model_with_batch_statistics_gets_each_images_map():
    # was: ValueError "ClassLogits: 3 class indices (one per image) for a batch of 1 images" from layer_gradient,
    # grad_cam and grad_cam_pp, which explain such a batch image by image with the whole batch's classes
    model = batch_statistics_net()
    x = torch.randn(3, 3, 9, 11, generator=torch.Generator().manual_seed(1))
    classes = [2, 0, 1]
    with Probe(model) as probe:
        assert probe.batch_dependent
        for call in (grad_cam, grad_cam_pp):
            alone = torch.cat([call(probe, x[i:i + 1], c, "0") for i, c in enumerate(classes)])
            torch.testing.assert_close(call(probe, x, classes, "0"), alone)
            assert alone.abs().max() > 0
        a, g = layer_gradient(probe, x, classes, "0")
        for i, c in enumerate(classes):
            torch.testing.assert_close(g[i:i + 1], layer_gradient(probe, x[i:i + 1], c, "0")[1])
        with pytest.raises(ValueError, match=r"2 class indices \(one per image\) for a batch of 3 images"):
            grad_cam(probe, x, classes[:2], "0")
