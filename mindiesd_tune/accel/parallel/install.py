"""Which meshes a pipeline can run, and installing one on it in each rank."""

from __future__ import annotations

import itertools
import logging
import math
from typing import Callable

import torch
import torch.distributed as dist

from ..cache import state as cache_state
from ..specs import find_spec, pipeline_spec
from .cfg import install_cfg_parallel
from .comm import CommCounter, all_gather, all_reduce_
from .config import AXES, ParallelConfig, ParallelError
from .context import RING_BACKENDS, TENSOR_DEVICES, install_context_parallel, install_tensor_parallel
from .mesh import Meshes, init_meshes
from .vae import install_vae_parallel

logger = logging.getLogger(__name__)


def supported(device) -> dict[str, bool]:
    """Axis -> whether it is offered on ``device``'s type.

    Ring needs an attention kernel returning the log-sum-exp (none on the CPU); diffusers
    shards weights for tensor parallel only on CUDA and XPU.
    """
    kind = torch.device(device).type
    return {"cfg": True, "ring": kind in RING_BACKENDS, "ulysses": True, "tensor": kind in TENSOR_DEVICES, "vae": True}


def _denoiser(pipe):
    model = getattr(pipe, "transformer", None)
    return model if model is not None else getattr(pipe, "unet", None)


def _plan_splits_text(plan) -> bool:
    return any(isinstance(p, dict) and "encoder_hidden_states" in p for p in (plan or {}).values())


def _latent_height(pipe, generation: dict) -> int | None:
    factor = getattr(pipe, "vae_scale_factor_spatial", None) or getattr(pipe, "vae_scale_factor", None)
    height = generation.get("height")
    if factor is None or height is None:
        return None
    return int(height) // int(factor)


def check(pipe, config: ParallelConfig, generation: dict | None = None, device=None, world_size: int | None = None) -> None:
    """Raise ``ParallelError`` (one line naming the degree and the shape) where ``config``
    cannot run ``pipe`` with these generation settings on ``world_size`` devices."""
    config.validate()
    generation = generation or {}
    if world_size is not None and config.world_size > world_size:
        raise ParallelError(f"parallel mesh {config.describe()} needs {config.world_size} devices, {world_size} available")
    if device is not None:
        offered = supported(device)
        for axis in AXES:
            if getattr(config, axis) > 1 and not offered[axis]:
                why = ("no attention kernel returns the log-sum-exp there" if axis == "ring"
                       else "diffusers shards weights only on " + ", ".join(TENSOR_DEVICES))
                raise ParallelError(f"parallel.{axis}={getattr(config, axis)} is not offered on {torch.device(device).type}: {why}")
    if config.cfg > 1:
        mode = pipeline_spec(pipe).cfg
        if mode == "none":
            raise ParallelError(f"parallel.cfg={config.cfg}: {type(pipe).__name__} runs no unconditional pass (guidance-distilled)")
    model = _denoiser(pipe)
    heads = getattr(getattr(model, "config", None), "num_attention_heads", None)
    for axis in ("ulysses", "tensor"):
        degree = getattr(config, axis)
        if degree > 1 and heads is not None and heads % degree:
            raise ParallelError(f"parallel.{axis}={degree}: {type(model).__name__} has {heads} attention heads, not divisible by {degree}")
    if config.sequence > 1:
        from ...compat.diffusers import cp_plan

        plan = cp_plan(model)
        if plan is None:
            raise ParallelError(f"parallel.ulysses={config.ulysses}, ring={config.ring}: {type(model).__name__} has no context-parallel plan in diffusers")
        spec = find_spec(model)
        if spec is not None and spec.sparse is not None and generation:  # the grid depends on the size asked for
            grid = tuple(spec.sparse.token_grid(pipe, generation))
            if math.prod(grid) % config.sequence:
                raise ParallelError(
                    f"parallel.ulysses={config.ulysses} x ring={config.ring}: the sequence of {math.prod(grid)} tokens "
                    f"(grid {'x'.join(map(str, grid))}) is not divisible by {config.sequence}")
        text = generation.get("max_sequence_length")
        if text and _plan_splits_text(plan) and int(text) % config.sequence:
            raise ParallelError(
                f"parallel.ulysses={config.ulysses} x ring={config.ring}: the text sequence of {text} tokens is not divisible by {config.sequence}")
    if config.vae > 1:
        rows = _latent_height(pipe, generation)
        if rows is not None and rows % config.vae:
            raise ParallelError(f"parallel.vae={config.vae}: the latent height {rows} is not divisible by {config.vae}")


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def valid_meshes(pipe, generation: dict | None, world_size: int, device="cpu") -> list[ParallelConfig]:
    """Every mesh whose product divides ``world_size`` and that can run ``pipe`` here, neutral first."""
    found = []
    for cfg, ring, ulysses, tensor in itertools.product((1, 2), *[_divisors(world_size)] * 3):
        product = cfg * ring * ulysses * tensor
        if world_size % product:
            continue
        for vae in _divisors(product):
            mesh = ParallelConfig(cfg=cfg, ring=ring, ulysses=ulysses, tensor=tensor, vae=vae)
            try:
                check(pipe, mesh, generation, device, world_size)
            except ParallelError:
                continue
            found.append(mesh)
    return sorted(found, key=lambda m: (m.world_size, m.describe() != "single", m.describe()))


