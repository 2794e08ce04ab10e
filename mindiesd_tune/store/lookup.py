"""Which stored profile a pipeline on this machine at this workload gets: one query, no model call.

1. exact: the pipeline's weights (model fingerprint), this machine (device kind and count, CPU
   model and flags) and the workload;
2. near: the same weights on the same device kind (device type and name) at the nearest
   workload, with a ``ProfileWorkloadWarning`` naming each setting that differs;
3. none: a ``StoreError`` saying what the store holds for this model instead.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

from .core import ProfileStore, StoredProfile, StoreError
from .facts import LABELS, here, normalise_workload, workload_difference, workload_distance


class ProfileWorkloadWarning(UserWarning):
    """The profile applied was measured at another workload than the one asked for."""


class StaleProfileError(StoreError):
    """``verify=True`` and the matching profile was marked stale by ``mindiesd-tune recheck``."""


@dataclass
class Match:
    stored: StoredProfile
    exact: bool
    differences: list[tuple[str, Any, Any]] = field(default_factory=list)  # (key, asked, stored)

    def describe_difference(self) -> str:
        return ", ".join(f"{LABELS[k]} {a} asked, {s} in the profile" for k, a, s in self.differences)


def find_profile(pipe, store: str | ProfileStore, workload: Any = None, verify: bool = False,
                 device=None) -> Match:
    """The stored profile for ``pipe`` here at ``workload`` (call settings: ``num_inference_steps``
    or ``steps``, ``height``, ``width``, ``num_frames``, ``guidance_scale``; the ones left out are
    the pipeline's defaults). Warns on a near match; raises StoreError when there is none."""
    from ..profile import model_fingerprint
    from ..workload import model_generation
    from .facts import pipe_device as _device_of

    st = store if isinstance(store, ProfileStore) else ProfileStore(store)
    wanted = {**normalise_workload(model_generation(pipe)),
              **{k: v for k, v in normalise_workload(workload).items() if v is not None}}
    fingerprint = model_fingerprint(pipe)  # hashes a sample of the weights: no model call
    me = here(device if device is not None else _device_of(pipe))
    rows = st.candidates(fingerprint=fingerprint, device=me["device"], device_name=me["device_name"])
    if not rows:
        raise StoreError(_nothing_for(st, pipe, fingerprint, me))
    exact = [r for r in rows if r.row["machine"] == me["machine"] and not workload_difference(wanted, r.workload)]
    if exact:
        match = Match(exact[0], True)
    else:
        # nearest workload; on a tie this very machine, then the newest (rows come newest first)
        best = min(rows, key=lambda r: (workload_distance(wanted, r.workload), r.row["machine"] != me["machine"]))
        match = Match(best, False, workload_difference(wanted, best.workload))
    if match.stored.status == "stale":
        msg = (f"profile {match.stored.id} in {st.url if '@' not in st.url else 'the store'} was marked stale by a recheck "
               f"({match.stored.row['verdict']} with the libraries installed then)")
        if verify:
            raise StaleProfileError(msg + "; re-tune it or retire it (`mindiesd-tune profiles retire ID`)")
        warnings.warn(msg, ProfileWorkloadWarning, stacklevel=3)
    if not match.exact:
        what = match.describe_difference() or "measured on another machine of the same kind"
        warnings.warn(f"profile {match.stored.id} is the nearest in the store, not an exact match: {what}",
                      ProfileWorkloadWarning, stacklevel=3)
    return match


def _nothing_for(st: ProfileStore, pipe, fingerprint: str, me: dict) -> str:
    """One line: nothing for these weights on this device kind, and what the store has instead."""
    kind = f"{me['device']} ({me['device_name']})"
    same_weights = st.candidates(fingerprint=fingerprint)
    if same_weights:
        kinds = sorted({f"{r.row['device']} ({r.row['device_name']})" for r in same_weights})
        return (f"no profile in the store for this model on {kind}; it has profiles for it on: {', '.join(kinds)} "
                "(tune it here and publish)")
    from ..errors import UserError
    from ..models import family_of

    try:
        family = family_of(pipe)
    except UserError:
        family = None
    same_pipe = [r for r in (st.candidates(family=family) if family else [])
                 if r.row["pipeline"] == type(pipe).__name__]
    if same_pipe:
        names = sorted({f"{r.row['model_name']} ({r.row['fingerprint']})" for r in same_pipe})
        return (f"no profile in the store for this pipeline's weights (model fingerprint {fingerprint}): "
                f"its {type(pipe).__name__} profiles are for other weights: {', '.join(names[:4])}"
                f"{' ...' if len(names) > 4 else ''} (tune it, with --warm-start from the store to start from theirs)")
    return f"no profile in the store for model fingerprint {fingerprint} ({type(pipe).__name__}); tune it and publish"
