"""Targets map a layer's output to one score per image."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from torch import nn

from cnnwidgets import ChannelActivation, ClassLogit, ClassProbability, Probe
from cnnwidgets.core.targets import class_probabilities, class_scores, resolve_target, target_score


def test_class_targets():
    logits = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    assert torch.equal(ClassLogit(2)(logits), torch.tensor([3.0, 0.0]))
    probs = ClassProbability(0)(logits)
    torch.testing.assert_close(probs, torch.tensor([torch.e**1 / (torch.e + torch.e**2 + torch.e**3), 1 / 3]))
    with pytest.raises(IndexError, match="out of range for 3 classes"):
        ClassLogit(3)(logits)
    with pytest.raises(ValueError, match="class scores"):
        ClassLogit(0)(torch.zeros(1, 3, 4, 4))


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
    for target in (ClassLogit(-1), ClassProbability(-1), ClassLogit(-3), ClassProbability(-4)):
        with pytest.raises(IndexError, match=r"out of range for 3 classes; accepted: 0\.\.2"):
            target(logits)
    with pytest.raises(IndexError, match=r"class index -1 is negative; accepted: 0\.\.C-1"):
        resolve_target(-1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3)).eval()
    with Probe(model) as probe:
        with pytest.raises(IndexError, match="negative"):
            target_score(probe, torch.randn(1, 1, 2, 2), -1)
        with pytest.raises(IndexError, match=r"accepted: 0\.\.2"):
            target_score(probe, torch.randn(1, 1, 2, 2), ClassProbability(-2))
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
        with pytest.raises(TypeError, match=r"tensor of shape \(2,\).*one class index.*callable.*shape \(N,\)"):
            make(torch.tensor([1, 2]))
        for index in (np.int64(1), torch.tensor(1)):
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
    with pytest.raises(TypeError, match=r"class index must be an int.*tensor of shape \(2,\).*one class index"):
        resolve_target(torch.tensor([0, 1]))
    with pytest.raises(TypeError, match=rf"unsupported target 1\.0: pass a class index \({ACCEPTED}\)"):
        resolve_target(1.0)
    with pytest.raises(TypeError, match="not a bool"):
        resolve_target(np.bool_(True))
