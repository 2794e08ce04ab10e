"""report.html: a self-contained Pareto report that tells every kind of trial apart; trials.csv/.parquet."""

import base64
import importlib.util
import io
import json
import math
import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mindiesd_tune.reports import non_dominated
from report_study import CHOSEN, DOMINATED, FAIL_REASON, FRONT, build_study, write_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "run"
    outcome = write_run(out)
    return out, outcome, (out / "report.html").read_text()


def _array(v):
    """A trace array as plotly.py wrote it: a list, or a base64 typed array."""
    if isinstance(v, dict) and "bdata" in v:
        return np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"])).tolist()
    return list(v)


def figures(page: str) -> dict:
    """div id -> (traces, layout) of every plotly figure on the page."""
    out = {}
    decoder = json.JSONDecoder()
    for m in re.finditer(r'Plotly\.newPlot\(\s*"([^"]+)",\s*', page):
        data, end = decoder.raw_decode(page, m.end())
        rest = page[end:].lstrip()[1:].lstrip()
        layout, _ = decoder.raw_decode(rest)
        out[m.group(1)] = (data, layout)
    return out


def traces_by_name(traces) -> dict:
    return {t.get("name"): t for t in traces}


def table_rows(page: str, table_id: str) -> list[list[str]]:
    body = re.search(rf"id='{table_id}'>.*?<tbody>(.*?)</tbody>", page, re.S).group(1)
    return [re.findall(r"<td data-v='([^']*)'", row) for row in re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S)]


def test_report_is_one_file_that_works_offline(run):
    _, _, page = run
    assert "<script src" not in page and "<link" not in page
    markup = re.sub(r"<script[^>]*>.*?</script>", "", page, flags=re.S)
    assert not re.search(r"""(src|href)=["']https?:""", markup)  # nothing to fetch; plotly.js's own strings aside
    # the library inlined exactly once, the basic bundle: every trace here is a scatter or a bar
    assert page.count("* plotly.js (basic - minified) v") == 1 and page.count("* plotly.js") == 1
    assert re.search(r'src="data:image/jpeg;base64,', page)  # samples embedded, compressed
    assert "data:image/png" not in page


def test_one_pareto_plot_per_metric_telling_trial_kinds_apart(run):
    _, _, page = run
    figs = figures(page)
    psnr, ssim = traces_by_name(figs["pareto"][0]), traces_by_name(figs["pareto-ssim"][0])
    assert "psnr" in figs["pareto"][1]["yaxis"]["title"]["text"] and "ssim" in figs["pareto-ssim"][1]["yaxis"]["title"]["text"]
    assert sorted(_array(psnr["Pareto front"]["customdata"])) == [0, 1, 2, 7, 8]
    assert _array(psnr["below a quality floor"]["customdata"]) == [3]
    assert sorted(_array(psnr["dominated"]["customdata"])) == sorted(DOMINATED)
    assert sorted(_array(ssim["Pareto front"]["customdata"])) == [0, 1, 7, 8]
    assert sorted(_array(ssim["dominated"]["customdata"])) == sorted(DOMINATED | {2})
    # x is the speed-up the pick uses (baseline 1.0 s / 0.45 s), not the absolute latency
    assert _array(psnr["chosen profile"]["x"]) == pytest.approx([1 / 0.45]) == _array(ssim["chosen profile"]["x"])
    # the floor is drawn on the psnr plot only
    assert [s["y0"] for s in figs["pareto"][1].get("shapes", [])] == [30.0]
    assert not figs["pareto-ssim"][1].get("shapes")
    # failed and pruned trials have no latency: the plots say how many and where to look
    assert "2 failed, 1 pruned" in figs["pareto"][1]["title"]["text"]


def test_identical_outputs_are_drawn_above_the_best_finite_psnr(run):
    _, _, page = run
    front = traces_by_name(figures(page)["pareto"][0])["Pareto front"]
    ys = dict(zip(_array(front["customdata"]), _array(front["y"])))
    assert math.isfinite(ys[0]) and ys[0] > 40.0


