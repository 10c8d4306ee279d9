"""Test helpers that do not use the code under test."""

from __future__ import annotations

import copy
import re
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


def small_classifier() -> nn.Sequential:
    """Two convolutions with ReLUs, global pooling and a 5-class head, seeded, in eval mode."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5),
    ).eval()


def batch_statistics_net() -> nn.Sequential:
    """Its batch norm keeps no running statistics: in eval mode it normalises with the batch's."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4, track_running_stats=False), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3),
    ).eval()


def reference_outputs(model: nn.Module, x: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
    """Outputs of ``names`` (last call, cloned on return) from one full forward of an eval copy."""
    clone = copy.deepcopy(model).eval()
    modules = dict(clone.named_modules())
    results: dict[str, torch.Tensor] = {}
    handles = []
    for name in names:
        def hook(module, args, output, name=name):
            results[name] = output.detach().clone()
        handles.append(modules[name].register_forward_hook(hook))
    try:
        with torch.no_grad():
            clone(x)
    finally:
        for h in handles:
            h.remove()
    return results


class AuxiliaryHeadNet(nn.Module):
    """A convolution, and an auxiliary head that runs only in training (as in GoogLeNet)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.aux = nn.Conv2d(4, 4, 3)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        x = self.conv(x)
        if self.training:
            x = x + self.aux(x).mean()
        return self.fc(x.mean((2, 3)))


class ScalesInPlace(nn.Module):
    """Wraps ``model``; rescales its input in place first (``x /= c``), as some deployed models do."""

    def __init__(self, model: nn.Module, factor: float = 0.25) -> None:
        super().__init__()
        self.model = model
        self.factor = factor

    def forward(self, x):
        x /= self.factor
        return self.model(x)


class HeadFirst(nn.Module):
    """Registers a 16-channel 1x1 head before its 3-channel stem: the first convolution
    registered is not the first that runs."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Conv2d(16, 5, 1)
        self.stem = nn.Conv2d(3, 16, 3, padding=1)

    def forward(self, x):
        return self.head(torch.relu(self.stem(x))).mean(dim=(2, 3))



class OutsideAutogradNet(nn.Module):
    """A small classifier whose own forward runs inside ``mode()`` (``torch.no_grad`` or
    ``torch.inference_mode``), as some deployment code does: it has no gradient to show."""

    def __init__(self, mode) -> None:
        super().__init__()
        self.mode = mode
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        with self.mode():
            return self.head(self.relu(self.conv(x.clone())).mean(dim=(2, 3)))


class FailsAtTheLastPosition(nn.Module):
    """Runs on any batch, fails when the window covers the bottom-right pixel (last in raster order)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool((x[:, :, -1, -1] == 0).any()):
            raise KeyError("bottom right")
        return self.fc(self.conv(x).mean(dim=(2, 3)))


def capture_batch_sizes(monkeypatch, probe) -> list[int]:
    """Record the batch size of every ``probe.capture`` call from now on (the list fills as it runs)."""
    sizes: list[int] = []
    real = probe.capture

    def capture(batch, *args, **kwargs):
        sizes.append(batch.shape[0])
        return real(batch, *args, **kwargs)

    monkeypatch.setattr(probe, "capture", capture)
    return sizes


#: Every hook dict a module has (forward, forward-pre, backward and their variants, state-dict hooks).
HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
              "_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_forward_pre_hooks_with_kwargs",
              "_state_dict_hooks", "_load_state_dict_pre_hooks")


def hook_dicts(model: nn.Module) -> dict[str, tuple]:
    """The contents of every hook dict of every module of ``model``, by module name."""
    return {name: tuple(tuple(getattr(module, kind, {}).items()) for kind in HOOK_DICTS)
            for name, module in model.named_modules()}


@dataclass
class UserModelSnapshot:
    """A user's model as a test found it: hooks, parameters and buffers (copies), training flags."""

    hooks: dict[str, tuple]
    tensors: dict[str, torch.Tensor]
    training: dict[str, bool]

    @classmethod
    def take(cls, model: nn.Module) -> UserModelSnapshot:
        tensors = {f"p:{k}": v.detach().clone() for k, v in model.named_parameters()}
        tensors.update({f"b:{k}": v.detach().clone() for k, v in model.named_buffers()})
        return cls(hook_dicts(model), tensors, {name: m.training for name, m in model.named_modules()})

    def assert_unchanged(self, model: nn.Module) -> None:
        assert hook_dicts(model) == self.hooks, "hooks were left on (or taken off) the user's model"
        now = {f"p:{k}": v for k, v in model.named_parameters()}
        now.update({f"b:{k}": v for k, v in model.named_buffers()})
        assert now.keys() == self.tensors.keys()
        for name, value in now.items():
            assert torch.equal(value, self.tensors[name]), f"{name} of the user's model changed"
        assert {name: m.training for name, m in model.named_modules()} == self.training


def classified_call(call, values: dict, *, refused_ok: bool, must_refuse: bool, check, check_error,
                    what: str, outcomes: list[str], warnings_action: str = "ignore"):
    """One fuzzed call, ``call(**values)``, judged as the fuzz tests judge it.

    Args:
        call: the function under test.
        values: its keyword arguments.
        refused_ok: whether some argument is invalid or may be (an error is then judged by
            ``check_error(exc)``, which raises AssertionError for one that is not clear); else an
            error fails the test as valid arguments refused.
        must_refuse: whether some argument is invalid (a result then fails the test).
        check: ``check(result, values)``, raising AssertionError for a result that breaks an invariant.
        check_error: see ``refused_ok``.
        what: the call, in words, for the failure messages.
        outcomes: ``"raised"`` or ``"returned"`` is appended to it.
        warnings_action: what the warnings raised by the call do (``"error"``: fail it).

    Returns:
        The result, or None when the call raised.
    """
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter(warnings_action)
        try:
            result = call(**values)
        except Exception as exc:  # noqa: BLE001 - classified below
            if not refused_ok:
                raise AssertionError(f"{what}: valid arguments were refused: {type(exc).__name__}: {exc}") from exc
            check_error(exc)
            outcomes.append("raised")
            return None
        assert not must_refuse, f"{what}: invalid arguments were accepted"
        try:
            check(result, values)
        except AssertionError as exc:
            raise AssertionError(f"{what}: the result breaks an invariant: {exc}") from exc
        outcomes.append("returned")
        return result


@dataclass
class Api:
    """A function under test in the view API fuzz tests: its valid keyword arguments (plain values),
    pools of invalid values per argument ``(value, the error it raises, what the message must also
    match)``, other spellings of the plain values, and valid edge values (checked by ``check``)."""

    name: str
    call: Callable[..., Any]
    base: dict[str, Any]
    invalid: dict[str, list[tuple[Any, type, str]]]
    spelled: dict[str, list[Any]] = field(default_factory=dict)
    edge: dict[str, list[Any]] = field(default_factory=dict)
    check: Callable[[Any, dict], None] = lambda result, values: None
    draws: int = 4  # calls with other spellings (fewer for the slow ones)
    plain: Any = None  # the outcome of the base call, made once


def raised_by_the_package(exc: BaseException) -> bool:
    """Whether ``exc`` was raised in cnnwidgets (its innermost frame), not inside NumPy, torch,
    matplotlib or traitlets; Python's own refusal of an unknown keyword argument (raised at the
    call) counts too."""
    frames = traceback.extract_tb(exc.__traceback__)
    if isinstance(exc, TypeError) and re.search(r"unexpected keyword argument", str(exc)):
        return True
    return bool(frames) and "/cnnwidgets/" in frames[-1].filename.replace("\\", "/")


def judge(api: Api, option: str, error: type, accepted: str, *, named_by_what_it_takes: set[str] = frozenset(),
          named_also: Mapping[str, str] | None = None) -> Callable[[BaseException], None]:
    """The check of a refusal of ``option``: an ``error`` raised by the package, whose message names the
    option (its words, singular or plural, or its other words in ``named_also``; options in
    ``named_by_what_it_takes`` are named by what they take instead) and says ``accepted``, with no
    traceback in it."""

    def check_error(exc: BaseException) -> None:
        message = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
        what = f"{api.name}({option}=...)"
        assert isinstance(exc, error), f"{what}: {type(exc).__name__} is not {error.__name__}: {message}"
        assert raised_by_the_package(exc), (f"{what}: raised inside "
                                            f"{traceback.extract_tb(exc.__traceback__)[-1].filename}: {message}")
        words = message.lower().replace("_", " ")
        named = (option.lower().replace("_", " ").rstrip("s") in words
                 or (named_also or {}).get(option, option) in words)
        assert named or option in named_by_what_it_takes, f"{what}: the message does not name the argument: {message}"
        assert re.search(accepted, message), f"{what}: the message does not say {accepted!r}: {message}"
        assert "Traceback" not in message
    return check_error
