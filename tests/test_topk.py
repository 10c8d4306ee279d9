"""Top-k dataset patches: the kept entries are the true top-k, recomputable, batch-independent,
bounded, saved and resumed exactly; receptive-field crops agree with the deconvnet's support."""

from __future__ import annotations

import itertools
import json
import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from cnnwidgets import Probe
from cnnwidgets.methods.topk import (
    Box,
    TopKActivations,
    crop_receptive_field,
    iter_batches,
    receptive_field_box,
    scan_topk,
)

LAYERS = ["1", "4", "9"]  # conv1 ReLU (spatial), conv2 ReLU after a pool (spatial), a linear layer's ReLU (C,)


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Flatten(), nn.Dropout(0.2), nn.Linear(8 * 4 * 4, 12), nn.ReLU(), nn.Linear(12, 3),
    ).eval()


def data(n: int = 40, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 16, 16, generator=g), torch.randint(0, 3, (n,), generator=g)


def assert_same(a: TopKActivations, b: TopKActivations, exact: bool = True) -> None:
    assert a.layers == b.layers and a.consumed == b.consumed
    for name in a.layers:
        if exact:
            assert torch.equal(a.values[name], b.values[name])
        else:
            torch.testing.assert_close(a.values[name], b.values[name], rtol=1e-5, atol=1e-6)
        assert torch.equal(a.image_indices[name], b.image_indices[name])
        assert torch.equal(a.positions[name], b.positions[name])
        assert torch.equal(a.labels[name], b.labels[name])
    assert sorted(a.images) == sorted(b.images)
    for i in a.images:
        assert torch.equal(a.images[i], b.images[i])


def full_activations(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    with Probe(model, channels_last=False) as probe:
        return {k: v.clone() for k, v in probe.capture(x, LAYERS).items()}


# ---------------------------------------------------------------------------- correctness
def test_recorded_activation_equals_recomputed_at_that_image_and_position():
    model = small_net()
    x, y = data()
    loader = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=False)
    topk = scan_topk(model, loader, LAYERS, k=4, progress=False)
    assert topk.complete and topk.consumed == len(x)
    with Probe(model) as probe:
        for name in LAYERS:
            for channel in range(topk.num_channels(name)):
                for entry in topk.entries(name, channel):
                    single = probe.capture(x[entry.image_index:entry.image_index + 1], name)[name][0, channel]
                    if single.dim() == 0:
                        single = single[None, None]
                        assert (entry.row, entry.col) == (0, 0)
                    torch.testing.assert_close(single[entry.row, entry.col].item(), entry.value, rtol=1e-5, atol=1e-6)
                    # per_image: the kept unit is that image's strongest unit of the channel
                    torch.testing.assert_close(single.max().item(), entry.value, rtol=1e-5, atol=1e-6)
                    assert entry.label == int(y[entry.image_index])
                    assert torch.equal(topk.images[entry.image_index], x[entry.image_index])


@pytest.mark.parametrize("per_image", [True, False])
def test_lists_are_sorted_bounded_and_the_true_top_k(per_image):
    model = small_net()
    x, _ = data(30)
    k = 5
    topk = scan_topk(model, x, LAYERS, k=k, per_image=per_image, batch_size=8, progress=False)
    acts = full_activations(model, x)
    for name in LAYERS:
        values = topk.values[name]
        assert values.shape == (topk.num_channels(name), k)  # bounded by k whatever the data size
        assert torch.all(values[:, :-1] >= values[:, 1:]), "each channel's list must be descending"
        act = acts[name]
        if act.dim() == 2:
            act = act[:, :, None, None]
        for channel in range(act.shape[1]):
            per_channel = act[:, channel]
            candidates = per_channel.flatten(1).amax(dim=1) if per_image else per_channel.flatten()
            expected = torch.sort(candidates, descending=True).values[:k]
            torch.testing.assert_close(values[channel], expected, rtol=1e-5, atol=1e-6)
            entries = topk.entries(name, channel)
            assert len(entries) == k
            if per_image:
                assert len({e.image_index for e in entries}) == k, "one entry per image"


def test_fewer_units_than_k_leaves_unused_slots():
    x, _ = data(3)
    topk = scan_topk(small_net(), x, ["9"], k=5, progress=False)
    assert len(topk.entries("9", 0)) == 3
    assert torch.all(topk.image_indices["9"][:, 3:] == -1)
    assert torch.all(torch.isinf(topk.values["9"][:, 3:]))


