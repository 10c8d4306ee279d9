"""The zoo: generated dataset, embedded ShapesNet, samples, TinyVGG, ZFNet, torchvision loader."""

from __future__ import annotations

import datetime
import json
import os
import re
import socket
import time
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

import cnnwidgets.zoo as zoo
from cnnwidgets.zoo import shapes
from cnnwidgets.zoo.bundle import Bundle
from cnnwidgets.zoo.gallery import SAMPLE_SHAPES, SAMPLE_SPECS, render_sample
from cnnwidgets.zoo.pretrained import WeightsUnavailableError, cached_weights_path, load_torchvision
from cnnwidgets.zoo.train import HELD_OUT_SEED, TrainEvent, evaluate, train_shapesnet

FRESH_SEED = 777_777  # neither the training seed (0) nor the held-out seed of the training script


@pytest.fixture(scope="module")
def default_bundle() -> Bundle:
    return zoo.load_default()


# --------------------------------------------------------------------------- dataset
def test_dataset_is_deterministic_and_independent_of_length_and_order():
    images, labels = shapes.make_images(300, seed=5)
    again, labels_again = shapes.make_images(300, seed=5)
    assert images.dtype == np.uint8 and images.shape == (300, 64, 64, 3)
    assert np.array_equal(images, again) and np.array_equal(labels, labels_again)
    ds = shapes.ShapesDataset(600, seed=5, normalized=False)
    for i in (299, 0, 255, 256, 123):  # out of order, across the chunk boundary
        image, label = ds[i]
        assert np.array_equal(image, images[i]) and label == labels[i]
    tail, tail_labels = shapes.make_images(10, seed=5, start=250)
    assert np.array_equal(tail, images[250:260]) and np.array_equal(tail_labels, labels[250:260])
    other, _ = shapes.make_images(300, seed=6)
    assert not np.array_equal(images, other)


def test_dataset_labels_are_balanced_and_images_varied():
    images, labels = shapes.make_images(1000, seed=1)
    counts = np.bincount(labels, minlength=5)
    assert counts.min() >= 190 and counts.max() <= 210
    # Backgrounds and shapes vary: no two images are the same, and pixel statistics spread.
    assert len({im.tobytes() for im in images[:200]}) == 200
    assert images.reshape(1000, -1).mean(axis=1).std() > 15


def test_torch_dataset_and_make_batch_agree():
    ds = shapes.ShapesDataset(40, seed=3)
    x, y = shapes.make_batch(40, seed=3)
    assert x.shape == (40, 3, 64, 64) and x.dtype == torch.float32 and y.dtype == torch.int64
    item, label = ds[17]
    assert torch.equal(item, x[17]) and label == int(y[17])
    assert len(ds) == 40 and ds.classes == shapes.CLASSES
    with pytest.raises(IndexError):
        ds[40]
    xs, ys = ds.tensors()
    assert torch.equal(xs, x) and torch.equal(ys, y)


def test_dataset_rejects_bad_arguments():
    with pytest.raises(ValueError, match="size"):
        shapes.make_images(4, seed=0, size=8)
    with pytest.raises(ValueError, match="seed"):
        shapes.make_images(4, seed=-1)
    with pytest.raises(ValueError, match="unknown shape kind"):
        shapes.render_scene([shapes.ShapeSpec("hexagon", (32, 32), 10, 0, (1, 0, 0))])
    with pytest.raises(ValueError, match="size must be an int >= 16, got 8"):
        shapes.ShapesDataset(4, seed=0, size=8)
    with pytest.raises(ValueError, match=r"seed must be an int in \[0, 2\*\*64\), got -1"):
        shapes.ShapesDataset(4, seed=-1)


def test_shapes_are_where_the_spec_puts_them():
    spec = shapes.ShapeSpec("square", (20.0, 40.0), 12.0, 0.0, (1.0, 0.0, 0.0))
    image = shapes.render_scene([spec], seed=0, background=(0.0, 0.0, 1.0))
    assert image[40, 20, 0] > 200 and image[40, 20, 2] < 60  # centre is the shape's red
    assert image[5, 60, 0] < 60 and image[5, 60, 2] > 200  # far corner is the blue background


# --------------------------------------------------------------------------- default model
def test_default_bundle_fields(default_bundle):
    b = default_bundle
    assert isinstance(b.model, zoo.ShapesNet) and not b.model.training
    assert b.classes == list(shapes.CLASSES) and b.input_size == (3, 64, 64) and b.name == "shapesnet"
    assert "held-out" in b.weights
    names = dict(b.model.named_modules())
    for name in ("features.conv1", "features.relu1", "features.pool1", "features.conv4", "classifier"):
        assert name in names
    assert isinstance(names["features.relu1"], torch.nn.ReLU)
    path = zoo.shapesnet.default_weights_path()
    assert path.is_file() and len(path.read_bytes()) < 1_000_000


def test_default_model_under_a_probe(default_bundle):
    from cnnwidgets import ModelSnapshot, Probe

    model = default_bundle.model
    snapshot = ModelSnapshot.take(model)
    x = default_bundle.batch([zoo.sample_image("star"), zoo.sample_image("cross")])
    with Probe(model) as probe:
        got = probe.capture(x, ["features.relu1", "features.relu4"])
        logits = probe.logits(x)
        layers = probe.layers
    assert got["features.relu1"].shape == (2, 16, 64, 64) and got["features.relu4"].shape == (2, 64, 8, 8)
    assert layers["features.conv4"].receptive_field == 40  # as the ShapesNet docstring says
    with torch.no_grad():
        torch.testing.assert_close(logits, model(x), rtol=1e-4, atol=1e-4)
    snapshot.assert_unchanged(model)


def test_default_model_accuracy_on_fresh_held_out_images(default_bundle):
    accuracy = evaluate(default_bundle.model, n=500, seed=FRESH_SEED)
    assert accuracy >= 0.95


def test_preprocess_accepts_pil_numpy_and_float_tensors(default_bundle):
    images, _ = shapes.make_images(2, seed=9)
    expected = shapes.normalize(images[0])
    pre = default_bundle.preprocess
    from_numpy = pre(images[0])
    from_pil = pre(Image.fromarray(images[0]))
    from_float = pre(torch.from_numpy(images[0]).permute(2, 0, 1).float() / 255)
    for out in (from_numpy, from_pil, from_float):
        assert out.shape == (3, 64, 64) and out.dtype == torch.float32
        assert torch.allclose(out, expected, atol=1e-5)
    # Other sizes: shorter side -> 64, centre crop.
    wide = pre(Image.new("RGB", (128, 96), (255, 0, 0)))
    assert wide.shape == (3, 64, 64)
    red = (1.0 - shapes.MEAN[0]) / shapes.STD[0]
    assert torch.allclose(wide[0], torch.full((64, 64), red), atol=1e-4)
    with pytest.raises(ValueError, match="normalised"):
        pre(expected)  # an already-normalised tensor is refused, not silently double-normalised


