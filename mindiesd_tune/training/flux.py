"""Train demo-flux on shapes at 64x64: ``python -m mindiesd_tune.training.flux --stage vae|transformer``.

Stage ``vae`` trains the AutoencoderKL (reconstruction + small KL), then rescales its latent space
to unit variance per channel (exactly, through the encoder's last and decoder's first conv, because
the pipeline's ``scaling_factor`` is fixed at 1). Stage ``decoder`` sharpens the decoder on posterior means with the encoder frozen (the latent
space stays as it is). Stage ``transformer`` trains the
FluxTransformer2DModel with rectified flow, jointly with the two small text encoders, on latents and
prompt embeddings prepared exactly as FluxPipeline prepares them at inference.
"""

from __future__ import annotations

import argparse
import logging

import torch
import torch.nn.functional as F

from ..compat.diffusers import pack_latents, prepare_latent_image_ids
from ..models import shapes
from ..models.builders import DEMO_FLUX_SIZE, build_flux
from .common import LoopConfig, export_pipeline, load_vae, log_progress, save_vae, train

logger = logging.getLogger(__name__)

NAME = "demo-flux"
RESOLUTION = 64


def encode_prompts(pipe, captions: list[str], max_sequence_length: int):
    """(pooled CLIP, T5 sequence) embeddings as FluxPipeline.encode_prompt computes them, with gradients."""
    clip_ids = pipe.tokenizer(
        captions, padding="max_length", max_length=pipe.tokenizer_max_length, truncation=True, return_tensors="pt"
    ).input_ids
    t5_ids = pipe.tokenizer_2(
        captions, padding="max_length", max_length=max_sequence_length, truncation=True, return_tensors="pt"
    ).input_ids
    pooled = pipe.text_encoder(clip_ids, output_hidden_states=False).pooler_output
    seq = pipe.text_encoder_2(t5_ids, output_hidden_states=False)[0]
    return pooled, seq


@torch.no_grad()
def normalise_latents(vae, images: torch.Tensor) -> list[float]:
    """Rescale the latent space to unit std per channel without changing encode->decode."""
    mean = vae.encode(images).latent_dist.mean
    std = mean.transpose(0, 1).reshape(mean.shape[1], -1).std(1).clamp_min(1e-3)  # (C,)
    c = std.numel()
    conv_out = vae.encoder.conv_out
    conv_out.weight[:c] /= std.view(c, 1, 1, 1)
    conv_out.bias[:c] /= std
    conv_out.bias[c:] -= 2 * std.log()  # log-variance of z / std
    vae.decoder.conv_in.weight *= std.view(1, c, 1, 1)
    return std.tolist()


def vae_stage(args) -> None:
    pipe = build_flux(DEMO_FLUX_SIZE, seed=args.seed)
    vae = pipe.vae.train().requires_grad_(True)
    cfg = LoopConfig(
        steps=args.steps, lr=args.lr, warmup=30, seed=args.seed, time_budget_s=args.time_budget, threads=args.threads,
        extra={"batch": args.batch, "kl_weight": args.kl_weight, "resolution": RESOLUTION},
    )

    def step_fn(step: int, gen: torch.Generator) -> dict:
        x = shapes.sample(args.seed * 10_000_000 + step, args.batch, size=RESOLUTION).images
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample(generator=gen)).sample
        l1, mse = (rec - x).abs().mean(), F.mse_loss(rec, x)
        kl = post.kl().mean()
        return {"loss": l1 + mse + args.kl_weight * kl, "l1": l1, "kl": kl}

    vae, info = train(f"{NAME}-vae", vae, step_fn, cfg)
    std = normalise_latents(vae, shapes.sample(12345, 256, size=RESOLUTION).images)
    info["latent_std_before_normalising"] = std
    with torch.no_grad():
        x = shapes.sample(0, 64, size=RESOLUTION, split="heldout").images
        rec = vae.decode(vae.encode(x).latent_dist.mode()).sample
        info["heldout_l1"] = (rec - x).abs().mean().item()
    logger.info("[%s-vae] latent std %s, held-out L1 %.4f", NAME, std, info["heldout_l1"])
    save_vae(NAME, vae, info)


