"""Image loading used everywhere: any file PIL reads -> an upright 8-bit RGB image.

Conventions:
- EXIF orientation is applied (the returned image is upright as a viewer shows it).
- Transparency (RGBA, LA, P with a transparent colour, ...) is composited on white.
- CMYK goes through PIL's conversion (no ICC colour management).
- 16-bit grey (I;16*) maps the full 0–65535 range linearly to 0–255; float (F) images in
  0–1 are multiplied by 255; 32-bit int (I) and float images are kept as they are when in
  0–255, mapped from 0–65535 when in that range, and min-max stretched otherwise.
- Images with more than ``max_pixels`` pixels are refused before decoding (PIL's own
  decompression-bomb limit, about 179 M pixels, applies on top).
Every failure (missing, truncated, corrupt, too large) raises ``ImageLoadError`` naming
the file, so batch code can report the image and go on.

HEIC/HEIF photos (iPhone) are read through ``pillow-heif`` (``register_heif``). A path
that is no regular file (a FIFO, a socket, a device) is refused before it is opened, since
reading one could block forever.

Images inside a zip archive (OSV-5M ships its images as zip shards) are addressed as
``ARCHIVE.zip!/MEMBER`` (``ARCHIVE_SEPARATOR``); they are read without extraction.
"""

from __future__ import annotations

import functools
import io
import os
import threading
import warnings
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

DEFAULT_MAX_PIXELS = 150_000_000  # a full-resolution 16384 x 8192 panorama is 134 M
_WHITE = (255, 255, 255)
ARCHIVE_SEPARATOR = "!/"
_MAX_OPEN_ARCHIVES = 256


class ImageLoadError(ValueError):
    """An image file that cannot be used; the message names the file."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"cannot load image {path}: {reason}")
        self.path = Path(path)
        self.reason = reason


@functools.cache
def register_heif() -> None:
    """Let PIL open HEIC/HEIF files (through ``pillow-heif``; once per process)."""
    import pillow_heif

    pillow_heif.register_heif_opener()


def load_image(path: str | Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Read ``path`` as an upright RGB PIL image (see the module docstring for conventions)."""
    register_heif()
    try:
        with warnings.catch_warnings():
            # Our own max_pixels is the limit; PIL's warning below its hard limit is noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(_open_source(path)) as image:
                width, height = image.size
                if max_pixels is not None and width * height > max_pixels:
                    raise ImageLoadError(
                        path,
                        f"{width} x {height} = {width * height} pixels is over the limit of "
                        f"{max_pixels} (possible decompression bomb)",
                    )
                image.load()
                image = ImageOps.exif_transpose(image)
                return to_rgb(image)
    except ImageLoadError:
        raise
    except FileNotFoundError:
        raise ImageLoadError(path, "file not found") from None
    except IsADirectoryError:
        raise ImageLoadError(path, "is a directory") from None
    except Image.DecompressionBombError as err:
        raise ImageLoadError(path, f"refused as a decompression bomb ({err})") from None
    except Image.UnidentifiedImageError:
        raise ImageLoadError(path, "not an image or an unsupported format") from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise ImageLoadError(path, f"corrupt or truncated ({err})") from None


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB (alpha composited on white, high bit depths scaled to 8 bit)."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*_WHITE, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode.startswith("I;16") or mode in ("I", "F"):
        return Image.fromarray(_to_uint8(np.asarray(image), mode)).convert("RGB")
    if mode == "L" and "transparency" in image.info:
        return to_rgb(image.convert("LA"))
    return image.convert("RGB")


def _to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
    """Scale single-channel high-bit-depth pixels to uint8 (rules in the module docstring)."""
    values = values.astype(np.float64)
    if mode.startswith("I;16"):
        return np.round(values / 257.0).astype(np.uint8)
    finite = values[np.isfinite(values)]
    low, high = (finite.min(), finite.max()) if finite.size else (0.0, 0.0)
    if mode == "F" and low >= 0 and high <= 1:
        scaled = values * 255.0
    elif low >= 0 and high <= 255:
        scaled = values
    elif low >= 0 and high <= 65535:
        scaled = values / 257.0
    else:
        scaled = (values - low) / max(high - low, 1e-12) * 255.0
    return np.round(np.nan_to_num(np.clip(scaled, 0, 255))).astype(np.uint8)


# -- images inside zip archives ------------------------------------------------------------