def test_denormalize_inverts_preprocess(default_bundle):
    images, _ = shapes.make_images(3, seed=4)
    x = torch.stack([default_bundle.preprocess(im) for im in images])
    back = default_bundle.denormalize(x)
    assert back.shape == (3, 64, 64, 3) and back.dtype == np.float32
    assert np.allclose(back, images / 255.0, atol=1e-5)
    assert default_bundle.denormalize(x[0]).shape == (64, 64, 3)
    with pytest.raises(ValueError, match="3, H, W"):
        default_bundle.denormalize(torch.zeros(4, 64, 64))


def test_predict_gives_the_eval_answer_and_leaves_a_training_model_as_it_was():
    bundle = zoo.load_default()  # its own copy: the model is put in training mode below
    model = bundle.model
    image = zoo.sample_image("star")
    expected = bundle.predict(image, top_k=3)
    model.train()
    model.classifier.eval()  # mixed flags must come back mixed
    torch.manual_seed(0)
    for param in model.parameters():
        param.grad = torch.randn_like(param)
    state = {k: v.clone() for k, v in model.state_dict().items()}  # BatchNorm running stats and counters too
    assert any(k.endswith("num_batches_tracked") for k in state)
    flags = {name: module.training for name, module in model.named_modules()}
    grads = {name: (param.grad, param.grad.clone()) for name, param in model.named_parameters()}
    got = bundle.predict(image, top_k=3)
    assert [c for c, _ in got] == [c for c, _ in expected]
    assert np.allclose([p for _, p in got], [p for _, p in expected], rtol=0, atol=1e-5)
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in state.items())
    assert {name: module.training for name, module in model.named_modules()} == flags
    for name, param in model.named_parameters():
        assert param.grad is grads[name][0] and torch.equal(param.grad, grads[name][1]) and param.requires_grad
    # the same answer again: nothing was updated by the first call
    assert np.allclose([p for _, p in bundle.predict(image, top_k=3)], [p for _, p in expected], rtol=0, atol=1e-5)


def test_predict_and_batch_refuse_bad_arguments(default_bundle):
    image = zoo.sample_image("star")
    for topk, error in ((-1, ValueError), (0, ValueError), (2.5, TypeError), (True, TypeError), ("3", TypeError)):
        with pytest.raises(error, match="top_k must be an int >= 1"):
            default_bundle.predict(image, top_k=topk)
    assert len(default_bundle.predict(image, top_k=100)) == len(default_bundle.classes)
    with pytest.raises(TypeError, match="predict takes one image, got a list of 2"):
        default_bundle.predict([image, image])
    with pytest.raises(ValueError, match="batch needs at least one image, got an empty list"):
        default_bundle.batch([])


def test_batch_and_predict_take_a_shipped_samples_name_as_explore_does(default_bundle, tmp_path, monkeypatch):
    by_name = default_bundle.batch(["star", "cross"])
    by_image = default_bundle.batch([zoo.sample_image("star"), zoo.sample_image("cross")])
    assert torch.equal(by_name, by_image)
    assert default_bundle.predict("star") == default_bundle.predict(zoo.sample_image("star"))
    # a file of that name, where the user works, is the user's image
    monkeypatch.chdir(tmp_path)
    zoo.sample_image("circle").save(tmp_path / "star", format="PNG")
    assert torch.equal(default_bundle.batch("star"), default_bundle.batch(zoo.sample_image("circle")))
    with pytest.raises(FileNotFoundError, match="image file not found: 'no such sample'"):
        default_bundle.batch("no such sample")


def test_preprocess_and_denormalize_check_their_arguments():
    from cnnwidgets.zoo.bundle import Denormalize, ImagePreprocess

    for size in (0, -1):
        with pytest.raises(ValueError, match="size must be an int >= 1"):
            ImagePreprocess(size)
    with pytest.raises(TypeError, match="size must be an int >= 1, got float 2.5"):
        ImagePreprocess(2.5)
    with pytest.raises(ValueError, match="size must be at most 4096 px"):
        ImagePreprocess(100_000)
    with pytest.raises(ValueError, match="resize must be at most 4096 px"):
        ImagePreprocess(64, resize=100_000)
    with pytest.raises(ValueError, match=r"mean must be three numbers, one per RGB channel, got 2: \[0, 0\]"):
        ImagePreprocess(64, mean=(0, 0), std=(1, 1))
    with pytest.raises(ValueError, match=r"std\[0\] must be a finite number > 0, got 0"):
        ImagePreprocess(64, mean=(0, 0, 0), std=(0, 1, 1))
    with pytest.raises(ValueError, match=r"std\[2\] must be a finite number > 0, got -1"):
        ImagePreprocess(64, mean=(0, 0, 0), std=(1, 1, -1))
    with pytest.raises(ValueError, match=r"mean\[1\] must be a finite number"):
        ImagePreprocess(64, mean=(0, float("nan"), 0), std=(1, 1, 1))
    with pytest.raises(TypeError, match="mean must be three numbers, one per RGB channel, got str"):
        ImagePreprocess(64, mean="rgb", std=(1, 1, 1))
    with pytest.raises(ValueError, match="give both mean and std, or neither"):
        ImagePreprocess(64, mean=(0, 0, 0))
    with pytest.raises(ValueError, match=r"mean must be three numbers, one per RGB channel, got 1: \[0.5\]"):
        Denormalize((0.5,), (0.5,))
    with pytest.raises(ValueError, match=r"std\[1\] must be a finite number > 0"):
        Denormalize((0.5, 0.5, 0.5), (0.5, 0.0, 0.5))
    with pytest.raises(ValueError, match="give both mean and std, or neither"):
        Denormalize((0.5, 0.5, 0.5), None)
    # arrays and tensors of three values are fine, and preprocessing gives finite values
    pre = ImagePreprocess(16, mean=np.array([0.5, 0.5, 0.5]), std=torch.tensor([0.25, 0.25, 0.25]))
    assert pre.mean == (0.5, 0.5, 0.5) and pre.std == (0.25, 0.25, 0.25)
    out = pre(Image.new("RGB", (16, 16), (255, 0, 0)))
    assert torch.isfinite(out).all() and torch.allclose(out[:, 0, 0], torch.tensor([2.0, -2.0, -2.0]))


# --------------------------------------------------------------------------- samples
def test_samples_are_shipped_and_match_their_specification():
    all_samples = zoo.samples()
    assert list(all_samples) == list(SAMPLE_SPECS)
    assert set(shapes.CLASSES) <= set(all_samples)
    for name, image in all_samples.items():
        assert image.mode == "RGB" and image.size == (64, 64)
        shipped = np.asarray(image).astype(int)
        fresh = np.asarray(render_sample(name)).astype(int)
        assert np.abs(shipped - fresh).max() <= 2, name
    assert np.array_equal(np.asarray(zoo.sample_image()), np.asarray(all_samples["star"]))
    with pytest.raises(KeyError, match="available: circle"):
        zoo.sample_image("hexagon")


