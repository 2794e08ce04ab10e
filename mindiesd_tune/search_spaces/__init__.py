"""A study's search space, assembled from the method registry: Optuna trial -> AccelConfig.

Parameters are named ``section.field`` (``cache.method``, ``cache.threshold``) so a user
who knows Optuna reads them straight off ``study.trials_dataframe()``, and
``config_from_params(trial.params)`` rebuilds the config. The space is conditional: a
section that chooses among methods samples its selector (``cache.method``) over the entries
that apply to this model and workload, then the chosen entry's own parameters; a section
with one searched entry (``steps``) samples its parameters directly. Parameters exist only
where they mean something (a threshold only for a method that has one), so invalid points
are never sampled. A parameter name keeps one distribution kind in a study (Optuna requires
it), and categorical choices depend on the context only, never on the trial.

Which parameters and ranges a method has, and whether it is offered, is the method's own
entry (``suggest``, ``applies``, ``presets`` in ``accel.methods``). What the family alone
cannot know (block count, step count, token count, the schedulers the pipeline accepts, the
model's own per-step change statistics) comes in a ``SpaceContext``; without one, fixed
ranges are used. ``describe(pipe, generation, stats)`` builds it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..accel.config import AccelConfig


@dataclass(frozen=True)
class SpaceContext:
    """What a space needs to know about the model beyond its family (all optional).

    Attributes:
        n_blocks: transformer blocks in the chain (bounds Fn/Bn and attention block ranges).
        num_inference_steps: the workload's step count (bounds step reduction).
        schedulers: ``steps.scheduler`` choices the pipeline accepts.
        unet_branches: number of DeepCache branch ids the UNet allows.
        thresholds: the threshold range centred on the model's per-step change
            (``StepStatistics.threshold_range()`` of a baseline call); None: fixed ranges.
        methods: restrict ``cache.method`` to these.
        cache_mixin: whether the denoiser has diffusers' CacheMixin (the ``diffusers_*``
            adapters need it); None: unknown.
        sparse_tokens: image/video tokens one attention call sees on the sparse layout's grid;
            0: the denoiser has no sparse layout (sparse attention is not offered); None: unknown.
        family: the model's family; ``suggest`` and ``presets`` fill it in from their argument.
        device: the denoiser's device type (``cpu``, ``cuda``, ``npu``): the quant schemes and
            precisions offered are those it runs; None: unknown (taken as the CPU).
        dtype: the dtype the model is loaded in (``float32``), the precision a component runs
            at unless the search casts it; None: unknown (float32).
        mag_ratios: MagCache's per-step magnitude ratios of this model at this workload
            (``StepStatistics.mag_ratios``, diffusers' calibration formula), one per step; the
            ``diffusers_mag`` entry carries them into its config. None: not calibrated.
        step_change: per step, the block stack residual's change since the previous step
            (``StepStatistics.step_change()``); the ``schedule`` entry places its computed
            steps on it, and first-block presets derive their thresholds from it. None: not
            calibrated.
        residual_distance: the mean absolute difference between the block stack residuals of
            every pair of steps (``StepStatistics.residual_distance``), row by row (step k's
            row, column s at ``k * steps + s``); the ``schedule`` entry minimises the reuse
            error it measures. None: not measured (the entry falls back on ``step_change``).
        first_block_change: per step, the first block residual's change since the previous
            step (what a first-block threshold is compared with). None: not calibrated.
        world_size: ranks one trial spans (a rank group); None or 1: one process, no mesh.
        meshes: the meshes (``ParallelConfig.describe()`` names, ``single`` first) the rank
            group can run on this model and workload; ``parallel.mesh`` samples among them.
        compile: False: the study leaves torch.compile out (``tune --no-compile``); None: it is
            searched where inductor can build kernels for the device.
        batch_cfg: whether the pipeline makes two denoiser calls per step at this workload
            (true CFG) that ``steps.batch_cfg`` can run as one; None or False: not offered.
    """

    n_blocks: int | None = None
    num_inference_steps: int | None = None
    schedulers: tuple[str, ...] | None = None
    unet_branches: int | None = None
    thresholds: tuple[float, float] | None = None
    methods: tuple[str, ...] | None = None
    cache_mixin: bool | None = None
    sparse_tokens: int | None = None
    family: str | None = None
    device: str | None = None
    dtype: str | None = None
    mag_ratios: tuple[float, ...] | None = None
    step_change: tuple[float, ...] | None = None
    residual_distance: tuple[float, ...] | None = None
    first_block_change: tuple[float, ...] | None = None
    world_size: int | None = None
    meshes: tuple[str, ...] | None = None
    compile: bool | None = None
    batch_cfg: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain data, for a worker process to send and a study to record."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "SpaceContext":
        data = dict(data or {})
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in cls.__dataclass_fields__})


def _registry():
    from ..accel import methods
    from ..plugins import load_plugins

    load_plugins()
    return methods


def _context(family: str | None, context: SpaceContext | None) -> SpaceContext:
    ctx = context or SpaceContext()
    return dataclasses.replace(ctx, family=family) if family is not None else ctx


def searched_sections(family: str | None, context: SpaceContext | None = None) -> list[tuple[Any, list[Any]]]:
    """(section, the entries offered) of every section a study on this model samples.

    A section is searched when one of its entries has a ``suggest``; a union section offers
    its default and the entries that apply, a one-entry section is left out where its entry
    does not apply.
    """
    reg = _registry()
    ctx = _context(family, context)
    out = []
    for sec in reg.sections():
        searchable = [m for m in reg.methods(sec.name) if m.suggest is not None]
        if not searchable:
            continue
        if sec.key is None:
            if searchable[0].applies(ctx):
                out.append((sec, searchable))
        else:
            # the selector is sampled even where only its default applies, so the baseline
            # reads the same in every study
            default = reg.get_method(sec.name, sec.default)
            out.append((sec, [default] + [m for m in searchable if m.name != sec.default and m.applies(ctx)]))
    return out


def offered(section: str, family: str | None, context: SpaceContext | None = None) -> list[str]:
    """The names a study samples for ``section`` (its default first); [] when it is not searched."""
    for sec, entries in searched_sections(family, context):
        if sec.name == section:
            return [m.name for m in entries]
    return []


def neutral_params(family: str | None = None, context: SpaceContext | None = None) -> dict[str, Any]:
    """The baseline as trial parameters: every searched section at its neutral point."""
    ctx = _context(family, context)
    out: dict[str, Any] = {}
    for sec, entries in searched_sections(family, ctx):
        if sec.key is not None:
            out[f"{sec.name}.{sec.key}"] = sec.default
        # what the (default) entry's suggest asks for when every answer is its neutral value's
        if entries[0].suggest is not None:
            trial = _Answering(entries[0].neutral)
            entries[0].suggest(trial, ctx)
            out.update(trial.asked)
    return out


def __getattr__(name: str):
    # the baseline's parameters follow the registry, which plugins may extend after import
    if name == "NEUTRAL_PARAMS":
        return neutral_params()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _Answering:
    """An Optuna-trial stand-in answering each ``suggest_*`` with a config's field value.

    ``section.field.key`` reads a mapping field's key; a key the mapping leaves out answers
    None (``config_from_params`` leaves it out again).
    """

    def __init__(self, cfg):
        self.cfg, self.asked = cfg, {}

    def _answer(self, name, *args, **kwargs):
        field, _, key = name.partition(".")[2].partition(".")
        value = getattr(self.cfg, field)
        if key:
            value = value.get(key)
        self.asked[name] = value
        return value

    suggest_int = suggest_float = suggest_categorical = _answer


def suggest(trial, family: str, context: SpaceContext | None = None) -> AccelConfig:
    """Sample a config for ``family`` from an Optuna trial (define-by-run, conditional)."""
    ctx = _context(family, context)
    params: dict[str, Any] = {}
    chosen: list[Any] = []
    for sec, entries in searched_sections(family, ctx):
        if sec.key is None and any(entries[0].conflicts_with(c) for c in chosen):
            # a one-entry section (compile) that cannot join a method chosen before it stays off:
            # sampled, the point could only fail, and TPE learns nothing from a failed trial
            continue
        if sec.key is not None:
            name = trial.suggest_categorical(f"{sec.name}.{sec.key}", [m.name for m in entries])
            params[f"{sec.name}.{sec.key}"] = name
            entry = next(m for m in entries if m.name == name)
            if name != sec.default:
                chosen.append(entry)  # a method switched on; the default is what no method conflicts with
        else:
            entry = entries[0]
        if entry.suggest is not None:
            params.update(entry.suggest(trial, ctx))
    return config_from_params(params)


def config_from_params(params: dict[str, Any]) -> AccelConfig:
    """Flat ``section.field`` params (as Optuna stores them) -> a validated AccelConfig."""
    sections: dict[str, dict[str, Any]] = {}
    for key, value in params.items():
        section, _, name = key.partition(".")
        name, _, item = name.partition(".")
        if item:  # section.field.key: one key of a mapping field (quant.precision.denoiser); None leaves it out
            mapping = sections.setdefault(section, {}).setdefault(name, {})
            if value is not None:
                mapping[item] = value
        else:
            sections.setdefault(section, {})[name] = value
    cache = sections.get("cache", {})
    if cache.get("method") == "step_reduction":  # a study recorded before steps had their own section
        sections["steps"] = {k: v for k, v in cache.items() if k != "method"}
        sections["cache"] = {"method": "none"}
    parallel = sections.get("parallel", {})
    if "mesh" in parallel:  # one categorical over whole meshes, by name
        from ..accel.parallel.config import ParallelConfig

        sections["parallel"] = {**ParallelConfig.parse(parallel.pop("mesh")).to_dict(), **parallel}
    return AccelConfig.from_dict(sections)


def presets(family: str, context: SpaceContext | None = None) -> list[dict[str, Any]]:
    """The baseline, then every offered entry's known-good settings, the other sections neutral.

    A preset names every parameter ``suggest`` asks for, so none of it is sampled.
    """
    ctx = _context(family, context)
    base = neutral_params(family, ctx)
    out = [dict(base)]
    for _, entries in searched_sections(family, ctx):
        for entry in entries:
            for p in entry.presets(ctx):
                out.append({**base, **p})
    return out


def describe(pipe, generation: dict | None = None, stats=None, world_size: int = 1) -> SpaceContext:
    """The SpaceContext of a loaded pipeline (and, optionally, its step statistics).

    ``world_size`` > 1: trials run in a group of that many ranks, which runs the single device
    (the baseline) and the meshes using every rank that ``valid_meshes`` says can run here.
    """
    from ..accel import UnsupportedModelError, compatible_schedulers, find_denoiser, transformer_blocks
    from ..accel.blocks import unet_structure
    from ..accel.sparse import sparse_token_count

    model = find_denoiser(pipe)
    try:
        n_blocks = len(transformer_blocks(model))
    except UnsupportedModelError:
        n_blocks = None
    branches = None
    try:
        unet = unet_structure(model)
        branches = min(len(getattr(model, unet.down)), len(getattr(model, unet.up)) - 1)
    except UnsupportedModelError:
        pass
    steps = (generation or {}).get("num_inference_steps")
    thresholds = mag_ratios = step_change = first_change = distance = None
    if stats is not None and stats.values("first_block_residual_change").size:
        thresholds = tuple(float(x) for x in stats.threshold_range())
        first_change = tuple(stats.per_step("first_block_residual_change"))
    if stats is not None and stats.values("residual_change").size:
        mag_ratios = tuple(stats.mag_ratios)
        step_change = tuple(stats.step_change())
        if stats.residual_distance is not None and len(stats.residual_distance) == len(step_change):
            distance = tuple(float(x) for row in stats.residual_distance for x in row)
    tokens = sparse_token_count(pipe, generation)
    param = next(iter(model.parameters()), None)
    device = param.device.type if param is not None else None
    dtype = str(param.dtype).removeprefix("torch.") if param is not None and param.is_floating_point() else None
    meshes = None
    if world_size > 1:
        from ..accel.parallel import valid_meshes

        found = valid_meshes(pipe, generation, world_size, device or "cpu")
        meshes = tuple(m.describe() for m in found if m.world_size in (1, world_size))
    from ..accel.methods.steps import batches_cfg

    # offered where the calibration call ran an unconditional branch of its own (a workload
    # without a negative prompt runs none), on one device (a cfg mesh splits the two calls)
    two_calls = batches_cfg(pipe) and world_size <= 1 and (
        stats is None or any(r.get("branch") == "uncond" for r in stats.rows))
    return SpaceContext(n_blocks, steps, tuple(compatible_schedulers(pipe)), branches, thresholds, None,
                        cache_mixin=hasattr(model, "enable_cache"), sparse_tokens=tokens or 0, device=device, dtype=dtype,
                        mag_ratios=mag_ratios, step_change=step_change, residual_distance=distance,
                        first_block_change=first_change,
                        world_size=world_size, meshes=meshes, batch_cfg=two_calls)


__all__ = [
    "NEUTRAL_PARAMS",
    "SpaceContext",
    "config_from_params",
    "describe",
    "neutral_params",
    "offered",
    "presets",
    "searched_sections",
    "suggest",
]
