"""Train demo-wan on moving-shape clips (9 frames, 32x32): ``python -m mindiesd_tune.training.wan --stage vae|transformer``.

Stage ``vae`` trains the AutoencoderKLWan (decoding posterior means plus a little noise) and rescales its latents to unit variance per channel
(exactly, through ``quant_conv`` and ``post_quant_conv``: the pipeline's latents_mean/std are fixed
at 0/1). Stage ``transformer`` encodes a pool of clips once (posterior means), then trains the WanTransformer3DModel
with rectified flow jointly with the small UMT5 encoder; 10% of captions are dropped to "" so the
pipeline's default classifier-free guidance (empty negative prompt) has an unconditional model.
"""

from __future__ import annotations

import argparse
import logging

import torch
import torch.nn.functional as F

from ..models import shapes
from ..models.builders import DEMO_WAN_SIZE, build_wan
from .common import LoopConfig, default_workdir, export_pipeline, load_vae, log_progress, save_vae, train

logger = logging.getLogger(__name__)

NAME = "demo-wan"
RESOLUTION = 32
NUM_FRAMES = 9
SHIFT = 3.0  # the demo scheduler's shift; training timesteps follow the same warp


def encode_prompts(pipe, captions: list[str], max_sequence_length: int) -> torch.Tensor:
    """UMT5 embeddings as WanPipeline._get_t5_prompt_embeds computes them (trimmed, zero padded), with gradients."""
    tok = pipe.tokenizer(
        captions, padding="max_length", max_length=max_sequence_length, truncation=True,
        add_special_tokens=True, return_attention_mask=True, return_tensors="pt",
    )
    mask = tok.attention_mask
    hidden = pipe.text_encoder(tok.input_ids, mask).last_hidden_state
    return hidden * mask.unsqueeze(-1).to(hidden.dtype)


@torch.no_grad()
def normalise_latents(vae, videos: torch.Tensor) -> list[float]:
    """Rescale the latent space to unit std per channel without changing encode->decode."""
    mean = vae.encode(videos).latent_dist.mean
    c = mean.shape[1]
    std = mean.transpose(0, 1).reshape(c, -1).std(1).clamp_min(1e-3)
    q = vae.quant_conv
    q.weight[:c] /= std.view(c, 1, 1, 1, 1)
    q.bias[:c] /= std
    q.bias[c:] -= 2 * std.log()
    vae.post_quant_conv.weight *= std.view(1, c, 1, 1, 1)
    return std.tolist()


def vae_stage(args) -> None:
    pipe = build_wan(DEMO_WAN_SIZE, seed=args.seed)
    vae = pipe.vae.train().requires_grad_(True)
    cfg = LoopConfig(
        steps=args.steps, lr=args.lr, warmup=30, seed=args.seed, time_budget_s=args.time_budget, threads=args.threads,
        extra={"batch": args.batch, "kl_weight": args.kl_weight, "latent_noise": args.latent_noise,
               "resolution": RESOLUTION, "num_frames": args.vae_frames},
    )

    def step_fn(step: int, gen: torch.Generator) -> dict:
        x = shapes.sample_video(args.seed * 10_000_000 + step, args.batch, size=RESOLUTION, num_frames=args.vae_frames).images
        post = vae.encode(x).latent_dist
        # Decode the posterior mean plus noise scaled to the latents' own spread: sharp, yet robust
        # to the small errors a generated latent has (sampling the posterior blurred the Flux VAE).
        z = post.mean + args.latent_noise * post.mean.detach().std() * torch.randn(post.mean.shape, generator=gen)
        rec = vae.decode(z).sample
        l1, mse = (rec - x).abs().mean(), F.mse_loss(rec, x)
        kl = post.kl().mean()
        return {"loss": l1 + mse + args.kl_weight * kl, "l1": l1, "kl": kl}

    vae, info = train(f"{NAME}-vae", vae, step_fn, cfg)
    std = normalise_latents(vae, shapes.sample_video(12345, 64, size=RESOLUTION, num_frames=NUM_FRAMES).images)
    info["latent_std_before_normalising"] = std
    with torch.no_grad():
        x = shapes.sample_video(0, 16, size=RESOLUTION, num_frames=NUM_FRAMES, split="heldout").images
        rec = vae.decode(vae.encode(x).latent_dist.mode()).sample
        info["heldout_l1"] = (rec - x).abs().mean().item()
    logger.info("[%s-vae] latent std %s, held-out L1 %.4f", NAME, std, info["heldout_l1"])
    save_vae(NAME, vae, info)


