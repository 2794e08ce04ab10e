"""The training loop the demo trainers share: seeded per step, checkpointed, resumable, time-boxed."""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

logger = logging.getLogger(__name__)


def log_progress() -> None:
    """Show the trainers' progress lines on stdout; for their command lines only (it configures the root logger)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)


@dataclass
class LoopConfig:
    """How one training run goes; every field ends up in the JSON shipped beside the weights."""

    steps: int = 1000
    lr: float = 3e-4
    warmup: int = 50
    min_lr_ratio: float = 0.1  # cosine decay floor, as a fraction of lr
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema: float = 0.0  # decay of the exported weights' moving average; 0 exports the raw weights
    seed: int = 0
    time_budget_s: float = float("inf")  # stop (and export) early when exceeded
    log_every: int = 25
    ckpt_every: int = 100
    threads: int = 1
    extra: dict = field(default_factory=dict)


def default_workdir(name: str) -> Path:
    return Path(os.environ.get("MINDIESD_TRAIN_DIR", "/tmp/mindiesd-train")) / name


def lr_at(cfg: LoopConfig, step: int) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    frac = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac)))


def train(
    name: str,
    model: torch.nn.Module,
    step_fn: Callable[[int, torch.Generator], dict[str, torch.Tensor]],
    cfg: LoopConfig,
    workdir: Path | None = None,
) -> tuple[torch.nn.Module, dict]:
    """Run ``step_fn`` (returns ``{"loss": ..., other scalars}``) for ``cfg.steps`` optimiser steps.

    Each step gets a generator seeded from ``(cfg.seed, step)``, so a resumed run draws the same
    data and noise as an uninterrupted one. A checkpoint (model, EMA, optimiser, log) is written
    every ``ckpt_every`` steps and on exit; rerunning the same command resumes from it.
    Returns the model to export (the EMA copy when ``cfg.ema`` > 0) and the info dict.
    """
    torch.set_num_threads(cfg.threads)
    workdir = workdir or default_workdir(name)
    workdir.mkdir(parents=True, exist_ok=True)
    ckpt_path = workdir / "checkpoint.pt"
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.99))
    ema = copy.deepcopy(model).requires_grad_(False) if cfg.ema > 0 else None
    log, start = _resume(name, ckpt_path, model, opt, ema)

    def save(step: int) -> None:
        _save(ckpt_path, {"model": model.state_dict(), "opt": opt.state_dict(), "log": log, "step": step,
                          "ema": ema.state_dict() if ema is not None else None})

    t0 = time.time()
    step = start
    acc: dict[str, float] = {}
    n_acc = 0
    model.train()
    while step < cfg.steps and time.time() - t0 < cfg.time_budget_s:
        for group in opt.param_groups:
            group["lr"] = lr_at(cfg, step)
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        out = step_fn(step, gen)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        if ema is not None:
            _ema_update(ema, model, min(cfg.ema, (1 + step) / (10 + step)))
        step += 1
        n_acc += 1
        for k, v in out.items():
            acc[k] = acc.get(k, 0.0) + float(v.detach() if torch.is_tensor(v) else v)
        if step % cfg.log_every == 0:
            log.append({"step": step, **{k: round(v / n_acc, 5) for k, v in acc.items()},
                        "lr": lr_at(cfg, step - 1), "elapsed_s": round(time.time() - t0, 1)})
            acc, n_acc = {}, 0
            logger.info("[%s] %s", name, json.dumps(log[-1]))
        if step % cfg.ckpt_every == 0:
            save(step)
    save(step)
    model.eval()
    info = {"name": name, "steps_done": step, "config": asdict(cfg), "log": log}
    return (ema if ema is not None else model).eval(), info


def _resume(name: str, ckpt_path: Path, model, opt, ema) -> tuple[list[dict], int]:
    """(log, step) of the checkpoint at ``ckpt_path``, its state loaded; ([], 0) without one."""
    if not ckpt_path.is_file():
        return [], 0
    state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["opt"])
    if ema is not None and state.get("ema") is not None:
        ema.load_state_dict(state["ema"])
    logger.info("[%s] resumed at step %d", name, state["step"])
    return state["log"], state["step"]


def _save(ckpt_path: Path, state: dict) -> None:
    # written aside and renamed, so a kill mid-write leaves the previous checkpoint whole
    tmp = ckpt_path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(ckpt_path)


@torch.no_grad()
def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    for pe, pm in zip(ema.parameters(), model.parameters()):
        pe.lerp_(pm.detach(), 1 - decay)
    for be, bm in zip(ema.buffers(), model.buffers()):
        be.copy_(bm)


# The VAE stages write ``vae.pt`` + ``vae.json`` to their work folder; the transformer stages
# read them back and ship them with the transformer and text encoders in one weights file.
VAE_INFO_KEYS = ("config", "log", "steps_done", "latent_std_before_normalising", "heldout_l1",
                 "decoder_finetune", "heldout_l1_after_decoder_finetune")


def save_vae(name: str, vae: torch.nn.Module, info: dict) -> None:
    out = default_workdir(f"{name}-vae")
    out.mkdir(parents=True, exist_ok=True)
    torch.save(vae.state_dict(), out / "vae.pt")
    (out / "vae.json").write_text(json.dumps(info, indent=1))


def load_vae(name: str, vae: torch.nn.Module) -> dict:
    """Load the trained VAE of ``name`` into ``vae``; returns its training info."""
    out = default_workdir(f"{name}-vae")
    vae.load_state_dict(torch.load(out / "vae.pt"))
    return json.loads((out / "vae.json").read_text())


def export_pipeline(name: str, model: torch.nn.ModuleDict, vae: torch.nn.Module, info: dict, vae_info: dict,
                    architecture) -> None:
    """Ship the trained components (``model``'s entries plus the VAE) as the demo weights of ``name``."""
    from ..models.weights import save_demo_state_dicts

    info["vae"] = {k: vae_info.get(k) for k in VAE_INFO_KEYS if k in vae_info}
    info["architecture"] = repr(architecture)
    comps = {k: m.state_dict() for k, m in model.items()}
    comps["vae"] = vae.state_dict()
    save_demo_state_dicts(name, comps, info)
    logger.info("[%s] saved", name)
