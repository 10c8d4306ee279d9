"""Oracle fuzz test: the data-set and model-inspection methods compute the right numbers on random CNNs.

Driven, on models drawn from fixed seeds (Sequential and custom-forward CNNs with random
convolutions - kernel, stride, padding, dilation, groups, bias -, batch norms, in-place and
out-of-place ReLUs, max and average pools with and without ``ceil_mode``, residual blocks whose
shortcut is added in place or not, concatenated branches, Flatten + Linear or functional
global-average heads; non-square images with 1 or 3 channels):

* :func:`scan_topk` / :class:`TopKActivations` (``per_image`` True and False, several batch sizes
  and data forms, a scan stopped part-way and resumed, kept images or images read back from the
  data set, a save/load round trip), :meth:`TopKActivations.patches`, :meth:`TopKActivations.projections`
  and :func:`receptive_field_box`, on top-level layers, layers inside blocks and the classifier;
* :func:`invariance_curves` (translation, rotation, scale; raw and normalised distances; the default layers);
* :func:`correspondence` (parts and the random control);
* :func:`model_summary` (parameters, output shapes, receptive field, jump);
* :func:`kernel_weights` and :func:`conv_layer_names`;
* :class:`FeatureEvolutionRecorder` at several moments of a hand-written training loop.

Oracles, written here independently of the package and run on a ``copy.deepcopy`` of the user's
model in eval mode, with forward hooks that clone each layer's output when it is made (so a later
in-place ReLU or ``+=`` does not change what was captured):

* top-k: a brute-force ranking of every candidate (each image's first maximum in row-major order,
  or every unit) by value, then image index, then row-major position; values computed in another
  batching may differ by rounding, so where two candidates lie within rounding of each other only
  the values are compared. Crops: the receptive field ``r``, jump ``j`` and start ``c`` tracked by
  the model builder with the recurrence ``r' = r + (k - 1) d j``, ``j' = j s``,
  ``c' = c + ((k - 1) d / 2 - p) j`` (the largest field where branches meet), the box's top-left
  ``round(c - (r - 1) / 2) + (row, col) j``, and a crop written with numpy padding. Projections: a
  projector whose output names the image, channel and unit it was given, cropped the same way.
* invariance: the images transformed by hand (an integer shift with ``"nearest"`` is a row shift,
  a 180 degree rotation two flips, a 90 degree one on a square image ``rot90``; scales through
  ``torchvision``'s ``affine`` as documented), then the documented distances and softmax probability;
  the default "penultimate" layer's output is what a forward pre-hook on the output layer sees.
* correspondence: the occluded images, the signs with the documented tolerance, the Hamming
  fractions, their mean and population standard deviation over pairs, the ordered-pair total.
* summary: parameter counts from the modules, output shapes from the hooks, and the receptive field
  and jump from the builder's recurrence and, on models with all-positive weights, inputs and
  average pools, from autograd: the bounding box of the input pixels whose gradient is nonzero for
  one unit is its receptive field (where it fits inside the image), and moves by the jump from a unit
  to the next.
* kernels: the convolution's weight tensor, normalised by hand.
* evolution: the argmax over images and units of the model's activations at that moment, its crop
  and projection as for top-k; the classifier found as the class layer.

Every case also checks that the user's model is unchanged afterwards (hooks, parameters, buffers,
training flags). Regression tests at the end, marked ``# was:``, pin the bugs this fuzzing found.
"""

from __future__ import annotations

import copy
import random
import warnings
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from torch import nn
from torchvision.transforms import InterpolationMode

from cnnwidgets.methods import (
    FeatureEvolutionRecorder,
    conv_layer_names,
    correspondence,
    invariance_curves,
    kernel_weights,
    model_summary,
    scan_topk,
)
from cnnwidgets.methods.correspondence import RANDOM, random_boxes
from cnnwidgets.methods.topk import TopKActivations, receptive_field_box
from tests.helpers import UserModelSnapshot


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The models are tiny: one thread computes them faster than a pool that waits for busy cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


# ---------------------------------------------------------------------------- random models

Geometry = tuple[int, int, float]  # receptive field, jump, start


def _after(geo: Geometry | None, k: int, s: int, p: int, d: int) -> Geometry | None:
    """The recurrence for one window (kernel k, stride s, padding p, dilation d)."""
    if geo is None:
        return None
    r, j, c = geo
    return (r + (k - 1) * d * j, j * s, c + ((k - 1) * d / 2 - p) * j)


def _merge(*geos: Geometry | None) -> Geometry | None:
    """Branches that meet: one jump and start, the largest field; else unknown."""
    if any(g is None for g in geos) or len({(g[1], g[2]) for g in geos}) != 1:
        return None
    return (max(g[0] for g in geos), geos[0][1], geos[0][2])


