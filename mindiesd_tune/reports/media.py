"""Sample outputs as inline thumbnails: still images as PNG/JPEG, videos as animated WebP."""

from __future__ import annotations

import base64
import io
from pathlib import Path

# Thumbnails fit this box; tiny demo outputs are scaled up by the browser, pixelated.
THUMB_PX = 192


def sample_paths(samples: Path, trial: int) -> tuple[Path | None, Path | None]:
    """(still image or frame strip, animated video) saved for ``trial``; None where absent."""
    still = samples / f"trial-{trial:04d}.png"
    anim = next((p for p in (samples / f"trial-{trial:04d}.webp", samples / f"trial-{trial:04d}.gif") if p.is_file()), None)
    return (still if still.is_file() else None), anim


def thumbnail_html(samples: Path, trial: int, label: str) -> str:
    """An <img> for the trial's animated output if it has one, else its still; a note when neither exists."""
    still, anim = sample_paths(samples, trial)
    if anim is not None:
        uri = _animated_uri(anim)
        if uri:
            return f'<img class="thumb" alt="{label}" title="{label}" src="{uri}">'
    if still is not None:
        return f'<img class="thumb" alt="{label}" title="{label}" src="{_still_uri(still)}">'
    return '<div class="thumb missing">no sample</div>'


def _fit(size: tuple[int, int], box: int = THUMB_PX) -> tuple[int, int]:
    w, h = size
    scale = min(1.0, box / max(w, h))
    return max(1, round(w * scale)), max(1, round(h * scale))


def _still_uri(path: Path) -> str:
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        if max(im.size) <= THUMB_PX:
            return _uri(path.read_bytes(), "image/png")
        im = im.resize(_fit(im.size), Image.LANCZOS) if im.width <= 3 * im.height else _strip(im)
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=85)
        return _uri(buf.getvalue(), "image/jpeg")


def _strip(im):
    """A wide frame strip keeps its frames readable: scale by height, not by the longest side."""
    from PIL import Image

    h = min(im.height, THUMB_PX // 2)
    return im.resize((max(1, round(im.width * h / im.height)), h), Image.LANCZOS)


def _animated_uri(path: Path) -> str | None:
    from PIL import Image, ImageSequence

    try:
        with Image.open(path) as im:
            if max(im.size) <= THUMB_PX:
                return _uri(path.read_bytes(), "image/webp" if path.suffix == ".webp" else "image/gif")
            size = _fit(im.size)
            durations = []
            frames = []
            for frame in ImageSequence.Iterator(im):
                frames.append(frame.convert("RGB").resize(size, Image.LANCZOS))
                durations.append(frame.info.get("duration", 125))
        buf = io.BytesIO()
        frames[0].save(buf, format="WEBP", save_all=True, append_images=frames[1:], duration=durations, loop=0, quality=80)
        return _uri(buf.getvalue(), "image/webp")
    except (OSError, ValueError):
        return None


def _uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"