def test_batching_and_data_form_do_not_change_the_result():
    model = small_net()
    x, y = data(33)
    one = scan_topk(model, (x, y), LAYERS, k=4, batch_size=64, progress=False)
    chunks = scan_topk(model, (x, y), LAYERS, k=4, batch_size=5, progress=False)
    singles = scan_topk(model, [(img, int(label)) for img, label in zip(x, y)], LAYERS, k=4, batch_size=7,
                        progress=False)
    assert_same(one, chunks, exact=False)
    assert_same(one, singles, exact=False)


def test_memory_is_bounded_by_k_times_channels():
    model = small_net()
    x, _ = data(64)
    k = 2
    seen = []
    topk = scan_topk(model, x, LAYERS, k=k, batch_size=8, progress=False,
                     callback=lambda state: seen.append(len(state.images)))
    channels = sum(topk.num_channels(n) for n in LAYERS)
    assert max(seen) <= k * channels
    referenced = set(torch.cat([topk.image_indices[n].flatten() for n in LAYERS]).tolist())
    assert set(topk.images) == referenced  # exactly the referenced images, no more
    lean = scan_topk(model, x, LAYERS, k=k, keep_images=False, progress=False)
    assert lean.images == {}
    with pytest.raises(ValueError, match="not kept"):
        lean.patches("4", 0)
    # the data set itself is an accepted source
    for a, b in zip(lean.patches("4", 0, images=x), topk.patches("4", 0)):
        assert torch.equal(a.pixels, b.pixels)
    # another data set than the one scanned: named, not an IndexError from inside, nor wrong crops
    last = max(e.image_index for e in lean.entries("4", 0))
    with pytest.raises(IndexError, match=f"images holds no item {last}, .*pass the data set that was scanned"):
        lean.source_images("4", 0, images=x[:last])
    with pytest.raises(ValueError, match=r"has shape \(3, 32, 32\), the scanned images \(3, 16, 16\)"):
        lean.source_images("4", 0, images=torch.zeros(len(x), 3, 32, 32))


# ---------------------------------------------------------------------------- saving and resuming
class Interrupted(Exception):
    pass


def interrupting(batches, after: int, error: type[BaseException] = Interrupted):
    for i, batch in enumerate(batches):
        if i == after:
            raise error("interrupted")
        yield batch


@pytest.mark.parametrize("error", [Interrupted, KeyboardInterrupt])
def test_resumed_scan_equals_uninterrupted_one(tmp_path, error):
    model = small_net()
    x, y = data(50)
    batches = [(x[i:i + 8], y[i:i + 8]) for i in range(0, 50, 8)]
    whole = scan_topk(model, batches, LAYERS, k=4, progress=False)
    path = tmp_path / "scan.pt"
    with pytest.raises(error):
        scan_topk(model, interrupting(batches, 3, error), LAYERS, k=4, checkpoint=path, progress=False)
    partial = TopKActivations.load(path)
    assert partial.consumed == 24 and not partial.complete
    meta = json.loads(torch.load(path, weights_only=True)["meta"])
    assert meta["consumed"] == 24
    with Probe(model, input_size=(3, 16, 16)) as probe:
        probe.layers
        probe.reset_stats()
        resumed = scan_topk(probe, batches, LAYERS, k=4, checkpoint=path, progress=False)
        assert probe.stats.forwards == 4  # only the 4 remaining batches ran through the model
        assert resumed.complete
        assert_same(whole, resumed)
        probe.reset_stats()
        again = scan_topk(probe, batches, LAYERS, k=4, checkpoint=path, progress=False)
        assert probe.stats.forwards == 0, "a finished scan on disk is loaded, not repeated"
    assert_same(whole, again)


def test_stop_after_then_resume_in_memory_and_on_disk(tmp_path):
    model = small_net()
    x, y = data(45)
    whole = scan_topk(model, (x, y), LAYERS, k=3, batch_size=10, progress=False)
    part = scan_topk(model, (x, y), LAYERS, k=3, batch_size=10, stop_after=17, progress=False)
    assert part.consumed == 17 and not part.complete
    part.save(tmp_path / "part.pt")
    finished = scan_topk(model, (x, y), LAYERS, k=3, batch_size=10, resume=part, progress=False)
    # the batch that was cut at 17 is split differently from the uninterrupted run: equal up to rounding
    assert_same(whole, finished, exact=False)
    from_disk = scan_topk(model, (x, y), LAYERS, k=3, batch_size=10, checkpoint=tmp_path / "part.pt", progress=False)
    assert_same(whole, from_disk, exact=False)


