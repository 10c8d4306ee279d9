"""The interpreter exits cleanly while background work of an open widget is still running,
and when an open widget is idle.

Background threads are daemons so that an open explorer never keeps a script or a kernel
alive; a daemon thread caught inside a PyTorch operation at shutdown makes the process abort
("terminate called without an active exception"). Each scenario runs in a fresh interpreter
that exits while the work is certainly in progress.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

# A model whose every forward runs convolutions for a while, so that exit finds the worker busy.
_SLOW_MODEL = """
import threading, torch
from torch import nn

started = threading.Event()

class Slow(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 32, 3, padding=1)
        self.more = nn.Conv2d(32, 32, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        if threading.current_thread() is not threading.main_thread():
            started.set()
            scratch = torch.ones(4, 32, 64, 64)
            for _ in range(40):
                scratch = self.more(scratch)
        y = self.more(self.conv(x).relu()).relu()
        return self.fc(self.pool(y).flatten(1))

model = Slow().eval()
image = torch.rand(3, 96, 96)
"""

_SCENARIOS = {
    "explorer drawing": """
import cnnwidgets
explorer = cnnwidgets.explore(model, image)
""",
    "explorer method map": """
import cnnwidgets
explorer = cnnwidgets.explore(model, image)
explorer.wait_idle()
started.clear()
explorer.method = "occlusion"
""",
    "activation maximisation view": """
from cnnwidgets.app.filters import actmax_view
view = actmax_view(model, steps=500)
view.controller.start()
""",
}


@pytest.mark.parametrize("scenario", sorted(_SCENARIOS))
def test_exit_while_background_work_runs(scenario):
    script = textwrap.dedent(_SLOW_MODEL) + textwrap.dedent(_SCENARIOS[scenario]) + textwrap.dedent("""
        assert started.wait(60), "the background work never started"
        print("exiting", flush=True)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=240)
    assert "exiting" in done.stdout, done.stderr
    assert "terminate called" not in done.stderr
    assert done.returncode == 0, done.stderr
    assert "Exception ignored" not in done.stderr, done.stderr


def test_exit_with_an_idle_explorer_left_open_prints_nothing():
    # ipywidgets closes every widget from Widget.__del__ while the interpreter tears its modules
    # down; closing the probe then must not need anything that is gone by then (imports, a
    # library lookup), or every script that leaves an explorer open ends with a traceback
    script = textwrap.dedent("""
        import cnnwidgets
        explorer = cnnwidgets.explore()
        explorer.wait_idle()
        print("exiting", flush=True)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=240)
    assert "exiting" in done.stdout, done.stderr
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr, done.stderr
