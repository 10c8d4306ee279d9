"""Feature evolution rows of a classifier layer are labelled by class, those of other layers by channel."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnwidgets.app.experiments import EvolutionController, plot_evolution
from cnnwidgets.methods.evolution import FeatureEvolutionRecorder
from cnnwidgets.render import figures as F
from cnnwidgets.zoo.bundle import Bundle

NAMES = ["koala", "American Staffordshire terrier", "tabby\ncat"]


class Net(nn.Module):
    """Two convolutions, a hidden Linear as wide as the head (3) and a 3-class head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.hidden = nn.Linear(8 * 8 * 8, 3)
        self.act = nn.Tanh()
        self.head = nn.Linear(3, 3)

    def forward(self, x):
        x = self.relu2(self.conv2(nn.functional.max_pool2d(self.relu1(self.conv1(x)), 2)))
        return self.head(self.act(self.hidden(x.flatten(1))))


class FullyConvolutional(nn.Module):
    """Class maps from a convolution, then global pooling: the pooled (classes, 1, 1) are the scores."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.classes = nn.Conv2d(4, 3, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        return torch.softmax(self.pool(self.classes(torch.relu(self.conv(x)))).flatten(1), dim=1)


def images(n: int = 6) -> torch.Tensor:
    return torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(5))


def recorded(model=None, **options) -> FeatureEvolutionRecorder:
    recorder = FeatureEvolutionRecorder(Net() if model is None else model, images(),
                                        {"conv2": [0, 5], "hidden": 3, "head": 3}, epochs=None,
                                        projection=None, device="cpu", **options)
    recorder.record(1)
    recorder.record(2)
    return recorder


def tick_labels(figure) -> dict[str, list[str]]:
    """``{layer: row labels}`` as drawn (each block's axes is titled by its layer)."""
    figure.canvas.draw()
    return {ax.get_title(loc="left"): [t.get_text() for t in ax.get_yticklabels()] for ax in figure.axes}


def test_only_the_layer_that_gives_the_class_scores_is_a_class_layer():
    with recorded() as recorder:
        # "hidden" has 3 channels too, but its output is not the model's
        assert recorder.result().class_layers == {"head": 3}
    with FeatureEvolutionRecorder(FullyConvolutional(), images(), {"classes": 2, "pool": 3}, epochs=None,
                                  device="cpu") as recorder:
        assert recorder.result().class_layers == {"pool": 3}  # its softmax is the output; the maps are no scores


def test_rows_name_the_classes_when_names_are_given_and_the_channels_otherwise():
    with recorded() as recorder:
        named = tick_labels(plot_evolution(recorder, class_names=NAMES))
        plain = tick_labels(plot_evolution(recorder))
    assert named["conv2"] == plain["conv2"] == ["ch 0", "ch 5"]
    assert named["hidden"] == plain["hidden"] == ["ch 0", "ch 1", "ch 2"]
    # long names are cut to fit, a newline in a name does not break the row
    assert named["head"] == ["0 koala", "1 American Staffo\u2026", "2 tabby cat"]
    assert all(len(label) <= F.ROW_LABEL_CHARS for label in named["head"])
    assert plain["head"] == ["class 0", "class 1", "class 2"]


def test_names_given_to_the_recorder_or_by_its_bundle_are_used():
    with recorded(classes=("cat", "dog", "bird")) as recorder:
        assert recorder.result().classes == ["cat", "dog", "bird"]
        assert tick_labels(plot_evolution(recorder))["head"] == ["0 cat", "1 dog", "2 bird"]
        # the view's own names win
        assert tick_labels(plot_evolution(recorder, class_names=NAMES))["head"][0] == "0 koala"
    bundle = Bundle(Net(), ["ant", "bee", "cow"], lambda image: image, (3, 16, 16), "net", "random")
    with recorded(bundle) as recorder:
        assert recorder.result().row_labels("head") == ["0 ant", "1 bee", "2 cow"]
        assert recorder.result().row_labels("conv2") == ["ch 0", "ch 5"]


def test_the_unlabelled_view_names_the_classes_in_its_status_and_the_labelled_one_draws_them():
    with recorded() as recorder:
        mosaic = EvolutionController(recorder, labelled=False, class_names=NAMES).view
        assert "conv2: ch [0, 5]" in mosaic.status and "hidden: ch [0, 1, 2]" in mosaic.status
        assert "head: classes [0 koala, 1 American Staffordshire terrier, 2 tabby\ncat]" in mosaic.status
        assert "head: classes [0, 1, 2]" in EvolutionController(recorder, labelled=False).view.status
        named = EvolutionController(recorder, class_names=NAMES).view
        plain = EvolutionController(recorder).view
        assert named.image_shape and bytes(named._image.value) != bytes(plain._image.value)


def test_class_names_that_do_not_fit_are_refused_with_both_counts():
    with recorded() as recorder:
        for make in (lambda: plot_evolution(recorder, class_names=["a", "b"]),
                     lambda: EvolutionController(recorder, class_names=["a", "b"])):
            with pytest.raises(ValueError, match=r"2 class names were given, but layer 'head' scores 3 classes"):
                make()
        with pytest.raises(TypeError, match=r"class_names must be a list of names"):
            plot_evolution(recorder, class_names="abc")
    with pytest.raises(ValueError, match=r"4 class names were given, but layer 'head' scores 3 classes"):
        recorded(classes=["a", "b", "c", "d"])
    with pytest.raises(TypeError, match=r"classes must be a list of class names, one per class, got the string"):
        recorded(classes="abc")
    with pytest.raises(TypeError, match=r"classes must be class names in class order"):
        recorded(classes={"a", "b", "c"})


def test_the_figure_refuses_row_labels_that_are_not_one_per_row():
    cells = torch.rand(2, 3, 4, 4, 3).numpy()
    with pytest.raises(ValueError, match=r"row_labels has 1 labels for block 'fc', which has 2 rows"):
        F.evolution_figure({"fc": cells}, [1, 2, 3], {"fc": [0, 1]}, row_labels={"fc": ["0 cat"]})


def test_finding_the_class_layers_leaves_the_random_state_alone():
    class Noisy(Net):
        def forward(self, x):
            return super().forward(x) + 0 * torch.rand(1)

    model, probe_images = Noisy(), images()
    before = torch.get_rng_state()
    with FeatureEvolutionRecorder(model, probe_images, {"head": 3}, epochs=None, device="cpu") as recorder:
        assert torch.equal(before, torch.get_rng_state())
        assert recorder.result().class_layers == {"head": 3}


def test_a_model_whose_output_is_no_class_scores_has_no_class_layer():
    class Pair(Net):
        def forward(self, x):
            return super().forward(x), x

    with FeatureEvolutionRecorder(Pair(), images(), {"head": 3}, epochs=None, projection=None,
                                  device="cpu") as recorder:
        assert recorder.result().class_layers == {}
        recorder.record(1)
        assert recorder.result().row_labels("head") == ["ch 0", "ch 1", "ch 2"]
