"""A model that fails on every input size tried (or on the size given) is told by its own error
first: the input size is offered second, as one possible cause, so that a bug in the model's
forward does not send a student off to change the input size."""

from __future__ import annotations

import pytest
from torch import nn

import cnnwidgets
from cnnwidgets import Probe, zoo

RGB_SIZES = [(3, side, side) for side in (224, 28, 32, 64, 96, 128, 299)]
GRAY_SIZES = [(1, side, side) for side in (28, 32, 64, 96, 128, 224, 299)]


class Broken(nn.Module):
    """A forward that fails whatever the input's size: a view to a shape no activation has."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return self.conv(x).view(1, 7)


class AlwaysTheSame(nn.Module):
    """A forward raising one and the same error, with no number in it, at every size."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)

    def forward(self, x):
        raise ValueError("this model is not finished")


def failure(make) -> str:
    with pytest.raises(RuntimeError) as info:
        make()
    return str(info.value)


def in_order(message: str, *parts: str) -> None:
    """Every part is in message, each after the one before."""
    where = [message.find(part) for part in parts]
    assert -1 not in where, (parts, message)
    assert where == sorted(where), (parts, message)


def test_the_models_own_error_comes_first_and_the_size_is_offered_as_a_possible_cause():
    with Probe(Broken()) as probe:
        message = failure(lambda: probe.layers)
    assert message.startswith("the model ran on none of the input sizes tried: RuntimeError: shape '[1, 7]' is "
                              "invalid for input of size "), message
    in_order(message, "shape '[1, 7]' is invalid", "(at (3, 224, 224); the same error (with other numbers) at ",
             "(3, 299, 299)", "; the errors differed between sizes: other errors at (1, 28, 28)", "(1, 299, 299)",
             "If the error is about the input's size or channels, give the size it expects, e.g. input_size=(C, H, W)")
    assert message.endswith("e.g. input_size=(C, H, W)")
    for size in RGB_SIZES + GRAY_SIZES:  # every size tried is still named
        assert str(size) in message, size
    # the gray sizes failed another way (the channels): named as such, their error not passed off as the first
    assert message.index("(1, 28, 28)") > message.index("the errors differed")
    assert "is this the size" not in message and "The failure at" not in message


def test_the_explorer_without_a_size_tells_the_models_error_first():
    message = failure(lambda: cnnwidgets.explore(Broken(), zoo.sample_image("star"), samples={}, background=False))
    assert message.startswith("the model ran on none of the input sizes tried: RuntimeError: shape '[1, 7]'"), message
    in_order(message, "shape '[1, 7]'", "(at (3, 224, 224)", "give the size it expects, e.g. input_size=(C, H, W)")


@pytest.mark.parametrize("how", ["probe", "explore"])
def test_a_size_given_is_named_with_the_models_error_and_questioned_second(how):
    size = (3, 64, 64)
    if how == "probe":
        message = failure(lambda: Probe(Broken(), input_size=size).layers)
    else:
        message = failure(lambda: cnnwidgets.explore(Broken(), zoo.sample_image("star"), samples={},
                                                     background=False, input_size=size))
    assert message.startswith("the model failed on an input of size (3, 64, 64): RuntimeError: shape '[1, 7]' is "
                              "invalid for input of size 15376"), message
    in_order(message, "shape '[1, 7]'", "If the error is about the input, is (3, 64, 64) the size and number of "
                                        "channels it expects?")
    assert "none of the input sizes" not in message


def test_one_and_the_same_error_everywhere_is_said_to_be_the_same():
    with Probe(AlwaysTheSame()) as probe:
        message = failure(lambda: probe.layers)
    assert message.startswith("the model ran on none of the input sizes tried: ValueError: this model is not "
                              "finished (at (1, 28, 28); the same error at the other sizes tried: (1, 32, 32), "), message
    assert "with other numbers" not in message and "differed" not in message
    assert "(3, 299, 299)" in message  # the RGB guesses too, after the gray ones the first conv asks for


def test_one_size_tried_and_a_different_error_at_the_next():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 26 * 26, 10))
    with Probe(model) as probe:
        message = failure(lambda: probe.fit_input_size([(1, 32, 32)]))
        assert message.startswith("the model ran on none of the input sizes tried: RuntimeError: mat1 and mat2 "
                                  "shapes cannot be multiplied"), message
        assert "(at (1, 32, 32)). If the error is about the input's size or channels" in message
        assert "same error" not in message and "differed" not in message
        message = failure(lambda: probe.fit_input_size([(1, 32, 32), (3, 32, 32), (1, 30, 30)]))
        in_order(message, "mat1 and mat2", "(at (1, 32, 32); the same error (with other numbers) at (1, 30, 30); "
                                           "the errors differed between sizes: other errors at (3, 32, 32))")


def test_the_failure_keeps_the_models_exception_as_its_cause():
    with Probe(Broken()) as probe, pytest.raises(RuntimeError) as info:
        probe.layers
    first = info.value.__cause__
    assert isinstance(first, RuntimeError) and "(3, 224, 224)" in str(first)  # the failure at the first size
    assert isinstance(first.__cause__, RuntimeError) and "shape '[1, 7]'" in str(first.__cause__)  # the model's


def test_an_error_that_is_not_about_the_input_asks_nothing_about_the_size():
    class Lookup(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 2, 3)

        def forward(self, x):
            return {"a": self.conv(x)}["missing"]

    message = failure(lambda: Probe(Lookup(), input_size=(3, 16, 16)).layers)
    assert message == "the model failed on an input of size (3, 16, 16): KeyError: 'missing'"
    message = failure(lambda: Probe(Lookup()).layers)
    assert message.startswith("the model ran on none of the input sizes tried: KeyError: 'missing' (at (3, 224, 224)")
    # still told how to give a size (some sizes' errors may differ), as one possible cause only
    assert message.endswith("If the error is about the input's size or channels, give the size it expects, "
                            "e.g. input_size=(C, H, W)")


def test_a_size_given_as_h_w_c_keeps_its_hint_after_the_models_error():
    message = failure(lambda: Probe(Broken(), input_size=(64, 64, 3)).layers)
    in_order(message, "the model failed on an input of size (64, 64, 3): RuntimeError: Given groups=1",
             "(input sizes are (C, H, W): (64, 64, 3) looks like (H, W, C); did you mean (3, 64, 64)?)")
    assert "is this the size" not in message and "If the error is about the input" not in message


def test_a_forward_casting_its_input_keeps_the_dtype_hint_after_its_error():
    class CastsToHalf(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 2, 3).half()

        def forward(self, x):
            return self.conv(x.half())

    message = failure(lambda: Probe(CastsToHalf(), input_size=(3, 16, 16)).layers)
    in_order(message, "the model failed on an input of size (3, 16, 16): ", "(the copy computes in float32")
    assert "size and number of channels" not in message
    message = failure(lambda: Probe(CastsToHalf()).layers)
    in_order(message, "the model ran on none of the input sizes tried: ", "(the copy computes in float32",
             "(at (3, 224, 224)")
