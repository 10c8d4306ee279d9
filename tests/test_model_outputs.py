"""Models whose forward returns a container (a dict, a Hugging Face style output object) are read
through it; outputs that cannot be read unambiguously get an error that says what to do."""

from __future__ import annotations

from collections import OrderedDict, namedtuple
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

from cnnwidgets import Probe
from cnnwidgets.app.explorer import Explorer
from cnnwidgets.core.targets import OutputTypeError, output_tensor
from cnnwidgets.methods import grad_cam, occlusion_map, saliency

SIZE = 24


class Net(nn.Module):
    """A small classifier; ``wrap`` puts its class scores into some container."""

    def __init__(self, wrap=lambda y: y) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
                                      nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(inplace=True))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(8, 5)
        self.wrap = wrap

    def forward(self, x):
        return self.wrap(self.head(self.pool(self.features(x)).flatten(1)))


@dataclass
class ClassifierOutput:
    """Like an output dataclass of a model library: the scores under ``logits``."""

    loss: torch.Tensor | None
    logits: torch.Tensor


class MappingOutput(OrderedDict):
    """Like a Hugging Face ``ModelOutput``: a mapping whose entries are also attributes."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


Outputs = namedtuple("Outputs", ["aux", "logits"])

READABLE = {
    "dict logits": lambda y: {"features": y.detach() * 0, "logits": y},
    "dict out": lambda y: {"out": y, "aux": y * 2},
    "dict with one tensor": lambda y: {"scores": y, "name": "net"},
    "mapping output": lambda y: MappingOutput(logits=y, hidden=y + 1),
    "dataclass": lambda y: ClassifierOutput(loss=None, logits=y),
    "named tuple with logits": lambda y: Outputs(aux=y * 3, logits=y),
}


def nets(wrap) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    plain = Net().eval()
    wrapped = Net(wrap).eval()
    wrapped.load_state_dict(plain.state_dict())
    return plain, wrapped


@pytest.mark.parametrize("kind", READABLE)
def test_output_tensor_reads_the_scores_out_of_common_containers(kind):
    y = torch.randn(2, 5)
    assert output_tensor(READABLE[kind](y)) is y
    assert output_tensor(y) is y


@pytest.mark.parametrize("output, found", [
    ((torch.zeros(1, 5), torch.zeros(1, 8)), r"tuple with 2 values \(shape \(1, 5\), shape \(1, 8\)\)"),
    ([torch.zeros(1, 5)], r"list with 1 values \(shape \(1, 5\)\)"),
    ({"a": torch.zeros(1), "b": torch.zeros(1)}, r"dict with keys \['a', 'b'\]"),
    ("scores", r"str with no tensor"),
])
def test_unreadable_outputs_name_what_came_back_and_what_is_accepted(output, found):
    with pytest.raises(OutputTypeError, match=found) as info:
        output_tensor(output)
    assert isinstance(info.value, TypeError)
    assert "'logits' or 'out' entry of a dict" in str(info.value) and "Wrap the model" in str(info.value)


@pytest.mark.parametrize("kind", ["dict logits", "mapping output", "dataclass"])
def test_probe_and_methods_explain_the_scores_inside_the_container(kind):
    plain, wrapped = nets(READABLE[kind])
    torch.manual_seed(1)
    x = torch.randn(1, 3, SIZE, SIZE)
    with Probe(plain) as p, Probe(wrapped) as q:
        torch.testing.assert_close(q.logits(x), p.logits(x))  # first output: from the discovery pass
        torch.testing.assert_close(q.logits(x + 1), p.logits(x + 1))  # a plain forward
        ours = occlusion_map(q, x, 2, window=8, stride=4, progress=False)
        reference = occlusion_map(p, x, 2, window=8, stride=4, progress=False)
        np.testing.assert_allclose(ours.grid, reference.grid, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(saliency(q, x, 3), saliency(p, x, 3))
        torch.testing.assert_close(grad_cam(q, x, 3, "features.3"), grad_cam(p, x, 3, "features.3"))


def test_methods_refuse_a_tuple_output_with_the_way_out():
    _, wrapped = nets(lambda y: (y, y * 2))
    x = torch.randn(1, 3, SIZE, SIZE)
    with pytest.raises(OutputTypeError, match=r"tuple with 2 values.*return self.model\(x\)\[0\]"):
        occlusion_map(wrapped, x, 0, window=8, stride=8, progress=False)
    with pytest.raises(OutputTypeError, match="tuple with 2 values"):
        saliency(wrapped, x, 0)


def make(model) -> Explorer:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)
    return Explorer(model, image, input_size=(3, SIZE, SIZE), samples={}, background=False, box=(4, 4, 8, 8))


def test_explorer_shows_the_class_scores_inside_a_dict_output():
    plain, wrapped = nets(READABLE["dict logits"])
    ex, reference = make(wrapped), make(plain)
    try:
        assert not ex.status.is_error, ex.status.message
        np.testing.assert_allclose(ex.scores["probs"], reference.scores["probs"], rtol=1e-5, atol=1e-7)
    finally:
        ex.close()
        reference.close()


def test_explorer_with_an_unreadable_output_shows_the_maps_and_says_why_there_are_no_scores():
    plain, wrapped = nets(lambda y: (y, y * 2))
    ex, reference = make(wrapped), make(plain)
    try:
        assert ex.scores is None
        assert ex.status.is_error and "shown without class scores" in ex.status.message
        assert "tuple with 2 values" in ex.status.message
        np.testing.assert_allclose(ex.activations, reference.activations, rtol=1e-5, atol=1e-6)
        ex.show_scores = False
        assert not ex.status.is_error
    finally:
        ex.close()
        reference.close()


def test_the_advice_for_a_dict_output_indexes_it_by_one_of_its_own_keys():
    fpn_like = OrderedDict((key, torch.zeros(1, 4, 8, 8)) for key in ("0", "1", "2", "pool"))
    with pytest.raises(OutputTypeError, match=r"e\.g\. `return self\.model\(x\)\['0'\]`") as info:
        output_tensor(fpn_like)
    assert "[0]" not in str(info.value)
    with pytest.raises(OutputTypeError, match=r"`return self\.model\(x\)\['a'\]`"):
        output_tensor({"a": torch.zeros(1), "b": torch.zeros(1)})
    with pytest.raises(OutputTypeError, match=r"`return self\.model\(x\)\[0\]`"):
        output_tensor((torch.zeros(1, 5), torch.zeros(1, 8)))


# ------------------------------------------------------------------ a final softmax or sigmoid module
class Scaled(nn.Module):
    """A head whose scores leave the Linear through a function (no layer's output feeds the softmax)."""

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head
        self.softmax = nn.Softmax(dim=1)

    def forward(self, y):
        return self.softmax(self.head(y) * 2.0)


def ending_in(activation: nn.Module, classes: int = 5) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    plain = Net().eval()
    if classes != 5:
        plain.head = nn.Linear(8, classes)
    return plain, nn.Sequential(plain, activation).eval()


@pytest.mark.parametrize("activation, classes", [(nn.Softmax(dim=1), 5), (nn.Sigmoid(), 1), (nn.Sigmoid(), 5)])
def test_a_class_index_scores_the_logit_also_when_the_model_ends_in_a_softmax_or_sigmoid_module(activation, classes):
    plain, model = ending_in(activation, classes)
    x = torch.randn(2, 3, SIZE, SIZE)
    index = classes - 1
    with Probe(model) as probe:
        assert probe.output_activation is not None and probe.scores_layer == "0.head"
        got = saliency(probe, x, index, absolute=False)
        occ = occlusion_map(probe, x[:1], index, window=8, stride=8, progress=False)
        cam_map = grad_cam(probe, x, index, "0.features.3")
        probabilities = probe.logits(x)
    leaf = x.clone().requires_grad_()
    logits = plain(leaf)
    (want,) = torch.autograd.grad(logits[:, index].sum(), leaf)
    torch.testing.assert_close(got, want)
    assert occ.unoccluded == pytest.approx(float(logits.detach()[0, index]), rel=1e-5)
    torch.testing.assert_close(cam_map, grad_cam(plain, x, index, "features.3"))
    # the output itself stays the probabilities, and their gradient differs from the logit's
    assert not torch.allclose(probabilities, logits.detach())
    leaf = x.clone().requires_grad_()
    (of_probability,) = torch.autograd.grad(activation(plain(leaf))[:, index].sum(), leaf)
    assert not torch.allclose(of_probability, want)


def test_a_softmax_fed_by_a_function_of_the_scores_is_scored_as_it_is():
    torch.manual_seed(0)
    plain = Net().eval()
    model = nn.Sequential(nn.Sequential(plain.features, plain.pool, nn.Flatten()), Scaled(plain.head)).eval()
    x = torch.randn(1, 3, SIZE, SIZE)
    with Probe(model) as probe:
        assert probe.output_activation == "softmax" and probe.scores_layer is None
        got = saliency(probe, x, 2, absolute=False)
    leaf = x.clone().requires_grad_()
    (want,) = torch.autograd.grad(model(leaf)[:, 2].sum(), leaf)
    torch.testing.assert_close(got, want)
