"""Procedural shapes data set: captioned images and videos, generated on the fly, deterministic per seed.

A scene is one shape (circle, square, triangle) of a named colour and size at a named position on a
background of another named colour. Captions follow a small grammar whose plain form is
"a red circle on a blue background"; size words ("a large red circle ...") and position phrases
("... at the left on a blue background") are optional. The video variant moves the object in a
named direction ("a red circle on a blue background moving left"). Every word is in
:mod:`mindiesd_tune.models.tokenizer`'s vocabulary.

``split="train"`` and ``split="heldout"`` draw from disjoint random streams, so evaluation prompts
and images are never ones the demo models were trained on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

# Ordinary RGB meaning of each colour word.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
    "white": (255, 255, 255),
    "black": (0, 0, 0),
}
SHAPES = ("circle", "square", "triangle")
# Extent of the shape as a fraction of the image side.
SIZES: dict[str, float] = {"small": 0.25, "medium": 0.375, "large": 0.5}
# Centre of the shape as (x, y) fractions of the image side; y grows downwards.
POSITIONS: dict[str, tuple[float, float]] = {
    "center": (0.5, 0.5),
    "left": (0.27, 0.5),
    "right": (0.73, 0.5),
    "top": (0.5, 0.27),
    "bottom": (0.5, 0.73),
}
# Unit motion per direction in image coordinates (y down).
DIRECTIONS: dict[str, tuple[int, int]] = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
# Distance the object travels over a clip, as a fraction of the image side.
TRAVEL = 0.44
# Sizes used for video: at 32x32 a small shape is too few pixels to read.
VIDEO_SIZES = ("medium", "large")

_SPLITS = {"train": 0, "heldout": 1}
_SUPERSAMPLE = 4


@dataclass(frozen=True)
class Scene:
    """What a caption describes; ``x``/``y`` are the shape's centre in fractions (first frame for video)."""

    shape: str
    colour: str
    background: str
    size: str
    position: str | None = None
    direction: str | None = None
    x: float = 0.5
    y: float = 0.5


class Batch(NamedTuple):
    images: torch.Tensor  # (n, 3, H, W) or, for video, (n, 3, F, H, W); float in [-1, 1]
    captions: list[str]
    attributes: list[Scene]


def _rng(seed: int, split: str) -> np.random.Generator:
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {sorted(_SPLITS)}, got {split!r}")
    return np.random.default_rng([_SPLITS[split], int(seed)])


def caption(scene: Scene, *, with_size: bool = False, with_position: bool = False) -> str:
    """The caption of ``scene``; the plain form has neither size nor position words."""
    words = ["a"]
    if with_size:
        words.append(scene.size)
    words += [scene.colour, scene.shape]
    if with_position and scene.position is not None:
        words += ["in", "the", "center"] if scene.position == "center" else ["at", "the", scene.position]
    words += ["on", "a", scene.background, "background"]
    if scene.direction is not None:
        words += ["moving", scene.direction]
    return " ".join(words)


_CAPTION_RE = re.compile(
    r"^an? (?:(?P<size>small|medium|large) )?(?P<colour>\w+) (?P<shape>\w+)"
    r"(?: (?:in|at) the (?P<position>center|left|right|top|bottom))?"
    r" on a (?P<background>\w+) background(?: moving (?P<direction>left|right|up|down))?$"
)


def parse_caption(text: str) -> dict[str, str | None]:
    """Attributes named by a caption: shape, colour, background, and size/position/direction or None."""
    m = _CAPTION_RE.match(text.strip().lower())
    if m is None or m["colour"] not in COLOURS or m["background"] not in COLOURS or m["shape"] not in SHAPES:
        raise ValueError(f"not a shapes caption: {text!r}")
    return m.groupdict()


def plain_captions() -> list[tuple[str, str, str, str]]:
    """Every plain caption with its (colour, shape, background): the zero-shot label set."""
    out = []
    for colour in COLOURS:
        for shape in SHAPES:
            for background in COLOURS:
                if background != colour:
                    out.append((f"a {colour} {shape} on a {background} background", colour, shape, background))
    return out


