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
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

DEFAULT_MAX_PIXELS = 150_000_000  # a full-resolution 16384 x 8192 panorama is 134 M
_WHITE = (255, 255, 255)


class ImageLoadError(ValueError):
    """An image file that cannot be used; the message names the file."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"cannot load image {path}: {reason}")
        self.path = Path(path)
        self.reason = reason


def load_image(path: str | Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Read ``path`` as an upright RGB PIL image (see the module docstring for conventions)."""
    path = Path(path)
    try:
        with warnings.catch_warnings():
            # Our own max_pixels is the limit; PIL's warning below its hard limit is noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
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
