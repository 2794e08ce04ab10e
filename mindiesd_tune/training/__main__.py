"""Train every demo model in order, as the shipped weights were trained: ``python -m mindiesd_tune.training``.

Each stage resumes from its checkpoint when rerun. The step counts and time budgets are the ones
used for the shipped weights on one CPU thread; on a faster machine drop ``--time-budget`` to let
every stage run its full step count.
"""

from __future__ import annotations

import argparse

from . import clip, flux, wan

# (trainer, arguments, wall seconds budgeted) as the shipped weights were trained, on one CPU thread
# each (two stages ran at a time on a 2-core machine), so a stage may stop at its budget short of
# its step count. Rows of the same stage resume the previous row from its checkpoint; the Flux
# rows are three sessions' work (the decoder fine-tune and the transformer were resumed in the second;
# the third resumed the transformer at step 4000 with caption dropout, then low-noise-weighted
# timesteps and an outline-weighted loss, on the data set's corrected squares, and retrained demo-clip
# on them with the first row's command);
# the last Wan row extended the finished 2000-step run to 3000 steps (its cosine schedule restarts lower).
STAGES = [
    (clip.main, ["--steps", "700", "--batch", "96"], 600),
    (flux.main, ["--stage", "vae", "--steps", "400", "--batch", "8"], 480),
    (flux.main, ["--stage", "decoder", "--steps", "300", "--batch", "8"], 360),
    (flux.main, ["--stage", "decoder", "--steps", "700", "--batch", "8"], 600),
    (flux.main, ["--stage", "transformer", "--steps", "2000", "--batch", "24"], 2600),
    (flux.main, ["--stage", "transformer", "--steps", "2000", "--batch", "24"], 1200),
    (flux.main, ["--stage", "transformer", "--steps", "2500", "--batch", "24"], 2400),
    (flux.main, ["--stage", "transformer", "--steps", "8000", "--batch", "24", "--threads", "2"], 2280),
    (flux.main, ["--stage", "transformer", "--steps", "10000", "--batch", "24", "--caption-dropout", "0.1"], 950),
    (flux.main, ["--stage", "transformer", "--steps", "7000", "--batch", "24", "--caption-dropout", "0.1",
                 "--timestep-mean", "-0.8", "--edge-weight", "4"], 2480),
    (flux.main, ["--stage", "transformer", "--steps", "8000", "--batch", "24", "--caption-dropout", "0.1",
                 "--timestep-mean", "-0.8", "--edge-weight", "4", "--threads", "2"], 2400),
    (wan.main, ["--stage", "vae", "--steps", "1000", "--batch", "8", "--vae-frames", "9"], 2000),
    (wan.main, ["--stage", "transformer", "--steps", "2000", "--batch", "16", "--pool", "3072"], 1800),
    (wan.main, ["--stage", "transformer", "--steps", "3000", "--batch", "16", "--pool", "3072"], 1000),
]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--no-time-budget", action="store_true", help="run every stage to its full step count")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    for fn, stage_args, budget in STAGES:
        extra = [] if "--threads" in stage_args else ["--threads", str(args.threads)]
        if not args.no_time_budget:
            extra += ["--time-budget", str(budget)]
        fn(stage_args + extra)


if __name__ == "__main__":
    main()
