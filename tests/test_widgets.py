"""Widgets, headless: trait validation, what a click does, and the browser-side geometry (run in node)."""

from __future__ import annotations

import ast
import io
import json
import re
import shutil
import subprocess
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
import traitlets
from PIL import Image

from cnnwidgets import render as R
from cnnwidgets import widgets as W
from cnnwidgets.widgets.methodview import MethodView

WIDGETS_DIR = Path(W.__file__).parent


def png(height, width):
    return R.encode_png(np.zeros((height, width, 3), np.uint8))


def test_widgets_package_does_not_import_torch():
    for path in WIDGETS_DIR.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            assert not any(n.split(".")[0] in ("torch", "torchvision") for n in names), f"{path.name} imports torch"


def test_front_end_files_are_shipped_next_to_the_modules():
    for name in ("occluder.js", "tilegrid.js", "scorebars.js", "groupedselect.js", "widgets.css"):
        text = (WIDGETS_DIR / name).read_text()
        assert len(text) > 200
    assert "export default" in (WIDGETS_DIR / "occluder.js").read_text()


# ---------------------------------------------------------------- occluder
def test_clamp_box():
    assert W.clamp_box((-5, 3, 10, 10), 64, 48) == (0, 3, 10, 10)
    assert W.clamp_box((60, 45, 10, 10), 64, 48) == (54, 38, 10, 10)
    assert W.clamp_box((0, 0, 100, 100), 64, 48) == (0, 0, 64, 48)
    assert W.clamp_box((2.5, 1.49, 3.5, 4), 64, 48) == (3, 1, 4, 4)  # halves round up, like JS
    with pytest.raises(ValueError, match="positive"):
        W.clamp_box((0, 0, 0, 5), 64, 48)
    assert W.clamp_box((10.6, 10.4, 20.5, 20.5), 64, 48) == (11, 10, 21, 21)
    with pytest.raises(ValueError, match="finite"):
        W.clamp_box((0, float("inf"), 4, 4), 64, 48)


def test_clamp_box_can_refuse_a_box_entirely_outside():
    assert W.clamp_box((2000, 1000, 300, 300), 64, 48) == (0, 0, 64, 48)  # by default moved in, as the browser needs
    with pytest.raises(ValueError, match=r"box \(2000, 1000, 300, 300\) lies entirely outside the 64x48 image"):
        W.clamp_box((2000, 1000, 300, 300), 64, 48, inside_only=True)
    for outside in ((64, 0, 4, 4), (0, 48, 4, 4), (-4, 0, 4, 4), (0, -4.6, 4, 4)):
        with pytest.raises(ValueError, match="entirely outside"):
            W.clamp_box(outside, 64, 48, inside_only=True)
    assert W.clamp_box((63, 47, 4, 4), 64, 48, inside_only=True) == (60, 44, 4, 4)  # one pixel inside
    assert W.clamp_box((-3, -3, 4, 4), 64, 48, inside_only=True) == (0, 0, 4, 4)


def test_occluder_box_trait_is_validated_and_follows_image_size():
    canvas = W.OccluderCanvas()
    canvas.set_image(png(32, 40), "png", 40, 32)
    assert (canvas.image_width, canvas.image_height) == (40, 32)
    assert Image.open(io.BytesIO(canvas.image)).size == (40, 32)
    canvas.box = [35, 30, 10, 10]  # a list, as the browser sends it
    assert canvas.box == (30, 22, 10, 10)
    canvas.box = None
    assert canvas.box is None
    with pytest.raises(traitlets.TraitError):
        canvas.box = (0, 0, -1, 3)
    with pytest.raises(traitlets.TraitError):
        canvas.box = (0, 0, 3)
    # fractions are rounded halves up, as the browser rounds them (not truncated)
    canvas.box = (10.6, 10.5, 8.5, 0.7)
    assert canvas.box == (11, 11, 9, 1) and all(type(v) is int for v in canvas.box)
    with pytest.raises(traitlets.TraitError, match="finite numbers"):
        canvas.box = (float("nan"), 0, 4, 4)
    canvas.box = (30, 22, 10, 10)
    canvas.set_image(R.encode_jpeg(np.zeros((16, 16, 3), np.uint8)), "jpeg", 16, 16)
    assert canvas.box == (6, 6, 10, 10) and canvas.image_format == "jpeg"


def test_occluder_syncs_box_and_dragging():
    canvas = W.OccluderCanvas()
    state = canvas.get_state()
    assert state["box"] is None and state["dragging"] is False
    canvas.box = (1, 2, 3, 4)
    assert canvas.get_state()["box"] == [1, 2, 3, 4] or canvas.get_state()["box"] == (1, 2, 3, 4)


def test_occluder_key_step_is_synced_and_positive():
    canvas = W.OccluderCanvas()
    assert canvas.key_step == 2 and canvas.get_state()["key_step"] == 2  # the step the docstring gives
    canvas.key_step = 5
    assert canvas.get_state()["key_step"] == 5
    with pytest.raises(traitlets.TraitError):
        canvas.key_step = 0


# ---------------------------------------------------------------- tile grid
def make_grid(count=5):
    acts = np.arange(count * 4, dtype=np.float32).reshape(count, 2, 2)
    acts[1] = -1.0
    img, layout = R.feature_grid(acts, layout=R.GridLayout(count=count, rows=2, cols=3, map_height=2, map_width=2, scale=2))
    grid = W.TileGrid()
    grid.show(R.encode_jpeg(img), "jpeg", layout, R.channel_stats(acts))
    return grid, layout


def test_tile_grid_click_selects_channel_and_ignores_borders():
    grid, layout = make_grid()
    assert grid.geometry == layout.to_dict()
    assert grid.click(7, 2) == 1 and grid.selected == 1
    assert grid.click(5, 2) is None and grid.selected == 1  # border: selection kept
    assert grid.click(13, 8) is None  # empty slot
    assert grid.click(2, 7) == 3 and grid.selected == 3


def test_tile_grid_stats_bytes_and_hover_text():
    grid, _ = make_grid()
    stats = np.frombuffer(grid.stats, dtype="<f4").reshape(5, 5)
    assert stats[1].tolist() == [-1.0, 0.0, -1.0, -1.0, 0.0]  # mean std min max active
    assert stats[2, 3] == 11.0
    assert grid.describe(2).startswith("channel 2\nmean 9.50") and "max 11.00" in grid.describe(2)


def test_tile_grid_keeps_its_ipywidgets_layout():
    import ipywidgets

    grid, _ = make_grid()
    assert isinstance(grid.layout, ipywidgets.Layout)
    grid.layout.width = "300px"
    state = grid.get_state()
    assert state["layout"].startswith("IPY_MODEL_") and state["geometry"]["count"] == 5


def test_tile_grid_before_first_image():
    grid = W.TileGrid()
    assert grid.channel_at(1, 1) is None and grid.click(1, 1) is None and grid.describe(3) == "channel 3"


def test_tile_grid_hover_text_of_a_channel_without_statistics_is_its_number():
    grid, _ = make_grid(count=5)  # the browser may still report a tile of an earlier, larger grid
    assert grid.describe(7) == "channel 7" and grid.describe(-1) == "channel -1"
    assert grid.describe(4).startswith("channel 4\nmean")