def test_stop_after_and_checkpoint_every_must_be_counts():
    model = small_net()
    x, _ = data(8)
    for kw, error, message in (
        ({"stop_after": -1}, ValueError, r"stop_after \(None: scan everything\) must be an int >= 1, got -1"),
        ({"stop_after": 0}, ValueError, "stop_after .* must be an int >= 1, got 0"),
        ({"stop_after": 2.5}, TypeError, "stop_after .* must be an int >= 1, got float 2.5"),
        ({"stop_after": "3"}, TypeError, "stop_after .* must be an int >= 1"),
        ({"stop_after": True}, TypeError, "stop_after .* must be an int >= 1, got bool"),
        ({"checkpoint_every": 2.5}, TypeError, "checkpoint_every must be an int >= 1"),
    ):
        with pytest.raises(error, match=message):
            scan_topk(model, x, LAYERS, k=2, progress=False, **kw)
    part = scan_topk(model, x, LAYERS, k=2, stop_after=np.int64(3), progress=False)
    assert part.consumed == 3
    with pytest.raises(ValueError, match="k=2, per_image=True; this call asks for .*k=3.*leave resume out to start over"):
        scan_topk(model, x, LAYERS, k=3, resume=part, progress=False)


def test_k_and_batch_size_are_counts_of_any_int_type_and_wrong_types_are_type_errors():
    model = small_net()
    x, _ = data(8)
    reference = scan_topk(model, x, LAYERS, k=3, batch_size=4, progress=False)
    for k, batch_size in ((np.int64(3), np.int32(4)), (torch.tensor(3), torch.tensor(4))):
        other = scan_topk(model, x, LAYERS, k=k, batch_size=batch_size, progress=False)
        assert other.k == 3 and type(other.k) is int
        assert_same(reference, other)
        assert TopKActivations(LAYERS, k).k == 3
    for kw, error, message in (
        ({"k": True}, TypeError, "k must be an int >= 1, got bool True"),
        ({"k": 3.0}, TypeError, "k must be an int >= 1, got float 3.0"),
        ({"k": 0}, ValueError, "k must be an int >= 1, got 0"),
        ({"batch_size": True}, TypeError, "batch_size must be an int >= 1, got bool True"),
        ({"batch_size": 1.0}, TypeError, "batch_size must be an int >= 1, got float 1.0"),
        ({"batch_size": 0}, ValueError, "batch_size must be an int >= 1, got 0"),
    ):
        with pytest.raises(error, match=message):
            scan_topk(model, x, LAYERS, **{"progress": False, **kw})
        if "k" in kw:
            with pytest.raises(error, match=message):
                TopKActivations(LAYERS, kw["k"])
        else:
            with pytest.raises(error, match=message):
                next(iter_batches(x, kw["batch_size"]))


def test_checkpoint_of_another_scan_model_or_data_is_refused(tmp_path):
    model = small_net()
    x, y = data(20)
    path = tmp_path / "scan.pt"
    scan_topk(model, x, LAYERS, k=3, stop_after=8, checkpoint=path, progress=False)
    with pytest.raises(ValueError, match="k=3"):
        scan_topk(model, x, LAYERS, k=4, checkpoint=path, progress=False)
    with pytest.raises(ValueError, match="layers"):
        scan_topk(model, x, ["4"], k=3, checkpoint=path, progress=False)
    other = small_net()
    with torch.no_grad():
        other[0].bias.add_(1.0)
    with pytest.raises(ValueError, match="weights differ"):
        scan_topk(other, x, LAYERS, k=3, checkpoint=path, progress=False)
    with pytest.raises(ValueError, match="same image"):
        scan_topk(model, x.flip(0), LAYERS, k=3, checkpoint=path, progress=False)
    with pytest.raises(ValueError, match="holds 4 images"):
        scan_topk(model, x[:4], LAYERS, k=3, checkpoint=path, progress=False)


# ---------------------------------------------------------------------------- geometry
def test_crop_pads_outside_the_image_and_marks_it():
    image = torch.arange(2 * 5 * 6, dtype=torch.float32).reshape(2, 5, 6)
    patch = crop_receptive_field(image, Box(-1, 4, 3, 3), fill=-7.0)
    assert patch.pixels.shape == (2, 3, 3)
    assert patch.valid.tolist() == [[False] * 3, [True, True, False], [True, True, False]]
    assert torch.equal(patch.pixels[:, 1:, :2], image[:, 0:2, 4:6])
    assert torch.all(patch.pixels[:, 0] == -7.0) and torch.all(patch.pixels[:, :, 2] == -7.0)
    assert Box(-1, 4, 3, 3).clip(5, 6) == Box(0, 4, 2, 2)