def decoder_stage(args) -> None:
    """Sharpen the decoder on posterior means (plus a little noise) with the encoder frozen.

    The encoder, hence the latent space the transformer learns, does not change.
    """
    pipe = build_flux(DEMO_FLUX_SIZE, seed=args.seed)
    vae = pipe.vae
    info = load_vae(NAME, vae)
    vae.requires_grad_(False)
    vae.decoder.train().requires_grad_(True)
    cfg = LoopConfig(
        steps=args.steps, lr=args.lr, warmup=20, seed=args.seed, time_budget_s=args.time_budget, threads=args.threads,
        extra={"batch": args.batch, "latent_noise": args.latent_noise, "resolution": RESOLUTION},
    )

    def step_fn(step: int, gen: torch.Generator) -> dict:
        x = shapes.sample(args.seed * 10_000_000 + 3_000_000 + step, args.batch, size=RESOLUTION).images
        with torch.no_grad():
            z = vae.encode(x).latent_dist.mode()
        rec = vae.decode(z + args.latent_noise * torch.randn(z.shape, generator=gen)).sample
        l1, mse = (rec - x).abs().mean(), F.mse_loss(rec, x)
        return {"loss": l1 + mse, "l1": l1}

    _, decoder_info = train(f"{NAME}-decoder", vae.decoder, step_fn, cfg)
    vae.eval()
    with torch.no_grad():
        x = shapes.sample(0, 64, size=RESOLUTION, split="heldout").images
        rec = vae.decode(vae.encode(x).latent_dist.mode()).sample
        info["heldout_l1_after_decoder_finetune"] = (rec - x).abs().mean().item()
    info["decoder_finetune"] = {"steps": args.steps, "steps_done": decoder_info["steps_done"], "lr": args.lr,
                                "batch": args.batch, "latent_noise": args.latent_noise, "log": decoder_info["log"]}
    logger.info("[%s-decoder] held-out L1 %.4f", NAME, info["heldout_l1_after_decoder_finetune"])
    save_vae(NAME, vae, info)


def edge_band(scenes: list[shapes.Scene], side: int, latent_side: int) -> torch.Tensor:
    """(n, 1, latent_side, latent_side) mask of the latent pixels within a few pixels of each shape's outline.

    Circle, square and triangle of one size differ only near the outline, so in the latent MSE the
    shape word is worth little next to colour and place; weighting this band makes it count.
    """
    near = F.avg_pool2d(shapes.coverage(scenes, side), 7, stride=1, padding=3, count_include_pad=False)
    band = ((near > 0.02) & (near < 0.98)).float()
    return F.adaptive_max_pool2d(band, latent_side)


