"""compile: regional torch.compile, each repeated block's own forward compiled, the hooks left eager."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

from ..config import check
from ..registry import Method, field_text, register_method
from ._common import DIT

COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
# What a study samples: eager or inductor's default. The autotuning modes spend minutes per
# trial benchmarking kernels, and reduce-overhead's CUDA graphs need static input addresses.
SEARCHED_MODES = ("none", "default")
# ``MINDIESD_TUNE_COMPILE=0`` leaves torch.compile out of every study (``tune --no-compile``
# does it for one); the test suite sets it, its compile tests set it back.
COMPILE_ENV = "MINDIESD_TUNE_COMPILE"


@dataclass
class CompileConfig:
    """torch.compile of the transformer's repeated blocks (regional compilation).

    Each block's own ``forward`` is compiled and installed before any other method, so the
    caching and parallel hooks that wrap the block stay eager: Dynamo never traces their
    per-call state (which step, which branch), whose changing values would make it
    recompile on every new state until its recompile limit, and then run eagerly. The blocks
    of one class share one compiled graph (Dynamo caches on the forward's code), so compile
    time stays that of one block per class. Compiling happens at the first call.

    Attributes:
        mode: ``none`` (eager) or a torch.compile mode.
        dynamic: let the compiled blocks accept new sequence lengths without recompiling.
    """

    mode: str = "none"
    dynamic: bool = False

    def validate(self) -> None:
        check(self.mode in COMPILE_MODES, "compile.mode", self.mode, f"must be one of {', '.join(COMPILE_MODES)}")


def install(model, cfg: CompileConfig, handle):
    """Compile the model's blocks' forwards in place; returns a function that restores eager execution."""
    if cfg.mode == "none":
        return lambda: None
    import torch

    from ..blocks import transformer_blocks

    blocks = [b.module for b in transformer_blocks(model)]
    # an instance ``forward`` already there (another library's hooks) is what gets compiled and put back
    before = [block.__dict__.get("forward") for block in blocks]
    for block in blocks:
        block.forward = torch.compile(block.forward, mode=None if cfg.mode == "default" else cfg.mode, dynamic=cfg.dynamic)

    def remove() -> None:
        for block, old in zip(blocks, before):
            if old is None:
                block.__dict__.pop("forward", None)
            else:
                block.forward = old

    return remove


def has_compiler(device: str | None) -> bool:
    """Whether inductor can build kernels for ``device`` here: a C++ compiler on the CPU, Triton
    on CUDA. Not on an NPU: inductor has no Ascend backend (torch_npu's is torchair, not wired)."""
    device = device or "cpu"
    if device == "cpu":
        return any(shutil.which(c) for c in (os.environ.get("CXX", "g++"), "g++", "clang++"))
    if device == "cuda":
        import importlib.util

        return importlib.util.find_spec("triton") is not None
    return False


def applies(ctx) -> bool:
    if os.environ.get(COMPILE_ENV, "1") == "0" or ctx.compile is False:
        return False
    # rank groups run collectives inside the blocks; compiling through them is not tested here
    if (ctx.world_size or 1) > 1:
        return False
    return (ctx.family is None or ctx.family in DIT) and has_compiler(ctx.device)


def suggest(trial, ctx) -> dict:
    return {"compile.mode": trial.suggest_categorical("compile.mode", list(SEARCHED_MODES))}


def presets(ctx) -> list[dict]:
    # one trial early: refinement lays a compile that pays over the best cache setting
    return [{"compile.mode": "default"}]


# Methods with hooks on the attention modules inside the blocks: Dynamo traces the hooks'
# per-call state with the block and recompiles until its limit (run on demo-flux, where the
# limit was hit; the tiny test models have too few blocks to reach it). The diffusers
# adapters all count attention calls there, and PAB, FasterCache and TaylorSeer cache there.
COMPILE_CONFLICTS = ("cache.attention_cache", "cache.diffusers_faster", "cache.diffusers_first_block",
                     "cache.diffusers_mag", "cache.diffusers_pab", "cache.diffusers_taylorseer")


# installed first, before the hooks of every other section wrap the compiled forward;
# the profile still writes the section last
register_method(Method(
    section="compile", name="regional", config=CompileConfig, install=install, suggest=suggest,
    applies=applies, presets=presets, order=0,
    conflicts=COMPILE_CONFLICTS,
    show=lambda cfg: field_text(cfg, head=cfg.mode, skip="mode"), example=CompileConfig(mode="default"),
))
