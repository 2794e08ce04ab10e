"""What a MODEL argument names, told without torch: a built-in, a diffusers folder or a cached hub id.

The command line refuses a bad name here, before the model registry (whose built-ins build
torch modules) is imported; ``models.registry.check`` asks the same questions.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import UserError

# The pipelines models/demo.py registers; tests/test_cli_errors.py keeps the two lists equal.
BUILTIN_MODELS = ("demo-flux", "demo-wan", "tiny-flux-random", "mid-flux-random", "tiny-wan-random")


def check_model(name: str, allow_download: bool = False, builtins: tuple[str, ...] | list[str] = BUILTIN_MODELS) -> str:
    """``name`` -> "builtin", "local" or "hub", or a UserError saying what it is not.

    A name that can only be a path (it starts with ``.``, ``/`` or ``~``, or has more than one
    slash) and does not exist is "no such folder"; ``org/name`` is a folder when there is one,
    otherwise a hub id, which must be in the local Hugging Face cache unless ``allow_download``.
    """
    if name in builtins:
        return "builtin"
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "model_index.json").is_file():
            raise UserError(f"{name}: a folder, but not a diffusers pipeline (no model_index.json)")
        return "local"
    if looks_like_hub_id(name):
        if allow_download or in_hub_cache(name):
            return "hub"
        raise UserError(f"no such folder: {name}, nor a hub id in the local Hugging Face cache "
                        f"(--allow-download fetches it; built-in models: {', '.join(builtins)})")
    if looks_like_path(name):
        raise UserError(f"no such folder: {name}")
    raise UserError(f"unknown model {name!r}: built-in models are {', '.join(builtins)}")


def looks_like_hub_id(text: str) -> bool:
    parts = text.split("/")
    return len(parts) == 2 and all(parts) and not text.startswith((".", "/", "~"))


def looks_like_path(text: str) -> bool:
    return "/" in text or os.sep in text or text.startswith((".", "~"))


def in_hub_cache(repo_id: str) -> bool:
    """Whether the local Hugging Face cache holds ``repo_id``'s model_index.json (no network)."""
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, "model_index.json", cache_dir=hub_cache_dir()), str)


def hub_cache_dir() -> str:
    return os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME", os.path.expanduser("~/.cache/huggingface")), "hub"
    )
