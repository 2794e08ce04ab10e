"""The report's plotly figures: Pareto fronts, optimisation history, parameter importances."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .tables import as_number as _num
from .tables import higher_is_better, metric_columns, param_columns

# category -> legend name, colour, marker symbol
STYLE = {
    "pareto": ("Pareto front", "#1f77b4", "circle"),
    "dominated": ("dominated", "#9ecae1", "circle-open"),
    "infeasible": ("below a quality floor", "#d62728", "x"),
    "failed": ("failed", "#7f7f7f", "triangle-down"),
    "pruned": ("pruned", "#bcbd22", "square-open"),
}
# trials_table spells Optuna's TrialState.FAIL "fail"; "failed" is accepted too
FAILED = ("fail", "failed")
_FLOOR = re.compile(r"^\s*([a-z_]+)\s*(>=|<=)\s*([0-9.]+(?:e-?\d+)?)\s*(x?)\s*$")
_LAYOUT = dict(template="plotly_white", margin=dict(l=60, r=20, t=40, b=50), legend=dict(orientation="h", y=-0.2))


def non_dominated(latency: np.ndarray, quality: np.ndarray, higher: bool = True) -> np.ndarray:
    """Mask of points no other point beats on both latency (lower) and quality; ties dominate nothing."""
    q = quality if higher else -quality
    n = len(latency)
    keep = np.ones(n, dtype=bool)
    for i in range(n):
        better_or_equal = (latency <= latency[i]) & (q >= q[i])
        strictly = (latency < latency[i]) | (q > q[i])
        if np.any(better_or_equal & strictly):
            keep[i] = False
    return keep


def floor_bounds(floors: list[str], baseline: pd.Series | None) -> list[tuple[str, float, str]]:
    """[(metric, bound, label)] for the floors the study used, relative ones scaled by the baseline."""
    out = []
    for text in floors or []:
        m = _FLOOR.match(str(text))
        if not m:
            continue
        metric, _, value, rel = m.groups()
        bound = float(value)
        if rel:
            base = _num(baseline.get(metric)) if baseline is not None else None
            if base is None or not math.isfinite(base):
                continue
            bound *= base
        out.append((metric, bound, str(text)))
    return out


def complete_trials(df: pd.DataFrame) -> pd.DataFrame:
    if df.empty or "state" not in df:
        return df.iloc[0:0]
    done = df[(df["state"] == "complete") & df["latency_s"].notna()].copy()
    done["latency_s"] = done["latency_s"].astype(float)
    return done


def relative_latency(done: pd.DataFrame) -> np.ndarray:
    """Per trial, its latency relative to the baseline: 1 / speed-up, the speed-up being the one the
    pick uses (``tuner.pick.speed_of``: interleaved with the baseline, confirmed where re-measured).
    Absolute latencies of trials timed at different moments of a busy machine do not compare; the
    ratio against a baseline timed beside each does. A trial without a speed-up ranks last; a
    table without speed-ups at all falls back to absolute latency."""
    if "speedup" not in done or not done["speedup"].notna().any():
        return done["latency_s"].astype(float).to_numpy()
    speed = pd.to_numeric(done["speedup"], errors="coerce").to_numpy(dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(speed > 0, 1.0 / speed, np.inf)
    return np.where(np.isnan(rel), np.inf, rel)


def uses_speedup(df: pd.DataFrame) -> bool:
    return "speedup" in df and bool(df["speedup"].notna().any())


def plotted(df: pd.DataFrame, metric: str, higher: bool = True) -> pd.DataFrame:
    """Complete trials with ``y`` (the metric, identical-to-baseline drawn just above the best),
    ``x`` (the speed-up, or the latency where no trial has one), ``front`` (non-dominated on
    relative latency and this metric) and ``category``."""
    done = complete_trials(df)
    if done.empty:
        return done.assign(y=[], x=[], front=[], category=[])
    raw = done[metric].astype(float)
    finite = raw[np.isfinite(raw)]
    top = finite.max() if len(finite) else 100.0
    span = (finite.max() - finite.min()) if len(finite) > 1 else abs(top)
    cap = top + max(0.05 * span, 1e-3 * max(1.0, abs(top)), 0.5 if metric == "psnr" else 0.0)
    done["y"] = raw.replace([math.inf], cap if higher else np.nan).replace([-math.inf], np.nan)
    q = done["y"].fillna(-math.inf if higher else math.inf).to_numpy()
    done["front"] = non_dominated(relative_latency(done), q, higher)
    done["x"] = done["speedup"].astype(float) if uses_speedup(done) else done["latency_s"]
    feasible = done["feasible"] if "feasible" in done else pd.Series(True, index=done.index)
    done["category"] = np.where(feasible.eq(False), "infeasible", np.where(done["front"], "pareto", "dominated"))
    return done


def hover_text(row: pd.Series, metrics: list[str], params: list[str]) -> str:
    lines = [f"<b>trial {int(row['trial'])}</b>"]
    lat = _num(row.get("latency_s"))
    if lat is not None:
        sp = _num(row.get("speedup"))
        lines.append(f"latency {lat:.4g} s" + (f" ({sp:.2f}x)" if sp is not None else ""))
    for m in metrics:
        v = _num(row.get(m))
        if v is not None:
            lines.append(f"{m} {'identical (inf)' if math.isinf(v) else f'{v:.4g}'}")
    config = [f"{p[6:]} = {_fmt(row[p])}" for p in params if _num_or_value(row.get(p)) is not None]
    lines += config or ["no acceleration"]
    if isinstance(row.get("fail_reason"), str) and row["fail_reason"]:
        lines.append("reason: " + row["fail_reason"][:120])
    return "<br>".join(lines)


def pareto_figure(df: pd.DataFrame, metric: str, chosen: int | None, *, higher: bool | None = None,
                  floors: list[tuple[str, float, str]] = (), metrics: list[str] | None = None,
                  memory_cap: bool = False) -> go.Figure:
    """Latency against ``metric``: front, dominated and below-floor trials apart, the profile starred."""
    higher = higher_is_better(metric) if higher is None else higher
    metrics = metrics if metrics is not None else metric_columns(df)
    params = param_columns(df)
    fig = go.Figure()
    done = plotted(df, metric, higher) if metric in df else complete_trials(df).iloc[0:0]
    if not done.empty:
        done["hover"] = done.apply(lambda r: hover_text(r, metrics, params), axis=1)
        speedup = uses_speedup(done)
        front = done[done["front"]].sort_values("x", ascending=not speedup)
        if len(front) > 1:
            fig.add_trace(go.Scatter(x=front["x"], y=front["y"], mode="lines", name="front", showlegend=False,
                                     line=dict(color="#1f77b4", dash="dot", shape="hv" if not higher else "vh"),
                                     hoverinfo="skip"))
        for cat in ("dominated", "infeasible", "pareto"):
            part = done[done["category"] == cat]
            if part.empty:
                continue
            name, colour, symbol = _style(cat, memory_cap)
            fig.add_trace(go.Scatter(
                x=part["x"], y=part["y"], mode="markers", name=name, customdata=part["trial"],
                marker=dict(color=colour, symbol=symbol, size=11, line=dict(width=1.5, color=colour)),
                text=part["hover"], hovertemplate="%{text}<extra></extra>",
            ))
        if chosen is not None and chosen in set(done["trial"]):
            c = done[done["trial"] == chosen].iloc[0]
            fig.add_trace(go.Scatter(x=[c["x"]], y=[c["y"]], mode="markers+text", name="chosen profile",
                                     text=[f"profile (trial {chosen})"], textposition="top center",
                                     marker=dict(symbol="star", size=22, color="#ff7f0e", line=dict(width=1, color="#333")),
                                     hovertext=[c["hover"]], hovertemplate="%{hovertext}<extra>profile</extra>"))
        for m, bound, label in floors:
            if m == metric:
                fig.add_hline(y=bound, line=dict(color="#d62728", dash="dash", width=1),
                              annotation_text=f"floor {label}", annotation_position="bottom right")
    missing = _count_without_latency(df)
    speedup = uses_speedup(done) if not done.empty else False
    title = (f"speed-up against {metric}" if speedup else f"latency against {metric}") + (
        f"<br><sup>{missing}: no latency, see the history and the tables</sup>" if missing else "")
    ylabel = metric + (" (higher is better)" if higher else " (lower is better)")
    if metric == "psnr" and not done.empty and np.isinf(done[metric].astype(float)).any():
        ylabel += "; identical outputs drawn at the top"
    xaxis = "speed-up (baseline / trial, timed interleaved)" if speedup else "latency per call (s, median)"
    fig.update_layout(title=dict(text=title, font=dict(size=15)), xaxis_title=xaxis,
                      yaxis_title=ylabel, height=460, **{**_LAYOUT, "margin": dict(l=60, r=20, t=70, b=50)})
    return fig


def history_figure(df: pd.DataFrame, objective: str, chosen: int | None, *, higher: bool | None = None,
                   metrics: list[str] | None = None, memory_cap: bool = False) -> go.Figure:
    """Per trial: latency with the fastest feasible so far, the objective metric, and a strip of the
    trials that produced no result (failed, pruned)."""
    higher = higher_is_better(objective) if higher is None else higher
    metrics = metrics if metrics is not None else metric_columns(df)
    params = param_columns(df)
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.06, row_heights=[0.47, 0.38, 0.15])
    if not df.empty:
        rows = df.copy()
        rows["hover"] = rows.apply(lambda r: hover_text(r, metrics, params), axis=1)
        done = plotted(rows, objective, higher) if objective in rows else complete_trials(rows)
        if not done.empty:
            for cat in ("dominated", "infeasible", "pareto"):
                part = done[done["category"] == cat] if "category" in done else done.iloc[0:0]
                if part.empty:
                    continue
                name, colour, symbol = _style(cat, memory_cap)
                for row, col in ((1, "latency_s"), (2, "y")):
                    fig.add_trace(go.Scatter(x=part["trial"], y=part[col], mode="markers", name=name, legendgroup=cat,
                                             showlegend=row == 1, marker=dict(color=colour, symbol=symbol, size=9,
                                                                             line=dict(width=1.5, color=colour)),
                                             text=part["hover"], hovertemplate="%{text}<extra></extra>"), row=row, col=1)
            feasible = done[done["feasible"].ne(False)] if "feasible" in done else done
            if not feasible.empty:
                best = feasible.sort_values("trial").set_index("trial")["latency_s"].cummin()
                fig.add_trace(go.Scatter(x=best.index, y=best.values, mode="lines", name="fastest feasible so far",
                                         line=dict(color="#ff7f0e", shape="hv"), hoverinfo="skip"), row=1, col=1)
        for state, states in (("failed", FAILED), ("pruned", ("pruned",))):
            part = rows[rows["state"].isin(states)]
            if part.empty:
                continue
            name, colour, symbol = STYLE[state]
            fig.add_trace(go.Scatter(x=part["trial"], y=[state] * len(part), mode="markers", name=name,
                                     marker=dict(color=colour, symbol=symbol, size=11, line=dict(width=1.5, color=colour)),
                                     text=part["hover"], hovertemplate="%{text}<extra></extra>"), row=3, col=1)
        if chosen is not None:
            fig.add_vline(x=chosen, line=dict(color="#ff7f0e", dash="dot", width=1))
    fig.update_yaxes(title_text="latency (s)", row=1, col=1)
    fig.update_yaxes(title_text=objective, row=2, col=1)
    fig.update_yaxes(title_text="no result", type="category", categoryorder="array",
                     categoryarray=["failed", "pruned"], row=3, col=1)
    fig.update_xaxes(title_text="trial", row=3, col=1)
    fig.update_layout(title=dict(text="optimisation history", font=dict(size=15)), height=560, **_LAYOUT)
    return fig


def importance_figure(importances: dict[str, dict[str, float]]) -> go.Figure:
    """Horizontal bars: each parameter's share of the importance, one colour per target; as tall as its bars."""
    params = sorted({p for imp in importances.values() for p in imp},
                    key=lambda p: sum(imp.get(p, 0.0) for imp in importances.values()))
    fig = go.Figure()
    colours = ["#1f77b4", "#2ca02c", "#9467bd", "#8c564b"]
    for i, (target, imp) in enumerate(importances.items()):
        fig.add_trace(go.Bar(y=params, x=[imp.get(p, 0.0) for p in params], name=f"for {target}", orientation="h",
                             marker_color=colours[i % len(colours)],
                             hovertemplate="%{y}: %{x:.1%}<extra>" + target + "</extra>"))
    bars = len(params) * max(1, len(importances))
    fig.update_layout(title=dict(text="parameter importances", font=dict(size=15)), barmode="group",
                      xaxis=dict(title="share of importance", tickformat=".0%", range=[0, 1]),
                      height=IMPORTANCE_BASE_PX + IMPORTANCE_BAR_PX * bars,
                      **{**_LAYOUT, "margin": dict(l=60, r=20, t=40, b=40), "legend": dict(orientation="h", y=1.02, x=1,
                                                                                          xanchor="right", yanchor="bottom")})
    return fig