def _draw_scene(rng: np.random.Generator, video: bool) -> tuple[Scene, bool, bool]:
    names = list(COLOURS)
    colour = names[rng.integers(len(names))]
    others = [c for c in names if c != colour]
    background = others[rng.integers(len(others))]
    shape = SHAPES[rng.integers(len(SHAPES))]
    jitter = rng.uniform(-0.03, 0.03, size=2)
    if video:
        size = VIDEO_SIZES[rng.integers(len(VIDEO_SIZES))]
        direction = list(DIRECTIONS)[rng.integers(len(DIRECTIONS))]
        dx, dy = DIRECTIONS[direction]
        across = rng.uniform(-0.15, 0.15)
        x = 0.5 - dx * TRAVEL / 2 + (across if dx == 0 else jitter[0])
        y = 0.5 - dy * TRAVEL / 2 + (across if dy == 0 else jitter[1])
        scene = Scene(shape, colour, background, size, None, direction, float(x), float(y))
        return scene, bool(rng.random() < 0.5), False
    size = list(SIZES)[rng.integers(len(SIZES))]
    position = list(POSITIONS)[rng.integers(len(POSITIONS))]
    px, py = POSITIONS[position]
    scene = Scene(shape, colour, background, size, position, None, float(px + jitter[0]), float(py + jitter[1]))
    return scene, bool(rng.random() < 0.5), bool(rng.random() < 0.5)


def render(
    shapes: list[str], sizes: list[float], xs: torch.Tensor, ys: torch.Tensor, fg: torch.Tensor, bg: torch.Tensor, side: int
) -> torch.Tensor:
    """Anti-aliased rendering of one shape per image: (n, 3, side, side) float in [0, 1].

    ``sizes`` and centres ``xs``/``ys`` are fractions of the side; ``fg``/``bg`` are (n, 3) in [0, 1].
    """
    n = len(shapes)
    s = side * _SUPERSAMPLE
    coords = (torch.arange(s, dtype=torch.float32) + 0.5) / s
    gy, gx = torch.meshgrid(coords, coords, indexing="ij")
    gx, gy = gx.expand(n, s, s), gy.expand(n, s, s)
    cx, cy = xs.view(n, 1, 1).float(), ys.view(n, 1, 1).float()
    r = torch.tensor(sizes, dtype=torch.float32).view(n, 1, 1) / 2
    dx, dy = gx - cx, gy - cy
    circle = dx * dx + dy * dy <= r * r
    # Every shape spans its size word's extent, so a size word means one extent whatever the shape
    # (a square scaled to the circle's area would differ from a small circle by only a one-pixel rim).
    square = (dx.abs() <= r) & (dy.abs() <= r)
    # Upward triangle: apex at (0, -r), base from (-r, 0.8r) to (r, 0.8r).
    base = 0.8 * r
    triangle = (dy <= base) & (dx.abs() * (base + r) <= (dy + r) * r)
    kind = torch.tensor([SHAPES.index(k) for k in shapes]).view(n, 1, 1)
    mask = torch.where(kind == 0, circle, torch.where(kind == 1, square, triangle)).float()
    mask = F.avg_pool2d(mask.unsqueeze(1), _SUPERSAMPLE)  # (n, 1, side, side)
    return mask * fg.view(n, 3, 1, 1) + (1 - mask) * bg.view(n, 3, 1, 1)


def _rgb(names: list[str]) -> torch.Tensor:
    return torch.tensor([COLOURS[c] for c in names], dtype=torch.float32) / 255.0


