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
    with pytest.raises(TypeError, match="leaves_only must be True or False, got str 'no'"):
        summary(small_net(), (3, 32, 32), leaves_only="no")


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
    # the footer says what the RF and Jump columns count, on a line of its own
    assert "<br>RF: receptive field, the side in input pixels" in view._footer.value
    assert "Jump: input pixels between two neighbouring units" in view._footer.value


def test_plain_widget_and_table_html_validate_input():
    view = SummaryView(["a", "b"], [["x", "1"], ["y", "2"]], align=["left", "right"])
    view._filter_box.value = "y"  # typing in the box filters
    assert view.shown == 1
    with pytest.raises(Exception, match="align"):
        view.align = ["middle"]
    with pytest.raises(ValueError, match="row 0 has 1 cells"):
        table_html(["a", "b"], [["only one"]])


# --- why a receptive field is missing ------------------------------------------------------------------------


class PaddingConv(nn.Conv2d):
    """A convolution that pads in its own forward: its attributes (padding 0) do not say how it reads."""

    def forward(self, x):
        return super().forward(nn.functional.pad(x, (1, 1, 1, 1)))


class CustomConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.padded = PaddingConv(4, 4, 3)
        self.act = nn.ReLU()
        self.head = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        return self.head(self.act(self.padded(self.stem(x))))