class Residual(nn.Module):
    """conv-bn-relu-conv-bn plus a shortcut (added in place when ``inplace_add``), then a ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int, inplace_add: bool, inplace_relu: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu1 = nn.ReLU(inplace=inplace_relu)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        same = stride == 1 and c_in == c_out
        self.shortcut = nn.Identity() if same else nn.Conv2d(c_in, c_out, 1, stride, bias=False)
        self.relu2 = nn.ReLU(inplace=inplace_relu)
        self.inplace_add = inplace_add

    def forward(self, x):
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        identity = self.shortcut(x)
        if self.inplace_add:
            out += identity
        else:
            out = out + identity
        return self.relu2(out)


class Branches(nn.Module):
    """A k x k convolution beside a 3 x 3 pool and a 1 x 1 convolution, concatenated."""

    def __init__(self, c_in: int, a: int, b: int, k: int, avg: bool) -> None:
        super().__init__()
        self.a = nn.Conv2d(c_in, a, k, padding=k // 2)
        self.pool = nn.AvgPool2d(3, 1, 1) if avg else nn.MaxPool2d(3, 1, 1)
        self.b = nn.Conv2d(c_in, b, 1)

    def forward(self, x):
        return torch.cat([self.a(x), self.b(self.pool(x))], dim=1)


class CustomNet(nn.Module):
    """Features, then a head in ``forward``: a functional global average or a flatten."""

    def __init__(self, features: nn.Sequential, fc: nn.Linear, gap: bool) -> None:
        super().__init__()
        self.features = features
        self.fc = fc
        self.gap = gap

    def forward(self, x):
        x = self.features(x)
        return self.fc(x.mean(dim=(2, 3)) if self.gap else torch.flatten(x, 1))


@dataclass
class Case:
    model: nn.Module
    x: torch.Tensor
    geometry: dict[str, Geometry | None]   # expected geometry of the layers the builder tracked
    maps: list[str]                         # layers with a (C, H, W) output (top-level blocks and leaves)
    vector: str                             # a layer with a (C,) output (the classifier)
    classes: int
    text: str
    convs: list[str] = field(default_factory=list)


def build_case(seed: int, *, positive: bool = False, n: int = 12) -> Case:
    """The model and images of ``seed``. ``positive``: all weights, biases and inputs positive,
    average pools only and no batch-norm shifts below zero, so every path carries signal (the
    autograd receptive-field oracle)."""
    rng = random.Random(seed)
    torch.manual_seed(seed)
    channels = rng.choice([1, 3, 3])
    height, width = rng.randint(11, 20), rng.randint(11, 20)
    custom = rng.random() < 0.5
    prefix = "features." if custom else ""
    probe_x = torch.zeros(1, channels, height, width)
    modules: list[nn.Module] = []
    geometry: dict[str, Geometry | None] = {}
    maps: list[str] = []
    text: list[str] = []
    geo: Geometry | None = (1, 1, 0.0)

    def add(module: nn.Module, new_geo: Geometry | None, inner: dict[str, Geometry | None] | None = None) -> bool:
        nonlocal probe_x, geo
        try:
            with torch.no_grad():
                out = module.eval()(probe_x.clone())
        except RuntimeError:  # a kernel larger than the padded map
            return False
        if out.shape[2] < 2 or out.shape[3] < 2:
            return False
        name = f"{prefix}{len(modules)}"
        modules.append(module)
        geometry[name] = new_geo
        for sub, g in (inner or {}).items():
            geometry[f"{name}.{sub}"] = g
        maps.append(name)
        text.append(f"{name}={module!r}".replace("\n", " "))
        probe_x, geo = out, new_geo
        return True

    def conv() -> None:
        c_in = probe_x.shape[1]
        k = rng.choice([1, 2, 3, 3, 5])
        d = rng.choice([1, 1, 2]) if k > 1 else 1
        s = rng.choice([1, 1, 2, 3])
        p = rng.randint(0, (k - 1) * d // 2 + (1 if k > 2 else 0))
        c_out = rng.choice([3, 4, 6])
        groups = rng.choice([g for g in (1, 2, 3) if c_in % g == 0 and c_out % g == 0])
        bias = rng.random() < 0.6
        draw = rng.random()
        if draw < 0.1:  # a window that is not square: no receptive field
            add(nn.Conv2d(c_in, c_out, (k, k + 1), s, 0, d, groups, bias=bias), None)
        elif draw < 0.25 and s == 1:  # 'same': the top/left half of the total padding, rounded down
            add(nn.Conv2d(c_in, c_out, k, 1, "same", d, groups, bias=bias), _after(geo, k, 1, (k - 1) * d // 2, d))
        elif draw < 0.4 and (k - 1) * d // 2 >= 1:  # mirrored or repeated border, at most half the window
            p = rng.randint(1, (k - 1) * d // 2)
            mode = rng.choice(["reflect", "replicate"])
            add(nn.Conv2d(c_in, c_out, k, s, p, d, groups, bias=bias, padding_mode=mode), _after(geo, k, s, p, d))
        else:
            add(nn.Conv2d(c_in, c_out, k, s, p, d, groups, bias=bias), _after(geo, k, s, p, d))

    conv()
    while not modules:
        conv()
    for _ in range(rng.randint(3, 6)):
        kind = rng.choice(["conv", "conv", "bn", "relu", "relu", "pool", "res", "branch"])
        c = probe_x.shape[1]
        if kind == "conv":
            conv()
        elif kind == "bn":
            add(nn.BatchNorm2d(c), geo)
        elif kind == "relu":
            add(nn.ReLU(inplace=rng.random() < 0.6), geo)
        elif kind == "pool":
            k = rng.choice([2, 3])
            s = rng.choice([1, 2, k])
            p = rng.randint(0, k // 2)
            ceil = rng.random() < 0.5
            avg = positive or rng.random() < 0.3
            if rng.random() < 0.15:  # windows that follow the map's size: no receptive field
                add(nn.AdaptiveAvgPool2d((max(2, probe_x.shape[2] - 1), max(2, probe_x.shape[3] - 2))), None)
            elif avg:
                add(nn.AvgPool2d(k, s, p, ceil_mode=ceil), _after(geo, k, s, p, 1))
            else:
                d = rng.choice([1, 1, 2])
                add(nn.MaxPool2d(k, s, p, dilation=d, ceil_mode=ceil), _after(geo, k, s, p, d))
        elif kind == "res":
            stride = rng.choice([1, 1, 2])
            c_out = rng.choice([c, 4, 6])
            block = Residual(c, c_out, stride, rng.random() < 0.6, rng.random() < 0.5)
            g1 = _after(geo, 3, stride, 1, 1)
            g2 = _after(g1, 3, 1, 1, 1)
            short = geo if isinstance(block.shortcut, nn.Identity) else _after(geo, 1, stride, 0, 1)
            out = _merge(g2, short)
            add(block, out, {"conv1": g1, "bn1": g1, "relu1": g1, "conv2": g2, "bn2": g2, "relu2": out,
                             "shortcut": short})
        else:
            k = rng.choice([1, 3, 5])
            block = Branches(c, rng.choice([2, 3]), rng.choice([2, 3]), k, positive or rng.random() < 0.3)
            ga, gp = _after(geo, k, 1, k // 2, 1), _after(geo, 3, 1, 1, 1)
            add(block, _merge(ga, gp), {"a": ga, "pool": gp, "b": gp})
    features = nn.Sequential(*modules)
    if custom:
        geometry["features"] = geo  # the container: its last module's output
    classes = rng.randint(3, 5)
    c, h, w = probe_x.shape[1:]
    gap = custom and rng.random() < 0.5
    if custom:
        fc = nn.Linear(c if gap else c * h * w, classes)
        model: nn.Module = CustomNet(features, fc, gap)
        vector = "fc"
    else:
        features.append(nn.Flatten())
        features.append(nn.Linear(c * h * w, classes))
        model = features
        vector = str(len(features) - 1)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5, generator=gen)
                module.bias.normal_(0.0, 0.3, generator=gen)
                module.running_mean.normal_(0.0, 0.3, generator=gen)
                module.running_var.uniform_(0.5, 2.0, generator=gen)
                if positive:
                    module.bias.abs_().add_(0.1)
                    module.running_mean.zero_()
        if positive:
            for p in model.parameters():
                p.abs_().add_(0.01)
    if rng.random() < 0.3:
        model.train()  # the user's flag; the methods explain the eval-mode model
    else:
        model.eval()
    x = torch.randn(n, channels, height, width, generator=gen)
    if positive:
        x = x.abs() + 0.1
    convs = [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    return Case(model, x, geometry, maps, vector, classes, " | ".join(text), convs)


def reference_outputs(
    model: nn.Module, x: torch.Tensor, names: list[str]
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The outputs of ``names`` (cloned when made) and the logits of an eval-mode deep copy."""
    twin = copy.deepcopy(model).eval()
    got: dict[str, torch.Tensor] = {}
    modules = dict(twin.named_modules())
    handles = [modules[name].register_forward_hook(lambda m, i, o, name=name: got.__setitem__(name, o.detach().clone()))
               for name in names]
    with torch.no_grad():
        logits = twin(x)
    for handle in handles:
        handle.remove()
    return got, logits


