"""Cross-cutting: no public entry point changes the user's model, whether it succeeds or raises.

Each entry point is a function ``(model, x) -> None`` run on the small :class:`Net` below
(training mode, a user hook, a frozen layer, existing gradients, in-place ReLUs) with
``x`` of shape (2, 3, 16, 16). Besides the core entry points listed here, every module
``tests/hygiene_cases_*.py`` contributes its own ``ENTRY_POINTS`` (name -> fn) and
``RAISING`` (name -> (fn, expected exception)), so each method family adds itself to the
same invariants without touching this file.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from cnnwidgets import ChannelActivation, ClassProbability, ModelSnapshot, Probe
from cnnwidgets.core.targets import target_score


class Net(nn.Module):
    """Small CNN with the traps: in-place ReLU, batch norm, dropout, a module that can fail."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(6)
        self.relu1 = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1)
        self.relu2 = nn.ReLU(inplace=True)
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(8, 4)
        self.fail = False

    def forward(self, x):
        x = self.pool(self.relu1(self.bn1(self.conv1(x))))
        x = self.relu2(self.conv2(x))
        if self.fail:
            raise RuntimeError("deliberate failure inside the model")
        x = self.drop(x.mean(dim=(2, 3)))
        return self.head(x)


def prepared_model() -> tuple[nn.Module, list]:
    """A model in training mode with a user hook, a frozen layer and existing gradients."""
    model = Net().train()
    calls: list = []
    model.conv2.register_forward_hook(lambda m, i, o: calls.append("user hook"))
    model.conv1.weight.requires_grad_(False)
    model(torch.randn(2, 3, 16, 16)).sum().backward()
    calls.clear()
    return model, calls


def _capture(model, x):
    with Probe(model) as p:
        p.capture(x, ["conv1", "relu2"])


def _capture_grad(model, x):
    with Probe(model) as p:
        x = x.clone().requires_grad_(True)
        p.capture(x, "conv2", grad=True)["conv2"].sum().backward()
        assert x.grad is not None


def _logits(model, x):
    with Probe(model) as p:
        p.logits(x)
        x = x.clone().requires_grad_(True)
        p.logits(x, grad=True).sum().backward()
        assert x.grad is not None


def _layers_and_device(model, x):
    p = Probe(model, device="cpu")
    p.layers
    p.to("cpu")
    p.close()


def _targets(model, x):
    with Probe(model) as p:
        target_score(p, x, ClassProbability(1))
        target_score(p, x, ChannelActivation("conv2", 3, reduce="sum"))


def _bad_layer(model, x):
    with Probe(model) as p:
        p.capture(x, "conv3")


def _bad_input(model, x):
    with Probe(model) as p:
        p.capture(x[0], "conv1")


def _model_raises(model, x):
    with Probe(model) as p:
        p.layers
        p.model.fail = True
        p.logits(x)


def _exception_inside_context(model, x):
    with Probe(model) as p:
        p.capture(x, "conv1")
        raise ValueError("user code fails while the probe is open")


ENTRY_POINTS: dict[str, Callable] = {
    "capture": _capture,
    "capture_grad": _capture_grad,
    "logits": _logits,
    "layers_and_device": _layers_and_device,
    "targets": _targets,
}

RAISING: dict[str, tuple[Callable, type]] = {
    "bad_layer": (_bad_layer, KeyError),
    "bad_input": (_bad_input, ValueError),
    "model_raises": (_model_raises, RuntimeError),
    "exception_inside_context": (_exception_inside_context, ValueError),
}


def _collect_cases() -> None:
    for path in sorted(Path(__file__).parent.glob("hygiene_cases_*.py")):
        module = importlib.import_module(f"tests.{path.stem}")
        for name, fn in getattr(module, "ENTRY_POINTS", {}).items():
            ENTRY_POINTS[f"{path.stem[len('hygiene_cases_'):]}.{name}"] = fn
        for name, case in getattr(module, "RAISING", {}).items():
            RAISING[f"{path.stem[len('hygiene_cases_'):]}.{name}"] = case


_collect_cases()


def _assert_clean(model: nn.Module, snapshot: ModelSnapshot, calls: list) -> None:
    snapshot.assert_unchanged(model)
    assert calls == [], "the user's own hook must not fire during inspection"
    assert model.training and all(m.training for m in model.modules())


# the prepared model's user hook makes the methods warn that they do not run it (UserHooksWarning)
@pytest.mark.filterwarnings("ignore::cnnwidgets.core.UserHooksWarning")
@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_entry_point_leaves_model_unchanged(name):
    model, calls = prepared_model()
    snapshot = ModelSnapshot.take(model)
    ENTRY_POINTS[name](model, torch.randn(2, 3, 16, 16))
    _assert_clean(model, snapshot, calls)


@pytest.mark.filterwarnings("ignore::cnnwidgets.core.UserHooksWarning")
@pytest.mark.parametrize("name", sorted(RAISING))
def test_raising_entry_point_leaves_model_unchanged(name):
    fn, error = RAISING[name]
    model, calls = prepared_model()
    snapshot = ModelSnapshot.take(model)
    with pytest.raises(error):
        fn(model, torch.randn(2, 3, 16, 16))
    _assert_clean(model, snapshot, calls)


