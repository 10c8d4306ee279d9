"""Inference-only rewrites of a private model copy, for methods that run many forward passes.

:func:`inference_copy` deep-copies a model and applies two rewrites that do not change what
the model computes (up to float rounding) but make repeated inference cheaper:

* **Batch-norm folding.** In eval mode ``BatchNorm2d`` is the affine map
  ``y = (z - mu) * gamma / sqrt(var + eps) + beta``. When its input ``z`` is the output of a
  convolution ``z = W * x + b`` that nothing else reads, the two collapse into one convolution
  with ``W' = W * s`` and ``b' = (b - mu) * s + beta`` where ``s = gamma / sqrt(var + eps)``
  (per output channel); the batch norm becomes an identity.
* **In-place activations.** An activation module (``ReLU`` ...) whose input is a freshly
  computed tensor that nothing else reads may overwrite it, which saves one allocation and one
  pass over memory per activation.

Which pairs qualify is read from a ``torch.fx`` trace of the copy (a node's users tell whether
anything else reads a tensor). The copy itself still runs the model's own eager ``forward``;
the trace is only used for this analysis. A model that cannot be traced is copied unchanged.
Callers should check the copy's output against the original once (``occlusion_map`` does).

With ``share=True`` the copy takes no memory for the weights it does not change: its modules are
its own (it swaps some, sets in-place flags), but every parameter and buffer that no rewrite
changes is the model's own memory, and only folded convolutions get new tensors. vgg16 has no
batch norm to fold, so its copy then costs no weight memory at all instead of 528 MB.
"""

from __future__ import annotations

import copy
import operator
import threading
from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = ["InferenceCopyReport", "inference_copy", "replace_module", "shared_tensors"]

# Modules whose output is a new tensor (never a view of their input).
_FRESH_OUTPUT = (
    nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.Linear,
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d,
)


class _OwnThreadTracer(torch.fx.Tracer):
    """A ``torch.fx`` tracer that leaves module calls made by other threads alone.

    While it traces, ``torch.fx`` patches ``nn.Module.__call__`` and ``__getattr__`` for the
    whole process, so a forward pass on another thread (the explorer's feature-map worker, or
    any model of the user's) would be recorded into this trace and fail with "module is not
    installed as a submodule". Calls from other threads are passed straight to the module.
    """

    def trace(self, root, concrete_args=None):  # type: ignore[override]
        self._owner = threading.get_ident()
        return super().trace(root, concrete_args)

    def call_module(self, m, forward, args, kwargs):  # type: ignore[override]
        if threading.get_ident() != self._owner:
            return forward(*args, **kwargs)
        return super().call_module(m, forward, args, kwargs)

    def getattr(self, attr, attr_val, parameter_proxy_cache):  # type: ignore[override]
        if threading.get_ident() != self._owner:
            return attr_val
        return super().getattr(attr, attr_val, parameter_proxy_cache)


@dataclass
class InferenceCopyReport:
    """What :func:`inference_copy` changed.

    Attributes:
        folded: ``(conv, batchnorm)`` module-name pairs that were folded.
        inplace: names of activation modules switched to in-place.
        traced: whether the model could be traced (no rewrites happen otherwise).
        reason: why tracing failed, when it did.
    """

    folded: list[tuple[str, str]] = field(default_factory=list)
    inplace: list[str] = field(default_factory=list)
    traced: bool = False
    reason: str = ""


def _strip_forward_hooks(model: nn.Module) -> None:
    # Parametrisation pre-hooks (weight norm) stay: the model needs them to compute.
    for module in model.modules():
        module._forward_hooks.clear()
        module._forward_hooks_with_kwargs.clear()
        getattr(module, "_forward_hooks_always_called", {}).clear()


def replace_module(root: nn.Module, old: nn.Module, new: nn.Module) -> None:
    """Put ``new`` in place of ``old`` under every name ``old`` has in ``root``: a module registered
    twice (``self.bn`` and ``self.features[1]``) is known to the trace by its first name only, and
    the forward may call it through the other."""
    for parent in list(root.modules()):
        for child_name, child in parent._modules.items():
            if child is old:
                parent._modules[child_name] = new