# ---------------------------------------------------------------------------- top-k oracle

def _tolerance(values: torch.Tensor) -> float:
    return 1e-5 * float(values.abs().max()) + 1e-6


def expected_topk(act: torch.Tensor, channel: int, k: int, per_image: bool) -> list[tuple[float, int, int]]:
    """``(value, image, flat position)`` of the ``k`` strongest candidates, in the documented order."""
    a = act[:, channel].reshape(act.shape[0], -1).double().numpy()
    if per_image:
        cands = [(float(a[i].max()), i, int(np.argmax(a[i]))) for i in range(a.shape[0])]
    else:
        cands = [(float(a[i, p]), i, p) for i in range(a.shape[0]) for p in range(a.shape[1])]
    return sorted(cands, key=lambda t: (-t[0], t[1], t[2]))[:k], cands


def check_topk(state: TopKActivations, acts: dict[str, torch.Tensor], k: int, per_image: bool, what: str) -> None:
    for name in state.layers:
        act = acts[name]
        if act.dim() == 2:
            act = act[:, :, None, None]
        width = act.shape[3]
        tol = _tolerance(act)
        for channel in range(act.shape[1]):
            want, cands = expected_topk(act, channel, k, per_image)
            got = state.entries(name, channel)
            assert len(got) == min(k, len(cands)), f"{what}: {name} channel {channel}: {len(got)} entries"
            values = np.array([v for v, _, _ in cands])
            keys = {(e.image_index, e.row * width + e.col) for e in got}
            assert len(keys) == len(got), f"{what}: {name} channel {channel}: an entry kept twice"
            if per_image:
                assert len({e.image_index for e in got}) == len(got), f"{what}: two entries of one image"
            for rank, (entry, (value, image, pos)) in enumerate(zip(got, want)):
                where = f"{what}: {name} channel {channel} rank {rank}"
                assert abs(entry.value - value) <= tol, f"{where}: value {entry.value} != {value}"
                recomputed = float(act[entry.image_index, channel].reshape(-1)[entry.row * width + entry.col])
                assert abs(recomputed - entry.value) <= tol, f"{where}: the kept unit holds {recomputed}"
                # where no other candidate lies within rounding of this one (or those that do are exactly
                # equal, as ReLU zeros), the ranking and the tie rules fix the entry
                near = values[np.abs(values - value) <= tol]
                if np.all(near == value) and entry.value == value:
                    assert (entry.image_index, entry.row, entry.col) == (image, pos // width, pos % width), (
                        f"{where}: kept {(entry.image_index, entry.row, entry.col)}, expected "
                        f"{(image, pos // width, pos % width)}")
            if len(got) == k and len(cands) > k:
                excluded = sorted(values, reverse=True)[k]
                assert got[-1].value >= excluded - tol, f"{what}: {name} channel {channel}: a stronger unit was dropped"