# ---------------------------------------------------------------- scores
def test_score_rows_top_k_pinned_and_delta():
    probs = np.array([0.05, 0.6, 0.3, 0.05])
    rows = W.score_rows(probs, ["a", "b", "c"], reference=np.array([0.1, 0.5, 0.3, 0.1]), k=2, pinned=3)
    assert [r["index"] for r in rows] == [1, 2, 3]
    assert rows[2]["label"] == "class 3"  # no name for class 3
    assert rows[0]["delta"] == pytest.approx(0.1) and rows[1]["delta"] == pytest.approx(0.0)
    assert W.score_rows(probs, "abcd", k=1)[0]["delta"] is None
    with pytest.raises(ValueError, match="out of range"):
        W.score_rows(probs, "abcd", pinned=4)
    with pytest.raises(ValueError, match="shape"):
        W.score_rows(probs, "abcd", reference=np.ones(3))


def test_score_rows_that_show_the_same_number_keep_their_order():
    # classes 1-3 all read 0.0 %: their tiny differences, which change with every occluder
    # position, must not reorder the rows the user is reading
    frames = [np.array([0.9995, 2e-4, 3e-4, 1e-5]), np.array([0.9994, 1e-4, 2e-5, 4.8e-4])]
    orders = [[r["index"] for r in W.score_rows(p, "abcd", k=4)] for p in frames]
    assert orders == [[0, 1, 2, 3], [0, 1, 2, 3]]
    # a real difference still ranks first
    assert [r["index"] for r in W.score_rows(np.array([0.3, 0.2, 0.5]), "abc", k=3)] == [2, 0, 1]


def test_score_rows_list_the_most_probable_classes_where_many_show_the_same_value():
    # 1000 classes of about 0.1 % each: the three most probable read 0.2 %, 0.1 % and 0.1 %, as
    # hundreds of others of lower index do, and are listed all the same (equal readings by index)
    probs = np.full(1000, 0.00099)
    probs[[622, 900, 17]] = [0.00175, 0.0013, 0.00104]
    rows = W.score_rows(probs / probs.sum(), [], k=3)
    assert [r["index"] for r in rows] == [622, 17, 900]
    # equal probabilities: the lower indices, in index order
    assert [r["index"] for r in W.score_rows(np.full(10, 0.1), [], k=3)] == [0, 1, 2]


def test_score_bars_pick():
    bars = W.ScoreBars(rows=W.score_rows(np.array([0.2, 0.8]), ["x", "y"]))
    bars.pick(0)
    assert bars.selected == 0
    bars.pick(1)
    assert bars.selected == 1
    bars.pick(1)  # the selected class picked again is unpicked
    assert bars.selected is None
    with pytest.raises(ValueError, match="not among the rows"):
        bars.pick(5)


# ---------------------------------------------------------------- grouped select
def test_grouped_select_groups_in_first_seen_order_and_validates():
    sel = W.GroupedSelect.from_items(
        [("features", "features.0  Conv2d", "features.0"), ("head", "head.0", "head.0"), ("features", "features.2", "features.2")]
    )
    assert [g["label"] for g in sel.groups] == ["features", "head"]
    assert sel.groups[0]["options"] == [["features.0  Conv2d", "features.0"], ["features.2", "features.2"]]
    assert sel.value == "features.0" and sel.options == ["features.0", "features.2", "head.0"]
    sel.value = "features.2"
    with pytest.raises(traitlets.TraitError, match="did you mean 'features.2'"):
        sel.value = "features.3"
    sel.set_items([("a", "a", "a"), ("features", "f2", "features.2")])
    assert sel.value == "features.2" and sel.label_of("features.2") == "f2"
    sel.set_items([("a", "a", "a")])
    assert sel.value == "a"
    # a value that is not among the new options changes nothing (the menu would show a blank)
    with pytest.raises(traitlets.TraitError, match="'zzz' is not one of the new options"):
        sel.set_items([("h", "c", "c")], value="zzz")
    assert sel.options == ["a"] and sel.value == "a"


# ---------------------------------------------------------------- status, picker, controls
def test_status_line_escapes_and_keeps_level():
    status = W.StatusLine()
    status.exception("upload", ValueError("not an image <png>"))
    assert status.is_error and "ValueError: not an image" in status.message
    assert "&lt;png&gt;" in status.value and "<png>" not in status.value
    status.info("ok")
    assert not status.is_error and "ok" in status.value


def shown_text(markup: str) -> str:
    """The text a browser shows for HTML ``markup`` (tags dropped, entities decoded)."""
    import html

    return html.unescape(re.sub(r"<[^>]+>", "", markup))


def test_status_line_is_a_live_region_and_says_error_in_words():
    status = W.StatusLine()
    for say in (lambda: status.info("layer picked"), lambda: status.error("the file is not an image")):
        say()
        outer = re.match(r"<(\w+)([^>]*)>", status.value)
        assert outer, status.value
        attributes = dict(re.findall(r'([\w-]+)="([^"]*)"', outer.group(2)))
        assert attributes["role"] == "status" and attributes["aria-live"] == "polite", status.value
    # an error is told by a word, not by its colour alone; the message itself stays as given
    assert shown_text(status.value) == "Error: the file is not an image"
    assert status.message == "the file is not an image"
    status.info("done")
    assert shown_text(status.value) == "done"


def test_image_picker_upload_becomes_selected_entry():
    picker = W.ImagePicker(["circle", "star"], value="star")
    seen = []
    picker.observe(lambda c: seen.append(c["new"]), names="value")
    assert picker.value == "star" and picker.data_for("star") is None
    picker.upload.upload("cat.png", b"abc")
    assert picker.value == "cat.png (uploaded)" and picker.data_for(picker.value) == b"abc"
    picker.add_upload("cat.png", b"def")
    assert picker.value == "cat.png (uploaded 2)" and picker.data_for("cat.png (uploaded)") == b"abc"
    picker.dropdown.value = "circle"
    assert seen == ["cat.png (uploaded)", "cat.png (uploaded 2)", "circle"]
    # the same file again selects its entry; no second copy of its bytes is kept
    assert picker.add_upload("cat.png", b"abc") == "cat.png (uploaded)" and picker.value == "cat.png (uploaded)"
    assert picker.names.count("cat.png (uploaded)") == 1 and len(picker._uploads) == 2
    # uploaded again while selected: nothing to load, and observers hear of it
    assert picker.reuploads == 0
    picker.add_upload("cat.png", b"abc")
    assert picker.reuploads == 1 and seen[-1] == "cat.png (uploaded)"


def browser_sends(button, name: str, data: bytes, piece: int = 4, upload_id: int = 1, skip: int | None = None):
    """The messages upload.js sends for a file: pieces of ``piece`` bytes (one empty one for an
    empty file), through the comm message handler, as they come from the browser."""
    starts = list(range(0, len(data), piece)) or [0]
    for n, start in enumerate(starts):
        if n == skip:
            continue
        button._handle_custom_msg({"kind": "piece", "id": upload_id, "name": name, "size": len(data),
                                   "offset": start}, [memoryview(data[start:start + piece])])


