"""Seeded fuzz test of the dead-channel scan and of the image encoders.

What is driven:

* :func:`cnnwidgets.methods.dead.dead_channels`, :func:`default_dead_layers` and
  :func:`zeroed_by_relu` on random small CNNs (convolutions, batch norms, ReLU, ReLU6, LeakyReLU,
  GELU, in place or not, max and average pools, dropouts, identities, local response norms), some of whose channels are made dead on purpose
  (a very negative bias before a ReLU; zero weights and a bias just below zero; a batch norm that
  makes a channel constant and negative; a channel that is negative only, before a GELU or a
  LeakyReLU), some nearly dead (zero weights and a bias just above zero), fed the same images as a
  tensor, an ``(images, labels)`` pair, a list or a generator of batches, a list of single images
  or of ``(image, label)`` pairs, a ``DataLoader`` of a ``TensorDataset``, with random layers
  (the default set, one name, several), thresholds, batch sizes, a model or a ``Probe``, the
  model in training or evaluation mode; and invalid arguments of every kind (wrong types, empty
  data, NaN and integer images, wrong channel counts, channels-last batches, unknown layers,
  bad thresholds and batch sizes);
* :func:`cnnwidgets.render.encode.encode_png`, :func:`encode_jpeg` and :func:`encode_image` on
  uint8 arrays (H, W), (H, W, 3), (H, W, 4) of random sizes (1x1, 1xN, Nx1, large), laid out
  contiguously, as strided and reversed views, in Fortran order, read-only, as RGB views of
  4-byte pixels (whole buffers, windows, offset channels), with random levels, qualities and
  subsampling; and invalid images, dtypes, shapes, formats, levels and qualities.

The oracle (computed here, not by the code under test):

* each layer's per-channel maximum over all images and positions comes from forward hooks on an
  evaluation-mode deep copy of the model, run on the concatenated images; a channel is dead iff
  that maximum is ``<= threshold``; the active fraction is the share of units ``> threshold``;
  the default layer set is, in execution order, every activation module and every convolution
  whose output reaches a ReLU/ReLU6 through pools, dropouts or local response norms only; ``zeroed_by_relu`` holds iff the
  module's output reaches a ReLU or ReLU6 that way (for any kind of module); the user's model keeps its hooks, weights, buffers, gradients and
  training flags;
* PNG bytes decode with PIL to exactly the input pixels (mode L, RGB or RGBA); JPEG bytes decode
  to the input's size and mode (L or RGB), within a tolerance of the input for smooth images; any
  memory layout encodes to the same bytes as its contiguous copy;
* invalid arguments are refused with the documented ``TypeError``, ``ValueError`` or ``KeyError``
  raised by cnnwidgets, whose message says what was wrong and what is accepted.

Every random case comes from a fixed seed. Tests marked ``# was:`` pin bugs this fuzzing found.
"""

from __future__ import annotations

import copy
import io
import random
import re

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from cnnwidgets import Probe
from cnnwidgets.methods.dead import DeadChannels, dead_channels, default_dead_layers, zeroed_by_relu
from cnnwidgets.render.encode import JPEG_MAX_SIDE, encode_image, encode_jpeg, encode_png
from tests.helpers import UserModelSnapshot, raised_by_the_package

_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU)
_POOLS = (nn.MaxPool2d, nn.AvgPool2d)
#: What may run between a convolution and its activation here, keeping signs.
_BETWEEN = (*_POOLS, nn.Dropout, nn.Identity, nn.LocalResponseNorm)


# --------------------------------------------------------------------------- random CNNs, written here
def _activation(rng: random.Random) -> nn.Module:
    kind = rng.choice(_ACTIVATIONS)
    if kind is nn.GELU:
        return nn.GELU()
    if kind is nn.LeakyReLU:
        return nn.LeakyReLU(rng.choice([0.01, 0.2]), inplace=rng.random() < 0.3)
    return kind(inplace=rng.random() < 0.4)