def test_single_shape_samples_are_classified_as_their_class(default_bundle):
    for name in shapes.CLASSES:
        top = default_bundle.predict(zoo.sample_image(name), top_k=1)[0]
        assert top[0] == name, (name, top)


def test_scene_samples_rank_their_shapes_on_top(default_bundle):
    for name, present in SAMPLE_SHAPES.items():
        if len(present) < 2:
            continue
        top = [c for c, _ in default_bundle.predict(zoo.sample_image(name), top_k=len(present))]
        assert set(top) == set(present), (name, top)


# --------------------------------------------------------------------------- training
def _train_briefly(seed: int, **kwargs):
    return train_shapesnet(epochs=1, seed=seed, n_train=640, batch_size=32, max_steps=20, eval_n=0, **kwargs)


def test_training_is_reproducible():
    a = _train_briefly(seed=3)
    b = _train_briefly(seed=3)
    c = _train_briefly(seed=4)
    assert a.steps == b.steps == 20
    sa, sb, sc = a.model.state_dict(), b.model.state_dict(), c.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["features.conv1.weight"], sc["features.conv1.weight"])
    # Training moved the weights away from their (seeded) initialisation.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        init = zoo.ShapesNet().state_dict()
    assert not torch.equal(init["features.conv1.weight"], sa["features.conv1.weight"])


def test_training_rng_isolation():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    _train_briefly(seed=1)
    assert torch.equal(torch.rand(3), expected)


def test_training_callback_sees_steps_and_epochs_and_can_stop():
    events: list[TrainEvent] = []

    def callback(event: TrainEvent):
        events.append(event)
        if event.kind == "step" and event.step == 5:
            event.stop()
        return True  # return values are ignored: a recorder's record() may return anything

    result = train_shapesnet(epochs=2, seed=0, n_train=320, batch_size=32, eval_n=64, eval_seed=HELD_OUT_SEED,
                             callback=callback)
    kinds = [e.kind for e in events]
    assert kinds == ["step"] * 5 + ["epoch"]
    assert [e.step for e in events[:5]] == [1, 2, 3, 4, 5] and {e.epoch for e in events} == {1}
    assert events[0].steps_total == 20 and events[0].model is result.model
    assert all(np.isfinite(e.loss) and 0 <= e.accuracy <= 1 and e.lr > 0 for e in events)
    assert events[-1].held_out_accuracy is not None
    assert result.stopped_early and result.steps == 5 and not result.model.training


def test_training_accepts_a_user_model_and_rejects_a_leaky_split():
    model = zoo.ShapesNet()
    result = _train_briefly(seed=2, model=model)
    assert result.model is model and not model.training
    assert model.features.conv1.weight.is_contiguous()
    with pytest.raises(ValueError, match="eval_seed"):
        train_shapesnet(seed=HELD_OUT_SEED)


@pytest.mark.parametrize("max_steps", [0, -1])
def test_training_refuses_max_steps_below_one_before_touching_the_model(max_steps):
    model = zoo.ShapesNet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"max_steps must be an int >= 1 or None \(no limit\)"):
        train_shapesnet(model=model, epochs=1, n_train=64, batch_size=32, max_steps=max_steps, eval_n=0)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# --------------------------------------------------------------------------- TinyVGG
def test_tinyvgg_architecture():
    model = zoo.TinyVGG()
    assert sum(p.numel() for p in model.parameters()) == 19_920
    assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 10)
    assert {k for k in model.state_dict()} == {f"{n}.{p}" for n in ("conv_1_1", "conv_1_2", "conv_2_1", "conv_2_2",
                                                                     "output") for p in ("weight", "bias")}


_PHOTO_CLASS = {"boat": "lifeboat", "bug": "ladybug", "pizza": "pizza", "pepper": "bell pepper",
                "bus": "school bus", "koala": "koala", "espresso": "espresso", "panda": "red panda",
                "orange": "orange", "car": "sport car"}


def test_tinyvgg_classifies_its_default_photos(shared_data):
    folder = shared_data / "tinyvgg-cnn-explainer"
    bundle = zoo.load_tinyvgg(folder)
    assert bundle.input_size == (3, 64, 64) and bundle.mean is None
    assert bundle.classes[0] == "lifeboat" and len(bundle.classes) == 10
    photos = sorted((folder / "images").glob("*_1.jpeg"))
    assert len(photos) == 10
    x = torch.stack([bundle.preprocess(zoo_image) for zoo_image in map(_load, photos)])
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0  # [0, 1], no normalisation
    with torch.no_grad():
        predicted = bundle.model(x).argmax(1).tolist()
    expected = [bundle.classes.index(_PHOTO_CLASS[p.name.split("_")[0]]) for p in photos]
    assert predicted == expected
    # The .pth path works as well as the folder.
    assert zoo.load_tinyvgg(folder / "tinyvgg_state_dict.pth").classes == bundle.classes


def _load(path):
    from cnnwidgets.core.images import load_image

    return load_image(path)


def test_tinyvgg_missing_files_are_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="tinyvgg_state_dict.pth"):
        zoo.load_tinyvgg(tmp_path)
    torch.save(zoo.TinyVGG().state_dict(), tmp_path / "tinyvgg_state_dict.pth")
    with pytest.raises(FileNotFoundError, match="classes.json"):
        zoo.load_tinyvgg(tmp_path)


def _tinyvgg_folder(tmp_path, classes, state):
    (tmp_path / "classes.json").write_text(classes, encoding="utf-8")
    torch.save(state, tmp_path / "tinyvgg_state_dict.pth")
    return tmp_path


_TEN_CLASSES = json.dumps({str(i): f"class{i}" for i in range(10)})


def test_tinyvgg_refuses_unsafe_or_empty_weights_files(tmp_path):
    folder = _tinyvgg_folder(tmp_path, _TEN_CLASSES, {"when": datetime.date(2020, 1, 1)})
    with pytest.raises(ValueError, match="weights_only=True") as info:
        zoo.load_tinyvgg(folder)
    message = str(info.value)
    assert str(folder / "tinyvgg_state_dict.pth") in message and "datetime.date" in message
    assert "weights_only=False" not in message and "set to `False`" not in message
    torch.save({}, folder / "tinyvgg_state_dict.pth")
    with pytest.raises(ValueError, match="empty state_dict"):
        zoo.load_tinyvgg(folder)


