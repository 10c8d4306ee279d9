"""The user trains the model while an explorer on it is open, in the same process.

A course user opens ``cnnwidgets.explore(model, image)`` (worker threads on, as in a notebook) and, in the
next cells, trains that very model: optimizer steps, ``train()`` / ``eval()``, ``load_state_dict``, a
trip to float64 or half precision and back, a layer replaced, a convolution fused with its batch norm,
hooks of their own added and removed, layers frozen with ``requires_grad_(False)`` - while still dragging
the occluder and picking layers, channels and methods. Or they train in a thread of their own and use
the explorer meanwhile; or they record the features' evolution with a ``FeatureEvolutionRecorder``.

Every run trains two identical models the same way with the same data and random state: the user's
(``A``, explored) and a twin (``B``) that no explorer ever sees. What the user relies on:

* training is not disturbed: after every ``loss.backward()`` the gradients of ``A`` equal ``B``'s, and
  so do the losses, every parameter and buffer (values, dtypes and version counters: nothing of ``A`` is
  written by the explorer), the ``training`` and ``requires_grad`` flags, and the calls of the user's
  own hooks; ``A`` never carries a hook it was not given by the user (checked after every action);
* once the user stops and calls ``wait_idle()``: the frame, activations, scores and method map describe
  the current weights (equal to a fresh explorer's and to a direct computation), the status line shows
  no error, and the probes' versions grew;
* no exception in any thread, no deadlock (every wait has a timeout), and after ``close()`` no hook
  and no thread is left.

The deterministic tests at the end pin down what these runs found.
"""

from __future__ import annotations

import asyncio
import copy
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import cnnwidgets
from cnnwidgets import zoo
from cnnwidgets.app import Explorer
from cnnwidgets.core.probe import Probe, user_forward_hooks
from cnnwidgets.methods.evolution import FeatureEvolutionRecorder
from tests.test_explorer_stress import fresh_method_map

# a full backward hook on the root module, whose input needs no gradient, fires for the outputs (and says so)
pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")

THREAD_NAMES = ("cnnwidgets-explorer", "cnnwidgets-methods")
WAIT = 60.0  # seconds any wait may take before the test fails (a deadlock fails, it does not hang)

#: The hook dicts a module has; the explorer must add to none of them.
HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
              "_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_forward_pre_hooks_with_kwargs")
OTHER_HOOK_DICTS = ("_state_dict_hooks", "_state_dict_pre_hooks", "_load_state_dict_pre_hooks",
                    "_load_state_dict_post_hooks")


def _explorer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.is_alive() and t.name.startswith(THREAD_NAMES)]