def _random_cnn(rng: random.Random) -> tuple[nn.Sequential, int]:
    """A seeded CNN of 1..3 blocks (conv, [BN], activation, [pool]); some channels dead on purpose.
    Returns it and its input channel count."""
    torch.manual_seed(rng.randrange(2**31))
    cin = rng.choice([1, 3, 4])
    modules: list[nn.Module] = []
    channels = cin
    pools = 0
    for _ in range(rng.randint(1, 3)):
        out = rng.randint(2, 7)
        conv = nn.Conv2d(channels, out, rng.choice([1, 3]), padding="same")
        modules.append(conv)
        bn = nn.BatchNorm2d(out) if rng.random() < 0.3 else None
        if bn is not None:
            with torch.no_grad():
                bn.running_mean.uniform_(-0.2, 0.2)
                bn.running_var.uniform_(0.5, 2.0)
            modules.append(bn)
        if bn is None and rng.random() < 0.3:
            between = rng.choice([nn.Dropout(0.5), nn.Identity(), nn.LocalResponseNorm(2)])
            modules.append(between)
        act = _activation(rng)
        modules.append(act)
        with torch.no_grad():
            for c in rng.sample(range(out), rng.randint(0, min(3, out))):
                how = rng.choice(["bias", "just_below", "just_above", "bn"])
                if how == "bn" and bn is not None:
                    bn.weight[c], bn.bias[c] = 0.0, -1.0  # constant -1 after the norm
                elif how == "bias" and bn is None:
                    conv.bias[c] = -1e4  # never positive for these inputs
                elif how in ("just_below", "just_above"):
                    conv.weight[c] = 0.0
                    conv.bias[c] = -1e-3 if how == "just_below" else 1e-3
                    if bn is not None:
                        bn.weight[c], bn.bias[c] = 0.0, conv.bias[c] * 10
        if rng.random() < 0.4 and pools < 2:
            modules.append(rng.choice(_POOLS)(2))
            pools += 1
        channels = out
    modules += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, rng.randint(2, 4))]
    model = nn.Sequential(*modules)
    model.train(rng.random() < 0.3)
    return model, cin


def _reaches_relu(model: nn.Sequential, i: int) -> bool:
    """Whether module ``i``'s output reaches a ReLU/ReLU6 through pools, dropouts, identities and
    local response norms only (what ``zeroed_by_relu`` says)."""
    j = i + 1
    while j < len(model) and isinstance(model[j], _BETWEEN):
        j += 1
    return j < len(model) and isinstance(model[j], (nn.ReLU, nn.ReLU6))


def _expected_default(model: nn.Sequential) -> list[str]:
    """The documented default set for these Sequentials: activations, and convolutions whose output
    reaches a ReLU/ReLU6 through pools, dropouts, identities and local response norms only."""
    names = []
    mods = list(model)
    for i, m in enumerate(mods):
        if isinstance(m, nn.Conv2d):
            j = i + 1
            while j < len(mods) and isinstance(mods[j], _BETWEEN):
                j += 1
            if j < len(mods) and isinstance(mods[j], (nn.ReLU, nn.ReLU6)):
                names.append(str(i))
        elif isinstance(m, _ACTIVATIONS):
            names.append(str(i))
    return names