def test_box_orders_rows_first_as_fields_and_xywh_as_the_explorer():
    box = Box(top=5, left=76, height=10, width=12)
    assert box.as_tuple() == (5, 76, 10, 12)
    x, y, w, h = box.xywh()
    assert (x, y, w, h) == (76, 5, 12, 10)
    image = torch.zeros(1, 32, 96)
    image[0, y:y + h, x:x + w] = 1  # the explorer's box covers exactly the box's pixels
    assert torch.equal(crop_receptive_field(image, box).pixels, image[:, 5:15, 76:88])


@pytest.mark.filterwarnings("ignore::cnnwidgets.methods.gradients.InactiveChannelWarning")  # units chosen by place
def test_receptive_field_box_contains_the_deconvnet_projection_support():
    """The deconvnet projection of a unit is zero outside the unit's receptive field, and the
    projection of a border unit reaches the image border (the box is right, not too big)."""
    from cnnwidgets.methods.gradients import project_channel

    model = small_net()
    x, _ = data(4)
    with Probe(model) as probe:
        info = probe.describe((3, 16, 16))["4"]
        assert (info.receptive_field, info.jump) == (8, 2)
        for row, col in [(0, 0), (3, 5), (7, 7)]:
            proj = project_channel(probe, x, "4", 2, unit=(row, col)).abs().sum(dim=1)  # (N, H, W)
            box = receptive_field_box(info, row, col, (16, 16)).clip(16, 16)
            outside = proj.clone()
            outside[:, box.top:box.bottom, box.left:box.right] = 0
            assert torch.all(outside == 0)
            nonzero = proj.sum(dim=0).nonzero()
            if len(nonzero):
                assert nonzero[:, 0].min() >= box.top and nonzero[:, 0].max() < box.bottom
    whole = receptive_field_box(None, 0, 0, (3, 16, 16))
    assert whole == Box(0, 0, 16, 16)


@pytest.mark.filterwarnings("ignore::cnnwidgets.methods.InactiveChannelWarning")  # zero maps compared too
def test_batched_projector_equals_project_channel_image_by_image():
    from cnnwidgets.methods.gradients import project_channel
    from cnnwidgets.methods.topk import deconvnet_projector

    model = small_net()
    x, _ = data(3)
    with Probe(model) as probe:
        for layer, units in (("4", [[0, 0], [5, 2], [7, 7]]), ("9", [[0, 0]] * 3)):
            channels = torch.tensor([1, 4, 1])
            together = deconvnet_projector(probe, x, layer, channels, torch.tensor(units))
            for n in range(3):
                alone = project_channel(probe, x[n:n + 1], layer, int(channels[n]), unit=tuple(units[n]))
                torch.testing.assert_close(together[n:n + 1], alone, rtol=1e-5, atol=1e-7)
        with pytest.raises(ValueError, match="outside"):
            deconvnet_projector(probe, x[:1], "4", torch.tensor([0]), torch.tensor([[8, 0]]))


def test_patches_and_projections_follow_the_entries():
    model = small_net()
    x, _ = data(20)
    topk = scan_topk(model, x, LAYERS, k=3, progress=False)
    patches = topk.patches("4", 1)
    projections = topk.projections(model, "4", 1)
    entries = topk.entries("4", 1)
    for entry, patch, proj in zip(entries, patches, projections):
        box = topk.box("4", entry)
        assert patch.box == box and patch.pixels.shape == (3, 8, 8)
        inside = box.clip(16, 16)
        top, left = inside.top - box.top, inside.left - box.left
        assert torch.equal(patch.pixels[:, top:top + inside.height, left:left + inside.width],
                           x[entry.image_index, :, inside.top:inside.bottom, inside.left:inside.right])
        assert proj.pixels.abs().sum() > 0
    assert topk.projections(model, "4", 1, projection="patch") is None
    calls = []

    def fake(probe, images, layer, channels, units):
        calls.append((layer, channels.tolist(), units.clone()))
        return torch.ones_like(images)

    custom = topk.projections(model, "4", 1, projection=fake)
    assert calls and calls[0][:2] == ("4", [1] * len(entries)) and calls[0][2].tolist() == [[e.row, e.col] for e in entries]
    assert all(torch.all(p.pixels[:, p.valid] == 1) for p in custom)
    with pytest.raises(ValueError, match="weights differ"):
        other = small_net()
        with torch.no_grad():
            other[3].weight.mul_(2)
        topk.projections(other, "4", 1)


