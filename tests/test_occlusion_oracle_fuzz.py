"""Seeded oracle fuzz of the occlusion-sensitivity functions: are the numbers right?

What is driven:

* :func:`cnnwidgets.methods.occlusion_map` and :func:`occlusion_top_class` on random small CNNs
  built from a fixed seed: ``nn.Sequential`` stacks (some of whose first modules are registered
  under a second name too) and models with their own ``forward``, with convolutions of random
  kernel, stride, padding (also ``'same'``, and the ``reflect``, ``replicate`` and ``circular``
  padding modes), dilation, groups and bias; batch norms right after convolutions and elsewhere
  (after a pool, after a ReLU, after a concatenation), with ``affine=False``,
  ``track_running_stats=False``, ``momentum=None``, random running statistics, weights (also
  negative) and biases and a large ``eps``; ReLUs in place and not, one ReLU module called twice,
  ``F.relu``; max, average and adaptive pools; dropouts; residual additions and concatenated
  branches; a forward that writes into its input; models left in training mode; outputs as a
  tensor, a dict with a ``'logits'`` entry, an object with a ``logits`` attribute, or through a
  final ``nn.Softmax`` or ``nn.Sigmoid``; one output unit or several; images of 1, 3 or 4
  channels, 12 to 40 pixels, not square, given as float32, float64, float16 or a strided view.
  Each call draws a window, a stride (also ones that do not divide the image, ones larger than
  the window and ones larger than the image), a fill (a number, ``'mean'``, per-channel values as
  a tensor or a list, a (C, 1, 1), (1, C, 1, 1), (C, H, W) or (1, C, H, W) tensor, a numpy array,
  a callable), a target (a class index, ``ClassProbability`` with each ``outputs``, a callable of
  the output, ``ChannelActivation`` of a random layer and channel with each reduction or at one
  position, a callable of a layer's output), a batch size (automatic, 1, a few), an order, the
  fold setting, ``keep_class_probabilities``, a callback, and a model passed directly or a warm
  ``Probe`` (channels-last or not) used for two scans, between which the user's weights may
  change (an optimizer-like step, running statistics from a forward in training mode,
  ``load_state_dict``).
* :func:`grid_to_pixel_attribution` (through :meth:`OcclusionResult.pixel_attribution`, and
  directly on random grids with uncomputed positions), :func:`scan_order` and
  :func:`~cnnwidgets.methods._fold.inference_copy`.

The oracles (computed here, independently of the code under test):

1. A plain loop: for every position (i, j) the occluded image is built here (the window's
   top-left corner at (i * sh, j * sw), the window inside the image, every channel replaced by
   the fill) and scored by an evaluation-mode ``copy.deepcopy`` of the model, with the weights
   the scan ran with, in plain PyTorch: the class logit (the input of a final softmax or sigmoid
   module, for a model that ends in one), the class probability (softmax of the logits, the
   sigmoid of a single unit or of every unit for ``outputs="multilabel_logits"``, or the output
   itself after a final softmax or sigmoid), the callable on the output, a channel of an inner
   layer reduced over space (read by a forward hook at the module's last call, copied when it
   returned), the most probable class and its probability. ``grid``, ``unoccluded``, ``labels``,
   ``unoccluded_label`` and, with ``keep_class_probabilities``, ``for_class`` must agree with it.
2. Captum's ``Occlusion`` with the same window, stride and the fill as its baseline, where the
   windows tile the image as the documentation of :func:`grid_to_pixel_attribution` requires:
   our per-pixel attribution must equal Captum's in every channel. On random grids, the
   per-pixel attribution must be the mean drop of the computed windows covering each pixel,
   summed here window by window.
3. Invariants: every position is computed once; every partial result handed to the callback
   holds a prefix of the order :func:`scan_order` gives (which holds each position exactly once),
   with the final values there; the map does not depend on the batch size, the order, the fold
   setting or the number of threads; the user's model and image are unchanged afterwards (hooks,
   weights, buffers, training flags); folding batch norm never falls back with its "changed this
   model's output" warning, and the inference copy computes what the model computes.

Every random case comes from a fixed seed. Tests marked ``# was:`` pin bugs this fuzzing found.
"""

from __future__ import annotations

import copy
import random
import warnings
from collections import namedtuple
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnwidgets import ChannelActivation, ClassProbability, Probe
from cnnwidgets.methods import occlusion_map, occlusion_top_class
from cnnwidgets.methods._fold import inference_copy
from cnnwidgets.methods.occlusion import grid_shape, grid_to_pixel_attribution, scan_order
from tests.helpers import UserModelSnapshot

captum_attr = pytest.importorskip("captum.attr")

SEEDS = range(60)

# even kernels with padding="same" make torch warn that it pads a copy of the input
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")

# ---------------------------------------------------------------------------- random models


