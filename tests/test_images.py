"""load_image / image_to_tensor: every documented conversion rule and every rejection."""

from __future__ import annotations

import gc
import io
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from cnnwidgets.core.images import COMPOSITED, DEFAULT_MAX_SIZE, image_to_tensor, load_image, max_pixels


def _halves(width: int = 40, height: int = 20) -> Image.Image:
    """Left half red, right half blue."""
    a = np.zeros((height, width, 3), np.uint8)
    a[:, : width // 2] = (255, 0, 0)
    a[:, width // 2:] = (0, 0, 255)
    return Image.fromarray(a, "RGB")


def _px(image: Image.Image, x: int, y: int) -> tuple[int, ...]:
    return tuple(int(v) for v in image.getpixel((x, y)))


@pytest.fixture
def broken_server():
    """A local HTTP server whose answers break off: /badchunk.png sends a malformed chunk size,
    /cut.png announces a 100-byte chunk and closes after 3 bytes. Yields the base address."""
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"zz\r\nabc\r\n" if self.path == "/badchunk.png" else b"64\r\nabc")
            self.wfile.flush()
            self.close_connection = True

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


# --------------------------------------------------------------------------- sources
def test_paths_str_and_pathlib(tmp_path):
    path = tmp_path / "a.png"
    _halves().save(path)
    for src in (path, str(path)):
        out = load_image(src)
        assert out.mode == "RGB" and out.size == (40, 20)
        assert _px(out, 2, 2) == (255, 0, 0) and _px(out, 38, 2) == (0, 0, 255)


def test_missing_file_names_the_path(tmp_path):
    missing = tmp_path / "nope" / "cat.jpg"
    with pytest.raises(FileNotFoundError, match="cat.jpg") as info:
        load_image(missing)
    assert str(missing) in str(info.value)


def test_directory_and_non_image_files_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="directory"):
        load_image(tmp_path)
    text = tmp_path / "notes.png"
    text.write_text("this is not a picture")
    with pytest.raises(ValueError, match="not an image file"):
        load_image(text)


def test_empty_paths_and_other_address_schemes_are_named():
    for empty in ("", "   "):
        with pytest.raises(ValueError, match="empty string is not an image path"):
            load_image(empty)
    for address in ("ftp://example.org/cat.png", "file:///tmp/cat.png"):
        scheme = address.split(":")[0]
        with pytest.raises(ValueError, match=f"{scheme}:// address.*http:// or https://") as info:
            load_image(address)
        assert address in str(info.value)  # as given, not mangled into a path


def test_bytes_and_file_objects(tmp_path):
    buffer = io.BytesIO()
    _halves().save(buffer, format="PNG")
    for src in (buffer.getvalue(), memoryview(buffer.getvalue()), io.BytesIO(buffer.getvalue())):
        out = load_image(src)
        assert out.size == (40, 20) and _px(out, 2, 2) == (255, 0, 0)


def test_http_addresses_are_downloaded(image_server, monkeypatch):
    import cnnwidgets.core.images as images

    folder, base, _ = image_server
    _halves().save(folder / "a.png")
    out = load_image(f"{base}/a.png")
    assert out.size == (40, 20) and _px(out, 2, 2) == (255, 0, 0) and _px(out, 38, 2) == (0, 0, 255)
    with pytest.raises(ValueError, match=r"could not download the image from http://.*/missing.png: HTTP 404"):
        load_image(f"{base}/missing.png")
    (folder / "notes.txt").write_text("this is not a picture")
    with pytest.raises(ValueError, match=r"http://.*/notes.txt is not an image file"):
        load_image(f"{base}/notes.txt")
    monkeypatch.setattr(images, "DOWNLOAD_LIMIT", 10)  # bytes; the PNG has more
    with pytest.raises(ValueError, match="larger than"):
        load_image(f"{base}/a.png")