def test_projections_of_a_channel_that_never_fires_say_why_they_are_blank():
    from cnnwidgets.methods.gradients import InactiveChannelWarning

    model = small_net()
    with torch.no_grad():  # conv2's channel 2 below zero everywhere: read before its ReLU
        model[3].bias[2] = -100.0
    x, _ = data(6)
    topk = scan_topk(model, x, ["3"], k=2, progress=False)
    assert all(e.value < 0 for e in topk.entries("3", 2))
    with pytest.warns(InactiveChannelWarning, match=r"channel 2 of '3': 2 of its 2 top entries have values <= 0") as seen:
        blank = topk.projections(model, "3", 2)
    assert seen[0].filename == __file__  # attributed to the caller's line
    assert all(float(p.pixels.abs().sum()) == 0 for p in blank)
    with warnings.catch_warnings():
        warnings.simplefilter("error", InactiveChannelWarning)
        assert any(float(p.pixels.abs().sum()) > 0 for p in topk.projections(model, "3", 1))
        # weights that differ from the scanned ones are refused first, with no word about the values
        with torch.no_grad():
            model[0].weight.mul_(2)
        with pytest.raises(ValueError, match="weights differ"):
            topk.projections(model, "3", 2)


# ---------------------------------------------------------------------------- errors and inputs
def test_errors_are_specific():
    model = small_net()
    x, _ = data(4)
    with pytest.raises(KeyError, match="Did you mean"):
        scan_topk(model, x, ["44"], progress=False)
    with pytest.raises(ValueError, match="k must be"):
        scan_topk(model, x, LAYERS, k=0, progress=False)
    with pytest.raises(TypeError, match="item 0"):
        scan_topk(model, ["not an image"], LAYERS, progress=False)
    with pytest.raises(ValueError, match="size of the first batch"):
        scan_topk(model, [x, torch.randn(2, 3, 20, 20)], LAYERS, progress=False)
    with pytest.raises(ValueError, match="holds no images"):
        scan_topk(model, [], LAYERS, progress=False)
    topk = scan_topk(model, x, LAYERS, k=2, progress=False)
    with pytest.raises(IndexError, match="out of range"):
        topk.entries("4", 8)
    with pytest.raises(TypeError, match="channel must be an int"):
        topk.entries("4", 1.0)
    assert topk.entries("4", np.int64(1)) == topk.entries("4", 1)  # a channel from numpy reads as an int
    with pytest.raises(KeyError, match="was not scanned"):
        topk.entries("7", 0)


def test_iter_batches_groups_single_images_and_keeps_integer_labels():
    x, y = data(5)
    out = list(iter_batches(zip(x, y.tolist()), batch_size=2))
    assert [b.shape[0] for b, _ in out] == [2, 2, 1]
    assert torch.equal(torch.cat([lab for _, lab in out]), y)
    out = list(iter_batches([(x[:3], torch.randn(3, 2))], batch_size=2))  # non-integer targets are dropped
    assert out[0][1] is None and out[0][0].shape[0] == 3
    assert len(list(itertools.islice(iter_batches(x, 2), 10))) == 3
    out = list(iter_batches(zip(x, y.numpy()), batch_size=5))  # labels read from a numpy array
    assert torch.equal(out[0][1], y)
    mixed = [(x[0], 1), (torch.randn(3, 10, 8), 2)]
    with pytest.raises(ValueError, match=r"different sizes \[\(3, 10, 8\), \(3, 16, 16\)\]"):
        list(iter_batches(mixed, batch_size=2))


# ---------------------------------------------------------------------------- real models
def tinyvgg_and_images(shared_data) -> tuple[nn.Module, torch.Tensor, torch.Tensor, list[str]]:
    """The trained TinyVGG (from the zoo), its 20 photos preprocessed, their labels and file stems."""
    from cnnwidgets.zoo.tinyvgg import load_tinyvgg

    folder = shared_data / "tinyvgg-cnn-explainer"
    bundle = load_tinyvgg(folder)
    paths = sorted((folder / "images").glob("*.jpeg"))
    prefixes = ["boat", "bug", "pizza", "pepper", "bus", "koala", "espresso", "panda", "orange", "car"]
    labels = torch.tensor([prefixes.index(p.stem.split("_")[0]) for p in paths])
    return bundle.model, bundle.batch([str(p) for p in paths]), labels, [p.stem for p in paths]


