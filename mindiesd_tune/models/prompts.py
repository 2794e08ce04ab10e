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

# the demo models' caption vocabulary: coloured shapes on plain backgrounds
DEMO_IMAGE_PROMPTS = (
    "a red circle on a blue background",
    "a large yellow triangle at the top left on a black background",
)
DEMO_VIDEO_PROMPTS = (
    "a red circle on a blue background moving left",
    "a white square on a green background moving up",
)


def default_prompts(builtin: bool, video: bool) -> tuple[str, ...]:
    """The prompt set for a model: the demo captions for a built-in demo model, else a varied set."""
    if builtin:
        return DEMO_VIDEO_PROMPTS if video else DEMO_IMAGE_PROMPTS
    return VIDEO_PROMPTS if video else IMAGE_PROMPTS