@torch.no_grad()
def latent_pool(vae, size: int, seed: int, chunk: int = 32):
    """Posterior means of ``size`` training clips, with their captions (encoded once, reused)."""
    path = default_workdir(f"{NAME}-transformer") / f"pool-{seed}-{size}.pt"
    if path.is_file():
        return torch.load(path)
    means, captions = [], []
    for i in range(0, size, chunk):
        batch = shapes.sample_video(seed * 10_000_000 + 5_000_000 + i, chunk, size=RESOLUTION, num_frames=NUM_FRAMES)
        post = vae.encode(batch.images).latent_dist
        means.append(post.mean.half())
        captions += batch.captions
    pool = {"mean": torch.cat(means), "captions": captions}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(pool, path)
    return pool


def transformer_stage(args) -> None:
    pipe = build_wan(DEMO_WAN_SIZE, seed=args.seed)
    vae_info = load_vae(NAME, pipe.vae)
    torch.set_num_threads(args.threads)
    pool = latent_pool(pipe.vae, args.pool, args.seed)
    text_len = DEMO_WAN_SIZE.text_len
    model = torch.nn.ModuleDict({"transformer": pipe.transformer, "text_encoder": pipe.text_encoder}).requires_grad_(True)
    cfg = LoopConfig(
        steps=args.steps, lr=args.lr, warmup=100, ema=args.ema, seed=args.seed, time_budget_s=args.time_budget,
        threads=args.threads, ckpt_every=100,
        extra={"batch": args.batch, "resolution": RESOLUTION, "num_frames": NUM_FRAMES, "pool": args.pool,
               "caption_dropout": args.caption_dropout, "max_sequence_length": text_len,
               "timestep_sampling": f"logit-normal(0, 1) warped by shift {SHIFT}",
               "objective": "rectified flow, v = noise - x0; timestep = 1000 * sigma"},
    )

    def step_fn(step: int, gen: torch.Generator) -> dict:
        idx = torch.randint(len(pool["captions"]), (args.batch,), generator=gen)
        x0 = pool["mean"][idx].float()
        captions = [pool["captions"][i] for i in idx.tolist()]
        drop = torch.rand(args.batch, generator=gen) < args.caption_dropout
        captions = ["" if d else c for c, d in zip(captions, drop.tolist())]
        b = x0.shape[0]
        noise = torch.randn(x0.shape, generator=gen)
        s = torch.sigmoid(torch.randn(b, generator=gen))
        sigma = SHIFT * s / (1 + (SHIFT - 1) * s)
        sv = sigma.view(b, 1, 1, 1, 1)
        xt = (1 - sv) * x0 + sv * noise
        pred = pipe.transformer(
            hidden_states=xt, timestep=sigma * 1000, encoder_hidden_states=encode_prompts(pipe, captions, text_len),
            return_dict=False,
        )[0]
        return {"loss": F.mse_loss(pred, noise - x0)}

    model, info = train(f"{NAME}-transformer", model, step_fn, cfg)
    export_pipeline(NAME, model, pipe.vae, info, vae_info, DEMO_WAN_SIZE)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--stage", choices=("vae", "transformer"), required=True)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--ema", type=float, default=0.995)
    ap.add_argument("--kl-weight", type=float, default=1e-6)
    ap.add_argument("--latent-noise", type=float, default=0.05, help="vae stage: decoder input noise, relative")
    ap.add_argument(
        "--vae-frames", type=int, default=NUM_FRAMES,
        help="vae stage: clip length (1 + 4k). Train on the pipeline's 9: a VAE trained on 5-frame clips "
             "reconstructed frames 6-9 (its third causal chunk) badly, held-out L1 0.38 against 0.08",
    )
    ap.add_argument("--pool", type=int, default=6144, help="training clips encoded once for the transformer stage")
    ap.add_argument("--caption-dropout", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--time-budget", type=float, default=float("inf"), help="seconds; stop early and export")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    log_progress()
    defaults = {"vae": (1000, 8, 8e-4), "transformer": (2000, 16, 6e-4)}[args.stage]
    args.steps = args.steps or defaults[0]
    args.batch = args.batch or defaults[1]
    args.lr = args.lr or defaults[2]
    (vae_stage if args.stage == "vae" else transformer_stage)(args)


if __name__ == "__main__":
    main()
