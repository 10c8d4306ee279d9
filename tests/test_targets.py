"""Targets map a layer's output to one score per image."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from torch import nn

from cnnwidgets import ChannelActivation, ClassLogit, ClassProbability, Probe
from cnnwidgets.core.targets import class_probabilities, class_scores, resolve_target, target_score
from tests.helpers import small_classifier


def test_class_targets():
    logits = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    assert torch.equal(ClassLogit(2)(logits), torch.tensor([3.0, 0.0]))
    probs = ClassProbability(0)(logits)
    torch.testing.assert_close(probs, torch.tensor([torch.e**1 / (torch.e + torch.e**2 + torch.e**3), 1 / 3]))
    with pytest.raises(IndexError, match="out of range for 3 classes"):
        ClassLogit(3)(logits)
    with pytest.raises(ValueError, match="class scores"):
        ClassLogit(0)(torch.zeros(1, 3, 4, 4))
    # read at a layer: the message names the layer, not the model's output
    for target in (ClassLogit(1, layer="features.conv4"), ClassProbability(1, layer="features.conv4")):
        with pytest.raises(ValueError, match=r"the output of layer 'features.conv4' must be class scores .* "
                                             r"has shape \(1, 3, 4, 4\). Use ChannelActivation"):
            target(torch.zeros(1, 3, 4, 4))


def test_class_scores_accept_fully_convolutional_outputs_and_name_other_shapes():
    y = torch.randn(2, 5)
    torch.testing.assert_close(class_scores(y[:, :, None, None]), y)
    torch.testing.assert_close(ClassLogit(3)(y[:, :, None, None]), y[:, 3])
    torch.testing.assert_close(ClassProbability(3)(y[:, :, None, None]), torch.softmax(y, dim=1)[:, 3])
    for bad in (torch.randn(2, 5, 4, 4), torch.randn(5)):
        with pytest.raises(ValueError, match=r"class scores of shape \(N, classes\).*has shape " + re.escape(str(tuple(bad.shape)))):
            ClassProbability(0)(bad)


def test_a_single_output_unit_is_a_binary_classifier_read_with_a_sigmoid():
    z = torch.tensor([[-2.0], [0.0], [3.0]])
    p = class_probabilities(z)
    torch.testing.assert_close(p, torch.sigmoid(z))
    torch.testing.assert_close(ClassProbability(0)(z), torch.sigmoid(z[:, 0]))
    assert not torch.allclose(p, torch.ones_like(p))  # a softmax over one unit would say 1 for everything
    torch.testing.assert_close(class_probabilities(torch.tensor([[1.0, 2.0]])), torch.softmax(torch.tensor([[1.0, 2.0]]), 1))


def test_channel_activation_reductions_and_position():
    act = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)
    assert torch.equal(ChannelActivation("l", 1, "sum")(act), act[:, 1].sum(dim=(1, 2)))
    assert torch.equal(ChannelActivation("l", 1, "mean")(act), act[:, 1].mean(dim=(1, 2)))
    assert torch.equal(ChannelActivation("l", 2, "max")(act), act[:, 2].amax(dim=(1, 2)))
    assert torch.equal(ChannelActivation("l", 0, position=(1, 0))(act), act[:, 0, 1, 0])
    with pytest.raises(IndexError, match="3 channels"):
        ChannelActivation("l", 3)(act)
    with pytest.raises(ValueError, match="reduce"):
        ChannelActivation("l", 0, reduce="median")


def test_resolve_and_score_with_probe():
    assert resolve_target(5) == ClassLogit(5)
    with pytest.raises(TypeError):
        resolve_target("cat")
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    x = torch.randn(3, 3, 8, 8)
    with Probe(model) as probe:
        scores = target_score(probe, x, 1)
        channel = target_score(probe, x, ChannelActivation("1", 2, "mean"))
        probe.reset_stats()
        target_score(probe, x, ChannelActivation("1", 2, "mean"))
        assert probe.stats.forwards == 0  # cached
    with torch.no_grad():
        torch.testing.assert_close(scores, model(x)[:, 1])
        torch.testing.assert_close(channel, torch.relu(model[0](x))[:, 2].mean(dim=(1, 2)))


def softmax_model() -> nn.Module:
    """A classifier that ends in nn.Softmax: its output already is class probabilities."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 10), nn.Softmax(dim=1)).eval()
    with torch.no_grad():
        model[1].weight.mul_(20)  # confident: a top probability near 1
    return model


