"""The shapes data set: deterministic, truthful captions, colours and motion that mean what they say."""

import torch

from mindiesd_tune.models import shapes
from mindiesd_tune.models.tokenizer import vocabulary


def test_same_seed_gives_same_batch_and_other_seed_differs():
    a, b, c = shapes.sample(7, 8), shapes.sample(7, 8), shapes.sample(8, 8)
    assert torch.equal(a.images, b.images) and a.captions == b.captions
    assert not torch.equal(a.images, c.images)
    v1, v2 = shapes.sample_video(3, 4), shapes.sample_video(3, 4)
    assert torch.equal(v1.images, v2.images) and v1.captions == v2.captions


def test_heldout_split_differs_from_train():
    train, held = shapes.sample(0, 16), shapes.sample(0, 16, split="heldout")
    assert not torch.equal(train.images, held.images)
    assert [p for p, _ in shapes.heldout_prompts(16)] == held.captions


def test_images_are_nchw_in_minus_one_one():
    batch = shapes.sample(0, 4, size=64)
    assert batch.images.shape == (4, 3, 64, 64)
    assert batch.images.min() >= -1 and batch.images.max() <= 1
    video = shapes.sample_video(0, 2, size=32, num_frames=9)
    assert video.images.shape == (2, 3, 9, 32, 32)


def test_colours_have_their_rgb_meaning():
    batch = shapes.sample(1, 32)
    for image, scene in zip(shapes.to_uint8(batch.images), batch.attributes):
        corner = tuple(image[:, 0, 0].tolist())
        assert corner == shapes.COLOURS[scene.background]
        h, w = image.shape[-2:]
        cx, cy = round(scene.x * w - 0.5), round(scene.y * h - 0.5)
        # The shape's centre pixel is inside every shape of every size.
        assert tuple(image[:, cy, cx].tolist()) == shapes.COLOURS[scene.colour]
    assert shapes.COLOURS["red"] == (255, 0, 0) and shapes.COLOURS["yellow"] == (255, 255, 0)


def test_every_shape_spans_its_size_words_extent():
    side, n = 64, 3
    xs, ys = torch.full((n,), 0.5), torch.full((n,), 0.5)
    fg, bg = torch.ones(n, 3), torch.zeros(n, 3)
    for size in shapes.SIZES.values():
        masks = shapes.render(list(shapes.SHAPES), [size] * n, xs, ys, fg, bg, side)[:, 0] > 0.5
        extent = size * side
        for kind, mask in zip(shapes.SHAPES, masks):
            cols = mask.any(0).nonzero().flatten()
            assert abs(int(cols[-1] - cols[0] + 1) - extent) <= 2, (kind, size)  # anti-aliased corners
        circle, square, triangle = (m.sum().item() for m in masks)
        # The square fills its bounding box; the circle misses its corners (pi/4), the triangle half.
        assert square > 1.2 * circle > 1.5 * triangle, (size, square, circle, triangle)


def test_captions_parse_back_to_attributes():
    batch = shapes.sample(2, 64)
    for text, scene in zip(batch.captions, batch.attributes):
        parsed = shapes.parse_caption(text)
        assert (parsed["colour"], parsed["shape"], parsed["background"]) == (scene.colour, scene.shape, scene.background)
        assert parsed["size"] in (None, scene.size)
        assert parsed["position"] in (None, scene.position)
    assert shapes.parse_caption("a red circle on a blue background")["size"] is None
    assert any(shapes.parse_caption(c)["position"] for c in batch.captions)
    assert any(shapes.parse_caption(c)["size"] for c in batch.captions)


def test_captions_use_only_tokenizer_words():
    words = set(vocabulary())
    captions = shapes.sample(3, 64).captions + shapes.sample_video(3, 32).captions
    captions += [c for c, *_ in shapes.plain_captions()]
    for text in captions:
        assert set(text.split()) <= words, text


def test_object_and_background_colours_differ():
    for scene in shapes.sample(4, 64).attributes:
        assert scene.colour != scene.background


def test_video_motion_matches_caption():
    video = shapes.sample_video(5, 32)
    for clip, text, scene in zip(video.images, video.captions, video.attributes):
        assert text.endswith(f"moving {scene.direction}")
        assert shapes.parse_caption(text)["direction"] == scene.direction
        assert shapes.motion_direction(clip) == scene.direction


def test_shapes_differ_in_pixels():
    xs, ys = torch.full((3,), 0.5), torch.full((3,), 0.5)
    fg, bg = torch.ones(3, 3), torch.zeros(3, 3)
    images = shapes.render(list(shapes.SHAPES), [0.5] * 3, xs, ys, fg, bg, 32)
    areas = images.mean((1, 2, 3))
    assert (images[0] != images[1]).any() and (images[1] != images[2]).any()
    assert areas[2] < areas[0] and areas[2] < areas[1]  # the triangle covers least of its extent
