"""CLIP score (text alignment) through open_clip, with weights from local paths or the demo-clip model only.

A CLIP model is named by a *spec*:

- ``demo-clip``: the small CLIP trained on the demo captions, shipped in the package;
- ``NAME:TAG``: an open_clip architecture and pretrained tag (``ViT-B-32:laion2b_s34b_b79k``),
  used only when its weights are already in the local cache (Hugging Face or ``~/.cache/clip``);
- ``NAME:/path/to/weights``: an open_clip architecture and a checkpoint file;
- ``local-dir:/path``: a folder with ``open_clip_config.json`` and the weights (open_clip's own layout).

Nothing is downloaded: without local weights the scorer fails with one line saying how to supply them.
The score is CLIPScore as torchmetrics and the papers report it: ``max(100 * cos(image, text), 0)``.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import MissingDependency
from .errors import MetricUnavailable
from .fidelity import to_nchw

DEMO_CLIP = "demo-clip"
DEFAULT_VIDEO_FRAMES = 8  # frames sampled per video for its CLIP score


def default_clip_model(model_name: str | None) -> str | None:
    """The CLIP spec to use for a tuned model: demo-clip for the built-in demo models, else None (ask the user)."""
    if model_name and (model_name.startswith("demo-") or model_name.startswith("tiny-")):
        return DEMO_CLIP
    return None


def how_to_supply(spec: str | None = None) -> str:
    what = f"no local weights for CLIP {spec}; " if spec else "a CLIP model is needed; "
    return what + (
        "pass NAME:/path/to/open_clip_weights.safetensors, local-dir:/path/to/open_clip_folder, or NAME:TAG "
        "once its weights are in the local cache (demo-clip for the demo models)"
    )


def sample_frames(num_frames: int, k: int) -> list[int]:
    """``k`` evenly spaced frame indices (all frames when there are no more than ``k``)."""
    if num_frames <= k:
        return list(range(num_frames))
    return [int(round(i)) for i in np.linspace(0, num_frames - 1, k)]


class ClipScorer:
    """Batched image and text embeddings of one CLIP model, and CLIP scores of images or videos against prompts."""

    def __init__(self, spec: str = DEMO_CLIP, device: str | torch.device = "cpu", batch_size: int = 32, video_frames: int = DEFAULT_VIDEO_FRAMES):
        self.spec = spec
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.video_frames = video_frames
        self.model, self._tokenize, self._preprocess = _load(spec)
        self.model = self.model.to(self.device).eval()

    @torch.no_grad()
    def image_features(self, images) -> torch.Tensor:
        """Unit-norm embeddings (N, D) of images (N,H,W,C) or (H,W,C) in [0, 1]."""
        x = to_nchw(images)
        out = []
        for i in range(0, len(x), self.batch_size):
            batch = self._preprocess(x[i : i + self.batch_size]).to(self.device)
            out.append(F.normalize(self.model.encode_image(batch).float(), dim=-1).cpu())
        return torch.cat(out)

    @torch.no_grad()
    def text_features(self, prompts: list[str]) -> torch.Tensor:
        out = []
        for i in range(0, len(prompts), self.batch_size):
            tokens = self._tokenize(list(prompts[i : i + self.batch_size])).to(self.device)
            out.append(F.normalize(self.model.encode_text(tokens).float(), dim=-1).cpu())
        return torch.cat(out)

    def video_frame_features(self, video, frames: int | None = None) -> torch.Tensor:
        """Embeddings (k, D) of ``frames`` evenly sampled frames of one video (F,H,W,C); all frames when None."""
        video = np.asarray(video) if not isinstance(video, torch.Tensor) else video
        idx = sample_frames(len(video), frames) if frames is not None else list(range(len(video)))
        return self.image_features(video[idx])

    def scores(self, outputs, prompts: list[str]) -> list[float]:
        """One CLIP score per output; an output is an image (H,W,C) or a video (F,H,W,C), scored as the
        mean over ``video_frames`` sampled frames."""
        outputs = list(outputs)
        if len(outputs) != len(prompts):
            raise ValueError(f"{len(outputs)} outputs but {len(prompts)} prompts")
        if not outputs:
            return []
        text = self.text_features(prompts)
        if np.ndim(outputs[0]) == 3:
            img = self.image_features(np.stack([np.asarray(o) for o in outputs]))
            return (100.0 * (img * text).sum(-1)).clamp(min=0).tolist()
        # a video: the mean of its sampled frames' CLIP scores
        return [
            float((100.0 * (self.video_frame_features(v, self.video_frames) @ t)).clamp(min=0).mean())
            for v, t in zip(outputs, text)
        ]

    def score(self, outputs, prompts: list[str]) -> float:
        """Mean CLIP score over outputs."""
        return float(np.mean(self.scores(outputs, prompts)))


@lru_cache(maxsize=4)
def get_scorer(spec: str = DEMO_CLIP, device: str = "cpu") -> ClipScorer:
    """A scorer kept for reuse: models load once per process."""
    return ClipScorer(spec, device)


def clip_score(outputs, prompts: list[str], spec: str = DEMO_CLIP, device: str = "cpu") -> float:
    return get_scorer(spec, str(device)).score(outputs, prompts)


# ---------------------------------------------------------------------------- loading


def _load(spec: str):
    if not spec:
        raise MetricUnavailable(how_to_supply())
    open_clip = _open_clip()  # demo-clip is an open_clip model too
    if spec == DEMO_CLIP:
        return _load_demo_clip()

    if spec.startswith("local-dir:"):
        folder = Path(spec[len("local-dir:") :]).expanduser()
        if not (folder / "open_clip_config.json").is_file():
            raise MetricUnavailable(f"{spec}: no open_clip_config.json in {folder}; " + how_to_supply())
        model = open_clip.create_model(f"local-dir:{folder}", pretrained_text=False, pretrained_image=False)
        tokenizer = open_clip.get_tokenizer(f"local-dir:{folder}")
        return model, tokenizer, _open_clip_preprocess(model)
    if spec.startswith("hf-hub:"):
        raise MetricUnavailable(f"{spec}: hub ids are not fetched; " + how_to_supply())
    name, sep, source = spec.partition(":")
    if not sep or not source:
        raise MetricUnavailable(f"CLIP model {spec!r} has no weights named; " + how_to_supply(spec))
    if name not in open_clip.list_models():
        raise MetricUnavailable(f"{name}: not an open_clip architecture (see open_clip.list_models())")
    weights = _local_weights(name, source, spec)
    model = open_clip.create_model(name, pretrained=str(weights), pretrained_text=False, pretrained_image=False)
    return model, open_clip.get_tokenizer(name), _open_clip_preprocess(model)


def _open_clip():
    try:
        import open_clip
    except ImportError:
        # a core dependency, so only a broken or partial install gets here
        raise MissingDependency(
            "CLIP scoring needs open_clip_torch, a dependency of mindiesd-tune missing here (pip install open_clip_torch)"
        ) from None
    return open_clip


def _local_weights(name: str, source: str, spec: str) -> Path:
    """The checkpoint file for ``NAME:TAG`` or ``NAME:/path``; never fetched."""
    path = Path(source).expanduser()
    if path.is_file():
        return path
    if os.sep in source or path.suffix in (".pt", ".pth", ".bin", ".safetensors"):
        raise MetricUnavailable(f"{source}: no such checkpoint file; " + how_to_supply(spec))
    from open_clip.pretrained import get_pretrained_cfg

    cfg = get_pretrained_cfg(name, source)
    if not cfg:
        raise MetricUnavailable(f"{spec}: {source!r} is not a pretrained tag of {name}; " + how_to_supply(spec))
    for candidate in _cached_candidates(cfg):
        if candidate is not None and Path(candidate).is_file():
            return Path(candidate)
    raise MetricUnavailable(how_to_supply(spec))


def _cached_candidates(cfg: dict):
    """Where open_clip would have cached a tag's weights: the Hugging Face cache, then ~/.cache/clip."""
    if cfg.get("hf_hub"):
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            try_to_load_from_cache = None
        if try_to_load_from_cache is not None:
            repo, filename = os.path.split(cfg["hf_hub"])
            names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
            if filename.endswith((".bin", ".pth")):
                names.insert(0, filename[:-4] + ".safetensors")
            for fname in names:
                found = try_to_load_from_cache(repo, fname)
                yield found if isinstance(found, str) else None
    if cfg.get("url"):
        yield os.path.join(os.path.expanduser("~/.cache/clip"), os.path.basename(cfg["url"]))


