"""jobs.validation.images: every kind of hostile or awkward file a Discord member can upload.

All files are made here with Pillow (or by hand, for the crafted headers), so each test knows
exactly what the right answer is.
"""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from jobs.validation.images import (
    ImageRejected,
    decode_image,
    describe_content,
    encode_png,
    sniff_image_type,
)
from worker.api import JobError

RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)


def save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def crafted_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares width x height but whose data is one compressed row."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    idat = zlib.compress(b"\x00" + b"\x00" * 3 * min(width, 64))
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def px(img: Image.Image, xy) -> tuple:
    return tuple(img.getpixel(xy))


def close(a, b, tol=6) -> bool:
    return all(abs(int(x) - int(y)) <= tol for x, y in zip(a, b))


# ----------------------------------------------------------------------------- sniffing


@pytest.mark.parametrize(
    "fmt,name", [("PNG", "png"), ("JPEG", "jpeg"), ("GIF", "gif"), ("WEBP", "webp"), ("BMP", "bmp"), ("TIFF", "tiff")]
)
def test_sniff_and_decode_each_supported_format(fmt, name):
    data = save(Image.new("RGB", (8, 6), RED), fmt)
    assert sniff_image_type(data) == name
    img = decode_image(data)
    assert img.mode == "RGB" and img.size == (8, 6)
    assert close(px(img, (3, 3)), RED, tol=10)


@pytest.mark.parametrize(
    "data,phrase",
    [
        (b"%PDF-1.7\n1 0 obj", "PDF"),
        (b"PK\x03\x04\x14\x00\x00\x00", "ZIP"),
        (b"hello, this is a caption", "text"),
        (b"<!doctype html><html><body>", "HTML"),
        (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"></svg>', "SVG"),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00", "HEIC"),
        (b"\x00\x00\x00\x18ftypisom\x00\x00\x00\x00", "MP4"),
    ],
)
def test_non_images_are_refused_saying_what_they_look_like(data, phrase):
    assert sniff_image_type(data) is None
    assert phrase in describe_content(data)
    with pytest.raises(ImageRejected) as e:
        decode_image(data)
    assert e.value.reason == "not_image"
    assert phrase in str(e.value) and "PNG" in str(e.value)
    assert isinstance(e.value, JobError)  # the worker loop turns it into a user-facing Failed


def test_empty_file():
    with pytest.raises(ImageRejected, match="empty") as e:
        decode_image(b"")
    assert e.value.reason == "empty"


def test_too_many_bytes_is_checked_before_anything_else():
    data = save(Image.new("RGB", (64, 64), RED), "PNG")
    with pytest.raises(ImageRejected, match="too large") as e:
        decode_image(data, max_bytes=len(data) - 1)
    assert e.value.reason == "too_many_bytes"
    assert decode_image(data, max_bytes=len(data)).size == (64, 64)


# ----------------------------------------------------------------------------- bombs and corruption


def test_crafted_bomb_header_is_refused_before_decoding():
    # 12000 x 10000 declared (120 Mpx, under Pillow's own 179 Mpx hard limit) in a ~100-byte file.
    # If it were decoded, the one-row IDAT would make it a "corrupt" error, so reason proves the order.
    data = crafted_png(12_000, 10_000)
    assert len(data) < 200
    with pytest.raises(ImageRejected) as e:
        decode_image(data, max_pixels=40_000_000)
    assert e.value.reason == "too_many_pixels"
    assert "12000x10000" in str(e.value)


def test_enormous_bomb_header_trips_pillows_guard_and_is_rewrapped():
    data = crafted_png(100_000, 100_000)  # 10 Gpx: Pillow raises DecompressionBombError at open
    with pytest.raises(ImageRejected) as e:
        decode_image(data, max_pixels=10**12)
    assert e.value.reason == "too_many_pixels"


def test_gif_bomb_logical_screen():
    gif = bytearray(save(Image.new("P", (4, 4)), "GIF"))
    gif[6:10] = struct.pack("<HH", 60_000, 60_000)  # logical screen size
    with pytest.raises(ImageRejected) as e:
        decode_image(bytes(gif), max_pixels=1_000_000)
    assert e.value.reason == "too_many_pixels"


def test_max_pixels_boundary():
    data = save(Image.new("RGB", (100, 50), RED), "PNG")
    assert decode_image(data, max_pixels=5000).size == (100, 50)
    with pytest.raises(ImageRejected, match="100x50"):
        decode_image(data, max_pixels=4999)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "WEBP"])