class FunctionalPoolNet(nn.Module):
    """Pools with a function between two modules, as Inception's blocks do with ``F.avg_pool2d``."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.after_pool = nn.Conv2d(4, 4, 1)

    def forward(self, x):
        return self.after_pool(nn.functional.avg_pool2d(self.stem(x), 3, stride=1, padding=1))


class TwoBreaks(nn.Module):
    """Two branches from the input, each losing its receptive field in another way."""

    def __init__(self):
        super().__init__()
        self.conv_a = nn.Conv2d(3, 4, 3, padding=1)
        self.up = nn.ConvTranspose2d(4, 4, 2, stride=2)
        self.conv_b = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.resize = nn.AdaptiveAvgPool2d(5)

    def forward(self, x):
        return self.up(self.conv_a(x)).mean() + self.resize(self.conv_b(x)).mean()


def test_a_conv_subclass_padding_in_forward_is_named_as_where_the_receptive_field_is_lost():
    table = summary(CustomConvNet(), input_size=(3, 16, 16))
    rows = {r.name: r for r in table.rows}
    assert rows["stem"].receptive_field == 3 and rows["stem"].receptive_field_reason == ""
    assert [rows[n].receptive_field for n in ("padded", "act", "head")] == [None, None, None]
    assert "own forward" in rows["padded"].receptive_field_reason
    # the ReLU and the plain convolution after it follow the rule: they only lack one because their input does
    assert "input has none" in rows["act"].receptive_field_reason
    assert "input has none" in rows["head"].receptive_field_reason
    note = table.receptive_field_note
    assert note.startswith("RF '-' on 3 of 4 layers with a spatial map, first at padded (PaddingConv): ")
    assert "own forward" in note and "\n" not in note
    lines = table.to_text().splitlines()
    assert lines[-2] == "CustomConvNet: 408 parameters, input 3x16x16; 4 layers shown" and lines[-1] == note
    assert lines[-3] == lines[1]  # the rule closing the table comes before both footer lines


def test_a_function_between_modules_is_named_through_the_layer_that_reads_its_output():
    table = summary(FunctionalPoolNet(), input_size=(3, 12, 12))
    rows = {r.name: r for r in table.rows}
    assert rows["stem"].receptive_field == 3 and rows["after_pool"].receptive_field is None
    note = table.receptive_field_note
    assert "1 of 2 layers" in note and "first at after_pool (Conv2d)" in note
    assert "input has none" in note and "functional pooling" in note


def test_channels_last_layers_are_explained():
    # ConvNeXt-style: permute to (H, W, C) for a LayerNorm and a Linear per position, then back
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        torchvision.ops.misc.Permute([0, 2, 3, 1]),
        nn.LayerNorm(8),
        nn.Linear(8, 8),
        torchvision.ops.misc.Permute([0, 3, 1, 2]),
        nn.Conv2d(8, 8, 1),
    )
    table = summary(model, input_size=(3, 10, 12))
    rows = {r.name: r for r in table.rows}
    # the positions are followed through the permutes and the per-position LayerNorm and Linear
    for name in ("1", "2", "3"):
        assert rows[name].layout == "HWC" and rows[name].receptive_field == 3 and rows[name].jump == 1
    assert rows["4"].receptive_field == rows["5"].receptive_field == 3
    assert table.receptive_field_note == ""
    # a permute that swaps the rows and columns of a channels-last map loses them: said so
    swapped = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), torchvision.ops.misc.Permute([0, 2, 3, 1]),
        torchvision.ops.misc.Permute([0, 2, 1, 3]), nn.LayerNorm(8),
    )
    rows = {r.name: r for r in summary(swapped, input_size=(3, 10, 12)).rows}
    assert rows["1"].receptive_field == 3
    assert rows["3"].layout == "HWC" and rows["3"].receptive_field is None
    assert "channels-last" in rows["3"].receptive_field_reason


@pytest.mark.parametrize(
    ("layer", "words"),
    [
        (nn.ConvTranspose2d(4, 4, 3, padding=1), "transposed convolution"),
        (nn.Conv2d(4, 4, (3, 1), padding=(1, 0)), "not square"),
        (nn.Conv2d(4, 4, 3, padding=1, padding_mode="circular"), "circularly"),
        (nn.AdaptiveAvgPool2d((9, 9)), "adaptive pooling"),
        (nn.Upsample(scale_factor=2), "changes the map's size"),
        (nn.ZeroPad2d(1), "changes the map's size"),
        (nn.Linear(8, 8), "Linear"),
    ],
)
def test_each_kind_of_layer_the_recurrence_does_not_describe_gets_its_own_reason(layer, words):
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), layer, nn.ReLU())
    table = summary(model, input_size=(3, 8, 8))
    rows = table.rows
    assert rows[0].receptive_field == 3 and rows[1].receptive_field is None
    assert words in rows[1].receptive_field_reason
    assert "input has none" in rows[2].receptive_field_reason
    assert f"first at 1 ({type(layer).__name__}): " in table.receptive_field_note
    assert words in table.receptive_field_note


def test_a_second_place_losing_it_for_another_reason_is_named_too():
    note = summary(TwoBreaks(), input_size=(3, 8, 8)).receptive_field_note
    assert note.startswith("RF '-' on 2 of 4 layers with a spatial map, first at up (ConvTranspose2d): ")
    assert "Also at resize (AdaptiveAvgPool2d): adaptive pooling" in note


def test_containers_count_but_the_first_leaf_is_named():
    table = summary(nn.Sequential(nn.Sequential(nn.Conv2d(3, 4, 3), PaddingConv(4, 4, 3))), (3, 8, 8),
                    leaves_only=False)
    rows = {r.name: r for r in table.rows}
    assert rows["0"].receptive_field is None and "returns" in rows["0"].receptive_field_reason
    assert "2 of 3 layers" in table.receptive_field_note and "first at 0.1 (PaddingConv)" in table.receptive_field_note


def test_no_note_when_every_map_layer_has_a_receptive_field():
    # the 1 x 1 maps of global pooling and squeeze-and-excitation have none, and need no note
    for model, size in ((small_net(), (3, 32, 32)), (torchvision.models.resnet18(weights=None), (3, 64, 64)),
                        (torchvision.models.mobilenet_v3_small(weights=None), (3, 64, 64))):
        table = summary(model, input_size=size)
        assert any(r.receptive_field is None and r.output_shape and len(r.output_shape) == 3 for r in table.rows)
        assert table.receptive_field_note == "" and "\n" not in table.footer()
        assert all(r.receptive_field_reason == "" for r in table.rows)
        assert "title=" not in table.to_html()


def test_html_explains_a_missing_receptive_field_on_hover_and_in_the_caption():
    page = summary(CustomConvNet(), input_size=(3, 16, 16)).to_html()
    assert page.count(' title="it has its own forward') == 1
    assert page.count(' title="its input has none') == 2
    caption = page[page.index("<caption"):]
    assert "4 layers shown<br>RF &#x27;-&#x27; on 3 of 4 layers" in caption


def test_widget_footer_shows_the_note_under_the_count():
    view = summary_view(CustomConvNet(), (3, 16, 16))
    footer = view._footer.value
    assert "CustomConvNet: 408 parameters, input 3x16x16 - 4 of 4 layers<br>RF &#x27;-&#x27; on 3 of 4" in footer
    assert "first at padded (PaddingConv)" in footer
    view.filter_text = "stem"
    assert " - 1 of 4 layers<br>RF " in view._footer.value
    plain = SummaryView(["a"], [["x"]], caption="one line")
    assert plain._footer.value == "<small>one line - 1 of 1 layers</small>"


def test_widget_refuses_rows_that_do_not_fit_the_columns_and_keeps_its_table():
    view = SummaryView(["a", "b"], [["x", "1"], ["y", "2"]])
    table = view._table.value
    with pytest.raises(Exception, match=r"row 0 has 1 cells, but the table has 2 columns \['a', 'b'\]; give one cell"):
        view.cells = [["only one"]]
    assert view.cells == [["x", "1"], ["y", "2"]] and view._table.value == table and view.shown == 2
    with pytest.raises(Exception, match="row 0 has 2 cells, but the table has 3 columns"):
        view.columns = ["a", "b", "c"]
    assert view.columns == ["a", "b"]
    with view.hold_trait_notifications():  # both at once
        view.columns = ["a", "b", "c"]
        view.cells = [["x", "1", "p"]]
    assert view.shown == 1 and ">p<" in view._table.value


def test_a_summary_runs_one_discovery_pass_at_most(monkeypatch):
    """The layers at a size are found once: a summary at the probe's own size reuses them, and a
    model passed with a size was described twice (the probe's pass, then the summary's own)."""
    with Probe(small_net(), input_size=(3, 32, 32)) as probe:
        probe.layers
        before = probe.stats.discoveries
        first = summary(probe, (3, 32, 32))
        again = summary(probe, (3, 32, 32))
        assert probe.stats.discoveries == before
        assert first.rows == again.rows and first.input_size == (3, 32, 32)
        other = summary(probe, (3, 64, 64))  # another size: described anew
        assert probe.stats.discoveries == before + 1 and other.rows[0].output_shape == (8, 32, 32)
    discoveries = []
    real = Probe.describe

    def counted(self, size):
        discoveries.append(tuple(size))
        return real(self, size)

    monkeypatch.setattr(Probe, "describe", counted)
    table = summary(small_net(), (3, 32, 32))
    assert [(r.name, r.output_shape) for r in table.rows][:2] == [("0", (8, 16, 16)), ("1", (8, 16, 16))]
    assert len(discoveries) <= 1


def test_tables_scroll_sideways_by_themselves_and_let_their_widget_shrink():
    from cnnwidgets.widgets.summary import scrolling

    html = table_html(["a", "b"], [["1", "2"]])
    # a box of its own that scrolls, and the rule that lets the HTML widget holding it shrink to the
    # output's width (an HTML widget's content otherwise grows to the table's width)
    assert html.startswith("<style>") and ":has(.cnnw-scroll){min-width:0}" in html
    assert '<div class="cnnw-scroll" style="overflow-x:auto;max-width:100%"><table' in html
    assert scrolling("<p>x</p>").endswith('<div class="cnnw-scroll" style="overflow-x:auto;max-width:100%"><p>x</p></div>')
