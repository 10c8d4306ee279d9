"""Checks that a model was left exactly as it was (used by the test-suite and by users).

``ModelSnapshot.take(model)`` records everything cnnwidgets promises never to change;
``snapshot.assert_unchanged(model)`` lists every difference.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.parameter import UninitializedTensorMixin

from cnnwidgets.core.layers import check_module

__all__ = ["ModelSnapshot", "hook_count"]

_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_pre_hooks",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_pre_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_state_dict_hooks",
    "_state_dict_pre_hooks",
    "_load_state_dict_pre_hooks",
    "_load_state_dict_post_hooks",
)


def hook_count(module: nn.Module) -> int:
    """Number of hooks registered on ``module`` itself: forward and backward hooks, and the
    state-dict hooks that saving or loading the model would run.

    Raises:
        TypeError: when ``module`` is not an ``nn.Module``.
    """
    check_module(module, "module")
    return sum(len(getattr(module, attr, None) or {}) for attr in _HOOK_DICTS)


def _hook_ids(module: nn.Module) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    """The ids of the hooks registered on ``module`` itself, per kind: each registration has its own,
    so one hook taken off and another put on in its place is told apart."""
    return tuple((attr, tuple(getattr(module, attr, None) or {})) for attr in _HOOK_DICTS)


def _tensor_hook_count(tensor: torch.Tensor) -> int:
    """Hooks on a parameter or buffer itself (``tensor.register_hook`` and
    ``register_post_accumulate_grad_hook``)."""
    return sum(len(getattr(tensor, attr, None) or {}) for attr in ("_backward_hooks", "_post_accumulate_grad_hooks"))


def _uninitialized(tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` is a lazy module's parameter or buffer that has no shape nor values yet."""
    return isinstance(tensor, UninitializedTensorMixin)


def _copy(tensor: torch.Tensor) -> torch.Tensor:
    """A copy of ``tensor``'s values; for a lazy one not yet initialised, an empty meta tensor (no values)."""
    if _uninitialized(tensor):
        return torch.empty(0, device="meta", dtype=tensor.dtype)
    return tensor.detach().clone()


def _same(before: torch.Tensor, after: torch.Tensor) -> bool:
    """Equal dtype, shape and values, NaN equal to NaN (a NaN weight left alone is no change).

    Tensors on the meta device hold no values: two of the same dtype and shape are the same.
    """
    if before.dtype != after.dtype or before.shape != after.shape:
        return False
    if before.is_meta or after.is_meta:
        return before.is_meta and after.is_meta
    if torch.equal(before, after):
        return True
    if not (before.is_floating_point() or before.is_complex()):
        return False
    return bool(((before == after) | (before.isnan() & after.isnan())).all())


