"""parallel: the multi-device mesh one pipeline call spans (config and installer in ``accel.parallel``).

The config imports without torch; the installer loads ``torch.distributed`` when a mesh above
one device is installed. The mesh needs one process per rank, all installing the same config:
under torchrun (``apply_profile`` in each rank joins the group torchrun describes) or the
rank groups ``mindiesd-tune run``, ``bench`` and ``tune --devices`` launch themselves.
"""

from __future__ import annotations

import os

from ..parallel.config import ParallelConfig, ParallelError
from ..registry import Method, register_method

# meshes a study tries right after the baseline, when offered: CFG parallel is exact and talks
# least (one gather per step), so it is the first multi-device point worth measuring
_PRESET_ORDER = ("cfg", "ulysses")


def launch_hint(n: int) -> str:
    return f"launch with torchrun --nproc-per-node {n}, or mindiesd-tune run which launches them"


def install(model, cfg: ParallelConfig, handle):
    """Install the mesh in this rank; the process group is torchrun's (joined here) or the caller's."""
    if cfg.is_neutral:
        return lambda: None
    if handle.pipe is None:
        raise ParallelError(f"parallel mesh {cfg.describe()}: needs the pipeline (its CFG passes and VAE), not the bare denoiser")
    import torch.distributed as dist

    from ..parallel import ensure_process_group, install_parallel

    n = cfg.world_size
    if dist.is_available() and dist.is_initialized():
        world = dist.get_world_size()
    else:
        world = int(os.environ["WORLD_SIZE"]) if "RANK" in os.environ and "WORLD_SIZE" in os.environ else 1
    if world != n:
        have = "one process" if world == 1 else f"{world} ranks"
        raise ParallelError(f"parallel mesh {cfg.describe()} needs {n} ranks, this job has {have}; {launch_hint(n)}")
    ensure_process_group(next(model.parameters()).device)
    # rank 0 of a group whose other ranks repeat its meshed installs and removals in step
    mirror = handle.mirror
    if mirror is None:
        return install_parallel(handle.pipe, cfg)
    mirror.installing(handle.config.to_dict())
    try:
        undo = install_parallel(handle.pipe, cfg)
    except BaseException:
        mirror.meshed = False  # the other ranks failed alike (the same checks) and hold nothing
        raise

    def remove() -> None:
        mirror.removing()
        undo()

    return remove


def _meshes(ctx) -> list[str]:
    return list(getattr(ctx, "meshes", None) or ())


def applies(ctx) -> bool:
    """Offered where the study's trials span several ranks and a mesh besides the single device can run."""
    return (getattr(ctx, "world_size", None) or 1) > 1 and len(_meshes(ctx)) > 1


def suggest(trial, ctx) -> dict:
    # one categorical over whole meshes, so that a mesh that cannot run is never sampled
    return {"parallel.mesh": trial.suggest_categorical("parallel.mesh", _meshes(ctx) or ["single"])}


def presets(ctx) -> list[dict]:
    out = []
    for axis in _PRESET_ORDER:
        name = f"{axis}{getattr(ctx, 'world_size', None) or 1}"
        if name in _meshes(ctx) and name != "single":
            out.append({"parallel.mesh": name})
    return out


def show(cfg: ParallelConfig) -> str:
    halo = f", vae_halo={cfg.vae_halo}" if cfg.vae > 1 else ""
    return f"{cfg.describe()} ({cfg.world_size} ranks{halo})"


register_method(Method(
    section="parallel", name="mesh", config=ParallelConfig, install=install, suggest=suggest, applies=applies,
    presets=presets, show=show,
    # no example: a mesh above one device runs only in a rank group (tests/test_parallel*.py).
    # Sparse attention with Ulysses/Ring and diffusers' threshold caches with a shared call are
    # refused when installed (install_parallel), in one line naming both: they depend on the
    # mesh's degrees, not on the entry, so they are not entry-level conflicts.
))

__all__ = ["ParallelConfig", "ParallelError", "install", "launch_hint"]
