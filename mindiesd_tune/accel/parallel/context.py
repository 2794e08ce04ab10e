"""Ulysses / Ring (context parallel) and tensor parallel through diffusers' own machinery.

The denoiser classes whose diffusers 0.42.1 code carries a context-parallel plan
(``_cp_plan``): Flux, Flux 2, Wan (and ChronoEdit, built on it), Qwen-Image, LTX-Video,
LTX-2, Helios, MiniMax-H3 and Cosmos 3. A tensor-parallel plan (``_tp_plan``): Flux, Flux 2,
Qwen-Image and Qwen-Image 2.1.

``enable_parallelism`` itself is not called: it looks the rank's device up as
``rank % torch.accelerator.device_count()``, which divides by zero on the CPU, and it cannot
be taken off again. The same pieces are put together here (the config set up on our mesh,
the processors pointed at it, ``apply_context_parallel``) so that ``remove`` can undo them.
"""

from __future__ import annotations

import copy
import logging

import torch
import torch.distributed as dist

from .comm import settled
from .config import ParallelError
from .mesh import Meshes

logger = logging.getLogger(__name__)

# Ring attention merges partial results through the log-sum-exp; diffusers' native (SDPA)
# backend does not return it, the cuDNN one does (CUDA only).
RING_BACKENDS = {"cuda": "_native_cudnn"}
# diffusers refuses tensor parallel on other device types
TENSOR_DEVICES = ("cuda", "xpu")


def _attention_modules(model):
    from diffusers.models.attention import AttentionModuleMixin
    from diffusers.models.attention_processor import Attention

    return [m for m in model.modules() if isinstance(m, (Attention, AttentionModuleMixin))]


def wait_for_output(module, args, out):
    """Forward hook: diffusers leaves the output gather in flight; wait before the output leaves the denoiser."""
    return settled(out)


def install_context_parallel(model: torch.nn.Module, meshes: Meshes):
    """Split the sequence over the ``ring`` x ``ulysses`` sub-mesh; returns the remover."""
    from diffusers.hooks.context_parallel import apply_context_parallel, remove_context_parallel

    from ...compat import diffusers as compat

    DiffusersParallelConfig, ContextParallelConfig, _ = compat.parallel_config_classes()
    cfg = meshes.config
    plan = compat.cp_plan(model)
    if plan is None:
        raise ParallelError(f"parallel.ulysses/ring: {type(model).__name__} has no context-parallel plan in diffusers")
    backend_set = False
    if cfg.ring > 1:
        backend = RING_BACKENDS.get(meshes.device.type)
        if backend is None:
            raise ParallelError(f"parallel.ring={cfg.ring}: no attention kernel returns the log-sum-exp on {meshes.device.type}")
        model.set_attention_backend(backend)
        backend_set = True
    mesh = meshes.sequence_mesh()
    cp = ContextParallelConfig(ring_degree=cfg.ring, ulysses_degree=cfg.ulysses, mesh=mesh)
    config = DiffusersParallelConfig(context_parallel_config=cp)
    config.setup(dist.get_rank(), dist.get_world_size(), meshes.device, mesh=mesh)
    processors = [m.processor for m in _attention_modules(model) if compat.takes_parallel_config(m.processor)]
    for p in processors:
        compat.set_parallel_config(p, config)
    previous = compat.parallel_config(model)
    compat.set_parallel_config(model, config)
    apply_context_parallel(model, cp, plan)
    waited = model.register_forward_hook(wait_for_output)

    def remove() -> None:
        waited.remove()
        remove_context_parallel(model, plan)
        for p in processors:
            compat.set_parallel_config(p, None)
        compat.set_parallel_config(model, previous)
        if backend_set:
            model.reset_attention_backend()

    return remove


def install_tensor_parallel(pipe, meshes: Meshes):
    """Shard the transformer's weights over the ``tensor`` axis (diffusers' ``_tp_plan``).

    Sharding rewrites the parameters in place and cannot be taken off, so it runs on a copy
    that replaces ``pipe.transformer``; the original waits on the CPU and comes back as it was.
    """
    from diffusers.hooks.tensor_parallel import apply_tensor_parallel, resolve_tp_shard_specs

    from ...compat import diffusers as compat

    DiffusersParallelConfig, _, TensorParallelConfig = compat.parallel_config_classes()

    original = pipe.transformer
    degree = meshes.config.tensor
    if meshes.device.type not in TENSOR_DEVICES:
        raise ParallelError(f"parallel.tensor={degree}: diffusers shards weights only on {', '.join(TENSOR_DEVICES)}, not {meshes.device.type}")
    if compat.tp_plan(original) is None:
        raise ParallelError(f"parallel.tensor={degree}: {type(original).__name__} has no tensor-parallel plan in diffusers")
    mesh = meshes.denoiser["tensor"]
    tp = TensorParallelConfig(mesh=mesh)
    sharded = copy.deepcopy(original)
    device = next(original.parameters()).device
    original.to("cpu")
    config = DiffusersParallelConfig(tensor_parallel_config=tp)
    config.setup(dist.get_rank(), dist.get_world_size(), meshes.device, mesh=mesh)
    plan = compat.tp_plan(sharded)
    resolve_tp_shard_specs(sharded, plan, degree)
    compat.set_parallel_config(sharded, config)
    apply_tensor_parallel(sharded, tp, plan)
    pipe.transformer = sharded

    def remove() -> None:
        pipe.transformer = original.to(device)

    return remove