def expected_box(geo: Geometry | None, row: int, col: int, height: int, width: int) -> tuple[int, int, int, int]:
    if geo is None:
        return (0, 0, height, width)
    r, j, c = geo
    top = int(round(c - (r - 1) / 2))
    return (top + row * j, top + col * j, r, r)


def numpy_crop(image: torch.Tensor, box: tuple[int, int, int, int], fill: float) -> tuple[np.ndarray, np.ndarray]:
    top, left, h, w = box
    img = image.numpy()
    _, height, width = img.shape
    pad = max(0, -top, -left, top + h - height, left + w - width)
    padded = np.pad(img, ((0, 0), (pad, pad), (pad, pad)), constant_values=fill)
    mask = np.pad(np.ones((height, width), bool), ((pad, pad), (pad, pad)), constant_values=False)
    rows, cols = slice(top + pad, top + pad + h), slice(left + pad, left + pad + w)
    return padded[:, rows, cols], mask[rows, cols]


SEEDS = list(range(10))


@pytest.mark.parametrize("seed", SEEDS)
def test_topk_equals_a_brute_force_ranking_and_crops_follow_the_geometry(seed, tmp_path):
    case = build_case(seed)
    rng = random.Random(1000 + seed)
    inner = sorted(set(case.geometry) - set(case.maps))
    layers = rng.sample(case.maps, min(2, len(case.maps))) + rng.sample(inner, min(1, len(inner))) + [case.vector]
    snapshot = UserModelSnapshot.take(case.model)
    acts, _ = reference_outputs(case.model, case.x, layers)
    labels = torch.arange(len(case.x)) % 3
    k = rng.choice([1, 3, 5])
    results = {}
    for per_image in (True, False):
        first = scan_topk(case.model, case.x, layers, k=k, per_image=per_image, batch_size=len(case.x), progress=False)
        check_topk(first, acts, k, per_image, f"seed {seed} per_image={per_image} [{case.text}]")
        results[per_image] = first
        # another batching and data form: the same entries
        batch = rng.randint(1, 5)
        forms = [
            (case.x, labels),
            [(img, int(lab)) for img, lab in zip(case.x, labels)],
            torch.utils.data.DataLoader(torch.utils.data.TensorDataset(case.x, labels), batch_size=batch),
        ]
        other = scan_topk(case.model, forms[seed % 3], layers, k=k, per_image=per_image, batch_size=batch,
                          progress=False)
        check_topk(other, acts, k, per_image, f"seed {seed} per_image={per_image} batch {batch}")
        for name in layers:
            for channel in range(first.num_channels(name)):
                for entry in other.entries(name, channel):
                    assert entry.label == int(labels[entry.image_index])
    # stopped part-way, then resumed in memory; without kept images, read back from the data set
    per_image = seed % 3 == 0
    stop = rng.randint(1, len(case.x) - 1)
    part = scan_topk(case.model, case.x, layers, k=k, per_image=per_image, keep_images=False, batch_size=batch,
                     stop_after=stop, progress=False)
    assert not part.complete and part.consumed == stop
    check_topk(part, {n: a[:stop] for n, a in acts.items()}, k, per_image, f"seed {seed} first {stop} images")
    whole = scan_topk(case.model, case.x, layers, k=k, per_image=per_image, keep_images=False, batch_size=batch,
                      resume=part, progress=False)
    assert whole.complete and whole.consumed == len(case.x) and not whole.images
    check_topk(whole, acts, k, per_image, f"seed {seed} resumed after {stop}")
    dataset = torch.utils.data.TensorDataset(case.x, labels)
    for name in layers:
        for channel in range(whole.num_channels(name)):
            kept = results[per_image].patches(name, channel)
            for a, b in zip(whole.patches(name, channel, images=dataset), whole.patches(name, channel, images=case.x)):
                assert a.box == b.box and torch.equal(a.pixels, b.pixels)
            if whole.entries(name, channel) == results[per_image].entries(name, channel):
                for a, b in zip(kept, whole.patches(name, channel, images=dataset)):
                    assert a.box == b.box and torch.equal(a.pixels, b.pixels) and torch.equal(a.valid, b.valid)
    snapshot.assert_unchanged(case.model)
    # receptive-field crops
    state = results[seed % 2 == 0]
    height, width = case.x.shape[2:]
    fill = rng.choice([0.0, -1.5])
    for name in layers:
        geo = case.geometry.get(name) if name != case.vector else None
        for channel in range(state.num_channels(name)):
            entries = state.entries(name, channel)
            patches = state.patches(name, channel, fill=fill)
            for entry, patch in zip(entries, patches):
                want = expected_box(geo, entry.row, entry.col, height, width)
                assert patch.box.as_tuple() == want, f"seed {seed} {name}: box {patch.box} != {want} [{case.text}]"
                assert receptive_field_box(state.layer_info(name), entry.row, entry.col, case.x.shape[1:]) == patch.box
                pixels, valid = numpy_crop(case.x[entry.image_index], want, fill)
                np.testing.assert_array_equal(patch.pixels.numpy(), pixels)
                np.testing.assert_array_equal(patch.valid.numpy(), valid)
    # projections: the projector gets each entry's image, channel and unit, and its output is cropped to the box
    for name in layers:
        channel = rng.randrange(state.num_channels(name))
        projected = state.projections(case.model, name, channel, projection=marking_projector)
        for entry, patch in zip(state.entries(name, channel), projected):
            marked, valid = numpy_crop(marked_image(case.x[entry.image_index], name, channel, entry.row, entry.col),
                                       patch.box.as_tuple(), 0.0)
            np.testing.assert_allclose(patch.pixels.numpy(), marked, rtol=1e-6)
            np.testing.assert_array_equal(patch.valid.numpy(), valid)
    # save / load round trip
    path = state.save(tmp_path / "scan.pt")
    loaded = TopKActivations.load(path)
    assert (loaded.layers, loaded.k, loaded.per_image, loaded.consumed, loaded.complete) == (
        state.layers, state.k, state.per_image, state.consumed, state.complete)
    for name in layers:
        for table in ("values", "image_indices", "positions", "labels"):
            assert torch.equal(getattr(loaded, table)[name], getattr(state, table)[name])
        for channel in range(state.num_channels(name)):
            assert loaded.entries(name, channel) == state.entries(name, channel)
            for a, b in zip(loaded.patches(name, channel), state.patches(name, channel)):
                assert a.box == b.box and torch.equal(a.pixels, b.pixels) and torch.equal(a.valid, b.valid)
    again = scan_topk(case.model, case.x, layers, k=k, per_image=state.per_image, checkpoint=path, progress=False)
    assert again.consumed == state.consumed and all(torch.equal(again.values[n], state.values[n]) for n in layers)
    snapshot.assert_unchanged(case.model)


