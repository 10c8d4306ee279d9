"""One worker thread that serves only the newest request: the pattern behind every live view.

Widgets deliver every change (a burst of mouse moves, a slider dragged across its range) to
the kernel. A :class:`NewestFirstWorker` never queues them: a request that arrives while the
worker is busy replaces the one waiting (if any), and each request carries a generation
number, so the work in progress can tell when it has been superseded and drop its result.
"""

from __future__ import annotations

import atexit
import sys
import threading
import time
import weakref
from typing import Any, Callable

__all__ = ["NewestFirstWorker", "stop_at_exit"]

# How long the interpreter's exit waits, in all, for background work to reach a point where it
# can stop (the end of the forward pass or batch in progress).
EXIT_TIMEOUT = 10.0

_EXIT_LOCK = threading.Lock()
_EXIT_STOPS: dict[threading.Thread, weakref.WeakMethod] = {}


def stop_at_exit(thread: threading.Thread, stop: Callable[[], None]) -> None:
    """Ask ``thread`` to stop (by calling ``stop``) and wait for it when the interpreter exits.

    Background threads here are daemons, so an open explorer never keeps a script or a kernel
    from exiting. A daemon thread that is still inside a PyTorch operation when the interpreter
    shuts down makes the process abort ("terminate called without an active exception"), so
    each one is registered here: at exit it is told to stop and given up to
    :data:`EXIT_TIMEOUT` seconds (shared by all) to finish the step it is in.

    ``stop`` must be a bound method; it is held weakly, so the registration keeps nothing
    alive (a closed explorer is freed with its model).
    """
    with _EXIT_LOCK:
        for done in [t for t in _EXIT_STOPS if t.ident is not None and not t.is_alive()]:
            del _EXIT_STOPS[done]
        _EXIT_STOPS[thread] = weakref.WeakMethod(stop)  # type: ignore[arg-type]


@atexit.register
def _stop_threads_at_exit() -> None:
    with _EXIT_LOCK:
        pending = list(_EXIT_STOPS.items())
        _EXIT_STOPS.clear()
    for _, ref in pending:
        stop = ref()
        if stop is None:
            continue
        try:
            stop()
        except Exception:  # noqa: BLE001 - the interpreter is exiting; stop the others regardless
            pass
    deadline = time.monotonic() + EXIT_TIMEOUT
    for thread, _ in pending:
        if thread is not threading.current_thread():
            thread.join(max(0.0, deadline - time.monotonic()))


#: Seconds ``close()`` waits for the work in progress (a model's forward pass) to return before it
#: leaves freeing the model copy to the worker thread and returns.
CLOSE_WAIT = 2.0