def test_upload_button_puts_the_pieces_together_in_order():
    button = W.UploadButton()
    files, problems, answers = [], [], []
    button.on_file(lambda name, data: files.append((name, data)))
    button.on_problem(problems.append)
    button.send = lambda content, buffers=None: answers.append(content)  # what reaches the browser
    photo = bytes(range(256)) * 3 + b"end"
    browser_sends(button, "photo.jpg", photo, piece=100)
    # each piece is acknowledged with the bytes arrived so far: the browser sends the next one then
    assert answers == [{"kind": "ack", "id": 1, "received": min(n, len(photo))} for n in range(100, 900, 100)]
    browser_sends(button, "empty.png", b"", upload_id=2)
    assert files == [("photo.jpg", photo), ("empty.png", b"")] and problems == []
    # a piece that went missing: the file is not handed on, the browser is told to stop, and the
    # user hears why (once)
    answers.clear()
    browser_sends(button, "photo.jpg", photo, piece=100, upload_id=3, skip=2)
    assert len(files) == 2 and problems == ["photo.jpg arrived incomplete (a piece went missing); please upload it again"]
    assert answers[2] == {"kind": "stop", "id": 3} and len(answers) == 3
    # a new file started before the last one ended replaces it
    button._handle_custom_msg({"kind": "piece", "id": 4, "name": "a.png", "size": 8, "offset": 0}, [memoryview(b"1234")])
    browser_sends(button, "b.png", b"abcdefgh", upload_id=5)
    assert files[-1] == ("b.png", b"abcdefgh")


def test_upload_button_refuses_large_and_unreadable_files_with_the_reason():
    button = W.UploadButton(max_bytes=2 * 2**20)
    files, problems = [], []
    button.on_file(lambda name, data: files.append(name))
    button.on_problem(problems.append)
    button._handle_custom_msg({"kind": "refused", "id": 1, "name": "huge.tif", "size": 83 * 2**20}, [])
    button._handle_custom_msg({"kind": "failed", "id": 2, "name": "gone.png", "message": "NotReadableError"}, [])
    button.upload("big.png", bytes(2 * 2**20 + 1))
    browser_sends(button, "sneaky.png", bytes(3 * 2**20), piece=2**20)  # the browser's check skipped
    assert files == []
    assert problems == [
        "huge.tif is 83.0 MB; files up to 2.0 MB can be uploaded here",
        "the browser could not read gone.png: NotReadableError",
        "big.png is 2.1 MB; files up to 2.0 MB can be uploaded here",
        "sneaky.png is 3.0 MB; files up to 2.0 MB can be uploaded here",
    ]
    assert button.get_state()["max_bytes"] == 2 * 2**20  # the browser refuses larger files before sending
    with pytest.raises(ValueError, match="non-empty name"):
        button.upload("", b"x")
    with pytest.raises(ValueError, match="must be bytes"):
        button.upload("a.png", "text")


def test_image_picker_keeps_the_last_uploads_only():
    picker = W.ImagePicker(["circle"])
    entries = [picker.add_upload(f"photo{i}.png", bytes([i])) for i in range(picker.MAX_UPLOADS + 3)]
    assert picker.value == entries[-1]
    kept = entries[-picker.MAX_UPLOADS:]
    assert picker.names == ["circle", *kept] and all(picker.data_for(e) is None for e in entries[:3])
    picker.value = kept[0]  # the same file again: no upload is added, so none is dropped
    assert picker.add_upload("photo3.png", bytes([3])) == kept[0] and picker.names == ["circle", *kept]
    assert len(picker._uploads) == picker.MAX_UPLOADS
    # the entry selected before a new upload stays (the selection returns to it if the new
    # file cannot be shown), even when it is the oldest
    newest = picker.add_upload("one more.png", b"x")
    assert picker.value == newest and kept[0] in picker.names and kept[1] not in picker.names


def test_image_picker_upload_button_has_a_tooltip():
    picker = W.ImagePicker(["circle"])
    tooltip = picker.upload.get_state()["hint"]  # what the browser puts in the button's title
    assert tooltip and "upload an image file" in tooltip and "PNG" in tooltip


def test_image_picker_remove_entry():
    picker = W.ImagePicker(["circle", "star"], value="star")
    entry = picker.add_upload("cat.png", b"abc")
    with pytest.raises(ValueError, match="selected entry"):
        picker.remove_entry(entry)
    picker.value = "circle"
    picker.remove_entry(entry)
    assert picker.names == ["circle", "star"] and picker.data_for(entry) is None
    assert picker.value == "circle" and picker.dropdown.value == "circle"
    with pytest.raises(ValueError, match="no entry 'cat.png"):
        picker.remove_entry(entry)
    picker.remove_entry("star")
    assert picker.names == ["circle"] and picker.value == "circle"


def test_image_picker_value_is_always_the_entry_the_dropdown_shows():
    picker = W.ImagePicker(["circle", "star"])
    picker.value = "star"  # from Python: the drop-down follows
    assert picker.dropdown.value == "star"
    with pytest.raises(traitlets.TraitError, match=r"unknown image entry 'moon'; the picker offers: 'circle', 'star'"):
        picker.value = "moon"
    assert picker.value == "star" and picker.dropdown.value == "star"
    picker.add_entry("mine")  # offered, not selected
    assert picker.names == ["circle", "star", "mine"] and picker.value == "star" and picker.dropdown.value == "star"
    picker.add_entry("mine")
    assert picker.names == ["circle", "star", "mine"]
    picker.value = "mine"
    assert picker.dropdown.value == "mine"
    picker.dropdown.value = "circle"  # from the browser
    assert picker.value == "circle"
    with pytest.raises(ValueError, match="non-empty name"):
        picker.add_entry("")


def test_method_view_takes_any_positive_stride_and_offers_it_in_its_menu():
    view = MethodView(("none", "occlusion"))
    view.stride = 2
    assert view.stride_menu.value == 2 and list(view.stride_menu.options) == [2, 4, 8, 16]
    view.stride = 32
    assert view.stride_menu.value == 32 and list(view.stride_menu.options) == [2, 4, 8, 16, 32]
    for bad in (0, -4, True):
        with pytest.raises(traitlets.TraitError, match="positive int"):
            view.stride = bad
    assert view.stride == 32 and view.stride_menu.value == 32
    view.stride_menu.value = 4  # picked in the browser
    assert view.stride == 4
    view.close()
    view.close()


def test_method_view_shows_its_sign_switch_with_signed_methods_only():
    view = MethodView(("none", "saliency", "grad-cam", "occlusion"), signed_methods=("saliency",))
    box = view.signed_box
    assert box.layout.display == "none" and not view.signed  # "none" has no map
    view.method = "saliency"
    assert box.layout.display is None
    box.value = True  # ticked in the browser
    assert view.signed
    for name in ("grad-cam", "occlusion"):
        view.method = name
        assert box.layout.display == "none", name
    view.signed = False
    assert not box.value
    with pytest.raises(ValueError, match=r"signed_methods \['deconvnet'\] are not among"):
        MethodView(("none", "saliency"), signed_methods=("deconvnet",))
    view.close()