# ---------------------------------------------------------------------------- invariance oracle

def shifted(x: torch.Tensor, v: int, fill: float) -> torch.Tensor:
    """Rows moved down by ``v`` (up for negative), ``fill`` where nothing comes in."""
    out = torch.full_like(x, fill)
    h = x.shape[2]
    if v >= 0:
        out[:, :, v:] = x[:, :, : h - v] if v < h else out[:, :, v:]
    else:
        out[:, :, : h + v] = x[:, :, -v:]
    return out


def transformed(x: torch.Tensor, kind: str, v: float, fill: float) -> torch.Tensor:
    if kind == "translation":
        return shifted(x, int(v), fill)
    if kind == "rotation":
        turns = int(round(v / 90)) % 4
        if turns == 2:
            return x.flip(2).flip(3)
        if turns == 0:
            return x
        assert x.shape[2] == x.shape[3]
        return torch.rot90(x, turns, dims=(2, 3))  # counter-clockwise as drawn (rows down)
    return TF.affine(x, angle=0.0, translate=[0.0, 0.0], scale=v, shear=[0.0, 0.0],
                     interpolation=InterpolationMode.NEAREST, fill=fill)


def check_classifier_input(case: Case, x: torch.Tensor, name: str, what: str) -> None:
    """The default "penultimate" layer's output is the vector the output layer classifies."""
    twin = copy.deepcopy(case.model).eval()
    seen = {}
    head = dict(twin.named_modules())[case.vector]
    handle = head.register_forward_pre_hook(lambda m, args: seen.__setitem__("in", args[0].detach().clone()))
    feats, _ = reference_outputs(case.model, x, [name])
    with torch.no_grad():
        twin(x)
    handle.remove()
    got = feats[name].reshape(len(x), -1)
    assert got.shape == seen["in"].shape and torch.equal(got, seen["in"]), (
        f"{what}: the default penultimate layer {name!r} gives {tuple(feats[name].shape[1:])}, not the classifier's "
        f"input {tuple(seen['in'].shape[1:])}")


