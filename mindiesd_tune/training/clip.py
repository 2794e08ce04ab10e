"""Train demo-clip contrastively on shapes captions: ``python -m mindiesd_tune.training.clip``."""

from __future__ import annotations

import argparse
import logging

import torch
import torch.nn.functional as F

from ..models import shapes
from ..models.demo_clip import EMBED_DIM, TEXT_CFG, VISION_CFG, build_clip, tokenize, zero_shot_read
from ..models.weights import save_demo_state_dicts
from .common import LoopConfig, log_progress, train

logger = logging.getLogger(__name__)


def augment(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Blur, low resolution, noise and a small colour shift: what generated images look like, not what they mean."""
    n = images.shape[0]
    u = torch.rand(n, 4, generator=gen)
    out = images.clone()
    # Gaussian blur with a per-image sigma on a random half.
    blur = u[:, 0] < 0.5
    if blur.any():
        sigma = 0.4 + 1.0 * torch.rand(int(blur.sum()), generator=gen)
        x = torch.arange(-3, 4, dtype=torch.float32)
        k = torch.exp(-(x.view(1, -1) ** 2) / (2 * sigma.view(-1, 1) ** 2))
        k = k / k.sum(1, keepdim=True)  # (m, 7)
        sel = out[blur]
        m = sel.shape[0]
        sel = sel.reshape(1, m * 3, *sel.shape[-2:])
        kk = k.repeat_interleave(3, 0)
        sel = F.conv2d(F.pad(sel, (3, 3, 0, 0), mode="replicate"), kk.view(m * 3, 1, 1, 7), groups=m * 3)
        sel = F.conv2d(F.pad(sel, (0, 0, 3, 3), mode="replicate"), kk.view(m * 3, 1, 7, 1), groups=m * 3)
        out[blur] = sel.view(m, 3, *sel.shape[-2:])
    low = u[:, 1] < 0.25
    if low.any():
        small = F.interpolate(out[low], scale_factor=0.5, mode="area")
        out[low] = F.interpolate(small, size=out.shape[-2:], mode="bilinear", align_corners=False)
    noisy = (u[:, 2] < 0.5).float().view(n, 1, 1, 1)
    out = out + noisy * 0.1 * torch.rand(n, 1, 1, 1, generator=gen) * torch.randn(out.shape, generator=gen)
    shift = (u[:, 3] < 0.5).float().view(n, 1, 1, 1)
    out = out + shift * 0.15 * (torch.rand(n, 3, 1, 1, generator=gen) * 2 - 1)
    return out.clamp(-1, 1)


def positives(scenes: list[shapes.Scene], captions: list[str]) -> torch.Tensor:
    """(n, n) matrix: 1 where caption j is a true description of image i (batches repeat plain captions)."""
    parsed = [shapes.parse_caption(c) for c in captions]
    m = torch.zeros(len(scenes), len(captions))
    for i, sc in enumerate(scenes):
        for j, p in enumerate(parsed):
            m[i, j] = float(
                p["colour"] == sc.colour
                and p["shape"] == sc.shape
                and p["background"] == sc.background
                and p["size"] in (None, sc.size)
                and p["position"] in (None, sc.position)
            )
    return m


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--time-budget", type=float, default=float("inf"), help="seconds; stop early and export")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    log_progress()

    cfg = LoopConfig(
        steps=args.steps, lr=args.lr, warmup=50, weight_decay=0.05, seed=args.seed, time_budget_s=args.time_budget,
        threads=args.threads, ckpt_every=200, extra={"batch": args.batch},
    )
    model = build_clip(seed=args.seed).train()

    def step_fn(step: int, gen: torch.Generator) -> dict:
        batch = shapes.sample(args.seed * 10_000_000 + step, args.batch, split="train")
        images = augment(batch.images, gen)
        pos = positives(batch.attributes, batch.captions)
        img = F.normalize(model.encode_image(images), dim=-1)
        txt = F.normalize(model.encode_text(tokenize(batch.captions)), dim=-1)
        logits = model.logit_scale.exp().clamp(max=100) * img @ txt.T
        loss_i = -(pos / pos.sum(1, keepdim=True) * logits.log_softmax(1)).sum(1).mean()
        loss_t = -(pos.T / pos.T.sum(1, keepdim=True) * logits.T.log_softmax(1)).sum(1).mean()
        return {"loss": (loss_i + loss_t) / 2}

    model, info = train("demo-clip", model, step_fn, cfg)
    test = shapes.sample(0, 256, split="heldout")
    read = zero_shot_read(model, test.images)
    truth = [(s.colour, s.shape, s.background) for s in test.attributes]
    acc = {
        "colour": sum(r[0] == t[0] for r, t in zip(read, truth)) / len(truth),
        "shape": sum(r[1] == t[1] for r, t in zip(read, truth)) / len(truth),
        "background": sum(r[2] == t[2] for r, t in zip(read, truth)) / len(truth),
        "all": sum(r == t for r, t in zip(read, truth)) / len(truth),
    }
    info.update(
        architecture={"embed_dim": EMBED_DIM, "vision_cfg": VISION_CFG, "text_cfg": TEXT_CFG},
        heldout_real_zero_shot_accuracy=acc,
    )
    logger.info("[demo-clip] held-out zero-shot accuracy on real images: %s", acc)
    save_demo_state_dicts("demo-clip", {"clip": model.state_dict()}, info)


if __name__ == "__main__":
    main()