@pytest.mark.parametrize("classes, expected", [
    ("{oops", "not valid UTF-8 JSON"),
    ("{}", "holds an empty object"),
    (json.dumps([f"class{i}" for i in range(10)]), "holds a list, not an object"),
    (json.dumps({str(i): [f"n{i:08d}", f"class{i}"] for i in range(10)}), "not a class name string"),
    (json.dumps({str(i + 1): f"class{i}" for i in range(10)}), "exactly the keys '0'..'9'"),
    (json.dumps({str(i): f"class{i}" for i in range(9)}), "names 9 classes but the output layer"),
], ids=["invalid-json", "empty", "list", "imagenet-style", "keys-from-1", "too-few-names"])
def test_tinyvgg_refuses_bad_class_files(tmp_path, classes, expected):
    folder = _tinyvgg_folder(tmp_path, classes, zoo.TinyVGG().state_dict())
    with pytest.raises(ValueError, match=re.escape(expected)) as info:
        zoo.load_tinyvgg(folder)
    assert str(folder / "classes.json") in str(info.value)


# --------------------------------------------------------------------------- ZFNet
def test_zfnet_matches_the_paper_sizes():
    model = zoo.ZFNet(num_classes=7).eval()
    sizes = {}
    hooks = [m.register_forward_hook(lambda mod, i, o, n=n: sizes.__setitem__(n, tuple(o.shape[1:])))
             for n, m in model.features.named_children()]
    with torch.no_grad():
        out = model(torch.randn(2, 3, 224, 224))
    for h in hooks:
        h.remove()
    assert out.shape == (2, 7)
    assert sizes["conv1"] == (96, 110, 110) and sizes["pool1"] == (96, 55, 55)
    assert sizes["conv2"] == (256, 26, 26) and sizes["pool2"] == (256, 13, 13)
    assert sizes["conv5"] == (256, 13, 13) and sizes["pool5"] == (256, 6, 6)
    assert isinstance(model.features.norm1, torch.nn.LocalResponseNorm)
    assert model.features.conv1.kernel_size == (7, 7) and model.features.conv1.stride == (2, 2)
    assert model.classifier.fc6.out_features == 4096 and model.classifier.fc7.out_features == 4096
    assert model.classifier.drop6.p == 0.5


def test_zfnet_default_and_paper_init():
    assert zoo.ZFNet().classifier.fc8.out_features == 1000
    paper = zoo.ZFNet(num_classes=3, init="paper")
    assert abs(float(paper.features.conv3.weight.detach().std()) - 0.01) < 0.001
    assert float(paper.features.conv3.bias.detach().abs().max()) == 0.0
    with pytest.raises(ValueError, match="init"):
        zoo.ZFNet(init="xavier")


# --------------------------------------------------------------------------- torchvision loader
@pytest.fixture
def offline(monkeypatch, tmp_path):
    """An empty TORCH_HOME and no way to reach the network: any attempt fails the test."""
    home = tmp_path / "torch-home"
    monkeypatch.setenv("TORCH_HOME", str(home))

    def no_network(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", no_network)
    return home


def _cache(weights, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    path = cached_weights_path(weights)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = model.state_dict()
    torch.save(state, path)
    return state


def test_torchvision_loads_from_the_hub_cache(offline):
    weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    assert cached_weights_path(weights) == offline / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    state = _cache(weights, torchvision.models.resnet18(weights=None))
    bundle = load_torchvision("resnet18")  # DEFAULT == IMAGENET1K_V1
    loaded = bundle.model.state_dict()
    assert all(torch.equal(loaded[k], state[k]) for k in state)
    assert not bundle.model.training
    assert bundle.classes == list(weights.meta["categories"]) and len(bundle.classes) == 1000
    assert bundle.input_size == (3, 224, 224) and bundle.mean == (0.485, 0.456, 0.406)
    assert "ResNet18_Weights.IMAGENET1K_V1" in bundle.weights and "resnet18-f37072fd.pth" in bundle.weights
    x = bundle.preprocess(Image.new("RGB", (300, 200), (255, 255, 255)))
    assert x.shape == (3, 224, 224)
    assert torch.allclose(x[0], torch.full((224, 224), (1 - 0.485) / 0.229), atol=1e-4)
    gray = bundle.preprocess(np.full((50, 60), 128, np.uint8))  # grayscale works through load_image
    assert gray.shape == (3, 224, 224)
    # The same file under the other ways of naming the weights.
    for name in ("IMAGENET1K_V1", "ResNet18_Weights.IMAGENET1K_V1", weights):
        assert load_torchvision("resnet18", weights=name).classes == bundle.classes


def test_torchvision_without_cached_weights_raises_an_actionable_error(offline):
    with pytest.raises(WeightsUnavailableError) as info:
        load_torchvision("resnet18")
    err = info.value
    message = str(err)
    assert isinstance(err, RuntimeError)
    assert "resnet18-f37072fd.pth" in message
    assert str(offline / "hub" / "checkpoints") in message
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in message
    assert "python -m cnnwidgets.zoo.fetch ResNet18_Weights.IMAGENET1K_V1" in message
    assert "weights_path" in message
    assert err.filename == "resnet18-f37072fd.pth" and err.cache_dir == offline / "hub" / "checkpoints"
    assert not (offline / "hub" / "checkpoints" / "resnet18-f37072fd.pth").exists()


def test_torchvision_explicit_file(offline, tmp_path):
    path = tmp_path / "my-resnet18.pth"
    state = torchvision.models.resnet18(weights=None).state_dict()
    torch.save(state, path)
    bundle = load_torchvision("resnet18", weights="IMAGENET1K_V1", weights_path=path)
    assert torch.equal(bundle.model.conv1.weight, state["conv1.weight"])
    assert str(path) in bundle.weights
    with pytest.raises(FileNotFoundError, match="nothing.pth"):
        load_torchvision("resnet18", weights_path=tmp_path / "nothing.pth")


def test_torchvision_refuses_wrong_unsafe_or_mismatched_files(offline, tmp_path):
    weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    state = _cache(weights, torchvision.models.resnet18(weights=None))
    with pytest.raises(ValueError, match="SHA-256 prefix f37072fd"):
        load_torchvision("resnet18", check_hash=True)
    unsafe = tmp_path / "unsafe.pth"
    torch.save({"when": datetime.date(2020, 1, 1)}, unsafe)
    with pytest.raises(ValueError, match="weights_only=True") as info:
        load_torchvision("resnet18", weights_path=unsafe)
    assert "datetime.date" in str(info.value) and "False" not in str(info.value)
    partial = tmp_path / "partial.pth"
    torch.save({k: v for k, v in state.items() if k != "fc.bias"}, partial)
    with pytest.raises(RuntimeError, match="fc.bias"):
        load_torchvision("resnet18", weights_path=partial)


def test_torchvision_names_are_checked(offline):
    with pytest.raises(ValueError, match="did you mean resnet18"):
        load_torchvision("resnet181")
    with pytest.raises(ValueError, match="IMAGENET1K_V1"):
        load_torchvision("resnet18", weights="IMAGENET22K")
    with pytest.raises(ValueError, match="another architecture"):
        load_torchvision("resnet18", weights=torchvision.models.AlexNet_Weights.IMAGENET1K_V1)


def test_torchvision_untrained_only_when_asked(offline):
    bundle = load_torchvision("mobilenet_v3_small", weights=None)
    assert "untrained" in bundle.weights and len(bundle.classes) == 1000
    assert bundle.model(torch.zeros(1, 3, 224, 224)).shape == (1, 1000)


def test_torchvision_googlenet_quirks(offline):
    weights = torchvision.models.GoogLeNet_Weights.IMAGENET1K_V1
    # torchvision builds GoogLeNet with aux heads and transform_input when it loads weights.
    _cache(weights, torchvision.models.googlenet(weights=None, aux_logits=True, transform_input=True,
                                                 init_weights=False))
    bundle = load_torchvision("googlenet")
    assert bundle.model.aux1 is None and bundle.model.transform_input
    with torch.no_grad():
        assert bundle.model(torch.zeros(1, 3, 224, 224)).shape == (1, 1000)


def test_torchvision_densenet_accepts_the_legacy_key_names_of_official_files(offline):
    weights = torchvision.models.DenseNet121_Weights.IMAGENET1K_V1
    state = torchvision.models.densenet121(weights=None).state_dict()
    legacy = {}
    for key, value in state.items():
        for layer in ("norm", "relu", "conv"):
            for index in ("1", "2"):
                key = key.replace(f".{layer}{index}.", f".{layer}.{index}.")
        legacy[key] = value
    assert "features.denseblock1.denselayer1.norm.1.weight" in legacy and len(legacy) == len(state)
    path = cached_weights_path(weights)
    path.parent.mkdir(parents=True)
    torch.save(legacy, path)
    loaded = load_torchvision("densenet121").model.state_dict()
    assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], state[k]) for k in state)