def _reference(model: nn.Module, x: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
    """Every output of ``names`` (channels on dim 1) from a full forward of an eval float32 copy."""
    clone = copy.deepcopy(model).eval().float()
    modules = dict(clone.named_modules())
    outs: dict[str, torch.Tensor] = {}
    handles = [modules[n].register_forward_hook(lambda mod, args, out, n=n: outs.__setitem__(n, out.detach().clone()))
               for n in names]
    try:
        with torch.no_grad():
            clone(x.float())
    finally:
        for h in handles:
            h.remove()
    return outs


def _forms(rng: random.Random, x: torch.Tensor) -> tuple[str, object]:
    """The images ``x`` in one of the data forms the scan reads."""
    n = x.shape[0]
    y = torch.arange(n) % 3
    cuts = sorted(rng.sample(range(1, n), rng.randint(0, min(3, n - 1)))) if n > 1 else []
    parts = [x[a:b] for a, b in zip([0, *cuts], [*cuts, n])]
    kind = rng.choice(["tensor", "pair", "list", "generator", "singles", "single_pairs", "loader", "tuple_batches"])
    if kind == "tensor":
        return kind, x
    if kind == "pair":
        return kind, (x, y)
    if kind == "list":
        return kind, parts
    if kind == "generator":
        return kind, (p for p in parts)
    if kind == "singles":
        return kind, list(x)
    if kind == "single_pairs":
        return kind, [(x[i], int(y[i])) for i in range(n)]
    if kind == "tuple_batches":
        return kind, [(p, torch.zeros(p.shape[0], dtype=torch.long)) for p in parts]
    return kind, DataLoader(TensorDataset(x, y), batch_size=rng.randint(1, n), shuffle=False)


def _check_report(report: dict, reference: dict, names: list[str], threshold: float, n: int) -> None:
    assert list(report) == names
    for name in names:
        got, ref = report[name], reference[name]
        assert isinstance(got, DeadChannels) and got.layer == name and got.num_images == n
        assert got.threshold == threshold
        a = ref.transpose(0, 1).reshape(ref.shape[1], -1).double()  # (C, units)
        ref_max = a.amax(1).numpy()
        assert got.max_activation.dtype == np.float32 and got.max_activation.shape == ref_max.shape, name
        assert np.allclose(got.max_activation, ref_max, rtol=1e-5, atol=1e-5), (name, got.max_activation, ref_max)
        assert got.is_dead.dtype == bool and got.num_channels == a.shape[0]
        clear = np.abs(ref_max - threshold) > 1e-4  # away from float noise
        assert np.array_equal(got.is_dead[clear], (ref_max <= threshold)[clear]), (name, got.dead, ref_max, threshold)
        assert got.dead == sorted(np.flatnonzero(got.is_dead).tolist())
        assert got.dead_fraction == pytest.approx(len(got.dead) / a.shape[0])
        ref_frac = (a > threshold).double().mean(1).numpy()
        slack = ((a - threshold).abs() < 1e-5).double().mean(1).numpy()
        assert got.active_fraction.shape == ref_frac.shape
        assert np.all(np.abs(got.active_fraction - ref_frac) <= slack + 1e-12), (name, got.active_fraction, ref_frac)
        assert str(len(got.dead)) in repr(got)


def _grads(model: nn.Module) -> dict[str, torch.Tensor | None]:
    return {k: None if p.grad is None else p.grad.clone() for k, p in model.named_parameters()}


def _unchanged(model: nn.Module, snapshot: UserModelSnapshot, grads: dict) -> None:
    snapshot.assert_unchanged(model)
    now = _grads(model)
    for k, g in grads.items():
        assert (g is None and now[k] is None) or torch.equal(g, now[k]), f"the gradient of {k} changed"


@pytest.mark.parametrize("seed", range(40))
def test_scan_of_random_cnns_matches_the_hooked_reference(seed):
    rng = random.Random(seed)
    model, cin = _random_cnn(rng)
    if rng.random() < 0.5:  # a gradient left by the user's training step
        model[0].weight.grad = torch.randn_like(model[0].weight)
    snapshot, grads = UserModelSnapshot.take(model), _grads(model)
    probe_ok = Probe(model, input_size=(cin, 10, 10))
    all_names = [n for n, _ in model.named_children()]
    defaults = _expected_default(model)
    assert default_dead_layers(probe_ok) == defaults
    for name in all_names:
        assert zeroed_by_relu(probe_ok, name) == _reaches_relu(model, int(name)), name
    for _ in range(5):
        n = rng.randint(1, 9)
        h, w = rng.randint(8, 13), rng.randint(8, 13)
        x = torch.randn(n, cin, h, w) * rng.choice([0.5, 1.0, 3.0])
        if rng.random() < 0.2:
            x = x.double() if rng.random() < 0.5 else x.permute(0, 1, 3, 2).contiguous().permute(0, 1, 3, 2)
        choice = rng.random()
        if choice < 0.4:
            layers, names = None, defaults
        elif choice < 0.6:
            names = [rng.choice(all_names)]
            layers = names[0]
        else:
            names = rng.sample(all_names, rng.randint(1, len(all_names)))
            layers = tuple(names) if rng.random() < 0.5 else names
        threshold = rng.choice([0.0, 0, 0.0, -0.5, 1e-3, 0.25, np.float32(0.05), np.int64(0), 2.0])
        kind, data = _forms(rng, x)
        target = probe_ok if rng.random() < 0.3 else model
        report = dead_channels(target, data, layers, threshold=threshold, batch_size=rng.randint(1, 10), progress=False)
        _check_report(report, _reference(model, x, names), names, float(threshold), n)
        _unchanged(model, snapshot, grads)
    probe_ok.close()


def test_channels_made_dead_on_purpose_are_found():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(5, 4, 1), nn.GELU(),
                          nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4), nn.LeakyReLU(0.1), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(4, 2)).eval()
    with torch.no_grad():
        model[0].bias[1] = -1e4  # dead
        model[0].weight[3], model[0].bias[3] = 0.0, 1e-6  # nearly dead: fires, barely
        model[2].weight[2], model[2].bias[2] = 0.0, -3.0  # negative only before a GELU: never positive
        model[5].weight[0], model[5].bias[0] = 0.0, -0.5  # constant negative after the norm
    report = dead_channels(model, torch.randn(6, 3, 9, 9), progress=False)
    assert list(report) == ["0", "1", "3", "6"]
    assert report["0"].dead == [1] and report["1"].dead == [1]
    assert report["1"].max_activation[3] == pytest.approx(1e-6) and report["1"].active_fraction[3] == 1.0
    assert 2 in report["3"].dead and report["3"].max_activation[2] < 0
    assert 0 in report["6"].dead
    assert dead_channels(model, torch.randn(2, 3, 9, 9), "1", threshold=1e-5, progress=False)["1"].dead[:2] == [1, 3]


