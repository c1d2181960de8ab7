"""The screenshot the sandbox's user attaches to a question: a terminal with a traceback, drawn
with Pillow at run time (no binary file in the repository)."""

from __future__ import annotations

import io

TRACEBACK = (
    "$ python fetch.py --report weekly",
    "Traceback (most recent call last):",
    '  File "fetch.py", line 42, in <module>',
    "    report = fetch_report(client, week)",
    '  File "fetch.py", line 17, in fetch_report',
    "    body = response.read()",
    "ConnectionResetError: [Errno 104] Connection reset by peer",
)


def screenshot_png() -> bytes:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (960, 260), (30, 30, 36))
    draw = ImageDraw.Draw(image)
    for row, line in enumerate(TRACEBACK):
        colour = (255, 110, 100) if line.startswith("ConnectionResetError") else (220, 220, 220)
        draw.text((20, 20 + row * 30), line, fill=colour, font_size=18)
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()
