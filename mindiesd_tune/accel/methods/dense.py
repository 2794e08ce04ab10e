"""sparse: none, dense attention on a chosen backend (the sparse section's neutral value)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..config import check
from ..registry import Method, register_method

# Names of the dense attention backends in ``kernels.attention``; whether one is installed
# is checked when the config is applied, not here.
ATTENTION_BACKENDS = ("sdpa", "flash_attn", "sage", "npu", "auto")


@dataclass
class NoSparse:
    """Dense attention: every query attends to every key.

    Attributes:
        backend: the attention kernel (``kernels.attention``): ``sdpa`` (torch, every
            device; what the models use unaccelerated), ``flash_attn`` or ``sage`` (CUDA,
            when installed), ``npu`` (torch_npu on Ascend) or ``auto`` (the fastest one
            installed for the device). Anything but ``sdpa`` swaps the attention processors.
    """

    method: ClassVar[str] = "none"
    backend: str = "sdpa"

    def validate(self) -> None:
        check(self.backend in ATTENTION_BACKENDS, "sparse.backend", self.backend, f"must be one of {', '.join(ATTENTION_BACKENDS)}")


def install(model, cfg, handle):
    """Route self-attention through ``cfg`` (block-sparse methods share this installer)."""
    from ..sparse import install_sparse

    return install_sparse(model, cfg, handle.sparse_counters, scheduler=getattr(handle.pipe, "scheduler", None))


register_method(Method(section="sparse", name="none", config=NoSparse, install=install))
