"""The command line's options: what each command takes, its default and its help.

Kept apart from cli.py so that each command there is its signature and the one library call it
makes. Each is a typer ``OptionInfo``; typer names an option without explicit flags after the
parameter it is the default of.
"""

from __future__ import annotations

from types import SimpleNamespace

import typer

DEFAULT_FLOOR = "psnr>=30"
OUT_HELP = ("folder for profile.yaml, report.html and trials.csv (default RUN_DIR); "
            "a profile.yaml already there is kept as profile.<n>.yaml")
FORCE_HELP = "run a profile tuned for another model anyway (its settings and measurements may not fit)"
VERBOSE_HELP = "show the loading bars and warnings of diffusers and transformers"
STORE_HELP = ("profile store URL: look up the profile stored for this model's weights, this machine and the "
              "workload asked for (instead of --profile)")

# the workload, shared by tune, bench and run (None: the model's or profile's own)
W = SimpleNamespace(
    height=typer.Option(None, "--height", min=1, help="image height in px (default: the model's)"),
    width=typer.Option(None, "--width", min=1, help="image width in px (default: the model's)"),
    frames=typer.Option(None, "--frames", min=1, help="video frames (default: the model's)"),
    steps=typer.Option(None, "--steps", min=1, help="denoising steps of the workload, the baseline's (default: the model's)"),
    guidance=typer.Option(None, "--guidance", help="guidance scale (default: the model's)"),
    true_cfg=typer.Option(None, "--true-cfg", help="true classifier-free guidance scale, where the pipeline has one"),
    negative_prompt=typer.Option(None, "--negative-prompt", help="negative prompt of every call"),
    prompts_file=typer.Option(None, "--prompts", help="text file, one prompt a line"),
    seeds=typer.Option(None, "--seeds", help="comma list, e.g. 0,1: one per prompt, or every prompt with every seed"),
)