def sample(seed: int, n: int, *, size: int = 64, split: str = "train") -> Batch:
    """``n`` captioned images, the same for the same ``(seed, n, size, split)``."""
    rng = _rng(seed, split)
    drawn = [_draw_scene(rng, video=False) for _ in range(n)]
    scenes = [d[0] for d in drawn]
    captions = [caption(sc, with_size=ws, with_position=wp) for sc, ws, wp in drawn]
    mask = coverage(scenes, size)
    fg = _rgb([sc.colour for sc in scenes]).view(n, 3, 1, 1)
    bg = _rgb([sc.background for sc in scenes]).view(n, 3, 1, 1)
    return Batch((mask * fg + (1 - mask) * bg) * 2 - 1, captions, scenes)


def coverage(scenes: list[Scene], size: int) -> torch.Tensor:
    """(n, 1, size, size): the share of each pixel the scene's shape covers (first frame for video)."""
    n = len(scenes)
    return render(
        [sc.shape for sc in scenes], [SIZES[sc.size] for sc in scenes],
        torch.tensor([sc.x for sc in scenes]), torch.tensor([sc.y for sc in scenes]),
        torch.ones(n, 3), torch.zeros(n, 3), size,
    )[:, :1]


def sample_video(seed: int, n: int, *, size: int = 32, num_frames: int = 9, split: str = "train") -> Batch:
    """``n`` captioned clips (n, 3, num_frames, size, size) of one shape moving in a named direction."""
    rng = _rng(seed, split)
    drawn = [_draw_scene(rng, video=True) for _ in range(n)]
    scenes = [d[0] for d in drawn]
    captions = [caption(sc, with_size=ws) for sc, ws, _ in drawn]
    t = torch.linspace(0, 1, num_frames)
    xs = torch.stack([sc.x + DIRECTIONS[sc.direction][0] * TRAVEL * t for sc in scenes])  # (n, F)
    ys = torch.stack([sc.y + DIRECTIONS[sc.direction][1] * TRAVEL * t for sc in scenes])
    rep = lambda values: [v for v in values for _ in range(num_frames)]  # noqa: E731
    frames = render(
        rep([sc.shape for sc in scenes]),
        rep([SIZES[sc.size] for sc in scenes]),
        xs.reshape(-1),
        ys.reshape(-1),
        _rgb(rep([sc.colour for sc in scenes])),
        _rgb(rep([sc.background for sc in scenes])),
        size,
    )
    video = frames.view(n, num_frames, 3, size, size).permute(0, 2, 1, 3, 4).contiguous()
    return Batch(video * 2 - 1, captions, scenes)


def heldout_prompts(n: int, *, video: bool = False, seed: int = 0) -> list[tuple[str, Scene]]:
    """``n`` evaluation prompts with their attributes, from the held-out stream."""
    rng = _rng(seed, "heldout")
    out = []
    for _ in range(n):
        scene, ws, wp = _draw_scene(rng, video=video)
        out.append((caption(scene, with_size=ws, with_position=wp), scene))
    return out


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] floats to uint8 in [0, 255], same layout."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def motion_direction(video: torch.Tensor) -> str:
    """Direction of the object's motion in one clip (3, F, H, W) in [-1, 1], from its centroid.

    The background colour is the median of the border pixels of each frame; the object is what
    differs from it.
    """
    _, f, h, w = video.shape
    frames = video.permute(1, 0, 2, 3)  # (F, 3, H, W)
    border = torch.cat(
        [frames[:, :, 0], frames[:, :, -1], frames[:, :, :, 0], frames[:, :, :, -1]], dim=-1
    )  # (F, 3, 4W)
    bgc = border.median(dim=-1).values.view(f, 3, 1, 1)
    weight = (frames - bgc).abs().sum(1)  # (F, H, W)
    weight = torch.where(weight > 0.5, weight, torch.zeros_like(weight))
    total = weight.sum((1, 2)).clamp_min(1e-6)
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    cx = (weight * xx).sum((1, 2)) / total
    cy = (weight * yy).sum((1, 2)) / total
    k = max(1, f // 3)
    mx = (cx[-k:].mean() - cx[:k].mean()).item()
    my = (cy[-k:].mean() - cy[:k].mean()).item()
    if abs(mx) >= abs(my):
        return "right" if mx > 0 else "left"
    return "down" if my > 0 else "up"
