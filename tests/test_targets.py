"""Targets map a layer's output to one score per image."""

from __future__ import annotations

import re

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
