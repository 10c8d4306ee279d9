"""Feature evolution recorder: leaves training bit-for-bit unchanged, records the true strongest
unit, and feeds the figure and the live view."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from cnnwidgets import ModelSnapshot
from cnnwidgets.methods.evolution import PAPER_EPOCHS, FeatureEvolutionRecorder
from cnnwidgets.methods.topk import receptive_field_box
from tests.helpers import reference_outputs


class Net(nn.Module):
    """Batch norm (running statistics), dropout (random masks) and in-place ReLUs: what a recorder could disturb."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(6)
        self.relu1 = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1)
        self.relu2 = nn.ReLU(inplace=True)
        self.drop = nn.Dropout(0.3)
        self.head = nn.Linear(8 * 8 * 8, 3)

    def forward(self, x):
        x = self.pool(self.relu1(self.bn1(self.conv1(x))))
        x = self.relu2(self.conv2(x))
        return self.head(self.drop(x.flatten(1)))


def dataset(n: int = 48) -> TensorDataset:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(n, 3, 16, 16, generator=g)
    return TensorDataset(x, (x[:, 0].mean(dim=(1, 2)) > 0).long() + (x[:, 1].mean(dim=(1, 2)) > 0).long())


def train(with_recorder: bool, epochs: int = 4, grad_check: bool = False):
    """A plain loop: shuffled loader, dropout, batch norm, Adam with weight decay; the recorder adds two lines."""
    torch.manual_seed(123)
    model = Net()
    data = dataset()
    loader = DataLoader(data, batch_size=12, shuffle=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-4)
    recorder = None
    if with_recorder:
        recorder = FeatureEvolutionRecorder(model, data.tensors[0][:16], {"relu1": 3, "relu2": [0, 7]},
                                            epochs=[1, 2, 4])
    for epoch in range(1, epochs + 1):
        model.train()
        for x, y in loader:
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            if recorder is not None and grad_check:
                snapshot = ModelSnapshot.take(model)
                recorder.record(epoch, force=True)  # mid-step, with gradients present
                snapshot.assert_unchanged(model)
            optimizer.step()
        if recorder is not None:
            recorder.record(epoch)
    return model, optimizer, recorder, torch.get_rng_state()


def test_recorder_does_not_change_training_results():
    plain, plain_opt, _, plain_rng = train(False)
    watched, watched_opt, recorder, watched_rng = train(True)
    assert recorder.result().epochs == [1, 2, 4]
    for (name, a), b in zip(plain.state_dict().items(), watched.state_dict().values()):
        assert torch.equal(a, b), f"{name} differs with the recorder on"
    for a, b in zip(plain_opt.state_dict()["state"].values(), watched_opt.state_dict()["state"].values()):
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(plain_rng, watched_rng)


def test_recording_mid_step_touches_no_grad_flag_or_buffer():
    _, _, recorder, _ = train(True, epochs=1, grad_check=True)
    assert recorder.result().epochs == [1]


def test_record_leaves_the_global_random_state_alone():
    model = Net().train()
    recorder = FeatureEvolutionRecorder(model, torch.randn(4, 3, 16, 16), "relu2", epochs=None)
    torch.manual_seed(5)
    before = torch.get_rng_state()
    recorder.record(1)
    assert torch.equal(before, torch.get_rng_state())
    assert model.training and all(m.training for m in model.modules())


