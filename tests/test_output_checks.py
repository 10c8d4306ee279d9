"""Checks on what a model returns: class scores must be floating point (a bool, integer or complex
output is refused with a message saying what to return), and NaN or inf scores are explained by
what the model holds (a named non-finite parameter) or by its forward on this input, not always
blamed on the weights."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from torch import nn

from cnnwidgets import Probe
from cnnwidgets.app.explorer import Explorer
from cnnwidgets.core.targets import (
    ClassLogit,
    ClassProbability,
    OutputDtypeError,
    OutputTypeError,
    check_finite_activation,
    checked_scores,
    class_probabilities,
    class_scores,
    nonfinite_cause,
    target_score,
)
from cnnwidgets.methods import grad_cam, occlusion_map, saliency

SIZE = 16


class Net(nn.Module):
    """A small classifier whose class scores (N, 5) go through ``post`` before they are returned
    (with a batch norm layer when ``bn``)."""

    def __init__(self, post=lambda y: y, bn: bool = True) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6) if bn else nn.Identity()
        self.head = nn.Linear(6, 5)
        self.post = post

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn(self.conv(x)))
        return self.post(self.head(y.mean((2, 3))))


ODD_OUTPUTS = {
    "bool": (lambda y: y > 0, (r"dtype torch\.bool.*thresholded \(as `logits > 0` gives it\): return the scores "
                               r"before the threshold")),
    "int64": (lambda y: (y * 10).long(), r"dtype torch\.int64.*integer output looks like class indices"),
    "uint8": (lambda y: (y.abs() * 10).to(torch.uint8), r"dtype torch\.uint8.*dequantize them to float"),
    "complex": (lambda y: torch.complex(y, y), (r"dtype torch\.complex64.*a complex output has no order to rank "
                                                r"classes by: return a real score")),
}
COMMON = r"class scores must be floating-point logits or probabilities.*Wrap the model in a module"


def x_batch(n: int = 2) -> torch.Tensor:
    return torch.rand(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("name", ODD_OUTPUTS)
def test_a_non_floating_output_is_refused_as_class_scores(name):
    post, specific = ODD_OUTPUTS[name]
    with torch.no_grad():
        output = Net(post).eval()(x_batch())
    for read in (lambda: class_scores(output), lambda: class_probabilities(output),
                 lambda: ClassLogit(1)(output), lambda: ClassProbability(1)(output)):
        with pytest.raises(OutputDtypeError, match=specific) as info:
            read()
        assert re.search(COMMON, str(info.value)), str(info.value)
        # an OutputTypeError (a TypeError), and a ValueError as other "not class scores" outputs are
        assert isinstance(info.value, OutputTypeError) and isinstance(info.value, TypeError)
        assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("name", ODD_OUTPUTS)
def test_methods_refuse_a_non_floating_output_with_the_message_not_torch_internals(name):
    post, specific = ODD_OUTPUTS[name]
    model, x = Net(post, bn=False).eval(), x_batch(1)
    with Probe(model) as probe, pytest.raises(OutputDtypeError, match=r"ClassLogit: the model's output has " + specific):
        target_score(probe, x, 0)
    with pytest.raises(OutputDtypeError, match=specific):
        occlusion_map(model, x, 0, window=8, stride=8, progress=False)
    with pytest.raises(OutputDtypeError, match=specific):
        grad_cam(model, x, 0, "conv")
    with pytest.raises(OutputDtypeError, match=specific):
        saliency(model, x, 0)


def test_a_target_of_ones_own_still_reads_a_non_floating_output():
    """A bool mask (a segmentation, say) may be explained by a target written for it."""
    model, x = Net(lambda y: y > 0, bn=False).eval(), x_batch()
    with Probe(model) as probe:
        scores = target_score(probe, x, lambda out: out.float().mean(1))
    assert scores.dtype.is_floating_point and scores.shape == (2,)
    result = occlusion_map(model, x[:1], lambda out: out.float().mean(1), window=8, stride=8, progress=False)
    assert np.isfinite(np.asarray(result.grid)).all() and result.labels is None


def test_occlusion_of_a_bool_output_of_a_model_with_batch_norm_says_what_is_wrong():
    model, x = Net(lambda y: y > 0).eval(), x_batch(1)
    with pytest.raises(OutputDtypeError, match="dtype torch.bool"):
        occlusion_map(model, x, 0, window=8, stride=8, progress=False)


def test_a_target_returning_complex_scores_is_refused():
    with pytest.raises(TypeError, match=r"real scores.*complex64.*\.real"):
        checked_scores(torch.complex(torch.ones(2), torch.ones(2)), 2)
    assert checked_scores(torch.tensor([True, False]), 2).dtype == torch.float32  # bools still become floats


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_floating_outputs_of_every_precision_are_still_class_scores(dtype):
    model, x = Net(lambda y: y.to(dtype)).eval(), x_batch()
    with torch.no_grad():
        output = model(x)
        reference = Net().eval()(x)
    assert class_scores(output).dtype == dtype
    probs = class_probabilities(output)
    assert probs.dtype == dtype and probs.shape == (2, 5)
    torch.testing.assert_close(probs.double(), torch.softmax(reference.double(), 1), atol=2e-2, rtol=0)
    with Probe(model) as probe:
        scores = target_score(probe, x, 3)
        assert scores.shape == (2,) and bool(torch.isfinite(scores).all())
        torch.testing.assert_close(scores.double(), reference[:, 3].double(), atol=5e-2, rtol=0)
        assert target_score(probe, x, ClassProbability(3)).shape == (2,)


def test_explorer_shows_the_dtype_problem_and_still_the_maps():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)
    ex = Explorer(Net(lambda y: y > 0).eval(), image, input_size=(3, SIZE, SIZE), samples={}, background=False,
                  box=(4, 4, 8, 8))
    try:
        assert ex.scores is None
        message = ex.status.message
        assert ex.status.is_error and "dtype torch.bool" in message and "shown without class scores" in message
        assert ex.activations is not None
    finally:
        ex.close()


# ---------------------------------------------------------------- non-finite scores


class LogNet(Net):
    """Finite weights, but a forward that takes the log of its input's mean: NaN for a negative one."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) + torch.log(x.mean((1, 2, 3)))[:, None]


