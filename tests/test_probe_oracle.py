"""Oracle fuzz test: what a Probe captures is exactly what the user's model computes.

The oracle is independent of the probe: a deep copy of the user's model in ``eval()`` mode, run
once in full under ``torch.inference_mode()``, with a plain forward hook on each module that
clones the module's output when it returns (later in-place operations cannot change it). The
probe documents that a module called several times in one pass is captured at its **last**
call, so its last recorded output is the reference.

For every layer the probe lists, on unusual architectures (modules reused or called in a loop,
size-dependent branches, container outputs, routing through ModuleDict / ModuleList, in-place
operations, checkpointing, ``no_grad`` inside forward, float64, tied weights, torchvision
models), this checks:

* ``probe.capture(x, [layer])[layer]`` equals the oracle's output of that module (bit for bit
  where the probe computes the same way: float32, standard layout; tight tolerances otherwise);
* capturing several layers in one call equals capturing each alone, and the cached path equals
  the uncached one;
* ``probe.logits(x)`` equals the model's output (read through a dict / output object as
  documented, or refused with a clear error for a plain tuple);
* a capture of an early layer runs no module after it, and gives the full forward's values;
* the user's model is unchanged afterwards, and ``probe.close()`` leaves no hook on the copy.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import warnings

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.utils import checkpoint

from cnnwidgets import Probe
from cnnwidgets.core.probe import NotATensorError
from cnnwidgets.core.targets import OutputTypeError

# ---------------------------------------------------------------------------------------------
# the oracle


def _strip_hooks(model: nn.Module) -> None:
    """Remove the user's own hooks from an oracle copy: the probe documents that it does not run
    them (``Probe.user_hooks``), so the oracle must not either."""
    for module in model.modules():
        for attr in ("_forward_hooks", "_forward_pre_hooks", "_forward_hooks_with_kwargs",
                     "_forward_hooks_always_called", "_forward_pre_hooks_with_kwargs"):
            hooks = getattr(module, attr, None)
            if isinstance(hooks, dict):
                hooks.clear()


def oracle(model: nn.Module, x: torch.Tensor, names: list[str]) -> tuple[dict[str, list], object]:
    """Every call's output of each module in ``names`` (cloned as it returns) and the model's
    output, from one full forward of an eval-mode deep copy under inference mode."""
    ref = copy.deepcopy(model)
    _strip_hooks(ref)
    ref.eval()
    modules = dict(ref.named_modules())
    records: dict[str, list] = {name: [] for name in names}
    handles = []
    for name in names:
        def hook(module, args, output, name=name):
            records[name].append(output.detach().clone() if isinstance(output, torch.Tensor) else output)
        handles.append(modules[name].register_forward_hook(hook))
    dtype = next((p.dtype for p in ref.parameters() if p.is_floating_point()), torch.float32)
    try:
        with torch.inference_mode():
            output = ref(x.to(dtype))
    finally:
        for handle in handles:
            handle.remove()
    return records, output


def assert_same(got: torch.Tensor, want: torch.Tensor, *, exact: bool, what: str, rtol: float = 1e-5) -> None:
    """``got`` (the probe's, float32) equals ``want`` (the oracle's): bit for bit when ``exact``,
    else within ``rtol`` of the reference's scale."""
    assert isinstance(got, torch.Tensor), what
    assert got.shape == want.shape, f"{what}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    assert got.dtype == torch.float32, f"{what}: dtype {got.dtype}"
    want = want.to(torch.float32) if want.is_floating_point() else want
    if exact:
        assert torch.equal(got, want), f"{what}: max abs diff {(got - want).abs().max().item():.3g}"
    else:
        scale = max(1.0, float(want.abs().max())) if want.numel() else 1.0
        torch.testing.assert_close(got, want, rtol=rtol, atol=rtol * scale, msg=lambda m: f"{what}: {m}")