def test_a_softmax_output_is_taken_as_probabilities_not_softmaxed_again():
    model = softmax_model()
    x = torch.randn(3, 1, 2, 2)
    with torch.no_grad():
        y = model(x)
    assert float(y.max()) > 0.9  # softmax(y) would squash this to about 0.23
    assert torch.equal(class_probabilities(y), y)
    assert torch.equal(class_probabilities(y[:, :, None, None]), y)
    top = int(y[0].argmax())
    assert torch.equal(ClassProbability(top)(y), y[:, top])
    with Probe(model) as probe:
        torch.testing.assert_close(target_score(probe, x, ClassProbability(top)), y[:, top])
    # the scores themselves come back, still in the graph: gradients flow through them
    logits = torch.randn(2, 10, requires_grad=True)
    probs = torch.softmax(logits, dim=1)
    ClassProbability(4)(probs).sum().backward()
    expected = torch.autograd.functional.jacobian(lambda z: torch.softmax(z, dim=1)[:, 4].sum(), logits.detach())
    torch.testing.assert_close(logits.grad, expected)


def test_log_softmax_and_logit_outputs_are_read_through_softmax():
    torch.manual_seed(1)
    z = torch.randn(4, 6) * 3
    log_p = torch.log_softmax(z, dim=1)
    torch.testing.assert_close(class_probabilities(log_p), log_p.exp())
    torch.testing.assert_close(ClassProbability(2)(log_p), log_p.exp()[:, 2])
    torch.testing.assert_close(class_probabilities(z), torch.softmax(z, dim=1))
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 10)).eval()
    x = torch.randn(3, 1, 2, 2)
    with torch.no_grad():
        y = model(x)
    torch.testing.assert_close(class_probabilities(y), torch.softmax(y, dim=1))


def test_a_batch_of_distributions_is_kept_and_one_other_row_means_logits():
    torch.manual_seed(2)
    p = torch.softmax(torch.randn(5, 7) * 4, dim=1)
    assert torch.equal(class_probabilities(p), p)
    many = torch.softmax(torch.randn(4, 20000) * 5, dim=1)  # float32 rounding over 20k classes
    assert torch.equal(class_probabilities(many), many)
    half = torch.softmax(torch.randn(3, 1000).bfloat16() * 4, dim=1)
    assert torch.equal(class_probabilities(half), half)
    one_hot = torch.eye(3)
    assert torch.equal(class_probabilities(one_hot), one_hot)
    not_distributions = [
        torch.tensor([[0.2, 0.3, 0.1]]),  # in [0, 1] but sums to 0.6
        torch.tensor([[1.5, -0.5, 0.0]]),  # sums to 1 but leaves [0, 1]
        torch.tensor([[0.2, 0.3, 0.5], [0.2, 0.3, 0.4]]),  # one row of the batch is not a distribution
        torch.tensor([[0.2, 0.3, 0.5], [float("nan"), 0.5, 0.5]]),
        torch.tensor([[0.5, 0.5, 0.001]]),  # off by 1e-3, beyond rounding
    ]
    for scores in not_distributions:
        torch.testing.assert_close(class_probabilities(scores), torch.softmax(scores, dim=1), equal_nan=True)
    # a single unit is a logit even when it lies in [0, 1]
    unit = torch.tensor([[1.0], [0.3]])
    torch.testing.assert_close(class_probabilities(unit), torch.sigmoid(unit))