def random_batchnorm(rng: random.Random, channels: int, spatial: int) -> nn.BatchNorm2d:
    """A batch norm with random, non-trivial statistics and affine parameters; batch statistics
    (``track_running_stats=False``) only where a map has more than one value per channel."""
    tracks = spatial <= 1 or rng.random() < 0.95
    bn = nn.BatchNorm2d(
        channels, eps=rng.choice([1e-5, 1e-3, 0.1, 1.0]), affine=rng.random() < 0.8,
        track_running_stats=tracks, momentum=rng.choice([0.1, None]),
    )
    with torch.no_grad():
        if bn.running_mean is not None:
            bn.running_mean.copy_(torch.randn(channels) * 0.5)
            bn.running_var.copy_(torch.rand(channels) * rng.choice([0.5, 3.0]) + 0.05)
        if bn.weight is not None:
            bn.weight.copy_(torch.randn(channels))  # some negative
            bn.bias.copy_(torch.randn(channels) * 0.3)
    return bn


def conv_out(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def random_conv(rng: random.Random, cin: int, cout: int, h: int, w: int) -> tuple[nn.Conv2d, int, int]:
    """A convolution of random geometry that keeps at least a 2 x 2 map; returns it and its output size."""
    while True:
        kernel = rng.choice([1, 2, 3, 3, 5])
        dilation = rng.choice([1, 1, 2]) if kernel > 1 else 1
        stride = rng.choice([1, 1, 2])
        same = stride == 1 and rng.random() < 0.3
        padding: int | str = "same" if same else rng.randint(0, min(2, kernel // 2 + 1))
        mode = rng.choice(["zeros", "zeros", "reflect", "replicate", "circular"])
        pad = (dilation * (kernel - 1)) // 2 + 1 if same else padding
        if mode != "zeros" and (pad == 0 or pad >= min(h, w)):
            mode = "zeros"  # reflect needs padding below the map's size
        groups = rng.choice([g for g in (1, 2, 4) if cin % g == 0 and cout % g == 0])
        oh = h if same else conv_out(h, kernel, stride, padding, dilation)
        ow = w if same else conv_out(w, kernel, stride, padding, dilation)
        if oh >= 2 and ow >= 2:
            break
    conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, dilation=dilation, groups=groups,
                     bias=rng.random() < 0.7, padding_mode=mode)
    return conv, oh, ow


def activation(rng: random.Random, shared: nn.ReLU) -> nn.Module:
    choice = rng.random()
    if choice < 0.3:
        return shared  # the same module object, called more than once
    if choice < 0.6:
        return nn.ReLU(inplace=True)
    if choice < 0.8:
        return nn.ReLU()
    return nn.LeakyReLU(0.1, inplace=rng.random() < 0.5)


def random_sequential(rng: random.Random, cin: int, h: int, w: int, classes: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    shared = nn.ReLU(inplace=rng.random() < 0.5)
    c = cin
    for _ in range(rng.randint(1, 3)):
        cout = rng.choice([4, 6, 8])
        conv, h, w = random_conv(rng, c, cout, h, w)
        layers.append(conv)
        c = cout
        if rng.random() < 0.6:
            layers.append(random_batchnorm(rng, c, h * w))
        layers.append(activation(rng, shared))
        if rng.random() < 0.2:
            layers.append(random_batchnorm(rng, c, h * w))  # after a ReLU
        if min(h, w) >= 4 and rng.random() < 0.5:
            pool = rng.choice([nn.MaxPool2d(2), nn.AvgPool2d(2), nn.MaxPool2d(3, stride=2, padding=1)])
            layers.append(pool)
            h, w = conv_out(h, pool.kernel_size, 2, pool.padding, 1), conv_out(w, pool.kernel_size, 2, pool.padding, 1)
            if rng.random() < 0.4:
                layers.append(random_batchnorm(rng, c, h * w))  # after a pool
        if rng.random() < 0.3:
            layers.append(rng.choice([nn.Dropout(0.3), nn.Dropout2d(0.2)]))
    side = rng.choice([1, 2])
    layers += [rng.choice([nn.AdaptiveAvgPool2d(side), nn.AdaptiveMaxPool2d(side)]), nn.Flatten(),
               nn.Linear(c * side * side, classes)]
    return nn.Sequential(*layers)


LogitsOutput = namedtuple("LogitsOutput", ["logits", "features"])


class Branches(nn.Module):
    """A stem, a residual block, two concatenated branches, a batch norm after a pool, a head;
    the output as a tensor, a dict, a named tuple with ``logits`` or through a final softmax or sigmoid."""

    def __init__(self, rng: random.Random, cin: int, h: int, w: int, classes: int, output: str) -> None:
        super().__init__()
        c = rng.choice([4, 8])
        self.output = output
        self.stem, h, w = random_conv(rng, cin, c, h, w)
        self.stem_bn = random_batchnorm(rng, c, h * w)
        self.relu = nn.ReLU(inplace=rng.random() < 0.5)  # called twice in forward
        self.a1 = nn.Conv2d(c, c, 3, padding=1, bias=rng.random() < 0.5,
                            padding_mode=rng.choice(["zeros", "reflect", "circular"]))
        self.a1_bn = random_batchnorm(rng, c, h * w)
        self.a2 = nn.Conv2d(c, c, 3, padding="same", dilation=rng.choice([1, 2]), groups=rng.choice([1, 2]))
        self.a2_bn = random_batchnorm(rng, c, h * w)
        c2 = rng.choice([2, 4])
        self.b1 = nn.Conv2d(c, c2, 1, bias=rng.random() < 0.5)
        self.pool = rng.choice([nn.MaxPool2d(2), nn.AvgPool2d(2)])
        self.post_bn = random_batchnorm(rng, c + c2, (h // 2) * (w // 2))
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(c + c2, classes)
        self.final = {"softmax": nn.Softmax(dim=1), "sigmoid": nn.Sigmoid()}.get(output)
        self.scales_input = rng.random() < 0.25  # writes into its input, as some preprocessing does

    def forward(self, x):
        if self.scales_input:
            x = x.mul_(1.5)
        x = self.relu(self.stem_bn(self.stem(x)))
        r = self.a2_bn(self.a2(F.relu(self.a1_bn(self.a1(x)))))
        x = self.relu(x + r)
        y = torch.cat([x, F.relu(self.b1(x))], dim=1)
        y = self.post_bn(self.pool(y))
        out = self.head(self.drop(y.mean(dim=(2, 3))))
        if self.output == "dict":
            return {"features": y, "logits": out}
        if self.output == "named":
            return LogitsOutput(out, y)
        if self.final is not None:
            return self.final(out)
        return out


class Aliased(nn.Module):
    """A Sequential whose first modules are also registered under names of their own, before it
    (``self.conv0`` and ``self.body[0]`` are the same module); the forward calls the Sequential."""

    def __init__(self, body: nn.Sequential, aliases: int) -> None:
        super().__init__()
        for k in range(aliases):
            setattr(self, f"{type(body[k]).__name__.lower()}{k}", body[k])
        self.body = body

    def forward(self, x):
        return self.body(x)


@dataclass
class Case:
    """One random model with what the oracle needs to know about it."""

    model: nn.Module
    x: torch.Tensor
    classes: int
    final: nn.Module | None         # the final softmax or sigmoid module, when the model ends in one
    layers: list[tuple[str, tuple[int, ...]]]  # (name, (C, H, W) or (C,)) of modules with such outputs
    batch_dependent: bool
    rng: random.Random = field(repr=False)


def make_case(seed: int) -> Case:
    rng = random.Random(seed)
    torch.manual_seed(seed)
    cin = rng.choice([1, 3, 3, 4])
    h, w = rng.randint(12, 32), rng.randint(12, 40)
    classes = 1 if rng.random() < 0.1 else rng.randint(2, 7)  # one unit: a binary classifier's logit
    if rng.random() < 0.5:
        model = random_sequential(rng, cin, h, w, classes)
        if rng.random() < 0.2:
            model.append(nn.Softmax(dim=1) if classes > 1 and rng.random() < 0.7 else nn.Sigmoid())
        final = model[-1] if isinstance(model[-1], (nn.Softmax, nn.Sigmoid)) else None
        if rng.random() < 0.3:
            model = Aliased(model, rng.randint(1, 3))
    else:
        output = rng.choice(["tensor", "dict", "named", "sigmoid"] + (["softmax"] if classes > 1 else []))
        model = Branches(rng, cin, h, w, classes, output)
        final = model.final
    model.train(rng.random() < 0.3)  # some users leave their model in training mode
    x = torch.randn(1, cin, h, w)
    shapes: dict[str, tuple[int, int, int]] = {}
    handles = []
    for name, module in model.named_modules():
        if name and not isinstance(module, (nn.Sequential, nn.Softmax, nn.Sigmoid, nn.Flatten)):
            def record(m, i, o, name=name):
                if isinstance(o, torch.Tensor) and o.dim() in (2, 4):
                    shapes[name] = tuple(o.shape[1:])
            handles.append(module.register_forward_hook(record))
    with torch.no_grad():
        copy.deepcopy(model).eval()(x.clone())
    for handle in handles:
        handle.remove()
    dependent = any(isinstance(m, nn.BatchNorm2d) and m.running_mean is None for m in model.modules())
    return Case(model, x, classes, final, sorted(shapes.items()), dependent, rng)


# ---------------------------------------------------------------------------- the oracles


class Reference:
    """An evaluation-mode deep copy of the model, run in plain PyTorch, one image at a time where
    batch statistics would mix the images of a batch."""

    def __init__(self, case: Case, layer: str | None = None) -> None:
        self.case = case
        self.model = copy.deepcopy(case.model).eval()
        self.captured: dict[str, torch.Tensor] = {}
        if case.final is not None:
            names = {id(m): n for n, m in case.model.named_modules()}
            end = self.model.get_submodule(names[id(case.final)])
            end.register_forward_pre_hook(lambda m, args: self.captured.__setitem__("pre", args[0].clone()))
        if layer is not None:
            def keep(m, i, o):
                self.captured["layer"] = o.clone()  # its value when the module returned (last call wins)
            self.model.get_submodule(layer).register_forward_hook(keep)

    def _one(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        self.captured.clear()
        with torch.no_grad():
            out = self.model(x.clone())
        if isinstance(out, dict):
            out = out["logits"]
        elif not isinstance(out, torch.Tensor):
            out = out.logits
        result = {"out": out.clone()}
        result.update(self.captured)
        return result

    def run(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if not self.case.batch_dependent:
            return self._one(x)
        parts = [self._one(x[k:k + 1]) for k in range(x.shape[0])]
        return {key: torch.cat([p[key] for p in parts]) for key in parts[0]}

    def probabilities(self, run: dict[str, torch.Tensor], outputs: str = "auto") -> torch.Tensor:
        """As documented for ``class_probabilities``: the output itself after a final softmax or
        sigmoid module; else the softmax of the logits, the sigmoid of a single unit or of every unit
        for ``"multilabel_logits"``."""
        out = run["out"]
        if self.case.final is not None and outputs == "auto":
            return out
        if outputs == "multilabel_logits" or out.shape[1] == 1:
            return torch.sigmoid(out)
        return torch.softmax(out, dim=1)

    def logits(self, run: dict[str, torch.Tensor]) -> torch.Tensor:
        return run["pre"] if self.case.final is not None else run["out"]


def occluded_images(x: torch.Tensor, fill: torch.Tensor, window, stride) -> tuple[torch.Tensor, tuple[int, int]]:
    """Every occluded image in raster order, built position by position."""
    _, c, height, width = x.shape
    (wh, ww), (sh, sw) = window, stride
    full = fill.expand(1, c, height, width)
    images = []
    rows, cols = 0, 0
    top = 0
    while top + wh <= height:
        rows += 1
        cols = 0
        left = 0
        while left + ww <= width:
            cols += 1
            image = x.clone()
            image[:, :, top:top + wh, left:left + ww] = full[:, :, top:top + wh, left:left + ww]
            images.append(image)
            left += sw
        top += sh
    return torch.cat(images), (rows, cols)


def fill_values(fill, x: torch.Tensor) -> torch.Tensor:
    """The fill as a tensor broadcastable to x, computed here from the documented meaning."""
    c = x.shape[1]
    if isinstance(fill, (int, float)):
        return torch.full((1, c, 1, 1), fill)
    if isinstance(fill, str):
        return x.mean(dim=(2, 3), keepdim=True)
    if callable(fill) and not isinstance(fill, torch.Tensor):
        fill = fill(x.clone())
    fill = torch.as_tensor(fill, dtype=torch.float32)
    return fill.reshape(1, c, *fill.shape[-2:]) if fill.dim() >= 3 else fill.reshape(1, c, 1, 1)


def blurred(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)[0]


def random_fill(rng: random.Random, x: torch.Tensor):
    c, h, w = x.shape[1:]
    kind = rng.choice(["number", "mean", "channels", "list", "c11", "1c11", "chw", "1chw", "numpy", "callable"])
    if kind == "number":
        return rng.choice([0.0, 0.5, -1.0, 2.0, 1])
    if kind == "mean":
        return "mean"
    if kind == "channels":
        return torch.randn(c)
    if kind == "list":
        return [rng.uniform(-2, 2) for _ in range(c)]
    if kind == "c11":
        return torch.randn(c, 1, 1)
    if kind == "1c11":
        return torch.randn(1, c, 1, 1)
    if kind == "chw":
        return torch.randn(c, h, w)
    if kind == "1chw":
        return torch.randn(1, c, h, w)
    if kind == "numpy":
        return np.random.default_rng(rng.randrange(1000)).normal(size=(c, h, w))
    return blurred


def random_geometry(rng: random.Random, height: int, width: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """A window and a stride with 2 to 64 positions; about a third of them tile the image exactly
    ((H - wh) and (W - ww) multiples of the stride), the others need not."""
    while True:
        if rng.random() < 0.35:
            stride = (rng.randint(1, 6), rng.randint(1, 6))
            counts = (rng.randint(1, 8), rng.randint(1, 8))
            window = (height - (counts[0] - 1) * stride[0], width - (counts[1] - 1) * stride[1])
            if min(window) < 1:
                continue
        else:
            window = (rng.randint(1, min(12, height)), rng.randint(1, min(12, width)))
            stride = (rng.randint(1, 8), rng.randint(1, 8))
            if rng.random() < 0.1:  # beyond the image: one position on that axis
                stride = (stride[0], 10**rng.randint(2, 20)) if rng.random() < 0.5 else (10**rng.randint(2, 20), stride[1])
        rows, cols = grid_shape((height, width), window, stride)
        if 2 <= rows * cols <= 64:
            return window, stride


def reduce_channel(values: torch.Tensor, reduce: str) -> torch.Tensor:
    flat = values.reshape(values.shape[0], -1)
    return {"sum": flat.sum(1), "mean": flat.mean(1), "max": flat.amax(1)}[reduce]


def assert_close_scores(got: np.ndarray, want: np.ndarray, what: str) -> None:
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    scale = max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-5 * scale, err_msg=what)


def captum_attribution(score, x: torch.Tensor, fill: torch.Tensor, window, stride) -> torch.Tensor:
    c = x.shape[1]
    return captum_attr.Occlusion(score).attribute(
        x, sliding_window_shapes=(c, *window), strides=(c, *stride),
        baselines=fill.expand_as(x).contiguous(), perturbations_per_eval=16,
    )


def check_scan_invariants(result, rows: int, cols: int) -> None:
    assert result.shape == (rows, cols)
    assert result.complete and not result.cancelled and result.done == rows * cols
    assert result.filled.all()
    assert np.isfinite(result.grid).all()
    positions, levels = scan_order(rows, cols)
    assert sorted(map(tuple, positions.tolist())) == [(i, j) for i in range(rows) for j in range(cols)]
    assert (np.diff(levels) >= 0).all()


def check_snapshots(snapshots: list, final, order: str) -> None:
    """Every partial result holds a prefix of the scan order, with the final values there."""
    positions, _ = scan_order(*final.shape, order)
    assert snapshots and snapshots[-1].done == final.total
    done = [s.done for s in snapshots]
    assert done == sorted(done) and len(set(done)) == len(done)
    for partial in snapshots:
        expected = np.zeros(final.shape, dtype=bool)
        expected[positions[:partial.done, 0], positions[:partial.done, 1]] = True
        np.testing.assert_array_equal(partial.filled, expected)
        np.testing.assert_array_equal(partial.grid[expected], final.grid[expected])
        assert np.isnan(partial.grid[~expected]).all()
        assert partial.unoccluded == final.unoccluded


# ---------------------------------------------------------------------------- the fuzz


def draw_target(case: Case):
    """A target and the oracle's score of a reference run for it."""
    rng = case.rng
    kind = rng.choice(["index", "probability", "probability", "callable", "channel", "channel"])
    k = rng.randrange(case.classes)
    if kind == "index":
        return k, None, lambda ref, run: ref.logits(run)[:, k]
    if kind == "probability":
        outputs = "auto" if case.final is not None else rng.choice(["auto", "logits", "multilabel_logits"])
        return (ClassProbability(k, outputs=outputs), None,
                lambda ref, run: ref.probabilities(run, outputs)[:, k])
    if kind == "callable":
        other = (k + 1) % case.classes
        return (lambda y: y[:, k] - 0.5 * y[:, other]), None, lambda ref, run: run["out"][:, k] - 0.5 * run["out"][:, other]
    layer, shape = rng.choice(case.layers)
    channel = rng.randrange(shape[0])
    if rng.random() < 0.2:  # a callable of its own on a layer
        def energy(activation):
            return activation[:, channel].reshape(activation.shape[0], -1).pow(2).mean(dim=1)

        energy.layer = layer
        return energy, layer, lambda ref, run: energy(run["layer"])
    if len(shape) == 3 and rng.random() < 0.2:  # one unit of the map
        row, col = rng.randrange(shape[1]), rng.randrange(shape[2])
        target = ChannelActivation(layer, channel, position=(row, col))
        return target, layer, lambda ref, run: run["layer"][:, channel, row, col]
    reduce = rng.choice(["sum", "sum", "mean", "max"])
    target = ChannelActivation(layer, channel, reduce=reduce)
    return target, layer, lambda ref, run: reduce_channel(run["layer"][:, channel], reduce)


def change_weights(rng: random.Random, model: nn.Module, x: torch.Tensor) -> str:
    """Change the user's model between two scans of a warm probe, as training would."""
    how = rng.choice(["step", "statistics", "state_dict"])
    with torch.no_grad():
        if how == "step":  # an optimizer step
            for param in model.parameters():
                param.add_(torch.randn_like(param) * 0.2)
        elif how == "statistics":  # batch norms' running statistics, from a forward in training mode
            was = model.training
            model.train()
            model(torch.cat([x, x.flip(2), x.flip(3)]))
            model.train(was)
        else:
            state = {k: v + 0.1 * torch.randn_like(v) if v.is_floating_point() else v
                     for k, v in model.state_dict().items()}
            state = {k: v.clamp_min(0.05) if k.endswith("running_var") else v for k, v in state.items()}
            model.load_state_dict(state)
    return how


@pytest.mark.parametrize("seed", SEEDS)
def test_occlusion_map_agrees_with_a_plain_loop_and_captum(seed, one_torch_thread):
    case = make_case(seed)
    rng = case.rng
    x = case.x
    target, layer, oracle = draw_target(case)
    window, stride = random_geometry(rng, x.shape[2], x.shape[3])
    fill = random_fill(rng, x)
    fill_tensor = fill_values(fill, x)
    batch_size = rng.choice([None, None, 1, 3, 7])
    order = rng.choice(["coarse_first", "raster"])
    fold = rng.random() < 0.75
    keep = layer is None and rng.random() < 0.5
    warm = rng.random() < 0.4
    retrain = warm and rng.random() < 0.6
    channels_last = rng.choice([False, "auto", True])  # of a warm probe
    device = None if warm else rng.choice([None, "cpu"])
    layout = rng.choice(["plain", "plain", "strided", "float64", "float16"])
    if layout == "float16":  # the scan computes in float32 from the half-precision values
        x = x.half().float()
        fill_tensor = fill_values(fill, x)
    given = {"plain": x, "strided": x.transpose(2, 3).contiguous().transpose(2, 3), "float64": x.double(),
             "float16": x.half()}[layout]
    images, (rows, cols) = occluded_images(x, fill_tensor, window, stride)
    kwargs = dict(window=window, stride=stride, fill=fill, batch_size=batch_size, order=order,
                  fold_batchnorm=fold, keep_class_probabilities=keep, progress=False)
    scans = []  # (result, its snapshots, the reference of the weights it ran with)

    def scan(model_or_probe, **extra):
        ref = Reference(case, layer)
        snapshots: list = []
        snapshot, before = UserModelSnapshot.take(case.model), given.clone()
        result = occlusion_map(model_or_probe, given, target, callback=snapshots.append, **kwargs, **extra)
        snapshot.assert_unchanged(case.model)
        assert torch.equal(given, before), "the image was changed"
        scans.append((result, snapshots, ref))

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if warm:
            with Probe(case.model, device="cpu", channels_last=channels_last) as probe:
                scan(probe)
                if retrain:
                    change_weights(rng, case.model, x)
                scan(probe)
        else:
            scan(case.model, device=device)
    assert not [w for w in caught if "folding batch norm" in str(w.message)], "folding changed the output"

    for result, snapshots, ref in scans:
        run, run0 = ref.run(images), ref.run(x)
        want, want0 = oracle(ref, run).numpy(), float(oracle(ref, run0)[0])
        check_scan_invariants(result, rows, cols)
        check_snapshots(snapshots, result, order)
        assert_close_scores(result.grid.ravel(), want, f"grid of seed {seed}")
        assert_close_scores([result.unoccluded], [want0], f"unoccluded of seed {seed}")
        # a class index on a model that ends in a softmax or sigmoid reads the layer feeding it,
        # and its classes come from those logits: the same top class and probabilities
        on_output = result.target.layer is None or isinstance(target, int) or getattr(target, "layer", "") is None
        if on_output and case.classes > 1:
            probabilities = ref.probabilities(run)
            # the top class, where it is not a near tie that float rounding may flip
            top2 = probabilities.topk(2, dim=1).values
            clear = (top2[:, 0] - top2[:, 1] > 1e-4).numpy()
            labels = probabilities.argmax(dim=1).numpy()
            assert result.labels is not None
            np.testing.assert_array_equal(result.labels.ravel()[clear], labels[clear])
        if keep and on_output:
            k = rng.randrange(case.classes)
            for_class = result.for_class(k)
            # read as the target reads them when it is a ClassProbability, else "auto"
            outputs = target.outputs if isinstance(target, ClassProbability) else "auto"
            assert_close_scores(for_class.grid.ravel(), ref.probabilities(run, outputs)[:, k].numpy(), "for_class")
            assert_close_scores([for_class.unoccluded], [float(ref.probabilities(run0, outputs)[0, k])], "for_class")

    # Captum's per-pixel attribution, where the windows tile the image without remainder (Captum
    # takes no stride beyond the window, unless the window spans that axis of the image)
    result, _, ref = scans[-1]
    tiles = all((size - wsz) % s == 0 and (s <= wsz or wsz == size)
                for size, wsz, s in zip(x.shape[2:], window, stride))
    if tiles:
        def score(batch):
            return oracle(ref, ref.run(batch))

        captum = captum_attribution(score, x, fill_tensor, window, stride)
        ours = torch.from_numpy(result.pixel_attribution()).double()
        for channel in range(x.shape[1]):
            torch.testing.assert_close(ours, captum[0, channel].double(), rtol=1e-4,
                                       atol=2e-5 * max(1.0, abs(result.unoccluded)), equal_nan=True)


@pytest.mark.parametrize("final", [nn.Softmax(dim=1), nn.Sigmoid()], ids=["softmax", "sigmoid"])
def test_a_class_index_on_a_model_ending_in_a_softmax_keeps_its_classes(final):
    # was: the map read the logits before the final module, as a layer scan: labels and unoccluded_label were
    # None, and for_class raised "scan with keep_class_probabilities=True", which the scan had been given
    torch.manual_seed(4)
    head = [nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5)]
    for module in head:
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
    ending, plain = nn.Sequential(*head, final).eval(), nn.Sequential(*head).eval()
    x = torch.randn(1, 3, 16, 20)
    options = {"window": 5, "stride": 3, "progress": False, "keep_class_probabilities": True}
    result, logits = occlusion_map(ending, x, 3, **options), occlusion_map(plain, x, 3, **options)
    np.testing.assert_allclose(result.grid, logits.grid, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(result.labels, logits.labels)
    assert result.unoccluded_label == logits.unoccluded_label is not None
    with torch.no_grad():
        expected = ending(x)[0].numpy()
    np.testing.assert_allclose(result.unoccluded_probabilities, expected, rtol=1e-5, atol=1e-6)
    images, _ = occluded_images(x, fill_values(0.0, x), (5, 5), (3, 3))
    with torch.no_grad():
        per_position = ending(images)[:, 1].numpy()
    np.testing.assert_allclose(result.for_class(1).grid.ravel(), per_position, rtol=1e-5, atol=1e-6)


def test_a_class_index_on_a_softmax_model_runs_the_folded_copy_without_its_softmax():
    # was: such a scan read the logits layer through the probe's prefix capture, one batch at a time and
    # without the folded copy: 1.4-1.7x the time of the same model without its softmax
    from cnnwidgets.methods import occlusion as occlusion_module

    torch.manual_seed(5)
    model = nn.Sequential(nn.Conv2d(3, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 4, 1),
                          nn.AdaptiveAvgPool2d(1), nn.Softmax(dim=1)).eval()
    model[1].running_mean.uniform_(-1, 1)
    x = torch.randn(1, 3, 24, 24)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "folding batch norm changed this model's output"
        with Probe(model) as probe:
            for _ in range(2):  # the second scan reuses the copy
                result = occlusion_map(probe, x, 2, window=6, stride=2, progress=False, keep_class_probabilities=True)
            kept = [key for key in occlusion_module._FAST_COPIES[probe] if isinstance(key, tuple)]
            assert len(kept) == 1 and kept[0][1].module == "5" and kept[0][1].layer == "4"
            assert isinstance(occlusion_module._FAST_COPIES[probe][kept[0]][1].get_submodule("5"), nn.Identity)
    assert isinstance(model[5], nn.Softmax)  # the user's model keeps its softmax
    images, _ = occluded_images(x, fill_values(0.0, x), (6, 6), (2, 2))
    with torch.no_grad():
        logits = model[:5](images).flatten(1)
        probabilities = model(images).flatten(1)
    np.testing.assert_allclose(result.grid.ravel(), logits[:, 2].numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(result.labels.ravel(), logits.argmax(1).numpy())
    np.testing.assert_allclose(result.for_class(0).grid.ravel(), probabilities[:, 0].numpy(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("seed", range(100, 110))
def test_occlusion_top_class_agrees_with_a_plain_loop(seed, one_torch_thread):
    case = make_case(seed)
    rng = case.rng
    x = case.x
    if case.classes == 1:
        with pytest.raises(ValueError, match="single output unit"):
            occlusion_top_class(case.model, x, window=3, stride=2, progress=False)
        return
    window, stride = random_geometry(rng, x.shape[2], x.shape[3])
    fill = random_fill(rng, x)
    ref = Reference(case)
    images, (rows, cols) = occluded_images(x, fill_values(fill, x), window, stride)
    probabilities = ref.probabilities(ref.run(images))
    unoccluded = ref.probabilities(ref.run(x))
    snapshot = UserModelSnapshot.take(case.model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = occlusion_top_class(case.model, x, window=window, stride=stride, fill=fill,
                                     batch_size=rng.choice([None, 2]), progress=False)
    snapshot.assert_unchanged(case.model)
    check_scan_invariants(result, rows, cols)
    top2 = probabilities.topk(2, dim=1).values
    clear = (top2[:, 0] - top2[:, 1] > 1e-4).numpy()
    np.testing.assert_array_equal(result.labels.ravel()[clear], probabilities.argmax(1).numpy()[clear])
    assert_close_scores(result.grid.ravel(), top2[:, 0].numpy(), f"top probability of seed {seed}")
    assert_close_scores([result.unoccluded], [float(unoccluded.max())], "unoccluded top probability")
    if float(unoccluded.topk(2).values.diff().abs()) > 1e-4:
        assert result.unoccluded_label == int(unoccluded.argmax())


@pytest.mark.parametrize("seed", range(200, 208))
def test_the_map_does_not_depend_on_batch_size_order_or_folding(seed, cpu_threads):
    case = make_case(seed)
    rng = case.rng
    x = case.x
    target, layer, _ = draw_target(case)
    window, stride = random_geometry(rng, x.shape[2], x.shape[3])
    fill = random_fill(rng, x)
    grids = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Probe(case.model, device="cpu") as probe:
            for batch_size, order, fold in [(None, "coarse_first", True), (1, "raster", True), (5, "raster", False),
                                            (2, "coarse_first", False), (None, "raster", True)]:
                result = occlusion_map(probe, x, target, window=window, stride=stride, fill=fill,
                                       batch_size=batch_size, order=order, fold_batchnorm=fold, progress=False)
                grids.append((result.grid.astype(np.float64), result.unoccluded))
    first, first0 = grids[0]
    scale = max(1.0, float(np.abs(first).max()))
    for grid, unoccluded in grids[1:]:
        np.testing.assert_allclose(grid, first, rtol=1e-5, atol=1e-5 * scale)
        assert abs(unoccluded - first0) <= 1e-5 * scale


@pytest.mark.parametrize("seed", range(300, 316))
def test_the_inference_copy_computes_what_the_model_computes(seed):
    case = make_case(seed)
    ref = copy.deepcopy(case.model).eval()
    snapshot = UserModelSnapshot.take(case.model)
    fast, report = inference_copy(case.model, share=case.rng.random() < 0.5)
    snapshot.assert_unchanged(case.model)
    assert report.traced, report.reason
    batch = torch.randn(1 if case.batch_dependent else 5, *case.x.shape[1:])
    with torch.no_grad():
        want, got = ref(batch.clone()), fast(batch.clone())
    unwrap = (lambda o: o if isinstance(o, torch.Tensor) else o["logits"] if isinstance(o, dict) else o.logits)
    torch.testing.assert_close(unwrap(got), unwrap(want), rtol=1e-4, atol=1e-5)


def test_scan_order_visits_every_position_once_for_many_grids():
    rng = random.Random(7)
    for _ in range(60):
        rows, cols = rng.randint(1, 40), rng.randint(1, 40)
        for order in ("coarse_first", "raster"):
            positions, levels = scan_order(rows, cols, order)
            assert positions.shape == (rows * cols, 2)
            assert len({(int(i), int(j)) for i, j in positions}) == rows * cols
            assert positions[:, 0].min() == 0 and positions[:, 0].max() == rows - 1
            assert positions[:, 1].min() == 0 and positions[:, 1].max() == cols - 1
            assert (np.diff(levels) >= 0).all()


def test_pixel_attribution_is_the_mean_drop_of_the_windows_covering_each_pixel():
    rng = np.random.default_rng(3)
    for _ in range(40):
        height, width = int(rng.integers(3, 30)), int(rng.integers(3, 30))
        window = (int(rng.integers(1, height + 1)), int(rng.integers(1, width + 1)))
        stride = (int(rng.integers(1, 10)), int(rng.integers(1, 10)))
        rows, cols = grid_shape((height, width), window, stride)
        grid = rng.normal(size=(rows, cols)).astype(np.float32)
        grid[rng.random((rows, cols)) < 0.2] = np.nan
        unoccluded = float(rng.normal())
        total = np.zeros((height, width))
        count = np.zeros((height, width))
        for i in range(rows):
            for j in range(cols):
                if np.isnan(grid[i, j]):
                    continue
                top, left = i * stride[0], j * stride[1]
                total[top:top + window[0], left:left + window[1]] += unoccluded - grid[i, j]
                count[top:top + window[0], left:left + window[1]] += 1
        with np.errstate(invalid="ignore"):
            want = np.where(count > 0, total / np.maximum(count, 1), np.nan)
        got = grid_to_pixel_attribution(grid, unoccluded, window=window, stride=stride, image_size=(height, width))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, equal_nan=True)


# ---------------------------------------------------------------------------- regressions


class NamedTwice(nn.Module):
    """Its convolution and batch norm are registered as ``conv`` and ``bn`` first, and again inside
    ``features``, which the forward calls."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.features = nn.Sequential(self.conv, self.bn, nn.ReLU())
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        return self.head(self.features(x).mean(dim=(2, 3)))


def named_twice() -> nn.Module:
    torch.manual_seed(0)
    model = NamedTwice()
    with torch.no_grad():
        model.bn.running_mean.normal_()
        model.bn.running_var.uniform_(0.5, 2.0)
        model.bn.weight.normal_()
    return model.eval()


def test_a_batch_norm_registered_under_two_names_is_folded_under_both():
    # was: the folded batch norm was replaced by an identity under its first name only, so the
    # forward still ran it after the convolution it was folded into (output off by 0.4), and
    # occlusion_map warned that folding changed the output and ran the model unfolded
    model = named_twice()
    x = torch.randn(2, 3, 12, 12)
    fast, report = inference_copy(model)
    assert report.folded == [("conv", "bn")]
    with torch.no_grad():
        torch.testing.assert_close(fast(x), model(x), rtol=1e-5, atol=1e-6)
    assert isinstance(fast.features[1], nn.Identity) and isinstance(fast.bn, nn.Identity)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "folding batch norm changed this model's output"
        result = occlusion_map(model, x[:1], 0, window=4, stride=4, batch_size=2, progress=False)
    with torch.no_grad():
        images, _ = occluded_images(x[:1], torch.zeros(1, 3, 1, 1), (4, 4), (4, 4))
        assert_close_scores(result.grid.ravel(), model(images)[:, 0].numpy(), "grid")
