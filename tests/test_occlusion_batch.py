"""Occlusion maps of models that take one image per forward pass (``x.view(1, -1)``, an assert on
the batch): the scan falls back to one image at a time, with one warning, and gives the map of
``batch_size=1``; a model that fails on every occluded image still gets its own error."""

from __future__ import annotations

import copy
import warnings
from typing import ClassVar

import numpy as np
import pytest
import torch
from torch import nn

from cnnwidgets import ChannelActivation, ClassProbability, Probe
from cnnwidgets.methods.occlusion import ONE_IMAGE_WARNING, occlusion_map, one_image_quietly, preview_count
from tests.helpers import FailsAtTheLastPosition


def _randomized(model: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):  # folded into the fast copy: its output differs slightly
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.5, 0.5)
    return model.eval()


class FlattensTheBatch(nn.Module):
    """Runs on one image; a batch of several becomes one row, which the linear layer refuses."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 12 * 12, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.bn(self.conv(x))).view(1, -1))


class AssertsOneImage(nn.Module):
    """Asserts that the batch holds one image."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[0] == 1, "one image at a time"
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


class FoldsTheBatch(nn.Module):
    """Runs without an error on any batch, but folds a batch of several into one output row."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).transpose(0, 1).reshape(1, 4, -1).mean(-1))


class FailsWhenOccluded(nn.Module):
    """Runs on the (positive) image, fails on any input holding the zero fill. Records the batch
    size of every forward (shared by the copies the scan makes)."""

    calls: ClassVar[list[int]] = []

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        FailsWhenOccluded.calls.append(int(x.shape[0]))
        if bool((x == 0).any()):
            raise ValueError("no zeros, please")
        return self.fc(self.conv(x).mean(dim=(2, 3)))


def _image() -> torch.Tensor:
    return torch.rand(1, 3, 12, 12, generator=torch.Generator().manual_seed(1)) + 0.25  # no zeros


def _scan(model, x, target, **kwargs):
    """The map, and the one-image warnings it gave."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = occlusion_map(model, x, target, window=4, stride=2, progress=False, **kwargs)
    return result, [w for w in caught if ONE_IMAGE_WARNING in str(w.message)]


def _assert_same_map(a, b) -> None:
    np.testing.assert_array_equal(a.grid, b.grid)
    np.testing.assert_array_equal(a.filled, b.filled)
    assert a.unoccluded == b.unoccluded and a.unoccluded_label == b.unoccluded_label
    if a.labels is None:
        assert b.labels is None
    else:
        np.testing.assert_array_equal(a.labels, b.labels)
    assert (a.class_probabilities is None) == (b.class_probabilities is None)
    if a.class_probabilities is not None:
        np.testing.assert_array_equal(a.class_probabilities, b.class_probabilities)
        np.testing.assert_array_equal(a.unoccluded_probabilities, b.unoccluded_probabilities)


@pytest.mark.parametrize("make", [FlattensTheBatch, AssertsOneImage, FoldsTheBatch])
@pytest.mark.parametrize("batch_size", [None, 8])
def test_a_one_image_model_gives_the_map_of_batch_size_one_with_one_warning(cpu_threads, make, batch_size):
    model = _randomized(make())
    x = _image()
    target = ClassProbability(2)
    expected, quiet = _scan(copy.deepcopy(model), x, target, batch_size=1, keep_class_probabilities=True)
    assert quiet == [] and expected.complete
    result, warned = _scan(model, x, target, batch_size=batch_size, keep_class_probabilities=True)
    assert result.complete and not result.cancelled
    assert len(warned) == 1 and warned[0].category is RuntimeWarning
    assert warned[0].filename == __file__  # points at the caller's occlusion_map
    assert result.one_image and not expected.one_image
    _assert_same_map(result, expected)


def test_a_caller_that_shows_the_fall_back_itself_can_leave_the_warning_out():
    model, x = _randomized(FlattensTheBatch()), _image()
    with one_image_quietly():
        result, warned = _scan(model, x, 1)
    assert warned == [] and result.one_image and result.complete
    _, warned = _scan(model, x, 1)  # after the block: warned again
    assert len(warned) == 1


def test_the_warning_says_what_happens_and_how_to_silence_it():
    assert "one image per forward pass" in ONE_IMAGE_WARNING
    assert "slower" in ONE_IMAGE_WARNING and "batch_size=1" in ONE_IMAGE_WARNING


def test_a_probe_falls_back_on_every_scan_and_a_second_scan_matches_too(cpu_threads):
    model = _randomized(FlattensTheBatch())
    x = _image()
    expected, _ = _scan(copy.deepcopy(model), x, 1, batch_size=1)
    with Probe(model) as probe:
        first, warned_first = _scan(probe, x, 1)  # prepares the fast copy after falling back
        second, warned_second = _scan(probe, x, 1)  # runs the kept fast copy from the start
    assert len(warned_first) == 1 and len(warned_second) == 1
    _assert_same_map(first, expected)
    _assert_same_map(second, expected)


