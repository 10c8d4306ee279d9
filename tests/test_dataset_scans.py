"""Whole-data-set runs as a researcher makes them: interrupted and resumed top-k scans,
checkpoints reused across calls, shuffling loaders, progress totals, and a feature-evolution
recorder inside a training run that diverges.

Each test states what the researcher should get.
"""

from __future__ import annotations


import pytest
import torch
from torch.utils.data import DataLoader, SubsetRandomSampler, TensorDataset

from cnnwidgets.methods.evolution import FeatureEvolutionRecorder
from cnnwidgets.methods.topk import TopKActivations, scan_topk
from tests.helpers import small_classifier


tiny_net = small_classifier  # two convolutions with ReLUs, global pooling, a 5-class head


def images(n: int = 100, size: int = 16, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _same_scan(a: TopKActivations, b: TopKActivations) -> bool:
    return all(
        torch.equal(getattr(a, field)[layer], getattr(b, field)[layer])
        for field in ("values", "image_indices", "positions", "labels")
        for layer in a.layers
    )


class _FailingImages(dict):
    """Kept images whose next insertion fails, as a Ctrl-C (or a MemoryError) landing while
    ``update`` copies a batch's referenced images."""

    armed = False

    def __setitem__(self, key, value):
        if _FailingImages.armed:
            raise KeyboardInterrupt
        super().__setitem__(key, value)


def test_update_is_atomic_when_copying_kept_images_is_interrupted():
    # TopKActivations.update documents "if it raises, the state is unchanged"; with
    # keep_images=True it commits the merged entries before it copies the images they refer to.
    model, x = tiny_net(), images(48)
    from cnnwidgets import Probe

    with Probe(model, device="cpu") as probe:
        state = TopKActivations(["3"], k=4, keep_images=True)
        state.update(probe, x[:16])
        state.update(probe, x[16:32])
        before = {f: getattr(state, f)["3"].clone() for f in ("values", "image_indices", "positions", "labels")}
        consumed = state.consumed
        _FailingImages.armed = False
        state.images = _FailingImages(state.images)
        _FailingImages.armed = True
        try:
            state.update(probe, x[32:48])
        except KeyboardInterrupt:
            pass  # interrupted: the state must be as before (a fix that stages the copies may not be)
        else:
            return
        finally:
            _FailingImages.armed = False
    assert state.consumed == consumed
    for field, tensor in before.items():
        assert torch.equal(getattr(state, field)["3"], tensor), f"{field} changed by an update that raised"


def test_checkpoint_written_on_interrupt_resumes_to_the_full_scan(tmp_path):
    # The interrupt lands while update copies kept images: the checkpoint the except-branch writes
    # must still describe exactly `consumed` images, so the resumed scan equals one full scan
    # (before: entries of the interrupted batch were saved with consumed not counting it, the
    # batch was scanned again on resume, and one image filled two slots of a channel).
    model, x = tiny_net(), images(100)
    full = scan_topk(model, x, ["3"], k=4, batch_size=16, progress=False)
    path = tmp_path / "topk.pt"

    def interrupt_during_third_batch(state):
        if state.batches == 2:
            state.images = _FailingImages(state.images)
            _FailingImages.armed = True

    try:
        scan_topk(model, x, ["3"], k=4, batch_size=16, progress=False, checkpoint=path,
                  callback=interrupt_during_third_batch)
    except KeyboardInterrupt:
        saved = TopKActivations.load(path)
        assert int(saved.image_indices["3"].max()) < saved.consumed, "the checkpoint refers to images it did not count"
    finally:
        _FailingImages.armed = False
    resumed = scan_topk(model, x, ["3"], k=4, batch_size=16, progress=False, checkpoint=path)
    for channel in range(16):
        indices = resumed.image_indices["3"][channel].tolist()
        assert len(set(indices)) == len(indices), f"channel {channel}: one image twice with per_image=True: {indices}"
    assert _same_scan(resumed, full)


def test_checkpoint_of_a_scan_without_images_refuses_keep_images(tmp_path):
    # A researcher asks for keep_images=True (a shuffling loader, patches needed later); a
    # checkpoint path left from a keep_images=False run must not silently give a result
    # without images (patches then fail with "keep_images=False").
    model, x = tiny_net(), images(100)
    path = tmp_path / "topk.pt"
    scan_topk(model, x, ["3"], k=4, progress=False, stop_after=40, checkpoint=path, keep_images=False)
    with pytest.raises(ValueError, match="keep_images"):
        scan_topk(model, x, ["3"], k=4, progress=False, checkpoint=path, keep_images=True)


def test_finished_checkpoint_is_not_returned_for_other_data(tmp_path):
    # A finished checkpoint is returned without scanning; an unfinished one checks that the data
    # starts with the same image. The finished one checks nothing: re-running a notebook cell on
    # the validation set (or on images of another size) returns the training set's result.
    model = tiny_net()
    path = tmp_path / "topk.pt"
    scan_topk(model, images(64, seed=1), ["3"], k=4, progress=False, checkpoint=path)
    with pytest.raises(ValueError):
        scan_topk(model, images(32, seed=2), ["3"], k=4, progress=False, checkpoint=path)
    with pytest.raises(ValueError):
        scan_topk(model, images(32, size=24, seed=2), ["3"], k=4, progress=False, checkpoint=path)


def test_shuffled_scan_without_kept_images_does_not_give_wrong_patches():
    # With a shuffling loader and keep_images=False the image indices name positions in a random
    # order, not data-set items; patches(images=loader.dataset) must not silently crop other images.
    model, x = tiny_net(), images(100)
    dataset = TensorDataset(x, torch.arange(100) % 5)
    torch.manual_seed(3)
    shuffled = scan_topk(model, DataLoader(dataset, batch_size=16, shuffle=True), ["3"], k=4,
                         progress=False, keep_images=False)
    with pytest.raises(ValueError, match="images does not start with the first scanned image"):
        shuffled.patches("3", 0, images=dataset)


class _Bars:
    totals: list = []

    def __init__(self, *args, total=None, **kwargs):
        _Bars.totals.append(total)

    def update(self, n=1):
        pass

    def close(self):
        pass


@pytest.mark.parametrize("make_loader, expected", [
    (lambda ds: DataLoader(ds, batch_size=16, sampler=SubsetRandomSampler(range(30))), 30),
    (lambda ds: DataLoader(ds, batch_size=16, drop_last=True), 96),
])
def test_progress_total_counts_what_the_loader_yields(monkeypatch, make_loader, expected):
    # data_size reads len(loader.dataset): a sampler that takes part of the data set showed
    # "30/100" at the end, and drop_last=True gave no total although len(loader) is known.
    import cnnwidgets.methods.topk as topk

    monkeypatch.setattr(topk, "tqdm", _Bars)
    _Bars.totals = []
    dataset = TensorDataset(images(100), torch.arange(100) % 5)
    result = scan_topk(tiny_net(), make_loader(dataset), ["3"], k=4)
    assert result.consumed == expected
    assert _Bars.totals == [expected]


def test_top_k_file_with_incomplete_metadata_is_a_value_error(tmp_path):
    # TopKActivations.load documents ValueError for a file that is not a top-k state.
    path = tmp_path / "bad.pt"
    torch.save({"meta": '{"format": "cnnwidgets.topk/1"}', "tensors": {}}, path)
    with pytest.raises(ValueError):
        TopKActivations.load(path)


def test_recorder_does_not_store_nan_frames_silently():
    # Training diverged (a NaN weight): scan_topk, dead_channels and invariance_curves refuse
    # non-finite activations; the recorder, which sits in a training loop, warns and stores nothing
    model = tiny_net().train()
    recorder = FeatureEvolutionRecorder(model, images(8), {"1": [0, 1]}, epochs=None, projection=None)
    try:
        assert recorder.record(0)
        with torch.no_grad():
            model[0].weight[0, 0, 0, 0] = float("nan")
        with pytest.warns(RuntimeWarning, match=r"epoch 1 not recorded: the activations of layer '1' are not finite"):
            assert recorder.record(1) is False
        assert recorder.result().epochs == [0]  # nothing stored for epoch 1
        with torch.no_grad():
            model[0].weight[0, 0, 0, 0] = 0.0  # recovered: recorded again
        assert recorder.record(2) and recorder.result().epochs == [0, 2]
    finally:
        recorder.close()


def test_a_failed_checkpoint_write_leaves_the_last_good_file_and_no_partial_one(tmp_path, monkeypatch):
    state = scan_topk(tiny_net(), images(8), ["1"], k=2, progress=False)
    path = state.save(tmp_path / "ck.pt")
    before = path.read_bytes()

    def fails(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", fails)
    with pytest.raises(OSError, match="disk full"):
        state.save(path)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["ck.pt"]


def test_a_closed_recorder_says_so_and_keeps_its_frames():
    recorder = FeatureEvolutionRecorder(tiny_net(), images(4), {"1": [0]}, epochs=None, projection=None)
    assert recorder.record(0)
    recorder.close()
    with pytest.raises(RuntimeError, match="this recorder is closed; its frames stay readable"):
        recorder.record(1)
    assert recorder.result().epochs == [0]


def test_a_finished_checkpoint_is_handed_back_for_the_same_shuffled_data_and_refused_for_another_count(tmp_path):
    model, x = tiny_net(), images(20)
    path = tmp_path / "ck.pt"
    loader = DataLoader(TensorDataset(x, torch.zeros(20)), batch_size=5, shuffle=True)
    first = scan_topk(model, loader, ["1"], k=2, keep_images=True, checkpoint=path, progress=False)
    for _ in range(2):  # re-running the cell: the shuffled loader's first image differs every pass
        again = scan_topk(model, loader, ["1"], k=2, keep_images=True, checkpoint=path, progress=False)
        assert torch.equal(again.values["1"], first.values["1"])
    fewer = DataLoader(TensorDataset(x[:15], torch.zeros(15)), batch_size=5, shuffle=True)
    with pytest.raises(ValueError, match="covered 20 images; this data has 15"):
        scan_topk(model, fewer, ["1"], k=2, keep_images=True, checkpoint=path, progress=False)


def test_patches_from_float64_images_are_not_refused_as_other_data():
    model = tiny_net()
    x = torch.rand(10, 3, 16, 16, dtype=torch.float64)
    state = scan_topk(model, x, ["1"], k=2, keep_images=False, progress=False)
    assert len(state.source_images("1", 0, images=x)) == 2


def test_a_resume_state_with_another_keep_images_is_refused():
    model, x = tiny_net(), images(12)
    half = scan_topk(model, x, ["1"], k=2, keep_images=False, stop_after=6, batch_size=6, progress=False)
    with pytest.raises(ValueError, match="keep_images=False; this call asks for keep_images=True"):
        scan_topk(model, x, ["1"], k=2, keep_images=True, resume=half, batch_size=6, progress=False)