def _open_clip_preprocess(model):
    """The model's own eval transform, on tensors: resize, centre crop, normalise."""
    cfg = dict(getattr(model.visual, "preprocess_cfg", {}) or {})
    size = cfg.get("size", getattr(model.visual, "image_size", 224))
    size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
    mean = torch.tensor(cfg.get("mean", (0.48145466, 0.4578275, 0.40821073))).view(1, 3, 1, 1)
    std = torch.tensor(cfg.get("std", (0.26862954, 0.26130258, 0.27577711))).view(1, 3, 1, 1)
    mode = "bicubic" if cfg.get("interpolation", "bicubic") == "bicubic" else "bilinear"
    squash = cfg.get("resize_mode", "shortest") == "squash"

    def preprocess(x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        if squash:
            x = F.interpolate(x, size=size, mode=mode, antialias=True, align_corners=False)
        else:
            x = resize_center_crop(x, size, mode)
        return (x.clamp(0, 1) - mean) / std

    return preprocess


def resize_center_crop(x: torch.Tensor, size: tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """Resize (N,C,H,W) so it covers ``size`` and crop its centre to exactly ``size``."""
    h, w = x.shape[-2:]
    scale = max(size[0] / h, size[1] / w)
    nh, nw = max(size[0], round(h * scale)), max(size[1], round(w * scale))
    if (nh, nw) != (h, w):
        x = F.interpolate(x, size=(nh, nw), mode=mode, antialias=True, align_corners=False)
    top, left = (nh - size[0]) // 2, (nw - size[1]) // 2
    return x[..., top : top + size[0], left : left + size[1]]


def _load_demo_clip():
    from ..models import demo_clip
    from ..models.weights import load_demo_state_dicts, weights_path

    sd = load_demo_state_dicts(DEMO_CLIP)
    if sd is None or "clip" not in sd:
        raise MetricUnavailable(
            f"demo-clip weights are missing ({weights_path(DEMO_CLIP)}); train them with "
            "python -m mindiesd_tune.training.clip, or pass another CLIP model"
        )
    model = demo_clip.build_clip(sd["clip"])
    return model, demo_clip.tokenize, lambda x: demo_clip.prepare_images(x * 2 - 1)
