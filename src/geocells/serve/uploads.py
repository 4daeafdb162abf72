"""Uploaded bytes -> an RGB image, or one clear reason why not.

Uploads are decoded from memory (``io.BytesIO``): a client's file name is only echoed
back in the answer, never used as a path. The checks, in order: the part's content type
(an image type or ``application/octet-stream``), emptiness, the pixel count read from the
header before any decoding (decompression bombs), then a full decode (truncated or corrupt
files fail here). The image is made upright and RGB as ``geocells.data.load_image``
does, and shrunk to ``max_side`` so a queue of waiting images has bounded memory.

Decoding is where an upload costs memory: a 6000 x 6000 PNG of 100 kB is 108 MB of
pixels. A ``DecodeBudget`` shared by every request bounds the pixels being decoded at
once (a decode waits until its pixel count fits), and an image is shrunk right after
its pixels are read, before any conversion copies them, so one decode holds about one
full-size copy.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import io
import logging
import threading
import warnings
from collections.abc import Callable
from typing import Any

from PIL import ExifTags, Image

log = logging.getLogger(__name__)

ALLOWED_TYPES = ("application/octet-stream",)  # besides image/*
# Modes that resample badly (palette, 1-bit) or not at all (16-bit): converted first.
CONVERT_FIRST = ("1", "P", "PA", "I;16", "I;16B", "I;16L", "I;16N")
# EXIF orientation -> the transpose that makes the image upright (as ImageOps.exif_transpose).
ORIENTATIONS = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


class UploadError(ValueError):
    """Why one uploaded file cannot be located; ``kind`` is a short label for metrics."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind  # content_type | empty | too_many_pixels | not_an_image | corrupt


def check_content_type(content_type: str | None) -> None:
    """Raise ``UploadError`` unless the part claims to be an image (or raw bytes)."""
    main = (content_type or "application/octet-stream").split(";")[0].strip().lower()
    if not (main.startswith("image/") or main in ALLOWED_TYPES):
        raise UploadError(
            "content_type", f"content type {main!r} is not an image (want image/* or raw bytes)"
        )


class DecodeBudget:
    """At most ``pixels`` pixels being decoded at once, across threads and requests.

    ``hold(n)`` blocks until ``n`` more pixels fit (one image larger than the whole budget
    waits until nothing else is decoding, then runs alone). When the last decode ends, the
    C heap is trimmed so the memory of large images goes back to the system.
    """

    def __init__(self, pixels: int) -> None:
        self.pixels = pixels
        self.in_use = 0
        self.peak = 0  # most pixels held at once (for tests and metrics)
        self._free = threading.Condition()

    @contextlib.contextmanager
    def hold(self, pixels: int):
        """Hold ``pixels`` of the budget for the duration of the block."""
        with self._free:
            while self.in_use and self.in_use + pixels > self.pixels:
                self._free.wait()
            self.in_use += pixels
            self.peak = max(self.peak, self.in_use)
        try:
            yield
        finally:
            with self._free:
                self.in_use -= pixels
                idle = self.in_use == 0
                self._free.notify_all()
            if idle:
                trim_heap()


def _libc():
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


_LIBC = None
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number


def release_large_buffers(threshold: int = 1 << 20) -> bool:
    """Ask glibc to map every allocation over ``threshold`` bytes on its own, so freed
    image buffers return to the system instead of staying in the heap (a no-op, False,
    where the C library is not glibc). Process-wide: the service calls it at start-up."""
    global _LIBC
    _LIBC = _LIBC or _libc()
    mallopt = getattr(_LIBC, "mallopt", None)
    return bool(mallopt and mallopt(M_MMAP_THRESHOLD, threshold))


def trim_heap() -> None:
    """Give free C-heap memory back to the system (glibc ``malloc_trim``; else nothing)."""
    trim = getattr(_LIBC, "malloc_trim", None)
    if trim is not None:
        trim(0)


def decode_upload(
    data: bytes,
    content_type: str | None,
    max_pixels: int,
    max_side: int,
    budget: DecodeBudget | None = None,
    prepare: Callable[[Image.Image], Any] | None = None,
) -> Any:
    """Uploaded bytes -> upright RGB PIL image with longest side <= ``max_side``, passed
    through ``prepare`` when given (the service gives the encoder's own resize, so a queued
    image is the few kB the model reads). The decode holds the image's pixel count of
    ``budget`` (when given) while it runs."""
    check_content_type(content_type)
    if not data:
        raise UploadError("empty", "empty file")
    try:
        with warnings.catch_warnings():
            # max_pixels below is the limit; PIL's own warning under its hard limit is noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise UploadError(
                        "too_many_pixels",
                        f"{width} x {height} = {width * height} pixels is over the limit of "
                        f"{max_pixels} (possible decompression bomb)",
                    )
                held = budget.hold(width * height) if budget else contextlib.nullcontext()
                with held:
                    rgb = _decode(image, max_side)
                    return prepare(rgb) if prepare is not None else rgb
    except UploadError:
        raise
    except Image.DecompressionBombError as err:
        raise UploadError("too_many_pixels", f"refused as a decompression bomb ({err})") from None
    except Image.UnidentifiedImageError:
        raise UploadError("not_an_image", "not an image or an unsupported format") from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise UploadError("corrupt", f"corrupt or truncated image ({err})") from None


def _decode(image: Image.Image, max_side: int) -> Image.Image:
    """Read the pixels, shrink at once, then make the (small) image upright and RGB."""
    from geocells.data.images import to_rgb

    if max(image.size) > max_side:
        # JPEG decodes at 1/2, 1/4, 1/8 scale directly: big photos stay cheap.
        image.draft("RGB", (max_side, max_side))
    image.load()
    orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    if image.mode in CONVERT_FIRST:
        image = to_rgb(image)
    if max(image.size) > max_side:
        image.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    if orientation in ORIENTATIONS:  # what ImageOps.exif_transpose does, on the small copy
        image = image.transpose(ORIENTATIONS[orientation])
    return to_rgb(image)