def test_streaming_preview_and_order_are_those_of_batch_size_one(cpu_threads):
    model = _randomized(FlattensTheBatch())
    x = torch.rand(1, 3, 12, 12, generator=torch.Generator().manual_seed(2)) + 0.25
    seen_one, seen = [], []
    expected = occlusion_map(copy.deepcopy(model), x, 0, window=2, stride=1, batch_size=1, progress=False,
                             callback=seen_one.append)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = occlusion_map(model, x, 0, window=2, stride=1, progress=False, callback=seen.append)
    _assert_same_map(result, expected)
    assert [r.done for r in seen] == [r.done for r in seen_one] == list(range(1, result.total + 1))
    for partial, partial_one in zip(seen, seen_one):
        np.testing.assert_array_equal(partial.filled, partial_one.filled)
        np.testing.assert_array_equal(partial.grid, partial_one.grid)
        assert partial.preview_ready == partial_one.preview_ready
    assert sum(not r.preview_ready for r in seen) == preview_count(*result.shape) - 1


def test_a_scan_that_fell_back_can_be_cancelled(cpu_threads):
    model = _randomized(AssertsOneImage())
    x = _image()
    seen = []

    def stop() -> bool:
        return len(seen) >= 3

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = occlusion_map(model, x, 0, window=4, stride=2, progress=False, callback=seen.append, cancel=stop)
    expected = occlusion_map(copy.deepcopy(model), x, 0, window=4, stride=2, batch_size=1, progress=False)
    assert result.cancelled and not result.complete
    assert 3 <= result.done < result.total and result.filled.sum() == result.done
    np.testing.assert_array_equal(result.grid[result.filled], expected.grid[result.filled])


def test_a_target_on_an_internal_layer_falls_back_the_same_way(cpu_threads):
    model = _randomized(AssertsOneImage())
    x = _image()
    target = ChannelActivation("conv", 1)
    expected, quiet = _scan(copy.deepcopy(model), x, target, batch_size=1)
    result, warned = _scan(model, x, target)
    assert quiet == [] and len(warned) == 1
    _assert_same_map(result, expected)


def test_a_layer_before_the_batch_is_flattened_needs_no_fall_back():
    model = _randomized(FlattensTheBatch())
    result, warned = _scan(model, _image(), ChannelActivation("conv", 0))
    assert result.complete and warned == []


@pytest.mark.parametrize("target", [0, ChannelActivation("conv", 0)], ids=["output", "layer"])
def test_a_model_that_fails_on_every_occluded_image_gets_its_own_error_after_one_retry(cpu_threads, target):
    model = FailsWhenOccluded().eval()
    FailsWhenOccluded.calls.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(RuntimeError, match=r"failed on an (occluded batch|input) of shape \(8, 3, 12, 12\)") as info:
            occlusion_map(model, _image(), target, window=4, stride=2, batch_size=8, fill=0.0,
                          order="raster", progress=False)
    assert "no zeros, please" in str(info.value) and isinstance(info.value.__cause__, ValueError)
    assert not any(ONE_IMAGE_WARNING in str(w.message) for w in caught)
    occluded = FailsWhenOccluded.calls[FailsWhenOccluded.calls.index(8):]
    assert occluded == [8, 1]  # the batch, then its first image alone: no retry loop


def test_an_explicit_batch_size_of_one_and_a_batchable_model_give_no_warning(cpu_threads):
    x = _image()
    one, warned_one = _scan(_randomized(FlattensTheBatch()), x, 0, batch_size=1)
    assert one.complete and warned_one == []
    batchable = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                              nn.Linear(4, 5)).eval()
    result, warned = _scan(batchable, x, 0)
    assert result.complete and warned == []


def test_a_failure_after_the_first_batch_is_raised_as_it_is(cpu_threads):
    """Only the first batch is retried; a later failure (here from a worker thread) propagates."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(RuntimeError, match=r"failed on an occluded batch of shape .*: KeyError") as info:
            occlusion_map(FailsAtTheLastPosition().eval(), _image(), 0, window=4, stride=2, batch_size=4,
                          fill=0.0, order="raster", progress=False)
    assert isinstance(info.value.__cause__, KeyError)
    assert not any(ONE_IMAGE_WARNING in str(w.message) for w in caught)
    assert torch.get_num_threads() == cpu_threads


class RunsOutOfMemoryOnBatches(nn.Module):
    """Runs on one image; a batch of several runs the device out of memory (no fall back then)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.fc(self.conv(x).mean(dim=(2, 3)))