def test_torchvision_refuses_weights_without_class_names(offline, tmp_path):
    with pytest.raises(ValueError, match="IMAGENET1K_FEATURES are not classifier weights") as info:
        load_torchvision("vgg16", weights="IMAGENET1K_FEATURES")
    assert "IMAGENET1K_V1" in str(info.value) and "fetch" not in str(info.value)
    path = tmp_path / "vgg16_features.pth"
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, path)
    with pytest.raises(ValueError, match="not classifier weights"):
        load_torchvision("vgg16", weights="IMAGENET1K_FEATURES", weights_path=path)


def test_torchvision_failed_download_is_a_weights_unavailable_error(offline, monkeypatch):
    def unreachable(url, dst, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", unreachable)
    with pytest.raises(WeightsUnavailableError) as info:
        load_torchvision("resnet18", download=True)
    message = str(info.value)
    assert "name resolution" in message and "resnet18-f37072fd.pth" in message and message.count("To fix") == 1
    assert "weights_path" in message and "python -m cnnwidgets.zoo.fetch ResNet18_Weights.IMAGENET1K_V1" in message
    assert info.value.cache_dir == offline / "hub" / "checkpoints"
    assert not (offline / "hub" / "checkpoints" / "resnet18-f37072fd.pth").exists()


def test_the_shipped_weights_description_prints_in_short_lines():
    from cnnwidgets.zoo.shapesnet import WEIGHTS_INFO

    lines = WEIGHTS_INFO.splitlines()
    assert len(lines) > 1 and all(len(f"weights: {line}") <= 100 for line in lines)
    from cnnwidgets.zoo import load_default

    assert "held-out accuracy" in WEIGHTS_INFO and load_default().weights == WEIGHTS_INFO


def _unreachable(url, dst, *args, **kwargs):
    raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")


def test_fetch_offline_says_what_to_do(offline, monkeypatch, capsys):
    from cnnwidgets.zoo.fetch import main

    monkeypatch.setattr(torch.hub, "download_url_to_file", _unreachable)
    target = offline / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert main(["ResNet18_Weights.IMAGENET1K_V1", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "name resolution" in err
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth on a machine with internet" in err
    assert f"put the file at {target} on this machine" in err
    assert "CNNWIDGETS_WEIGHTS_MIRROR" in err and "weights_path='/path/to/resnet18-f37072fd.pth'" in err


def test_a_failed_fetch_keeps_the_file_already_cached(offline, monkeypatch):
    from cnnwidgets.zoo.fetch import fetch_weights

    monkeypatch.setattr(torch.hub, "download_url_to_file", _unreachable)
    folder = offline / "hub" / "checkpoints"
    target = folder / "resnet18-f37072fd.pth"
    folder.mkdir(parents=True)
    target.write_bytes(b"the user's own file")  # other weights under the official name
    with pytest.raises(RuntimeError) as info:
        fetch_weights(["ResNet18_Weights.IMAGENET1K_V1"], progress=False)
    assert target.read_bytes() == b"the user's own file"
    assert sorted(p.name for p in folder.iterdir()) == ["resnet18-f37072fd.pth"]  # no partial download left
    assert f"{target} was there before" in str(info.value) and "it was left as it is" in str(info.value)


def test_fetch_takes_one_name_or_a_list_and_replaces_a_file_only_when_verified(monkeypatch, tmp_path):
    import hashlib

    from cnnwidgets.zoo.fetch import fetch_weights

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setattr(socket.socket, "connect", lambda *a, **k: pytest.fail("the network was used"))
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    data = b"weights" * 1000
    name = f"blob-{hashlib.sha256(data).hexdigest()[:8]}.pth"
    (mirror / name).write_bytes(data)
    (mirror / "bad-0123abcd.pth").write_bytes(data)
    monkeypatch.setenv("CNNWIDGETS_WEIGHTS_MIRROR", mirror.as_uri())
    folder = tmp_path / "torch-home" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    (folder / name).write_bytes(b"an older, corrupt copy")
    (folder / "bad-0123abcd.pth").write_bytes(b"kept")
    paths = fetch_weights(f"https://example.org/models/{name}", progress=False)  # one string, not a list
    assert paths == [folder / name] and (folder / name).read_bytes() == data
    with pytest.raises(RuntimeError, match="invalid hash value"):
        fetch_weights(["https://example.org/models/bad-0123abcd.pth"], progress=False)
    assert (folder / "bad-0123abcd.pth").read_bytes() == b"kept"
    # the verified file has its note (for load_torchvision), the refused one none and no partial download
    assert sorted(p.name for p in folder.iterdir()) == sorted([name, f".{name}.verified.json", "bad-0123abcd.pth"])
    with pytest.raises(TypeError, match="each weights spec must be a str"):
        fetch_weights([1])
    with pytest.raises(TypeError, match="progress must be True or False"):
        fetch_weights([], progress="no")


def test_torchvision_description_does_not_claim_an_unverified_file(offline, tmp_path, monkeypatch):
    from cnnwidgets.zoo import pretrained

    weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    _cache(weights, torchvision.models.resnet18(weights=None))  # random weights under the official name
    path = tmp_path / "random-resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    for bundle, where in ((load_torchvision("resnet18"), cached_weights_path(weights)),
                          (load_torchvision("resnet18", weights_path=path), path)):
        assert "not verified to be torchvision's file" in bundle.weights and "check_hash=True" in bundle.weights
        assert str(where) in bundle.weights and "69.758" not in bundle.weights and "top-1" not in bundle.weights
    # a file that passes the hash check, or that fetch_weights has just downloaded (and checked), is
    # described with torchvision's figures
    monkeypatch.setattr(pretrained, "_check_hash", lambda path, weights: True)
    verified = load_torchvision("resnet18", check_hash=True).weights
    assert "ImageNet top-1 69.758%" in verified and "SHA-256 checked" in verified and "not verified" not in verified
    from cnnwidgets.zoo import fetch

    cached_weights_path(weights).unlink()
    monkeypatch.setattr(fetch, "fetch_weights", lambda specs: _cache(weights, torchvision.models.resnet18()))
    downloaded = load_torchvision("resnet18", download=True).weights
    assert "ImageNet top-1 69.758%" in downloaded and "not verified" not in downloaded


def test_torchvision_refuses_arguments_of_the_wrong_type(offline):
    with pytest.raises(TypeError, match="arch must be the name of a torchvision classification model"):
        load_torchvision(None)
    with pytest.raises(TypeError, match="check_hash must be True or False"):
        load_torchvision("resnet18", check_hash="yes")
    with pytest.raises(TypeError, match="download must be True or False"):
        load_torchvision("resnet18", download="no")
    with pytest.raises(TypeError, match="weights_path must be a file path"):
        load_torchvision("resnet18", weights_path=3)


# --------------------------------------------------------------------------- argument checks
def test_zoo_lists_its_lazy_names_and_hides_typing_helpers():
    names = dir(zoo)
    assert {"sample_image", "samples"} <= set(names) and set(zoo.__all__) <= set(names)
    assert "Any" not in names and not hasattr(zoo, "Any")
    assert zoo.sample_image("star").size == (64, 64)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: shapes.ShapesDataset(2.9), "n must be an int >= 0, got float 2.9"),
        (lambda: shapes.ShapesDataset(True), "n must be an int >= 0, got bool True"),
        (lambda: shapes.ShapesDataset(4, seed=1.5), r"seed must be an int in \[0, 2\*\*64\), got float 1.5"),
        (lambda: shapes.ShapesDataset(4, seed=True), "seed must be an int .* got bool True"),
        (lambda: shapes.ShapesDataset(4, size=64.0), "size must be an int >= 16, got float 64.0"),
        (lambda: shapes.ShapesDataset(4, normalized="no"), "normalized must be True or False"),
        (lambda: shapes.ShapesDataset(4)[1.5], "index must be an int"),
        (lambda: shapes.ShapesDataset(4)[True], "index must be an int"),
        (lambda: shapes.make_batch(True), "n must be an int >= 0, got bool True"),
        (lambda: shapes.make_batch(1, seed=1.5), "seed must be an int .* got float 1.5"),
        (lambda: shapes.make_batch(1, seed=True), "seed must be an int .* got bool True"),
        (lambda: shapes.make_images(2, start=0.5), "start must be an int >= 0"),
        (lambda: shapes.render_scene([], seed=1.5), "seed must be an int .* got float 1.5"),
        (lambda: shapes.render_scene([], size=20.0), "size must be an int >= 1, got float 20.0"),
        (lambda: evaluate(zoo.ShapesNet(), n=3, seed=1.5), "seed must be an int .* got float 1.5"),
        (lambda: evaluate(zoo.ShapesNet(), n=2.5), "n must be an int >= 1"),
        (lambda: zoo.ShapesNet(num_classes=2.5), "num_classes must be an int >= 1, got float 2.5"),
        (lambda: zoo.ShapesNet(widths=(16, 16, 32, True)), r"widths\[3\] must be an int >= 1, got bool True"),
        (lambda: zoo.TinyVGG(True), "num_classes must be an int >= 1, got bool True"),
        (lambda: zoo.ZFNet(10.0), "num_classes must be an int >= 1, got float 10.0"),
    ],
)
def test_zoo_refuses_counts_and_seeds_that_are_not_ints(call, message):
    # Truncating them gave the images of another count or seed without a word.
    with pytest.raises(TypeError, match=message):
        call()


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: shapes.ShapesDataset(-1), "n must be an int >= 0, got -1"),
        (lambda: shapes.make_batch(1, seed=2**64), r"seed must be an int in \[0, 2\*\*64\)"),
        (lambda: shapes.render_scene([], size=0), "size must be an int >= 1, got 0"),
        (lambda: evaluate(zoo.ShapesNet(), n=3, batch_size=0), "batch_size must be an int >= 1, got 0"),
        (lambda: zoo.ShapesNet(num_classes=0), "num_classes must be an int >= 1, got 0"),
        (lambda: zoo.ShapesNet(widths=(16, 16, 32)), "widths must be four ints >= 1"),
    ],
)
def test_zoo_refuses_counts_and_seeds_out_of_range(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_zoo_accepts_numpy_and_tensor_ints():
    x, y = shapes.make_batch(np.int64(2), seed=np.int64(3), size=np.int64(32))
    assert x.shape == (2, 3, 32, 32) and torch.equal(y, shapes.make_batch(2, seed=3, size=32)[1])
    ds = shapes.ShapesDataset(np.int32(4), seed=np.uint8(3))
    assert len(ds) == 4 and ds.seed == 3 and type(ds.n) is int
    assert torch.equal(ds[torch.tensor(1)][0], ds[1][0])


@pytest.mark.parametrize(
    "options, error, message",
    [
        ({"epochs": 1.5}, TypeError, "epochs must be an int >= 1, got float 1.5"),
        ({"n_train": True}, TypeError, "n_train must be an int >= 1, got bool True"),
        ({"batch_size": 32.0}, TypeError, "batch_size must be an int >= 1"),
        ({"seed": 1.5}, TypeError, "seed must be an int .* got float 1.5"),
        ({"seed": True}, TypeError, "seed must be an int .* got bool True"),
        ({"eval_seed": 2.5}, TypeError, "eval_seed must be an int"),
        ({"eval_n": -1}, ValueError, "eval_n must be an int >= 0, got -1"),
        ({"max_steps": 1.5}, TypeError, r"max_steps must be an int >= 1 or None \(no limit\), got float 1.5"),
        ({"lr": 0}, ValueError, "lr must be a finite number > 0"),
        ({"first_layer_decay": -1.0}, ValueError, "first_layer_decay must be a finite number >= 0"),
        ({"channels_last": 1}, TypeError, "channels_last must be True or False"),
        ({"callback": "print"}, TypeError, "callback must be None or a callable"),
        ({"log": 1}, TypeError, "log must be None or a callable"),
    ],
)
def test_training_refuses_bad_arguments_before_touching_the_model(options, error, message):
    model = zoo.ShapesNet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(error, match=message):
        train_shapesnet(**{"model": model, "epochs": 1, "n_train": 64, "batch_size": 32, "eval_n": 0, **options})
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_model_forwards_and_bundle_fields_are_documented():
    import typing

    for cls, shape in ((zoo.ShapesNet, "(N, 3, 64, 64)"), (zoo.TinyVGG, "(N, 3, 64, 64)"), (zoo.ZFNet, "(N, 3, 224, 224)")):
        doc = cls.forward.__doc__  # the class's own, not torch's generic Module.forward text
        assert doc and "(N, num_classes)" in doc and shape in doc, cls.__name__
    hint = typing.get_type_hints(Bundle)["denormalize"]
    assert type(None) in typing.get_args(hint)
    assert "Raises:" in shapes.make_batch.__doc__ and ">= 16" in shapes.make_batch.__doc__


# --------------------------------------------------------------------------- downloads and broken files
def test_a_stalled_server_fails_the_fetch_after_the_timeout(monkeypatch, tmp_path):
    from cnnwidgets.zoo import fetch

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setattr(fetch, "DOWNLOAD_TIMEOUT", 0.5)
    with socket.socket() as listener:  # accepts connections (the kernel's backlog) and never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/models/stalled-deadbeef.pth"
        before = socket.getdefaulttimeout()
        started = time.monotonic()
        with pytest.raises(fetch.FetchError, match=r"the server sent nothing for 0\.5 s") as info:
            fetch.fetch_weights(url, progress=False)
        assert time.monotonic() - started < 10
    assert socket.getdefaulttimeout() == before  # the process-wide default is restored
    assert "stalled-deadbeef.pth" in str(info.value) and "DOWNLOAD_TIMEOUT" in str(info.value)
    assert list((tmp_path / "torch-home" / "hub" / "checkpoints").iterdir()) == []  # no partial file left


def test_fetch_removes_the_partial_files_a_killed_download_left(monkeypatch, tmp_path):
    import hashlib

    from cnnwidgets.zoo import fetch

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    data = b"weights" * 100
    name = f"blob-{hashlib.sha256(data).hexdigest()[:8]}.pth"
    (mirror / name).write_bytes(data)
    monkeypatch.setenv("CNNWIDGETS_WEIGHTS_MIRROR", mirror.as_uri())
    folder = tmp_path / "torch-home" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    old = [folder / f"{name}.{'a' * 32}.partial", folder / f".{name}.jvggm4_g.partial",
           folder / f".{name}.jvggm4_g.partial.{'b' * 32}.partial"]
    fresh = folder / f"{name}.{'c' * 32}.partial"  # a download another process is running now
    other = folder / f"other-01234567.pth.{'d' * 32}.partial"  # another file's: not this download's
    for path in [*old, fresh, other]:
        path.write_bytes(b"half")
    long_ago = time.time() - fetch.STALE_PARTIAL_AGE - 60
    for path in [*old, other]:
        os.utime(path, (long_ago, long_ago))
    destinations = []
    real_download = torch.hub.download_url_to_file

    def recording(url, dst, *args, **kwargs):
        destinations.append(dst)
        return real_download(url, dst, *args, **kwargs)

    monkeypatch.setattr(torch.hub, "download_url_to_file", recording)
    assert fetch.fetch_weights(f"https://example.org/{name}", progress=False) == [folder / name]
    # torch.hub writes its own temporary file next to the target and moves it: no second layer
    assert destinations == [str(folder / name)]
    assert not any(path.exists() for path in old)
    assert fresh.exists() and other.exists()
    assert sorted(p.name for p in folder.iterdir()) == sorted([name, f".{name}.verified.json", fresh.name, other.name])


def test_fetch_cli_reports_an_unusable_cache_folder_in_one_line(monkeypatch, tmp_path, capsys):
    from cnnwidgets.zoo.fetch import main

    blocker = tmp_path / "afile"
    blocker.write_text("a file where a folder should be")
    monkeypatch.setenv("TORCH_HOME", str(blocker / "torch-home"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: pytest.fail("nothing to download into"))
    assert main(["ResNet18_Weights.IMAGENET1K_V1", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ")
    assert str(blocker / "torch-home" / "hub" / "checkpoints") in err and "set TORCH_HOME" in err
    assert "Traceback" not in err


def test_fetch_accepts_the_default_weights_name():
    from cnnwidgets.zoo.fetch import resolve_url
    from cnnwidgets.zoo.pretrained import resolve_weights

    assert resolve_url("ResNet18_Weights.DEFAULT") == resolve_weights("resnet18", "DEFAULT").url


def _corrupt_cache(weights) -> Path:
    path = cached_weights_path(weights)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"PK\x03\x04 cut off in the middle of the download")
    return path


def test_a_corrupt_cached_file_says_deleting_it_is_safe_and_how_to_fetch_it(offline, tmp_path):
    weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    path = _corrupt_cache(weights)
    with pytest.raises(ValueError) as info:
        load_torchvision("resnet18")
    message = str(info.value)
    assert str(path) in message and "deleting it is safe" in message
    assert "python -m cnnwidgets.zoo.fetch ResNet18_Weights.IMAGENET1K_V1" in message and "download=True" in message
    # a file of the user's own is not the cache's: no advice to delete it
    mine = tmp_path / "mine.pth"
    mine.write_bytes(path.read_bytes())
    with pytest.raises(ValueError) as info:
        load_torchvision("resnet18", weights_path=mine)
    assert str(mine) in str(info.value) and "deleting it is safe" not in str(info.value)
    # the same for a cached file of another architecture
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), path)
    with pytest.raises(RuntimeError, match="deleting it is safe"):
        load_torchvision("resnet18")


def test_download_true_replaces_a_corrupt_cached_file_and_loads_it(offline, monkeypatch):
    weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    path = _corrupt_cache(weights)
    state = torchvision.models.resnet18(weights=None).state_dict()
    calls = []

    def download(url, dst, *args, **kwargs):  # stands in for the network; fetch_weights does the rest
        calls.append((url, dst))
        torch.save(state, dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", download)
    bundle = load_torchvision("resnet18", download=True)
    assert calls == [(weights.url, str(path))]
    assert torch.equal(bundle.model.conv1.weight, state["conv1.weight"])
    assert "not verified" not in bundle.weights and str(path) in bundle.weights
    # offline, the corrupt file stays and the error says both what is wrong and why it was not replaced
    _corrupt_cache(weights)
    monkeypatch.setattr(torch.hub, "download_url_to_file", _unreachable)
    with pytest.raises(ValueError) as info:
        load_torchvision("resnet18", download=True)
    message = str(info.value)
    assert "could not load" in message and "Replacing it with a fresh download failed too" in message
    assert "name resolution" in message and "deleting it is safe" in message
    assert path.read_bytes().startswith(b"PK\x03\x04 cut off")


def test_a_file_fetch_verified_is_described_as_verified_until_it_changes(offline):
    from cnnwidgets.zoo.fetch import _record_verified

    weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    _cache(weights, torchvision.models.resnet18(weights=None))
    path = cached_weights_path(weights)
    assert "not verified" in load_torchvision("resnet18").weights
    _record_verified(path, "0123abcd" + "0" * 56)  # a SHA-256 other than the name's prefix
    assert "not verified" in load_torchvision("resnet18").weights
    _record_verified(path, "f37072fd" + "0" * 56)  # what fetch_weights notes after checking the hash
    described = load_torchvision("resnet18").weights
    assert "SHA-256 checked" in described and "not verified" not in described
    later = path.stat().st_mtime_ns + 5_000_000_000
    os.utime(path, ns=(later, later))  # the file changed since it was verified
    assert "not verified" in load_torchvision("resnet18").weights


def test_a_url_as_a_weights_path_is_refused_with_what_to_do(offline):
    url = "https://download.pytorch.org/models/squeezenet1_1-b8a52dc0.pth"
    with pytest.raises(ValueError, match="URLs such as") as info:
        load_torchvision("squeezenet1_1", weights_path=url)
    message = str(info.value)
    assert url in message and "weights_path" in message
    assert "python -m cnnwidgets.zoo.fetch" in message and "download=True" in message
    with pytest.raises(ValueError, match="URLs such as") as info:
        zoo.load_tinyvgg("https://example.org/tinyvgg/")
    assert "classes.json" in str(info.value) and "tinyvgg_state_dict.pth" in str(info.value)


# --------------------------------------------------------------------------- state_dict shapes
def test_wrapped_models_state_dicts_load_and_say_so(tmp_path):
    (tmp_path / "classes.json").write_text(_TEN_CLASSES, encoding="utf-8")
    model = zoo.TinyVGG()
    torch.save(torch.nn.DataParallel(model).state_dict(), tmp_path / "tinyvgg_state_dict.pth")
    bundle = zoo.load_tinyvgg(tmp_path)
    assert torch.equal(bundle.model.output.weight, model.output.weight)
    assert "'module.' prefix" in bundle.weights and "DataParallel" in bundle.weights
    # torch.compile's prefix, on top of DataParallel's
    compiled = {f"_orig_mod.module.{k}": v for k, v in model.state_dict().items()}
    torch.save(compiled, tmp_path / "tinyvgg_state_dict.pth")
    bundle = zoo.load_tinyvgg(tmp_path)
    assert torch.equal(bundle.model.conv_1_1.weight, model.conv_1_1.weight)
    assert "'_orig_mod.' prefix" in bundle.weights and "'module.' prefix" in bundle.weights
    # a plain file says nothing of the kind
    torch.save(model.state_dict(), tmp_path / "tinyvgg_state_dict.pth")
    assert "prefix" not in zoo.load_tinyvgg(tmp_path).weights


def test_wrapped_torchvision_state_dicts_load(offline, tmp_path):
    state = torchvision.models.resnet18(weights=None).state_dict()
    path = tmp_path / "ddp-resnet18.pth"
    torch.save({f"module.{k}": v for k, v in state.items()}, path)
    bundle = load_torchvision("resnet18", weights_path=path)
    assert torch.equal(bundle.model.fc.weight, state["fc.weight"]) and "'module.' prefix" in bundle.weights


def test_a_state_dict_of_another_model_gives_a_short_summary(offline, tmp_path):
    path = tmp_path / "resnet34.pth"
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), path)
    with pytest.raises(RuntimeError) as info:
        load_torchvision("resnet18", weights_path=path)
    message = str(info.value)
    assert re.search(r"0 missing, \d+ unexpected keys \(e\.g\. unexpected 'layer1\.2\.", message)
    assert str(path) in message and len(message) < 600
    assert isinstance(info.value.__cause__, RuntimeError) and "Unexpected key(s)" in str(info.value.__cause__)
    # a layer of another size is named with both shapes
    other = torchvision.models.resnet18(weights=None, num_classes=10).state_dict()
    torch.save(other, path)
    with pytest.raises(RuntimeError, match=r"0 missing, 0 unexpected keys, 2 of another shape.*'fc\.weight' is \(10, 512\) in the file but "
                                           r"\(1000, 512\) in the model"):
        load_torchvision("resnet18", weights_path=path)
    # only some keys prefixed: not stripped, but the prefix is named
    (tmp_path / "classes.json").write_text(_TEN_CLASSES, encoding="utf-8")
    mixed = {(f"module.{k}" if k.startswith("conv") else k): v for k, v in zoo.TinyVGG().state_dict().items()}
    torch.save(mixed, tmp_path / "tinyvgg_state_dict.pth")
    with pytest.raises(RuntimeError, match=r"8 missing, 8 unexpected keys .*start with 'module\.'"):
        zoo.load_tinyvgg(tmp_path)