# the importance plot: room for the title, axis and legend, then this much per bar
IMPORTANCE_BASE_PX = 110
IMPORTANCE_BAR_PX = 22
_MISSING_Y = -0.12  # where a trial without this parameter (a conditional one) crosses its axis


def parallel_figure(df: pd.DataFrame, chosen: int | None) -> go.Figure:
    """Parallel coordinates of the parameters against speed-up, drawn as SVG lines.

    plotly's ``parcoords`` trace needs WebGL, which a headless browser or a remote desktop
    often lacks; plain scatter lines over axes scaled to [0, 1] draw everywhere. The last axis
    is the speed-up, each trial's interval (its median +- half the spread of the interleaved
    per-round ratios) drawn as an error bar on it; lines are coloured by speed-up.
    """
    done = complete_trials(df)
    if "speedup" in done:
        done = done[done["speedup"].notna()]
    fig = go.Figure()
    axes = [p for p in param_columns(done) if done[p].notna().any()]
    if done.empty or not axes:
        fig.update_layout(title=dict(text="parameters against speed-up: no complete trial with parameters",
                                     font=dict(size=15)), height=200, **_LAYOUT)
        return fig
    done = done.drop_duplicates(subset=axes + ["speedup"]).sort_values("speedup")
    scaled, annotations = {}, []
    for i, p in enumerate(axes):
        ys, labels = _axis(done[p])
        scaled[p] = ys
        annotations += [dict(x=i, y=y, text=text, showarrow=False, xanchor="left", xshift=4, font=dict(size=10, color="#555"))
                        for y, text in labels]
    speed = done["speedup"].astype(float)
    half = (done["speedup_iqr"].astype(float).fillna(0.0) / 2) if "speedup_iqr" in done else pd.Series(0.0, index=done.index)
    lo, hi = float((speed - half).min()), float((speed + half).max())
    span = (hi - lo) or 1.0
    sp_y = (speed - lo) / span
    k = len(axes)
    annotations += [dict(x=k, y=y, text=f"{v:.2f}x", showarrow=False, xanchor="left", xshift=4,
                         font=dict(size=10, color="#555")) for y, v in ((0.0, lo), (1.0, hi))]
    _trial_lines(fig, done, axes, scaled, sp_y, chosen)
    fig.add_trace(go.Scatter(
        x=[k] * len(done), y=list(sp_y), mode="markers", name="speed-up and its interval", customdata=list(done["trial"]),
        marker=dict(color="#333", size=6, symbol="line-ew-open"),
        error_y=dict(type="data", symmetric=False, array=list(half / span), arrayminus=list(half / span),
                     color="#333", thickness=1.2, width=5),
        hovertemplate="trial %{customdata}: %{text}<extra></extra>",
        text=[f"{s:.2f}x ± {h:.2f}" for s, h in zip(speed, half)]))
    shapes = [dict(type="line", x0=i, x1=i, y0=0, y1=1, line=dict(color="#999", width=1)) for i in range(k + 1)]
    fig.update_layout(
        title=dict(text="parameters against speed-up", font=dict(size=15)), height=420, shapes=shapes,
        annotations=annotations, hovermode="closest",
        xaxis=dict(tickmode="array", tickvals=list(range(k + 1)), ticktext=[p[6:] for p in axes] + ["<b>speed-up</b>"],
                   range=[-0.3, k + 0.6], showgrid=False, zeroline=False),
        yaxis=dict(visible=False, range=[_MISSING_Y - 0.06, 1.08]),
        **{**_LAYOUT, "margin": dict(l=20, r=20, t=40, b=60), "legend": dict(orientation="h", y=1.0, x=1, xanchor="right",
                                                                            yanchor="bottom")})
    return fig


