"""Uploaded bytes -> an RGB image, or one clear reason why not.

Uploads are decoded from memory (``io.BytesIO``): a client's file name is only echoed
back in the answer, never used as a path. The checks, in order: the part's content type
(an image type or ``application/octet-stream``), emptiness, the pixel count read from the
header before any decoding (decompression bombs), then a full decode (truncated or corrupt
files fail here). The image is made upright and RGB as ``geocells.data.load_image``
does, and shrunk to ``max_side`` so a queue of waiting images has bounded memory.
"""

from __future__ import annotations

import io
import warnings

from PIL import Image, ImageOps

ALLOWED_TYPES = ("application/octet-stream",)  # besides image/*


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


def decode_upload(
    data: bytes, content_type: str | None, max_pixels: int, max_side: int
) -> Image.Image:
    """Uploaded bytes -> upright RGB PIL image with longest side <= ``max_side``."""
    from geocells.data.images import to_rgb

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
                if max(width, height) > max_side:
                    # JPEG decodes at 1/2, 1/4, 1/8 scale directly: big photos stay cheap.
                    image.draft("RGB", (max_side, max_side))
                image.load()
                upright = ImageOps.exif_transpose(image)
                rgb = to_rgb(upright)
    except UploadError:
        raise
    except Image.DecompressionBombError as err:
        raise UploadError("too_many_pixels", f"refused as a decompression bomb ({err})") from None
    except Image.UnidentifiedImageError:
        raise UploadError("not_an_image", "not an image or an unsupported format") from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise UploadError("corrupt", f"corrupt or truncated image ({err})") from None
    if max(rgb.size) > max_side:
        rgb.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    return rgb