def test_hover_shows_the_config(run):
    _, _, page = run
    front = traces_by_name(figures(page)["pareto"][0])["Pareto front"]
    hover = dict(zip(_array(front["customdata"]), front["text"]))
    assert "cache.threshold = 0.2" in hover[7] and "cache.max_cached_steps = 4" in hover[7] and "psnr 31" in hover[7]
    assert "cache.method = none" in hover[0] and "psnr identical (inf)" in hover[0]


def test_history_shows_failed_and_pruned_trials_in_a_strip(run):
    _, _, page = run
    layout_traces = traces_by_name(figures(page)["history"][0])
    assert _array(layout_traces["failed"]["x"]) == [5, 9] and _array(layout_traces["pruned"]["x"]) == [6]
    assert FAIL_REASON[:60] in layout_traces["failed"]["text"][0]
    best = layout_traces["fastest feasible so far"]
    assert _array(best["y"])[-1] == 0.45
    failed = re.search(r"id='failed-table'>(.*?)</table>", page, re.S).group(1)
    assert "OutOfMemoryError: CUDA out of memory" in failed and "pruned" in failed


def test_pareto_table_lists_front_trials_fastest_first_with_repeats_folded(run):
    _, _, page = run
    rows = table_rows(page, "front-table")
    assert [int(r[0]) for r in rows] == [3, 7, 2, 1, 0]
    assert {int(r[0]) for r in rows} == FRONT
    header = re.search(r"id='front-table'><thead><tr>(.*?)</tr>", page).group(1)
    labels = re.findall(r"<th[^>]*>([^<]*)</th>", header)
    for label in ("speed-up", "psnr ↑", "ssim ↑", "same config as", "config"):
        assert label in labels
    assert not any(label.startswith("cache.") for label in labels)  # one wrapping config column: fits the page
    row1 = rows[[int(r[0]) for r in rows].index(1)]
    assert row1[labels.index("same config as")] == "8"
    assert float(row1[labels.index("speed-up")]) == pytest.approx(1 / 0.7)
    assert "cache.threshold=0.05, cache.warmup_steps=2" in row1[labels.index("config")]
    assert "1.43x ± 0.03</td>" in page  # the speed-up with half the spread of its interleaved rounds
    assert re.search(rf"<tr class='chosen'><td data-v='{CHOSEN}'>{CHOSEN} ★</td>", page)


def test_each_front_trial_is_shown_beside_the_baseline(run):
    _, _, page = run
    gallery = re.search(r"<div class='gallery'>(.*?)</div>\s*<h2>", page, re.S).group(1)
    for t in FRONT - {0}:
        assert f'title="trial {t}" src="data:image/jpeg;base64,' in gallery
        assert f'title="difference trial {t}" src="data:image/jpeg;base64,' in gallery
    assert gallery.count('title="baseline"') == len(FRONT)


def test_importances_and_metadata(run):
    _, _, page = run
    imp = traces_by_name(figures(page)["importances"][0])
    assert set(imp) == {"for latency_s", "for psnr"}
    assert "cache.threshold" in imp["for psnr"]["y"]
    assert "From 10 complete trials, by PED-ANOVA" in page
    from mindiesd_tune.reports.figures import IMPORTANCE_BAR_PX, IMPORTANCE_BASE_PX

    bars = sum(len(t["y"]) for t in imp.values())  # sized to its bars, not a fixed minimum
    assert figures(page)["importances"][1]["height"] == IMPORTANCE_BASE_PX + IMPORTANCE_BAR_PX * bars
    for needle in ("tiny-flux-random", "FluxPipeline", "dit-image", "torch 2.14.1", "diffusers 0.42.1", "12 trials",
                   "psnr&gt;=30", "optuna", "median of 3 calls after 1 warm-up", "seed 1", "0123456789abcdef"):
        assert needle in page, needle


