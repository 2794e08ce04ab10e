"""Per-step statistics of one baseline call, the priors for cache thresholds.

Thresholds are model specific: a residual change of 0.05 is large for one model and never
reached by another. ``step_statistics`` runs the pipeline once, unaccelerated, and reports
per step and CFG branch how much the first block's output and residual and the model output
changed since the previous step (relative L1, the measure the threshold methods use), with
percentiles as ``cache_dit.summary(details=True)`` prints them, and MagCache's magnitude ratios.
It also records, for every pair of steps, how far apart the block stack's residuals are: the
error a calibrated schedule makes when it reuses one step's residual on another.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..attached import active_handle
from ..blocks import UnsupportedModelError, find_denoiser, transformer_blocks
from .residual import relative_l1
from .state import BranchStates, CacheHook, bypass_hooks, install_hooks

HOOK_NAME = "mindiesd_step_statistics"
PERCENTILES = (5, 10, 25, 50, 75, 90, 95)
FIELDS = ("first_block_change", "first_block_residual_change", "output_change", "residual_change")
# The pairwise residual distances are measured on this many elements of the residual, drawn once
# per call by a seeded generator (the same elements at every step): enough for a mean absolute
# difference, while the kept samples stay a few MB whatever the model's size.
DISTANCE_SAMPLES = 65536


@dataclass
class _Trace:
    step: int = -1
    first_out: torch.Tensor | None = None
    first_res: torch.Tensor | None = None
    entry_in: torch.Tensor | None = None
    stack_res: torch.Tensor | None = None
    output: torch.Tensor | None = None
    rows: list = field(default_factory=list)
    samples: list = field(default_factory=list)  # per step, the sampled elements of the stack's residual

    def reset(self) -> None:
        pass  # kept for the whole call; read after it


@dataclass
class StepStatistics:
    """One row per (branch, step): relative changes since the branch's previous step."""

    rows: list[dict]
    # residual_distance[k][s]: mean |r_s - r_k| over the sampled elements of the block stack's
    # residual r, mean over the CFG branches; None when the model's blocks were not found
    residual_distance: list[list[float]] | None = None

    def values(self, name: str, skip_steps: int = 1) -> np.ndarray:
        vals = [r[name] for r in self.rows if r["step"] >= skip_steps and r.get(name) is not None]
        return np.asarray(vals, dtype=np.float64)

    def percentiles(self, name: str, skip_steps: int = 1) -> dict[str, float]:
        v = self.values(name, skip_steps)
        if v.size == 0:
            return {}
        return {f"p{p}": float(np.percentile(v, p)) for p in PERCENTILES}

    @property
    def mag_ratios(self) -> list[float]:
        """MagCache's per-step magnitude ratios of the block stack's residual, as diffusers'
        ``MagCacheConfig(calibrate=True)`` computes them (the mean over tokens of
        ``|residual_t| / |residual_t-1|``), averaged over the CFG branches; 1.0 for step 0."""
        return [1.0] + self.per_step("mag_ratio")[1:]

    def step_change(self) -> list[float]:
        """Per step, the relative L1 change of the block stack's residual since the previous
        step, averaged over the CFG branches (0.0 for step 0): the curve a calibrated schedule
        (``accel.cache.schedule.select_steps``) places its computed steps on."""
        return [0.0] + self.per_step("residual_change")[1:]

    def per_step(self, name: str) -> list[float]:
        """``name`` per step index (0, 1, ...), the mean over the CFG branches; 0.0 where no branch has it."""
        by_step: dict[int, list[float]] = {}
        for r in self.rows:
            if r.get(name) is not None:
                by_step.setdefault(r["step"], []).append(float(r[name]))
        n = 1 + max((r["step"] for r in self.rows), default=-1)
        return [float(np.mean(by_step[s])) if s in by_step else 0.0 for s in range(n)]

    def threshold_range(self, name: str = "first_block_residual_change", skip_steps: int = 1) -> tuple[float, float]:
        """A search range centred on the model's own changes: from its 10th percentile to
        three times its 90th (room for accumulation and larger skips), never empty."""
        p = self.percentiles(name, skip_steps)
        if not p:
            return (0.01, 1.0)
        lo = max(p["p10"], 1e-4)
        hi = max(3.0 * p["p90"], lo * 10)
        return (lo, hi)

    def summary(self) -> str:
        lines = [f"{'measure':<30}" + "".join(f"{'p' + str(p):>9}" for p in PERCENTILES)]
        for name in FIELDS:
            p = self.percentiles(name)
            if p:
                lines.append(f"{name:<30}" + "".join(f"{p['p' + str(q)]:>9.4f}" for q in PERCENTILES))
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"rows": self.rows, "percentiles": {n: self.percentiles(n) for n in FIELDS},
                "mag_ratios": self.mag_ratios, "step_change": self.step_change(),
                "residual_distance": self.residual_distance}


