"""Unusual models a user may bring: what they should get.

Each test builds a tiny model on the CPU and asserts the behaviour the package promises: the
user's model unchanged, a clear and specific error, or results that match a direct computation.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from cnnwidgets.core import Probe
from cnnwidgets.core.hygiene import ModelSnapshot
from cnnwidgets.methods import kernel_weights, occlusion_map, saliency


def _cnn(in_channels: int = 3, classes: int = 4) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(in_channels, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, classes),
    ).eval()


def _image(h: int = 16, w: int = 16) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)


# --------------------------------------------------------------------------------------------
# A model holding a torch.compile'd submodule (model.features = torch.compile(model.features)).
# Top-level torch.compile is looked through; a compiled submodule runs eagerly in the private copy
# (dynamo would run around the probe's hooks and crash), also in copies made from that copy.
class _CompiledFeatures(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        net = _cnn()
        self.features = torch.compile(net[:4])
        self.head = net[4:]

    def forward(self, x):
        return self.head(self.features(x))


def test_compiled_submodule_is_run_eagerly_or_refused_clearly():
    model = _CompiledFeatures()
    snapshot = ModelSnapshot.take(model)
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        expected = model.head(model.features._orig_mod(x))
    try:
        with Probe(model) as probe:
            got = probe.logits(x)
    except Exception as exc:  # noqa: BLE001 - the message is what is checked
        message = str(exc)
        assert "torch.compile" in message and "features" in message, message[:400]
        assert "size and number of channels" not in message, message[:400]
    else:
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    snapshot.assert_unchanged(model)


def test_methods_on_a_compiled_submodule_match_the_original_module():
    from cnnwidgets.methods import grad_cam

    model = _CompiledFeatures()
    eager = nn.Sequential(model.features._orig_mod, model.head).eval()
    x = torch.randn(1, 3, 16, 16)
    torch.testing.assert_close(saliency(model, x, 1), saliency(eager, x, 1))
    # the occlusion map runs on a further (batch-norm folded) copy of the probe's copy
    np.testing.assert_allclose(occlusion_map(model, x, 1, window=8, stride=4, progress=False).grid,
                               occlusion_map(eager, x, 1, window=8, stride=4, progress=False).grid, rtol=1e-5)
    torch.testing.assert_close(grad_cam(model, x, 1, "features._orig_mod.2"), grad_cam(eager, x, 1, "0.2"))


# --------------------------------------------------------------------------------------------
# A forward that squeezes the batch away for one image: refused on the first call too (its output
# comes from the discovery pass), with the batch named, by Probe.logits and occlusion_map alike.
class _SqueezedBatch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = _cnn()

    def forward(self, x):
        return self.net(x).squeeze(0)


def test_squeezed_batch_output_refused_on_first_logits_call():
    with Probe(_SqueezedBatch()) as probe, pytest.raises(ValueError, match="first dimension must be the batch"):
        probe.logits(torch.randn(1, 3, 16, 16))


def test_squeezed_batch_output_occlusion_says_the_batch_was_squeezed():
    with pytest.raises(ValueError, match="first dimension must be the batch"):
        occlusion_map(_SqueezedBatch(), torch.randn(1, 3, 16, 16), 1, window=8, stride=8, progress=False)


# --------------------------------------------------------------------------------------------
# A forward that casts its input to float16 itself (code written for a half model): the copy
# computes in float32, and the error says so rather than blaming the input's size and channels.
class _CastsToHalf(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = _cnn().half()

    def forward(self, x):
        return self.net(x.half())


def test_forward_casting_to_half_gets_a_dtype_error_not_a_size_hint():
    with pytest.raises(Exception) as info:  # noqa: PT011 - the message is what is checked
        saliency(_CastsToHalf(), torch.randn(1, 3, 16, 16), 0)
    message = str(info.value)
    assert "size and number of channels" not in message, message
    assert "float32" in message, message


# --------------------------------------------------------------------------------------------
# For pruning and the old-style weight_norm, module.weight is a plain attribute recomputed only by
# the next forward: after load_state_dict (or an optimizer step) kernels() still shows the weights
# the model computes with.
def _pruned_after_load() -> nn.Sequential:
    trained = _cnn()
    prune.l1_unstructured(trained[2], "weight", 0.5)
    with torch.no_grad():
        trained[2].weight_orig.mul_(3.0)  # "training": the weights the checkpoint holds
    model = _cnn()
    prune.l1_unstructured(model[2], "weight", 0.5)
    model.load_state_dict(trained.state_dict())
    return model


def test_kernels_show_the_pruned_weights_the_model_computes_with():
    model = _pruned_after_load()
    effective = (model[2].weight_orig * model[2].weight_mask).detach().numpy()
    np.testing.assert_allclose(kernel_weights(model, "2").weight, effective, rtol=1e-6, atol=1e-7)


def test_kernels_of_a_probe_show_the_pruned_weights_the_model_computes_with():
    model = _pruned_after_load()
    effective = (model[2].weight_orig * model[2].weight_mask).detach().numpy()
    with Probe(model) as probe:
        np.testing.assert_allclose(kernel_weights(probe, "2").weight, effective, rtol=1e-6, atol=1e-7)


def test_kernels_show_old_style_weight_norm_weights_after_a_change():
    model = _cnn()
    with pytest.warns(FutureWarning):
        nn.utils.weight_norm(model[2])
    with torch.no_grad():
        model[2].weight_g.mul_(2.0)  # an optimizer step
    effective = torch._weight_norm(model[2].weight_v, model[2].weight_g, 0).detach().numpy()
    np.testing.assert_allclose(kernel_weights(model, "2").weight, effective, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------------
# A 4-channel model given its normalised input tensor and denormalize= (README: "taken as its
# input as it is"): taken, without a preprocess= that would never be called.
def test_explorer_takes_a_four_channel_model_input_with_denormalize():
    from cnnwidgets.app import Explorer

    model = _cnn(in_channels=4)
    snapshot = ModelSnapshot.take(model)
    torch.manual_seed(1)
    x = (torch.rand(4, 16, 16) - 0.5) / 0.25  # normalised: values outside [0, 1]

    def denormalize(t):
        return (t * 0.25 + 0.5)[:3].permute(1, 2, 0).clamp(0, 1)

    ex = Explorer(model, x, denormalize=denormalize, background=False, samples={})
    try:
        assert not ex.status.is_error, ex.status.message
        with torch.no_grad():
            expected = model(x[None]).softmax(1)[0].numpy()
        np.testing.assert_allclose(np.asarray(ex.scores["baseline"]).ravel(), expected, rtol=1e-5, atol=1e-6)
    finally:
        ex.close()
    snapshot.assert_unchanged(model)


# --------------------------------------------------------------------------------------------
# A binary classifier returning one logit per image as (N,) (``fc(x).squeeze(1)``, the usual
# shape for BCEWithLogitsLoss): either read as a single logit, or told how to return (N, 1).
class _BinarySqueezed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = _cnn(classes=1)

    def forward(self, x):
        return self.net(x).squeeze(1)


def test_binary_classifier_with_n_shaped_output_is_read_or_told_to_return_n_by_1():
    model = _BinarySqueezed()
    x = torch.randn(1, 3, 16, 16)
    try:
        got = saliency(model, x, 0)
    except ValueError as exc:
        assert "(N, 1)" in str(exc) or "unsqueeze" in str(exc), str(exc)
    else:
        xx = x.clone().requires_grad_()
        (grad,) = torch.autograd.grad(model(xx)[0], xx)
        torch.testing.assert_close(got, grad.abs())


# --------------------------------------------------------------------------------------------
# A layer whose map is empty at the input size (a crop that leaves 0x0): the explorer's note says
# so, and does not call it a token sequence or vector.
class _Crop(nn.Module):
    def forward(self, x):
        return x[..., 4:-4, 4:-4]


class _EmptyBranch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.crop = _Crop()
        self.act = nn.ReLU()
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        a = self.conv(x).relu()
        b = self.act(self.crop(a))
        return self.head(torch.cat([a.mean((2, 3)), b.flatten(2).sum(2)], 1))


def test_explorer_note_does_not_call_an_empty_map_a_token_sequence():
    from cnnwidgets.app import Explorer

    ex = Explorer(_EmptyBranch().eval(), _image(8, 8), input_size=(3, 8, 8), background=False, samples={})
    try:
        message = ex.status.message
        assert not ("token sequences" in message and "(8, 0, 0)" in message), message
        assert "no unit at this input size (e.g. crop: (8, 0, 0)); a larger input_size" in message, message
    finally:
        ex.close()


def test_a_compiled_submodule_registered_under_two_names_runs_eagerly_under_both():
    from cnnwidgets.core.probe import EagerCompiled

    net = _cnn()
    compiled = torch.compile(net[:2])
    model = nn.Sequential()
    model.a = compiled
    model.b = compiled  # the same wrapper, a second name
    with Probe(model, input_size=(3, 16, 16)) as probe:
        assert isinstance(probe.model.a, EagerCompiled) and probe.model.b is probe.model.a


def test_a_device_mismatch_is_not_explained_as_a_dtype_cast():
    from cnnwidgets.core.probe import _dtype_mismatch

    device = RuntimeError("Input type (torch.FloatTensor) and weight type (torch.cuda.FloatTensor) should be the same "
                          "or input should be a MKLDNN tensor and weight is a dense tensor")
    dtype = RuntimeError("Input type (c10::Half) and bias type (float) should be the same")
    assert not _dtype_mismatch(device) and _dtype_mismatch(dtype)