def test_importances_need_enough_trials(tmp_path):
    import optuna

    from mindiesd_tune.reports import write_report
    from mindiesd_tune.tuner.importance import param_importances
    from mindiesd_tune.tuner.table import trials_table

    full = build_study()
    small = optuna.create_study(directions=["minimize", "maximize"])
    small.add_trials(full.trials[:3])
    imp = param_importances(small, "psnr")
    assert imp["importances"] == {} and "at least 10 complete trials" in imp["note"]
    page = write_report(trials_table(small), full.user_attrs, tmp_path / "r.html", None, "no floor",
                        importances=imp).read_text()
    section = re.search(r"<h2>Parameter importances</h2>(.*?)<h2>", page, re.S).group(1)
    assert section.strip() == "<p class='note'>No parameter importances: needs at least 10 complete trials; this study has 3.</p>"
    assert "importances" not in figures(page)


def test_video_outputs_are_animated_thumbnails(tmp_path):
    write_run(tmp_path / "video", video=True)
    page = (tmp_path / "video" / "report.html").read_text()
    gallery = re.search(r"<div class='gallery'>(.*?)</div>\s*<h2>", page, re.S).group(1)
    assert gallery.count('src="data:image/webp;base64,') == 2 * (len(FRONT) - 1) + 1
    assert gallery.count('title="difference trial') == len(FRONT) - 1  # drawn from the frame strips


def test_tuner_saves_an_animated_webp_beside_the_frame_strip(tmp_path):
    from mindiesd_tune.tuner.outputs import _save_sample

    video = np.random.default_rng(0).integers(0, 255, (5, 8, 12, 3), dtype=np.uint8)
    _save_sample(tmp_path / "trial-0003.png", video)
    strip, anim = Image.open(tmp_path / "trial-0003.png"), Image.open(tmp_path / "trial-0003.webp")
    assert strip.size == (60, 8) and anim.n_frames == 5 and anim.size == (12, 8)
    _save_sample(tmp_path / "trial-0004.png", video[0])
    assert not (tmp_path / "trial-0004.webp").exists()


def test_trials_csv_has_a_column_per_parameter_and_metric(run):
    out, _, _ = run
    df = pd.read_csv(out / "trials.csv")
    assert list(df.columns[:6]) == ["trial", "state", "latency_s", "speedup", "psnr", "ssim"]
    params = [c for c in df.columns if c.startswith("param.")]
    assert params == ["param.cache.method", "param.sparse.method", "param.cache.threshold", "param.cache.warmup_steps",
                      "param.cache.max_cached_steps"]  # in the order the trials first name them
    assert {"fail_reason", "feasible", "pareto"} <= set(df.columns)
    assert df.set_index("trial").loc[5, "state"] == "fail"  # Optuna's TrialState.FAIL
    assert df.set_index("trial").loc[5, "fail_reason"] == FAIL_REASON
    assert df.set_index("trial").loc[6, "state"] == "pruned"
    assert math.isinf(df.set_index("trial").loc[0, "psnr"])
    text = (out / "trials.csv").read_text().splitlines()
    assert text[2].split(",")[params_index(df, "param.cache.warmup_steps")] == "2"  # integers stay integers
    has_arrow = importlib.util.find_spec("pyarrow") is not None
    assert (out / "trials.parquet").is_file() == has_arrow
    if has_arrow:
        pq = pd.read_parquet(out / "trials.parquet")
        assert list(pq.columns) == list(df.columns) and len(pq) == len(df)


def params_index(df, column):
    return list(df.columns).index(column)


def test_non_dominated_keeps_ties_and_respects_direction():
    lat = np.array([1.0, 0.5, 0.5, 0.8, 0.2])
    q = np.array([40.0, 30.0, 30.0, 29.0, 10.0])
    assert non_dominated(lat, q).tolist() == [True, True, True, False, True]
    assert non_dominated(lat, q, higher=False).tolist() == [False, False, False, False, True]


@pytest.mark.parametrize("states", [[], ["fail", "fail"], ["fail", "pruned"]])
def test_report_of_a_study_without_a_finished_trial(tmp_path, states):
    import optuna

    from mindiesd_tune.reports import write_report
    from mindiesd_tune.tuner.table import trials_table

    full = build_study()
    study = optuna.create_study(directions=["minimize", "maximize"])
    kinds = {"fail": optuna.trial.TrialState.FAIL, "pruned": optuna.trial.TrialState.PRUNED}
    for s in states:
        study.add_trial(optuna.trial.create_trial(state=kinds[s], user_attrs={"fail_reason": "RuntimeError: boom"}))
    page = write_report(trials_table(study), full.user_attrs, tmp_path / "r.html", None, "no trial finished",
                        metrics={"psnr": True, "ssim": True}).read_text()
    assert "<b>No profile.</b> no trial finished" in page
    if states:
        assert "RuntimeError: boom" in page


