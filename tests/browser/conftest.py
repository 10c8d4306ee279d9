"""Fixtures for the real-browser tests: ``lab`` (JupyterLab server), ``browser`` (Chromium) and
``open_notebook`` (a notebook copied in, opened in a fresh page, kernel connected).

See tests/browser/README.md for how to write a test and harness.py for the helpers.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.browser.harness import (
    ARTIFACTS,
    SCREENSHOTS,
    LabServer,
    NotebookPage,
    browser_unavailable_reason,
    launch_chromium,
)

# Notebooks in this folder are material for the browser tests, not notebooks for nbval to run.
collect_ignore_glob = ["*.ipynb"]

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test under tests/browser carries the ``browser`` marker, even if its author forgot."""
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.browser)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    # Keeps each phase's report on the item so fixtures can tell, at teardown, whether it failed.
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


def _require_browser() -> None:
    """Skip (or, with CNNWIDGETS_REQUIRE_BROWSER=1 as in .ci/run, fail) when no browser can run."""
    reason = browser_unavailable_reason()
    if reason is None:
        return
    if os.environ.get("CNNWIDGETS_REQUIRE_BROWSER") == "1":
        pytest.fail(f"browser tests are required here (CNNWIDGETS_REQUIRE_BROWSER=1) but: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabServer]:
    """A JupyterLab server for the whole session, on 127.0.0.1 with a random port and token."""
    _require_browser()
    server = LabServer(tmp_path_factory.mktemp("jupyterlab"))
    try:
        server.start()
        yield server
    finally:
        server.stop()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        if server.log_path.exists():
            shutil.copy2(server.log_path, ARTIFACTS / "jupyter-server.log")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium under Playwright, headless (CNNWIDGETS_HEADED=1 shows it, given a display).

    One per test module: Playwright's synchronous API keeps an event loop marked as running on the
    main thread while it is started, and explorers made in the tests after it would take that
    loop, which runs nothing between browser calls, for the notebook's own."""
    _require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright, headless=os.environ.get("CNNWIDGETS_HEADED") != "1")
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def open_notebook(
    lab: LabServer, browser: Any, request: pytest.FixtureRequest
) -> Iterator[Callable[..., NotebookPage]]:
    """Factory: ``open_notebook(path, *extra_files, viewport=(1280, 900)) -> NotebookPage``.

    Copies the notebook (and any files or folders it needs) into a folder of the server's root
    named after the test, opens it in a new browser context and waits until its kernel is
    connected. At teardown: a screenshot ``failure.png`` and the browser console errors when the
    test failed, then the page is closed and the kernel shut down.
    """
    opened: list[NotebookPage] = []
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)[:80]

    def _open(
        notebook: str | os.PathLike[str],
        *extra_files: str | os.PathLike[str],
        viewport: tuple[int, int] = (1280, 900),
    ) -> NotebookPage:
        folder = f"{slug}-{len(opened)}"
        relpaths = lab.copy_in([notebook, *extra_files], folder)
        context = browser.new_context(
            viewport={"width": viewport[0], "height": viewport[1]}, device_scale_factor=1
        )
        page = context.new_page()
        page.set_default_timeout(30_000)
        nb = NotebookPage(page, lab, relpaths[0], SCREENSHOTS / folder)
        opened.append(nb)
        nb.open()
        return nb

    yield _open

    report = getattr(request.node, "rep_call", None)
    failed = report is not None and report.failed
    for nb in opened:
        try:
            if failed:
                path = nb.screenshot("failure")
                print(f"screenshot at failure: {path}")
                if nb.console_errors:
                    print("browser console errors:\n  " + "\n  ".join(nb.console_errors[-20:]))
        finally:
            nb.close()
            nb.page.context.close()
            try:
                lab.shutdown_notebook(nb.relpath)
            except OSError:
                pass
