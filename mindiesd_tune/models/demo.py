"""The built-in models: demo-flux and demo-wan (trained weights when shipped), and tiny random ones for tests."""

from __future__ import annotations

from .builders import DEMO_FLUX_SIZE, DEMO_WAN_SIZE, MID_FLUX_SIZE, TINY_FLUX_SIZE, TINY_WAN_SIZE, build_flux, build_wan
from .registry import Builtin, BuiltinScorer, register_builtin, register_scorer

DEMO_FLUX_CFG = 4.0  # chosen on held-out prompts of seed stream 1; evaluated on stream 0


def _shipped(name: str):
    """The trained state dicts for ``name`` when the package ships them, else None (seeded random)."""
    try:
        from .weights import load_demo_state_dicts
    except ImportError:
        return None
    return load_demo_state_dicts(name)


def _has_weights(name: str) -> bool:
    return _shipped(name) is not None


register_builtin(
    Builtin(
        name="demo-flux",
        build=lambda seed=0: build_flux(DEMO_FLUX_SIZE, seed=seed, state_dicts=_shipped("demo-flux")),
        description="FluxPipeline architecture at toy size (64x64 images)",
        # True classifier-free guidance against the empty prompt (trained with 10% of captions
        # dropped): without it the shape word barely shows (see docs/demo-models.md). FluxPipeline
        # runs a second, "uncond" transformer pass per step, as Qwen-Image and FLUX.1 Kontext do.
        generation={"height": 64, "width": 64, "num_inference_steps": 20, "true_cfg_scale": DEMO_FLUX_CFG,
                    "negative_prompt": "", "max_sequence_length": DEMO_FLUX_SIZE.text_len},
        trained=lambda: _has_weights("demo-flux"),
    )
)
register_builtin(
    Builtin(
        name="demo-wan",
        build=lambda seed=0: build_wan(DEMO_WAN_SIZE, seed=seed, state_dicts=_shipped("demo-wan")),
        description="WanPipeline architecture at toy size (9 frames of 32x32 video)",
        generation={"height": 32, "width": 32, "num_frames": 9, "num_inference_steps": 20, "guidance_scale": 5.0,
                    "max_sequence_length": DEMO_WAN_SIZE.text_len},
        trained=lambda: _has_weights("demo-wan"),
    )
)
register_builtin(
    Builtin(
        name="tiny-flux-random",
        build=lambda seed=0: build_flux(TINY_FLUX_SIZE, seed=seed),
        description="random-weight FluxPipeline for unit tests; no learned dynamics",
        generation={"height": 32, "width": 32, "num_inference_steps": 10, "guidance_scale": 3.5,
                    "max_sequence_length": TINY_FLUX_SIZE.text_len},
    )
)
register_builtin(
    Builtin(
        name="mid-flux-random",
        build=lambda seed=0: build_flux(MID_FLUX_SIZE, seed=seed),
        description="random-weight FluxPipeline at hidden size 1024 (3 blocks, 256x256) for timing precision and "
                    "quantisation on realistic matmul sizes; its quality figures are meaningless",
        generation={"height": 256, "width": 256, "num_inference_steps": 4, "guidance_scale": 3.5,
                    "max_sequence_length": MID_FLUX_SIZE.text_len},
    )
)
register_builtin(
    Builtin(
        name="tiny-wan-random",
        build=lambda seed=0: build_wan(TINY_WAN_SIZE, seed=seed),
        description="random-weight WanPipeline for unit tests; no learned dynamics",
        generation={"height": 32, "width": 32, "num_frames": 5, "num_inference_steps": 10, "guidance_scale": 5.0,
                    "max_sequence_length": TINY_WAN_SIZE.text_len},
    )
)
register_scorer(
    BuiltinScorer(
        name="demo-clip",
        description="small open_clip CLIP trained on the demo captions: the offline CLIP score for the demo models",
        trained=lambda: _has_weights("demo-clip"),
    )
)