def logits_reference(output: object) -> torch.Tensor | None:
    """The tensor the probe documents reading from the model's ``output``, or None when it must refuse."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, dict):
        for key in ("logits", "out"):
            if isinstance(output.get(key), torch.Tensor):
                return output[key]
        tensors = [v for v in output.values() if isinstance(v, torch.Tensor)]
        return tensors[0] if len(tensors) == 1 else None
    if isinstance(getattr(output, "logits", None), torch.Tensor):
        return output.logits
    return None


def check_against_oracle(
    model: nn.Module,
    x: torch.Tensor,
    *,
    channels_last: bool | str = False,
    every: int = 1,
    rtol: float = 1e-5,
    exact: bool | None = None,
    probe: Probe | None = None,
    skip_types: tuple[str, ...] = (),
) -> dict[str, torch.Tensor]:
    """Check every ``every``-th listed layer (and the last one) and the logits of ``model`` on ``x``
    against the oracle; returns the probe's captures. ``exact`` defaults to: float32 model and the
    probe computing in the standard layout."""
    own = probe is None
    if own:
        probe = Probe(model, channels_last=channels_last, input_size=tuple(x.shape[1:]))
    try:
        x = x.clone()
        x_before = x.clone()
        layers = probe.describe(tuple(x.shape[1:])) if probe.input_size != tuple(x.shape[1:]) else probe.layers
        ran = [name for name, info in layers.items() if info.calls > 0 and info.type not in skip_types]
        picked = ran[::every] + ([ran[-1]] if ran and ran[-1] not in ran[::every] else [])
        records, output = oracle(model, x, picked)
        if exact is None:
            dtypes = {p.dtype for p in model.parameters()} | {b.dtype for b in model.buffers() if b.is_floating_point()}
            exact = not probe.channels_last and dtypes <= {torch.float32}
        tensor_layers = []
        for name in picked:
            info = layers[name]
            calls = records[name]
            # the oracle runs the same model on the real input: the calls counted at discovery match
            assert len(calls) == info.calls, f"{name}: {len(calls)} calls, probe lists {info.calls}"
            if not isinstance(calls[-1], torch.Tensor):
                with pytest.raises(NotATensorError, match=f"layer '{name}' returns {type(calls[-1]).__name__}"):
                    probe.capture(x, [name], cache=False)
                continue
            tensor_layers.append(name)
            got = probe.capture(x, [name], cache=False)[name]
            assert_same(got, calls[-1], exact=exact, what=f"layer {name!r} ({info.type}, last of {info.calls})",
                        rtol=rtol)
            assert info.output_shape == tuple(calls[-1].shape[1:]), name
        # several layers in one call equal each alone, with and without the cache
        if tensor_layers:
            together = probe.capture(x, tensor_layers, cache=False)
            cached = probe.capture(x, list(reversed(tensor_layers)))
            for name in tensor_layers:
                assert_same(together[name], records[name][-1], exact=exact, what=f"{name} (together)", rtol=rtol)
                assert torch.equal(cached[name], together[name]), f"{name}: cached capture differs"
            again = probe.capture(x, tensor_layers)  # all from the cache now
            for name in tensor_layers:
                assert torch.equal(again[name], together[name]), f"{name}: second cached capture differs"
        want = logits_reference(output)
        if want is None:
            with pytest.raises(OutputTypeError, match="cnnwidgets needs one tensor"):
                probe.logits(x, cache=False)
            if tensor_layers:
                with pytest.raises(OutputTypeError, match="cnnwidgets needs one tensor"):
                    probe.capture_with_logits(x, tensor_layers[:1])
                # the layers are still captured right after the refusal
                got = probe.capture(x, tensor_layers[:1])[tensor_layers[0]]
                assert_same(got, records[tensor_layers[0]][-1], exact=exact, what="after a refusal", rtol=rtol)
        else:
            assert_same(probe.logits(x, cache=False), want, exact=exact, what="logits", rtol=rtol)
            assert_same(probe.logits(x), want, exact=exact, what="logits (cached)", rtol=rtol)
            if tensor_layers:
                acts, logits = probe.capture_with_logits(x, tensor_layers[:3], cache=False)
                assert_same(logits, want, exact=exact, what="capture_with_logits output", rtol=rtol)
                for name in tensor_layers[:3]:
                    assert_same(acts[name], records[name][-1], exact=exact, what=f"{name} (with logits)", rtol=rtol)
        assert torch.equal(x, x_before), "the input was written to"
        return together if tensor_layers else {}
    finally:
        if own:
            probe.close()


# ---------------------------------------------------------------------------------------------
# unusual models


class SharedRelu(nn.Module):
    """The same nn.ReLU after two convolutions, and the same convolution applied twice."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.conv2 = nn.Conv2d(6, 6, 3, padding=1)
        self.relu = nn.ReLU()
        self.twice = nn.Conv2d(6, 6, 3, padding=1)
        self.fc = nn.Linear(6, 4)

    def forward(self, x):
        x = self.relu(self.conv1(x))
        x = self.relu(self.conv2(x))
        x = self.twice(self.twice(x))
        return self.fc(x.mean((2, 3)))