T = SimpleNamespace(  # tune
    model=typer.Argument(..., help="built-in name (see `models`), a diffusers folder, or a cached hub id"),
    budget=typer.Option("90s", "--budget", "-b", help="wall clock from the end of model loading to the outputs on disk "
        "(90s, 30m, 2h), a trial count (40t) or both (30m+40t); whichever ends first"),
    dry_run=typer.Option(False, "--dry-run", help="load the model, time the baseline, print what the budget buys and exit, writing nothing"),
    screening=typer.Option(True, "--screening/--no-screening", help="screen each trial (one untimed look, one timing pair) and time in full only those that may reach the front"),
    promotion=typer.Option(3, "--promotion", help="successive halving: of the screens that may reach the front, the best 1/N are timed in full, the others wait (1: each at once)"),
    out=typer.Option(None, "--out", "-o", help="run folder (default runs/<model>-<time>)"),
    objective=typer.Option("psnr", help="second axis of the front: psnr, ssim, ms_ssim, lpips (minimised), clip, a set distance kid_clip, kvd_clip, kvd_i3d, fvd (minimised), or weight_bytes (minimised)"),
    quality_floor=typer.Option([DEFAULT_FLOOR], "--quality-floor", help="METRIC[.AGG]>=VALUE (AGG over the prompts: mean, min, max, p10, p90; e.g. psnr.min>=28), or METRIC>=Fx relative to the baseline; repeatable"),
    max_memory=typer.Option(None, "--max-memory", help="peak memory cap, e.g. 24GB (device memory; process RSS on the CPU)"),
    max_weight_bytes=typer.Option(None, "--max-weight-bytes", help="cap on the linear layers' weights with their quantisation scales, all components, e.g. 40MB"),
    sampler=typer.Option("tpe", help="tpe (constrained multivariate TPE), nsga2 or gp, each refining the front along the methods' knobs; or random (pure random search)"),
    pick=typer.Option("fastest", help="which trial becomes the profile: fastest, knee, robust (the fastest whose bolder neighbours still meet the floors) or trial:N"),
    holdout=typer.Option("auto", help="prompts kept out of the search, on which the pick's quality is measured and the floors must hold: a count (0: none), a file of prompts, one per line, or auto (8 for a built-in demo model, else 2)"),
    judge=typer.Option("auto", help="a floor on a mean over the tuning prompts is judged on its one-sided 90 percent confidence bound (bound), on the mean itself (mean), or auto: mean where held-out prompts check the pick, else bound"),
    fvd_weights=typer.Option(None, "--fvd-weights", help="a local TorchScript I3D for the kvd_i3d and fvd set distances (never downloaded)"),
    prompt=typer.Option([], "--prompt", "-p", help="prompt of the fixed workload; repeatable"),
    seed=typer.Option(0, help="seed of the sampler and of the first prompt"),
    device=typer.Option(None, help="cuda, npu or cpu (default: the best available)"),
    dtype=typer.Option(None, help="fp32, fp16 or bf16 (default: the model's own)"),
    repeats=typer.Option(3, min=1, help="timed calls per trial (the median is reported)"),
    warmup=typer.Option(1, min=0, help="untimed calls before timing"),
    prune_margin=typer.Option(0.05, min=0.0, help="prune after the first prompt when it misses a floor by more than this fraction"),
    confirm_precision=typer.Option(0.1, min=0.0, max=1.0, help="re-time the points near the front until the "
        "speed-up's 95 percent interval is within this share of it (0: one fixed pass)"),
    clip_model=typer.Option(None, help="CLIP for the clip metric: demo-clip, NAME:/path/weights, local-dir:/path (default demo-clip for demo models)"),
    interleave=typer.Option(True, help="time the baseline alternately with every trial, so speed-ups are ratios from one run"),
    compile_=typer.Option(True, "--compile/--no-compile", help="search regional torch.compile where it can build kernels for the device (its compile time is set-up, not latency)"),
    baseline_cache=typer.Option(None, help="folder caching baseline outputs across studies (default ~/.cache/mindiesd-tune/baselines; --no-baseline-cache to compute per study)"),
    no_baseline_cache=typer.Option(False, "--no-baseline-cache", help="compute the baseline outputs afresh"),
    workers=typer.Option(1, min=1, help="evaluator workers on this machine, each on its own device or device group"),
    devices=typer.Option(None, min=1, help="devices the workers share: each trial spans devices/workers of them in a group of rank processes, whose meshes are searched (default: every visible GPU/NPU; on the CPU one process per worker, N ranks sharing the cores when given)"),
    storage=typer.Option(None, help="Optuna storage URL shared by several machines, e.g. postgresql://user:pw@host/db"),
    study_name=typer.Option(None, help="study name in --storage (default: the model name)"),
    resume=typer.Option(False, help="continue the study in --out"),
    publish=typer.Option(None, "--publish", help="profile store URL to publish the profile and its front to (see `publish`)"),
    warm_start=typer.Option(None, "--warm-start", help="profile store URL: first try the stored fronts of this model's family"),
    isolate=typer.Option(True, help="evaluate in a child process that survives crashes (--no-isolate: in this process)"),
    allow_download=typer.Option(False, "--allow-download", help="let a hub id be downloaded"),
    quiet=typer.Option(False, "--quiet", "-q", help="print only where the outputs went"),
    verbose=typer.Option(False, "--verbose", help=VERBOSE_HELP),
)

B = SimpleNamespace(  # bench
    model=typer.Argument(..., help="built-in name, diffusers folder or cached hub id"),
    profile=typer.Option(None, "--profile", help="the profile to measure against the baseline"),
    store=typer.Option(None, "--store", help=STORE_HELP),
    json_out=typer.Option(False, "--json", help="print one JSON object instead of a table"),
    repeats=typer.Option(3, min=1, help="timed calls of each (the median is reported)"),
    warmup=typer.Option(1, min=0, help="untimed calls before timing"),
    precision=typer.Option(0.1, min=0.0, help="time more rounds, prompts taking turns, until the speed-up's "
        "interval is within this share of it (0: exactly --repeats rounds per prompt)"),
    max_seconds=typer.Option(300.0, "--max-seconds", min=0.0, help="cap in seconds on the measurement, counted once the model has loaded (the load time is "
        "printed apart): no model call starts past it but the first round's"),
    device=typer.Option(None, help="cuda, npu or cpu (default: the best available)"),
    dtype=typer.Option(None, help="fp32, fp16 or bf16 (default: the profile's dtype)"),
    force=typer.Option(False, "--force", help=FORCE_HELP),
    strict=typer.Option(False, "--strict", hidden=True, help="refuse a different machine too"),
    allow_download=typer.Option(False, "--allow-download", help="let a hub id be downloaded"),
    verbose=typer.Option(False, "--verbose", help=VERBOSE_HELP),
)

