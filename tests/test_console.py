"""The study's console on a terminal: the header, the progress bar and the closing summary."""

import re

import optuna
from rich.console import Console

from mindiesd_tune.tuner import parse_budget, parse_floor, run_study
from mindiesd_tune.tuner.budget import Budget
from mindiesd_tune.tuner.progress import ProgressUI


def test_header_progress_bar_trial_lines_and_summary_on_a_terminal(tmp_path):
    con = Console(record=True, force_terminal=True, width=200, color_system=None)
    outcome = run_study("fake", parse_budget("4t"), tmp_path, worker_factory="fakes:make_fake", isolate=False,
                        floors=[parse_floor("psnr>=30")], console=con, log=lambda line: con.print(line, markup=False))
    text = con.export_text()
    header = ["model:     fake (FakePipeline, family dit-image)", "workload:  4x4 px, 4 steps, 1 prompt(s), seeds 0",
              "device:    cpu fake x1", "budget:    4 trials; floors: psnr>=30", "sampler:   tpe; storage: sqlite:///"]
    for line in header:
        assert line in text, line
    assert "tuning" in text and "4/4 trials" in text and "ETA" in text  # the bar, against the budget
    assert text.count("trial   ") >= 4  # one line per trial
    summary = text[text.index("trials:    "):]
    assert re.search(r"trials:    (\d) complete, (\d) pruned, 0 failed; ended: trial budget spent", summary)
    done, pruned = map(int, re.search(r"(\d) complete, (\d) pruned", summary).groups())
    assert done + pruned == 4
    assert "on the latency/quality Pareto front" in summary
    assert f"pick:      {outcome.reason}" in summary and "s per trial" in summary
    # the header comes before the first trial, the summary after the last
    assert text.index("sampler:") < text.index("trial   0") < text.index("pick:")


def test_quiet_prints_no_header_or_summary(tmp_path):
    lines = []
    run_study("fake", parse_budget("2t"), tmp_path, worker_factory="fakes:make_fake", isolate=False, quiet=True,
              log=lines.append)
    assert not [line for line in lines if line.startswith(("model:", "workload:", "pick:", "trials:"))]


def test_eta_is_the_nearer_of_the_time_left_and_the_trials_left_at_the_pace_so_far():
    ui = ProgressUI(Budget(seconds=100, trials=10), study=None, enabled=False)
    assert ui.eta(0, 10) == 90  # no pace yet: the time left
    assert ui.eta(2, 10) == 40  # 8 trials at 5 s
    assert ui.eta(1, 60) == 40  # the time runs out first
    assert ProgressUI(Budget(trials=10), study=None, enabled=False).eta(0, 5) is None


def test_an_infeasible_trial_line_names_the_constraints_it_breaks():
    from mindiesd_tune.tuner.progress import infeasible_text

    def trial(constraints):
        return optuna.trial.create_trial(values=[0.5, 31.0], constraints=constraints)

    assert infeasible_text(trial({"psnr>=30": -1.0, "weight_bytes": 3.5})) == "over the weight cap"
    assert infeasible_text(trial({"psnr>=30": 2.0, "memory": 0.0})) == "misses psnr>=30"
    assert infeasible_text(trial({"psnr>=30": 2.0, "memory": 1.0})) == "misses psnr>=30, over the memory cap"