@dataclass
class ModelSnapshot:
    """Everything about a model that inspection must not change.

    Take one with :meth:`take` before inspecting a model, then call :meth:`differences` or
    :meth:`assert_unchanged` after. Parameters are keyed by their qualified name, buffers by
    ``"buffer:<name>"``, modules by their qualified name (``""`` for the model itself).

    Attributes:
        structure: ``(name, id, class name)`` of every module, in ``named_modules`` order.
        training: each module's ``training`` flag.
        hooks: each module's number of registered hooks (see :func:`hook_count`), and each
            parameter's and buffer's own hooks (``tensor.register_hook`` ...), keyed
            ``"tensor:<name>"``.
        inplace: the ``inplace`` flag of the modules that have one (``nn.ReLU`` ...).
        requires_grad: each parameter's and buffer's ``requires_grad``.
        grads: a copy of each parameter's ``.grad``, or None.
        tensors: a copy of each parameter's and buffer's values.
        devices: each parameter's and buffer's device, as a string.
        strides: each parameter's and buffer's strides (its memory layout).
        identities: ``id`` of every parameter and buffer object.
        hook_ids: the ids of each module's hooks, per kind (a hook replaced by another one is a
            change, though the count stays).
    """

    structure: list[tuple[str, int, str]]
    training: dict[str, bool]
    hooks: dict[str, int]
    inplace: dict[str, bool]
    requires_grad: dict[str, bool]
    grads: dict[str, torch.Tensor | None]
    tensors: dict[str, torch.Tensor]
    devices: dict[str, str]
    strides: dict[str, tuple[int, ...]]
    #: ``id`` of every parameter and buffer object: a parameter replaced by another one, even
    #: with the same values, is a change (an optimizer holding the old one no longer trains it)
    identities: dict[str, int]
    hook_ids: dict[str, tuple] = field(default_factory=dict)

    @classmethod
    def take(cls, model: nn.Module) -> ModelSnapshot:
        """A snapshot of ``model`` now (its tensors and gradients are copied, so later changes show).

        Raises:
            TypeError: when ``model`` is not an ``nn.Module``.
        """
        check_module(model)
        modules = list(model.named_modules())
        named = dict(model.named_parameters())
        named.update({f"buffer:{k}": v for k, v in model.named_buffers()})
        return cls(
            structure=[(name, id(m), type(m).__name__) for name, m in modules],
            training={name: m.training for name, m in modules},
            hooks={**{name: hook_count(m) for name, m in modules},
                   **{f"tensor:{k}": _tensor_hook_count(v) for k, v in named.items()}},
            inplace={name: m.inplace for name, m in modules if isinstance(getattr(m, "inplace", None), bool)},
            requires_grad={k: v.requires_grad for k, v in named.items()},
            grads={k: (None if v.grad is None else v.grad.detach().clone()) for k, v in named.items()},
            tensors={k: _copy(v) for k, v in named.items()},
            devices={k: str(v.device) for k, v in named.items()},
            strides={k: () if _uninitialized(v) else tuple(v.stride()) for k, v in named.items()},
            identities={k: id(v) for k, v in named.items()},
            hook_ids={name: _hook_ids(m) for name, m in modules},
        )

    def differences(self, model: nn.Module) -> list[str]:
        """Human-readable list of what changed in ``model`` since the snapshot (empty when nothing did).

        Raises:
            TypeError: when ``model`` is not an ``nn.Module``.
        """
        now = ModelSnapshot.take(model)
        diffs: list[str] = []
        if now.structure != self.structure:
            diffs.append("module structure changed")
        for key in sorted(self.tensors.keys() - now.tensors.keys()):
            diffs.append(f"{_tensor_name(key)} was removed")
        for key in sorted(now.tensors.keys() - self.tensors.keys()):
            diffs.append(f"{_tensor_name(key)} was added")
        common = self.tensors.keys() & now.tensors.keys()
        added_or_removed = self.tensors.keys() ^ now.tensors.keys()
        for name in ("training", "hooks", "inplace", "requires_grad", "devices", "strides"):
            before, after = getattr(self, name), getattr(now, name)
            for key in sorted(set(before) | set(after)):
                if key in added_or_removed or key.startswith("tensor:") and key[len("tensor:"):] in added_or_removed:
                    continue  # named above
                if before.get(key) != after.get(key):
                    diffs.append(f"{name}[{key!r}]: {before.get(key)!r} -> {after.get(key)!r}")
        for key in sorted(set(self.hook_ids) & set(now.hook_ids)):
            if self.hooks.get(key) == now.hooks.get(key) and self.hook_ids[key] != now.hook_ids[key]:
                diffs.append(f"hooks[{key!r}]: a hook was replaced by another one")
        for key in sorted(set(self.identities) & set(now.identities)):
            if self.identities[key] != now.identities[key]:
                diffs.append(f"{key!r} was replaced by another tensor object")
        for key in sorted(common):
            before, after = self.grads[key], now.grads[key]
            if (before is None) != (after is None) or (before is not None and not _same(before, after)):
                diffs.append(f"grad of {key!r} changed")
        for key in sorted(common):
            if not _same(self.tensors[key], now.tensors[key]):
                diffs.append(f"values of {key!r} changed")
        return diffs

    def assert_unchanged(self, model: nn.Module) -> None:
        """Raise AssertionError naming every change of ``model`` since the snapshot (see :meth:`differences`)."""
        diffs = self.differences(model)
        if diffs:
            raise AssertionError("the model was changed:\n  " + "\n  ".join(diffs))


def _tensor_name(key: str) -> str:
    """A snapshot's key of a parameter or buffer, in words: ``parameter 'fc.weight'``, ``buffer 'bn.running_mean'``."""
    return f"buffer {key[len('buffer:'):]!r}" if key.startswith("buffer:") else f"parameter {key!r}"
