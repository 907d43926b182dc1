"""Safe image decoding for everything that reads user images (classify, index, init/image prompts).

User bytes are hostile until proven otherwise. `decode_image` checks, in this order and before any
pixel is decoded: size in bytes, the file's magic bytes (only a few well-known raster formats are
opened at all), and the pixel count declared in the header (the decompression-bomb guard). Only then
does Pillow decode, and a truncated or corrupt file becomes a clear `ImageRejected`, never a crash.
The result is always a plain 8-bit RGB image: EXIF orientation applied, transparency composited on
white, palette / greyscale / CMYK / 16-bit / float modes converted, first frame of an animation.
"""
from __future__ import annotations

import io
import math
import warnings

import numpy as np
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from jobs.validation import JobError

DEFAULT_MAX_BYTES = 25 * 1024 * 1024  # Discord's own attachment ceiling for boosted servers
DEFAULT_MAX_PIXELS = 40_000_000  # ~8K x 5K; 160 MB as RGBA while converting
BACKGROUND = (255, 255, 255)  # transparent pixels become white, as most viewers show them

# Formats we open, keyed by our short name -> Pillow's format id. Fewer decoders, less attack surface.
SUPPORTED = {"png": "PNG", "jpeg": "JPEG", "gif": "GIF", "webp": "WEBP", "bmp": "BMP", "tiff": "TIFF"}
SUPPORTED_NAMES = "PNG, JPEG, GIF, WEBP, BMP or TIFF"