def test_relative_floors_are_drawn_at_their_bound_and_a_memory_cap_is_named(tmp_path):
    from mindiesd_tune.reports import write_report
    from mindiesd_tune.reports.figures import floor_bounds
    from mindiesd_tune.tuner.table import trials_table

    study = build_study()
    df = trials_table(study)
    baseline = df[df["trial"] == 0].iloc[0]
    assert floor_bounds(["ssim>=0.9x", "psnr>=30", "nonsense"], baseline) == [("ssim", 0.9, "ssim>=0.9x"), ("psnr", 30.0, "psnr>=30")]
    attrs = {**study.user_attrs, "floors": ["ssim>=0.9x"], "max_memory_bytes": 2**33}
    page = write_report(df, attrs, tmp_path / "r.html", CHOSEN, "fastest", metrics={"psnr": True, "ssim": True}).read_text()
    figs = figures(page)
    assert [s["y0"] for s in figs["pareto-ssim"][1]["shapes"]] == [0.9] and not figs["pareto"][1].get("shapes")
    assert "below a quality floor or over the memory cap" in traces_by_name(figs["pareto"][0])
    assert "8 GiB" in page


def test_a_lower_is_better_metric_gets_its_own_plot_with_the_front_below(tmp_path):
    from mindiesd_tune.reports import write_report
    from mindiesd_tune.tuner.table import trials_table

    study = build_study()
    df = trials_table(study)
    lpips = {0: 0.0, 1: 0.02, 2: 0.05, 3: 0.3, 4: 0.01, 7: 0.2, 8: 0.02}
    df["lpips"] = df["trial"].map(lpips)
    page = write_report(df, study.user_attrs, tmp_path / "r.html", CHOSEN, "fastest",
                        metrics={"psnr": True, "ssim": True, "lpips": False}).read_text()
    fig = figures(page)["pareto-lpips"]
    names = traces_by_name(fig[0])
    assert "lower is better" in fig[1]["yaxis"]["title"]["text"]
    # on lpips trial 4 (0.75 s, 0.01) is no longer dominated by trial 1 (0.7 s, 0.02); trial 3 is on the
    # front too but drawn as below the psnr floor
    assert sorted(_array(names["Pareto front"]["customdata"])) == [0, 1, 2, 4, 7, 8]
    assert "lpips ↓" in page


def test_importances_follow_the_objective_direction():
    import optuna

    from mindiesd_tune.tuner.importance import param_importances

    def study_for(direction):
        s = optuna.create_study(directions=["minimize", direction])
        dist = {"cache.threshold": optuna.distributions.FloatDistribution(0.01, 1.0, log=True),
                "cache.warmup_steps": optuna.distributions.IntDistribution(0, 4)}
        for i in range(20):
            thr, warm = 0.01 * 1.25 ** i, i % 5
            # the lowest values come from warmup_steps=0, the highest from the largest thresholds
            q = 0.001 * thr if warm == 0 else 1.0 + thr
            s.add_trial(optuna.trial.create_trial(params={"cache.threshold": thr, "cache.warmup_steps": warm},
                                                  distributions=dist, values=[1.0 - 0.5 * thr, q]))
        return s

    def top(direction):
        imp = param_importances(study_for(direction), "q")["importances"]["q"]
        return max(imp, key=imp.get)

    assert top("minimize") == "cache.warmup_steps"  # best = lowest: decided by warmup_steps
    assert top("maximize") == "cache.threshold"  # best = highest: decided by the threshold