def test_negative_class_indices_are_refused():
    logits = torch.tensor([[1.0, 2.0, 3.0]])
    for target in (ClassLogit(3), ClassProbability(3), ClassLogit(7)):
        with pytest.raises(IndexError, match=r"out of range for 3 classes; accepted: 0\.\.2"):
            target(logits)
    with pytest.raises(IndexError, match=r"class index -1 is negative; accepted: 0\.\.C-1"):
        resolve_target(-1)
    # the class targets refuse a negative index when made, as resolve_target does, whatever its int type
    for make in (ClassLogit, ClassProbability):
        for index in (-1, -3, np.int64(-2), torch.tensor(-4)):
            with pytest.raises(IndexError, match=r"class index -\d is negative; accepted: 0\.\.C-1"):
                make(index)
        for index, got in ((True, "bool True"), (-1.0, "float -1.0"), (np.bool_(False), "bool False")):
            with pytest.raises(TypeError, match=f"the class index must be an int .*got {got}"):
                make(index)
        assert make(np.int64(0)).index == 0 and type(make(torch.tensor(2)).index) is int
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3)).eval()
    with Probe(model) as probe:
        with pytest.raises(IndexError, match="negative"):
            target_score(probe, torch.randn(1, 1, 2, 2), -1)
        with pytest.raises(IndexError, match=r"accepted: 0\.\.2"):
            target_score(probe, torch.randn(1, 1, 2, 2), ClassProbability(3))
    assert resolve_target(0) == ClassLogit(0)
    torch.testing.assert_close(ClassLogit(2)(logits), torch.tensor([3.0]))


ACCEPTED = r"a Python int, a numpy integer or a 0-d integer tensor"


def test_as_index_accepts_ints_numpy_integers_and_0d_integer_tensors_only():
    from cnnwidgets.core.targets import as_index

    for value in (3, np.int64(3), np.uint8(3), torch.tensor(3), torch.tensor(3, dtype=torch.uint8)):
        index = as_index(value, "channel")
        assert index == 3 and type(index) is int
    refused = [
        (True, "bool True"), (np.bool_(False), "bool False"), (1.0, "float 1.0"), (1.5, "float 1.5"),
        ("1", "str '1'"), (None, "NoneType"), (torch.tensor([1, 2]), r"tensor of shape \(2,\)"),
        (torch.tensor(1.0), "torch.float32"), (torch.tensor(True), "torch.bool"),
        (np.array([1]), r"numpy array of shape \(1,\)"),
    ]
    for value, got in refused:
        with pytest.raises(TypeError, match=rf"^channel must be an int \({ACCEPTED}\), got .*{got}"):
            as_index(value, "channel")


def test_as_flag_refuses_values_that_only_read_as_true():
    from cnnwidgets.core.targets import as_flag

    assert as_flag(True, "absolute") is True and as_flag(np.bool_(False), "absolute") is False
    for value in ("no", 1, 0.0, None):
        with pytest.raises(TypeError, match="absolute must be True or False"):
            as_flag(value, "absolute")


