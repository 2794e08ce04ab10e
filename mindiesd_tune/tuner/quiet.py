"""Warnings the tuner expects, ignored for one block without leaving a filter behind.

``warnings.catch_warnings()`` saves the process-wide filter list on entry and puts it back on
exit. Two threads inside at once put back each other's lists: a filter meant for one block stays
for the whole process, or another block's is lost. The study's worker threads ignore Optuna's
warnings around ``ask``, ``suggest`` and ``fail_stale_trials``, so every block of the tuner that
ignores a warning goes through ``ignoring``, which lets one thread in at a time.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from typing import Iterator

# reentrant: a block may call code that ignores a warning of its own
_LOCK = threading.RLock()


@contextlib.contextmanager
def ignoring(category: type[Warning] = Warning, message: str = "") -> Iterator[None]:
    """Ignore warnings of ``category`` whose text starts with the regex ``message`` inside the block.

    Holds a module-wide lock while inside: keep the block short, and take no lock in it that
    another thread may hold while waiting to enter here.
    """
    with _LOCK, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=message, category=category)
        yield


def quiet_process_when_asked() -> None:
    """In a process the tuner starts for itself (an evaluator worker, a rank of a group), when
    the CLI asked for quiet output (no --verbose): the libraries' deprecation notices, which each
    such process would print on the driver's terminal, are noise there as they are in the
    driver. Process-wide on purpose: the process is ours and lives for the study."""
    import logging
    import os

    if os.environ.get("DIFFUSERS_VERBOSITY") != "error":
        return
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)  # torchao's enums, at import
    # inductor on a CPU machine, when a compile trial first builds its kernels
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # "No CUDA runtime is found"
    # inductor's cache asking torchao's tensor subclasses for a hash when a quantised trial compiles
    warnings.filterwarnings("ignore", message=".*_stable_hash_for_caching")
    # e.g. diffusers' context-parallel hooks calling a deprecated torch collective on every call
    warnings.filterwarnings("ignore", module=r"(diffusers|transformers|huggingface_hub|accelerate)(\..*)?$")
