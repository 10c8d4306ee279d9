"""The fast inference copy of occlusion maps uses the memory of the probe's copy for every tensor it
does not change, and never computes with a mix of old and new weights."""

from __future__ import annotations

import copy
import threading

import numpy as np
import torch
from torch import nn

from cnnwidgets import ClassLogit, ModelSnapshot, Probe
from cnnwidgets.core.probe import set_memory_format
from cnnwidgets.methods import occlusion, occlusion_map
from cnnwidgets.methods._fold import inference_copy, shared_tensors


class Net(nn.Module):
    """Two conv + batch norm pairs (folded) and a convolution and a head without one (not folded)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu1 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(8, 12, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(12)
        self.relu2 = nn.ReLU()
        self.conv3 = nn.Conv2d(12, 6, 3, padding=1)
        self.relu3 = nn.ReLU()
        self.head = nn.Linear(6, 5)

    def forward(self, x):
        x = self.pool(self.relu1(self.bn1(self.conv1(x))))
        x = self.relu2(self.bn2(self.conv2(x)))
        x = self.relu3(self.conv3(x))
        return self.head(x.mean(dim=(2, 3)))


FOLDED = {"conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias"}


def net() -> nn.Module:
    """With batch-norm statistics far from the identity, so that folding changes the weights."""
    model = Net()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.3)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.3)
    return model.eval()


def pointer(t: torch.Tensor) -> tuple[int, int]:
    return t.untyped_storage().data_ptr(), t.storage_offset()


def scan(probe_or_model, x, **kwargs):
    return occlusion_map(probe_or_model, x, ClassLogit(2), window=8, stride=2, batch_size=8, progress=False, **kwargs)


def test_the_fast_copy_uses_the_probes_memory_except_for_folded_layers():
    x = torch.randn(1, 3, 32, 32)
    with Probe(net()) as probe:
        snapshot = ModelSnapshot.take(probe.model)
        scan(probe, x)
        _, fast, traced = occlusion._FAST_COPIES[probe][True]
        assert traced and probe.channels_last  # folded, in place, and converted to channels-last
        own = dict((*probe.model.named_parameters(), *probe.model.named_buffers()))
        tensors = dict((*fast.named_parameters(), *fast.named_buffers()))
        assert FOLDED <= tensors.keys() and not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
        for name, t in tensors.items():
            if name in FOLDED:  # conv2 had no bias: folding gives it one
                assert name not in own or pointer(t) != pointer(own[name]), name
            else:
                assert pointer(t) == pointer(own[name]) and t.stride() == own[name].stride(), name
                assert t is not own[name]  # an alias: converting one side leaves the other's object alone
        assert sorted(shared_tensors(fast, probe.model)) == sorted(tensors.keys() - FOLDED)
        snapshot.assert_unchanged(probe.model)  # neither the fold nor the in-place ReLUs wrote into it


def test_a_model_without_batch_norm_costs_no_weight_memory():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(3))
    model(torch.zeros(1, 3, 12, 12))
    model.eval()
    copy_, report = inference_copy(model, share=True)
    names = [n for n, _ in (*copy_.named_parameters(), *copy_.named_buffers())]
    assert report.folded == [] and report.inplace == ["1", "3"]
    assert sorted(shared_tensors(copy_, model)) == sorted(names) and len(names) == 6
    unshared, _ = inference_copy(model)
    assert shared_tensors(unshared, model) == []


def test_a_shared_copy_computes_what_an_unshared_one_does_to_the_bit():
    model = net()
    x = torch.randn(4, 3, 32, 32)
    shared, report = inference_copy(model, share=True)
    unshared, _ = inference_copy(model)
    assert len(report.folded) == 2
    with torch.inference_mode():
        assert torch.equal(shared(x), unshared(x))


def test_occlusion_maps_are_those_of_an_unshared_copy_to_the_bit(cpu_threads, monkeypatch):
    model, x = net(), torch.randn(1, 3, 32, 32)
    shared = scan(model, x)
    real = occlusion.inference_copy
    monkeypatch.setattr(occlusion, "inference_copy", lambda m, share=False, **kw: real(m, **kw))
    unshared = scan(model, x)
    np.testing.assert_array_equal(shared.grid, unshared.grid)
    assert shared.unoccluded == unshared.unoccluded


def test_after_the_user_changes_the_model_the_next_map_uses_the_new_weights_everywhere():
    model, x = net(), torch.randn(1, 3, 32, 32)
    with Probe(model) as probe:
        scan(probe, x)
        with torch.no_grad():  # a folded layer (its batch norm) and an unfolded one
            model.bn2.running_var.mul_(4.0)
            model.bn1.weight.mul_(-1.0)
            model.head.weight.mul_(-2.0)
        after = scan(probe, x)
        fast = occlusion._FAST_COPIES[probe][True][1]
        assert pointer(fast.head.weight) == pointer(probe.model.head.weight)
    fresh = scan(copy.deepcopy(model), x)  # a new probe's copy of the changed model
    np.testing.assert_array_equal(after.grid, fresh.grid)


def test_a_write_into_the_probes_copy_itself_makes_a_new_fast_copy():
    model, x = net(), torch.randn(1, 3, 32, 32)
    with Probe(model) as probe:
        scan(probe, x)
        first = occlusion._FAST_COPIES[probe][True][1]
        with torch.no_grad():
            probe.model.bn2.running_mean.add_(1.0)  # folded into conv2: the old fast copy cannot show it
        probe.clear_cache()  # the outputs the probe keeps for images predate the write too
        assert occlusion._cached_fast_model(probe, True) is None
        after = scan(probe, x)
        assert occlusion._FAST_COPIES[probe][True][1] is not first
        unfolded = scan(probe, x, fold_batchnorm=False)  # the probe's copy as it is, nothing folded
    np.testing.assert_allclose(after.grid, unfolded.grid, rtol=1e-5, atol=1e-5)


def test_a_refresh_during_a_scan_never_mixes_old_folded_and_new_unfolded_weights(cpu_threads):
    # The probe's refresh writes the new weights into the tensors the fast copy shares, but not into
    # its folded ones. Every position must be scored with the old weights or the new, never a mix.
    model, x = net(), torch.randn(1, 3, 32, 32)
    old = copy.deepcopy(model)
    with torch.no_grad():
        new = copy.deepcopy(model)
        new.bn1.running_var.mul_(4.0)
        new.bn2.weight.mul_(-1.0)
        new.conv3.weight.mul_(-1.5)
        new.head.weight.mul_(-2.0)
    expected_old, expected_new = scan(old, x).grid, scan(new, x).grid
    calls = []

    def train_then_refresh(partial):
        calls.append(partial.done)
        if len(calls) == 2:  # after the preview and one more batch, with further batches in flight
            model.load_state_dict(new.state_dict())
            probe.sync()

    with Probe(model) as probe:
        scan(probe, x)  # the fast copy is made and kept
        fast_before = occlusion._FAST_COPIES[probe][True][1]
        result = scan(probe, x, callback=train_then_refresh)
        assert occlusion._FAST_COPIES[probe][True][1] is fast_before  # the scan made no new copy
    assert result.complete and probe.version == 1
    is_old = np.isclose(result.grid, expected_old, rtol=1e-4, atol=1e-5)
    is_new = np.isclose(result.grid, expected_new, rtol=1e-4, atol=1e-5)
    assert (is_old | is_new).all(), np.argwhere(~(is_old | is_new))
    assert is_old.sum() >= calls[1] and is_new.any()  # the first batches ran on the old weights
    positions = occlusion.scan_order(*result.shape, "coarse_first")[0]
    last = positions[-8:]
    assert is_new[last[:, 0], last[:, 1]].all() and not np.allclose(expected_old, expected_new)


def test_a_scan_on_unchanged_weights_stays_on_the_fast_copy(monkeypatch):
    runs = []
    monkeypatch.setattr(occlusion._ProbeOutput, "__call__", lambda self, batch: runs.append(batch) or 1 / 0)
    x = torch.randn(1, 3, 32, 32)
    with Probe(net()) as probe:
        occlusion_map(probe, x, ClassLogit(2), window=8, stride=8, progress=False)  # one batch: copy first
        result = scan(probe, x)
    assert result.complete and runs == []


def test_converting_either_side_leaves_the_other_alone():
    model = net()
    set_memory_format(model, True)
    copy_, _ = inference_copy(model, share=True)
    head, conv3 = model.head.weight, model.conv3.weight
    strides, where = conv3.stride(), pointer(conv3)
    set_memory_format(copy_, False)  # the copy's conv3 weight gets a new tensor; the model's keeps its own
    assert model.conv3.weight is conv3 and conv3.stride() == strides and pointer(conv3) == where
    assert pointer(copy_.conv3.weight) != where and copy_.conv3.weight.is_contiguous()
    copy_.to(torch.float64)
    assert model.head.weight is head and head.dtype == torch.float32
    copy_, _ = inference_copy(model, share=True)
    set_memory_format(model, False)  # the other way round: the copy keeps the storage it computes with
    assert pointer(copy_.conv3.weight) == where and copy_.conv3.weight.stride() == strides


def test_the_unmodified_copy_shares_every_tensor():
    x = torch.randn(1, 3, 32, 32)
    with Probe(net()) as probe:
        probe.logits(x)
        model = occlusion._unmodified_copy(probe)
        names = [n for n, _ in (*model.named_parameters(), *model.named_buffers())]
        assert sorted(shared_tensors(model, probe.model)) == sorted(names)
        with torch.inference_mode():
            torch.testing.assert_close(model(x), probe.logits(x), rtol=0, atol=0)


def test_the_probes_write_sequence_is_odd_exactly_while_it_writes_new_weights(monkeypatch):
    model = net()
    seen = []
    real_copy = torch.Tensor.copy_

    def copy_and_look(self, *args, **kwargs):
        seen.append(probe.write_sequence)
        return real_copy(self, *args, **kwargs)

    with Probe(model) as probe:
        start = probe.write_sequence
        assert start % 2 == 0
        probe.sync()  # nothing changed: nothing written
        assert probe.write_sequence == start
        with torch.no_grad():
            model.conv3.weight.mul_(2.0)
        monkeypatch.setattr(torch.Tensor, "copy_", copy_and_look)
        probe.sync()
        monkeypatch.setattr(torch.Tensor, "copy_", real_copy)
        assert seen and set(seen) == {start + 1}  # odd during every write
        assert probe.write_sequence == start + 2 and probe.version == 1
        model.conv3 = nn.Conv2d(12, 6, 3, padding=1)  # a new module: a new copy, no write into the old
        probe.sync()
        assert probe.write_sequence == start + 2 and probe.version == 2


def test_a_write_under_way_makes_the_fast_copy_stale_before_any_counter_moved(monkeypatch):
    # The check after a batch must not take a refresh that has begun, but not yet finished its first
    # write, for no refresh: the batch may have read a half-written tensor.
    model, x = net(), torch.randn(1, 3, 32, 32)
    verdicts = []
    real_copy = torch.Tensor.copy_

    def look_then_copy(self, *args, **kwargs):
        if not verdicts:
            verdicts.append(shares.unchanged(probe))
        return real_copy(self, *args, **kwargs)

    with Probe(model) as probe:
        scan(probe, x)
        shares = occlusion._shares_of(occlusion._FAST_COPIES[probe][True][1])
        assert shares.unchanged(probe)
        with torch.no_grad():
            model.conv3.weight.mul_(2.0)
        monkeypatch.setattr(torch.Tensor, "copy_", look_then_copy)
        probe.sync()
        monkeypatch.setattr(torch.Tensor, "copy_", real_copy)
        assert verdicts == [False]
        assert not shares.unchanged(probe)  # and after the refresh


def test_the_check_after_a_batch_does_not_wait_for_a_capture_in_progress():
    # A live view's capture holds the probe's lock; the occlusion scan's check after each of its
    # batches reads the write sequence instead of waiting for it.
    model, x = net(), torch.randn(1, 3, 32, 32)
    with Probe(model) as probe:
        scan(probe, x)
        shares = occlusion._shares_of(occlusion._FAST_COPIES[probe][True][1])
        holding, release, answers = threading.Event(), threading.Event(), []

        def hold_the_lock():
            with probe._lock:
                holding.set()
                release.wait(10)

        holder = threading.Thread(target=hold_the_lock)
        holder.start()
        try:
            assert holding.wait(10)
            checker = threading.Thread(target=lambda: answers.append(shares.unchanged(probe)))
            checker.start()
            checker.join(5)
            assert answers == [True]  # answered while the lock was held
        finally:
            release.set()
            holder.join()
