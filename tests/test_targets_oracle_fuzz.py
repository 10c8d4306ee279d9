"""Seeded oracle fuzz of the targets: are the scores they give the documented numbers?

What is driven:

* :func:`target_score` (with a :class:`Probe`), :func:`call_target` (with and without a probe),
  :func:`saliency` (signed gradients) and :func:`occlusion_map` (the unoccluded score, and the
  score of the image occluded as a whole) on random small CNNs built from a fixed seed: a
  convolution stack (batch norm, ReLU, max pool, dropout) and one of these heads: plain logits
  (several classes or one output unit), a final ``nn.Softmax`` (over ``dim=1`` or ``dim=-1``) or
  ``nn.Sigmoid`` module, a functional softmax, a ``log_softmax``, a 1 x 1 convolution with a
  global average pool giving (N, classes, 1, 1) (also followed by an ``nn.Softmax``); the output
  returned as a tensor, a dict with a ``'logits'`` entry (beside features), a dict with an
  ``'out'`` entry, a dict with one tensor, an object with a ``logits`` attribute, a named tuple
  with a ``logits`` field (a plain tuple, refused for targets on the output, read for targets on
  a layer); models in float32 or float64, left in training mode or in eval mode, probed
  channels-last or not.
* Each case draws a batch of 1 to 3 images and targets: a class index (a Python int, a numpy
  integer, a 0-d tensor), :class:`ClassLogit`, a class per image (:class:`ClassLogits`, or given
  as a list, a tuple, a tensor or an array of indices, or a list of 0-d tensors),
  :class:`ClassProbability` with each ``outputs`` mode, :class:`ClassLogit` and
  :class:`ClassProbability` read at a layer, :class:`ChannelActivation` of a random layer (maps,
  vectors, the final activation) and channel with each reduction or at one position, a function
  of the output, and :class:`TopClassProbability`.
* :func:`class_probabilities` and :func:`looks_like_independent_probabilities` on outputs built
  at and around the boundaries of the ``"auto"`` rules: rows summing to 1 within exactly the
  documented tolerance ``max(1e-4, 4 * eps)`` and the nearest values of the dtype on either side
  (float16, bfloat16, float32, float64), values at 0 and 1 and the nearest ones outside, NaN and
  inf, one row of several off, a single unit, and ``final_activation``.

The oracles (computed here, independently of the code under test), on an eval-mode
``copy.deepcopy`` of the model in plain PyTorch, with forward hooks reading the inner layers:

* a class logit is ``y[:, k]`` of the output (read out of its container, (N, K, 1, 1) as (N, K));
  for a model ending in a softmax or sigmoid module fed by one layer's (K,) or (K, 1, 1) output
  (a linear layer, a convolutional head's global pool), the input of that module (the logits);
  a class per image picks ``y[n, k_n]``;
* a class probability follows the docstring of :func:`class_probabilities`, written here: the
  softmax of the output (the sigmoid for one unit), the sigmoid of every unit, the output as it
  is (refused outside [0, 1]), and for ``"auto"`` the output as it is for a final softmax or
  sigmoid module the probe reports, else where every row is a distribution (within the
  tolerance, summed in float64), else as logits; without a probe the final module is unknown;
* a channel target is the layer's output (at the module's call) at one unit, or its mean, sum or
  maximum over the map;
* a function of the output is computed here on the output as it is (after a final module too);
* the most probable class's probability is the maximum of the ``"auto"`` probabilities;
* saliency's signed gradient is autograd's gradient of the oracle score with respect to the batch.

Every random case comes from a fixed seed. Tests marked ``# was:`` pin bugs this fuzzing found.
"""

from __future__ import annotations

import copy
import math
import random
import warnings
from collections import namedtuple

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnwidgets import ChannelActivation, ClassLogit, ClassProbability, Probe
from cnnwidgets.core.targets import (
    ClassLogits,
    OutputScore,
    OutputTypeError,
    call_target,
    class_probabilities,
    looks_like_independent_probabilities,
    output_tensor,
    resolve_target,
    target_score,
)
from cnnwidgets.methods import TopClassProbability, occlusion_map, saliency

