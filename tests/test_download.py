"""Downloading an image from an http(s) address is bounded in time: connecting, the server's answer
and the whole download (cnnwidgets.core.images.DOWNLOAD_TIMEOUT / DOWNLOAD_DEADLINE).

Every server here is local (127.0.0.1, port 0); the timeouts are shortened so each test takes ~1 s.
"""

from __future__ import annotations

import http.server
import io
import re
import socket
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from cnnwidgets.core import images
from cnnwidgets.core.images import load_image

TIMEOUT = 0.5  # seconds, for DOWNLOAD_TIMEOUT
DEADLINE = 1.0  # seconds, for DOWNLOAD_DEADLINE


def _png(size: tuple[int, int] = (40, 20)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (255, 0, 0)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def short_timeouts(monkeypatch):
    # raising=False: before DOWNLOAD_DEADLINE existed, the tests fail on their assertions, not here
    monkeypatch.setattr(images, "DOWNLOAD_TIMEOUT", TIMEOUT)
    monkeypatch.setattr(images, "DOWNLOAD_DEADLINE", DEADLINE, raising=False)


@pytest.fixture
def server():
    """A local HTTP server whose GET behaviour each test sets: ``serve(handler)`` gives its address;
    ``handler(request)`` writes the response. ``release`` is set at teardown so stalled handlers end."""
    release = threading.Event()
    behaviour = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            try:
                behaviour["handler"](self, release)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up, as it should

        def log_message(self, *args) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()

    def serve(handler) -> str:
        behaviour["handler"] = handler
        return f"http://127.0.0.1:{httpd.server_address[1]}/photo.png"

    yield serve
    release.set()
    httpd.shutdown()
    httpd.server_close()


def _trickle(total: int, piece: int = 10, every: float = 0.05, give_up: float = 4.0):
    """A handler that announces ``total`` bytes and sends ``piece`` bytes every ``every`` seconds,
    each well within the socket timeout, and stops after ``give_up`` s (so that code without a
    deadline gets a truncated file, not a test that hangs)."""
    def handler(request, release) -> None:
        request.send_response(200)
        request.send_header("Content-Type", "image/png")
        request.send_header("Content-Length", str(total))
        request.end_headers()
        request.wfile.flush()
        start = time.monotonic()
        sent = 0
        while sent < total and time.monotonic() - start < give_up and not release.is_set():
            request.wfile.write(b"x" * piece)
            request.wfile.flush()
            sent += piece
            time.sleep(every)
        request.close_connection = True
    return handler


def _send(body: bytes, *, pieces: int = 1, every: float = 0.0, chunked: bool = False):
    """A handler that sends ``body`` in ``pieces`` parts, ``every`` seconds apart (chunked encoding if asked)."""
    def handler(request, release) -> None:
        request.send_response(200)
        request.send_header("Content-Type", "image/png")
        if chunked:
            request.send_header("Transfer-Encoding", "chunked")
        else:
            request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        step = -(-len(body) // pieces)
        for i in range(0, len(body), step):
            part = body[i:i + step]
            request.wfile.write(b"%x\r\n%s\r\n" % (len(part), part) if chunked else part)
            request.wfile.flush()
            time.sleep(every)
        if chunked:
            request.wfile.write(b"0\r\n\r\n")
            request.wfile.flush()
    return handler


# ---------------------------------------------------------------- the defaults
def test_the_default_timeouts_are_short_enough_for_a_notebook():
    # a server that never answers fails within DOWNLOAD_TIMEOUT; no download blocks past DOWNLOAD_DEADLINE
    assert 5 <= images.DOWNLOAD_TIMEOUT <= 15
    assert 30 <= getattr(images, "DOWNLOAD_DEADLINE", float("inf")) <= 120
    assert "DOWNLOAD_DEADLINE" in images.__all__ and "DOWNLOAD_TIMEOUT" in images.__all__


# ---------------------------------------------------------------- a normal server still works
def test_an_image_sent_at_once_or_in_pieces_is_downloaded(server, short_timeouts):
    body = _png()
    for handler in (_send(body), _send(body, pieces=5, every=0.05), _send(body, pieces=4, every=0.05, chunked=True)):
        out = load_image(server(handler))
        assert out.size == (40, 20) and out.getpixel((2, 2)) == (255, 0, 0)
    assert images._download(server(_send(body, pieces=3, every=0.02))) == body


def test_the_size_cap_still_applies(server, monkeypatch):
    monkeypatch.setattr(images, "DOWNLOAD_LIMIT", 10)  # bytes; the PNG has more
    for handler in (_send(_png()), _send(_png(), chunked=True)):  # announced, and not announced
        with pytest.raises(ValueError, match="larger than 0 MiB; save it and pass its path"):
            load_image(server(handler))


def test_a_body_slower_than_the_connection_but_within_the_deadline_is_kept(server, monkeypatch):
    monkeypatch.setattr(images, "DOWNLOAD_TIMEOUT", 0.3)
    monkeypatch.setattr(images, "DOWNLOAD_DEADLINE", 5.0, raising=False)
    body = _png()
    # each piece comes within DOWNLOAD_TIMEOUT, the whole takes longer than it: no timeout
    assert images._download(server(_send(body, pieces=6, every=0.1))) == body


# ---------------------------------------------------------------- a trickling server meets the deadline
def test_a_trickling_server_is_stopped_at_the_overall_deadline(server, short_timeouts):
    url = server(_trickle(total=100_000))  # 200 bytes/s: each read is quick, the whole would take 500 s
    start = time.monotonic()
    with pytest.raises(ValueError) as info:
        load_image(url)
    elapsed = time.monotonic() - start
    message = str(info.value)
    assert elapsed < DEADLINE + 1.0, f"took {elapsed:.1f} s"
    assert url in message
    assert f"took longer than {DEADLINE:g} s" in message and "DOWNLOAD_DEADLINE" in message
    match = re.search(r"only ([\d,]+) of 100,000 bytes arrived in ([\d.]+) s", message)
    assert match, message
    assert 0 < int(match.group(1).replace(",", "")) < 100_000 and float(match.group(2)) >= DEADLINE
    assert "download the image yourself" in message and "pass its path or bytes" in message


def _stall_after_100_of_1000_bytes(hold: float):
    """A handler that announces 1,000 bytes, sends 100, then nothing more for ``hold`` seconds."""

    def stall(request, release) -> None:
        request.send_response(200)
        request.send_header("Content-Length", "1000")
        request.end_headers()
        request.wfile.write(b"x" * 100)
        request.wfile.flush()
        release.wait(hold)
        request.close_connection = True

    return stall


def test_a_server_that_stalls_mid_file_times_out_while_receiving(server, monkeypatch):
    monkeypatch.setattr(images, "DOWNLOAD_TIMEOUT", TIMEOUT)
    monkeypatch.setattr(images, "DOWNLOAD_DEADLINE", 10.0, raising=False)

    url = server(_stall_after_100_of_1000_bytes(hold=5))
    start = time.monotonic()
    with pytest.raises(ValueError, match=r"timed out while receiving: the server sent nothing for 0.5 s .*DOWNLOAD_TIMEOUT.* "
                                         r"after 100 of 1,000 bytes") as info:
        load_image(url)
    assert time.monotonic() - start < TIMEOUT + 1.5 and url in str(info.value)


def test_a_stall_near_the_deadline_is_not_waited_for_past_it(server, monkeypatch):
    monkeypatch.setattr(images, "DOWNLOAD_TIMEOUT", 5.0)
    monkeypatch.setattr(images, "DOWNLOAD_DEADLINE", DEADLINE, raising=False)

    start = time.monotonic()
    with pytest.raises(ValueError, match=r"took longer than 1 s .*only 100 of 1,000 bytes arrived"):
        load_image(server(_stall_after_100_of_1000_bytes(hold=8)))
    assert time.monotonic() - start < DEADLINE + 1.0  # not DOWNLOAD_TIMEOUT (5 s)


# ---------------------------------------------------------------- a server that never answers
def test_a_server_that_accepts_but_never_answers_times_out_waiting_for_the_answer(server, short_timeouts):
    url = server(lambda request, release: release.wait(10))  # reads the request, answers nothing
    start = time.monotonic()
    with pytest.raises(ValueError) as info:
        load_image(url)
    elapsed = time.monotonic() - start
    message = str(info.value)
    assert elapsed < TIMEOUT + 1.5, f"took {elapsed:.1f} s"
    assert url in message and "timed out waiting for the server's answer" in message
    assert f"no response within {TIMEOUT:g} s" in message and "DOWNLOAD_TIMEOUT" in message
    assert "pass its path or bytes" in message and "connecting" not in message


def test_a_server_that_never_accepts_times_out_connecting(short_timeouts):
    # a listening socket whose (one-place) backlog is full: the next connection is never established
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    waiting = socket.create_connection(("127.0.0.1", port), timeout=1)
    try:
        probe = socket.socket()
        probe.settimeout(0.3)
        try:
            probe.connect(("127.0.0.1", port))
            pytest.skip("this system accepts connections beyond a full backlog")
        except TimeoutError:
            pass
        finally:
            probe.close()
        url = f"http://127.0.0.1:{port}/photo.png"
        start = time.monotonic()
        with pytest.raises(ValueError) as info:
            load_image(url)
        message = str(info.value)
        assert time.monotonic() - start < TIMEOUT + 1.5
        assert url in message and "timed out connecting to the server" in message and "DOWNLOAD_TIMEOUT" in message
        assert "waiting for the server's answer" not in message and "while receiving" not in message
    finally:
        waiting.close()
        listener.close()


def test_http_errors_and_refused_connections_keep_their_messages(server, short_timeouts):
    def missing(request, release) -> None:
        request.send_error(404, "Not Found")

    with pytest.raises(ValueError, match=r"could not download the image from http://.*: HTTP 404 Not Found"):
        load_image(server(missing))
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()  # nothing listens there now
    with pytest.raises(ValueError, match=r"without a network connection, save the image and pass its path"):
        load_image(f"http://127.0.0.1:{port}/photo.png")


# ---------------------------------------------------------------- in the explorer
class _Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        return self.head(self.features(x).mean(dim=(2, 3)))


def _picture(seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).random((32, 32, 3)) * 155 + 100).astype(np.uint8)


def test_a_trickling_address_fails_in_the_explorer_with_the_deadline_message(server, short_timeouts):
    from cnnwidgets.app import Explorer

    torch.manual_seed(0)
    url = server(_trickle(total=100_000))
    ex = Explorer(_Small().eval(), None, input_size=(3, 32, 32), samples={"a": _picture(0), "web": url},
                  background=False)
    try:
        shown = ex.input_image.copy()
        # set_image reports a bad image by raising (as for any other unreadable image); nothing changes
        start = time.monotonic()
        with pytest.raises(ValueError, match=r"took longer than 1 s .*DOWNLOAD_DEADLINE.*pass its path or bytes"):
            ex.set_image(url)
        assert time.monotonic() - start < DEADLINE + 1.0
        assert ex.image == "a" and np.array_equal(ex.input_image, shown)
        # picked in the widget (a sample given by its address): the error is on the status line
        ex.picker.dropdown.value = "web"
        assert ex.status.is_error and "image 'web'" in ex.status.message
        assert "took longer than 1 s" in ex.status.message and "download the image yourself" in ex.status.message
        assert ex.image == "a" and np.array_equal(ex.input_image, shown)
        ex.box = (0, 0, 8, 8)  # the explorer still works
        assert not ex.status.is_error and ex.shown_state.box == (0, 0, 8, 8), ex.status.message
    finally:
        ex.close()


def test_an_address_that_never_answers_fails_in_the_explorer_quickly(server, short_timeouts):
    from cnnwidgets.app import Explorer

    torch.manual_seed(0)
    url = server(lambda request, release: release.wait(10))
    ex = Explorer(_Small().eval(), None, input_size=(3, 32, 32), samples={"a": _picture(0)}, background=False)
    try:
        start = time.monotonic()
        with pytest.raises(ValueError, match="timed out waiting for the server's answer"):
            ex.set_image(url)
        assert time.monotonic() - start < TIMEOUT + 1.5
        assert ex.image == "a" and not ex.status.is_error
    finally:
        ex.close()
