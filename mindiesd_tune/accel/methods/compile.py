"""compile: regional torch.compile, each repeated block compiled once, which keeps compile time low."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import check
from ._common import DIT, family_in
from .registry import Method, field_text, register_method

COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass
class CompileConfig:
    """torch.compile of the transformer's repeated blocks (regional compilation).

    Attributes:
        mode: ``none`` (eager) or a torch.compile mode. Compiling once per block class
            keeps compile time low and composes with block caching.
        dynamic: let the compiled blocks accept new sequence lengths without recompiling.
    """

    mode: str = "none"
    dynamic: bool = False

    def validate(self) -> None:
        check(self.mode in COMPILE_MODES, "compile.mode", self.mode, f"must be one of {', '.join(COMPILE_MODES)}")


def install(model, cfg: CompileConfig, handle):
    """Compile the model's blocks in place; returns a function that restores eager execution."""
    if cfg.mode == "none":
        return lambda: None
    from ..blocks import transformer_blocks

    blocks = [b.module for b in transformer_blocks(model)]
    for block in blocks:
        block.compile(mode=None if cfg.mode == "default" else cfg.mode, dynamic=cfg.dynamic)

    def remove() -> None:
        for block in blocks:
            uncompile(block)

    return remove


def uncompile(module) -> None:
    """Undo ``module.compile()``: its calls run eagerly again.

    torch has no public inverse of ``nn.Module.compile``, which stores the compiled
    ``_call_impl`` in ``_compiled_call_impl``; this is the one place that relies on it, and
    tests/test_accel_compile.py checks the assumption against the installed torch.
    """
    if not hasattr(module, "_compiled_call_impl"):
        raise RuntimeError(f"{type(module).__name__}: this torch's nn.Module has no _compiled_call_impl to undo compile() with")
    module._compiled_call_impl = None


# last: it compiles the blocks with every other method's hooks already in place
register_method(Method(
    section="compile", name="regional", config=CompileConfig, install=install,
    applies=family_in(*DIT),  # the repeated blocks come from the transformer block table; UNets have none there
    show=lambda cfg: field_text(cfg, head=cfg.mode, skip="mode"), example=CompileConfig(mode="default"),
))
