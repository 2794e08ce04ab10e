"""The report's quality section: each front point's prompts one by one, the pick on the held-out
prompts beside its tuning prompts, and the cliffs along the front's knobs.

A mean over a few prompts hides the prompt that collapses; the strip shows every prompt's value
of the objective for each front point (the worst one is visible at a glance), held-out prompts
in another colour where the point was measured on them.
"""

from __future__ import annotations

import html
import math
from typing import Any

import plotly.graph_objects as go


def strip_figure(quality: dict[str, Any], metric: str) -> go.Figure | None:
    """One row per front point: a dot per tuning prompt, a diamond per held-out prompt."""
    per_prompt: dict = quality.get("per_prompt") or {}
    held: dict = quality.get("heldout") or {}
    if not per_prompt:
        return None
    fig = go.Figure()
    for label, source, symbol, colour in (("tuning prompts", per_prompt, "circle", "#1f77b4"),
                                          ("held-out prompts", {k: v.get("per_prompt") for k, v in held.items()},
                                           "diamond", "#d62728")):
        xs, ys, text = [], [], []
        for number, scores in source.items():
            if str(number) not in {str(k) for k in per_prompt} or not scores:
                continue
            for i, s in enumerate(scores):
                v = s.get(metric)
                if v is None or (isinstance(v, float) and math.isinf(v)):
                    continue
                xs.append(float(v))
                ys.append(f"trial {number}")
                text.append(f"prompt {i + 1}: {metric} {v:.4g}")
        if xs:
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="markers", name=label, text=text, hoverinfo="text",
                                     marker={"symbol": symbol, "size": 9, "color": colour, "opacity": 0.8}))
    for bound in quality.get("floor_lines") or []:
        fig.add_vline(x=bound["value"], line_dash="dash", line_color="#888", annotation_text=bound["label"])
    fig.update_layout(title=f"{metric} per prompt on the front (identical outputs, infinite {metric}, left out)",
                      xaxis_title=metric, height=120 + 40 * len(per_prompt), margin={"l": 90, "r": 20, "t": 50, "b": 40})
    return fig


def heldout_table(quality: dict[str, Any], metric: str) -> str:
    """Tuning and held-out quality side by side for the points measured on held-out prompts."""
    held: dict = quality.get("heldout") or {}
    tuning: dict = quality.get("tuning") or {}
    if not held:
        note = quality.get("heldout_note") or "no point was measured on held-out prompts"
        return f"<p class='note'>{html.escape(note)}</p>"
    rows = []
    for number, h in sorted(held.items(), key=lambda kv: int(kv[0])):
        t = tuning.get(str(number)) or tuning.get(int(number)) or {}
        m = h.get("metrics") or {}
        rows.append(
            f"<tr><td>{html.escape(str(number))}</td>"
            f"<td>{_f(t.get(metric))}</td><td>{_f(_worst(t, metric))}</td>"
            f"<td>{_f(m.get(metric))}</td><td>{_f(_worst(m, metric))}</td>"
            f"<td>{h.get('prompts')}</td><td>{'yes' if h.get('meets') else '<b>no</b>'}</td></tr>")
    return ("<table class='small'><tr><th>trial</th><th>tuning mean</th><th>tuning worst</th><th>held-out mean</th>"
            "<th>held-out worst</th><th>held-out prompts</th><th>floors hold</th></tr>" + "".join(rows) + "</table>")


def cliffs_html(quality: dict[str, Any]) -> str:
    cliffs = (quality.get("cliffs") or {}).get("cliffs") or []
    distance = (quality.get("cliffs") or {}).get("distance") or {}
    near = "".join(
        f"<li>trial {html.escape(str(n))}: "
        + (f"{html.escape(d['param'])} = {_f(d['value'])}, {d['steps']} tried value(s) from the edge at "
           f"{_f(d['edge'])} ({html.escape(d['why'])})" if d else "no cliff found on its knobs' tried values")
        + "</li>"
        for n, d in distance.items())
    if not cliffs:
        listed = "<p class='note'>no cliff between adjacent tried values of the front's knobs</p>"
    else:
        listed = ("<table class='small'><tr><th>method</th><th>knob</th><th>safe value (trial)</th>"
                  "<th>past the edge (trial)</th><th>what happens</th></tr>" + "".join(
                      f"<tr><td>{html.escape(c['method'])}</td><td>{html.escape(c['param'])}</td>"
                      f"<td>{_f(c['safe'])} ({c['safe_trial']})</td><td>{_f(c['bold'])} ({c['bold_trial']})</td>"
                      f"<td>{html.escape(c['why'])}</td></tr>" for c in cliffs) + "</table>")
    return listed + (f"<ul class='small'>{near}</ul>" if near else "")


def _worst(m: dict, metric: str):
    from ..quality import worst

    return worst(m, metric)


def _f(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, str):
        return html.escape(v)
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    return f"{v:.4g}" if isinstance(v, float) else html.escape(str(v))
