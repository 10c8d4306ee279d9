"""The Probe's private copy: the user's hooks it does not run, and models it cannot copy."""

from __future__ import annotations

import threading
import warnings

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from cnnwidgets import Probe


def head_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10)
    ).eval()


def scale_input(module, args):
    return (args[0] * 10,)


def add_prior(module, args, output):
    return output + torch.arange(10.0)


# ---------------------------------------------------------------------- user_hooks


def test_user_hooks_list_exactly_the_forward_hooks_and_pre_hooks_the_copy_does_not_run():
    model = head_net()
    model.register_forward_pre_hook(scale_input)
    model[4].register_forward_hook(add_prior)
    model[0].register_forward_hook(lambda module, args, output: None)
    x = torch.rand(1, 3, 16, 16)
    with Probe(model, device="cpu") as probe:
        assert probe.user_hooks == (
            "forward pre-hook scale_input on the model (Sequential)",
            "forward hook <lambda> on '0' (Conv2d)",
            "forward hook add_prior on '4' (Linear)",
        )
        # what the listing explains: the probe's scores are not model(x)'s
        with torch.no_grad():
            assert not torch.allclose(probe.logits(x), model(x))


def test_user_hooks_is_an_empty_tuple_for_a_model_without_hooks_and_ignores_other_kinds():
    model = head_net()
    model[0].register_full_backward_hook(lambda module, grad_in, grad_out: None)
    model.register_state_dict_pre_hook(lambda module, prefix, keep_vars: None)
    with Probe(model, device="cpu") as probe:
        assert probe.user_hooks == ()
        assert isinstance(probe.user_hooks, tuple)


def test_user_hooks_leave_out_pruning_and_weight_norm_which_the_copy_keeps():
    model = head_net()
    prune.l1_unstructured(model[0], "weight", amount=0.5)
    with warnings.catch_warnings():  # deprecated, still in use, and a hook the copy keeps
        warnings.simplefilter("ignore", FutureWarning)
        nn.utils.weight_norm(model[4])
    model[4].register_forward_pre_hook(lambda module, args: None)
    with Probe(model, device="cpu") as probe:
        assert probe.user_hooks == ("forward pre-hook <lambda> on '4' (Linear)",)


def test_user_hooks_follow_the_user_s_model_and_are_empty_once_closed():
    model = head_net()
    probe = Probe(model, device="cpu")
    assert probe.user_hooks == ()
    handle = model[2].register_forward_pre_hook(scale_input, with_kwargs=False)
    assert probe.user_hooks == ("forward pre-hook scale_input on '2' (AdaptiveAvgPool2d)",)
    handle.remove()
    assert probe.user_hooks == ()
    model.register_forward_hook(add_prior)
    probe.close()
    assert probe.user_hooks == ()


def test_global_module_hooks_fire_on_the_copy_and_are_not_listed():
    from torch.nn.modules import module as torch_module

    handle = torch_module.register_module_forward_hook(lambda module, args, output: None)
    try:
        with Probe(head_net(), device="cpu") as probe:
            assert probe.user_hooks == ()
    finally:
        handle.remove()


def test_the_probe_docstring_tells_of_user_hooks():
    doc = " ".join(Probe.__doc__.split())
    assert ":attr:`user_hooks`" in doc and "model(x)" in doc
    assert "tuple" in Probe.user_hooks.__doc__


# ---------------------------------------------------------------------- models that cannot be copied