def _uses_sparse_processors(model) -> bool:
    return any(type(getattr(m, "processor", None)).__module__.startswith("mindiesd_tune.accel.sparse") for m in model.modules())


# diffusers' own threshold caches measure their change inside their hooks, out of reach of
# the change reduction: ranks holding parts of one call would decide differently
_PER_RANK_THRESHOLD_HOOKS = {"fbc_leader_block_hook": "diffusers_first_block", "mag_cache_leader_block_hook": "diffusers_mag"}


def _per_rank_threshold_cache(model) -> str | None:
    from ...compat.diffusers import hook_names

    for m in model.modules():
        for name in hook_names(m):
            if name in _PER_RANK_THRESHOLD_HOOKS:
                return _PER_RANK_THRESHOLD_HOOKS[name]
    return None


def _change_reduction(meshes: Meshes, batched_cfg: bool, counter: CommCounter) -> Callable:
    """Sum the change sums over the sequence shards; gather the batch halves' per-sample values."""
    config = meshes.config
    sequence = meshes.sequence_mesh()._flatten().get_group() if config.sequence > 1 else None

    def reduce(diff: torch.Tensor, scale: torch.Tensor):
        both = torch.stack([diff, scale]).to(torch.float64)
        if sequence is not None:
            all_reduce_(both, dist.ReduceOp.SUM, sequence, counter)
        if batched_cfg and config.cfg > 1:
            both = torch.cat(all_gather(both, meshes.group("cfg"), counter), dim=1)
        return both[0], both[1]

    return reduce


class ParallelHandle:
    """What ``install_parallel`` returns: call it to take the mesh off again.

    Attributes:
        config: the mesh installed.
        meshes: its DeviceMeshes (None for the neutral mesh).
        comm: bytes this rank received through the hooks' collectives (diffusers' own
            context-parallel all-to-alls are not counted here).
    """

    def __init__(self, config: ParallelConfig, meshes: Meshes | None, undo: list[Callable[[], None]], comm: CommCounter):
        self.config, self.meshes, self._undo, self.comm = config, meshes, undo, comm

    def __call__(self) -> None:
        while self._undo:
            self._undo.pop()()


def install_parallel(pipe, config: ParallelConfig, mesh: Meshes | None = None) -> ParallelHandle:
    """Install the mesh ``config`` on ``pipe`` in this rank; returns the undo (a ``ParallelHandle``).

    Every rank of the group calls it with the same config, after ``torch.distributed`` is
    initialised (torchrun) or with ``mesh`` from ``init_meshes``. Install it after a cache
    method: the sequence split of diffusers' plan must wrap the cache's block hooks. Sparse
    attention conflicts with Ulysses and Ring (its processors do not do diffusers' all-to-all),
    and diffusers' threshold caches with any mesh whose ranks share one denoiser call. While
    such a mesh is installed, the cache's change metric is reduced over those ranks (a
    per-process setting: one meshed pipeline per rank process). The undo restores the
    single-device pipeline bit for bit.
    """
    config.validate()
    counter = CommCounter()
    if config.is_neutral:
        return ParallelHandle(config, None, [], counter)
    model = _denoiser(pipe)
    device = next(model.parameters()).device
    meshes = mesh or init_meshes(config, device)
    check(pipe, config, device=meshes.device, world_size=dist.get_world_size())
    if config.sequence > 1 and _uses_sparse_processors(model):
        raise ParallelError(f"parallel.ulysses={config.ulysses} x ring={config.ring}: conflicts with sparse attention "
                            "(its processors do not run diffusers' sequence all-to-all)")
    mode = pipeline_spec(pipe).cfg if config.cfg > 1 else None
    shared_calls = config.sequence > 1 or mode == "batched"  # ranks holding parts of one denoiser call
    conflict = _per_rank_threshold_cache(model) if shared_calls else None
    if conflict:
        raise ParallelError(f"parallel mesh {config.describe()}: conflicts with cache {conflict} "
                            "(its change threshold is measured on each rank's part of the call)")
    undo: list[Callable[[], None]] = []
    handle = ParallelHandle(config, meshes, undo, counter)
    try:
        if config.tensor > 1:
            undo.append(install_tensor_parallel(pipe, meshes))
            model = pipe.transformer
        if config.sequence > 1:
            undo.append(install_context_parallel(model, meshes))
        if mode is not None:
            undo.append(install_cfg_parallel(model, mode, meshes.group("cfg"), meshes.local_rank("cfg"), config.cfg, counter,
                                             pipe=pipe, probe=pipeline_spec(pipe).branch_probe,
                                             flag=pipeline_spec(pipe).branch_flag))
        if shared_calls:
            previous = cache_state.change_reduction
            cache_state.change_reduction = _change_reduction(meshes, mode == "batched", counter)
            undo.append(lambda: setattr(cache_state, "change_reduction", previous))
        if config.vae > 1:
            undo.append(install_vae_parallel(pipe.vae, meshes.group("vae"), meshes.local_rank("vae"), config.vae,
                                             config.vae_halo, counter))
    except BaseException:
        handle()
        raise
    return handle