def test_snapshot_detects_every_kind_of_change():
    """The checker itself must be able to fail."""
    changes = {
        "training": lambda m: m.eval(),
        "hook": lambda m: m.conv1.register_forward_hook(lambda *a: None),
        "grad": lambda m: m.head.weight.grad.add_(1.0),
        "values": lambda m: m.head.bias.data.add_(1.0),
        "requires_grad": lambda m: m.head.bias.requires_grad_(False),
        "inplace": lambda m: setattr(m.relu1, "inplace", False),
        "buffer": lambda m: m.bn1.running_mean.add_(1.0),
        "parameter hook": lambda m: m.head.weight.register_hook(lambda g: g),
        "accumulate hook": lambda m: m.head.bias.register_post_accumulate_grad_hook(lambda p: None),
        "always-called hook": lambda m: m.conv1.register_forward_hook(lambda *a: None, always_call=True),
        "state-dict hook": lambda m: m.head._register_state_dict_hook(lambda *a: None),
        "load hook": lambda m: m.head.register_load_state_dict_post_hook(lambda *a: None),
    }
    for what, change in changes.items():
        model, _ = prepared_model()
        snapshot = ModelSnapshot.take(model)
        change(model)
        with pytest.raises(AssertionError):
            snapshot.assert_unchanged(model)


def test_the_snapshot_takes_nan_for_nan_and_sees_a_replaced_parameter():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    with torch.no_grad():
        model[0].bias[0] = float("nan")  # a diverged weight, left alone
    snapshot = ModelSnapshot.take(model)
    assert snapshot.differences(model) == []  # NaN != NaN made an untouched model look changed
    model[0].bias = nn.Parameter(model[0].bias.detach().clone())  # same values, another object
    assert snapshot.differences(model) == ["'0.bias' was replaced by another tensor object"]
    with torch.no_grad():
        model[0].weight[0, 0, 0, 0] += 1
    assert "values of '0.weight' changed" in snapshot.differences(model)


def test_the_snapshot_compares_meta_tensors_by_shape_and_dtype():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Linear(4, 2))
    model[2].to("meta")  # shapes without values
    snapshot = ModelSnapshot.take(model)
    assert snapshot.differences(model) == []
    model[2].to(torch.float64)
    assert "values of '2.weight' changed" in snapshot.differences(model)
    model[2].to_empty(device="cpu")
    assert "devices['2.bias']: 'meta' -> 'cpu'" in snapshot.differences(model)


def _interrupted_at_registration(monkeypatch, k: int) -> list[int]:
    """Make the k-th forward (pre-)hook registration from now on raise KeyboardInterrupt, as an
    interrupt arriving during a method's registration loop would; returns the live count."""
    count = [0]
    for name in ("register_forward_hook", "register_forward_pre_hook"):
        real = getattr(nn.Module, name)

        def register(self, *args, _real=real, **kwargs):
            count[0] += 1
            if count[0] == k:
                raise KeyboardInterrupt(f"interrupted at hook registration {k}")
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(nn.Module, name, register)
    return count


def _probe_hooks(probe: Probe) -> int:
    from cnnwidgets.core.hygiene import hook_count

    return sum(hook_count(m) for m in probe.model.modules())


def _methods_registering_hooks():
    from cnnwidgets import methods as M

    return {
        "maximize_activation": lambda p, x: M.maximize_activation(p, 1, steps=2, size=16, progress=False),
        "guided_backprop": lambda p, x: M.guided_backprop(p, x, 1),
        "deconvnet": lambda p, x: M.deconvnet(p, x, ChannelActivation("conv2", 0)),
        "cam": lambda p, x: M.cam(p, x, 1),
    }


@pytest.mark.parametrize("method", sorted(_methods_registering_hooks()))
def test_an_interrupt_during_hook_registration_leaves_no_hook_on_the_probe(method, monkeypatch):
    """Every temporary hook is removed, also those registered before an interrupt stopped the
    registration loop: a redirected-ReLU hook left on the probe's copy made every later gradient
    through that probe silently wrong."""
    call = _methods_registering_hooks()[method]
    model = Net().eval()
    model.fail = False
    x = torch.randn(1, 3, 16, 16)
    interrupted = 0
    for k in range(1, 40):
        with Probe(model) as probe:
            probe.capture(x, ["conv2"])  # the probe's own hooks are in place
            before = _probe_hooks(probe)
            with monkeypatch.context() as patch:
                count = _interrupted_at_registration(patch, k)
                try:
                    call(probe, x)
                except KeyboardInterrupt:
                    interrupted += 1
                else:
                    assert count[0] < k
                    break
            assert _probe_hooks(probe) == before, f"hooks left after an interrupt at registration {k}"
    assert interrupted >= 2, "the method registered fewer hooks than the test means to interrupt"
