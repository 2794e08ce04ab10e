"""Quiet model loading: no loading bars, banners or warnings from the libraries that load a model."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os

# Read by diffusers, transformers, huggingface_hub and tqdm when they start: the evaluator's
# child process inherits them, so its model loading is as quiet as this process's.
QUIET_ENV = {"DIFFUSERS_VERBOSITY": "error", "TRANSFORMERS_VERBOSITY": "error", "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
             "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TQDM_DISABLE": "1"}
_NOISY_MODULES = r"(diffusers|transformers|huggingface_hub|accelerate)(\..*)?$"


@contextlib.contextmanager
def quiet_loading(verbose: bool = False):
    """While a model loads: no loading bars, "pip install accelerate" banners or warnings from the
    libraries that load it, unless ``verbose``. Settings the user exported are kept, and all
    is put back afterwards."""
    import warnings

    if verbose:
        yield
        return
    saved_env = {k: os.environ.get(k) for k in QUIET_ENV}
    for k, v in QUIET_ENV.items():
        os.environ.setdefault(k, v)
    restore = _silence_loggers()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=_NOISY_MODULES)
            yield
    finally:
        _restore_loggers(restore)
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _silence_loggers() -> list:
    """diffusers' and transformers' verbosity set to errors, bars off -> what to put back."""
    restore = []
    for name in ("diffusers", "transformers"):
        if importlib.util.find_spec(name) is None:
            continue
        lib = importlib.import_module(f"{name}.utils.logging")
        restore.append((lib, lib.get_verbosity(), lib.is_progress_bar_enabled()))
        lib.set_verbosity_error()
        lib.disable_progress_bar()
    return restore


def _restore_loggers(restore: list) -> None:
    import logging

    for lib, level, bars in restore:
        lib.set_verbosity(level if level != logging.NOTSET else logging.WARNING)
        (lib.enable_progress_bar if bars else lib.disable_progress_bar)()
