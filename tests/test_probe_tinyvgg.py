"""The hook manager on a real trained network (CNN Explainer's TinyVGG, offline test data)."""

from __future__ import annotations

import torch

from cnnwidgets import ModelSnapshot, Probe
from cnnwidgets.core.images import load_image
from cnnwidgets.zoo.tinyvgg import load_tinyvgg
from tests.helpers import reference_outputs

LAYERS = ["conv_1_1", "relu_1_2", "pool_1", "conv_2_2", "output"]


def _photos(shared_data, bundle):
    paths = sorted((shared_data / "tinyvgg-cnn-explainer" / "images").glob("*_1.jpeg"))
    assert len(paths) == 10
    return paths, torch.stack([bundle.preprocess(load_image(p)) for p in paths])


def test_prefix_capture_cache_and_hygiene_on_trained_tinyvgg(shared_data):
    bundle = load_tinyvgg(shared_data / "tinyvgg-cnn-explainer")
    model = bundle.model
    paths, x = _photos(shared_data, bundle)
    snapshot = ModelSnapshot.take(model)
    ref = reference_outputs(model, x, LAYERS)
    with Probe(model) as probe:
        probe.reset_stats()
        early = probe.capture(x, "relu_1_2")["relu_1_2"]
        assert probe.stats.modules_executed == 4 and probe.stats.full_forwards == 0
        got = probe.capture(x, LAYERS)
        probe.reset_stats()
        again = probe.capture(x.clone(), LAYERS)
        assert probe.stats.forwards == 0 and probe.stats.cache_hits == len(LAYERS)
        logits = probe.logits(x)
        receptive = probe.layers["conv_2_2"].receptive_field
    for name in LAYERS:
        torch.testing.assert_close(got[name], ref[name], rtol=1e-4, atol=1e-4)
        assert torch.equal(again[name], got[name])
    assert torch.equal(early, got["relu_1_2"])
    # conv 3 -> conv 3 -> pool 2 -> conv 3 -> conv 3: r = 3, 5, 6, 10, 14
    assert receptive == 14
    # The photos CNN Explainer shows by default are all classified correctly.
    names = [bundle.classes[i] for i in logits.argmax(dim=1).tolist()]
    prefixes = {"boat": "lifeboat", "bug": "ladybug", "pepper": "bell pepper", "bus": "school bus",
                "car": "sport car", "panda": "red panda"}
    expected = [prefixes.get(p.name.split("_")[0], p.name.split("_")[0]) for p in paths]
    assert names == expected
    snapshot.assert_unchanged(model)
