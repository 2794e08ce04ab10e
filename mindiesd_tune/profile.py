"""Deployment profiles: a frozen, versioned YAML of the chosen AccelConfig and what it measured."""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from .accel.config import AccelConfig, ConfigError
from .errors import UserError

SCHEMA_VERSION = 5
_SECTIONS = ("schema", "model", "generation", "accel", "measured", "hardware", "study")
_MODEL_KEYS = ("name", "family", "pipeline", "fingerprint", "dtype")
_GENERATION_INTS = ("height", "width", "num_frames", "num_inference_steps", "max_sequence_length")
_GENERATION_NUMBERS = ("guidance_scale", "true_cfg_scale")
_GENERATION_STRINGS = ("negative_prompt",)  # FluxPipeline runs true CFG only when one is given
_GENERATION_KEYS = _GENERATION_INTS + _GENERATION_NUMBERS + _GENERATION_STRINGS
# Known fields of the open sections and their types. Other keys may be added there (a new
# metric, a new hardware fact) as long as their values are plain scalars.
# hardware.world_size: the ranks one call ran on (its mesh's; 1 for a single device); count: the
# devices the machine has
_HARDWARE_TYPES = {"device": str, "name": str, "count": int, "torch": str, "diffusers": str, "threads": int, "cpus": int,
                   "world_size": int}
_STUDY_TYPES = {"name": str, "trial": int, "storage": str, "created": str, "prompts": list, "seeds": list,
                "objective": str, "floors": list, "pick": str, "judged_on": str, "heldout_prompts": list,
                # the threshold range the study's space centred on the model's per-step change (a
                # warm start from the store compares it with the new model's)
                "threshold_range": list}


class ProfileError(UserError):
    """A profile file is malformed; the message names the first bad field and its value."""