def _trial_lines(fig: go.Figure, done: pd.DataFrame, axes: list[str], scaled: dict, sp_y: pd.Series, chosen: int | None) -> None:
    """One line per trial across the axes, coloured by speed-up; the profile's trial stands out."""
    from plotly.colors import sample_colorscale

    speed = done["speedup"].astype(float)
    k = len(axes)
    rank = (speed - speed.min()) / ((speed.max() - speed.min()) or 1.0)
    colours = sample_colorscale("Viridis", list(rank.clip(0, 1)))
    for (idx, r), colour in zip(done.iterrows(), colours):
        t = int(r["trial"])
        ys = [scaled[p][idx] for p in axes] + [sp_y[idx]]
        is_chosen = chosen is not None and t == chosen
        config = "<br>".join(f"{p[6:]} = {_fmt(r[p])}" for p in axes if _num_or_value(r.get(p)) is not None)
        fig.add_trace(go.Scatter(
            x=list(range(k + 1)), y=ys, mode="lines+markers", showlegend=False, customdata=[t] * (k + 1),
            line=dict(color="#ff7f0e" if is_chosen else colour, width=4 if is_chosen else 1.5),
            marker=dict(size=5, color="#ff7f0e" if is_chosen else colour),
            hovertemplate=f"<b>trial {t}</b>{' (profile)' if is_chosen else ''}<br>{speed[idx]:.2f}x<br>"
                          + (config or "no acceleration") + "<extra></extra>"))


