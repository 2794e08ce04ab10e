"""Baseline outputs and figures on disk, keyed by what determines them, and reused across studies.

The unaccelerated outputs of a model depend on its weights (the fingerprint), the prompts, the
seeds and the call settings (resolution, steps, frames, guidance, ...) and, in the last bits, on
the device type. A study asks the store first and runs the baseline only when nothing matches::

    store = BaselineStore()                      # ~/.cache/mindiesd-tune/baselines
    key = BaselineKey.for_workload(fingerprint, prompts, seeds, generation, device="cuda")
    entry = store.get_or_compute(key, lambda: [generate(p, s) for p, s in zip(prompts, seeds)])
    entry.outputs                                 # list of float32 arrays in [0, 1]
    store.update_figures(key, clip=31.2)          # figures about the baseline (not its latency:
                                                  # that is re-measured in every run)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

ENV_ROOT = "MINDIESD_TUNE_BASELINES"
FORMAT = 1

# call settings named on their own in the key; anything else in ``generation`` goes to ``extra``
_NAMED = ("height", "width", "num_frames", "num_inference_steps")


def default_root() -> Path:
    if os.environ.get(ENV_ROOT):
        return Path(os.environ[ENV_ROOT]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "mindiesd-tune" / "baselines"


def _versions() -> tuple[tuple[str, str], ...]:
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for name in ("torch", "diffusers", "transformers"):
        try:
            out.append((name, version(name)))
        except PackageNotFoundError:
            continue
    return tuple(out)


@dataclass(frozen=True)
class BaselineKey:
    """Everything that decides the baseline outputs."""

    fingerprint: str  # mindiesd_tune.profile.model_fingerprint(pipe): class, configs, weights, dtype
    prompts: tuple[str, ...]
    seeds: tuple[int, ...]
    height: int | None = None
    width: int | None = None
    num_frames: int | None = None
    num_inference_steps: int | None = None
    extra: tuple[tuple[str, str], ...] = ()  # other call settings, as sorted (name, JSON value)
    device: str = "cpu"  # device type: kernels differ in the last bits between cpu, cuda and npu
    # the libraries that compute the outputs: an upgrade may change their last bits, so a resumed
    # study recomputes its baseline after one rather than scoring against the old outputs
    versions: tuple[tuple[str, str], ...] = ()

    def __post_init__(self):
        if len(self.prompts) != len(self.seeds):
            raise ValueError("give one seed per prompt")

    @classmethod
    def for_workload(cls, fingerprint: str, prompts, seeds, generation: dict[str, Any] | None = None, device="cpu") -> "BaselineKey":
        gen = dict(generation or {})
        named = {k: gen.pop(k, None) for k in _NAMED}
        extra = tuple(sorted((k, json.dumps(v, sort_keys=True, default=str)) for k, v in gen.items() if v is not None))
        device = str(device).split(":")[0]
        return cls(fingerprint, tuple(str(p) for p in prompts), tuple(int(s) for s in seeds), **named, extra=extra, device=device,
                   versions=_versions())

    def to_dict(self) -> dict:
        d = asdict(self)
        d["prompts"], d["seeds"] = list(self.prompts), list(self.seeds)
        d["extra"] = {k: json.loads(v) for k, v in self.extra}
        d["versions"] = dict(self.versions)
        return d

    @property
    def digest(self) -> str:
        blob = json.dumps({"format": FORMAT, **self.to_dict()}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:24]


@dataclass
class BaselineEntry:
    key: dict
    outputs: list[np.ndarray] = field(repr=False)
    figures: dict[str, Any]
    created: float
    path: Path


class BaselineStore:
    """A folder of baselines, one sub-folder per key digest: ``key.json``, ``outputs.npz``, ``figures.json``.

    Writes are atomic (a temporary folder renamed into place), so studies running side by side
    share the store safely: the first to finish wins, the others read its outputs.
    """

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root).expanduser() if root is not None else default_root()

    def path(self, key: BaselineKey) -> Path:
        return self.root / key.digest

    def __contains__(self, key: BaselineKey) -> bool:
        return self.get(key) is not None

    def get(self, key: BaselineKey) -> BaselineEntry | None:
        """The stored baseline for ``key``, or None (also when the folder is incomplete or belongs to another key)."""
        folder = self.path(key)
        try:
            stored_key = json.loads((folder / "key.json").read_text())
            if stored_key.get("key") != key.to_dict():
                return None
            with np.load(folder / "outputs.npz", allow_pickle=False) as z:
                outputs = [z[f"out_{i:04d}"] for i in range(len(z.files))]
            figures = self._read_figures(folder)
        except (OSError, ValueError, KeyError):
            return None
        return BaselineEntry(stored_key["key"], outputs, figures, stored_key.get("created", 0.0), folder)

    def put(self, key: BaselineKey, outputs, figures: dict[str, Any] | None = None) -> BaselineEntry:
        """Store ``outputs`` (one float array per prompt) and ``figures``; an existing entry is kept as is."""
        outputs = [np.asarray(o, dtype=np.float32) for o in outputs]
        if len(outputs) != len(key.prompts):
            raise ValueError(f"{len(outputs)} outputs for {len(key.prompts)} prompts")
        self.root.mkdir(parents=True, exist_ok=True)
        folder = self.path(key)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key.digest}.", dir=self.root))
        try:
            np.savez(tmp / "outputs.npz", **{f"out_{i:04d}": o for i, o in enumerate(outputs)})
            (tmp / "figures.json").write_text(json.dumps(figures or {}, indent=1, sort_keys=True))
            (tmp / "key.json").write_text(json.dumps({"format": FORMAT, "created": time.time(), "key": key.to_dict()}, indent=1))
            try:
                os.rename(tmp, folder)
            except OSError:  # another study stored it first, or a stale folder is in the way
                if self.get(key) is None:
                    shutil.rmtree(folder, ignore_errors=True)
                    os.rename(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        entry = self.get(key)
        if entry is None:
            raise OSError(f"could not store the baseline in {folder}")
        return entry

    def get_or_compute(self, key: BaselineKey, compute: Callable[[], list], figures: dict[str, Any] | None = None) -> BaselineEntry:
        """The stored baseline, or ``compute()``'s outputs stored under ``key`` and returned."""
        entry = self.get(key)
        if entry is not None:
            return entry
        return self.put(key, compute(), figures)

    def update_figures(self, key: BaselineKey, **figures) -> dict[str, Any]:
        """Merge ``figures`` into the entry's figures (the entry must exist); returns them all."""
        folder = self.path(key)
        if self.get(key) is None:
            raise KeyError(f"no baseline stored for {key.digest}")
        merged = {**self._read_figures(folder), **figures}
        tmp = folder / f".figures.{os.getpid()}.json"
        tmp.write_text(json.dumps(merged, indent=1, sort_keys=True))
        os.replace(tmp, folder / "figures.json")
        return merged

    def entries(self) -> list[BaselineEntry]:
        out = []
        for folder in sorted(self.root.glob("*")) if self.root.is_dir() else []:
            if folder.name.startswith(".") or not (folder / "key.json").is_file():
                continue
            try:
                key = json.loads((folder / "key.json").read_text())["key"]
                entry = self.get(_key_from_dict(key))
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if entry is not None:
                out.append(entry)
        return out

    def remove(self, key: BaselineKey) -> bool:
        folder = self.path(key)
        if folder.is_dir():
            shutil.rmtree(folder)
            return True
        return False

    @staticmethod
    def _read_figures(folder: Path) -> dict[str, Any]:
        f = folder / "figures.json"
        return json.loads(f.read_text()) if f.is_file() else {}


def _key_from_dict(d: dict) -> BaselineKey:
    extra = tuple(sorted((k, json.dumps(v, sort_keys=True, default=str)) for k, v in d.get("extra", {}).items()))
    return BaselineKey(
        d["fingerprint"], tuple(d["prompts"]), tuple(d["seeds"]), d.get("height"), d.get("width"),
        d.get("num_frames"), d.get("num_inference_steps"), extra, d.get("device", "cpu"),
        tuple(sorted((d.get("versions") or {}).items())),
    )