def test_frames_hold_the_strongest_unit_over_the_probe_set():
    torch.manual_seed(0)
    model = Net().eval()
    probe_images = torch.randn(10, 3, 16, 16)
    recorder = FeatureEvolutionRecorder(model, probe_images, {"relu1": [1, 4], "relu2": 2, "head": [0]},
                                        epochs=[2, 5], batch_size=3)
    assert recorder.channels == {"relu1": [1, 4], "relu2": [0, 7], "head": [0]}
    assert not recorder.record(1)
    assert recorder.record(2)
    reference = reference_outputs(model, probe_images, ["relu1", "relu2", "head"])
    evolution = recorder.result()
    for layer, channels in recorder.channels.items():
        act = reference[layer]
        for channel in channels:
            frame = evolution.frame(layer, channel, 2)
            values = act[:, channel]
            torch.testing.assert_close(frame.value, values.max().item(), rtol=1e-5, atol=1e-6)
            if values.dim() == 3:
                torch.testing.assert_close(values[frame.image_index, frame.unit[0], frame.unit[1]].item(), frame.value,
                                           rtol=1e-5, atol=1e-6)
            box = receptive_field_box(recorder.layer_infos[layer], *frame.unit, (16, 16))
            assert frame.box == box and frame.patch.shape == (3, box.height, box.width)
            assert frame.projection is not None and frame.projection.shape == frame.patch.shape
            assert frame.valid.shape == (box.height, box.width)
    # changing the weights changes what the next recording sees
    with torch.no_grad():
        model.conv2.bias.add_(1.0)
    recorder.record(5)
    assert evolution.epochs == [2, 5]
    assert evolution.frame("relu2", 0, 5).value > evolution.frame("relu2", 0, 2).value
    np.testing.assert_allclose(evolution.values("relu2", 0), [evolution.frame("relu2", 0, e).value for e in (2, 5)])
    # recording an epoch again replaces it
    recorder.record(5, force=True)
    assert evolution.epochs == [2, 5] and len(evolution.frames[("relu2", 0)]) == 2
    recorder.close()


def test_projection_choices_and_errors():
    model = Net()
    images = torch.randn(4, 3, 16, 16)
    patches_only = FeatureEvolutionRecorder(model, images, {"relu2": 2}, projection="patch", epochs=None)
    patches_only.record(0)
    assert patches_only.result().frame("relu2", 0, 0).projection is None
    seen = []

    def projector(probe, x, layer, channels, units):
        seen.append((layer, channels.tolist(), tuple(units[0].tolist())))
        return torch.full_like(x, 2.0)

    custom = FeatureEvolutionRecorder(model, images, {"relu2": [3]}, projection=projector, epochs=None)
    custom.record(0)
    frame = custom.result().frame("relu2", 3, 0)
    assert seen == [("relu2", [3], frame.unit)] and np.all(frame.projection[:, frame.valid] == 2.0)
    assert PAPER_EPOCHS == (1, 2, 5, 10, 20, 30, 40, 64)
    with pytest.raises(KeyError, match="Did you mean"):
        FeatureEvolutionRecorder(model, images, {"relu3": 2})
    with pytest.raises(IndexError, match="out of range"):
        FeatureEvolutionRecorder(model, images, {"relu2": [8]})
    with pytest.raises(ValueError, match="probe_images"):
        FeatureEvolutionRecorder(model, images[0], {"relu2": 2})
    with pytest.raises(ValueError, match="projection"):
        FeatureEvolutionRecorder(model, images, {"relu2": 2}, projection="magic")
    with pytest.raises(KeyError, match="epoch 7"):
        custom.result().frame("relu2", 3, 7)


def test_live_view_follows_the_recorder_and_figure_has_the_paper_layout():
    from cnnwidgets.app.experiments import evolution_view, plot_evolution

    model = Net()
    images = torch.randn(6, 3, 16, 16)
    recorder = FeatureEvolutionRecorder(model, images, {"relu1": 2, "relu2": 3}, epochs=None)
    view = evolution_view(recorder, labelled=False)
    assert view.epoch is None and "nothing recorded" in view.status
    shapes = []
    for epoch in (1, 3, 6):
        with torch.no_grad():
            model.conv1.weight.mul_(1.1)
        recorder.record(epoch)
        assert view.epochs == [1, 3, 6][: len(view.epochs)] and view.epoch == epoch
        shapes.append(view.image_shape)
    assert shapes[0][1] < shapes[1][1] < shapes[2][1]  # one more column per epoch
    view.epoch = 3
    assert "epochs [1, 3]" in view.status
    view.follow = False
    recorder.record(9)
    assert view.epoch == 3 and view.epochs == [1, 3, 6, 9]
    view.show = "patch"
    assert not view.error
    fig = plot_evolution(recorder)
    assert [ax.get_title(loc="left") for ax in fig.axes] == ["relu1", "relu2"]
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["1", "3", "6", "9"]
    view.controller.close()
    recorder.record(10)
    assert view.epochs == [1, 3, 6, 9]  # a closed controller no longer listens
    # by default the view draws the figure with its labels: layers and channels at the rows, epochs below
    labelled = evolution_view(recorder)
    labelled.epoch = 6
    from cnnwidgets.app.experiments import evolution_blocks
    from cnnwidgets.render.figures import evolution_figure, figure_to_array

    blocks = evolution_blocks(recorder.result(), [1, 3, 6])
    expected = figure_to_array(evolution_figure(blocks, [1, 3, 6], recorder.result().channels, title=None,
                                                cell_inches=40 / 90), dpi=90)
    assert labelled.image_shape == expected.shape and not labelled.error
    shown = np.asarray(Image.open(io.BytesIO(labelled._image.value)).convert("RGB"))
    assert np.array_equal(shown, expected[..., :3])
    assert "epochs [1, 3, 6]: projection of each channel's strongest activation" in labelled.status
    labelled.controller.close()