def test_a_batch_that_runs_out_of_memory_is_not_taken_for_a_one_image_model():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(RuntimeError, match="out of memory"):
            occlusion_map(RunsOutOfMemoryOnBatches().eval(), _image(), 0, window=4, stride=2, progress=False)
    assert not any(ONE_IMAGE_WARNING in str(w.message) for w in caught)


def test_gpu_batches_are_bounded_by_the_largest_activation_and_the_free_memory(monkeypatch):
    from types import SimpleNamespace

    from cnnwidgets.methods import occlusion

    image = torch.zeros(1, 3, 224, 224)
    vgg_like = {"features.1": SimpleNamespace(output_shape=(64, 224, 224)), "fc": SimpleNamespace(output_shape=(10,))}
    small = {"features.1": SimpleNamespace(output_shape=(8, 28, 28))}
    gib = 2**30
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (8 * gib, 16 * gib))
    cuda = torch.device("cuda")
    # 512 MiB over 12.8 MB per image: 41 images, where a fixed 128 needed 1.6 GB per activation
    assert occlusion._auto_batch_size(SimpleNamespace(device=cuda, layers=vgg_like), image) == 41
    # little free memory: an eighth of it
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (gib, 16 * gib))
    assert occlusion._auto_batch_size(SimpleNamespace(device=cuda, layers=vgg_like), image) == 10
    # small activations: at most 128 images
    assert occlusion._auto_batch_size(SimpleNamespace(device=cuda, layers=small), image) == 128
    # a driver that does not answer: the fixed bound alone
    def no_answer(device=None):
        raise RuntimeError("CUDA driver not initialised")

    monkeypatch.setattr(torch.cuda, "mem_get_info", no_answer)
    assert occlusion._auto_batch_size(SimpleNamespace(device=cuda, layers=vgg_like), image) == 41
    # MPS shares the system's memory: the fixed bound
    mps = torch.device("mps")
    assert occlusion._auto_batch_size(SimpleNamespace(device=mps, layers=vgg_like), image) == 41
    # the CPU keeps its own bound (28 MiB per activation)
    cpu = torch.device("cpu")
    assert occlusion._auto_batch_size(SimpleNamespace(device=cpu, layers=vgg_like), image) == 2


def test_the_preview_is_shared_by_the_workers_and_the_plan_covers_every_position_once():
    from cnnwidgets.methods.occlusion import _FIRST_BATCH, _batches, _preview_plan

    for total, size, cut, workers in [(625, 9, 25, 2), (625, 9, 25, 4), (169, 9, 9, 2), (625, 9, 25, 1),
                                      (625, 1, 25, 2), (100, 64, 100, 2), (30, 4, 29, 3), (625, 4, 25, 2)]:
        plan = _preview_plan(total, size, cut, workers)
        assert plan[0][0] == 0 and plan[-1][1] == total and all(a[1] == b[0] for a, b in zip(plan, plan[1:]))
        assert cut in {end for _, end in plan}  # a range ends exactly where the preview does
        assert max(end - start for start, end in plan) <= 2 * size
        preview = [r for r in plan if r[1] <= cut]
        if plan != _batches(total, size, cut):  # split: a small first batch, then one range per worker
            assert preview[0] == (0, min(size, _FIRST_BATCH)) and len(preview) == 1 + workers
    assert _preview_plan(625, 9, 25, 2)[:3] == [(0, 3), (3, 14), (14, 25)]
    assert _preview_plan(625, 4, 25, 2) == _batches(625, 4, 25)  # 11 > 2 x 4: kept as it was
    assert _preview_plan(625, 9, 25, 1) == _batches(625, 9, 25)


def test_a_preview_shared_by_the_workers_gives_the_map_of_one_batch_at_a_time(cpu_threads, monkeypatch):
    import cnnwidgets.methods.occlusion as occlusion_module

    model = _randomized(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)))
    x = _image()
    plans = []
    plan_of = occlusion_module._preview_plan
    monkeypatch.setattr(occlusion_module, "_preview_plan", lambda *a: plans.append(plan_of(*a)) or plans[-1])
    monkeypatch.setattr(occlusion_module, "_auto_batch_size", lambda probe, image: 4)
    shared = occlusion_map(model, x, 1, window=2, stride=1, progress=False)
    one = occlusion_map(copy.deepcopy(model), x, 1, window=2, stride=1, batch_size=1, progress=False)
    np.testing.assert_allclose(shared.grid, one.grid, rtol=1e-5, atol=1e-6)  # other batch sizes: float rounding
    assert shared.complete and np.array_equal(shared.labels, one.labels)
    if torch.get_num_threads() > 1:
        assert plans and plans[0][0] == (0, 3)  # the preview was split