def transformer_loss(pipe, args):
    """The transformer stage's loss on one batch: ``step_fn(step, generator) -> {"loss": ...}`` for
    ``common.train``; ``args`` gives seed, batch, timestep_mean, caption_dropout and edge_weight."""
    text_len = DEMO_FLUX_SIZE.text_len
    lat_hw = 2 * (RESOLUTION // (pipe.vae_scale_factor * 2))
    img_ids = prepare_latent_image_ids(pipe, args.batch, lat_hw // 2, lat_hw // 2, "cpu", torch.float32)
    txt_ids = torch.zeros(text_len, 3)

    def step_fn(step: int, gen: torch.Generator) -> dict:
        batch = shapes.sample(args.seed * 10_000_000 + step, args.batch, size=RESOLUTION)
        with torch.no_grad():
            z = pipe.vae.encode(batch.images).latent_dist.mode()
            z = (z - pipe.vae.config.shift_factor) * pipe.vae.config.scaling_factor
        b, c, h, w = z.shape
        x0 = pack_latents(pipe, z, b, c, h, w)
        noise = torch.randn(x0.shape, generator=gen)
        sigma = torch.sigmoid(torch.randn(b, generator=gen) + args.timestep_mean)
        xt = (1 - sigma.view(b, 1, 1)) * x0 + sigma.view(b, 1, 1) * noise
        # Dropped captions become the empty prompt, which is what FluxPipeline encodes for
        # ``negative_prompt=""``: the model learns the unconditional velocity that true CFG needs.
        drop = torch.rand(b, generator=gen) < args.caption_dropout
        captions = ["" if d else c for c, d in zip(batch.captions, drop.tolist())]
        pooled, seq = encode_prompts(pipe, captions, text_len)
        pred = pipe.transformer(
            hidden_states=xt, timestep=sigma, guidance=None, pooled_projections=pooled, encoder_hidden_states=seq,
            txt_ids=txt_ids, img_ids=img_ids, return_dict=False,
        )[0]
        err = (pred - (noise - x0)).square()
        if not args.edge_weight:
            return {"loss": err.mean()}
        band = edge_band(batch.attributes, RESOLUTION, h).expand(b, c, h, w)
        weight = 1 + args.edge_weight * pack_latents(pipe, band, b, c, h, w)
        return {"loss": (weight * err).sum() / weight.sum(), "mse": err.mean()}

    return step_fn


def trainable(pipe) -> torch.nn.ModuleDict:
    """What the transformer stage trains: the transformer jointly with the two text encoders."""
    return torch.nn.ModuleDict(
        {"transformer": pipe.transformer, "text_encoder": pipe.text_encoder, "text_encoder_2": pipe.text_encoder_2}
    ).requires_grad_(True)


def transformer_stage(args) -> None:
    pipe = build_flux(DEMO_FLUX_SIZE, seed=args.seed)
    load_vae(NAME, pipe.vae)
    model = trainable(pipe)
    cfg = LoopConfig(
        steps=args.steps, lr=args.lr, warmup=100, ema=args.ema, seed=args.seed, time_budget_s=args.time_budget,
        threads=args.threads, ckpt_every=100,
        extra={"batch": args.batch, "resolution": RESOLUTION, "max_sequence_length": DEMO_FLUX_SIZE.text_len,
               "timestep_sampling": f"logit-normal({args.timestep_mean}, 1)",
               "objective": "rectified flow, v = noise - x0", "caption_dropout": args.caption_dropout,
               "edge_weight": args.edge_weight},
    )
    model, info = train(f"{NAME}-transformer", model, transformer_loss(pipe, args), cfg)
    # Export with the VAE as it is now: a decoder fine-tune may have run beside this stage (the
    # encoder, hence the latent space trained on, is frozen there).
    vae_info = load_vae(NAME, pipe.vae)
    export_pipeline(NAME, model, pipe.vae, info, vae_info, DEMO_FLUX_SIZE)


def finetune(out_dir, steps: int, seed: int = 1, batch: int = 8, lr: float = 2e-4, threads: int = 1,
             time_budget_s: float = float("inf")) -> dict:
    """A second demo-flux checkpoint: the shipped weights trained ``steps`` more steps on another
    seed's data and noise (the last transformer stage's loss), saved as a diffusers pipeline
    folder at ``out_dir / "pipeline"``; returns the training info with ``relative_change`` (how far
    the trained weights moved, relative L2) and ``final_loss``. The shipped weights are not
    touched; the optimiser state is kept in ``out_dir / "train"``, so a rerun resumes."""
    from pathlib import Path
    from types import SimpleNamespace

    from ..models.registry import load

    out_dir = Path(out_dir)
    pipe = load(NAME, device="cpu").pipe
    args = SimpleNamespace(seed=seed, batch=batch, timestep_mean=-0.8, caption_dropout=0.1, edge_weight=4.0)
    cfg = LoopConfig(steps=steps, lr=lr, warmup=min(20, steps // 4), seed=seed, threads=threads,
                     time_budget_s=time_budget_s, ckpt_every=max(steps, 1), log_every=max(1, min(25, steps // 4)))
    model = trainable(pipe)
    before = [p.detach().clone() for p in model.parameters()]
    threads = torch.get_num_threads()
    try:
        _, info = train(f"{NAME}-finetune", model, transformer_loss(pipe, args), cfg, workdir=out_dir / "train")
    finally:
        torch.set_num_threads(threads)  # the loop sets its own; a caller timing studies next keeps its count
    moved = sum(float((p.detach() - b).square().sum()) for p, b in zip(model.parameters(), before))
    info["relative_change"] = (moved / sum(float(b.square().sum()) for b in before)) ** 0.5
    info["final_loss"] = info["log"][-1]["loss"] if info["log"] else None
    pipe.save_pretrained(out_dir / "pipeline")
    return info


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--stage", choices=("vae", "decoder", "transformer"), required=True)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--ema", type=float, default=0.995)
    ap.add_argument("--kl-weight", type=float, default=1e-6)
    ap.add_argument("--latent-noise", type=float, default=0.05, help="decoder stage: noise added to latent means")
    ap.add_argument("--caption-dropout", type=float, default=0.0,
                    help="transformer stage: share of captions replaced by the empty prompt (for true CFG)")
    ap.add_argument("--timestep-mean", type=float, default=0.0,
                    help="transformer stage: mean of the logit-normal noise level; below 0 favours low noise")
    ap.add_argument("--edge-weight", type=float, default=0.0,
                    help="transformer stage: extra loss weight on latents near the shape's outline")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--time-budget", type=float, default=float("inf"), help="seconds; stop early and export")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    log_progress()
    defaults = {"vae": (400, 8, 5e-4), "decoder": (300, 8, 3e-4), "transformer": (2000, 24, 6e-4)}[args.stage]
    args.steps = args.steps or defaults[0]
    args.batch = args.batch or defaults[1]
    args.lr = args.lr or defaults[2]
    {"vae": vae_stage, "decoder": decoder_stage, "transformer": transformer_stage}[args.stage](args)


if __name__ == "__main__":
    main()