# --------------------------------------------------------------------------- invalid scans
def _bad_scans(x: torch.Tensor):
    """(what, kwargs over the base call, error, what the message must match)."""
    nan = x.clone()
    nan[0, 0, 0, 0] = float("nan")
    return [
        ("inputs None", {"inputs": None}, TypeError, r"tensor"),
        ("inputs int", {"inputs": 3}, TypeError, r"tensor"),
        ("inputs path", {"inputs": "images/"}, TypeError, r"path|load"),
        ("inputs numpy", {"inputs": x.numpy()}, TypeError, r"from_numpy"),
        ("empty batch", {"inputs": x[:0]}, ValueError, r"no batch"),
        ("empty list", {"inputs": []}, ValueError, r"no batch"),
        ("empty generator", {"inputs": (b for b in ())}, ValueError, r"no batch"),
        ("NaN image", {"inputs": nan}, ValueError, r"finite"),
        ("inf image", {"inputs": x * float("inf")}, ValueError, r"finite"),
        ("int images", {"inputs": x.long()}, ValueError, r"float"),
        ("uint8 images", {"inputs": x.abs().to(torch.uint8)}, ValueError, r"float"),
        ("bool images", {"inputs": x > 0}, ValueError, r"float"),
        ("wrong channels", {"inputs": torch.randn(2, 5, 10, 10)}, ValueError, r"3 channels|takes 3"),
        ("one channel", {"inputs": torch.randn(2, 1, 10, 10)}, ValueError, r"takes 3"),
        ("channels last", {"inputs": x.permute(0, 2, 3, 1)}, ValueError, r"\(N, C, H, W\)"),
        ("3-D data", {"inputs": torch.randn(3, 10, 10)}, ValueError, r"\(N, C, H, W\)"),
        ("5-D data", {"inputs": torch.randn(1, 2, 3, 10, 10)}, ValueError, r"\(N, C, H, W\)"),
        ("pair of other length", {"inputs": (x, torch.arange(x.shape[0] + 1))}, ValueError, r"label"),
        ("singles of two sizes", {"inputs": [x[0], torch.randn(3, 12, 12)]}, ValueError, r"size"),
        ("unknown layer", {"layers": "nope"}, KeyError, r"unknown layer.*Known"),
        ("one unknown layer", {"layers": ["0", "nope"]}, KeyError, r"unknown layer"),
        ("whole model", {"layers": ""}, KeyError, r"whole model"),
        ("layer index", {"layers": 3}, TypeError, r"layer names are strings"),
        ("layer None item", {"layers": ["0", None]}, TypeError, r"layer names are strings"),
        ("layer bytes", {"layers": b"0"}, TypeError, r"decode"),
        ("layer module", {"layers": nn.ReLU()}, TypeError, r"name the layer"),
        ("no layers", {"layers": []}, ValueError, r"layers is empty"),
        ("NaN threshold", {"threshold": float("nan")}, ValueError, r"threshold must be a finite number"),
        ("inf threshold", {"threshold": float("-inf")}, ValueError, r"threshold must be a finite number"),
        ("huge threshold", {"threshold": 10**400}, ValueError, r"threshold must be a finite number"),
        ("str threshold", {"threshold": "0"}, TypeError, r"threshold must be a number"),
        ("None threshold", {"threshold": None}, TypeError, r"threshold must be a number"),
        ("bool threshold", {"threshold": True}, TypeError, r"threshold must be a number"),
        ("tensor threshold", {"threshold": torch.tensor(0.0)}, TypeError, r"threshold must be a number"),
        ("complex threshold", {"threshold": 1j}, TypeError, r"threshold must be a number"),
        ("zero batch size", {"batch_size": 0}, ValueError, r"batch_size must be an int >= 1"),
        ("negative batch size", {"batch_size": -3}, ValueError, r"batch_size must be an int >= 1"),
        ("float batch size", {"batch_size": 4.0}, TypeError, r"batch_size must be an int >= 1"),
        ("bool batch size", {"batch_size": True}, TypeError, r"batch_size must be an int >= 1"),
        ("str batch size", {"batch_size": "4"}, TypeError, r"batch_size must be an int >= 1"),
        ("int progress", {"progress": 1}, TypeError, r"progress must be True or False"),
        ("str progress", {"progress": "no"}, TypeError, r"progress must be True or False"),
        ("None model", {"model_or_probe": None}, TypeError, r"nn.Module"),
        ("str model", {"model_or_probe": "resnet18.pt"}, TypeError, r"nn.Module"),
        ("function model", {"model_or_probe": lambda t: t}, TypeError, r"nn.Module"),
    ]