R = SimpleNamespace(  # run
    model=typer.Argument(..., help="built-in name, diffusers folder or cached hub id"),
    prompt=typer.Option(None, "--prompt", "-p", help="what to generate"),
    out=typer.Option(..., "--out", "-o", help="output file: .png for images; .gif, .webp or .mp4 for video; "
        "with several prompts or seeds, OUT-<n>.<suffix> for each"),
    profile=typer.Option(None, help="apply this profile first"),
    store=typer.Option(None, "--store", help=STORE_HELP),
    seed=typer.Option(0),
    device=typer.Option(None),
    force=typer.Option(False, "--force", help=FORCE_HELP),
    allow_download=typer.Option(False, "--allow-download"),
    verbose=typer.Option(False, "--verbose", help=VERBOSE_HELP),
)

BENCH_HELP = """Measure the baseline against PROFILE on the profile's workload (prompts, seeds, size, steps;
the workload options change it): latency and quality. With --store URL instead of --profile, the
profile is the one the store holds for this model's weights, this machine and the workload
asked for (a near workload warns; none is an error).

A profile tuned for another model (pipeline, family or weights fingerprint) is refused
unless --force; one tuned on another machine only warns. Each model call is a line on stderr.

Timing goes on past --repeats rounds per prompt until the speed-up's 95% interval is within
--precision of it, as the tuner's confirmation does. --max-seconds caps all of the measurement,
quality included (the quality is scored on the interleaved calls' own outputs), but not the
model's loading: no call starts after it, so bench ends at most one model call past it, with
the rounds it has (at least one) and saying how many.

The JSON object has the fields baseline_s, profile_s, speedup (the central ratio of interleaved
baseline/profile calls on every prompt, as the tuner's) with its interval
speedup_low/speedup_high, rounds (the interleaved pairs timed), the spread and CPU time of each
side, one field per quality metric (an identical output's PSNR is the string "inf"), plus
tuned_speedup(_low/_high), what the profile recorded when it was frozen.
"""

S = SimpleNamespace(  # score
    folder=typer.Argument(..., help="images or videos to score (.png .jpg .webp .gif .mp4 .npy)"),
    prompts=typer.Option(None, "--prompts", help="text file, one prompt per line in file-name order"),
    reference=typer.Option(None, "--reference", help="folder of reference outputs, matched by file name"),
    metrics=typer.Option(None, "--metrics", "-m", help="comma list of psnr, ssim, ms_ssim, lpips, clip, fid, fvd, fd_clip, "
                         "fd_clip_frames (default: psnr,ssim with --reference; clip with --prompts and --clip-model)"),
    clip_model=typer.Option(None, "--clip-model", help="demo-clip, NAME:/path/to/weights, local-dir:/path or NAME:TAG (cached)"),
    inception=typer.Option(None, "--inception", help="FID Inception weights (pt_inception-2015-12-05-6726825d.pth)"),
    i3d=typer.Option(None, "--i3d", help="FVD I3D TorchScript (i3d_torchscript.pt)"),
    lpips_net=typer.Option("alex", "--lpips-net", help="LPIPS backbone: alex, vgg or squeeze (weights from the torch hub cache)"),
    device=typer.Option("cpu", help="device for the weight-bearing metrics"),
    json_out=typer.Option(False, "--json", help="print one JSON object keyed by metric name"),
)