def _axis(col: pd.Series) -> tuple[pd.Series, list[tuple[float, str]]]:
    """One parameter's values scaled to [0, 1] (categories evenly spaced, wide positive ranges on a log
    scale) and the labels to write beside its axis; absent values sit below the axis."""
    present = col.dropna()
    numeric = len(present) and all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
                                   for v in present)
    labels: list[tuple[float, str]] = []
    if numeric:
        vals = present.astype(float)
        lo, hi = float(vals.min()), float(vals.max())
        log = lo > 0 and hi / lo >= 20
        f = np.log10 if log else (lambda x: x)
        a, b = f(lo), f(hi)
        ys = col.map(lambda v: None if v is None or pd.isna(v) else ((f(float(v)) - a) / (b - a) if b > a else 0.5))
        labels = [(0.0, _fmt(lo)), (1.0, _fmt(hi))] if hi > lo else [(0.5, _fmt(lo))]
    else:
        cats = sorted({str(v) for v in present})
        pos = {c: (i / (len(cats) - 1) if len(cats) > 1 else 0.5) for i, c in enumerate(cats)}
        ys = col.map(lambda v: None if v is None or (isinstance(v, float) and math.isnan(v)) else pos[str(v)])
        labels = [(y, c) for c, y in pos.items()]
    if col.isna().any():
        labels.append((_MISSING_Y, "not set"))
    return ys.astype(object).where(ys.notna(), _MISSING_Y).astype(float), labels


def _style(category: str, memory_cap: bool) -> tuple[str, str, str]:
    name, colour, symbol = STYLE[category]
    if category == "infeasible" and memory_cap:  # the study's constraints include a memory cap
        name = "below a quality floor or over the memory cap"
    return name, colour, symbol


def _count_without_latency(df: pd.DataFrame) -> str:
    if df.empty or "state" not in df:
        return ""
    n_failed, n_pruned = int(df["state"].isin(FAILED).sum()), int((df["state"] == "pruned").sum())
    return ", ".join(f"{n} {name}" for n, name in ((n_failed, "failed"), (n_pruned, "pruned")) if n)


def _num_or_value(v):
    if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
        return None
    return v


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
