"""A per-thread switch that lets a caller leave out one of a method's warnings.

The explorer's method panel runs methods on its own thread and says in the map's caption what a
warning would say (a scan that went image by image, a Grad-CAM map that is zero everywhere); the
warning itself, printed from that thread, would reach only the kernel's log.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Iterator


class QuietSwitch:
    """On within ``with switch.quietly():`` on the thread that entered it, off elsewhere.

    The block gets a list: the warnings left out inside it (see :meth:`warn`), for the caller
    to say what they would have said.
    """

    def __init__(self) -> None:
        self._local = threading.local()

    def warn(self, warning: Warning, stacklevel: int) -> None:
        """Issue ``warning`` as ``warnings.warn(warning, stacklevel=stacklevel)`` would from the
        caller, or, inside a :meth:`quietly` block of this thread, keep it in the block's list (the
        innermost block's) instead."""
        sinks = getattr(self._local, "sinks", None)
        if sinks:
            sinks[-1].append(warning)
        else:
            warnings.warn(warning, stacklevel=stacklevel + 1)  # + this frame

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