class Refine(nn.Module):
    """A refinement block called in a Python loop (recurrent style), with a residual."""

    def __init__(self, steps: int = 3) -> None:
        super().__init__()
        self.steps = steps
        self.stem = nn.Conv2d(3, 5, 3, padding=1)
        self.refine = nn.Sequential(nn.Conv2d(5, 5, 3, padding=1), nn.Tanh())
        self.gate = nn.Sigmoid()
        self.head = nn.Linear(5, 3)

    def forward(self, x):
        h = self.stem(x)
        for _ in range(self.steps):
            h = h + self.gate(h) * self.refine(h)
        return self.head(h.mean((2, 3)))


class SizeBranches(nn.Module):
    """Different modules for 32-pixel and 64-pixel inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.small = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.large = nn.Sequential(nn.Conv2d(3, 8, 5, stride=2, padding=2), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))
        self.shared = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        y = self.small(x) if x.shape[-1] <= 32 else self.large(x)
        return self.fc(self.shared(y).amax((2, 3)))


class TupleBlock(nn.Module):
    """A block whose output is a tuple (as an LSTM's or a detection neck's)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(3, 4, 1)

    def forward(self, x):
        return self.a(x), self.b(x)


class TupleOut(nn.Module):
    """Returns a plain tuple (features, logits): the probe refuses to guess the logits."""

    def __init__(self) -> None:
        super().__init__()
        self.block = TupleBlock()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        a, b = self.block(x)
        feats = (a * b).mean((2, 3))
        return feats, self.fc(feats)


Outputs = collections.namedtuple("Outputs", ["logits", "aux"])
NoLogits = collections.namedtuple("NoLogits", ["scores", "aux"])


@dataclasses.dataclass
class ClassifierOutput:
    logits: torch.Tensor
    features: torch.Tensor


class ContainerOut(nn.Module):
    """Returns a dict, a namedtuple or a dataclass, and has a block returning a dict."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.stem = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU())
        self.classifier = nn.Conv2d(6, 3, 1)
        self.aux = nn.Conv2d(6, 2, 1)
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        f = self.stem(x)
        if self.kind == "segmentation":
            return {"out": F.interpolate(self.classifier(f), size=x.shape[-2:], mode="bilinear"), "aux": self.aux(f)}
        pooled = f.mean((2, 3))
        if self.kind == "namedtuple":
            return Outputs(self.fc(pooled), self.aux(f))
        if self.kind == "namedtuple-no-logits":
            return NoLogits(self.fc(pooled), self.aux(f))
        return ClassifierOutput(self.fc(pooled), pooled)


class Normalise(nn.Module):
    """A module with buffers only (no parameters)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.4, 0.5, 0.6]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1))

    def forward(self, x):
        return (x - self.mean) / self.std


class Scale(nn.Module):
    """No parameters, no buffers: a plain attribute."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return x * self.factor


class Routing(nn.Module):
    """Routes through a ModuleDict in a fixed, non-registration order and a ModuleList, with
    Identity layers, parameter-free and buffer-only modules."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = Normalise()
        self.paths = nn.ModuleDict({
            "a": nn.Conv2d(3, 4, 3, padding=1),
            "b": nn.Conv2d(3, 4, 3, padding=1),
            "unused": nn.Conv2d(3, 4, 1),
        })
        self.skip = nn.Identity()
        self.blocks = nn.ModuleList([
            nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.Identity(), nn.ReLU()),
            nn.Sequential(nn.Identity(), Scale(0.5), nn.Conv2d(8, 8, 1)),
        ])
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        x = self.norm(x)
        x = torch.cat([self.paths[key](x) for key in ("b", "a")], dim=1)
        for block in self.blocks[::-1]:
            x = block(self.skip(x)) + x
        return self.fc(self.flat(self.pool(x)))


class InPlace(nn.Module):
    """In-place operations right after captured outputs: a ReLU(inplace=True) after a convolution,
    ``out += residual``, ``F.relu_`` and an Identity whose output is changed in place."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(6, 6, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(6)
        self.ident = nn.Identity()
        self.conv3 = nn.Conv2d(6, 6, 3, padding=1)
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        x = self.relu1(self.conv1(x))
        residual = x
        out = self.bn2(self.conv2(x))
        out += residual
        y = self.ident(out)
        y.mul_(2.0)
        z = self.conv3(y)
        F.relu_(z)
        return self.fc(z.mean((2, 3)))


class Checkpointed(nn.Module):
    """Blocks run through torch.utils.checkpoint (reentrant or not)."""

    def __init__(self, reentrant: bool) -> None:
        super().__init__()
        self.reentrant = reentrant
        self.block1 = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU())
        self.block2 = nn.Sequential(nn.Conv2d(6, 6, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        x = checkpoint.checkpoint(self.block1, x, use_reentrant=self.reentrant)
        x = checkpoint.checkpoint(self.block2, x, use_reentrant=self.reentrant)
        return self.fc(x.mean((2, 3)))


class NoGradInside(nn.Module):
    """A layer computes a statistic under ``torch.no_grad()`` inside its forward."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        y = self.conv(x)
        with torch.no_grad():
            scale = y.abs().amax((1, 2, 3), keepdim=True) + 1
        return y / scale


class NoGradNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = NoGradInside()
        self.after = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(self.after(self.layer(x)).mean((2, 3)))


class Tied(nn.Module):
    """Two convolutions share one weight (tied), and one module is registered under two names."""

    def __init__(self) -> None:
        super().__init__()
        self.conv_a = nn.Conv2d(4, 4, 3, padding=1)
        self.conv_b = nn.Conv2d(4, 4, 3, padding=1)
        self.conv_b.weight = self.conv_a.weight
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.alias = self.stem  # the same module, a second name
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        x = self.alias(x)
        x = self.conv_b(F.relu(self.conv_a(x)))
        return self.fc(x.mean((2, 3)))


def _seeded(factory, *args, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    model = factory(*args, **kwargs)
    # make batch norm statistics non-trivial, so that eval mode matters
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return model


UNUSUAL = {
    "shared-relu": lambda: _seeded(SharedRelu),
    "loop": lambda: _seeded(Refine),
    "routing": lambda: _seeded(Routing),
    "in-place": lambda: _seeded(InPlace),
    "checkpoint": lambda: _seeded(Checkpointed, False),
    "checkpoint-reentrant": lambda: _seeded(Checkpointed, True),
    "no-grad-inside": lambda: _seeded(NoGradNet),
    "tied": lambda: _seeded(Tied),
    "dict-out": lambda: _seeded(ContainerOut, "segmentation"),
    "namedtuple-out": lambda: _seeded(ContainerOut, "namedtuple"),
    "namedtuple-no-logits": lambda: _seeded(ContainerOut, "namedtuple-no-logits"),
    "dataclass-out": lambda: _seeded(ContainerOut, "dataclass"),
    "tuple-out": lambda: _seeded(TupleOut),
}


@pytest.fixture(autouse=True)
def _quiet_checkpoint():
    # reentrant checkpointing warns that no input requires grad, in the oracle and in the probe alike
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="None of the inputs have requires_grad")
        yield


@pytest.mark.parametrize("name", list(UNUSUAL))
@pytest.mark.parametrize("channels_last", [False, True, "auto"], ids=["std", "cl", "auto"])
@pytest.mark.parametrize("batch", [1, 3])
def test_every_layer_of_unusual_models_matches_the_oracle(name, channels_last, batch):
    model = UNUSUAL[name]()
    gen = torch.Generator().manual_seed(batch)
    x = torch.randn(batch, 3, 16, 16, generator=gen)
    check_against_oracle(model, x, channels_last=channels_last)


def test_the_reused_modules_are_captured_at_their_last_call_as_documented():
    model = _seeded(SharedRelu)
    x = torch.randn(2, 3, 12, 12)
    with Probe(model, channels_last=False, input_size=(3, 12, 12)) as probe:
        assert probe.layers["relu"].calls == 2 and probe.layers["twice"].calls == 2
        records, _ = oracle(model, x, ["relu", "twice"])
        got = probe.capture(x, ["relu", "twice"])
        # the last call, not the first: the two calls differ, so a mix-up cannot pass
        assert not torch.equal(records["relu"][0], records["relu"][1])
        assert torch.equal(got["relu"], records["relu"][1])
        assert torch.equal(got["twice"], records["twice"][1])
    with Probe(_seeded(Refine), channels_last=False, input_size=(3, 12, 12)) as probe:
        assert probe.layers["refine.0"].calls == 3
        records, _ = oracle(probe.user_model, x, ["refine.0", "refine"])
        got = probe.capture(x, ["refine.0", "refine"])
        assert torch.equal(got["refine.0"], records["refine.0"][2])
        assert torch.equal(got["refine"], records["refine"][2])


