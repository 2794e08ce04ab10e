"""report.html: one self-contained page (plotly inlined, samples embedded) that works offline."""

from __future__ import annotations

import html
import math
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from .figures import floor_bounds, history_figure, importance_figure, parallel_figure, pareto_figure, plotted
from .media import DIFF_GAIN, difference_html, thumbnail_html
from .tables import as_number as _num
from .tables import higher_is_better, metric_columns, param_columns

_PLOTLY_CONFIG = {"displaylogo": False, "responsive": True, "modeBarButtonsToRemove": ["select2d", "lasso2d"]}
# plotly.js's basic bundle (scatter, bar, pie: every trace this report draws) is a third of the
# full library. Vendored from the npm package plotly.js-basic-dist-min 4.1.1 (MIT, Plotly Inc.;
# licence beside it), the plotly.js version plotly.py 7.1 writes figures for.
_PLOTLY_BASIC = "vendor/plotly-basic.min.js"
_BASIC_TRACES = {"scatter", "bar", "pie"}


def write_report(
    df: pd.DataFrame,
    attrs: dict,
    path: str | Path,
    chosen_no: int | None,
    reason: str,
    title: str = "study",
    *,
    metrics: dict[str, bool] | None = None,
    importances: dict[str, Any] | None = None,
    baseline_no: int | None = 0,
    samples_dir: str | Path | None = None,
    quality: dict[str, Any] | None = None,
) -> Path:
    """Render the trials table ``df`` (one row per trial) and the study's metadata ``attrs``.

    ``metrics`` maps each quality metric to whether higher is better (default: every numeric
    metric column, higher better except lpips/fid/fvd); ``importances`` is what
    ``tuner.importance.param_importances`` returns; samples are read from
    ``samples_dir`` (default: ``samples/`` beside ``path``) as ``trial-NNNN.png`` (image or
    frame strip) and ``trial-NNNN.webp`` (animated video). ``quality``: the front's per-prompt
    values, the held-out figures and the cliffs (``reports.quality``).
    """
    path = Path(path)
    samples = Path(samples_dir) if samples_dir is not None else path.parent / "samples"
    ms = metric_columns(df, metrics)
    directions = {m: higher_is_better(m, metrics) for m in ms}
    objective = attrs.get("objective") if attrs.get("objective") in ms else (ms[0] if ms else None)
    baseline, chosen = _row(df, baseline_no), _row(df, chosen_no)
    floors, capped = floor_bounds(attrs.get("floors", []), baseline), bool(attrs.get("max_memory_bytes"))

    figures = _pareto_figures(df, ms, objective, directions, chosen_no, floors, capped)
    plots = "".join(f'<div class="plot">{_plot_html(fig, div_id)}</div>' for div_id, fig in figures) \
        or "<p class='note'>no quality metric was recorded: nothing to plot</p>"
    front = _front_trials(df, ms, directions)
    parallel = parallel_figure(df, chosen_no)
    history_fig = (history_figure(df, objective, chosen_no, higher=directions.get(objective), metrics=ms, memory_cap=capped)
                   if objective else None)
    history = _plot_html(history_fig, "history") if history_fig else "<p class='note'>no objective recorded</p>"
    imp_html, imp_fig = _importances_html(importances)
    quality_html, strip = _quality_html(quality or {}, objective)

    page = _PAGE.format(
        title=_e(title), n_trials=len(df), script=_SORT_JS, quality=quality_html, importances=imp_html, history=history,
        plotlyjs=plotly_js([f for _, f in figures] + [parallel] + [f for f in (history_fig, imp_fig, strip) if f is not None]),
        parallel=_plot_html(parallel, "parallel"),
        headline=_headline(chosen, chosen_no, reason, ms, baseline, baseline_no),
        meta=_meta_html(df, attrs, title),
        plots=plots,
        n_front=len(front),
        front_table=_sortable_table(front, ms, directions, chosen_no, table_id="front-table", with_front=True, compact=True),
        gallery=_gallery(front, samples, baseline_no, ms, attrs),
        failed=_failed_html(df),
        all_table=_sortable_table(_with_params(df), ms, directions, chosen_no, table_id="all-table", with_state=True),
    )
    path.write_text(page, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- pieces


def _quality_html(quality: dict[str, Any], objective: str | None):
    """The quality section and its strip figure (None without per-prompt values)."""
    from .quality import cliffs_html, heldout_table, strip_figure

    if not quality or objective is None:
        return "<p class='note'>no per-prompt values were recorded</p>", None
    strip = strip_figure(quality, objective)
    judged = quality.get("judged_on")
    parts = [f"<p class='note'>floors on a mean are judged on {_e(judged)}</p>" if judged else "",
             _plot_html(strip, "strip") if strip is not None else "",
             "<h3>Tuning prompts and held-out prompts</h3>", heldout_table(quality, objective),
             "<h3>Cliffs along the front's knobs</h3>", cliffs_html(quality)]
    return "".join(parts), strip


def _pareto_figures(df, ms, objective, directions, chosen_no, floors, capped) -> list[tuple[str, Any]]:
    """(div id, figure) per quality metric: the objective's plot is "pareto", the others "pareto-<metric>"."""
    figures = []
    for m in ([objective] if objective else []) + [m for m in ms if m != objective]:
        fig = pareto_figure(df, m, chosen_no, higher=directions[m], floors=floors, metrics=ms, memory_cap=capped)
        figures.append(("pareto" if m == objective else f"pareto-{m}", fig))
    return figures


def plotly_js(figures=()) -> str:
    """The plotly.js the page inlines once in its head: the vendored basic bundle when it draws every
    trace type in ``figures``, else the full library plotly.py ships."""
    from importlib import resources

    types = {t.type for f in figures for t in f.data}
    if types <= _BASIC_TRACES:
        bundle = resources.files(__package__).joinpath(_PLOTLY_BASIC)
        if bundle.is_file():
            return bundle.read_text(encoding="utf-8")
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def _plot_html(fig, div_id: str) -> str:
    # plotly.js is inlined once, in the page's head; every figure uses it
    return fig.to_html(include_plotlyjs=False, full_html=False, div_id=div_id, config=_PLOTLY_CONFIG)


def _row(df: pd.DataFrame, trial: int | None) -> pd.Series | None:
    if trial is None or df.empty:
        return None
    hit = df[df["trial"] == trial]
    return None if hit.empty else hit.iloc[0]


def _front_trials(df: pd.DataFrame, ms: list[str], directions: dict[str, bool]) -> pd.DataFrame:
    """Trials on the speed-up front of any metric, one per distinct config (repeats folded in), fastest first."""
    if df.empty or not ms:
        return df.iloc[0:0]
    on: dict[int, list[str]] = {}
    for m in ms:
        done = plotted(df, m, directions[m])
        for t in done.loc[done["front"], "trial"]:
            on.setdefault(int(t), []).append(m)
    rows = df[df["trial"].isin(on)].copy()
    rows["front_of"] = rows["trial"].map(lambda t: ", ".join(on[int(t)]))
    params = param_columns(df)
    rows["config_key"] = rows[params].apply(lambda r: "|".join(map(str, r.tolist())), axis=1) if params else ""
    firsts = rows.sort_values("trial").groupby("config_key", sort=False)
    keep = []
    for _, group in firsts:
        first = group.iloc[0].copy()
        others = [int(t) for t in group["trial"].iloc[1:]]
        first["repeats"] = ", ".join(map(str, others))
        keep.append(first)
    out = pd.DataFrame(keep)
    if "speedup" in out and out["speedup"].notna().any():
        return out.sort_values("speedup", ascending=False, na_position="last").reset_index(drop=True)
    return out.sort_values("latency_s").reset_index(drop=True)


def _with_params(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values("trial") if not df.empty else df


def _fmt_metric(v) -> str:
    f = _num(v)
    if f is None:
        return ""
    if math.isinf(f):
        return "identical" if f > 0 else "-inf"
    return f"{f:.4g}"


def _config_text(row: pd.Series, params: list[str]) -> str:
    items = [f"{p[6:]}={_fmt_value(row[p])}" for p in params if _present(row.get(p))]
    return ", ".join(items) or "no acceleration"


def _present(v) -> bool:
    return not (v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)))


