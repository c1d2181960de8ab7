"""Images as the model gets them: Pillow checks and downscales them (bridge/images.py)."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from bridge.images import ImageRefused, fit_image


def encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def test_a_large_jpeg_is_downscaled_to_the_longer_side_and_stays_a_jpeg() -> None:
    photo = encoded(Image.new("RGB", (4032, 3024), (10, 120, 200)), "JPEG", quality=90)
    fitted = fit_image(photo, 1568)
    assert fitted.mime_type == "image/jpeg"
    assert (fitted.width, fitted.height) == (1568, 1176)
    assert Image.open(io.BytesIO(fitted.data)).size == (1568, 1176)


def test_a_small_image_is_sent_as_it_came() -> None:
    data = encoded(Image.new("RGBA", (300, 200), (0, 0, 0, 0)), "WEBP")
    fitted = fit_image(data, 1568)
    assert fitted.data == data and fitted.mime_type == "image/webp"


def test_a_gif_becomes_its_first_frame_as_png() -> None:
    frames = [Image.new("P", (40, 30), color) for color in (1, 2, 3)]
    data = io.BytesIO()
    frames[0].save(data, "GIF", save_all=True, append_images=frames[1:])
    fitted = fit_image(data.getvalue(), 1568)
    assert fitted.mime_type == "image/png" and (fitted.width, fitted.height) == (40, 30)


@pytest.mark.parametrize(
    "data",
    [
        b"<html>Slack login</html>",
        encoded(Image.new("RGB", (50, 50)), "PNG")[:60],  # cut short
        encoded(Image.new("RGB", (10, 10)), "BMP"),  # an image, not one we send
    ],
)
def test_what_is_not_a_readable_image_is_refused(data: bytes) -> None:
    with pytest.raises(ImageRefused):
        fit_image(data, 1568)


def test_a_decompression_bomb_is_refused_before_it_is_decoded() -> None:
    # 10,000 x 10,000 pixels of one colour: a few KB as PNG, 300 MB once decoded.
    bomb = encoded(Image.new("L", (10_000, 10_000)), "PNG")
    assert len(bomb) < 1_000_000
    with pytest.raises(ImageRefused, match="pixels"):
        fit_image(bomb, 1568)