class NewestFirstWorker:
    """Base class: keep the newest request, serve it on a worker thread (or synchronously).

    Subclasses implement :meth:`_serve` and submit with :meth:`_replace` (under ``self._cond``)
    followed by :meth:`_kick`; they may override :meth:`_taken` and :meth:`_went_idle`, which
    run with the lock held.

    :meth:`_serve` reports the failures of the work itself, a ``KeyboardInterrupt`` or
    ``SystemExit`` raised by the user's code included, unless :meth:`_propagates` says the
    exception belongs to the caller. Whatever leaves :meth:`_serve` all the same never ends the
    worker thread, and leaves no request marked as in progress.

    Args:
        name: the thread's name.
        background: serve on a worker thread (True) or inside :meth:`_kick` (False, for tests
            and scripts).
        start: start the thread now (True) or with the first request (False).
    """

    def __init__(self, name: str, background: bool = True, *, start: bool = True) -> None:
        self._cond = threading.Condition()
        self._pending: Any = None
        self._generation = 0
        self._busy = False
        self._closed = False
        self._draining = False
        self._background = background
        self._thread_name = name
        self._thread: threading.Thread | None = None
        self._loop_ended = False
        self._release_later: list[Callable[[], None]] = []
        if background and start:
            self._start_thread()

    # ------------------------------------------------------------------ for subclasses
    def _serve(self, item: Any, generation: int) -> None:
        """Do the work of ``item`` (called on the worker thread)."""
        raise NotImplementedError

    def _taken(self, item: Any) -> None:
        """Called with the lock held when ``item`` is taken up."""

    def _went_idle(self) -> None:
        """Called with the lock held when nothing is left to serve."""

    def _propagates(self, exc: BaseException) -> bool:
        """Whether ``exc``, raised while a request is served, must leave :meth:`_serve` instead of
        being reported as that request's failure.

        An exception that is not an ``Exception`` (``KeyboardInterrupt``, ``SystemExit``) does when
        the work runs on the caller's thread (a synchronous worker): there it is the user
        interrupting. On the worker thread only the user's code (a model's forward)
        can raise one, since real interrupts reach the main thread: that computation failed.
        """
        return not isinstance(exc, Exception) and threading.current_thread() is not self._thread

    def _replace(self, item: Any) -> bool:
        """Make ``item`` the newest request (hold ``self._cond``); True if it replaced a waiting one.

        A closed worker takes no request: ``item`` is dropped (it would wait for ever, and
        :meth:`wait_idle` with it)."""
        if self._closed:
            return False
        replaced = self._pending is not None
        self._pending = item
        self._generation += 1
        self._cond.notify_all()
        return replaced

    def _kick(self) -> None:
        """After :meth:`_replace`: wake (or start) the worker, or serve now when synchronous."""
        if self._background:
            with self._cond:
                if self._thread is None and not self._closed:
                    self._start_thread()
        else:
            self._drain()

    def _newer(self, generation: int) -> Any:
        """The request submitted after ``generation``, if any."""
        with self._cond:
            return self._pending if self._generation != generation else None

    def _superseded(self, generation: int) -> bool:
        """A newer request arrived (or the worker was closed) since ``generation``."""
        with self._cond:
            return self._closed or self._generation != generation

    # ------------------------------------------------------------------ public
    def wait_idle(self, timeout: float | None = 30.0) -> bool:
        """Block until every submitted request is served; returns False on timeout.

        Args:
            timeout: the longest wait in seconds; None waits as long as it takes.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._pending is not None or self._busy:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    @property
    def idle(self) -> bool:
        """Nothing waiting and nothing in progress."""
        with self._cond:
            return self._pending is None and not self._busy

    def _signal_stop(self) -> None:
        """Drop the waiting request and tell the worker to stop (work in progress sees it as superseded)."""
        with self._cond:
            self._closed = True
            self._pending = None
            self._cond.notify_all()

    def _stop(self, timeout: float) -> None:
        """Drop the waiting request, tell the worker to stop, and wait for it."""
        self._signal_stop()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _stop_and_release(self, timeout: float, release: Callable[[], None]) -> bool:
        """Stop the worker as :meth:`_stop`, then call ``release`` (which frees what the work uses).

        When the work in progress has not returned after ``timeout`` seconds (a model's forward
        that takes long), ``release`` is left to the worker thread, which calls it once that work
        returns and the thread ends; the caller goes on at once. Returns whether ``release`` ran now.
        """
        self._stop(timeout)
        with self._cond:
            running = (
                self._thread is not None and self._thread is not threading.current_thread() and not self._loop_ended
            )
            if running:
                self._release_later.append(release)
        if not running:
            release()
        return not running

    # ------------------------------------------------------------------ the loop
    def _start_thread(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=self._thread_name, daemon=True)
        stop_at_exit(self._thread, self._signal_stop)
        self._thread.start()

    def _take(self, block: bool) -> tuple[Any, int] | None:
        with self._cond:
            while self._pending is None:
                self._busy = False
                self._went_idle()
                self._cond.notify_all()
                if self._closed or not block:
                    return None
                self._cond.wait()
            if self._closed:
                return None
            item, generation = self._pending, self._generation
            self._pending = None
            self._busy = True
            self._taken(item)
            return item, generation

    def _abandon(self) -> None:
        """After an exception left :meth:`_serve` on the caller's thread: nothing is in progress any
        more, and the request waiting (if any) is dropped, so that :meth:`wait_idle` does not wait
        for work that nobody will do, and the next request is taken as new rather than as the one
        being computed."""
        with self._cond:
            self._pending = None
            self._busy = False
            self._went_idle()
            self._cond.notify_all()

    def _loop(self) -> None:
        try:
            while (taken := self._take(block=True)) is not None:
                try:
                    self._serve(*taken)
                except BaseException:  # noqa: BLE001 - the thread lives on: later requests are still served
                    # _serve reports its own failures; one that escaped it anyway is at least not lost
                    # (the next _take clears the bookkeeping of the request it was serving)
                    sys.excepthook(*sys.exc_info())
        finally:
            with self._cond:
                self._loop_ended = True
                release, self._release_later = self._release_later, []
            for free in release:  # left by a close that did not wait for the work in progress
                try:
                    free()
                except Exception:  # noqa: BLE001 - the thread is ending; nobody else would see it
                    sys.excepthook(*sys.exc_info())

    def _drain(self) -> None:
        # one caller serves at a time: a callback submitting a request, or another thread doing so
        # meanwhile, leaves it to the loop below, which serves it next. Taking the lock for the check
        # and for the end of the loop (no request left) means a request never waits unserved.
        with self._cond:
            if self._draining:
                return
            self._draining = True
        try:
            while True:
                with self._cond:
                    taken = self._take(block=False)
                    if taken is None:
                        self._draining = False
                        return
                self._serve(*taken)
        except BaseException:
            # the user interrupted (or a callback failed): the caller gets the exception, and the
            # worker is left idle, ready for the next request
            with self._cond:
                self._draining = False
            self._abandon()
            raise