class ImageRejected(JobError):
    """The bytes are not an image we will decode. `reason` is a short machine-readable code."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason  # empty | too_many_bytes | not_image | too_many_pixels | corrupt | unsupported_mode


def sniff_image_type(data: bytes) -> str | None:
    """Short name of a supported image format from its magic bytes ("png", "jpeg", ...), else None.

    Cheap (looks at 16 bytes), so the bot can refuse a non-image attachment before queueing a job.
    """
    head = bytes(data[:16])
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head.startswith(b"BM") and len(head) >= 14:
        return "bmp"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "tiff"
    return None


# What some common non-image (or unsupported image) files start with, to say what we got instead.
_LOOKALIKES: list[tuple[bytes, int, str]] = [
    (b"%PDF", 0, "a PDF document"),
    (b"PK\x03\x04", 0, "a ZIP archive (or an Office document)"),
    (b"\x1f\x8b", 0, "a gzip archive"),
    (b"7z\xbc\xaf\x27\x1c", 0, "a 7-Zip archive"),
    (b"Rar!", 0, "a RAR archive"),
    (b"\x7fELF", 0, "a Linux executable"),
    (b"MZ", 0, "a Windows executable"),
    (b"OggS", 0, "an Ogg audio/video file"),
    (b"ID3", 0, "an MP3 audio file"),
    (b"fLaC", 0, "a FLAC audio file"),
    (b"\x1aE\xdf\xa3", 0, "a WebM/Matroska video"),
    (b"8BPS", 0, "a Photoshop document"),
    (b"\x00\x00\x01\x00", 0, "a Windows icon"),
    (b"BM", 0, "a truncated BMP image"),
]


def describe_content(data: bytes) -> str:
    """A human phrase for what `data` looks like, for error messages ("a PDF document", "text")."""
    head = bytes(data[:64])
    if not head:
        return "an empty file"
    kind = sniff_image_type(head)
    if kind:
        return f"a {kind.upper()} image"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"heic", b"heix", b"mif1", b"msf1", b"hevc"):
            return "a HEIC/HEIF image (not supported; export it as PNG or JPEG)"
        if brand in (b"avif", b"avis"):
            return "an AVIF image (not supported; export it as PNG or JPEG)"
        return "an MP4/QuickTime video"
    if head[:4] == b"RIFF" and head[8:12] in (b"WAVE", b"AVI "):
        return "a WAV audio file" if head[8:12] == b"WAVE" else "an AVI video"
    for magic, offset, what in _LOOKALIKES:
        if head[offset:].startswith(magic):
            return what
    text = head.lstrip(b"\xef\xbb\xbf").lstrip()
    if text[:5].lower() == b"<?xml" or text[:4].lower() == b"<svg":
        if b"<svg" in bytes(data[:4096]).lower():
            return "an SVG drawing (vector images are not supported; export it as PNG)"
        return "an XML document"
    if text[:1] == b"<":
        return "an HTML page (a link, not the image itself?)"
    try:
        bytes(data[:512]).decode("utf-8")
        return "text"
    except UnicodeDecodeError:
        return f"unknown binary data (starts with {head[:8].hex(' ')})"


def _mb(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MB"


def decode_image(
    data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES, max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int | None = None,
) -> Image.Image:
    """Decode untrusted bytes into an 8-bit RGB image, or raise `ImageRejected` saying why.

    min_side: the caller only needs this many pixels on the shorter side (CLIP looks at 224), so a
    big image may come back smaller, never below it: JPEGs decode at 1/2..1/8 scale (much faster),
    others are box-reduced by an integer factor. None: full size.
    """
    if not data:
        raise ImageRejected("empty", "The file is empty: send a PNG, JPEG, GIF or WEBP image.")
    if len(data) > max_bytes:
        raise ImageRejected(
            "too_many_bytes", f"The image is too large ({_mb(len(data))}); the limit is {_mb(max_bytes)}."
        )
    kind = sniff_image_type(data)
    if kind is None:
        raise ImageRejected(
            "not_image", f"That is not a supported image: it looks like {describe_content(data)}. "
            f"Send a {SUPPORTED_NAMES} image."
        )
    try:
        with warnings.catch_warnings():
            # Our own max_pixels check below is the guard; Pillow's warning would only be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=[SUPPORTED[kind]])  # reads the header only
    except Image.DecompressionBombError:
        raise ImageRejected(
            "too_many_pixels", f"The {kind.upper()} image declares an enormous size; the limit is "
            f"{max_pixels:,} pixels. Send a smaller image."
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageRejected(
            "corrupt", f"The {kind.upper()} image is corrupt or truncated and cannot be read ({e})."
        ) from None
    width, height = img.size
    if width <= 0 or height <= 0:
        raise ImageRejected("corrupt", f"The {kind.upper()} image has no pixels ({width}x{height}).")
    if width * height > max_pixels:
        raise ImageRejected(
            "too_many_pixels", f"The image is too big: {width}x{height} = {width * height:,} pixels; "
            f"the limit is {max_pixels:,}. Send a smaller image."
        )
    if min_side and kind == "jpeg" and min(width, height) >= 2 * min_side:
        scale = min(width, height) / min_side  # draft picks the largest DCT scaling that stays >= this size
        img.draft(img.mode, (math.ceil(width / scale), math.ceil(height / scale)))
    try:
        img.seek(0)  # animated GIF / APNG / WEBP: the first frame
        img.load()
    except Image.DecompressionBombError:  # a later chunk declared more than the header did
        raise ImageRejected("too_many_pixels", f"The image expands beyond {max_pixels:,} pixels.") from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as e:
        raise ImageRejected(
            "corrupt", f"The {kind.upper()} image is corrupt or truncated and cannot be read ({e})."
        ) from None
    try:
        img = ImageOps.exif_transpose(img) or img
    except Exception:  # a broken EXIF block must not lose an otherwise fine image: keep it unrotated
        pass
    img = to_rgb(img)
    if min_side:
        img = shrink(img, min_side)
    return img


def shrink(img: Image.Image, min_side: int) -> Image.Image:
    """Box-reduce by the largest integer factor that keeps the shorter side >= min_side (cheap)."""
    factor = min(img.size) // max(1, min_side)
    return img.reduce(factor) if factor >= 2 else img


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB. Alpha is composited on white; high bit depths are rescaled, not clipped."""
    mode = img.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        return Image.fromarray(_to_uint8(np.asarray(img)), "L").convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
    if has_alpha:
        rgba = img.convert("RGBA")
        out = Image.new("RGB", rgba.size, BACKGROUND)
        out.paste(rgba.convert("RGB"), mask=rgba.getchannel("A"))
        return out
    if mode == "RGB":
        return img.copy() if getattr(img, "fp", None) is not None else img
    try:
        return img.convert("RGB")  # 1, L, P, CMYK, YCbCr...
    except (ValueError, OSError) as e:
        raise ImageRejected("unsupported_mode", f"Unsupported colour mode {mode!r} ({e}); send an RGB image.") from None


def _to_uint8(a: np.ndarray) -> np.ndarray:
    """Rescale a single-channel integer or float array to 0..255.

    8-bit-range data is kept as is, 16-bit-range data divided by 257 (65535 -> 255), floats in
    [0, 1] scaled by 255; anything else (HDR, negative values) is stretched min..max.
    """
    is_float = np.issubdtype(a.dtype, np.floating)
    a = a.astype(np.float64)
    finite = a[np.isfinite(a)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    if is_float and lo >= 0 and hi <= 1:
        a = a * 255.0
    elif lo >= 0 and hi <= 255:
        pass
    elif lo >= 0 and hi <= 65535:
        a = a / 257.0
    else:
        a = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
    return np.clip(np.nan_to_num(a, nan=0.0), 0, 255).round().astype(np.uint8)


def encode_png(img: Image.Image, text: dict[str, str] | None = None, *, compress_level: int = 6) -> bytes:
    """PNG bytes of `img`, with `text` as tEXt/iTXt chunks (prompt, seed, model... readable in any viewer)."""
    info = PngImagePlugin.PngInfo()
    for key, value in (text or {}).items():
        info.add_itxt(str(key), str(value))  # iTXt: UTF-8, so non-ASCII prompts survive
    buf = io.BytesIO()
    img.save(buf, format="PNG", pnginfo=info, compress_level=compress_level)
    return buf.getvalue()
