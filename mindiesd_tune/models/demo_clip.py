"""demo-clip: a small open_clip CLIP over the demo vocabulary, for CLIP scores without downloads.

Images go in as float (n, 3, 64, 64) in [-1, 1] (the pipelines' own range; other sizes are
resized); captions are tokenized with the demo word-level tokenizer (BOS ... EOS, padded).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .tokenizer import EOS_ID, PAD_ID, make_tokenizer, vocabulary

IMAGE_SIZE = 64
CONTEXT_LENGTH = 16
EMBED_DIM = 128
VISION_CFG = dict(layers=3, width=96, head_width=32, patch_size=8, image_size=IMAGE_SIZE)
TEXT_CFG = dict(
    context_length=CONTEXT_LENGTH,
    vocab_size=len(vocabulary()),
    width=96,
    heads=3,
    layers=2,
    pad_id=PAD_ID,
    eos_id=EOS_ID,
    pool_type="eos",
)


def build_clip(state_dict: dict | None = None, seed: int = 0):
    """The demo-clip model (``open_clip.model.CLIP``), seeded; trained weights loaded when given."""
    from open_clip.model import CLIP

    torch.manual_seed(seed)
    model = CLIP(EMBED_DIM, dict(VISION_CFG), dict(TEXT_CFG))
    if state_dict is not None:
        model.load_state_dict({k: v.float() for k, v in state_dict.items()}, strict=True)
    return model.eval()


def tokenize(captions: list[str]) -> torch.Tensor:
    """Token ids (n, CONTEXT_LENGTH) for demo-clip's text tower."""
    tok = make_tokenizer(CONTEXT_LENGTH, add_bos_eos=True)
    return tok(captions, padding="max_length", truncation=True, max_length=CONTEXT_LENGTH, return_tensors="pt")[
        "input_ids"
    ]


def prepare_images(images: torch.Tensor) -> torch.Tensor:
    """Float images in [-1, 1], any square size, to demo-clip's input size."""
    images = images.float()
    if images.shape[-1] != IMAGE_SIZE or images.shape[-2] != IMAGE_SIZE:
        images = F.interpolate(images, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)
    return images


@torch.no_grad()
def zero_shot_read(model, images: torch.Tensor) -> list[tuple[str, str, str]]:
    """(colour, shape, background) of each image, as the best-matching plain caption names them."""
    from .shapes import plain_captions

    labels = plain_captions()
    text = F.normalize(model.encode_text(tokenize([c for c, *_ in labels])), dim=-1)
    img = F.normalize(model.encode_image(prepare_images(images)), dim=-1)
    best = (img @ text.T).argmax(-1).tolist()
    return [labels[i][1:] for i in best]
