"""Prompt sets a study runs when the user gives none.

A real model is tuned on prompts like those it serves: varied subjects, scenes and styles, so
that a setting that only holds up on flat shapes does not win. The demo models were trained on
captions of coloured shapes and know no other words, so they keep their own prompts.
"""

from __future__ import annotations

IMAGE_PROMPTS = (
    "a portrait of an elderly fisherman with a weathered face, soft window light",
    "a bowl of ramen with a soft-boiled egg and green onions on a wooden table, top view",
    "a snowy mountain village at dusk with warm lights in the windows",
    "a red vintage bicycle leaning against a yellow brick wall, street photography",
    "an astronaut reading a newspaper in a sunlit cafe, oil painting",
    "a hummingbird hovering beside a purple flower, macro photograph",
    "a futuristic city skyline at night reflected in a river, neon signs",
    "a watercolor illustration of a fox sleeping under an oak tree in autumn",
)

VIDEO_PROMPTS = (
    "waves rolling onto a sandy beach at sunset, the camera slowly panning right",
    "a golden retriever running through a field of tall grass toward the camera",
    "a barista pouring steamed milk into a cup of coffee, close-up, shallow depth of field",
    "traffic moving along a city avenue at night, long light trails, time-lapse",
    "a paper boat drifting down a rain-filled gutter, low angle",
    "a hot air balloon rising over green hills in the early morning mist",
    "a chef tossing vegetables in a flaming wok in a busy kitchen",
    "snow falling on a quiet forest path while a deer walks across it",
)

# the demo models' caption vocabulary: coloured shapes on plain backgrounds. Four prompts: a
# floor is judged on the confidence bound of the mean over them (mindiesd_tune.quality), and over two
# the bound is too wide to pass anything but the baseline
DEMO_IMAGE_PROMPTS = (
    "a red circle on a blue background",
    "a large yellow triangle at the top left on a black background",
    "a medium white square at the right on a red background",
    "a small green circle at the bottom on a yellow background",
)
DEMO_VIDEO_PROMPTS = (
    "a red circle on a blue background moving left",
    "a white square on a green background moving up",
    "a small yellow triangle on a black background moving right",
    "a medium blue circle on a red background moving down",
)
# held-out prompts get seeds from here on, apart from the tuning prompts' 0, 1, ...
HOLDOUT_SEED = 1000
# ``--holdout auto``: how many prompts check the pick. The check is a floor on the held-out mean,
# and the per-prompt PSNR of one setting spreads by 5.5-7 dB over the demo captions (16 of
# them, demo-flux, any cache): over 2 prompts the mean's standard error is about 4.5 dB, so a
# point 2 dB above the floor failed as often as not; over 8 it is about 2 dB. The check costs no
# timing, one call per prompt, so the demo models, whose captions are unlimited, keep 8. Other
# models draw from the 8 prompts of the varied set, and keep 2 of them.
DEMO_HOLDOUT = 8
OTHER_HOLDOUT = 2


def holdout_count(builtin: bool, holdout) -> int:
    """The count ``--holdout`` asks for, ``auto`` resolved for a built-in demo model or another."""
    if holdout in (None, "auto"):
        return DEMO_HOLDOUT if builtin else OTHER_HOLDOUT
    return int(holdout)


def default_prompts(builtin: bool, video: bool) -> tuple[str, ...]:
    """The prompt set for a model: the demo captions for a built-in demo model, else a varied set."""
    if builtin:
        return DEMO_VIDEO_PROMPTS if video else DEMO_IMAGE_PROMPTS
    return VIDEO_PROMPTS if video else IMAGE_PROMPTS


def split_prompts(builtin: bool, video: bool, given: list[str] | None, holdout) -> tuple[list[str], list[str]]:
    """(tuning prompts, held-out prompts). ``holdout``: a count, ``auto`` (``holdout_count``), or the
    held-out prompts themselves.

    The held-out prompts are never shown to the search: the study measures the pick's quality on
    them at the end. A count draws them from the demo models' held-out caption stream (the
    shapes and colours they know, in captions the tuning set does not have), or for other models
    takes the last prompts of the varied set, which the tuning set then leaves out."""
    from ..errors import UserError

    defaults = list(default_prompts(builtin, video))
    if isinstance(holdout, (list, tuple)):
        held = list(holdout)
        tuning = list(given) if given else [p for p in defaults if p not in held]
        both = sorted(set(tuning) & set(held))
        if both:
            raise UserError(f"--holdout: {both[0]!r} is a tuning prompt too; held-out prompts must be unseen")
        return tuning, held
    n = holdout_count(builtin, holdout or 0)
    if n < 0:
        raise UserError(f"--holdout {n}: give a count of 0 or more, or a file of prompts")
    if n == 0:
        return list(given) if given else defaults, []
    if builtin:
        from .shapes import heldout_prompts

        tuning = list(given) if given else defaults
        held: list[str] = []
        draw = 2 * n
        while len(held) < n and draw < 64 * n:
            held = [p for p in dict.fromkeys(p for p, _ in heldout_prompts(draw, video=video, seed=0))
                    if p not in tuning][:n]
            draw *= 2
        return tuning, held
    tuning = list(given) if given else defaults[:-n]
    held = [p for p in defaults if p not in tuning][-n:]
    if len(held) < n or not tuning:
        raise UserError(f"--holdout {n}: the built-in prompt set has {len(defaults)} prompts, too few to keep "
                        f"{n} out of {len(tuning)} tuning ones; give --holdout FILE with prompts like yours")
    return tuning, held