def test_training_checkpoints_are_unwrapped_or_their_keys_listed(tmp_path):
    (tmp_path / "classes.json").write_text(_TEN_CLASSES, encoding="utf-8")
    model = zoo.TinyVGG()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    weights_file = tmp_path / "tinyvgg_state_dict.pth"
    torch.save({"model_state_dict": model.state_dict(), "optimizer_state_dict": optimizer.state_dict(),
                "epoch": 3}, weights_file)
    bundle = zoo.load_tinyvgg(tmp_path)
    assert torch.equal(bundle.model.conv_2_2.weight, model.conv_2_2.weight)
    assert "'model_state_dict'" in bundle.weights
    torch.save({"model": model.state_dict(), "ema": model.state_dict(), "epoch": 3}, weights_file)
    with pytest.raises(ValueError, match="2 of its entries \\('model', 'ema'\\) are state_dicts") as info:
        zoo.load_tinyvgg(tmp_path)
    assert "the keys 'model', 'ema', 'epoch'" in str(info.value) and str(weights_file) in str(info.value)
    torch.save({"epoch": 3, "note": "no weights"}, weights_file)
    with pytest.raises(ValueError, match="the keys 'epoch', 'note', and none of its entries is a state_dict"):
        zoo.load_tinyvgg(tmp_path)


def test_make_images_refuses_more_images_than_memory_holds_before_rendering_any():
    # 2**40 images once rendered chunk after chunk until memory ran out
    from cnnwidgets.zoo.shapes import make_images

    with pytest.raises(ValueError, match=r"^n=1099511627776: the images would take .* GiB .*more than this machine's memory"):
        make_images(2**40)
    with pytest.raises(ValueError, match=r"^n=\d+: the images would take"):
        make_images(2**30, size=256)
    images, labels = make_images(3, size=16)
    assert images.shape == (3, 16, 16, 3) and labels.shape == (3,)