def test_method_view_fades_the_previous_map_while_the_next_one_is_computed():
    view = MethodView(("none", "occlusion", "saliency"))
    view.method = "occlusion"
    view.computing("<i>computing occlusion</i>")  # nothing shown yet: nothing to fade
    assert not view.stale and "faded" not in view.caption.value
    view.show(b"map-1", "occlusion of cat")
    view.progress_to(4, 10)
    assert view.bar.value == pytest.approx(0.4) and view.bar.layout.visibility == "visible"
    view.progress_to(10, 10)  # done: the bar goes (the caption counts the positions), its place stays
    assert view.bar.layout.visibility == "hidden" and view.bar.layout.display != "none"
    view.computing("<i>computing saliency</i>")
    assert view.bar.layout.visibility == "visible"
    # the old map keeps its place (the panel does not jump), faded, and the caption says so
    assert view.stale and view.image.value == b"map-1"
    assert view.caption.value.startswith("<i>computing saliency</i>") and "faded" in view.caption.value
    assert view.bar.value == 0.0 and view.bar.bar_style == ""
    view.show(b"map-2", "saliency of cat")
    assert not view.stale and view.caption.value == "saliency of cat"
    view.computing("<i>computing</i>")
    view.clear()
    assert not view.stale and view.image.value == b""
    assert list(view.children[1:]) == [view.image, view.caption]  # the caption under the map
    view.close()


def test_a_closed_method_view_leaves_no_widget_open():
    from ipywidgets.widgets.widget import _instances

    before = set(_instances)
    view = MethodView(("none", "saliency", "occlusion"), signed_methods=("saliency",))
    assert len(set(_instances) - before) > 10  # the view, its controls' row, parts, layouts, styles
    view.close()
    assert set(_instances) - before == set()


def test_controls_link_their_traits_to_child_widgets():
    display = W.DisplayControls(norm_modes=R.NORM_MODES, colormaps=R.SEQUENTIAL)
    display.norm_buttons.value = "layer"
    display.sort_box.value = True
    assert display.norm == "layer" and display.sort
    display.cmap = "magma"
    assert display.cmap_dropdown.value == "magma"
    with pytest.raises(traitlets.TraitError, match="accepted: viridis"):
        display.cmap = "jet"
    assert W.DisplayControls(norm_modes=("channel", "layer")).norm == "layer"
    occ = W.OccluderControls()
    occ.max_size = 20
    occ.size = 50
    assert occ.size == 20 and occ.size_slider.value == 20
    occ.fill_dropdown.value = "blur"
    assert occ.fill == "blur"
    with pytest.raises(traitlets.TraitError):
        occ.fill = "pink"


# ---------------------------------------------------------------- browser-side geometry (node)
NODE = shutil.which("node")


def import_js(module: str, *names: str) -> str:
    """The ES-module import of ``names`` from the widget module ``module`` (a file in the package)."""
    return f"import {{{', '.join(names)}}} from {json.dumps((WIDGETS_DIR / module).as_uri())};"