def test_nan_from_a_forward_with_finite_weights_is_not_blamed_on_the_weights():
    model = LogNet().eval()
    x = x_batch()
    x[1] -= 2  # a negative mean: the log is NaN for image 1 only
    with Probe(model) as probe, pytest.raises(ValueError) as info:
        target_score(probe, x, 0)
    message = str(info.value)
    assert "for image 1 of 2" in message
    assert "every parameter and buffer of the model is finite, so its forward computed NaN or inf from this input" \
        in message
    assert "non-finite weights" not in message and "diverged" not in message
    with pytest.raises(ValueError, match="every parameter and buffer of the model is finite"):
        occlusion_map(model, x[1:], 0, window=8, stride=8, progress=False)


def test_non_finite_weights_and_buffers_are_named():
    model = Net().eval()
    with torch.no_grad():
        model.head.weight[0, 1] = float("nan")
    with Probe(model) as probe, pytest.raises(ValueError) as info:
        target_score(probe, x_batch(), 0)
    assert "the parameter 'head.weight' holds NaN: the model has non-finite weights (has training diverged?)" \
        in str(info.value)
    model = Net().eval()
    with torch.no_grad():
        model.bn.running_var[0] = float("inf")
    assert nonfinite_cause(model) == ("the buffer 'bn.running_var' holds inf: the model has non-finite weights "
                                      "(has training diverged?)")
    with torch.no_grad():
        model.conv.bias[0] = float("-inf")  # parameters are looked at before buffers
    assert nonfinite_cause(model).startswith("the parameter 'conv.bias' holds inf")


def test_nonfinite_cause_without_a_model_names_both_possibilities():
    for model in (None, object()):
        cause = nonfinite_cause(model)
        assert "non-finite weights" in cause and "forward computes NaN or inf from this input" in cause
    assert nonfinite_cause(nn.ReLU()).startswith("every parameter and buffer of the model is finite")


def test_check_finite_activation_says_why_when_given_the_model():
    activation = torch.tensor([[1.0, float("nan")]])
    with pytest.raises(ValueError, match=r"needs finite activations.*1 of 2 values.*either the model has non-finite "
                                         r"weights .*has training diverged\?.*or its forward computes"):
        check_finite_activation(activation, "conv", "a scan")
    with pytest.raises(ValueError, match=r"for a finite input: every parameter and buffer of the model is finite"):
        check_finite_activation(activation, "conv", "a scan", model=Net())
