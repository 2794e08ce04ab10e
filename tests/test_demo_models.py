"""The shipped demo models learned the shapes data: what they generate is what the prompt says.

Targets are issue 3's (80% CLIP agreement per attribute for demo-flux, 70% motion agreement for
demo-wan), on the first 16 (demo-flux) or 8 (demo-wan) of the held-out prompts docs/demo-models.md
measures 64 of, with each model's registered call settings (demo-flux: true CFG 4).
"""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest
import torch

from mindiesd_tune.models import shapes
from mindiesd_tune.models.weights import load_demo_state_dicts, weights_path

N_FLUX_PROMPTS = 16  # 8 are too few for an 80% target: the shipped weights read 6 of the first 8 shapes right
N_WAN_PROMPTS = 8


def needs(*names):
    missing = [n for n in names if not weights_path(n).is_file()]
    return pytest.mark.skipif(bool(missing), reason=f"weights not shipped: {', '.join(missing)}")


@pytest.fixture(autouse=True)
def _threads():
    before = torch.get_num_threads()
    torch.set_num_threads(min(before, 2))
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def flux_result():
    from mindiesd_tune.training.evaluate import evaluate_flux

    return evaluate_flux(n=N_FLUX_PROMPTS)


@pytest.fixture(scope="module")
def wan_result():
    from mindiesd_tune.training.evaluate import evaluate_wan

    return evaluate_wan(n=N_WAN_PROMPTS)


def test_loader_returns_none_without_weights_file():
    assert load_demo_state_dicts("no-such-demo-model") is None


@needs("demo-flux", "demo-wan", "demo-clip")
def test_shipped_weights_fit_the_package_budget():
    total = sum(weights_path(n).stat().st_size for n in ("demo-flux", "demo-wan", "demo-clip"))
    assert total <= 40e6


@needs("demo-clip")
def test_demo_clip_reads_real_shapes_zero_shot():
    from mindiesd_tune.models.demo_clip import build_clip, zero_shot_read

    clip = build_clip(load_demo_state_dicts("demo-clip")["clip"])
    batch = shapes.sample(0, 32, split="heldout")
    reads = zero_shot_read(clip, batch.images)
    right = sum(r == (s.colour, s.shape, s.background) for r, s in zip(reads, batch.attributes))
    assert right >= 28


@needs("demo-flux", "demo-clip")
@pytest.mark.slow
def test_demo_flux_images_show_the_prompted_colours(flux_result):
    # issue 3's target, met by the shipped weights (98% / 98% on 64 prompts; 15/16 and 15/16 here)
    agreement = flux_result["clip_agreement"]
    assert agreement["colour"] >= 0.8 and agreement["background"] >= 0.8, flux_result


@needs("demo-flux", "demo-clip")
def test_demo_flux_images_show_the_prompted_shape(flux_result):
    # issue 3's target: 92% on 64 prompts, 14/16 here (chance 33%; 64% on 64 prompts without CFG)
    assert flux_result["clip_agreement"]["shape"] >= 0.8, flux_result


@needs("demo-wan")
@pytest.mark.slow
def test_demo_wan_moves_the_object_in_the_prompted_direction(wan_result):
    # issue 3's target: 86% on 64 prompts, 7/8 here (chance 25%)
    assert wan_result["motion_agreement"] >= 0.7, wan_result