def test_tinyvgg_topk_figure_and_view(shared_data):
    from cnnwidgets.app.experiments import plot_topk, topk_view
    model, x, labels, _ = tinyvgg_and_images(shared_data)
    topk = scan_topk(model, (x, labels), ["relu_1_1", "relu_2_2"], k=4, batch_size=8, progress=False)
    with Probe(model) as probe:
        for name in topk.layers:
            for entry in topk.entries(name, 3):
                value = probe.capture(x[entry.image_index:entry.image_index + 1], name)[name][0, 3, entry.row, entry.col]
                torch.testing.assert_close(value.item(), entry.value, rtol=1e-5, atol=1e-6)
    fig = plot_topk(topk, "relu_2_2", 2, model)
    assert len(fig.axes) >= 2
    view = topk_view(topk, model, denormalize=lambda t: t.permute(1, 2, 0))
    view.layer = "relu_2_2"
    view.channel = 4
    assert not view.error and view.image_shape[2] == 3
    assert "relu_2_2 channel 4" in view.status
    assert np.isfinite(topk.values["relu_2_2"][:, 0].numpy()).all()


def test_shapesnet_topk_on_generated_shapes():
    from cnnwidgets.app.experiments import topk_view
    from cnnwidgets.zoo import ShapesDataset, load_default

    bundle = load_default()
    dataset = ShapesDataset(160, seed=7)
    layers = ["features.relu2", "features.relu4", "global_pool"]
    topk = scan_topk(bundle.model, DataLoader(dataset, batch_size=80), layers, k=4, progress=False)
    x, labels = dataset.tensors()
    assert all(e.label == int(labels[e.image_index]) for e in topk.entries("global_pool", 3))
    with Probe(bundle.model) as probe:
        acts = probe.capture(x, layers)
        for name in layers:
            for channel in range(0, topk.num_channels(name), 7):
                for entry in topk.entries(name, channel):
                    value = acts[name][entry.image_index, channel]
                    value = value[entry.row, entry.col] if value.dim() == 2 else value.reshape(())
                    torch.testing.assert_close(value.item(), entry.value, rtol=1e-4, atol=1e-5)
        projections = topk.projections(probe, "features.relu4", 5)
    assert all(p.pixels.abs().sum() > 0 for p in projections)
    view = topk_view(topk, bundle.model, denormalize=bundle.denormalize, class_names=bundle.classes)
    view.layer = "features.relu4"
    view.channel = 5
    assert not view.error and "projections" in view.status
    first = topk.entries("features.relu4", 5)[0]
    assert f">{bundle.classes[first.label]} ({first.label})</td>" in view.caption  # names, not only indices
    bare = topk_view(topk, None, images=dataset)
    bare.layer, bare.channel = "features.relu4", 5
    assert f">{first.label}</td>" in bare.caption and bundle.classes[first.label] not in bare.caption
    bare.close()


def test_the_view_reads_patches_from_a_loader_that_kept_its_order_and_says_why_not_otherwise():
    from cnnwidgets.app.experiments import topk_view
    from cnnwidgets.zoo import ShapesDataset, load_default

    bundle = load_default()
    dataset = ShapesDataset(48, seed=3)
    loader = DataLoader(dataset, batch_size=16)
    topk = scan_topk(bundle.model, loader, ["features.relu2"], k=3, keep_images=False, progress=False)
    shown = {}
    for name, images in (("data set", dataset), ("loader", loader)):
        view = topk_view(topk, None, images=images)
        view.layer, view.channel = "features.relu2", 2
        shown[name] = view
    assert not shown["loader"].error and shown["loader"].status == shown["data set"].status
    assert shown["loader"]._image.value == shown["data set"]._image.value  # the same patches
    # a shuffled loader is refused when the view is made, not when it first draws
    with pytest.raises(TypeError, match="does not read its data set in order"):
        topk_view(topk, None, images=DataLoader(dataset, shuffle=True))
    with pytest.raises(TypeError, match="by index .* got int"):
        topk.patches("features.relu2", 2, images=7)


def test_closing_a_view_releases_the_probe_it_made_and_its_widgets():
    import gc
    import weakref

    from cnnwidgets.app.experiments import topk_view

    model = small_net()
    x, labels = data(16)
    topk = scan_topk(model, (x, labels), ["1"], k=2, progress=False)

    def open_and_close():
        view = topk_view(topk, model)
        probe = view.controller.probe
        view.close()
        assert probe.closed
        return weakref.ref(view), weakref.ref(probe)

    refs = open_and_close()
    gc.collect()
    assert refs[0]() is None and refs[1]() is None