def test_unsafe_characters_in_an_address_are_percent_encoded(image_server):
    folder, base, requests = image_server
    for name in ("my photo.png", "caf\u00e9.png", "100% red.png"):
        _halves().save(folder / name)
    for address, sent in [
        (f"{base}/my photo.png", "/my%20photo.png"),  # pasted with a space
        (f"{base}/my%20photo.png", "/my%20photo.png"),  # already encoded: not encoded twice
        (f"{base}/caf\u00e9.png", "/caf%C3%A9.png"),
        (f"{base}/100% red.png?size=big one", "/100%25%20red.png?size=big%20one"),
    ]:
        out = load_image(address)
        assert out.size == (40, 20) and _px(out, 2, 2) == (255, 0, 0), address
        assert requests[-1] == sent


def test_invalid_addresses_and_broken_responses_raise_value_error(broken_server):
    with pytest.raises(ValueError, match=r"from http://127.0.0.1:abc/x.png: not a valid http\(s\) address.*port"):
        load_image("http://127.0.0.1:abc/x.png")
    with pytest.raises(ValueError, match=r"from http://\[::1/x.png: not a valid http\(s\) address"):
        load_image("http://[::1/x.png")
    for name in ("badchunk.png", "cut.png"):
        with pytest.raises(ValueError, match=rf"from {broken_server}/{name}: the server's response was broken"):
            load_image(f"{broken_server}/{name}")


def test_an_unreachable_address_says_what_to_do_offline():
    with pytest.raises(ValueError, match="could not download the image from http://127.0.0.1:9/cat.jpg.*pass its path"):
        load_image("http://127.0.0.1:9/cat.jpg")  # the discard port: nothing listens there


def test_unsupported_types_say_what_is_accepted():
    for bad in (42, [[0, 1], [2, 3]], {"image": 1}, None):
        with pytest.raises(TypeError, match="accepted: a file path"):
            load_image(bad)


def test_pil_input_is_not_modified():
    rgba = Image.new("RGBA", (16, 16), (10, 20, 30, 0))
    out = load_image(rgba)
    assert rgba.mode == "RGBA" and rgba.getpixel((0, 0)) == (10, 20, 30, 0)
    assert out is not rgba and out.mode == "RGB"