def test_parallel_coordinates_of_parameters_against_speedup(run):
    _, _, page = run
    traces, layout = figures(page)["parallel"]
    assert {t["type"] for t in traces} == {"scatter"}  # SVG, not the WebGL parcoords trace
    ticks = layout["xaxis"]["ticktext"]
    assert ticks[-1] == "<b>speed-up</b>" and "cache.threshold" in ticks and "cache.method" in ticks
    lines = [t for t in traces if t.get("mode") == "lines+markers"]
    trials = sorted(_array(t["customdata"])[0] for t in lines)
    assert trials == [0, 1, 2, 3, 4, 7, 10, 11, 12]  # every complete trial once; the repeat 8 folded into 1
    for t in lines:
        ys = _array(t["y"])
        assert len(ys) == len(ticks) and all(-0.2 <= y <= 1.0 for y in ys)
    chosen = next(t for t in lines if _array(t["customdata"])[0] == CHOSEN)
    assert chosen["line"]["width"] > max(t["line"]["width"] for t in lines if t is not chosen)
    interval = traces_by_name(traces)["speed-up and its interval"]
    err = interval["error_y"]
    assert all(h > 0 for h in _array(err["array"])) and _array(err["array"]) == _array(err["arrayminus"])
    # the fastest trial's line ends at the top of the speed-up axis, less its half interval
    fastest = next(t for t in lines if _array(t["customdata"])[0] == 3)
    assert _array(fastest["y"])[-1] == pytest.approx(1 - _array(err["array"])[-1])


def _sized_run(out, n_trials=8, px=512):
    """An 8-trial study whose outputs are 512x512, a real model's size rather than the demo's 64x64."""
    import optuna

    from mindiesd_tune.tuner import write_outputs
    from report_study import DISTRIBUTIONS, FLOOR, build_study

    template = build_study()
    study = optuna.create_study(study_name="sized", directions=["minimize", "maximize"])
    for k, v in template.user_attrs.items():
        study.set_user_attr(k, v)
    samples = out / "samples"
    samples.mkdir(parents=True)
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:px, 0:px]
    base = np.stack([(xx * 255 // px), (yy * 255 // px), ((xx + yy) * 127 // px)], axis=-1).astype(np.int16)
    for n in range(n_trials):
        params = {"cache.method": "none", "sparse.method": "none"} if n == 0 else {
            "cache.method": "first_block", "cache.threshold": 0.02 * (n + 1), "cache.warmup_steps": n % 4,
            "cache.max_cached_steps": [-1, 4, 8, 12][n % 4], "sparse.method": "none"}
        lat, psnr = 1.0 - 0.08 * n, (math.inf if n == 0 else 45.0 - 2 * n)
        noise = rng.normal(0, 2 * n, base.shape) if n else 0
        Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).save(samples / f"trial-{n:04d}.png")
        study.add_trial(optuna.trial.create_trial(
            params=params, distributions={k: DISTRIBUTIONS[k] for k in params}, values=[lat, min(psnr, 100.0)],
            user_attrs={"latency_s": lat, "latency": {"median_s": lat}, "metrics": {"psnr": psnr, "ssim": 1.0 - 0.01 * n},
                        "speedup": 1 / lat, "speedup_iqr": 0.03, "baseline_latency": {"median_s": 1.0}},
            constraints={FLOOR: 30.0 - min(psnr, 100.0)}))
    write_outputs(study, out)
    return (out / "report.html").read_text()


def test_an_eight_trial_report_is_under_a_megabyte_besides_plotly(tmp_path):
    page = _sized_run(tmp_path / "run")
    plotly_js = re.search(r"<script>(/\*\*\n\* plotly\.js.*?)</script>", page, re.S).group(1)
    rest = len(page.encode()) - len(plotly_js.encode())
    assert rest < 1_000_000, rest
    assert len(plotly_js.encode()) < 1_500_000  # the basic bundle, not the 3.5 MB full library
    # a front of 8 images at 512x512, each beside the baseline and its difference: thumbnails, not the PNGs
    imgs = re.findall(r'src="data:image/(\w+);base64,([^"]+)"', page)
    assert len(imgs) >= 20 and {kind for kind, _ in imgs} == {"jpeg"}
    for _, data in imgs:
        assert max(Image.open(io.BytesIO(base64.b64decode(data))).size) <= 192