def test_a_size_dependent_forward_is_captured_at_both_sizes_with_one_probe():
    model = _seeded(SizeBranches)
    small, large = torch.randn(3, 3, 32, 32), torch.randn(1, 3, 64, 64)
    with Probe(model, channels_last=False) as probe:
        for x in (small, large, small[:1], large.expand(3, -1, -1, -1).contiguous()):
            check_against_oracle(model, x, probe=probe)
            layers = probe.layers
            assert probe.input_size == tuple(x.shape[1:])
            assert (layers["small"].calls, layers["large"].calls) == ((1, 0) if x.shape[-1] == 32 else (0, 1))
        # a layer of the other branch is refused at this size, naming it
        with pytest.raises(ValueError, match="'small.0' does not run"):
            probe.capture(large, ["small.0"])


def test_inplace_operations_after_a_captured_output_do_not_reach_it():
    model = _seeded(InPlace)
    x = torch.randn(2, 3, 16, 16)
    records, _ = oracle(model, x, ["conv1", "relu1", "bn2", "ident", "conv3"])
    with Probe(model, channels_last=False, input_size=(3, 16, 16)) as probe:
        for layers in (["conv1"], ["conv1", "conv3"], ["bn2", "ident"], ["conv3"]):
            got = probe.capture(x, layers, cache=False)
            for name in layers:
                assert torch.equal(got[name], records[name][-1]), name
        conv1 = probe.capture(x, ["conv1"], cache=False)["conv1"]
        assert (conv1 < 0).any(), "the conv output is the post-ReLU one"
        # ident's output is bn2's + the residual (after the in-place add), before the later mul_(2)
        assert torch.equal(probe.capture(x, ["ident"])["ident"], records["bn2"][-1] + records["relu1"][-1])
        acts, _ = probe.capture_with_logits(x, ["conv1", "conv3"], cache=False)
        assert (acts["conv1"] < 0).any() and (acts["conv3"] < 0).any()


def test_googlenet_and_a_segmentation_dict_output_match_the_oracle():
    torch.manual_seed(0)
    googlenet = torchvision.models.googlenet(aux_logits=False, init_weights=True, weights=None)
    check_against_oracle(googlenet, torch.randn(1, 3, 64, 64), channels_last="auto", every=7)
    torch.manual_seed(0)
    seg = torchvision.models.segmentation.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=3)
    # the backbone returns an OrderedDict: capturing it is refused naming the type (checked inside)
    check_against_oracle(seg, torch.randn(1, 3, 64, 64), channels_last=False, every=9)
    with Probe(seg, channels_last=False, input_size=(3, 64, 64)) as probe:
        assert probe.output_reduction == "a dict output is reduced to its 'out' entry"
        with pytest.raises(NotATensorError, match="layer 'backbone' returns OrderedDict, not a tensor"):
            probe.capture(torch.randn(1, 3, 64, 64), ["backbone"])


TORCHVISION = {
    "resnet18": (torchvision.models.resnet18, 1),
    "mobilenet_v3_small": (torchvision.models.mobilenet_v3_small, 2),
    "squeezenet1_1": (torchvision.models.squeezenet1_1, 1),
    "densenet121": (torchvision.models.densenet121, 11),
}


@pytest.mark.parametrize("arch", list(TORCHVISION))
def test_torchvision_models_match_the_oracle(arch):
    factory, every = TORCHVISION[arch]
    model = _seeded(factory, weights=None)
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    # channels-last convolutions round differently from the oracle's standard-layout ones
    check_against_oracle(model, x, channels_last="auto", every=every, rtol=2e-5)
    check_against_oracle(model, x[:1], channels_last=False, every=every * 3)


def test_a_float64_model_is_inspected_in_float32_close_to_its_own_values():
    model = _seeded(Routing).double()
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    check_against_oracle(model, x.float(), channels_last=False, rtol=1e-5)
    assert all(p.dtype == torch.float64 for p in model.parameters())
    assert all(b.dtype == torch.float64 for b in model.buffers())


def test_a_single_image_must_carry_its_batch_axis():
    model = _seeded(SharedRelu)
    with Probe(model, channels_last=False, input_size=(3, 12, 12)) as probe:
        with pytest.raises(ValueError, match=r"add a batch dimension with x.unsqueeze\(0\)"):
            probe.capture(torch.randn(3, 12, 12), ["conv1"])
        image = torch.randn(3, 12, 12)
        records, _ = oracle(model, image.unsqueeze(0), ["conv2"])
        assert torch.equal(probe.capture(image.unsqueeze(0), "conv2")["conv2"], records["conv2"][-1])


# ---------------------------------------------------------------------------------------------
# prefix-only execution