def test_invalid_scans_are_refused_clearly_and_leave_the_model_alone():
    rng = random.Random(7)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 4, 3, padding=1),
                          nn.GELU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    snapshot, grads = UserModelSnapshot.take(model), _grads(model)
    x = torch.randn(3, 3, 10, 10)
    cases = _bad_scans(x)
    rng.shuffle(cases)
    for what, change, error, accepted in cases:
        kwargs = {"model_or_probe": model, "inputs": x, "layers": None, "threshold": 0.0, "batch_size": 2,
                  "progress": False, **change}
        with pytest.raises(Exception) as info:
            dead_channels(kwargs.pop("model_or_probe"), kwargs.pop("inputs"), kwargs.pop("layers"), **kwargs)
        exc = info.value
        message = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
        assert type(exc) is error or (isinstance(exc, error) and type(exc).__module__.startswith("cnnwidgets")), \
            f"{what}: {type(exc).__name__}: {message}"
        assert raised_by_the_package(exc), f"{what}: raised outside cnnwidgets: {type(exc).__name__}: {message}"
        assert re.search(accepted, message), f"{what}: {message}"
        _unchanged(model, snapshot, grads)


def test_helpers_refuse_what_they_do_not_take():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.AdaptiveAvgPool2d(1))
    probe = Probe(model, input_size=(3, 8, 8))
    for call, error, accepted in [
        (lambda: zeroed_by_relu(probe, "nope"), KeyError, r"unknown layer 'nope'.*Known"),
        (lambda: zeroed_by_relu(probe, 0), TypeError, r"layer names are strings"),
        (lambda: zeroed_by_relu(probe, None), TypeError, r"layer names are strings"),
        (lambda: zeroed_by_relu(model, "0"), TypeError, r"Probe\(model\)"),
        (lambda: default_dead_layers(model), TypeError, r"Probe\(model\)"),
        (lambda: default_dead_layers(None), TypeError, r"cnnwidgets.Probe"),
    ]:
        with pytest.raises(error) as info:
            call()
        exc = info.value
        message = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
        assert raised_by_the_package(exc) and re.search(accepted, message), message
    assert zeroed_by_relu(probe, "0") and not zeroed_by_relu(probe, "2")
    probe.close()


def test_threshold_beyond_floats_is_a_value_error():
    # was: OverflowError: int too large to convert to float
    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU())
    with pytest.raises(ValueError, match="threshold must be a finite number"):
        dead_channels(model, torch.randn(1, 3, 6, 6), threshold=10**400, progress=False)


def test_a_batch_with_the_wrong_channel_count_is_a_value_error():
    # was: _ModelFailure (a RuntimeError) with the model's own conv error about groups and weights
    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU())
    with pytest.raises(ValueError, match=r"4 channels, but the model's first convolution takes 3"):
        dead_channels(model, torch.randn(2, 4, 6, 6), progress=False)


def test_layers_named_by_numpy_strings_key_the_report_by_plain_str():
    # was: layers=np.array(["0", "1"]) keyed the report (and DeadChannels.layer) by numpy.str_, which prints
    # as np.str_('0') in a notebook and does not equal a key of probe.layers in a repr
    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU())
    report = dead_channels(model, torch.randn(2, 3, 6, 6), np.array(["0", "1"]), progress=False)
    assert list(report) == ["0", "1"]
    assert all(type(name) is str and type(result.layer) is str for name, result in report.items())
    single = dead_channels(model, torch.randn(2, 3, 6, 6), np.str_("1"), progress=False)
    assert [type(name) for name in single] == [str]
    with Probe(model) as probe:
        captured = probe.capture(torch.randn(1, 3, 6, 6), np.array(["1"]))
    assert [type(name) for name in captured] == [str]