def test_a_layer_that_never_runs_is_named_as_such():
    from tests.helpers import AuxiliaryHeadNet

    with pytest.raises(ValueError, match="'aux' does not run in this model's forward pass"):
        scan_topk(AuxiliaryHeadNet().eval(), torch.rand(2, 3, 16, 16), ["aux"], k=1, progress=False)


def test_a_checkpoint_in_a_missing_folder_is_refused_before_scanning(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU()).eval()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        scan_topk(model, torch.randn(8, 3, 16, 16), ["1"], k=2, batch_size=4,
                  checkpoint=tmp_path / "missing" / "scan.pt", progress=False)


def test_layers_must_be_names_and_images_finite():
    model = small_net()
    x, y = data(6)
    with pytest.raises(TypeError, match="layer names are strings, got ReLU"):
        scan_topk(model, x, model[1], progress=False)
    with pytest.raises(TypeError, match="layer names are strings, got int"):
        scan_topk(model, x, 1, progress=False)
    with pytest.raises(TypeError, match="layer names are strings, got int"):
        TopKActivations(["1", 4])
    bad = x.clone()
    bad[3, 1, 2, 2] = float("nan")  # would otherwise rank first for every channel
    with pytest.raises(ValueError, match=r"1 value that is not finite \(NaN or inf\), in image 3 of 6"):
        scan_topk(model, bad, LAYERS, progress=False)


def test_pairs_with_any_per_image_targets_and_their_length():
    x, y = data(10)
    batches = list(iter_batches((x, y.float()), batch_size=4))  # regression targets: images kept, no labels
    assert [b[0].shape[0] for b in batches] == [4, 4, 2] and all(b[1] is None for b in batches)
    torch.testing.assert_close(torch.cat([b[0] for b in batches]), x)
    labelled = list(iter_batches((x, y.numpy()), batch_size=4))
    assert torch.equal(torch.cat([b[1] for b in labelled]), y)
    with pytest.raises(ValueError, match="10 images but 9 labels"):
        list(iter_batches((x, y[:9])))
    two_batches = list(iter_batches((x[:3], x[3:])))  # a tuple of two batches is not a pair
    assert [b[0].shape[0] for b in two_batches] == [3, 7]


def test_a_layer_whose_first_dimension_is_not_the_batch_is_refused_by_name():
    class Volume(nn.Module):  # a Conv3d reads a (1, 1, H, W) batch as one unbatched volume
        def __init__(self) -> None:
            super().__init__()
            self.c = nn.Conv3d(1, 8, 3, padding=1)
            self.fc = nn.Linear(8, 3)

        def forward(self, x):
            return self.fc(self.c(x).mean(dim=(1, 2, 3)).reshape(-1, 8))

    with pytest.raises(ValueError, match=r"layer 'c' has output shape \(8, 1, 12, 12\) \(whole output: its first "
                                         r"dimension is not the batch\); top-k patches need"):
        scan_topk(Volume().eval(), torch.rand(1, 1, 12, 12), ["c"], progress=False)


def test_the_layer_description_rebuilt_from_a_scan_knows_its_convolutions():
    x, _ = data(3)
    topk = scan_topk(small_net(), x, ["0", "1"], k=2, progress=False)
    assert topk.layer_info("0").is_conv and not topk.layer_info("1").is_conv
    del topk.geometry["0"]["conv"]  # a scan saved before the flag was kept: read from the class name
    assert topk.layer_info("0").is_conv


# ---------------------------------------------------------------------------- argument checks
def test_flags_must_be_bools_not_strings_that_read_as_true():
    model = small_net()
    x, _ = data(4)
    for name in ("per_image", "keep_images", "progress"):
        with pytest.raises(TypeError, match=f"{name} must be True or False, got str 'False'"):
            scan_topk(model, x, LAYERS, **{"progress": False, name: "False"})
        with pytest.raises(TypeError, match=f"{name} must be True or False, got int 1"):
            scan_topk(model, x, LAYERS, **{"progress": False, name: 1})
    for name in ("per_image", "keep_images"):
        with pytest.raises(TypeError, match=f"{name} must be True or False, got str 'no'"):
            TopKActivations(LAYERS, 2, **{name: "no"})
    lean = scan_topk(model, x, LAYERS, k=2, per_image=np.bool_(False), keep_images=False, progress=False)
    assert lean.per_image is False and lean.keep_images is False and not lean.images