def _count_starts(model: nn.Module) -> tuple[collections.Counter, list]:
    counts: collections.Counter = collections.Counter()
    handles = [
        module.register_forward_pre_hook(lambda m, a, name=name: counts.update([name]))
        for name, module in model.named_modules() if name
    ]
    return counts, handles


@pytest.mark.parametrize("arch", ["resnet18", "routing", "loop"])
def test_a_capture_of_an_early_layer_runs_only_the_modules_before_it(arch):
    if arch == "resnet18":
        model, early = _seeded(torchvision.models.resnet18, weights=None), "layer1.0.conv2"
    elif arch == "routing":
        model, early = _seeded(Routing), "paths.a"
    else:
        model, early = _seeded(Refine), "stem"
    x = torch.randn(2, 3, 32, 32)
    records, _ = oracle(model, x, [early])
    with Probe(model, channels_last=False, input_size=(3, 32, 32)) as probe:
        layers = probe.layers
        counts, handles = _count_starts(probe.model)
        try:
            probe.reset_stats()
            got = probe.capture(x, [early], cache=False)[early]
        finally:
            for handle in handles:
                handle.remove()
        assert torch.equal(got, records[early][-1])
        later = [n for n, info in layers.items() if info.order > layers[early].order and info.calls > 0]
        assert len(later) >= 3, "the check needs modules after the early layer"
        # the modules that start after the early layer never ran; those whose last call starts before
        # its own ran as often as in a full pass (resnet's shared ReLU once of twice: its second call is later)
        assert [n for n in later if counts[n]] == []
        cut = layers[early].last_call
        assert all(counts[n] == info.calls for n, info in layers.items() if 0 <= info.last_call <= cut)
        assert all(0 < counts[n] < info.calls for n, info in layers.items()
                   if info.order < layers[early].order and info.last_call > cut and not early.startswith(n + "."))
        assert probe.stats.full_forwards == 0
        # the probe counts the calls that returned: all that started but the early layer's containers
        containers = [n for n in counts if early.startswith(n + ".")]
        assert probe.stats.modules_executed == sum(counts.values()) - sum(counts[n] for n in containers)
        assert probe.stats.modules_executed < sum(i.calls for i in layers.values())


# ---------------------------------------------------------------------------------------------
# hygiene


def _snapshot(model: nn.Module) -> dict:
    return {
        "modules": [(n, id(m), type(m).__name__, m.training) for n, m in model.named_modules(remove_duplicate=False)],
        "params": {n: (id(p), p.dtype, p.device, p.requires_grad, p.detach().clone(), None if p.grad is None
                       else p.grad.clone()) for n, p in model.named_parameters(remove_duplicate=False)},
        "buffers": {n: (id(b), b.dtype, b.detach().clone()) for n, b in model.named_buffers(remove_duplicate=False)},
        "hooks": {n: {a: list(getattr(m, a).keys()) for a in ("_forward_hooks", "_forward_pre_hooks",
                                                                   "_backward_hooks", "_state_dict_hooks")}
                  for n, m in model.named_modules(remove_duplicate=False)},
        "inplace": {n: m.inplace for n, m in model.named_modules() if isinstance(getattr(m, "inplace", None), bool)},
    }


def _assert_same_snapshot(before: dict, after: dict) -> None:
    assert before["modules"] == after["modules"]
    assert before["hooks"] == after["hooks"]
    assert before["inplace"] == after["inplace"]
    assert before["params"].keys() == after["params"].keys()
    for name, (ident, dtype, device, requires_grad, value, grad) in before["params"].items():
        ident2, dtype2, device2, requires_grad2, value2, grad2 = after["params"][name]
        assert (ident, dtype, device, requires_grad) == (ident2, dtype2, device2, requires_grad2), name
        assert torch.equal(value, value2), name
        assert (grad is None) == (grad2 is None) and (grad is None or torch.equal(grad, grad2)), name
    assert before["buffers"].keys() == after["buffers"].keys()
    for name, (ident, dtype, value) in before["buffers"].items():
        assert after["buffers"][name][:2] == (ident, dtype) and torch.equal(after["buffers"][name][2], value), name


def _hooks_left(model: nn.Module) -> list[str]:
    return [
        f"{name or 'root'}.{attr}" for name, module in model.named_modules()
        for attr in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
                     "_forward_hooks_with_kwargs", "_forward_hooks_always_called")
        if getattr(module, attr, None)
    ]