def test_a_batch_with_one_channel_too_few_says_what_the_model_takes_once():
    # was: the dead scan's message repeated the probe's, and other methods had only torch's convolution error
    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU())
    with pytest.raises(ValueError) as info:
        dead_channels(model, torch.randn(2, 1, 6, 6), progress=False)
    message = str(info.value)
    assert message.count("first convolution takes 3") == 1, message
    assert "has 1 channel, but" in message and "expected input[1, 1, 6, 6] to have 3 channels" in message
    with Probe(model) as probe, pytest.raises(RuntimeError, match=r"input has 1 channel, but the model's first "
                                                                 r"convolution takes 3: give inputs \(N, 3, H, W\)"):
        probe.capture(torch.randn(1, 1, 6, 6), "1")


def test_helpers_given_a_model_or_an_unknown_layer():
    # was: AttributeError: 'Sequential' object has no attribute 'layers'; a bare KeyError('nope')
    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU())
    with pytest.raises(TypeError, match=r"Probe\(model\)"):
        default_dead_layers(model)
    with pytest.raises(TypeError, match=r"Probe\(model\)"):
        zeroed_by_relu(model, "0")
    probe = Probe(model, input_size=(3, 6, 6))
    with pytest.raises(KeyError, match="unknown layer"):
        zeroed_by_relu(probe, "nope")
    with pytest.raises(TypeError, match="layer names are strings"):
        zeroed_by_relu(probe, 1)
    probe.close()


