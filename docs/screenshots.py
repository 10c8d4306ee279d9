"""Take the lesson pictures shown in the README from a real browser run.

Run from the repository root (needs the test extras and Chromium, as for the browser tests)::

    python docs/screenshots.py                 # every lesson in notebooks/
    python docs/screenshots.py 03 08           # only lessons whose file names start so

Each lesson notebook is opened in JupyterLab (a private server on 127.0.0.1) in Chromium
driven by Playwright, run top to bottom with "Run All Cells", and its main view - the largest
widget output (the first one for the lessons in ``FIRST_WIDGET``, whose later widgets are
extras), or the largest picture when the lesson has no widget - is saved as
``docs/img/lessons/<lesson>.jpg`` (at most 900 pixels wide). Nothing is staged or faked: the
pictures are what a reader of the notebook sees after running it.
"""

from __future__ import annotations

import io
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.browser.harness import LabServer, NotebookPage, browser_unavailable_reason, launch_chromium  # noqa: E402

OUT = REPO / "docs" / "img" / "lessons"
MAX_WIDTH = 900
FIRST_WIDGET = {"02", "06", "07"}  # kernels; feature evolution; invariance

# index of the largest widget output (else the largest image output) among all cell outputs
_JS_MAIN_OUTPUT = """
(first) => {
  const outputs = Array.from(document.querySelectorAll(
      '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output'));
  let best = -1, bestArea = 0, bestImage = -1, bestImageArea = 0;
  outputs.forEach((el, i) => {
    const r = el.getBoundingClientRect();
    const area = r.width * r.height;
    const widget = el.querySelector('.jupyter-widgets, .widget-box, .cnnw-explorer');
    if (widget && area > 0 && (first ? best < 0 : area > bestArea)) {
      best = i; bestArea = area;
    }
    if (el.querySelector('img') && area > bestImageArea) { bestImage = i; bestImageArea = area; }
  });
  return best >= 0 ? best : bestImage;
}
"""


def shoot(nb: NotebookPage, out: Path, first: bool) -> Path:
    """Save the notebook's main output as a JPEG at ``out``."""
    from PIL import Image

    # an explorer computes on a worker thread: wait until what it shows is final
    nb.kernel.execute("_ = globals().get('explorer') is None or explorer.wait_idle(120)", timeout=150)
    index = nb.page.evaluate(_JS_MAIN_OUTPUT, first)
    if index is None or index < 0:
        raise RuntimeError(f"{nb.relpath}: no widget or picture output to photograph")
    element = nb.page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output").nth(index)
    element.scroll_into_view_if_needed()
    time.sleep(1.5)  # let the last frames arrive and the browser paint them
    picture = Image.open(io.BytesIO(element.screenshot())).convert("RGB")
    if picture.width > MAX_WIDTH:
        picture = picture.resize((MAX_WIDTH, round(picture.height * MAX_WIDTH / picture.width)), Image.LANCZOS)
    out.parent.mkdir(parents=True, exist_ok=True)
    picture.save(out, quality=82, optimize=True)
    return out


def main(argv: list[str]) -> int:
    reason = browser_unavailable_reason()
    if reason:
        print(f"cannot take screenshots: {reason}", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    lessons = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if argv:
        lessons = [p for p in lessons if any(p.name.startswith(a) for a in argv)]
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as playwright:
        lab = LabServer(Path(tmp)).start()
        browser = launch_chromium(playwright)
        try:
            for path in lessons:
                start = time.monotonic()
                relpath = lab.copy_in([path], path.stem)[0]
                # tall, so that the largest view fits on screen whole
                context = browser.new_context(viewport={"width": 1280, "height": 2400}, device_scale_factor=1)
                page = context.new_page()
                page.set_default_timeout(60_000)
                nb = NotebookPage(page, lab, relpath, OUT)
                try:
                    nb.open()
                    nb.run_all_and_wait(timeout=300)
                    number = path.stem.split("_")[0]
                    out = shoot(nb, OUT / f"{number}.jpg", first=number in FIRST_WIDGET)
                    print(f"{path.name}: {out.relative_to(REPO)} ({out.stat().st_size // 1024} KB, "
                          f"{time.monotonic() - start:.0f} s)", flush=True)
                finally:
                    nb.close()
                    context.close()
                    lab.shutdown_notebook(relpath)
        finally:
            browser.close()
            lab.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
