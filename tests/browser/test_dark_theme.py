"""The explorer in JupyterLab's dark theme, and again in its light one: every text on screen (the
status line, an error in it, the captions with their red and blue words, the class scores with
the selected and a hovered row, the layer menu's caption) keeps 4.5:1 contrast (WCAG AA) against
the background it is drawn on, measured from the page's computed colours.

The theme is a user setting, so this module runs its own JupyterLab server, started in the dark
theme (the session's server and the other tests keep the light one); the switch to the light
theme is the Settings menu's, as a user would do it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.browser.harness import LabServer, poll, write_notebook

CELLS = [
    """import ipywidgets as w
import cnnwidgets
from cnnwidgets.app import Explorer
explorer = cnnwidgets.explore(method="occlusion", show_scores=True)
explorer""",
    # the palette's words that this explorer does not show by itself: a dead channel's caption, a
    # method's note, "dead over the data set", an out-of-date caption (the explorer's own markup)
    """swatch = w.HTML("<span class='cnnw-red'>3 dead on this image</span> <span class='cnnw-blue'>blue</span> "
                "<span class='cnnw-orange'>2 dead over the data set</span> <span class='cnnw-note'>a note</span> "
                + Explorer.OUT_OF_DATE_NOTE)
swatch.add_class("theme-swatch")
swatch""",
]

#: Each element under the roots that shows text of its own, with its text colour and the colour
#: of what is behind it: the backgrounds of it and its ancestors, composited (a translucent one
#: over the next), up to the first opaque one. [what, text, colour, background, size px, weight].
_TEXT_CONTRAST = """roots => {
    const parse = c => { const m = c.match(/rgba?\\(([^)]+)\\)/); if (!m) return null;
                         const p = m[1].split(/[ ,\\/]+/).filter(Boolean).map(Number);
                         return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1]; };
    const over = (top, below) => [0, 1, 2].map(i => top[i] * top[3] + below[i] * (1 - top[3]));
    const behind = el => {
        const layers = [];
        for (let a = el; a; a = a.parentElement) {
            const c = parse(getComputedStyle(a).backgroundColor);
            if (c && c[3] > 0) { layers.push(c); if (c[3] >= 1) break; }
        }
        let colour = [255, 255, 255];  // the canvas, where nothing is opaque
        for (const layer of layers.reverse()) colour = over(layer, colour);
        return colour;
    };
    const out = [];
    for (const root of roots) {
        for (const el of [root, ...root.querySelectorAll('*')]) {
            const own = Array.from(el.childNodes).filter(n => n.nodeType === 3).map(n => n.textContent).join('').trim();
            if (!own || el.closest('.cnnw-sr-only, .cnnw-grid-tip, style, script')) continue;
            const box = el.getBoundingClientRect(), cs = getComputedStyle(el);
            if (box.width === 0 || box.height === 0 || cs.visibility !== 'visible') continue;
            const back = behind(el), fg = parse(cs.color);
            out.push({what: (el.className && typeof el.className === 'string' ? el.className : el.tagName).slice(0, 60),
                      text: own.slice(0, 40), colour: over(fg, back), background: back,
                      size: parseFloat(cs.fontSize), weight: Number(cs.fontWeight) || 400});
        }
    }
    return out;
}"""


def _luminance(rgb) -> float:
    channels = [c / 255 for c in rgb]
    r, g, b = (c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a, b) -> float:
    hi, lo = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def _needed(item: dict) -> float:
    """WCAG AA: 4.5:1, or 3:1 for large text (24 px, or 18.67 px bold)."""
    large = item["size"] >= 24 or (item["size"] >= 18.66 and item["weight"] >= 700)
    return 3.0 if large else 4.5


class _DarkLab(LabServer):
    """The harness's server, with JupyterLab Dark as the user's theme."""

    def _write_settings(self) -> None:
        super()._write_settings()
        path = self.base / "lab-settings" / "@jupyterlab" / "apputils-extension" / "themes.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"theme": "JupyterLab Dark"}))


@pytest.fixture(scope="module")
def lab(browser, tmp_path_factory):
    """This module's own JupyterLab, in the dark theme (overrides the session's ``lab``)."""
    server = _DarkLab(tmp_path_factory.mktemp("jupyterlab-dark"))
    try:
        server.start()
        yield server
    finally:
        server.stop()


def _notebook(folder: Path) -> Path:
    return write_notebook(folder / "dark_theme.ipynb", *CELLS)


def _measure(nb, theme: str) -> list[dict]:
    """The contrast of every text of the explorer and the swatch now, with the selected class row,
    a hovered one and an error in the status line on screen; each item gains ``ratio``."""
    kernel = nb.kernel
    roots = "[document.querySelector('.cnnw-explorer'), document.querySelector('.theme-swatch')]"
    items = []

    def take(label: str) -> None:
        for item in nb.page.evaluate(f"({_TEXT_CONTRAST})({roots})"):
            item.update(state=label, theme=theme, ratio=contrast(item["colour"], item["background"]))
            items.append(item)

    take("start")
    # a hovered row that is not the target (the target's is its own colour, measured above)
    row = nb.widget(".cnnw-explorer .cnnw-score-row:not(.cnnw-score-selected)")
    row.hover()
    poll(lambda: row.evaluate("e => getComputedStyle(e).backgroundColor"), lambda c: c not in ("rgba(0, 0, 0, 0)",),
         what="the hovered row's background")
    hovered = nb.page.evaluate(f"({_TEXT_CONTRAST})([document.querySelector('.cnnw-score-row:hover')])")
    items += [dict(item, state="hover", theme=theme, ratio=contrast(item["colour"], item["background"]))
              for item in hovered]
    nb.page.mouse.move(0, 0)
    # an error in the status line, then the line as it was
    kernel.execute("explorer.status.error('a test error: the file is not an image')")
    poll(lambda: nb.widget(".cnnw-explorer .cnnw-status").inner_text(), lambda t: t.startswith("Error:"),
         what="the error in the status line")
    error = nb.page.evaluate(f"({_TEXT_CONTRAST})([document.querySelector('.cnnw-explorer .cnnw-status')])")
    items += [dict(item, state="error", theme=theme, ratio=contrast(item["colour"], item["background"]))
              for item in error]
    kernel.execute("explorer.status.info('ready')")
    return items


def _theme(nb) -> dict:
    return nb.page.evaluate("() => ({light: document.body.dataset.jpThemeLight, name: document.body.dataset.jpThemeName, "
                            "page: getComputedStyle(document.body).getPropertyValue('--jp-layout-color0').trim()})")


def _check(items: list[dict], must_hold: tuple[str, ...]) -> None:
    whats = " ".join(item["what"] for item in items)
    for part in must_hold:  # the texts this test is about were on screen and measured
        assert part in whats, f"no text of {part} measured: {sorted({i['what'] for i in items})}"
    low = [(i["theme"], i["state"], i["what"], i["text"], round(i["ratio"], 2), i["colour"], i["background"])
           for i in items if i["ratio"] < _needed(i)]
    assert low == [], "text below WCAG AA contrast:\n" + "\n".join(map(str, low))


@pytest.mark.browser
def test_explorer_text_is_readable_in_the_dark_and_the_light_theme(open_notebook, tmp_path):
    nb = open_notebook(_notebook(tmp_path), viewport=(1400, 1500))
    poll(lambda: _theme(nb), lambda t: t["light"] == "false" and t["name"] == "JupyterLab Dark",
         what="JupyterLab in its dark theme")
    nb.run_all_and_wait(timeout=240)
    nb.kernel.execute("assert explorer.wait_idle(120)")
    state = nb.kernel.eval("dict(error=explorer.status.is_error, message=explorer.status.message, "
                           "target=explorer.target, map=explorer.method_result is not None, "
                           "caption=explorer.method_view.caption.value)")
    assert not state["error"] and state["map"] and "cnnw-red" in state["caption"], state
    root = nb.widget(".cnnw-explorer")
    # pick the second class as the target with a click: its row is the selected one
    nb.widget(".cnnw-explorer .cnnw-score-row >> nth=1").click()
    nb.kernel.wait_until("explorer.target", lambda t: t is not None)
    nb.kernel.execute("assert explorer.wait_idle(120)")
    nb.widget(".cnnw-explorer .cnnw-score-selected")
    nb.widget(".theme-swatch")
    must = ("cnnw-status", "cnnw-red", "cnnw-blue", "cnnw-orange", "cnnw-note", "cnnw-error", "cnnw-score-label",
            "cnnw-score-value", "cnnw-score-delta", "cnnw-scores-title", "cnnw-select-caption")

    dark = _measure(nb, "dark")
    nb.screenshot("explorer-dark", root)
    nb.screenshot("page-dark")
    selected = [i for i in dark if i["state"] == "start" and i["what"].startswith("cnnw-score-label")
                and i["background"] != dark[0]["background"]]
    assert selected, "the target class's row has no background of its own"
    assert any(i["state"] == "hover" for i in dark) and any(i["state"] == "error" for i in dark)
    _check(dark, must)

    # ---- the Settings menu's light theme, without reloading: the same texts, the same contrast
    nb.page.locator(".lm-MenuBar-item", has_text="Settings").first.click()
    nb.page.locator(".lm-Menu-item", has_text="Theme").first.hover()
    nb.page.locator(".lm-Menu-item", has_text="JupyterLab Light").first.click()
    poll(lambda: _theme(nb), lambda t: t["light"] == "true" and t["page"] in ("white", "#fff", "#ffffff"),
         what="JupyterLab in its light theme")
    light = _measure(nb, "light")
    nb.screenshot("explorer-light", root)
    _check(light, must)
    lowest: dict[str, float] = {}  # per theme, state and kind of text: the lowest ratio, for the log
    for i in dark + light:
        key = f"{i['theme']} {i['state']} {(i['what'].split() or ['?'])[0]}"
        lowest[key] = min(lowest.get(key, 99.0), round(i["ratio"], 2))
    print("lowest contrast:", json.dumps(dict(sorted(lowest.items())), indent=1))