class Body(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.lock = threading.Lock()
        self.size = 8

    def forward(self, x):
        return torch.relu(self.conv(x))


class Locked(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = Body()
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(self.body(x).mean((2, 3)))


def test_a_model_holding_a_lock_is_refused_with_the_attribute_and_the_ways_out():
    model = Locked().eval()
    with pytest.raises(TypeError) as info:
        Probe(model, device="cpu")
    message = str(info.value)
    assert message.startswith("cannot copy the model for safe inspection (TypeError: cannot pickle")
    assert "what cannot be copied is in this attribute: body.lock (_thread.lock). " in message
    assert "remove the attribute or move it off the module" in message
    assert "__deepcopy__" in message and "pass a model without it" in message
    assert isinstance(info.value.__cause__, TypeError)
    assert "_thread.lock" in str(info.value.__cause__)
    # the user's model is left as it was
    assert isinstance(model.body.lock, type(threading.Lock()))


def test_a_generator_attribute_on_the_root_module_is_named():
    model = head_net()
    model.numbers = (i for i in range(3))
    with pytest.raises(TypeError, match=r"in this attribute: numbers \(generator\)\."):
        Probe(model, device="cpu")


def test_several_uncopyable_attributes_are_named_in_order(tmp_path):
    model = Locked().eval()
    with open(tmp_path / "log.txt", "w") as log:
        model.fc.log = log
        with pytest.raises(TypeError, match=r"in these attributes: body\.lock \(_thread\.lock\), "
                                            r"fc\.log \(_io\.TextIOWrapper\)\."):
            Probe(model, device="cpu")


def test_a_user_hook_holding_a_lock_is_not_copied_and_does_not_stop_the_probe():
    model = head_net()
    lock = threading.Lock()
    model[4].register_forward_hook(lambda module, args, output, lock=lock: None)
    with Probe(model, device="cpu") as probe:
        assert probe.user_hooks == ("forward hook <lambda> on '4' (Linear)",)


def test_user_model_is_the_model_given_and_model_its_private_copy():
    model = head_net()
    with Probe(model, device="cpu") as probe:
        assert probe.user_model is model and probe.model is not model
    with pytest.raises(RuntimeError, match="closed"):
        probe.user_model  # noqa: B018


class _ConstantsNet(nn.Module):
    """Keeps its input normalisation as plain tensor attributes (neither parameters nor buffers),
    one of them shared with a submodule, the way many hand-written models do."""

    def __init__(self, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.mean = torch.tensor([0.4, 0.5, 0.6], dtype=dtype).view(1, 3, 1, 1)
        self.scale = torch.tensor([2.0, 3.0, 4.0], dtype=dtype).view(1, 3, 1, 1)
        self.conv = nn.Conv2d(3, 4, 3)
        self.conv.offset = self.mean  # the same tensor, seen from another module
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))

    def forward(self, x):
        return self.head(self.conv((x - self.mean) * self.scale + self.conv.offset))


def test_plain_tensor_attributes_of_a_double_model_are_computed_in_float32_like_its_weights():
    # Module.float() and Module.to() leave plain tensor attributes alone: a float64 mean in a
    # double model stayed float64 in the float32 copy, and its forward failed on dtypes
    model = _ConstantsNet(torch.float64).double()
    x = torch.rand(2, 3, 16, 16)
    with Probe(model, device="cpu", input_size=(3, 16, 16)) as probe:
        got = probe.logits(x)
        copy = probe.model
        assert copy.mean.dtype == copy.scale.dtype == torch.float32
        assert copy.conv.offset is copy.mean  # still one tensor, as in the user's model
        assert copy.mean is not model.mean
    expected = model(x.double())
    torch.testing.assert_close(got, expected.float(), rtol=1e-5, atol=1e-5)
    assert model.mean.dtype == torch.float64  # the user's model keeps its own


def test_plain_tensor_attributes_are_private_copies_and_probe_to_converts_them():
    model = _ConstantsNet()
    before = model.mean.clone()
    with Probe(model, device="cpu", input_size=(3, 16, 16)) as probe:
        probe.model.mean.add_(1.0)  # a write to the copy's constant does not reach the user's
        assert torch.equal(model.mean, before)
        probe.model.mean.sub_(1.0)
        probe.to("cpu")  # the same device: nothing to do
        assert probe.model.mean.device.type == "cpu"
        torch.testing.assert_close(probe.logits(torch.zeros(1, 3, 16, 16)), model(torch.zeros(1, 3, 16, 16)))


def test_a_forward_cache_in_a_dict_or_list_holding_graph_tensors_is_copied_detached():
    class Caching(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.head = nn.Linear(4, 2)
            self.cache: dict[str, torch.Tensor] = {}
            self.history: list[torch.Tensor] = []

        def forward(self, x):
            y = self.conv(x)
            self.cache["features"] = y  # kept with its autograd graph
            self.history.append(y.mean())
            return self.head(y.mean(dim=(2, 3)))

    torch.manual_seed(0)
    model = Caching()
    x = torch.rand(2, 3, 8, 8)
    expected = model(x)  # gradients on: the cache now holds graph tensors, which deepcopy refuses
    assert not model.cache["features"].is_leaf
    with Probe(model, input_size=(3, 8, 8)) as probe:
        torch.testing.assert_close(probe.logits(x), expected.detach())
        assert probe.model.cache["features"] is not model.cache["features"]
    assert not model.cache["features"].is_leaf and len(model.history) == 1  # the user's cache untouched


def test_a_method_given_a_model_with_hooks_of_its_own_warns_naming_them_at_the_callers_line():
    import inspect

    from cnnwidgets.core import UserHooksWarning
    from cnnwidgets.methods import grad_cam, occlusion_map, saliency

    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 3)).eval()
    x = torch.rand(1, 3, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserHooksWarning)
        saliency(model, x, 0)  # no hooks: no warning
    handle = model.register_forward_pre_hook(lambda module, args: (args[0] * 10,))
    try:
        for method, kwargs in ((saliency, {}), (grad_cam, {}), (occlusion_map, dict(window=4, stride=4, progress=False))):
            with pytest.warns(UserHooksWarning, match=r"forward pre-hook <lambda> on the model \(Sequential\)") as caught:
                line = inspect.currentframe().f_lineno + 1
                method(model, x, 0, **kwargs)
            assert [(w.filename, w.lineno) for w in caught if w.category is UserHooksWarning] == [(__file__, line)]
            assert "may differ from model(x)" in str(caught[0].message)
        with Probe(model) as probe, warnings.catch_warnings():
            warnings.simplefilter("error", UserHooksWarning)
            saliency(probe, x, 0)  # a probe the user made: they were told by Probe.user_hooks
    finally:
        handle.remove()
