"""A per-thread switch that lets a caller leave out one of a method's warnings.

The explorer's method panel runs methods on its own thread and says in the map's caption what a
warning would say (a scan that went image by image, a Grad-CAM map that is zero everywhere); the
warning itself, printed from that thread, would reach only the kernel's log.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator


class QuietSwitch:
    """On within ``with switch.quietly():`` on the thread that entered it, off elsewhere.

    The block gets a list: the warnings left out inside it (:meth:`leave_out`), for the caller
    to say what they would have said.
    """

    def __init__(self) -> None:
        self._local = threading.local()

    @property
    def on(self) -> bool:
        """Whether this thread is inside a :meth:`quietly` block."""
        return bool(getattr(self._local, "sinks", None))

    def leave_out(self, warning: Warning) -> bool:
        """Inside a :meth:`quietly` block of this thread: keep ``warning`` in the block's list
        (the innermost block's) and return True, for the caller not to issue it. Elsewhere
        False: the caller warns as usual."""
        sinks = getattr(self._local, "sinks", None)
        if not sinks:
            return False
        sinks[-1].append(warning)
        return True

    @contextlib.contextmanager
    def quietly(self) -> Iterator[list[Warning]]:
        """Turn the switch on for this thread for the block (blocks may be nested); yields the
        list of the warnings left out in it."""
        sinks = getattr(self._local, "sinks", None)
        if sinks is None:
            sinks = self._local.sinks = []
        left_out: list[Warning] = []
        sinks.append(left_out)
        try:
            yield left_out
        finally:
            sinks.pop()