def split_archive_path(path: str | Path) -> tuple[str, str] | None:
    """``(archive, member)`` for an ``ARCHIVE.zip!/MEMBER`` path, None for a plain path."""
    text = os.fspath(path)
    archive, separator, member = text.partition(ARCHIVE_SEPARATOR)
    if not separator or not archive.lower().endswith(".zip"):
        return None
    return archive, member


def archive_path(archive: str | Path, member: str) -> str:
    """The path that addresses ``member`` inside ``archive``."""
    return f"{os.fspath(archive)}{ARCHIVE_SEPARATOR}{member}"


class _Archives:
    """Open zip files of this process (a handle does not survive fork: keyed by pid)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pid = os.getpid()
        self.open: OrderedDict[str, zipfile.ZipFile] = OrderedDict()

    def get(self, archive: str) -> zipfile.ZipFile:
        with self.lock:
            if self.pid != os.getpid():  # forked: the parent's handles share file offsets
                self.open, self.pid = OrderedDict(), os.getpid()
            handle = self.open.get(archive)
            if handle is None:
                try:
                    handle = zipfile.ZipFile(archive)
                except zipfile.BadZipFile as err:
                    raise OSError(f"{archive} is not a valid zip archive ({err})") from None
                self.open[archive] = handle
                if len(self.open) > _MAX_OPEN_ARCHIVES:
                    self.open.popitem(last=False)[1].close()
            self.open.move_to_end(archive)
            return handle


_archives = _Archives()


def archive_members(archive: str | Path) -> set[str]:
    """Names of the files stored in a zip archive."""
    handle = _archives.get(os.fspath(archive))
    return {info.filename for info in handle.infolist() if not info.is_dir()}


def _refuse_special(path: str | Path) -> None:
    """ImageLoadError for a FIFO, socket or device (opening one would hang)."""
    from geocells.data.files import not_regular_reason, special_file

    kind = special_file(path)
    if kind is not None:
        raise ImageLoadError(path, not_regular_reason(kind))


def read_image_bytes(path: str | Path) -> bytes:
    """The bytes of an image file or of an ``ARCHIVE.zip!/MEMBER``."""
    parts = split_archive_path(path)
    if parts is None:
        _refuse_special(path)
        with open(path, "rb") as handle:
            return handle.read()
    archive, member = parts
    try:
        return _archives.get(archive).read(member)
    except KeyError:
        raise FileNotFoundError(f"{member} is not in {archive}") from None


def _open_source(path: str | Path):
    """What ``Image.open`` reads: the path itself, or an archive member's bytes."""
    if split_archive_path(path) is None:
        _refuse_special(path)
        return path
    return io.BytesIO(read_image_bytes(path))


# -- checks --------------------------------------------------------------------------------

IMAGE_CHECKS = ("header", "decode", "off")


def check_image(path: str | Path, mode: str = "header") -> tuple[int, int] | None:
    """Raise ``ImageLoadError`` when an image is unusable; return its (width, height).

    ``header``: PIL identifies the format and size, and a JPEG ends with its end-of-image
    marker (``FF D9``, trailing zero padding allowed) or a PNG with its ``IEND`` chunk —
    this catches the usual truncated downloads without decoding pixels. ``decode``: the
    image is fully decoded by ``load_image``. ``off``: nothing is checked (None).
    """
    if mode not in IMAGE_CHECKS:
        raise ValueError(f"unknown image check {mode!r}; valid: {', '.join(IMAGE_CHECKS)}")
    if mode == "off":
        return None
    register_heif()
    if mode == "decode":
        return load_image(path).size
    try:
        data = read_image_bytes(path)
    except FileNotFoundError:
        raise ImageLoadError(path, "file not found") from None
    except IsADirectoryError:
        raise ImageLoadError(path, "is a directory") from None
    except OSError as err:
        raise ImageLoadError(path, str(err)) from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                kind, size = image.format, image.size
    except Image.UnidentifiedImageError:
        raise ImageLoadError(path, "not an image or an unsupported format") from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise ImageLoadError(path, f"corrupt header ({err})") from None
    if min(size) < 1:
        raise ImageLoadError(path, f"empty image ({size[0]} x {size[1]})")
    tail = data.rstrip(b"\0")[-16:]
    if kind == "JPEG" and not tail.endswith(b"\xff\xd9"):
        raise ImageLoadError(path, "truncated JPEG (no end-of-image marker)")
    if kind == "PNG" and b"IEND" not in tail:
        raise ImageLoadError(path, "truncated PNG (no IEND chunk)")
    return size
