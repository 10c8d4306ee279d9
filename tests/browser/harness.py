"""Real-browser test harness: a private JupyterLab server, Chromium driven by Playwright, and a
second client on the notebook's kernel to read Python state back.

The pieces, from the bottom up:

- :class:`LabServer` starts ``jupyter lab`` on 127.0.0.1 with a random free port and token and
  test-only config, runtime, data, settings and workspaces directories inside a temporary folder
  (so nothing a developer has configured, and nothing the test does, leaks either way). Its root
  folder is a temporary copy area: notebooks are copied in, never opened where they are committed.
- :class:`KernelProbe` connects to the kernel of an open notebook with ``jupyter_client`` and
  evaluates Python there: ``eval(expr)`` returns ``json.loads(json.dumps(expr))``. Widget state set
  by real mouse events in the browser is read back exactly, with no DOM scraping.
- :class:`NotebookPage` drives one notebook in the browser: open it and wait for the kernel, Run
  All, wait until every code cell ran (failing fast with the traceback when one raises), locate
  widgets, drag with real mouse events, read pixels and take screenshots.

``tests/browser/conftest.py`` turns these into fixtures; ``tests/browser/README.md`` shows how to
write a test. Facts behind the choices below (numbered gotchas) are in that README.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / ".artifacts"
SCREENSHOTS = ARTIFACTS / "screenshots"
DOCS_IMG = REPO / "docs" / "img"

DEFAULT_CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]

# JupyterLab user settings for the test server. The notification settings stop the "news" question
# that otherwise pops over the notebook; windowing "none" keeps every cell in the DOM so that
# execution prompts and outputs of cells below the fold can be read.
LAB_USER_SETTINGS: dict[str, dict[str, Any]] = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {
        "windowingMode": "none",
    },
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {
        "autosave": False,
    },
}

_EXECUTED_PROMPT = re.compile(r"^\[\d+\]:$")


def chromium_path() -> str:
    """The Chromium binary the tests drive (env ``CNNWIDGETS_CHROMIUM``, default Debian's)."""
    return os.environ.get("CNNWIDGETS_CHROMIUM", DEFAULT_CHROMIUM)


def browser_unavailable_reason() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    path = chromium_path()
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        return (
            f"Chromium not found at {path}: install Debian's package (apt-get install chromium) "
            "or set CNNWIDGETS_CHROMIUM; `bash .ci/run` installs it"
        )
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the Python package playwright is not installed: pip install -e '.[test]'"
    try:
        import jupyterlab  # noqa: F401
    except ImportError:
        return "jupyterlab is not installed: pip install -e '.[test]'"
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ----------------------------------------------------------------------------------------------
# Server
# ----------------------------------------------------------------------------------------------


@dataclass
class LabServer:
    """A JupyterLab server private to the test run.

    Use :meth:`start` (or the ``lab`` fixture), then :meth:`stop` in a ``finally``.

    Attributes:
        base: A folder owned by the server: ``root/`` (what the server serves), ``config/``,
            ``runtime/``, ``data/``, ``ipython/``, ``workspaces/``, ``lab-settings/``, ``server.log``.
        port: TCP port on 127.0.0.1.
        token: The server's auth token.
        process: The server process (its own process group).
    """

    base: Path
    port: int = 0
    token: str = ""
    process: subprocess.Popen[bytes] | None = None
    _log: Any = field(default=None, repr=False)

    @property
    def root(self) -> Path:
        """The folder the server serves; notebooks under test are copied here."""
        return self.base / "root"

    @property
    def runtime_dir(self) -> Path:
        return self.base / "runtime"

    @property
    def log_path(self) -> Path:
        return self.base / "server.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def lab_url(self, relpath: str, workspace: str | None = None) -> str:
        """Browser address that opens ``relpath`` (relative to :attr:`root`) in JupyterLab.

        Args:
            relpath: The notebook, relative to :attr:`root`.
            workspace: A JupyterLab workspace name. The server remembers the tabs of each
                workspace, so a page opened in the default one would also reopen (and start
                kernels for) every notebook an earlier test opened; a fresh name isolates tests.
        """
        quoted = urllib.parse.quote(relpath)
        prefix = f"/lab/workspaces/{workspace}" if workspace else "/lab"
        return f"{self.url}{prefix}/tree/{quoted}?token={self.token}"

    # -- lifecycle ---------------------------------------------------------------------------

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            JUPYTER_CONFIG_DIR=str(self.base / "config"),
            JUPYTER_RUNTIME_DIR=str(self.runtime_dir),
            JUPYTER_DATA_DIR=str(self.base / "data"),
            JUPYTERLAB_SETTINGS_DIR=str(self.base / "lab-settings"),
            JUPYTERLAB_WORKSPACES_DIR=str(self.base / "workspaces"),
            IPYTHONDIR=str(self.base / "ipython"),
            # Kernels from this Python environment win over any the user registered elsewhere.
            JUPYTER_PREFER_ENV_PATH="1",
            PYTHONUNBUFFERED="1",
        )
        # The kernel imports the cnnwidgets of this checkout, whatever the environment holds.
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
        return env

    def _write_settings(self) -> None:
        for rel, values in LAB_USER_SETTINGS.items():
            path = self.base / "lab-settings" / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values, indent=2))
        for name in ("root", "config", "runtime", "data", "ipython", "workspaces"):
            (self.base / name).mkdir(parents=True, exist_ok=True)
        # Server side of gotcha 7: no news feed, no update check (null is how None is written).
        (self.base / "config" / "jupyter_server_config.json").write_text(
            json.dumps({"LabApp": {"news_url": None, "check_for_updates_class": "jupyterlab.NeverCheckForUpdate"}})
        )

    def start(self, timeout: float = 60.0, attempts: int = 3) -> LabServer:
        """Start the server and wait until ``/api/status`` answers.

        Args:
            timeout: Seconds to wait for readiness per attempt.
            attempts: A port taken between choosing and binding it makes the server exit; it is
                retried on a new port this many times in all.

        Returns:
            self.

        Raises:
            RuntimeError: The server did not become ready; the message holds its log tail.
        """
        self._write_settings()
        self.token = uuid.uuid4().hex
        for attempt in range(1, attempts + 1):
            self.port = _free_port()
            cmd = [
                sys.executable, "-m", "jupyterlab",
                "--no-browser",
                "--allow-root",  # gotcha 1: CI runs as root
                "--ServerApp.ip=127.0.0.1",
                f"--ServerApp.port={self.port}",
                "--ServerApp.port_retries=0",
                f"--IdentityProvider.token={self.token}",
                f"--ServerApp.root_dir={self.root}",
                "--ServerApp.terminals_enabled=False",
            ]
            self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
            self._log.write(f"\n--- attempt {attempt}: {' '.join(cmd)}\n".encode())
            self._log.flush()
            self.process = subprocess.Popen(
                cmd,
                cwd=self.root,
                env=self._environment(),
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            if self._wait_ready(timeout):
                return self
            self.stop()
        raise RuntimeError(
            f"JupyterLab did not start within {timeout:.0f} s ({attempts} attempts); "
            f"log {self.log_path}:\n{self.log_tail()}"
        )

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                return False
            try:
                self.api("GET", "/api/status", timeout=2)
                return True
            except (OSError, urllib.error.URLError):
                time.sleep(0.25)
        return False

    def stop(self) -> None:
        """Shut down all kernels, then the server (SIGTERM, then SIGKILL to its process group)."""
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            try:
                for session in self.api("GET", "/api/sessions", timeout=5):
                    self.api("DELETE", f"/api/sessions/{session['id']}", timeout=10)
            except Exception:  # noqa: BLE001 - best effort; the signals below still stop it
                pass
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=15)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    # -- REST --------------------------------------------------------------------------------

    def api(self, method: str, path: str, body: Any = None, timeout: float = 10) -> Any:
        """Call the server's REST API and return the decoded JSON answer (None when empty)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - loopback
            raw = response.read()
        return json.loads(raw) if raw else None

    def kernel_id_for(self, relpath: str) -> str | None:
        """The id of the kernel attached to the notebook at ``relpath`` (relative to root)."""
        for session in self.api("GET", "/api/sessions"):
            if session.get("path") == relpath and session.get("kernel"):
                return str(session["kernel"]["id"])
        return None

    def shutdown_notebook(self, relpath: str) -> None:
        """Shut down the kernel session of one notebook, if any."""
        for session in self.api("GET", "/api/sessions"):
            if session.get("path") == relpath:
                self.api("DELETE", f"/api/sessions/{session['id']}")

    def copy_in(self, files: Iterable[str | os.PathLike[str]], folder: str) -> list[str]:
        """Copy files into ``root/folder`` and return their paths relative to :attr:`root`.

        Gotcha 8: autosave and the "trust" step write to the notebook that is open, so the test
        always opens a copy, never the committed file.
        """
        target = self.root / folder
        target.mkdir(parents=True, exist_ok=True)
        out = []
        for src in map(Path, files):
            if src.is_dir():
                shutil.copytree(src, target / src.name, dirs_exist_ok=True)
            else:
                shutil.copy2(src, target / src.name)
            out.append(f"{folder}/{src.name}")
        return out


# ----------------------------------------------------------------------------------------------
# Kernel access from the test process
# ----------------------------------------------------------------------------------------------


class KernelError(AssertionError):
    """Code sent with :class:`KernelProbe` raised in the kernel; the message holds the traceback."""


class KernelProbe:
    """A second client on a notebook's running kernel.

    It shares the kernel with the browser: variables defined by the notebook's cells are visible,
    and widget changes it makes are sent to the browser like any other. Requests queue behind the
    kernel's current work (mouse events included), so a read returns state after what was already
    delivered.
    """

    def __init__(self, connection_file: Path, timeout: float = 30.0):
        from jupyter_client import BlockingKernelClient

        self.timeout = timeout
        self.client = BlockingKernelClient(connection_file=str(connection_file))
        self.client.load_connection_file()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=timeout)

    def close(self) -> None:
        self.client.stop_channels()

    def execute(self, code: str, timeout: float | None = None) -> str:
        """Run ``code`` in the kernel and return what it printed to stdout.

        Raises:
            KernelError: The code raised; the message holds the kernel's traceback.
            TimeoutError: No answer within ``timeout`` seconds.
        """
        timeout = self.timeout if timeout is None else timeout
        msg_id = self.client.execute(code, silent=False, store_history=False, allow_stdin=False)
        stdout: list[str] = []
        error: dict[str, Any] | None = None
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"kernel did not finish within {timeout} s running:\n{code}")
            try:
                msg = self.client.get_iopub_msg(timeout=remaining)
            except Exception:  # queue.Empty
                continue
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream" and content.get("name") == "stdout":
                stdout.append(content["text"])
            elif kind == "error":
                error = content
            elif kind == "status" and content.get("execution_state") == "idle":
                break
        if error is not None:
            tb = _strip_ansi("\n".join(error.get("traceback", [])))
            raise KernelError(f"{error.get('ename')}: {error.get('evalue')}\n{tb}\nwhile running:\n{code}")
        return "".join(stdout)

    def eval(self, expr: str, timeout: float | None = None) -> Any:
        """Evaluate a Python expression in the kernel and return it through JSON.

        Example: ``kernel.eval("{'layer': ex.layer, 'box': ex.box}")``.
        """
        marker = "__cnnwidgets_json__"
        code = (
            "import json as __j\n"
            f"print({marker!r} + __j.dumps(({expr}), default=repr))\n"
            "del __j\n"
        )
        out = self.execute(code, timeout)
        for line in out.splitlines():
            if line.startswith(marker):
                return json.loads(line[len(marker):])
        raise KernelError(f"no value came back for {expr!r}; stdout was:\n{out}")

    def wait_until(
        self,
        expr: str,
        predicate: Callable[[Any], bool] = bool,
        timeout: float = 15.0,
        interval: float = 0.2,
    ) -> Any:
        """Poll ``eval(expr)`` until ``predicate(value)`` holds; return that value.

        Raises:
            AssertionError: Still false after ``timeout`` seconds; the message shows the last value.
        """
        deadline = time.monotonic() + timeout
        value = None
        while True:
            value = self.eval(expr)
            if predicate(value):
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"{expr!r} did not satisfy the condition within {timeout} s; last value: {value!r}")
            time.sleep(interval)


def _strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text)


# ----------------------------------------------------------------------------------------------
# Browser side
# ----------------------------------------------------------------------------------------------

_JS_CELL_KINDS = """
([panel, selector]) => {
  const root = panel || document;
  return Array.from(root.querySelectorAll('.jp-Notebook .jp-Cell'), (cell) => ({
    kind: cell.classList.contains('jp-CodeCell') ? 'code'
      : cell.classList.contains('jp-MarkdownCell') ? 'markdown' : 'raw',
    active: cell.classList.contains('jp-mod-active'),
    holds: selector ? cell.querySelector(selector) !== null : false,
  }));
}
"""

_JS_CELL_STATE = """
(panel) => {
  const root = panel || document;
  const cells = Array.from(root.querySelectorAll('.jp-Notebook .jp-Cell.jp-CodeCell'));
  return cells.map((cell, i) => {
    const prompt = cell.querySelector('.jp-InputArea-prompt');
    const editor = cell.querySelector('.jp-InputArea-editor .cm-content');
    const errs = Array.from(cell.querySelectorAll(
      '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'))
      .map(e => e.innerText)
      .filter(t => /Traceback \\(most recent call last\\)|Cell In\\[\\d+\\]|^\\s*\\w+(Error|Exception)\\b/m.test(t));
    return {
      index: i,
      prompt: prompt ? prompt.innerText.trim() : '',
      empty: editor ? editor.innerText.trim().length === 0 : false,
      errors: errs,
    };
  });
}
"""


class NotebookPage:
    """One notebook open in a Playwright page.

    Args:
        page: A Playwright ``Page`` (sync API).
        server: The :class:`LabServer` that serves the notebook.
        relpath: The notebook's path relative to ``server.root``.
        artifacts: Folder for screenshots (``.artifacts/screenshots/<test>`` by the fixture).
    """

    def __init__(self, page: Any, server: LabServer, relpath: str, artifacts: Path):
        self.page = page
        self.server = server
        self.relpath = relpath
        self.artifacts = artifacts
        self.console_errors: list[str] = []
        self._kernel: KernelProbe | None = None
        self.workspace = "t" + uuid.uuid4().hex[:12]
        page.on("console", lambda m: self.console_errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.console_errors.append(f"pageerror: {e}"))

    # -- notebook lifecycle ------------------------------------------------------------------

    def open(self, timeout: float = 90.0) -> NotebookPage:
        """Load the notebook and wait until its kernel is really connected.

        Gotcha 2: the "idle" indicator shows before the kernel connection is usable, and a Run All
        sent then is silently lost; the debugger button turns enabled only once it is.
        """
        self.page.goto(self.server.lab_url(self.relpath, self.workspace), timeout=timeout * 1000)
        self.page.locator(".jp-NotebookPanel .jp-Notebook").first.wait_for(state="visible", timeout=timeout * 1000)
        self.page.locator('.jp-DebuggerBugButton[aria-disabled="false"]').first.wait_for(
            state="attached", timeout=timeout * 1000
        )
        return self

    def run_all(self) -> None:
        """Run All Cells through JupyterLab's Run menu, as a user would."""
        self.page.locator(".lm-MenuBar-item", has_text=re.compile(r"^Run$")).first.click()
        self.page.locator(".lm-Menu-item", has_text=re.compile(r"^Run All Cells")).first.click()

    def cell_states(self) -> list[dict[str, Any]]:
        """Per code cell: ``index``, ``prompt`` ("[3]:", "[*]:", "[ ]:"), ``empty``, ``errors``."""
        panel = self.page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)").first.element_handle()
        return list(self.page.evaluate(_JS_CELL_STATE, panel))

    def cells(self, holding: str | None = None) -> list[dict[str, Any]]:
        """Per cell of the notebook, in order: ``kind`` ("code", "markdown" or "raw"), ``active``
        (the notebook's active cell) and ``holds`` (whether an element matching the CSS selector
        ``holding`` is inside it). A keyboard shortcut that reached JupyterLab shows here: a cell
        changed to Markdown, deleted, or another cell made active."""
        panel = self.page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)").first.element_handle()
        return list(self.page.evaluate(_JS_CELL_KINDS, [panel, holding]))

    def wait_all_executed(self, timeout: float = 180.0, interval: float = 0.5) -> None:
        """Wait until every non-empty code cell shows an execution count.

        Raises:
            AssertionError: A cell produced a traceback (reported at once, with its text), or
                cells were still pending after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            states = self.cell_states()
            failed = [s for s in states if s["errors"]]
            if failed:
                first = failed[0]
                raise AssertionError(f"cell {first['index']} raised:\n" + "\n".join(first["errors"]))
            pending = [s for s in states if not s["empty"] and not _EXECUTED_PROMPT.match(s["prompt"])]
            if states and not pending:
                return
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{len(pending)} of {len(states)} code cells not executed after {timeout} s: "
                    + ", ".join(f"#{s['index']} {s['prompt']}" for s in pending)
                )
            time.sleep(interval)

    def run_all_and_wait(self, timeout: float = 180.0) -> None:
        """:meth:`run_all`, then :meth:`wait_all_executed`."""
        self.run_all()
        self.wait_all_executed(timeout)

    @property
    def kernel(self) -> KernelProbe:
        """A :class:`KernelProbe` on this notebook's kernel (connected on first use)."""
        if self._kernel is None:
            kernel_id = self.server.kernel_id_for(self.relpath)
            if kernel_id is None:
                raise RuntimeError(f"no kernel session for {self.relpath}; open() it first")
            self._kernel = KernelProbe(self.server.runtime_dir / f"kernel-{kernel_id}.json")
        return self._kernel

    def close(self) -> None:
        if self._kernel is not None:
            self._kernel.close()
            self._kernel = None

    # -- widgets and the mouse ---------------------------------------------------------------

    def widget(self, selector: str, timeout: float = 30.0) -> Any:
        """The first visible element matching ``selector``, waited for.

        Give the widget a CSS class in the notebook (``w.add_class("my-canvas")``) and locate it
        with ``nb.widget(".my-canvas")``; for an ipycanvas ``Canvas`` that element is the
        ``<canvas>`` itself.
        """
        loc = self.page.locator(selector).first
        loc.wait_for(state="visible", timeout=timeout * 1000)
        return loc

    def box(self, locator: Any) -> dict[str, float]:
        """Scroll ``locator`` into view and return its fresh page bounding box.

        Gotcha 3: ``page.mouse`` works in viewport coordinates and never scrolls, so take the box
        right before each mouse sequence.
        """
        locator.scroll_into_view_if_needed()
        box = locator.bounding_box()
        if box is None:
            raise AssertionError(f"{locator} has no bounding box (not visible)")
        return dict(box)

    def page_point(self, locator: Any, x: float, y: float, *, box: dict[str, float] | None = None) -> tuple[float, float]:
        """Page coordinates of point (x, y) given in the element's own pixels.

        For a ``<canvas>`` these are canvas pixels (its ``width``/``height`` attributes), which
        differ from CSS pixels when the canvas is scaled (gotcha 4); for other elements they are
        CSS pixels from the element's top-left corner.
        """
        box = box or self.box(locator)
        size = locator.evaluate(
            "el => el.tagName === 'CANVAS' ? [el.width, el.height] : [el.getBoundingClientRect().width, el.getBoundingClientRect().height]"
        )
        sx = box["width"] / size[0] if size[0] else 1.0
        sy = box["height"] / size[1] if size[1] else 1.0
        return box["x"] + x * sx, box["y"] + y * sy

    def drag(
        self,
        locator: Any,
        start: tuple[float, float],
        end: tuple[float, float],
        *,
        steps: int = 15,
        hold_ms: int = 50,
    ) -> None:
        """Drag with real mouse events from ``start`` to ``end`` (element pixels, see :meth:`page_point`).

        Moves to ``start``, presses, moves to ``end`` in ``steps`` intermediate moves, releases.
        About 20-30 moves per second get through on 2 cores (gotcha 11); for a storm at a precise
        rate dispatch synthetic events in the page instead.
        """
        box = self.box(locator)
        x0, y0 = self.page_point(locator, *start, box=box)
        x1, y1 = self.page_point(locator, *end, box=box)
        mouse = self.page.mouse
        mouse.move(x0, y0)
        mouse.down()
        self.page.wait_for_timeout(hold_ms)
        mouse.move(x1, y1, steps=steps)
        self.page.wait_for_timeout(hold_ms)
        mouse.up()

    def click_at(self, locator: Any, x: float, y: float) -> None:
        """A real click at (x, y) in the element's own pixels."""
        px, py = self.page_point(locator, x, y)
        self.page.mouse.click(px, py)

    # -- pixels and screenshots --------------------------------------------------------------

    def canvas_pixels(self, locator: Any) -> np.ndarray:
        """The exact RGBA content of a ``<canvas>`` element, shape (height, width, 4), uint8.

        Reads the canvas bitmap itself, so focus outlines (gotcha 6) and page zoom do not enter.
        For an ipycanvas ``MultiCanvas`` each layer is its own ``<canvas>``: pass the layer.
        """
        url = locator.evaluate("el => el.toDataURL('image/png')")
        return _png_to_array(base64.b64decode(url.split(",", 1)[1]), mode="RGBA")

    def element_pixels(self, locator: Any) -> np.ndarray:
        """What the user sees of an element (a screenshot of it), shape (h, w, 3), uint8."""
        locator.scroll_into_view_if_needed()
        return _png_to_array(locator.screenshot(), mode="RGB")

    def screenshot(self, name: str, locator: Any | None = None, *, docs: bool = False) -> Path:
        """Save a PNG of the page (or of one element) as ``<artifacts>/<name>.png``.

        With ``docs=True`` and the environment variable ``CNNWIDGETS_DOCS_IMG=1`` the same image
        is also written to ``docs/img/<name>.png``, the pictures the README shows.

        Returns:
            The path written under the artifacts folder.
        """
        self.artifacts.mkdir(parents=True, exist_ok=True)
        path = self.artifacts / f"{name}.png"
        if locator is None:
            self.page.screenshot(path=str(path), full_page=False)
        else:
            locator.scroll_into_view_if_needed()
            locator.screenshot(path=str(path))
        if docs and os.environ.get("CNNWIDGETS_DOCS_IMG") == "1":
            DOCS_IMG.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, DOCS_IMG / path.name)
        return path