def _fmt_value(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _headline(chosen: pd.Series | None, chosen_no: int | None, reason: str, ms: list[str], baseline,
              baseline_no: int | None) -> str:
    if chosen is None:
        return f'<div class="headline none"><b>No profile.</b> {_e(reason)}</div>'
    # the chosen row's own figures (tuner.pick.speed_of): the baseline timed beside it, not the baseline trial
    lat, base = _num(chosen.get("latency_s")), _num(chosen.get("baseline_s"))
    if base is None and baseline is not None:
        base = _num(baseline.get("latency_s"))
    speed, low, high = _num(chosen.get("speedup")), _num(chosen.get("speedup_low")), _num(chosen.get("speedup_high"))
    interval = f" [{low:.2f}-{high:.2f}]" if low is not None and high is not None else ""
    confirmed = {True: " (confirmed)", False: " (unconfirmed)"}.get(chosen.get("confirmed"), "")
    parts = [f"<span class='big'>{speed:.2f}x</span>{interval} faster{confirmed}" if speed else "speed-up unknown"]
    if chosen_no is not None and chosen_no == baseline_no:
        parts = ["the baseline itself, no acceleration"]
    if lat is not None and base is not None:
        parts.append(f"{lat:.4g} s against {base:.4g} s for the baseline")
    quality = ", ".join(f"{m} {_fmt_metric(chosen.get(m))}" for m in ms)
    params = [c for c in chosen.index if c.startswith("param.")]
    return (f'<div class="headline"><div><b>Profile: trial {chosen_no}</b> · ' + " · ".join(parts)
            + f"</div><div>{_e(quality)}</div><div class='config'>{_e(_config_text(chosen, params))}</div>"
            + f"<div class='note'>{_e(reason)}</div></div>")


def _fidelity_text(df: pd.DataFrame) -> str | None:
    """Trials screened, dropped by their screen, timed in full and confirmed."""
    if df.empty or "fidelity" not in df:
        return None
    ratio = df["screen_ratio"].notna() if "screen_ratio" in df else False
    if "promoted_from" in df:  # a parked screen's later full timing carries that screen: counted once
        ratio = ratio & df["promoted_from"].isna()
    screened = int((ratio | (df["fidelity"] == "screen")).sum())
    dropped = int(((df["fidelity"] == "screen") & (df["state"] == "pruned")).sum())
    full = int(((df["fidelity"] == "full") & (df["state"] == "complete")).sum())
    confirmed = int((df["confirmed"] == True).sum()) if "confirmed" in df else 0  # noqa: E712  (a column of objects)
    return f"{screened} screened ({dropped} dropped by their screen), {full} timed in full, {confirmed} confirmed"


def _phases_text(timing: dict) -> str | None:
    """Each phase's seconds, from the end of loading (the budget's start)."""
    parts = [("baseline", "startup_seconds"), ("screening", "screen_seconds"), ("full timing", "full_seconds"),
             ("confirmation", "confirm_seconds"), ("outputs", "output_seconds")]
    shown = [f"{name} {timing[key]:.0f} s" for name, key in parts if timing.get(key) is not None]
    if not shown:
        return None
    load = f"; loading {timing['load_seconds']:.0f} s, outside the budget" if timing.get("load_seconds") is not None else ""
    of = f" of {timing['budget_seconds']:.0f} s" if timing.get("budget_seconds") else ""
    return ", ".join(shown) + of + load


def _meta_html(df: pd.DataFrame, attrs: dict, title: str) -> str:
    model = attrs.get("model", {}) or {}
    hw = attrs.get("hardware", {}) or {}
    workload = attrs.get("workload", {}) or {}
    latency = attrs.get("latency", {}) or {}
    counts = df["state"].value_counts().to_dict() if not df.empty else {}
    total = df["duration_s"].dropna().sum() if "duration_s" in df else None
    gen = workload.get("generation") or {}
    prompts = workload.get("prompts") or []
    seeds = workload.get("seeds") or []
    study = [
        ("study", title),
        ("model", f"{model.get('name')} · {model.get('pipeline')} · family {model.get('family')}"),
        ("model fingerprint", " · ".join(str(x) for x in (model.get("fingerprint"), model.get("dtype")) if x)),
        ("budget", attrs.get("budget")),
        ("stopped by", attrs.get("stop_reason")),
        ("objective", attrs.get("objective")),
        ("quality floors", ", ".join(attrs.get("floors", []) or []) or "none"),
        ("memory cap", f"{attrs['max_memory_bytes'] / 2**30:.3g} GiB" if attrs.get("max_memory_bytes") else None),
        ("weight cap", f"{attrs['max_weight_bytes'] / 2**20:.4g} MiB" if attrs.get("max_weight_bytes") else None),
        ("sampler", attrs.get("sampler")),
        ("storage", attrs.get("storage")),
        ("trials", ", ".join(f"{v} {_state(k)}" for k, v in counts.items()) + (f" in {total:.0f} s" if total else "")),
        ("how far they got", _fidelity_text(df)),
        ("budget used", _phases_text(attrs.get("timing") or {})),
        ("created", attrs.get("created")),
    ]
    machine = [
        ("device", f"{hw.get('device')} · {hw.get('name')}" + (f" × {hw.get('count')}" if hw.get("count") else "")
         + (f" · {hw.get('threads')} thread(s) of {hw.get('cpus')} CPUs" if hw.get("threads") else "")),
        ("versions at tuning", f"torch {hw.get('torch')} · diffusers {hw.get('diffusers')}"),
        ("report written with", " · ".join(f"{p} {_version(p)}" for p in ("mindiesd-tune", "optuna", "plotly"))
         + f" · python {platform.python_version()}"),
        ("generation", ", ".join(f"{k}={v}" for k, v in gen.items() if v is not None)),
        ("latency", f"median of {latency.get('repeats')} calls after {latency.get('warmup')} warm-up, first prompt"
         if latency else None),
        ("prompts", "; ".join(f"“{p}” (seed {s})" for p, s in zip(prompts, seeds)) or "; ".join(prompts)),
    ]

    def table(rows):
        return "<table class='meta'>" + "".join(
            f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows if v not in (None, "")) + "</table>"

    return f"<div class='metas'><div><h3>Study</h3>{table(study)}</div><div><h3>Machine and workload</h3>{table(machine)}</div></div>"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "?"


def _sortable_table(rows: pd.DataFrame, ms: list[str], directions: dict[str, bool], chosen_no: int | None, *,
                    table_id: str, with_front: bool = False, with_state: bool = False, compact: bool = False) -> str:
    """``compact``: the parameters as one wrapping config column and no scroll box, so the table fits the page."""
    if rows.empty:
        return "<p class='note'>no trials</p>"
    params = param_columns(rows)
    if compact:
        rows = rows.assign(config=rows.apply(lambda r: _config_text(r, params), axis=1))
    cols: list[tuple[str, str]] = [("trial", "trial")]
    if with_state:
        cols.append(("state", "state"))
    cols += [("speedup", "speed-up"), ("latency_s", "latency (s)")]
    cols += [(m, f"{m} {'↑' if directions.get(m, True) else '↓'}") for m in ms]
    if "skipped_fraction" in rows:
        cols.append(("skipped_fraction", "skipped"))
    if "peak_memory_mb" in rows:
        cols.append(("peak_memory_mb", "peak MB"))
    if "weight_mb" in rows:
        cols.append(("weight_mb", "weights MB"))
    cols.append(("feasible", "meets floors"))
    if with_front:
        cols += [("front_of", "on the front of"), ("repeats", "same config as")]
    cols += [("config", "config")] if compact else [(p, p[6:]) for p in params]
    if with_state and "fail_reason" in rows:
        cols.append(("fail_reason", "reason"))
    head = "".join(f"<th title='sort by {_e(label)}'>{_e(label)}</th>" for _, label in cols)
    body = []
    for _, r in rows.iterrows():
        cells = []
        for key, _ in cols:
            v = r.get(key)
            sort_v, shown = _cell(key, v, ms)
            if key == "trial" and chosen_no is not None and int(v) == chosen_no:
                shown += " ★"
            if key == "speedup" and shown and _num(r.get("speedup_iqr")):
                shown += f" ± {_num(r.get('speedup_iqr')) / 2:.2f}"  # half the spread of the interleaved rounds
            wrap = " class='left config'" if key == "config" else ""
            cells.append(f"<td data-v='{_e(sort_v)}'{wrap}>{_e(shown)}</td>")
        cls = " class='chosen'" if chosen_no is not None and int(r["trial"]) == chosen_no else ""
        body.append(f"<tr{cls}>{''.join(cells)}</tr>")
    table = f"<table class='sortable{' compact' if compact else ''}' id='{table_id}'><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    return table if compact else f"<div class='scroll'>{table}</div>"


def _cell(key: str, v, ms: list[str]) -> tuple[str, str]:
    if not _present(v):
        return "", ""
    if key == "speedup":
        f = _num(v)
        return (repr(f), f"{f:.2f}x") if f is not None else ("", "")
    if key in ms:
        f = _num(v)
        return ("Infinity" if f == math.inf else repr(f)), _fmt_metric(v)
    if key in ("feasible",):
        return ("1", "yes") if bool(v) else ("0", "no")
    if key in ("latency_s", "skipped_fraction", "peak_memory_mb", "weight_mb") or isinstance(v, float):
        f = _num(v)
        return repr(f), f"{f:.4g}"
    return str(v), str(v)


def _gallery(front: pd.DataFrame, samples: Path, baseline_no: int | None, ms: list[str], attrs: dict) -> str:
    if front.empty:
        return "<p class='note'>no trial finished</p>"
    workload = attrs.get("workload", {}) or {}
    prompts, seeds = workload.get("prompts") or [], workload.get("seeds") or []
    caption = f"First prompt: “{_e(prompts[0])}”" + (f", seed {seeds[0]}" if seeds else "") + "." if prompts else ""
    base = thumbnail_html(samples, baseline_no, "baseline") if baseline_no is not None else "<div class='thumb missing'>no baseline</div>"
    params = param_columns(front)
    cards = []
    for _, r in front.iterrows():
        t = int(r["trial"])
        label = f"trial {t}"
        sample_trial = t
        if not any((samples / f"trial-{t:04d}.{ext}").is_file() for ext in ("png", "webp", "gif")) and r.get("repeats"):
            sample_trial = int(str(r["repeats"]).split(",")[0])  # a repeat answered from storage saved no sample
        speed = _num(r.get("speedup"))
        quality = " · ".join(f"{m} {_fmt_metric(r.get(m))}" for m in ms)
        if t == baseline_no:
            pair = f"<figure>{base}<figcaption>baseline</figcaption></figure>"
        else:
            diff = difference_html(samples, sample_trial, baseline_no, f"difference {label}") if baseline_no is not None else ""
            pair = (f"<figure>{base}<figcaption>baseline</figcaption></figure>"
                    f"<figure>{thumbnail_html(samples, sample_trial, label)}<figcaption>{label}</figcaption></figure>"
                    + (f"<figure>{diff}<figcaption>difference ×{DIFF_GAIN}</figcaption></figure>" if diff else ""))
        cards.append(
            f"<div class='card'><div class='pair'>{pair}</div><div class='caption'><b>{label}</b>"
            + (f" · {speed:.2f}x" if speed else "") + f"<br>{_e(quality)}<br><span class='config'>"
            + f"{_e(_config_text(r, params))}</span></div></div>"
        )
    caption += (f" The third image of each pair is |trial − baseline| × {DIFF_GAIN}, largest over the colour channels:"
                " black where they agree.")
    return f"<p class='note'>{caption}</p><div class='gallery'>{''.join(cards)}</div>"


def _importances_html(importances: dict[str, Any] | None):
    """(html, figure or None): the bars with how many trials they come from, or only the sentence saying why none."""
    if not importances:
        return "<p class='note'>not computed for this report</p>", None
    values = importances.get("importances") or {}
    note = importances.get("note") or ""
    if not values:
        return f"<p class='note'>No parameter importances: {_e(note)}.</p>", None
    fig = importance_figure(values)
    extra = f" ({_e(note)})" if note else ""
    return (f"<p class='note'>From {importances.get('n_trials')} complete trials, by {_e(importances.get('method', ''))}: "
            f"how much each parameter decides whether a trial is among the best for that target{extra}.</p>"
            + _plot_html(fig, "importances")), fig


def _failed_html(df: pd.DataFrame) -> str:
    if df.empty:
        return "<p class='note'>none</p>"
    bad = df[~df["state"].isin(["complete"])]
    if bad.empty:
        return "<p class='note'>none: every trial finished</p>"
    params = param_columns(df)
    rows = "".join(
        f"<tr><td>{int(r['trial'])}</td><td>{_e(_state(r['state']))}</td><td class='left'>{_e(r.get('fail_reason') if _present(r.get('fail_reason')) else '')}</td>"
        f"<td class='left'>{_e(_config_text(r, params))}</td></tr>" for _, r in bad.iterrows())
    return (f"<table class='failed' id='failed-table'><thead><tr><th>trial</th><th>state</th><th>reason</th>"
            f"<th>config</th></tr></thead><tbody>{rows}</tbody></table>")


def _state(name: str) -> str:
    return {"fail": "failed"}.get(name, name)


def _e(v) -> str:
    return html.escape("" if v is None else str(v), quote=True)


_SORT_JS = """
// plots drawn while the page was still loading took the width they saw then
window.addEventListener("load", function () {
  if (window.Plotly) { document.querySelectorAll(".js-plotly-plot").forEach(function (d) { Plotly.Plots.resize(d); }); }
});
// click a column header to sort by it; click again to reverse. Empty cells sort last.
document.querySelectorAll("table.sortable").forEach(function (table) {
  var heads = table.tHead.rows[0].cells;
  Array.prototype.forEach.call(heads, function (th, col) {
    th.addEventListener("click", function () {
      var asc = th.getAttribute("aria-sort") !== "ascending";
      Array.prototype.forEach.call(heads, function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", asc ? "ascending" : "descending");
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = a.cells[col].getAttribute("data-v"), y = b.cells[col].getAttribute("data-v");
        if (x === "" || y === "") { return (x === "") - (y === ""); }
        var nx = parseFloat(x), ny = parseFloat(y), c;
        if (!isNaN(nx) && !isNaN(ny)) { c = nx === ny ? 0 : (nx < ny ? -1 : 1); } else { c = x.localeCompare(y); }
        return asc ? c : -c;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>mindiesd-tune: {title}</title>
<script>{plotlyjs}</script>
<style>
body {{ font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5em auto; max-width: 1280px; color: #222; padding: 0 1em; }}
h1 {{ font-size: 1.6em; margin-bottom: .3em; }} h2 {{ margin-top: 1.6em; border-bottom: 1px solid #ddd; padding-bottom: .2em; }}
h3 {{ margin: .3em 0; font-size: 1em; color: #555; }}
.headline {{ background: #f3f7fb; border-left: 4px solid #ff7f0e; padding: .8em 1em; margin: 1em 0; line-height: 1.5; }}
.headline .big {{ font-size: 1.5em; font-weight: 700; color: #ff7f0e; }}
.headline.none {{ border-left-color: #d62728; }}
.note {{ color: #666; font-size: 13px; }} .config {{ font-family: ui-monospace, monospace; font-size: 12px; color: #444; }}
.metas {{ display: grid; grid-template-columns: 1fr 1fr; gap: 2em; }}
table {{ border-collapse: collapse; font-size: 13px; }}
th, td {{ border-bottom: 1px solid #e3e3e3; padding: 3px 8px; text-align: right; white-space: nowrap; }}
td.left, table.meta th, table.meta td {{ text-align: left; white-space: normal; }}
table.meta th {{ color: #555; font-weight: 600; width: 10em; vertical-align: top; }}
table.sortable th {{ cursor: pointer; user-select: none; background: #f7f7f7; position: sticky; top: 0; }}
table.sortable th[aria-sort=ascending]::after {{ content: " ▲"; }} table.sortable th[aria-sort=descending]::after {{ content: " ▼"; }}
tr.chosen td {{ background: #fff3e0; font-weight: 600; }}
table.compact {{ width: 100%; }} table.compact th {{ white-space: normal; }}
table.compact td.config {{ white-space: normal; overflow-wrap: anywhere; min-width: 14em; }}
.scroll {{ overflow-x: auto; max-height: 32em; overflow-y: auto; }}
.plots {{ display: grid; grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 1em; }}
.gallery {{ display: flex; flex-wrap: wrap; gap: 1em; }}
.card {{ border: 1px solid #e3e3e3; border-radius: 6px; padding: .6em; max-width: 100%; }}
.pair {{ display: flex; gap: .5em; }} figure {{ margin: 0; text-align: center; }} figcaption {{ font-size: 12px; color: #666; }}
img.thumb {{ min-height: 128px; max-width: 100%; image-rendering: pixelated; display: block; }}
.thumb.missing {{ width: 128px; height: 128px; background: #f3f3f3; color: #999; display: flex; align-items: center; justify-content: center; font-size: 12px; }}
.caption {{ font-size: 13px; margin-top: .4em; max-width: 420px; white-space: normal; }}
details summary {{ cursor: pointer; font-weight: 600; margin: 1em 0 .5em; }}
@media (max-width: 900px) {{ .metas, .plots {{ grid-template-columns: 1fr; }} }}
</style></head><body>
<h1>mindiesd-tune study: {title}</h1>
{headline}
{meta}
<h2>Latency against quality</h2>
<p class="note">Each point is a finished trial; hover for its settings. Filled circles are on the Pareto front
(nothing is both faster and better), open circles are dominated, crosses miss a quality floor (dashed line),
the star is the chosen profile.</p>
<div class="plots">{plots}</div>
<h2>Parameters against speed-up</h2>
<p class="note">One line per finished trial, from its parameters (axes scaled to their range; “not set” where a
parameter does not apply) to its speed-up on the last axis, with the interval of the interleaved timing rounds as an
error bar; the thick orange line is the chosen profile.</p>
{parallel}
<h2>Pareto trials ({n_front})</h2>
<p class="note">Trials on the front of any metric, one per distinct configuration; click a header to sort.</p>
{front_table}
<h2>Outputs on the front, beside the baseline</h2>
{gallery}
<h2>Quality prompt by prompt, held out, and cliffs</h2>
{quality}
<h2>Parameter importances</h2>
{importances}
<h2>Optimisation history</h2>
{history}
<h2>Trials without a result</h2>
{failed}
<details><summary>All {n_trials} trials</summary>
{all_table}
</details>
<script>{script}</script>
</body></html>
"""