# ---------------------------------------------------------------- the models
class TinyNet(nn.Module):
    """A small CNN of the kind a course trains: batch norm, an in-place ReLU, dropout in the head."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(8, 12, 3, padding=1), nn.BatchNorm2d(12), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(12, 16, 3, padding=1), nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.25), nn.Linear(16, 4))

    def forward(self, x):
        return self.head(self.pool(self.features(x)))


@dataclass
class Kind:
    """One kind of model a user trains, and the changes they make to it."""

    name: str
    make: Callable[[], tuple[nn.Module, Any]]  # () -> (model, what explore() is given: the model or its bundle)
    image: Any
    input_size: tuple[int, int, int]
    classes: int
    explore_options: dict[str, Any]
    # (name, {module path: factory}) module replacements, each applied once
    replacements: list[tuple[str, dict[str, Callable[[], nn.Module]]]]
    fuse: tuple[str, str]  # (convolution, its batch norm)
    freeze: list[str]  # modules the user may freeze
    hook_modules: list[str]  # modules the user may hook
    backward_hook_modules: list[str]  # those that may take a full backward hook (no in-place operation follows)


def _shapes_kind() -> Kind:
    def make():
        bundle = zoo.load_default()
        return bundle.model, bundle

    return Kind(
        "shapes", make, "star", (3, 64, 64), 5, {},
        replacements=[
            ("conv2", {"features.conv2": lambda: nn.Conv2d(16, 16, 3, padding=1)}),
            ("classifier", {"classifier": lambda: nn.Linear(64, 5)}),
        ],
        fuse=("features.conv3", "features.bn3"),
        freeze=["features.conv1", "features.bn2", "classifier"],
        hook_modules=["", "features.conv1", "features.relu2", "features.conv4", "classifier"],
        backward_hook_modules=["", "classifier"],
    )


def _tiny_kind() -> Kind:
    def make():
        torch.manual_seed(0)
        model = TinyNet()
        return model, model

    rng = np.random.default_rng(0)
    picture = (rng.random((32, 32, 3)) * 255).astype(np.uint8)
    return Kind(
        "tiny", make, picture, (3, 32, 32), 4, {"input_size": (3, 32, 32)},
        replacements=[
            ("wider kernel", {"features.4": lambda: nn.Conv2d(8, 12, 5, padding=2)}),
            # fewer channels at the last convolution: the explorer's channel may be gone
            ("narrower", {"features.8": lambda: nn.Conv2d(12, 10, 3, padding=1), "head.2": lambda: nn.Linear(10, 4)}),
        ],
        fuse=("features.0", "features.1"),
        freeze=["features.0", "features.5", "head.2"],
        hook_modules=["", "features.0", "features.2", "features.6", "head.2"],
        backward_hook_modules=["", "head.2"],
    )


KINDS = {"shapes": _shapes_kind, "tiny": _tiny_kind}


def _set_module(model: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, name, module)


# ---------------------------------------------------------------- the user's model and its twin
def _flags(model: nn.Module) -> tuple[dict, dict]:
    return ({n: m.training for n, m in model.named_modules()},
            {n: p.requires_grad for n, p in model.named_parameters()})


@dataclass
class Twins:
    """The user's model ``A`` (explored) and its twin ``B`` (never explored), changed the same way.

    Each has its own optimizer, its own global random state (``torch.get_rng_state``: dropout masks),
    its own hooks (counted in ``calls``), so that any difference between them is the explorer's doing.
    """

    kind: Kind
    a: nn.Module
    b: nn.Module
    target: Any  # what explore() gets for A
    rng: random.Random
    calls: dict[str, Counter] = field(default_factory=lambda: {"a": Counter(), "b": Counter()})
    hook_fns: dict[str, list] = field(default_factory=lambda: {"a": [], "b": []})  # every hook the user made
    handles: list[tuple[str, str, Any, Any]] = field(default_factory=list)  # (module path, kind, handle A, handle B)
    replaced: set[str] = field(default_factory=set)
    fused: bool = False
    saved: tuple[dict, dict] | None = None
    steps: int = 0
    log: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def make(cls, kind: Kind, seed: int) -> Twins:
        a, target = kind.make()
        b = copy.deepcopy(a)
        twins = cls(kind, a, b, target, random.Random(seed))
        twins.opt_a, twins.opt_b = twins._optimizer(a), twins._optimizer(b)
        twins.rng_a = twins.rng_b = torch.Generator().manual_seed(seed).get_state()
        twins.rebase()
        return twins

    def rebase(self) -> None:
        """Take the differences of the version counters of A's and B's tensors as they are (A's were
        loaded, B's deep-copied; new modules and converted buffers start anew): from now on both count
        the same writes."""
        self.offsets = {n: ta._version - tb._version for (n, ta), (_, tb) in
                        zip(self._tensors(self.a), self._tensors(self.b))}

    @staticmethod
    def _tensors(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
        return [*model.named_parameters(), *model.named_buffers()]

    @staticmethod
    def _optimizer(model: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.5, weight_decay=1e-4)

    def both(self, fn: Callable[[nn.Module, str], Any]) -> tuple[Any, Any]:
        """``fn`` on A, then on B, each in its own random state."""
        results = []
        for model, tag in ((self.a, "a"), (self.b, "b")):
            torch.set_rng_state(getattr(self, f"rng_{tag}"))
            try:
                results.append(fn(model, tag))
            finally:
                setattr(self, f"rng_{tag}", torch.get_rng_state())
        return results[0], results[1]

    # ------------------------------------------------------------ what the user does
    def train_step(self, dtype: torch.dtype = torch.float32) -> None:
        """One SGD step on random data, the same on both; their losses and gradients must agree."""
        g = torch.Generator().manual_seed(1000 + self.steps)
        x = torch.randn(6, *self.kind.input_size, generator=g)
        y = torch.randint(0, self.kind.classes, (6,), generator=g)
        self.steps += 1

        def step(model, tag):
            opt = getattr(self, f"opt_{tag}")
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x.to(dtype)), y)
            loss.backward()
            grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
            opt.step()
            return loss.detach().item(), grads

        (loss_a, grads_a), (loss_b, grads_b) = self.both(step)
        assert loss_a == loss_b, (loss_a, loss_b, self.log[-8:])
        assert grads_a.keys() == grads_b.keys(), self.log[-8:]
        for name in grads_a:
            assert grads_a[name].dtype == grads_b[name].dtype
            assert torch.equal(grads_a[name], grads_b[name]), f"gradient of {name} differs; {self.log[-8:]}"
        self.log.append(f"train {dtype}")

    def new_optimizers(self) -> None:
        self.opt_a, self.opt_b = self._optimizer(self.a), self._optimizer(self.b)

    def toggle_mode(self) -> None:
        mode = self.rng.random() < 0.5
        self.both(lambda m, tag: m.train(mode))
        self.log.append(f"train({mode})")

    def load_state(self) -> None:
        """Save both state dicts, or load the ones saved (when the modules still fit them)."""
        now = {k: v.shape for k, v in self.a.state_dict().items()}
        if self.saved is None or {k: v.shape for k, v in self.saved[0].items()} != now or self.rng.random() < 0.3:
            # the first time, after modules were replaced, and now and then
            self.saved = tuple({k: v.clone() for k, v in m.state_dict().items()} for m in (self.a, self.b))
            self.log.append("state_dict saved")
            return
        self.a.load_state_dict(self.saved[0])
        self.b.load_state_dict(self.saved[1])
        self.log.append("load_state_dict")

    def precision_trip(self) -> None:
        """float64 (a training step in it) or half precision, then back to float32."""
        if self.rng.random() < 0.5:
            self.both(lambda m, tag: m.to(torch.float64))
            self.train_step(torch.float64)
            self.both(lambda m, tag: m.float())
            self.log.append("float64 and back")
        else:
            self.both(lambda m, tag: m.half())
            self.both(lambda m, tag: m.float())
            self.log.append("half and back")

    def replace(self) -> bool:
        left = [(name, parts) for name, parts in self.kind.replacements if name not in self.replaced]
        if not left:
            return False
        name, parts = self.rng.choice(left)
        self.replaced.add(name)
        for path, factory in parts.items():
            torch.manual_seed(self.steps + len(self.replaced))
            module = factory()
            _set_module(self.a, path, module)
            _set_module(self.b, path, copy.deepcopy(module))
        self.new_optimizers()
        self.log.append(f"replace {name}")
        return True

    def fuse(self) -> bool:
        if self.fused:
            return False
        self.fused = True
        conv, bn = self.kind.fuse

        def fuse(model, tag):
            model.eval()
            fused = torch.nn.utils.fuse_conv_bn_eval(model.get_submodule(conv), model.get_submodule(bn))
            _set_module(model, conv, fused)
            _set_module(model, bn, nn.Identity())

        self.both(fuse)
        self.new_optimizers()
        self.log.append("fuse")
        return True

    def freeze(self) -> None:
        path = self.rng.choice(self.kind.freeze)
        value = self.rng.random() < 0.5
        self.both(lambda m, tag: m.get_submodule(path).requires_grad_(value))
        self.log.append(f"{path}.requires_grad_({value})")

    def hook(self) -> None:
        """Add a hook of the user's (forward, forward pre-, full backward or backward pre-hook), or remove one."""
        live = [h for h in self.handles if self._holds(h)]
        if live and (len(live) > 3 or self.rng.random() < 0.4):
            entry = self.rng.choice(live)
            entry[2].remove()
            entry[3].remove()
            self.handles.remove(entry)
            self.log.append(f"remove {entry[1]} hook on {entry[0]!r}")
            return
        kind = self.rng.choice(["forward", "pre", "backward", "backward pre"])
        path = self.rng.choice(self.kind.backward_hook_modules if kind.startswith("backward")
                               else self.kind.hook_modules)
        label = f"{kind}:{path}:{len(self.handles)}"

        def add(model, tag):
            module = model.get_submodule(path)
            counter = self.calls[tag]

            def count(*args):
                counter[label] += 1

            self.hook_fns[tag].append(count)
            register = {"forward": module.register_forward_hook, "pre": module.register_forward_pre_hook,
                        "backward": module.register_full_backward_hook,
                        "backward pre": module.register_full_backward_pre_hook}[kind]
            return register(count)

        handle_a, handle_b = self.both(add)
        self.handles.append((path, kind, handle_a, handle_b))
        self.log.append(f"add {kind} hook on {path!r}")

    def _holds(self, entry) -> bool:
        path, _, handle, _ = entry
        try:
            module = self.a.get_submodule(path)
        except AttributeError:
            return False
        return any(handle.id in getattr(module, name) for name in HOOK_DICTS)

    MUTATIONS = ("train", "train", "train", "train", "mode", "load", "precision", "replace", "fuse", "freeze", "hook",
                 "hook")

    def mutate(self, what: str | None = None) -> str:
        what = what or self.rng.choice(self.MUTATIONS)
        with self.lock:
            if what == "train":
                self.train_step()
            elif what == "mode":
                self.toggle_mode()
            elif what == "load":
                self.load_state()
            elif what == "precision":
                self.precision_trip()
            elif what == "replace":
                if not self.replace():
                    self.train_step()
            elif what == "fuse":
                if not self.fuse():
                    self.train_step()
            elif what == "freeze":
                self.freeze()
            elif what == "hook":
                self.hook()
            if what in ("precision", "replace", "fuse"):
                self.rebase()
            self.check()
        return what

    # ------------------------------------------------------------ what must hold at any moment
    def check(self) -> None:
        """A is B: the same hooks of the user's (and no other), flags, parameters and buffers (values,
        dtypes, version counters) and gradients; the user's hooks were called as often."""
        a, b = self.a, self.b
        assert _flags(a) == _flags(b), f"training or requires_grad flags differ; {self.log[-8:]}"
        self.check_hooks()
        assert [n for n, _ in a.named_modules()] == [n for n, _ in b.named_modules()]
        for (na, ta), (nb, tb) in zip(self._tensors(a), self._tensors(b)):
            assert na == nb
            assert ta.dtype == tb.dtype and ta.device == tb.device, na
            assert torch.equal(ta, tb), f"{na} of the user's model differs from the twin's; {self.log[-8:]}"
            assert ta._version - tb._version == self.offsets[na], f"{na} was written to; {self.log[-8:]}"
            if isinstance(ta, nn.Parameter):
                assert (ta.grad is None) == (tb.grad is None), na
                if ta.grad is not None:
                    assert torch.equal(ta.grad, tb.grad), f"the gradient of {na} differs"
        assert self.calls["a"] == self.calls["b"], (self.calls, self.log[-8:])

    def check_hooks(self) -> None:
        """Every hook on A is one of the user's (registered there, or copied with a module by
        ``fuse_conv_bn_eval``), and A has as many of each kind on each module as B."""
        twins = dict(self.b.named_modules())
        for name, module in self.a.named_modules():
            for kind in HOOK_DICTS + OTHER_HOOK_DICTS:
                hooks, theirs = getattr(module, kind), getattr(twins[name], kind)
                assert len(hooks) == len(theirs), f"{kind} of {name!r}: {dict(hooks)}; {self.log[-8:]}"
                if kind in HOOK_DICTS[:4]:
                    stray = [h for h in hooks.values() if not any(h is f for f in self.hook_fns["a"])]
                    assert not stray, f"hooks on {name!r} that the user did not register: {stray}"


# ---------------------------------------------------------------- what the explorer user does
def _random_box(ex: Explorer, rng: random.Random) -> tuple | None:
    h, w = ex.input_image.shape[:2]
    if rng.random() < 0.1:
        return None
    side = rng.randint(2, min(w, h) // 2)
    return (rng.randint(0, w - side), rng.randint(0, h - side), side, side)


def explorer_action(ex: Explorer, rng: random.Random, log: list[str]) -> None:
    """One thing the user does in the explorer, as the browser sends it."""
    what = rng.choices(["box", "drag", "layer", "channel", "method", "target", "scores"],
                       [5, 4, 3, 3, 3, 1, 1])[0]
    if what == "box":
        box = _random_box(ex, rng)
        if rng.random() < 0.5:
            ex.box = box
        else:
            ex.canvas.set_state({"box": None if box is None else list(box)})
        log.append(f"box {box}")
    elif what == "drag":
        h, w = ex.input_image.shape[:2]
        box = ex.box or (w // 4, h // 4, w // 4, h // 4)
        box = tuple(int(v) for v in box)
        ex.canvas.set_state({"dragging": True, "box": list(box)})
        for _ in range(rng.randint(1, 6)):
            x = min(max(0, box[0] + rng.randint(-4, 4)), w - box[2])
            y = min(max(0, box[1] + rng.randint(-4, 4)), h - box[3])
            box = (x, y, box[2], box[3])
            ex.canvas.set_state({"box": list(box)})
        if rng.random() < 0.8:
            ex.canvas.set_state({"box": list(box), "dragging": False})
        log.append(f"drag to {box} (dragging {ex.dragging})")
    elif what == "layer":
        layer = rng.choice(list(ex.layer_select.options))
        ex.layer = layer
        log.append(f"layer {layer}")
    elif what == "channel":
        channel = rng.randrange(ex._channels(ex.layer))
        ex.channel = channel
        log.append(f"channel {channel}")
    elif what == "method":
        method = rng.choice(["occlusion", "grad-cam", "deconvnet", "saliency", "grad-cam", "none"])
        ex.method = method
        log.append(f"method {method}")
    elif what == "target":
        target = None if rng.random() < 0.4 else rng.randrange(ex._class_count)
        ex.target = target
        log.append(f"target {target}")
    else:
        ex.show_scores = rng.random() < 0.8
        log.append(f"show_scores {ex.show_scores}")


def next_update(ex: Explorer) -> None:
    """The user's next change in the explorer once the training stopped: the box moved. (The explorer
    follows the weights at its next update, as the README says; nothing polls the model meanwhile.)"""
    ex.canvas.set_state({"dragging": False})  # the user lets go of the occluder
    box = ex.box
    ex.box = (3, 2, 9, 9) if box is None or tuple(int(v) for v in box) != (3, 2, 9, 9) else (2, 3, 9, 9)


def _eval_copy(model: nn.Module) -> nn.Module:
    """The user's model as the explorer computes it: a copy in evaluation mode, float32, without hooks."""
    clone = copy.deepcopy(model).float().eval()
    for module in clone.modules():
        for kind in HOOK_DICTS:
            getattr(module, kind).clear()
    return clone


def check_current(ex: Explorer, twins: Twins, errors: list[str]) -> None:
    """Once idle: what the explorer shows describes the current weights of the user's model."""
    assert ex.wait_idle(WAIT), f"not idle; {twins.log[-8:]}"
    assert not errors, errors
    assert not ex.status.is_error, f"{ex.status.message!r}; {twins.log[-8:]}"
    assert "Traceback" not in ex.status.message
    assert ex.method_error is None, ex.method_error
    assert not ex.probe.user_model_changed()
    # its notes describe the model as it is now
    assert ("training mode" in ex.status.message) == any(
        m.training for m in twins.a.modules() if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.Dropout)))
    assert ("own forward hooks do not run here" in ex.status.message) == bool(user_forward_hooks(twins.a))
    state = ex.state()
    assert ex.shown_state == state, (ex.shown_state, state)
    assert not ex.grid_busy and not ex.out_of_date

    # a fresh explorer on the model as it is now draws the same
    fresh = cnnwidgets.explore(
        twins.target, twins.kind.image, background=False, layer=state.layer, channel=state.channel, box=state.box,
        fill=state.fill, norm=state.norm, cmap=state.cmap, show_scores=state.show_scores, target=state.target,
        **twins.kind.explore_options)
    try:
        assert fresh.wait_idle(WAIT) and not fresh.status.is_error, fresh.status.message
        assert np.array_equal(fresh.input_image, ex.input_image)
        assert np.array_equal(fresh.activations, ex.activations), f"stale activations; {twins.log[-8:]}"
        assert np.array_equal(fresh.baseline_activations, ex.baseline_activations)
        assert np.array_equal(fresh.grid_image, ex.grid_image)
        assert np.array_equal(fresh.channel_image, ex.channel_image)
        if state.show_scores:
            assert np.array_equal(fresh.scores["probs"], ex.scores["probs"]), f"stale scores; {twins.log[-8:]}"
            assert fresh.scores["rows"] == ex.scores["rows"]
    finally:
        fresh.close()

    # ... and a direct computation on a plain evaluation-mode copy of the model
    prepared = ex._images[ex._image_id]
    x = prepared.tensor if state.box is None else prepared.occluded(state.box, state.fill)
    plain = _eval_copy(twins.a)
    with Probe(plain, input_size=tuple(x.shape[1:]), channels_last=False) as probe:
        direct = probe.capture(x, [state.layer], channels_first=True)[state.layer][0]
    np.testing.assert_allclose(ex.activations, direct.numpy(), rtol=1e-4, atol=1e-5)
    if state.show_scores:
        with torch.no_grad():
            probs = torch.softmax(plain(x), dim=1)[0].numpy()
        np.testing.assert_allclose(ex.scores["probs"], probs, rtol=1e-4, atol=1e-6)

    # the method map is the current weights' too, as a fresh runner computes it
    result, request = ex.method_result, ex.method_request()
    if ex.method == "none":
        assert result is None
        return
    assert result is not None and result.complete and result.request.key() == request.key(), (result, request)
    fresh = fresh_method_map(twins.a, request, prepared)
    np.testing.assert_allclose(result.heat, fresh.heat, rtol=1e-4, atol=1e-6, equal_nan=True)
    assert result.target == fresh.target


def check_closed(ex: Explorer, twins: Twins, errors: list[str]) -> None:
    ex.close()
    deadline = time.monotonic() + WAIT
    while _explorer_threads() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _explorer_threads(), [t.name for t in _explorer_threads()]
    assert ex.controller.probe.closed and ex._methods.probe is None
    assert ex.controller.probe._user_model is None and ex._methods._model is None  # the model is let go
    twins.check()  # only the user's hooks are left, and nothing of the user's model changed
    with twins.lock:  # the user trains on: nothing of the closed explorer takes part
        for _ in range(3):
            twins.train_step()
            twins.check()
    assert not _explorer_threads() and not errors, errors


def _open(twins: Twins, **options: Any) -> Explorer:
    return cnnwidgets.explore(twins.target, twins.kind.image, background=True, **twins.kind.explore_options,
                              **options)


# ---------------------------------------------------------------- the runs
@pytest.mark.parametrize("kind, seed", [("shapes", 1), ("tiny", 2), ("shapes", 3), ("tiny", 4), ("shapes", 5),
                                        ("tiny", 6)])
def test_training_between_explorer_actions_on_the_main_thread(kind, seed, thread_errors):
    """Cell after cell on the main thread: a few training steps or changes of the model, then the user
    drags and picks in the explorer (its workers computing meanwhile), and so on."""
    twins = Twins.make(KINDS[kind](), seed)
    rng = random.Random(seed)

    async def use() -> None:
        ex = _open(twins, method="grad-cam")
        try:
            assert ex.wait_idle(WAIT)
            versions = (ex.probe.version, ex._methods.probe.version)
            for round_ in range(3):
                for _ in range(24):
                    twins.mutate()
                    for _ in range(rng.randint(0, 3)):
                        # the explorer's calls on this thread run in the user's random state: they draw nothing
                        twins.both(lambda m, tag: tag == "a" and explorer_action(ex, rng, twins.log))
                        twins.check()
                        if rng.random() < 0.5:
                            await asyncio.sleep(rng.choice([0.0, 0.002, 0.01]))
                if ex.method == "none":
                    ex.method = ("deconvnet", "occlusion", "grad-cam")[round_]
                next_update(ex)
                check_current(ex, twins, thread_errors)
                twins.check()
            assert ex.probe.version > versions[0] and ex._methods.probe.version > versions[1]
            assert ex.stats["model_changes"] > 0
        finally:
            check_closed(ex, twins, thread_errors)

    asyncio.run(use())


@pytest.mark.parametrize("kind, seed", [("shapes", 11), ("tiny", 12), ("shapes", 13), ("tiny", 14)])
def test_training_in_a_thread_while_the_explorer_is_used(kind, seed, thread_errors):
    """A training loop in a thread of the user's; meanwhile, on the main thread, the explorer is used."""
    twins = Twins.make(KINDS[kind](), seed)
    rng = random.Random(seed + 100)
    failures: list[BaseException] = []
    done = threading.Event()

    def training() -> None:
        try:
            for _ in range(80):
                twins.mutate()
                time.sleep(0.001)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            failures.append(exc)
        finally:
            done.set()

    async def use() -> None:
        ex = _open(twins, method="occlusion")
        trainer = threading.Thread(target=training, name="user-training")
        try:
            assert ex.wait_idle(WAIT)
            versions = (ex.probe.version, ex._methods.probe.version)
            trainer.start()
            actions = 0
            while not done.is_set() or actions < 20:
                explorer_action(ex, rng, twins.log)
                actions += 1
                with twins.lock:
                    twins.check_hooks()  # between two of the explorer's calls, whatever the trainer does
                await asyncio.sleep(rng.choice([0.0, 0.001, 0.005]))
            trainer.join(WAIT)
            assert not trainer.is_alive(), "the training thread hangs"
            assert not failures, failures
            if ex.method == "none":
                ex.method = "grad-cam"
            next_update(ex)
            check_current(ex, twins, thread_errors)
            twins.check()
            assert ex.probe.version > versions[0] and ex._methods.probe.version > versions[1]
        finally:
            if trainer.is_alive():
                trainer.join(WAIT)
            check_closed(ex, twins, thread_errors)

    asyncio.run(use())


def test_training_with_a_feature_evolution_recorder_and_an_explorer(thread_errors):
    """The course's Fig. 4 exercise: a recorder in the training loop, an explorer open on the same model."""
    twins = Twins.make(_tiny_kind(), 21)
    rng = random.Random(21)
    g = torch.Generator().manual_seed(5)
    images = torch.randn(6, 3, 32, 32, generator=g)
    layers = {"features.4": [0, 5, 11], "head.2": 4}

    async def use() -> None:
        ex = _open(twins, method="deconvnet", layer="features.4")
        recorder = FeatureEvolutionRecorder(twins.a, images, layers, epochs=None, unit="step")
        try:
            assert ex.wait_idle(WAIT)
            twins.check()
            for epoch in range(1, 11):
                for _ in range(2):
                    twins.mutate(rng.choice(["train", "train", "mode", "freeze", "hook", "precision"]))
                    explorer_action(ex, rng, twins.log)
                    await asyncio.sleep(0.002)
                # recorded in the user's random state: the recorder must leave it as it was
                stored = twins.both(lambda m, tag, epoch=epoch: tag == "a" and recorder.record(epoch))[0]
                assert stored
                twins.check()
                plain = _eval_copy(twins.a)
                with Probe(plain, input_size=(3, 32, 32), channels_last=False) as probe:
                    acts = probe.capture(images, list(layers))
                for (layer, channel), frames in recorder.result().frames.items():
                    frame = frames[-1]
                    assert frame.epoch == epoch
                    strongest = float(acts[layer][:, channel].max())
                    assert frame.value == pytest.approx(strongest, rel=1e-5, abs=1e-6), (layer, channel, epoch)
                if epoch == 4:
                    twins.mutate("fuse")  # the recorder's layers stay
            twins.mutate("train")
            next_update(ex)
            check_current(ex, twins, thread_errors)
        finally:
            recorder.close()
            check_closed(ex, twins, thread_errors)

    asyncio.run(use())


# ---------------------------------------------------------------- regressions found by these runs
def test_a_round_trip_to_half_precision_is_seen_though_the_memory_is_reused():
    """``model.half(); model.float()`` rounds every weight to half precision and gives each parameter new
    memory without a version bump; the allocator often hands the float32 memory just freed back to the new
    float32 tensor, at the same address. The probe, which told storages apart by their address, took that
    for no change and went on computing with the weights before the round trip."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4096, 2, bias=False))  # 32 KiB: memory the allocator reuses
    x = torch.randn(1, 1, 1, 4096)
    with Probe(model, input_size=(1, 1, 4096)) as probe:
        for trial in range(10):
            with torch.no_grad():
                model[1].weight.copy_(torch.randn(2, 4096))  # values that half precision cannot hold
            probe.sync()
            version = probe.version
            model.half()
            model.float()
            assert probe.user_model_changed(), trial
            logits = probe.logits(x)
            assert probe.version == version + 1
            assert torch.equal(probe.model[1].weight, model[1].weight), trial
            with torch.no_grad():
                torch.testing.assert_close(logits, model(x), rtol=1e-5, atol=1e-5)


def test_the_explorer_shows_the_weights_after_a_round_trip_to_half_precision():
    """The same, as the user sees it: after ``model.half(); model.float()`` the explorer's next update shows
    the rounded weights, as a fresh explorer does."""
    torch.manual_seed(0)
    # one weight tensor of 38 KiB, whose memory the allocator reuses (as a weight of a larger model may be)
    model = nn.Sequential(nn.Conv2d(3, 128, 5, padding=2, bias=False), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten()).eval()
    picture = (np.random.default_rng(0).random((16, 16, 3)) * 255).astype(np.uint8)
    options = {"input_size": (3, 16, 16), "layer": "0", "box": (4, 4, 6, 6), "background": False}
    ex = cnnwidgets.explore(model, picture, **options)
    try:
        for trial in range(8):
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(torch.randn_like(p) * 1e-3)  # an optimizer step
            ex.box = (2 + trial % 3, 4, 6, 6)  # seen at this update
            model.half()
            model.float()
            ex.box = (2 + (trial + 1) % 3, 5, 6, 6)  # the next update
            assert ex.wait_idle(WAIT) and not ex.status.is_error
            fresh = cnnwidgets.explore(model, picture, **{**options, "box": ex.box})
            try:
                assert np.array_equal(fresh.activations, ex.activations), trial
                assert np.array_equal(fresh.scores["probs"], ex.scores["probs"]), trial
            finally:
                fresh.close()
    finally:
        ex.close()


def test_the_status_line_notes_follow_model_eval_and_the_users_hooks():
    """The notes on the user's model - left in training mode, forward hooks of its own that the copies do not
    run - were written once, when the explorer opened: after ``model.eval()`` the status line still said the
    model was in training mode, a hook added since went unmentioned and one removed stayed mentioned."""
    torch.manual_seed(0)
    model = TinyNet()  # in training mode, as made
    picture = (np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)
    ex = cnnwidgets.explore(model, picture, input_size=(3, 32, 32), box=(2, 2, 8, 8), background=False)
    try:
        assert "the model is in training mode (3 BatchNorm2d/Dropout module(s))" in ex.status.message
        assert "hooks" not in ex.status.message
        model.eval()
        handle = model.features[0].register_forward_hook(lambda module, args, out: None)
        ex.box = (3, 3, 8, 8)  # the next update
        assert not ex.status.is_error
        assert "training mode" not in ex.status.message
        assert "own forward hooks do not run here (forward hook <lambda> on 'features.0' (Conv2d))" in ex.status.message
        model.head.train()  # its dropout only
        handle.remove()
        ex.box = (4, 4, 8, 8)
        assert "the model is in training mode (1 Dropout module(s))" in ex.status.message
        assert "hooks" not in ex.status.message
    finally:
        ex.close()