def test_targets_refuse_bool_float_and_several_indices_and_store_ints():
    for make in (ClassLogit, ClassProbability):
        for bad, got in ((True, "bool True"), (1.0, "float 1.0"), (1.5, "float 1.5"), ("1", "str")):
            with pytest.raises(TypeError, match=rf"{make.__name__}: the class index must be an int \({ACCEPTED}\), got {got}"):
                make(bad)
        with pytest.raises(TypeError, match=r"tensor of shape \(2,\).*one class index.*function of the model's "
                                            r"output.*shape \(N,\): lambda y: y\[torch.arange\(len\(y\)\), labels\]"):
            make(torch.tensor([1, 2]))
        with pytest.raises(TypeError, match=r"looks like the model's scores.*argmax\(1\)"):
            make(torch.randn(1, 10))
        with pytest.raises(TypeError, match="bool"):
            make(torch.tensor([True]))
        # one image's prediction, as model(x).argmax(1) gives it
        for index in (np.int64(1), torch.tensor(1), torch.tensor([1]), np.array([1])):
            target = make(index)
            assert target == make(1) and type(target.index) is int and hash(target) == hash(make(1))
    for bad in (True, 1.0, "1"):
        with pytest.raises(TypeError, match=rf"ChannelActivation: channel must be an int \({ACCEPTED}\)"):
            ChannelActivation("l", bad)
    for bad in ((1.5, 0), (0, True)):
        with pytest.raises(TypeError, match="ChannelActivation: position (row|column) must be an int"):
            ChannelActivation("l", 0, position=bad)
    with pytest.raises(TypeError, match=r"position must be a \(row, col\) pair"):
        ChannelActivation("l", 0, position=3)
    target = ChannelActivation("l", np.int64(2), position=[np.int64(1), torch.tensor(0)])
    assert target == ChannelActivation("l", 2, position=(1, 0)) and type(target.channel) is int
    # a position as argmax gives it: an array or tensor of two indices
    for pair in (np.array([1, 0]), torch.tensor([1, 0])):
        assert ChannelActivation("l", 2, position=pair) == target
    with pytest.raises(TypeError, match=r"position must be a \(row, col\) pair"):
        ChannelActivation("l", 0, position=np.array([[1, 0]]))
    act = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)
    assert torch.equal(target(act), act[:, 2, 1, 0])


def test_numpy_and_tensor_class_indices_are_targets_like_ints():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3)).eval()
    x = torch.randn(2, 1, 2, 2)
    for index in (np.int64(2), torch.tensor(2), np.int32(2)):
        assert resolve_target(index) == ClassLogit(2)
    with Probe(model) as probe:
        expected = target_score(probe, x, 2)
        for index in (np.int64(2), torch.tensor(2)):
            assert torch.equal(target_score(probe, x, index), expected)
    for negative in (np.int64(-1), torch.tensor(-1)):
        with pytest.raises(IndexError, match=r"class index -1 is negative; accepted: 0\.\.C-1"):
            resolve_target(negative)
    # one class per image: ClassLogits
    from cnnwidgets import ClassLogits

    for labels in (torch.tensor([0, 2]), np.array([0, 2]), [0, 2], (np.int64(0), 2)):
        assert resolve_target(labels) == ClassLogits((0, 2))
    with Probe(model) as probe:
        scores = probe.logits(x)
        assert torch.equal(target_score(probe, x, [0, 2]), torch.stack([scores[0, 0], scores[1, 2]]))
    for bad, error, message in (
        (torch.tensor([[0, 1]]), TypeError, r"class index must be an int.*tensor of shape \(1, 2\)"),
        (torch.tensor([0.0, 1.0]), TypeError, r"looks like the model's scores"),
        ([0, -1], IndexError, "negative"),
        ([0, 1.5], TypeError, "unsupported target"),
    ):
        with pytest.raises(error, match=message):
            resolve_target(bad)
    with pytest.raises(ValueError, match="no class index"):
        ClassLogits([])
    assert resolve_target([2]) == ClassLogit(2)  # one image's class, in a list
    with pytest.raises(TypeError, match=rf"unsupported target 1\.0: pass a class index \({ACCEPTED}\)"):
        resolve_target(1.0)
    with pytest.raises(TypeError, match="not a bool"):
        resolve_target(np.bool_(True))


# ---------------------------------------------------------------- how outputs become probabilities

MULTILABEL = torch.tensor([[0.8855, 0.7134, 0.2551, 0.6088]])


