"""Evidence that the demo models learned: ``python -m mindiesd_tune.training.evaluate [--model all] [-n 64]``.

demo-flux: demo-clip reads each generated image's object colour, shape and background colour
(zero-shot, over every plain caption) and we count agreement with the prompt. demo-wan: the
direction of motion of the object's centroid across the generated frames against the prompt's
direction (plus demo-clip's reading of the middle frame). Prompts come from the held-out stream of
the shapes data set; every call uses the model's registered call settings (those ``tune`` and ``run``
use) with 20 steps.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from ..models import shapes
from ..models.builders import DEMO_FLUX_SIZE, DEMO_WAN_SIZE, build_flux, build_wan
from ..models.demo_clip import build_clip, zero_shot_read
from ..models.weights import load_demo_state_dicts

STEPS = 20


def default_generation(name: str, steps: int, n: int) -> dict:
    """The registry's call settings for ``name`` (what ``tune`` and ``run`` use), for a batch of ``n`` prompts."""
    from ..models import demo  # noqa: F401  (registers the built-in models)
    from ..models.registry import builtins

    settings = {**next(b for b in builtins() if b.name == name).generation, "num_inference_steps": steps}
    if isinstance(settings.get("negative_prompt"), str):  # one negative prompt per prompt in the batch
        settings["negative_prompt"] = [settings["negative_prompt"]] * n
    return settings


def _clip():
    sd = load_demo_state_dicts("demo-clip")
    if sd is None:
        raise FileNotFoundError("demo-clip weights are missing; train them with python -m mindiesd_tune.training.clip")
    return build_clip(sd["clip"])


def _agreement(reads: list[tuple[str, str, str]], scenes: list[shapes.Scene]) -> dict[str, float]:
    n = len(scenes)
    truth = [(s.colour, s.shape, s.background) for s in scenes]
    return {
        "colour": sum(r[0] == t[0] for r, t in zip(reads, truth)) / n,
        "shape": sum(r[1] == t[1] for r, t in zip(reads, truth)) / n,
        "background": sum(r[2] == t[2] for r, t in zip(reads, truth)) / n,
        "all_three": sum(r == t for r, t in zip(reads, truth)) / n,
    }


@torch.no_grad()
def generate_flux(pipe, prompts: list[str], steps: int = STEPS, seed: int = 0, batch: int = 16) -> torch.Tensor:
    """Images (n, 3, 64, 64) in [-1, 1]; prompt i uses generator seed ``seed + i``, whatever the batching."""
    out = []
    for i in range(0, len(prompts), batch):
        chunk = prompts[i : i + batch]
        gens = [torch.Generator().manual_seed(seed + i + j) for j in range(len(chunk))]
        settings = default_generation("demo-flux", steps, len(chunk))
        images = pipe(prompt=chunk, generator=gens, output_type="pt", **settings).images
        out.append(images * 2 - 1)
    return torch.cat(out)


@torch.no_grad()
def generate_wan(pipe, prompts: list[str], steps: int = STEPS, seed: int = 0, batch: int = 16) -> torch.Tensor:
    """Clips (n, 3, 9, 32, 32) in [-1, 1]; prompt i uses generator seed ``seed + i``."""
    out = []
    for i in range(0, len(prompts), batch):
        chunk = prompts[i : i + batch]
        gens = [torch.Generator().manual_seed(seed + i + j) for j in range(len(chunk))]
        settings = default_generation("demo-wan", steps, len(chunk))
        frames = pipe(prompt=chunk, generator=gens, output_type="pt", **settings).frames  # (n, F, 3, H, W) in [0, 1]
        out.append(frames.permute(0, 2, 1, 3, 4) * 2 - 1)
    return torch.cat(out)


def evaluate_flux(n: int = 64, steps: int = STEPS, seed: int = 0) -> dict | None:
    sd = load_demo_state_dicts("demo-flux")
    if sd is None:
        return None
    pipe = build_flux(DEMO_FLUX_SIZE, state_dicts=sd)
    clip = _clip()
    prompts = shapes.heldout_prompts(n, seed=seed)
    t0 = time.time()
    images = generate_flux(pipe, [p for p, _ in prompts], steps, seed)
    scenes = [s for _, s in prompts]
    real = shapes.sample(seed, n, split="heldout")
    with torch.no_grad():  # the ceiling the VAE leaves: real images through encode -> decode
        recon = pipe.vae.decode(pipe.vae.encode(real.images).latent_dist.mode()).sample
    return {
        "model": "demo-flux", "prompts": n, "steps": steps, "generate_s": round(time.time() - t0, 1),
        "clip_agreement": _agreement(zero_shot_read(clip, images), scenes),
        "clip_agreement_on_real_images": _agreement(zero_shot_read(clip, real.images), real.attributes),
        "clip_agreement_on_vae_reconstructions": _agreement(zero_shot_read(clip, recon), real.attributes),
    }


def evaluate_wan(n: int = 64, steps: int = STEPS, seed: int = 0) -> dict | None:
    sd = load_demo_state_dicts("demo-wan")
    if sd is None:
        return None
    pipe = build_wan(DEMO_WAN_SIZE, state_dicts=sd)
    prompts = shapes.heldout_prompts(n, video=True, seed=seed)
    t0 = time.time()
    clips = generate_wan(pipe, [p for p, _ in prompts], steps, seed)
    scenes = [s for _, s in prompts]
    dirs = [shapes.motion_direction(c) for c in clips]
    real = shapes.sample_video(seed, n, split="heldout")
    result = {
        "model": "demo-wan", "prompts": n, "steps": steps, "generate_s": round(time.time() - t0, 1),
        "motion_agreement": sum(d == s.direction for d, s in zip(dirs, scenes)) / n,
        "motion_agreement_on_real_clips": sum(
            shapes.motion_direction(c) == s.direction for c, s in zip(real.images, real.attributes)
        ) / n,
    }
    if load_demo_state_dicts("demo-clip") is not None:
        result["clip_agreement_middle_frame"] = _agreement(zero_shot_read(_clip(), clips[:, :, clips.shape[2] // 2]), scenes)
    return result


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", choices=("demo-flux", "demo-wan", "all"), default="all")
    ap.add_argument("-n", type=int, default=64, help="held-out prompts")
    ap.add_argument("--steps", type=int, default=STEPS)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    runs = {"demo-flux": evaluate_flux, "demo-wan": evaluate_wan}
    for name, fn in runs.items():
        if args.model in (name, "all"):
            result = fn(args.n, args.steps, args.seed)
            print(json.dumps(result if result is not None else {"model": name, "missing": "weights file"}), flush=True)


if __name__ == "__main__":
    main()
