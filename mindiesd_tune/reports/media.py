"""Sample outputs as inline thumbnails: stills as small JPEGs, videos as small animated WebPs,
and a difference image of each trial against the baseline."""

from __future__ import annotations

import base64
import io
from pathlib import Path

# Thumbnails fit this box; tiny demo outputs are scaled up by the browser, pixelated.
THUMB_PX = 192
# Lossy, small: a report embeds a few dozen of these and must stay well under a megabyte.
JPEG_QUALITY = 80
WEBP_QUALITY = 70
# |trial - baseline| is multiplied by this before it is drawn: a one-level difference in
# eight bits would be invisible, and a fixed gain keeps the trials' images comparable.
DIFF_GAIN = 4


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
            return _img(uri, label)
    if still is not None:
        try:
            return _img(_still_uri(still), label)
        except OSError:
            pass
    return '<div class="thumb missing">no sample</div>'


def difference_html(samples: Path, trial: int, baseline: int, label: str) -> str:
    """An <img> of ``DIFF_GAIN`` x |trial - baseline| on the stills (black: identical); '' when either is missing."""
    import numpy as np
    from PIL import Image

    a, _ = sample_paths(samples, trial)
    b, _ = sample_paths(samples, baseline)
    if a is None or b is None:
        return ""
    try:
        with Image.open(a) as ia, Image.open(b) as ib:
            x, y = np.asarray(ia.convert("RGB"), dtype=np.int16), np.asarray(ib.convert("RGB"), dtype=np.int16)
    except OSError:
        return ""
    if x.shape != y.shape:
        return ""
    diff = np.clip(np.abs(x - y).max(axis=2) * DIFF_GAIN, 0, 255).astype(np.uint8)
    return _img(_jpeg_uri(_thumb(Image.fromarray(diff, mode="L"))), label)


def _img(uri: str, label: str) -> str:
    return f'<img class="thumb" alt="{label}" title="{label}" src="{uri}">'


def _fit(size: tuple[int, int], box: int = THUMB_PX) -> tuple[int, int]:
    w, h = size
    scale = min(1.0, box / max(w, h))
    return max(1, round(w * scale)), max(1, round(h * scale))


def _thumb(im):
    from PIL import Image

    if max(im.size) <= THUMB_PX:
        return im
    return im.resize(_fit(im.size), Image.LANCZOS) if im.width <= 3 * im.height else _strip(im)


def _still_uri(path: Path) -> str:
    from PIL import Image

    with Image.open(path) as im:
        return _jpeg_uri(_thumb(im.convert("RGB")))


def _jpeg_uri(im) -> str:
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=JPEG_QUALITY, optimize=True)
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
            size = _fit(im.size)
            durations = []
            frames = []
            for frame in ImageSequence.Iterator(im):
                rgb = frame.convert("RGB")
                frames.append(rgb if rgb.size == size else rgb.resize(size, Image.LANCZOS))
                durations.append(frame.info.get("duration", 125))
        buf = io.BytesIO()
        # the tuner saves lossless WebP; re-encoded lossy it is a fraction of the size
        frames[0].save(buf, format="WEBP", save_all=True, append_images=frames[1:], duration=durations, loop=0,
                       quality=WEBP_QUALITY)
        return _uri(buf.getvalue(), "image/webp")
    except (OSError, ValueError):
        return None


def _uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"