def test_outputs_say_how_class_scores_become_probabilities():
    y = torch.tensor([[2.0, -1.0, 0.5]])
    torch.testing.assert_close(class_probabilities(y, outputs="logits"), torch.softmax(y, 1))
    torch.testing.assert_close(class_probabilities(y, outputs="multilabel_logits"), torch.sigmoid(y))
    # sigmoid outputs of a multi-label model: taken as they are, not softmaxed
    torch.testing.assert_close(class_probabilities(MULTILABEL, outputs="probabilities"), MULTILABEL)
    torch.testing.assert_close(class_probabilities(MULTILABEL), torch.softmax(MULTILABEL, 1))  # "auto" cannot tell
    # a discriminator ending in a sigmoid: 0.4801 is the probability, not sigmoid(0.4801)
    d = torch.tensor([[0.4801]])
    torch.testing.assert_close(class_probabilities(d, outputs="probabilities"), d)
    torch.testing.assert_close(class_probabilities(d, outputs="logits"), torch.sigmoid(d))
    torch.testing.assert_close(ClassProbability(0, outputs="probabilities")(d), d[:, 0])
    torch.testing.assert_close(ClassProbability(2, outputs="probabilities")(MULTILABEL), MULTILABEL[:, 2])
    torch.testing.assert_close(ClassProbability(1, outputs="multilabel_logits")(y), torch.sigmoid(y[:, 1]))
    # the model's final activation, when a probe knows it, settles "auto"
    torch.testing.assert_close(class_probabilities(MULTILABEL, final_activation="sigmoid"), MULTILABEL)
    torch.testing.assert_close(class_probabilities(d, final_activation="sigmoid"), d)


def test_output_kinds_are_checked():
    with pytest.raises(ValueError, match=r"outputs must be one of \('auto', 'logits', 'multilabel_logits', 'probabilities'\), got 'softmax'"):
        ClassProbability(0, outputs="softmax")
    with pytest.raises(TypeError, match="outputs must be one of .* got NoneType|outputs must be one of .* got a NoneType"):
        class_probabilities(MULTILABEL, outputs=None)
    with pytest.raises(ValueError, match=r"outputs='probabilities' needs values in \[0, 1\].*from -1 to 2"):
        class_probabilities(torch.tensor([[-1.0, 2.0]]), outputs="probabilities")
    with pytest.raises(ValueError, match="final_activation must be one of"):
        class_probabilities(MULTILABEL, final_activation="relu")


def test_independent_probabilities_are_recognisable():
    from cnnwidgets.core.targets import looks_like_independent_probabilities

    assert looks_like_independent_probabilities(MULTILABEL)
    assert looks_like_independent_probabilities(torch.tensor([[0.4801]]))
    assert not looks_like_independent_probabilities(torch.softmax(torch.randn(3, 4), 1))  # distributions
    assert not looks_like_independent_probabilities(torch.tensor([[2.0, -1.0, 0.5]]))  # logits
    assert not looks_like_independent_probabilities(torch.rand(1, 4, 8, 8))  # not class scores
    # a ReLU before the output (SqueezeNet's head): small non-negative logits with exact zeros
    relu_head = torch.tensor([[0.0, 0.31, 0.0, 0.72, 0.05]])
    assert not looks_like_independent_probabilities(relu_head)
    assert looks_like_independent_probabilities(relu_head + 0.01)


class Head(nn.Module):
    """conv -> pool -> linear, then ``end`` (a module, or a function applied to the logits)."""

    def __init__(self, classes: int, end) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, classes))
        if isinstance(end, nn.Module):
            self.head.append(end)
            self.end = None
        else:
            self.end = end

    def forward(self, x):
        y = self.head(self.conv(x))
        return y if self.end is None else self.end(y)


@pytest.mark.parametrize(("classes", "end", "expected"), [
    (1, nn.Sigmoid(), "sigmoid"), (4, nn.Sigmoid(), "sigmoid"), (4, nn.Softmax(dim=1), "softmax"),
    (4, nn.Softmax(dim=-1), "softmax"), (4, nn.Softmax(dim=0), None), (4, nn.Identity(), None),
    (4, nn.LogSoftmax(dim=1), None), (4, torch.sigmoid, None), (4, lambda y: {"logits": torch.sigmoid(y)}, None),
])
def test_the_probe_records_a_final_sigmoid_or_softmax_module(classes, end, expected):
    with Probe(Head(classes, end), input_size=(3, 8, 8)) as probe:
        assert probe.output_activation == expected