def test_resume_must_be_a_scan_and_callback_callable_checked_before_scanning():
    model = small_net()
    x, _ = data(4)
    for bad, got in (("abc", "got str"), (5, "got int")):
        with pytest.raises(TypeError, match=f"resume must be None or an unfinished TopKActivations .*{got}; to "
                                            "continue from a file, pass its path as checkpoint="):
            scan_topk(model, x, LAYERS, resume=bad, progress=False)
    calls = []

    def data_that_counts():
        calls.append(1)
        yield x

    with pytest.raises(TypeError, match=r"callback must be None or a callable \(it receives the TopKActivations "
                                        r"state after every batch\), got int 5"):
        scan_topk(model, data_that_counts(), LAYERS, callback=5, progress=False)
    assert not calls  # refused before the data was read
    with pytest.raises(TypeError, match="checkpoint must be None or a file path .*got int"):
        scan_topk(model, x, LAYERS, checkpoint=5, progress=False)


def test_a_checkpoint_that_is_a_folder_or_not_a_torch_file_is_named_as_such(tmp_path):
    model = small_net()
    x, _ = data(4)
    with pytest.raises(IsADirectoryError, match=f"'{tmp_path}' is a folder, not a cnnwidgets top-k file; pass a file "
                                                "path such as"):
        scan_topk(model, x, LAYERS, checkpoint=tmp_path, progress=False)
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    for path in (text, empty):
        with pytest.raises(ValueError, match=f"{path.name} is not a cnnwidgets top-k file .*torch.load cannot read it"):
            scan_topk(model, x, LAYERS, checkpoint=path, progress=False)
        with pytest.raises(ValueError, match="is not a cnnwidgets top-k file"):
            TopKActivations.load(path)
    assert text.read_text() == "hello\n"  # not overwritten
    with pytest.raises(FileNotFoundError):
        TopKActivations.load(tmp_path / "missing.pt")


def test_channels_last_images_are_named_as_such():
    model = small_net()
    x, _ = data(4)
    nhwc = x.permute(0, 2, 3, 1)
    for images in (nhwc, list(nhwc), [(image, 0) for image in nhwc]):
        with pytest.raises(ValueError, match=r"looks like \(N, H, W, C\) = \(4, 16, 16, 3\).*x.permute\(0, 3, 1, 2\)"):
            scan_topk(model, images, LAYERS, progress=False)


def test_nan_activations_are_refused_not_kept_as_the_strongest():
    model = small_net()
    with torch.no_grad():
        model[0].weight[0, 0, 0, 0] = float("nan")
    x, _ = data(4)
    with pytest.raises(ValueError, match=r"a top-k scan needs finite activations, but the model's activations at "
                                         r"layer '1' are not finite .*has training diverged\?"):
        scan_topk(model, x, LAYERS, progress=False)
    state = TopKActivations(LAYERS, 2)
    with Probe(model) as probe, pytest.raises(ValueError, match="not finite"):
        state.update(probe, x)
    assert state.consumed == 0  # the update is atomic


def test_a_layer_with_an_empty_feature_map_is_refused():
    from tests.test_layer_geometry import EMPTY_ACT, empty_branch

    model, x = empty_branch(), torch.rand(4, 3, 32, 32)  # layer 'act' is (8, 0, 0) at 32 x 32
    with pytest.raises(ValueError, match=EMPTY_ACT):
        scan_topk(model, x, ["pool", "act"], k=2, progress=False)  # was a raw IndexError from max
    topk = scan_topk(model, x, ["pool"], k=2, progress=False)
    assert topk.num_channels("pool") == 8 and len(topk.entries("pool", 0)) == 2


def test_sparse_tensors_are_refused_with_what_to_give():
    dense = torch.randn(4, 3, 8, 8)
    # was: torch's NotImplementedError ("aten::as_strided ... SparseCPU") when the batch was sliced
    with pytest.raises(TypeError, match=r"data is a tensor of layout torch.sparse_coo .*tensor.to_dense\(\)"):
        list(iter_batches(dense.to_sparse(), batch_size=2))
    with pytest.raises(TypeError, match=r"item 1 of the data is a tensor of layout torch.sparse_coo"):
        list(iter_batches([dense[:2], dense[2:].to_sparse()], batch_size=2))
    assert [b.shape[0] for b, _ in iter_batches(dense, batch_size=3)] == [3, 1]
