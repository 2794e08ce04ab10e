"""VAE parallel: the decoder runs on horizontal strips of the latent, one per rank (DistVAE).

Each rank decodes its own latent rows plus ``halo`` rows on either side, so that its
convolutions see their neighbourhood. Layers that look at the whole image (the decoder's
normalisations, whose GroupNorm statistics span it, and its attention) would see only the
strip; there each rank all-gathers the rows it owns, runs the layer on the whole feature
map and keeps its strip again, halo included. That also refreshes the halo with the
neighbours' exact rows, so the halo only has to cover the convolutions between two such
layers. The owned rows of every strip are gathered at the end, on every rank.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from diffusers.hooks.hooks import HookRegistry, ModelHook

from .comm import CommCounter, all_gather
from .config import ParallelError

logger = logging.getLogger(__name__)

HOOK_NAME = "mindiesd_parallel_vae"
# layers that need the whole feature map (by class name, so no decoder module is imported)
GLOBAL_LAYERS = ("GroupNorm", "Attention", "WanAttentionBlock", "WanRMS_norm")


@dataclass
class _Strip:
    start: int  # latent rows [start, end) decoded here, halo included
    end: int
    own_start: int  # latent rows [own_start, own_end) this rank owns
    own_end: int
    height: int  # latent height of the whole image
    inside_global: bool = False

    def scale(self, rows: int) -> int:
        s, rem = divmod(rows, self.end - self.start)
        if rem or s < 1:
            raise RuntimeError(f"VAE parallel: a feature map of {rows} rows does not scale a strip of {self.end - self.start}")
        return s


class _Split:
    def __init__(self, group, rank: int, degree: int, halo: int, counter: CommCounter):
        self.group, self.rank, self.degree, self.halo, self.counter = group, rank, degree, halo, counter
        self.strip: _Strip | None = None

    def owned(self, x: torch.Tensor, s: int) -> torch.Tensor:
        st = self.strip
        return x.narrow(-2, (st.own_start - st.start) * s, (st.own_end - st.own_start) * s)

    def gather(self, x: torch.Tensor, s: int) -> torch.Tensor:
        return torch.cat(all_gather(self.owned(x, s), self.group, self.counter), dim=-2)


class _DecoderHook(ModelHook):
    """On the decoder: decode this rank's strip, gather everyone's owned rows."""

    def __init__(self, split: _Split):
        super().__init__()
        self.split = split

    def new_forward(self, module, z, *args, **kwargs):
        sp, height = self.split, z.shape[-2]
        if height % sp.degree:
            logger.debug("VAE parallel: latent height %d not divisible by %d, decoding whole", height, sp.degree)
            return self.fn_ref.original_forward(z, *args, **kwargs)
        own = height // sp.degree
        lo, hi = sp.rank * own, (sp.rank + 1) * own
        start, end = max(0, lo - sp.halo), min(height, hi + sp.halo)
        sp.strip = _Strip(start, end, lo, hi, height)
        try:
            out = self.fn_ref.original_forward(z.narrow(-2, start, end - start), *args, **kwargs)
            return sp.gather(out, sp.strip.scale(out.shape[-2]))
        finally:
            sp.strip = None


class _GlobalLayerHook(ModelHook):
    """On a layer that needs the whole map: run it on the gathered map, keep this rank's strip."""

    def __init__(self, split: _Split):
        super().__init__()
        self.split = split

    def new_forward(self, module, x, *args, **kwargs):
        st = self.split.strip
        if st is None or st.inside_global or x.dim() < 3:
            return self.fn_ref.original_forward(x, *args, **kwargs)
        s = st.scale(x.shape[-2])
        whole = self.split.gather(x, s)
        st.inside_global = True
        try:
            y = self.fn_ref.original_forward(whole, *args, **kwargs)
        finally:
            st.inside_global = False
        return y.narrow(-2, st.start * s, (st.end - st.start) * s)


def install_vae_parallel(vae: torch.nn.Module, group, rank: int, degree: int, halo: int, counter: CommCounter):
    """Split ``vae.decoder``'s work over ``degree`` ranks of ``group``; returns the remover."""
    decoder = getattr(vae, "decoder", None)
    if decoder is None:
        raise ParallelError(f"parallel.vae={degree}: {type(vae).__name__} has no decoder module to split")
    split = _Split(group, rank, degree, halo, counter)
    hooked = [decoder]
    HookRegistry.check_if_exists_or_initialize(decoder).register_hook(_DecoderHook(split), HOOK_NAME)
    for m in decoder.modules():
        if m is not decoder and any(k.__name__ in GLOBAL_LAYERS for k in type(m).__mro__):
            HookRegistry.check_if_exists_or_initialize(m).register_hook(_GlobalLayerHook(split), HOOK_NAME)
            hooked.append(m)

    def remove() -> None:
        for m in hooked:
            HookRegistry.check_if_exists_or_initialize(m).remove_hook(HOOK_NAME, recurse=False)

    return remove