def test_a_final_activation_changed_in_place_afterwards_is_not_reported():
    class Doubled(Head):
        def forward(self, x):
            return super().forward(x).mul_(2)

    with Probe(Doubled(4, nn.Sigmoid()), input_size=(3, 8, 8)) as probe:
        assert probe.output_activation is None


@pytest.mark.parametrize("classes", [1, 4])
def test_class_probability_with_a_probe_takes_sigmoid_outputs_as_they_are(classes):
    model = Head(classes, nn.Sigmoid()).eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        y = model(x)
    with Probe(model, input_size=(3, 8, 8)) as probe:
        for k in range(classes):
            torch.testing.assert_close(target_score(probe, x, ClassProbability(k)), y[:, k])
        # an explicit choice is kept
        torch.testing.assert_close(target_score(probe, x, ClassProbability(0, outputs="logits")),
                                   class_probabilities(y, outputs="logits")[:, 0])
    plain = Head(classes, nn.Identity()).eval()
    with Probe(plain, input_size=(3, 8, 8)) as probe, torch.no_grad():
        torch.testing.assert_close(target_score(probe, x, ClassProbability(0)), class_probabilities(plain(x))[:, 0])


# ---------------------------------------------------------------- channel targets need channels

class Tokens(nn.Module):
    """A transformer-like model: patches become 5 tokens of 6 features, (N, 5, 6)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.patch = nn.Conv2d(3, 6, 4, stride=4)
        self.mlp = nn.Linear(6, 6)
        self.act = nn.GELU()
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        tokens = self.patch(x).flatten(2).transpose(1, 2)  # (N, 4, 6)
        tokens = torch.cat([tokens.mean(1, keepdim=True), tokens], dim=1)  # a class token first: (N, 5, 6)
        return self.head(self.act(self.mlp(tokens))[:, 0])


def test_channel_activation_refuses_token_sequences():
    from cnnwidgets.core.targets import check_channel_output

    with Probe(Tokens(), input_size=(3, 8, 8)) as probe:
        assert probe.layers["act"].output_shape == (5, 6)
        x = torch.randn(2, 3, 8, 8)
        for channel in (2, 5):  # token 2 read as "channel 2"; 5 tokens read as "5 channels"
            with pytest.raises(ValueError, match=re.escape(
                "layer 'act' has output shape (5, 6); a channel target needs a (C,) or (C, H, W) output"
            )):
                target_score(probe, x, ChannelActivation("act", channel))
        assert target_score(probe, x, ChannelActivation("patch", 1)).shape == (2,)  # maps keep working
    with pytest.raises(ValueError, match=r"layer 'l' has output shape \(\); scans need"):
        check_channel_output(torch.zeros(3), "l", "scans")
    check_channel_output(torch.zeros(3, 4), "l", "scans")  # (N, C)


def test_channel_activation_refuses_an_empty_map_for_every_reduction():
    empty = torch.zeros(2, 3, 0, 4)  # a layer whose maps have no positions at this input size
    for reduce in ("mean", "sum", "max"):
        with pytest.raises(ValueError, match=re.escape("layer 'l' has an empty feature map (3, 0, 4) at this input "
                                                       "size: pick an earlier layer or a larger input")):
            ChannelActivation("l", 1, reduce=reduce)(empty)
    assert ChannelActivation("l", 1)(torch.ones(2, 3, 1, 4)).tolist() == [1.0, 1.0]


# ---------------------------------------------------------------- targets that fail on the output

class Segmenter(nn.Module):
    """A torchvision-style segmentation model: {'out': (N, 5, H, W)}."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 5, 3, padding=1)

    def forward(self, x):
        return {"out": self.conv(x), "aux": self.conv(x) * 2}