def test_tinyvgg_fine_tuning_with_the_recorder(shared_data):
    from cnnwidgets.app.experiments import plot_evolution
    from tests.test_topk import tinyvgg_and_images

    model, x, labels, _ = tinyvgg_and_images(shared_data)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    recorder = FeatureEvolutionRecorder(model, x, {"relu_1_1": 4, "relu_2_2": 4}, epochs=[0, 3])
    recorder.record(0)
    for step in range(1, 4):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), labels).backward()
        optimizer.step()
        recorder.record(step)
    evolution = recorder.result()
    assert evolution.epochs == [0, 3]
    changed = [evolution.frame("relu_2_2", c, 0).value != evolution.frame("relu_2_2", c, 3).value
               for c in recorder.channels["relu_2_2"]]
    assert any(changed), "the recorder must see the weights after the optimizer steps"
    assert model.training
    fig = plot_evolution(recorder)
    assert len(fig.axes) == 2


def test_shapesnet_training_function_with_the_recorder_gives_identical_weights():
    """The zoo's own training loop, once plain and once with the recorder in its callback."""
    from cnnwidgets.zoo import make_batch
    from cnnwidgets.zoo.shapesnet import ShapesNet
    from cnnwidgets.zoo.train import train_shapesnet

    def run(record: bool):
        torch.manual_seed(0)
        model = ShapesNet()
        recorder = None
        callback = None
        if record:
            recorder = FeatureEvolutionRecorder(model, make_batch(32, seed=5)[0],
                                                {"features.relu1": 2, "features.relu4": 2}, epochs=[1, 3], unit="step")

            def callback(event):
                if event.kind == "step":
                    recorder.record(event.step)

        result = train_shapesnet(epochs=1, seed=0, n_train=192, batch_size=64, eval_n=0, model=model, callback=callback)
        return result.model, recorder

    plain, _ = run(False)
    watched, recorder = run(True)
    assert recorder.result().epochs == [1, 3]
    for (name, a), b in zip(plain.state_dict().items(), watched.state_dict().values()):
        assert torch.equal(a, b), f"{name} differs with the recorder on"


def test_the_recorder_follows_a_layer_the_user_replaces():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 5, 3, padding=1), nn.ReLU())
    images = torch.randn(6, 3, 16, 16)
    recorder = FeatureEvolutionRecorder(model, images, {"3": [0, 4]}, epochs=None)
    try:
        recorder.record(1)
        assert recorder.result().frame("3", 0, 1).box.height == 5
        model[2] = nn.Conv2d(4, 5, 7, padding=3)  # a wider kernel, mid-training
        recorder.record(2)
        frame = recorder.result().frame("3", 0, 2)
        assert frame.box.height == frame.box.width == 9  # the new layer's receptive field
        with torch.no_grad():
            strongest = model(images)[:, 0].max()
        assert frame.value == pytest.approx(float(strongest), rel=1e-5)
        model[2] = nn.Conv2d(4, 3, 3, padding=1)  # channel 4 is gone
        with pytest.raises(ValueError, match=r"layer '3' now has 3 channels; the recorder follows channels \[0, 4\]"):
            recorder.record(3)
    finally:
        recorder.close()


def test_a_layer_that_never_runs_is_named_as_such():
    from tests.helpers import AuxiliaryHeadNet

    with pytest.raises(ValueError, match="'aux' does not run in this model's forward pass"):
        FeatureEvolutionRecorder(AuxiliaryHeadNet().eval(), torch.rand(2, 3, 16, 16), ["aux"], device="cpu")