def test_truncated_file_is_a_clear_error(fmt):
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    data = save(noise, fmt)
    with pytest.raises(ImageRejected) as e:
        decode_image(data[: len(data) // 2])
    assert e.value.reason == "corrupt"
    assert "corrupt or truncated" in str(e.value)


def test_garbage_after_a_valid_magic_is_corrupt():
    with pytest.raises(ImageRejected) as e:
        decode_image(b"\x89PNG\r\n\x1a\n" + b"\x13" * 200)
    assert e.value.reason == "corrupt"


# ----------------------------------------------------------------------------- orientation and modes


def half_and_half(w=40, h=20) -> Image.Image:
    """Left half red, right half blue."""
    img = Image.new("RGB", (w, h), BLUE)
    img.paste(RED, (0, 0, w // 2, h))
    return img


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_exif_orientation_is_applied(fmt):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": the stored left column becomes the top row
    data = save(half_and_half(), fmt, exif=exif)
    img = decode_image(data)
    assert img.size == (20, 40)
    assert close(px(img, (10, 5)), RED, tol=40) and close(px(img, (10, 34)), BLUE, tol=40)


def test_rgba_is_composited_on_white():
    img = Image.new("RGBA", (4, 1), (0, 0, 0, 0))
    img.putpixel((1, 0), (255, 0, 0, 255))
    img.putpixel((2, 0), (0, 0, 0, 128))  # half-transparent black -> mid grey
    out = decode_image(save(img, "PNG"))
    assert out.mode == "RGB"
    assert px(out, (0, 0)) == WHITE and px(out, (1, 0)) == RED
    assert close(px(out, (2, 0)), (127, 127, 127), tol=2)


def test_la_is_composited_on_white():
    img = Image.new("LA", (2, 1), (0, 0))
    img.putpixel((1, 0), (0, 255))
    out = decode_image(save(img, "PNG"))
    assert px(out, (0, 0)) == WHITE and px(out, (1, 0)) == (0, 0, 0)


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_palette_with_transparency_index(fmt):
    img = Image.new("P", (2, 1), 0)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    img.putpixel((1, 0), 1)
    out = decode_image(save(img, fmt, transparency=0))
    assert px(out, (0, 0)) == WHITE and px(out, (1, 0)) == RED


def test_greyscale_and_bilevel():
    grey = Image.new("L", (2, 2), 77)
    assert px(decode_image(save(grey, "PNG")), (0, 0)) == (77, 77, 77)
    bw = Image.new("1", (2, 2), 1)
    assert px(decode_image(save(bw, "PNG")), (1, 1)) == WHITE


def test_cmyk_jpeg_becomes_rgb():
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # full magenta + yellow = red
    out = decode_image(save(cmyk, "JPEG", quality=95))
    assert out.mode == "RGB" and close(px(out, (8, 8)), RED, tol=12)


def test_sixteen_bit_greyscale_is_rescaled_not_clipped():
    a = np.array([[0, 257 * 128, 65535, 1000]], dtype=np.uint16)
    src = Image.fromarray(a)
    assert src.mode == "I;16"
    out = decode_image(save(src, "PNG"))
    got = [px(out, (i, 0))[0] for i in range(4)]
    assert got == [0, 128, 255, 4]  # Pillow's own convert("L") would give [0, 255, 255, 255]


def test_sixteen_bit_rgba_png():
    a = np.zeros((1, 2, 4), dtype=np.uint16)
    a[0, 0] = (65535, 0, 0, 65535)  # opaque red; pixel 1 fully transparent
    raw = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in a)
    ihdr = struct.pack(">IIBBBBB", 2, 1, 16, 6, 0, 0, 0)
    data = (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(raw))
            + png_chunk(b"IEND", b""))
    out = decode_image(data)
    assert px(out, (0, 0)) == RED and px(out, (1, 0)) == WHITE


def test_32bit_int_and_float_tiff():
    ints = Image.fromarray(np.array([[0, 65535]], dtype=np.int32), "I")
    assert [px(decode_image(save(ints, "TIFF")), (i, 0))[0] for i in range(2)] == [0, 255]
    unit = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32), "F")
    assert [px(decode_image(save(unit, "TIFF")), (i, 0))[0] for i in range(3)] == [0, 128, 255]
    hdr = Image.fromarray(np.array([[-2.0, 0.0, 2.0]], dtype=np.float32), "F")  # stretched min..max
    assert [px(decode_image(save(hdr, "TIFF")), (i, 0))[0] for i in range(3)] == [0, 128, 255]


@pytest.mark.parametrize("fmt", ["GIF", "PNG", "WEBP"])
def test_animated_image_uses_first_frame(fmt):
    frames = [Image.new("RGB", (8, 8), c) for c in (RED, BLUE, (0, 255, 0))]
    data = save(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)
    probe = Image.open(io.BytesIO(data))
    assert getattr(probe, "n_frames", 1) == 3  # really animated
    assert close(px(decode_image(data), (4, 4)), RED, tol=12)


# ----------------------------------------------------------------------------- encoding


def test_encode_png_round_trip_with_text():
    img = half_and_half()
    data = encode_png(img, {"prompt": "un cœur rouge ❤", "seed": 42})
    assert sniff_image_type(data) == "png"
    back = Image.open(io.BytesIO(data))
    assert back.text == {"prompt": "un cœur rouge ❤", "seed": "42"}
    assert np.array_equal(np.asarray(decode_image(data)), np.asarray(img))
    assert Image.open(io.BytesIO(encode_png(img))).text == {}


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_min_side_decodes_big_images_smaller_but_never_below(fmt):
    img = Image.new("RGB", (1600, 1200), BLUE)
    img.paste(RED, (0, 0, 800, 1200))  # left half red
    data = save(img, fmt, quality=90) if fmt == "JPEG" else save(img, fmt)
    small = decode_image(data, min_side=224)
    assert 224 <= min(small.size) < 2 * 224 * 2  # reduced (JPEG by DCT scaling, PNG by an integer box)
    assert small.size[0] / small.size[1] == pytest.approx(4 / 3, rel=0.02)
    w, h = small.size
    assert close(px(small, (w // 4, h // 2)), RED, tol=12) and close(px(small, (3 * w // 4, h // 2)), BLUE, tol=12)
    assert decode_image(data).size == (1600, 1200)  # default: full size
    assert decode_image(save(Image.new("RGB", (300, 200), RED), "PNG"), min_side=224).size == (300, 200)