@pytest.mark.parametrize("name", ["in-place", "tied", "routing", "checkpoint", "no-grad-inside", "shared-relu"])
def test_the_users_model_is_unchanged_and_close_removes_every_hook(name):
    model = UNUSUAL[name]()
    model.train()  # the user is training: the probe must leave the flags alone
    model.fc.weight.requires_grad_(False)  # a frozen layer stays frozen, the others trainable
    model(torch.randn(2, 3, 16, 16)).sum().backward()  # gradients the probe must keep (BN stats move too)
    seen: list[str] = []
    handle = model.fc.register_forward_hook(lambda m, a, o: seen.append("hook"))
    before = _snapshot(model)
    x = torch.randn(3, 3, 16, 16)
    probe = Probe(model, channels_last="auto", input_size=(3, 16, 16))
    check_against_oracle(model, x, probe=probe)
    xg = x.clone().requires_grad_()
    probe.capture(xg, list(probe.layers)[:2], grad=True)
    probe.logits(xg, grad=True).sum().backward()
    assert xg.grad is not None and xg.grad.abs().sum() > 0
    private = probe.model
    assert _hooks_left(private) != []  # the probe's own hooks, before close
    probe.close()
    assert _hooks_left(private) == []
    assert seen == []  # the user's hook never ran (the oracle strips it from its own copy)
    _assert_same_snapshot(before, _snapshot(model))
    handle.remove()


def test_rebuilt_and_failed_passes_leave_no_hook_behind():
    model = _seeded(SizeBranches)
    probe = Probe(model, channels_last="auto")
    check_against_oracle(model, torch.randn(2, 3, 32, 32), probe=probe)
    with pytest.raises(RuntimeError, match=r"the model failed on an input of size \(2, 32, 32\)"):
        probe.capture(torch.randn(1, 2, 32, 32), ["shared"])  # a failed discovery pass
    check_against_oracle(model, torch.randn(1, 3, 32, 32), probe=probe)  # and it goes on as before
    first = probe.model
    model.shared = nn.Conv2d(8, 8, 1)  # a replaced module: the probe makes a new copy
    check_against_oracle(model, torch.randn(2, 3, 64, 64), probe=probe)
    assert probe.model is not first
    assert _hooks_left(first) == []  # the old copy's hooks went with it
    second = probe.model
    probe.close()
    assert _hooks_left(second) == []


# ---------------------------------------------------------------------------------------------
# more inputs and layouts


