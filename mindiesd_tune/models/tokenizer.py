"""Word-level tokenizers made offline for the demo models (no hub download).

The vocabulary covers the caption grammar of the demo data set (shapes, colours, sizes,
positions, motion); any other word maps to ``[UNK]``.
"""

from __future__ import annotations

from functools import lru_cache

COLOURS = ("red", "green", "blue", "yellow", "white", "black", "orange", "purple", "cyan", "magenta", "gray")
SHAPES = ("circle", "square", "triangle", "ring", "cross", "diamond")
SIZES = ("small", "medium", "large", "big", "tiny")
POSITIONS = ("center", "centre", "top", "bottom", "left", "right", "middle", "upper", "lower", "corner")
DIRECTIONS = ("up", "down", "left", "right", "moving")
GLUE = ("a", "an", "the", "on", "in", "at", "of", "with", "and", "background", "image", "photo", "video", "shape", "object")
SPECIALS = ("[PAD]", "[UNK]", "[BOS]", "[EOS]")


def vocabulary() -> list[str]:
    words: list[str] = list(SPECIALS)
    for group in (COLOURS, SHAPES, SIZES, POSITIONS, DIRECTIONS, GLUE):
        for w in group:
            if w not in words:
                words.append(w)
    return words


PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3


@lru_cache(maxsize=None)
def _tokenizer_json(add_bos_eos: bool) -> str:
    from tokenizers import Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel
    from tokenizers.processors import TemplateProcessing

    vocab = {w: i for i, w in enumerate(vocabulary())}
    tok = Tokenizer(WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    if add_bos_eos:
        tok.post_processor = TemplateProcessing(
            single="[BOS] $A [EOS]", special_tokens=[("[BOS]", BOS_ID), ("[EOS]", EOS_ID)]
        )
    else:
        tok.post_processor = TemplateProcessing(single="$A [EOS]", special_tokens=[("[EOS]", EOS_ID)])
    return tok.to_str()


def make_tokenizer(max_length: int, add_bos_eos: bool = True):
    """A ``PreTrainedTokenizerFast`` over the demo vocabulary, padded to ``max_length``."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_tokenizer_json(add_bos_eos)),
        pad_token="[PAD]",
        unk_token="[UNK]",
        bos_token="[BOS]",
        eos_token="[EOS]",
        model_max_length=max_length,
        padding_side="right",
    )
