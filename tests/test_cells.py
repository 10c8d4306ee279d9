"""Running a notebook cell again closes the explorers and views its earlier runs opened."""

from __future__ import annotations

import gc
import threading
import types
import weakref

import pytest
import torch
from torch import nn

import cnnwidgets
from cnnwidgets.app import cells
from cnnwidgets.app.filters import kernel_view
from tests.test_explorer import Tiny, make


class FakeShell:
    """What IPython's kernel shell offers: the message of the request it runs now."""

    def __init__(self) -> None:
        self.parent_header: dict = {}

    def run(self, cell: str | None, run: str) -> None:
        metadata = {"cellId": cell} if cell is not None else {}
        self.parent_header = {"header": {"msg_id": run, "msg_type": "execute_request"}, "metadata": metadata,
                              "content": {}}


@pytest.fixture
def shell(monkeypatch):
    fake = FakeShell()
    import IPython

    monkeypatch.setattr(IPython, "get_ipython", lambda: fake)
    monkeypatch.setattr(cells, "CLOSE_ON_RERUN", True)
    yield fake
    cnnwidgets.close_all()


def worker_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("cnnwidgets")]


def test_the_cell_and_its_run_are_read_from_the_request_the_kernel_runs(shell):
    shell.run("cell-a", "msg-1")
    assert cells._cell_run() == ("cell-a", "msg-1")
    shell.run(None, "msg-2")  # a front end that does not name its cells
    assert cells._cell_run() == (None, None)
    shell.parent_header = {}
    assert cells._cell_run() == (None, None)


def test_running_a_cell_again_closes_the_explorer_its_earlier_run_opened(shell):
    shell.run("cell-a", "msg-1")
    first = make(background=True, box=(4, 4, 8, 8), method="saliency")
    assert first.wait_idle(60)
    model = first.probe.user_model
    shell.run("cell-b", "msg-2")
    other = make(box=None)  # another cell's explorer is left alone
    shell.run("cell-a", "msg-3")
    second = make(model, background=True, box=(4, 4, 8, 8))
    assert first._closed and not second._closed and not other._closed
    assert cells.open_widgets() == [other, second]
    # the first explorer's threads have stopped, and it no longer holds the model's copies
    # the second explorer's live worker (it has no method: its method worker starts with the first one)
    assert first.probe.closed and worker_threads() == ["cnnwidgets-explorer"]
    ref = weakref.ref(first)
    del first
    gc.collect()
    assert ref() is None  # nothing of this module keeps it alive
    second.close()
    other.close()


def test_explorers_made_by_one_run_of_a_cell_stay_open_together(shell):
    shell.run("cell-a", "msg-1")
    one, two = make(box=None), make(box=None)
    assert not one._closed and not two._closed
    assert cells.open_widgets() == [one, two]


def test_nothing_is_closed_where_the_cell_is_not_known_or_when_switched_off(shell, monkeypatch):
    shell.run(None, "msg-1")
    one = make(box=None)
    shell.run(None, "msg-2")
    two = make(box=None)
    assert not one._closed and not two._closed
    shell.run("cell-a", "msg-3")
    three = make(box=None)
    monkeypatch.setattr(cells, "CLOSE_ON_RERUN", False)
    shell.run("cell-a", "msg-4")
    four = make(box=None)
    assert not any(ex._closed for ex in (one, two, three, four))


def test_a_view_is_closed_when_its_cell_runs_again_and_close_all_closes_everything(shell):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3)).eval()
    shell.run("cell-k", "msg-1")
    first = kernel_view(model)
    shell.run("cell-k", "msg-2")
    second = kernel_view(model)
    assert first.comm is None and second.comm is not None  # ipywidgets drops the comm of a closed widget
    shell.run("cell-e", "msg-3")
    ex = make(background=True, box=None)
    assert cells.open_widgets() == [second, ex]
    assert cnnwidgets.close_all() == 2
    assert second.comm is None and ex._closed and not worker_threads()
    assert cells.open_widgets() == [] and cnnwidgets.close_all() == 0


def test_an_explorer_closed_by_hand_or_failing_to_open_is_not_listed(shell):
    shell.run("cell-a", "msg-1")
    ex = make(box=None)
    ex.close()
    assert cells.open_widgets() == []
    model = Tiny().eval()
    with pytest.raises(KeyError, match="no.such.layer"):
        make(model, layer="no.such.layer")
    assert cells.open_widgets() == []


def test_outside_a_kernel_nothing_is_known_and_explorers_stay_open(monkeypatch):
    import IPython

    monkeypatch.setattr(IPython, "get_ipython", lambda: None)
    assert cells._cell_run() == (None, None)
    one, two = make(box=None), make(box=None)
    try:
        assert not one._closed and not two._closed
    finally:
        one.close()
        two.close()
    monkeypatch.setattr(IPython, "get_ipython", lambda: types.SimpleNamespace(parent_header="not a message"))
    assert cells._cell_run() == (None, None)


class FailsToClose:
    """Something opened in a cell whose close() raises (a view of the user's own, say)."""

    def __init__(self) -> None:
        self._closed = False
        self.calls = 0

    def close(self) -> None:
        self.calls += 1
        raise OSError("the device went away")


class Closes:
    def __init__(self) -> None:
        self._closed = False

    def close(self) -> None:
        self._closed = True


def test_one_that_fails_to_close_leaves_the_others_closed_and_is_said(shell):
    shell.run("cell-a", "msg-1")
    bad, good = FailsToClose(), Closes()
    cells.opened(bad)
    cells.opened(good)
    # was: the OSError of the first stopped the rest: `good` stayed open, and the cell's new
    # explorer was never made
    shell.run("cell-a", "msg-2")
    with pytest.warns(RuntimeWarning, match=r"closing the FailsToClose an earlier run of this cell opened failed: "
                                            r"OSError: the device went away"):
        assert cells.close_earlier_runs() == 1
    assert good._closed and bad.calls == 1
    late = Closes()
    cells.opened(late)
    with pytest.raises(RuntimeError, match=r"close_all closed 1 of 2; closing FailsToClose failed: OSError") as info:
        cells.close_all()
    assert late._closed and bad.calls == 2 and isinstance(info.value.__cause__, OSError)
    bad._closed = True  # leave nothing open for the next test
