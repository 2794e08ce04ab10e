"""The shipped demo models learned the shapes data: what they generate is what the prompt says."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest
import torch

from mindiesd_tune.models import shapes
from mindiesd_tune.models.weights import load_demo_state_dicts, weights_path


def needs(*names):
    missing = [n for n in names if not weights_path(n).is_file()]
    return pytest.mark.skipif(bool(missing), reason=f"weights not shipped: {', '.join(missing)}")


@pytest.fixture(autouse=True)
def _threads():
    before = torch.get_num_threads()
    torch.set_num_threads(min(before, 2))
    yield
    torch.set_num_threads(before)


def test_loader_returns_none_without_weights_file():
    assert load_demo_state_dicts("no-such-demo-model") is None


@needs("demo-clip")
def test_demo_clip_reads_real_shapes_zero_shot():
    from mindiesd_tune.models.demo_clip import build_clip, zero_shot_read

    clip = build_clip(load_demo_state_dicts("demo-clip")["clip"])
    batch = shapes.sample(0, 32, split="heldout")
    reads = zero_shot_read(clip, batch.images)
    right = sum(r == (s.colour, s.shape, s.background) for r, s in zip(reads, batch.attributes))
    assert right >= 29


@needs("demo-flux", "demo-clip")
def test_demo_flux_images_show_the_prompted_colours_and_shape():
    from mindiesd_tune.training.evaluate import evaluate_flux

    result = evaluate_flux(n=8)
    agreement = result["clip_agreement"]
    assert agreement["colour"] >= 0.75 and agreement["background"] >= 0.75 and agreement["shape"] >= 0.75, result


@needs("demo-wan")
def test_demo_wan_moves_the_object_in_the_prompted_direction():
    from mindiesd_tune.training.evaluate import evaluate_wan

    result = evaluate_wan(n=8)
    assert result["motion_agreement"] >= 0.625, result