@pytest.mark.parametrize("seed", SEEDS[:6])
def test_invariance_curves_equal_distances_of_images_transformed_by_hand(seed):
    case = build_case(seed, n=3)
    rng = random.Random(2000 + seed)
    x = case.x
    if seed % 2:  # a square image, for quarter turns
        side = min(x.shape[2:])
        x = x[:, :, :side, :side].contiguous()
        try:
            copy.deepcopy(case.model).eval()(x)
        except RuntimeError:  # too small for the model: the non-square images, without quarter turns
            x = case.x
    square = x.shape[2] == x.shape[3]
    h = x.shape[2]
    shifts = sorted(rng.sample(range(-h // 2, h // 2 + 1), 3) + [0])
    angles = [0.0, 180.0] + ([90.0, 270.0] if square else [])
    scales = [1.0, rng.choice([0.5, 1.5, 2.0])]
    fill = rng.choice([0.0, 0.7])
    layers = [rng.choice(sorted(case.geometry)), case.vector]
    normalize = seed % 3 == 0
    labels = None if seed % 2 else [rng.randrange(case.classes) for _ in range(len(x))]
    snapshot = UserModelSnapshot.take(case.model)
    result = invariance_curves(case.model, x, labels, layers,
                               transforms={"translation": shifts, "rotation": angles, "scale": scales},
                               normalize=normalize, interpolation="nearest", fill=fill,
                               batch_size=rng.choice([2, 5, 64]), progress=False)
    snapshot.assert_unchanged(case.model)
    gap = isinstance(case.model, CustomNet) and case.model.gap
    if not gap:  # a flattened map or vector feeds the classifier: "penultimate" names it
        default = invariance_curves(case.model, x, transforms={"translation": [0, 1]}, progress=False)
        check_classifier_input(case, x, default.layers[-1], f"seed {seed} [{case.text}]")
    ref, logits = reference_outputs(case.model, x, layers)
    want_labels = logits.argmax(1).numpy() if labels is None else np.array(labels)
    np.testing.assert_array_equal(result.labels, want_labels)
    for kind, values in (("translation", shifts), ("rotation", angles), ("scale", scales)):
        np.testing.assert_array_equal(result.values[kind], np.asarray(values, float))
        for vi, v in enumerate(values):
            tx = transformed(x, kind, v, fill)
            feats, out = reference_outputs(case.model, tx, layers)
            prob = torch.softmax(out.double(), dim=1)
            for name in layers:
                a = ref[name].reshape(len(x), -1).double()
                b = feats[name].reshape(len(x), -1).double()
                d = (a - b).norm(dim=1)
                if normalize:
                    norm = a.norm(dim=1)
                    d = torch.where(norm > 0, d / norm, torch.zeros_like(d))
                scale = float(a.norm(dim=1).max()) if not normalize else 1.0
                np.testing.assert_allclose(result.distances[kind][name][vi], d.numpy(), rtol=1e-4,
                                           atol=1e-5 * max(scale, 1e-3),
                                           err_msg=f"seed {seed} {kind} {v} {name} [{case.text}]")
            np.testing.assert_allclose(result.probabilities[kind][vi],
                                       prob[torch.arange(len(x)), torch.as_tensor(want_labels)].numpy(), atol=2e-5,
                                       err_msg=f"seed {seed} {kind} {v}")
            if v in (0.0, 1.0) and (kind != "scale") == (v == 0.0):
                assert np.all(result.distances[kind][layers[0]][vi] == 0), "the identity's distance is exactly zero"


# ---------------------------------------------------------------------------- correspondence oracle

def _sign_table(a: torch.Tensor, b: torch.Tensor, rtol: float, atol: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Signs of ``a - b`` with the documented tolerance, and where rounding could flip one."""
    eps = a - b
    s = a.abs().amax(dim=1, keepdim=True)
    limit = atol * s + rtol * a.abs()
    signs = torch.where(eps.abs() <= limit, torch.zeros_like(eps), torch.sign(eps))
    slack = 1e-5 * s + 1e-6 * a.abs()
    unsure = ((eps.abs() - limit).abs() <= slack) | ((eps.abs() <= slack) & (eps != 0))
    return signs, unsure


@pytest.mark.parametrize("seed", SEEDS[:6])
def test_correspondence_equals_the_documented_sign_hamming_table(seed):
    case = build_case(seed, n=4)
    rng = random.Random(3000 + seed)
    x = case.x
    n, _, height, width = x.shape

    def box() -> tuple[int, int, int, int]:
        h, w = rng.randint(1, height // 2), rng.randint(1, width // 2)
        y0, x0 = rng.randint(0, height - h), rng.randint(0, width - w)
        return (x0, y0, x0 + w, y0 + h)

    parts = {"a": [box() for _ in range(n)], "b": [box() for _ in range(n)]}
    layers = [rng.choice(sorted(case.geometry)), case.vector]
    fill = rng.choice([0.0, -0.5])
    trials = rng.choice([0, 3])
    rtol, atol = 1e-5, 1e-4
    snapshot = UserModelSnapshot.take(case.model)
    result = correspondence(case.model, x, parts, layers, random_trials=trials, fill=fill, seed=seed, rtol=rtol,
                            atol=atol, batch_size=rng.choice([1, 3, 64]), progress=False)
    snapshot.assert_unchanged(case.model)
    ref, _ = reference_outputs(case.model, x, layers)
    ref = {k: v.reshape(n, -1).float() for k, v in ref.items()}
    assert result.parts == ["a", "b"] + ([RANDOM] if trials else [])
    assert result.feature_sizes == {k: v.shape[1] for k, v in ref.items()}

    def counts(boxes) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        occluded = x.clone()
        for i, (x0, y0, x1, y1) in enumerate(boxes):
            occluded[i, :, y0:y1, x0:x1] = fill
        feats, _ = reference_outputs(case.model, occluded, layers)
        out = {}
        for name in layers:
            signs, unsure = _sign_table(ref[name], feats[name].reshape(n, -1).float(), rtol, atol)
            table = np.array([[int((signs[i] != signs[j]).sum()) for j in range(n)] for i in range(n)], float)
            slack = unsure.sum(dim=1).numpy()
            out[name] = (table, slack[:, None] + slack[None, :])
        return out

    upper = np.triu_indices(n, 1)
    for part, boxes in parts.items():
        found = counts(boxes)
        for name in layers:
            table, slack = found[name]
            d = ref[name].shape[1]
            got = result.pairwise[part][name] * d
            assert np.all(np.abs(got - table) <= slack + 1e-6), f"seed {seed} {part} {name}: {got} != {table}"
            if not slack.any():
                fractions = table / d
                assert result.mean[part][name] == pytest.approx(fractions[upper].mean(), abs=1e-9)
                assert result.std[part][name] == pytest.approx(fractions[upper].std(), abs=1e-9)
                assert result.total[part][name] == pytest.approx(table.sum(), abs=1e-9)
                assert np.allclose(np.diag(result.pairwise[part][name]), 0)
    if trials:
        gen = np.random.default_rng(seed)
        names = list(parts)
        drawn = []
        for t in range(trials):
            template = parts[names[t % len(names)]]
            sizes = [(y1 - y0, x1 - x0) for x0, y0, x1, y1 in template]
            drawn.append(counts(random_boxes(sizes, (height, width), gen)))
        for name in layers:
            tables = np.stack([c[name][0] for c in drawn]) / ref[name].shape[1]
            if not any(c[name][1].any() for c in drawn):
                assert result.mean[RANDOM][name] == pytest.approx(tables[:, upper[0], upper[1]].mean(), abs=1e-9)
                assert result.std[RANDOM][name] == pytest.approx(tables[:, upper[0], upper[1]].std(), abs=1e-9)
                np.testing.assert_allclose(result.pairwise[RANDOM][name], tables.mean(axis=0), atol=1e-9)


# ---------------------------------------------------------------------------- summary oracle

def gradient_box(model: nn.Module, x: torch.Tensor, name: str, row: int, col: int) -> tuple[int, int, int, int] | None:
    """The bounding box ``(top, left, height, width)`` of the input pixels whose gradient is nonzero
    for unit ``(row, col)`` of layer ``name`` (channels summed), or None when none is."""
    twin = copy.deepcopy(model).eval()
    for module in twin.modules():  # in-place steps would overwrite what autograd needs
        if isinstance(module, nn.ReLU):
            module.inplace = False
        if isinstance(module, Residual):
            module.inplace_add = False
    got = {}
    handle = dict(twin.named_modules())[name].register_forward_hook(lambda m, i, o: got.__setitem__("out", o))
    leaf = x[:1].clone().requires_grad_(True)
    twin(leaf)
    handle.remove()
    (grad,) = torch.autograd.grad(got["out"][0, :, row, col].sum(), leaf)
    rows, cols = np.nonzero(grad[0].abs().sum(0).numpy())
    if rows.size == 0:
        return None
    return (int(rows.min()), int(cols.min()), int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1))


@pytest.mark.parametrize("seed", SEEDS)
def test_summary_rows_equal_module_counts_hooked_shapes_and_the_receptive_field(seed):
    positive = seed % 2 == 1
    case = build_case(seed, positive=positive, n=1)
    snapshot = UserModelSnapshot.take(case.model)
    result = model_summary(case.model, tuple(case.x.shape[1:]), leaves_only=False)
    snapshot.assert_unchanged(case.model)
    rows = {row.name: row for row in result.rows}
    modules = dict(case.model.named_modules())
    shapes, _ = reference_outputs(case.model, case.x, [name for name in modules if name])
    assert result.total_params == sum(p.numel() for p in case.model.parameters())
    assert set(rows) == {name for name in modules if name}, f"seed {seed}: rows {sorted(rows)}"
    for name, row in rows.items():
        assert row.params == sum(p.numel() for p in modules[name].parameters()), f"seed {seed} {name}"
        assert row.output_shape == tuple(shapes[name].shape[1:]), f"seed {seed} {name}: {row.output_shape}"
        assert row.is_leaf == (not list(modules[name].children()))
    height, width = case.x.shape[2:]
    for name, geo in case.geometry.items():
        row = rows[name]
        want = (None, None) if geo is None else (geo[0], geo[1])
        got = (row.receptive_field, row.jump)
        assert got == want, f"seed {seed} {name}: {got} != {want} [{case.text}]"
        if not positive or geo is None:
            continue
        # autograd: the pixels one unit depends on
        out_h, out_w = shapes[name].shape[2:]
        for r in sorted({out_h // 2, 0, out_h - 1}):
            for c in sorted({out_w // 2, 0, out_w - 1}):
                box = expected_box(geo, r, c, height, width)
                found = gradient_box(case.model, case.x, name, r, c)
                assert found is not None
                top, left, h, w = box
                inside = top >= 0 and left >= 0 and top + h <= height and left + w <= width
                if inside:
                    assert found == box, f"seed {seed} {name} unit {(r, c)}: gradient box {found} != {box}"
                else:  # the part inside the image holds every pixel the unit reads
                    within = (found[0] >= top and found[1] >= left and found[0] + found[2] <= top + h
                              and found[1] + found[3] <= left + w)
                    assert within, f"seed {seed} {name} unit {(r, c)}: {found} outside {box}"


# ---------------------------------------------------------------------------- kernels oracle

@pytest.mark.parametrize("seed", SEEDS)
def test_kernel_weights_are_the_conv_weights_normalised_as_documented(seed):
    case = build_case(seed, n=1)
    names = conv_layer_names(case.model)
    assert names == case.convs
    rng = random.Random(4000 + seed)
    modules = dict(case.model.named_modules())
    snapshot = UserModelSnapshot.take(case.model)
    for name in names:
        weight = modules[name].weight.detach().numpy()
        o, i = weight.shape[:2]
        for normalize in ("layer", "filter", "slice"):
            mag = np.abs(weight)
            scale = {"layer": mag.max(keepdims=True), "filter": mag.max(axis=(1, 2, 3), keepdims=True),
                     "slice": mag.max(axis=(2, 3), keepdims=True)}
            got = kernel_weights(case.model, name, mode="grid", normalize=normalize)
            want = weight / np.where(scale[normalize] > 0, scale[normalize], 1)
            assert got.layout == "grid" and got.values.shape == (o, i, *weight.shape[2:])
            np.testing.assert_allclose(got.values, want, rtol=1e-6, atol=1e-7)
            np.testing.assert_array_equal(got.weight, weight)
            assert np.abs(got.values).max() == pytest.approx(1.0)
            channel = rng.randrange(o)
            one = kernel_weights(case.model, name, mode="slices", out_channel=channel, normalize=normalize)
            np.testing.assert_allclose(one.values, want[channel], rtol=1e-6, atol=1e-7)
            auto = kernel_weights(case.model, name, normalize=normalize)
            if i == 3:
                want_rgb = weight / np.where(scale["filter" if normalize == "slice" else normalize] > 0,
                                             scale["filter" if normalize == "slice" else normalize], 1)
                assert auto.layout == "rgb"
                np.testing.assert_allclose(auto.values, want_rgb.transpose(0, 2, 3, 1), rtol=1e-6, atol=1e-7)
            else:
                assert auto.layout == "grid"
    snapshot.assert_unchanged(case.model)


def marked_image(image: torch.Tensor, layer: str, channel: int, row: int, col: int) -> torch.Tensor:
    """What :func:`marking_projector` makes of one image: the image scaled by its channel, plus its
    unit and the length of the layer's name, so a crop of it shows which row was projected."""
    return image * (channel + 1) + row * 0.01 + col * 0.0001 + len(layer)


def marking_projector(probe, images, layer, channels, units):
    """A :data:`~cnnwidgets.methods.topk.Projector` whose output names its inputs (see :func:`marked_image`)."""
    return torch.stack([marked_image(img, layer, int(ch), int(u[0]), int(u[1]))
                        for img, ch, u in zip(images.cpu(), channels.cpu(), units.cpu())])


# ---------------------------------------------------------------------------- evolution oracle

@pytest.mark.parametrize("seed", SEEDS[:6])
def test_evolution_frames_are_the_strongest_units_of_the_model_at_that_moment(seed):
    case = build_case(seed, n=5)
    rng = random.Random(5000 + seed)
    layer = rng.choice(sorted(case.geometry))
    ref, _ = reference_outputs(case.model, case.x[:1], [layer])
    chans = rng.sample(range(ref[layer].shape[1]), min(2, ref[layer].shape[1]))  # in any order
    recorder = FeatureEvolutionRecorder(case.model, case.x, {layer: chans, case.vector: [0]}, epochs=[1, 3],
                                        projection=marking_projector, batch_size=rng.choice([1, 2, 64]))
    # the classifier's output is the model's: its channels are the classes
    assert recorder.result().class_layers == {case.vector: case.classes}
    params = [p for p in case.model.parameters()]
    height, width = case.x.shape[2:]
    for epoch in range(1, 4):
        with torch.no_grad():  # a hand-written training step
            for p in params:
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(epoch)) * 0.05)
        snapshot = UserModelSnapshot.take(case.model)
        stored = recorder.record(epoch)
        snapshot.assert_unchanged(case.model)
        assert stored == (epoch in (1, 3))
        if not stored:
            continue
        acts, _ = reference_outputs(case.model, case.x, [layer, case.vector])
        for name, channels in ((layer, chans), (case.vector, [0])):
            act = acts[name]
            if act.dim() == 2:
                act = act[:, :, None, None]
            for ch in channels:
                frame = recorder.result().frame(name, ch, epoch)
                flat = act[:, ch].reshape(-1).double().numpy()
                tol = _tolerance(act)
                best = int(np.argmax(flat))
                per = act.shape[2] * act.shape[3]
                assert abs(frame.value - flat[best]) <= tol, f"seed {seed} {name} {ch}: {frame.value} != {flat[best]}"
                r, c = frame.unit
                at = flat[frame.image_index * per + r * act.shape[3] + c]
                assert abs(at - frame.value) <= tol
                near = flat[np.abs(flat - flat[best]) <= tol]
                if np.all(near == flat[best]) and frame.value == flat[best]:
                    assert (frame.image_index, r * act.shape[3] + c) == (best // per, best % per)
                geo = case.geometry.get(name) if name != case.vector else None
                box = expected_box(geo, r, c, height, width)
                assert frame.box.as_tuple() == box
                pixels, valid = numpy_crop(case.x[frame.image_index], box, 0.0)
                np.testing.assert_array_equal(frame.patch, pixels)
                np.testing.assert_array_equal(frame.valid, valid)
                marked, _ = numpy_crop(marked_image(case.x[frame.image_index], name, ch, r, c), box, 0.0)
                np.testing.assert_allclose(frame.projection, marked, rtol=1e-6)
    recorder.close()


# ---------------------------------------------------------------------------- regressions

def test_the_default_penultimate_layer_before_concatenated_branches_is_the_block_the_classifier_reads():
    # was: "penultimate" named the block's last branch to run ('2.b': 3 of the 5 channels the classifier
    # reads), so the default invariance curves measured a part of the feature vector
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), Branches(4, 2, 3, 3, False), nn.Flatten(),
                          nn.Linear(5 * 6 * 6, 3)).eval()
    x = torch.randn(2, 3, 8, 8)
    result = invariance_curves(model, x, transforms={"translation": [0, 1]}, progress=False)
    assert result.layers == ["1", "2"]
    case = Case(model, x, {}, ["2"], "4", 3, "regression")
    check_classifier_input(case, x, result.layers[-1], "regression")
