"""Shared fixtures: offline shared test data, small deterministic models."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """Where the offline test material lives (env CNNWIDGETS_SHARED_DATA, default ../shared/data)."""
    return Path(os.environ.get("CNNWIDGETS_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if not (path / "tinyvgg-cnn-explainer").is_dir():
        pytest.skip(
            f"offline test data not found at {path}; set CNNWIDGETS_SHARED_DATA to the folder "
            "holding tinyvgg-cnn-explainer/ and images/"
        )
    return path


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _cpu_unless_asked(request, monkeypatch):
    """On a machine with a GPU, ``device="auto"`` still means the CPU in tests, so that results
    compare with the CPU references the tests compute; the tests about devices (named so) see every
    device, and those about CUDA ask for it by name. Tests run in full float32 (TF32 off): they check our code paths, not TF32's rounding."""
    if not (torch.cuda.is_available() or torch.backends.mps.is_available()):
        yield
        return
    if not any(word in request.node.name for word in ("device", "cuda", "mps")):
        from cnnwidgets.app import explorer
        from cnnwidgets.core import device

        monkeypatch.setattr(device, "available_devices", lambda: ["cpu"])
        monkeypatch.setattr(explorer, "available_devices", lambda: ["cpu"])
    cudnn, matmul = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = cudnn, matmul


@pytest.fixture(params=[1, 2], ids=["1-thread", "2-threads"])
def cpu_threads(request):
    """Runs a test with torch on 1 CPU thread (occlusion batches one after another) and on 2 (two
    batches side by side, one thread each); restores the count afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


@pytest.fixture
def image_server(tmp_path):
    """A local HTTP server for the files in tmp_path (no network needed): yields the folder, the
    base address and the list of paths requested so far."""
    import functools
    import http.server
    import threading

    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            requests.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(tmp_path)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield tmp_path, f"http://127.0.0.1:{server.server_address[1]}", requests
    server.shutdown()
    server.server_close()


@pytest.fixture
def thread_errors(monkeypatch):
    """Every exception that reached ``threading.excepthook`` or ``sys.excepthook`` during the test
    (the explorer's worker loops hand an exception that escaped their work to ``sys.excepthook``)."""
    seen: list[str] = []

    def on_thread(args):
        seen.append(f"{args.thread.name if args.thread else '?'}: {args.exc_type.__name__}: {args.exc_value}")

    def on_sys(exc_type, exc, tb):
        seen.append(f"{threading.current_thread().name}: {exc_type.__name__}: {exc}")

    monkeypatch.setattr(threading, "excepthook", on_thread)
    monkeypatch.setattr(sys, "excepthook", on_sys)
    return seen


@pytest.fixture
def one_torch_thread():
    """Runs a test with torch on one CPU thread (tiny models run fastest so); restores the count afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
