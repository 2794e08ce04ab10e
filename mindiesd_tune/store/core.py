"""ProfileStore: publish, list, show, retire and match frozen profiles in an SQL database."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import and_, select
from sqlalchemy.exc import IntegrityError

from ..errors import UserError
from ..profile import Profile, load_profile
from . import db
from .db import VERSION_KEYS, WORKLOAD_KEYS, checks, profiles
from .facts import LABELS, cpu_facts, installed_versions, machine_hash


class StoreError(UserError):
    """A store request that cannot be met (unknown ID, no matching profile, a stale one refused)."""


@dataclass
class StoredProfile:
    """One row of the store."""

    row: dict[str, Any]

    @property
    def id(self) -> int:
        return self.row["id"]

    @property
    def status(self) -> str:
        return self.row["status"]

    @property
    def workload(self) -> dict[str, Any]:
        return {k: self.row[k] for k in WORKLOAD_KEYS}

    @property
    def versions(self) -> dict[str, str | None]:
        return {k: self.row[k] for k in VERSION_KEYS}

    @property
    def measured(self) -> dict[str, Any]:
        return json.loads(self.row["measured"] or "{}")

    @property
    def front(self) -> list[dict[str, Any]]:
        return json.loads(self.row["front"] or "[]")

    def profile(self) -> Profile:
        import yaml

        return load_profile(yaml.safe_load(self.row["profile"]))

    def workload_text(self) -> str:
        parts = []
        if self.row["height"] and self.row["width"]:
            parts.append(f"{self.row['height']}x{self.row['width']}")
        for k in ("num_frames", "num_inference_steps", "guidance_scale"):
            if self.row[k] is not None:
                parts.append(f"{LABELS[k]} {self.row[k]:g}" if isinstance(self.row[k], float) else f"{LABELS[k]} {self.row[k]}")
        return ", ".join(parts) or "the model's defaults"


def _plain(value: Any) -> Any:
    """JSON-able: infinities and NaN as the strings profiles use."""
    if isinstance(value, float) and not math.isfinite(value):
        return "inf" if value > 0 else "-inf" if value < 0 else "nan"
    return value


class ProfileStore:
    """The profiles in the database at ``url`` (``sqlite:///FILE``, ``postgresql://...``).

    Every write is one transaction: two publishers at once each add their row.
    """

    def __init__(self, url: str | None = None):
        self.url = url or db.default_url()
        self.engine = db.engine_for(self.url)

    # ------------------------------------------------------------------ writing

    def publish(self, profile: str | Path | dict | Profile, front: list[dict[str, Any]] | None = None) -> tuple[int, bool]:
        """Add a frozen profile -> (its ID, whether it is new). The same profile published again
        from the same machine is the row it already has.

        The profile must name its weights (``model.fingerprint``) and device
        (``hardware.device``): a profile without them could match any pipeline. ``front``: the
        trial parameters of the study's front, which ``tune --warm-start`` enqueues.
        """
        prof = load_profile(profile)
        row = _row_of(prof, front)
        try:
            with self.engine.begin() as conn:
                found = conn.execute(select(profiles.c.id).where(profiles.c.digest == row["digest"])).scalar()
                if found is not None:
                    return found, False
                new_id = conn.execute(profiles.insert().values(**row)).inserted_primary_key[0]
            return new_id, True
        except IntegrityError:
            # another publisher added the same profile between the look and the insert: theirs stands
            with self.engine.connect() as conn:
                found = conn.execute(select(profiles.c.id).where(profiles.c.digest == row["digest"])).scalar()
            if found is None:
                raise
            return found, False

    def set_status(self, profile_id: int, status: str) -> StoredProfile:
        if status not in db.STATUSES:
            raise ValueError(status)
        with self.engine.begin() as conn:
            n = conn.execute(profiles.update().where(profiles.c.id == profile_id).values(status=status)).rowcount
        if not n:
            raise self._unknown(profile_id)
        return self.get(profile_id)

    def retire(self, profile_id: int) -> StoredProfile:
        """Take a profile out of lookups and warm starts (it stays listed, as retired)."""
        return self.set_status(profile_id, "retired")

    def record_check(self, profile_id: int, verdict: str, versions: dict, speedup=None, low=None, high=None,
                     metrics: dict | None = None, skipped_fraction=None, note: str | None = None) -> None:
        """A recheck's outcome: one row of history, the profile's verdict, and its status: stale
        unless it holds, in which case its versions become the installed ones (it was measured
        with them now)."""
        if verdict not in db.VERDICTS:
            raise ValueError(verdict)
        when = db.now()
        with self.engine.begin() as conn:
            conn.execute(checks.insert().values(
                profile_id=profile_id, checked=when, versions=json.dumps(versions), verdict=verdict,
                speedup=speedup, speedup_low=low, speedup_high=high,
                metrics=json.dumps({k: _plain(v) for k, v in (metrics or {}).items()}),
                skipped_fraction=skipped_fraction, note=note))
            values: dict[str, Any] = {"verdict": verdict, "checked": when}
            if verdict == "holds":
                values.update({k: versions.get(k) for k in VERSION_KEYS})
                values["status"] = "active"
            else:
                values["status"] = "stale"
            conn.execute(profiles.update().where(and_(profiles.c.id == profile_id, profiles.c.status != "retired"))
                         .values(**values))
            # a retired profile keeps its status but records what the check found
            conn.execute(profiles.update().where(and_(profiles.c.id == profile_id, profiles.c.status == "retired"))
                         .values(verdict=verdict, checked=when))

    # ------------------------------------------------------------------ reading

    def get(self, profile_id: int) -> StoredProfile:
        with self.engine.connect() as conn:
            row = conn.execute(select(profiles).where(profiles.c.id == profile_id)).mappings().first()
        if row is None:
            raise self._unknown(profile_id)
        return StoredProfile(dict(row))

    def list(self, model: str | None = None, status: str | None = None) -> list[StoredProfile]:
        """Every profile, oldest first; ``model``: those whose model name, family or fingerprint it is."""
        q = select(profiles).order_by(profiles.c.id)
        if model is not None:
            q = q.where((profiles.c.model_name == model) | (profiles.c.family == model) | (profiles.c.fingerprint == model))
        if status is not None:
            q = q.where(profiles.c.status == status)
        with self.engine.connect() as conn:
            return [StoredProfile(dict(r)) for r in conn.execute(q).mappings()]

    def candidates(self, *, fingerprint: str | None = None, family: str | None = None, device: str | None = None,
                   device_name: str | None = None) -> list[StoredProfile]:
        """Profiles not retired that match every criterion given, newest first: one query."""
        q = select(profiles).where(profiles.c.status != "retired")
        for col, value in (("fingerprint", fingerprint), ("family", family), ("device", device), ("device_name", device_name)):
            if value is not None:
                q = q.where(profiles.c[col] == value)
        q = q.order_by(profiles.c.created.desc(), profiles.c.id.desc())
        with self.engine.connect() as conn:
            return [StoredProfile(dict(r)) for r in conn.execute(q).mappings()]

    def history(self, profile_id: int) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(select(checks).where(checks.c.profile_id == profile_id)
                                                   .order_by(checks.c.id)).mappings()]

    def _unknown(self, profile_id) -> StoreError:
        return StoreError(f"no profile {profile_id} in the store {db.redact(self.url)} (`mindiesd-tune profiles` lists them)")


def _row_of(prof: Profile, front: list[dict[str, Any]] | None) -> dict[str, Any]:
    """The row a profile is stored as; a UserError when it lacks what lookup matches on."""
    model, hw = prof.model, prof.hardware
    if not model.get("fingerprint"):
        raise StoreError("the profile has no model.fingerprint: the store matches profiles to weights by it "
                         "(freeze it again with `mindiesd-tune export RUN_DIR`)")
    if not hw.get("device"):
        raise StoreError("the profile has no hardware.device: the store matches profiles to machines by it")
    device, name, count = hw["device"], hw.get("name"), hw.get("count")
    # The CPU is read here: a profile is published from the machine that tuned it, which its
    # device facts tell (one tuned elsewhere records no CPU, and then matches by device kind only)
    cpu_model, cpu_flags = cpu_facts() if _tuned_here(device, name, count) else (None, None)
    installed = installed_versions()
    versions = {k: hw.get(k) for k in VERSION_KEYS}
    if _tuned_here(device, name, count):
        # torchao and torch_npu are not in a profile's hardware section: taken from this machine
        versions = {k: v if v is not None else installed.get(k) for k, v in versions.items()}
    gen = prof.generation
    workload = {k: gen.get(k) for k in WORKLOAD_KEYS}
    if workload["guidance_scale"] is not None:
        workload["guidance_scale"] = float(workload["guidance_scale"])
    machine = machine_hash(device, name, count, cpu_model, cpu_flags)
    text = prof.to_yaml()
    m = prof.measured
    return {
        "digest": hashlib.sha256((text + machine).encode()).hexdigest(),
        "created": db.now(),
        "status": "active",
        "model_name": model["name"], "family": model["family"], "pipeline": model.get("pipeline"),
        "fingerprint": model["fingerprint"], "dtype": model.get("dtype"),
        "device": device, "device_name": name, "device_count": count,
        "cpu_model": cpu_model, "cpu_flags": cpu_flags, "machine": machine,
        **workload, **versions,
        "speedup": _num(m.get("speedup")), "speedup_low": _num(m.get("speedup_low")), "speedup_high": _num(m.get("speedup_high")),
        "measured": json.dumps({k: _plain(v) for k, v in m.items()}),
        "profile": text,
        "front": json.dumps(front) if front else None,
    }


def _num(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def _tuned_here(device: str, name: str | None, count: int | None) -> bool:
    """Whether this machine has the profile's device kind (so its CPU is the one it was tuned with)."""
    try:
        from ..kernels import hardware_info

        if device == "cuda":
            import torch

            if not torch.cuda.is_available():
                return False
        elif device == "npu":
            import torch

            if not (hasattr(torch, "npu") and torch.npu.is_available()):
                return False
        hw = hardware_info(device)
    except Exception:  # noqa: BLE001  (a device type this torch does not know)
        return False
    return hw.get("name") == name and (count is None or hw.get("count") == count)