@pytest.mark.parametrize("fmt, suffix", [("GIF", "gif"), ("TIFF", "tif"), ("PNG", "png")])
def test_multi_frame_files_give_the_first_frame_and_are_closed(tmp_path, fmt, suffix):
    path = tmp_path / f"anim.{suffix}"
    frames = [Image.new("RGB", (16, 16), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(path, format=fmt, save_all=True, append_images=frames[1:])
    with Image.open(path) as check:
        assert check.n_frames == 2
    buffer = io.BytesIO(path.read_bytes())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        from_path = load_image(path)
        from_file = load_image(buffer)
        gc.collect()
    # A ResourceWarning raised while the garbage collector closes a file cannot propagate as an error,
    # so the warnings are recorded and checked here.
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []
    assert _px(from_path, 3, 3) == (255, 0, 0) and _px(from_file, 3, 3) == (255, 0, 0)
    assert not buffer.closed  # a caller's file object is left open


# --------------------------------------------------------------------------- orientation
def test_exif_orientation_is_applied(tmp_path):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    _halves(40, 20).save(path, exif=exif, quality=95)
    out = load_image(path)
    # Stored 40 wide x 20 high with red on the left; displayed upright it is 20 x 40, red on top.
    assert out.size == (20, 40)
    top, bottom = np.asarray(out)[5, 10], np.asarray(out)[35, 10]
    assert top[0] > 200 and top[2] < 60, top
    assert bottom[2] > 200 and bottom[0] < 60, bottom
    # The same when the user opened the file with PIL themselves.
    with Image.open(path) as raw:
        assert raw.size == (40, 20)
        assert load_image(raw).size == (20, 40)


def test_exif_orientation_set_in_memory_is_applied_without_changing_the_image():
    image = _halves(40, 20)
    image.getexif()[0x0112] = 6
    out = load_image(image)
    assert out.size == (20, 40)
    assert _px(out, 10, 5)[0] > 200 and _px(out, 10, 35)[2] > 200  # red on top, blue below
    assert image.size == (40, 20) and image.getexif()[0x0112] == 6


# --------------------------------------------------------------------------- modes
def test_grayscale_is_replicated_into_rgb(tmp_path):
    gray = np.array([[0, 50, 200, 255]] * 8, np.uint8).repeat(2, axis=1)
    path = tmp_path / "gray.png"
    Image.fromarray(gray, "L").save(path)
    out = np.asarray(load_image(path))
    assert out.shape == (8, 8, 3)
    for c in range(3):
        assert np.array_equal(out[..., c], gray)
    # Bilevel ("1") images too.
    bilevel = Image.fromarray(gray > 100).convert("1")
    assert np.array_equal(np.asarray(load_image(bilevel))[..., 1], np.where(gray > 100, 255, 0))


def test_16bit_png_is_scaled_to_8bit(tmp_path):
    values = np.array([[0, 257 * 100, 65535, 257 * 7]] * 8, np.uint16).repeat(2, axis=1)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    with Image.open(path) as check:
        assert check.mode in ("I;16", "I")  # really stored with 16 bits
    out = np.asarray(load_image(path))
    expected = np.array([[0, 100, 255, 7]] * 8, np.uint8).repeat(2, axis=1)
    assert np.array_equal(out[..., 0], expected) and np.array_equal(out[..., 2], expected)


def test_32bit_integer_images_outside_16bit_range_are_rejected():
    big = Image.fromarray(np.full((8, 8), 70000, np.int32), "I")
    with pytest.raises(ValueError, match="0..65535"):
        load_image(big)


def test_float_pil_images_follow_the_float_rule():
    ok = Image.fromarray(np.full((8, 8), 0.5, np.float32), "F")
    assert _px(load_image(ok), 0, 0) == (128, 128, 128)
    bad = Image.fromarray(np.full((8, 8), 3.0, np.float32), "F")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        load_image(bad)


def test_rgba_is_composited_over_white(tmp_path):
    a = np.zeros((8, 12, 4), np.uint8)
    a[:, :4] = (255, 0, 0, 255)  # opaque red
    a[:, 4:8] = (0, 0, 0, 0)  # fully transparent
    a[:, 8:] = (0, 0, 0, 128)  # half-transparent black
    path = tmp_path / "alpha.png"
    Image.fromarray(a, "RGBA").save(path)
    out = load_image(path)
    assert _px(out, 1, 1) == (255, 0, 0)
    assert _px(out, 5, 1) == (255, 255, 255)
    assert all(abs(v - 127) <= 1 for v in _px(out, 10, 1))


def test_the_result_says_when_transparency_was_composited_and_copies_keep_it(tmp_path):
    rgba = np.random.default_rng(0).integers(0, 255, (16, 16, 4), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buffer, format="PNG")
    for source in (buffer.getvalue(), rgba, np.moveaxis(rgba, 2, 0).copy(),
                   torch.from_numpy(rgba).permute(2, 0, 1)[None] / 255, Image.fromarray(rgba, "RGBA")):
        out = load_image(source)
        assert out.info.get(COMPOSITED) is True, type(source)
        assert load_image(out).info.get(COMPOSITED) is True  # decoded once, loaded again later
    assert COMPOSITED not in load_image(rgba[:, :, :3]).info
    assert load_image(rgba, size=8).info.get(COMPOSITED) is True  # after a resize too


def test_la_and_palette_transparency_are_composited_over_white(tmp_path):
    la = Image.fromarray(np.dstack([np.full((8, 8), 0, np.uint8), np.full((8, 8), 0, np.uint8)]), "LA")
    assert _px(load_image(la), 0, 0) == (255, 255, 255)
    pal = Image.new("P", (8, 8), 1)
    pal.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)
    pal.paste(0, (0, 0, 4, 8))
    path = tmp_path / "pal.png"
    pal.save(path, transparency=0)
    out = load_image(path)
    assert _px(out, 1, 1) == (255, 255, 255)  # the transparent palette entry
    assert _px(out, 6, 1) == (200, 10, 10)


def test_bilevel_and_16bit_gray_transparency_are_composited_over_white(tmp_path):
    bilevel = Image.fromarray(np.arange(16)[None, :].repeat(8, axis=0) % 2 == 1).convert("1")  # black, white, ...
    path = tmp_path / "bilevel.png"
    bilevel.save(path, transparency=0)
    with Image.open(path) as check:
        assert check.mode == "1" and check.info.get("transparency") is not None
    assert np.all(np.asarray(load_image(path)) == 255)  # transparent black pixels become white
    in_memory = Image.new("1", (8, 8), 0)
    in_memory.info["transparency"] = 0
    assert _px(load_image(in_memory), 0, 0) == (255, 255, 255)
    in_memory.info["transparency"] = 1
    assert _px(load_image(in_memory), 0, 0) == (0, 0, 0)

    deep = np.array([[0, 257 * 100, 257 * 100 + 1, 257 * 7]] * 8, np.uint16).repeat(2, axis=1)
    path = tmp_path / "deep.png"
    Image.fromarray(deep).save(path, transparency=257 * 100)
    with Image.open(path) as check:
        assert check.mode in ("I;16", "I") and check.info.get("transparency") == 257 * 100
    out = np.asarray(load_image(path))[0, ::2, 0]
    # Only the exact 16-bit transparent value is white; 257 * 100 + 1 is also 100 in 8 bits but stays gray.
    assert out.tolist() == [0, 255, 100, 7]


def test_premultiplied_la_is_composited_over_white():
    # 'La' stores a * gray: (50, 128) is gray 99.6 at alpha 0.5; over white 50 + 255 - 128 = 177.
    assert _px(load_image(Image.new("La", (8, 8), (50, 128))), 0, 0) == (177, 177, 177)
    assert _px(load_image(Image.new("La", (8, 8), (90, 255))), 0, 0) == (90, 90, 90)  # opaque
    assert _px(load_image(Image.new("La", (8, 8), (0, 0))), 0, 0) == (255, 255, 255)  # transparent
    straight = Image.new("La", (8, 8), (50, 128)).convert("LA")  # the same pixel, straight alpha
    assert all(abs(a - b) <= 1 for a, b in zip(_px(load_image(straight), 0, 0), (177, 177, 177)))


def test_cmyk_goes_through_pil_conversion():
    cmyk = Image.new("CMYK", (10, 10), (0, 255, 255, 0))  # pure red ink-wise
    assert _px(load_image(cmyk), 0, 0) == (255, 0, 0)


# --------------------------------------------------------------------------- arrays
@pytest.mark.parametrize("layout", ["hw", "hw1", "hwc", "chw", "1chw"])
def test_numpy_layouts(layout):
    rgb = np.random.default_rng(0).integers(0, 256, (10, 12, 3), dtype=np.uint8)
    gray = rgb[..., 0]
    src, expected = {
        "hw": (gray, np.dstack([gray] * 3)),
        "hw1": (gray[..., None], np.dstack([gray] * 3)),
        "hwc": (rgb, rgb),
        "chw": (rgb.transpose(2, 0, 1), rgb),
        "1chw": (rgb.transpose(2, 0, 1)[None], rgb),
    }[layout]
    out = np.asarray(load_image(src))
    assert out.shape == (10, 12, 3)
    assert np.array_equal(out, expected)


def test_numpy_rgba_float_and_uint16():
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 3] = 0
    assert _px(load_image(rgba), 0, 0) == (255, 255, 255)
    floats = np.full((8, 8, 3), 0.2, np.float32)
    assert _px(load_image(floats), 0, 0) == (51, 51, 51)
    assert _px(load_image(floats.astype(np.float64)), 0, 0) == (51, 51, 51)
    deep = np.full((8, 8, 3), 257 * 9, np.uint16)
    assert _px(load_image(deep), 0, 0) == (9, 9, 9)


