"""Images as the model gets them: checked to be what they claim, and downscaled when large.

Pillow does the decoding (never hand-written); this runs in a worker thread.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

# A decompression bomb (a small file of huge dimensions) is refused before it is decoded.
MAX_PIXELS = 60_000_000
_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "GIF": "image/gif", "WEBP": "image/webp"}


class ImageRefused(Exception):
    """Not an image we read (corrupt, another format, or too many pixels)."""


@dataclass(frozen=True, slots=True)
class FittedImage:
    mime_type: str
    data: bytes
    width: int
    height: int


def fit_image(data: bytes, max_side: int) -> FittedImage:
    """The image as sent to the model: the original when it is a PNG, JPEG, GIF or WebP no
    larger than `max_side`; else downscaled (JPEG for photos, PNG for the rest; a GIF's first
    frame)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            fmt = image.format or ""
            if fmt not in _FORMATS:
                raise ImageRefused(f"format {fmt or 'unknown'} is not PNG, JPEG, GIF or WebP")
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise ImageRefused(f"{width}x{height} pixels is more than {MAX_PIXELS:,}")
            if max(width, height) <= max_side and fmt != "GIF":
                image.verify()  # a truncated or corrupt file fails here, not at the model
                return FittedImage(_FORMATS[fmt], data, width, height)
            if fmt == "JPEG":
                # The decoder scales by 1/2, 1/4 or 1/8 as it reads (no larger than needed):
                # a 12-megapixel photo costs a quarter of the memory and time to decode.
                image.draft("RGB", (max_side, max_side))
            image.load()
    except ImageRefused:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise ImageRefused(f"too many pixels for its size (a decompression bomb): {exc}") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Warning) as exc:
        raise ImageRefused(f"not a readable image: {type(exc).__name__}") from exc
    fitted: Image.Image = image
    fitted.thumbnail((max_side, max_side))
    out = io.BytesIO()
    if fmt == "JPEG":
        fitted.convert("RGB").save(out, "JPEG", quality=85)
        mime = "image/jpeg"
    else:
        if fitted.mode not in ("RGB", "RGBA", "L", "LA"):
            fitted = fitted.convert("RGBA")
        fitted.save(out, "PNG", optimize=False)
        mime = "image/png"
    return FittedImage(mime, out.getvalue(), fitted.width, fitted.height)
