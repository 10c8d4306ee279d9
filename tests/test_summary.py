"""Model summary: hand-computed rows, text/HTML tables, filtering and the widget."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from cnnwidgets import Probe
from cnnwidgets.app.filters import summary_view
from cnnwidgets.methods.summary import summary
from cnnwidgets.widgets.summary import SummaryView, table_html


def small_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 5, stride=2, padding=2),  # 3x32x32 -> 8x16x16
        nn.ReLU(),
        nn.MaxPool2d(2),  # -> 8x8x8
        nn.Conv2d(8, 16, 3, padding=1, dilation=1),  # -> 16x8x8
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    )


# name, type, output shape, params, receptive field, jump; computed by hand:
#   conv 5x5 s2: r = 1 + 4 = 5, j = 2;  pool 2 s2: r = 5 + 1*2 = 7, j = 4;  conv 3x3: r = 7 + 2*4 = 15
EXPECTED = [
    ("0", "Conv2d", (8, 16, 16), 3 * 8 * 25 + 8, 5, 2),
    ("1", "ReLU", (8, 16, 16), 0, 5, 2),
    ("2", "MaxPool2d", (8, 8, 8), 0, 7, 4),
    ("3", "Conv2d", (16, 8, 8), 8 * 16 * 9 + 16, 15, 4),
    ("4", "AdaptiveAvgPool2d", (16, 1, 1), 0, None, None),
    ("5", "Flatten", (16,), 0, None, None),
    ("6", "Linear", (10,), 16 * 10 + 10, None, None),
]


def test_rows_match_hand_computed_shapes_params_and_receptive_fields():
    table = summary(small_net(), input_size=(3, 32, 32))
    got = [(r.name, r.type, r.output_shape, r.params, r.receptive_field, r.jump) for r in table.rows]
    assert got == EXPECTED
    assert table.total_params == 608 + 1168 + 170
    assert table.input_size == (3, 32, 32)
    assert len(table) == 7


def test_text_table_is_aligned_and_complete():
    text = summary(small_net(), input_size=(3, 32, 32)).to_text()
    lines = text.splitlines()
    header, rule, body, footer = lines[0], lines[1], lines[2:9], lines[-1]
    assert header.split() == ["Layer", "Type", "Output", "shape", "Params", "RF", "Jump"]
    assert set(rule) == {"-"} and lines[9] == rule
    # numbers are right-aligned under their headers
    params_end = header.index("Params") + len("Params")
    jump_end = header.index("Jump") + len("Jump")
    for line, expected in zip(body, EXPECTED):
        assert line.startswith(expected[0] + " ")
        assert line[params_end - len(f"{expected[3]:,}") : params_end] == f"{expected[3]:,}"
        assert line[:jump_end].rstrip().endswith("-" if expected[5] is None else str(expected[5]))
    assert "16 x 8 x 8" in body[3]
    assert footer == "Sequential: 1,946 parameters, input 3x32x32; 7 layers shown"
    assert str(summary(small_net(), input_size=(3, 32, 32))) == text


def test_html_is_a_table_with_escaped_cells():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.add_module("a<b>", nn.Conv2d(3, 2, 3))

        def forward(self, x):
            return getattr(self, "a<b>")(x)

    page = summary(Odd(), input_size=(3, 8, 8))._repr_html_()
    assert page.startswith("<table") and page.count("<tr>") == 2
    assert "a&lt;b&gt;" in page and "a<b>" not in page


def test_filter_containers_calls_and_probe_input():
    resnet = torchvision.models.resnet18(weights=None)
    with Probe(resnet, input_size=(3, 64, 64)) as probe:
        table = summary(probe, leaves_only=False)
        assert table.input_size == (3, 64, 64)
        assert "layer1.0" in [r.name for r in table.rows]  # containers are listed too
        leaves = summary(probe)
        assert "layer1.0" not in [r.name for r in leaves.rows]
        assert table.total_params == sum(p.numel() for p in resnet.parameters())
    shared_relu = next(r for r in leaves.rows if r.name == "layer1.0.relu")
    assert shared_relu.calls == 2 and "(x2)" in shared_relu.cells()[1]
    fc = leaves.filter("LINEAR")
    assert [r.name for r in fc.rows] == ["fc"]
    assert leaves.filter("  ") is leaves
    assert [r.receptive_field for r in leaves.rows if r.name == "conv1"] == [7]


def test_receptive_fields_follow_out_of_place_residual_adds():
    # mobilenet_v2 returns ``x + self.conv(x)``: block 4 reads the sum, whose receptive field is
    # block 3's (stem 3, +4 in block 1, +4 with stride 2 in block 2, +2 * 4 in block 3: 19)
    table = summary(torchvision.models.mobilenet_v2(weights=None), input_size=(3, 64, 64))
    rows = {r.name: r for r in table.rows}
    for name in ("features.3.conv.3", "features.4.conv.0.0"):
        assert (rows[name].receptive_field, rows[name].jump) == (19, 4)
    line = next(line for line in table.to_text().splitlines() if line.startswith("features.4.conv.0.0 "))
    assert line.split()[-2:] == ["19", "4"]
    assert all(r.receptive_field is not None for r in table.rows if r.name.startswith("features."))


def test_errors():
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        summary(small_net(), input_size=(32, 32))
    with pytest.raises(RuntimeError, match="failed"):
        summary(small_net(), input_size=(1, 32, 32))  # the first conv wants 3 channels
    with pytest.raises(TypeError, match="Module, a zoo bundle or a cnnwidgets.Probe"):
        summary(object())


def test_a_batch_passed_as_the_input_size_is_named_by_its_shape():
    x = torch.randn(1, 3, 32, 32)
    with Probe(small_net()) as probe:
        with pytest.raises(ValueError, match=r"got a tensor of shape \(1, 3, 32, 32\); for the size of a batch x "
                                             r"pass tuple\(x.shape\[1:\]\)") as info:
            summary(probe, x)
    assert "tensor(" not in str(info.value) and len(str(info.value)) < 300


def test_widget_filters_rows_and_shows_the_count():
    view = summary_view(small_net(), (3, 32, 32))
    assert view.shown == 7 and view._table.value.count("<tr>") == 8
    view.filter_text = "conv"
    assert view.shown == 2
    assert "2 of 7 layers" in view._footer.value
    view.filter_text = "relu"
    assert [row[0] for row in view.visible_rows()] == ["1"]
    view.filter_text = ""
    assert view.shown == 7
    assert 'text-align:right">1,168<' in view._table.value


def test_plain_widget_and_table_html_validate_input():
    view = SummaryView(["a", "b"], [["x", "1"], ["y", "2"]], align=["left", "right"])
    view._filter_box.value = "y"  # typing in the box filters
    assert view.shown == 1
    with pytest.raises(Exception, match="align"):
        view.align = ["middle"]
    with pytest.raises(ValueError, match="row 0 has 1 cells"):
        table_html(["a", "b"], [["only one"]])