def _first_tensor(out):
    if isinstance(out, torch.Tensor):
        return out
    if hasattr(out, "sample"):
        return out.sample
    return out[0]


def _magnitude_ratio(res: torch.Tensor, prev: torch.Tensor) -> float:
    """diffusers' MagCache calibration formula: mean over tokens of the ratio of their norms."""
    return (torch.linalg.norm(res.float(), dim=-1) / (torch.linalg.norm(prev.float(), dim=-1) + 1e-8)).mean().item()


def _sample(res: torch.Tensor) -> torch.Tensor:
    flat = res.detach().reshape(-1)
    if flat.numel() > DISTANCE_SAMPLES:
        # the same seed every step draws the same elements, so steps compare like with like
        g = torch.Generator(device="cpu").manual_seed(0)
        idx = torch.randint(flat.numel(), (DISTANCE_SAMPLES,), generator=g).to(flat.device)
        flat = flat[idx]
    return flat.float().cpu()


def _distance_matrix(traces) -> list[list[float]] | None:
    """Mean absolute difference between every pair of steps' sampled residuals, mean over branches."""
    mats = []
    for t in traces:
        if t.samples and len({s.numel() for s in t.samples}) == 1:
            x = torch.stack(t.samples).double()
            mats.append(torch.cdist(x, x, p=1) / x.shape[1])
    if not mats or len({m.shape for m in mats}) != 1:
        return None
    return torch.stack(mats).mean(0).tolist()


class _TraceHook(CacheHook):
    def reset_state(self, module):
        # the trace is read after the pipeline call, whose end resets stateful hooks
        return module


class _FirstBlockHook(_TraceHook):
    def __init__(self, block, states):
        super().__init__(states)
        self.block = block

    def cached_forward(self, module, st, args, kwargs):
        x = self.block.bind(args, kwargs)["hidden_states"]
        out = self.run(args, kwargs)
        y = self.block.unpack(out)["hidden_states"]
        st.step += 1
        res = y - x
        row = {"step": st.step, "first_block_change": None, "first_block_residual_change": None}
        if st.first_out is not None:
            row["first_block_change"] = relative_l1(y, st.first_out)
            row["first_block_residual_change"] = relative_l1(res, st.first_res)
        st.first_out, st.first_res, st.entry_in = y, res, x
        st.rows.append(row)
        return out


class _LastBlockHook(_TraceHook):
    def __init__(self, block, states):
        super().__init__(states)
        self.block = block

    def cached_forward(self, module, st, args, kwargs):
        out = self.run(args, kwargs)
        res = self.block.unpack(out)["hidden_states"] - st.entry_in
        row = st.rows[-1]
        row["residual_change"] = None if st.stack_res is None else relative_l1(res, st.stack_res)
        row["mag_ratio"] = None if st.stack_res is None else _magnitude_ratio(res, st.stack_res)
        st.stack_res = res
        st.samples.append(_sample(res))
        return out


class _OutputHook(_TraceHook):
    def __init__(self, states, has_blocks: bool):
        super().__init__(states)
        self.has_blocks = has_blocks

    def cached_forward(self, module, st, args, kwargs):
        out = self.run(args, kwargs)
        y = _first_tensor(out)
        if not self.has_blocks:
            st.step += 1
            st.rows.append({"step": st.step})
        st.rows[-1]["output_change"] = None if st.output is None else relative_l1(y, st.output)
        st.output = y
        return out


def step_statistics(pipe, prompt: str | list[str], seed: int = 0, output_type: str = "latent", **generation) -> StepStatistics:
    """Run ``pipe`` once without acceleration and return its per-step change statistics.

    ``generation`` holds the call settings (steps, size, guidance) the thresholds are for.
    The pipeline must carry no accel handle (the statistics are of the baseline).
    """
    if active_handle(pipe) is not None:
        raise RuntimeError("step_statistics measures the baseline; remove the applied AccelConfig first")
    model = find_denoiser(pipe)
    states = BranchStates(_Trace)
    hooks: list[tuple[torch.nn.Module, CacheHook]] = []
    try:
        blocks = transformer_blocks(model)
    except UnsupportedModelError:
        blocks = []
    if blocks:
        hooks.append((blocks[0].module, _FirstBlockHook(blocks[0], states)))
        hooks.append((blocks[-1].module, _LastBlockHook(blocks[-1], states)))
    hooks.append((model, _OutputHook(states, bool(blocks))))
    # the bypass last: outermost on the model
    remove = install_hooks(model, [(m, h, HOOK_NAME) for m, h in hooks] + bypass_hooks(model, states, HOOK_NAME + "_bypass"))
    try:
        with torch.inference_mode():
            pipe(prompt=prompt, generator=torch.Generator("cpu").manual_seed(seed), output_type=output_type, **generation)
    finally:
        remove()
    rows = []
    branches = states.branches()
    for branch, trace in branches.items():
        rows += [{"branch": branch, **r} for r in trace.rows]
    return StepStatistics(rows, _distance_matrix(branches.values()))
