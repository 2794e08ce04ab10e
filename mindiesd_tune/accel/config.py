"""AccelConfig: the declarative description of every acceleration knob, with YAML round-trip.

Each section is a dataclass whose fields are documented in terms of speed and quality.
Sections that choose among methods (``cache``, ``sparse``) are tagged unions: the ``method``
key selects the dataclass through a registry, so adding a method adds one dataclass and
one handler, nothing else. A section left out means "off"; unknown keys are an error.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

import yaml


class ConfigError(ValueError):
    """A config field has a bad name or value. The message names the field."""


# --------------------------------------------------------------------------- cache


_CACHE_METHODS: dict[str, type] = {}


def register_cache_method(cls):
    """Register a cache config dataclass under its ``method`` name."""
    _CACHE_METHODS[cls.method] = cls
    return cls


def cache_methods() -> list[str]:
    return sorted(_CACHE_METHODS)


@register_cache_method
@dataclass
class NoCache:
    """No caching: every block is computed at every step."""

    method: ClassVar[str] = "none"

    def validate(self) -> None:
        pass


@register_cache_method
@dataclass
class FirstBlockCacheConfig:
    """First-block residual cache (a.k.a. step cache; cf. diffusers FirstBlockCache, cache-dit DBCache F1B0).

    At every denoising step the first transformer block is computed. Its residual (output
    minus input) is compared with the residual at the last fully computed step; when the
    relative L1 change is below ``threshold``, the remaining blocks are skipped and their
    cached residual is added instead. Larger thresholds skip more steps: faster, less
    faithful. State is kept separately for each CFG branch and reset at every pipeline call.

    Attributes:
        threshold: relative L1 change of the first block's residual under which the rest of
            the network is skipped. 0 never skips (the baseline output, bit for bit).
        warmup_steps: the first steps of every call are always computed; early steps shape
            the image layout, so caching them costs the most quality.
        max_cached_steps: at most this many steps per call reuse the cache (-1: no limit).
        max_consecutive_cached_steps: at most this many cached steps in a row before a full
            computation refreshes the cache (-1: no limit). Bounds error accumulation.
        accumulate: compare the *sum* of relative changes since the last computed step with
            the threshold (TeaCache / cache-dit style) rather than the change alone, so a
            slow drift still triggers a refresh.
    """

    method: ClassVar[str] = "first_block"
    threshold: float = 0.0
    warmup_steps: int = 0
    max_cached_steps: int = -1
    max_consecutive_cached_steps: int = -1
    accumulate: bool = False

    def validate(self) -> None:
        _check(self.threshold >= 0, "cache.threshold", self.threshold, "must be >= 0")
        _check(self.warmup_steps >= 0, "cache.warmup_steps", self.warmup_steps, "must be >= 0")
        _check(self.max_cached_steps >= -1, "cache.max_cached_steps", self.max_cached_steps, "must be >= -1")
        _check(
            self.max_consecutive_cached_steps >= -1 and self.max_consecutive_cached_steps != 0,
            "cache.max_consecutive_cached_steps",
            self.max_consecutive_cached_steps,
            "must be -1 (no limit) or >= 1",
        )


def _check_steps(prefix: str, step_start: int, step_end: int, step_interval: int) -> None:
    _check(step_start >= 0, f"{prefix}.step_start", step_start, "must be >= 0")
    _check(step_end == -1 or step_end > step_start, f"{prefix}.step_end", step_end, "must be -1 (the last step) or > step_start")
    _check(step_interval >= 1, f"{prefix}.step_interval", step_interval, "must be >= 1")


def _check_blocks(prefix: str, block_start: int, block_end: int, lowest_start: int = 0) -> None:
    _check(block_start >= lowest_start, f"{prefix}.block_start", block_start, f"must be >= {lowest_start}")
    _check(block_end == -1 or block_end > block_start, f"{prefix}.block_end", block_end, "must be -1 (the last block) or > block_start")


@register_cache_method
@dataclass
class BlockCacheConfig:
    """Block cache (MindIE SD's dit_block_cache, cache-dit's DBCache Fn/Bn).

    The blocks before ``block_start`` (Fn) and from ``block_end`` on (Bn) are computed at
    every step; on a cached step the blocks in between are skipped and their residual (their
    output minus their input, from the last computed step) is added instead. Between
    ``step_start`` and ``step_end`` a full step is computed every ``step_interval`` steps;
    the steps in between reuse the cache, unconditionally when ``threshold`` is 0 (MindIE SD's
    schedule), or only while the relative L1 change of the Fn blocks' residual since the
    last computed step stays below ``threshold`` (DBCache). More skipped blocks and longer
    intervals are faster and less faithful; larger Fn/Bn cost speed and buy quality.

    Attributes:
        block_start: Fn, the number of leading blocks always computed (>= 1 with a threshold,
            whose signal they produce).
        block_end: first trailing block always computed; -1 means none (Bn = 0).
        step_start: steps before it are always computed (warm-up).
        step_end: steps from it on are always computed; -1: caching runs to the last step.
        step_interval: a full step at least every this many steps. 1 never caches (the
            baseline output, bit for bit).
        threshold: 0 caches on the schedule alone; > 0 also requires the Fn residual's
            relative L1 change to be below it.
    """

    method: ClassVar[str] = "block_cache"
    block_start: int = 1
    block_end: int = -1
    step_start: int = 0
    step_end: int = -1
    step_interval: int = 1
    threshold: float = 0.0

    def validate(self) -> None:
        _check_blocks("cache", self.block_start, self.block_end, lowest_start=1 if self.threshold > 0 else 0)
        _check_steps("cache", self.step_start, self.step_end, self.step_interval)
        _check(self.threshold >= 0, "cache.threshold", self.threshold, "must be >= 0")


@register_cache_method
@dataclass
class TaylorSeerConfig:
    """TaylorSeer: on cached steps, extrapolate the skipped blocks' residual with a Taylor series.

    Like the block cache on a schedule (the blocks between ``block_start`` and ``block_end``
    are skipped on the steps between full ones), but instead of reusing the residual of the
    last computed step it predicts the current one from finite differences over the last
    computed steps: first order follows the trend, second order its curvature. Higher order
    tracks fast-changing features better but amplifies noise on long intervals.

    Attributes:
        order: 1 or 2, the Taylor order (needs order + 1 computed steps; before that the
            plain residual is reused).
        step_interval: a full step every this many steps. 1 never caches (baseline, bit for bit).
        step_start: steps before it are always computed (warm-up; also fills the differences).
        step_end: steps from it on are always computed; -1: to the last step.
        block_start: leading blocks always computed (0: the whole stack is predicted).
        block_end: first trailing block always computed; -1: none.
    """

    method: ClassVar[str] = "taylorseer"
    order: int = 1
    step_interval: int = 1
    step_start: int = 2
    step_end: int = -1
    block_start: int = 0
    block_end: int = -1

    def validate(self) -> None:
        _check(self.order in (1, 2), "cache.order", self.order, "must be 1 or 2")
        _check_steps("cache", self.step_start, self.step_end, self.step_interval)
        _check_blocks("cache", self.block_start, self.block_end)


@register_cache_method
@dataclass
class AttentionCacheConfig:
    """Attention cache (MindIE SD's attention_cache): reuse self-attention outputs between steps.

    In the blocks from ``block_start`` to ``block_end``, the self-attention output is
    recomputed every ``step_interval`` steps between ``step_start`` and ``step_end`` and
    reused on the steps in between; the rest of each block (norms, MLP, cross-attention)
    runs every step. Attention dominates the cost at long sequence lengths (video), where
    this pays most; the error is smaller than block caching's since the MLP stays live.

    Attributes:
        step_interval: recompute attention every this many steps. 1 never reuses (baseline).
        step_start: steps before it always recompute (warm-up).
        step_end: steps from it on always recompute; -1: to the last step.
        block_start: first block whose attention is cached.
        block_end: first block after the cached range; -1: to the last block.
    """

    method: ClassVar[str] = "attention_cache"
    step_interval: int = 1
    step_start: int = 0
    step_end: int = -1
    block_start: int = 0
    block_end: int = -1

    def validate(self) -> None:
        _check_steps("cache", self.step_start, self.step_end, self.step_interval)
        _check_blocks("cache", self.block_start, self.block_end)


@register_cache_method
@dataclass
class DeepCacheConfig:
    """DeepCache for UNets: reuse the deep features, recompute the shallow branch every step.

    On a full step the whole UNet runs and the output of the up block that feeds the
    branch is kept. On the steps in between, only the down blocks up to ``branch`` and the
    matching up blocks run (plus the input and output layers); the deeper down blocks, the
    mid block and the deeper up blocks are skipped and the kept feature stands in for them.
    Granularity is whole down/up blocks (DeepCache's paper also splits inside a block).

    Attributes:
        cache_interval: a full step every this many steps. 1 never caches (baseline).
        branch: how many down/up block pairs stay live, minus one (0: only the outermost;
            larger is slower and more faithful).
        step_start: steps before it are always full (warm-up).
        step_end: steps from it on are always full; -1: to the last step.
    """

    method: ClassVar[str] = "deepcache"
    cache_interval: int = 1
    branch: int = 0
    step_start: int = 0
    step_end: int = -1

    def validate(self) -> None:
        _check(self.branch >= 0, "cache.branch", self.branch, "must be >= 0")
        _check_steps("cache", self.step_start, self.step_end, self.cache_interval)


STEP_SCHEDULERS = ("default", "euler", "dpmsolver++", "unipc")


@register_cache_method
@dataclass
class StepReductionConfig:
    """Step reduction: fewer denoising steps, optionally with a higher-order scheduler.

    The cheapest lever of all (latency scales with the step count) and the coarsest: every
    step removed is a whole network evaluation. Higher-order multistep solvers (DPM-Solver++,
    UniPC) keep more quality at low step counts than Euler. ``apply`` swaps the scheduler
    (``remove`` restores the original object) and reports the step count the caller must pass
    in ``handle.call_kwargs``.

    Attributes:
        num_inference_steps: steps per call; 0 keeps the caller's own (neutral).
        scheduler: ``default`` keeps the pipeline's scheduler (neutral); ``euler``,
            ``dpmsolver++`` or ``unipc`` build one of that kind from the pipeline's scheduler
            config (flow-matching variants for flow-matching pipelines). Which kinds a pipeline
            accepts: ``accel.cache.compatible_schedulers(pipe)``.
    """

    method: ClassVar[str] = "step_reduction"
    num_inference_steps: int = 0
    scheduler: str = "default"

    def validate(self) -> None:
        _check(self.num_inference_steps >= 0, "cache.num_inference_steps", self.num_inference_steps, "must be >= 0")
        _check(self.scheduler in STEP_SCHEDULERS, "cache.scheduler", self.scheduler, f"must be one of {', '.join(STEP_SCHEDULERS)}")


@register_cache_method
@dataclass
class DiffusersFirstBlockCacheConfig:
    """diffusers' own FirstBlockCache (``transformer.enable_cache(FirstBlockCacheConfig(...))``).

    Here so a study can compare it with ours under the same measurement.

    Attributes:
        threshold: relative change of the first block's residual under which the remaining
            blocks are skipped (diffusers' default 0.05). 0 never skips.
    """

    method: ClassVar[str] = "diffusers_first_block"
    threshold: float = 0.0

    def validate(self) -> None:
        _check(self.threshold >= 0, "cache.threshold", self.threshold, "must be >= 0")


@register_cache_method
@dataclass
class DiffusersTaylorSeerConfig:
    """diffusers' own TaylorSeerCache (attention outputs predicted by a Taylor series).

    Attributes:
        cache_interval: full computation every this many steps (1: never predicts).
        disable_cache_before_step: warm-up steps that always compute.
        max_order: Taylor order (1 or 2).
    """

    method: ClassVar[str] = "diffusers_taylorseer"
    cache_interval: int = 1
    disable_cache_before_step: int = 3
    max_order: int = 1

    def validate(self) -> None:
        _check(self.cache_interval >= 1, "cache.cache_interval", self.cache_interval, "must be >= 1")
        _check(self.disable_cache_before_step >= 0, "cache.disable_cache_before_step", self.disable_cache_before_step, "must be >= 0")
        _check(self.max_order in (1, 2), "cache.max_order", self.max_order, "must be 1 or 2")


@register_cache_method
@dataclass
class DiffusersMagCacheConfig:
    """diffusers' own MagCache: skip while the accumulated magnitude-ratio error stays small.

    Attributes:
        threshold: accumulated error under which blocks are skipped (0: never skips).
        max_skip_steps: most consecutive skipped steps.
        retention_ratio: the leading fraction of steps that is never skipped.
        mag_ratios: the model's per-step magnitude ratios; ``accel.cache.step_statistics``
            measures them (``stats.mag_ratios``). Empty: all ones (no calibration).
    """

    method: ClassVar[str] = "diffusers_mag"
    threshold: float = 0.0
    max_skip_steps: int = 3
    retention_ratio: float = 0.2
    mag_ratios: list = field(default_factory=list)

    def validate(self) -> None:
        _check(self.threshold >= 0, "cache.threshold", self.threshold, "must be >= 0")
        _check(self.max_skip_steps >= 1, "cache.max_skip_steps", self.max_skip_steps, "must be >= 1")
        _check(0 <= self.retention_ratio <= 1, "cache.retention_ratio", self.retention_ratio, "must be in [0, 1]")
        _check(all(isinstance(r, (int, float)) and r > 0 for r in self.mag_ratios), "cache.mag_ratios", self.mag_ratios, "must be positive numbers")


@register_cache_method
@dataclass
class DiffusersFasterCacheConfig:
    """diffusers' own FasterCache (attention reuse plus unconditional-branch skipping).

    Attributes:
        spatial_attention_block_skip_range: reuse spatial attention for this many steps (1: never).
        timestep_skip_end: attention is reused only below this timestep (0-1000 scale).
        unconditional_batch_skip_range: reuse the unconditional branch's output for this many
            steps (1: never). Needs a pipeline that batches CFG.
    """

    method: ClassVar[str] = "diffusers_faster"
    spatial_attention_block_skip_range: int = 1
    timestep_skip_end: int = 681
    unconditional_batch_skip_range: int = 1

    def validate(self) -> None:
        _check(self.spatial_attention_block_skip_range >= 1, "cache.spatial_attention_block_skip_range", self.spatial_attention_block_skip_range, "must be >= 1")
        _check(self.unconditional_batch_skip_range >= 1, "cache.unconditional_batch_skip_range", self.unconditional_batch_skip_range, "must be >= 1")
        _check(0 <= self.timestep_skip_end <= 1000, "cache.timestep_skip_end", self.timestep_skip_end, "must be in [0, 1000]")


@register_cache_method
@dataclass
class DiffusersPyramidAttentionBroadcastConfig:
    """diffusers' own Pyramid Attention Broadcast (reuse attention outputs inside a timestep window).

    Attributes:
        spatial_attention_block_skip_range: recompute spatial attention every this many calls (1: always).
        timestep_skip_start: reuse only for timesteps above this (0-1000 scale).
        timestep_skip_end: and below this.
    """

    method: ClassVar[str] = "diffusers_pab"
    spatial_attention_block_skip_range: int = 1
    timestep_skip_start: int = 100
    timestep_skip_end: int = 800

    def validate(self) -> None:
        _check(self.spatial_attention_block_skip_range >= 1, "cache.spatial_attention_block_skip_range", self.spatial_attention_block_skip_range, "must be >= 1")
        _check(0 <= self.timestep_skip_start < self.timestep_skip_end <= 1000, "cache.timestep_skip_start", self.timestep_skip_start, "must satisfy 0 <= start < end <= 1000")


# --------------------------------------------------------------------------- sparse


_SPARSE_METHODS: dict[str, type] = {}

# Names of the dense attention backends and block-sparse kernels in ``kernels.attention``;
# whether one is installed is checked when the config is applied, not here.
ATTENTION_BACKENDS = ("sdpa", "flash_attn", "sage", "npu", "auto")
SPARSE_KERNELS = ("auto", "gather", "flex", "masked")


def register_sparse_method(cls):
    """Register a sparse-attention config dataclass under its ``method`` name."""
    _SPARSE_METHODS[cls.method] = cls
    return cls


def sparse_methods() -> list[str]:
    return sorted(_SPARSE_METHODS)


@register_sparse_method
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
        _check(self.backend in ATTENTION_BACKENDS, "sparse.backend", self.backend, f"must be one of {', '.join(ATTENTION_BACKENDS)}")


@dataclass
class BlockSparseConfig(NoSparse):
    """What every block-sparse method shares: the ratio, the blocks, and when to stay dense.

    Tokens of the image or video grid are grouped into blocks of ``block_size`` tokens
    (tiles of the grid where the grid allows it). Every query block attends to the same
    number of key blocks, ``round((1 - ratio) * blocks)``, so the work falls with the
    ratio; the methods differ only in which key blocks they keep. Text tokens (Flux, SD3
    joint attention) always attend and are attended to densely; cross-attention is never
    sparsified.

    Attributes:
        ratio: the fraction of key blocks each query block skips. 0 is dense attention (the
            baseline output, bit for bit); MindIE SD suggests about 0.6 for images and 0.8
            for video as starting points. The ideal speed-up of attention is 1 / (1 - ratio).
        block_size: tokens per block. Larger blocks run faster kernels but choose coarser
            masks; 128 matches MindIE SD and the GPU kernels.
        keep_sink: every query block keeps the first key block (an attention sink); it
            counts towards the kept blocks.
        keep_recent: every query block keeps its own key block (the diagonal).
        dense_steps: the first ``dense_steps`` fraction of denoising steps attend densely;
            early steps lay out the image, so sparsifying them costs the most quality.
        dense_layers: attention layers (indices in forward order; negative from the end)
            that always attend densely. A comma-separated string ("0,-1") is accepted.
        query_group: consecutive query blocks (in block order) that share one set of key
            blocks, as in Sliding Tile Attention. Above 1 the gather kernel copies each set
            once per group and runs longer dense calls (faster, most of all on CPUs); the
            mask gets coarser on the query side. Ignored (1) unless it divides the block
            count and is at most the number of kept blocks.
        kernel: the block-sparse kernel: ``gather`` (kept blocks copied into a dense batch,
            then the dense backend; fastest here), ``flex`` (compiled FlexAttention),
            ``masked`` (the reference, no faster than dense) or ``auto`` (gather).
        backend: the dense kernel for dense layers, dense steps and gathered blocks.
    """

    ratio: float = 0.0
    block_size: int = 128
    keep_sink: bool = True
    keep_recent: bool = True
    dense_steps: float = 0.0
    dense_layers: list = field(default_factory=list)
    query_group: int = 1
    kernel: str = "auto"

    def __post_init__(self) -> None:
        if isinstance(self.dense_layers, str):
            text = self.dense_layers.strip()
            try:
                self.dense_layers = [int(x) for x in text.split(",")] if text else []
            except ValueError:
                raise ConfigError(f"sparse.dense_layers: {self.dense_layers!r} must be integers separated by commas") from None
        elif isinstance(self.dense_layers, tuple):
            self.dense_layers = list(self.dense_layers)

    def validate(self) -> None:
        super().validate()
        _check(0.0 <= self.ratio < 1.0, "sparse.ratio", self.ratio, "must be in [0, 1)")
        for name in ("block_size", "query_group"):
            v = getattr(self, name)
            _check(isinstance(v, int) and v >= 1, f"sparse.{name}", v, "must be an integer >= 1")
        _check(0.0 <= self.dense_steps <= 1.0, "sparse.dense_steps", self.dense_steps, "must be in [0, 1]")
        _check(
            isinstance(self.dense_layers, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in self.dense_layers),
            "sparse.dense_layers",
            self.dense_layers,
            "must be a list of layer indices",
        )
        _check(self.kernel in SPARSE_KERNELS, "sparse.kernel", self.kernel, f"must be one of {', '.join(SPARSE_KERNELS)}")


@register_sparse_method
@dataclass
class LocalWindowConfig(BlockSparseConfig):
    """Local windows over the token grid (sliding-window / neighbourhood attention).

    Every query block keeps the key blocks nearest to it on the grid: a 2D neighbourhood
    for images, a 3D one (frames x height x width) for video. Windows are shifted at the
    grid's edges rather than cut, so every block keeps the same count. No data-dependent
    work: the mask is built once per grid and reused.
    """

    method: ClassVar[str] = "local"


@register_sparse_method
@dataclass
class TopKSparseConfig(BlockSparseConfig):
    """Dynamic top-k blocks (SpargeAttn / MInference style).

    At every call the queries and keys are mean-pooled per block; each query block keeps
    the key blocks with the highest pooled q.k scores (``1 - ratio`` of them), per head.
    Follows the content, at the cost of one small (blocks x blocks) score matrix per call.
    """

    method: ClassVar[str] = "topk"


@register_sparse_method
@dataclass
class HeadAdaptiveSparseConfig(BlockSparseConfig):
    """Head-adaptive sparsity (RainFusion-like).

    A cheap probe at the first sparse step of every call attends ``probe_queries`` sampled
    queries to all keys and classifies each head by where its attention mass falls:
    *spatial* (within the same frame / near on the image), *temporal* (the same place in
    other frames; video only) or *full*. Spatial and temporal heads keep ``1 - ratio`` of
    the key blocks in their pattern; full heads stay dense, so the realised density is
    at least ``1 - ratio`` (reported in the handle's stats).

    Attributes:
        probe_queries: query tokens sampled per head for the probe; more is a surer
            classification for a slightly larger one-off cost.
        recall: a head takes a sparse pattern only if that pattern keeps at least this
            fraction of the probed attention mass; otherwise it stays dense.
    """

    method: ClassVar[str] = "adaptive"
    probe_queries: int = 64
    recall: float = 0.8

    def validate(self) -> None:
        super().validate()
        _check(self.probe_queries >= 1, "sparse.probe_queries", self.probe_queries, "must be >= 1")
        _check(0.0 <= self.recall <= 1.0, "sparse.recall", self.recall, "must be in [0, 1]")


SparseConfig = NoSparse  # the section's neutral value, under the name the section had first


# --------------------------------------------------------------------------- other sections


@dataclass
class QuantConfig:
    """Weight/activation quantisation. Only ``scheme: none`` exists so far."""

    scheme: str = "none"

    def validate(self) -> None:
        _check(self.scheme == "none", "quant.scheme", self.scheme, "only 'none' is available")


@dataclass
class ParallelConfig:
    """Multi-device mesh degrees; their product is the number of devices one call uses.

    Attributes:
        cfg: split the conditional and unconditional CFG passes over 2 devices (1 or 2).
        ulysses: Ulysses sequence parallelism (all-to-all over attention heads).
        ring: Ring attention sequence parallelism (P2P over key/value blocks).
    """

    cfg: int = 1
    ulysses: int = 1
    ring: int = 1

    @property
    def world_size(self) -> int:
        return self.cfg * self.ulysses * self.ring

    def validate(self) -> None:
        for name in ("cfg", "ulysses", "ring"):
            v = getattr(self, name)
            _check(isinstance(v, int) and v >= 1, f"parallel.{name}", v, "must be an integer >= 1")
        _check(self.cfg in (1, 2), "parallel.cfg", self.cfg, "must be 1 or 2")
        _check(self.world_size == 1, "parallel", dataclasses.asdict(self), "multi-device meshes are not available yet; use degree 1")


_COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


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
        _check(self.mode in _COMPILE_MODES, "compile.mode", self.mode, f"must be one of {', '.join(_COMPILE_MODES)}")


# --------------------------------------------------------------------------- the whole config


@dataclass
class AccelConfig:
    """Every acceleration knob for one pipeline. The default is no acceleration at all."""

    cache: Any = field(default_factory=NoCache)
    sparse: Any = field(default_factory=NoSparse)
    quant: QuantConfig = field(default_factory=QuantConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    compile: CompileConfig = field(default_factory=CompileConfig)

    def validate(self) -> "AccelConfig":
        for section in (self.cache, self.sparse, self.quant, self.parallel, self.compile):
            section.validate()
        return self

    @property
    def is_neutral(self) -> bool:
        return self == AccelConfig()

    # ---- dict / YAML
    def to_dict(self) -> dict[str, Any]:
        cache = {"method": self.cache.method, **dataclasses.asdict(self.cache)}
        return {
            "cache": cache,
            "sparse": {"method": self.sparse.method, **dataclasses.asdict(self.sparse)},
            "quant": dataclasses.asdict(self.quant),
            "parallel": dataclasses.asdict(self.parallel),
            "compile": dataclasses.asdict(self.compile),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, where: str = "accel") -> "AccelConfig":
        data = {} if data is None else data
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a mapping, got {data!r}")
        known = {"cache", "sparse", "quant", "parallel", "compile"}
        for key in data:
            if key not in known:
                raise ConfigError(f"{where}.{key}: unknown section (known: {', '.join(sorted(known))})")
        cfg = cls(
            cache=_cache_from_dict(data.get("cache"), f"{where}.cache"),
            sparse=_sparse_from_dict(data.get("sparse"), f"{where}.sparse"),
            quant=_section(QuantConfig, data.get("quant"), f"{where}.quant"),
            parallel=_section(ParallelConfig, data.get("parallel"), f"{where}.parallel"),
            compile=_section(CompileConfig, data.get("compile"), f"{where}.compile"),
        )
        return cfg.validate()

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str) -> "AccelConfig":
        return cls.from_dict(yaml.safe_load(text))


def _check(ok: bool, name: str, value: Any, why: str) -> None:
    if not ok:
        raise ConfigError(f"{name}: {value!r} {why}")


def _section(kind: type, data: Any, where: str):
    if data is None:
        return kind()
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {data!r}")
    names = {f.name for f in dataclasses.fields(kind)}
    for key in data:
        if key not in names and key != "method":
            raise ConfigError(f"{where}.{key}: unknown field (known: {', '.join(sorted(names)) or 'none'})")
    kwargs = {k: v for k, v in data.items() if k in names}
    for f in dataclasses.fields(kind):
        if f.name in kwargs:
            kwargs[f.name] = _coerce(kwargs[f.name], f, f"{where}.{f.name}")
    return kind(**kwargs)


def _coerce(value: Any, f: dataclasses.Field, where: str) -> Any:
    default = f.default if f.default is not dataclasses.MISSING else None
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: {value!r} must be true or false")
    elif isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: {value!r} must be an integer")
    elif isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: {value!r} must be a number")
        value = float(value)
    elif isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigError(f"{where}: {value!r} must be a string")
    return value


def _cache_from_dict(data: Any, where: str):
    if data is None:
        return NoCache()
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {data!r}")
    method = data.get("method", "none")
    if method not in _CACHE_METHODS:
        raise ConfigError(f"{where}.method: {method!r} is not a cache method (known: {', '.join(cache_methods())})")
    return _section(_CACHE_METHODS[method], data, where)


def _sparse_from_dict(data: Any, where: str):
    if data is None:
        return NoSparse()
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {data!r}")
    method = data.get("method", "none")
    if method not in _SPARSE_METHODS:
        raise ConfigError(f"{where}.method: {method!r} is not a sparse method (known: {', '.join(sparse_methods())})")
    return _section(_SPARSE_METHODS[method], data, where)