SEEDS = range(40)

# a channel that stays 0 under the whole-image occluder draws a blank map, with its warning
pytestmark = pytest.mark.filterwarnings("ignore::cnnwidgets.methods.occlusion.NoOcclusionEffectWarning")

HEADS = ("logits", "single", "softmax", "softmax_last_dim", "sigmoid", "functional_softmax", "log_softmax",
         "conv", "conv_softmax")
WRAPS = ("tensor", "tensor", "logits_dict", "out_dict", "only_dict", "object", "namedtuple", "tuple")

Pair = namedtuple("Pair", ["features", "logits"])


class Output:
    """An output object with a ``logits`` attribute, as output dataclasses have."""

    def __init__(self, logits: torch.Tensor, hidden: torch.Tensor) -> None:
        self.logits = logits
        self.hidden = hidden


class FuzzNet(nn.Module):
    def __init__(self, rng: random.Random, head: str, wrap: str, classes: int, in_ch: int) -> None:
        super().__init__()
        c1, c2 = rng.randint(2, 5), rng.randint(2, 6)
        layers: list[nn.Module] = [nn.Conv2d(in_ch, c1, 3, padding=rng.choice([0, 1]))]
        if rng.random() < 0.5:
            bn = nn.BatchNorm2d(c1)
            with torch.no_grad():
                bn.running_mean.copy_(torch.randn(c1) * 0.3)
                bn.running_var.copy_(torch.rand(c1) + 0.5)
                bn.weight.copy_(torch.randn(c1))
            layers.append(bn)
        layers.append(nn.ReLU())
        if rng.random() < 0.5:
            layers.append(nn.MaxPool2d(2))
        layers += [nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.head_kind, self.wrap = head, wrap
        self.scale = rng.choice([1.0, 3.0])
        if head in ("conv", "conv_softmax"):
            self.head = nn.Conv2d(c2, classes, 1)
            self.pool = nn.AdaptiveAvgPool2d(1)
        else:
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.drop = nn.Dropout(0.5)
            self.fc = nn.Linear(c2, classes)
        with torch.no_grad():
            for p in self.parameters():
                p.mul_(self.scale)
        if head in ("softmax", "conv_softmax"):
            self.act = nn.Softmax(dim=1)
        elif head == "softmax_last_dim":
            self.act = nn.Softmax(dim=-1)
        elif head == "sigmoid":
            self.act = nn.Sigmoid()

    def forward(self, x: torch.Tensor):
        f = self.features(x)
        if self.head_kind in ("conv", "conv_softmax"):
            y = self.pool(self.head(f))
        else:
            y = self.fc(self.drop(self.pool(f).flatten(1)))
        if hasattr(self, "act"):
            y = self.act(y)
        elif self.head_kind == "functional_softmax":
            y = torch.softmax(y, dim=1)
        elif self.head_kind == "log_softmax":
            y = F.log_softmax(y, dim=1)
        if self.wrap == "logits_dict":
            return {"features": f, "logits": y}
        if self.wrap == "out_dict":
            return {"aux": f.mean(), "out": y}
        if self.wrap == "only_dict":
            return {"scores": y, "note": "not a tensor"}
        if self.wrap == "object":
            return Output(y, f)
        if self.wrap == "namedtuple":
            return Pair(f, y)
        if self.wrap == "tuple":
            return f, y
        return y


def draw_model(rng: random.Random) -> FuzzNet:
    head = rng.choice(HEADS)
    classes = 1 if head == "single" else rng.randint(2, 5) if head != "sigmoid" else rng.randint(1, 4)
    model = FuzzNet(rng, head, rng.choice(WRAPS), classes, rng.choice([1, 3]))
    model.train(rng.random() < 0.4)
    return model.double() if rng.random() < 0.2 else model


# ---------------------------------------------------------------------------- the oracles


def read_output(model: FuzzNet, output) -> torch.Tensor:
    """The tensor targets see, read here from what the test knows the model returns."""
    return {
        "tensor": lambda o: o, "logits_dict": lambda o: o["logits"], "out_dict": lambda o: o["out"],
        "only_dict": lambda o: o["scores"], "object": lambda o: o.logits, "namedtuple": lambda o: o.logits,
        "tuple": lambda o: o[1],  # for the test only: the targets refuse a plain tuple
    }[model.wrap](output)


def tolerance_of(dtype: torch.dtype) -> float:
    return max(1e-4, 4 * torch.finfo(dtype).eps)


def is_distribution(scores: torch.Tensor) -> bool:
    """Every row in [0, 1], finite, summing to 1 within the documented tolerance (in float64)."""
    values = scores.detach().double()
    if not bool(torch.isfinite(values).all()) or bool(((values < 0) | (values > 1)).any()):
        return False
    return all(abs(float(row.sum()) - 1) <= tolerance_of(scores.dtype) for row in values)


def probabilities(y: torch.Tensor, outputs: str, final_activation: str | None) -> torch.Tensor | None:
    """The documented class probabilities of the (N, K) scores ``y``; None where they are refused."""
    if outputs == "auto":
        if final_activation is not None or (y.shape[1] > 1 and is_distribution(y)):
            return y
        outputs = "logits"
    if outputs == "probabilities":
        return None if bool(((y < 0) | (y > 1)).any()) else y
    if outputs == "multilabel_logits" or y.shape[1] == 1:
        return torch.sigmoid(y)
    return torch.softmax(y, dim=1)


def expected_final_activation(model: FuzzNet) -> str | None:
    if model.wrap == "tuple":
        return None  # the output is not read, so nor is the module that made it
    return {"softmax": "softmax", "softmax_last_dim": "softmax", "conv_softmax": "softmax",
            "sigmoid": "sigmoid"}.get(model.head_kind)


class Oracle:
    """Scores computed on an eval-mode deep copy of the model, with hooks on its modules."""

    def __init__(self, model: FuzzNet) -> None:
        self.model = model
        self.copy = copy.deepcopy(model).eval()
        self.seen: dict[str, torch.Tensor] = {}
        self.act_input: torch.Tensor | None = None
        for name, module in self.copy.named_modules():
            if name:
                module.register_forward_hook(self._hook(name))

    def _hook(self, name):
        def hook(module, args, output):
            if isinstance(output, torch.Tensor):
                self.seen[name] = output.clone()  # the last call's output
            if name == "act":
                self.act_input = args[0]
        return hook

    def run(self, x: torch.Tensor) -> torch.Tensor:
        """The output tensor (N, K) (a (N, K, 1, 1) output reshaped), keeping the graph."""
        y = read_output(self.model, self.copy(x))
        return y.reshape(y.shape[0], y.shape[1])

    def score(self, x: torch.Tensor, target, *, with_probe: bool = True) -> torch.Tensor | None:
        """The documented score of ``target``; None where it must be refused."""
        y = self.run(x)
        if isinstance(target, ChannelActivation):
            if target.channel >= self.seen[target.layer].shape[1]:
                return None
            values = self.seen[target.layer][:, target.channel]
            if target.position is not None:
                return values[:, target.position[0], target.position[1]]
            flat = values.reshape(values.shape[0], -1)
            return {"mean": flat.mean(1), "sum": flat.sum(1), "max": flat.amax(1)}[target.reduce]
        if target.layer is not None:  # a class target read at a layer: those scores, final module unknown
            layer = self.seen[target.layer]
            if any(size != 1 for size in layer.shape[2:]):
                return None  # a feature map, not class scores
            y, final = layer.reshape(layer.shape[0], layer.shape[1]), None
        else:
            final = expected_final_activation(self.model) if with_probe else None
        if isinstance(target, (ClassLogit, ClassLogits)):
            logits = y
            if with_probe and final is not None and target.layer is None:
                # fed by the linear layer or the conv head's pool: the logits
                logits = self.act_input.reshape(len(x), -1)
            if isinstance(target, ClassLogit):
                return None if target.index >= y.shape[1] else logits[:, target.index]
            if max(target.indices) >= y.shape[1]:
                return None
            return logits[torch.arange(len(x)), torch.tensor(target.indices)]
        if isinstance(target, ClassProbability):
            if target.index >= y.shape[1]:
                return None
            p = probabilities(y, target.outputs, final)
            return None if p is None else p[:, target.index]
        if isinstance(target, OutputScore):  # the output as it is, also after a final module
            return 2 * y[:, target.fn.a] - y[:, target.fn.b]
        if isinstance(target, TopClassProbability):
            return None if y.shape[1] == 1 else probabilities(y, "auto", final).amax(1)
        raise AssertionError(target)


class Contrast:
    """A function of the model's output: twice class ``a``'s score less class ``b``'s (no ``layer``)."""

    def __init__(self, a: int, b: int) -> None:
        self.a, self.b = a, b

    def __call__(self, y: torch.Tensor) -> torch.Tensor:
        flat = y.flatten(1)
        return 2 * flat[:, self.a] - flat[:, self.b]


def draw_target(rng: random.Random, model: FuzzNet, oracle: Oracle, x: torch.Tensor):
    classes = oracle.run(x).shape[1]
    kind = rng.choice(["int", "logit", "logits", "probability", "probability", "channel", "channel", "top",
                       "layer_class", "function"])
    k = rng.randrange(classes + (1 if rng.random() < 0.15 else 0))  # sometimes one past the last class
    if kind == "int":
        return rng.choice([int, np.int64, torch.tensor])(k)
    if kind == "logit":
        return ClassLogit(k)
    if kind == "logits":
        if len(x) == 1:
            return ClassLogits([k])
        indices = [rng.randrange(classes) for _ in range(len(x))]
        form = rng.choice([list, tuple, torch.tensor, np.array, lambda v: list(torch.tensor(v)),
                           lambda v: [np.int64(v[0]), torch.tensor(v[1]), *v[2:]]])
        return form(indices)
    if kind == "probability":
        return ClassProbability(k, outputs=rng.choice(["auto", "auto", "logits", "multilabel_logits", "probabilities"]))
    if kind == "top":
        return TopClassProbability()
    if kind == "function":
        return Contrast(rng.randrange(classes), rng.randrange(classes))
    if kind == "layer_class":
        layer = "head" if hasattr(model, "head") else "fc"
        if layer == "head" or rng.random() < 0.5:
            return ClassLogit(k, layer=layer) if layer == "fc" or rng.random() < 0.5 else ClassProbability(k, layer=layer)
        return ClassProbability(k, layer=layer, outputs=rng.choice(["auto", "logits", "multilabel_logits"]))
    name = rng.choice(["features.0", f"features.{len(model.features) - 1}", "pool"] +
                      (["head"] if hasattr(model, "head") else ["drop", "fc"]) + (["act"] if hasattr(model, "act") else []))
    activation = oracle.seen[name]
    channel = rng.randrange(activation.shape[1])
    if activation.dim() == 4 and rng.random() < 0.4:
        position = (rng.randrange(activation.shape[2]), rng.randrange(activation.shape[3]))
        return ChannelActivation(name, channel, position=position)
    return ChannelActivation(name, channel, reduce=rng.choice(["mean", "sum", "max"]))


def close(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    torch.testing.assert_close(actual.detach().float(), expected.detach().float(), rtol=1e-4, atol=1e-5, msg=what)


# ---------------------------------------------------------------------------- the fuzz


@pytest.mark.parametrize("seed", SEEDS)
def test_target_scores_equal_the_documented_numbers(seed):
    rng = random.Random(seed)
    torch.manual_seed(seed)
    model = draw_model(rng)
    in_ch = model.features[0].in_channels
    n = rng.randint(1, 3)
    dtype = model.features[0].weight.dtype
    x = torch.randn(n, in_ch, rng.randint(8, 12), rng.randint(8, 12), dtype=dtype)
    oracle = Oracle(model)
    oracle.run(x)
    training = model.training
    with Probe(model, channels_last=rng.choice([True, False, "auto"])) as probe:
        assert probe.output_activation == expected_final_activation(model)
        if expected_final_activation(model) is not None:
            assert probe.scores_layer == ("pool" if model.head_kind == "conv_softmax" else "fc")
        for _ in range(4):
            target = draw_target(rng, model, oracle, x)
            resolved = resolve_target(target)
            with torch.no_grad():
                expected = oracle.score(x, resolved)
            if expected is None:
                with pytest.raises((IndexError, ValueError)):
                    target_score(probe, x, target)
                continue
            what = f"seed {seed}, head {model.head_kind}/{model.wrap}, target {resolved}"
            if model.wrap == "tuple" and resolved.layer is None:  # which value is the output is not guessed
                with pytest.raises(OutputTypeError, match="the model returned a tuple with 2 values"):
                    target_score(probe, x, target)
                continue
            close(target_score(probe, x, target), expected, what)
            # call_target on the output or the layer's output, as the methods call it
            if resolved.layer is None:
                output = output_tensor(probe.logits(x))
                with torch.no_grad():
                    plain = oracle.score(x, resolved, with_probe=False)
                if plain is None:
                    with pytest.raises((IndexError, ValueError)):
                        call_target(resolved, output)
                else:
                    close(call_target(resolved, output), plain, what + " (no probe)")
                if not isinstance(resolved, (ClassLogit, ClassLogits)):
                    close(call_target(resolved, output, probe=probe), expected, what + " (call_target)")
            # saliency: the signed gradient of the same score
            xg = x.clone().requires_grad_(True)
            score = oracle.score(xg, resolved)
            if score.requires_grad:
                (gradient,) = torch.autograd.grad(score.sum(), xg)
                if bool(gradient.abs().amax() > 0):
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        got = saliency(probe, x, target, absolute=False)
                    torch.testing.assert_close(got, gradient.float(), rtol=1e-3, atol=1e-6, msg=what + " (saliency)")
            # occlusion: one window covering the whole first image
            if n == 1 or not isinstance(resolved, ClassLogits):
                one = resolved if n == 1 else target
                with torch.no_grad():
                    unoccluded = oracle.score(x[:1], resolve_target(one))
                    filled = oracle.score(torch.zeros_like(x[:1]), resolve_target(one))
                if filled is None:  # the occluded image's output is refused
                    with pytest.raises(ValueError):
                        occlusion_map(probe, x[:1], one, window=tuple(x.shape[2:]), stride=1, progress=False)
                    continue
                result = occlusion_map(probe, x[:1], one, window=tuple(x.shape[2:]), stride=1, progress=False)
                assert math.isclose(result.unoccluded, float(unoccluded[0]), rel_tol=1e-4, abs_tol=1e-5), what
                assert math.isclose(float(result.grid[0, 0]), float(filled[0]), rel_tol=1e-4, abs_tol=1e-5), what
    assert model.training == training


# ---------------------------------------------------------------------------- the "auto" rules


def steps(value: torch.Tensor, count: int) -> torch.Tensor:
    """``value`` (a positive 0-d tensor) moved by ``count`` representable values of its dtype."""
    bits = {torch.float16: torch.int16, torch.bfloat16: torch.int16, torch.float32: torch.int32,
            torch.float64: torch.int64}[value.dtype]
    return (value.reshape(1).view(bits) + count).view(value.dtype)[0]


def around(center: float, dtype: torch.dtype) -> list[torch.Tensor]:
    """The values of ``dtype`` nearest ``center``: two below, the nearest, two above."""
    nearest = torch.tensor(center, dtype=torch.float64).to(dtype)
    return [steps(nearest, d) for d in (-2, -1, 0, 1, 2)]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("side", [1, -1])
def test_auto_reads_rows_summing_to_one_within_the_documented_tolerance(dtype, side):
    tolerance = tolerance_of(dtype)
    half = torch.tensor(0.5, dtype=dtype)
    for second in around(0.5 + side * tolerance, dtype):
        row = torch.stack([half, second])
        distance = abs(0.5 + float(second) - 1)  # the row's sum in float64, minus 1
        y = torch.stack([row, torch.tensor([0.25, 0.75], dtype=dtype)])
        got = class_probabilities(y)
        if distance <= tolerance:
            assert torch.equal(got, y), (dtype, float(second))
        else:
            torch.testing.assert_close(got, torch.softmax(y, dim=1), msg=str((dtype, float(second))))
        # the same row with a third class of 0 reads the same
        three = torch.cat([y, torch.zeros(2, 1, dtype=dtype)], dim=1)
        assert torch.equal(class_probabilities(three), three) == (distance <= tolerance)
        # with final_activation the output is taken as it is, whatever it sums to
        for final in ("softmax", "sigmoid"):
            assert torch.equal(class_probabilities(y, final_activation=final), y)
        if distance <= tolerance:  # every row a distribution: not independent probabilities
            assert not looks_like_independent_probabilities(y)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_auto_needs_every_value_in_the_unit_interval(dtype):
    one, zero = torch.tensor(1.0, dtype=dtype), torch.tensor(0.0, dtype=dtype)
    exact = torch.stack([one, zero])[None]
    assert torch.equal(class_probabilities(exact), exact)
    assert torch.equal(class_probabilities(exact, outputs="probabilities"), exact)
    above = torch.stack([steps(one, 1), zero])[None]  # sums to 1 within the tolerance, but > 1
    torch.testing.assert_close(class_probabilities(above), torch.softmax(above, dim=1))
    with pytest.raises(ValueError, match=r"needs values in \[0, 1\]"):
        class_probabilities(above, outputs="probabilities")
    below = torch.stack([one, -steps(zero, 1)])[None]  # the smallest negative value
    torch.testing.assert_close(class_probabilities(below), torch.softmax(below, dim=1))
    with pytest.raises(ValueError, match=r"needs values in \[0, 1\]"):
        class_probabilities(below, outputs="probabilities")
    negative_zero = torch.tensor([[1.0, -0.0]], dtype=dtype)
    assert torch.equal(class_probabilities(negative_zero), negative_zero)
    for bad in (math.nan, math.inf):
        y = torch.tensor([[0.2, 0.8], [bad, 0.0]], dtype=dtype)
        assert not torch.equal(class_probabilities(y)[0], y[0])  # read as logits: softmax of every row
    # one row of several off: every row is read as logits
    y = torch.tensor([[0.2, 0.8], [0.3, 0.6]], dtype=dtype)
    torch.testing.assert_close(class_probabilities(y), torch.softmax(y, dim=1))


def test_auto_with_a_single_unit_and_independent_probabilities():
    y = torch.tensor([[1.0], [0.0], [0.25]])
    torch.testing.assert_close(class_probabilities(y), torch.sigmoid(y))  # never a distribution
    assert torch.equal(class_probabilities(y, final_activation="sigmoid"), y)
    assert torch.equal(class_probabilities(y, outputs="probabilities"), y)
    assert looks_like_independent_probabilities(torch.tensor([[1.0], [0.25]]))
    assert not looks_like_independent_probabilities(y)  # an exact 0
    sigmoid_like = torch.tensor([[0.9, 0.8, 0.1]])
    assert looks_like_independent_probabilities(sigmoid_like)
    torch.testing.assert_close(class_probabilities(sigmoid_like), torch.softmax(sigmoid_like, dim=1))
    assert not looks_like_independent_probabilities(torch.tensor([[0.5, 1.0 + 1e-6]]))
    assert not looks_like_independent_probabilities(torch.tensor([[0.25, 0.75]]))
    with pytest.raises(ValueError, match="final_activation"):
        class_probabilities(y, final_activation="relu")


# ---------------------------------------------------------------------------- regression tests


def test_a_list_of_0d_tensors_is_a_class_per_image():
    # was: TypeError "unsupported target [tensor(1), tensor(2)]" for list(model(x).argmax(1)), while one
    # such tensor in a list, and the same indices as ints or as ClassLogits, were read as class indices
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()
    x = torch.randn(2, 3, 8, 8)
    labels = [torch.tensor(2), torch.tensor(0)]
    assert resolve_target(labels) == ClassLogits((2, 0))
    assert resolve_target([1, torch.tensor(2)]) == ClassLogits((1, 2))
    with Probe(model) as probe:
        with torch.no_grad():
            expected = model(x)[[0, 1], [2, 0]]
        close(target_score(probe, x, labels), expected, "a list of 0-d tensors")
        xg = x.clone().requires_grad_(True)
        (gradient,) = torch.autograd.grad(model(xg)[[0, 1], [2, 0]].sum(), xg)
        torch.testing.assert_close(saliency(probe, x, labels, absolute=False), gradient)
    with pytest.raises(TypeError, match="unsupported target"):
        resolve_target([torch.tensor(1), torch.tensor(True)])  # a bool is not a class index


def test_an_int_tolerance_beyond_floats_range_is_a_value_error():
    from cnnwidgets.core.targets import as_tolerance

    # was: OverflowError "int too large to convert to float" (the docstring promises TypeError or ValueError)
    for huge in (10**400, -(10**400)):
        with pytest.raises(ValueError, match=r"rtol must be a finite number >= 0, got an int of 401 digits"):
            as_tolerance(huge, "rtol")
    assert as_tolerance(10**300, "rtol") == 1e300


@pytest.mark.parametrize("reduce", ["mean", "sum", "max"])
def test_a_channel_of_an_empty_volume_is_refused_as_an_empty_map(reduce):
    # was: for a (N, C, D, H, W) output with D = 0: a score of 0 ("sum"), a "score is not finite" error
    # blaming the target ("mean") or torch's IndexError from amax ("max"), where an empty (N, C, H, W) map
    # is refused as empty
    target = ChannelActivation("volume", 1, reduce=reduce)
    with pytest.raises(ValueError, match=r"layer 'volume' has an empty feature map \(3, 0, 4, 4\)"):
        call_target(target, torch.ones(2, 3, 0, 4, 4))
    close(call_target(target, torch.ones(2, 3, 2, 4, 4)), torch.full((2,), {"mean": 1.0, "sum": 32.0, "max": 1.0}[reduce]),
          "a volume")


def test_a_class_per_image_out_of_range_says_so_itself():
    # was: "the target failed on the model's output, a tensor of shape (2, 3) (a dict output is reduced to
    # its 'logits' or 'out' entry before targets see it): IndexError: ClassLogits: ...", the wrapping meant
    # for a target of the user's own
    with pytest.raises(IndexError, match=r"^ClassLogits: class index 3 is out of range for 3 classes"):
        call_target(ClassLogits([0, 3]), torch.zeros(2, 3))
    with pytest.raises(TypeError, match=r"^ClassLogits: the model's output has dtype torch.int64"):
        call_target(ClassLogits([0, 1]), torch.zeros(2, 3, dtype=torch.int64))


def test_a_class_index_on_a_pooled_conv_head_before_a_softmax_scores_the_logit():
    # was: the layer feeding the final nn.Softmax had to give (classes,) per image, so a convolutional head
    # pooled to (classes, 1, 1) had no scores layer and ClassLogit silently scored the probability
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(), nn.Conv2d(6, 4, 1), nn.AdaptiveAvgPool2d(1),
                          nn.Softmax(dim=1)).eval()
    x = torch.randn(2, 3, 12, 12)
    with Probe(model) as probe:
        assert probe.scores_layer == "3"
        with torch.no_grad():
            logits = model[:4](x)[:, 1, 0, 0]
        torch.testing.assert_close(target_score(probe, x, 1), logits)