def _is_plain(module: nn.Module) -> bool:
    """No pre-hooks or parametrisations that recompute the weight on every call."""
    return not module._forward_pre_hooks and not hasattr(module, "parametrizations")


def _fold_pair(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Folds ``bn`` into ``conv``: the convolution gets a new weight and bias, and the tensors it
    had are never written (with ``share=True`` they are the original model's)."""

    def host64(t: torch.Tensor) -> torch.Tensor:
        # float64 on the CPU: MPS has no float64 (casting there raises), and the factors are small
        return t.detach().cpu().double()

    with torch.inference_mode(False), torch.no_grad():  # normal tensors, as the copy's others
        var = host64(bn.running_var)
        scale = torch.rsqrt(var + bn.eps)
        if bn.weight is not None:
            scale = scale * host64(bn.weight)
        shift = -host64(bn.running_mean) * scale
        if bn.bias is not None:
            shift = shift + host64(bn.bias)
        if conv.bias is not None:
            shift = shift + host64(conv.bias) * scale
        # the per-channel factors in float64, the (large) weight scaled in its own dtype and layout
        weight = conv.weight.detach()
        factor = scale.to(device=weight.device, dtype=weight.dtype)
        folded = weight.clone(memory_format=torch.preserve_format)
        folded.mul_(factor.view(-1, *([1] * (weight.dim() - 1))))
        bias = shift.to(device=weight.device, dtype=weight.dtype)
        if conv.bias is not None:  # in the old bias's dtype and device, as a copy into it would give
            bias = bias.to(device=conv.bias.device, dtype=conv.bias.dtype)
        conv.weight = nn.Parameter(folded, requires_grad=False)
        conv.bias = nn.Parameter(bias, requires_grad=False)


def _alias_memo(model: nn.Module) -> dict[int, torch.Tensor]:
    """For ``copy.deepcopy``: every plain parameter and buffer of ``model`` mapped to an alias, a
    new tensor object over the same memory (it shares the original's version counter, so in-place
    writes into either show in both counters).

    Aliases rather than the original objects: ``Module._apply`` (``.to``, ``.float``, a change of
    memory format) rebinds a parameter's data on the ``Parameter`` object itself
    (``param.data = ...``). Converting the copy would then convert the original model, and
    converting the model (``Probe.to``) would swap the storage of a tensor the copy is computing
    with on another thread. With aliases either side's conversion gives it a new tensor and leaves
    the other's alone. Tensor subclasses, lazy parameters and inference tensors (which have no
    version counter to tell a write into them) are left to ``deepcopy`` (copied).
    """
    memo: dict[int, torch.Tensor] = {}
    for module in model.modules():
        for tensors, is_param in ((module._parameters, True), (module._buffers, False)):
            for t in tensors.values():
                if t is None or id(t) in memo or type(t) is not (nn.Parameter if is_param else torch.Tensor):
                    continue
                if t.is_inference():
                    continue
                alias = t.detach()
                memo[id(t)] = nn.Parameter(alias, requires_grad=False) if is_param else alias
    return memo


def shared_tensors(copy_: nn.Module, model: nn.Module) -> list[str]:
    """Names of the parameters and buffers of ``copy_`` that use the memory of a tensor of ``model``
    (same storage and offset), e.g. those :func:`inference_copy` ``(model, share=True)`` did not
    change."""
    owned = {(t.untyped_storage().data_ptr(), t.storage_offset()) for t in (*model.parameters(), *model.buffers())}
    return [name for name, t in (*copy_.named_parameters(), *copy_.named_buffers())
            if t.numel() and (t.untyped_storage().data_ptr(), t.storage_offset()) in owned]


def inference_copy(
    model: nn.Module, *, fold_batchnorm: bool = True, inplace_activations: bool = True, share: bool = False
) -> tuple[nn.Module, InferenceCopyReport]:
    """A private eval-mode copy of ``model`` rewritten for fast repeated inference.

    The given model is never changed. Forward hooks are not copied; parameters do not
    require grad.

    Args:
        model: the model to copy (typically a :class:`~cnnwidgets.core.probe.Probe`'s private copy).
        fold_batchnorm: fold eval-mode ``BatchNorm2d`` into the convolution that feeds it.
        inplace_activations: switch activations whose input nothing else reads to in-place.
        share: the copy's parameters and buffers that no rewrite changes use ``model``'s memory
            (aliases: other tensor objects over the same storage, sharing its version counters),
            instead of copies; only folded convolutions get new weights and biases. Nothing the
            copy does writes into them: folding makes new tensors, and in-place activations
            overwrite only activations a convolution, linear layer, batch norm or sum has just
            made (never a parameter or buffer). But writes into ``model``'s tensors show in the
            copy, where the folded layers keep the values they were made from: a caller that lets
            ``model`` change must stop using the copy then (the version counters of ``model``'s
            tensors tell). A forward that writes into its own buffers writes into ``model``'s.

    Returns:
        ``(copy, report)``.
    """
    with torch.inference_mode(False):  # normal tensors, whatever mode the caller is in
        memo = _alias_memo(model) if share else {}
        clone = copy.deepcopy(model, memo)
    _strip_forward_hooks(clone)
    clone.eval()
    for param in clone.parameters():
        param.requires_grad_(False)
    report = InferenceCopyReport()
    if not (fold_batchnorm or inplace_activations):
        return clone, report
    try:
        graph = _OwnThreadTracer().trace(clone)
    except Exception as exc:  # noqa: BLE001 - any tracing failure just means: no rewrites
        report.reason = f"{type(exc).__name__}: {exc}"
        return clone, report
    report.traced = True
    modules = dict(clone.named_modules())
    calls: dict[str, list[torch.fx.Node]] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls.setdefault(str(node.target), []).append(node)

    def module_of(node: object) -> nn.Module | None:
        if isinstance(node, torch.fx.Node) and node.op == "call_module":
            return modules.get(str(node.target))
        return None

    def called_once(node: torch.fx.Node) -> bool:
        return len(calls[str(node.target)]) == 1

    folded_bn: set[str] = set()
    if fold_batchnorm:
        for name, nodes in calls.items():
            bn = modules[name]
            if type(bn) is not nn.BatchNorm2d or len(nodes) != 1 or bn.running_var is None:
                continue
            (node,) = nodes
            source = node.args[0] if node.args else None
            conv = module_of(source)
            if (
                type(conv) is not nn.Conv2d
                or not called_once(source)
                or len(source.users) != 1
                or not _is_plain(conv)
                or conv.out_channels != bn.num_features
            ):
                continue
            _fold_pair(conv, bn)
            replace_module(clone, bn, nn.Identity())
            folded_bn.add(name)
            report.folded.append((str(source.target), name))

    def fresh_and_private(node: object) -> bool:
        """The node's value is a new tensor that only its single user reads."""
        if not isinstance(node, torch.fx.Node) or len(node.users) != 1:
            return False
        module = module_of(node)
        if module is not None:
            return isinstance(module, _FRESH_OUTPUT) or (str(node.target) in folded_bn and fresh_and_private(node.args[0]))
        if node.op == "call_function" and node.target in (operator.add, torch.add):
            # ``a + b`` is fresh; an eager ``a += b`` reuses ``a``, so ``a`` must be private too.
            return fresh_and_private(node.args[0])
        return False

    if inplace_activations:
        for name, nodes in calls.items():
            module = modules[name]
            if not isinstance(getattr(module, "inplace", None), bool) or module.inplace:
                continue
            if all(node.args and fresh_and_private(node.args[0]) for node in nodes):
                module.inplace = True
                report.inplace.append(name)
    return clone, report
