"""report.html: one self-contained page (plotly inlined) with the Pareto front and the trials."""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

_CATEGORIES = (  # name, colour, symbol
    ("pareto", "#1f77b4", "circle"),
    ("dominated", "#9ecae1", "circle-open"),
    ("infeasible", "#d62728", "x"),
)


def _category(row) -> str:
    if row["feasible"] is False:
        return "infeasible"
    return "pareto" if row["pareto"] else "dominated"


def _hover(row, params: list[str]) -> str:
    lines = [f"trial {row['trial']}"]
    for p in params:
        v = row[p]
        if v is not None and not (isinstance(v, float) and math.isnan(v)):
            lines.append(f"{p[6:]} = {v}")
    return "<br>".join(lines) if len(lines) > 1 else lines[0] + "<br>no acceleration"


def pareto_figure(df: pd.DataFrame, metric: str, chosen: int | None) -> go.Figure:
    fig = go.Figure()
    done = df[df["state"] == "complete"].copy()
    params = [c for c in df.columns if c.startswith("param.")]
    if not done.empty:
        done["category"] = done.apply(_category, axis=1)
        y = done[metric].astype(float).replace([math.inf], float("nan"))
        cap = (y.max() if y.notna().any() else 0) + 5 if metric == "psnr" else None
        done["y"] = done[metric].astype(float).apply(lambda v: cap if (cap is not None and math.isinf(v)) else v)
        done["hover"] = done.apply(lambda r: _hover(r, params), axis=1)
        for name, colour, symbol in _CATEGORIES:
            part = done[done["category"] == name]
            if part.empty:
                continue
            fig.add_trace(
                go.Scatter(
                    x=part["latency_s"], y=part["y"], mode="markers", name=name,
                    marker=dict(color=colour, symbol=symbol, size=10, line=dict(width=1)),
                    text=part["hover"], hovertemplate="%{text}<br>latency %{x:.3f}s<br>" + metric + " %{y:.3g}<extra></extra>",
                )
            )
        front = done[done["pareto"]].sort_values("latency_s")
        if len(front) > 1:
            fig.add_trace(go.Scatter(x=front["latency_s"], y=front["y"], mode="lines", name="front",
                                     line=dict(color="#1f77b4", dash="dot"), hoverinfo="skip"))
        if chosen is not None and chosen in set(done["trial"]):
            c = done[done["trial"] == chosen].iloc[0]
            fig.add_trace(go.Scatter(x=[c["latency_s"]], y=[c["y"]], mode="markers", name="profile",
                                     marker=dict(symbol="star", size=20, color="#ff7f0e", line=dict(width=1)),
                                     hoverinfo="skip"))
    label = metric + (" (identical outputs drawn at the top)" if metric == "psnr" else "")
    fig.update_layout(xaxis_title="latency per call (s, median)", yaxis_title=label, template="plotly_white",
                      height=480, margin=dict(l=60, r=20, t=30, b=50), legend=dict(orientation="h"))
    return fig


def _img(path: Path) -> str:
    if not path.is_file():
        return "<em>no sample</em>"
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" style="image-rendering:pixelated;height:128px">'


def write_report(df: pd.DataFrame, attrs: dict, path: str | Path, chosen_no: int | None, reason: str,
                 title: str = "study") -> Path:
    """Render the trials table ``df`` (one row per trial) and the study's metadata ``attrs``."""
    path = Path(path)
    metric = attrs.get("objective", "psnr")
    fig = pareto_figure(df, metric, chosen_no)
    plot = fig.to_html(include_plotlyjs=True, full_html=False, div_id="pareto")
    table = _table_html(df)
    samples = path.parent / "samples"
    base_img = _img(samples / "trial-0000.png")
    chosen_img = _img(samples / f"trial-{chosen_no:04d}.png") if chosen_no is not None else "<em>none</em>"
    model = attrs.get("model", {})
    hw = attrs.get("hardware", {})
    counts = df["state"].value_counts().to_dict() if not df.empty else {}
    meta = {
        "model": f"{model.get('name')} ({model.get('pipeline')}, {model.get('family')})",
        "hardware": f"{hw.get('device')} · {hw.get('name')} · torch {hw.get('torch')} · diffusers {hw.get('diffusers')}",
        "budget": attrs.get("budget"),
        "objective": metric,
        "quality floors": ", ".join(attrs.get("floors", [])) or "none",
        "trials": ", ".join(f"{v} {k}" for k, v in counts.items()),
        "profile": f"trial {chosen_no}: {reason}" if chosen_no is not None else reason,
        "prompts": "; ".join(attrs.get("workload", {}).get("prompts", [])),
        "created": attrs.get("created"),
    }
    meta_html = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in meta.items())
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>mindiesd-tune: {html.escape(str(title))}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }}
table {{ border-collapse: collapse; font-size: 13px; }}
th, td {{ border-bottom: 1px solid #ddd; padding: 3px 8px; text-align: right; }}
table.meta th, table.meta td {{ text-align: left; }}
.samples {{ display: flex; gap: 2em; }}
</style></head><body>
<h1>mindiesd-tune study: {html.escape(str(title))}</h1>
<table class="meta">{meta_html}</table>
<h2>Latency against {html.escape(metric)}</h2>
{plot}
<h2>Chosen profile against the baseline (first prompt)</h2>
<div class="samples"><div><p>baseline (trial 0)</p>{base_img}</div><div><p>profile (trial {chosen_no})</p>{chosen_img}</div></div>
<h2>Trials</h2>
{table}
</body></html>
"""
    path.write_text(page)
    return path


def _table_html(df: pd.DataFrame) -> str:
    if df.empty:
        return "<p>no trials</p>"
    shown = df.drop(columns=["duration_s"], errors="ignore").copy()
    shown.columns = [c[6:] if c.startswith("param.") else c for c in shown.columns]
    return shown.to_html(index=False, na_rep="", float_format=lambda v: f"{v:.4g}", border=0, classes="trials")


def write_trials_csv(df: pd.DataFrame, path: str | Path) -> Path:
    path = Path(path)
    df.to_csv(path, index=False)
    return path