def test_updates_through_param_data_are_recorded():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))
    x, y, probe_images = torch.randn(16, 3, 16, 16), torch.randint(0, 3, (16,)), torch.randn(4, 3, 16, 16)
    recorder = FeatureEvolutionRecorder(model, probe_images, {"1": [0]}, epochs=None, projection=None, device="cpu")
    try:
        for epoch in range(3):
            loss = nn.functional.cross_entropy(model(x), y)
            model.zero_grad()
            loss.backward()
            for p in model.parameters():
                p.data -= 0.5 * p.grad  # no version counter moves
            recorder.record(epoch)
            with torch.no_grad():
                want = model[:2](probe_images)[:, 0].amax().item()
            assert recorder.result().frame("1", 0, epoch).value == pytest.approx(want, rel=1e-5)
    finally:
        recorder.close()


def test_channel_counts_and_indices_must_be_ints():
    model = Net()
    images = torch.randn(2, 3, 16, 16)
    for spec, message in (
        ([1.7], r"layer 'relu2': channel must be an int .*got float 1\.7"),
        ([True], r"layer 'relu2': channel must be an int .*got bool True"),
        ([torch.tensor(1.0)], r"layer 'relu2': channel must be an int .*torch\.float32"),
        (True, r"layer 'relu2': the number of channels to record must be an int .*got bool True"),
        (np.bool_(True), r"the number of channels to record must be an int .*got bool True"),
        (2.0, r"channels of layer 'relu2': expected an int \(a count of evenly spaced channels\) or a list"),
        ("3", r"channels of layer 'relu2': expected an int"),
    ):
        with pytest.raises(TypeError, match=message):
            FeatureEvolutionRecorder(model, images, {"relu2": spec}, projection=None)
    with FeatureEvolutionRecorder(model, images, {"relu2": np.int64(3), "conv1": np.array([0, 5])},
                                  projection=None, epochs=None) as recorder:
        assert recorder.channels == {"relu2": [0, 4, 7], "conv1": [0, 5]}
        assert all(type(c) is int for channels in recorder.channels.values() for c in channels)
        with pytest.raises(TypeError, match="force must be True or False"):
            recorder.record(0, force="no")
        assert recorder.record(torch.tensor(1)) and recorder.result().epochs == [1]


def test_the_recorders_arguments_are_checked_when_it_is_made_not_mid_training():
    model = Net()
    images = torch.randn(2, 3, 16, 16)
    make = lambda **kw: FeatureEvolutionRecorder(model, kw.pop("images", images), {"relu2": 2},  # noqa: E731
                                                 projection=None, **kw)
    pixels = (images.clamp(0, 1) * 255).to(torch.uint8)
    with pytest.raises(ValueError, match="expected a float tensor, got dtype torch.uint8"):
        make(images=pixels)
    broken = images.clone()
    broken[1, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="not finite .* in image 1 of 2"):
        make(images=broken)
    for kw, error, message in (
        ({"batch_size": 2.5}, TypeError, "batch_size must be an int >= 1, got float 2.5"),
        ({"batch_size": "8"}, TypeError, "batch_size must be an int >= 1"),
        ({"batch_size": 0}, ValueError, "batch_size must be an int >= 1, got 0"),
        ({"epochs": [1.5, 3]}, TypeError, "each of epochs must be an int"),
        ({"epochs": "12"}, TypeError, "epochs must be a sequence of ints"),
        ({"epochs": 5}, TypeError, "epochs must be a sequence of ints"),
        ({"on_record": 5}, TypeError, r"on_record must be None or a callable \(recorder, epoch\) -> None, got int 5"),
        ({"unit": "minutes"}, ValueError, "unit must be 'epoch' or 'step', got 'minutes'"),
    ):
        with pytest.raises(error, match=message):
            make(**kw)
    with make(epochs=(np.int64(2), torch.tensor(1)), unit="step", batch_size=np.int64(1)) as recorder:
        assert recorder.epochs == [1, 2] and recorder.batch_size == 1
        recorder.record(1)
        with pytest.raises(KeyError, match=r"channel 3 of layer 'relu2' was not recorded; recorded: "
                                           r"\{'relu2': \[0, 7\]\}"):
            recorder.result().values("relu2", 3)
        assert recorder.result().values("relu2", 7).shape == (1,)
