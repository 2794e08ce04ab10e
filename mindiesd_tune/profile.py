"""Deployment profiles: a frozen, versioned YAML of the chosen AccelConfig and what it measured."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .accel.config import AccelConfig, ConfigError
from .errors import UserError

SCHEMA_VERSION = 1
_SECTIONS = ("schema", "model", "generation", "accel", "measured", "hardware", "study")
_MODEL_KEYS = {"name", "family", "pipeline", "fingerprint"}
_GENERATION_KEYS = {"height", "width", "num_frames", "num_inference_steps", "guidance_scale", "max_sequence_length"}


class ProfileError(UserError):
    """A profile file is malformed; the message names the first bad field."""


@dataclass
class Profile:
    model: dict[str, Any]
    generation: dict[str, Any]
    accel: AccelConfig
    measured: dict[str, Any] = field(default_factory=dict)
    hardware: dict[str, Any] = field(default_factory=dict)
    study: dict[str, Any] = field(default_factory=dict)
    schema: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "model": dict(self.model),
            "generation": dict(self.generation),
            "accel": self.accel.to_dict(),
            "measured": dict(self.measured),
            "hardware": dict(self.hardware),
            "study": dict(self.study),
        }

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_yaml())
        return path

    def call_kwargs(self) -> dict[str, Any]:
        """The generation settings to pass to the pipeline call (``pipe(prompt, **kw)``).

        A step-reduction cache method overrides ``num_inference_steps``: the profile was
        measured with its step count, so that is the one returned.
        """
        kw = {k: v for k, v in self.generation.items() if v is not None}
        steps = getattr(self.accel.cache, "num_inference_steps", 0) if self.accel.cache.method == "step_reduction" else 0
        if steps:
            kw["num_inference_steps"] = steps
        return kw


def load_profile(source: str | Path | dict | Profile) -> Profile:
    """Read and validate a profile from a path, YAML text mapping or Profile."""
    if isinstance(source, Profile):
        return source
    if isinstance(source, dict):
        return profile_from_dict(source)
    path = Path(source)
    if not path.is_file():
        raise ProfileError(f"{path}: no such profile file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ProfileError(f"{path}: not valid YAML{where}") from None
    try:
        return profile_from_dict(data)
    except ProfileError as e:
        raise ProfileError(f"{path}: {e}") from None


def profile_from_dict(data: Any) -> Profile:
    if not isinstance(data, dict):
        raise ProfileError("a profile is a mapping with the sections " + ", ".join(_SECTIONS))
    for key in data:
        if key not in _SECTIONS:
            raise ProfileError(f"{key}: unknown section (known: {', '.join(_SECTIONS)})")
    schema = data.get("schema")
    if schema != SCHEMA_VERSION:
        raise ProfileError(f"schema: {schema!r} is not supported; this version reads schema {SCHEMA_VERSION}")
    model = _mapping(data, "model", required=True)
    for key in model:
        if key not in _MODEL_KEYS:
            raise ProfileError(f"model.{key}: unknown field (known: {', '.join(sorted(_MODEL_KEYS))})")
    for key in ("name", "family", "pipeline"):
        if not isinstance(model.get(key), str):
            raise ProfileError(f"model.{key}: {model.get(key)!r} must be a string")
    generation = _mapping(data, "generation")
    for key, value in generation.items():
        if key not in _GENERATION_KEYS:
            raise ProfileError(f"generation.{key}: unknown field (known: {', '.join(sorted(_GENERATION_KEYS))})")
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ProfileError(f"generation.{key}: {value!r} must be a number")
    try:
        accel = AccelConfig.from_dict(data.get("accel"))
    except ConfigError as e:
        raise ProfileError(str(e)) from None
    return Profile(
        model=model,
        generation=generation,
        accel=accel,
        measured=_mapping(data, "measured"),
        hardware=_mapping(data, "hardware"),
        study=_mapping(data, "study"),
        schema=schema,
    )


def _mapping(data: dict, key: str, required: bool = False) -> dict:
    value = data.get(key)
    if value is None:
        if required:
            raise ProfileError(f"{key}: missing section")
        return {}
    if not isinstance(value, dict):
        raise ProfileError(f"{key}: {value!r} must be a mapping")
    return value


def model_fingerprint(pipe) -> str:
    """A short hash of the pipeline's class, component configs and a sample of every weight.

    Sampling (shape, dtype and up to 64 evenly spaced values per tensor) keeps this fast on
    multi-GB models while any retrained or swapped weight changes it.
    """
    import torch

    h = hashlib.sha256(type(pipe).__name__.encode())
    for name, comp in sorted(getattr(pipe, "components", {}).items()):
        h.update(name.encode())
        config = getattr(comp, "config", None)
        config = config.to_dict() if hasattr(config, "to_dict") else config
        if isinstance(config, dict):
            # versions and paths say where the weights came from, not what they are
            stable = {k: v for k, v in config.items() if not k.startswith("_") and k != "transformers_version"}
            h.update(json.dumps(stable, sort_keys=True, default=str).encode())
        if isinstance(comp, torch.nn.Module):
            for pname, p in comp.state_dict().items():
                flat = p.detach().reshape(-1)
                step = max(1, flat.numel() // 64)
                sample = flat[::step][:64].to("cpu", torch.float32)
                h.update(f"{pname}{tuple(p.shape)}{p.dtype}".encode())
                h.update(sample.numpy().tobytes())
    return h.hexdigest()[:16]