def run_node(script: str):
    out = subprocess.run([NODE, "--input-type=module", "-e", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.skipif(NODE is None, reason="node is not installed; the JS geometry is covered by the browser test")
def test_js_grid_geometry_matches_python():
    layout = R.grid_layout(11, 3, 5, max_width=90, max_height=60, order=np.arange(11)[::-1])
    points = [(x, y) for y in range(layout.height + 1) for x in range(layout.width + 1)]
    js = run_node(
        import_js("tilegrid.js", "channelAtPixel", "tileRectOf") +
        f"const L = {json.dumps(layout.to_dict())}; const pts = {json.dumps(points)};"
        "console.log(JSON.stringify({at: pts.map(([x, y]) => channelAtPixel(L, x, y)),"
        " rects: [...Array(L.count).keys()].map((c) => tileRectOf(L, c))}));"
    )
    assert js["at"] == [layout.channel_at(x, y) for x, y in points]
    assert js["rects"] == [list(layout.tile_rect(c)) for c in range(11)]
    # before the first image the geometry is an empty dict: no tile, no error
    empty = run_node(
        import_js("tilegrid.js", "channelAtPixel", "tileRectOf") +
        "console.log(JSON.stringify([tileRectOf({}, 0), tileRectOf(null, 0), channelAtPixel({}, 1, 1),"
        " channelAtPixel({count: 2, width: 9, height: 9}, 1, 1)]));"
    )
    assert empty == [None, None, None, None]


@pytest.mark.skipif(NODE is None, reason="node is not installed; the JS geometry is covered by the browser test")
def test_js_box_geometry_matches_python_clamp():
    cases = [(-5, 3, 10, 10), (60, 45, 10, 10), (0, 0, 100, 100), (2.5, 1.49, 3.5, 4), (10.5, 10.5, 5.5, 5.5)]
    js = run_node(
        import_js("occluder.js", "clampBoxTo", "dragBox") +
        f"const cases = {json.dumps(cases)};"
        "console.log(JSON.stringify({clamp: cases.map((c) => clampBoxTo(...c, 64, 48)),"
        " move: dragBox('move', [10, 10, 8, 8], 100, -3.2, 64, 48),"
        " resize: dragBox('resize', [50, 40, 8, 8], 30, -20, 64, 48)}));"
    )
    assert js["clamp"] == [list(W.clamp_box(c, 64, 48)) for c in cases]
    assert js["move"] == [56, 7, 8, 8]
    assert js["resize"] == [50, 40, 14, 1]


@pytest.mark.skipif(NODE is None, reason="node is not installed; the JS geometry is covered by the browser test")
def test_js_small_boxes_carry_the_resize_handle_outside():
    js = run_node(
        import_js("occluder.js", "handleOutside", "SMALL_BOX_PX") +
        "console.log(JSON.stringify({limit: SMALL_BOX_PX, cases: [[8, 8], [64, 8], [8, 64], [23, 40], [24, 24],"
        " [64, 64]].map(([w, h]) => handleOutside(w, h))}));"
    )
    css = (WIDGETS_DIR / "widgets.css").read_text()
    handle = css.split(".cnnw-occluder-handle {", 1)[1].split("}", 1)[0]
    size = int(handle.split("width:", 1)[1].split("px", 1)[0]) + 2  # plus its 1 px border on each side
    assert js["limit"] >= 2 * size  # a box with the handle inside keeps at least half of each side to move by
    assert js["cases"] == [True, True, True, True, False, False]


# ---------------------------------------------------------------- narrow outputs and stable layout
def css_rule(selector: str) -> dict[str, str]:
    """The declarations of the rule of widgets.css whose selector list is exactly ``selector``
    (a later declaration of the same property wins, as in the browser)."""
    css = re.sub(r"/\*.*?\*/", "", (WIDGETS_DIR / "widgets.css").read_text(), flags=re.S)
    found: dict[str, str] = {}
    for block in css.split("}"):
        if "{" not in block:
            continue
        head, body = block.split("{", 1)
        if " ".join(head.split()) != selector:
            continue
        for decl in body.split(";"):
            if ":" in decl:
                name, value = decl.split(":", 1)
                found[name.strip()] = " ".join(value.split())
    assert found, f"no rule {selector!r} in widgets.css"
    return found


@pytest.mark.skipif(NODE is None, reason="node is not installed; the JS geometry is covered by the browser test")
def test_js_grid_maps_the_pointer_at_the_size_shown_not_the_size_asked():
    layout = R.grid_layout(11, 3, 5, max_width=90, max_height=60, order=np.arange(11)[::-1])
    # the grid shown at its own size, shrunk by a narrow output, and enlarged
    shown = [(layout.width * f, layout.height * f) for f in (1.0, 0.37, 5.25)]
    mosaic = [(x + 0.5, y + 0.5) for y in range(layout.height) for x in range(layout.width)]
    js = run_node(
        import_js("tilegrid.js", "channelAtPixel", "toMosaic", "tilePercent") +
        f"const L = {json.dumps(layout.to_dict())}; const shown = {json.dumps(shown)};"
        f"const mosaic = {json.dumps(mosaic)};"
        "console.log(JSON.stringify({"
        " at: shown.map(([w, h]) => { const rect = {left: 30, top: 70, width: w, height: h};"
        "   return mosaic.map(([x, y]) => { const m = toMosaic(L, rect, 30 + x * w / L.width, 70 + y * h / L.height);"
        "     return channelAtPixel(L, m[0], m[1]); }); }),"
        " pct: [...Array(L.count).keys()].map((c) => tilePercent(L, c)),"
        " none: [toMosaic(L, {left: 0, top: 0, width: 0, height: 0}, 1, 1), toMosaic({}, {left: 0, top: 0, width: 9, height: 9}, 1, 1),"
        "        tilePercent(L, 99), tilePercent({}, 0)]}));"
    )
    expected = [layout.channel_at(x, y) for x, y in mosaic]
    for at in js["at"]:
        assert at == expected
    for c, pct in enumerate(js["pct"]):
        x, y, w, h = layout.tile_rect(c)
        assert pct == pytest.approx([100 * x / layout.width, 100 * y / layout.height,
                                     100 * w / layout.width, 100 * h / layout.height])
    assert js["none"] == [None, None, None, None]


@pytest.mark.skipif(NODE is None, reason="node is not installed; the hover text is covered by the browser test")
def test_python_hover_text_is_the_browsers_to_the_character():
    rng = np.random.default_rng(0)
    acts = (rng.normal(size=(40, 3, 3)) * rng.choice([1e-4, 0.3, 5.0, 3e3], size=(40, 1, 1))).astype(np.float32)
    acts[0] = 0.0  # dead
    acts[1] = -1.0  # no positive value
    acts[2, 0, 0] = np.nan
    acts[3, 1, 1] = np.inf
    acts[4] = 1.125  # a tie at the second decimal: JavaScript rounds it up
    stats = R.channel_stats(acts)
    js = run_node(
        import_js("tilegrid.js", "statsText") +
        f"const st = new Float32Array({json.dumps(stats.as_array().ravel().tolist())});"
        "console.log(JSON.stringify([...Array(41).keys()].map((c) => statsText(st, c))"
        ".concat([statsText(null, 3), statsText(st, -1)])));"
    )
    assert js[:40] == [stats.describe(c) for c in range(40)]
    assert js[40:] == ["channel 40", "channel 3", "channel -1"]  # no statistics for these
    assert "(dead on this image)" in js[0] and "(no positive value on this image)" in js[1]


def test_grid_shrinks_to_the_output_keeping_its_aspect_ratio():
    grid = css_rule(".cnnw-grid")
    image = css_rule(".cnnw-grid-image")
    assert grid["max-width"] == "100%"
    assert image["width"] == "100%" and image["height"] == "auto"
    js = (WIDGETS_DIR / "tilegrid.js").read_text()
    assert "aspectRatio" in js
    # no fixed pixel height that a shrunk width would squash
    assert "style.height" not in js.split("function drawSelection")[0]


@pytest.mark.skipif(NODE is None, reason="node is not installed; the JS geometry is covered by the browser test")
def test_js_grid_tooltip_stays_inside_the_grid():
    # a 150 x 60 tooltip over a 400 x 200 grid, 14 px from the pointer
    cases = [(10, 10), (390, 10), (10, 190), (390, 190), (200, 100), (140, 150), (1, 199)]
    js = run_node(
        import_js("tilegrid.js", "tipPosition") +
        f"console.log(JSON.stringify({json.dumps(cases)}.map(([x, y]) => tipPosition(x, y, 150, 60, 400, 200))));"
    )
    assert js[0] == [24, 24]  # room on the right and below: right of and below the pointer
    assert js[1] == [390 - 14 - 150, 24]  # at the right edge: flipped left
    assert js[2] == [24, 190 - 14 - 60]  # at the bottom: flipped up
    assert js[3] == [390 - 14 - 150, 190 - 14 - 60]
    for (x, y), (left, top) in zip(cases, js):
        assert 0 <= left and left + 150 <= 400 and 0 <= top and top + 60 <= 200, (x, y, left, top)
    wide = run_node(
        import_js("tilegrid.js", "tipPosition") +
        "console.log(JSON.stringify(tipPosition(20, 20, 150, 60, 100, 50)));"
    )
    assert wide == [0, 0]  # a grid smaller than the tooltip: it starts at the grid's corner


def test_control_rows_wrap_in_a_narrow_output():
    rows = {
        "occluder": W.OccluderControls(),
        "display": W.DisplayControls(),
        "picker": W.ImagePicker(["circle", "star"]),
        "method menus": MethodView(("none", "occlusion")).children[0],
    }
    for name, row in rows.items():
        assert row.layout.flex_flow == "row wrap", name
        assert row.layout.max_width == "100%", name
    occ = rows["occluder"]
    # as wide as the row at most, their margins included (else the row scrolls by 4 px)
    from cnnwidgets.widgets.controls import FIT_IN_ROW

    assert FIT_IN_ROW.startswith("calc(100% - ")
    assert occ.fill_dropdown.layout.max_width == FIT_IN_ROW and occ.size_slider.layout.max_width == FIT_IN_ROW
    assert rows["picker"].dropdown.layout.max_width == FIT_IN_ROW
    # the layer menu shrinks with its row instead of being cut off
    assert "cnnw-select-widget" in W.GroupedSelect()._dom_classes
    assert css_rule(".cnnw-select-widget") == {"min-width": "0", "max-width": "100%"}
    assert css_rule(".cnnw-select select")["max-width"] == "min(420px, 100%)"


def test_method_view_keeps_one_width_whatever_it_shows():
    from cnnwidgets.widgets.methodview import MIN_WIDTH

    view = MethodView(("none", "saliency", "occlusion"), display_width=256)
    assert view.layout.width == "256px" and view.layout.max_width == "100%"
    assert MethodView(("none",), display_width=100).layout.width == f"{MIN_WIDTH}px"
    assert "cnnw-caption" in view.caption._dom_classes
    assert view.caption.layout.display == "none"  # no method: no empty caption taking room
    view.method = "occlusion"
    view.show(b"", "<b>occlusion</b>: a caption far longer than the view is wide " * 3)
    assert view.caption.layout.display is None and view.layout.width == "256px"
    # a caption wraps inside its column instead of widening it, and keeps room for three lines
    caption = css_rule(".cnnw-caption")
    assert caption["contain"] == "inline-size" and caption["min-height"] == "4.2em"
    # the map has no side margins: as wide as the column, no scroll bar under it
    assert view.image.layout.margin == "2px 0px" and view.image.layout.width == "256px"
    view.close()


@pytest.mark.skipif(NODE is None, reason="node is not installed; the JS is covered by the browser test")
def test_upload_pieces_cover_the_file_once():
    js = run_node(
        import_js("upload.js", "pieces", "shareText") +
        "console.log(JSON.stringify([pieces(0), pieces(5, 2), pieces(4, 2), pieces(3 * 2 ** 20 + 1), "
        "shareText(0, 0), shareText(2 ** 20, 3 * 2 ** 20), shareText(5, 5)]));"
    )
    empty, odd, even, large, *shares = js  # run_node parses what the script prints
    assert empty == [[0, 0]] and odd == [[0, 2], [2, 4], [4, 5]] and even == [[0, 2], [2, 4]]
    assert len(large) == 4 and large[-1] == [3 * 2**20, 3 * 2**20 + 1]  # pieces of 1 MiB
    assert shares == ["0%", "33%", "100%"]  # what has arrived, never ahead of it


@pytest.mark.skipif(NODE is None, reason="node is not installed; the JS is covered by the browser test")
def test_score_changes_that_round_to_zero_have_no_sign():
    js = run_node(
        import_js("scorebars.js", "deltaText") +
        "console.log(JSON.stringify([0.015, -0.003, -0.0004, 0.0004, 0, null].map(deltaText)));"
    )
    assert js == ["+1.5", "\u22120.3", "0.0", "0.0", "0.0", ""]


@pytest.mark.skipif(NODE is None, reason="node is not installed; the JS is covered by the browser test")
def test_score_rows_show_the_full_class_name_in_their_tooltip():
    js = run_node(
        import_js("scorebars.js", "rowTitle") +
        "console.log(JSON.stringify(rowTitle('Labrador retriever (yellow)')));"
    )
    assert js == "Labrador retriever (yellow): click to make this the target class"
    # one label column for all rows, as wide as the longest label where there is room; in a
    # narrow list the label and the bar shrink, the probability and the change never
    columns = css_rule(".cnnw-scores-list")["grid-template-columns"]
    assert columns.startswith("minmax(3em, max-content)") and columns.endswith("max-content max-content")
    assert css_rule(".cnnw-score-row")["grid-template-columns"] == "subgrid"
    assert css_rule(".cnnw-scores")["contain"] == "inline-size"  # a long label never widens the view


@pytest.mark.skipif(NODE is None, reason="node is not installed; the JS geometry is covered by the browser test")
def test_js_resize_handle_stays_on_the_image_at_its_edges():
    js = run_node(
        import_js("occluder.js", "handleAtEdge") +
        "console.log(JSON.stringify([[0, 0, 10, 10], [54, 0, 10, 10], [0, 38, 10, 10], [54, 38, 10, 10],"
        " [53, 37, 10, 10]].map((b) => handleAtEdge(b, 64, 48))));"
    )
    assert js == [{"right": False, "bottom": False}, {"right": True, "bottom": False},
                  {"right": False, "bottom": True}, {"right": True, "bottom": True},
                  {"right": False, "bottom": False}]
    # near an edge for the handle's reach, in CSS pixels: a small box's handle reaches 14 px past its
    # corner, so at 2 CSS pixels per image pixel a box 6 image pixels from the edge is too near (was:
    # only a box touching the edge counted, and a small box's handle stuck out of the picture, and out
    # of a narrow explorer, by up to 14 px)
    js = run_node(
        import_js("occluder.js", "handleAtEdge", "HANDLE_REACH_PX", "SMALL_HANDLE_REACH_PX") +
        "console.log(JSON.stringify({reach: [HANDLE_REACH_PX, SMALL_HANDLE_REACH_PX], cases:"
        " [[[48, 0, 10, 4], 2, 14], [[47, 0, 10, 4], 2, 14], [[58, 0, 4, 4], 2, 6], [[57, 0, 4, 4], 2, 6],"
        " [[0, 41, 4, 4], 1, 6], [[0, 38, 4, 4], 1, 6]].map(([b, s, r]) => handleAtEdge(b, 64, 48, s, r))}));"
    )
    assert js["reach"] == [6, 14]
    assert js["cases"] == [{"right": True, "bottom": False}, {"right": False, "bottom": False},
                           {"right": True, "bottom": False}, {"right": False, "bottom": False},
                           {"right": False, "bottom": True}, {"right": False, "bottom": False}]
    # at the right edge the handle's right side is the box's, small box or not
    assert css_rule(".cnnw-occluder-box.cnnw-occluder-at-right .cnnw-occluder-handle") == {"right": "0"}
    # at the bottom: inside a normal box; beside a small one, flush with its bottom
    assert css_rule(".cnnw-occluder-box.cnnw-occluder-at-bottom:not(.cnnw-occluder-small) .cnnw-occluder-handle, "
                    ".cnnw-occluder-small.cnnw-occluder-at-bottom:not(.cnnw-occluder-at-right) .cnnw-occluder-handle") \
        == {"bottom": "0"}
    # a small box near both edges: the handle goes above it (below or beside, it would leave the picture)
    assert css_rule(".cnnw-occluder-small.cnnw-occluder-at-right.cnnw-occluder-at-bottom .cnnw-occluder-handle") \
        == {"bottom": "calc(100% + 2px)"}


# ---------------------------------------------------------------- keyboard and screen readers
def js_module(name: str) -> str:
    """An import of the widget module ``name`` as the browser gets it (after ``_shared.js``), with
    the shared helpers exported too, for a node script."""
    from cnnwidgets.widgets._base import esm

    source = esm(name) + "\nexport { suppressShortcuts, uniqueId };"
    return f"import * as m from {json.dumps('data:text/javascript,' + urllib.parse.quote(source))};"


@pytest.mark.skipif(NODE is None, reason="node is not installed; the keys are covered by the browser test")
def test_js_occluder_keys_move_resize_and_place_the_box_inside_the_image():
    cases = [
        ("ArrowRight", {}, [10, 10, 8, 8]),
        ("ArrowLeft", {}, [10, 10, 8, 8]),
        ("ArrowDown", {"shift": True}, [10, 10, 8, 8]),
        ("ArrowUp", {}, [10, 1, 8, 8]),  # one pixel from the top: stops at it
        ("ArrowRight", {"shift": True}, [54, 0, 10, 10]),  # at the right edge already
        ("ArrowRight", {"ctrl": True}, [10, 10, 8, 8]),  # the corner: wider, top-left kept
        ("ArrowUp", {"ctrl": True, "shift": True}, [10, 10, 8, 8]),  # lower, never below one pixel
        ("ArrowRight", {"ctrl": True}, [57, 10, 6, 6]),  # wider only up to the edge
        ("+", {"shift": True}, [10, 10, 8, 8]),  # grows about its centre
        ("=", {}, [0, 0, 8, 8]),
        ("-", {}, [10, 10, 8, 8]),
        ("-", {}, [10, 10, 1, 1]),
        ("Enter", {}, None),  # no box: one in the middle
        (" ", {}, None),
        ("Enter", {}, [10, 10, 8, 8]),  # a box already: nothing
        ("ArrowRight", {}, None),
        ("ArrowLeft", {"alt": True}, [10, 10, 8, 8]),  # left to the browser (back)
        ("a", {}, [10, 10, 8, 8]),
    ]
    js = run_node(
        js_module("occluder.js")
        + f"const cases = {json.dumps(cases)};"
        "console.log(JSON.stringify({boxes: cases.map(([k, mods, b]) => m.keyBox(k, mods, b, 64, 48, 2, 16)),"
        " big: m.keyBox('Enter', {}, null, 64, 48, 2, 100), step: m.BIG_STEP,"
        " labels: [m.occluderLabel([3, 4, 5, 6], 64, 48), m.occluderLabel(null, 64, 48),"
        "          m.occluderLabel([3, 4, 5, 6], 64, 48, false)], help: m.occluderHelp(3)}));"
    )
    assert js["step"] == 4
    assert js["boxes"] == [
        [12, 10, 8, 8], [8, 10, 8, 8], [10, 18, 8, 8], [10, 0, 8, 8], [54, 0, 10, 10],
        [10, 10, 10, 8], [10, 10, 8, 1], [57, 10, 7, 6], [9, 9, 10, 10], [0, 0, 10, 10],
        [11, 11, 6, 6], [10, 10, 1, 1], [24, 16, 16, 16], [24, 16, 16, 16], None, None, None, None,
    ]
    for box in js["boxes"]:
        if box is not None:  # what Python's clamp leaves alone: inside the image
            assert W.clamp_box(box, 64, 48) == tuple(box)
    assert js["big"] == [8, 0, 48, 48]  # the default size is cut to the image
    assert js["labels"] == [
        "input image, 64 by 48 pixels; occluder box at x 3, y 4, width 5, height 6 (image pixels)",
        "input image, 64 by 48 pixels; no occluder box: press Enter to place one",
        "input image, 64 by 48 pixels",
    ]
    assert "3 image pixels, 12 with Shift" in js["help"]


@pytest.mark.skipif(NODE is None, reason="node is not installed; the keys are covered by the browser test")
def test_js_score_list_keys_move_between_rows_and_rows_are_named():
    js = run_node(
        js_module("scorebars.js")
        + "const order = [7, 2, 9];"
        "console.log(JSON.stringify({"
        " moves: ['ArrowDown', 'ArrowUp', 'Home', 'End', 'x']"
        "   .map((k) => [7, 2, 9, null].map((c) => m.nextRow(order, c, k))),"
        " empty: m.nextRow([], null, 'ArrowDown'),"
        " labels: [m.rowLabel({label: 'tabby', prob: 0.4531, delta: -0.003}),"
        "          m.rowLabel({label: 'tabby', prob: 0.4531, delta: null})]}));"
    )
    assert js["moves"] == [
        [2, 9, 9, 7],  # down: the next row, the last one stays, none active: the first
        [7, 7, 2, 7],  # up
        [7, 7, 7, 7],
        [9, 9, 9, 9],
        [None, None, None, None],
    ]
    assert js["empty"] is None
    assert js["labels"] == ["tabby, 45.3%, change \u22120.3 points", "tabby, 45.3%"]


@pytest.mark.skipif(NODE is None, reason="node is not installed; the keys are covered by the browser test")
def test_js_grid_arrow_keys_select_the_neighbouring_tile():
    grid, layout = make_grid(count=5)  # 2 rows of 3: slots 0 1 2 / 3 4
    order = [4, 0, 3, 1, 2]  # sorted: slot s shows channel order[s]
    geometry = {**layout.to_dict(), "order": order}
    keys = ["ArrowRight", "ArrowLeft", "ArrowDown", "ArrowUp", "Home", "End", "Enter"]
    js = run_node(
        js_module("tilegrid.js")
        + f"const L = {json.dumps(geometry)}; const keys = {json.dumps(keys)};"
        "console.log(JSON.stringify({at: [4, 0, 3, 1, 2, 99].map((c) => keys.map((k) => m.neighbourChannel(L, c, k))),"
        " none: m.neighbourChannel({}, 0, 'ArrowRight'), line: m.oneLine('channel 3\\nmean 1  std 2\\nactive 5%')}));"
    )
    # channel -> [right, left, down, up, home, end, enter] in slots: 0 1 2 / 3 4
    assert js["at"] == [
        [0, 4, 1, 4, 4, 2, None],  # slot 0: left stays at the first tile
        [3, 4, 2, 0, 4, 2, None],  # slot 1
        [1, 0, 2, 3, 4, 2, None],  # slot 2: right goes on to the next row; below it, the shorter row's last tile
        [2, 3, 1, 4, 4, 2, None],  # slot 3: down stays in the last row
        [2, 1, 2, 0, 4, 2, None],  # slot 4: right stays at the last tile
        [4, 4, 4, 4, 4, 2, None],  # a channel not shown: the first tile (End: the last)
    ]
    assert js["none"] is None
    assert js["line"] == "channel 3, mean 1  std 2, active 5%"
    # the line under the grid is the tooltip's text (what Python's describe mirrors for the kernel)
    assert grid.describe(2).startswith("channel 2\n")


@pytest.mark.skipif(NODE is None, reason="node is not installed; the page is covered by the browser test")
def test_js_widgets_keep_jupyterlab_shortcuts_out_of_the_explorer():
    # fake elements: two views attached to the page two frames after they were rendered, inside
    # an explorer; one outside any explorer; one never attached; one torn down before attached
    js = run_node(
        js_module("occluder.js")
        + """
        const frames = [];
        globalThis.requestAnimationFrame = (fn) => frames.push(fn);
        globalThis.cancelAnimationFrame = () => frames.splice(0);
        const element = (explorer) => ({ isConnected: false, attrs: {}, explorer, listeners: [],
          closest(sel) { return sel === ".cnnw-explorer" ? this.explorer : null; },
          getAttribute(k) { return k in this.attrs ? this.attrs[k] : null; },
          setAttribute(k, v) { this.attrs[k] = v; },
          addEventListener(type, fn) { this.listeners.push([type, fn]); } });
        const focus = (root, target) => root.listeners.forEach(([type, fn]) => type === "focusin" && fn({ target }));
        const explorer = element(null);
        const first = element(explorer), second = element(explorer), alone = element(null), never = element(null);
        [first, second, alone].forEach((el) => m.suppressShortcuts(el));
        const waited = [frames.length];
        const run = () => { const now = frames.splice(0); now.forEach((fn) => fn()); };
        run(); run();
        [first, second, alone].forEach((el) => { el.isConnected = true; });
        run();
        waited.push(frames.length);
        const dropdown = element(null), button = element(null);  // controls of the explorer, focused later
        focus(explorer, dropdown);
        focus(explorer, button);
        m.suppressShortcuts(never, 5);
        let tries = 0;
        while (frames.length) { run(); tries += 1; }
        const stopped = element(null);
        const stop = m.suppressShortcuts(stopped);
        stop();
        stopped.isConnected = true;
        run();
        console.log(JSON.stringify({ waited, tries, explorer: explorer.attrs, first: first.attrs,
          listeners: explorer.listeners.length, dropdown: dropdown.attrs, button: button.attrs,
          alone: alone.attrs, never: never.attrs, stopped: stopped.attrs,
          ids: m.uniqueId("a") !== m.uniqueId("a") }));
        """
    )
    marked = {"data-lm-suppress-shortcuts": "true"}
    assert js["waited"] == [3, 0]  # each waited for the page, then stopped looking
    assert js["explorer"] == marked and js["first"] == {}
    assert js["listeners"] == 1  # one focus listener for the explorer, however many widgets are in it
    # JupyterLab's notebook shortcuts match the focused element itself: each one that takes the
    # focus inside the explorer carries the attribute by the time a key reaches it
    assert js["dropdown"] == marked and js["button"] == marked
    assert js["alone"] == marked
    assert js["tries"] == 5 and js["never"] == {}  # bounded
    assert js["stopped"] == {}  # a view torn down stops looking
    assert js["ids"]


def contrast(foreground: str, background: str) -> float:
    """WCAG 2 contrast ratio of two ``#rgb`` / ``#rrggbb`` colours."""

    def luminance(colour: str) -> float:
        digits = colour.lstrip("#")
        if len(digits) == 3:
            digits = "".join(d * 2 for d in digits)
        channels = [int(digits[i:i + 2], 16) / 255 for i in (0, 2, 4)]
        linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]

    high, low = sorted((luminance(foreground), luminance(background)), reverse=True)
    return (high + 0.05) / (low + 0.05)


#: JupyterLab 4's values of the theme variables widgets.css uses (@jupyterlab/theme-light-extension
#: and theme-dark-extension), and its page backgrounds (--jp-layout-color0 and 1); "bare" is a page
#: without JupyterLab's variables (the fallbacks), white.
JP_THEMES = {
    "light": {"--jp-layout-color2": "#eeeeee", "--jp-brand-color1": "#1976d2", "--jp-border-color2": "#e0e0e0"},
    "dark": {"--jp-layout-color2": "#424242", "--jp-brand-color1": "#2196f3", "--jp-border-color2": "#424242"},
    "bare": {},
}
PAGES = {"light": ("#ffffff",), "dark": ("#111111", "#212121"), "bare": ("#ffffff",)}


def themed(value: str, theme: str) -> str:
    """A value of widgets.css with its variables replaced by their colours in ``theme``: the
    package's palette (--cnnw-*, its light or dark block) and JupyterLab's (--jp-*, or the
    fallback written after it)."""
    dark = theme == "dark"
    palette = css_rule('body[data-jp-theme-light="false"]') if dark else css_rule(":root")

    def one(match: re.Match) -> str:
        name, fallback = match.group(1), match.group(2)
        if name.startswith("--cnnw-"):
            return palette[name]
        return JP_THEMES[theme].get(name, fallback)

    return re.sub(r"var\((--[\w-]+)(?:,\s*([^()]+))?\)", one, value)


def test_score_colours_meet_wcag_aa_on_every_row_background():
    for theme, pages in PAGES.items():
        backgrounds = [*pages, themed(css_rule(".cnnw-score-row:hover")["background"], theme),
                       themed(css_rule(".cnnw-score-selected")["background"], theme)]
        for rule in (".cnnw-up", ".cnnw-down", ".cnnw-same"):
            colour = themed(css_rule(rule)["color"], theme)
            for background in backgrounds:
                assert contrast(colour, background) >= 4.5, (theme, rule, colour, background)


def test_selected_score_row_is_marked_by_more_than_its_background():
    selected = css_rule(".cnnw-score-selected")
    assert selected["font-weight"] == "bold"
    for theme in PAGES:
        shadow = themed(selected["box-shadow"], theme)
        assert re.fullmatch(r"inset \d+px 0 0 #[0-9a-f]{6}", shadow), (theme, selected)  # a bar on the left
        bar = shadow.split()[-1]
        assert contrast(bar, themed(selected["background"], theme)) >= 3, theme  # a non-text mark: 3:1
    assert css_rule(".cnnw-scores-list:focus-visible .cnnw-score-active")["outline"].startswith("2px")


def test_focus_rings_are_visible_on_the_explorer_and_the_widgets():
    ring = css_rule(".cnnw-explorer :focus-visible, .cnnw-occluder:focus-visible, .cnnw-grid:focus-visible, "
                    ".cnnw-scores-list:focus-visible, .cnnw-select select:focus-visible")
    for theme, pages in PAGES.items():
        width, style, colour = themed(ring["outline"], theme).split()
        assert int(width.removesuffix("px")) >= 2 and style == "solid" and ring["outline-offset"] == "2px"
        assert all(contrast(colour, page) >= 3 for page in pages), (theme, colour)


def test_pictures_in_views_keep_their_aspect_when_the_output_is_narrower():
    """Only the width is fixed: a fixed height beside ``max-width`` would squeeze a wide figure."""
    from cnnwidgets.widgets.controls import FIT_IN_ROW
    from cnnwidgets.widgets.experiments import InvarianceView

    view = InvarianceView()
    view.show_image(np.zeros((30, 900, 3), np.uint8))
    view.show_examples(np.zeros((20, 640, 3), np.uint8))
    for image, width in ((view._image, "900px"), (view._examples, "640px")):
        assert (image.layout.width, image.layout.height, image.layout.max_width) == (width, "auto", FIT_IN_ROW)
    assert Image.open(io.BytesIO(view._image.value)).size == (900, 30)
    view.close()


def test_method_view_keeps_room_for_two_lines_of_controls_while_a_method_is_shown():
    from cnnwidgets.widgets.methodview import ACTIVE_CONTROLS_HEIGHT, MethodView

    view = MethodView(["none", "occlusion", "saliency", "grad-cam"], signed_methods=["saliency"])
    try:
        assert view._controls.layout.min_height is None  # no method: the menu alone
        for method in ("occlusion", "saliency", "grad-cam"):  # stride menu, signed switch, neither
            view.method = method
            assert view._controls.layout.min_height == ACTIVE_CONTROLS_HEIGHT, method
        view.method = "none"
        assert view._controls.layout.min_height is None
    finally:
        view.close()


@pytest.mark.skipif(NODE is None, reason="node is not installed; the keys are covered by the browser test")
def test_js_grid_arrow_keys_leave_a_page_for_the_channel_before_or_after_it():
    layout = R.grid_layout(3, 2, 2, order=[7, 8, 9], channels=12)
    pages = {
        "middle": {**layout.to_dict(), "before": 6, "after": 10},
        "first": {**layout.to_dict(), "before": None, "after": 10},
        "last": {**layout.to_dict(), "before": 6, "after": None},
    }
    js = run_node(
        js_module("tilegrid.js")
        + f"const pages = {json.dumps(pages)};"
        "console.log(JSON.stringify(Object.fromEntries(Object.entries(pages).map(([name, L]) => [name, ["
        " m.neighbourChannel(L, 7, 'ArrowLeft'), m.neighbourChannel(L, 9, 'ArrowRight'),"
        " m.neighbourChannel(L, 8, 'ArrowRight'), m.neighbourChannel(L, 7, 'Home')]]))));"
    )
    assert js["middle"] == [6, 10, 9, 7]  # off the page at its ends; inside it as before
    assert js["first"] == [7, 10, 9, 7]  # no page before the first: the selection stays
    assert js["last"] == [6, 9, 9, 7]
