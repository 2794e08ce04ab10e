"""report.html in a real browser: headless Chromium draws every plot, raises no JavaScript error, sorts."""

import html
import json
import re
import shutil
import subprocess

import pytest

from report_study import write_run

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (Debian: apt-get install chromium)")

# Before any other script: keep every error the page raises.
RECORDER = """<script>
window.__errors = [];
window.addEventListener("error", function (e) { window.__errors.push(String(e.message || e)); });
window.addEventListener("unhandledrejection", function (e) { window.__errors.push("unhandled: " + e.reason); });
var __consoleError = console.error;
console.error = function () { window.__errors.push("console.error: " + Array.prototype.join.call(arguments, " ")); __consoleError.apply(console, arguments); };
</script>"""

# After the page loaded: what was drawn, whether the thumbnails decoded, and what clicking headers does.
PROBE = """<script>
window.addEventListener("load", function () { setTimeout(function () {
  var plots = {};
  document.querySelectorAll(".js-plotly-plot").forEach(function (d) {
    plots[d.id] = {svg: d.querySelectorAll("svg.main-svg").length,
                   traces: d.querySelectorAll(".scatterlayer .trace, .barlayer .trace").length,
                   points: d.querySelectorAll(".scatterlayer .point, .barlayer .point").length,
                   width: d.getBoundingClientRect().width,
                   svgWidth: parseFloat((d.querySelector("svg.main-svg") || {getAttribute: function () { return 0; }}).getAttribute("width"))};
  });
  var broken = Array.prototype.filter.call(document.querySelectorAll("img"), function (i) { return !(i.complete && i.naturalWidth > 0); }).length;
  var table = document.getElementById("front-table");
  function order() { return Array.prototype.map.call(table.tBodies[0].rows, function (r) { return parseInt(r.cells[0].getAttribute("data-v")); }); }
  function header(label) { return Array.prototype.filter.call(table.tHead.rows[0].cells, function (h) { return h.textContent === label; })[0]; }
  var fits = {table: table.scrollWidth, box: table.parentElement.clientWidth,
              page: document.documentElement.scrollWidth, viewport: document.documentElement.clientWidth};
  var sorts = {initial: order()};
  header("latency (s)").click(); sorts.latencyAsc = order();
  header("latency (s)").click(); sorts.latencyDesc = order();
  header("speed-up").click(); sorts.speedupAsc = order();
  var pre = document.createElement("pre"); pre.id = "probe";
  pre.textContent = JSON.stringify({errors: window.__errors, plots: plots, images: document.images.length, broken: broken, sorts: sorts, fits: fits});
  document.body.appendChild(pre);
}, 300); });
</script>"""


def render(page_path, tmp_path):
    probe_page = tmp_path / "probe.html"
    text = page_path.read_text()
    text = text.replace("<head>", "<head>" + RECORDER, 1).replace("</body>", PROBE + "</body>", 1)
    probe_page.write_text(text)
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--disable-extensions", f"--user-data-dir={tmp_path / 'profile'}",
           "--enable-logging=stderr", "--v=0", "--window-size=1280,2000", "--virtual-time-budget=15000", "--dump-dom",
           probe_page.as_uri()]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    m = re.search(r'<pre id="probe">(.*?)</pre>', r.stdout, re.S)
    assert m, f"the probe did not run (exit {r.returncode}): {r.stderr[-2000:]}"
    return json.loads(html.unescape(m.group(1))), r.stderr


@pytest.mark.slow
def test_report_draws_every_plot_without_javascript_errors(tmp_path):
    write_run(tmp_path / "run")
    result, stderr = render(tmp_path / "run" / "report.html", tmp_path)
    assert result["errors"] == []
    assert "Uncaught" not in stderr
    assert set(result["plots"]) == {"pareto", "pareto-ssim", "parallel", "importances", "history"}
    for name, plot in result["plots"].items():
        assert plot["svg"] >= 1 and plot["traces"] >= 2 and plot["points"] >= 3, (name, plot)
        assert abs(plot["svgWidth"] - plot["width"]) <= 2, (name, plot)  # drawn to the width of its box
    assert result["plots"]["parallel"]["traces"] >= 10  # a line per distinct trial and the speed-up intervals
    assert result["images"] >= 5 and result["broken"] == 0
    fits = result["fits"]  # the Pareto table wraps instead of scrolling sideways
    assert fits["table"] <= fits["box"] and fits["page"] <= fits["viewport"], fits
    sorts = result["sorts"]
    assert sorts["initial"] == [3, 7, 2, 1, 0]
    assert sorts["latencyAsc"] == [3, 7, 2, 1, 0] and sorts["latencyDesc"] == [0, 1, 2, 7, 3]
    assert sorts["speedupAsc"] == [0, 1, 2, 7, 3]


@pytest.mark.slow
def test_video_report_plays_animated_thumbnails(tmp_path):
    write_run(tmp_path / "run", video=True)
    result, stderr = render(tmp_path / "run" / "report.html", tmp_path)
    assert result["errors"] == [] and "Uncaught" not in stderr
    assert result["images"] >= 5 and result["broken"] == 0