def write_notebook(path: str | os.PathLike[str], *sources: str) -> Path:
    """Write a notebook of one code cell per source (no outputs, the python3 kernel) to ``path``;
    return the path, for ``open_notebook``."""
    cells = [{"cell_type": "code", "metadata": {}, "source": source, "outputs": [], "execution_count": None}
             for source in sources]
    notebook = {"cells": cells, "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                            "language": "python"}},
                "nbformat": 4, "nbformat_minor": 5}
    path = Path(path)
    path.write_text(json.dumps(notebook))
    return path


def poll(
    fn: Callable[[], Any],
    predicate: Callable[[Any], bool] = bool,
    timeout: float = 15.0,
    interval: float = 0.2,
    what: str = "condition",
) -> Any:
    """Call ``fn`` until ``predicate(fn())`` holds and return that value.

    Use it for anything the browser shows after a round trip through the kernel (pixels, text).

    Raises:
        AssertionError: Still false after ``timeout`` seconds; the message names ``what``.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if predicate(value):
            return value
        if time.monotonic() > deadline:
            shown = value if not isinstance(value, np.ndarray) else f"array{value.shape}"
            raise AssertionError(f"{what} not reached within {timeout} s; last value: {shown!r}")
        time.sleep(interval)


def _png_to_array(png: bytes, mode: str) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(png)) as img:
        return np.asarray(img.convert(mode)).copy()


def changed_fraction(a: np.ndarray, b: np.ndarray, threshold: int = 24) -> float:
    """Fraction of pixels whose largest channel difference exceeds ``threshold`` (0-255).

    Robust to JPEG noise and anti-aliasing; use it with a floor well above what a focus outline
    or a cursor could change (gotcha 6).
    """
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16)).max(axis=-1)
    return float((diff > threshold).mean())


def launch_chromium(playwright: Any, *, headless: bool = True, extra_args: Sequence[str] = ()) -> Any:
    """Launch Debian's Chromium (never a Playwright-downloaded browser) with the flags that work here."""
    return playwright.chromium.launch(
        executable_path=chromium_path(),
        headless=headless,
        args=[*CHROMIUM_ARGS, *extra_args],
    )
