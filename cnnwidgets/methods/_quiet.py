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
    """On within ``with switch.quietly():`` on the thread that entered it, off elsewhere."""

    def __init__(self) -> None:
        self._local = threading.local()

    @property
    def on(self) -> bool:
        """Whether this thread is inside a :meth:`quietly` block."""
        return getattr(self._local, "on", False)

    @contextlib.contextmanager
    def quietly(self) -> Iterator[None]:
        """Turn the switch on for this thread for the block (blocks may be nested)."""
        before = self.on
        self._local.on = True
        try:
            yield
        finally:
            self._local.on = before