@pytest.mark.filterwarnings("ignore:Using a non-tuple sequence")  # torch's reading of out["out"]
def test_a_target_that_fails_on_the_output_says_what_it_was_given():
    from cnnwidgets.methods import saliency

    x = torch.randn(1, 3, 16, 16)

    def target(out):
        return out["out"][:, 2].mean((1, 2))

    target.layer = None
    expected = re.escape(
        "the target failed on the model's output, a tensor of shape (1, 5, 16, 16) (a dict output is reduced "
        "to its 'out' entry before targets see it): TypeError: "
    )
    with Probe(Segmenter()) as probe:
        with pytest.raises(TypeError, match=expected):
            target_score(probe, x, target)
        with pytest.raises(TypeError, match=expected):
            saliency(probe, x, target)

        def by_index(out):
            return out[:, 9].mean((1, 2))

        by_index.layer = None
        with pytest.raises(IndexError, match=r"target failed on the model's output.*IndexError: index 9"):
            target_score(probe, x, by_index)

        def on_layer(act):
            return {"maps": act}["features"].mean((1, 2, 3))

        on_layer.layer = "conv"
        with pytest.raises(KeyError, match=re.escape("the target failed on the output of layer 'conv', a tensor of shape (1, 5, 16, 16): KeyError: 'features'")):
            target_score(probe, x, on_layer)
    with Probe(nn.Sequential(nn.Conv2d(3, 5, 3)), input_size=(3, 16, 16)) as probe:  # a tensor output: no note
        with pytest.raises(TypeError, match=r"a tensor of shape \(1, 5, 14, 14\): TypeError"):
            target_score(probe, x, target)

        class MissingLabel(KeyError):
            """A user's own error class, which the caller may catch by name."""

        def labelled(out):
            raise MissingLabel("no such label")

        labelled.layer = None
        with pytest.raises(MissingLabel, match="the target failed on the model's output"):
            target_score(probe, x, labelled)


def test_a_class_index_on_an_output_that_is_not_class_scores_says_how_to_write_a_target():
    x = torch.randn(1, 3, 16, 16)
    with Probe(Segmenter()) as probe:
        for target in (2, ClassProbability(2)):
            with pytest.raises(ValueError, match=r"this one has shape \(1, 5, 16, 16\); a class index reads class "
                               r"scores only\. For another output write a target: a callable with a `layer = None` "
                               r"attribute .*lambda out: out\[:, k\]\.mean\(\(1, 2\)\)"):
                target_score(probe, x, target)


def test_a_plain_function_of_the_output_is_a_target_everywhere():
    from cnnwidgets.core.targets import OutputScore
    from cnnwidgets.methods import occlusion_map, saliency

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()
    x = torch.rand(1, 3, 16, 16)

    def contrast(y):
        return y[:, 1] - y[:, 2]  # class 1 against class 2

    resolved = resolve_target(contrast)
    assert isinstance(resolved, OutputScore) and resolved.layer is None and resolved.fn is contrast
    with Probe(model) as probe:
        logits = probe.logits(x)
        torch.testing.assert_close(target_score(probe, x, contrast), logits[:, 1] - logits[:, 2])
        # the gradient of a difference is the difference of the gradients
        torch.testing.assert_close(saliency(probe, x, contrast, absolute=False),
                                   saliency(probe, x, 1, absolute=False) - saliency(probe, x, 2, absolute=False))
        by_function = occlusion_map(probe, x, lambda y: y[:, 1], window=8, stride=4, progress=False)
        by_index = occlusion_map(probe, x, ClassLogit(1), window=8, stride=4, progress=False)
        np.testing.assert_allclose(by_function.grid, by_index.grid, rtol=1e-5, atol=1e-6)
        with pytest.raises(ValueError, match=r"one score per image, shape \(1,\)"):
            target_score(probe, x, lambda y: y)  # all classes: not one score per image


