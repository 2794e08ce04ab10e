"""benchmarks/tuner.py: the replay table holds, measured, the points the tuner's study derives."""

import json
import os
import tempfile
from pathlib import Path

import optuna
import pytest

from benchmarks import tuner as bench

MODEL = "tiny-flux-random"


def derived_missing(table: dict, seed: int = 0) -> list:
    """Presets, refinements and combinations a replayed default study runs that the table lacks."""
    f = Path(tempfile.mkdtemp()) / "table.json"
    f.write_text(json.dumps(table, default=float))
    os.environ[bench.TABLE_ENV] = str(f)
    return bench.derived_unmeasured(bench.replay(MODEL, 12, seed, "psnr>=30"), table)


@pytest.mark.slow
def test_extending_the_table_measures_what_the_study_derives(monkeypatch):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    monkeypatch.setenv(bench.TABLE_ENV, "")
    table = bench.measure_table(MODEL, 2)
    # the presets are measured rows; what refinement derives from them may not be
    before = len(table["rows"])
    assert all(r["speedup"] is None or r["speedup"] > 0 for r in table["rows"])
    added = bench.extend_table(table, MODEL, seeds=1, trials=12, floor="psnr>=30", rounds=3)
    assert added > 0 and len(table["rows"]) == before + added
    assert not derived_missing(table), "after extending, every derived point of the replay is a measured row"
    new = table["rows"][before:]
    assert all(set(r) >= {"params", "config", "latency_s", "speedup", "metrics"} for r in new)
    assert all(k in table["distributions"] for r in new for k in r["params"])