def test_uint16_arrays_in_either_byte_order():
    values = np.array([[0, 257 * 9, 65535, 300]] * 8, np.uint16).repeat(2, axis=1)
    expected = np.array([[0, 9, 255, 1]] * 8, np.uint8).repeat(2, axis=1)
    for dtype in (">u2", "<u2"):
        out = np.asarray(load_image(values.astype(dtype)))
        assert np.array_equal(out[..., 0], expected) and np.array_equal(out[..., 2], expected), dtype


def test_float_arrays_outside_unit_range_are_rejected():
    with pytest.raises(ValueError, match=r"\[0, 1\].*normalised"):
        load_image(np.full((8, 8, 3), -0.5, np.float32))
    with pytest.raises(ValueError, match="uint8"):
        load_image(np.full((8, 8, 3), 200.0, np.float32))
    nan = np.zeros((8, 8, 3), np.float32)
    nan[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        load_image(nan)


@pytest.mark.parametrize("bad, message", [
    (np.zeros((8, 8), np.int32), "dtype int32"),
    (np.zeros((8, 8), bool), "dtype bool"),
    (np.zeros((8, 8, 2), np.uint8), "shape"),
    (np.zeros((8,), np.uint8), "shape"),
    (np.zeros((2, 8, 8, 3), np.uint8), "batch of 2"),
    (np.zeros((1, 1, 8, 8, 3), np.uint8), "shape"),
])
def test_bad_arrays(bad, message):
    with pytest.raises(ValueError, match=message):
        load_image(bad)


def test_tensors_chw_hwc_batched_and_with_grad():
    rgb = np.random.default_rng(1).integers(0, 256, (9, 11, 3), dtype=np.uint8)
    chw = torch.from_numpy(rgb).permute(2, 0, 1)
    assert np.array_equal(np.asarray(load_image(chw)), rgb)
    assert np.array_equal(np.asarray(load_image(torch.from_numpy(rgb))), rgb)
    as_float = (chw.float() / 255).requires_grad_(True)
    assert np.array_equal(np.asarray(load_image(as_float[None])), rgb)
    with pytest.raises(ValueError, match="batch of 3"):
        load_image(torch.zeros(3, 3, 9, 9))


# --------------------------------------------------------------------------- sizes
def test_small_images_are_rejected_and_the_minimum_is_accepted():
    with pytest.raises(ValueError, match=r"at least 8 px \(for a model that takes smaller inputs, give a larger image with input_size"):
        load_image(np.zeros((7, 20, 3), np.uint8))
    with pytest.raises(ValueError, match="at least 8 px"):
        load_image(Image.new("RGB", (20, 3)))
    assert load_image(np.zeros((8, 8, 3), np.uint8)).size == (8, 8)


def test_large_images_are_downscaled_keeping_aspect_ratio():
    big = Image.new("RGB", (300, 200), (0, 128, 0))
    out = load_image(big, max_size=150)
    assert out.size == (150, 100)
    assert _px(out, 75, 50) == (0, 128, 0)
    assert DEFAULT_MAX_SIZE == 4096
    wide = Image.new("RGB", (5000, 1000))
    assert load_image(wide).size == (4096, 819)
    with pytest.raises(ValueError, match="aspect ratio"):
        load_image(Image.new("RGB", (5000, 9)))


def test_large_jpeg_is_decoded_reduced_then_downscaled(tmp_path):
    path = tmp_path / "big.jpg"
    Image.new("RGB", (1000, 600), (200, 40, 40)).save(path)
    out = load_image(path, max_size=200)
    assert out.size == (200, 120)
    assert all(abs(a - b) <= 6 for a, b in zip(_px(out, 100, 60), (200, 40, 40)))


def test_optional_resize():
    image = Image.new("RGB", (40, 20))
    assert load_image(image, size=10).size == (20, 10)  # shorter side -> 10
    assert load_image(image, size=(30, 12)).size == (12, 30)  # (height, width)
    with pytest.raises(ValueError, match="size"):
        load_image(image, size=0)
    with pytest.raises(ValueError, match="size"):
        load_image(image, size="big")
    for size in (True, (True, 5), (5, np.bool_(True))):
        with pytest.raises(ValueError, match=r"\(height, width\) of ints \(not bools\)"):
            load_image(image, size=size)


def test_resize_is_bounded_by_the_decompression_bomb_limit(monkeypatch):
    image = Image.new("RGB", (64, 64))
    assert max_pixels() == Image.MAX_IMAGE_PIXELS == 89_478_485
    with pytest.raises(ValueError, match=r"100000x100000 pixels, more than the 89,478,485 allowed \(PIL's decompression"):
        load_image(image, size=100_000)
    with pytest.raises(ValueError, match="decompression-bomb limit"):
        load_image(image, size=(8, 100_000_000))
    assert load_image(image, size=(8, 100_000)).size == (100_000, 8)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # the limit follows PIL's
    assert max_pixels() == 1000 and load_image(image, size=(10, 100)).size == (100, 10)
    with pytest.raises(ValueError, match="more than the 1,000 allowed"):
        load_image(image, size=32)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # switched off: the default still bounds size
    assert max_pixels() == 89_478_485


def test_size_limits_must_be_ints_in_range():
    image = Image.new("RGB", (64, 64))
    with pytest.raises(TypeError, match="max_size must be an int >= 1, got str 'a'"):
        load_image(image, max_size="a")
    with pytest.raises(TypeError, match="max_size must be an int >= 1, got float 32.5"):
        load_image(image, max_size=32.5)
    with pytest.raises(ValueError, match="min_size must be an int >= 1, got 0"):
        load_image(image, max_size=0, min_size=0)
    with pytest.raises(ValueError, match="min_size must be an int >= 1, got -1"):
        load_image(image, min_size=-1)
    with pytest.raises(TypeError, match="min_size must be an int >= 1, got bool True"):
        load_image(image, min_size=True)
    with pytest.raises(ValueError, match=r"max_size \(8\) must be >= min_size \(16\)"):
        load_image(image, max_size=8, min_size=16)
    with pytest.raises(TypeError, match="max_size must be an int"):
        image_to_tensor(torch.rand(3, 16, 16), max_size="a")
    assert load_image(image, max_size=np.int64(32), min_size=np.int64(1)).size == (32, 32)


# --------------------------------------------------------------------------- image_to_tensor
def test_image_to_tensor_keeps_float_precision():
    t = torch.full((3, 10, 10), 0.123456)
    out = image_to_tensor(t)
    assert out.dtype == torch.float32 and out.shape == (3, 10, 10)
    assert torch.equal(out, t)
    hwc = torch.rand(12, 10, 3, dtype=torch.float64)
    assert torch.allclose(image_to_tensor(hwc), hwc.permute(2, 0, 1).float())
    with pytest.raises(ValueError, match="normalised"):
        image_to_tensor(torch.randn(3, 10, 10) - 2.0)


def test_image_to_tensor_from_other_sources_matches_load_image():
    rgb = np.random.default_rng(2).integers(0, 256, (10, 12, 3), dtype=np.uint8)
    out = image_to_tensor(rgb)
    assert out.shape == (3, 10, 12) and out.dtype == torch.float32
    assert torch.equal((out * 255).round().to(torch.uint8).permute(1, 2, 0), torch.from_numpy(rgb))


def test_integer_tensors_load_on_a_torch_without_uint16(monkeypatch):
    # torch 2.1 and 2.2 (allowed by torch>=2.1) have no torch.uint16
    u8 = torch.arange(3 * 40 * 50, dtype=torch.int64).remainder(256).to(torch.uint8).reshape(3, 40, 50)
    expected = np.asarray(load_image(u8))
    monkeypatch.delattr(torch, "uint16")
    assert not hasattr(torch, "uint16")
    again = load_image(u8)
    assert np.array_equal(np.asarray(again), expected)
    assert np.array_equal(np.asarray(again), u8.permute(1, 2, 0).numpy())


def test_resizing_works_on_a_pillow_without_the_resampling_enum(monkeypatch):
    # Image.Resampling is Pillow >= 9.1; pillow>=9.0 only has the plain constants. Pillow itself
    # needs the enum, so only the module cnnwidgets sees loses it.
    from cnnwidgets.core import images

    class Pillow90:
        def __getattr__(self, name):
            if name == "Resampling":
                raise AttributeError("module 'PIL.Image' has no attribute 'Resampling'")
            return getattr(Image, name)

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (300, 500, 3), dtype=np.uint8)
    small = np.asarray(load_image(pixels, size=32))
    limited = np.asarray(load_image(pixels, max_size=100))
    monkeypatch.setattr(images, "Image", Pillow90())
    assert np.array_equal(np.asarray(load_image(pixels, size=32)), small)
    assert np.array_equal(np.asarray(load_image(pixels, max_size=100)), limited)
    assert small.shape == (32, 53, 3) and limited.shape == (60, 100, 3)