def _small_net() -> nn.Sequential:
    return small_classifier()


@pytest.mark.parametrize("method", ["saliency", "guided_backprop", "grad_cam", "occlusion", "occlusion_channel", "actmax"])
def test_non_finite_weights_are_reported_instead_of_all_nan_maps(method):
    """One NaN weight (a diverged training step) made every map NaN without a word, and made
    activation maximisation blame an input image it had made itself."""
    import cnnwidgets.methods as M

    model = _small_net()
    with torch.no_grad():
        model[0].weight[0, 0, 0, 0] = float("nan")
    x = torch.rand(2, 3, 32, 32)
    run = {
        "saliency": lambda: M.saliency(model, x, 1),
        "guided_backprop": lambda: M.guided_backprop(model, x, 1),
        "grad_cam": lambda: M.grad_cam(model, x, 1, "3"),
        "occlusion": lambda: M.occlusion_map(model, x[:1], 1, window=8, stride=8, progress=False),
        "occlusion_channel": lambda: M.occlusion_map(model, x[:1], ChannelActivation("3", 2), window=8, stride=8,
                                                     progress=False),
        "actmax": lambda: M.maximize_activation(model, 1, size=32, steps=3, progress=False),
    }[method]
    with pytest.raises(ValueError, match=r"score is not finite \(NaN or inf\) for image.*non-finite weights"):
        run()


def test_a_target_that_makes_nan_from_a_finite_output_is_told_so():
    probe = Probe(_small_net())
    try:
        with pytest.raises(ValueError, match=r"for images 0, 1 of 2: the model's output is finite, so the target "
                                             r"computes NaN or inf"):
            target_score(probe, torch.rand(2, 3, 32, 32), lambda out: torch.log(out[:, 0] * 0))
        # and a finite score passes through unchanged
        scores = target_score(probe, torch.rand(2, 3, 32, 32), ClassLogit(0))
        assert scores.shape == (2,) and bool(torch.isfinite(scores).all())
    finally:
        probe.close()


def test_target_score_names_what_it_needs_when_given_a_plain_model():
    with pytest.raises(TypeError, match=r"target_score needs a cnnwidgets.Probe, got Sequential; wrap the model"):
        target_score(_small_net(), torch.rand(1, 3, 32, 32), 1)


def test_a_channel_target_needs_a_layer_name():
    # ChannelActivation(None, 0) read the model's output: activation maximisation then maximised a
    # class score and called it a channel
    for layer in (None, "", 3):
        with pytest.raises(TypeError, match="ChannelActivation: layer must be the name of an internal layer"):
            ChannelActivation(layer, 0)


def test_one_images_argmax_and_a_per_image_function_are_the_targets_the_messages_promise():
    from cnnwidgets.methods import saliency

    torch.manual_seed(0)
    model = small_classifier().eval()
    x = torch.randn(3, 3, 16, 16)
    pred = model(x[:1]).argmax(1)  # shape (1,)
    torch.testing.assert_close(saliency(model, x[:1], pred), saliency(model, x[:1], int(pred)))
    labels = torch.tensor([0, 2, 1])
    per_image = saliency(model, x, lambda y: y[torch.arange(len(y)), labels])
    for i in range(3):
        torch.testing.assert_close(per_image[i:i + 1], saliency(model, x[i:i + 1], int(labels[i])))


def test_a_number_argument_beyond_floats_range_is_refused_by_name():
    from cnnwidgets.core.targets import as_real

    # was: Python's OverflowError ("int too large to convert to float") from every such argument
    with pytest.raises(ValueError, match=r"lr must be a finite number > 0, got an int of 401 digits"):
        as_real(10**400, "lr", "> 0", lambda v: v > 0)
    with pytest.raises(ValueError, match=r"threshold must be a finite number, got an int of 401 digits"):
        as_real(-(10**400), "threshold")
    assert as_real(10**300, "x") == 1e300
