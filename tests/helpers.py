"""Test helpers that do not use the code under test."""

from __future__ import annotations

import copy

import torch
from torch import nn


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