class ViewsWhenLarge(nn.Module):
    """Its 64-pixel branch flattens with .view (which needs contiguous activations), its 32-pixel
    branch does not: a channels-last 'auto' probe falls back at the larger size."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=4, padding=1)
        self.small = nn.Linear(4, 3)
        self.large = nn.Linear(4 * 16 * 16, 3)

    def forward(self, x):
        y = self.conv(x)
        if x.shape[-1] <= 32:
            return self.small(y.mean((2, 3)))
        return self.large(y.view(y.shape[0], -1))


def test_a_channels_last_fallback_at_one_size_keeps_both_sizes_right():
    model = _seeded(ViewsWhenLarge)
    with Probe(model, channels_last="auto") as probe:
        check_against_oracle(model, torch.randn(3, 3, 32, 32), probe=probe, rtol=2e-5)
        assert probe.channels_last  # CPU, 2-D convolutions, nothing failed yet
        check_against_oracle(model, torch.randn(3, 3, 64, 64), probe=probe)
        assert not probe.channels_last
        check_against_oracle(model, torch.randn(1, 3, 32, 32), probe=probe)
    with Probe(model, channels_last=True) as probe:
        check_against_oracle(model, torch.randn(1, 3, 32, 32), probe=probe, rtol=2e-5)
        with pytest.raises(RuntimeError, match="channels_last=False"):
            probe.capture(torch.randn(1, 3, 64, 64), ["large"])


def test_inputs_of_other_dtypes_and_strides_are_read_as_their_values():
    model = _seeded(Routing)
    base = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    with Probe(model, channels_last=False, input_size=(3, 16, 16)) as probe:
        # a float64 batch is taken as float32, as the oracle's model computes it
        check_against_oracle(model, base, probe=probe)
        # non-contiguous batches: channels-last memory, a transposed view, a broadcast image (the
        # oracle's convolutions take another path on them: close, not bit for bit)
        for x in (base.float().contiguous(memory_format=torch.channels_last),
                  base.float().transpose(2, 3), base[:1].float().expand(3, -1, -1, -1)):
            check_against_oracle(model, x, probe=probe, rtol=2e-5, exact=False)


def test_a_batch_of_a_model_with_batch_statistics_equals_each_image_alone():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4, track_running_stats=False), nn.ReLU(),
                          nn.Conv2d(4, 2, 1), nn.Flatten(), nn.LazyLinear(3))
    model(torch.zeros(1, 3, 8, 8))
    x = torch.randn(3, 3, 8, 8)
    with Probe(model, channels_last=False, input_size=(3, 8, 8)) as probe:
        assert probe.batch_dependent == ("1",)
        names = [n for n, i in probe.layers.items() if i.calls]
        got = probe.capture(x, names)
        logits = probe.logits(x)
        for i in range(3):  # documented: each image's outputs are its own, as if it were passed alone
            records, output = oracle(model, x[i:i + 1], names)
            for name in names:
                assert torch.equal(got[name][i:i + 1], records[name][-1]), name
            assert torch.equal(logits[i:i + 1], output)


# ---------------------------------------------------------------------------------------------
# regression: a module that keeps its output buffer and writes into it again


class KeepsOutputBuffers(nn.Module):
    """Writes its output into a buffer it keeps per shape in a dict and returns it (or, with
    ``alias``, a detached alias of it): the next pass overwrites what the last one returned."""

    def __init__(self, alias: bool = False) -> None:
        super().__init__()
        self.alias = alias
        self.slots: dict = {}

    def forward(self, x):
        out = self.slots.get(tuple(x.shape))
        if out is None:
            out = self.slots[tuple(x.shape)] = torch.empty_like(x)
        torch.clamp(x, min=0, out=out)
        return out.detach() if self.alias else out


@pytest.mark.parametrize("alias", [False, True], ids=["slot", "detached-alias"])
def test_a_layer_that_reuses_its_output_buffer_keeps_earlier_captures_right(alias):
    # Before the fix, the prefix capture handed this buffer over without a copy (the module keeps it
    # in a dict, not as a plain attribute) and cached it; capturing another input wrote into it, and
    # the first input's cached capture came back with the second input's values.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), KeepsOutputBuffers(alias), nn.Conv2d(4, 2, 1),
                          nn.Sequential(nn.Conv2d(2, 2, 1), KeepsOutputBuffers(alias)))
    x1, x2 = torch.randn(1, 3, 8, 8), torch.randn(1, 3, 8, 8)
    want1, _ = oracle(model, x1, ["1", "3"])
    want2, _ = oracle(model, x2, ["1", "3"])
    with Probe(model, channels_last=False, input_size=(3, 8, 8)) as probe:
        for name in ("1", "3"):  # the layer itself, and a container whose last module keeps the buffer
            first = probe.capture(x1, [name])[name]
            assert torch.equal(first, want1[name][-1])
            assert torch.equal(probe.capture(x2, [name])[name], want2[name][-1])
            assert torch.equal(first, want1[name][-1]), "the next pass wrote into the first capture"
            assert torch.equal(probe.capture(x1, [name])[name], want1[name][-1])  # from the cache


@pytest.mark.parametrize("alias", [False, True], ids=["slot", "detached-alias"])
def test_a_model_whose_output_is_a_reused_buffer_keeps_earlier_logits_right(alias):
    # Before the fix, the model's output went into the cache (and to the caller of an uncached
    # logits) as the model returned it: the next pass wrote the next input's scores into it.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 8 * 8, 5),
                          KeepsOutputBuffers(alias))
    x1, x2 = torch.randn(1, 3, 8, 8), torch.randn(1, 3, 8, 8)
    _, want1 = oracle(model, x1, [])
    _, want2 = oracle(model, x2, [])
    assert not torch.equal(want1, want2)
    with Probe(model, channels_last=False, input_size=(3, 8, 8)) as probe:
        assert torch.equal(probe.logits(x1), want1)
        assert torch.equal(probe.logits(x2), want2)
        assert torch.equal(probe.logits(x1), want1)  # from the cache
        uncached = probe.logits(x1, cache=False)
        probe.logits(x2, cache=False)
        assert torch.equal(uncached, want1), "the caller's own tensor was overwritten by the next pass"
        _, with_logits = probe.capture_with_logits(x2, ["0"], cache=False)
        probe.capture_with_logits(x1, ["0"], cache=False)
        assert torch.equal(with_logits, want2)
    with Probe(model, channels_last=False) as probe:  # the output of the pass that describes the layers
        first = probe.logits(x1, cache=False)
        probe.logits(x2, cache=False)
        assert torch.equal(first, want1)
