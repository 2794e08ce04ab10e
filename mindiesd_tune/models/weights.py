"""Trained weights of the demo models, shipped in the package as safetensors with component-prefixed keys."""

from __future__ import annotations

import json
from pathlib import Path

import torch

WEIGHTS_DIR = Path(__file__).parent / "weights"


def weights_path(name: str) -> Path:
    return WEIGHTS_DIR / f"{name}.safetensors"


def load_demo_state_dicts(name: str, dtype: torch.dtype = torch.float32) -> dict[str, dict[str, torch.Tensor]] | None:
    """``{component: state_dict}`` for a demo model (``transformer``, ``vae``, ...), or None without its file.

    Weights are stored in fp16 to keep the package small and come back as ``dtype``.
    """
    path = weights_path(name)
    if not path.is_file():
        return None
    from safetensors.torch import load_file

    out: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in load_file(str(path)).items():
        component, _, rest = key.partition(".")
        out.setdefault(component, {})[rest] = value.to(dtype) if value.is_floating_point() else value
    return out


def save_demo_state_dicts(name: str, state_dicts: dict[str, dict[str, torch.Tensor]], info: dict | None = None) -> Path:
    """Write ``{component: state_dict}`` as fp16 safetensors, and ``info`` (settings, loss curve) as JSON beside it."""
    from safetensors.torch import save_file

    flat = {}
    for component, sd in state_dicts.items():
        for key, value in sd.items():
            value = value.detach().cpu()
            flat[f"{component}.{key}"] = (value.half() if value.is_floating_point() else value).contiguous()
    path = weights_path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(flat, str(path), metadata={"name": name})
    if info is not None:
        path.with_suffix(".json").write_text(json.dumps(info, indent=1) + "\n")
    return path