@dataclass
class Profile:
    model: dict[str, Any]
    generation: dict[str, Any]
    accel: AccelConfig
    measured: dict[str, Any] = field(default_factory=dict)
    hardware: dict[str, Any] = field(default_factory=dict)
    study: dict[str, Any] = field(default_factory=dict)
    schema: int = SCHEMA_VERSION
    # the schema version of the file this profile was read from, when it was migrated on load
    migrated_from: int | None = field(default=None, compare=False)

    def __post_init__(self):
        self.model = {**self.model}
        self.model.setdefault("fingerprint", None)
        self.model.setdefault("dtype", None)
        # the ranks a deployment launches: across machines, each one's share is read from here
        self.hardware = {**self.hardware}
        self.hardware.setdefault("world_size", self.accel.parallel.world_size)

    @property
    def world_size(self) -> int:
        """Ranks one call of this profile spans (``mindiesd-tune run`` launches that many)."""
        return self.accel.parallel.world_size

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

        A config that overrides generation settings (the steps section's step count) was
        measured with them, so those are the ones returned.
        """
        kw = {k: v for k, v in self.generation.items() if v is not None}
        kw.update(self.accel.call_overrides())
        return kw


def load_profile(source: str | Path | dict | Profile) -> Profile:
    """Read and validate a profile from a path, YAML text mapping or Profile.

    A file written with an older schema is migrated on load (``Profile.migrated_from`` says
    from which); one too old or too new to read is refused naming the schema needed.
    """
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


# --------------------------------------------------------------------------- schema versions

# MIGRATIONS[n] turns a schema-n mapping into a schema n+1 mapping. A new schema version adds
# one function here; files of every version from OLDEST_READABLE on keep loading.
def _v1_to_v2(data: dict) -> dict:
    """Schema 2 records the dtype the model ran at (``model.dtype``); schema 1 files did not say."""
    model = data.get("model")
    if isinstance(model, dict):
        model.setdefault("dtype", None)
    return data


def _v2_to_v3(data: dict) -> dict:
    """Schema 3 gives the step count and scheduler their own section (``accel.steps``), so they
    combine with a cache method; schema 2 had them as ``cache: {method: step_reduction, ...}``."""
    accel = data.get("accel")
    cache = accel.get("cache") if isinstance(accel, dict) else None
    if isinstance(cache, dict) and cache.get("method") == "step_reduction":
        accel["steps"] = {k: v for k, v in cache.items() if k != "method"}
        accel["cache"] = {"method": "none"}
    return data


def _v3_to_v4(data: dict) -> dict:
    """Schema 4 runs multi-device meshes: ``accel.parallel`` gains ``tensor``, ``vae`` and
    ``vae_halo`` beside ``cfg``, ``ulysses`` and ``ring``, and ``hardware.world_size`` records the
    ranks a call spans. Schema 3 allowed only the single device (every degree 1)."""
    hardware = data.get("hardware")
    if isinstance(hardware, dict):
        hardware.setdefault("world_size", 1)
    return data


def _v4_to_v5(data: dict) -> dict:
    """Schema 5 can batch the two CFG branches into one call per step (``accel.steps.batch_cfg``,
    written into every profile's steps section); a schema 4 file never did, and reads as
    ``batch_cfg: false``. The bump lets a release that does not know the key refuse a new file
    by its schema number rather than by an unknown key."""
    accel = data.get("accel")
    steps = accel.get("steps") if isinstance(accel, dict) else None
    if isinstance(steps, dict):
        steps.setdefault("batch_cfg", False)
    return data


MIGRATIONS: dict[int, Callable[[dict], dict]] = {1: _v1_to_v2, 2: _v2_to_v3, 3: _v3_to_v4, 4: _v4_to_v5}
OLDEST_READABLE = min(MIGRATIONS, default=SCHEMA_VERSION)


def migrate(data: dict) -> tuple[dict, int]:
    """Bring a profile mapping to SCHEMA_VERSION -> (mapping, the version it was written with)."""
    if "schema" not in data:
        raise ProfileError(f"schema: missing; a profile starts with `schema: {SCHEMA_VERSION}`")
    version = data["schema"]
    if isinstance(version, bool) or not isinstance(version, int):
        raise ProfileError(f"schema: {version!r} must be an integer (this version writes schema {SCHEMA_VERSION})")
    if version > SCHEMA_VERSION:
        raise ProfileError(
            f"schema: {version!r} is newer than this mindiesd-tune reads (schema {SCHEMA_VERSION} at most); "
            f"upgrade mindiesd-tune to load it"
        )
    if version < OLDEST_READABLE:
        raise ProfileError(
            f"schema: {version!r} is too old to read; this version reads schema {OLDEST_READABLE} to {SCHEMA_VERSION}: "
            f"freeze the profile again with `mindiesd-tune report RUN_DIR`"
        )
    data = copy.deepcopy(data)
    for v in range(version, SCHEMA_VERSION):
        data = MIGRATIONS[v](data)
        data["schema"] = v + 1
    return data, version


# --------------------------------------------------------------------------- validation


def profile_from_dict(data: Any) -> Profile:
    """Validate a profile mapping (any readable schema) -> Profile; the error names the first bad field."""
    if not isinstance(data, dict):
        raise ProfileError(f"{_short(data)} is not a profile: a profile is a mapping with the sections " + ", ".join(_SECTIONS))
    data, written = migrate(data)
    for key, value in data.items():  # file order, so the first bad field is the one reported
        if key not in _SECTIONS:
            raise ProfileError(f"{key}: unknown section {_short(value)} (known: {', '.join(_SECTIONS)})")
        if key != "schema" and key != "accel":
            _CHECKS[key](_mapping(data, key))
    if data.get("model") is None:
        raise ProfileError("model: missing section (it names the model the profile was tuned on)")
    try:
        accel = AccelConfig.from_dict(data.get("accel"))
    except ConfigError as e:
        raise ProfileError(_accel_message(str(e), data.get("accel"))) from None
    study = dict(_mapping(data, "study"))
    if "created" in study and not isinstance(study["created"], str):
        study["created"] = str(study["created"])
    return Profile(
        model=dict(data["model"]),
        generation=dict(_mapping(data, "generation")),
        accel=accel,
        measured=dict(_mapping(data, "measured")),
        hardware=dict(_mapping(data, "hardware")),
        study=study,
        schema=SCHEMA_VERSION,
        migrated_from=written if written != SCHEMA_VERSION else None,
    )


def _check_model(model: dict) -> None:
    for key, value in model.items():
        if key not in _MODEL_KEYS:
            raise ProfileError(f"model.{key}: unknown field {_short(value)} (known: {', '.join(_MODEL_KEYS)})")
        optional = key in ("fingerprint", "dtype")
        if not (isinstance(value, str) and value) and not (optional and value is None):
            raise ProfileError(f"model.{key}: {_short(value)} must be a non-empty string")
    for key in ("name", "family", "pipeline"):
        if key not in model:
            raise ProfileError(f"model.{key}: missing (the profile must say which {key} it was tuned on)")


def _check_generation(generation: dict) -> None:
    for key, value in generation.items():
        if key not in _GENERATION_KEYS:
            raise ProfileError(f"generation.{key}: unknown field {_short(value)} (known: {', '.join(_GENERATION_KEYS)})")
        if value is None:
            continue
        if key in _GENERATION_INTS:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ProfileError(f"generation.{key}: {_short(value)} must be a positive integer")
        elif key in _GENERATION_STRINGS:
            if not isinstance(value, str):
                raise ProfileError(f"generation.{key}: {_short(value)} must be a string")
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ProfileError(f"generation.{key}: {_short(value)} must be a number")


def _check_measured(measured: dict) -> None:
    for key, value in measured.items():
        if value is None or value in ("inf", "-inf", "nan") or isinstance(value, bool):
            continue  # "inf": identical to the baseline (PSNR); null: not measured; feasible: true/false
        if not isinstance(value, (int, float)):
            raise ProfileError(f"measured.{key}: {_short(value)} must be a number, true/false, 'inf' or null")
        if key.endswith("_s") and value < 0:
            raise ProfileError(f"measured.{key}: {_short(value)} must be >= 0 (seconds)")


def _check_typed(section: str, types: dict[str, type]) -> Callable[[dict], None]:
    def check(values: dict) -> None:
        for key, value in values.items():
            want = types.get(key)
            if value is None:
                continue
            if want is None:
                if not isinstance(value, (str, int, float, bool)):
                    raise ProfileError(f"{section}.{key}: {_short(value)} must be a plain value (text or number)")
            elif want is int and (isinstance(value, bool) or not isinstance(value, int)):
                raise ProfileError(f"{section}.{key}: {_short(value)} must be an integer")
            elif want is str and not isinstance(value, str) and not (key == "created" and hasattr(value, "isoformat")):
                raise ProfileError(f"{section}.{key}: {_short(value)} must be a string")
            elif want is list and not isinstance(value, list):
                raise ProfileError(f"{section}.{key}: {_short(value)} must be a list")

    return check


def _check_study(study: dict) -> None:
    _check_typed("study", _STUDY_TYPES)(study)
    prompts, seeds = study.get("prompts"), study.get("seeds")
    for i, p in enumerate(prompts or []):
        if not isinstance(p, str):
            raise ProfileError(f"study.prompts[{i}]: {_short(p)} must be a string")
    for i, s in enumerate(seeds or []):
        if isinstance(s, bool) or not isinstance(s, int):
            raise ProfileError(f"study.seeds[{i}]: {_short(s)} must be an integer")
    if prompts is not None and seeds is not None and len(prompts) != len(seeds):
        raise ProfileError(f"study.seeds: {_short(seeds)} must give one seed per prompt ({len(prompts)} prompts)")
    rng = study.get("threshold_range")
    if rng is not None and not (len(rng) == 2 and all(isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0 for x in rng)):
        raise ProfileError(f"study.threshold_range: {_short(rng)} must be two positive numbers (low, high)")


_CHECKS: dict[str, Callable[[dict], None]] = {
    "model": _check_model,
    "generation": _check_generation,
    "measured": _check_measured,
    "hardware": _check_typed("hardware", _HARDWARE_TYPES),
    "study": _check_study,
}


def _accel_message(msg: str, accel: Any) -> str:
    """AccelConfig's error, with the field spelled from the profile's top and its value shown."""
    path, sep, rest = msg.partition(": ")
    if not sep:
        return msg
    if not path.startswith("accel"):
        path = "accel." + path  # section validators name fields from the section down
    value, found = accel, True
    for part in path.split(".")[1:]:
        if isinstance(value, dict) and part in value:
            value = value[part]
        else:
            found = False
            break
    if found and not rest.startswith(repr(value)):
        for lead in ("unknown field", "unknown section"):
            if rest.startswith(lead):
                return f"{path}: {lead} {_short(value)}{rest[len(lead):]}"
        return f"{path}: {_short(value)} {rest}" if not isinstance(value, dict) else f"{path}: {rest}"
    return f"{path}: {rest}"


def _mapping(data: dict, key: str) -> dict:
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ProfileError(f"{key}: {_short(value)} must be a mapping")
    return value


def _short(value: Any, limit: int = 60) -> str:
    """The value as the error shows it: repr, on one line, cut to ``limit`` characters."""
    text = " ".join(repr(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


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


def pipeline_dtype(pipe) -> str | None:
    """The dtype a pipeline runs at, as the profile spells it ("float32", "bfloat16")."""
    dtype = getattr(pipe, "dtype", None)
    return None if dtype is None else str(dtype).removeprefix("torch.")


# measured fields about timing, not quality
TIMING_FIELDS = ("speedup_low", "speedup_high", "confirmed", "latency_iqr_s", "baseline_iqr_s", "cpu_s", "baseline_cpu_s")


def summary(p: Profile) -> list[str]:
    """A human summary of a profile, one string a line: what it speeds up, by how much, at what
    quality, tuned where (``mindiesd-tune show``)."""
    model = p.model
    lines = [f"{model['name']}  ({model['pipeline']}, family {model['family']})"
             + (f"  [schema {p.schema}, migrated from schema {p.migrated_from} on load]" if p.migrated_from else f"  [schema {p.schema}]")]
    ident = ", ".join(f"{k} {model[k]}" for k in ("fingerprint", "dtype") if model.get(k))
    if ident:
        lines.append(f"  model:       {ident}")
    lines += _measured_lines(p.measured) if p.measured else []
    lines.append("acceleration:")
    for section, text in p.accel.summary():  # each method prints itself (accel.methods)
        lines.append(f"  {section:12s} {text}")
    gen = ", ".join(f"{k}={v}" for k, v in p.generation.items() if v is not None)
    lines.append(f"generation:    {gen or 'the pipeline defaults'}")
    return lines + _origin_lines(p.hardware, p.study)


def _measured_lines(m: dict) -> list[str]:
    speed = f"{m['speedup']:.2f}x faster" if isinstance(m.get("speedup"), (int, float)) else "speed-up not recorded"
    if isinstance(m.get("speedup_low"), (int, float)) and isinstance(m.get("speedup_high"), (int, float)):
        speed += f" [{m['speedup_low']:.2f}-{m['speedup_high']:.2f}]"
    if "confirmed" in m:
        speed += " (confirmed)" if m["confirmed"] else " (unconfirmed)"
    lines = [f"measured:      {speed}: {_secs(m.get('latency_s'))} against {_secs(m.get('baseline_s'))} for the baseline"]
    quality = [f"{k} {'identical' if v == 'inf' else v}" for k, v in m.items()
               if k not in ("latency_s", "baseline_s", "speedup", "skipped_fraction", "feasible") and k not in TIMING_FIELDS]
    if quality:
        lines.append("  quality:     " + ", ".join(quality) + " (against the baseline's output, same prompt and seed)")
    if m.get("skipped_fraction") is not None:
        lines.append(f"  skipped:     {m['skipped_fraction']:.0%} of block evaluations")
    if m.get("feasible") is False:
        lines.append("  note:        this trial did not meet the study's quality floors")
    return lines


def _origin_lines(hw: dict, st: dict) -> list[str]:
    lines = []
    if hw:
        lines.append(f"tuned on:      {hw.get('device')} {hw.get('name')}" + (f" x{hw['count']}" if hw.get("count") else "")
                     + f", torch {hw.get('torch')}, diffusers {hw.get('diffusers')}")
    if st:
        lines.append(f"study:         {st.get('name')}, trial {st.get('trial')}, created {st.get('created')}"
                     + (f" ({st['storage']})" if st.get("storage") else ""))
        prompts = st.get("prompts") or []
        if prompts:
            lines.append(f"  workload:    {len(prompts)} prompt(s), seeds {', '.join(map(str, st.get('seeds') or []))}: "
                         + "; ".join(f"\"{q}\"" for q in prompts))
    return lines


def _secs(v) -> str:
    return f"{v:.4g} s" if isinstance(v, (int, float)) else "?"


ABSENT = object()  # a field one of two profiles lacks


def differences(a: Profile, b: Profile) -> list[tuple[str, Any, Any]]:
    """The fields (dotted, in ``a``'s order then ``b``'s) whose values differ -> (field, in a, in b),
    ``ABSENT`` where a profile lacks the field (``mindiesd-tune diff``)."""
    fa, fb = _flatten(a.to_dict()), _flatten(b.to_dict())
    keys = list(fa) + [k for k in fb if k not in fa]
    return [(k, fa.get(k, ABSENT), fb.get(k, ABSENT)) for k in keys if fa.get(k, ABSENT) != fb.get(k, ABSENT)]


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out
