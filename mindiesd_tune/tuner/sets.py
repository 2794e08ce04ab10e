"""Set-level distances in trials: how far a trial's outputs, as a set, are from the baseline's.

Per-prompt fidelity (PSNR, SSIM, LPIPS) asks whether each output is the baseline's; a set
distance asks whether the outputs are drawn from the same distribution, what FID and FVD
measure for a model against data. A trial has only as many outputs as the study has prompts,
and a Frechet distance is biased upward at small N (two values compare only at equal N), so
trials use the kernel form, whose estimate is unbiased at any N >= 2:

- ``kid_clip``: kernel distance on CLIP image features (images);
- ``kvd_clip``: kernel distance on per-frame CLIP features of videos (the frames are the
  samples): the CLIP-frame distance, not FVD;
- ``kvd_i3d`` and ``fvd``: on the standard FVD I3D's features, for videos of 16 or more frames,
  only with ``--fvd-weights PATH`` (a TorchScript I3D, never downloaded; its checksum is
  printed).

Every label states N and the feature extractor. The CLIP model is the study's (demo-clip for the
demo models, ``--clip-model`` otherwise).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from ..metrics import kernel_distance
from ..metrics.frechet import frechet_distance, fvd_clips, i3d_features, load_i3d

IMAGE_SET = ("kid_clip",)
VIDEO_SET = ("kvd_clip", "kvd_i3d", "fvd")
NAMES = IMAGE_SET + VIDEO_SET


def checksum(path: str | Path) -> str:
    """The first 16 hex digits of the file's SHA-256: what a study prints of the weights it used."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


class SetMetrics:
    """The set distances a study asked for, with what they need loaded once."""

    def __init__(self, names: tuple[str, ...], video: bool, scorer=None, fvd_weights: str | None = None,
                 device: str | torch.device = "cpu"):
        wrong = [n for n in names if n in (VIDEO_SET if not video else IMAGE_SET)]
        if wrong:
            kind = "an image" if not video else "a video"
            raise UserError(f"{', '.join(wrong)} is not a distance for {kind} model; use "
                            f"{' or '.join(IMAGE_SET if not video else VIDEO_SET[:1])}")
        self.names, self.video, self.scorer, self.device = tuple(names), video, scorer, device
        self.i3d = None
        self.fvd_checksum = None
        if any(n in ("kvd_i3d", "fvd") for n in names):
            if not fvd_weights:
                raise UserError("kvd_i3d and fvd need the I3D TorchScript weights: --fvd-weights PATH "
                                "(never downloaded); without them use kvd_clip, the CLIP-frame distance")
            self.i3d = load_i3d(fvd_weights, device)
            self.fvd_checksum = checksum(fvd_weights)
        if any(n in ("kid_clip", "kvd_clip") for n in names) and scorer is None:
            raise UserError(f"{', '.join(names)} needs a CLIP model: --clip-model NAME (demo-clip for the demo models)")

    def labels(self, n: int) -> dict[str, str]:
        """What each distance is, in words, at ``n`` outputs per set."""
        clip = getattr(self.scorer, "spec", None)
        words = {
            "kid_clip": f"kernel distance on CLIP image features ({clip}), N={n} images per set",
            "kvd_clip": f"kernel distance on per-frame CLIP features ({clip}), N={n} videos per set; not FVD",
            "kvd_i3d": f"kernel distance on I3D features (weights {self.fvd_checksum}), N={n} videos per set",
            "fvd": f"Frechet distance on I3D features (weights {self.fvd_checksum}), N={n} videos per set; "
                   "biased at small N",
        }
        return {k: words[k] for k in self.names}

    @torch.no_grad()
    def distances(self, outputs: list[np.ndarray], reference: list[np.ndarray]) -> dict[str, float]:
        out: dict[str, float] = {}
        for name in self.names:
            if name == "kid_clip":
                out[name] = kernel_distance(self.scorer.image_features(np.stack(outputs)),
                                            self.scorer.image_features(np.stack(reference)))
            elif name == "kvd_clip":
                def frames(videos):
                    return torch.cat([self.scorer.video_frame_features(v) for v in videos])
                out[name] = kernel_distance(frames(outputs), frames(reference))
            else:
                a = i3d_features(fvd_clips(outputs), self.i3d, device=self.device)
                b = i3d_features(fvd_clips(reference), self.i3d, device=self.device)
                out[name] = kernel_distance(a, b) if name == "kvd_i3d" else frechet_distance(a, b)
        return out