# --------------------------------------------------------------------------- encoders
def _decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def _smooth(rng: np.random.Generator, h: int, w: int, c: int | None) -> np.ndarray:
    """A smooth uint8 picture (JPEG keeps it closely), with a little noise."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    planes = []
    for _ in range(c or 1):
        a, b, p = rng.uniform(-3, 3, 3)
        planes.append(128 + 90 * np.sin(a * yy / max(h, 8) + b * xx / max(w, 8) + p))
    image = np.stack(planes, -1) + rng.normal(0, 2, (h, w, c or 1))
    image = np.clip(image, 0, 255).astype(np.uint8)
    return image[:, :, 0] if c is None else image


def _layouts(rng: np.random.Generator, image: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """``image`` in several memory layouts, each equal to it."""
    out = [("contiguous", image), ("fortran", np.asfortranarray(image))]
    reversed_ = np.ascontiguousarray(image[::-1, ::-1])[::-1, ::-1]
    out.append(("negative strides", reversed_))
    big = np.zeros((image.shape[0] * 2, image.shape[1] * 3, *image.shape[2:]), np.uint8)
    big[::2, ::3] = image
    out.append(("strided", big[::2, ::3]))
    ro = image.copy()
    ro.setflags(write=False)
    out.append(("read-only", ro))
    out.append(("from bytes", np.frombuffer(image.tobytes(), np.uint8).reshape(image.shape)))
    if image.ndim == 3 and image.shape[2] == 3:
        h, w = image.shape[:2]
        rgbx = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
        rgbx[:, :, :3] = image
        out.append(("RGB of RGBX", rgbx[:, :, :3]))
        shifted = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
        shifted[:, :, 1:] = image
        out.append(("RGB at offset 1 of 4-byte pixels", shifted[:, :, 1:]))
        wide = rng.integers(0, 256, (h + 2, w + 3, 4), dtype=np.uint8)
        wide[1:h + 1, 2:w + 2, :3] = image
        out.append(("window of RGBX", wide[1:h + 1, 2:w + 2, :3]))
        tall = rng.integers(0, 256, (h + 3, w, 4), dtype=np.uint8)
        tall[3:, :, :3] = image
        out.append(("last rows of RGBX", tall[3:, :, :3]))
    return out


_SIZES = [(1, 1), (1, 9), (9, 1), (2, 2), (7, 5), (16, 16), (33, 17), (64, 96), (257, 3)]
_CHANNELS = [None, 3, 4]
_MODES = {None: "L", 3: "RGB", 4: "RGBA"}


@pytest.mark.parametrize("seed", range(3))
def test_png_decodes_to_the_input_in_every_layout(seed):
    rng = np.random.default_rng(seed)
    for h, w in _SIZES + [(int(rng.integers(300, 700)), int(rng.integers(300, 900)))]:
        for c in _CHANNELS:
            image = rng.integers(0, 256, (h, w) if c is None else (h, w, c), dtype=np.uint8)
            if rng.random() < 0.3:
                image[:] = rng.integers(0, 256)  # flat
            level = int(rng.integers(0, 10))
            plain = encode_png(image, level)
            for what, view in _layouts(rng, image):
                data = encode_png(view, rng.choice([level, np.int64(level)])) if what != "contiguous" else plain
                assert data == plain, (what, image.shape)
                decoded = _decode(data)
                assert decoded.mode == _MODES[c] and decoded.size == (w, h)
                assert np.array_equal(np.asarray(decoded), image), what
            via = encode_image(image, "png", quality=int(rng.integers(1, 96)))
            assert np.array_equal(np.asarray(_decode(via)), image)


@pytest.mark.parametrize("seed", range(3))
def test_jpeg_decodes_close_to_the_input_in_every_layout(seed):
    rng = np.random.default_rng(100 + seed)
    for h, w in _SIZES + [(int(rng.integers(300, 700)), int(rng.integers(300, 900)))]:
        for c in (None, 3):
            image = _smooth(rng, h, w, c)
            quality = int(rng.integers(60, 96))
            subsampling = bool(rng.random() < 0.5)
            plain = encode_jpeg(image, quality, subsampling=subsampling)
            for what, view in _layouts(rng, image):
                data = plain if what == "contiguous" else encode_jpeg(view, quality, subsampling=np.bool_(subsampling))
                assert data == plain or np.array_equal(np.asarray(_decode(data)), np.asarray(_decode(plain))), what
            decoded = _decode(plain)
            assert decoded.mode == _MODES[c] and decoded.size == (w, h)
            error = np.abs(np.asarray(decoded).astype(int) - image.astype(int))
            # a tiny picture's few blocks (and 4:2:0 colours averaged over them) are coarser
            limit = 6 if h * w >= 64 else 20
            assert error.mean() < limit and (h * w < 64 or np.percentile(error, 99) < 40), (h, w, error.mean())
            noise = rng.integers(0, 256, image.shape, dtype=np.uint8)  # any pixels: size and mode only
            for q in (1, int(rng.integers(1, 96)), 95):
                decoded = _decode(encode_image(noise, "jpeg", quality=q))
                assert decoded.mode == _MODES[c] and decoded.size == (w, h)


def test_jpeg_sides_up_to_the_limit():
    line = np.arange(JPEG_MAX_SIDE, dtype=np.int64).astype(np.uint8)[None, :]
    assert _decode(encode_jpeg(line)).size == (JPEG_MAX_SIDE, 1)
    too_long = np.zeros((JPEG_MAX_SIDE + 1, 1), np.uint8)
    with pytest.raises(ValueError, match="PNG"):
        encode_jpeg(too_long)
    assert _decode(encode_png(too_long)).size == (1, JPEG_MAX_SIDE + 1)


def _bad_encodes():
    """(what, call, error, what the message must match)."""
    rng = np.random.default_rng(5)
    rgb = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
    cases = []
    for dtype in (np.bool_, np.int8, np.uint16, np.int32, np.int64, np.float16, np.float32, np.float64, np.complex64):
        arr = rgb.astype(dtype)
        cases += [(f"{dtype.__name__} image", f, arr, ValueError, r"uint8") for f in ("png", "jpeg", "image")]
    for shape in [(6, 5, 2), (6, 5, 5), (30,), (), (1, 6, 5, 3), (0, 5), (6, 0, 3), (0, 0, 4)]:
        arr = np.zeros(shape, np.uint8)
        accepted = r"empty" if 0 in shape and len(shape) in (2, 3) and shape[-1] in (5, 3, 4, 0) else r"\(H, W\)"
        cases += [(f"shape {shape}", f, arr, ValueError, accepted) for f in ("png", "jpeg", "image")]
    for value in (None, "image.png", b"\x89PNG", [[1, 2], [3]], {"a": 1}):
        cases += [(f"image {value!r}", f, value, TypeError, r"uint8 numpy array") for f in ("png", "jpeg", "image")]
    cases.append(("RGBA JPEG", "jpeg", np.zeros((4, 4, 4), np.uint8), ValueError, r"alpha"))
    out = []
    for what, f, arr, error, accepted in cases:
        call = {"png": lambda a=arr: encode_png(a), "jpeg": lambda a=arr: encode_jpeg(a),
                "image": lambda a=arr: encode_image(a, "png")}[f]
        out.append((f"{f}: {what}", call, error, accepted))
    for q, error in [(0, ValueError), (96, ValueError), (-1, ValueError), (10**30, ValueError), (50.0, TypeError),
                     (True, TypeError), ("90", TypeError), (None, TypeError), (np.float64(9), TypeError)]:
        out.append((f"jpeg quality {q!r}", lambda q=q: encode_jpeg(rgb, q), error, r"JPEG quality must be an int"))
        out.append((f"image jpeg quality {q!r}", lambda q=q: encode_image(rgb, "jpeg", quality=q), error,
                    r"JPEG quality must be an int"))
        out.append((f"image png quality {q!r}", lambda q=q: encode_image(rgb, "png", quality=q), error,
                    r"JPEG quality must be an int"))
    for level, error in [(-1, ValueError), (10, ValueError), (1.0, TypeError), (False, TypeError), ("1", TypeError)]:
        out.append((f"png level {level!r}", lambda v=level: encode_png(rgb, v), error, r"compress_level must be an int"))
    for flag in (1, 0, None, "yes", np.int64(1)):
        out.append((f"subsampling {flag!r}", lambda v=flag: encode_jpeg(rgb, subsampling=v), TypeError,
                    r"subsampling must be True or False"))
    for fmt, error in [("JPEG", ValueError), ("jpg", ValueError), ("", ValueError), ("png ", ValueError),
                       (None, TypeError), (3, TypeError), (["png"], TypeError), (np.array(["jpeg", "png"]), TypeError)]:
        out.append((f"format {fmt!r}", lambda v=fmt: encode_image(rgb, v), error, r"jpeg, png"))
    return out


def test_invalid_encodes_are_refused_clearly():
    for what, call, error, accepted in _bad_encodes():
        with pytest.raises(Exception) as info:
            call()
        exc = info.value
        assert type(exc) is error, f"{what}: {type(exc).__name__}: {exc}"
        assert raised_by_the_package(exc), f"{what}: raised outside cnnwidgets: {exc}"
        assert re.search(accepted, str(exc)), f"{what}: {exc}"


def test_other_array_likes_are_encoded_as_their_arrays():
    rng = np.random.default_rng(9)
    rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    for value in (torch.from_numpy(rgb), Image.fromarray(rgb), np.ma.masked_array(rgb)):
        assert np.array_equal(np.asarray(_decode(encode_png(value))), rgb)
        assert _decode(encode_jpeg(value)).size == (7, 5)


def test_one_channel_images_encode_as_gray():
    # was: (H, W, 1) was refused ("expected an image of shape (H, W), (H, W, 3) or (H, W, 4)"), though it is
    # how a one-channel picture often comes out of numpy and the status views took it
    rng = np.random.default_rng(11)
    gray = rng.integers(0, 256, (7, 9), dtype=np.uint8)
    column = gray[:, :, None]
    assert encode_png(column) == encode_png(gray)
    assert np.array_equal(np.asarray(_decode(encode_png(column))), gray)
    assert encode_jpeg(column, 80) == encode_jpeg(gray, 80)
    assert encode_image(column, "png") == encode_image(gray, "png")
    assert _decode(encode_image(column, "jpeg")).mode == "L"
    with pytest.raises(ValueError, match="empty"):
        encode_png(np.zeros((0, 4, 1), np.uint8))


def test_encode_image_checks_quality_for_png_too():
    # was: encode_image(image, "png", quality=0 / "90" / None) was accepted and the quality ignored
    with pytest.raises(ValueError, match="JPEG quality"):
        encode_image(np.zeros((2, 2), np.uint8), "png", quality=0)
    with pytest.raises(TypeError, match="JPEG quality"):
        encode_image(np.zeros((2, 2), np.uint8), "png", quality="90")


def test_encode_image_format_of_another_type():
    # was: ValueError from NumPy (truth value of an array is ambiguous); None: a ValueError "unknown format"
    with pytest.raises(TypeError, match="image format must be a str"):
        encode_image(np.zeros((2, 2), np.uint8), np.array(["jpeg", "png"]))
    with pytest.raises(TypeError, match="image format must be a str"):
        encode_image(np.zeros((2, 2), np.uint8), None)


def test_an_image_that_is_no_array():
    # was: ValueError "only uint8 images can be encoded, got object" for None; NumPy's ValueError for a ragged list
    with pytest.raises(TypeError, match="uint8 numpy array"):
        encode_png(None)
    with pytest.raises(TypeError, match="uint8 numpy array"):
        encode_jpeg([[1, 2], [3]])
