"""The widgets' page colours follow JupyterLab's theme: no hard-coded text, background or border
colour outside the package's palette, which has a light and a dark value for each colour, each
with 4.5:1 contrast (WCAG AA) against the backgrounds it is shown on. Pictures (colormaps, the
occluder's box, the grid's selection frame) and the dark tooltip are the same in every theme.

The real-browser check of the same, in JupyterLab's dark and light themes, is
tests/browser/test_dark_theme.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import ipywidgets
import pytest

from cnnwidgets import widgets as W
from cnnwidgets.widgets.filters import KernelView
from cnnwidgets.widgets.summary import table_html

PACKAGE = Path(__file__).resolve().parents[1] / "cnnwidgets"
CSS = (PACKAGE / "widgets" / "widgets.css").read_text(encoding="utf-8")

#: Properties whose value paints text, a background or a border on the page.
_COLOUR_PROPERTY = re.compile(
    r"^(color|background(-color)?|border(-[a-z]+)*|outline(-color)?|box-shadow|text-decoration(-color)?|"
    r"caret-color|column-rule(-color)?|fill|stroke)$"
)
#: A colour written out: hex, a colour function, or a colour name (the usual ones).
_LITERAL = re.compile(
    r"#[0-9a-fA-F]{3,8}\b|\b(rgba?|hsla?|hwb|lab|lch|oklab|oklch)\(|"
    r"(?<![\w-])(black|white|gr[ae]y|silver|red|maroon|crimson|orange|gold|yellow|green|lime|olive|teal|cyan|"
    r"aqua|blue|navy|purple|magenta|fuchsia|pink|brown)(?![\w-])",
    re.IGNORECASE,
)
#: A fallback value inside var(): a literal colour, or a var() already reduced.
_FALLBACK = r"(#[0-9a-fA-F]{3,8}|rgba?\([^()]*\)|[a-zA-Z]+)"
#: CSS rules drawn over pictures, or the dark tooltip box: meant to look the same in every theme.
_PICTURE_RULES = (".cnnw-occluder-box", ".cnnw-occluder-handle", ".cnnw-grid-selected", ".cnnw-grid-tip")

#: JupyterLab's theme values the palette is shown on (@jupyterlab/theme-light-extension and
#: theme-dark-extension, JupyterLab 4): the page (--jp-layout-color0 and 1, the latter also a
#: selected cell's background) and a hovered class row (--jp-layout-color2).
LIGHT_PAGE, LIGHT_HOVER = ("#ffffff",), ("#eeeeee", "#eeeeff")  # (#eef: the fallback without JupyterLab)
DARK_PAGE, DARK_HOVER = ("#111111", "#212121"), ("#424242",)
#: The palette's text colours; those of the class list's changes show on hovered and selected rows too.
TEXT = ("muted", "error", "red", "blue", "orange", "note")
ROW_TEXT = ("up", "down", "same")


def bare_colours(declarations: str) -> list[str]:
    """The colour literals in CSS ``declarations`` ("a: b; c: d") that no theme can change: those
    of colour properties, but for the fallbacks of JupyterLab variables (``var(--jp-x, #555)``)
    and the package's palette (``var(--cnnw-x)``, set per theme in widgets.css)."""
    found = []
    for declaration in declarations.split(";"):
        name, _, value = declaration.partition(":")
        if not _COLOUR_PROPERTY.match(name.strip().lower()):
            continue
        reduced, before = value, None
        while reduced != before:  # innermost first: var(--cnnw-x, var(--jp-y, #z))
            before = reduced
            reduced = re.sub(rf"var\(\s*--jp-[\w-]+\s*,\s*{_FALLBACK}\s*\)", "THEMED", reduced)
            reduced = re.sub(r"var\(\s*--cnnw-[\w-]+\s*(,\s*THEMED\s*)?\)", "THEMED", reduced)
        found += [match.group(0) for match in _LITERAL.finditer(reduced)]
    return found


def css_rules(css: str) -> list[tuple[str, str]]:
    """(selector, declarations) of each rule of a flat style sheet (comments dropped)."""
    css = re.sub(r"/\*.*?\*/", "", css, flags=re.DOTALL)
    return [(selector.strip(), body) for selector, body in re.findall(r"([^{}]+)\{([^{}]*)\}", css)]


def inline_styles(markup: str) -> list[str]:
    """The style attributes' values of HTML ``markup``, and the rules of its <style> elements."""
    styles = [m.group(2) for m in re.finditer(r"""style=(["'])(.*?)\1""", markup, flags=re.DOTALL)]
    for sheet in re.findall(r"<style>(.*?)</style>", markup, flags=re.DOTALL):
        styles += [body for _, body in css_rules(sheet)]
    return styles


def html_bare_colours(markup: str) -> list[str]:
    return [colour for style in inline_styles(markup) for colour in bare_colours(style)]


def palette() -> dict[str, dict[str, str]]:
    """The --cnnw-* colours widgets.css sets for the light themes (``:root``) and the dark ones."""
    blocks = {"light": ":root", "dark": 'body[data-jp-theme-light="false"]'}
    rules = dict(css_rules(CSS))
    return {theme: dict(re.findall(r"--cnnw-([\w-]+)\s*:\s*([^;]+?)\s*;", rules[selector]))
            for theme, selector in blocks.items()}


def contrast(a: str, b: str) -> float:
    """WCAG 2 contrast ratio of two opaque hex colours."""
    def luminance(colour: str) -> float:
        digits = colour.lstrip("#")
        if len(digits) == 3:
            digits = "".join(c * 2 for c in digits)
        channels = [int(digits[i:i + 2], 16) / 255 for i in (0, 2, 4)]
        r, g, b = (c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels)
        return 0.2126 * r + 0.7152 * g + 0.0722 * b

    hi, lo = sorted((luminance(a), luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


# ---------------------------------------------------------------- the checker itself
@pytest.mark.parametrize("style, expected", [
    ("color:#555", ["#555"]),
    ("color: rgb(85, 85, 85); font-style:italic", ["rgb("]),
    ("border-bottom:1px solid #ddd;white-space:nowrap", ["#ddd"]),
    ("background: white", ["white"]),
    ("color:var(--my-grey, #555)", ["#555"]),  # a fallback of a variable no theme sets
    ("color:var(--jp-ui-font-color2, #555)", []),
    ("color:var(--cnnw-error, var(--jp-error-color1, #b00020))", []),
    ("box-shadow: inset 4px 0 0 var(--cnnw-selected-edge)", []),
    ("width:48px;height:8px;margin:0 3px", []),
])
def test_checker_finds_hard_coded_colours(style, expected):
    assert bare_colours(style) == expected


def test_checker_reads_html():
    assert html_bare_colours("<span style='color:#c62828'>red</span>") == ["#c62828"]
    assert html_bare_colours('<b style="font-weight:bold">x</b><style>.a{color:#333}</style>') == ["#333"]
    assert html_bare_colours("<span class='cnnw-red'>red</span>") == []


# ---------------------------------------------------------------- the style sheet and the palette
def test_style_sheet_colours_come_from_the_theme():
    bare = {selector: bare_colours(body) for selector, body in css_rules(CSS)
            if not any(part in selector for part in _PICTURE_RULES)}
    assert {s: c for s, c in bare.items() if c} == {}
    # the picture rules are still there (a renamed class would leave this test checking nothing)
    selectors = " ".join(selector for selector, _ in css_rules(CSS))
    assert all(rule in selectors for rule in _PICTURE_RULES)


def test_palette_has_a_dark_value_for_every_light_one():
    colours = palette()
    assert colours["light"] and colours["light"].keys() == colours["dark"].keys()
    used = set()
    for path in [*PACKAGE.rglob("*.py"), *PACKAGE.rglob("*.js"), *PACKAGE.rglob("*.css")]:
        used |= set(re.findall(r"var\(\s*--cnnw-([\w-]+)", path.read_text(encoding="utf-8")))
    assert used and used <= colours["light"].keys(), used - colours["light"].keys()
    # each word class in colour shows a palette colour
    classes = re.findall(r"\.cnnw-(red|blue|orange|note|error)\s*\{\s*color:\s*var\(--cnnw-([\w-]+)\)", CSS)
    assert sorted(classes) == sorted((c, c) for c in ("red", "blue", "orange", "note", "error"))


def test_palette_text_keeps_4_5_to_1_in_light_and_dark_themes():
    colours = palette()
    low = []
    for theme, pages, hovers in (("light", LIGHT_PAGE, LIGHT_HOVER), ("dark", DARK_PAGE, DARK_HOVER)):
        shade = colours[theme]
        rows = (*pages, *hovers, shade["selected"])
        for name in TEXT + ROW_TEXT:
            for background in rows if name in ROW_TEXT else pages:
                ratio = contrast(shade[name], background)
                if ratio < 4.5:
                    low.append((theme, name, shade[name], background, round(ratio, 2)))
        # the selected row's edge mark against the row (3:1 for marks)
        if contrast(shade["selected-edge"], shade["selected"]) < 3:
            low.append((theme, "selected-edge", shade["selected-edge"], shade["selected"]))
    assert low == []


def test_hovered_row_uses_the_theme_background_the_palette_was_checked_on():
    hover = dict(css_rules(CSS))[".cnnw-score-row:hover"]
    assert "var(--jp-layout-color2, #eef)" in hover


# ---------------------------------------------------------------- the HTML the widgets make
def test_status_line_and_image_status_have_no_hard_coded_colour():
    status = W.StatusLine()
    for show in (lambda: status.info("ready"), lambda: status.error("it failed")):
        show()
        assert "color:" in status.value and html_bare_colours(status.value) == [], status.value
    status.message, status.level = "computing", "busy"
    assert html_bare_colours(status.value) == [], status.value

    view = KernelView()
    try:
        view.show_error("no kernels here")
        assert "color:" in view._status.value and html_bare_colours(view._status.value) == [], view._status.value
    finally:
        view.close()


def test_summary_table_has_no_hard_coded_colour():
    markup = table_html(["layer", "shape"], [["conv1", "8x32x32"]])
    assert "border-bottom" in markup and html_bare_colours(markup) == [], markup


def _html_of(widget: ipywidgets.Widget) -> list[str]:
    """The values of every HTML widget inside ``widget``, and their descriptions."""
    found, stack, seen = [], [widget], set()
    while stack:
        item = stack.pop()
        if not isinstance(item, ipywidgets.Widget) or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, (ipywidgets.HTML, ipywidgets.HTMLMath)):
            found.append(item.value)
        stack.extend(getattr(item, "children", None) or ())
        for name in ("caption", "status"):
            stack.append(getattr(item, name, None))
    return found


def test_explorer_html_has_no_hard_coded_colour():
    from cnnwidgets.app.explorer import Explorer
    from cnnwidgets.zoo import load_default

    explorer = Explorer(load_default(), None, background=False, method="occlusion", show_scores=True,
                        box=(10, 10, 16, 16))
    try:
        assert explorer.wait_idle(60) and not explorer.status.is_error, explorer.status.message
        markup = _html_of(explorer)
        everything = "\n".join(markup)
        # the occlusion key and the channel view's change, in words and in the palette's colours
        assert "<span class='cnnw-red'>red</span>" in everything and "<span class='cnnw-blue'>blue</span>" in everything
        bare = {m[:80]: html_bare_colours(m) for m in markup if html_bare_colours(m)}
        assert bare == {}
        assert html_bare_colours(Explorer.OUT_OF_DATE_NOTE) == [] and "cnnw-error" in Explorer.OUT_OF_DATE_NOTE
    finally:
        explorer.close()


def test_package_sources_write_no_hard_coded_page_colour():
    """Also the HTML the tests above do not produce (a dead channel's caption, a method's note):
    every ``color:``/``background:``/``border:`` written in the package's Python and JavaScript."""
    declaration = re.compile(
        r"""\b(color|background(?:-color)?|border(?:-[a-z]+)*|outline|box-shadow)\s*:\s*([^;'"}]*)""")
    found = []
    for path in [*PACKAGE.rglob("*.py"), *PACKAGE.rglob("*.js")]:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for match in declaration.finditer(line):
                if bare_colours(f"{match.group(1)}:{match.group(2)}"):
                    found.append(f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}")
    assert found == []
